/* Rolling deltas in librsync's formats (the files rdiff reads and writes):
 * signatures of a basis, deltas of a new file against a signature, and
 * patching a basis with a delta.
 *
 * Two layers. A job is a resumable state machine over caller-owned buffers
 * (rdelta_job_step), so the same code serves files, pipes and network
 * streams. The *_fd functions drive a job between file descriptors.
 *
 * Signatures and deltas written by the *_fd drivers are computed by the
 * engine's own code (rdelta-sig.c, rdelta-search.c: a thread per CPU,
 * reads through resync/io.h), byte-identical to rdiff's signatures and
 * accepted by rdiff; so are patches from a delta file (mapped); the job
 * layer, and rdelta_patch_fd() of a delta read from a pipe, run librsync.
 *
 * Errors are -errno. librsync's results map as follows (this is the only
 * place they are translated; tools map back to rdiff's exit codes):
 *   -EIO       I/O error inside librsync          (RS_IO_ERROR)
 *   -ENOMEM    out of memory                      (RS_MEM_ERROR)
 *   -ENODATA   input ended early: truncated file  (RS_INPUT_ENDED)
 *   -EBADMSG   bad magic: not a signature/delta   (RS_BAD_MAGIC)
 *   -ENOTSUP   feature not implemented            (RS_UNIMPLEMENTED)
 *   -EILSEQ    implausible value in the stream    (RS_CORRUPT)
 *   -ENOTRECOVERABLE librsync internal error      (RS_INTERNAL_ERROR)
 *   -EINVAL    bad parameter                      (RS_PARAM_ERROR, RS_SYNTAX_ERROR)
 * and, from this module:
 *   -ENXIO     a delta copies from past the end of the basis (wrong basis?)
 *   -ESPIPE    the basis of a patch is not seekable
 *   -EFBIG     a signature holds more than RDELTA_SIG_BLOCKS_MAX blocks
 *              (in place: the delta needs more staging than the bound)
 *   -EUCLEAN   an earlier in-place patch of this basis was interrupted
 * Errors of read(2)/write(2) on the descriptors pass through unchanged.
 *
 * The engine does not log: on first use this module turns librsync's own
 * messages on stderr off for the whole process.
 *
 * Thread-safety: a job or a signature is used by one thread at a time;
 * different jobs may run in different threads. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits of this module (values a signature file controls are checked
 * against them before anything is allocated for them). */
enum rdelta_limits {
	/* Signature header: magic, block length, strong sum length (u32 BE). */
	RDELTA_HEADER_LEN = 12,
	/* Largest block length accepted, from options or from a signature. */
	RDELTA_BLOCK_LEN_MAX = 1 << 26,
	/* Longest strong sum (BLAKE2b-256); MD4 sums are at most 16. */
	RDELTA_STRONG_LEN_MAX = 32,
	/* Most blocks a loaded signature may describe (memory bound). */
	RDELTA_SIG_BLOCKS_MAX = 1 << 28,
	/* Default I/O buffer of the fd drivers. */
	RDELTA_IO_BUF = 1 << 20,
};

enum rdelta_hash {
	RDELTA_HASH_BLAKE2 = 0, /* rdiff's default */
	RDELTA_HASH_MD4,
};

enum rdelta_rollsum {
	RDELTA_ROLLSUM_RABINKARP = 0, /* rdiff's default */
	RDELTA_ROLLSUM_RSYNC,	      /* rdiff's "rollsum" */
};

struct rdelta_sig_params {
	enum rdelta_hash hash;
	enum rdelta_rollsum rollsum;
	uint32_t block_len; /* 0 = recommended for the basis size, as rdiff */
	int32_t strong_len; /* 0 = maximum, -1 = minimum safe, else 1..max */
};

/* Operation counters, as librsync keeps them. */
struct rdelta_stats {
	const char *op; /* "signature", "loadsig", "delta" or "patch" */
	uint64_t lit_cmds, lit_bytes, lit_cmdbytes;
	uint64_t copy_cmds, copy_bytes, copy_cmdbytes;
	uint64_t false_matches;
	uint64_t sig_blocks;
	uint64_t block_len;
	uint64_t in_bytes, out_bytes;
	double seconds; /* monotonic wall time of the job */
};

/* librsync's version string, e.g. "2.3.2". */
const char *rdelta_librsync_version(void);

/* The longest strong sum of a hash (32 for BLAKE2, 16 for MD4). */
unsigned rdelta_hash_len_max(enum rdelta_hash hash);

/* Fill in the "recommended" values of p (block_len 0, strong_len 0 or -1)
 * for a basis of basis_size bytes (-1 when unknown, e.g. a pipe), exactly
 * as rdiff does, and check the rest. Returns 0 or -EINVAL. */
int rdelta_sig_params_resolve(struct rdelta_sig_params *p, int64_t basis_size);

/* A loaded and indexed signature, ready to compute deltas against. */
struct rdelta_signature;

void rdelta_signature_free(struct rdelta_signature *sig);
/* Block length and number of blocks described. */
uint32_t rdelta_signature_block_len(const struct rdelta_signature *sig);
uint64_t rdelta_signature_blocks(const struct rdelta_signature *sig);

