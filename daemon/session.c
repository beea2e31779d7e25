/* A node of the cluster: volume through fusefs, peer sessions, control
 * commands and the resync from the primary (DESIGN.md, "A resync, from the
 * primary").
 *
 * The session protocol on one peer connection (the connecting side is the
 * one asking; the accepting side serves its own volume):
 *   -> HELLO            <- HELLO_ACK | REFUSE (reason; both sides log it)
 *   -> HASH_REQ ...     <- HASH_REPLY ...   (hash-tree walk, seed per resync)
 *   -> BLOCKS ...                           (primary only: fence, Inconsistent,
 *                                            write, invalidate the FUSE cache)
 *   -> EXTENTS ...                          (the same, several page runs a frame,
 *                                            when both speak WIRE_FEATURE_EXTENTS)
 *   -> CHECKPOINT off   <- ACK off          (durable below off, recorded)
 *   -> COMMIT gen       <- ACK size | ERROR (take gen, clear bitmap, UpToDate)
 *   -> ERROR            (cancelled: the accepting side thaws, stays Inconsistent)
 *   -> STATUS_REQ       <- STATUS           (dirty bytes, last resync, checkpoint)
 *   -> BITMAP_REQ off   <- BITMAP ...       (the dirty bitmap, for a quick resync)
 *
 * Generations (DRBD's UUIDs): a secondary's commit gives it the primary's
 * current generation and clears its bitmap. When every secondary has every
 * block, the primary clears its own bitmap, records the generation they
 * now share as the bitmap's base and starts a new generation. A secondary
 * whose generation is the primary's current one or that base, with both
 * bitmaps trusted, needs only the union of both bitmaps (quick resync);
 * anything else is compared through the hash tree. A checkpoint is
 * recorded under the primary's generation of its resync, so a restarted
 * resync knows how far the last one of the same generation got. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "node-int.h"
#include "resync/blockcmp.h"
#include "resync/io.h"
#include "resync/limits.h"
#include "resync/macro.h"
#include "resync/patch.h"

static void session_on_written(void *arg, uint64_t off, uint64_t len)
{
	struct session *s = arg;

	node_invalidate(s->n, off, len);
	s->proof_done = false;
	/* No bitmap counts a resync's writes: the proof hashes them again.
	 * Without the list, no leaves are trusted (every block is). */
	if (rangelist_add(&s->proof_written, off, len) < 0 ||
	    rangelist_add(&s->proof_unfolded, off, len) < 0)
		node_proof_forget(s->n);
}

/* Before this volume is hashed, written or committed: still the image
 * this daemon opened, at its size (node_volume_check()); the reason goes
 * to the primary in the request's ERROR. */
int session_volume_check(struct session *s)
{
	int r = node_volume_check(s->n, s->why, sizeof(s->why));

	if (r < 0)
		log_error("%s", s->why);
	return r;
}

/* blockcmp's progress while this volume is hashed for a HASH_REQ: a
 * KEEPALIVE when the connection was silent for a while, so that the
 * asking side, waiting for the HASH_REPLY, does not give up on a large
 * volume. Called on blockcmp's worker threads, one at a time (its
 * contract), while the session's thread waits inside
 * blockcmp_hash_volume() and does not touch the connection: the
 * connection still has one user at a time. A failed send is left for
 * the reply's send to report (the connection is broken by then). */
static int session_hash_progress(void *arg, uint64_t done, uint64_t total)
{
	struct session *s = arg;

	(void)done;
	(void)total;
	(void)peer_conn_keepalive(s->c, node_keepalive_ms(s->n->cfg));
	return 0;
}

