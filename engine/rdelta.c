/* Rolling deltas in librsync's formats: the job layer over librsync, and
 * the descriptor drivers, which hand signatures and deltas to the engine's
 * own code (rdelta-sig.c, rdelta-search.c, rdelta-patch.c; a delta read
 * from a pipe is patched by librsync). See rdelta.h. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <librsync.h>

#include "resync/clock.h"
#include "resync/fileio.h"
#include "resync/macro.h"
#include "resync/rdelta.h"

#include "rdelta-int.h"

enum rdelta_kind {
	RDELTA_SIG = 1,
	RDELTA_LOADSIG,
	RDELTA_DELTA,
	RDELTA_PATCH,
};

/* Loaded by a loadsig job (librsync's sumset, rs) or by
 * rdelta_signature_load_fd() (the engine's index, idx). */
struct rdelta_signature {
	rs_signature_t *rs;
	struct rdelta_sigidx *idx;
	uint32_t block_len;
	uint64_t blocks;
};

struct rdelta_job {
	enum rdelta_kind kind;
	rs_job_t *rs;
	bool done;
	bool failed;
	uint64_t t_start; /* monotonic, microseconds */
	uint64_t t_end;
	uint64_t in_total;  /* input bytes consumed so far */
	uint64_t out_total; /* output bytes produced so far */
	/* loadsig: the signature being read (owned until taken) and its
	 * header, checked before librsync acts on it. */
	rs_signature_t *loaded;
	uint8_t hdr[RDELTA_HEADER_LEN];
	size_t hdr_seen;
	uint64_t in_max;
	/* patch: how the basis is read, and the first error of a read. */
	rdelta_basis_read_fn read;
	void *read_arg;
	int read_err;
};

/* The one translation of librsync's results into -errno (see rdelta.h). */
static int rdelta_errno(rs_result r)
{
	switch (r) {
	case RS_DONE:
		return 0;
	case RS_BLOCKED:
	case RS_RUNNING:
		return -EAGAIN;
	case RS_IO_ERROR:
		return -EIO;
	case RS_MEM_ERROR:
		return -ENOMEM;
	case RS_INPUT_ENDED:
		return -ENODATA;
	case RS_BAD_MAGIC:
		return -EBADMSG;
	case RS_UNIMPLEMENTED:
	case RS_TEST_SKIPPED:
		return -ENOTSUP;
	case RS_CORRUPT:
		return -EILSEQ;
	case RS_INTERNAL_ERROR:
		return -ENOTRECOVERABLE;
	case RS_SYNTAX_ERROR:
	case RS_PARAM_ERROR:
		return -EINVAL;
	}
	return -EPROTO;
}

static void rdelta_trace_none(rs_loglevel level, char const *msg)
{
	(void)level;
	(void)msg;
}

static pthread_once_t rdelta_once = PTHREAD_ONCE_INIT;

static void rdelta_quiet(void)
{
	rs_trace_to(rdelta_trace_none);
	rs_trace_set_level(RS_LOG_EMERG);
}

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

const char *rdelta_librsync_version(void)
{
	return rs_librsync_version;
}

unsigned rdelta_hash_len_max(enum rdelta_hash hash)
{
	return hash == RDELTA_HASH_MD4 ? 16 : 32;
}

static rs_magic_number sig_magic(const struct rdelta_sig_params *p)
{
	bool md4 = p->hash == RDELTA_HASH_MD4;

	if (p->rollsum == RDELTA_ROLLSUM_RSYNC)
		return md4 ? RS_MD4_SIG_MAGIC : RS_BLAKE2_SIG_MAGIC;
	return md4 ? RS_RK_MD4_SIG_MAGIC : RS_RK_BLAKE2_SIG_MAGIC;
}

