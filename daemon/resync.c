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
#include "resync/blockcmp.h"
#include "resync/limits.h"
#include "resync/macro.h"

static json_object *ranges_json(const struct rangelist *l)
{
	json_object *a = json_object_new_array();

	for (size_t i = 0; i < l->n; i++) {
		json_object *r = json_object_new_array();

		json_object_array_add(r, json_object_new_uint64(l->v[i].off));
		json_object_array_add(r, json_object_new_uint64(l->v[i].len));
		json_object_array_add(a, r);
	}
	return a;
}


static bool req_bool(json_object *req, const char *key)
{
	json_object *v;

	return json_object_object_get_ex(req, key, &v) && json_object_get_boolean(v);
}

static bool req_names_has(json_object *req, const char *name)
{
	json_object *a;

	if (!json_object_object_get_ex(req, "nodes", &a) || !json_object_is_type(a, json_type_array) ||
	    json_object_array_length(a) == 0)
		return true;
	for (size_t i = 0; i < json_object_array_length(a); i++)
		if (!strcmp(json_object_get_string(json_object_array_get_idx(a, i)), name))
			return true;
	return false;
}


/* verify (write = false) and resync (write = true, unless dry_run). */
int node_run_jobs(struct node *n, struct control_client *cli, json_object *req, bool write)
{
	const struct cluster_config *cfg = n->cfg;
	struct blockcmp_opts o = {.block_size = cfg->block_size};
	_cleanup_free_ struct hash128 *hashes = NULL;
	_cleanup_free_ struct job *jobs = NULL;
	struct tree_cache tc = {0};
	_cleanup_free_ unsigned char *pbitmap = NULL;
	struct hashtree *tree = NULL;
	pthread_mutex_t cli_lock = PTHREAD_MUTEX_INITIALIZER;
	uint64_t size = node_size(n), nb = DIV_ROUND_UP(size, cfg->block_size), max_rate, nl;
	uint32_t leaf = cfg->block_size;
	unsigned fanout = RESYNC_HASHTREE_FANOUT_DEFAULT;
	json_object *res, *arr, *v, *final = NULL;
	struct meta_info mi;
	size_t nj = 0, failed = 0;
	bool frozen = false, all = true, plan = req_bool(req, "plan"), any_full = false;
	/* A client that shows no ranges may say so: thousands of scattered
	 * ranges are most of a reply's bytes. */
	bool no_ranges = req_bool(req, "no_ranges");
	size_t n_quick = 0;
	size_t bitmap_size = (size_t)DIV_ROUND_UP(nb, 8);
	struct meta_uuid base;
	char u[40], verr[RESYNC_WIRE_TEXT_MAX];
	int r;

	if (cfg->n_nodes < 2)
		return control_client_error(cli, "refused: cluster '%s' has one node; a resync needs two or more",
					    cfg->name), 0;
	if (!cfg->primary)
		return control_client_error(cli, "refused: cluster '%s' has no primary (set 'primary' in [cluster])",
					    cfg->name), 0;
	if (!n->is_primary)
		return node_forward(n, cli, req);
	max_rate = cfg->max_rate;
	if (json_object_object_get_ex(req, "max_rate", &v))
		max_rate = (uint64_t)json_object_get_uint64(v);
	if (req_bool(req, "dry_run"))
		write = false;
	/* The named nodes must exist and be secondaries. */
	if (json_object_object_get_ex(req, "nodes", &v) && json_object_is_type(v, json_type_array)) {
		for (size_t i = 0; i < json_object_array_length(v); i++) {
			const char *s = json_object_get_string(json_object_array_get_idx(v, i));
			const struct node_config *nc = cluster_config_node(cfg, s ? s : "");

			if (!nc || nc == n->self)
				return control_client_error(cli, "refused: '%s' is not a secondary of cluster '%s'",
							    s ? s : "", cfg->name), 0;
		}
	}
	pthread_mutex_lock(&n->lock);
	if (n->resync_running) {
		pthread_mutex_unlock(&n->lock);
		return control_client_error(cli, "refused: a resync or verify is already running"), 0;
	}
	n->resync_running = true;
	pthread_mutex_unlock(&n->lock);
	atomic_store(&n->cancel, false);
	ratectl_reset(&n->rate, max_rate);

	jobs = calloc(cfg->n_nodes, sizeof(*jobs));
	if (!jobs) {
		r = -ENOMEM;
		goto out;
	}
	if (write) {
		/* The primary's image stays still while it is read for the
		 * secondaries: writes wait at the fence until the commit. */
		r = fusefs_fence_freeze(n->fs, FUSEFS_FENCE_WAIT);
		if (r < 0)
			goto out;
		frozen = true;
	}
	/* Nothing is hashed, sent or reported of an image that changed
	 * under this daemon (node_volume_check()). */
	r = node_volume_check(n, verr, sizeof(verr));
	if (r < 0) {
		control_client_error(cli, "node '%s': %s", n->self->name, verr);
		r = 0;
		goto out;
	}
	meta_info_get(node_meta(n), &mi);
	pthread_mutex_lock(&n->lock);
	base = n->base;
	pthread_mutex_unlock(&n->lock);

	/* Phase one: every chosen secondary's hello and status, in parallel. */
	for (size_t i = 0; i < cfg->n_nodes; i++) {
		const struct node_config *nc = &cfg->nodes[i];
		struct job *j;

		if (nc == n->self)
			continue;
		if (!req_names_has(req, nc->name)) {
			all = false;
			continue;
		}
		j = &jobs[nj++];
		j->n = n;
		j->peer = nc;
		j->cli = cli;
		j->cli_lock = &cli_lock;
		j->write = write;
		j->max_rate = max_rate;
		j->gen = mi.generation;
		j->bitmap_size = bitmap_size;
		j->started = !pthread_create(&j->t, NULL, job_open_thread, j);
		if (!j->started) {
			j->r = -EAGAIN;
			snprintf(j->err, sizeof(j->err), "cannot start a thread");
			snprintf(j->state, sizeof(j->state), "Unknown");
		}
	}
	for (size_t i = 0; i < nj; i++)
		if (jobs[i].started)
			pthread_join(jobs[i].t, NULL);

	/* The way for each: quick when its generation is the primary's
	 * current one or the bitmap's base and both bitmaps are trusted
	 * (the verify command itself always compares). */
	for (size_t i = 0; i < nj; i++) {
		struct job *j = &jobs[i];
		struct meta_uuid g;
		bool trusted;

		if (!j->opened)
			continue;
		memcpy(g.b, j->hello.generation.b, 16);
		trusted = j->hello.flags & WIRE_HELLO_BITMAP_TRUSTED;
		j->diverged = trusted && j->status.dirty_bytes > 0 &&
			      j->hello.state != WIRE_STATE_INCONSISTENT;
		if (j->diverged)
			/* Seen again at every plan and verify: for the event
			 * stream, not a notification (the secondary sent that
			 * when it turned Diverged). */
			event_publish_state(n->bus, j->peer->name, wire_state_name(j->hello.state),
					    "Diverged", true, "it holds writes that the primary lacks");
		j->resume = j->hello.state == WIRE_STATE_INCONSISTENT &&
			    (j->status.flags & WIRE_STATUS_CHECKPOINT) &&
			    !memcmp(j->status.checkpoint_id.b, mi.generation.b, 16);
		if ((write || plan) && mi.bitmap_trusted && trusted &&
		    j->hello.state != WIRE_STATE_INCONSISTENT && !meta_uuid_is_null(&g) &&
		    (!memcmp(g.b, mi.generation.b, 16) ||
		     (!meta_uuid_is_null(&base) && !memcmp(g.b, base.b, 16))))
			j->mode = JOB_QUICK, n_quick++;
		else
			any_full = true;
	}
	/* The tree's leaves: pages (or what keeps a large volume's tree
	 * small) when every secondary to compare can name them, blocks
	 * otherwise; with page leaves a smaller fanout keeps the hashes
	 * asked for near the scattered pages that differ. */
	leaf = wire_tree_leaf(size, cfg->block_size);
	for (size_t i = 0; i < nj; i++)
		if (jobs[i].opened && jobs[i].mode == JOB_FULL &&
		    !(jobs[i].features & WIRE_FEATURE_FINE_LEAVES))
			leaf = cfg->block_size;
	if (leaf < cfg->block_size)
		fanout = NODE_FINE_FANOUT;
	nl = DIV_ROUND_UP(size, leaf);
	o.block_size = leaf;
	for (size_t i = 0; i < nj; i++) {
		jobs[i].leaf = leaf;
		jobs[i].fanout = fanout;
	}
	/* One seed for the tree and for the page hashes of every job. */
	r = hash_seed_random(&o.seed);
	if (r < 0)
		goto out;
	if (any_full && tree_cache_take(n, 0, fanout, leaf, &tc)) {
		/* The plan's tree of this unchanged image, and its seed: each
		 * secondary finds its own tree of that seed in its cache. */
		hashes = TAKE_PTR(tc.hashes);
		tree = TAKE_PTR(tc.tree);
		o.seed = tc.seed;
		for (size_t i = 0; nl && i < nj; i++)
			job_prefetch(&jobs[i], o.seed);
	} else if (any_full) {
		tc.built = node_image_still(n, &tc.id) ? now_usec() : 0;
		hashes = calloc(nl ? nl : 1, sizeof(*hashes));
		if (!hashes) {
			r = -ENOMEM;
			goto out;
		}
		/* Each secondary hashes its volume while this one hashes its
		 * own: a first request (one leaf) makes it build its tree now,
		 * its answer is read at the start of the walk. */
		for (size_t i = 0; nl && i < nj; i++)
			job_prefetch(&jobs[i], o.seed);
		if (size) {
			r = blockcmp_hash_volume(fusefs_volume(n->fs), 0, size, &o, hashes);
			if (r < 0) {
				control_client_error(cli, "cannot read the primary's volume '%s': %s",
						     n->self->volume, strerror(-r));
				r = 0;
				goto out;
			}
		}
		r = hashtree_new(hashes, nl, fanout, o.seed, &tree);
		if (r < 0)
			goto out;
	}
	if (n_quick) {
		long long got;

		pbitmap = calloc(1, bitmap_size ? bitmap_size : 1);
		if (!pbitmap) {
			r = -ENOMEM;
			goto out;
		}
		got = meta_bitmap_read(node_meta(n), pbitmap, bitmap_size);
		if (got < 0) {
			r = (int)got;
			goto out;
		}
	}

	/* Phase two: compare and transfer, in parallel. */
	for (size_t i = 0; i < nj; i++) {
		struct job *j = &jobs[i];

		j->started = false;
		if (!j->opened)
			continue;
		j->tree = tree;
		j->seed = o.seed;
		j->pbitmap = pbitmap;
		if (write)
			event_publish_started(n->bus, j->peer->name, j->state,
					      meta_uuid_format(&mi.generation, u, sizeof(u)));
		j->started = !pthread_create(&j->t, NULL, job_thread, j);
		if (!j->started) {
			j->r = -EAGAIN;
			snprintf(j->err, sizeof(j->err), "cannot start a thread");
		}
	}
	for (size_t i = 0; i < nj; i++)
		if (jobs[i].started)
			pthread_join(jobs[i].t, NULL);

	res = json_object_new_object();
	arr = json_object_new_array();
	for (size_t i = 0; i < nj; i++) {
		struct job *j = &jobs[i];
		json_object *x = json_object_new_object();
		const char *result = j->r < 0 ? (j->r == -ECANCELED ? "cancelled" : "failed")
				     : write  ? "resynced"
				     : j->differing_bytes ? "differs"
							  : "identical";
		bool trusted = j->hello.flags & WIRE_HELLO_BITMAP_TRUSTED;

		if (j->r < 0)
			failed++;
		json_object_object_add(x, "name", json_object_new_string(j->peer->name));
		json_object_object_add(x, "result", json_object_new_string(result));
		json_object_object_add(x, "state", json_object_new_string(j->state));
		json_object_object_add(x, "mode",
				       json_object_new_string(j->mode == JOB_QUICK ? "quick" : "full"));
		json_object_object_add(x, "differing_blocks", json_object_new_uint64(j->differing_blocks));
		json_object_object_add(x, "differing_bytes", json_object_new_uint64(j->differing_bytes));
		/* The bytes it holds that the primary lacks: its writes since
		 * its last commit, when its bitmap can say. */
		json_object_object_add(x, "lacking_bytes", j->opened && trusted
				       ? json_object_new_uint64(j->status.dirty_bytes) : NULL);
		json_object_object_add(x, "resume_offset", j->resume
				       ? json_object_new_uint64(j->status.checkpoint_off) : NULL);
		if (!no_ranges)
			json_object_object_add(x, "ranges", ranges_json(&j->ranges));
		json_object_object_add(x, "bytes_compared", json_object_new_uint64(j->bytes_compared));
		json_object_object_add(x, "bytes_read",
				       json_object_new_uint64(j->bytes_read + (j->bytes_compared ? size : 0)));
		json_object_object_add(x, "bytes_sent", json_object_new_uint64(j->bytes_sent));
		json_object_object_add(x, "bytes_written", json_object_new_uint64(j->bytes_written));
		json_object_object_add(x, "seconds", json_object_new_double(j->seconds));
		if (j->r < 0)
			json_object_object_add(x, "error", json_object_new_string(j->err));
		json_object_array_add(arr, x);
		if (write)
			event_publish_end(n->bus, j->peer->name, j->r, j->state, j->bytes_compared,
					  j->bytes_sent, j->seconds, j->err);
	}
	if (write && !failed && all) {
		/* Every secondary has every block: the primary's marks may go,
		 * the generation they share becomes the bitmap's base, and
		 * the primary's later writes count under a new generation. */
		struct meta_uuid next;

		/* The base first: a crash before the metadata's update
		 * leaves the bits set under the same generation, which a
		 * quick resync still covers. */
		pthread_mutex_lock(&n->lock);
		n->base = mi.generation;
		r = node_state_save_locked(n);
		pthread_mutex_unlock(&n->lock);
		if (r >= 0)
			r = meta_uuid_random(&next);
		if (r >= 0)
			r = meta_resync_commit(node_meta(n), &next, false);
		if (r < 0)
			log_error("cannot start a new generation for '%s': %s", n->self->volume,
			      strerror(-r));
	}
	if (write && !failed)
		node_last_resync_set(n);
	json_object_object_add(res, "cluster", json_object_new_string(cfg->name));
	json_object_object_add(res, "primary", json_object_new_string(n->self->name));
	json_object_object_add(res, "generation",
			       json_object_new_string(meta_uuid_format(&mi.generation, u, sizeof(u))));
	json_object_object_add(res, "nodes", arr);
	if (write)
		log_printf(failed ? LOG_ERR : LOG_INFO, "resync of cluster '%s' finished: %zu of %zu secondaries failed", cfg->name,
		      failed, nj);
	if (write)
		event_publish_done(n->bus, nj, meta_uuid_format(&mi.generation, u, sizeof(u)));
	/* Sent last, once this run let go of everything: a client may
	 * start the next run the moment it reads the result. */
	final = res;
	r = 0;
out:
	for (size_t i = 0; jobs && i < nj; i++) {
		peer_conn_free(jobs[i].c);
		free(jobs[i].buf);
		rangelist_release(&jobs[i].ranges);
	}
	if (tree && tc.built) {
		/* This volume is not written by its own resync: a resync
		 * right after its plan reuses the tree. */
		tc.hashes = TAKE_PTR(hashes);
		tc.tree = TAKE_PTR(tree);
		tc.seed = o.seed;
		tc.fanout = fanout;
		tc.leaf = leaf;
		tree_cache_put(n, &tc);
	}
	hashtree_free(tree);
	if (frozen)
		fusefs_fence_thaw(n->fs);
	pthread_mutex_lock(&n->lock);
	n->resync_running = false;
	pthread_mutex_unlock(&n->lock);
	if (final)
		r = control_client_result(cli, final);
	return r;
}
