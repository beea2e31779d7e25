/* A verify's or a resync's result: per secondary and for the run, as
 * the control client, the events and the notifications see it. */
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

/* ranges_json()'s serializer: its copy of the ranges, printed as the
 * plain nested arrays json-c would print. */
struct ranges_text {
	size_t n;
	struct range v[];
};

static void ranges_text_free(json_object *o, void *userdata)
{
	(void)o;
	free(userdata);
}

static int ranges_text_print(json_object *o, struct printbuf *pb, int level, int flags)
{
	const struct ranges_text *t = json_object_get_userdata(o);
	char b[64];

	(void)level;
	(void)flags;
	printbuf_memappend(pb, "[", 1);
	for (size_t i = 0; i < t->n; i++) {
		int k = snprintf(b, sizeof(b), "%s[%" PRIu64 ",%" PRIu64 "]", i ? "," : "",
				 t->v[i].off, t->v[i].len);

		printbuf_memappend(pb, b, k);
	}
	printbuf_memappend(pb, "]", 1);
	return 0;
}

/* An array whose text is made at once from a copy of l (a json-c
 * object per range and per number cost the primary about a tenth of its
 * CPU at 10 % of a 2 GiB volume, tens of thousands of ranges). The array
 * reads as empty inside the daemon: it is only ever printed. */
json_object *ranges_json(const struct rangelist *l)
{
	json_object *a = json_object_new_array();
	struct ranges_text *t = malloc(sizeof(*t) + l->n * sizeof(t->v[0]));

	if (!a || !t) {
		free(t);
		json_object_put(a);
		return NULL;
	}
	t->n = l->n;
	if (l->n)
		memcpy(t->v, l->v, l->n * sizeof(t->v[0]));
	json_object_set_serializer(a, ranges_text_print, t, ranges_text_free);
	return a;
}

/* One secondary's part of the result. */
static json_object *resync_job_json(const struct resync_run *run, const struct job *j)
{
	json_object *x = json_object_new_object();
	const char *result = j->r < 0 ? (j->r == -ECANCELED ? "cancelled" : "failed")
			     : run->write	  ? "resynced"
			     : j->differing_bytes ? "differs"
						  : "identical";
	bool trusted = j->hello.flags & WIRE_HELLO_BITMAP_TRUSTED;

	json_object_object_add(x, "name", json_object_new_string(j->peer->name));
	json_object_object_add(x, "result", json_object_new_string(result));
	json_object_object_add(x, "state", json_object_new_string(meta_state_name(j->state)));
	json_object_object_add(x, "mode",
			       json_object_new_string(j->mode == JOB_QUICK ? "quick" : "full"));
	json_object_object_add(x, "differing_blocks", json_object_new_uint64(j->differing_blocks));
	json_object_object_add(x, "differing_bytes", json_object_new_uint64(j->differing_bytes));
	/* The bytes it holds that the primary lacks: its writes since its
	 * last commit, when its bitmap can say. */
	json_object_object_add(x, "lacking_bytes", j->opened && trusted
			       ? json_object_new_uint64(j->status.dirty_bytes) : NULL);
	/* Whether what this resync overwrites there is kept for a rollback. */
	json_object_object_add(x, "undo", json_object_new_boolean(j->undo));
	if (j->undo) {
		/* What the journal must hold, before compression (its limit
		 * counts compressed bytes): a plan that may not fit says so. */
		uint64_t lim = node_undo_max(run->n->cfg, run->size);

		json_object_object_add(x, "undo_bytes", json_object_new_uint64(j->differing_bytes));
		json_object_object_add(x, "undo_max_bytes", json_object_new_uint64(lim));
		json_object_object_add(x, "undo_may_exceed",
				       json_object_new_boolean(j->differing_bytes > lim));
	}
	json_object_object_add(x, "split_brain", json_object_new_boolean(j->split_brain));
	if (j->split_brain)
		json_object_object_add(x, "reason", json_object_new_string(j->split_why));
	json_object_object_add(x, "resume_offset", j->resume
			       ? json_object_new_uint64(j->status.checkpoint_off) : NULL);
	if (!run->no_ranges)
		json_object_object_add(x, "ranges", ranges_json(&j->ranges));
	json_object_object_add(x, "bytes_compared", json_object_new_uint64(j->bytes_compared));
	json_object_object_add(x, "bytes_read",
			       json_object_new_uint64(j->bytes_read + (j->bytes_compared ? run->size : 0)));
	json_object_object_add(x, "bytes_sent", json_object_new_uint64(j->bytes_sent));
	json_object_object_add(x, "bytes_written", json_object_new_uint64(j->bytes_written));
	/* Moved and shifted data: copied where the secondary held it. */
	json_object_object_add(x, "delta", json_object_new_string(config_delta_name(j->delta)));
	json_object_object_add(x, "bytes_copied", json_object_new_uint64(j->bytes_copied));
	json_object_object_add(x, "copies_refused", json_object_new_uint64(j->copies_failed));
	json_object_object_add(x, "seconds", json_object_new_double(j->seconds));
	json_object_object_add(x, "round_trips", json_object_new_uint64(j->round_trips));
	json_object_object_add(x, "exchanges", json_object_new_uint64(j->exchanges));
	/* What the plan kept served this run (plan-keep.c): its connection
	 * (no connect, no handshake), its walk (unchanged since). */
	json_object_object_add(x, "plan_connection", json_object_new_boolean(j->reused));
	json_object_object_add(x, "plan_walk", json_object_new_boolean(j->memo_used));
	json_object_object_add(x, "bytes_early", json_object_new_uint64(rangelist_bytes(&j->early)));
	if (j->proof_done) {
		json_object *p = json_object_new_object();
		char t[PROOF_TEXT_MAX];

		json_object_object_add(p, "root", json_object_new_string(node_proof_format(&j->proof, t, sizeof(t))));
		json_object_object_add(p, "match", json_object_new_boolean(j->proof_match));
		json_object_object_add(p, "blocks_hashed", json_object_new_uint64(j->proof.hashed));
		json_object_object_add(x, "proof", p);
	} else if (run->write) {
		json_object_object_add(x, "proof", NULL);
	}
	if (j->r < 0)
		json_object_object_add(x, "error", json_object_new_string(j->err));
	return x;
}

