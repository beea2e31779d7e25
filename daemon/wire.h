/* The peer protocol's frames and messages: the one place where bytes on
 * the wire become host values and back.
 *
 * A frame is a 16-byte header {magic u32, version u16, type u16, length u32,
 * flags u32}, little-endian, followed by length bytes of payload. Every
 * decoder validates every field of peer bytes (lengths against
 * resync/limits.h before anything is sized from them) and returns -EBADMSG
 * for anything malformed; nothing here asserts on peer data. Encoders
 * return -ENOBUFS when the caller's buffer is too small and -EINVAL for a
 * message that could not be decoded back (our bug). All functions are
 * thread-safe except that a struct wire_zstd belongs to one thread. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "resync/hash.h"
#include "resync/hashtree.h"
#include "resync/limits.h"
#include "resync/meta.h"

#define WIRE_MAGIC 0x6e797372u /* "rsyn" as little-endian bytes */

enum {
	WIRE_FRAME_VERSION = 1, /* framing version, in every header */
	WIRE_HEADER_SIZE = 16,
	WIRE_PROTO_MIN = 1, /* message protocol versions this build speaks */
	WIRE_PROTO_MAX = 2, /* 2: PAGE_REQ/PAGE_REPLY (WIRE_FEATURE_PAGES) */
};

enum wire_type {
	WIRE_HELLO = 1,	 /* first frame of the connecting side */
	WIRE_HELLO_ACK,	 /* the accepting side's own hello: accepted */
	WIRE_REFUSE,	 /* refused, with a reason; the connection ends */
	WIRE_HASH_REQ,	 /* "hashes of these node ranges at this level" */
	WIRE_HASH_REPLY, /* those hashes, in order */
	WIRE_BLOCKS,	 /* a run of bytes at an offset, raw or zstd */
	WIRE_ACK,	 /* every byte below offset was written */
	WIRE_CHECKPOINT, /* every byte below offset is durable and checkpointed */
	WIRE_COMMIT,	 /* take this generation: the resync is complete */
	WIRE_ERROR,	 /* a failure, with a code and a text */
	WIRE_STATUS_REQ, /* "your status": empty payload */
	WIRE_STATUS,	 /* dirty bytes, last resync, checkpoint */
	WIRE_BITMAP_REQ, /* "your dirty bitmap from this byte on" (an offset) */
	WIRE_BITMAP,	 /* a piece of the dirty bitmap */
	WIRE_PAGE_REQ,	 /* protocol 2: "hashes of the pages of these byte ranges" */
	WIRE_PAGE_REPLY, /* protocol 2: those hashes, in order (HASH_REPLY's layout) */
	WIRE_EXTENTS,	 /* WIRE_FEATURE_EXTENTS: several runs of bytes, raw or zstd */
	WIRE_CONTROL,	 /* WIRE_FEATURE_CONTROL: bytes of a forwarded control stream */
	WIRE_KEEPALIVE = 19, /* WIRE_FEATURE_KEEPALIVE: "still here", empty payload */
	WIRE_DRIFT = 20,     /* WIRE_FEATURE_DRIFT: the primary's word on this node */
	/* WIRE_FEATURE_UNDO: */
	WIRE_UNDO = 21,	     /* the primary: the undo mode of this resync */
	WIRE_UNDO_REQ = 22,  /* "your undo journal": empty payload */
	WIRE_UNDO_INFO = 23, /* the journal held: bytes, until when */
	WIRE_ROLLBACK = 24,  /* the primary: roll back; ACK saved bytes | ERROR */
	WIRE_PROOF_REQ = 25, /* WIRE_FEATURE_PROOF: "your volume's root", before COMMIT */
	WIRE_PROOF = 26,     /* WIRE_FEATURE_PROOF: that root */
	/* WIRE_FEATURE_PROOF_COMMIT: PROOF_REQ and COMMIT in one exchange. */
	WIRE_PROOF_COMMIT = 27,
	/* 28-29: reserved. */
	WIRE_COPY = 30,	       /* WIRE_FEATURE_COPY: copy ranges the secondary holds */
	WIRE_COPY_ACK = 31,    /* WIRE_FEATURE_COPY: which of them were not applied */
	WIRE_WEAK_REQ = 32,    /* WIRE_FEATURE_ROLLING: "weak sums of these pieces" */
	WIRE_WEAK_REPLY = 33,  /* WIRE_FEATURE_ROLLING: those sums, in order */
	WIRE_HASH_REQ_IF = 34, /* WIRE_FEATURE_HASH_IF: a HASH_REQ, if bound to compare */
	WIRE_HASH_IF_ACK = 35, /* WIRE_FEATURE_HASH_IF: whether its HASH_REPLY follows */
	/* WIRE_FEATURE_HASH_MORE: a HASH_REQ, answered (no ACK) if and only if
	 * the session's last HASH_REQ_IF was. */
	WIRE_HASH_REQ_MORE = 36,
	WIRE_TYPE_MAX = WIRE_HASH_REQ_MORE,
};

