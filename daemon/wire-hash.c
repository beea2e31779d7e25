/* The wire format of hash requests and replies (wire.h): the ranges a
 * HASH_REQ or PAGE_REQ carries, and HASH_REPLY (also PAGE_REPLY). */
#include <endian.h>
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "wire-int.h"
#include "wire.h"

/* HASH_REQ and PAGE_REQ: a fixed header, then n_ranges ranges. */

/* Encode hdr (size bytes), then the n ranges: the whole payload. */
static int ranges_put(const void *hdr, size_t size, const struct hashtree_range *ranges, size_t n,
		      void *buf, size_t cap, size_t *ret_len)
{
	size_t len = size + n * sizeof(struct wire_range_le);
	unsigned char *p = buf;

	if (len > cap)
		return -ENOBUFS;
	memcpy(p, hdr, size);
	p += size;
	for (size_t i = 0; i < n; i++, p += sizeof(struct wire_range_le)) {
		struct wire_range_le w = {htole64(ranges[i].first), htole64(ranges[i].count)};

		memcpy(p, &w, sizeof(w));
	}
	*ret_len = len;
	return 0;
}

/* Range i of the ranges that a decoder checked. */
static struct hashtree_range range_get(const void *ranges, size_t i)
{
	struct wire_range_le w;

	memcpy(&w, (const unsigned char *)ranges + i * sizeof(w), sizeof(w));
	return (struct hashtree_range){le64toh(w.first), le64toh(w.count)};
}

/* A payload of a header of size bytes and n_ranges ranges: 1 to
 * RESYNC_WIRE_RANGES_MAX of them, filling the payload exactly. */
static int ranges_len_check(size_t len, size_t size, uint32_t n_ranges)
{
	if (n_ranges == 0 || n_ranges > RESYNC_WIRE_RANGES_MAX)
		return -EBADMSG;
	if (len != size + (size_t)n_ranges * sizeof(struct wire_range_le))
		return -EBADMSG;
	return 0;
}

/* HASH_REQ */

/* One range of node indexes: not empty, not wrapping; adds its count to
 * *total, at most RESYNC_WIRE_HASHES_MAX. */
static bool hash_range_valid(uint64_t first, uint64_t count, uint64_t *total)
{
	if (count == 0 || count > RESYNC_WIRE_HASHES_MAX || first > UINT64_MAX - count)
		return false;
	*total += count;
	return *total <= RESYNC_WIRE_HASHES_MAX;
}

int wire_hash_req_encode(uint64_t seed, unsigned level, unsigned fanout, uint32_t leaf_size,
			 const struct hashtree_range *ranges, size_t n, void *buf, size_t cap,
			 size_t *ret_len)
{
	struct wire_hash_req_le h;
	struct wire_hash_req_leaf_le t = {htole32(leaf_size), 0};
	uint64_t total = 0;
	int r;

	if (n == 0 || n > RESYNC_WIRE_RANGES_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!hash_range_valid(ranges[i].first, ranges[i].count, &total))
			return -EINVAL;
	if (level > UINT16_MAX || fanout < RESYNC_HASHTREE_FANOUT_MIN ||
	    fanout > RESYNC_HASHTREE_FANOUT_MAX ||
	    (leaf_size && !resync_block_size_valid(leaf_size)))
		return -EINVAL;
	h = (struct wire_hash_req_le){
		.seed = htole64(seed),
		.level = htole16(level),
		.fanout = htole16(fanout),
		.n_ranges = htole32(n),
	};
	r = ranges_put(&h, sizeof(h), ranges, n, buf, cap, ret_len);
	if (r < 0 || !leaf_size)
		return r;
	if (cap - *ret_len < sizeof(t))
		return -ENOBUFS;
	memcpy((unsigned char *)buf + *ret_len, &t, sizeof(t));
	*ret_len += sizeof(t);
	return 0;
}

struct hashtree_range wire_hash_req_range(const struct wire_hash_req *m, size_t i)
{
	return range_get(m->ranges, i);
}

