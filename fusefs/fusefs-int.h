/* Private to fusefs/: the state behind struct fusefs. */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "resync/fusefs.h"
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
