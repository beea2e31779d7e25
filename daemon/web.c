/* The web dashboard (web.h): an HTTP server (libmicrohttpd, a thread a
 * connection), sessions and CSRF tokens, a ring of recent messages fed by
 * the `events` stream and by the actions' reply lines, and the actions
 * themselves, each sent to the node's own control socket. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "json-util.h"
#include "log.h"
#include "resync/clock.h"
#include "resync/control.h"
#include "resync/limits.h"
#include "resync/macro.h"
#include "resync/volume.h"
#include "web-assets.h"
#include "web.h"

enum {
	WEB_SESSIONS_MAX = 32,
	WEB_TOKEN_MIN = 16,   /* bytes of the login token, at least */
	WEB_TOKEN_MAX = 4096, /* and at most */
	WEB_BODY_MAX = 4096,  /* a request's body */
	WEB_RING = 512,	      /* messages kept for the event stream */
	WEB_CONNECTIONS_MAX = 64,
	WEB_CONNECTION_TIMEOUT_S = 120,
	WEB_WAIT_MS = 500,		      /* every wait checks the stop this often */
	WEB_STATUS_TIMEOUT_MS = 120000,	      /* a status asks every peer */
	WEB_LOGIN_FAIL_DELAY_MS = 1000,	      /* a wrong token costs this */
	WEB_RECONNECT_MS = 1000,	      /* the events stream, after a failure */
	WEB_STRIP_CELLS = 256,		      /* a difference strip's cells */
};
#define WEB_SESSION_IDLE_USEC (12ull * 3600 * 1000000) /* a session unused this long ends */
#define WEB_KEEPALIVE_USEC (15ull * 1000000)	       /* an event stream's comment line */
#define WEB_COOKIE "resync_session"
#define WEB_CSP                                                                                \
	"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "            \
	"connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"

struct web_session {
	bool used;
	char id[65];   /* hex of 32 random bytes: the cookie */
	char csrf[65]; /* hex of 32 random bytes: the X-CSRF-Token */
	uint64_t last_used;
};

struct web_msg {
	uint64_t seq; /* 0: empty */
	char *text;   /* one JSON line without its newline */
};

struct web {
	struct web_opts o;
	struct MHD_Daemon *d;
	uint16_t port;
	bool loopback; /* listening on loopback only: the Host header is checked */
	char *token;   /* NULL: no web_token_file, actions are disabled */
	size_t token_len;
	atomic_bool stopping;

	pthread_mutex_t lock;
	pthread_cond_t cond;			   /* a message was pushed, or the stop */
	struct web_session sessions[WEB_SESSIONS_MAX]; /* protected by lock */
	struct web_msg ring[WEB_RING];		   /* protected by lock */
	uint64_t next_seq;			   /* protected by lock; the first is 1 */

	/* The events stream's reader: owned, joined by web_free(). */
	pthread_t events_thread;
	bool events_started;
	int events_fd; /* -1 none; protected by lock (shut down at the stop) */

	/* The running action: one at a time, its thread joined before the
	 * next starts and by web_free(). */
	pthread_t action_thread;
	bool action_started; /* protected by lock */
	bool action_busy;    /* protected by lock */
	int action_fd;	     /* -1 none; protected by lock */
	uint64_t action_id;  /* protected by lock */
	char action_kind[16];
	struct json_object *action_req; /* the request, owned by the running action */
};

/* ---- small helpers ---- */

static void json_putp(json_object **p)
{
	json_object_put(*p);
}

static void hex(const unsigned char *b, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[b[i] >> 4];
		out[2 * i + 1] = digits[b[i] & 15];
	}
	out[2 * n] = 0;
}

static int random_hex(char out[65])
{
	unsigned char b[32];
	size_t have = 0;

	while (have < sizeof(b)) {
		ssize_t n = getrandom(b + have, sizeof(b) - have, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		have += (size_t)n;
	}
	hex(b, sizeof(b), out);
	explicit_bzero(b, sizeof(b));
	return 0;
}

/* Equal, in a time that does not depend on where they differ. */
static bool same_secret(const char *a, size_t alen, const char *b, size_t blen)
{
	unsigned char d = alen != blen;

	for (size_t i = 0; i < alen && i < blen; i++)
		d |= (unsigned char)(a[i] ^ b[i]);
	return d == 0;
}

/* Whether host (an address or a name, without port or brackets) is this
 * machine's loopback. */
static bool host_is_loopback(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (!strcmp(host, "localhost") || !host[0])
		return true;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, host, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6);
	return false;
}

