/* The primary's job, its transfer (job.c's room for the differing
 * ranges, the passes' threads and the job's end): the ranges read from
 * this volume and sent in batches as BLOCKS or EXTENTS frames (with a
 * peer that answers PAGE_REQ, only the pages whose hashes differ from
 * its own), CHECKPOINTs with up to NODE_ACK_WINDOW of them in flight,
 * the pace and the zstd level on the way, then the proof (job-end.c, with
 * a cancel's end) and COMMIT. */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "job-early.h"
#include "node-int.h"
#include "resync/io.h"
#include "resync/limits.h"
#include "resync/macro.h"
#include "zadapt.h"

int job_wait_ack(struct job *j, struct peer_conn *c, unsigned char *buf)
{
	uint16_t type;
	size_t len;
	int r = job_recv(j, c, buf, &type, &len);

	if (r < 0)
		return r;
	if (type != WIRE_ACK)
		return -EBADMSG;
	return 0;
}

/* The oldest CHECKPOINT in flight acknowledged: what it covered and
 * when, for job_settle_wait(). */
static void job_ack_taken(struct job *j)
{
	j->acked_bytes = j->ck_bytes[(j->ck_sent - j->ack_pending) % ARRAY_SIZE(j->ck_bytes)];
	j->acked_t = clock_usec();
	j->ack_pending--;
}

int job_acks_until(struct job *j, struct peer_conn *c, unsigned char *buf, unsigned left)
{
	int r = 0;

	while (r >= 0 && j->ack_pending > left) {
		r = job_wait_ack(j, c, buf);
		if (r >= 0)
			job_ack_taken(j);
	}
	return r;
}

int job_recv_reply(struct job *j, struct peer_conn *c, unsigned char *buf, uint16_t *ret_type,
		   size_t *ret_len)
{
	int r;

	do {
		r = job_recv(j, c, buf, ret_type, ret_len);
		if (r >= 0 && *ret_type == WIRE_ACK && j->ack_pending)
			job_ack_taken(j);
		else
			break;
	} while (r >= 0);
	return r;
}

/* Whether an unfenced pass that ends with bytes unacknowledged waits
 * for its closing CHECKPOINT's ACK before the primary's fence (bytes
 * still in flight then drain under it): when, at a lower bound of the
 * link's rate (node_settle_wait(): the ACKs' pace, the fastest hash reply
 * on c across a round trip of NODE_SETTLE_RTT_MIN_USEC or more, else
 * none: wait), they would take more than fence_max / NODE_SETTLE_FENCE_SHARE. */
static bool job_settle_wait(const struct job *j, const struct peer_conn *c, uint64_t bytes)
{
	uint64_t share = j->ctx->cfg->fence_max_ms * 1000ull / NODE_SETTLE_FENCE_SHARE;
	bool acked = j->acked_bytes && j->acked_t > j->data_t0;
	/* The replies' rate is the link's alone, not the secondary's write
	 * and sync that an ACK waits for too: where a round trip costs little
	 * (loopback, a LAN; none measured), waiting keeps those out of the
	 * fence for less than not waiting would put in it. */
	bool far = peer_conn_rtt_usec(c) >= NODE_SETTLE_RTT_MIN_USEC;

	return node_settle_wait(bytes, share, acked ? j->acked_bytes : 0,
				acked ? j->acked_t - j->data_t0 : 0, far ? j->reply_rate : 0);
}

/* Whether the peer answers PAGE_REQ: protocol 2 and the feature. */
static bool job_pages(const struct job *j)
{
	uint16_t v;

	return wire_proto_negotiate(j->hello.proto_min, j->hello.proto_max, WIRE_PROTO_MIN,
				    WIRE_PROTO_MAX, &v) == 0 &&
	       v >= 2 && (j->features & WIRE_FEATURE_PAGES);
}

/* Ask the peer for the hashes of the pages of batch[0, nb) (npages in
 * all) into rh. */
static int job_page_hashes(struct job *j, struct peer_conn *c, unsigned char *buf,
			   const struct hashtree_range *batch, size_t nb, uint64_t npages,
			   struct hash128 *rh)
{
	struct wire_hash_reply rep;
	uint16_t type;
	size_t len;
	int r;

