#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json-util.h"
#include "node-int.h"
#include <stdatomic.h>
#include "resync/limits.h"
#include "resync/macro.h"

static json_object *time_json(int64_t t)
{
	char buf[64];

	if (!t)
		return NULL;
	return json_object_new_string(clock_format_utc(t * 1000000, false, buf, sizeof(buf)));
}

/* ---- status: the truth from the primary's view (DESIGN.md, states) ----
 * The primary asks every secondary now and judges it against its own
 * generation and dirty bitmap, as a resync's plan decides quick mode; a
 * secondary forwards the request to the primary, and only when the
 * primary answers nothing shows what it knows itself. */

/* What the judging node knows of the cluster. */
struct status_view {
	bool primary; /* this node is the primary: its view is the truth */
	bool own;     /* no primary configured: each node's own state */
	struct meta_info mi;
	struct meta_uuid base; /* the primary's bitmap counts since it */
	uint64_t dirty;	       /* the primary's dirty bytes */
};

/* One node's line of the status (made into JSON by status_node_json()). */
struct status_node {
	const struct node_config *nc;
	enum meta_state state;
	bool gen_known, dirty_known, lacks_known, connected;
	struct meta_uuid gen;
	uint64_t dirty, lacks;
	int64_t last_resync;
	/* Split brain or two primaries (node_peer_split_brain()): why. */
	bool split_brain;
	char reason[RESYNC_WIRE_TEXT_MAX];
	struct wire_undo_info undo; /* the undo journal it holds (WIRE_UNDO_HELD) */
	char error[RESYNC_WIRE_TEXT_MAX + 256];
	/* This node, named primary, refused the role (node_primary_init()). */
	char refused[RESYNC_WIRE_TEXT_MAX];
};

/* A peer's state from what it said (hello, status), judged by v. */
static void status_judge(const struct status_view *v, const struct wire_hello *h,
			 const struct wire_status *ws, struct status_node *sn)
{
	bool trusted = h->flags & WIRE_HELLO_BITMAP_TRUSTED;
	struct meta_uuid g;

	memcpy(g.b, h->generation.b, 16);
	/* As node_run_jobs() takes a quick resync: its generation is the
	 * primary's current one or the bitmap's base, both bitmaps
	 * trusted; then it lacks at most the blocks the primary marked. */
	if (v->primary && v->mi.bitmap_trusted && trusted && h->state != WIRE_STATE_INCONSISTENT &&
	    !meta_uuid_is_null(&g) &&
	    (!memcmp(g.b, v->mi.generation.b, 16) ||
	     (!meta_uuid_is_null(&v->base) && !memcmp(g.b, v->base.b, 16)))) {
		sn->lacks_known = true;
		sn->lacks = v->dirty;
	}
	if (h->state == WIRE_STATE_INCONSISTENT)
		sn->state = META_STATE_INCONSISTENT;
	else if (h->state == WIRE_STATE_DIVERGED || (trusted && ws->dirty_bytes > 0))
		sn->state = META_STATE_DIVERGED; /* writes of its own: a fact of its disk */
	else if (v->own)
		sn->state = meta_state_from_wire(h->state);
	else if (!v->primary)
		sn->state = META_STATE_UNKNOWN; /* behind or not: only the primary can say */
	else
		sn->state = sn->lacks_known && sn->lacks == 0 ? META_STATE_UPTODATE : META_STATE_OUTDATED;
}

/* The primary's judgement of a secondary from its hello and status, as
 * status shows it (the watch of drift.h judges its probes so). */
enum meta_state node_status_judge(struct node *n, const struct wire_hello *h,
				  const struct wire_status *ws)
{
	struct status_view v = {.primary = n->is_primary, .own = !cluster_config_primary_name(n->cfg)};
	struct status_node sn = {0};

	meta_info_get(node_meta(n), &v.mi);
	v.dirty = meta_dirty_bytes(node_meta(n));
	pthread_mutex_lock(&n->lock);
	v.base = n->base;
	pthread_mutex_unlock(&n->lock);
	status_judge(&v, h, ws, &sn);
	return sn.state;
}

