/* The wire format of data (wire.h): the zstd contexts, BLOCKS, EXTENTS
 * and BITMAP. */
#include <endian.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "resync/macro.h"
#include "wire-int.h"
#include "wire.h"

/* BLOCKS */

struct wire_zstd {
	int level;
	ZSTD_CCtx *cctx;
	ZSTD_DCtx *dctx;
};

int wire_zstd_new(int level, struct wire_zstd **ret)
{
	struct wire_zstd *z;

	if (level == 0)
		level = 1;
	if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel())
		return -EINVAL;
	z = calloc(1, sizeof(*z));
	if (!z)
		return -ENOMEM;
	z->level = level;
	z->cctx = ZSTD_createCCtx();
	z->dctx = ZSTD_createDCtx();
	if (!z->cctx || !z->dctx) {
		wire_zstd_free(z);
		return -ENOMEM;
	}
	/* No frame may ask for a window larger than the largest BLOCKS.
	 * Each frame carries its content's checksum (verified by every
	 * decoder that finds one): without TLS (insecure = true) a flipped
	 * data byte is then refused before it is written. */
	if (ZSTD_isError(ZSTD_DCtx_setParameter(z->dctx, ZSTD_d_windowLogMax, 23)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_compressionLevel, level)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_contentSizeFlag, 1)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_checksumFlag, 1))) {
		wire_zstd_free(z);
		return -EINVAL;
	}
	*ret = z;
	return 0;
}

int wire_zstd_set_level(struct wire_zstd *z, int level)
{
	if (level == z->level)
		return 0;
	if (level == 0 || level < ZSTD_minCLevel() || level > ZSTD_maxCLevel() ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_compressionLevel, level)))
		return -EINVAL;
	z->level = level;
	return 0;
}

void wire_zstd_free(struct wire_zstd *z)
{
	if (!z)
		return;
	ZSTD_freeCCtx(z->cctx);
	ZSTD_freeDCtx(z->dctx);
	free(z);
}

/* Put data[0, len) at out (room for cap): one zstd frame when it is
 * smaller than len (z may be NULL: never), raw otherwise. Sets the
 * encoding and the bytes used. */
static int data_pack(struct wire_zstd *z, const void *data, size_t len, unsigned char *out,
		     size_t cap, uint16_t *ret_enc, size_t *ret_len)
{
	if (z && len > 1 && cap > 0) {
		/* Room for less than len bytes: what does not shrink fails
		 * here and goes raw. */
		size_t n = ZSTD_compress2(z->cctx, out, MIN(cap, len - 1), data, len);

		if (!ZSTD_isError(n)) {
			*ret_enc = WIRE_ENC_ZSTD;
			*ret_len = n;
			return 0;
		}
		if (ZSTD_getErrorCode(n) != ZSTD_error_dstSize_tooSmall)
			return -EIO;
	}
	if (len > cap)
		return -ENOBUFS;
	memcpy(out, data, len);
	*ret_enc = WIRE_ENC_RAW;
	*ret_len = len;
	return 0;
}

/* Decode enc_len bytes of data (encoding enc, already checked against
 * raw_len by a decoder) into out: a zstd frame must declare exactly
 * raw_len bytes, be a single frame using all enc_len bytes, and produce
 * exactly raw_len bytes. */
static int data_unpack(struct wire_zstd *z, uint16_t enc, const void *data, size_t enc_len,
		       size_t raw_len, void *out, size_t cap)
{
	unsigned long long declared;
	size_t n;

	if (cap < raw_len)
		return -ENOBUFS;
	if (enc == WIRE_ENC_RAW) {
		if (enc_len != raw_len)
			return -EBADMSG;
		memcpy(out, data, raw_len);
		return (int)raw_len;
	}
	if (enc != WIRE_ENC_ZSTD)
		return -EBADMSG;
	if (!z)
		return -EINVAL;
	declared = ZSTD_getFrameContentSize(data, enc_len);
	if (declared != raw_len)
		return -EBADMSG; /* also ZSTD_CONTENTSIZE_UNKNOWN and _ERROR */
	if (ZSTD_findFrameCompressedSize(data, enc_len) != enc_len)
		return -EBADMSG; /* trailing bytes, a second frame or an error */
	n = ZSTD_decompressDCtx(z->dctx, out, raw_len, data, enc_len);
	if (ZSTD_isError(n) || n != raw_len)
		return -EBADMSG;
	return (int)raw_len;
}

int wire_blocks_encode(struct wire_zstd *z, uint64_t offset, const void *data, size_t len,
		       void *buf, size_t cap, size_t *ret_len)
{
	unsigned char *p = buf;
	struct wire_blocks_le h;
	uint16_t enc;
	size_t enc_len;
	int r;

	if (len == 0 || len > RESYNC_WIRE_BLOCKS_MAX || offset > WIRE_OFFSET_MAX ||
	    len > WIRE_OFFSET_MAX - offset)
		return -EINVAL;
	if (cap < sizeof(h) + 1)
		return -ENOBUFS;
	r = data_pack(z, data, len, p + sizeof(h), cap - sizeof(h), &enc, &enc_len);
	if (r < 0)
		return r;
	h = (struct wire_blocks_le){
		.offset = htole64(offset),
		.raw_len = htole32(len),
		.enc_len = htole32(enc_len),
		.encoding = htole16(enc),
	};
	memcpy(p, &h, sizeof(h));
	*ret_len = sizeof(h) + enc_len;
	return 0;
}

