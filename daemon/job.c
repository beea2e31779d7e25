/* The primary's work toward one secondary (a job): the differing ranges
 * (the walk of its hash tree, job-walk.c, or the union of both dirty
 * bitmaps), then their transfer (job-xfer.c), on the job's own thread or
 * in a run's passes; its progress lines and events, and its end. */
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

#include "job-walk.h"
#include "node-int.h"
#include "resync/limits.h"
#include "resync/macro.h"

void job_progress(struct job *j, enum event_phase phase, uint64_t done, uint64_t total, uint64_t t0)
{
	json_object *o = json_object_new_object();
	double secs = (double)(clock_usec() - t0) / 1e6;
	double rate = secs > 0 ? (double)done / secs : 0;

	json_object_object_add(o, "type", json_object_new_string("progress"));
	json_object_object_add(o, "node", json_object_new_string(j->peer->name));
	json_object_object_add(o, "phase", json_object_new_string(event_phase_name(phase)));
	json_object_object_add(o, "bytes_compared", json_object_new_uint64(j->bytes_compared));
	json_object_object_add(o, "bytes_sent", json_object_new_uint64(j->bytes_sent));
	json_object_object_add(o, "bytes_done", json_object_new_uint64(done));
	json_object_object_add(o, "bytes_total", json_object_new_uint64(total));
	json_object_object_add(o, "rate", json_object_new_double(rate));
	json_object_object_add(o, "eta", json_object_new_double(rate > 0 ? (double)(total - done) / rate : 0));
	if (j->cli) { /* none: a job run by a test */
		pthread_mutex_lock(j->cli_lock);
		control_client_send(j->cli, o);
		pthread_mutex_unlock(j->cli_lock);
	}
	json_object_put(o);
	if (j->write)
		event_publish_progress(j->ctx->bus, j->peer->name, phase, j->bytes_compared,
				       j->bytes_sent, done, total, rate);
}

/* The leaf size a HASH_REQ names: none for a peer that cannot read it
 * (its leaves are blocks, and so are this run's then). */
uint32_t job_leaf_wire(const struct job *j)
{
	return j->features & WIRE_FEATURE_FINE_LEAVES ? j->leaf : 0;
}

/* Make a full job's peer build its hash tree for seed now: the walk's
 * first request (the first level whole, job_walk_first_level()), answered once
 * the tree is built, read by job_walk() as the reply to its first
 * request. */
void job_prefetch(struct job *j, uint64_t seed)
{
	uint64_t nl = DIV_ROUND_UP(volume_size(j->ctx->vol), j->leaf);
	struct walk_first *f = &j->first_req;

	if (!j->opened || j->mode != JOB_FULL || !nl || j->prefetched)
		return;
	*f = (struct walk_first){.seed = seed, .fanout = j->fanout, .leaf_wire = job_leaf_wire(j),
				 .t_sent = clock_usec()};
	job_walk_first_level(j, nl, j->fanout, &f->level, &f->count);
	/* A failure shows again at the walk's first reply. */
	j->prefetched = job_walk_first_send(j->c, WIRE_HASH_REQ, f, 0) >= 0;
}

/* Receive a secondary's reply into buf: a transport failure or an ERROR
 * it sent becomes the job's error text. Returns 0 with *ret_type and
 * *ret_len, or -errno (-EIO for an ERROR). */
int job_recv(struct job *j, struct peer_conn *c, unsigned char *buf, uint16_t *ret_type,
	     size_t *ret_len)
{
	int r = peer_conn_recv_frame(c, ret_type, buf, RESYNC_WIRE_FRAME_MAX, ret_len);

	if (r < 0) {
		snprintf(j->err, sizeof(j->err), "node '%s': %s", j->peer->name,
			 peer_conn_error(c));
		return r;
	}
	if (*ret_type == WIRE_ERROR) {
		struct wire_text t = {0};

		wire_text_decode(buf, *ret_len, &t);
		snprintf(j->err, sizeof(j->err), "node '%s': %s", j->peer->name, t.text);
		/* Its word on its state (an ERROR that did not decode says
		 * nothing): the truth, where bytes sent are a guess. */
		j->err_state_said = t.state_said;
		j->err_state = t.state_said ? meta_state_from_wire(t.state) : META_STATE_UNKNOWN;
		return -EIO;
	}
	return 0;
}

/* Blocks of bs bytes that the sorted ranges of l touch. */
static uint64_t ranges_blocks(const struct rangelist *l, uint64_t bs)
{
	uint64_t n = 0, last = UINT64_MAX;

	for (size_t i = 0; i < l->n; i++) {
		uint64_t first = l->v[i].off / bs, end = (l->v[i].off + l->v[i].len - 1) / bs;

		if (first == last)
			first++;
		if (end >= first)
			n += end - first + 1;
		last = end;
	}
	return n;
}

