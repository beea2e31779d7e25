/* moved.c's room for its table of leaf hashes, shared with the plan's
 * check (moved_memo_quiet(), job-early.h). */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "resync/hash.h"

enum {
	/* A region shorter than this goes as data without a search: a
	 * WEAK_REQ's round trip costs more than sending it (and one leaf has
	 * no unaligned window at all). */
	MOVED_REGION_MIN = 64 << 10,
};

/* An open-addressing table of leaf hashes (the primary's, of the
 * differing leaves), probed with every leaf hash of the secondary. Each
 * slot keeps 32 more bits of its hash beside its index, so that a probe
 * that meets another hash is told so without reading that hash from the
 * tree (a random read into megabytes: most of the scan's time); and a
 * bit filter of 16 bits a hash, small enough for the cache, says "not
 * here" first for most probes (the table is a megabyte at 50,000
 * leaves). */
struct moved_slot {
	uint32_t k1; /* index + 1; 0: empty */
	uint32_t tag;
};

struct moved_table {
	struct moved_slot *slot;
	size_t mask;
	uint64_t *filter; /* a bit per (hi >> 32) & fmask */
	uint64_t fmask;
};

/* Room for n hashes; moved_table_release() after, even on failure.
 * 0 or -ENOMEM. */
int moved_table_init(struct moved_table *t, size_t n);
void moved_table_release(struct moved_table *t);
/* Hash h of entry k (k < 2^32 - 1). */
void moved_table_put(struct moved_table *t, const struct hash128 *h, size_t k);
/* The slot after s (s == SIZE_MAX: the first) on h's probe path whose
 * tag is h's (its entry: slot[s].k1 - 1, a candidate whose hash the
 * caller compares); SIZE_MAX at the path's end. */
size_t moved_table_next(const struct moved_table *t, const struct hash128 *h, size_t s);
