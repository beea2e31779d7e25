/* The web dashboard (libmicrohttpd), at a node's `web = HOST:PORT`: the
 * cluster's overview, the Resync Cluster button with its confirmation
 * dialog, live progress and the result, Verify, the event log. Every
 * asset is built into the binary (daemon/web-assets/).
 *
 * Everything the dashboard asks or does goes through the node's own
 * control socket, as resyncctl does: the same checked requests, the same
 * "confirm": "<cluster name>" on a resync, the same forwarding to the
 * primary from a secondary. Live updates are server-sent events fed by
 * the `events` command's stream and by the reply lines of the actions
 * the dashboard started.
 *
 * Endpoints (JSON unless said):
 *   GET  /, /app.js, /app.css    the page (no inline script or style)
 *   GET  /api/session            who is asking: logged in, CSRF token, ...
 *   POST /api/login              {"token"}: a session cookie and a CSRF token
 *   POST /api/logout
 *   GET  /api/status             the `status` command's result and what the
 *                                dashboard may offer (the button or why not)
 *   GET  /api/events             text/event-stream: the recent messages,
 *                                then live ones
 *   POST /api/plan               a resync's plan (verify, plan: true)
 *   POST /api/verify             verify
 *   POST /api/resync             {"confirm": "<cluster name>"}
 *   POST /api/cancel             cancel the running resync or verify
 * plan, verify and resync answer 202 {"action": ID} and run on a thread of
 * the dashboard; their reply lines come as {"type":"action","id":ID,...}
 * on the event stream.
 *
 * Security: the read-only endpoints need a session unless
 * web_public_status = true; every POST but the login needs the session
 * cookie (HttpOnly, SameSite=Strict) and its CSRF token in the
 * X-CSRF-Token header, else 403 and nothing is done; the login token is
 * read from web_token_file, which must not be readable by group or
 * others; every response carries a strict Content-Security-Policy; a
 * non-loopback address is refused unless web_allow_remote = true, and on
 * loopback the Host header must name loopback (DNS rebinding). */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct volume;
struct web;

struct web_opts {
	const struct cluster_config *cfg; /* borrowed, outlives the server */
	const struct node_config *self;	  /* this node: its web and control */
	const struct volume *vol;	  /* its volume (the strip's scale); may be NULL */
};

/* Check the configuration (address, token file), listen, and start the
 * event-stream reader. On failure a message naming what is wrong is
 * written to err. Returns 0 and *ret, or -errno (-EPERM: a token file
 * others may read, or a non-loopback address without web_allow_remote;
 * -EINVAL; -EADDRINUSE ...). */
int web_new(const struct web_opts *o, char *err, size_t errlen, struct web **ret);
/* Stop serving: end the event streams, close the dashboard's control
 * connections, join every thread it started. NULL is accepted. */
void web_free(struct web *w);
/* The port listened on. */
uint16_t web_port(const struct web *w);
