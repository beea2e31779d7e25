/* The patch writer: merged writes, zero runs as holes, bounds, callbacks. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "resync/patch.h"

#define SIZE (8u << 20)

static char path[64];

struct seen {
	uint64_t bytes;
	unsigned calls;
	uint64_t last_off, last_len;
};

static void on_written(void *arg, uint64_t off, uint64_t len)
{
	struct seen *s = arg;

	s->bytes += len;
	s->calls++;
	s->last_off = off;
	s->last_len = len;
}

static int setup(void **state)
{
	int fd;

	(void)state;
	strcpy(path, "/tmp/resync-patch.XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, SIZE), 0);
	close(fd);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(path);
	return 0;
}

/* len bytes of xorshift64* noise from seed: eight bytes a step, where
 * rand() a byte made the valgrind run (60 MiB of pieces) take 25 s. */
static void fill_random(unsigned char *p, size_t len, uint64_t seed)
{
	uint64_t x = seed | 1;

	for (size_t k = 0; k < len; k += 8) {
		uint64_t r;

		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		r = x * 0x2545F4914F6CDD1Dull;
		memcpy(p + k, &r, len - k < 8 ? len - k : 8);
	}
}

static void run_random(enum io_kind kind)
{
	unsigned char *model = calloc(1, SIZE), *back = malloc(SIZE), *piece = malloc(300000);
	struct patch_opts opts = {.io = kind, .batch = 1 << 20, .on_written = on_written};
	struct patch_writer *w;
	struct patch_stats st;
	struct volume *v;
	struct seen seen = {0};
	uint64_t put = 0;
	int fd;

	opts.arg = &seen;
	srand(11);
	assert_int_equal(volume_open(path, VOLUME_WRITE, &v), 0);
	assert_int_equal(patch_writer_new(v, &opts, &w), 0);
	for (int i = 0; i < 400; i++) {
		size_t len = 1 + (size_t)rand() % 300000;
		uint64_t off = (uint64_t)rand() % (SIZE - len);

		/* Sometimes continue right after the last piece, to merge. */
		fill_random(piece, len, (uint64_t)rand() << 31 ^ (uint64_t)rand());
		assert_int_equal(patch_writer_put(w, off, piece, len), 0);
		memcpy(model + off, piece, len);
		put += len;
		if (i % 3 == 0 && off + 2 * len < SIZE) {
			assert_int_equal(patch_writer_put(w, off + len, piece, len), 0);
			memcpy(model + off + len, piece, len);
			put += len;
		}
	}
	assert_int_equal(patch_writer_sync(w), 0);
	patch_writer_stats(w, &st);
	assert_int_equal(st.bytes_written, put);
	assert_int_equal(seen.bytes, put);
	assert_int_equal(seen.calls, st.writes);
	/* Merging: fewer writes than pieces. */
	assert_true(st.writes < 400 + 400 / 3);
	patch_writer_free(w);
	volume_free(v);

	fd = open(path, O_RDONLY);
	assert_int_equal(pread(fd, back, SIZE, 0), SIZE);
	close(fd);
	assert_memory_equal(model, back, SIZE);
	free(model);
	free(back);
	free(piece);
}

static void test_random_uring(void **state)
{
	(void)state;
	run_random(IO_KIND_URING);
}

static void test_random_sync(void **state)
{
	(void)state;
	run_random(IO_KIND_SYNC);
}

static void test_bounds(void **state)
{
	struct patch_opts opts = {.io = IO_KIND_SYNC};
	struct patch_writer *w;
	struct volume *v;
	char b[16] = {0};

	(void)state;
	assert_int_equal(volume_open(path, VOLUME_WRITE, &v), 0);
	assert_int_equal(patch_writer_new(v, &opts, &w), 0);
	assert_int_equal(patch_writer_put(w, SIZE - 8, b, 16), -EFBIG);
	assert_int_equal(patch_writer_put(w, SIZE + 1, b, 1), -EFBIG);
	assert_int_equal(patch_writer_put(w, UINT64_MAX, b, 2), -EFBIG);
	assert_int_equal(patch_writer_put(w, SIZE - 16, b, 16), 0);
	assert_int_equal(patch_writer_sync(w), 0);
	patch_writer_free(w);
	volume_free(v);
}

