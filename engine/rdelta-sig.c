/* Signatures in librsync's format, computed by the engine: the basis read
 * through the engine's I/O (io_uring where available) by one thread per
 * CPU, each over its own range of blocks, BLAKE2b hashed eight blocks at a
 * time in vector lanes. And the reader that loads a signature and indexes
 * it for the delta search. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "resync/fileio.h"
#include "resync/io.h"
#include "resync/macro.h"

#include "rdelta-int.h"

/* RabinKarp of a window, by the widest vector unit the CPU has. */
static uint32_t (*rk_impl)(const uint8_t *p, size_t n);
static pthread_once_t rk_once = PTHREAD_ONCE_INIT;

static void rk_pick(void)
{
	rk_impl = rdelta_rk_base;
#if defined(__x86_64__)
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f"))
		rk_impl = rdelta_rk_avx512;
	else if (__builtin_cpu_supports("avx2"))
		rk_impl = rdelta_rk_avx2;
#endif
}

static uint32_t rk_sum(const uint8_t *p, size_t n)
{
	pthread_once(&rk_once, rk_pick);
	return rk_impl(p, n);
}

void rdelta_weak_init(struct rdelta_weak *w, bool rabinkarp, const uint8_t *p, size_t len)
{
	if (rabinkarp) {
		w->a = rk_sum(p, len);
		w->b = rdelta_pow32(RDELTA_RK_MULT, len);
	} else {
		uint32_t s1 = 0, s2 = 0;

		for (size_t i = 0; i < len; i++) {
			s1 += p[i] + RDELTA_RS_OFFSET;
			s2 += s1;
		}
		w->a = s1;
		w->b = s2;
	}
	w->count = (uint32_t)len;
}

void rdelta_strong(const struct rdelta_sigidx *s, const uint8_t *p, size_t len,
		   uint8_t out[RDELTA_STRONG_LEN_MAX])
{
	if (s->md4)
		rdelta_md4(p, len, out);
	else
		rdelta_b2(p, len, out);
}

/* One thread's share of a signature: blocks [b0, b1). */
struct sig_work {
	int fd;
	uint64_t size;
	uint32_t block_len;
	uint32_t strong_len;
	bool rabinkarp, md4;
	uint64_t b0, b1;
	uint8_t *rec; /* the whole signature body: (4 + strong_len) per block */
	int err;
	pthread_t tid;
};

/* Sums of the n blocks at buf (the last may be short: total bytes len). */
static void sig_sum_blocks(struct sig_work *w, const uint8_t *buf, size_t len, uint8_t *rec)
{
	const size_t bl = w->block_len, rl = 4 + (size_t)w->strong_len;
	size_t n = DIV_ROUND_UP(len, bl), full = len / bl;
	uint8_t out[RDELTA_B2_LANES][RDELTA_B2_LEN];
	const uint8_t *msg[RDELTA_B2_LANES];
	struct rdelta_weak weak;

	for (size_t i = 0; i < n; i++) {
		size_t blen = MIN(bl, len - i * bl);

		rdelta_weak_init(&weak, w->rabinkarp, buf + i * bl, blen);
		rdelta_put_be32(rec + i * rl, rdelta_weak_digest(&weak, w->rabinkarp));
	}
	for (size_t i = 0; i < n;) {
		unsigned lanes = 1;

		if (w->md4) {
			rdelta_md4(buf + i * bl, MIN(bl, len - i * bl), out[0]);
		} else if (i < full) {
			lanes = (unsigned)MIN((size_t)RDELTA_B2_LANES, full - i);
			for (unsigned l = 0; l < lanes; l++)
				msg[l] = buf + (i + l) * bl;
			rdelta_b2_lanes(msg, bl, lanes, out);
		} else {
			rdelta_b2(buf + i * bl, len - i * bl, out[0]);
		}
		for (unsigned l = 0; l < lanes; l++)
			memcpy(rec + (i + l) * rl + 4, out[l], w->strong_len);
		i += lanes;
	}
}

static void *sig_worker(void *arg)
{
	struct sig_work *w = arg;
	const size_t bl = w->block_len;
	size_t per = MAX((size_t)1, (size_t)(RDELTA_IO_BUF * 4) / bl), cap = per * bl;
	_cleanup_free_ uint8_t *buf = malloc(cap);
	struct io_ctx *io = NULL;
	int r;

	if (!buf) {
		w->err = -ENOMEM;
		return NULL;
	}
	r = io_ctx_new(IO_KIND_AUTO, 1, &io);
	if (r < 0) {
		w->err = r;
		return NULL;
	}
	for (uint64_t b = w->b0; b < w->b1; b += per) {
		uint64_t off = b * bl, end = MIN(w->size, (b + per) * bl);
		long long got = io_pread_full(io, w->fd, buf, (size_t)(end - off), off);

		if (got < 0) {
			w->err = (int)got;
			break;
		}
		if ((uint64_t)got != end - off) {
			w->err = -ENODATA; /* the basis shrank while it was read */
			break;
		}
		sig_sum_blocks(w, buf, (size_t)got, w->rec + b * (4 + w->strong_len));
	}
	io_ctx_free(io);
	return NULL;
}

