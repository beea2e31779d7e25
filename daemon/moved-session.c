/* Moved and shifted data, the secondary's side (moved.c is the
 * primary's): COPY frames applied under the fence, WEAK_REQ answered.
 *
 * A COPY's sources are all read into memory before any of its
 * destinations is written (at most RESYNC_WIRE_COPY_STAGE_MAX bytes), so
 * copies within a frame may read what others of it overwrite (blocks
 * that swapped places). Each source is checked against the copy's check
 * first: a source overwritten since the compare (by an earlier frame, or
 * before a crash that this resync resumes) no longer matches and its copy
 * is not applied but named in the COPY_ACK, and the primary sends those
 * bytes as data. So a copy is never replayed blindly. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "node-int.h"
#include "resync/io.h"
#include "resync/limits.h"
#include "resync/macro.h"
#include "resync/patch.h"
#include "resync/rollsum.h"

/* Test failpoint: SIGKILL once this many copies were written by this
 * process (RESYNC_TEST_COPY_KILL_AFTER=N), with the frame's earlier
 * copies flushed to the image and its later ones not. */
static unsigned copy_kill_after(void)
{
	const char *v = getenv("RESYNC_TEST_COPY_KILL_AFTER");

	return v ? (unsigned)strtoul(v, NULL, 10) : 0;
}

/* Whether copy e's source, staged at src, holds what its check says. */
static bool copy_source_ok(const struct wire_copy *m, const struct wire_copy_entry *e,
			   const unsigned char *src)
{
	struct hash128 ph[RESYNC_WIRE_COPY_LEN_MAX / RESYNC_BLOCK_MIN], c;
	size_t n = 0;

	for (uint32_t p = 0; p < e->len; p += m->piece)
		ph[n++] = hash_block(src + p, MIN(m->piece, e->len - p), m->seed);
	c = wire_copy_check(ph, n, m->seed);
	return hash128_equal(&c, &e->check);
}

/* Read every source of m into stage and mark in bits the copies whose
 * source does not match its check. */
static int copy_stage(struct session *s, const struct wire_copy *m, unsigned char *stage,
		      unsigned char *bits)
{
	uint64_t size = node_size(s->n), pos = 0;
	int fd = volume_fd(s->n->vol), r;

	for (uint32_t i = 0; i < m->n; i++) {
		struct wire_copy_entry e = wire_copy_get(m, i);

		if (e.src + e.len > size || e.dst + e.len > size) {
			snprintf(s->why, sizeof(s->why), "COPY past the volume's end (%" PRIu64 " bytes)",
				 size);
			return -EBADMSG;
		}
		r = fd_pread_full(fd, stage + pos, e.len, e.src);
		if (r < 0)
			return r;
		if (!copy_source_ok(m, &e, stage + pos))
			bits[i / 8] |= (unsigned char)(1u << (i % 8));
		pos += e.len;
	}
	return 0;
}

/* Write the staged copies that passed, journaled first when undo is on. */
static int copy_apply(struct session *s, const struct wire_copy *m, const unsigned char *stage,
		      const unsigned char *bits)
{
	static unsigned written; /* for the failpoint: copies of this process */
	unsigned kill_after = copy_kill_after();
	uint64_t pos = 0;
	int r;

	for (uint32_t i = 0; s->undo && i < m->n; i++) {
		struct wire_copy_entry e = wire_copy_get(m, i);

		if (bits[i / 8] & (1u << (i % 8)))
			continue;
		r = node_undo_save(s->n, e.dst, e.len, s->why, sizeof(s->why));
		if (r < 0)
			return r;
	}
	if (s->undo) {
		r = node_undo_sync(s->n, s->why, sizeof(s->why));
		if (r < 0)
			return r;
	}
	for (uint32_t i = 0; i < m->n; i++) {
		struct wire_copy_entry e = wire_copy_get(m, i);

		if (!(bits[i / 8] & (1u << (i % 8)))) {
			r = patch_writer_put(s->pw, e.dst, stage + pos, e.len);
			if (r < 0)
				return r;
			writeback_push(&s->wb, e.dst, e.len);
			if (kill_after && ++written == kill_after) {
				(void)patch_writer_flush(s->pw);
				raise(SIGKILL);
			}
		}
		pos += e.len;
	}
	return patch_writer_flush(s->pw);
}

int session_copy(struct session *s, size_t len)
{
	unsigned char bits[RESYNC_WIRE_COPIES_MAX / 8] = {0};
	_cleanup_free_ unsigned char *stage = NULL;
	struct wire_copy m;
	size_t olen;
	int r;

	/* A frame that does not decode changes nothing, not even the state. */
	r = wire_copy_decode(s->in, len, &m);
	if (r < 0)
		return r;
	r = session_write_ensure(s);
	if (r < 0)
		return r;
	stage = malloc(m.total);
	if (!stage)
		return -ENOMEM;
	r = copy_stage(s, &m, stage, bits);
	if (r >= 0)
		r = copy_apply(s, &m, stage, bits);
	if (r >= 0)
		r = wire_copy_ack_encode(m.n, bits, s->out, RESYNC_WIRE_FRAME_MAX, &olen);
	if (r < 0)
		return r;
	return peer_conn_send_frame(s->c, WIRE_COPY_ACK, s->out, olen);
}

static void weak_sum_one(void *arg, size_t k, const unsigned char *p, size_t len)
{
	uint32_t *sums = arg;

	sums[k] = rollsum_block(p, len);
}

int session_weak_req(struct session *s, size_t len)
{
	struct wire_page_req q;
	_cleanup_free_ uint32_t *sums = NULL;
	size_t olen;
	int r;

	r = wire_page_req_decode(s->in, len, &q);
	if (r < 0)
		return r;
	if (q.seed)
		return -EBADMSG;
	sums = malloc((q.n_pages ? q.n_pages : 1) * sizeof(*sums));
	if (!sums)
		return -ENOMEM;
	r = session_pages_each(s, &q, weak_sum_one, sums);
	if (r < 0)
		return r;
	r = wire_weak_reply_encode(sums, q.n_pages, s->out, RESYNC_WIRE_FRAME_MAX, &olen);
	if (r < 0)
		return r;
	return peer_conn_send_frame(s->c, WIRE_WEAK_REPLY, s->out, olen);
}
