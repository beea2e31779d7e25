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

#include "job-hashif.h"
#include "node-int.h"
#include "resync/fileio.h"
#include "resync/macro.h"

/* ---- the node's state file (IMAGE.resync-node, JSON) ----
 * What the metadata does not hold: the last completed resync, the
 * primary's bitmap base, the last generation this node started as
 * primary (primary_generation), drift detection's "drift" (drift.c), and
 * the features each peer's last hello offered ("peer_features",
 * job-hashif.c). Replaced atomically (new file, fsync, rename). */

void node_state_load(struct node *n)
{
	json_object *o = json_object_from_file(n->state_path), *v;

	if (!o)
		return;
	if (json_object_object_get_ex(o, "last_resync", &v))
		n->last_resync = json_object_get_int64(v);
	if (json_object_object_get_ex(o, "base", &v) && json_object_get_string(v))
		meta_uuid_parse(json_object_get_string(v), &n->base);
	if (json_object_object_get_ex(o, "primary_generation", &v) && json_object_get_string(v))
		meta_uuid_parse(json_object_get_string(v), &n->primary_gen);
	else if (!json_object_object_get_ex(o, "primary_generation", &v) &&
		 !meta_uuid_is_null(&n->base))
		n->primary_gen_legacy = true; /* a primary of an older build */
	drift_state_load(n, o);
	early_state_load(n, o);
	json_object_put(o);
}

/* Called with n->lock held. */
int node_state_save_locked(struct node *n)
{
	json_object *o = json_object_new_object();
	const char *text;
	char u[40];
	int r;

	json_object_object_add(o, "last_resync", json_object_new_int64(n->last_resync));
	json_object_object_add(o, "base", meta_uuid_is_null(&n->base) ? NULL :
				   json_object_new_string(meta_uuid_format(&n->base, u, sizeof(u))));
	json_object_object_add(o, "primary_generation", meta_uuid_is_null(&n->primary_gen) ? NULL :
				   json_object_new_string(meta_uuid_format(&n->primary_gen, u, sizeof(u))));
	drift_state_save_locked(n, o);
	early_state_save_locked(n, o);
	text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	r = file_write_atomic(n->state_path, text, strlen(text), 0600);
	if (r < 0)
		log_error("cannot write '%s': %s", n->state_path, strerror(-r));
	json_object_put(o);
	return r;
}

void node_last_resync_set(struct node *n)
{
	pthread_mutex_lock(&n->lock);
	n->last_resync = time(NULL);
	node_state_save_locked(n);
	pthread_mutex_unlock(&n->lock);
}
