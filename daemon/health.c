/* /health for load balancers, the drift metrics and the status fields
 * (drift.h).
 *
 * GET /health answers 200 and {"status":"ok",...} while this node may
 * serve reads: its volume is mounted and is the image the daemon opened,
 * its state is UpToDate (a primary is, by definition), no resync rewrites
 * it, and, on a secondary, the primary's last word (fresh: within
 * DRIFT_JUDGED_FRESH_PROBES probe intervals) does not judge it Outdated,
 * Inconsistent or Diverged and its last verify found nothing. Otherwise
 * 503 and {"status":"unhealthy","reason":"...","reasons":[...]}.
 * GET /health?ready also answers 503 while the node's writes are fenced.
 * A secondary that has not heard from the primary lately is judged on
 * what it knows of itself: a partition alone does not take it out. */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drift.h"
#include "resync/macro.h"

enum { HEALTH_REASONS_MAX = 8 };

struct health {
	enum meta_state state;
	size_t n;
	char reasons[HEALTH_REASONS_MAX][RESYNC_WIRE_TEXT_MAX + 64];
};

static void health_add(struct health *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void health_add(struct health *h, const char *fmt, ...)
{
	va_list ap;

	if (h->n >= HEALTH_REASONS_MAX)
		return;
	va_start(ap, fmt);
	vsnprintf(h->reasons[h->n++], sizeof(h->reasons[0]), fmt, ap);
	va_end(ap);
}

static bool bad_state(enum meta_state s)
{
	return s == META_STATE_OUTDATED || s == META_STATE_INCONSISTENT || s == META_STATE_DIVERGED;
}

static void health_eval(struct node *n, bool ready, struct health *h)
{
	struct drift *d = n->drift;
	struct meta_info mi;
	char why[RESYNC_WIRE_TEXT_MAX];
	bool writing, judged_fresh = false, verified = false;
	enum meta_state judged = META_STATE_UNKNOWN;
	uint64_t diff = 0, blocks = 0;
	int64_t vtime = 0;

	memset(h, 0, sizeof(*h));
	meta_info_get(node_meta(n), &mi);
	h->state = mi.state;
	if (!n->fs || fusefs_mountpoint_check(n->self->mount) != -EBUSY)
		health_add(h, "volume not mounted at '%s'", n->self->mount ? n->self->mount : "");
	if (node_volume_check(n, why, sizeof(why)) < 0)
		health_add(h, "%s", why);
	pthread_mutex_lock(&n->lock);
	writing = n->writing;
	pthread_mutex_unlock(&n->lock);
	if (writing)
		health_add(h, "resync in progress: the primary is rewriting this volume");
	if (d && !n->is_primary) {
		uint64_t fresh = (uint64_t)DRIFT_JUDGED_FRESH_PROBES * drift_probe_ms(n->cfg) * 1000;

		pthread_mutex_lock(&d->lock);
		judged_fresh = d->self_judged_known && clock_usec() - d->self_judged_at <= fresh;
		judged = d->self_judged;
		verified = d->self_verified;
		diff = d->self_diff_bytes;
		blocks = d->self_diff_blocks;
		vtime = d->self_verify_time;
		pthread_mutex_unlock(&d->lock);
	}
	/* Its own disk's word first (Inconsistent, Diverged are facts of
	 * it); then the primary's (Outdated is known only there). */
	if (!writing && bad_state(mi.state))
		health_add(h, "state %s", meta_state_name(mi.state));
	else if (!writing && judged_fresh && bad_state(judged)) {
		h->state = judged;
		health_add(h, "state %s (from the primary's view)", meta_state_name(judged));
	}
	if (verified && diff) {
		char t[64];

		health_add(h, "verify at %s found %" PRIu64 " bytes in %" PRIu64
			   " blocks differing from the primary",
			   clock_format_utc(vtime * 1000000, false, t, sizeof(t)), diff, blocks);
	}
	if (ready && n->fs && fusefs_fence_frozen(n->fs))
		health_add(h, "fenced: writes are held");
}

unsigned health_http(void *node, bool ready, char **ret_body)
{
	struct node *n = node;
	struct health h;
	json_object *o = json_object_new_object(), *arr = json_object_new_array();
	char joined[1024] = "";

	health_eval(n, ready, &h);
	for (size_t i = 0; i < h.n; i++) {
		json_object_array_add(arr, json_object_new_string(h.reasons[i]));
		snprintf(joined + strlen(joined), sizeof(joined) - strlen(joined), "%s%s",
			 i ? "; " : "", h.reasons[i]);
	}
	json_object_object_add(o, "status", json_object_new_string(h.n ? "unhealthy" : "ok"));
	json_object_object_add(o, "cluster", json_object_new_string(n->cfg->name));
	json_object_object_add(o, "node", json_object_new_string(n->self->name));
	json_object_object_add(o, "role", json_object_new_string(n->is_primary ? "primary" : "secondary"));
	json_object_object_add(o, "state", json_object_new_string(meta_state_name(h.state)));
	if (h.n) {
		json_object_object_add(o, "reason", json_object_new_string(joined));
		json_object_object_add(o, "reasons", arr);
	} else {
		json_object_put(arr);
	}
	if (asprintf(ret_body, "%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN)) < 0)
		*ret_body = NULL;
	json_object_put(o);
	return h.n ? 503 : 200;
}

/* Label values are node names: config_name_valid() keeps them to
 * [A-Za-z0-9._-], nothing to escape. */
void health_metrics(void *node, FILE *o)
{
	struct node *n = node;
	struct drift *d = n->drift;
	const struct cluster_config *cfg = n->cfg;
	struct health h;
	int64_t last;

	if (!d)
		return;
	health_eval(n, false, &h);
	pthread_mutex_lock(&d->lock);
	last = n->is_primary ? d->last_verify : d->self_verify_time;
	fprintf(o, "# HELP resync_last_verify_timestamp_seconds unix time of the last completed verify, 0 never\n"
		   "# TYPE resync_last_verify_timestamp_seconds gauge\n");
	fprintf(o, "resync_last_verify_timestamp_seconds %" PRId64 "\n", last);
	fprintf(o, "# HELP resync_verify_differing_bytes bytes the last verify found differing from the primary\n"
		   "# TYPE resync_verify_differing_bytes gauge\n");
	for (size_t i = 0; i < cfg->n_nodes; i++) {
		const struct drift_node *dn = &d->nodes[i];

		if (n->is_primary && dn->verified && &cfg->nodes[i] != n->self)
			fprintf(o, "resync_verify_differing_bytes{node=\"%s\"} %" PRIu64 "\n",
				cfg->nodes[i].name, dn->diff_bytes);
	}
	if (!n->is_primary && d->self_verified)
		fprintf(o, "resync_verify_differing_bytes{node=\"%s\"} %" PRIu64 "\n", n->self->name,
			d->self_diff_bytes);
	fprintf(o, "# HELP resync_node_healthy 1 when the node may serve reads (as /health; peers: "
		   "the primary's last probe and verify)\n"
		   "# TYPE resync_node_healthy gauge\n");
	for (size_t i = 0; i < cfg->n_nodes; i++) {
		const struct drift_node *dn = &d->nodes[i];
		int ok;

		if (&cfg->nodes[i] == n->self)
			ok = h.n == 0;
		else if (n->is_primary && dn->probed)
			ok = dn->connected && dn->judged == META_STATE_UPTODATE &&
			     !(dn->verified && dn->diff_bytes);
		else
			continue;
		fprintf(o, "resync_node_healthy{node=\"%s\"} %d\n", cfg->nodes[i].name, ok);
	}
	pthread_mutex_unlock(&d->lock);
}

static json_object *time_json(int64_t t)
{
	char buf[64];

	return t ? json_object_new_string(clock_format_utc(t * 1000000, false, buf, sizeof(buf))) : NULL;
}

void drift_status_json(struct node *n, const struct node_config *nc, json_object *o)
{
	struct drift *d = n->drift;
	const struct drift_node *dn;

	if (!d)
		return;
	dn = drift_node_of(d, nc);
	pthread_mutex_lock(&d->lock);
	if (nc == n->self && n->is_primary) {
		/* The reference: its line says when the cluster was verified. */
		json_object_object_add(o, "last_verify", time_json(d->last_verify));
		json_object_object_add(o, "verify_differing_bytes", NULL);
	} else if (nc == n->self) {
		/* A secondary's own view (its primary did not answer). */
		json_object_object_add(o, "last_verify", time_json(d->self_verified ? d->self_verify_time : 0));
		json_object_object_add(o, "verify_differing_bytes",
				       d->self_verified ? json_object_new_uint64(d->self_diff_bytes) : NULL);
		json_object_object_add(o, "verify_differing_blocks",
				       d->self_verified ? json_object_new_uint64(d->self_diff_blocks) : NULL);
	} else if (n->is_primary) {
		bool ok = dn->verified && !dn->failed;

		json_object_object_add(o, "last_verify", time_json(dn->verified ? dn->verify_time : 0));
		json_object_object_add(o, "verify_differing_bytes", ok ? json_object_new_uint64(dn->diff_bytes) : NULL);
		json_object_object_add(o, "verify_differing_blocks", ok ? json_object_new_uint64(dn->diff_blocks) : NULL);
		json_object_object_add(o, "verify_bytes_compared", dn->verified ? json_object_new_uint64(dn->compared) : NULL);
		json_object_object_add(o, "verify_resumed_from", dn->verified ? json_object_new_uint64(dn->resumed_from) : NULL);
		if (dn->verified && dn->failed)
			json_object_object_add(o, "verify_error", json_object_new_string(dn->error));
		/* The scheduled verify in progress: compared up to here. */
		json_object_object_add(o, "verify_offset",
				       d->in_progress && !dn->done ? json_object_new_uint64(dn->off) : NULL);
	}
	pthread_mutex_unlock(&d->lock);
}
