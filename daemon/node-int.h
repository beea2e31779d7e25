/* The node's rooms share this header: the node itself, the tree cache,
 * the secondary's session, the primary's job toward one secondary and
 * the helpers each room offers the others. Not for outside daemon/:
 * node.h is the node's public face.
 *
 * Rooms (one concern a file):
 *   node.c        lifecycle, the accept loop, the list of sessions
 *   node-state.c  the state file (IMAGE.resync-node)
 *   treecache.c   the hash tree kept while the image is unchanged, and
 *                 across clean restarts (IMAGE.resync-hashes)
 *   hello.c       what this node offers and accepts in a hello; growing
 *   client.c      the asking side: connect, hellos, status, bitmap
 *   session.c     the accepting side: frames dispatched by type
 *   session-hello.c  its hellos, and a HELLO again on a kept connection
 *   session-write.c  the primary's writes, CHECKPOINT, COMMIT (session-int.h)
 *   writeback.c   writeback started early while frames arrive
 *   job.c         the primary's work toward one secondary
 *   job-walk.c    its walk of the secondary's hash tree, a level a round trip
 *   job-xfer.c    its transfer: batches, page hashes, CHECKPOINTs, COMMIT
 *                 (the job's types and steps: job-int.h, included below);
 *                 job-end.c the proof before the commit, and a cancel
 *   job-hashif.c  the tree's first level asked for in the hellos' flight
 *                 (HASH_REQ_IF, HASH_REQ_MORE), the peers' features
 *                 remembered
 *   job-early.c   a resync's data behind its hellos on the plan's
 *                 connection, and when the end of a pass waits its ACK
 *   moved.c, moved-session.c  moved and shifted data as COPYs, both sides
 *                 (moved-table.c: the leaf table, its types in moved-int.h)
 *   resync.c      verify and resync: plan, hash, run jobs, commit (its run
 *                 in resync-int.h; resync-tree.c this volume's tree,
 *                 resync-pass.c the passes, the short fence and the
 *                 primary's proof, resync-report.c the result)
 *   plan-keep.c   a plan's connections and walks, kept for its resync
 *   forward.c     cluster-wide requests sent to the primary, both ends
 *   commands.c    the control commands and their table
 *   proof.c       the proof of convergence: this volume's root hash, its
 *                 leaves kept in IMAGE.resync-proof (proof-fold.c: the
 *                 leaves of a resync's writes folded in at its checkpoints)
 *   undo.c, hook.c  the undo journal and rollback; before_resync_command
 *   drift.c, verify-sched.c, alerts.c, health.c
 *                 drift detection: the scheduled verify, the primary's
 *                 watch and alerts, /health (drift.h)
 *   etcd-node.c, etcd-lock.c
 *                 coordination through etcd (issue 14): the primary from
 *                 the leader key, the resync lock, the checks before a
 *                 commit, the node's summary (etcd.h is the client) */
#pragma once

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "config.h"
#include "control.h"
#include "events.h"
#include "log.h"
#include "metrics.h"
#include "node.h"
#include "notify.h"
#include "peer.h"
#include "ratectl.h"
#include "resync/blockcmp.h"
#include "resync/clock.h"
#include "resync/failpoint.h"
#include "resync/fusefs.h"
#include "resync/hash.h"
#include "resync/hashtree.h"
#include "resync/meta.h"
#include "resync/proof.h"
#include "resync/range.h"
#include "resync/undo.h"
#include "resync/volume.h"
#include "web.h"
#include "wire.h"

struct json_object;
struct job_xfer;
struct plan_keep;
struct patch_writer;

enum {
	NODE_ERROR_LINGER_MS = 2000,	  /* after a session's ERROR, for the peer to close */
	NODE_STOP_WAIT_MS = 5000,	  /* sessions given to end at stop (then: said) */
	/* An earlier session of the primary that may rewrite this volume,
	 * given to end once a newer one arrived (session-hello.c). */
	NODE_SUPERSEDE_WAIT_MS = 10000,
	/* Hashing a volume is bulk work: its threads' nice value is raised
	 * by this much (blockcmp_opts.nice), so that the daemon's protocol
	 * threads, and another daemon's handshake on the same machine, are
	 * not queued behind it (three nodes on two cores: the secondary that
	 * connected second began hashing 40 ms late). */
	NODE_HASH_NICE = 5,
	/* Connections past accept() that have not sent their hello yet
	 * (handshake included): past this, the newest is closed at once. */
	NODE_UNAUTH_MAX = 64,
	NODE_UNAUTH_WARN_USEC = 10000000, /* one warning of the cap per this */
	NODE_ACCEPT_BACKOFF_MIN_MS = 100, /* after accept() failed (EMFILE, ...) */
	NODE_ACCEPT_BACKOFF_MAX_MS = 1000,
	/* A checkpoint every this many bytes sent, except within the last
	 * half of this of a pass (job_xfer_batch()): at most 1.5 times this
	 * is sent again after a crash. */
	NODE_CHECKPOINT_BYTES = 16 << 20,
	/* CHECKPOINTs in flight, unacknowledged, before the transfer waits
	 * for the oldest: the bytes keep going across a long round trip. */
	NODE_ACK_WINDOW = 4,
	NODE_PROGRESS_USEC = 500000,
};

