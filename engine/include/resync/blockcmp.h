/* The block-compare fast path: read two volumes (or one) in parallel with
 * several threads, find the blocks that differ, optionally rewrite them in
 * the destination, or hash every block of one volume. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "resync/hash.h"
#include "resync/io.h"
#include "resync/range.h"
#include "resync/volume.h"

enum blockcmp_mode {
	BLOCKCMP_MEMCMP = 0, /* compare the bytes (local volumes) */
	BLOCKCMP_HASH,	     /* compare seeded xxh3-128 hashes of both sides */
	BLOCKCMP_READ_ONLY,  /* read both, compare nothing: the I/O bound */
};

struct blockcmp_opts {
	uint32_t block_size;	 /* 0 = RESYNC_BLOCK_DEFAULT */
	unsigned threads;	 /* 0 = one per online CPU (at most RESYNC_THREADS_MAX) */
	enum io_kind io;	 /* IO_KIND_AUTO by default */
	enum blockcmp_mode mode; /* how blocks are compared */
	uint64_t seed;		 /* hash seed for BLOCKCMP_HASH */
	bool write;		 /* rewrite differing data in dst (a sync) */
	bool punch_zeros;	 /* write zero runs as holes where possible */
	/* Called at most once per work unit from a worker thread, serialised:
	 * bytes of the source processed so far. Non-zero return cancels. */
	int (*progress)(void *arg, uint64_t bytes_done, uint64_t bytes_total);
	void *progress_arg;
	/* blockcmp_hash_volume() only: also hash every extra_block-sized
	 * block with seed 0 into extra_hashes[i] (block i of the range), from
	 * the same reads (the proof's leaves while the compare hashes).
	 * extra_block is a multiple of block_size dividing RESYNC_CHUNK, and
	 * the range's offset a multiple of it. NULL: nothing extra. */
	uint32_t extra_block;
	struct hash128 *extra_hashes;
	/* Bulk work: the workers run with their nice value raised by this
	 * much (all on threads of their own, the caller's untouched), so that
	 * latency-bound threads preempt them (a daemon's handshakes and
	 * replies while it hashes for a peer; another daemon on the machine
	 * starting its own). 0: as the caller. */
	int nice;
};

enum blockcmp_where {
	BLOCKCMP_AT_NONE = 0,
	BLOCKCMP_AT_SETUP,    /* sizing dst, threads, buffers */
	BLOCKCMP_AT_READ_SRC, /* reading the source */
	BLOCKCMP_AT_READ_DST, /* reading the destination */
	BLOCKCMP_AT_WRITE,    /* writing the destination */
	BLOCKCMP_AT_FLUSH,    /* flushing the destination */
	BLOCKCMP_AT_CANCEL,   /* stopped by the progress callback */
};

struct blockcmp_stats {
	uint64_t src_size;	   /* bytes of the source */
	uint64_t dst_size_before;  /* destination's size before the run */
	uint64_t bytes_compared;   /* source bytes compared */
	uint64_t bytes_read;	   /* bytes read from both volumes */
	uint64_t blocks_differing; /* blocks of block_size that differ */
	uint64_t bytes_differing;  /* their bytes */
	uint64_t bytes_written;	   /* bytes rewritten (or, without write, to rewrite) */
	uint64_t bytes_punched;	   /* of those, written as holes */
	uint64_t done_upto;	   /* every byte below this offset is done */
	double seconds;
	enum blockcmp_where failed_at; /* where a failed run stopped */
	const char *io_backend;
	unsigned threads;
};

/* Compare src with dst block by block. Differing ranges (adjacent blocks
 * merged, in order) go to ret_ranges when it is not NULL. With opts->write,
 * dst is first given src's size, then every differing 4 KiB page is
 * rewritten and dst is flushed; without it nothing is written and bytes of
 * dst past its end compare as zeros. Stats are filled even on failure (how
 * far the run got). Returns 0, or -errno (-ECANCELED if progress asked). */
int blockcmp_run(struct volume *src, struct volume *dst, const struct blockcmp_opts *opts,
		 struct rangelist *ret_ranges, struct blockcmp_stats *ret_stats);

/* Hash the blocks of [off, off+len) of v (off a multiple of the block size;
 * the last block may be short, at the volume's end) into hashes[i] for block
 * i of the range, with several threads. Uses opts' block_size, threads, io,
 * seed and progress. Returns 0 or -errno. */
int blockcmp_hash_volume(struct volume *v, uint64_t off, uint64_t len,
			 const struct blockcmp_opts *opts, struct hash128 *hashes);
