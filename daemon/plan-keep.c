/* A plan's connections and walks, kept a short while for the resync that
 * follows it (issue 18). `resyncctl resync` asks for a plan first (a
 * compare that writes nothing), shows it, and after the confirmation
 * asks for the resync: across a WAN the second request would pay the
 * connect, the TLS handshake, the hellos and the whole walk again. The
 * plan's result carries a token; the resync that presents it takes the
 * plan's connections (the hellos and the status are exchanged again on
 * them, WIRE_FEATURE_REHELLO: one round trip) and each secondary's walk
 * memo (job-walk.c: the walk ends at its first level when that level and
 * this volume's tree are the plan's). Nothing of the plan is trusted that
 * the resync does not check again: the hellos and status are new, the
 * secondary's tree is taken from its cache only while its image is
 * unchanged, and the memo only serves when the first level the
 * secondary sends now is the one the plan saw.
 *
 * One plan at a time. Any other run (a verify, another plan, a resync
 * without the token or with another one) lets it go; so does the expiry
 * (NODE_PLAN_KEEP_MS, or half the session_timeout when shorter, so that
 * the secondaries' sessions never time out first), on a thread of its
 * own that closes the connections: the secondaries' sessions end and
 * put their trees back into their caches. The run's side (what a plan
 * keeps, and the first level asked for early) is at the end. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "job-walk.h"
#include "resync-int.h"
#include "resync/limits.h"
#include "resync/macro.h"

struct plan_keep {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* a plan kept or taken, or the stop */
	pthread_t t;
	bool started; /* t runs; protected by lock */
	bool stop;    /* protected by lock */
	/* The kept plan (n == 0: none); protected by lock. */
	char token[NODE_PLAN_TOKEN_MAX];
	uint64_t expires; /* clock_usec() */
	struct plan_kept *v;
	size_t n;
};

void plan_kept_free(struct plan_kept *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++) {
		peer_conn_free(v[i].c);
		walk_memo_release(&v[i].memo);
	}
	free(v);
}

/* The kept plan, taken out (closed and freed by the caller, outside the
 * lock: a close may take a moment). */
static void keep_take_locked(struct plan_keep *k, struct plan_kept **ret_v, size_t *ret_n)
{
	*ret_v = k->v;
	*ret_n = k->n;
	k->v = NULL;
	k->n = 0;
	k->expires = 0;
	k->token[0] = 0;
}

/* Closes the kept plan at its expiry. */
static void *keep_thread(void *arg)
{
	struct node *n = arg;
	struct plan_keep *k = n->keep;

	pthread_mutex_lock(&k->lock);
	while (!k->stop) {
		uint64_t now = clock_usec();
		struct plan_kept *v;
		size_t nv;

		if (k->n && now >= k->expires) {
			keep_take_locked(k, &v, &nv);
			pthread_mutex_unlock(&k->lock);
			log_info("the plan's connections to %zu secondaries closed: no resync took "
				 "them in time",
				 nv);
			plan_kept_free(v, nv);
			pthread_mutex_lock(&k->lock);
			continue;
		}
		if (!k->n) {
			pthread_cond_wait(&k->cond, &k->lock);
		} else {
			struct timespec ts;
			uint64_t wait = k->expires - now;

			clock_gettime(CLOCK_MONOTONIC, &ts);
			ts.tv_sec += (time_t)(wait / 1000000);
			ts.tv_nsec += (long)(wait % 1000000) * 1000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_cond_timedwait(&k->cond, &k->lock, &ts);
		}
	}
	pthread_mutex_unlock(&k->lock);
	return NULL;
}

int node_plan_keep_new(struct node *n)
{
	struct plan_keep *k = calloc(1, sizeof(*k));
	pthread_condattr_t ca;

	if (!k)
		return -ENOMEM;
	pthread_mutex_init(&k->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&k->cond, &ca);
	pthread_condattr_destroy(&ca);
	n->keep = k;
	return 0;
}

void node_plan_keep_stop(struct node *n)
{
	struct plan_keep *k = n->keep;
	struct plan_kept *v;
	size_t nv;
	bool joined;

	if (!k)
		return;
	pthread_mutex_lock(&k->lock);
	k->stop = true;
	joined = k->started;
	k->started = false;
	keep_take_locked(k, &v, &nv);
	pthread_cond_broadcast(&k->cond);
	pthread_mutex_unlock(&k->lock);
	if (joined)
		pthread_join(k->t, NULL);
	plan_kept_free(v, nv);
}

void node_plan_keep_free(struct node *n)
{
	struct plan_keep *k = n->keep;

	if (!k)
		return;
	node_plan_keep_stop(n);
	pthread_cond_destroy(&k->cond);
	pthread_mutex_destroy(&k->lock);
	free(k);
	n->keep = NULL;
}

/* How long a plan is kept: NODE_PLAN_KEEP_MS, or half the secondaries'
 * session_timeout when that is shorter (their sessions wait for the
 * resync's first frame that long). */
static uint64_t keep_usec(const struct cluster_config *cfg)
{
	uint64_t ms = NODE_PLAN_KEEP_MS;

	if (cfg->session_timeout_ms && cfg->session_timeout_ms / 2 < ms)
		ms = cfg->session_timeout_ms / 2;
	return ms * 1000;
}

