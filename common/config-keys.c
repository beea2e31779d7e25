/* The cluster file's keys (config-int.h): the tables of [cluster] and
 * [node NAME], and each key's parser and check (names, absolute paths,
 * URLs, email addresses, booleans and words, sizes, durations, numbers,
 * addresses), each refusal naming the key, the value and what it must be.
 * The [etcd] section's keys are config-etcd.c's. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zstd.h>

#include "resync/config.h"
#include "resync/limits.h"
#include "resync/macro.h"
#include "resync/parse.h"
#include "config-int.h"

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

static const char *const node_keys[NK_COUNT] = {
	[NK_ADDRESS] = "address", [NK_VOLUME] = "volume",   [NK_MOUNT] = "mount",
	[NK_CONTROL] = "control", [NK_METRICS] = "metrics", [NK_WEB] = "web",
};

static int set_string(struct parse_ctx *c, char **field, const char *value)
{
	char *s = strdup(value);

	if (!s) {
		config_fail(c, c->line, -ENOMEM, "out of memory");
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
		config_fail(c, c->line, -EINVAL, "key '%s' given twice (first at line %u)", key,
			    *line);
		return true;
	}
	*line = c->line;
	return false;
}

static int absolute_path(struct parse_ctx *c, const char *key, const char *v, char **field)
{
	if (v[0] != '/') {
		config_fail(c, c->line, -EINVAL, "key '%s': '%s' is not an absolute path", key, v);
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
	config_fail(c, c->line, -EINVAL, "key '%s': '%s' is not a %s or %s URL", key, v, schemes[0],
		    schemes[1]);
	return -EINVAL;
}

/* Names, paths, URLs and commands. Returns whether k is one of them (handled). */
static bool cluster_key_text(struct parse_ctx *c, enum cluster_key k, const char *key,
			     const char *v)
{
	static const char *const smtp[] = {"smtp://", "smtps://"};
	static const char *const http[] = {"http://", "https://"};
	struct cluster_config *cfg = c->cfg;

	switch (k) {
	case CK_NAME:
		if (!config_name_valid(v, strlen(v))) {
			config_fail(c, c->line, -EINVAL,
				    "key 'name': '%s' is not a valid cluster name (%s)", v,
				    CONFIG_NAME_RULE);
			return true;
		}
		set_string(c, &cfg->name, v);
		return true;
	case CK_PRIMARY:
		if (!config_name_valid(v, strlen(v))) {
			config_fail(c, c->line, -EINVAL,
				    "key 'primary': '%s' is not a valid node name (%s)", v,
				    CONFIG_NAME_RULE);
			return true;
		}
		set_string(c, &cfg->primary, v);
		return true;
	case CK_SECRET_FILE:
		absolute_path(c, key, v, &cfg->secret_file);
		return true;
	case CK_SMTP_PASSWORD_FILE:
		absolute_path(c, key, v, &cfg->smtp_password_file);
		return true;
	case CK_WEB_TOKEN_FILE:
		absolute_path(c, key, v, &cfg->web_token_file);
		return true;
	case CK_SMTP_URL:
		url_with(c, key, v, smtp, 2, &cfg->smtp_url);
		return true;
	case CK_NOTIFY_WEBHOOK:
		url_with(c, key, v, http, 2, &cfg->notify_webhook);
		return true;
	case CK_SMTP_USER:
		set_string(c, &cfg->smtp_user, v);
		return true;
	case CK_NOTIFY_COMMAND:
		set_string(c, &cfg->notify_command, v);
		return true;
	case CK_BEFORE_RESYNC_COMMAND:
		set_string(c, &cfg->before_resync_command, v);
		return true;
	default:
		return false;
	}
}

