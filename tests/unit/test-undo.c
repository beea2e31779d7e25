/* The undo journal: append and replay, a page saved once, a resumed
 * journal, a torn last record, a damaged record, compression, the size
 * bound, the rollback mark. */
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

#include "resync/undo.h"

#define SIZE (4u << 20)

static char img[64], jpath[96];

static int setup(void **state)
{
	int fd;

	(void)state;
	strcpy(img, "/tmp/resync-undo.XXXXXX");
	fd = mkstemp(img);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, SIZE), 0);
	close(fd);
	snprintf(jpath, sizeof(jpath), "%s.resync-undo", img);
	unlink(jpath);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(img);
	unlink(jpath);
	return 0;
}

static void fill_random(unsigned char *p, size_t len, unsigned seed)
{
	srand(seed);
	for (size_t i = 0; i < len; i++)
		p[i] = (unsigned char)rand();
}

static void write_img(const void *buf, size_t len, uint64_t off)
{
	int fd = open(img, O_WRONLY);

	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, buf, len, (off_t)off), (ssize_t)len);
	close(fd);
}

static unsigned char *read_img(void)
{
	unsigned char *b = malloc(SIZE);
	int fd = open(img, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, b, SIZE, 0), SIZE);
	close(fd);
	return b;
}

static struct undo_info info(void)
{
	struct undo_info in = {.volume_size = SIZE, .state = META_STATE_DIVERGED, .created = 100,
			       .keep_until = 200, .history_n = 2};

	memset(in.generation.b, 0x11, 16);
	memset(in.target.b, 0x22, 16);
	memset(in.history[0].b, 0x33, 16);
	memset(in.history[1].b, 0x44, 16);
	return in;
}

/* Overwrite [off, off+len) with new bytes, journaling first (the
 * daemon's order). */
static void overwrite(struct undo_journal *j, uint64_t off, size_t len, unsigned seed)
{
	unsigned char *b = malloc(len);
	int fd = open(img, O_RDWR);

	assert_true(fd >= 0);
	assert_int_equal(undo_save(j, fd, off, len), 0);
	assert_int_equal(undo_sync(j), 0);
	fill_random(b, len, seed);
	assert_int_equal(pwrite(fd, b, len, (off_t)off), (ssize_t)len);
	close(fd);
	free(b);
}

static void replay(struct undo_journal *j)
{
	int fd = open(img, O_RDWR);

	assert_true(fd >= 0);
	assert_int_equal(undo_replay(j, fd, NULL, NULL), 0);
	close(fd);
}

static void test_append_replay(void **state)
{
	unsigned char *orig = malloc(SIZE), *back;
	struct undo_journal *j;
	struct undo_info got, want = info();

	(void)state;
	fill_random(orig, SIZE, 1);
	memset(orig + (1 << 20), 'z', 1 << 20); /* compressible */
	write_img(orig, SIZE, 0);
	assert_int_equal(undo_create(jpath, &want, 0, &j), 0);
	overwrite(j, 8192, 20000, 2);		    /* unaligned, inside pages */
	overwrite(j, 1 << 20, 1 << 20, 3);	    /* compressible old bytes */
	overwrite(j, 4096, 65536, 4);		    /* overlaps the first: saved once */
	overwrite(j, SIZE - 4096, 4096, 5);	    /* the last page */
	assert_true(undo_saved_bytes(j) < 65536 + 8192 + (1 << 20) + 2 * 4096 + 1);
	/* The compressible megabyte took far less than a megabyte. */
	assert_true(undo_bytes(j) < undo_saved_bytes(j));
	undo_free(j);

	/* Reopened: the same header, the pages known as saved. */
	assert_int_equal(undo_open(jpath, SIZE, 0, &j), 0);
	undo_info_get(j, &got);
	assert_memory_equal(&got.generation, &want.generation, 16);
	assert_memory_equal(&got.target, &want.target, 16);
	assert_int_equal(got.history_n, 2);
	assert_memory_equal(&got.history[1], &want.history[1], 16);
	assert_int_equal(got.state, META_STATE_DIVERGED);
	assert_int_equal(got.keep_until, 200);
	assert_false(undo_rollback_started(j));
	overwrite(j, 8192, 4096, 6); /* saved before the reopen: not again */
	overwrite(j, 3 << 20, 8192, 7);
	replay(j);
	undo_free(j);
	back = read_img();
	assert_memory_equal(back, orig, SIZE);
	free(back);
	free(orig);
}

