#include <endian.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "resync/hashtree.h"
#include "resync/limits.h"
#include "resync/macro.h"

struct hashtree {
	unsigned fanout;
	uint64_t seed;
	unsigned nlevels;
	uint64_t *count;	/* nodes per level */
	struct hash128 **level; /* level[0] borrowed (the leaves), others owned */
};

static void hash128_to_le(const struct hash128 *h, unsigned char out[16])
{
	uint64_t lo = htole64(h->lo), hi = htole64(h->hi);

	memcpy(out, &lo, 8);
	memcpy(out + 8, &hi, 8);
}

int hashtree_new(const struct hash128 *leaves, uint64_t n, unsigned fanout, uint64_t seed,
		 struct hashtree **ret)
{
	_cleanup_free_ unsigned char *buf = NULL;
	struct hashtree *t;
	unsigned nlevels = 0;

	if (fanout < RESYNC_HASHTREE_FANOUT_MIN || fanout > RESYNC_HASHTREE_FANOUT_MAX)
		return -EINVAL;
	if (n && !leaves)
		return -EINVAL;
	if (n > UINT64_MAX / sizeof(struct hash128))
		return -EINVAL;
	for (uint64_t c = n; c; c = c == 1 ? 0 : DIV_ROUND_UP(c, fanout))
		nlevels++;

	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->fanout = fanout;
	t->seed = seed;
	t->nlevels = nlevels;
	t->count = calloc(nlevels ? nlevels : 1, sizeof(*t->count));
	t->level = calloc(nlevels ? nlevels : 1, sizeof(*t->level));
	buf = malloc((size_t)fanout * 16);
	if (!t->count || !t->level || !buf)
		goto nomem;
	if (nlevels) {
		t->count[0] = n;
		t->level[0] = (struct hash128 *)leaves;
	}
	for (unsigned l = 1; l < nlevels; l++) {
		uint64_t below = t->count[l - 1];
		uint64_t cnt = DIV_ROUND_UP(below, fanout);

		t->count[l] = cnt;
		t->level[l] = malloc(cnt * sizeof(struct hash128));
		if (!t->level[l])
			goto nomem;
		for (uint64_t i = 0; i < cnt; i++) {
			uint64_t first = i * fanout;
			uint64_t k = MIN((uint64_t)fanout, below - first);

			for (uint64_t j = 0; j < k; j++)
				hash128_to_le(&t->level[l - 1][first + j], buf + j * 16);
			t->level[l][i] = hash_block(buf, k * 16, seed);
		}
	}
	*ret = t;
	return 0;
nomem:
	hashtree_free(t);
	return -ENOMEM;
}

void hashtree_free(struct hashtree *t)
{
	if (!t)
		return;
	if (t->level)
		for (unsigned l = 1; l < t->nlevels; l++)
			free(t->level[l]);
	free(t->level);
	free(t->count);
	free(t);
}

unsigned hashtree_fanout(const struct hashtree *t)
{
	return t->fanout;
}

uint64_t hashtree_seed(const struct hashtree *t)
{
	return t->seed;
}

unsigned hashtree_levels(const struct hashtree *t)
{
	return t->nlevels;
}

uint64_t hashtree_level_count(const struct hashtree *t, unsigned level)
{
	return level < t->nlevels ? t->count[level] : 0;
}

const struct hash128 *hashtree_node(const struct hashtree *t, unsigned level, uint64_t i)
{
	return &t->level[level][i];
}

int hashtree_get(const struct hashtree *t, unsigned level, const struct hashtree_range *ranges,
		 size_t n, struct hash128 *out, size_t cap, size_t *ret_n)
{
	size_t total = 0;

	if (level >= t->nlevels)
		return -ERANGE;
	for (size_t i = 0; i < n; i++) {
		const struct hashtree_range *r = &ranges[i];

		if (r->first > t->count[level] || r->count > t->count[level] - r->first)
			return -ERANGE;
		if (r->count > cap - total)
			return -ERANGE;
		total += r->count;
	}
	total = 0;
	for (size_t i = 0; i < n; i++) {
		memcpy(out + total, &t->level[level][ranges[i].first],
		       ranges[i].count * sizeof(struct hash128));
		total += ranges[i].count;
	}
	*ret_n = total;
	return 0;
}

/* The walk. At each level it holds the ranges of nodes still to fetch
 * (the children of the differing nodes of the level above, adjacent ones
 * merged), a cursor into them, and the differing nodes found so far at
 * this level. */
struct hashtree_diff {
	const struct hashtree *t;
	size_t max_hashes, max_ranges;
	unsigned level;
	bool done, pending;

	struct hashtree_range *todo; /* ranges to fetch at level */
	size_t n_todo, cap_todo;
	size_t cur;	     /* index of the first unfetched range */
	uint64_t cur_off;    /* nodes of todo[cur] already fetched */

	struct hashtree_range *step; /* the pending request */
	size_t n_step;
	uint64_t step_hashes;

	uint64_t *found; /* differing nodes at level, ascending */
	size_t n_found, cap_found;

	uint64_t hashes, steps;
};

