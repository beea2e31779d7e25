/* The wire format: every message round-trips, every truncated, oversized
 * or garbage payload is refused with -EBADMSG, and every node state goes
 * to the wire and back. The messages that carry data (BLOCKS, EXTENTS,
 * COPY and their acks, zstd) are test-wire-data.c's. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "resync/macro.h"
#include "testlib.h"
#include "wire.h"

static unsigned char buf[RESYNC_WIRE_FRAME_MAX];

#include "wire-check.h"

static void test_header(void **state)
{
	unsigned char h[WIRE_HEADER_SIZE], m[WIRE_HEADER_SIZE];
	struct wire_header w;

	wire_header_encode(WIRE_BLOCKS, 1234, h);
	assert_memory_equal(h, "rsyn", 4); /* the magic reads as text */
	assert_int_equal(wire_header_decode(h, &w), 0);
	assert_int_equal(w.version, WIRE_FRAME_VERSION);
	assert_int_equal(w.type, WIRE_BLOCKS);
	assert_int_equal(w.length, 1234);
	assert_int_equal(w.flags, 0);

	for (size_t i = 0; i < 4; i++) {
		memcpy(m, h, sizeof(h));
		m[i] ^= 0x20;
		assert_int_equal(wire_header_decode(m, &w), -EBADMSG);
	}
	memcpy(m, h, sizeof(h));
	put16(m + 4, 2); /* version */
	assert_int_equal(wire_header_decode(m, &w), -EBADMSG);
	memcpy(m, h, sizeof(h));
	put16(m + 6, 0); /* type */
	assert_int_equal(wire_header_decode(m, &w), -EBADMSG);
	put16(m + 6, WIRE_TYPE_MAX + 1);
	assert_int_equal(wire_header_decode(m, &w), -EBADMSG);
	memcpy(m, h, sizeof(h));
	put32(m + 8, RESYNC_WIRE_FRAME_MAX + 1); /* length */
	assert_int_equal(wire_header_decode(m, &w), -EBADMSG);
	put32(m + 8, UINT32_MAX);
	assert_int_equal(wire_header_decode(m, &w), -EBADMSG);
	put32(m + 8, RESYNC_WIRE_FRAME_MAX);
	assert_int_equal(wire_header_decode(m, &w), 0);
	memcpy(m, h, sizeof(h));
	put32(m + 12, 1); /* flags */
	assert_int_equal(wire_header_decode(m, &w), -EBADMSG);

	assert_string_equal(wire_type_name(WIRE_HASH_REPLY), "HASH_REPLY");
	assert_string_equal(wire_type_name(0), "?");
	assert_string_equal(wire_type_name(99), "?");
}

static void test_names_versions(void **state)
{
	char longname[RESYNC_NAME_MAX + 2];
	uint16_t v = 0;

	assert_true(wire_name_valid("node1", 5));
	assert_true(wire_name_valid("a.b_c-d", 7));
	assert_false(wire_name_valid("", 0));
	assert_false(wire_name_valid("-a", 2));
	assert_false(wire_name_valid(".a", 2));
	assert_false(wire_name_valid("a b", 3));
	assert_false(wire_name_valid("a\0b", 3));
	assert_false(wire_name_valid("a/b", 3));
	memset(longname, 'a', sizeof(longname));
	assert_true(wire_name_valid(longname, RESYNC_NAME_MAX));
	assert_false(wire_name_valid(longname, RESYNC_NAME_MAX + 1));

	assert_int_equal(wire_proto_negotiate(1, 3, 2, 5, &v), 0);
	assert_int_equal(v, 3);
	assert_int_equal(wire_proto_negotiate(1, 1, 2, 5, &v), -EPROTONOSUPPORT);
	assert_int_equal(wire_proto_negotiate(3, 1, 1, 5, &v), -EPROTONOSUPPORT);
}

static struct wire_hello sample_hello(void)
{
	struct wire_hello h = {
		.cluster = "demo",
		.node = "node-2",
		.proto_min = 1,
		.proto_max = 3,
		.features = WIRE_FEATURE_ZSTD | WIRE_FEATURE_HASHTREE | (1ull << 40),
		.volume_size = 512ull << 20,
		.block_size = 65536,
		.state = WIRE_STATE_OUTDATED,
		.flags = WIRE_HELLO_BITMAP_TRUSTED,
		.n_history = 3,
	};

	for (int i = 0; i < 16; i++) {
		h.generation.b[i] = i;
		for (int j = 0; j < 3; j++)
			h.history[j].b[i] = 16 * j + i + 100;
	}
	return h;
}

/* Every node state has a wire value and comes back from it, through a
 * hello too; a wire value that is no state is Unknown. */
/* KEEPALIVE: type 19, behind its own feature bit, a header with an
 * empty payload and nothing else. */
static void test_keepalive(void **state)
{
	unsigned char h[WIRE_HEADER_SIZE];
	struct wire_header w;

	(void)state;
	assert_int_equal(WIRE_KEEPALIVE, 19);
	assert_string_equal(wire_type_name(WIRE_KEEPALIVE), "KEEPALIVE");
	assert_int_equal(WIRE_FEATURE_KEEPALIVE, 1 << 7);
	assert_int_equal(WIRE_FEATURE_KEEPALIVE &
				 (WIRE_FEATURE_ZSTD | WIRE_FEATURE_HASHTREE | WIRE_FEATURE_PAGES |
				  WIRE_FEATURE_EXTENTS | WIRE_FEATURE_FINE_LEAVES | WIRE_FEATURE_GROW |
				  WIRE_FEATURE_CONTROL),
			 0);

	wire_header_encode(WIRE_KEEPALIVE, 0, h);
	assert_int_equal(wire_header_decode(h, &w), 0);
	assert_int_equal(w.type, WIRE_KEEPALIVE);
	assert_int_equal(w.length, 0);
	assert_int_equal(wire_payload_check(WIRE_KEEPALIVE, buf, 0), 0);
	assert_int_equal(wire_payload_check(WIRE_KEEPALIVE, buf, 1), -EBADMSG);
	assert_int_equal(wire_payload_check(WIRE_KEEPALIVE, buf, 16), -EBADMSG);
}

