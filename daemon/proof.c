/* The proof of convergence (issue 11; resync/proof.h): this volume's
 * root hash, made from the leaves kept in IMAGE.resync-proof so that
 * only the blocks written since the last root are read again.
 *
 * The leaves (in memory, and in the file) are keyed by the generation
 * current when they were right, and the image's device and inode: the
 * dirty bitmap counts every write since that generation began (a commit
 * clears it and starts the next), so the leaves plus the dirty blocks
 * (plus, on a secondary, the blocks its resync wrote, which no bitmap
 * counts) are the volume now. Anything else (another generation, an
 * untrusted bitmap, no file) hashes every block. A resync that starts
 * rewriting this volume removes the file first (node_proof_begin()), so
 * that a crash before its commit leaves no leaves that would lie.
 *
 * Thread-safety: n->proof_lock guards the leaves; every function here may
 * be called from any thread. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "node-int.h"
#include "resync/fileio.h"
#include "resync/macro.h"

static char *proof_path(struct node *n)
{
	char *p;

	return asprintf(&p, "%s.resync-proof", n->self->volume) < 0 ? NULL : p;
}

/* The key of this volume's leaves under its current generation. */
static void proof_key_now(struct node *n, struct proof_key *ret)
{
	struct meta_info mi;
	struct stat st;
	uint64_t dev = 0, ino = 0;

	memset(ret, 0, sizeof(*ret));
	meta_info_get(node_meta(n), &mi);
	if (fstat(volume_fd(n->vol), &st) == 0) {
		dev = (uint64_t)st.st_dev;
		ino = (uint64_t)st.st_ino;
	}
	memcpy(ret->b, mi.generation.b, 16);
	memcpy(ret->b + 16, &dev, 8);
	memcpy(ret->b + 24, &ino, 8);
}

/* The leaves held for key and geometry, from memory or the file; false
 * when there are none (proof_lock held). */
static bool proof_take_locked(struct node *n, const struct proof_key *key, enum proof_hash h,
			      uint32_t bs, uint64_t size)
{
	_cleanup_free_ char *path = NULL;
	struct proof_tree t;
	int r;

	if (n->proof.leaves && !memcmp(&n->proof_key, key, sizeof(*key)) && n->proof.hash == h &&
	    n->proof.block_size == bs && n->proof.volume_size == size)
		return true;
	proof_tree_release(&n->proof);
	path = proof_path(n);
	if (!path)
		return false;
	r = proof_file_load(path, key, h, bs, size, &t);
	if (r < 0) {
		if (r != -ENOENT && r != -ESTALE)
			log_warning("ignoring '%s': %s (every block is hashed again)", path,
				    strerror(-r));
		return false;
	}
	n->proof = t;
	n->proof_key = *key;
	n->proof_own = false;
	n->proof_seq++;
	return true;
}

void node_proof_begin(struct node *n)
{
	_cleanup_free_ char *path = proof_path(n);
	struct proof_key key;

	if (!path)
		return;
	pthread_mutex_lock(&n->proof_lock);
	/* The file's leaves move to memory: a crash from here to the commit
	 * leaves no file, and the next root hashes every block. */
	proof_key_now(n, &key);
	(void)proof_take_locked(n, &key, (enum proof_hash)n->cfg->proof_hash, PROOF_BLOCK_DEFAULT,
				node_size(n));
	n->proof_begins++;
	if (unlink(path) == 0)
		(void)fsync_directory_of(path);
	pthread_mutex_unlock(&n->proof_lock);
}

void node_proof_drop(struct node *n)
{
	_cleanup_free_ char *path = proof_path(n);

	pthread_mutex_lock(&n->proof_lock);
	proof_tree_release(&n->proof);
	n->proof_seq++;
	if (path && unlink(path) == 0)
		(void)fsync_directory_of(path);
	pthread_mutex_unlock(&n->proof_lock);
}

void node_proof_forget(struct node *n)
{
	pthread_mutex_lock(&n->proof_lock);
	proof_tree_release(&n->proof);
	n->proof_seq++;
	pthread_mutex_unlock(&n->proof_lock);
}

/* The root of n->proof into ret (proof_lock held); on failure the leaves
 * are dropped. */
static int proof_finish_locked(struct node *n, const struct proof_key *key, uint64_t hashed,
			       struct wire_proof *ret)
{
	struct proof_digest root;
	int r = proof_tree_root(&n->proof, &root);

