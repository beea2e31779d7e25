/* The write fence of the FUSE volume (module header). */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "resync/fusefs.h"

struct fence {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	/* protected by lock */
	bool frozen;
	enum fusefs_fence_mode mode;
	uint64_t inflight;    /* writes between enter and leave */
	uint64_t next_ticket; /* arrival order of waiting writes */
	uint64_t serving;     /* the ticket allowed through next */
};

void fence_init(struct fence *f);
void fence_release(struct fence *f);
/* Before a write: waits while frozen (wait mode) or returns -EROFS (fail
 * mode). 0 means the caller must call fence_leave() when done. */
int fence_enter(struct fence *f);
void fence_leave(struct fence *f);
/* Freeze and wait until no write is in flight. */
void fence_freeze(struct fence *f, enum fusefs_fence_mode mode);
void fence_thaw(struct fence *f);
bool fence_frozen(struct fence *f);
unsigned fence_waiting(struct fence *f);
