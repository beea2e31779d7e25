/* The wire format's data messages: BLOCKS (raw and zstd), EXTENTS, COPY,
 * COPY_ACK and WEAK_REPLY round-trip, every truncated, oversized or
 * inconsistent payload is refused with -EBADMSG, and zstd level 1 runs at
 * the right order of speed (test-wire.c has the rest of the format). */
#include <endian.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zstd.h>

#include "resync/macro.h"
#include "testlib.h"
#include "wire-check.h"
#include "wire.h"

static unsigned char buf[RESYNC_WIRE_FRAME_MAX];

static void test_blocks(void **state)
{
	enum { LEN = 256 * 1024 };
	struct wire_zstd *z = NULL;
	unsigned char *data = malloc(LEN), *out = malloc(LEN), *m = malloc(sizeof(buf));
	struct wire_blocks b;
	size_t len = 0;

	assert_int_equal(wire_zstd_new(1, &z), 0);
	/* Compressible: zstd, smaller, and back. */
	for (int i = 0; i < LEN; i++)
		data[i] = "resync "[i % 7] + (i / 4096);
	assert_int_equal(wire_blocks_encode(z, 1 << 20, data, LEN, buf, sizeof(buf), &len), 0);
	assert_int_equal(wire_blocks_decode(buf, len, &b), 0);
	assert_int_equal(b.encoding, WIRE_ENC_ZSTD);
	assert_int_equal(b.offset, 1 << 20);
	assert_int_equal(b.raw_len, LEN);
	assert_true(b.enc_len < LEN / 10);
	assert_int_equal(wire_blocks_unpack(z, &b, out, LEN - 1), -ENOBUFS);
	assert_int_equal(wire_blocks_unpack(z, &b, out, LEN), LEN);
	assert_memory_equal(out, data, LEN);
	{
		const void *p = NULL;

		memset(out, 0, LEN);
		assert_int_equal(wire_blocks_bytes(z, &b, out, LEN, &p), LEN);
		assert_ptr_equal(p, out);
		assert_memory_equal(out, data, LEN);
	}
	check_truncations(WIRE_BLOCKS, buf, len);

	/* The frame carries its content's checksum: without TLS a flipped
	 * byte of the content (here: of the checksum itself) is refused. */
	{
		/* The frame header descriptor (after the 4-byte magic): bit 2
		 * is Content_Checksum_flag (RFC 8878, 3.1.1.1.1). */
		assert_true(b.enc_len > 5);
		assert_true(((const unsigned char *)b.data)[4] & 0x04);
		memcpy(m, buf, len);
		m[len - 1] ^= 0x01;
		assert_int_equal(wire_blocks_decode(m, len, &b), 0);
		assert_int_equal(wire_blocks_unpack(z, &b, out, LEN), -EBADMSG);
		assert_int_equal(wire_blocks_decode(buf, len, &b), 0);
	}

	/* A zstd frame whose declared size is not raw_len, or that is cut
	 * short, or has trailing bytes, is refused when unpacked. */
	memcpy(m, buf, len);
	put32(m + 8, LEN - 1);
	assert_int_equal(wire_blocks_decode(m, len, &b), 0);
	assert_int_equal(wire_blocks_unpack(z, &b, out, LEN), -EBADMSG);
	memcpy(m, buf, len);
	put32(m + 12, b.enc_len - 1); /* the frame cut short */
	assert_int_equal(wire_blocks_decode(m, len - 1, &b), 0);
	assert_int_equal(wire_blocks_unpack(z, &b, out, LEN), -EBADMSG);
	memcpy(m, buf, len);
	m[len] = 0; /* trailing byte */
	put32(m + 12, len - WIRE_BLOCKS_HEADER + 1);
	assert_int_equal(wire_blocks_decode(m, len + 1, &b), 0);
	assert_int_equal(wire_blocks_unpack(z, &b, out, LEN), -EBADMSG);
	for (size_t i = WIRE_BLOCKS_HEADER; i < len; i += 7) {
		/* Corrupt data: refused or decoded to exactly raw_len bytes. */
		int r;

		memcpy(m, buf, len);
		m[i] ^= 0x5a;
		assert_int_equal(wire_blocks_decode(m, len, &b), 0);
		r = wire_blocks_unpack(z, &b, out, LEN);
		assert_true(r == -EBADMSG || r == LEN);
	}

	/* Random: stays raw. */
	testlib_fill(data, LEN, 3);
	assert_int_equal(wire_blocks_encode(z, 0, data, LEN, buf, sizeof(buf), &len), 0);
	assert_int_equal(len, WIRE_BLOCKS_HEADER + LEN);
	assert_int_equal(wire_blocks_decode(buf, len, &b), 0);
	assert_int_equal(b.encoding, WIRE_ENC_RAW);
	assert_int_equal(wire_blocks_unpack(z, &b, out, LEN), LEN);
	assert_memory_equal(out, data, LEN);
	/* wire_blocks_bytes(): raw data is the frame's own (not copied). */
	{
		const void *p = NULL;
		struct wire_blocks c = b;

		assert_int_equal(wire_blocks_bytes(z, &b, out, LEN, &p), LEN);
		assert_ptr_equal(p, b.data);
		c.enc_len = LEN + 1;
		assert_int_equal(wire_blocks_bytes(z, &c, out, LEN, &p), -EBADMSG);
	}
	check_truncations(WIRE_BLOCKS, buf, len);
	/* Without a zstd context: raw. */
	memset(data, 0, LEN);
	assert_int_equal(wire_blocks_encode(NULL, 0, data, LEN, buf, sizeof(buf), &len), 0);
	assert_int_equal(len, WIRE_BLOCKS_HEADER + LEN);
	assert_int_equal(wire_blocks_encode(z, 0, data, LEN, buf, 1000, &len), 0); /* fits */
	assert_int_equal(wire_blocks_encode(NULL, 0, data, LEN, buf, 1000, &len), -ENOBUFS);

	/* Field checks. */
	assert_int_equal(wire_blocks_encode(z, 0, data, 1, buf, sizeof(buf), &len), 0);
	memcpy(m, buf, len);
	put16(m + 16, 2); /* encoding */
	assert_int_equal(wire_blocks_decode(m, len, &b), -EBADMSG);
	memcpy(m, buf, len);
	put16(m + 16, WIRE_ENC_ZSTD); /* zstd no smaller than raw */
	assert_int_equal(wire_blocks_decode(m, len, &b), -EBADMSG);
	memcpy(m, buf, len);
	put16(m + 18, 1); /* reserved */
	assert_int_equal(wire_blocks_decode(m, len, &b), -EBADMSG);
	memcpy(m, buf, len);
	put32(m + 20, 1); /* reserved */
	assert_int_equal(wire_blocks_decode(m, len, &b), -EBADMSG);
	memcpy(m, buf, len);
	put64(m, INT64_MAX); /* offset + length past 2^63 */
	assert_int_equal(wire_blocks_decode(m, len, &b), -EBADMSG);
	memcpy(m, buf, len);
	put32(m + 8, 0); /* empty */
	put32(m + 12, 0);
	assert_int_equal(wire_blocks_decode(m, WIRE_BLOCKS_HEADER, &b), -EBADMSG);
	put32(m + 8, RESYNC_WIRE_BLOCKS_MAX + 1); /* oversized */
	put32(m + 12, RESYNC_WIRE_BLOCKS_MAX + 1);
	assert_int_equal(wire_blocks_decode(m, WIRE_BLOCKS_HEADER + RESYNC_WIRE_BLOCKS_MAX + 1, &b),
			 -EBADMSG);
	assert_int_equal(wire_blocks_encode(z, 0, data, 0, buf, sizeof(buf), &len), -EINVAL);
	assert_int_equal(wire_blocks_encode(z, 0, data, RESYNC_WIRE_BLOCKS_MAX + 1, buf,
					    sizeof(buf), &len),
			 -EINVAL);

	/* A zstd bomb: a frame declaring far more than the limit. */
	{
		size_t big = 64 << 20, n;
		unsigned char *zeros = calloc(1, big), *frame = malloc(1 << 20);

		n = ZSTD_compress(frame, 1 << 20, zeros, big, 1);
		assert_false(ZSTD_isError(n));
		put64(m, 0);
		put32(m + 8, RESYNC_WIRE_BLOCKS_MAX);
		put32(m + 12, n);
		put16(m + 16, WIRE_ENC_ZSTD);
		put16(m + 18, 0);
		put32(m + 20, 0);
		memcpy(m + WIRE_BLOCKS_HEADER, frame, n);
		assert_int_equal(wire_blocks_decode(m, WIRE_BLOCKS_HEADER + n, &b), 0);
		free(out);
		out = malloc(RESYNC_WIRE_BLOCKS_MAX);
		assert_int_equal(wire_blocks_unpack(z, &b, out, RESYNC_WIRE_BLOCKS_MAX), -EBADMSG);
		free(zeros);
		free(frame);
	}

	assert_int_equal(wire_zstd_new(1000, &z), -EINVAL);
	wire_zstd_free(z);
	wire_zstd_free(NULL);
	free(data);
	free(out);
	free(m);
}

