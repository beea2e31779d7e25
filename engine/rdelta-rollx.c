/* The RabinKarp rolling search of rdelta-search.c sixteen window positions
 * at a time, in AVX-512 lanes (compiled with -mavx512f; see meson.build,
 * and rdelta_rk_roll_pick() for the choice at run time).
 *
 * One byte's roll is H(q + 1) = M H(q) + d(q), d(q) = in - M^bl (out +
 * (M - 1) SEED): a multiply chain, about 4 cycles a byte on one sum. Lane k
 * holds H(j + k); sixteen positions on, H(q + 16) = M^16 H(q) + sum over
 * t < 16 of M^(15 - t) d(q + t), and those sixteen windowed sums of d come
 * from four doubling steps (2, 4, 8, 16 terms) over two vectors of d. The
 * filter is then tested for all sixteen sums with one gather. */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "rdelta-int.h"

static inline __m512i set1(uint32_t v)
{
	return _mm512_set1_epi32((int)v);
}

/* Lanes whose sum passes the filter (rdelta_filter_maybe(), in lanes). */
static inline __mmask16 filter_hits(__m512i h, const uint32_t *filter, __m128i shift)
{
	const __m512i one = set1(1), low5 = set1(31);
	__m512i x = _mm512_xor_si512(h, _mm512_srli_epi32(h, 16));
	__m512i idx = _mm512_srl_epi32(_mm512_mullo_epi32(x, set1(RDELTA_FILTER_MUL1)), shift);
	__m512i g = _mm512_mullo_epi32(x, set1(RDELTA_FILTER_MUL2));
	__m512i m = _mm512_sllv_epi32(one, _mm512_srli_epi32(g, 27));
	__m512i word = _mm512_i32gather_epi32(idx, (const void *)filter, 4);

	m = _mm512_or_si512(
	    m, _mm512_sllv_epi32(one, _mm512_and_si512(_mm512_srli_epi32(g, 22), low5)));
	m = _mm512_or_si512(
	    m, _mm512_sllv_epi32(one, _mm512_and_si512(_mm512_srli_epi32(g, 17), low5)));
	return _mm512_cmpeq_epi32_mask(_mm512_and_si512(word, m), m);
}

/* d(q) of the sixteen positions from w: in = w[q + bl], out = w[q]. */
static inline __m512i dsum(const uint8_t *w, size_t bl, __m512i mbl, __m512i adj)
{
	__m512i in = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(w + bl)));
	__m512i out = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(const void *)w));

	return _mm512_sub_epi32(in, _mm512_mullo_epi32(mbl, _mm512_add_epi32(out, adj)));
}

/* x * m + y */
static inline __m512i muladd(__m512i x, __m512i m, __m512i y)
{
	return _mm512_add_epi32(_mm512_mullo_epi32(x, m), y);
}

size_t rdelta_rk_roll_avx512(const uint8_t *w, size_t n, size_t bl, uint32_t *h, uint32_t mbl,
			     const uint32_t *filter, unsigned fbits)
{
	const uint32_t adj = (RDELTA_RK_MULT - 1) * RDELTA_RK_SEED;
	const __m512i m1 = set1(RDELTA_RK_MULT), m2 = set1(rdelta_pow32(RDELTA_RK_MULT, 2)),
		      m4 = set1(rdelta_pow32(RDELTA_RK_MULT, 4)),
		      m8 = set1(rdelta_pow32(RDELTA_RK_MULT, 8)),
		      m16 = set1(rdelta_pow32(RDELTA_RK_MULT, 16)), vmbl = set1(mbl),
		      vadj = set1(adj), zero = _mm512_setzero_si512();
	const __m128i shift = _mm_cvtsi32_si128((int)(32 - fbits));
	uint32_t lanes[16], a = *h;
	__m512i hv, d0;
	size_t j = 0;

	/* Vectors pay from a few dozen positions on; a search stopped by the
	 * filter comes back here for the next stretch. */
	if (n < 64)
		return rdelta_rk_roll_base(w, n, bl, h, mbl, filter, fbits);
	for (int k = 0; k < 16; k++) {
		lanes[k] = a;
		a = a * RDELTA_RK_MULT + w[k + bl] - mbl * (w[k] + adj);
	}
	hv = _mm512_loadu_si512(lanes);
	d0 = dsum(w, bl, vmbl, vadj);
	/* Positions j..j+15 are tested (all < n - 1); the next sixteen sums
	 * read up to w[j + 31 + bl], within w[n - 1 + bl]. */
	while (j + 32 <= n) {
		__mmask16 hit = filter_hits(hv, filter, shift);
		__m512i d1, e1l, e1h, e2l, e2h, e3l, e3h;

		if (hit) {
			_mm512_storeu_si512(lanes, hv);
			*h = lanes[__builtin_ctz(hit)];
			return j + (size_t)__builtin_ctz(hit);
		}
		d1 = dsum(w + j + 16, bl, vmbl, vadj);
		e1l = muladd(d0, m1, _mm512_alignr_epi32(d1, d0, 1));
		e1h = muladd(d1, m1, _mm512_alignr_epi32(zero, d1, 1));
		e2l = muladd(e1l, m2, _mm512_alignr_epi32(e1h, e1l, 2));
		e2h = muladd(e1h, m2, _mm512_alignr_epi32(zero, e1h, 2));
		e3l = muladd(e2l, m4, _mm512_alignr_epi32(e2h, e2l, 4));
		e3h = muladd(e2h, m4, _mm512_alignr_epi32(zero, e2h, 4));
		hv = muladd(hv, m16, muladd(e3l, m8, _mm512_alignr_epi32(e3h, e3l, 8)));
		d0 = d1;
		j += 16;
	}
	_mm512_storeu_si512(lanes, hv);
	*h = lanes[0];
	return j + rdelta_rk_roll_base(w + j, n - j, bl, h, mbl, filter, fbits);
}
