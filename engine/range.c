#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "resync/range.h"

int rangelist_add(struct rangelist *l, uint64_t off, uint64_t len)
{
	if (len == 0)
		return 0;
	if (l->n && l->v[l->n - 1].off + l->v[l->n - 1].len == off) {
		l->v[l->n - 1].len += len;
		return 0;
	}
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		struct range *v = reallocarray(l->v, cap, sizeof(*v));

		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = (struct range){off, len};
	return 0;
}

int rangelist_extend(struct rangelist *l, const struct rangelist *other)
{
	for (size_t i = 0; i < other->n; i++) {
		int r = rangelist_add(l, other->v[i].off, other->v[i].len);

		if (r < 0)
			return r;
	}
	return 0;
}

static int range_cmp(const void *a, const void *b)
{
	const struct range *x = a, *y = b;

	return x->off < y->off ? -1 : x->off > y->off;
}

void rangelist_normalize(struct rangelist *l)
{
	size_t o = 0;

	if (l->n < 2)
		return;
	qsort(l->v, l->n, sizeof(*l->v), range_cmp);
	for (size_t i = 1; i < l->n; i++) {
		struct range *last = &l->v[o];

		if (l->v[i].off <= last->off + last->len) {
			uint64_t end = l->v[i].off + l->v[i].len;

			if (end > last->off + last->len)
				last->len = end - last->off;
		} else {
			l->v[++o] = l->v[i];
		}
	}
	l->n = o + 1;
}

uint64_t rangelist_bytes(const struct rangelist *l)
{
	uint64_t sum = 0;

	for (size_t i = 0; i < l->n; i++)
		sum += l->v[i].len;
	return sum;
}

void rangelist_release(struct rangelist *l)
{
	free(l->v);
	*l = (struct rangelist){0};
}
