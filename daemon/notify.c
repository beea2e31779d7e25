/* Notifications (notify.h): the spool, the worker and the three channels. */
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "events.h"
#include "log.h"
#include "notify.h"
#include "resync/clock.h"
#include "resync/fileio.h"
#include "resync/macro.h"
#include "resync/meta.h"

extern char **environ;

enum {
	NOTIFY_COMMAND_TIMEOUT_MS = 30000,
	NOTIFY_BACKOFF_MIN_MS = 1000,
	NOTIFY_BACKOFF_MAX_MS = 300000,
	NOTIFY_MAX_AGE_S = 86400,
	NOTIFY_CONNECT_TIMEOUT_S = 10,
	NOTIFY_TRANSFER_TIMEOUT_S = 60,
	NOTIFY_SPOOL_FILE_MAX = 1 << 20, /* bytes of one spool file */
	NOTIFY_TICK_MS = 250,		 /* the worker looks at its stop flag this often */
};

static const struct {
	enum notify_channel bit;
	const char *name;
} channels[] = {
	{NOTIFY_EMAIL, "email"},
	{NOTIFY_WEBHOOK, "webhook"},
	{NOTIFY_COMMAND, "command"},
};

const char *notify_channel_name(enum notify_channel ch)
{
	for (size_t i = 0; i < ARRAY_SIZE(channels); i++)
		if (channels[i].bit == ch)
			return channels[i].name;
	return "";
}

struct item {
	char id[48];
	json_object *doc; /* the spool file's object */
	unsigned pending; /* NOTIFY_* bits */
	unsigned attempts[3];
	int64_t created;    /* unix seconds */
	int64_t due[3];	    /* monotonic ms of the next attempt per channel */
	int64_t backoff[3]; /* ms */
	struct item *next;
};

/* What the worker gathered about the run in progress, per secondary. */
struct run_node {
	char name[RESYNC_NAME_MAX + 1];
	struct event started, ended;
	bool has_started, has_ended;
};

struct notify {
	struct notify_opts o;
	const struct cluster_config *cfg;
	unsigned channels;
	char *spool;
	struct event_queue *q;
	pthread_t thread;
	bool started;
	atomic_bool stopping;
	pthread_mutex_t lock;
	struct item *items; /* protected by lock */
	size_t n_items;	    /* protected by lock */
	struct run_node *run; /* worker only */
	size_t n_run;
};

unsigned notify_channels(const struct cluster_config *cfg)
{
	return (cfg->notify_email && cfg->smtp_url ? NOTIFY_EMAIL : 0) |
	       (cfg->notify_webhook ? NOTIFY_WEBHOOK : 0) |
	       (cfg->notify_command ? NOTIFY_COMMAND : 0);
}

/* Delivery times and backoffs are counted in milliseconds. */
static int64_t mono_ms(void)
{
	return (int64_t)(clock_usec() / 1000);
}

static const char *jstr(const json_object *o, const char *key)
{
	json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static const char *jstr_or(const json_object *o, const char *key, const char *dflt)
{
	const char *s = jstr(o, key);

	return s ? s : dflt;
}

static uint64_t ju64(const json_object *o, const char *key)
{
	json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v))
		return 0;
	return json_object_get_uint64(v);
}

static double jdouble(const json_object *o, const char *key)
{
	json_object *v;

	if (!o || !json_object_object_get_ex(o, key, &v))
		return 0;
	return json_object_get_double(v);
}

static json_object *jnodes(const json_object *o)
{
	json_object *v;

	if (!o || !json_object_object_get_ex(o, "nodes", &v) || !json_object_is_type(v, json_type_array))
		return NULL;
	return v;
}

/* Close a stream of open_memstream(): 0, or -ENOMEM when a write to it
 * failed (its buffer is then incomplete; the caller still frees it). */
static int memstream_close(FILE *f)
{
	int bad = ferror(f);

	bad |= fclose(f);
	return bad ? -ENOMEM : 0;
}

static void human(uint64_t v, char *buf, size_t len)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	double d = (double)v;
	unsigned u = 0;

	while (d >= 1024 && u + 1 < ARRAY_SIZE(units)) {
		d /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%" PRIu64 " B", v);
	else
		snprintf(buf, len, "%" PRIu64 " bytes (%.1f %s)", v, d, units[u]);
}