	r = wire_page_req_encode(j->seed, RESYNC_PAGE, batch, nb, buf, RESYNC_WIRE_FRAME_MAX, &len);
	if (r < 0)
		return r;
	r = peer_conn_send_frame(c, WIRE_PAGE_REQ, buf, len);
	if (r < 0) {
		snprintf(j->err, sizeof(j->err), "node '%s': %s", j->peer->name,
			 peer_conn_error(c));
		return r;
	}
	/* Replies come in order: the ACKs of the checkpoints in flight. */
	r = job_acks_until(j, c, buf, 0);
	if (r >= 0)
		r = job_recv(j, c, buf, &type, &len);
	if (r < 0)
		return r;
	if (type != WIRE_PAGE_REPLY || wire_hash_reply_decode(buf, len, &rep) < 0 ||
	    rep.n_hashes != npages)
		return -EBADMSG;
	return wire_hash_reply_get(&rep, rh, RESYNC_WIRE_HASHES_MAX);
}

/* Page runs waiting to go as one EXTENTS frame, with a peer that speaks
 * WIRE_FEATURE_EXTENTS: their bytes concatenated in data and their table.
 * Runs are added in ascending order; bytes count as written when the
 * frame is sent. */
struct job_batch {
	/* JOB_BATCH_HEAD bytes of room for a raw frame's head (its header
	 * and table, written right before the bytes at flush: no copy of
	 * them), then data: RESYNC_WIRE_BLOCKS_MAX bytes. */
	unsigned char *mem;
	unsigned char *data;
	struct wire_extent ext[RESYNC_WIRE_EXTENTS_MAX];
	size_t n, len;
};

#define JOB_BATCH_HEAD (WIRE_EXTENTS_HEADER + RESYNC_WIRE_EXTENTS_MAX * WIRE_EXTENT_SIZE)

/* Whether len bytes at off join the batch (else it is sent first):
 * room for them, ascending, and an extent for them. */
static bool job_batch_joins(const struct job_batch *bt, uint64_t off, size_t len)
{
	const struct wire_extent *last = bt->n ? &bt->ext[bt->n - 1] : NULL;

	return bt->len + len <= RESYNC_WIRE_BLOCKS_MAX && (!last || off >= last->offset + last->len) &&
	       (bt->n < RESYNC_WIRE_EXTENTS_MAX || off == last->offset + last->len);
}

/* Between two frames of a transfer: what the secondary sent meanwhile.
 * An ERROR (its disk full, say) stops the transfer with its reason at
 * once, not with a broken pipe later; a checkpoint's ACK is taken. */
static int job_poll_peer(struct job *j, struct peer_conn *c)
{
	unsigned char small[RESYNC_WIRE_TEXT_MAX + 256];
	uint16_t type;
	size_t len;
	int r;

	if (!peer_conn_readable(c))
		return 0;
	r = job_recv(j, c, small, &type, &len);
	if (r < 0)
		return r;
	if (type != WIRE_ACK || !j->ack_pending)
		return -EBADMSG;
	job_ack_taken(j);
	return 0;
}

static bool job_xfer_early(const struct job *j);

static int job_send_frame(struct job *j, struct peer_conn *c, uint16_t type,
			  const unsigned char *buf, size_t elen, size_t len)
{
	/* Behind the hellos, their answers are the open's to read. */
	int r = job_xfer_early(j) ? 0 : job_poll_peer(j, c);

	if (r < 0)
		return r;
	if (!j->data_t0)
		j->data_t0 = clock_usec();
	r = peer_conn_send_frame(c, type, buf, elen);
	if (r < 0) {
		snprintf(j->err, sizeof(j->err), "node '%s': %s", j->peer->name,
			 peer_conn_error(c));
		return r;
	}
	j->bytes_written += len;
	return 0;
}

/* Send the batched runs, if any, as one EXTENTS frame. */
static void job_adapt(struct job *j, struct wire_zstd *z, size_t raw, size_t elen, uint64_t t0,
		      uint64_t t1, bool tried);
static struct wire_zstd *job_pack_ctx(const struct job *j, struct wire_zstd *z);
static void job_pack_note(struct job *j, struct wire_zstd *z, size_t raw, size_t elen, bool tried);

static int job_flush(struct job *j, struct peer_conn *c, struct wire_zstd *z, unsigned char *buf,
		     struct job_batch *bt)
{
	uint64_t t0 = clock_usec(), t1;
	struct wire_zstd *zz = job_pack_ctx(j, z);
	const unsigned char *frame = buf;
	size_t elen;
	int r;

