/* Drift detection (drift.h): lifecycle, what is kept in the state file,
 * and the secondary's side (the primary's DRIFT word, cleared by a
 * commit). */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "drift.h"
#include "node-int.h"
#include "resync/macro.h"

unsigned drift_probe_ms(const struct cluster_config *cfg)
{
	uint64_t ms = cfg->alert_after_ms ? cfg->alert_after_ms / 3 : DRIFT_PROBE_MAX_MS;

	return (unsigned)MIN(MAX(ms, (uint64_t)DRIFT_PROBE_MIN_MS), (uint64_t)DRIFT_PROBE_MAX_MS);
}

uint64_t drift_unmarked_bytes(struct node *n, uint64_t off, uint64_t len)
{
	struct meta *m = node_meta(n);
	struct meta_info mi;
	uint64_t bs, end = off + len, out = 0;

	meta_info_get(m, &mi);
	bs = mi.block_size;
	for (uint64_t b = off / bs; len && b * bs < end; b++)
		if (!meta_dirty_test(m, b)) /* false past the volume's end too */
			out += MIN(end, (b + 1) * bs) - MAX(off, b * bs);
	return out;
}

/* Of a verify job's differing bytes, those unmarked (drift_unmarked_bytes());
 * any not in its ranges count as unmarked. */
static uint64_t job_unmarked_bytes(struct node *n, const struct job *j)
{
	uint64_t in_ranges = 0, out = 0;

	for (size_t i = 0; i < j->ranges.n; i++) {
		in_ranges += j->ranges.v[i].len;
		out += drift_unmarked_bytes(n, j->ranges.v[i].off, j->ranges.v[i].len);
	}
	if (j->differing_bytes > in_ranges)
		out += j->differing_bytes - in_ranges;
	return MIN(out, j->differing_bytes);
}

bool drift_sleep(struct node *n, unsigned ms)
{
	for (unsigned slept = 0; slept < ms && !atomic_load(&n->stopping); slept += DRIFT_TICK_MS)
		usleep(MIN(ms - slept, (unsigned)DRIFT_TICK_MS) * 1000);
	return !atomic_load(&n->stopping);
}

void drift_save(struct node *n)
{
	pthread_mutex_lock(&n->lock);
	node_state_save_locked(n);
	pthread_mutex_unlock(&n->lock);
}

int drift_new(struct node *n)
{
	struct drift *d = calloc(1, sizeof(*d));

	if (!d)
		return -ENOMEM;
	d->nodes = calloc(n->cfg->n_nodes ? n->cfg->n_nodes : 1, sizeof(*d->nodes));
	if (!d->nodes) {
		free(d);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n->cfg->n_nodes; i++)
		d->nodes[i].judged = META_STATE_UNKNOWN;
	d->n = n;
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->cond, NULL);
	n->drift = d;
	return 0;
}

/* The primary watches its secondaries; with verify_interval, it verifies
 * them on that schedule. A secondary runs no thread of drift: the
 * primary's word comes to its sessions. */
void drift_start(struct node *n)
{
	struct drift *d = n->drift;
	int r;

	if (!d || !n->is_primary || n->cfg->n_nodes < 2)
		return;
	d->started = clock_usec();
	r = pthread_create(&d->watch_thread, NULL, watch_thread, n);
	if (r)
		log_error("cannot start the watch over the secondaries: %s", strerror(r));
	d->watch_started = !r;
	if (!n->cfg->verify_interval_ms)
		return;
	r = pthread_create(&d->verify_thread, NULL, verify_thread, n);
	if (r)
		log_error("cannot start the scheduled verify: %s", strerror(r));
	d->verify_started = !r;
}

void drift_stop(struct node *n)
{
	struct drift *d = n->drift;

	if (!d)
		return;
	pthread_mutex_lock(&d->lock);
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	if (d->verify_started)
		pthread_join(d->verify_thread, NULL);
	if (d->watch_started)
		pthread_join(d->watch_thread, NULL);
	d->verify_started = d->watch_started = false;
}

