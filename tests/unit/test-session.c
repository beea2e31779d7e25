/* The secondary's session (daemon/session.c), without FUSE or TLS: a
 * struct node over a plain image, its session on one end of a socketpair,
 * this test the asking side on the other end, with raw frames. The hello
 * (refused before it, or for another cluster, node, block size or volume
 * size), the dispatch table (unexpected types, writes from anyone but the
 * primary, malformed payloads), the requests (STATUS, BITMAP, HASH_REQ,
 * PAGE_REQ) and a primary's rewrite (BLOCKS, EXTENTS, CHECKPOINT, COMMIT)
 * as they land in the image and the metadata; the proof's leaves of the
 * writes folded in at a CHECKPOINT. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "node-fixture.h"
#include "resync/blockcmp.h"
#include "resync/io.h"
#include "resync/macro.h"
#include "resync/proof.h"
#include "resync/rollsum.h"
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

static int setup(void **state)
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
static void fx_end(struct fx *f)
{
	peer_conn_free(f->c);
	f->c = NULL;
	if (f->s)
		tsession_join(f->n, f->s);
	f->s = NULL;
}

static int teardown(void **state)
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

static void fx_start(struct fx *f)
{
	fx_end(f);
	f->s = tsession_start(f->n, &f->c);
}

/* A hello that node s accepts from node, with flags and generation. */
static struct wire_hello hello_from(struct fx *f, const char *node, uint32_t flags,
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

static void send_hello(struct fx *f, const struct wire_hello *h)
{
	size_t len;

	assert_int_equal(wire_hello_encode(h, f->buf, RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_HELLO, f->buf, len), 0);
}

/* The next frame, of type; returns its length (payload in f->buf). */
static size_t recv_type(struct fx *f, uint16_t want)
{
	uint16_t type;
	size_t len;

	assert_int_equal(peer_conn_recv_frame(f->c, &type, f->buf, RESYNC_WIRE_FRAME_MAX, &len), 0);
	if (type != want)
		fail_msg("expected %s, got %s", wire_type_name(want), wire_type_name(type));
	return len;
}

/* The next frame is a REFUSE or an ERROR (type) of code whose text
 * holds words. */
static void expect_text(struct fx *f, uint16_t type, uint32_t code, const char *words)
{
	size_t len = recv_type(f, type);
	struct wire_text t;

	assert_int_equal(wire_text_decode(f->buf, len, &t), 0);
	if (t.code != code || !strstr(t.text, words))
		fail_msg("%s %u '%s': expected %u with '%s'", wire_type_name(type), t.code, t.text,
			 code, words);
}

/* The session closed its end (after a REFUSE). */
static void expect_closed(struct fx *f)
{
	uint16_t type;
	size_t len;

	assert_int_equal(peer_conn_recv_frame(f->c, &type, f->buf, RESYNC_WIRE_FRAME_MAX, &len),
			 -ECONNRESET);
}

/* A new session past the hellos, from node (flags and gen in its hello);
 * returns the session's HELLO_ACK. */
static struct wire_hello fx_open(struct fx *f, const char *node, uint32_t flags,
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

static enum meta_state state_of(struct node *n)
{
	struct meta_info mi;

	assert_int_equal(meta_info_get(n->meta, &mi), 0);
	return mi.state;
}

static void send_offset(struct fx *f, uint16_t type, uint64_t off)
{
	unsigned char b[64];
	size_t len;

	assert_int_equal(wire_offset_encode(off, b, sizeof(b), &len), 0);
	assert_int_equal(peer_conn_send_frame(f->c, type, b, len), 0);
}

static uint64_t recv_ack(struct fx *f)
{
	size_t len = recv_type(f, WIRE_ACK);
	uint64_t off;

	assert_int_equal(wire_offset_decode(f->buf, len, &off), 0);
	return off;
}

/* (a) Anything but a valid HELLO first is refused, and the session ends. */
static void test_first_not_hello(void **state)
{
	struct fx *f = *state;
	struct wire_hello h = hello_from(f, "t", 0, NULL);
	size_t len;

	fx_start(f);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_STATUS_REQ, NULL, 0), 0);
	expect_text(f, WIRE_REFUSE, WIRE_REASON_MESSAGE, "the first message must be HELLO");
	expect_closed(f);

	/* A HELLO cut short. */
	fx_start(f);
	assert_int_equal(wire_hello_encode(&h, f->buf, RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_HELLO, f->buf, len / 2), 0);
	expect_text(f, WIRE_REFUSE, WIRE_REASON_MESSAGE, "the first message must be HELLO");
	expect_closed(f);
}

