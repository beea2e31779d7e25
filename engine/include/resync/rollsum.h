/* The weak rolling checksum of rsync (an Adler-32-like pair of sums over a
 * window, updated in O(1) as the window slides one byte) and a matcher
 * that finds, anywhere in a buffer, windows equal to known blocks: a weak
 * sum that matches is confirmed by the block's strong hash (hash_block()
 * with a seed), as rsync's receiver-side signature is used by its sender.
 * Pure bytes: no I/O. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "resync/hash.h"

/* The weak sum of data[0, len) (len >= 1). Deterministic everywhere. */
uint32_t rollsum_block(const void *data, size_t len);

/* A block the matcher may find: its weak sum, its strong hash (with the
 * matcher's seed) and the caller's id for it (a leaf index, say). */
struct rollmatch_block {
	uint32_t weak;
	struct hash128 strong;
	uint64_t id;
};

struct rollmatch;

/* A matcher over blocks[0, n) (copied) of window bytes each, confirmed
 * with hash_block(..., seed). n may be 0 (nothing is ever found).
 * Returns 0, -EINVAL (window 0, n too large) or -ENOMEM. A built matcher
 * is read-only: scans may run on several threads at once. */
int rollmatch_new(const struct rollmatch_block *blocks, size_t n, size_t window, uint64_t seed,
		  struct rollmatch **ret);
void rollmatch_free(struct rollmatch *m);

/* Called for each window found: at byte pos of the scanned buffer, equal
 * to block id. A negative return stops the scan and is returned. */
typedef int rollmatch_fn(void *arg, size_t pos, uint64_t id);

/* Scan data[0, len): every window start from 0 on is tried in order;
 * after a match the next start is the byte after the window (matches do
 * not overlap), where the block after the one found (blocks[k + 1] of
 * the array given to rollmatch_new()) is tried first by its strong hash
 * alone: data that moved as a run costs a strong hash a window. The scan stops early after max_miss consecutive starts
 * without a match (0: never). Returns the number of window starts
 * consumed (the first start not tried: a caller scanning a stream in
 * chunks continues there), or fn's negative return. Thread-safe for
 * distinct calls on one matcher. */
long long rollmatch_scan(const struct rollmatch *m, const unsigned char *data, size_t len,
			 size_t max_miss, rollmatch_fn *fn, void *arg);
