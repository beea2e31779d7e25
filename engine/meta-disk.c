/* The metadata's header on disk (meta-core.h): encoded and decoded here
 * only, so that this is the one place that knows the byte order, and the
 * geometry (block size, activity-log extents) a volume's size allows. */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "resync/macro.h"
#include "meta-core.h"

static uint64_t header_checksum(const struct meta_disk_header *h)
{
	return XXH64(h, offsetof(struct meta_disk_header, header_csum), 0);
}

void meta_header_encode(struct meta *m, struct meta_disk_header *h, uint64_t seq,
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

/* Validate every field the file controls before it is used. */
int meta_header_decode(const struct meta_disk_header *h, struct meta_hdr *ret)
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
bool meta_geometry_ok(uint64_t volume_size, uint32_t block_size, uint32_t al_shift)
{
	return DIV_ROUND_UP(DIV_ROUND_UP(volume_size, block_size), 8) <= RESYNC_META_BITMAP_MAX &&
	       DIV_ROUND_UP(volume_size, 1ull << al_shift) <= UINT32_MAX;
}

int meta_geometry_init(struct meta *m, uint64_t volume_size, uint32_t block_size,
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

int meta_opts_geometry(const struct meta_opts *opts, uint32_t *ret_bs, uint32_t *ret_shift,
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
