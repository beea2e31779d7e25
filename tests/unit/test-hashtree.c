/* The hash tree walk finds exactly the differing leaves, in few hashes
 * when few differ. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "resync/hashtree.h"
#include "resync/limits.h"
#include "testlib.h"

/* Walk local against remote, the remote answering through hashtree_get
 * as a peer would. Returns the hashes exchanged. */
static uint64_t walk(const struct hashtree *local, const struct hashtree *remote,
		     size_t max_hashes, size_t max_ranges, uint64_t **ret_leaves, size_t *ret_n)
{
	struct hashtree_diff *d = NULL;
	struct hashtree_step step;
	struct hash128 *buf;
	size_t cap = max_hashes ? max_hashes : RESYNC_WIRE_HASHES_MAX;
	const uint64_t *leaves;
	uint64_t hashes;
	int r;

	buf = malloc(cap * sizeof(*buf));
	assert_non_null(buf);
	assert_int_equal(hashtree_diff_new(local, max_hashes, max_ranges, &d), 0);
	while ((r = hashtree_diff_next(d, &step)) == 1) {
		size_t n = 0;

		assert_true(step.n_hashes <= cap);
		assert_true(step.n_ranges <= (max_ranges ? max_ranges : RESYNC_WIRE_RANGES_MAX));
		assert_int_equal(hashtree_diff_next(d, &step), -EBUSY);
		assert_int_equal(hashtree_get(remote, step.level, step.ranges, step.n_ranges, buf,
					      cap, &n),
				 0);
		assert_int_equal(n, step.n_hashes);
		if (n)
			assert_int_equal(hashtree_diff_feed(d, buf, n - 1), -EBADMSG);
		assert_int_equal(hashtree_diff_feed(d, buf, n), 0);
	}
	assert_int_equal(r, 0);
	leaves = hashtree_diff_leaves(d, ret_n);
	*ret_leaves = malloc((*ret_n + 1) * sizeof(uint64_t));
	if (*ret_n)
		memcpy(*ret_leaves, leaves, *ret_n * sizeof(uint64_t));
	hashes = hashtree_diff_hashes(d);
	hashtree_diff_free(d);
	free(buf);
	return hashes;
}

static void check(uint64_t n, unsigned fanout, uint64_t d, uint64_t seed, size_t max_hashes,
		  size_t max_ranges)
{
	struct hash128 *a = calloc(n + 1, sizeof(*a)), *b = calloc(n + 1, sizeof(*b));
	unsigned char *flip = calloc(n + 1, 1);
	struct hashtree *ta = NULL, *tb = NULL;
	uint64_t st = seed, want = 0, hashes, *got;
	size_t ngot, k = 0;

	for (uint64_t i = 0; i < n; i++)
		a[i] = (struct hash128){testlib_rand(&st), testlib_rand(&st)};
	memcpy(b, a, n * sizeof(*a));
	for (uint64_t i = 0; i < d && n; i++) {
		uint64_t j = testlib_rand_below(&st, n);

		b[j].lo ^= 1 + testlib_rand_below(&st, 1000);
	}
	/* A leaf flipped twice may be equal again: the truth is a != b. */
	for (uint64_t i = 0; i < n; i++) {
		flip[i] = !hash128_equal(&a[i], &b[i]);
		want += flip[i];
	}
	assert_int_equal(hashtree_new(a, n, fanout, seed, &ta), 0);
	assert_int_equal(hashtree_new(b, n, fanout, seed, &tb), 0);
	hashes = walk(ta, tb, max_hashes, max_ranges, &got, &ngot);
	assert_int_equal(ngot, want);
	for (uint64_t i = 0; i < n; i++)
		if (flip[i]) {
			assert_int_equal(got[k], i);
			k++;
		}
	/* The cost bound: the root, then at most fanout children of each
	 * differing node on each level below it. */
	if (hashtree_levels(ta) > 0)
		assert_true(hashes <= 1 + want * fanout * (hashtree_levels(ta) - 1));
	if (want == 0)
		assert_true(hashes <= 1);
	hashtree_free(ta);
	hashtree_free(tb);
	free(got);
	free(a);
	free(b);
	free(flip);
}

static void test_patterns(void **state)
{
	static const uint64_t sizes[] = {0, 1, 2, 3, 63, 64, 65, 4095, 4096, 4097, 20000};
	static const unsigned fanouts[] = {2, 3, 16, 64, 1024};
	static const uint64_t diffs[] = {0, 1, 2, 7, 100, 100000};
	uint64_t seed = 1;

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		for (size_t j = 0; j < sizeof(fanouts) / sizeof(fanouts[0]); j++)
			for (size_t k = 0; k < sizeof(diffs) / sizeof(diffs[0]); k++)
				check(sizes[i], fanouts[j], diffs[k], seed++, 0, 0);
	/* Tiny requests: ranges split across steps. */
	check(5000, 64, 300, 7, 7, 3);
	check(5000, 2, 5000, 8, 1, 1);
	check(70000, 64, 70000, 9, 0, 0); /* more than one full step at the leaves */
}