/* What identifies an image's content without reading it: any write
 * moves mtime and ctime (ctime cannot be set back by anyone), a
 * replaced file has another inode. */
struct image_id {
	uint64_t dev, ino, size;
	struct timespec mtime, ctime;
};

/* A volume's leaf hashes and hash tree for one seed, with the image's
 * identity when hashing started. Reused only while the identity is the
 * same and the mtime was already older than the start of the hashing by
 * more than the clock's coarse tick (so any later write moves it): the
 * plan's compare serves the resync that follows it, and a volume that
 * did not change since its last compare (across clean restarts too, see
 * tree_file_save()) is not read again. Regular files only (a block device
 * has no useful times). */
struct tree_cache {
	struct hash128 *hashes;
	struct hashtree *tree;
	uint64_t seed;
	unsigned fanout;
	uint32_t leaf; /* bytes a leaf covers */
	struct image_id id;
	uint64_t built; /* clock_usec() when hashing started; 0: empty */
};

enum {
	/* Hash-tree fanout over page leaves (blocks: the default). */
	NODE_FINE_FANOUT = 16,
	TREE_CACHE_MARGIN_NSEC = 200 * 1000000, /* above any coarse clock tick */
};

struct node {
	const struct cluster_config *cfg;
	const struct node_config *self;
	/* Atomic: with etcd, the watcher moves it (etcd-node.c). */
	atomic_bool is_primary;
	struct secret *secret;
	struct peer_ctx *ctx;
	struct peer_listener *listener;
	/* The volume served through a FUSE mount (fs), or without one (fs
	 * NULL: tests and local transports; nothing to fence or invalidate).
	 * vol and meta are fs's when there is one, borrowed either way. */
	struct fusefs *fs;
	struct volume *vol;
	struct meta *meta;
	struct control_server *ctl;
	pthread_t accept_thread;
	bool accept_started;
	bool stopped;
	atomic_bool stopping;
	atomic_bool cancel;

	/* Every session thread is listed from its start until it is joined:
	 * in sessions while it runs (its connection may be shut down by
	 * node_stop()), in sessions_ended once it ended by itself, for the
	 * accept loop (or node_stop()) to join and free. */
	pthread_mutex_t sessions_lock;
	pthread_cond_t sessions_cond;	/* a session ended */
	struct session *sessions;	/* protected by sessions_lock */
	struct session *sessions_ended; /* protected by sessions_lock */
	unsigned sessions_unauth;	/* of sessions, before the hello; protected by sessions_lock */

	pthread_mutex_t lock;
	bool resync_running; /* protected by lock */
	bool writing;	     /* a session rewrites this volume; protected by lock */
	int64_t last_resync; /* unix seconds, 0 never; protected by lock */
	/* Primary: the generation every secondary shared when the bitmap
	 * was last cleared (null: none recorded); protected by lock. */
	struct meta_uuid base;
	/* The last generation this node started as primary (null: none
	 * recorded): a start as primary under any other one forks a new
	 * generation (node_primary_init()); protected by lock, kept in the
	 * state file. */
	struct meta_uuid primary_gen;
	bool primary_gen_legacy; /* a state file of a build that did not record it */
	/* Split brain or a second primary, as this node last saw it (empty:
	 * none): what status shows of this node itself; protected by lock. */
	char split_brain[RESYNC_WIRE_TEXT_MAX];
	struct meta_uuid split_brain_gen; /* the peer's generation it was seen with */
	/* Bumped at every change of the cluster's primary or of this node's
	 * role (node_role_changed()): a session writing this volume compares
	 * it with its snapshot at each write batch (session_write_ensure()),
	 * a load rather than a syscall. */
	atomic_uint role_epoch;
	/* Why this node, named primary, refused the role (its volume
	 * Inconsistent or being rewritten: node_primary_init()); empty when
	 * it did not. What status and the log say; protected by lock. */
	char promote_refused[RESYNC_WIRE_TEXT_MAX];
	char *state_path; /* IMAGE.resync-node: last_resync, base, primary_generation */
	uint64_t *peer_features; /* [cfg->n_nodes] last hellos' (job-hashif.h); protected by lock */
	/* Events, notifications, metrics, live pace (events.h, notify.h,
	 * metrics.h, ratectl.h). */
	struct event_bus *bus;
	struct notify *notify;
	struct metrics *metrics;
	struct web *web; /* the dashboard (web.h); NULL without `web` */
	struct ratectl rate;
	/* The last hash tree built of this volume (a resync's plan and the
	 * resync itself use one seed): valid while the image is unchanged;
	 * protected by lock, handed over whole (see tree_cache_take()). */
	struct tree_cache tcache;
	/* Drift detection (drift.h): the scheduled verify, the watch, the
	 * primary's word on this node, the incidents alerted. */
	struct drift *drift;
	/* The undo journal (undo.c): used by the holder of writing; set and
	 * cleared under lock; undo_view (what status shows) protected by lock. */
	struct undo_journal *undo;
	char *undo_path;
	struct wire_undo_info undo_view;
	/* The proof's leaves of this volume (proof.c) and what they are
	 * right for; protected by proof_lock. */
	pthread_mutex_t proof_lock;
	struct proof_tree proof;
	struct proof_key proof_key;
	/* The leaves were hashed whole by this process (not loaded): every
	 * write since went through the mount, whose dirty marks count it
	 * whether the bitmap is trusted or not, or was this node's resync's
	 * (its session's extra ranges). proof_begins counts
	 * node_proof_begin()s, so that a hashing pass across one is not
	 * offered. */
	bool proof_own;
	uint64_t proof_begins;
	/* Counts every change of the leaves (node_proof_compute_since()). */
	uint64_t proof_seq;
	/* Primary: the last proof of each node of the cluster (by index in
	 * cfg->nodes); protected by lock. */
	struct node_proof_last *proof_last;
	/* etcd (issue 14; etcd-node.c): NULL without an [etcd] section. */
	struct node_etcd *etcd;
	/* A plan's connections, kept for its resync (plan-keep.c). */
	struct plan_keep *keep;
};

