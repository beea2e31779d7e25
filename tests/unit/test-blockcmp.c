/* The block compare and sync fast path, checked against a byte-level model:
 * sizes around block edges, DST longer, shorter, missing or empty, random
 * divergence, every block size, every mode, both real I/O backends, the
 * fault backend, dry runs and hole punching. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cmocka.h>

#include "resync/blockcmp.h"
#include "resync/limits.h"
#include "resync/macro.h"
#include "testlib.h"

DEFINE_FREE_FUNC(struct volume, volume_free)
#define _cleanup_volume_ _cleanup_(volume_freep)

static char *tmpdir, *src_path, *dst_path;

static const enum io_kind kind_uring = IO_KIND_URING, kind_sync = IO_KIND_SYNC;

static enum io_kind kind_of(void **state)
{
	return *(const enum io_kind *)*state;
}

static int group_setup(void **state)
{
	unsetenv("RESYNC_IO");
	unsetenv("RESYNC_FAULT");
	if (testlib_tmpdir_new(&tmpdir) < 0)
		return -1;
	src_path = testlib_path(tmpdir, "src.img");
	dst_path = testlib_path(tmpdir, "dst.img");
	return src_path && dst_path ? 0 : -1;
}

static int group_teardown(void **state)
{
	testlib_tmpdir_remove(tmpdir);
	free(tmpdir);
	free(src_path);
	free(dst_path);
	return 0;
}

static int fault_reset(void **state)
{
	struct io_fault_config none = {0};

	return io_fault_configure(&none) < 0 ? -1 : 0;
}

/* What a run must find: dst (zero-padded or cut to src's size) against src. */
struct expect {
	uint64_t blocks, bytes, pages_bytes;
	struct rangelist ranges;
};

static void expect_build(const unsigned char *a, size_t an, const unsigned char *b, size_t bn,
			 uint32_t bs, struct expect *e)
{
	_cleanup_free_ unsigned char *pad = calloc(an + 1, 1);

	assert_non_null(pad);
	memcpy(pad, b, MIN(an, bn));
	*e = (struct expect){0};
	for (size_t o = 0; o < an; o += bs) {
		size_t l = MIN((size_t)bs, an - o);

		if (memcmp(a + o, pad + o, l) == 0)
			continue;
		e->blocks++;
		e->bytes += l;
		assert_int_equal(rangelist_add(&e->ranges, o, l), 0);
	}
	for (size_t o = 0; o < an; o += RESYNC_PAGE) {
		size_t l = MIN((size_t)RESYNC_PAGE, an - o);

		if (memcmp(a + o, pad + o, l))
			e->pages_bytes += l;
	}
}

static void assert_ranges_equal(const struct rangelist *got, const struct rangelist *want)
{
	assert_int_equal(got->n, want->n);
	for (size_t i = 0; i < got->n; i++) {
		assert_int_equal(got->v[i].off, want->v[i].off);
		assert_int_equal(got->v[i].len, want->v[i].len);
	}
}

static const char *kind_of_name(enum io_kind k)
{
	switch (k) {
	case IO_KIND_URING:
		return "io_uring";
	case IO_KIND_SYNC:
		return "sync";
	case IO_KIND_FAULT:
		return "fault";
	case IO_KIND_AUTO:
		break;
	}
	return "?";
}

static void write_images(const unsigned char *a, size_t an, const unsigned char *b, ssize_t bn)
{
	assert_int_equal(testlib_file_write(src_path, a, an), 0);
	unlink(dst_path);
	if (bn >= 0)
		assert_int_equal(testlib_file_write(dst_path, b, (size_t)bn), 0);
}

/* Compare (write nothing), then sync, then sync again; everything checked
 * against the model. bn < 0: dst missing. */
