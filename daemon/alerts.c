/* The primary's watch over its secondaries and the alerts (drift.h).
 *
 * Every drift_probe_ms() (alert_after / 3, from 1 s to 1 min), and at
 * once after a verify, the watch asks every secondary for its hello and
 * status, judges it as `resyncctl status` does, and tells it (a DRIFT
 * frame, to a peer that speaks it) how it is judged and what its last
 * verify found: a secondary's /health knows without asking anyone.
 *
 * Alerts go through the notifier's channels (email, webhook, command),
 * once per incident: an incident has a key ("verify:NODE",
 * "state:NODE:STATE", "disconnected:NODE") kept in the state file from
 * its alert until it is over (the node verified identical or resynced,
 * UpToDate again, connected again), so that neither another verify nor
 * a restart alerts it again. */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json-util.h"
#include "drift.h"
#include "resync/limits.h"
#include "resync/macro.h"

/* ---- incidents ---- */

static bool incident_has_locked(struct drift *d, const char *key)
{
	for (size_t i = 0; i < d->n_incidents; i++)
		if (!strcmp(d->incidents[i], key))
			return true;
	return false;
}

static bool incident_has(struct drift *d, const char *key)
{
	bool has;

	pthread_mutex_lock(&d->lock);
	has = incident_has_locked(d, key);
	pthread_mutex_unlock(&d->lock);
	return has;
}

void alert_raise(struct node *n, const char *key, json_object *payload)
{
	struct drift *d = n->drift;
	char *copy = strdup(key);
	bool fresh;

	pthread_mutex_lock(&d->lock);
	fresh = copy && !incident_has_locked(d, key) && d->n_incidents < DRIFT_INCIDENTS_MAX;
	if (fresh)
		d->incidents[d->n_incidents++] = copy;
	pthread_mutex_unlock(&d->lock);
	if (!fresh) {
		free(copy);
		json_object_put(payload);
		return;
	}
	drift_save(n); /* before it goes: a crash right after does not alert twice */
	log_warning("alert %s: %s", key, json_object_get_string(json_object_object_get(payload, "summary")));
	notify_submit(n->notify, payload);
}

void alert_clear(struct node *n, const char *key)
{
	struct drift *d = n->drift;
	bool found = false;
	size_t klen = strlen(key);

	if (!d)
		return;
	pthread_mutex_lock(&d->lock);
	/* A key ending in ':' clears every incident it begins. */
	for (size_t i = 0; i < d->n_incidents;) {
		bool match = key[klen - 1] == ':' ? !strncmp(d->incidents[i], key, klen)
						  : !strcmp(d->incidents[i], key);

		if (!match) {
			i++;
			continue;
		}
		free(d->incidents[i]);
		d->incidents[i] = d->incidents[--d->n_incidents];
		found = true;
	}
	pthread_mutex_unlock(&d->lock);
	if (found) {
		log_info("incident %s is over", key);
		drift_save(n);
	}
}

/* ---- payloads (notify.h's schema; type "alert") ---- */

static json_object *alert_payload(struct node *n, const char *alert, const char *result,
				  const char *summary, json_object *x)
{
	json_object *p = json_object_new_object(), *arr = json_object_new_array();
	char details[1024], fix[1024];

	snprintf(details, sizeof(details), "resyncctl --config %s status", n->cfg->path);
	snprintf(fix, sizeof(fix), "resyncctl --config %s resync --yes %s", n->cfg->path,
		 json_object_get_string(json_object_object_get(x, "name")));
	json_object_object_add(p, "version", json_object_new_int(1));
	json_object_object_add(p, "type", json_object_new_string("alert"));
	json_object_object_add(p, "alert", json_object_new_string(alert));
	json_object_object_add(p, "cluster", json_object_new_string(n->cfg->name));
	json_object_object_add(p, "node", json_object_new_string(n->self->name));
	json_object_object_add(p, "primary",
			       json_string_or_null(cluster_config_primary_name(n->cfg)));
	json_object_object_add(p, "result", json_object_new_string(result));
	json_object_object_add(p, "summary", json_object_new_string(summary));
	json_object_array_add(arr, x);
	json_object_object_add(p, "nodes", arr);
	json_object_object_add(p, "fix", json_object_new_string(fix));
	json_object_object_add(p, "details", json_object_new_string(details));
	return p;
}

