/* The metadata's commits (meta-core.h): the next slot written (its bitmap
 * when it changed, then its header), fdatasynced, and only then the one
 * in use; the activity log grown or folded on the way. And the durable
 * setters, each a commit. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "resync/failpoint.h"
#include "resync/fileio.h"
#include "resync/io.h"
#include "resync/macro.h"
#include "meta-core.h"

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

/* One commit's plan: what meta_commit_locked() writes and then keeps. */
struct commit {
	enum commit_kind kind;
	unsigned target; /* the slot written */
	bool full;	 /* its bitmap too */
	uint64_t seq, csum;
	uint32_t al[RESYNC_META_AL_MAX];
	unsigned al_n;
	struct meta_disk_identity id; /* COMMIT_CLEAN's */
};

/* With lock held: plan the commit into c and encode its header into
 * m->hdr (and its bitmap into m->snapshot when full). Returns 0 or
 * -errno (the image's identity unreadable). */
static int commit_plan(struct meta *m, struct commit *c)
{
	uint32_t flags;
	unsigned n = 0;
	int r;

	c->target = m->active ^ 1;
	c->full = c->kind != COMMIT_AL || m->slot_gen[c->target] != m->bitmap_gen;
	flags = m->flags & (META_DISK_UNTRUSTED | META_DISK_CHECKPOINT);
	if (c->kind == COMMIT_CLEAN) {
		flags |= META_DISK_CLEAN;
		r = meta_identity_read(m->vol, &c->id);
		if (r < 0)
			return r;
		flags |= META_DISK_IDENTITY;
	} else if (al_next(m, c->al, &c->al_n)) {
		c->full = true;
	}

	if (c->full) {
		memcpy(m->snapshot, m->bitmap, m->bitmap_bytes);
		c->csum = XXH64(m->snapshot, m->bitmap_bytes, 0);
		/* Until this slot is known to be whole, a bit counts as durable
		 * only if both it and the slot in use hold it (a bit cleared
		 * here may land or not). */
		for (uint64_t i = 0; i < m->bitmap_bytes; i++)
			m->durable[i] &= m->snapshot[i];
	} else {
		c->csum = m->slot_csum[c->target];
	}
	c->seq = m->seq + 1;
	meta_header_encode(m, m->hdr, c->seq, flags, c->al, c->al_n,
			   c->kind == COMMIT_CLEAN ? &c->id : NULL, c->csum);

	/* While the slot is written, only extents in both the old and the
	 * new log are covered whichever slot survives a crash. */
	for (unsigned i = 0; i < m->al_disk_n; i++)
		if (al_has(c->al, c->al_n, m->al_disk[i]))
			m->al_stable[n++] = m->al_disk[i];
	m->al_stable_n = n;
	return 0;
}

/* Without the lock (m->writing keeps others out): the slot's bitmap,
 * then its header, then fdatasync. Returns 0 or -errno. */
static int commit_write(struct meta *m, const struct commit *c)
{
	int r = 0;

	if (c->full && m->bitmap_bytes)
		r = fd_pwrite_full(m->fd, m->snapshot, m->bitmap_bytes,
				   meta_bitmap_slot_off(m->bitmap_bytes, c->target));
	FAILPOINT("meta-bitmap-written");
	if (r >= 0)
		r = fd_pwrite_full(m->fd, m->hdr, META_HEADER_SIZE,
				   (uint64_t)c->target * META_HEADER_SIZE);
	FAILPOINT("meta-header-written");
	if (r >= 0 && fdatasync(m->fd) < 0)
		r = -errno;
	FAILPOINT("meta-synced");
	return r;
}

/* With lock held, once the slot is durable: it is the one in use. */
static void commit_apply(struct meta *m, const struct commit *c)
{
	unsigned n = 0;

	m->seq = c->seq;
	m->active = c->target;
	m->writes++;
	if (c->full) {
		m->bitmap_gen++;
		m->slot_gen[c->target] = m->bitmap_gen;
		m->slot_csum[c->target] = c->csum;
		/* Later commits that are not full copy this slot's bitmap. */
		memcpy(m->durable, m->snapshot, m->bitmap_bytes);
	}
	al_set_disk(m, c->al, c->al_n);
	for (unsigned i = 0; i < m->al_want_n; i++)
		if (!al_has(c->al, c->al_n, m->al_want[i]))
			m->al_want[n++] = m->al_want[i];
	m->al_want_n = n;
	m->clean_on_disk = c->kind == COMMIT_CLEAN;
	if (c->kind == COMMIT_CLEAN) {
		m->identity = c->id;
		m->identity_set = true;
	}
}

int meta_commit_locked(struct meta *m, enum commit_kind kind)
{
	struct commit c = {.kind = kind};
	int r;

	if (m->readonly)
		return -EROFS;
	while (m->writing)
		pthread_cond_wait(&m->cond, &m->lock);
	m->writing = true;

	r = commit_plan(m, &c);
	if (r < 0)
		goto out;
	pthread_mutex_unlock(&m->lock);
	r = commit_write(m, &c);
	pthread_mutex_lock(&m->lock);
	if (r < 0) {
		/* The target slot may be torn: never trust its bitmap. */
		m->slot_gen[c.target] = SLOT_GEN_UNKNOWN;
		goto out;
	}
	commit_apply(m, &c);
out:
	m->writing = false;
	pthread_cond_broadcast(&m->cond);
	return r;
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
