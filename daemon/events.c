/* The event bus (events.h). One mutex guards the subscriber list and the
 * per-node progress clocks; publishing calls subscribers under it, which
 * is what makes unsubscribe a barrier. */
#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "control.h"
#include "events.h"
#include "resync/clock.h"
#include "resync/macro.h"

enum {
	EVENT_PROGRESS_GAP_USEC = 1000000,
	EVENT_CLOCKS_MAX = 256, /* nodes whose progress is rate-limited */
};

struct event_sub {
	event_fn fn;
	void *arg;
	struct event_sub *next;
};

struct progress_clock {
	char node[RESYNC_NAME_MAX + 1];
	int64_t last; /* clock_usec() */
};

struct event_bus {
	const char *cluster;
	pthread_mutex_t lock;
	struct event_sub *subs;		/* protected by lock */
	struct progress_clock *clocks;	/* protected by lock */
	size_t n_clocks;		/* protected by lock */
	/* The run in progress: when it began (0: none), how it went so far. */
	uint64_t run_t0;		/* clock_usec(); protected by lock */
	bool run_failed, run_cancelled; /* protected by lock */
};

static const char *const kind_names[EVENT_KIND_COUNT] = {
	[EVENT_RESYNC_STARTED] = "resync_started",
	[EVENT_PROGRESS] = "progress",
	[EVENT_STATE_CHANGED] = "state_changed",
	[EVENT_RESYNC_FINISHED] = "resync_finished",
	[EVENT_RESYNC_FAILED] = "resync_failed",
	[EVENT_RESYNC_CANCELLED] = "resync_cancelled",
	[EVENT_RESYNC_DONE] = "resync_done",
	[EVENT_PEER] = "peer",
	[EVENT_NOTIFY_DELIVERED] = "notify_delivered",
	[EVENT_NOTIFY_FAILED] = "notify_failed",
	[EVENT_FENCE_STARTED] = "fence_started",
	[EVENT_FENCE_ENDED] = "fence_ended",
	[EVENT_PROOF] = "proof",
};

const char *event_kind_name(enum event_kind k)
{
	return (unsigned)k < EVENT_KIND_COUNT ? kind_names[k] : "unknown";
}

static const char *const result_names[EVENT_RESULT_COUNT] = {
	[EVENT_RESULT_NONE] = "",
	[EVENT_RESULT_SUCCESS] = "success",
	[EVENT_RESULT_FAILED] = "failed",
	[EVENT_RESULT_CANCELLED] = "cancelled",
};

const char *event_result_name(enum event_result r)
{
	return (unsigned)r < EVENT_RESULT_COUNT ? result_names[r] : "";
}

int event_result_parse(const char *name, enum event_result *ret)
{
	for (unsigned i = EVENT_RESULT_NONE + 1; i < EVENT_RESULT_COUNT; i++)
		if (!strcmp(name, result_names[i])) {
			*ret = (enum event_result)i;
			return 0;
		}
	return -EINVAL;
}

static const char *const phase_names[EVENT_PHASE_COUNT] = {
	[EVENT_PHASE_NONE] = "",
	[EVENT_PHASE_COMPARED] = "compared",
	[EVENT_PHASE_DIRTY] = "dirty",
	[EVENT_PHASE_TRANSFER] = "transfer",
};

const char *event_phase_name(enum event_phase p)
{
	return (unsigned)p < EVENT_PHASE_COUNT ? phase_names[p] : "";
}

const char *event_state_name(enum meta_state s)
{
	return s == EVENT_STATE_NONE ? "" : meta_state_name(s);
}

/* A peer event's "state". */
static const char *peer_word(const struct event *e)
{
	return e->connected ? "connected" : "disconnected";
}

int event_bus_new(const char *cluster, struct event_bus **ret)
{
	struct event_bus *b = calloc(1, sizeof(*b));

	if (!b)
		return -ENOMEM;
	b->clocks = calloc(EVENT_CLOCKS_MAX, sizeof(*b->clocks));
	if (!b->clocks) {
		free(b);
		return -ENOMEM;
	}
	b->cluster = cluster;
	pthread_mutex_init(&b->lock, NULL);
	*ret = b;
	return 0;
}

void event_bus_free(struct event_bus *b)
{
	if (!b)
		return;
	while (b->subs) {
		struct event_sub *s = b->subs;

		b->subs = s->next;
		free(s);
	}
	pthread_mutex_destroy(&b->lock);
	free(b->clocks);
	free(b);
}

const char *event_bus_cluster(const struct event_bus *b)
{
	return b->cluster;
}

