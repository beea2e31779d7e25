/* The metadata beside a volume: two checksummed slots, the dirty bitmap and
 * the activity log. Layout in meta-int.h; the contract in resync/meta.h. */
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
#include <uuid/uuid.h>
#include <xxhash.h>

#include "resync/failpoint.h"
#include "resync/fileio.h"
#include "resync/io.h"
#include "resync/macro.h"
#include "resync/meta.h"
#include "resync/volume.h"
#include "meta-int.h"

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

/* ---- small helpers ---- */

static uint64_t ts_ns(const struct timespec *ts)
{
	return (uint64_t)ts->tv_sec * 1000000000ull + (uint64_t)ts->tv_nsec;
}

static int identity_of(struct volume *v, struct meta_disk_identity *ret)
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

static inline void bit_set(uint8_t *bm, uint64_t i)
{
	bm[i >> 3] |= (uint8_t)(1u << (i & 7));
}

static inline bool bit_test(const uint8_t *bm, uint64_t i)
{
	return bm[i >> 3] & (1u << (i & 7));
}

static void bits_set_range(uint8_t *bm, uint64_t first, uint64_t last)
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

static bool bits_all_set(const uint8_t *bm, uint64_t first, uint64_t last)
{
	for (uint64_t i = first; i <= last; i++)
		if (!bit_test(bm, i))
			return false;
	return true;
}

static void bits_clear_range(uint8_t *bm, uint64_t first, uint64_t last)
{
	for (uint64_t i = first; i <= last; i++)
		bm[i >> 3] &= (uint8_t)~(1u << (i & 7));
}

static bool al_has(const uint32_t *al, unsigned n, uint32_t e)
{
	for (unsigned i = 0; i < n; i++)
		if (al[i] == e)
			return true;
	return false;
}

/* ---- encoding: the only place that knows the byte order ---- */

static uint64_t header_checksum(const struct meta_disk_header *h)
{
	return XXH64(h, offsetof(struct meta_disk_header, header_csum), 0);
}

static void header_encode(struct meta *m, struct meta_disk_header *h, uint64_t seq,
			  uint32_t flags, const uint32_t *al, unsigned al_n,
			  const struct meta_disk_identity *id, uint64_t bitmap_csum)
{
	memset(h, 0, sizeof(*h));
	h->magic = htole64(META_MAGIC);
	h->version = htole32(META_VERSION);
	h->header_size = htole32(META_HEADER_SIZE);
	h->seq = htole64(seq);
	h->volume_size = htole64(m->volume_size);
	h->block_size = htole32(m->block_size);
	h->state = htole32(m->state);
	h->flags = htole32(flags);
	h->al_extent_shift = htole32(m->al_shift);
	h->al_capacity = htole32(m->al_capacity);
	h->al_count = htole32(al_n);
	h->history_count = htole32(m->history_n);
	memcpy(h->node, m->node.b, 16);
	memcpy(h->generation, m->generation.b, 16);
	for (unsigned i = 0; i < m->history_n; i++)
		memcpy(h->history[i], m->history[i].b, 16);
	h->checkpoint_off = htole64(m->checkpoint_off);
	memcpy(h->checkpoint_id, m->checkpoint_id.b, 16);
	if (id) {
		h->identity.dev = htole64(id->dev);
		h->identity.ino = htole64(id->ino);
		h->identity.size = htole64(id->size);
		h->identity.mtime_ns = htole64(id->mtime_ns);
		h->identity.ctime_ns = htole64(id->ctime_ns);
	}
	h->bitmap_bytes = htole64(m->bitmap_bytes);
	h->bitmap_csum = htole64(bitmap_csum);
	for (unsigned i = 0; i < al_n; i++)
		h->al[i] = htole32(al[i]);
	h->header_csum = htole64(header_checksum(h));
}

/* A decoded, validated header. */
struct meta_hdr {
	uint64_t seq, volume_size, checkpoint_off, bitmap_bytes, bitmap_csum;
	uint32_t block_size, state, flags, al_shift, al_capacity, al_count, history_count;
	struct meta_uuid node, generation, history[RESYNC_META_HISTORY], checkpoint_id;
	struct meta_disk_identity identity;
	uint32_t al[RESYNC_META_AL_MAX];
};

