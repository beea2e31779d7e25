/* The control socket's server side: resyncd's UNIX socket speaking JSON,
 * one object a line (the protocol and its client side: resync/control.h).
 *
 * Every request is checked before its handler runs: a JSON object with a
 * "cmd" string naming a command of the table, only that command's fields,
 * each of its type, the required ones present. A command flagged
 * CONTROL_CMD_ERASES (resync) also needs "confirm": "<cluster name>"
 * unless one of its CONTROL_FIELD_DRY_RUN fields is true. A refusal is one
 * {"type":"result","ok":false,"error":"..."} line naming the field and
 * what it must be; the handler is not called. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "resync/control.h"

struct json_object;
struct control_server;
struct control_client;

/* Handle one request (already checked against the command's fields).
 * Write replies with control_client_send(); return 0 after the final
 * "result" line was sent, or -errno to have the server send
 * {"type":"result","ok":false,"error":strerror} for you. Called on the
 * client's own thread: handlers may block (a resync streams progress). */
typedef int (*control_handler_fn)(void *userdata, struct control_client *c,
				  struct json_object *req);

enum control_command_flags {
	/* The command erases data (a resync, a rollback): the request must
	 * carry "confirm": "<cluster name>". */
	CONTROL_CMD_ERASES = 1 << 0,
};

struct control_command {
	const char *name;
	control_handler_fn fn;
	/* The fields it accepts besides "cmd" (and "confirm" when it
	 * erases), ended by {NULL}; NULL accepts none. */
	const struct control_field *fields;
	unsigned flags; /* enum control_command_flags */
};

/* Check a parsed request against the command table (cmds[0, ncmds)):
 * "cmd" is a string naming one of them, the other fields are that
 * command's (control_fields_check()), and a request of an erasing
 * command carries "confirm": cluster unless one of its dry-run fields is
 * true. On a refusal, a one-line message for the client ("refused: ...",
 * naming the field and what it must be) is written to err (errlen
 * bytes). Returns 0 and *ret_cmd (an entry of cmds), or -EINVAL. The
 * server calls it on every request before the handler; pure otherwise
 * (the fuzz target calls it too): thread-safe. */
int control_request_check(const struct control_command *cmds, size_t ncmds, const char *cluster,
			  struct json_object *req, const struct control_command **ret_cmd,
			  char *err, size_t errlen);

/* Listen at path (see unixsock_listen(): mode 0600 before anyone can
 * connect, the umask untouched; a stale socket left by a dead daemon is
 * replaced, a live one gives -EADDRINUSE and is left alone). cluster is
 * the name an erasing request must carry in "confirm" (copied). cmds must
 * outlive the server. Returns 0 and *ret, or -errno. */
int control_server_new(const char *path, const char *cluster, const struct control_command *cmds,
		       size_t ncmds, void *userdata, struct control_server **ret);
/* Stop accepting, wake and join every client thread, remove the socket.
 * NULL is accepted. */
void control_server_free(struct control_server *s);

/* Send one JSON line to the client (takes no ownership of obj). Returns 0
 * or -errno (-EPIPE when the client went away). Thread-safe per client. */
int control_client_send(struct control_client *c, struct json_object *obj);
/* Send the final {"type":"result","ok":true} line, merging extra's keys
 * when extra is not NULL (extra's reference is taken). */
int control_client_result(struct control_client *c, struct json_object *extra);
/* Send {"type":"result","ok":false,"error":msg}. */
int control_client_error(struct control_client *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Read from fd until buf[0, *have) holds a whole line (the buffer grows;
 * bytes past the line stay for the next call, and a timeout loses none).
 * timeout_ms < 0 waits forever, else bounds each wait for more. Returns
 * the line's length with its newline, 0 at the end of the stream,
 * -ETIMEDOUT, -EMSGSIZE once max bytes hold no newline, or -errno. */
ssize_t control_read_line(int fd, char **buf, size_t *cap, size_t *have, size_t max,
			  int timeout_ms);
/* Whether the client hung up or the server is stopping: long handlers
 * (events) poll this. */
bool control_client_gone(struct control_client *c);