int event_bus_subscribe(struct event_bus *b, event_fn fn, void *arg, struct event_sub **ret)
{
	struct event_sub *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->fn = fn;
	s->arg = arg;
	pthread_mutex_lock(&b->lock);
	s->next = b->subs;
	b->subs = s;
	pthread_mutex_unlock(&b->lock);
	*ret = s;
	return 0;
}

void event_bus_unsubscribe(struct event_bus *b, struct event_sub *s)
{
	if (!b || !s)
		return;
	pthread_mutex_lock(&b->lock);
	for (struct event_sub **pp = &b->subs; *pp; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	}
	pthread_mutex_unlock(&b->lock);
	free(s);
}

/* Whether a progress event for node may go out now; records it if so.
 * Called under b->lock. */
static bool progress_due(struct event_bus *b, const char *node)
{
	int64_t now = (int64_t)clock_usec();
	struct progress_clock *c = NULL;

	for (size_t i = 0; i < b->n_clocks; i++)
		if (!strcmp(b->clocks[i].node, node))
			c = &b->clocks[i];
	if (!c) {
		/* More nodes than clocks: reuse the oldest clock. */
		if (b->n_clocks < EVENT_CLOCKS_MAX) {
			c = &b->clocks[b->n_clocks++];
		} else {
			c = &b->clocks[0];
			for (size_t i = 1; i < b->n_clocks; i++)
				if (b->clocks[i].last < c->last)
					c = &b->clocks[i];
		}
		snprintf(c->node, sizeof(c->node), "%s", node);
		c->last = now;
		return true;
	}
	if (now - c->last < EVENT_PROGRESS_GAP_USEC)
		return false;
	c->last = now;
	return true;
}

/* A node's progress clock starts over with each resync, so that the
 * first progress line of a run is never held back by the last run's. */
static void progress_reset(struct event_bus *b, const char *node)
{
	for (size_t i = 0; i < b->n_clocks; i++)
		if (!strcmp(b->clocks[i].node, node))
			b->clocks[i].last = INT64_MIN / 2;
}

void event_bus_publish(struct event_bus *b, const struct event *e)
{
	struct event ev;

	if (!b)
		return;
	ev = *e;
	if (!ev.time_usec)
		ev.time_usec = clock_real_usec();
	pthread_mutex_lock(&b->lock);
	if (ev.kind == EVENT_RESYNC_STARTED) {
		progress_reset(b, ev.node);
		if (!b->run_t0) {
			b->run_t0 = clock_usec();
			b->run_failed = b->run_cancelled = false;
		}
	}
	if (ev.kind == EVENT_RESYNC_FAILED)
		b->run_failed = true;
	if (ev.kind == EVENT_RESYNC_CANCELLED)
		b->run_cancelled = true;
	if (ev.kind == EVENT_RESYNC_DONE) {
		if (ev.result == EVENT_RESULT_NONE)
			ev.result = b->run_failed      ? EVENT_RESULT_FAILED
				    : b->run_cancelled ? EVENT_RESULT_CANCELLED
						       : EVENT_RESULT_SUCCESS;
		if (ev.seconds == 0 && b->run_t0)
			ev.seconds = (double)(clock_usec() - b->run_t0) / 1e6;
		b->run_t0 = 0;
		b->run_failed = b->run_cancelled = false;
	}
	if (ev.kind == EVENT_PROGRESS && !progress_due(b, ev.node)) {
		pthread_mutex_unlock(&b->lock);
		return;
	}
	for (struct event_sub *s = b->subs; s; s = s->next)
		s->fn(s->arg, &ev);
	pthread_mutex_unlock(&b->lock);
}

void event_publish_state(struct event_bus *b, const char *node, enum meta_state old_state,
			 enum meta_state state, bool expected, const char *reason)
{
	struct event e = {.kind = EVENT_STATE_CHANGED, .expected = expected,
			  .old_state = old_state, .state = state};

	snprintf(e.node, sizeof(e.node), "%s", node);
	snprintf(e.reason, sizeof(e.reason), "%s", reason ? reason : "");
	event_bus_publish(b, &e);
}

void event_publish_peer(struct event_bus *b, const char *node, bool connected)
{
	struct event e = {.kind = EVENT_PEER, .connected = connected};

	snprintf(e.node, sizeof(e.node), "%s", node);
	event_bus_publish(b, &e);
}

void event_publish_started(struct event_bus *b, const char *node, enum meta_state state,
			   const char *generation)
{
	struct event e = {.kind = EVENT_RESYNC_STARTED, .state = state};

	snprintf(e.node, sizeof(e.node), "%s", node);
	snprintf(e.generation, sizeof(e.generation), "%s", generation ? generation : "");
	event_bus_publish(b, &e);
}

