/* The metadata kept beside a volume: superblock (node, state, generation
 * and history, clean-shutdown flag, resync checkpoint, the image's identity
 * at the last clean stop), the dirty bitmap (one bit per block: written
 * since the last completed resync) and the activity log of hot extents.
 *
 * Crash safety: the file holds two slots, each a checksummed header and a
 * bitmap; an update writes the slot not in use, fdatasyncs it and only then
 * counts as done. A reader takes the valid slot with the highest sequence
 * number, so a torn update leaves the previous state. Fresh files are built
 * as a new copy, fsynced and renamed into place.
 *
 * Dirty tracking (DRBD's activity log): meta_dirty_mark() sets the bits of
 * a range in memory and returns once every activity-log extent covering it
 * is durable on disk; only a write outside the current hot set, to blocks
 * not already dirty in the bitmap on disk, costs a metadata write and
 * flush. After an unclean stop every extent of the log
 * counts as dirty. meta_mark_clean() folds everything into the bitmap.
 *
 * Thread-safety: every function may be called from several threads at once
 * on the same struct meta, except meta_free(). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "resync/limits.h"
#include "resync/range.h"

struct volume;
struct meta;

/* A node's state. The values are stored on disk (the superblock's state)
 * and never change; a new state takes the next value. The daemon's wire
 * has its own values (wire_state_from_meta()). */
enum meta_state {
	META_STATE_UNKNOWN = 0,
	META_STATE_UPTODATE = 1,
	META_STATE_OUTDATED = 2,
	META_STATE_INCONSISTENT = 3, /* a resync was interrupted: partly rewritten */
	META_STATE_DIVERGED = 4,     /* has writes the primary lacks */
	META_STATE_COUNT,	     /* not a state: how many there are */
};

enum meta_open_flags {
	META_CREATE = 1 << 0,	/* build fresh metadata when there is none */
	META_READONLY = 1 << 1, /* inspect only: never write, never take over */
};

struct meta_uuid {
	uint8_t b[16];
};

struct meta_opts {
	uint32_t block_size;	/* for fresh metadata; 0 = RESYNC_BLOCK_DEFAULT */
	uint32_t al_extents;	/* activity-log slots; 0 = META_AL_DEFAULT */
	uint32_t al_extent_size; /* bytes, a power of two >= block size; 0 = 4 MiB */
};

enum {
	META_AL_DEFAULT = 256, /* 1 GiB hot with 4 MiB extents */
	META_AL_EXTENT_DEFAULT = 4 << 20,
};

struct meta_info {
	uint64_t volume_size;
	uint32_t block_size;
	uint32_t al_extent_size;
	uint32_t al_capacity;
	uint32_t al_used; /* extents in the durable activity log */
	enum meta_state state;
	struct meta_uuid node;
	struct meta_uuid generation;
	struct meta_uuid history[RESYNC_META_HISTORY]; /* newest first */
	unsigned history_n;
	/* On disk: the last owner stopped cleanly. An owner sees false. */
	bool clean;
	/* false when the image changed while nobody owned it, or the
	 * metadata had to be rebuilt: every block must be compared. */
	bool bitmap_trusted;
	bool checkpoint_set;
	uint64_t checkpoint_off;
	struct meta_uuid checkpoint_id;
	uint64_t seq; /* sequence number of the slot in use */
};

/* "IMAGE.resync-meta" for image; *ret is malloc'd. Returns 0 or -ENOMEM. */
int meta_path_default(const char *image, char **ret);

/* Open the metadata at path for volume v (path NULL = the default one).
 * Without META_READONLY the caller must own v (VOLUME_LOCK): the metadata
 * is taken over, an unclean stop's activity log is folded into the bitmap,
 * the image's identity is compared with the one recorded at the last clean
 * stop (a mismatch makes the bitmap untrusted), and the clean flag is
 * cleared on disk before this returns. META_CREATE builds fresh metadata
 * (no dirty bits) when the file is missing, and rebuilds damaged metadata
 * with every bit set and the bitmap untrusted. With META_READONLY nothing
 * is written; after an unclean stop the log's extents show as dirty.
 * Returns 0 and *ret, -ENOENT (no metadata), -EBADMSG (damaged, read-only),
 * or -errno. */
int meta_open(struct volume *v, const char *path, unsigned flags, const struct meta_opts *opts,
	      struct meta **ret);
