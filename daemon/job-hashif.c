/* The first level of the hash tree asked for in the flight of the
 * primary's hello (issue 18). A full compare's first request (the
 * prefetch, job_prefetch()) makes the secondary build its tree; it used
 * to go only after the STATUS reply, because the way (quick from the
 * bitmaps, or full) is decided from the hellos, and an unconditional
 * request would make a secondary that ends up quick hash its whole
 * volume for nothing: one round trip paid in sequence, across a WAN.
 *
 * Now the request goes with the HELLO and the STATUS_REQ when the
 * primary can tell, before the hellos, what it would ask: the tree's
 * seed (the primary's cached tree's, or one drawn now: resync_hash()
 * takes it), its leaves and fanout (resync_geometry(): page leaves when
 * every secondary of the run reads them, as each said at its last
 * hello), and the first level (job_walk_first_level(), by the round trip
 * the TLS handshake just measured). When the primary is bound to compare
 * in full (a verify, its own bitmap not trusted, a secondary a verify
 * found differing) it is a plain HASH_REQ, which every peer reads; else
 * a HASH_REQ_IF (WIRE_FEATURE_HASH_IF), which the secondary answers with
 * the level only when its side binds the primary to compare too, and
 * otherwise declines at once (HASH_IF_ACK), building nothing.
 *
 * The peer's features are those of its last hello to this node, kept in
 * the node's state file (IMAGE.resync-node, "peer_features"), so that
 * the first run after a restart asks early too: a peer never seen gets
 * no early request. A peer downgraded since (its HELLO_ACK lacks the
 * bit) ends the session at the frame it cannot read; the primary reads
 * its hellos' answers, sees it (or fails to read them, the connection
 * reset), and connects again without the early request (and remembers
 * the new features). When the run's tree turns
 * out other than predicted (another seed, a peer now without page
 * leaves), resync_early_settle() reads the reply and drops it, and the
 * ordinary prefetch goes: today's cost, no more. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "job-hashif.h"
#include "job-walk.h"
#include "resync-int.h"
#include "resync/limits.h"
#include "resync/macro.h"

uint64_t node_peer_features(struct node *n, const struct node_config *peer)
{
	size_t i = (size_t)(peer - n->cfg->nodes);
	uint64_t f = 0;

	pthread_mutex_lock(&n->lock);
	if (n->peer_features && i < n->cfg->n_nodes)
		f = n->peer_features[i];
	pthread_mutex_unlock(&n->lock);
	return f;
}

void node_peer_features_note(struct node *n, const struct node_config *peer, uint64_t features)
{
	size_t i = (size_t)(peer - n->cfg->nodes);

	if (i >= n->cfg->n_nodes)
		return;
	pthread_mutex_lock(&n->lock);
	if (!n->peer_features)
		n->peer_features = calloc(n->cfg->n_nodes, sizeof(*n->peer_features));
	if (n->peer_features && n->peer_features[i] != features) {
		n->peer_features[i] = features;
		(void)node_state_save_locked(n); /* it says a failure */
	}
	pthread_mutex_unlock(&n->lock);
}

void early_state_load(struct node *n, json_object *state)
{
	json_object *o, *v;

	if (!json_object_object_get_ex(state, "peer_features", &o) ||
	    !json_object_is_type(o, json_type_object))
		return;
	pthread_mutex_lock(&n->lock);
	if (!n->peer_features)
		n->peer_features = calloc(n->cfg->n_nodes, sizeof(*n->peer_features));
	for (size_t i = 0; n->peer_features && i < n->cfg->n_nodes; i++)
		if (json_object_object_get_ex(o, n->cfg->nodes[i].name, &v) &&
		    json_object_is_type(v, json_type_int))
			n->peer_features[i] = (uint64_t)json_object_get_int64(v);
	pthread_mutex_unlock(&n->lock);
}

void early_state_save_locked(struct node *n, json_object *state)
{
	json_object *o;

	if (!n->peer_features)
		return;
	o = json_object_new_object();
	for (size_t i = 0; i < n->cfg->n_nodes; i++)
		if (n->peer_features[i])
			json_object_object_add(o, n->cfg->nodes[i].name,
					       json_object_new_int64((int64_t)n->peer_features[i]));
	json_object_object_add(state, "peer_features", o);
}

/* The seed of the tree resync_hash() will take back (tree_cache_take()'s
 * conditions), if the cache holds one of this shape and this image: a
 * seed already said to peers is used again only for the image it was
 * drawn for, as before (else a new one is drawn). */
static bool early_cached_seed(struct node *n, unsigned fanout, uint32_t leaf, uint64_t *ret)
{
	struct image_id now;
	bool ok;

	pthread_mutex_lock(&n->lock);
	ok = n->tcache.built && n->tcache.fanout == fanout && n->tcache.leaf == leaf &&
	     node_image_id(n, &now) == 0 && image_id_equal(&now, &n->tcache.id);
	if (ok)
		*ret = n->tcache.seed;
	pthread_mutex_unlock(&n->lock);
	return ok;
}

