/* The write fence of the FUSE volume: the fast path, wait mode holding
 * writers until a thaw and letting them through in arrival order, fail
 * mode refusing with EROFS, a freeze waiting for the writes in flight, a
 * thaw waking everyone, and freezes that do not nest. Threads and
 * deadlines decide, never fixed sleeps. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include <cmocka.h>

#include "fence.h"
#include "testlib.h"

#define DEADLINE_USEC (10 * 1000000ull)
#define NWRITERS 8

struct writer {
	struct fence *f;
	unsigned index;		  /* arrival order at the fence */
	int result;		  /* of fence_enter */
	uint64_t serving_at_pass; /* the fence's next ticket when it let us through */
	atomic_bool passed;
	atomic_bool release;	  /* leave the fence when set */
	pthread_t thread;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;

	w->result = fence_enter(w->f);
	if (w->result == 0) {
		pthread_mutex_lock(&w->f->lock);
		w->serving_at_pass = w->f->serving;
		pthread_mutex_unlock(&w->f->lock);
	}
	atomic_store(&w->passed, true);
	if (w->result == 0) {
		/* Stay in flight until the test lets go. */
		while (!atomic_load(&w->release))
			usleep(1000);
		fence_leave(w->f);
	}
	return NULL;
}

struct waiting_arg {
	struct fence *f;
	unsigned n;
};

static bool waiting_is(void *arg)
{
	struct waiting_arg *a = arg;

	return fence_waiting(a->f) == a->n;
}

static bool passed(void *arg)
{
	return atomic_load(&((struct writer *)arg)->passed);
}

static bool flag_set(void *arg)
{
	return atomic_load((atomic_bool *)arg);
}

static void writer_start(struct fence *f, struct writer *w, unsigned index, bool release)
{
	*w = (struct writer){.f = f, .index = index};
	atomic_store(&w->release, release);
	assert_int_equal(pthread_create(&w->thread, NULL, writer_main, w), 0);
}

static void writer_join(struct writer *w)
{
	atomic_store(&w->release, true);
	assert_int_equal(pthread_join(w->thread, NULL), 0);
}

static void test_fast_path(void **state)
{
	struct fence f;

	(void)state;
	fence_init(&f);
	assert_false(fence_frozen(&f));
	assert_int_equal(fence_enter(&f), 0);
	assert_int_equal(fence_enter(&f), 0);
	assert_int_equal(f.inflight, 2);
	fence_leave(&f);
	fence_leave(&f);
	assert_int_equal(f.inflight, 0);
	/* Nobody waited: no ticket was taken. */
	assert_int_equal(fence_waiting(&f), 0);
	assert_int_equal(f.next_ticket, 0);
	fence_release(&f);
}

static void test_wait_holds_until_thaw_in_order(void **state)
{
	struct writer w[NWRITERS];
	struct fence f;

	(void)state;
	fence_init(&f);
	fence_freeze(&f, FUSEFS_FENCE_WAIT);
	assert_true(fence_frozen(&f));
	/* One at a time, so that the arrival order is known. */
	for (unsigned i = 0; i < NWRITERS; i++) {
		struct waiting_arg wa = {&f, i + 1};

		writer_start(&f, &w[i], i, true);
		assert_int_equal(testlib_wait_until(waiting_is, &wa, DEADLINE_USEC), 0);
	}
	/* Every writer holds a ticket and none got through. */
	for (unsigned i = 0; i < NWRITERS; i++)
		assert_false(atomic_load(&w[i].passed));
	assert_int_equal(f.inflight, 0);

	fence_thaw(&f);
	assert_false(fence_frozen(&f));
	for (unsigned i = 0; i < NWRITERS; i++) {
		assert_int_equal(testlib_wait_until(passed, &w[i], DEADLINE_USEC), 0);
		writer_join(&w[i]);
		assert_int_equal(w[i].result, 0);
		/* Ticket i passes when serving is i and moves it to i + 1:
		 * a writer let through ahead of an earlier one would see
		 * the count short of its own ticket. */
		assert_true(w[i].serving_at_pass >= w[i].index + 1);
	}
	assert_int_equal(fence_waiting(&f), 0);
	assert_int_equal(f.inflight, 0);
	/* The queue is empty again: the fast path is back. */
	assert_int_equal(fence_enter(&f), 0);
	fence_leave(&f);
	fence_release(&f);
}

static void test_fail_mode_refuses(void **state)
{
	struct fence f;

	(void)state;
	fence_init(&f);
	fence_freeze(&f, FUSEFS_FENCE_FAIL);
	assert_int_equal(fence_enter(&f), -EROFS);
	assert_int_equal(fence_enter(&f), -EROFS);
	/* A refused writer holds nothing: no ticket, nothing in flight. */
	assert_int_equal(fence_waiting(&f), 0);
	assert_int_equal(f.inflight, 0);
	fence_thaw(&f);
	assert_int_equal(fence_enter(&f), 0);
	fence_leave(&f);
	fence_release(&f);
}