/* Email addresses. Returns whether k is one of them (handled). */
static bool cluster_key_email(struct parse_ctx *c, enum cluster_key k, const char *key,
			      const char *v)
{
	struct cluster_config *cfg = c->cfg;

	switch (k) {
	case CK_NOTIFY_EMAIL:
	case CK_NOTIFY_FROM: {
		/* One or more addresses, separated by commas. */
		_cleanup_free_ char *copy = strdup(v);
		char *save = NULL, *tok;
		unsigned n = 0;

		if (!copy) {
			config_fail(c, c->line, -ENOMEM, "out of memory");
			return true;
		}
		for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
			char *at;

			while (*tok == ' ')
				tok++;
			for (char *e = tok + strlen(tok); e > tok && e[-1] == ' ';)
				*--e = 0;
			at = strchr(tok, '@');
			if (!at || at == tok || !at[1] || strchr(at + 1, '@') || strchr(tok, ' ')) {
				config_fail(c, c->line, -EINVAL,
					    "key '%s': '%s' is not an email address", key, tok);
				return true;
			}
			n++;
		}
		if (n == 0 || (k == CK_NOTIFY_FROM && n != 1)) {
			config_fail(c, c->line, -EINVAL, "key '%s': '%s' is not %s", key, v,
				    k == CK_NOTIFY_FROM ? "one email address"
						 : "a list of email addresses");
			return true;
		}
		set_string(c, k == CK_NOTIFY_EMAIL ? &cfg->notify_email : &cfg->notify_from, v);
		return true;
	}
	default:
		return false;
	}
}

/* Booleans and words. Returns whether k is one of them (handled). */
static bool cluster_key_choice(struct parse_ctx *c, enum cluster_key k, const char *key,
			       const char *v)
{
	struct cluster_config *cfg = c->cfg;

	switch (k) {
	case CK_WEB_ALLOW_REMOTE:
	case CK_WEB_PUBLIC_STATUS:
		if (parse_bool(v, k == CK_WEB_ALLOW_REMOTE ? &cfg->web_allow_remote
							    : &cfg->web_public_status) < 0)
			config_fail(c, c->line, -EINVAL,
				    "key '%s': '%s' is not a boolean (true or false)", key, v);
		return true;
	case CK_INSECURE:
		if (parse_bool(v, &cfg->insecure) < 0)
			config_fail(c, c->line, -EINVAL,
				    "key '%s': '%s' is not a boolean (true or false)", key, v);
		return true;
	case CK_COMPRESS_ADAPT:
		if (parse_bool(v, &cfg->compress_adapt) < 0)
			config_fail(c, c->line, -EINVAL,
				    "key 'compress_adapt': '%s' is not a boolean (true or false)",
				    v);
		return true;
	case CK_PROOF:
		if (parse_bool(v, &cfg->proof) < 0)
			config_fail(c, c->line, -EINVAL,
				    "key 'proof': '%s' is not a boolean (true or false)", v);
		return true;
	case CK_PROOF_HASH:
		if (!strcmp(v, "xxh3") || !strcmp(v, "sha256"))
			cfg->proof_hash = !strcmp(v, "sha256") ? CONFIG_PROOF_SHA256 : CONFIG_PROOF_XXH3;
		else
			config_fail(c, c->line, -EINVAL,
				    "key 'proof_hash': '%s' is not 'xxh3' or 'sha256'", v);
		return true;
	case CK_DELTA:
		if (config_delta_parse(v, &cfg->delta) < 0)
			config_fail(c, c->line, -EINVAL,
				    "key 'delta': '%s' is not 'auto', 'aligned' or 'rolling'", v);
		return true;
	case CK_FENCE:
		if (!strcmp(v, "short") || !strcmp(v, "whole"))
			cfg->fence = !strcmp(v, "whole") ? CONFIG_FENCE_WHOLE : CONFIG_FENCE_SHORT;
		else
			config_fail(c, c->line, -EINVAL,
				    "key 'fence': '%s' is not 'short' or 'whole'", v);
		return true;
	case CK_UNDO: {
		/* off | diverged | on; the booleans of earlier versions too. */
		bool b;

		if (!strcasecmp(v, "diverged"))
			cfg->undo = CONFIG_UNDO_DIVERGED;
		else if (parse_bool(v, &b) == 0)
			cfg->undo = b ? CONFIG_UNDO_ON : CONFIG_UNDO_OFF;
		else
			config_fail(c, c->line, -EINVAL,
				    "key 'undo': '%s' is not off, diverged or on", v);
		return true;
	}
	default:
		return false;
	}
}

