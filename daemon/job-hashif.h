/* The first level of the hash tree asked for in the flight of the
 * primary's hello (job-hashif.c, issue 18), and what the primary
 * remembers of each peer's features to know it may ask. */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "wire.h"

struct node;
struct node_config;
struct job;
struct resync_run;

/* What a run asks for early, decided before its hellos: the tree's
 * seed and shape as resync_geometry() and resync_hash() will make them
 * when every peer still speaks what it last said (set), and whether the
 * primary is bound to compare every secondary in full whatever they say
 * (full: a plain HASH_REQ; else a HASH_REQ_IF naming gen and base). */
struct early_geom {
	bool set, full;
	bool cached; /* seed is the cached tree's: for that image only */
	uint64_t seed, nleaves;
	uint32_t leaf;
	unsigned fanout;
	struct wire_uuid gen, base;
};

/* The features peer's last hello offered (0: none seen), and a hello's
 * noted (saved in the node's state file when they changed). */
uint64_t node_peer_features(struct node *n, const struct node_config *peer);
void node_peer_features_note(struct node *n, const struct node_config *peer, uint64_t features);
/* The state file's "peer_features" (node-state.c), n->lock held to save. */
void early_state_load(struct node *n, json_object *state);
void early_state_save_locked(struct node *n, json_object *state);

/* The run's early request, decided before its jobs open (run->early). */
void resync_early_plan(struct resync_run *run);
/* Connect to j's peer and say the hellos and the STATUS_REQ, with the
 * first level asked for in the same flight when e allows it and the peer
 * is remembered to read it (j->early_first then, its reply unread; a
 * peer that no longer reads it is connected to again without it).
 * node_peer_open_status()'s results and returns. */
int job_open_early(struct node *n, struct job *j, const struct early_geom *e, bool *ret_reached);
