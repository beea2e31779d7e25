/* Fuzz target for the wire format: the input is a stream of frames (header
 * and payload) as a peer would send them. Every frame is decoded; what
 * decodes must encode back to the same bytes, and BLOCKS and EXTENTS data
 * must unpack to exactly its declared length or be refused. Built as a libFuzzer target,
 * and otherwise with fuzz-replay.c as a replayer of its corpus. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "wire.h"

static unsigned char out[RESYNC_WIRE_FRAME_MAX];
static unsigned char raw[RESYNC_WIRE_BLOCKS_MAX];

#define CHECK(cond) FUZZ_CHECK(cond)

/* Each message type's check: decode, encode back, same bytes. Called only
 * with a payload that wire_payload_check() accepted. */
typedef void roundtrip_fn(struct wire_zstd *z, const uint8_t *p, size_t len);

/* n by address: it is read after the encoder (an argument) has run. */
static void same_bytes(int r, const size_t *n, const uint8_t *p, size_t len)
{
	CHECK(r == 0);
	CHECK(*n == len && !memcmp(out, p, len));
}

static void hello_roundtrip(struct wire_zstd *z, const uint8_t *p, size_t len)
{
	struct wire_hello h;
	size_t n = 0;

	(void)z;
	CHECK(wire_hello_decode(p, len, &h) == 0);
	same_bytes(wire_hello_encode(&h, out, sizeof(out), &n), &n, p, len);
}

static void text_roundtrip(struct wire_zstd *z, const uint8_t *p, size_t len)
{
	struct wire_text t;
	size_t n = 0;

	(void)z;
	CHECK(wire_text_decode(p, len, &t) == 0);
	same_bytes(wire_text_encode(&t, out, sizeof(out), &n), &n, p, len);
}

static void hash_req_roundtrip(struct wire_zstd *z, const uint8_t *p, size_t len)
{
	static struct hashtree_range rr[RESYNC_WIRE_RANGES_MAX];
	struct wire_hash_req q;
	uint64_t total = 0;
	size_t n = 0;

	(void)z;
	CHECK(wire_hash_req_decode(p, len, &q) == 0);
	for (uint32_t i = 0; i < q.n_ranges; i++) {
		rr[i] = wire_hash_req_range(&q, i);
		total += rr[i].count;
	}
	CHECK(total == q.n_hashes && total <= RESYNC_WIRE_HASHES_MAX);
	same_bytes(
	    wire_hash_req_encode(q.seed, q.level, q.fanout, q.leaf_size, rr, q.n_ranges, out,
				 sizeof(out), &n),
	    &n, p, len);
}

static void hash_req_if_roundtrip(struct wire_zstd *z, const uint8_t *p, size_t len)
{
	static struct hashtree_range rr[RESYNC_WIRE_RANGES_MAX];
	struct wire_hash_req_if q;
	size_t n = 0;

	(void)z;
	CHECK(wire_hash_req_if_decode(p, len, &q) == 0);
	for (uint32_t i = 0; i < q.req.n_ranges; i++)
		rr[i] = wire_hash_req_range(&q.req, i);
	same_bytes(wire_hash_req_if_encode(&q.gen, &q.base, q.req.seed, q.req.level, q.req.fanout,
					   q.req.leaf_size, rr, q.req.n_ranges, out, sizeof(out),
					   &n),
		   &n, p, len);
}

static void hash_if_ack_roundtrip(struct wire_zstd *z, const uint8_t *p, size_t len)
{
	bool answered;
	size_t n = 0;

	(void)z;
	CHECK(wire_hash_if_ack_decode(p, len, &answered) == 0);
	same_bytes(wire_hash_if_ack_encode(answered, out, sizeof(out), &n), &n, p, len);
}