int wire_blocks_decode(const void *buf, size_t len, struct wire_blocks *ret)
{
	struct wire_blocks_le h;
	struct wire_blocks m;

	if (head_get(buf, len, &h, sizeof(h)) < 0)
		return -EBADMSG;
	m.offset = le64toh(h.offset);
	m.raw_len = le32toh(h.raw_len);
	m.enc_len = le32toh(h.enc_len);
	m.encoding = le16toh(h.encoding);
	m.data = (const unsigned char *)buf + sizeof(h);
	if (h.reserved != 0 || h.reserved2 != 0)
		return -EBADMSG;
	if (m.raw_len == 0 || m.raw_len > RESYNC_WIRE_BLOCKS_MAX)
		return -EBADMSG;
	if (m.offset > WIRE_OFFSET_MAX || m.raw_len > WIRE_OFFSET_MAX - m.offset)
		return -EBADMSG;
	if (len != sizeof(h) + (size_t)m.enc_len)
		return -EBADMSG;
	switch (m.encoding) {
	case WIRE_ENC_RAW:
		if (m.enc_len != m.raw_len)
			return -EBADMSG;
		break;
	case WIRE_ENC_ZSTD:
		if (m.enc_len == 0 || m.enc_len >= m.raw_len)
			return -EBADMSG;
		break;
	default:
		return -EBADMSG;
	}
	*ret = m;
	return 0;
}

int wire_blocks_unpack(struct wire_zstd *z, const struct wire_blocks *m, void *out, size_t cap)
{
	return data_unpack(z, m->encoding, m->data, m->enc_len, m->raw_len, out, cap);
}

/* The raw bytes of a payload: the payload itself when not compressed
 * (checked as data_unpack() does), else decoded into out. */
static int data_bytes(struct wire_zstd *z, uint16_t enc, const void *data, size_t enc_len,
		      size_t raw_len, void *out, size_t cap, const void **ret)
{
	int r;

	if (enc == WIRE_ENC_RAW) {
		if (enc_len != raw_len)
			return -EBADMSG;
		*ret = data;
		return (int)raw_len;
	}
	r = data_unpack(z, enc, data, enc_len, raw_len, out, cap);
	if (r >= 0)
		*ret = out;
	return r;
}

int wire_blocks_bytes(struct wire_zstd *z, const struct wire_blocks *m, void *out, size_t cap,
		      const void **ret)
{
	return data_bytes(z, m->encoding, m->data, m->enc_len, m->raw_len, out, cap, ret);
}

/* EXTENTS */

/* Whether ext, after one ending at *end (0 for the first), is valid;
 * adds its length to *sum and moves *end. */
static bool extent_next_valid(uint64_t off, uint64_t len, uint64_t *end, uint64_t *sum)
{
	if (len == 0 || len > RESYNC_WIRE_BLOCKS_MAX || off > WIRE_OFFSET_MAX ||
	    len > WIRE_OFFSET_MAX - off || off < *end)
		return false;
	*end = off + len;
	*sum += len;
	return *sum <= RESYNC_WIRE_BLOCKS_MAX;
}

/* Check ext[0, n) and sum their lengths into *ret_sum. */
static int extents_check(const struct wire_extent *ext, size_t n, uint64_t *ret_sum)
{
	uint64_t end = 0, sum = 0;

	if (n == 0 || n > RESYNC_WIRE_EXTENTS_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!extent_next_valid(ext[i].offset, ext[i].len, &end, &sum))
			return -EINVAL;
	*ret_sum = sum;
	return 0;
}

/* The header and the table of ext[0, n) at p. */
static void extents_head_put(unsigned char *p, const struct wire_extent *ext, size_t n,
			     uint64_t sum, uint16_t enc, size_t enc_len)
{
	struct wire_extents_le h = {
		.n_extents = htole32((uint32_t)n),
		.raw_len = htole32((uint32_t)sum),
		.enc_len = htole32((uint32_t)enc_len),
		.encoding = htole16(enc),
	};

	for (size_t i = 0; i < n; i++) {
		struct wire_extent_le e = {
			.offset = htole64(ext[i].offset),
			.len = htole32(ext[i].len),
		};

		memcpy(p + sizeof(h) + i * sizeof(e), &e, sizeof(e));
	}
	memcpy(p, &h, sizeof(h));
}

int wire_extents_encode(struct wire_zstd *z, const struct wire_extent *ext, size_t n,
			const void *data, void *buf, size_t cap, size_t *ret_len)
{
	unsigned char *p = buf;
	uint64_t sum;
	size_t table;
	uint16_t enc;
	size_t enc_len;
	int r;

	r = extents_check(ext, n, &sum);
	if (r < 0)
		return r;
	table = wire_extents_bound(n, 0);
	if (cap < table + 1)
		return -ENOBUFS;
	r = data_pack(z, data, sum, p + table, cap - table, &enc, &enc_len);
	if (r < 0)
		return r;
	extents_head_put(p, ext, n, sum, enc, enc_len);
	*ret_len = table + enc_len;
	return 0;
}