static void test_few_hashes(void **state)
{
	/* 1 Mi blocks (64 GiB at 64 KiB), 5 differ: a few hundred hashes
	 * travel instead of a million. */
	uint64_t n = 1 << 20;
	struct hash128 *a = malloc(n * sizeof(*a)), *b = malloc(n * sizeof(*b));
	struct hashtree *ta = NULL, *tb = NULL;
	uint64_t st = 42, hashes, *got;
	size_t ngot;

	for (uint64_t i = 0; i < n; i++)
		a[i] = (struct hash128){testlib_rand(&st), i};
	memcpy(b, a, n * sizeof(*a));
	for (int i = 0; i < 5; i++)
		b[(i * 200003 + 17) % n].hi ^= 1;
	assert_int_equal(hashtree_new(a, n, 64, 99, &ta), 0);
	assert_int_equal(hashtree_new(b, n, 64, 99, &tb), 0);
	assert_int_equal(hashtree_levels(ta), 5); /* 1M, 16K, 256, 4, 1 */
	hashes = walk(ta, tb, 0, 0, &got, &ngot);
	assert_int_equal(ngot, 5);
	print_message("n=%llu d=5 fanout=64: %llu hashes exchanged\n", (unsigned long long)n,
		      (unsigned long long)hashes);
	assert_true(hashes <= 1 + 5 * 64 * 4);
	assert_true(hashes < n / 500);
	hashtree_free(ta);
	hashtree_free(tb);
	free(got);
	free(a);
	free(b);
}

static void test_seed_matters(void **state)
{
	struct hash128 a[100];
	struct hashtree *t1 = NULL, *t2 = NULL;

	for (int i = 0; i < 100; i++)
		a[i] = (struct hash128){i, i};
	assert_int_equal(hashtree_new(a, 100, 4, 1, &t1), 0);
	assert_int_equal(hashtree_new(a, 100, 4, 2, &t2), 0);
	assert_int_equal(hashtree_levels(t1), 5); /* 100, 25, 7, 2, 1 */
	assert_int_equal(hashtree_level_count(t1, 2), 7);
	assert_int_equal(hashtree_level_count(t1, 9), 0);
	assert_false(hash128_equal(hashtree_node(t1, 4, 0), hashtree_node(t2, 4, 0)));
	assert_true(hash128_equal(hashtree_node(t1, 0, 5), &a[5]));
	hashtree_free(t1);
	hashtree_free(t2);
	assert_int_equal(hashtree_new(a, 100, 1, 1, &t1), -EINVAL);
	assert_int_equal(hashtree_new(a, 100, 1025, 1, &t1), -EINVAL);
}

static void test_get_checks(void **state)
{
	struct hash128 a[100], out[16];
	struct hashtree *t = NULL;
	size_t n = 0;

	memset(a, 7, sizeof(a));
	assert_int_equal(hashtree_new(a, 100, 10, 1, &t), 0);
	assert_int_equal(hashtree_get(t, 0, &(struct hashtree_range){90, 10}, 1, out, 16, &n), 0);
	assert_int_equal(n, 10);
	assert_int_equal(hashtree_get(t, 3, &(struct hashtree_range){0, 1}, 1, out, 16, &n),
			 -ERANGE);
	assert_int_equal(hashtree_get(t, 0, &(struct hashtree_range){95, 6}, 1, out, 16, &n),
			 -ERANGE);
	assert_int_equal(hashtree_get(t, 0, &(struct hashtree_range){UINT64_MAX, 2}, 1, out, 16,
				      &n),
			 -ERANGE);
	assert_int_equal(hashtree_get(t, 0, &(struct hashtree_range){0, 17}, 1, out, 16, &n),
			 -ERANGE);
	assert_int_equal(hashtree_get(t, 0,
				      (struct hashtree_range[]){{0, 10}, {20, 7}}, 2, out, 16, &n),
			 -ERANGE);
	assert_int_equal(hashtree_get(t, 2, &(struct hashtree_range){0, 1}, 1, out, 16, &n), 0);
	assert_int_equal(hashtree_get(t, 2, &(struct hashtree_range){1, 1}, 1, out, 16, &n),
			 -ERANGE);
	hashtree_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_patterns),
		cmocka_unit_test(test_few_hashes),
		cmocka_unit_test(test_seed_matters),
		cmocka_unit_test(test_get_checks),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
