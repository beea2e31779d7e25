/* Little-endian fixed-width layouts of every frame and message, and their
 * conversion to and from host values. Nothing else in the project touches
 * wire bytes. */
#include <endian.h>
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "resync/config.h"
#include "resync/macro.h"
#include "wire.h"

/* Wire layouts: naturally aligned fields, no padding, all little-endian. */
struct wire_header_le {
	uint32_t magic;
	uint16_t version;
	uint16_t type;
	uint32_t length;
	uint32_t flags;
};
_Static_assert(sizeof(struct wire_header_le) == WIRE_HEADER_SIZE, "header layout");
_Static_assert(offsetof(struct wire_header_le, length) == 8, "header layout");
_Static_assert(offsetof(struct wire_header_le, flags) == 12, "header layout");

/* HELLO / HELLO_ACK: this, then cluster_len + node_len name bytes, then
 * n_history UUIDs of 16 bytes. */
struct wire_hello_le {
	uint16_t proto_min;
	uint16_t proto_max;
	uint16_t cluster_len;
	uint16_t node_len;
	uint32_t block_size;
	uint32_t state;
	uint64_t features;
	uint64_t volume_size;
	uint32_t flags;
	uint32_t n_history;
	uint8_t generation[16];
};
_Static_assert(sizeof(struct wire_hello_le) == 56, "hello layout");
_Static_assert(offsetof(struct wire_hello_le, features) == 16, "hello layout");
_Static_assert(offsetof(struct wire_hello_le, generation) == 40, "hello layout");

/* REFUSE / ERROR: this, then text_len bytes. */
struct wire_text_le {
	uint32_t code;
	uint16_t text_len;
	uint16_t reserved;
};
_Static_assert(sizeof(struct wire_text_le) == 8, "text layout");

/* HASH_REQ: this, then n_ranges ranges. */
struct wire_hash_req_le {
	uint64_t seed;
	uint16_t level;
	uint16_t fanout;
	uint32_t n_ranges;
};
_Static_assert(sizeof(struct wire_hash_req_le) == 16, "hash_req layout");

/* After a HASH_REQ's ranges, with WIRE_FEATURE_FINE_LEAVES: the bytes a
 * leaf covers. Its 8 bytes set the payload's length apart (16 modulo 8,
 * ranges are 16 each), so a request without it stays what it was. */
struct wire_hash_req_leaf_le {
	uint32_t leaf_size;
	uint32_t reserved; /* 0 */
};
_Static_assert(sizeof(struct wire_hash_req_leaf_le) == 8, "hash_req leaf layout");

struct wire_range_le {
	uint64_t first;
	uint64_t count;
};
_Static_assert(sizeof(struct wire_range_le) == 16, "range layout");

/* PAGE_REQ: this, then n_ranges ranges {byte offset, bytes}. */
struct wire_page_req_le {
	uint64_t seed;
	uint32_t page_size;
	uint32_t n_ranges;
};
_Static_assert(sizeof(struct wire_page_req_le) == 16, "page_req layout");

/* HASH_REPLY: this, then n_hashes hashes. */
struct wire_hash_reply_le {
	uint16_t level;
	uint16_t reserved;
	uint32_t n_hashes;
};
_Static_assert(sizeof(struct wire_hash_reply_le) == 8, "hash_reply layout");

struct wire_hash_le {
	uint64_t lo;
	uint64_t hi;
};
_Static_assert(sizeof(struct wire_hash_le) == 16, "hash layout");

/* BLOCKS: this, then enc_len bytes. */
struct wire_blocks_le {
	uint64_t offset;
	uint32_t raw_len;
	uint32_t enc_len;
	uint16_t encoding;
	uint16_t reserved;
	uint32_t reserved2;
};
_Static_assert(sizeof(struct wire_blocks_le) == WIRE_BLOCKS_HEADER, "blocks layout");
_Static_assert(offsetof(struct wire_blocks_le, encoding) == 16, "blocks layout");

/* EXTENTS: this, then n_extents extents, then enc_len bytes. */
struct wire_extents_le {
	uint32_t n_extents;
	uint32_t raw_len;
	uint32_t enc_len;
	uint16_t encoding;
	uint16_t reserved;
};
_Static_assert(sizeof(struct wire_extents_le) == WIRE_EXTENTS_HEADER, "extents layout");
_Static_assert(offsetof(struct wire_extents_le, encoding) == 12, "extents layout");

struct wire_extent_le {
	uint64_t offset;
	uint32_t len;
	uint32_t reserved;
};
_Static_assert(sizeof(struct wire_extent_le) == WIRE_EXTENT_SIZE, "extent layout");
_Static_assert(offsetof(struct wire_extent_le, len) == 8, "extent layout");

/* ACK / CHECKPOINT. */
struct wire_offset_le {
	uint64_t offset;
};
_Static_assert(sizeof(struct wire_offset_le) == 8, "offset layout");

/* COMMIT. */
struct wire_commit_le {
	uint8_t generation[16];
};
_Static_assert(sizeof(struct wire_commit_le) == 16, "commit layout");

/* STATUS. */
struct wire_status_le {
	uint64_t dirty_bytes;
	uint64_t last_resync;
	uint64_t checkpoint_off;
	uint32_t flags;
	uint32_t reserved;
	uint8_t checkpoint_id[16];
};
_Static_assert(sizeof(struct wire_status_le) == 48, "status layout");

/* BITMAP: this, then len bytes. */
struct wire_bitmap_le {
	uint64_t offset;
	uint64_t total;
	uint32_t len;
	uint32_t reserved;
};
_Static_assert(sizeof(struct wire_bitmap_le) == 24, "bitmap layout");