static void test_torn_last(void **state)
{
	unsigned char *orig = malloc(SIZE), *back;
	struct undo_journal *j;
	struct stat st;
	off_t good;

	(void)state;
	fill_random(orig, SIZE, 8);
	write_img(orig, SIZE, 0);
	assert_int_equal(undo_create(jpath, &(struct undo_info){.volume_size = SIZE}, 0, &j), 0);
	overwrite(j, 0, 65536, 9);
	good = (off_t)undo_bytes(j);
	overwrite(j, 1 << 20, 65536, 10);
	undo_free(j);
	/* The second record torn by a crash mid-append: cut, the first kept.
	 * (Its overwrite could not have happened: it was not durable.) */
	assert_int_equal(truncate(jpath, good + 100), 0);
	write_img(orig + (1 << 20), 65536, 1 << 20);
	assert_int_equal(undo_open(jpath, SIZE, 0, &j), 0);
	assert_int_equal(undo_bytes(j), (uint64_t)good);
	assert_int_equal(undo_records(j), 1);
	assert_int_equal(stat(jpath, &st), 0);
	assert_int_equal(st.st_size, good);
	replay(j);
	undo_free(j);
	back = read_img();
	assert_memory_equal(back, orig, SIZE);
	free(back);

	/* A file extended by zeros past the last record: torn as well. */
	assert_int_equal(truncate(jpath, good + 4096), 0);
	assert_int_equal(undo_open(jpath, SIZE, 0, &j), 0);
	assert_int_equal(undo_records(j), 1);
	undo_free(j);
	free(orig);
}

static void test_bad_checksum(void **state)
{
	struct undo_journal *j;
	unsigned char c;
	uint64_t first;
	int fd;

	(void)state;
	assert_int_equal(undo_create(jpath, &(struct undo_info){.volume_size = SIZE}, 0, &j), 0);
	overwrite(j, 0, 65536, 11);
	first = undo_bytes(j);
	overwrite(j, 1 << 20, 65536, 12);
	undo_free(j);

	/* A byte of the first record's payload flipped, a record after it:
	 * damage, refused. */
	fd = open(jpath, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &c, 1, (off_t)first - 10), 1);
	c ^= 0x40;
	assert_int_equal(pwrite(fd, &c, 1, (off_t)first - 10), 1);
	close(fd);
	assert_int_equal(undo_open(jpath, SIZE, 0, &j), -EBADMSG);

	/* A damaged header: refused. */
	fd = open(jpath, O_RDWR);
	c ^= 0x40;
	assert_int_equal(pwrite(fd, &c, 1, (off_t)first - 10), 1);
	assert_int_equal(pwrite(fd, "X", 1, 20), 1);
	close(fd);
	assert_int_equal(undo_open(jpath, SIZE, 0, &j), -EBADMSG);
	/* Another volume's size: refused. */
	assert_int_equal(undo_create(jpath, &(struct undo_info){.volume_size = SIZE}, 0, &j), 0);
	undo_free(j);
	assert_int_equal(undo_open(jpath, SIZE * 2, 0, &j), -EBADMSG);
	assert_int_equal(undo_remove(jpath), 0);
	assert_int_equal(undo_open(jpath, SIZE, 0, &j), -ENOENT);
	assert_int_equal(undo_remove(jpath), 0);
}

static void test_limit_and_mark(void **state)
{
	struct undo_journal *j;
	int fd;

	(void)state;
	fd = open(img, O_RDWR);
	assert_true(fd >= 0);
	{
		unsigned char *b = malloc(SIZE);

		fill_random(b, SIZE, 13); /* incompressible */
		assert_int_equal(pwrite(fd, b, SIZE, 0), SIZE);
		free(b);
	}
	assert_int_equal(undo_create(jpath, &(struct undo_info){.volume_size = SIZE}, 200000, &j), 0);
	assert_int_equal(undo_save(j, fd, 0, 65536), 0);
	assert_int_equal(undo_save(j, fd, 1 << 20, 1 << 20), -EFBIG);
	assert_true(undo_bytes(j) <= 200000);
	assert_int_equal(undo_save(j, fd, SIZE, 1), -EINVAL);
	assert_int_equal(undo_rollback_mark(j), 0);
	assert_true(undo_rollback_started(j));
	undo_free(j);
	assert_int_equal(undo_open(jpath, SIZE, 0, &j), 0);
	assert_true(undo_rollback_started(j));
	assert_int_equal(undo_records(j), 1);
	undo_free(j);
	close(fd);
	assert_string_equal(undo_mode_name(UNDO_MODE_DIVERGED), "diverged");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_append_replay, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_last, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_checksum, setup, teardown),
		cmocka_unit_test_setup_teardown(test_limit_and_mark, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