static inline uint64_t node_size(struct node *n)
{
	return volume_size(n->vol);
}

static inline struct meta *node_meta(struct node *n)
{
	return n->meta;
}

/* The mount's write fence, cache and size, for a node with a mount; a
 * node without one (n->fs NULL) has no writer to fence and no cache to
 * drop, and is not grown. */
static inline int node_fence_freeze(struct node *n)
{
	return n->fs ? fusefs_fence_freeze(n->fs, FUSEFS_FENCE_WAIT) : 0;
}

/* Thaw when frozen (idempotent). */
static inline void node_fence_thaw(struct node *n)
{
	if (n->fs && fusefs_fence_frozen(n->fs))
		fusefs_fence_thaw(n->fs);
}

static inline int node_invalidate(struct node *n, uint64_t off, uint64_t len)
{
	return n->fs ? fusefs_invalidate(n->fs, off, len) : 0;
}

/* -EOPNOTSUPP without a mount (its metadata would not follow). */
static inline int node_grow(struct node *n, uint64_t size)
{
	return n->fs ? fusefs_grow(n->fs, size) : -EOPNOTSUPP;
}

/* A session's connection waits cfg->session_timeout_ms for each frame
 * (KEEPALIVEs count); its owner, while it waits on something else, sends
 * a KEEPALIVE after this much silence to a peer that offered
 * WIRE_FEATURE_KEEPALIVE (peer_conn_keepalive()). */
static inline unsigned node_keepalive_ms(const struct cluster_config *cfg)
{
	return cfg->session_timeout_ms / WIRE_KEEPALIVE_DIVISOR;
}

/* ---- proof.c ---- */
/* The last proof of a node, as the primary saw it. */
struct node_proof_last {
	bool set;
	bool match;	    /* its root is the primary's */
	int64_t time;	    /* unix seconds */
	char root[PROOF_TEXT_MAX];
	char primary_root[PROOF_TEXT_MAX];
};
/* A resync starts rewriting this volume: its leaf file is removed (kept
 * in memory for the proof before its commit). */
void node_proof_begin(struct node *n);
/* A resync of this volume stopped before its commit: the leaves in
 * memory no longer describe it. */
void node_proof_forget(struct node *n);
/* Forget the leaves and remove their file: the volume is about to be
 * rewritten by something other than a resync (a rollback). */
void node_proof_drop(struct node *n);
/* This volume's root now (its writers held off by the caller): leaves
 * kept for its current generation with its dirty blocks and extra's
 * ranges (may be NULL) hashed again, or every block. Returns 0 and *ret
 * (hash, block_size, volume_size, hashed, root), or -errno. */
int node_proof_compute(struct node *n, enum proof_hash h, uint32_t bs, const struct rangelist *extra,
		       struct wire_proof *ret, uint64_t *ret_seq);
/* The root again when the leaves are still those of the compute that
 * gave *ret_seq == seq, and written holds every block written since that
 * compute began: only those are hashed. Returns 0 and *ret, -ESTALE when
 * the leaves changed meanwhile (then node_proof_compute() applies), or
 * -errno. */
int node_proof_compute_since(struct node *n, uint64_t seq, const struct rangelist *written,
			     struct wire_proof *ret);
/* The leaves of the blocks that overlap l hashed again now, into the
 * leaves held for this volume's current key (a resync's writes, folded
 * in before the proof: proof-fold.c), each piece read shown to fn (may
 * be NULL; proof_tree_update_each()). Returns 0 and *ret_hashed (may be
 * NULL), -ESTALE when no such leaves are held (the proof then hashes
 * what it must), or -errno of the reads (the leaves are dropped). */
int node_proof_fold(struct node *n, const struct rangelist *l, proof_read_fn fn, void *arg,
		    uint64_t *ret_hashed);
/* After a commit: the leaves of the last compute go to the file, keyed
 * with the generation now current. */
void node_proof_save(struct node *n);
/* The same after the commit was acknowledged (the file only saves the
 * next proof its reads; it is no part of the commit): begins is
 * node_proof_begins() read before the commit's end, and nothing is saved
 * once a resync began rewriting this volume since (its leaves are not
 * the volume's, and its file was removed). */