/* HASH_REPLY and PAGE_REPLY share a layout. */
static void hash_reply_roundtrip(struct wire_zstd *z, const uint8_t *p, size_t len)
{
	static struct hash128 h[RESYNC_WIRE_HASHES_MAX];
	struct wire_hash_reply rep;
	size_t n = 0;

	(void)z;
	CHECK(wire_hash_reply_decode(p, len, &rep) == 0);
	CHECK(wire_hash_reply_get(&rep, h, RESYNC_WIRE_HASHES_MAX) == 0);
	same_bytes(wire_hash_reply_encode(rep.level, h, rep.n_hashes, out, sizeof(out), &n), &n, p,
		   len);
}

static void page_req_roundtrip(struct wire_zstd *z, const uint8_t *p, size_t len)
{
	static struct hashtree_range rr[RESYNC_WIRE_RANGES_MAX];
	struct wire_page_req q;
	uint64_t total = 0;
	size_t n = 0;

	(void)z;
	CHECK(wire_page_req_decode(p, len, &q) == 0);
	for (uint32_t i = 0; i < q.n_ranges; i++) {
		rr[i] = wire_page_req_range(&q, i);
		CHECK(rr[i].count > 0 && rr[i].first % q.page_size == 0);
		total += wire_pages(rr[i].count, q.page_size);
	}
	CHECK(total == q.n_pages && total <= RESYNC_WIRE_HASHES_MAX);
	same_bytes(wire_page_req_encode(q.seed, q.page_size, rr, q.n_ranges, out, sizeof(out), &n),
		   &n, p, len);
}

/* BLOCKS: zstd output is not canonical, so the check is that the data
 * unpacks to exactly its declared length or is refused. */
static void blocks_roundtrip(struct wire_zstd *z, const uint8_t *p, size_t len)
{
	struct wire_blocks b;
	int r;

	CHECK(wire_blocks_decode(p, len, &b) == 0);
	CHECK(b.raw_len >= 1 && b.raw_len <= RESYNC_WIRE_BLOCKS_MAX);
	r = wire_blocks_unpack(z, &b, raw, sizeof(raw));
	CHECK(r == (int)b.raw_len || (r == -EBADMSG && b.encoding == WIRE_ENC_ZSTD));
}

/* EXTENTS: the table is sorted, not overlapping and sums to raw_len; the
 * data unpacks to exactly raw_len or is refused (zstd); what unpacks
 * encodes back raw to a message that decodes to the same table, the same
 * bytes when it was raw. */
static void extents_roundtrip(struct wire_zstd *z, const uint8_t *p, size_t len)
{
	static struct wire_extent ext[RESYNC_WIRE_EXTENTS_MAX];
	struct wire_extents x, y;
	uint64_t end = 0, sum = 0;
	size_t n = 0;
	int r;

	CHECK(wire_extents_decode(p, len, &x) == 0);
	CHECK(x.n_extents >= 1 && x.n_extents <= RESYNC_WIRE_EXTENTS_MAX);
	CHECK(x.raw_len >= 1 && x.raw_len <= RESYNC_WIRE_BLOCKS_MAX);
	for (uint32_t i = 0; i < x.n_extents; i++) {
		ext[i] = wire_extents_get(&x, i);
		CHECK(ext[i].len > 0 && ext[i].offset >= end);
		end = ext[i].offset + ext[i].len;
		sum += ext[i].len;
	}
	CHECK(sum == x.raw_len);
	r = wire_extents_unpack(z, &x, raw, sizeof(raw));
	CHECK(r == (int)x.raw_len || (r == -EBADMSG && x.encoding == WIRE_ENC_ZSTD));
	if (r < 0)
		return;
	CHECK(wire_extents_encode(NULL, ext, x.n_extents, raw, out, sizeof(out), &n) == 0);
	if (x.encoding == WIRE_ENC_RAW)
		CHECK(n == len && !memcmp(out, p, len));
	CHECK(wire_extents_decode(out, n, &y) == 0);
	CHECK(y.n_extents == x.n_extents && y.raw_len == x.raw_len);
	CHECK(!memcmp(y.table, x.table, (size_t)x.n_extents * WIRE_EXTENT_SIZE));
}

