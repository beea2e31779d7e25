/* The undo journal of this node's volume (resync/undo.h): started by a
 * resync's first write when undo applies, kept until undo_keep passes or
 * the next resync, put back by a rollback (issue 11).
 *
 * n->undo is used by whoever holds n->writing (a resync's session, a
 * rollback); n->undo_view (what status shows) is protected by n->lock.
 *
 * A rollback, in this order: writes fenced, state Inconsistent on disk, a
 * ROLLBACK record in the journal made durable, every saved page written
 * back (FUSE cache dropped, the ranges marked dirty), the volume flushed,
 * the generation, history and state from before the resync restored,
 * the journal removed. A crash anywhere before the removal leaves the
 * ROLLBACK record: the next start finishes the rollback before it serves
 * (node_undo_load()), or, when that fails, stays Inconsistent and says
 * so; it is never left half-restored and called consistent. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "node-int.h"
#include "resync/macro.h"

uint64_t node_undo_max(const struct cluster_config *cfg, uint64_t size)
{
	if (cfg->undo_max_bytes)
		return cfg->undo_max_bytes;
	/* size * percent / 100 without overflow or the rounding of size / 100. */
	return MAX(size / 100 * cfg->undo_max_percent + size % 100 * cfg->undo_max_percent / 100,
		   (uint64_t)UNDO_HEADER_SIZE + 4096);
}

static uint64_t undo_max_for(struct node *n)
{
	return node_undo_max(n->cfg, node_size(n));
}

/* n->undo_view from n->undo; n->lock held. */
static void undo_view_locked(struct node *n)
{
	struct wire_undo_info *w = &n->undo_view;
	struct undo_info in;

	memset(w, 0, sizeof(*w));
	if (!n->undo)
		return;
	undo_info_get(n->undo, &in);
	w->flags = WIRE_UNDO_HELD | (undo_rollback_started(n->undo) ? WIRE_UNDO_ROLLBACK : 0);
	w->state = wire_state_from_meta(in.state);
	w->bytes = undo_bytes(n->undo);
	w->saved = undo_saved_bytes(n->undo);
	w->until = in.keep_until;
	w->created = in.created;
}

static void undo_set(struct node *n, struct undo_journal *j)
{
	struct undo_journal *old;

	pthread_mutex_lock(&n->lock);
	old = n->undo;
	n->undo = j;
	undo_view_locked(n);
	pthread_mutex_unlock(&n->lock);
	if (old != j)
		undo_free(old);
}

static void undo_drop(struct node *n, const char *why)
{
	int r;

	undo_set(n, NULL);
	r = undo_remove(n->undo_path);
	if (r < 0)
		log_error("cannot remove '%s': %s", n->undo_path, strerror(-r));
	else if (why)
		log_info("undo journal '%s' dropped: %s", n->undo_path, why);
}

void node_undo_info(struct node *n, struct wire_undo_info *ret)
{
	pthread_mutex_lock(&n->lock);
	*ret = n->undo_view;
	pthread_mutex_unlock(&n->lock);
}

struct rollback_ctx {
	struct node *n;
	bool serving;
	int r;
	unsigned records, kill_after; /* the test's failpoint (0: none) */
};

static void rollback_written(void *arg, uint64_t off, uint64_t len)
{
	struct rollback_ctx *c = arg;
	int r;

	if (c->serving)
		node_invalidate(c->n, off, len);
	/* The restored pages differ from what the primary sent: its own again. */
	r = meta_dirty_mark(node_meta(c->n), off, len);
	if (r < 0 && c->r >= 0)
		c->r = r;
	/* Test failpoint: a kill -9 part-way through a rollback. */
	FAILPOINT("secondary-rollback-record");
	if (c->kill_after && ++c->records == c->kill_after)
		raise(SIGKILL);
}

/* The rollback itself; the caller holds n->writing (and the fence when
 * serving). */
