/* The dashboard's side of the node's control socket (web-int.h): a line
 * reader that never loses bytes to a timeout, the ring of recent
 * messages that the event streams serve, the `events` stream's reader
 * that feeds it, one-shot calls (status, cancel), and the actions (plan,
 * verify, resync), one at a time on a thread of their own, whose reply
 * lines go to the ring. */
#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "control.h"
#include "resync/control.h"
#include "resync/limits.h"
#include "resync/macro.h"
#include "resync/volume.h"
#include "web-int.h"

/* A line reader over a control connection that never loses bytes to a
 * timeout (a partial line waits in buf for the rest). */
struct line_reader {
	int fd;
	char *buf;
	size_t have, cap;
};

/* The next line as a JSON object. Returns 0 and *ret, -ETIMEDOUT after
 * timeout_ms without a whole line, -ECONNRESET at the end, -EBADMSG,
 * -EMSGSIZE, -errno. */
static int line_read(struct line_reader *lr, int timeout_ms, json_object **ret)
{
	ssize_t n = control_read_line(lr->fd, &lr->buf, &lr->cap, &lr->have,
				      RESYNC_CONTROL_REPLY_MAX, timeout_ms);
	json_object *o;

	if (n <= 0)
		return n < 0 ? (int)n : -ECONNRESET;
	o = control_parse(lr->buf, (size_t)n - 1);
	memmove(lr->buf, lr->buf + n, lr->have - (size_t)n);
	lr->have -= (size_t)n;
	if (!o)
		return -EBADMSG;
	*ret = o;
	return 0;
}

/* ---- the ring of recent messages ---- */

/* Keep o (a reference is taken) as the next message and wake the
 * streams. */
