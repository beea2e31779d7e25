/* The cluster-wide resync lock in etcd (issue 14): a key under the
 * prefix, created only when absent and bound to a lease that the node's
 * ticker keeps alive (etcd-node.c). A crashed holder's lock goes when its
 * lease expires (lock_ttl), never before. Also the gate asked before each
 * secondary's COMMIT, and what status shows of etcd. */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "etcd-int.h"
#include "resync/clock.h"
#include "resync/macro.h"

/* The lock's value: who holds it, since when, for which secondaries. */
static char *lock_value(struct node *n, json_object *req)
{
	const struct cluster_config *cfg = n->cfg;
	json_object *o = json_object_new_object(), *arr = json_object_new_array(), *names = NULL;
	char when[64];
	time_t now = time(NULL);
	struct tm tm;
	char *s;

	if (!o || !arr) {
		json_object_put(o);
		json_object_put(arr);
		return NULL;
	}
	json_object_object_get_ex(req, "nodes", &names);
	for (size_t i = 0; i < cfg->n_nodes; i++) {
		const struct node_config *nc = &cfg->nodes[i];
		bool named = !names || !json_object_is_type(names, json_type_array);

		for (size_t k = 0; !named && k < json_object_array_length(names); k++)
			named = !strcmp(json_object_get_string(json_object_array_get_idx(names, k))
					    ?: "",
					nc->name);
		if (nc != n->self && named)
			json_object_array_add(arr, json_object_new_string(nc->name));
	}
	gmtime_r(&now, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	json_object_object_add(o, "holder", json_object_new_string(n->self->name));
	json_object_object_add(o, "started", json_object_new_int64((int64_t)now));
	json_object_object_add(o, "started_text", json_object_new_string(when));
	json_object_object_add(o, "secondaries", arr);
	s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return s;
}

/* "node 'x' since T (secondaries: a, b)" of a lock's value. */
static void lock_describe(const char *value, char *buf, size_t len)
{
	json_object *o = json_tokener_parse(value), *h, *t, *s;
	size_t off;

	if (!o || !json_object_object_get_ex(o, "holder", &h)) {
		snprintf(buf, len, "'%s'", value);
		json_object_put(o);
		return;
	}
	off = (size_t)snprintf(buf, len, "node '%s'", json_object_get_string(h));
	if (off < len && json_object_object_get_ex(o, "started_text", &t))
		off +=
		    (size_t)snprintf(buf + off, len - off, " since %s", json_object_get_string(t));
	if (off < len && json_object_object_get_ex(o, "secondaries", &s) &&
	    json_object_is_type(s, json_type_array)) {
		off += (size_t)snprintf(buf + off, len - off, " (secondaries:");
		for (size_t i = 0; off < len && i < json_object_array_length(s); i++)
			off += (size_t)snprintf(
			    buf + off, len - off, "%s %s", i ? "," : "",
			    json_object_get_string(json_object_array_get_idx(s, i)));
		if (off < len)
			snprintf(buf + off, len - off, ")");
	}
	json_object_put(o);
}

/* Is this node the leader key's now? 0 yes; else -errno with why. */
static int leader_is_self(struct node *n, char *why, size_t whylen)
{
	struct node_etcd *e = n->etcd;
	struct etcd_kv kv = {0};
	char err[ETCD_WHY_MAX];
	int r;

	r = node_etcd_get(e, n->cfg->etcd->leader_key, &kv, err, sizeof(err));
	if (r < 0) {
		snprintf(why, whylen, "etcd is unreachable (%s)", err);
		return r;
	}
	if (!kv.value || strcmp(kv.value, n->self->name)) {
		snprintf(why, whylen, "etcd's leader key '%s' names %s%s%s, not this node ('%s')",
			 n->cfg->etcd->leader_key, kv.value ? "'" : "",
			 kv.value ? kv.value : "no node", kv.value ? "'" : "", n->self->name);
		r = -ESTALE;
	}
	etcd_kv_release(&kv);
	return r;
}

int node_etcd_resync_begin(struct node *n, struct control_client *cli, json_object *req, bool take)
{
	struct node_etcd *e = n->etcd;
	unsigned ttl = n->cfg->etcd ? n->cfg->etcd->lock_ttl_s : 0;
	char why[ETCD_WHY_MAX + 256], err[ETCD_WHY_MAX], desc[512];
	_cleanup_free_ char *value = NULL, *holder = NULL;
	int64_t lease = 0;
	bool busy;
	int r;

	if (!e)
		return 0;
	if (leader_is_self(n, why, sizeof(why)) < 0)
		return control_client_error(cli,
					    "refused: %s: the primary of cluster '%s' is not "
					    "known here, so no resync starts; nothing was written",
					    why, n->cfg->name),
		       1;
	pthread_mutex_lock(&e->lock);
	busy = e->run;
	pthread_mutex_unlock(&e->lock);
	if (busy)
		return control_client_error(cli,
					    "refused: a resync of cluster '%s' is already "
					    "running: etcd's lock '%s' is held by this node ('%s')",
					    n->cfg->name, e->lock_key, n->self->name),
		       1;
	if (!take) {
		/* A plan: refused while the lock is held, takes nothing. */
		struct etcd_kv kv = {0};

		r = node_etcd_get(e, e->lock_key, &kv, err, sizeof(err));
		holder = TAKE_PTR(kv.value);
		if (r >= 0 && !holder)
			return 0;
		r = r < 0 ? r : -EEXIST;
	} else {
		value = lock_value(n, req);
		if (!value)
			return -ENOMEM;
		r = etcd_lease_grant(e->cli, ttl, &lease, err, sizeof(err));
		if (r >= 0)
			r = etcd_create(e->cli, e->lock_key, value, lease, &holder, err,
					sizeof(err));
	}
	if (r < 0 && lease) { /* else it would only expire */
		char rerr[ETCD_WHY_MAX];

		etcd_lease_revoke(e->cli, lease, rerr, sizeof(rerr));
	}
	if (r == -EEXIST) {
		lock_describe(holder ? holder : "", desc, sizeof(desc));
		return control_client_error(
			   cli,
			   "refused: a resync of cluster '%s' is already "
			   "running: etcd's lock '%s' is held by %s; nothing was written",
			   n->cfg->name, e->lock_key, desc),
		       1;
	}
	if (r < 0) {
		node_etcd_reachable(e, false, err);
		return control_client_error(cli,
					    "refused: cannot take the resync lock in etcd (%s); "
					    "nothing was written",
					    err),
		       1;
	}
	pthread_mutex_lock(&e->lock);
	e->run = true;
	e->lease = lease;
	e->aborted = false;
	e->why[0] = 0;
	e->next_keepalive = clock_usec() + (uint64_t)ttl * 1000000ull / 3;
	pthread_mutex_unlock(&e->lock);
	log_info("resync lock '%s' taken in etcd (lease %" PRIx64 ", %u s)", e->lock_key,
		 (uint64_t)lease, ttl);
	return 0;
}

void node_etcd_resync_end(struct node *n)
{
	struct node_etcd *e = n->etcd;
	char err[ETCD_WHY_MAX];
	int64_t lease;

	if (!e)
		return;
	pthread_mutex_lock(&e->lock);
	lease = e->run ? e->lease : 0;
	e->run = false;
	e->lease = 0;
	e->aborted = false;
	e->why[0] = 0;
	pthread_mutex_unlock(&e->lock);
	if (!lease)
		return;
	/* Revoking the lease deletes the lock with it. */
	if (etcd_lease_revoke(e->cli, lease, err, sizeof(err)) < 0)
		log_warning("cannot release the resync lock '%s' (%s): it goes when its lease "
			    "expires (%u s)",
			    e->lock_key, err, n->cfg->etcd->lock_ttl_s);
	else
		log_info("resync lock '%s' released", e->lock_key);
}

bool node_etcd_stopped(struct node *n, char *why, size_t whylen)
{
	struct node_etcd *e = n->etcd;
	bool stopped;

	if (!e)
		return false;
	pthread_mutex_lock(&e->lock);
	stopped = e->run && e->aborted; /* this node's run, the one now */
	snprintf(why, whylen, "%s", e->why);
	pthread_mutex_unlock(&e->lock);
	return stopped;
}

int node_etcd_commit_gate(void *arg, char *why, size_t whylen)
{
	struct node *n = arg;
	struct node_etcd *e = n->etcd;
	struct etcd_kv kv = {0};
	char err[ETCD_WHY_MAX];
	int64_t lease;
	int r;

	if (node_etcd_stopped(n, why, whylen))
		return -ECANCELED;
	if (node_failpoint("etcd-deaf-nogate")) /* test: the secondary's check alone */
		return 0;
	r = leader_is_self(n, err, sizeof(err));
	if (r < 0) {
		node_etcd_abort(n, "%s before the commit; nothing was committed", err);
		node_etcd_stopped(n, why, whylen);
		return r;
	}
	pthread_mutex_lock(&e->lock);
	lease = e->lease;
	pthread_mutex_unlock(&e->lock);
	r = node_etcd_get(e, e->lock_key, &kv, err, sizeof(err));
	if (r >= 0 && (!kv.value || kv.lease != lease))
		r = -ESTALE;
	etcd_kv_release(&kv);
	if (r < 0) {
		node_etcd_abort(n, "%s before the commit; nothing was committed",
				r == -ESTALE
				    ? "the resync lock is no longer this node's (its lease expired)"
				    : err);
		node_etcd_stopped(n, why, whylen);
		return r;
	}
	return 0;
}

int node_etcd_commit_check(struct node *n, const char *peer, char *why, size_t whylen)
{
	const char *primary;

	if (!n->etcd)
		return 0;
	primary = __atomic_load_n(&n->cfg->primary, __ATOMIC_ACQUIRE);
	if (primary && !strcmp(primary, peer))
		return 0;
	snprintf(why, whylen,
		 "'%s' refused to commit: etcd's leader key names %s%s%s now, not '%s'",
		 n->self->name, primary ? "'" : "", primary ? primary : "no node",
		 primary ? "'" : "", peer);
	log_error("%s", why);
	return -EPERM;
}

void node_etcd_status_json(struct node *n, json_object *res)
{
	struct node_etcd *e = n->etcd;
	const struct etcd_config *ec = n->cfg->etcd;
	json_object *o, *eps;
	struct etcd_kv kv = {0}, lk = {0};
	char err[ETCD_WHY_MAX], desc[512];
	bool ok;

	if (!e)
		return;
	o = json_object_new_object();
	eps = json_object_new_array();
	for (size_t i = 0; i < ec->n_endpoints; i++)
		json_object_array_add(eps, json_object_new_string(ec->endpoints[i]));
	/* Asked now: status says what is true, not what was. */
	ok = etcd_get(e->cli, ec->leader_key, &kv, err, sizeof(err)) >= 0;
	node_etcd_reachable(e, ok, err);
	json_object_object_add(o, "endpoints", eps);
	json_object_object_add(o, "reachable", json_object_new_boolean(ok));
	json_object_object_add(o, "endpoint",
			       ok ? json_object_new_string(etcd_endpoint(e->cli)) : NULL);
	json_object_object_add(o, "leader_key", json_object_new_string(ec->leader_key));
	json_object_object_add(o, "leader", kv.value ? json_object_new_string(kv.value) : NULL);
	if (!ok)
		json_object_object_add(o, "error", json_object_new_string(err));
	if (ok && etcd_get(e->cli, e->lock_key, &lk, err, sizeof(err)) >= 0 && lk.value) {
		lock_describe(lk.value, desc, sizeof(desc));
		json_object_object_add(o, "lock", json_object_new_string(desc));
	} else {
		json_object_object_add(o, "lock", NULL);
	}
	etcd_kv_release(&kv);
	etcd_kv_release(&lk);
	json_object_object_add(res, "etcd", o);
}
