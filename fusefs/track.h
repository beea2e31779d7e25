/* Write tracking of the FUSE volume during a resync (module header): an
 * in-memory record of the blocks written since the last swap, beside the
 * durable dirty bitmap (which counts every write since the last commit).
 *
 * The invariant the primary's passes rest on: a write marks its blocks
 * here AFTER its bytes reached the image, while it is still in flight at
 * the fence (between fence_enter() and fence_leave()). So a swap that
 * takes the set either comes before the mark (the block is in the next
 * set: sent again by the next pass) or after it (the bytes were in the
 * image before the swap: any read after the swap sees them). And a
 * freeze, which waits until no write is in flight, waits for the marks
 * too: the set swapped under a freeze is complete, and nothing changes
 * the image until the thaw. */
#pragma once

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

struct track {
	pthread_mutex_t lock;
	unsigned char *bits; /* one bit a block; NULL: not tracking; protected by lock */
	size_t size;	     /* bytes of bits; protected by lock */
	uint64_t n_blocks;   /* protected by lock */
	uint32_t block_size; /* protected by lock */
};

void track_init(struct track *t);
void track_release(struct track *t);
/* Start recording writes to a volume of volume_size bytes in blocks of
 * block_size (a power of two), with an empty set. -EBUSY when already
 * started, -EINVAL, -ENOMEM. Thread-safe. */
int track_start(struct track *t, uint64_t volume_size, uint32_t block_size);
/* Record [off, off+len): after the bytes are in the image (see above).
 * Nothing when not started. Thread-safe. */
void track_mark(struct track *t, uint64_t off, uint64_t len);
/* Take the set recorded since the start or the last swap (caller frees
 * *ret_bits, *ret_size bytes) and start an empty one, atomically with
 * respect to track_mark(). -ENOENT when not started, -ENOMEM. */
int track_swap(struct track *t, unsigned char **ret_bits, size_t *ret_size);
/* Stop recording and drop the set. Idempotent. */
void track_stop(struct track *t);
