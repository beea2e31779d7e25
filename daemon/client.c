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

/* ---- the asking side ---- */

/* Connect to peer and exchange hellos; *ret_hello is the peer's. With
 * status, a STATUS_REQ follows the HELLO at once (its answer, after the
 * HELLO_ACK, is read by the caller): one round trip for both. With kept
 * (taken, freed on failure), no connect: the hellos are exchanged again
 * on a connection a plan kept (WIRE_FEATURE_REHELLO), or first on one
 * the caller just connected (job-early.c). */
static int peer_open(struct node *n, const struct node_config *peer, bool write, bool status,
		     struct peer_conn *kept, const struct peer_early *early, char *err,
		     size_t errlen, struct peer_conn **ret, struct wire_hello *ret_hello)
{
	struct peer_conn *c = kept;
	struct wire_hello mine;
	struct wire_text why;
	unsigned char *buf;
	uint16_t type;
	uint64_t t0;
	size_t len;
	int r;

	/* An authentication failure is -EKEYREJECTED, and err already says
	 * so, naming the node. */
	if (!c) {
		r = peer_conn_connect(n->ctx, peer, err, errlen, &c);
		if (r < 0)
			return r;
	}
	buf = malloc(RESYNC_WIRE_FRAME_MAX);
	if (!buf) {
		peer_conn_free(c);
		return -ENOMEM;
	}
	node_hello_make(n, &mine);
	if (write)
		mine.features |= WIRE_FEATURE_GROW;
	if (status && early && early->after)
		mine.flags |= early->hello_flags;
	r = wire_hello_encode(&mine, buf, RESYNC_WIRE_FRAME_MAX, &len);
	t0 = clock_usec();
	if (r >= 0)
		r = peer_conn_send_frame(c, WIRE_HELLO, buf, len);
	if (r >= 0 && status)
		r = peer_conn_send_frame(c, WIRE_STATUS_REQ, NULL, 0);
	if (r >= 0 && status && early)
		r = peer_conn_send_frame(c, early->type, early->payload, early->len);
	if (r >= 0 && status && early && early->rest)
		r = early->rest(early->rest_arg, c);
	if (r >= 0 && status && early && early->after) {
		r = early->after(early->arg, c);
		if (r < 0) {
			snprintf(err, errlen, "node '%s': data behind its hello: %s (%s)",
				 peer->name, strerror(-r), peer_conn_error(c));
			goto fail;
		}
	}
	if (r >= 0)
		r = peer_conn_recv_frame(c, &type, buf, RESYNC_WIRE_FRAME_MAX, &len);
	if (r < 0) {
		snprintf(err, errlen, "node '%s': %s", peer->name, peer_conn_error(c));
		goto fail;
	}
	if (type == WIRE_REFUSE) {
		struct wire_text t;

		if (wire_text_decode(buf, len, &t) == 0)
			snprintf(err, errlen, "node '%s' refused: %s", peer->name, t.text);
		else
			snprintf(err, errlen, "node '%s' refused", peer->name);
		r = -EPERM;
		goto fail;
	}
	if (type != WIRE_HELLO_ACK || wire_hello_decode(buf, len, ret_hello) < 0) {
		snprintf(err, errlen, "node '%s' answered with %s", peer->name, wire_type_name(type));
		r = -EBADMSG;
		goto fail;
	}
	/* A sample of the round trip (the walk's first level is sized by
	 * it, job-walk.c): the peer answers a hello at once. */
	peer_conn_note_rtt(c, clock_usec() - t0);
	if (node_hello_check(n, ret_hello, &why) < 0) {
		snprintf(err, errlen, "node '%s': %s", peer->name, why.text);
		send_text(c, WIRE_ERROR, why.code, why.text);
		r = -EPERM;
		goto fail;
	}
	{
		char sb[RESYNC_WIRE_TEXT_MAX];

		/* Two primaries, or (on a secondary asking its primary) split
		 * brain: announced from this side too; the primary judges a
		 * secondary's writes once it has its status. */
		node_peer_split_brain(n, ret_hello, -1, sb, sizeof(sb));
	}
	free(buf);
	peer_conn_set_timeout(c, n->cfg->session_timeout_ms);
	*ret = c;
	return 0;
fail:
	free(buf);
	peer_conn_free(c);
	return r;
}

int node_peer_open(struct node *n, const struct node_config *peer, bool write, char *err,
		   size_t errlen, struct peer_conn **ret, struct wire_hello *ret_hello)
{
	return peer_open(n, peer, write, false, NULL, NULL, err, errlen, ret, ret_hello);
}

int node_peer_open_status(struct node *n, const struct node_config *peer, bool write,
			  struct peer_conn *kept, const struct peer_early *early,
			  unsigned char *buf, char *err, size_t errlen, struct peer_conn **ret,
			  struct wire_hello *ret_hello, struct wire_status *ret_status,
			  bool *ret_reached)
{
	struct peer_conn *c = NULL;
	uint16_t type;
	size_t len;
	int r;

	*ret_reached = false;
	r = peer_open(n, peer, write, true, kept, early, err, errlen, &c, ret_hello);
	if (r < 0)
		return r;
	*ret_reached = true;
	r = peer_conn_recv_frame(c, &type, buf, RESYNC_WIRE_FRAME_MAX, &len);
	if (r >= 0 && type != WIRE_STATUS)
		r = -EBADMSG;
	if (r >= 0)
		r = wire_status_decode(buf, len, ret_status);
	if (r < 0) {
		snprintf(err, errlen, "node '%s': no status: %s", peer->name,
			 r == -EBADMSG ? "malformed reply" : peer_conn_error(c));
		peer_conn_free(c);
		return r;
	}
	*ret = c;
	return 0;
}

int node_peer_ask_empty(struct peer_conn *c, uint16_t type, uint16_t reply, unsigned char *buf,
		       size_t *ret_len)
{
	uint16_t got;
	int r;

	r = peer_conn_send_frame(c, type, buf, 0);
	if (r >= 0)
		r = peer_conn_recv_frame(c, &got, buf, RESYNC_WIRE_FRAME_MAX, ret_len);
	if (r < 0)
		return r;
	return got == reply ? 0 : -EBADMSG;
}

/* Ask an opened peer for its status (STATUS_REQ). */
int node_peer_status(struct peer_conn *c, unsigned char *buf, struct wire_status *ret)
{
	size_t len;
	int r = node_peer_ask_empty(c, WIRE_STATUS_REQ, WIRE_STATUS, buf, &len);

	return r < 0 ? r : wire_status_decode(buf, len, ret);
}

/* Fetch an opened peer's dirty bitmap, size bytes, into bm. */
int node_peer_bitmap(struct peer_conn *c, unsigned char *buf, unsigned char *bm,
			    size_t size)
{
	size_t off = 0;

	do {
		struct wire_bitmap b;
		unsigned char ob[16];
		uint16_t type;
		size_t len;
		int r;

		r = wire_offset_encode(off, ob, sizeof(ob), &len);
		if (r >= 0)
			r = peer_conn_send_frame(c, WIRE_BITMAP_REQ, ob, len);
		if (r >= 0)
			r = peer_conn_recv_frame(c, &type, buf, RESYNC_WIRE_FRAME_MAX, &len);
		if (r < 0)
			return r;
		if (type != WIRE_BITMAP || wire_bitmap_decode(buf, len, &b) < 0 ||
		    b.total != size || b.offset != off || (b.len == 0 && off < size))
			return -EBADMSG;
		memcpy(bm + off, b.data, b.len);
		off += b.len;
	} while (off < size);
	return 0;
}
