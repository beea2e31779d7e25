/* Fuzz target for the cluster file: the input is the file's text (up to
 * its first NUL, which cluster_config_load() refuses). Checked:
 *   - a refusal is -EINVAL (or -ENOMEM) with a one-line message that
 *     names the file, and the same refusal with a short or no message
 *     buffer; *ret is untouched;
 *   - an accepted file says what the loader promises (config.h): valid
 *     unique names, every node with an address that parses back to its
 *     host and port and a volume, unique addresses, an existing primary,
 *     a secret or insecure, values in their ranges;
 *   - the accepted config, written out again as a cluster file, parses to
 *     the same values. */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fuzz.h"
#include "resync/config.h"
#include "resync/limits.h"

#define NAME "fuzz.conf"

static bool str_eq(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

static void check_valid(const struct cluster_config *cfg)
{
	FUZZ_CHECK(cfg->name && config_name_valid(cfg->name, strlen(cfg->name)));
	FUZZ_CHECK(!strcmp(cfg->path, NAME));
	FUZZ_CHECK(cfg->secret_file || cfg->insecure);
	FUZZ_CHECK(!cfg->secret_file || cfg->secret_file[0] == '/');
	FUZZ_CHECK(!cfg->smtp_password_file || cfg->smtp_password_file[0] == '/');
	FUZZ_CHECK(resync_block_size_valid(cfg->block_size));
	FUZZ_CHECK(cfg->compress_level != 0);
	FUZZ_CHECK(cfg->session_timeout_ms >= CONFIG_SESSION_TIMEOUT_MIN_MS &&
		   cfg->session_timeout_ms <= CONFIG_SESSION_TIMEOUT_MAX_MS);
	FUZZ_CHECK(cfg->n_nodes >= 1);
	FUZZ_CHECK(!cfg->primary ||
		   cluster_config_primary(cfg) == cluster_config_node(cfg, cfg->primary));
	FUZZ_CHECK(!cfg->primary || cluster_config_primary(cfg));
	for (size_t i = 0; i < cfg->n_nodes; i++) {
		const struct node_config *n = &cfg->nodes[i];
		char *host = NULL;
		uint16_t port = 0;

		FUZZ_CHECK(n->name && config_name_valid(n->name, strlen(n->name)));
		FUZZ_CHECK(cluster_config_node(cfg, n->name) == n);
		FUZZ_CHECK(n->line >= 1);
		FUZZ_CHECK(n->address && n->host && n->port > 0);
		FUZZ_CHECK(config_address_parse(n->address, &host, &port) == 0);
		FUZZ_CHECK(!strcmp(host, n->host) && port == n->port);
		free(host);
		FUZZ_CHECK(n->volume && n->volume[0] == '/');
		FUZZ_CHECK(!n->mount || n->mount[0] == '/');
		FUZZ_CHECK(!n->control || n->control[0] == '/');
		for (size_t j = 0; j < i; j++) {
			FUZZ_CHECK(strcmp(cfg->nodes[j].name, n->name));
			FUZZ_CHECK(cfg->nodes[j].port != n->port ||
				   strcasecmp(cfg->nodes[j].host, n->host));
		}
	}
}

/* "key=value": no line longer than the one it came from (the reader
 * refuses long lines). */
static void put(FILE *f, const char *key, const char *v)
{
	if (v)
		fprintf(f, "%s=%s\n", key, v);
}

/* The config as a cluster file (the keys this harness knows). */
static char *config_write(const struct cluster_config *cfg)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	FUZZ_CHECK(f);
	fprintf(f, "[cluster]\n");
	put(f, "name", cfg->name);
	put(f, "primary", cfg->primary);
	put(f, "secret_file", cfg->secret_file);
	fprintf(f, "block_size = %" PRIu32 "\n", cfg->block_size);
	fprintf(f, "max_rate = %" PRIu64 "\n", cfg->max_rate);
	fprintf(f, "insecure = %s\n", cfg->insecure ? "true" : "false");
	fprintf(f, "compress_level = %d\n", cfg->compress_level);
	put(f, "notify_email", cfg->notify_email);
	put(f, "smtp_url", cfg->smtp_url);
	put(f, "smtp_user", cfg->smtp_user);
	put(f, "smtp_password_file", cfg->smtp_password_file);
	put(f, "notify_from", cfg->notify_from);
	put(f, "notify_webhook", cfg->notify_webhook);
	put(f, "notify_command", cfg->notify_command);
	fprintf(f, "undo = %s\n", cfg->undo == CONFIG_UNDO_ON	      ? "on"
				   : cfg->undo == CONFIG_UNDO_DIVERGED ? "diverged"
								       : "off");
	fprintf(f, "session_timeout = %ums\n", cfg->session_timeout_ms);
	for (size_t i = 0; i < cfg->n_nodes; i++) {
		const struct node_config *n = &cfg->nodes[i];

		fprintf(f, "[node %s]\n", n->name);
		put(f, "address", n->address);
		put(f, "volume", n->volume);
		put(f, "mount", n->mount);
		put(f, "control", n->control);
		put(f, "metrics", n->metrics);
		put(f, "web", n->web);
	}
	FUZZ_CHECK(fclose(f) == 0);
	return text;
}

