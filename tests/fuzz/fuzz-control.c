/* Fuzz target for the control socket's requests: the input is what a
 * client writes to resyncd's socket, lines of JSON. Each line goes through
 * what the server does with it, control_parse() and then
 * control_request_check() against the daemon's own command table
 * (node_commands), for a cluster called "c1". Checked:
 *   - a parsed request is an object; a refusal is -EINVAL with a message;
 *   - an accepted request names its command exactly (all of the string),
 *     and every field is that command's, of its type (strings without a
 *     NUL byte), the required ones present; an erasing request that is
 *     not a dry run confirms "c1";
 *   - an accepted request printed again (as a secondary forwards one to
 *     the primary) parses and is accepted the same. */
#include <errno.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "control.h"
#include "fuzz.h"
#include "resync/control.h"

/* The daemon's table (daemon/commands.c). */
extern const struct control_command node_commands[];
extern const size_t node_commands_n;

#define CLUSTER "c1"

/* A JSON string's bytes, all of them, equal to the C string s. */
static bool json_string_is(struct json_object *v, const char *s)
{
	return json_object_is_type(v, json_type_string) &&
	       (size_t)json_object_get_string_len(v) == strlen(s) &&
	       !memcmp(json_object_get_string(v), s, strlen(s));
}

/* A JSON string that C reads whole (no NUL byte in it). */
static bool cstring(struct json_object *v)
{
	return json_object_is_type(v, json_type_string) &&
	       !memchr(json_object_get_string(v), 0, (size_t)json_object_get_string_len(v));
}

/* The harness's own reading of a field's type: the spec of
 * control_fields_check(), written again. */
static bool type_ok(enum control_field_type t, struct json_object *v)
{
	switch (t) {
	case CONTROL_FIELD_STRING:
		return cstring(v);
	case CONTROL_FIELD_BOOL:
		return json_object_is_type(v, json_type_boolean);
	case CONTROL_FIELD_UINT64:
		return json_object_is_type(v, json_type_int) && json_object_get_int64(v) >= 0;
	case CONTROL_FIELD_STRINGS:
		if (!json_object_is_type(v, json_type_array))
			return false;
		for (size_t i = 0; i < json_object_array_length(v); i++)
			if (!cstring(json_object_array_get_idx(v, i)))
				return false;
		return true;
	}
	return false;
}

static const struct control_field *field_of(const struct control_command *cmd, const char *name)
{
	for (const struct control_field *f = cmd->fields; f && f->name; f++)
		if (!strcmp(f->name, name))
			return f;
	return NULL;
}

/* What an accepted request must be. */
static void check_accepted(const struct control_command *cmd, struct json_object *req)
{
	struct json_object *v;
	bool dry = false;

	FUZZ_CHECK(cmd >= node_commands && cmd < node_commands + node_commands_n);
	FUZZ_CHECK(json_object_object_get_ex(req, "cmd", &v) && json_string_is(v, cmd->name));
	json_object_object_foreach(req, key, val)
	{
		const struct control_field *f = field_of(cmd, key);

		if (!strcmp(key, "cmd"))
			continue;
		if (!f) {
			FUZZ_CHECK((cmd->flags & CONTROL_CMD_ERASES) && !strcmp(key, "confirm"));
			FUZZ_CHECK(cstring(val));
			continue;
		}
		FUZZ_CHECK(type_ok(f->type, val));
		if ((f->flags & CONTROL_FIELD_DRY_RUN) && json_object_get_boolean(val))
			dry = true;
	}
	for (const struct control_field *f = cmd->fields; f && f->name; f++)
		if (f->flags & CONTROL_FIELD_REQUIRED)
			FUZZ_CHECK(json_object_object_get_ex(req, f->name, NULL));
	if ((cmd->flags & CONTROL_CMD_ERASES) && !dry)
		FUZZ_CHECK(json_object_object_get_ex(req, "confirm", &v) &&
			   json_string_is(v, CLUSTER));
}

/* Check req; returns the command accepted or NULL. */
static const struct control_command *check(struct json_object *req)
{
	const struct control_command *cmd = NULL;
	char err[1024];
	int r;

	err[0] = 0;
	r = control_request_check(node_commands, node_commands_n, CLUSTER, req, &cmd, err,
				  sizeof(err));
	FUZZ_CHECK(r == 0 || r == -EINVAL);
	if (r < 0) {
		FUZZ_CHECK(!cmd && !strncmp(err, "refused: ", 9));
		return NULL;
	}
	check_accepted(cmd, req);
	return cmd;
}

static void one_line(const char *s, size_t len)
{
	struct json_object *req = control_parse(s, len), *again;
	const struct control_command *cmd;
	const char *text;

	if (!req)
		return;
	FUZZ_CHECK(json_object_is_type(req, json_type_object));
	(void)control_is_result(req);
	cmd = check(req);
	/* An accepted request as a secondary forwards it to the primary
	 * (forward.c prints it again): accepted the same there. A refused
	 * one is never sent on, and may not survive the printing: json-c
	 * reads the invalid number "5e" as the double 5 and prints it "5",
	 * an integer. */
	text = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
	again = control_parse(text, strlen(text));
	FUZZ_CHECK(again);
	if (cmd)
		FUZZ_CHECK(check(again) == cmd);
	json_object_put(again);
	json_object_put(req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size;

	/* One request a line, as the server reads them; the last line
	 * without its newline too. */
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *e = nl ? nl : end;

		one_line(p, (size_t)(e - p));
		p = nl ? nl + 1 : end;
	}
	return 0;
}