void event_publish_progress(struct event_bus *b, const char *node, enum event_phase phase,
			    uint64_t bytes_compared, uint64_t bytes_sent, uint64_t done,
			    uint64_t total, double rate)
{
	struct event e = {.kind = EVENT_PROGRESS, .phase = phase,
			  .bytes_compared = bytes_compared, .bytes_sent = bytes_sent,
			  .bytes_done = done, .bytes_total = total, .rate = rate};

	snprintf(e.node, sizeof(e.node), "%s", node);
	event_bus_publish(b, &e);
}

void event_publish_end(struct event_bus *b, const char *node, int r, enum meta_state state,
		       uint64_t bytes_compared, uint64_t bytes_sent, uint64_t round_trips,
		       double seconds, const char *error)
{
	struct event e = {.kind = r >= 0		? EVENT_RESYNC_FINISHED
				  : r == -ECANCELED ? EVENT_RESYNC_CANCELLED
						    : EVENT_RESYNC_FAILED,
			  .state = state, .bytes_compared = bytes_compared,
			  .bytes_sent = bytes_sent, .round_trips = round_trips, .seconds = seconds};

	snprintf(e.node, sizeof(e.node), "%s", node);
	snprintf(e.error, sizeof(e.error), "%s", r < 0 && error ? error : "");
	event_bus_publish(b, &e);
}

void event_publish_done(struct event_bus *b, uint64_t nodes, const char *generation)
{
	struct event e = {.kind = EVENT_RESYNC_DONE, .nodes = nodes};

	snprintf(e.generation, sizeof(e.generation), "%s", generation ? generation : "");
	event_bus_publish(b, &e);
}

void event_publish_proof(struct event_bus *b, const char *node, const char *root,
			 const char *primary_root, bool match)
{
	struct event e = {.kind = EVENT_PROOF, .match = match};

	snprintf(e.node, sizeof(e.node), "%s", node);
	snprintf(e.root, sizeof(e.root), "%s", root);
	snprintf(e.primary_root, sizeof(e.primary_root), "%s", primary_root);
	event_bus_publish(b, &e);
}

void event_publish_fence(struct event_bus *b, const char *node, bool started, bool whole,
			 unsigned passes, double seconds)
{
	struct event e = {.kind = started ? EVENT_FENCE_STARTED : EVENT_FENCE_ENDED,
			  .fence_whole = whole, .passes = passes, .seconds = seconds};

	snprintf(e.node, sizeof(e.node), "%s", node);
	event_bus_publish(b, &e);
}

static void add_str(json_object *o, const char *k, const char *v)
{
	json_object_object_add(o, k, json_object_new_string(v));
}

static void add_u64(json_object *o, const char *k, uint64_t v)
{
	json_object_object_add(o, k, json_object_new_uint64(v));
}

