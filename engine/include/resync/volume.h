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
