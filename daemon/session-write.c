/* The secondary's session, the primary's writes (session.c's room for
 * the dispatch and the rest): the first data frame fences the mount and
 * marks the volume Inconsistent (session_write_ensure()), BLOCKS and
 * EXTENTS are written with their undo journal first, a CHECKPOINT is
 * made durable (the proof's leaves folded meanwhile) and recorded, the
 * proof is made under the fence for PROOF_REQ and PROOF_COMMIT, and a
 * COMMIT takes the primary's generation and ends the writing. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "node-int.h"
#include "resync/io.h"
#include "resync/limits.h"
#include "resync/macro.h"
#include "resync/patch.h"
#include "session-int.h"

static void session_on_written(void *arg, uint64_t off, uint64_t len)
{
	struct session *s = arg;

	/* The mount's cache of these bytes is dropped once the frame is
	 * written (session_invalidate_flush()): one notification a frame
	 * rather than one a page, whose scattered runs each cost a call. */
	if (s->inval_end <= s->inval_off) {
		s->inval_off = off;
		s->inval_end = off + len;
	} else {
		s->inval_off = MIN(s->inval_off, off);
		s->inval_end = MAX(s->inval_end, off + len);
	}
	s->proof_done = false;
	/* No bitmap counts a resync's writes: the proof hashes them again.
	 * Without the list, no leaves are trusted (every block is). */
	if (rangelist_add(&s->proof_written, off, len) < 0 ||
	    rangelist_add(&s->proof_unfolded, off, len) < 0)
		node_proof_forget(s->n);
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
	/* Before the check: a change after it is seen at the next frame. */
	s->role_epoch = atomic_load(&n->role_epoch);
	node_proof_begin(n);
	r = node_fence_freeze(n);
	if (r < 0)
		return r;
	/* Fenced: what the primary was told can no longer change. */
	r = session_write_check(s);
	if (r < 0) {
		session_write_end(s);
		return r;
	}
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
	log_trace("secondary write: began");
	return 0;
}

void session_invalidate_flush(struct session *s)
{
	if (s->inval_end > s->inval_off)
		node_invalidate(s->n, s->inval_off, s->inval_end - s->inval_off);
	s->inval_off = s->inval_end = 0;
}

void session_write_end(struct session *s)
{
	struct node *n = s->n;

	if (!s->writing) {
		session_invalidate_flush(s);
		return;
	}
	writeback_stop(&s->wb);
	if (s->pw)
		patch_writer_sync(s->pw);
	/* Before the thaw: no reader sees the mount's old cache after it. */
	session_invalidate_flush(s);
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

/* The primary or this node's role changed since the writing began
 * (etcd's leader key moved, this node was promoted): the old primary's
 * session writes nothing more, and the volume stays Inconsistent. */
static int session_role_changed(struct session *s)
{
	struct node *n = s->n;
	const char *primary = cluster_config_primary_name(n->cfg);

	snprintf(s->why, sizeof(s->why),
		 "%s (%s%s%s now%s): refused further writes of '%s' after %" PRIu64
		 " BLOCKS and %" PRIu64 " EXTENTS frames; '%s' stays Inconsistent",
		 SESSION_ROLE_CHANGED,
		 primary ? "'" : "", primary ? primary : "no primary", primary ? "'" : "",
		 atomic_load(&n->is_primary) ? ", this node acts as primary" : "", s->peer,
		 s->n_blocks, s->n_extents, n->self->name);
	log_warning("%s", s->why);
	return -EPERM;
}

/* Start writing (fence, Inconsistent on disk) at the first data frame;
 * at each later one, the roles compared with the writing's start (an
 * atomic load: no syscall on the write path). */
int session_write_ensure(struct session *s)
{
	if (!s->writing)
		return session_write_begin(s);
	if (s->from_primary &&
	    (atomic_load(&s->n->role_epoch) != s->role_epoch || atomic_load(&s->n->is_primary)))
		return session_role_changed(s);
	return 0;
}

int session_blocks(struct session *s, size_t len)
{
	struct wire_blocks b;
	const void *data;
	int r;

	/* A frame that does not decode changes nothing, not even the state. */
	r = wire_blocks_decode(s->in, len, &b);
	if (r < 0)
		return r;
	r = session_write_ensure(s);
	if (r < 0)
		return r;
	/* Raw data is written from the frame itself, not copied first. */
	r = wire_blocks_bytes(s->z, &b, s->raw, RESYNC_WIRE_BLOCKS_MAX, &data);
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
	r = patch_writer_write(s->pw, b.offset, data, b.raw_len);
	if (r >= 0)
		writeback_push(&s->wb, b.offset, b.raw_len);
	return r;
}

/* EXTENTS: unpacked once, each run written (and its FUSE pages
 * invalidated by on_written) in turn. */
int session_extents(struct session *s, size_t len)
{
	struct wire_extents m;
	const unsigned char *data;
	const void *bytes;
	size_t pos = 0;
	int r;

	r = wire_extents_decode(s->in, len, &m);
	if (r < 0)
		return r;
	r = session_write_ensure(s);
	if (r < 0)
		return r;
	/* Raw data is written from the frame itself, not copied first. */
	r = wire_extents_bytes(s->z, &m, s->raw, RESYNC_WIRE_BLOCKS_MAX, &bytes);
	if (r < 0)
		return r;
	data = bytes;
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

		/* decode checked that the lengths sum to raw_len; the
		 * primary sends adjacent pages as one extent, so each is a
		 * write of its own, straight from data */
		r = patch_writer_write(s->pw, e.offset, data + pos, e.len);
		if (r < 0)
			return r;
		pos += e.len;
		FAILPOINT_RETURN("secondary-batch-extent-written");
	}
	if (m.n_extents) {
		struct wire_extent a = wire_extents_get(&m, 0), b = wire_extents_get(&m, m.n_extents - 1);

		writeback_push(&s->wb, a.offset, b.offset + b.len - a.offset);
		FAILPOINT_RETURN("secondary-batch-written");
	}
	return 0;
}

