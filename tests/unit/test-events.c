/* The event bus: delivery to every subscriber in order, progress at most
 * once a second per node (and again at a new resync), the queue's drop
 * count, unsubscribe as a barrier, the run's result, and the JSON and text
 * forms of every kind (byte for byte: `events --json` and its readers rely
 * on them). */
#include <errno.h>
#include <json-c/json.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "events.h"

struct rec {
	int n;
	enum event_kind kinds[64];
	char nodes[64][RESYNC_NAME_MAX + 1];
};

static void rec_fn(void *arg, const struct event *e)
{
	struct rec *r = arg;

	if (r->n < 64) {
		r->kinds[r->n] = e->kind;
		strcpy(r->nodes[r->n], e->node);
	}
	r->n++;
}

static void ev(struct event_bus *b, enum event_kind k, const char *node)
{
	struct event e = {.kind = k};

	strcpy(e.node, node);
	event_bus_publish(b, &e);
}

static void test_order_and_progress_limit(void **state)
{
	struct event_bus *b = NULL;
	struct event_sub *s1 = NULL, *s2 = NULL;
	struct rec r1 = {0}, r2 = {0};

	(void)state;
	assert_int_equal(event_bus_new("demo", &b), 0);
	assert_int_equal(event_bus_subscribe(b, rec_fn, &r1, &s1), 0);
	assert_int_equal(event_bus_subscribe(b, rec_fn, &r2, &s2), 0);
	ev(b, EVENT_RESYNC_STARTED, "n2");
	ev(b, EVENT_PROGRESS, "n2");
	ev(b, EVENT_PROGRESS, "n2"); /* within a second: dropped */
	ev(b, EVENT_PROGRESS, "n3"); /* another node: its own clock */
	ev(b, EVENT_PROGRESS, "n3");
	ev(b, EVENT_RESYNC_FINISHED, "n2");
	ev(b, EVENT_RESYNC_STARTED, "n2"); /* a new run resets n2's clock */
	ev(b, EVENT_PROGRESS, "n2");
	assert_int_equal(r1.n, 6);
	assert_int_equal(r2.n, 6);
	assert_int_equal(r1.kinds[0], EVENT_RESYNC_STARTED);
	assert_int_equal(r1.kinds[1], EVENT_PROGRESS);
	assert_string_equal(r1.nodes[1], "n2");
	assert_int_equal(r1.kinds[2], EVENT_PROGRESS);
	assert_string_equal(r1.nodes[2], "n3");
	assert_int_equal(r1.kinds[3], EVENT_RESYNC_FINISHED);
	assert_int_equal(r1.kinds[4], EVENT_RESYNC_STARTED);
	assert_int_equal(r1.kinds[5], EVENT_PROGRESS);
	event_bus_unsubscribe(b, s1);
	ev(b, EVENT_RESYNC_DONE, "");
	assert_int_equal(r1.n, 6);
	assert_int_equal(r2.n, 7);
	event_bus_unsubscribe(b, s2);
	event_bus_free(b);
	event_bus_publish(NULL, &(struct event){0}); /* no bus: no-op */
}

static void test_queue(void **state)
{
	struct event_bus *b = NULL;
	struct event_queue *q = NULL;
	struct event e;
	uint64_t dropped = 0;

	(void)state;
	assert_int_equal(event_bus_new("demo", &b), 0);
	assert_int_equal(event_queue_new(b, 4, &q), 0);
	assert_int_equal(event_queue_pop(q, 0, &e, &dropped), 0);
	for (int i = 0; i < 6; i++)
		ev(b, EVENT_STATE_CHANGED, i % 2 ? "odd" : "even");
	/* 6 into a queue of 4: the two oldest are dropped and counted. */
	assert_int_equal(event_queue_pop(q, 10, &e, &dropped), 1);
	assert_int_equal(dropped, 2);
	assert_string_equal(e.node, "even");
	assert_true(e.time_usec > 1600000000ll * 1000000);
	for (int i = 0; i < 3; i++)
		assert_int_equal(event_queue_pop(q, 10, &e, NULL), 1);
	assert_int_equal(event_queue_pop(q, 20, &e, &dropped), 0);
	assert_int_equal(dropped, 0);
	event_queue_free(q);
	event_bus_free(b);
}

