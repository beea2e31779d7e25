/* The passes of a resync and the primary's short fence (resync.c's
 * header comment says how they keep the bitmaps honest): passes 2 and
 * later resend what was written during the one before, until the set is
 * small; then the fence, the last pass, the proof, the commits and the
 * thaw. */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "resync-int.h"
#include "resync/limits.h"
#include "resync/macro.h"

/* A job still in the run: opened, not failed, its connection open. */
static bool job_alive(const struct job *j)
{
	return j->opened && j->r >= 0 && j->c;
}

/* A job that failed has its connection closed now, so that its
 * secondary's session ends (and thaws, Inconsistent) at once. */
static void resync_drop_failed(struct resync_run *run)
{
	for (size_t i = 0; i < run->nj; i++) {
		struct job *j = &run->jobs[i];

		if (j->opened && j->r < 0) {
			job_xfer_close(j);
			peer_conn_free(TAKE_PTR(j->c));
		}
	}
}

static void *pass_thread(void *arg)
{
	struct pass_arg *a = arg;

	a->fn(a->j);
	pthread_mutex_lock(&a->run->pass_lock);
	a->done = true;
	a->run->pass_left--;
	pthread_cond_broadcast(&a->run->pass_cond);
	pthread_mutex_unlock(&a->run->pass_lock);
	return NULL;
}

/* Run fn on a thread for every live job, and wait for them all, or, with
 * a deadline (clock_usec(); 0: none), until then: the jobs still running
 * then are given up on (j->abort, their connections shut down, which
 * wakes any wait on the peer) and joined. A job that failed has its
 * connection closed here, so that its secondary's session ends now.
 * Returns the number of jobs given up on. */
static size_t resync_pass(struct resync_run *run, void *(*fn)(void *), uint64_t deadline)
{
	_cleanup_free_ struct pass_arg *a = calloc(run->nj ? run->nj : 1, sizeof(*a));
	size_t late = 0;

	if (!a) {
		for (size_t i = 0; i < run->nj; i++)
			if (job_alive(&run->jobs[i])) {
				run->jobs[i].r = -ENOMEM;
				snprintf(run->jobs[i].err, sizeof(run->jobs[i].err), "out of memory");
			}
		return 0;
	}
	pthread_mutex_lock(&run->pass_lock);
	run->pass_left = 0;
	pthread_mutex_unlock(&run->pass_lock);
	for (size_t i = 0; i < run->nj; i++) {
		struct job *j = &run->jobs[i];

		if (!job_alive(j))
			continue;
		a[i] = (struct pass_arg){run, j, fn, false, false};
		pthread_mutex_lock(&run->pass_lock);
		run->pass_left++;
		pthread_mutex_unlock(&run->pass_lock);
		a[i].started = !pthread_create(&j->t, NULL, pass_thread, &a[i]);
		if (!a[i].started) {
			pthread_mutex_lock(&run->pass_lock);
			run->pass_left--;
			pthread_mutex_unlock(&run->pass_lock);
			j->r = -EAGAIN;
			snprintf(j->err, sizeof(j->err), "cannot start a thread");
		}
	}
	pthread_mutex_lock(&run->pass_lock);
	while (run->pass_left > 0) {
		struct timespec ts;
		uint64_t now = clock_usec();

		if (!deadline) {
			pthread_cond_wait(&run->pass_cond, &run->pass_lock);
			continue;
		}
		if (now >= deadline)
			break;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += (time_t)((deadline - now) / 1000000);
		ts.tv_nsec += (long)((deadline - now) % 1000000) * 1000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&run->pass_cond, &run->pass_lock, &ts);
	}
	/* Past the deadline: the connections stay ours (the threads free
	 * none), so shutting them down here races with nothing. */
	for (size_t i = 0; i < run->nj; i++) {
		if (!a[i].started || a[i].done)
			continue;
		atomic_store(&run->jobs[i].abort, true);
		peer_conn_shutdown(run->jobs[i].c);
		late++;
	}
	pthread_mutex_unlock(&run->pass_lock);
	for (size_t i = 0; i < run->nj; i++) {
		struct job *j = &run->jobs[i];

		if (!a[i].started)
			continue;
		pthread_join(j->t, NULL);
		if (atomic_load(&j->abort)) {
			snprintf(j->err, sizeof(j->err),
				 "node '%s': the last pass did not finish within fence_max (%.1f s): given up, it stays Inconsistent",
				 j->peer->name, run->n->cfg->fence_max_ms / 1000.0);
			if (j->r >= 0)
				j->r = -ETIMEDOUT;
			j->state = META_STATE_INCONSISTENT;
			log_error("resync of '%s' failed: %s", j->peer->name, j->err);
		}
	}
	resync_drop_failed(run);
	return late;
}

static size_t resync_alive(const struct resync_run *run)
{
	size_t k = 0;

	for (size_t i = 0; i < run->nj; i++)
		k += job_alive(&run->jobs[i]);
	return k;
}

