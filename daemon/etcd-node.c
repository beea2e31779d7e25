/* The node and etcd (issue 14; DESIGN.md, "Choices already made"): the
 * primary is the value of the leader key (Patroni's layout), read at
 * start and watched; a resync holds a lease-backed lock under the
 * prefix from before it fences anything until it ends; the node's state
 * is published under the prefix for other tools.
 *
 * Threads (both owned here, joined by node_etcd_stop()):
 *   watcher  reads the leader key, then watches it; a change moves the
 *            primary (cfg->primary, n->is_primary) and stops a resync
 *            this node runs; a broken stream is re-read through the
 *            other endpoints, and only etcd lost as a whole stops it.
 *   ticker   keeps the lock's lease alive while a resync holds it, and
 *            publishes the node's summary when it changed.
 * A resync that etcd stops is cancelled (n->cancel: its jobs stop at the
 * next frame or checkpoint), and the gate before each COMMIT asks etcd
 * again, so nothing commits once the leader moved or the lock is gone. */
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "etcd-int.h"
#include "resync/clock.h"
#include "resync/macro.h"

void node_etcd_reachable(struct node_etcd *e, bool ok, const char *err)
{
	pthread_mutex_lock(&e->lock);
	if (ok != e->reachable)
		log_printf(ok ? LOG_INFO : LOG_WARNING, "etcd %s%s%s",
			   ok ? "reachable again" : "unreachable", ok ? "" : ": ", ok ? "" : err);
	e->reachable = ok;
	snprintf(e->err, sizeof(e->err), "%s", ok ? "" : err);
	pthread_mutex_unlock(&e->lock);
}

/* A GET tried ETCD_RETRIES times (a member lost mid-election answers
 * nothing for a moment). */
int node_etcd_get(struct node_etcd *e, const char *key, struct etcd_kv *ret, char *err,
		  size_t errlen)
{
	int r = -EIO;

	for (int i = 0; i < ETCD_RETRIES && !atomic_load(&e->stop); i++) {
		if (i) {
			struct timespec ts = {0, ETCD_RETRY_MS * 1000000L};

			nanosleep(&ts, NULL);
		}
		r = etcd_get(e->cli, key, ret, err, errlen);
		if (r != -EIO)
			break;
	}
	node_etcd_reachable(e, r >= 0, err);
	return r;
}

void node_etcd_abort(struct node *n, const char *fmt, ...)
{
	struct node_etcd *e = n->etcd;
	va_list ap;

	pthread_mutex_lock(&e->lock);
	if (e->run && !e->aborted) {
		e->aborted = true;
		va_start(ap, fmt);
		vsnprintf(e->why, sizeof(e->why), fmt, ap);
		va_end(ap);
		log_error("resync of cluster '%s' stopped: %s", n->cfg->name, e->why);
		atomic_store(&n->cancel, true);
	}
	pthread_mutex_unlock(&e->lock);
}

/* The leader key says value (NULL: absent): the cluster's primary is
 * that node, or none when it names no node of this cluster. */
static void node_etcd_leader(struct node *n, const char *value)
{
	struct cluster_config *cfg = (struct cluster_config *)n->cfg;
	const struct node_config *nc = value ? cluster_config_node(cfg, value) : NULL;
	char *was = __atomic_load_n(&cfg->primary, __ATOMIC_ACQUIRE);
	char *now = nc ? nc->name : NULL;
	bool me = nc == n->self;
	int r;

	if (value && !nc)
		log_warning(
		    "etcd's leader key '%s' names '%s', not a node of cluster '%s': no primary",
		    cfg->etcd->leader_key, value, cfg->name);
	if (was == now)
		return;
	if (was && n->is_primary && !me)
		node_etcd_abort(n,
				"etcd's leader key changed to %s%s%s during the resync: this "
				"node is no longer the primary, and nothing was committed from it",
				now ? "'" : "", now ? now : "nothing", now ? "'" : "");
	/* The primary's name first: from here a secondary's session refuses
	 * the old primary's COMMIT (node_etcd_commit_check()), so none lands
	 * after this node forked its generation as the new primary. */
	__atomic_store_n(&cfg->primary, now, __ATOMIC_RELEASE);
	/* A session of the old primary writing this volume stops at its
	 * next frame (session_write_ensure()). */
	node_role_changed(n);
	if (!me) {
		pthread_mutex_lock(&n->lock);
		n->promote_refused[0] = 0; /* no longer asked to */
		pthread_mutex_unlock(&n->lock);
	} else if (!n->is_primary && n->meta) {
		/* Inconsistent or being rewritten: refused, said, and this
		 * node stays a secondary while the key names it; the leader
		 * key is the coordinator's, not this node's to give away. */
		r = node_primary_init(n);
		if (r == -EUCLEAN)
			me = false;
		else if (r < 0)
			log_error("cannot start a generation as the new primary of '%s'",
				  n->self->volume);
	}
	n->is_primary = me;
	log_info("primary of cluster '%s' from etcd's leader key: %s (this node is %s)", cfg->name,
		 now ? now : "none",
		 me		 ? "primary"
		 : nc == n->self ? "secondary: it refused the role"
				 : "secondary");
}

