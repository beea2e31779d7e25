/* On-disk layout of the metadata file (version 1). Every field is
 * little-endian and fixed-width; meta.c converts them in one place.
 *
 *   offset 0            header of slot 0 (META_HEADER_SIZE bytes)
 *   offset 4096         header of slot 1
 *   offset 8192         bitmap of slot 0 (bitmap_bytes, padded to 4 KiB)
 *   8192 + area         bitmap of slot 1
 *
 * A slot is valid when its header has the magic, a known version, a
 * matching xxh64 header checksum, sane fields, and its bitmap matches
 * bitmap_csum. The valid slot with the highest seq is the state. An update
 * writes the other slot (header, and the bitmap when it changed) and
 * fdatasyncs. Bitmap bit i (byte i / 8, LSB first) is block i.
 *
 * Activity log: al[0..al_count) are extent numbers (extent = offset >>
 * al_extent_shift). Unless META_DISK_CLEAN is set, every block of those
 * extents may have been written without its bit being set. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "resync/limits.h"

#define META_MAGIC 0x4154454d434e5952ull /* "RYNCMETA" read as LE bytes */
#define META_VERSION 1u
#define META_HEADER_SIZE 4096u
#define META_BITMAP_OFF (2u * META_HEADER_SIZE)
#define META_ALIGN 4096u

enum meta_disk_flags {
	META_DISK_CLEAN = 1u << 0,	/* the last owner stopped cleanly */
	META_DISK_UNTRUSTED = 1u << 1,	/* bitmap must not be trusted */
	META_DISK_CHECKPOINT = 1u << 2, /* checkpoint_* are set */
	META_DISK_IDENTITY = 1u << 3,	/* identity is recorded */
	META_DISK_KNOWN = 0xf,
};

/* The image as it was at the last clean stop. */
struct meta_disk_identity {
	uint64_t dev;
	uint64_t ino;
	uint64_t size;
	uint64_t mtime_ns;
	uint64_t ctime_ns;
};
_Static_assert(sizeof(struct meta_disk_identity) == 40, "identity layout");

struct meta_disk_header {
	uint64_t magic;		   /* 0 */
	uint32_t version;	   /* 8 */
	uint32_t header_size;	   /* 12 */
	uint64_t seq;		   /* 16 */
	uint64_t volume_size;	   /* 24 */
	uint32_t block_size;	   /* 32 */
	uint32_t state;		   /* 36 */
	uint32_t flags;		   /* 40: META_DISK_* */
	uint32_t al_extent_shift;  /* 44 */
	uint32_t al_capacity;	   /* 48 */
	uint32_t al_count;	   /* 52 */
	uint32_t history_count;	   /* 56 */
	uint32_t reserved0;	   /* 60 */
	uint8_t node[16];	   /* 64 */
	uint8_t generation[16];	   /* 80 */
	uint8_t history[RESYNC_META_HISTORY][16]; /* 96 */
	uint64_t checkpoint_off;   /* 160 */
	uint8_t checkpoint_id[16]; /* 168 */
	struct meta_disk_identity identity; /* 184 */
	uint64_t bitmap_bytes;	   /* 224 */
	uint64_t bitmap_csum;	   /* 232: xxh64 of the slot's bitmap, seed 0 */
	uint8_t reserved1[16];	   /* 240 */
	uint32_t al[RESYNC_META_AL_MAX]; /* 256 */
	uint8_t reserved2[META_HEADER_SIZE - 256 - 4 * RESYNC_META_AL_MAX - 8];
	uint64_t header_csum; /* xxh64 of the header with this field zero */
};
_Static_assert(offsetof(struct meta_disk_header, history) == 96, "header layout");
_Static_assert(offsetof(struct meta_disk_header, checkpoint_off) == 160, "header layout");
_Static_assert(offsetof(struct meta_disk_header, identity) == 184, "header layout");
_Static_assert(offsetof(struct meta_disk_header, bitmap_bytes) == 224, "header layout");
_Static_assert(offsetof(struct meta_disk_header, al) == 256, "header layout");
_Static_assert(offsetof(struct meta_disk_header, header_csum) == META_HEADER_SIZE - 8,
	       "header layout");
_Static_assert(sizeof(struct meta_disk_header) == META_HEADER_SIZE, "header layout");
_Static_assert(RESYNC_META_HISTORY == 4, "history fits the header");

static inline uint64_t meta_bitmap_area(uint64_t bitmap_bytes)
{
	return (bitmap_bytes + META_ALIGN - 1) / META_ALIGN * META_ALIGN;
}

static inline uint64_t meta_bitmap_slot_off(uint64_t bitmap_bytes, unsigned slot)
{
	return META_BITMAP_OFF + slot * meta_bitmap_area(bitmap_bytes);
}
