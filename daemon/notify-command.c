/* The notifier's command (notify.h): /bin/sh -c with the RESYNC_*
 * environment, in its own process group, under a time limit. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "notify-int.h"
#include "resync/clock.h"
#include "resync/macro.h"

extern char **environ;

/* ---- environment of the command ---- */

void notify_env_free(char **env)
{
	if (!env)
		return;
	for (char **e = env; *e; e++)
		free(*e);
	free(env);
}

int notify_env_build(const json_object *p, char ***ret)
{
	json_object *nodes = jnodes(p);
	size_t nn = nodes ? json_object_array_length(nodes) : 0, n = 0;
	size_t cap = 16 + nn * 8;
	char **env = calloc(cap + 1, sizeof(*env));
	_cleanup_free_ char *names = NULL;
	size_t names_len;
	FILE *f;
	bool oom = false;

	if (!env)
		return -ENOMEM;
	f = open_memstream(&names, &names_len);
	if (!f) {
		free(env);
		return -ENOMEM;
	}
	for (size_t i = 0; i < nn; i++)
		fprintf(f, "%s%s", i ? " " : "",
			jstr_or(json_object_array_get_idx(nodes, i), "name", ""));
	oom = memstream_close(f) < 0;
#define PUT(...)                                                                                   \
	do {                                                                                       \
		if (asprintf(&env[n], __VA_ARGS__) < 0) {                                          \
			env[n] = NULL;                                                             \
			oom = true;                                                                \
		} else {                                                                           \
			n++;                                                                       \
		}                                                                                  \
	} while (0)
	PUT("RESYNC_CLUSTER=%s", jstr_or(p, "cluster", ""));
	PUT("RESYNC_EVENT=%s", jstr_or(p, "type", ""));
	PUT("RESYNC_RESULT=%s", jstr_or(p, "result", ""));
	PUT("RESYNC_NODES=%s", names);
	PUT("RESYNC_NODE=%s", jstr_or(p, "node", ""));
	PUT("RESYNC_PRIMARY=%s", jstr_or(p, "primary", ""));
	PUT("RESYNC_GENERATION=%s", jstr_or(p, "generation", ""));
	PUT("RESYNC_SECONDS=%.3f", jdouble(p, "seconds"));
	if (jstr(p, "fence"))
		PUT("RESYNC_PRIMARY_FENCE_SECONDS=%.3f", jdouble(p, "primary_fence_seconds"));
	PUT("RESYNC_TIME=%s", jstr_or(p, "time", ""));
	PUT("RESYNC_ID=%s", jstr_or(p, "id", ""));
	PUT("RESYNC_DETAILS=%s", jstr_or(p, "details", ""));
	PUT("RESYNC_JSON=%s", json_object_to_json_string_ext((json_object *)p, JSON_C_TO_STRING_PLAIN));
	PUT("RESYNC_NODE_COUNT=%zu", nn);
	for (size_t i = 0; i < nn; i++) {
		json_object *x = json_object_array_get_idx(nodes, i);

		PUT("RESYNC_NODE_%zu_NAME=%s", i + 1, jstr_or(x, "name", ""));
		PUT("RESYNC_NODE_%zu_RESULT=%s", i + 1, jstr_or(x, "result", ""));
		PUT("RESYNC_NODE_%zu_STATE_BEFORE=%s", i + 1, jstr_or(x, "state_before", ""));
		PUT("RESYNC_NODE_%zu_STATE_AFTER=%s", i + 1, jstr_or(x, "state_after", ""));
		PUT("RESYNC_NODE_%zu_BYTES_COMPARED=%" PRIu64, i + 1, ju64(x, "bytes_compared"));
		PUT("RESYNC_NODE_%zu_BYTES_SENT=%" PRIu64, i + 1, ju64(x, "bytes_sent"));
		PUT("RESYNC_NODE_%zu_SECONDS=%.3f", i + 1, jdouble(x, "seconds"));
		PUT("RESYNC_NODE_%zu_ERROR=%s", i + 1, jstr_or(x, "error", ""));
	}
#undef PUT
	if (oom) {
		notify_env_free(env);
		return -ENOMEM;
	}
	*ret = env;
	return 0;
}