/* Name of a type for messages ("HELLO"), "?" if unknown. */
const char *wire_type_name(unsigned type);

struct wire_header {
	uint16_t version;
	uint16_t type;
	uint32_t length; /* payload bytes, <= RESYNC_WIRE_FRAME_MAX */
	uint32_t flags;	 /* none defined yet: must be 0 */
};

void wire_header_encode(uint16_t type, uint32_t length, unsigned char out[WIRE_HEADER_SIZE]);
/* Validate magic, version, type, flags and length. -EBADMSG otherwise. */
int wire_header_decode(const unsigned char in[WIRE_HEADER_SIZE], struct wire_header *ret);

/* Cluster and node names: 1 to RESYNC_NAME_MAX bytes of [A-Za-z0-9._-],
 * starting with a letter or digit. They travel in HELLO and are the TLS
 * PSK identity, so the config accepts exactly these. */
bool wire_name_valid(const char *s, size_t len);

/* Highest protocol version in both ranges; -EPROTONOSUPPORT if none. */
int wire_proto_negotiate(uint16_t a_min, uint16_t a_max, uint16_t b_min, uint16_t b_max,
			 uint16_t *ret);

struct wire_uuid {
	uint8_t b[16];
};

/* A node's state in a hello. Protocol values: they never change, and a
 * new one needs a feature flag (a peer rejects a hello whose state it does
 * not know). The node's states are the engine's enum meta_state: convert
 * with the pair below, name with meta_state_name(). */
enum wire_state {
	WIRE_STATE_UNKNOWN = 0,
	WIRE_STATE_UPTODATE = 1,
	WIRE_STATE_OUTDATED = 2,
	WIRE_STATE_INCONSISTENT = 3,
	WIRE_STATE_DIVERGED = 4,
	WIRE_STATE_COUNT,
};
/* The wire's value for state (WIRE_STATE_UNKNOWN for one it cannot say). */
enum wire_state wire_state_from_meta(enum meta_state state);
/* The state a wire value stands for (META_STATE_UNKNOWN for a value that
 * is none: decoders reject those, this never trusts that they did). */
enum meta_state meta_state_from_wire(uint32_t state);

