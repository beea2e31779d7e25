/* The secondary's session (daemon/session.c), without FUSE or TLS: a
 * struct node over a plain image, its session on one end of a socketpair,
 * this test the asking side on the other end, with raw frames
 * (session-check.h). The hello (refused before it, or for another
 * cluster, node, block size or volume size), the dispatch table
 * (unexpected types, writes from anyone but the primary, malformed
 * payloads) and the requests (STATUS, BITMAP, HASH_REQ, PAGE_REQ);
 * test-session-write.c has a primary's rewrite. */
#include <signal.h>

#include "resync/blockcmp.h"
#include "session-check.h"

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

/* (g) A node that stops ends a hash of its volume for a peer at the
 * next unit (here the only one): an ERROR, no HASH_REPLY. */
static void test_hash_req_stopping(void **state)
{
	struct fx *f = *state;

	fx_open(f, "t", 0, NULL);
	atomic_store(&f->n->stopping, true);
	send_leaf_req(f);
	expect_text(f, WIRE_ERROR, WIRE_REASON_IO, "Operation canceled");
	atomic_store(&f->n->stopping, false);
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
	    cmocka_unit_test_setup_teardown(test_hash_req_stopping, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
