/* Flushes of the image for FUSE FSYNC requests (module header).
 *
 * An FSYNC must return only once every write acknowledged before it is
 * on disk. Writes count themselves here after their bytes reached the
 * image (flush_wrote()); a flush covers what was counted when it
 * started. So an FSYNC that finds every counted write covered by a flush
 * that succeeded needs no flush of its own (the FLUSH-then-FSYNC and
 * back-to-back flushes a block layer sends), and FSYNCs arriving while a
 * flush runs wait for it and then share one more flush (group commit)
 * instead of queueing one each. A flush that fails fails every FSYNC
 * that waited on it, and covers nothing. */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* Makes the image durable: 0 or -errno (volume_flush()). */
typedef int (*flush_fn)(void *arg);

struct flush {
	_Atomic uint64_t written; /* writes that reached the image */
	pthread_mutex_t lock;
	pthread_cond_t cond; /* a flush ended */
	/* protected by lock */
	bool busy;	    /* a flush runs */
	uint64_t done_upto; /* the writes a successful flush covered */
	uint64_t ended;	    /* flushes ended so far */
	int last_result;    /* of the last flush that ended */
	unsigned waiting;   /* FSYNCs waiting for a flush (tests) */
	uint64_t flushes;   /* flushes started (statistics) */
};

void flush_init(struct flush *f);
void flush_release(struct flush *f);
/* A write's bytes are in the image (after the write returned, whatever
 * its result). Thread-safe, lock-free. */
void flush_wrote(struct flush *f);
/* Make every write counted so far durable, calling fn(arg) at most once
 * in this thread; 0 or fn's -errno (its own, or that of the flush it
 * waited for). Thread-safe. */
int flush_sync(struct flush *f, flush_fn fn, void *arg);
/* FSYNCs waiting on another's flush; flushes started. Thread-safe. */
unsigned flush_waiting(struct flush *f);
uint64_t flush_count(struct flush *f);
