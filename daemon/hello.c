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
#include "resync/limits.h"
#include "resync/macro.h"

/* ---- hello ---- */

/* The features this node offers: all it speaks, less those named in
 * RESYNC_FEATURES_OFF (a number: a mask of enum wire_features), so that
 * tests can make a peer of an older build. */
uint64_t node_features(void)
{
	const char *off = getenv("RESYNC_FEATURES_OFF");
	uint64_t f = WIRE_FEATURE_ZSTD | WIRE_FEATURE_HASHTREE | WIRE_FEATURE_PAGES |
		     WIRE_FEATURE_EXTENTS | WIRE_FEATURE_FINE_LEAVES | WIRE_FEATURE_CONTROL |
		     WIRE_FEATURE_KEEPALIVE | WIRE_FEATURE_DRIFT | WIRE_FEATURE_UNDO |
		     WIRE_FEATURE_PROOF | WIRE_FEATURE_PROOF_COMMIT | WIRE_FEATURE_COPY |
		     WIRE_FEATURE_ROLLING | WIRE_FEATURE_REHELLO | WIRE_FEATURE_HASH_IF |
		     WIRE_FEATURE_EARLY_DATA | WIRE_FEATURE_HASH_MORE |
		     WIRE_FEATURE_ERROR_STATE;

	if (off && *off)
		f &= ~strtoull(off, NULL, 0);
	return f;
}

void node_hello_make(struct node *n, struct wire_hello *h)
{
	struct meta_info mi;

	memset(h, 0, sizeof(*h));
	meta_info_get(node_meta(n), &mi);
	snprintf(h->cluster, sizeof(h->cluster), "%s", n->cfg->name);
	snprintf(h->node, sizeof(h->node), "%s", n->self->name);
	h->proto_min = WIRE_PROTO_MIN;
	h->proto_max = WIRE_PROTO_MAX;
	h->features = node_features();
	h->volume_size = node_size(n);
	h->block_size = n->cfg->block_size;
	h->state = wire_state_from_meta(mi.state);
	h->flags = (mi.bitmap_trusted ? WIRE_HELLO_BITMAP_TRUSTED : 0) |
		   (n->is_primary ? WIRE_HELLO_PRIMARY : 0);
	memcpy(h->generation.b, mi.generation.b, 16);
	h->n_history = MIN(mi.history_n, (unsigned)RESYNC_WIRE_HISTORY_MAX);
	for (unsigned i = 0; i < h->n_history; i++)
		memcpy(h->history[i].b, mi.history[i].b, 16);
}

/* Whether a peer's hello fits this node. Fills why on refusal. */
int node_hello_check(struct node *n, const struct wire_hello *h, struct wire_text *why)
{
	uint16_t proto;

	memset(why, 0, sizeof(*why));
	if (strcmp(h->cluster, n->cfg->name)) {
		why->code = WIRE_REASON_CLUSTER;
		snprintf(why->text, sizeof(why->text), "cluster '%s' is not this node's cluster '%s'",
			 h->cluster, n->cfg->name);
		return -EPERM;
	}
	if (!cluster_config_node(n->cfg, h->node) || !strcmp(h->node, n->self->name)) {
		why->code = WIRE_REASON_NODE;
		snprintf(why->text, sizeof(why->text), "node '%s' is not another node of cluster '%s'",
			 h->node, n->cfg->name);
		return -EPERM;
	}
	if (wire_proto_negotiate(h->proto_min, h->proto_max, WIRE_PROTO_MIN, WIRE_PROTO_MAX,
				 &proto) < 0) {
		why->code = WIRE_REASON_PROTOCOL;
		snprintf(why->text, sizeof(why->text),
			 "no common protocol: '%s' speaks %u to %u, '%s' speaks %u to %u", h->node,
			 h->proto_min, h->proto_max, n->self->name, WIRE_PROTO_MIN, WIRE_PROTO_MAX);
		return -EPROTONOSUPPORT;
	}
	if (h->block_size != n->cfg->block_size) {
		why->code = WIRE_REASON_BLOCK_SIZE;
		snprintf(why->text, sizeof(why->text),
			 "block sizes differ: '%s' uses %u, '%s' uses %u", h->node, h->block_size,
			 n->self->name, n->cfg->block_size);
		return -EINVAL;
	}
	if (h->volume_size != node_size(n)) {
		why->code = WIRE_REASON_VOLUME_SIZE;
		snprintf(why->text, sizeof(why->text),
			 "volume sizes differ: '%s' has %llu bytes, '%s' has %llu bytes%s", h->node,
			 (unsigned long long)h->volume_size, n->self->name,
			 (unsigned long long)node_size(n),
			 !n->is_primary && h->volume_size > node_size(n) &&
				 !volume_is_blockdev(n->vol)
			     ? " (a file: a resync grows it to the primary's size)"
			     : "");
		return -EINVAL;
	}
	return 0;
}