/* EXTENTS: header {n u32, raw_len u32, enc_len u32, encoding u16,
 * reserved u16}, then n of {offset u64, len u32, reserved u32}. */
enum { XH = WIRE_EXTENTS_HEADER, XE = WIRE_EXTENT_SIZE };

static int extents_check(const unsigned char *m, size_t len)
{
	struct wire_extents x;

	return wire_extents_decode(m, len, &x);
}

/* wire_extents_raw_head(): the head of a raw frame whose bytes already
 * sit behind it is byte for byte wire_extents_encode()'s raw frame, and
 * it refuses what that refuses. */
static void test_extents_raw_head(void **state)
{
	enum { LEN = 6 * 4096, HEAD = XH + 3 * XE };
	const struct wire_extent ext[3] = {{4096, 8192}, {65536, 4096}, {1ull << 40, 12288}};
	const struct wire_extent bad[2] = {{65536, 4096}, {4096, 4096}}; /* unsorted */
	unsigned char *frame = malloc(HEAD + LEN), *want = malloc(HEAD + LEN + 16);
	struct wire_extents x;
	size_t len = 0;

	(void)state;
	testlib_fill(frame + HEAD, LEN, 9);
	assert_int_equal(wire_extents_raw_head(ext, 3, frame, HEAD), 0);
	assert_int_equal(wire_extents_encode(NULL, ext, 3, frame + HEAD, want, HEAD + LEN + 16, &len),
			 0);
	assert_int_equal(len, HEAD + LEN);
	assert_memory_equal(frame, want, len);
	assert_int_equal(wire_extents_decode(frame, HEAD + LEN, &x), 0);
	assert_int_equal(x.encoding, WIRE_ENC_RAW);
	assert_int_equal(x.raw_len, LEN);
	/* The head's room must be exactly the head. */
	assert_int_equal(wire_extents_raw_head(ext, 3, frame, HEAD - 1), -ENOBUFS);
	assert_int_equal(wire_extents_raw_head(ext, 3, frame, HEAD + 1), -ENOBUFS);
	assert_int_equal(wire_extents_raw_head(ext, 0, frame, XH), -EINVAL);
	assert_int_equal(wire_extents_raw_head(bad, 2, frame, XH + 2 * XE), -EINVAL);
	assert_int_equal(wire_extents_raw_head(ext, RESYNC_WIRE_EXTENTS_MAX + 1, frame, HEAD),
			 -EINVAL);
	free(frame);
	free(want);
}