int notify_email_format(const json_object *p, char **ret_subject, char **ret_body)
{
	const char *type = jstr_or(p, "type", "?"), *result = jstr_or(p, "result", "?");
	const char *cluster = jstr_or(p, "cluster", "?");
	json_object *nodes = jnodes(p);
	size_t nn = nodes ? json_object_array_length(nodes) : 0;
	_cleanup_free_ char *sp = NULL, *bp = NULL;
	size_t sl, bl;
	FILE *s = open_memstream(&sp, &sl), *b = open_memstream(&bp, &bl);
	int r;

	if (!s || !b) {
		if (s)
			fclose(s);
		if (b)
			fclose(b);
		return -ENOMEM;
	}
	if (!strcmp(type, "state_changed")) {
		json_object *x = nn ? json_object_array_get_idx(nodes, 0) : NULL;

		fprintf(s, "[resync] cluster '%s': node '%s' is %s", cluster,
			jstr_or(x, "name", "?"), result);
		fprintf(b, "Node '%s' of cluster '%s' turned %s (it was %s).\n",
			jstr_or(x, "name", "?"), cluster, result, jstr_or(x, "state_before", "?"));
		if (jstr(x, "error"))
			fprintf(b, "Reason: %s\n", jstr(x, "error"));
		fprintf(b, "Reported by '%s' at %s.\n\n", jstr_or(p, "node", "?"),
			jstr_or(p, "time", "?"));
	} else {
		enum event_result res = EVENT_RESULT_FAILED;
		const char *what;
		size_t ok = 0;

		(void)event_result_parse(result, &res); /* a word it does not know: failed */
		what = res == EVENT_RESULT_SUCCESS     ? "succeeded"
		       : res == EVENT_RESULT_CANCELLED ? "cancelled"
						       : "failed";

		for (size_t i = 0; i < nn; i++)
			ok += !strcmp(jstr_or(json_object_array_get_idx(nodes, i), "result", ""),
				      "resynced");
		fprintf(s, "[resync] cluster '%s': resync %s (%zu of %zu secondaries UpToDate)",
			cluster, what, ok, nn);
		fprintf(b, "The resync of cluster '%s' from primary '%s' %s at %s after %.1f s.\n",
			cluster, jstr_or(p, "primary", "?"), what, jstr_or(p, "time", "?"),
			jdouble(p, "seconds"));
		if (jstr(p, "generation"))
			fprintf(b, "Primary generation: %s\n", jstr(p, "generation"));
		fprintf(b, "\n");
		for (size_t i = 0; i < nn; i++) {
			json_object *x = json_object_array_get_idx(nodes, i);
			char c[64], t[64];

			human(ju64(x, "bytes_compared"), c, sizeof(c));
			human(ju64(x, "bytes_sent"), t, sizeof(t));
			fprintf(b, "%s: %s\n", jstr_or(x, "name", "?"), jstr_or(x, "result", "?"));
			fprintf(b, "  state:          %s -> %s\n", jstr_or(x, "state_before", "?"),
				jstr_or(x, "state_after", "?"));
			fprintf(b, "  bytes compared: %s\n", c);
			fprintf(b, "  bytes sent:     %s\n", t);
			fprintf(b, "  duration:       %.1f s\n", jdouble(x, "seconds"));
			if (!strcmp(jstr_or(x, "result", ""), "resynced") && jstr(p, "generation"))
				fprintf(b, "  generation:     %s\n", jstr(p, "generation"));
			if (jstr(x, "error"))
				fprintf(b, "  error:          %s\n", jstr(x, "error"));
			fprintf(b, "\n");
		}
	}
	fprintf(b, "More: %s\n", jstr_or(p, "details", "resyncctl status"));
	r = memstream_close(s);
	if (memstream_close(b) < 0)
		r = -ENOMEM;
	if (r < 0)
		return r;
	*ret_subject = TAKE_PTR(sp);
	*ret_body = TAKE_PTR(bp);
	return 0;
}

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

/* ---- the channels: one attempt each; 0 delivered, -errno and err otherwise ---- */

struct upload {
	const char *p;
	size_t left;
};

static size_t upload_read(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct upload *u = arg;
	size_t k = MIN(size * nmemb, u->left);

	memcpy(ptr, u->p, k);
	u->p += k;
	u->left -= k;
	return k;
}

static size_t discard(char *ptr, size_t size, size_t nmemb, void *arg)
{
	(void)ptr;
	(void)arg;
	return size * nmemb;
}

static int read_password(const char *path, char **ret)
{
	char buf[1024];
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t k;

	if (fd < 0)
		return -errno;
	k = fd_read_all(fd, buf, sizeof(buf) - 1);
	if (k < 0)
		return (int)k;
	buf[k] = 0;
	buf[strcspn(buf, "\r\n")] = 0;
	*ret = strdup(buf);
	explicit_bzero(buf, sizeof(buf));
	return *ret ? 0 : -ENOMEM;
}

/* Called by curl about once a second and at every transfer step (name
 * resolution and connecting included): a stopping notifier aborts the
 * transfer (CURLE_ABORTED_BY_CALLBACK) instead of holding notify_free()
 * for up to the transfer timeout. The item stays spooled for the next
 * start. */
static int curl_stop_cb(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
			curl_off_t ulnow)
{
	struct notify *n = arg;

	return atomic_load(&n->stopping) ? 1 : 0;
}

static void curl_stop_set(CURL *c, struct notify *n)
{
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, curl_stop_cb);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, n);
}