/* (b) A hello that does not fit this node: refused with its reason. */
static void test_hello_refused(void **state)
{
	struct fx *f = *state;
	struct {
		const char *cluster, *node;
		uint32_t block_size;
		uint64_t volume_size;
		uint32_t code;
		const char *words;
	} cases[] = {
		{"other", "t", 0, 0, WIRE_REASON_CLUSTER, "cluster 'other' is not this node's cluster 'demo'"},
		{NULL, "x", 0, 0, WIRE_REASON_NODE, "node 'x' is not another node"},
		{NULL, "s", 0, 0, WIRE_REASON_NODE, "node 's' is not another node"},
		{NULL, "t", 128 << 10, 0, WIRE_REASON_BLOCK_SIZE, "block sizes differ"},
		/* Larger, but not from the primary: not grown, refused. */
		{NULL, "t", 0, SIZE + TN_BLOCK, WIRE_REASON_VOLUME_SIZE, "volume sizes differ"},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct wire_hello h = hello_from(f, cases[i].node, 0, NULL);

		if (cases[i].cluster)
			snprintf(h.cluster, sizeof(h.cluster), "%s", cases[i].cluster);
		if (cases[i].block_size)
			h.block_size = cases[i].block_size;
		if (cases[i].volume_size)
			h.volume_size = cases[i].volume_size;
		fx_start(f);
		send_hello(f, &h);
		expect_text(f, WIRE_REFUSE, cases[i].code, cases[i].words);
		expect_closed(f);
	}
	/* Without a mount a primary's larger volume is not grown either
	 * (node_grow(): nothing to follow the size): refused, unchanged. */
	{
		struct wire_hello h = hello_from(f, "p", WIRE_HELLO_PRIMARY, NULL);

		h.volume_size = SIZE + TN_BLOCK;
		h.features |= WIRE_FEATURE_GROW;
		fx_start(f);
		send_hello(f, &h);
		expect_text(f, WIRE_REFUSE, WIRE_REASON_VOLUME_SIZE, "volume sizes differ");
		expect_closed(f);
		assert_int_equal(node_size(f->n), SIZE);
	}
	assert_int_equal(testlib_file_equals(f->n->self->volume, f->data, SIZE), 1);
}

/* (c) Writes from anyone but the primary, or from the primary's name
 * without its flag, are refused; the image and state stay. */
static void test_writes_not_primary(void **state)
{
	struct fx *f = *state;
	struct wire_zstd *z = NULL;
	unsigned char page[RESYNC_PAGE];
	struct wire_uuid g = {{1}};
	size_t len;

	assert_int_equal(meta_state_set(f->n->meta, META_STATE_OUTDATED), 0);
	assert_int_equal(wire_zstd_new(0, &z), 0);
	memset(page, 0xab, sizeof(page));

	fx_open(f, "t", 0, NULL);
	assert_int_equal(wire_blocks_encode(z, 0, page, sizeof(page), f->buf, RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_BLOCKS, f->buf, len), 0);
	expect_text(f, WIRE_ERROR, WIRE_REASON_MESSAGE, "only the primary may rewrite this volume");

	fx_open(f, "p", 0, NULL);
	assert_int_equal(wire_commit_encode(&g, f->buf, RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_COMMIT, f->buf, len), 0);
	expect_text(f, WIRE_ERROR, WIRE_REASON_MESSAGE, "only the primary may rewrite this volume");

	/* The primary's flag from a node that is not the primary. */
	fx_open(f, "t", WIRE_HELLO_PRIMARY, NULL);
	send_offset(f, WIRE_CHECKPOINT, 0);
	expect_text(f, WIRE_ERROR, WIRE_REASON_MESSAGE, "only the primary may rewrite this volume");
	fx_end(f);

	wire_zstd_free(z);
	assert_int_equal(testlib_file_equals(f->n->self->volume, f->data, SIZE), 1);
	assert_int_equal(state_of(f->n), META_STATE_OUTDATED);
	assert_false(f->n->writing);
}

/* (d) A type the table has no handler for, after the hellos. */
static void test_unexpected(void **state)
{
	struct fx *f = *state;
	struct wire_hello h = hello_from(f, "t", 0, NULL);
	size_t len;

	fx_open(f, "t", 0, NULL);
	assert_int_equal(wire_hello_encode(&h, f->buf, RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_HELLO_ACK, f->buf, len), 0);
	expect_text(f, WIRE_ERROR, WIRE_REASON_MESSAGE, "unexpected message");

	/* A second HELLO from a peer that did not offer REHELLO (an older
	 * build), and a reply type. */
	fx_start(f);
	h.features &= ~(uint64_t)WIRE_FEATURE_REHELLO;
	send_hello(f, &h);
	recv_type(f, WIRE_HELLO_ACK);
	send_hello(f, &h);
	expect_text(f, WIRE_ERROR, WIRE_REASON_MESSAGE, "unexpected message");
	/* With it: the session starts over, answered as the first. */
	h.features = node_features();
	fx_open(f, "t", 0, NULL);
	send_hello(f, &h);
	recv_type(f, WIRE_HELLO_ACK);
	send_hello(f, &h);
	recv_type(f, WIRE_HELLO_ACK);
	fx_open(f, "p", WIRE_HELLO_PRIMARY, NULL);
	send_offset(f, WIRE_ACK, 0);
	expect_text(f, WIRE_ERROR, WIRE_REASON_MESSAGE, "unexpected message");
}

/* (e) STATUS: the dirty bytes, the last resync, the checkpoint; and
 * the dirty bitmap in BITMAP. */
