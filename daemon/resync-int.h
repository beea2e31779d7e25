/* The verify and resync run, shared by its rooms: resync.c (the request,
 * the jobs, the flow), resync-pass.c (the passes and the short fence)
 * and resync-report.c (the result). Not for the rest of the daemon. */
#pragma once

#include <json-c/json.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "job-hashif.h"
#include "node-int.h"

/* One verify or resync: what was asked, the jobs, and what they share. */
struct resync_run {
	struct node *n;
	struct control_client *cli;
	json_object *req;
	bool write; /* a resync that rewrites secondaries (not a dry run) */
	bool plan;  /* a resync's plan: may choose quick ways */
	bool no_ranges, all;
	uint64_t max_rate;
	struct job_ctx ctx;
	pthread_mutex_t cli_lock;
	struct job *jobs;
	size_t nj, n_quick;
	/* The plan kept for this resync (plan-keep.c): its connections are
	 * taken by the jobs, the rest closed at the release. */
	struct plan_kept *kept;
	size_t nkept;
	bool any_full, frozen;
	/* Every opened secondary ended its connection while this volume
	 * was hashed: the hash stopped there, the jobs ended (job_gone()). */
	bool hash_cut;
	struct early_geom early; /* asked in the hellos' flight (job-hashif.c) */
	struct meta_info mi;
	struct meta_uuid base;
	uint64_t size;
	/* The tree all full jobs walk, its seed and geometry. */
	struct blockcmp_opts o;
	unsigned fanout;
	struct hash128 *hashes;
	struct hashtree *tree;
	struct tree_cache tc; /* built and id: the tree may be cached */
	unsigned char *pbitmap; /* the primary's bitmap, for quick jobs */
	size_t bitmap_size;

	/* The primary's fence and the passes (short fence). */
	bool whole;    /* fenced from the start to the commit */
	unsigned delta; /* enum config_delta: the cluster's, or the request's */
	bool tracking; /* the mount records writes for the passes */
	unsigned passes;
	uint64_t *bytes_per_pass; /* [passes] */
	const char *why;	  /* why the passes stopped */
	uint64_t fence_t0;	  /* clock_usec() at the freeze; 0: none yet */
	double fence_seconds;
	bool committed; /* the primary's own commit was made */
	/* The proof (proof.c): this volume's root under the fence, before
	 * the jobs' commits; proof_err when it could not be made. */
	struct wire_proof proof;
	bool proof_done;
	/* The root made just before the fence (resync_proof_before()):
	 * under it, only the blocks written since are hashed again. */
	bool proof_pre;
	uint64_t proof_seq;
	double proof_seconds;
	char proof_err[256];
	struct rangelist set; /* the blocks of the running pass */
	/* The running pass's threads (resync_pass()). */
	pthread_mutex_t pass_lock;
	pthread_cond_t pass_cond; /* a job's pass ended */
	unsigned pass_left;	  /* protected by pass_lock */
};

/* One job's thread in a pass. */
struct pass_arg {
	struct resync_run *run;
	struct job *j;
	void *(*fn)(void *);
	bool started;
	bool done; /* protected by run->pass_lock */
};

/* ---- resync-pass.c ---- */
/* The bytes of the pass that starts, in run->bytes_per_pass. */
int resync_pass_note(struct resync_run *run, uint64_t bytes);
/* The fence's start and end, said (events, log); the end thaws. */
void resync_fence_start(struct resync_run *run);
void resync_fence_end(struct resync_run *run);
/* The primary's own commit under its fence, when every secondary has
 * every block. */
void resync_commit_primary(struct resync_run *run);
/* Passes 2 and later, the fence, the last pass, the commits and the
 * thaw (the short fence); pass 1 ran. */
int resync_passes(struct resync_run *run);
/* The primary's root for the proof, under its fence; and the one made
 * just before the fence, so that under it only the last pass's blocks
 * are hashed. */
void resync_proof(struct resync_run *run);
void resync_proof_before(struct resync_run *run);

/* ---- plan-keep.c ---- */
/* A plan's connections and walks kept for the resync that presents its
 * token, which goes into the plan's result res (nothing kept: none). */
void resync_keep_plan(struct resync_run *run, json_object *res);
/* Once the run's seed and tree are known (nl leaves): the first levels
 * asked for in the flight of the hellos (the memo's again, or the run's
 * early request) are the prefetch of the full jobs whose tree is the one
 * asked for; any other job reads the reply and drops it. */
void resync_early_settle(struct resync_run *run, uint64_t nl);

/* ---- resync-report.c ---- */
/* The result of the run, per secondary and for the whole. */
json_object *resync_report(struct resync_run *run);
/* Before the report: the state of each secondary whose commit's answer
 * was lost, asked again (struct job's commit_unheard). */
void resync_ask_unheard(struct resync_run *run);

/* ---- resync-tree.c ---- */
/* The tree's leaf and fanout, for the run and each job. */
void resync_geometry(struct resync_run *run);
/* This volume's tree and the run's seed, hashed or taken back (each full
 * job's prefetch sent). 0; 1 when the failure was answered to the client
 * (this node stopping, a read error); -errno. With every secondary gone
 * meanwhile, 0 and run->hash_cut: no tree, each job ended (job_gone()). */
int resync_hash(struct resync_run *run);

/* ---- resync.c ---- */
/* [[off, len], ...] of l. */
json_object *ranges_json(const struct rangelist *l);
/* The primary's next generation, its bitmap cleared (and trusted). */
void resync_next_generation(struct resync_run *run);
