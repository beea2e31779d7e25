/* Test failpoints: named places in a resync where a test makes this
 * process crash, exit or fail, to prove that every step is crash-safe.
 *
 * RESYNC_FAILPOINT=name[:action[:N]][@gate][,name...] is read once, at
 * start; action is kill (SIGKILL to itself: the test's crash; the
 * default), exit (_exit(FAILPOINT_EXIT_CODE), no cleanup) or error (the
 * place fails with -EIO); N fires it at its Nth hit (default the first);
 * with a gate, hits count only once the place gate was reached (a place
 * reached at every metadata update, say, from the one of a commit on).
 * With the variable unset a failpoint costs one predictable branch on a
 * global that never changes.
 *
 * A place is a single line: FAILPOINT("name"); (its result ignored:
 * kill and exit only) or FAILPOINT_RETURN("name"); in a function that
 * returns -errno. Thread-safety: any thread, any time. */
#pragma once

#include <stdbool.h>

enum {
	FAILPOINT_MAX = 16,	  /* names in RESYNC_FAILPOINT */
	FAILPOINT_NAME_MAX = 64,  /* bytes of a name, with its NUL */
	FAILPOINT_EXIT_CODE = 86, /* the exit action's status */
};

/* Set once, before main(), when RESYNC_FAILPOINT names anything. */
extern bool failpoint_armed;

/* The place name was reached: its action when it is named and this is
 * its Nth hit (kill and exit do not return; error returns -EIO), else 0. */
int failpoint_hit(const char *name);

/* Whether RESYNC_FAILPOINT names name (any action): for failpoints that
 * change behaviour rather than crash (corrupt-before-commit). */
bool failpoint_named(const char *name);

/* Read RESYNC_FAILPOINT again (tests of this module); returns -EINVAL on
 * a malformed value, which arms nothing. Not thread-safe. */
int failpoint_parse(const char *value);

#define FAILPOINT(name) (__builtin_expect(failpoint_armed, 0) ? failpoint_hit(name) : 0)
#define FAILPOINT_RETURN(name)                                                                     \
	do {                                                                                       \
		int fp_r_ = FAILPOINT(name);                                                       \
		if (fp_r_ < 0)                                                                     \
			return fp_r_;                                                              \
	} while (0)
