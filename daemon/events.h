/* The node's event bus: what happens to a resync and to the node, as
 * events with a timestamp, handed to every subscriber (the `events`
 * control command, the notifier, the metrics).
 *
 * Event kinds and their fields (JSON names; `events --json` prints them):
 *   resync_started    node, state (the secondary's state before), generation
 *   progress          node, phase, bytes_compared, bytes_sent, bytes_done,
 *                     bytes_total, rate (bytes/s); at most one a second per node
 *   state_changed     node, old_state, state, reason, expected (false when
 *                     nobody asked for it: a resync stopped half-way)
 *   resync_finished   node, state (after), bytes_compared, bytes_sent, round_trips,
 *                     seconds
 *   resync_failed     the same and error
 *   resync_cancelled  the same and error
 *   resync_done       the whole run: result (success|failed|cancelled),
 *                     nodes (count), seconds, generation; after the per-node
 *                     terminal events
 *   peer              node (the peer), state (connected|disconnected)
 *   notify_delivered  channel (email|webhook|command), id, attempts
 *   notify_failed     channel, id, attempts, error, retry (seconds, 0 = given up)
 *   fence_started     node (the primary), fence (short|whole), pass (the
 *                     pass that runs under it): the primary's writes wait
 *   fence_ended       node, fence, passes (of the run), seconds (how long
 *                     the primary's writes waited)
 *   proof             node (a secondary), root (its volume's, before its
 *                     commit), primary_root, match (true|false); the
 *                     roots are resync/proof.h's ("xxh3:..."); before the
 *                     node's resync_finished or resync_failed
 * Every event has "type": "event", "event": KIND, "cluster", "time" (UTC,
 * RFC 3339 with microseconds) and "ts" (unix seconds, fractional).
 *
 * Subscribers are called on the publishing thread, under the bus's lock:
 * they must be quick and must not publish. A queue subscriber
 * (event_queue) hands events to a thread of its own. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "notify.h"
#include "resync/limits.h"
#include "resync/meta.h"

struct json_object;

enum event_kind {
	EVENT_RESYNC_STARTED,
	EVENT_PROGRESS,
	EVENT_STATE_CHANGED,
	EVENT_RESYNC_FINISHED,
	EVENT_RESYNC_FAILED,
	EVENT_RESYNC_CANCELLED,
	EVENT_RESYNC_DONE,
	EVENT_PEER,
	EVENT_NOTIFY_DELIVERED,
	EVENT_NOTIFY_FAILED,
	EVENT_FENCE_STARTED,
	EVENT_FENCE_ENDED,
	EVENT_PROOF,
	EVENT_KIND_COUNT,
};

/* How a run went (resync_done). */
enum event_result {
	EVENT_RESULT_NONE = 0, /* not said: event_bus_publish derives it */
	EVENT_RESULT_SUCCESS,
	EVENT_RESULT_FAILED,
	EVENT_RESULT_CANCELLED,
	EVENT_RESULT_COUNT,
};

/* What a progress event counts. */
enum event_phase {
	EVENT_PHASE_NONE = 0,
	EVENT_PHASE_COMPARED, /* compared through the hash tree */
	EVENT_PHASE_DIRTY,    /* the dirty bitmaps' union taken */
	EVENT_PHASE_TRANSFER, /* differing bytes sent */
	EVENT_PHASE_COUNT,
};

/* A state_changed event's old_state when there was none to say (written
 * as ""): not a node state, never stored nor sent. */
#define EVENT_STATE_NONE ((enum meta_state)-1)

/* An event: what a subscriber gets. Enums and numbers only; the words are
 * made by event_to_json() and event_format() (and the notifier's and the
 * metrics' own texts). */
struct event {
	enum event_kind kind;
	int64_t time_usec; /* unix microseconds; set by event_bus_publish when 0 */
	char node[RESYNC_NAME_MAX + 1];
	enum meta_state state;	     /* resync_*, state_changed */
	enum meta_state old_state;   /* state_changed; EVENT_STATE_NONE: none */
	bool connected;		     /* peer */
	enum event_phase phase;	     /* progress */
	enum event_result result;    /* resync_done */
	enum notify_channel channel; /* notify_*: one NOTIFY_* bit */
	char id[48];		     /* notify_*: the spooled notification */
	char generation[40];
	char reason[256];  /* state_changed */
	char error[512];
	bool expected;
	uint64_t bytes_compared, bytes_sent, bytes_done, bytes_total;
	uint64_t round_trips; /* resync_finished/failed/cancelled: paid in sequence */
	uint64_t nodes;
	unsigned attempts;
	double rate, seconds, retry;
	bool fence_whole; /* fence_*: the whole run, not the last pass */
	unsigned passes;  /* fence_started: the pass; fence_ended: the run's */
	char root[72], primary_root[72]; /* proof: PROOF_TEXT_MAX */
	bool match;			 /* proof */
};

