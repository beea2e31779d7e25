/* The cluster file: one INI file, identical on every node (DESIGN.md,
 * "Configuration"). Shared by resyncd and resyncctl (the secret is the
 * daemon's: daemon/config.h).
 *
 * Loading validates everything it can without touching the network or the
 * volumes: every key is known, every value parses, every node has an
 * address and a volume, names are unique, the primary exists. An error
 * message names the file, the line and the key:
 *   cluster.conf:12: key 'block_size': '3K' is not a power of two from 4K to 1M */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* session_timeout: its default and its bounds. */
enum {
	CONFIG_SESSION_TIMEOUT_DEFAULT_MS = 120000,
	CONFIG_SESSION_TIMEOUT_MIN_MS = 1000,
	CONFIG_SESSION_TIMEOUT_MAX_MS = 86400000,
};

/* verify_interval and alert_after: 0 is off; otherwise 1 s up to this. */
enum {
	CONFIG_DRIFT_DURATION_MAX_S = 365 * 86400,
	CONFIG_ALERT_AFTER_DEFAULT_MS = 5 * 60 * 1000,
};

/* The primary's fence during a resync (DESIGN.md, "A resync", step 6):
 * the defaults of fence_max, final_pass_bytes and max_passes, and their
 * bounds. */
enum {
	CONFIG_FENCE_MAX_DEFAULT_MS = 5000,
	CONFIG_FENCE_MAX_MIN_MS = 100,
	CONFIG_FENCE_MAX_MAX_MS = 3600000,
	CONFIG_MAX_PASSES_DEFAULT = 8,
	CONFIG_FUSE_RT_PRIORITY_DEFAULT = 10,
	CONFIG_MAX_PASSES_MAX = 1000,
};
#define CONFIG_FINAL_PASS_BYTES_DEFAULT (64ull << 20)

/* undo: the values of enum undo_mode (resync/undo.h). */
enum config_undo {
	CONFIG_UNDO_OFF = 0,
	CONFIG_UNDO_DIVERGED = 1,
	CONFIG_UNDO_ON = 2,
};
enum {
	CONFIG_UNDO_KEEP_DEFAULT_S = 7 * 86400,
	CONFIG_UNDO_MAX_PERCENT_DEFAULT = 10,
};

/* How long the primary's writers wait during a resync. */
enum config_fence {
	CONFIG_FENCE_SHORT = 0, /* converging passes, then a short fence for the last */
	CONFIG_FENCE_WHOLE,	/* the primary fenced from the start to the commit */
};

struct node_config {
	char *name;
	char *address; /* HOST:PORT as written */
	char *host;    /* without brackets for an IPv6 literal */
	uint16_t port;
	char *volume;
	char *mount;   /* NULL if not set */
	char *control; /* NULL if not set */
	char *metrics; /* HOST:PORT or NULL */
	char *web;     /* HOST:PORT or NULL */
	unsigned line; /* of the [node NAME] header */
};

/* The values are resync/proof.h's enum proof_hash. */
enum config_proof_hash {
	CONFIG_PROOF_XXH3 = 0,
	CONFIG_PROOF_SHA256 = 1,
};

enum { CONFIG_BEFORE_RESYNC_TIMEOUT_DEFAULT_MS = 60000 };

/* [etcd] (issue 14): the coordinator the primary and the resync lock
 * come from. lock_ttl: the lease of the resync lock (its default and
 * bounds, seconds); timeout: each request's. */
enum {
	CONFIG_ETCD_LOCK_TTL_DEFAULT_S = 10,
	CONFIG_ETCD_LOCK_TTL_MIN_S = 2,
	CONFIG_ETCD_LOCK_TTL_MAX_S = 3600,
	CONFIG_ETCD_TIMEOUT_DEFAULT_MS = 2000,
	CONFIG_ETCD_ENDPOINTS_MAX = 16,
};

struct etcd_config {
	char *endpoints[CONFIG_ETCD_ENDPOINTS_MAX]; /* http:// or https:// URLs, no trailing '/' */
	size_t n_endpoints;
	char *cacert, *cert, *key; /* TLS files; NULL: not set */
	char *leader_key;	   /* default /service/<cluster>/leader */
	char *prefix;		   /* default /resync/<cluster>, no trailing '/' */
	unsigned lock_ttl_s;
	unsigned timeout_ms;
	unsigned line;	       /* of the [etcd] header */
	unsigned key_line[8];  /* of each key given (config-etcd.c's order) */
};
/* How a full resync finds what it sends (delta =): data at its own offset
 * only (aligned: today's path); also blocks that moved, and data shifted
 * by any number of bytes inside differing regions, searched while the
 * search costs less than sending (auto, the default); or the rolling
 * search over every differing region, whatever it costs (rolling). */
enum config_delta {
	CONFIG_DELTA_AUTO = 0,
	CONFIG_DELTA_ALIGNED,
	CONFIG_DELTA_ROLLING,
	CONFIG_DELTA_COUNT,
};
/* "auto", "aligned", "rolling"; NULL for another value. */
const char *config_delta_name(unsigned delta);
/* The value named s: 0 and *ret, or -EINVAL. */
int config_delta_parse(const char *s, unsigned *ret);

