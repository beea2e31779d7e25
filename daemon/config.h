/* The cluster file: one INI file, identical on every node (DESIGN.md,
 * "Configuration"), and the cluster's shared secret.
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

struct cluster_config {
	char *path; /* the file loaded */
	char *name;
	char *primary;	   /* NULL if not set */
	char *secret_file; /* NULL only when insecure */
	uint32_t block_size;
	uint64_t max_rate; /* bytes per second, 0 = unlimited */
	bool insecure;	   /* plaintext peer traffic allowed (tests, benchmarks) */
	int compress_level;
	char *notify_email; /* one or more addresses, comma-separated */
	char *smtp_url;
	char *smtp_user;
	char *smtp_password_file;
	char *notify_from;
	char *notify_webhook;
	char *notify_command;
	bool undo; /* journal overwritten blocks so a resync can be rolled back */

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

/* Split "HOST:PORT" ("[v6]:PORT" for IPv6 literals). Returns 0 and a
 * malloc'ed host, or -EINVAL. */
int config_address_parse(const char *s, char **ret_host, uint16_t *ret_port);

/* The cluster key, read once from a file and kept in locked memory that is
 * wiped when freed. */
struct secret;

/* Read path: refused unless it is a regular file that neither group nor
 * others may read or write, holding RESYNC_SECRET_MIN to RESYNC_SECRET_MAX
 * bytes (one trailing newline is not part of the key). On failure a
 * message naming the file is written to err. Returns 0 and *ret, or
 * -EPERM (mode), -EINVAL (type, length), -errno. */
int secret_load(const char *path, char *err, size_t errlen, struct secret **ret);
/* A secret holding a copy of data[0, len) (tests; derived keys). */
int secret_new(const void *data, size_t len, struct secret **ret);
/* Wipe and release; NULL is accepted. */
void secret_free(struct secret *s);
const void *secret_data(const struct secret *s);
size_t secret_size(const struct secret *s);
/* HKDF-SHA256 of the secret with salt and info, len bytes (1 to 64), into
 * a new secret. The key that TLS uses is derived this way so that the raw
 * file contents never serve as a key on the wire. */
int secret_derive(const struct secret *s, const char *salt, const char *info, size_t len,
		  struct secret **ret);