int session_send_offset(struct peer_conn *c, uint16_t type, uint64_t off)
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
	log_trace("secondary checkpoint: flushed to the page cache, fdatasync");
	r = patch_writer_sync(s->pw);
	log_trace("secondary checkpoint: fdatasync done (%d)", r);
	if (fold)
		pthread_join(t, NULL);
	else
		session_fold_thread(s);
	log_trace("secondary checkpoint: fold done");
	return r;
}

int session_checkpoint(struct session *s, size_t len)
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
	log_trace("secondary checkpoint: recorded (%d)", r);
	if (r < 0)
		return r;
	FAILPOINT_RETURN("secondary-checkpoint-saved");
	return session_send_offset(s->c, WIRE_ACK, off);
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
	log_trace("secondary commit: data synced");
	FAILPOINT_RETURN("secondary-commit-synced");
	/* Generation, bitmap, trust, checkpoint and state in one update. */
	r = meta_resync_commit(m, &gen, true);
	log_trace("secondary commit: metadata committed (%d)", r);
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
	log_trace("secondary commit: state saved, ACK");
	FAILPOINT_RETURN("secondary-commit-before-ack");
	r = session_send_offset(s->c, WIRE_ACK, node_size(n));
	if (save)
		node_proof_save_since(n, begins);
	return r;
}

int session_commit(struct session *s, size_t len)
{
	struct wire_uuid g;
	int r;

	r = wire_commit_decode(s->in, len, &g);
	if (r < 0)
		return r;
	return session_commit_gen(s, &g);
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
	log_trace("secondary proof: fdatasync");
	r = patch_writer_sync(s->pw);
	if (r < 0)
		return r;
	log_trace("secondary proof: synced");
	if (node_failpoint("corrupt-before-commit"))
		session_corrupt(s);
	FAILPOINT_RETURN("secondary-proof-synced");
	r = session_proof_stale(s, &stale);
	log_trace("secondary proof: written ranges checked (%d)", r);
	if (r >= 0)
		r = node_proof_compute(n, (enum proof_hash)q.hash, q.block_size, &stale, &a, NULL);
	log_trace("secondary proof: root made (%d)", r);
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

int session_proof_req(struct session *s, size_t len)
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
int session_proof_commit(struct session *s, size_t len)
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