struct cluster_config {
	char *path; /* the file loaded */
	char *name;
	/* NULL if not set. With [etcd] the leader key's watch changes it
	 * at run time (to another node's name, or NULL): read it with
	 * cluster_config_primary_name(), once per decision. */
	char *primary;
	char *secret_file; /* NULL only when insecure */
	uint32_t block_size;
	uint64_t max_rate; /* bytes per second, 0 = unlimited */
	bool insecure;	   /* plaintext peer traffic allowed (tests, benchmarks) */
	int compress_level;
	/* The level moves with what the link and the CPU allow (zadapt.h),
	 * from compress_level; false: compress_level throughout. */
	bool compress_adapt;
	/* The mount's FUSE workers: SCHED_FIFO at this priority, 0 for
	 * normal scheduling (resyncfs(8), -o rtprio). */
	unsigned fuse_rt_priority;
	char *notify_email; /* one or more addresses, comma-separated */
	char *smtp_url;
	char *smtp_user;
	char *smtp_password_file;
	char *notify_from;
	char *notify_webhook;
	char *notify_command;
	/* The undo journal (resync/undo.h): when a resync journals what it
	 * overwrites on a secondary (enum config_undo, the values of enum
	 * undo_mode), how long a journal is kept (seconds), and its bound:
	 * undo_max_bytes bytes, or (0) undo_max_percent % of the volume. */
	unsigned undo;
	uint64_t undo_keep_s;
	uint64_t undo_max_bytes;
	unsigned undo_max_percent;
	/* A peer session's receive deadline: the longest a peer may stay
	 * silent (it sends KEEPALIVEs while it waits on something else). */
	unsigned session_timeout_ms;
	/* Drift detection (issue 16): a scheduled verify every this many
	 * ms (0: none) at most verify_max_rate bytes per second (0:
	 * unlimited); an alert once a node stayed disconnected this long
	 * (0: no such alert). */
	uint64_t verify_interval_ms;
	uint64_t verify_max_rate;
	uint64_t alert_after_ms;
	/* The primary's fence: short (the default) or whole; the longest a
	 * short fence holds the primary's writers; the pass whose blocks
	 * are at most final_pass_bytes is the last before the fence (also
	 * bounded by what max_rate sends in about half a second); at most
	 * max_passes passes before it (pass 1 included). */
	enum config_fence fence;
	unsigned fence_max_ms;
	uint64_t final_pass_bytes;
	unsigned max_passes;
	/* The dashboard (a node's `web`): the login token's file, whether a
	 * non-loopback address may serve it, whether its read-only pages
	 * need no login. */
	char *web_token_file;
	bool web_allow_remote;
	bool web_public_status;
	unsigned delta; /* enum config_delta */
	/* The proof of convergence after a resync's commit (issue 11):
	 * on or off, and its hash (resync/proof.h). */
	bool proof;
	enum config_proof_hash proof_hash;
	/* Run on the primary for each secondary before its job writes (a
	 * snapshot); a failure or a timeout skips that secondary. */
	char *before_resync_command;
	unsigned before_resync_timeout_ms;

	/* [etcd] (NULL: none): the primary is its leader key's value, and
	 * the static `primary` is refused. resyncd then sets primary (to
	 * one of nodes[i].name, never freed with the config) as the key
	 * changes: read it with __atomic_load_n() where that matters. */
	struct etcd_config *etcd;

	struct node_config *nodes; /* in file order */
	size_t n_nodes;
};

/* Load and validate path. On failure, a one-line message (without a
 * trailing newline) is written to err (errlen bytes, may be 0). Returns 0
 * and *ret (free with cluster_config_free), or -EINVAL (a config error),
 * -ENOMEM, or the -errno of opening the file. */
int cluster_config_load(const char *path, char *err, size_t errlen, struct cluster_config **ret);
/* The same from a string; name is used in messages in place of a path. */
int cluster_config_parse(const char *name, const char *text, char *err, size_t errlen,
			 struct cluster_config **ret);
void cluster_config_free(struct cluster_config *cfg);

/* The node called name, or NULL. */
const struct node_config *cluster_config_node(const struct cluster_config *cfg,
					      const char *name);
/* The primary's node, or NULL when the cluster has none. */
const struct node_config *cluster_config_primary(const struct cluster_config *cfg);

/* One key of [etcd] (common/config-etcd.c): 0, or -EINVAL/-ENOMEM with
 * a message in err (without the file and line). */
int config_etcd_key(struct etcd_config *e, unsigned line, const char *key, const char *v,
		    char *err, size_t errlen);
/* Defaults and checks once the file is read (the cluster's name known). */
int config_etcd_finish(struct cluster_config *cfg, char *err, size_t errlen);
void config_etcd_free(struct etcd_config *e);

/* Whether s[0, len) is a valid cluster or node name: 1 to RESYNC_NAME_MAX
 * bytes of letters, digits, '.', '_' and '-', starting with a letter or a
 * digit. The peer protocol checks the names of a HELLO with it too. */
bool config_name_valid(const char *s, size_t len);

/* Split "HOST:PORT" ("[v6]:PORT" for IPv6 literals). Returns 0 and a
 * malloc'ed host, or -EINVAL. */
int config_address_parse(const char *s, char **ret_host, uint16_t *ret_port);

/* cfg->primary now (an atomic load: see struct cluster_config). */
static inline const char *cluster_config_primary_name(const struct cluster_config *cfg)
{
	return __atomic_load_n(&cfg->primary, __ATOMIC_ACQUIRE);
}

/* Whether cfg names name as the primary now (one load). */
static inline bool cluster_config_primary_is(const struct cluster_config *cfg, const char *name)
{
	const char *p = cluster_config_primary_name(cfg);

	return p && !strcmp(p, name);
}
