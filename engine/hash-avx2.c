/* xxh3-128 compiled for AVX2; hash.c calls it only where the CPU has AVX2. */
#define XXH_INLINE_ALL
#define XXH_VECTOR XXH_AVX2
#include <xxhash.h>

#include "hash-int.h"
#include "hash-span.h"

struct hash128 hash_block_avx2(const void *data, size_t len, uint64_t seed)
{
	return hash_span_block(data, len, seed);
}

void hash_span_avx2(const void *data, size_t len, size_t bs, uint64_t seed, struct hash128 *leaves,
		    struct hash128 *ret_whole)
{
	hash_span_fused(data, len, bs, seed, leaves, ret_whole);
}
