/* Every size limit of the project in one place. Lengths that come from a
 * peer or a file are checked against these before use. */
#pragma once

enum resync_limits {
	RESYNC_BLOCK_MIN = 4096,
	RESYNC_BLOCK_MAX = 1 << 20,
	RESYNC_BLOCK_DEFAULT = 64 * 1024,
	/* Granularity of writes inside a differing block: pages that still
	 * match are not rewritten. */
	RESYNC_PAGE = 4096,
	/* Unit of I/O of the compare/hash readers. */
	RESYNC_CHUNK = 1 << 20,
	/* Work unit handed to a reader thread. */
	RESYNC_UNIT = 8 << 20,
	RESYNC_THREADS_MAX = 16,
	RESYNC_IO_DEPTH_MAX = 64,
	/* Metadata beside a volume: on-disk activity-log slots, generations
	 * kept in the history, the dirty bitmap's largest size (bytes). */
	RESYNC_META_AL_MAX = 768,
	RESYNC_META_HISTORY = 4,
	RESYNC_META_BITMAP_MAX = 64 << 20,
};

/* The peer protocol, the shared secret and the hash tree. Every length a
 * peer sends is checked against these before anything is allocated. */
enum resync_wire_limits {
	RESYNC_NAME_MAX = 64,		  /* cluster and node names, bytes */
	RESYNC_WIRE_TEXT_MAX = 1024,	  /* REFUSE and ERROR texts, bytes */
	RESYNC_WIRE_HISTORY_MAX = 32,	  /* generation UUIDs in a HELLO */
	RESYNC_WIRE_HASHES_MAX = 65536,	  /* hashes in one HASH_REQ or HASH_REPLY */
	RESYNC_WIRE_RANGES_MAX = 4096,	  /* node ranges in one HASH_REQ */
	RESYNC_WIRE_BLOCKS_MAX = 4 << 20, /* raw bytes carried by one BLOCKS */
	/* Page runs carried by one EXTENTS (their bytes: <= RESYNC_WIRE_BLOCKS_MAX);
	 * its table must fit the frame's 4 KiB beyond the bytes. */
	RESYNC_WIRE_EXTENTS_MAX = 128,
	/* Largest frame payload: a BLOCKS header plus its raw bytes, or a
	 * HASH_REPLY of RESYNC_WIRE_HASHES_MAX hashes. */
	RESYNC_WIRE_FRAME_MAX = (4 << 20) + 4096,
	/* COPY (moved data): entries in one frame, bytes of one entry, and
	 * bytes of all entries of a frame (what the secondary stages in
	 * memory: every source of a frame is read before any destination
	 * of it is written). */
	RESYNC_WIRE_COPIES_MAX = 4096,
	RESYNC_WIRE_COPY_LEN_MAX = 1 << 20,
	RESYNC_WIRE_COPY_STAGE_MAX = 16 << 20,
	RESYNC_SECRET_MIN = 16, /* bytes of the cluster key file */
	RESYNC_SECRET_MAX = 4096,
	RESYNC_HASHTREE_FANOUT_MIN = 2,
	RESYNC_HASHTREE_FANOUT_MAX = 1024,
	RESYNC_HASHTREE_FANOUT_DEFAULT = 64,
};

/* The control socket: a request line is bounded tightly (anyone with the
 * socket's permission writes it); a reply comes from our own daemon and may
 * list millions of ranges (a verify of a large volume). */
enum resync_control_limits {
	RESYNC_CONTROL_LINE_MAX = 1 << 20,
	RESYNC_CONTROL_REPLY_MAX = 256 << 20,
};

/* Whether a block size is acceptable: a power of two in [4 KiB, 1 MiB]. */
static inline int resync_block_size_valid(unsigned long long bs)
{
	return bs >= RESYNC_BLOCK_MIN && bs <= RESYNC_BLOCK_MAX && (bs & (bs - 1)) == 0;
}
