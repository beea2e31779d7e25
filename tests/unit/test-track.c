/* Write tracking of the FUSE volume (fusefs/track.c) with the write
 * fence (fusefs/fence.c): the set's basics, and the invariant a resync's
 * passes rest on (track.h): writers that mark after their bytes are in
 * the image, inside the fence, against a copier that swaps the set and
 * copies what it names pass after pass, then freezes, swaps and copies a
 * last time: the copy must equal the image, every round. Threads and
 * deadlines decide, never fixed sleeps. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fence.h"
#include "testlib.h"
#include "track.h"

#define DEADLINE_USEC (10 * 1000000ull)
#define BS 4096u
#define NBLK 257u /* the last block of the volume is short */
#define VOLSIZE ((uint64_t)NBLK * BS - 100)
#define NWRITERS 4
#define ROUNDS 200

static bool bit(const unsigned char *b, uint64_t i)
{
	return b[i / 8] & (1u << (i % 8));
}

static void test_basics(void **state)
{
	struct track t;
	unsigned char *b;
	size_t size;

	(void)state;
	track_init(&t);
	assert_int_equal(track_swap(&t, &b, &size), -ENOENT);
	track_mark(&t, 0, 1); /* not started: nothing */
	assert_int_equal(track_start(&t, VOLSIZE, 3000), -EINVAL);
	assert_int_equal(track_start(&t, VOLSIZE, BS), 0);
	assert_int_equal(track_start(&t, VOLSIZE, BS), -EBUSY);
	track_mark(&t, BS - 1, 2);	    /* blocks 0 and 1 */
	track_mark(&t, 10 * BS, BS);	    /* block 10 only */
	track_mark(&t, VOLSIZE - 1, 5000); /* clipped to the last block */
	track_mark(&t, VOLSIZE + BS * 4, 1); /* past the end: nothing */
	track_mark(&t, 5 * BS, 0);	    /* empty: nothing */
	assert_int_equal(track_swap(&t, &b, &size), 0);
	assert_int_equal(size, (NBLK + 7) / 8);
	for (uint64_t i = 0; i < NBLK; i++)
		assert_int_equal(bit(b, i), i == 0 || i == 1 || i == 10 || i == NBLK - 1);
	free(b);
	/* The next set starts empty. */
	assert_int_equal(track_swap(&t, &b, &size), 0);
	for (size_t i = 0; i < size; i++)
		assert_int_equal(b[i], 0);
	free(b);
	track_stop(&t);
	track_stop(&t);
	assert_int_equal(track_swap(&t, &b, &size), -ENOENT);
	assert_int_equal(track_start(&t, VOLSIZE, BS), 0);
	track_release(&t);
}

/* A volume of NBLK blocks, each one a value. */
struct sim {
	struct fence f;
	struct track t;
	_Atomic uint64_t image[NBLK];
	uint64_t copy[NBLK];
	_Atomic uint64_t counter;
	atomic_bool stop;
	atomic_uint writes;
};

static void *sim_writer(void *arg)
{
	struct sim *s = arg;
	unsigned seed = (unsigned)(uintptr_t)pthread_self();

	while (!atomic_load(&s->stop)) {
		uint64_t b = (uint64_t)rand_r(&seed) % NBLK;
		uint64_t v = atomic_fetch_add(&s->counter, 1) + 1;

		if (fence_enter(&s->f) < 0)
			continue;
		atomic_store(&s->image[b], v); /* the bytes reach the image, */
		if (rand_r(&seed) % 4 == 0)
			sched_yield(); /* (a swap may come here) */
		track_mark(&s->t, b * BS, 1); /* then the mark, */
		fence_leave(&s->f);	      /* then the fence is left */
		atomic_fetch_add(&s->writes, 1);
	}
	return NULL;
}

static void sim_copy_marked(struct sim *s)
{
	unsigned char *b;
	size_t size;

	assert_int_equal(track_swap(&s->t, &b, &size), 0);
	for (uint64_t i = 0; i < NBLK; i++)
		if (bit(b, i))
			s->copy[i] = atomic_load(&s->image[i]);
	free(b);
}

