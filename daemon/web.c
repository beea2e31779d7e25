/* The web dashboard (web.h): its HTTP server (libmicrohttpd, a thread a
 * connection) with the security headers on every reply, the router that
 * checks Host, Origin, the session and its CSRF token before an endpoint
 * runs, the login token's file, and the lifecycle. The endpoints are
 * web-api.c's, the control socket's side web-control.c's (web-int.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "resync/macro.h"
#include "web-assets.h"
#include "web-int.h"

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
/* ---- HTTP ---- */

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

enum MHD_Result web_queue(struct MHD_Connection *c, unsigned status, struct MHD_Response *r,
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
enum MHD_Result web_reply_json_cookie(struct MHD_Connection *c, unsigned status, json_object *o,
				      const char *cookie)
{
	const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	struct MHD_Response *r =
		MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);

	json_object_put(o);
	if (r && cookie)
		MHD_add_response_header(r, "Set-Cookie", cookie);
	return web_queue(c, status, r, "application/json", false);
}

enum MHD_Result web_reply_json(struct MHD_Connection *c, unsigned status, json_object *o)
{
	return web_reply_json_cookie(c, status, o, NULL);
}

enum MHD_Result web_reply_error(struct MHD_Connection *c, unsigned status, const char *msg)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "ok", json_object_new_boolean(0));
	json_object_object_add(o, "error", json_object_new_string(msg));
	return web_reply_json(c, status, o);
}

static enum MHD_Result serve_asset(struct MHD_Connection *c, const char *url)
{
	for (size_t i = 0; i < web_assets_n; i++) {
		const struct web_asset *a = &web_assets[i];

		if (strcmp(url, a->path))
			continue;
		return web_queue(c, MHD_HTTP_OK,
				 MHD_create_response_from_buffer(a->len, (void *)a->data,
								 MHD_RESPMEM_PERSISTENT),
				 a->type, true);
	}
	return web_queue(c, MHD_HTTP_NOT_FOUND,
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
	const struct web_route *rt = NULL;
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
		return web_reply_error(
			c, MHD_HTTP_FORBIDDEN,
			"this dashboard serves loopback only: the Host header must name it");
	get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
	if (strncmp(url, "/api/", 5)) {
		if (!get)
			return web_reply_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "GET only");
		return serve_asset(c, url);
	}
	for (size_t i = 0; i < web_routes_n && !rt; i++)
		if (!strcmp(web_routes[i].path, url))
			rt = &web_routes[i];
	if (!rt)
		return web_reply_error(c, MHD_HTTP_NOT_FOUND, "no such endpoint");
	if (strcmp(rt->method, get ? "GET" : method))
		return web_reply_error(c, MHD_HTTP_METHOD_NOT_ALLOWED,
				       rt->method[0] == 'G' ? "GET only" : "POST only");
	if (rq->too_big)
		return web_reply_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large");
	rq->session = web_session_find(w, c);
	if ((rt->flags & ROUTE_READ) && rq->session < 0 && !w->o.cfg->web_public_status)
		return web_reply_error(c, MHD_HTTP_UNAUTHORIZED, "log in first");
	if (!get && !origin_ok(c))
		return web_reply_error(c, MHD_HTTP_FORBIDDEN,
				       "refused: a request from another origin");
	if (rt->flags & ROUTE_WRITE) {
		if (rq->session < 0)
			return web_reply_error(c, MHD_HTTP_FORBIDDEN, "refused: log in first");
		if (!web_csrf_ok(w, c, rq->session))
			return web_reply_error(
				c, MHD_HTTP_FORBIDDEN,
				"refused: the request lacks this session's CSRF token");
	}
	if (!get) {
		const char *type = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");

		if (rq->len && (!type || strncmp(type, "application/json", 16)))
			return web_reply_error(c, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE,
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
	r = -pthread_create(&w->events_thread, NULL, web_events_main, w);
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