/* Ask peer nc now; an answer judged by v, or Unknown with the reason. */
static void status_ask(struct node *n, const struct status_view *v, unsigned char *buf,
		       struct status_node *sn)
{
	struct peer_conn *c = NULL;
	struct wire_hello h;
	struct wire_status ws;
	int r;

	sn->state = META_STATE_UNKNOWN;
	r = node_peer_open(n, sn->nc, false, sn->error, sizeof(sn->error), &c, &h);
	if (r < 0)
		return;
	sn->connected = true;
	memcpy(sn->gen.b, h.generation.b, 16);
	sn->gen_known = true;
	r = node_peer_status(c, buf, &ws);
	if (r < 0) {
		/* Without its status it may hold writes of its own. */
		snprintf(sn->error, sizeof(sn->error), "node '%s': no status: %s", sn->nc->name,
			 r == -EBADMSG ? "malformed reply" : peer_conn_error(c));
		peer_conn_free(c);
		return;
	}
	if ((h.features & node_features() & WIRE_FEATURE_UNDO) &&
	    node_peer_undo_info(c, buf, &sn->undo) < 0)
		memset(&sn->undo, 0, sizeof(sn->undo));
	peer_conn_free(c);
	sn->dirty_known = true;
	sn->dirty = ws.dirty_bytes;
	sn->last_resync = (int64_t)ws.last_resync;
	status_judge(v, &h, &ws, sn);
	/* Split brain, or a peer that acts as primary too: judged on both
	 * sides (a secondary's own line shows what it saw). */
	sn->split_brain = node_peer_split_brain(
		n, &h, !(h.flags & WIRE_HELLO_BITMAP_TRUSTED) ? 2 : ws.dirty_bytes > 0,
		sn->reason, sizeof(sn->reason));
	if (sn->split_brain && v->primary && sn->state != META_STATE_INCONSISTENT)
		sn->state = META_STATE_DIVERGED;
}

/* This node's own line: its metadata, unless its image changed under it. */
static void status_self(struct node *n, const struct status_view *v, struct status_node *sn)
{
	char why[RESYNC_WIRE_TEXT_MAX];

	sn->state = v->mi.state;
	sn->gen = v->mi.generation;
	sn->gen_known = true;
	sn->dirty_known = true;
	sn->dirty = meta_dirty_bytes(node_meta(n));
	sn->connected = true;
	node_undo_info(n, &sn->undo);
	pthread_mutex_lock(&n->lock);
	sn->last_resync = n->last_resync;
	/* A secondary's own note (the primary's lines of its peers carry
	 * theirs). */
	sn->split_brain = !n->is_primary && n->split_brain[0];
	if (sn->split_brain)
		snprintf(sn->reason, sizeof(sn->reason), "%s", n->split_brain);
	snprintf(sn->refused, sizeof(sn->refused), "%s", n->promote_refused);
	pthread_mutex_unlock(&n->lock);
	if (node_volume_check(n, why, sizeof(why)) < 0) {
		sn->state = META_STATE_UNKNOWN;
		snprintf(sn->error, sizeof(sn->error), "node '%s': %s", n->self->name, why);
	}
}

/* The last proof of secondary nc that this node (the primary) made:
 * null when none since it started. */
static json_object *status_proof_json(struct node *n, const struct node_config *nc)
{
	size_t k = (size_t)(nc - n->cfg->nodes);
	struct node_proof_last p = {0};
	json_object *o;

	pthread_mutex_lock(&n->lock);
	if (n->proof_last && k < n->cfg->n_nodes)
		p = n->proof_last[k];
	pthread_mutex_unlock(&n->lock);
	if (!p.set)
		return NULL;
	o = json_object_new_object();
	json_object_object_add(o, "root", json_object_new_string(p.root));
	json_object_object_add(o, "primary_root", json_object_new_string(p.primary_root));
	json_object_object_add(o, "match", json_object_new_boolean(p.match));
	json_object_object_add(o, "time", time_json(p.time));
	return o;
}