/* DRIFT: the last type, behind its own bit; a secondary's verify result
 * comes back as it went, and what cannot be true is refused. */
static void test_drift(void **state)
{
	struct wire_drift m = {.state = WIRE_STATE_OUTDATED, .flags = WIRE_DRIFT_VERIFIED,
			       .verify_time = 1700000000, .differing_bytes = 4 << 16,
			       .differing_blocks = 4}, back;
	unsigned char p[64];
	size_t len;

	(void)state;
	assert_int_equal(WIRE_DRIFT, 20);
	assert_true(WIRE_TYPE_MAX >= WIRE_PROOF); /* later types follow */
	assert_string_equal(wire_type_name(WIRE_DRIFT), "DRIFT");
	assert_string_equal(wire_type_name(WIRE_UNDO_INFO), "UNDO_INFO");
	assert_int_equal(WIRE_FEATURE_DRIFT, 1 << 8);
	assert_int_equal(wire_drift_encode(&m, p, sizeof(p), &len), 0);
	assert_int_equal(len, 32);
	assert_int_equal(wire_payload_check(WIRE_DRIFT, p, len), 0);
	assert_int_equal(wire_drift_decode(p, len, &back), 0);
	assert_memory_equal(&m, &back, sizeof(m));
	assert_int_equal(wire_drift_decode(p, len - 1, &back), -EBADMSG);
	assert_int_equal(wire_drift_encode(&m, p, 31, &len), -ENOBUFS);
	m.differing_blocks = m.differing_bytes + 1; /* more blocks than bytes */
	assert_int_equal(wire_drift_encode(&m, p, sizeof(p), &len), -EINVAL);
	m = (struct wire_drift){.state = WIRE_STATE_COUNT};
	assert_int_equal(wire_drift_encode(&m, p, sizeof(p), &len), -EINVAL);
	/* Differences without a verify: refused on the way in. */
	m = (struct wire_drift){.state = WIRE_STATE_UPTODATE};
	assert_int_equal(wire_drift_encode(&m, p, sizeof(p), &len), 0);
	p[16] = 1;
	assert_int_equal(wire_drift_decode(p, len, &back), -EBADMSG);
}

static void test_state_conversion(void **state)
{
	(void)state;
	for (int i = 0; i < META_STATE_COUNT; i++) {
		enum meta_state s = (enum meta_state)i;
		enum wire_state w = wire_state_from_meta(s);
		struct wire_hello h = sample_hello(), d;
		size_t len = 0;

		assert_true(w < WIRE_STATE_COUNT);
		assert_int_equal(meta_state_from_wire(w), s);
		h.state = w;
		assert_int_equal(wire_hello_encode(&h, buf, sizeof(buf), &len), 0);
		assert_int_equal(wire_hello_decode(buf, len, &d), 0);
		assert_int_equal(meta_state_from_wire(d.state), s);
	}
	/* The protocol's values, fixed. */
	assert_int_equal(wire_state_from_meta(META_STATE_UNKNOWN), 0);
	assert_int_equal(wire_state_from_meta(META_STATE_UPTODATE), 1);
	assert_int_equal(wire_state_from_meta(META_STATE_OUTDATED), 2);
	assert_int_equal(wire_state_from_meta(META_STATE_INCONSISTENT), 3);
	assert_int_equal(wire_state_from_meta(META_STATE_DIVERGED), 4);
	assert_string_equal(meta_state_name(meta_state_from_wire(WIRE_STATE_INCONSISTENT)),
			    "Inconsistent");
	assert_int_equal(meta_state_from_wire(WIRE_STATE_COUNT), META_STATE_UNKNOWN);
	assert_int_equal(meta_state_from_wire(99), META_STATE_UNKNOWN);
	assert_int_equal(meta_state_from_wire(UINT32_MAX), META_STATE_UNKNOWN);
	assert_int_equal(wire_state_from_meta(META_STATE_COUNT), WIRE_STATE_UNKNOWN);
	assert_int_equal(wire_state_from_meta((enum meta_state)77), WIRE_STATE_UNKNOWN);
}

static void test_hello(void **state)
{
	struct wire_hello h = sample_hello(), d, e;
	size_t len = 0;
	unsigned char *m = malloc(1024);

	assert_int_equal(wire_hello_encode(&h, buf, sizeof(buf), &len), 0);
	assert_int_equal(len, 56 + 4 + 6 + 3 * 16);
	assert_int_equal(wire_hello_encode(&h, buf, len - 1, &len), -ENOBUFS);
	assert_int_equal(wire_hello_encode(&h, buf, sizeof(buf), &len), 0);
	assert_int_equal(wire_hello_decode(buf, len, &d), 0);
	assert_memory_equal(&h, &d, sizeof(h));
	check_truncations(WIRE_HELLO, buf, len);

	/* Every field out of range. */
#define MUTATE(stmt)                                                                               \
	do {                                                                                       \
		memcpy(m, buf, len);                                                               \
		stmt;                                                                              \
		assert_int_equal(wire_hello_decode(m, len, &d), -EBADMSG);                         \
	} while (0)
	MUTATE(put16(m + 0, 0));			/* proto_min 0 */
	MUTATE(put16(m + 0, 4));			/* min > max */
	MUTATE(put16(m + 4, RESYNC_NAME_MAX + 1));	/* cluster_len */
	MUTATE(put16(m + 4, 5));			/* lengths disagree */
	MUTATE(put16(m + 4, 0));			/* empty cluster name */
	MUTATE(put32(m + 8, 3000));			/* block size */
	MUTATE(put32(m + 8, 2 << 20));			/* block size */
	MUTATE(put32(m + 12, WIRE_STATE_COUNT));	/* state */
	MUTATE(put64(m + 24, (uint64_t)INT64_MAX + 1)); /* volume size */
	MUTATE(put32(m + 32, 1u << 9));			/* unknown flag */
	MUTATE(put32(m + 36, 4));			/* history count */
	MUTATE(put32(m + 36, RESYNC_WIRE_HISTORY_MAX + 1));
	MUTATE(put32(m + 36, UINT32_MAX));
	MUTATE(m[56] = ' ');  /* cluster name character */
	MUTATE(m[60] = 0);    /* node name character */
	MUTATE(m[61] = '\n'); /* node name character */
#undef MUTATE

	/* Full history, longest names. */
	e = h;
	memset(e.cluster, 'c', RESYNC_NAME_MAX);
	memset(e.node, 'n', RESYNC_NAME_MAX);
	e.n_history = RESYNC_WIRE_HISTORY_MAX;
	assert_int_equal(wire_hello_encode(&e, buf, sizeof(buf), &len), 0);
	assert_int_equal(wire_hello_decode(buf, len, &d), 0);
	assert_memory_equal(&e, &d, sizeof(e));

	/* Our own bugs are refused before they travel. */
	e = h;
	e.n_history = RESYNC_WIRE_HISTORY_MAX + 1;
	assert_int_equal(wire_hello_encode(&e, buf, sizeof(buf), &len), -EINVAL);
	e = h;
	strcpy(e.node, "bad name");
	assert_int_equal(wire_hello_encode(&e, buf, sizeof(buf), &len), -EINVAL);
	free(m);
}

