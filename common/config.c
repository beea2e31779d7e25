/* The cluster file, read with inih. inih splits "key = value" lines and
 * strips comments; a line reader in front of it counts lines (so every
 * message names one), tracks section headers itself (inih's section names
 * are truncated at 50 bytes and empty sections are invisible to it), drops
 * leading whitespace (an indented key is not a continuation line here) and
 * refuses lines longer than inih's buffer instead of letting it split them. */
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <zstd.h>

#include "resync/config.h"
#include "resync/fileio.h"
#include "resync/limits.h"
#include "resync/macro.h"
#include "resync/parse.h"

bool config_name_valid(const char *s, size_t len)
{
	if (len == 0 || len > RESYNC_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = s[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			     (c >= '0' && c <= '9');

		if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
			return false;
	}
	return true;
}

enum { CONFIG_FILE_MAX = 1 << 20, COMPRESS_LEVEL_MIN = -7 };

enum cluster_key {
	CK_NAME,
	CK_PRIMARY,
	CK_SECRET_FILE,
	CK_BLOCK_SIZE,
	CK_MAX_RATE,
	CK_INSECURE,
	CK_COMPRESS_LEVEL,
	CK_COMPRESS_ADAPT,
	CK_NOTIFY_EMAIL,
	CK_SMTP_URL,
	CK_SMTP_USER,
	CK_SMTP_PASSWORD_FILE,
	CK_NOTIFY_FROM,
	CK_NOTIFY_WEBHOOK,
	CK_NOTIFY_COMMAND,
	CK_UNDO,
	CK_UNDO_KEEP,
	CK_UNDO_MAX_BYTES,
	CK_SESSION_TIMEOUT,
	CK_VERIFY_INTERVAL,
	CK_VERIFY_MAX_RATE,
	CK_ALERT_AFTER,
	CK_FENCE,
	CK_FENCE_MAX,
	CK_FINAL_PASS_BYTES,
	CK_MAX_PASSES,
	CK_WEB_TOKEN_FILE,
	CK_WEB_ALLOW_REMOTE,
	CK_WEB_PUBLIC_STATUS,
	CK_PROOF,
	CK_PROOF_HASH,
	CK_BEFORE_RESYNC_COMMAND,
	CK_BEFORE_RESYNC_TIMEOUT,
	CK_FUSE_RT_PRIORITY,
	CK_DELTA,
	CK_COUNT,
};

static const char *const cluster_keys[CK_COUNT] = {
	[CK_NAME] = "name",
	[CK_PRIMARY] = "primary",
	[CK_SECRET_FILE] = "secret_file",
	[CK_BLOCK_SIZE] = "block_size",
	[CK_MAX_RATE] = "max_rate",
	[CK_INSECURE] = "insecure",
	[CK_COMPRESS_LEVEL] = "compress_level",
	[CK_COMPRESS_ADAPT] = "compress_adapt",
	[CK_NOTIFY_EMAIL] = "notify_email",
	[CK_SMTP_URL] = "smtp_url",
	[CK_SMTP_USER] = "smtp_user",
	[CK_SMTP_PASSWORD_FILE] = "smtp_password_file",
	[CK_NOTIFY_FROM] = "notify_from",
	[CK_NOTIFY_WEBHOOK] = "notify_webhook",
	[CK_NOTIFY_COMMAND] = "notify_command",
	[CK_UNDO] = "undo",
	[CK_UNDO_KEEP] = "undo_keep",
	[CK_UNDO_MAX_BYTES] = "undo_max_bytes",
	[CK_SESSION_TIMEOUT] = "session_timeout",
	[CK_VERIFY_INTERVAL] = "verify_interval",
	[CK_VERIFY_MAX_RATE] = "verify_max_rate",
	[CK_ALERT_AFTER] = "alert_after",
	[CK_FENCE] = "fence",
	[CK_FENCE_MAX] = "fence_max",
	[CK_FINAL_PASS_BYTES] = "final_pass_bytes",
	[CK_MAX_PASSES] = "max_passes",
	[CK_WEB_TOKEN_FILE] = "web_token_file",
	[CK_WEB_ALLOW_REMOTE] = "web_allow_remote",
	[CK_WEB_PUBLIC_STATUS] = "web_public_status",
	[CK_PROOF] = "proof",
	[CK_PROOF_HASH] = "proof_hash",
	[CK_BEFORE_RESYNC_COMMAND] = "before_resync_command",
	[CK_BEFORE_RESYNC_TIMEOUT] = "before_resync_timeout",
	[CK_FUSE_RT_PRIORITY] = "fuse_rt_priority",
	[CK_DELTA] = "delta",
};

static const char *const delta_names[CONFIG_DELTA_COUNT] = {
	[CONFIG_DELTA_AUTO] = "auto",
	[CONFIG_DELTA_ALIGNED] = "aligned",
	[CONFIG_DELTA_ROLLING] = "rolling",
};

const char *config_delta_name(unsigned delta)
{
	return delta < CONFIG_DELTA_COUNT ? delta_names[delta] : NULL;
}

int config_delta_parse(const char *s, unsigned *ret)
{
	for (unsigned i = 0; i < CONFIG_DELTA_COUNT; i++)
		if (!strcmp(s, delta_names[i])) {
			*ret = i;
			return 0;
		}
	return -EINVAL;
}

enum node_key {
	NK_ADDRESS,
	NK_VOLUME,
	NK_MOUNT,
	NK_CONTROL,
	NK_METRICS,
	NK_WEB,
	NK_COUNT,
};

static const char *const node_keys[NK_COUNT] = {
	[NK_ADDRESS] = "address", [NK_VOLUME] = "volume",   [NK_MOUNT] = "mount",
	[NK_CONTROL] = "control", [NK_METRICS] = "metrics", [NK_WEB] = "web",
};

struct node_lines {
	unsigned key[NK_COUNT]; /* line of each key, 0 = not given */
};

enum section { SEC_NONE, SEC_CLUSTER, SEC_NODE, SEC_ETCD, SEC_BAD };

struct parse_ctx {
	const char *file;
	char *err;
	size_t errlen;
	int error; /* first failure, 0 if none */

	struct cluster_config *cfg;
	unsigned cluster_line;		/* of [cluster], 0 = none yet */
	unsigned cluster_key[CK_COUNT]; /* line of each key */
	struct node_lines *node_lines;	/* parallel to cfg->nodes */
	size_t cap_nodes;

	/* The line reader. */
	const char *text;
	size_t pos, len;
	unsigned line;
	enum section sec;
};

static void fail(struct parse_ctx *c, unsigned line, int error, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void fail(struct parse_ctx *c, unsigned line, int error, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (c->error)
		return; /* the first error is the one that matters */
	c->error = error;
	if (!c->errlen)
		return;
	if (line)
		n = snprintf(c->err, c->errlen, "%s:%u: ", c->file, line);
	else
		n = snprintf(c->err, c->errlen, "%s: ", c->file);
	if (n < 0 || (size_t)n >= c->errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(c->err + n, c->errlen - n, fmt, ap);
	va_end(ap);
}

static const char *const name_rule = "letters, digits, '.', '_', '-', at most 64";

static void section_begin(struct parse_ctx *c, const char *s, size_t len)
{
	struct cluster_config *cfg = c->cfg;
	char name[RESYNC_NAME_MAX + 1];
	struct node_config *n;
	size_t nl;

	while (len && (*s == ' ' || *s == '\t'))
		s++, len--;
	while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	c->sec = SEC_BAD;
	if (len == 7 && !memcmp(s, "cluster", 7)) {
		if (c->cluster_line) {
			fail(c, c->line, -EINVAL, "duplicate section [cluster] (first at line %u)",
			     c->cluster_line);
			return;
		}
		c->cluster_line = c->line;
		c->sec = SEC_CLUSTER;
		return;
	}
	if (len == 4 && !memcmp(s, "etcd", 4)) {
		if (cfg->etcd) {
			fail(c, c->line, -EINVAL, "duplicate section [etcd] (first at line %u)",
			     cfg->etcd->line);
			return;
		}
		cfg->etcd = calloc(1, sizeof(*cfg->etcd));
		if (!cfg->etcd) {
			fail(c, c->line, -ENOMEM, "out of memory");
			return;
		}
		cfg->etcd->line = c->line;
		c->sec = SEC_ETCD;
		return;
	}
	if (len < 4 || memcmp(s, "node", 4) || (len > 4 && s[4] != ' ' && s[4] != '\t')) {
		fail(c, c->line, -EINVAL, "unknown section [%.*s]", (int)MIN(len, 80), s);
		return;
	}
	s += 4, len -= 4;
	while (len && (*s == ' ' || *s == '\t'))
		s++, len--;
	if (!len) {
		fail(c, c->line, -EINVAL, "section [node] needs a name: [node NAME]");
		return;
	}
	if (!config_name_valid(s, len)) {
		fail(c, c->line, -EINVAL, "section [node %.*s]: '%.*s' is not a valid node name (%s)",
		     (int)MIN(len, 80), s, (int)MIN(len, 80), s, name_rule);
		return;
	}
	memcpy(name, s, len);
	name[len] = 0;
	nl = len;
	for (size_t i = 0; i < cfg->n_nodes; i++)
		if (strlen(cfg->nodes[i].name) == nl && !memcmp(cfg->nodes[i].name, name, nl)) {
			fail(c, c->line, -EINVAL, "duplicate section [node %s] (first at line %u)",
			     name, cfg->nodes[i].line);
			return;
		}
	if (cfg->n_nodes == c->cap_nodes) {
		size_t cap = c->cap_nodes ? 2 * c->cap_nodes : 4;
		struct node_config *nn = realloc(cfg->nodes, cap * sizeof(*nn));
		struct node_lines *lines;

		if (!nn) {
			fail(c, c->line, -ENOMEM, "out of memory");
			return;
		}
		cfg->nodes = nn;
		lines = realloc(c->node_lines, cap * sizeof(*lines));
		if (!lines) {
			fail(c, c->line, -ENOMEM, "out of memory");
			return;
		}
		c->node_lines = lines;
		c->cap_nodes = cap;
	}
	n = &cfg->nodes[cfg->n_nodes];
	*n = (struct node_config){.name = strdup(name), .line = c->line};
	c->node_lines[cfg->n_nodes] = (struct node_lines){{0}};
	if (!n->name) {
		fail(c, c->line, -ENOMEM, "out of memory");
		return;
	}
	cfg->n_nodes++;
	c->sec = SEC_NODE;
}

/* inih's fgets-like reader: one line of the text per call. */
static char *reader(char *str, int num, void *stream)
{
	struct parse_ctx *c = stream;
	const char *p, *nl, *end;
	size_t l;

	if (c->error || c->pos >= c->len)
		return NULL;
	p = c->text + c->pos;
	nl = memchr(p, '\n', c->len - c->pos);
	end = nl ? nl + 1 : c->text + c->len;
	c->pos = end - c->text;
	c->line++;
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	l = end - p;
	if (num < 3 || l > (size_t)num - 3) {
		fail(c, c->line, -EINVAL, "line longer than %d bytes", num - 3);
		return NULL;
	}
	if (l && *p == '[') {
		const char *close = memchr(p, ']', l);

		/* A header without ']' is inih's syntax error. */
		if (close)
			section_begin(c, p + 1, close - p - 1);
	}
	memcpy(str, p, l);
	str[l] = 0;
	return str;
}

static int set_string(struct parse_ctx *c, char **field, const char *value)
{
	char *s = strdup(value);

	if (!s) {
		fail(c, c->line, -ENOMEM, "out of memory");
		return -ENOMEM;
	}
	free(*field);
	*field = s;
	return 0;
}

static int parse_bool(const char *v, bool *ret)
{
	static const char *const yes[] = {"true", "yes", "on", "1"};
	static const char *const no[] = {"false", "no", "off", "0"};

	for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
		if (!strcasecmp(v, yes[i])) {
			*ret = true;
			return 0;
		}
		if (!strcasecmp(v, no[i])) {
			*ret = false;
			return 0;
		}
	}
	return -EINVAL;
}

int config_address_parse(const char *s, char **ret_host, uint16_t *ret_port)
{
	const char *colon, *host = s;
	size_t hl;
	unsigned long port;
	char *end, *h;

	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (!close || close[1] != ':')
			return -EINVAL;
		host = s + 1;
		hl = close - host;
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -EINVAL;
		hl = colon - s;
		if (memchr(s, ':', hl))
			return -EINVAL; /* an IPv6 literal needs brackets */
	}
	if (hl == 0 || hl > 255)
		return -EINVAL;
	for (size_t i = 0; i < hl; i++)
		if (host[i] == ' ' || host[i] == '\t' || host[i] == '[' || host[i] == ']')
			return -EINVAL;
	if (colon[1] < '0' || colon[1] > '9')
		return -EINVAL;
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (errno || *end || port == 0 || port > 65535)
		return -EINVAL;
	h = strndup(host, hl);
	if (!h)
		return -ENOMEM;
	*ret_host = h;
	*ret_port = port;
	return 0;
}

static bool key_seen(struct parse_ctx *c, unsigned *line, const char *key)
{
	if (*line) {
		fail(c, c->line, -EINVAL, "key '%s' given twice (first at line %u)", key, *line);
		return true;
	}
	*line = c->line;
	return false;
}

static int absolute_path(struct parse_ctx *c, const char *key, const char *v, char **field)
{
	if (v[0] != '/') {
		fail(c, c->line, -EINVAL, "key '%s': '%s' is not an absolute path", key, v);
		return -EINVAL;
	}
	return set_string(c, field, v);
}

static int url_with(struct parse_ctx *c, const char *key, const char *v, const char *const *schemes,
		    size_t n, char **field)
{
	for (size_t i = 0; i < n; i++)
		if (!strncasecmp(v, schemes[i], strlen(schemes[i])) && v[strlen(schemes[i])])
			return set_string(c, field, v);
	fail(c, c->line, -EINVAL, "key '%s': '%s' is not a %s or %s URL", key, v, schemes[0],
	     schemes[1]);
	return -EINVAL;
}

static void cluster_key(struct parse_ctx *c, const char *key, const char *v)
{
	static const char *const smtp[] = {"smtp://", "smtps://"};
	static const char *const http[] = {"http://", "https://"};
	struct cluster_config *cfg = c->cfg;
	uint64_t u;
	int k;

	for (k = 0; k < CK_COUNT; k++)
		if (!strcmp(key, cluster_keys[k]))
			break;
	if (k == CK_COUNT) {
		fail(c, c->line, -EINVAL, "unknown key '%s' in section [cluster]", key);
		return;
	}
	if (key_seen(c, &c->cluster_key[k], key))
		return;
	switch ((enum cluster_key)k) {
	case CK_NAME:
		if (!config_name_valid(v, strlen(v))) {
			fail(c, c->line, -EINVAL, "key 'name': '%s' is not a valid cluster name (%s)",
			     v, name_rule);
			return;
		}
		set_string(c, &cfg->name, v);
		return;
	case CK_PRIMARY:
		if (!config_name_valid(v, strlen(v))) {
			fail(c, c->line, -EINVAL, "key 'primary': '%s' is not a valid node name (%s)",
			     v, name_rule);
			return;
		}
		set_string(c, &cfg->primary, v);
		return;
	case CK_SECRET_FILE:
		absolute_path(c, key, v, &cfg->secret_file);
		return;
	case CK_SMTP_PASSWORD_FILE:
		absolute_path(c, key, v, &cfg->smtp_password_file);
		return;
	case CK_WEB_TOKEN_FILE:
		absolute_path(c, key, v, &cfg->web_token_file);
		return;
	case CK_WEB_ALLOW_REMOTE:
	case CK_WEB_PUBLIC_STATUS:
		if (parse_bool(v, k == CK_WEB_ALLOW_REMOTE ? &cfg->web_allow_remote
							    : &cfg->web_public_status) < 0)
			fail(c, c->line, -EINVAL, "key '%s': '%s' is not a boolean (true or false)",
			     key, v);
		return;
	case CK_BLOCK_SIZE:
		if (parse_size(v, &u) < 0) {
			fail(c, c->line, -EINVAL, "key 'block_size': '%s' is not a size (e.g. 64K)", v);
			return;
		}
		if (!resync_block_size_valid(u)) {
			fail(c, c->line, -EINVAL,
			     "key 'block_size': '%s' is not a power of two from 4K to 1M", v);
			return;
		}
		cfg->block_size = u;
		return;
	case CK_MAX_RATE:
		if (parse_size(v, &u) < 0) {
			fail(c, c->line, -EINVAL,
			     "key 'max_rate': '%s' is not a rate in bytes per second (e.g. 100M; "
			     "0 = unlimited)",
			     v);
			return;
		}
		cfg->max_rate = u;
		return;
	case CK_SESSION_TIMEOUT:
		if (parse_duration(v, &u) < 0 || u < CONFIG_SESSION_TIMEOUT_MIN_MS * 1000ull ||
		    u > CONFIG_SESSION_TIMEOUT_MAX_MS * 1000ull) {
			fail(c, c->line, -EINVAL,
			     "key 'session_timeout': '%s' is not a duration from 1s to 1d (e.g. 120s, "
			     "5m)",
			     v);
			return;
		}
		cfg->session_timeout_ms = (unsigned)(u / 1000);
		return;
	case CK_VERIFY_INTERVAL:
	case CK_ALERT_AFTER:
		/* 0 (or "off") turns either off; otherwise 1s to 365d. */
		if (!strcmp(v, "off")) {
			u = 0;
		} else if (parse_duration(v, &u) < 0 ||
			   (u && (u < 1000000ull || u > CONFIG_DRIFT_DURATION_MAX_S * 1000000ull))) {
			fail(c, c->line, -EINVAL,
			     "key '%s': '%s' is not a duration from 1s to 365d, or 0 or off (e.g. 7d, "
			     "10m)",
			     key, v);
			return;
		}
		if (k == CK_VERIFY_INTERVAL)
			cfg->verify_interval_ms = u / 1000;
		else
			cfg->alert_after_ms = u / 1000;
		return;
	case CK_VERIFY_MAX_RATE:
		if (parse_size(v, &u) < 0) {
			fail(c, c->line, -EINVAL,
			     "key 'verify_max_rate': '%s' is not a rate in bytes per second (e.g. 50M; "
			     "0 = unlimited)",
			     v);
			return;
		}
		cfg->verify_max_rate = u;
		return;
	case CK_FENCE:
		if (!strcmp(v, "short") || !strcmp(v, "whole"))
			cfg->fence = !strcmp(v, "whole") ? CONFIG_FENCE_WHOLE : CONFIG_FENCE_SHORT;
		else
			fail(c, c->line, -EINVAL, "key 'fence': '%s' is not 'short' or 'whole'", v);
		return;
	case CK_FENCE_MAX:
		if (parse_duration(v, &u) < 0 || u < CONFIG_FENCE_MAX_MIN_MS * 1000ull ||
		    u > CONFIG_FENCE_MAX_MAX_MS * 1000ull) {
			fail(c, c->line, -EINVAL,
			     "key 'fence_max': '%s' is not a duration from 100ms to 1h (e.g. 5s)", v);
			return;
		}
		cfg->fence_max_ms = (unsigned)(u / 1000);
		return;
	case CK_FINAL_PASS_BYTES:
		if (parse_size(v, &u) < 0) {
			fail(c, c->line, -EINVAL, "key 'final_pass_bytes': '%s' is not a size (e.g. 64M)",
			     v);
			return;
		}
		cfg->final_pass_bytes = u;
		return;
	case CK_FUSE_RT_PRIORITY: {
		char *end;
		unsigned long l;

		errno = 0;
		l = strtoul(v, &end, 10);
		if (errno || end == v || *end || v[0] == '-' || l > 99) {
			fail(c, c->line, -EINVAL,
			     "key 'fuse_rt_priority': '%s' is not a number from 0 (normal scheduling) "
			     "to 99", v);
			return;
		}
		cfg->fuse_rt_priority = (unsigned)l;
		return;
	}
	case CK_MAX_PASSES: {
		char *end;
		unsigned long l;

		errno = 0;
		l = strtoul(v, &end, 10);
		if (errno || end == v || *end || v[0] == '-' || l < 1 || l > CONFIG_MAX_PASSES_MAX) {
			fail(c, c->line, -EINVAL, "key 'max_passes': '%s' is not a number from 1 to %d",
			     v, CONFIG_MAX_PASSES_MAX);
			return;
		}
		cfg->max_passes = (unsigned)l;
		return;
	}
	case CK_INSECURE:
		if (parse_bool(v, &cfg->insecure) < 0)
			fail(c, c->line, -EINVAL, "key '%s': '%s' is not a boolean (true or false)",
			     key, v);
		return;
	case CK_UNDO: {
		/* off | diverged | on; the booleans of earlier versions too. */
		bool b;

		if (!strcasecmp(v, "diverged"))
			cfg->undo = CONFIG_UNDO_DIVERGED;
		else if (parse_bool(v, &b) == 0)
			cfg->undo = b ? CONFIG_UNDO_ON : CONFIG_UNDO_OFF;
		else
			fail(c, c->line, -EINVAL, "key 'undo': '%s' is not off, diverged or on", v);
		return;
	}
	case CK_UNDO_KEEP:
		if (parse_duration(v, &u) < 0 || u < 1000000ull ||
		    u > CONFIG_DRIFT_DURATION_MAX_S * 1000000ull) {
			fail(c, c->line, -EINVAL,
			     "key 'undo_keep': '%s' is not a duration from 1s to 365d (e.g. 7d)", v);
			return;
		}
		cfg->undo_keep_s = u / 1000000;
		return;
	case CK_UNDO_MAX_BYTES: {
		/* A size, or a percentage of the volume ("10%"). */
		size_t l = strlen(v);
		char *end;
		unsigned long pc;

		if (l > 1 && v[l - 1] == '%') {
			errno = 0;
			pc = strtoul(v, &end, 10);
			if (errno || end != v + l - 1 || pc < 1 || pc > 100) {
				fail(c, c->line, -EINVAL,
				     "key 'undo_max_bytes': '%s' is not a percentage from 1%% to 100%%", v);
				return;
			}
			cfg->undo_max_percent = (unsigned)pc;
			cfg->undo_max_bytes = 0;
			return;
		}
		if (parse_size(v, &u) < 0 || u == 0) {
			fail(c, c->line, -EINVAL,
			     "key 'undo_max_bytes': '%s' is not a size (e.g. 1G) or a percentage of "
			     "the volume (e.g. 10%%)",
			     v);
			return;
		}
		cfg->undo_max_bytes = u;
		return;
	}
	case CK_COMPRESS_LEVEL: {
		char *end;
		long l;

		errno = 0;
		l = strtol(v, &end, 10);
		if (errno || *end || end == v || l < COMPRESS_LEVEL_MIN || l > ZSTD_maxCLevel() ||
		    l == 0) {
			fail(c, c->line, -EINVAL,
			     "key 'compress_level': '%s' is not a zstd level from %d to %d "
			     "(not 0)",
			     v, COMPRESS_LEVEL_MIN, ZSTD_maxCLevel());
			return;
		}
		cfg->compress_level = l;
		return;
	}
	case CK_NOTIFY_EMAIL:
	case CK_NOTIFY_FROM: {
		/* One or more addresses, separated by commas. */
		_cleanup_free_ char *copy = strdup(v);
		char *save = NULL, *tok;
		unsigned n = 0;

		if (!copy) {
			fail(c, c->line, -ENOMEM, "out of memory");
			return;
		}
		for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
			char *at;

			while (*tok == ' ')
				tok++;
			for (char *e = tok + strlen(tok); e > tok && e[-1] == ' ';)
				*--e = 0;
			at = strchr(tok, '@');
			if (!at || at == tok || !at[1] || strchr(at + 1, '@') || strchr(tok, ' ')) {
				fail(c, c->line, -EINVAL, "key '%s': '%s' is not an email address",
				     key, tok);
				return;
			}
			n++;
		}
		if (n == 0 || (k == CK_NOTIFY_FROM && n != 1)) {
			fail(c, c->line, -EINVAL, "key '%s': '%s' is not %s", key, v,
			     k == CK_NOTIFY_FROM ? "one email address"
						 : "a list of email addresses");
			return;
		}
		set_string(c, k == CK_NOTIFY_EMAIL ? &cfg->notify_email : &cfg->notify_from, v);
		return;
	}
	case CK_SMTP_URL:
		url_with(c, key, v, smtp, 2, &cfg->smtp_url);
		return;
	case CK_NOTIFY_WEBHOOK:
		url_with(c, key, v, http, 2, &cfg->notify_webhook);
		return;
	case CK_SMTP_USER:
		set_string(c, &cfg->smtp_user, v);
		return;
	case CK_NOTIFY_COMMAND:
		set_string(c, &cfg->notify_command, v);
		return;
	case CK_COMPRESS_ADAPT:
		if (parse_bool(v, &cfg->compress_adapt) < 0)
			fail(c, c->line, -EINVAL,
			     "key 'compress_adapt': '%s' is not a boolean (true or false)", v);
		return;
	case CK_PROOF:
		if (parse_bool(v, &cfg->proof) < 0)
			fail(c, c->line, -EINVAL, "key 'proof': '%s' is not a boolean (true or false)", v);
		return;
	case CK_PROOF_HASH:
		if (!strcmp(v, "xxh3") || !strcmp(v, "sha256"))
			cfg->proof_hash = !strcmp(v, "sha256") ? CONFIG_PROOF_SHA256 : CONFIG_PROOF_XXH3;
		else
			fail(c, c->line, -EINVAL, "key 'proof_hash': '%s' is not 'xxh3' or 'sha256'", v);
		return;
	case CK_DELTA:
		if (config_delta_parse(v, &cfg->delta) < 0)
			fail(c, c->line, -EINVAL,
			     "key 'delta': '%s' is not 'auto', 'aligned' or 'rolling'", v);
		return;
	case CK_BEFORE_RESYNC_COMMAND:
		set_string(c, &cfg->before_resync_command, v);
		return;
	case CK_BEFORE_RESYNC_TIMEOUT:
		if (parse_duration(v, &u) < 0 || u < 1000000ull || u > 3600ull * 1000000) {
			fail(c, c->line, -EINVAL,
			     "key 'before_resync_timeout': '%s' is not a duration from 1s to 1h (e.g. 60s)",
			     v);
			return;
		}
		cfg->before_resync_timeout_ms = (unsigned)(u / 1000);
		return;
	case CK_COUNT:
		break;
	}
}