static void test_zero_punch(void **state)
{
	struct patch_opts opts = {.io = IO_KIND_SYNC, .punch_zeros = true};
	unsigned char *ones = malloc(SIZE), *zeros = calloc(1, 1 << 20), *back = malloc(1 << 20);
	struct patch_writer *w;
	struct patch_stats st;
	struct volume *v;
	struct stat before, after;
	int fd;

	(void)state;
	memset(ones, 0xff, SIZE);
	fd = open(path, O_WRONLY);
	assert_int_equal(pwrite(fd, ones, SIZE, 0), SIZE);
	assert_int_equal(fsync(fd), 0);
	close(fd);
	assert_int_equal(stat(path, &before), 0);

	assert_int_equal(volume_open(path, VOLUME_WRITE, &v), 0);
	assert_int_equal(patch_writer_new(v, &opts, &w), 0);
	assert_int_equal(patch_writer_put(w, 1 << 20, zeros, 1 << 20), 0);
	assert_int_equal(patch_writer_sync(w), 0);
	patch_writer_stats(w, &st);
	patch_writer_free(w);
	volume_free(v);

	fd = open(path, O_RDONLY);
	assert_int_equal(pread(fd, back, 1 << 20, 1 << 20), 1 << 20);
	close(fd);
	assert_memory_equal(back, zeros, 1 << 20);
	assert_int_equal(stat(path, &after), 0);
	assert_int_equal(after.st_size, SIZE);
	if (st.bytes_punched) {
		/* The hole gave the space back. */
		assert_true(after.st_blocks < before.st_blocks);
	} else {
		fprintf(stderr, "note: this file system cannot punch holes; zeros were written\n");
	}
	free(ones);
	free(zeros);
	free(back);
}

static void test_write_error(void **state)
{
	struct io_fault_config cfg = {.ops = IO_OP_WRITE, .nth = 1, .count = 1, .err = ENOSPC};
	struct patch_opts opts = {.io = IO_KIND_FAULT};
	struct patch_writer *w;
	struct volume *v;
	char b[4096] = {1};

	(void)state;
	assert_int_equal(io_fault_configure(&cfg), 0);
	assert_int_equal(volume_open(path, VOLUME_WRITE, &v), 0);
	assert_int_equal(patch_writer_new(v, &opts, &w), 0);
	assert_int_equal(patch_writer_put(w, 0, b, sizeof(b)), 0);
	assert_int_equal(patch_writer_flush(w), -ENOSPC);
	/* The data stays queued: a retry succeeds once the fault passed. */
	assert_int_equal(patch_writer_sync(w), 0);
	patch_writer_free(w);
	volume_free(v);
	cfg = (struct io_fault_config){0};
	io_fault_configure(&cfg);
}

/* A sync issues an fdatasync the first time (it covers what was dirty
 * before the writer) and after anything was written or punched since the
 * last successful one, never with nothing new: the calls counted by the
 * fault backend (every op of the process; nothing else runs). A failed
 * fdatasync is issued again by the next sync. */
static void test_sync_only_new(void **state)
{
	struct io_fault_config none = {0};
	struct io_fault_config fail = {.ops = IO_OP_FSYNC, .nth = 1, .count = 1, .err = EIO};
	struct patch_opts opts = {.io = IO_KIND_FAULT};
	struct patch_writer *w;
	struct volume *v;
	char b[4096] = {1};
	unsigned long c;

	(void)state;
	assert_int_equal(io_fault_configure(&none), 0);
	assert_int_equal(volume_open(path, VOLUME_WRITE, &v), 0);
	assert_int_equal(patch_writer_new(v, &opts, &w), 0);
	c = io_fault_calls();
	assert_int_equal(patch_writer_sync(w), 0); /* the first: issued */
	assert_int_equal(io_fault_calls(), c + 1);
	assert_int_equal(patch_writer_sync(w), 0); /* nothing new: none */
	assert_int_equal(io_fault_calls(), c + 1);
	assert_int_equal(patch_writer_put(w, 8192, b, sizeof(b)), 0);
	assert_int_equal(patch_writer_sync(w), 0); /* a write and an fdatasync */
	assert_int_equal(io_fault_calls(), c + 3);
	assert_int_equal(patch_writer_sync(w), 0);
	assert_int_equal(io_fault_calls(), c + 3);
	/* A failed fdatasync leaves the data unsynced: tried again. */
	assert_int_equal(patch_writer_put(w, 0, b, sizeof(b)), 0);
	assert_int_equal(patch_writer_flush(w), 0);
	assert_int_equal(io_fault_configure(&fail), 0);
	assert_int_equal(patch_writer_sync(w), -EIO);
	assert_int_equal(patch_writer_sync(w), 0);
	assert_int_equal(patch_writer_sync(w), 0);
	assert_int_equal(io_fault_calls(), 2); /* counted afresh: the failed one and its retry */
	patch_writer_free(w);
	volume_free(v);
	io_fault_configure(&none);
}