static void test_text(void **state)
{
	struct wire_text t = {.code = WIRE_REASON_CLUSTER}, d;
	size_t len = 0;

	strcpy(t.text, "this node belongs to cluster 'demo', not 'other'");
	assert_int_equal(wire_text_encode(&t, buf, sizeof(buf), &len), 0);
	assert_int_equal(wire_text_decode(buf, len, &d), 0);
	assert_int_equal(d.code, WIRE_REASON_CLUSTER);
	assert_string_equal(d.text, t.text);
	check_truncations(WIRE_REFUSE, buf, len);
	check_truncations(WIRE_ERROR, buf, len);

	buf[10] = '\n'; /* a control character: no log injection */
	assert_int_equal(wire_text_decode(buf, len, &d), -EBADMSG);
	buf[10] = 0;
	assert_int_equal(wire_text_decode(buf, len, &d), -EBADMSG);
	assert_false(d.state_said);
	buf[10] = 'i';
	assert_int_equal(wire_text_decode(buf, len, &d), 0);
	assert_false(d.state_said);

	/* WIRE_FEATURE_ERROR_STATE: 1 + the state in the word after
	 * text_len, 0 not said; none past the last state, either way. */
	t.state_said = true;
	t.state = WIRE_STATE_OUTDATED;
	assert_int_equal(wire_text_encode(&t, buf, sizeof(buf), &len), 0);
	assert_int_equal(buf[6], 1 + WIRE_STATE_OUTDATED);
	assert_int_equal(wire_text_decode(buf, len, &d), 0);
	assert_true(d.state_said);
	assert_int_equal(d.state, WIRE_STATE_OUTDATED);
	assert_string_equal(d.text, t.text);
	t.state = WIRE_STATE_UNKNOWN; /* said, and unknown: not "not said" */
	assert_int_equal(wire_text_encode(&t, buf, sizeof(buf), &len), 0);
	assert_int_equal(wire_text_decode(buf, len, &d), 0);
	assert_true(d.state_said);
	assert_int_equal(d.state, WIRE_STATE_UNKNOWN);
	put16(buf + 6, WIRE_STATE_COUNT);
	assert_int_equal(wire_text_decode(buf, len, &d), 0);
	assert_int_equal(d.state, WIRE_STATE_COUNT - 1);
	put16(buf + 6, WIRE_STATE_COUNT + 1);
	assert_int_equal(wire_text_decode(buf, len, &d), -EBADMSG);
	put16(buf + 6, 0xffff);
	assert_int_equal(wire_text_decode(buf, len, &d), -EBADMSG);
	t.state = WIRE_STATE_COUNT;
	assert_int_equal(wire_text_encode(&t, buf, sizeof(buf), &len), -EINVAL);
	t.state_said = false;
	t.state = WIRE_STATE_UNKNOWN;

	/* Empty and longest texts; one more is refused both ways. */
	t.text[0] = 0;
	assert_int_equal(wire_text_encode(&t, buf, sizeof(buf), &len), 0);
	assert_int_equal(len, 8);
	assert_int_equal(wire_text_decode(buf, len, &d), 0);
	memset(t.text, 'x', RESYNC_WIRE_TEXT_MAX);
	t.text[RESYNC_WIRE_TEXT_MAX] = 0;
	assert_int_equal(wire_text_encode(&t, buf, sizeof(buf), &len), 0);
	assert_int_equal(wire_text_decode(buf, len, &d), 0);
	memset(buf + 8, 'x', 1);
	put16(buf + 4, RESYNC_WIRE_TEXT_MAX + 1);
	assert_int_equal(wire_text_decode(buf, len + 1, &d), -EBADMSG);

	assert_string_equal(wire_reason_name(WIRE_REASON_VOLUME_SIZE), "volume sizes differ");
	assert_string_equal(wire_reason_name(12345), "other");
}