/* The largest fixed messages must fit a frame. */
_Static_assert(24 + RESYNC_WIRE_BLOCKS_MAX <= RESYNC_WIRE_FRAME_MAX, "limits");
_Static_assert(WIRE_BLOCKS_HEADER + RESYNC_WIRE_BLOCKS_MAX <= RESYNC_WIRE_FRAME_MAX, "limits");
_Static_assert(WIRE_EXTENTS_HEADER + WIRE_EXTENT_SIZE * (uint64_t)RESYNC_WIRE_EXTENTS_MAX +
			   RESYNC_WIRE_BLOCKS_MAX <=
		       RESYNC_WIRE_FRAME_MAX,
	       "limits");
_Static_assert(RESYNC_WIRE_BLOCKS_MAX <= UINT32_MAX, "limits");
_Static_assert(8 + 16 * (uint64_t)RESYNC_WIRE_HASHES_MAX <= RESYNC_WIRE_FRAME_MAX, "limits");
_Static_assert(16 + 16 * (uint64_t)RESYNC_WIRE_RANGES_MAX <= RESYNC_WIRE_FRAME_MAX, "limits");
_Static_assert(56 + 2 * RESYNC_NAME_MAX + 16 * RESYNC_WIRE_HISTORY_MAX <= RESYNC_WIRE_FRAME_MAX,
	       "limits");
_Static_assert(RESYNC_NAME_MAX <= UINT16_MAX && RESYNC_WIRE_TEXT_MAX <= UINT16_MAX, "limits");

/* Volume offsets and sizes must fit an off_t. */
#define WIRE_OFFSET_MAX ((uint64_t)INT64_MAX)

static const char *const type_names[] = {
	[WIRE_HELLO] = "HELLO",		  [WIRE_HELLO_ACK] = "HELLO_ACK",
	[WIRE_REFUSE] = "REFUSE",	  [WIRE_HASH_REQ] = "HASH_REQ",
	[WIRE_HASH_REPLY] = "HASH_REPLY", [WIRE_BLOCKS] = "BLOCKS",
	[WIRE_ACK] = "ACK",		  [WIRE_CHECKPOINT] = "CHECKPOINT",
	[WIRE_COMMIT] = "COMMIT",	  [WIRE_ERROR] = "ERROR",
	[WIRE_STATUS_REQ] = "STATUS_REQ", [WIRE_STATUS] = "STATUS",
	[WIRE_BITMAP_REQ] = "BITMAP_REQ", [WIRE_BITMAP] = "BITMAP",
	[WIRE_PAGE_REQ] = "PAGE_REQ",	  [WIRE_PAGE_REPLY] = "PAGE_REPLY",
	[WIRE_EXTENTS] = "EXTENTS",	  [WIRE_CONTROL] = "CONTROL",
	[WIRE_KEEPALIVE] = "KEEPALIVE",
};

const char *wire_type_name(unsigned type)
{
	if (type < ARRAY_SIZE(type_names) && type_names[type])
		return type_names[type];
	return "?";
}

/* The wire's state values are protocol, the engine's are on disk: each
 * set is fixed on its own, and the switches below (-Wswitch: no default)
 * are where a state added to either must be given its counterpart. */
_Static_assert(WIRE_STATE_UNKNOWN == 0 && WIRE_STATE_UPTODATE == 1 && WIRE_STATE_OUTDATED == 2 &&
		       WIRE_STATE_INCONSISTENT == 3 && WIRE_STATE_DIVERGED == 4 &&
		       WIRE_STATE_COUNT == 5,
	       "wire state values are protocol");
_Static_assert((unsigned)META_STATE_COUNT == (unsigned)WIRE_STATE_COUNT,
	       "every node state has a wire value");

enum wire_state wire_state_from_meta(enum meta_state state)
{
	switch (state) {
	case META_STATE_UPTODATE:
		return WIRE_STATE_UPTODATE;
	case META_STATE_OUTDATED:
		return WIRE_STATE_OUTDATED;
	case META_STATE_INCONSISTENT:
		return WIRE_STATE_INCONSISTENT;
	case META_STATE_DIVERGED:
		return WIRE_STATE_DIVERGED;
	case META_STATE_UNKNOWN:
	case META_STATE_COUNT:
		break;
	}
	return WIRE_STATE_UNKNOWN;
}

enum meta_state meta_state_from_wire(uint32_t state)
{
	switch ((enum wire_state)state) {
	case WIRE_STATE_UPTODATE:
		return META_STATE_UPTODATE;
	case WIRE_STATE_OUTDATED:
		return META_STATE_OUTDATED;
	case WIRE_STATE_INCONSISTENT:
		return META_STATE_INCONSISTENT;
	case WIRE_STATE_DIVERGED:
		return META_STATE_DIVERGED;
	case WIRE_STATE_UNKNOWN:
	case WIRE_STATE_COUNT:
		break;
	}
	return META_STATE_UNKNOWN;
}

static const char *const reason_names[] = {
	[WIRE_REASON_OTHER] = "other",
	[WIRE_REASON_CLUSTER] = "another cluster",
	[WIRE_REASON_NODE] = "unknown node",
	[WIRE_REASON_PROTOCOL] = "no common protocol version",
	[WIRE_REASON_BLOCK_SIZE] = "block sizes differ",
	[WIRE_REASON_VOLUME_SIZE] = "volume sizes differ",
	[WIRE_REASON_BUSY] = "busy",
	[WIRE_REASON_MESSAGE] = "protocol error",
	[WIRE_REASON_IO] = "I/O error",
};

const char *wire_reason_name(uint32_t code)
{
	return code < WIRE_REASON_COUNT ? reason_names[code] : reason_names[WIRE_REASON_OTHER];
}

void wire_header_encode(uint16_t type, uint32_t length, unsigned char out[WIRE_HEADER_SIZE])
{
	struct wire_header_le h = {
		.magic = htole32(WIRE_MAGIC),
		.version = htole16(WIRE_FRAME_VERSION),
		.type = htole16(type),
		.length = htole32(length),
		.flags = 0,
	};

	memcpy(out, &h, sizeof(h));
}

