/* The metadata beside a volume: two checksummed slots, the dirty bitmap and
 * the activity log. Layout in meta-int.h; the contract in resync/meta.h.
 * Here: open, create, load, resize, the clean stop and the info; the
 * rooms beside it are listed in meta-core.h. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "resync/fileio.h"
#include "resync/io.h"
#include "resync/macro.h"
#include "resync/meta.h"
#include "resync/volume.h"
#include "meta-core.h"

/* ---- small helpers ---- */

static uint64_t ts_ns(const struct timespec *ts)
{
	return (uint64_t)ts->tv_sec * 1000000000ull + (uint64_t)ts->tv_nsec;
}

int meta_identity_read(struct volume *v, struct meta_disk_identity *ret)
{
	struct stat st;

	if (fstat(volume_fd(v), &st) < 0)
		return -errno;
	*ret = (struct meta_disk_identity){
		.dev = (uint64_t)st.st_dev,
		.ino = (uint64_t)st.st_ino,
		.size = volume_size(v),
		.mtime_ns = ts_ns(&st.st_mtim),
		.ctime_ns = ts_ns(&st.st_ctim),
	};
	if (S_ISBLK(st.st_mode)) {
		/* A device's node times say nothing about its contents. */
		ret->dev = (uint64_t)st.st_rdev;
		ret->mtime_ns = ret->ctime_ns = 0;
	}
	return 0;
}

static bool identity_equal(const struct meta_disk_identity *a, const struct meta_disk_identity *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime_ns == b->mtime_ns && a->ctime_ns == b->ctime_ns;
}

/* ---- open, create, load ---- */

int meta_path_default(const char *image, char **ret)
{
	char *p;

	if (asprintf(&p, "%s.resync-meta", image) < 0)
		return -ENOMEM;
	*ret = p;
	return 0;
}

static struct meta *meta_alloc(void)
{
	struct meta *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->fd = -1;
	pthread_mutex_init(&m->lock, NULL);
	pthread_cond_init(&m->cond, NULL);
	if (posix_memalign((void **)&m->hdr, META_ALIGN, META_HEADER_SIZE)) {
		free(m);
		return NULL;
	}
	m->slot_gen[0] = m->slot_gen[1] = SLOT_GEN_UNKNOWN;
	return m;
}

void meta_free(struct meta *m)
{
	if (!m)
		return;
	if (m->fd >= 0)
		close(m->fd);
	pthread_mutex_destroy(&m->lock);
	pthread_cond_destroy(&m->cond);
	free(m->bitmap);
	free(m->snapshot);
	free(m->durable);
	free(m->hdr);
	free(m->path);
	free(m);
}

/* Write the whole state as a new file (slot 0 only), fsync, rename over
 * path, fsync the directory. Used for fresh and rebuilt metadata. */
static int meta_write_new_file(struct meta *m)
{
	_cleanup_free_ char *tmp = NULL;
	_cleanup_close_ int fd = -1;
	uint32_t flags = m->flags & (META_DISK_UNTRUSTED | META_DISK_CHECKPOINT);
	uint64_t csum = XXH64(m->bitmap, m->bitmap_bytes, 0);
	uint64_t seq = m->seq + 1;
	int r;

	fd = file_atomic_open(m->path, 0644, &tmp);
	if (fd < 0)
		return fd;
	/* A fresh file says clean: nobody has written through it yet. */
	meta_header_encode(m, m->hdr, seq, flags | META_DISK_CLEAN, NULL, 0, NULL, csum);
	r = fd_pwrite_full(fd, m->hdr, META_HEADER_SIZE, 0);
	if (r >= 0 && m->bitmap_bytes)
		r = fd_pwrite_full(fd, m->bitmap, m->bitmap_bytes,
				   meta_bitmap_slot_off(m->bitmap_bytes, 0));
	if (r >= 0 && ftruncate(fd, (off_t)meta_bitmap_slot_off(m->bitmap_bytes, 2)) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		return r;
	}
	r = file_atomic_commit(fd, tmp, m->path);
	if (r < 0)
		return r;
	if (m->fd >= 0)
		close(m->fd);
	m->fd = TAKE_FD(fd);
	m->seq = seq;
	m->active = 0;
	m->bitmap_gen++;
	m->slot_gen[0] = m->bitmap_gen;
	m->slot_csum[0] = csum;
	m->slot_gen[1] = SLOT_GEN_UNKNOWN;
	m->al_disk_n = m->al_stable_n = m->al_want_n = 0;
	m->clean_on_disk = true;
	m->identity_set = false;
	return 0;
}

