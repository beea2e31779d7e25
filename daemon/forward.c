#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "node-int.h"
#include "resync/limits.h"
#include "resync/macro.h"

/* A secondary forwards a cluster-wide request to the primary over the
 * peer protocol (WIRE_FEATURE_CONTROL: the primary may be on another
 * machine) and relays the primary's reply lines, progress and result, to
 * its own client; edit (if any) may amend the result before it goes.
 * Returns 0 once the client was answered (by the primary's lines, or an
 * error said to it after some of them), 1 when the primary answered
 * nothing (cannot be reached, refused, an older build, went away): err
 * says why and nothing was said to the client; or -errno. */
/* Connect to the primary p and send it req as one CONTROL line. Returns
 * 0 with *ret, 1 with the reason in err (nothing relayed), or -errno. */
static int forward_open(struct node *n, const struct node_config *p, json_object *req,
			unsigned char *buf, char *err, size_t errlen, struct peer_conn **ret)
{
	const char *text = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
	size_t len = strlen(text);
	struct peer_conn *c = NULL;
	struct wire_hello h;
	char why[512];
	int r;

	if (len + 1 > RESYNC_CONTROL_LINE_MAX) {
		snprintf(err, errlen, "request longer than %d bytes", RESYNC_CONTROL_LINE_MAX);
		return 1;
	}
	r = node_peer_open(n, p, false, why, sizeof(why), &c, &h);
	if (r < 0) {
		snprintf(err, errlen, "this node is a secondary; the primary '%s' cannot be reached: %s",
			 p->name, why);
		return 1;
	}
	if (!(h.features & node_features() & WIRE_FEATURE_CONTROL)) {
		peer_conn_free(c);
		snprintf(err, errlen, "this node is a secondary and the primary '%s' does not take forwarded requests (an older build): run the command there",
			 p->name);
		return 1;
	}
	memcpy(buf, text, len);
	buf[len++] = '\n';
	/* A plan of a large volume says nothing for minutes: no deadline. */
	peer_conn_set_timeout(c, 0);
	r = peer_conn_send_frame(c, WIRE_CONTROL, buf, len);
	if (r < 0) {
		snprintf(err, errlen, "the primary '%s' went away: %s", p->name, peer_conn_error(c));
		peer_conn_free(c);
		return 1;
	}
	*ret = c;
	return 0;
}

/* The primary's reply lines, as they come in CONTROL frames, relayed to
 * our client line by line. */
struct forward_relay {
	struct node *n;
	struct control_client *cli;
	node_forward_edit_fn *edit;
	char *acc; /* reply bytes not yet a whole line */
	size_t have, cap;
	bool relayed; /* a line reached the client */
};

/* Take a frame's bytes and relay every whole line. Returns 1 once the
 * result was relayed (or the client went away), 0 for more, -errno. */
static int forward_relay_feed(struct forward_relay *fr, const unsigned char *data, size_t len)
{
	char *nl;

	if (fr->have + len > RESYNC_CONTROL_REPLY_MAX)
		return -EBADMSG;
	if (fr->have + len + 1 > fr->cap) {
		size_t ncap = MAX(fr->cap * 2, fr->have + len + 1);
		char *nb = realloc(fr->acc, ncap);

		if (!nb)
			return -ENOMEM;
		fr->acc = nb;
		fr->cap = ncap;
	}
	memcpy(fr->acc + fr->have, data, len);
	fr->have += len;
	while ((nl = memchr(fr->acc, '\n', fr->have))) {
		size_t ll = (size_t)(nl - fr->acc) + 1;
		json_object *o;
		bool last;
		int r;

		*nl = 0;
		o = json_tokener_parse(fr->acc);
		memmove(fr->acc, fr->acc + ll, fr->have - ll);
		fr->have -= ll;
		if (!o || !json_object_is_type(o, json_type_object)) {
			json_object_put(o);
			return -EBADMSG;
		}
		last = control_is_result(o);
		if (last && fr->edit)
			fr->edit(fr->n, o);
		r = control_client_send(fr->cli, o);
		fr->relayed = true;
		json_object_put(o);
		/* Done, or our client went away: closing the connection
		 * ends the primary's side too. */
		if (r < 0 || last)
			return 1;
	}
	return 0;
}