/* ACK, CHECKPOINT and BITMAP_REQ carry one offset. */
static void offset_roundtrip(struct wire_zstd *z, const uint8_t *p, size_t len)
{
	uint64_t off;
	size_t n = 0;

	(void)z;
	CHECK(wire_offset_decode(p, len, &off) == 0);
	same_bytes(wire_offset_encode(off, out, sizeof(out), &n), &n, p, len);
}

static void commit_roundtrip(struct wire_zstd *z, const uint8_t *p, size_t len)
{
	struct wire_uuid g;
	size_t n = 0;

	(void)z;
	CHECK(wire_commit_decode(p, len, &g) == 0);
	same_bytes(wire_commit_encode(&g, out, sizeof(out), &n), &n, p, len);
}

/* STATUS_REQ and KEEPALIVE have no payload: the only valid one is empty. */
static void empty_roundtrip(struct wire_zstd *z, const uint8_t *p, size_t len)
{
	(void)z;
	(void)p;
	CHECK(len == 0);
}

static void status_roundtrip(struct wire_zstd *z, const uint8_t *p, size_t len)
{
	struct wire_status st;
	size_t n = 0;

	(void)z;
	CHECK(wire_status_decode(p, len, &st) == 0);
	same_bytes(wire_status_encode(&st, out, sizeof(out), &n), &n, p, len);
}

static void bitmap_roundtrip(struct wire_zstd *z, const uint8_t *p, size_t len)
{
	struct wire_bitmap b;
	size_t n = 0;

	(void)z;
	CHECK(wire_bitmap_decode(p, len, &b) == 0);
	CHECK(b.offset <= b.total && b.len <= b.total - b.offset);
	same_bytes(wire_bitmap_encode(b.offset, b.total, b.data, b.len, out, sizeof(out), &n), &n,
		   p, len);
}

static void drift_roundtrip(struct wire_zstd *z, const uint8_t *p, size_t len)
{
	struct wire_drift m;
	size_t n = 0;

	(void)z;
	CHECK(wire_drift_decode(p, len, &m) == 0);
	CHECK(m.differing_blocks <= m.differing_bytes);
	same_bytes(wire_drift_encode(&m, out, sizeof(out), &n), &n, p, len);
}

static void undo_roundtrip(struct wire_zstd *z, const uint8_t *p, size_t len)
{
	uint32_t mode;
	size_t n = 0;

	(void)z;
	CHECK(wire_undo_decode(p, len, &mode) == 0);
	same_bytes(wire_undo_encode(mode, out, sizeof(out), &n), &n, p, len);
}

static void undo_info_roundtrip(struct wire_zstd *z, const uint8_t *p, size_t len)
{
	struct wire_undo_info m;
	size_t n = 0;

	(void)z;
	CHECK(wire_undo_info_decode(p, len, &m) == 0);
	same_bytes(wire_undo_info_encode(&m, out, sizeof(out), &n), &n, p, len);
}

static void proof_roundtrip(struct wire_zstd *z, const uint8_t *p, size_t len)
{
	struct wire_proof m;
	size_t n = 0;

	(void)z;
	CHECK(wire_proof_decode(p, len, &m) == 0);
	same_bytes(wire_proof_encode(&m, out, sizeof(out), &n), &n, p, len);
}

/* PROOF_COMMIT: a PROOF's payload and a COMMIT's. */
static void proof_commit_roundtrip(struct wire_zstd *z, const uint8_t *p, size_t len)
{
	struct wire_proof m;
	struct wire_uuid g;
	size_t n = 0;

	(void)z;
	CHECK(wire_proof_commit_decode(p, len, &m, &g) == 0);
	same_bytes(wire_proof_commit_encode(&m, &g, out, sizeof(out), &n), &n, p, len);
}

/* COPY: entries sorted by destination, none overlapping, within the
 * limits; encodes back to the same bytes. */
