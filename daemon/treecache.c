/* The hash tree of this volume, kept while the image is unchanged: the
 * plan's compare serves the resync that follows it, and a clean restart
 * takes it back from IMAGE.resync-hashes (see tree_file_save()). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/fs.h>
#include <sys/ioctl.h>

#include "node-int.h"
#include "resync/limits.h"
#include "resync/macro.h"
#include "resync/fileio.h"
#include "resync/io.h"

void tree_cache_release(struct tree_cache *c)
{
	hashtree_free(c->tree);
	free(c->hashes);
	memset(c, 0, sizeof(*c));
}

int node_image_id(struct node *n, struct image_id *ret)
{
	struct stat st;

	memset(ret, 0, sizeof(*ret));
	if (fstat(volume_fd(n->vol), &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -ENOTSUP;
	*ret = (struct image_id){(uint64_t)st.st_dev, (uint64_t)st.st_ino, (uint64_t)st.st_size,
				 st.st_mtim, st.st_ctim};
	return 0;
}

/* Whether the image is still the one this daemon opened, at the size it
 * serves: one process owns a volume, but anyone with root can truncate,
 * grow or replace the file under it, and then reads past the cut return
 * nothing and writes go to a file nobody reads. A regular file is
 * checked by its size (fstat of the opened inode) and by the inode at
 * its path (a replaced file is another one), a block device by its size
 * and the device at its path. On a change, err says what changed in the
 * operator's words, without the node's name at its front (callers add
 * it where the reader cannot tell). Returns 0, -ESTALE on a change, or
 * -errno when the image cannot be looked at (err says so too).
 * Thread-safe. */
int node_volume_check(struct node *n, char *err, size_t len)
{
	const struct volume *v = n->vol;
	const char *path = n->self->volume;
	struct stat fd_st, path_st;
	uint64_t want, have;

	for (int tries = 0;; tries++) {
		want = volume_size(v);
		if (fstat(volume_fd(v), &fd_st) < 0) {
			int r = -errno;

			snprintf(err, len, "cannot look at its volume '%s': %s", path, strerror(-r));
			return r;
		}
		have = (uint64_t)fd_st.st_size;
		if (S_ISBLK(fd_st.st_mode) && ioctl(volume_fd(v), BLKGETSIZE64, &have) < 0)
			have = want; /* no size to compare: the device check below */
		/* A file grown to its primary's size moves the file first and
		 * the size served a moment later: look once more. */
		if (have == want || tries)
			break;
	}
	if (have != want) {
		snprintf(err, len,
			 "its volume '%s' changed under resyncd: %" PRIu64 " bytes expected, %" PRIu64
			 " found (%s); restart resyncd on %s",
			 path, want, have, have < want ? "truncated?" : "grown?", n->self->name);
		return -ESTALE;
	}
	if (stat(path, &path_st) < 0) {
		int r = -errno;

		snprintf(err, len, "its volume '%s' changed under resyncd: %s at its path; restart resyncd on %s",
			 path, r == -ENOENT ? "no file" : strerror(-r), n->self->name);
		return r == -ENOENT ? -ESTALE : r;
	}
	if (S_ISBLK(fd_st.st_mode) ? path_st.st_rdev != fd_st.st_rdev
				   : path_st.st_dev != fd_st.st_dev || path_st.st_ino != fd_st.st_ino) {
		snprintf(err, len,
			 "its volume '%s' changed under resyncd: another %s is at its path (replaced?); restart resyncd on %s",
			 path, S_ISBLK(fd_st.st_mode) ? "device" : "file", n->self->name);
		return -ESTALE;
	}
	return 0;
}

bool image_id_equal(const struct image_id *a, const struct image_id *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
	       a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec;
}

/* Whether the image's mtime is older than now by more than the margin, so
 * that a write from now on changes it; *ret is set either way. */
bool node_image_still(struct node *n, struct image_id *ret)
{
	struct timespec now;
	int64_t age;

	if (node_image_id(n, ret) < 0)
		return false;
	clock_gettime(CLOCK_REALTIME, &now);
	age = (int64_t)(now.tv_sec - ret->mtime.tv_sec) * 1000000000 +
	      (now.tv_nsec - ret->mtime.tv_nsec);
	return age > TREE_CACHE_MARGIN_NSEC;
}

/* Take the cached tree for fanout, leaf size and seed (0: any seed) when the image
 * is unchanged since it was hashed: moves it to *ret, the cache is left
 * empty. */
bool tree_cache_take(struct node *n, uint64_t seed, unsigned fanout, uint32_t leaf,
			    struct tree_cache *ret)
{
	struct tree_cache *c = &n->tcache;
	struct image_id now;
	bool ok = false;

	pthread_mutex_lock(&n->lock);
	if (c->built && c->fanout == fanout && c->leaf == leaf && (!seed || c->seed == seed) &&
	    node_image_id(n, &now) == 0 && image_id_equal(&now, &c->id)) {
		*ret = *c;
		memset(c, 0, sizeof(*c));
		ok = true;
	}
	pthread_mutex_unlock(&n->lock);
	return ok;
}

/* Give a tree to the cache (replacing the one there); *c is left empty. */
void tree_cache_put(struct node *n, struct tree_cache *c)
{
	pthread_mutex_lock(&n->lock);
	tree_cache_release(&n->tcache);
	n->tcache = *c;
	pthread_mutex_unlock(&n->lock);
	memset(c, 0, sizeof(*c));
}

