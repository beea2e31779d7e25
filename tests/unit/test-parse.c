/* Sizes, durations and their printing, as operators write them. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "resync/macro.h"
#include "resync/parse.h"

#define K UINT64_C(1024)

static void test_parse_size_ok(void **state)
{
	static const struct {
		const char *s;
		uint64_t v;
	} cases[] = {
	    {"0", 0},
	    {"1", 1},
	    {"4096", 4096},
	    {"4K", 4 * K},
	    {"4k", 4 * K},
	    {"64K", 64 * K},
	    {"64KiB", 64 * K},
	    {"64KB", 64 * K},
	    {"1M", K * K},
	    {"1MiB", K * K},
	    {"2G", 2 * K * K * K},
	    {"1T", K * K * K * K},
	    {"1.5K", 1536},
	    {"0.5M", 512 * K},
	    {"10B", 10},
	    {" 8K", 8 * K},
	    {"8K ", 8 * K},
	    {"8 K", 8 * K},
	    {"16383T", 16383 * K * K * K * K},
	    {"16777215T", 16777215 * K * K * K * K},
	    /* Plain integers are exact over the whole 64-bit range, beyond
	     * what a double holds (2^53). */
	    {"9007199254740993", UINT64_C(9007199254740993)},
	    {"18446744073709551615", UINT64_MAX},
	    {"8796093022207K", UINT64_C(8796093022207) * K},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		uint64_t v = 12345;

		assert_int_equal(parse_size(cases[i].s, &v), 0);
		if (v != cases[i].v)
			fail_msg("'%s' parsed as %llu, want %llu", cases[i].s,
				 (unsigned long long)v, (unsigned long long)cases[i].v);
	}
}

static void test_parse_size_bad(void **state)
{
	static const char *const bad[] = {
	    "",	   " ",	  "K",	 "-1",	"+1",	    "-0", "1X",	 "1KK",	 "1 K B", "abc",
	    "0.1", "1.3", "nan", "inf", "infinity", "1e", "4K4", "1,5K", "--1",	  "1Kx",
	};

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		uint64_t v = 777;
		int r = parse_size(bad[i], &v);

		if (r != -EINVAL)
			fail_msg("'%s' gave %d, want -EINVAL", bad[i], r);
		assert_int_equal(v, 777); /* untouched on failure */
	}
	assert_int_equal(parse_size(NULL, &(uint64_t){0}), -EINVAL);
}

static void test_parse_size_range(void **state)
{
	uint64_t v = 5;

	assert_int_equal(parse_size("16777216T", &v), -ERANGE); /* 2^64 */
	assert_int_equal(parse_size("16384P", &v), -EINVAL);	/* no P suffix */
	assert_int_equal(parse_size("18446744073709551616", &v), -ERANGE);
	assert_int_equal(parse_size("99999999999999999999", &v), -ERANGE);
	assert_int_equal(parse_size("1e30", &v), -ERANGE);
	assert_int_equal(v, 5);
}

static void test_parse_duration_ok(void **state)
{
	static const struct {
		const char *s;
		uint64_t usec;
	} cases[] = {
	    {"0", 0},
	    {"1", 1000000},
	    {"30s", 30000000},
	    {"30S", 30000000},
	    {"250ms", 250000},
	    {"1.5s", 1500000},
	    {"5m", 300000000},
	    {"5min", 300000000},
	    {"2h", UINT64_C(7200000000)},
	    {"1d", UINT64_C(86400000000)},
	    {"0.5h", UINT64_C(1800000000)},
	    {" 7 s ", 7000000},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		uint64_t v = 1;

		assert_int_equal(parse_duration(cases[i].s, &v), 0);
		if (v != cases[i].usec)
			fail_msg("'%s' parsed as %llu us, want %llu", cases[i].s,
				 (unsigned long long)v, (unsigned long long)cases[i].usec);
	}
}

static void test_parse_duration_bad(void **state)
{
	static const char *const bad[] = {
	    "", "s", "-1s", "+1s", "1x", "1sec", "1 hour", "ms", "1mss", "0.0000001s", "1y", "h1",
	};

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		uint64_t v = 3;
		int r = parse_duration(bad[i], &v);

		if (r != -EINVAL)
			fail_msg("'%s' gave %d, want -EINVAL", bad[i], r);
		assert_int_equal(v, 3);
	}
	assert_int_equal(parse_duration("999999999999d", &(uint64_t){0}), -ERANGE);
}

static void test_format_bytes(void **state)
{
	char buf[32];

	assert_string_equal(format_bytes(0, buf, sizeof(buf)), "0 B");
	assert_string_equal(format_bytes(1023, buf, sizeof(buf)), "1023 B");
	assert_string_equal(format_bytes(1024, buf, sizeof(buf)), "1.0 KiB");
	assert_string_equal(format_bytes(1536, buf, sizeof(buf)), "1.5 KiB");
	assert_string_equal(format_bytes(64 * K * K, buf, sizeof(buf)), "64.0 MiB");
	assert_string_equal(format_bytes(3 * K * K * K, buf, sizeof(buf)), "3.0 GiB");
	assert_string_equal(format_bytes(UINT64_MAX, buf, sizeof(buf)), "16384.0 PiB");
	/* A small buffer truncates, never overflows. */
	{
		char tiny[4];

		assert_ptr_equal(format_bytes(1536, tiny, sizeof(tiny)), tiny);
		assert_int_equal(strlen(tiny), 3);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_size_ok),      cmocka_unit_test(test_parse_size_bad),
	    cmocka_unit_test(test_parse_size_range),   cmocka_unit_test(test_parse_duration_ok),
	    cmocka_unit_test(test_parse_duration_bad), cmocka_unit_test(test_format_bytes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