static void test_status_bitmap(void **state)
{
	struct fx *f = *state;
	struct meta_uuid id = {{9, 8, 7}};
	struct wire_status st;
	struct wire_bitmap bm;
	size_t len, nb = DIV_ROUND_UP(SIZE, TN_BLOCK);
	unsigned char want[8] = {0};

	assert_int_equal(meta_dirty_mark(f->n->meta, 0, 1), 0);
	assert_int_equal(meta_dirty_mark(f->n->meta, 3 * TN_BLOCK + 5, 10), 0);
	assert_int_equal(meta_dirty_mark(f->n->meta, SIZE - 1, 1), 0); /* the short last block */
	pthread_mutex_lock(&f->n->lock);
	f->n->last_resync = 1234567;
	pthread_mutex_unlock(&f->n->lock);

	fx_open(f, "t", 0, NULL);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_STATUS_REQ, NULL, 0), 0);
	len = recv_type(f, WIRE_STATUS);
	assert_int_equal(wire_status_decode(f->buf, len, &st), 0);
	assert_int_equal(st.dirty_bytes, 2 * TN_BLOCK + (SIZE - (nb - 1) * TN_BLOCK));
	assert_int_equal(st.dirty_bytes, meta_dirty_bytes(f->n->meta));
	assert_int_equal(st.last_resync, 1234567);
	assert_int_equal(st.flags & WIRE_STATUS_CHECKPOINT, 0);

	/* A checkpoint shows with its offset and id. */
	assert_int_equal(meta_checkpoint_set(f->n->meta, 3 * TN_BLOCK, &id), 0);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_STATUS_REQ, NULL, 0), 0);
	len = recv_type(f, WIRE_STATUS);
	assert_int_equal(wire_status_decode(f->buf, len, &st), 0);
	assert_true(st.flags & WIRE_STATUS_CHECKPOINT);
	assert_int_equal(st.checkpoint_off, 3 * TN_BLOCK);
	assert_memory_equal(st.checkpoint_id.b, id.b, 16);

	/* The bitmap: blocks 0, 3 and the last. */
	send_offset(f, WIRE_BITMAP_REQ, 0);
	len = recv_type(f, WIRE_BITMAP);
	assert_int_equal(wire_bitmap_decode(f->buf, len, &bm), 0);
	assert_int_equal(bm.offset, 0);
	assert_int_equal(bm.total, DIV_ROUND_UP(nb, 8));
	assert_int_equal(bm.len, bm.total);
	want[0] = 1 | 1 << 3;
	want[(nb - 1) / 8] |= 1 << ((nb - 1) % 8);
	assert_memory_equal(bm.data, want, bm.len);

	/* An offset past the bitmap is malformed. */
	send_offset(f, WIRE_BITMAP_REQ, bm.total + 1);
	expect_text(f, WIRE_ERROR, WIRE_REASON_MESSAGE, "failed");
}

/* (f) HASH_REQ: the session's tree is the one built here from the same
 * image; PAGE_REQ: the pages' hashes. */
static void test_hash_req(void **state)
{
	struct fx *f = *state;
	uint64_t seed = 0x5eed;
	uint32_t leaf = wire_tree_leaf(SIZE, TN_BLOCK);
	uint64_t nl = DIV_ROUND_UP(SIZE, leaf);
	struct blockcmp_opts o = {.block_size = leaf, .seed = seed};
	struct hash128 *leaves = calloc(nl, sizeof(*leaves)), got[8];
	struct hashtree *t = NULL;
	struct hashtree_range top = {0, 1}, first = {0, 5};
	struct hashtree_range pages[2] = {{0, 3 * RESYNC_PAGE}, {SIZE - 1000, 1000}};
	struct wire_hash_reply rep;
	unsigned levels;
	size_t len;

	assert_int_equal(leaf, RESYNC_PAGE);
	assert_non_null(leaves);
	assert_int_equal(blockcmp_hash_volume(f->n->vol, 0, SIZE, &o, leaves), 0);
	assert_int_equal(hashtree_new(leaves, nl, NODE_FINE_FANOUT, seed, &t), 0);
	levels = hashtree_levels(t);

	fx_open(f, "t", 0, NULL);
	/* The root. */
	assert_int_equal(wire_hash_req_encode(seed, levels - 1, NODE_FINE_FANOUT, leaf, &top, 1,
					      f->buf, RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_HASH_REQ, f->buf, len), 0);
	len = recv_type(f, WIRE_HASH_REPLY);
	assert_int_equal(wire_hash_reply_decode(f->buf, len, &rep), 0);
	assert_int_equal(rep.level, levels - 1);
	assert_int_equal(rep.n_hashes, 1);
	assert_int_equal(wire_hash_reply_get(&rep, got, ARRAY_SIZE(got)), 0);
	assert_true(hash128_equal(&got[0], hashtree_node(t, levels - 1, 0)));

	/* Leaves, from the same tree (no second hashing). */
	assert_int_equal(wire_hash_req_encode(seed, 0, NODE_FINE_FANOUT, leaf, &first, 1, f->buf,
					      RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_HASH_REQ, f->buf, len), 0);
	len = recv_type(f, WIRE_HASH_REPLY);
	assert_int_equal(wire_hash_reply_decode(f->buf, len, &rep), 0);
	assert_int_equal(rep.n_hashes, 5);
	assert_int_equal(wire_hash_reply_get(&rep, got, ARRAY_SIZE(got)), 0);
	assert_memory_equal(got, leaves, 5 * sizeof(*got));

	/* Pages of two ranges, the second the short last page. */
	assert_int_equal(wire_page_req_encode(seed, RESYNC_PAGE, pages, 2, f->buf,
					      RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_PAGE_REQ, f->buf, len), 0);
	len = recv_type(f, WIRE_PAGE_REPLY);
	assert_int_equal(wire_hash_reply_decode(f->buf, len, &rep), 0);
	assert_int_equal(rep.n_hashes, 4);
	assert_int_equal(wire_hash_reply_get(&rep, got, ARRAY_SIZE(got)), 0);
	for (int i = 0; i < 3; i++) {
		struct hash128 h = hash_block(f->data + i * RESYNC_PAGE, RESYNC_PAGE, seed);

		assert_true(hash128_equal(&got[i], &h));
	}
	{
		struct hash128 h = hash_block(f->data + SIZE - 1000, 1000, seed);

		assert_true(hash128_equal(&got[3], &h));
	}

	hashtree_free(t);
	free(leaves);
}