int node_etcd_new(struct node *n)
{
	const struct etcd_config *ec = n->cfg->etcd;
	struct node_etcd *e;
	struct etcd_kv kv = {0};
	char err[ETCD_WHY_MAX];
	int r;

	if (!ec)
		return 0;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	n->etcd = e;
	pthread_mutex_init(&e->lock, NULL);
	pthread_cond_init(&e->cond, NULL);
	e->reachable = true;
	if (asprintf(&e->lock_key, "%s/lock", ec->prefix) < 0)
		e->lock_key = NULL;
	if (asprintf(&e->self_key, "%s/nodes/%s", ec->prefix, n->self->name) < 0)
		e->self_key = NULL;
	if (!e->lock_key || !e->self_key)
		return -ENOMEM;
	r = etcd_new(ec, &e->cli);
	if (r < 0)
		return r;
	/* The primary before the volume opens (a primary starts its
	 * generation there); etcd unreachable: none until it answers. */
	r = node_etcd_get(e, ec->leader_key, &kv, err, sizeof(err));
	if (r < 0) {
		log_error("etcd unreachable at start (%s): the primary is unknown, and no resync "
			  "starts until etcd answers",
			  err);
		return 0;
	}
	node_etcd_leader(n, kv.value);
	etcd_kv_release(&kv);
	return 0;
}

static void node_etcd_sleep(struct node_etcd *e, unsigned ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L)
		ts.tv_sec++, ts.tv_nsec -= 1000000000L;
	pthread_mutex_lock(&e->lock);
	if (!atomic_load(&e->stop))
		pthread_cond_timedwait(&e->cond, &e->lock, &ts);
	pthread_mutex_unlock(&e->lock);
}

static void node_etcd_watched(void *arg, const char *value, int64_t revision)
{
	struct node *n = arg;
	bool run, writing;

	(void)revision;
	/* Test failpoints: a watch that lags behind the whole run, so that
	 * only the checks before the commit see the change; on a secondary,
	 * behind the whole rewrite (etcd-deaf-writing: the primary's own
	 * gate alone is tested). */
	pthread_mutex_lock(&n->etcd->lock);
	run = n->etcd->run;
	pthread_mutex_unlock(&n->etcd->lock);
	pthread_mutex_lock(&n->lock);
	writing = n->writing;
	pthread_mutex_unlock(&n->lock);
	if ((run && (node_failpoint("etcd-deaf") || node_failpoint("etcd-deaf-nogate"))) ||
	    (writing && node_failpoint("etcd-deaf-writing"))) {
		log_warning("failpoint: the leader key's change to '%s' ignored during the resync",
			    value ? value : "");
		return;
	}
	node_etcd_leader(n, value);
}

static void *node_etcd_watcher(void *arg)
{
	struct node *n = arg;
	struct node_etcd *e = n->etcd;
	const char *key = n->cfg->etcd->leader_key;
	char err[ETCD_WHY_MAX];

	while (!atomic_load(&e->stop)) {
		struct etcd_kv kv = {0};
		int r = node_etcd_get(e, key, &kv, err, sizeof(err));

		if (r < 0) {
			if (atomic_load(&e->stop))
				break;
			node_etcd_abort(n, "etcd is unreachable (%s); nothing was committed", err);
			node_etcd_sleep(e, 500);
			continue;
		}
		node_etcd_leader(n, kv.value);
		etcd_kv_release(&kv);
		r = etcd_watch(e->cli, key, kv.revision + 1, node_etcd_watched, n, &e->stop, err,
			       sizeof(err));
		if (r < 0) {
			log_warning("%s; reading the leader key again", err);
			node_etcd_sleep(e, ETCD_RETRY_MS / 3); /* never a busy loop */
		}
	}
	return NULL;
}

/* The node's summary, as other tools read it under the prefix. */
static char *node_etcd_summary(struct node *n)
{
	json_object *o = json_object_new_object();
	struct meta_info mi;
	char u[40];
	int64_t last;
	char *s;

	if (!o)
		return NULL;
	meta_info_get(node_meta(n), &mi);
	pthread_mutex_lock(&n->lock);
	last = n->last_resync;
	if (n->promote_refused[0]) /* for the coordinator: choose another node */
		json_object_object_add(o, "promotion_refused",
				       json_object_new_string(n->promote_refused));
	pthread_mutex_unlock(&n->lock);
	json_object_object_add(o, "node", json_object_new_string(n->self->name));
	json_object_object_add(o, "role",
			       json_object_new_string(n->is_primary ? "primary" : "secondary"));
	json_object_object_add(o, "state", json_object_new_string(meta_state_name(mi.state)));
	json_object_object_add(
	    o, "generation",
	    json_object_new_string(meta_uuid_format(&mi.generation, u, sizeof(u))));
	json_object_object_add(o, "last_resync", last ? json_object_new_int64(last) : NULL);
	s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return s;
}

