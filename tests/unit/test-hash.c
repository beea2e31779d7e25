/* Block hashing: deterministic for a seed, sensitive to seed and data, and
 * the same function on every vector path. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <xxhash.h>

#include "hash-int.h"
#include "resync/hash.h"
#include "resync/macro.h"
#include "testlib.h"

#define BIG (1 << 20)

static bool have_cpu(const char *feature)
{
#if defined(__x86_64__)
	__builtin_cpu_init();
	if (!strcmp(feature, "avx512f"))
		return __builtin_cpu_supports("avx512f");
	return !strcmp(feature, "avx2") && __builtin_cpu_supports("avx2");
#else
	(void)feature;
	return false;
#endif
}

/* The hash is xxh3-128 exactly: compare with the system's libxxhash (a
 * separate build of the reference code), so that the function cannot
 * change silently between versions that must compare hashes. */
static void test_hash_is_xxh3_128(void **state)
{
	_cleanup_free_ unsigned char *buf = malloc(BIG);
	static const size_t lens[] = {0,   1,	3,   8,	   16,	 17,	128,
				      129, 240, 241, 1024, 4095, 65536, BIG};

	assert_non_null(buf);
	testlib_fill(buf, BIG, 21);
	for (size_t i = 0; i < ARRAY_SIZE(lens); i++) {
		for (uint64_t seed = 0; seed < 3; seed++) {
			XXH128_hash_t x = XXH3_128bits_withSeed(buf, lens[i], seed * 0x9e37);
			struct hash128 h = hash_block(buf, lens[i], seed * 0x9e37);

			assert_true(h.lo == x.low64 && h.hi == x.high64);
		}
	}
}

static void test_hash_deterministic(void **state)
{
	_cleanup_free_ unsigned char *buf = malloc(BIG);

	assert_non_null(buf);
	testlib_fill(buf, BIG, 7);
	for (size_t len = 0; len <= BIG; len = len ? len * 4 + 3 : 1) {
		struct hash128 a = hash_block(buf, len, 0x1234);
		struct hash128 b = hash_block(buf, len, 0x1234);

		assert_true(hash128_equal(&a, &b));
	}
	/* A copy at another (unaligned) address hashes the same. */
	{
		_cleanup_free_ unsigned char *copy = malloc(65536 + 1);
		struct hash128 a, b;

		assert_non_null(copy);
		memcpy(copy + 1, buf, 65536);
		a = hash_block(buf, 65536, 99);
		b = hash_block(copy + 1, 65536, 99);
		assert_true(hash128_equal(&a, &b));
	}
}

static void test_hash_seeds_differ(void **state)
{
	_cleanup_free_ unsigned char *buf = malloc(65536);
	static const size_t lens[] = {0, 1, 16, 17, 128, 129, 240, 241, 4096, 65536};

	assert_non_null(buf);
	testlib_fill(buf, 65536, 3);
	for (size_t i = 0; i < ARRAY_SIZE(lens); i++) {
		struct hash128 a = hash_block(buf, lens[i], 1);
		struct hash128 b = hash_block(buf, lens[i], 2);
		struct hash128 c = hash_block(buf, lens[i], 1ULL << 63);

		assert_false(hash128_equal(&a, &b));
		assert_false(hash128_equal(&a, &c));
		assert_false(hash128_equal(&b, &c));
	}
}

static void test_hash_data_differs(void **state)
{
	_cleanup_free_ unsigned char *buf = malloc(65536);
	struct hash128 ref;

	assert_non_null(buf);
	testlib_fill(buf, 65536, 5);
	ref = hash_block(buf, 65536, 11);
	/* Flip one bit anywhere: the hash changes. */
	for (size_t off = 0; off < 65536; off += 4093) {
		struct hash128 h;

		buf[off] ^= 0x10;
		h = hash_block(buf, 65536, 11);
		buf[off] ^= 0x10;
		assert_false(hash128_equal(&h, &ref));
	}
	/* A prefix is not the whole. */
	{
		struct hash128 h = hash_block(buf, 65535, 11);

		assert_false(hash128_equal(&h, &ref));
	}
}