/* After node_hello_check() refused a hello for the volume size alone: a
 * secondary whose volume is a file smaller than its primary's grows it
 * to the primary's size when the primary opens a session that may
 * rewrite it (WIRE_FEATURE_GROW in its hello; a plan or a verify changes
 * nothing): the new bytes read as zeros until the resync fills them, and
 * the metadata starts over, untrusted, so that resync is a full compare.
 * Returns whether it grew; a block device, a larger volume, or a hello
 * from anyone but the cluster's primary stays refused with both sizes. */
bool node_grow_to_primary(struct node *n, const struct wire_hello *h)
{
	uint64_t was = node_size(n);
	int r;

	if (n->is_primary || !(h->flags & WIRE_HELLO_PRIMARY) ||
	    !(h->features & WIRE_FEATURE_GROW) || !cluster_config_primary_is(n->cfg, h->node) ||
	    h->volume_size <= was || volume_is_blockdev(n->vol))
		return false;
	pthread_mutex_lock(&n->lock);
	if (n->writing || n->resync_running) {
		pthread_mutex_unlock(&n->lock);
		return false;
	}
	n->writing = true; /* no resync writes this volume meanwhile */
	pthread_mutex_unlock(&n->lock);
	r = node_grow(n, h->volume_size);
	if (r >= 0)
		r = meta_state_set(node_meta(n), META_STATE_OUTDATED);
	pthread_mutex_lock(&n->lock);
	n->writing = false;
	pthread_mutex_unlock(&n->lock);
	if (r < 0) {
		log_error("cannot grow '%s' from %llu to %llu bytes (the primary's size): %s",
		      n->self->volume, (unsigned long long)was,
		      (unsigned long long)h->volume_size, strerror(-r));
		return false;
	}
	log_info("grew '%s' from %llu to %llu bytes, the size of the primary '%s'; its metadata "
	      "starts over (the next resync compares everything)",
	      n->self->volume, (unsigned long long)was, (unsigned long long)h->volume_size,
	      h->node);
	event_publish_state(n->bus, n->self->name, EVENT_STATE_NONE, META_STATE_OUTDATED, true,
			    "volume grown to the primary's size");
	return true;
}

int send_wire_text(struct peer_conn *c, uint16_t type, const struct wire_text *t)
{
	unsigned char buf[RESYNC_WIRE_TEXT_MAX + 64];
	size_t len;

	if (wire_text_encode(t, buf, sizeof(buf), &len) < 0)
		return -EINVAL;
	return peer_conn_send_frame(c, type, buf, len);
}

int send_text(struct peer_conn *c, uint16_t type, uint32_t code, const char *text)
{
	struct wire_text t = {.code = code};

	snprintf(t.text, sizeof(t.text), "%s", text);
	return send_wire_text(c, type, &t);
}

/* ---- split brain (issue 11) ----
 * DRBD's rule on generation UUIDs, as this project keeps them: only a
 * primary starts a generation (node_primary_init() forks one at every
 * promotion, resync_next_generation() after every full resync), and a
 * secondary's commit gives it the primary's current one. So a
 * secondary's current generation that the primary never had (not its
 * current one, not in its history, not its bitmap's base) was started
 * by that secondary acting as primary itself, after the last generation
 * they shared. With none shared (fresh or rebuilt metadata: a random
 * generation and no history) the data is unrelated, not split brain:
 * its writes are reported as Diverged and it is compared whole. The
 * primary, for its part, acted as primary since then
 * too: it is the primary. When that secondary also holds writes since
 * its last commit (dirty bytes, or a bitmap that cannot say), both
 * sides wrote as primary: split brain. A resync would erase what the
 * secondary wrote, so it is refused unless --force names the node;
 * it is never resolved automatically. A fork without writes on the
 * secondary's side (a planned failover back) is only Outdated: nothing
 * of its own would be lost. A null generation (fresh metadata) is never
 * split brain. Both sides decide it from the same facts: the primary
 * from the secondary's hello and status, the secondary from the
 * primary's hello (its current generation and history; the base is in
 * the history, being the generation before the current one). */
