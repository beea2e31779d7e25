/* Parallel block compare, sync and hashing.
 *
 * The volume is cut into work units (RESYNC_UNIT) handed out through an
 * atomic counter, so both cores stay busy whatever the divergence pattern.
 * Each worker reads its unit in RESYNC_CHUNK pieces through its own I/O
 * context, keeping BLOCKCMP_PIPE chunks in flight so that the next reads
 * are queued while the current one is compared. Differing pages are written
 * straight from the source buffer: a sync reads each volume once and never
 * copies data twice. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "resync/blockcmp.h"
#include "resync/clock.h"
#include "resync/failpoint.h"
#include "resync/limits.h"
#include "resync/macro.h"

#define BLOCKCMP_PIPE 2

struct slot {
	uint64_t off;  /* chunk offset in the volume */
	size_t len;    /* bytes of the source chunk */
	size_t b_len;  /* bytes to read from dst (less past its end) */
	unsigned pending;
	int err;
	enum blockcmp_where err_at;
	struct io_req ra, rb;
	unsigned char *a, *b;
};

struct job {
	struct volume *src, *dst; /* dst is NULL when hashing one volume */
	const struct blockcmp_opts *opts;
	uint32_t bs;
	uint64_t base;	 /* first byte (hashing a sub-range) */
	uint64_t end;	 /* one past the last byte */
	uint64_t b_size; /* readable bytes of dst */
	uint64_t nunits;
	struct hash128 *hashes;
	/* Hashing from a read-only mapping of [base, end) instead of reads:
	 * no copy out of the page cache (NULL: read). */
	const unsigned char *map;
	/* The mapping's page tables are dropped after each unit (a large
	 * volume: see BLOCKCMP_MAP_KEEP_MAX). */
	bool map_drop;

	atomic_uint_fast64_t next_unit;
	atomic_bool stop;
	atomic_uint_fast64_t bytes_compared, bytes_read, blocks_differing, bytes_differing;
	atomic_uint_fast64_t bytes_written, bytes_punched;

	pthread_mutex_t lock; /* protects what follows */
	int err;
	uint64_t err_off;
	enum blockcmp_where err_at;
	unsigned char *unit_done;
	struct rangelist ranges;
	uint64_t progress_done;
};

struct worker {
	struct job *job;
	pthread_t thread;
	struct io_ctx *rio, *wio;
	struct slot slots[BLOCKCMP_PIPE];
	struct rangelist ranges;
	int err;
	/* A pending write run in the current chunk: [run_start, run_end). */
	size_t run_start, run_end;
	bool run_open;
	bool punch_ok;
	unsigned char *chunk; /* hashing by reads where a mapping cannot serve */
	int nice;	      /* raised by this much on its thread (opts->nice) */
	bool started;	      /* runs on a thread of its own */
};

static void job_fail(struct job *job, int err, uint64_t off, enum blockcmp_where at)
{
	pthread_mutex_lock(&job->lock);
	if (!job->err || off < job->err_off) {
		job->err = err;
		job->err_off = off;
		job->err_at = at;
	}
	pthread_mutex_unlock(&job->lock);
	atomic_store(&job->stop, true);
}

