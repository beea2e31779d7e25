/* The control protocol, the part resyncctl and resyncd share: a UNIX
 * stream socket speaking JSON, one object a line.
 *
 * A client sends one request {"cmd": NAME, ...}; the daemon answers with
 * zero or more stream lines ({"type": "progress"|"event"|"plan", ...}) and
 * ends with one {"type": "result", "ok": true|false, ...} line ("error"
 * holds the reason when ok is false). `events` streams until the client
 * closes. Every request is checked against its command's fields before it
 * runs (struct control_field); a request that erases data carries
 * "confirm": "<cluster name>". socat can drive it:
 *   echo '{"cmd":"status"}' | socat - UNIX-CONNECT:/run/resync/n1.sock
 * The server is the daemon's (daemon/control.h). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct json_object;

/* Connect to the control socket at path. Returns 0 and *ret_fd
 * (O_CLOEXEC, the caller closes it), or -errno of socket()/connect()
 * (-ENOENT, -ECONNREFUSED: no daemon; -EACCES: no permission). */
int control_connect(const char *path, int *ret_fd);
/* Send obj as one line (takes no ownership). Total over short writes and
 * EINTR; no SIGPIPE. Returns 0 or -errno (-EPIPE: the peer went away). */
int control_send(int fd, struct json_object *obj);
/* Read one JSON line (at most RESYNC_CONTROL_REPLY_MAX bytes: a reply).
 * timeout_ms < 0 waits forever. Nothing past the line's newline is
 * consumed. Returns 0 and *ret (caller puts it), -ETIMEDOUT, -ECONNRESET
 * at end of stream, -EBADMSG for a line that is not a JSON object. */
int control_recv(int fd, int timeout_ms, struct json_object **ret);
/* Parse s[0, len) (one line without its newline) as a JSON object.
 * Returns a new object (caller puts it) or NULL when it is not one. */
struct json_object *control_parse(const char *s, size_t len);
/* Whether a reply line is the final {"type":"result"} one. */
bool control_is_result(struct json_object *o);

/* ---- checked requests ---- */

enum control_field_type {
	CONTROL_FIELD_STRING,  /* a JSON string (without NUL bytes) */
	CONTROL_FIELD_BOOL,    /* true or false */
	CONTROL_FIELD_UINT64,  /* a non-negative JSON integer */
	CONTROL_FIELD_STRINGS, /* an array of strings (may be empty) */
};

enum control_field_flags {
	CONTROL_FIELD_REQUIRED = 1 << 0,
	/* A bool that, when true, makes the request erase nothing (a dry
	 * run): such a request needs no "confirm". */
	CONTROL_FIELD_DRY_RUN = 1 << 1,
};

/* One field a command accepts besides "cmd". A command's fields are an
 * array ended by an entry whose name is NULL. */
struct control_field {
	const char *name;
	enum control_field_type type;
	unsigned flags; /* enum control_field_flags */
};

/* Whether v is a JSON string without a NUL byte ("\u0000"): what the
 * code reads as a C string is then all of it. Every string field of a
 * checked request is one. */
bool control_json_is_cstring(struct json_object *v);
/* The expected type in words ("a string", "true or false", ...). */
const char *control_field_type_name(enum control_field_type type);
/* Check req's fields against fields (NULL: none accepted): "cmd" is always
 * accepted, and so are the names in extra (NULL-ended, may be NULL; their
 * types are checked as strings). On a refusal a one-line message naming
 * the field and the expected type is written to err (errlen bytes).
 * Returns 0, or -EINVAL (unknown field, wrong type, missing required one).
 * Pure: thread-safe. */
int control_fields_check(const struct control_field *fields, const char *const *extra,
			 struct json_object *req, char *err, size_t errlen);