json_object *event_to_json(const struct event *e, const char *cluster)
{
	json_object *o = json_object_new_object();
	char t[64];

	if (!o)
		return NULL;
	clock_format_utc(e->time_usec, true, t, sizeof(t));
	add_str(o, "type", "event");
	add_str(o, "event", event_kind_name(e->kind));
	add_str(o, "cluster", cluster ? cluster : "");
	add_str(o, "time", t);
	json_object_object_add(o, "ts", json_object_new_double((double)e->time_usec / 1e6));
	if (e->node[0])
		add_str(o, "node", e->node);
	switch (e->kind) {
	case EVENT_RESYNC_STARTED:
		add_str(o, "state", event_state_name(e->state));
		if (e->generation[0])
			add_str(o, "generation", e->generation);
		break;
	case EVENT_PROGRESS:
		add_str(o, "phase", event_phase_name(e->phase));
		add_u64(o, "bytes_compared", e->bytes_compared);
		add_u64(o, "bytes_sent", e->bytes_sent);
		add_u64(o, "bytes_done", e->bytes_done);
		add_u64(o, "bytes_total", e->bytes_total);
		json_object_object_add(o, "rate", json_object_new_double(e->rate));
		break;
	case EVENT_STATE_CHANGED:
		add_str(o, "old_state", event_state_name(e->old_state));
		add_str(o, "state", event_state_name(e->state));
		add_str(o, "reason", e->reason);
		json_object_object_add(o, "expected", json_object_new_boolean(e->expected));
		break;
	case EVENT_RESYNC_FINISHED:
	case EVENT_RESYNC_FAILED:
	case EVENT_RESYNC_CANCELLED:
		add_str(o, "state", event_state_name(e->state));
		add_u64(o, "bytes_compared", e->bytes_compared);
		add_u64(o, "bytes_sent", e->bytes_sent);
		add_u64(o, "round_trips", e->round_trips);
		json_object_object_add(o, "seconds", json_object_new_double(e->seconds));
		if (e->kind != EVENT_RESYNC_FINISHED)
			add_str(o, "error", e->error);
		break;
	case EVENT_RESYNC_DONE:
		add_str(o, "result", event_result_name(e->result));
		add_u64(o, "nodes", e->nodes);
		json_object_object_add(o, "seconds", json_object_new_double(e->seconds));
		if (e->generation[0])
			add_str(o, "generation", e->generation);
		break;
	case EVENT_PEER:
		add_str(o, "state", peer_word(e));
		break;
	case EVENT_NOTIFY_DELIVERED:
	case EVENT_NOTIFY_FAILED:
		add_str(o, "channel", notify_channel_name(e->channel));
		add_str(o, "id", e->id);
		json_object_object_add(o, "attempts", json_object_new_int((int)e->attempts));
		if (e->kind == EVENT_NOTIFY_FAILED) {
			add_str(o, "error", e->error);
			json_object_object_add(o, "retry", json_object_new_double(e->retry));
		}
		break;
	case EVENT_FENCE_STARTED:
	case EVENT_FENCE_ENDED:
		add_str(o, "fence", e->fence_whole ? "whole" : "short");
		if (e->kind == EVENT_FENCE_STARTED) {
			json_object_object_add(o, "pass", json_object_new_int((int)e->passes));
		} else {
			json_object_object_add(o, "passes", json_object_new_int((int)e->passes));
			json_object_object_add(o, "seconds", json_object_new_double(e->seconds));
		}
		break;
	case EVENT_PROOF:
		add_str(o, "root", e->root);
		add_str(o, "primary_root", e->primary_root);
		json_object_object_add(o, "match", json_object_new_boolean(e->match));
		break;
	default:
		break;
	}
	return o;
}

void event_format(const struct event *e, char *buf, size_t len)
{
	char t[64];

	clock_format_utc(e->time_usec, true, t, sizeof(t));
	switch (e->kind) {
	case EVENT_RESYNC_STARTED:
		snprintf(buf, len, "%s resync_started %s state %s", t, e->node, event_state_name(e->state));
		break;
	case EVENT_PROGRESS:
		snprintf(buf, len, "%s progress %s %s %llu/%llu bytes, %llu sent, %.1f MiB/s", t,
			 e->node, event_phase_name(e->phase), (unsigned long long)e->bytes_done,
			 (unsigned long long)e->bytes_total, (unsigned long long)e->bytes_sent,
			 e->rate / (1024 * 1024));
		break;
	case EVENT_STATE_CHANGED:
		snprintf(buf, len, "%s state_changed %s %s -> %s%s%s", t, e->node,
			 e->old_state != EVENT_STATE_NONE ? meta_state_name(e->old_state) : "?",
			 event_state_name(e->state), e->reason[0] ? ": " : "", e->reason);
		break;
	case EVENT_RESYNC_FINISHED:
	case EVENT_RESYNC_FAILED:
	case EVENT_RESYNC_CANCELLED:
		snprintf(buf, len, "%s %s %s state %s, %llu bytes compared, %llu sent, %.1f s%s%s", t,
			 event_kind_name(e->kind), e->node, event_state_name(e->state),
			 (unsigned long long)e->bytes_compared, (unsigned long long)e->bytes_sent,
			 e->seconds, e->error[0] ? ": " : "", e->error);
		break;
	case EVENT_RESYNC_DONE:
		snprintf(buf, len, "%s resync_done %s, %llu nodes, %.1f s", t,
			 event_result_name(e->result), (unsigned long long)e->nodes, e->seconds);
		break;
	case EVENT_PEER:
		snprintf(buf, len, "%s peer %s %s", t, e->node, peer_word(e));
		break;
	case EVENT_NOTIFY_DELIVERED:
		snprintf(buf, len, "%s notify_delivered %s %s after %u attempts", t,
			 notify_channel_name(e->channel), e->id, e->attempts);
		break;
	case EVENT_NOTIFY_FAILED:
		snprintf(buf, len, "%s notify_failed %s %s attempt %u: %s", t,
			 notify_channel_name(e->channel), e->id, e->attempts, e->error);
		break;
	case EVENT_FENCE_STARTED:
		snprintf(buf, len, "%s fence_started %s %s fence, pass %u: writes wait", t, e->node,
			 e->fence_whole ? "whole" : "short", e->passes);
		break;
	case EVENT_FENCE_ENDED:
		snprintf(buf, len, "%s fence_ended %s %s fence, %u passes: writes waited %.3f s", t,
			 e->node, e->fence_whole ? "whole" : "short", e->passes, e->seconds);
		break;
	case EVENT_PROOF:
		snprintf(buf, len, "%s proof %s %s: %s (the primary's %s)", t, e->node,
			 e->match ? "matches" : "MISMATCH", e->root, e->primary_root);
		break;
	default:
		snprintf(buf, len, "%s %s", t, event_kind_name(e->kind));
		break;
	}
}