/* Validate every field the file controls before it is used. */
static int header_decode(const struct meta_disk_header *h, struct meta_hdr *ret)
{
	uint64_t nblocks, n_extents;

	if (le64toh(h->magic) != META_MAGIC)
		return -EBADMSG;
	if (le32toh(h->version) != META_VERSION)
		return -EPROTONOSUPPORT;
	if (le32toh(h->header_size) != META_HEADER_SIZE)
		return -EBADMSG;
	if (le64toh(h->header_csum) != header_checksum(h))
		return -EBADMSG;

	ret->seq = le64toh(h->seq);
	ret->volume_size = le64toh(h->volume_size);
	ret->block_size = le32toh(h->block_size);
	ret->state = le32toh(h->state);
	ret->flags = le32toh(h->flags);
	ret->al_shift = le32toh(h->al_extent_shift);
	ret->al_capacity = le32toh(h->al_capacity);
	ret->al_count = le32toh(h->al_count);
	ret->history_count = le32toh(h->history_count);
	ret->checkpoint_off = le64toh(h->checkpoint_off);
	ret->bitmap_bytes = le64toh(h->bitmap_bytes);
	ret->bitmap_csum = le64toh(h->bitmap_csum);

	if (ret->seq == 0 || !resync_block_size_valid(ret->block_size))
		return -EBADMSG;
	if (ret->state >= META_STATE_COUNT || (ret->flags & ~(uint32_t)META_DISK_KNOWN))
		return -EBADMSG;
	/* An extent's size is a uint32_t (meta_opts, meta_info): at most
	 * 2^31 bytes, as every writer makes it. */
	if (ret->al_shift > 31 || (1ull << ret->al_shift) < ret->block_size)
		return -EBADMSG;
	if (ret->al_capacity < 4 || ret->al_capacity > RESYNC_META_AL_MAX ||
	    ret->al_count > ret->al_capacity)
		return -EBADMSG;
	if (ret->history_count > RESYNC_META_HISTORY)
		return -EBADMSG;
	if (ret->volume_size > (uint64_t)RESYNC_META_BITMAP_MAX * 8 * ret->block_size)
		return -EBADMSG;
	nblocks = DIV_ROUND_UP(ret->volume_size, ret->block_size);
	if (ret->bitmap_bytes != DIV_ROUND_UP(nblocks, 8))
		return -EBADMSG;
	n_extents = DIV_ROUND_UP(ret->volume_size, 1ull << ret->al_shift);
	for (unsigned i = 0; i < ret->al_count; i++) {
		ret->al[i] = le32toh(h->al[i]);
		if (ret->al[i] >= n_extents)
			return -EBADMSG;
	}
	memcpy(ret->node.b, h->node, 16);
	memcpy(ret->generation.b, h->generation, 16);
	for (unsigned i = 0; i < ret->history_count; i++)
		memcpy(ret->history[i].b, h->history[i], 16);
	memcpy(ret->checkpoint_id.b, h->checkpoint_id, 16);
	ret->identity.dev = le64toh(h->identity.dev);
	ret->identity.ino = le64toh(h->identity.ino);
	ret->identity.size = le64toh(h->identity.size);
	ret->identity.mtime_ns = le64toh(h->identity.mtime_ns);
	ret->identity.ctime_ns = le64toh(h->identity.ctime_ns);
	return 0;
}

/* ---- geometry ---- */

/* Whether metadata can cover a volume of this size: its bitmap and its
 * activity-log extent numbers within their limits. */
static bool meta_geometry_ok(uint64_t volume_size, uint32_t block_size, uint32_t al_shift)
{
	return DIV_ROUND_UP(DIV_ROUND_UP(volume_size, block_size), 8) <= RESYNC_META_BITMAP_MAX &&
	       DIV_ROUND_UP(volume_size, 1ull << al_shift) <= UINT32_MAX;
}

