/* The proof of convergence: a seed-free root hash of a whole volume, the
 * same on every machine for the same bytes, so that two volumes (or a
 * volume and an image copied elsewhere) can be shown equal by comparing
 * one value.
 *
 * Definition (resync.conf(5), "PROOF"): the volume is cut into blocks of
 * block_size bytes (64 KiB unless said; the last block may be short) and
 * H is xxh3-128 with seed 0 (its 16-byte canonical form: the high 64 bits
 * then the low 64, big-endian, as `xxhsum -H2` prints) or SHA-256:
 *   leaf[i]  = H(block i)
 *   a level above: node = H(0x01 || left || right), pairs in order; an
 *                  odd last node goes up unchanged; until one node is left
 *   top      = that node, or H("") for an empty volume
 *   root     = H(0x02 || le64(volume size) || le32(block size) || top)
 * and is written "xxh3:<32 hex digits>" or "sha256:<64 hex digits>".
 *
 * A struct proof_tree keeps the leaves of one volume so that only the
 * blocks written since the last root are read again; the leaves persist
 * in a file (proof_file_save()) keyed by what the caller vouches for
 * (the generation whose dirty bitmap counts every write since).
 *
 * Thread-safety: a tree belongs to one thread at a time; the rest is
 * thread-safe. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "resync/range.h"

struct volume;

enum proof_hash {
	PROOF_HASH_XXH3 = 0,
	PROOF_HASH_SHA256 = 1,
	PROOF_HASH_COUNT,
};

enum {
	PROOF_BLOCK_DEFAULT = 64 << 10,
	PROOF_DIGEST_MAX = 32,
	/* "sha256:" and 64 hex digits, and the NUL. */
	PROOF_TEXT_MAX = 7 + 2 * PROOF_DIGEST_MAX + 1,
};

struct proof_digest {
	uint8_t b[PROOF_DIGEST_MAX]; /* the first proof_digest_len() bytes */
};

/* The leaves of one volume. */
struct proof_tree {
	enum proof_hash hash;
	uint32_t block_size;
	uint64_t volume_size;
	uint64_t nleaves;
	struct proof_digest *leaves;
};

size_t proof_digest_len(enum proof_hash h);
/* "xxh3" or "sha256"; "?" for a value that is none. Static storage. */
const char *proof_hash_name(enum proof_hash h);
/* The hash named name. Returns 0 and *ret, or -EINVAL. */
int proof_hash_parse(const char *name, enum proof_hash *ret);
/* "xxh3:..." into buf (PROOF_TEXT_MAX bytes or more). Returns buf. */
const char *proof_format(enum proof_hash h, const struct proof_digest *d, char *buf, size_t size);

/* A tree for a volume of volume_size bytes, its leaves not hashed yet
 * (block_size: a power of two from 4 KiB to 1 MiB). Returns 0 or
 * -EINVAL, -ENOMEM. */
int proof_tree_init(struct proof_tree *t, enum proof_hash h, uint32_t block_size,
		    uint64_t volume_size);
/* Free the leaves (NULL-safe, idempotent). */
void proof_tree_release(struct proof_tree *t);
/* Hash again the leaves of the blocks that overlap the byte ranges of l
 * (in any order; NULL: every block), reading v (its size must be the
 * tree's). *ret_hashed (may be NULL): the blocks hashed. Returns 0 or
 * -errno of the reads. */
int proof_tree_update(struct proof_tree *t, struct volume *v, const struct rangelist *l,
		      uint64_t *ret_hashed);
/* What proof_tree_update_each() read: len bytes of the volume at off (a
 * multiple of the block size; len up to RESYNC_CHUNK), borrowed for the
 * call. Called in increasing offsets. */
typedef void (*proof_read_fn)(void *arg, uint64_t off, const unsigned char *p, size_t len);
/* As proof_tree_update(), each piece it reads and hashes itself also
 * shown to fn (may be NULL), so that a caller needing other hashes of
 * the same bytes does not read them again. Runs long enough for
 * blockcmp's threads are not shown. */
int proof_tree_update_each(struct proof_tree *t, struct volume *v, const struct rangelist *l,
			   proof_read_fn fn, void *arg, uint64_t *ret_hashed);
/* Set every leaf of an xxh3 tree from hs[i], the seed-0 xxh3-128 of
 * block i (blockcmp's extra hashes of the same blocks). Returns 0 or
 * -EINVAL (not an xxh3 tree). */
struct hash128;
int proof_tree_set_xxh3(struct proof_tree *t, const struct hash128 *hs);
/* The root of the tree's leaves. Returns 0 or -ENOMEM. */
int proof_tree_root(const struct proof_tree *t, struct proof_digest *ret);

/* What a leaf file is valid for: opaque to the engine (the daemon puts a
 * generation and the image's device and inode). */
struct proof_key {
	uint8_t b[32];
};

/* Write t's leaves to path with key, crash-safely (a new file renamed
 * over path). The file is this machine's (host byte order), checked
 * whole by a hash. Returns 0 or -errno. */
int proof_file_save(const char *path, const struct proof_tree *t, const struct proof_key *key);
/* Load the leaves at path into *ret when the file is whole and was saved
 * for key, hash h, block_size and volume_size. Returns 0, -ENOENT,
 * -ESTALE (another key or geometry), -EBADMSG (damaged), or -errno. */
int proof_file_load(const char *path, const struct proof_key *key, enum proof_hash h,
		    uint32_t block_size, uint64_t volume_size, struct proof_tree *ret);
/* Parse the whole bytes of a leaf file (proof_file_load()'s checks). */
int proof_file_parse(const void *buf, size_t len, const struct proof_key *key, enum proof_hash h,
		     uint32_t block_size, uint64_t volume_size, struct proof_tree *ret);
