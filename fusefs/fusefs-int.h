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
struct fusefs_stats {
	_Atomic uint64_t reads;
	_Atomic uint64_t writes;
	_Atomic uint64_t fsyncs;
	_Atomic uint64_t flushes;
	_Atomic uint64_t others; /* lookup, getattr, open, statfs, ... */
};

static inline void fusefs_count(_Atomic uint64_t *c)
{
	atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
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
