/* The cluster file and the secret: every key, every error with its
 * file:line:key message, key file permissions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "resync/macro.h"
#include "testlib.h"

static const char good[] = "; a full cluster file\n"
			   "[cluster]\n"
			   "name = demo\n"
			   "primary = node1\n"
			   "secret_file = /etc/resync/demo.key    ; shared key\n"
			   "block_size = 128K\n"
			   "max_rate = 100M\n"
			   "insecure = false\n"
			   "compress_level = 3\n"
			   "compress_adapt = false\n"
			   "fuse_rt_priority = 0\n"
			   "notify_email = ops@example.com, oncall@example.com\n"
			   "smtp_url = smtp://127.0.0.1:2525\n"
			   "smtp_user = resync\n"
			   "smtp_password_file = /etc/resync/smtp.pw\n"
			   "notify_from = resync@example.com\n"
			   "notify_webhook = http://127.0.0.1:8080/resync\n"
			   "notify_command = /usr/local/bin/on-resync --quiet\n"
			   "undo = yes\n"
			   "undo_keep = 2d\n"
			   "delta = rolling\n"
			   "undo_max_bytes = 25%\n"
			   "session_timeout = 2m\n"
			   "verify_interval = 7d\n"
			   "verify_max_rate = 50M\n"
			   "alert_after = off\n"
			   "\n"
			   "[node node1]\n"
			   "  address = 127.0.0.1:7801\n"
			   "  volume = /var/lib/resync/node1.img\n"
			   "  mount = /srv/resync/node1\n"
			   "  control = /run/resync/node1.sock\n"
			   "  metrics = 127.0.0.1:9471\n"
			   "  web = 127.0.0.1:9481\n"
			   "[node node-2.b]\n"
			   "address = [::1]:7802\n"
			   "volume = /dev/vdb\n";

static void test_good(void **state)
{
	struct cluster_config *cfg = NULL;
	const struct node_config *n;
	char err[512];

	assert_int_equal(cluster_config_parse("cluster.conf", good, err, sizeof(err), &cfg), 0);
	assert_string_equal(err, "");
	assert_string_equal(cfg->name, "demo");
	assert_string_equal(cfg->primary, "node1");
	assert_string_equal(cfg->secret_file, "/etc/resync/demo.key");
	assert_int_equal(cfg->block_size, 128 * 1024);
	assert_int_equal(cfg->max_rate, 100ull << 20);
	assert_false(cfg->insecure);
	assert_int_equal(cfg->compress_level, 3);
	assert_false(cfg->compress_adapt);
	assert_int_equal(cfg->fuse_rt_priority, 0);
	assert_string_equal(cfg->notify_email, "ops@example.com, oncall@example.com");
	assert_string_equal(cfg->smtp_url, "smtp://127.0.0.1:2525");
	assert_string_equal(cfg->smtp_user, "resync");
	assert_string_equal(cfg->smtp_password_file, "/etc/resync/smtp.pw");
	assert_string_equal(cfg->notify_from, "resync@example.com");
	assert_string_equal(cfg->notify_webhook, "http://127.0.0.1:8080/resync");
	assert_string_equal(cfg->notify_command, "/usr/local/bin/on-resync --quiet");
	assert_int_equal(cfg->undo, CONFIG_UNDO_ON);
	assert_int_equal(cfg->undo_keep_s, 2 * 86400);
	assert_int_equal(cfg->delta, CONFIG_DELTA_ROLLING);
	assert_int_equal(cfg->undo_max_percent, 25);
	assert_int_equal(cfg->undo_max_bytes, 0);
	assert_int_equal(cfg->session_timeout_ms, 120000);
	assert_int_equal(cfg->verify_interval_ms, 7ull * 86400 * 1000);
	assert_int_equal(cfg->verify_max_rate, 50ull << 20);
	assert_int_equal(cfg->alert_after_ms, 0);
	assert_int_equal(cfg->n_nodes, 2);

	n = cluster_config_node(cfg, "node1");
	assert_non_null(n);
	assert_ptr_equal(n, cluster_config_primary(cfg));
	assert_string_equal(n->address, "127.0.0.1:7801");
	assert_string_equal(n->host, "127.0.0.1");
	assert_int_equal(n->port, 7801);
	assert_string_equal(n->volume, "/var/lib/resync/node1.img");
	assert_string_equal(n->mount, "/srv/resync/node1");
	assert_string_equal(n->control, "/run/resync/node1.sock");
	assert_string_equal(n->metrics, "127.0.0.1:9471");
	assert_string_equal(n->web, "127.0.0.1:9481");
	assert_int_equal(n->line, 28);

	n = cluster_config_node(cfg, "node-2.b");
	assert_non_null(n);
	assert_string_equal(n->host, "::1");
	assert_int_equal(n->port, 7802);
	assert_null(n->mount);
	assert_null(n->metrics);
	assert_null(cluster_config_node(cfg, "node3"));
	cluster_config_free(cfg);
}

static void test_defaults(void **state)
{
	struct cluster_config *cfg = NULL;
	char err[512];

	assert_int_equal(cluster_config_parse("c.conf",
					      "[cluster]\nname=x\ninsecure=true\n"
					      "[node a]\naddress=h:1\nvolume=/v\n",
					      err, sizeof(err), &cfg),
			 0);
	assert_int_equal(cfg->block_size, 64 * 1024);
	assert_int_equal(cfg->max_rate, 0);
	assert_int_equal(cfg->compress_level, 1);
	assert_true(cfg->compress_adapt);
	assert_int_equal(cfg->fuse_rt_priority, CONFIG_FUSE_RT_PRIORITY_DEFAULT);
	assert_true(cfg->insecure);
	assert_int_equal(cfg->undo, CONFIG_UNDO_DIVERGED); /* the default */
	assert_int_equal(cfg->delta, CONFIG_DELTA_AUTO);    /* the default */
	assert_int_equal(cfg->undo_keep_s, 7 * 86400);
	assert_int_equal(cfg->undo_max_percent, 10);
	assert_int_equal(cfg->session_timeout_ms, CONFIG_SESSION_TIMEOUT_DEFAULT_MS);
	assert_int_equal(cfg->session_timeout_ms, 120000);
	assert_int_equal(cfg->verify_interval_ms, 0); /* no scheduled verify */
	assert_int_equal(cfg->verify_max_rate, 0);
	assert_int_equal(cfg->alert_after_ms, CONFIG_ALERT_AFTER_DEFAULT_MS);
	assert_null(cfg->primary);
	assert_null(cfg->secret_file);
	assert_null(cluster_config_primary(cfg));
	cluster_config_free(cfg);
}