static void check_pair(const unsigned char *a, size_t an, const unsigned char *b, ssize_t bn,
		       const struct blockcmp_opts *base)
{
	struct blockcmp_opts o = *base;
	size_t blen = bn < 0 ? 0 : (size_t)bn;
	uint32_t bs = o.block_size ? o.block_size : RESYNC_BLOCK_DEFAULT;
	struct expect e;
	struct blockcmp_stats st;

	expect_build(a, an, b, blen, bs, &e);
	write_images(a, an, b, bn);

	/* A compare, which is also what a dry run does: nothing written. */
	if (bn >= 0) {
		_cleanup_volume_ struct volume *src = NULL, *dst = NULL;
		struct rangelist ranges = {0};

		assert_int_equal(volume_open(src_path, 0, &src), 0);
		assert_int_equal(volume_open(dst_path, 0, &dst), 0);
		o.write = false;
		memset(&st, 0xa5, sizeof(st));
		assert_int_equal(blockcmp_run(src, dst, &o, &ranges, &st), 0);
		assert_ranges_equal(&ranges, &e.ranges);
		assert_int_equal(st.blocks_differing, e.blocks);
		assert_int_equal(st.bytes_differing, e.bytes);
		assert_int_equal(st.bytes_written, e.pages_bytes);
		assert_int_equal(st.bytes_punched, 0);
		assert_int_equal(st.bytes_compared, an);
		assert_int_equal(st.bytes_read, an + MIN(an, blen));
		assert_int_equal(st.src_size, an);
		assert_int_equal(st.dst_size_before, blen);
		assert_int_equal(st.done_upto, an);
		assert_int_equal(st.failed_at, BLOCKCMP_AT_NONE);
		assert_true(st.threads >= 1);
		assert_string_equal(st.io_backend, kind_of_name(o.io));
		rangelist_release(&ranges);
		assert_int_equal(testlib_file_equals(dst_path, b, blen), 1);
	}

	/* The sync: dst created if missing, then byte-identical to src. */
	for (int pass = 0; pass < 2; pass++) {
		_cleanup_volume_ struct volume *src = NULL, *dst = NULL;

		assert_int_equal(volume_open(src_path, 0, &src), 0);
		assert_int_equal(volume_open(dst_path, VOLUME_CREATE | VOLUME_LOCK, &dst), 0);
		o.write = true;
		assert_int_equal(blockcmp_run(src, dst, &o, NULL, &st), 0);
		assert_int_equal(st.failed_at, BLOCKCMP_AT_NONE);
		assert_int_equal(st.bytes_compared, an);
		assert_int_equal(st.dst_size_before, pass ? an : blen);
		assert_int_equal(st.done_upto, an);
		assert_int_equal(volume_size(dst), an);
		/* The second pass finds nothing left to do. */
		assert_int_equal(st.blocks_differing, pass ? 0 : e.blocks);
		assert_int_equal(st.bytes_differing, pass ? 0 : e.bytes);
		if (!o.punch_zeros)
			assert_int_equal(st.bytes_written, pass ? 0 : e.pages_bytes);
		assert_int_equal(testlib_file_equals(dst_path, a, an), 1);
	}
	rangelist_release(&e.ranges);
}

/* dst variants of a source of n bytes. */
enum variant {
	V_SAME,	   /* identical */
	V_DIVERGE, /* same size, random ranges changed */
	V_LONGER,  /* diverged, and longer */
	V_SHORTER, /* diverged, and shorter */
	V_EMPTY,   /* exists, 0 bytes */
	V_MISSING, /* does not exist */
	V_ZEROS,   /* all zeros, same size (dst of a fresh volume) */
	V_COUNT,
};

static void check_variants(size_t n, uint32_t bs, enum io_kind kind, unsigned threads,
			   uint64_t seed)
{
	_cleanup_free_ unsigned char *a = malloc(n + 1);
	struct blockcmp_opts o = {.block_size = bs, .io = kind, .threads = threads};

	assert_non_null(a);
	testlib_fill(a, n, seed);
	for (int v = 0; v < V_COUNT; v++) {
		size_t bn = n;
		_cleanup_free_ unsigned char *b = NULL;
		uint64_t st = seed + (uint64_t)v;

		if (v == V_LONGER)
			bn = n + bs / 2 + 5;
		else if (v == V_SHORTER)
			bn = n / 2;
		else if (v == V_EMPTY || v == V_MISSING)
			bn = 0;
		b = calloc(bn + 1, 1);
		assert_non_null(b);
		if (v != V_ZEROS) {
			memcpy(b, a, MIN(n, bn));
			if (bn > n)
				testlib_fill(b + n, bn - n, ~seed);
		}
		if (v == V_DIVERGE || v == V_LONGER || v == V_SHORTER) {
			for (int i = 0; i < 5 && bn; i++) {
				size_t off = (size_t)testlib_rand_below(&st, bn);
				size_t len = 1 + (size_t)testlib_rand_below(&st, 3 * bs);

				testlib_scribble(b, off, MIN(len, bn - off), testlib_rand(&st));
			}
		}
		check_pair(a, n, b, v == V_MISSING ? -1 : (ssize_t)bn, &o);
	}
}

/* Sizes 0, 1, block-1, block, block+1 and odd sizes, for 4K and 64K
 * blocks, with every dst variant. */
static void test_blockcmp_edge_sizes(void **state)
{
	static const uint32_t bss[] = {4096, 65536};

	for (size_t i = 0; i < ARRAY_SIZE(bss); i++) {
		uint32_t bs = bss[i];
		const size_t sizes[] = {0,     1,	bs - 1,		 bs, bs + 1, 3 * bs + 777,
					12345, 1000003, RESYNC_CHUNK + 1};

		for (size_t k = 0; k < ARRAY_SIZE(sizes); k++)
			check_variants(sizes[k], bs, kind_of(state), 0, 1000 * i + k);
	}
}

/* More than one work unit, so that several threads share the job. */
static void test_blockcmp_multi_unit(void **state)
{
	const size_t n = 2 * RESYNC_UNIT + RESYNC_CHUNK + 4097;
	_cleanup_free_ unsigned char *a = NULL, *b = NULL;
	struct blockcmp_opts o = {.io = kind_of(state)};

	assert_int_equal(testlib_image_pair(NULL, NULL, n, n, 60, 200000, 31, &a, &b), 0);
	check_pair(a, n, b, (ssize_t)n, &o);
	o.threads = 1;
	check_pair(a, n, b, (ssize_t)n, &o);
	o.threads = RESYNC_THREADS_MAX;
	o.block_size = 4096;
	check_pair(a, n, b, (ssize_t)n, &o);
}