int rdelta_sig_params_resolve(struct rdelta_sig_params *p, int64_t basis_size)
{
	rs_magic_number magic;
	size_t block_len, strong_len;
	rs_result rr;

	if (p->hash != RDELTA_HASH_BLAKE2 && p->hash != RDELTA_HASH_MD4)
		return -EINVAL;
	if (p->rollsum != RDELTA_ROLLSUM_RABINKARP && p->rollsum != RDELTA_ROLLSUM_RSYNC)
		return -EINVAL;
	if (p->block_len > RDELTA_BLOCK_LEN_MAX)
		return -EINVAL;
	if (p->strong_len < -1 || p->strong_len > (int32_t)rdelta_hash_len_max(p->hash))
		return -EINVAL;

	pthread_once(&rdelta_once, rdelta_quiet);
	magic = sig_magic(p);
	block_len = p->block_len;
	strong_len = p->strong_len == -1 ? (size_t)-1 : (size_t)p->strong_len;
	rr = rs_sig_args(basis_size < 0 ? -1 : basis_size, &magic, &block_len, &strong_len);
	if (rr != RS_DONE)
		return rdelta_errno(rr);
	if (block_len == 0 || block_len > RDELTA_BLOCK_LEN_MAX || strong_len == 0 ||
	    strong_len > rdelta_hash_len_max(p->hash))
		return -EINVAL;
	p->block_len = (uint32_t)block_len;
	p->strong_len = (int32_t)strong_len;
	return 0;
}

void rdelta_signature_free(struct rdelta_signature *sig)
{
	if (!sig)
		return;
	if (sig->rs)
		rs_free_sumset(sig->rs);
	rdelta_sigidx_free(sig->idx);
	free(sig);
}

uint32_t rdelta_signature_block_len(const struct rdelta_signature *sig)
{
	return sig->block_len;
}

uint64_t rdelta_signature_blocks(const struct rdelta_signature *sig)
{
	return sig->blocks;
}

static int job_alloc(enum rdelta_kind kind, struct rdelta_job **ret)
{
	struct rdelta_job *job;

	pthread_once(&rdelta_once, rdelta_quiet);
	job = calloc(1, sizeof(*job));
	if (!job)
		return -ENOMEM;
	job->kind = kind;
	job->t_start = clock_usec();
	*ret = job;
	return 0;
}

void rdelta_job_free(struct rdelta_job *job)
{
	if (!job)
		return;
	if (job->rs)
		rs_job_free(job->rs);
	if (job->loaded)
		rs_free_sumset(job->loaded);
	free(job);
}

DEFINE_FREE_FUNC(struct rdelta_job, rdelta_job_free)
#define _cleanup_rdelta_job_ _cleanup_(rdelta_job_freep)

int rdelta_job_new_signature(const struct rdelta_sig_params *p, struct rdelta_job **ret)
{
	_cleanup_rdelta_job_ struct rdelta_job *job = NULL;
	int r;

	if (p->block_len == 0 || p->block_len > RDELTA_BLOCK_LEN_MAX || p->strong_len <= 0 ||
	    p->strong_len > (int32_t)rdelta_hash_len_max(p->hash))
		return -EINVAL;
	r = job_alloc(RDELTA_SIG, &job);
	if (r < 0)
		return r;
	job->rs = rs_sig_begin(p->block_len, (size_t)p->strong_len, sig_magic(p));
	if (!job->rs)
		return -ENOMEM;
	*ret = TAKE_PTR(job);
	return 0;
}

int rdelta_job_new_loadsig(struct rdelta_job **ret)
{
	_cleanup_rdelta_job_ struct rdelta_job *job = NULL;
	int r;

	r = job_alloc(RDELTA_LOADSIG, &job);
	if (r < 0)
		return r;
	job->rs = rs_loadsig_begin(&job->loaded);
	if (!job->rs)
		return -ENOMEM;
	*ret = TAKE_PTR(job);
	return 0;
}

int rdelta_job_new_delta(struct rdelta_signature *sig, struct rdelta_job **ret)
{
	_cleanup_rdelta_job_ struct rdelta_job *job = NULL;
	int r;

	if (!sig)
		return -EINVAL;
	if (!sig->rs)
		return -ENOTSUP; /* an engine index: rdelta_delta_fd() takes it */
	r = job_alloc(RDELTA_DELTA, &job);
	if (r < 0)
		return r;
	job->rs = rs_delta_begin(sig->rs);
	if (!job->rs)
		return -ENOMEM;
	*ret = TAKE_PTR(job);
	return 0;
}

