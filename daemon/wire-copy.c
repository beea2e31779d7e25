/* COPY, COPY_ACK and WEAK_REPLY (WIRE_FEATURE_COPY, WIRE_FEATURE_ROLLING):
 * layouts in wire-int.h. WEAK_REQ is a PAGE_REQ payload (wire-hash.c). */
#include <endian.h>
#include <errno.h>
#include <string.h>

#include "wire-int.h"
#include "wire.h"

/* One entry as the decoder and the encoder accept it; adds its length to
 * *total. prev_end: the previous entry's destination end (0 for the
 * first). */
static bool copy_entry_valid(const struct wire_copy_entry *e, uint64_t prev_end, uint64_t *total)
{
	if (e->len == 0 || e->len > RESYNC_WIRE_COPY_LEN_MAX || e->dst == e->src)
		return false;
	if (e->dst > WIRE_OFFSET_MAX - e->len || e->src > WIRE_OFFSET_MAX - e->len)
		return false;
	if (e->dst < prev_end)
		return false; /* unsorted, or overlapping the previous one */
	*total += e->len;
	return *total <= RESYNC_WIRE_COPY_STAGE_MAX;
}

int wire_copy_encode(uint64_t seed, uint32_t piece, const struct wire_copy_entry *e, size_t n,
		     void *buf, size_t cap, size_t *ret_len)
{
	struct wire_copy_le h = {htole64(seed), htole32(piece), htole32((uint32_t)n)};
	unsigned char *p = buf;
	uint64_t total = 0, end = 0;

	if (n == 0 || n > RESYNC_WIRE_COPIES_MAX || !resync_block_size_valid(piece))
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (!copy_entry_valid(&e[i], end, &total))
			return -EINVAL;
		end = e[i].dst + e[i].len;
	}
	if (cap < wire_copy_bound(n))
		return -ENOBUFS;
	memcpy(p, &h, sizeof(h));
	p += sizeof(h);
	for (size_t i = 0; i < n; i++, p += sizeof(struct wire_copy_entry_le)) {
		struct wire_copy_entry_le w = {
			.dst = htole64(e[i].dst),
			.src = htole64(e[i].src),
			.len = htole32(e[i].len),
			.check_lo = htole64(e[i].check.lo),
			.check_hi = htole64(e[i].check.hi),
		};

		memcpy(p, &w, sizeof(w));
	}
	*ret_len = wire_copy_bound(n);
	return 0;
}

struct wire_copy_entry wire_copy_get(const struct wire_copy *m, size_t i)
{
	struct wire_copy_entry_le w;

	memcpy(&w, (const unsigned char *)m->entries + i * sizeof(w), sizeof(w));
	return (struct wire_copy_entry){
		.dst = le64toh(w.dst),
		.src = le64toh(w.src),
		.len = le32toh(w.len),
		.check = {le64toh(w.check_lo), le64toh(w.check_hi)},
	};
}

int wire_copy_decode(const void *buf, size_t len, struct wire_copy *ret)
{
	struct wire_copy_le h;
	struct wire_copy m;
	uint64_t end = 0;

	if (head_get(buf, len, &h, sizeof(h)) < 0)
		return -EBADMSG;
	m = (struct wire_copy){
		.seed = le64toh(h.seed),
		.piece = le32toh(h.piece),
		.n = le32toh(h.n),
		.entries = (const unsigned char *)buf + sizeof(h),
	};
	if (m.n == 0 || m.n > RESYNC_WIRE_COPIES_MAX || !resync_block_size_valid(m.piece) ||
	    len != wire_copy_bound(m.n))
		return -EBADMSG;
	for (uint32_t i = 0; i < m.n; i++) {
		struct wire_copy_entry_le w;
		struct wire_copy_entry e = wire_copy_get(&m, i);

		memcpy(&w, (const unsigned char *)m.entries + i * sizeof(w), sizeof(w));
		if (w.reserved || !copy_entry_valid(&e, end, &m.total))
			return -EBADMSG;
		end = e.dst + e.len;
	}
	*ret = m;
	return 0;
}