	if (!bt || bt->n == 0)
		return 0;
	if (zz) {
		r = wire_extents_encode(zz, bt->ext, bt->n, bt->data, buf, RESYNC_WIRE_FRAME_MAX,
					&elen);
	} else {
		/* Raw without a try: the head goes right before the bytes. */
		size_t head = wire_extents_bound(bt->n, 0);

		frame = bt->data - head;
		elen = head + bt->len;
		r = wire_extents_raw_head(bt->ext, bt->n, bt->data - head, head);
	}
	if (r < 0)
		return r;
	t1 = clock_usec();
	r = job_send_frame(j, c, WIRE_EXTENTS, frame, elen, bt->len);
	if (r < 0)
		return r;
	job_pack_note(j, z, bt->len, elen, zz != NULL);
	job_adapt(j, z, bt->len, elen, t0, t1, zz != NULL);
	bt->n = 0;
	bt->len = 0;
	return 0;
}

/* Send data[0, len) at off: into the batch bt (sent when full), or as a
 * BLOCKS frame without one (bt NULL). Counts what was sent. */
static int job_send(struct job *j, struct peer_conn *c, struct wire_zstd *z, unsigned char *buf,
		    struct job_batch *bt, uint64_t off, const unsigned char *data, size_t len)
{
	struct wire_extent *last;
	size_t elen;
	int r;

	if (!bt) {
		uint64_t t0 = clock_usec(), t1;
		struct wire_zstd *zz = job_pack_ctx(j, z);

		r = wire_blocks_encode(zz, off, data, len, buf, RESYNC_WIRE_FRAME_MAX, &elen);
		if (r < 0)
			return r;
		t1 = clock_usec();
		r = job_send_frame(j, c, WIRE_BLOCKS, buf, elen, len);
		if (r >= 0) {
			job_pack_note(j, z, len, elen, zz != NULL);
			job_adapt(j, z, len, elen, t0, t1, zz != NULL);
		}
		return r;
	}
	if (!job_batch_joins(bt, off, len)) {
		r = job_flush(j, c, z, buf, bt);
		if (r < 0)
			return r;
	}
	last = bt->n ? &bt->ext[bt->n - 1] : NULL;
	if (last && off == last->offset + last->len)
		last->len += (uint32_t)len; /* adjacent: one extent */
	else
		bt->ext[bt->n++] = (struct wire_extent){off, (uint32_t)len};
	/* Read in place already (job_xfer_read_to()): nothing to copy. */
	if (data != bt->data + bt->len)
		memmove(bt->data + bt->len, data, len);
	bt->len += len;
	return 0;
}

/* A transfer in progress: its buffers, its cursor in the differing
 * ranges and its pace. The ranges go in batches of at most
 * RESYNC_WIRE_RANGES_MAX pieces and RESYNC_WIRE_HASHES_MAX pages; with a
 * peer that speaks PAGE_REQ, the peer's page hashes of a batch are
 * fetched first and only the pages whose hashes differ from this
 * volume's travel (adjacent ones merged), so that a 4 KiB write costs
 * 4 KiB and not a block. */
struct job_xfer {
	struct job *j;
	const struct rangelist *l; /* the ranges of this pass */
	bool checkpoints;	   /* this pass may send CHECKPOINTs */
	uint64_t total;		   /* bytes of l, for progress */
	struct peer_conn *c;
	unsigned char *buf; /* a frame's worth */
	bool pages;	    /* page hashes asked for each batch */
	unsigned char *raw; /* one piece read from the volume */
	struct hashtree_range *batch;
	size_t nb;
	struct hash128 *rh; /* the peer's page hashes of the batch */
	uint64_t idx;	    /* next of rh */
	struct job_batch *bt; /* NULL: BLOCKS frames */
	struct wire_zstd *z;
	struct zadapt za; /* z's level */
	int fd;
	/* Reads of what is sent: the backend RESYNC_IO names (the fault
	 * injector too), plain syscalls when it names none. */
	struct io_ctx *io;
	size_t i;     /* cursor: the range, */
	uint64_t cur; /* and the offset in it */
	uint64_t t0, last, done, since_ckpt;
	struct pacer pace;
	bool early; /* JOB_SEND_EARLY: nothing read meanwhile */
	/* Behind the hellos: bytes written at the last look for their
	 * answers, and where the data stopped when they came (0: it did
	 * not). */
	uint64_t early_looked, early_cut;
};