static void node_key(struct parse_ctx *c, const char *key, const char *v)
{
	struct node_config *n = &c->cfg->nodes[c->cfg->n_nodes - 1];
	struct node_lines *lines = &c->node_lines[c->cfg->n_nodes - 1];
	_cleanup_free_ char *host = NULL;
	uint16_t port;
	int k;

	for (k = 0; k < NK_COUNT; k++)
		if (!strcmp(key, node_keys[k]))
			break;
	if (k == NK_COUNT) {
		fail(c, c->line, -EINVAL, "unknown key '%s' in section [node %s]", key, n->name);
		return;
	}
	if (key_seen(c, &lines->key[k], key))
		return;
	switch ((enum node_key)k) {
	case NK_ADDRESS:
	case NK_METRICS:
	case NK_WEB:
		if (config_address_parse(v, &host, &port) < 0) {
			fail(c, c->line, -EINVAL,
			     "key '%s': '%s' is not HOST:PORT (a port from 1 to 65535; "
			     "[ADDRESS]:PORT for IPv6)",
			     key, v);
			return;
		}
		if (k == NK_ADDRESS) {
			if (set_string(c, &n->address, v) < 0)
				return;
			n->host = TAKE_PTR(host);
			n->port = port;
		} else {
			set_string(c, k == NK_METRICS ? &n->metrics : &n->web, v);
		}
		return;
	case NK_VOLUME:
		absolute_path(c, key, v, &n->volume);
		return;
	case NK_MOUNT:
		absolute_path(c, key, v, &n->mount);
		return;
	case NK_CONTROL:
		absolute_path(c, key, v, &n->control);
		return;
	case NK_COUNT:
		break;
	}
}

