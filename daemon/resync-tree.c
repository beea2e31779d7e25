/* This volume's tree for a run (resync.c): its geometry (the leaves every
 * secondary to compare can name), and its hashing, once for every full
 * job, while each secondary hashes its own; or the plan's tree of this
 * unchanged image, taken back. */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "resync-int.h"
#include "resync/blockcmp.h"
#include "resync/macro.h"

/* The tree's leaves: pages (or what keeps a large volume's tree small)
 * when every secondary to compare can name them, blocks otherwise; with
 * page leaves a smaller fanout keeps the hashes asked for near the
 * scattered pages that differ. */
void resync_geometry(struct resync_run *run)
{
	const struct cluster_config *cfg = run->n->cfg;
	uint32_t leaf = wire_tree_leaf(run->size, cfg->block_size);

	for (size_t i = 0; i < run->nj; i++)
		if (run->jobs[i].opened && run->jobs[i].mode == JOB_FULL &&
		    !(run->jobs[i].features & WIRE_FEATURE_FINE_LEAVES))
			leaf = cfg->block_size;
	run->fanout = leaf < cfg->block_size ? NODE_FINE_FANOUT : RESYNC_HASHTREE_FANOUT_DEFAULT;
	run->o.block_size = leaf;
	for (size_t i = 0; i < run->nj; i++) {
		run->jobs[i].leaf = leaf;
		run->jobs[i].fanout = run->fanout;
	}
}

/* Whether every opened secondary ended its connection (its process gone,
 * or it closed it after an ERROR): nothing this hash is for can still be
 * done. */
static bool resync_all_gone(struct resync_run *run)
{
	size_t opened = 0;

	for (size_t i = 0; i < run->nj; i++) {
		struct job *j = &run->jobs[i];

		if (!j->opened)
			continue;
		opened++;
		if (!j->c || !peer_conn_peer_closed(j->c))
			return false;
	}
	return opened > 0;
}

/* blockcmp's progress while this volume is hashed: a KEEPALIVE to every
 * opened secondary that speaks them, once its connection was silent for
 * a while, so that its session, idle until this hashing ends (or until
 * its own hashing for the prefetch ends), does not time out. Called on
 * blockcmp's worker threads, one at a time (its contract), while the
 * thread that owns the jobs' connections waits inside
 * blockcmp_hash_volume() and no job thread runs (phase one was joined,
 * phase two has not started): each connection has one user at a time. A
 * failed send breaks that connection, and its job's first frame says so.
 * Stopped too, at the next unit, once every opened secondary ended its
 * connection: a large volume's hash would hold the run's failure (and
 * the next run) until its end, for no one. */
static int resync_hash_progress(void *arg, uint64_t done, uint64_t total)
{
	struct resync_run *run = arg;

	/* Stopped at the next unit when the node stops: a large volume's
	 * hash would hold its exit until the end. (Not when the run is
	 * cancelled: its jobs then end cancelled after the hash, each with
	 * its part in the summary, as they did.) */
	if (atomic_load(&run->n->stopping))
		return 1;
	for (size_t i = 0; i < run->nj; i++) {
		struct job *j = &run->jobs[i];

		if (j->opened && (j->features & WIRE_FEATURE_KEEPALIVE))
			(void)peer_conn_keepalive(j->c, node_keepalive_ms(run->n->cfg));
	}
	if (resync_all_gone(run)) {
		log_warning("every secondary ended its connection: this volume's hash stopped at "
			    "%" PRIu64 " of %" PRIu64 " bytes", done, total);
		run->hash_cut = true;
		return 1;
	}
	return 0;
}

/* This volume's tree, one seed for it and for the page hashes of every
 * job: the plan's tree of this unchanged image when there is one (each
 * secondary finds its own tree of that seed in its cache), else hashed
 * now while every secondary hashes its own (a first request of one
 * leaf makes it build its tree now; its answer is read at the start of
 * the walk). Returns 1 when a read failure was answered to the client. */
int resync_hash(struct resync_run *run)
{
	struct node *n = run->n;
	uint64_t nl = DIV_ROUND_UP(run->size, run->o.block_size);
	int r;

	/* The seed the hellos' flight asked with, if they did (job-early.c). */
	r = run->early.set ? 0 : hash_seed_random(&run->o.seed);
	if (r < 0)
		return r;
	if (run->early.set)
		run->o.seed = run->early.seed;
	if (!run->any_full) {
		resync_early_settle(run, nl);
		return 0;
	}
	if (tree_cache_take(n, 0, run->fanout, run->o.block_size, &run->tc)) {
		run->hashes = TAKE_PTR(run->tc.hashes);
		run->tree = TAKE_PTR(run->tc.tree);
		run->o.seed = run->tc.seed;
		resync_early_settle(run, nl);
		for (size_t i = 0; nl && i < run->nj; i++)
			job_prefetch(&run->jobs[i], run->o.seed);
		return 0;
	}
	/* The image changed since its cached tree's seed was said: a new
	 * one (the early replies of that seed are dropped). */
	if (run->early.cached) {
		r = hash_seed_random(&run->o.seed);
		if (r < 0)
			return r;
	}
	resync_early_settle(run, nl);
	run->tc.built = node_image_still(n, &run->tc.id) ? clock_usec() : 0;
	run->hashes = calloc(nl ? nl : 1, sizeof(*run->hashes));
	if (!run->hashes)
		return -ENOMEM;
	for (size_t i = 0; nl && i < run->nj; i++)
		job_prefetch(&run->jobs[i], run->o.seed);
	run->o.progress = resync_hash_progress;
	run->o.progress_arg = run;
	run->o.nice = NODE_HASH_NICE;
	if (run->size) {
		/* The proof's leaves from the same reads (resync_proof()). */
		struct proof_offer pw;
		bool offer = (run->write || run->plan) &&
			     node_proof_want(n, run->o.block_size, &run->o, &pw);

		r = blockcmp_hash_volume(run->ctx.vol, 0, run->size, &run->o, run->hashes);
		if (r >= 0 && offer)
			node_proof_offer(n, &pw, &run->o);
		free(run->o.extra_hashes);
		run->o.extra_hashes = NULL;
		if (r == -ECANCELED && run->hash_cut && !atomic_load(&n->stopping)) {
			/* Each job says what its secondary said, or that it
			 * went; no tree is made (nor kept) of a partial hash. */
			for (size_t i = 0; i < run->nj; i++)
				if (run->jobs[i].opened)
					job_gone(&run->jobs[i]);
			return 0;
		}
		if (r == -ECANCELED) {
			control_client_error(
			    run->cli, "this node is stopping: the primary's volume was not hashed");
			return 1;
		}
		if (r < 0) {
			control_client_error(run->cli, "cannot read the primary's volume '%s': %s",
					     n->self->volume, strerror(-r));
			return 1;
		}
	}
	return hashtree_new(run->hashes, nl, run->fanout, run->o.seed, &run->tree);
}