/* ---- queue subscriber ---- */

struct event_queue {
	struct event_bus *bus;
	struct event_sub *sub;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct event *ring; /* protected by lock */
	size_t cap, head, n;
	uint64_t dropped;
};

static void queue_push(void *arg, const struct event *e)
{
	struct event_queue *q = arg;

	pthread_mutex_lock(&q->lock);
	if (q->n == q->cap) {
		q->head = (q->head + 1) % q->cap;
		q->n--;
		q->dropped++;
	}
	q->ring[(q->head + q->n) % q->cap] = *e;
	q->n++;
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
}

int event_queue_new(struct event_bus *b, size_t cap, struct event_queue **ret)
{
	struct event_queue *q = calloc(1, sizeof(*q));
	pthread_condattr_t ca;
	int r;

	if (!q || !cap)
		return free(q), cap ? -ENOMEM : -EINVAL;
	q->ring = calloc(cap, sizeof(*q->ring));
	if (!q->ring) {
		free(q);
		return -ENOMEM;
	}
	q->cap = cap;
	q->bus = b;
	pthread_mutex_init(&q->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&q->cond, &ca);
	pthread_condattr_destroy(&ca);
	r = event_bus_subscribe(b, queue_push, q, &q->sub);
	if (r < 0) {
		event_queue_free(q);
		return r;
	}
	*ret = q;
	return 0;
}

void event_queue_free(struct event_queue *q)
{
	if (!q)
		return;
	event_bus_unsubscribe(q->bus, q->sub);
	pthread_cond_destroy(&q->cond);
	pthread_mutex_destroy(&q->lock);
	free(q->ring);
	free(q);
}

int event_queue_pop(struct event_queue *q, int timeout_ms, struct event *ret, uint64_t *ret_dropped)
{
	struct timespec dl;
	int r = 0;

	clock_gettime(CLOCK_MONOTONIC, &dl);
	if (timeout_ms > 0) {
		dl.tv_sec += timeout_ms / 1000;
		dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
		if (dl.tv_nsec >= 1000000000) {
			dl.tv_sec++;
			dl.tv_nsec -= 1000000000;
		}
	}
	pthread_mutex_lock(&q->lock);
	while (!q->n && timeout_ms != 0) {
		int w = timeout_ms < 0 ? pthread_cond_wait(&q->cond, &q->lock)
				       : pthread_cond_timedwait(&q->cond, &q->lock, &dl);

		if (w == ETIMEDOUT)
			break;
	}
	if (q->n) {
		*ret = q->ring[q->head];
		q->head = (q->head + 1) % q->cap;
		q->n--;
		r = 1;
	}
	if (ret_dropped) {
		*ret_dropped = q->dropped;
		q->dropped = 0;
	}
	pthread_mutex_unlock(&q->lock);
	return r;
}

/* ---- the events control command ---- */

int events_cmd_stream(struct event_bus *b, struct control_client *cli, json_object *req)
{
	struct event_queue *q = NULL;
	int r;

	(void)req;
	r = event_queue_new(b, 4096, &q);
	if (r < 0)
		return r;
	/* A first line tells the client the stream is open: events published
	 * after it reaches the client are never missed. */
	json_object *hello = json_object_new_object();

	add_str(hello, "type", "stream");
	add_str(hello, "cluster", b->cluster);
	r = control_client_send(cli, hello);
	json_object_put(hello);
	while (r >= 0 && !control_client_gone(cli)) {
		struct event e;
		uint64_t dropped = 0;

		if (event_queue_pop(q, 250, &e, &dropped) != 1)
			continue;
		if (dropped) {
			json_object *d = json_object_new_object();

			add_str(d, "type", "dropped");
			add_u64(d, "count", dropped);
			control_client_send(cli, d);
			json_object_put(d);
		}
		json_object *o = event_to_json(&e, b->cluster);

		if (!o)
			break;
		r = control_client_send(cli, o);
		json_object_put(o);
	}
	event_queue_free(q);
	/* The client went away: no result line to send. */
	return 0;
}