static int handler(void *user, const char *section, const char *key, const char *value)
{
	struct parse_ctx *c = user;

	if (c->error)
		return 1;
	if (!*value) {
		fail(c, c->line, -EINVAL, "key '%s' has no value", key);
		return 1;
	}
	switch (c->sec) {
	case SEC_NONE:
		fail(c, c->line, -EINVAL, "key '%s' outside a section ([cluster] or [node NAME])",
		     key);
		break;
	case SEC_CLUSTER:
		cluster_key(c, key, value);
		break;
	case SEC_NODE:
		node_key(c, key, value);
		break;
	case SEC_ETCD: {
		char msg[512];
		int r = config_etcd_key(c->cfg->etcd, c->line, key, value, msg, sizeof(msg));

		if (r < 0)
			fail(c, c->line, r, "%s", msg);
		break;
	}
	case SEC_BAD:
		break; /* already reported */
	}
	return 1;
}

static void config_validate(struct parse_ctx *c)
{
	struct cluster_config *cfg = c->cfg;

	if (!c->cluster_line) {
		fail(c, 0, -EINVAL, "no [cluster] section");
		return;
	}
	if (!cfg->name) {
		fail(c, c->cluster_line, -EINVAL, "section [cluster]: missing key 'name'");
		return;
	}
	if (!cfg->secret_file && !cfg->insecure) {
		fail(c, c->cluster_line, -EINVAL,
		     "section [cluster]: missing key 'secret_file' (peers authenticate with it; "
		     "only a test cluster may say insecure = true instead)");
		return;
	}
	if (cfg->n_nodes == 0) {
		fail(c, 0, -EINVAL, "no [node NAME] section");
		return;
	}
	for (size_t i = 0; i < cfg->n_nodes; i++) {
		struct node_config *n = &cfg->nodes[i];

		if (!n->address) {
			fail(c, n->line, -EINVAL, "section [node %s]: missing key 'address'",
			     n->name);
			return;
		}
		if (!n->volume) {
			fail(c, n->line, -EINVAL, "section [node %s]: missing key 'volume'",
			     n->name);
			return;
		}
		for (size_t j = 0; j < i; j++) {
			struct node_config *o = &cfg->nodes[j];

			if (o->port == n->port && !strcasecmp(o->host, n->host)) {
				fail(c, c->node_lines[i].key[NK_ADDRESS], -EINVAL,
				     "key 'address': '%s' is already the address of node '%s' "
				     "(line %u)",
				     n->address, o->name, c->node_lines[j].key[NK_ADDRESS]);
				return;
			}
		}
	}
	if (cfg->etcd) {
		char msg[512];
		int r;

		if (cfg->primary) {
			fail(c, c->cluster_key[CK_PRIMARY], -EINVAL,
			     "key 'primary': the primary comes from etcd's leader key when there "
			     "is an [etcd] section (line %u); remove 'primary'",
			     cfg->etcd->line);
			/* With [etcd], cluster_config_free() leaves primary alone. */
			free(cfg->primary);
			cfg->primary = NULL;
			return;
		}
		r = config_etcd_finish(cfg, msg, sizeof(msg));
		if (r < 0) {
			fail(c, cfg->etcd->line, r, "%s", msg);
			return;
		}
	}
	if (cfg->primary && !cluster_config_node(cfg, cfg->primary)) {
		fail(c, c->cluster_key[CK_PRIMARY], -EINVAL,
		     "key 'primary': no section [node %s] in this file", cfg->primary);
		return;
	}
}