/* A header that every error case below starts from: lines 1 to 5. */
#define HEAD "[cluster]\nname = demo\nsecret_file = /k\n[node n1]\naddress = 10.0.0.1:7801\n"
#define N1 HEAD "volume = /v1\n"

static const struct {
	const char *text;
	const char *message;
} bad[] = {
	{HEAD "volume = /v1\n[cluster]\nname=x\n",
	 "cluster.conf:7: duplicate section [cluster] (first at line 1)"},
	{"[cluster]\nname = demo\nblock_size = 3K\n",
	 "cluster.conf:3: key 'block_size': '3K' is not a power of two from 4K to 1M"},
	{"[cluster]\nname = demo\nblock_size = 2M\n",
	 "cluster.conf:3: key 'block_size': '2M' is not a power of two from 4K to 1M"},
	{"[cluster]\nblock_size = big\n", "cluster.conf:2: key 'block_size': 'big' is not a size (e.g. 64K)"},
	{"[cluster]\nname = demo\nmax_rate = -5\n",
	 "cluster.conf:3: key 'max_rate': '-5' is not a rate in bytes per second (e.g. 100M; 0 = "
	 "unlimited)"},
	{"[cluster]\ninsecure = maybe\n",
	 "cluster.conf:2: key 'insecure': 'maybe' is not a boolean (true or false)"},
	{"[cluster]\ndelta = fast\n",
	 "cluster.conf:2: key 'delta': 'fast' is not 'auto', 'aligned' or 'rolling'"},
	{"[cluster]\nundo = 2\n", "cluster.conf:2: key 'undo': '2' is not off, diverged or on"},
	{"[cluster]\nundo_max_bytes = 0%\n", "cluster.conf:2: key 'undo_max_bytes': '0%' is not a percentage from 1% to 100%"},
	{"[cluster]\nundo_keep = soon\n", "cluster.conf:2: key 'undo_keep': 'soon' is not a duration from 1s to 365d (e.g. 7d)"},
	{"[cluster]\nsession_timeout = 500ms\n",
	 "cluster.conf:2: key 'session_timeout': '500ms' is not a duration from 1s to 1d (e.g. "
	 "120s, 5m)"},
	{"[cluster]\nsession_timeout = 2d\n",
	 "cluster.conf:2: key 'session_timeout': '2d' is not a duration from 1s to 1d (e.g. "
	 "120s, 5m)"},
	{"[cluster]\nsession_timeout = soon\n",
	 "cluster.conf:2: key 'session_timeout': 'soon' is not a duration from 1s to 1d (e.g. "
	 "120s, 5m)"},
	{"[cluster]\nverify_interval = 500ms\n",
	 "cluster.conf:2: key 'verify_interval': '500ms' is not a duration from 1s to 365d, or 0 or "
	 "off (e.g. 7d, 10m)"},
	{"[cluster]\nalert_after = 400d\n",
	 "cluster.conf:2: key 'alert_after': '400d' is not a duration from 1s to 365d, or 0 or off "
	 "(e.g. 7d, 10m)"},
	{"[cluster]\nverify_max_rate = fast\n",
	 "cluster.conf:2: key 'verify_max_rate': 'fast' is not a rate in bytes per second (e.g. 50M; "
	 "0 = unlimited)"},
	{"[cluster]\nfuse_rt_priority = 100\n",
	 "cluster.conf:2: key 'fuse_rt_priority': '100' is not a number from 0 (normal scheduling) to "
	 "99"},
	{"[cluster]\ncompress_adapt = sometimes\n",
	 "cluster.conf:2: key 'compress_adapt': 'sometimes' is not a boolean (true or false)"},
	{"[cluster]\ncompress_level = 99\n",
	 "cluster.conf:2: key 'compress_level': '99' is not a zstd level from -7 to 22 (not 0)"},
	{"[cluster]\nname = my cluster\n",
	 "cluster.conf:2: key 'name': 'my cluster' is not a valid cluster name (letters, digits, "
	 "'.', '_', '-', at most 64)"},
	{"[cluster]\nname = a\nname = b\n",
	 "cluster.conf:3: key 'name' given twice (first at line 2)"},
	{"[cluster]\ncolour = blue\n", "cluster.conf:2: unknown key 'colour' in section [cluster]"},
	{N1 "size = 1G\n", "cluster.conf:7: unknown key 'size' in section [node n1]"},
	{"[global]\nname = x\n", "cluster.conf:1: unknown section [global]"},
	{"[cluster]\nname = x\n[node]\n", "cluster.conf:3: section [node] needs a name: [node NAME]"},
	{"[cluster]\nname = x\n[node a/b]\n",
	 "cluster.conf:3: section [node a/b]: 'a/b' is not a valid node name (letters, digits, "
	 "'.', '_', '-', at most 64)"},
	{"name = x\n", "cluster.conf:1: key 'name' outside a section ([cluster] or [node NAME])"},
	{"[cluster]\nname\n", "cluster.conf:2: syntax error (expected [section] or key = value)"},
	{"[cluster]\nname =\n", "cluster.conf:2: key 'name' has no value"},
	{N1 "[node n1]\n", "cluster.conf:7: duplicate section [node n1] (first at line 4)"},
	{"[cluster]\nname = demo\nsecret_file = /k\nprimary = node9\n[node n1]\naddress = h:1\n"
	 "volume = /v\n",
	 "cluster.conf:4: key 'primary': no section [node node9] in this file"},
	{HEAD "\n[node n2]\nvolume = /v2\n", "cluster.conf:4: section [node n1]: missing key 'volume'"},
	{N1 "[node n2]\nvolume = /v2\n", "cluster.conf:7: section [node n2]: missing key 'address'"},
	{N1 "[node n2]\naddress = 10.0.0.1:7801\nvolume = /v2\n",
	 "cluster.conf:8: key 'address': '10.0.0.1:7801' is already the address of node 'n1' "
	 "(line 5)"},
	{N1 "[node n3]\n", "cluster.conf:7: section [node n3]: missing key 'address'"},
	{"[cluster]\nname = x\n[node a]\naddress = host\n",
	 "cluster.conf:4: key 'address': 'host' is not HOST:PORT (a port from 1 to 65535; "
	 "[ADDRESS]:PORT for IPv6)"},
	{"[cluster]\nname = x\n[node a]\naddress = h:70000\n",
	 "cluster.conf:4: key 'address': 'h:70000' is not HOST:PORT (a port from 1 to 65535; "
	 "[ADDRESS]:PORT for IPv6)"},
	{"[cluster]\nname = x\n[node a]\naddress = ::1:5\n",
	 "cluster.conf:4: key 'address': '::1:5' is not HOST:PORT (a port from 1 to 65535; "
	 "[ADDRESS]:PORT for IPv6)"},
	{"[cluster]\nname = x\n[node a]\nmetrics = 9471\n",
	 "cluster.conf:4: key 'metrics': '9471' is not HOST:PORT (a port from 1 to 65535; "
	 "[ADDRESS]:PORT for IPv6)"},
	{"[cluster]\nname = x\n[node a]\nvolume = node.img\n",
	 "cluster.conf:4: key 'volume': 'node.img' is not an absolute path"},
	{"[cluster]\nsecret_file = demo.key\n",
	 "cluster.conf:2: key 'secret_file': 'demo.key' is not an absolute path"},
	{"[cluster]\nsmtp_url = http://x\n",
	 "cluster.conf:2: key 'smtp_url': 'http://x' is not a smtp:// or smtps:// URL"},
	{"[cluster]\nnotify_webhook = ftp://x\n",
	 "cluster.conf:2: key 'notify_webhook': 'ftp://x' is not a http:// or https:// URL"},
	{"[cluster]\nnotify_email = ops@x, nobody\n",
	 "cluster.conf:2: key 'notify_email': 'nobody' is not an email address"},
	{"[cluster]\nnotify_from = a@x, b@y\n",
	 "cluster.conf:2: key 'notify_from': 'a@x, b@y' is not one email address"},
	{"; nothing\n", "cluster.conf: no [cluster] section"},
	{"[cluster]\nsecret_file = /k\n", "cluster.conf:1: section [cluster]: missing key 'name'"},
	{"[cluster]\nname = x\n[node a]\naddress = h:1\nvolume = /v\n",
	 "cluster.conf:1: section [cluster]: missing key 'secret_file' (peers authenticate with "
	 "it; only a test cluster may say insecure = true instead)"},
	{"[cluster]\nname = x\nsecret_file = /k\n", "cluster.conf: no [node NAME] section"},
	/* [etcd] (issue 14) */
	{N1 "[etcd]\nleader_key = /x\n", "cluster.conf:7: section [etcd]: missing key 'endpoints'"},
	{N1 "[etcd]\nendpoints = 127.0.0.1:2379\n",
	 "cluster.conf:8: key 'endpoints': '127.0.0.1:2379' is not an http:// or https:// URL of an "
	 "etcd member (e.g. http://127.0.0.1:2379)"},
	{N1 "[etcd]\nendpoints = http://a:1, http://b:1/v3\n",
	 "cluster.conf:8: key 'endpoints': 'http://b:1/v3' is not an http:// or https:// URL of an "
	 "etcd member (e.g. http://127.0.0.1:2379)"},
	{N1 "[etcd]\nendpoints = http://a:1\nendpoints = http://b:1\n",
	 "cluster.conf:9: key 'endpoints' given twice (first at line 8)"},
	{N1 "[etcd]\nendpoints = http://a:1\nlock_ttl = 1s\n",
	 "cluster.conf:9: key 'lock_ttl': '1s' is not a duration from 2s to 3600s in whole seconds"},
	{N1 "[etcd]\nendpoints = http://a:1\nlock_ttl = 2500ms\n",
	 "cluster.conf:9: key 'lock_ttl': '2500ms' is not a duration from 2s to 3600s in whole "
	 "seconds"},
	{N1 "[etcd]\nendpoints = http://a:1\nleader_key = service/x\n",
	 "cluster.conf:9: key 'leader_key': 'service/x' is not an etcd key starting with '/'"},
	{N1 "[etcd]\nendpoints = http://a:1\ncolour = x\n",
	 "cluster.conf:9: unknown key 'colour' in section [etcd]"},
	{N1 "[etcd]\nendpoints = http://a:1\ncert = /c\n",
	 "cluster.conf:7: section [etcd]: 'cert' and 'key' go together (a client certificate and "
	 "its private key)"},
	{N1 "[etcd]\nendpoints = http://a:1\ncacert = ca.pem\n",
	 "cluster.conf:9: key 'cacert': 'ca.pem' is not an absolute path"},
	{N1 "[etcd]\n[etcd]\n", "cluster.conf:8: duplicate section [etcd] (first at line 7)"},
	{"[cluster]\nname = demo\nsecret_file = /k\nprimary = n1\n[node n1]\naddress = h:1\n"
	 "volume = /v\n[etcd]\nendpoints = http://a:1\n",
	 "cluster.conf:4: key 'primary': the primary comes from etcd's leader key when there is an "
	 "[etcd] section (line 8); remove 'primary'"},
};

