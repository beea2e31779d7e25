/* The weak rolling checksum and the block matcher: the slide equals a
 * fresh sum, shifted data is found at every shift, weak collisions are
 * rejected by the strong hash, max_miss bounds the search. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "resync/rollsum.h"
#include "testlib.h"

enum { W = 64, NB = 32, SEED = 7 };

struct found {
	size_t pos[4 * NB + 8];
	uint64_t id[4 * NB + 8];
	size_t n;
};

static int on_match(void *arg, size_t pos, uint64_t id)
{
	struct found *f = arg;

	assert_true(f->n < sizeof(f->pos) / sizeof(f->pos[0]));
	f->pos[f->n] = pos;
	f->id[f->n++] = id;
	return 0;
}

static void fill(unsigned char *p, size_t len, unsigned seed)
{
	srand(seed);
	for (size_t i = 0; i < len; i++)
		p[i] = (unsigned char)rand();
}

static struct rollmatch *blocks_of(const unsigned char *old, size_t n)
{
	struct rollmatch_block b[NB];
	struct rollmatch *m;

	for (size_t i = 0; i < n; i++)
		b[i] = (struct rollmatch_block){rollsum_block(old + i * W, W),
						hash_block(old + i * W, W, SEED), 100 + i};
	assert_int_equal(rollmatch_new(b, n, W, SEED, &m), 0);
	return m;
}

/* The definition, one byte at a time: a = sum of (x + 31), b = sum of the
 * running a's. */
static uint32_t rollsum_naive(const unsigned char *p, size_t len)
{
	uint32_t a = 0, b = 0;

	for (size_t i = 0; i < len; i++) {
		a += p[i] + 31u;
		b += a;
	}
	return (b << 16) | (a & 0xffff);
}

static void test_rollsum_block(void **state)
{
	static unsigned char buf[(1 << 20) + 100];

	(void)state;
	fill(buf, sizeof(buf), 9);
	for (size_t len = 1; len < 300; len++)
		assert_int_equal(rollsum_block(buf + 3, len), rollsum_naive(buf + 3, len));
	assert_int_equal(rollsum_block(buf, 4096), rollsum_naive(buf, 4096));
	assert_int_equal(rollsum_block(buf, 1 << 20), rollsum_naive(buf, 1 << 20));
	memset(buf, 0xff, sizeof(buf));
	assert_int_equal(rollsum_block(buf, 1 << 20), rollsum_naive(buf, 1 << 20));
	assert_int_equal(rollsum_block(buf, 65537), rollsum_naive(buf, 65537));
}

/* The matcher's slide (exercised by a scan at every shift) agrees with
 * fresh sums: a window found at pos k is the block whose bytes are there. */
static void test_rollmatch_every_shift(void **state)
{
	unsigned char old[NB * W], cur[NB * W + 3 * W];
	struct rollmatch *m;

	(void)state;
	fill(old, sizeof(old), 1);
	m = blocks_of(old, NB);
	for (size_t shift = 0; shift < 2 * W + 1; shift++) {
		struct found f = {0};
		long long used;

		fill(cur, shift, 2 + (unsigned)shift);
		memcpy(cur + shift, old, sizeof(old));
		used = rollmatch_scan(m, cur, shift + sizeof(old), 0, on_match, &f);
		assert_int_equal(f.n, NB);
		for (size_t i = 0; i < NB; i++) {
			assert_int_equal(f.pos[i], shift + i * W);
			assert_int_equal(f.id[i], 100 + i);
		}
		assert_int_equal(used, (long long)(shift + sizeof(old)));
	}
	rollmatch_free(m);
}

/* Blocks out of order: the hint (the next block) is wrong every time and
 * the weak sums find them all the same. */