int job_compare(struct job *j, struct peer_conn *c, unsigned char *buf)
{
	_cleanup_free_ uint64_t *leaves = NULL;
	uint64_t size = volume_size(j->ctx->vol), bs = j->ctx->cfg->block_size;
	size_t nl;
	int r;

	r = job_walk(j, c, buf, &leaves, &nl);
	if (r < 0)
		return r;
	for (size_t i = 0; i < nl && r >= 0; i++) {
		uint64_t off = leaves[i] * j->leaf;

		r = rangelist_add(&j->ranges, off, MIN((uint64_t)j->leaf, size - off));
	}
	j->differing_blocks = ranges_blocks(&j->ranges, bs);
	j->differing_bytes = rangelist_bytes(&j->ranges);
	j->bytes_compared = size;
	FAILPOINT("primary-compared");
	return r < 0 ? r : 0;
}

/* Union of the secondary's and the primary's dirty bitmaps: the blocks a
 * quick resync sends, without a compare. */
int job_quick(struct job *j)
{
	uint64_t size = volume_size(j->ctx->vol), bs = j->ctx->cfg->block_size;
	uint64_t nb = DIV_ROUND_UP(size, bs);
	_cleanup_free_ unsigned char *bm = calloc(1, j->bitmap_size ? j->bitmap_size : 1);
	int r;

	if (!bm)
		return -ENOMEM;
	r = node_peer_bitmap(j->c, j->buf, bm, j->bitmap_size);
	if (r < 0) {
		snprintf(j->err, sizeof(j->err), "node '%s': cannot read its dirty bitmap: %s",
			 j->peer->name, r == -EBADMSG ? "malformed reply" : peer_conn_error(j->c));
		return r;
	}
	for (size_t i = 0; i < j->bitmap_size; i++) {
		unsigned char b = bm[i] | j->pbitmap[i];

		for (unsigned k = 0; b && k < 8; k++) {
			uint64_t blk = (uint64_t)i * 8 + k, off = blk * bs;

			if (!(b & (1u << k)) || blk >= nb)
				continue;
			r = rangelist_add(&j->ranges, off, MIN(bs, size - off));
			if (r < 0)
				return r;
			j->differing_blocks++;
		}
	}
	FAILPOINT("primary-quick-ranges");
	j->differing_bytes = rangelist_bytes(&j->ranges);
	return 0;
}

/* The state a writing job leaves its secondary in after r: what its
 * ERROR said (WIRE_FEATURE_ERROR_STATE), else guessed from the bytes
 * sent (a peer that does not say, or a failure that was not its ERROR).
 * After the COMMIT left, a failure without the secondary's word, or with
 * its word of being UpToDate (it committed, to a generation this failed
 * run does not take, or its refusal wrote nothing), may have met a
 * commit made: Unknown until asked again (resync_ask_unheard()), where
 * the cluster's judgement (Outdated) is asked for. Not after its PROOF
 * with another root than this one's: it did not commit. */
static void job_write_state(struct job *j, int r)
{
	if (r >= 0)
		j->state = META_STATE_UPTODATE;
	else if (j->commit_sent && !(j->proof_done && !j->proof_match) &&
		 (!j->err_state_said || j->err_state == META_STATE_UPTODATE)) {
		j->state = META_STATE_UNKNOWN;
		j->commit_unheard = true;
	} else if (j->err_state_said)
		j->state = j->err_state;
	else if (j->bytes_written || j->hello.state == WIRE_STATE_INCONSISTENT)
		/* It marked itself so at the first data frame, and no
		 * commit took it back: its hello's state is gone. */
		j->state = META_STATE_INCONSISTENT;
}

/* The end of a job's part in a run, r its result: said, logged, timed. */
static void job_end(struct job *j, int r)
{
	if (r < 0 && !j->err[0])
		snprintf(j->err, sizeof(j->err), "node '%s': %s", j->peer->name, strerror(-r));
	if (r < 0)
		log_error("resync of '%s' failed: %s", j->peer->name, j->err);
	moved_free(j);
	j->r = r;
	j->seconds = (double)(clock_usec() - j->t0) / 1e6;
	if (j->c) {
		j->round_trips = peer_conn_round_trips(j->c) - j->rt_base;
		j->exchanges = peer_conn_exchanges(j->c) - j->ex_base;
	}
}

