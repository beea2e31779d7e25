/* Block hashing: xxh3-128 with a seed, vectorised for the CPU at run time. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct hash128 {
	uint64_t lo, hi;
};
_Static_assert(sizeof(struct hash128) == 16, "hash128 layout");

static inline int hash128_equal(const struct hash128 *a, const struct hash128 *b)
{
	return a->lo == b->lo && a->hi == b->hi;
}

/* Hash len bytes of data with seed. Thread-safe; deterministic for a seed
 * on every CPU (the vector paths compute the same function). */
struct hash128 hash_block(const void *data, size_t len, uint64_t seed);
/* The hashes of len bytes at data in one pass over them: leaves[i] =
 * hash_block() of the i-th bs bytes with seed (the last may be short), and
 * *ret_whole = hash_block(data, len, 0). Where bs is a multiple of 1 KiB
 * and len of bs, each stripe of bytes feeds both hashings as it is loaded
 * (hash-span.h); otherwise the bytes are hashed twice. */
void hash_span(const void *data, size_t len, size_t bs, uint64_t seed, struct hash128 *leaves,
	       struct hash128 *ret_whole);
/* A fresh random seed from the kernel. */
int hash_seed_random(uint64_t *ret);
/* Name of the vector path chosen on this CPU ("avx512", "avx2", "sse2"). */
const char *hash_impl_name(void);
/* Use the path named (as hash_impl_name() says) from now on, for a
 * benchmark's comparison: -ENOTSUP when this CPU or build has none of
 * that name. Not thread-safe: before any hashing starts. */
int hash_impl_set(const char *name);