/* Every block size from 4K to 1M on a small volume. */
static void test_blockcmp_all_block_sizes(void **state)
{
	const size_t n = 3 * 1024 * 1024 + 1234;
	_cleanup_free_ unsigned char *a = NULL, *b = NULL;

	assert_int_equal(testlib_image_pair(NULL, NULL, n, n, 12, 30000, 77, &a, &b), 0);
	for (uint32_t bs = RESYNC_BLOCK_MIN; bs <= RESYNC_BLOCK_MAX; bs *= 2) {
		struct blockcmp_opts o = {.block_size = bs, .io = kind_of(state)};

		check_pair(a, n, b, (ssize_t)n, &o);
	}
}

/* HASH mode finds exactly what MEMCMP finds, for any seed. */
static void test_blockcmp_hash_equals_memcmp(void **state)
{
	const size_t n = 5 * 1024 * 1024 + 99;
	_cleanup_free_ unsigned char *a = NULL, *b = NULL;
	struct rangelist r_mem = {0};
	struct blockcmp_stats s_mem;

	assert_int_equal(testlib_image_pair(src_path, dst_path, n, n - 4000, 40, 20000, 5, &a, &b),
			 0);
	{
		_cleanup_volume_ struct volume *src = NULL, *dst = NULL;
		struct blockcmp_opts o = {.block_size = 16384, .io = kind_of(state)};

		assert_int_equal(volume_open(src_path, 0, &src), 0);
		assert_int_equal(volume_open(dst_path, 0, &dst), 0);
		assert_int_equal(blockcmp_run(src, dst, &o, &r_mem, &s_mem), 0);
		assert_true(s_mem.blocks_differing > 0);
		for (uint64_t seed = 0; seed < 3; seed++) {
			struct rangelist r = {0};
			struct blockcmp_stats s;

			o.mode = BLOCKCMP_HASH;
			o.seed = seed * 0x9e3779b97f4a7c15ULL;
			assert_int_equal(blockcmp_run(src, dst, &o, &r, &s), 0);
			assert_ranges_equal(&r, &r_mem);
			assert_int_equal(s.blocks_differing, s_mem.blocks_differing);
			assert_int_equal(s.bytes_differing, s_mem.bytes_differing);
			assert_int_equal(s.bytes_written, s_mem.bytes_written);
			rangelist_release(&r);
		}
	}
	rangelist_release(&r_mem);
	/* And a HASH sync gives the same image. */
	{
		struct blockcmp_opts o = {.block_size = 16384,
					  .io = kind_of(state),
					  .mode = BLOCKCMP_HASH,
					  .seed = 12345};

		check_pair(a, n, b, (ssize_t)(n - 4000), &o);
	}
}

/* READ_ONLY reads both volumes and compares nothing. */
static void test_blockcmp_read_only(void **state)
{
	const size_t n = 2 * 1024 * 1024 + 5;
	_cleanup_free_ unsigned char *a = NULL, *b = NULL;
	_cleanup_volume_ struct volume *src = NULL, *dst = NULL;
	struct blockcmp_opts o = {.io = kind_of(state), .mode = BLOCKCMP_READ_ONLY};
	struct rangelist r = {0};
	struct blockcmp_stats s;

	assert_int_equal(testlib_image_pair(src_path, dst_path, n, n / 2, 10, 9999, 8, &a, &b), 0);
	assert_int_equal(volume_open(src_path, 0, &src), 0);
	assert_int_equal(volume_open(dst_path, 0, &dst), 0);
	assert_int_equal(blockcmp_run(src, dst, &o, &r, &s), 0);
	assert_int_equal(r.n, 0);
	assert_int_equal(s.blocks_differing, 0);
	assert_int_equal(s.bytes_written, 0);
	assert_int_equal(s.bytes_compared, n);
	assert_int_equal(s.bytes_read, n + n / 2);
	assert_int_equal(s.done_upto, n);
	assert_int_equal(testlib_file_equals(dst_path, b, n / 2), 1);
	rangelist_release(&r);
}

