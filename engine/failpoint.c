/* Test failpoints (resync/failpoint.h). The table is filled once, before
 * main() and before any thread, and only read after that, but for the hit
 * counters (atomic). */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "resync/failpoint.h"

enum failpoint_action { FP_KILL, FP_EXIT, FP_ERROR };

struct failpoint {
	char name[FAILPOINT_NAME_MAX];
	char gate[FAILPOINT_NAME_MAX]; /* hits count once this one was hit ("": at once) */
	enum failpoint_action action;
	unsigned long at; /* fires at this hit (1: the first) */
	atomic_ulong hits;
	atomic_bool open; /* the gate was passed */
};

bool failpoint_armed;
static struct failpoint fps[FAILPOINT_MAX];
static size_t n_fps;

static int parse_action(const char *s, size_t len, enum failpoint_action *ret)
{
	static const char *names[] = {[FP_KILL] = "kill", [FP_EXIT] = "exit", [FP_ERROR] = "error"};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strlen(names[i]) == len && !memcmp(s, names[i], len)) {
			*ret = (enum failpoint_action)i;
			return 0;
		}
	return -EINVAL;
}

/* One entry, [s, end): name[:action[:N]][@gate]. */
static int parse_one(const char *s, const char *end, struct failpoint *ret)
{
	const char *at = memchr(s, '@', (size_t)(end - s));
	const char *c1, *c2 = NULL;
	size_t nlen;
	char num[24];
	char *e;
	int r;

	memset(ret, 0, sizeof(*ret));
	ret->at = 1;
	if (at) {
		size_t glen = (size_t)(end - at - 1);

		if (glen == 0 || glen >= FAILPOINT_NAME_MAX || memchr(at + 1, ':', glen) ||
		    memchr(at + 1, '@', glen))
			return -EINVAL;
		memcpy(ret->gate, at + 1, glen);
		end = at;
	}
	c1 = memchr(s, ':', (size_t)(end - s));
	nlen = (size_t)((c1 ? c1 : end) - s);
	if (nlen == 0 || nlen >= FAILPOINT_NAME_MAX)
		return -EINVAL;
	memcpy(ret->name, s, nlen);
	if (!c1)
		return 0;
	c2 = memchr(c1 + 1, ':', (size_t)(end - c1 - 1));
	r = parse_action(c1 + 1, (size_t)((c2 ? c2 : end) - c1 - 1), &ret->action);
	if (r < 0 || !c2)
		return r;
	if ((size_t)(end - c2 - 1) == 0 || (size_t)(end - c2 - 1) >= sizeof(num))
		return -EINVAL;
	memcpy(num, c2 + 1, (size_t)(end - c2 - 1));
	num[end - c2 - 1] = 0;
	errno = 0;
	ret->at = strtoul(num, &e, 10);
	if (errno || *e || num[0] == '-' || ret->at == 0)
		return -EINVAL;
	return 0;
}

int failpoint_parse(const char *value)
{
	struct failpoint tmp[FAILPOINT_MAX];
	size_t n = 0;

	failpoint_armed = false;
	n_fps = 0;
	if (!value || !*value)
		return 0;
	while (*value) {
		const char *end = strchr(value, ',');
		int r;

		if (!end)
			end = value + strlen(value);
		if (n == FAILPOINT_MAX)
			return -EINVAL;
		r = parse_one(value, end, &tmp[n]);
		if (r < 0)
			return r;
		n++;
		if (!*end)
			break;
		value = end + 1;
		if (!*value)
			return -EINVAL; /* a trailing comma */
	}
	for (size_t i = 0; i < n; i++) {
		memcpy(fps[i].name, tmp[i].name, sizeof(fps[i].name));
		memcpy(fps[i].gate, tmp[i].gate, sizeof(fps[i].gate));
		fps[i].action = tmp[i].action;
		fps[i].at = tmp[i].at;
		atomic_store(&fps[i].hits, 0);
		atomic_store(&fps[i].open, !tmp[i].gate[0]);
	}
	n_fps = n;
	failpoint_armed = n > 0;
	return 0;
}

__attribute__((constructor)) static void failpoint_init(void)
{
	static const char bad[] = "RESYNC_FAILPOINT is malformed: no failpoint armed\n";

	if (failpoint_parse(getenv("RESYNC_FAILPOINT")) < 0)
		(void)!write(STDERR_FILENO, bad, sizeof(bad) - 1);
}

static struct failpoint *failpoint_find(const char *name)
{
	for (size_t i = 0; i < n_fps; i++)
		if (!strcmp(fps[i].name, name))
			return &fps[i];
	return NULL;
}

bool failpoint_named(const char *name)
{
	return failpoint_armed && failpoint_find(name);
}

int failpoint_hit(const char *name)
{
	struct failpoint *f = failpoint_find(name);
	char msg[FAILPOINT_NAME_MAX + 48];
	int len;

	/* This place may be the gate of others: they count from now on. */
	for (size_t i = 0; i < n_fps; i++)
		if (fps[i].gate[0] && !strcmp(fps[i].gate, name))
			atomic_store(&fps[i].open, true);
	if (!f || !atomic_load(&f->open) || atomic_fetch_add(&f->hits, 1) + 1 != f->at)
		return 0;
	/* A test's trace, straight to stderr (the library does not log). */
	len = snprintf(msg, sizeof(msg), "failpoint %s: %s\n", name,
		       f->action == FP_KILL   ? "kill"
		       : f->action == FP_EXIT ? "exit"
					      : "error");
	if (len > 0)
		(void)!write(STDERR_FILENO, msg,
			     (size_t)len < sizeof(msg) ? (size_t)len : sizeof(msg) - 1);
	switch (f->action) {
	case FP_KILL:
		raise(SIGKILL);
		_exit(FAILPOINT_EXIT_CODE); /* not reached */
	case FP_EXIT:
		_exit(FAILPOINT_EXIT_CODE);
	case FP_ERROR:
		break;
	}
	return -EIO;
}
