/* One pass over a span for two xxh3-128 hashings of the same bytes: each
 * leaf of bs bytes with a seed (the hash tree's leaves) and the whole span
 * with seed 0 (the proof's leaf). Hashing the span again after its leaves
 * costs a second run of xxh3's arithmetic over bytes that came from memory
 * at memory's rate; here each 1 KiB block, loaded from memory once, feeds
 * the leaf's accumulators and then, still in the L1 cache, the span's, so
 * the second hashing runs while the next loads wait (bench/hash-floor,
 * 2 GiB: the leaves 0.270 s and the span pass 0.077-0.092 s became one
 * pass of 0.297 s).
 *
 * The same function as XXH3_128bits_withSeed() for inputs over 240 bytes
 * (xxhash.h 0.8, its long-input loop): accumulate 16 stripes of a 1 KiB
 * block with the secret at 8 bytes a stripe, scramble after each block
 * but the last; in the last block, 15 stripes, then the input's last 64
 * bytes with the secret's last-stripe offset; merge the accumulators.
 * Leaves and span are both whole numbers of 1 KiB blocks, so both
 * hashings cut the bytes at the same places. test-hash checks each path
 * against the system's libxxhash.
 *
 * Included by each vector path's file after <xxhash.h> (XXH_INLINE_ALL,
 * its XXH_VECTOR), so that XXH3_accumulate_512 and XXH3_scrambleAcc are
 * that path's. */
#pragma once

#include <stdbool.h>

#include "resync/hash.h"

#if XXH_VERSION_NUMBER < 800 || XXH_VERSION_NUMBER >= 900
#error "hash-span.h follows xxhash 0.8's long-input loop"
#endif

enum {
	/* How far ahead of the stripe being hashed its bytes are asked for
	 * (bytes): a page. The hardware's prefetcher stops at each 4 KiB
	 * page; xxh3's own distance (384 bytes) left each page's first
	 * stripes waiting for memory. Cached 2 GiB image, one pass, AVX-512
	 * (bench/hash-floor "one pass"): 384 bytes 0.149-0.158 s a GiB,
	 * 1 KiB 0.126-0.134, 2 KiB 0.120-0.129, 4 KiB 0.113-0.115, 8 KiB
	 * 0.116-0.124. A prefetch never faults, past the span's end too. */
	HASH_SPAN_PREFETCH = 4096,
	HASH_SPAN_STRIPES = 16,
	/* 16 stripes of 64 bytes: the default secret's block. */
	HASH_SPAN_BLOCK = HASH_SPAN_STRIPES * XXH_STRIPE_LEN,
};
_Static_assert(XXH_SECRET_DEFAULT_SIZE == 192, "xxh3's default secret");
_Static_assert((XXH_SECRET_DEFAULT_SIZE - XXH_STRIPE_LEN) / XXH_SECRET_CONSUME_RATE ==
		   HASH_SPAN_STRIPES,
	       "xxh3's stripes a block");

/* The 128-bit value of accumulators that took len bytes. */
static inline struct hash128 hash_span_merge(const xxh_u64 *acc, const xxh_u8 *secret, size_t len)
{
	struct hash128 h;

	h.lo =
	    XXH3_mergeAccs(acc, secret + XXH_SECRET_MERGEACCS_START, (xxh_u64)len * XXH_PRIME64_1);
	h.hi = XXH3_mergeAccs(
	    acc, secret + XXH_SECRET_DEFAULT_SIZE - 8 * XXH_ACC_NB - XXH_SECRET_MERGEACCS_START,
	    ~((xxh_u64)len * XXH_PRIME64_2));
	return h;
}

/* One 1 KiB block of an input into acc: its 16 stripes (the last one
 * as the input's last stripe when last), then the scramble unless last. */