/* Hashing a volume, or a sub-range of it, equals hash_block per block. */
static void test_blockcmp_hash_volume(void **state)
{
	const size_t n = RESYNC_UNIT + 3 * RESYNC_CHUNK + 1234;
	const uint32_t bs = 65536;
	const size_t nblocks = DIV_ROUND_UP(n, bs);
	_cleanup_free_ unsigned char *a = malloc(n);
	_cleanup_free_ struct hash128 *h = calloc(nblocks, sizeof(*h));
	_cleanup_volume_ struct volume *v = NULL;
	struct blockcmp_opts o = {.block_size = bs, .io = kind_of(state), .seed = 0xabcdef};
	const struct {
		size_t first, count; /* in blocks; the range ends at min(end, n) */
	} cases[] = {
	    {0, nblocks},	  /* all of it */
	    {2, 5},		  /* in the middle */
	    {nblocks - 3, 3},	  /* to the end, short last block */
	    {nblocks - 1, 1},	  /* only the short block */
	    {100, nblocks - 100}, /* across a unit boundary */
	    {7, 0},		  /* nothing */
	};

	assert_non_null(a);
	assert_non_null(h);
	testlib_fill(a, n, 4);
	assert_int_equal(testlib_file_write(src_path, a, n), 0);
	assert_int_equal(volume_open(src_path, 0, &v), 0);
	for (unsigned threads = 1; threads <= 3; threads += 2) {
		o.threads = threads;
		for (size_t c = 0; c < ARRAY_SIZE(cases); c++) {
			uint64_t off = (uint64_t)cases[c].first * bs;
			uint64_t len = MIN((uint64_t)cases[c].count * bs, n - off);

			memset(h, 0, nblocks * sizeof(*h));
			assert_int_equal(blockcmp_hash_volume(v, off, len, &o, h), 0);
			for (size_t i = 0; i < cases[c].count; i++) {
				size_t bo = (size_t)off + i * bs;
				struct hash128 want =
				    hash_block(a + bo, MIN((size_t)bs, n - bo), o.seed);

				assert_true(hash128_equal(&h[i], &want));
			}
			/* Nothing past the range is touched. */
			for (size_t i = cases[c].count; i < nblocks; i++)
				assert_true(h[i].lo == 0 && h[i].hi == 0);
		}
	}
	/* Bad ranges and block sizes. */
	assert_int_equal(blockcmp_hash_volume(v, 4096, bs, &o, h), -EINVAL);
	assert_int_equal(blockcmp_hash_volume(v, 0, n + 1, &o, h), -EINVAL);
	assert_int_equal(blockcmp_hash_volume(v, (uint64_t)nblocks * bs * 2, 0, &o, h), -EINVAL);
	assert_int_equal(blockcmp_hash_volume(v, bs, UINT64_MAX, &o, h), -EINVAL);
	o.block_size = 5000;
	assert_int_equal(blockcmp_hash_volume(v, 0, 4096, &o, h), -EINVAL);
}

/* Extra hashes (the proof's leaves): seed 0 over extra_block-sized
 * blocks from the same reads, beside the seeded hashes of smaller ones,
 * whichever way the volume is read. */
static void test_blockcmp_hash_extra(void **state)
{
	const size_t n = RESYNC_UNIT + 2 * RESYNC_CHUNK + 70000;
	const uint32_t bs = 16384, xb = 65536;
	const size_t nb = DIV_ROUND_UP(n, bs), nx = DIV_ROUND_UP(n, xb);
	_cleanup_free_ unsigned char *a = malloc(n);
	_cleanup_free_ struct hash128 *h = calloc(nb, sizeof(*h));
	_cleanup_free_ struct hash128 *x = calloc(nx, sizeof(*x));
	_cleanup_volume_ struct volume *v = NULL;
	struct blockcmp_opts o = {.block_size = bs, .io = kind_of(state), .seed = 77,
				  .extra_block = xb, .extra_hashes = x};

	assert_non_null(a);
	assert_non_null(h);
	assert_non_null(x);
	testlib_fill(a, n, 9);
	assert_int_equal(testlib_file_write(src_path, a, n), 0);
	assert_int_equal(volume_open(src_path, 0, &v), 0);
	for (unsigned threads = 1; threads <= 2; threads++) {
		o.threads = threads;
		memset(x, 0, nx * sizeof(*x));
		assert_int_equal(blockcmp_hash_volume(v, 0, n, &o, h), 0);
		for (size_t i = 0; i < nb; i++) {
			struct hash128 want = hash_block(a + i * bs, MIN((size_t)bs, n - i * bs), 77);

			assert_true(hash128_equal(&h[i], &want));
		}
		for (size_t i = 0; i < nx; i++) {
			struct hash128 want = hash_block(a + i * xb, MIN((size_t)xb, n - i * xb), 0);

			assert_true(hash128_equal(&x[i], &want));
		}
	}
	/* An extra block that is not a multiple of the block, or a range
	 * that does not start on one, is refused. */
	o.extra_block = 8192;
	assert_int_equal(blockcmp_hash_volume(v, 0, n, &o, h), -EINVAL);
	o.extra_block = xb;
	assert_int_equal(blockcmp_hash_volume(v, bs, n - bs, &o, h), -EINVAL);
	o.extra_block = 0;
	assert_int_equal(blockcmp_hash_volume(v, 0, n, &o, h), -EINVAL);
}

