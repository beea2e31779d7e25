/* The weak rolling checksum and the block matcher (resync/rollsum.h).
 *
 * The weak sum is the classic pair: a = sum of (byte + OFFSET), b = sum of
 * the running a's, over a window of w bytes, as (b << 16) | (a & 0xffff).
 * Sliding by one byte removes the outgoing byte's share from both sums in
 * O(1). The matcher keeps, beside an open-addressing table of the blocks'
 * weak sums, a bit filter indexed by the weak sum's bits: most window
 * starts of data that matches nothing cost the slide and one filter bit
 * (the filter fits the caches; the table would not). */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "resync/rollsum.h"

enum {
	ROLLSUM_OFFSET = 31, /* keeps runs of zero bytes from summing to 0 */
	ROLLMATCH_FILTER_BITS_MAX = 1 << 24,
};

/* a = sum of x'_k, b = sum of (len - k) x'_k with x'_k = x_k + OFFSET,
 * all modulo 2^32 (only their low 16 bits are kept): b = len * s - t +
 * OFFSET * len (len + 1) / 2 with s = sum of x_k, t = sum of k x_k. The
 * sums of 64-byte blocks have no carried dependency and vectorise. */
__attribute__((optimize("O3"))) static inline void rollsum_block64(const unsigned char *p, uint32_t *ret_s, uint32_t *ret_t)
{
	uint32_t s = 0, t = 0;

	for (uint32_t j = 0; j < 64; j++) {
		s += p[j];
		t += j * p[j];
	}
	*ret_s = s;
	*ret_t = t;
}

__attribute__((optimize("O3"))) uint32_t rollsum_block(const void *data, size_t len)
{
	const unsigned char *p = data;
	uint32_t s = 0, t = 0, n = (uint32_t)len, a, b;
	size_t i = 0;

	for (; i + 64 <= len; i += 64) {
		uint32_t bs, bt;

		rollsum_block64(p + i, &bs, &bt);
		t += bt + (uint32_t)i * bs;
		s += bs;
	}
	for (; i < len; i++) {
		s += p[i];
		t += (uint32_t)i * p[i];
	}
	a = s + n * ROLLSUM_OFFSET;
	b = n * s - t + ROLLSUM_OFFSET * (uint32_t)((uint64_t)n * (n + 1) / 2);
	return (b << 16) | (a & 0xffff);
}

struct rollmatch_slot {
	uint32_t weak;
	uint32_t idx; /* into blocks, + 1; 0: empty */
};

struct rollmatch {
	struct rollmatch_block *blocks;
	size_t n, window;
	uint64_t seed;
	struct rollmatch_slot *slots;
	size_t mask; /* slots - 1 */
	uint64_t *filter;
	uint32_t fmask; /* filter bits - 1 */
};

/* Spread the weak sum's bits: neighbouring windows' sums differ little. */
static inline uint32_t weak_mix(uint32_t w)
{
	w ^= w >> 15;
	w *= 0x2c1b3c6du;
	w ^= w >> 12;
	return w;
}

static size_t pow2_at_least(size_t v)
{
	size_t p = 1;

	while (p < v)
		p <<= 1;
	return p;
}

int rollmatch_new(const struct rollmatch_block *blocks, size_t n, size_t window, uint64_t seed,
		  struct rollmatch **ret)
{
	struct rollmatch *m;
	size_t fbits;