int resync_pass_note(struct resync_run *run, uint64_t bytes)
{
	uint64_t *v = reallocarray(run->bytes_per_pass, run->passes + 1, sizeof(*v));

	if (!v)
		return -ENOMEM;
	run->bytes_per_pass = v;
	v[run->passes++] = bytes;
	return 0;
}

/* The blocks written since the last swap, added to run->set (sorted
 * blocks, adjacent ones merged by rangelist_add()). Without a mount
 * nothing writes the volume: nothing to add. */
static int resync_swap(struct resync_run *run)
{
	const struct cluster_config *cfg = run->n->cfg;
	_cleanup_free_ unsigned char *bits = NULL;
	struct rangelist add = {0};
	size_t size;
	int r;

	if (!run->tracking)
		return 0;
	r = fusefs_track_swap(run->n->fs, &bits, &size);
	if (r < 0)
		return r;
	for (size_t i = 0; i < size && r >= 0; i++) {
		for (unsigned k = 0; bits[i] && k < 8 && r >= 0; k++) {
			uint64_t off = ((uint64_t)i * 8 + k) * cfg->block_size;

			if ((bits[i] & (1u << k)) && off < run->size)
				r = rangelist_add(&add, off, MIN((uint64_t)cfg->block_size, run->size - off));
		}
	}
	if (r >= 0 && add.n) {
		/* A set kept from before (the last unfenced swap) and this
		 * one: one sorted list without overlaps. */
		r = rangelist_extend(&run->set, &add);
		if (r >= 0)
			rangelist_normalize(&run->set);
	}
	rangelist_release(&add);
	return r;
}

/* The set under which the next pass is the last: final_pass_bytes, or
 * what the slowest secondary took in half a second during the last pass
 * (and the rate limit allows), whichever is smaller. */
static uint64_t resync_final_bytes(struct resync_run *run)
{
	uint64_t lim = run->n->cfg->final_pass_bytes, rate = atomic_load(&run->n->rate.rate);

	for (size_t i = 0; i < run->nj; i++) {
		const struct job *j = &run->jobs[i];

		if (job_alive(j) && j->pass_usec && j->pass_bytes >= RESYNC_WIRE_BLOCKS_MAX)
			lim = MIN(lim, (uint64_t)((double)j->pass_bytes * 1e6 / (double)j->pass_usec / 2));
	}
	if (rate)
		lim = MIN(lim, rate / 2);
	return lim;
}

/* While paused before the last pass: nothing is fenced; the sessions
 * are kept alive (no job thread runs: the connections are ours). */
static void resync_wait_paused(struct resync_run *run)
{
	struct node *n = run->n;

	while (atomic_load(&n->rate.paused) && !atomic_load(&n->cancel) && resync_alive(run)) {
		for (size_t i = 0; i < run->nj; i++) {
			struct job *j = &run->jobs[i];

			if (job_alive(j) && (j->features & WIRE_FEATURE_KEEPALIVE))
				(void)peer_conn_keepalive(j->c, node_keepalive_ms(n->cfg));
		}
		usleep(50000);
	}
}

/* Every job of run committed, and the run covered every secondary. */
static bool resync_all_committed(const struct resync_run *run)
{
	for (size_t i = 0; i < run->nj; i++)
		if (run->jobs[i].r < 0)
			return false;
	return run->all;
}

/* The fence's start and end, said. */
void resync_fence_start(struct resync_run *run)
{
	run->fence_t0 = clock_usec();
	event_publish_fence(run->n->bus, run->n->self->name, true, run->whole,
			    run->whole ? 1 : run->passes + 1, 0);
}

void resync_fence_end(struct resync_run *run)
{
	node_fence_thaw(run->n);
	run->frozen = false;
	if (!run->fence_t0)
		return;
	run->fence_seconds = (double)(clock_usec() - run->fence_t0) / 1e6;
	event_publish_fence(run->n->bus, run->n->self->name, false, run->whole, run->passes,
			    run->fence_seconds);
	log_info("resync of cluster '%s': the primary's writes waited %.3f s (%s fence, %u passes)",
		 run->n->cfg->name, run->fence_seconds, run->whole ? "whole" : "short", run->passes);
}

/* The primary's own commit, under its fence, when every secondary has
 * every block. */
void resync_commit_primary(struct resync_run *run)
{
	if (run->write && resync_all_committed(run)) {
		resync_next_generation(run);
		run->committed = true;
	}
}

/* Passes 2 and later, then the fence, the last pass, the commits and the
 * thaw (the short fence). Pass 1 ran. */
