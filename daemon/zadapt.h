/* The zstd level of a transfer, moved by what holds it back (issue 18),
 * as zstd's own --adapt does: while the frames wait for the link much
 * longer than they take to compress, a level more (fewer bytes for the
 * link, CPU that was idle); while compressing takes longer than the link
 * needs, a level less. Data that does not shrink moves it no higher than
 * it started.
 *
 * Below the lowest level, a share of the frames goes raw: at level 1,
 * while compressing leaves the link idle (the sends wait less than half
 * as long as zstd runs), or while the link carries bytes faster than
 * zstd makes them (loopback, a fast LAN), fewer frames are compressed,
 * down to ZADAPT_SHARE_MIN; while the link holds the frames back longer
 * than zstd runs, two windows in a row, and is slower than zstd, more.
 * The link, not the CPU, then sets the pace; the bytes on the wire grow
 * but, since a share is always compressed, stay below the raw bytes of
 * data that shrinks. Pure arithmetic over what the caller measured. */
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
	/* The share of the data given to zstd, in ZADAPT_SHARE_ONE parts,
	 * moved one part a decision. Its floor keeps text-like data (3 to 4x)
	 * about 9 % below its raw size on the wire, and keeps zstd's speed
	 * measured. */
	ZADAPT_SHARE_ONE = 16,
	ZADAPT_SHARE_MIN = 2,
};

struct zadapt {
	bool on;
	int level, start, lowest, highest; /* now, at the start, and its range so far */
	unsigned share, share_low;	   /* ZADAPT_SHARE_ONE parts tried: now, lowest */
	bool more;			   /* the last window called for more parts */
	/* this window's: raw bytes in, bytes out, raw bytes given to zstd
	 * and the time compressing them, the time encoding (compressing
	 * too) and sending all its frames */
	uint64_t raw, packed, tried, tried_usec, cpu_usec, wait_usec;
	uint64_t zrate;	     /* zstd's raw bytes a second, last measured (0: none) */
	int64_t credit;	     /* the share's balance: the next frame is tried at >= 0 */
	unsigned raw_streak; /* frames tried in a row that did not shrink */
	uint64_t skip;	     /* raw bytes still to send without a try */
	uint64_t skipped;    /* raw bytes sent raw without a try (did not shrink), in all */
	uint64_t mixed;	     /* raw bytes sent raw by the share, in all */
};

void zadapt_init(struct zadapt *a, int level, bool on);
/* One data frame: raw bytes in, packed bytes out (header included), the
 * time encoding it (compressing, when tried) and the time its send took;
 * tried: it was given to zstd. Returns the level for the next frames. */
int zadapt_note(struct zadapt *a, uint64_t raw, uint64_t packed, uint64_t cpu_usec,
		uint64_t wait_usec, bool tried);
/* Whether the next data frame is given to zstd: not while the data does
 * not shrink (whatever "on"), nor when the share sends it raw. */
bool zadapt_try(const struct zadapt *a);
/* A data frame of raw bytes sent as packed bytes: tried (compressed, or
 * tried and sent raw when it did not shrink) or not (zadapt_try() said
 * no). */
void zadapt_sent(struct zadapt *a, uint64_t raw, uint64_t packed, bool tried);