static void test_rollmatch_reversed(void **state)
{
	unsigned char old[NB * W], cur[NB * W + 5];
	struct rollmatch *m;
	struct found f = {0};

	(void)state;
	fill(old, sizeof(old), 10);
	for (size_t i = 0; i < NB; i++)
		memcpy(cur + 5 + i * W, old + (NB - 1 - i) * W, W);
	fill(cur, 5, 11);
	m = blocks_of(old, NB);
	rollmatch_scan(m, cur, sizeof(cur), 0, on_match, &f);
	assert_int_equal(f.n, NB);
	for (size_t i = 0; i < NB; i++) {
		assert_int_equal(f.pos[i], 5 + i * W);
		assert_int_equal(f.id[i], 100 + NB - 1 - i);
	}
	rollmatch_free(m);
}

/* Random data matches nothing; the consumed count is every start. */
static void test_rollmatch_nothing(void **state)
{
	unsigned char old[NB * W], cur[8 * W];
	struct rollmatch *m;
	struct found f = {0};

	(void)state;
	fill(old, sizeof(old), 3);
	fill(cur, sizeof(cur), 4);
	m = blocks_of(old, NB);
	assert_int_equal(rollmatch_scan(m, cur, sizeof(cur), 0, on_match, &f),
			 (long long)(sizeof(cur) - W + 1));
	assert_int_equal(f.n, 0);
	/* Shorter than a window: nothing tried. */
	assert_int_equal(rollmatch_scan(m, cur, W - 1, 0, on_match, &f), 0);
	/* max_miss stops after that many starts without a match. */
	assert_int_equal(rollmatch_scan(m, cur, sizeof(cur), 10, on_match, &f), 10);
	rollmatch_free(m);
}

/* Two windows with the same weak sum (bytes swapped so that both sums
 * stay) but different bytes: the strong hash tells them apart. */
static void test_rollmatch_weak_collision(void **state)
{
	unsigned char old[W], cur[W];
	struct rollmatch *m;
	struct found f = {0};

	(void)state;
	fill(old, sizeof(old), 5);
	memcpy(cur, old, W);
	/* +1 at i, -2 at i+1, +1 at i+2: a and b both unchanged. */
	cur[10] = (unsigned char)(old[10] + 1);
	cur[11] = (unsigned char)(old[11] - 2);
	cur[12] = (unsigned char)(old[12] + 1);
	if (old[10] == 255 || old[11] < 2 || old[12] == 255)
		skip();
	assert_int_equal(rollsum_block(cur, W), rollsum_block(old, W));
	m = blocks_of(old, 1);
	assert_int_equal(rollmatch_scan(m, cur, W, 0, on_match, &f), 1);
	assert_int_equal(f.n, 0);
	assert_int_equal(rollmatch_scan(m, old, W, 0, on_match, &f), W);
	assert_int_equal(f.n, 1);
	rollmatch_free(m);
}

/* A callback's error stops the scan; an empty matcher finds nothing. */
static int on_match_fail(void *arg, size_t pos, uint64_t id)
{
	(void)arg;
	(void)pos;
	(void)id;
	return -EIO;
}

static void test_rollmatch_errors(void **state)
{
	unsigned char old[NB * W];
	struct rollmatch *m;
	struct found f = {0};

	(void)state;
	fill(old, sizeof(old), 6);
	m = blocks_of(old, NB);
	assert_int_equal(rollmatch_scan(m, old, sizeof(old), 0, on_match_fail, NULL), -EIO);
	rollmatch_free(m);
	assert_int_equal(rollmatch_new(NULL, 0, 0, 0, &m), -EINVAL);
	assert_int_equal(rollmatch_new(NULL, 0, W, 0, &m), 0);
	assert_int_equal(rollmatch_scan(m, old, sizeof(old), 0, on_match, &f),
			 (long long)(sizeof(old) - W + 1));
	assert_int_equal(f.n, 0);
	rollmatch_free(m);
	rollmatch_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rollsum_block),
		cmocka_unit_test(test_rollmatch_every_shift),
		cmocka_unit_test(test_rollmatch_reversed),
		cmocka_unit_test(test_rollmatch_nothing),
		cmocka_unit_test(test_rollmatch_weak_collision),
		cmocka_unit_test(test_rollmatch_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
