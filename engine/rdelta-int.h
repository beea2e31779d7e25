/* Private layout of the rdelta module's own implementation of librsync's
 * formats (rdelta-b2*.c, rdelta-sig.c, rdelta-search.c, rdelta-inplace.c):
 * the strong and weak sums, a loaded signature's index, the parsed delta.
 *
 * Formats (all integers big-endian), as librsync 2.3 writes them:
 *   signature: magic u32, block_len u32, strong_len u32, then per block of
 *              the basis (the last may be short) weak u32 + strong[strong_len]
 *   delta:     magic u32 (RDELTA_DELTA_MAGIC), commands, END (0x00);
 *              0x01..0x40 literal of that many bytes, 0x41..0x44 literal
 *              with a 1/2/4/8-byte length, 0x45..0x54 copy with a 1/2/4/8
 *              byte basis offset and a 1/2/4/8-byte length, then data. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "resync/rdelta.h"

enum rdelta_magic {
	RDELTA_DELTA_MAGIC = 0x72730236,
	RDELTA_MD4_SIG_MAGIC = 0x72730136,	  /* rollsum + MD4 */
	RDELTA_BLAKE2_SIG_MAGIC = 0x72730137,	  /* rollsum + BLAKE2 */
	RDELTA_RK_MD4_SIG_MAGIC = 0x72730146,	  /* RabinKarp + MD4 */
	RDELTA_RK_BLAKE2_SIG_MAGIC = 0x72730147, /* RabinKarp + BLAKE2 */
};

enum rdelta_op {
	RDELTA_OP_END = 0x00,
	RDELTA_OP_LITERAL_N1 = 0x41,
	RDELTA_OP_COPY_N1_N1 = 0x45,
	RDELTA_OP_COPY_N8_N8 = 0x54,
};

enum rdelta_impl_limits {
	/* librsync's BLAKE2 strong sum: BLAKE2b with a 32-byte digest. */
	RDELTA_B2_LEN = 32,
	/* Messages hashed side by side by rdelta_b2_lanes(). */
	RDELTA_B2_LANES = 8,
	/* Longest literal command we write (librsync writes 64 KiB ones). */
	RDELTA_LITERAL_MAX = 1 << 20,
	/* In-place patch: most bytes staged in the temporary file. */
	RDELTA_STAGE_MAX = 1 << 30,
	/* Most commands of a delta patched in place (32 bytes each). */
	RDELTA_CMDS_MAX = 1 << 25,
};

/* BLAKE2b-256 (RFC 7693, unkeyed, 32-byte digest) of n <= RDELTA_B2_LANES
 * messages of the same length, side by side in vector lanes. Picks the
 * widest vector unit the CPU has. Thread-safe. */
void rdelta_b2_lanes(const uint8_t *const msg[], size_t len, unsigned n,
		     uint8_t (*out)[RDELTA_B2_LEN]);
/* One message. */
void rdelta_b2(const void *msg, size_t len, uint8_t out[RDELTA_B2_LEN]);
/* The same compiled per instruction set (rdelta-b2x.c). */
void rdelta_b2x1_base(const uint8_t *const msg[], size_t len, unsigned n, uint8_t (*out)[32]);
void rdelta_b2x8_base(const uint8_t *const msg[], size_t len, unsigned n, uint8_t (*out)[32]);
void rdelta_b2x8_avx2(const uint8_t *const msg[], size_t len, unsigned n, uint8_t (*out)[32]);
void rdelta_b2x8_avx512(const uint8_t *const msg[], size_t len, unsigned n, uint8_t (*out)[32]);
/* The implementation rdelta_b2_lanes() uses: "avx512", "avx2" or "base". */
const char *rdelta_b2_impl(void);

/* MD4 (RFC 1320) of one message, as librsync's old signatures use it. */
void rdelta_md4(const void *msg, size_t len, uint8_t out[16]);

/* Rolling weak sums: librsync's "rollsum" (rsync's Adler-like sum with a
 * character offset of 31) and its RabinKarp (multiplier 0x08104225,
 * seed 1). The state of either; count is the window length. */
struct rdelta_weak {
	uint32_t a, b; /* rollsum: s1, s2; RabinKarp: hash, MULT^count */
	uint32_t count;
};

enum {
	RDELTA_RK_MULT = 0x08104225U,
	RDELTA_RK_INVM = 0x98f009adU, /* RDELTA_RK_MULT^-1 mod 2^32 */
	RDELTA_RK_SEED = 1,
	RDELTA_RS_OFFSET = 31,
};

/* b to the power e, modulo 2^32: RabinKarp's multiplier over n bytes. */
static inline uint32_t rdelta_pow32(uint32_t b, uint64_t e)
{
	uint32_t r = 1;

	for (; e; e >>= 1, b *= b)
		if (e & 1)
			r *= b;
	return r;
}