struct freezer {
	struct fence *f;
	enum fusefs_fence_mode mode;
	atomic_bool done;
	pthread_t thread;
};

static void *freezer_main(void *arg)
{
	struct freezer *z = arg;

	fence_freeze(z->f, z->mode);
	atomic_store(&z->done, true);
	return NULL;
}

static bool frozen(void *arg)
{
	return fence_frozen(arg);
}

static void test_freeze_waits_for_inflight(void **state)
{
	struct freezer z = {0};
	struct writer late;
	struct fence f;

	(void)state;
	fence_init(&f);
	assert_int_equal(fence_enter(&f), 0); /* a write in flight */
	z.f = &f;
	z.mode = FUSEFS_FENCE_FAIL;
	assert_int_equal(pthread_create(&z.thread, NULL, freezer_main, &z), 0);
	/* The fence is up at once (new writes are refused) but the freeze
	 * does not return while the write is in flight. */
	assert_int_equal(testlib_wait_until(frozen, &f, DEADLINE_USEC), 0);
	assert_int_equal(fence_enter(&f), -EROFS);
	assert_false(atomic_load(&z.done));
	fence_leave(&f);
	assert_int_equal(testlib_wait_until(flag_set, &z.done, DEADLINE_USEC), 0);
	assert_int_equal(pthread_join(z.thread, NULL), 0);
	assert_int_equal(f.inflight, 0);

	/* In wait mode too: a writer that arrives meanwhile waits. */
	fence_thaw(&f);
	assert_int_equal(fence_enter(&f), 0);
	z.mode = FUSEFS_FENCE_WAIT;
	atomic_store(&z.done, false);
	assert_int_equal(pthread_create(&z.thread, NULL, freezer_main, &z), 0);
	assert_int_equal(testlib_wait_until(frozen, &f, DEADLINE_USEC), 0);
	writer_start(&f, &late, 0, true);
	{
		struct waiting_arg wa = {&f, 1};

		assert_int_equal(testlib_wait_until(waiting_is, &wa, DEADLINE_USEC), 0);
	}
	assert_false(atomic_load(&z.done));
	fence_leave(&f);
	assert_int_equal(testlib_wait_until(flag_set, &z.done, DEADLINE_USEC), 0);
	assert_int_equal(pthread_join(z.thread, NULL), 0);
	assert_false(atomic_load(&late.passed));
	fence_thaw(&f);
	writer_join(&late);
	assert_int_equal(late.result, 0);
	fence_release(&f);
}

static void test_thaw_wakes_everyone(void **state)
{
	struct writer w[NWRITERS];
	struct waiting_arg wa;
	struct fence f;

	(void)state;
	fence_init(&f);
	fence_freeze(&f, FUSEFS_FENCE_WAIT);
	/* All at once this time: arrival order is the scheduler's. */
	for (unsigned i = 0; i < NWRITERS; i++)
		writer_start(&f, &w[i], i, false);
	wa = (struct waiting_arg){&f, NWRITERS};
	assert_int_equal(testlib_wait_until(waiting_is, &wa, DEADLINE_USEC), 0);
	fence_thaw(&f);
	/* Every writer gets in and stays in: all NWRITERS in flight. */
	for (unsigned i = 0; i < NWRITERS; i++)
		assert_int_equal(testlib_wait_until(passed, &w[i], DEADLINE_USEC), 0);
	pthread_mutex_lock(&f.lock);
	assert_int_equal(f.inflight, NWRITERS);
	pthread_mutex_unlock(&f.lock);
	for (unsigned i = 0; i < NWRITERS; i++) {
		writer_join(&w[i]);
		assert_int_equal(w[i].result, 0);
	}
	assert_int_equal(f.inflight, 0);
	assert_int_equal(fence_waiting(&f), 0);
	fence_release(&f);
}

static void test_freezes_do_not_nest(void **state)
{
	struct fence f;

	(void)state;
	fence_init(&f);
	/* A second freeze returns at once and its mode wins; one thaw ends
	 * any number of freezes (owners pair them themselves). */
	fence_freeze(&f, FUSEFS_FENCE_WAIT);
	fence_freeze(&f, FUSEFS_FENCE_FAIL);
	assert_true(fence_frozen(&f));
	assert_int_equal(fence_enter(&f), -EROFS);
	fence_thaw(&f);
	assert_false(fence_frozen(&f));
	assert_int_equal(fence_enter(&f), 0);
	fence_leave(&f);
	/* A thaw without a freeze is harmless. */
	fence_thaw(&f);
	assert_false(fence_frozen(&f));
	fence_release(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fast_path),
		cmocka_unit_test(test_wait_holds_until_thaw_in_order),
		cmocka_unit_test(test_fail_mode_refuses),
		cmocka_unit_test(test_freeze_waits_for_inflight),
		cmocka_unit_test(test_thaw_wakes_everyone),
		cmocka_unit_test(test_freezes_do_not_nest),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