enum wire_features {
	WIRE_FEATURE_ZSTD = 1 << 0,	/* BLOCKS may be zstd-encoded */
	WIRE_FEATURE_HASHTREE = 1 << 1, /* HASH_REQ/HASH_REPLY */
	WIRE_FEATURE_PAGES = 1 << 2,	/* PAGE_REQ/PAGE_REPLY (protocol 2) */
	WIRE_FEATURE_EXTENTS = 1 << 3,	/* EXTENTS: several runs in one frame */
	WIRE_FEATURE_FINE_LEAVES = 1 << 4, /* HASH_REQ names its leaf size */
	/* In a primary's hello: this session may rewrite the secondary, which
	 * grows a smaller file volume to the primary's size before it answers
	 * (a plan or a verify never sets it: they change nothing). */
	WIRE_FEATURE_GROW = 1 << 5,
	/* CONTROL: a secondary forwards a cluster-wide control request
	 * (verify, resync, cancel, pause, resume, rate) to the primary over
	 * the peer connection: one CONTROL frame with the request's JSON
	 * line, answered by CONTROL frames carrying the reply's JSON lines
	 * (a line may span frames), the last line the result. */
	WIRE_FEATURE_CONTROL = 1 << 6,
	/* KEEPALIVE: a frame with an empty payload that says only "still
	 * here", sent by a connection's owner while it waits on something
	 * other than the peer (a pause, hashing a volume) once the
	 * connection has been silent for a third (WIRE_KEEPALIVE_DIVISOR)
	 * of the cluster's session_timeout. A receive skips it and starts its
	 * deadline over (peer_conn_recv_frame()), so that a session's
	 * timeout measures a silent peer, not the gap between two requests.
	 * Sent only to a peer whose hello offered the bit (an older build
	 * refuses the unknown type); one received from a peer that did not
	 * offer it is skipped as well (harmless). */
	WIRE_FEATURE_KEEPALIVE = 1 << 7,
	/* DRIFT: the primary tells a secondary how it judges it (its state
	 * from the primary's view) and what the last verify found on it, so
	 * that the secondary's /health can say so without asking anyone;
	 * answered by an ACK. Sent only to a peer that offered the bit. */
	WIRE_FEATURE_DRIFT = 1 << 8,
	/* UNDO: the undo journal (resync/undo.h). A primary's write session
	 * sends UNDO {mode} before its first data frame (without it the
	 * secondary takes the mode from the cluster file); the secondary
	 * journals when mode is on, or diverged and it held writes of its
	 * own at the hello. UNDO_REQ asks what journal a node holds
	 * (UNDO_INFO); ROLLBACK (primary only) has the secondary put its
	 * journal back. Numbered apart from the bits other work adds. */
	WIRE_FEATURE_UNDO = 1 << 12,
	/* PROOF: after the last data and before COMMIT the primary asks for
	 * the root hash of the secondary's volume (resync/proof.h) with a
	 * PROOF_REQ naming the hash and block size; the secondary (fenced,
	 * Inconsistent) answers with a PROOF. The primary commits it only
	 * when the root is its own. Sent only to a peer that offered it. */
	WIRE_FEATURE_PROOF = 1 << 9,
	/* PROOF_COMMIT (issue 18): the primary's root and the generation in
	 * one frame, instead of PROOF_REQ, its answer, then COMMIT. The
	 * secondary makes its proof as for PROOF_REQ and answers PROOF; when
	 * the roots (and sizes) are the same it commits as for COMMIT and
	 * answers ACK too, else it stays Inconsistent and the primary fails
	 * the job. Sent only to a peer that offered both PROOF and this. */
	WIRE_FEATURE_PROOF_COMMIT = 1 << 10,
	/* COPY: data that the secondary already holds at another offset
	 * (moved blocks, shifted data) travels as COPY frames of {dst, src,
	 * len, check} instead of bytes, before the pass's data frames. The
	 * secondary reads every source of a frame, checks each against its
	 * check hash (the source's bytes may have changed since the compare:
	 * a crash, an earlier copy), then writes the destinations that
	 * passed, under the fence and with the undo journal like data. It
	 * answers each COPY with a COPY_ACK naming the entries it did not
	 * apply; the primary sends those as data. Sent only to a peer that
	 * offered the bit. */
	WIRE_FEATURE_COPY = 1 << 14,
	/* ROLLING: WEAK_REQ asks for the weak rolling checksums
	 * (resync/rollsum.h) of pieces of byte ranges (PAGE_REQ's layout, seed
	 * 0); the primary searches its differing data for windows equal to
	 * the secondary's pieces (shifted data) and sends them as COPY. */
	WIRE_FEATURE_ROLLING = 1 << 15,
	/* REHELLO (issue 18): a HELLO again on a session whose first hello
	 * was answered: the session starts over as after its first hello
	 * (what the last request learnt is let go, the hash tree back to the
	 * node's cache, whence it is taken again only while the image is
	 * unchanged) and answers HELLO_ACK. The primary keeps a plan's
	 * connections for the resync that follows it, which pays no connect
	 * and no TLS handshake. Sent only to a peer that offered the bit. */
	WIRE_FEATURE_REHELLO = 1 << 16,
	/* HASH_IF (issue 18): the primary asks for the first level of the
	 * hash tree in the flight of its hello, before the hellos tell it
	 * whether it compares this secondary in full or takes the quick way:
	 * a HASH_REQ_IF names the generations a quick resync starts from
	 * (the primary's current one and its bitmap's base), and the
	 * secondary answers it with the tree's level only when the primary is
	 * bound to compare (its own bitmap not trusted, Inconsistent, or at
	 * neither generation), else declines at once, building no tree.
	 * Sent only to a peer whose hello offered the bit, as the primary
	 * remembers it from an earlier connection (job-hashif.c). */
	WIRE_FEATURE_HASH_IF = 1 << 17,
	/* EARLY_DATA (issue 18): a REHELLO may say WIRE_HELLO_DATA_FOLLOWS:
	 * the primary sends data frames right behind it, before it read the
	 * HELLO_ACK. The secondary then also refuses the hello when it sees
	 * split brain from its side (a primary would refuse that resync
	 * after its status), and takes what follows a refused hello off the
	 * wire without applying it. Sent only to a peer that offered it. */
	WIRE_FEATURE_EARLY_DATA = 1 << 18,
	/* HASH_MORE (issue 18): the first level asked for in the flight of
	 * the hello may take several requests (a HASH_REPLY holds at most
	 * RESYNC_WIRE_HASHES_MAX hashes). The first goes as a HASH_REQ_IF,
	 * the rest as HASH_REQ_MORE, each a HASH_REQ's payload: the secondary
	 * answers one with its HASH_REPLY, and no HASH_IF_ACK, when the
	 * session's last HASH_REQ_IF was answered, and ignores it when that
	 * was declined (so a secondary that ends up quick builds no tree for
	 * the rest either); one with no HASH_REQ_IF before it in the session
	 * is a protocol error. Sent only to a peer whose hello offered the
	 * bit, as the primary remembers it (job-hashif.c). */
	WIRE_FEATURE_HASH_MORE = 1 << 19,
	/* ERROR_STATE: a secondary's ERROR says the state its failure left
	 * it in (the text's 16-bit word after text_len: 1 + enum wire_state,
	 * 0 not said; an older decoder refuses any but 0), so that the
	 * primary reports what the secondary holds (a write refused at the
	 * first, session_write_check(): nothing written, its state
	 * unchanged) rather than a guess from the bytes it sent. Sent only
	 * to a peer whose hello offered the bit. */
	WIRE_FEATURE_ERROR_STATE = 1 << 20,
};