static bool job_xfer_early(const struct job *j)
{
	return j->x && j->x->early;
}

/* The zstd context for the next data frame: z, or NULL (the frame goes
 * raw without a try) while the transfer's data does not shrink
 * (zadapt_try()). */
static struct wire_zstd *job_pack_ctx(const struct job *j, struct wire_zstd *z)
{
	return j->x && j->x->z == z && !zadapt_try(&j->x->za) ? NULL : z;
}

/* A data frame of raw bytes went as elen (header included): counted
 * for the next frames' try (tried: it was given to zstd). */
static void job_pack_note(struct job *j, struct wire_zstd *z, size_t raw, size_t elen, bool tried)
{
	if (j->x && j->x->z == z)
		zadapt_sent(&j->x->za, raw, elen, tried);
}

/* A data frame's costs to the transfer's level and share (zadapt.h):
 * t0 before its encoding, t1 after it, now after its send; tried: it
 * was given to zstd. */
static void job_adapt(struct job *j, struct wire_zstd *z, size_t raw, size_t elen, uint64_t t0,
		      uint64_t t1, bool tried)
{
	uint64_t now = clock_usec();
	int level;

	if (!j->x || j->x->z != z)
		return;
	level = zadapt_note(&j->x->za, raw, elen, t1 - t0, now - t1, tried);
	(void)wire_zstd_set_level(z, level); /* a level of ZADAPT's range */
}

static void job_xfer_release(struct job_xfer *x)
{
	if (!x)
		return;
	if (x->za.lowest != x->za.highest)
		log_info("resync of '%s': zstd level from %d, between %d and %d", x->j->peer->name,
			 x->za.start, x->za.lowest, x->za.highest);
	if (x->za.mixed)
		log_info("resync of '%s': %llu bytes sent raw to keep the link busy "
			 "(zstd's share down to %u/%d)",
			 x->j->peer->name, (unsigned long long)x->za.mixed, x->za.share_low,
			 ZADAPT_SHARE_ONE);
	if (x->za.skipped)
		log_info("resync of '%s': %llu bytes sent raw without a try (they did not shrink)",
			 x->j->peer->name, (unsigned long long)x->za.skipped);
	free(x->raw);
	free(x->batch);
	free(x->rh);
	if (x->bt)
		free(x->bt->mem);
	free(x->bt);
	wire_zstd_free(x->z);
	io_ctx_free(x->io);
}

/* While the transfer waits in ratectl_pace() (a pause, a low max_rate):
 * a KEEPALIVE when the connection was silent for a while, so that the
 * secondary's session, waiting for the next frame, does not time out.
 * On the job's thread, the connection's owner. A failed send breaks the
 * connection, and the next frame's send says why. */
static void job_xfer_keepalive(void *arg)
{
	struct job_xfer *x = arg;

	(void)peer_conn_keepalive(x->c, node_keepalive_ms(x->j->ctx->cfg));
}

static int job_xfer_init(struct job_xfer *x, struct job *j, struct peer_conn *c, unsigned char *buf)
{
	const struct job_ctx *ctx = j->ctx;
	int r;

	_Static_assert(RESYNC_WIRE_BLOCKS_MAX % RESYNC_PAGE == 0, "pieces end on pages");
	*x = (struct job_xfer){.j = j, .c = c, .buf = buf, .fd = volume_fd(ctx->vol)};
	/* Page hashes pay when a range is coarser than a page: a quick
	 * resync's blocks, or a tree whose leaves are blocks. */
	x->pages = job_pages(j) && (j->mode == JOB_QUICK || j->leaf > RESYNC_PAGE);
	x->raw = malloc(RESYNC_WIRE_BLOCKS_MAX);
	x->batch = malloc(RESYNC_WIRE_RANGES_MAX * sizeof(*x->batch));
	/* (later passes ask for page hashes whenever the peer answers) */
	x->rh = job_pages(j) ? malloc(RESYNC_WIRE_HASHES_MAX * sizeof(*x->rh)) : NULL;
	if (!x->raw || !x->batch || (x->pages && !x->rh))
		return -ENOMEM;
	r = io_ctx_new(io_kind_resolve(IO_KIND_AUTO) == IO_KIND_AUTO ? IO_KIND_SYNC : IO_KIND_AUTO,
		       1, &x->io);
	if (r < 0)
		return r;
	if (j->features & WIRE_FEATURE_EXTENTS) {
		x->bt = calloc(1, sizeof(*x->bt));
		if (!x->bt || !(x->bt->mem = malloc(JOB_BATCH_HEAD + RESYNC_WIRE_BLOCKS_MAX)))
			return -ENOMEM;
		x->bt->data = x->bt->mem + JOB_BATCH_HEAD;
	}
	if (j->features & WIRE_FEATURE_KEEPALIVE) {
		x->pace.on_wait = job_xfer_keepalive;
		x->pace.on_wait_arg = x;
	}
	x->pace.stop = &j->abort;
	x->t0 = x->last = clock_usec();
	zadapt_init(&x->za, ctx->cfg->compress_level,
		    ctx->cfg->compress_adapt && ctx->cfg->compress_level >= ZADAPT_LEVEL_MIN &&
			    ctx->cfg->compress_level <= ZADAPT_LEVEL_MAX);
	return wire_zstd_new(ctx->cfg->compress_level, &x->z);
}