int wire_header_decode(const unsigned char in[WIRE_HEADER_SIZE], struct wire_header *ret)
{
	struct wire_header_le h;
	struct wire_header v;

	memcpy(&h, in, sizeof(h));
	if (le32toh(h.magic) != WIRE_MAGIC)
		return -EBADMSG;
	v.version = le16toh(h.version);
	v.type = le16toh(h.type);
	v.length = le32toh(h.length);
	v.flags = le32toh(h.flags);
	if (v.version != WIRE_FRAME_VERSION || v.flags != 0)
		return -EBADMSG;
	if (v.type < WIRE_HELLO || v.type > WIRE_TYPE_MAX)
		return -EBADMSG;
	if (v.length > RESYNC_WIRE_FRAME_MAX)
		return -EBADMSG;
	*ret = v;
	return 0;
}

bool wire_name_valid(const char *s, size_t len)
{
	/* The same rule as the cluster file's names. */
	return config_name_valid(s, len);
}

int wire_proto_negotiate(uint16_t a_min, uint16_t a_max, uint16_t b_min, uint16_t b_max,
			 uint16_t *ret)
{
	uint16_t lo = MAX(a_min, b_min), hi = MIN(a_max, b_max);

	if (a_min > a_max || b_min > b_max || lo > hi)
		return -EPROTONOSUPPORT;
	*ret = hi;
	return 0;
}

/* HELLO */

/* Copy the fixed header of a payload (every decoder's prologue);
 * -EBADMSG when the payload is shorter. */
static int head_get(const void *buf, size_t len, void *ret, size_t size)
{
	if (len < size)
		return -EBADMSG;
	memcpy(ret, buf, size);
	return 0;
}

int wire_hello_encode(const struct wire_hello *m, void *buf, size_t cap, size_t *ret_len)
{
	size_t cl = strnlen(m->cluster, sizeof(m->cluster));
	size_t nl = strnlen(m->node, sizeof(m->node));
	struct wire_hello_le h;
	unsigned char *p = buf;
	size_t len;

	if (!wire_name_valid(m->cluster, cl) || !wire_name_valid(m->node, nl) ||
	    m->n_history > RESYNC_WIRE_HISTORY_MAX || m->proto_min == 0 ||
	    m->proto_min > m->proto_max || !resync_block_size_valid(m->block_size) ||
	    m->state >= WIRE_STATE_COUNT || (m->flags & ~(uint32_t)WIRE_HELLO_FLAGS_ALL) ||
	    m->volume_size > WIRE_OFFSET_MAX)
		return -EINVAL;
	len = sizeof(h) + cl + nl + (size_t)m->n_history * 16;
	if (len > cap)
		return -ENOBUFS;
	h = (struct wire_hello_le){
		.proto_min = htole16(m->proto_min),
		.proto_max = htole16(m->proto_max),
		.cluster_len = htole16(cl),
		.node_len = htole16(nl),
		.block_size = htole32(m->block_size),
		.state = htole32(m->state),
		.features = htole64(m->features),
		.volume_size = htole64(m->volume_size),
		.flags = htole32(m->flags),
		.n_history = htole32(m->n_history),
	};
	memcpy(h.generation, m->generation.b, 16);
	memcpy(p, &h, sizeof(h));
	p += sizeof(h);
	memcpy(p, m->cluster, cl);
	p += cl;
	memcpy(p, m->node, nl);
	p += nl;
	for (uint32_t i = 0; i < m->n_history; i++, p += 16)
		memcpy(p, m->history[i].b, 16);
	*ret_len = len;
	return 0;
}

int wire_hello_decode(const void *buf, size_t len, struct wire_hello *ret)
{
	const unsigned char *p = buf;
	struct wire_hello_le h;
	struct wire_hello m = {0};
	size_t cl, nl;

	if (head_get(buf, len, &h, sizeof(h)) < 0)
		return -EBADMSG;
	p += sizeof(h);
	cl = le16toh(h.cluster_len);
	nl = le16toh(h.node_len);
	m.n_history = le32toh(h.n_history);
	if (cl > RESYNC_NAME_MAX || nl > RESYNC_NAME_MAX || m.n_history > RESYNC_WIRE_HISTORY_MAX)
		return -EBADMSG;
	if (len != sizeof(h) + cl + nl + (size_t)m.n_history * 16)
		return -EBADMSG;
	if (!wire_name_valid((const char *)p, cl) || !wire_name_valid((const char *)p + cl, nl))
		return -EBADMSG;
	memcpy(m.cluster, p, cl);
	memcpy(m.node, p + cl, nl);
	p += cl + nl;
	for (uint32_t i = 0; i < m.n_history; i++, p += 16)
		memcpy(m.history[i].b, p, 16);
	m.proto_min = le16toh(h.proto_min);
	m.proto_max = le16toh(h.proto_max);
	m.block_size = le32toh(h.block_size);
	m.state = le32toh(h.state);
	m.features = le64toh(h.features);
	m.volume_size = le64toh(h.volume_size);
	m.flags = le32toh(h.flags);
	memcpy(m.generation.b, h.generation, 16);
	if (m.proto_min == 0 || m.proto_min > m.proto_max)
		return -EBADMSG;
	if (!resync_block_size_valid(m.block_size) || m.state >= WIRE_STATE_COUNT)
		return -EBADMSG;
	if ((m.flags & ~(uint32_t)WIRE_HELLO_FLAGS_ALL) || m.volume_size > WIRE_OFFSET_MAX)
		return -EBADMSG;
	*ret = m;
	return 0;
}

/* REFUSE, ERROR */

static bool text_valid(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	return true;
}