void web_push(struct web *w, json_object *o)
{
	char *text = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	struct web_msg *m;

	if (!text)
		return;
	pthread_mutex_lock(&w->lock);
	m = &w->ring[w->next_seq % WEB_RING];
	free(m->text);
	m->seq = w->next_seq++;
	m->text = text;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

/* ---- the control socket ---- */

/* Connect to the node's control socket and send req. Returns 0 and *ret_fd
 * or -errno. */
static int web_control_open(struct web *w, json_object *req, int *ret_fd)
{
	_cleanup_close_ int fd = -1;
	int r;

	r = control_connect(w->o.self->control, &fd);
	if (r < 0)
		return r;
	r = control_send(fd, req);
	if (r < 0)
		return r;
	*ret_fd = TAKE_FD(fd);
	return 0;
}

/* One request, answered by its result line (stream lines are skipped):
 * for status and cancel. Returns 0 and *ret, or -errno (-ETIMEDOUT,
 * -ECANCELED at the stop). */
int web_control_call(struct web *w, json_object *req, int timeout_ms, json_object **ret)
{
	struct line_reader lr = {.fd = -1};
	int waited = 0, r;

	r = web_control_open(w, req, &lr.fd);
	while (r >= 0) {
		json_object *o = NULL;

		if (atomic_load(&w->stopping)) {
			r = -ECANCELED;
			break;
		}
		r = line_read(&lr, WEB_WAIT_MS, &o);
		if (r == -ETIMEDOUT) {
			waited += WEB_WAIT_MS;
			r = waited >= timeout_ms ? -ETIMEDOUT : 0;
			continue;
		}
		if (r < 0)
			break;
		if (control_is_result(o)) {
			*ret = o;
			break;
		}
		json_object_put(o);
	}
	if (lr.fd >= 0)
		close(lr.fd);
	free(lr.buf);
	return r;
}

/* ---- the events stream's reader ---- */

void *web_events_main(void *arg)
{
	struct web *w = arg;
	bool said = false;

	while (!atomic_load(&w->stopping)) {
		json_object *req = json_object_new_object();
		struct line_reader lr = {.fd = -1};
		int r;

		json_object_object_add(req, "cmd", json_object_new_string("events"));
		r = web_control_open(w, req, &lr.fd);
		json_object_put(req);
		if (r >= 0) {
			pthread_mutex_lock(&w->lock);
			w->events_fd = lr.fd;
			pthread_mutex_unlock(&w->lock);
			said = false;
		} else if (!said) {
			log_warning("dashboard: no event stream from '%s' for now: %s",
				    w->o.self->control, strerror(-r));
			said = true;
		}
		while (r >= 0 && !atomic_load(&w->stopping)) {
			json_object *o = NULL, *t;

			r = line_read(&lr, WEB_WAIT_MS, &o);
			if (r == -ETIMEDOUT) {
				r = 0;
				continue;
			}
			if (r < 0)
				break;
			/* Events (and a dropped count) go to the pages; the
			 * stream's first line only says it is open. */
			if (json_object_object_get_ex(o, "type", &t) &&
			    strcmp(json_object_get_string(t), "stream"))
				web_push(w, o);
			json_object_put(o);
		}
		pthread_mutex_lock(&w->lock);
		w->events_fd = -1;
		pthread_mutex_unlock(&w->lock);
		if (lr.fd >= 0)
			close(lr.fd);
		free(lr.buf);
		for (unsigned slept = 0; slept < WEB_RECONNECT_MS && !atomic_load(&w->stopping);
		     slept += 50)
			usleep(50000);
	}
	return NULL;
}

/* ---- actions: plan, verify, resync ---- */

/* A node's differing ranges as WEB_STRIP_CELLS percentages of the volume
 * (0: none differs; any difference shows as at least 1). */
static json_object *strip_json(json_object *ranges, uint64_t size)
{
	uint64_t cells[WEB_STRIP_CELLS] = {0};
	uint64_t cell = size ? DIV_ROUND_UP(size, WEB_STRIP_CELLS) : 1;
	json_object *a = json_object_new_array();

	for (size_t i = 0; size && i < json_object_array_length(ranges); i++) {
		json_object *r = json_object_array_get_idx(ranges, i);
		uint64_t off, len;

		if (!json_object_is_type(r, json_type_array) || json_object_array_length(r) != 2)
			continue;
		off = json_object_get_uint64(json_object_array_get_idx(r, 0));
		len = json_object_get_uint64(json_object_array_get_idx(r, 1));
		while (len && off < size) {
			uint64_t k = off / cell, take = MIN(len, (k + 1) * cell - off);

			cells[k] += take;
			off += take;
			len -= take;
		}
	}
	for (size_t k = 0; k < WEB_STRIP_CELLS; k++)
		json_object_array_add(a, json_object_new_int(
						 cells[k] ? (int)MAX(1, MIN(100, cells[k] * 100 / cell)) : 0));
	return a;
}

/* A result's ranges become strips: a page draws them, and thousands of
 * ranges need not travel to every page. */
static void result_strips(struct web *w, json_object *res)
{
	json_object *nodes, *ranges;
	uint64_t size = w->o.vol ? volume_size(w->o.vol) : 0;

	if (!json_object_object_get_ex(res, "nodes", &nodes) ||
	    !json_object_is_type(nodes, json_type_array))
		return;
	json_object_object_add(res, "volume_size", json_object_new_uint64(size));
	for (size_t i = 0; i < json_object_array_length(nodes); i++) {
		json_object *n = json_object_array_get_idx(nodes, i);

		if (!json_object_object_get_ex(n, "ranges", &ranges) ||
		    !json_object_is_type(ranges, json_type_array))
			continue;
		json_object_object_add(n, "ranges_count",
				       json_object_new_uint64(json_object_array_length(ranges)));
		json_object_object_add(n, "strip", strip_json(ranges, size));
		json_object_object_del(n, "ranges");
	}
}

/* {"type":"action","id","action", extra's keys}: extra is taken. */
static void action_push(struct web *w, uint64_t id, const char *kind, const char *key,
			json_object *val)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "type", json_object_new_string("action"));
	json_object_object_add(o, "id", json_object_new_uint64(id));
	json_object_object_add(o, "action", json_object_new_string(kind));
	json_object_object_add(o, key, val);
	web_push(w, o);
	json_object_put(o);
}

