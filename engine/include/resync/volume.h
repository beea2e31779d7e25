/* A volume: a regular file or a block device holding a node's data. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

enum volume_flags {
	VOLUME_WRITE = 1 << 0,	/* open read-write */
	VOLUME_CREATE = 1 << 1, /* create a missing regular file (implies WRITE) */
	VOLUME_LOCK = 1 << 2,	/* take the exclusive writer lock; -EBUSY if held */
};

struct volume;

/* Open path. Directories and other non-file types are refused (-EISDIR,
 * -EINVAL). With VOLUME_LOCK the open fails with -EBUSY while another
 * process holds the volume's lock (resyncfs, resyncd, resync-diff sync).
 * Returns 0 and *ret, or -errno. */
int volume_open(const char *path, unsigned flags, struct volume **ret);
/* Close; NULL is accepted. Releases the lock. */
void volume_free(struct volume *v);

int volume_fd(const struct volume *v);
const char *volume_path(const struct volume *v);
uint64_t volume_size(const struct volume *v);
bool volume_is_blockdev(const struct volume *v);
/* Whether the volume lives on tmpfs. A shared mapping of a tmpfs file
 * allocates a page for every hole it touches (a sparse image would fill
 * memory, or fail with the tmpfs full), where reads of holes cost
 * nothing: readers that map volumes elsewhere read these. */
bool volume_on_tmpfs(const struct volume *v);

/* A read-only shared mapping of the whole volume (its size when made),
 * made by the first hold and unmapped at the last release: readers that
 * hash in the page cache (blockcmp, the proof) hold it while they read,
 * and a task that reads the same pages many times (a secondary's session:
 * its tree's hashing, then the fold of every checkpoint) holds it around
 * all of them, so that the page tables made once serve them all. A page
 * must be populated (MADV_POPULATE_READ, which reports a read error where
 * touching the page raises SIGBUS) before it is touched, and read only
 * below volume_map()'s length. -EOPNOTSUPP where the volume is empty or
 * on tmpfs (volume_on_tmpfs()): readers read instead. Thread-safe; the
 * mapping stays while the caller holds it. */
int volume_map_hold(struct volume *v);
void volume_map_release(struct volume *v);
/* The len bytes at off: in the mapping held (populated first, a read
 * error reported rather than a SIGBUS), else read into buf (len bytes),
 * which also reports the error of an unreadable page. *ret points to
 * them either way. The caller holds the mapping or expects reads. */
int volume_map_read(struct volume *v, void *buf, size_t len, uint64_t off,
		    const unsigned char **ret);
/* The mapping (NULL when none is held) and its length. */
const unsigned char *volume_map(struct volume *v, uint64_t *ret_len);
/* Whether a and b are the same file or device. */
bool volume_same(const struct volume *a, const struct volume *b);

/* Change the size of a regular file; a block device can only "change" to
 * its own size (-EFBIG otherwise). */
int volume_set_size(struct volume *v, uint64_t size);
/* Deallocate [off, off+len) so that it reads back as zeros, keeping the
 * size. -EOPNOTSUPP where the file system or device cannot. */
int volume_punch(struct volume *v, uint64_t off, uint64_t len);
/* Make written data durable (fdatasync). */
int volume_flush(struct volume *v);