static bool is_zero(const unsigned char *p, size_t len)
{
	return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

/* Write source bytes [start, end) of the slot's chunk into dst. */
static int worker_write(struct worker *w, struct slot *s, size_t start, size_t end)
{
	struct job *job = w->job;
	size_t len = end - start;
	uint64_t off = s->off + start;
	long long n;

	if (!job->opts->write) {
		atomic_fetch_add(&job->bytes_written, len);
		return 0;
	}
	if (job->opts->punch_zeros && w->punch_ok && len >= RESYNC_BLOCK_DEFAULT &&
	    is_zero(s->a + start, len)) {
		int r = volume_punch(job->dst, off, len);

		if (r >= 0) {
			atomic_fetch_add(&job->bytes_written, len);
			atomic_fetch_add(&job->bytes_punched, len);
			return 0;
		}
		/* Not supported here: write the zeros instead, and stop
		 * trying. */
		w->punch_ok = false;
	}
	n = io_pwrite_full(w->wio, volume_fd(job->dst), s->a + start, len, off);
	if (n < 0)
		return (int)n;
	atomic_fetch_add(&job->bytes_written, len);
	return 0;
}

static int worker_run_flush(struct worker *w, struct slot *s)
{
	int r = 0;

	if (w->run_open)
		r = worker_write(w, s, w->run_start, w->run_end);
	w->run_open = false;
	return r;
}

static int worker_compare_chunk(struct worker *w, struct slot *s)
{
	struct job *job = w->job;
	enum blockcmp_mode mode = job->opts->mode;
	uint32_t bs = job->bs;
	uint64_t diff_blocks = 0, diff_bytes = 0;
	int r;

	if (mode == BLOCKCMP_READ_ONLY)
		return 0;

	w->run_open = false;
	for (size_t o = 0; o < s->len; o += bs) {
		size_t l = MIN((size_t)bs, s->len - o);

		if (mode == BLOCKCMP_HASH) {
			struct hash128 ha = hash_block(s->a + o, l, job->opts->seed);
			struct hash128 hb = hash_block(s->b + o, l, job->opts->seed);

			if (hash128_equal(&ha, &hb))
				continue;
		} else if (memcmp(s->a + o, s->b + o, l) == 0) {
			continue;
		}

		diff_blocks++;
		diff_bytes += l;
		r = rangelist_add(&w->ranges, s->off + o, l);
		if (r < 0)
			return r;

		/* Rewrite only the pages that differ, merged into runs. */
		for (size_t p = o; p < o + l; p += RESYNC_PAGE) {
			size_t pl = MIN((size_t)RESYNC_PAGE, o + l - p);

			if (memcmp(s->a + p, s->b + p, pl) == 0) {
				r = worker_run_flush(w, s);
				if (r < 0)
					return r;
				continue;
			}
			if (w->run_open && w->run_end == p) {
				w->run_end = p + pl;
			} else {
				r = worker_run_flush(w, s);
				if (r < 0)
					return r;
				w->run_start = p;
				w->run_end = p + pl;
				w->run_open = true;
			}
		}
	}
	r = worker_run_flush(w, s);
	if (r < 0)
		return r;
	atomic_fetch_add(&job->blocks_differing, diff_blocks);
	atomic_fetch_add(&job->bytes_differing, diff_bytes);
	return 0;
}

/* The hashes of len bytes at p, volume offset off (a multiple of the
 * block size, and of extra_block when extra hashes are asked): one per
 * block, and one per extra_block with seed 0, both from one pass over
 * each extra_block's bytes (hash_span()). */
static void job_hash_span(struct job *job, const unsigned char *p, uint64_t off, size_t len)
{
	const struct blockcmp_opts *o = job->opts;
	uint32_t bs = job->bs;

	if (!o->extra_hashes) {
		for (size_t k = 0; k < len; k += bs)
			job->hashes[(off + k - job->base) / bs] =
				hash_block(p + k, MIN((size_t)bs, len - k), o->seed);
		return;
	}
	for (size_t x = 0; x < len; x += o->extra_block) {
		size_t xl = MIN((size_t)o->extra_block, len - x);

		hash_span(p + x, xl, bs, o->seed, &job->hashes[(off + x - job->base) / bs],
			  &o->extra_hashes[(off + x - job->base) / o->extra_block]);
	}
}

static void worker_hash_chunk(struct worker *w, struct slot *s)
{
	job_hash_span(w->job, s->a, s->off, s->len);
}

static int worker_submit(struct worker *w, struct slot *s, uint64_t off, uint64_t unit_end)
{
	struct job *job = w->job;
	int r;

	s->off = off;
	s->len = (size_t)MIN((uint64_t)RESYNC_CHUNK, unit_end - off);
	s->err = 0;
	s->pending = 0;
	s->ra = (struct io_req){.op = IO_OP_READ,
			       .fd = volume_fd(job->src),
			       .buf = s->a,
			       .len = s->len,
			       .off = off,
			       .user = s};
	r = io_ctx_submit(w->rio, &s->ra);
	if (r < 0)
		return r;
	s->pending++;

	if (!job->dst)
		return 0;
	s->b_len = off >= job->b_size ? 0 : (size_t)MIN((uint64_t)s->len, job->b_size - off);
	if (s->b_len < s->len)
		memset(s->b + s->b_len, 0, s->len - s->b_len);
	if (s->b_len == 0)
		return 0;
	s->rb = (struct io_req){.op = IO_OP_READ,
			       .fd = volume_fd(job->dst),
			       .buf = s->b,
			       .len = s->b_len,
			       .off = off,
			       .user = s};
	r = io_ctx_submit(w->rio, &s->rb);
	if (r < 0)
		return r;
	s->pending++;
	return 0;
}

/* Wait until the slot's reads are complete. */
static int worker_wait_slot(struct worker *w, struct slot *s)
{
	while (s->pending) {
		struct io_req *req;
		struct slot *owner;
		int r = io_ctx_wait(w->rio, &req);

		if (r < 0)
			return r;
		owner = req->user;
		owner->pending--;
		if (owner->err)
			continue;
		if (req->res < 0)
			owner->err = req->res;
		else if (req->done < req->len)
			/* Reads stay below both sizes taken at the start: a
			 * short one means a volume shrank under us, and the
			 * comparison would be meaningless. */
			owner->err = -EIO;
		if (owner->err)
			owner->err_at = req == &owner->ra ? BLOCKCMP_AT_READ_SRC
							   : BLOCKCMP_AT_READ_DST;
	}
	return s->err;
}

static void worker_drain(struct worker *w)
{
	struct io_req *req;

	while (io_ctx_wait(w->rio, &req) >= 0) {
		struct slot *owner = req->user;

		owner->pending--;
	}
}

static void job_unit_done(struct job *job, uint64_t unit)
{
	const struct blockcmp_opts *opts = job->opts;
	uint64_t total = job->end - job->base;

	pthread_mutex_lock(&job->lock);
	job->unit_done[unit] = 1;
	job->progress_done += MIN((uint64_t)RESYNC_UNIT, total - unit * RESYNC_UNIT);
	if (opts->progress && opts->progress(opts->progress_arg, job->progress_done, total)) {
		if (!job->err) {
			job->err = -ECANCELED;
			job->err_off = job->base + unit * RESYNC_UNIT;
			job->err_at = BLOCKCMP_AT_CANCEL;
		}
		atomic_store(&job->stop, true);
	}
	pthread_mutex_unlock(&job->lock);
}

/* Hash a unit of a mapped job with plain reads, a chunk at a time. */
static int worker_unit_read_hash(struct worker *w, uint64_t unit)
{
	struct job *job = w->job;
	uint64_t start = job->base + unit * RESYNC_UNIT;
	uint64_t end = MIN(start + RESYNC_UNIT, job->end);
	int fd = volume_fd(job->src);

	if (!w->chunk && !(w->chunk = malloc(RESYNC_CHUNK))) {
		job_fail(job, -ENOMEM, start, BLOCKCMP_AT_READ_SRC);
		return -ENOMEM;
	}
	/* RESYNC_CHUNK is a multiple of every block size. */
	for (uint64_t c = start; c < end; c += RESYNC_CHUNK) {
		size_t len = (size_t)MIN((uint64_t)RESYNC_CHUNK, end - c);
		int r = fd_pread_full(fd, w->chunk, len, c);

		if (r < 0) {
			job_fail(job, r, c, BLOCKCMP_AT_READ_SRC);
			return r;
		}
		job_hash_span(job, w->chunk, c, len);
	}
	atomic_fetch_add(&job->bytes_read, end - start);
	atomic_fetch_add(&job->bytes_compared, end - start);
	job_unit_done(job, unit);
	return 0;
}

/* Hash a unit straight from the mapping. Its pages are populated first
 * with MADV_POPULATE_READ, which reports a read error as -EIO (touching
 * an unreadable page would raise SIGBUS instead). */
static int worker_unit_mapped(struct worker *w, uint64_t unit)
{
	struct job *job = w->job;
	uint64_t start = job->base + unit * RESYNC_UNIT;
	uint64_t end = MIN(start + RESYNC_UNIT, job->end);
	const unsigned char *p = job->map + (start - job->base);

	if (madvise((void *)p, (size_t)(end - start), MADV_POPULATE_READ) < 0) {
		int r = -errno;

		/* EFAULT: touching a page would raise SIGBUS though a read
		 * can succeed (a hole of a full tmpfs, which a mapping must
		 * allocate): hash this unit by reads instead. */
		if (r == -EFAULT)
			return worker_unit_read_hash(w, unit);
		job_fail(job, r, start, BLOCKCMP_AT_READ_SRC);
		return r;
	}
	job_hash_span(job, p, start, (size_t)(end - start));
	if (job->map_drop)
		(void)madvise((void *)p, (size_t)(end - start), MADV_DONTNEED);
	atomic_fetch_add(&job->bytes_read, end - start);
	atomic_fetch_add(&job->bytes_compared, end - start);
	job_unit_done(job, unit);
	return 0;
}

static int worker_unit(struct worker *w, uint64_t unit)
{
	struct job *job = w->job;
	uint64_t start = job->base + unit * RESYNC_UNIT;
	uint64_t end = MIN(start + RESYNC_UNIT, job->end);
	uint64_t next = start;
	unsigned head = 0, queued = 0;
	int r = 0;

	while (queued < BLOCKCMP_PIPE && next < end) {
		struct slot *s = &w->slots[(head + queued) % BLOCKCMP_PIPE];

		r = worker_submit(w, s, next, end);
		if (r < 0) {
			job_fail(job, r, next, BLOCKCMP_AT_READ_SRC);
			goto fail;
		}
		next += s->len;
		queued++;
	}
	while (queued) {
		struct slot *s = &w->slots[head];

		r = worker_wait_slot(w, s);
		if (r < 0) {
			job_fail(job, r, s->off, s->err_at);
			goto fail;
		}
		atomic_fetch_add(&job->bytes_read, s->len + (job->dst ? s->b_len : 0));
		if (job->hashes) {
			worker_hash_chunk(w, s);
		} else {
			r = worker_compare_chunk(w, s);
			if (r < 0) {
				job_fail(job, r, s->off,
					 r == -ENOMEM ? BLOCKCMP_AT_SETUP : BLOCKCMP_AT_WRITE);
				goto fail;
			}
		}
		atomic_fetch_add(&job->bytes_compared, s->len);
		head = (head + 1) % BLOCKCMP_PIPE;
		queued--;
		if (next < end && !atomic_load(&job->stop)) {
			struct slot *n = &w->slots[(head + queued) % BLOCKCMP_PIPE];

			r = worker_submit(w, n, next, end);
			if (r < 0) {
				job_fail(job, r, next, BLOCKCMP_AT_READ_SRC);
				goto fail;
			}
			next += n->len;
			queued++;
		}
	}
	if (next < end)
		return -ECANCELED; /* stopped by another worker */
	if (w->ranges.n) {
		pthread_mutex_lock(&job->lock);
		r = rangelist_extend(&job->ranges, &w->ranges);
		pthread_mutex_unlock(&job->lock);
		w->ranges.n = 0;
		if (r < 0) {
			job_fail(job, r, start, BLOCKCMP_AT_SETUP);
			return r;
		}
	}
	job_unit_done(job, unit);
	return 0;
fail:
	/* Buffers belong to the ring until their reads complete. */
	worker_drain(w);
	return r;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct job *job = w->job;

	if (w->nice) {
		/* Linux: a thread's own nice value (its tid). Best effort. */
		id_t tid = (id_t)syscall(SYS_gettid);
		int cur;

		errno = 0;
		cur = getpriority(PRIO_PROCESS, tid);
		if (errno == 0)
			(void)setpriority(PRIO_PROCESS, tid, MIN(cur + w->nice, 19));
	}
	while (!atomic_load(&job->stop)) {
		uint64_t unit = atomic_fetch_add(&job->next_unit, 1);

		if (unit >= job->nunits)
			break;
		if ((job->map ? worker_unit_mapped(w, unit) : worker_unit(w, unit)) < 0)
			break;
	}
	return NULL;
}

static int worker_init(struct worker *w, struct job *job)
{
	const struct blockcmp_opts *opts = job->opts;
	int r;

	w->job = job;
	w->punch_ok = true;
	if (job->map)
		return 0;
	r = io_ctx_new(opts->io, 2 * BLOCKCMP_PIPE, &w->rio);
	if (r < 0)
		return r;
	if (opts->write) {
		/* Writes are synchronous and separate from the reads in
		 * flight. Unless asked for io_uring, they use plain pwrite: a
		 * buffered io_uring write at depth 1 is handed to a kernel
		 * worker (10,466 context switches against 188 for a 1 %
		 * sync of 2 GiB, and 20 % more CPU). */
		enum io_kind wk = io_kind_resolve(opts->io);

		r = io_ctx_new(wk == IO_KIND_AUTO ? IO_KIND_SYNC : wk, 1, &w->wio);
		if (r < 0)
			return r;
	}
	for (unsigned i = 0; i < BLOCKCMP_PIPE; i++) {
		struct slot *s = &w->slots[i];

		s->a = aligned_alloc(4096, RESYNC_CHUNK);
		if (!s->a)
			return -ENOMEM;
		if (job->dst) {
			s->b = aligned_alloc(4096, RESYNC_CHUNK);
			if (!s->b)
				return -ENOMEM;
		}
	}
	return 0;
}

static void worker_release(struct worker *w)
{
	io_ctx_free(w->rio);
	io_ctx_free(w->wio);
	free(w->chunk);
	for (unsigned i = 0; i < BLOCKCMP_PIPE; i++) {
		free(w->slots[i].a);
		free(w->slots[i].b);
	}
	rangelist_release(&w->ranges);
}

static unsigned pick_threads(const struct blockcmp_opts *opts, uint64_t nunits)
{
	long n = opts->threads;

	if (n <= 0) {
		n = sysconf(_SC_NPROCESSORS_ONLN);
		if (n <= 0)
			n = 1;
	}
	if (n > RESYNC_THREADS_MAX)
		n = RESYNC_THREADS_MAX;
	if ((uint64_t)n > nunits)
		n = (long)MAX(nunits, 1);
	return (unsigned)n;
}

/* Run the job on n workers: n - 1 threads plus the caller. */
static int job_execute(struct job *job, const char **ret_backend, unsigned *ret_threads)
{
	const struct blockcmp_opts *opts = job->opts;
	unsigned n = pick_threads(opts, job->nunits);
	_cleanup_free_ struct worker *w = calloc(n, sizeof(*w));
	int r = 0;

	if (!w)
		return -ENOMEM;
	job->unit_done = calloc(MAX(job->nunits, 1), 1);
	if (!job->unit_done)
		return -ENOMEM;

	for (unsigned i = 0; i < n; i++) {
		r = worker_init(&w[i], job);
		if (r < 0)
			goto out;
	}
	*ret_backend = job->map ? "mmap" : io_ctx_name(w[0].rio);
	*ret_threads = n;
	/* With a nice value, every worker is a thread of its own: the
	 * caller's thread keeps its priority (raising it back would need a
	 * privilege). */
	for (unsigned i = opts->nice > 0 ? 0 : 1; i < n; i++) {
		w[i].nice = opts->nice > 0 ? opts->nice : 0;
		r = -pthread_create(&w[i].thread, NULL, worker_main, &w[i]);
		if (r < 0) {
			atomic_store(&job->stop, true);
			break;
		}
		w[i].started = true;
	}
	if (opts->nice <= 0)
		worker_main(&w[0]);
	for (unsigned i = 0; i < n; i++)
		if (w[i].started)
			pthread_join(w[i].thread, NULL);
	if (r >= 0)
		r = job->err;
out:
	for (unsigned i = 0; i < n; i++)
		worker_release(&w[i]);
	return r;
}

static void job_release(struct job *job)
{
	pthread_mutex_destroy(&job->lock);
	free(job->unit_done);
	rangelist_release(&job->ranges);
}

static uint64_t job_done_upto(const struct job *job)
{
	uint64_t u = 0;

	while (u < job->nunits && job->unit_done[u])
		u++;
	return MIN(job->base + u * RESYNC_UNIT, job->end);
}

int blockcmp_run(struct volume *src, struct volume *dst, const struct blockcmp_opts *opts,
		 struct rangelist *ret_ranges, struct blockcmp_stats *ret_stats)
{
	struct job job = {.src = src, .dst = dst, .opts = opts};
	struct blockcmp_stats st = {0};
	uint64_t t0 = clock_usec();
	int r;

	job.bs = opts->block_size ? opts->block_size : RESYNC_BLOCK_DEFAULT;
	if (!resync_block_size_valid(job.bs))
		return -EINVAL;
	if (volume_same(src, dst))
		return -ELOOP;
	pthread_mutex_init(&job.lock, NULL);

	st.src_size = volume_size(src);
	st.dst_size_before = volume_size(dst);
	st.failed_at = BLOCKCMP_AT_SETUP;
	if (opts->write) {
		/* Give dst the source's size first: a grown file reads as
		 * zeros, which the compare then treats like any data. */
		r = volume_set_size(dst, st.src_size);
		if (r < 0)
			goto out;
	}
	job.end = st.src_size;
	job.b_size = MIN(volume_size(dst), st.src_size);
	job.nunits = DIV_ROUND_UP(job.end, (uint64_t)RESYNC_UNIT);

	r = job_execute(&job, &st.io_backend, &st.threads);
	if (job.err)
		st.failed_at = job.err_at;
	if (r >= 0 && opts->write && opts->mode != BLOCKCMP_READ_ONLY) {
		st.failed_at = BLOCKCMP_AT_FLUSH;
		struct io_ctx *io;

		r = io_ctx_new(opts->io, 1, &io);
		if (r >= 0) {
			r = io_fdatasync(io, volume_fd(dst));
			io_ctx_free(io);
		}
	}
	if (r >= 0 && ret_ranges) {
		rangelist_normalize(&job.ranges);
		*ret_ranges = job.ranges;
		job.ranges = (struct rangelist){0};
	}
out:
	st.bytes_compared = atomic_load(&job.bytes_compared);
	st.bytes_read = atomic_load(&job.bytes_read);
	st.blocks_differing = atomic_load(&job.blocks_differing);
	st.bytes_differing = atomic_load(&job.bytes_differing);
	st.bytes_written = atomic_load(&job.bytes_written);
	st.bytes_punched = atomic_load(&job.bytes_punched);
	st.done_upto = job.unit_done ? job_done_upto(&job) : 0;
	st.seconds = (double)(clock_usec() - t0) / 1e6;
	if (r >= 0)
		st.failed_at = BLOCKCMP_AT_NONE;
	if (ret_stats)
		*ret_stats = st;
	job_release(&job);
	return r;
}

/* Hashed from the volume's mapping, a range keeps its page tables while
 * the mapping is held (8 bytes per 4 KiB page: a secondary's folds find
 * them made), up to this many bytes; a larger one drops them unit by unit
 * (MADV_DONTNEED: the page cache stays), or a 1 TiB volume would hold 2
 * GiB of page tables until its session ends. */
enum { BLOCKCMP_MAP_KEEP_MAX_GIB = 64 };
#define BLOCKCMP_MAP_KEEP_MAX ((uint64_t)BLOCKCMP_MAP_KEEP_MAX_GIB << 30)

int blockcmp_hash_volume(struct volume *v, uint64_t off, uint64_t len,
			 const struct blockcmp_opts *opts, struct hash128 *hashes)
{
	struct job job = {.src = v, .opts = opts, .hashes = hashes};
	const char *backend;
	unsigned threads;
	int r;

	job.bs = opts->block_size ? opts->block_size : RESYNC_BLOCK_DEFAULT;
	if (!resync_block_size_valid(job.bs) || off % job.bs || off > volume_size(v) ||
	    len > volume_size(v) - off)
		return -EINVAL;
	if (opts->extra_hashes &&
	    (!opts->extra_block || opts->extra_block % job.bs || RESYNC_CHUNK % opts->extra_block ||
	     off % opts->extra_block))
		return -EINVAL;
	pthread_mutex_init(&job.lock, NULL);
	job.base = off;
	job.end = off + len;
	job.nunits = DIV_ROUND_UP(len, (uint64_t)RESYNC_UNIT);
	if (len && io_kind_resolve(opts->io) == IO_KIND_AUTO && volume_map_hold(v) == 0) {
		/* Reads copy every byte out of the page cache: with three
		 * nodes hashing on two cores, that copy, not the hash, was
		 * most of the time. A mapping hashes the cached pages in
		 * place. Only for the automatic backend, so that an explicit
		 * one (and the fault injector) still gets every read. */
		uint64_t ml;
		const unsigned char *m = volume_map(v, &ml);

		if (off + len <= ml) {
			job.map = m + off;
			job.map_drop = len > BLOCKCMP_MAP_KEEP_MAX ||
				       (failpoint_armed && failpoint_named("blockcmp-map-drop"));
		} else
			volume_map_release(v);
	}
	r = job_execute(&job, &backend, &threads);
	if (job.map)
		volume_map_release(v);
	job_release(&job);
	return r;
}