int wire_hash_req_decode(const void *buf, size_t len, struct wire_hash_req *ret)
{
	struct wire_hash_req_le h;
	struct wire_hash_req_leaf_le t;
	struct wire_hash_req m;
	uint64_t total = 0;

	if (head_get(buf, len, &h, sizeof(h)) < 0)
		return -EBADMSG;
	m.seed = le64toh(h.seed);
	m.level = le16toh(h.level);
	m.fanout = le16toh(h.fanout);
	m.n_ranges = le32toh(h.n_ranges);
	m.ranges = (const unsigned char *)buf + sizeof(h);
	m.leaf_size = 0;
	if (len % sizeof(struct wire_range_le) == sizeof(t)) {
		memcpy(&t, (const unsigned char *)buf + len - sizeof(t), sizeof(t));
		m.leaf_size = le32toh(t.leaf_size);
		if (!resync_block_size_valid(m.leaf_size) || t.reserved)
			return -EBADMSG;
		len -= sizeof(t);
	}
	if (ranges_len_check(len, sizeof(h), m.n_ranges) < 0)
		return -EBADMSG;
	if (m.fanout < RESYNC_HASHTREE_FANOUT_MIN || m.fanout > RESYNC_HASHTREE_FANOUT_MAX)
		return -EBADMSG;
	for (uint32_t i = 0; i < m.n_ranges; i++) {
		struct hashtree_range r = range_get(m.ranges, i);

		if (!hash_range_valid(r.first, r.count, &total))
			return -EBADMSG;
	}
	m.n_hashes = total;
	*ret = m;
	return 0;
}

/* PAGE_REQ */

/* One byte range of a PAGE_REQ: on a page boundary, not empty, inside the
 * largest offset; adds its pages to *total, at most RESYNC_WIRE_HASHES_MAX. */
static bool page_range_valid(uint64_t off, uint64_t len, uint32_t page_size, uint64_t *total)
{
	if (len == 0 || off % page_size || off > WIRE_OFFSET_MAX || len > WIRE_OFFSET_MAX - off)
		return false;
	/* Checked before the sum, so that it cannot wrap. */
	if (wire_pages(len, page_size) > RESYNC_WIRE_HASHES_MAX)
		return false;
	*total += wire_pages(len, page_size);
	return *total <= RESYNC_WIRE_HASHES_MAX;
}

int wire_page_req_encode(uint64_t seed, uint32_t page_size, const struct hashtree_range *ranges,
			 size_t n, void *buf, size_t cap, size_t *ret_len)
{
	struct wire_page_req_le h;
	uint64_t total = 0;

	if (!resync_block_size_valid(page_size) || n == 0 || n > RESYNC_WIRE_RANGES_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!page_range_valid(ranges[i].first, ranges[i].count, page_size, &total))
			return -EINVAL;
	h = (struct wire_page_req_le){
		.seed = htole64(seed),
		.page_size = htole32(page_size),
		.n_ranges = htole32(n),
	};
	return ranges_put(&h, sizeof(h), ranges, n, buf, cap, ret_len);
}

struct hashtree_range wire_page_req_range(const struct wire_page_req *m, size_t i)
{
	return range_get(m->ranges, i);
}

int wire_page_req_decode(const void *buf, size_t len, struct wire_page_req *ret)
{
	struct wire_page_req_le h;
	struct wire_page_req m;
	uint64_t total = 0;

	if (head_get(buf, len, &h, sizeof(h)) < 0)
		return -EBADMSG;
	m.seed = le64toh(h.seed);
	m.page_size = le32toh(h.page_size);
	m.n_ranges = le32toh(h.n_ranges);
	m.ranges = (const unsigned char *)buf + sizeof(h);
	if (!resync_block_size_valid(m.page_size))
		return -EBADMSG;
	if (ranges_len_check(len, sizeof(h), m.n_ranges) < 0)
		return -EBADMSG;
	for (uint32_t i = 0; i < m.n_ranges; i++) {
		struct hashtree_range r = range_get(m.ranges, i);

		if (!page_range_valid(r.first, r.count, m.page_size, &total))
			return -EBADMSG;
	}
	m.n_pages = total;
	*ret = m;
	return 0;
}

/* HASH_REPLY */