/* A Host header's host part: "h:port", "[v6]:port", "h". */
static bool host_header_is_loopback(const char *h)
{
	char host[256];
	const char *end;
	size_t len;

	if (h[0] == '[') {
		end = strchr(h, ']');
		if (!end)
			return false;
		h++;
	} else {
		end = strchr(h, ':');
		if (!end)
			end = h + strlen(h);
	}
	len = (size_t)(end - h);
	if (len >= sizeof(host))
		return false;
	memcpy(host, h, len);
	host[len] = 0;
	return host_is_loopback(host);
}

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
	for (;;) {
		char *nl = lr->have ? memchr(lr->buf, '\n', lr->have) : NULL;
		struct pollfd p = {.fd = lr->fd, .events = POLLIN};
		ssize_t n;
		int pr;

		if (nl) {
			size_t ll = (size_t)(nl - lr->buf);
			json_object *o = control_parse(lr->buf, ll);

			memmove(lr->buf, nl + 1, lr->have - ll - 1);
			lr->have -= ll + 1;
			if (!o)
				return -EBADMSG;
			*ret = o;
			return 0;
		}
		if (lr->have >= RESYNC_CONTROL_REPLY_MAX)
			return -EMSGSIZE;
		if (lr->cap - lr->have < 65536) {
			size_t ncap = MAX(lr->cap * 2, lr->have + 65536);
			char *nb = realloc(lr->buf, ncap);

			if (!nb)
				return -ENOMEM;
			lr->buf = nb;
			lr->cap = ncap;
		}
		pr = poll(&p, 1, timeout_ms);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr < 0)
			return -errno;
		if (pr == 0)
			return -ETIMEDOUT;
		n = read(lr->fd, lr->buf + lr->have, lr->cap - lr->have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ECONNRESET;
		lr->have += (size_t)n;
	}
}

/* ---- the ring of recent messages ---- */

/* Keep o (a reference is taken) as the next message and wake the
 * streams. */
static void web_push(struct web *w, json_object *o)
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
static int web_control_call(struct web *w, json_object *req, int timeout_ms, json_object **ret)
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

static void *events_main(void *arg)
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
static int64_t action_start(struct web *w, const char *kind, json_object *req)
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

/* ---- HTTP ---- */

/* One request's state across libmicrohttpd's calls. */
struct web_req {
	char body[WEB_BODY_MAX + 1];
	size_t len;
	bool too_big;
	int session; /* index into sessions, -1 none */
};

/* Every response: the security headers. */
static void secure_headers(struct MHD_Response *r, bool cache)
{
	MHD_add_response_header(r, "Content-Security-Policy", WEB_CSP);
	MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
	MHD_add_response_header(r, "X-Frame-Options", "DENY");
	MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
	MHD_add_response_header(r, "Cross-Origin-Opener-Policy", "same-origin");
	MHD_add_response_header(r, "Cross-Origin-Resource-Policy", "same-origin");
	MHD_add_response_header(r, "Cache-Control", cache ? "no-cache" : "no-store");
}

static enum MHD_Result queue(struct MHD_Connection *c, unsigned status, struct MHD_Response *r,
			     const char *type, bool cache)
{
	enum MHD_Result ok;

	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, "Content-Type", type);
	secure_headers(r, cache);
	ok = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ok;
}

/* Reply with o as JSON (o is taken); cookie (may be NULL) is set. */
static enum MHD_Result reply_json_cookie(struct MHD_Connection *c, unsigned status, json_object *o,
					 const char *cookie)
{
	const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	struct MHD_Response *r =
		MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);

	json_object_put(o);
	if (r && cookie)
		MHD_add_response_header(r, "Set-Cookie", cookie);
	return queue(c, status, r, "application/json", false);
}

static enum MHD_Result reply_json(struct MHD_Connection *c, unsigned status, json_object *o)
{
	return reply_json_cookie(c, status, o, NULL);
}

static enum MHD_Result reply_error(struct MHD_Connection *c, unsigned status, const char *msg)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "ok", json_object_new_boolean(0));
	json_object_object_add(o, "error", json_object_new_string(msg));
	return reply_json(c, status, o);
}

