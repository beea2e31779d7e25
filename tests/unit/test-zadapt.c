/* zadapt.h: the level moves up while the link holds the frames back and
 * the data shrinks, down while compressing is slower than the link, and
 * stays put when off or between decisions; below level 1, a share of the
 * frames goes raw while zstd leaves the link idle or the link is faster
 * than zstd, and comes back while the link is the bottleneck (checked
 * against a simulated sender, link and send buffer). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdbool.h>

#include "zadapt.h"

enum { MIB = 1 << 20 };

/* One decision's window of frames: 1 MiB each, packed to ratio %, each
 * costing cpu and wait microseconds. */
static int window(struct zadapt *a, unsigned ratio, uint64_t cpu, uint64_t wait)
{
	int level = a->level;

	for (uint64_t done = 0; done < ZADAPT_WINDOW_BYTES; done += MIB)
		level = zadapt_note(a, MIB, (uint64_t)MIB * ratio / 100, cpu, wait, true);
	return level;
}

static void test_link_bound(void **state)
{
	struct zadapt a;

	(void)state;
	zadapt_init(&a, 1, true);
	/* Below a window: no decision. */
	assert_int_equal(zadapt_note(&a, MIB, MIB / 3, 100, 10000, true), 1);
	a.raw = a.packed = a.tried = a.tried_usec = a.cpu_usec = a.wait_usec = 0;
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

/* The share's pattern: of frames of any size, about share/ONE of the
 * bytes are tried, the first frame always; a skip (data that does not
 * shrink) earns no credit. */
static void test_share_pattern(void **state)
{
	static const uint64_t sizes[] = {4096, 300 << 10, 4 << 20, 64 << 10, 1 << 20};
	struct zadapt a;
	uint64_t all = 0, tried = 0;

	(void)state;
	zadapt_init(&a, 1, true);
	a.share = 4;
	assert_true(zadapt_try(&a));
	for (unsigned i = 0; i < 2000; i++) {
		uint64_t raw = sizes[i % 5];
		bool t = zadapt_try(&a);

		zadapt_sent(&a, raw, t ? raw / 3 : raw, t);
		all += raw;
		tried += t ? raw : 0;
	}
	/* Within one frame's worth of the share. */
	assert_true(tried * ZADAPT_SHARE_ONE <= all * 4 + (4ull << 20) * ZADAPT_SHARE_ONE);
	assert_true(tried * ZADAPT_SHARE_ONE + (4ull << 20) * ZADAPT_SHARE_ONE >= all * 4);
	assert_int_equal(a.mixed, all - tried);
	assert_int_equal(a.skipped, 0);
	/* At the whole share, every frame is tried. */
	a.share = ZADAPT_SHARE_ONE;
	while (!zadapt_try(&a))
		zadapt_sent(&a, 4096, 4096, false);
	for (int i = 0; i < 50; i++) {
		assert_true(zadapt_try(&a));
		zadapt_sent(&a, sizes[i % 5], sizes[i % 5] / 3, true);
	}
}

/* The CPU the bottleneck: the level falls to 1 first, then the share,
 * one part a window, to its floor and no lower. The link the bottleneck
 * again: the share comes back whole before the level rises. */
static void test_share_cpu_bound(void **state)
{
	struct zadapt a;

	(void)state;
	zadapt_init(&a, 2, true);
	window(&a, 30, 10000, 100);
	assert_int_equal(a.level, 1);
	assert_int_equal(a.share, ZADAPT_SHARE_ONE);
	/* Compressing slower than the waits but not 2x: level 1 holds, whole. */
	window(&a, 30, 1500, 1000);
	assert_int_equal(a.share, ZADAPT_SHARE_ONE);
	for (unsigned i = 1; i <= ZADAPT_SHARE_ONE - ZADAPT_SHARE_MIN; i++) {
		window(&a, 30, 10000, 100);
		assert_int_equal(a.share, ZADAPT_SHARE_ONE - i);
		assert_int_equal(a.level, 1);
	}
	for (int i = 0; i < 5; i++)
		window(&a, 30, 10000, 100);
	assert_int_equal(a.share, ZADAPT_SHARE_MIN);
	assert_int_equal(a.share_low, ZADAPT_SHARE_MIN);
	/* Between the two (waits over half the CPU, under all of it): held. */
	window(&a, 30, 1500, 1000);
	assert_int_equal(a.share, ZADAPT_SHARE_MIN);
	/* Waits on a link slower than zstd (1 MiB in 3 ms: 350 MB/s, the
	 * wire 8 MiB * 30 % in 8 * 13 ms: 24 MB/s): one part every second
	 * window; a window between two that is not link-bound starts again. */
	window(&a, 30, 3000, 10000);
	window(&a, 30, 1500, 1000);
	window(&a, 30, 3000, 10000);
	assert_int_equal(a.share, ZADAPT_SHARE_MIN);
	window(&a, 30, 3000, 10000);
	assert_int_equal(a.share, ZADAPT_SHARE_MIN + 1);
	for (unsigned i = ZADAPT_SHARE_MIN + 1; i < ZADAPT_SHARE_ONE; i++) {
		window(&a, 30, 3000, 10000);
		window(&a, 30, 3000, 10000);
	}
	assert_int_equal(a.share, ZADAPT_SHARE_ONE);
	assert_int_equal(a.level, 1);
	window(&a, 30, 3000, 10000);
	assert_int_equal(a.level, 2);
}

/* Waits on a link that carries bytes faster than zstd makes them (a
 * receiver holds the sends back, loopback): the share falls although
 * the sends wait; data that does not shrink never raises it. */
static void test_share_link_fast(void **state)
{
	struct zadapt a;

	(void)state;
	zadapt_init(&a, 1, true);
	a.share = 8;
	/* zstd 1 MiB in 3 ms: 350 MB/s; the wire 8 MiB * 30 % in 8 * 7 ms:
	 * 45 MB/s, the waits 4/7 of it. Slower than zstd: the share rises. */
	window(&a, 30, 3000, 4000);
	window(&a, 30, 3000, 4000);
	assert_int_equal(a.share, 9);
	/* Two frames tried (1 MiB in 4 ms), six sent raw (1 MiB in 0.9 ms):
	 * the wire 6.6 MiB in 13.6 ms, 509 MB/s, faster than zstd; the waits
	 * are 5/13.6 of the time, no idle link: down all the same. */
	for (int i = 0; i < 8; i++) {
		bool t = i < 2;

		zadapt_note(&a, MIB, t ? MIB * 3 / 10 : MIB, t ? 4000 : 100, t ? 100 : 800, t);
	}
	assert_int_equal(a.share, 8);
	/* None measured since the start: no such test. Data that does not
	 * shrink: the waits do not raise the share. */
	a.zrate = 0;
	for (int i = 0; i < 3; i++) {
		for (int k = 0; k < 8; k++)
			zadapt_note(&a, MIB, MIB, 100, 10000, false);
	}
	assert_int_equal(a.share, 8);
}

/* A sender as job-xfer.c runs it: frames of F raw bytes, each tried or
 * not as zadapt_try() says, zstd at zps bytes a second to pct % of them,
 * then the send into a buffer of buf bytes that a link drains at bps. */
struct sim {
	double bps, zps, buf;
	unsigned pct;
	double t, queued;	   /* now, bytes in the buffer */
	double busy;		   /* the link's time sending */
	uint64_t raw, wire, tried; /* bytes in all */
};

static void sim_pass(struct sim *s, double dt)
{
	double sent = dt * s->bps < s->queued ? dt * s->bps : s->queued;

	s->queued -= sent;
	s->busy += sent / s->bps;
	s->t += dt;
}

static void sim_frame(struct sim *s, struct zadapt *a, uint64_t f)
{
	bool t = zadapt_try(a);
	uint64_t packed = t ? f * s->pct / 100 : f;
	double cpu = t ? f / s->zps : f / 5e9, wait = packed / 5e9; /* copies, TLS */

	sim_pass(s, cpu);
	if (s->queued + packed > s->buf)
		wait += (s->queued + packed - s->buf) / s->bps;
	sim_pass(s, wait);
	s->queued += packed;
	zadapt_sent(a, f, packed, t);
	zadapt_note(a, f, packed, (uint64_t)(cpu * 1e6), (uint64_t)(wait * 1e6), t);
	s->raw += f;
	s->wire += packed;
	s->tried += t ? f : 0;
}

/* Run 400 MB through s from level 1; the link's busy share over the
 * second half, the time of the whole when every frame is compressed. */
static void sim_run(struct sim *s, struct zadapt *a, double *ret_busy, double *ret_all_tried)
{
	enum { F = 512 << 10, N = 800 };
	double t0 = 0, b0 = 0;

	zadapt_init(a, 1, true);
	for (unsigned i = 0; i < N; i++) {
		if (i == N / 2) {
			t0 = s->t;
			b0 = s->busy;
		}
		sim_frame(s, a, F);
	}
	sim_pass(s, s->queued / s->bps);
	*ret_busy = (s->busy - b0) / (s->t - t0);
	*ret_all_tried = (double)N * F / s->zps;
	if (*ret_all_tried < (double)N * F * s->pct / 100 / s->bps)
		*ret_all_tried = (double)N * F * s->pct / 100 / s->bps;
}

/* 100 MiB/s behind zstd at 125 MB/s (two senders and their receivers on
 * two cores), text at 3.9x: a share goes raw, the link stays full, the
 * wire below the raw bytes, sooner than compressing it all. */
static void test_sim_capped(void **state)
{
	struct sim s = {.bps = 100 << 20, .zps = 125e6, .buf = 6 << 20, .pct = 26};
	struct zadapt a;
	double busy, all;

	(void)state;
	sim_run(&s, &a, &busy, &all);
	assert_true(a.share_low < ZADAPT_SHARE_ONE);
	assert_true(a.share > ZADAPT_SHARE_MIN && a.share < ZADAPT_SHARE_ONE);
	assert_int_equal(a.level, 1);
	assert_true(busy > 0.95);
	assert_true(s.wire < s.raw * 0.8);
	assert_true(s.t < all * 0.85);
}

/* Loopback: the link far faster than zstd: raw but for the floor. */
static void test_sim_loopback(void **state)
{
	struct sim s = {.bps = 2e9, .zps = 250e6, .buf = 4 << 20, .pct = 26};
	struct zadapt a;
	double busy, all;

	(void)state;
	sim_run(&s, &a, &busy, &all);
	assert_int_equal(a.share, ZADAPT_SHARE_MIN);
	assert_true(s.wire < s.raw);
	assert_true(s.t < all * 0.4);
}

/* A slow link (10 MB/s): everything compressed, and the level rises. */
static void test_sim_slow(void **state)
{
	struct sim s = {.bps = 10e6, .zps = 250e6, .buf = 4 << 20, .pct = 26};
	struct zadapt a;
	double busy, all;

	(void)state;
	sim_run(&s, &a, &busy, &all);
	/* (the buffer filling first: a few frames raw) */
	assert_int_equal(a.share, ZADAPT_SHARE_ONE);
	assert_true(s.tried > s.raw * 0.97);
	assert_true(a.level > 1);
	assert_true(busy > 0.95);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_link_bound),
		cmocka_unit_test(test_incompressible),
		cmocka_unit_test(test_off),
		cmocka_unit_test(test_balanced),
		cmocka_unit_test(test_raw_skip),
		cmocka_unit_test(test_share_pattern),
		cmocka_unit_test(test_share_cpu_bound),
		cmocka_unit_test(test_share_link_fast),
		cmocka_unit_test(test_sim_capped),
		cmocka_unit_test(test_sim_loopback),
		cmocka_unit_test(test_sim_slow),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