/* A KEEPALIVE is due after session_timeout / WIRE_KEEPALIVE_DIVISOR of
 * silence: well before the peer's deadline, even when the wait that sends
 * it checks only now and then (a work unit hashed, a pacing tick). */
enum { WIRE_KEEPALIVE_DIVISOR = 3 };

/* The leaves a hash tree is built on when both peers speak
 * WIRE_FEATURE_FINE_LEAVES (HASH_REQ then says it; without, leaves are
 * the cluster's blocks): the smallest power of two of at least
 * RESYNC_PAGE bytes that makes at most WIRE_TREE_FINE_LEAVES leaves, and
 * never more than a block. A small volume's compare finds the differing
 * pages themselves (no PAGE_REQ round, no second read of differing
 * blocks); a large one's tree costs no more memory than with blocks. */
enum { WIRE_TREE_FINE_LEAVES = 1 << 20 };
static inline uint32_t wire_tree_leaf(uint64_t volume_size, uint32_t block_size)
{
	uint32_t leaf = RESYNC_PAGE;

	while (leaf < block_size &&
	       volume_size / leaf + (volume_size % leaf != 0) > WIRE_TREE_FINE_LEAVES)
		leaf <<= 1;
	return leaf < block_size ? leaf : block_size;
}

enum wire_hello_flags {
	WIRE_HELLO_BITMAP_TRUSTED = 1 << 0, /* the dirty bitmap covers every write */
	WIRE_HELLO_PRIMARY = 1 << 1,	    /* the sender is the cluster's primary */
	WIRE_HELLO_DATA_FOLLOWS = 1 << 2,   /* data frames follow (WIRE_FEATURE_EARLY_DATA) */
	WIRE_HELLO_FLAGS_ALL = (1 << 3) - 1,
};

struct wire_hello {
	char cluster[RESYNC_NAME_MAX + 1];
	char node[RESYNC_NAME_MAX + 1];
	uint16_t proto_min, proto_max;
	uint64_t features; /* unknown bits are kept: peers use the intersection */
	uint64_t volume_size;
	uint32_t block_size;
	uint32_t state; /* enum wire_state */
	uint32_t flags; /* enum wire_hello_flags */
	struct wire_uuid generation;
	uint32_t n_history; /* <= RESYNC_WIRE_HISTORY_MAX, most recent first */
	struct wire_uuid history[RESYNC_WIRE_HISTORY_MAX];
};
int wire_hello_encode(const struct wire_hello *m, void *buf, size_t cap, size_t *ret_len);
int wire_hello_decode(const void *buf, size_t len, struct wire_hello *ret);

/* REFUSE and ERROR. */
enum wire_reason {
	WIRE_REASON_OTHER = 0,
	WIRE_REASON_CLUSTER,	 /* another cluster's name */
	WIRE_REASON_NODE,	 /* a node name the config does not know */
	WIRE_REASON_PROTOCOL,	 /* no common protocol version */
	WIRE_REASON_BLOCK_SIZE,	 /* block sizes differ */
	WIRE_REASON_VOLUME_SIZE, /* volume sizes differ */
	WIRE_REASON_BUSY,	 /* already in a resync */
	WIRE_REASON_MESSAGE,	 /* an unexpected or malformed message */
	WIRE_REASON_IO,		 /* a local I/O error */
	WIRE_REASON_COUNT,
};
/* Name of a reason; unknown codes (from newer peers) are "other". */
const char *wire_reason_name(uint32_t code);

struct wire_text {
	uint32_t code; /* enum wire_reason; any value is accepted */
	/* WIRE_FEATURE_ERROR_STATE: the sender's state as its failure left
	 * it (an ERROR of a secondary to its primary), when state_said. */
	bool state_said;
	enum wire_state state;
	char text[RESYNC_WIRE_TEXT_MAX + 1];
};
/* Text: at most RESYNC_WIRE_TEXT_MAX bytes, no control characters; a
 * state (said) below WIRE_STATE_COUNT, else -EINVAL / -EBADMSG. */
int wire_text_encode(const struct wire_text *m, void *buf, size_t cap, size_t *ret_len);
int wire_text_decode(const void *buf, size_t len, struct wire_text *ret);

/* HASH_REQ: the hashes of ranges of nodes at one level of the hash tree
 * built with seed and fanout (see resync/hashtree.h) over leaves of
 * leaf_size bytes (a valid block size; 0: the cluster's block size, and
 * not on the wire: what peers without WIRE_FEATURE_FINE_LEAVES send).
 * Decoding gives a view into the caller's buffer; wire_hash_req_range()
 * reads range i. */
