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

static int cmd_status(void *userdata, struct control_client *cli, json_object *req)
{
	struct node *n = userdata;
	json_object *res, *nodes;
	_cleanup_free_ unsigned char *buf = malloc(RESYNC_WIRE_FRAME_MAX);
	char u[40];

	(void)req;
	if (!buf)
		return -ENOMEM;
	res = json_object_new_object();
	nodes = json_object_new_array();
	json_object_object_add(res, "cluster", json_object_new_string(n->cfg->name));
	json_object_object_add(res, "primary",
			       n->cfg->primary ? json_object_new_string(n->cfg->primary) : NULL);
	json_object_object_add(res, "node", json_object_new_string(n->self->name));
	for (size_t i = 0; i < n->cfg->n_nodes; i++) {
		const struct node_config *nc = &n->cfg->nodes[i];
		json_object *o = json_object_new_object();
		bool primary = n->cfg->primary && !strcmp(nc->name, n->cfg->primary);

		json_object_object_add(o, "name", json_object_new_string(nc->name));
		json_object_object_add(o, "role",
				       json_object_new_string(primary ? "primary" : "secondary"));
		if (nc == n->self) {
			struct meta_info mi;
			int64_t last;

			meta_info_get(node_meta(n), &mi);
			pthread_mutex_lock(&n->lock);
			last = n->last_resync;
			pthread_mutex_unlock(&n->lock);
			json_object_object_add(o, "state",
					       json_object_new_string(meta_state_name(mi.state)));
			json_object_object_add(o, "generation",
					       json_object_new_string(meta_uuid_format(&mi.generation, u, sizeof(u))));
			json_object_object_add(o, "dirty_bytes",
					       json_object_new_uint64(meta_dirty_bytes(node_meta(n))));
			json_object_object_add(o, "connected", json_object_new_boolean(true));
			json_object_object_add(o, "last_resync", time_json(last));
		} else {
			struct peer_conn *c = NULL;
			struct wire_hello h;
			struct wire_status ws;
			json_object *last = NULL;
			char err[512];

			if (node_peer_open(n, nc, false, err, sizeof(err), &c, &h) == 0) {
				struct meta_uuid g;

				memcpy(g.b, h.generation.b, 16);
				json_object_object_add(o, "state",
						       json_object_new_string(meta_state_name(meta_state_from_wire(h.state))));
				json_object_object_add(o, "generation",
						       json_object_new_string(meta_uuid_format(&g, u, sizeof(u))));
				if (node_peer_status(c, buf, &ws) == 0) {
					json_object_object_add(o, "dirty_bytes",
							       json_object_new_uint64(ws.dirty_bytes));
					last = time_json((int64_t)ws.last_resync);
				} else {
					json_object_object_add(o, "dirty_bytes", NULL);
				}
				json_object_object_add(o, "connected", json_object_new_boolean(true));
				peer_conn_free(c);
			} else {
				json_object_object_add(o, "state", json_object_new_string(meta_state_name(META_STATE_UNKNOWN)));
				json_object_object_add(o, "generation", NULL);
				json_object_object_add(o, "dirty_bytes", NULL);
				json_object_object_add(o, "connected", json_object_new_boolean(false));
				json_object_object_add(o, "error", json_object_new_string(err));
			}
			json_object_object_add(o, "last_resync", last);
		}
		json_object_array_add(nodes, o);
	}
	json_object_object_add(res, "nodes", nodes);
	return control_client_result(cli, res);
}

static int cmd_verify(void *userdata, struct control_client *cli, json_object *req)
{
	return node_run_jobs(userdata, cli, req, false);
}

static int cmd_resync(void *userdata, struct control_client *cli, json_object *req)
{
	return node_run_jobs(userdata, cli, req, true);
}

static int cmd_cancel(void *userdata, struct control_client *cli, json_object *req)
{
	struct node *n = userdata;
	bool running;

	if (!n->is_primary && n->cfg->primary)
		return node_forward(n, cli, req);
	pthread_mutex_lock(&n->lock);
	running = n->resync_running;
	pthread_mutex_unlock(&n->lock);
	if (running)
		atomic_store(&n->cancel, true);
	json_object *o = json_object_new_object();

	json_object_object_add(o, "cancelled", json_object_new_boolean(running));
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
	bool running;

	if (!n->is_primary && n->cfg->primary)
		return node_forward(n, cli, req);
	pthread_mutex_lock(&n->lock);
	running = n->resync_running;
	pthread_mutex_unlock(&n->lock);
	return ratectl_cmd(&n->rate, running, cli, req);
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
	{NULL},
};
static const struct control_field rate_fields[] = {
	{"rate", CONTROL_FIELD_UINT64, CONTROL_FIELD_REQUIRED},
	{NULL},
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
};

const size_t node_commands_n = ARRAY_SIZE(node_commands);