static void test_extents(void **state)
{
	enum { LEN = 6 * 4096 };
	const struct wire_extent ext[3] = {{4096, 8192}, {65536, 4096}, {1ull << 40, 12288}};
	struct wire_extent *many = calloc(RESYNC_WIRE_EXTENTS_MAX + 1, sizeof(*many));
	struct wire_zstd *z = NULL;
	unsigned char *data = malloc(LEN), *out = malloc(RESYNC_WIRE_BLOCKS_MAX);
	unsigned char *m = malloc(sizeof(buf));
	struct wire_extents x;
	size_t len = 0, rlen;

	assert_int_equal(wire_zstd_new(1, &z), 0);
	/* Compressible: one zstd frame for all, smaller, and back. */
	for (int i = 0; i < LEN; i++)
		data[i] = "extents "[i % 8] + (i / 4096);
	assert_int_equal(wire_extents_encode(z, ext, 3, data, buf, sizeof(buf), &len), 0);
	assert_int_equal(wire_extents_decode(buf, len, &x), 0);
	assert_int_equal(x.encoding, WIRE_ENC_ZSTD);
	assert_int_equal(x.n_extents, 3);
	assert_int_equal(x.raw_len, LEN);
	assert_true(x.enc_len < LEN / 4);
	assert_int_equal(len, XH + 3 * XE + x.enc_len);
	for (size_t i = 0; i < 3; i++) {
		struct wire_extent e = wire_extents_get(&x, i);

		assert_int_equal(e.offset, ext[i].offset);
		assert_int_equal(e.len, ext[i].len);
	}
	assert_int_equal(wire_extents_unpack(z, &x, out, LEN - 1), -ENOBUFS);
	assert_int_equal(wire_extents_unpack(z, &x, out, LEN), LEN);
	assert_memory_equal(out, data, LEN);
	/* wire_extents_bytes(): compressed data decoded into out. */
	{
		const void *p = NULL;

		memset(out, 0, LEN);
		assert_int_equal(wire_extents_bytes(z, &x, out, LEN - 1, &p), -ENOBUFS);
		assert_int_equal(wire_extents_bytes(z, &x, out, LEN, &p), LEN);
		assert_ptr_equal(p, out);
		assert_memory_equal(out, data, LEN);
	}
	check_truncations(WIRE_EXTENTS, buf, len);

	/* zstd size lies: a frame declaring other than raw_len (the table
	 * and raw_len agree: decoding passes), cut short, with a trailing
	 * byte, or no smaller than raw_len. */
	memcpy(m, buf, len);
	put32(m + 4, LEN - 1);
	put32(m + XH + 2 * XE + 8, 12288 - 1);
	assert_int_equal(wire_extents_decode(m, len, &x), 0);
	assert_int_equal(wire_extents_unpack(z, &x, out, LEN), -EBADMSG);
	memcpy(m, buf, len);
	assert_int_equal(wire_extents_decode(m, len, &x), 0);
	put32(m + 8, x.enc_len - 1);
	assert_int_equal(wire_extents_decode(m, len - 1, &x), 0);
	assert_int_equal(wire_extents_unpack(z, &x, out, LEN), -EBADMSG);
	memcpy(m, buf, len);
	m[len] = 0;
	put32(m + 8, len - XH - 3 * XE + 1);
	assert_int_equal(wire_extents_decode(m, len + 1, &x), 0);
	assert_int_equal(wire_extents_unpack(z, &x, out, LEN), -EBADMSG);
	memcpy(m, buf, len);
	put32(m + 8, LEN); /* "zstd" as long as raw */
	assert_int_equal(extents_check(m, XH + 3 * XE + LEN), -EBADMSG);
	for (size_t i = XH + 3 * XE; i < len; i += 5) {
		/* Corrupt data: refused or exactly raw_len bytes. */
		int r;

		memcpy(m, buf, len);
		m[i] ^= 0x5a;
		assert_int_equal(wire_extents_decode(m, len, &x), 0);
		r = wire_extents_unpack(z, &x, out, LEN);
		assert_true(r == -EBADMSG || r == LEN);
	}

	/* Random: raw; without a zstd context: raw. */
	testlib_fill(data, LEN, 5);
	assert_int_equal(wire_extents_encode(z, ext, 3, data, buf, sizeof(buf), &len), 0);
	assert_int_equal(len, XH + 3 * XE + LEN);
	assert_int_equal(wire_extents_decode(buf, len, &x), 0);
	assert_int_equal(x.encoding, WIRE_ENC_RAW);
	assert_int_equal(wire_extents_unpack(z, &x, out, LEN), LEN);
	assert_memory_equal(out, data, LEN);
	/* wire_extents_bytes(): raw data is the frame's own, not copied;
	 * a raw length other than raw_len is refused as unpack does. */
	{
		const void *p = NULL;
		struct wire_extents y = x;

		memset(out, 0, LEN);
		assert_int_equal(wire_extents_bytes(z, &x, out, LEN, &p), LEN);
		assert_ptr_equal(p, x.data);
		assert_memory_equal(p, data, LEN);
		y.enc_len = LEN - 1;
		p = NULL;
		assert_int_equal(wire_extents_bytes(z, &y, out, LEN, &p), -EBADMSG);
		assert_null(p);
		y = x;
		y.encoding = 7;
		assert_int_equal(wire_extents_bytes(z, &y, out, LEN, &p), -EBADMSG);
	}
	check_truncations(WIRE_EXTENTS, buf, len);
	memset(data, 0, LEN);
	assert_int_equal(wire_extents_encode(NULL, ext, 3, data, m, sizeof(buf), &rlen), 0);
	assert_int_equal(rlen, XH + 3 * XE + LEN);
	assert_int_equal(wire_extents_encode(NULL, ext, 3, data, m, 1000, &rlen), -ENOBUFS);
	assert_int_equal(wire_extents_encode(z, ext, 3, data, m, 1000, &rlen), 0); /* fits */

	/* Refusals on the raw message in buf (len bytes). */
#define REFUSED(edit)                                                                              \
	do {                                                                                       \
		memcpy(m, buf, len);                                                               \
		edit;                                                                              \
		assert_int_equal(extents_check(m, len), -EBADMSG);                                 \
	} while (0)
	assert_int_equal(extents_check(buf, len), 0);
	REFUSED(put64(m + XH + XE, 0));			    /* unsorted */
	REFUSED(put64(m + XH + XE, 4096 + 4096));	    /* overlaps the first */
	REFUSED(put64(m + XH + XE, 4096));		    /* same offset */
	REFUSED(put32(m + XH + 2 * XE + 8, 12288 - 4096)); /* sum < raw_len */
	REFUSED(put32(m + XH + 2 * XE + 8, 12288 + 4096)); /* sum > raw_len */
	REFUSED(put32(m + XH + XE + 8, 0));		    /* an empty extent */
	REFUSED(put32(m + XH + XE + 12, 1));		    /* reserved */
	REFUSED(put16(m + 14, 1));			    /* reserved */
	REFUSED(put16(m + 12, 2));			    /* encoding */
	REFUSED(put16(m + 12, WIRE_ENC_ZSTD));		    /* zstd no smaller */
	REFUSED(put64(m + XH + 2 * XE, INT64_MAX));	    /* past 2^63 */
	REFUSED(put32(m + XH + 2 * XE + 8, 0xffffffffu));   /* huge length */
	REFUSED(put32(m, 0));				    /* no extent */
	REFUSED(put32(m, 4));				    /* a table longer than sent */
	REFUSED(put32(m, 2));				    /* the table cut short */
	REFUSED(put32(m, RESYNC_WIRE_EXTENTS_MAX + 1));
	REFUSED(put32(m, 0xffffffffu));
	REFUSED(put32(m + 4, 0));			    /* raw_len 0 */
	REFUSED(put32(m + 4, RESYNC_WIRE_BLOCKS_MAX + 1));
	REFUSED(put32(m + 8, LEN + 1));			    /* enc_len beyond the payload */
#undef REFUSED
	/* Adjacent extents are valid (the sender merges them, but may not). */
	memcpy(m, buf, len);
	put64(m + XH + XE, 4096 + 8192);
	assert_int_equal(extents_check(m, len), 0);

	/* Too many extents: the encoder refuses, and so does the decoder a
	 * well-formed frame of RESYNC_WIRE_EXTENTS_MAX + 1 one-byte ones. */
	for (size_t i = 0; i <= RESYNC_WIRE_EXTENTS_MAX; i++)
		many[i] = (struct wire_extent){i * 4096, 1};
	assert_int_equal(wire_extents_encode(NULL, many, RESYNC_WIRE_EXTENTS_MAX, data, buf,
					     sizeof(buf), &len),
			 0);
	assert_int_equal(extents_check(buf, len), 0);
	assert_int_equal(wire_extents_encode(NULL, many, RESYNC_WIRE_EXTENTS_MAX + 1, data, buf,
					     sizeof(buf), &len),
			 -EINVAL);
	memcpy(m, buf, XH + RESYNC_WIRE_EXTENTS_MAX * XE);
	put32(m, RESYNC_WIRE_EXTENTS_MAX + 1);
	put32(m + 4, RESYNC_WIRE_EXTENTS_MAX + 1);
	put32(m + 8, RESYNC_WIRE_EXTENTS_MAX + 1);
	put64(m + XH + RESYNC_WIRE_EXTENTS_MAX * XE, RESYNC_WIRE_EXTENTS_MAX * 4096ull);
	put32(m + XH + RESYNC_WIRE_EXTENTS_MAX * XE + 8, 1);
	put32(m + XH + RESYNC_WIRE_EXTENTS_MAX * XE + 12, 0);
	memset(m + XH + (RESYNC_WIRE_EXTENTS_MAX + 1) * XE, 0, RESYNC_WIRE_EXTENTS_MAX + 1);
	rlen = XH + (RESYNC_WIRE_EXTENTS_MAX + 1) * XE + RESYNC_WIRE_EXTENTS_MAX + 1;
	assert_int_equal(extents_check(m, rlen), -EBADMSG);
	put32(m, RESYNC_WIRE_EXTENTS_MAX); /* the same, one fewer: shorter data then */
	assert_int_equal(extents_check(m, rlen), -EBADMSG);

	/* Encoder: what would not decode is refused. */
	{
		const struct wire_extent unsorted[2] = {{8192, 4096}, {0, 4096}};
		const struct wire_extent overlap[2] = {{0, 8192}, {4096, 4096}};
		const struct wire_extent empty[2] = {{0, 4096}, {8192, 0}};
		const struct wire_extent big[2] = {{0, RESYNC_WIRE_BLOCKS_MAX}, {1ull << 30, 1}};

		assert_int_equal(wire_extents_encode(z, unsorted, 2, data, buf, sizeof(buf), &len),
				 -EINVAL);
		assert_int_equal(wire_extents_encode(z, overlap, 2, data, buf, sizeof(buf), &len),
				 -EINVAL);
		assert_int_equal(wire_extents_encode(z, empty, 2, data, buf, sizeof(buf), &len),
				 -EINVAL);
		assert_int_equal(wire_extents_encode(z, big, 2, out, buf, sizeof(buf), &len),
				 -EINVAL);
		assert_int_equal(wire_extents_encode(z, ext, 0, data, buf, sizeof(buf), &len),
				 -EINVAL);
	}

	/* A zstd bomb: one extent of the largest size, a frame declaring
	 * 64 MiB. */
	{
		size_t bigz = 64 << 20, n;
		unsigned char *zeros = calloc(1, bigz), *frame = malloc(1 << 20);

		n = ZSTD_compress(frame, 1 << 20, zeros, bigz, 1);
		assert_false(ZSTD_isError(n));
		put32(m, 1);
		put32(m + 4, RESYNC_WIRE_BLOCKS_MAX);
		put32(m + 8, n);
		put16(m + 12, WIRE_ENC_ZSTD);
		put16(m + 14, 0);
		put64(m + XH, 0);
		put32(m + XH + 8, RESYNC_WIRE_BLOCKS_MAX);
		put32(m + XH + 12, 0);
		memcpy(m + XH + XE, frame, n);
		assert_int_equal(wire_extents_decode(m, XH + XE + n, &x), 0);
		assert_int_equal(wire_extents_unpack(z, &x, out, RESYNC_WIRE_BLOCKS_MAX), -EBADMSG);
		free(zeros);
		free(frame);
	}
	wire_zstd_free(z);
	free(many);
	free(data);
	free(out);
	free(m);
}