int wire_text_encode(const struct wire_text *m, void *buf, size_t cap, size_t *ret_len)
{
	size_t tl = strnlen(m->text, sizeof(m->text));
	struct wire_text_le h;

	if (tl > RESYNC_WIRE_TEXT_MAX || !text_valid(m->text, tl))
		return -EINVAL;
	if (sizeof(h) + tl > cap)
		return -ENOBUFS;
	h = (struct wire_text_le){.code = htole32(m->code), .text_len = htole16(tl)};
	memcpy(buf, &h, sizeof(h));
	memcpy((unsigned char *)buf + sizeof(h), m->text, tl);
	*ret_len = sizeof(h) + tl;
	return 0;
}

int wire_text_decode(const void *buf, size_t len, struct wire_text *ret)
{
	struct wire_text_le h;
	const char *text = (const char *)buf + sizeof(h);
	size_t tl;

	if (head_get(buf, len, &h, sizeof(h)) < 0)
		return -EBADMSG;
	tl = le16toh(h.text_len);
	if (h.reserved != 0 || tl > RESYNC_WIRE_TEXT_MAX || len != sizeof(h) + tl)
		return -EBADMSG;
	if (!text_valid(text, tl))
		return -EBADMSG;
	ret->code = le32toh(h.code);
	memcpy(ret->text, text, tl);
	ret->text[tl] = 0;
	return 0;
}

/* HASH_REQ and PAGE_REQ: a fixed header, then n_ranges ranges. */

/* Encode hdr (size bytes), then the n ranges: the whole payload. */
static int ranges_put(const void *hdr, size_t size, const struct hashtree_range *ranges, size_t n,
		      void *buf, size_t cap, size_t *ret_len)
{
	size_t len = size + n * sizeof(struct wire_range_le);
	unsigned char *p = buf;

	if (len > cap)
		return -ENOBUFS;
	memcpy(p, hdr, size);
	p += size;
	for (size_t i = 0; i < n; i++, p += sizeof(struct wire_range_le)) {
		struct wire_range_le w = {htole64(ranges[i].first), htole64(ranges[i].count)};

		memcpy(p, &w, sizeof(w));
	}
	*ret_len = len;
	return 0;
}

/* Range i of the ranges that a decoder checked. */
static struct hashtree_range range_get(const void *ranges, size_t i)
{
	struct wire_range_le w;

	memcpy(&w, (const unsigned char *)ranges + i * sizeof(w), sizeof(w));
	return (struct hashtree_range){le64toh(w.first), le64toh(w.count)};
}

/* A payload of a header of size bytes and n_ranges ranges: 1 to
 * RESYNC_WIRE_RANGES_MAX of them, filling the payload exactly. */
static int ranges_len_check(size_t len, size_t size, uint32_t n_ranges)
{
	if (n_ranges == 0 || n_ranges > RESYNC_WIRE_RANGES_MAX)
		return -EBADMSG;
	if (len != size + (size_t)n_ranges * sizeof(struct wire_range_le))
		return -EBADMSG;
	return 0;
}

/* HASH_REQ */

/* One range of node indexes: not empty, not wrapping; adds its count to
 * *total, at most RESYNC_WIRE_HASHES_MAX. */
static bool hash_range_valid(uint64_t first, uint64_t count, uint64_t *total)
{
	if (count == 0 || count > RESYNC_WIRE_HASHES_MAX || first > UINT64_MAX - count)
		return false;
	*total += count;
	return *total <= RESYNC_WIRE_HASHES_MAX;
}

int wire_hash_req_encode(uint64_t seed, unsigned level, unsigned fanout, uint32_t leaf_size,
			 const struct hashtree_range *ranges, size_t n, void *buf, size_t cap,
			 size_t *ret_len)
{
	struct wire_hash_req_le h;
	struct wire_hash_req_leaf_le t = {htole32(leaf_size), 0};
	uint64_t total = 0;
	int r;

	if (n == 0 || n > RESYNC_WIRE_RANGES_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!hash_range_valid(ranges[i].first, ranges[i].count, &total))
			return -EINVAL;
	if (level > UINT16_MAX || fanout < RESYNC_HASHTREE_FANOUT_MIN ||
	    fanout > RESYNC_HASHTREE_FANOUT_MAX ||
	    (leaf_size && !resync_block_size_valid(leaf_size)))
		return -EINVAL;
	h = (struct wire_hash_req_le){
		.seed = htole64(seed),
		.level = htole16(level),
		.fanout = htole16(fanout),
		.n_ranges = htole32(n),
	};
	r = ranges_put(&h, sizeof(h), ranges, n, buf, cap, ret_len);
	if (r < 0 || !leaf_size)
		return r;
	if (cap - *ret_len < sizeof(t))
		return -ENOBUFS;
	memcpy((unsigned char *)buf + *ret_len, &t, sizeof(t));
	*ret_len += sizeof(t);
	return 0;
}

struct hashtree_range wire_hash_req_range(const struct wire_hash_req *m, size_t i)
{
	return range_get(m->ranges, i);
}

int wire_hash_req_decode(const void *buf, size_t len, struct wire_hash_req *ret)
{
	struct wire_hash_req_le h;
	struct wire_hash_req_leaf_le t;
	struct wire_hash_req m;
	uint64_t total = 0;

	if (head_get(buf, len, &h, sizeof(h)) < 0)
		return -EBADMSG;
	m.seed = le64toh(h.seed);
	m.level = le16toh(h.level);
	m.fanout = le16toh(h.fanout);
	m.n_ranges = le32toh(h.n_ranges);
	m.ranges = (const unsigned char *)buf + sizeof(h);
	m.leaf_size = 0;
	if (len % sizeof(struct wire_range_le) == sizeof(t)) {
		memcpy(&t, (const unsigned char *)buf + len - sizeof(t), sizeof(t));
		m.leaf_size = le32toh(t.leaf_size);
		if (!resync_block_size_valid(m.leaf_size) || t.reserved)
			return -EBADMSG;
		len -= sizeof(t);
	}
	if (ranges_len_check(len, sizeof(h), m.n_ranges) < 0)
		return -EBADMSG;
	if (m.fanout < RESYNC_HASHTREE_FANOUT_MIN || m.fanout > RESYNC_HASHTREE_FANOUT_MAX)
		return -EBADMSG;
	for (uint32_t i = 0; i < m.n_ranges; i++) {
		struct hashtree_range r = range_get(m.ranges, i);

		if (!hash_range_valid(r.first, r.count, &total))
			return -EBADMSG;
	}
	m.n_hashes = total;
	*ret = m;
	return 0;
}