int wire_hash_reply_encode(unsigned level, const struct hash128 *hashes, size_t n, void *buf,
			   size_t cap, size_t *ret_len)
{
	unsigned char *p = buf;
	struct wire_hash_reply_le h;
	size_t len;

	if (level > UINT16_MAX || n > RESYNC_WIRE_HASHES_MAX)
		return -EINVAL;
	len = sizeof(h) + n * sizeof(struct wire_hash_le);
	if (len > cap)
		return -ENOBUFS;
	h = (struct wire_hash_reply_le){.level = htole16(level), .n_hashes = htole32(n)};
	memcpy(p, &h, sizeof(h));
	p += sizeof(h);
	for (size_t i = 0; i < n; i++, p += sizeof(struct wire_hash_le)) {
		struct wire_hash_le w = {htole64(hashes[i].lo), htole64(hashes[i].hi)};

		memcpy(p, &w, sizeof(w));
	}
	*ret_len = len;
	return 0;
}

int wire_hash_reply_decode(const void *buf, size_t len, struct wire_hash_reply *ret)
{
	struct wire_hash_reply_le h;
	uint32_t n;

	if (head_get(buf, len, &h, sizeof(h)) < 0)
		return -EBADMSG;
	n = le32toh(h.n_hashes);
	if (h.reserved != 0 || n > RESYNC_WIRE_HASHES_MAX)
		return -EBADMSG;
	if (len != sizeof(h) + (size_t)n * sizeof(struct wire_hash_le))
		return -EBADMSG;
	*ret = (struct wire_hash_reply){
		.level = le16toh(h.level),
		.n_hashes = n,
		.hashes = (const unsigned char *)buf + sizeof(h),
	};
	return 0;
}

int wire_hash_reply_get(const struct wire_hash_reply *m, struct hash128 *out, size_t cap)
{
	const unsigned char *p = m->hashes;

	if (m->n_hashes > cap)
		return -ENOBUFS;
	for (uint32_t i = 0; i < m->n_hashes; i++, p += sizeof(struct wire_hash_le)) {
		struct wire_hash_le w;

		memcpy(&w, p, sizeof(w));
		out[i] = (struct hash128){le64toh(w.lo), le64toh(w.hi)};
	}
	return 0;
}

/* HASH_REQ_IF and HASH_IF_ACK (WIRE_FEATURE_HASH_IF) */

int wire_hash_req_if_encode(const struct wire_uuid *gen, const struct wire_uuid *base,
			    uint64_t seed, unsigned level, unsigned fanout, uint32_t leaf_size,
			    const struct hashtree_range *ranges, size_t n, void *buf, size_t cap,
			    size_t *ret_len)
{
	struct wire_hash_req_if_le h;
	size_t len;
	int r;

	if (cap < sizeof(h))
		return -ENOBUFS;
	memcpy(h.gen, gen->b, 16);
	memcpy(h.base, base->b, 16);
	r = wire_hash_req_encode(seed, level, fanout, leaf_size, ranges, n,
				 (unsigned char *)buf + sizeof(h), cap - sizeof(h), &len);
	if (r < 0)
		return r;
	memcpy(buf, &h, sizeof(h));
	*ret_len = sizeof(h) + len;
	return 0;
}

int wire_hash_req_if_decode(const void *buf, size_t len, struct wire_hash_req_if *ret)
{
	struct wire_hash_req_if_le h;
	struct wire_hash_req_if m;

	if (head_get(buf, len, &h, sizeof(h)) < 0)
		return -EBADMSG;
	if (wire_hash_req_decode((const unsigned char *)buf + sizeof(h), len - sizeof(h), &m.req) < 0)
		return -EBADMSG;
	memcpy(m.gen.b, h.gen, 16);
	memcpy(m.base.b, h.base, 16);
	*ret = m;
	return 0;
}

int wire_hash_if_ack_encode(bool answered, void *buf, size_t cap, size_t *ret_len)
{
	struct wire_hash_if_ack_le a = {htole32(answered ? 1 : 0), 0};

	if (cap < sizeof(a))
		return -ENOBUFS;
	memcpy(buf, &a, sizeof(a));
	*ret_len = sizeof(a);
	return 0;
}

int wire_hash_if_ack_decode(const void *buf, size_t len, bool *ret_answered)
{
	struct wire_hash_if_ack_le a;

	if (len != sizeof(a))
		return -EBADMSG;
	memcpy(&a, buf, sizeof(a));
	if (le32toh(a.answered) > 1 || a.reserved)
		return -EBADMSG;
	*ret_answered = le32toh(a.answered) == 1;
	return 0;
}
