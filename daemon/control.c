#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "control.h"
#include "resync/fileio.h"
#include "resync/limits.h"
#include "resync/macro.h"


struct control_client {
	struct control_server *server;
	int fd;
	pthread_t thread;
	pthread_mutex_t send_lock;
	atomic_bool gone;
	atomic_bool finished;
	struct control_client *next; /* protected by server->lock */
};

struct control_server {
	int fd;
	int wake[2]; /* pipe: written to stop the accept thread */
	char *path;
	const struct control_command *cmds;
	size_t ncmds;
	void *userdata;
	pthread_t thread;
	atomic_bool stopping;
	pthread_mutex_t lock;
	struct control_client *clients; /* protected by lock */
};

static int send_line(int fd, struct json_object *obj)
{
	const char *s = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN);
	size_t len = strlen(s);
	_cleanup_free_ char *line = malloc(len + 2);

	if (!line)
		return -ENOMEM;
	memcpy(line, s, len);
	line[len] = '\n';
	return fd_write_all(fd, line, len + 1);
}

int control_client_send(struct control_client *c, struct json_object *obj)
{
	int r;

	if (atomic_load(&c->gone))
		return -EPIPE;
	pthread_mutex_lock(&c->send_lock);
	r = send_line(c->fd, obj);
	pthread_mutex_unlock(&c->send_lock);
	if (r < 0)
		atomic_store(&c->gone, true);
	return r;
}

int control_client_result(struct control_client *c, struct json_object *extra)
{
	struct json_object *o = extra ? extra : json_object_new_object();
	int r;

	json_object_object_add(o, "type", json_object_new_string("result"));
	json_object_object_add(o, "ok", json_object_new_boolean(1));
	r = control_client_send(c, o);
	json_object_put(o);
	return r;
}

int control_client_error(struct control_client *c, const char *fmt, ...)
{
	struct json_object *o = json_object_new_object();
	char msg[1024];
	va_list ap;
	int r;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_object_object_add(o, "type", json_object_new_string("result"));
	json_object_object_add(o, "ok", json_object_new_boolean(0));
	json_object_object_add(o, "error", json_object_new_string(msg));
	r = control_client_send(c, o);
	json_object_put(o);
	return r;
}

bool control_client_gone(struct control_client *c)
{
	struct pollfd p = {.fd = c->fd, .events = POLLIN | POLLRDHUP};

	if (atomic_load(&c->gone) || atomic_load(&c->server->stopping))
		return true;
	/* A client of a streaming command sends nothing more: readable
	 * here means it hung up. */
	if (poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR)))
		atomic_store(&c->gone, true);
	return atomic_load(&c->gone);
}

