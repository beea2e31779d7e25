/* RabinKarp of one window, compiled per instruction set (see meson.build:
 * 32-bit lane multiplies need SSE4.1 or AVX2 to vectorise); rdelta-sig.c
 * picks one at run time. */
#include <stddef.h>
#include <stdint.h>

#include "rdelta-int.h"

#ifndef RDELTA_RK_NAME
#error "RDELTA_RK_NAME must be defined"
#endif

static uint32_t pow32(uint32_t b, uint64_t e)
{
	uint32_t r = 1;

	for (; e; e >>= 1, b *= b)
		if (e & 1)
			r *= b;
	return r;
}

/* SEED * M^n + sum p[i] * M^(n-1-i), as 16 interleaved sums (stride M^16)
 * so that the multiplies vectorise. */
uint32_t RDELTA_RK_NAME(const uint8_t *p, size_t n)
{
	const uint32_t m16 = pow32(RDELTA_RK_MULT, 16);
	uint32_t h = RDELTA_RK_SEED, acc[16] = {0}, tail = 0;
	size_t head = n % 16, k;

	for (k = 0; k < head; k++)
		h = h * RDELTA_RK_MULT + p[k];
	for (; k < n; k += 16)
		for (int j = 0; j < 16; j++)
			acc[j] = acc[j] * m16 + p[k + (size_t)j];
	/* tail = sum acc[j] * M^(15-j), by Horner over the lanes. */
	for (int j = 0; j < 16; j++)
		tail = tail * RDELTA_RK_MULT + acc[j];
	return h * pow32(RDELTA_RK_MULT, n - head) + tail;
}
