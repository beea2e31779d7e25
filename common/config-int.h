/* Private to the cluster file's reader (common/): the parse's state and
 * the key tables' enums, shared by its rooms.
 *
 *   config.c       the file: inih's line reader in front of it, sections,
 *                  the checks of the whole, the model's lifecycle and
 *                  look-ups
 *   config-keys.c  the keys: the tables of [cluster] and [node NAME] and
 *                  their parsers (sizes, durations, addresses, URLs, ...)
 *   config-etcd.c  the [etcd] section */
#pragma once

#include <stddef.h>

#include "resync/config.h"

#define CONFIG_NAME_RULE "letters, digits, '.', '_', '-', at most 64"

enum { CONFIG_FILE_MAX = 1 << 20, COMPRESS_LEVEL_MIN = -7 };

enum cluster_key {
	CK_NAME,
	CK_PRIMARY,
	CK_SECRET_FILE,
	CK_BLOCK_SIZE,
	CK_MAX_RATE,
	CK_INSECURE,
	CK_COMPRESS_LEVEL,
	CK_COMPRESS_ADAPT,
	CK_NOTIFY_EMAIL,
	CK_SMTP_URL,
	CK_SMTP_USER,
	CK_SMTP_PASSWORD_FILE,
	CK_NOTIFY_FROM,
	CK_NOTIFY_WEBHOOK,
	CK_NOTIFY_COMMAND,
	CK_UNDO,
	CK_UNDO_KEEP,
	CK_UNDO_MAX_BYTES,
	CK_SESSION_TIMEOUT,
	CK_VERIFY_INTERVAL,
	CK_VERIFY_MAX_RATE,
	CK_ALERT_AFTER,
	CK_FENCE,
	CK_FENCE_MAX,
	CK_FINAL_PASS_BYTES,
	CK_MAX_PASSES,
	CK_WEB_TOKEN_FILE,
	CK_WEB_ALLOW_REMOTE,
	CK_WEB_PUBLIC_STATUS,
	CK_PROOF,
	CK_PROOF_HASH,
	CK_BEFORE_RESYNC_COMMAND,
	CK_BEFORE_RESYNC_TIMEOUT,
	CK_FUSE_RT_PRIORITY,
	CK_DELTA,
	CK_COUNT,
};

enum node_key {
	NK_ADDRESS,
	NK_VOLUME,
	NK_MOUNT,
	NK_CONTROL,
	NK_METRICS,
	NK_WEB,
	NK_COUNT,
};

struct node_lines {
	unsigned key[NK_COUNT]; /* line of each key, 0 = not given */
};

enum section { SEC_NONE, SEC_CLUSTER, SEC_NODE, SEC_ETCD, SEC_BAD };

struct parse_ctx {
	const char *file;
	char *err;
	size_t errlen;
	int error; /* first failure, 0 if none */

	struct cluster_config *cfg;
	unsigned cluster_line;		/* of [cluster], 0 = none yet */
	unsigned cluster_key[CK_COUNT]; /* line of each key */
	struct node_lines *node_lines;	/* parallel to cfg->nodes */
	size_t cap_nodes;

	/* The line reader. */
	const char *text;
	size_t pos, len;
	unsigned line;
	enum section sec;
};

/* config.c: the parse fails with error and a message naming the file and
 * the line (0: none); the first failure is the one kept. */
void config_fail(struct parse_ctx *c, unsigned line, int error, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* config-keys.c: one key = value line of the current [cluster] or
 * [node NAME] section, checked and stored (or the parse fails). */
void config_cluster_key(struct parse_ctx *c, const char *key, const char *v);
void config_node_key(struct parse_ctx *c, const char *key, const char *v);
