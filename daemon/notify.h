/* Notifications: when a resync finishes, fails or is cancelled, and when a
 * node turns Diverged or is left Inconsistent, tell the operator by email
 * (SMTP through libcurl), a webhook (JSON POST) and a command, as the
 * cluster file asks (notify_email, smtp_url, smtp_user,
 * smtp_password_file, notify_from, notify_webhook, notify_command).
 *
 * The notifier subscribes to the node's event bus: it gathers a run's
 * per-node events (resync_started, then resync_finished|failed|cancelled)
 * and, at resync_done, writes one notification to its spool and returns.
 * A worker thread delivers it: nothing here ever delays a resync.
 *
 * Spool: a directory (default IMAGE.resync-notify beside the volume), one
 * file ID.json per pending notification, written to ID.json.NNN-NNN.tmp, fsynced
 * and renamed (then the directory fsynced), so a crash leaves either the
 * old or the new file. Each file holds {"version": 1, "id", "created",
 * "pending": [channels not yet delivered], "attempts": {channel: n},
 * "payload": {...}}. A daemon that starts finds the files and delivers
 * them. A failed attempt is retried after 1 s, 2 s, 4 s ... up to 5 min;
 * after a day a notification is given up (logged, notify_failed with
 * retry 0). Every attempt is logged and published as notify_delivered or
 * notify_failed.
 *
 * The payload, which is also the webhook's body (Content-Type
 * application/json), schema version 1:
 *   {
 *     "version": 1,
 *     "type": "resync_finished" | "resync_failed" | "resync_cancelled"
 *             | "state_changed" | "alert",
 *     "alert": "verify_differs" | "state" | "disconnected"   (alert only:
 *               drift detection's, once per incident; with "summary",
 *               one line, and "fix", the command that mends it; its node
 *               has "differing_bytes", "differing_blocks", "verify_time"
 *               for verify_differs)
 *     "cluster": "demo",            the cluster's name
 *     "node": "node1",              the node that reports (its daemon)
 *     "primary": "node1",           null when the cluster has none
 *     "result": "success" | "failed" | "cancelled"   (resync_*), or the
 *               new state (state_changed: "Diverged", "Inconsistent")
 *     "id": "1700000000123456-1a2b3c4d", unique per notification
 *     "time": "2024-01-01T00:00:00.000000Z", when it happened (UTC)
 *     "seconds": 12.5,              the whole run (resync_*)
 *     "generation": "UUID",         the primary's generation (resync_*)
 *     "nodes": [ {                  one per secondary of the run, or the
 *                                   node whose state changed
 *         "name": "node2",
 *         "result": "resynced" | "failed" | "cancelled" | the new state,
 *         "state_before": "Outdated", "state_after": "UpToDate",
 *         "bytes_compared": 1073741824, "bytes_sent": 5242880,
 *         "seconds": 3.2,
 *         "error": "..."            only when failed or cancelled; for a
 *                                   state change, the reason
 *     } ],
 *     "details": "resyncctl --config /etc/resync/demo.conf status"
 *   }
 *
 * Email: Subject "[resync] cluster 'demo': resync succeeded|failed|
 * cancelled" (or "node 'n2' is Diverged"); the body lists each node's
 * result, state before and after, bytes compared and sent, duration and
 * generation, and ends with the command that shows more. smtp_url is
 * smtp:// (STARTTLS when the server offers it) or smtps://.
 *
 * Command: run with /bin/sh -c, stdin from /dev/null, stdout and stderr
 * to the daemon's stderr, in its own process group, with the daemon's
 * environment plus:
 *   RESYNC_CLUSTER, RESYNC_EVENT (the type), RESYNC_RESULT, RESYNC_NODES
 *   (node names, space-separated), RESYNC_NODE (the reporter),
 *   RESYNC_PRIMARY, RESYNC_GENERATION, RESYNC_SECONDS, RESYNC_TIME,
 *   RESYNC_ID, RESYNC_DETAILS, RESYNC_JSON (the payload),
 *   RESYNC_NODE_COUNT, and for i = 1..count: RESYNC_NODE_<i>_NAME,
 *   _RESULT, _STATE_BEFORE, _STATE_AFTER, _BYTES_COMPARED, _BYTES_SENT,
 *   _SECONDS, _ERROR.
 * Exit status 0 is delivery; anything else, or running past the time
 * limit (30 s; the process group is killed), is a failed attempt. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct event_bus;
struct json_object;
struct notify;

enum notify_channel {
	NOTIFY_EMAIL = 1 << 0,
	NOTIFY_WEBHOOK = 1 << 1,
	NOTIFY_COMMAND = 1 << 2,
};

struct notify_opts {
	const struct cluster_config *cfg; /* borrowed; outlives the notifier */
	const char *node;		  /* this node's name */
	const char *spool_dir;		  /* NULL: IMAGE.resync-notify of node's volume */
	struct event_bus *bus;		  /* NULL: no events in, none out */
	unsigned command_timeout_ms;	  /* 0: 30 s */
	unsigned backoff_min_ms;	  /* 0: 1 s */
	unsigned backoff_max_ms;	  /* 0: 5 min */
	unsigned max_age_s;		  /* 0: one day */
};

