/* A node of the cluster: volume through fusefs, peer sessions, control
 * commands and the resync from the primary (DESIGN.md, "A resync, from the
 * primary").
 *
 * The session protocol on one peer connection (the connecting side is the
 * one asking; the accepting side serves its own volume):
 *   -> HELLO            <- HELLO_ACK | REFUSE (reason; both sides log it)
 *   -> HASH_REQ ...     <- HASH_REPLY ...   (hash-tree walk, seed per resync)
 *   -> HASH_REQ_IF      <- HASH_IF_ACK [HASH_REPLY] (the first level, in the
 *                                            hello's flight: answered only when
 *                                            the primary is bound to compare)
 *   -> HASH_REQ_MORE    <- [HASH_REPLY]     (the rest of that level: answered
 *                                            as the last HASH_REQ_IF was)
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
 * resync knows how far the last one of the same generation got.
 *
 * This file dispatches the frames and answers the reads; the primary's
 * writes (data frames, CHECKPOINT, the proof, COMMIT) are
 * session-write.c's, the hellos session-hello.c's. */
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
#include "session-int.h"

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
 * KEEPALIVE when the connection was silent for a while (a peer that
 * speaks them), so that the asking side, waiting for the HASH_REPLY,
 * does not give up on a large volume. Called on blockcmp's worker
 * threads, one at a time (its contract), while the session's thread
 * waits inside blockcmp_hash_volume() and does not touch the
 * connection: the connection still has one user at a time. A failed
 * send is left for the reply's send to report (the connection is broken
 * by then). The hash stops at the next unit (-ECANCELED) once this node
 * stops or a newer session of the peer took over: a large volume's hash
 * would hold the stop (or the volume) for as long as it takes. */
static int session_hash_progress(void *arg, uint64_t done, uint64_t total)
{
	struct session *s = arg;

	(void)done;
	(void)total;
	if (atomic_load(&s->n->stopping) || atomic_load(&s->superseded))
		return 1;
	if (s->features & WIRE_FEATURE_KEEPALIVE)
		(void)peer_conn_keepalive(s->c, node_keepalive_ms(s->n->cfg));
	return 0;
}