static json_object *status_node_json(struct node *n, const struct status_node *sn)
{
	const struct cluster_config *cfg = n->cfg;
	json_object *o = json_object_new_object();
	bool primary = cluster_config_primary_is(cfg, sn->nc->name);
	char u[40];

	json_object_object_add(o, "name", json_object_new_string(sn->nc->name));
	json_object_object_add(o, "role", json_object_new_string(primary ? "primary" : "secondary"));
	json_object_object_add(o, "state", json_object_new_string(meta_state_name(sn->state)));
	json_object_object_add(o, "generation", sn->gen_known
			       ? json_object_new_string(meta_uuid_format(&sn->gen, u, sizeof(u))) : NULL);
	json_object_object_add(o, "dirty_bytes", sn->dirty_known ? json_object_new_uint64(sn->dirty) : NULL);
	/* The bytes it lacks of the primary's: known only where the
	 * primary's bitmap counts them (a secondary's only). */
	if (!primary)
		json_object_object_add(o, "lacks_bytes",
				       sn->lacks_known ? json_object_new_uint64(sn->lacks) : NULL);
	json_object_object_add(o, "connected", json_object_new_boolean(sn->connected));
	json_object_object_add(o, "last_resync", time_json(sn->last_resync));
	/* last_verify, verify_differing_bytes, ... (drift.h). */
	drift_status_json(n, sn->nc, o);
	/* The undo window held: a rollback can put its last resync back. */
	if (sn->undo.flags & WIRE_UNDO_HELD) {
		json_object *uo = json_object_new_object();

		json_object_object_add(uo, "bytes", json_object_new_uint64(sn->undo.bytes));
		json_object_object_add(uo, "saved_bytes", json_object_new_uint64(sn->undo.saved));
		json_object_object_add(uo, "created", time_json((int64_t)sn->undo.created));
		json_object_object_add(uo, "until", time_json((int64_t)sn->undo.until));
		json_object_object_add(uo, "restores_state", json_object_new_string(meta_state_name(
								     meta_state_from_wire(sn->undo.state))));
		json_object_object_add(uo, "rollback_interrupted",
				       json_object_new_boolean(sn->undo.flags & WIRE_UNDO_ROLLBACK));
		json_object_object_add(o, "undo", uo);
	} else {
		json_object_object_add(o, "undo", NULL);
	}
	if (!primary)
		json_object_object_add(o, "proof", status_proof_json(n, sn->nc));
	json_object_object_add(o, "split_brain", json_object_new_boolean(sn->split_brain));
	if (sn->split_brain)
		json_object_object_add(o, "reason", json_object_new_string(sn->reason));
	if (sn->error[0])
		json_object_object_add(o, "error", json_object_new_string(sn->error));
	if (sn->refused[0])
		json_object_object_add(o, "promotion_refused", json_object_new_string(sn->refused));
	return o;
}

/* The status as the node asked answers it: "node" is that node, "view"
 * the node whose view the states are. */
static json_object *status_result(struct node *n, const char *view, const char *primary_error)
{
	json_object *res = json_object_new_object();

	json_object_object_add(res, "cluster", json_object_new_string(n->cfg->name));
	json_object_object_add(res, "primary",
			       json_string_or_null(cluster_config_primary_name(n->cfg)));
	json_object_object_add(res, "node", json_object_new_string(n->self->name));
	json_object_object_add(res, "view", json_object_new_string(view));
	if (primary_error)
		json_object_object_add(res, "primary_error", json_object_new_string(primary_error));
	node_etcd_status_json(n, res); /* issue 14 */
	return res;
}

/* The primary's status relayed by a secondary: the node asked is this one. */
static void status_forward_edit(struct node *n, json_object *result)
{
	json_object_object_add(result, "node", json_object_new_string(n->self->name));
	node_etcd_status_json(n, result); /* issue 14: as this node sees etcd */
}