static int send_email(struct notify *n, const json_object *p, char *err, size_t errlen)
{
	const struct cluster_config *cfg = n->cfg;
	_cleanup_free_ char *subject = NULL, *body = NULL, *msg = NULL, *from = NULL,
			    *rcpts = NULL, *password = NULL;
	char host[256] = "localhost", date[64], cerr[CURL_ERROR_SIZE] = "";
	struct curl_slist *to = NULL;
	struct upload u;
	CURL *c;
	time_t now = time(NULL);
	struct tm tm;
	CURLcode cr;
	int r;

	r = notify_email_format(p, &subject, &body);
	if (r < 0)
		return r;
	gethostname(host, sizeof(host) - 1);
	if (cfg->notify_from)
		from = strdup(cfg->notify_from);
	else if (asprintf(&from, "resync@%s", host) < 0)
		from = NULL;
	rcpts = strdup(cfg->notify_email);
	if (!from || !rcpts)
		return -ENOMEM;
	for (char *save = NULL, *a = strtok_r(rcpts, ", \t", &save); a;
	     a = strtok_r(NULL, ", \t", &save)) {
		struct curl_slist *t = curl_slist_append(to, a);

		if (!t) {
			curl_slist_free_all(to);
			return -ENOMEM;
		}
		to = t;
	}
	if (!to) {
		snprintf(err, errlen, "notify_email holds no address");
		return -EINVAL;
	}
	localtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
	if (asprintf(&msg,
		     "Date: %s\r\nFrom: %s\r\nTo: %s\r\nSubject: %s\r\n"
		     "Message-ID: <%s.resync@%s>\r\nMIME-Version: 1.0\r\n"
		     "Content-Type: text/plain; charset=utf-8\r\n"
		     "Content-Transfer-Encoding: 8bit\r\n\r\n%s",
		     date, from, cfg->notify_email, subject, jstr_or(p, "id", "x"), host, body) < 0) {
		msg = NULL;
		curl_slist_free_all(to);
		return -ENOMEM;
	}
	/* SMTP wants CRLF line ends in the body too. */
	{
		_cleanup_free_ char *crlf = NULL;
		size_t crlf_len;
		FILE *f = open_memstream(&crlf, &crlf_len);

		if (!f) {
			curl_slist_free_all(to);
			return -ENOMEM;
		}
		for (const char *s = msg; *s; s++) {
			if (*s == '\n' && (s == msg || s[-1] != '\r'))
				fputs("\r\n", f);
			else
				fputc(*s, f);
		}
		if (memstream_close(f) < 0) {
			curl_slist_free_all(to);
			return -ENOMEM;
		}
		free(msg);
		msg = TAKE_PTR(crlf);
	}
	if (cfg->smtp_password_file) {
		r = read_password(cfg->smtp_password_file, &password);
		if (r < 0) {
			snprintf(err, errlen, "cannot read smtp_password_file '%s': %s",
				 cfg->smtp_password_file, strerror(-r));
			curl_slist_free_all(to);
			return r;
		}
	}
	c = curl_easy_init();
	if (!c) {
		curl_slist_free_all(to);
		return -ENOMEM;
	}
	u.p = msg;
	u.left = strlen(msg);
	curl_easy_setopt(c, CURLOPT_URL, cfg->smtp_url);
	curl_easy_setopt(c, CURLOPT_MAIL_FROM, from);
	curl_easy_setopt(c, CURLOPT_MAIL_RCPT, to);
	curl_easy_setopt(c, CURLOPT_READFUNCTION, upload_read);
	curl_easy_setopt(c, CURLOPT_READDATA, &u);
	curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(c, CURLOPT_USE_SSL, (long)CURLUSESSL_TRY);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)NOTIFY_CONNECT_TIMEOUT_S);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)NOTIFY_TRANSFER_TIMEOUT_S);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
	curl_stop_set(c, n);
	if (cfg->smtp_user)
		curl_easy_setopt(c, CURLOPT_USERNAME, cfg->smtp_user);
	if (password)
		curl_easy_setopt(c, CURLOPT_PASSWORD, password);
	cr = curl_easy_perform(c);
	curl_easy_cleanup(c);
	curl_slist_free_all(to);
	if (password)
		explicit_bzero(password, strlen(password));
	if (cr != CURLE_OK) {
		snprintf(err, errlen, "%s: %s", cfg->smtp_url, cerr[0] ? cerr : curl_easy_strerror(cr));
		return -EIO;
	}
	return 0;
}