/* Reads len bytes of the basis at off into buf. Returns bytes read (> 0),
 * 0 at end of file, or -errno. */
typedef long long (*rdelta_basis_read_fn)(void *arg, uint64_t off, void *buf, size_t len);

struct rdelta_job;

/* Start a signature of a basis with p, which must be resolved
 * (rdelta_sig_params_resolve). Input: the basis; output: the signature. */
int rdelta_job_new_signature(const struct rdelta_sig_params *p, struct rdelta_job **ret);
/* Start loading a signature. Input: the signature; no output. Take the
 * result with rdelta_job_take_signature() once the job is done. */
int rdelta_job_new_loadsig(struct rdelta_job **ret);
/* Start a delta against sig (borrowed: it must outlive the job, and is
 * used, not changed, by it), which must come from a loadsig job (one from
 * rdelta_signature_load_fd() gives -ENOTSUP: use rdelta_delta_fd()).
 * Input: the new file; output: the delta. */
int rdelta_job_new_delta(struct rdelta_signature *sig, struct rdelta_job **ret);
/* Start a patch. Input: the delta; output: the new file; the basis is read
 * through read(arg, ...) at the offsets the delta names. */
int rdelta_job_new_patch(rdelta_basis_read_fn read, void *arg, struct rdelta_job **ret);
void rdelta_job_free(struct rdelta_job *job);

/* Run the job over the caller's buffers: consume input from *in (*in_len
 * bytes; eof says no input follows these bytes) and produce output into
 * *out (*out_len bytes of room). The four are advanced past what was
 * consumed and produced. Returns 1 when the job is complete (all output
 * produced), 0 when it needs more input or more output room, -errno on
 * failure (the job is then finished; free it). Unconsumed input may be
 * moved by the caller before the next call. */
int rdelta_job_step(struct rdelta_job *job, const void **in, size_t *in_len, bool eof, void **out,
		    size_t *out_len);
/* Counters so far. */
void rdelta_job_stats(const struct rdelta_job *job, struct rdelta_stats *ret);
/* After a loadsig job returned 1: index the signature and hand it over.
 * Returns 0 or -errno (-EINVAL for another kind of job or before it is
 * complete). */
int rdelta_job_take_signature(struct rdelta_job *job, struct rdelta_signature **ret);

/* Drivers between descriptors (blocking, total reads and writes; pipes
 * are fine except for a patch's basis). ret_stats may be NULL; when given
 * it is filled even on failure. */

/* Write the signature of basis_fd to sig_fd. p's zero values are resolved
 * for basis_fd's size when it is a regular file (unknown otherwise, as
 * rdiff). */
int rdelta_signature_fd(int basis_fd, int sig_fd, const struct rdelta_sig_params *p,
			struct rdelta_stats *ret_stats);
/* Read and index a signature from sig_fd. */
int rdelta_signature_load_fd(int sig_fd, struct rdelta_signature **ret,
			     struct rdelta_stats *ret_stats);
/* Write the delta of new_fd against sig to delta_fd: by the engine's
 * search for a signature from rdelta_signature_load_fd() (ranges of the
 * file taken in turn by one thread per CPU; RESYNC_RDELTA_RANGES=N forces
 * N ranges, for tests), by librsync for one from a loadsig job. The
 * engine maps a regular new_fd (unless RESYNC_IO=fault): if the file
 * shrinks meanwhile, the process gets SIGBUS, which a caller that takes
 * files from users catches (RESYNC_FAILPOINT=rdelta-delta-shrink cuts the
 * file to half right after it is mapped, for tests). */
int rdelta_delta_fd(struct rdelta_signature *sig, int new_fd, int delta_fd,
		    struct rdelta_stats *ret_stats);
/* Apply the delta read from delta_fd to basis_fd (seekable: a regular file
 * or block device; -ESPIPE otherwise) and write the result to new_fd. A
 * delta file is checked whole (it must fit the basis: -ENXIO) before the
 * first byte is written. */
int rdelta_patch_fd(int basis_fd, int delta_fd, int new_fd, struct rdelta_stats *ret_stats);

/* Patch the regular file basis_path in place with the delta read from
 * delta_fd (a regular file is mapped, anything else read whole): when it
 * returns 0, basis_path holds NEW. Copies are ordered so that no source is
 * overwritten before it is read; what cannot be ordered is staged in an
 * unnamed temporary file beside it (at most 1 GiB). Refused before the
 * first write: a delta that copies from past the end of the basis
 * (-ENXIO), one that needs more staging (-EFBIG), a corrupt one (the
 * reader's errors), and a basis whose journal (rdelta_inplace_journal())
 * exists (-EUCLEAN): an earlier run was interrupted and the file is
 * neither the old one nor the new one; -EBUSY when another writer holds
 * the file's lock (flock, as resyncfs and resyncd take it). The journal
 * exists from before the
 * first write until NEW is on disk (fdatasync). RESYNC_FAILPOINT=
 * rdelta-inplace-kill kills the process after the first write (tests). */
int rdelta_patch_inplace(const char *basis_path, int delta_fd, struct rdelta_stats *ret_stats);
/* The journal's path for basis_path ("BASIS.resync-inplace"; the caller
 * frees it), or NULL when out of memory. */
char *rdelta_inplace_journal(const char *basis_path);