/* Free without writing anything: what is on disk stays (an owner that did
 * not call meta_mark_clean() leaves an unclean stop). NULL is accepted. */
void meta_free(struct meta *m);

/* Clean stop: flush the volume, record its identity, fold the activity log
 * into the bitmap and set the clean flag, durably. The caller guarantees no
 * write is in flight. A later meta_dirty_mark() clears the flag again. */
int meta_mark_clean(struct meta *m);

int meta_info_get(struct meta *m, struct meta_info *ret);

/* Mark the blocks overlapping [off, off+len) dirty; returns once the marks
 * are durable (their extents in the on-disk activity log, or their bits in
 * the on-disk bitmap). Call before the bytes are written to the volume.
 * Returns 0, -EINVAL outside the volume, or -errno of the metadata I/O. */
int meta_dirty_mark(struct meta *m, uint64_t off, uint64_t len);
/* Clear the bits of the blocks lying wholly inside [off, off+len) (the
 * volume's last, short block counts as whole when the range reaches the
 * end) and make the bitmap durable. For a resync that made them equal. */
int meta_dirty_clear(struct meta *m, uint64_t off, uint64_t len);
/* The dirty byte ranges (blocks merged, clipped to the volume's size),
 * appended to ret in order. */
int meta_dirty_ranges(struct meta *m, struct rangelist *ret);
uint64_t meta_dirty_bytes(struct meta *m);
/* Whether block is dirty. */
bool meta_dirty_test(struct meta *m, uint64_t block);
/* Copy the bitmap (bit i of byte i/8 is block i, LSB first) into buf of
 * size bytes. Returns the bitmap's size in bytes, or -ENOSPC if size is
 * too small. */
long long meta_bitmap_read(struct meta *m, void *buf, size_t size);

/* Durable setters for the daemon. */
int meta_state_set(struct meta *m, enum meta_state state);
/* Make gen current; the previous generation goes to the history. */
int meta_generation_set(struct meta *m, const struct meta_uuid *gen);
/* Replace the history (newest first, n <= RESYNC_META_HISTORY). */
int meta_history_set(struct meta *m, const struct meta_uuid *history, unsigned n);
int meta_node_set(struct meta *m, const struct meta_uuid *node);
/* The bitmap is right again (after a full compare). */
int meta_trusted_set(struct meta *m, bool trusted);
/* Resync checkpoint: every byte below off is done for resync id. */
int meta_checkpoint_set(struct meta *m, uint64_t off, const struct meta_uuid *id);
int meta_checkpoint_clear(struct meta *m);
/* The volume's size changed (volume_set_size() on a file volume, grown
 * to its primary's): whether metadata for size is possible (-EFBIG: the
 * bitmap would be too large; call it before resizing), and fresh
 * metadata for the volume's new size, untrusted, written durably. Writes
 * must be held off meanwhile (the fence). */
int meta_resize_check(const struct meta *m, uint64_t size);
int meta_resize(struct meta *m);
/* The end of a resync in one durable update (one slot, one flush), so
 * that a crash leaves the state before or after it and nothing between:
 * gen becomes current (the previous one goes to the history) and every
 * dirty bit is cleared; with uptodate (a secondary that took the
 * primary's data) the bitmap is trusted again, the checkpoint is gone
 * and the state is UpToDate. */
int meta_resync_commit(struct meta *m, const struct meta_uuid *gen, bool uptodate);

/* Metadata writes since open (transactions), for tests and metrics. */
uint64_t meta_writes(struct meta *m);

/* The state's name ("UpToDate", ...): the one table of them; "Unknown"
 * for a value that is not a state. Static storage. */
const char *meta_state_name(enum meta_state state);
/* The state named name (case-insensitive). Returns 0 and *ret, or -EINVAL. */
int meta_state_parse(const char *name, enum meta_state *ret);
/* A random (version 4, RFC 4122) UUID from libuuid. Returns 0. Thread-safe. */
int meta_uuid_random(struct meta_uuid *ret);
bool meta_uuid_is_null(const struct meta_uuid *u);
/* Lower-case 8-4-4-4-12 form into buf (at least 37 bytes). Returns buf. */
const char *meta_uuid_format(const struct meta_uuid *u, char *buf, size_t size);
int meta_uuid_parse(const char *s, struct meta_uuid *ret);
