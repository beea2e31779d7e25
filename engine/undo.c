/* The undo journal: format and contract in resync/undo.h. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>
#include <zstd.h>

#include "resync/fileio.h"
#include "resync/limits.h"
#include "resync/macro.h"
#include "resync/undo.h"

#define UNDO_MAGIC "RSYNUNDO"
#define UNDO_REC_MAGIC 0x43455255u /* "UREC" as little-endian bytes */

enum {
	UNDO_REC_BLOCK = 1,
	UNDO_REC_ROLLBACK = 2,
	UNDO_ENC_RAW = 0,
	UNDO_ENC_ZSTD = 1,
};

struct undo_header_le {
	char magic[8];
	uint32_t version;
	uint32_t header_size;
	uint64_t volume_size;
	uint32_t page_size;
	uint32_t state;
	uint64_t created;
	uint64_t keep_until;
	uint8_t generation[16];
	uint8_t target[16];
	uint32_t history_n;
	uint32_t reserved0;
	uint8_t history[RESYNC_META_HISTORY][16];
	uint8_t reserved[UNDO_HEADER_SIZE - 88 - 16 * RESYNC_META_HISTORY - 8];
	uint64_t check; /* XXH3-64 of every byte before it */
};
_Static_assert(sizeof(struct undo_header_le) == UNDO_HEADER_SIZE, "undo header layout");

struct undo_record_le {
	uint32_t magic;
	uint16_t type;
	uint16_t encoding;
	uint64_t offset;
	uint32_t raw_len;
	uint32_t enc_len;
	uint64_t seq;
	uint64_t check; /* XXH3-64 of this header (check 0) and the payload */
};
_Static_assert(sizeof(struct undo_record_le) == UNDO_RECORD_SIZE, "undo record layout");

struct undo_journal {
	int fd;
	struct undo_info info;
	uint64_t max_bytes;
	uint64_t end;	  /* bytes of the file in use */
	uint64_t seq;	  /* the next record's */
	uint64_t saved;	  /* raw bytes of BLOCK records */
	bool rollback;	  /* a ROLLBACK record is there */
	uint64_t *recs;	  /* file offsets of the BLOCK records */
	size_t n_recs, cap_recs;
	uint8_t *pages;	  /* bit per page: saved */
	uint64_t n_pages;
	ZSTD_CCtx *cctx;
	ZSTD_DCtx *dctx;
	unsigned char *raw, *enc; /* UNDO_RECORD_MAX and its zstd bound */
	size_t enc_cap;
};

const char *undo_mode_name(enum undo_mode mode)
{
	switch (mode) {
	case UNDO_MODE_OFF:
		return "off";
	case UNDO_MODE_DIVERGED:
		return "diverged";
	case UNDO_MODE_ON:
		return "on";
	case UNDO_MODE_COUNT:
		break;
	}
	return "?";
}

int undo_path_default(const char *image, char **ret)
{
	char *p;

	if (asprintf(&p, "%s.resync-undo", image) < 0)
		return -ENOMEM;
	*ret = p;
	return 0;
}

static uint64_t record_check(const struct undo_record_le *h, const void *payload, size_t len)
{
	struct undo_record_le c = *h;
	XXH3_state_t st;

	c.check = 0;
	XXH3_64bits_reset(&st);
	XXH3_64bits_update(&st, &c, sizeof(c));
	if (len)
		XXH3_64bits_update(&st, payload, len);
	return XXH3_64bits_digest(&st);
}

static void header_encode(const struct undo_info *in, struct undo_header_le *h)
{
	memset(h, 0, sizeof(*h));
	memcpy(h->magic, UNDO_MAGIC, 8);
	h->version = htole32(UNDO_VERSION);
	h->header_size = htole32(UNDO_HEADER_SIZE);
	h->volume_size = htole64(in->volume_size);
	h->page_size = htole32(RESYNC_PAGE);
	h->state = htole32((uint32_t)in->state);
	h->created = htole64(in->created);
	h->keep_until = htole64(in->keep_until);
	memcpy(h->generation, in->generation.b, 16);
	memcpy(h->target, in->target.b, 16);
	h->history_n = htole32(MIN(in->history_n, (unsigned)RESYNC_META_HISTORY));
	for (unsigned i = 0; i < MIN(in->history_n, (unsigned)RESYNC_META_HISTORY); i++)
		memcpy(h->history[i], in->history[i].b, 16);
	h->check = htole64(XXH3_64bits(h, offsetof(struct undo_header_le, check)));
}