/* (g) The primary rewrites: BLOCKS and EXTENTS land in the image, a
 * CHECKPOINT is durable and recorded under the primary's generation,
 * the COMMIT makes the volume UpToDate at that generation with a clean
 * bitmap. */
static void test_primary_rewrite(void **state)
{
	struct fx *f = *state;
	struct meta_uuid gen;
	struct wire_uuid wg;
	struct wire_zstd *z = NULL;
	struct meta_info mi;
	unsigned char *want = malloc(SIZE), run[3 * RESYNC_PAGE];
	struct wire_extent ext[3] = {
		{100000, 5000}, {300000, 3000}, {SIZE - 1000, 1000},
	};
	size_t len, pos = 0;
	struct stat st;

	assert_non_null(want);
	memcpy(want, f->data, SIZE);
	assert_int_equal(meta_uuid_random(&gen), 0);
	memcpy(wg.b, gen.b, 16);
	assert_int_equal(wire_zstd_new(0, &z), 0);
	/* Writes the primary lacks: at its hello the volume turns Diverged. */
	assert_int_equal(meta_state_set(f->n->meta, META_STATE_OUTDATED), 0);
	assert_int_equal(meta_dirty_mark(f->n->meta, 5 * TN_BLOCK, 1), 0);

	fx_open(f, "p", WIRE_HELLO_PRIMARY, &gen);
	assert_int_equal(state_of(f->n), META_STATE_DIVERGED);

	/* BLOCKS: zeros (zstd) then a random run (raw). */
	memset(want + RESYNC_PAGE, 0, 2 * RESYNC_PAGE);
	assert_int_equal(wire_blocks_encode(z, RESYNC_PAGE, want + RESYNC_PAGE, 2 * RESYNC_PAGE,
					    f->buf, RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_true(len < 2 * RESYNC_PAGE); /* compressed */
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_BLOCKS, f->buf, len), 0);
	testlib_fill(want + 40000, 2000, 99);
	assert_int_equal(wire_blocks_encode(z, 40000, want + 40000, 2000, f->buf,
					    RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_BLOCKS, f->buf, len), 0);

	/* A checkpoint: durable, recorded, acknowledged. */
	send_offset(f, WIRE_CHECKPOINT, 64 << 10);
	assert_int_equal(recv_ack(f), 64 << 10);
	assert_int_equal(meta_info_get(f->n->meta, &mi), 0);
	assert_int_equal(mi.state, META_STATE_INCONSISTENT);
	assert_true(mi.checkpoint_set);
	assert_int_equal(mi.checkpoint_off, 64 << 10);
	assert_memory_equal(mi.checkpoint_id.b, gen.b, 16);
	assert_true(f->n->writing);

	/* EXTENTS: three runs, the last one the volume's short end. */
	for (size_t i = 0; i < ARRAY_SIZE(ext); i++) {
		testlib_fill(want + ext[i].offset, ext[i].len, 200 + i);
		memcpy(run + pos, want + ext[i].offset, ext[i].len);
		pos += ext[i].len;
	}
	assert_int_equal(wire_extents_encode(z, ext, ARRAY_SIZE(ext), run, f->buf,
					     RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_EXTENTS, f->buf, len), 0);

	/* The commit. */
	assert_int_equal(wire_commit_encode(&wg, f->buf, RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_COMMIT, f->buf, len), 0);
	assert_int_equal(recv_ack(f), SIZE);
	assert_int_equal(meta_info_get(f->n->meta, &mi), 0);
	assert_int_equal(mi.state, META_STATE_UPTODATE);
	assert_memory_equal(mi.generation.b, gen.b, 16);
	assert_true(mi.bitmap_trusted);
	assert_false(mi.checkpoint_set);
	assert_int_equal(meta_dirty_bytes(f->n->meta), 0);
	assert_false(f->n->writing);
	assert_true(f->n->last_resync > 0);
	assert_int_equal(stat(f->n->state_path, &st), 0);
	fx_end(f);

	assert_int_equal(testlib_file_equals(f->n->self->volume, want, SIZE), 1);
	wire_zstd_free(z);
	free(want);
}

/* A HELLO again with data behind it (WIRE_HELLO_DATA_FOLLOWS): refused
 * (from a node that is not the primary, or one whose hello does not fit
 * this node), nothing that followed it is applied, although it was on
 * the wire before the refusal was read; accepted from the primary, the
 * data lands. */
