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

/* How long an unmount waits for a busy mount (a process with a file open
 * or its working directory on it) before detaching it lazily. */
enum { FUSEFS_STOP_WAIT_MS_DEFAULT = 10000 };

/* Told when an unmount finds the mount busy (waited_ms 0), and again when
 * limit_ms has passed and the mount is detached (waited_ms >= limit_ms).
 * why is a sentence for people, naming the mount point and, when they can
 * be found in /proc, the processes holding it; valid during the call. Runs
 * in the thread that called fusefs_unmount() or fusefs_stop(). */
typedef void (*fusefs_wait_fn)(void *arg, const char *why, unsigned waited_ms, unsigned limit_ms);

enum { FUSEFS_RT_PRIORITY_DEFAULT = 10 };

struct fusefs_opts {
	const char *image;	/* required */
	const char *mountpoint; /* required: a directory */
	const char *meta_path;	/* NULL = IMAGE.resync-meta */
	struct meta_opts meta;	/* geometry of fresh metadata */
	enum io_kind io;	/* image I/O backend; IO_KIND_AUTO = RESYNC_IO or sync */
	unsigned max_threads;	/* FUSE worker threads; 0 = default (16) */
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
	/* The FUSE worker threads' real-time priority (SCHED_FIFO, 1-99):
	 * each request of an application waits for one of them to run, and
	 * on a busy CPU a normal thread's wake-up waits behind every other
	 * runnable task, as the kernel's own block I/O does not. 0 = the
	 * default (FUSEFS_RT_PRIORITY_DEFAULT); < 0 = normal scheduling.
	 * Without CAP_SYS_NICE (or an RLIMIT_RTPRIO) they stay normal. */
	int rt_priority;
	/* More FUSE mount options, comma-separated (allow_other, ...). */
	const char *fuse_options;
	/* The stop of a busy mount: how long to wait (0 = the default,
	 * FUSEFS_STOP_WAIT_MS_DEFAULT) and whom to tell (NULL = nobody; the
	 * library does not log). */
	unsigned stop_wait_ms;
	fusefs_wait_fn on_wait;
	void *on_wait_arg;
};

/* Whether a volume may be mounted at mountpoint: -EBUSY when it is itself
 * a mount point already (a live mount, or a stale FUSE mount that nobody
 * detached: node_mount_unstale() in the daemon detaches those first), so
 * that a second mount is never stacked on the first; 0 for a directory
 * that is not a mount point; -errno when it cannot be looked at (-ENOTCONN:
 * a stale FUSE mount). Reads /proc/self/mountinfo (falls back to comparing
 * st_dev with the parent's). Thread-safe. */
int fusefs_mountpoint_check(const char *mountpoint);
/* Refuse a mountpoint that fusefs_mountpoint_check() refuses (-EBUSY;
 * call it first to tell that case from the next), open the image
 * read-write with the exclusive lock (-EBUSY when another resyncfs,
 * resyncd or resync-diff holds it), open or create its metadata and mount
 * at mountpoint. Returns 0 and *ret, or -errno. */
int fusefs_new(const struct fusefs_opts *opts, struct fusefs **ret);
/* Serve requests in the calling thread until the file system is
 * unmounted (fusefs_unmount(), fusermount3 -u, umount). Returns 0 or
 * -errno. */
int fusefs_run(struct fusefs *fs);
/* Serve in a new thread. */
int fusefs_start(struct fusefs *fs);
/* Ask the kernel to unmount; the kernel writes back what it caches and
 * the loop ends. While the mount is busy (a process has a file open or
 * its working directory on it) the unmount is retried for up to
 * opts.stop_wait_ms, telling opts.on_wait; then the mount is detached
 * lazily and its FUSE connection aborted (as root through umount -f,
 * otherwise through /sys/fs/fuse/connections when mounted), so that the
 * loop ends and no write can arrive any more: the holders' later I/O
 * fails with ENOTCONN. The metadata is then left unclean (see
 * fusefs_stop()). Blocks up to the limit; safe from any thread and from a
 * signal-handling thread; a call while another one runs returns 0 at
 * once. */
int fusefs_unmount(struct fusefs *fs);
/* Detach whatever is mounted at mountpoint at once (a lazy unmount: the
 * kernel finishes it when the last user goes): umount2(MNT_DETACH) as
 * root, else "fusermount3 -u -z", waited for. For a mount that is not (or
 * no longer) one's own fusefs, such as a stale mount whose daemon died.
 * Returns 0 or -errno (-EIO when fusermount3 failed). Thread-safe. */
int fusefs_unmount_lazy(const char *mountpoint);
/* Unmount (as fusefs_unmount()), wait for the loop (joining a
 * fusefs_start() thread), flush the image and mark the metadata clean.
 * After a busy mount was detached, the metadata is left unclean instead
 * (the next owner counts every extent of the activity log as dirty: the
 * writers were cut off mid-stream) and -EBUSY is returned. Idempotent. */
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

/* Write tracking for a resync that keeps the volume in service: between
 * start and stop, every write through the mount records its blocks (of
 * block_size bytes, a power of two) in memory, after its bytes reached
 * the image and before it leaves the fence. swap takes the set recorded
 * since the start or the last swap (*ret_bits, one bit a block, *ret_size
 * bytes: the caller frees it) and starts an empty one atomically: every
 * write is either in the set taken, with its bytes visible to any read
 * after the swap, or in the next one. A swap under a freeze (which waits
 * for writes in flight, marks included) takes every write left. start:
 * -EBUSY when started, -EINVAL, -ENOMEM; swap: -ENOENT when not started.
 * Not persistent: the durable dirty bitmap is what survives a crash.
 * Thread-safe. */
int fusefs_track_start(struct fusefs *fs, uint32_t block_size);
int fusefs_track_swap(struct fusefs *fs, unsigned char **ret_bits, size_t *ret_size);
void fusefs_track_stop(struct fusefs *fs);

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
