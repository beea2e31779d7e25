/* moved.c's table of leaf hashes (moved-int.h), and the plan's check
 * that the moved-data search would find nothing (moved_memo_quiet()). */
#include <errno.h>
#include <stdlib.h>

#include "job-early.h"
#include "moved-int.h"
#include "node-int.h"
#include "resync/macro.h"

static size_t pow2_at_least(size_t v)
{
	size_t p = 1;

	while (p < v)
		p <<= 1;
	return p;
}

int moved_table_init(struct moved_table *t, size_t n)
{
	t->mask = pow2_at_least(2 * n + 2) - 1;
	t->fmask = pow2_at_least(16 * n + 64) - 1;
	t->slot = calloc(t->mask + 1, sizeof(*t->slot));
	t->filter = calloc((t->fmask + 1) / 64, sizeof(*t->filter));
	return t->slot && t->filter ? 0 : -ENOMEM;
}

void moved_table_release(struct moved_table *t)
{
	free(t->slot);
	free(t->filter);
}

void moved_table_put(struct moved_table *t, const struct hash128 *h, size_t k)
{
	size_t s = h->lo & t->mask;
	uint64_t f = (h->hi >> 32) & t->fmask;

	while (t->slot[s].k1)
		s = (s + 1) & t->mask;
	t->slot[s] = (struct moved_slot){(uint32_t)(k + 1), (uint32_t)h->hi};
	t->filter[f / 64] |= 1ull << (f % 64);
}

size_t moved_table_next(const struct moved_table *t, const struct hash128 *h, size_t s)
{
	uint64_t f = (h->hi >> 32) & t->fmask;

	if (s == SIZE_MAX && !(t->filter[f / 64] & (1ull << (f % 64))))
		return SIZE_MAX;
	s = s == SIZE_MAX ? h->lo & t->mask : (s + 1) & t->mask;
	for (; t->slot[s].k1; s = (s + 1) & t->mask)
		if (t->slot[s].tag == (uint32_t)h->hi)
			return s;
	return SIZE_MAX;
}

static uint32_t quiet_leaf_len(uint64_t size, uint32_t leaf, uint64_t i)
{
	return (uint32_t)MIN((uint64_t)leaf, size - i * leaf);
}

bool moved_memo_quiet(const struct job *j, const uint64_t *leaves, const struct hash128 *leaf_h,
		      size_t n)
{
	uint64_t size = volume_size(j->ctx->vol), nl = hashtree_level_count(j->tree, 0);
	struct hash128 zero;
	size_t run = 0, cur = 0;
	struct moved_table t = {0};
	_cleanup_free_ unsigned char *z = NULL;
	bool quiet = true;

	if (!n)
		return true;
	/* 2. a run of differing leaves long enough to be searched */
	for (size_t k = 0; k < n; k++) {
		run = k && leaves[k] == leaves[k - 1] + 1 ? run + 1 : 1;
		if (run * j->leaf >= MOVED_REGION_MIN)
			return false;
	}
	z = calloc(1, j->leaf ? j->leaf : 1);
	if (!z || moved_table_init(&t, n) < 0) {
		moved_table_release(&t);
		return false;
	}
	zero = hash_block(z, j->leaf, hashtree_seed(j->tree));
	/* 1. a differing leaf's bytes held by the secondary at another leaf
	 * (moved_aligned()'s probe, its sources never excluded) */
	for (size_t k = 0; k < n; k++) {
		const struct hash128 *ph = hashtree_node(j->tree, 0, leaves[k]);

		if (!hash128_equal(ph, &zero))
			moved_table_put(&t, ph, k);
	}
	for (uint64_t i = 0; i < nl && quiet; i++) {
		const struct hash128 *sh;

		while (cur < n && leaves[cur] < i)
			cur++;
		sh = cur < n && leaves[cur] == i ? &leaf_h[cur] : hashtree_node(j->tree, 0, i);
		for (size_t s = moved_table_next(&t, sh, SIZE_MAX); s != SIZE_MAX && quiet;
		     s = moved_table_next(&t, sh, s)) {
			uint64_t x = leaves[t.slot[s].k1 - 1];

			if (x != i && quiet_leaf_len(size, j->leaf, x) == quiet_leaf_len(size, j->leaf, i) &&
			    hash128_equal(hashtree_node(j->tree, 0, x), sh))
				quiet = false;
		}
	}
	moved_table_release(&t);
	return quiet;
}
