/* A read-only mapping of a whole volume, for hashing scattered blocks in
 * place: a pread copies every byte out of the page cache first, and on
 * a secondary's fold (64 KiB proof blocks around scattered 4 KiB pages)
 * that copy cost about five times the hash (issue 18, perf). */
#pragma once

#include <stdint.h>

struct volume;

struct volume_map {
	const unsigned char *p; /* NULL: not mapped */
	uint64_t len;
};

/* Map v (PROT_READ, MAP_SHARED) at its size now. -ENOTSUP for a volume
 * on tmpfs (touching a hole of a mapping allocates a page there, where a
 * read costs nothing) or an empty one; -errno of mmap. On failure *m is
 * left unmapped (volume_map_release() is still safe). Not thread-safe
 * against the volume changing size: the caller keeps it fixed. */
int volume_map_init(struct volume_map *m, struct volume *v);
/* Unmap (idempotent; an unmapped m is accepted). */
void volume_map_release(struct volume_map *m);
/* The bytes [off, off+len) of m, their pages populated first
 * (MADV_POPULATE_READ), so that a read error is -EIO here rather than a
 * SIGBUS when they are touched. -EFAULT: the pages cannot be mapped
 * though a read may succeed (the caller reads instead); -EINVAL: outside
 * the mapping, or m unmapped. Returns 0 and *ret (borrowed from m).
 * Thread-safe (the mapping is read only). */
int volume_map_get(const struct volume_map *m, uint64_t off, uint64_t len,
		   const unsigned char **ret);
