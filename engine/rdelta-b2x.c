/* BLAKE2b-256 (RFC 7693) of up to RDELTA_B2X_LANES messages of equal length
 * at once, one message per vector lane. Compiled several times (see
 * meson.build) with RDELTA_B2X_NAME, RDELTA_B2X_LANES and the target's
 * instruction set flags; rdelta-b2.c picks one at run time. */
#include <stdint.h>
#include <string.h>

#include "rdelta-int.h"

#ifndef RDELTA_B2X_LANES
#error "RDELTA_B2X_LANES must be defined"
#endif

typedef uint64_t b2vec __attribute__((vector_size(8 * RDELTA_B2X_LANES)));

static const uint64_t b2_iv[8] = {
	0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
	0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

static const uint8_t b2_sigma[10][16] = {
	{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
	{14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
	{11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
	{7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
	{9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
	{2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
	{12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
	{13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
	{6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
	{10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (64 - (n))))

#define G(a, b, c, d, x, y)                                                                        \
	do {                                                                                       \
		a = a + b + (x);                                                                   \
		d = ROTR(d ^ a, 32);                                                               \
		c = c + d;                                                                         \
		b = ROTR(b ^ c, 24);                                                               \
		a = a + b + (y);                                                                   \
		d = ROTR(d ^ a, 16);                                                               \
		c = c + d;                                                                         \
		b = ROTR(b ^ c, 63);                                                               \
	} while (0)

static void b2_compress(b2vec h[8], const b2vec m[16], uint64_t t, bool last)
{
	b2vec v[16];

	for (int i = 0; i < 8; i++) {
		v[i] = h[i];
		v[i + 8] = (b2vec){0} + b2_iv[i];
	}
	v[12] ^= t;
	if (last)
		v[14] = ~v[14];
	for (int r = 0; r < 12; r++) {
		const uint8_t *s = b2_sigma[r % 10];

		G(v[0], v[4], v[8], v[12], m[s[0]], m[s[1]]);
		G(v[1], v[5], v[9], v[13], m[s[2]], m[s[3]]);
		G(v[2], v[6], v[10], v[14], m[s[4]], m[s[5]]);
		G(v[3], v[7], v[11], v[15], m[s[6]], m[s[7]]);
		G(v[0], v[5], v[10], v[15], m[s[8]], m[s[9]]);
		G(v[1], v[6], v[11], v[12], m[s[10]], m[s[11]]);
		G(v[2], v[7], v[8], v[13], m[s[12]], m[s[13]]);
		G(v[3], v[4], v[9], v[14], m[s[14]], m[s[15]]);
	}
	for (int i = 0; i < 8; i++)
		h[i] ^= v[i] ^ v[i + 8];
}

#if RDELTA_B2X_LANES == 8 && defined(__AVX512F__)

/* Words off/8 .. off/8 + 7 of the eight lanes' blocks, word i of every lane
 * in c[i]: eight row loads and an 8 x 8 transpose in three steps of
 * two-vector shuffles (word-by-word gathers cost as much as a sixth of
 * the compression); __builtin_shufflevector: GCC 12 and clang alike. */
static void b2_transpose8(b2vec c[8], const uint8_t *const blk[8], size_t off)
{
	b2vec r[8], t[8], u[8];

	for (int l = 0; l < 8; l++)
		memcpy(&r[l], blk[l] + off, sizeof(r[l]));
	/* t[k], t[k + 1]: even and odd words of rows k and k + 1, interleaved */
	for (int k = 0; k < 8; k += 2) {
		t[k] = __builtin_shufflevector(r[k], r[k + 1], 0, 8, 2, 10, 4, 12, 6, 14);
		t[k + 1] = __builtin_shufflevector(r[k], r[k + 1], 1, 9, 3, 11, 5, 13, 7, 15);
	}
	/* u[g + i]: words i and i + 4 of rows g .. g + 3 */
	for (int g = 0; g < 8; g += 4)
		for (int k = 0; k < 2; k++) {
			u[g + k] = __builtin_shufflevector(t[g + k], t[g + k + 2], 0, 1, 8, 9, 4, 5, 12, 13);
			u[g + k + 2] = __builtin_shufflevector(t[g + k], t[g + k + 2], 2, 3, 10, 11, 6, 7, 14, 15);
		}
	for (int k = 0; k < 4; k++) {
		c[k] = __builtin_shufflevector(u[k], u[k + 4], 0, 1, 2, 3, 8, 9, 10, 11);
		c[k + 4] = __builtin_shufflevector(u[k], u[k + 4], 4, 5, 6, 7, 12, 13, 14, 15);
	}
}

/* Word i of each lane's 128-byte block into m[i]. */
static void b2_load(b2vec m[16], const uint8_t *const blk[RDELTA_B2X_LANES])
{
	b2_transpose8(m, blk, 0);
	b2_transpose8(m + 8, blk, 64);
}
#else
static inline uint64_t load64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8); /* little-endian hosts only (x86-64, arm64) */
	return v;
}

/* Gather word i of each lane's 128-byte block. */
static void b2_load(b2vec m[16], const uint8_t *const blk[RDELTA_B2X_LANES])
{
	for (int i = 0; i < 16; i++)
		for (int l = 0; l < RDELTA_B2X_LANES; l++)
			m[i][l] = load64(blk[l] + 8 * i);
}
#endif

void RDELTA_B2X_NAME(const uint8_t *const msg[], size_t len, unsigned n, uint8_t (*out)[32])
{
	uint8_t tail[RDELTA_B2X_LANES][128];
	const uint8_t *blk[RDELTA_B2X_LANES];
	b2vec h[8], m[16];
	size_t off = 0, rest;

	for (int i = 0; i < 8; i++)
		h[i] = (b2vec){0} + b2_iv[i];
	h[0] ^= 0x01010000 ^ RDELTA_B2_LEN;
	/* Whole blocks that are not the last one. */
	while (len - off > 128) {
		for (unsigned l = 0; l < RDELTA_B2X_LANES; l++)
			blk[l] = msg[l < n ? l : 0] + off;
		b2_load(m, blk);
		off += 128;
		b2_compress(h, m, off, false);
	}
	/* The last block, zero-padded (a whole one of zeros for len 0). */
	rest = len - off;
	for (unsigned l = 0; l < RDELTA_B2X_LANES; l++) {
		memset(tail[l], 0, sizeof(tail[l]));
		if (l < n && rest)
			memcpy(tail[l], msg[l] + off, rest);
		blk[l] = tail[l];
	}
	b2_load(m, blk);
	b2_compress(h, m, len, true);
	for (unsigned l = 0; l < n; l++)
		for (int i = 0; i < 4; i++) {
			uint64_t w = h[i][l];

			memcpy(out[l] + 8 * i, &w, 8);
		}
}
