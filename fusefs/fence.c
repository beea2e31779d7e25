/* Write fence: writers take a ticket only when they must wait, so the fast
 * path is one lock round-trip in and one out; thaw lets tickets through in
 * order. */
#include <errno.h>

#include "fence.h"

void fence_init(struct fence *f)
{
	*f = (struct fence){0};
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->cond, NULL);
}

void fence_release(struct fence *f)
{
	pthread_mutex_destroy(&f->lock);
	pthread_cond_destroy(&f->cond);
}

int fence_enter(struct fence *f)
{
	pthread_mutex_lock(&f->lock);
	/* Behind a freeze, or behind writes that waited for a thaw. */
	if (f->frozen || f->serving != f->next_ticket) {
		uint64_t ticket;

		if (f->frozen && f->mode == FUSEFS_FENCE_FAIL) {
			pthread_mutex_unlock(&f->lock);
			return -EROFS;
		}
		ticket = f->next_ticket++;
		while (f->frozen || f->serving != ticket)
			pthread_cond_wait(&f->cond, &f->lock);
		f->serving++;
		pthread_cond_broadcast(&f->cond);
	}
	f->inflight++;
	pthread_mutex_unlock(&f->lock);
	return 0;
}

void fence_leave(struct fence *f)
{
	pthread_mutex_lock(&f->lock);
	f->inflight--;
	if (f->frozen && f->inflight == 0)
		pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
}

void fence_freeze(struct fence *f, enum fusefs_fence_mode mode)
{
	pthread_mutex_lock(&f->lock);
	f->frozen = true;
	f->mode = mode;
	while (f->inflight)
		pthread_cond_wait(&f->cond, &f->lock);
	pthread_mutex_unlock(&f->lock);
}

void fence_thaw(struct fence *f)
{
	pthread_mutex_lock(&f->lock);
	f->frozen = false;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
}

bool fence_frozen(struct fence *f)
{
	bool b;

	pthread_mutex_lock(&f->lock);
	b = f->frozen;
	pthread_mutex_unlock(&f->lock);
	return b;
}

unsigned fence_waiting(struct fence *f)
{
	unsigned n;

	pthread_mutex_lock(&f->lock);
	n = (unsigned)(f->next_ticket - f->serving);
	pthread_mutex_unlock(&f->lock);
	return n;
}
