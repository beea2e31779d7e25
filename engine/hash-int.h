#pragma once

#include "resync/hash.h"

struct hash128 hash_block_avx512(const void *data, size_t len, uint64_t seed);
struct hash128 hash_block_avx2(const void *data, size_t len, uint64_t seed);
struct hash128 hash_block_sse2(const void *data, size_t len, uint64_t seed);
