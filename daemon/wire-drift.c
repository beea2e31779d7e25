/* DRIFT (wire.h): the primary's word on a secondary; PROOF_REQ and
 * PROOF: the root of a volume. */
#include <endian.h>
#include <errno.h>
#include <string.h>

#include "resync/limits.h"
#include "resync/proof.h"
#include "wire-int.h"
#include "wire.h"

int wire_drift_encode(const struct wire_drift *m, void *buf, size_t cap, size_t *ret_len)
{
	struct wire_drift_le h;

	if (m->state >= WIRE_STATE_COUNT || (m->flags & ~(uint32_t)WIRE_DRIFT_FLAGS_ALL) ||
	    m->differing_bytes > WIRE_OFFSET_MAX || m->differing_blocks > m->differing_bytes)
		return -EINVAL;
	if (cap < sizeof(h))
		return -ENOBUFS;
	h = (struct wire_drift_le){
		.state = htole32(m->state),
		.flags = htole32(m->flags),
		.verify_time = htole64(m->verify_time),
		.differing_bytes = htole64(m->differing_bytes),
		.differing_blocks = htole64(m->differing_blocks),
	};
	memcpy(buf, &h, sizeof(h));
	*ret_len = sizeof(h);
	return 0;
}

int wire_drift_decode(const void *buf, size_t len, struct wire_drift *ret)
{
	struct wire_drift_le h;
	struct wire_drift m;

	if (len != sizeof(h))
		return -EBADMSG;
	memcpy(&h, buf, sizeof(h));
	m = (struct wire_drift){
		.state = le32toh(h.state),
		.flags = le32toh(h.flags),
		.verify_time = le64toh(h.verify_time),
		.differing_bytes = le64toh(h.differing_bytes),
		.differing_blocks = le64toh(h.differing_blocks),
	};
	/* A block differs by one byte at least. */
	if (m.state >= WIRE_STATE_COUNT || (m.flags & ~(uint32_t)WIRE_DRIFT_FLAGS_ALL) ||
	    m.differing_bytes > WIRE_OFFSET_MAX || m.differing_blocks > m.differing_bytes ||
	    (!(m.flags & WIRE_DRIFT_VERIFIED) && (m.verify_time || m.differing_bytes)))
		return -EBADMSG;
	*ret = m;
	return 0;
}

int wire_proof_encode(const struct wire_proof *m, void *buf, size_t cap, size_t *ret_len)
{
	struct wire_proof_le h;

	if (m->hash >= PROOF_HASH_COUNT || !resync_block_size_valid(m->block_size) ||
	    m->volume_size > WIRE_OFFSET_MAX)
		return -EINVAL;
	if (cap < sizeof(h))
		return -ENOBUFS;
	h = (struct wire_proof_le){
		.hash = htole32(m->hash),
		.block_size = htole32(m->block_size),
		.volume_size = htole64(m->volume_size),
		.hashed = htole64(m->hashed),
	};
	memcpy(h.root, m->root, sizeof(h.root));
	memcpy(buf, &h, sizeof(h));
	*ret_len = sizeof(h);
	return 0;
}

int wire_proof_decode(const void *buf, size_t len, struct wire_proof *ret)
{
	struct wire_proof_le h;
	struct wire_proof m;

	if (len != sizeof(h))
		return -EBADMSG;
	memcpy(&h, buf, sizeof(h));
	m = (struct wire_proof){
		.hash = le32toh(h.hash),
		.block_size = le32toh(h.block_size),
		.volume_size = le64toh(h.volume_size),
		.hashed = le64toh(h.hashed),
	};
	memcpy(m.root, h.root, sizeof(m.root));
	if (m.hash >= PROOF_HASH_COUNT || !resync_block_size_valid(m.block_size) ||
	    m.volume_size > WIRE_OFFSET_MAX)
		return -EBADMSG;
	*ret = m;
	return 0;
}

/* PROOF_COMMIT */

int wire_proof_commit_encode(const struct wire_proof *m, const struct wire_uuid *generation,
			     void *buf, size_t cap, size_t *ret_len)
{
	size_t len;
	int r;

	if (cap < sizeof(struct wire_proof_le) + sizeof(struct wire_commit_le))
		return -ENOBUFS;
	r = wire_proof_encode(m, buf, cap, &len);
	if (r < 0)
		return r;
	r = wire_commit_encode(generation, (unsigned char *)buf + len, cap - len, ret_len);
	if (r < 0)
		return r;
	*ret_len += len;
	return 0;
}

int wire_proof_commit_decode(const void *buf, size_t len, struct wire_proof *ret,
			     struct wire_uuid *ret_generation)
{
	const size_t pl = sizeof(struct wire_proof_le);
	struct wire_proof m;
	int r;

	if (len != pl + sizeof(struct wire_commit_le))
		return -EBADMSG;
	r = wire_proof_decode(buf, pl, &m);
	if (r < 0)
		return r;
	r = wire_commit_decode((const unsigned char *)buf + pl, len - pl, ret_generation);
	if (r < 0)
		return r;
	*ret = m;
	return 0;
}