static void test_hash_messages(void **state)
{
	struct hashtree_range r[3] = {{0, 1}, {64, 64}, {1ull << 40, 7}}, g;
	struct wire_hash_req q;
	struct wire_hash_reply rep;
	struct hash128 h[5] = {{1, 2}, {3, 4}, {5, 6}, {UINT64_MAX, 0}, {0, UINT64_MAX}}, o[5];
	size_t len = 0;

	assert_int_equal(wire_hash_req_encode(0xfeed, 3, 64, 0, r, 3, buf, sizeof(buf), &len), 0);
	assert_int_equal(len, 16 + 3 * 16);
	assert_int_equal(wire_hash_req_decode(buf, len, &q), 0);
	assert_int_equal(q.seed, 0xfeed);
	assert_int_equal(q.level, 3);
	assert_int_equal(q.fanout, 64);
	assert_int_equal(q.leaf_size, 0);
	assert_int_equal(q.n_ranges, 3);
	assert_int_equal(q.n_hashes, 72);
	for (int i = 0; i < 3; i++) {
		g = wire_hash_req_range(&q, i);
		assert_int_equal(g.first, r[i].first);
		assert_int_equal(g.count, r[i].count);
	}
	check_truncations(WIRE_HASH_REQ, buf, len);
	put16(buf + 10, 1); /* fanout */
	assert_int_equal(wire_hash_req_decode(buf, len, &q), -EBADMSG);
	put16(buf + 10, RESYNC_HASHTREE_FANOUT_MAX + 1);
	assert_int_equal(wire_hash_req_decode(buf, len, &q), -EBADMSG);
	put16(buf + 10, 64);
	put64(buf + 16 + 8, 0); /* a range of no nodes */
	assert_int_equal(wire_hash_req_decode(buf, len, &q), -EBADMSG);
	put64(buf + 16 + 8, RESYNC_WIRE_HASHES_MAX); /* total over the limit */
	assert_int_equal(wire_hash_req_decode(buf, len, &q), -EBADMSG);
	put64(buf + 16 + 8, 1);
	put64(buf + 16, UINT64_MAX); /* first + count overflows */
	assert_int_equal(wire_hash_req_decode(buf, len, &q), -EBADMSG);
	put64(buf + 16, 0);
	put32(buf + 12, 0); /* no ranges */
	assert_int_equal(wire_hash_req_decode(buf, 16, &q), -EBADMSG);
	put32(buf + 12, RESYNC_WIRE_RANGES_MAX + 1);
	assert_int_equal(wire_hash_req_decode(buf, 16 + 16 * (RESYNC_WIRE_RANGES_MAX + 1), &q),
			 -EBADMSG);
	assert_int_equal(wire_hash_req_encode(1, 0, 64, 0, r, 0, buf, sizeof(buf), &len), -EINVAL);
	assert_int_equal(wire_hash_req_encode(1, 0, 64, 0, r, 3, buf, 40, &len), -ENOBUFS);

	/* With a leaf size (WIRE_FEATURE_FINE_LEAVES): 8 bytes after the
	 * ranges, a valid block size, the reserved word zero. */
	assert_int_equal(wire_hash_req_encode(7, 1, 16, 4096, r, 3, buf, sizeof(buf), &len), 0);
	assert_int_equal(len, 16 + 3 * 16 + 8);
	assert_int_equal(wire_hash_req_decode(buf, len, &q), 0);
	assert_int_equal(q.leaf_size, 4096);
	assert_int_equal(q.fanout, 16);
	assert_int_equal(q.n_ranges, 3);
	assert_int_equal(q.n_hashes, 72);
	g = wire_hash_req_range(&q, 2);
	assert_int_equal(g.first, r[2].first);
	/* Every prefix fails but one: without its 8 bytes it is the request
	 * over blocks (frames are length-delimited: a peer cannot cut it). */
	for (size_t l = 0; l < len; l++)
		assert_int_equal(wire_payload_check(WIRE_HASH_REQ, buf, l),
				 l == len - 8 ? 0 : -EBADMSG);
	put32(buf + len - 8, 6000); /* not a power of two */
	assert_int_equal(wire_hash_req_decode(buf, len, &q), -EBADMSG);
	put32(buf + len - 8, RESYNC_BLOCK_MAX * 2);
	assert_int_equal(wire_hash_req_decode(buf, len, &q), -EBADMSG);
	put32(buf + len - 8, 0);
	assert_int_equal(wire_hash_req_decode(buf, len, &q), -EBADMSG);
	put32(buf + len - 8, 8192);
	put32(buf + len - 4, 1); /* reserved */
	assert_int_equal(wire_hash_req_decode(buf, len, &q), -EBADMSG);
	put32(buf + len - 4, 0);
	assert_int_equal(wire_hash_req_decode(buf, len, &q), 0);
	assert_int_equal(q.leaf_size, 8192);
	assert_int_equal(wire_hash_req_decode(buf, len - 4, &q), -EBADMSG);
	assert_int_equal(wire_hash_req_encode(1, 0, 64, 12288, r, 3, buf, sizeof(buf), &len),
			 -EINVAL);
	assert_int_equal(wire_hash_req_encode(1, 0, 64, 4096, r, 3, buf, 16 + 3 * 16 + 4, &len),
			 -ENOBUFS);

	assert_int_equal(wire_hash_reply_encode(2, h, 5, buf, sizeof(buf), &len), 0);
	assert_int_equal(len, 8 + 5 * 16);
	assert_int_equal(wire_hash_reply_decode(buf, len, &rep), 0);
	assert_int_equal(rep.level, 2);
	assert_int_equal(rep.n_hashes, 5);
	assert_int_equal(wire_hash_reply_get(&rep, o, 4), -ENOBUFS);
	assert_int_equal(wire_hash_reply_get(&rep, o, 5), 0);
	assert_memory_equal(o, h, sizeof(h));
	check_truncations(WIRE_HASH_REPLY, buf, len);
	put32(buf + 4, RESYNC_WIRE_HASHES_MAX + 1);
	assert_int_equal(wire_hash_reply_decode(buf, 8 + 16 * (RESYNC_WIRE_HASHES_MAX + 1), &rep),
			 -EBADMSG);
	put32(buf + 4, 5);
	put16(buf + 2, 1); /* reserved */
	assert_int_equal(wire_hash_reply_decode(buf, len, &rep), -EBADMSG);
	assert_int_equal(wire_hash_reply_encode(0, h, 0, buf, sizeof(buf), &len), 0);
	assert_int_equal(wire_hash_reply_decode(buf, len, &rep), 0);
}