#if defined(__x86_64__)
/* f computes what the baseline path does: every length up to 1 KiB (all
 * the short-input branches), then random lengths and offsets up to 1 MiB,
 * several seeds; and the dispatched hash_block() agrees. */
static void hash_path_equals_sse2(struct hash128 (*f)(const void *, size_t, uint64_t))
{
	_cleanup_free_ unsigned char *buf = malloc(BIG + 64);
	uint64_t st = 17;

	assert_non_null(buf);
	testlib_fill(buf, BIG + 64, 13);
	for (size_t len = 0; len <= 1024; len++) {
		uint64_t seed = testlib_rand(&st);
		struct hash128 a = f(buf, len, seed);
		struct hash128 b = hash_block_sse2(buf, len, seed);

		assert_true(hash128_equal(&a, &b));
	}
	for (int i = 0; i < 200; i++) {
		size_t off = (size_t)testlib_rand_below(&st, 64);
		size_t len = (size_t)testlib_rand_below(&st, BIG + 1);
		uint64_t seed = i == 0 ? 0 : testlib_rand(&st);
		struct hash128 a = f(buf + off, len, seed);
		struct hash128 b = hash_block_sse2(buf + off, len, seed);

		assert_true(hash128_equal(&a, &b));
	}
	for (size_t len = 4096; len <= BIG; len *= 2) {
		struct hash128 a = f(buf, len, 0xfeed);
		struct hash128 b = hash_block_sse2(buf, len, 0xfeed);
		struct hash128 c = hash_block(buf, len, 0xfeed);

		assert_true(hash128_equal(&a, &b));
		assert_true(hash128_equal(&a, &c));
	}
}
#endif

#if defined(__x86_64__)
/* The path f, built for feature: checked where this CPU has it, else
 * skipped, and said so. */
static void hash_path_checked(const char *feature,
			      struct hash128 (*f)(const void *, size_t, uint64_t))
{
	if (!have_cpu(feature)) {
		fprintf(stderr, "test-hash: SKIPPED: this CPU has no %s: that path is not "
				"checked here\n", feature);
		skip();
		return;
	}
	hash_path_equals_sse2(f);
}
#endif

static void test_hash_avx2_equals_sse2(void **state)
{
#if defined(__x86_64__)
	hash_path_checked("avx2", hash_block_avx2);
#else
	skip();
#endif
}

static void test_hash_avx512_equals_sse2(void **state)
{
#if defined(__x86_64__)
	hash_path_checked("avx512f", hash_block_avx512);
#else
	skip();
#endif
}

static void test_hash_impl_name(void **state)
{
	const char *name = hash_impl_name();

	assert_non_null(name);
	assert_string_equal(name, have_cpu("avx512f") ? "avx512" : have_cpu("avx2") ? "avx2" : "sse2");
}

/* hash_impl_set() picks a path by name, refuses one this CPU lacks, and
 * every path gives the same hash. */
static void test_hash_impl_set(void **state)
{
	static const char *const names[] = {"sse2", "avx2", "avx512"};
	_cleanup_free_ unsigned char *buf = malloc(65536);
	const char *was = hash_impl_name();
	struct hash128 ref;

	assert_non_null(buf);
	testlib_fill(buf, 65536, 21);
	ref = hash_block(buf, 65536, 99);
	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		bool have = !strcmp(names[i], "sse2") || have_cpu(names[i][3] == '5' ? "avx512f" : "avx2");
		struct hash128 h;

		if (!have) {
			assert_int_equal(hash_impl_set(names[i]), -ENOTSUP);
			continue;
		}
		assert_int_equal(hash_impl_set(names[i]), 0);
		assert_string_equal(hash_impl_name(), names[i]);
		h = hash_block(buf, 65536, 99);
		assert_true(hash128_equal(&h, &ref));
	}
	assert_int_equal(hash_impl_set("avx1024"), -ENOTSUP);
	assert_int_equal(hash_impl_set(was), 0);
}