/* Sums of every block of the size bytes of fd, on every CPU. */
static int sig_compute(int fd, uint64_t size, const struct rdelta_sig_params *p, uint8_t *rec)
{
	uint64_t blocks = DIV_ROUND_UP(size, p->block_len);
	unsigned n = rdelta_threads(blocks / 64 + 1);
	struct sig_work w[64];
	int r = 0;

	for (unsigned t = 0; t < n; t++) {
		w[t] = (struct sig_work){
			.fd = fd,
			.size = size,
			.block_len = p->block_len,
			.strong_len = (uint32_t)p->strong_len,
			.rabinkarp = p->rollsum == RDELTA_ROLLSUM_RABINKARP,
			.md4 = p->hash == RDELTA_HASH_MD4,
			.b0 = blocks * t / n,
			.b1 = blocks * (t + 1) / n,
			.rec = rec,
		};
	}
	for (unsigned t = 1; t < n; t++) {
		int e = pthread_create(&w[t].tid, NULL, sig_worker, &w[t]);

		if (e) {
			/* Do this share on the calling thread instead. */
			w[t].tid = 0;
			sig_worker(&w[t]);
		}
	}
	sig_worker(&w[0]);
	for (unsigned t = 1; t < n; t++)
		if (w[t].tid)
			pthread_join(w[t].tid, NULL);
	for (unsigned t = 0; t < n && !r; t++)
		r = w[t].err;
	return r;
}

uint32_t rdelta_sig_magic(const struct rdelta_sig_params *p)
{
	bool md4 = p->hash == RDELTA_HASH_MD4;

	if (p->rollsum == RDELTA_ROLLSUM_RSYNC)
		return md4 ? RDELTA_MD4_SIG_MAGIC : RDELTA_BLAKE2_SIG_MAGIC;
	return md4 ? RDELTA_RK_MD4_SIG_MAGIC : RDELTA_RK_BLAKE2_SIG_MAGIC;
}

int rdelta_fast_signature(int fd, uint64_t size, const struct rdelta_sig_params *p, int sig_fd,
			  struct rdelta_stats *st)
{
	uint64_t blocks = DIV_ROUND_UP(size, p->block_len);
	size_t rl = 4 + (size_t)p->strong_len;
	_cleanup_free_ uint8_t *sig = NULL;
	size_t len;
	int r;

	if (blocks > RDELTA_SIG_BLOCKS_MAX)
		return -EFBIG;
	len = RDELTA_HEADER_LEN + (size_t)blocks * rl;
	sig = malloc(len);
	if (!sig)
		return -ENOMEM;
	rdelta_put_be32(sig, rdelta_sig_magic(p));
	rdelta_put_be32(sig + 4, p->block_len);
	rdelta_put_be32(sig + 8, (uint32_t)p->strong_len);
	r = sig_compute(fd, size, p, sig + RDELTA_HEADER_LEN);
	if (r < 0)
		return r;
	r = fd_write_all(sig_fd, sig, len);
	if (r < 0)
		return r;
	st->sig_blocks = blocks;
	st->block_len = p->block_len;
	st->in_bytes = size;
	st->out_bytes = len;
	return 0;
}

void rdelta_sigidx_free(struct rdelta_sigidx *s)
{
	if (!s)
		return;
	free(s->weak);
	free(s->strong);
	free(s->slot);
	free(s->filter);
	free(s);
}

DEFINE_FREE_FUNC(struct rdelta_sigidx, rdelta_sigidx_free)

static int sig_header(const uint8_t *buf, size_t len, struct rdelta_sigidx *s)
{
	uint32_t max;

	if (len < RDELTA_HEADER_LEN)
		return len >= 4 && rdelta_sig_magic_known(rdelta_be32(buf)) ? -ENODATA
		       : len < 4 ? -ENODATA : -EBADMSG;
	s->magic = rdelta_be32(buf);
	s->block_len = rdelta_be32(buf + 4);
	s->strong_len = rdelta_be32(buf + 8);
	if (!rdelta_sig_magic_known(s->magic))
		return -EBADMSG;
	s->md4 = s->magic == RDELTA_MD4_SIG_MAGIC || s->magic == RDELTA_RK_MD4_SIG_MAGIC;
	s->rabinkarp = s->magic == RDELTA_RK_MD4_SIG_MAGIC || s->magic == RDELTA_RK_BLAKE2_SIG_MAGIC;
	max = s->md4 ? 16 : RDELTA_B2_LEN;
	if (s->block_len == 0 || s->block_len > RDELTA_BLOCK_LEN_MAX || s->strong_len == 0 ||
	    s->strong_len > max)
		return -EILSEQ;
	return 0;
}

