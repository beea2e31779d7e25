#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "resync/limits.h"
#include "resync/macro.h"
#include "resync/patch.h"

#define PATCH_BATCH_DEFAULT (4u << 20)
#define PATCH_PUNCH_MIN 65536u

struct patch_writer {
	struct volume *dst;
	struct io_ctx *io;
	struct patch_opts opts;
	unsigned char *buf;
	size_t cap;
	uint64_t run_off; /* offset of buf[0] */
	size_t run_len;	  /* bytes queued in buf */
	bool punch_ok;
	bool unsynced; /* written or punched since the last successful sync */
	struct patch_stats st;
};

int patch_writer_new(struct volume *dst, const struct patch_opts *opts, struct patch_writer **ret)
{
	struct patch_writer *w = calloc(1, sizeof(*w));
	int r;

	if (!w)
		return -ENOMEM;
	w->dst = dst;
	w->opts = *opts;
	w->cap = opts->batch ? opts->batch : PATCH_BATCH_DEFAULT;
	w->punch_ok = opts->punch_zeros;
	w->unsynced = true; /* the first sync covers what was dirty before */
	w->buf = aligned_alloc(4096, DIV_ROUND_UP(w->cap, 4096) * 4096);
	if (!w->buf) {
		free(w);
		return -ENOMEM;
	}
	r = io_ctx_new(opts->io, 1, &w->io);
	if (r < 0) {
		free(w->buf);
		free(w);
		return r;
	}
	*ret = w;
	return 0;
}

void patch_writer_free(struct patch_writer *w)
{
	if (!w)
		return;
	io_ctx_free(w->io);
	free(w->buf);
	free(w);
}

static bool all_zero(const unsigned char *p, size_t len)
{
	return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

/* len bytes of p written (or punched, when zeros) at off. */
static int patch_write_run(struct patch_writer *w, const unsigned char *p, uint64_t off, size_t len)
{
	long long n;

	if (w->punch_ok && len >= PATCH_PUNCH_MIN && all_zero(p, len)) {
		int r = volume_punch(w->dst, off, len);

		if (r >= 0) {
			w->st.bytes_punched += len;
			goto written;
		}
		w->punch_ok = false; /* not here: write zeros from now on */
	}
	n = io_pwrite_full(w->io, volume_fd(w->dst), p, len, off);
	if (n < 0)
		return (int)n;
written:
	w->unsynced = true;
	w->st.writes++;
	w->st.bytes_written += len;
	if (w->opts.on_written)
		w->opts.on_written(w->opts.arg, off, len);
	return 0;
}

int patch_writer_flush(struct patch_writer *w)
{
	int r;

	if (w->run_len == 0)
		return 0;
	r = patch_write_run(w, w->buf, w->run_off, w->run_len);
	if (r < 0)
		return r;
	w->run_off += w->run_len;
	w->run_len = 0;
	return 0;
}

int patch_writer_write(struct patch_writer *w, uint64_t off, const void *data, size_t len)
{
	uint64_t size = volume_size(w->dst);
	int r;

	if (off > size || len > size - off)
		return -EFBIG;
	r = patch_writer_flush(w);
	if (r < 0 || !len)
		return r;
	return patch_write_run(w, data, off, len);
}

int patch_writer_put(struct patch_writer *w, uint64_t off, const void *data, size_t len)
{
	const unsigned char *p = data;
	uint64_t size = volume_size(w->dst);

	if (off > size || len > size - off)
		return -EFBIG;
	while (len) {
		size_t take;
		int r;

		if (w->run_len && (off != w->run_off + w->run_len || w->run_len == w->cap)) {
			r = patch_writer_flush(w);
			if (r < 0)
				return r;
		}
		if (w->run_len == 0)
			w->run_off = off;
		take = MIN(len, w->cap - w->run_len);
		memcpy(w->buf + w->run_len, p, take);
		w->run_len += take;
		off += take;
		p += take;
		len -= take;
	}
	return 0;
}

int patch_writer_sync(struct patch_writer *w)
{
	int r = patch_writer_flush(w);

	if (r < 0 || !w->unsynced)
		return r;
	r = io_fdatasync(w->io, volume_fd(w->dst));
	if (r >= 0)
		w->unsynced = false;
	return r;
}

void patch_writer_stats(const struct patch_writer *w, struct patch_stats *ret)
{
	*ret = w->st;
}