static void node_etcd_publish(struct node *n)
{
	struct node_etcd *e = n->etcd;
	char *s = node_etcd_summary(n), err[ETCD_WHY_MAX];
	uint64_t now = clock_usec();
	bool same;

	if (!s)
		return;
	/* Not while etcd is unreachable: the watcher finds it back. */
	pthread_mutex_lock(&e->lock);
	same = !e->reachable || (e->published && !strcmp(e->published, s) &&
				 now - e->published_at < ETCD_PUBLISH_EVERY_S * 1000000ull);
	pthread_mutex_unlock(&e->lock);
	if (same || etcd_put(e->cli, e->self_key, s, 0, err, sizeof(err)) < 0) {
		free(s);
		return;
	}
	pthread_mutex_lock(&e->lock);
	free(e->published);
	e->published = s;
	e->published_at = now;
	pthread_mutex_unlock(&e->lock);
}

/* One keep-alive of the lock's lease when due. */
static void node_etcd_keepalive(struct node *n)
{
	struct node_etcd *e = n->etcd;
	char err[ETCD_WHY_MAX];
	int64_t lease, ttl = 0;
	int r = -EIO;

	pthread_mutex_lock(&e->lock);
	lease = e->run && !e->aborted && clock_usec() >= e->next_keepalive ? e->lease : 0;
	pthread_mutex_unlock(&e->lock);
	if (!lease)
		return;
	for (int i = 0; i < ETCD_RETRIES && r == -EIO && !atomic_load(&e->stop); i++) {
		if (i)
			node_etcd_sleep(e, ETCD_RETRY_MS);
		r = etcd_lease_keepalive(e->cli, lease, &ttl, err, sizeof(err));
	}
	if (r < 0) {
		node_etcd_reachable(e, false, err);
		node_etcd_abort(n,
				"etcd is unreachable (%s): the resync lock cannot be kept; "
				"nothing was committed",
				err);
		return;
	}
	if (ttl <= 0) {
		node_etcd_abort(n,
				"the resync lock's lease expired in etcd; nothing was committed");
		return;
	}
	pthread_mutex_lock(&e->lock);
	e->next_keepalive = clock_usec() + (uint64_t)n->cfg->etcd->lock_ttl_s * 1000000ull / 3;
	pthread_mutex_unlock(&e->lock);
}

static void *node_etcd_ticker(void *arg)
{
	struct node *n = arg;
	struct node_etcd *e = n->etcd;

	while (!atomic_load(&e->stop)) {
		node_etcd_keepalive(n);
		node_etcd_publish(n);
		node_etcd_sleep(e, ETCD_TICK_MS);
	}
	return NULL;
}

void node_etcd_start(struct node *n)
{
	struct node_etcd *e = n->etcd;

	if (!e)
		return;
	e->watcher_started = !pthread_create(&e->watcher, NULL, node_etcd_watcher, n);
	e->ticker_started = !pthread_create(&e->ticker, NULL, node_etcd_ticker, n);
	if (!e->watcher_started || !e->ticker_started)
		log_error("cannot start the etcd threads: the primary is not followed");
}

void node_etcd_stop(struct node *n)
{
	struct node_etcd *e = n->etcd;

	if (!e)
		return;
	pthread_mutex_lock(&e->lock);
	atomic_store(&e->stop, true);
	pthread_cond_broadcast(&e->cond);
	pthread_mutex_unlock(&e->lock);
	if (e->cli)
		etcd_watch_interrupt(e->cli);
	if (e->watcher_started)
		pthread_join(e->watcher, NULL);
	if (e->ticker_started)
		pthread_join(e->ticker, NULL);
	e->watcher_started = e->ticker_started = false;
}

void node_etcd_free(struct node *n)
{
	struct node_etcd *e = n->etcd;

	if (!e)
		return;
	node_etcd_stop(n);
	/* The primary pointed into this config's nodes: let go of it. */
	__atomic_store_n(&((struct cluster_config *)n->cfg)->primary, NULL, __ATOMIC_RELEASE);
	etcd_free(e->cli);
	free(e->lock_key);
	free(e->self_key);
	free(e->published);
	pthread_cond_destroy(&e->cond);
	pthread_mutex_destroy(&e->lock);
	free(e);
	n->etcd = NULL;
}
