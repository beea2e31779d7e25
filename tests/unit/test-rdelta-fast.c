/* The engine's own rdiff formats: BLAKE2b-256 and MD4 against known
 * answers, every lane implementation against the one-message one, the
 * rolling sums against sums from scratch, signatures byte-identical to
 * librsync's (through the rdelta job, which runs librsync), and deltas that
 * librsync patches back, and the in-place patch too, into NEW. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "resync/macro.h"
#include "resync/rdelta.h"

#include "rdelta-int.h"

static void fill(uint8_t *p, size_t n, uint32_t seed)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		p[i] = (uint8_t)(seed >> 16);
	}
}

static void hex(const uint8_t *p, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", p[i]);
}

static void test_known_answers(void **state)
{
	uint8_t d[32];
	char h[65];

	(void)state;
	rdelta_b2("", 0, d);
	hex(d, 32, h);
	assert_string_equal(h, "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8");
	rdelta_b2("abc", 3, d);
	hex(d, 32, h);
	assert_string_equal(h, "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319");
	rdelta_md4("", 0, d);
	hex(d, 16, h);
	assert_string_equal(h, "31d6cfe0d16ae931b73c59d7e0c089c0");
	rdelta_md4("abc", 3, d);
	hex(d, 16, h);
	assert_string_equal(h, "a448017aaf21d8525fc10ae87aa6729d");
}

static void test_lanes_agree(void **state)
{
	static const size_t lens[] = {0, 1, 127, 128, 129, 255, 256, 1000, 4096, 5003};
	typedef void (*fn)(const uint8_t *const *, size_t, unsigned, uint8_t (*)[32]);
	fn impls[3] = {rdelta_b2x8_base, NULL, NULL};
	uint8_t *buf = malloc(8 * 5003), want[8][32], got[8][32];
	const uint8_t *msg[8];

	(void)state;
	assert_non_null(buf);
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx2"))
		impls[1] = rdelta_b2x8_avx2;
	if (__builtin_cpu_supports("avx512f"))
		impls[2] = rdelta_b2x8_avx512;
	print_message("lanes: %s\n", rdelta_b2_impl());
	fill(buf, 8 * 5003, 7);
	for (size_t k = 0; k < ARRAY_SIZE(lens); k++)
		for (unsigned n = 1; n <= 8; n++) {
			for (unsigned l = 0; l < n; l++) {
				msg[l] = buf + l * 5003;
				rdelta_b2(msg[l], lens[k], want[l]);
			}
			for (int i = 0; i < 3; i++) {
				if (!impls[i])
					continue;
				memset(got, 0, sizeof(got));
				impls[i](msg, lens[k], n, got);
				assert_memory_equal(got, want, n * 32);
			}
			rdelta_b2_lanes(msg, lens[k], n, got);
			assert_memory_equal(got, want, n * 32);
		}
	free(buf);
}

static void test_rolling(void **state)
{
	uint8_t buf[3000];

	(void)state;
	fill(buf, sizeof(buf), 3);
	for (int rk = 0; rk < 2; rk++) {
		struct rdelta_weak w, fresh;
		const size_t bl = 700;

		rdelta_weak_init(&w, rk, buf, bl);
		/* Rotate to the end of the buffer, then shrink to nothing. */
		for (size_t p = 0; p + bl < sizeof(buf); p++) {
			rdelta_weak_rotate(&w, rk, buf[p], buf[p + bl]);
			rdelta_weak_init(&fresh, rk, buf + p + 1, bl);
			assert_int_equal(rdelta_weak_digest(&w, rk), rdelta_weak_digest(&fresh, rk));
		}
		for (size_t p = sizeof(buf) - bl; p + 1 < sizeof(buf); p++) {
			rdelta_weak_rollout(&w, rk, buf[p]);
			rdelta_weak_init(&fresh, rk, buf + p + 1, sizeof(buf) - p - 1);
			assert_int_equal(rdelta_weak_digest(&w, rk), rdelta_weak_digest(&fresh, rk));
		}
	}
}

/* The rolling search over windows that match nothing: the AVX-512 lanes
 * stop where the one-byte loop stops, with the same sum, and that sum is
 * the window's from scratch; planted windows whose sums are in the filter
 * are never passed. */
