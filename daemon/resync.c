/* Verify and resync, from the primary (DESIGN.md, "A resync, from the
 * primary"): check the request, open every chosen secondary in parallel,
 * choose each one's way (quick from both bitmaps, or a full compare
 * through the hash tree), hash this volume once for all of them, run the
 * jobs in parallel, report, and, when every secondary has every block,
 * start the primary's next generation.
 *
 * Generations (DRBD's UUIDs): a secondary's commit gives it the primary's
 * current generation and clears its bitmap. When every secondary has
 * every block, the primary clears its own bitmap, records the generation
 * they now share as the bitmap's base and starts a new generation. A
 * secondary whose generation is the primary's current one or that base,
 * with both bitmaps trusted, needs only the union of both bitmaps (quick
 * resync); anything else is compared through the hash tree.
 *
 * The primary stays in service (DESIGN.md, step 6; the short fence, the
 * default): the mount records the blocks written from before this
 * volume is hashed (fusefs_track_start()); pass 1 is the compare and
 * transfer, unfenced; each further pass takes the blocks written during
 * the one before (fusefs_track_swap()) and sends them again to every
 * secondary in parallel, until the set is small (final_pass_bytes, or
 * what the measured rate sends in half a second) or max_passes passes
 * ran; then the primary's writes wait at its fence, the last set is
 * sent, every secondary commits, the primary commits (new generation,
 * bitmap cleared) and thaws. The invariant: the mount marks a block after
 * its bytes reached the image and before the write leaves the fence
 * (fusefs/track.h), so each set taken names every block written since
 * the last one whose bytes a read may have missed, and the set taken
 * under the freeze is complete. So after the commits every block that
 * differs between a secondary and the primary is dirty on the primary
 * under its new generation (written after the thaw), and a crash at any
 * point leaves the durable bitmaps honest: the primary clears its bitmap
 * only under the fence after every secondary committed, and a secondary
 * is Inconsistent on disk from its first data frame to its commit.
 *
 * The fence is bounded: the last pass and the commits get fence_max;
 * past it, the secondaries still at it are given up on (their
 * connections shut down: they stay Inconsistent, named in the result),
 * the primary keeps its bitmap and generation (the next resync covers
 * them) and thaws. A pause never holds the fence: it delays the last
 * pass (unfenced) until resume, and the last pass ignores it. */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "job-early.h"
#include "job-walk.h"
#include "resync-int.h"
#include "resync/limits.h"
#include "resync/macro.h"

struct job_open {
	struct node *n;
	struct job *j;
	const struct early_geom *early; /* the run's early request (job-early.c) */
};

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

/* Whether the request's "force" names node name. */
static bool req_force_has(json_object *req, const char *name)
{
	json_object *a;

	if (!json_object_object_get_ex(req, "force", &a) || !json_object_is_type(a, json_type_array))
		return false;
	for (size_t i = 0; i < json_object_array_length(a); i++) {
		const char *s = json_object_get_string(json_object_array_get_idx(a, i));

		if (s && !strcmp(s, name))
			return true;
	}
	return false;
}

/* A resync (or its plan) that would overwrite a node in split brain not
 * named by "force" is refused whole, before anything is written: which
 * node, why, and what it holds. A verify only reports it. Returns 1
 * when refused. */
static int resync_split_refuse(struct resync_run *run)
{
	char msg[4096], b[64];
	size_t off = 0;
	bool any = false;

	if (!run->write && !run->plan)
		return 0;
	for (size_t i = 0; i < run->nj; i++) {
		const struct job *j = &run->jobs[i];
		bool trusted = j->hello.flags & WIRE_HELLO_BITMAP_TRUSTED;

		if (!j->opened || !j->split_brain || j->forced)
			continue;
		if (trusted)
			snprintf(b, sizeof(b), "%" PRIu64 " bytes", j->status.dirty_bytes);
		else
			snprintf(b, sizeof(b), "an unknown amount");
		off += (size_t)snprintf(msg + off, off < sizeof(msg) ? sizeof(msg) - off : 0,
					"%snode '%s' is in split brain (%s); it holds %s of its own "
					"writes that a resync would erase",
					any ? "; " : "", j->peer->name, j->split_why, b);
		if (off >= sizeof(msg))
			off = sizeof(msg) - 1;
		any = true;
	}
	if (!any)
		return 0;
	control_client_error(run->cli,
			     "refused: %s; nothing was written. Never resolved automatically: "
			     "resync --force NODE overwrites NODE with the primary's data "
			     "(journaled for a rollback under undo = diverged or on)",
			     msg);
	return 1;
}