/* Start a pass over l from its first range. */
static void job_xfer_rewind(struct job_xfer *x, const struct rangelist *l, bool checkpoints)
{
	x->l = l;
	x->checkpoints = checkpoints;
	x->total = rangelist_bytes(l);
	x->i = 0;
	x->cur = l->n ? l->v[0].off : 0;
	x->done = 0;
	x->since_ckpt = 0;
	x->t0 = x->last = clock_usec();
}

/* The next batch from the cursor; returns the pages it covers. */
static uint64_t job_xfer_next_batch(struct job_xfer *x)
{
	const struct rangelist *l = x->l;
	uint64_t npages = 0;

	x->nb = 0;
	x->idx = 0;
	while (x->i < l->n && x->nb < RESYNC_WIRE_RANGES_MAX && npages < RESYNC_WIRE_HASHES_MAX) {
		uint64_t end = l->v[x->i].off + l->v[x->i].len;
		uint64_t take = MIN(end - x->cur, (RESYNC_WIRE_HASHES_MAX - npages) * (uint64_t)RESYNC_PAGE);

		x->batch[x->nb++] = (struct hashtree_range){x->cur, take};
		npages += wire_pages(take, RESYNC_PAGE);
		x->cur += take;
		if (x->cur == end && ++x->i < l->n)
			x->cur = l->v[x->i].off;
	}
	return npages;
}

/* With page hashes: the peer's page hashes of the batch (the ACKs in
 * flight read first: replies come in order). */
static int job_xfer_ask_pages(struct job_xfer *x, uint64_t npages)
{
	if (!x->pages)
		return 0;
	return job_page_hashes(x->j, x->c, x->buf, x->batch, x->nb, npages, x->rh);
}

/* Where the piece of k bytes at off is read to: right into the batch
 * when it goes whole (room made for it first), else x->raw. */
static int job_xfer_read_to(struct job_xfer *x, uint64_t off, size_t k, unsigned char **ret)
{
	int r;

	*ret = x->raw;
	if (!x->bt || x->pages)
		return 0;
	if (!job_batch_joins(x->bt, off, k)) {
		r = job_flush(x->j, x->c, x->z, x->buf, x->bt);
		if (r < 0)
			return r;
	}
	*ret = x->bt->data + x->bt->len;
	return 0;
}

/* Send the piece raw[0, k) at off (read to x->raw, or in place in the
 * batch): whole, or the runs of its pages whose hashes differ from the
 * peer's (x->raw). */
static int job_xfer_send_piece(struct job_xfer *x, uint64_t off, const unsigned char *raw, size_t k)
{
	struct job *j = x->j;
	size_t run = 0, nrun = 0;
	int r = 0;

	if (!x->pages)
		return job_send(j, x->c, x->z, x->buf, x->bt, off, raw, k);
	for (size_t p = 0; p < k && r >= 0; p += RESYNC_PAGE) {
		size_t pl = MIN((size_t)RESYNC_PAGE, k - p);
		struct hash128 lh = hash_block(raw + p, pl, j->seed);

		if (!hash128_equal(&lh, &x->rh[x->idx++])) {
			if (!nrun)
				run = p;
			nrun += pl;
			continue;
		}
		if (nrun)
			r = job_send(j, x->c, x->z, x->buf, x->bt, off + run, raw + run, nrun);
		nrun = 0;
	}
	if (r >= 0 && nrun)
		r = job_send(j, x->c, x->z, x->buf, x->bt, off + run, raw + run, nrun);
	return r;
}