void drift_free(struct node *n)
{
	struct drift *d = n->drift;

	if (!d)
		return;
	drift_stop(n);
	for (size_t i = 0; i < d->n_incidents; i++)
		free(d->incidents[i]);
	pthread_cond_destroy(&d->cond);
	pthread_mutex_destroy(&d->lock);
	free(d->nodes);
	free(d);
	n->drift = NULL;
}

/* ---- the state file's "drift" member ----
 * {"last_verify": T, "last_verify_start": T,
 *  "verify": {NODE: {"time", "differing_bytes", "differing_blocks",
 *                    "bytes_compared", "resumed_from", "error"}},
 *  "progress": null | {NODE: {"offset", "differing_bytes",
 *                             "differing_blocks", "done"}},
 *  "self": null | {"time", "differing_bytes", "differing_blocks"},
 *  "incidents": [KEY, ...]} */

static int64_t jint(json_object *o, const char *key)
{
	json_object *v;

	return o && json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : 0;
}

static uint64_t juint(json_object *o, const char *key)
{
	json_object *v;

	return o && json_object_object_get_ex(o, key, &v) ? json_object_get_uint64(v) : 0;
}

void drift_state_load(struct node *n, json_object *state)
{
	struct drift *d = n->drift;
	json_object *o, *v, *x;

	if (!d || !json_object_object_get_ex(state, "drift", &o) || !json_object_is_type(o, json_type_object))
		return;
	pthread_mutex_lock(&d->lock);
	d->last_verify = jint(o, "last_verify");
	d->last_verify_start = jint(o, "last_verify_start");
	for (size_t i = 0; i < n->cfg->n_nodes; i++) {
		struct drift_node *dn = &d->nodes[i];
		const char *name = n->cfg->nodes[i].name;

		if (json_object_object_get_ex(o, "verify", &v) && json_object_object_get_ex(v, name, &x)) {
			dn->verified = true;
			dn->verify_time = jint(x, "time");
			dn->diff_bytes = juint(x, "differing_bytes");
			dn->diff_blocks = juint(x, "differing_blocks");
			/* Absent (an older state file): all of it, as then. */
			dn->diff_unmarked = json_object_object_get_ex(x, "unmarked_bytes", NULL)
						    ? juint(x, "unmarked_bytes")
						    : dn->diff_bytes;
			dn->compared = juint(x, "bytes_compared");
			dn->resumed_from = juint(x, "resumed_from");
			if (json_object_object_get_ex(x, "error", &v) && json_object_get_string(v)) {
				dn->failed = true;
				snprintf(dn->error, sizeof(dn->error), "%s", json_object_get_string(v));
			}
		}
		if (json_object_object_get_ex(o, "progress", &v) && json_object_is_type(v, json_type_object) &&
		    json_object_object_get_ex(v, name, &x)) {
			d->in_progress = true;
			dn->off = juint(x, "offset");
			dn->p_bytes = juint(x, "differing_bytes");
			dn->p_blocks = juint(x, "differing_blocks");
			dn->p_unmarked = json_object_object_get_ex(x, "unmarked_bytes", NULL)
						 ? juint(x, "unmarked_bytes")
						 : dn->p_bytes;
			dn->done = json_object_object_get_ex(x, "done", &v) && json_object_get_boolean(v);
		}
	}
	if (json_object_object_get_ex(o, "self", &v) && json_object_is_type(v, json_type_object)) {
		d->self_verified = true;
		d->self_verify_time = jint(v, "time");
		d->self_diff_bytes = juint(v, "differing_bytes");
		d->self_diff_blocks = juint(v, "differing_blocks");
	}
	if (json_object_object_get_ex(o, "incidents", &v) && json_object_is_type(v, json_type_array))
		for (size_t i = 0; i < json_object_array_length(v) && d->n_incidents < DRIFT_INCIDENTS_MAX; i++) {
			const char *k = json_object_get_string(json_object_array_get_idx(v, i));
			char *copy = k ? strdup(k) : NULL;

			if (copy)
				d->incidents[d->n_incidents++] = copy;
		}
	pthread_mutex_unlock(&d->lock);
}

