/* The pieces of the wire format share this header: every message's
 * little-endian layout (with the _Static_asserts that fix it), the limits
 * the layouts must respect, and the decoders' common prologue. Not for
 * outside wire*.c: wire.h is the wire format's public face, and these
 * files stay the only place where wire bytes become host values.
 *
 * Pieces (one concern a file):
 *   wire.c       frame header, type and reason names, state conversion,
 *                HELLO, REFUSE/ERROR, ACK/CHECKPOINT, COMMIT, STATUS, and
 *                wire_payload_check()
 *   wire-hash.c  ranges, HASH_REQ, PAGE_REQ, HASH_REPLY/PAGE_REPLY
 *   wire-data.c  zstd contexts, BLOCKS, EXTENTS, BITMAP
 *   wire-drift.c DRIFT
 *   wire-copy.c  COPY, COPY_ACK, WEAK_REPLY (moved and shifted data) */
#pragma once

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "resync/limits.h"
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
	uint16_t state; /* WIRE_FEATURE_ERROR_STATE: 1 + enum wire_state; 0 */
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

/* HASH_REQ_IF: this, then a HASH_REQ's payload. */
struct wire_hash_req_if_le {
	uint8_t gen[16];
	uint8_t base[16];
};
_Static_assert(sizeof(struct wire_hash_req_if_le) == 32, "hash_req_if layout");

/* HASH_IF_ACK. */
struct wire_hash_if_ack_le {
	uint32_t answered; /* 0 or 1 */
	uint32_t reserved; /* 0 */
};
_Static_assert(sizeof(struct wire_hash_if_ack_le) == 8, "hash_if_ack layout");

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

/* DRIFT. */
struct wire_drift_le {
	uint32_t state;
	uint32_t flags;
	uint64_t verify_time;
	uint64_t differing_bytes;
	uint64_t differing_blocks;
};
_Static_assert(sizeof(struct wire_drift_le) == 32, "drift layout");

struct wire_undo_le {
	uint32_t mode;
	uint32_t reserved;
};
_Static_assert(sizeof(struct wire_undo_le) == 8, "undo layout");

struct wire_undo_info_le {
	uint32_t flags;
	uint32_t state;
	uint64_t bytes;
	uint64_t saved;
	uint64_t until;
	uint64_t created;
};
_Static_assert(sizeof(struct wire_undo_info_le) == 40, "undo info layout");

struct wire_proof_le {
	uint32_t hash, block_size;
	uint64_t volume_size, hashed;
	uint8_t root[32];
};
_Static_assert(sizeof(struct wire_proof_le) == 56, "proof layout");

/* COPY: this, then n entries. */
struct wire_copy_le {
	uint64_t seed;
	uint32_t piece;
	uint32_t n;
};
_Static_assert(sizeof(struct wire_copy_le) == WIRE_COPY_HEADER, "copy layout");

struct wire_copy_entry_le {
	uint64_t dst, src;
	uint32_t len, reserved;
	uint64_t check_lo, check_hi;
};
_Static_assert(sizeof(struct wire_copy_entry_le) == WIRE_COPY_ENTRY_SIZE, "copy entry layout");
_Static_assert(offsetof(struct wire_copy_entry_le, check_lo) == 24, "copy entry layout");

/* COPY_ACK and WEAK_REPLY: this, then the bits or the sums. */
struct wire_count_le {
	uint32_t n;
	uint32_t n_failed; /* WEAK_REPLY: reserved, 0 */
};
_Static_assert(sizeof(struct wire_count_le) == 8, "count layout");

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
_Static_assert(WIRE_COPY_HEADER + WIRE_COPY_ENTRY_SIZE * (uint64_t)RESYNC_WIRE_COPIES_MAX <=
		       RESYNC_WIRE_FRAME_MAX,
	       "limits");
_Static_assert(8 + 4 * (uint64_t)RESYNC_WIRE_HASHES_MAX <= RESYNC_WIRE_FRAME_MAX, "limits");
_Static_assert(RESYNC_NAME_MAX <= UINT16_MAX && RESYNC_WIRE_TEXT_MAX <= UINT16_MAX, "limits");

/* Volume offsets and sizes must fit an off_t. */
#define WIRE_OFFSET_MAX ((uint64_t)INT64_MAX)

/* Copy the fixed header of a payload (every decoder's prologue);
 * -EBADMSG when the payload is shorter. */
static inline int head_get(const void *buf, size_t len, void *ret, size_t size)
{
	if (len < size)
		return -EBADMSG;
	memcpy(ret, buf, size);
	return 0;
}