/* undo_max_bytes: a size, or a percentage of the volume ("10%"). */
static void undo_max_bytes(struct parse_ctx *c, const char *v)
{
	struct cluster_config *cfg = c->cfg;
	size_t l = strlen(v);
	char *end;
	unsigned long pc;
	uint64_t u;

	if (l > 1 && v[l - 1] == '%') {
		errno = 0;
		pc = strtoul(v, &end, 10);
		if (errno || end != v + l - 1 || pc < 1 || pc > 100) {
			config_fail(c, c->line, -EINVAL,
				    "key 'undo_max_bytes': '%s' is not a percentage from 1%% to 100%%", v);
			return;
		}
		cfg->undo_max_percent = (unsigned)pc;
		cfg->undo_max_bytes = 0;
		return;
	}
	if (parse_size(v, &u) < 0 || u == 0) {
		config_fail(c, c->line, -EINVAL,
			    "key 'undo_max_bytes': '%s' is not a size (e.g. 1G) or a percentage of "
			    "the volume (e.g. 10%%)",
			    v);
		return;
	}
	cfg->undo_max_bytes = u;
}

/* Sizes and rates. Returns whether k is one of them (handled). */
static bool cluster_key_size(struct parse_ctx *c, enum cluster_key k, const char *key,
			     const char *v)
{
	struct cluster_config *cfg = c->cfg;
	uint64_t u;

	switch (k) {
	case CK_BLOCK_SIZE:
		if (parse_size(v, &u) < 0) {
			config_fail(c, c->line, -EINVAL,
				    "key 'block_size': '%s' is not a size (e.g. 64K)", v);
			return true;
		}
		if (!resync_block_size_valid(u)) {
			config_fail(c, c->line, -EINVAL,
				    "key 'block_size': '%s' is not a power of two from 4K to 1M",
				    v);
			return true;
		}
		cfg->block_size = u;
		return true;
	case CK_MAX_RATE:
		if (parse_size(v, &u) < 0) {
			config_fail(c, c->line, -EINVAL,
				    "key 'max_rate': '%s' is not a rate in bytes per second (e.g. 100M; "
				    "0 = unlimited)",
				    v);
			return true;
		}
		cfg->max_rate = u;
		return true;
	case CK_VERIFY_MAX_RATE:
		if (parse_size(v, &u) < 0) {
			config_fail(c, c->line, -EINVAL,
				    "key 'verify_max_rate': '%s' is not a rate in bytes per second (e.g. 50M; "
				    "0 = unlimited)",
				    v);
			return true;
		}
		cfg->verify_max_rate = u;
		return true;
	case CK_FINAL_PASS_BYTES:
		if (parse_size(v, &u) < 0) {
			config_fail(c, c->line, -EINVAL,
				    "key 'final_pass_bytes': '%s' is not a size (e.g. 64M)", v);
			return true;
		}
		cfg->final_pass_bytes = u;
		return true;
	case CK_UNDO_MAX_BYTES:
		undo_max_bytes(c, v);
		return true;
	default:
		return false;
	}
}

/* Durations. Returns whether k is one of them (handled). */
static bool cluster_key_duration(struct parse_ctx *c, enum cluster_key k, const char *key,
				 const char *v)
{
	struct cluster_config *cfg = c->cfg;
	uint64_t u;

	switch (k) {
	case CK_SESSION_TIMEOUT:
		if (parse_duration(v, &u) < 0 || u < CONFIG_SESSION_TIMEOUT_MIN_MS * 1000ull ||
		    u > CONFIG_SESSION_TIMEOUT_MAX_MS * 1000ull) {
			config_fail(c, c->line, -EINVAL,
				    "key 'session_timeout': '%s' is not a duration from 1s to 1d (e.g. 120s, "
				    "5m)",
				    v);
			return true;
		}
		cfg->session_timeout_ms = (unsigned)(u / 1000);
		return true;
	case CK_VERIFY_INTERVAL:
	case CK_ALERT_AFTER:
		/* 0 (or "off") turns either off; otherwise 1s to 365d. */
		if (!strcmp(v, "off")) {
			u = 0;
		} else if (parse_duration(v, &u) < 0 ||
			   (u && (u < 1000000ull || u > CONFIG_DRIFT_DURATION_MAX_S * 1000000ull))) {
			config_fail(c, c->line, -EINVAL,
				    "key '%s': '%s' is not a duration from 1s to 365d, or 0 or off (e.g. 7d, "
				    "10m)",
				    key, v);
			return true;
		}
		if (k == CK_VERIFY_INTERVAL)
			cfg->verify_interval_ms = u / 1000;
		else
			cfg->alert_after_ms = u / 1000;
		return true;
	case CK_FENCE_MAX:
		if (parse_duration(v, &u) < 0 || u < CONFIG_FENCE_MAX_MIN_MS * 1000ull ||
		    u > CONFIG_FENCE_MAX_MAX_MS * 1000ull) {
			config_fail(c, c->line, -EINVAL,
				    "key 'fence_max': '%s' is not a duration from 100ms to 1h (e.g. 5s)",
				    v);
			return true;
		}
		cfg->fence_max_ms = (unsigned)(u / 1000);
		return true;
	case CK_UNDO_KEEP:
		if (parse_duration(v, &u) < 0 || u < 1000000ull ||
		    u > CONFIG_DRIFT_DURATION_MAX_S * 1000000ull) {
			config_fail(c, c->line, -EINVAL,
				    "key 'undo_keep': '%s' is not a duration from 1s to 365d (e.g. 7d)",
				    v);
			return true;
		}
		cfg->undo_keep_s = u / 1000000;
		return true;
	case CK_BEFORE_RESYNC_TIMEOUT:
		if (parse_duration(v, &u) < 0 || u < 1000000ull || u > 3600ull * 1000000) {
			config_fail(c, c->line, -EINVAL,
				    "key 'before_resync_timeout': '%s' is not a duration from 1s to 1h (e.g. 60s)",
				    v);
			return true;
		}
		cfg->before_resync_timeout_ms = (unsigned)(u / 1000);
		return true;

	default:
		return false;
	}
}