static void test_json(void **state)
{
	struct event e = {.kind = EVENT_RESYNC_FAILED, .time_usec = 1700000000123456ll,
			  .bytes_compared = 4096, .bytes_sent = 100, .seconds = 1.5};
	json_object *o, *v;
	char line[512];

	(void)state;
	strcpy(e.node, "n2");
	e.state = META_STATE_INCONSISTENT;
	strcpy(e.error, "connection reset");
	o = event_to_json(&e, "demo");
	assert_non_null(o);
	assert_true(json_object_object_get_ex(o, "type", &v));
	assert_string_equal(json_object_get_string(v), "event");
	assert_true(json_object_object_get_ex(o, "event", &v));
	assert_string_equal(json_object_get_string(v), "resync_failed");
	assert_true(json_object_object_get_ex(o, "cluster", &v));
	assert_string_equal(json_object_get_string(v), "demo");
	assert_true(json_object_object_get_ex(o, "time", &v));
	assert_string_equal(json_object_get_string(v), "2023-11-14T22:13:20.123456Z");
	assert_true(json_object_object_get_ex(o, "bytes_compared", &v));
	assert_int_equal(json_object_get_int64(v), 4096);
	assert_true(json_object_object_get_ex(o, "error", &v));
	assert_string_equal(json_object_get_string(v), "connection reset");
	json_object_put(o);
	event_format(&e, line, sizeof(line));
	assert_non_null(strstr(line, "resync_failed n2 state Inconsistent"));
	assert_non_null(strstr(line, "connection reset"));
	for (int k = 0; k < EVENT_KIND_COUNT; k++)
		assert_string_not_equal(event_kind_name((enum event_kind)k), "unknown");
}

#define T0 1700000000123456ll
#define GEN "0123abcd-0000-4000-8000-000000000001"
#define HEAD(kind) "{\"type\":\"event\",\"event\":\"" kind "\",\"cluster\":\"demo\"," \
		   "\"time\":\"2023-11-14T22:13:20.123456Z\",\"ts\":1700000000.123456,"
#define TIME "2023-11-14T22:13:20.123456Z "

/* The JSON and the text line of e, compared with what they were when the
 * event's fields were strings. */
static void check_forms(const struct event *e, const char *json, const char *text)
{
	json_object *o = event_to_json(e, "demo");
	char line[1024];

	assert_non_null(o);
	assert_string_equal(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN), json);
	json_object_put(o);
	event_format(e, line, sizeof(line));
	assert_string_equal(line, text);
}