	if (r < 0) {
		proof_tree_release(&n->proof);
		return r;
	}
	n->proof_key = *key;
	memset(ret, 0, sizeof(*ret));
	ret->hash = n->proof.hash;
	ret->block_size = n->proof.block_size;
	ret->volume_size = n->proof.volume_size;
	ret->hashed = hashed;
	memcpy(ret->root, root.b, proof_digest_len(n->proof.hash));
	return 0;
}

int node_proof_compute_since(struct node *n, uint64_t seq, const struct rangelist *written,
			     struct wire_proof *ret)
{
	struct proof_key key;
	uint64_t t0 = clock_usec(), hashed = 0, nleaves = 0;
	int r = -ESTALE;

	pthread_mutex_lock(&n->proof_lock);
	proof_key_now(n, &key);
	if (n->proof.leaves && n->proof_seq == seq && !memcmp(&key, &n->proof_key, sizeof(key)) &&
	    n->proof.volume_size == node_size(n)) {
		nleaves = n->proof.nleaves;
		r = proof_tree_update(&n->proof, n->vol, written, &hashed);
		if (r >= 0)
			r = proof_finish_locked(n, &key, hashed, ret);
		else
			proof_tree_release(&n->proof);
		n->proof_seq++;
	}
	pthread_mutex_unlock(&n->proof_lock);
	if (r >= 0)
		log_info("proof of '%s': %" PRIu64 " of %" PRIu64 " blocks written since its last root hashed in %.3f s",
			 n->self->volume, hashed, nleaves, (double)(clock_usec() - t0) / 1e6);
	return r;
}

int node_proof_fold(struct node *n, const struct rangelist *l, proof_read_fn fn, void *arg,
		    uint64_t *ret_hashed)
{
	struct proof_key key;
	int r = -ESTALE;

	pthread_mutex_lock(&n->proof_lock);
	proof_key_now(n, &key);
	if (n->proof.leaves && !memcmp(&key, &n->proof_key, sizeof(key)) &&
	    n->proof.volume_size == node_size(n)) {
		r = proof_tree_update_each(&n->proof, n->vol, l, fn, arg, ret_hashed);
		if (r < 0)
			proof_tree_release(&n->proof);
		n->proof_seq++;
	}
	pthread_mutex_unlock(&n->proof_lock);
	return r;
}

int node_proof_compute(struct node *n, enum proof_hash h, uint32_t bs, const struct rangelist *extra,
		       struct wire_proof *ret, uint64_t *ret_seq)
{
	struct meta *m = node_meta(n);
	struct rangelist stale = {0};
	struct proof_key key;
	struct meta_info mi;
	uint64_t size = node_size(n), t0 = clock_usec(), hashed = 0;
	bool have;
	int r;

	meta_info_get(m, &mi);
	pthread_mutex_lock(&n->proof_lock);
	proof_key_now(n, &key);
	/* Leaves this process hashed itself miss no write since, trusted
	 * bitmap or not (proof_own); loaded ones need the bitmap's trust. */
	have = proof_take_locked(n, &key, h, bs, size) && (mi.bitmap_trusted || n->proof_own);
	if (!have) {
		proof_tree_release(&n->proof);
		r = proof_tree_init(&n->proof, h, bs, size);
		if (r >= 0)
			r = proof_tree_update(&n->proof, n->vol, NULL, &hashed);
		n->proof_own = r >= 0;
	} else {
		r = meta_dirty_ranges(m, &stale);
		if (r >= 0 && extra)
			r = rangelist_extend(&stale, extra);
		if (r >= 0)
			r = proof_tree_update(&n->proof, n->vol, &stale, &hashed);
	}
	if (r >= 0)
		r = proof_finish_locked(n, &key, hashed, ret);
	else
		proof_tree_release(&n->proof);
	n->proof_seq++;
	if (ret_seq)
		*ret_seq = n->proof_seq;
	pthread_mutex_unlock(&n->proof_lock);
	rangelist_release(&stale);
	if (r >= 0)
		log_info("proof of '%s': %" PRIu64 " of %" PRIu64 " blocks hashed in %.3f s%s",
			 n->self->volume, hashed, DIV_ROUND_UP(size, bs),
			 (double)(clock_usec() - t0) / 1e6, have ? "" : " (no leaves kept: all)");
	return r;
}

/* node_proof_save() and node_proof_save_since(): begins NULL, or the
 * node_proof_begin()s counted before (then nothing is saved after
 * another). */