struct event_bus;
struct event_sub;
struct event_queue;

typedef void (*event_fn)(void *arg, const struct event *e);

/* A bus for cluster (borrowed; must outlive the bus). Returns 0 or -ENOMEM. */
int event_bus_new(const char *cluster, struct event_bus **ret);
/* Subscribers must be gone. NULL is accepted. */
void event_bus_free(struct event_bus *b);
const char *event_bus_cluster(const struct event_bus *b);

/* Call fn(arg, e) for every event published from now on. Returns 0 and a
 * handle for event_bus_unsubscribe, or -ENOMEM. Thread-safe. */
int event_bus_subscribe(struct event_bus *b, event_fn fn, void *arg, struct event_sub **ret);
/* After this returns, fn is not running and will not be called again. NULL
 * is accepted. Thread-safe; never from inside a callback. */
void event_bus_unsubscribe(struct event_bus *b, struct event_sub *s);

/* Hand e to every subscriber (the time is filled in when 0). A progress
 * event less than a second after the previous one published for the same
 * node is dropped. b may be NULL (no-op). Thread-safe. */
void event_bus_publish(struct event_bus *b, const struct event *e);

/* Shorthands for the node: build an event of kind for node and publish it.
 * old_state may be EVENT_STATE_NONE; reason may be NULL. */
void event_publish_state(struct event_bus *b, const char *node, enum meta_state old_state,
			 enum meta_state state, bool expected, const char *reason);
void event_publish_peer(struct event_bus *b, const char *node, bool connected);

/* The resync's events, one call each for the node's transfer code. A run
 * begins with its first resync_started; event_publish_done closes it with
 * the result derived from the run's terminal events (any failed: failed,
 * else any cancelled: cancelled, else success) and its duration. */
void event_publish_started(struct event_bus *b, const char *node, enum meta_state state,
			   const char *generation);
void event_publish_progress(struct event_bus *b, const char *node, enum event_phase phase,
			    uint64_t bytes_compared, uint64_t bytes_sent, uint64_t done,
			    uint64_t total, double rate);
/* r: 0 finished, -ECANCELED cancelled, other -errno failed (error says why). */
void event_publish_end(struct event_bus *b, const char *node, int r, enum meta_state state,
		       uint64_t bytes_compared, uint64_t bytes_sent, uint64_t round_trips,
		       double seconds, const char *error);
void event_publish_done(struct event_bus *b, uint64_t nodes, const char *generation);
/* The primary's fence: started (pass: the pass under it) and ended
 * (passes: the run's, seconds: its length), node the primary. */
void event_publish_proof(struct event_bus *b, const char *node, const char *root,
			 const char *primary_root, bool match);
void event_publish_fence(struct event_bus *b, const char *node, bool started, bool whole,
			 unsigned passes, double seconds);

/* The words of the event's enums, as the JSON form writes them ("" for a
 * NONE, "unknown" for a kind that is none). Static storage. */
const char *event_kind_name(enum event_kind k);
const char *event_result_name(enum event_result r);
const char *event_phase_name(enum event_phase p);
/* meta_state_name(), and "" for EVENT_STATE_NONE. */
const char *event_state_name(enum meta_state s);
/* The result named name (a JSON document's word read back). Returns 0 and
 * *ret, or -EINVAL. */
int event_result_parse(const char *name, enum event_result *ret);
/* The JSON form described above; a new reference, NULL on ENOMEM. */
struct json_object *event_to_json(const struct event *e, const char *cluster);
/* One human-readable line (without newline) into buf. */
void event_format(const struct event *e, char *buf, size_t len);

/* A subscriber that buffers up to cap events for a consumer thread; when
 * the consumer falls behind, the oldest are dropped and counted. */
int event_queue_new(struct event_bus *b, size_t cap, struct event_queue **ret);
/* Unsubscribe and free. NULL is accepted. */
void event_queue_free(struct event_queue *q);
/* Wait up to timeout_ms (< 0: forever) for an event. Returns 1 and *ret,
 * 0 on timeout. *ret_dropped (may be NULL) gets the count dropped since the
 * last call. */
int event_queue_pop(struct event_queue *q, int timeout_ms, struct event *ret, uint64_t *ret_dropped);

/* The `events` control command: stream every event as a JSON line until
 * the client closes or the server stops. */
struct control_client;
int events_cmd_stream(struct event_bus *b, struct control_client *cli, struct json_object *req);