/* PAGE_REQ */

/* One byte range of a PAGE_REQ: on a page boundary, not empty, inside the
 * largest offset; adds its pages to *total, at most RESYNC_WIRE_HASHES_MAX. */
static bool page_range_valid(uint64_t off, uint64_t len, uint32_t page_size, uint64_t *total)
{
	if (len == 0 || off % page_size || off > WIRE_OFFSET_MAX || len > WIRE_OFFSET_MAX - off)
		return false;
	/* Checked before the sum, so that it cannot wrap. */
	if (wire_pages(len, page_size) > RESYNC_WIRE_HASHES_MAX)
		return false;
	*total += wire_pages(len, page_size);
	return *total <= RESYNC_WIRE_HASHES_MAX;
}

int wire_page_req_encode(uint64_t seed, uint32_t page_size, const struct hashtree_range *ranges,
			 size_t n, void *buf, size_t cap, size_t *ret_len)
{
	struct wire_page_req_le h;
	uint64_t total = 0;

	if (!resync_block_size_valid(page_size) || n == 0 || n > RESYNC_WIRE_RANGES_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!page_range_valid(ranges[i].first, ranges[i].count, page_size, &total))
			return -EINVAL;
	h = (struct wire_page_req_le){
		.seed = htole64(seed),
		.page_size = htole32(page_size),
		.n_ranges = htole32(n),
	};
	return ranges_put(&h, sizeof(h), ranges, n, buf, cap, ret_len);
}

struct hashtree_range wire_page_req_range(const struct wire_page_req *m, size_t i)
{
	return range_get(m->ranges, i);
}

int wire_page_req_decode(const void *buf, size_t len, struct wire_page_req *ret)
{
	struct wire_page_req_le h;
	struct wire_page_req m;
	uint64_t total = 0;

	if (head_get(buf, len, &h, sizeof(h)) < 0)
		return -EBADMSG;
	m.seed = le64toh(h.seed);
	m.page_size = le32toh(h.page_size);
	m.n_ranges = le32toh(h.n_ranges);
	m.ranges = (const unsigned char *)buf + sizeof(h);
	if (!resync_block_size_valid(m.page_size))
		return -EBADMSG;
	if (ranges_len_check(len, sizeof(h), m.n_ranges) < 0)
		return -EBADMSG;
	for (uint32_t i = 0; i < m.n_ranges; i++) {
		struct hashtree_range r = range_get(m.ranges, i);

		if (!page_range_valid(r.first, r.count, m.page_size, &total))
			return -EBADMSG;
	}
	m.n_pages = total;
	*ret = m;
	return 0;
}

/* HASH_REPLY */

int wire_hash_reply_encode(unsigned level, const struct hash128 *hashes, size_t n, void *buf,
			   size_t cap, size_t *ret_len)
{
	unsigned char *p = buf;
	struct wire_hash_reply_le h;
	size_t len;

	if (level > UINT16_MAX || n > RESYNC_WIRE_HASHES_MAX)
		return -EINVAL;
	len = sizeof(h) + n * sizeof(struct wire_hash_le);
	if (len > cap)
		return -ENOBUFS;
	h = (struct wire_hash_reply_le){.level = htole16(level), .n_hashes = htole32(n)};
	memcpy(p, &h, sizeof(h));
	p += sizeof(h);
	for (size_t i = 0; i < n; i++, p += sizeof(struct wire_hash_le)) {
		struct wire_hash_le w = {htole64(hashes[i].lo), htole64(hashes[i].hi)};

		memcpy(p, &w, sizeof(w));
	}
	*ret_len = len;
	return 0;
}

int wire_hash_reply_decode(const void *buf, size_t len, struct wire_hash_reply *ret)
{
	struct wire_hash_reply_le h;
	uint32_t n;

	if (head_get(buf, len, &h, sizeof(h)) < 0)
		return -EBADMSG;
	n = le32toh(h.n_hashes);
	if (h.reserved != 0 || n > RESYNC_WIRE_HASHES_MAX)
		return -EBADMSG;
	if (len != sizeof(h) + (size_t)n * sizeof(struct wire_hash_le))
		return -EBADMSG;
	*ret = (struct wire_hash_reply){
		.level = le16toh(h.level),
		.n_hashes = n,
		.hashes = (const unsigned char *)buf + sizeof(h),
	};
	return 0;
}

int wire_hash_reply_get(const struct wire_hash_reply *m, struct hash128 *out, size_t cap)
{
	const unsigned char *p = m->hashes;

	if (m->n_hashes > cap)
		return -ENOBUFS;
	for (uint32_t i = 0; i < m->n_hashes; i++, p += sizeof(struct wire_hash_le)) {
		struct wire_hash_le w;

		memcpy(&w, p, sizeof(w));
		out[i] = (struct hash128){le64toh(w.lo), le64toh(w.hi)};
	}
	return 0;
}

/* BLOCKS */

struct wire_zstd {
	int level;
	ZSTD_CCtx *cctx;
	ZSTD_DCtx *dctx;
};

