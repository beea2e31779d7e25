/* The [etcd] section of the cluster file (resync.conf(5), ETCD): where
 * the coordinator is, which key names the primary (Patroni's layout by
 * default) and where resync keeps its own keys. Kept apart from
 * config.c, which calls in here for each key of the section. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "resync/config.h"
#include "resync/parse.h"

enum etcd_key {
	EK_ENDPOINTS,
	EK_CACERT,
	EK_CERT,
	EK_KEY,
	EK_LEADER_KEY,
	EK_PREFIX,
	EK_LOCK_TTL,
	EK_TIMEOUT,
	EK_COUNT,
};
_Static_assert(EK_COUNT <= sizeof(((struct etcd_config *)0)->key_line) / sizeof(unsigned),
	       "a line for every key");

static const char *const etcd_keys[EK_COUNT] = {
    [EK_ENDPOINTS] = "endpoints",
    [EK_CACERT] = "cacert",
    [EK_CERT] = "cert",
    [EK_KEY] = "key",
    [EK_LEADER_KEY] = "leader_key",
    [EK_PREFIX] = "prefix",
    [EK_LOCK_TTL] = "lock_ttl",
    [EK_TIMEOUT] = "timeout",
};

static int set_str(char **field, const char *v, size_t len)
{
	char *s = strndup(v, len);

	if (!s)
		return -ENOMEM;
	free(*field);
	*field = s;
	return 0;
}

/* URLs separated by commas or blanks: http:// or https://, a host, no
 * path (the gateway's paths are added to it). */
static int etcd_endpoints(struct etcd_config *e, const char *v, char *err, size_t errlen)
{
	const char *p = v;

	while (*p) {
		size_t len, skip;
		const char *host;

		p += strspn(p, ", \t");
		if (!*p)
			break;
		len = strcspn(p, ", \t");
		skip = !strncasecmp(p, "http://", 7) ? 7 : !strncasecmp(p, "https://", 8) ? 8 : 0;
		host = p + skip;
		while (len > skip && p[len - 1] == '/')
			len--;
		if (!skip || len == skip || memchr(host, '/', len - skip)) {
			snprintf(err, errlen,
				 "key 'endpoints': '%.*s' is not an http:// or https:// "
				 "URL of an etcd member (e.g. http://127.0.0.1:2379)",
				 (int)strcspn(p, ", \t"), p);
			return -EINVAL;
		}
		if (e->n_endpoints == CONFIG_ETCD_ENDPOINTS_MAX) {
			snprintf(err, errlen, "key 'endpoints': more than %d URLs",
				 CONFIG_ETCD_ENDPOINTS_MAX);
			return -EINVAL;
		}
		if (set_str(&e->endpoints[e->n_endpoints], p, len) < 0)
			return -ENOMEM;
		e->n_endpoints++;
		p += strcspn(p, ", \t");
	}
	if (!e->n_endpoints) {
		snprintf(err, errlen, "key 'endpoints': no URL");
		return -EINVAL;
	}
	return 0;
}

/* An etcd key of resync's: absolute, printable, no trailing '/'. */
static int etcd_path(const char *key, const char *v, char **field, char *err, size_t errlen)
{
	size_t len = strlen(v);

	while (len > 1 && v[len - 1] == '/')
		len--;
	if (v[0] != '/' || len < 2) {
		snprintf(err, errlen, "key '%s': '%s' is not an etcd key starting with '/'", key,
			 v);
		return -EINVAL;
	}
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)v[i] < 0x21 || v[i] == 0x7f) {
			snprintf(err, errlen, "key '%s': '%s' holds a blank or a control character",
				 key, v);
			return -EINVAL;
		}
	return set_str(field, v, len);
}

static int etcd_file(const char *key, const char *v, char **field, char *err, size_t errlen)
{
	if (v[0] != '/') {
		snprintf(err, errlen, "key '%s': '%s' is not an absolute path", key, v);
		return -EINVAL;
	}
	return set_str(field, v, strlen(v));
}

