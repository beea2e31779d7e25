/* UNDO and UNDO_INFO (WIRE_FEATURE_UNDO): layouts in wire-int.h. */
#include <endian.h>
#include <errno.h>
#include <string.h>

#include "resync/undo.h"
#include "wire-int.h"
#include "wire.h"

int wire_undo_encode(uint32_t mode, void *buf, size_t cap, size_t *ret_len)
{
	struct wire_undo_le h = {.mode = htole32(mode)};

	if (mode >= UNDO_MODE_COUNT)
		return -EINVAL;
	if (cap < sizeof(h))
		return -ENOBUFS;
	memcpy(buf, &h, sizeof(h));
	*ret_len = sizeof(h);
	return 0;
}

int wire_undo_decode(const void *buf, size_t len, uint32_t *ret_mode)
{
	struct wire_undo_le h;

	if (len != sizeof(h))
		return -EBADMSG;
	memcpy(&h, buf, sizeof(h));
	if (le32toh(h.mode) >= UNDO_MODE_COUNT || h.reserved)
		return -EBADMSG;
	*ret_mode = le32toh(h.mode);
	return 0;
}

static bool undo_info_valid(const struct wire_undo_info *m)
{
	return !(m->flags & ~(uint32_t)WIRE_UNDO_FLAGS_ALL) && m->state < WIRE_STATE_COUNT &&
	       ((m->flags & WIRE_UNDO_HELD) ||
		(!m->bytes && !m->saved && !m->until && !m->created && !m->state &&
		 !(m->flags & WIRE_UNDO_ROLLBACK)));
}

int wire_undo_info_encode(const struct wire_undo_info *m, void *buf, size_t cap, size_t *ret_len)
{
	struct wire_undo_info_le h;

	if (!undo_info_valid(m))
		return -EINVAL;
	if (cap < sizeof(h))
		return -ENOBUFS;
	h = (struct wire_undo_info_le){
		.flags = htole32(m->flags),
		.state = htole32(m->state),
		.bytes = htole64(m->bytes),
		.saved = htole64(m->saved),
		.until = htole64(m->until),
		.created = htole64(m->created),
	};
	memcpy(buf, &h, sizeof(h));
	*ret_len = sizeof(h);
	return 0;
}

int wire_undo_info_decode(const void *buf, size_t len, struct wire_undo_info *ret)
{
	struct wire_undo_info_le h;
	struct wire_undo_info m;

	if (len != sizeof(h))
		return -EBADMSG;
	memcpy(&h, buf, sizeof(h));
	m = (struct wire_undo_info){
		.flags = le32toh(h.flags),
		.state = le32toh(h.state),
		.bytes = le64toh(h.bytes),
		.saved = le64toh(h.saved),
		.until = le64toh(h.until),
		.created = le64toh(h.created),
	};
	if (!undo_info_valid(&m))
		return -EBADMSG;
	*ret = m;
	return 0;
}