static int header_decode(const struct undo_header_le *h, struct undo_info *ret)
{
	struct undo_info in = {0};

	if (memcmp(h->magic, UNDO_MAGIC, 8) || le32toh(h->version) != UNDO_VERSION ||
	    le32toh(h->header_size) != UNDO_HEADER_SIZE || le32toh(h->page_size) != RESYNC_PAGE ||
	    le64toh(h->check) != XXH3_64bits(h, offsetof(struct undo_header_le, check)))
		return -EBADMSG;
	in.volume_size = le64toh(h->volume_size);
	in.state = (enum meta_state)le32toh(h->state);
	if (le32toh(h->state) >= META_STATE_COUNT || le32toh(h->history_n) > RESYNC_META_HISTORY)
		return -EBADMSG;
	in.created = le64toh(h->created);
	in.keep_until = le64toh(h->keep_until);
	memcpy(in.generation.b, h->generation, 16);
	memcpy(in.target.b, h->target, 16);
	in.history_n = le32toh(h->history_n);
	for (unsigned i = 0; i < in.history_n; i++)
		memcpy(in.history[i].b, h->history[i], 16);
	*ret = in;
	return 0;
}

static int journal_alloc(struct undo_journal **ret, uint64_t volume_size, uint64_t max_bytes)
{
	struct undo_journal *j = calloc(1, sizeof(*j));

	if (!j)
		return -ENOMEM;
	j->fd = -1;
	j->max_bytes = max_bytes;
	j->n_pages = DIV_ROUND_UP(volume_size, RESYNC_PAGE);
	j->pages = calloc(1, (size_t)DIV_ROUND_UP(j->n_pages, 8) + 1);
	j->enc_cap = ZSTD_compressBound(UNDO_RECORD_MAX);
	j->raw = malloc(UNDO_RECORD_MAX);
	j->enc = malloc(j->enc_cap);
	j->cctx = ZSTD_createCCtx();
	j->dctx = ZSTD_createDCtx();
	if (!j->pages || !j->raw || !j->enc || !j->cctx || !j->dctx) {
		undo_free(j);
		return -ENOMEM;
	}
	*ret = j;
	return 0;
}

void undo_free(struct undo_journal *j)
{
	if (!j)
		return;
	if (j->fd >= 0)
		close(j->fd);
	free(j->recs);
	free(j->pages);
	free(j->raw);
	free(j->enc);
	ZSTD_freeCCtx(j->cctx);
	ZSTD_freeDCtx(j->dctx);
	free(j);
}

static bool page_saved(const struct undo_journal *j, uint64_t p)
{
	return j->pages[p / 8] & (1u << (p % 8));
}

static void pages_mark(struct undo_journal *j, uint64_t off, uint64_t len)
{
	for (uint64_t p = off / RESYNC_PAGE; p < DIV_ROUND_UP(off + len, RESYNC_PAGE); p++)
		j->pages[p / 8] |= (uint8_t)(1u << (p % 8));
}

