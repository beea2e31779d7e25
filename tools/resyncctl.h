/* resyncctl's commands that talk to resyncd (resyncctl-cluster.c, -node.c, -events.c). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/* Defaults for the daemon commands, set by leading global options. */
extern const char *resyncctl_config;
extern const char *resyncctl_node;

int resyncctl_status(int argc, char **argv);
int resyncctl_verify(int argc, char **argv);
int resyncctl_resync(int argc, char **argv);
int resyncctl_cancel(int argc, char **argv);
/* resyncctl-node.c */
int resyncctl_rollback(int argc, char **argv);
int resyncctl_promote(int argc, char **argv);
/* resyncctl-events.c */
int resyncctl_events(int argc, char **argv);
int resyncctl_pause(int argc, char **argv);
int resyncctl_resume(int argc, char **argv);
int resyncctl_rate(int argc, char **argv);
/* ---- shared by the daemon commands (resyncctl-client.c) ---- */
struct json_object;
struct cluster_config;
struct node_config;

void resyncctl_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A connection to the chosen node's control socket: --node, else the one
 * whose socket exists here (the primary's first), else the only node. */
struct resyncctl_session {
	struct cluster_config *cfg;
	const struct node_config *node;
	int fd;
};
/* Exit codes of the daemon commands (resyncctl(8), EXIT STATUS). */
enum {
	RESYNCCTL_EXIT_FAILURE = 1,
	RESYNCCTL_EXIT_USAGE = 2,
	/* Some node could not be reached: the daemon asked, or a secondary
	 * from the primary. */
	RESYNCCTL_EXIT_UNREACHABLE = 3,
};

/* Returns 0, or after printing why the exit code to use:
 * RESYNCCTL_EXIT_UNREACHABLE when the node's control socket does not
 * answer, RESYNCCTL_EXIT_FAILURE otherwise (the config, permissions). */
int resyncctl_session_open(struct resyncctl_session *s);
void resyncctl_session_close(struct resyncctl_session *s);

typedef void (*resyncctl_line_fn)(void *arg, struct json_object *line);
/* Send req, pass each stream line to fn, return the final result line
 * (the caller puts it), or NULL after printing why. */
struct json_object *resyncctl_request(struct resyncctl_session *s, struct json_object *req,
				      resyncctl_line_fn fn, void *arg);
/* resyncctl_request() in two halves, for a client with work between
 * them: send req (false after printing why), then its lines and result. */
bool resyncctl_send(struct resyncctl_session *s, struct json_object *req);
struct json_object *resyncctl_result(struct resyncctl_session *s, resyncctl_line_fn fn, void *arg);
/* Whether a result line says ok; prints its error when not. */
bool resyncctl_result_ok(struct json_object *res);

const char *resyncctl_jstr(struct json_object *o, const char *key);
uint64_t resyncctl_ju64(struct json_object *o, const char *key);
double resyncctl_jdbl(struct json_object *o, const char *key);
struct json_object *resyncctl_jnodes(struct json_object *o);
void resyncctl_print_json(struct json_object *o);
/* A result for --json: its fields without the reply's framing (type, ok). */
void resyncctl_print_result(struct json_object *res);
/* Asks on the terminal to type the cluster's name: whether it was. */
bool resyncctl_confirm(const char *cluster);
int resyncctl_parse_opts(int argc, char **argv, const char *usage, bool *json, int nargs);

/* Consume leading --config FILE / --node NAME; returns the count of argv
 * entries used after argv[0], or -1 on a missing value. */
int resyncctl_global_opts(int argc, char **argv);
