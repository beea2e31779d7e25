#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "resync/parse.h"

static int parse_scaled(const char *s, const char *const *units, const uint64_t *mult, size_t n,
			uint64_t *ret)
{
	char *end;
	double v;
	bool integer;

	if (!s)
		return -EINVAL;
	while (isspace((unsigned char)*s))
		s++;
	if (!*s || *s == '-' || *s == '+')
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || !isfinite(v) || v < 0)
		return -EINVAL;
	/* A double holds 53 bits: plain integers are parsed exactly. */
	integer = strspn(s, "0123456789") == (size_t)(end - s);
	while (isspace((unsigned char)*end))
		end++;
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(units[i]);
		const char *rest = end + l;

		if (strncasecmp(end, units[i], l))
			continue;
		while (isspace((unsigned char)*rest))
			rest++;
		if (*rest)
			continue;
		if (integer) {
			unsigned long long whole;

			errno = 0;
			whole = strtoull(s, NULL, 10);
			if (errno == ERANGE || __builtin_mul_overflow(whole, mult[i], &whole))
				return -ERANGE;
			*ret = whole;
			return 0;
		}
		v *= (double)mult[i];
		if (v >= 18446744073709551616.0)
			return -ERANGE;
		if (v != floor(v))
			return -EINVAL; /* a fraction of a byte or microsecond */
		*ret = (uint64_t)v;
		return 0;
	}
	return -EINVAL;
}

int parse_size(const char *s, uint64_t *ret)
{
	static const char *const units[] = {"", "B", "K", "KiB", "KB", "M", "MiB", "MB",
					    "G", "GiB", "GB", "T", "TiB", "TB"};
	static const uint64_t K = 1024;
	static const uint64_t mult[] = {1,	   1,	      K,	 K,	    K,
					K * K,	   K * K,     K * K,	 K * K * K, K * K * K,
					K * K * K, K * K * K * K, K * K * K * K, K * K * K * K};

	return parse_scaled(s, units, mult, sizeof(mult) / sizeof(mult[0]), ret);
}

int parse_duration(const char *s, uint64_t *ret_usec)
{
	static const char *const units[] = {"", "s", "ms", "m", "min", "h", "d"};
	static const uint64_t S = 1000000;
	static const uint64_t mult[] = {S, S, 1000, 60 * S, 60 * S, 3600 * S, 86400 * S};

	return parse_scaled(s, units, mult, sizeof(mult) / sizeof(mult[0]), ret_usec);
}

const char *format_bytes(uint64_t n, char *buf, size_t size)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	double v = (double)n;
	size_t u = 0;

	while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, size, "%llu B", (unsigned long long)n);
	else
		snprintf(buf, size, "%.1f %s", v, units[u]);
	return buf;
}