/* A secondary's proof: its event, and the primary's record of it for
 * status. */
static void resync_proof_note(struct resync_run *run, const struct job *j)
{
	struct node *n = run->n;
	char root[PROOF_TEXT_MAX], mine[PROOF_TEXT_MAX];
	size_t k = (size_t)(j->peer - n->cfg->nodes);

	node_proof_format(&j->proof, root, sizeof(root));
	node_proof_format(&run->proof, mine, sizeof(mine));
	event_publish_proof(n->bus, j->peer->name, root, mine, j->proof_match);
	if (!j->proof_match)
		log_error("resync of '%s': PROOF MISMATCH: its root %s, the primary's %s", j->peer->name,
			  root, mine);
	pthread_mutex_lock(&n->lock);
	if (n->proof_last && k < n->cfg->n_nodes) {
		struct node_proof_last *p = &n->proof_last[k];

		p->set = true;
		p->match = j->proof_match;
		p->time = time(NULL);
		snprintf(p->root, sizeof(p->root), "%s", root);
		snprintf(p->primary_root, sizeof(p->primary_root), "%s", mine);
	}
	pthread_mutex_unlock(&n->lock);
}

/* A secondary whose commit's answer was lost or came too late may have
 * committed (its generation then one the primary did not take: Outdated
 * over the primary's data) or not (Inconsistent): asked again on a new
 * connection, judged as status judges it, once this run let go of the
 * fence. When this node cannot judge (unreached, no longer the primary,
 * or the secondary acts as primary itself now), what the secondary's
 * ERROR said stands, else Unknown. */
