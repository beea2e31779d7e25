/* Private to the dashboard's rooms (web.h is its public face): the
 * dashboard's state, a request's state and the helpers each room offers
 * the others.
 *
 * Rooms:
 *   web.c          the HTTP server: security headers and replies, the
 *                  router (Host, Origin, session and CSRF checks), the
 *                  token file, the listening address, start and stop
 *   web-api.c      the endpoints: sessions and login, status, actions,
 *                  the server-sent event stream, and the route table
 *   web-control.c  the node's control socket: the ring of recent
 *                  messages fed by the `events` stream, one-shot calls,
 *                  and the actions (plan, verify, resync) on their thread */
#pragma once

#include <json-c/json.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

/* One request's state across libmicrohttpd's calls. */
struct web_req {
	char body[WEB_BODY_MAX + 1];
	size_t len;
	bool too_big;
	int session; /* index into sessions, -1 none */
};

enum web_route_flags {
	ROUTE_READ = 1 << 0,  /* a session, or web_public_status */
	ROUTE_WRITE = 1 << 1, /* a session and its CSRF token (a POST) */
};

struct web_route {
	const char *method, *path;
	enum MHD_Result (*fn)(struct web *w, struct MHD_Connection *c, struct web_req *rq);
	unsigned flags;
};

/* web-api.c: the endpoints under /api/, looked up by path. */
extern const struct web_route web_routes[];
extern const size_t web_routes_n;

/* web-api.c: the session named by the request's cookie (its index,
 * refreshed), or -1; sessions idle too long end here. And whether the
 * request carries the CSRF token of session i. */
int web_session_find(struct web *w, struct MHD_Connection *c);
bool web_csrf_ok(struct web *w, struct MHD_Connection *c, int i);

/* web.c: replies. Each queues r (destroyed here; NULL: MHD_NO) or o
 * (taken) with the security headers; cookie (may be NULL) is set. */
enum MHD_Result web_queue(struct MHD_Connection *c, unsigned status, struct MHD_Response *r,
			  const char *type, bool cache);
enum MHD_Result web_reply_json_cookie(struct MHD_Connection *c, unsigned status, json_object *o,
				      const char *cookie);
enum MHD_Result web_reply_json(struct MHD_Connection *c, unsigned status, json_object *o);
enum MHD_Result web_reply_error(struct MHD_Connection *c, unsigned status, const char *msg);

/* web-control.c: keep o (a reference is taken) as the next message of
 * the ring and wake the streams. */
void web_push(struct web *w, json_object *o);
/* One request, answered by its result line (stream lines are skipped):
 * for status and cancel. Returns 0 and *ret, or -errno (-ETIMEDOUT,
 * -ECANCELED at the stop). */
int web_control_call(struct web *w, json_object *req, int timeout_ms, json_object **ret);
/* Start req (taken) as the dashboard's action kind. Returns the action's
 * id (> 0), -EBUSY while one runs, or -errno. */
int64_t web_action_start(struct web *w, const char *kind, json_object *req);
/* The events stream's reader: the thread web_new() starts and
 * web_free() joins (arg: the struct web). */
void *web_events_main(void *arg);