static int recs_push(struct undo_journal *j, uint64_t at)
{
	if (j->n_recs == j->cap_recs) {
		size_t cap = j->cap_recs ? j->cap_recs * 2 : 64;
		uint64_t *p = realloc(j->recs, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		j->recs = p;
		j->cap_recs = cap;
	}
	j->recs[j->n_recs++] = at;
	return 0;
}

int undo_create(const char *path, const struct undo_info *info, uint64_t max_bytes,
		struct undo_journal **ret)
{
	struct undo_journal *j;
	struct undo_header_le h;
	char *tmp = NULL;
	int fd, r;

	r = journal_alloc(&j, info->volume_size, max_bytes);
	if (r < 0)
		return r;
	j->info = *info;
	header_encode(info, &h);
	fd = file_atomic_open(path, 0600, &tmp);
	if (fd < 0) {
		undo_free(j);
		return fd;
	}
	r = fd_write_all(fd, &h, sizeof(h));
	if (r >= 0)
		r = file_atomic_commit(fd, tmp, path);
	else
		unlink(tmp);
	free(tmp);
	if (r < 0) {
		close(fd);
		undo_free(j);
		return r;
	}
	j->fd = fd;
	j->end = sizeof(h);
	*ret = j;
	return 0;
}

/* A header that is not one: torn only when everything from at to the
 * end is zeros (a file extended by a crash before its bytes landed);
 * anything else is damage. */
static int tail_is_zero(struct undo_journal *j, uint64_t at, uint64_t size)
{
	while (at < size) {
		size_t m = (size_t)MIN(size - at, (uint64_t)UNDO_RECORD_MAX);
		ssize_t n = fd_pread_all(j->fd, j->raw, m, at);

		if (n < 0)
			return (int)n;
		if ((size_t)n != m)
			return 1;
		for (size_t i = 0; i < m; i++)
			if (j->raw[i])
				return -EBADMSG;
		at += m;
	}
	return 1;
}

/* Read and check the record at file offset at (the file has size bytes):
 * 0 and its header (payload in j->enc), 1 when it is torn (it runs past
 * the end, or fails its check and ends exactly at the end), -EBADMSG
 * when damaged before the end, or -errno. */
static int record_read(struct undo_journal *j, uint64_t at, uint64_t size, uint64_t seq,
		       struct undo_record_le *ret)
{
	struct undo_record_le h;
	uint32_t raw, enc;
	ssize_t n;

	if (size - at < sizeof(h))
		return 1;
	n = fd_pread_all(j->fd, &h, sizeof(h), at);
	if (n < 0)
		return (int)n;
	if (n != sizeof(h))
		return 1;
	raw = le32toh(h.raw_len);
	enc = le32toh(h.enc_len);
	if (le32toh(h.magic) != UNDO_REC_MAGIC || raw > UNDO_RECORD_MAX || enc > j->enc_cap)
		return tail_is_zero(j, at, size);
	if (size - at - sizeof(h) < enc)
		return 1;
	n = fd_pread_all(j->fd, j->enc, enc, at + sizeof(h));
	if (n < 0)
		return (int)n;
	if ((size_t)n != enc)
		return 1;
	if (le64toh(h.check) != record_check(&h, j->enc, enc) || le64toh(h.seq) != seq)
		return at + sizeof(h) + enc == size ? 1 : -EBADMSG;
	/* A record that passed its check was written by us: its fields are
	 * still checked, against the volume and each other. */
	switch (le16toh(h.type)) {
	case UNDO_REC_BLOCK:
		if (!raw || le64toh(h.offset) > j->info.volume_size ||
		    raw > j->info.volume_size - le64toh(h.offset) ||
		    (le16toh(h.encoding) == UNDO_ENC_RAW && enc != raw) ||
		    le16toh(h.encoding) > UNDO_ENC_ZSTD)
			return -EBADMSG;
		break;
	case UNDO_REC_ROLLBACK:
		if (raw || enc)
			return -EBADMSG;
		break;
	default:
		return -EBADMSG;
	}
	*ret = h;
	return 0;
}

int undo_open(const char *path, uint64_t volume_size, uint64_t max_bytes,
	      struct undo_journal **ret)
{
	struct undo_journal *j;
	struct undo_header_le h;
	struct undo_info info;
	struct stat st;
	uint64_t at;
	ssize_t n;
	int fd, r;

	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	n = fd_pread_all(fd, &h, sizeof(h), 0);
	if (n < 0 || (size_t)n != sizeof(h)) {
		close(fd);
		return n < 0 ? (int)n : -EBADMSG;
	}
	r = header_decode(&h, &info);
	if (r >= 0 && info.volume_size != volume_size)
		r = -EBADMSG;
	if (r < 0) {
		close(fd);
		return r;
	}
	r = journal_alloc(&j, volume_size, max_bytes);
	if (r < 0) {
		close(fd);
		return r;
	}
	j->fd = fd;
	j->info = info;
	at = sizeof(h);
	for (;;) {
		struct undo_record_le rec;

		if (at == (uint64_t)st.st_size)
			break;
		r = record_read(j, at, (uint64_t)st.st_size, j->seq, &rec);
		if (r < 0)
			goto fail;
		if (r == 1) {
			/* Torn: never synced, so never overwritten anything. */
			if (ftruncate(fd, (off_t)at) < 0 || fdatasync(fd) < 0) {
				r = -errno;
				goto fail;
			}
			break;
		}
		if (le16toh(rec.type) == UNDO_REC_BLOCK) {
			r = recs_push(j, at);
			if (r < 0)
				goto fail;
			pages_mark(j, le64toh(rec.offset), le32toh(rec.raw_len));
			j->saved += le32toh(rec.raw_len);
		} else {
			j->rollback = true;
		}
		j->seq++;
		at += sizeof(rec) + le32toh(rec.enc_len);
	}
	j->end = at;
	*ret = j;
	return 0;
fail:
	undo_free(j);
	return r;
}

void undo_info_get(const struct undo_journal *j, struct undo_info *ret)
{
	*ret = j->info;
}

uint64_t undo_bytes(const struct undo_journal *j)
{
	return j->end;
}

uint64_t undo_saved_bytes(const struct undo_journal *j)
{
	return j->saved;
}

uint64_t undo_records(const struct undo_journal *j)
{
	return j->n_recs;
}

bool undo_rollback_started(const struct undo_journal *j)
{
	return j->rollback;
}

/* Append one record: header and payload in one write at the end. */
static int record_append(struct undo_journal *j, uint16_t type, uint16_t encoding, uint64_t off,
			 uint32_t raw_len, const void *payload, uint32_t enc_len)
{
	struct undo_record_le h = {
		.magic = htole32(UNDO_REC_MAGIC),
		.type = htole16(type),
		.encoding = htole16(encoding),
		.offset = htole64(off),
		.raw_len = htole32(raw_len),
		.enc_len = htole32(enc_len),
		.seq = htole64(j->seq),
	};
	uint64_t at = j->end;
	ssize_t n;

	if (j->max_bytes && at + sizeof(h) + enc_len > j->max_bytes)
		return -EFBIG;
	h.check = htole64(record_check(&h, payload, enc_len));
	n = pwrite(j->fd, &h, sizeof(h), (off_t)at);
	if (n != (ssize_t)sizeof(h))
		goto short_write;
	for (uint32_t done = 0; done < enc_len;) {
		n = pwrite(j->fd, (const unsigned char *)payload + done, enc_len - done,
			   (off_t)(at + sizeof(h) + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			goto short_write;
		done += (uint32_t)n;
	}
	j->end = at + sizeof(h) + enc_len;
	j->seq++;
	return 0;
short_write:
	n = n < 0 ? -errno : -EIO;
	/* Cut off what part of the record was written. */
	if (ftruncate(j->fd, (off_t)at) < 0)
		return -errno;
	return (int)n;
}

/* Save the bytes [off, off+len) (pages none of which are saved). */
static int save_run(struct undo_journal *j, int vol_fd, uint64_t off, uint64_t len)
{
	while (len) {
		uint32_t m = (uint32_t)MIN(len, (uint64_t)UNDO_RECORD_MAX);
		const void *payload = j->raw;
		uint32_t enc_len = m;
		uint16_t encoding = UNDO_ENC_RAW;
		size_t z;
		ssize_t n;
		int r;

		n = fd_pread_all(vol_fd, j->raw, m, off);
		if (n < 0)
			return (int)n;
		if ((size_t)n != m)
			return -EIO; /* the volume is shorter than it says */
		z = ZSTD_compressCCtx(j->cctx, j->enc, j->enc_cap, j->raw, m, 1);
		if (!ZSTD_isError(z) && z < m) {
			payload = j->enc;
			enc_len = (uint32_t)z;
			encoding = UNDO_ENC_ZSTD;
		}
		r = record_append(j, UNDO_REC_BLOCK, encoding, off, m, payload, enc_len);
		if (r < 0)
			return r;
		r = recs_push(j, j->end - UNDO_RECORD_SIZE - enc_len);
		if (r < 0)
			return r;
		pages_mark(j, off, m);
		j->saved += m;
		off += m;
		len -= m;
	}
	return 0;
}

int undo_save(struct undo_journal *j, int vol_fd, uint64_t off, uint64_t len)
{
	uint64_t size = j->info.volume_size, p, last, run = UINT64_MAX;
	int r;

	if (off > size || len > size - off)
		return -EINVAL;
	if (!len)
		return 0;
	last = DIV_ROUND_UP(off + len, RESYNC_PAGE);
	for (p = off / RESYNC_PAGE; p <= last; p++) {
		bool need = p < last && !page_saved(j, p);

		if (need && run == UINT64_MAX)
			run = p;
		if (!need && run != UINT64_MAX) {
			uint64_t a = run * RESYNC_PAGE, b = MIN(p * (uint64_t)RESYNC_PAGE, size);

			r = save_run(j, vol_fd, a, b - a);
			if (r < 0)
				return r;
			run = UINT64_MAX;
		}
	}
	return 0;
}

int undo_sync(struct undo_journal *j)
{
	return fdatasync(j->fd) < 0 ? -errno : 0;
}

int undo_rollback_mark(struct undo_journal *j)
{
	int r;

	if (j->rollback)
		return 0;
	r = record_append(j, UNDO_REC_ROLLBACK, UNDO_ENC_RAW, 0, 0, NULL, 0);
	if (r < 0)
		return r;
	j->rollback = true;
	return undo_sync(j);
}

/* The bytes of BLOCK record i into j->raw; its offset and length. */
static int record_load(struct undo_journal *j, size_t i, uint64_t *ret_off, uint32_t *ret_len)
{
	struct undo_record_le h;
	uint64_t at = j->recs[i];
	uint64_t seq;
	ssize_t n;
	int r;

	n = fd_pread_all(j->fd, &h, sizeof(h), at);
	if (n < 0)
		return (int)n;
	if (n != sizeof(h))
		return -EBADMSG;
	seq = le64toh(h.seq);
	r = record_read(j, at, j->end, seq, &h);
	if (r != 0)
		return r < 0 ? r : -EBADMSG;
	if (le16toh(h.encoding) == UNDO_ENC_ZSTD) {
		unsigned long long want = ZSTD_getFrameContentSize(j->enc, le32toh(h.enc_len));
		size_t z;

		if (want != le32toh(h.raw_len))
			return -EBADMSG;
		z = ZSTD_decompressDCtx(j->dctx, j->raw, UNDO_RECORD_MAX, j->enc, le32toh(h.enc_len));
		if (ZSTD_isError(z) || z != le32toh(h.raw_len))
			return -EBADMSG;
	} else {
		memcpy(j->raw, j->enc, le32toh(h.raw_len));
	}
	*ret_off = le64toh(h.offset);
	*ret_len = le32toh(h.raw_len);
	return 0;
}

int undo_replay(struct undo_journal *j, int vol_fd, undo_written_fn *on_written, void *arg)
{
	for (size_t i = j->n_recs; i-- > 0;) {
		uint64_t off = 0;
		uint32_t len = 0;
		int r;

		r = record_load(j, i, &off, &len);
		if (r < 0)
			return r;
		for (uint32_t done = 0; done < len;) {
			ssize_t n = pwrite(vol_fd, j->raw + done, len - done, (off_t)(off + done));

			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				return -errno;
			if (n == 0)
				return -EIO;
			done += (uint32_t)n;
		}
		if (on_written)
			on_written(arg, off, len);
	}
	return fdatasync(vol_fd) < 0 ? -errno : 0;
}

int undo_ranges(const struct undo_journal *j, undo_written_fn *fn, void *arg)
{
	for (size_t i = 0; i < j->n_recs; i++) {
		struct undo_record_le h;
		ssize_t n = fd_pread_all(j->fd, &h, sizeof(h), j->recs[i]);

		if (n < 0)
			return (int)n;
		if (n != sizeof(h))
			return -EBADMSG;
		fn(arg, le64toh(h.offset), le32toh(h.raw_len));
	}
	return 0;
}

int undo_remove(const char *path)
{
	if (unlink(path) < 0)
		return errno == ENOENT ? 0 : -errno;
	return fsync_directory_of(path);
}
