/* The notifier's email (notify.h): the message's text, and sending it by
 * SMTP through libcurl. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "events.h"
#include "notify-int.h"
#include "resync/fileio.h"
#include "resync/macro.h"

/* ---- the text ---- */

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
	if (!strcmp(type, "alert")) {
		/* Drift detection's (alerts.c): what was found, on which
		 * node, and the command that mends it. */
		json_object *x = nn ? json_object_array_get_idx(nodes, 0) : NULL;

		fprintf(s, "[resync] cluster '%s': %s", cluster, jstr_or(p, "summary", result));
		fprintf(b, "Cluster '%s', node '%s': %s.\n", cluster, jstr_or(x, "name", "?"),
			jstr_or(p, "summary", result));
		if (json_object_object_get_ex(x, "differing_bytes", NULL)) {
			char c[64];

			human(ju64(x, "differing_bytes"), c, sizeof(c));
			fprintf(b, "Differing: %s in %" PRIu64 " blocks (verify at %s)\n", c,
				ju64(x, "differing_blocks"), jstr_or(x, "verify_time", "?"));
		}
		fprintf(b, "Reported by '%s' at %s; alerted once until it is over.\n\n",
			jstr_or(p, "node", "?"), jstr_or(p, "time", "?"));
		if (jstr(p, "fix"))
			fprintf(b, "To make it the primary's again (erases what differs there):\n  %s\n\n",
				jstr_or(p, "fix", ""));
	} else if (!strcmp(type, "state_changed")) {
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
			fprintf(b, "Primary generation: %s\n", jstr_or(p, "generation", ""));
		if (jstr_or(p, "fence", "")[0])
			fprintf(b, "Primary's writes waited: %.3f s (%s fence, %d passes)\n",
				jdouble(p, "primary_fence_seconds"), jstr_or(p, "fence", ""),
				(int)jdouble(p, "passes"));
		fprintf(b, "\n");
		for (size_t i = 0; i < nn; i++) {
			json_object *x = json_object_array_get_idx(nodes, i), *pr;
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
			if (json_object_object_get_ex(x, "proof", &pr)) {
				fprintf(b, "  proof:          %s (%s)\n", jstr_or(pr, "root", "?"),
					json_object_get_boolean(json_object_object_get(pr, "match"))
						? "equal to the primary's"
						: "MISMATCH");
				fprintf(b, "  primary's root: %s\n", jstr_or(pr, "primary_root", "?"));
			}
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

/* ---- sending ---- */

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

/* The recipients of addrs (separated by commas or blanks) in *ret; NULL
 * when it holds none. 0 or -ENOMEM. */
static int email_rcpts(const char *addrs, struct curl_slist **ret)
{
	_cleanup_free_ char *rcpts = strdup(addrs);
	struct curl_slist *to = NULL;

	if (!rcpts)
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
	*ret = to;
	return 0;
}

/* The whole message, headers and body, with CRLF line ends. */
static int email_message(const struct cluster_config *cfg, const json_object *p, time_t now,
			 const char *from, const char *host, const char *subject,
			 const char *body, char **ret)
{
	_cleanup_free_ char *msg = NULL, *crlf = NULL;
	char date[64];
	struct tm tm;
	size_t crlf_len;
	FILE *f;

	localtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
	if (asprintf(&msg,
		     "Date: %s\r\nFrom: %s\r\nTo: %s\r\nSubject: %s\r\n"
		     "Message-ID: <%s.resync@%s>\r\nMIME-Version: 1.0\r\n"
		     "Content-Type: text/plain; charset=utf-8\r\n"
		     "Content-Transfer-Encoding: 8bit\r\n\r\n%s",
		     date, from, cfg->notify_email, subject, jstr_or(p, "id", "x"), host, body) < 0) {
		msg = NULL;
		return -ENOMEM;
	}
	/* SMTP wants CRLF line ends in the body too. */
	f = open_memstream(&crlf, &crlf_len);
	if (!f)
		return -ENOMEM;
	for (const char *s = msg; *s; s++) {
		if (*s == '\n' && (s == msg || s[-1] != '\r'))
			fputs("\r\n", f);
		else
			fputc(*s, f);
	}
	if (memstream_close(f) < 0)
		return -ENOMEM;
	*ret = TAKE_PTR(crlf);
	return 0;
}

/* One SMTP transfer of msg (password: NULL for none). */
static int email_transfer(struct notify *n, const char *from, struct curl_slist *to,
			  const char *msg, const char *password, char *err, size_t errlen)
{
	const struct cluster_config *cfg = n->cfg;
	char cerr[CURL_ERROR_SIZE] = "";
	struct upload u;
	CURLcode cr;
	CURL *c;

	c = curl_easy_init();
	if (!c)
		return -ENOMEM;
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
	notify_curl_stop_set(c, n);
	if (cfg->smtp_user)
		curl_easy_setopt(c, CURLOPT_USERNAME, cfg->smtp_user);
	if (password)
		curl_easy_setopt(c, CURLOPT_PASSWORD, password);
	cr = curl_easy_perform(c);
	curl_easy_cleanup(c);
	if (cr != CURLE_OK) {
		snprintf(err, errlen, "%s: %s", cfg->smtp_url, cerr[0] ? cerr : curl_easy_strerror(cr));
		return -EIO;
	}
	return 0;
}

int notify_email_send(struct notify *n, const json_object *p, char *err, size_t errlen)
{
	const struct cluster_config *cfg = n->cfg;
	_cleanup_free_ char *subject = NULL, *body = NULL, *msg = NULL, *from = NULL,
			    *password = NULL;
	char host[256] = "localhost";
	struct curl_slist *to = NULL;
	time_t now = time(NULL);
	int r;

	r = notify_email_format(p, &subject, &body);
	if (r < 0)
		return r;
	gethostname(host, sizeof(host) - 1);
	if (cfg->notify_from)
		from = strdup(cfg->notify_from);
	else if (asprintf(&from, "resync@%s", host) < 0)
		from = NULL;
	if (!from)
		return -ENOMEM;
	r = email_rcpts(cfg->notify_email, &to);
	if (r < 0)
		return r;
	if (!to) {
		snprintf(err, errlen, "notify_email holds no address");
		return -EINVAL;
	}
	r = email_message(cfg, p, now, from, host, subject, body, &msg);
	if (r < 0)
		goto out;
	if (cfg->smtp_password_file) {
		r = read_password(cfg->smtp_password_file, &password);
		if (r < 0) {
			snprintf(err, errlen, "cannot read smtp_password_file '%s': %s",
				 cfg->smtp_password_file, strerror(-r));
			goto out;
		}
	}
	r = email_transfer(n, from, to, msg, password, err, errlen);
	if (password)
		explicit_bzero(password, strlen(password));
out:
	curl_slist_free_all(to);
	return r;
}