static int send_webhook(struct notify *n, const json_object *p, char *err, size_t errlen)
{
	const char *body = json_object_to_json_string_ext((json_object *)p, JSON_C_TO_STRING_PLAIN);
	struct curl_slist *h = NULL, *t;
	char cerr[CURL_ERROR_SIZE] = "";
	long code = 0;
	CURLcode cr;
	CURL *c;

	t = curl_slist_append(h, "Content-Type: application/json");
	if (!t)
		return -ENOMEM;
	h = t;
	c = curl_easy_init();
	if (!c) {
		curl_slist_free_all(h);
		return -ENOMEM;
	}
	curl_easy_setopt(c, CURLOPT_URL, n->cfg->notify_webhook);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	curl_easy_setopt(c, CURLOPT_USERAGENT, "resyncd/" "1");
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)NOTIFY_CONNECT_TIMEOUT_S);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)NOTIFY_TRANSFER_TIMEOUT_S);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
	curl_stop_set(c, n);
	cr = curl_easy_perform(c);
	if (cr == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
	curl_easy_cleanup(c);
	curl_slist_free_all(h);
	if (cr != CURLE_OK) {
		snprintf(err, errlen, "%s: %s", n->cfg->notify_webhook,
			 cerr[0] ? cerr : curl_easy_strerror(cr));
		return -EIO;
	}
	if (code < 200 || code > 299) {
		snprintf(err, errlen, "%s answered HTTP %ld", n->cfg->notify_webhook, code);
		return -EIO;
	}
	return 0;
}

static int run_command(struct notify *n, const json_object *p, char *err, size_t errlen)
{
	unsigned timeout = n->o.command_timeout_ms ? n->o.command_timeout_ms : NOTIFY_COMMAND_TIMEOUT_MS;
	char **extra = NULL, **env = NULL;
	char sh[] = "/bin/sh", dash_c[] = "-c";
	char *argv[] = {sh, dash_c, n->cfg->notify_command, NULL};
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	size_t ne = 0, nx = 0;
	int64_t deadline;
	int r, status = 0, pfd = -1;
	pid_t pid;

	r = notify_env_build(p, &extra);
	if (r < 0)
		return r;
	while (environ[ne])
		ne++;
	while (extra[nx])
		nx++;
	env = calloc(ne + nx + 1, sizeof(*env));
	if (!env) {
		notify_env_free(extra);
		return -ENOMEM;
	}
	/* The daemon's environment without any RESYNC_ variable of its own,
	 * then ours. */
	nx = 0;
	for (size_t i = 0; i < ne; i++)
		if (strncmp(environ[i], "RESYNC_", 7))
			env[nx++] = environ[i];
	for (char **e = extra; *e; e++)
		env[nx++] = *e;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, 2, 1);
	posix_spawnattr_init(&attr);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
						POSIX_SPAWN_SETSIGDEF);
	posix_spawnattr_setpgroup(&attr, 0);
	{
		sigset_t none, all;

		sigemptyset(&none);
		sigfillset(&all);
		posix_spawnattr_setsigmask(&attr, &none);
		posix_spawnattr_setsigdefault(&attr, &all);
	}
	r = -posix_spawn(&pid, argv[0], &fa, &attr, argv, env);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	free(env);
	notify_env_free(extra);
	if (r < 0) {
		snprintf(err, errlen, "cannot run '%s': %s", n->cfg->notify_command, strerror(-r));
		return r;
	}
	pfd = (int)pidfd_open(pid, 0);
	deadline = mono_ms() + timeout;
	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);
		int64_t left = deadline - mono_ms();

		if (w == pid)
			break;
		if (w < 0 && errno != EINTR) {
			r = -errno;
			snprintf(err, errlen, "waiting for '%s': %s", n->cfg->notify_command,
				 strerror(errno));
			goto out;
		}
		if (left <= 0) {
			kill(-pid, SIGKILL);
			waitpid(pid, &status, 0);
			snprintf(err, errlen, "'%s' ran longer than %u ms: killed",
				 n->cfg->notify_command, timeout);
			r = -ETIMEDOUT;
			goto out;
		}
		if (atomic_load(&n->stopping)) {
			/* notify_free() waits for this thread: not for the
			 * command's timeout. The item stays spooled. */
			kill(-pid, SIGKILL);
			waitpid(pid, &status, 0);
			snprintf(err, errlen, "'%s' killed: the daemon is stopping",
				 n->cfg->notify_command);
			r = -ECANCELED;
			goto out;
		}
		if (pfd >= 0) {
			struct pollfd pp = {.fd = pfd, .events = POLLIN};

			poll(&pp, 1, (int)MIN(left, (int64_t)NOTIFY_TICK_MS));
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
			snprintf(err, errlen, "'%s' exited with %d", n->cfg->notify_command,
				 WEXITSTATUS(status));
		else
			snprintf(err, errlen, "'%s' was killed by signal %d", n->cfg->notify_command,
				 WIFSIGNALED(status) ? WTERMSIG(status) : 0);
		r = -EIO;
	}
out:
	if (pfd >= 0)
		close(pfd);
	return r;
}

/* ---- the spool ---- */

