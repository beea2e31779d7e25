#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/random.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "hash-int.h"
#include "hash-span.h"

/* The baseline build (SSE2 on x86-64, scalar elsewhere). */
struct hash128 hash_block_sse2(const void *data, size_t len, uint64_t seed)
{
	return hash_span_block(data, len, seed);
}

void hash_span_sse2(const void *data, size_t len, size_t bs, uint64_t seed, struct hash128 *leaves,
		    struct hash128 *ret_whole)
{
	hash_span_fused(data, len, bs, seed, leaves, ret_whole);
}

/* A vector path: its block hash and its span hash, built for it. */
struct hash_path {
	const char *name;
	struct hash128 (*block)(const void *, size_t, uint64_t);
	void (*span)(const void *, size_t, size_t, uint64_t, struct hash128 *, struct hash128 *);
};

static const struct hash_path hash_paths[] = {
    {"sse2", hash_block_sse2, hash_span_sse2},
#if defined(__x86_64__) && defined(HAVE_HASH_AVX2)
    {"avx2", hash_block_avx2, hash_span_avx2},
    {"avx512", hash_block_avx512, hash_span_avx512},
#endif
};

static bool hash_path_runs(const struct hash_path *p)
{
#if defined(__x86_64__) && defined(HAVE_HASH_AVX2)
	__builtin_cpu_init();
	if (!strcmp(p->name, "avx512"))
		return __builtin_cpu_supports("avx512f");
	if (!strcmp(p->name, "avx2"))
		return __builtin_cpu_supports("avx2");
#endif
	return !strcmp(p->name, "sse2");
}

static const struct hash_path *hash_impl = &hash_paths[0];

/* The widest path this CPU runs: AVX-512 (AVX512F), AVX2, the baseline. */
__attribute__((constructor)) static void hash_init(void)
{
	for (size_t i = 0; i < sizeof(hash_paths) / sizeof(hash_paths[0]); i++)
		if (hash_path_runs(&hash_paths[i]))
			hash_impl = &hash_paths[i];
}

struct hash128 hash_block(const void *data, size_t len, uint64_t seed)
{
	return hash_impl->block(data, len, seed);
}

void hash_span(const void *data, size_t len, size_t bs, uint64_t seed, struct hash128 *leaves,
	       struct hash128 *ret_whole)
{
	const unsigned char *p = data;

	if (bs && bs % HASH_SPAN_BLOCK == 0 && len && len % bs == 0) {
		hash_impl->span(data, len, bs, seed, leaves, ret_whole);
		return;
	}
	for (size_t k = 0, i = 0; k < len; k += bs, i++)
		leaves[i] = hash_impl->block(p + k, len - k < bs ? len - k : bs, seed);
	*ret_whole = hash_impl->block(data, len, 0);
}

const char *hash_impl_name(void)
{
	return hash_impl->name;
}

int hash_impl_set(const char *name)
{
	for (size_t i = 0; i < sizeof(hash_paths) / sizeof(hash_paths[0]); i++) {
		if (!strcmp(name, hash_paths[i].name) && hash_path_runs(&hash_paths[i])) {
			hash_impl = &hash_paths[i];
			return 0;
		}
	}
	return -ENOTSUP;
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
