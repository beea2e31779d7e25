#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "resync/fileio.h"
#include "resync/macro.h"
#include "testlib.h"

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#endif

int testlib_tmpdir_new(char **ret)
{
	const char *base = getenv("TMPDIR");
	char *dir;

	if (!base || !*base)
		base = "/tmp";
	if (asprintf(&dir, "%s/resync-test-XXXXXX", base) < 0)
		return -ENOMEM;
	if (!mkdtemp(dir)) {
		int r = -errno;

		free(dir);
		return r;
	}
	*ret = dir;
	return 0;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path) < 0 ? -1 : 0;
}

int testlib_tmpdir_remove(const char *dir)
{
	if (!dir)
		return 0;
	if (nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS) < 0)
		return -errno;
	return 0;
}

char *testlib_path(const char *dir, const char *name)
{
	char *p;

	if (asprintf(&p, "%s/%s", dir, name) < 0)
		return NULL;
	return p;
}

uint64_t testlib_rand(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

uint64_t testlib_rand_below(uint64_t *state, uint64_t n)
{
	return testlib_rand(state) % n;
}

void testlib_fill(void *buf, size_t len, uint64_t seed)
{
	unsigned char *p = buf;
	uint64_t st = seed;
	size_t i = 0;

	for (; i + 8 <= len; i += 8) {
		uint64_t v = testlib_rand(&st);

		memcpy(p + i, &v, 8);
	}
	if (i < len) {
		uint64_t v = testlib_rand(&st);

		memcpy(p + i, &v, len - i);
	}
}

void testlib_scribble(void *buf, size_t off, size_t len, uint64_t seed)
{
	unsigned char *p = (unsigned char *)buf + off;
	uint64_t st = seed;

	for (size_t i = 0; i < len; i++) {
		unsigned char x = (unsigned char)testlib_rand(&st);

		p[i] ^= x ? x : 0x5a;
	}
}

int testlib_file_write(const char *path, const void *buf, size_t len)
{
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0)
		return -errno;
	return fd_write_all(fd, buf, len);
}

int testlib_file_read(const char *path, void **ret, size_t *ret_len)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	_cleanup_free_ char *buf = NULL;
	struct stat st;
	ssize_t n;
	size_t got;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	buf = malloc((size_t)st.st_size + 1);
	if (!buf)
		return -ENOMEM;
	n = fd_read_all(fd, buf, (size_t)st.st_size);
	if (n < 0)
		return (int)n;
	if ((size_t)n < (size_t)st.st_size)
		return -EIO; /* shrank while we read */
	got = (size_t)n;
	*ret = TAKE_PTR(buf);
	*ret_len = got;
	return 0;
}

int testlib_file_equals(const char *path, const void *buf, size_t len)
{
	_cleanup_free_ void *data = NULL;
	size_t n;
	int r = testlib_file_read(path, &data, &n);

	if (r < 0)
		return r;
	return n == len && memcmp(data, buf, len) == 0;
}

int testlib_image_pair(const char *src_path, const char *dst_path, size_t src_size, size_t dst_size,
		       unsigned nranges, size_t max_len, uint64_t seed, unsigned char **ret_src,
		       unsigned char **ret_dst)
{
	_cleanup_free_ unsigned char *a = malloc(src_size + 1), *b = malloc(dst_size + 1);
	uint64_t st = seed;
	int r;

	if (!a || !b)
		return -ENOMEM;
	testlib_fill(a, src_size, seed);
	memcpy(b, a, MIN(src_size, dst_size));
	if (dst_size > src_size)
		testlib_fill(b + src_size, dst_size - src_size, ~seed);
	for (unsigned i = 0; i < nranges && dst_size && max_len; i++) {
		size_t off = (size_t)testlib_rand_below(&st, dst_size);
		size_t len = 1 + (size_t)testlib_rand_below(&st, max_len);

		testlib_scribble(b, off, MIN(len, dst_size - off), testlib_rand(&st));
	}
	if (src_path) {
		r = testlib_file_write(src_path, a, src_size);
		if (r < 0)
			return r;
	}
	if (dst_path) {
		r = testlib_file_write(dst_path, b, dst_size);
		if (r < 0)
			return r;
	}
	if (ret_src)
		*ret_src = TAKE_PTR(a);
	if (ret_dst)
		*ret_dst = TAKE_PTR(b);
	return 0;
}

int testlib_wait_until(bool (*cond)(void *arg), void *arg, uint64_t timeout_usec)
{
	uint64_t deadline = clock_usec() + timeout_usec;
	uint64_t pause = 1000;

	for (;;) {
		uint64_t now;

		if (cond(arg))
			return 0;
		now = clock_usec();
		if (now >= deadline)
			return cond(arg) ? 0 : -ETIMEDOUT;
		pause = MIN(pause, deadline - now);
		usleep((useconds_t)pause);
		pause = MIN(pause * 2, (uint64_t)50000);
	}
}

bool testlib_valgrind(void)
{
	const char *e = getenv("RESYNC_VALGRIND");

	return RUNNING_ON_VALGRIND || (e && !strcmp(e, "1"));
}