int wire_zstd_new(int level, struct wire_zstd **ret)
{
	struct wire_zstd *z;

	if (level == 0)
		level = 1;
	if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel())
		return -EINVAL;
	z = calloc(1, sizeof(*z));
	if (!z)
		return -ENOMEM;
	z->level = level;
	z->cctx = ZSTD_createCCtx();
	z->dctx = ZSTD_createDCtx();
	if (!z->cctx || !z->dctx) {
		wire_zstd_free(z);
		return -ENOMEM;
	}
	/* No frame may ask for a window larger than the largest BLOCKS. */
	if (ZSTD_isError(ZSTD_DCtx_setParameter(z->dctx, ZSTD_d_windowLogMax, 23)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_compressionLevel, level)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_contentSizeFlag, 1))) {
		wire_zstd_free(z);
		return -EINVAL;
	}
	*ret = z;
	return 0;
}

void wire_zstd_free(struct wire_zstd *z)
{
	if (!z)
		return;
	ZSTD_freeCCtx(z->cctx);
	ZSTD_freeDCtx(z->dctx);
	free(z);
}

/* Put data[0, len) at out (room for cap): one zstd frame when it is
 * smaller than len (z may be NULL: never), raw otherwise. Sets the
 * encoding and the bytes used. */
static int data_pack(struct wire_zstd *z, const void *data, size_t len, unsigned char *out,
		     size_t cap, uint16_t *ret_enc, size_t *ret_len)
{
	if (z && len > 1 && cap > 0) {
		/* Room for less than len bytes: what does not shrink fails
		 * here and goes raw. */
		size_t n = ZSTD_compress2(z->cctx, out, MIN(cap, len - 1), data, len);

		if (!ZSTD_isError(n)) {
			*ret_enc = WIRE_ENC_ZSTD;
			*ret_len = n;
			return 0;
		}
		if (ZSTD_getErrorCode(n) != ZSTD_error_dstSize_tooSmall)
			return -EIO;
	}
	if (len > cap)
		return -ENOBUFS;
	memcpy(out, data, len);
	*ret_enc = WIRE_ENC_RAW;
	*ret_len = len;
	return 0;
}

/* Decode enc_len bytes of data (encoding enc, already checked against
 * raw_len by a decoder) into out: a zstd frame must declare exactly
 * raw_len bytes, be a single frame using all enc_len bytes, and produce
 * exactly raw_len bytes. */
static int data_unpack(struct wire_zstd *z, uint16_t enc, const void *data, size_t enc_len,
		       size_t raw_len, void *out, size_t cap)
{
	unsigned long long declared;
	size_t n;

	if (cap < raw_len)
		return -ENOBUFS;
	if (enc == WIRE_ENC_RAW) {
		if (enc_len != raw_len)
			return -EBADMSG;
		memcpy(out, data, raw_len);
		return (int)raw_len;
	}
	if (enc != WIRE_ENC_ZSTD)
		return -EBADMSG;
	if (!z)
		return -EINVAL;
	declared = ZSTD_getFrameContentSize(data, enc_len);
	if (declared != raw_len)
		return -EBADMSG; /* also ZSTD_CONTENTSIZE_UNKNOWN and _ERROR */
	if (ZSTD_findFrameCompressedSize(data, enc_len) != enc_len)
		return -EBADMSG; /* trailing bytes, a second frame or an error */
	n = ZSTD_decompressDCtx(z->dctx, out, raw_len, data, enc_len);
	if (ZSTD_isError(n) || n != raw_len)
		return -EBADMSG;
	return (int)raw_len;
}

int wire_blocks_encode(struct wire_zstd *z, uint64_t offset, const void *data, size_t len,
		       void *buf, size_t cap, size_t *ret_len)
{
	unsigned char *p = buf;
	struct wire_blocks_le h;
	uint16_t enc;
	size_t enc_len;
	int r;

	if (len == 0 || len > RESYNC_WIRE_BLOCKS_MAX || offset > WIRE_OFFSET_MAX ||
	    len > WIRE_OFFSET_MAX - offset)
		return -EINVAL;
	if (cap < sizeof(h) + 1)
		return -ENOBUFS;
	r = data_pack(z, data, len, p + sizeof(h), cap - sizeof(h), &enc, &enc_len);
	if (r < 0)
		return r;
	h = (struct wire_blocks_le){
		.offset = htole64(offset),
		.raw_len = htole32(len),
		.enc_len = htole32(enc_len),
		.encoding = htole16(enc),
	};
	memcpy(p, &h, sizeof(h));
	*ret_len = sizeof(h) + enc_len;
	return 0;
}

int wire_blocks_decode(const void *buf, size_t len, struct wire_blocks *ret)
{
	struct wire_blocks_le h;
	struct wire_blocks m;

	if (head_get(buf, len, &h, sizeof(h)) < 0)
		return -EBADMSG;
	m.offset = le64toh(h.offset);
	m.raw_len = le32toh(h.raw_len);
	m.enc_len = le32toh(h.enc_len);
	m.encoding = le16toh(h.encoding);
	m.data = (const unsigned char *)buf + sizeof(h);
	if (h.reserved != 0 || h.reserved2 != 0)
		return -EBADMSG;
	if (m.raw_len == 0 || m.raw_len > RESYNC_WIRE_BLOCKS_MAX)
		return -EBADMSG;
	if (m.offset > WIRE_OFFSET_MAX || m.raw_len > WIRE_OFFSET_MAX - m.offset)
		return -EBADMSG;
	if (len != sizeof(h) + (size_t)m.enc_len)
		return -EBADMSG;
	switch (m.encoding) {
	case WIRE_ENC_RAW:
		if (m.enc_len != m.raw_len)
			return -EBADMSG;
		break;
	case WIRE_ENC_ZSTD:
		if (m.enc_len == 0 || m.enc_len >= m.raw_len)
			return -EBADMSG;
		break;
	default:
		return -EBADMSG;
	}
	*ret = m;
	return 0;
}

