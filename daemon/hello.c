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
		     WIRE_FEATURE_PROOF;

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

	if (n->is_primary || !n->cfg->primary || !(h->flags & WIRE_HELLO_PRIMARY) ||
	    !(h->features & WIRE_FEATURE_GROW) || strcmp(h->node, n->cfg->primary) ||
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

int send_text(struct peer_conn *c, uint16_t type, uint32_t code, const char *text)
{
	struct wire_text t = {.code = code};
	unsigned char buf[RESYNC_WIRE_TEXT_MAX + 64];
	size_t len;

	snprintf(t.text, sizeof(t.text), "%s", text);
	if (wire_text_encode(&t, buf, sizeof(buf), &len) < 0)
		return -EINVAL;
	return peer_conn_send_frame(c, type, buf, len);
}