uint64_t node_proof_begins(struct node *n);
void node_proof_save_since(struct node *n, uint64_t begins);
/* The proof's leaves from a compare's hashing pass: when this node makes
 * proofs (xxh3) and leaf divides the proof's block, ret gets the extra
 * hashes to ask blockcmp for (the caller frees ->extra_hashes) and the
 * state to hand back to node_proof_offer() once the whole volume is
 * hashed. Returns false when there is nothing to ask, also when the
 * leaves held (in memory or in their file, valid for the volume now)
 * make the next root with the dirty blocks: no second hash of every
 * block then. */
struct proof_offer {
	struct proof_key key;
	uint64_t begins;
	uint64_t size;
};
bool node_proof_want(struct node *n, uint32_t leaf, struct blockcmp_opts *o,
		     struct proof_offer *ret);
/* Take o's extra hashes as the leaves of the volume now, if nothing
 * changed what they are right for since node_proof_want(). */
void node_proof_offer(struct node *n, const struct proof_offer *w, const struct blockcmp_opts *o);
/* "xxh3:..." of p's root into buf (PROOF_TEXT_MAX). */
const char *node_proof_format(const struct wire_proof *p, char *buf, size_t size);
/* Test failpoints that change behaviour (resync/failpoint.h: named in
 * RESYNC_FAILPOINT, read once at start). */
bool node_failpoint(const char *name);

/* ---- treecache.c ---- */
void tree_cache_release(struct tree_cache *c);
int node_image_id(struct node *n, struct image_id *ret);
bool image_id_equal(const struct image_id *a, const struct image_id *b);
bool node_image_still(struct node *n, struct image_id *ret);
int node_volume_check(struct node *n, char *err, size_t len);
bool tree_cache_take(struct node *n, uint64_t seed, unsigned fanout, uint32_t leaf,
		     struct tree_cache *ret);
void tree_cache_put(struct node *n, struct tree_cache *c);
/* IMAGE.resync-hashes: this header, then nleaves leaf hashes. The file
 * is this machine's (host byte order), checked whole by a hash. */
#define TREE_FILE_MAGIC "RSYNHSH1"

struct tree_file_hdr {
	char magic[8];
	uint64_t seed, nleaves;
	uint32_t fanout, leaf;
	struct image_id id;
	struct hash128 check; /* hash_block() of the leaf hashes, seed 0 */
};
_Static_assert(sizeof(struct tree_file_hdr) == 104, "tree file header layout");

void tree_file_save(struct node *n);
void tree_file_load(struct node *n);
/* Parse the bytes of an IMAGE.resync-hashes file (buf[0, len), the whole
 * file) for the image whose identity is now: the header must be this
 * image's and its size the one the image's leaves make, the leaf hashes
 * must match their check hash, and the tree is built. Returns 0 and *ret
 * (a built cache, its hashes copied; built is the time of the call),
 * -ESTALE (of another image, or the image changed), -EBADMSG (damaged),
 * or -ENOMEM. tree_file_load() and the fuzz target call it. Thread-safe. */
int tree_file_parse(const void *buf, size_t len, const struct image_id *now,
		    struct tree_cache *ret);

/* ---- node-state.c ---- */
void node_state_load(struct node *n);
int node_state_save_locked(struct node *n);
void node_last_resync_set(struct node *n);

/* ---- hello.c ---- */
uint64_t node_features(void);
void node_hello_make(struct node *n, struct wire_hello *h);
int node_hello_check(struct node *n, const struct wire_hello *h, struct wire_text *why);
bool node_grow_to_primary(struct node *n, const struct wire_hello *h);
int send_text(struct peer_conn *c, uint16_t type, uint32_t code, const char *text);
/* The same of a text already made (a state said with it, say). */
int send_wire_text(struct peer_conn *c, uint16_t type, const struct wire_text *t);
/* Split brain (DRBD's rule on generation UUIDs; see hello.c): whether
 * the secondary whose current generation is sec_gen and which holds
 * writes since its last commit (sec_writes: 0 none, 1 dirty bytes, 2 a
 * bitmap not trusted: it may) acted as primary under a generation the primary never had.
 * known (n_known entries, null ones ignored) is everything the primary
 * had: its current generation, its history, its bitmap's base. Fills why
 * when it returns true. */
bool node_split_brain(const struct meta_uuid *sec_gen, const struct meta_uuid *sec_hist,
		      unsigned sec_hist_n, int sec_writes, const struct meta_uuid *known,
		      unsigned n_known, char *why, size_t whylen);
/* The same from a peer's hello, on either side: this node's metadata and
 * base against the peer's generation and history; the secondary is the
 * one that is not primary (the peer's writes, when it is the secondary,
 * are peer_writes as sec_writes, -1 unknown). Also a peer that says PRIMARY to a node
 * that is primary itself (two primaries: a config changed on one node).
 * Logs, publishes a state_changed event (a notification, once per peer
 * generation) and keeps the note for status. Returns true when found. */
bool node_peer_split_brain(struct node *n, const struct wire_hello *h, int peer_writes,
			   char *why, size_t whylen);

