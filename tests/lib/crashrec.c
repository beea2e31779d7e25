/* An LD_PRELOAD recorder of what reaches the files of a volume, for the
 * metadata crash-consistency test (issue 13, item 2; ALICE's and
 * CrashMonkey's way): every write (pwrite, write, pwritev), flush (fsync,
 * fdatasync), truncation, rename and unlink on a path that starts with
 * RESYNC_CRASHREC_PREFIX goes to the log RESYNC_CRASHREC_LOG, in the
 * order the calls returned, with the written bytes.
 *
 * Log records, little-endian on this machine only (the replayer runs
 * here): u8 op, u32 file, u64 off, u64 len, then len bytes (op WRITE: the
 * data; OPEN, RENAME's target: the path). Ops: 1 OPEN (file's path), 2
 * WRITE, 3 FLUSH, 4 TRUNC (len: the size), 5 RENAME (file renamed to the
 * index: off), 6 UNLINK, 7 ZERO (a punched hole: len zeros at off). Writes through io_uring bypass
 * it: the recorded daemon runs with RESYNC_IO=sync. Not for anything but tests. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

enum { REC_OPEN = 1, REC_WRITE, REC_FLUSH, REC_TRUNC, REC_RENAME, REC_UNLINK, REC_ZERO };
enum { REC_FDS = 4096, REC_FILES = 256 };

static pthread_mutex_t rec_lock = PTHREAD_MUTEX_INITIALIZER;
static int rec_fd = -1;
static const char *rec_prefix;
static int fd_file[REC_FDS]; /* file index + 1 of an fd; 0: not recorded */
static char *files[REC_FILES];
static unsigned n_files;

static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_ftruncate)(int, off_t);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_close)(int);
static int (*real_rename)(const char *, const char *);
static int (*real_renameat)(int, const char *, int, const char *);
static int (*real_unlink)(const char *);
static int (*real_fallocate)(int, int, off_t, off_t);