struct wire_hash_req {
	uint64_t seed;
	uint16_t level;
	uint16_t fanout;
	uint32_t leaf_size;
	uint32_t n_ranges;  /* 1 to RESYNC_WIRE_RANGES_MAX */
	uint64_t n_hashes;  /* sum of counts, <= RESYNC_WIRE_HASHES_MAX */
	const void *ranges; /* decoded: points into the payload */
};
int wire_hash_req_encode(uint64_t seed, unsigned level, unsigned fanout, uint32_t leaf_size,
			 const struct hashtree_range *ranges, size_t n, void *buf, size_t cap,
			 size_t *ret_len);
int wire_hash_req_decode(const void *buf, size_t len, struct wire_hash_req *ret);
struct hashtree_range wire_hash_req_range(const struct wire_hash_req *m, size_t i);

/* HASH_REQ_IF (WIRE_FEATURE_HASH_IF): two generations, then a HASH_REQ's
 * payload. The secondary answers HASH_IF_ACK at once: answered 1, and
 * then the HASH_REPLY of req, when the primary is bound to compare it in
 * full (its bitmap not trusted, Inconsistent, its generation null or
 * neither gen nor base; a null base names none); answered 0, and nothing
 * else, when the quick way may be taken. */
struct wire_hash_req_if {
	struct wire_uuid gen, base;
	struct wire_hash_req req; /* decoded: its ranges point into the payload */
};
int wire_hash_req_if_encode(const struct wire_uuid *gen, const struct wire_uuid *base,
			    uint64_t seed, unsigned level, unsigned fanout, uint32_t leaf_size,
			    const struct hashtree_range *ranges, size_t n, void *buf, size_t cap,
			    size_t *ret_len);
int wire_hash_req_if_decode(const void *buf, size_t len, struct wire_hash_req_if *ret);
/* HASH_IF_ACK: whether the HASH_REPLY follows (1) or not (0). */
int wire_hash_if_ack_encode(bool answered, void *buf, size_t cap, size_t *ret_len);
int wire_hash_if_ack_decode(const void *buf, size_t len, bool *ret_answered);

/* HASH_REPLY: n hashes (<= RESYNC_WIRE_HASHES_MAX) of one level. */
struct wire_hash_reply {
	uint16_t level;
	uint32_t n_hashes;
	const void *hashes; /* decoded: points into the payload */
};
int wire_hash_reply_encode(unsigned level, const struct hash128 *hashes, size_t n, void *buf,
			   size_t cap, size_t *ret_len);
int wire_hash_reply_decode(const void *buf, size_t len, struct wire_hash_reply *ret);
/* Copy the reply's hashes to out (room for cap). -ENOBUFS if too few. */
int wire_hash_reply_get(const struct wire_hash_reply *m, struct hash128 *out, size_t cap);

/* PAGE_REQ (protocol 2): the seeded hashes of the pages of byte ranges
 * of the volume, so that only the pages that differ inside differing
 * blocks travel. page_size is a valid block size (resync/limits.h); each
 * range starts on a page boundary and is not empty; the pages of all
 * ranges (a short last page counts as one) number at most
 * RESYNC_WIRE_HASHES_MAX, in at most RESYNC_WIRE_RANGES_MAX ranges. The
 * receiver checks the ranges against its volume's size (a range may end
 * off a page boundary only at the volume's end). The answer is a
 * PAGE_REPLY: a HASH_REPLY payload (level 0) with one hash per page, in
 * order (hash_block() of the page's bytes with seed). Decoding gives a
 * view into the caller's buffer; wire_page_req_range() reads range i as
 * {first = byte offset, count = bytes}. */
struct wire_page_req {
	uint64_t seed;
	uint32_t page_size;
	uint32_t n_ranges;  /* 1 to RESYNC_WIRE_RANGES_MAX */
	uint64_t n_pages;   /* pages of all ranges, <= RESYNC_WIRE_HASHES_MAX */
	const void *ranges; /* decoded: points into the payload */
};
/* Pages of a byte range of len bytes: a short last page counts as one. */
static inline uint64_t wire_pages(uint64_t len, uint32_t page_size)
{
	return len / page_size + (len % page_size != 0);
}
int wire_page_req_encode(uint64_t seed, uint32_t page_size, const struct hashtree_range *ranges,
			 size_t n, void *buf, size_t cap, size_t *ret_len);
int wire_page_req_decode(const void *buf, size_t len, struct wire_page_req *ret);
struct hashtree_range wire_page_req_range(const struct wire_page_req *m, size_t i);