static void copy_roundtrip(struct wire_zstd *z, const uint8_t *p, size_t len)
{
	static struct wire_copy_entry e[RESYNC_WIRE_COPIES_MAX];
	struct wire_copy m;
	uint64_t total = 0;
	size_t n = 0;

	(void)z;
	CHECK(wire_copy_decode(p, len, &m) == 0);
	for (uint32_t i = 0; i < m.n; i++) {
		e[i] = wire_copy_get(&m, i);
		CHECK(e[i].len > 0 && e[i].len <= RESYNC_WIRE_COPY_LEN_MAX && e[i].dst != e[i].src);
		CHECK(i == 0 || e[i].dst >= e[i - 1].dst + e[i - 1].len);
		total += e[i].len;
	}
	CHECK(total == m.total && total <= RESYNC_WIRE_COPY_STAGE_MAX);
	same_bytes(wire_copy_encode(m.seed, m.piece, e, m.n, out, sizeof(out), &n), &n, p, len);
}

static void copy_ack_roundtrip(struct wire_zstd *z, const uint8_t *p, size_t len)
{
	static unsigned char bits[RESYNC_WIRE_COPIES_MAX / 8];
	struct wire_copy_ack m;
	uint32_t failed = 0;
	size_t n = 0;

	(void)z;
	CHECK(wire_copy_ack_decode(p, len, &m) == 0);
	memset(bits, 0, sizeof(bits));
	for (uint32_t i = 0; i < m.n; i++)
		if (wire_copy_ack_failed(&m, i)) {
			bits[i / 8] |= (unsigned char)(1u << (i % 8));
			failed++;
		}
	CHECK(failed == m.n_failed);
	same_bytes(wire_copy_ack_encode(m.n, bits, out, sizeof(out), &n), &n, p, len);
}

static void weak_reply_roundtrip(struct wire_zstd *z, const uint8_t *p, size_t len)
{
	static uint32_t sums[RESYNC_WIRE_HASHES_MAX];
	struct wire_weak_reply m;
	size_t n = 0;

	(void)z;
	CHECK(wire_weak_reply_decode(p, len, &m) == 0);
	for (uint32_t i = 0; i < m.n; i++)
		sums[i] = wire_weak_reply_get(&m, i);
	same_bytes(wire_weak_reply_encode(sums, m.n, out, sizeof(out), &n), &n, p, len);
}

/* CONTROL carries opaque bytes: any non-empty payload passes the check
 * and is forwarded as it is. */
static void control_roundtrip(struct wire_zstd *z, const uint8_t *p, size_t len)
{
	(void)z;
	(void)p;
	CHECK(len > 0);
}

/* Every type the wire knows has an entry; harness_check_types() fails the
 * run when one is missing. */
static roundtrip_fn *const roundtrips[WIRE_TYPE_MAX + 1] = {
    [WIRE_HELLO] = hello_roundtrip,
    [WIRE_HELLO_ACK] = hello_roundtrip,
    [WIRE_REFUSE] = text_roundtrip,
    [WIRE_HASH_REQ] = hash_req_roundtrip,
    [WIRE_HASH_REPLY] = hash_reply_roundtrip,
    [WIRE_BLOCKS] = blocks_roundtrip,
    [WIRE_ACK] = offset_roundtrip,
    [WIRE_CHECKPOINT] = offset_roundtrip,
    [WIRE_COMMIT] = commit_roundtrip,
    [WIRE_ERROR] = text_roundtrip,
    [WIRE_STATUS_REQ] = empty_roundtrip,
    [WIRE_STATUS] = status_roundtrip,
    [WIRE_BITMAP_REQ] = offset_roundtrip,
    [WIRE_BITMAP] = bitmap_roundtrip,
    [WIRE_PAGE_REQ] = page_req_roundtrip,
    [WIRE_PAGE_REPLY] = hash_reply_roundtrip,
    [WIRE_EXTENTS] = extents_roundtrip,
    [WIRE_CONTROL] = control_roundtrip,
    [WIRE_KEEPALIVE] = empty_roundtrip,
    [WIRE_DRIFT] = drift_roundtrip,
    [WIRE_UNDO] = undo_roundtrip,
    [WIRE_UNDO_REQ] = empty_roundtrip,
    [WIRE_UNDO_INFO] = undo_info_roundtrip,
    [WIRE_ROLLBACK] = empty_roundtrip,
    [WIRE_PROOF_REQ] = proof_roundtrip,
    [WIRE_PROOF] = proof_roundtrip,
    [WIRE_PROOF_COMMIT] = proof_commit_roundtrip,
    [WIRE_COPY] = copy_roundtrip,
    [WIRE_COPY_ACK] = copy_ack_roundtrip,
    [WIRE_WEAK_REQ] = page_req_roundtrip,
    [WIRE_WEAK_REPLY] = weak_reply_roundtrip,
    [WIRE_HASH_REQ_IF] = hash_req_if_roundtrip,
    [WIRE_HASH_IF_ACK] = hash_if_ack_roundtrip,
    [WIRE_HASH_REQ_MORE] = hash_req_roundtrip,
};