static double now_s(void)
{
	return clock_usec() / 1e6;
}

/* zstd level 1 on 64 KiB batches: random data (stays raw) and
 * compressible data. Reported, and checked for being of the right order. */
static void test_zstd_speed(void **state)
{
	enum { BATCH = 64 * 1024, TOTAL = 64 << 20 };
	unsigned char *data = malloc(TOTAL);
	struct wire_zstd *z = NULL;
	uint64_t enc_total = 0;
	size_t len;
	double t, rnd, txt;

	assert_int_equal(wire_zstd_new(1, &z), 0);
	testlib_fill(data, TOTAL, 9);
	t = now_s();
	for (size_t off = 0; off < TOTAL; off += BATCH) {
		assert_int_equal(wire_blocks_encode(z, off, data + off, BATCH, buf, sizeof(buf), &len),
				 0);
		enc_total += len;
	}
	rnd = TOTAL / (now_s() - t) / 1e6;
	assert_int_equal(enc_total, (uint64_t)TOTAL / BATCH * (BATCH + WIRE_BLOCKS_HEADER));

	/* Text-like: words from a small vocabulary, some random bytes. */
	for (size_t i = 0; i < TOTAL; i += 8) {
		static const char words[][8] = {"block ", "resync ", "volume", "hash  ",
						    "primary ", "node   ", "secondar"};
		uint64_t r = i * 2654435761u >> 7;

		memcpy(data + i, words[r % 7], 8);
		if (r % 13 == 0)
			data[i + 3] = r >> 8;
	}
	enc_total = 0;
	t = now_s();
	for (size_t off = 0; off < TOTAL; off += BATCH) {
		assert_int_equal(wire_blocks_encode(z, off, data + off, BATCH, buf, sizeof(buf), &len),
				 0);
		enc_total += len;
	}
	txt = TOTAL / (now_s() - t) / 1e6;
	print_message("zstd level 1, 64 KiB batches: random %.0f MB/s (sent raw), compressible "
		      "%.0f MB/s (ratio %.2f)\n",
		      rnd, txt, (double)TOTAL / enc_total);
	assert_true(enc_total < TOTAL / 2);
	wire_zstd_free(z);
	free(data);
}

