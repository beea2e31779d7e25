/* RabinKarp of one window, compiled per instruction set (see meson.build:
 * 32-bit lane multiplies need SSE4.1 or AVX2 to vectorise); rdelta-sig.c
 * picks one at run time. */
#include <stddef.h>
#include <stdint.h>

#include "rdelta-int.h"

#ifndef RDELTA_RK_NAME
#error "RDELTA_RK_NAME must be defined"
#endif

/* SEED * M^n + sum p[i] * M^(n-1-i), as 64 interleaved sums (stride M^64)
 * so that the multiplies vectorise into several independent chains (one
 * vector of 16 sums waits on its multiply's latency every 16 bytes). */
uint32_t RDELTA_RK_NAME(const uint8_t *p, size_t n)
{
	const uint32_t m64 = rdelta_pow32(RDELTA_RK_MULT, 64);
	uint32_t h = RDELTA_RK_SEED, acc[64] = {0}, tail = 0;
	size_t head = n % 64, k;

	for (k = 0; k < head; k++)
		h = h * RDELTA_RK_MULT + p[k];
	for (; k < n; k += 64)
		for (int j = 0; j < 64; j++)
			acc[j] = acc[j] * m64 + p[k + (size_t)j];
	/* tail = sum acc[j] * M^(63-j), by Horner over the lanes. */
	for (int j = 0; j < 64; j++)
		tail = tail * RDELTA_RK_MULT + acc[j];
	return h * rdelta_pow32(RDELTA_RK_MULT, n - head) + tail;
}
