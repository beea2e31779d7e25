/* Volume I/O: the io_uring and plain backends behind one ops table, the
 * generic layer that makes transfers total, and the fault backend. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "resync/io.h"
#include "resync/limits.h"
#include "resync/macro.h"
#include "testlib.h"

static char *tmpdir;

static const enum io_kind kind_uring = IO_KIND_URING, kind_sync = IO_KIND_SYNC,
			  kind_fault = IO_KIND_FAULT;

DEFINE_FREE_FUNC(struct io_ctx, io_ctx_free)
#define _cleanup_io_ _cleanup_(io_ctx_freep)

static int group_setup(void **state)
{
	unsetenv("RESYNC_IO");
	unsetenv("RESYNC_FAULT");
	return testlib_tmpdir_new(&tmpdir) < 0 ? -1 : 0;
}

static int group_teardown(void **state)
{
	testlib_tmpdir_remove(tmpdir);
	free(tmpdir);
	return 0;
}

static int fault_reset(void **state)
{
	struct io_fault_config none = {0};

	return io_fault_configure(&none) < 0 ? -1 : 0;
}

/* An fd on a fresh file of size bytes of seed's stream (size may be 0). */
static int file_new(const char *name, size_t size, uint64_t seed, int flags)
{
	_cleanup_free_ char *path = testlib_path(tmpdir, name);
	_cleanup_free_ unsigned char *buf = malloc(size + 1);
	int fd;

	assert_non_null(path);
	assert_non_null(buf);
	testlib_fill(buf, size, seed);
	assert_int_equal(testlib_file_write(path, buf, size), 0);
	fd = open(path, flags | O_CLOEXEC);
	assert_true(fd >= 0);
	return fd;
}

static enum io_kind kind_of(void **state)
{
	return *(const enum io_kind *)*state;
}

static void test_io_name(void **state)
{
	_cleanup_io_ struct io_ctx *ctx = NULL;
	const char *want = kind_of(state) == IO_KIND_URING  ? "io_uring"
			   : kind_of(state) == IO_KIND_SYNC ? "sync"
							    : "fault";

	assert_int_equal(io_ctx_new(kind_of(state), 4, &ctx), 0);
	assert_string_equal(io_ctx_name(ctx), want);
	assert_int_equal(io_ctx_depth(ctx), 4);
	assert_int_equal(io_ctx_inflight(ctx), 0);
}

static void test_io_roundtrip(void **state)
{
	_cleanup_io_ struct io_ctx *ctx = NULL;
	_cleanup_close_ int fd = file_new("rt", 0, 0, O_RDWR);
	enum { SIZE = 3 * 1024 * 1024 + 17 };
	_cleanup_free_ unsigned char *buf = malloc(SIZE), *back = malloc(SIZE);

	assert_non_null(buf);
	assert_non_null(back);
	assert_int_equal(io_ctx_new(kind_of(state), 2, &ctx), 0);
	testlib_fill(buf, SIZE, 42);
	assert_int_equal(io_pwrite_full(ctx, fd, buf, SIZE, 0), SIZE);
	memset(back, 0, SIZE);
	assert_int_equal(io_pread_full(ctx, fd, back, SIZE, 0), SIZE);
	assert_memory_equal(buf, back, SIZE);

	/* Unaligned offset and length, in the middle. */
	testlib_scribble(buf, 12345, 77777, 1);
	assert_int_equal(io_pwrite_full(ctx, fd, buf + 12345, 77777, 12345), 77777);
	assert_int_equal(io_pread_full(ctx, fd, back + 12345, 77777, 12345), 77777);
	assert_memory_equal(buf, back, SIZE);

	/* Zero-length transfers are fine. */
	assert_int_equal(io_pwrite_full(ctx, fd, buf, 0, 5), 0);
	assert_int_equal(io_pread_full(ctx, fd, back, 0, 5), 0);
	assert_int_equal(io_fdatasync(ctx, fd), 0);
	assert_int_equal(io_ctx_inflight(ctx), 0);
}