void drift_state_save_locked(struct node *n, json_object *state)
{
	struct drift *d = n->drift;
	json_object *o, *ver, *prog = NULL, *inc;

	if (!d)
		return;
	o = json_object_new_object();
	ver = json_object_new_object();
	inc = json_object_new_array();
	pthread_mutex_lock(&d->lock);
	json_object_object_add(o, "last_verify", json_object_new_int64(d->last_verify));
	json_object_object_add(o, "last_verify_start", json_object_new_int64(d->last_verify_start));
	if (d->in_progress)
		prog = json_object_new_object();
	for (size_t i = 0; i < n->cfg->n_nodes; i++) {
		struct drift_node *dn = &d->nodes[i];
		const char *name = n->cfg->nodes[i].name;

		if (dn->verified) {
			json_object *x = json_object_new_object();

			json_object_object_add(x, "time", json_object_new_int64(dn->verify_time));
			json_object_object_add(x, "differing_bytes", json_object_new_uint64(dn->diff_bytes));
			json_object_object_add(x, "differing_blocks", json_object_new_uint64(dn->diff_blocks));
			json_object_object_add(x, "unmarked_bytes", json_object_new_uint64(dn->diff_unmarked));
			json_object_object_add(x, "bytes_compared", json_object_new_uint64(dn->compared));
			json_object_object_add(x, "resumed_from", json_object_new_uint64(dn->resumed_from));
			if (dn->failed)
				json_object_object_add(x, "error", json_object_new_string(dn->error));
			json_object_object_add(ver, name, x);
		}
		if (prog && &n->cfg->nodes[i] != n->self) {
			json_object *x = json_object_new_object();

			json_object_object_add(x, "offset", json_object_new_uint64(dn->off));
			json_object_object_add(x, "differing_bytes", json_object_new_uint64(dn->p_bytes));
			json_object_object_add(x, "differing_blocks", json_object_new_uint64(dn->p_blocks));
			json_object_object_add(x, "unmarked_bytes", json_object_new_uint64(dn->p_unmarked));
			json_object_object_add(x, "done", json_object_new_boolean(dn->done));
			json_object_object_add(prog, name, x);
		}
	}
	json_object_object_add(o, "verify", ver);
	json_object_object_add(o, "progress", prog);
	if (d->self_verified) {
		json_object *x = json_object_new_object();

		json_object_object_add(x, "time", json_object_new_int64(d->self_verify_time));
		json_object_object_add(x, "differing_bytes", json_object_new_uint64(d->self_diff_bytes));
		json_object_object_add(x, "differing_blocks", json_object_new_uint64(d->self_diff_blocks));
		json_object_object_add(o, "self", x);
	} else {
		json_object_object_add(o, "self", NULL);
	}
	for (size_t i = 0; i < d->n_incidents; i++)
		json_object_array_add(inc, json_object_new_string(d->incidents[i]));
	json_object_object_add(o, "incidents", inc);
	pthread_mutex_unlock(&d->lock);
	json_object_object_add(state, "drift", o);
}

/* ---- a resync and the scheduled verify ---- */

void drift_yield(struct node *n)
{
	struct drift *d = n->drift;

	if (!d)
		return;
	pthread_mutex_lock(&d->lock);
	while (d->busy)
		pthread_cond_wait(&d->cond, &d->lock);
	pthread_mutex_unlock(&d->lock);
}

