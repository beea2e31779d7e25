/* The proof of convergence (resync/proof.h): leaves, the Merkle root and
 * the leaf file. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "resync/blockcmp.h"
#include "resync/fileio.h"
#include "resync/hash.h"
#include "resync/io.h"
#include "resync/limits.h"
#include "resync/macro.h"
#include "resync/proof.h"
#include "resync/volume.h"

/* Runs of at least this many bytes go to blockcmp's threads; shorter ones
 * are read and hashed here (starting threads costs more than they save). */
enum { PROOF_PARALLEL_MIN = 4 << 20 };

static const char *const proof_hash_names[PROOF_HASH_COUNT] = {
	[PROOF_HASH_XXH3] = "xxh3",
	[PROOF_HASH_SHA256] = "sha256",
};

size_t proof_digest_len(enum proof_hash h)
{
	return h == PROOF_HASH_SHA256 ? 32 : 16;
}

const char *proof_hash_name(enum proof_hash h)
{
	return (unsigned)h < PROOF_HASH_COUNT ? proof_hash_names[h] : "?";
}

int proof_hash_parse(const char *name, enum proof_hash *ret)
{
	for (unsigned i = 0; i < PROOF_HASH_COUNT; i++) {
		if (!strcasecmp(name, proof_hash_names[i])) {
			*ret = (enum proof_hash)i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *proof_format(enum proof_hash h, const struct proof_digest *d, char *buf, size_t size)
{
	size_t n = proof_digest_len(h), k;

	k = (size_t)snprintf(buf, size, "%s:", proof_hash_name(h));
	for (size_t i = 0; i < n && k + 2 < size; i++, k += 2)
		snprintf(buf + k, size - k, "%02x", d->b[i]);
	return buf;
}

/* The canonical bytes of an xxh3-128 value (big-endian, high half first). */
static void proof_xxh3_bytes(struct hash128 v, struct proof_digest *ret)
{
	XXH128_hash_t x = {.low64 = v.lo, .high64 = v.hi};
	XXH128_canonical_t c;

	XXH128_canonicalFromHash(&c, x);
	memset(ret, 0, sizeof(*ret));
	memcpy(ret->b, c.digest, 16);
}

/* H(data), the proof's hash of any bytes. */
static void proof_hash_bytes(enum proof_hash h, const void *data, size_t len,
			     struct proof_digest *ret)
{
	if (h == PROOF_HASH_SHA256) {
		memset(ret, 0, sizeof(*ret));
		SHA256(data, len, ret->b);
		return;
	}
	proof_xxh3_bytes(hash_block(data, len, 0), ret);
}

int proof_tree_init(struct proof_tree *t, enum proof_hash h, uint32_t block_size,
		    uint64_t volume_size)
{
	memset(t, 0, sizeof(*t));
	if ((unsigned)h >= PROOF_HASH_COUNT || !resync_block_size_valid(block_size))
		return -EINVAL;
	t->hash = h;
	t->block_size = block_size;
	t->volume_size = volume_size;
	t->nleaves = DIV_ROUND_UP(volume_size, block_size);
	if (t->nleaves > SIZE_MAX / sizeof(*t->leaves))
		return -EFBIG;
	t->leaves = calloc(t->nleaves ? t->nleaves : 1, sizeof(*t->leaves));
	return t->leaves ? 0 : -ENOMEM;
}

void proof_tree_release(struct proof_tree *t)
{
	free(t->leaves);
	t->leaves = NULL;
}

/* Runs are read through the volume's mapping (volume_map_read()), held
 * while one update reads: hashed in the page cache where they lie instead
 * of copied out first. A secondary's fold reads again the whole 64 KiB
 * block of every scattered page it wrote (16 times the bytes), and that
 * copy was most of its cost; its session holds the mapping since its
 * tree's hashing, so that the fold also finds the page tables made. */

/* Leaves [first, first+count) from v: read in chunks (or found in the
 * held mapping) and hashed here (each chunk then shown to fn, when
 * given), or by blockcmp's threads (xxh3 only: blockcmp hashes with
 * hash_block). */
static int proof_hash_run(struct proof_tree *t, struct volume *v, uint64_t first, uint64_t count,
			  unsigned char *buf, proof_read_fn fn, void *arg)
{
	uint64_t bs = t->block_size, off = first * bs;
	uint64_t end = MIN((first + count) * bs, t->volume_size);
	int r;

	if (t->hash == PROOF_HASH_XXH3 && end - off >= PROOF_PARALLEL_MIN) {
		struct blockcmp_opts o = {.block_size = t->block_size, .seed = 0};
		_cleanup_free_ struct hash128 *hs = calloc(count, sizeof(*hs));

		if (!hs)
			return -ENOMEM;
		r = blockcmp_hash_volume(v, off, end - off, &o, hs);
		if (r < 0)
			return r;
		for (uint64_t i = 0; i < count; i++)
			proof_xxh3_bytes(hs[i], &t->leaves[first + i]);
		return 0;
	}
	while (off < end) {
		/* RESYNC_CHUNK is a multiple of every valid block size. */
		size_t m = (size_t)MIN(end - off, (uint64_t)RESYNC_CHUNK);
		const unsigned char *p;

		r = volume_map_read(v, buf, m, off, &p);
		if (r < 0)
			return r;
		for (size_t q = 0; q < m; q += bs)
			proof_hash_bytes(t->hash, p + q, MIN((size_t)bs, m - q),
					 &t->leaves[(off + q) / bs]);
		if (fn)
			fn(arg, off, p, m);
		off += m;
	}
	return 0;
}

int proof_tree_update(struct proof_tree *t, struct volume *v, const struct rangelist *l,
		      uint64_t *ret_hashed)
{
	return proof_tree_update_each(t, v, l, NULL, NULL, ret_hashed);
}

int proof_tree_update_each(struct proof_tree *t, struct volume *v, const struct rangelist *l,
			   proof_read_fn fn, void *arg, uint64_t *ret_hashed)
{
	uint64_t bs = t->block_size, hashed = 0;
	_cleanup_free_ unsigned char *bits = NULL, *buf = NULL;
	bool held;
	int r = 0;

	if (volume_size(v) != t->volume_size)
		return -EINVAL;
	buf = malloc(RESYNC_CHUNK);
	if (!buf)
		return -ENOMEM;
	if (!l) {
		held = volume_map_hold(v) == 0;
		r = proof_hash_run(t, v, 0, t->nleaves, buf, fn, arg);
		if (held)
			volume_map_release(v);
		if (r >= 0 && ret_hashed)
			*ret_hashed = t->nleaves;
		return r;
	}
	bits = calloc(1, DIV_ROUND_UP(t->nleaves, 8) + 1);
	if (!bits)
		return -ENOMEM;
	for (size_t i = 0; i < l->n; i++) {
		uint64_t a = l->v[i].off, e = a + l->v[i].len;

		if (!l->v[i].len || a >= t->volume_size)
			continue;
		e = MIN(e, t->volume_size);
		for (uint64_t k = a / bs; k <= (e - 1) / bs; k++)
			bits[k / 8] |= (unsigned char)(1u << (k % 8));
	}
	held = volume_map_hold(v) == 0;
	for (uint64_t k = 0; k < t->nleaves && r >= 0;) {
		uint64_t e;

		if (!bits[k / 8]) {
			k = (k / 8 + 1) * 8;
			continue;
		}
		if (!(bits[k / 8] & (1u << (k % 8)))) {
			k++;
			continue;
		}
		for (e = k; e < t->nleaves && (bits[e / 8] & (1u << (e % 8))); e++)
			;
		r = proof_hash_run(t, v, k, e - k, buf, fn, arg);
		hashed += e - k;
		k = e;
	}
	if (held)
		volume_map_release(v);
	if (r >= 0 && ret_hashed)
		*ret_hashed = hashed;
	return r;
}

int proof_tree_set_xxh3(struct proof_tree *t, const struct hash128 *hs)
{
	if (t->hash != PROOF_HASH_XXH3 || !t->leaves)
		return -EINVAL;
	for (uint64_t i = 0; i < t->nleaves; i++)
		proof_xxh3_bytes(hs[i], &t->leaves[i]);
	return 0;
}

int proof_tree_root(const struct proof_tree *t, struct proof_digest *ret)
{
	size_t d = proof_digest_len(t->hash);
	uint64_t n = t->nleaves;
	_cleanup_free_ struct proof_digest *lv = NULL;
	struct proof_digest top;
	unsigned char in[1 + 2 * PROOF_DIGEST_MAX];

	if (!n) {
		proof_hash_bytes(t->hash, "", 0, &top);
	} else {
		lv = malloc(n * sizeof(*lv));
		if (!lv)
			return -ENOMEM;
		memcpy(lv, t->leaves, n * sizeof(*lv));
		while (n > 1) {
			uint64_t k = 0;

			for (uint64_t i = 0; i + 1 < n; i += 2) {
				in[0] = 0x01;
				memcpy(in + 1, lv[i].b, d);
				memcpy(in + 1 + d, lv[i + 1].b, d);
				proof_hash_bytes(t->hash, in, 1 + 2 * d, &lv[k++]);
			}
			if (n % 2)
				lv[k++] = lv[n - 1];
			n = k;
		}
		top = lv[0];
	}
	in[0] = 0x02;
	for (unsigned i = 0; i < 8; i++)
		in[1 + i] = (unsigned char)(t->volume_size >> (8 * i));
	for (unsigned i = 0; i < 4; i++)
		in[9 + i] = (unsigned char)(t->block_size >> (8 * i));
	memcpy(in + 13, top.b, d);
	proof_hash_bytes(t->hash, in, 13 + d, ret);
	return 0;
}

/* ---- the leaf file ---- */

#define PROOF_FILE_MAGIC "RSYNPRF1"

struct proof_file_hdr {
	char magic[8];
	uint32_t hash, block_size;
	uint64_t volume_size, nleaves;
	struct proof_key key;
	struct hash128 check; /* hash_block() of the leaves, seed 0 */
};
_Static_assert(sizeof(struct proof_file_hdr) == 80, "proof file header layout");

int proof_file_save(const char *path, const struct proof_tree *t, const struct proof_key *key)
{
	size_t d = proof_digest_len(t->hash), len = sizeof(struct proof_file_hdr) + t->nleaves * d;
	_cleanup_free_ unsigned char *buf = malloc(len);
	struct proof_file_hdr h = {.hash = t->hash,
				   .block_size = t->block_size,
				   .volume_size = t->volume_size,
				   .nleaves = t->nleaves,
				   .key = *key};

	if (!buf)
		return -ENOMEM;
	memcpy(h.magic, PROOF_FILE_MAGIC, 8);
	for (uint64_t i = 0; i < t->nleaves; i++)
		memcpy(buf + sizeof(h) + i * d, t->leaves[i].b, d);
	h.check = hash_block(buf + sizeof(h), len - sizeof(h), 0);
	memcpy(buf, &h, sizeof(h));
	return file_write_atomic(path, buf, len, 0600);
}

int proof_file_parse(const void *buf, size_t len, const struct proof_key *key, enum proof_hash h,
		     uint32_t block_size, uint64_t volume_size, struct proof_tree *ret)
{
	const unsigned char *p = buf;
	struct proof_file_hdr hdr;
	struct hash128 check;
	size_t d;
	int r;

	if (len < sizeof(hdr))
		return -EBADMSG;
	memcpy(&hdr, p, sizeof(hdr));
	if (memcmp(hdr.magic, PROOF_FILE_MAGIC, 8) || hdr.hash >= PROOF_HASH_COUNT)
		return -EBADMSG;
	d = proof_digest_len(hdr.hash);
	if (hdr.nleaves > (len - sizeof(hdr)) / d || sizeof(hdr) + hdr.nleaves * d != len)
		return -EBADMSG;
	check = hash_block(p + sizeof(hdr), len - sizeof(hdr), 0);
	if (!hash128_equal(&check, &hdr.check))
		return -EBADMSG;
	if (hdr.hash != (uint32_t)h || hdr.block_size != block_size ||
	    hdr.volume_size != volume_size || memcmp(&hdr.key, key, sizeof(*key)))
		return -ESTALE;
	r = proof_tree_init(ret, h, block_size, volume_size);
	if (r < 0)
		return r;
	if (ret->nleaves != hdr.nleaves) {
		proof_tree_release(ret);
		return -EBADMSG;
	}
	for (uint64_t i = 0; i < hdr.nleaves; i++)
		memcpy(ret->leaves[i].b, p + sizeof(hdr) + i * d, d);
	return 0;
}

int proof_file_load(const char *path, const struct proof_key *key, enum proof_hash h,
		    uint32_t block_size, uint64_t volume_size, struct proof_tree *ret)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	_cleanup_free_ unsigned char *buf = NULL;
	struct stat st;
	ssize_t got;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (st.st_size < (off_t)sizeof(struct proof_file_hdr) ||
	    (uint64_t)st.st_size > sizeof(struct proof_file_hdr) +
					   (DIV_ROUND_UP(volume_size, block_size) + 1) * PROOF_DIGEST_MAX)
		return -EBADMSG;
	buf = malloc((size_t)st.st_size);
	if (!buf)
		return -ENOMEM;
	got = fd_read_all(fd, buf, (size_t)st.st_size);
	if (got < 0)
		return (int)got;
	return proof_file_parse(buf, (size_t)got, key, h, block_size, volume_size, ret);
}