static void test_io_eof(void **state)
{
	_cleanup_io_ struct io_ctx *ctx = NULL;
	_cleanup_close_ int fd = file_new("eof", 10000, 9, O_RDONLY);
	unsigned char want[10000], buf[16384];

	testlib_fill(want, sizeof(want), 9);
	assert_int_equal(io_ctx_new(kind_of(state), 1, &ctx), 0);
	/* A read stops short only at the end of the file. */
	assert_int_equal(io_pread_full(ctx, fd, buf, sizeof(buf), 0), 10000);
	assert_memory_equal(buf, want, 10000);
	assert_int_equal(io_pread_full(ctx, fd, buf, 5000, 8000), 2000);
	assert_memory_equal(buf, want + 8000, 2000);
	assert_int_equal(io_pread_full(ctx, fd, buf, 100, 10000), 0);
	assert_int_equal(io_pread_full(ctx, fd, buf, 100, 1 << 30), 0);

	/* The same through the asynchronous interface: res 0, done short. */
	{
		struct io_req req = {
		    .op = IO_OP_READ, .fd = fd, .buf = buf, .len = 4096, .off = 9000};
		struct io_req *got = NULL;

		assert_int_equal(io_ctx_submit(ctx, &req), 0);
		assert_int_equal(io_ctx_wait(ctx, &got), 0);
		assert_ptr_equal(got, &req);
		assert_int_equal(req.res, 0);
		assert_int_equal(req.done, 1000);
	}
}

static void test_io_async_depth(void **state)
{
	enum { DEPTH = 8, LEN = 65536 + 3 };
	_cleanup_io_ struct io_ctx *ctx = NULL;
	_cleanup_close_ int fd = file_new("async", DEPTH * LEN, 77, O_RDONLY);
	_cleanup_free_ unsigned char *want = malloc(DEPTH * LEN), *buf = malloc(DEPTH * LEN);
	struct io_req reqs[DEPTH + 1];
	bool seen[DEPTH] = {0};
	struct io_req *got;
	unsigned char one;

	assert_non_null(want);
	assert_non_null(buf);
	testlib_fill(want, DEPTH * LEN, 77);
	memset(buf, 0, DEPTH * LEN);
	assert_int_equal(io_ctx_new(kind_of(state), DEPTH, &ctx), 0);
	assert_int_equal(io_ctx_wait(ctx, &got), -ENOENT);

	/* Fill the context, backwards so completions need not be in order. */
	for (int i = DEPTH - 1; i >= 0; i--) {
		reqs[i] = (struct io_req){.op = IO_OP_READ,
					  .fd = fd,
					  .buf = buf + i * LEN,
					  .len = LEN,
					  .off = (uint64_t)i * LEN,
					  .user = &seen[i]};
		assert_int_equal(io_ctx_submit(ctx, &reqs[i]), 0);
	}
	assert_int_equal(io_ctx_inflight(ctx), DEPTH);
	reqs[DEPTH] = (struct io_req){.op = IO_OP_READ, .fd = fd, .buf = buf, .len = 1};
	assert_int_equal(io_ctx_submit(ctx, &reqs[DEPTH]), -EBUSY);
	/* The synchronous helpers need a free slot too. */
	assert_int_equal(io_pread_full(ctx, fd, &one, 1, 0), -EBUSY);
	assert_int_equal(io_ctx_inflight(ctx), DEPTH);

	for (int n = 0; n < DEPTH; n++) {
		bool *tag;

		assert_int_equal(io_ctx_wait(ctx, &got), 0);
		assert_true(got >= reqs && got < reqs + DEPTH);
		tag = got->user;
		assert_ptr_equal(tag, &seen[got - reqs]);
		assert_false(*tag);
		*tag = true;
		assert_int_equal(got->res, 0);
		assert_int_equal(got->done, LEN);
	}
	assert_int_equal(io_ctx_inflight(ctx), 0);
	assert_int_equal(io_ctx_wait(ctx, &got), -ENOENT);
	assert_memory_equal(want, buf, DEPTH * LEN);
}

static void test_io_depth_limits(void **state)
{
	struct io_ctx *ctx = NULL;

	assert_int_equal(io_ctx_new(kind_of(state), 0, &ctx), -EINVAL);
	assert_int_equal(io_ctx_new(kind_of(state), RESYNC_IO_DEPTH_MAX + 1, &ctx), -EINVAL);
	assert_int_equal(io_ctx_new(kind_of(state), 1000000, &ctx), -EINVAL);
	assert_null(ctx);
	assert_int_equal(io_ctx_new(kind_of(state), RESYNC_IO_DEPTH_MAX, &ctx), 0);
	assert_int_equal(io_ctx_depth(ctx), RESYNC_IO_DEPTH_MAX);
	io_ctx_free(ctx);
	ctx = NULL;
	assert_int_equal(io_ctx_new(kind_of(state), 1, &ctx), 0);
	io_ctx_free(ctx);
	io_ctx_free(NULL);
}

