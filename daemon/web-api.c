/* The dashboard's endpoints under /api/ (web-int.h): sessions (the
 * cookie, the CSRF token, the login with the token file's token), the
 * dashboard's facts and the status, the actions, the server-sent event
 * stream over the ring, and the route table web.c dispatches through. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "json-util.h"
#include "log.h"
#include "resync/clock.h"
#include "resync/macro.h"
#include "resync/volume.h"
#include "web-int.h"

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
int web_session_find(struct web *w, struct MHD_Connection *c)
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
bool web_csrf_ok(struct web *w, struct MHD_Connection *c, int i)
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
	return web_reply_json(c, MHD_HTTP_OK, o);
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
		return web_reply_error(
			c, MHD_HTTP_FORBIDDEN,
			"this dashboard has no web_token_file: logins and actions are disabled");
	if (!body || !json_object_object_get_ex(body, "token", &t) ||
	    !json_object_is_type(t, json_type_string))
		return web_reply_error(c, MHD_HTTP_BAD_REQUEST,
				       "the body must be {\"token\": \"...\"}");
	tok = json_object_get_string(t);
	if (!same_secret(w->token, w->token_len, tok, strlen(tok))) {
		log_warning("dashboard: a login from %s with a wrong token",
			    remote_of(c, addr, sizeof(addr)));
		usleep(WEB_LOGIN_FAIL_DELAY_MS * 1000);
		return web_reply_error(c, MHD_HTTP_FORBIDDEN, "wrong token");
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
		return web_reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "no randomness");
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
	return web_reply_json_cookie(c, MHD_HTTP_OK, o, cookie);
}

static enum MHD_Result api_logout(struct web *w, struct MHD_Connection *c, struct web_req *rq)
{
	json_object *o = json_object_new_object();

	pthread_mutex_lock(&w->lock);
	explicit_bzero(&w->sessions[rq->session], sizeof(w->sessions[rq->session]));
	pthread_mutex_unlock(&w->lock);
	json_object_object_add(o, "ok", json_object_new_boolean(1));
	return web_reply_json_cookie(c, MHD_HTTP_OK, o,
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
	return web_reply_json(c, MHD_HTTP_OK, o);
}

static enum MHD_Result api_action(struct web *w, struct MHD_Connection *c, const char *kind,
				  json_object *req)
{
	int64_t id = web_action_start(w, kind, req);
	json_object *o;

	if (id == -EBUSY)
		return web_reply_error(
			c, MHD_HTTP_CONFLICT,
			"an action of this dashboard is running; wait for its result");
	if (id < 0)
		return web_reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, strerror((int)-id));
	o = json_object_new_object();
	json_object_object_add(o, "ok", json_object_new_boolean(1));
	json_object_object_add(o, "action", json_object_new_int64(id));
	return web_reply_json(c, MHD_HTTP_ACCEPTED, o);
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
		return web_reply_error(c, MHD_HTTP_BAD_REQUEST,
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
		return web_reply_error(c, MHD_HTTP_BAD_GATEWAY, strerror(-r));
	return web_reply_json(c, MHD_HTTP_OK, res);
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
	return web_queue(c, MHD_HTTP_OK, r, "text/event-stream", false);
}

const struct web_route web_routes[] = {
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
const size_t web_routes_n = ARRAY_SIZE(web_routes);
