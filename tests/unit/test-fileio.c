/* File plumbing (resync/fileio.h) and the clock (resync/clock.h): total
 * reads and writes over short transfers and EINTR, the atomic writer and
 * what it leaves behind when it fails, mkdir_p, time. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "resync/clock.h"
#include "resync/fileio.h"
#include "resync/io.h"
#include "resync/macro.h"
#include "testlib.h"

static char *tmpdir;

static int group_setup(void **state)
{
	(void)state;
	umask(022);
	return testlib_tmpdir_new(&tmpdir) < 0 ? -1 : 0;
}

static int group_teardown(void **state)
{
	(void)state;
	testlib_tmpdir_remove(tmpdir);
	free(tmpdir);
	return 0;
}

static char *path_in(const char *dir, const char *name)
{
	char *p;

	assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
	return p;
}

/* A fresh directory under tmpdir, so that each test counts its own files. */
static char *subdir(const char *name)
{
	char *p = path_in(tmpdir, name);

	assert_int_equal(mkdir(p, 0755), 0);
	return p;
}

static size_t dir_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t n = 0;

	assert_non_null(d);
	while ((de = readdir(d)))
		n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
	closedir(d);
	return n;
}

/* ---- read/write-all over a pipe ---- */

struct feeder {
	int fd;
	pthread_t reader;
	const unsigned char *data;
	size_t len, slice;
};

static void on_usr1(int sig)
{
	(void)sig;
}

/* Writes the data in small slices, interrupting the reader before each:
 * its read() returns short counts and EINTR. */
static void *feeder_run(void *arg)
{
	struct feeder *f = arg;

	for (size_t off = 0; off < f->len; off += f->slice) {
		size_t n = MIN(f->slice, f->len - off);

		pthread_kill(f->reader, SIGUSR1);
		if (fd_write_all(f->fd, f->data + off, n) < 0)
			break;
	}
	close(f->fd);
	return NULL;
}

static void test_fileio_pipe_short(void **state)
{
	enum { LEN = 300000 };
	struct sigaction sa = {.sa_handler = on_usr1}; /* no SA_RESTART: EINTR */
	_cleanup_free_ unsigned char *src = malloc(LEN), *dst = malloc(LEN + 10);
	struct feeder f = {.reader = pthread_self(), .len = LEN, .slice = 1000};
	pthread_t t;
	int p[2];

	(void)state;
	assert_non_null(src);
	assert_non_null(dst);
	testlib_fill(src, LEN, 7);
	f.data = src;
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGUSR1, &sa, NULL), 0);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	f.fd = p[1];
	assert_int_equal(pthread_create(&t, NULL, feeder_run, &f), 0);
	/* Asks for more than comes: all of it, then short at end of file. */
	assert_int_equal(fd_read_all(p[0], dst, 1000), 1000);
	assert_int_equal(fd_read_all(p[0], dst + 1000, LEN + 10 - 1000), LEN - 1000);
	assert_memory_equal(src, dst, LEN);
	assert_int_equal(fd_read_all(p[0], dst, 10), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	close(p[0]);
	signal(SIGUSR1, SIG_DFL);
}

static void test_fileio_write_errors(void **state)
{
	int sv[2], p[2];
	char buf[4096] = {0};

	(void)state;
	/* A socket whose peer went: -EPIPE, and no SIGPIPE kills us. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	close(sv[1]);
	assert_int_equal(fd_write_all(sv[0], buf, sizeof(buf)), -EPIPE);
	close(sv[0]);
	/* A pipe read end cannot be written; bad fds say so. */
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_int_equal(fd_write_all(p[0], buf, 1), -EBADF);
	assert_int_equal(fd_read_all(p[1], buf, 1), -EBADF);
	close(p[0]);
	close(p[1]);
	assert_int_equal(fd_write_all(-1, buf, 1), -EBADF);
	assert_int_equal(fd_write_all(-1, buf, 0), 0); /* nothing to do */
}