static void test_roll_lanes_agree(void **state)
{
	static const size_t bls[] = {64, 1000, 4096};
	static const size_t planted[] = {5000, 5017, 20000, 20001, 100000, 200003};
	static const size_t starts[] = {0, 3, 4990, 5001, 19950, 99937, 150000};
	const size_t len = 256 * 1024, others = 300;
	uint8_t *buf = malloc(len),
		*sig = malloc(RDELTA_HEADER_LEN + 8 * (ARRAY_SIZE(planted) + others));
	rdelta_rk_roll_fn impls[2] = {rdelta_rk_roll_base, NULL};

	(void)state;
	assert_non_null(buf);
	assert_non_null(sig);
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f"))
		impls[1] = rdelta_rk_roll_avx512;
	print_message("roll: %s\n", impls[1] ? "avx512 against base" : "base only (no AVX-512)");
	assert_true(rdelta_rk_roll_pick() == (impls[1] ? impls[1] : impls[0]));
	fill(buf, len, 9);
	for (size_t b = 0; b < ARRAY_SIZE(bls); b++) {
		const size_t bl = bls[b];
		struct rdelta_sigidx *idx;
		struct rdelta_weak w;
		uint8_t *rec = sig + RDELTA_HEADER_LEN;
		uint32_t rnd = 77;

		rdelta_put_be32(sig, RDELTA_RK_BLAKE2_SIG_MAGIC);
		rdelta_put_be32(sig + 4, (uint32_t)bl);
		rdelta_put_be32(sig + 8, 4);
		for (size_t k = 0; k < ARRAY_SIZE(planted) + others; k++, rec += 8) {
			rnd = rnd * 1103515245u + 12345u;
			if (k < ARRAY_SIZE(planted))
				rdelta_weak_init(&w, true, buf + planted[k], bl);
			rdelta_put_be32(rec, k < ARRAY_SIZE(planted) ? w.a : rnd);
			memset(rec + 4, 0, 4);
		}
		assert_int_equal(rdelta_sigidx_parse(sig, (size_t)(rec - sig), &idx), 0);
		for (size_t k = 0; k < ARRAY_SIZE(starts); k++)
			for (size_t n = 1; n < len - bl - starts[k]; n = n * 3 + 7) {
				const size_t st = starts[k];
				size_t want = 0;
				uint32_t h0, hw = 0;

				rdelta_weak_init(&w, true, buf + st, bl);
				h0 = w.a;
				for (int i = 0; i < 2; i++) {
					uint32_t h = h0;
					size_t j;

					if (!impls[i])
						continue;
					j = impls[i](buf + st, n, bl, &h, w.b, idx->filter,
						     idx->fbits);
					if (i == 0) {
						want = j;
						hw = h;
					}
					assert_int_equal(j, want);
					assert_int_equal(h, hw);
				}
				assert_true(want < n);
				assert_true(want == n - 1 || rdelta_sigidx_maybe(idx, hw));
				rdelta_weak_init(&w, true, buf + st + want, bl);
				assert_int_equal(hw, w.a);
				for (size_t q = 0; q < ARRAY_SIZE(planted); q++)
					if (planted[q] >= st && planted[q] < st + n)
						assert_true(st + want <= planted[q]);
			}
		rdelta_sigidx_free(idx);
	}
	free(sig);
	free(buf);
}

static int memfd_with(const uint8_t *p, size_t n)
{
	int fd = memfd_create("rdelta-fast", MFD_CLOEXEC);

	assert_true(fd >= 0);
	if (n)
		assert_int_equal(write(fd, p, n), (ssize_t)n);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	return fd;
}

static uint8_t *contents(int fd, size_t *ret_len)
{
	off_t len = lseek(fd, 0, SEEK_END);
	uint8_t *b = malloc(len > 0 ? (size_t)len : 1);

	assert_non_null(b);
	assert_int_equal(pread(fd, b, (size_t)len, 0), len);
	*ret_len = (size_t)len;
	return b;
}

/* librsync's signature through the job layer, in one step. */
static uint8_t *librsync_sig(const struct rdelta_sig_params *p, const uint8_t *in, size_t n,
			     size_t *ret_len)
{
	struct rdelta_job *job;
	size_t cap = 64 + n * 3 + (n / p->block_len + 1) * 40, il = n, ol = cap;
	uint8_t *out = malloc(cap);
	const void *ip = in;
	void *op = out;

	assert_non_null(out);
	assert_int_equal(rdelta_job_new_signature(p, &job), 0);
	assert_int_equal(rdelta_job_step(job, &ip, &il, true, &op, &ol), 1);
	rdelta_job_free(job);
	*ret_len = cap - ol;
	return out;
}