static int meta_geometry_init(struct meta *m, uint64_t volume_size, uint32_t block_size,
			      uint32_t al_shift, uint32_t al_capacity)
{
	m->volume_size = volume_size;
	m->block_size = block_size;
	m->al_shift = al_shift;
	m->al_capacity = al_capacity;
	m->nblocks = DIV_ROUND_UP(volume_size, block_size);
	m->n_extents = DIV_ROUND_UP(volume_size, 1ull << al_shift);
	m->bitmap_bytes = DIV_ROUND_UP(m->nblocks, 8);
	if (!meta_geometry_ok(volume_size, block_size, al_shift))
		return -EFBIG;
	free(m->bitmap);
	free(m->snapshot);
	free(m->durable);
	/* One spare byte so that empty volumes still allocate. */
	m->bitmap = calloc(1, m->bitmap_bytes + 1);
	m->snapshot = calloc(1, m->bitmap_bytes + 1);
	m->durable = calloc(1, m->bitmap_bytes + 1);
	if (!m->bitmap || !m->snapshot || !m->durable)
		return -ENOMEM;
	return 0;
}

static int meta_opts_geometry(const struct meta_opts *opts, uint32_t *ret_bs, uint32_t *ret_shift,
			      uint32_t *ret_cap)
{
	uint32_t bs = opts && opts->block_size ? opts->block_size : RESYNC_BLOCK_DEFAULT;
	uint32_t ext = opts && opts->al_extent_size ? opts->al_extent_size : META_AL_EXTENT_DEFAULT;
	uint32_t cap = opts && opts->al_extents ? opts->al_extents : META_AL_DEFAULT;

	if (!resync_block_size_valid(bs))
		return -EINVAL;
	if (ext < bs || (ext & (ext - 1)))
		return -EINVAL;
	if (cap < 4 || cap > RESYNC_META_AL_MAX)
		return -EINVAL;
	*ret_bs = bs;
	*ret_shift = (uint32_t)__builtin_ctz(ext);
	*ret_cap = cap;
	return 0;
}

/* ---- commits ---- */

static void al_set_disk(struct meta *m, const uint32_t *al, unsigned n)
{
	uint64_t ticks[RESYNC_META_AL_MAX];

	for (unsigned i = 0; i < n; i++) {
		ticks[i] = m->tick;
		for (unsigned j = 0; j < m->al_disk_n; j++)
			if (m->al_disk[j] == al[i])
				ticks[i] = m->al_tick[j];
	}
	memcpy(m->al_disk, al, n * sizeof(*al));
	memcpy(m->al_tick, ticks, n * sizeof(*ticks));
	m->al_disk_n = n;
	memcpy(m->al_stable, al, n * sizeof(*al));
	m->al_stable_n = n;
}

static int cmp_tick_desc(const void *a, const void *b, void *arg)
{
	const uint64_t *ticks = arg;
	uint64_t ta = ticks[*(const unsigned *)a], tb = ticks[*(const unsigned *)b];

	return ta < tb ? 1 : ta > tb ? -1 : 0;
}

/* Build the next activity log into al; returns whether it is a fold (the
 * log could not grow: the bitmap must be written and cold extents go). */
static bool al_next(struct meta *m, uint32_t *al, unsigned *ret_n)
{
	unsigned n = m->al_disk_n, order[RESYNC_META_AL_MAX];
	bool fold = false;

	memcpy(al, m->al_disk, n * sizeof(*al));
	for (unsigned i = 0; i < m->al_want_n; i++) {
		if (al_has(al, n, m->al_want[i]))
			continue;
		if (n == m->al_capacity) {
			fold = true;
			break;
		}
		al[n++] = m->al_want[i];
	}
	if (!fold) {
		*ret_n = n;
		return false;
	}

	/* Fold: the wanted extents, then the hottest half of the old log. */
	n = 0;
	for (unsigned i = 0; i < m->al_want_n && n < m->al_capacity; i++)
		if (!al_has(al, n, m->al_want[i]))
			al[n++] = m->al_want[i];
	for (unsigned i = 0; i < m->al_disk_n; i++)
		order[i] = i;
	qsort_r(order, m->al_disk_n, sizeof(order[0]), cmp_tick_desc, m->al_tick);
	for (unsigned i = 0; i < m->al_disk_n && n < m->al_capacity / 2; i++)
		if (!al_has(al, n, m->al_disk[order[i]]))
			al[n++] = m->al_disk[order[i]];
	*ret_n = n;
	return true;
}

