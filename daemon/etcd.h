/* A small client of etcd's v3 JSON gateway (etcd 3.4: POST /v3/kv/range,
 * /v3/kv/put, /v3/kv/txn, /v3/kv/deleterange, /v3/lease/grant,
 * /v3/lease/keepalive, /v3/lease/revoke, /v3/watch) over libcurl: keys
 * and values travel base64-encoded, 64-bit numbers as JSON strings.
 *
 * Each request tries the configured endpoints in turn, starting with the
 * last one that answered, so that a cluster with one member down still
 * serves (its quorum decides, not this client). Every call is
 * thread-safe: a call uses its own curl handle. */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "resync/config.h"

struct etcd;

/* A client for cfg's endpoints (borrowed: it must outlive the client).
 * Returns 0 and *ret, or -ENOMEM. */
int etcd_new(const struct etcd_config *cfg, struct etcd **ret);
void etcd_free(struct etcd *e);
/* The endpoint that answered last (for status). */
const char *etcd_endpoint(struct etcd *e);

/* One key's value as a string (NUL-terminated, trailing blanks and
 * newlines dropped; malloc'd), NULL when the key is absent; its lease (0: none) and the store's revision at the
 * read. Returns 0, or -EIO (no member answered; err says why), -EBADMSG. */
struct etcd_kv {
	char *value;
	int64_t lease;
	int64_t revision; /* of the store, at the read */
};
int etcd_get(struct etcd *e, const char *key, struct etcd_kv *ret, char *err, size_t errlen);
void etcd_kv_release(struct etcd_kv *kv);
/* Put value at key, under lease (0: none). */
int etcd_put(struct etcd *e, const char *key, const char *value, int64_t lease, char *err,
	     size_t errlen);
/* Create key with value under lease unless it exists: 0 when created;
 * -EEXIST and *ret_holder (its value, malloc'd) when it exists. */
int etcd_create(struct etcd *e, const char *key, const char *value, int64_t lease,
		char **ret_holder, char *err, size_t errlen);
int etcd_delete(struct etcd *e, const char *key, char *err, size_t errlen);

/* Leases: grant one of ttl seconds; keep it alive once (*ret_ttl: the
 * seconds it now has, 0 when it expired); revoke it (its keys go). */
int etcd_lease_grant(struct etcd *e, unsigned ttl, int64_t *ret_id, char *err, size_t errlen);
int etcd_lease_keepalive(struct etcd *e, int64_t id, int64_t *ret_ttl, char *err, size_t errlen);
int etcd_lease_revoke(struct etcd *e, int64_t id, char *err, size_t errlen);

/* Watch key from revision from (> 0) until stop is set or the stream
 * breaks: fn(arg, value or NULL when deleted, its revision) for each
 * change. Returns 0 when stopped, -EIO when the stream broke (err). */
typedef void etcd_watch_fn(void *arg, const char *value, int64_t revision);
int etcd_watch(struct etcd *e, const char *key, int64_t from, etcd_watch_fn *fn, void *arg,
	       atomic_bool *stop, char *err, size_t errlen);
/* Wake the watch running on e (one at a time) at once: its connection is
 * shut down; the caller set its stop flag first. Thread-safe. */
void etcd_watch_interrupt(struct etcd *e);