static int session_tree(struct session *s, uint64_t seed, unsigned fanout, uint32_t leaf)
{
	struct node *n = s->n;
	uint64_t size = node_size(n);
	struct blockcmp_opts o = {.block_size = leaf, .seed = seed};
	uint64_t nb = DIV_ROUND_UP(size, leaf);
	struct tree_cache c;
	int r;

	if (s->tree && s->seed == seed && s->fanout == fanout && s->leaf == leaf)
		return 0;
	r = session_volume_check(s);
	if (r < 0)
		return r;
	hashtree_free(s->tree);
	s->tree = NULL;
	free(s->hashes);
	s->hashes = NULL;
	if (tree_cache_take(n, seed, fanout, leaf, &c)) {
		/* The plan's compare, a moment ago, of this same image. */
		s->hashes = c.hashes;
		s->tree = c.tree;
		s->seed = seed;
		s->fanout = fanout;
		s->leaf = leaf;
		s->id = c.id;
		s->built = c.built;
		return 0;
	}
	s->built = node_image_still(n, &s->id) ? clock_usec() : 0;
	if (s->features & WIRE_FEATURE_KEEPALIVE) {
		o.progress = session_hash_progress;
		o.progress_arg = s;
	}
	s->hashes = calloc(nb ? nb : 1, sizeof(*s->hashes));
	if (!s->hashes)
		return -ENOMEM;
	if (size) {
		/* The proof's leaves from the same reads, when asked later. */
		struct proof_offer pw;
		bool offer = node_proof_want(n, leaf, &o, &pw);

		r = blockcmp_hash_volume(n->vol, 0, size, &o, s->hashes);
		if (r >= 0 && offer)
			node_proof_offer(n, &pw, &o);
		free(o.extra_hashes);
		if (r < 0)
			return r;
	}
	r = hashtree_new(s->hashes, nb, fanout, seed, &s->tree);
	if (r < 0)
		return r;
	FAILPOINT_RETURN("secondary-tree-built");
	s->seed = seed;
	s->fanout = fanout;
	s->leaf = leaf;
	return 0;
}

static int session_hash_req(struct session *s, size_t len)
{
	struct node *n = s->n;
	struct wire_hash_req q;
	_cleanup_free_ struct hashtree_range *ranges = NULL;
	_cleanup_free_ struct hash128 *h = NULL;
	size_t nh, olen;
	uint32_t leaf;
	int r;

	r = wire_hash_req_decode(s->in, len, &q);
	if (r < 0)
		return r;
	/* Leaves finer than the primary would pick are refused: their
	 * number (and the tree's memory) is bounded. */
	leaf = q.leaf_size ? q.leaf_size : n->cfg->block_size;
	if (leaf < wire_tree_leaf(node_size(n), n->cfg->block_size))
		return -EBADMSG;
	r = session_tree(s, q.seed, q.fanout, leaf);
	if (r < 0)
		return r;
	ranges = calloc(q.n_ranges, sizeof(*ranges));
	h = calloc(q.n_hashes ? q.n_hashes : 1, sizeof(*h));
	if (!ranges || !h)
		return -ENOMEM;
	for (size_t i = 0; i < q.n_ranges; i++)
		ranges[i] = wire_hash_req_range(&q, i);
	r = hashtree_get(s->tree, q.level, ranges, q.n_ranges, h, q.n_hashes, &nh);
	if (r < 0)
		return r;
	r = wire_hash_reply_encode(q.level, h, nh, s->out, RESYNC_WIRE_FRAME_MAX, &olen);
	if (r < 0)
		return r;
	FAILPOINT_RETURN("secondary-hash-reply");
	return peer_conn_send_frame(s->c, WIRE_HASH_REPLY, s->out, olen);
}

/* PAGE_REQ: the hashes of the pages of byte ranges of this volume, read
 * now (the primary asks for the pages of the blocks it found differing,
 * and sends only the pages whose hashes differ). */
int session_pages_each(struct session *s, const struct wire_page_req *q,
		       void (*fn)(void *arg, size_t k, const unsigned char *p, size_t len), void *arg)
{
	uint64_t size = node_size(s->n);
	int fd = volume_fd(s->n->vol);
	_cleanup_free_ unsigned char *buf = malloc(RESYNC_CHUNK);
	size_t k = 0;
	int r;

	/* RESYNC_CHUNK is a multiple of every valid page size. */
	if (!buf)
		return -ENOMEM;
	for (uint32_t i = 0; i < q->n_ranges; i++) {
		struct hashtree_range rr = wire_page_req_range(q, i);
		uint64_t off = rr.first, end;

		if (rr.first >= size || rr.count > size - rr.first)
			return -EBADMSG;
		end = rr.first + rr.count;
		if (rr.count % q->page_size && end != size)
			return -EBADMSG;
		while (off < end) {
			size_t m = (size_t)MIN(end - off, (uint64_t)RESYNC_CHUNK);

			r = fd_pread_full(fd, buf, m, off);
			if (r < 0)
				return r;
			for (size_t p = 0; p < m; p += q->page_size) {
				if (k >= q->n_pages)
					return -EBADMSG; /* our bug: decode counted them */
				fn(arg, k++, buf + p, MIN((size_t)q->page_size, m - p));
			}
			off += m;
		}
	}
	return k == q->n_pages ? 0 : -EBADMSG;
}

struct page_hashes {
	struct hash128 *h;
	uint64_t seed;
};

