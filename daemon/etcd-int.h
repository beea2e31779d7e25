/* What etcd-node.c (the leader key, the threads, the summary) and
 * etcd-lock.c (the resync lock, the commit gate, status) share. Not
 * for outside daemon/. */
#pragma once

#include "etcd.h"
#include "node-int.h"

enum {
	ETCD_TICK_MS = 250,
	ETCD_RETRIES = 3, /* a request tried this often before etcd counts as lost */
	ETCD_RETRY_MS = 300,
	ETCD_PUBLISH_EVERY_S = 30, /* republished this often even unchanged */
	ETCD_WHY_MAX = 512,
};

struct node_etcd {
	struct etcd *cli;
	char *lock_key, *self_key;
	pthread_t watcher, ticker;
	bool watcher_started, ticker_started;
	atomic_bool stop;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* the ticker's sleep; stop */
	/* protected by lock: */
	bool reachable;
	char err[ETCD_WHY_MAX];
	bool run;		 /* this node holds the resync lock */
	int64_t lease;		 /* its lease */
	uint64_t next_keepalive; /* clock_usec() */
	bool aborted;		 /* etcd stopped the run */
	char why[ETCD_WHY_MAX];
	char *published; /* the summary last put */
	uint64_t published_at;
};

/* etcd answered (ok) or not (err says why): kept for status, said once. */
void node_etcd_reachable(struct node_etcd *e, bool ok, const char *err);
/* etcd_get() tried ETCD_RETRIES times; notes reachability. */
int node_etcd_get(struct node_etcd *e, const char *key, struct etcd_kv *ret, char *err,
		  size_t errlen);
/* Stop the resync this node runs (if it holds the lock), saying why;
 * the first reason stays. */
void node_etcd_abort(struct node *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