static int undo_apply(struct node *n, bool serving, char *why, size_t whylen)
{
	struct meta *m = node_meta(n);
	const char *fp = getenv("RESYNC_TEST_ROLLBACK_KILL_AFTER");
	struct rollback_ctx c = {n, serving, 0, 0, fp ? (unsigned)strtoul(fp, NULL, 10) : 0};
	struct undo_info in;
	int r;

	undo_info_get(n->undo, &in);
	/* The proof's leaves describe what the rollback overwrites. */
	node_proof_drop(n);
	r = meta_state_set(m, META_STATE_INCONSISTENT);
	FAILPOINT("secondary-rollback-inconsistent");
	if (r >= 0)
		r = undo_rollback_mark(n->undo);
	if (r < 0) {
		snprintf(why, whylen, "'%s': cannot start the rollback: %s", n->self->name, strerror(-r));
		return r;
	}
	undo_set(n, n->undo); /* the view shows the rollback */
	r = undo_replay(n->undo, volume_fd(n->vol), rollback_written, &c);
	if (r >= 0)
		r = c.r;
	if (r < 0) {
		snprintf(why, whylen, "'%s': the rollback failed: %s (the volume stays Inconsistent; its journal '%s' is kept)",
			 n->self->name, strerror(-r), n->undo_path);
		return r;
	}
	/* Generation, history and state from before the resync. */
	r = meta_generation_set(m, &in.generation);
	if (r >= 0)
		r = meta_history_set(m, in.history, in.history_n);
	if (r >= 0)
		r = meta_checkpoint_clear(m);
	if (r >= 0)
		r = meta_state_set(m, in.state == META_STATE_UNKNOWN || in.state == META_STATE_INCONSISTENT
					      ? META_STATE_DIVERGED : in.state);
	if (r < 0) {
		snprintf(why, whylen, "'%s': the rollback wrote the old data but its metadata failed: %s (stays Inconsistent; the next start finishes it)",
			 n->self->name, strerror(-r));
		return r;
	}
	return 0;
}

int node_undo_rollback(struct node *n, bool serving, uint64_t *ret_bytes, char *why, size_t whylen)
{
	struct meta_info mi;
	enum meta_state before;
	uint64_t saved;
	int r;

	pthread_mutex_lock(&n->lock);
	if (n->writing || n->resync_running) {
		pthread_mutex_unlock(&n->lock);
		snprintf(why, whylen, "'%s' is being rewritten by a resync: rollback refused", n->self->name);
		return -EBUSY;
	}
	if (!n->undo) {
		pthread_mutex_unlock(&n->lock);
		snprintf(why, whylen, "'%s' holds no undo journal: nothing to roll back", n->self->name);
		return -ENOENT;
	}
	n->writing = true;
	pthread_mutex_unlock(&n->lock);
	meta_info_get(node_meta(n), &mi);
	before = mi.state;
	saved = undo_saved_bytes(n->undo);
	r = serving ? node_fence_freeze(n) : 0;
	if (r < 0)
		snprintf(why, whylen, "'%s': cannot fence its writers: %s", n->self->name, strerror(-r));
	else
		r = undo_apply(n, serving, why, whylen);
	FAILPOINT("secondary-rollback-applied");
	if (r >= 0) {
		undo_drop(n, NULL);
		meta_info_get(node_meta(n), &mi);
		log_info("rolled back the last resync: %" PRIu64 " bytes put back, state %s", saved,
			 meta_state_name(mi.state));
		if (n->bus)
			event_publish_state(n->bus, n->self->name, before, mi.state, true,
					    "the last resync was rolled back");
	} else {
		log_error("%s", why);
		if (n->bus)
			event_publish_state(n->bus, n->self->name, before, META_STATE_INCONSISTENT, false,
					    "the rollback failed");
	}
	if (serving)
		node_fence_thaw(n);
	pthread_mutex_lock(&n->lock);
	n->writing = false;
	pthread_mutex_unlock(&n->lock);
	if (r >= 0 && ret_bytes)
		*ret_bytes = saved;
	return r;
}

int node_undo_load(struct node *n)
{
	struct undo_journal *j;
	struct undo_info in;
	struct meta_info mi;
	char why[RESYNC_WIRE_TEXT_MAX];
	int r;

	r = undo_path_default(n->self->volume, &n->undo_path);
	if (r < 0)
		return r;
	r = undo_open(n->undo_path, node_size(n), undo_max_for(n), &j);
	if (r == -ENOENT)
		return 0;
	meta_info_get(node_meta(n), &mi);
	if (r < 0) {
		/* Kept for the operator; a resync that needs a journal makes a new one. */
		log_error("undo journal '%s' is unreadable: %s%s", n->undo_path, strerror(-r),
			  mi.state == META_STATE_INCONSISTENT ? " (the volume stays Inconsistent)" : "");
		return 0;
	}
	undo_set(n, j);
	undo_info_get(j, &in);
	if (undo_rollback_started(j)) {
		log_warning("a rollback of '%s' was interrupted: finishing it before serving",
			    n->self->volume);
		FAILPOINT("secondary-rollback-resume");
		r = node_undo_rollback(n, false, NULL, why, sizeof(why));
		if (r < 0)
			log_error("the interrupted rollback cannot finish (%s): '%s' stays Inconsistent",
				  why, n->self->volume);
		return 0;
	}
	node_undo_expire(n);
	return 0;
}

void node_undo_expire(struct node *n)
{
	struct undo_info in;
	struct meta_info mi;
	bool busy;

	pthread_mutex_lock(&n->lock);
	busy = n->writing || !n->undo;
	pthread_mutex_unlock(&n->lock);
	if (busy)
		return;
	undo_info_get(n->undo, &in);
	meta_info_get(node_meta(n), &mi);
	/* An interrupted resync's journal is its only way back: kept. */
	if (mi.state != META_STATE_INCONSISTENT && in.keep_until <= (uint64_t)time(NULL))
		undo_drop(n, "its undo_keep passed");
}

