/* xxh3-128 compiled for AVX-512 (AVX512F); hash.c calls it only where the
 * CPU has it. The same function as the other paths: 64-byte stripes in
 * one register rather than two, about twice the AVX2 path's rate on
 * bytes already in the cache (the proof's 64 KiB leaves right after their
 * pages, the fold's leaves); bytes that come from memory go at memory's
 * rate either way (bench/hash-floor). */
#define XXH_INLINE_ALL
#define XXH_VECTOR XXH_AVX512
#include <xxhash.h>

#include "hash-int.h"
#include "hash-span.h"

struct hash128 hash_block_avx512(const void *data, size_t len, uint64_t seed)
{
	return hash_span_block(data, len, seed);
}

void hash_span_avx512(const void *data, size_t len, size_t bs, uint64_t seed,
		      struct hash128 *leaves, struct hash128 *ret_whole)
{
	hash_span_fused(data, len, bs, seed, leaves, ret_whole);
}