static json_object *item_doc_refresh(struct item *it)
{
	json_object *pending = json_object_new_array(), *att = json_object_new_object();

	for (size_t i = 0; i < ARRAY_SIZE(channels); i++) {
		if (it->pending & channels[i].bit)
			json_object_array_add(pending, json_object_new_string(channels[i].name));
		json_object_object_add(att, channels[i].name, json_object_new_int((int)it->attempts[i]));
	}
	json_object_object_add(it->doc, "pending", pending);
	json_object_object_add(it->doc, "attempts", att);
	return it->doc;
}

/* Write it's file crash-safely (file_write_atomic()). */
static int spool_write(struct notify *n, struct item *it)
{
	_cleanup_free_ char *path = NULL;
	const char *s =
	    json_object_to_json_string_ext(item_doc_refresh(it), JSON_C_TO_STRING_PLAIN);

	if (asprintf(&path, "%s/%s.json", n->spool, it->id) < 0) {
		path = NULL;
		return -ENOMEM;
	}
	return file_write_atomic(path, s, strlen(s), 0600);
}

static void spool_remove(struct notify *n, struct item *it)
{
	_cleanup_free_ char *path = NULL;

	if (asprintf(&path, "%s/%s.json", n->spool, it->id) < 0)
		return;
	unlink(path);
	fsync_directory_of(path);
}

static void item_free(struct item *it)
{
	if (!it)
		return;
	json_object_put(it->doc);
	free(it);
}

/* Add it to the list (takes it). Called with n->lock held. */
static void items_add(struct notify *n, struct item *it)
{
	struct item **pp = &n->items;

	while (*pp)
		pp = &(*pp)->next;
	*pp = it;
	n->n_items++;
}

static int spool_load_one(struct notify *n, const char *name)
{
	_cleanup_free_ char *path = NULL;
	json_object *doc, *v;
	struct item *it;
	struct stat st;

	if (asprintf(&path, "%s/%s", n->spool, name) < 0)
		return -ENOMEM;
	if (stat(path, &st) < 0)
		return -errno;
	if (st.st_size > NOTIFY_SPOOL_FILE_MAX) {
		log_printf(LOG_WARNING, "notification spool file '%s' is larger than %d bytes: ignored",
			   path, NOTIFY_SPOOL_FILE_MAX);
		return -EFBIG;
	}
	doc = json_object_from_file(path);
	if (!doc || !json_object_is_type(doc, json_type_object) || !jstr(doc, "id") ||
	    !json_object_object_get_ex(doc, "payload", &v) ||
	    !json_object_is_type(v, json_type_object)) {
		log_printf(LOG_WARNING, "notification spool file '%s' is damaged: ignored", path);
		json_object_put(doc);
		return -EBADMSG;
	}
	it = calloc(1, sizeof(*it));
	if (!it) {
		json_object_put(doc);
		return -ENOMEM;
	}
	it->doc = doc;
	snprintf(it->id, sizeof(it->id), "%s", jstr(doc, "id"));
	it->created = (int64_t)ju64(doc, "created");
	if (json_object_object_get_ex(doc, "pending", &v) && json_object_is_type(v, json_type_array)) {
		for (size_t i = 0; i < json_object_array_length(v); i++) {
			const char *c = json_object_get_string(json_object_array_get_idx(v, i));

			for (size_t k = 0; k < ARRAY_SIZE(channels); k++)
				if (c && !strcmp(c, channels[k].name))
					it->pending |= channels[k].bit;
		}
	}
	if (json_object_object_get_ex(doc, "attempts", &v))
		for (size_t k = 0; k < ARRAY_SIZE(channels); k++)
			it->attempts[k] = (unsigned)ju64(v, channels[k].name);
	/* Channels no longer configured are dropped; the rest go at once. */
	it->pending &= n->channels;
	if (!it->pending) {
		spool_remove(n, it);
		item_free(it);
		return 0;
	}
	pthread_mutex_lock(&n->lock);
	items_add(n, it);
	pthread_mutex_unlock(&n->lock);
	log_printf(LOG_INFO, "notification %s found in the spool: delivering", it->id);
	return 0;
}

static int spool_load(struct notify *n)
{
	DIR *d = opendir(n->spool);
	struct dirent *de;

	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);

		if (l > 4 && !strcmp(de->d_name + l - 4, ".tmp")) {
			/* A write that a crash interrupted: its rename never
			 * happened, so the old file (if any) is the truth. */
			unlinkat(dirfd(d), de->d_name, 0);
			continue;
		}
		if (l > 5 && !strcmp(de->d_name + l - 5, ".json"))
			spool_load_one(n, de->d_name);
	}
	closedir(d);
	return 0;
}