static const char *remote_of(struct MHD_Connection *c, char *buf, size_t len)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	struct sockaddr_storage ss = {0};

	snprintf(buf, len, "?");
	if (!ci || !ci->client_addr)
		return buf;
	/* Copied: the address need not be aligned for its family's struct. */
	memcpy(&ss, ci->client_addr,
	       ci->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
						      : sizeof(struct sockaddr_in));
	if (ss.ss_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, buf, (socklen_t)len);
	else if (ss.ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, buf, (socklen_t)len);
	return buf;
}

/* The session named by the request's cookie (its index, refreshed), or
 * -1. Sessions idle too long end here. */
static int session_find(struct web *w, struct MHD_Connection *c)
{
	const char *id = MHD_lookup_connection_value(c, MHD_COOKIE_KIND, WEB_COOKIE);
	uint64_t now = clock_usec();
	int found = -1;

	if (!id)
		return -1;
	pthread_mutex_lock(&w->lock);
	for (int i = 0; i < WEB_SESSIONS_MAX; i++) {
		struct web_session *s = &w->sessions[i];

		if (!s->used)
			continue;
		if (now - s->last_used > WEB_SESSION_IDLE_USEC) {
			explicit_bzero(s, sizeof(*s));
			continue;
		}
		if (same_secret(s->id, strlen(s->id), id, strlen(id))) {
			s->last_used = now;
			found = i;
		}
	}
	pthread_mutex_unlock(&w->lock);
	return found;
}

/* Whether the request carries the CSRF token of session i. */
static bool csrf_ok(struct web *w, struct MHD_Connection *c, int i)
{
	const char *t = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-CSRF-Token");
	bool ok;

	if (!t || i < 0)
		return false;
	pthread_mutex_lock(&w->lock);
	ok = w->sessions[i].used && same_secret(w->sessions[i].csrf, strlen(w->sessions[i].csrf), t,
						 strlen(t));
	pthread_mutex_unlock(&w->lock);
	return ok;
}

static json_object *body_json(struct web_req *rq)
{
	json_object *o;

	rq->body[rq->len] = 0;
	o = rq->len ? json_tokener_parse(rq->body) : json_object_new_object();
	if (o && !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		return NULL;
	}
	return o;
}

/* What the dashboard may offer: the Resync Cluster button, or why not
 * (as the daemon would refuse it: DESIGN.md, "A resync", step 1). */
static bool resync_offered(const struct cluster_config *cfg, char *why, size_t len)
{
	if (cfg->n_nodes < 2) {
		snprintf(why, len, "Cluster '%s' has one node: a resync needs two or more.",
			 cfg->name);
		return false;
	}
	if (!cluster_config_primary_name(cfg)) {
		snprintf(why, len,
			 "Cluster '%s' has no primary defined (set 'primary' in [cluster]): "
			 "nothing says whose data is right.",
			 cfg->name);
		return false;
	}
	why[0] = 0;
	return true;
}

static json_object *dashboard_json(struct web *w, int session)
{
	const struct cluster_config *cfg = w->o.cfg;
	json_object *o = json_object_new_object(), *names = json_object_new_array();
	char why[256];
	bool offered = resync_offered(cfg, why, sizeof(why)), busy;

	pthread_mutex_lock(&w->lock);
	busy = w->action_busy;
	pthread_mutex_unlock(&w->lock);
	for (size_t i = 0; i < cfg->n_nodes; i++)
		json_object_array_add(names, json_object_new_string(cfg->nodes[i].name));
	json_object_object_add(o, "cluster", json_object_new_string(cfg->name));
	json_object_object_add(o, "node", json_object_new_string(w->o.self->name));
	json_object_object_add(o, "primary", json_string_or_null(cluster_config_primary_name(cfg)));
	json_object_object_add(o, "nodes", names);
	json_object_object_add(o, "undo", json_object_new_boolean(cfg->undo == CONFIG_UNDO_ON));
	json_object_object_add(o, "undo_mode",
			       json_object_new_string(cfg->undo == CONFIG_UNDO_ON	  ? "on"
						      : cfg->undo == CONFIG_UNDO_DIVERGED ? "diverged"
											  : "off"));
	json_object_object_add(o, "block_size", json_object_new_uint64(cfg->block_size));
	json_object_object_add(o, "volume_size",
			       json_object_new_uint64(w->o.vol ? volume_size(w->o.vol) : 0));
	json_object_object_add(o, "resync_offered", json_object_new_boolean(offered));
	if (!offered)
		json_object_object_add(o, "resync_absent_reason", json_object_new_string(why));
	json_object_object_add(o, "logged_in", json_object_new_boolean(session >= 0));
	json_object_object_add(o, "actions", json_object_new_boolean(w->token != NULL));
	json_object_object_add(o, "public_status", json_object_new_boolean(cfg->web_public_status));
	json_object_object_add(o, "action_running", json_object_new_boolean(busy));
	return o;
}

