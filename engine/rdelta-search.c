/* Deltas in librsync's format, computed by the engine: the new file is
 * split into ranges (up to eight per CPU) that one thread per CPU takes in
 * turn and searches (rolling weak sum, sixteen positions at a time where
 * the CPU has AVX-512, a filter and a hash table over the signature's weak
 * sums, the strong sum to confirm), then the ranges' matches are joined at the
 * boundaries exactly as one sequential search would have found them, and
 * the commands are encoded.
 *
 * The search is greedy and memoryless, as librsync's: at a position it
 * either finds a block (and jumps past it) or moves one byte. So a range's
 * result is valid from any position that range's search also visited; at
 * a boundary where the previous range's last match ends inside one of the
 * next range's matches, the calling thread searches again from there until
 * the two agree (a few blocks at most in practice). Blocks that follow the
 * previous match in the basis are tried first and in batches of eight
 * (their BLAKE2 sums side by side), so unchanged data runs as one COPY. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "resync/failpoint.h"
#include "resync/fileio.h"
#include "resync/io.h"
#include "resync/macro.h"

#include "rdelta-int.h"

#define NO_BLOCK UINT64_MAX
/* A mapped new file is read ahead by this much. */
#define MAP_AHEAD ((uint64_t)8 << 20)

struct match {
	uint64_t pos; /* in the new file */
	uint64_t src; /* in the basis */
	uint64_t len;
};

struct mvec {
	struct match *v;
	size_t n, cap;
};

