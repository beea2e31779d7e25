/* One node of a cluster, as resyncd runs it: the volume served through
 * fusefs, the peer listener (sessions from other nodes: hello, hash
 * requests, blocks, commit), the control socket (status, verify, resync,
 * cancel), and the resync orchestration when this node is the primary.
 *
 * Lifecycle: node_new() loads nothing itself: it takes a loaded config and
 * the node's name, opens and mounts the volume, listens and serves;
 * node_stop() stops every thread, unmounts and leaves clean metadata;
 * node_free() releases. Errors are logged to stderr by the node (it is the
 * daemon's boundary). */
#pragma once

#include "config.h"

struct node;

/* Start node name of cfg (cfg is borrowed and must outlive the node).
 * Returns 0 and *ret, or -errno after logging the reason. */
int node_new(const struct cluster_config *cfg, const char *name, struct node **ret);
/* Stop serving: refuse new work, cancel a running resync at a checkpoint,
 * unmount, mark the metadata clean. Idempotent. Returns 0 or -errno. */
int node_stop(struct node *n);
void node_free(struct node *n);
