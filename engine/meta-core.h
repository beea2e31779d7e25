/* Private to the metadata's rooms (resync/meta.h is the contract,
 * meta-int.h the layout on disk): the in-memory state behind struct meta,
 * the bitmap and activity-log helpers, and what each room offers the
 * others.
 *
 * Rooms:
 *   meta.c         open, create, load, resize, clean stop, info
 *   meta-disk.c    the header's encoding (the only place that knows the
 *                  byte order) and the geometry
 *   meta-commit.c  commits (a slot written, then flipped) and the durable
 *                  setters (state, generation, checkpoint, ...)
 *   meta-dirty.c   dirty tracking: marks, clears, ranges, the bitmap
 *   meta-names.c   state names and UUIDs */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "resync/limits.h"
#include "resync/meta.h"
#include "meta-int.h"

struct volume;

#define SLOT_GEN_UNKNOWN UINT64_MAX

enum commit_kind {
	COMMIT_AL,    /* the activity log changed; the bitmap only if needed */
	COMMIT_FULL,  /* write the bitmap too */
	COMMIT_CLEAN, /* fold everything, empty log, clean flag, identity */
};

struct meta {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* signalled when a commit ends */
	int fd;
	char *path;
	struct volume *vol; /* borrowed */
	bool readonly;

	/* Geometry, fixed after open. */
	uint64_t volume_size;
	uint32_t block_size;
	uint32_t al_shift;
	uint32_t al_capacity;
	uint64_t nblocks;
	uint64_t n_extents;
	uint64_t bitmap_bytes;

	/* Everything below is protected by lock. */
	uint8_t *bitmap; /* the truth in memory: a superset of the disk's */
	uint8_t *snapshot; /* bitmap being written by the current commit */
	/* Bits set in every slot a crash could leave in use, whatever the
	 * outcome of a commit in flight: a write there needs no log entry. */
	uint8_t *durable;
	struct meta_disk_header *hdr; /* header being written (aligned) */
	uint32_t state;
	uint32_t flags; /* META_DISK_UNTRUSTED | META_DISK_CHECKPOINT */
	struct meta_uuid node, generation;
	struct meta_uuid history[RESYNC_META_HISTORY];
	unsigned history_n;
	uint64_t checkpoint_off;
	struct meta_uuid checkpoint_id;
	struct meta_disk_identity identity; /* as loaded */
	bool identity_set;
	bool clean_on_disk;

	uint64_t seq;	  /* of the slot in use */
	unsigned active;  /* the slot in use */
	uint64_t bitmap_gen; /* version of the newest durable bitmap */
	uint64_t slot_gen[2]; /* bitmap version held by each slot */
	uint64_t slot_csum[2];
	bool writing; /* a commit is doing I/O without the lock */
	uint64_t writes;

	/* Activity log: on disk, stable (on disk whatever the outcome of the
	 * commit in flight) and wanted (waiting for the next commit). */
	uint32_t al_disk[RESYNC_META_AL_MAX];
	uint64_t al_tick[RESYNC_META_AL_MAX];
	unsigned al_disk_n;
	uint32_t al_stable[RESYNC_META_AL_MAX];
	unsigned al_stable_n;
	uint32_t al_want[RESYNC_META_AL_MAX];
	unsigned al_want_n;
	uint64_t tick;
};

/* A decoded, validated header. */
struct meta_hdr {
	uint64_t seq, volume_size, checkpoint_off, bitmap_bytes, bitmap_csum;
	uint32_t block_size, state, flags, al_shift, al_capacity, al_count, history_count;
	struct meta_uuid node, generation, history[RESYNC_META_HISTORY], checkpoint_id;
	struct meta_disk_identity identity;
	uint32_t al[RESYNC_META_AL_MAX];
};

/* ---- bits of the bitmap, extents of the activity log ---- */

static inline void bit_set(uint8_t *bm, uint64_t i)
{
	bm[i >> 3] |= (uint8_t)(1u << (i & 7));
}

static inline bool bit_test(const uint8_t *bm, uint64_t i)
{
	return bm[i >> 3] & (1u << (i & 7));
}

static inline void bits_set_range(uint8_t *bm, uint64_t first, uint64_t last)
{
	uint64_t i = first;

	for (; i <= last && (i & 7); i++)
		bit_set(bm, i);
	if (i + 8 <= last + 1) {
		uint64_t nbytes = (last + 1 - i) / 8;

		memset(bm + i / 8, 0xff, nbytes);
		i += nbytes * 8;
	}
	for (; i <= last; i++)
		bit_set(bm, i);
}

static inline bool bits_all_set(const uint8_t *bm, uint64_t first, uint64_t last)
{
	for (uint64_t i = first; i <= last; i++)
		if (!bit_test(bm, i))
			return false;
	return true;
}

static inline void bits_clear_range(uint8_t *bm, uint64_t first, uint64_t last)
{
	for (uint64_t i = first; i <= last; i++)
		bm[i >> 3] &= (uint8_t)~(1u << (i & 7));
}

static inline bool al_has(const uint32_t *al, unsigned n, uint32_t e)
{
	for (unsigned i = 0; i < n; i++)
		if (al[i] == e)
			return true;
	return false;
}

/* meta.c: the image's identity now (a block device's times are not
 * recorded). Returns 0 or -errno. */
int meta_identity_read(struct volume *v, struct meta_disk_identity *ret);

/* meta-disk.c: the header of a slot with seq and flags, the activity
 * log al (al_n extents), the identity id (NULL: none) and the bitmap's
 * checksum; and a header read back, every field the file controls
 * validated (-EBADMSG, -EPROTONOSUPPORT). */
void meta_header_encode(struct meta *m, struct meta_disk_header *h, uint64_t seq, uint32_t flags,
			const uint32_t *al, unsigned al_n, const struct meta_disk_identity *id,
			uint64_t bitmap_csum);
int meta_header_decode(const struct meta_disk_header *h, struct meta_hdr *ret);
/* Whether metadata can cover a volume of this size: its bitmap and its
 * activity-log extent numbers within their limits. */
bool meta_geometry_ok(uint64_t volume_size, uint32_t block_size, uint32_t al_shift);
/* Set m's geometry and allocate its bitmaps (zeroed). -EFBIG, -ENOMEM. */
int meta_geometry_init(struct meta *m, uint64_t volume_size, uint32_t block_size,
		       uint32_t al_shift, uint32_t al_capacity);
/* The geometry opts asks for (NULL or 0 fields: the defaults); -EINVAL. */
int meta_opts_geometry(const struct meta_opts *opts, uint32_t *ret_bs, uint32_t *ret_shift,
		       uint32_t *ret_cap);

/* meta-commit.c: write the next slot and make it durable. Called and
 * returns with lock held; drops it for the I/O. Commits are serialised
 * by m->writing. */
int meta_commit_locked(struct meta *m, enum commit_kind kind);