/* The status judged here: on the primary (the truth), in a cluster without
 * one, or on a secondary whose primary answered nothing (primary_error:
 * why; the primary Unknown, the others Unknown unless their own disks
 * say Inconsistent or Diverged, this node as it knows itself). */
static int status_local(struct node *n, struct control_client *cli, const char *primary_error)
{
	const struct cluster_config *cfg = n->cfg;
	_cleanup_free_ unsigned char *buf = malloc(RESYNC_WIRE_FRAME_MAX);
	_cleanup_free_ struct status_node *sn = calloc(cfg->n_nodes, sizeof(*sn));
	struct status_view v = {.primary = n->is_primary, .own = !cluster_config_primary_name(cfg)};
	json_object *res, *nodes;

	if (!buf || !sn)
		return -ENOMEM;
	meta_info_get(node_meta(n), &v.mi);
	v.dirty = meta_dirty_bytes(node_meta(n));
	pthread_mutex_lock(&n->lock);
	v.base = n->base;
	pthread_mutex_unlock(&n->lock);
	for (size_t i = 0; i < cfg->n_nodes; i++) {
		sn[i].nc = &cfg->nodes[i];
		if (sn[i].nc == n->self) {
			status_self(n, &v, &sn[i]);
		} else if (primary_error && cluster_config_primary_is(cfg, sn[i].nc->name)) {
			sn[i].state = META_STATE_UNKNOWN;
			snprintf(sn[i].error, sizeof(sn[i].error), "%s", primary_error);
		} else {
			status_ask(n, &v, buf, &sn[i]);
		}
	}
	res = status_result(n, n->self->name, primary_error);
	nodes = json_object_new_array();
	for (size_t i = 0; i < cfg->n_nodes; i++)
		json_object_array_add(nodes, status_node_json(n, &sn[i]));
	json_object_object_add(res, "nodes", nodes);
	return control_client_result(cli, res);
}

static int cmd_status(void *userdata, struct control_client *cli, json_object *req)
{
	struct node *n = userdata;
	char err[1024];
	int r;

	if (n->is_primary || !cluster_config_primary_name(n->cfg))
		return status_local(n, cli, NULL);
	/* Named primary but refused the role: no primary to ask. */
	pthread_mutex_lock(&n->lock);
	snprintf(err, sizeof(err), "%s", n->promote_refused);
	pthread_mutex_unlock(&n->lock);
	if (err[0] && cluster_config_primary_is(n->cfg, n->self->name))
		return status_local(n, cli, err);
	r = node_forward_try(n, cli, req, status_forward_edit, err, sizeof(err));
	if (r != 1)
		return r;
	log_warning("status from this node's own view: %s", err);
	return status_local(n, cli, err);
}

static int cmd_verify(void *userdata, struct control_client *cli, json_object *req)
{
	return node_run_jobs(userdata, cli, req, false);
}

static int cmd_resync(void *userdata, struct control_client *cli, json_object *req)
{
	return node_run_jobs(userdata, cli, req, true);
}

static bool node_resync_running(struct node *n)
{
	bool running;

	pthread_mutex_lock(&n->lock);
	running = n->resync_running;
	pthread_mutex_unlock(&n->lock);
	return running;
}

static int cmd_cancel(void *userdata, struct control_client *cli, json_object *req)
{
	struct node *n = userdata;
	bool running;

	if (!n->is_primary && cluster_config_primary_name(n->cfg))
		return node_forward(n, cli, req);
	running = node_resync_running(n);
	if (running)
		atomic_store(&n->cancel, true);
	json_object *o = json_object_new_object();

	json_object_object_add(o, "cancelled", json_object_new_boolean(running));
	return control_client_result(cli, o);
}

