#include <errno.h>
#include <string.h>
#include <sys/random.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "hash-int.h"

/* The baseline build (SSE2 on x86-64, scalar elsewhere). */
struct hash128 hash_block_sse2(const void *data, size_t len, uint64_t seed)
{
	XXH128_hash_t h = XXH3_128bits_withSeed(data, len, seed);

	return (struct hash128){h.low64, h.high64};
}

typedef struct hash128 (*hash_fn)(const void *, size_t, uint64_t);

/* The widest path this CPU runs: AVX-512 (AVX512F), AVX2, the baseline. */
static hash_fn hash_pick(void)
{
#if defined(__x86_64__) && defined(HAVE_HASH_AVX2)
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f"))
		return hash_block_avx512;
	if (__builtin_cpu_supports("avx2"))
		return hash_block_avx2;
#endif
	return hash_block_sse2;
}

static hash_fn hash_impl;

__attribute__((constructor)) static void hash_init(void)
{
	hash_impl = hash_pick();
}

struct hash128 hash_block(const void *data, size_t len, uint64_t seed)
{
	return hash_impl(data, len, seed);
}

const char *hash_impl_name(void)
{
#if defined(__x86_64__) && defined(HAVE_HASH_AVX2)
	if (hash_impl == hash_block_avx512)
		return "avx512";
	if (hash_impl == hash_block_avx2)
		return "avx2";
#endif
	return "sse2";
}

int hash_impl_set(const char *name)
{
	hash_fn f = NULL;

	if (!strcmp(name, "sse2"))
		f = hash_block_sse2;
#if defined(__x86_64__) && defined(HAVE_HASH_AVX2)
	__builtin_cpu_init();
	if (!strcmp(name, "avx2") && __builtin_cpu_supports("avx2"))
		f = hash_block_avx2;
	if (!strcmp(name, "avx512") && __builtin_cpu_supports("avx512f"))
		f = hash_block_avx512;
#endif
	if (!f)
		return -ENOTSUP;
	hash_impl = f;
	return 0;
}

int hash_seed_random(uint64_t *ret)
{
	uint64_t seed;
	ssize_t n;

	do
		n = getrandom(&seed, sizeof(seed), 0);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if (n != sizeof(seed))
		return -EIO;
	*ret = seed;
	return 0;
}
