/* Write tracking during a resync: see track.h for the invariant. One
 * mutex: a mark is a few bit operations beside a write of the image, and
 * a swap must not lose a mark made into the set it takes. */
#include <errno.h>
#include <stdlib.h>

#include "track.h"

void track_init(struct track *t)
{
	*t = (struct track){0};
	pthread_mutex_init(&t->lock, NULL);
}

void track_release(struct track *t)
{
	free(t->bits);
	t->bits = NULL;
	pthread_mutex_destroy(&t->lock);
}

int track_start(struct track *t, uint64_t volume_size, uint32_t block_size)
{
	uint64_t nb;
	size_t size;
	unsigned char *bits;

	if (!block_size || (block_size & (block_size - 1)))
		return -EINVAL;
	nb = (volume_size + block_size - 1) / block_size;
	if ((nb + 7) / 8 > SIZE_MAX - 1)
		return -EFBIG;
	size = (size_t)((nb + 7) / 8);
	bits = calloc(1, size ? size : 1);
	if (!bits)
		return -ENOMEM;
	pthread_mutex_lock(&t->lock);
	if (t->bits) {
		pthread_mutex_unlock(&t->lock);
		free(bits);
		return -EBUSY;
	}
	t->bits = bits;
	t->size = size;
	t->n_blocks = nb;
	t->block_size = block_size;
	pthread_mutex_unlock(&t->lock);
	return 0;
}

void track_mark(struct track *t, uint64_t off, uint64_t len)
{
	uint64_t first, last;

	if (!len)
		return;
	pthread_mutex_lock(&t->lock);
	if (t->bits && off / t->block_size < t->n_blocks) {
		first = off / t->block_size;
		last = (off + len - 1) / t->block_size;
		if (last >= t->n_blocks)
			last = t->n_blocks - 1;
		for (uint64_t b = first; b <= last; b++)
			t->bits[b / 8] |= (unsigned char)(1u << (b % 8));
	}
	pthread_mutex_unlock(&t->lock);
}

int track_swap(struct track *t, unsigned char **ret_bits, size_t *ret_size)
{
	unsigned char *fresh, *old;
	size_t size;

	pthread_mutex_lock(&t->lock);
	size = t->size;
	pthread_mutex_unlock(&t->lock);
	/* Allocated outside the lock (a large volume's set is megabytes);
	 * the size cannot change while started. */
	fresh = calloc(1, size ? size : 1);
	if (!fresh)
		return -ENOMEM;
	pthread_mutex_lock(&t->lock);
	if (!t->bits || t->size != size) {
		pthread_mutex_unlock(&t->lock);
		free(fresh);
		return -ENOENT;
	}
	old = t->bits;
	t->bits = fresh;
	pthread_mutex_unlock(&t->lock);
	*ret_bits = old;
	*ret_size = size;
	return 0;
}

void track_stop(struct track *t)
{
	unsigned char *old;

	pthread_mutex_lock(&t->lock);
	old = t->bits;
	t->bits = NULL;
	t->size = 0;
	t->n_blocks = 0;
	pthread_mutex_unlock(&t->lock);
	free(old);
}
