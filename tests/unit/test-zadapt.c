/* zadapt.h: the level moves up while the link holds the frames back and
 * the data shrinks, down while compressing is slower than the link, and
 * stays put when off or between decisions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "zadapt.h"

enum { MIB = 1 << 20 };

/* One decision's window of frames: 1 MiB each, packed to ratio %, each
 * costing cpu and wait microseconds. */
static int window(struct zadapt *a, unsigned ratio, uint64_t cpu, uint64_t wait)
{
	int level = a->level;

	for (uint64_t done = 0; done < ZADAPT_WINDOW_BYTES; done += MIB)
		level = zadapt_note(a, MIB, (uint64_t)MIB * ratio / 100, cpu, wait);
	return level;
}

static void test_link_bound(void **state)
{
	struct zadapt a;

	(void)state;
	zadapt_init(&a, 1, true);
	/* Below a window: no decision. */
	assert_int_equal(zadapt_note(&a, MIB, MIB / 3, 100, 10000), 1);
	a.raw = a.packed = a.cpu_usec = a.wait_usec = 0;
	assert_int_equal(window(&a, 33, 100, 10000), 2);
	for (int i = 0; i < 20; i++)
		window(&a, 33, 100, 10000);
	assert_int_equal(a.level, ZADAPT_LEVEL_MAX);
	assert_int_equal(a.highest, ZADAPT_LEVEL_MAX);
	/* The CPU becomes the bottleneck: down again. */
	assert_int_equal(window(&a, 33, 10000, 100), ZADAPT_LEVEL_MAX - 1);
	for (int i = 0; i < 20; i++)
		window(&a, 33, 10000, 100);
	assert_int_equal(a.level, ZADAPT_LEVEL_MIN);
	assert_int_equal(a.lowest, ZADAPT_LEVEL_MIN);
}

static void test_incompressible(void **state)
{
	struct zadapt a;

	(void)state;
	zadapt_init(&a, 3, true);
	/* The link waits, but nothing shrinks: never above the start. */
	for (int i = 0; i < 5; i++)
		window(&a, 100, 100, 10000);
	assert_int_equal(a.level, 3);
	/* Lowered by the CPU, then back up to the start, not past it. */
	window(&a, 100, 10000, 100);
	assert_int_equal(a.level, 2);
	for (int i = 0; i < 5; i++)
		window(&a, 100, 100, 10000);
	assert_int_equal(a.level, 3);
}

static void test_off(void **state)
{
	struct zadapt a;

	(void)state;
	zadapt_init(&a, 5, false);
	for (int i = 0; i < 5; i++) {
		window(&a, 30, 100, 10000);
		window(&a, 30, 10000, 100);
	}
	assert_int_equal(a.level, 5);
	assert_int_equal(a.lowest, 5);
	assert_int_equal(a.highest, 5);
}

/* Neither side dominates (waits under twice the CPU, CPU under the
 * waits): the level stays. */
static void test_balanced(void **state)
{
	struct zadapt a;

	(void)state;
	zadapt_init(&a, 4, true);
	for (int i = 0; i < 5; i++)
		window(&a, 30, 1000, 1500);
	assert_int_equal(a.level, 4);
}

/* Frames that do not shrink: after ZADAPT_RAW_STREAK of them in a row,
 * ZADAPT_RAW_SKIP_BYTES go without a try, then one is tried again; one
 * that shrinks is tried again and again; off or on alike. */
static void test_raw_skip(void **state)
{
	enum { F = 512 << 10 };
	struct zadapt a;
	unsigned tried = 0;

	(void)state;
	zadapt_init(&a, 1, false);
	assert_true(zadapt_try(&a));
	zadapt_sent(&a, F, F + 100, true);
	assert_true(zadapt_try(&a)); /* one is not a streak */
	zadapt_sent(&a, F, F + 100, true);
	for (uint64_t sent = 0; sent < ZADAPT_RAW_SKIP_BYTES; sent += F) {
		assert_false(zadapt_try(&a));
		zadapt_sent(&a, F, F, false);
	}
	assert_int_equal(a.skipped, ZADAPT_RAW_SKIP_BYTES);
	assert_true(zadapt_try(&a)); /* tried again */
	zadapt_sent(&a, F, F / 3, true);
	for (int i = 0; i < 20; i++) {
		tried += zadapt_try(&a);
		zadapt_sent(&a, F, F / 3, true);
	}
	assert_int_equal(tried, 20);
	/* A shrinking frame between two that did not: no streak. */
	zadapt_sent(&a, F, F + 1, true);
	zadapt_sent(&a, F, F / 2, true);
	zadapt_sent(&a, F, F + 1, true);
	assert_true(zadapt_try(&a));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_link_bound),
		cmocka_unit_test(test_incompressible),
		cmocka_unit_test(test_off),
		cmocka_unit_test(test_balanced),
		cmocka_unit_test(test_raw_skip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