int notify_shell_spawn(const char *cmd, char *const *extra, pid_t *ret_pid)
{
	char sh[] = "/bin/sh", dash_c[] = "-c";
	char *argv[] = {sh, dash_c, (char *)cmd, NULL};
	_cleanup_free_ char **env = NULL;
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	size_t ne = 0, nx = 0, k = 0;
	sigset_t none, all;
	pid_t pid;
	int r;

	while (environ[ne])
		ne++;
	while (extra[nx])
		nx++;
	env = calloc(ne + nx + 1, sizeof(*env));
	if (!env)
		return -ENOMEM;
	/* The daemon's environment without any RESYNC_ variable of its own,
	 * then ours. */
	for (size_t i = 0; i < ne; i++)
		if (strncmp(environ[i], "RESYNC_", 7))
			env[k++] = environ[i];
	for (size_t i = 0; i < nx; i++)
		env[k++] = extra[i];
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, 2, 1);
	posix_spawnattr_init(&attr);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
						POSIX_SPAWN_SETSIGDEF);
	posix_spawnattr_setpgroup(&attr, 0);
	sigemptyset(&none);
	sigfillset(&all);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &all);
	r = -posix_spawn(&pid, argv[0], &fa, &attr, argv, env);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	if (r < 0)
		return r;
	*ret_pid = pid;
	return 0;
}

/* Start notify_command with the daemon's environment and p's RESYNC_*
 * variables: its pid in *ret_pid, or -errno (and words in err). */
static int command_spawn(struct notify *n, const json_object *p, char *err, size_t errlen,
			 pid_t *ret_pid)
{
	char **extra = NULL;
	int r;

	r = notify_env_build(p, &extra);
	if (r < 0)
		return r;
	r = notify_shell_spawn(n->cfg->notify_command, extra, ret_pid);
	notify_env_free(extra);
	if (r < 0)
		snprintf(err, errlen, "cannot run '%s': %s", n->cfg->notify_command, strerror(-r));
	return r;
}

int notify_shell_wait(pid_t pid, uint64_t timeout_ms, unsigned tick_ms, bool (*stop)(void *arg),
		      void *arg, int *ret_status)
{
	uint64_t deadline = clock_usec() + timeout_ms * 1000;
	int r = 0, status = 0, pfd = (int)pidfd_open(pid, 0);

	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);
		uint64_t now = clock_usec();

		if (w == pid)
			break;
		if (w < 0 && errno != EINTR) {
			r = -errno;
			break;
		}
		if (now >= deadline || (stop && stop(arg))) {
			kill(-pid, SIGKILL);
			waitpid(pid, &status, 0);
			r = now >= deadline ? -ETIMEDOUT : -ECANCELED;
			break;
		}
		if (pfd >= 0) {
			struct pollfd pp = {.fd = pfd, .events = POLLIN};

			poll(&pp, 1, (int)MIN((deadline - now) / 1000 + 1, (uint64_t)tick_ms));
		} else {
			usleep(10000);
		}
	}
	if (pfd >= 0)
		close(pfd);
	if (r < 0)
		return r;
	/* Whatever the shell left running in its group goes with it. */
	kill(-pid, SIGKILL);
	*ret_status = status;
	return 0;
}

int notify_shell_status(int status, char *buf, size_t len)
{
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status))
		snprintf(buf, len, "exited with %d", WEXITSTATUS(status));
	else
		snprintf(buf, len, "was killed by signal %d", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	return -EIO;
}

static bool notify_stopping(void *arg)
{
	struct notify *n = arg;

	return atomic_load(&n->stopping);
}

/* Wait for the command pid: 0 when it exits with status 0; -ETIMEDOUT
 * past timeout ms and -ECANCELED when the notifier stops (its process
 * group killed), -EIO for any other end, -errno when waiting fails, with
 * words in err. notify_free() waits for this thread, not for the
 * command's timeout: at its stop the item stays spooled. */
static int command_wait(struct notify *n, pid_t pid, unsigned timeout, char *err, size_t errlen)
{
	const char *cmd = n->cfg->notify_command;
	char how[64];
	int r, status = 0;

	r = notify_shell_wait(pid, timeout, NOTIFY_TICK_MS, notify_stopping, n, &status);
	if (r == -ETIMEDOUT)
		snprintf(err, errlen, "'%s' ran longer than %u ms: killed", cmd, timeout);
	else if (r == -ECANCELED)
		snprintf(err, errlen, "'%s' killed: the daemon is stopping", cmd);
	else if (r < 0)
		snprintf(err, errlen, "waiting for '%s': %s", cmd, strerror(-r));
	else if (notify_shell_status(status, how, sizeof(how)) < 0) {
		snprintf(err, errlen, "'%s' %s", cmd, how);
		r = -EIO;
	}
	return r;
}

int notify_command_run(struct notify *n, const json_object *p, char *err, size_t errlen)
{
	unsigned timeout = n->o.command_timeout_ms ? n->o.command_timeout_ms : NOTIFY_COMMAND_TIMEOUT_MS;
	pid_t pid;
	int r;

	r = command_spawn(n, p, err, errlen, &pid);
	if (r < 0)
		return r;
	return command_wait(n, pid, timeout, err, errlen);
}