static void test_blockcmp_bad_args(void **state)
{
	_cleanup_volume_ struct volume *src = NULL, *same = NULL, *dst = NULL, *busy = NULL;
	struct blockcmp_opts o = {.io = IO_KIND_SYNC};
	const uint32_t bad_bs[] = {1, 512, 4095, 4097, 12288, 2 << 20, 3 << 20};
	unsigned char buf[8192];

	testlib_fill(buf, sizeof(buf), 1);
	assert_int_equal(testlib_file_write(src_path, buf, sizeof(buf)), 0);
	assert_int_equal(testlib_file_write(dst_path, buf, 100), 0);
	assert_int_equal(volume_open(src_path, 0, &src), 0);
	assert_int_equal(volume_open(src_path, VOLUME_WRITE, &same), 0);
	assert_int_equal(volume_open(dst_path, VOLUME_WRITE | VOLUME_LOCK, &dst), 0);

	/* One writer at a time. */
	assert_int_equal(volume_open(dst_path, VOLUME_WRITE | VOLUME_LOCK, &busy), -EBUSY);
	assert_null(busy);
	assert_int_equal(volume_open(tmpdir, 0, &busy), -EISDIR);
	assert_int_equal(volume_open("/dev/null", 0, &busy), -EINVAL);
	/* A FIFO is refused at once, not waited on for a writer (reader). */
	{
		_cleanup_free_ char *fifo = testlib_path(tmpdir, "fifo");

		assert_non_null(fifo);
		assert_int_equal(mkfifo(fifo, 0600), 0);
		alarm(10); /* a hang fails the test instead of blocking it */
		assert_int_equal(volume_open(fifo, 0, &busy), -EINVAL);
		assert_int_equal(volume_open(fifo, VOLUME_WRITE | VOLUME_LOCK, &busy), -EINVAL);
		alarm(0);
		assert_null(busy);
		unlink(fifo);
	}

	/* The same file twice is refused before anything is written. */
	o.write = true;
	assert_int_equal(blockcmp_run(src, same, &o, NULL, NULL), -ELOOP);
	for (size_t i = 0; i < ARRAY_SIZE(bad_bs); i++) {
		o.block_size = bad_bs[i];
		assert_int_equal(blockcmp_run(src, dst, &o, NULL, NULL), -EINVAL);
	}
	assert_int_equal(testlib_file_equals(src_path, buf, sizeof(buf)), 1);
	assert_int_equal(testlib_file_equals(dst_path, buf, 100), 1);
	/* 0 is the default block size. */
	o.block_size = 0;
	assert_int_equal(blockcmp_run(src, dst, &o, NULL, NULL), 0);
	assert_int_equal(testlib_file_equals(dst_path, buf, sizeof(buf)), 1);
}

/* Zero runs of the source are punched as holes and read back as zeros. */
static void test_blockcmp_punch_zeros(void **state)
{
	const size_t n = 2 * 1024 * 1024;
	_cleanup_free_ unsigned char *a = NULL, *b = NULL;
	struct blockcmp_opts o = {.io = kind_of(state), .punch_zeros = true};
	struct blockcmp_stats st;

	assert_int_equal(testlib_image_pair(NULL, NULL, n, n, 0, 0, 6, &a, &b), 0);
	/* Zeros in src over data in dst: 256K at 128K (punched), 8K at 1M
	 * (too short to punch: written), and 64K at the end. */
	memset(a + 128 * 1024, 0, 256 * 1024);
	memset(a + 1024 * 1024, 0, 8192);
	memset(a + n - 65536, 0, 65536);
	write_images(a, n, b, (ssize_t)n);
	{
		_cleanup_volume_ struct volume *src = NULL, *dst = NULL;
		_cleanup_close_ int fd = -1;
		off_t hole;

		assert_int_equal(volume_open(src_path, 0, &src), 0);
		assert_int_equal(volume_open(dst_path, VOLUME_WRITE | VOLUME_LOCK, &dst), 0);
		o.write = true;
		assert_int_equal(blockcmp_run(src, dst, &o, NULL, &st), 0);
		assert_int_equal(testlib_file_equals(dst_path, a, n), 1);
		assert_int_equal(st.bytes_written, (256 + 8 + 64) * 1024);
		/* This file system (ext4, tmpfs, xfs, btrfs) punches holes. */
		assert_int_equal(st.bytes_punched, (256 + 64) * 1024);
		fd = open(dst_path, O_RDONLY | O_CLOEXEC);
		assert_true(fd >= 0);
		hole = lseek(fd, 0, SEEK_HOLE);
		assert_int_equal(hole, 128 * 1024);
		assert_int_equal(lseek(fd, hole, SEEK_DATA), 384 * 1024);
	}
	/* Punching is not needed to be right: the same without it. */
	o.punch_zeros = false;
	check_pair(a, n, b, (ssize_t)n, &o);
}

/* A dry run (no write) changes nothing: bytes, size, even a missing file. */
static void test_blockcmp_dry_run(void **state)
{
	const size_t n = 3 * 1024 * 1024 + 11;
	_cleanup_free_ unsigned char *a = NULL, *b = NULL;
	struct blockcmp_opts o = {.io = kind_of(state), .punch_zeros = true};
	const size_t dst_sizes[] = {n, n / 3, n + 100000};

	for (size_t i = 0; i < ARRAY_SIZE(dst_sizes); i++) {
		_cleanup_volume_ struct volume *src = NULL, *dst = NULL;
		struct blockcmp_stats st;
		struct stat before, after;
		struct expect e;

		assert_int_equal(
		    testlib_image_pair(src_path, dst_path, n, dst_sizes[i], 20, 50000, i, &a, &b),
		    0);
		memset(a, 0, 512 * 1024); /* a zero run it would punch */
		assert_int_equal(testlib_file_write(src_path, a, n), 0);
		expect_build(a, n, b, dst_sizes[i], RESYNC_BLOCK_DEFAULT, &e);
		assert_int_equal(stat(dst_path, &before), 0);
		assert_int_equal(volume_open(src_path, 0, &src), 0);
		assert_int_equal(volume_open(dst_path, 0, &dst), 0);
		assert_int_equal(blockcmp_run(src, dst, &o, NULL, &st), 0);
		assert_int_equal(st.bytes_written, e.pages_bytes);
		assert_int_equal(st.bytes_punched, 0);
		assert_int_equal(testlib_file_equals(dst_path, b, dst_sizes[i]), 1);
		assert_int_equal(stat(dst_path, &after), 0);
		assert_int_equal(after.st_size, before.st_size);
		assert_int_equal(after.st_blocks, before.st_blocks);
		rangelist_release(&e.ranges);
		free(a);
		free(b);
		a = b = NULL;
	}
}

