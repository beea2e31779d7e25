/* A resync's data behind its hellos (issue 18): the resync that takes
 * its plan's connection and walk (plan-keep.c) sends the plan's
 * differing pages right behind its REHELLO, STATUS_REQ and first-level
 * HASH_REQ, in the same flight, before it read any answer: across a WAN
 * it then pays no round trip before its data.
 *
 * The secondary handles every frame in order, after its hello: a hello
 * it refuses (no longer a secondary, another generation's history, a
 * changed role, split brain seen from its side: WIRE_HELLO_DATA_FOLLOWS)
 * ends the session, and what followed is read and dropped, never
 * applied; its Diverged and undo decisions come first as always. The
 * primary's own refusals after the status must not come after data
 * either: no data goes early when the run may refuse or skip this
 * secondary then (a before_resync_command, a forced split brain), nor
 * when the moved-data search (moved.c) would copy or search the plan's
 * leaves, nor when the leaves are coarser than pages (page hashes are a
 * round trip). The pages are the primary's now, right to send whatever
 * the secondary holds: tracking of the primary's writes started before
 * they were read (later passes send what changes), and when the
 * first-level reply shows the secondary written since the plan, the walk
 * goes on from there and pass 1 sends what else differs (job-xfer.c
 * leaves out what went early). The data stops when the answers come
 * (job_early_cut()): it fills their round trip, and the run, which waits
 * for every secondary's open, is not held by one slow link's share of
 * NODE_EARLY_BYTES_MAX while the others idle. A CHECKPOINT at offset 0 (it claims no
 * byte below anything) ends the early data: its ACK tells the pace at
 * which the secondary takes bytes for the end of pass 1
 * (job_settle_wait()). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "job-early.h"
#include "resync/failpoint.h"
#include "resync/limits.h"
#include "resync/macro.h"

bool job_early_wanted(const struct job *j, const struct cluster_config *cfg, bool forced)
{
	const struct walk_memo *m = j->memo_in;

	if (!j->write || !m || !m->set || !m->nleaves_diff || m->leaf > RESYNC_PAGE ||
	    m->nfirst > NODE_EARLY_FIRST_MAX || !(m->features & WIRE_FEATURE_EARLY_DATA) ||
	    cfg->before_resync_command || forced)
		return false;
	/* moved.c searches only these; then the memo must hold nothing. */
	if (j->delta != CONFIG_DELTA_ALIGNED && (m->features & WIRE_FEATURE_COPY) && !m->quiet)
		return false;
	/* RESYNC_EARLY_OFF=1: as before (bench/cluster-bench compares). */
	return !(getenv("RESYNC_EARLY_OFF") && strcmp(getenv("RESYNC_EARLY_OFF"), "0"));
}

int job_early_rest(const struct rangelist *l, const struct rangelist *sent, struct rangelist *ret)
{
	size_t k = 0;
	int r = 0;

	for (size_t i = 0; i < l->n && r >= 0; i++) {
		uint64_t off = l->v[i].off, end = off + l->v[i].len;

		while (k < sent->n && sent->v[k].off + sent->v[k].len <= off)
			k++;
		for (size_t q = k; off < end && r >= 0; q++) {
			uint64_t so = q < sent->n ? sent->v[q].off : UINT64_MAX;
			uint64_t se = q < sent->n ? so + sent->v[q].len : UINT64_MAX;

			if (so >= end) {
				r = rangelist_add(ret, off, end - off);
				break;
			}
			if (so > off)
				r = rangelist_add(ret, off, so - off);
			off = MAX(off, se);
		}
	}
	return r;
}

int job_early_cut(struct rangelist *l, uint64_t off)
{
	while (l->n && l->v[l->n - 1].off >= off)
		l->n--;
	if (l->n && l->v[l->n - 1].off + l->v[l->n - 1].len > off)
		l->v[l->n - 1].len = off - l->v[l->n - 1].off;
	return 0;
}

/* The plan's differing leaves as ranges, ascending, at most
 * NODE_EARLY_BYTES_MAX of them (a prefix). */
static int early_ranges(struct job *j, const struct walk_memo *m)
{
	uint64_t size = volume_size(j->ctx->vol), bytes = rangelist_bytes(&j->early);
	int r = 0;

	/* The sum kept here: summing the list at each leaf cost the
	 * square of its length (a tenth of the primary's CPU at 10 %). */
	for (size_t i = 0; i < m->nleaves_diff && r >= 0; i++) {
		uint64_t off = m->leaves[i] * m->leaf, len;

		if (off >= size || bytes >= NODE_EARLY_BYTES_MAX)
			break;
		len = MIN((uint64_t)m->leaf, size - off);
		r = rangelist_add(&j->early, off, len);
		bytes += len;
	}
	return r;
}

int job_early_send(void *arg, struct peer_conn *c)
{
	struct job *j = arg;
	const struct walk_memo *m = j->memo_in;
	int r;

	/* What the plan's hello said, until this one's answer is read. */
	j->features = m->features;
	j->hello.proto_min = m->proto_min;
	j->hello.proto_max = m->proto_max;
	j->early_features = m->features;
	j->c = c;
	r = early_ranges(j, m);
	if (r >= 0)
		r = job_xfer_open(j);
	if (r >= 0)
		r = job_send_ranges(j, &j->early, JOB_SEND_EARLY);
	if (r >= 0)
		r = job_checkpoint(j, 0);
	if (r >= 0)
		log_info("resync of '%s': %" PRIu64 " bytes of the plan's differing pages sent "
			 "behind its hellos",
			 j->peer->name, j->bytes_written);
	return r;
}

int job_early_opened(struct job *j)
{
	if (!j->early.n || j->features == j->early_features)
		return 0;
	snprintf(j->err, sizeof(j->err),
		 "node '%s': its features changed since the plan (%#" PRIx64 ", then %#" PRIx64 ")",
		 j->peer->name, j->features, j->early_features);
	return -EPROTO;
}

void job_early_drop(struct job *j)
{
	job_xfer_close(j);
	rangelist_release(&j->early);
	j->c = NULL; /* freed by the open that failed */
	j->features = 0;
	j->bytes_written = j->bytes_read = j->bytes_sent = 0;
	j->ack_pending = 0;
	j->ck_sent = 0;
	j->acked_bytes = j->data_t0 = j->acked_t = 0;
	j->reply_rate = 0; /* the plan's connection's, gone */
}

void job_note_reply_rate(struct job *j, double rate)
{
	if (rate > j->reply_rate)
		j->reply_rate = rate;
}

bool node_settle_wait(uint64_t bytes, uint64_t share_usec, uint64_t acked_bytes,
		      uint64_t acked_usec, double reply_rate)
{
	double rate = reply_rate > 0 ? reply_rate : 0;

	if (!bytes)
		return false;
	/* Both are lower bounds: the faster of the two is one too. */
	if (acked_bytes && acked_usec)
		rate = MAX(rate, (double)acked_bytes / (double)acked_usec); /* bytes/us */
	if (rate <= 0)
		return true; /* nothing measured: no pace to judge by */
	return (double)bytes / rate > (double)share_usec;
}