/* RabinKarp of one window, compiled per instruction set (rdelta-rkx.c). */
uint32_t rdelta_rk_base(const uint8_t *p, size_t n);
uint32_t rdelta_rk_avx2(const uint8_t *p, size_t n);
uint32_t rdelta_rk_avx512(const uint8_t *p, size_t n);

/* The weak sum of one window, from scratch (vectorised). */
void rdelta_weak_init(struct rdelta_weak *w, bool rabinkarp, const uint8_t *p, size_t len);

static inline uint32_t rdelta_weak_digest(const struct rdelta_weak *w, bool rabinkarp)
{
	return rabinkarp ? w->a : (w->b << 16) | (w->a & 0xffff);
}

/* Slide the window one byte: out leaves at the front, in enters at the end. */
static inline void rdelta_weak_rotate(struct rdelta_weak *w, bool rabinkarp, uint8_t out, uint8_t in)
{
	if (rabinkarp) {
		w->a = w->a * RDELTA_RK_MULT + in - w->b * (out + (RDELTA_RK_MULT - 1) * RDELTA_RK_SEED);
	} else {
		w->a += (uint32_t)in - out;
		w->b += w->a - w->count * (out + RDELTA_RS_OFFSET);
	}
}

/* Shrink the window by its first byte. */
static inline void rdelta_weak_rollout(struct rdelta_weak *w, bool rabinkarp, uint8_t out)
{
	if (rabinkarp) {
		w->count--;
		w->b *= RDELTA_RK_INVM;
		w->a -= w->b * (out + (RDELTA_RK_MULT - 1) * RDELTA_RK_SEED);
	} else {
		w->a -= out + RDELTA_RS_OFFSET;
		w->b -= w->count * (out + RDELTA_RS_OFFSET);
		w->count--;
	}
}

/* A signature loaded for delta search: the sums of the blocks and a hash
 * table over the weak sums. */
struct rdelta_sigidx {
	uint32_t magic;
	uint32_t block_len;
	uint32_t strong_len;
	bool rabinkarp;
	bool md4;
	uint64_t blocks;
	uint32_t *weak;	  /* [blocks] */
	uint8_t *strong;  /* [blocks * strong_len] */
	uint32_t *slot;	  /* [mask + 1]: block index + 1, 0 = empty; one per distinct sum */
	uint32_t mask;
	unsigned bits;	  /* log2(mask + 1) */
	uint32_t *filter; /* [1 << fbits]: see rdelta_sigidx_maybe() */
	unsigned fbits;
};

void rdelta_sigidx_free(struct rdelta_sigidx *s);
/* Parse a whole signature file (len bytes at buf) and index it. Returns 0,
 * -EBADMSG (not a signature), -EILSEQ (implausible header), -ENODATA
 * (truncated: a partial block record), -EFBIG (too many blocks), -ENOMEM. */
int rdelta_sigidx_parse(const uint8_t *buf, size_t len, struct rdelta_sigidx **ret);

static inline uint32_t rdelta_sigidx_hash(const struct rdelta_sigidx *s, uint32_t weak)
{
	return (uint32_t)((weak * 0x9E3779B97F4A7C15ULL) >> (64 - s->bits));
}

/* A filter in front of the table (a blocked Bloom filter): each weak sum
 * sets three bits of one 32-bit word, the word and the bits picked by two
 * multiplicative hashes; false means no block has this weak sum. With 64
 * filter bits per block about 0.1 % of the sums that match nothing pass,
 * so the rolling search tests sixteen positions at once and rarely stops
 * (rdelta-rollx.c computes the same in vector lanes). */
enum {
	RDELTA_FILTER_MUL1 = 0x9E3779B1U,
	RDELTA_FILTER_MUL2 = 0x85EBCA77U,
	RDELTA_FILTER_BITS_PER_BLOCK = 64,
	RDELTA_FILTER_FBITS_MIN = 8,  /* 1 KiB */
	RDELTA_FILTER_FBITS_MAX = 22, /* 16 MiB */
};

static inline uint32_t rdelta_filter_word(uint32_t weak, unsigned fbits)
{
	return ((weak ^ (weak >> 16)) * RDELTA_FILTER_MUL1) >> (32 - fbits);
}

static inline uint32_t rdelta_filter_bits(uint32_t weak)
{
	uint32_t g = (weak ^ (weak >> 16)) * RDELTA_FILTER_MUL2;

	return 1U << (g >> 27) | 1U << (g >> 22 & 31) | 1U << (g >> 17 & 31);
}