/* The hash tree walk carried by HASH_REQ and HASH_REPLY. */
static void test_hashtree_over_wire(void **state)
{
	enum { N = 50000 };
	struct hash128 *a = malloc(N * sizeof(*a)), *b = malloc(N * sizeof(*b));
	struct hash128 *got = malloc(RESYNC_WIRE_HASHES_MAX * sizeof(*got));
	struct hashtree_range *rr = malloc(RESYNC_WIRE_RANGES_MAX * sizeof(*rr));
	struct hashtree *ta = NULL, *tb = NULL;
	struct hashtree_diff *d = NULL;
	struct hashtree_step step;
	const uint64_t *leaves;
	uint64_t st = 5;
	size_t n;
	int r;

	for (int i = 0; i < N; i++)
		a[i] = b[i] = (struct hash128){testlib_rand(&st), testlib_rand(&st)};
	b[0].lo++;
	b[777].hi++;
	b[N - 1].lo++;
	assert_int_equal(hashtree_new(a, N, 64, 1234, &ta), 0);
	assert_int_equal(hashtree_new(b, N, 64, 1234, &tb), 0);
	assert_int_equal(hashtree_diff_new(ta, 0, 0, &d), 0);
	while ((r = hashtree_diff_next(d, &step)) == 1) {
		struct wire_hash_req q;
		struct wire_hash_reply rep;
		size_t len, k;

		/* Primary asks... */
		assert_int_equal(wire_hash_req_encode(1234, step.level, 64, 0, step.ranges,
						      step.n_ranges, buf, sizeof(buf), &len),
				 0);
		/* ... secondary answers from its tree ... */
		assert_int_equal(wire_hash_req_decode(buf, len, &q), 0);
		for (size_t i = 0; i < q.n_ranges; i++)
			rr[i] = wire_hash_req_range(&q, i);
		assert_int_equal(hashtree_get(tb, q.level, rr, q.n_ranges, got,
					      RESYNC_WIRE_HASHES_MAX, &k),
				 0);
		assert_int_equal(k, q.n_hashes);
		assert_int_equal(wire_hash_reply_encode(q.level, got, k, buf, sizeof(buf), &len), 0);
		/* ... primary compares. */
		assert_int_equal(wire_hash_reply_decode(buf, len, &rep), 0);
		assert_int_equal(rep.level, step.level);
		assert_int_equal(wire_hash_reply_get(&rep, got, RESYNC_WIRE_HASHES_MAX), 0);
		assert_int_equal(hashtree_diff_feed(d, got, rep.n_hashes), 0);
	}
	assert_int_equal(r, 0);
	leaves = hashtree_diff_leaves(d, &n);
	assert_int_equal(n, 3);
	assert_int_equal(leaves[0], 0);
	assert_int_equal(leaves[1], 777);
	assert_int_equal(leaves[2], N - 1);
	assert_true(hashtree_diff_hashes(d) <= 1 + 3 * 64 * 3);
	hashtree_diff_free(d);
	hashtree_free(ta);
	hashtree_free(tb);
	free(a);
	free(b);
	free(got);
	free(rr);
}

static void test_offset_commit(void **state)
{
	struct wire_uuid g = {{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}}, h;
	uint64_t off = 0;
	size_t len = 0;

	assert_int_equal(wire_offset_encode(123456789, buf, sizeof(buf), &len), 0);
	assert_int_equal(wire_offset_decode(buf, len, &off), 0);
	assert_int_equal(off, 123456789);
	check_truncations(WIRE_ACK, buf, len);
	check_truncations(WIRE_CHECKPOINT, buf, len);
	put64(buf, (uint64_t)INT64_MAX + 1);
	assert_int_equal(wire_offset_decode(buf, len, &off), -EBADMSG);
	assert_int_equal(wire_offset_encode(UINT64_MAX, buf, sizeof(buf), &len), -EINVAL);

	assert_int_equal(wire_commit_encode(&g, buf, sizeof(buf), &len), 0);
	assert_int_equal(len, 16);
	assert_int_equal(wire_commit_decode(buf, len, &h), 0);
	assert_memory_equal(&g, &h, 16);
	check_truncations(WIRE_COMMIT, buf, len);
	assert_int_equal(wire_commit_encode(&g, buf, 15, &len), -ENOBUFS);
}

static void test_status_bitmap(void **state)
{
	struct wire_status st = {.dirty_bytes = 1 << 20, .last_resync = 1700000000,
				 .checkpoint_off = 16 << 20, .flags = WIRE_STATUS_CHECKPOINT,
				 .checkpoint_id = {{9, 8, 7}}}, got;
	unsigned char bm[100];
	struct wire_bitmap b;
	size_t len = 0;

	assert_int_equal(wire_status_encode(&st, buf, sizeof(buf), &len), 0);
	assert_int_equal(len, 48);
	assert_int_equal(wire_status_decode(buf, len, &got), 0);
	assert_int_equal(got.dirty_bytes, st.dirty_bytes);
	assert_int_equal(got.last_resync, st.last_resync);
	assert_int_equal(got.checkpoint_off, st.checkpoint_off);
	assert_int_equal(got.flags, st.flags);
	assert_memory_equal(got.checkpoint_id.b, st.checkpoint_id.b, 16);
	check_truncations(WIRE_STATUS, buf, len);
	put32(buf + 24, 1u << 7); /* an unknown flag */
	assert_int_equal(wire_status_decode(buf, len, &got), -EBADMSG);
	st.flags = 1u << 7;
	assert_int_equal(wire_status_encode(&st, buf, sizeof(buf), &len), -EINVAL);
	assert_int_equal(wire_payload_check(WIRE_STATUS_REQ, buf, 0), 0);
	assert_int_equal(wire_payload_check(WIRE_STATUS_REQ, buf, 1), -EBADMSG);

	for (size_t i = 0; i < sizeof(bm); i++)
		bm[i] = (unsigned char)(i * 37);
	assert_int_equal(wire_bitmap_encode(40, 140, bm, sizeof(bm), buf, sizeof(buf), &len), 0);
	assert_int_equal(len, 24 + sizeof(bm));
	assert_int_equal(wire_bitmap_decode(buf, len, &b), 0);
	assert_int_equal(b.offset, 40);
	assert_int_equal(b.total, 140);
	assert_int_equal(b.len, sizeof(bm));
	assert_memory_equal(b.data, bm, sizeof(bm));
	check_truncations(WIRE_BITMAP, buf, len);
	/* A piece past the bitmap's end, or a bitmap over the limit. */
	put64(buf + 8, 139);
	assert_int_equal(wire_bitmap_decode(buf, len, &b), -EBADMSG);
	put64(buf + 8, (uint64_t)RESYNC_META_BITMAP_MAX + 1);
	assert_int_equal(wire_bitmap_decode(buf, len, &b), -EBADMSG);
	assert_int_equal(wire_bitmap_encode(41, 140, bm, sizeof(bm), buf, sizeof(buf), &len),
			 -EINVAL);
	assert_int_equal(wire_bitmap_encode(0, 140, bm, sizeof(bm), buf, 50, &len), -ENOBUFS);
}

