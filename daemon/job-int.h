/* The primary's job toward one secondary (job.c, job-walk.c, job-xfer.c,
 * job-end.c): what it needs of the node (struct job_ctx), the walk's
 * memo, the job itself and the steps its rooms offer each other. Part of
 * node-int.h, which includes it in place (it uses the node's enums and
 * the client's types declared above it there): include node-int.h, not
 * this. */
#pragma once

/* ---- job.c ---- */
/* What a job needs of the node that runs it, and nothing else: the
 * cluster, the primary's volume (read only), where events go, the pace
 * and the cancel flag. */
struct job_ctx {
	const struct cluster_config *cfg;
	struct volume *vol;
	struct event_bus *bus;
	struct ratectl *rate;
	atomic_bool *cancel;
	/* Asked before each COMMIT (NULL: none): etcd's word that the
	 * commit may go (etcd-lock.c). */
	int (*gate)(void *arg, char *why, size_t whylen);
	void *gate_arg;
};

enum job_mode {
	JOB_FULL = 0, /* compare through the hash tree */
	JOB_QUICK,    /* the union of both dirty bitmaps */
};

/* What a walk learnt of a secondary's tree (job-walk.c): the tree's
 * seed and shape, the secondary's hashes of the walk's first level, and
 * the differing leaves with the secondary's hashes of them. A plan makes
 * one per full job; the resync that follows it takes it (plan-keep.c)
 * and ends its walk at the first level when that level is unchanged. */
struct walk_memo {
	bool set;
	uint64_t seed, nleaves;
	unsigned fanout;
	uint32_t leaf, leaf_wire; /* leaf_wire: as the HASH_REQ named it */
	unsigned first_level;  /* the level first holds (the walk's first) */
	struct hash128 *first; /* [nfirst] */
	uint64_t nfirst;
	uint64_t *leaves;	/* [nleaves_diff], ascending */
	struct hash128 *leaf_h; /* [nleaves_diff] */
	size_t nleaves_diff;
	/* For job-early.c: the plan's peer, and nothing for moved.c in it. */
	uint64_t features;
	uint16_t proto_min, proto_max;
	bool quiet;
	double reply_rate; /* the plan's job's (struct job), 0: none measured */
};
void walk_memo_release(struct walk_memo *m);

/* The walk's first level as requested (job-walk.c): the whole level in
 * parts of at most RESYNC_WIRE_HASHES_MAX nodes, one request each, as
 * the walk itself would split it (job_walk_first_parts()). */
struct walk_first {
	uint64_t seed, count;
	unsigned level, fanout;
	uint32_t leaf_wire;
	/* clock_usec() when its first part went (0: unknown): its replies'
	 * bytes over the time since are a lower bound of the link's rate
	 * (the secondary's hashing and this side's late reading included). */
	uint64_t t_sent;
};

struct job {
	const struct job_ctx *ctx;
	const struct node_config *peer;
	struct control_client *cli; /* progress lines; NULL: none */
	pthread_mutex_t *cli_lock;
	const struct hashtree *tree;
	uint32_t leaf;	   /* bytes a leaf of tree covers */
	unsigned fanout;   /* tree's */
	const unsigned char *pbitmap; /* the primary's bitmap, for JOB_QUICK */
	size_t bitmap_size;
	uint64_t seed;
	bool write;
	uint64_t max_rate;
	struct meta_uuid gen;
	pthread_t t;
	bool started; /* t runs */
	uint64_t t0;