/* BLOCKS: bytes [offset, offset + raw_len) of the volume. */
enum wire_encoding {
	WIRE_ENC_RAW = 0,
	WIRE_ENC_ZSTD = 1,
};
enum { WIRE_BLOCKS_HEADER = 24 };
struct wire_blocks {
	uint64_t offset;
	uint32_t raw_len;   /* 1 to RESYNC_WIRE_BLOCKS_MAX */
	uint32_t enc_len;   /* raw: == raw_len; zstd: < raw_len */
	uint16_t encoding;  /* enum wire_encoding */
	const void *data;   /* decoded: enc_len bytes in the payload */
};

/* zstd contexts for BLOCKS, reused across messages; one per thread. */
struct wire_zstd;
/* level: a zstd level (ZSTD_minCLevel() to ZSTD_maxCLevel(); 0 = 1). */
int wire_zstd_new(int level, struct wire_zstd **ret);
void wire_zstd_free(struct wire_zstd *z);
/* The level of the frames encoded from now on (between two frames). */
int wire_zstd_set_level(struct wire_zstd *z, int level);

/* Payload bytes that wire_blocks_encode() may need for len raw bytes. */
static inline size_t wire_blocks_bound(size_t len)
{
	return WIRE_BLOCKS_HEADER + len;
}
/* Encode data[0, len) at offset as a BLOCKS payload: zstd when it makes
 * the data smaller (z may be NULL: always raw), raw otherwise. */
int wire_blocks_encode(struct wire_zstd *z, uint64_t offset, const void *data, size_t len,
		       void *buf, size_t cap, size_t *ret_len);
int wire_blocks_decode(const void *buf, size_t len, struct wire_blocks *ret);
/* Decode the data of m into out (room for cap >= m->raw_len bytes): the
 * zstd frame must declare exactly raw_len bytes, be a single frame using
 * all enc_len bytes, and produce exactly raw_len bytes. Returns raw_len,
 * -ENOBUFS or -EBADMSG. */
int wire_blocks_unpack(struct wire_zstd *z, const struct wire_blocks *m, void *out, size_t cap);
/* As wire_blocks_unpack(), but raw data is not copied: *ret is m's own
 * payload (borrowed from the frame) when it is raw, out when it was
 * decompressed there. Returns raw_len and *ret, -ENOBUFS or -EBADMSG. */
int wire_blocks_bytes(struct wire_zstd *z, const struct wire_blocks *m, void *out, size_t cap,
		      const void **ret);

/* EXTENTS (WIRE_FEATURE_EXTENTS): n_extents runs of bytes of the volume
 * in one frame. A header {n_extents, raw_len, enc_len, encoding}, a table
 * of n_extents {offset, len} (sorted by offset, not overlapping, none
 * empty, each inside the volume's offset range, lengths summing to
 * raw_len), then the runs' bytes concatenated in table order: one zstd
 * frame when that is smaller, raw otherwise. 1 to RESYNC_WIRE_EXTENTS_MAX
 * extents, raw_len 1 to RESYNC_WIRE_BLOCKS_MAX. Decoding gives a view
 * into the caller's buffer; wire_extents_get() reads extent i. */
enum { WIRE_EXTENTS_HEADER = 16, WIRE_EXTENT_SIZE = 16 };
struct wire_extent {
	uint64_t offset;
	uint32_t len;
};
struct wire_extents {
	uint32_t n_extents;
	uint32_t raw_len;   /* sum of the extents' lengths */
	uint32_t enc_len;   /* raw: == raw_len; zstd: < raw_len */
	uint16_t encoding;  /* enum wire_encoding */
	const void *table;  /* decoded: n_extents entries in the payload */
	const void *data;   /* decoded: enc_len bytes in the payload */
};
/* Payload bytes that wire_extents_encode() may need. */
static inline size_t wire_extents_bound(size_t n, size_t len)
{
	return WIRE_EXTENTS_HEADER + n * WIRE_EXTENT_SIZE + len;
}
/* Encode ext[0, n) whose bytes are data[0, sum of lengths): zstd when it
 * makes them smaller (z may be NULL: always raw), raw otherwise. -EINVAL
 * for extents that would not decode. */
int wire_extents_encode(struct wire_zstd *z, const struct wire_extent *ext, size_t n,
			const void *data, void *buf, size_t cap, size_t *ret_len);
/* The head (header and table: exactly wire_extents_bound(n, 0) bytes,
 * cap) of a raw EXTENTS frame of ext[0, n) into buf, for a sender that
 * keeps the bytes right behind it: the frame is then buf[0, cap + sum of
 * lengths), with no copy of them. -EINVAL as wire_extents_encode(). */
int wire_extents_raw_head(const struct wire_extent *ext, size_t n, void *buf, size_t cap);
int wire_extents_decode(const void *buf, size_t len, struct wire_extents *ret);
struct wire_extent wire_extents_get(const struct wire_extents *m, size_t i);
/* Decode the bytes of m into out (room for cap >= m->raw_len), as
 * wire_blocks_unpack() does: extent i's bytes follow extent i-1's.
 * Returns raw_len, -ENOBUFS or -EBADMSG. */
