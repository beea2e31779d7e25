/* before_resync_command (issue 11): run on the primary for each secondary
 * before its job writes anything (a snapshot of it, say): /bin/sh -c in
 * its own process group, with the daemon's environment less its own
 * RESYNC_ variables plus the ones below, under before_resync_timeout. A
 * failure or a timeout leaves that secondary out of the resync. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "node-int.h"
#include "resync/macro.h"


enum { HOOK_ENV_MAX = 12, HOOK_TICK_MS = 100 };

int node_hook_before_resync(struct node *n, const struct job *j, const char *mode, char *err,
			    size_t errlen)
{
	const char *cmd = n->cfg->before_resync_command;
	char gen[40];
	char *mine[HOOK_ENV_MAX] = {0}; /* NULL-terminated */
	size_t nm = 0;
	uint64_t deadline;
	int r, status = 0, pfd;
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
	pfd = (int)pidfd_open(pid, 0);
	deadline = clock_usec() + n->cfg->before_resync_timeout_ms * 1000ull;
	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);
		uint64_t now = clock_usec();

		if (w == pid)
			break;
		if (w < 0 && errno != EINTR) {
			r = -errno;
			snprintf(err, errlen, "waiting for before_resync_command: %s", strerror(errno));
			goto out_pfd;
		}
		if (now >= deadline || atomic_load(&n->stopping) || atomic_load(&n->cancel)) {
			kill(-pid, SIGKILL);
			waitpid(pid, &status, 0);
			if (now >= deadline)
				snprintf(err, errlen, "before_resync_command '%s' ran longer than %.1f s: killed",
					 cmd, n->cfg->before_resync_timeout_ms / 1000.0);
			else
				snprintf(err, errlen, "before_resync_command '%s' killed: cancelled", cmd);
			r = now >= deadline ? -ETIMEDOUT : -ECANCELED;
			goto out_pfd;
		}
		if (pfd >= 0) {
			struct pollfd pp = {.fd = pfd, .events = POLLIN};

			poll(&pp, 1, (int)MIN((deadline - now) / 1000 + 1, (uint64_t)HOOK_TICK_MS));
		} else {
			usleep(10000);
		}
	}
	/* Whatever the shell left running in its group goes with it. */
	kill(-pid, SIGKILL);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		r = 0;
	} else {
		if (WIFEXITED(status))
			snprintf(err, errlen, "before_resync_command '%s' exited with %d", cmd,
				 WEXITSTATUS(status));
		else
			snprintf(err, errlen, "before_resync_command '%s' was killed by signal %d", cmd,
				 WIFSIGNALED(status) ? WTERMSIG(status) : 0);
		r = -EIO;
	}
out_pfd:
	if (pfd >= 0)
		close(pfd);
out_env:
	for (size_t i = 0; i < nm; i++)
		free(mine[i]);
	if (r == -ENOMEM)
		snprintf(err, errlen, "before_resync_command: out of memory");
	return r;
}