int cluster_config_parse(const char *name, const char *text, char *err, size_t errlen,
			 struct cluster_config **ret)
{
	struct parse_ctx c = {
		.file = name,
		.err = err,
		.errlen = errlen,
		.text = text,
		.len = strlen(text),
	};
	int r;

	if (errlen)
		err[0] = 0;
	c.cfg = calloc(1, sizeof(*c.cfg));
	if (!c.cfg)
		return -ENOMEM;
	c.cfg->block_size = RESYNC_BLOCK_DEFAULT;
	c.cfg->compress_level = 1;
	c.cfg->compress_adapt = true;
	c.cfg->fuse_rt_priority = CONFIG_FUSE_RT_PRIORITY_DEFAULT;
	c.cfg->session_timeout_ms = CONFIG_SESSION_TIMEOUT_DEFAULT_MS;
	c.cfg->alert_after_ms = CONFIG_ALERT_AFTER_DEFAULT_MS;
	c.cfg->fence_max_ms = CONFIG_FENCE_MAX_DEFAULT_MS;
	c.cfg->final_pass_bytes = CONFIG_FINAL_PASS_BYTES_DEFAULT;
	/* On: its leaves come from the compare's reads, so that under the
	 * fence only the blocks written since are hashed (resync.conf(5)). */
	c.cfg->proof = true;
	c.cfg->before_resync_timeout_ms = CONFIG_BEFORE_RESYNC_TIMEOUT_DEFAULT_MS;
	c.cfg->max_passes = CONFIG_MAX_PASSES_DEFAULT;
	c.cfg->undo = CONFIG_UNDO_DIVERGED;
	c.cfg->undo_keep_s = CONFIG_UNDO_KEEP_DEFAULT_S;
	c.cfg->undo_max_percent = CONFIG_UNDO_MAX_PERCENT_DEFAULT;
	c.cfg->path = strdup(name);
	if (!c.cfg->path)
		fail(&c, 0, -ENOMEM, "out of memory");