int wire_extents_unpack(struct wire_zstd *z, const struct wire_extents *m, void *out, size_t cap);
/* As wire_blocks_bytes(), for EXTENTS. */
int wire_extents_bytes(struct wire_zstd *z, const struct wire_extents *m, void *out, size_t cap,
		       const void **ret);

/* ACK and CHECKPOINT. */
int wire_offset_encode(uint64_t offset, void *buf, size_t cap, size_t *ret_len);
int wire_offset_decode(const void *buf, size_t len, uint64_t *ret);

/* COMMIT. */
int wire_commit_encode(const struct wire_uuid *generation, void *buf, size_t cap,
		       size_t *ret_len);
int wire_commit_decode(const void *buf, size_t len, struct wire_uuid *ret);

/* STATUS: what HELLO does not carry, for status and the resync plan. */
enum wire_status_flags {
	WIRE_STATUS_CHECKPOINT = 1 << 0, /* checkpoint_off/_id are set */
	WIRE_STATUS_FLAGS_ALL = (1 << 1) - 1,
};
struct wire_status {
	uint64_t dirty_bytes;	  /* bytes of the blocks marked dirty */
	uint64_t last_resync;	  /* unix seconds of the last completed resync, 0 never */
	uint64_t checkpoint_off;  /* every byte below is done for checkpoint_id */
	uint32_t flags;		  /* enum wire_status_flags */
	struct wire_uuid checkpoint_id;
};
int wire_status_encode(const struct wire_status *m, void *buf, size_t cap, size_t *ret_len);
int wire_status_decode(const void *buf, size_t len, struct wire_status *ret);

/* DRIFT (WIRE_FEATURE_DRIFT): the primary's word on the secondary it
 * sends it to. state is the secondary's state from the primary's view
 * (enum wire_state); with WIRE_DRIFT_VERIFIED, the last completed verify
 * of that secondary ran at verify_time (unix seconds) and found
 * differing_bytes in differing_blocks blocks (0: identical). */
enum wire_drift_flags {
	WIRE_DRIFT_VERIFIED = 1 << 0,
	WIRE_DRIFT_FLAGS_ALL = (1 << 1) - 1,
};
struct wire_drift {
	uint32_t state; /* enum wire_state */
	uint32_t flags; /* enum wire_drift_flags */
	uint64_t verify_time;
	uint64_t differing_bytes;
	uint64_t differing_blocks;
};
int wire_drift_encode(const struct wire_drift *m, void *buf, size_t cap, size_t *ret_len);
int wire_drift_decode(const void *buf, size_t len, struct wire_drift *ret);

/* UNDO: {mode u32 (enum undo_mode), reserved u32 = 0}. */
int wire_undo_encode(uint32_t mode, void *buf, size_t cap, size_t *ret_len);
int wire_undo_decode(const void *buf, size_t len, uint32_t *ret_mode);

/* UNDO_INFO: the undo journal a node holds. */
enum wire_undo_flags {
	WIRE_UNDO_HELD = 1 << 0,     /* a journal is held: the fields below are set */
	WIRE_UNDO_ROLLBACK = 1 << 1, /* a rollback started and did not end */
	WIRE_UNDO_FLAGS_ALL = (1 << 2) - 1,
};
struct wire_undo_info {
	uint32_t flags;	 /* enum wire_undo_flags */
	uint32_t state;	 /* enum wire_state: the state a rollback restores */
	uint64_t bytes;	 /* the journal's size */
	uint64_t saved;	 /* old bytes it holds */
	uint64_t until;	 /* unix seconds: kept until */
	uint64_t created; /* unix seconds */
};
int wire_undo_info_encode(const struct wire_undo_info *m, void *buf, size_t cap, size_t *ret_len);
int wire_undo_info_decode(const void *buf, size_t len, struct wire_undo_info *ret);

/* PROOF_REQ (hash, block_size; root and hashed 0) and PROOF: the root of
 * the sender's volume of volume_size bytes, and the blocks it hashed
 * again to make it (the rest came from its leaf file). */
struct wire_proof {
	uint32_t hash;	     /* enum proof_hash */
	uint32_t block_size; /* a valid block size */
	uint64_t volume_size;
	uint64_t hashed;
	uint8_t root[32]; /* the first 16 bytes for xxh3, the rest 0 */
};
int wire_proof_encode(const struct wire_proof *m, void *buf, size_t cap, size_t *ret_len);
int wire_proof_decode(const void *buf, size_t len, struct wire_proof *ret);
/* PROOF_COMMIT: a PROOF (the primary's root) and then a COMMIT's
 * generation. */
int wire_proof_commit_encode(const struct wire_proof *m, const struct wire_uuid *generation,
			     void *buf, size_t cap, size_t *ret_len);