int node_plan_keep_put(struct node *n, struct plan_kept *v, size_t nv, char *ret_token)
{
	struct plan_keep *k = n->keep;
	struct plan_kept *old;
	struct meta_uuid u;
	size_t nold;
	int r;

	ret_token[0] = 0;
	if (!k || !nv || atomic_load(&n->stopping)) {
		plan_kept_free(v, nv);
		return k ? 0 : -EOPNOTSUPP;
	}
	r = meta_uuid_random(&u);
	if (r < 0) {
		plan_kept_free(v, nv);
		return r;
	}
	pthread_mutex_lock(&k->lock);
	if (k->stop) {
		pthread_mutex_unlock(&k->lock);
		plan_kept_free(v, nv);
		return -ECANCELED;
	}
	if (!k->started) {
		k->started = !pthread_create(&k->t, NULL, keep_thread, n);
		if (!k->started) {
			pthread_mutex_unlock(&k->lock);
			plan_kept_free(v, nv);
			return -EAGAIN;
		}
	}
	keep_take_locked(k, &old, &nold);
	meta_uuid_format(&u, k->token, sizeof(k->token));
	k->v = v;
	k->n = nv;
	k->expires = clock_usec() + keep_usec(n->cfg);
	snprintf(ret_token, NODE_PLAN_TOKEN_MAX, "%s", k->token);
	pthread_cond_broadcast(&k->cond);
	pthread_mutex_unlock(&k->lock);
	plan_kept_free(old, nold);
	return 0;
}

bool node_plan_keep_take(struct node *n, const char *token, struct plan_kept **ret_v, size_t *ret_n)
{
	struct plan_keep *k = n->keep;
	struct plan_kept *v;
	size_t nv;
	bool ok;

	*ret_v = NULL;
	*ret_n = 0;
	if (!k)
		return false;
	pthread_mutex_lock(&k->lock);
	ok = k->n && token && !strcmp(token, k->token) && clock_usec() < k->expires;
	keep_take_locked(k, &v, &nv);
	pthread_cond_broadcast(&k->cond);
	pthread_mutex_unlock(&k->lock);
	if (!ok) {
		if (nv)
			log_info("the plan's connections to %zu secondaries closed: %s", nv,
				 token
				     ? "the resync's plan_token is not the kept plan's, or expired"
				     : "another run started");
		plan_kept_free(v, nv);
		return false;
	}
	*ret_v = v;
	*ret_n = nv;
	return true;
}

/* ---- the run's side (resync-int.h) ---- */

/* The first levels asked for early (job_open_thread(), a resync with its
 * plan's walk), once this run's seed and tree are known: a job whose
 * tree is the memo's (same seed and shape) has its prefetch in flight;
 * any other reads the reply and drops it (a round trip, when this
 * volume changed since the plan, or the job is no longer full). */
void resync_early_settle(struct resync_run *run, uint64_t nl)
{
	for (size_t i = 0; i < run->nj; i++) {
		struct job *j = &run->jobs[i];
		const struct walk_memo *m = j->memo_in;
		const struct early_geom *e = &run->early;
		uint64_t seed, nleaves;
		uint32_t leaf, leaf_wire;
		unsigned fanout;
		uint16_t type;
		size_t len;

		if (!j->early_first)
			continue;
		j->early_first = false;
		if (j->early_run) { /* job-early.c: the run's, page leaves named */
			seed = e->seed;
			fanout = e->fanout;
			leaf = leaf_wire = e->leaf;
			nleaves = e->nleaves;
		} else {
			seed = m->seed;
			fanout = m->fanout;
			leaf = m->leaf;
			leaf_wire = m->leaf_wire;
			nleaves = m->nleaves;
		}
		j->early_run = false;
		if (j->opened && j->mode == JOB_FULL && seed == run->o.seed &&
		    fanout == run->fanout && leaf == run->o.block_size && nleaves == nl &&
		    leaf_wire == job_leaf_wire(j)) {
			j->prefetched = true;
			continue;
		}
		/* Every part's reply (job_walk_first_send()); a failure shows
		 * again at the job's next request. */
		for (unsigned k = 0; j->opened && k < job_walk_first_parts(j->first_req.count); k++)
			if (job_recv(j, j->c, j->buf, &type, &len) < 0)
				break;
	}
}

/* A plan's connections and walks kept for the resync that presents the
 * token (plan-keep.c): each job's that ended well, to a peer that can
 * say its hellos again. The token goes into the result (none kept: no
 * token). */
void resync_keep_plan(struct resync_run *run, json_object *res)
{
	_cleanup_free_ struct plan_kept *v = calloc(run->nj ? run->nj : 1, sizeof(*v));
	char token[NODE_PLAN_TOKEN_MAX];
	size_t nv = 0;
	int r;

	if (!v || !res)
		return;
	for (size_t i = 0; i < run->nj; i++) {
		struct job *j = &run->jobs[i];

		if (!j->keep_conn || j->r < 0 || !j->c)
			continue;
		v[nv].peer = j->peer;
		v[nv].c = TAKE_PTR(j->c);
		v[nv].memo = j->memo;
		memset(&j->memo, 0, sizeof(j->memo));
		nv++;
	}
	if (!nv)
		return;
	r = node_plan_keep_put(run->n, TAKE_PTR(v), nv, token);
	if (r < 0 || !token[0])
		return;
	json_object_object_add(res, "plan_token", json_object_new_string(token));
}