/* The primary asks secondary nc to roll back (ROLLBACK) on a session of
 * its own. Never beside a run of this node: the secondary takes a newer
 * session of the primary that may rewrite it (as this one) for the
 * primary's only one, and ends the older (session-hello.c), so the two
 * are kept apart here. Returns 0 (*ret_bytes put back) or -errno, why
 * said in why. */
static int rollback_remote(struct node *n, const struct node_config *nc, uint64_t *ret_bytes,
			   char *why, size_t whylen)
{
	_cleanup_free_ unsigned char *buf = malloc(RESYNC_WIRE_FRAME_MAX);
	struct peer_conn *c = NULL;
	struct wire_hello h;
	char err[RESYNC_WIRE_TEXT_MAX + 128];
	int r;

	if (!buf)
		return -ENOMEM;
	pthread_mutex_lock(&n->lock);
	if (n->resync_running) {
		pthread_mutex_unlock(&n->lock);
		snprintf(why, whylen, "refused: a resync or verify is running: roll back after it");
		return -EBUSY;
	}
	n->resync_running = true;
	pthread_mutex_unlock(&n->lock);
	r = node_peer_open(n, nc, true, why, whylen, &c, &h);
	if (r >= 0 && !(h.features & node_features() & WIRE_FEATURE_UNDO)) {
		snprintf(why, whylen, "'%s' cannot roll back (an older build)", nc->name);
		r = -EOPNOTSUPP;
	} else if (r >= 0) {
		r = node_peer_rollback(c, buf, ret_bytes, err, sizeof(err));
		if (r < 0)
			snprintf(why, whylen, "rollback of '%s' failed: %s", nc->name, err);
	}
	peer_conn_free(c);
	pthread_mutex_lock(&n->lock);
	n->resync_running = false;
	pthread_mutex_unlock(&n->lock);
	return r;
}

/* rollback NODE: put back what the last resync overwrote on NODE, from
 * its undo journal. This node's own volume here; another's through the
 * primary (a secondary forwards), which sends it ROLLBACK. */
static int cmd_rollback(void *userdata, struct control_client *cli, json_object *req)
{
	struct node *n = userdata;
	const char *name = json_object_get_string(json_object_object_get(req, "node"));
	const struct node_config *nc = cluster_config_node(n->cfg, name ? name : "");
	char why[RESYNC_WIRE_TEXT_MAX + 256];
	uint64_t bytes = 0;
	json_object *o;
	int r;

	if (!nc)
		return control_client_error(cli, "refused: '%s' is not a node of cluster '%s'",
					    name ? name : "", n->cfg->name);
	if (nc == n->self) {
		if (n->is_primary)
			return control_client_error(cli, "refused: '%s' is the primary: a resync never "
						    "overwrites it", name);
		r = node_undo_rollback(n, true, &bytes, why, sizeof(why));
		if (r < 0)
			return control_client_error(cli, "%s", why);
	} else if (!n->is_primary) {
		return node_forward(n, cli, req);
	} else {
		r = rollback_remote(n, nc, &bytes, why, sizeof(why));
		if (r < 0)
			return control_client_error(cli, "%s", why);
	}
	o = json_object_new_object();
	json_object_object_add(o, "node", json_object_new_string(name));
	json_object_object_add(o, "rolled_back", json_object_new_boolean(true));
	json_object_object_add(o, "bytes", json_object_new_uint64(bytes));
	return control_client_result(cli, o);
}

/* promote, with "force": this node, named primary and refusing the role
 * (its volume Inconsistent), acts as primary with the data it holds
 * (node_primary_force()). Answered by this node, never forwarded: an
 * operator runs it on the node whose data they choose. */