static int grow(void **p, size_t *cap, size_t need, size_t size)
{
	size_t c = *cap ? *cap : 16;
	void *np;

	if (need <= *cap)
		return 0;
	while (c < need)
		c *= 2;
	np = realloc(*p, c * size);
	if (!np)
		return -ENOMEM;
	*p = np;
	*cap = c;
	return 0;
}

static int todo_add(struct hashtree_diff *d, uint64_t first, uint64_t count)
{
	int r;

	if (d->n_todo && d->todo[d->n_todo - 1].first + d->todo[d->n_todo - 1].count == first) {
		d->todo[d->n_todo - 1].count += count;
		return 0;
	}
	r = grow((void **)&d->todo, &d->cap_todo, d->n_todo + 1, sizeof(*d->todo));
	if (r < 0)
		return r;
	d->todo[d->n_todo++] = (struct hashtree_range){first, count};
	return 0;
}

int hashtree_diff_new(const struct hashtree *local, size_t max_hashes, size_t max_ranges,
		      struct hashtree_diff **ret)
{
	struct hashtree_diff *d;
	int r;

	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->t = local;
	d->max_hashes = max_hashes ? max_hashes : RESYNC_WIRE_HASHES_MAX;
	d->max_ranges = max_ranges ? max_ranges : RESYNC_WIRE_RANGES_MAX;
	d->step = calloc(d->max_ranges, sizeof(*d->step));
	if (!d->step) {
		free(d);
		return -ENOMEM;
	}
	if (local->nlevels == 0) {
		d->done = true;
	} else {
		d->level = local->nlevels - 1;
		r = todo_add(d, 0, local->count[d->level]);
		if (r < 0) {
			hashtree_diff_free(d);
			return r;
		}
	}
	*ret = d;
	return 0;
}

void hashtree_diff_free(struct hashtree_diff *d)
{
	if (!d)
		return;
	free(d->todo);
	free(d->step);
	free(d->found);
	free(d);
}

/* Every range of the level was fetched: descend into the children of the
 * differing nodes, or finish at the leaves. */
static int diff_descend(struct hashtree_diff *d)
{
	const struct hashtree *t = d->t;
	uint64_t below;
	int r;

	if (d->level == 0 || d->n_found == 0) {
		d->done = true;
		if (d->level != 0)
			d->n_found = 0; /* roots equal: no leaf differs */
		return 0;
	}
	d->level--;
	below = t->count[d->level];
	d->n_todo = 0;
	d->cur = 0;
	d->cur_off = 0;
	for (size_t i = 0; i < d->n_found; i++) {
		uint64_t first = d->found[i] * t->fanout;

		r = todo_add(d, first, MIN((uint64_t)t->fanout, below - first));
		if (r < 0)
			return r;
	}
	d->n_found = 0;
	return 0;
}

int hashtree_diff_next(struct hashtree_diff *d, struct hashtree_step *ret_step)
{
	int r;

	if (d->pending)
		return -EBUSY;
	while (!d->done && d->cur == d->n_todo) {
		r = diff_descend(d);
		if (r < 0)
			return r;
	}
	if (d->done)
		return 0;

	d->n_step = 0;
	d->step_hashes = 0;
	while (d->cur < d->n_todo && d->n_step < d->max_ranges &&
	       d->step_hashes < d->max_hashes) {
		struct hashtree_range *src = &d->todo[d->cur];
		uint64_t take = MIN(src->count - d->cur_off, d->max_hashes - d->step_hashes);

		d->step[d->n_step++] = (struct hashtree_range){src->first + d->cur_off, take};
		d->step_hashes += take;
		d->cur_off += take;
		if (d->cur_off == src->count) {
			d->cur++;
			d->cur_off = 0;
		}
	}
	d->pending = true;
	*ret_step = (struct hashtree_step){
		.level = d->level,
		.n_ranges = d->n_step,
		.ranges = d->step,
		.n_hashes = d->step_hashes,
	};
	return 1;
}

int hashtree_diff_feed(struct hashtree_diff *d, const struct hash128 *remote, uint64_t n)
{
	const struct hash128 *local = d->t->level[d->level];
	uint64_t k = 0;
	int r;

	if (!d->pending)
		return -EINVAL;
	if (n != d->step_hashes)
		return -EBADMSG;
	for (size_t i = 0; i < d->n_step; i++) {
		const struct hashtree_range *s = &d->step[i];

		for (uint64_t j = 0; j < s->count; j++, k++) {
			if (hash128_equal(&local[s->first + j], &remote[k]))
				continue;
			r = grow((void **)&d->found, &d->cap_found, d->n_found + 1,
				 sizeof(*d->found));
			if (r < 0)
				return r;
			d->found[d->n_found++] = s->first + j;
		}
	}
	d->pending = false;
	d->hashes += n;
	d->steps++;
	return 0;
}

const uint64_t *hashtree_diff_leaves(const struct hashtree_diff *d, size_t *ret_n)
{
	*ret_n = d->done ? d->n_found : 0;
	return d->found;
}

uint64_t hashtree_diff_hashes(const struct hashtree_diff *d)
{
	return d->hashes;
}

uint64_t hashtree_diff_steps(const struct hashtree_diff *d)
{
	return d->steps;
}