/* ---- faults: how far a failed run got must be exact ---- */

#define FAULT_SIZE ((size_t)2 * RESYNC_UNIT + RESYNC_CHUNK)
/* One changed page in each work unit. */
#define FAULT_PAGE(u) ((size_t)(u)*RESYNC_UNIT + 100 * 1024)

static unsigned char *fault_src, *fault_dst;

static int fault_group_setup(void **state)
{
	fault_src = malloc(FAULT_SIZE);
	fault_dst = malloc(FAULT_SIZE);
	if (!fault_src || !fault_dst)
		return -1;
	testlib_fill(fault_src, FAULT_SIZE, 99);
	memcpy(fault_dst, fault_src, FAULT_SIZE);
	for (int u = 0; u < 3; u++)
		testlib_scribble(fault_dst, FAULT_PAGE(u), RESYNC_PAGE, (uint64_t)u + 1);
	return 0;
}

static int fault_group_teardown(void **state)
{
	free(fault_src);
	free(fault_dst);
	return 0;
}

static int fault_sync(unsigned ops, unsigned long nth, int err, unsigned threads,
		      struct blockcmp_stats *st)
{
	_cleanup_volume_ struct volume *src = NULL, *dst = NULL;
	struct blockcmp_opts o = {.io = IO_KIND_FAULT, .threads = threads, .write = true};
	struct io_fault_config cfg = {.ops = ops, .nth = nth, .count = 1, .err = err};

	write_images(fault_src, FAULT_SIZE, fault_dst, FAULT_SIZE);
	assert_int_equal(volume_open(src_path, 0, &src), 0);
	assert_int_equal(volume_open(dst_path, VOLUME_WRITE | VOLUME_LOCK, &dst), 0);
	assert_int_equal(io_fault_configure(&cfg), 0);
	return blockcmp_run(src, dst, &o, NULL, st);
}

/* dst holds src below upto and its old bytes from upto on. */
static void assert_dst_synced_upto(size_t upto)
{
	_cleanup_free_ unsigned char *got = NULL;
	size_t n;

	assert_int_equal(testlib_file_read(dst_path, (void **)&got, &n), 0);
	assert_int_equal(n, FAULT_SIZE);
	assert_memory_equal(got, fault_src, upto);
	assert_memory_equal(got + upto, fault_dst + upto, FAULT_SIZE - upto);
}

/* One thread reads chunk k of both volumes as calls 2k+1 (src) and 2k+2
 * (dst), in order. */
#define CHUNKS_PER_UNIT (RESYNC_UNIT / RESYNC_CHUNK)

static void test_fault_read(void **state)
{
	struct blockcmp_stats st;

	/* The destination's read of the first chunk of unit 1. */
	assert_int_equal(fault_sync(IO_OP_READ, 2 * CHUNKS_PER_UNIT + 2, EIO, 1, &st), -EIO);
	assert_int_equal(st.failed_at, BLOCKCMP_AT_READ_DST);
	assert_int_equal(st.done_upto, RESYNC_UNIT);
	assert_int_equal(st.bytes_written, RESYNC_PAGE);
	assert_int_equal(st.src_size, FAULT_SIZE);
	assert_dst_synced_upto(RESYNC_UNIT);

	/* The source's read of the same chunk. */
	assert_int_equal(fault_sync(IO_OP_READ, 2 * CHUNKS_PER_UNIT + 1, EIO, 1, &st), -EIO);
	assert_int_equal(st.failed_at, BLOCKCMP_AT_READ_SRC);
	assert_int_equal(st.done_upto, RESYNC_UNIT);
	assert_dst_synced_upto(RESYNC_UNIT);

	/* The very first read: nothing done, nothing written. */
	assert_int_equal(fault_sync(IO_OP_READ, 1, EIO, 1, &st), -EIO);
	assert_int_equal(st.failed_at, BLOCKCMP_AT_READ_SRC);
	assert_int_equal(st.done_upto, 0);
	assert_int_equal(st.bytes_written, 0);
	assert_dst_synced_upto(0);

	/* The last unit. */
	assert_int_equal(fault_sync(IO_OP_READ, 4 * CHUNKS_PER_UNIT + 2, EROFS, 1, &st), -EROFS);
	assert_int_equal(st.failed_at, BLOCKCMP_AT_READ_DST);
	assert_int_equal(st.done_upto, 2 * RESYNC_UNIT);
	assert_int_equal(st.bytes_written, 2 * RESYNC_PAGE);
	assert_dst_synced_upto(2 * RESYNC_UNIT);
}