static bool uuid_in(const struct meta_uuid *u, const struct meta_uuid *v, unsigned nv)
{
	for (unsigned i = 0; i < nv; i++)
		if (!meta_uuid_is_null(&v[i]) && !memcmp(u->b, v[i].b, 16))
			return true;
	return false;
}

bool node_split_brain(const struct meta_uuid *sec_gen, const struct meta_uuid *sec_hist,
		      unsigned sec_hist_n, int sec_writes, const struct meta_uuid *known,
		      unsigned n_known, char *why, size_t whylen)
{
	char a[40], b[40];

	if (meta_uuid_is_null(sec_gen) || uuid_in(sec_gen, known, n_known) || sec_writes <= 0)
		return false;
	for (unsigned i = 0; i < sec_hist_n; i++)
		if (!meta_uuid_is_null(&sec_hist[i]) && uuid_in(&sec_hist[i], known, n_known)) {
			snprintf(why, whylen,
				 "split brain: it wrote as primary under generation %s, which the "
				 "primary never had, since their last common generation %s",
				 meta_uuid_format(sec_gen, a, sizeof(a)),
				 meta_uuid_format(&sec_hist[i], b, sizeof(b)));
			return true;
		}
	/* Nothing shared: fresh or rebuilt metadata (a random generation,
	 * no history), not a node that acted as primary since a common
	 * point. Its writes are reported as Diverged and it is compared
	 * whole, as before (DRBD calls this unrelated data, not split
	 * brain). */
	return false;
}

/* Note what was found for status, and announce it once per peer
 * generation: log, state_changed event (Diverged, the reason saying
 * split brain: a notification). */
static void split_brain_note(struct node *n, const char *node, const struct meta_uuid *peer_gen,
			     const char *why)
{
	bool fresh;

	pthread_mutex_lock(&n->lock);
	fresh = strcmp(n->split_brain, why) || memcmp(n->split_brain_gen.b, peer_gen->b, 16);
	snprintf(n->split_brain, sizeof(n->split_brain), "%s", why);
	n->split_brain_gen = *peer_gen;
	pthread_mutex_unlock(&n->lock);
	if (!fresh)
		return;
	log_error("node '%s': %s", node, why);
	event_publish_state(n->bus, node, EVENT_STATE_NONE, META_STATE_DIVERGED, false, why);
}

bool node_peer_split_brain(struct node *n, const struct wire_hello *h, int peer_writes,
			   char *why, size_t whylen)
{
	bool peer_primary = h->flags & WIRE_HELLO_PRIMARY;
	struct meta_uuid known[RESYNC_WIRE_HISTORY_MAX + 2], pg;
	struct meta_info mi;
	unsigned nk = 0;

	why[0] = 0;
	memcpy(pg.b, h->generation.b, 16);
	meta_info_get(node_meta(n), &mi);
	if (peer_primary && n->is_primary) {
		snprintf(why, whylen,
			 "two primaries: '%s' and '%s' both act as primary (their configurations "
			 "name different primaries)",
			 h->node, n->self->name);
		split_brain_note(n, h->node, &pg, why);
		return true;
	}
	if (n->is_primary) {
		/* The peer is the secondary: its writes as its status said. */
		if (peer_writes < 0)
			return false;
		known[nk++] = mi.generation;
		for (unsigned i = 0; i < mi.history_n; i++)
			known[nk++] = mi.history[i];
		pthread_mutex_lock(&n->lock);
		known[nk++] = n->base;
		pthread_mutex_unlock(&n->lock);
		{
			struct meta_uuid hist[RESYNC_WIRE_HISTORY_MAX];

			for (unsigned i = 0; i < h->n_history; i++)
				memcpy(hist[i].b, h->history[i].b, 16);
			if (!node_split_brain(&pg, hist, h->n_history, peer_writes, known, nk,
					      why, whylen))
				return false;
		}
		split_brain_note(n, h->node, &pg, why);
		return true;
	}
	if (!peer_primary || !cluster_config_primary_is(n->cfg, h->node))
		return false;
	/* This node is the secondary; the peer its primary. */
	known[nk++] = pg;
	for (unsigned i = 0; i < h->n_history; i++)
		memcpy(known[nk++].b, h->history[i].b, 16);
	if (!node_split_brain(&mi.generation, mi.history, mi.history_n,
			      !mi.bitmap_trusted ? 2 : meta_dirty_bytes(node_meta(n)) > 0, known, nk,
			      why, whylen)) {
		pthread_mutex_lock(&n->lock);
		n->split_brain[0] = 0;
		pthread_mutex_unlock(&n->lock);
		return false;
	}
	split_brain_note(n, n->self->name, &pg, why);
	return true;
}