int node_undo_begin(struct node *n, const struct meta_info *mi, const struct meta_uuid *target,
		    bool applies, char *why, size_t whylen)
{
	struct undo_info in = {0};
	struct undo_journal *j;
	uint64_t now = (uint64_t)time(NULL);
	int r;

	/* (a node made without node_undo_load(): tests' fixtures) */
	if (!n->undo_path && undo_path_default(n->self->volume, &n->undo_path) < 0)
		return -ENOMEM;
	if (mi->state == META_STATE_INCONSISTENT && n->undo && !undo_rollback_started(n->undo)) {
		/* An interrupted resync resumed: the journal holds the pages
		 * it overwrote, from before it; go on with it. */
		log_info("resync resumed: going on with the undo journal '%s' (%" PRIu64 " bytes)",
			 n->undo_path, undo_bytes(n->undo));
		return 1;
	}
	if (n->undo)
		undo_drop(n, "a new resync of this volume started");
	else
		(void)undo_remove(n->undo_path); /* an unreadable one */
	if (!applies || mi->state == META_STATE_INCONSISTENT) {
		if (applies)
			log_warning("no undo journal for this resync: the volume was already "
				    "Inconsistent without one");
		return 0;
	}
	in.volume_size = node_size(n);
	in.state = mi->state;
	in.generation = mi->generation;
	in.history_n = mi->history_n;
	memcpy(in.history, mi->history, sizeof(in.history));
	in.target = *target;
	in.created = now;
	in.keep_until = now + n->cfg->undo_keep_s;
	r = undo_create(n->undo_path, &in, undo_max_for(n), &j);
	if (r < 0) {
		snprintf(why, whylen, "'%s': cannot create the undo journal '%s': %s", n->self->name,
			 n->undo_path, strerror(-r));
		return r;
	}
	undo_set(n, j);
	FAILPOINT("secondary-undo-created");
	log_info("undo journal '%s' started (state %s before the resync, at most %" PRIu64 " bytes)",
		 n->undo_path, meta_state_name(mi->state), undo_max_for(n));
	return 1;
}

int node_undo_save(struct node *n, uint64_t off, uint64_t len, char *why, size_t whylen)
{
	int r = undo_save(n->undo, volume_fd(n->vol), off, len);

	if (r == -EFBIG)
		snprintf(why, whylen,
			 "'%s': the undo journal would exceed undo_max_bytes (%" PRIu64
			 " bytes): resync refused for this node (raise undo_max_bytes, or set undo = off "
			 "to resync without a way back); what was overwritten so far can be rolled back",
			 n->self->name, undo_max_for(n));
	else if (r < 0)
		snprintf(why, whylen, "'%s': cannot write the undo journal '%s': %s", n->self->name,
			 n->undo_path, strerror(-r));
	return r;
}

int node_undo_sync(struct node *n, char *why, size_t whylen)
{
	int r = undo_sync(n->undo);

	FAILPOINT("secondary-undo-synced");
	if (r < 0)
		snprintf(why, whylen, "'%s': cannot flush the undo journal '%s': %s", n->self->name,
			 n->undo_path, strerror(-r));
	pthread_mutex_lock(&n->lock);
	undo_view_locked(n);
	pthread_mutex_unlock(&n->lock);
	return r;
}

int node_peer_undo_info(struct peer_conn *c, unsigned char *buf, struct wire_undo_info *ret)
{
	size_t len;
	int r = node_peer_ask_empty(c, WIRE_UNDO_REQ, WIRE_UNDO_INFO, buf, &len);

	return r < 0 ? r : wire_undo_info_decode(buf, len, ret);
}

int node_peer_rollback(struct peer_conn *c, unsigned char *buf, uint64_t *ret_bytes, char *why,
		       size_t whylen)
{
	uint16_t type;
	size_t len;
	int r;

	r = peer_conn_send_frame(c, WIRE_ROLLBACK, buf, 0);
	FAILPOINT("primary-rollback-sent");
	if (r >= 0)
		r = peer_conn_recv_frame(c, &type, buf, RESYNC_WIRE_FRAME_MAX, &len);
	if (r < 0) {
		snprintf(why, whylen, "%s", peer_conn_error(c));
		return r;
	}
	if (type == WIRE_ERROR) {
		struct wire_text t;

		if (wire_text_decode(buf, len, &t) < 0)
			snprintf(t.text, sizeof(t.text), "malformed ERROR");
		snprintf(why, whylen, "%s", t.text);
		return -EIO;
	}
	if (type != WIRE_ACK || wire_offset_decode(buf, len, ret_bytes) < 0) {
		snprintf(why, whylen, "an unexpected answer to ROLLBACK");
		return -EBADMSG;
	}
	return 0;
}