static void page_hash_one(void *arg, size_t k, const unsigned char *p, size_t len)
{
	struct page_hashes *ph = arg;

	ph->h[k] = hash_block(p, len, ph->seed);
}

static int session_page_req(struct session *s, size_t len)
{
	struct wire_page_req q;
	_cleanup_free_ struct hash128 *h = NULL;
	struct page_hashes ph;
	size_t olen;
	int r;

	r = wire_page_req_decode(s->in, len, &q);
	if (r < 0)
		return r;
	h = calloc(q.n_pages ? q.n_pages : 1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	ph = (struct page_hashes){h, q.seed};
	r = session_pages_each(s, &q, page_hash_one, &ph);
	if (r < 0)
		return r;
	r = wire_hash_reply_encode(0, h, q.n_pages, s->out, RESYNC_WIRE_FRAME_MAX, &olen);
	if (r < 0)
		return r;
	FAILPOINT_RETURN("secondary-page-reply");
	return peer_conn_send_frame(s->c, WIRE_PAGE_REPLY, s->out, olen);
}

/* Before the first write: fence the mount, mark the volume Inconsistent. */
static int session_write_begin(struct session *s)
{
	struct node *n = s->n;
	struct patch_opts po = {.on_written = session_on_written, .arg = s};
	enum io_kind wk = io_kind_resolve(IO_KIND_AUTO);
	struct meta_info mi;
	int r;

	/* Plain pwrite unless io_uring is asked for: the pages of a resync
	 * are scattered, and a buffered io_uring write at depth 1 goes
	 * through a kernel worker (a context switch each), as in blockcmp. */
	po.io = wk == IO_KIND_AUTO ? IO_KIND_SYNC : wk;
	r = session_volume_check(s);
	if (r < 0)
		return r;

	pthread_mutex_lock(&n->lock);
	if (n->writing) {
		pthread_mutex_unlock(&n->lock);
		return -EBUSY;
	}
	n->writing = true;
	pthread_mutex_unlock(&n->lock);
	s->writing = true;
	s->wrote = true;
	node_proof_begin(n);
	r = node_fence_freeze(n);
	if (r < 0)
		return r;
	FAILPOINT("secondary-fenced");
	/* The journal records the state from before the resync. */
	meta_info_get(node_meta(n), &mi);
	r = node_undo_begin(n, &mi, &s->target,
			    s->undo_mode == UNDO_MODE_ON ||
				    (s->undo_mode == UNDO_MODE_DIVERGED && s->diverged),
			    s->why, sizeof(s->why));
	if (r < 0)
		return r;
	s->undo = r > 0;
	r = meta_state_set(node_meta(n), META_STATE_INCONSISTENT);
	if (r < 0)
		return r;
	FAILPOINT("secondary-inconsistent");
	event_publish_state(n->bus, n->self->name, EVENT_STATE_NONE, META_STATE_INCONSISTENT, true, "resync in progress");
	r = patch_writer_new(n->vol, &po, &s->pw);
	if (r < 0)
		return r;
	writeback_start(&s->wb, volume_fd(n->vol));
	r = wire_zstd_new(0, &s->z);
	if (r < 0)
		return r;
	s->raw = malloc(RESYNC_WIRE_BLOCKS_MAX);
	if (!s->raw)
		return -ENOMEM;
	log_info("'%s' is rewriting this volume: writes fenced, state Inconsistent", s->peer);
	return 0;
}

static void session_write_end(struct session *s)
{
	struct node *n = s->n;

	if (!s->writing)
		return;
	writeback_stop(&s->wb);
	if (s->pw)
		patch_writer_sync(s->pw);
	patch_writer_free(s->pw);
	s->pw = NULL;
	wire_zstd_free(s->z);
	s->z = NULL;
	free(s->raw);
	s->raw = NULL;
	node_fence_thaw(n);
	pthread_mutex_lock(&n->lock);
	n->writing = false;
	pthread_mutex_unlock(&n->lock);
	s->writing = false;
}

/* Start writing (fence, Inconsistent on disk) at the first data frame. */
int session_write_ensure(struct session *s)
{
	return s->writing ? 0 : session_write_begin(s);
}

static int session_blocks(struct session *s, size_t len)
{
	struct wire_blocks b;
	int r;

	/* A frame that does not decode changes nothing, not even the state. */
	r = wire_blocks_decode(s->in, len, &b);
	if (r < 0)
		return r;
	r = session_write_ensure(s);
	if (r < 0)
		return r;
	r = wire_blocks_unpack(s->z, &b, s->raw, RESYNC_WIRE_BLOCKS_MAX);
	if (r < 0)
		return r;
	s->n_blocks++;
	/* The old bytes durable in the journal before the new reach the image. */
	if (s->undo) {
		r = node_undo_save(s->n, b.offset, b.raw_len, s->why, sizeof(s->why));
		if (r >= 0)
			r = node_undo_sync(s->n, s->why, sizeof(s->why));
		if (r < 0)
			return r;
	}
	r = patch_writer_put(s->pw, b.offset, s->raw, b.raw_len);
	if (r >= 0)
		r = patch_writer_flush(s->pw);
	if (r >= 0)
		writeback_push(&s->wb, b.offset, b.raw_len);
	return r;
}

/* EXTENTS: unpacked once, each run written (and its FUSE pages
 * invalidated by on_written) in turn. */
static int session_extents(struct session *s, size_t len)
{
	struct wire_extents m;
	size_t pos = 0;
	int r;

	r = wire_extents_decode(s->in, len, &m);
	if (r < 0)
		return r;
	r = session_write_ensure(s);
	if (r < 0)
		return r;
	r = wire_extents_unpack(s->z, &m, s->raw, RESYNC_WIRE_BLOCKS_MAX);
	if (r < 0)
		return r;
	s->n_extents++;
	/* The whole frame's old bytes journaled, one flush, then its writes. */
	for (uint32_t i = 0; s->undo && i < m.n_extents; i++) {
		struct wire_extent e = wire_extents_get(&m, i);

		r = node_undo_save(s->n, e.offset, e.len, s->why, sizeof(s->why));
		if (r < 0)
			return r;
		FAILPOINT_RETURN("secondary-undo-saved");
	}
	if (s->undo && m.n_extents) {
		r = node_undo_sync(s->n, s->why, sizeof(s->why));
		if (r < 0)
			return r;
	}
	FAILPOINT_RETURN("secondary-batch-before-write");
	for (uint32_t i = 0; i < m.n_extents; i++) {
		struct wire_extent e = wire_extents_get(&m, i);

		/* decode checked that the lengths sum to raw_len */
		r = patch_writer_put(s->pw, e.offset, s->raw + pos, e.len);
		if (r < 0)
			return r;
		pos += e.len;
		FAILPOINT_RETURN("secondary-batch-extent-written");
	}
	if (m.n_extents) {
		struct wire_extent a = wire_extents_get(&m, 0), b = wire_extents_get(&m, m.n_extents - 1);

		r = patch_writer_flush(s->pw);
		if (r < 0)
			return r;
		writeback_push(&s->wb, a.offset, b.offset + b.len - a.offset);
		FAILPOINT_RETURN("secondary-batch-written");
	}
	return 0;
}

static int send_offset(struct peer_conn *c, uint16_t type, uint64_t off)
{
	unsigned char buf[64];
	size_t len;
	int r;

	r = wire_offset_encode(off, buf, sizeof(buf), &len);
	if (r < 0)
		return r;
	return peer_conn_send_frame(c, type, buf, len);
}

static void *session_fold_thread(void *arg)
{
	struct session *s = arg;
	int r = session_proof_fold(s);

	if (r < 0)
		log_warning("cannot fold the blocks written into the proof's leaves (%s): the proof hashes them",
			    strerror(-r));
	return NULL;
}

/* A checkpoint's data durable: the leaves of what was written since the
 * last one hashed (proof-fold.c) on a thread of their own while this one
 * waits for the flush, so that the disk and the CPU work together. The
 * fold reads the volume and its own fields only, and is joined here. */
static int session_checkpoint_sync(struct session *s)
{
	pthread_t t;
	bool fold;
	int r;

	r = patch_writer_flush(s->pw);
	if (r < 0)
		return r;
	fold = s->n->cfg->proof && s->proof_unfolded.n &&
	       !pthread_create(&t, NULL, session_fold_thread, s);
	r = patch_writer_sync(s->pw);
	if (fold)
		pthread_join(t, NULL);
	else
		session_fold_thread(s);
	return r;
}

static int session_checkpoint(struct session *s, size_t len)
{
	struct meta_uuid id;
	uint64_t off;
	int r;

	r = wire_offset_decode(s->in, len, &off);
	if (r < 0)
		return r;
	if (s->pw) {
		r = session_checkpoint_sync(s);
		if (r < 0)
			return r;
	}
	id = s->target;
	FAILPOINT_RETURN("secondary-checkpoint-synced");
	r = meta_checkpoint_set(node_meta(s->n), MIN(off, node_size(s->n)), &id);
	if (r < 0)
		return r;
	FAILPOINT_RETURN("secondary-checkpoint-saved");
	return send_offset(s->c, WIRE_ACK, off);
}

/* COMMIT's work, for COMMIT and PROOF_COMMIT: the ACK sent. */
static int session_commit_gen(struct session *s, const struct wire_uuid *g)
{
	struct node *n = s->n;
	struct meta *m = node_meta(n);
	struct meta_uuid gen;
	bool save = false;
	uint64_t begins = 0;
	int r;

	memcpy(gen.b, g->b, 16);
	FAILPOINT_RETURN("secondary-commit-received");
	/* etcd (issue 14): no commit from a primary the leader key left. */
	r = node_etcd_commit_check(n, s->peer, s->why, sizeof(s->why));
	if (r < 0)
		return r;
	r = session_volume_check(s);
	if (r < 0)
		return r;
	if (s->pw) {
		r = patch_writer_sync(s->pw);
		if (r < 0)
			return r;
	}
	FAILPOINT_RETURN("secondary-commit-synced");
	/* Generation, bitmap, trust, checkpoint and state in one update. */
	r = meta_resync_commit(m, &gen, true);
	if (r < 0)
		return r;
	s->committed = true;
	FAILPOINT_RETURN("secondary-commit-saved");
	/* The proof's leaves (PROOF_REQ, a moment ago, under the same
	 * fence) are this volume now: kept under the new generation, in
	 * their file once the ACK is out (later writes are this
	 * generation's dirty blocks). */
	if (s->proof_done) {
		save = true;
		begins = node_proof_begins(n);
	} else if (s->writing) {
		node_proof_forget(n);
	}
	session_write_end(s);
	pthread_mutex_lock(&n->lock);
	/* The bitmap now counts from gen: no older base applies. */
	memset(&n->base, 0, sizeof(n->base));
	n->split_brain[0] = 0; /* it has the primary's data now */
	n->last_resync = time(NULL);
	drift_commit_note_locked(n);
	node_state_save_locked(n);
	pthread_mutex_unlock(&n->lock);
	log_info("resync from '%s' committed: UpToDate (%" PRIu64 " BLOCKS and %" PRIu64
	      " EXTENTS frames written)",
	      s->peer, s->n_blocks, s->n_extents);
	event_publish_state(n->bus, n->self->name, META_STATE_INCONSISTENT, META_STATE_UPTODATE, true, "resync committed");
	FAILPOINT_RETURN("secondary-commit-before-ack");
	r = send_offset(s->c, WIRE_ACK, node_size(n));
	if (save)
		node_proof_save_since(n, begins);
	return r;
}

static int session_commit(struct session *s, size_t len)
{
	struct wire_uuid g;
	int r;

	r = wire_commit_decode(s->in, len, &g);
	if (r < 0)
		return r;
	return session_commit_gen(s, &g);
}

static int session_status(struct session *s, size_t len)
{
	struct node *n = s->n;
	struct wire_status st = {0};
	struct meta_info mi;
	unsigned char buf[128];
	size_t olen;
	int r;

	if (len != 0)
		return -EBADMSG;
	meta_info_get(node_meta(n), &mi);
	st.dirty_bytes = meta_dirty_bytes(node_meta(n));
	pthread_mutex_lock(&n->lock);
	st.last_resync = n->last_resync > 0 ? (uint64_t)n->last_resync : 0;
	pthread_mutex_unlock(&n->lock);
	if (mi.checkpoint_set) {
		st.flags |= WIRE_STATUS_CHECKPOINT;
		st.checkpoint_off = mi.checkpoint_off;
		memcpy(st.checkpoint_id.b, mi.checkpoint_id.b, 16);
	}
	r = wire_status_encode(&st, buf, sizeof(buf), &olen);
	if (r < 0)
		return r;
	FAILPOINT_RETURN("secondary-status");
	return peer_conn_send_frame(s->c, WIRE_STATUS, buf, olen);
}

/* The dirty bitmap, in pieces; a request for offset 0 takes a new
 * snapshot. */
static int session_bitmap(struct session *s, size_t len)
{
	struct node *n = s->n;
	uint64_t off, nb = DIV_ROUND_UP(node_size(n), n->cfg->block_size);
	size_t k, olen;
	long long got;
	int r;

	r = wire_offset_decode(s->in, len, &off);
	if (r < 0)
		return r;
	if (off == 0 || !s->bitmap) {
		free(s->bitmap);
		s->bitmap_size = (size_t)DIV_ROUND_UP(nb, 8);
		if (s->bitmap_size > RESYNC_META_BITMAP_MAX)
			return -EFBIG;
		s->bitmap = calloc(1, s->bitmap_size ? s->bitmap_size : 1);
		if (!s->bitmap)
			return -ENOMEM;
		got = meta_bitmap_read(node_meta(n), s->bitmap, s->bitmap_size);
		if (got < 0)
			return (int)got;
	}
	if (off > s->bitmap_size)
		return -EBADMSG;
	k = (size_t)MIN((uint64_t)(s->bitmap_size - off), (uint64_t)RESYNC_WIRE_BLOCKS_MAX);
	r = wire_bitmap_encode(off, s->bitmap_size, s->bitmap + off, k, s->out,
			       RESYNC_WIRE_FRAME_MAX, &olen);
	if (r < 0)
		return r;
	FAILPOINT_RETURN("secondary-bitmap");
	return peer_conn_send_frame(s->c, WIRE_BITMAP, s->out, olen);
}

/* The failpoint corrupt-before-commit: a byte of a block this resync
 * wrote is changed behind the daemon's back (no bitmap, no list), as a
 * failing disk or a stray writer would, between the transfer and the
 * commit. */
static void session_corrupt(struct session *s)
{
	uint64_t off = s->proof_written.n ? s->proof_written.v[0].off : 0;
	unsigned char b;

	if (off >= node_size(s->n) || fd_pread_full(volume_fd(s->n->vol), &b, 1, off) < 0)
		return;
	b ^= 0xff;
	if (fd_pwrite_full(volume_fd(s->n->vol), &b, 1, off) == 0)
		log_warning("failpoint corrupt-before-commit: changed the byte at %" PRIu64, off);
}

/* PROOF_REQ: this volume's root, made under the fence (as a data frame,
 * the request fences the mount and marks the volume Inconsistent until
 * the commit), so that the root is the volume the commit keeps. */
static int session_proof_make(struct session *s, const struct wire_proof *qp,
			      struct wire_proof *ret)
{
	struct node *n = s->n;
	struct wire_proof q = *qp, a;
	struct rangelist stale = {0};
	unsigned char buf[128];
	size_t olen;
	int r;

	if (q.volume_size != node_size(n))
		return -EBADMSG;
	r = session_write_ensure(s);
	if (r < 0)
		return r;
	r = patch_writer_sync(s->pw);
	if (r < 0)
		return r;
	if (node_failpoint("corrupt-before-commit"))
		session_corrupt(s);
	FAILPOINT_RETURN("secondary-proof-synced");
	r = session_proof_stale(s, &stale);
	if (r >= 0)
		r = node_proof_compute(n, (enum proof_hash)q.hash, q.block_size, &stale, &a, NULL);
	rangelist_release(&stale);
	if (r < 0) {
		snprintf(s->why, sizeof(s->why), "'%s' cannot make its proof: %s", n->self->name,
			 strerror(-r));
		return r;
	}
	s->proof_done = true;
	if (s->proof_folded_blocks)
		log_info("proof of '%s': %" PRIu64 " blocks this resync wrote were hashed at its checkpoints, %zu written ranges read again",
			 n->self->volume, s->proof_folded_blocks, s->n_checks);
	r = wire_proof_encode(&a, buf, sizeof(buf), &olen);
	if (r < 0)
		return r;
	*ret = a;
	FAILPOINT_RETURN("secondary-proof-sent");
	return peer_conn_send_frame(s->c, WIRE_PROOF, buf, olen);
}

static int session_proof_req(struct session *s, size_t len)
{
	struct wire_proof q, a;
	int r;

	r = wire_proof_decode(s->in, len, &q);
	if (r < 0)
		return r;
	return session_proof_make(s, &q, &a);
}

/* PROOF_COMMIT: the proof as for PROOF_REQ, then, when this volume's root
 * is the primary's, the commit as for COMMIT. A mismatch commits nothing:
 * the volume stays Inconsistent, and the primary says why. */
static int session_proof_commit(struct session *s, size_t len)
{
	struct wire_proof q, a;
	struct wire_uuid g;
	int r;

	r = wire_proof_commit_decode(s->in, len, &q, &g);
	if (r < 0)
		return r;
	r = session_proof_make(s, &q, &a);
	if (r < 0)
		return r;
	if (a.volume_size != q.volume_size || memcmp(a.root, q.root, sizeof(a.root))) {
		log_error("proof mismatch before the commit of '%s': not committed", s->peer);
		return 0;
	}
	return session_commit_gen(s, &g);
}

/* UNDO: the primary's undo mode for this resync (before its writes). */
static int session_undo(struct session *s, size_t len)
{
	uint32_t mode;
	int r;

	r = wire_undo_decode(s->in, len, &mode);
	if (r < 0)
		return r;
	s->undo_mode = mode;
	FAILPOINT_RETURN("secondary-undo-mode");
	return 0;
}

/* UNDO_REQ: the journal this node holds. */
static int session_undo_req(struct session *s, size_t len)
{
	struct wire_undo_info wi;
	unsigned char buf[128];
	size_t olen;
	int r;

	if (len != 0)
		return -EBADMSG;
	node_undo_info(s->n, &wi);
	r = wire_undo_info_encode(&wi, buf, sizeof(buf), &olen);
	if (r < 0)
		return r;
	return peer_conn_send_frame(s->c, WIRE_UNDO_INFO, buf, olen);
}

/* ROLLBACK from the primary (it checked the request's confirmation). */
static int session_rollback(struct session *s, size_t len)
{
	uint64_t bytes = 0;
	int r;

	if (len != 0)
		return -EBADMSG;
	if (s->writing)
		return -EBUSY;
	log_info("'%s' asks for a rollback of the last resync", s->peer);
	r = node_undo_rollback(s->n, true, &bytes, s->why, sizeof(s->why));
	if (r < 0)
		return r;
	return send_offset(s->c, WIRE_ACK, bytes);
}

/* ERROR from the asking side: it stopped the session (a cancel). */
static int session_error(struct session *s, size_t len)
{
	struct wire_text t;

	if (wire_text_decode(s->in, len, &t) == 0)
		log_info("'%s' stopped the session: %s", s->peer, t.text);
	return SESSION_END;
}

/* Every frame the asking side may send after the hellos, by type (as
 * libfuse's fuse_ll_ops[]): a type without a handler ends the session
 * with "unexpected message"; a PRIMARY_ONLY one is refused from anyone
 * but the cluster's primary. */
static const struct session_op session_ops[WIRE_TYPE_MAX + 1] = {
	[WIRE_HASH_REQ] = {session_hash_req, 0},
	[WIRE_PAGE_REQ] = {session_page_req, 0},
	[WIRE_STATUS_REQ] = {session_status, 0},
	[WIRE_BITMAP_REQ] = {session_bitmap, 0},
	[WIRE_CONTROL] = {session_control, 0},
	[WIRE_ERROR] = {session_error, 0},
	[WIRE_BLOCKS] = {session_blocks, SESSION_OP_PRIMARY_ONLY},
	[WIRE_EXTENTS] = {session_extents, SESSION_OP_PRIMARY_ONLY},
	[WIRE_CHECKPOINT] = {session_checkpoint, SESSION_OP_PRIMARY_ONLY},
	[WIRE_COMMIT] = {session_commit, SESSION_OP_PRIMARY_ONLY},
	[WIRE_DRIFT] = {session_drift, SESSION_OP_PRIMARY_ONLY},
	[WIRE_UNDO_REQ] = {session_undo_req, 0},
	[WIRE_UNDO] = {session_undo, SESSION_OP_PRIMARY_ONLY},
	[WIRE_ROLLBACK] = {session_rollback, SESSION_OP_PRIMARY_ONLY},
	[WIRE_PROOF_REQ] = {session_proof_req, SESSION_OP_PRIMARY_ONLY},
	[WIRE_PROOF_COMMIT] = {session_proof_commit, SESSION_OP_PRIMARY_ONLY},
	[WIRE_COPY] = {session_copy, SESSION_OP_PRIMARY_ONLY},	/* moved-session.c */
	[WIRE_WEAK_REQ] = {session_weak_req, 0},		/* moved-session.c */
	[WIRE_HELLO] = {session_rehello, 0},
};

/* A handler failed with r on a frame of type: say why in an ERROR, then
 * take what the primary may still be streaming until it read the ERROR
 * and closed (briefly), so that our close does not reset the connection
 * before it could. */
static void session_fail(struct session *s, uint16_t type, int r)
{
	char msg[RESYNC_WIRE_TEXT_MAX + 1];
	uint64_t until = clock_usec() + NODE_ERROR_LINGER_MS * 1000ull;
	size_t len;

	if (s->why[0])
		snprintf(msg, sizeof(msg), "%s", s->why);
	else
		snprintf(msg, sizeof(msg), "'%s' failed: %s", s->n->self->name, strerror(-r));
	log_error("session with '%s': %s from %s", s->peer, strerror(-r), wire_type_name(type));
	send_text(s->c, WIRE_ERROR,
		  r == -EBUSY	  ? WIRE_REASON_BUSY
		  : r == -EBADMSG ? WIRE_REASON_MESSAGE
				  : WIRE_REASON_IO,
		  msg);
	peer_conn_set_timeout(s->c, NODE_ERROR_LINGER_MS);
	while (clock_usec() < until &&
	       peer_conn_recv_frame(s->c, &type, s->in, RESYNC_WIRE_FRAME_MAX, &len) == 0)
		;
}

/* One frame received and dispatched through session_ops[]. Returns 0 to
 * go on, anything else to end the session (said where it had to be). */
static int session_step(struct session *s)
{
	const struct session_op *op;
	uint16_t type;
	size_t len;
	int r;

	r = peer_conn_recv_frame(s->c, &type, s->in, RESYNC_WIRE_FRAME_MAX, &len);
	if (r == -ECONNRESET)
		return r;
	if (r < 0) {
		/* This node stopping ends its sessions: asked for. */
		log_printf(r == -ECANCELED ? LOG_INFO : LOG_ERR, "session with '%s' ended: %s",
			   s->peer, peer_conn_error(s->c));
		return r;
	}
	op = type < ARRAY_SIZE(session_ops) ? &session_ops[type] : NULL;
	if (!op || !op->fn) {
		log_warning("unexpected %s from '%s'", wire_type_name(type), s->peer);
		send_text(s->c, WIRE_ERROR, WIRE_REASON_MESSAGE, "unexpected message");
		return -EBADMSG;
	}
	if ((op->flags & SESSION_OP_PRIMARY_ONLY) && !s->from_primary) {
		log_warning("refused writes from '%s': it is not the primary", s->peer);
		send_text(s->c, WIRE_ERROR, WIRE_REASON_MESSAGE,
			  "only the primary may rewrite this volume");
		return -EPERM;
	}
	r = op->fn(s, len);
	if (r < 0)
		session_fail(s, type, r);
	return r;
}

static void session_serve(struct session *s)
{
	struct node *n = s->n;

	if (session_hello(s) < 0)
		return;
	peer_conn_set_timeout(s->c, n->cfg->session_timeout_ms);
	while (session_step(s) == 0)
		;
	if (s->writing) {
		log_warning("resync from '%s' stopped before its commit: state stays Inconsistent",
			    s->peer);
		event_publish_state(n->bus, n->self->name, META_STATE_INCONSISTENT,
				    META_STATE_INCONSISTENT, false, "the resync stopped before its commit");
		node_proof_forget(n);
	}
	session_write_end(s);
}

/* A session's thread, started by the accept loop with s listed in
 * n->sessions: the handshake (under the connect deadline, here and not
 * on the accept loop), the session, then s moves to n->sessions_ended
 * for its owner to join and free. */
void *session_thread(void *arg)
{
	struct session *s = arg;
	struct node *n = s->n;
	struct peer_conn *conn;
	char err[512];
	int r;

	r = peer_conn_handshake(s->c, 0, err, sizeof(err));
	if (r < 0 && r != -ECANCELED)
		log_warning("%s", err);
	if (r >= 0) {
		s->in = malloc(RESYNC_WIRE_FRAME_MAX);
		s->out = malloc(RESYNC_WIRE_FRAME_MAX);
		if (s->in && s->out)
			session_serve(s);
	}
	session_authed(s);
	if (s->tree && s->built && !s->wrote) {
		struct tree_cache c = {s->hashes, s->tree, s->seed, s->fanout, s->leaf, s->id,
				       s->built};

		tree_cache_put(n, &c);
		s->hashes = NULL;
		s->tree = NULL;
	}
	hashtree_free(s->tree);
	free(s->hashes);
	free(s->bitmap);
	rangelist_release(&s->proof_written);
	session_proof_fold_release(s);
	free(s->in);
	free(s->out);
	pthread_mutex_lock(&n->sessions_lock);
	conn = TAKE_PTR(s->c);
	for (struct session **pp = &n->sessions; *pp; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	}
	s->next = n->sessions_ended;
	n->sessions_ended = s;
	pthread_cond_broadcast(&n->sessions_cond);
	pthread_mutex_unlock(&n->sessions_lock);
	peer_conn_free(conn);
	return NULL;
}
