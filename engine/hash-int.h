#pragma once

#include "resync/hash.h"

struct hash128 hash_block_avx512(const void *data, size_t len, uint64_t seed);
struct hash128 hash_block_avx2(const void *data, size_t len, uint64_t seed);
struct hash128 hash_block_sse2(const void *data, size_t len, uint64_t seed);
void hash_span_avx512(const void *data, size_t len, size_t bs, uint64_t seed,
		      struct hash128 *leaves, struct hash128 *ret_whole);
void hash_span_avx2(const void *data, size_t len, size_t bs, uint64_t seed, struct hash128 *leaves,
		    struct hash128 *ret_whole);
void hash_span_sse2(const void *data, size_t len, size_t bs, uint64_t seed, struct hash128 *leaves,
		    struct hash128 *ret_whole);