/* ---- writeback.c ---- */
/* Writeback started early: the pages a resync writes are scattered, and
 * writing them out takes longer than receiving them. A thread of the
 * session starts the writeback of each frame's span (sync_file_range,
 * which waits for the device's queue) while the session receives the
 * next frames; a checkpoint's or the commit's fdatasync then waits for
 * less. Spans that find the queue full are left to that fdatasync. */
enum { WRITEBACK_QUEUE = 64 };

struct writeback {
	pthread_t t;
	bool started, stop;
	int fd;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct {
		uint64_t off, len;
	} q[WRITEBACK_QUEUE];
	unsigned head, n;
};

void writeback_start(struct writeback *w, int fd);
void writeback_push(struct writeback *w, uint64_t off, uint64_t len);
void writeback_stop(struct writeback *w);

/* ---- session.c ---- */
struct session {
	struct node *n;
	/* The connection; set to NULL under n->sessions_lock by the thread
	 * before it frees it (node_stop() shuts it down under that lock). */
	struct peer_conn *c;
	pthread_t thread;
	struct session *next; /* in n->sessions or n->sessions_ended; protected by n->sessions_lock */
	bool unauth;	      /* counted in n->sessions_unauth; protected by n->sessions_lock */
	unsigned char *in, *out;
	struct hash128 *hashes; /* this volume's block hashes for seed */
	struct hashtree *tree;
	uint64_t seed;
	unsigned fanout;
	uint32_t leaf;
	struct image_id id; /* the image's, when hashing started */
	uint64_t built;	       /* then; 0: the tree may not be cached */
	bool writing;
	bool wrote;
	/* Holds the volume's mapping (volume_map_hold()) from its tree's
	 * hashing to its end: the folds of its checkpoints find the page
	 * tables that hashing made. */
	bool map_held;
	struct patch_writer *pw;
	struct writeback wb;
	uint64_t n_blocks, n_extents; /* BLOCKS and EXTENTS frames written */
	struct wire_zstd *z;
	unsigned char *raw;
	unsigned char *bitmap; /* snapshot for BITMAP_REQ */
	size_t bitmap_size;
	struct meta_uuid target; /* the primary's generation (from its hello) */
	uint64_t features;	 /* both peers' (from its hello) */
	bool from_primary;	 /* the hello came from the cluster's primary */
	unsigned role_epoch;	 /* n->role_epoch when the writing began */
	bool data_follows;	 /* its hello said WIRE_HELLO_DATA_FOLLOWS */
	/* Split brain as the primary could judge it (session-hello.c): from
	 * this node's hello, then from its last STATUS (not behind a hello
	 * with data: the primary reads that STATUS after its data). */
	bool split_told;
	struct wire_hello primary_hello; /* from_primary: its last hello */
	/* A session of the primary that may rewrite this volume (GROW in its
	 * hello): when it said so (clock_usec(); 0: none); protected by
	 * n->sessions_lock. A newer one ends it: superseded. */
	uint64_t rewrite_since;
	atomic_bool superseded;
	unsigned undo_mode;	 /* enum undo_mode: the cluster's, or the primary's UNDO */
	bool diverged;		 /* Diverged at the primary's hello */
	/* The session's last HASH_REQ_IF: seen, and answered (a
	 * HASH_REQ_MORE is answered as it was). */
	bool if_seen, if_answered;
	bool undo;		 /* this resync's overwrites are journaled */
	char peer[RESYNC_NAME_MAX + 1];
	char why[RESYNC_WIRE_TEXT_MAX + 1]; /* a failed request's reason, for its ERROR */
	struct rangelist proof_written; /* byte ranges this session wrote (proof.c) */
	/* The proof's leaves of what this session wrote are folded in at
	 * each CHECKPOINT (proof-fold.c): the ranges written since the last
	 * fold, and the ranges folded, each with a hash of its bytes then. */
	struct rangelist proof_unfolded;
	struct proof_check *proof_checks;
	size_t n_checks, cap_checks;
	uint64_t proof_folded_blocks; /* leaves hashed by the folds */
	bool committed;
	bool proof_done; /* a PROOF was made of what this session wrote */
	/* The span of the bytes written by the frame being handled: the
	 * mount's cache of it is dropped at the frame's end (inval_end <=
	 * inval_off: none). */
	uint64_t inval_off, inval_end;
};

/* ---- proof-fold.c ---- */
/* A range this session wrote and folded into the proof's leaves, and the
 * seed-0 hash of its bytes as they were read back then. */
struct proof_check {
	uint64_t off, len;
	struct hash128 h;
};
/* At a CHECKPOINT, its data written to the volume: the leaves of the
 * blocks written since the last fold hashed now, outside any fence, and
 * each written range's bytes hashed, so that the proof reads again only
 * the written bytes (session_proof_stale()). Nothing to do without a
 * proof or without leaves held (the proof then hashes what it must).
 * Returns 0 or -errno of the reads. */
int session_proof_fold(struct session *s);
/* What the proof must hash again, into *ret (empty on entry): the ranges
 * written since the last fold, and every folded range whose bytes are
 * no longer those it was folded with (a stray write, a failing disk).
 * Returns 0 or -errno. */
int session_proof_stale(struct session *s, struct rangelist *ret);
void session_proof_fold_release(struct session *s);