/* What the cluster and the request allow, before anything starts.
 * Returns 1 when the request was answered here (refused or forwarded),
 * 0 to go on, -errno. */
static int resync_check(struct resync_run *run)
{
	struct node *n = run->n;
	const struct cluster_config *cfg = n->cfg;
	json_object *v;

	if (cfg->n_nodes < 2)
		return control_client_error(run->cli, "refused: cluster '%s' has one node; a resync needs two or more",
					    cfg->name), 1;
	if (!cluster_config_primary_name(cfg) && cfg->etcd) /* issue 14 */
		return control_client_error(run->cli, "refused: cluster '%s' has no primary: etcd's leader key '%s' names no node of it, or etcd has not answered yet",
					    cfg->name, cfg->etcd->leader_key), 1;
	if (!cluster_config_primary_name(cfg))
		return control_client_error(run->cli, "refused: cluster '%s' has no primary (set 'primary' in [cluster])",
					    cfg->name), 1;
	if (!n->is_primary) {
		int r = node_forward(n, run->cli, run->req);

		return r < 0 ? r : 1;
	}
	run->max_rate = cfg->max_rate;
	if (json_object_object_get_ex(run->req, "max_rate", &v))
		run->max_rate = (uint64_t)json_object_get_uint64(v);
	if (req_bool(run->req, "dry_run"))
		run->write = false;
	run->whole = cfg->fence == CONFIG_FENCE_WHOLE;
	if (json_object_object_get_ex(run->req, "fence", &v)) {
		const char *f = json_object_get_string(v);

		if (strcmp(f, "short") && strcmp(f, "whole"))
			return control_client_error(run->cli, "refused: \"fence\" must be \"short\" or \"whole\", not '%s'",
						    f), 1;
		run->whole = !strcmp(f, "whole");
	}
	run->delta = cfg->delta;
	if (json_object_object_get_ex(run->req, "delta", &v) &&
	    config_delta_parse(json_object_get_string(v), &run->delta) < 0)
		return control_client_error(run->cli, "refused: \"delta\" must be \"auto\", \"aligned\" or \"rolling\", not '%s'",
					    json_object_get_string(v)), 1;
	/* The named nodes must exist and be secondaries. */
	if (json_object_object_get_ex(run->req, "nodes", &v) && json_object_is_type(v, json_type_array)) {
		for (size_t i = 0; i < json_object_array_length(v); i++) {
			const char *s = json_object_get_string(json_object_array_get_idx(v, i));
			const struct node_config *nc = cluster_config_node(cfg, s ? s : "");

			if (!nc || nc == n->self)
				return control_client_error(run->cli, "refused: '%s' is not a secondary of cluster '%s'",
							    s ? s : "", cfg->name), 1;
		}
	}
	return 0;
}

/* Phase one, all secondaries in parallel: connect, hellos, status (on
 * the plan's connection when the run took one: the hellos again, no
 * connect; a kept connection that fails is replaced by a new one). */