static void proof_save(struct node *n, const uint64_t *begins)
{
	_cleanup_free_ char *path = proof_path(n);
	struct proof_key key;
	int r;

	if (!path)
		return;
	pthread_mutex_lock(&n->proof_lock);
	if (!n->proof.leaves || (begins && *begins != n->proof_begins)) {
		pthread_mutex_unlock(&n->proof_lock);
		return;
	}
	/* The leaves are the volume at the commit, whose generation counts
	 * the writes from here on. */
	proof_key_now(n, &key);
	n->proof_key = key;
	r = proof_file_save(path, &n->proof, &key);
	pthread_mutex_unlock(&n->proof_lock);
	if (r < 0)
		log_warning("cannot save '%s': %s (the next proof hashes every block)", path,
			    strerror(-r));
}

void node_proof_save(struct node *n)
{
	proof_save(n, NULL);
}

uint64_t node_proof_begins(struct node *n)
{
	uint64_t b;

	pthread_mutex_lock(&n->proof_lock);
	b = n->proof_begins;
	pthread_mutex_unlock(&n->proof_lock);
	return b;
}

void node_proof_save_since(struct node *n, uint64_t begins)
{
	proof_save(n, &begins);
}

/* Whether the next root can be made from leaves held now (in memory or
 * their file) and the dirty blocks, as node_proof_compute() would: then
 * a compare's pass need not hash every block a second time for them. */
static bool proof_held(struct node *n, uint64_t size)
{
	struct proof_key key;
	struct meta_info mi;
	bool held;

	meta_info_get(node_meta(n), &mi);
	pthread_mutex_lock(&n->proof_lock);
	proof_key_now(n, &key);
	held = proof_take_locked(n, &key, PROOF_HASH_XXH3, PROOF_BLOCK_DEFAULT, size) &&
	       (mi.bitmap_trusted || n->proof_own);
	pthread_mutex_unlock(&n->proof_lock);
	return held;
}

bool node_proof_want(struct node *n, uint32_t leaf, struct blockcmp_opts *o,
		     struct proof_offer *ret)
{
	uint64_t size = node_size(n);
	bool busy;

	o->extra_hashes = NULL;
	/* A session rewriting this volume may race the reads with writes
	 * that only its own ranges record: no offer then. */
	pthread_mutex_lock(&n->lock);
	busy = n->writing;
	pthread_mutex_unlock(&n->lock);
	if (busy || !n->cfg->proof || (enum proof_hash)n->cfg->proof_hash != PROOF_HASH_XXH3 || !leaf ||
	    leaf > PROOF_BLOCK_DEFAULT || PROOF_BLOCK_DEFAULT % leaf || !size || proof_held(n, size))
		return false;
	o->extra_hashes = calloc(DIV_ROUND_UP(size, PROOF_BLOCK_DEFAULT), sizeof(*o->extra_hashes));
	if (!o->extra_hashes)
		return false;
	o->extra_block = PROOF_BLOCK_DEFAULT;
	pthread_mutex_lock(&n->proof_lock);
	proof_key_now(n, &ret->key);
	ret->begins = n->proof_begins;
	pthread_mutex_unlock(&n->proof_lock);
	ret->size = size;
	return true;
}

void node_proof_offer(struct node *n, const struct proof_offer *w, const struct blockcmp_opts *o)
{
	struct proof_tree t;
	struct proof_key key;
	bool busy;

	pthread_mutex_lock(&n->lock);
	busy = n->writing;
	pthread_mutex_unlock(&n->lock);
	if (busy || !o->extra_hashes ||
	    proof_tree_init(&t, PROOF_HASH_XXH3, PROOF_BLOCK_DEFAULT, w->size) < 0)
		return;
	if (proof_tree_set_xxh3(&t, o->extra_hashes) < 0) {
		proof_tree_release(&t);
		return;
	}
	pthread_mutex_lock(&n->proof_lock);
	proof_key_now(n, &key);
	if (memcmp(&key, &w->key, sizeof(key)) || w->begins != n->proof_begins ||
	    node_size(n) != w->size) {
		pthread_mutex_unlock(&n->proof_lock);
		proof_tree_release(&t);
		return;
	}
	proof_tree_release(&n->proof);
	n->proof = t;
	n->proof_key = key;
	n->proof_own = true;
	n->proof_seq++;
	pthread_mutex_unlock(&n->proof_lock);
}

const char *node_proof_format(const struct wire_proof *p, char *buf, size_t size)
{
	struct proof_digest d = {{0}};

	memcpy(d.b, p->root, sizeof(d.b));
	return proof_format((enum proof_hash)p->hash, &d, buf, size);
}

bool node_failpoint(const char *name)
{
	return failpoint_named(name);
}
