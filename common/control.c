/* The control protocol's client side and line framing (resync/control.h),
 * and the check of a request's fields against its command's table. */
#include <errno.h>
#include <json-c/json.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "resync/control.h"
#include "resync/limits.h"
#include "resync/macro.h"
#include "resync/unixsock.h"

static int write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

int control_send(int fd, struct json_object *obj)
{
	const char *s = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN);
	size_t len = strlen(s);
	_cleanup_free_ char *line = malloc(len + 2);

	if (!line)
		return -ENOMEM;
	memcpy(line, s, len);
	line[len] = '\n';
	return write_all(fd, line, len + 1);
}

struct json_object *control_parse(const char *s, size_t len)
{
	struct json_tokener *tok = json_tokener_new();
	struct json_object *o;

	if (!tok)
		return NULL;
	o = json_tokener_parse_ex(tok, s, (int)len);
	if (o && (json_tokener_get_error(tok) != json_tokener_success ||
		  !json_object_is_type(o, json_type_object))) {
		json_object_put(o);
		o = NULL;
	}
	json_tokener_free(tok);
	return o;
}

int control_connect(const char *path, int *ret_fd)
{
	return unixsock_connect(path, ret_fd);
}

bool control_is_result(struct json_object *o)
{
	struct json_object *t;

	return json_object_object_get_ex(o, "type", &t) &&
	       json_object_is_type(t, json_type_string) &&
	       !strcmp(json_object_get_string(t), "result");
}

int control_recv(int fd, int timeout_ms, struct json_object **ret)
{
	/* Peek, then take exactly up to the newline: large replies (a verify
	 * lists its ranges) come in a few reads, and nothing of the next
	 * line is left in a buffer of ours between calls. */
	char *buf = NULL;
	size_t len = 0, cap = 0;
	int r;

	for (;;) {
		char chunk[65536], *nl;
		size_t take;
		ssize_t n;

		if (timeout_ms >= 0) {
			struct pollfd p = {.fd = fd, .events = POLLIN};
			int pr = poll(&p, 1, timeout_ms);

			if (pr < 0 && errno == EINTR)
				continue;
			if (pr < 0) {
				r = -errno;
				goto out;
			}
			if (pr == 0) {
				r = -ETIMEDOUT;
				goto out;
			}
		}
		n = recv(fd, chunk, sizeof(chunk), MSG_PEEK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			goto out;
		}
		if (n == 0) {
			r = -ECONNRESET;
			goto out;
		}
		nl = memchr(chunk, '\n', (size_t)n);
		take = nl ? (size_t)(nl - chunk) + 1 : (size_t)n;
		if (len + take > (size_t)RESYNC_CONTROL_REPLY_MAX) {
			r = -EMSGSIZE;
			goto out;
		}
		if (len + take + 1 > cap) {
			size_t ncap = MAX(cap * 2, len + take + 1);
			char *nb = realloc(buf, ncap);

			if (!nb) {
				r = -ENOMEM;
				goto out;
			}
			buf = nb;
			cap = ncap;
		}
		/* What was peeked is there: this read takes it whole. */
		for (size_t got = 0; got < take;) {
			n = recv(fd, buf + len + got, take - got, 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				r = n < 0 ? -errno : -ECONNRESET;
				goto out;
			}
			got += (size_t)n;
		}
		len += take;
		if (nl) {
			len--; /* the newline */
			break;
		}
	}
	*ret = control_parse(buf ? buf : "", len);
	r = *ret ? 0 : -EBADMSG;
out:
	free(buf);
	return r;
}

const char *control_field_type_name(enum control_field_type type)
{
	switch (type) {
	case CONTROL_FIELD_STRING:
		return "a string";
	case CONTROL_FIELD_BOOL:
		return "true or false";
	case CONTROL_FIELD_UINT64:
		return "a non-negative integer";
	case CONTROL_FIELD_STRINGS:
		return "an array of strings";
	}
	return "?";
}

bool control_json_is_cstring(struct json_object *v)
{
	return json_object_is_type(v, json_type_string) &&
	       strlen(json_object_get_string(v)) == (size_t)json_object_get_string_len(v);
}

static bool field_type_ok(enum control_field_type type, struct json_object *v)
{
	switch (type) {
	case CONTROL_FIELD_STRING:
		return control_json_is_cstring(v);
	case CONTROL_FIELD_BOOL:
		return json_object_is_type(v, json_type_boolean);
	case CONTROL_FIELD_UINT64:
		/* json-c keeps integers above INT64_MAX as unsigned; reading
		 * them as int64 clamps to INT64_MAX, still >= 0. */
		return json_object_is_type(v, json_type_int) && json_object_get_int64(v) >= 0;
	case CONTROL_FIELD_STRINGS:
		if (!json_object_is_type(v, json_type_array))
			return false;
		for (size_t i = 0; i < json_object_array_length(v); i++)
			if (!control_json_is_cstring(json_object_array_get_idx(v, i)))
				return false;
		return true;
	}
	return false;
}

static const struct control_field *field_find(const struct control_field *fields, const char *name)
{
	for (; fields && fields->name; fields++)
		if (!strcmp(fields->name, name))
			return fields;
	return NULL;
}

int control_fields_check(const struct control_field *fields, const char *const *extra,
			 struct json_object *req, char *err, size_t errlen)
{
	if (!json_object_is_type(req, json_type_object)) {
		snprintf(err, errlen, "the request is not a JSON object");
		return -EINVAL;
	}
	json_object_object_foreach(req, key, val)
	{
		const struct control_field *f = field_find(fields, key);
		bool is_extra = false;

		if (!strcmp(key, "cmd"))
			continue;
		for (size_t i = 0; !f && extra && extra[i]; i++)
			is_extra = !strcmp(extra[i], key) || is_extra;
		if (!f && !is_extra) {
			snprintf(err, errlen, "unknown field \"%s\"", key);
			return -EINVAL;
		}
		if (!field_type_ok(f ? f->type : CONTROL_FIELD_STRING, val)) {
			snprintf(err, errlen, "field \"%s\" must be %s", key,
				 control_field_type_name(f ? f->type : CONTROL_FIELD_STRING));
			return -EINVAL;
		}
	}
	for (; fields && fields->name; fields++)
		if ((fields->flags & CONTROL_FIELD_REQUIRED) &&
		    !json_object_object_get_ex(req, fields->name, NULL)) {
			snprintf(err, errlen, "missing field \"%s\" (%s)", fields->name,
				 control_field_type_name(fields->type));
			return -EINVAL;
		}
	return 0;
}
