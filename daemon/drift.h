/* Drift detection (issue 16): the scheduled verify, the primary's watch
 * over its secondaries (probes, alerts), and what /health says. Shared by
 * its rooms; the node's other rooms call only the hooks declared in
 * node-int.h ("drift").
 *
 * Rooms:
 *   drift.c         lifecycle, the state kept in IMAGE.resync-node, the
 *                   secondary's side (DRIFT frames, a commit clears)
 *   verify-sched.c  the scheduled verify (primary): its thread, the
 *                   compare of one range at a time by page hashes, its
 *                   progress (resumed after a restart), yielding to a
 *                   resync or a verify asked for
 *   alerts.c        the watch (primary): its thread probes every
 *                   secondary (hello, STATUS, judged as status judges,
 *                   DRIFT sent), and the incidents alerted once each
 *   health.c        /health and /health?ready, the drift metrics, the
 *                   status fields
 *
 * Threads: the verify thread and the watch thread are the node's (started
 * by drift_start(), joined by drift_stop() from node_stop()); both end
 * promptly once n->stopping is set (every wait is sliced, every peer
 * wait ends at peer_ctx_shutdown()).
 *
 * Locks: n->lock before d->lock, never the other way round (the state
 * file is written under n->lock and reads the drift's fields under
 * d->lock). */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "node-int.h"

struct json_object;

enum {
	/* The scheduled verify compares this much of a secondary per step:
	 * a resync asked for waits at most one step. */
	DRIFT_VERIFY_STEP = 4 << 20,
	/* Its progress is written to the state file at most this often. */
	DRIFT_PROGRESS_SAVE_USEC = 1000000,
	/* The watch probes every secondary every alert_after / 3, within: */
	DRIFT_PROBE_MIN_MS = 1000,
	DRIFT_PROBE_MAX_MS = 60000,
	/* A secondary trusts the primary's word on its state for this many
	 * probe intervals (then only what it knows of itself counts). */
	DRIFT_JUDGED_FRESH_PROBES = 3,
	DRIFT_BLOCKS_LOGGED = 64, /* differing blocks a run names in the log */
	DRIFT_TICK_MS = 100, /* waits look at the stop flag this often */
	DRIFT_INCIDENTS_MAX = 256,
	DRIFT_ERROR_MAX = RESYNC_WIRE_TEXT_MAX + 256,
};

/* One node of the cluster (cfg order), as the primary sees it. */
struct drift_node {
	/* The last completed verify of this secondary. */
	bool verified;
	int64_t verify_time; /* unix seconds it ended */
	uint64_t diff_bytes, diff_blocks;
	/* Of diff_bytes, those in blocks the primary's dirty bitmap did not
	 * mark when the verify saw them: only a compare mends these, while
	 * a quick resync sends every marked block (an Outdated secondary
	 * differs only there). */
	uint64_t diff_unmarked;
	uint64_t compared;     /* bytes the run that ended it compared */
	uint64_t resumed_from; /* offset that run started at (0: whole) */
	bool failed;
	char error[DRIFT_ERROR_MAX];
	/* The scheduled verify in progress: every byte below off is
	 * compared; what differed there. */
	uint64_t off, p_bytes, p_blocks;
	uint64_t p_unmarked; /* of p_bytes, as diff_unmarked */
	bool done;
	/* The watch: the last probe's judgement. */
	bool probed, connected;
	enum meta_state judged;
	uint64_t down_since; /* clock_usec() of the first failed probe; 0: up */
};

struct drift {
	struct node *n;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* busy dropped, a kick */
	struct drift_node *nodes; /* cfg order; protected by lock */

	/* Primary: the schedule (unix seconds; protected by lock). */
	int64_t last_verify;	   /* a complete verify ended; 0 never */
	int64_t last_verify_start; /* it (or the running one) started */
	bool in_progress;	   /* a scheduled verify has progress */
	/* A step of it is comparing: a resync waits until it is false. */
	bool busy;
	bool kick_probe;  /* the watch should probe now */
	uint64_t started; /* clock_usec() of drift_start() */

	/* Secondary: the primary's word (protected by lock). The verify
	 * part is kept in the state file until a commit or a later word. */
	bool self_verified;
	int64_t self_verify_time;
	uint64_t self_diff_bytes, self_diff_blocks;
	bool self_judged_known;
	enum meta_state self_judged;
	uint64_t self_judged_at; /* clock_usec() */

	/* Incidents alerted and not over yet ("verify:n2", ...), kept in
	 * the state file so that a restart does not alert them again. */
	char *incidents[DRIFT_INCIDENTS_MAX];
	size_t n_incidents;

	pthread_t verify_thread, watch_thread;
	bool verify_started, watch_started;
};

static inline struct drift_node *drift_node_of(struct drift *d, const struct node_config *nc)
{
	return &d->nodes[nc - d->n->cfg->nodes];
}

/* The watch's probe interval for cfg. */
unsigned drift_probe_ms(const struct cluster_config *cfg);
/* Bytes of [off, off + len) in blocks that this (primary) node's dirty
 * bitmap does not mark now: a quick resync would not send them. */
uint64_t drift_unmarked_bytes(struct node *n, uint64_t off, uint64_t len);
/* Write the state file now (takes n->lock; d->lock must not be held). */
void drift_save(struct node *n);
/* Sleep up to ms, less when the node stops; false once it stops. */
bool drift_sleep(struct node *n, unsigned ms);

/* verify-sched.c */
void *verify_thread(void *arg);

/* alerts.c */
void *watch_thread(void *arg);
/* Alert key once (a payload is taken either way); clear it when over.
 * Take n->lock (to save): d->lock must not be held. */
void alert_raise(struct node *n, const char *key, struct json_object *payload);
void alert_clear(struct node *n, const char *key);
/* The verify's alerts for secondary nc after a complete verify. */
void alert_verify(struct node *n, const struct node_config *nc);

/* health.c: see node-int.h and metrics.h */