/* A frame handler of the session: 0 to go on, SESSION_END to end the
 * session quietly (what had to be said was said), -errno to end it with
 * an ERROR frame saying why. */
enum { SESSION_END = 1 };
enum { SESSION_OP_PRIMARY_ONLY = 1 << 0 };
struct session_op {
	int (*fn)(struct session *s, size_t len);
	unsigned flags;
};

void *session_thread(void *arg);
/* The mount's cache of what the frame being handled wrote, dropped (one
 * notification over the span from its lowest to its highest byte; the
 * mount is fenced meanwhile, and dropping unwritten pages of the span
 * only costs a reader a read). Called after every frame and at the end
 * of the writing. */
void session_invalidate_flush(struct session *s);
/* Before this volume is hashed, written or committed: still the image
 * this daemon opened, at its size (node_volume_check()); the reason in
 * s->why, for the request's ERROR. */
int session_volume_check(struct session *s);
/* ---- session-hello.c ---- */
/* The session no longer counts against NODE_UNAUTH_MAX. */
void session_authed(struct session *s);
/* The hellos: the peer's first (under the connect deadline), checked,
 * then this node's. Returns 0 when the session may go on; anything else
 * was refused and said. */
int session_hello(struct session *s);
/* The handler of WIRE_HELLO after the first: the session starts over
 * (WIRE_FEATURE_REHELLO), or an unexpected message. */
int session_rehello(struct session *s, size_t len);
/* What the peer still sends, read and dropped (never applied) for
 * NODE_ERROR_LINGER_MS, so that a close does not reset it unread. */
void session_linger(struct session *s);
/* A STATUS went to the primary: what it may judge split brain from. */
void session_status_told(struct session *s);
/* At the first write, the mount fenced (nothing more lands on it): 0,
 * or -EPERM (the reason in s->why) when this node is no longer one the
 * primary may rewrite: promoted since the hello, or in a split brain the
 * primary was never told of (a write landed after its hello or status). */
int session_write_check(struct session *s);
/* How a session's ERROR begins when the roles changed while it wrote
 * (session_write_ensure()): what the primary's summary recognises. */
#define SESSION_ROLE_CHANGED "the primary changed during the resync"

/* ---- client.c ---- */
int node_peer_open(struct node *n, const struct node_config *peer, bool write, char *err,
		   size_t errlen, struct peer_conn **ret, struct wire_hello *ret_hello);
/* Send an empty request of type and receive the reply, which must be of
 * type reply, into buf (RESYNC_WIRE_FRAME_MAX bytes): 0 and *ret_len,
 * -EBADMSG for another type, or the transport's -errno. */
int node_peer_ask_empty(struct peer_conn *c, uint16_t type, uint16_t reply, unsigned char *buf,
		       size_t *ret_len);
int node_peer_status(struct peer_conn *c, unsigned char *buf, struct wire_status *ret);
/* node_peer_open() and node_peer_status() in one round trip (the
 * STATUS_REQ follows the HELLO unanswered); err says what failed,
 * *ret_reached whether the hellos were exchanged. */
/* kept (NULL: connect) is a connection a plan kept, to a peer that
 * offered WIRE_FEATURE_REHELLO: taken (freed on failure), the hellos
 * exchanged again on it without a connect. early (NULL: none): a request
 * sent right after the STATUS_REQ, in the same flight; its answer, after
 * the STATUS, is the caller's to read. Its payload may be buf (sent
 * before buf is used). */
struct peer_early {
	uint16_t type;
	const void *payload;
	size_t len;
	/* rest (NULL: none): sends what else the request takes (the rest of
	 * a first level, job-walk.c) right behind it; its failure fails the
	 * open. */
	int (*rest)(void *rest_arg, struct peer_conn *c);
	void *rest_arg;
	/* after (NULL: none): hello_flags in the HELLO; called once the
	 * request is sent, before a reply is read; its failure fails the open. */
	uint32_t hello_flags;
	int (*after)(void *arg, struct peer_conn *c);
	void *arg;
};
int node_peer_open_status(struct node *n, const struct node_config *peer, bool write,
			  struct peer_conn *kept, const struct peer_early *early,
			  unsigned char *buf, char *err, size_t errlen, struct peer_conn **ret,
			  struct wire_hello *ret_hello, struct wire_status *ret_status,
			  bool *ret_reached);
int node_peer_bitmap(struct peer_conn *c, unsigned char *buf, unsigned char *bm, size_t size);

#include "job-int.h" /* job.c, job-walk.c, job-xfer.c, job-end.c */

/* ---- moved.c, moved-session.c ---- */
/* Moved blocks and shifted data travel as COPY (WIRE_FEATURE_COPY,
 * WIRE_FEATURE_ROLLING). job_compare() hands every level-0 reply of its
 * walk to moved_note_leaves() (the secondary's hashes of the differing
 * leaves); pass 1 calls moved_run() after job_xfer_open() and before
 * its first data frame: it finds what the secondary holds elsewhere,
 * sends it as COPY frames and sets *ret to the ranges left to send as
 * data (j->ranges itself when nothing was found or the job does not
 * search: an aligned delta, a quick resync, a peer without the feature).
 * moved_free() releases the search (NULL-safe; after pass 1's send, and
 * at the job's end). Each returns 0 or -errno with j->err set. */