static void test_fileio_pread(void **state)
{
	_cleanup_free_ char *dir = subdir("pread"), *path = path_in(dir, "f");
	_cleanup_close_ int fd = -1;
	char buf[16];

	(void)state;
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(fd_pwrite_full(fd, "0123456789", 10, 0), 0);
	assert_int_equal(fd_pread_all(fd, buf, 4, 3), 4);
	assert_memory_equal(buf, "3456", 4);
	assert_int_equal(fd_pread_all(fd, buf, sizeof(buf), 6), 4); /* end of file */
	assert_int_equal(fd_pread_all(fd, buf, sizeof(buf), 100), 0);
	assert_int_equal(fd_pread_full(fd, buf, 4, 8), -ENODATA);
	assert_int_equal(fd_pread_full(fd, buf, 4, 6), 0);
	assert_int_equal(fd_pread_all(fd, buf, 4, UINT64_MAX - 1), -EINVAL);
}

/* ---- the atomic writer ---- */

static void assert_file(const char *path, const char *content, mode_t mode)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, mode);
	assert_int_equal(testlib_file_equals(path, content, strlen(content)), 1);
}

static void test_fileio_write_atomic(void **state)
{
	_cleanup_free_ char *dir = subdir("atomic"), *path = path_in(dir, "state.json");

	(void)state;
	assert_int_equal(file_write_atomic(path, "first", 5, 0640), 0);
	assert_file(path, "first", 0640);
	assert_int_equal(dir_entries(dir), 1);
	/* Replaced whole (shorter), with the new mode less the umask. */
	assert_int_equal(file_write_atomic(path, "2nd", 3, 0666), 0);
	assert_file(path, "2nd", 0644);
	assert_int_equal(dir_entries(dir), 1);
	assert_int_equal(file_write_atomic(path, "", 0, 0600), 0);
	assert_file(path, "", 0600);
	assert_int_equal(dir_entries(dir), 1);
}

static void test_fileio_write_atomic_fails(void **state)
{
	_cleanup_free_ char *dir = subdir("atomic-fail"), *path = path_in(dir, "f");
	_cleanup_free_ char *missing = path_in(dir, "no/such/f");
	_cleanup_free_ unsigned char *big = calloc(1, 1 << 20);
	struct rlimit old, lim;

	(void)state;
	assert_non_null(big);
	assert_int_equal(file_write_atomic(path, "old", 3, 0644), 0);
	/* Its directory does not exist. */
	assert_int_equal(file_write_atomic(missing, "x", 1, 0644), -ENOENT);
	/* The write fails half way (a file size limit holds even for root):
	 * the old file stays as it was and no temporary file is left. */
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 4096;
	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	assert_int_equal(file_write_atomic(path, big, 1 << 20, 0644), -EFBIG);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_DFL);
	assert_file(path, "old", 0644);
	assert_int_equal(dir_entries(dir), 1);
	/* A directory that cannot be written (root may write anyway). */
	if (geteuid() != 0) {
		assert_int_equal(chmod(dir, 0555), 0);
		assert_int_equal(file_write_atomic(path, "new", 3, 0644), -EACCES);
		assert_int_equal(chmod(dir, 0755), 0);
		assert_file(path, "old", 0644);
		assert_int_equal(dir_entries(dir), 1);
	}
	/* A directory in the place of the file: the rename fails, the
	 * temporary file goes. */
	{
		_cleanup_free_ char *d = path_in(dir, "d");

		assert_int_equal(mkdir(d, 0755), 0);
		assert_int_equal(file_write_atomic(d, "x", 1, 0644), -EISDIR);
		assert_int_equal(dir_entries(dir), 2);
	}
}