/* Write the next slot and make it durable. Called and returns with lock
 * held; drops it for the I/O. Commits are serialised by m->writing. */
static int meta_commit_locked(struct meta *m, enum commit_kind kind)
{
	struct meta_disk_identity id;
	uint32_t al[RESYNC_META_AL_MAX];
	unsigned al_n = 0, target;
	uint32_t flags;
	uint64_t seq, csum;
	bool full;
	int r;

	if (m->readonly)
		return -EROFS;
	while (m->writing)
		pthread_cond_wait(&m->cond, &m->lock);
	m->writing = true;

	target = m->active ^ 1;
	full = kind != COMMIT_AL || m->slot_gen[target] != m->bitmap_gen;
	flags = m->flags & (META_DISK_UNTRUSTED | META_DISK_CHECKPOINT);
	if (kind == COMMIT_CLEAN) {
		flags |= META_DISK_CLEAN;
		r = identity_of(m->vol, &id);
		if (r < 0)
			goto out;
		flags |= META_DISK_IDENTITY;
	} else if (al_next(m, al, &al_n)) {
		full = true;
	}

	if (full) {
		memcpy(m->snapshot, m->bitmap, m->bitmap_bytes);
		csum = XXH64(m->snapshot, m->bitmap_bytes, 0);
		/* Until this slot is known to be whole, a bit counts as durable
		 * only if both it and the slot in use hold it (a bit cleared
		 * here may land or not). */
		for (uint64_t i = 0; i < m->bitmap_bytes; i++)
			m->durable[i] &= m->snapshot[i];
	} else {
		csum = m->slot_csum[target];
	}
	seq = m->seq + 1;
	header_encode(m, m->hdr, seq, flags, al, al_n, kind == COMMIT_CLEAN ? &id : NULL, csum);

	/* While the slot is written, only extents in both the old and the
	 * new log are covered whichever slot survives a crash. */
	{
		unsigned n = 0;

		for (unsigned i = 0; i < m->al_disk_n; i++)
			if (al_has(al, al_n, m->al_disk[i]))
				m->al_stable[n++] = m->al_disk[i];
		m->al_stable_n = n;
	}

	pthread_mutex_unlock(&m->lock);
	r = 0;
	if (full && m->bitmap_bytes)
		r = fd_pwrite_full(m->fd, m->snapshot, m->bitmap_bytes,
				   meta_bitmap_slot_off(m->bitmap_bytes, target));
	FAILPOINT("meta-bitmap-written");
	if (r >= 0)
		r = fd_pwrite_full(m->fd, m->hdr, META_HEADER_SIZE,
				   (uint64_t)target * META_HEADER_SIZE);
	FAILPOINT("meta-header-written");
	if (r >= 0 && fdatasync(m->fd) < 0)
		r = -errno;
	FAILPOINT("meta-synced");
	pthread_mutex_lock(&m->lock);

	if (r < 0) {
		/* The target slot may be torn: never trust its bitmap. */
		m->slot_gen[target] = SLOT_GEN_UNKNOWN;
		goto out;
	}
	m->seq = seq;
	m->active = target;
	m->writes++;
	if (full) {
		m->bitmap_gen++;
		m->slot_gen[target] = m->bitmap_gen;
		m->slot_csum[target] = csum;
		/* Later commits that are not full copy this slot's bitmap. */
		memcpy(m->durable, m->snapshot, m->bitmap_bytes);
	}
	al_set_disk(m, al, al_n);
	{
		unsigned n = 0;

		for (unsigned i = 0; i < m->al_want_n; i++)
			if (!al_has(al, al_n, m->al_want[i]))
				m->al_want[n++] = m->al_want[i];
		m->al_want_n = n;
	}
	m->clean_on_disk = kind == COMMIT_CLEAN;
	if (kind == COMMIT_CLEAN) {
		m->identity = id;
		m->identity_set = true;
	}
out:
	m->writing = false;
	pthread_cond_broadcast(&m->cond);
	return r;
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
	header_encode(m, m->hdr, seq, flags | META_DISK_CLEAN, NULL, 0, NULL, csum);
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
	r = header_decode(buf, h);
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

	r = identity_of(v, &now);
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

/* ---- dirty tracking ---- */

static int meta_range_check(const struct meta *m, uint64_t off, uint64_t len)
{
	if (off > m->volume_size || len > m->volume_size - off)
		return -EINVAL;
	return 0;
}

int meta_dirty_mark(struct meta *m, uint64_t off, uint64_t len)
{
	uint64_t first_e, last_e;
	int r = 0;

	if (len == 0)
		return 0;
	r = meta_range_check(m, off, len);
	if (r < 0)
		return r;
	first_e = off >> m->al_shift;
	last_e = (off + len - 1) >> m->al_shift;

	pthread_mutex_lock(&m->lock);
	if (m->readonly) {
		r = -EROFS;
		goto out;
	}
	bits_set_range(m->bitmap, off / m->block_size, (off + len - 1) / m->block_size);
	m->tick++;
	/* Blocks the bitmap on disk already holds dirty (written before,
	 * since the last resync cleared them) are covered whichever slot a
	 * crash leaves: no log entry, no metadata write. */
	if (bits_all_set(m->durable, off / m->block_size, (off + len - 1) / m->block_size))
		goto out;

	if (last_e - first_e + 1 > m->al_capacity / 2) {
		/* Too wide for the log: write the bits themselves. */
		r = meta_commit_locked(m, COMMIT_FULL);
		goto out;
	}
	for (;;) {
		bool missing = false;

		for (uint64_t e = first_e; e <= last_e; e++) {
			if (al_has(m->al_stable, m->al_stable_n, (uint32_t)e))
				continue;
			missing = true;
			if (!al_has(m->al_want, m->al_want_n, (uint32_t)e) &&
			    m->al_want_n < m->al_capacity)
				m->al_want[m->al_want_n++] = (uint32_t)e;
		}
		if (!missing)
			break;
		if (m->writing) {
			/* Group commit: the next one takes our extents. */
			pthread_cond_wait(&m->cond, &m->lock);
			continue;
		}
		r = meta_commit_locked(m, COMMIT_AL);
		if (r < 0)
			goto out;
	}
	for (unsigned i = 0; i < m->al_disk_n; i++)
		if (m->al_disk[i] >= first_e && m->al_disk[i] <= last_e)
			m->al_tick[i] = m->tick;
out:
	pthread_mutex_unlock(&m->lock);
	return r;
}

int meta_dirty_clear(struct meta *m, uint64_t off, uint64_t len)
{
	uint64_t first, end;
	int r;

	r = meta_range_check(m, off, len);
	if (r < 0)
		return r;
	first = DIV_ROUND_UP(off, m->block_size);
	end = off + len == m->volume_size ? m->nblocks : (off + len) / m->block_size;
	pthread_mutex_lock(&m->lock);
	if (end > first)
		bits_clear_range(m->bitmap, first, end - 1);
	r = meta_commit_locked(m, COMMIT_FULL);
	pthread_mutex_unlock(&m->lock);
	return r;
}

int meta_dirty_ranges(struct meta *m, struct rangelist *ret)
{
	int r = 0;

	pthread_mutex_lock(&m->lock);
	for (uint64_t i = 0; i < m->nblocks; i++) {
		uint64_t off, len;

		if ((i & 63) == 0 && i + 64 <= m->nblocks) {
			uint64_t w;

			memcpy(&w, m->bitmap + i / 8, 8);
			if (w == 0) {
				i += 63;
				continue;
			}
		}
		if (!bit_test(m->bitmap, i))
			continue;
		off = i * m->block_size;
		len = MIN((uint64_t)m->block_size, m->volume_size - off);
		r = rangelist_add(ret, off, len);
		if (r < 0)
			break;
	}
	pthread_mutex_unlock(&m->lock);
	return r;
}

uint64_t meta_dirty_bytes(struct meta *m)
{
	uint64_t total = 0;

	pthread_mutex_lock(&m->lock);
	for (uint64_t i = 0; i < m->nblocks; i++)
		if (bit_test(m->bitmap, i))
			total += MIN((uint64_t)m->block_size, m->volume_size - i * m->block_size);
	pthread_mutex_unlock(&m->lock);
	return total;
}

bool meta_dirty_test(struct meta *m, uint64_t block)
{
	bool b;

	pthread_mutex_lock(&m->lock);
	b = block < m->nblocks && bit_test(m->bitmap, block);
	pthread_mutex_unlock(&m->lock);
	return b;
}

long long meta_bitmap_read(struct meta *m, void *buf, size_t size)
{
	long long n;

	pthread_mutex_lock(&m->lock);
	n = (long long)m->bitmap_bytes;
	if (size < m->bitmap_bytes)
		n = -ENOSPC;
	else
		memcpy(buf, m->bitmap, m->bitmap_bytes);
	pthread_mutex_unlock(&m->lock);
	return n;
}

uint64_t meta_writes(struct meta *m)
{
	uint64_t n;

	pthread_mutex_lock(&m->lock);
	n = m->writes;
	pthread_mutex_unlock(&m->lock);
	return n;
}

/* ---- durable setters ---- */

static int meta_commit(struct meta *m)
{
	return meta_commit_locked(m, COMMIT_FULL);
}

int meta_state_set(struct meta *m, enum meta_state state)
{
	int r;

	if ((unsigned)state >= META_STATE_COUNT)
		return -EINVAL;
	pthread_mutex_lock(&m->lock);
	m->state = state;
	r = meta_commit(m);
	pthread_mutex_unlock(&m->lock);
	return r;
}

static void generation_set_locked(struct meta *m, const struct meta_uuid *gen)
{
	if (memcmp(gen, &m->generation, sizeof(*gen))) {
		memmove(&m->history[1], &m->history[0],
			(RESYNC_META_HISTORY - 1) * sizeof(m->history[0]));
		m->history[0] = m->generation;
		m->history_n = MIN(m->history_n + 1, (unsigned)RESYNC_META_HISTORY);
		m->generation = *gen;
	}
}

int meta_generation_set(struct meta *m, const struct meta_uuid *gen)
{
	int r;

	pthread_mutex_lock(&m->lock);
	generation_set_locked(m, gen);
	r = meta_commit(m);
	pthread_mutex_unlock(&m->lock);
	return r;
}

int meta_resync_commit(struct meta *m, const struct meta_uuid *gen, bool uptodate)
{
	int r;

	pthread_mutex_lock(&m->lock);
	generation_set_locked(m, gen);
	if (m->nblocks)
		bits_clear_range(m->bitmap, 0, m->nblocks - 1);
	if (uptodate) {
		m->flags &= ~(uint32_t)(META_DISK_UNTRUSTED | META_DISK_CHECKPOINT);
		m->checkpoint_off = 0;
		memset(&m->checkpoint_id, 0, sizeof(m->checkpoint_id));
		m->state = META_STATE_UPTODATE;
	}
	r = meta_commit(m);
	pthread_mutex_unlock(&m->lock);
	return r;
}

int meta_history_set(struct meta *m, const struct meta_uuid *history, unsigned n)
{
	int r;

	if (n > RESYNC_META_HISTORY)
		return -EINVAL;
	pthread_mutex_lock(&m->lock);
	memset(m->history, 0, sizeof(m->history));
	memcpy(m->history, history, n * sizeof(*history));
	m->history_n = n;
	r = meta_commit(m);
	pthread_mutex_unlock(&m->lock);
	return r;
}

int meta_node_set(struct meta *m, const struct meta_uuid *node)
{
	int r;

	pthread_mutex_lock(&m->lock);
	m->node = *node;
	r = meta_commit(m);
	pthread_mutex_unlock(&m->lock);
	return r;
}

int meta_trusted_set(struct meta *m, bool trusted)
{
	int r;

	pthread_mutex_lock(&m->lock);
	if (trusted)
		m->flags &= ~(uint32_t)META_DISK_UNTRUSTED;
	else
		m->flags |= META_DISK_UNTRUSTED;
	r = meta_commit(m);
	pthread_mutex_unlock(&m->lock);
	return r;
}

int meta_checkpoint_set(struct meta *m, uint64_t off, const struct meta_uuid *id)
{
	int r;

	if (off > m->volume_size)
		return -EINVAL;
	pthread_mutex_lock(&m->lock);
	m->flags |= META_DISK_CHECKPOINT;
	m->checkpoint_off = off;
	m->checkpoint_id = *id;
	r = meta_commit_locked(m, COMMIT_AL);
	pthread_mutex_unlock(&m->lock);
	return r;
}

int meta_checkpoint_clear(struct meta *m)
{
	int r;

	pthread_mutex_lock(&m->lock);
	m->flags &= ~(uint32_t)META_DISK_CHECKPOINT;
	m->checkpoint_off = 0;
	memset(&m->checkpoint_id, 0, sizeof(m->checkpoint_id));
	r = meta_commit_locked(m, COMMIT_AL);
	pthread_mutex_unlock(&m->lock);
	return r;
}

/* ---- names and UUIDs ---- */

static const char *const state_names[] = {
	[META_STATE_UNKNOWN] = "Unknown",
	[META_STATE_UPTODATE] = "UpToDate",
	[META_STATE_OUTDATED] = "Outdated",
	[META_STATE_INCONSISTENT] = "Inconsistent",
	[META_STATE_DIVERGED] = "Diverged",
};
_Static_assert(ARRAY_SIZE(state_names) == META_STATE_COUNT, "a name for every state");
/* On disk: a state's value never changes (and stays below 2^32). */
_Static_assert(META_STATE_UNKNOWN == 0 && META_STATE_UPTODATE == 1 && META_STATE_OUTDATED == 2 &&
		       META_STATE_INCONSISTENT == 3 && META_STATE_DIVERGED == 4,
	       "on-disk state values");

const char *meta_state_name(enum meta_state state)
{
	if ((unsigned)state >= ARRAY_SIZE(state_names))
		return "Unknown";
	return state_names[state];
}

int meta_state_parse(const char *name, enum meta_state *ret)
{
	for (unsigned i = 0; i < ARRAY_SIZE(state_names); i++)
		if (!strcasecmp(name, state_names[i])) {
			*ret = (enum meta_state)i;
			return 0;
		}
	return -EINVAL;
}

int meta_uuid_random(struct meta_uuid *ret)
{
	_Static_assert(sizeof(ret->b) == sizeof(uuid_t), "a meta_uuid is a uuid_t");
	uuid_generate_random(ret->b);
	return 0;
}

bool meta_uuid_is_null(const struct meta_uuid *u)
{
	static const struct meta_uuid zero;

	return !memcmp(u, &zero, sizeof(zero));
}

const char *meta_uuid_format(const struct meta_uuid *u, char *buf, size_t size)
{
	char s[UUID_STR_LEN];

	uuid_unparse_lower(u->b, s);
	snprintf(buf, size, "%s", s);
	return buf;
}

int meta_uuid_parse(const char *s, struct meta_uuid *ret)
{
	struct meta_uuid u;
	unsigned n = 0;

	for (const char *p = s; *p; p++) {
		int hi, lo;

		if (*p == '-' && (n == 4 || n == 6 || n == 8 || n == 10))
			continue;
		if (n == 16 || !p[1])
			return -EINVAL;
		hi = (*p >= '0' && *p <= '9')	? *p - '0'
		     : (*p >= 'a' && *p <= 'f') ? *p - 'a' + 10
		     : (*p >= 'A' && *p <= 'F') ? *p - 'A' + 10
						: -1;
		p++;
		lo = (*p >= '0' && *p <= '9')	? *p - '0'
		     : (*p >= 'a' && *p <= 'f') ? *p - 'a' + 10
		     : (*p >= 'A' && *p <= 'F') ? *p - 'A' + 10
						: -1;
		if (hi < 0 || lo < 0)
			return -EINVAL;
		u.b[n++] = (uint8_t)(hi << 4 | lo);
	}
	if (n != 16)
		return -EINVAL;
	*ret = u;
	return 0;
}
