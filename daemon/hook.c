/* before_resync_command (issue 11): run on the primary for each secondary
 * before its job writes anything (a snapshot of it, say): /bin/sh -c in
 * its own process group, with the daemon's environment less its own
 * RESYNC_ variables plus the ones below, under before_resync_timeout. A
 * failure or a timeout leaves that secondary out of the resync. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node-int.h"
#include "resync/macro.h"

enum { HOOK_ENV_MAX = 12, HOOK_TICK_MS = 100 };

/* The wait ends early when the node stops or the resync is cancelled. */
static bool hook_cancelled(void *arg)
{
	struct node *n = arg;

	return atomic_load(&n->stopping) || atomic_load(&n->cancel);
}

int node_hook_before_resync(struct node *n, const struct job *j, const char *mode, char *err,
			    size_t errlen)
{
	const char *cmd = n->cfg->before_resync_command;
	char gen[40];
	char *mine[HOOK_ENV_MAX] = {0}; /* NULL-terminated */
	size_t nm = 0;
	char how[64];
	int r, status = 0;
	pid_t pid;

	if (!cmd)
		return 0;
	meta_uuid_format(&j->gen, gen, sizeof(gen));
	if (asprintf(&mine[nm++], "RESYNC_EVENT=before_resync") < 0 ||
	    asprintf(&mine[nm++], "RESYNC_CLUSTER=%s", n->cfg->name) < 0 ||
	    asprintf(&mine[nm++], "RESYNC_PRIMARY=%s", n->self->name) < 0 ||
	    asprintf(&mine[nm++], "RESYNC_NODE=%s", j->peer->name) < 0 ||
	    asprintf(&mine[nm++], "RESYNC_NODE_ADDRESS=%s", j->peer->address ? j->peer->address : "") < 0 ||
	    asprintf(&mine[nm++], "RESYNC_NODE_VOLUME=%s", j->peer->volume ? j->peer->volume : "") < 0 ||
	    asprintf(&mine[nm++], "RESYNC_NODE_STATE=%s", meta_state_name(j->state)) < 0 ||
	    asprintf(&mine[nm++], "RESYNC_MODE=%s", mode) < 0 ||
	    asprintf(&mine[nm++], "RESYNC_GENERATION=%s", gen) < 0) {
		r = -ENOMEM;
		goto out_env;
	}
	r = notify_shell_spawn(cmd, mine, &pid);
	if (r < 0) {
		snprintf(err, errlen, "cannot run before_resync_command '%s': %s", cmd, strerror(-r));
		goto out_env;
	}
	r = notify_shell_wait(pid, n->cfg->before_resync_timeout_ms, HOOK_TICK_MS, hook_cancelled, n,
			      &status);
	if (r == -ETIMEDOUT)
		snprintf(err, errlen, "before_resync_command '%s' ran longer than %.1f s: killed",
			 cmd, n->cfg->before_resync_timeout_ms / 1000.0);
	else if (r == -ECANCELED)
		snprintf(err, errlen, "before_resync_command '%s' killed: cancelled", cmd);
	else if (r < 0)
		snprintf(err, errlen, "waiting for before_resync_command: %s", strerror(-r));
	else if (notify_shell_status(status, how, sizeof(how)) < 0) {
		snprintf(err, errlen, "before_resync_command '%s' %s", cmd, how);
		r = -EIO;
	}
out_env:
	for (size_t i = 0; i < nm; i++)
		free(mine[i]);
	if (r == -ENOMEM)
		snprintf(err, errlen, "before_resync_command: out of memory");
	return r;
}