static void test_fileio_atomic_two_steps(void **state)
{
	_cleanup_free_ char *dir = subdir("two-steps"), *path = path_in(dir, "meta");
	_cleanup_free_ char *tmp = NULL, *tmp2 = NULL;
	_cleanup_close_ int fd = -1, fd2 = -1;
	char buf[8];

	(void)state;
	fd = file_atomic_open(path, 0644, &tmp);
	assert_true(fd >= 0);
	/* Two writers at once get two names. */
	fd2 = file_atomic_open(path, 0644, &tmp2);
	assert_true(fd2 >= 0);
	assert_string_not_equal(tmp, tmp2);
	assert_int_equal(dir_entries(dir), 2);
	assert_int_equal(unlink(tmp2), 0);
	assert_int_equal(fd_pwrite_full(fd, "tail", 4, 4), 0);
	assert_int_equal(fd_pwrite_full(fd, "head", 4, 0), 0);
	assert_int_equal(file_atomic_commit(fd, tmp, path), 0);
	assert_int_equal(dir_entries(dir), 1);
	/* The fd is the new file's. */
	assert_int_equal(fd_pwrite_full(fd, "HEAD", 4, 0), 0);
	assert_int_equal(fd_pread_full(fd, buf, 8, 0), 0);
	assert_int_equal(testlib_file_equals(path, "HEADtail", 8), 1);
}

static void test_fileio_fsync_directory(void **state)
{
	_cleanup_free_ char *path = path_in(tmpdir, "anything");
	_cleanup_free_ char *missing = path_in(tmpdir, "no/such");
	char cwd[4096];

	(void)state;
	assert_int_equal(fsync_directory_of(path), 0);
	assert_int_equal(fsync_directory_of("/etc"), 0);
	assert_int_equal(fsync_directory_of(missing), -ENOENT);
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir(tmpdir), 0);
	assert_int_equal(fsync_directory_of("relative"), 0);
	assert_int_equal(chdir(cwd), 0);
}

/* ---- mkdir_p ---- */

static void test_fileio_mkdir_p(void **state)
{
	_cleanup_free_ char *dir = subdir("mkdir"), *deep = path_in(dir, "a/b//c/");
	_cleanup_free_ char *c = path_in(dir, "a/b/c"), *file = path_in(dir, "file");
	_cleanup_free_ char *under = path_in(dir, "file/x/y"), *last = path_in(dir, "a/last");
	struct stat st;

	(void)state;
	assert_int_equal(mkdir_p(deep, 0700), 0);
	assert_int_equal(stat(c, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(mkdir_p(c, 0700), 0); /* already there */
	assert_int_equal(mkdir_p(last, 0700), 0);
	assert_int_equal(stat(last, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	assert_int_equal(testlib_file_write(file, "x", 1), 0);
	assert_int_equal(mkdir_p(file, 0755), -EEXIST);
	assert_int_equal(mkdir_p(under, 0755), -ENOTDIR);
}

/* ---- the clock ---- */

static void test_fileio_clock(void **state)
{
	uint64_t prev = clock_usec(), t0 = prev;
	int64_t real = clock_real_usec();
	char buf[64];

	(void)state;
	for (int i = 0; i < 100000; i++) {
		uint64_t now = clock_usec();

		assert_true(now >= prev);
		prev = now;
	}
	assert_true(prev - t0 < 60 * 1000000ull);
	assert_true(llabs(real / 1000000 - (int64_t)time(NULL)) <= 2);
	assert_string_equal(clock_format_utc(0, true, buf, sizeof(buf)),
			    "1970-01-01T00:00:00.000000Z");
	assert_string_equal(clock_format_utc(1700000000123456, true, buf, sizeof(buf)),
			    "2023-11-14T22:13:20.123456Z");
	assert_string_equal(clock_format_utc(1700000000123456, false, buf, sizeof(buf)),
			    "2023-11-14T22:13:20Z");
	assert_string_equal(clock_format_utc(1700000000123456, true, buf, 11), "2023-11-14");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fileio_pipe_short),
	    cmocka_unit_test(test_fileio_write_errors),
	    cmocka_unit_test(test_fileio_pread),
	    cmocka_unit_test(test_fileio_write_atomic),
	    cmocka_unit_test(test_fileio_write_atomic_fails),
	    cmocka_unit_test(test_fileio_atomic_two_steps),
	    cmocka_unit_test(test_fileio_fsync_directory),
	    cmocka_unit_test(test_fileio_mkdir_p),
	    cmocka_unit_test(test_fileio_clock),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