static void test_json_every_kind(void **state)
{
	struct event e;

	(void)state;
#define NEW(k) memset(&e, 0, sizeof(e)), e.kind = (k), e.time_usec = T0
	NEW(EVENT_RESYNC_STARTED);
	strcpy(e.node, "n2");
	e.state = META_STATE_OUTDATED;
	strcpy(e.generation, GEN);
	check_forms(&e, HEAD("resync_started") "\"node\":\"n2\",\"state\":\"Outdated\","
			"\"generation\":\"" GEN "\"}",
		    TIME "resync_started n2 state Outdated");

	NEW(EVENT_PROGRESS);
	strcpy(e.node, "n2");
	e.phase = EVENT_PHASE_TRANSFER;
	e.bytes_compared = 1048576;
	e.bytes_sent = 4096;
	e.bytes_done = 2048;
	e.bytes_total = 8192;
	e.rate = 1536.5;
	check_forms(&e, HEAD("progress") "\"node\":\"n2\",\"phase\":\"transfer\","
			"\"bytes_compared\":1048576,\"bytes_sent\":4096,\"bytes_done\":2048,"
			"\"bytes_total\":8192,\"rate\":1536.5}",
		    TIME "progress n2 transfer 2048/8192 bytes, 4096 sent, 0.0 MiB/s");

	NEW(EVENT_STATE_CHANGED);
	strcpy(e.node, "n2");
	e.old_state = META_STATE_INCONSISTENT;
	e.state = META_STATE_UPTODATE;
	strcpy(e.reason, "resync committed");
	e.expected = true;
	check_forms(&e, HEAD("state_changed") "\"node\":\"n2\",\"old_state\":\"Inconsistent\","
			"\"state\":\"UpToDate\",\"reason\":\"resync committed\",\"expected\":true}",
		    TIME "state_changed n2 Inconsistent -> UpToDate: resync committed");

	/* No old state: an empty string, and "?" in the text. */
	NEW(EVENT_STATE_CHANGED);
	strcpy(e.node, "n3");
	e.old_state = EVENT_STATE_NONE;
	e.state = META_STATE_INCONSISTENT;
	strcpy(e.reason, "resync in progress");
	e.expected = true;
	check_forms(&e, HEAD("state_changed") "\"node\":\"n3\",\"old_state\":\"\","
			"\"state\":\"Inconsistent\",\"reason\":\"resync in progress\","
			"\"expected\":true}",
		    TIME "state_changed n3 ? -> Inconsistent: resync in progress");

	NEW(EVENT_RESYNC_FINISHED);
	strcpy(e.node, "n2");
	e.state = META_STATE_UPTODATE;
	e.bytes_compared = 1048576;
	e.bytes_sent = 4096;
	e.round_trips = 9;
	e.seconds = 1.25;
	check_forms(&e, HEAD("resync_finished") "\"node\":\"n2\",\"state\":\"UpToDate\","
			"\"bytes_compared\":1048576,\"bytes_sent\":4096,\"round_trips\":9,"
			"\"seconds\":1.25}",
		    TIME "resync_finished n2 state UpToDate, 1048576 bytes compared, 4096 sent, 1.2 s");

	NEW(EVENT_RESYNC_FAILED);
	strcpy(e.node, "n2");
	e.state = META_STATE_INCONSISTENT;
	e.bytes_compared = 4096;
	e.bytes_sent = 100;
	e.seconds = 1.5;
	strcpy(e.error, "connection reset");
	check_forms(&e, HEAD("resync_failed") "\"node\":\"n2\",\"state\":\"Inconsistent\","
			"\"bytes_compared\":4096,\"bytes_sent\":100,\"round_trips\":0,"
			"\"seconds\":1.5,"
			"\"error\":\"connection reset\"}",
		    TIME "resync_failed n2 state Inconsistent, 4096 bytes compared, 100 sent, 1.5 s: "
			 "connection reset");

	NEW(EVENT_RESYNC_CANCELLED);
	strcpy(e.node, "n3");
	e.state = META_STATE_DIVERGED;
	e.seconds = 0.5;
	strcpy(e.error, "cancelled");
	check_forms(&e, HEAD("resync_cancelled") "\"node\":\"n3\",\"state\":\"Diverged\","
			"\"bytes_compared\":0,\"bytes_sent\":0,\"round_trips\":0,\"seconds\":0.5,"
			"\"error\":\"cancelled\"}",
		    TIME "resync_cancelled n3 state Diverged, 0 bytes compared, 0 sent, 0.5 s: cancelled");

	NEW(EVENT_RESYNC_DONE);
	e.result = EVENT_RESULT_CANCELLED;
	e.nodes = 2;
	e.seconds = 3.5;
	strcpy(e.generation, GEN);
	check_forms(&e, HEAD("resync_done") "\"result\":\"cancelled\",\"nodes\":2,\"seconds\":3.5,"
			"\"generation\":\"" GEN "\"}",
		    TIME "resync_done cancelled, 2 nodes, 3.5 s");

	NEW(EVENT_PEER);
	strcpy(e.node, "n2");
	e.connected = true;
	check_forms(&e, HEAD("peer") "\"node\":\"n2\",\"state\":\"connected\"}",
		    TIME "peer n2 connected");
	NEW(EVENT_PEER);
	strcpy(e.node, "n3");
	check_forms(&e, HEAD("peer") "\"node\":\"n3\",\"state\":\"disconnected\"}",
		    TIME "peer n3 disconnected");

	NEW(EVENT_NOTIFY_DELIVERED);
	e.channel = NOTIFY_WEBHOOK;
	strcpy(e.id, "1700000000123456-1a2b3c4d");
	e.attempts = 1;
	check_forms(&e, HEAD("notify_delivered") "\"channel\":\"webhook\","
			"\"id\":\"1700000000123456-1a2b3c4d\",\"attempts\":1}",
		    TIME "notify_delivered webhook 1700000000123456-1a2b3c4d after 1 attempts");

	NEW(EVENT_NOTIFY_FAILED);
	e.channel = NOTIFY_EMAIL;
	strcpy(e.id, "1700000000123456-1a2b3c4d");
	e.attempts = 3;
	strcpy(e.error, "smtp: timed out");
	e.retry = 4;
	check_forms(&e, HEAD("notify_failed") "\"channel\":\"email\","
			"\"id\":\"1700000000123456-1a2b3c4d\",\"attempts\":3,"
			"\"error\":\"smtp: timed out\",\"retry\":4.0}",
		    TIME "notify_failed email 1700000000123456-1a2b3c4d attempt 3: smtp: timed out");
#undef NEW
}

struct last {
	struct event e;
	int n;
};

static void last_fn(void *arg, const struct event *e)
{
	struct last *l = arg;

	l->e = *e;
	l->n++;
}

/* The helpers fill the enums; resync_done's result comes from the run's
 * terminal events. */