/* PAGE_REQ (protocol 2): byte ranges on page boundaries; refused when a
 * range is empty, off a page boundary, overflows, or the pages of all
 * ranges exceed RESYNC_WIRE_HASHES_MAX; PAGE_REPLY is a HASH_REPLY. */
static void test_page_messages(void **state)
{
	struct hashtree_range r[3] = {{0, 65536}, {1ull << 30, 4096 + 100}, {5ull << 32, 4096}}, g;
	struct hashtree_range big = {0, (uint64_t)RESYNC_WIRE_HASHES_MAX * 4096};
	struct wire_page_req q;
	struct wire_hash_reply rep;
	struct hash128 h[2] = {{1, 2}, {3, 4}};
	size_t len = 0;

	(void)state;
	assert_int_equal(wire_pages(0, 4096), 0);
	assert_int_equal(wire_pages(1, 4096), 1);
	assert_int_equal(wire_pages(8192, 4096), 2);
	assert_int_equal(wire_pages(8193, 4096), 3);
	assert_int_equal(wire_page_req_encode(0xbeef, 4096, r, 3, buf, sizeof(buf), &len), 0);
	assert_int_equal(len, 16 + 3 * 16);
	assert_int_equal(wire_page_req_decode(buf, len, &q), 0);
	assert_int_equal(q.seed, 0xbeef);
	assert_int_equal(q.page_size, 4096);
	assert_int_equal(q.n_ranges, 3);
	assert_int_equal(q.n_pages, 16 + 2 + 1);
	for (int i = 0; i < 3; i++) {
		g = wire_page_req_range(&q, i);
		assert_int_equal(g.first, r[i].first);
		assert_int_equal(g.count, r[i].count);
	}
	check_truncations(WIRE_PAGE_REQ, buf, len);
	put32(buf + 8, 3000); /* not a power of two */
	assert_int_equal(wire_page_req_decode(buf, len, &q), -EBADMSG);
	put32(buf + 8, 2048); /* below the smallest block */
	assert_int_equal(wire_page_req_decode(buf, len, &q), -EBADMSG);
	put32(buf + 8, 2u << 20); /* above the largest */
	assert_int_equal(wire_page_req_decode(buf, len, &q), -EBADMSG);
	put32(buf + 8, 4096);
	put64(buf + 16, 100); /* off a page boundary */
	assert_int_equal(wire_page_req_decode(buf, len, &q), -EBADMSG);
	put64(buf + 16, 0);
	put64(buf + 16 + 8, 0); /* empty */
	assert_int_equal(wire_page_req_decode(buf, len, &q), -EBADMSG);
	put64(buf + 16 + 8, (uint64_t)RESYNC_WIRE_HASHES_MAX * 4096); /* total over the limit */
	assert_int_equal(wire_page_req_decode(buf, len, &q), -EBADMSG);
	put64(buf + 16 + 8, UINT64_MAX); /* pages counted before the sum */
	assert_int_equal(wire_page_req_decode(buf, len, &q), -EBADMSG);
	put64(buf + 16 + 8, 4096);
	put64(buf + 16, (uint64_t)INT64_MAX & ~4095ull); /* past the largest offset */
	assert_int_equal(wire_page_req_decode(buf, len, &q), -EBADMSG);
	put64(buf + 16, 0);
	assert_int_equal(wire_page_req_decode(buf, len, &q), 0);
	put32(buf + 12, 0); /* no ranges */
	assert_int_equal(wire_page_req_decode(buf, 16, &q), -EBADMSG);
	put32(buf + 12, RESYNC_WIRE_RANGES_MAX + 1);
	assert_int_equal(wire_page_req_decode(buf, 16 + 16 * (RESYNC_WIRE_RANGES_MAX + 1), &q),
			 -EBADMSG);
	/* Exactly the limit of pages is accepted; one more range is not. */
	assert_int_equal(wire_page_req_encode(1, 4096, &big, 1, buf, sizeof(buf), &len), 0);
	assert_int_equal(wire_page_req_decode(buf, len, &q), 0);
	assert_int_equal(q.n_pages, RESYNC_WIRE_HASHES_MAX);
	r[0] = big;
	assert_int_equal(wire_page_req_encode(1, 4096, r, 2, buf, sizeof(buf), &len), -EINVAL);
	r[0] = (struct hashtree_range){4095, 4096};
	assert_int_equal(wire_page_req_encode(1, 4096, r, 1, buf, sizeof(buf), &len), -EINVAL);
	assert_int_equal(wire_page_req_encode(1, 4096, r, 0, buf, sizeof(buf), &len), -EINVAL);
	assert_int_equal(wire_page_req_encode(1, 3000, &big, 1, buf, sizeof(buf), &len), -EINVAL);
	assert_int_equal(wire_page_req_encode(1, 4096, &big, 1, buf, 20, &len), -ENOBUFS);

	assert_int_equal(wire_hash_reply_encode(0, h, 2, buf, sizeof(buf), &len), 0);
	assert_int_equal(wire_payload_check(WIRE_PAGE_REPLY, buf, len), 0);
	assert_int_equal(wire_hash_reply_decode(buf, len, &rep), 0);
	assert_int_equal(rep.n_hashes, 2);
	check_truncations(WIRE_PAGE_REPLY, buf, len);
	assert_string_equal(wire_type_name(WIRE_PAGE_REQ), "PAGE_REQ");
	assert_string_equal(wire_type_name(WIRE_PAGE_REPLY), "PAGE_REPLY");
}