static int cmd_promote(void *userdata, struct control_client *cli, json_object *req)
{
	struct node *n = userdata;
	char why[RESYNC_WIRE_TEXT_MAX + 256];
	json_object *o;

	if (!json_object_get_boolean(json_object_object_get(req, "force")))
		return control_client_error(
		    cli, "refused: the primary is the node the configuration or etcd's leader key "
			 "names; promote only overrides the refusal of a named primary whose volume "
			 "is Inconsistent, with \"force\": true");
	if (node_primary_force(n, why, sizeof(why)) < 0)
		return control_client_error(cli, "%s", why);
	o = json_object_new_object();
	json_object_object_add(o, "node", json_object_new_string(n->self->name));
	json_object_object_add(o, "promoted", json_object_new_boolean(true));
	json_object_object_add(o, "message", json_object_new_string(why));
	return control_client_result(cli, o);
}

static int cmd_events(void *userdata, struct control_client *cli, json_object *req)
{
	return events_cmd_stream(((struct node *)userdata)->bus, cli, req);
}

/* pause, resume, rate: the running resync's pace (ratectl.h). */
static int cmd_pace(void *userdata, struct control_client *cli, json_object *req)
{
	struct node *n = userdata;

	if (!n->is_primary && cluster_config_primary_name(n->cfg))
		return node_forward(n, cli, req);
	return ratectl_cmd(&n->rate, node_resync_running(n), cli, req);
}

/* The fields each command accepts (checked by the control socket before
 * the handler runs). verify and resync read the same ones
 * (node_run_jobs()); a resync erases unless it is a dry run, and then
 * also carries "confirm": "<cluster name>". */
static const struct control_field jobs_fields[] = {
	{"nodes", CONTROL_FIELD_STRINGS, 0},
	{"plan", CONTROL_FIELD_BOOL, 0},
	{"no_ranges", CONTROL_FIELD_BOOL, 0},
	{"dry_run", CONTROL_FIELD_BOOL, CONTROL_FIELD_DRY_RUN},
	{"max_rate", CONTROL_FIELD_UINT64, 0},
	{"fence", CONTROL_FIELD_STRING, 0}, /* "short" or "whole": the primary's fence */
	{"undo", CONTROL_FIELD_BOOL, 0},    /* true: undo = on for this run */
	{"delta", CONTROL_FIELD_STRING, 0}, /* "auto", "aligned" or "rolling" */
	/* Nodes in split brain that may be overwritten all the same. */
	{"force", CONTROL_FIELD_STRINGS, 0},
	/* A resync's: the token of the plan it follows, whose connections
	 * and walks it takes while they are still right (plan-keep.c). */
	{"plan_token", CONTROL_FIELD_STRING, 0},
	/* A plan's: its token in a line of its own before the result
	 * (node_run_jobs()), for a client that asks the resync at once. */
	{"token_first", CONTROL_FIELD_BOOL, 0},
	{NULL, 0, 0},
};
static const struct control_field rollback_fields[] = {
	{"node", CONTROL_FIELD_STRING, CONTROL_FIELD_REQUIRED},
	{NULL, 0, 0},
};
static const struct control_field promote_fields[] = {
	{"force", CONTROL_FIELD_BOOL, CONTROL_FIELD_REQUIRED},
	{NULL, 0, 0},
};
static const struct control_field rate_fields[] = {
	{"rate", CONTROL_FIELD_UINT64, CONTROL_FIELD_REQUIRED},
	{NULL, 0, 0},
};

const struct control_command node_commands[] = {
	{"status", cmd_status, NULL, 0},
	{"verify", cmd_verify, jobs_fields, 0},
	{"resync", cmd_resync, jobs_fields, CONTROL_CMD_ERASES},
	{"cancel", cmd_cancel, NULL, 0},
	{"events", cmd_events, NULL, 0},
	{"pause", cmd_pace, NULL, 0},
	{"resume", cmd_pace, NULL, 0},
	{"rate", cmd_pace, rate_fields, 0},
	{"rollback", cmd_rollback, rollback_fields, CONTROL_CMD_ERASES},
	/* Its data made the cluster's: the others' erased at the next resync. */
	{"promote", cmd_promote, promote_fields, CONTROL_CMD_ERASES},
};

const size_t node_commands_n = ARRAY_SIZE(node_commands);