/* hash_span() on every path this CPU runs: its leaves and its whole are
 * the reference library's xxh3-128 of the same bytes (leaves with the
 * seed, the whole with seed 0), for the one-pass geometries (leaves of 1,
 * 4 and 64 KiB, spans of one leaf to 256, seed 0 or not, any alignment)
 * and for those it hashes twice instead (short or odd leaves, a short
 * span); and hash_block() of whole KiB, which runs the same loop. Where
 * a path is missing on this CPU, it says so. */
static void test_hash_span(void **state)
{
	static const char *const names[] = {"sse2", "avx2", "avx512"};
	static const struct {
		size_t bs, len;
	} g[] = {{1024, 1024},	 {1024, 65536},	  {4096, 4096},	 {4096, 65536}, {4096, 1 << 20},
		 {65536, 65536}, {65536, 262144}, {4096, 12288}, {512, 4096},	{4096, 6000},
		 {3072, 9216},	 {4096, 100},	  {2048, 2048}};
	_cleanup_free_ unsigned char *buf = malloc(BIG + 64);
	_cleanup_free_ struct hash128 *leaves = calloc(BIG / 512 + 1, sizeof(*leaves));
	const char *was = hash_impl_name();
	uint64_t st = 41;

	assert_non_null(buf);
	assert_non_null(leaves);
	testlib_fill(buf, BIG + 64, 29);
	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		if (hash_impl_set(names[i]) < 0) {
			fprintf(stderr,
				"test-hash: SKIPPED: this CPU has no %s: its span hash is not "
				"checked here\n",
				names[i]);
			continue;
		}
		for (size_t k = 0; k < ARRAY_SIZE(g); k++) {
			for (int r = 0; r < 3; r++) {
				size_t off = r == 0 ? 0 : (size_t)testlib_rand_below(&st, 64);
				uint64_t seed = r == 1 ? 0 : testlib_rand(&st);
				const unsigned char *p = buf + off;
				struct hash128 whole;
				XXH128_hash_t ref = XXH3_128bits_withSeed(p, g[k].len, 0);

				hash_span(p, g[k].len, g[k].bs, seed, leaves, &whole);
				assert_true(whole.lo == ref.low64 && whole.hi == ref.high64);
				for (size_t o = 0, n = 0; o < g[k].len; o += g[k].bs, n++) {
					size_t l = MIN(g[k].bs, g[k].len - o);

					ref = XXH3_128bits_withSeed(p + o, l, seed);
					assert_true(leaves[n].lo == ref.low64 &&
						    leaves[n].hi == ref.high64);
				}
			}
		}
		/* hash_block() of whole KiB goes by the same loop. */
		for (int r = 0; r < 64; r++) {
			size_t len = r < 8 ? ((size_t)1024 << r)
					   : 1024 * (1 + (size_t)testlib_rand_below(&st, BIG / 1024));
			size_t off = (size_t)testlib_rand_below(&st, 64);
			uint64_t seed = r % 2 ? 0 : testlib_rand(&st);
			struct hash128 h = hash_block(buf + off, len, seed);
			XXH128_hash_t ref = XXH3_128bits_withSeed(buf + off, len, seed);

			assert_true(h.lo == ref.low64 && h.hi == ref.high64);
		}
	}
	assert_int_equal(hash_impl_set(was), 0);
}

static void test_hash_seed_random(void **state)
{
	uint64_t a = 0, b = 0;

	assert_int_equal(hash_seed_random(&a), 0);
	assert_int_equal(hash_seed_random(&b), 0);
	/* 2^-64 chance of a false failure. */
	assert_true(a != b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hash_is_xxh3_128),
	    cmocka_unit_test(test_hash_deterministic),
	    cmocka_unit_test(test_hash_seeds_differ),
	    cmocka_unit_test(test_hash_data_differs),
	    cmocka_unit_test(test_hash_avx2_equals_sse2),
	    cmocka_unit_test(test_hash_avx512_equals_sse2),
	    cmocka_unit_test(test_hash_impl_name),
	    cmocka_unit_test(test_hash_impl_set),
	    cmocka_unit_test(test_hash_span),
	    cmocka_unit_test(test_hash_seed_random),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