static void test_signatures_as_librsync(void **state)
{
	static const size_t sizes[] = {0, 1, 511, 512, 513, 70000, 300001};
	static const uint32_t blocks[] = {1, 64, 512, 2048};
	uint8_t *data = malloc(300001);

	(void)state;
	assert_non_null(data);
	fill(data, 300001, 11);
	for (size_t s = 0; s < ARRAY_SIZE(sizes); s++)
		for (size_t b = 0; b < ARRAY_SIZE(blocks); b++)
			for (int kind = 0; kind < 4; kind++) {
				struct rdelta_sig_params p = {
					.hash = kind & 1 ? RDELTA_HASH_MD4 : RDELTA_HASH_BLAKE2,
					.rollsum = kind & 2 ? RDELTA_ROLLSUM_RSYNC
							    : RDELTA_ROLLSUM_RABINKARP,
					.block_len = blocks[b],
					.strong_len = kind == 3 ? 5 : 0,
				};
				struct rdelta_stats st = {0};
				size_t want_len, got_len;
				uint8_t *want, *got;
				int in, out;

				if (blocks[b] == 1 && sizes[s] > 20000)
					continue;
				assert_int_equal(rdelta_sig_params_resolve(&p, (int64_t)sizes[s]), 0);
				want = librsync_sig(&p, data, sizes[s], &want_len);
				in = memfd_with(data, sizes[s]);
				out = memfd_with(NULL, 0);
				assert_int_equal(rdelta_fast_signature(in, sizes[s], &p, out, &st), 0);
				got = contents(out, &got_len);
				assert_int_equal(got_len, want_len);
				assert_memory_equal(got, want, want_len);
				free(want);
				free(got);
				close(in);
				close(out);
			}
	free(data);
}

static void test_delta_patches_back(void **state)
{
	const size_t n = 200000;
	uint8_t *basis = malloc(n), *new = malloc(n + 5000);
	size_t new_len = 0, len;
	char dir[] = "/tmp/rdelta-fast-XXXXXX", journal[64];

	(void)state;
	assert_non_null(basis);
	assert_non_null(new);
	assert_non_null(mkdtemp(dir));
	snprintf(journal, sizeof(journal), "%s/j", dir);
	fill(basis, n, 5);
	/* NEW: the second half, 3 new bytes, the first half with a hole. */
	memcpy(new, basis + n / 2, n / 2);
	new_len = n / 2;
	memcpy(new + new_len, "xyz", 3);
	new_len += 3;
	memcpy(new + new_len, basis, n / 4);
	new_len += n / 4;
	memcpy(new + new_len, basis + n / 4 + 1000, n / 4 - 1000);
	new_len += n / 4 - 1000;
	for (int ranges = 1; ranges <= 9; ranges += 4) {
		struct rdelta_sig_params p = {.block_len = 256};
		struct rdelta_sigidx *idx;
		struct rdelta_stats st = {0};
		uint8_t *sig, *delta, *out;
		size_t sig_len, delta_len;
		int bfd, nfd, sfd, dfd, ofd;
		char env[8];

		snprintf(env, sizeof(env), "%d", ranges);
		setenv("RESYNC_RDELTA_RANGES", env, 1);
		assert_int_equal(rdelta_sig_params_resolve(&p, (int64_t)n), 0);
		bfd = memfd_with(basis, n);
		nfd = memfd_with(new, new_len);
		sfd = memfd_with(NULL, 0);
		dfd = memfd_with(NULL, 0);
		ofd = memfd_with(NULL, 0);
		assert_int_equal(rdelta_fast_signature(bfd, n, &p, sfd, &st), 0);
		sig = contents(sfd, &sig_len);
		assert_int_equal(rdelta_sigidx_parse(sig, sig_len, &idx), 0);
		assert_int_equal(rdelta_fast_delta(idx, nfd, new_len, dfd, &st), 0);
		/* Most of NEW travels as copies. */
		assert_true(st.lit_bytes < 1000);
		assert_int_equal(lseek(dfd, 0, SEEK_SET), 0);
		assert_int_equal(rdelta_patch_fd(bfd, dfd, ofd, NULL), 0);
		out = contents(ofd, &len);
		assert_int_equal(len, new_len);
		assert_memory_equal(out, new, new_len);
		free(out);
		/* In place: the halves swap, a cycle that must be staged. */
		delta = contents(dfd, &delta_len);
		assert_int_equal(rdelta_patch_inplace_buf(bfd, journal, delta, delta_len, &st), 0);
		out = contents(bfd, &len);
		assert_int_equal(len, new_len);
		assert_memory_equal(out, new, new_len);
		assert_int_equal(access(journal, F_OK), -1);
		/* A delta needing more basis than there is: refused, nothing written. */
		assert_int_equal(ftruncate(bfd, 1000), 0);
		assert_int_equal(rdelta_patch_inplace_buf(bfd, journal, delta, delta_len, &st),
				 -ENXIO);
		free(out);
		out = contents(bfd, &len);
		assert_int_equal(len, 1000);
		assert_memory_equal(out, new, 1000);
		free(out);
		free(delta);
		rdelta_sigidx_free(idx);
		free(sig);
		close(bfd);
		close(nfd);
		close(sfd);
		close(dfd);
		close(ofd);
	}
	unsetenv("RESYNC_RDELTA_RANGES");
	rmdir(dir);
	free(basis);
	free(new);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_known_answers),
		cmocka_unit_test(test_lanes_agree),
		cmocka_unit_test(test_rolling),
		cmocka_unit_test(test_roll_lanes_agree),
		cmocka_unit_test(test_signatures_as_librsync),
		cmocka_unit_test(test_delta_patches_back),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
