/* Private to fusefs/: the state behind struct fusefs. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "resync/fusefs.h"
#include "fence.h"
#include "track.h"

struct fuse_session;

struct fusefs {
	struct fusefs_opts opts; /* strings borrowed from the caller */
	char *mountpoint;	 /* absolute */
	struct volume *vol;
	struct meta *meta;
	struct fuse_session *se;
	uint32_t block_size;
	struct fence fence;
	struct track track; /* the blocks written during a resync's pass */
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