/* Read one line into a growing buffer; returns its length, 0 at EOF. */
static ssize_t read_line(int fd, char **buf, size_t *cap, size_t *have, int timeout_ms)
{
	for (;;) {
		char *nl = *have ? memchr(*buf, '\n', *have) : NULL;
		ssize_t n;

		if (nl)
			return nl - *buf + 1;
		if (*have >= RESYNC_CONTROL_LINE_MAX)
			return -EMSGSIZE;
		if (*have == *cap) {
			size_t ncap = *cap ? *cap * 2 : 4096;
			char *nb = realloc(*buf, ncap);

			if (!nb)
				return -ENOMEM;
			*buf = nb;
			*cap = ncap;
		}
		if (timeout_ms >= 0) {
			struct pollfd p = {.fd = fd, .events = POLLIN};
			int pr = poll(&p, 1, timeout_ms);

			if (pr < 0 && errno == EINTR)
				continue;
			if (pr < 0)
				return -errno;
			if (pr == 0)
				return -ETIMEDOUT;
		}
		n = read(fd, *buf + *have, *cap - *have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return 0;
		*have += (size_t)n;
	}
}

static struct json_object *parse_object(const char *s, size_t len)
{
	struct json_tokener *tok = json_tokener_new();
	struct json_object *o;

	if (!tok)
		return NULL;
	o = json_tokener_parse_ex(tok, s, (int)len);
	if (o && (json_tokener_get_error(tok) != json_tokener_success ||
		  !json_object_is_type(o, json_type_object))) {
		json_object_put(o);
		o = NULL;
	}
	json_tokener_free(tok);
	return o;
}

static void client_handle(struct control_client *c, struct json_object *req)
{
	struct control_server *s = c->server;
	struct json_object *cmd;
	const char *name;

	if (!json_object_object_get_ex(req, "cmd", &cmd) ||
	    !json_object_is_type(cmd, json_type_string)) {
		control_client_error(c, "request has no \"cmd\" string");
		return;
	}
	name = json_object_get_string(cmd);
	for (size_t i = 0; i < s->ncmds; i++) {
		if (strcmp(s->cmds[i].name, name))
			continue;
		int r = s->cmds[i].fn(s->userdata, c, req);

		if (r < 0)
			control_client_error(c, "%s: %s", name, strerror(-r));
		return;
	}
	control_client_error(c, "unknown command '%s'", name);
}

static void *client_main(void *arg)
{
	struct control_client *c = arg;
	_cleanup_free_ char *buf = NULL;
	size_t cap = 0, have = 0;

	while (!atomic_load(&c->gone) && !atomic_load(&c->server->stopping)) {
		ssize_t n = read_line(c->fd, &buf, &cap, &have, 500);
		struct json_object *req;

		if (n == -ETIMEDOUT)
			continue;
		if (n == -EMSGSIZE) {
			control_client_error(c, "request longer than %d bytes",
					     RESYNC_CONTROL_LINE_MAX);
			break;
		}
		if (n <= 0)
			break;
		req = parse_object(buf, (size_t)n - 1);
		memmove(buf, buf + n, have - (size_t)n);
		have -= (size_t)n;
		if (!req) {
			control_client_error(c, "request is not a JSON object");
			continue;
		}
		client_handle(c, req);
		json_object_put(req);
	}
	atomic_store(&c->gone, true);
	atomic_store(&c->finished, true);
	return NULL;
}

/* Join and free clients whose threads have ended (all of them if all). */
static void reap_clients(struct control_server *s, bool all)
{
	pthread_mutex_lock(&s->lock);
	for (struct control_client **pp = &s->clients; *pp;) {
		struct control_client *c = *pp;

		if (!all && !atomic_load(&c->finished)) {
			pp = &c->next;
			continue;
		}
		*pp = c->next;
		pthread_mutex_unlock(&s->lock);
		if (all)
			shutdown(c->fd, SHUT_RD);
		pthread_join(c->thread, NULL);
		close(c->fd);
		pthread_mutex_destroy(&c->send_lock);
		free(c);
		pthread_mutex_lock(&s->lock);
	}
	pthread_mutex_unlock(&s->lock);
}

static void *accept_main(void *arg)
{
	struct control_server *s = arg;

	while (!atomic_load(&s->stopping)) {
		struct pollfd p[2] = {{.fd = s->fd, .events = POLLIN},
				      {.fd = s->wake[0], .events = POLLIN}};
		struct control_client *c;
		int fd;

		if (poll(p, 2, 1000) < 0 && errno != EINTR)
			break;
		reap_clients(s, false);
		if (p[1].revents)
			break;
		if (!(p[0].revents & POLLIN))
			continue;
		fd = accept4(s->fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->server = s;
		c->fd = fd;
		pthread_mutex_init(&c->send_lock, NULL);
		if (pthread_create(&c->thread, NULL, client_main, c) != 0) {
			close(fd);
			pthread_mutex_destroy(&c->send_lock);
			free(c);
			continue;
		}
		pthread_mutex_lock(&s->lock);
		c->next = s->clients;
		s->clients = c;
		pthread_mutex_unlock(&s->lock);
	}
	return NULL;
}

static int fill_addr(const char *path, struct sockaddr_un *sa)
{
	*sa = (struct sockaddr_un){.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa->sun_path))
		return -ENAMETOOLONG;
	strcpy(sa->sun_path, path);
	return 0;
}

int control_connect(const char *path, int *ret_fd)
{
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
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

int control_server_new(const char *path, const struct control_command *cmds, size_t ncmds,
		       void *userdata, struct control_server **ret)
{
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct control_server *s;
	struct sockaddr_un sa;
	mode_t old;
	int r, probe;

	if (fd < 0)
		return -errno;
	r = fill_addr(path, &sa);
	if (r < 0)
		return r;
	/* A socket file may be left by a daemon that died: replace it only
	 * when nobody answers on it. */
	r = control_connect(path, &probe);
	if (r >= 0) {
		close(probe);
		return -EADDRINUSE;
	}
	if (r == -ECONNREFUSED)
		unlink(path);
	/* Startup is single-threaded: the umask makes the socket 0600 from
	 * its creation, with no window where others could connect. */
	old = umask(0177);
	r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r < 0)
		return -errno;
	if (listen(fd, 16) < 0) {
		r = -errno;
		unlink(path);
		return r;
	}

	s = calloc(1, sizeof(*s));
	if (!s) {
		unlink(path);
		return -ENOMEM;
	}
	s->path = strdup(path);
	if (!s->path || pipe2(s->wake, O_CLOEXEC) < 0) {
		free(s->path);
		free(s);
		unlink(path);
		return -ENOMEM;
	}
	s->cmds = cmds;
	s->ncmds = ncmds;
	s->userdata = userdata;
	pthread_mutex_init(&s->lock, NULL);
	s->fd = TAKE_FD(fd);
	r = -pthread_create(&s->thread, NULL, accept_main, s);
	if (r < 0) {
		close(s->fd);
		close(s->wake[0]);
		close(s->wake[1]);
		unlink(path);
		free(s->path);
		free(s);
		return r;
	}
	*ret = s;
	return 0;
}

void control_server_free(struct control_server *s)
{
	if (!s)
		return;
	atomic_store(&s->stopping, true);
	(void)!write(s->wake[1], "x", 1);
	pthread_join(s->thread, NULL);
	reap_clients(s, true);
	close(s->fd);
	close(s->wake[0]);
	close(s->wake[1]);
	unlink(s->path);
	pthread_mutex_destroy(&s->lock);
	free(s->path);
	free(s);
}

bool control_is_result(struct json_object *o)
{
	struct json_object *t;

	return json_object_object_get_ex(o, "type", &t) &&
	       json_object_is_type(t, json_type_string) &&
	       !strcmp(json_object_get_string(t), "result");
}

int control_send(int fd, struct json_object *req)
{
	return send_line(fd, req);
}

int control_recv(int fd, int timeout_ms, struct json_object **ret)
{
	/* Peek, then take exactly up to the newline: large replies (a verify
	 * lists its ranges) come in a few reads, and nothing of the next
	 * line is left in a buffer of ours between calls. */
	char *buf = NULL;
	size_t len = 0, cap = 0;
	int r;

	for (;;) {
		char chunk[65536], *nl;
		size_t take;
		ssize_t n;

		if (timeout_ms >= 0) {
			struct pollfd p = {.fd = fd, .events = POLLIN};
			int pr = poll(&p, 1, timeout_ms);

			if (pr < 0 && errno == EINTR)
				continue;
			if (pr < 0) {
				r = -errno;
				goto out;
			}
			if (pr == 0) {
				r = -ETIMEDOUT;
				goto out;
			}
		}
		n = recv(fd, chunk, sizeof(chunk), MSG_PEEK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			goto out;
		}
		if (n == 0) {
			r = -ECONNRESET;
			goto out;
		}
		nl = memchr(chunk, '\n', (size_t)n);
		take = nl ? (size_t)(nl - chunk) + 1 : (size_t)n;
		if (len + take > (size_t)RESYNC_CONTROL_REPLY_MAX) {
			r = -EMSGSIZE;
			goto out;
		}
		if (len + take + 1 > cap) {
			size_t ncap = MAX(cap * 2, len + take + 1);
			char *nb = realloc(buf, ncap);

			if (!nb) {
				r = -ENOMEM;
				goto out;
			}
			buf = nb;
			cap = ncap;
		}
		/* What was peeked is there: this read takes it whole. */
		n = fd_read_all(fd, buf + len, take);
		if (n < 0 || (size_t)n < take) {
			r = n < 0 ? (int)n : -ECONNRESET;
			goto out;
		}
		len += take;
		if (nl) {
			len--; /* the newline */
			break;
		}
	}
	*ret = parse_object(buf ? buf : "", len);
	r = *ret ? 0 : -EBADMSG;
out:
	free(buf);
	return r;
}