void alert_verify(struct node *n, const struct node_config *nc)
{
	struct drift *d = n->drift;
	struct drift_node dn;
	char key[RESYNC_NAME_MAX + 16], summary[512], t[64];
	json_object *x;

	pthread_mutex_lock(&d->lock);
	dn = *drift_node_of(d, nc);
	pthread_mutex_unlock(&d->lock);
	snprintf(key, sizeof(key), "verify:%s", nc->name);
	if (!dn.verified || dn.failed)
		return;
	if (!dn.diff_bytes) {
		alert_clear(n, key);
		return;
	}
	snprintf(summary, sizeof(summary),
		 "verify found %" PRIu64 " bytes in %" PRIu64 " blocks of node '%s' differing from the primary '%s'",
		 dn.diff_bytes, dn.diff_blocks, nc->name, n->self->name);
	x = json_object_new_object();
	json_object_object_add(x, "name", json_object_new_string(nc->name));
	json_object_object_add(x, "result", json_object_new_string("differs"));
	json_object_object_add(x, "differing_bytes", json_object_new_uint64(dn.diff_bytes));
	json_object_object_add(x, "differing_blocks", json_object_new_uint64(dn.diff_blocks));
	json_object_object_add(x, "verify_time",
			       json_object_new_string(clock_format_utc(dn.verify_time * 1000000, false, t, sizeof(t))));
	json_object_object_add(x, "error", json_object_new_string(summary));
	alert_raise(n, key, alert_payload(n, "verify_differs", "differs", summary, x));
}

static void alert_state(struct node *n, const struct node_config *nc, enum meta_state st)
{
	char key[RESYNC_NAME_MAX + 32], prefix[RESYNC_NAME_MAX + 16], summary[512];
	json_object *x;

	snprintf(prefix, sizeof(prefix), "state:%s:", nc->name);
	if (st != META_STATE_OUTDATED && st != META_STATE_INCONSISTENT && st != META_STATE_DIVERGED) {
		if (st == META_STATE_UPTODATE)
			alert_clear(n, prefix);
		return;
	}
	snprintf(key, sizeof(key), "%s%s", prefix, meta_state_name(st));
	if (incident_has(n->drift, key))
		return;
	snprintf(summary, sizeof(summary), "node '%s' is %s (from the primary '%s''s view)%s",
		 nc->name, meta_state_name(st), n->self->name,
		 st == META_STATE_OUTDATED ? ": it lacks writes of the primary"
		 : st == META_STATE_DIVERGED ? ": it holds writes that the primary lacks"
					     : ": a resync stopped half-way");
	alert_clear(n, prefix); /* another state of the same node: a new incident */
	x = json_object_new_object();
	json_object_object_add(x, "name", json_object_new_string(nc->name));
	json_object_object_add(x, "result", json_object_new_string(meta_state_name(st)));
	json_object_object_add(x, "state_after", json_object_new_string(meta_state_name(st)));
	json_object_object_add(x, "error", json_object_new_string(summary));
	alert_raise(n, key, alert_payload(n, "state", meta_state_name(st), summary, x));
}

static void alert_disconnected(struct node *n, const struct node_config *nc, uint64_t down_usec,
			       const char *err)
{
	char key[RESYNC_NAME_MAX + 16], summary[1024];
	json_object *x;

	snprintf(key, sizeof(key), "disconnected:%s", nc->name);
	if (incident_has(n->drift, key))
		return;
	snprintf(summary, sizeof(summary), "node '%s' has been unreachable from the primary '%s' for %" PRIu64 " s: %s",
		 nc->name, n->self->name, down_usec / 1000000, err);
	x = json_object_new_object();
	json_object_object_add(x, "name", json_object_new_string(nc->name));
	json_object_object_add(x, "result", json_object_new_string("disconnected"));
	json_object_object_add(x, "seconds", json_object_new_double((double)down_usec / 1e6));
	json_object_object_add(x, "error", json_object_new_string(summary));
	alert_raise(n, key, alert_payload(n, "disconnected", "disconnected", summary, x));
}

/* ---- the watch ---- */

