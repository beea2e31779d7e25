/* Small json-c helpers shared by the daemon's JSON writers. */
#pragma once

#include <json-c/json.h>

/* A JSON string of s, or NULL (JSON null) when s is NULL. */
static inline json_object *json_string_or_null(const char *s)
{
	return s ? json_object_new_string(s) : NULL;
}