/* A checkpoint at off (every byte below it sent or already equal): the
 * batched runs go first; up to NODE_ACK_WINDOW checkpoints are in
 * flight, their ACKs taken in passing or read when the window is full
 * (or at the next request), so the bytes keep going while the secondary
 * flushes and the ACKs travel back. */
static int job_xfer_checkpoint(struct job_xfer *x, uint64_t off)
{
	struct job *j = x->j;
	unsigned char cbuf[64];
	size_t len;
	int r;

	r = job_flush(j, x->c, x->z, x->buf, x->bt);
	if (r >= 0)
		r = job_acks_until(j, x->c, x->buf, NODE_ACK_WINDOW - 1);
	if (r >= 0)
		r = wire_offset_encode(off, cbuf, sizeof(cbuf), &len);
	FAILPOINT_RETURN("primary-checkpoint-before");
	if (r >= 0)
		r = peer_conn_send_frame(x->c, WIRE_CHECKPOINT, cbuf, len);
	log_trace("primary job %s: CHECKPOINT sent", j->peer->name);
	if (r >= 0) {
		j->ck_bytes[j->ck_sent++ % ARRAY_SIZE(j->ck_bytes)] = j->bytes_written;
		j->ack_pending++;
	}
	FAILPOINT("primary-checkpoint-sent");
	return r;
}

/* A cancel asked for: said to the peer, the job's error. A job given up
 * on (j->abort) stops too; its connection was shut down. */
/* The batch read piece by piece from the volume and sent, with
 * checkpoints, pace and progress between the pieces. */
static int job_xfer_batch(struct job_xfer *x)
{
	struct job *j = x->j;
	long long n;
	int r;

	for (size_t b = 0; b < x->nb; b++) {
		uint64_t off = x->batch[b].first, end = off + x->batch[b].count;

		while (off < end) {
			size_t k = (size_t)MIN(end - off, (uint64_t)RESYNC_WIRE_BLOCKS_MAX);
			uint64_t before = j->bytes_written;
			unsigned char *to;

			r = job_cancelled(j, x->c);
			if (r >= 0)
				r = job_xfer_read_to(x, off, k, &to);
			if (r < 0)
				return r;
			n = io_pread_full(x->io, x->fd, to, k, off);
			if (n >= 0 && (size_t)n != k)
				n = -EIO; /* the volume ended under the range */
			if (n < 0)
				return (int)n;
			j->bytes_read += k;
			r = job_xfer_send_piece(x, off, to, k);
			if (r < 0)
				return r;
			FAILPOINT_RETURN("primary-batch-sent");
			off += k;
			x->done += k;
			/* Data behind the hellos fills the wait for their
			 * answers, no more: once they come, this job opens
			 * and the rest goes in pass 1, so that a slow link
			 * does not hold the other secondaries' opens (the
			 * run waits for all) for its whole early share. */
			if (x->early && j->bytes_written - x->early_looked >= NODE_EARLY_LOOK_BYTES) {
				x->early_looked = j->bytes_written;
				if (peer_conn_readable(x->c)) {
					x->early_cut = off;
					return 1;
				}
			}
			x->since_ckpt += j->bytes_written - before;
			j->bytes_sent = peer_conn_bytes_sent(x->c);
			/* A checkpoint says that every byte below it was sent:
			 * true in a pass over ranges in ascending order from
			 * the start (the first), not in a later one. None
			 * within the pass's last half interval: its end (the
			 * CHECKPOINT that settles it, or the COMMIT) makes
			 * those bytes durable a moment later, and the secondary
			 * would stop taking frames for a flush of its own
			 * meanwhile. */
			if (x->checkpoints && x->since_ckpt >= NODE_CHECKPOINT_BYTES &&
			    x->total - x->done >= NODE_CHECKPOINT_BYTES / 2) {
				x->since_ckpt = 0;
				r = job_xfer_checkpoint(x, off);
				if (r < 0)
					return r;
			}
			/* max_rate, pause and resume, changed live (ratectl.h). */
			ratectl_pace(j->ctx->rate, &x->pace, j->bytes_written - before, j->ctx->cancel);
			if (clock_usec() - x->last >= NODE_PROGRESS_USEC) {
				x->last = clock_usec();
				job_progress(j, EVENT_PHASE_TRANSFER, x->done, x->total, x->t0);
			}
		}
	}
	return 0;
}

