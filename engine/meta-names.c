/* The metadata's names (meta-core.h): node states as operators know
 * them (DRBD's words) and UUIDs (generations, nodes, checkpoints) as
 * text. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <uuid/uuid.h>

#include "resync/macro.h"
#include "meta-core.h"

/* ---- names and UUIDs ---- */

static const char *const state_names[] = {
	[META_STATE_UNKNOWN] = "Unknown",
	[META_STATE_UPTODATE] = "UpToDate",
	[META_STATE_OUTDATED] = "Outdated",
	[META_STATE_INCONSISTENT] = "Inconsistent",
	[META_STATE_DIVERGED] = "Diverged",
};
_Static_assert(ARRAY_SIZE(state_names) == META_STATE_COUNT, "a name for every state");
/* On disk: a state's value never changes (and stays below 2^32). */
_Static_assert(META_STATE_UNKNOWN == 0 && META_STATE_UPTODATE == 1 && META_STATE_OUTDATED == 2 &&
		       META_STATE_INCONSISTENT == 3 && META_STATE_DIVERGED == 4,
	       "on-disk state values");

const char *meta_state_name(enum meta_state state)
{
	if ((unsigned)state >= ARRAY_SIZE(state_names))
		return "Unknown";
	return state_names[state];
}

int meta_state_parse(const char *name, enum meta_state *ret)
{
	for (unsigned i = 0; i < ARRAY_SIZE(state_names); i++)
		if (!strcasecmp(name, state_names[i])) {
			*ret = (enum meta_state)i;
			return 0;
		}
	return -EINVAL;
}

int meta_uuid_random(struct meta_uuid *ret)
{
	_Static_assert(sizeof(ret->b) == sizeof(uuid_t), "a meta_uuid is a uuid_t");
	uuid_generate_random(ret->b);
	return 0;
}

bool meta_uuid_is_null(const struct meta_uuid *u)
{
	static const struct meta_uuid zero;

	return !memcmp(u, &zero, sizeof(zero));
}

const char *meta_uuid_format(const struct meta_uuid *u, char *buf, size_t size)
{
	char s[UUID_STR_LEN];

	uuid_unparse_lower(u->b, s);
	snprintf(buf, size, "%s", s);
	return buf;
}

int meta_uuid_parse(const char *s, struct meta_uuid *ret)
{
	struct meta_uuid u;
	unsigned n = 0;

	for (const char *p = s; *p; p++) {
		int hi, lo;

		if (*p == '-' && (n == 4 || n == 6 || n == 8 || n == 10))
			continue;
		if (n == 16 || !p[1])
			return -EINVAL;
		hi = (*p >= '0' && *p <= '9')	? *p - '0'
		     : (*p >= 'a' && *p <= 'f') ? *p - 'a' + 10
		     : (*p >= 'A' && *p <= 'F') ? *p - 'A' + 10
						: -1;
		p++;
		lo = (*p >= '0' && *p <= '9')	? *p - '0'
		     : (*p >= 'a' && *p <= 'f') ? *p - 'a' + 10
		     : (*p >= 'A' && *p <= 'F') ? *p - 'A' + 10
						: -1;
		if (hi < 0 || lo < 0)
			return -EINVAL;
		u.b[n++] = (uint8_t)(hi << 4 | lo);
	}
	if (n != 16)
		return -EINVAL;
	*ret = u;
	return 0;
}