int moved_note_leaves(struct job *j, const struct hashtree_step *st, const struct hash128 *h);
int moved_run(struct job *j, const struct rangelist **ret);
void moved_free(struct job *j);
/* The secondary's handlers: COPY (primary only: applied under the fence,
 * each source checked first) and WEAK_REQ. */
int session_copy(struct session *s, size_t len);
/* Every page that q names, read from this volume in order, to fn with
 * its index (session.c; PAGE_REQ and WEAK_REQ). Returns 0, -EBADMSG
 * when q names what is not in the volume, or -errno of a read. */
int session_pages_each(struct session *s, const struct wire_page_req *q,
		       void (*fn)(void *arg, size_t k, const unsigned char *p, size_t len), void *arg);
int session_weak_req(struct session *s, size_t len);
/* Start writing (fence, Inconsistent on disk) at the first data frame. */
int session_write_ensure(struct session *s);

/* ---- plan-keep.c ---- */
/* A plan's connections and walks, kept a short while for the resync
 * that presents the plan's token (issue 18): one plan at a time; any
 * other run lets it go. A secondary's entry: its connection (to a peer
 * that offered WIRE_FEATURE_REHELLO) and its walk's memo. */
struct plan_kept {
	const struct node_config *peer;
	struct peer_conn *c;
	struct walk_memo memo;
};
enum {
	NODE_PLAN_KEEP_MS = 30000, /* at most; half the session_timeout when shorter */
	NODE_PLAN_TOKEN_MAX = 40,
};
/* At node_new() (n->keep; unit fixtures without it keep nothing), at
 * node_stop() (every kept connection closed, the expiry's thread
 * joined), at node_free(). */
int node_plan_keep_new(struct node *n);
void node_plan_keep_stop(struct node *n);
void node_plan_keep_free(struct node *n);
/* Keep v[0, nv) (taken whole, also on failure: then closed) until the
 * expiry; any plan kept before is let go. Returns 0 and the token in
 * ret_token (NODE_PLAN_TOKEN_MAX bytes), or -errno. Thread-safe. */
int node_plan_keep_put(struct node *n, struct plan_kept *v, size_t nv, char *ret_token);
/* The kept plan whose token is token, not expired: given to the caller
 * (*ret_v, *ret_n; free it with plan_kept_free()). Anything else kept
 * (another token, none asked: token NULL, expired) is let go, its
 * connections closed. Returns true when given. Thread-safe. */
bool node_plan_keep_take(struct node *n, const char *token, struct plan_kept **ret_v,
			 size_t *ret_n);
void plan_kept_free(struct plan_kept *v, size_t n);

/* ---- resync.c ---- */
int node_run_jobs(struct node *n, struct control_client *cli, struct json_object *req,
		  bool write);

/* ---- hook.c ---- */
/* Run before_resync_command (none: 0) for job j's secondary before it is
 * written; mode "quick" or "full". Returns 0, or -errno with err saying
 * why (exit status, signal, timeout). */
int node_hook_before_resync(struct node *n, const struct job *j, const char *mode, char *err,
			    size_t errlen);

/* ---- forward.c ---- */
typedef void node_forward_edit_fn(struct node *n, struct json_object *result);
int node_forward_try(struct node *n, struct control_client *cli, struct json_object *req,
		     node_forward_edit_fn *edit, char *err, size_t errlen);
int node_forward(struct node *n, struct control_client *cli, struct json_object *req);
int session_control(struct session *s, size_t len);

/* ---- drift (drift.h) ---- */
/* Allocate n->drift (before node_state_load()); start its threads once
 * the node serves; stop joins them (from node_stop(), after the peer
 * transport was shut down); free releases. */
int drift_new(struct node *n);
void drift_start(struct node *n);
void drift_stop(struct node *n);
void drift_free(struct node *n);
/* The state file's "drift" member, read at load and written by
 * node_state_save_locked() (n->lock held). */
void drift_state_load(struct node *n, struct json_object *state);
void drift_state_save_locked(struct node *n, struct json_object *state);
/* resync.c, once n->resync_running is set: wait until the scheduled
 * verify's step in flight (if any) ends; the verify then waits for the
 * run to end and resumes where it stopped. */
void drift_yield(struct node *n);
/* resync.c, at a run's report: a verify's (or a dry run's) result is the
 * last verify of its secondaries; a resync's success ends their verify
 * incidents. */
void drift_note_run(struct node *n, const struct job *jobs, size_t nj, bool write, bool plan);
/* resync.c's plan: the last verify found secondary nc differing in
 * blocks the primary's dirty bitmap did not mark (a quick resync from
 * the bitmaps would not mend it; an Outdated secondary that only lacks
 * the primary's writes differs in marked blocks alone). */
bool drift_verify_differs(struct node *n, const struct node_config *nc);
/* session-write.c, at a commit (n->lock held): the primary's word on this
 * node is UpToDate, and no verify difference stands. */