static int mvec_push(struct mvec *m, uint64_t pos, uint64_t src, uint64_t len)
{
	if (m->n == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 1024;
		struct match *v = realloc(m->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		m->v = v;
		m->cap = cap;
	}
	m->v[m->n++] = (struct match){pos, src, len};
	return 0;
}

struct scanner {
	const struct rdelta_sigidx *s;
	int fd;
	uint64_t size;
	struct io_ctx *io;
	uint8_t *buf; /* holds [base, base + len) of the new file */
	size_t cap, len;
	uint64_t base;
	/* Or the whole new file mapped (base 0, buf unused): len is then how
	 * far the kernel was asked to read ahead. */
	const uint8_t *map;
	struct mvec *out;
	uint64_t false_matches;
	/* The window at pos, when valid. */
	struct rdelta_weak weak;
	bool valid;
	uint64_t hint; /* the block after the last match, or NO_BLOCK */
	rdelta_rk_roll_fn roll;
};

static int scanner_init(struct scanner *sc, const struct rdelta_sigidx *s, int fd, uint64_t size,
			const uint8_t *map, struct mvec *out)
{
	*sc = (struct scanner){.s = s,
			       .fd = fd,
			       .size = size,
			       .map = map,
			       .out = out,
			       .hint = NO_BLOCK,
			       .roll = rdelta_rk_roll_pick()};
	if (map) {
		sc->cap = SIZE_MAX;
		return 0;
	}
	sc->cap = MAX((size_t)RDELTA_IO_BUF * 4, (size_t)s->block_len * 2 + 1);
	sc->buf = malloc(sc->cap);
	if (!sc->buf)
		return -ENOMEM;
	/* On failure sc->io stays NULL: scanner_release() is still right. */
	return io_ctx_new(IO_KIND_AUTO, 1, &sc->io);
}

static void scanner_release(struct scanner *sc)
{
	io_ctx_free(sc->io);
	free(sc->buf);
}

/* A mapped file: ask the kernel to read the stretch after [p, p + need)
 * while this one is searched (page cache warm: a cheap lookup). */
static void scanner_ahead(struct scanner *sc, uint64_t p, size_t need)
{
	uint64_t page = (uint64_t)getpagesize();
	uint64_t from = MIN(sc->size, p + need + MAP_AHEAD) / page * page;

	sc->len = (size_t)MIN(sc->size, from + MAP_AHEAD);
	if (sc->len > from)
		(void)madvise((void *)(uintptr_t)(sc->map + from), sc->len - from, MADV_WILLNEED);
}

/* Make [p, p + need) readable in the buffer (need is cut at end of file). */
static int scanner_fill(struct scanner *sc, uint64_t p, size_t need)
{
	uint64_t want;
	long long got;

	need = (size_t)MIN((uint64_t)need, sc->size - p);
	if (p >= sc->base && p + need <= sc->base + sc->len)
		return 0;
	if (sc->map) {
		scanner_ahead(sc, p, need);
		return 0;
	}
	if (p >= sc->base && p < sc->base + sc->len) {
		size_t keep = (size_t)(sc->base + sc->len - p);

		memmove(sc->buf, sc->buf + (p - sc->base), keep);
		sc->len = keep;
	} else {
		sc->len = 0;
	}
	sc->base = p;
	want = MIN((uint64_t)sc->cap, sc->size - p) - sc->len;
	got = io_pread_full(sc->io, sc->fd, sc->buf + sc->len, (size_t)want, p + sc->len);
	if (got < 0)
		return (int)got;
	if ((uint64_t)got != want)
		return -ENODATA; /* the new file shrank while it was read */
	sc->len += (size_t)got;
	return 0;
}

static inline const uint8_t *at(const struct scanner *sc, uint64_t p)
{
	return sc->map ? sc->map + p : sc->buf + (p - sc->base);
}

/* Blocks following the last match, tried in a batch: returns how many
 * matched at p, p + B, ... (their matches appended). */
static int scan_batch(struct scanner *sc, uint64_t p, uint64_t *ret_n)
{
	const struct rdelta_sigidx *s = sc->s;
	const uint64_t bl = s->block_len;
	uint8_t sums[RDELTA_B2_LANES][RDELTA_B2_LEN];
	const uint8_t *msg[RDELTA_B2_LANES];
	unsigned n = 0, ok = 0;

	*ret_n = 0;
	if (s->md4)
		return 0;
	while (n < RDELTA_B2_LANES && sc->hint + n < s->blocks && p + (n + 1) * bl <= sc->size &&
	       p + (n + 1) * bl <= sc->base + sc->len) {
		struct rdelta_weak w;

		rdelta_weak_init(&w, s->rabinkarp, at(sc, p + n * bl), bl);
		if (rdelta_weak_digest(&w, s->rabinkarp) != s->weak[sc->hint + n])
			break;
		msg[n] = at(sc, p + n * bl);
		n++;
	}
	if (n < 2)
		return 0;
	rdelta_b2_lanes(msg, bl, n, sums);
	while (ok < n && !memcmp(sums[ok], s->strong + (sc->hint + ok) * s->strong_len,
				 s->strong_len)) {
		int r = mvec_push(sc->out, p + ok * bl, (sc->hint + ok) * bl, bl);

		if (r < 0)
			return r;
		ok++;
	}
	sc->hint += ok;
	*ret_n = ok;
	return 0;
}

/* The block matching the window [p, p + w) with weak sum d, or NO_BLOCK. */
static uint64_t scan_find(struct scanner *sc, uint64_t p, size_t w, uint32_t d)
{
	const struct rdelta_sigidx *s = sc->s;
	uint8_t sum[RDELTA_STRONG_LEN_MAX];
	bool have = false;
	uint32_t h;

	if (sc->hint < s->blocks && s->weak[sc->hint] == d) {
		rdelta_strong(s, at(sc, p), w, sum);
		have = true;
		if (!memcmp(sum, s->strong + sc->hint * s->strong_len, s->strong_len))
			return sc->hint;
	}
	if (!rdelta_sigidx_maybe(s, d))
		return NO_BLOCK;
	for (h = rdelta_sigidx_hash(s, d); s->slot[h]; h = (h + 1) & s->mask) {
		uint64_t i = s->slot[h] - 1;

		if (s->weak[i] != d)
			continue;
		if (!have) {
			rdelta_strong(s, at(sc, p), w, sum);
			have = true;
		}
		if (!memcmp(sum, s->strong + i * s->strong_len, s->strong_len))
			return i;
		sc->false_matches++;
	}
	return NO_BLOCK;
}

/* A whole window at p whose weak sum d is some block's: when the blocks
 * after that one follow in NEW too, confirm them all in one batch instead
 * of hashing this window alone. The candidate is the one scan_find() would
 * try first (the hinted block, else the table's first with this weak
 * sum); when the batch does not confirm it, scan_find() decides as
 * always. Returns how many blocks matched (0: none, nothing changed). */
static int scan_lookahead(struct scanner *sc, uint64_t p, uint32_t d, uint64_t *ret_n)
{
	const struct rdelta_sigidx *s = sc->s;
	uint64_t cand = NO_BLOCK, hint = sc->hint;
	int r;

	*ret_n = 0;
	if (hint < s->blocks && s->weak[hint] == d) {
		cand = hint;
	} else if (rdelta_sigidx_maybe(s, d)) {
		for (uint32_t h = rdelta_sigidx_hash(s, d); s->slot[h]; h = (h + 1) & s->mask)
			if (s->weak[s->slot[h] - 1] == d) {
				cand = s->slot[h] - 1;
				break;
			}
	}
	if (cand == NO_BLOCK)
		return 0;
	r = scanner_fill(sc, p, MIN((size_t)RDELTA_B2_LANES * s->block_len + 1, sc->cap));
	if (r < 0)
		return r;
	sc->hint = cand;
	r = scan_batch(sc, p, ret_n);
	if (r >= 0 && *ret_n == 0)
		sc->hint = hint;
	return r;
}

size_t rdelta_rk_roll_base(const uint8_t *w, size_t n, size_t bl, uint32_t *h, uint32_t mbl,
			   const uint32_t *filter, unsigned fbits)
{
	const uint32_t adj = (RDELTA_RK_MULT - 1) * RDELTA_RK_SEED;
	uint32_t a = *h;
	size_t j = 0;

	while (j + 1 < n && !rdelta_filter_maybe(filter, fbits, a)) {
		a = a * RDELTA_RK_MULT + w[j + bl] - mbl * (w[j] + adj);
		j++;
	}
	*h = a;
	return j;
}

static rdelta_rk_roll_fn rk_roll;
static pthread_once_t rk_roll_once = PTHREAD_ONCE_INIT;

static void rk_roll_init(void)
{
	rk_roll = rdelta_rk_roll_base;
#if defined(__x86_64__)
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f"))
		rk_roll = rdelta_rk_roll_avx512;
#endif
}

rdelta_rk_roll_fn rdelta_rk_roll_pick(void)
{
	pthread_once(&rk_roll_once, rk_roll_init);
	return rk_roll;
}

/* Roll over bytes that cannot match (the filter says no) while the window
 * is whole and in the buffer; stops before stop. The state lives in locals
 * here: kept in *sc, each step waited on a store and a reload. */
static uint64_t scan_roll(struct scanner *sc, uint64_t p, uint64_t stop)
{
	const struct rdelta_sigidx *s = sc->s;
	const uint64_t bl = s->block_len;
	uint64_t lim;

	if (sc->size < bl || sc->base + sc->len < bl)
		return p;
	lim = MIN(stop, MIN(sc->size, sc->base + sc->len) - bl);
	if (p + 1 >= lim)
		return p;
	if (s->rabinkarp) {
		uint32_t h = sc->weak.a;

		p += sc->roll(at(sc, p), (size_t)(lim - p), (size_t)bl, &h, sc->weak.b, s->filter,
			      s->fbits);
		sc->weak.a = h;
	} else {
		const uint8_t *b = at(sc, p);
		const uint32_t count = sc->weak.count;
		uint32_t a = sc->weak.a, m = sc->weak.b;
		size_t j = 0, n = (size_t)(lim - p);

		while (j + 1 < n &&
		       !rdelta_filter_maybe(s->filter, s->fbits, (m << 16) | (a & 0xffff))) {
			a += (uint32_t)b[j + bl] - b[j];
			m += a - count * (b[j] + RDELTA_RS_OFFSET);
			j++;
		}
		sc->weak.a = a;
		sc->weak.b = m;
		p += j;
	}
	return p;
}

/* Search the windows starting in [p, stop); returns where the search
 * ended (>= stop: the end of the last match, or stop) in *ret_q. */
static int scan_range(struct scanner *sc, uint64_t p, uint64_t stop, uint64_t *ret_q)
{
	const uint64_t bl = sc->s->block_len;
	int r;

	sc->valid = false;
	while (p < stop) {
		size_t w = (size_t)MIN(bl, sc->size - p);
		uint64_t idx, n;
		uint32_t d;

		if (!sc->valid) {
			r = scanner_fill(sc, p, MIN((size_t)RDELTA_B2_LANES * bl + 1, sc->cap));
			if (r < 0)
				return r;
			if (sc->hint != NO_BLOCK) {
				r = scan_batch(sc, p, &n);
				if (r < 0)
					return r;
				if (n) {
					p += n * bl;
					continue;
				}
			}
			rdelta_weak_init(&sc->weak, sc->s->rabinkarp, at(sc, p), w);
			sc->valid = true;
		} else {
			r = scanner_fill(sc, p, w + 1);
			if (r < 0)
				return r;
			p = scan_roll(sc, p, stop);
			w = (size_t)MIN(bl, sc->size - p);
		}
		d = rdelta_weak_digest(&sc->weak, sc->s->rabinkarp);
		if (w == bl && !sc->s->md4) {
			r = scan_lookahead(sc, p, d, &n);
			if (r < 0)
				return r;
			if (n) {
				p += n * bl;
				sc->valid = false;
				continue;
			}
		}
		idx = scan_find(sc, p, w, d);
		if (idx != NO_BLOCK) {
			r = mvec_push(sc->out, p, idx * bl, w);
			if (r < 0)
				return r;
			p += w;
			sc->valid = false;
			sc->hint = idx + 1;
			continue;
		}
		sc->hint = NO_BLOCK;
		if (p + bl < sc->size) {
			r = scanner_fill(sc, p, w + 1);
			if (r < 0)
				return r;
			rdelta_weak_rotate(&sc->weak, sc->s->rabinkarp, *at(sc, p), *at(sc, p + bl));
		} else {
			rdelta_weak_rollout(&sc->weak, sc->s->rabinkarp, *at(sc, p));
			if (sc->weak.count == 0)
				sc->valid = false;
		}
		p++;
	}
	*ret_q = p;
	return 0;
}

/* A range of the new file, searched by whichever thread takes it. */
struct range_work {
	uint64_t start, stop, q;
	struct mvec m;
};

/* The ranges, taken in turn by the threads: more ranges than threads, so
 * that a thread that gets less of the CPUs (a loaded machine) or ranges
 * with more changed data (slower to search) do not leave the others
 * waiting at the join. */
struct range_pool {
	const struct rdelta_sigidx *s;
	int fd;
	uint64_t size;
	const uint8_t *map;
	struct range_work *w;
	unsigned n;
	atomic_uint next;
	atomic_int err;
	atomic_uint_fast64_t false_matches;
};

static void *range_worker(void *arg)
{
	struct range_pool *pool = arg;
	struct scanner sc;
	unsigned t;
	int r, none = 0;

	r = scanner_init(&sc, pool->s, pool->fd, pool->size, pool->map, NULL);
	while (r >= 0 && !atomic_load(&pool->err) &&
	       (t = atomic_fetch_add(&pool->next, 1)) < pool->n) {
		/* Each range from a fresh start, as the join assumes. */
		sc.out = &pool->w[t].m;
		sc.hint = NO_BLOCK;
		r = scan_range(&sc, pool->w[t].start, pool->w[t].stop, &pool->w[t].q);
	}
	atomic_fetch_add(&pool->false_matches, sc.false_matches);
	scanner_release(&sc);
	if (r < 0)
		atomic_compare_exchange_strong(&pool->err, &none, r);
	return NULL;
}

/* The first match of m that ends after q. */
static size_t first_after(const struct mvec *m, uint64_t q)
{
	size_t lo = 0, hi = m->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (m->v[mid].pos + m->v[mid].len <= q)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Append range w's matches to all, which ends at *q (>= w's start), as a
 * sequential search would have continued from *q. */
static int join_range(struct scanner *sc, struct mvec *all, uint64_t *q, const struct range_work *w)
{
	while (*q < w->q) {
		size_t k = first_after(&w->m, *q);
		const struct match *m;
		int r;

		if (k == w->m.n) {
			/* *q lies in w's trailing misses: w saw the same. */
			*q = w->q;
			return 0;
		}
		m = &w->m.v[k];
		if (m->pos >= *q) {
			/* *q is a position w's search visited too. */
			for (; k < w->m.n; k++) {
				r = mvec_push(all, w->m.v[k].pos, w->m.v[k].src, w->m.v[k].len);
				if (r < 0)
					return r;
			}
			*q = w->q;
			return 0;
		}
		/* *q is inside one of w's matches: search on from *q past it. */
		sc->hint = NO_BLOCK;
		r = scan_range(sc, *q, m->pos + m->len, q);
		if (r < 0)
			return r;
	}
	return 0;
}

static int search_all(const struct rdelta_sigidx *s, int fd, uint64_t size, const uint8_t *map,
		      struct mvec *all, uint64_t *ret_false)
{
	uint64_t units = size / ((uint64_t)RDELTA_IO_BUF * 4 + s->block_len * 8ULL);
	unsigned nt = rdelta_threads(units), n = nt == 1 ? 1 : (unsigned)MIN(units, nt * 8ULL);
	const char *force = getenv("RESYNC_RDELTA_RANGES");
	struct range_work w[64];
	struct range_pool pool = {.s = s, .fd = fd, .size = size, .map = map, .w = w};
	pthread_t tid[64];
	bool started[64] = {false};
	struct scanner sc;
	uint64_t q = 0;
	int r;

	/* Tests: as many ranges as asked, to exercise the joins on small files
	 * (the delta must come out the same). */
	if (force && atoi(force) > 0)
		n = (unsigned)MIN(atoi(force), 64);
	n = MIN(MAX(n, 1U), 64U);
	nt = MIN(nt, n);
	pool.n = n;
	for (unsigned t = 0; t < n; t++)
		w[t] = (struct range_work){.start = size * t / n, .stop = size * (t + 1) / n};
	/* A thread that cannot be started leaves its share to the others. */
	for (unsigned t = 1; t < nt; t++)
		started[t] = !pthread_create(&tid[t], NULL, range_worker, &pool);
	range_worker(&pool);
	for (unsigned t = 1; t < nt; t++)
		if (started[t])
			pthread_join(tid[t], NULL);
	r = atomic_load(&pool.err);
	if (r >= 0) {
		r = scanner_init(&sc, s, fd, size, map, all);
		if (r < 0)
			scanner_release(&sc);
	}
	if (r >= 0) {
		*all = w[0].m;
		w[0].m = (struct mvec){0};
		q = w[0].q;
		for (unsigned t = 1; t < n && r >= 0; t++)
			r = join_range(&sc, all, &q, &w[t]);
		*ret_false = sc.false_matches + atomic_load(&pool.false_matches);
		scanner_release(&sc);
	}
	for (unsigned t = 0; t < n; t++)
		free(w[t].m.v);
	if (r >= 0 && q != size)
		r = -ENOTRECOVERABLE; /* the joined search must cover the file */
	return r;
}

/* The encoder: commands into a buffer written out when full. */
struct enc {
	int fd;
	uint8_t *buf;
	size_t len, cap;
	struct rdelta_stats *st;
	struct io_ctx *io;
	int src_fd;
	const uint8_t *map; /* the new file, or NULL: read from src_fd */
};

static unsigned int_len(uint64_t v)
{
	return v <= 0xff ? 1 : v <= 0xffff ? 2 : v <= 0xffffffffULL ? 4 : 8;
}

static uint8_t *put_int(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
	return p + n;
}

static int enc_flush(struct enc *e, size_t room)
{
	int r;

	if (e->len + room <= e->cap)
		return 0;
	r = fd_write_all(e->fd, e->buf, e->len);
	e->st->out_bytes += e->len;
	e->len = 0;
	return r;
}

static int enc_copy(struct enc *e, uint64_t src, uint64_t len)
{
	unsigned ps = int_len(src), ls = int_len(len);
	uint8_t *p;
	int r = enc_flush(e, 17);

	if (r < 0)
		return r;
	p = e->buf + e->len;
	*p++ = (uint8_t)(RDELTA_OP_COPY_N1_N1 + 4 * (__builtin_ctz(ps)) + __builtin_ctz(ls));
	p = put_int(p, src, ps);
	p = put_int(p, len, ls);
	e->st->copy_cmds++;
	e->st->copy_bytes += len;
	e->st->copy_cmdbytes += (uint64_t)(p - (e->buf + e->len));
	e->len = (size_t)(p - e->buf);
	return 0;
}

/* Literal bytes [off, off + len) of the new file. */
static int enc_literal(struct enc *e, uint64_t off, uint64_t len)
{
	while (len) {
		size_t n = (size_t)MIN(len, (uint64_t)RDELTA_LITERAL_MAX), hl;
		uint8_t *p;
		long long got;
		int r = enc_flush(e, n + 9);

		if (r < 0)
			return r;
		p = e->buf + e->len;
		if (n <= 64) {
			*p++ = (uint8_t)n;
		} else {
			unsigned ls = int_len(n);

			*p++ = (uint8_t)(RDELTA_OP_LITERAL_N1 + __builtin_ctz(ls));
			p = put_int(p, n, ls);
		}
		hl = (size_t)(p - (e->buf + e->len));
		if (e->map) {
			memcpy(p, e->map + off, n);
			got = (long long)n;
		} else {
			got = io_pread_full(e->io, e->src_fd, p, n, off);
		}
		if (got < 0)
			return (int)got;
		if ((size_t)got != n)
			return -ENODATA;
		e->len += hl + n;
		e->st->lit_cmds++;
		e->st->lit_bytes += n;
		e->st->lit_cmdbytes += hl;
		off += n;
		len -= n;
	}
	return 0;
}

static int encode(struct enc *e, const struct mvec *m, uint64_t size)
{
	uint64_t pos = 0;
	int r;

	for (size_t i = 0; i < m->n;) {
		uint64_t src = m->v[i].src, len = m->v[i].len;

		if (m->v[i].pos > pos) {
			r = enc_literal(e, pos, m->v[i].pos - pos);
			if (r < 0)
				return r;
		}
		/* One COPY for matches that continue each other. */
		for (i++; i < m->n && m->v[i].pos == m->v[i - 1].pos + m->v[i - 1].len &&
			  m->v[i].src == src + len;
		     i++)
			len += m->v[i].len;
		r = enc_copy(e, src, len);
		if (r < 0)
			return r;
		pos = m->v[i - 1].pos + m->v[i - 1].len;
	}
	if (size > pos) {
		r = enc_literal(e, pos, size - pos);
		if (r < 0)
			return r;
	}
	r = enc_flush(e, e->cap);
	if (r < 0)
		return r;
	e->buf[0] = RDELTA_OP_END;
	r = fd_write_all(e->fd, e->buf, 1);
	e->st->out_bytes++;
	return r;
}

/* The new file mapped for the search, or NULL: then it is read. Mapped,
 * its bytes are hashed where the page cache holds them instead of being
 * copied into buffers first (that copy was a quarter of the delta's CPU
 * time at 1 GiB). Not behind the fault backend, whose faults must reach
 * every read. A file that shrinks while mapped raises SIGBUS: callers
 * that take files from users handle it (resync-diff does). */
static const uint8_t *map_new(int fd, uint64_t size)
{
	void *m;

	if (size == 0 || size > SIZE_MAX || io_kind_resolve(IO_KIND_AUTO) == IO_KIND_FAULT)
		return NULL;
	m = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		return NULL;
	/* Failpoint for the tests: NEW shrinks under the search. */
	if (failpoint_named("rdelta-delta-shrink")) {
		char path[64];

		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		(void)truncate(path, (off_t)(size / 2));
	}
	return m;
}

int rdelta_fast_delta(const struct rdelta_sigidx *s, int fd, uint64_t size, int delta_fd,
		      struct rdelta_stats *st)
{
	struct mvec all = {0};
	struct enc e = {.fd = delta_fd, .st = st, .src_fd = fd, .map = map_new(fd, size)};
	uint64_t false_matches = 0;
	int r;

	r = search_all(s, fd, size, e.map, &all, &false_matches);
	if (r >= 0) {
		e.cap = (size_t)RDELTA_LITERAL_MAX * 2;
		e.buf = malloc(e.cap);
		r = e.buf ? io_ctx_new(IO_KIND_AUTO, 1, &e.io) : -ENOMEM;
	}
	if (r >= 0) {
		rdelta_put_be32(e.buf, RDELTA_DELTA_MAGIC);
		e.len = 4;
		r = encode(&e, &all, size);
	}
	st->false_matches = false_matches;
	st->in_bytes = size;
	io_ctx_free(e.io);
	free(e.buf);
	free(all.v);
	if (e.map)
		munmap((void *)(uintptr_t)e.map, (size_t)size);
	return r;
}