static void *job_open_thread(void *arg)
{
	struct job_open *o = arg;
	struct job *j = o->j;
	bool reached = false;
	int r = 0;

	j->t0 = clock_usec();
	j->state = META_STATE_UNKNOWN;
	j->buf = malloc(RESYNC_WIRE_FRAME_MAX);
	if (!j->buf) {
		j->r = -ENOMEM;
		return NULL;
	}
	FAILPOINT("primary-connect");
	if (j->kept) {
		struct peer_early e = {.type = WIRE_HASH_REQ, .payload = j->buf,
				       .rest = job_walk_first_rest, .rest_arg = j};
		bool early = j->memo_in && job_memo_first_req(j, j->memo_in, &e.len) >= 0;

		j->rt_base = peer_conn_round_trips(j->kept);
		j->ex_base = peer_conn_exchanges(j->kept);
		/* With the plan's walk: its first level asked for again in
		 * the same flight (the prefetch, most likely), and its
		 * differing pages behind it when allowed (job-early.c:
		 * job_early_wanted(), not behind a first level of more than
		 * two requests). */
		if (early && j->early_ok) {
			e.hello_flags = WIRE_HELLO_DATA_FOLLOWS;
			e.after = job_early_send;
			e.arg = j;
		}
		r = node_peer_open_status(o->n, j->peer, j->write, TAKE_PTR(j->kept),
					  early ? &e : NULL, j->buf, j->err, sizeof(j->err), &j->c,
					  &j->hello, &j->status, &reached);
		j->reused = r >= 0;
		j->early_first = r >= 0 && early;
		if (r < 0 && e.after)
			job_early_drop(j);
		if (r < 0) {
			log_info("resync of '%s': the plan's connection failed (%s): connecting anew",
				 j->peer->name, j->err);
			j->err[0] = 0;
			j->err_state_said = false;
			j->rt_base = j->ex_base = 0;
		}
	}
	if (!j->reused)
		r = job_open_early(o->n, j, o->early, &reached);
	event_publish_peer(o->n->bus, j->peer->name, reached);
	if (r < 0) {
		if (!j->err[0])
			snprintf(j->err, sizeof(j->err), "node '%s': %s", j->peer->name,
				 strerror(-r));
		log_error("resync of '%s' failed: %s", j->peer->name, j->err);
		j->r = r;
		return NULL;
	}
	node_peer_features_note(o->n, j->peer, j->hello.features);
	j->state = meta_state_from_wire(j->hello.state);
	j->features = j->hello.features & node_features();
	r = job_early_opened(j);
	if (r < 0) {
		log_error("resync of '%s' failed: %s", j->peer->name, j->err);
		j->r = r;
		j->state = META_STATE_INCONSISTENT;
		return NULL;
	}
	FAILPOINT("primary-hello-status");
	j->opened = true;
	return NULL;
}

/* Run fn on a thread for every job (arg[i] its argument), then join
 * them all; a job whose thread cannot start fails. */
static void resync_jobs_parallel(struct resync_run *run, void *(*fn)(void *), void *args,
				 size_t arg_size, bool opened_only)
{
	for (size_t i = 0; i < run->nj; i++) {
		struct job *j = &run->jobs[i];

		j->started = false;
		if (opened_only && !j->opened)
			continue;
		j->started = !pthread_create(&j->t, NULL, fn, (char *)args + i * arg_size);
		if (!j->started) {
			j->r = -EAGAIN;
			snprintf(j->err, sizeof(j->err), "cannot start a thread");
		}
	}
	for (size_t i = 0; i < run->nj; i++)
		if (run->jobs[i].started)
			pthread_join(run->jobs[i].t, NULL);
}

/* Phase one: a job for every chosen secondary; their hellos and status,
 * in parallel. */
static int resync_open(struct resync_run *run)
{
	struct node *n = run->n;
	const struct cluster_config *cfg = n->cfg;
	_cleanup_free_ struct job_open *opens = calloc(cfg->n_nodes, sizeof(*opens));

	run->jobs = calloc(cfg->n_nodes, sizeof(*run->jobs));
	if (!run->jobs || !opens)
		return -ENOMEM;
	for (size_t i = 0; i < cfg->n_nodes; i++) {
		const struct node_config *nc = &cfg->nodes[i];
		struct job *j;

		if (nc == n->self)
			continue;
		if (!req_names_has(run->req, nc->name)) {
			run->all = false;
			continue;
		}
		opens[run->nj] = (struct job_open){n, &run->jobs[run->nj], &run->early};
		j = &run->jobs[run->nj++];
		j->ctx = &run->ctx;
		j->peer = nc;
		j->cli = run->cli;
		j->cli_lock = &run->cli_lock;
		j->write = run->write;
		j->max_rate = run->max_rate;
		j->undo_mode = req_bool(run->req, "undo") ? UNDO_MODE_ON : cfg->undo;
		j->delta = run->delta;
		j->gen = run->mi.generation;
		j->bitmap_size = run->bitmap_size;
		j->state = META_STATE_UNKNOWN;
		/* The plan's connection and walk, when the run took them. */
		for (size_t k = 0; k < run->nkept; k++) {
			if (run->kept[k].peer != nc)
				continue;
			j->kept = TAKE_PTR(run->kept[k].c);
			j->memo_in = run->kept[k].memo.set ? &run->kept[k].memo : NULL;
			/* The plan measured this same connection. */
			if (j->kept && j->memo_in)
				j->reply_rate = j->memo_in->reply_rate;
			j->early_ok = job_early_wanted(j, cfg, req_force_has(run->req, nc->name));
		}
	}
	resync_early_plan(run);
	resync_jobs_parallel(run, job_open_thread, opens, sizeof(*opens), false);
	return 0;
}