int wire_blocks_unpack(struct wire_zstd *z, const struct wire_blocks *m, void *out, size_t cap)
{
	return data_unpack(z, m->encoding, m->data, m->enc_len, m->raw_len, out, cap);
}

/* EXTENTS */

/* Whether ext, after one ending at *end (0 for the first), is valid;
 * adds its length to *sum and moves *end. */
static bool extent_next_valid(uint64_t off, uint64_t len, uint64_t *end, uint64_t *sum)
{
	if (len == 0 || len > RESYNC_WIRE_BLOCKS_MAX || off > WIRE_OFFSET_MAX ||
	    len > WIRE_OFFSET_MAX - off || off < *end)
		return false;
	*end = off + len;
	*sum += len;
	return *sum <= RESYNC_WIRE_BLOCKS_MAX;
}

int wire_extents_encode(struct wire_zstd *z, const struct wire_extent *ext, size_t n,
			const void *data, void *buf, size_t cap, size_t *ret_len)
{
	unsigned char *p = buf;
	struct wire_extents_le h;
	uint64_t end = 0, sum = 0;
	size_t table;
	uint16_t enc;
	size_t enc_len;
	int r;

	if (n == 0 || n > RESYNC_WIRE_EXTENTS_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!extent_next_valid(ext[i].offset, ext[i].len, &end, &sum))
			return -EINVAL;
	table = sizeof(h) + n * sizeof(struct wire_extent_le);
	if (cap < table + 1)
		return -ENOBUFS;
	r = data_pack(z, data, sum, p + table, cap - table, &enc, &enc_len);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		struct wire_extent_le e = {
			.offset = htole64(ext[i].offset),
			.len = htole32(ext[i].len),
		};

		memcpy(p + sizeof(h) + i * sizeof(e), &e, sizeof(e));
	}
	h = (struct wire_extents_le){
		.n_extents = htole32((uint32_t)n),
		.raw_len = htole32((uint32_t)sum),
		.enc_len = htole32((uint32_t)enc_len),
		.encoding = htole16(enc),
	};
	memcpy(p, &h, sizeof(h));
	*ret_len = table + enc_len;
	return 0;
}

struct wire_extent wire_extents_get(const struct wire_extents *m, size_t i)
{
	struct wire_extent_le e;

	memcpy(&e, (const unsigned char *)m->table + i * sizeof(e), sizeof(e));
	return (struct wire_extent){le64toh(e.offset), le32toh(e.len)};
}

int wire_extents_decode(const void *buf, size_t len, struct wire_extents *ret)
{
	struct wire_extents_le h;
	struct wire_extents m;
	uint64_t end = 0, sum = 0;
	size_t table;

	if (head_get(buf, len, &h, sizeof(h)) < 0)
		return -EBADMSG;
	m.n_extents = le32toh(h.n_extents);
	m.raw_len = le32toh(h.raw_len);
	m.enc_len = le32toh(h.enc_len);
	m.encoding = le16toh(h.encoding);
	if (h.reserved != 0)
		return -EBADMSG;
	if (m.n_extents == 0 || m.n_extents > RESYNC_WIRE_EXTENTS_MAX)
		return -EBADMSG;
	if (m.raw_len == 0 || m.raw_len > RESYNC_WIRE_BLOCKS_MAX)
		return -EBADMSG;
	table = sizeof(h) + (size_t)m.n_extents * sizeof(struct wire_extent_le);
	if (len < table || len - table != m.enc_len)
		return -EBADMSG;
	switch (m.encoding) {
	case WIRE_ENC_RAW:
		if (m.enc_len != m.raw_len)
			return -EBADMSG;
		break;
	case WIRE_ENC_ZSTD:
		if (m.enc_len == 0 || m.enc_len >= m.raw_len)
			return -EBADMSG;
		break;
	default:
		return -EBADMSG;
	}
	m.table = (const unsigned char *)buf + sizeof(h);
	m.data = (const unsigned char *)buf + table;
	for (uint32_t i = 0; i < m.n_extents; i++) {
		struct wire_extent_le e;

		memcpy(&e, (const unsigned char *)m.table + i * sizeof(e), sizeof(e));
		if (e.reserved != 0 ||
		    !extent_next_valid(le64toh(e.offset), le32toh(e.len), &end, &sum))
			return -EBADMSG;
	}
	if (sum != m.raw_len)
		return -EBADMSG;
	*ret = m;
	return 0;
}

int wire_extents_unpack(struct wire_zstd *z, const struct wire_extents *m, void *out, size_t cap)
{
	return data_unpack(z, m->encoding, m->data, m->enc_len, m->raw_len, out, cap);
}

/* ACK, CHECKPOINT */

int wire_offset_encode(uint64_t offset, void *buf, size_t cap, size_t *ret_len)
{
	struct wire_offset_le h = {htole64(offset)};

	if (offset > WIRE_OFFSET_MAX)
		return -EINVAL;
	if (cap < sizeof(h))
		return -ENOBUFS;
	memcpy(buf, &h, sizeof(h));
	*ret_len = sizeof(h);
	return 0;
}

int wire_offset_decode(const void *buf, size_t len, uint64_t *ret)
{
	struct wire_offset_le h;
	uint64_t v;

	if (len != sizeof(h))
		return -EBADMSG;
	memcpy(&h, buf, sizeof(h));
	v = le64toh(h.offset);
	if (v > WIRE_OFFSET_MAX)
		return -EBADMSG;
	*ret = v;
	return 0;
}

/* COMMIT */

int wire_commit_encode(const struct wire_uuid *generation, void *buf, size_t cap,
		       size_t *ret_len)
{
	struct wire_commit_le h;

	if (cap < sizeof(h))
		return -ENOBUFS;
	memcpy(h.generation, generation->b, 16);
	memcpy(buf, &h, sizeof(h));
	*ret_len = sizeof(h);
	return 0;
}