/* [etcd]: its defaults (Patroni's leader key, resync's prefix), several
 * endpoints, trailing slashes dropped. */
static void test_etcd(void **state)
{
	struct cluster_config *cfg = NULL;
	char err[512];

	assert_int_equal(cluster_config_parse("c.conf",
					      N1 "[etcd]\nendpoints = http://10.0.0.1:2379/, "
						 "https://e2:2379 http://e3:2379\n",
					      err, sizeof(err), &cfg),
			 0);
	assert_non_null(cfg->etcd);
	assert_int_equal(cfg->etcd->n_endpoints, 3);
	assert_string_equal(cfg->etcd->endpoints[0], "http://10.0.0.1:2379");
	assert_string_equal(cfg->etcd->endpoints[1], "https://e2:2379");
	assert_string_equal(cfg->etcd->endpoints[2], "http://e3:2379");
	assert_string_equal(cfg->etcd->leader_key, "/service/demo/leader");
	assert_string_equal(cfg->etcd->prefix, "/resync/demo");
	assert_int_equal(cfg->etcd->lock_ttl_s, CONFIG_ETCD_LOCK_TTL_DEFAULT_S);
	assert_int_equal(cfg->etcd->timeout_ms, CONFIG_ETCD_TIMEOUT_DEFAULT_MS);
	assert_null(cfg->primary);
	cluster_config_free(cfg);

	assert_int_equal(cluster_config_parse("c.conf",
					      N1 "[etcd]\nendpoints = http://e:2379\n"
						 "leader_key = /service/pg/leader\nprefix = /r/x/\n"
						 "lock_ttl = 1m\ntimeout = 500ms\ncacert = /ca.pem\n"
						 "cert = /c.pem\nkey = /k.pem\n",
					      err, sizeof(err), &cfg),
			 0);
	assert_string_equal(cfg->etcd->leader_key, "/service/pg/leader");
	assert_string_equal(cfg->etcd->prefix, "/r/x");
	assert_int_equal(cfg->etcd->lock_ttl_s, 60);
	assert_int_equal(cfg->etcd->timeout_ms, 500);
	assert_string_equal(cfg->etcd->cacert, "/ca.pem");
	assert_string_equal(cfg->etcd->key, "/k.pem");
	cluster_config_free(cfg);
	(void)state;
}

