/* Dirty tracking (meta-core.h): a write marks its blocks in memory and
 * makes sure the activity log on disk covers their extents before it
 * goes on (group commits); a resync clears them; the bitmap's readers. */
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "resync/macro.h"
#include "resync/range.h"
#include "meta-core.h"

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