void drift_note_run(struct node *n, const struct job *jobs, size_t nj, bool write, bool plan)
{
	struct drift *d = n->drift;
	int64_t now = time(NULL);
	bool verified = false;
	uint64_t *unmarked;

	if (!d || plan)
		return;
	/* Measured before the lock: a volume that differs all over has many
	 * blocks to look up. Without memory, all of it counts as unmarked. */
	unmarked = write ? NULL : calloc(nj ? nj : 1, sizeof(*unmarked));
	for (size_t i = 0; unmarked && i < nj; i++)
		unmarked[i] = jobs[i].r < 0 ? 0 : job_unmarked_bytes(n, &jobs[i]);
	pthread_mutex_lock(&d->lock);
	for (size_t i = 0; i < nj; i++) {
		const struct job *j = &jobs[i];
		struct drift_node *dn = drift_node_of(d, j->peer);

		if (write) {
			if (j->r < 0)
				continue;
			/* Rewritten: what a verify found there is gone, and so
			 * is what the scheduled verify found so far. */
			if (dn->verified)
				dn->diff_bytes = dn->diff_blocks = dn->diff_unmarked = 0;
			dn->p_bytes = dn->p_blocks = dn->p_unmarked = 0;
			continue;
		}
		/* A compare of the whole volume through the hash tree. */
		dn->verified = true;
		dn->verify_time = now;
		dn->failed = j->r < 0;
		snprintf(dn->error, sizeof(dn->error), "%s", j->r < 0 ? j->err : "");
		dn->diff_bytes = j->r < 0 ? 0 : j->differing_bytes;
		dn->diff_blocks = j->r < 0 ? 0 : j->differing_blocks;
		dn->diff_unmarked = j->r < 0 ? 0 : unmarked ? unmarked[i] : j->differing_bytes;
		dn->compared = j->bytes_compared;
		dn->resumed_from = 0;
		verified = true;
	}
	if (verified) {
		d->last_verify = d->last_verify_start = now;
		d->kick_probe = true; /* the secondaries hear of it now */
		pthread_cond_broadcast(&d->cond);
	}
	pthread_mutex_unlock(&d->lock);
	free(unmarked);
	for (size_t i = 0; i < nj; i++) {
		char key[RESYNC_NAME_MAX + 16];

		if (!write && jobs[i].r >= 0) {
			alert_verify(n, jobs[i].peer);
		} else if (write && jobs[i].r >= 0) {
			snprintf(key, sizeof(key), "verify:%s", jobs[i].peer->name);
			alert_clear(n, key);
		}
	}
	if (write || verified)
		drift_save(n);
}

bool drift_verify_differs(struct node *n, const struct node_config *nc)
{
	struct drift *d = n->drift;
	bool differs;

	if (!d)
		return false;
	pthread_mutex_lock(&d->lock);
	differs = drift_node_of(d, nc)->verified && drift_node_of(d, nc)->diff_unmarked;
	/* What the scheduled verify in progress found so far counts too. */
	differs |= d->in_progress && drift_node_of(d, nc)->p_unmarked;
	pthread_mutex_unlock(&d->lock);
	return differs;
}

/* ---- the secondary's side ---- */

void drift_commit_note_locked(struct node *n)
{
	struct drift *d = n->drift;

	if (!d)
		return;
	pthread_mutex_lock(&d->lock);
	d->self_verified = false;
	d->self_verify_time = 0;
	d->self_diff_bytes = d->self_diff_blocks = 0;
	d->self_judged_known = true;
	d->self_judged = META_STATE_UPTODATE;
	d->self_judged_at = clock_usec();
	pthread_mutex_unlock(&d->lock);
}

int session_drift(struct session *s, size_t len)
{
	struct node *n = s->n;
	struct drift *d = n->drift;
	struct wire_drift m;
	unsigned char buf[64];
	bool changed;
	size_t olen;
	int r;

	r = wire_drift_decode(s->in, len, &m);
	if (r < 0)
		return r;
	if (!d)
		return -EOPNOTSUPP;
	pthread_mutex_lock(&d->lock);
	changed = (m.flags & WIRE_DRIFT_VERIFIED) &&
		  (!d->self_verified || d->self_verify_time != (int64_t)m.verify_time ||
		   d->self_diff_bytes != m.differing_bytes);
	if (changed) {
		d->self_verified = true;
		d->self_verify_time = (int64_t)m.verify_time;
		d->self_diff_bytes = m.differing_bytes;
		d->self_diff_blocks = m.differing_blocks;
	}
	d->self_judged_known = true;
	d->self_judged = meta_state_from_wire(m.state);
	d->self_judged_at = clock_usec();
	pthread_mutex_unlock(&d->lock);
	if (changed) {
		if (m.differing_bytes)
			log_warning("the primary's verify found %" PRIu64 " bytes in %" PRIu64
				    " blocks of this volume differing from its own",
				    m.differing_bytes, m.differing_blocks);
		drift_save(n);
	}
	r = wire_offset_encode(0, buf, sizeof(buf), &olen);
	if (r < 0)
		return r;
	return peer_conn_send_frame(s->c, WIRE_ACK, buf, olen);
}