/* The way for each: quick when its generation is the primary's current
 * one or the bitmap's base and both bitmaps are trusted (the verify
 * command itself always compares). */
static void resync_choose(struct resync_run *run)
{
	const struct meta_info *mi = &run->mi;

	for (size_t i = 0; i < run->nj; i++) {
		struct job *j = &run->jobs[i];
		struct meta_uuid g;
		bool trusted;

		if (!j->opened)
			continue;
		/* A plan keeps its connections for the resync that follows
		 * it, with peers that can say their hellos again. */
		j->keep_conn = run->plan && !run->write && (j->features & WIRE_FEATURE_REHELLO);
		memcpy(g.b, j->hello.generation.b, 16);
		trusted = j->hello.flags & WIRE_HELLO_BITMAP_TRUSTED;
		j->diverged = trusted && j->status.dirty_bytes > 0 &&
			      j->hello.state != WIRE_STATE_INCONSISTENT;
		/* Split brain (node_split_brain(), hello.c): announced by
		 * node_peer_split_brain(); refused by resync_split_refuse()
		 * unless forced, and then diverged: what it holds is
		 * journaled under undo = diverged. */
		j->split_brain = node_peer_split_brain(
			run->n, &j->hello, !trusted ? 2 : j->status.dirty_bytes > 0,
			j->split_why, sizeof(j->split_why));
		j->forced = j->split_brain && req_force_has(run->req, j->peer->name);
		if (j->forced) {
			j->diverged = true;
			if (j->undo_mode == UNDO_MODE_DIVERGED)
				j->undo_mode = UNDO_MODE_ON; /* the secondary journals it */
		}
		if (j->diverged)
			/* Seen again at every plan and verify: for the event
			 * stream, not a notification (the secondary sent that
			 * when it turned Diverged). */
			event_publish_state(run->n->bus, j->peer->name,
					    meta_state_from_wire(j->hello.state), META_STATE_DIVERGED, true, "it holds writes that the primary lacks");
		/* As the secondary decides it (session_hello()). */
		j->undo = j->undo_mode == UNDO_MODE_ON ||
			  (j->undo_mode == UNDO_MODE_DIVERGED &&
			   (j->diverged || j->hello.state == WIRE_STATE_DIVERGED));
		j->resume = j->hello.state == WIRE_STATE_INCONSISTENT &&
			    (j->status.flags & WIRE_STATUS_CHECKPOINT) &&
			    !memcmp(j->status.checkpoint_id.b, mi->generation.b, 16);
		/* A secondary a verify found differing has changes that
		 * no bitmap holds: only a compare finds them. */
		/* Data sent behind the hellos (job-early.c) has the walk's
		 * replies to come: a full compare. */
		if ((run->write || run->plan) && mi->bitmap_trusted && trusted && !j->early.n &&
		    !drift_verify_differs(run->n, j->peer) &&
		    j->hello.state != WIRE_STATE_INCONSISTENT && !meta_uuid_is_null(&g) &&
		    (!memcmp(g.b, mi->generation.b, 16) ||
		     (!meta_uuid_is_null(&run->base) && !memcmp(g.b, run->base.b, 16))))
			j->mode = JOB_QUICK, run->n_quick++;
		else
			run->any_full = true;
		j->memo_make = j->keep_conn && j->mode == JOB_FULL;
	}
}

/* before_resync_command for every secondary about to be written: one
 * whose command fails or times out is left out (its connection closed
 * before anything was sent: untouched) and reported; the others go on. */
static void resync_hooks(struct resync_run *run)
{
	struct node *n = run->n;

	if (!run->write || !n->cfg->before_resync_command)
		return;
	for (size_t i = 0; i < run->nj; i++) {
		struct job *j = &run->jobs[i];
		char why[RESYNC_WIRE_TEXT_MAX];
		int r;

		if (!j->opened)
			continue;
		r = node_hook_before_resync(n, j, j->mode == JOB_QUICK ? "quick" : "full", why,
					    sizeof(why));
		if (r >= 0)
			continue;
		snprintf(j->err, sizeof(j->err), "node '%s': not resynced: %s", j->peer->name, why);
		log_error("resync of '%s' skipped: %s", j->peer->name, why);
		j->r = r == -ECANCELED ? r : -EPERM;
		j->opened = false;
		peer_conn_free(TAKE_PTR(j->c));
	}
}