static void *action_main(void *arg)
{
	struct web *w = arg;
	struct line_reader lr = {.fd = -1};
	json_object *req;
	uint64_t id;
	char kind[sizeof(w->action_kind)];
	json_object *result = NULL;
	int r;

	pthread_mutex_lock(&w->lock);
	id = w->action_id;
	req = TAKE_PTR(w->action_req);
	memcpy(kind, w->action_kind, sizeof(kind));
	pthread_mutex_unlock(&w->lock);

	r = web_control_open(w, req, &lr.fd);
	json_object_put(req);
	pthread_mutex_lock(&w->lock);
	w->action_fd = lr.fd;
	pthread_mutex_unlock(&w->lock);
	while (r >= 0 && !result) {
		json_object *o = NULL;

		r = line_read(&lr, WEB_WAIT_MS, &o);
		if (r == -ETIMEDOUT && !atomic_load(&w->stopping)) {
			r = 0;
			continue;
		}
		if (r < 0)
			break;
		if (control_is_result(o)) {
			result_strips(w, o);
			result = o;
		} else {
			action_push(w, id, kind, "line", o); /* o taken */
		}
	}
	if (!result) {
		char msg[512];

		snprintf(msg, sizeof(msg), "the node's control socket '%s' %s: %s",
			 w->o.self->control, r == -ECONNRESET ? "closed" : "failed",
			 r == -ETIMEDOUT ? "the dashboard is stopping" : strerror(-r));
		result = json_object_new_object();
		json_object_object_add(result, "type", json_object_new_string("result"));
		json_object_object_add(result, "ok", json_object_new_boolean(0));
		json_object_object_add(result, "error", json_object_new_string(msg));
	}
	pthread_mutex_lock(&w->lock);
	w->action_fd = -1;
	w->action_busy = false;
	pthread_mutex_unlock(&w->lock);
	if (lr.fd >= 0)
		close(lr.fd);
	free(lr.buf);
	/* Last, once the next action may start: a page that reads the
	 * result may start one at once. */
	action_push(w, id, kind, "line", result);
	return NULL;
}

/* Start req (taken) as the dashboard's action kind. Returns the action's
 * id (> 0), -EBUSY while one runs, or -errno. */
int64_t web_action_start(struct web *w, const char *kind, json_object *req)
{
	json_object *o;
	int64_t id;
	bool join;
	int r;

	pthread_mutex_lock(&w->lock);
	if (w->action_busy || atomic_load(&w->stopping)) {
		pthread_mutex_unlock(&w->lock);
		json_object_put(req);
		return -EBUSY;
	}
	w->action_busy = true; /* claimed: nobody else starts or joins */
	join = w->action_started;
	w->action_started = false;
	id = (int64_t)++w->action_id;
	snprintf(w->action_kind, sizeof(w->action_kind), "%s", kind);
	w->action_req = req;
	pthread_mutex_unlock(&w->lock);
	/* The last one ended (it cleared busy) or is about to (it pushes its
	 * result, which takes the lock): joined outside the lock. */
	if (join)
		pthread_join(w->action_thread, NULL);
	/* Said before any of its lines. */
	o = json_object_new_object();
	json_object_object_add(o, "type", json_object_new_string("action"));
	json_object_object_add(o, "id", json_object_new_int64(id));
	json_object_object_add(o, "action", json_object_new_string(kind));
	json_object_object_add(o, "started", json_object_new_boolean(1));
	web_push(w, o);
	json_object_put(o);
	r = -pthread_create(&w->action_thread, NULL, action_main, w);
	pthread_mutex_lock(&w->lock);
	if (r < 0) {
		w->action_busy = false;
		json_object_put(TAKE_PTR(w->action_req));
	} else {
		w->action_started = true;
	}
	pthread_mutex_unlock(&w->lock);
	if (r < 0) {
		o = json_object_new_object();
		json_object_object_add(o, "type", json_object_new_string("result"));
		json_object_object_add(o, "ok", json_object_new_boolean(0));
		json_object_object_add(o, "error", json_object_new_string(strerror(-r)));
		action_push(w, (uint64_t)id, kind, "line", o);
		return r;
	}
	return id;
}
