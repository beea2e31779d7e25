/* Notifications without a network: the email's subject and body, the
 * command's environment, delivery by command from events on the bus (a
 * run, and a state change: only an unexpected Diverged or Inconsistent is
 * news), the spool kept across a restart (a failing command, then a
 * working one), the time limit that kills a command, and a damaged spool
 * file. */
#include <dirent.h>
#include <json-c/json.h>
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
#include "events.h"
#include "notify.h"
#include "resync/macro.h"
#include "testlib.h"

static char *dir;

static struct cluster_config *conf(const char *command)
{
	struct cluster_config *cfg = NULL;
	char text[2048], err[512];

	snprintf(text, sizeof(text),
		 "[cluster]\nname = demo\nprimary = n1\ninsecure = true\n"
		 "notify_command = %s\n"
		 "[node n1]\naddress = 127.0.0.1:7801\nvolume = %s/n1.img\n"
		 "[node n2]\naddress = 127.0.0.1:7802\nvolume = %s/n2.img\n"
		 "[node n3]\naddress = 127.0.0.1:7803\nvolume = %s/n3.img\n",
		 command, dir, dir, dir);
	assert_int_equal(cluster_config_parse("t.conf", text, err, sizeof(err), &cfg), 0);
	return cfg;
}

static json_object *sample(void)
{
	return json_tokener_parse(
		"{\"version\":1,\"type\":\"resync_failed\",\"cluster\":\"demo\",\"node\":\"n1\","
		"\"primary\":\"n1\",\"result\":\"failed\",\"time\":\"2024-01-01T00:00:00.000000Z\","
		"\"seconds\":2.5,\"generation\":\"0123-gen\",\"details\":\"resyncctl --config x status\","
		"\"nodes\":[{\"name\":\"n2\",\"result\":\"resynced\",\"state_before\":\"Outdated\","
		"\"state_after\":\"UpToDate\",\"bytes_compared\":67108864,\"bytes_sent\":1048576,"
		"\"seconds\":1.25},{\"name\":\"n3\",\"result\":\"failed\",\"state_before\":\"Outdated\","
		"\"state_after\":\"Inconsistent\",\"bytes_compared\":0,\"bytes_sent\":0,\"seconds\":0.5,"
		"\"error\":\"connection refused\"}]}");
}

static void test_email_format(void **state)
{
	json_object *p = sample();
	char *subject = NULL, *body = NULL;

	(void)state;
	assert_int_equal(notify_email_format(p, &subject, &body), 0);
	assert_string_equal(subject, "[resync] cluster 'demo': resync failed (1 of 2 secondaries UpToDate)");
	assert_non_null(strstr(body, "n2: resynced\n  state:          Outdated -> UpToDate\n"));
	assert_non_null(strstr(body, "  bytes compared: 67108864 bytes (64.0 MiB)\n"));
	assert_non_null(strstr(body, "  bytes sent:     1048576 bytes (1.0 MiB)\n"));
	assert_non_null(strstr(body, "  duration:       0.5 s\n"));
	assert_non_null(strstr(body, "  generation:     0123-gen\n"));
	assert_non_null(strstr(body, "n3: failed\n"));
	assert_non_null(strstr(body, "  error:          connection refused\n"));
	assert_non_null(strstr(body, "More: resyncctl --config x status\n"));
	free(subject);
	free(body);
	/* The run's result word picks the subject's verb. */
	json_object_object_add(p, "result", json_object_new_string("success"));
	assert_int_equal(notify_email_format(p, &subject, &body), 0);
	assert_string_equal(subject,
			    "[resync] cluster 'demo': resync succeeded (1 of 2 secondaries UpToDate)");
	free(subject);
	free(body);
	json_object_object_add(p, "result", json_object_new_string("cancelled"));
	assert_int_equal(notify_email_format(p, &subject, &body), 0);
	assert_string_equal(subject,
			    "[resync] cluster 'demo': resync cancelled (1 of 2 secondaries UpToDate)");
	free(subject);
	free(body);
	json_object_put(p);
}

static const char *env_get(char **env, const char *key)
{
	size_t l = strlen(key);

	for (char **e = env; *e; e++)
		if (!strncmp(*e, key, l) && (*e)[l] == '=')
			return *e + l + 1;
	return NULL;
}

