/* Time, in one unit: microseconds. Monotonic time for durations, timeouts
 * and rates (uint64_t); wall-clock time only for what people read (int64_t
 * microseconds since the Unix epoch). All functions are thread-safe. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* CLOCK_MONOTONIC, in microseconds. Never goes back. */
uint64_t clock_usec(void);

/* CLOCK_REALTIME, in microseconds since the epoch. */
int64_t clock_real_usec(void);

/* Format a wall-clock time (microseconds since the epoch) as UTC RFC 3339
 * into buf: "2024-05-01T12:34:56.789012Z" with fraction, else
 * "2024-05-01T12:34:56Z". A buffer of 32 bytes always suffices; a
 * shorter one gets a truncated, NUL-terminated string. Returns buf. */
const char *clock_format_utc(int64_t usec, bool fraction, char *buf, size_t len);