static void check_same(const struct cluster_config *a, const struct cluster_config *b)
{
	FUZZ_CHECK(str_eq(a->name, b->name) && str_eq(a->primary, b->primary));
	FUZZ_CHECK(str_eq(a->secret_file, b->secret_file));
	FUZZ_CHECK(a->block_size == b->block_size && a->max_rate == b->max_rate);
	FUZZ_CHECK(a->insecure == b->insecure && a->undo == b->undo);
	FUZZ_CHECK(a->compress_level == b->compress_level);
	FUZZ_CHECK(a->session_timeout_ms == b->session_timeout_ms);
	FUZZ_CHECK(str_eq(a->notify_email, b->notify_email) && str_eq(a->smtp_url, b->smtp_url));
	FUZZ_CHECK(str_eq(a->smtp_user, b->smtp_user));
	FUZZ_CHECK(str_eq(a->smtp_password_file, b->smtp_password_file));
	FUZZ_CHECK(str_eq(a->notify_from, b->notify_from));
	FUZZ_CHECK(str_eq(a->notify_webhook, b->notify_webhook));
	FUZZ_CHECK(str_eq(a->notify_command, b->notify_command));
	FUZZ_CHECK(a->n_nodes == b->n_nodes);
	for (size_t i = 0; i < a->n_nodes; i++) {
		const struct node_config *m = &a->nodes[i], *n = &b->nodes[i];

		FUZZ_CHECK(!strcmp(m->name, n->name) && !strcmp(m->address, n->address));
		FUZZ_CHECK(!strcmp(m->host, n->host) && m->port == n->port);
		FUZZ_CHECK(!strcmp(m->volume, n->volume) && str_eq(m->mount, n->mount));
		FUZZ_CHECK(str_eq(m->control, n->control) && str_eq(m->metrics, n->metrics));
		FUZZ_CHECK(str_eq(m->web, n->web));
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cluster_config *cfg = (void *)&size, *again = (void *)&size, *sentinel = cfg;
	char *text = malloc(size + 1), err[512], small[6];
	char *out;
	int r, r2;

	FUZZ_CHECK(text);
	memcpy(text, data, size);
	text[size] = 0;
	r = cluster_config_parse(NAME, text, err, sizeof(err), &cfg);
	FUZZ_CHECK(r == 0 || r == -EINVAL || r == -ENOMEM);
	/* The message's length does not change the verdict. */
	r2 = cluster_config_parse(NAME, text, small, sizeof(small), &again);
	FUZZ_CHECK(r2 == r && strlen(small) < sizeof(small));
	if (r2 == 0)
		cluster_config_free(again);
	again = sentinel;
	FUZZ_CHECK(cluster_config_parse(NAME, text, NULL, 0, &again) == r);
	if (r == 0)
		cluster_config_free(again);
	free(text);
	if (r < 0) {
		FUZZ_CHECK(cfg == sentinel);
		FUZZ_CHECK(!strncmp(err, NAME ":", strlen(NAME ":")) && !strchr(err, '\n'));
		return 0;
	}
	FUZZ_CHECK(err[0] == 0);
	check_valid(cfg);
	out = config_write(cfg);
	again = sentinel;
	r = cluster_config_parse(NAME, out, err, sizeof(err), &again);
	if (r != 0)
		fprintf(stderr, "written again:\n%s\nrefused: %s\n", out, err);
	FUZZ_CHECK(r == 0);
	check_same(cfg, again);
	cluster_config_free(again);
	cluster_config_free(cfg);
	free(out);
	return 0;
}