int notify_submit(struct notify *n, json_object *payload)
{
	json_object *doc;
	struct item *it;
	uint32_t rnd = 0;
	int64_t now = clock_real_usec();
	char t[64];
	int r;

	if (!n || !n->channels) {
		json_object_put(payload);
		return 0;
	}
	it = calloc(1, sizeof(*it));
	doc = json_object_new_object();
	if (!it || !doc) {
		free(it);
		json_object_put(doc);
		json_object_put(payload);
		return -ENOMEM;
	}
	if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
		rnd = (uint32_t)now ^ (uint32_t)getpid();
	if (jstr(payload, "id"))
		snprintf(it->id, sizeof(it->id), "%s", jstr(payload, "id"));
	else
		snprintf(it->id, sizeof(it->id), "%" PRId64 "-%08x", now, rnd);
	/* The id names a file: keep it to a safe alphabet. */
	for (char *c = it->id; *c; c++)
		if (!strchr("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_", *c))
			*c = '_';
	json_object_object_add(payload, "id", json_object_new_string(it->id));
	if (!jstr(payload, "time")) {
		clock_format_utc(now, true, t, sizeof(t));
		json_object_object_add(payload, "time", json_object_new_string(t));
	}
	it->created = now / 1000000;
	it->pending = n->channels;
	it->doc = doc;
	json_object_object_add(doc, "version", json_object_new_int(1));
	json_object_object_add(doc, "id", json_object_new_string(it->id));
	json_object_object_add(doc, "created", json_object_new_int64(it->created));
	json_object_object_add(doc, "payload", payload);
	r = spool_write(n, it);
	if (r < 0)
		/* Still delivered from memory; only a restart would lose it. */
		log_printf(LOG_ERR, "cannot write notification %s to the spool '%s': %s", it->id,
			   n->spool, strerror(-r));
	pthread_mutex_lock(&n->lock);
	items_add(n, it);
	pthread_mutex_unlock(&n->lock);
	log_printf(LOG_INFO, "notification %s (%s, %s) queued", it->id,
		   jstr_or(payload, "type", "?"), jstr_or(payload, "result", "?"));
	return r < 0 ? r : 0;
}

size_t notify_pending(struct notify *n)
{
	size_t k;

	if (!n)
		return 0;
	pthread_mutex_lock(&n->lock);
	k = n->n_items;
	pthread_mutex_unlock(&n->lock);
	return k;
}

/* ---- gathering a run from the events ---- */

static struct run_node *run_node_get(struct notify *n, const char *name)
{
	for (size_t i = 0; i < n->n_run; i++)
		if (!strcmp(n->run[i].name, name))
			return &n->run[i];
	if (n->n_run >= n->cfg->n_nodes)
		return NULL;
	struct run_node *r = &n->run[n->n_run++];

	memset(r, 0, sizeof(*r));
	snprintf(r->name, sizeof(r->name), "%s", name);
	return r;
}

static json_object *payload_base(struct notify *n, const char *type, const char *result,
				 int64_t time_usec)
{
	json_object *p = json_object_new_object();
	char t[64], details[1024];

	clock_format_utc(time_usec, true, t, sizeof(t));
	snprintf(details, sizeof(details), "resyncctl --config %s status", n->cfg->path);
	json_object_object_add(p, "version", json_object_new_int(1));
	json_object_object_add(p, "type", json_object_new_string(type));
	json_object_object_add(p, "cluster", json_object_new_string(n->cfg->name));
	json_object_object_add(p, "node", json_object_new_string(n->o.node));
	json_object_object_add(p, "primary",
			       n->cfg->primary ? json_object_new_string(n->cfg->primary) : NULL);
	json_object_object_add(p, "result", json_object_new_string(result));
	json_object_object_add(p, "time", json_object_new_string(t));
	json_object_object_add(p, "details", json_object_new_string(details));
	return p;
}

static void on_done(struct notify *n, const struct event *e)
{
	const char *type = e->result == EVENT_RESULT_SUCCESS	 ? "resync_finished"
			   : e->result == EVENT_RESULT_CANCELLED ? "resync_cancelled"
								 : "resync_failed";
	json_object *p = payload_base(n, type, event_result_name(e->result), e->time_usec),
		    *arr = json_object_new_array();

	json_object_object_add(p, "seconds", json_object_new_double(e->seconds));
	if (e->generation[0])
		json_object_object_add(p, "generation", json_object_new_string(e->generation));
	for (size_t i = 0; i < n->n_run; i++) {
		struct run_node *r = &n->run[i];
		json_object *x = json_object_new_object();
		const char *res = !r->has_ended ? "failed"
				  : r->ended.kind == EVENT_RESYNC_FINISHED ? "resynced"
				  : r->ended.kind == EVENT_RESYNC_CANCELLED ? "cancelled"
									    : "failed";

		json_object_object_add(x, "name", json_object_new_string(r->name));
		json_object_object_add(x, "result", json_object_new_string(res));
		json_object_object_add(x, "state_before",
				       json_object_new_string(meta_state_name(r->has_started ? r->started.state
											     : META_STATE_UNKNOWN)));
		json_object_object_add(x, "state_after",
				       json_object_new_string(meta_state_name(r->has_ended ? r->ended.state
											   : META_STATE_UNKNOWN)));
		json_object_object_add(x, "bytes_compared",
				       json_object_new_uint64(r->has_ended ? r->ended.bytes_compared : 0));
		json_object_object_add(x, "bytes_sent",
				       json_object_new_uint64(r->has_ended ? r->ended.bytes_sent : 0));
		json_object_object_add(x, "seconds",
				       json_object_new_double(r->has_ended ? r->ended.seconds : 0));
		if (r->has_ended && r->ended.kind != EVENT_RESYNC_FINISHED)
			json_object_object_add(x, "error", json_object_new_string(r->ended.error));
		json_object_array_add(arr, x);
	}
	json_object_object_add(p, "nodes", arr);
	n->n_run = 0;
	notify_submit(n, p);
}