static void send_page(struct fx *f, struct wire_zstd *z, uint64_t off, const unsigned char *p)
{
	size_t len;

	assert_int_equal(wire_blocks_encode(z, off, p, RESYNC_PAGE, f->buf, RESYNC_WIRE_FRAME_MAX,
					    &len), 0);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_BLOCKS, f->buf, len), 0);
}

static void test_rehello_data(void **state)
{
	struct fx *f = *state;
	struct wire_zstd *z = NULL;
	unsigned char page[RESYNC_PAGE];
	struct wire_hello h;

	assert_int_equal(meta_state_set(f->n->meta, META_STATE_OUTDATED), 0);
	assert_int_equal(wire_zstd_new(0, &z), 0);
	memset(page, 0xcd, sizeof(page));
	/* Data behind a hello from a node that is not the primary. */
	fx_open(f, "p", WIRE_HELLO_PRIMARY, NULL);
	h = hello_from(f, "t", WIRE_HELLO_PRIMARY | WIRE_HELLO_DATA_FOLLOWS, NULL);
	send_hello(f, &h);
	send_page(f, z, 0, page);
	send_offset(f, WIRE_CHECKPOINT, 0);
	expect_text(f, WIRE_REFUSE, WIRE_REASON_NODE, "not this node's primary");
	fx_end(f);
	assert_int_equal(testlib_file_equals(f->n->self->volume, f->data, SIZE), 1);
	assert_int_equal(state_of(f->n), META_STATE_OUTDATED);
	/* From the primary, with another block size: refused, nothing applied. */
	fx_open(f, "p", WIRE_HELLO_PRIMARY, NULL);
	h = hello_from(f, "p", WIRE_HELLO_PRIMARY | WIRE_HELLO_DATA_FOLLOWS, NULL);
	h.block_size *= 2;
	send_hello(f, &h);
	for (uint64_t off = 0; off < 64 * RESYNC_PAGE; off += RESYNC_PAGE)
		send_page(f, z, off, page);
	send_offset(f, WIRE_CHECKPOINT, 0);
	expect_text(f, WIRE_REFUSE, WIRE_REASON_BLOCK_SIZE, "block sizes differ");
	fx_end(f);
	assert_int_equal(testlib_file_equals(f->n->self->volume, f->data, SIZE), 1);
	assert_int_equal(state_of(f->n), META_STATE_OUTDATED);
	assert_false(f->n->writing);
	/* From the primary, fitting: the data lands, the CHECKPOINT at 0 is
	 * acknowledged. */
	fx_open(f, "p", WIRE_HELLO_PRIMARY, NULL);
	h = hello_from(f, "p", WIRE_HELLO_PRIMARY | WIRE_HELLO_DATA_FOLLOWS, NULL);
	send_hello(f, &h);
	send_page(f, z, 0, page);
	send_offset(f, WIRE_CHECKPOINT, 0);
	recv_type(f, WIRE_HELLO_ACK);
	assert_int_equal(recv_ack(f), 0);
	assert_int_equal(state_of(f->n), META_STATE_INCONSISTENT);
	fx_end(f);
	memcpy(f->data, page, sizeof(page));
	assert_int_equal(testlib_file_equals(f->n->self->volume, f->data, SIZE), 1);
	wire_zstd_free(z);
}

/* The proof's root of the image as it is now (every block read). */
static struct proof_digest file_root(struct fx *f)
{
	struct proof_tree t;
	struct proof_digest d;

	assert_int_equal(proof_tree_init(&t, PROOF_HASH_XXH3, PROOF_BLOCK_DEFAULT, SIZE), 0);
	assert_int_equal(proof_tree_update(&t, f->n->vol, NULL, NULL), 0);
	assert_int_equal(proof_tree_root(&t, &d), 0);
	proof_tree_release(&t);
	return d;
}

/* PROOF_REQ: the secondary's root, and the blocks it hashed for it. */
static struct wire_proof ask_proof(struct fx *f)
{
	struct wire_proof q = {.hash = PROOF_HASH_XXH3, .block_size = PROOF_BLOCK_DEFAULT,
			       .volume_size = SIZE}, a;
	size_t len;

	assert_int_equal(wire_proof_encode(&q, f->buf, RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_PROOF_REQ, f->buf, len), 0);
	len = recv_type(f, WIRE_PROOF);
	assert_int_equal(wire_proof_decode(f->buf, len, &a), 0);
	return a;
}

/* (j) The proof's leaves of a resync's writes are folded in at its
 * CHECKPOINT: the proof then hashes no block again, and its root is the
 * image's. A byte of a written page changed behind the daemon after that
 * checkpoint (corrupt-before-commit's case) is found by the proof's read
 * of the written bytes: that block is hashed again and the root is the
 * image's as it is, not the one the resync meant. Data after the last
 * checkpoint is hashed at the proof. */
