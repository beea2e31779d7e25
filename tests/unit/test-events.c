/* The event bus: delivery to every subscriber in order, progress at most
 * once a second per node (and again at a new resync), the queue's drop
 * count, unsubscribe as a barrier, and the JSON form. */
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
	strcpy(e.state, "Inconsistent");
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_order_and_progress_limit),
		cmocka_unit_test(test_queue),
		cmocka_unit_test(test_json),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