/* ---- the tree cache across clean restarts (IMAGE.resync-hashes) ----
 * A clean stop leaves the cached tree's leaf hashes beside the image,
 * with the image's identity from when they were computed (device, inode,
 * size, mtime, ctime); the next start takes them back only when that
 * identity is exactly the image's, and removes the file either way. Any
 * write to the image, through the mount or not, moves its ctime, which
 * nobody can set back: a volume unchanged since its last compare is not
 * read again by the next one. Its layout: struct tree_file_hdr
 * (node-int.h). */
static char *tree_file_path(const struct node *n)
{
	char *p;

	return asprintf(&p, "%s.resync-hashes", n->self->volume) < 0 ? NULL : p;
}

void tree_file_save(struct node *n)
{
	_cleanup_free_ char *path = tree_file_path(n), *tmp = NULL;
	_cleanup_close_ int fd = -1;
	struct tree_cache *c = &n->tcache;
	struct tree_file_hdr h;
	struct image_id now;
	int r;

	if (!path || !c->built || node_image_id(n, &now) < 0 || !image_id_equal(&now, &c->id))
		return;
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, TREE_FILE_MAGIC, sizeof(h.magic));
	h.seed = c->seed;
	h.nleaves = DIV_ROUND_UP(c->id.size, c->leaf);
	h.fanout = c->fanout;
	h.leaf = c->leaf;
	h.id = c->id;
	h.check = hash_block(c->hashes, h.nleaves * sizeof(*c->hashes), 0);
	fd = file_atomic_open(path, 0600, &tmp);
	r = fd < 0 ? fd : fd_pwrite_full(fd, &h, sizeof(h), 0);
	if (r >= 0)
		r = fd_pwrite_full(fd, c->hashes, h.nleaves * sizeof(*c->hashes), sizeof(h));
	if (r >= 0)
		r = file_atomic_commit(fd, tmp, path);
	else if (tmp)
		unlink(tmp);
	if (r < 0) {
		log_warning("cannot keep the hash tree of '%s' for the next start: %s", n->self->volume,
		      strerror(-r));
	}
}

/* Whether a tree file's header fits the image now and a file of
 * file_size bytes: 0, -ESTALE (hashed from another image, or the image
 * changed since), or -EBADMSG. */
static int tree_file_hdr_check(const struct tree_file_hdr *h, const struct image_id *now,
			       uint64_t file_size)
{
	if (memcmp(h->magic, TREE_FILE_MAGIC, sizeof(h->magic)))
		return -EBADMSG;
	if (!image_id_equal(now, &h->id))
		return -ESTALE;
	/* nleaves is then at most 2^52 (4 KiB leaves): its bytes cannot
	 * overflow. */
	if (!resync_block_size_valid(h->leaf) || h->fanout < RESYNC_HASHTREE_FANOUT_MIN ||
	    h->fanout > RESYNC_HASHTREE_FANOUT_MAX || h->nleaves != DIV_ROUND_UP(now->size, h->leaf) ||
	    file_size != sizeof(*h) + h->nleaves * sizeof(struct hash128))
		return -EBADMSG;
	return 0;
}

int tree_file_parse(const void *buf, size_t len, const struct image_id *now,
		    struct tree_cache *ret)
{
	_cleanup_free_ struct hash128 *hashes = NULL;
	struct hashtree *tree = NULL;
	struct tree_file_hdr h;
	struct hash128 check;
	int r;

	if (len < sizeof(h))
		return -EBADMSG;
	memcpy(&h, buf, sizeof(h));
	r = tree_file_hdr_check(&h, now, len);
	if (r < 0)
		return r;
	hashes = malloc(h.nleaves ? h.nleaves * sizeof(*hashes) : 1);
	if (!hashes)
		return -ENOMEM;
	memcpy(hashes, (const unsigned char *)buf + sizeof(h), h.nleaves * sizeof(*hashes));
	check = hash_block(hashes, h.nleaves * sizeof(*hashes), 0);
	if (!hash128_equal(&check, &h.check))
		return -EBADMSG;
	r = hashtree_new(hashes, h.nleaves, h.fanout, h.seed, &tree);
	if (r < 0)
		return r;
	*ret = (struct tree_cache){TAKE_PTR(hashes), tree, h.seed, h.fanout, h.leaf, h.id,
				  clock_usec()};
	return 0;
}

void tree_file_load(struct node *n)
{
	_cleanup_free_ char *path = tree_file_path(n);
	_cleanup_free_ void *buf = NULL;
	_cleanup_close_ int fd = -1;
	struct tree_file_hdr h;
	struct tree_cache c;
	struct image_id now;
	struct stat st;

	if (!path || (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return;
	unlink(path); /* taken back once, or not at all */
	/* The header first: the file is read whole only when its size is
	 * the one the image's leaves make. */
	if (fstat(fd, &st) < 0 || fd_pread_full(fd, &h, sizeof(h), 0) < 0 ||
	    node_image_id(n, &now) < 0 || tree_file_hdr_check(&h, &now, (uint64_t)st.st_size) < 0)
		return;
	buf = malloc((size_t)st.st_size);
	if (!buf || fd_pread_full(fd, buf, (size_t)st.st_size, 0) < 0 ||
	    tree_file_parse(buf, (size_t)st.st_size, &now, &c) < 0)
		return;
	tree_cache_release(&n->tcache);
	n->tcache = c;
	log_info("took back the hash tree of '%s': the image is unchanged since its last compare",
	      n->self->volume);
}