static void test_errors(void **state)
{
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct cluster_config *cfg = NULL;
		char err[512];
		int r;

		r = cluster_config_parse("cluster.conf", bad[i].text, err, sizeof(err), &cfg);
		if (r != -EINVAL || strcmp(err, bad[i].message))
			fail_msg("case %zu: r=%d\n got: %s\nwant: %s", i, r, err, bad[i].message);
		assert_null(cfg);
	}
}

static void test_long_line(void **state)
{
	struct cluster_config *cfg = NULL;
	char text[2048], err[512];
	int n;

	n = snprintf(text, sizeof(text), "[cluster]\nname = x\nnotify_command = ");
	memset(text + n, 'a', 1000);
	strcpy(text + n + 1000, "\n");
	assert_int_equal(cluster_config_parse("c.conf", text, err, sizeof(err), &cfg), -EINVAL);
	assert_non_null(strstr(err, "c.conf:3: line longer than"));
}

static void test_load_file(void **state)
{
	_cleanup_free_ char *dir = NULL, *path = NULL;
	struct cluster_config *cfg = NULL;
	char err[512];

	assert_int_equal(testlib_tmpdir_new(&dir), 0);
	path = testlib_path(dir, "cluster.conf");
	assert_int_equal(cluster_config_load(path, err, sizeof(err), &cfg), -ENOENT);
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, "No such file"));

	assert_int_equal(testlib_file_write(path, good, strlen(good)), 0);
	assert_int_equal(cluster_config_load(path, err, sizeof(err), &cfg), 0);
	assert_string_equal(cfg->path, path);
	assert_int_equal(cfg->n_nodes, 2);
	cluster_config_free(cfg);

	/* Messages carry the path as given. */
	assert_int_equal(testlib_file_write(path, "[cluster]\nblock_size = 3K\n", 26), 0);
	assert_int_equal(cluster_config_load(path, err, sizeof(err), &cfg), -EINVAL);
	{
		char want[1024];

		snprintf(want, sizeof(want),
			 "%s:2: key 'block_size': '3K' is not a power of two from 4K to 1M", path);
		assert_string_equal(err, want);
	}
	testlib_tmpdir_remove(dir);
}