/* Fresh metadata for v; with untrusted, every bit set (nothing is known). */
static int meta_create(struct meta *m, const struct meta_opts *opts, bool untrusted)
{
	uint32_t bs, shift, cap;
	int r;

	r = meta_opts_geometry(opts, &bs, &shift, &cap);
	if (r < 0)
		return r;
	r = meta_geometry_init(m, volume_size(m->vol), bs, shift, cap);
	if (r < 0)
		return r;
	if (meta_uuid_is_null(&m->node)) {
		r = meta_uuid_random(&m->node);
		if (r < 0)
			return r;
	}
	if (meta_uuid_is_null(&m->generation)) {
		r = meta_uuid_random(&m->generation);
		if (r < 0)
			return r;
	}
	if (untrusted) {
		m->flags |= META_DISK_UNTRUSTED;
		if (m->nblocks)
			bits_set_range(m->bitmap, 0, m->nblocks - 1);
	}
	return meta_write_new_file(m);
}

/* Read slot s: header, then its bitmap into bm (bitmap_bytes + 1). */
static int meta_slot_read(int fd, unsigned s, struct meta_disk_header *buf, struct meta_hdr *h,
			  uint8_t **ret_bm)
{
	_cleanup_free_ uint8_t *bm = NULL;
	int r;

	r = fd_pread_full(fd, buf, META_HEADER_SIZE, (uint64_t)s * META_HEADER_SIZE);
	if (r < 0)
		return r == -ENODATA ? -EBADMSG : r; /* a slot never written */
	r = meta_header_decode(buf, h);
	if (r < 0)
		return r;
	bm = calloc(1, h->bitmap_bytes + 1);
	if (!bm)
		return -ENOMEM;
	if (h->bitmap_bytes) {
		r = fd_pread_full(fd, bm, h->bitmap_bytes, meta_bitmap_slot_off(h->bitmap_bytes, s));
		if (r < 0)
			return r == -ENODATA ? -EBADMSG : r;
	}
	if (XXH64(bm, h->bitmap_bytes, 0) != h->bitmap_csum)
		return -EBADMSG;
	*ret_bm = TAKE_PTR(bm);
	return 0;
}

/* Load the newest valid slot. -EBADMSG when neither is valid. */
static int meta_load(struct meta *m)
{
	struct meta_hdr h[2];
	uint8_t *bm[2] = {NULL, NULL};
	int r[2], best;

	for (unsigned s = 0; s < 2; s++) {
		r[s] = meta_slot_read(m->fd, s, m->hdr, &h[s], &bm[s]);
		if (r[s] == -ENOMEM || r[s] == -EIO) {
			free(bm[0]);
			return r[s];
		}
	}
	if (r[0] < 0 && r[1] < 0) {
		return r[0] == -EPROTONOSUPPORT || r[1] == -EPROTONOSUPPORT ? -EPROTONOSUPPORT
									      : -EBADMSG;
	}
	best = r[0] < 0 ? 1 : r[1] < 0 ? 0 : h[1].seq > h[0].seq ? 1 : 0;
	{
		const struct meta_hdr *b = &h[best];
		int q = meta_geometry_init(m, b->volume_size, b->block_size, b->al_shift,
					   b->al_capacity);

		if (q < 0) {
			free(bm[0]);
			free(bm[1]);
			return q;
		}
		memcpy(m->bitmap, bm[best], b->bitmap_bytes);
		m->seq = b->seq;
		m->active = (unsigned)best;
		m->state = b->state;
		m->flags = b->flags & (META_DISK_UNTRUSTED | META_DISK_CHECKPOINT);
		m->clean_on_disk = b->flags & META_DISK_CLEAN;
		m->identity_set = b->flags & META_DISK_IDENTITY;
		m->identity = b->identity;
		m->node = b->node;
		m->generation = b->generation;
		m->history_n = b->history_count;
		memcpy(m->history, b->history, sizeof(m->history));
		m->checkpoint_off = b->checkpoint_off;
		m->checkpoint_id = b->checkpoint_id;
		memcpy(m->al_disk, b->al, b->al_count * sizeof(uint32_t));
		m->al_disk_n = b->al_count;
		for (unsigned i = 0; i < m->al_disk_n; i++)
			m->al_tick[i] = 0;
		memcpy(m->al_stable, b->al, b->al_count * sizeof(uint32_t));
		m->al_stable_n = b->al_count;
		m->bitmap_gen = 1;
		m->slot_gen[best] = 1;
		m->slot_csum[best] = b->bitmap_csum;
		/* The other slot holds the same bitmap only if its checksum
		 * says so; else the next write there is a full one. */
		if (r[best ^ 1] >= 0 && h[best ^ 1].bitmap_bytes == b->bitmap_bytes &&
		    h[best ^ 1].bitmap_csum == b->bitmap_csum) {
			m->slot_gen[best ^ 1] = 1;
			m->slot_csum[best ^ 1] = b->bitmap_csum;
		}
	}
	free(bm[0]);
	free(bm[1]);
	return 0;
}

