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
#include "resync/unixsock.h"


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
	char *cluster; /* what an erasing request confirms */
	const struct control_command *cmds;
	size_t ncmds;
	void *userdata;
	pthread_t thread;
	atomic_bool stopping;
	pthread_mutex_t lock;
	struct control_client *clients; /* protected by lock */
};



int control_client_send(struct control_client *c, struct json_object *obj)
{
	int r;

	if (atomic_load(&c->gone))
		return -EPIPE;
	pthread_mutex_lock(&c->send_lock);
	r = control_send(c->fd, obj);
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

ssize_t control_read_line(int fd, char **buf, size_t *cap, size_t *have, size_t max,
			  int timeout_ms)
{
	for (;;) {
		char *nl = *have ? memchr(*buf, '\n', *have) : NULL;
		ssize_t n;

		if (nl)
			return nl - *buf + 1;
		if (*have >= max)
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


/* Whether a request of an erasing command erases: not when one of its
 * dry-run fields is true. */
static bool request_erases(const struct control_command *cmd, struct json_object *req)
{
	struct json_object *v;

	if (!(cmd->flags & CONTROL_CMD_ERASES))
		return false;
	for (const struct control_field *f = cmd->fields; f && f->name; f++)
		if ((f->flags & CONTROL_FIELD_DRY_RUN) && json_object_object_get_ex(req, f->name, &v) &&
		    json_object_get_boolean(v))
			return false;
	return true;
}

int control_request_check(const struct control_command *cmds, size_t ncmds, const char *cluster,
			  struct json_object *req, const struct control_command **ret_cmd,
			  char *err, size_t errlen)
{
	static const char *const confirm_field[] = {"confirm", NULL};
	const struct control_command *cmd = NULL;
	struct json_object *v;
	const char *name;
	char why[512];
	int r;

	if (!json_object_object_get_ex(req, "cmd", &v) || !control_json_is_cstring(v)) {
		snprintf(err, errlen, "refused: field \"cmd\" must be a string naming the command");
		return -EINVAL;
	}
	name = json_object_get_string(v);
	for (size_t i = 0; i < ncmds && !cmd; i++)
		if (!strcmp(cmds[i].name, name))
			cmd = &cmds[i];
	if (!cmd) {
		snprintf(err, errlen, "refused: unknown command '%s'", name);
		return -EINVAL;
	}
	r = control_fields_check(cmd->fields, (cmd->flags & CONTROL_CMD_ERASES) ? confirm_field : NULL,
				 req, why, sizeof(why));
	if (r < 0) {
		snprintf(err, errlen, "refused: %s: %s", name, why);
		return r;
	}
	if (request_erases(cmd, req) &&
	    (!json_object_object_get_ex(req, "confirm", &v) ||
	     strcmp(json_object_get_string(v), cluster))) {
		snprintf(err, errlen,
			 "refused: a %s erases data on the secondaries; the request must carry "
			 "\"confirm\": \"%s\" (the cluster's name)",
			 name, cluster);
		return -EINVAL;
	}
	*ret_cmd = cmd;
	return 0;
}

static void client_handle(struct control_client *c, struct json_object *req)
{
	struct control_server *s = c->server;
	const struct control_command *cmd;
	char err[1024];
	int r;

	r = control_request_check(s->cmds, s->ncmds, s->cluster, req, &cmd, err, sizeof(err));
	if (r < 0) {
		control_client_error(c, "%s", err);
		return;
	}
	r = cmd->fn(s->userdata, c, req);
	if (r < 0)
		control_client_error(c, "%s: %s", cmd->name, strerror(-r));
}

static void *client_main(void *arg)
{
	struct control_client *c = arg;
	_cleanup_free_ char *buf = NULL;
	size_t cap = 0, have = 0;

	while (!atomic_load(&c->gone) && !atomic_load(&c->server->stopping)) {
		ssize_t n = control_read_line(c->fd, &buf, &cap, &have, RESYNC_CONTROL_LINE_MAX, 500);
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
		req = control_parse(buf, (size_t)n - 1);
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
	unsigned backoff = 0, delay = 0;

	while (!atomic_load(&s->stopping)) {
		struct pollfd p[2] = {{.fd = s->fd, .events = POLLIN},
				      {.fd = s->wake[0], .events = POLLIN}};
		struct control_client *c;
		int fd;

		if (delay) {
			/* Backing off: only the stop is watched, as the
			 * listening socket stays readable while descriptors
			 * or memory run out. */
			struct pollfd w = {.fd = s->wake[0], .events = POLLIN};

			if (poll(&w, 1, (int)delay) > 0)
				break;
			delay = 0;
		}
		if (poll(p, 2, 1000) < 0 && errno != EINTR)
			break;
		reap_clients(s, false);
		if (p[1].revents)
			break;
		if (!(p[0].revents & POLLIN))
			continue;
		fd = accept4(s->fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			delay = unixsock_accept_delay(errno, &backoff);
			continue;
		}
		backoff = 0;
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



int control_server_new(const char *path, const char *cluster, const struct control_command *cmds,
		       size_t ncmds, void *userdata, struct control_server **ret)
{
	_cleanup_close_ int fd = -1;
	struct control_server *s;
	int r;

	r = unixsock_listen(path, 16, &fd);
	if (r < 0)
		return r;

	s = calloc(1, sizeof(*s));
	if (!s) {
		unlink(path);
		return -ENOMEM;
	}
	s->path = strdup(path);
	s->cluster = strdup(cluster);
	if (!s->path || !s->cluster || pipe2(s->wake, O_CLOEXEC) < 0) {
		free(s->path);
		free(s->cluster);
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
		free(s->cluster);
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
	free(s->cluster);
	free(s);
}