/* The channel's name as the spool, the events and the metrics write it
 * ("email", "webhook", "command"; "" for a value that is not one channel).
 * Static storage. */
const char *notify_channel_name(enum notify_channel ch);

/* Which channels cfg configures (NOTIFY_* bits). */
unsigned notify_channels(const struct cluster_config *cfg);

/* Create the spool directory, load what is pending in it and start the
 * worker. With no channel configured, no thread and no spool: submissions
 * are dropped. Returns 0 and *ret, or -errno (logged). */
int notify_new(const struct notify_opts *o, struct notify **ret);
/* Stop the worker (an attempt in progress ends first, bounded by its time
 * limit); what is undelivered stays in the spool. NULL is accepted. */
void notify_free(struct notify *n);

/* Spool payload (a reference is taken) for delivery on every configured
 * channel; "id" and "time" are added when absent. Returns 0 or -errno
 * (the spool could not be written: logged). Thread-safe. */
int notify_submit(struct notify *n, struct json_object *payload);
/* Notifications still in the spool. Thread-safe. */
size_t notify_pending(struct notify *n);

/* The email for payload: Subject line (without "Subject: ") and body, both
 * malloc'd. Returns 0 or -ENOMEM. Exposed for the tests. */
int notify_email_format(const struct json_object *payload, char **ret_subject, char **ret_body);
/* The RESYNC_* variables for payload, as a NULL-terminated array of
 * malloc'd "KEY=VALUE" strings (free with notify_env_free). */
int notify_env_build(const struct json_object *payload, char ***ret);
void notify_env_free(char **env);

/* Run cmd with /bin/sh -c in a process group of its own, stdin from
 * /dev/null, stderr to stdout, default signals, and the daemon's
 * environment less its RESYNC_ variables plus extra (NULL-terminated,
 * borrowed): the notification command and the before_resync_command.
 * Returns 0 and *ret_pid (the caller waits for it), or -errno. */
#include <sys/types.h>
int notify_shell_spawn(const char *cmd, char *const *extra, pid_t *ret_pid);
/* Wait for pid (from notify_shell_spawn()) until it exits, timeout_ms
 * pass or stop(arg) returns true (asked at least every tick_ms; stop may
 * be NULL). Past the timeout or at a stop its process group is killed
 * and reaped; when it exits by itself, whatever it left running in its
 * group is killed too. Returns 0 and *ret_status (waitpid()'s) when it
 * exited by itself, -ETIMEDOUT, -ECANCELED (stopped), or -errno when
 * waiting failed. The callers word each outcome themselves. */
int notify_shell_wait(pid_t pid, uint64_t timeout_ms, unsigned tick_ms, bool (*stop)(void *arg),
		      void *arg, int *ret_status);
/* How a shell that exited by itself ended: 0 for status 0, else -EIO
 * and words in buf ("exited with 3", "was killed by signal 9"). */
int notify_shell_status(int status, char *buf, size_t len);