void resync_early_plan(struct resync_run *run)
{
	struct node *n = run->n;
	struct early_geom *e = &run->early;
	uint32_t bs = n->cfg->block_size;

	memset(e, 0, sizeof(*e));
	if (!run->size || !run->nj || !(node_features() & WIRE_FEATURE_FINE_LEAVES))
		return;
	/* Page leaves only when every secondary reads them, as
	 * resync_geometry() decides; a peer never seen: not known. */
	for (size_t i = 0; i < run->nj; i++)
		if (!(node_peer_features(n, run->jobs[i].peer) & WIRE_FEATURE_FINE_LEAVES))
			return;
	e->leaf = wire_tree_leaf(run->size, bs);
	e->fanout = e->leaf < bs ? NODE_FINE_FANOUT : RESYNC_HASHTREE_FANOUT_DEFAULT;
	e->nleaves = DIV_ROUND_UP(run->size, e->leaf);
	/* resync_choose()'s conditions on this side alone. */
	e->full = !(run->write || run->plan) || !run->mi.bitmap_trusted;
	memcpy(e->gen.b, run->mi.generation.b, 16);
	memcpy(e->base.b, run->base.b, 16);
	e->cached = early_cached_seed(n, e->fanout, e->leaf, &e->seed);
	if (!e->cached && hash_seed_random(&e->seed) < 0)
		return;
	e->set = true;
}

/* The early request of j into j->buf: its first part, *ret_type and
 * *ret_len; the rest in j->first_req and j->first_rest (sent by
 * job_walk_first_rest()). A HASH_REQ_IF's rest goes as HASH_REQ_MORE, so
 * a peer without WIRE_FEATURE_HASH_MORE (f) gets a first level of one
 * request. */
static int early_encode(struct job *j, const struct early_geom *e, bool full, uint64_t f,
			uint16_t *ret_type, size_t *ret_len)
{
	struct walk_first *w = &j->first_req;
	struct hashtree_range first;
	size_t len;
	int r;

	j->first_one = !full && !(f & WIRE_FEATURE_HASH_MORE);
	*w = (struct walk_first){.seed = e->seed, .fanout = e->fanout, .leaf_wire = e->leaf,
				 .t_sent = clock_usec()};
	job_walk_first_level(j, e->nleaves, e->fanout, &w->level, &w->count);
	*ret_type = full ? WIRE_HASH_REQ : WIRE_HASH_REQ_IF;
	j->first_rest = full ? WIRE_HASH_REQ : WIRE_HASH_REQ_MORE;
	if (full)
		return job_walk_first_encode(w, 0, j->buf, ret_len);
	first = (struct hashtree_range){0, MIN(w->count, (uint64_t)RESYNC_WIRE_HASHES_MAX)};
	r = wire_hash_req_if_encode(&e->gen, &e->base, e->seed, w->level, e->fanout, e->leaf,
				    &first, 1, j->buf, RESYNC_WIRE_FRAME_MAX, &len);
	if (r >= 0)
		*ret_len = len;
	return r;
}

/* The HASH_IF_ACK that follows the STATUS (in the same flight: no wait
 * of its own): whether the level's HASH_REPLY follows. */
static int early_ack(struct job *j, bool *ret_answered)
{
	uint16_t type;
	size_t len;
	int r;

	r = job_recv(j, j->c, j->buf, &type, &len);
	if (r < 0)
		return r;
	if (type != WIRE_HASH_IF_ACK || wire_hash_if_ack_decode(j->buf, len, ret_answered) < 0) {
		snprintf(j->err, sizeof(j->err), "node '%s' answered HASH_REQ_IF with %s",
			 j->peer->name, wire_type_name(type));
		return -EBADMSG;
	}
	return 0;
}

int job_open_early(struct node *n, struct job *j, const struct early_geom *e, bool *ret_reached)
{
	uint64_t f = node_peer_features(n, j->peer) & node_features();
	bool full = e->set && (e->full || drift_verify_differs(n, j->peer)), answered = true;
	struct peer_early pe = {.payload = j->buf, .rest = job_walk_first_rest, .rest_arg = j};
	struct peer_conn *c = NULL;
	int r;

	if (!e->set || (!full && !(f & WIRE_FEATURE_HASH_IF)))
		goto plain;
	r = peer_conn_connect(n->ctx, j->peer, j->err, sizeof(j->err), &c);
	if (r < 0) {
		*ret_reached = false;
		return r;
	}
	j->c = c; /* its round trip sizes the first level */
	r = early_encode(j, e, full, f, &pe.type, &pe.len);
	j->c = NULL;
	if (r < 0) {
		peer_conn_free(c);
		goto plain;
	}
	r = node_peer_open_status(n, j->peer, j->write, c, &pe, j->buf, j->err, sizeof(j->err),
				  &j->c, &j->hello, &j->status, ret_reached);
	if (r == -EPERM || r == -ECANCELED || r == -ENOMEM)
		return r; /* refused, or this node stops */
	if (r < 0) {
		/* A peer of an older build drops the connection at a frame
		 * type it does not know, and may reset it before its answers
		 * to the hellos are read: asked again, plainly. */
		log_info("%s: connecting again without the early hash request", j->err);
		j->err[0] = 0;
		goto plain;
	}
	if (!(j->hello.features & WIRE_FEATURE_FINE_LEAVES) ||
	    (!full && !(j->hello.features & WIRE_FEATURE_HASH_IF)) ||
	    (!full && job_walk_first_parts(j->first_req.count) > 1 &&
	     !(j->hello.features & WIRE_FEATURE_HASH_MORE))) {
		/* It no longer reads what was sent, and ends the session. */
		log_info("node '%s' no longer offers what it did: connecting again without the "
			 "early hash request",
			 j->peer->name);
		node_peer_features_note(n, j->peer, j->hello.features);
		peer_conn_free(TAKE_PTR(j->c));
		goto plain;
	}
	if (!full) {
		r = early_ack(j, &answered);
		if (r < 0) {
			peer_conn_free(TAKE_PTR(j->c));
			return r;
		}
	}
	j->early_first = j->early_run = answered;
	return 0;
plain:
	return node_peer_open_status(n, j->peer, j->write, NULL, NULL, j->buf, j->err,
				     sizeof(j->err), &j->c, &j->hello, &j->status, ret_reached);
}