static void test_proof_fold(void **state)
{
	struct fx *f = *state;
	struct wire_zstd *z = NULL;
	struct meta_uuid gen;
	struct hashtree_range top = {0, 1};
	uint32_t leaf = wire_tree_leaf(SIZE, TN_BLOCK);
	struct proof_digest meant, now;
	struct wire_proof a;
	unsigned char b = 0;
	size_t len;
	int fd;

	assert_int_equal(wire_zstd_new(0, &z), 0);
	assert_int_equal(meta_uuid_random(&gen), 0);
	fx_open(f, "p", WIRE_HELLO_PRIMARY, &gen);
	/* A compare's hashing: the proof's leaves from the same reads. */
	assert_int_equal(wire_hash_req_encode(0x5eed, 0, NODE_FINE_FANOUT, leaf, &top, 1, f->buf,
					      RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_HASH_REQ, f->buf, len), 0);
	recv_type(f, WIRE_HASH_REPLY);

	/* Two pages in blocks 0 and 3, a checkpoint, then a page in block 5. */
	testlib_fill(f->data + RESYNC_PAGE, RESYNC_PAGE, 31);
	testlib_fill(f->data + 200000, 2000, 32);
	testlib_fill(f->data + 5 * TN_BLOCK + 8192, RESYNC_PAGE, 33);
	assert_int_equal(wire_blocks_encode(z, RESYNC_PAGE, f->data + RESYNC_PAGE, RESYNC_PAGE,
					    f->buf, RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_BLOCKS, f->buf, len), 0);
	assert_int_equal(wire_blocks_encode(z, 200000, f->data + 200000, 2000, f->buf,
					    RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_BLOCKS, f->buf, len), 0);
	/* Most of block 8: left to the proof (reading it again saves nothing). */
	testlib_fill(f->data + 8 * TN_BLOCK, 40000, 34);
	assert_int_equal(wire_blocks_encode(z, 8 * TN_BLOCK, f->data + 8 * TN_BLOCK, 40000, f->buf,
					    RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_BLOCKS, f->buf, len), 0);
	send_offset(f, WIRE_CHECKPOINT, 0);
	assert_int_equal(recv_ack(f), 0);
	assert_int_equal(f->s->proof_folded_blocks, 2);
	assert_int_equal(f->s->n_checks, 2);
	assert_int_equal(wire_blocks_encode(z, 5 * TN_BLOCK + 8192, f->data + 5 * TN_BLOCK + 8192,
					    RESYNC_PAGE, f->buf, RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_BLOCKS, f->buf, len), 0);

	/* Nothing changed: the dense block and the one written after the
	 * checkpoint. */
	a = ask_proof(f);
	meant = file_root(f);
	assert_int_equal(a.hashed, 2);
	assert_memory_equal(a.root, meant.b, 16);

	/* A written byte changed behind the daemon. */
	fd = open(f->n->self->volume, O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(fd_pread_full(fd, &b, 1, 200500), 0);
	b ^= 0xff;
	assert_int_equal(fd_pwrite_full(fd, &b, 1, 200500), 0);
	close(fd);
	a = ask_proof(f);
	now = file_root(f);
	assert_memory_not_equal(now.b, meant.b, 16);
	assert_memory_equal(a.root, now.b, 16);
	assert_int_equal(a.hashed, 3); /* block 3, and blocks 5 and 8 again */
	fx_end(f);
	wire_zstd_free(z);
}

/* Changes a byte of the image behind the daemon. */
static void flip_byte(struct fx *f, uint64_t off)
{
	unsigned char b = 0;
	int fd = open(f->n->self->volume, O_RDWR | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(fd_pread_full(fd, &b, 1, off), 0);
	b ^= 0xff;
	assert_int_equal(fd_pwrite_full(fd, &b, 1, off), 0);
	close(fd);
}

/* (j2) The fold's checks are hashed from the pieces its leaves' update
 * reads, except one that straddles two pieces (the 1 MiB chunks of a run
 * of blocks), which is read on its own: a page at the start of each of
 * blocks 0-14 and a range across blocks 15 and 16 (the chunk boundary at
 * 1 MiB), all folded at one checkpoint. A byte changed behind the daemon
 * in either kind of range is found by the proof. */
static void test_proof_fold_pieces(void **state)
{
	struct fx *f = *state;
	struct wire_zstd *z = NULL;
	struct meta_uuid gen;
	struct hashtree_range top = {0, 1};
	uint32_t leaf = wire_tree_leaf(SIZE, TN_BLOCK);
	uint64_t cross = (1 << 20) - 2048;
	struct proof_digest meant, now;
	struct wire_proof a;
	size_t len;

	assert_int_equal(wire_zstd_new(0, &z), 0);
	assert_int_equal(meta_uuid_random(&gen), 0);
	fx_open(f, "p", WIRE_HELLO_PRIMARY, &gen);
	assert_int_equal(wire_hash_req_encode(0x5eed, 0, NODE_FINE_FANOUT, leaf, &top, 1, f->buf,
					      RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_HASH_REQ, f->buf, len), 0);
	recv_type(f, WIRE_HASH_REPLY);
	for (uint64_t k = 0; k < 15; k++) {
		uint64_t off = k * PROOF_BLOCK_DEFAULT;

		testlib_fill(f->data + off, RESYNC_PAGE, 40 + (unsigned)k);
		assert_int_equal(wire_blocks_encode(z, off, f->data + off, RESYNC_PAGE, f->buf,
						    RESYNC_WIRE_FRAME_MAX, &len), 0);
		assert_int_equal(peer_conn_send_frame(f->c, WIRE_BLOCKS, f->buf, len), 0);
	}
	testlib_fill(f->data + cross, SIZE - cross, 60);
	assert_int_equal(wire_blocks_encode(z, cross, f->data + cross, SIZE - cross, f->buf,
					    RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_BLOCKS, f->buf, len), 0);
	send_offset(f, WIRE_CHECKPOINT, 0);
	assert_int_equal(recv_ack(f), 0);
	assert_int_equal(f->s->proof_folded_blocks, 17);
	assert_int_equal(f->s->n_checks, 16);

	a = ask_proof(f);
	meant = file_root(f);
	assert_int_equal(a.hashed, 0);
	assert_memory_equal(a.root, meant.b, 16);
	/* One byte in the straddling range, one in block 3's page. */
	flip_byte(f, SIZE - 10);
	flip_byte(f, 3 * PROOF_BLOCK_DEFAULT + 100);
	a = ask_proof(f);
	now = file_root(f);
	assert_memory_not_equal(now.b, meant.b, 16);
	assert_memory_equal(a.root, now.b, 16);
	assert_int_equal(a.hashed, 3); /* blocks 3, 15 and 16 */
	fx_end(f);
	wire_zstd_free(z);
}

static void hash_req_root(struct fx *f, uint64_t seed)
{
	struct hashtree_range top = {0, 1};
	size_t len;

	assert_int_equal(wire_hash_req_encode(seed, 0, NODE_FINE_FANOUT, wire_tree_leaf(SIZE, TN_BLOCK),
					      &top, 1, f->buf, RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_HASH_REQ, f->buf, len), 0);
	recv_type(f, WIRE_HASH_REPLY);
}

/* (k) A compare hashes the proof's leaves beside its own hashes only when
 * the node holds none that make its next root: the second compare (another
 * seed, so the volume is read again) leaves the leaves as they were, and
 * the proof made from them is the image's, with no block hashed again. */
static void test_proof_held(void **state)
{
	struct fx *f = *state;
	struct meta_uuid gen;
	struct proof_digest d;
	struct wire_proof a;
	uint64_t seq;

	fx_open(f, "t", 0, NULL);
	hash_req_root(f, 1);
	seq = f->n->proof_seq;
	assert_non_null(f->n->proof.leaves);
	fx_open(f, "t", 0, NULL);
	hash_req_root(f, 2);
	assert_int_equal(f->n->proof_seq, seq);

	assert_int_equal(meta_uuid_random(&gen), 0);
	fx_open(f, "p", WIRE_HELLO_PRIMARY, &gen);
	a = ask_proof(f);
	d = file_root(f);
	assert_int_equal(a.hashed, 0);
	assert_memory_equal(a.root, d.b, 16);
	fx_end(f);
}

/* The check of a copy whose source bytes are src[0, len): pieces of 4 KiB. */
static struct hash128 copy_check(const unsigned char *src, uint32_t len, uint64_t seed)
{
	struct hash128 ph[RESYNC_WIRE_COPY_LEN_MAX / RESYNC_PAGE];
	size_t n = 0;

	for (uint32_t p = 0; p < len; p += RESYNC_PAGE)
		ph[n++] = hash_block(src + p, MIN((uint32_t)RESYNC_PAGE, len - p), seed);
	return wire_copy_check(ph, n, seed);
}

/* (i) COPY from the primary: two copies that swap places (one frame:
 * every source read before any destination is written), a copy into the
 * volume's short end, and one whose source does not hold what its check
 * says (refused, named in the COPY_ACK, nothing written there). A COPY
 * past the volume's end is an ERROR; WEAK_REQ answers the pieces' weak
 * sums, and refuses a seed. */
static void test_copy(void **state)
{
	struct fx *f = *state;
	unsigned char *want = malloc(SIZE);
	struct wire_copy_entry e[4];
	struct wire_copy_ack ack;
	struct wire_weak_reply wr;
	struct hashtree_range rr[2] = {{0, 2 * RESYNC_PAGE}, {SIZE - 1000 - RESYNC_PAGE, 1000 + RESYNC_PAGE}};
	size_t len;

	assert_non_null(want);
	memcpy(want, f->data, SIZE);
	e[0] = (struct wire_copy_entry){0, 65536, 8192, copy_check(f->data + 65536, 8192, 5)};
	e[1] = (struct wire_copy_entry){65536, 0, 8192, copy_check(f->data, 8192, 5)};
	e[2] = (struct wire_copy_entry){200000, 300000, 5000, copy_check(f->data + 300001, 5000, 5)};
	e[3] = (struct wire_copy_entry){SIZE - 1000, 4096, 1000, copy_check(f->data + 4096, 1000, 5)};
	memcpy(want, f->data + 65536, 8192);
	memcpy(want + 65536, f->data, 8192);
	memcpy(want + SIZE - 1000, f->data + 4096, 1000);

	fx_open(f, "p", WIRE_HELLO_PRIMARY, NULL);
	assert_int_equal(wire_copy_encode(5, RESYNC_PAGE, e, 4, f->buf, RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_COPY, f->buf, len), 0);
	len = recv_type(f, WIRE_COPY_ACK);
	assert_int_equal(wire_copy_ack_decode(f->buf, len, &ack), 0);
	assert_int_equal(ack.n, 4);
	assert_int_equal(ack.n_failed, 1);
	assert_true(wire_copy_ack_failed(&ack, 2));
	assert_int_equal(state_of(f->n), META_STATE_INCONSISTENT); /* a write started */

	/* Weak sums of pieces, the short one at the volume's end included. */
	assert_int_equal(wire_page_req_encode(0, RESYNC_PAGE, rr, 2, f->buf, RESYNC_WIRE_FRAME_MAX,
					      &len), 0);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_WEAK_REQ, f->buf, len), 0);
	len = recv_type(f, WIRE_WEAK_REPLY);
	assert_int_equal(wire_weak_reply_decode(f->buf, len, &wr), 0);
	assert_int_equal(wr.n, 4);
	assert_int_equal(wire_weak_reply_get(&wr, 0), rollsum_block(want, RESYNC_PAGE));
	assert_int_equal(wire_weak_reply_get(&wr, 1), rollsum_block(want + RESYNC_PAGE, RESYNC_PAGE));
	assert_int_equal(wire_weak_reply_get(&wr, 3), rollsum_block(want + SIZE - 1000, 1000));
	assert_int_equal(wire_page_req_encode(3, RESYNC_PAGE, rr, 1, f->buf, RESYNC_WIRE_FRAME_MAX,
					      &len), 0);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_WEAK_REQ, f->buf, len), 0);
	expect_text(f, WIRE_ERROR, WIRE_REASON_MESSAGE, "'s' failed");
	fx_end(f);
	assert_int_equal(testlib_file_equals(f->n->self->volume, want, SIZE), 1);

	/* A source past the end: an ERROR, nothing of the frame written. */
	fx_open(f, "p", WIRE_HELLO_PRIMARY, NULL);
	e[0] = (struct wire_copy_entry){0, 65536, 8192, copy_check(want + 65536, 8192, 5)};
	e[1] = (struct wire_copy_entry){65536, SIZE - 100, 200, {1, 2}};
	assert_int_equal(wire_copy_encode(5, RESYNC_PAGE, e, 2, f->buf, RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_COPY, f->buf, len), 0);
	expect_text(f, WIRE_ERROR, WIRE_REASON_MESSAGE, "past the volume's end");
	fx_end(f);
	assert_int_equal(testlib_file_equals(f->n->self->volume, want, SIZE), 1);
	free(want);
}