	/* After job_open_thread(): the session and what the peer said. */
	struct peer_conn *c;
	unsigned char *buf;
	struct wire_hello hello;
	uint64_t features; /* both peers' */
	struct wire_status status;
	bool opened;
	enum job_mode mode;
	bool diverged;
	bool split_brain; /* node_peer_split_brain() found it (split_why says why) */
	bool forced;	  /* ... and the request's "force" names it */
	char split_why[RESYNC_WIRE_TEXT_MAX];
	unsigned undo_mode; /* enum undo_mode of this run */
	bool undo;	    /* the secondary journals what this resync overwrites */
	bool resume; /* Inconsistent with a checkpoint of this generation */
	unsigned ack_pending; /* CHECKPOINTs whose ACK is not read yet (<= NODE_ACK_WINDOW) */
	/* The ACKs' pace (job-xfer.c): bytes_written at each CHECKPOINT (a
	 * ring), those the last ACK covered, first data and that ACK's time. */
	uint64_t ck_bytes[NODE_ACK_WINDOW + 1], acked_bytes, data_t0, acked_t;
	/* The fastest hash reply read on this connection, bytes/us (its
	 * bytes over the time from its request's send to its last byte: a
	 * lower bound of the link's rate), the plan's included; 0: none. */
	double reply_rate;
	unsigned ck_sent;
	bool early_ok; /* job-early.c: allowed; early: sent, with these features */
	struct rangelist early;
	uint64_t early_features;
	/* The first level's requests (first_req's parts) await their
	 * answers; first_rest: the type its parts after the first go as. */
	bool prefetched;
	struct walk_first first_req;
	uint16_t first_rest;
	bool first_one; /* the first level takes one request (job-hashif.c) */
	unsigned first_level, first_fanout; /* the walk's, chosen once (job-walk.h); 0: not yet */
	uint64_t first_nleaves;

	/* A transfer in passes (job_xfer_open() to job_xfer_close()). */
	struct job_xfer *x;
	const struct rangelist *pass_set; /* job_pass_thread()'s ranges */
	bool pass_final;		  /* ... sent under the primary's fence, then COMMIT */
	uint64_t pass_bytes, pass_usec;	  /* read and taken by the last pass */
	atomic_bool abort; /* given up on (fence_max): stop at once */

	int r;
	char err[RESYNC_WIRE_TEXT_MAX + 256];
	enum meta_state state;
	/* The state the secondary's ERROR said its failure left it in
	 * (WIRE_FEATURE_ERROR_STATE, job_recv()), when err_state_said. */
	bool err_state_said;
	enum meta_state err_state;
	/* The COMMIT (or PROOF_COMMIT) left: a failure after it, unless the
	 * secondary said its state, may be a commit the secondary made whose
	 * answer was lost or late (commit_unheard: asked again once the run
	 * ends, resync_ask_unheard()). */
	bool commit_sent, commit_unheard;
	struct rangelist ranges;
	uint64_t differing_blocks, differing_bytes;
	uint64_t bytes_compared, bytes_read, bytes_sent, bytes_written;
	/* On its connection (peer_conn_round_trips()): waits paid in
	 * sequence, and replies received in all, this run's (a connection
	 * kept from the plan counted those of the plan: rt_base, ex_base). */
	uint64_t round_trips, exchanges;
	uint64_t rt_base, ex_base;
	/* The plan's connection to this secondary (plan-keep.c), for
	 * job_open_thread() to take; NULL: connect. reused: it served. */
	struct peer_conn *kept;
	bool reused;
	/* The first level asked for in the flight of the hellos: the memo's
	 * again, or (early_run) the run's (job-hashif.c); resync_early_settle()
	 * decides: the prefetch, or read and dropped. */
	bool early_first, early_run;
	bool keep_conn; /* a plan's job: its connection is kept at the end */
	/* The walk's memo: made by a plan's job (memo_make), taken from the
	 * plan by the resync (memo_in, owned by the run; memo_used: it
	 * ended the walk). */
	bool memo_make, memo_used;
	struct walk_memo memo;
	const struct walk_memo *memo_in;
	double seconds;

	/* Moved and shifted data (moved.c): this run's delta (enum
	 * config_delta), the search's state between the compare and pass 1,
	 * what went as copies, what the secondary refused to copy (sent as
	 * data instead), the time spent finding and copying. */
	unsigned delta;
	struct moved *moved;
	uint64_t bytes_copied, copies_failed, search_usec;

	/* The proof (issue 11): the primary's root to compare with (NULL:
	 * no proof asked), the secondary's answer. */
	const struct wire_proof *proof_primary;
	struct wire_proof proof;
	bool proof_done;  /* proof holds the secondary's root */
	bool proof_match; /* ... and it is proof_primary's */
};