/* GET /api/session: who is asking, and the CSRF token of its session. */
static enum MHD_Result api_session(struct web *w, struct MHD_Connection *c, struct web_req *rq)
{
	json_object *o = dashboard_json(w, rq->session);

	if (rq->session >= 0) {
		pthread_mutex_lock(&w->lock);
		json_object_object_add(o, "csrf", json_object_new_string(w->sessions[rq->session].csrf));
		pthread_mutex_unlock(&w->lock);
	}
	return reply_json(c, MHD_HTTP_OK, o);
}

static enum MHD_Result api_login(struct web *w, struct MHD_Connection *c, struct web_req *rq)
{
	_cleanup_(json_putp) json_object *body = body_json(rq);
	json_object *t, *o;
	struct web_session *s;
	char cookie[160], addr[64];
	int k = 0;
	const char *tok;

	if (!w->token)
		return reply_error(c, MHD_HTTP_FORBIDDEN,
				   "this dashboard has no web_token_file: logins and actions are disabled");
	if (!body || !json_object_object_get_ex(body, "token", &t) ||
	    !json_object_is_type(t, json_type_string))
		return reply_error(c, MHD_HTTP_BAD_REQUEST, "the body must be {\"token\": \"...\"}");
	tok = json_object_get_string(t);
	if (!same_secret(w->token, w->token_len, tok, strlen(tok))) {
		log_warning("dashboard: a login from %s with a wrong token",
			    remote_of(c, addr, sizeof(addr)));
		usleep(WEB_LOGIN_FAIL_DELAY_MS * 1000);
		return reply_error(c, MHD_HTTP_FORBIDDEN, "wrong token");
	}
	pthread_mutex_lock(&w->lock);
	/* A free slot, or (all in use) the least recently used one ends. */
	for (int i = 1; i < WEB_SESSIONS_MAX && w->sessions[k].used; i++)
		if (!w->sessions[i].used || w->sessions[i].last_used < w->sessions[k].last_used)
			k = i;
	s = &w->sessions[k];
	memset(s, 0, sizeof(*s));
	if (random_hex(s->id) < 0 || random_hex(s->csrf) < 0) {
		explicit_bzero(s, sizeof(*s));
		pthread_mutex_unlock(&w->lock);
		return reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "no randomness");
	}
	s->used = true;
	s->last_used = clock_usec();
	snprintf(cookie, sizeof(cookie), WEB_COOKIE "=%s; Path=/; HttpOnly; SameSite=Strict",
		 s->id);
	o = json_object_new_object();
	json_object_object_add(o, "ok", json_object_new_boolean(1));
	json_object_object_add(o, "csrf", json_object_new_string(s->csrf));
	pthread_mutex_unlock(&w->lock);
	log_info("dashboard: logged in from %s", remote_of(c, addr, sizeof(addr)));
	return reply_json_cookie(c, MHD_HTTP_OK, o, cookie);
}

static enum MHD_Result api_logout(struct web *w, struct MHD_Connection *c, struct web_req *rq)
{
	json_object *o = json_object_new_object();

	pthread_mutex_lock(&w->lock);
	explicit_bzero(&w->sessions[rq->session], sizeof(w->sessions[rq->session]));
	pthread_mutex_unlock(&w->lock);
	json_object_object_add(o, "ok", json_object_new_boolean(1));
	return reply_json_cookie(c, MHD_HTTP_OK, o,
				 WEB_COOKIE "=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
}

/* GET /api/status: the status command's result (from the primary's
 * view, forwarded by a secondary as resyncctl's is) and the dashboard's
 * facts. */
static enum MHD_Result api_status(struct web *w, struct MHD_Connection *c, struct web_req *rq)
{
	json_object *req = json_object_new_object(), *res = NULL, *o;
	int r;