/* The primary's dirty bitmap, when a job is quick. */
static int resync_bitmap(struct resync_run *run)
{
	long long got;

	if (!run->n_quick)
		return 0;
	run->pbitmap = calloc(1, run->bitmap_size ? run->bitmap_size : 1);
	if (!run->pbitmap)
		return -ENOMEM;
	got = meta_bitmap_read(node_meta(run->n), run->pbitmap, run->bitmap_size);
	return got < 0 ? (int)got : 0;
}

/* Phase two: compare and transfer (fn: job_thread, or job_pass1_thread
 * for the first of several passes), in parallel. */
static void resync_run_jobs(struct resync_run *run, void *(*fn)(void *))
{
	char u[40];

	for (size_t i = 0; i < run->nj; i++) {
		struct job *j = &run->jobs[i];

		j->tree = run->tree;
		j->seed = run->o.seed;
		j->pbitmap = run->pbitmap;
		if (run->write && j->opened)
			event_publish_started(run->n->bus, j->peer->name, j->state,
					      meta_uuid_format(&run->mi.generation, u, sizeof(u)));
	}
	resync_jobs_parallel(run, fn, run->jobs, sizeof(*run->jobs), true);
}

/* Every secondary has every block: the primary's marks may go, the
 * generation they share becomes the bitmap's base, and the primary's
 * later writes count under a new generation. The base first: a crash
 * before the metadata's update leaves the bits set under the same
 * generation, which a quick resync still covers. */
void resync_next_generation(struct resync_run *run)
{
	struct node *n = run->n;
	struct meta_uuid next;
	int r;

	r = meta_uuid_random(&next);
	pthread_mutex_lock(&n->lock);
	n->base = run->mi.generation;
	n->primary_gen = next; /* started as primary: not a fork at the next start */
	n->split_brain[0] = 0; /* every secondary has the primary's data */
	if (r >= 0)
		r = node_state_save_locked(n);
	pthread_mutex_unlock(&n->lock);
	FAILPOINT("primary-generation-before");
	if (r >= 0)
		r = meta_resync_commit(node_meta(n), &next, false);
	FAILPOINT("primary-generation-after");
	/* Every secondary holds this image as of the fence, and every write
	 * from here on is marked: a bitmap untrusted since this image changed
	 * offline (or its metadata was rebuilt) is trusted again, else every
	 * later resync compares in full and shows its secondaries Outdated. */
	if (r >= 0 && !run->mi.bitmap_trusted)
		r = meta_trusted_set(node_meta(n), true);
	if (r < 0)
		log_error("cannot start a new generation for '%s': %s", n->self->volume,
			  strerror(-r));
}

/* Jobs that etcd stopped (the leader moved, etcd lost) say why rather
 * than "cancelled" (issue 14); a secondary that saw the same move first
 * and refused the next frame (SESSION_ROLE_CHANGED) is said after it. */
static void resync_etcd_note(struct resync_run *run)
{
	char why[RESYNC_WIRE_TEXT_MAX], was[sizeof(run->jobs[0].err)];

	if (!node_etcd_stopped(run->n, why, sizeof(why)))
		return;
	for (size_t i = 0; i < run->nj; i++) {
		struct job *j = &run->jobs[i];

		if (j->r >= 0)
			continue;
		if (!strcmp(j->err, "cancelled")) {
			snprintf(j->err, sizeof(j->err), "%s", why);
		} else if (strstr(j->err, SESSION_ROLE_CHANGED)) {
			snprintf(was, sizeof(was), "%s", j->err);
			if (snprintf(j->err, sizeof(j->err), "%s; %s", why, was) >=
			    (int)sizeof(j->err))
				log_trace("the reasons of '%s' cut short", j->peer->name);
		}
	}
}

/* Let go of everything the run holds; the tree of this volume (not
 * written by its own resync) is cached for a resync right after its
 * plan. */