void drift_commit_note_locked(struct node *n);
/* session.c's handler of DRIFT frames (primary only). */
int session_drift(struct session *s, size_t len);
/* /health (ready: also fenced) and the drift metrics, for metrics.c;
 * the status fields of node nc, for commands.c. */
unsigned health_http(void *node, bool ready, char **ret_body);
void health_metrics(void *node, FILE *o);
void drift_status_json(struct node *n, const struct node_config *nc, struct json_object *o);

/* ---- undo.c ---- */
/* At start, before the mount serves: open the journal, finish an
 * interrupted rollback, drop an expired journal. */
/* The journal's limit for a volume of size bytes under cfg
 * (undo_max_bytes, or its percentage of the volume). */
uint64_t node_undo_max(const struct cluster_config *cfg, uint64_t size);
int node_undo_load(struct node *n);
void node_undo_expire(struct node *n);
/* A resync's first write (writing held, before Inconsistent): mi is the
 * state before it. Returns 1 when its overwrites are journaled, 0 when
 * not, -errno with why. */
int node_undo_begin(struct node *n, const struct meta_info *mi, const struct meta_uuid *target,
		    bool applies, char *why, size_t whylen);
/* Journal [off, off+len) before it is overwritten; sync before the write. */
int node_undo_save(struct node *n, uint64_t off, uint64_t len, char *why, size_t whylen);
int node_undo_sync(struct node *n, char *why, size_t whylen);
/* Roll the journal back (serving: fence and drop the mount's cache). */
int node_undo_rollback(struct node *n, bool serving, uint64_t *ret_bytes, char *why,
		       size_t whylen);
void node_undo_info(struct node *n, struct wire_undo_info *ret);
/* The asking side: UNDO_REQ, and ROLLBACK (ACK: bytes put back). */
int node_peer_undo_info(struct peer_conn *c, unsigned char *buf, struct wire_undo_info *ret);
int node_peer_rollback(struct peer_conn *c, unsigned char *buf, uint64_t *ret_bytes, char *why,
		       size_t whylen);

/* ---- node.c ---- */
/* With n->sessions_lock held: until a session ends (sessions_cond) or
 * 100 ms passed. */
void node_sessions_wait(struct node *n);
/* A primary has a generation and is UpToDate by definition: at start,
 * and when etcd's leader key makes this node primary. A volume that is
 * Inconsistent (a resync's half-written data) or that a session is
 * rewriting is never presented as good data: -EUCLEAN, nothing changed
 * on disk, the reason kept in n->promote_refused (status), logged and
 * published as an event; the caller keeps this node secondary. */
int node_primary_init(struct node *n);
/* An operator's word (resyncctl promote --force, DRBD's primary --force)
 * that this node, named primary and refusing the role, acts as primary
 * with the data it holds: marked UpToDate, its bitmap untrusted (the
 * half-done resync's writes are in no bitmap: every later resync compares
 * in full), a new generation (node_primary_init()). Refused while a
 * session rewrites it, or when it refuses nothing. Returns 0, or -errno
 * with why. Thread-safe. */
int node_primary_force(struct node *n, char *why, size_t whylen);
/* The primary or this node's role changed: a session rewriting this
 * volume writes nothing more (n->role_epoch). Thread-safe. */
void node_role_changed(struct node *n);

/* ---- etcd-node.c, etcd-lock.c (issue 14) ---- */
/* With an [etcd] section (else each does nothing): read the leader key
 * (before the volume opens), start the watcher and the ticker once the
 * node serves, join them at stop, release at free. */
int node_etcd_new(struct node *n);
void node_etcd_start(struct node *n);
void node_etcd_stop(struct node *n);
void node_etcd_free(struct node *n);
/* A resync (that writes; take) takes the cluster-wide lock before
 * anything is fenced, its plan (!take) is refused while it is held:
 * 0 taken (or no etcd), 1 refused (cli answered: etcd unreachable, this
 * node not the leader key's, the lock held: by whom), -errno. resync_end releases it (idempotent). */
int node_etcd_resync_begin(struct node *n, struct control_client *cli, struct json_object *req,
			   bool take);
void node_etcd_resync_end(struct node *n);
/* Whether etcd stopped this node's running resync (the one holding the
 * lock), and why. */
bool node_etcd_stopped(struct node *n, char *why, size_t whylen);
/* job_ctx's gate before a COMMIT (arg: the node): 0, or -errno with
 * why (the leader moved, the lock is gone, etcd unreachable). */
int node_etcd_commit_gate(void *arg, char *why, size_t whylen);
/* A secondary's check before it commits what peer sent: 0 when peer
 * is the primary etcd's leader key names (as last watched), -EPERM with
 * why otherwise (or no etcd: 0). */
int node_etcd_commit_check(struct node *n, const char *peer, char *why, size_t whylen);
/* Status: res's "etcd" member (reachable now, the leader, the lock). */
void node_etcd_status_json(struct node *n, struct json_object *res);

/* ---- commands.c ---- */
extern const struct control_command node_commands[];
/* A secondary's state from this node's view of its hello and status (as
 * status judges it). Thread-safe. */
enum meta_state node_status_judge(struct node *n, const struct wire_hello *h,
				  const struct wire_status *ws);
extern const size_t node_commands_n;