/* patch_writer_write(): what was queued goes first (its own write), the
 * data is written at once from the caller's buffer (reported through
 * on_written), zeros are punched as put's runs are, bounds are put's,
 * and a failed write reports nothing written. */
static void test_write_direct(void **state)
{
	struct io_fault_config none = {0};
	struct io_fault_config fail = {.ops = IO_OP_WRITE, .nth = 1, .count = 1, .err = ENOSPC};
	struct patch_opts opts = {.io = IO_KIND_FAULT, .punch_zeros = true, .on_written = on_written};
	unsigned char *a = malloc(4096), *b = malloc(8192), *z = calloc(1, 1 << 16);
	unsigned char *back = malloc(8192);
	struct patch_writer *w;
	struct patch_stats st;
	struct volume *v;
	struct seen seen = {0};
	int fd;

	(void)state;
	assert_non_null(a);
	assert_non_null(b);
	assert_non_null(z);
	assert_non_null(back);
	memset(a, 0xa5, 4096);
	memset(b, 0x5a, 8192);
	opts.arg = &seen;
	assert_int_equal(io_fault_configure(&none), 0);
	assert_int_equal(volume_open(path, VOLUME_WRITE, &v), 0);
	assert_int_equal(patch_writer_new(v, &opts, &w), 0);
	assert_int_equal(patch_writer_put(w, 4096, a, 4096), 0);
	assert_int_equal(seen.calls, 0);
	assert_int_equal(patch_writer_write(w, 1 << 20, b, 8192), 0);
	/* The queued run first, then this one: two writes, in order. */
	assert_int_equal(seen.calls, 2);
	assert_int_equal(seen.last_off, 1 << 20);
	assert_int_equal(seen.last_len, 8192);
	memset(b, 0, 8192); /* the caller's buffer is its own again */
	assert_int_equal(patch_writer_write(w, SIZE - 8, a, 16), -EFBIG);
	assert_int_equal(patch_writer_write(w, UINT64_MAX, a, 2), -EFBIG);
	assert_int_equal(patch_writer_write(w, 0, a, 0), 0);
	assert_int_equal(seen.calls, 2);
	/* A failed write: the error, nothing reported written. */
	assert_int_equal(io_fault_configure(&fail), 0);
	assert_int_equal(patch_writer_write(w, 2 << 20, a, 4096), -ENOSPC);
	assert_int_equal(seen.calls, 2);
	assert_int_equal(io_fault_configure(&none), 0);
	assert_int_equal(patch_writer_write(w, 3 << 20, z, 1 << 16), 0);
	assert_int_equal(patch_writer_sync(w), 0);
	patch_writer_stats(w, &st);
	assert_int_equal(st.writes, 3);
	assert_int_equal(st.bytes_written, 4096 + 8192 + (1 << 16));
	assert_true(st.bytes_punched == 0 || st.bytes_punched == 1 << 16);
	patch_writer_free(w);
	volume_free(v);

	fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, back, 4096, 4096), 4096);
	assert_memory_equal(back, a, 4096);
	memset(b, 0x5a, 8192);
	assert_int_equal(pread(fd, back, 8192, 1 << 20), 8192);
	assert_memory_equal(back, b, 8192);
	assert_int_equal(pread(fd, back, 4096, 2 << 20), 4096);
	assert_memory_equal(back, z, 4096); /* the failed write left it as it was */
	close(fd);
	free(a);
	free(b);
	free(z);
	free(back);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_random_uring, setup, teardown),
		cmocka_unit_test_setup_teardown(test_random_sync, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bounds, setup, teardown),
		cmocka_unit_test_setup_teardown(test_zero_punch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sync_only_new, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_direct, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