XXH_FORCE_INLINE void hash_span_kib(xxh_u64 *acc, const xxh_u8 *in, const xxh_u8 *secret, bool last)
{
	for (size_t s = 0; s < HASH_SPAN_STRIPES; s++) {
		const xxh_u8 *k = last && s == HASH_SPAN_STRIPES - 1
				      ? secret + XXH_SECRET_DEFAULT_SIZE - XXH_STRIPE_LEN -
					    XXH_SECRET_LASTACC_START
				      : secret + s * XXH_SECRET_CONSUME_RATE;

		XXH_PREFETCH(in + s * XXH_STRIPE_LEN + HASH_SPAN_PREFETCH);
		XXH3_accumulate_512(acc, in + s * XXH_STRIPE_LEN, k);
	}
	if (!last)
		XXH3_scrambleAcc(acc, secret + XXH_SECRET_DEFAULT_SIZE - XXH_STRIPE_LEN);
}

/* The secret of seed: xxh3's own for seed 0, else made in custom. */
static inline const xxh_u8 *hash_span_secret(uint64_t seed, xxh_u8 *custom)
{
	if (!seed)
		return XXH3_kSecret;
	XXH3_initCustomSecret(custom, seed);
	return custom;
}

/* leaves[i] = xxh3-128(data + i*bs, bs, seed) and *ret_whole =
 * xxh3-128(data, len, 0). bs: a multiple of HASH_SPAN_BLOCK; len: a
 * multiple of bs. Each 1 KiB block goes to the leaf's accumulators, then,
 * still in the L1 cache, to the whole's. */
static inline void hash_span_fused(const void *data, size_t len, size_t bs, uint64_t seed,
				   struct hash128 *leaves, struct hash128 *ret_whole)
{
	XXH_ALIGN(XXH_SEC_ALIGN) xxh_u8 custom[XXH_SECRET_DEFAULT_SIZE];
	XXH_ALIGN(XXH_ACC_ALIGN) xxh_u64 whole[XXH_ACC_NB] = XXH3_INIT_ACC;
	const xxh_u8 *p = data, *sl = hash_span_secret(seed, custom);
	size_t per_leaf = bs / HASH_SPAN_BLOCK, blocks = len / HASH_SPAN_BLOCK;

	for (size_t b = 0; b < blocks; b += per_leaf) {
		XXH_ALIGN(XXH_ACC_ALIGN) xxh_u64 leaf[XXH_ACC_NB] = XXH3_INIT_ACC;

		for (size_t j = 0; j < per_leaf; j++) {
			const xxh_u8 *in = p + (b + j) * HASH_SPAN_BLOCK;

			hash_span_kib(leaf, in, sl, j == per_leaf - 1);
			hash_span_kib(whole, in, XXH3_kSecret, b + j == blocks - 1);
		}
		leaves[b / per_leaf] = hash_span_merge(leaf, sl, bs);
	}
	*ret_whole = hash_span_merge(whole, XXH3_kSecret, len);
}

/* xxh3-128(data, len, seed) by the same loop, for len a multiple of
 * HASH_SPAN_BLOCK: a block hash whose bytes come from memory (a page, the
 * proof's 64 KiB block) with them asked for a page ahead. */
static inline struct hash128 hash_span_one(const void *data, size_t len, uint64_t seed)
{
	XXH_ALIGN(XXH_SEC_ALIGN) xxh_u8 custom[XXH_SECRET_DEFAULT_SIZE];
	XXH_ALIGN(XXH_ACC_ALIGN) xxh_u64 acc[XXH_ACC_NB] = XXH3_INIT_ACC;
	const xxh_u8 *p = data, *sec = hash_span_secret(seed, custom);
	size_t blocks = len / HASH_SPAN_BLOCK;

	for (size_t b = 0; b < blocks; b++)
		hash_span_kib(acc, p + b * HASH_SPAN_BLOCK, sec, b == blocks - 1);
	return hash_span_merge(acc, sec, len);
}

/* hash_block() of a path: whole-KiB inputs by hash_span_one(), the rest
 * (short inputs' own branches, odd lengths) by xxhash.h. */
static inline struct hash128 hash_span_block(const void *data, size_t len, uint64_t seed)
{
	XXH128_hash_t h;

	if (len >= HASH_SPAN_BLOCK && len % HASH_SPAN_BLOCK == 0)
		return hash_span_one(data, len, seed);
	h = XXH3_128bits_withSeed(data, len, seed);
	return (struct hash128){h.low64, h.high64};
}