/* The last batch (paced like every other), COMMIT, and the ACKs of the
 * last checkpoint and of the commit. */
static int job_xfer_commit(struct job_xfer *x)
{
	struct job *j = x->j;
	uint64_t tail = j->bytes_written;
	unsigned char cbuf[64];
	struct wire_uuid g;
	size_t len;
	int r;

	r = job_flush(j, x->c, x->z, x->buf, x->bt);
	if (r < 0)
		return r;
	j->bytes_sent = peer_conn_bytes_sent(x->c);
	ratectl_pace(j->ctx->rate, &x->pace, j->bytes_written - tail, j->ctx->cancel);
	r = job_cancelled(j, x->c);
	if (r < 0)
		return r;
	/* etcd (issue 14): the leader and the lock, asked right before. */
	if (j->ctx->gate) {
		r = j->ctx->gate(j->ctx->gate_arg, j->err, sizeof(j->err));
		if (r < 0) {
			send_text(x->c, WIRE_ERROR, WIRE_REASON_OTHER, j->err);
			return r;
		}
	}
	FAILPOINT_RETURN("primary-commit-before");
	if (j->proof_primary && (j->features & WIRE_FEATURE_PROOF)) {
		/* One exchange with a peer that commits on its own proof. */
		if (j->features & WIRE_FEATURE_PROOF_COMMIT) {
			r = job_proof(j, x->c, x->buf, true);
			FAILPOINT("primary-commit-acked");
			return r;
		}
		r = job_proof(j, x->c, x->buf, false);
		if (r < 0)
			return r;
	}
	memcpy(g.b, j->gen.b, 16);
	r = wire_commit_encode(&g, cbuf, sizeof(cbuf), &len);
	if (r >= 0)
		r = peer_conn_send_frame(x->c, WIRE_COMMIT, cbuf, len);
	j->commit_sent |= r >= 0;
	if (r >= 0)
		r = job_acks_until(j, x->c, x->buf, 0); /* the checkpoints' */
	if (r >= 0)
		r = job_wait_ack(j, x->c, x->buf);
	FAILPOINT("primary-commit-acked");
	return r;
}

int job_xfer_open(struct job *j)
{
	int r;

	if (j->x)
		return 0;
	j->x = calloc(1, sizeof(*j->x));
	if (!j->x)
		return -ENOMEM;
	r = job_xfer_init(j->x, j, j->c, j->buf);
	if (r >= 0 && j->write && (j->features & WIRE_FEATURE_UNDO)) {
		unsigned char b[16];
		size_t len;

		/* Before the first data frame: this run's undo mode. */
		r = wire_undo_encode(j->undo_mode, b, sizeof(b), &len);
		if (r >= 0)
			r = peer_conn_send_frame(j->c, WIRE_UNDO, b, len);
		FAILPOINT("primary-undo-sent");
	}
	return r < 0 ? r : 0;
}

/* The end of an unfenced pass (JOB_SEND_SETTLE): the secondary makes
 * what it wrote durable now (a CHECKPOINT), so that the commit under the
 * primary's fence flushes only the last pass. The offset claims what the
 * first pass did (every byte below the end was sent), never more. The
 * ACKs of the checkpoints in flight (this one and those before it, such
 * as the one that ends the data behind the hellos) are waited for only
 * when the bytes that no ACK covers yet could take a part of fence_max
 * to drain (job_settle_wait()): else they are read with the replies of
 * the next pass, at the latest before the commit's answer (which the
 * secondary sends after handling every CHECKPOINT before it, in order).
 * When they could, the earlier ones are waited for first: their pace
 * then judges this one's bytes alone, as before. */
static int job_xfer_settle(struct job_xfer *x)
{
	struct job *j = x->j;
	uint64_t tail = 0;
	bool wait = true;
	int r;

	r = job_xfer_checkpoint(x, volume_size(j->ctx->vol));
	if (r >= 0) {
		tail = j->bytes_written - j->acked_bytes;
		wait = job_settle_wait(j, x->c, tail);
	}
	if (r >= 0 && wait) {
		r = job_acks_until(j, x->c, x->buf, 1);
		if (r >= 0) {
			tail = j->bytes_written - j->acked_bytes;
			wait = job_settle_wait(j, x->c, tail);
		}
	}
	if (r >= 0 && wait)
		r = job_acks_until(j, x->c, x->buf, 0);
	log_info("resync of '%s': pass ends with %" PRIu64 " bytes behind the last ACK'd "
		 "checkpoint, acks at %.1f MB/s, hash replies at %.1f MB/s (round trip %.1f ms): %s",
		 j->peer->name, tail,
		 j->acked_t > j->data_t0 ? (double)j->acked_bytes / (double)(j->acked_t - j->data_t0) : 0.0,
		 j->reply_rate, (double)peer_conn_rtt_usec(x->c) / 1000.0,
		 wait ? "its checkpoint waited for" : "not waited for");
	return r;
}

