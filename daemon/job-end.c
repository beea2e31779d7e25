/* How a job's transfer ends toward its secondary (job-xfer.c's room): the
 * proof before the commit, and a cancel, with the secondary's last word
 * read after it. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "job-early.h"
#include "node-int.h"
#include "resync/failpoint.h"
#include "resync/limits.h"

/* How long a cancelled job waits for the secondary's last word
 * (job_cancel_heard()): its session ends at once when the cancel
 * arrives; this bounds a silent one. */
enum { JOB_CANCEL_HEAR_MS = 2000 };

/* The proof before the commit: the secondary's root (made under its
 * fence) must be the primary's (made under the primary's fence, before
 * this last pass). A mismatch fails the job without COMMIT: the secondary
 * stays Inconsistent, and says so. */
int job_proof(struct job *j, struct peer_conn *c, unsigned char *buf, bool commit)
{
	struct wire_proof q = *j->proof_primary, a;
	char mine[PROOF_TEXT_MAX], theirs[PROOF_TEXT_MAX];
	struct wire_uuid g;
	uint16_t type;
	size_t len;
	int r;

	q.hashed = 0;
	memcpy(g.b, j->gen.b, 16);
	if (commit) {
		r = wire_proof_commit_encode(&q, &g, buf, RESYNC_WIRE_FRAME_MAX, &len);
	} else {
		memset(q.root, 0, sizeof(q.root));
		r = wire_proof_encode(&q, buf, RESYNC_WIRE_FRAME_MAX, &len);
	}
	if (r < 0)
		return r;
	r = peer_conn_send_frame(c, commit ? WIRE_PROOF_COMMIT : WIRE_PROOF_REQ, buf, len);
	j->commit_sent |= commit && r >= 0;
	if (r < 0) {
		snprintf(j->err, sizeof(j->err), "node '%s': %s", j->peer->name,
			 peer_conn_error(c));
		return r;
	}
	/* Replies come in order: the checkpoints' ACKs first. */
	r = job_acks_until(j, c, buf, 0);
	if (r < 0)
		return r;
	r = job_recv(j, c, buf, &type, &len);
	if (r < 0)
		return r;
	if (type != WIRE_PROOF || wire_proof_decode(buf, len, &a) < 0 || a.hash != q.hash ||
	    a.block_size != q.block_size) {
		snprintf(j->err, sizeof(j->err), "node '%s': no valid PROOF after %s",
			 j->peer->name, commit ? "PROOF_COMMIT" : "PROOF_REQ");
		return -EBADMSG;
	}
	j->proof = a;
	j->proof_done = true;
	FAILPOINT_RETURN("primary-proof-received");
	j->proof_match = a.volume_size == j->proof_primary->volume_size &&
			 !memcmp(a.root, j->proof_primary->root, sizeof(a.root));
	if (j->proof_match)
		return commit ? job_wait_ack(j, c, buf) : 0;
	snprintf(j->err, sizeof(j->err),
		 "node '%s': proof mismatch after the transfer: its volume's root is %s, the primary's %s: not committed, it stays Inconsistent",
		 j->peer->name, node_proof_format(&a, theirs, sizeof(theirs)),
		 node_proof_format(j->proof_primary, mine, sizeof(mine)));
	return -EILSEQ;
}

/* After the cancel's ERROR, once data went: what the secondary says before
 * its session ends. Data frames sent before the cancel reach it first,
 * so it marked itself Inconsistent at the first unless it refused them
 * (its role changed, a split brain: etcd moved the leader, and this node
 * saw it too and cancelled), and then its ERROR says its state, which
 * job_write_state() takes over the guess from bytes sent. Its ACKs are
 * read past; its session's end (the connection closed) or
 * JOB_CANCEL_HEAR_MS of silence ends the wait. The words stay "cancelled"
 * unless it said something. */
static void job_cancel_heard(struct job *j, struct peer_conn *c)
{
	unsigned char *buf = j->buf;

	if (!j->bytes_written || !buf)
		return;
	peer_conn_set_timeout(c, JOB_CANCEL_HEAR_MS);
	for (unsigned k = 0; k < 4096; k++) {
		uint16_t type = 0;
		size_t len;

		if (job_recv(j, c, buf, &type, &len) < 0) {
			if (type != WIRE_ERROR)
				snprintf(j->err, sizeof(j->err), "cancelled");
			return;
		}
	}
	snprintf(j->err, sizeof(j->err), "cancelled");
}

int job_cancelled(struct job *j, struct peer_conn *c)
{
	if (atomic_load(&j->abort)) {
		snprintf(j->err, sizeof(j->err), "node '%s': given up on at the primary's fence",
			 j->peer->name);
		return -ETIMEDOUT;
	}
	if (!atomic_load(j->ctx->cancel))
		return 0;
	send_text(c, WIRE_ERROR, WIRE_REASON_OTHER, "resync cancelled");
	snprintf(j->err, sizeof(j->err), "cancelled");
	job_cancel_heard(j, c);
	return -ECANCELED;
}
