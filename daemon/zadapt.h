/* The zstd level of a transfer, moved by what holds it back (issue 18),
 * as zstd's own --adapt does: while the frames wait for the link much
 * longer than they take to compress, a level more (fewer bytes for the
 * link, CPU that was idle); while compressing takes longer than the link
 * needs, a level less. Data that does not shrink moves it no higher than
 * it started. Pure arithmetic over what the caller measured. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
	ZADAPT_LEVEL_MIN = 1,
	ZADAPT_LEVEL_MAX = 9,		/* past it, zstd slows much for little */
	ZADAPT_WINDOW_BYTES = 8 << 20, /* raw bytes between two decisions */
};

struct zadapt {
	bool on;
	int level, start, lowest, highest; /* now, at the start, and its range so far */
	uint64_t raw, packed, cpu_usec, wait_usec; /* this window's */
};

void zadapt_init(struct zadapt *a, int level, bool on);
/* One frame: raw bytes in, packed bytes out, the time compressing it and
 * the time its send took. Returns the level for the next frames. */
int zadapt_note(struct zadapt *a, uint64_t raw, uint64_t packed, uint64_t cpu_usec,
		uint64_t wait_usec);
