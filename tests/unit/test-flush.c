/* FSYNCs of the FUSE volume (fusefs/flush.c): a flush only when a write
 * is not yet covered by one that succeeded; FSYNCs that arrive while a
 * flush runs share the next; a failed flush fails those who waited on it
 * and covers nothing. Threads wait on conditions with deadlines. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "flush.h"
#include "testlib.h"

#define DEADLINE_USEC (10 * 1000000ull)

/* A flush function that counts its calls, fails on demand, and can be
 * held inside until released. */
struct fake {
	_Atomic unsigned calls;
	_Atomic int result;
	_Atomic bool hold;
	_Atomic bool inside;
};

static int fake_flush(void *arg)
{
	struct fake *k = arg;
	uint64_t t0 = clock_usec();

	atomic_fetch_add(&k->calls, 1);
	atomic_store(&k->inside, true);
	while (atomic_load(&k->hold) && clock_usec() - t0 < DEADLINE_USEC)
		sched_yield();
	atomic_store(&k->inside, false);
	return atomic_load(&k->result);
}

static void wait_until(bool (*cond)(void *), void *arg, const char *what)
{
	if (testlib_wait_until(cond, arg, DEADLINE_USEC) < 0)
		fail_msg("timed out waiting for %s", what);
}

static void test_covered(void **state)
{
	struct fake k = {0};
	struct flush f;

	(void)state;
	flush_init(&f);
	/* Nothing written: nothing to flush. */
	assert_int_equal(flush_sync(&f, fake_flush, &k), 0);
	assert_int_equal(atomic_load(&k.calls), 0);
	flush_wrote(&f);
	assert_int_equal(flush_sync(&f, fake_flush, &k), 0);
	assert_int_equal(atomic_load(&k.calls), 1);
	/* A second FSYNC with no write since: covered. */
	assert_int_equal(flush_sync(&f, fake_flush, &k), 0);
	assert_int_equal(atomic_load(&k.calls), 1);
	flush_wrote(&f);
	flush_wrote(&f);
	assert_int_equal(flush_sync(&f, fake_flush, &k), 0);
	assert_int_equal(atomic_load(&k.calls), 2);
	assert_int_equal(flush_count(&f), 2);
	flush_release(&f);
}

static void test_failure(void **state)
{
	struct fake k = {0};
	struct flush f;

	(void)state;
	flush_init(&f);
	flush_wrote(&f);
	atomic_store(&k.result, -EIO);
	assert_int_equal(flush_sync(&f, fake_flush, &k), -EIO);
	/* A failed flush covers nothing: the next FSYNC flushes again. */
	atomic_store(&k.result, 0);
	assert_int_equal(flush_sync(&f, fake_flush, &k), 0);
	assert_int_equal(atomic_load(&k.calls), 2);
	assert_int_equal(flush_sync(&f, fake_flush, &k), 0);
	assert_int_equal(atomic_load(&k.calls), 2);
	flush_release(&f);
}

struct syncer {
	struct flush *f;
	struct fake *k;
	pthread_t t;
	int r;
};

static void *syncer_run(void *arg)
{
	struct syncer *s = arg;

	s->r = flush_sync(s->f, fake_flush, s->k);
	return NULL;
}

static bool is_inside(void *arg)
{
	return atomic_load(&((struct fake *)arg)->inside);
}

struct waiting_arg {
	struct flush *f;
	unsigned n;
};

static bool n_waiting(void *arg)
{
	struct waiting_arg *w = arg;

	return flush_waiting(w->f) == w->n;
}

/* One FSYNC's flush runs (held); three more arrive after new writes and
 * wait; released, they share one more flush: two in all, not four. With
 * result, the first flush fails: those who waited fail with it. */
static void run_group(int first_result)
{
	struct fake k = {0};
	struct flush f;
	struct syncer s[4];
	struct waiting_arg w = {&f, 3};

	flush_init(&f);
	flush_wrote(&f);
	atomic_store(&k.hold, true);
	atomic_store(&k.result, first_result);
	s[0] = (struct syncer){.f = &f, .k = &k};
	assert_int_equal(pthread_create(&s[0].t, NULL, syncer_run, &s[0]), 0);
	wait_until(is_inside, &k, "the first flush");
	flush_wrote(&f); /* not covered by the running flush */
	for (int i = 1; i < 4; i++) {
		s[i] = (struct syncer){.f = &f, .k = &k};
		assert_int_equal(pthread_create(&s[i].t, NULL, syncer_run, &s[i]), 0);
	}
	wait_until(n_waiting, &w, "three waiting FSYNCs");
	atomic_store(&k.hold, false);
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_join(s[i].t, NULL), 0);
	atomic_store(&k.result, 0);
	if (first_result < 0) {
		/* They waited on a flush that failed: it is their error. */
		for (int i = 0; i < 4; i++)
			assert_int_equal(s[i].r, first_result);
		assert_int_equal(atomic_load(&k.calls), 1);
		/* And nothing counts as flushed. */
		assert_int_equal(flush_sync(&f, fake_flush, &k), 0);
		assert_int_equal(atomic_load(&k.calls), 2);
	} else {
		for (int i = 0; i < 4; i++)
			assert_int_equal(s[i].r, 0);
		assert_int_equal(atomic_load(&k.calls), 2);
	}
	flush_release(&f);
}

static void test_group(void **state)
{
	(void)state;
	run_group(0);
}

static void test_group_failure(void **state)
{
	(void)state;
	run_group(-EIO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_covered),
		cmocka_unit_test(test_failure),
		cmocka_unit_test(test_group),
		cmocka_unit_test(test_group_failure),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