int wire_commit_decode(const void *buf, size_t len, struct wire_uuid *ret)
{
	if (len != sizeof(struct wire_commit_le))
		return -EBADMSG;
	memcpy(ret->b, buf, 16);
	return 0;
}

/* STATUS */

int wire_status_encode(const struct wire_status *m, void *buf, size_t cap, size_t *ret_len)
{
	struct wire_status_le h;

	if ((m->flags & ~(uint32_t)WIRE_STATUS_FLAGS_ALL) || m->checkpoint_off > WIRE_OFFSET_MAX)
		return -EINVAL;
	if (cap < sizeof(h))
		return -ENOBUFS;
	h = (struct wire_status_le){
		.dirty_bytes = htole64(m->dirty_bytes),
		.last_resync = htole64(m->last_resync),
		.checkpoint_off = htole64(m->checkpoint_off),
		.flags = htole32(m->flags),
	};
	memcpy(h.checkpoint_id, m->checkpoint_id.b, 16);
	memcpy(buf, &h, sizeof(h));
	*ret_len = sizeof(h);
	return 0;
}

int wire_status_decode(const void *buf, size_t len, struct wire_status *ret)
{
	struct wire_status_le h;
	struct wire_status m;

	if (len != sizeof(h))
		return -EBADMSG;
	memcpy(&h, buf, sizeof(h));
	m = (struct wire_status){
		.dirty_bytes = le64toh(h.dirty_bytes),
		.last_resync = le64toh(h.last_resync),
		.checkpoint_off = le64toh(h.checkpoint_off),
		.flags = le32toh(h.flags),
	};
	memcpy(m.checkpoint_id.b, h.checkpoint_id, 16);
	if ((m.flags & ~(uint32_t)WIRE_STATUS_FLAGS_ALL) || h.reserved ||
	    m.checkpoint_off > WIRE_OFFSET_MAX || m.dirty_bytes > WIRE_OFFSET_MAX)
		return -EBADMSG;
	*ret = m;
	return 0;
}

/* BITMAP */

int wire_bitmap_encode(uint64_t offset, uint64_t total, const void *data, size_t len, void *buf,
		       size_t cap, size_t *ret_len)
{
	struct wire_bitmap_le h;

	if (len > RESYNC_WIRE_BLOCKS_MAX || total > RESYNC_META_BITMAP_MAX || offset > total ||
	    len > total - offset)
		return -EINVAL;
	if (cap < sizeof(h) + len)
		return -ENOBUFS;
	h = (struct wire_bitmap_le){
		.offset = htole64(offset),
		.total = htole64(total),
		.len = htole32((uint32_t)len),
	};
	memcpy(buf, &h, sizeof(h));
	if (len)
		memcpy((unsigned char *)buf + sizeof(h), data, len);
	*ret_len = sizeof(h) + len;
	return 0;
}

int wire_bitmap_decode(const void *buf, size_t len, struct wire_bitmap *ret)
{
	struct wire_bitmap_le h;
	struct wire_bitmap m;

	if (head_get(buf, len, &h, sizeof(h)) < 0)
		return -EBADMSG;
	m = (struct wire_bitmap){
		.offset = le64toh(h.offset),
		.total = le64toh(h.total),
		.len = le32toh(h.len),
		.data = (const unsigned char *)buf + sizeof(h),
	};
	if (h.reserved || m.len > RESYNC_WIRE_BLOCKS_MAX || m.total > RESYNC_META_BITMAP_MAX ||
	    m.offset > m.total || m.len > m.total - m.offset || len - sizeof(h) != m.len)
		return -EBADMSG;
	*ret = m;
	return 0;
}

int wire_payload_check(unsigned type, const void *buf, size_t len)
{
	union {
		struct wire_hello hello;
		struct wire_text text;
		struct wire_hash_req req;
		struct wire_page_req page_req;
		struct wire_hash_reply reply;
		struct wire_blocks blocks;
		struct wire_extents extents;
		struct wire_uuid uuid;
		struct wire_status status;
		struct wire_bitmap bitmap;
		uint64_t offset;
	} u;

	switch (type) {
	case WIRE_HELLO:
	case WIRE_HELLO_ACK:
		return wire_hello_decode(buf, len, &u.hello);
	case WIRE_REFUSE:
	case WIRE_ERROR:
		return wire_text_decode(buf, len, &u.text);
	case WIRE_HASH_REQ:
		return wire_hash_req_decode(buf, len, &u.req);
	case WIRE_HASH_REPLY:
	case WIRE_PAGE_REPLY:
		return wire_hash_reply_decode(buf, len, &u.reply);
	case WIRE_PAGE_REQ:
		return wire_page_req_decode(buf, len, &u.page_req);
	case WIRE_BLOCKS:
		return wire_blocks_decode(buf, len, &u.blocks);
	case WIRE_EXTENTS:
		return wire_extents_decode(buf, len, &u.extents);
	case WIRE_ACK:
	case WIRE_CHECKPOINT:
		return wire_offset_decode(buf, len, &u.offset);
	case WIRE_COMMIT:
		return wire_commit_decode(buf, len, &u.uuid);
	case WIRE_STATUS_REQ:
	case WIRE_KEEPALIVE:
		return len == 0 ? 0 : -EBADMSG;
	case WIRE_STATUS:
		return wire_status_decode(buf, len, &u.status);
	case WIRE_BITMAP_REQ:
		return wire_offset_decode(buf, len, &u.offset);
	case WIRE_BITMAP:
		return wire_bitmap_decode(buf, len, &u.bitmap);
	case WIRE_CONTROL:
		/* Bytes of JSON lines, parsed (and bounded) by the session. */
		return len > 0 ? 0 : -EBADMSG;
	default:
		return -EBADMSG;
	}
}