static void test_publish_helpers(void **state)
{
	struct event_bus *b = NULL;
	struct event_sub *s = NULL;
	struct last l = {0};

	(void)state;
	assert_int_equal(event_bus_new("demo", &b), 0);
	assert_int_equal(event_bus_subscribe(b, last_fn, &l, &s), 0);
	event_publish_state(b, "n2", EVENT_STATE_NONE, META_STATE_INCONSISTENT, true, NULL);
	assert_int_equal(l.e.kind, EVENT_STATE_CHANGED);
	assert_int_equal(l.e.old_state, EVENT_STATE_NONE);
	assert_int_equal(l.e.state, META_STATE_INCONSISTENT);
	assert_string_equal(l.e.reason, "");
	assert_true(l.e.expected);
	event_publish_peer(b, "n2", true);
	assert_true(l.e.connected);
	event_publish_started(b, "n2", META_STATE_OUTDATED, GEN);
	assert_int_equal(l.e.state, META_STATE_OUTDATED);
	event_publish_progress(b, "n2", EVENT_PHASE_DIRTY, 1, 2, 3, 4, 5);
	assert_int_equal(l.e.phase, EVENT_PHASE_DIRTY);
	event_publish_end(b, "n2", -ECANCELED, META_STATE_INCONSISTENT, 0, 0, 0, 0, "stop");
	assert_int_equal(l.e.kind, EVENT_RESYNC_CANCELLED);
	assert_int_equal(l.e.state, META_STATE_INCONSISTENT);
	event_publish_done(b, 1, GEN);
	assert_int_equal(l.e.result, EVENT_RESULT_CANCELLED);
	event_publish_started(b, "n2", META_STATE_OUTDATED, GEN);
	event_publish_end(b, "n2", -EIO, META_STATE_INCONSISTENT, 0, 0, 0, 0, "io");
	event_publish_end(b, "n3", -ECANCELED, META_STATE_INCONSISTENT, 0, 0, 0, 0, "stop");
	event_publish_done(b, 2, GEN);
	assert_int_equal(l.e.result, EVENT_RESULT_FAILED);
	event_publish_started(b, "n2", META_STATE_OUTDATED, GEN);
	event_publish_end(b, "n2", 0, META_STATE_UPTODATE, 0, 0, 0, 0, NULL);
	event_publish_done(b, 1, GEN);
	assert_int_equal(l.e.result, EVENT_RESULT_SUCCESS);
	event_bus_unsubscribe(b, s);
	event_bus_free(b);
}

/* Every word of the enums, and the one way back for results. */
static void test_names(void **state)
{
	enum event_result r;

	(void)state;
	assert_string_equal(event_result_name(EVENT_RESULT_NONE), "");
	assert_string_equal(event_result_name(EVENT_RESULT_SUCCESS), "success");
	assert_string_equal(event_result_name(EVENT_RESULT_FAILED), "failed");
	assert_string_equal(event_result_name(EVENT_RESULT_CANCELLED), "cancelled");
	for (int i = EVENT_RESULT_NONE + 1; i < EVENT_RESULT_COUNT; i++) {
		assert_int_equal(event_result_parse(event_result_name((enum event_result)i), &r), 0);
		assert_int_equal(r, i);
	}
	assert_int_equal(event_result_parse("", &r), -EINVAL);
	assert_int_equal(event_result_parse("resynced", &r), -EINVAL);
	assert_string_equal(event_phase_name(EVENT_PHASE_NONE), "");
	assert_string_equal(event_phase_name(EVENT_PHASE_COMPARED), "compared");
	assert_string_equal(event_phase_name(EVENT_PHASE_DIRTY), "dirty");
	assert_string_equal(event_phase_name(EVENT_PHASE_TRANSFER), "transfer");
	assert_string_equal(event_state_name(EVENT_STATE_NONE), "");
	assert_string_equal(event_state_name(META_STATE_DIVERGED), "Diverged");
	assert_string_equal(notify_channel_name(NOTIFY_EMAIL), "email");
	assert_string_equal(notify_channel_name(NOTIFY_WEBHOOK), "webhook");
	assert_string_equal(notify_channel_name(NOTIFY_COMMAND), "command");
	assert_string_equal(notify_channel_name((enum notify_channel)0), "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_order_and_progress_limit),
		cmocka_unit_test(test_queue),
		cmocka_unit_test(test_json),
		cmocka_unit_test(test_json_every_kind),
		cmocka_unit_test(test_publish_helpers),
		cmocka_unit_test(test_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