int resync_passes(struct resync_run *run)
{
	const struct cluster_config *cfg = run->n->cfg;
	uint64_t pass1 = 0;
	int r;

	resync_drop_failed(run);
	for (size_t i = 0; i < run->nj; i++)
		pass1 = MAX(pass1, run->jobs[i].differing_bytes);
	r = resync_pass_note(run, pass1);
	if (r < 0)
		return r;
	for (;;) {
		/* A pause delays the next pass, never under the fence. */
		resync_wait_paused(run);
		r = resync_swap(run);
		if (r < 0)
			return r;
		if (atomic_load(&run->n->cancel)) {
			run->why = "cancelled";
			break;
		}
		if (!resync_alive(run)) {
			run->why = "no secondary left";
			break;
		}
		if (rangelist_bytes(&run->set) <= resync_final_bytes(run)) {
			run->why = "converged";
			break;
		}
		if (run->passes >= cfg->max_passes) {
			run->why = "max_passes";
			break;
		}
		for (size_t i = 0; i < run->nj; i++) {
			run->jobs[i].pass_set = &run->set;
			run->jobs[i].pass_final = false;
		}
		r = resync_pass_note(run, rangelist_bytes(&run->set));
		if (r < 0)
			return r;
		log_info("resync of cluster '%s': pass %u, %" PRIu64 " bytes of blocks written during the last",
			 cfg->name, run->passes, rangelist_bytes(&run->set));
		resync_pass(run, job_pass_thread, 0);
		FAILPOINT("primary-live-pass");
		run->set.n = 0;
	}
	/* The last pass. A cancel fences nothing: the jobs stop at once. */
	if (strcmp(run->why, "cancelled") && resync_alive(run)) {
		log_trace("primary run: passes done (%s)", run->why);
		resync_proof_before(run);
		log_info("resync of cluster '%s': pass %u under the primary's fence (%s)", cfg->name,
			 run->passes + 1, run->why);
		resync_fence_start(run);
		r = node_fence_freeze(run->n);
		if (r < 0)
			return r;
		FAILPOINT("primary-fence-started");
		run->frozen = true;
		r = resync_swap(run);
		if (r < 0) {
			resync_fence_end(run);
			return r;
		}
		resync_proof(run);
		log_trace("primary run: fenced, proof made");
	}
	for (size_t i = 0; i < run->nj; i++) {
		run->jobs[i].pass_set = &run->set;
		run->jobs[i].pass_final = true;
	}
	/* After a cancel the last pass only ends the jobs (cancelled, at
	 * their first frame): it sends nothing, and is not counted. */
	if (strcmp(run->why, "cancelled"))
		r = resync_pass_note(run, rangelist_bytes(&run->set));
	if (r < 0) {
		resync_fence_end(run);
		return r;
	}
	resync_pass(run, job_pass_thread,
		    run->frozen ? run->fence_t0 + cfg->fence_max_ms * 1000ull : 0);
	log_trace("primary run: last pass done");
	if (run->frozen)
		resync_commit_primary(run);
	resync_fence_end(run);
	log_trace("primary run: committed and thawed");
	FAILPOINT("primary-fence-ended");
	return 0;
}

/* The primary's root for the proof, under its fence (or with nothing to
 * fence: no mount), before any job commits; every job compares its
 * secondary's root with it before its COMMIT. */
void resync_proof(struct resync_run *run)
{
	struct node *n = run->n;
	uint64_t t0 = clock_usec();
	int r;

	if (!run->write || !n->cfg->proof || run->proof_done)
		return;
	/* run->set: every block written since the last unfenced swap,
	 * which came before resync_proof_before(). */
	r = run->proof_pre ? node_proof_compute_since(n, run->proof_seq, &run->set, &run->proof)
			   : -ESTALE;
	if (r == -ESTALE)
		r = node_proof_compute(n, (enum proof_hash)n->cfg->proof_hash, PROOF_BLOCK_DEFAULT,
				       NULL, &run->proof, NULL);
	run->proof_seconds = (double)(clock_usec() - t0) / 1e6;
	if (r < 0) {
		snprintf(run->proof_err, sizeof(run->proof_err), "cannot hash the primary's volume '%s': %s",
			 n->self->volume, strerror(-r));
		log_error("no proof: %s", run->proof_err);
		return;
	}
	run->proof_done = true;
	FAILPOINT("primary-proof-computed");
	for (size_t i = 0; i < run->nj; i++)
		run->jobs[i].proof_primary = &run->proof;
}

/* The primary's root made before the fence, after the last unfenced
 * swap: its dirty blocks hashed while its writers still write, so that
 * under the fence only the last pass's blocks are (resync_proof()). */
void resync_proof_before(struct resync_run *run)
{
	struct node *n = run->n;
	struct wire_proof p;

	if (!run->write || !n->cfg->proof || !run->tracking)
		return;
	run->proof_pre = node_proof_compute(n, (enum proof_hash)n->cfg->proof_hash,
					    PROOF_BLOCK_DEFAULT, NULL, &p, &run->proof_seq) >= 0;
}