/* librsync's copy callback: fetch basis bytes for a COPY command. */
static rs_result patch_copy(void *arg, rs_long_t pos, size_t *len, void **buf)
{
	struct rdelta_job *job = arg;
	long long n;

	if (pos < 0)
		return RS_CORRUPT;
	n = job->read(job->read_arg, (uint64_t)pos, *buf, *len);
	if (n < 0) {
		job->read_err = (int)n;
		return RS_IO_ERROR;
	}
	if (n == 0) {
		job->read_err = -ENXIO;
		return RS_INPUT_ENDED;
	}
	*len = (size_t)MIN((unsigned long long)n, *len);
	return RS_DONE;
}

int rdelta_job_new_patch(rdelta_basis_read_fn read, void *arg, struct rdelta_job **ret)
{
	_cleanup_rdelta_job_ struct rdelta_job *job = NULL;
	int r;

	if (!read)
		return -EINVAL;
	r = job_alloc(RDELTA_PATCH, &job);
	if (r < 0)
		return r;
	job->read = read;
	job->read_arg = arg;
	job->rs = rs_patch_begin(patch_copy, job);
	if (!job->rs)
		return -ENOMEM;
	*ret = TAKE_PTR(job);
	return 0;
}

/* Copy the signature header bytes that pass by in this step, and check them
 * once complete: librsync bounds the strong sum but not the block length,
 * which later sizes the delta's buffers. */
static int loadsig_check(struct rdelta_job *job, const uint8_t *in, size_t in_len)
{
	uint32_t magic, block_len, strong_len, max;

	while (job->hdr_seen < RDELTA_HEADER_LEN && job->hdr_seen >= job->in_total &&
	       job->hdr_seen - job->in_total < in_len) {
		job->hdr[job->hdr_seen] = in[job->hdr_seen - job->in_total];
		job->hdr_seen++;
	}
	if (job->hdr_seen < RDELTA_HEADER_LEN || job->in_max)
		return 0;

	magic = get_be32(job->hdr);
	block_len = get_be32(job->hdr + 4);
	strong_len = get_be32(job->hdr + 8);
	switch (magic) {
	case RS_MD4_SIG_MAGIC:
	case RS_RK_MD4_SIG_MAGIC:
		max = 16;
		break;
	case RS_BLAKE2_SIG_MAGIC:
	case RS_RK_BLAKE2_SIG_MAGIC:
		max = 32;
		break;
	default:
		return -EBADMSG;
	}
	if (block_len == 0 || block_len > RDELTA_BLOCK_LEN_MAX || strong_len == 0 ||
	    strong_len > max)
		return -EILSEQ;
	job->in_max = RDELTA_HEADER_LEN + (uint64_t)(4 + strong_len) * RDELTA_SIG_BLOCKS_MAX;
	return 0;
}

static int job_fail(struct rdelta_job *job, int r)
{
	job->failed = true;
	job->t_end = clock_usec();
	return r;
}

int rdelta_job_step(struct rdelta_job *job, const void **in, size_t *in_len, bool eof, void **out,
		    size_t *out_len)
{
	rs_buffers_t b;
	rs_result rr;
	int r;

	if (job->done)
		return 1;
	if (job->failed)
		return -EINVAL;
	if (job->kind == RDELTA_LOADSIG) {
		r = loadsig_check(job, *in, *in_len);
		if (r < 0)
			return job_fail(job, r);
		if (job->in_max && job->in_total + *in_len > job->in_max)
			return job_fail(job, -EFBIG);
	}

	b = (rs_buffers_t){
		/* librsync only reads through next_in. */
		.next_in = (char *)(uintptr_t)*in,
		.avail_in = *in_len,
		.eof_in = eof,
		.next_out = *out,
		.avail_out = *out_len,
	};
	rr = rs_job_iter(job->rs, &b);
	job->in_total += *in_len - b.avail_in;
	job->out_total += *out_len - b.avail_out;
	*in = b.next_in;
	*in_len = b.avail_in;
	*out = b.next_out;
	*out_len = b.avail_out;

	if (rr == RS_BLOCKED)
		return 0;
	if (rr != RS_DONE) {
		/* A failed basis read explains the job's failure better. */
		if (job->read_err)
			return job_fail(job, job->read_err);
		return job_fail(job, rdelta_errno(rr));
	}
	job->done = true;
	job->t_end = clock_usec();
	return 1;
}

