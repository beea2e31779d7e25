/* A hash tree over a volume's block hashes, and the walk that finds the
 * blocks that differ from a peer's tree by asking it for O(d * log n) hashes
 * instead of all n.
 *
 * Level 0 holds the leaves (one hash per block); each node of level k + 1 is
 * the seeded hash of up to fanout consecutive nodes of level k (their
 * little-endian bytes); the top level has one node, the root. Two trees over
 * the same number of leaves with the same fanout and seed have the same
 * shape, so "hashes of nodes [first, first + count) at level k" means the
 * same on both sides of a connection. Pure bytes: no I/O. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "resync/hash.h"

struct hashtree;

struct hashtree_range {
	uint64_t first, count; /* nodes [first, first + count) of one level */
};

/* Build the tree over leaves[0, n) with fanout (RESYNC_HASHTREE_FANOUT_MIN
 * to _MAX) and seed. The tree borrows leaves: they must stay unchanged and
 * alive until hashtree_free(). n may be 0 (an empty volume). Returns 0,
 * -EINVAL or -ENOMEM. Building is single-threaded; a built tree is
 * read-only and may be shared between threads. */
int hashtree_new(const struct hash128 *leaves, uint64_t n, unsigned fanout, uint64_t seed,
		 struct hashtree **ret);
void hashtree_free(struct hashtree *t);

unsigned hashtree_fanout(const struct hashtree *t);
uint64_t hashtree_seed(const struct hashtree *t);
/* Number of levels: 0 for an empty tree, 1 for a single leaf. */
unsigned hashtree_levels(const struct hashtree *t);
/* Nodes at level (0 if level is out of range). */
uint64_t hashtree_level_count(const struct hashtree *t, unsigned level);
/* Node i of level; both must be in range (our bug otherwise). */
const struct hash128 *hashtree_node(const struct hashtree *t, unsigned level, uint64_t i);

/* Answer a peer's request: copy the hashes of ranges[0, n) at level, in
 * order, to out (room for cap hashes) and their number to *ret_n. Every
 * value comes from the peer and is checked: -ERANGE when the level or a
 * range is out of the tree or the total exceeds cap. */
int hashtree_get(const struct hashtree *t, unsigned level, const struct hashtree_range *ranges,
		 size_t n, struct hash128 *out, size_t cap, size_t *ret_n);

/* The walk, a state machine that owns no I/O: hashtree_diff_next() says
 * which remote hashes to fetch, hashtree_diff_feed() takes them; repeat
 * until next() returns 0. It starts at the root and descends only into
 * the children of nodes that differ. */
struct hashtree_diff;

struct hashtree_step {
	unsigned level;
	size_t n_ranges;
	const struct hashtree_range *ranges; /* owned by the walk, valid until feed */
	uint64_t n_hashes;		     /* sum of the ranges' counts */
};

/* Start a walk of local against a remote tree of the same shape. A step
 * asks for at most max_hashes hashes in at most max_ranges ranges (0 means
 * RESYNC_WIRE_HASHES_MAX and RESYNC_WIRE_RANGES_MAX). local is borrowed. */
int hashtree_diff_new(const struct hashtree *local, size_t max_hashes, size_t max_ranges,
		      struct hashtree_diff **ret);
void hashtree_diff_free(struct hashtree_diff *d);
/* The next request: returns 1 and fills *ret_step, or 0 when the walk is
 * complete. -EBUSY if the previous step was not fed yet. */
int hashtree_diff_next(struct hashtree_diff *d, struct hashtree_step *ret_step);
/* The peer's hashes for the pending step, in order; n must be its
 * n_hashes (-EBADMSG otherwise, and the walk stays pending). */
int hashtree_diff_feed(struct hashtree_diff *d, const struct hash128 *remote, uint64_t n);
/* Indices of the differing leaves (blocks), ascending; complete once
 * next() returned 0. */
const uint64_t *hashtree_diff_leaves(const struct hashtree_diff *d, size_t *ret_n);
/* Remote hashes received so far (the cost of the walk). */
uint64_t hashtree_diff_hashes(const struct hashtree_diff *d);
/* Steps (round trips) so far. */
uint64_t hashtree_diff_steps(const struct hashtree_diff *d);