/* Numbers. Returns whether k is one of them (handled). */
static bool cluster_key_number(struct parse_ctx *c, enum cluster_key k, const char *key,
			       const char *v)
{
	struct cluster_config *cfg = c->cfg;

	switch (k) {
	case CK_FUSE_RT_PRIORITY: {
		char *end;
		unsigned long l;

		errno = 0;
		l = strtoul(v, &end, 10);
		if (errno || end == v || *end || v[0] == '-' || l > 99) {
			config_fail(c, c->line, -EINVAL,
				    "key 'fuse_rt_priority': '%s' is not a number from 0 (normal scheduling) "
				    "to 99",
				    v);
			return true;
		}
		cfg->fuse_rt_priority = (unsigned)l;
		return true;
	}
	case CK_MAX_PASSES: {
		char *end;
		unsigned long l;

		errno = 0;
		l = strtoul(v, &end, 10);
		if (errno || end == v || *end || v[0] == '-' || l < 1 || l > CONFIG_MAX_PASSES_MAX) {
			config_fail(c, c->line, -EINVAL,
				    "key 'max_passes': '%s' is not a number from 1 to %d", v,
				    CONFIG_MAX_PASSES_MAX);
			return true;
		}
		cfg->max_passes = (unsigned)l;
		return true;
	}
	case CK_COMPRESS_LEVEL: {
		char *end;
		long l;

		errno = 0;
		l = strtol(v, &end, 10);
		if (errno || *end || end == v || l < COMPRESS_LEVEL_MIN || l > ZSTD_maxCLevel() ||
		    l == 0) {
			config_fail(c, c->line, -EINVAL,
				    "key 'compress_level': '%s' is not a zstd level from %d to %d "
				    "(not 0)",
				    v, COMPRESS_LEVEL_MIN, ZSTD_maxCLevel());
			return true;
		}
		cfg->compress_level = l;
		return true;
	}
	default:
		return false;
	}
}

void config_cluster_key(struct parse_ctx *c, const char *key, const char *v)
{
	int k;

	for (k = 0; k < CK_COUNT; k++)
		if (!strcmp(key, cluster_keys[k]))
			break;
	if (k == CK_COUNT) {
		config_fail(c, c->line, -EINVAL, "unknown key '%s' in section [cluster]", key);
		return;
	}
	if (key_seen(c, &c->cluster_key[k], key))
		return;
	if (!cluster_key_text(c, k, key, v) && !cluster_key_email(c, k, key, v) &&
	    !cluster_key_choice(c, k, key, v) && !cluster_key_size(c, k, key, v) &&
	    !cluster_key_duration(c, k, key, v))
		cluster_key_number(c, k, key, v);
}

void config_node_key(struct parse_ctx *c, const char *key, const char *v)
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
		config_fail(c, c->line, -EINVAL, "unknown key '%s' in section [node %s]", key,
			    n->name);
		return;
	}
	if (key_seen(c, &lines->key[k], key))
		return;
	switch ((enum node_key)k) {
	case NK_ADDRESS:
	case NK_METRICS:
	case NK_WEB:
		if (config_address_parse(v, &host, &port) < 0) {
			config_fail(c, c->line, -EINVAL,
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