	r = ini_parse_stream(reader, &c, handler, &c);
	if (r > 0)
		fail(&c, r, -EINVAL, "syntax error (expected [section] or key = value)");
	else if (r < 0)
		fail(&c, 0, -ENOMEM, "out of memory");
	if (!c.error)
		config_validate(&c);
	free(c.node_lines);
	if (c.error) {
		cluster_config_free(c.cfg);
		return c.error;
	}
	*ret = c.cfg;
	return 0;
}

int cluster_config_load(const char *path, char *err, size_t errlen, struct cluster_config **ret)
{
	_cleanup_free_ char *text = NULL;
	_cleanup_close_ int fd = -1;
	size_t len;
	ssize_t n;
	struct stat st;

	if (errlen)
		err[0] = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		int e = errno;

		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(e));
		return -e;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > CONFIG_FILE_MAX) {
		snprintf(err, errlen, "%s: not a regular file of at most 1 MiB", path);
		return -EINVAL;
	}
	text = malloc(st.st_size + 1);
	if (!text)
		return -ENOMEM;
	n = fd_read_all(fd, text, (size_t)st.st_size);
	if (n < 0) {
		snprintf(err, errlen, "%s: cannot read: %s", path, strerror((int)-n));
		return (int)n;
	}
	len = (size_t)n;
	text[len] = 0;
	if (strlen(text) != len) {
		snprintf(err, errlen, "%s: contains a NUL byte", path);
		return -EINVAL;
	}
	return cluster_config_parse(path, text, err, errlen, ret);
}

