/* Prometheus metrics and /health over HTTP (libmicrohttpd), at a node's
 * `metrics = HOST:PORT` (an empty HOST means 127.0.0.1: loopback unless
 * asked otherwise).
 *
 * GET /metrics, text format 0.0.4:
 *   resync_node_state{node,state}          1 for each node's current state
 *                                          (this node from its metadata,
 *                                          peers as last seen), 0 for the
 *                                          other states
 *   resync_dirty_bytes{node}               this node's dirty bytes
 *   resync_in_progress                     1 while a resync runs from here
 *   resync_progress_ratio{node}            0..1 of the running or last resync
 *   resync_bytes_compared_total{node}      counter, every resync from here
 *   resync_bytes_sent_total{node}          counter
 *   resync_last_success_timestamp_seconds  unix time of the last success, 0 never
 *   resync_last_duration_seconds           the last resync's duration
 *   resync_last_result{result}             1 for success|failed|cancelled
 *                                          of the last resync
 *   resync_peer_connected{peer}            1 when the last contact with the
 *                                          peer succeeded
 *   resync_notifications_total{channel,outcome}  deliveries and failures
 *   resync_last_verify_timestamp_seconds, resync_verify_differing_bytes{node},
 *   resync_node_healthy{node}   drift detection (health.c, via render)
 * GET /health: with opts.health, its answer (health.c: 200 when this node
 * may serve reads, 503 and the reasons otherwise; ?ready also 503 while
 * fenced); without, 200 and {"status":"ok","cluster","node","state"}.
 *
 * Values come from the event bus and, for this node's state and dirty
 * bytes, from its metadata at each scrape. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"

struct event_bus;
struct meta;
struct metrics;

struct metrics_opts {
	const struct cluster_config *cfg; /* borrowed, outlives the server */
	const char *node;		  /* this node's name */
	const char *listen;		  /* HOST:PORT; port 0 picks a free one */
	struct event_bus *bus;		  /* subscribed */
	struct meta *meta;		  /* this node's metadata; NULL: state Unknown */
	/* /health's answer (the HTTP status; the body malloc'd into
	 * *ret_body), ready: /health?ready; NULL: 200 while serving. And
	 * more series for /metrics, written after the table's. Both called
	 * on the HTTP server's thread with arg. */
	unsigned (*health)(void *arg, bool ready, char **ret_body);
	void (*render)(void *arg, FILE *o);
	void *arg;
};

/* Subscribe and listen. Returns 0 and *ret, or -errno (-EADDRINUSE, ...). */
int metrics_new(const struct metrics_opts *o, struct metrics **ret);
/* Stop serving and unsubscribe. NULL is accepted. */
void metrics_free(struct metrics *m);
/* The port listened on. */
uint16_t metrics_port(const struct metrics *m);
/* The /metrics text, malloc'd into *ret. Returns 0 or -ENOMEM. Thread-safe. */
int metrics_render(struct metrics *m, char **ret);