bool rdelta_sig_magic_known(uint32_t magic)
{
	return magic == RDELTA_MD4_SIG_MAGIC || magic == RDELTA_BLAKE2_SIG_MAGIC ||
	       magic == RDELTA_RK_MD4_SIG_MAGIC || magic == RDELTA_RK_BLAKE2_SIG_MAGIC;
}

/* Order of block indices by (weak, strong), to keep one of each in the
 * table. */
static int by_sums(const void *a, const void *b, void *arg)
{
	const struct rdelta_sigidx *sort_sig = arg;
	uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
	uint32_t wi = sort_sig->weak[i], wj = sort_sig->weak[j];
	int c;

	if (wi != wj)
		return wi < wj ? -1 : 1;
	c = memcmp(sort_sig->strong + (size_t)i * sort_sig->strong_len,
		   sort_sig->strong + (size_t)j * sort_sig->strong_len, sort_sig->strong_len);
	if (c)
		return c;
	return i < j ? -1 : i > j;
}

static int sig_index(struct rdelta_sigidx *s)
{
	_cleanup_free_ uint32_t *order = NULL;
	uint64_t slots = 256;

	while (slots < 2 * s->blocks)
		slots *= 2;
	s->bits = (unsigned)__builtin_ctzll(slots);
	s->mask = (uint32_t)(slots - 1);
	s->fbits = RDELTA_FILTER_FBITS_MIN;
	while (s->fbits < RDELTA_FILTER_FBITS_MAX &&
	       (32ULL << s->fbits) < s->blocks * RDELTA_FILTER_BITS_PER_BLOCK)
		s->fbits++;
	s->slot = calloc(slots, sizeof(*s->slot));
	s->filter = calloc((size_t)1 << s->fbits, sizeof(*s->filter));
	order = malloc(s->blocks * sizeof(*order) + 1);
	if (!s->slot || !s->filter || !order)
		return -ENOMEM;
	for (uint64_t i = 0; i < s->blocks; i++)
		order[i] = (uint32_t)i;
	qsort_r(order, s->blocks, sizeof(*order), by_sums, s);
	for (uint64_t k = 0; k < s->blocks; k++) {
		uint32_t i = order[k], h;

		if (k && s->weak[order[k - 1]] == s->weak[i] &&
		    !memcmp(s->strong + (size_t)order[k - 1] * s->strong_len,
			    s->strong + (size_t)i * s->strong_len, s->strong_len))
			continue; /* the same block again: the first one serves */
		h = rdelta_sigidx_hash(s, s->weak[i]);
		while (s->slot[h])
			h = (h + 1) & s->mask;
		s->slot[h] = i + 1;
		s->filter[rdelta_filter_word(s->weak[i], s->fbits)] |= rdelta_filter_bits(s->weak[i]);
	}
	return 0;
}

int rdelta_sigidx_parse(const uint8_t *buf, size_t len, struct rdelta_sigidx **ret)
{
	_cleanup_(rdelta_sigidx_freep) struct rdelta_sigidx *s = calloc(1, sizeof(*s));
	size_t rl;
	int r;

	if (!s)
		return -ENOMEM;
	r = sig_header(buf, len, s);
	if (r < 0)
		return r;
	rl = 4 + (size_t)s->strong_len;
	if ((len - RDELTA_HEADER_LEN) % rl)
		return -ENODATA;
	s->blocks = (len - RDELTA_HEADER_LEN) / rl;
	if (s->blocks > RDELTA_SIG_BLOCKS_MAX)
		return -EFBIG;
	s->weak = malloc(s->blocks * sizeof(*s->weak) + 1);
	s->strong = malloc(s->blocks * s->strong_len + 1);
	if (!s->weak || !s->strong)
		return -ENOMEM;
	for (uint64_t i = 0; i < s->blocks; i++) {
		const uint8_t *p = buf + RDELTA_HEADER_LEN + i * rl;

		s->weak[i] = rdelta_be32(p);
		memcpy(s->strong + i * s->strong_len, p + 4, s->strong_len);
	}
	r = sig_index(s);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(s);
	return 0;
}