static void test_io_errors(void **state)
{
	_cleanup_io_ struct io_ctx *ctx = NULL;
	_cleanup_close_ int ro = file_new("ro", 4096, 1, O_RDONLY);
	_cleanup_close_ int dir = open(tmpdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	unsigned char buf[4096] = {0};

	assert_true(dir >= 0);
	assert_int_equal(io_ctx_new(kind_of(state), 2, &ctx), 0);
	assert_int_equal(io_pread_full(ctx, -1, buf, sizeof(buf), 0), -EBADF);
	assert_int_equal(io_pwrite_full(ctx, -1, buf, sizeof(buf), 0), -EBADF);
	assert_int_equal(io_pwrite_full(ctx, ro, buf, sizeof(buf), 0), -EBADF);
	assert_int_equal(io_pread_full(ctx, dir, buf, sizeof(buf), 0), -EISDIR);
	assert_int_equal(io_fdatasync(ctx, -1), -EBADF);
	assert_int_equal(io_fdatasync(ctx, ro), 0);
	/* The context is still usable after failed requests. */
	assert_int_equal(io_pread_full(ctx, ro, buf, sizeof(buf), 0), 4096);
	assert_int_equal(io_ctx_inflight(ctx), 0);
}

static void test_io_auto(void **state)
{
	struct io_ctx *ctx = NULL, *uring = NULL;
	bool have_uring = io_ctx_new(IO_KIND_URING, 1, &uring) == 0;

	io_ctx_free(uring);
	assert_int_equal(io_ctx_new(IO_KIND_AUTO, 1, &ctx), 0);
	assert_string_equal(io_ctx_name(ctx), have_uring ? "io_uring" : "sync");
	io_ctx_free(ctx);

	assert_int_equal(setenv("RESYNC_IO", "sync", 1), 0);
	assert_int_equal(io_ctx_new(IO_KIND_AUTO, 1, &ctx), 0);
	assert_string_equal(io_ctx_name(ctx), "sync");
	io_ctx_free(ctx);
	/* An explicit kind wins over the environment. */
	assert_int_equal(io_ctx_new(IO_KIND_SYNC, 1, &ctx), 0);
	assert_string_equal(io_ctx_name(ctx), "sync");
	io_ctx_free(ctx);
	if (have_uring) {
		assert_int_equal(setenv("RESYNC_IO", "uring", 1), 0);
		assert_int_equal(io_ctx_new(IO_KIND_AUTO, 1, &ctx), 0);
		assert_string_equal(io_ctx_name(ctx), "io_uring");
		io_ctx_free(ctx);
	}
	unsetenv("RESYNC_IO");
}

/* ---- the fault backend ---- */

static void fault_set(unsigned ops, unsigned long nth, unsigned long count, int err, bool short_io)
{
	struct io_fault_config cfg = {
	    .ops = ops, .nth = nth, .count = count, .err = err, .short_io = short_io};

	assert_int_equal(io_fault_configure(&cfg), 0);
	assert_int_equal(io_fault_calls(), 0);
}

static void test_fault_nth_write(void **state)
{
	_cleanup_io_ struct io_ctx *ctx = NULL;
	_cleanup_close_ int fd = file_new("nth", 5 * 4096, 3, O_RDWR);
	unsigned char buf[4096] = {0};
	long long want[5] = {4096, 4096, -ENOSPC, 4096, 4096};

	assert_int_equal(io_ctx_new(IO_KIND_FAULT, 2, &ctx), 0);
	fault_set(IO_OP_WRITE, 3, 1, ENOSPC, false);
	for (int i = 0; i < 5; i++) {
		/* Reads between the writes are not counted (op=write). */
		assert_int_equal(io_pread_full(ctx, fd, buf, sizeof(buf), 0), 4096);
		assert_int_equal(io_pwrite_full(ctx, fd, buf, sizeof(buf), (uint64_t)i * 4096),
				 want[i]);
	}
	assert_int_equal(io_fault_calls(), 5);
}

static void test_fault_count_all(void **state)
{
	_cleanup_io_ struct io_ctx *ctx = NULL;
	_cleanup_close_ int fd = file_new("all", 4096, 3, O_RDWR);
	unsigned char buf[16];

	assert_int_equal(io_ctx_new(IO_KIND_FAULT, 1, &ctx), 0);
	/* Every call from the 2nd on, reads and writes alike. */
	fault_set(0, 2, 0, EIO, false);
	assert_int_equal(io_pread_full(ctx, fd, buf, sizeof(buf), 0), 16);
	assert_int_equal(io_pwrite_full(ctx, fd, buf, sizeof(buf), 0), -EIO);
	assert_int_equal(io_pread_full(ctx, fd, buf, sizeof(buf), 0), -EIO);
	assert_int_equal(io_fdatasync(ctx, fd), -EIO);
	assert_int_equal(io_fault_calls(), 4);

	/* count=2: the 2nd and 3rd calls fail, the 4th works again. */
	fault_set(IO_OP_READ, 2, 2, EROFS, false);
	assert_int_equal(io_pread_full(ctx, fd, buf, sizeof(buf), 0), 16);
	assert_int_equal(io_pread_full(ctx, fd, buf, sizeof(buf), 0), -EROFS);
	assert_int_equal(io_pread_full(ctx, fd, buf, sizeof(buf), 0), -EROFS);
	assert_int_equal(io_pread_full(ctx, fd, buf, sizeof(buf), 0), 16);
}

static void test_fault_fsync(void **state)
{
	_cleanup_io_ struct io_ctx *ctx = NULL;
	_cleanup_close_ int fd = file_new("fsync", 4096, 3, O_RDWR);
	unsigned char buf[16] = {0};

	assert_int_equal(io_ctx_new(IO_KIND_FAULT, 1, &ctx), 0);
	fault_set(IO_OP_FSYNC, 1, 1, EIO, false);
	assert_int_equal(io_pwrite_full(ctx, fd, buf, sizeof(buf), 0), 16);
	assert_int_equal(io_fdatasync(ctx, fd), -EIO);
	assert_int_equal(io_fdatasync(ctx, fd), 0);
	assert_int_equal(io_fault_calls(), 2);
}

/* Short transfers are resubmitted until the request is complete. */
static void test_fault_short_io(void **state)
{
	enum { SIZE = 1024 * 1024 + 3 };
	_cleanup_io_ struct io_ctx *ctx = NULL;
	_cleanup_close_ int fd = file_new("short", 0, 0, O_RDWR);
	_cleanup_free_ unsigned char *buf = malloc(SIZE), *back = malloc(SIZE);
	unsigned long calls;

	assert_non_null(buf);
	assert_non_null(back);
	testlib_fill(buf, SIZE, 5);
	assert_int_equal(io_ctx_new(IO_KIND_FAULT, 1, &ctx), 0);
	fault_set(0, 0, 0, 0, true);
	assert_int_equal(io_pwrite_full(ctx, fd, buf, SIZE, 0), SIZE);
	calls = io_fault_calls();
	/* Halving 1 MiB down to one byte takes about 21 calls. */
	assert_true(calls >= 20);
	memset(back, 0, SIZE);
	assert_int_equal(io_pread_full(ctx, fd, back, SIZE, 0), SIZE);
	assert_true(io_fault_calls() >= 2 * calls);
	assert_memory_equal(buf, back, SIZE);
	/* Short reads still stop only at the end of the file. */
	assert_int_equal(io_pread_full(ctx, fd, back, SIZE, SIZE - 1000), 1000);
	assert_memory_equal(buf + SIZE - 1000, back, 1000);

	/* A failure in the middle of a short series fails the request. */
	fault_set(IO_OP_WRITE, 3, 1, EIO, true);
	assert_int_equal(io_pwrite_full(ctx, fd, buf, 65536, 0), -EIO);
	assert_int_equal(io_fault_calls(), 3);
}

/* EINTR and EAGAIN are retried by the generic layer, never reported. */
static void test_fault_retry(void **state)
{
	_cleanup_io_ struct io_ctx *ctx = NULL;
	_cleanup_close_ int fd = file_new("retry", 8192, 8, O_RDWR);
	unsigned char buf[8192];

	assert_int_equal(io_ctx_new(IO_KIND_FAULT, 1, &ctx), 0);
	fault_set(0, 1, 3, EINTR, false);
	assert_int_equal(io_pread_full(ctx, fd, buf, sizeof(buf), 0), 8192);
	assert_int_equal(io_fault_calls(), 4);
	fault_set(IO_OP_WRITE, 1, 1, EAGAIN, false);
	assert_int_equal(io_pwrite_full(ctx, fd, buf, sizeof(buf), 0), 8192);
	assert_int_equal(io_fault_calls(), 2);
}

static void test_fault_parse(void **state)
{
	struct io_fault_config cfg;
	static const char *const bad[] = {
	    "op=bogus", "nth=x", "nth=", "nth", "errno=EWHAT", "foo=1", "count=1x", "=1", "op",
	    "nth=-1", "count=-2", "nth=+3",
	};

	assert_int_equal(io_fault_parse("op=write,nth=3,errno=ENOSPC,count=1,short=1", &cfg), 0);
	assert_int_equal(cfg.ops, IO_OP_WRITE);
	assert_int_equal(cfg.nth, 3);
	assert_int_equal(cfg.count, 1);
	assert_int_equal(cfg.err, ENOSPC);
	assert_true(cfg.short_io);

	assert_int_equal(io_fault_parse("op=read,nth=7", &cfg), 0);
	assert_int_equal(cfg.ops, IO_OP_READ);
	assert_int_equal(cfg.nth, 7);
	assert_int_equal(cfg.count, 0);
	assert_int_equal(cfg.err, EIO); /* the default */
	assert_false(cfg.short_io);

	assert_int_equal(io_fault_parse("op=fsync,errno=EDQUOT", &cfg), 0);
	assert_int_equal(cfg.ops, IO_OP_FSYNC);
	assert_int_equal(cfg.err, EDQUOT);
	assert_int_equal(io_fault_parse("op=any", &cfg), 0);
	assert_int_equal(cfg.ops, 0);
	assert_int_equal(io_fault_parse("", &cfg), 0);
	assert_int_equal(cfg.nth, 0);

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		cfg = (struct io_fault_config){.nth = 99};
		if (io_fault_parse(bad[i], &cfg) != -EINVAL)
			fail_msg("'%s' was accepted", bad[i]);
		assert_int_equal(cfg.nth, 99); /* untouched */
	}

	/* Retried errors failing forever would never end. */
	cfg = (struct io_fault_config){.nth = 1, .err = EINTR};
	assert_int_equal(io_fault_configure(&cfg), -EINVAL);
	cfg = (struct io_fault_config){.nth = 1, .count = 2, .err = EAGAIN};
	assert_int_equal(io_fault_configure(&cfg), 0);
	cfg = (struct io_fault_config){0};
	assert_int_equal(io_fault_configure(&cfg), 0);

	/* A failing call needs an errno. */
	cfg = (struct io_fault_config){.nth = 1, .err = 0};
	assert_int_equal(io_fault_configure(&cfg), -EINVAL);
}