/* Random bytes of every type and length: refused or valid, never a crash
 * (the sanitizer build watches). Valid ones must round-trip. */
static void test_garbage(void **state)
{
	uint64_t st = 77;
	unsigned accepted = 0;

	for (unsigned iter = 0; iter < 200000; iter++) {
		unsigned type = testlib_rand_below(&st, WIRE_TYPE_MAX + 2);
		size_t len = testlib_rand_below(&st, 160);
		unsigned char p[160];

		testlib_fill(p, len, testlib_rand(&st));
		/* Plausible headers now and then, so the deep checks run. */
		if (len >= 8 && testlib_rand_below(&st, 2)) {
			if (type == WIRE_HASH_REPLY || type == WIRE_PAGE_REPLY)
				put32(p + 4, (len - 8) / 16);
			if (type == WIRE_PAGE_REQ && len >= 32) {
				put32(p + 12, (len - 16) / 16);
				put32(p + 8, 4096);
			}
			if (type == WIRE_HASH_REQ && len >= 32) {
				put32(p + 12, (len - 16) / 16);
				put16(p + 10, 64);
			}
			if (type == WIRE_REFUSE || type == WIRE_ERROR)
				put32(p + 4, len - 8);
		}
		if (wire_payload_check(type, p, len) == 0)
			accepted++;
		else
			assert_int_equal(wire_payload_check(type, p, len), -EBADMSG);
	}
	print_message("%u of 200000 garbage payloads were valid messages\n", accepted);
}

/* PROOF_REQ and PROOF: the last types, behind their own bit; a root
 * comes back as it went; an unknown hash or a bad block size is refused. */
static void test_proof(void **state)
{
	struct wire_proof m = {.hash = 1, .block_size = 65536, .volume_size = 1 << 30,
			       .hashed = 3, .root = {1, 2, 3}}, back;
	unsigned char p[64];
	size_t len;

	(void)state;
	assert_int_equal(WIRE_PROOF_REQ, 25);
	assert_int_equal(WIRE_PROOF, 26);
	assert_true(WIRE_TYPE_MAX >= WIRE_PROOF); /* later types follow */
	assert_string_equal(wire_type_name(WIRE_PROOF), "PROOF");
	assert_int_equal(WIRE_FEATURE_PROOF, 1 << 9);
	assert_int_equal(wire_proof_encode(&m, p, sizeof(p), &len), 0);
	assert_int_equal(len, 56);
	assert_int_equal(wire_payload_check(WIRE_PROOF, p, len), 0);
	assert_int_equal(wire_payload_check(WIRE_PROOF_REQ, p, len), 0);
	assert_int_equal(wire_proof_decode(p, len, &back), 0);
	assert_memory_equal(&m, &back, sizeof(m));
	assert_int_equal(wire_proof_decode(p, len - 1, &back), -EBADMSG);
	p[0] = 7; /* no such hash */
	assert_int_equal(wire_proof_decode(p, len, &back), -EBADMSG);
	m.block_size = 3000;
	assert_int_equal(wire_proof_encode(&m, p, sizeof(p), &len), -EINVAL);
}

/* PROOF_COMMIT: a PROOF's payload and a COMMIT's, both checked. */
static void test_proof_commit(void **state)
{
	struct wire_proof m = {.hash = 0, .block_size = 65536, .volume_size = 1 << 20}, back;
	struct wire_uuid g = {{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}}, gb;
	unsigned char p[128];
	size_t len;

	(void)state;
	memset(m.root, 0xab, 16);
	assert_int_equal(WIRE_PROOF_COMMIT, 27);
	assert_string_equal(wire_type_name(WIRE_PROOF_COMMIT), "PROOF_COMMIT");
	assert_int_equal(WIRE_FEATURE_PROOF_COMMIT, 1 << 10);
	assert_int_equal(wire_proof_commit_encode(&m, &g, p, sizeof(p), &len), 0);
	assert_int_equal(len, 56 + 16);
	assert_int_equal(wire_payload_check(WIRE_PROOF_COMMIT, p, len), 0);
	assert_int_equal(wire_proof_commit_decode(p, len, &back, &gb), 0);
	assert_memory_equal(&m, &back, sizeof(m));
	assert_memory_equal(g.b, gb.b, 16);
	/* Short, long, and a PROOF of no known hash: refused. */
	assert_int_equal(wire_proof_commit_decode(p, len - 1, &back, &gb), -EBADMSG);
	assert_int_equal(wire_proof_commit_decode(p, 56, &back, &gb), -EBADMSG);
	assert_int_equal(wire_payload_check(WIRE_PROOF_COMMIT, p, len + 1), -EBADMSG);
	p[0] = 7;
	assert_int_equal(wire_proof_commit_decode(p, len, &back, &gb), -EBADMSG);
	assert_int_equal(wire_proof_commit_encode(&m, &g, p, 60, &len), -ENOBUFS);
}

/* HASH_REQ_IF: two generations, then a HASH_REQ's payload, with or
 * without a leaf size; hostile and truncated ones refused. HASH_IF_ACK:
 * 0 or 1, its reserved word zero, exactly 8 bytes. */
