/* Prometheus metrics (metrics.h). The event callback updates a table under
 * one mutex; a scrape renders the table under the same mutex. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "events.h"
#include "metrics.h"
#include "resync/macro.h"
#include "resync/meta.h"

/* The label values, in the order the series are written; their words are
 * meta_state_name(), event_result_name() and notify_channel_name(). */
static const enum meta_state states[] = {META_STATE_UPTODATE, META_STATE_OUTDATED,
					 META_STATE_INCONSISTENT, META_STATE_DIVERGED,
					 META_STATE_UNKNOWN};
static const enum event_result results[] = {EVENT_RESULT_SUCCESS, EVENT_RESULT_FAILED,
					    EVENT_RESULT_CANCELLED};
static const enum notify_channel chans[] = {NOTIFY_EMAIL, NOTIFY_WEBHOOK, NOTIFY_COMMAND};

struct node_stat {
	enum meta_state state;
	int connected; /* -1 never seen */
	double ratio;
	uint64_t compared_base, sent_base; /* finished runs */
	uint64_t compared_cur, sent_cur;   /* the running one */
	int proof_match; /* the last proof: 1 matched, 0 not, -1 none */
	uint64_t round_trips; /* the last resync's, paid in sequence */
};

struct metrics {
	struct metrics_opts o;
	struct MHD_Daemon *d;
	uint16_t port;
	struct event_sub *sub;
	pthread_mutex_t lock;
	struct node_stat *nodes; /* cfg order; protected by lock */
	bool in_progress;
	double last_success, last_duration;
	double last_fence; /* the primary's writes waited, last resync */
	enum event_result last_result; /* EVENT_RESULT_NONE: none yet */
	uint64_t notif[ARRAY_SIZE(chans)][2];
};

static struct node_stat *stat_of(struct metrics *m, const char *name)
{
	for (size_t i = 0; i < m->o.cfg->n_nodes; i++)
		if (!strcmp(m->o.cfg->nodes[i].name, name))
			return &m->nodes[i];
	return NULL;
}

static void on_event(void *arg, const struct event *e)
{
	struct metrics *m = arg;
	struct node_stat *s;

	pthread_mutex_lock(&m->lock);
	s = e->node[0] ? stat_of(m, e->node) : NULL;
	switch (e->kind) {
	case EVENT_RESYNC_STARTED:
		m->in_progress = true;
		if (s) {
			s->state = e->state;
			s->ratio = 0;
			s->compared_cur = s->sent_cur = 0;
			s->connected = 1;
		}
		break;
	case EVENT_PROGRESS:
		if (s) {
			if (e->bytes_total)
				s->ratio = (double)e->bytes_done / (double)e->bytes_total;
			s->compared_cur = e->bytes_compared;
			s->sent_cur = e->bytes_sent;
		}
		break;
	case EVENT_RESYNC_FINISHED:
	case EVENT_RESYNC_FAILED:
	case EVENT_RESYNC_CANCELLED:
		if (s) {
			s->state = e->state;
			if (e->kind == EVENT_RESYNC_FINISHED)
				s->ratio = 1;
			s->compared_base += MAX(e->bytes_compared, s->compared_cur);
			s->sent_base += MAX(e->bytes_sent, s->sent_cur);
			s->compared_cur = s->sent_cur = 0;
			s->round_trips = e->round_trips;
		}
		break;
	case EVENT_RESYNC_DONE:
		m->in_progress = false;
		m->last_duration = e->seconds;
		m->last_result = e->result;
		if (m->last_result == EVENT_RESULT_SUCCESS)
			m->last_success = (double)e->time_usec / 1e6;
		break;
	case EVENT_FENCE_ENDED:
		m->last_fence = e->seconds;
		break;
	case EVENT_PROOF:
		if (s)
			s->proof_match = e->match;
		break;
	case EVENT_STATE_CHANGED:
		if (s)
			s->state = e->state;
		break;
	case EVENT_PEER:
		if (s)
			s->connected = e->connected;
		break;
	case EVENT_NOTIFY_DELIVERED:
	case EVENT_NOTIFY_FAILED:
		for (size_t i = 0; i < ARRAY_SIZE(chans); i++)
			if (e->channel == chans[i])
				m->notif[i][e->kind == EVENT_NOTIFY_FAILED]++;
		break;
	default:
		break;
	}
	pthread_mutex_unlock(&m->lock);
}