static void resync_release(struct resync_run *run)
{
	struct node *n = run->n;

	for (size_t i = 0; run->jobs && i < run->nj; i++) {
		job_xfer_close(&run->jobs[i]);
		peer_conn_free(run->jobs[i].c);
		free(run->jobs[i].buf);
		rangelist_release(&run->jobs[i].ranges);
		rangelist_release(&run->jobs[i].early);
		moved_free(&run->jobs[i]);
		walk_memo_release(&run->jobs[i].memo);
		peer_conn_free(run->jobs[i].kept);
	}
	free(run->jobs);
	plan_kept_free(run->kept, run->nkept);
	if (run->tree && run->tc.built) {
		run->tc.hashes = TAKE_PTR(run->hashes);
		run->tc.tree = TAKE_PTR(run->tree);
		run->tc.seed = run->o.seed;
		run->tc.fanout = run->fanout;
		run->tc.leaf = run->o.block_size;
		tree_cache_put(n, &run->tc);
	}
	hashtree_free(run->tree);
	free(run->hashes);
	free(run->pbitmap);
	free(run->bytes_per_pass);
	rangelist_release(&run->set);
	if (run->frozen)
		node_fence_thaw(n);
	if (run->tracking)
		fusefs_track_stop(n->fs);
	pthread_mutex_destroy(&run->pass_lock);
	pthread_cond_destroy(&run->pass_cond);
	pthread_mutex_lock(&n->lock);
	n->resync_running = false;
	pthread_mutex_unlock(&n->lock);
	if (run->write)
		node_etcd_resync_end(n); /* issue 14: the lock, released last */
	pthread_mutex_destroy(&run->cli_lock);
}

/* A plan's token, when it kept connections, in a
 * line of its own ahead of the result ("token_first"): a client that
 * needs no more of the plan to ask for the resync (resyncctl resync
 * --yes) sends it at once, while the result, over a MB of JSON at 10 %
 * of a few GiB, is still on its way and being read. This run has let go
 * of everything: the request waits in the socket until the result is
 * out, as one sent after it would. */
static void resync_token_first(struct control_client *cli, json_object *final)
{
	json_object *tok, *o;

	/* A result line is ok (control_client_result()); a token, only
	 * when connections were kept (resync_keep_plan()). */
	if (!json_object_object_get_ex(final, "plan_token", &tok))
		return;
	o = json_object_new_object();
	json_object_object_add(o, "type", json_object_new_string("plan_kept"));
	json_object_object_add(o, "plan_token", json_object_get(tok));
	control_client_send(cli, o); /* a failure shows at the result's send */
	json_object_put(o);
}

