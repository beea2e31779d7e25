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
	/* Data that does not shrink (random, already compressed) is not
	 * compressed again for a while: after this many frames in a row
	 * that went raw, the next ZADAPT_RAW_SKIP_BYTES go raw without a
	 * try (zstd at level 1 takes about 1 s a GB to find nothing), then a
	 * frame is tried again. */
	ZADAPT_RAW_STREAK = 2,
	ZADAPT_RAW_SKIP_BYTES = 4 << 20,
};

struct zadapt {
	bool on;
	int level, start, lowest, highest; /* now, at the start, and its range so far */
	uint64_t raw, packed, cpu_usec, wait_usec; /* this window's */
	unsigned raw_streak; /* frames tried in a row that did not shrink */
	uint64_t skip;	     /* raw bytes still to send without a try */
	uint64_t skipped;    /* raw bytes sent without a try, in all */
};

void zadapt_init(struct zadapt *a, int level, bool on);
/* One frame: raw bytes in, packed bytes out, the time compressing it and
 * the time its send took. Returns the level for the next frames. */
int zadapt_note(struct zadapt *a, uint64_t raw, uint64_t packed, uint64_t cpu_usec,
		uint64_t wait_usec);
/* Whether the next data frame is worth compressing (whatever "on"). */
bool zadapt_try(const struct zadapt *a);
/* A data frame of raw bytes sent as packed bytes: tried (compressed, or
 * tried and sent raw when it did not shrink) or not (zadapt_try() said
 * no). */
void zadapt_sent(struct zadapt *a, uint64_t raw, uint64_t packed, bool tried);
