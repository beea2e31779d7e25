/* File plumbing: see resync/fileio.h. */
#include "resync/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "resync/io.h"
#include "resync/macro.h"

/* The one loop over short transfers and EINTR. off < 0: the fd's own
 * position. Returns the bytes moved (fewer than len only when a read met
 * end of file) or -errno; a write that moves nothing is -EIO. */
static ssize_t xfer_all(int fd, void *buf, size_t len, int64_t off, bool wr)
{
	bool sock = wr && off < 0; /* try send(MSG_NOSIGNAL) until ENOTSOCK */
	size_t done = 0;

	while (done < len) {
		char *p = (char *)buf + done;
		size_t left = len - done;
		ssize_t n;

		if (!wr)
			n = off < 0 ? read(fd, p, left)
				    : pread(fd, p, left, (off_t)(off + (int64_t)done));
		else if (off >= 0)
			n = pwrite(fd, p, left, (off_t)(off + (int64_t)done));
		else if (sock) {
			n = send(fd, p, left, MSG_NOSIGNAL);
			if (n < 0 && errno == ENOTSOCK) {
				sock = false;
				continue;
			}
		} else
			n = write(fd, p, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0) {
			if (wr)
				return -EIO;
			break;
		}
		done += (size_t)n;
	}
	return (ssize_t)done;
}

ssize_t fd_read_all(int fd, void *buf, size_t len)
{
	return xfer_all(fd, buf, len, -1, false);
}

int fd_write_all(int fd, const void *buf, size_t len)
{
	ssize_t n = xfer_all(fd, (void *)buf, len, -1, true);

	return n < 0 ? (int)n : 0;
}

ssize_t fd_pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	if (off > (uint64_t)INT64_MAX - len)
		return -EINVAL;
	return xfer_all(fd, buf, len, (int64_t)off, false);
}

int fd_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	ssize_t n = fd_pread_all(fd, buf, len, off);

	if (n < 0)
		return (int)n;
	return (size_t)n == len ? 0 : -ENODATA;
}

int fd_pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	ssize_t n;

	if (off > (uint64_t)INT64_MAX - len)
		return -EINVAL;
	n = xfer_all(fd, (void *)buf, len, (int64_t)off, true);
	return n < 0 ? (int)n : 0;
}

int fsync_directory_of(const char *path)
{
	_cleanup_free_ char *dir = strdup(path);
	_cleanup_close_ int fd = -1;
	char *slash;

	if (!dir)
		return -ENOMEM;
	slash = strrchr(dir, '/');
	if (!slash)
		strcpy(dir, ".");
	else if (slash == dir)
		dir[1] = 0;
	else
		*slash = 0;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		return -errno;
	return 0;
}

int file_atomic_open(const char *path, mode_t mode, char **ret_tmp)
{
	static atomic_uint counter;

	for (int tries = 0;; tries++) {
		_cleanup_free_ char *tmp = NULL;
		int fd;

		if (asprintf(&tmp, "%s.%d-%u.tmp", path, (int)getpid(),
			     atomic_fetch_add(&counter, 1)) < 0)
			return -ENOMEM;
		fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
		if (fd >= 0) {
			*ret_tmp = TAKE_PTR(tmp);
			return fd;
		}
		/* EEXIST: left by a crashed process that had our pid. */
		if (errno != EEXIST || tries >= 100)
			return -errno;
	}
}

int file_atomic_commit(int fd, const char *tmp, const char *path)
{
	if (fsync(fd) < 0 || rename(tmp, path) < 0) {
		int r = -errno;

		unlink(tmp);
		return r;
	}
	return fsync_directory_of(path);
}

int file_write_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
	_cleanup_free_ char *tmp = NULL;
	_cleanup_close_ int fd = file_atomic_open(path, mode, &tmp);
	int r;

	if (fd < 0)
		return fd;
	r = fd_write_all(fd, data, len);
	if (r < 0) {
		unlink(tmp);
		return r;
	}
	return file_atomic_commit(fd, tmp, path);
}

int mkdir_p(const char *path, mode_t mode)
{
	_cleanup_free_ char *p = strdup(path);
	struct stat st;

	if (!p)
		return -ENOMEM;
	for (char *s = p + 1; *s; s++) {
		if (*s != '/' || s[-1] == '/')
			continue;
		*s = 0;
		if (mkdir(p, 0755) < 0 && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	if (mkdir(p, mode) == 0)
		return 0;
	if (errno != EEXIST)
		return -errno;
	/* Something is there: fine only if it is a directory. */
	if (stat(p, &st) < 0)
		return -errno;
	return S_ISDIR(st.st_mode) ? 0 : -EEXIST;
}
