/* Range lists: merging on append, normalisation, sums. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "resync/range.h"
#include "testlib.h"

static void assert_ranges(const struct rangelist *l, const struct range *want, size_t n)
{
	assert_int_equal(l->n, n);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(l->v[i].off, want[i].off);
		assert_int_equal(l->v[i].len, want[i].len);
	}
}

static void test_range_add_merges_adjacent(void **state)
{
	struct rangelist l = {0};
	const struct range want[] = {{0, 30}, {40, 5}, {100, 1}};

	assert_int_equal(rangelist_add(&l, 0, 10), 0);
	assert_int_equal(rangelist_add(&l, 10, 20), 0);
	assert_int_equal(rangelist_add(&l, 40, 5), 0);
	assert_int_equal(rangelist_add(&l, 77, 0), 0); /* empty: ignored */
	assert_int_equal(rangelist_add(&l, 100, 1), 0);
	assert_ranges(&l, want, 3);
	assert_int_equal(rangelist_bytes(&l), 36);
	rangelist_release(&l);
	assert_null(l.v);
	assert_int_equal(l.n, 0);
	assert_int_equal(l.cap, 0);
	/* Released lists are reusable. */
	assert_int_equal(rangelist_add(&l, 5, 5), 0);
	assert_int_equal(l.n, 1);
	rangelist_release(&l);
}

static void test_range_add_grows(void **state)
{
	struct rangelist l = {0};

	for (uint64_t i = 0; i < 10000; i++)
		assert_int_equal(rangelist_add(&l, i * 10, 5), 0);
	assert_int_equal(l.n, 10000);
	assert_true(l.cap >= l.n);
	for (uint64_t i = 0; i < 10000; i++) {
		assert_int_equal(l.v[i].off, i * 10);
		assert_int_equal(l.v[i].len, 5);
	}
	assert_int_equal(rangelist_bytes(&l), 50000);
	rangelist_release(&l);
}

static void test_range_large_offsets(void **state)
{
	struct rangelist l = {0};
	const uint64_t big = UINT64_C(1) << 62;

	assert_int_equal(rangelist_add(&l, big, big / 2), 0);
	assert_int_equal(rangelist_add(&l, big + big / 2, 7), 0);
	assert_int_equal(l.n, 1);
	assert_int_equal(rangelist_bytes(&l), big / 2 + 7);
	rangelist_release(&l);
}

static void test_range_extend(void **state)
{
	struct rangelist a = {0}, b = {0};
	const struct range want[] = {{0, 20}, {30, 10}};

	assert_int_equal(rangelist_add(&a, 0, 10), 0);
	assert_int_equal(rangelist_add(&b, 10, 10), 0); /* adjacent to a's last */
	assert_int_equal(rangelist_add(&b, 30, 10), 0);
	assert_int_equal(rangelist_extend(&a, &b), 0);
	assert_ranges(&a, want, 2);
	assert_int_equal(b.n, 2); /* other is untouched */
	assert_int_equal(rangelist_extend(&a, &(struct rangelist){0}), 0);
	assert_ranges(&a, want, 2);
	rangelist_release(&a);
	rangelist_release(&b);
}

static void test_range_normalize(void **state)
{
	struct rangelist l = {0};
	/* Unsorted; overlapping, contained, adjacent and disjoint. */
	const struct range in[] = {{100, 10}, {0, 5},	{50, 20}, {55, 5}, {5, 5},
				   {65, 10},  {200, 1}, {110, 0}, {109, 3}};
	const struct range want[] = {{0, 10}, {50, 25}, {100, 12}, {200, 1}};

	for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++)
		assert_int_equal(rangelist_add(&l, in[i].off, in[i].len), 0);
	rangelist_normalize(&l);
	assert_ranges(&l, want, 4);
	assert_int_equal(rangelist_bytes(&l), 48);
	/* Idempotent. */
	rangelist_normalize(&l);
	assert_ranges(&l, want, 4);
	rangelist_release(&l);

	/* Empty and single lists are fine. */
	rangelist_normalize(&l);
	assert_int_equal(l.n, 0);
	assert_int_equal(rangelist_add(&l, 3, 4), 0);
	rangelist_normalize(&l);
	assert_int_equal(l.n, 1);
	rangelist_release(&l);
}

/* Against a bitmap model: random ranges, normalised, cover exactly the
 * bytes the model says, in order, without touching or overlapping. */
static void test_range_normalize_random(void **state)
{
	enum { SPACE = 4096 };
	uint64_t st = 1;

	for (int round = 0; round < 200; round++) {
		unsigned char model[SPACE] = {0}, got[SPACE] = {0};
		struct rangelist l = {0};
		unsigned n = (unsigned)testlib_rand_below(&st, 40);

		for (unsigned i = 0; i < n; i++) {
			uint64_t off = testlib_rand_below(&st, SPACE);
			uint64_t len = testlib_rand_below(&st, SPACE - off + 1) % 300;

			assert_int_equal(rangelist_add(&l, off, len), 0);
			for (uint64_t k = off; k < off + len; k++)
				model[k] = 1;
		}
		rangelist_normalize(&l);
		for (size_t i = 0; i < l.n; i++) {
			assert_true(l.v[i].len > 0);
			if (i)
				assert_true(l.v[i].off > l.v[i - 1].off + l.v[i - 1].len);
			for (uint64_t k = l.v[i].off; k < l.v[i].off + l.v[i].len; k++)
				got[k] = 1;
		}
		assert_memory_equal(model, got, SPACE);
		rangelist_release(&l);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_range_add_merges_adjacent),
	    cmocka_unit_test(test_range_add_grows),
	    cmocka_unit_test(test_range_large_offsets),
	    cmocka_unit_test(test_range_extend),
	    cmocka_unit_test(test_range_normalize),
	    cmocka_unit_test(test_range_normalize_random),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
