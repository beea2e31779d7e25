/* Strong sums of the rdelta formats: BLAKE2b-256 through the widest lane
 * implementation the CPU has, and MD4 for librsync's old signatures. */
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "rdelta-int.h"

typedef void (*b2_lanes_fn)(const uint8_t *const msg[], size_t len, unsigned n,
			    uint8_t (*out)[32]);

static b2_lanes_fn b2_impl;
static const char *b2_name;
static pthread_once_t b2_once = PTHREAD_ONCE_INIT;

static void b2_pick(void)
{
	b2_impl = rdelta_b2x8_base;
	b2_name = "base";
#if defined(__x86_64__)
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f")) {
		b2_impl = rdelta_b2x8_avx512;
		b2_name = "avx512";
	} else if (__builtin_cpu_supports("avx2")) {
		b2_impl = rdelta_b2x8_avx2;
		b2_name = "avx2";
	}
#endif
}

const char *rdelta_b2_impl(void)
{
	pthread_once(&b2_once, b2_pick);
	return b2_name;
}

void rdelta_b2_lanes(const uint8_t *const msg[], size_t len, unsigned n,
		     uint8_t (*out)[RDELTA_B2_LEN])
{
	pthread_once(&b2_once, b2_pick);
	if (n == 1)
		rdelta_b2x1_base(msg, len, 1, out);
	else if (n)
		b2_impl(msg, len, n, out);
}

void rdelta_b2(const void *msg, size_t len, uint8_t out[RDELTA_B2_LEN])
{
	const uint8_t *m[1] = {msg};

	rdelta_b2x1_base(m, len, 1, (uint8_t(*)[RDELTA_B2_LEN])out);
}

/* MD4, from RFC 1320. */
#define MD4_F(x, y, z) (((x) & (y)) | (~(x) & (z)))
#define MD4_G(x, y, z) (((x) & (y)) | ((x) & (z)) | ((y) & (z)))
#define MD4_H(x, y, z) ((x) ^ (y) ^ (z))
#define ROTL32(x, n) (((x) << (n)) | ((x) >> (32 - (n))))

static void md4_block(uint32_t st[4], const uint8_t *p)
{
	static const uint8_t k2[16] = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15};
	static const uint8_t k3[16] = {0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15};
	static const uint8_t s1[4] = {3, 7, 11, 19}, s2[4] = {3, 5, 9, 13}, s3[4] = {3, 9, 11, 15};
	uint32_t x[16], v[4] = {st[0], st[1], st[2], st[3]};

	for (int i = 0; i < 16; i++)
		x[i] = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
		       (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
	/* Step i updates v[(4 - i % 4) % 4] from the next three, in turn. */
	for (int i = 0; i < 16; i++) {
		uint32_t *a = &v[(4 - i % 4) % 4], b = v[(5 - i % 4) % 4], c = v[(6 - i % 4) % 4],
			 d = v[(7 - i % 4) % 4];

		*a = ROTL32(*a + MD4_F(b, c, d) + x[i], s1[i % 4]);
	}
	for (int i = 0; i < 16; i++) {
		uint32_t *a = &v[(4 - i % 4) % 4], b = v[(5 - i % 4) % 4], c = v[(6 - i % 4) % 4],
			 d = v[(7 - i % 4) % 4];

		*a = ROTL32(*a + MD4_G(b, c, d) + x[k2[i]] + 0x5A827999U, s2[i % 4]);
	}
	for (int i = 0; i < 16; i++) {
		uint32_t *a = &v[(4 - i % 4) % 4], b = v[(5 - i % 4) % 4], c = v[(6 - i % 4) % 4],
			 d = v[(7 - i % 4) % 4];

		*a = ROTL32(*a + MD4_H(b, c, d) + x[k3[i]] + 0x6ED9EBA1U, s3[i % 4]);
	}
	for (int i = 0; i < 4; i++)
		st[i] += v[i];
}

void rdelta_md4(const void *msg, size_t len, uint8_t out[16])
{
	uint32_t st[4] = {0x67452301U, 0xefcdab89U, 0x98badcfeU, 0x10325476U};
	const uint8_t *p = msg;
	uint8_t tail[128] = {0};
	uint64_t bits = (uint64_t)len * 8;
	size_t whole = len & ~(size_t)63, rest = len - whole, tlen;

	for (size_t off = 0; off < whole; off += 64)
		md4_block(st, p + off);
	if (rest)
		memcpy(tail, p + whole, rest);
	tail[rest] = 0x80;
	tlen = rest < 56 ? 64 : 128;
	for (int i = 0; i < 8; i++)
		tail[tlen - 8 + i] = (uint8_t)(bits >> (8 * i));
	md4_block(st, tail);
	if (tlen == 128)
		md4_block(st, tail + 64);
	for (int i = 0; i < 4; i++)
		for (int b = 0; b < 4; b++)
			out[4 * i + b] = (uint8_t)(st[i] >> (8 * b));
}

unsigned rdelta_threads(uint64_t units)
{
	cpu_set_t set;
	long cpus = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set)
								   : sysconf(_SC_NPROCESSORS_ONLN);
	uint64_t n = cpus > 0 ? (uint64_t)cpus : 1;

	if (n > 64)
		n = 64;
	if (units < n)
		n = units ? units : 1;
	return (unsigned)n;
}