static void test_env(void **state)
{
	json_object *p = sample();
	char **env = NULL;

	(void)state;
	assert_int_equal(notify_env_build(p, &env), 0);
	assert_string_equal(env_get(env, "RESYNC_CLUSTER"), "demo");
	assert_string_equal(env_get(env, "RESYNC_EVENT"), "resync_failed");
	assert_string_equal(env_get(env, "RESYNC_RESULT"), "failed");
	assert_string_equal(env_get(env, "RESYNC_NODES"), "n2 n3");
	assert_string_equal(env_get(env, "RESYNC_PRIMARY"), "n1");
	assert_string_equal(env_get(env, "RESYNC_NODE_COUNT"), "2");
	assert_string_equal(env_get(env, "RESYNC_NODE_1_NAME"), "n2");
	assert_string_equal(env_get(env, "RESYNC_NODE_1_BYTES_COMPARED"), "67108864");
	assert_string_equal(env_get(env, "RESYNC_NODE_2_STATE_AFTER"), "Inconsistent");
	assert_string_equal(env_get(env, "RESYNC_NODE_2_ERROR"), "connection refused");
	assert_non_null(strstr(env_get(env, "RESYNC_JSON"), "\"cluster\":\"demo\""));
	assert_null(env_get(env, "RESYNC_NODE_3_NAME"));
	notify_env_free(env);
	json_object_put(p);
}

struct seen {
	struct event_queue *q;
	int delivered, failed;
	enum notify_channel channel; /* of the last attempt */
	char last_error[512];
};

static bool drain(void *arg)
{
	struct seen *s = arg;
	struct event e;

	while (event_queue_pop(s->q, 0, &e, NULL) == 1) {
		if (e.kind == EVENT_NOTIFY_DELIVERED || e.kind == EVENT_NOTIFY_FAILED)
			s->channel = e.channel;
		if (e.kind == EVENT_NOTIFY_DELIVERED)
			s->delivered++;
		if (e.kind == EVENT_NOTIFY_FAILED) {
			s->failed++;
			snprintf(s->last_error, sizeof(s->last_error), "%s", e.error);
		}
	}
	return s->delivered > 0;
}

static bool failed_once(void *arg)
{
	struct seen *s = arg;

	drain(s);
	return s->failed > 0;
}

static size_t spool_files(const char *spool)
{
	DIR *d = opendir(spool);
	struct dirent *de;
	size_t n = 0;

	if (!d)
		return 0;
	while ((de = readdir(d)))
		n += strstr(de->d_name, ".json") != NULL;
	closedir(d);
	return n;
}

/* A delivered notification leaves the spool and the count just after its
 * delivered event: wait for both, with a deadline. */
struct settled {
	struct notify *n;
	const char *spool;
};

static bool settled(void *arg)
{
	struct settled *w = arg;

	return notify_pending(w->n) == 0 && spool_files(w->spool) == 0;
}

static void wait_settled(struct notify *n, const char *spool)
{
	struct settled w = {n, spool};

	assert_int_equal(testlib_wait_until(settled, &w, 20000000), 0);
}

/* Events of a run on the bus become one notification; the command gets
 * the documented environment. */