struct hash128 wire_copy_check(const struct hash128 *pieces, size_t n, uint64_t seed)
{
	uint64_t le[2 * 256];
	struct hash128 acc = {0, 0};
	size_t done = 0;

	/* Pieces are hashed 256 at a time; more are chained: each group's
	 * hash seeds the next (a copy's pieces number at most
	 * RESYNC_WIRE_COPY_LEN_MAX / RESYNC_BLOCK_MIN = 256: one group). */
	do {
		size_t k = n - done < 256 ? n - done : 256;

		for (size_t i = 0; i < k; i++) {
			le[2 * i] = htole64(pieces[done + i].lo);
			le[2 * i + 1] = htole64(pieces[done + i].hi);
		}
		acc = hash_block(le, k * sizeof(struct hash128), seed ^ acc.lo);
		done += k;
	} while (done < n);
	return acc;
}

int wire_copy_ack_encode(uint32_t n, const unsigned char *bits, void *buf, size_t cap,
			 size_t *ret_len)
{
	size_t nb = (n + 7) / 8;
	struct wire_count_le h;
	uint32_t failed = 0;

	if (n == 0 || n > RESYNC_WIRE_COPIES_MAX)
		return -EINVAL;
	for (uint32_t i = 0; i < n; i++)
		failed += (bits[i / 8] >> (i % 8)) & 1;
	if (n % 8 && (bits[nb - 1] >> (n % 8)))
		return -EINVAL;
	if (cap < sizeof(h) + nb)
		return -ENOBUFS;
	h = (struct wire_count_le){htole32(n), htole32(failed)};
	memcpy(buf, &h, sizeof(h));
	memcpy((unsigned char *)buf + sizeof(h), bits, nb);
	*ret_len = sizeof(h) + nb;
	return 0;
}

int wire_copy_ack_decode(const void *buf, size_t len, struct wire_copy_ack *ret)
{
	struct wire_count_le h;
	const unsigned char *bits = (const unsigned char *)buf + sizeof(h);
	uint32_t n, failed = 0;
	size_t nb;

	if (head_get(buf, len, &h, sizeof(h)) < 0)
		return -EBADMSG;
	n = le32toh(h.n);
	nb = (n + 7) / 8;
	if (n == 0 || n > RESYNC_WIRE_COPIES_MAX || len != sizeof(h) + nb)
		return -EBADMSG;
	for (uint32_t i = 0; i < n; i++)
		failed += (bits[i / 8] >> (i % 8)) & 1;
	if ((n % 8 && (bits[nb - 1] >> (n % 8))) || failed != le32toh(h.n_failed))
		return -EBADMSG;
	*ret = (struct wire_copy_ack){n, failed, bits};
	return 0;
}

int wire_weak_reply_encode(const uint32_t *sums, size_t n, void *buf, size_t cap,
			   size_t *ret_len)
{
	struct wire_count_le h = {htole32((uint32_t)n), 0};
	unsigned char *p = (unsigned char *)buf + sizeof(h);

	if (n > RESYNC_WIRE_HASHES_MAX)
		return -EINVAL;
	if (cap < sizeof(h) + 4 * n)
		return -ENOBUFS;
	memcpy(buf, &h, sizeof(h));
	for (size_t i = 0; i < n; i++, p += 4) {
		uint32_t v = htole32(sums[i]);

		memcpy(p, &v, 4);
	}
	*ret_len = sizeof(h) + 4 * n;
	return 0;
}

int wire_weak_reply_decode(const void *buf, size_t len, struct wire_weak_reply *ret)
{
	struct wire_count_le h;
	uint32_t n;

	if (head_get(buf, len, &h, sizeof(h)) < 0)
		return -EBADMSG;
	n = le32toh(h.n);
	if (n > RESYNC_WIRE_HASHES_MAX || h.n_failed || len != sizeof(h) + 4 * (size_t)n)
		return -EBADMSG;
	*ret = (struct wire_weak_reply){n, (const unsigned char *)buf + sizeof(h)};
	return 0;
}

uint32_t wire_weak_reply_get(const struct wire_weak_reply *m, size_t i)
{
	uint32_t v;

	memcpy(&v, (const unsigned char *)m->sums + 4 * i, 4);
	return le32toh(v);
}
