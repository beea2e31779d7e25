/* The control socket: a UNIX stream socket speaking JSON, one object a line.
 *
 * A client sends a request {"cmd": NAME, ...}; the daemon answers with zero
 * or more stream lines ({"type": "progress"|"event", ...}) and ends with one
 * {"type": "result", "ok": true|false, ...} line ("error" holds the reason
 * when ok is false). `events` streams until the client closes. socat can
 * drive it: echo '{"cmd":"status"}' | socat - UNIX-CONNECT:/run/resync/n1.sock */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct json_object;
struct control_server;
struct control_client;

/* Handle one request. Write replies with control_client_send(); return 0
 * after the final "result" line was sent, or -errno to have the server send
 * {"type":"result","ok":false,"error":strerror} for you. Called on the
 * client's own thread: handlers may block (a resync streams progress). */
typedef int (*control_handler_fn)(void *userdata, struct control_client *c,
				  struct json_object *req);

struct control_command {
	const char *name;
	control_handler_fn fn;
};

/* Listen at path (mode 0600; a stale socket left by a dead daemon is
 * replaced, a live one gives -EADDRINUSE). cmds must outlive the server.
 * Returns 0 or -errno. */
int control_server_new(const char *path, const struct control_command *cmds, size_t ncmds,
		       void *userdata, struct control_server **ret);
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
/* Whether the client hung up or the server is stopping: long handlers
 * (events) poll this. */
bool control_client_gone(struct control_client *c);

/* Client side, for resyncctl. */
int control_connect(const char *path, int *ret_fd);
int control_send(int fd, struct json_object *req);
/* Read one JSON line (at most 256 MiB: a reply). timeout_ms < 0
 * waits forever. Returns 0 and *ret (caller puts it), -ETIMEDOUT, -ECONNRESET
 * at end of stream, -EBADMSG for a line that is not a JSON object. */
int control_recv(int fd, int timeout_ms, struct json_object **ret);
/* Whether a reply line is the final {"type":"result"} one. */
bool control_is_result(struct json_object *o);