static bool writes_at_least(void *arg)
{
	struct sim *s = arg;

	return atomic_load(&s->writes) >= 64;
}

static void test_passes_converge(void **state)
{
	struct sim *s = calloc(1, sizeof(*s));
	pthread_t w[NWRITERS];

	(void)state;
	assert_non_null(s);
	fence_init(&s->f);
	track_init(&s->t);
	for (unsigned i = 0; i < NWRITERS; i++)
		assert_int_equal(pthread_create(&w[i], NULL, sim_writer, s), 0);
	for (unsigned round = 0; round < ROUNDS; round++) {
		/* Pass 1: tracking first, then the whole volume read. */
		assert_int_equal(track_start(&s->t, VOLSIZE, BS), 0);
		for (uint64_t i = 0; i < NBLK; i++)
			s->copy[i] = atomic_load(&s->image[i]);
		/* Passes 2..4 while the writers go on. */
		for (unsigned p = 0; p < 3; p++) {
			atomic_store(&s->writes, 0);
			assert_int_equal(testlib_wait_until(writes_at_least, s, DEADLINE_USEC), 0);
			sim_copy_marked(s);
		}
		/* The fence, the last pass: the copy is the image. */
		fence_freeze(&s->f, FUSEFS_FENCE_WAIT);
		sim_copy_marked(s);
		for (uint64_t i = 0; i < NBLK; i++)
			assert_int_equal(s->copy[i], atomic_load(&s->image[i]));
		track_stop(&s->t);
		fence_thaw(&s->f);
	}
	atomic_store(&s->stop, true);
	for (unsigned i = 0; i < NWRITERS; i++)
		assert_int_equal(pthread_join(w[i], NULL), 0);
	track_release(&s->t);
	fence_release(&s->f);
	free(s);
}

/* A write between its bytes and its mark holds a freeze: the set swapped
 * under the freeze names it. */
struct slow {
	struct fence *f;
	struct track *t;
	atomic_bool wrote, go, frozen;
};

static void *slow_writer(void *arg)
{
	struct slow *w = arg;

	assert_int_equal(fence_enter(w->f), 0);
	atomic_store(&w->wrote, true);
	while (!atomic_load(&w->go))
		sched_yield();
	track_mark(w->t, 7 * BS, BS);
	fence_leave(w->f);
	return NULL;
}

static void *freezer(void *arg)
{
	struct slow *w = arg;

	fence_freeze(w->f, FUSEFS_FENCE_WAIT);
	atomic_store(&w->frozen, true);
	return NULL;
}

static bool fence_frozen_p(void *arg)
{
	return fence_frozen(arg);
}

static bool flag(void *arg)
{
	return atomic_load((atomic_bool *)arg);
}

static void test_freeze_waits_for_mark(void **state)
{
	struct fence f;
	struct track t;
	struct slow w = {.f = &f, .t = &t};
	pthread_t a, b;
	unsigned char *bits;
	size_t size;

	(void)state;
	fence_init(&f);
	track_init(&t);
	assert_int_equal(track_start(&t, VOLSIZE, BS), 0);
	assert_int_equal(pthread_create(&a, NULL, slow_writer, &w), 0);
	assert_int_equal(testlib_wait_until(flag, &w.wrote, DEADLINE_USEC), 0);
	assert_int_equal(pthread_create(&b, NULL, freezer, &w), 0);
	/* The freeze is waiting (its flag set): the write is in flight. */
	assert_int_equal(testlib_wait_until(fence_frozen_p, &f, DEADLINE_USEC), 0);
	assert_false(atomic_load(&w.frozen));
	atomic_store(&w.go, true);
	assert_int_equal(testlib_wait_until(flag, &w.frozen, DEADLINE_USEC), 0);
	assert_int_equal(track_swap(&t, &bits, &size), 0);
	assert_true(bit(bits, 7));
	free(bits);
	assert_int_equal(pthread_join(a, NULL), 0);
	assert_int_equal(pthread_join(b, NULL), 0);
	fence_thaw(&f);
	track_release(&t);
	fence_release(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_basics),
		cmocka_unit_test(test_passes_converge),
		cmocka_unit_test(test_freeze_waits_for_mark),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