	json_object_object_add(req, "cmd", json_object_new_string("status"));
	r = web_control_call(w, req, WEB_STATUS_TIMEOUT_MS, &res);
	json_object_put(req);
	o = dashboard_json(w, rq->session);
	if (r < 0) {
		char msg[512];

		snprintf(msg, sizeof(msg), "the node's control socket '%s' did not answer: %s",
			 w->o.self->control, strerror(-r));
		json_object_object_add(o, "status_error", json_object_new_string(msg));
	} else {
		json_object_object_add(o, "status", res);
	}
	return reply_json(c, MHD_HTTP_OK, o);
}

static enum MHD_Result api_action(struct web *w, struct MHD_Connection *c, const char *kind,
				  json_object *req)
{
	int64_t id = action_start(w, kind, req);
	json_object *o;

	if (id == -EBUSY)
		return reply_error(c, MHD_HTTP_CONFLICT,
				   "an action of this dashboard is running; wait for its result");
	if (id < 0)
		return reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, strerror((int)-id));
	o = json_object_new_object();
	json_object_object_add(o, "ok", json_object_new_boolean(1));
	json_object_object_add(o, "action", json_object_new_int64(id));
	return reply_json(c, MHD_HTTP_ACCEPTED, o);
}

static enum MHD_Result api_plan(struct web *w, struct MHD_Connection *c, struct web_req *rq)
{
	json_object *req = json_object_new_object();

	json_object_object_add(req, "cmd", json_object_new_string("verify"));
	json_object_object_add(req, "plan", json_object_new_boolean(1));
	return api_action(w, c, "plan", req);
}

static enum MHD_Result api_verify(struct web *w, struct MHD_Connection *c, struct web_req *rq)
{
	json_object *req = json_object_new_object();

	json_object_object_add(req, "cmd", json_object_new_string("verify"));
	return api_action(w, c, "verify", req);
}

/* POST /api/resync {"confirm": NAME}: the typed name goes to the daemon
 * as resyncctl's "confirm" does; the daemon's own check refuses any
 * other. */
static enum MHD_Result api_resync(struct web *w, struct MHD_Connection *c, struct web_req *rq)
{
	_cleanup_(json_putp) json_object *body = body_json(rq);
	json_object *req, *v;

	if (!body || !json_object_object_get_ex(body, "confirm", &v) ||
	    !json_object_is_type(v, json_type_string))
		return reply_error(c, MHD_HTTP_BAD_REQUEST,
				   "the body must be {\"confirm\": \"<the cluster's name>\"}");
	req = json_object_new_object();
	json_object_object_add(req, "cmd", json_object_new_string("resync"));
	json_object_object_add(req, "confirm", json_object_get(v));
	json_object_object_add(req, "no_ranges", json_object_new_boolean(1));
	return api_action(w, c, "resync", req);
}

static enum MHD_Result api_cancel(struct web *w, struct MHD_Connection *c, struct web_req *rq)
{
	json_object *req = json_object_new_object(), *res = NULL;
	int r;

	json_object_object_add(req, "cmd", json_object_new_string("cancel"));
	r = web_control_call(w, req, WEB_STATUS_TIMEOUT_MS, &res);
	json_object_put(req);
	if (r < 0)
		return reply_error(c, MHD_HTTP_BAD_GATEWAY, strerror(-r));
	return reply_json(c, MHD_HTTP_OK, res);
}

/* GET /api/events: the ring from Last-Event-ID (or its oldest), then
 * live; a comment line every WEB_KEEPALIVE_USEC. */
struct web_stream {
	struct web *w;
	uint64_t next; /* the next seq to send */
	char *pending;
	size_t len, off;
	uint64_t last_sent;
};

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct web_stream *st = cls;
	struct web *w = st->w;

	(void)pos;
	if (st->off == st->len) {
		struct timespec ts;

		free(st->pending);
		st->pending = NULL;
		st->len = st->off = 0;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		pthread_mutex_lock(&w->lock);
		if (st->next >= w->next_seq && !atomic_load(&w->stopping))
			pthread_cond_timedwait(&w->cond, &w->lock, &ts);
		if (atomic_load(&w->stopping)) {
			pthread_mutex_unlock(&w->lock);
			return MHD_CONTENT_READER_END_OF_STREAM;
		}
		if (w->next_seq > WEB_RING && st->next < w->next_seq - WEB_RING)
			st->next = w->next_seq - WEB_RING; /* the older ones are gone */
		if (st->next < w->next_seq) {
			struct web_msg *m = &w->ring[st->next % WEB_RING];
			int n = asprintf(&st->pending, "id: %" PRIu64 "\ndata: %s\n\n", m->seq, m->text);

			if (n < 0)
				st->pending = NULL;
			else
				st->len = (size_t)n;
			st->next++;
		}
		pthread_mutex_unlock(&w->lock);
		if (!st->pending && clock_usec() - st->last_sent >= WEB_KEEPALIVE_USEC) {
			st->pending = strdup(": keepalive\n\n");
			st->len = st->pending ? strlen(st->pending) : 0;
		}
		if (!st->pending)
			return 0; /* nothing yet: called again (a thread per connection) */
		st->last_sent = clock_usec();
	}
	{
		size_t k = MIN(max, st->len - st->off);

		memcpy(buf, st->pending + st->off, k);
		st->off += k;
		return (ssize_t)k;
	}
}