/* Label values are node names from the config: escape \, " and newline
 * anyway, as the format asks. */
static const char *esc(const char *s, char *buf, size_t len)
{
	size_t k = 0;

	for (; *s && k + 3 < len; s++) {
		if (*s == '\\' || *s == '"') {
			buf[k++] = '\\';
			buf[k++] = *s;
		} else if (*s == '\n') {
			buf[k++] = '\\';
			buf[k++] = 'n';
		} else {
			buf[k++] = *s;
		}
	}
	buf[k] = 0;
	return buf;
}

static void help(FILE *o, const char *name, const char *type, const char *text)
{
	fprintf(o, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

int metrics_render(struct metrics *m, char **ret)
{
	const struct cluster_config *cfg = m->o.cfg;
	_cleanup_free_ char *text = NULL;
	size_t text_len;
	FILE *o = open_memstream(&text, &text_len);
	int bad;
	enum meta_state self_state = META_STATE_UNKNOWN;
	char e[2 * RESYNC_NAME_MAX + 8];
	uint64_t dirty = 0;

	if (!o)
		return -ENOMEM;
	if (m->o.meta) {
		struct meta_info mi;

		if (meta_info_get(m->o.meta, &mi) == 0)
			self_state = mi.state;
		dirty = meta_dirty_bytes(m->o.meta);
	}
	pthread_mutex_lock(&m->lock);
	help(o, "resync_node_state", "gauge",
	     "1 for the state each node is in (peers: as last seen)");
	for (size_t i = 0; i < cfg->n_nodes; i++) {
		enum meta_state cur = !strcmp(cfg->nodes[i].name, m->o.node) ? self_state
									     : m->nodes[i].state;

		for (size_t k = 0; k < ARRAY_SIZE(states); k++)
			fprintf(o, "resync_node_state{node=\"%s\",state=\"%s\"} %d\n",
				esc(cfg->nodes[i].name, e, sizeof(e)), meta_state_name(states[k]),
				cur == states[k]);
	}
	help(o, "resync_dirty_bytes", "gauge", "bytes written since the last completed resync");
	fprintf(o, "resync_dirty_bytes{node=\"%s\"} %" PRIu64 "\n", esc(m->o.node, e, sizeof(e)),
		dirty);
	help(o, "resync_in_progress", "gauge", "1 while a resync runs from this node");
	fprintf(o, "resync_in_progress %d\n", m->in_progress);
	help(o, "resync_progress_ratio", "gauge",
	     "done fraction of the running or last resync per secondary");
	for (size_t i = 0; i < cfg->n_nodes; i++)
		if (strcmp(cfg->nodes[i].name, m->o.node))
			fprintf(o, "resync_progress_ratio{node=\"%s\"} %.6f\n",
				esc(cfg->nodes[i].name, e, sizeof(e)), m->nodes[i].ratio);
	help(o, "resync_bytes_compared_total", "counter", "bytes compared with each secondary");
	for (size_t i = 0; i < cfg->n_nodes; i++)
		if (strcmp(cfg->nodes[i].name, m->o.node))
			fprintf(o, "resync_bytes_compared_total{node=\"%s\"} %" PRIu64 "\n",
				esc(cfg->nodes[i].name, e, sizeof(e)),
				m->nodes[i].compared_base + m->nodes[i].compared_cur);
	help(o, "resync_bytes_sent_total", "counter", "bytes sent to each secondary");
	for (size_t i = 0; i < cfg->n_nodes; i++)
		if (strcmp(cfg->nodes[i].name, m->o.node))
			fprintf(o, "resync_bytes_sent_total{node=\"%s\"} %" PRIu64 "\n",
				esc(cfg->nodes[i].name, e, sizeof(e)),
				m->nodes[i].sent_base + m->nodes[i].sent_cur);
	help(o, "resync_last_round_trips", "gauge",
	     "round trips the last resync of each secondary paid one after the other");
	for (size_t i = 0; i < cfg->n_nodes; i++)
		if (strcmp(cfg->nodes[i].name, m->o.node))
			fprintf(o, "resync_last_round_trips{node=\"%s\"} %" PRIu64 "\n",
				esc(cfg->nodes[i].name, e, sizeof(e)), m->nodes[i].round_trips);
	help(o, "resync_last_success_timestamp_seconds", "gauge",
	     "unix time of the last successful resync, 0 never");
	fprintf(o, "resync_last_success_timestamp_seconds %.3f\n", m->last_success);
	help(o, "resync_last_duration_seconds", "gauge", "duration of the last resync");
	fprintf(o, "resync_last_duration_seconds %.3f\n", m->last_duration);
	help(o, "resync_primary_fence_seconds", "gauge",
	     "how long the primary's writes waited at its fence in the last resync");
	fprintf(o, "resync_primary_fence_seconds %.3f\n", m->last_fence);
	help(o, "resync_last_result", "gauge", "1 for the result of the last resync");
	for (size_t k = 0; k < ARRAY_SIZE(results); k++)
		fprintf(o, "resync_last_result{result=\"%s\"} %d\n", event_result_name(results[k]),
			m->last_result == results[k]);
	help(o, "resync_proof_match", "gauge",
	     "1 when the last resync's proof found the secondary's root equal to the primary's, 0 when not");
	for (size_t i = 0; i < cfg->n_nodes; i++)
		if (strcmp(cfg->nodes[i].name, m->o.node) && m->nodes[i].proof_match >= 0)
			fprintf(o, "resync_proof_match{node=\"%s\"} %d\n",
				esc(cfg->nodes[i].name, e, sizeof(e)), m->nodes[i].proof_match);
	help(o, "resync_peer_connected", "gauge",
	     "1 when the last contact with the peer succeeded");
	for (size_t i = 0; i < cfg->n_nodes; i++)
		if (strcmp(cfg->nodes[i].name, m->o.node))
			fprintf(o, "resync_peer_connected{peer=\"%s\"} %d\n",
				esc(cfg->nodes[i].name, e, sizeof(e)), m->nodes[i].connected == 1);
	help(o, "resync_notifications_total", "counter",
	     "notification attempts by channel and outcome");
	for (size_t k = 0; k < ARRAY_SIZE(chans); k++) {
		fprintf(o,
			"resync_notifications_total{channel=\"%s\",outcome=\"delivered\"} %" PRIu64
			"\n",
			notify_channel_name(chans[k]), m->notif[k][0]);
		fprintf(o,
			"resync_notifications_total{channel=\"%s\",outcome=\"failed\"} %" PRIu64
			"\n",
			notify_channel_name(chans[k]), m->notif[k][1]);
	}
	pthread_mutex_unlock(&m->lock);
	if (m->o.render)
		m->o.render(m->o.arg, o);
	bad = ferror(o);
	bad |= fclose(o);
	if (bad)
		return -ENOMEM;
	*ret = TAKE_PTR(text);
	return 0;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
			     char *body)
{
	struct MHD_Response *r =
		MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
	enum MHD_Result ok;

	if (!r) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", type);
	ok = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ok;
}

/* "?ready" (with or without a value) among the query's arguments. */
static enum MHD_Result health_arg(void *cls, enum MHD_ValueKind kind, const char *key,
				  const char *value)
{
	(void)kind;
	(void)value;
	if (key && !strcmp(key, "ready"))
		*(bool *)cls = true;
	return MHD_YES;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
			      const char *method, const char *version, const char *upload_data,
			      size_t *upload_data_size, void **con_cls)
{
	struct metrics *m = cls;
	char *body = NULL;

	(void)version;
	(void)upload_data;
	(void)con_cls;
	if (*upload_data_size)
		return MHD_NO;
	if (strcmp(method, "GET") && strcmp(method, "HEAD"))
		return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", strdup("GET only\n"));
	if (!strcmp(url, "/metrics")) {
		if (metrics_render(m, &body) < 0)
			return MHD_NO;
		return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body);
	}
	if (!strcmp(url, "/health") && m->o.health) {
		bool ready = false;
		unsigned code;

		MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, health_arg, &ready);
		code = m->o.health(m->o.arg, ready, &body);
		if (!body)
			return MHD_NO;
		return reply(c, code, "application/json", body);
	}
	if (!strcmp(url, "/health")) {
		json_object *o = json_object_new_object();
		enum meta_state state = META_STATE_UNKNOWN;
		struct meta_info mi;

		if (m->o.meta && meta_info_get(m->o.meta, &mi) == 0)
			state = mi.state;
		json_object_object_add(o, "status", json_object_new_string("ok"));
		json_object_object_add(o, "cluster", json_object_new_string(m->o.cfg->name));
		json_object_object_add(o, "node", json_object_new_string(m->o.node));
		json_object_object_add(o, "state", json_object_new_string(meta_state_name(state)));
		if (asprintf(&body, "%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN)) < 0)
			body = NULL;
		json_object_put(o);
		if (!body)
			return MHD_NO;
		return reply(c, MHD_HTTP_OK, "application/json", body);
	}
	return reply(c, MHD_HTTP_NOT_FOUND, "text/plain", strdup("try /metrics or /health\n"));
}

int metrics_new(const struct metrics_opts *o, struct metrics **ret)
{
	struct sockaddr_storage ss = {0};
	_cleanup_free_ char *host = NULL;
	const union MHD_DaemonInfo *di;
	struct metrics *m;
	uint16_t port;
	int r;

	/* As config_address_parse, but port 0 (any free port) is fine. */
	{
		const char *colon = strrchr(o->listen, ':');
		char *end;
		unsigned long p;
		size_t hl;

		if (!colon || !colon[1])
			return -EINVAL;
		p = strtoul(colon + 1, &end, 10);
		if (*end || p > 65535)
			return -EINVAL;
		port = (uint16_t)p;
		hl = (size_t)(colon - o->listen);
		if (hl >= 2 && o->listen[0] == '[' && o->listen[hl - 1] == ']')
			host = strndup(o->listen + 1, hl - 2);
		else
			host = strndup(o->listen, hl);
		if (!host)
			return -ENOMEM;
	}
	if (!host[0]) {
		free(host);
		host = strdup("127.0.0.1");
		if (!host)
			return -ENOMEM;
	}
	if (strchr(host, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
			return -EINVAL;
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		if (!strcmp(host, "localhost"))
			s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		else if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
			return -EINVAL;
	}
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->o = *o;
	m->last_result = EVENT_RESULT_NONE;
	pthread_mutex_init(&m->lock, NULL);
	m->nodes = calloc(o->cfg->n_nodes ? o->cfg->n_nodes : 1, sizeof(*m->nodes));
	if (!m->nodes) {
		metrics_free(m);
		return -ENOMEM;
	}
	for (size_t i = 0; i < o->cfg->n_nodes; i++) {
		m->nodes[i].state = META_STATE_UNKNOWN;
		m->nodes[i].connected = -1;
		m->nodes[i].proof_match = -1;
	}
	if (o->bus) {
		r = event_bus_subscribe(o->bus, on_event, m, &m->sub);
		if (r < 0) {
			metrics_free(m);
			return r;
		}
	}
	m->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG |
					(ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0),
				port, NULL, NULL, handle, m, MHD_OPTION_SOCK_ADDR, &ss,
				MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
				MHD_OPTION_CONNECTION_LIMIT, (unsigned)32, MHD_OPTION_END);
	if (!m->d) {
		r = errno ? -errno : -EADDRINUSE;
		metrics_free(m);
		return r;
	}
	di = MHD_get_daemon_info(m->d, MHD_DAEMON_INFO_BIND_PORT);
	m->port = di ? di->port : port;
	*ret = m;
	return 0;
}

uint16_t metrics_port(const struct metrics *m)
{
	return m->port;
}

void metrics_free(struct metrics *m)
{
	if (!m)
		return;
	if (m->d)
		MHD_stop_daemon(m->d);
	if (m->sub)
		event_bus_unsubscribe(m->o.bus, m->sub);
	pthread_mutex_destroy(&m->lock);
	free(m->nodes);
	free(m);
}