static inline bool rdelta_filter_maybe(const uint32_t *filter, unsigned fbits, uint32_t weak)
{
	uint32_t m = rdelta_filter_bits(weak);

	return (filter[rdelta_filter_word(weak, fbits)] & m) == m;
}

static inline bool rdelta_sigidx_maybe(const struct rdelta_sigidx *s, uint32_t weak)
{
	return rdelta_filter_maybe(s->filter, s->fbits, weak);
}

/* The RabinKarp rolling search over n >= 1 window positions: the window
 * at position j is w[j, j + bl) (w[n - 1 + bl] is the last byte read),
 * *h holds the weak sum of position 0 and mbl is RDELTA_RK_MULT^bl.
 * Returns the first position j < n - 1 whose sum passes the filter, else
 * n - 1; *h is then that position's sum. The base version rolls one byte
 * at a time; the AVX-512 one sixteen positions at a time (same results). */
typedef size_t (*rdelta_rk_roll_fn)(const uint8_t *w, size_t n, size_t bl, uint32_t *h,
				    uint32_t mbl, const uint32_t *filter, unsigned fbits);
size_t rdelta_rk_roll_base(const uint8_t *w, size_t n, size_t bl, uint32_t *h, uint32_t mbl,
			   const uint32_t *filter, unsigned fbits);
size_t rdelta_rk_roll_avx512(const uint8_t *w, size_t n, size_t bl, uint32_t *h, uint32_t mbl,
			     const uint32_t *filter, unsigned fbits);
/* The widest one this CPU runs. */
rdelta_rk_roll_fn rdelta_rk_roll_pick(void);

/* The strong sum of a window under s's hash, truncated to strong_len. */
void rdelta_strong(const struct rdelta_sigidx *s, const uint8_t *p, size_t len,
		   uint8_t out[RDELTA_STRONG_LEN_MAX]);

/* A parsed delta: its commands in order. A literal's data lies in the
 * delta at data_off; a copy reads the basis at src. */
struct rdelta_cmd {
	uint64_t dst; /* offset in the new file */
	uint64_t len; /* > 0 */
	uint64_t src; /* copy: basis offset; literal: offset of its data in the delta */
	bool copy;
};

struct rdelta_cmds {
	struct rdelta_cmd *v;
	size_t n, cap;
	uint64_t new_len;	 /* sum of the commands' lengths */
	uint64_t basis_needed;	 /* highest src + len of a copy */
};

void rdelta_cmds_release(struct rdelta_cmds *c);
/* Parse the whole delta at buf (bytes after END are ignored, as librsync
 * does). Returns 0, -EBADMSG (bad magic), -ENODATA (ends before END or
 * inside a command), -EILSEQ (reserved opcode, zero length (as librsync),
 * offsets that overflow), -EFBIG (more commands than RDELTA_CMDS_MAX),
 * -ENOMEM. */
int rdelta_cmds_parse(const uint8_t *buf, size_t len, struct rdelta_cmds *ret);

/* Unaligned big-endian accessors. */
static inline uint32_t rdelta_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void rdelta_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* Entry points of the engine's own implementation, for rdelta.c. */
uint32_t rdelta_sig_magic(const struct rdelta_sig_params *p);
bool rdelta_sig_magic_known(uint32_t magic);
/* Signature of the size bytes of the regular file fd (p resolved) into
 * sig_fd; fills st's signature counters. */
int rdelta_fast_signature(int fd, uint64_t size, const struct rdelta_sig_params *p, int sig_fd,
			  struct rdelta_stats *st);
/* Delta of the size bytes of the regular file fd against s into delta_fd;
 * fills st's command counters. */
int rdelta_fast_delta(const struct rdelta_sigidx *s, int fd, uint64_t size, int delta_fd,
		      struct rdelta_stats *st);

/* The in-place patch of the open regular file basis_fd with the delta at
 * delta (see rdelta_patch_inplace()); journal is the journal's path. */
int rdelta_patch_inplace_buf(int basis_fd, const char *journal, const uint8_t *delta,
			     size_t delta_len, struct rdelta_stats *st);

/* Patch: NEW from the basis (seekable) and the parsed delta at delta,
 * written in order to out_fd. -ENXIO when the delta copies past the
 * basis' end (found before anything is written). */
int rdelta_fast_patch(int basis_fd, const uint8_t *delta, size_t delta_len, int out_fd,
		      struct rdelta_stats *st);
/* The whole delta of fd: mapped when it is a regular file read from its
 * start (*ret_mapped), read into memory otherwise. */
int rdelta_delta_load(int fd, const uint8_t **ret, size_t *ret_len, bool *ret_mapped);
void rdelta_delta_unload(const uint8_t *delta, size_t len, bool mapped);

/* Threads to use for n units of work (at least one, at most the CPUs). */
unsigned rdelta_threads(uint64_t units);