static void stream_free(void *cls)
{
	struct web_stream *st = cls;

	free(st->pending);
	free(st);
}

static enum MHD_Result api_events(struct web *w, struct MHD_Connection *c, struct web_req *rq)
{
	const char *last = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Last-Event-ID");
	struct web_stream *st = calloc(1, sizeof(*st));
	struct MHD_Response *r;

	if (!st)
		return MHD_NO;
	st->w = w;
	st->next = 1;
	if (last) {
		char *end;
		unsigned long long v = strtoull(last, &end, 10);

		if (!*end && end != last)
			st->next = v + 1;
	}
	st->pending = strdup("retry: 2000\n\n");
	st->len = st->pending ? strlen(st->pending) : 0;
	st->last_sent = clock_usec();
	r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, st, stream_free);
	if (!r) {
		stream_free(st);
		return MHD_NO;
	}
	return queue(c, MHD_HTTP_OK, r, "text/event-stream", false);
}

enum route_flags {
	ROUTE_READ = 1 << 0,  /* a session, or web_public_status */
	ROUTE_WRITE = 1 << 1, /* a session and its CSRF token (a POST) */
};

struct route {
	const char *method, *path;
	enum MHD_Result (*fn)(struct web *w, struct MHD_Connection *c, struct web_req *rq);
	unsigned flags;
};

static const struct route routes[] = {
	{"GET", "/api/session", api_session, 0},
	{"POST", "/api/login", api_login, 0},
	{"POST", "/api/logout", api_logout, ROUTE_WRITE},
	{"GET", "/api/status", api_status, ROUTE_READ},
	{"GET", "/api/events", api_events, ROUTE_READ},
	{"POST", "/api/plan", api_plan, ROUTE_WRITE},
	{"POST", "/api/verify", api_verify, ROUTE_WRITE},
	{"POST", "/api/resync", api_resync, ROUTE_WRITE},
	{"POST", "/api/cancel", api_cancel, ROUTE_WRITE},
};

static enum MHD_Result serve_asset(struct MHD_Connection *c, const char *url)
{
	for (size_t i = 0; i < web_assets_n; i++) {
		const struct web_asset *a = &web_assets[i];

		if (strcmp(url, a->path))
			continue;
		return queue(c, MHD_HTTP_OK,
			     MHD_create_response_from_buffer(a->len, (void *)a->data,
							     MHD_RESPMEM_PERSISTENT),
			     a->type, true);
	}
	return queue(c, MHD_HTTP_NOT_FOUND,
		     MHD_create_response_from_buffer(10, (void *)"not found\n",
						     MHD_RESPMEM_PERSISTENT),
		     "text/plain; charset=utf-8", false);
}

/* A POST from another origin is refused whatever it carries (the
 * cookie's SameSite=Strict keeps it away too). */
