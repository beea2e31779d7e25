/* Parsing and printing of sizes, rates and durations as operators write
 * them: "64K", "1.5G" (powers of 1024), "30s", "5m", "2h", "1d". */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Parse a byte count with an optional K, M, G or T suffix (also KiB, MiB,
 * ...). Returns 0 or -EINVAL/-ERANGE. */
int parse_size(const char *s, uint64_t *ret);
/* Parse a duration with an optional s, m, h or d suffix (plain = seconds),
 * into microseconds. */
int parse_duration(const char *s, uint64_t *ret_usec);
/* Human form of a byte count: "1.5 GiB". Returns buf. */
const char *format_bytes(uint64_t n, char *buf, size_t size);