static int etcd_seconds(const char *key, const char *v, uint64_t min_us, uint64_t max_us,
			uint64_t *ret_us, char *err, size_t errlen)
{
	uint64_t u;

	if (parse_duration(v, &u) < 0 || u < min_us || u > max_us ||
	    (key[0] == 'l' && u % 1000000)) {
		snprintf(err, errlen, "key '%s': '%s' is not a duration from %gs to %gs%s", key, v,
			 min_us / 1e6, max_us / 1e6, key[0] == 'l' ? " in whole seconds" : "");
		return -EINVAL;
	}
	*ret_us = u;
	return 0;
}

int config_etcd_key(struct etcd_config *e, unsigned line, const char *key, const char *v, char *err,
		    size_t errlen)
{
	uint64_t u;
	int k, r;

	for (k = 0; k < EK_COUNT; k++)
		if (!strcmp(key, etcd_keys[k]))
			break;
	if (k == EK_COUNT) {
		snprintf(err, errlen, "unknown key '%s' in section [etcd]", key);
		return -EINVAL;
	}
	if (e->key_line[k]) {
		snprintf(err, errlen, "key '%s' given twice (first at line %u)", key,
			 e->key_line[k]);
		return -EINVAL;
	}
	e->key_line[k] = line;
	switch ((enum etcd_key)k) {
	case EK_ENDPOINTS:
		return etcd_endpoints(e, v, err, errlen);
	case EK_CACERT:
		return etcd_file(key, v, &e->cacert, err, errlen);
	case EK_CERT:
		return etcd_file(key, v, &e->cert, err, errlen);
	case EK_KEY:
		return etcd_file(key, v, &e->key, err, errlen);
	case EK_LEADER_KEY:
		return etcd_path(key, v, &e->leader_key, err, errlen);
	case EK_PREFIX:
		return etcd_path(key, v, &e->prefix, err, errlen);
	case EK_LOCK_TTL:
		r = etcd_seconds(key, v, CONFIG_ETCD_LOCK_TTL_MIN_S * 1000000ull,
				 CONFIG_ETCD_LOCK_TTL_MAX_S * 1000000ull, &u, err, errlen);
		if (r >= 0)
			e->lock_ttl_s = (unsigned)(u / 1000000);
		return r;
	case EK_TIMEOUT:
		r = etcd_seconds(key, v, 100000, 60000000, &u, err, errlen);
		if (r >= 0)
			e->timeout_ms = (unsigned)(u / 1000);
		return r;
	case EK_COUNT:
		break;
	}
	return -EINVAL;
}

int config_etcd_finish(struct cluster_config *cfg, char *err, size_t errlen)
{
	struct etcd_config *e = cfg->etcd;

	if (!e)
		return 0;
	if (!e->n_endpoints) {
		snprintf(err, errlen, "section [etcd]: missing key 'endpoints'");
		return -EINVAL;
	}
	if (!e->cert != !e->key) {
		snprintf(err, errlen,
			 "section [etcd]: 'cert' and 'key' go together (a client "
			 "certificate and its private key)");
		return -EINVAL;
	}
	if (!e->leader_key && asprintf(&e->leader_key, "/service/%s/leader", cfg->name) < 0) {
		e->leader_key = NULL;
		return -ENOMEM;
	}
	if (!e->prefix && asprintf(&e->prefix, "/resync/%s", cfg->name) < 0) {
		e->prefix = NULL;
		return -ENOMEM;
	}
	if (!e->lock_ttl_s)
		e->lock_ttl_s = CONFIG_ETCD_LOCK_TTL_DEFAULT_S;
	if (!e->timeout_ms)
		e->timeout_ms = CONFIG_ETCD_TIMEOUT_DEFAULT_MS;
	return 0;
}

void config_etcd_free(struct etcd_config *e)
{
	if (!e)
		return;
	for (size_t i = 0; i < e->n_endpoints; i++)
		free(e->endpoints[i]);
	free(e->cacert);
	free(e->cert);
	free(e->key);
	free(e->leader_key);
	free(e->prefix);
	free(e);
}