static void test_fault_write(void **state)
{
	static const int errs[] = {EIO, ENOSPC, EDQUOT};
	struct blockcmp_stats st;

	for (size_t i = 0; i < ARRAY_SIZE(errs); i++) {
		/* The second write is unit 1's page. */
		assert_int_equal(fault_sync(IO_OP_WRITE, 2, errs[i], 1, &st), -errs[i]);
		assert_int_equal(st.failed_at, BLOCKCMP_AT_WRITE);
		assert_int_equal(st.done_upto, RESYNC_UNIT);
		assert_int_equal(st.bytes_written, RESYNC_PAGE);
		/* The failed chunk's block is not counted as compared. */
		assert_int_equal(st.blocks_differing, 1);
		assert_dst_synced_upto(RESYNC_UNIT);
	}
	/* The first write. */
	assert_int_equal(fault_sync(IO_OP_WRITE, 1, ENOSPC, 1, &st), -ENOSPC);
	assert_int_equal(st.failed_at, BLOCKCMP_AT_WRITE);
	assert_int_equal(st.done_upto, 0);
	assert_int_equal(st.bytes_written, 0);
	assert_dst_synced_upto(0);
}

static void test_fault_flush(void **state)
{
	struct blockcmp_stats st;

	assert_int_equal(fault_sync(IO_OP_FSYNC, 1, EIO, 1, &st), -EIO);
	assert_int_equal(st.failed_at, BLOCKCMP_AT_FLUSH);
	assert_int_equal(st.done_upto, FAULT_SIZE);
	assert_int_equal(st.bytes_written, 3 * RESYNC_PAGE);
	assert_dst_synced_upto(FAULT_SIZE);
}

/* With several threads the failing unit is not known in advance, but what
 * the run reports as done must be done. */
static void test_fault_threads(void **state)
{
	for (unsigned long nth = 1; nth <= 3; nth++) {
		struct blockcmp_stats st;
		_cleanup_free_ unsigned char *got = NULL;
		size_t n;

		assert_int_equal(fault_sync(IO_OP_WRITE, nth, EIO, 3, &st), -EIO);
		assert_int_equal(st.failed_at, BLOCKCMP_AT_WRITE);
		assert_int_equal(st.done_upto % RESYNC_UNIT, 0);
		assert_true(st.done_upto < FAULT_SIZE);
		/* Writes before the nth went through; other threads may have
		 * written theirs before they saw the failure. */
		assert_true(st.bytes_written >= (nth - 1) * RESYNC_PAGE);
		assert_true(st.bytes_written <= 2 * RESYNC_PAGE);
		assert_int_equal(testlib_file_read(dst_path, (void **)&got, &n), 0);
		assert_memory_equal(got, fault_src, st.done_upto);
	}
	/* 34 reads in all: 17 chunks of both volumes. */
	for (unsigned long nth = 1; nth <= 34; nth += 3) {
		struct blockcmp_stats st;
		_cleanup_free_ unsigned char *got = NULL;
		size_t n;

		assert_int_equal(fault_sync(IO_OP_READ, nth, EIO, 3, &st), -EIO);
		assert_true(st.failed_at == BLOCKCMP_AT_READ_SRC ||
			    st.failed_at == BLOCKCMP_AT_READ_DST);
		assert_true(st.done_upto < FAULT_SIZE);
		assert_int_equal(testlib_file_read(dst_path, (void **)&got, &n), 0);
		assert_memory_equal(got, fault_src, st.done_upto);
	}
}

/* Short transfers and EINTR are absorbed: the run completes exactly. */
static void test_fault_transient(void **state)
{
	_cleanup_volume_ struct volume *src = NULL, *dst = NULL;
	struct blockcmp_opts o = {.io = IO_KIND_FAULT, .write = true};
	const struct io_fault_config cfgs[] = {
	    {.short_io = true},
	    {.ops = IO_OP_READ, .nth = 3, .count = 5, .err = EINTR},
	    {.ops = IO_OP_WRITE, .nth = 1, .count = 2, .err = EAGAIN, .short_io = true},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cfgs); i++) {
		struct blockcmp_stats st;

		write_images(fault_src, FAULT_SIZE, fault_dst, FAULT_SIZE);
		volume_free(TAKE_PTR(src));
		volume_free(TAKE_PTR(dst));
		assert_int_equal(volume_open(src_path, 0, &src), 0);
		assert_int_equal(volume_open(dst_path, VOLUME_WRITE | VOLUME_LOCK, &dst), 0);
		assert_int_equal(io_fault_configure(&cfgs[i]), 0);
		assert_int_equal(blockcmp_run(src, dst, &o, NULL, &st), 0);
		assert_true(io_fault_calls() > 0);
		assert_int_equal(st.blocks_differing, 3);
		assert_int_equal(st.bytes_written, 3 * RESYNC_PAGE);
		assert_int_equal(st.done_upto, FAULT_SIZE);
		assert_dst_synced_upto(FAULT_SIZE);
	}
}

static int cancel_after_first(void *arg, uint64_t done, uint64_t total)
{
	unsigned *calls = arg;

	(*calls)++;
	assert_true(done <= total);
	return done >= RESYNC_UNIT;
}