/* (h) Payloads that do not decode: ERROR, reason MESSAGE; nothing
 * written. */
static void test_malformed(void **state)
{
	struct fx *f = *state;
	struct hashtree_range top = {0, 1};
	size_t len;

	assert_int_equal(meta_state_set(f->n->meta, META_STATE_OUTDATED), 0);

	fx_open(f, "t", 0, NULL);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_STATUS_REQ, "xyz", 3), 0);
	expect_text(f, WIRE_ERROR, WIRE_REASON_MESSAGE, "'s' failed");

	fx_open(f, "t", 0, NULL);
	assert_int_equal(wire_hash_req_encode(1, 0, NODE_FINE_FANOUT, RESYNC_PAGE, &top, 1, f->buf,
					      RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_HASH_REQ, f->buf, len - 3), 0);
	expect_text(f, WIRE_ERROR, WIRE_REASON_MESSAGE, "'s' failed");

	/* From the primary: a CHECKPOINT cut short, a BLOCKS cut short:
	 * nothing changes, not even the state (a data frame is decoded
	 * before the session fences and marks the volume Inconsistent). */
	fx_open(f, "p", WIRE_HELLO_PRIMARY, NULL);
	assert_int_equal(peer_conn_send_frame(f->c, WIRE_CHECKPOINT, "\1\2", 2), 0);
	expect_text(f, WIRE_ERROR, WIRE_REASON_MESSAGE, "'s' failed");
	fx_end(f);
	assert_int_equal(state_of(f->n), META_STATE_OUTDATED);

	fx_open(f, "p", WIRE_HELLO_PRIMARY, NULL);
	{
		unsigned char page[RESYNC_PAGE];

		memset(page, 0x5a, sizeof(page));
		assert_int_equal(wire_blocks_encode(NULL, 0, page, sizeof(page), f->buf,
						    RESYNC_WIRE_FRAME_MAX, &len), 0);
		assert_int_equal(peer_conn_send_frame(f->c, WIRE_BLOCKS, f->buf, len - 1), 0);
	}
	expect_text(f, WIRE_ERROR, WIRE_REASON_MESSAGE, "'s' failed");
	fx_end(f);
	assert_int_equal(testlib_file_equals(f->n->self->volume, f->data, SIZE), 1);
	assert_int_equal(state_of(f->n), META_STATE_OUTDATED);
	assert_false(f->n->writing);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_first_not_hello, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hello_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writes_not_primary, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unexpected, setup, teardown),
		cmocka_unit_test_setup_teardown(test_status_bitmap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hash_req, setup, teardown),
		cmocka_unit_test_setup_teardown(test_primary_rewrite, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rehello_data, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_proof_fold, setup, teardown),
		cmocka_unit_test_setup_teardown(test_proof_fold_pieces, setup, teardown),
		cmocka_unit_test_setup_teardown(test_proof_held, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