void job_prefetch(struct job *j, uint64_t seed);
/* The first HASH_REQ of memo's first level (the prefetch of a resync
 * that took its plan's walk) into j->buf, j->first_req set for the rest
 * (job_walk_first_rest()): 0 and *ret_len, or -errno. */
int job_memo_first_req(struct job *j, const struct walk_memo *m, size_t *ret_len);
/* Receive a secondary's reply (an ERROR it sent: -EIO, j->err says it),
 * and the leaf size a HASH_REQ names for it. */
int job_recv(struct job *j, struct peer_conn *c, unsigned char *buf, uint16_t *ret_type,
	     size_t *ret_len);
uint32_t job_leaf_wire(const struct job *j);
/* A progress line to the job's client (if any), an event when it writes. */
void job_progress(struct job *j, enum event_phase phase, uint64_t done, uint64_t total,
		  uint64_t t0);
/* ---- job-walk.c (the first level's choice: job-walk.h) ---- */
/* The walk of the peer's tree (j->tree's shape and seed), every request of
 * a level in flight at once: the indices of the differing leaves,
 * ascending, in *ret_leaves (the caller frees it; NULL when none). */
int job_walk(struct job *j, struct peer_conn *c, unsigned char *buf, uint64_t **ret_leaves,
	     size_t *ret_n);
/* The job's steps, in order: the differing ranges (job_compare through
 * the hash tree, or job_quick from both bitmaps), then job_transfer.
 * Each returns 0 or -errno with j->err saying why. */
int job_compare(struct job *j, struct peer_conn *c, unsigned char *buf);
int job_quick(struct job *j);
int job_transfer(struct job *j, struct peer_conn *c, unsigned char *buf);
void *job_thread(void *arg);
/* The end of an opened job whose secondary ended the connection while
 * this volume was hashed (resync_hash()): what it said before (its ERROR,
 * with its state) or that the connection ended, in j->err; its state,
 * r and time as a failed job's; the connection closed. */
void job_gone(struct job *j);

/* ---- job-xfer.c ---- */
/* A transfer in passes, on j->c: open, send ranges once a pass (the
 * first pass in ascending order with CHECKPOINTs; later ones without,
 * since "everything below" would not be true), commit, close (always,
 * NULL-safe). job_transfer() is the one-pass case. */
enum {
	JOB_SEND_CHECKPOINTS = 1 << 0,
	JOB_SEND_FINAL = 1 << 1, /* under the primary's fence: a pause does not hold it */
	JOB_SEND_SETTLE = 1 << 2, /* end with a CHECKPOINT (job_settle_wait()) */
	JOB_SEND_EARLY = 1 << 3,  /* behind the hellos: no page hashes, no checkpoints */
};
int job_xfer_open(struct job *j);
int job_send_ranges(struct job *j, const struct rangelist *l, unsigned flags);
int job_commit(struct job *j);
void job_xfer_close(struct job *j);
/* A run's threads over these (each ends with j->r and j->state set when
 * the job is over: failed, or committed by job_pass_thread()). */
void *job_pass1_thread(void *arg);
void *job_pass_thread(void *arg);

/* A cancel or a give-up (j->abort) asked for: said to the peer, the
 * job's error (-ECANCELED, -ETIMEDOUT); 0 otherwise. */
int job_cancelled(struct job *j, struct peer_conn *c);
/* ---- job-end.c ---- (job_cancelled() above is there too) */
/* The proof's exchange before the commit (PROOF_COMMIT when commit, its
 * ACK read; else PROOF_REQ): 0 when the secondary's root is the
 * primary's, -EILSEQ on a mismatch (not committed), -errno, j->err saying
 * why. */
int job_proof(struct job *j, struct peer_conn *c, unsigned char *buf, bool commit);
/* job-xfer.c's: the next frame, which must be an ACK (-EBADMSG else). */
int job_wait_ack(struct job *j, struct peer_conn *c, unsigned char *buf);