static void on_state(struct notify *n, const struct event *e)
{
	json_object *p, *arr, *x;

	/* An Inconsistent that a running resync asked for is no news; one
	 * left behind (a resync stopped half-way) and a Diverged are. */
	if (e->expected || (e->state != META_STATE_DIVERGED && e->state != META_STATE_INCONSISTENT))
		return;
	p = payload_base(n, "state_changed", meta_state_name(e->state), e->time_usec);
	arr = json_object_new_array();
	x = json_object_new_object();
	json_object_object_add(x, "name", json_object_new_string(e->node));
	json_object_object_add(x, "result", json_object_new_string(meta_state_name(e->state)));
	json_object_object_add(x, "state_before", json_object_new_string(event_state_name(e->old_state)));
	json_object_object_add(x, "state_after", json_object_new_string(meta_state_name(e->state)));
	json_object_object_add(x, "error", json_object_new_string(e->reason));
	json_object_array_add(arr, x);
	json_object_object_add(p, "nodes", arr);
	notify_submit(n, p);
}

static void on_event(struct notify *n, const struct event *e)
{
	struct run_node *r;

	switch (e->kind) {
	case EVENT_RESYNC_STARTED:
		r = run_node_get(n, e->node);
		if (r) {
			r->started = *e;
			r->has_started = true;
			r->has_ended = false;
		}
		break;
	case EVENT_RESYNC_FINISHED:
	case EVENT_RESYNC_FAILED:
	case EVENT_RESYNC_CANCELLED:
		r = run_node_get(n, e->node);
		if (r) {
			r->ended = *e;
			r->has_ended = true;
		}
		break;
	case EVENT_RESYNC_DONE:
		on_done(n, e);
		break;
	case EVENT_STATE_CHANGED:
		on_state(n, e);
		break;
	default:
		break;
	}
}

/* ---- the worker ---- */

static void publish_attempt(struct notify *n, const struct item *it, size_t ch, int r,
			    const char *err, double retry)
{
	struct event e = {.kind = r == 0 ? EVENT_NOTIFY_DELIVERED : EVENT_NOTIFY_FAILED,
			  .channel = channels[ch].bit};

	snprintf(e.id, sizeof(e.id), "%s", it->id);
	snprintf(e.error, sizeof(e.error), "%s", err);
	e.attempts = it->attempts[ch];
	e.retry = retry;
	event_bus_publish(n->o.bus, &e);
}

static int attempt(struct notify *n, size_t ch, const json_object *p, char *err, size_t errlen)
{
	switch (channels[ch].bit) {
	case NOTIFY_EMAIL:
		return send_email(n, p, err, errlen);
	case NOTIFY_WEBHOOK:
		return send_webhook(n, p, err, errlen);
	default:
		return run_command(n, p, err, errlen);
	}
}

/* One pass over the pending items: try each channel that is due. Returns
 * the monotonic ms of the next due attempt (INT64_MAX: none). */
