/* The control socket of a standalone resyncfs: one text command a line.
 * The daemon has its own JSON control socket and drives the fusefs API
 * directly; this one exists so that a bare resyncfs can be fenced and
 * rewritten underneath by tests and operators. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "resync/fileio.h"
#include "resync/macro.h"
#include "resync/parse.h"
#include "resync/unixsock.h"
#include "fusefs-int.h"

#define CONTROL_LINE_MAX 4096
/* A rewrite carries at most this much at once (it is read into memory). */
#define CONTROL_REWRITE_MAX (64u << 20)

static int control_reply(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int control_reply(int fd, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	n = MIN(n, (int)sizeof(buf) - 2);
	buf[n++] = '\n';
	return fd_write_all(fd, buf, (size_t)n);
}

static int parse_u64(const char *s, uint64_t *ret)
{
	return s ? parse_size(s, ret) : -EINVAL;
}

static int control_rewrite(struct fusefs *fs, uint64_t off, uint64_t len, const char *path)
{
	_cleanup_free_ void *buf = NULL;
	_cleanup_close_ int fd = -1;
	ssize_t n;

	if (len > CONTROL_REWRITE_MAX)
		return -EFBIG;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	buf = malloc(len ? len : 1);
	if (!buf)
		return -ENOMEM;
	n = fd_read_all(fd, buf, len);
	if (n < 0)
		return (int)n;
	if ((uint64_t)n < len)
		return -ENODATA; /* the file is shorter than LEN */
	return fusefs_rewrite(fs, off, buf, len);
}

/* "stats": what the mount served so far (fusefs-int.h), and the metadata
 * writes; benchmarks divide the difference of two by their operations. */
static void control_stats(struct fusefs *fs, int fd)
{
	struct fusefs_stats *st = &fs->stats;

	control_reply(fd,
		      "ok reads=%" PRIu64 " writes=%" PRIu64 " fsyncs=%" PRIu64 " flushes=%" PRIu64
		      " others=%" PRIu64 " image_flushes=%" PRIu64 " meta_writes=%" PRIu64,
		      fusefs_stat_get(st, FUSEFS_STAT_READS), fusefs_stat_get(st, FUSEFS_STAT_WRITES),
		      fusefs_stat_get(st, FUSEFS_STAT_FSYNCS),
		      fusefs_stat_get(st, FUSEFS_STAT_FLUSHES),
		      fusefs_stat_get(st, FUSEFS_STAT_OTHERS), flush_count(&fs->flush),
		      meta_writes(fs->meta));
}

static void control_command(struct fusefs *fs, int fd, char *line)
{
	char *save = NULL;
	char *cmd = strtok_r(line, " \t\r", &save);
	char *a1 = strtok_r(NULL, " \t\r", &save);
	char *a2 = strtok_r(NULL, " \t\r", &save);
	char *a3 = strtok_r(NULL, " \t\r", &save);
	uint64_t off, len;
	int r;

	if (!cmd) {
		control_reply(fd, "error: empty command");
		return;
	}
	if (!strcmp(cmd, "freeze")) {
		enum fusefs_fence_mode mode = FUSEFS_FENCE_WAIT;

		if (a1 && !strcmp(a1, "fail"))
			mode = FUSEFS_FENCE_FAIL;
		else if (a1 && strcmp(a1, "wait")) {
			control_reply(fd, "error: freeze mode is 'wait' or 'fail'");
			return;
		}
		r = fusefs_fence_freeze(fs, mode);
	} else if (!strcmp(cmd, "thaw")) {
		r = fusefs_fence_thaw(fs);
	} else if (!strcmp(cmd, "invalidate")) {
		if (parse_u64(a1, &off) < 0 || parse_u64(a2, &len) < 0) {
			control_reply(fd, "error: usage: invalidate OFFSET LENGTH");
			return;
		}
		r = fusefs_invalidate(fs, off, len);
	} else if (!strcmp(cmd, "rewrite")) {
		if (parse_u64(a1, &off) < 0 || parse_u64(a2, &len) < 0 || !a3) {
			control_reply(fd, "error: usage: rewrite OFFSET LENGTH FILE");
			return;
		}
		r = control_rewrite(fs, off, len, a3);
	} else if (!strcmp(cmd, "status")) {
		control_reply(fd, "ok frozen=%d waiting=%u meta_writes=%" PRIu64,
			      fusefs_fence_frozen(fs), fusefs_fence_waiting(fs),
			      meta_writes(fs->meta));
		return;
	} else if (!strcmp(cmd, "stats")) {
		control_stats(fs, fd);
		return;
	} else {
		control_reply(fd, "error: unknown command '%s'", cmd);
		return;
	}
	if (r < 0)
		control_reply(fd, "error: %s", strerror(-r));
	else
		control_reply(fd, "ok");
}

/* Serve one connection until it closes or the server stops. */
static void control_serve(struct fusefs *fs, int fd)
{
	char buf[CONTROL_LINE_MAX];
	size_t used = 0;

	for (;;) {
		struct pollfd p[2] = {{fd, POLLIN, 0}, {fs->control_stop[0], POLLIN, 0}};
		ssize_t n;
		char *nl;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		if (p[1].revents)
			return;
		n = recv(fd, buf + used, sizeof(buf) - 1 - used, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		used += (size_t)n;
		while ((nl = memchr(buf, '\n', used))) {
			size_t len = (size_t)(nl - buf) + 1;

			*nl = 0;
			control_command(fs, fd, buf);
			memmove(buf, buf + len, used - len);
			used -= len;
		}
		if (used == sizeof(buf) - 1) {
			control_reply(fd, "error: line too long");
			return;
		}
	}
}

static void *control_thread(void *arg)
{
	struct fusefs *fs = arg;
	unsigned backoff = 0, delay = 0;

	for (;;) {
		struct pollfd p[2] = {{fs->control_fd, POLLIN, 0}, {fs->control_stop[0], POLLIN, 0}};
		int c;

		/* Backing off (out of descriptors or memory): only the stop
		 * is watched, the listening socket stays readable. */
		if (poll(delay ? p + 1 : p, delay ? 1 : 2, delay ? (int)delay : -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		if (delay) {
			delay = 0;
			continue;
		}
		c = accept4(fs->control_fd, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0) {
			delay = unixsock_accept_delay(errno, &backoff);
			continue;
		}
		backoff = 0;
		control_serve(fs, c);
		close(c);
	}
	return NULL;
}

int fusefs_control_start(struct fusefs *fs, const char *path)
{
	int r;

	if (fs->control_started)
		return -EBUSY;
	fs->control_path = strdup(path);
	if (!fs->control_path)
		return -ENOMEM;
	if (pipe2(fs->control_stop, O_CLOEXEC) < 0) {
		r = -errno;
		goto fail;
	}
	/* A live resyncfs's socket is left alone (-EADDRINUSE); only a
	 * stale one of an earlier run is replaced. */
	r = unixsock_listen(path, 4, &fs->control_fd);
	if (r < 0) {
		free(fs->control_path);
		fs->control_path = NULL; /* not ours: never unlinked */
		goto fail;
	}
	r = pthread_create(&fs->control_thread, NULL, control_thread, fs);
	if (r) {
		r = -r;
		goto fail;
	}
	fs->control_started = true;
	return 0;
fail:
	fusefs_control_stop(fs);
	return r;
}

void fusefs_control_stop(struct fusefs *fs)
{
	if (fs->control_started) {
		if (write(fs->control_stop[1], "x", 1) < 0) {
			/* The pipe is ours and empty: cannot fail in practice. */
		}
		pthread_join(fs->control_thread, NULL);
		fs->control_started = false;
	}
	if (fs->control_fd >= 0) {
		close(fs->control_fd);
		fs->control_fd = -1;
		if (fs->control_path)
			unlink(fs->control_path);
	}
	for (unsigned i = 0; i < 2; i++)
		if (fs->control_stop[i] >= 0) {
			close(fs->control_stop[i]);
			fs->control_stop[i] = -1;
		}
	free(fs->control_path);
	fs->control_path = NULL;
}
