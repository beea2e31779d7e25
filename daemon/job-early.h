/* A resync's data behind its hellos (job-early.c; issue 18). */
#pragma once
#include <stdbool.h>

#include "node-int.h"
#include "resync/limits.h"

enum {
	NODE_SETTLE_FENCE_SHARE = 10, /* job_settle_wait(): fence_max / this */
	/* job_settle_wait(): the hash replies' rate counts across a round
	 * trip of this much or more (measured on the connection). */
	NODE_SETTLE_RTT_MIN_USEC = 5000,
	/* At most this much of a plan's differing bytes behind the hellos. */
	NODE_EARLY_BYTES_MAX = 64 << 20,
	/* No data behind a first level of more nodes than this (2 MiB of
	 * replies): job_early_wanted(). */
	NODE_EARLY_FIRST_MAX = 2 * RESYNC_WIRE_HASHES_MAX,
	/* Behind the hellos, a look for their answers after this much data
	 * (job-xfer.c): one poll() a MiB, not one a page. */
	NODE_EARLY_LOOK_BYTES = 1 << 20,
};

/* Whether job j (its memo_in taken from the plan) may send the plan's
 * differing pages behind its hellos; forced: the request's "force"
 * names its secondary. Not behind a first level of more than
 * NODE_EARLY_FIRST_MAX nodes: the secondary answers each frame in turn
 * on one thread, so the replies the primary reads only once its data
 * has gone must fit in the sockets' buffers, or both sides wait on a
 * full one until the session times out. Linux grows those to 6 MiB
 * (tcp_rmem) and 4 MiB (tcp_wmem) by default, and the plan's replies
 * of the same size have just grown them on this connection; 8 MiB (a
 * first level of 8 requests) would not be sure to fit. */
bool job_early_wanted(const struct job *j, const struct cluster_config *cfg, bool forced);
/* peer_early's after(): the UNDO, the pages (j->early: what went) and a
 * CHECKPOINT at 0, on c, with the features of the plan's hello. Returns
 * 0 or -errno (j->err may say why). */
int job_early_send(void *arg, struct peer_conn *c);
/* The early ranges l cut at off (ascending: what went is below it):
 * what lies at or above off is dropped, for pass 1 to send. Returns 0
 * (it only shrinks the list). */
int job_early_cut(struct rangelist *l, uint64_t off);
/* After the hellos: the features the early data assumed are this
 * hello's (-EPROTO, j->err says so, otherwise). */
int job_early_opened(struct job *j);
/* The open failed after job_early_send(): the job as before it (its
 * connection was freed by the open), to connect anew. */
void job_early_drop(struct job *j);
/* l less sent (both sorted, without overlaps) into ret (empty). */
int job_early_rest(const struct rangelist *l, const struct rangelist *sent, struct rangelist *ret);

/* A lower bound of the link's rate (bytes/us) measured on a hash reply
 * (job-walk.c): j->reply_rate raised to it when faster. */
void job_note_reply_rate(struct job *j, double rate);
/* job_settle_wait()'s rule: whether bytes not acknowledged yet at the
 * end of an unfenced pass could take more than share_usec to drain, at a
 * lower bound of the link's rate: the faster of the ACKs' pace, when
 * one came back (acked_bytes acknowledged acked_usec after the first
 * data frame, the round trip included), and of the fastest hash reply
 * read on the same connection (reply_rate, bytes/us, the plan's walk
 * included; 0: none); with neither, true: nothing tells the pace. No
 * bytes: false. */
bool node_settle_wait(uint64_t bytes, uint64_t share_usec, uint64_t acked_bytes,
		      uint64_t acked_usec, double reply_rate);

/* job-xfer.c's, for this path: read ACKs until at most left CHECKPOINTs
 * are in flight; a reply read where an ACK may come first (job_recv()
 * else); a CHECKPOINT at off sent now (the batched runs first). */
int job_acks_until(struct job *j, struct peer_conn *c, unsigned char *buf, unsigned left);
int job_recv_reply(struct job *j, struct peer_conn *c, unsigned char *buf, uint16_t *ret_type,
		   size_t *ret_len);
int job_checkpoint(struct job *j, uint64_t off);
/* moved.c's: whether leaves[0, n) (ascending, the secondary's hashes
 * leaf_h) give moved_run() nothing to copy or search, on j->tree. */
bool moved_memo_quiet(const struct job *j, const uint64_t *leaves, const struct hash128 *leaf_h,
		      size_t n);