int wire_proof_commit_decode(const void *buf, size_t len, struct wire_proof *ret,
			     struct wire_uuid *ret_generation);

/* BITMAP: bytes [offset, offset + len) of a dirty bitmap of total bytes
 * (bit i of byte i/8 is block i, LSB first); len <= RESYNC_WIRE_BLOCKS_MAX,
 * total <= RESYNC_META_BITMAP_MAX. Decoding gives a view into the buffer.
 * BITMAP_REQ carries the byte offset wanted, as an offset message. */
struct wire_bitmap {
	uint64_t offset;
	uint64_t total;
	uint32_t len;
	const void *data;
};
int wire_bitmap_encode(uint64_t offset, uint64_t total, const void *data, size_t len, void *buf,
		       size_t cap, size_t *ret_len);
int wire_bitmap_decode(const void *buf, size_t len, struct wire_bitmap *ret);

/* COPY (WIRE_FEATURE_COPY): a header {seed u64, piece u32, n u32}, then n
 * entries {dst u64, src u64, len u32, reserved u32, check 16 bytes}. Each
 * entry copies the secondary's bytes [src, src + len) to [dst, dst + len)
 * (1 to RESYNC_WIRE_COPY_LEN_MAX bytes, dst != src, neither range past
 * WIRE's offset limit); entries are sorted by dst and their destinations
 * do not overlap; their lengths sum to at most RESYNC_WIRE_COPY_STAGE_MAX;
 * 1 to RESYNC_WIRE_COPIES_MAX entries; piece is a valid block size. check
 * is wire_copy_check() of the hashes (hash_block() with seed) of the
 * source's pieces: piece bytes each from src, the last one shorter when
 * len is not a multiple. The receiver checks the ranges against its
 * volume. */
enum { WIRE_COPY_HEADER = 16, WIRE_COPY_ENTRY_SIZE = 40 };
struct wire_copy_entry {
	uint64_t dst, src;
	uint32_t len;
	struct hash128 check;
};
struct wire_copy {
	uint64_t seed;
	uint32_t piece;
	uint32_t n;	      /* entries */
	uint64_t total;	      /* sum of their lengths */
	const void *entries; /* decoded: points into the payload */
};
/* Payload bytes of a COPY of n entries. */
static inline size_t wire_copy_bound(size_t n)
{
	return WIRE_COPY_HEADER + n * WIRE_COPY_ENTRY_SIZE;
}
int wire_copy_encode(uint64_t seed, uint32_t piece, const struct wire_copy_entry *e, size_t n,
		     void *buf, size_t cap, size_t *ret_len);
int wire_copy_decode(const void *buf, size_t len, struct wire_copy *ret);
struct wire_copy_entry wire_copy_get(const struct wire_copy *m, size_t i);
/* The check of a copy whose source pieces hash to pieces[0, n): the seeded
 * hash of their little-endian bytes. */
struct hash128 wire_copy_check(const struct hash128 *pieces, size_t n, uint64_t seed);

/* COPY_ACK: {n u32, n_failed u32}, then ceil(n / 8) bytes: bit i (of byte
 * i / 8, LSB first) set when entry i of the COPY was not applied (its
 * source did not match its check); n_failed bits are set, the bits past n
 * are 0. */
struct wire_copy_ack {
	uint32_t n, n_failed;
	const void *bits; /* decoded: points into the payload */
};
int wire_copy_ack_encode(uint32_t n, const unsigned char *bits, void *buf, size_t cap,
			 size_t *ret_len);
int wire_copy_ack_decode(const void *buf, size_t len, struct wire_copy_ack *ret);
static inline bool wire_copy_ack_failed(const struct wire_copy_ack *m, size_t i)
{
	return ((const unsigned char *)m->bits)[i / 8] & (1u << (i % 8));
}

/* WEAK_REQ: a PAGE_REQ payload (wire_page_req_encode/_decode) with seed
 * 0, page_size the piece. WEAK_REPLY: {n u32, reserved u32}, then n weak
 * sums u32 (rollsum_block() of each piece, a short last piece of a range
 * at the volume's end too), n <= RESYNC_WIRE_HASHES_MAX. */
struct wire_weak_reply {
	uint32_t n;
	const void *sums; /* decoded: points into the payload */
};
int wire_weak_reply_encode(const uint32_t *sums, size_t n, void *buf, size_t cap,
			   size_t *ret_len);
int wire_weak_reply_decode(const void *buf, size_t len, struct wire_weak_reply *ret);
uint32_t wire_weak_reply_get(const struct wire_weak_reply *m, size_t i);

/* Validate any payload of a known type (the fuzz target's and a strict
 * receiver's entry point): 0 or -EBADMSG. */
int wire_payload_check(unsigned type, const void *buf, size_t len);
