/* Little-endian fixed-width layouts of every frame and message, and their
 * conversion to and from host values. Nothing else in the project touches
 * wire bytes. This file: the frame header, names, state conversion, HELLO,
 * REFUSE/ERROR, ACK/CHECKPOINT, COMMIT, STATUS and wire_payload_check();
 * the layouts are in wire-int.h, the rest in wire-hash.c and wire-data.c. */
#include <endian.h>
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "resync/config.h"
#include "resync/macro.h"
#include "wire-int.h"
#include "wire.h"


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
	[WIRE_KEEPALIVE] = "KEEPALIVE",	  [WIRE_DRIFT] = "DRIFT",
	[WIRE_UNDO] = "UNDO",		  [WIRE_UNDO_REQ] = "UNDO_REQ",
	[WIRE_UNDO_INFO] = "UNDO_INFO",	  [WIRE_ROLLBACK] = "ROLLBACK",
	[WIRE_PROOF_REQ] = "PROOF_REQ",	  [WIRE_PROOF] = "PROOF",
	[WIRE_PROOF_COMMIT] = "PROOF_COMMIT",
	[WIRE_COPY] = "COPY",		  [WIRE_COPY_ACK] = "COPY_ACK",
	[WIRE_WEAK_REQ] = "WEAK_REQ",	  [WIRE_WEAK_REPLY] = "WEAK_REPLY",
	[WIRE_HASH_REQ_IF] = "HASH_REQ_IF", [WIRE_HASH_IF_ACK] = "HASH_IF_ACK",
	[WIRE_HASH_REQ_MORE] = "HASH_REQ_MORE",
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
	/* A number this build has no message for (past the end, or
	 * reserved for others' work) is refused like one past the end. */
	if (v.type < WIRE_HELLO || v.type > WIRE_TYPE_MAX || !strcmp(wire_type_name(v.type), "?"))
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

	if (tl > RESYNC_WIRE_TEXT_MAX || !text_valid(m->text, tl) ||
	    (m->state_said && (unsigned)m->state >= WIRE_STATE_COUNT))
		return -EINVAL;
	if (sizeof(h) + tl > cap)
		return -ENOBUFS;
	h = (struct wire_text_le){.code = htole32(m->code), .text_len = htole16(tl),
				  .state = htole16(m->state_said ? 1 + m->state : 0)};
	memcpy(buf, &h, sizeof(h));
	memcpy((unsigned char *)buf + sizeof(h), m->text, tl);
	*ret_len = sizeof(h) + tl;
	return 0;
}

int wire_text_decode(const void *buf, size_t len, struct wire_text *ret)
{
	struct wire_text_le h;
	const char *text = (const char *)buf + sizeof(h);
	size_t tl, st;

	if (head_get(buf, len, &h, sizeof(h)) < 0)
		return -EBADMSG;
	tl = le16toh(h.text_len);
	st = le16toh(h.state);
	if (st > WIRE_STATE_COUNT || tl > RESYNC_WIRE_TEXT_MAX || len != sizeof(h) + tl)
		return -EBADMSG;
	if (!text_valid(text, tl))
		return -EBADMSG;
	ret->code = le32toh(h.code);
	ret->state_said = st > 0;
	ret->state = st > 0 ? (enum wire_state)(st - 1) : WIRE_STATE_UNKNOWN;
	memcpy(ret->text, text, tl);
	ret->text[tl] = 0;
	return 0;
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

int wire_payload_check(unsigned type, const void *buf, size_t len)
{
	union {
		struct wire_hello hello;
		struct wire_text text;
		struct wire_hash_req req;
		struct wire_hash_req_if req_if;
		bool answered;
		struct wire_page_req page_req;
		struct wire_hash_reply reply;
		struct wire_blocks blocks;
		struct wire_extents extents;
		struct wire_uuid uuid;
		struct wire_status status;
		struct wire_bitmap bitmap;
		struct wire_drift drift;
		struct wire_undo_info undo_info;
		uint32_t mode;
		struct wire_proof proof;
		struct wire_copy copy;
		struct wire_copy_ack copy_ack;
		struct wire_weak_reply weak;
		uint64_t offset;
	} u;
	int r;

	switch (type) {
	case WIRE_HELLO:
	case WIRE_HELLO_ACK:
		return wire_hello_decode(buf, len, &u.hello);
	case WIRE_REFUSE:
	case WIRE_ERROR:
		return wire_text_decode(buf, len, &u.text);
	case WIRE_HASH_REQ:
	case WIRE_HASH_REQ_MORE:
		return wire_hash_req_decode(buf, len, &u.req);
	case WIRE_HASH_REQ_IF:
		return wire_hash_req_if_decode(buf, len, &u.req_if);
	case WIRE_HASH_IF_ACK:
		return wire_hash_if_ack_decode(buf, len, &u.answered);
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
	case WIRE_DRIFT:
		return wire_drift_decode(buf, len, &u.drift);
	case WIRE_UNDO:
		return wire_undo_decode(buf, len, &u.mode);
	case WIRE_UNDO_REQ:
	case WIRE_ROLLBACK:
		return len == 0 ? 0 : -EBADMSG;
	case WIRE_UNDO_INFO:
		return wire_undo_info_decode(buf, len, &u.undo_info);
	case WIRE_PROOF_REQ:
	case WIRE_PROOF:
		return wire_proof_decode(buf, len, &u.proof);
	case WIRE_PROOF_COMMIT:
		return wire_proof_commit_decode(buf, len, &u.proof, &u.uuid);
	case WIRE_COPY:
		return wire_copy_decode(buf, len, &u.copy);
	case WIRE_COPY_ACK:
		return wire_copy_ack_decode(buf, len, &u.copy_ack);
	case WIRE_WEAK_REQ:
		r = wire_page_req_decode(buf, len, &u.page_req);
		return r < 0 ? r : u.page_req.seed ? -EBADMSG : 0;
	case WIRE_WEAK_REPLY:
		return wire_weak_reply_decode(buf, len, &u.weak);
	case WIRE_CONTROL:
		/* Bytes of JSON lines, parsed (and bounded) by the session. */
		return len > 0 ? 0 : -EBADMSG;
	default:
		return -EBADMSG;
	}
}