static bool origin_ok(struct MHD_Connection *c)
{
	const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
	const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host");

	if (!origin)
		return true;
	/* https: behind a TLS proxy that keeps the Host. */
	if (!strncmp(origin, "http://", 7))
		origin += 7;
	else if (!strncmp(origin, "https://", 8))
		origin += 8;
	else
		return false;
	return host && !strcmp(origin, host);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
			      const char *method, const char *version, const char *upload_data,
			      size_t *upload_data_size, void **con_cls)
{
	struct web *w = cls;
	struct web_req *rq = *con_cls;
	const struct route *rt = NULL;
	const char *host;
	bool get;

	(void)version;
	if (!rq) {
		rq = calloc(1, sizeof(*rq));
		if (!rq)
			return MHD_NO;
		rq->session = -1;
		*con_cls = rq;
		return MHD_YES;
	}
	if (*upload_data_size) {
		if (rq->len + *upload_data_size > WEB_BODY_MAX)
			rq->too_big = true;
		else
			memcpy(rq->body + rq->len, upload_data, *upload_data_size);
		if (!rq->too_big)
			rq->len += *upload_data_size;
		*upload_data_size = 0;
		return MHD_YES;
	}
	host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host");
	if (w->loopback && (!host || !host_header_is_loopback(host)))
		return reply_error(c, MHD_HTTP_FORBIDDEN,
				   "this dashboard serves loopback only: the Host header must name it");
	get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
	if (strncmp(url, "/api/", 5)) {
		if (!get)
			return reply_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "GET only");
		return serve_asset(c, url);
	}
	for (size_t i = 0; i < ARRAY_SIZE(routes) && !rt; i++)
		if (!strcmp(routes[i].path, url))
			rt = &routes[i];
	if (!rt)
		return reply_error(c, MHD_HTTP_NOT_FOUND, "no such endpoint");
	if (strcmp(rt->method, get ? "GET" : method))
		return reply_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, rt->method[0] == 'G' ? "GET only"
										 : "POST only");
	if (rq->too_big)
		return reply_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large");
	rq->session = session_find(w, c);
	if ((rt->flags & ROUTE_READ) && rq->session < 0 && !w->o.cfg->web_public_status)
		return reply_error(c, MHD_HTTP_UNAUTHORIZED, "log in first");
	if (!get && !origin_ok(c))
		return reply_error(c, MHD_HTTP_FORBIDDEN, "refused: a request from another origin");
	if (rt->flags & ROUTE_WRITE) {
		if (rq->session < 0)
			return reply_error(c, MHD_HTTP_FORBIDDEN, "refused: log in first");
		if (!csrf_ok(w, c, rq->session))
			return reply_error(c, MHD_HTTP_FORBIDDEN,
					   "refused: the request lacks this session's CSRF token");
	}
	if (!get) {
		const char *type = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");

		if (rq->len && (!type || strncmp(type, "application/json", 16)))
			return reply_error(c, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE,
					   "the body must be application/json");
	}
	return rt->fn(w, c, rq);
}

static void request_done(void *cls, struct MHD_Connection *c, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)c;
	(void)toe;
	free(*con_cls);
	*con_cls = NULL;
}

/* ---- lifecycle ---- */

/* web_token_file: a regular file that neither group nor others may
 * read or write, holding WEB_TOKEN_MIN..WEB_TOKEN_MAX bytes (trailing
 * white space is not part of it). */
static int token_load(struct web *w, const char *path, char *err, size_t errlen)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	char buf[WEB_TOKEN_MAX + 2];
	struct stat st;
	size_t len = 0;

	if (fd < 0 || fstat(fd, &st) < 0) {
		snprintf(err, errlen, "web_token_file '%s': %s", path, strerror(errno));
		return -errno;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "web_token_file '%s' is not a regular file", path);
		return -EINVAL;
	}
	if (st.st_mode & 077) {
		snprintf(err, errlen,
			 "web_token_file '%s' may be read or written by group or others (mode %04o): "
			 "refusing it; chmod 600 it",
			 path, (unsigned)(st.st_mode & 07777));
		return -EPERM;
	}
	for (;;) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(err, errlen, "web_token_file '%s': %s", path, strerror(errno));
			return -errno;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len == sizeof(buf) - 1)
			break;
	}
	while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' ' ||
		       buf[len - 1] == '\t'))
		len--;
	if (len < WEB_TOKEN_MIN || len > WEB_TOKEN_MAX || memchr(buf, 0, len)) {
		explicit_bzero(buf, sizeof(buf));
		snprintf(err, errlen,
			 "web_token_file '%s' must hold a token of %d to %d bytes (e.g. 32 random "
			 "bytes in hex)",
			 path, WEB_TOKEN_MIN, WEB_TOKEN_MAX);
		return -EINVAL;
	}
	w->token = malloc(len + 1);
	if (!w->token) {
		explicit_bzero(buf, sizeof(buf));
		return -ENOMEM;
	}
	memcpy(w->token, buf, len);
	w->token[len] = 0;
	w->token_len = len;
	explicit_bzero(buf, sizeof(buf));
	return 0;
}

/* The listening address: web's HOST:PORT (an empty HOST is 127.0.0.1),
 * and whether it is loopback. */