/* After an unclean stop, every block of the logged extents is dirty. */
static void meta_fold_al(struct meta *m)
{
	for (unsigned i = 0; i < m->al_disk_n; i++) {
		uint64_t first = ((uint64_t)m->al_disk[i] << m->al_shift) / m->block_size;
		uint64_t last = MIN(first + ((1ull << m->al_shift) / m->block_size), m->nblocks) - 1;

		bits_set_range(m->bitmap, first, last);
	}
}

int meta_open(struct volume *v, const char *path, unsigned flags, const struct meta_opts *opts,
	      struct meta **ret)
{
	struct meta *m;
	struct meta_disk_identity now;
	int r;

	m = meta_alloc();
	if (!m)
		return -ENOMEM;
	m->vol = v;
	m->readonly = flags & META_READONLY;
	if (path)
		m->path = strdup(path);
	else
		r = meta_path_default(volume_path(v), &m->path);
	if (!m->path) {
		r = -ENOMEM;
		goto fail;
	}

	m->fd = open(m->path, (m->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (m->fd < 0) {
		r = -errno;
		if (r != -ENOENT || m->readonly || !(flags & META_CREATE))
			goto fail;
		r = meta_create(m, opts, false);
		if (r < 0)
			goto fail;
	} else {
		r = meta_load(m);
		if (r == -EBADMSG && !m->readonly && (flags & META_CREATE)) {
			/* Damaged beyond both slots: nothing can be trusted. */
			r = meta_create(m, opts, true);
		}
		if (r < 0)
			goto fail;
	}

	r = meta_identity_read(v, &now);
	if (r < 0)
		goto fail;
	if (m->volume_size != volume_size(v)) {
		/* The image was resized while nobody owned it. */
		m->flags |= META_DISK_UNTRUSTED;
		if (!m->readonly) {
			struct meta_opts o = {m->block_size, m->al_capacity, 1u << m->al_shift};

			r = meta_create(m, &o, true);
			if (r < 0)
				goto fail;
		}
	}
	if (!m->clean_on_disk)
		meta_fold_al(m);
	else if (m->identity_set && !identity_equal(&m->identity, &now))
		m->flags |= META_DISK_UNTRUSTED;

	if (!m->readonly) {
		/* Take over: the folded bitmap, an empty log, not clean. */
		m->al_disk_n = m->al_stable_n = 0;
		pthread_mutex_lock(&m->lock);
		r = meta_commit_locked(m, COMMIT_FULL);
		pthread_mutex_unlock(&m->lock);
		if (r < 0)
			goto fail;
	}
	*ret = m;
	return 0;
fail:
	meta_free(m);
	return r;
}

int meta_resize_check(const struct meta *m, uint64_t size)
{
	if (m->readonly)
		return -EROFS;
	return meta_geometry_ok(size, m->block_size, m->al_shift) ? 0 : -EFBIG;
}

int meta_resize(struct meta *m)
{
	struct meta_opts o = {m->block_size, m->al_capacity, 1u << m->al_shift};
	int r;

	r = meta_resize_check(m, volume_size(m->vol));
	if (r < 0)
		return r;
	pthread_mutex_lock(&m->lock);
	while (m->writing)
		pthread_cond_wait(&m->cond, &m->lock);
	m->writing = true;
	/* Fresh for the new size, untrusted (every bit set), then owned:
	 * not clean, as meta_open() leaves it. */
	r = meta_create(m, &o, true);
	m->writing = false;
	pthread_cond_broadcast(&m->cond);
	if (r >= 0)
		r = meta_commit_locked(m, COMMIT_FULL);
	pthread_mutex_unlock(&m->lock);
	return r;
}

int meta_mark_clean(struct meta *m)
{
	int r;

	r = volume_flush(m->vol);
	if (r < 0)
		return r;
	pthread_mutex_lock(&m->lock);
	r = meta_commit_locked(m, COMMIT_CLEAN);
	pthread_mutex_unlock(&m->lock);
	return r;
}

int meta_info_get(struct meta *m, struct meta_info *ret)
{
	pthread_mutex_lock(&m->lock);
	*ret = (struct meta_info){
		.volume_size = m->volume_size,
		.block_size = m->block_size,
		.al_extent_size = 1u << m->al_shift,
		.al_capacity = m->al_capacity,
		.al_used = m->al_disk_n,
		.state = (enum meta_state)m->state,
		.node = m->node,
		.generation = m->generation,
		.history_n = m->history_n,
		.clean = m->clean_on_disk,
		.bitmap_trusted = !(m->flags & META_DISK_UNTRUSTED),
		.checkpoint_set = m->flags & META_DISK_CHECKPOINT,
		.checkpoint_off = m->checkpoint_off,
		.checkpoint_id = m->checkpoint_id,
		.seq = m->seq,
	};
	memcpy(ret->history, m->history, sizeof(ret->history));
	pthread_mutex_unlock(&m->lock);
	return 0;
}
