/* DRIFT (wire.h): the primary's word on a secondary. */
#include <endian.h>
#include <errno.h>
#include <string.h>

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