/* Tell the secondary how it is judged and what its last verify found. */
static int probe_tell(struct node *n, struct peer_conn *c, unsigned char *buf,
		      const struct drift_node *dn, enum meta_state st)
{
	struct wire_drift m = {.state = wire_state_from_meta(st)};
	uint16_t type;
	size_t len;
	int r;

	if (dn->verified && !dn->failed) {
		m.flags = WIRE_DRIFT_VERIFIED;
		m.verify_time = (uint64_t)MAX(dn->verify_time, (int64_t)0);
		m.differing_bytes = dn->diff_bytes;
		m.differing_blocks = MIN(dn->diff_blocks, dn->diff_bytes);
	}
	r = wire_drift_encode(&m, buf, RESYNC_WIRE_FRAME_MAX, &len);
	if (r >= 0)
		r = peer_conn_send_frame(c, WIRE_DRIFT, buf, len);
	if (r >= 0)
		r = peer_conn_recv_frame(c, &type, buf, RESYNC_WIRE_FRAME_MAX, &len);
	if (r >= 0 && type != WIRE_ACK)
		r = -EBADMSG;
	(void)n;
	return r;
}

static void probe(struct node *n, const struct node_config *nc, unsigned char *buf)
{
	struct drift *d = n->drift;
	struct drift_node *dn = drift_node_of(d, nc), copy;
	char err[RESYNC_WIRE_TEXT_MAX + 256] = "";
	struct peer_conn *c = NULL;
	struct wire_hello h;
	struct wire_status ws;
	enum meta_state st = META_STATE_UNKNOWN;
	uint64_t down = 0, now = clock_usec();
	bool running;
	int r;

	r = node_peer_open(n, nc, false, err, sizeof(err), &c, &h);
	if (r >= 0) {
		r = node_peer_status(c, buf, &ws);
		if (r < 0)
			snprintf(err, sizeof(err), "node '%s': no status: %s", nc->name, peer_conn_error(c));
	}
	if (atomic_load(&n->stopping)) {
		peer_conn_free(c);
		return;
	}
	event_publish_peer(n->bus, nc->name, r >= 0);
	if (r >= 0)
		st = node_status_judge(n, &h, &ws);
	pthread_mutex_lock(&d->lock);
	dn->probed = true;
	dn->connected = r >= 0;
	dn->judged = st;
	if (r < 0 && !dn->down_since)
		dn->down_since = now;
	else if (r >= 0)
		dn->down_since = 0;
	down = dn->down_since ? now - dn->down_since : 0;
	copy = *dn;
	pthread_mutex_unlock(&d->lock);
	if (r >= 0 && (h.features & node_features() & WIRE_FEATURE_DRIFT))
		(void)probe_tell(n, c, buf, &copy, st); /* said again at the next probe */
	peer_conn_free(c);
	if (r < 0) {
		if (n->cfg->alert_after_ms && down >= n->cfg->alert_after_ms * 1000)
			alert_disconnected(n, nc, down, err);
		return;
	}
	snprintf(err, sizeof(err), "disconnected:%s", nc->name);
	alert_clear(n, err);
	/* A resync's Inconsistent and the Outdated it is about to end are
	 * its own business: judged again after it. */
	pthread_mutex_lock(&n->lock);
	running = n->resync_running;
	pthread_mutex_unlock(&n->lock);
	if (!running)
		alert_state(n, nc, st);
}

void *watch_thread(void *arg)
{
	struct node *n = arg;
	struct drift *d = n->drift;
	unsigned char *buf = malloc(RESYNC_WIRE_FRAME_MAX);
	unsigned every = drift_probe_ms(n->cfg);

	if (!buf) {
		log_error("the watch over the secondaries cannot start: %s", strerror(ENOMEM));
		return NULL;
	}
	while (!atomic_load(&n->stopping)) {
		uint64_t next;

		for (size_t i = 0; i < n->cfg->n_nodes && !atomic_load(&n->stopping); i++)
			if (&n->cfg->nodes[i] != n->self)
				probe(n, &n->cfg->nodes[i], buf);
		next = clock_usec() + every * 1000ull;
		pthread_mutex_lock(&d->lock);
		while (!d->kick_probe && !atomic_load(&n->stopping) && clock_usec() < next) {
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += DRIFT_TICK_MS * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&d->cond, &d->lock, &ts);
		}
		d->kick_probe = false;
		pthread_mutex_unlock(&d->lock);
	}
	free(buf);
	return NULL;
}
