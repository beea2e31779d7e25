/* Time in microseconds: see resync/clock.h. */
#include "resync/clock.h"

#include <stdio.h>
#include <time.h>

uint64_t clock_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

int64_t clock_real_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

const char *clock_format_utc(int64_t usec, bool fraction, char *buf, size_t len)
{
	time_t t = (time_t)(usec / 1000000);
	struct tm tm;
	char s[32];

	gmtime_r(&t, &tm);
	strftime(s, sizeof(s), "%Y-%m-%dT%H:%M:%S", &tm);
	if (fraction)
		snprintf(buf, len, "%s.%06dZ", s, (int)(usec % 1000000));
	else
		snprintf(buf, len, "%sZ", s);
	return buf;
}