static void test_hash_req_if(void **state)
{
	struct hashtree_range r[2] = {{0, 8192}, {9000, 16}}, g;
	struct wire_uuid gen, base, none = {{0}};
	struct wire_hash_req_if q;
	bool answered = false;
	size_t len = 0;

	(void)state;
	memset(gen.b, 0xa1, 16);
	memset(base.b, 0xb2, 16);
	assert_int_equal(wire_hash_req_if_encode(&gen, &base, 0x5eed, 1, 16, 0, r, 2, buf,
						 sizeof(buf), &len), 0);
	assert_int_equal(len, 32 + 16 + 2 * 16);
	check_truncations(WIRE_HASH_REQ_IF, buf, len);
	assert_int_equal(wire_hash_req_if_decode(buf, len, &q), 0);
	assert_memory_equal(q.gen.b, gen.b, 16);
	assert_memory_equal(q.base.b, base.b, 16);
	assert_int_equal(q.req.seed, 0x5eed);
	assert_int_equal(q.req.level, 1);
	assert_int_equal(q.req.fanout, 16);
	assert_int_equal(q.req.leaf_size, 0);
	assert_int_equal(q.req.n_ranges, 2);
	assert_int_equal(q.req.n_hashes, 8192 + 16);
	g = wire_hash_req_range(&q.req, 1);
	assert_int_equal(g.first, 9000);
	assert_int_equal(g.count, 16);
	/* The request inside is checked as a HASH_REQ is. */
	put16(buf + 32 + 10, 1); /* fanout */
	assert_int_equal(wire_hash_req_if_decode(buf, len, &q), -EBADMSG);
	assert_int_equal(wire_payload_check(WIRE_HASH_REQ_IF, buf, len), -EBADMSG);
	put16(buf + 32 + 10, 16);
	put64(buf + 32 + 16 + 8, 0); /* a range of no nodes */
	assert_int_equal(wire_hash_req_if_decode(buf, len, &q), -EBADMSG);
	put64(buf + 32 + 16 + 8, 8192);
	put32(buf + 32 + 12, 3); /* more ranges than the payload holds */
	assert_int_equal(wire_hash_req_if_decode(buf, len, &q), -EBADMSG);
	/* Generations alone, or less. */
	assert_int_equal(wire_hash_req_if_decode(buf, 32, &q), -EBADMSG);
	assert_int_equal(wire_hash_req_if_decode(buf, 31, &q), -EBADMSG);
	assert_int_equal(wire_hash_req_if_decode(buf, 0, &q), -EBADMSG);

	/* With a leaf size and no base. */
	assert_int_equal(wire_hash_req_if_encode(&gen, &none, 9, 2, 16, 4096, r, 1, buf,
						 sizeof(buf), &len), 0);
	assert_int_equal(len, 32 + 16 + 16 + 8);
	assert_int_equal(wire_payload_check(WIRE_HASH_REQ_IF, buf, len), 0);
	assert_int_equal(wire_hash_req_if_decode(buf, len, &q), 0);
	assert_int_equal(q.req.leaf_size, 4096);
	assert_memory_equal(q.base.b, none.b, 16);
	put32(buf + len - 4, 1); /* the leaf's reserved word */
	assert_int_equal(wire_hash_req_if_decode(buf, len, &q), -EBADMSG);
	put32(buf + len - 4, 0);
	put32(buf + len - 8, 3000); /* not a block size */
	assert_int_equal(wire_hash_req_if_decode(buf, len, &q), -EBADMSG);
	for (size_t l = 33; l < len - 8; l++)
		assert_int_equal(wire_hash_req_if_decode(buf, l, &q), -EBADMSG);
	/* Encoding: too small a buffer, no ranges, a bad fanout. */
	assert_int_equal(wire_hash_req_if_encode(&gen, &base, 9, 2, 16, 0, r, 1, buf, 31, &len),
			 -ENOBUFS);
	assert_int_equal(wire_hash_req_if_encode(&gen, &base, 9, 2, 16, 0, r, 1, buf, 40, &len),
			 -ENOBUFS);
	assert_int_equal(wire_hash_req_if_encode(&gen, &base, 9, 2, 16, 0, r, 0, buf,
						 sizeof(buf), &len), -EINVAL);
	assert_int_equal(wire_hash_req_if_encode(&gen, &base, 9, 2, 1, 0, r, 1, buf,
						 sizeof(buf), &len), -EINVAL);

	assert_int_equal(wire_hash_if_ack_encode(true, buf, sizeof(buf), &len), 0);
	assert_int_equal(len, 8);
	check_truncations(WIRE_HASH_IF_ACK, buf, len);
	assert_int_equal(wire_hash_if_ack_decode(buf, len, &answered), 0);
	assert_true(answered);
	assert_int_equal(wire_hash_if_ack_encode(false, buf, sizeof(buf), &len), 0);
	assert_int_equal(wire_hash_if_ack_decode(buf, len, &answered), 0);
	assert_false(answered);
	put32(buf, 2);
	assert_int_equal(wire_hash_if_ack_decode(buf, len, &answered), -EBADMSG);
	put32(buf, 1);
	put32(buf + 4, 1);
	assert_int_equal(wire_hash_if_ack_decode(buf, len, &answered), -EBADMSG);
	assert_int_equal(wire_hash_if_ack_encode(true, buf, 7, &len), -ENOBUFS);
	assert_string_equal(wire_type_name(WIRE_HASH_REQ_IF), "HASH_REQ_IF");
	assert_string_equal(wire_type_name(WIRE_HASH_IF_ACK), "HASH_IF_ACK");
	assert_string_equal(wire_type_name(WIRE_HASH_REQ_MORE), "HASH_REQ_MORE");
	assert_int_equal(WIRE_TYPE_MAX, WIRE_HASH_REQ_MORE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_header),
		cmocka_unit_test(test_names_versions),
		cmocka_unit_test(test_hello),
		cmocka_unit_test(test_text),
		cmocka_unit_test(test_hash_messages),
		cmocka_unit_test(test_hash_req_if),
		cmocka_unit_test(test_page_messages),
		cmocka_unit_test(test_hashtree_over_wire),
		cmocka_unit_test(test_offset_commit),
		cmocka_unit_test(test_status_bitmap),
		cmocka_unit_test(test_keepalive),
		cmocka_unit_test(test_drift),
		cmocka_unit_test(test_proof),
		cmocka_unit_test(test_proof_commit),
		cmocka_unit_test(test_state_conversion),
		cmocka_unit_test(test_garbage),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