void rdelta_job_stats(const struct rdelta_job *job, struct rdelta_stats *ret)
{
	const rs_stats_t *s = rs_job_statistics(job->rs);
	uint64_t end = (job->done || job->failed) ? job->t_end : clock_usec();

	*ret = (struct rdelta_stats){
		.op = s->op,
		.lit_cmds = (uint64_t)s->lit_cmds,
		.lit_bytes = (uint64_t)s->lit_bytes,
		.lit_cmdbytes = (uint64_t)s->lit_cmdbytes,
		.copy_cmds = (uint64_t)s->copy_cmds,
		.copy_bytes = (uint64_t)s->copy_bytes,
		.copy_cmdbytes = (uint64_t)s->copy_cmdbytes,
		.false_matches = (uint64_t)s->false_matches,
		.sig_blocks = (uint64_t)s->sig_blocks,
		.block_len = s->block_len,
		/* librsync counts these in its own file drivers only. */
		.in_bytes = job->in_total,
		.out_bytes = job->out_total,
		.seconds = (double)(end - job->t_start) / 1e6,
	};
}

int rdelta_job_take_signature(struct rdelta_job *job, struct rdelta_signature **ret)
{
	struct rdelta_signature *sig;
	rs_result rr;

	if (job->kind != RDELTA_LOADSIG || !job->done || !job->loaded)
		return -EINVAL;
	if (job->hdr_seen < RDELTA_HEADER_LEN)
		return -ENODATA; /* not reachable: librsync needs the header */
	sig = calloc(1, sizeof(*sig));
	if (!sig)
		return -ENOMEM;
	rr = rs_build_hash_table(job->loaded);
	if (rr != RS_DONE) {
		free(sig);
		return rdelta_errno(rr);
	}
	sig->rs = TAKE_PTR(job->loaded);
	sig->block_len = get_be32(job->hdr + 4);
	sig->blocks = (uint64_t)rs_job_statistics(job->rs)->sig_blocks;
	*ret = sig;
	return 0;
}

/* Drive job from in_fd to out_fd (out_fd < 0: no output expected). */
static int job_run_fd(struct rdelta_job *job, int in_fd, int out_fd, size_t in_size)
{
	_cleanup_free_ uint8_t *ibuf = malloc(in_size), *obuf = malloc(RDELTA_IO_BUF);
	size_t ilen = 0, ioff = 0;
	bool eof = false;

	if (!ibuf || !obuf)
		return -ENOMEM;
	for (;;) {
		const void *in;
		void *out = obuf;
		size_t in_len, out_len = RDELTA_IO_BUF, produced;
		int r;

		/* Top the input up once it is half used: librsync reads
		 * straight from a buffer holding a whole block, and copies
		 * into its own only what straddles the end. */
		if (!eof && ilen < in_size / 2 + 1) {
			long long n;

			memmove(ibuf, ibuf + ioff, ilen);
			ioff = 0;
			n = fd_read_all(in_fd, ibuf + ilen, in_size - ilen);
			if (n < 0)
				return (int)n;
			if ((size_t)n < in_size - ilen)
				eof = true;
			ilen += (size_t)n;
		}
		in = ibuf + ioff;
		in_len = ilen;
		r = rdelta_job_step(job, &in, &in_len, eof, &out, &out_len);
		if (r < 0)
			return r;
		produced = RDELTA_IO_BUF - out_len;
		if (produced) {
			int w;

			if (out_fd < 0)
				return -EPROTO; /* loadsig produces nothing */
			w = fd_write_all(out_fd, obuf, produced);
			if (w < 0)
				return w;
		}
		if (r == 1)
			return 0;
		/* Blocked with all input offered at end of file, room for
		 * output and nothing done: the job cannot finish. */
		if (eof && in_len == ilen && produced == 0)
			return -ENOTRECOVERABLE;
		ioff += ilen - in_len;
		ilen = in_len;
	}
}

