/* The cluster file, read with inih. inih splits "key = value" lines and
 * strips comments; a line reader in front of it counts lines (so every
 * message names one), tracks section headers itself (inih's section names
 * are truncated at 50 bytes and empty sections are invisible to it), drops
 * leading whitespace (an indented key is not a continuation line here) and
 * refuses lines longer than inih's buffer instead of letting it split them.
 *
 * Here: the reader, sections, the checks of the whole file, the model's
 * lifecycle and look-ups; each key's parser is config-keys.c's. */
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "resync/config.h"
#include "resync/fileio.h"
#include "resync/limits.h"
#include "resync/macro.h"
#include "resync/parse.h"
#include "config-int.h"

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

void config_fail(struct parse_ctx *c, unsigned line, int error, const char *fmt, ...)
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

/* [node NAME]: s (len bytes) is what follows "node". A new node in the
 * model, or the parse fails. */
static void section_node(struct parse_ctx *c, const char *s, size_t len)
{
	struct cluster_config *cfg = c->cfg;
	char name[RESYNC_NAME_MAX + 1];
	struct node_config *n;
	size_t nl;

	while (len && (*s == ' ' || *s == '\t'))
		s++, len--;
	if (!len) {
		config_fail(c, c->line, -EINVAL, "section [node] needs a name: [node NAME]");
		return;
	}
	if (!config_name_valid(s, len)) {
		config_fail(c, c->line, -EINVAL,
			    "section [node %.*s]: '%.*s' is not a valid node name (%s)",
			    (int)MIN(len, 80), s, (int)MIN(len, 80), s, CONFIG_NAME_RULE);
		return;
	}
	memcpy(name, s, len);
	name[len] = 0;
	nl = len;
	for (size_t i = 0; i < cfg->n_nodes; i++)
		if (strlen(cfg->nodes[i].name) == nl && !memcmp(cfg->nodes[i].name, name, nl)) {
			config_fail(c, c->line, -EINVAL,
				    "duplicate section [node %s] (first at line %u)", name,
				    cfg->nodes[i].line);
			return;
		}
	if (cfg->n_nodes == c->cap_nodes) {
		size_t cap = c->cap_nodes ? 2 * c->cap_nodes : 4;
		struct node_config *nn = realloc(cfg->nodes, cap * sizeof(*nn));
		struct node_lines *lines;

		if (!nn) {
			config_fail(c, c->line, -ENOMEM, "out of memory");
			return;
		}
		cfg->nodes = nn;
		lines = realloc(c->node_lines, cap * sizeof(*lines));
		if (!lines) {
			config_fail(c, c->line, -ENOMEM, "out of memory");
			return;
		}
		c->node_lines = lines;
		c->cap_nodes = cap;
	}
	n = &cfg->nodes[cfg->n_nodes];
	*n = (struct node_config){.name = strdup(name), .line = c->line};
	c->node_lines[cfg->n_nodes] = (struct node_lines){{0}};
	if (!n->name) {
		config_fail(c, c->line, -ENOMEM, "out of memory");
		return;
	}
	cfg->n_nodes++;
	c->sec = SEC_NODE;
}

/* A section header's name, s (len bytes, between the brackets). */
static void section_begin(struct parse_ctx *c, const char *s, size_t len)
{
	struct cluster_config *cfg = c->cfg;

	while (len && (*s == ' ' || *s == '\t'))
		s++, len--;
	while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	c->sec = SEC_BAD;
	if (len == 7 && !memcmp(s, "cluster", 7)) {
		if (c->cluster_line) {
			config_fail(c, c->line, -EINVAL,
				    "duplicate section [cluster] (first at line %u)",
				    c->cluster_line);
			return;
		}
		c->cluster_line = c->line;
		c->sec = SEC_CLUSTER;
		return;
	}
	if (len == 4 && !memcmp(s, "etcd", 4)) {
		if (cfg->etcd) {
			config_fail(c, c->line, -EINVAL,
				    "duplicate section [etcd] (first at line %u)", cfg->etcd->line);
			return;
		}
		cfg->etcd = calloc(1, sizeof(*cfg->etcd));
		if (!cfg->etcd) {
			config_fail(c, c->line, -ENOMEM, "out of memory");
			return;
		}
		cfg->etcd->line = c->line;
		c->sec = SEC_ETCD;
		return;
	}
	if (len < 4 || memcmp(s, "node", 4) || (len > 4 && s[4] != ' ' && s[4] != '\t')) {
		config_fail(c, c->line, -EINVAL, "unknown section [%.*s]", (int)MIN(len, 80), s);
		return;
	}
	section_node(c, s + 4, len - 4);
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
		config_fail(c, c->line, -EINVAL, "line longer than %d bytes", num - 3);
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

static int handler(void *user, const char *section, const char *key, const char *value)
{
	struct parse_ctx *c = user;

	if (c->error)
		return 1;
	if (!*value) {
		config_fail(c, c->line, -EINVAL, "key '%s' has no value", key);
		return 1;
	}
	switch (c->sec) {
	case SEC_NONE:
		config_fail(c, c->line, -EINVAL,
			    "key '%s' outside a section ([cluster] or [node NAME])", key);
		break;
	case SEC_CLUSTER:
		config_cluster_key(c, key, value);
		break;
	case SEC_NODE:
		config_node_key(c, key, value);
		break;
	case SEC_ETCD: {
		char msg[512];
		int r = config_etcd_key(c->cfg->etcd, c->line, key, value, msg, sizeof(msg));

		if (r < 0)
			config_fail(c, c->line, r, "%s", msg);
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
		config_fail(c, 0, -EINVAL, "no [cluster] section");
		return;
	}
	if (!cfg->name) {
		config_fail(c, c->cluster_line, -EINVAL, "section [cluster]: missing key 'name'");
		return;
	}
	if (!cfg->secret_file && !cfg->insecure) {
		config_fail(c, c->cluster_line, -EINVAL,
			    "section [cluster]: missing key 'secret_file' (peers authenticate with it; "
			    "only a test cluster may say insecure = true instead)");
		return;
	}
	if (cfg->n_nodes == 0) {
		config_fail(c, 0, -EINVAL, "no [node NAME] section");
		return;
	}
	for (size_t i = 0; i < cfg->n_nodes; i++) {
		struct node_config *n = &cfg->nodes[i];

		if (!n->address) {
			config_fail(c, n->line, -EINVAL, "section [node %s]: missing key 'address'",
				    n->name);
			return;
		}
		if (!n->volume) {
			config_fail(c, n->line, -EINVAL, "section [node %s]: missing key 'volume'",
				    n->name);
			return;
		}
		for (size_t j = 0; j < i; j++) {
			struct node_config *o = &cfg->nodes[j];

			if (o->port == n->port && !strcasecmp(o->host, n->host)) {
				config_fail(c, c->node_lines[i].key[NK_ADDRESS], -EINVAL,
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
			config_fail(c, c->cluster_key[CK_PRIMARY], -EINVAL,
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
			config_fail(c, cfg->etcd->line, r, "%s", msg);
			return;
		}
	}
	if (cfg->primary && !cluster_config_node(cfg, cfg->primary)) {
		config_fail(c, c->cluster_key[CK_PRIMARY], -EINVAL,
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
		config_fail(&c, 0, -ENOMEM, "out of memory");

	r = ini_parse_stream(reader, &c, handler, &c);
	if (r > 0)
		config_fail(&c, r, -EINVAL, "syntax error (expected [section] or key = value)");
	else if (r < 0)
		config_fail(&c, 0, -ENOMEM, "out of memory");
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
