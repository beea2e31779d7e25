/* Listening UNIX sockets: probe, replace a stale file, private mode before
 * listen(), accept back-off. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "resync/macro.h"
#include "resync/unixsock.h"

enum {
	UNIXSOCK_BACKOFF_MIN_MS = 100,
	UNIXSOCK_BACKOFF_MAX_MS = 1000,
};

static int fill_addr(const char *path, struct sockaddr_un *sa)
{
	*sa = (struct sockaddr_un){.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa->sun_path))
		return -ENAMETOOLONG;
	strcpy(sa->sun_path, path);
	return 0;
}

static int connect_fd(const char *path, int flags, int *ret_fd)
{
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);
	struct sockaddr_un sa;
	int r;

	if (fd < 0)
		return -errno;
	r = fill_addr(path, &sa);
	if (r < 0)
		return r;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -errno;
	*ret_fd = TAKE_FD(fd);
	return 0;
}

int unixsock_connect(const char *path, int *ret_fd)
{
	return connect_fd(path, 0, ret_fd);
}

/* Whether a live server listens at path: 1 yes, 0 no (nothing there, or a
 * stale socket file), -errno when it cannot be told (-EEXIST: not a
 * socket). */
static int probe(const char *path)
{
	struct stat st;
	int fd, r;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	/* Non-blocking: a live server whose backlog is full answers EAGAIN
	 * instead of holding us. */
	r = connect_fd(path, SOCK_NONBLOCK, &fd);
	if (r >= 0) {
		close(fd);
		return 1;
	}
	if (r == -EAGAIN || r == -EINPROGRESS)
		return 1;
	if (r == -ECONNREFUSED || r == -ENOENT)
		return 0;
	return r;
}

int unixsock_listen(const char *path, int backlog, int *ret_fd)
{
	_cleanup_close_ int fd = -1;
	struct sockaddr_un sa;
	int r;

	r = fill_addr(path, &sa);
	if (r < 0)
		return r;
	r = probe(path);
	if (r < 0)
		return r;
	if (r > 0)
		return -EADDRINUSE;
	/* Stale: a socket file nobody listens on (its server died). */
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -errno; /* EADDRINUSE: another server won the race */
	/* The umask is process-wide and other threads run: the file is made
	 * private by name instead. Until listen(), a connect() is refused,
	 * so nobody gets in while the mode is wider. fchmod() on a socket
	 * does not reach the file. */
	if (chmod(path, 0600) < 0 || listen(fd, backlog) < 0) {
		r = -errno;
		unlink(path);
		return r;
	}
	*ret_fd = TAKE_FD(fd);
	return 0;
}

unsigned unixsock_accept_delay(int err, unsigned *backoff_ms)
{
	switch (err) {
	case EMFILE:
	case ENFILE:
	case ENOBUFS:
	case ENOMEM:
		*backoff_ms = *backoff_ms ? MIN(*backoff_ms * 2, (unsigned)UNIXSOCK_BACKOFF_MAX_MS)
					  : UNIXSOCK_BACKOFF_MIN_MS;
		return *backoff_ms;
	default:
		return 0;
	}
}
