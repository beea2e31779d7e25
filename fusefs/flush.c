/* Flushes of the image for FUSE FSYNC requests: see flush.h. One mutex
 * around the bookkeeping, never held across the flush itself. */
#include "flush.h"

void flush_init(struct flush *f)
{
	*f = (struct flush){0};
	atomic_init(&f->written, 0);
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->cond, NULL);
}

void flush_release(struct flush *f)
{
	pthread_mutex_destroy(&f->lock);
	pthread_cond_destroy(&f->cond);
}

void flush_wrote(struct flush *f)
{
	/* Release: the write's bytes are in the image before the count. */
	atomic_fetch_add_explicit(&f->written, 1, memory_order_release);
}

int flush_sync(struct flush *f, flush_fn fn, void *arg)
{
	uint64_t want = atomic_load_explicit(&f->written, memory_order_acquire), upto;
	int r;

	pthread_mutex_lock(&f->lock);
	for (;;) {
		uint64_t seen;

		if (f->done_upto >= want) {
			pthread_mutex_unlock(&f->lock);
			return 0;
		}
		if (!f->busy)
			break;
		/* Wait for the running flush; if it covers us, its result is
		 * ours; if not, the next one (perhaps shared) is. */
		seen = f->ended;
		f->waiting++;
		while (f->ended == seen)
			pthread_cond_wait(&f->cond, &f->lock);
		f->waiting--;
		if (f->last_result < 0 && f->done_upto < want) {
			r = f->last_result;
			pthread_mutex_unlock(&f->lock);
			return r;
		}
	}
	f->busy = true;
	/* Every write counted now is in the image: this flush covers it. */
	upto = atomic_load_explicit(&f->written, memory_order_acquire);
	f->flushes++;
	pthread_mutex_unlock(&f->lock);

	r = fn(arg);

	pthread_mutex_lock(&f->lock);
	f->busy = false;
	if (r >= 0 && upto > f->done_upto)
		f->done_upto = upto;
	f->last_result = r;
	f->ended++;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
	return r < 0 ? r : 0;
}

unsigned flush_waiting(struct flush *f)
{
	unsigned n;

	pthread_mutex_lock(&f->lock);
	n = f->waiting;
	pthread_mutex_unlock(&f->lock);
	return n;
}

uint64_t flush_count(struct flush *f)
{
	uint64_t n;

	pthread_mutex_lock(&f->lock);
	n = f->flushes;
	pthread_mutex_unlock(&f->lock);
	return n;
}
