/* The node's rooms without FUSE or TLS, for test-session, test-job and
 * test-treecache: a cluster file in a scratch directory, a struct node
 * built by hand over a plain volume (n->fs NULL: nothing to fence or
 * invalidate), and a session served on one end of a socketpair as the
 * accept loop would start it. Failures are cmocka failures. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "node-int.h"

enum { TN_BLOCK = 64 << 10 };

/* Three nodes, all on 127.0.0.1 (nothing listens): p the primary, s and
 * t secondaries; insecure; blocks of TN_BLOCK. Node NAME's image is
 * DIR/NAME.img. */
struct tcluster {
	char *dir;
	struct cluster_config *cfg;
};

/* A fresh directory and config; every image holds size bytes of seed's
 * stream (testlib_fill). */
void tcluster_init(struct tcluster *tc, size_t size, uint64_t seed);
/* Free the config and remove the directory. */
void tcluster_release(struct tcluster *tc);
/* DIR/NAME.img, malloc'ed. */
char *tcluster_image(const struct tcluster *tc, const char *name);

/* Node name of tc as node_new() leaves it, less the mount, the peer
 * transport, the listener and the control socket: its volume opened and
 * locked, its metadata opened (created), an event bus, its locks, its
 * state file path. */
struct node *tnode_new(const struct tcluster *tc, const char *name);
/* node_free() and the volume and metadata it borrowed. NULL is fine. */
void tnode_free(struct node *n);

/* A session of n, on its own thread and listed in n->sessions as
 * node.c's accept loop does it, serving one end of a socketpair; the
 * other end, the asking side's, is *ret_peer. */
struct session *tsession_start(struct node *n, struct peer_conn **ret_peer);
/* Wait for the session's end (its peer closed, or it ended by itself),
 * join its thread and free it. */
void tsession_join(struct node *n, struct session *s);