/* Page hashes asked for each batch, or not. */
static int job_xfer_pages(struct job_xfer *x, bool on)
{
	x->pages = on;
	if (on && !x->rh)
		x->rh = malloc(RESYNC_WIRE_HASHES_MAX * sizeof(*x->rh));
	return on && !x->rh ? -ENOMEM : 0;
}

int job_send_ranges(struct job *j, const struct rangelist *l, unsigned flags)
{
	struct job_xfer *x = j->x;
	uint64_t t0 = clock_usec(), done0 = j->bytes_read;
	_cleanup_(rangelist_release) struct rangelist rest = {0};
	int r = 0;

	if ((flags & JOB_SEND_CHECKPOINTS) && j->early.n) {
		/* Pass 1 after data behind the hellos: the rest, ascending, so
		 * that a checkpoint's "every byte below" stays true. */
		r = job_early_rest(l, &j->early, &rest);
		if (r < 0)
			return r;
		l = &rest;
	}
	job_xfer_rewind(x, l, flags & JOB_SEND_CHECKPOINTS);
	x->early = flags & JOB_SEND_EARLY;
	x->early_looked = j->bytes_written;
	x->early_cut = 0;
	/* After pass 1, every range is a block written meanwhile: its pages
	 * that the peer already holds stay here. Behind the hellos, the
	 * plan's leaves are pages. */
	if (flags & JOB_SEND_EARLY)
		r = job_xfer_pages(x, false);
	else if (flags & JOB_SEND_CHECKPOINTS)
		r = job_xfer_pages(x, job_pages(j) && (j->mode == JOB_QUICK || j->leaf > RESYNC_PAGE));
	else
		r = job_xfer_pages(x, job_pages(j));
	x->pace.ignore_pause = flags & JOB_SEND_FINAL;
	while (r == 0 && x->i < l->n) {
		r = job_xfer_ask_pages(x, job_xfer_next_batch(x));
		if (r >= 0)
			r = job_xfer_batch(x);
	}
	if (r > 0) /* the answers came: what went is below the cut */
		r = job_early_cut(&j->early, x->early_cut);
	if (r >= 0) {
		/* The last batched runs count at the rate like every other
		 * (up to RESYNC_WIRE_BLOCKS_MAX of them: a whole pass of a
		 * few MiB would go unpaced otherwise). */
		uint64_t tail = j->bytes_written;

		r = job_flush(j, x->c, x->z, x->buf, x->bt);
		if (r >= 0) {
			ratectl_pace(j->ctx->rate, &x->pace, j->bytes_written - tail, j->ctx->cancel);
			r = job_cancelled(j, x->c);
		}
	}
	if (r >= 0 && (flags & JOB_SEND_SETTLE))
		r = job_xfer_settle(x);
	j->bytes_sent = peer_conn_bytes_sent(x->c);
	j->pass_bytes = j->bytes_read - done0;
	j->pass_usec = clock_usec() - t0;
	return r;
}

int job_checkpoint(struct job *j, uint64_t off)
{
	return job_xfer_checkpoint(j->x, off);
}

int job_commit(struct job *j)
{
	return job_xfer_commit(j->x);
}

void job_xfer_close(struct job *j)
{
	job_xfer_release(j->x);
	free(j->x);
	j->x = NULL;
}

/* Send the differing ranges, batch by batch, then COMMIT. */
int job_transfer(struct job *j, struct peer_conn *c, unsigned char *buf)
{
	const struct rangelist *l = &j->ranges;
	int r;

	j->c = c;
	j->buf = buf;
	r = job_xfer_open(j);
	if (r >= 0) /* what the secondary holds elsewhere goes as COPY first */
		r = moved_run(j, &l);
	if (r >= 0)
		r = job_send_ranges(j, l, JOB_SEND_CHECKPOINTS);
	moved_free(j);
	if (r >= 0)
		r = job_commit(j);
	job_xfer_close(j);
	return r;
}