static int64_t deliver_due(struct notify *n)
{
	unsigned bmin = n->o.backoff_min_ms ? n->o.backoff_min_ms : NOTIFY_BACKOFF_MIN_MS;
	unsigned bmax = n->o.backoff_max_ms ? n->o.backoff_max_ms : NOTIFY_BACKOFF_MAX_MS;
	unsigned max_age = n->o.max_age_s ? n->o.max_age_s : NOTIFY_MAX_AGE_S;
	int64_t next = INT64_MAX;
	struct item *it;

	pthread_mutex_lock(&n->lock);
	it = n->items;
	pthread_mutex_unlock(&n->lock);
	/* Only this thread removes items, so walking without the lock is
	 * safe; new ones are appended at the tail. */
	while (it && !atomic_load(&n->stopping)) {
		json_object *p = NULL;
		bool changed = false;

		json_object_object_get_ex(it->doc, "payload", &p);
		for (size_t ch = 0; ch < ARRAY_SIZE(channels) && !atomic_load(&n->stopping); ch++) {
			char err[1024] = "";
			int r;

			if (!(it->pending & channels[ch].bit))
				continue;
			if (it->due[ch] > mono_ms()) {
				next = MIN(next, it->due[ch]);
				continue;
			}
			it->attempts[ch]++;
			changed = true;
			r = attempt(n, ch, p, err, sizeof(err));
			if (r == 0) {
				it->pending &= ~channels[ch].bit;
				log_printf(LOG_INFO, "notification %s delivered by %s (attempt %u)",
					   it->id, channels[ch].name, it->attempts[ch]);
				publish_attempt(n, it, ch, 0, "", 0);
				continue;
			}
			if (!err[0])
				snprintf(err, sizeof(err), "%s", strerror(-r));
			if (time(NULL) - it->created > (int64_t)max_age) {
				it->pending &= ~channels[ch].bit;
				log_printf(LOG_ERR,
					   "notification %s by %s failed (attempt %u): %s; given up after %u s",
					   it->id, channels[ch].name, it->attempts[ch], err, max_age);
				publish_attempt(n, it, ch, r, err, 0);
				continue;
			}
			it->backoff[ch] = it->backoff[ch] ? MIN(it->backoff[ch] * 2, (int64_t)bmax) : bmin;
			it->due[ch] = mono_ms() + it->backoff[ch];
			next = MIN(next, it->due[ch]);
			log_printf(LOG_WARNING,
				   "notification %s by %s failed (attempt %u): %s; retry in %.1f s",
				   it->id, channels[ch].name, it->attempts[ch], err,
				   (double)it->backoff[ch] / 1000);
			publish_attempt(n, it, ch, r, err, (double)it->backoff[ch] / 1000);
		}
		pthread_mutex_lock(&n->lock);
		struct item *nx = it->next;

		if (!it->pending) {
			for (struct item **pp = &n->items; *pp; pp = &(*pp)->next) {
				if (*pp == it) {
					*pp = it->next;
					n->n_items--;
					break;
				}
			}
		}
		pthread_mutex_unlock(&n->lock);
		if (!it->pending) {
			spool_remove(n, it);
			item_free(it);
		} else if (changed) {
			int r = spool_write(n, it);

			if (r < 0)
				log_printf(LOG_ERR, "cannot update notification %s in '%s': %s",
					   it->id, n->spool, strerror(-r));
		}
		it = nx;
	}
	return next;
}

static void *worker(void *arg)
{
	struct notify *n = arg;
	int64_t next = 0;

	while (!atomic_load(&n->stopping)) {
		struct event e;
		int64_t wait = next == INT64_MAX ? NOTIFY_TICK_MS : next - mono_ms();

		wait = MAX((int64_t)0, MIN(wait, (int64_t)NOTIFY_TICK_MS));
		if (n->q && event_queue_pop(n->q, (int)wait, &e, NULL) == 1) {
			on_event(n, &e);
			/* Drain what is queued before delivering. */
			while (event_queue_pop(n->q, 0, &e, NULL) == 1)
				on_event(n, &e);
		} else if (!n->q && wait > 0) {
			usleep((useconds_t)wait * 1000);
		}
		next = deliver_due(n);
	}
	return NULL;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

int notify_new(const struct notify_opts *o, struct notify **ret)
{
	struct notify *n = calloc(1, sizeof(*n));
	const struct node_config *self;
	int r;

	if (!n)
		return -ENOMEM;
	n->o = *o;
	n->cfg = o->cfg;
	n->channels = notify_channels(o->cfg);
	pthread_mutex_init(&n->lock, NULL);
	if (!n->channels) {
		*ret = n;
		return 0;
	}
	self = cluster_config_node(o->cfg, o->node);
	if (o->spool_dir)
		n->spool = strdup(o->spool_dir);
	else if (self && asprintf(&n->spool, "%s.resync-notify", self->volume) < 0)
		n->spool = NULL;
	n->run = calloc(o->cfg->n_nodes ? o->cfg->n_nodes : 1, sizeof(*n->run));
	if (!n->spool || !n->run) {
		r = -ENOMEM;
		goto fail;
	}
	r = mkdir_p(n->spool, 0700);
	if (r < 0) {
		log_printf(LOG_ERR, "cannot create the notification spool '%s': %s", n->spool,
			   strerror(-r));
		goto fail;
	}
	r = spool_load(n);
	if (r < 0) {
		log_printf(LOG_ERR, "cannot read the notification spool '%s': %s", n->spool,
			   strerror(-r));
		goto fail;
	}
	pthread_once(&curl_once, curl_init_once);
	if (o->bus) {
		r = event_queue_new(o->bus, 1024, &n->q);
		if (r < 0)
			goto fail;
	}
	r = -pthread_create(&n->thread, NULL, worker, n);
	if (r < 0)
		goto fail;
	n->started = true;
	*ret = n;
	return 0;
fail:
	notify_free(n);
	return r;
}

void notify_free(struct notify *n)
{
	if (!n)
		return;
	atomic_store(&n->stopping, true);
	if (n->started)
		pthread_join(n->thread, NULL);
	event_queue_free(n->q);
	while (n->items) {
		struct item *it = n->items;

		n->items = it->next;
		item_free(it);
	}
	pthread_mutex_destroy(&n->lock);
	free(n->run);
	free(n->spool);
	free(n);
}