static int session_tree(struct session *s, uint64_t seed, unsigned fanout, uint32_t leaf)
{
	struct node *n = s->n;
	uint64_t size = node_size(n);
	struct blockcmp_opts o = {.block_size = leaf, .seed = seed, .nice = NODE_HASH_NICE};
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
	if (!s->map_held && volume_map_hold(n->vol) == 0)
		s->map_held = true;
	if (tree_cache_take(n, seed, fanout, leaf, &c)) {
		/* The plan's compare, a moment ago, of this same image. */
		s->hashes = c.hashes;
		s->tree = c.tree;
		s->seed = seed;
		s->fanout = fanout;
		s->leaf = leaf;
		s->id = c.id;
		s->built = c.built;
		log_trace("secondary tree: taken from the cache (seed %016" PRIx64 ")", seed);
		return 0;
	}
	s->built = node_image_still(n, &s->id) ? clock_usec() : 0;
	o.progress = session_hash_progress;
	o.progress_arg = s;
	s->hashes = calloc(nb ? nb : 1, sizeof(*s->hashes));
	if (!s->hashes)
		return -ENOMEM;
	if (size) {
		/* The proof's leaves from the same reads, when asked later. */
		struct proof_offer pw;
		bool offer = node_proof_want(n, leaf, &o, &pw);

		log_trace("secondary tree: hashing %" PRIu64 " bytes, leaf %u%s", size, leaf,
			  offer ? ", the proof's leaves too" : "");
		r = blockcmp_hash_volume(n->vol, 0, size, &o, s->hashes);
		log_trace("secondary tree: hashed (%d)", r);
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

/* The answer to the HASH_REQ q (its ranges in s->in): the tree of its
 * seed and shape, built unless it is the last one, and the hashes. */
static int session_hash_answer(struct session *s, const struct wire_hash_req *q)
{
	struct node *n = s->n;
	_cleanup_free_ struct hashtree_range *ranges = NULL;
	_cleanup_free_ struct hash128 *h = NULL;
	size_t nh, olen;
	uint32_t leaf;
	int r;

	/* Leaves finer than the primary would pick are refused: their
	 * number (and the tree's memory) is bounded. */
	leaf = q->leaf_size ? q->leaf_size : n->cfg->block_size;
	if (leaf < wire_tree_leaf(node_size(n), n->cfg->block_size))
		return -EBADMSG;
	ranges = calloc(q->n_ranges, sizeof(*ranges));
	h = calloc(q->n_hashes ? q->n_hashes : 1, sizeof(*h));
	if (!ranges || !h)
		return -ENOMEM;
	for (size_t i = 0; i < q->n_ranges; i++)
		ranges[i] = wire_hash_req_range(q, i);
	r = session_tree(s, q->seed, q->fanout, leaf);
	if (r < 0)
		return r;
	r = hashtree_get(s->tree, q->level, ranges, q->n_ranges, h, q->n_hashes, &nh);
	if (r < 0)
		return r;
	r = wire_hash_reply_encode(q->level, h, nh, s->out, RESYNC_WIRE_FRAME_MAX, &olen);
	if (r < 0)
		return r;
	FAILPOINT_RETURN("secondary-hash-reply");
	return peer_conn_send_frame(s->c, WIRE_HASH_REPLY, s->out, olen);
}

static int session_hash_req(struct session *s, size_t len)
{
	struct wire_hash_req q;
	int r;

	r = wire_hash_req_decode(s->in, len, &q);
	if (r < 0)
		return r;
	return session_hash_answer(s, &q);
}

/* Whether the primary, at generation gen with its bitmap's base base
 * (null: none), is bound to compare this volume in full: the secondary's
 * half of resync_choose()'s conditions for the quick way, from what this
 * node's hello says now. */
static bool session_full_bound(struct session *s, const struct wire_uuid *gen,
			       const struct wire_uuid *base)
{
	static const struct wire_uuid null;
	struct wire_hello h;

	node_hello_make(s->n, &h);
	if (!(h.flags & WIRE_HELLO_BITMAP_TRUSTED) || h.state == WIRE_STATE_INCONSISTENT ||
	    !memcmp(h.generation.b, null.b, 16))
		return true;
	if (!memcmp(h.generation.b, gen->b, 16))
		return false;
	return !memcmp(base->b, null.b, 16) || memcmp(h.generation.b, base->b, 16);
}

/* HASH_REQ_IF (WIRE_FEATURE_HASH_IF): said at once whether it is
 * answered; the HASH_REPLY follows only when the primary is bound to
 * compare, so that a secondary that ends up quick builds no tree. */
static int session_hash_req_if(struct session *s, size_t len)
{
	struct wire_hash_req_if q;
	unsigned char buf[16];
	bool full;
	size_t olen;
	int r;

	if (!(node_features() & WIRE_FEATURE_HASH_IF)) {
		/* Masked (RESYNC_FEATURES_OFF): as a build without it would. */
		log_warning("unexpected %s from '%s'", wire_type_name(WIRE_HASH_REQ_IF), s->peer);
		send_text(s->c, WIRE_ERROR, WIRE_REASON_MESSAGE, "unexpected message");
		return SESSION_END;
	}
	r = wire_hash_req_if_decode(s->in, len, &q);
	if (r < 0)
		return r;
	full = session_full_bound(s, &q.gen, &q.base);
	s->if_seen = true;
	s->if_answered = full;
	r = wire_hash_if_ack_encode(full, buf, sizeof(buf), &olen);
	if (r >= 0)
		r = peer_conn_send_frame(s->c, WIRE_HASH_IF_ACK, buf, olen);
	if (r < 0 || !full)
		return r;
	return session_hash_answer(s, &q.req);
}

/* HASH_REQ_MORE (WIRE_FEATURE_HASH_MORE): the rest of a first level
 * that a HASH_REQ_IF began, answered without an ACK exactly when that
 * HASH_REQ_IF was, so that the primary knows what follows from the one
 * ACK it read. */
static int session_hash_req_more(struct session *s, size_t len)
{
	struct wire_hash_req q;
	int r;

	if (!(node_features() & WIRE_FEATURE_HASH_MORE) || !s->if_seen) {
		/* Masked: as a build without it would; or out of order. */
		log_warning("unexpected %s from '%s'", wire_type_name(WIRE_HASH_REQ_MORE), s->peer);
		send_text(s->c, WIRE_ERROR, WIRE_REASON_MESSAGE, "unexpected message");
		return SESSION_END;
	}
	r = wire_hash_req_decode(s->in, len, &q);
	if (r < 0 || !s->if_answered)
		return r;
	return session_hash_answer(s, &q);
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
	session_status_told(s);
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
	return session_send_offset(s->c, WIRE_ACK, bytes);
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
	[WIRE_HASH_REQ_IF] = {session_hash_req_if, 0},
	[WIRE_HASH_REQ_MORE] = {session_hash_req_more, 0},
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

/* An ERROR to the peer, with the state this node's failure left it in
 * when the peer speaks WIRE_FEATURE_ERROR_STATE: unchanged when nothing
 * was written (a write refused at the first, session_write_check()),
 * Inconsistent once the first data frame marked it so. */
static int session_send_error(struct session *s, uint32_t code, const char *text)
{
	struct wire_text t = {.code = code};
	struct meta_info mi;

	snprintf(t.text, sizeof(t.text), "%s", text);
	if (s->features & WIRE_FEATURE_ERROR_STATE) {
		meta_info_get(node_meta(s->n), &mi);
		t.state_said = true;
		t.state = wire_state_from_meta(mi.state);
	}
	return send_wire_text(s->c, WIRE_ERROR, &t);
}

/* A handler failed with r on a frame of type: say why in an ERROR, then
 * take what the primary may still be streaming until it read the ERROR
 * and closed (briefly), so that our close does not reset the connection
 * before it could. */
static void session_fail(struct session *s, uint16_t type, int r)
{
	char msg[RESYNC_WIRE_TEXT_MAX + 1];

	if (s->why[0])
		snprintf(msg, sizeof(msg), "%s", s->why);
	else
		snprintf(msg, sizeof(msg), "'%s' failed: %s", s->n->self->name, strerror(-r));
	log_error("session with '%s': %s from %s", s->peer, strerror(-r), wire_type_name(type));
	session_send_error(s,
			   r == -EBUSY	   ? WIRE_REASON_BUSY
			   : r == -EBADMSG ? WIRE_REASON_MESSAGE
			   : r == -EPERM   ? WIRE_REASON_OTHER /* refused (session_write_check()) */
					   : WIRE_REASON_IO,
			   msg);
	session_linger(s);
}

void session_linger(struct session *s)
{
	uint64_t until = clock_usec() + NODE_ERROR_LINGER_MS * 1000ull;
	uint16_t type;
	size_t len;

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
	if (atomic_load(&s->superseded)) {
		/* A newer session of the primary took over (session-hello.c):
		 * what this one still holds buffered is not applied. */
		log_info("session with '%s' ended: a newer session of it took over", s->peer);
		return -ECANCELED;
	}
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
	/* What the frame wrote, dropped from the mount's cache. */
	session_invalidate_flush(s);
	if (type != WIRE_EXTENTS && type != WIRE_BLOCKS && type != WIRE_KEEPALIVE)
		log_trace("secondary %s handled (%d)", wire_type_name(type), r);
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
	if (s->map_held)
		volume_map_release(n->vol);
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