void resync_ask_unheard(struct resync_run *run)
{
	_cleanup_free_ unsigned char *buf = NULL;

	for (size_t i = 0; i < run->nj; i++) {
		struct job *j = &run->jobs[i];
		char why[RESYNC_WIRE_TEXT_MAX] = "", note[RESYNC_WIRE_TEXT_MAX + 64];
		struct peer_conn *c = NULL;
		struct wire_hello h;
		struct wire_status ws;
		enum meta_state judged;
		bool peer_primary;
		size_t at;
		int r;

		if (j->r >= 0 || !j->commit_unheard)
			continue;
		if (!buf && !(buf = malloc(RESYNC_WIRE_FRAME_MAX)))
			return; /* Unknown, as said */
		r = node_peer_open(run->n, j->peer, false, why, sizeof(why), &c, &h);
		if (r >= 0) {
			r = node_peer_status(c, buf, &ws);
			if (r < 0)
				snprintf(why, sizeof(why), "no status: %s",
					 r == -EBADMSG ? "malformed reply" : peer_conn_error(c));
			peer_conn_free(c);
		}
		/* A peer that acts as primary itself (etcd moved the leader
		 * and this node has not seen it yet) is not this node's to
		 * judge: its refusal's word stands. */
		peer_primary = r >= 0 && (h.flags & WIRE_HELLO_PRIMARY);
		judged = r >= 0 && !peer_primary ? node_status_judge(run->n, &h, &ws)
						 : META_STATE_UNKNOWN;
		if (judged != META_STATE_UNKNOWN) {
			j->state = judged;
			if (j->err_state_said && judged == j->err_state)
				continue; /* what it said: nothing to add */
			snprintf(note, sizeof(note), "asked again after the failure, it is %s",
				 meta_state_name(judged));
		} else if (j->err_state_said) {
			/* Not for this node to judge now (no longer the
			 * primary), or not reached: the secondary's own word. */
			j->state = j->err_state;
			continue;
		} else if (r >= 0) {
			snprintf(note, sizeof(note),
				 "asked again after the failure, but this node no longer judges it "
				 "(%s)", peer_primary ? "it acts as primary itself" : "not the primary");
		} else {
			snprintf(note, sizeof(note),
				 "it could not be asked again after the failure: %s", why);
		}
		at = strlen(j->err);
		if (at + 1 < sizeof(j->err))
			snprintf(j->err + at, sizeof(j->err) - at, "; %s", note);
		log_info("resync of '%s' failed after its commit was sent: %s", j->peer->name,
			 note);
	}
}

/* The result: every job's part, the events, and the primary's own
 * commit when every secondary has every block. */
json_object *resync_report(struct resync_run *run)
{
	struct node *n = run->n;
	json_object *res = json_object_new_object(), *arr = json_object_new_array();
	size_t failed = 0;
	char u[40];

	for (size_t i = 0; i < run->nj; i++) {
		struct job *j = &run->jobs[i];

		if (j->r < 0)
			failed++;
		json_object_array_add(arr, resync_job_json(run, j));
		if (j->proof_done)
			resync_proof_note(run, j);
		if (run->write)
			event_publish_end(n->bus, j->peer->name, j->r, j->state, j->bytes_compared,
					  j->bytes_sent, j->round_trips, j->seconds, j->err);
	}
	drift_note_run(n, run->jobs, run->nj, run->write, run->plan);
	if (run->write && !failed)
		node_last_resync_set(n);
	meta_uuid_format(&run->mi.generation, u, sizeof(u));
	json_object_object_add(res, "cluster", json_object_new_string(n->cfg->name));
	json_object_object_add(res, "primary", json_object_new_string(n->self->name));
	json_object_object_add(res, "generation", json_object_new_string(u));
	json_object_object_add(res, "nodes", arr);
	if (run->write) {
		json_object *bpp = json_object_new_array();

		for (unsigned i = 0; i < run->passes; i++)
			json_object_array_add(bpp, json_object_new_uint64(run->bytes_per_pass[i]));
		json_object_object_add(res, "fence", json_object_new_string(run->whole ? "whole" : "short"));
		json_object_object_add(res, "passes", json_object_new_int((int)run->passes));
		json_object_object_add(res, "bytes_per_pass", bpp);
		json_object_object_add(res, "passes_stopped", json_object_new_string(run->why ? run->why : ""));
		json_object_object_add(res, "primary_fence_seconds",
				       json_object_new_double(run->fence_seconds));
		json_object_object_add(res, "primary_committed", json_object_new_boolean(run->committed));
		if (run->proof_done) {
			json_object *p = json_object_new_object();
			char t[PROOF_TEXT_MAX];

			json_object_object_add(p, "root", json_object_new_string(node_proof_format(&run->proof, t, sizeof(t))));
			json_object_object_add(p, "hash", json_object_new_string(proof_hash_name((enum proof_hash)run->proof.hash)));
			json_object_object_add(p, "block_size", json_object_new_uint64(run->proof.block_size));
			json_object_object_add(p, "blocks_hashed", json_object_new_uint64(run->proof.hashed));
			json_object_object_add(p, "seconds", json_object_new_double(run->proof_seconds));
			json_object_object_add(res, "proof", p);
		} else {
			json_object_object_add(res, "proof", NULL);
			if (run->proof_err[0])
				json_object_object_add(res, "proof_error", json_object_new_string(run->proof_err));
		}
	}
	if (run->write) {
		log_printf(failed ? LOG_ERR : LOG_INFO,
			   "resync of cluster '%s' finished: %zu of %zu secondaries failed",
			   n->cfg->name, failed, run->nj);
		event_publish_done(n->bus, run->nj, u);
	}
	return res;
}

