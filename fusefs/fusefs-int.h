/* Private to fusefs/: the state behind struct fusefs, and what its rooms
 * offer each other.
 *
 * Rooms:
 *   fusefs.c        the lifecycle, and what the daemon asks of a running
 *                   mount (fence, tracking, invalidation, growth)
 *   fusefs-ops.c    the FUSE operations (fusefs_ops)
 *   fusefs-mount.c  the mount point: checked before, unmounted after
 *   control.c       the control socket of resyncfs
 *   fence.c, flush.c, track.c
 *                   the write fence, shared image flushes, the blocks
 *                   written during a resync's pass */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "resync/fusefs-session.h"
#include "resync/fusefs.h"
#include "resync/volume.h"
#include "fence.h"
#include "flush.h"
#include "track.h"

struct fuse_session;

/* What the mount served, for the control socket's "stats": FUSE requests
 * by kind and flushes of the image. Relaxed counters: read while they
 * move, each exact on its own. */
enum fusefs_stat {
	FUSEFS_STAT_READS,
	FUSEFS_STAT_WRITES,
	FUSEFS_STAT_FSYNCS,
	FUSEFS_STAT_FLUSHES,
	FUSEFS_STAT_OTHERS, /* lookup, getattr, open, statfs, ... */
	FUSEFS_STAT_MAX,
};

struct fusefs_stats {
	_Atomic uint64_t n[FUSEFS_STAT_MAX];
};

static inline uint64_t fusefs_stat_get(struct fusefs_stats *st, enum fusefs_stat k)
{
	return atomic_load_explicit(&st->n[k], memory_order_relaxed);
}
struct fusefs {
	struct fusefs_opts opts; /* strings borrowed from the caller */
	char *mountpoint;	 /* absolute */
	struct volume *vol;
	struct meta *meta;
	struct fuse_session *se;
	uint32_t block_size;
	struct fence fence;
	struct track track; /* the blocks written during a resync's pass */
	struct fusefs_stats stats;
	struct flush flush; /* FSYNCs: flushes of the image, shared */
	pthread_key_t worker_key; /* struct fusefs_worker per FUSE thread */
	bool key_created;
	bool mounted;

	/* For fusefs_rewrite(), which may run in any thread. */
	pthread_mutex_t io_lock;
	struct io_ctx *io; /* protected by io_lock */

	pthread_mutex_t lock;
	pthread_cond_t cond; /* loop_done changed */
	bool running;	     /* protected by lock */
	bool loop_done;	     /* protected by lock */
	int loop_error;	     /* protected by lock */
	pthread_t thread;
	bool thread_started;
	bool stopped;
	int stop_result;
	bool unmounting; /* protected by lock: a fusefs_unmount() runs */
	bool detached;	 /* protected by lock: a busy mount was cut off */

	/* Control socket (control.c). */
	int control_fd;
	int control_stop[2];
	pthread_t control_thread;
	bool control_started;
	char *control_path;
};

#define FUSEFS_VOLUME_INO RESYNC_FUSEFS_VOLUME_INO
#define FUSEFS_MAX_IO RESYNC_FUSEFS_MAX_IO

/* The volume's size: fixed, except that a file volume may be grown to
 * its primary's (fusefs_grow()) while requests run; read atomically. */
static inline uint64_t fusefs_size(const struct fusefs *fs)
{
	return volume_size(fs->vol);
}

/* fusefs-ops.c: the operations, and the destructor of a worker thread's
 * state (the key's; NULL is fine). */
struct fuse_lowlevel_ops;
extern const struct fuse_lowlevel_ops fusefs_ops;
void fusefs_worker_free(void *p);
/* Every write from a buffer goes through here (the FUSE writes and
 * fusefs_rewrite()): fence (when fenced), durable marks, then the bytes
 * through io, then the resync's record. Returns bytes written or -errno. */
struct io_ctx;
long long fusefs_write_image(struct fusefs *fs, struct io_ctx *io, const void *buf, size_t size,
			     uint64_t off, bool fenced);