#define KIND_TESTS(kind)                                                                           \
	cmocka_unit_test_prestate(test_io_name, (void *)&kind),                                    \
	    cmocka_unit_test_prestate(test_io_roundtrip, (void *)&kind),                           \
	    cmocka_unit_test_prestate(test_io_eof, (void *)&kind),                                 \
	    cmocka_unit_test_prestate(test_io_async_depth, (void *)&kind),                         \
	    cmocka_unit_test_prestate(test_io_depth_limits, (void *)&kind),                        \
	    cmocka_unit_test_prestate(test_io_errors, (void *)&kind)

int main(void)
{
	const struct CMUnitTest uring_tests[] = {
	    KIND_TESTS(kind_uring),
	};
	const struct CMUnitTest tests[] = {
	    KIND_TESTS(kind_sync),
	    KIND_TESTS(kind_fault),
	    cmocka_unit_test(test_io_auto),
	    cmocka_unit_test_teardown(test_fault_nth_write, fault_reset),
	    cmocka_unit_test_teardown(test_fault_count_all, fault_reset),
	    cmocka_unit_test_teardown(test_fault_fsync, fault_reset),
	    cmocka_unit_test_teardown(test_fault_short_io, fault_reset),
	    cmocka_unit_test_teardown(test_fault_retry, fault_reset),
	    cmocka_unit_test(test_fault_parse),
	};

	int failed = 0;

	/* Valgrind does not see what the kernel writes through io_uring:
	 * under it the plain backend's variants make the same checks. */
	if (!testlib_valgrind())
		failed = cmocka_run_group_tests_name("io_uring", uring_tests, group_setup,
						     group_teardown);
	failed += cmocka_run_group_tests(tests, group_setup, group_teardown);
	return failed ? 1 : 0;
}