	if (window == 0 || n >= UINT32_MAX / 2)
		return -EINVAL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->n = n;
	m->window = window;
	m->seed = seed;
	m->mask = pow2_at_least(n * 2 + 2) - 1;
	fbits = pow2_at_least(n * 16 + 64);
	if (fbits > ROLLMATCH_FILTER_BITS_MAX)
		fbits = ROLLMATCH_FILTER_BITS_MAX;
	m->fmask = (uint32_t)(fbits - 1);
	m->blocks = malloc((n ? n : 1) * sizeof(*m->blocks));
	m->slots = calloc(m->mask + 1, sizeof(*m->slots));
	m->filter = calloc(fbits / 64 + 1, sizeof(*m->filter));
	if (!m->blocks || !m->slots || !m->filter) {
		rollmatch_free(m);
		return -ENOMEM;
	}
	if (n)
		memcpy(m->blocks, blocks, n * sizeof(*blocks));
	for (size_t i = 0; i < n; i++) {
		uint32_t h = weak_mix(blocks[i].weak);
		size_t s = h & m->mask;

		while (m->slots[s].idx)
			s = (s + 1) & m->mask;
		m->slots[s] = (struct rollmatch_slot){blocks[i].weak, (uint32_t)(i + 1)};
		m->filter[(h & m->fmask) / 64] |= 1ull << (h & 63);
	}
	*ret = m;
	return 0;
}

void rollmatch_free(struct rollmatch *m)
{
	if (!m)
		return;
	free(m->blocks);
	free(m->slots);
	free(m->filter);
	free(m);
}

/* The block whose strong hash is the window's, among those of weak sum
 * weak (the strong hash computed once, at the first candidate); -1 none. */
static long long rollmatch_find(const struct rollmatch *m, uint32_t weak, const unsigned char *win)
{
	uint32_t h = weak_mix(weak);
	struct hash128 strong;
	bool hashed = false;

	if (!(m->filter[(h & m->fmask) / 64] & (1ull << (h & 63))))
		return -1;
	for (size_t s = h & m->mask; m->slots[s].idx; s = (s + 1) & m->mask) {
		const struct rollmatch_block *b;

		if (m->slots[s].weak != weak)
			continue;
		b = &m->blocks[m->slots[s].idx - 1];
		if (!hashed) {
			strong = hash_block(win, m->window, m->seed);
			hashed = true;
		}
		if (hash128_equal(&strong, &b->strong))
			return (long long)(m->slots[s].idx - 1);
	}
	return -1;
}

long long rollmatch_scan(const struct rollmatch *m, const unsigned char *data, size_t len,
			 size_t max_miss, rollmatch_fn *fn, void *arg)
{
	const size_t w = m->window;
	size_t pos = 0, miss = 0;
	uint32_t a = 0, b = 0;
	bool fresh = true; /* a and b must be computed over data[pos, pos + w) */

	long long hint = -1; /* blocks[hint] is tried first at a fresh window */

	while (pos + w <= len) {
		long long k;

		if (fresh && hint >= 0 && (size_t)hint < m->n) {
			/* Data that moved as a run: after blocks[k], blocks[k + 1]. */
			struct hash128 h = hash_block(data + pos, w, m->seed);

			if (hash128_equal(&h, &m->blocks[hint].strong)) {
				int r = fn(arg, pos, m->blocks[hint].id);

				if (r < 0)
					return r;
				pos += w;
				miss = 0;
				hint++;
				continue;
			}
		}
		if (fresh) {
			uint32_t s = rollsum_block(data + pos, w);

			a = s & 0xffff;
			b = s >> 16;
			fresh = false;
		}
		k = m->n ? rollmatch_find(m, (b << 16) | (a & 0xffff), data + pos) : -1;
		if (k >= 0) {
			int r = fn(arg, pos, m->blocks[k].id);

			if (r < 0)
				return r;
			pos += w;
			miss = 0;
			fresh = true;
			hint = k + 1;
			continue;
		}
		hint = -1;
		if (max_miss && ++miss >= max_miss)
			return (long long)(pos + 1);
		if (pos + w == len)
			return (long long)(pos + 1);
		/* Slide by one byte: out leaves, in enters. */
		{
			uint32_t out = data[pos] + ROLLSUM_OFFSET, in = data[pos + w] + ROLLSUM_OFFSET;

			a = a - out + in;
			b = b - (uint32_t)w * out + a;
		}
		pos++;
	}
	return (long long)pos;
}