static void test_cancel(void **state)
{
	_cleanup_volume_ struct volume *src = NULL, *dst = NULL;
	unsigned calls = 0;
	struct blockcmp_opts o = {.io = IO_KIND_SYNC,
				  .threads = 1,
				  .write = true,
				  .progress = cancel_after_first,
				  .progress_arg = &calls};
	struct blockcmp_stats st;

	write_images(fault_src, FAULT_SIZE, fault_dst, FAULT_SIZE);
	assert_int_equal(volume_open(src_path, 0, &src), 0);
	assert_int_equal(volume_open(dst_path, VOLUME_WRITE | VOLUME_LOCK, &dst), 0);
	assert_int_equal(blockcmp_run(src, dst, &o, NULL, &st), -ECANCELED);
	assert_int_equal(calls, 1);
	assert_int_equal(st.failed_at, BLOCKCMP_AT_CANCEL);
	assert_int_equal(st.done_upto, RESYNC_UNIT);
	assert_dst_synced_upto(RESYNC_UNIT);
}

/* The nice value of the worker that reports progress (its own thread). */
static int nice_seen(void *arg, uint64_t done, uint64_t total)
{
	(void)done;
	(void)total;
	errno = 0;
	*(int *)arg = getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
	return 0;
}

/* opts.nice: the workers hash at a raised nice value, on threads of their
 * own; the caller's thread keeps its own; the hashes are the same. */
static void test_hash_nice(void **state)
{
	const size_t n = RESYNC_UNIT + 5000;
	_cleanup_free_ unsigned char *a = malloc(n);
	_cleanup_free_ struct hash128 *h0 = calloc(DIV_ROUND_UP(n, 4096), sizeof(*h0));
	_cleanup_free_ struct hash128 *h1 = calloc(DIV_ROUND_UP(n, 4096), sizeof(*h1));
	_cleanup_volume_ struct volume *v = NULL;
	int mine, seen = -100;
	struct blockcmp_opts o = {.block_size = 4096, .seed = 9, .threads = 1};

	(void)state;
	assert_non_null(a);
	testlib_fill(a, n, 11);
	assert_int_equal(testlib_file_write(src_path, a, n), 0);
	assert_int_equal(volume_open(src_path, 0, &v), 0);
	errno = 0;
	mine = getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
	assert_int_equal(errno, 0);
	assert_int_equal(blockcmp_hash_volume(v, 0, n, &o, h0), 0);
	o.nice = 3;
	o.progress = nice_seen;
	o.progress_arg = &seen;
	assert_int_equal(blockcmp_hash_volume(v, 0, n, &o, h1), 0);
	assert_int_equal(seen, MIN(mine + 3, 19));
	assert_int_equal(getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid)), mine);
	assert_memory_equal(h0, h1, DIV_ROUND_UP(n, 4096) * sizeof(*h0));
}

#define KIND_TESTS(kind)                                                                           \
	cmocka_unit_test_prestate(test_blockcmp_edge_sizes, (void *)&kind),                        \
	    cmocka_unit_test_prestate(test_blockcmp_multi_unit, (void *)&kind),                    \
	    cmocka_unit_test_prestate(test_blockcmp_all_block_sizes, (void *)&kind),               \
	    cmocka_unit_test_prestate(test_blockcmp_hash_equals_memcmp, (void *)&kind),            \
	    cmocka_unit_test_prestate(test_blockcmp_read_only, (void *)&kind),                     \
	    cmocka_unit_test_prestate(test_blockcmp_hash_volume, (void *)&kind),                   \
	    cmocka_unit_test_prestate(test_blockcmp_hash_extra, (void *)&kind),                    \
	    cmocka_unit_test_prestate(test_blockcmp_punch_zeros, (void *)&kind),                   \
	    cmocka_unit_test_prestate(test_blockcmp_dry_run, (void *)&kind)

int main(void)
{
	const struct CMUnitTest uring_tests[] = {
	    KIND_TESTS(kind_uring),
	};
	const struct CMUnitTest tests[] = {
	    KIND_TESTS(kind_sync),
	    cmocka_unit_test(test_blockcmp_bad_args),
	};
	const struct CMUnitTest fault_tests[] = {
	    cmocka_unit_test_teardown(test_fault_read, fault_reset),
	    cmocka_unit_test_teardown(test_fault_write, fault_reset),
	    cmocka_unit_test_teardown(test_fault_flush, fault_reset),
	    cmocka_unit_test_teardown(test_fault_threads, fault_reset),
	    cmocka_unit_test_teardown(test_fault_transient, fault_reset),
	    cmocka_unit_test(test_cancel),
	    cmocka_unit_test(test_hash_nice),
	};
	int failed;

	if (group_setup(NULL) < 0)
		return 1;
	/* Valgrind does not see what the kernel writes through io_uring:
	 * under it the plain backend's variants make the same checks. */
	failed = 0;
	if (!testlib_valgrind())
		failed = cmocka_run_group_tests_name("blockcmp io_uring", uring_tests, NULL, NULL);
	failed += cmocka_run_group_tests_name("blockcmp", tests, NULL, NULL);
	failed += cmocka_run_group_tests_name("faults", fault_tests, fault_group_setup,
					      fault_group_teardown);
	group_teardown(NULL);
	return failed ? 1 : 0;
}
