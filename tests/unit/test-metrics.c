/* Metrics: the text follows the events (state, progress, totals, last
 * result, peers), every line parses as Prometheus text format, and the
 * HTTP server answers /metrics, /health and 404. */
#include <curl/curl.h>
#include <json-c/json.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "events.h"
#include "metrics.h"

/* A line is a comment (# HELP/# TYPE), or NAME{LABELS} VALUE with a
 * metric name [a-zA-Z_:][a-zA-Z0-9_:]*, labels name="value" separated by
 * commas, and a value strtod takes whole. Returns the value of the line
 * whose series is exactly want (NAME or NAME{...}), or -1. */
static double parse_and_find(const char *text, const char *want, int *ret_lines)
{
	const char *s = text;
	double found = -1;
	int lines = 0;

	while (*s) {
		const char *nl = strchr(s, '\n');
		char line[512], *sp, *end;

		assert_non_null(nl);
		assert_true((size_t)(nl - s) < sizeof(line));
		memcpy(line, s, (size_t)(nl - s));
		line[nl - s] = 0;
		s = nl + 1;
		lines++;
		if (line[0] == '#') {
			assert_true(!strncmp(line, "# HELP ", 7) || !strncmp(line, "# TYPE ", 7));
			continue;
		}
		sp = strrchr(line, ' ');
		assert_non_null(sp);
		*sp = 0;
		double v = strtod(sp + 1, &end);

		assert_true(end != sp + 1 && *end == 0);
		assert_true((line[0] >= 'a' && line[0] <= 'z') || line[0] == '_');
		char *brace = strchr(line, '{');

		for (char *c = line; *c && c != brace; c++)
			assert_true(strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_:", *c));
		if (brace) {
			assert_int_equal(line[strlen(line) - 1], '}');
			/* name="value"(,name="value")* */
			char *p = brace + 1;

			while (*p != '}') {
				char *eq = strchr(p, '=');

				assert_non_null(eq);
				assert_int_equal(eq[1], '"');
				char *q = strchr(eq + 2, '"');

				assert_non_null(q);
				p = q + 1;
				if (*p == ',')
					p++;
			}
		}
		if (!strcmp(line, want))
			found = v;
	}
	if (ret_lines)
		*ret_lines = lines;
	return found;
}

static struct cluster_config *conf(void)
{
	struct cluster_config *cfg = NULL;
	char err[512];

	assert_int_equal(cluster_config_parse("t.conf",
					      "[cluster]\nname = demo\nprimary = n1\ninsecure = true\n"
					      "[node n1]\naddress = 127.0.0.1:7801\nvolume = /x/n1.img\n"
					      "[node n2]\naddress = 127.0.0.1:7802\nvolume = /x/n2.img\n",
					      err, sizeof(err), &cfg),
			 0);
	return cfg;
}

static double metric(struct metrics *m, const char *series)
{
	char *text = NULL;
	double v;
	int lines;

	assert_int_equal(metrics_render(m, &text), 0);
	v = parse_and_find(text, series, &lines);
	assert_true(lines > 30);
	free(text);
	return v;
}

static void test_follow_events(void **state)
{
	struct cluster_config *cfg = conf();
	struct event_bus *b = NULL;
	struct metrics *m = NULL;
	struct event e = {0};

	(void)state;
	assert_int_equal(event_bus_new("demo", &b), 0);
	struct metrics_opts o = {.cfg = cfg, .node = "n1", .listen = "127.0.0.1:0", .bus = b};

	assert_int_equal(metrics_new(&o, &m), 0);
	assert_true(metric(m, "resync_in_progress") == 0);
	assert_true(metric(m, "resync_node_state{node=\"n2\",state=\"Unknown\"}") == 1);
	assert_true(metric(m, "resync_last_success_timestamp_seconds") == 0);
	e.kind = EVENT_RESYNC_STARTED;
	strcpy(e.node, "n2");
	e.state = META_STATE_OUTDATED;
	event_bus_publish(b, &e);
	assert_true(metric(m, "resync_in_progress") == 1);
	assert_true(metric(m, "resync_node_state{node=\"n2\",state=\"Outdated\"}") == 1);
	assert_true(metric(m, "resync_node_state{node=\"n2\",state=\"Unknown\"}") == 0);
	assert_true(metric(m, "resync_peer_connected{peer=\"n2\"}") == 1);
	memset(&e, 0, sizeof(e));
	e.kind = EVENT_PROGRESS;
	strcpy(e.node, "n2");
	e.bytes_done = 25;
	e.bytes_total = 100;
	e.bytes_compared = 1000;
	e.bytes_sent = 30;
	event_bus_publish(b, &e);
	assert_true(metric(m, "resync_progress_ratio{node=\"n2\"}") == 0.25);
	assert_true(metric(m, "resync_bytes_sent_total{node=\"n2\"}") == 30);
	e.kind = EVENT_RESYNC_FINISHED;
	e.state = META_STATE_UPTODATE;
	e.bytes_sent = 120;
	e.round_trips = 7;
	event_bus_publish(b, &e);
	memset(&e, 0, sizeof(e));
	e.kind = EVENT_RESYNC_DONE;
	e.result = EVENT_RESULT_SUCCESS;
	e.seconds = 2.5;
	event_bus_publish(b, &e);
	assert_true(metric(m, "resync_in_progress") == 0);
	assert_true(metric(m, "resync_progress_ratio{node=\"n2\"}") == 1);
	assert_true(metric(m, "resync_bytes_compared_total{node=\"n2\"}") == 1000);
	assert_true(metric(m, "resync_bytes_sent_total{node=\"n2\"}") == 120);
	assert_true(metric(m, "resync_last_round_trips{node=\"n2\"}") == 7);
	assert_true(metric(m, "resync_node_state{node=\"n2\",state=\"UpToDate\"}") == 1);
	assert_true(metric(m, "resync_last_result{result=\"success\"}") == 1);
	assert_true(metric(m, "resync_last_result{result=\"failed\"}") == 0);
	assert_true(metric(m, "resync_last_duration_seconds") == 2.5);
	assert_true(metric(m, "resync_last_success_timestamp_seconds") > 1600000000);
	event_publish_peer(b, "n2", false);
	assert_true(metric(m, "resync_peer_connected{peer=\"n2\"}") == 0);
	/* Counters only grow: a second run adds to the first. */
	memset(&e, 0, sizeof(e));
	e.kind = EVENT_RESYNC_STARTED;
	strcpy(e.node, "n2");
	event_bus_publish(b, &e);
	e.kind = EVENT_RESYNC_FAILED;
	e.bytes_compared = 500;
	event_bus_publish(b, &e);
	assert_true(metric(m, "resync_bytes_compared_total{node=\"n2\"}") == 1500);
	/* The run's result, derived by the bus from its failed node. */
	event_publish_done(b, 1, NULL);
	assert_true(metric(m, "resync_last_result{result=\"failed\"}") == 1);
	assert_true(metric(m, "resync_last_result{result=\"success\"}") == 0);
	assert_true(metric(m, "resync_last_result{result=\"cancelled\"}") == 0);
	event_publish_state(b, "n2", META_STATE_UPTODATE, META_STATE_DIVERGED, false, NULL);
	assert_true(metric(m, "resync_node_state{node=\"n2\",state=\"Diverged\"}") == 1);
	assert_true(metric(m, "resync_node_state{node=\"n2\",state=\"UpToDate\"}") == 0);
	/* Notification attempts by channel. */
	memset(&e, 0, sizeof(e));
	e.kind = EVENT_NOTIFY_DELIVERED;
	e.channel = NOTIFY_WEBHOOK;
	event_bus_publish(b, &e);
	e.kind = EVENT_NOTIFY_FAILED;
	e.channel = NOTIFY_EMAIL;
	event_bus_publish(b, &e);
	event_bus_publish(b, &e);
	assert_true(metric(m, "resync_notifications_total{channel=\"webhook\",outcome=\"delivered\"}") == 1);
	assert_true(metric(m, "resync_notifications_total{channel=\"email\",outcome=\"failed\"}") == 2);
	assert_true(metric(m, "resync_notifications_total{channel=\"command\",outcome=\"failed\"}") == 0);
	/* Every state is a series, in the order they always had (no meta:
	 * this node's own state is Unknown). */
	{
		char *text = NULL;

		assert_int_equal(metrics_render(m, &text), 0);
		assert_non_null(strstr(text, "resync_node_state{node=\"n1\",state=\"UpToDate\"} 0\n"
					     "resync_node_state{node=\"n1\",state=\"Outdated\"} 0\n"
					     "resync_node_state{node=\"n1\",state=\"Inconsistent\"} 0\n"
					     "resync_node_state{node=\"n1\",state=\"Diverged\"} 0\n"
					     "resync_node_state{node=\"n1\",state=\"Unknown\"} 1\n"));
		free(text);
	}
	metrics_free(m);
	event_bus_free(b);
	cluster_config_free(cfg);
}

struct body {
	char buf[65536];
	size_t len;
};

static size_t sink(char *p, size_t size, size_t n, void *arg)
{
	struct body *b = arg;
	size_t k = size * n;

	if (b->len + k >= sizeof(b->buf))
		return 0;
	memcpy(b->buf + b->len, p, k);
	b->len += k;
	b->buf[b->len] = 0;
	return k;
}

static long get(uint16_t port, const char *path, struct body *b)
{
	char url[128];
	long code = 0;
	CURL *c = curl_easy_init();

	assert_non_null(c);
	b->len = 0;
	b->buf[0] = 0;
	snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", port, path);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, b);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
	assert_int_equal(curl_easy_perform(c), CURLE_OK);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
	curl_easy_cleanup(c);
	return code;
}

static void test_http(void **state)
{
	struct cluster_config *cfg = conf();
	struct event_bus *b = NULL;
	struct metrics *m = NULL, *m2 = NULL;
	static struct body body;
	char busy[64];

	(void)state;
	assert_int_equal(event_bus_new("demo", &b), 0);
	struct metrics_opts o = {.cfg = cfg, .node = "n1", .listen = "127.0.0.1:0", .bus = b};

	assert_int_equal(metrics_new(&o, &m), 0);
	assert_true(metrics_port(m) > 0);
	assert_int_equal(get(metrics_port(m), "/metrics", &body), 200);
	assert_true(parse_and_find(body.buf, "resync_in_progress", NULL) == 0);
	assert_int_equal(get(metrics_port(m), "/health", &body), 200);
	json_object *h = json_tokener_parse(body.buf), *v;

	assert_non_null(h);
	assert_true(json_object_object_get_ex(h, "status", &v));
	assert_string_equal(json_object_get_string(v), "ok");
	json_object_put(h);
	assert_int_equal(get(metrics_port(m), "/nothing", &body), 404);
	/* The same port twice: refused, not silently shared. */
	snprintf(busy, sizeof(busy), "127.0.0.1:%u", metrics_port(m));
	o.listen = busy;
	assert_true(metrics_new(&o, &m2) < 0);
	o.listen = "not an address";
	assert_true(metrics_new(&o, &m2) < 0);
	metrics_free(m);
	event_bus_free(b);
	cluster_config_free(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_follow_events),
		cmocka_unit_test(test_http),
	};
	int r;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	r = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return r;
}