static int web_address(const char *listen, struct sockaddr_storage *ss, bool *ret_loopback,
		       char *err, size_t errlen)
{
	_cleanup_free_ char *host = NULL;
	uint16_t port;

	if (config_address_parse(listen, &host, &port) < 0) {
		snprintf(err, errlen, "web '%s' is not HOST:PORT", listen);
		return -EINVAL;
	}
	memset(ss, 0, sizeof(*ss));
	if (strchr(host, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
			goto bad;
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		if (!host[0] || !strcmp(host, "localhost"))
			s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		else if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
			goto bad;
	}
	*ret_loopback = host_is_loopback(host);
	return 0;
bad:
	snprintf(err, errlen, "web '%s': '%s' is not an IP address (or localhost)", listen, host);
	return -EINVAL;
}

int web_new(const struct web_opts *o, char *err, size_t errlen, struct web **ret)
{
	const struct cluster_config *cfg = o->cfg;
	struct sockaddr_storage ss;
	const union MHD_DaemonInfo *di;
	struct web *w;
	bool loopback;
	int r;

	r = web_address(o->self->web, &ss, &loopback, err, errlen);
	if (r < 0)
		return r;
	if (!loopback && !cfg->web_allow_remote) {
		snprintf(err, errlen,
			 "web '%s' is not a loopback address: set web_allow_remote = true in "
			 "[cluster] to serve the dashboard to other machines (plain HTTP: put a TLS "
			 "proxy in front)",
			 o->self->web);
		return -EPERM;
	}
	if (!o->self->control) {
		snprintf(err, errlen,
			 "node '%s' has 'web' but no 'control': the dashboard acts through the "
			 "control socket",
			 o->self->name);
		return -EINVAL;
	}
	if (!cfg->web_token_file && !cfg->web_public_status) {
		snprintf(err, errlen,
			 "web '%s' needs web_token_file in [cluster] (the login token), or "
			 "web_public_status = true for a read-only dashboard",
			 o->self->web);
		return -EINVAL;
	}
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->o = *o;
	w->loopback = loopback;
	w->next_seq = 1;
	w->events_fd = w->action_fd = -1;
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	if (cfg->web_token_file) {
		r = token_load(w, cfg->web_token_file, err, errlen);
		if (r < 0)
			goto fail;
	}
	r = -pthread_create(&w->events_thread, NULL, events_main, w);
	if (r < 0) {
		snprintf(err, errlen, "cannot start the dashboard's thread: %s", strerror(-r));
		goto fail;
	}
	w->events_started = true;
	errno = 0;
	w->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
					MHD_USE_ERROR_LOG |
					(ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0),
				0, NULL, NULL, handle, w, MHD_OPTION_SOCK_ADDR, &ss,
				MHD_OPTION_NOTIFY_COMPLETED, request_done, w,
				MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)WEB_CONNECTION_TIMEOUT_S,
				MHD_OPTION_CONNECTION_LIMIT, (unsigned)WEB_CONNECTIONS_MAX,
				MHD_OPTION_END);
	if (!w->d) {
		r = errno ? -errno : -EADDRINUSE;
		snprintf(err, errlen, "cannot serve the dashboard at '%s': %s", o->self->web,
			 strerror(-r));
		goto fail;
	}
	di = MHD_get_daemon_info(w->d, MHD_DAEMON_INFO_BIND_PORT);
	w->port = di ? di->port : 0;
	*ret = w;
	return 0;
fail:
	web_free(w);
	return r;
}

uint16_t web_port(const struct web *w)
{
	return w->port;
}

void web_free(struct web *w)
{
	if (!w)
		return;
	/* Every wait of ours ends within WEB_WAIT_MS or at once: the
	 * streams' and the control calls' (they poll the flag), the
	 * action's and the events' reads (their sockets shut down). */
	pthread_mutex_lock(&w->lock);
	atomic_store(&w->stopping, true);
	if (w->events_fd >= 0)
		shutdown(w->events_fd, SHUT_RDWR);
	if (w->action_fd >= 0)
		shutdown(w->action_fd, SHUT_RDWR);
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
	if (w->d)
		MHD_stop_daemon(w->d);
	if (w->events_started)
		pthread_join(w->events_thread, NULL);
	if (w->action_started)
		pthread_join(w->action_thread, NULL);
	json_object_put(w->action_req);
	for (size_t i = 0; i < WEB_RING; i++)
		free(w->ring[i].text);
	if (w->token)
		explicit_bzero(w->token, w->token_len);
	free(w->token);
	explicit_bzero(w->sessions, sizeof(w->sessions));
	pthread_cond_destroy(&w->cond);
	pthread_mutex_destroy(&w->lock);
	free(w);
}