static size_t in_size_for(uint32_t block_len)
{
	/* Hold several blocks, so that few straddle a buffer's end. */
	return MAX((size_t)RDELTA_IO_BUF, (size_t)block_len * 4);
}

static int64_t fd_size(int fd)
{
	struct stat st;

	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return -1;
	return st.st_size;
}

/* A regular file read from its start is used as it is; anything else (a
 * pipe, a file read from elsewhere) is first copied into an unnamed
 * temporary file, since the engine reads its input at offsets, from
 * several threads. *ret_fd is fd itself or the copy (*ret_own). */
static int input_file(int fd, int *ret_fd, bool *ret_own, uint64_t *ret_size)
{
	_cleanup_close_ int tmp = -1;
	_cleanup_free_ uint8_t *buf = NULL;
	const char *dir = getenv("TMPDIR");
	uint64_t size = 0;
	struct stat st;

	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && lseek(fd, 0, SEEK_CUR) == 0) {
		*ret_fd = fd;
		*ret_own = false;
		*ret_size = (uint64_t)st.st_size;
		return 0;
	}
	tmp = open(dir && *dir ? dir : "/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (tmp < 0)
		return -errno;
	buf = malloc(RDELTA_IO_BUF);
	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t n = fd_read_all(fd, buf, RDELTA_IO_BUF);
		int r;

		if (n < 0)
			return (int)n;
		if (n == 0)
			break;
		r = fd_write_all(tmp, buf, (size_t)n);
		if (r < 0)
			return r;
		size += (uint64_t)n;
	}
	*ret_fd = TAKE_FD(tmp);
	*ret_own = true;
	*ret_size = size;
	return 0;
}

int rdelta_signature_fd(int basis_fd, int sig_fd, const struct rdelta_sig_params *p,
			struct rdelta_stats *ret_stats)
{
	struct rdelta_stats st = {.op = "signature"};
	struct rdelta_sig_params rp = *p;
	uint64_t t0 = clock_usec(), size;
	bool own = false;
	int fd = -1, r;

	r = rdelta_sig_params_resolve(&rp, fd_size(basis_fd));
	if (r >= 0)
		r = input_file(basis_fd, &fd, &own, &size);
	if (r >= 0)
		r = rdelta_fast_signature(fd, size, &rp, sig_fd, &st);
	if (own)
		close(fd);
	st.seconds = (double)(clock_usec() - t0) / 1e6;
	if (ret_stats)
		*ret_stats = st;
	return r;
}

/* Read all of fd, at most max bytes (-EFBIG beyond). */
static int read_whole(int fd, uint64_t max, uint8_t **ret, size_t *ret_len)
{
	_cleanup_free_ uint8_t *buf = NULL;
	size_t len = 0, cap = 0;

	for (;;) {
		ssize_t n;

		if (len == cap) {
			uint8_t *b;

			cap = cap ? cap * 2 : RDELTA_IO_BUF;
			b = realloc(buf, cap);
			if (!b)
				return -ENOMEM;
			buf = b;
		}
		n = fd_read_all(fd, buf + len, cap - len);
		if (n < 0)
			return (int)n;
		len += (size_t)n;
		if (len > max)
			return -EFBIG;
		if (len < cap)
			break;
	}
	*ret = TAKE_PTR(buf);
	*ret_len = len;
	return 0;
}

int rdelta_signature_load_fd(int sig_fd, struct rdelta_signature **ret,
			     struct rdelta_stats *ret_stats)
{
	struct rdelta_stats st = {.op = "loadsig"};
	_cleanup_free_ uint8_t *buf = NULL;
	struct rdelta_signature *sig = NULL;
	struct rdelta_sigidx *idx = NULL;
	uint64_t t0 = clock_usec();
	size_t len = 0;
	int r;