/* verify (write = false) and resync (write = true, unless dry_run). */
int node_run_jobs(struct node *n, struct control_client *cli, json_object *req, bool write)
{
	struct resync_run run = {
		.n = n, .cli = cli, .req = req, .write = write, .all = true,
		.plan = req_bool(req, "plan"),
		/* A client that shows no ranges may say so: thousands of
		 * scattered ranges are most of a reply's bytes. */
		.no_ranges = req_bool(req, "no_ranges"),
		.ctx = {n->cfg, n->vol, n->bus, &n->rate, &n->cancel, NULL, NULL},
	};
	json_object *final = NULL;
	char verr[RESYNC_WIRE_TEXT_MAX];
	int r;

	log_trace("primary run: %s requested", write ? "resync" : run.plan ? "plan" : "verify");
	r = resync_check(&run);
	if (r != 0)
		return r < 0 ? r : 0;
	/* etcd (issue 14): the cluster-wide lock before anything is fenced,
	 * and its word before each commit. */
	if (run.write || run.plan) {
		r = node_etcd_resync_begin(n, cli, req, run.write);
		if (r != 0)
			return r < 0 ? r : 0;
		run.ctx.gate = n->etcd ? node_etcd_commit_gate : NULL;
		run.ctx.gate_arg = n;
	}
	pthread_mutex_lock(&n->lock);
	if (n->resync_running) {
		pthread_mutex_unlock(&n->lock);
		if (run.write)
			node_etcd_resync_end(n);
		return control_client_error(cli, "refused: a resync or verify is already running%s%s%s",
					    n->etcd ? " on the primary ('" : "",
					    n->etcd ? n->self->name : "", n->etcd ? "')" : ""), 0;
	}
	n->resync_running = true;
	pthread_mutex_unlock(&n->lock);
	/* The plan kept for this resync (its token), or let go: any other
	 * run leaves the plan's connections and walks stale. */
	{
		json_object *tv;
		const char *token = NULL;

		if (run.write && json_object_object_get_ex(req, "plan_token", &tv))
			token = json_object_get_string(tv);

		node_plan_keep_take(n, token, &run.kept, &run.nkept);
	}
	/* A scheduled verify yields: its step in flight ends first. */
	drift_yield(n);
	pthread_mutex_init(&run.cli_lock, NULL);
	pthread_mutex_init(&run.pass_lock, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&run.pass_cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	atomic_store(&n->cancel, false);
	if (node_etcd_stopped(n, verr, sizeof(verr))) /* issue 14: since the lock was taken */
		atomic_store(&n->cancel, true);
	ratectl_reset(&n->rate, run.max_rate);
	/* Nothing is hashed, sent or reported of an image that changed
	 * under this daemon (node_volume_check()). */
	r = node_volume_check(n, verr, sizeof(verr));
	if (r < 0) {
		control_client_error(cli, "node '%s': %s", n->self->name, verr);
		r = 0;
		goto out;
	}
	run.size = node_size(n);
	run.bitmap_size = (size_t)DIV_ROUND_UP(DIV_ROUND_UP(run.size, n->cfg->block_size), 8);

	if (run.write && !run.whole && n->fs) {
		/* Writes are recorded from before anything is read. */
		r = fusefs_track_start(n->fs, n->cfg->block_size);
		if (r < 0)
			log_warning("cannot record the primary's writes (%s): its writes wait for the whole resync",
				    strerror(-r));
		run.tracking = r >= 0;
		run.whole = r < 0;
	}
	if (run.write && run.whole) {
		/* The primary's image stays still while it is read for the
		 * secondaries: writes wait at the fence until the commit. */
		resync_fence_start(&run);
		r = node_fence_freeze(n);
		if (r < 0)
			goto out;
		run.frozen = true;
		run.why = "whole";
	}
	meta_info_get(node_meta(n), &run.mi);
	pthread_mutex_lock(&n->lock);
	run.base = n->base;
	pthread_mutex_unlock(&n->lock);

	r = resync_open(&run);
	if (r < 0)
		goto out;
	log_trace("primary run: secondaries opened");
	resync_choose(&run);
	FAILPOINT("primary-planned");
	if (resync_split_refuse(&run)) {
		r = 0;
		goto out;
	}
	resync_hooks(&run);
	resync_geometry(&run);
	r = resync_hash(&run);
	if (r != 0)
		goto out;
	if (run.hash_cut)
		goto report;
	log_trace("primary run: this volume's tree ready");
	FAILPOINT("primary-hashed");
	r = resync_bitmap(&run);
	if (r < 0)
		goto out;
	FAILPOINT("primary-bitmap-read");
	if (run.write && !run.whole) {
		resync_run_jobs(&run, job_pass1_thread);
		r = resync_passes(&run);
		if (r < 0)
			goto out;
	} else {
		resync_proof(&run);
		resync_run_jobs(&run, job_thread);
		if (run.write) {
			run.passes = 1;
			r = resync_pass_note(&run, 0);
			if (r < 0)
				goto out;
			run.passes = 1;
			for (size_t i = 0; i < run.nj; i++)
				run.bytes_per_pass[0] = MAX(run.bytes_per_pass[0], run.jobs[i].differing_bytes);
			resync_commit_primary(&run);
			resync_fence_end(&run);
		}
	}
report:
	FAILPOINT("primary-report");
	/* Sent last, once this run let go of everything: a client may
	 * start the next run the moment it reads the result. */
	resync_ask_unheard(&run);
	resync_etcd_note(&run); /* issue 14 */
	final = resync_report(&run);
	if (run.plan && !run.write)
		resync_keep_plan(&run, final);
	if (final && node_etcd_stopped(n, verr, sizeof(verr)))
		json_object_object_add(final, "etcd_stopped", json_object_new_string(verr));
out:
	resync_release(&run);
	log_trace("primary run: released, result sent");
	if (final && run.plan && req_bool(req, "token_first"))
		resync_token_first(cli, final);
	if (final)
		r = control_client_result(cli, final);
	else if (r > 0)
		r = 0;
	/* The leaves of the root made under the fence, under the generation
	 * now current (the next one when the primary committed: its bitmap
	 * counts from there; else the same, whose bitmap still counts). The
	 * file only saves the next proof its reads: written once the client
	 * has the result. A run that starts meanwhile takes proof_lock for
	 * its own root, from the same leaves in memory. */
	if (run.proof_done)
		node_proof_save(n);
	return r;
}