void cluster_config_free(struct cluster_config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < cfg->n_nodes; i++) {
		struct node_config *n = &cfg->nodes[i];

		free(n->name);
		free(n->address);
		free(n->host);
		free(n->volume);
		free(n->mount);
		free(n->control);
		free(n->metrics);
		free(n->web);
	}
	free(cfg->nodes);
	free(cfg->path);
	free(cfg->name);
	/* With etcd, primary points at a node's name (resyncd sets it). */
	if (!cfg->etcd)
		free(cfg->primary);
	config_etcd_free(cfg->etcd);
	free(cfg->secret_file);
	free(cfg->notify_email);
	free(cfg->smtp_url);
	free(cfg->smtp_user);
	free(cfg->smtp_password_file);
	free(cfg->notify_from);
	free(cfg->notify_webhook);
	free(cfg->notify_command);
	free(cfg->before_resync_command);
	free(cfg->web_token_file);
	free(cfg);
}

const struct node_config *cluster_config_node(const struct cluster_config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->n_nodes; i++)
		if (!strcmp(cfg->nodes[i].name, name))
			return &cfg->nodes[i];
	return NULL;
}

const struct node_config *cluster_config_primary(const struct cluster_config *cfg)
{
	const char *p = cluster_config_primary_name(cfg);

	return p ? cluster_config_node(cfg, p) : NULL;
}