/* Every type from WIRE_HELLO to WIRE_TYPE_MAX that a frame header may
 * carry has a name and a round-trip here (numbers reserved for other work
 * are refused by wire_header_decode() and have neither), and the type after the end marker is unknown to the wire (so a
 * type added without moving WIRE_TYPE_MAX is noticed too). Returns the
 * number of types missing, 0 when the harness covers the wire. */
static unsigned harness_check_types(void)
{
	unsigned char hdr[WIRE_HEADER_SIZE];
	struct wire_header h;
	unsigned missing = 0;

	for (unsigned t = WIRE_HELLO; t <= WIRE_TYPE_MAX; t++) {
		wire_header_encode((uint16_t)t, 0, hdr);
		if (wire_header_decode(hdr, &h) == -EBADMSG && !roundtrips[t] &&
		    !strcmp(wire_type_name(t), "?") && wire_payload_check(t, hdr, 0) == -EBADMSG)
			continue; /* reserved: unknown to this build */
		if (roundtrips[t] && strcmp(wire_type_name(t), "?"))
			continue;
		fprintf(stderr, "fuzz-wire: type %u (%s) has no round-trip in the harness\n", t,
			wire_type_name(t));
		missing++;
	}
	wire_header_encode(WIRE_TYPE_MAX + 1, 0, hdr);
	if (wire_header_decode(hdr, &h) != -EBADMSG ||
	    strcmp(wire_type_name(WIRE_TYPE_MAX + 1), "?") ||
	    wire_payload_check(WIRE_TYPE_MAX + 1, hdr, 0) != -EBADMSG) {
		fprintf(stderr, "fuzz-wire: type %u is known to the wire but past WIRE_TYPE_MAX\n",
			WIRE_TYPE_MAX + 1);
		missing++;
	}
	return missing;
}

static void one_frame(struct wire_zstd *z, unsigned type, const uint8_t *p, size_t len)
{
	int r = wire_payload_check(type, p, len);

	CHECK(r == 0 || r == -EBADMSG);
	if (r < 0)
		return;
	/* wire_header_decode() accepted the type, so it is in the table's range. */
	CHECK(type <= WIRE_TYPE_MAX && roundtrips[type]);
	roundtrips[type](z, p, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct wire_zstd *z;

	if (!z) {
		CHECK(harness_check_types() == 0);
		CHECK(wire_zstd_new(1, &z) == 0);
	}
	while (size >= WIRE_HEADER_SIZE) {
		struct wire_header h;

		if (wire_header_decode(data, &h) < 0)
			return 0;
		CHECK(h.length <= RESYNC_WIRE_FRAME_MAX);
		data += WIRE_HEADER_SIZE;
		size -= WIRE_HEADER_SIZE;
		if (h.length > size)
			return 0; /* a truncated frame: the receiver would wait */
		one_frame(z, h.type, data, h.length);
		data += h.length;
		size -= h.length;
	}
	return 0;
}

/* The replayer fails at once when the harness misses a type. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return harness_check_types() == 0 ? 0 : 1;
}