static void test_command_from_events(void **state)
{
	_cleanup_free_ char *out = testlib_path(dir, "env.out"), *cmd = NULL,
			    *spool = testlib_path(dir, "spool1");
	struct cluster_config *cfg;
	struct event_bus *b = NULL;
	struct notify *n = NULL;
	struct seen s = {0};
	struct event e = {0};
	void *raw = NULL;
	char *data = NULL;
	size_t len;

	(void)state;
	assert_true(asprintf(&cmd, "env | grep ^RESYNC_ | sort > %s", out) > 0);
	cfg = conf(cmd);
	assert_int_equal(event_bus_new("demo", &b), 0);
	assert_int_equal(event_queue_new(b, 64, &s.q), 0);
	struct notify_opts o = {.cfg = cfg, .node = "n1", .spool_dir = spool, .bus = b};

	assert_int_equal(notify_new(&o, &n), 0);
	e.kind = EVENT_RESYNC_STARTED;
	strcpy(e.node, "n2");
	e.state = META_STATE_OUTDATED;
	event_bus_publish(b, &e);
	strcpy(e.node, "n3");
	event_bus_publish(b, &e);
	e.kind = EVENT_RESYNC_FINISHED;
	strcpy(e.node, "n2");
	e.state = META_STATE_UPTODATE;
	e.bytes_compared = 1 << 20;
	e.bytes_sent = 4096;
	event_bus_publish(b, &e);
	e.kind = EVENT_RESYNC_CANCELLED;
	strcpy(e.node, "n3");
	e.state = META_STATE_INCONSISTENT;
	strcpy(e.error, "cancelled");
	event_bus_publish(b, &e);
	memset(&e, 0, sizeof(e));
	e.kind = EVENT_RESYNC_DONE;
	e.result = EVENT_RESULT_CANCELLED;
	e.nodes = 2;
	event_bus_publish(b, &e);
	assert_int_equal(testlib_wait_until(drain, &s, 20000000), 0);
	assert_int_equal(s.failed, 0);
	assert_int_equal(s.channel, NOTIFY_COMMAND);
	assert_int_equal(testlib_file_read(out, &raw, &len), 0);
	/* testlib_file_read does not terminate: strstr needs a string. */
	data = strndup(raw, len);
	free(raw);
	assert_non_null(data);
	assert_non_null(strstr(data, "RESYNC_CLUSTER=demo\n"));
	assert_non_null(strstr(data, "RESYNC_EVENT=resync_cancelled\n"));
	assert_non_null(strstr(data, "RESYNC_RESULT=cancelled\n"));
	assert_non_null(strstr(data, "RESYNC_NODES=n2 n3\n"));
	assert_non_null(strstr(data, "RESYNC_NODE_1_RESULT=resynced\n"));
	assert_non_null(strstr(data, "RESYNC_NODE_1_STATE_BEFORE=Outdated\n"));
	assert_non_null(strstr(data, "RESYNC_NODE_1_BYTES_COMPARED=1048576\n"));
	assert_non_null(strstr(data, "RESYNC_NODE_2_RESULT=cancelled\n"));
	free(data);
	wait_settled(n, spool);
	notify_free(n);
	event_queue_free(s.q);
	event_bus_free(b);
	cluster_config_free(cfg);
}

/* A state change is news when nobody asked for it and it is Diverged or
 * Inconsistent: the notification names the states before and after. */
static void test_state_from_events(void **state)
{
	_cleanup_free_ char *out = testlib_path(dir, "state.out"), *cmd = NULL,
			    *spool = testlib_path(dir, "spool4");
	struct cluster_config *cfg;
	struct event_bus *b = NULL;
	struct notify *n = NULL;
	struct seen s = {0};
	void *raw = NULL;
	char *data = NULL;
	size_t len;

	(void)state;
	assert_true(asprintf(&cmd, "env | grep ^RESYNC_ | sort >> %s", out) > 0);
	cfg = conf(cmd);
	assert_int_equal(event_bus_new("demo", &b), 0);
	assert_int_equal(event_queue_new(b, 64, &s.q), 0);
	struct notify_opts o = {.cfg = cfg, .node = "n2", .spool_dir = spool, .bus = b};

	assert_int_equal(notify_new(&o, &n), 0);
	/* No news: asked for, or a state that is not a problem. */
	event_publish_state(b, "n2", EVENT_STATE_NONE, META_STATE_INCONSISTENT, true,
			    "resync in progress");
	event_publish_state(b, "n2", META_STATE_INCONSISTENT, META_STATE_UPTODATE, false,
			    "resync committed");
	assert_int_equal(notify_pending(n), 0);
	event_publish_state(b, "n2", META_STATE_OUTDATED, META_STATE_DIVERGED, false,
			    "it holds writes that the primary lacks");
	assert_int_equal(testlib_wait_until(drain, &s, 20000000), 0);
	assert_int_equal(s.failed, 0);
	assert_int_equal(s.delivered, 1);
	assert_int_equal(testlib_file_read(out, &raw, &len), 0);
	data = strndup(raw, len);
	free(raw);
	assert_non_null(data);
	assert_non_null(strstr(data, "RESYNC_EVENT=state_changed\n"));
	assert_non_null(strstr(data, "RESYNC_RESULT=Diverged\n"));
	assert_non_null(strstr(data, "RESYNC_NODE_1_NAME=n2\n"));
	assert_non_null(strstr(data, "RESYNC_NODE_1_STATE_BEFORE=Outdated\n"));
	assert_non_null(strstr(data, "RESYNC_NODE_1_STATE_AFTER=Diverged\n"));
	assert_non_null(strstr(data, "RESYNC_NODE_1_ERROR=it holds writes that the primary lacks\n"));
	free(data);
	notify_free(n);
	event_queue_free(s.q);
	event_bus_free(b);
	cluster_config_free(cfg);
}