static int write_mode(const char *path, const char *data, mode_t mode)
{
	int r = testlib_file_write(path, data, strlen(data));

	if (r < 0)
		return r;
	return chmod(path, mode) < 0 ? -errno : 0;
}

static void test_secret(void **state)
{
	_cleanup_free_ char *dir = NULL, *path = NULL;
	struct secret *s = NULL, *d1 = NULL, *d2 = NULL, *d3 = NULL;
	char err[512];

	assert_int_equal(testlib_tmpdir_new(&dir), 0);
	path = testlib_path(dir, "demo.key");

	assert_int_equal(write_mode(path, "0123456789abcdef0123\n", 0600), 0);
	assert_int_equal(secret_load(path, err, sizeof(err), &s), 0);
	assert_int_equal(secret_size(s), 20);
	assert_memory_equal(secret_data(s), "0123456789abcdef0123", 20);

	/* Derived keys: deterministic, and different per info and salt. */
	assert_int_equal(secret_derive(s, "salt", "demo", 32, &d1), 0);
	assert_int_equal(secret_derive(s, "salt", "demo", 32, &d2), 0);
	assert_int_equal(secret_size(d1), 32);
	assert_memory_equal(secret_data(d1), secret_data(d2), 32);
	secret_free(d2);
	assert_int_equal(secret_derive(s, "salt", "other", 32, &d2), 0);
	assert_memory_not_equal(secret_data(d1), secret_data(d2), 32);
	assert_int_equal(secret_derive(s, "salt2", "demo", 32, &d3), 0);
	assert_memory_not_equal(secret_data(d1), secret_data(d3), 32);
	assert_memory_not_equal(secret_data(d1), "0123456789abcdef0123", 20);
	secret_free(d1);
	secret_free(d2);
	secret_free(d3);
	secret_free(s);
	s = NULL;
	secret_free(NULL);

	/* CRLF is stripped too; an inner newline is part of the key. */
	assert_int_equal(write_mode(path, "0123456789\nabcdef\r\n", 0400), 0);
	assert_int_equal(secret_load(path, err, sizeof(err), &s), 0);
	assert_int_equal(secret_size(s), 17);
	secret_free(s);
	s = NULL;

	assert_int_equal(write_mode(path, "0123456789abcdef0123\n", 0640), 0);
	assert_int_equal(secret_load(path, err, sizeof(err), &s), -EPERM);
	assert_null(s);
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, "group or others (mode 0640)"));
	assert_non_null(strstr(err, "chmod 600"));

	assert_int_equal(chmod(path, 0604), 0);
	assert_int_equal(secret_load(path, err, sizeof(err), &s), -EPERM);
	assert_int_equal(chmod(path, 0620), 0);
	assert_int_equal(secret_load(path, err, sizeof(err), &s), -EPERM);

	assert_int_equal(write_mode(path, "short\n", 0600), 0);
	assert_int_equal(secret_load(path, err, sizeof(err), &s), -EINVAL);
	assert_non_null(strstr(err, "must hold 16 to 4096 bytes, not 5"));

	{
		char big[5000];

		memset(big, 'k', sizeof(big) - 1);
		big[sizeof(big) - 1] = 0;
		assert_int_equal(write_mode(path, big, 0600), 0);
		assert_int_equal(secret_load(path, err, sizeof(err), &s), -EINVAL);
		assert_non_null(strstr(err, "not more than 4096"));
	}

	assert_int_equal(secret_load(dir, err, sizeof(err), &s), -EINVAL);
	assert_non_null(strstr(err, "is not a regular file"));

	unlink(path);
	assert_int_equal(secret_load(path, err, sizeof(err), &s), -ENOENT);
	assert_non_null(strstr(err, "cannot open secret file"));
	testlib_tmpdir_remove(dir);
}