void job_gone(struct job *j)
{
	char was[256];
	bool said = false;
	int r = -ECONNRESET;

	/* What it sent before is still there: its prefetch's reply, an
	 * ERROR with its state; then the end of the stream, at once. */
	for (unsigned k = 0; j->c && j->buf && k < 64; k++) {
		uint16_t type = 0;
		size_t len;

		r = job_recv(j, j->c, j->buf, &type, &len);
		if (r < 0) {
			said = type == WIRE_ERROR; /* its words, in j->err */
			break;
		}
	}
	if (!said) {
		snprintf(was, sizeof(was), "%s", j->c ? peer_conn_error(j->c) : "");
		snprintf(j->err, sizeof(j->err),
			 "node '%s': its connection ended while this node hashed its volume%s%s%s",
			 j->peer->name, was[0] ? " (" : "", was, was[0] ? ")" : "");
	}
	if (r >= 0)
		r = -ECONNRESET;
	/* As a job whose compare failed (job_thread()): the state its
	 * hello said stands, or what its ERROR said. */
	if (said && j->err_state_said)
		j->state = j->err_state;
	job_end(j, r);
	j->opened = false;
	peer_conn_free(TAKE_PTR(j->c));
}

/* The differing ranges: the bitmaps' union or the tree's walk. */
static int job_ranges(struct job *j)
{
	int r;

	if (j->mode == JOB_QUICK)
		r = job_quick(j);
	else
		r = job_compare(j, j->c, j->buf);
	if (r < 0)
		return r;
	j->bytes_sent = peer_conn_bytes_sent(j->c);
	job_progress(j, j->mode == JOB_QUICK ? EVENT_PHASE_DIRTY : EVENT_PHASE_COMPARED, j->bytes_compared,
		     j->bytes_compared, j->t0);
	return 0;
}

/* Pass 1 of a resync that keeps the primary in service: the differing
 * ranges, then their bytes with checkpoints, no commit. The connection
 * stays open for the next passes (the run closes it). */
void *job_pass1_thread(void *arg)
{
	struct job *j = arg;
	const struct rangelist *l = &j->ranges;
	int r;

	r = job_ranges(j);
	log_trace("primary job %s: ranges known (%d)", j->peer->name, r);
	if (r >= 0)
		r = job_xfer_open(j);
	if (r >= 0) /* what the secondary holds elsewhere goes as COPY first */
		r = moved_run(j, &l);
	if (r >= 0)
		r = job_send_ranges(j, l, JOB_SEND_CHECKPOINTS | JOB_SEND_SETTLE);
	log_trace("primary job %s: pass 1 sent and settled (%d)", j->peer->name, r);
	moved_free(j);
	FAILPOINT("primary-pass1-done");
	if (r < 0) {
		job_write_state(j, r);
		job_end(j, r);
	}
	return NULL;
}

/* A later pass: the blocks in j->pass_set (written on the primary during
 * the pass before), read again and sent; under the primary's fence
 * (j->pass_final) it ignores a pause and ends with the COMMIT. */
void *job_pass_thread(void *arg)
{
	struct job *j = arg;
	int r;

	r = job_send_ranges(j, j->pass_set, j->pass_final ? JOB_SEND_FINAL : JOB_SEND_SETTLE);
	if (r >= 0 && j->pass_final)
		r = job_commit(j);
	log_trace("primary job %s: pass done%s (%d)", j->peer->name, j->pass_final ? ", committed" : "", r);
	if (r < 0 || j->pass_final) {
		job_write_state(j, r);
		job_end(j, r);
	}
	return NULL;
}

/* Phase two: compare (or take the bitmaps' union), then transfer. */
void *job_thread(void *arg)
{
	struct job *j = arg;
	int r;

	r = job_ranges(j);
	log_trace("primary job %s: ranges known (%d)", j->peer->name, r);
	if (r < 0)
		goto out;
	if (j->write) {
		r = job_transfer(j, j->c, j->buf);
		job_write_state(j, r);
	} else if (j->hello.state == WIRE_STATE_INCONSISTENT) {
		j->state = META_STATE_INCONSISTENT;
	} else if (j->diverged) {
		j->state = META_STATE_DIVERGED;
	} else {
		j->state = j->differing_bytes ? META_STATE_OUTDATED : META_STATE_UPTODATE;
	}
	j->bytes_sent = peer_conn_bytes_sent(j->c);
out:
	job_end(j, r);
	/* Nothing more is said on this connection: closed now, so that the
	 * secondary's session ends here rather than wait out its timeout,
	 * silent, while the other jobs of the run go on; a plan's is kept
	 * for the resync that follows it (plan-keep.c), which says its
	 * hellos again on it. */
	if (!j->keep_conn || r < 0)
		peer_conn_free(TAKE_PTR(j->c));
	return NULL;
}