/* A command that fails keeps its notification in the spool; a new
 * notifier (a restarted daemon) finds it and delivers it. */
static void test_spool_across_restart(void **state)
{
	_cleanup_free_ char *flag = testlib_path(dir, "flag"), *out = testlib_path(dir, "out2"),
			    *spool = testlib_path(dir, "spool2"), *cmd = NULL;
	struct cluster_config *cfg;
	struct event_bus *b = NULL;
	struct notify *n = NULL;
	struct seen s = {0};
	json_object *p = sample();
	void *data = NULL;
	size_t len;

	(void)state;
	assert_true(asprintf(&cmd, "test -e %s && echo \"$RESYNC_ID $RESYNC_RESULT\" > %s", flag, out) > 0);
	cfg = conf(cmd);
	assert_int_equal(event_bus_new("demo", &b), 0);
	assert_int_equal(event_queue_new(b, 64, &s.q), 0);
	struct notify_opts o = {.cfg = cfg, .node = "n1", .spool_dir = spool, .bus = b,
				.backoff_min_ms = 50, .backoff_max_ms = 100};

	assert_int_equal(notify_new(&o, &n), 0);
	json_object_object_add(p, "id", json_object_new_string("run-1"));
	assert_int_equal(notify_submit(n, p), 0);
	assert_int_equal(spool_files(spool), 1);
	assert_int_equal(testlib_wait_until(failed_once, &s, 20000000), 0);
	assert_non_null(strstr(s.last_error, "exited with 1"));
	notify_free(n);
	n = NULL;
	assert_int_equal(spool_files(spool), 1);

	assert_int_equal(testlib_file_write(flag, "", 0), 0);
	s.delivered = 0;
	assert_int_equal(notify_new(&o, &n), 0);
	assert_int_equal(notify_pending(n), 1);
	assert_int_equal(testlib_wait_until(drain, &s, 20000000), 0);
	assert_int_equal(testlib_file_read(out, &data, &len), 0);
	assert_int_equal(len, 13);
	assert_memory_equal(data, "run-1 failed\n", 13);
	free(data);
	wait_settled(n, spool);
	notify_free(n);
	event_queue_free(s.q);
	event_bus_free(b);
	cluster_config_free(cfg);
}

/* A command past its time limit is killed, with its children, and the
 * attempt fails promptly. Damaged spool files are skipped. */
static void test_timeout_and_damage(void **state)
{
	_cleanup_free_ char *spool = testlib_path(dir, "spool3"), *bad = NULL;
	struct cluster_config *cfg = conf("sleep 30; sleep 30");
	struct event_bus *b = NULL;
	struct notify *n = NULL;
	struct seen s = {0};
	uint64_t t0;

	(void)state;
	assert_int_equal(mkdir(spool, 0700), 0);
	assert_true(asprintf(&bad, "%s/garbage.json", spool) > 0);
	assert_int_equal(testlib_file_write(bad, "{not json", 9), 0);
	assert_int_equal(event_bus_new("demo", &b), 0);
	assert_int_equal(event_queue_new(b, 64, &s.q), 0);
	struct notify_opts o = {.cfg = cfg, .node = "n1", .spool_dir = spool, .bus = b,
				.command_timeout_ms = 300, .backoff_min_ms = 60000};

	assert_int_equal(notify_new(&o, &n), 0);
	assert_int_equal(notify_pending(n), 0);
	t0 = clock_usec();
	assert_int_equal(notify_submit(n, sample()), 0);
	assert_int_equal(testlib_wait_until(failed_once, &s, 10000000), 0);
	assert_true(clock_usec() - t0 < 5000000);
	assert_non_null(strstr(s.last_error, "killed"));
	assert_int_equal(notify_pending(n), 1);
	notify_free(n);
	event_queue_free(s.q);
	event_bus_free(b);
	cluster_config_free(cfg);
}

static int setup(void **state)
{
	(void)state;
	return testlib_tmpdir_new(&dir);
}

static int teardown(void **state)
{
	(void)state;
	testlib_tmpdir_remove(dir);
	free(dir);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_email_format),
		cmocka_unit_test(test_env),
		cmocka_unit_test(test_command_from_events),
		cmocka_unit_test(test_state_from_events),
		cmocka_unit_test(test_spool_across_restart),
		cmocka_unit_test(test_timeout_and_damage),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