/* The dashboard's keys: off and unset by default; parsed; refused when
 * not a boolean or not an absolute path. */
static void test_web(void **state)
{
	struct cluster_config *cfg = NULL;
	char err[512];

	assert_int_equal(cluster_config_parse("c.conf",
					      "[cluster]\nname=x\ninsecure=true\n"
					      "[node a]\naddress=h:1\nvolume=/v\nweb = 127.0.0.1:9481\n",
					      err, sizeof(err), &cfg),
			 0);
	assert_null(cfg->web_token_file);
	assert_false(cfg->web_allow_remote);
	assert_false(cfg->web_public_status);
	assert_string_equal(cfg->nodes[0].web, "127.0.0.1:9481");
	cluster_config_free(cfg);
	assert_int_equal(cluster_config_parse("c.conf",
					      "[cluster]\nname=x\ninsecure=true\n"
					      "web_token_file = /etc/resync/web.token\n"
					      "web_allow_remote = true\nweb_public_status = yes\n"
					      "[node a]\naddress=h:1\nvolume=/v\nweb = 0.0.0.0:9481\n",
					      err, sizeof(err), &cfg),
			 0);
	assert_string_equal(cfg->web_token_file, "/etc/resync/web.token");
	assert_true(cfg->web_allow_remote);
	assert_true(cfg->web_public_status);
	cluster_config_free(cfg);
	cfg = NULL;
	assert_int_equal(cluster_config_parse("c.conf", "[cluster]\nweb_allow_remote = sure\n", err,
					      sizeof(err), &cfg),
			 -EINVAL);
	assert_string_equal(err,
			    "c.conf:2: key 'web_allow_remote': 'sure' is not a boolean (true or false)");
	assert_int_equal(cluster_config_parse("c.conf", "[cluster]\nweb_token_file = web.token\n",
					      err, sizeof(err), &cfg),
			 -EINVAL);
	assert_string_equal(err,
			    "c.conf:2: key 'web_token_file': 'web.token' is not an absolute path");
	assert_null(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good),	  cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_errors),	  cmocka_unit_test(test_long_line),
		cmocka_unit_test(test_load_file), cmocka_unit_test(test_secret),
		cmocka_unit_test(test_web),	  cmocka_unit_test(test_etcd),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
