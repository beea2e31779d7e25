/* The notifier's pieces share this header: the notifier, its queue of
 * items, the channel table and the small JSON helpers. Not for outside
 * notify*.c: notify.h is the notifier's public face (and documents the
 * spool, the payload and the channels).
 *
 * Pieces (one concern a file):
 *   notify.c          the notifier: channel names, the queue, gathering a
 *                     run from the events, the worker and its retries,
 *                     lifecycle (and curl's stop callback)
 *   notify-spool.c    the on-disk spool: one file an item, written
 *                     atomically, loaded at start
 *   notify-email.c    the email's text, and sending it by SMTP (libcurl)
 *   notify-webhook.c  the JSON POST (libcurl)
 *   notify-command.c  the command's RESYNC_* environment, running it
 *                     under a time limit */
#pragma once

#include <curl/curl.h>
#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "events.h"
#include "notify.h"
#include "resync/clock.h"
#include "resync/limits.h"

enum {
	NOTIFY_COMMAND_TIMEOUT_MS = 30000,
	NOTIFY_BACKOFF_MIN_MS = 1000,
	NOTIFY_BACKOFF_MAX_MS = 300000,
	NOTIFY_MAX_AGE_S = 86400,
	NOTIFY_CONNECT_TIMEOUT_S = 10,
	NOTIFY_TRANSFER_TIMEOUT_S = 60,
	NOTIFY_SPOOL_FILE_MAX = 1 << 20, /* bytes of one spool file */
	NOTIFY_TICK_MS = 250,		 /* the worker looks at its stop flag this often */
};

/* The characters of a notification's id: it names its spool file. */
#define NOTIFY_ID_ALPHABET "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"

/* The channels, in the order of struct item's per-channel arrays. */
enum { NOTIFY_CHANNEL_COUNT = 3 };
struct notify_channel_info {
	enum notify_channel bit;
	const char *name;
};
extern const struct notify_channel_info notify_channel_table[NOTIFY_CHANNEL_COUNT];

struct item {
	char id[48];
	json_object *doc; /* the spool file's object */
	unsigned pending; /* NOTIFY_* bits */
	unsigned attempts[3];
	int64_t created;    /* unix seconds */
	int64_t due[3];	    /* monotonic ms of the next attempt per channel */
	int64_t backoff[3]; /* ms */
	struct item *next;
};

/* What the worker gathered about the run in progress, per secondary. */
struct run_node {
	char name[RESYNC_NAME_MAX + 1];
	struct event started, ended, proof;
	bool has_started, has_ended, has_proof;
};

struct notify {
	struct notify_opts o;
	const struct cluster_config *cfg;
	unsigned channels;
	char *spool;
	struct event_queue *q;
	pthread_t thread;
	bool started;
	atomic_bool stopping;
	pthread_mutex_t lock;
	struct item *items; /* protected by lock */
	size_t n_items;	    /* protected by lock */
	struct run_node *run; /* worker only */
	size_t n_run;
	/* The run's fence_ended, for its resync_done (worker only). */
	bool has_fence, fence_whole;
	unsigned fence_passes;
	double fence_seconds;
};

/* Delivery times and backoffs are counted in milliseconds. */
static inline int64_t mono_ms(void)
{
	return (int64_t)(clock_usec() / 1000);
}

static inline const char *jstr(const json_object *o, const char *key)
{
	json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static inline const char *jstr_or(const json_object *o, const char *key, const char *dflt)
{
	const char *s = jstr(o, key);

	return s ? s : dflt;
}

static inline uint64_t ju64(const json_object *o, const char *key)
{
	json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v))
		return 0;
	return json_object_get_uint64(v);
}

static inline double jdouble(const json_object *o, const char *key)
{
	json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v))
		return 0;
	return json_object_get_double(v);
}

static inline json_object *jnodes(const json_object *o)
{
	json_object *v;

	if (!o || !json_object_object_get_ex(o, "nodes", &v) || !json_object_is_type(v, json_type_array))
		return NULL;
	return v;
}

/* Close a stream of open_memstream(): 0, or -ENOMEM when a write to it
 * failed (its buffer is then incomplete; the caller still frees it). */
static inline int memstream_close(FILE *f)
{
	int bad = ferror(f);

	bad |= fclose(f);
	return bad ? -ENOMEM : 0;
}

/* notify.c */

/* Free it (its document with it). NULL is accepted. */
void notify_item_free(struct item *it);
/* Add it to the list (takes it). Called with n->lock held. */
void notify_items_add(struct notify *n, struct item *it);
/* Make the transfer c end early once n is stopping. */
void notify_curl_stop_set(CURL *c, struct notify *n);

/* notify-spool.c */

/* Write the item's file crash-safely. 0 or -errno. */
int notify_spool_write(struct notify *n, struct item *it);
/* Remove the item's file (best effort). */
void notify_spool_remove(struct notify *n, struct item *it);
/* Queue what the spool holds for the channels still configured; drop
 * what a crash left half-written. 0 or -errno (the directory). */
int notify_spool_load(struct notify *n);
/* Parse a spool file's bytes (text[0, len), no NUL needed): a JSON
 * object with a string "id" (1 to 47 bytes of NOTIFY_ID_ALPHABET: it
 * names the file) and an object "payload"; "created", "pending" and
 * "attempts" are read when there. Returns 0 and *ret (with every channel
 * the file lists pending; free with notify_item_free()), -EBADMSG
 * (damaged) or -ENOMEM. notify_spool_load() and the fuzz target call it.
 * Thread-safe. */
int notify_spool_parse(const char *text, size_t len, struct item **ret);

/* The channels: one attempt each on payload p; 0 delivered, or -errno
 * with what went wrong in err. Called by the worker only. */
int notify_email_send(struct notify *n, const json_object *p, char *err, size_t errlen);
int notify_webhook_send(struct notify *n, const json_object *p, char *err, size_t errlen);
int notify_command_run(struct notify *n, const json_object *p, char *err, size_t errlen);