/* COPY, COPY_ACK, WEAK_REPLY: round trips, and what a peer may not send. */
static void test_copy(void **state)
{
	struct wire_copy_entry e[2] = {{.dst = 0, .src = 8192, .len = 4096, .check = {1, 2}},
				       {.dst = 4096, .src = 0, .len = 5000, .check = {3, 4}}};
	static unsigned char p[4096];
	struct wire_copy m;
	struct wire_copy_entry g;
	struct wire_copy_ack a;
	struct wire_weak_reply w;
	unsigned char bits[2] = {0x05, 0};
	uint32_t sums[3] = {7, 8, 0xffffffffu};
	struct hash128 pieces[2] = {{1, 2}, {3, 4}}, c1, c2;
	size_t len;

	(void)state;
	assert_int_equal(WIRE_COPY, 30);
	assert_int_equal(WIRE_WEAK_REPLY, 33);
	assert_int_equal(WIRE_FEATURE_COPY, 1 << 14);
	assert_int_equal(WIRE_FEATURE_ROLLING, 1 << 15);
	assert_string_equal(wire_type_name(WIRE_COPY_ACK), "COPY_ACK");
	/* Numbers reserved for other work are not frames of this build. */
	assert_string_equal(wire_type_name(28), "?");
	assert_int_equal(wire_copy_encode(9, 4096, e, 2, p, sizeof(p), &len), 0);
	assert_int_equal(len, 16 + 2 * 40);
	assert_int_equal(wire_payload_check(WIRE_COPY, p, len), 0);
	assert_int_equal(wire_copy_decode(p, len, &m), 0);
	assert_int_equal(m.n, 2);
	assert_int_equal(m.seed, 9);
	assert_int_equal(m.total, 9096);
	g = wire_copy_get(&m, 1);
	assert_int_equal(g.dst, 4096);
	assert_int_equal(g.src, 0);
	assert_int_equal(g.len, 5000);
	assert_int_equal(g.check.hi, 4);
	assert_int_equal(wire_copy_decode(p, len - 1, &m), -EBADMSG);
	/* Overlapping or unsorted destinations, a copy onto itself, an empty
	 * or too long one, a bad piece size: refused both ways. */
	e[0].len = 4097;
	assert_int_equal(wire_copy_encode(9, 4096, e, 2, p, sizeof(p), &len), -EINVAL);
	e[0].len = 4096;
	e[1].src = e[1].dst;
	assert_int_equal(wire_copy_encode(9, 4096, e, 2, p, sizeof(p), &len), -EINVAL);
	e[1].src = 0;
	e[1].len = RESYNC_WIRE_COPY_LEN_MAX + 1;
	assert_int_equal(wire_copy_encode(9, 4096, e, 2, p, sizeof(p), &len), -EINVAL);
	e[1].len = 5000;
	assert_int_equal(wire_copy_encode(9, 4095, e, 2, p, sizeof(p), &len), -EINVAL);
	assert_int_equal(wire_copy_encode(9, 4096, e, 0, p, sizeof(p), &len), -EINVAL);
	assert_int_equal(wire_copy_encode(9, 4096, e, 2, p, 50, &len), -ENOBUFS);
	assert_int_equal(wire_copy_encode(9, 4096, e, 2, p, sizeof(p), &len), 0);
	p[16 + 40 + 20] = 1; /* the second entry's reserved field */
	assert_int_equal(wire_copy_decode(p, len, &m), -EBADMSG);
	p[16 + 40 + 20] = 0;
	p[16 + 40] = 0; /* second dst 4096 -> 0: overlaps the first */
	p[16 + 41] = 0;
	assert_int_equal(wire_copy_decode(p, len, &m), -EBADMSG);
	/* The check depends on every piece, in order, and on the seed. */
	c1 = wire_copy_check(pieces, 2, 5);
	c2 = wire_copy_check(pieces, 2, 6);
	assert_false(hash128_equal(&c1, &c2));
	pieces[1].hi = 5;
	c2 = wire_copy_check(pieces, 2, 5);
	assert_false(hash128_equal(&c1, &c2));

	assert_int_equal(wire_copy_ack_encode(10, bits, p, sizeof(p), &len), 0);
	assert_int_equal(len, 10);
	assert_int_equal(wire_copy_ack_decode(p, len, &a), 0);
	assert_int_equal(a.n_failed, 2);
	assert_true(wire_copy_ack_failed(&a, 0));
	assert_false(wire_copy_ack_failed(&a, 1));
	assert_true(wire_copy_ack_failed(&a, 2));
	p[4] = 3; /* n_failed says 3, the bits 2 */
	assert_int_equal(wire_copy_ack_decode(p, len, &a), -EBADMSG);
	bits[1] = 0x80; /* a bit past n */
	assert_int_equal(wire_copy_ack_encode(10, bits, p, sizeof(p), &len), -EINVAL);

	assert_int_equal(wire_weak_reply_encode(sums, 3, p, sizeof(p), &len), 0);
	assert_int_equal(len, 20);
	assert_int_equal(wire_payload_check(WIRE_WEAK_REPLY, p, len), 0);
	assert_int_equal(wire_weak_reply_decode(p, len, &w), 0);
	assert_int_equal(w.n, 3);
	assert_int_equal(wire_weak_reply_get(&w, 2), 0xffffffffu);
	assert_int_equal(wire_weak_reply_decode(p, len + 1, &w), -EBADMSG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_copy),
		cmocka_unit_test(test_blocks),
		cmocka_unit_test(test_extents),
		cmocka_unit_test(test_extents_raw_head),
		cmocka_unit_test(test_zstd_speed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
