/* The FUSE volume: a volume served through libfuse3's low-level API as the
 * one regular file MOUNTPOINT/volume, with crash-safe dirty tracking (every
 * write is marked in the metadata, durably, before its bytes reach the
 * image), a write fence, and cache invalidation for ranges rewritten
 * underneath.
 *
 * Lifecycle: fusefs_new() opens and locks the image, takes over its
 * metadata and mounts; fusefs_run() serves in the calling thread, or
 * fusefs_start() in a new one; fusefs_stop() unmounts, waits for the loop
 * and leaves clean metadata; fusefs_free() releases everything. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "resync/io.h"
#include "resync/meta.h"

struct fusefs;
struct volume;

enum fusefs_fence_mode {
	FUSEFS_FENCE_WAIT = 0, /* new writes wait until thaw */
	FUSEFS_FENCE_FAIL,     /* new writes fail with EROFS */
};

struct fusefs_opts {
	const char *image;	/* required */
	const char *mountpoint; /* required: a directory */
	const char *meta_path;	/* NULL = IMAGE.resync-meta */
	struct meta_opts meta;	/* geometry of fresh metadata */
	enum io_kind io;	/* image I/O backend; IO_KIND_AUTO = RESYNC_IO or sync */
	unsigned max_threads;	/* FUSE worker threads; 0 = default (8) */
	/* Kernel writeback cache: writes are acknowledged from the page
	 * cache and reach resyncfs later; marks are still durable before the
	 * image is written, but a fence in fail mode cannot refuse a write
	 * the kernel already accepted. Off by default. */
	bool writeback;
	/* Serve reads by splicing from the image (zero-copy) instead of
	 * reading through the engine's I/O context. */
	bool splice_read;
	/* UNSAFE, for benchmarks only: writes are not marked. The bitmap is
	 * declared untrusted at mount (a later resync falls back to a full
	 * compare), so no write is missed, but every quick resync is lost. */
	bool no_tracking;
	/* More FUSE mount options, comma-separated (allow_other, ...). */
	const char *fuse_options;
};

/* Open the image read-write with the exclusive lock (-EBUSY when another
 * resyncfs, resyncd or resync-diff holds it), open or create its metadata
 * and mount at mountpoint. Returns 0 and *ret, or -errno. */
int fusefs_new(const struct fusefs_opts *opts, struct fusefs **ret);
/* Serve requests in the calling thread until the file system is
 * unmounted (fusefs_unmount(), fusermount3 -u, umount). Returns 0 or
 * -errno. */
int fusefs_run(struct fusefs *fs);
/* Serve in a new thread. */
int fusefs_start(struct fusefs *fs);
/* Ask the kernel to unmount; the kernel writes back what it caches and
 * the loop ends. Safe from any thread and from a signal-handling thread. */
int fusefs_unmount(struct fusefs *fs);
/* Detach whatever is mounted at mountpoint at once (a lazy unmount: the
 * kernel finishes it when the last user goes): umount2(MNT_DETACH) as
 * root, else "fusermount3 -u -z", waited for. For a mount that is not (or
 * no longer) one's own fusefs, such as a stale mount whose daemon died.
 * Returns 0 or -errno (-EIO when fusermount3 failed). Thread-safe. */
int fusefs_unmount_lazy(const char *mountpoint);
/* Unmount, wait for the loop (joining a fusefs_start() thread), then
 * flush the image and mark the metadata clean. Idempotent. */
int fusefs_stop(struct fusefs *fs);
/* Free; NULL is accepted. Without fusefs_stop() the metadata stays
 * unclean (as after a crash). */
void fusefs_free(struct fusefs *fs);

/* Write fence. Freeze returns once every write in flight has reached the
 * image; later writes wait (FUSEFS_FENCE_WAIT) or fail with EROFS
 * (FUSEFS_FENCE_FAIL). Reads go on. Thaw releases waiting writes in
 * arrival order. Thread-safe. */
int fusefs_fence_freeze(struct fusefs *fs, enum fusefs_fence_mode mode);
int fusefs_fence_thaw(struct fusefs *fs);
bool fusefs_fence_frozen(struct fusefs *fs);
/* Writes waiting at the fence, for tests and status. */
unsigned fusefs_fence_waiting(struct fusefs *fs);

/* Drop the kernel's cached pages of [off, off+len) of the volume file, so
 * readers see what was written to the image underneath. Call after the
 * bytes are in the image. Thread-safe; not from inside a request. */
int fusefs_invalidate(struct fusefs *fs, uint64_t off, uint64_t len);
/* Grow a file volume to size (a secondary's, to its primary's): writes
 * are fenced meanwhile, the image is extended (the new bytes read as
 * zeros), its metadata rebuilt for the new size (untrusted: the next
 * resync compares everything) and the kernel's cached size dropped.
 * -EINVAL to shrink, -EFBIG for a block device or a size the metadata
 * cannot cover; nothing changes then. */
int fusefs_grow(struct fusefs *fs, uint64_t size);
/* Write buf to [off, off+len) of the image underneath the mount (marking
 * it dirty first) and invalidate the range. It is the owner's write: the
 * fence does not hold it (an owner freezes, rewrites, thaws). For a
 * standalone resyncfs; the daemon writes through its own engine path and
 * calls fusefs_invalidate(). */
int fusefs_rewrite(struct fusefs *fs, uint64_t off, const void *buf, uint64_t len);

/* The image and its metadata, owned by fs (borrowed). */
struct volume *fusefs_volume(struct fusefs *fs);
struct meta *fusefs_meta(struct fusefs *fs);
const char *fusefs_mountpoint(const struct fusefs *fs);

/* The control socket of a standalone resyncfs: a UNIX stream socket at
 * path, one command a line, one reply line each ("ok ..." or
 * "error: ..."):
 *   freeze [wait|fail]    fence writes (returns when in-flight writes drained)
 *   thaw                  release them
 *   invalidate OFF LEN    drop cached pages of the range
 *   rewrite OFF LEN FILE  write LEN bytes of FILE into the image at OFF, invalidate
 *   status                frozen, waiting writes, metadata writes
 * Served by one thread until fusefs_control_stop(). */
int fusefs_control_start(struct fusefs *fs, const char *path);
void fusefs_control_stop(struct fusefs *fs);
