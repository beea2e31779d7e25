/* What test-session.c and test-session-write.c share: a struct node
 * ("s", a secondary) over a plain image, its session on one end of a
 * socketpair and the test the asking side on the other (struct fx), and
 * the raw frames a test sends and expects. */
#pragma once

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "node-fixture.h"
#include "resync/macro.h"
#include "testlib.h"

/* A short last page and a short last block. */
#define SIZE ((size_t)(1 << 20) + 1000)
#define SEED 7

struct fx {
	struct tcluster tc;
	struct node *n; /* "s", a secondary */
	struct session *s;
	struct peer_conn *c; /* the asking side */
	unsigned char *buf;
	unsigned char *data; /* the image as written by tcluster_init() */
};

static inline int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	tcluster_init(&f->tc, SIZE, SEED);
	f->n = tnode_new(&f->tc, "s");
	f->buf = malloc(RESYNC_WIRE_FRAME_MAX);
	f->data = malloc(SIZE);
	assert_non_null(f->buf);
	assert_non_null(f->data);
	testlib_fill(f->data, SIZE, SEED);
	*state = f;
	return 0;
}

/* The asking side closes; the session ends and is joined. */
static inline void fx_end(struct fx *f)
{
	peer_conn_free(f->c);
	f->c = NULL;
	if (f->s)
		tsession_join(f->n, f->s);
	f->s = NULL;
}

static inline int teardown(void **state)
{
	struct fx *f = *state;

	fx_end(f);
	tnode_free(f->n);
	tcluster_release(&f->tc);
	free(f->buf);
	free(f->data);
	free(f);
	return 0;
}

static inline void fx_start(struct fx *f)
{
	fx_end(f);
	f->s = tsession_start(f->n, &f->c);
}

/* A hello that node s accepts from node, with flags and generation. */
static inline struct wire_hello hello_from(struct fx *f, const char *node, uint32_t flags,
				    const struct meta_uuid *gen)
{
	struct wire_hello h = {0};

	snprintf(h.cluster, sizeof(h.cluster), "%s", f->tc.cfg->name);
	snprintf(h.node, sizeof(h.node), "%s", node);
	h.proto_min = WIRE_PROTO_MIN;
	h.proto_max = WIRE_PROTO_MAX;
	h.features = node_features();
	h.volume_size = SIZE;
	h.block_size = f->tc.cfg->block_size;
	h.state = WIRE_STATE_UPTODATE;
	h.flags = flags;
	if (gen)
		memcpy(h.generation.b, gen->b, 16);
	return h;
}

static inline void send_hello(struct fx *f, const struct wire_hello *h)
{
	size_t len;

	assert_int_equal(wire_hello_encode(h, f->buf, RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_HELLO, f->buf, len), 0);
}

/* A HASH_REQ of the first leaf (seed 0x5eed): the session hashes its
 * whole volume first (and the proof's leaves from the same reads). */
static inline void send_leaf_req(struct fx *f)
{
	struct hashtree_range first = {0, 1};
	size_t len;

	assert_int_equal(wire_hash_req_encode(0x5eed, 0, NODE_FINE_FANOUT,
					      wire_tree_leaf(SIZE, TN_BLOCK), &first, 1, f->buf,
					      RESYNC_WIRE_FRAME_MAX, &len),
			 0);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_HASH_REQ, f->buf, len), 0);
}

/* The next frame, of type; returns its length (payload in f->buf). */
static inline size_t recv_type(struct fx *f, uint16_t want)
{
	uint16_t type;
	size_t len;

	assert_int_equal(peer_conn_recv_frame(f->c, &type, f->buf, RESYNC_WIRE_FRAME_MAX, &len), 0);
	if (type != want)
		fail_msg("expected %s, got %s", wire_type_name(want), wire_type_name(type));
	return len;
}

/* The next frame is a REFUSE or an ERROR (type) of code whose text
 * holds words; returns it. */
static inline struct wire_text expect_text(struct fx *f, uint16_t type, uint32_t code,
					   const char *words)
{
	size_t len = recv_type(f, type);
	struct wire_text t;

	assert_int_equal(wire_text_decode(f->buf, len, &t), 0);
	if (t.code != code || !strstr(t.text, words))
		fail_msg("%s %u '%s': expected %u with '%s'", wire_type_name(type), t.code, t.text,
			 code, words);
	return t;
}

/* The session closed its end (after a REFUSE). */
static inline void expect_closed(struct fx *f)
{
	uint16_t type;
	size_t len;

	assert_int_equal(peer_conn_recv_frame(f->c, &type, f->buf, RESYNC_WIRE_FRAME_MAX, &len),
			 -ECONNRESET);
}

/* A new session past the hellos, from node (flags and gen in its hello);
 * returns the session's HELLO_ACK. */
static inline struct wire_hello fx_open(struct fx *f, const char *node, uint32_t flags,
				 const struct meta_uuid *gen)
{
	struct wire_hello h = hello_from(f, node, flags, gen), ack;
	size_t len;

	fx_start(f);
	send_hello(f, &h);
	len = recv_type(f, WIRE_HELLO_ACK);
	assert_int_equal(wire_hello_decode(f->buf, len, &ack), 0);
	assert_string_equal(ack.cluster, "demo");
	assert_string_equal(ack.node, "s");
	assert_int_equal(ack.volume_size, SIZE);
	assert_int_equal(ack.flags & WIRE_HELLO_PRIMARY, 0);
	return ack;
}

static inline enum meta_state state_of(struct node *n)
{
	struct meta_info mi;

	assert_int_equal(meta_info_get(n->meta, &mi), 0);
	return mi.state;
}

static inline void send_offset(struct fx *f, uint16_t type, uint64_t off)
{
	unsigned char b[64];
	size_t len;

	assert_int_equal(wire_offset_encode(off, b, sizeof(b), &len), 0);
	assert_int_equal(peer_conn_send_frame(f->c, type, b, len), 0);
}

static inline uint64_t recv_ack(struct fx *f)
{
	size_t len = recv_type(f, WIRE_ACK);
	uint64_t off;

	assert_int_equal(wire_offset_decode(f->buf, len, &off), 0);
	return off;
}