int node_forward_try(struct node *n, struct control_client *cli, json_object *req,
		     node_forward_edit_fn *edit, char *err, size_t errlen)
{
	const struct node_config *p = cluster_config_primary(n->cfg);
	_cleanup_free_ unsigned char *buf = malloc(RESYNC_WIRE_FRAME_MAX);
	struct forward_relay fr = {.n = n, .cli = cli, .edit = edit};
	struct peer_conn *c = NULL;
	uint16_t type;
	size_t flen;
	int r;

	if (!p) {
		snprintf(err, errlen, "cluster '%s' has no primary", n->cfg->name);
		return 1;
	}
	if (p == n->self) { /* named primary, refused the role (node_primary_init()) */
		pthread_mutex_lock(&n->lock);
		snprintf(err, errlen, "cluster '%s' has no acting primary: %s", n->cfg->name,
			 n->promote_refused[0] ? n->promote_refused
					       : "this node is not primary yet");
		pthread_mutex_unlock(&n->lock);
		return 1;
	}
	if (!buf)
		return -ENOMEM;
	r = forward_open(n, p, req, buf, err, errlen, &c);
	if (r != 0)
		return r;
	do {
		r = peer_conn_recv_frame(c, &type, buf, RESYNC_WIRE_FRAME_MAX, &flen);
		if (r >= 0 && type == WIRE_ERROR) {
			struct wire_text t = {0};

			wire_text_decode(buf, flen, &t);
			snprintf(err, errlen, "the primary '%s': %s", p->name, t.text);
			break;
		}
		if (r >= 0)
			r = type == WIRE_CONTROL ? forward_relay_feed(&fr, buf, flen) : -EBADMSG;
	} while (r == 0);
	if (r < 0)
		snprintf(err, errlen, "the primary '%s' went away: %s", p->name,
			 r == -EBADMSG ? "malformed reply" : peer_conn_error(c));
	peer_conn_free(c);
	free(fr.acc);
	if (r == 1)
		return 0; /* relayed to the end */
	if (!fr.relayed)
		return 1;
	control_client_error(cli, "%s", err);
	return 0;
}

/* node_forward_try(), the reason said to the client when the primary
 * answered nothing. */
int node_forward(struct node *n, struct control_client *cli, json_object *req)
{
	char err[1024];
	int r = node_forward_try(n, cli, req, NULL, err, sizeof(err));

	if (r == 1)
		return control_client_error(cli, "%s", err), 0;
	return r;
}

/* CONTROL from a secondary (node_forward()): one request line, run by
 * this node's own control socket as if a local client had sent it, its
 * reply lines sent back in CONTROL frames until the result. Only the
 * cluster-wide commands a secondary forwards are taken. */
int session_control(struct session *s, size_t len)
{
	static const char *const allowed[] = {"status", "verify", "resync", "cancel", "pause", "resume", "rate"};
	struct node *n = s->n;
	_cleanup_close_ int fd = -1;
	json_object *req, *cmd;
	const char *name = NULL;
	bool ok = false;
	int r;

	if (!n->is_primary || !n->self->control) {
		char why[RESYNC_WIRE_TEXT_MAX + 64];

		pthread_mutex_lock(&n->lock);
		snprintf(why, sizeof(why), "%s%s",
			 n->promote_refused[0] ? "no acting primary: " : "",
			 n->promote_refused[0] ? n->promote_refused
			 : n->is_primary       ? "the primary has no control socket"
					       : "this node is not the primary");
		pthread_mutex_unlock(&n->lock);
		send_text(s->c, WIRE_ERROR, WIRE_REASON_OTHER, why);
		return SESSION_END;
	}
	if (len == 0 || len > RESYNC_CONTROL_LINE_MAX || s->in[len - 1] != '\n')
		return -EBADMSG;
	s->in[len - 1] = 0;
	req = json_tokener_parse((const char *)s->in);
	if (req && json_object_is_type(req, json_type_object) &&
	    json_object_object_get_ex(req, "cmd", &cmd) && json_object_is_type(cmd, json_type_string)) {
		name = json_object_get_string(cmd);
		for (size_t i = 0; i < ARRAY_SIZE(allowed) && !ok; i++)
			ok = !strcmp(name, allowed[i]);
	}
	if (!ok) {
		log_warning("refused a forwarded request from '%s': not a cluster-wide command", s->peer);
		send_text(s->c, WIRE_ERROR, WIRE_REASON_MESSAGE,
			  "only status, verify, resync, cancel, pause, resume and rate are forwarded");
		json_object_put(req);
		return SESSION_END;
	}
	log_info("'%s' forwarded a '%s' request", s->peer, name);
	r = control_connect(n->self->control, &fd);
	if (r >= 0)
		r = control_send(fd, req);
	json_object_put(req);
	while (r >= 0) {
		json_object *o = NULL;
		const char *text;
		size_t tl, total;
		bool last;

		r = control_recv(fd, -1, &o);
		if (r < 0)
			break;
		last = control_is_result(o);
		text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
		tl = strlen(text);
		total = tl + 1; /* the line and its newline */
		for (size_t off = 0, k; r >= 0 && off < total; off += k) {
			k = MIN(total - off, (size_t)RESYNC_WIRE_FRAME_MAX);
			memcpy(s->out, text + off, off < tl ? MIN(k, tl - off) : 0);
			if (off + k == total)
				s->out[k - 1] = '\n';
			r = peer_conn_send_frame(s->c, WIRE_CONTROL, s->out, k);
		}
		json_object_put(o);
		if (last)
			return r < 0 ? SESSION_END : 0;
	}
	if (r == -ECONNRESET || r == -EPIPE)
		return SESSION_END; /* the secondary went away */
	log_error("forwarded '%s' from '%s' failed: %s", name, s->peer, strerror(-r));
	send_text(s->c, WIRE_ERROR, WIRE_REASON_IO, "the primary's control socket failed");
	return SESSION_END;
}