	r = read_whole(sig_fd, RDELTA_HEADER_LEN + (uint64_t)(4 + RDELTA_STRONG_LEN_MAX) *
						       RDELTA_SIG_BLOCKS_MAX, &buf, &len);
	if (r >= 0)
		r = rdelta_sigidx_parse(buf, len, &idx);
	if (r >= 0) {
		sig = calloc(1, sizeof(*sig));
		if (!sig) {
			rdelta_sigidx_free(idx);
			r = -ENOMEM;
		}
	}
	if (r >= 0) {
		sig->idx = idx;
		sig->block_len = idx->block_len;
		sig->blocks = idx->blocks;
		st.sig_blocks = idx->blocks;
		st.block_len = idx->block_len;
		*ret = sig;
	}
	st.in_bytes = len;
	st.seconds = (double)(clock_usec() - t0) / 1e6;
	if (ret_stats)
		*ret_stats = st;
	return r;
}

static int delta_librsync(struct rdelta_signature *sig, int new_fd, int delta_fd,
			  struct rdelta_stats *ret_stats)
{
	_cleanup_rdelta_job_ struct rdelta_job *job = NULL;
	int r;

	r = rdelta_job_new_delta(sig, &job);
	if (r < 0)
		return r;
	r = job_run_fd(job, new_fd, delta_fd, in_size_for(sig->block_len));
	if (r < 0)
		job_fail(job, r);
	if (ret_stats)
		rdelta_job_stats(job, ret_stats);
	return r;
}

int rdelta_delta_fd(struct rdelta_signature *sig, int new_fd, int delta_fd,
		    struct rdelta_stats *ret_stats)
{
	struct rdelta_stats st = {.op = "delta"};
	uint64_t t0 = clock_usec(), size;
	bool own = false;
	int fd = -1, r;

	if (!sig->idx)
		return delta_librsync(sig, new_fd, delta_fd, ret_stats);
	r = input_file(new_fd, &fd, &own, &size);
	if (r >= 0)
		r = rdelta_fast_delta(sig->idx, fd, size, delta_fd, &st);
	if (own)
		close(fd);
	st.seconds = (double)(clock_usec() - t0) / 1e6;
	if (ret_stats)
		*ret_stats = st;
	return r;
}

static long long basis_pread(void *arg, uint64_t off, void *buf, size_t len)
{
	if (off > (uint64_t)INT64_MAX - len)
		return 0;
	return fd_pread_all(*(int *)arg, buf, len, off);
}

static int patch_librsync(int basis_fd, int delta_fd, int new_fd, struct rdelta_stats *ret_stats)
{
	_cleanup_rdelta_job_ struct rdelta_job *job = NULL;
	int r;

	r = rdelta_job_new_patch(basis_pread, &basis_fd, &job);
	if (r < 0)
		return r;
	r = job_run_fd(job, delta_fd, new_fd, RDELTA_IO_BUF);
	if (r < 0)
		job_fail(job, r);
	if (ret_stats)
		rdelta_job_stats(job, ret_stats);
	return r;
}

int rdelta_patch_fd(int basis_fd, int delta_fd, int new_fd, struct rdelta_stats *ret_stats)
{
	struct rdelta_stats st = {.op = "patch"};
	uint64_t t0 = clock_usec();
	const uint8_t *delta;
	struct stat sb;
	bool mapped;
	size_t len;
	int r;

	if (lseek(basis_fd, 0, SEEK_CUR) < 0)
		return errno == ESPIPE ? -ESPIPE : -errno;
	/* A delta streamed through a pipe is patched by librsync as it
	 * comes; a delta file is mapped and patched by the engine. */
	if (fstat(delta_fd, &sb) < 0 || !S_ISREG(sb.st_mode) || lseek(delta_fd, 0, SEEK_CUR) != 0)
		return patch_librsync(basis_fd, delta_fd, new_fd, ret_stats);
	r = rdelta_delta_load(delta_fd, &delta, &len, &mapped);
	if (r < 0)
		return r;
	r = rdelta_fast_patch(basis_fd, delta, len, new_fd, &st);
	rdelta_delta_unload(delta, len, mapped);
	st.seconds = (double)(clock_usec() - t0) / 1e6;
	if (ret_stats)
		*ret_stats = st;
	return r;
}