int wire_extents_raw_head(const struct wire_extent *ext, size_t n, void *buf, size_t cap)
{
	uint64_t sum;
	int r = extents_check(ext, n, &sum);

	if (r < 0)
		return r;
	if (cap != wire_extents_bound(n, 0))
		return -ENOBUFS;
	extents_head_put(buf, ext, n, sum, WIRE_ENC_RAW, sum);
	return 0;
}

struct wire_extent wire_extents_get(const struct wire_extents *m, size_t i)
{
	struct wire_extent_le e;

	memcpy(&e, (const unsigned char *)m->table + i * sizeof(e), sizeof(e));
	return (struct wire_extent){le64toh(e.offset), le32toh(e.len)};
}

int wire_extents_decode(const void *buf, size_t len, struct wire_extents *ret)
{
	struct wire_extents_le h;
	struct wire_extents m;
	uint64_t end = 0, sum = 0;
	size_t table;

	if (head_get(buf, len, &h, sizeof(h)) < 0)
		return -EBADMSG;
	m.n_extents = le32toh(h.n_extents);
	m.raw_len = le32toh(h.raw_len);
	m.enc_len = le32toh(h.enc_len);
	m.encoding = le16toh(h.encoding);
	if (h.reserved != 0)
		return -EBADMSG;
	if (m.n_extents == 0 || m.n_extents > RESYNC_WIRE_EXTENTS_MAX)
		return -EBADMSG;
	if (m.raw_len == 0 || m.raw_len > RESYNC_WIRE_BLOCKS_MAX)
		return -EBADMSG;
	table = sizeof(h) + (size_t)m.n_extents * sizeof(struct wire_extent_le);
	if (len < table || len - table != m.enc_len)
		return -EBADMSG;
	switch (m.encoding) {
	case WIRE_ENC_RAW:
		if (m.enc_len != m.raw_len)
			return -EBADMSG;
		break;
	case WIRE_ENC_ZSTD:
		if (m.enc_len == 0 || m.enc_len >= m.raw_len)
			return -EBADMSG;
		break;
	default:
		return -EBADMSG;
	}
	m.table = (const unsigned char *)buf + sizeof(h);
	m.data = (const unsigned char *)buf + table;
	for (uint32_t i = 0; i < m.n_extents; i++) {
		struct wire_extent_le e;

		memcpy(&e, (const unsigned char *)m.table + i * sizeof(e), sizeof(e));
		if (e.reserved != 0 ||
		    !extent_next_valid(le64toh(e.offset), le32toh(e.len), &end, &sum))
			return -EBADMSG;
	}
	if (sum != m.raw_len)
		return -EBADMSG;
	*ret = m;
	return 0;
}

int wire_extents_unpack(struct wire_zstd *z, const struct wire_extents *m, void *out, size_t cap)
{
	return data_unpack(z, m->encoding, m->data, m->enc_len, m->raw_len, out, cap);
}

int wire_extents_bytes(struct wire_zstd *z, const struct wire_extents *m, void *out, size_t cap,
		       const void **ret)
{
	return data_bytes(z, m->encoding, m->data, m->enc_len, m->raw_len, out, cap, ret);
}

/* BITMAP */

int wire_bitmap_encode(uint64_t offset, uint64_t total, const void *data, size_t len, void *buf,
		       size_t cap, size_t *ret_len)
{
	struct wire_bitmap_le h;

	if (len > RESYNC_WIRE_BLOCKS_MAX || total > RESYNC_META_BITMAP_MAX || offset > total ||
	    len > total - offset)
		return -EINVAL;
	if (cap < sizeof(h) + len)
		return -ENOBUFS;
	h = (struct wire_bitmap_le){
		.offset = htole64(offset),
		.total = htole64(total),
		.len = htole32((uint32_t)len),
	};
	memcpy(buf, &h, sizeof(h));
	if (len)
		memcpy((unsigned char *)buf + sizeof(h), data, len);
	*ret_len = sizeof(h) + len;
	return 0;
}

int wire_bitmap_decode(const void *buf, size_t len, struct wire_bitmap *ret)
{
	struct wire_bitmap_le h;
	struct wire_bitmap m;

	if (head_get(buf, len, &h, sizeof(h)) < 0)
		return -EBADMSG;
	m = (struct wire_bitmap){
		.offset = le64toh(h.offset),
		.total = le64toh(h.total),
		.len = le32toh(h.len),
		.data = (const unsigned char *)buf + sizeof(h),
	};
	if (h.reserved || m.len > RESYNC_WIRE_BLOCKS_MAX || m.total > RESYNC_META_BITMAP_MAX ||
	    m.offset > m.total || m.len > m.total - m.offset || len - sizeof(h) != m.len)
		return -EBADMSG;
	*ret = m;
	return 0;
}