__attribute__((constructor)) static void rec_init(void)
{
	const char *log = getenv("RESYNC_CRASHREC_LOG");

	real_pwrite = dlsym(RTLD_NEXT, "pwrite64");
	real_write = dlsym(RTLD_NEXT, "write");
	real_pwritev = dlsym(RTLD_NEXT, "pwritev64");
	real_fsync = dlsym(RTLD_NEXT, "fsync");
	real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
	real_ftruncate = dlsym(RTLD_NEXT, "ftruncate64");
	real_openat = dlsym(RTLD_NEXT, "openat64");
	real_close = dlsym(RTLD_NEXT, "close");
	real_rename = dlsym(RTLD_NEXT, "rename");
	real_renameat = dlsym(RTLD_NEXT, "renameat");
	real_unlink = dlsym(RTLD_NEXT, "unlink");
	real_fallocate = dlsym(RTLD_NEXT, "fallocate64");
	rec_prefix = getenv("RESYNC_CRASHREC_PREFIX");
	if (log && rec_prefix)
		rec_fd =
		    real_openat(AT_FDCWD, log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
}

static void rec_put(const void *p, size_t len)
{
	const char *c = p;

	while (len) {
		ssize_t k = real_write(rec_fd, c, len);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			abort(); /* a lost record would make the replay lie */
		c += k;
		len -= (size_t)k;
	}
}

/* Called with rec_lock held. */
static void rec_emit(uint8_t op, uint32_t file, uint64_t off, const void *data, uint64_t len)
{
	unsigned char h[21];

	h[0] = op;
	memcpy(h + 1, &file, 4);
	memcpy(h + 5, &off, 8);
	memcpy(h + 13, &len, 8);
	rec_put(h, sizeof(h));
	if (data && len)
		rec_put(data, (size_t)len);
}

/* The index of path (recorded as OPEN the first time), or -1 when path is
 * not under the prefix. Called with rec_lock held. */
static int rec_path(const char *path)
{
	if (rec_fd < 0 || !path || strncmp(path, rec_prefix, strlen(rec_prefix)))
		return -1;
	for (unsigned i = 0; i < n_files; i++)
		if (!strcmp(files[i], path))
			return (int)i;
	if (n_files == REC_FILES || !(files[n_files] = strdup(path)))
		abort();
	rec_emit(REC_OPEN, n_files, 0, path, strlen(path));
	return (int)n_files++;
}

static int rec_file(int fd)
{
	return fd >= 0 && fd < REC_FDS ? fd_file[fd] - 1 : -1;
}

static void rec_op(int fd, uint8_t op, uint64_t off, const void *data, uint64_t len)
{
	int f;

	pthread_mutex_lock(&rec_lock);
	f = rec_file(fd);
	if (f >= 0)
		rec_emit(op, (uint32_t)f, off, data, len);
	pthread_mutex_unlock(&rec_lock);
}

static int rec_openat(int dirfd, const char *path, int flags, mode_t mode)
{
	int fd = real_openat(dirfd, path, flags, mode), saved = errno;

	if (fd >= 0 && fd < REC_FDS && rec_fd >= 0) {
		pthread_mutex_lock(&rec_lock);
		fd_file[fd] = (dirfd == AT_FDCWD || path[0] == '/') ? rec_path(path) + 1 : 0;
		if (fd_file[fd] && (flags & O_TRUNC))
			rec_emit(REC_TRUNC, (uint32_t)fd_file[fd] - 1, 0, NULL, 0);
		pthread_mutex_unlock(&rec_lock);
	}
	errno = saved;
	return fd;
}

#define MODE_ARG(flags)                                                                            \
	mode_t mode = 0;                                                                           \
	if ((flags) & (O_CREAT | __O_TMPFILE)) {                                                   \
		va_list ap;                                                                        \
		va_start(ap, flags);                                                               \
		mode = va_arg(ap, mode_t);                                                         \
		va_end(ap);                                                                        \
	}

int open(const char *path, int flags, ...);
int open64(const char *path, int flags, ...);
int openat(int dirfd, const char *path, int flags, ...);
int openat64(int dirfd, const char *path, int flags, ...);

int open(const char *path, int flags, ...)
{
	MODE_ARG(flags)
	return rec_openat(AT_FDCWD, path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
	MODE_ARG(flags)
	return rec_openat(AT_FDCWD, path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...)
{
	MODE_ARG(flags)
	return rec_openat(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
	MODE_ARG(flags)
	return rec_openat(dirfd, path, flags, mode);
}

int close(int fd)
{
	if (fd >= 0 && fd < REC_FDS && rec_fd >= 0) {
		pthread_mutex_lock(&rec_lock);
		fd_file[fd] = 0;
		pthread_mutex_unlock(&rec_lock);
	}
	return real_close(fd);
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
	ssize_t n;

	/* Under the lock: the record's order is the write's. */
	if (rec_file(fd) < 0)
		return real_pwrite(fd, buf, len, off);
	pthread_mutex_lock(&rec_lock);
	n = real_pwrite(fd, buf, len, off);
	if (n > 0 && rec_file(fd) >= 0)
		rec_emit(REC_WRITE, (uint32_t)rec_file(fd), (uint64_t)off, buf, (uint64_t)n);
	pthread_mutex_unlock(&rec_lock);
	return n;
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off)
{
	return pwrite(fd, buf, len, off);
}

ssize_t write(int fd, const void *buf, size_t len)
{
	ssize_t n;
	off_t at;

	if (rec_file(fd) < 0)
		return real_write(fd, buf, len);
	pthread_mutex_lock(&rec_lock);
	at = lseek(fd, 0, SEEK_CUR);
	n = real_write(fd, buf, len);
	if (n > 0 && at >= 0)
		rec_emit(REC_WRITE, (uint32_t)rec_file(fd), (uint64_t)at, buf, (uint64_t)n);
	pthread_mutex_unlock(&rec_lock);
	return n;
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	ssize_t n, left;
	uint64_t at = (uint64_t)off;

	if (rec_file(fd) < 0)
		return real_pwritev(fd, iov, cnt, off);
	pthread_mutex_lock(&rec_lock);
	n = real_pwritev(fd, iov, cnt, off);
	left = n;
	for (int i = 0; i < cnt && left > 0; i++) {
		size_t k = (size_t)left < iov[i].iov_len ? (size_t)left : iov[i].iov_len;

		rec_emit(REC_WRITE, (uint32_t)rec_file(fd), at, iov[i].iov_base, k);
		at += k;
		left -= (ssize_t)k;
	}
	pthread_mutex_unlock(&rec_lock);
	return n;
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
{
	return pwritev(fd, iov, cnt, off);
}

int fsync(int fd)
{
	int r = real_fsync(fd);

	if (r == 0)
		rec_op(fd, REC_FLUSH, 0, NULL, 0);
	return r;
}

int fdatasync(int fd)
{
	int r = real_fdatasync(fd);

	if (r == 0)
		rec_op(fd, REC_FLUSH, 0, NULL, 0);
	return r;
}

int ftruncate(int fd, off_t size)
{
	int r = real_ftruncate(fd, size);

	if (r == 0)
		rec_op(fd, REC_TRUNC, 0, NULL, (uint64_t)size);
	return r;
}

int ftruncate64(int fd, off_t size)
{
	return ftruncate(fd, size);
}

int fallocate(int fd, int mode, off_t off, off_t len)
{
	int r = real_fallocate(fd, mode, off, len);

	if (r == 0 && (mode & FALLOC_FL_PUNCH_HOLE))
		rec_op(fd, REC_ZERO, (uint64_t)off, NULL, (uint64_t)len);
	return r;
}

int fallocate64(int fd, int mode, off_t off, off_t len)
{
	return fallocate(fd, mode, off, len);
}

int rename(const char *from, const char *to)
{
	int r = real_rename(from, to), saved = errno;

	if (r == 0 && rec_fd >= 0) {
		pthread_mutex_lock(&rec_lock);
		int a = rec_path(from), b = rec_path(to);

		if (a >= 0 && b >= 0)
			rec_emit(REC_RENAME, (uint32_t)a, (uint64_t)b, NULL, 0);
		pthread_mutex_unlock(&rec_lock);
	}
	errno = saved;
	return r;
}

int renameat(int fromfd, const char *from, int tofd, const char *to)
{
	if (fromfd == AT_FDCWD && tofd == AT_FDCWD)
		return rename(from, to);
	return real_renameat(fromfd, from, tofd, to);
}

int unlink(const char *path)
{
	int r = real_unlink(path), saved = errno;

	if (r == 0 && rec_fd >= 0) {
		pthread_mutex_lock(&rec_lock);
		int a = rec_path(path);

		if (a >= 0)
			rec_emit(REC_UNLINK, (uint32_t)a, 0, NULL, 0);
		pthread_mutex_unlock(&rec_lock);
	}
	errno = saved;
	return r;
}
