/* Live pacing of a resync (daemon/ratectl.c): the rate held within
 * tolerance (never faster, and not much slower), unlimited when 0, a pause
 * blocking until resume, the cancel flag releasing a paused pacer, rate
 * changes applying to a pacer already waiting, and the control commands
 * pause/resume/rate answered over a real control socket. The pacer reads
 * the monotonic clock itself: rates are measured on the real one, with
 * deadlines generous enough for a loaded machine. */
#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "control.h"
#include "resync/macro.h"
#include "ratectl.h"
#include "testlib.h"

#define DEADLINE_USEC (10 * 1000000ull)
/* Longer than the pacer's 50 ms tick, several times over. */
#define STILL_BLOCKED_USEC 300000ull

static void test_rate_held(void **state)
{
	const uint64_t rate = 4 << 20, batch = 64 << 10, total = 1 << 20;
	struct ratectl rc = {0};
	struct pacer p = {0};
	atomic_bool cancel = false;
	uint64_t t0, elapsed, expect = total * 1000000 / rate; /* 250 ms */

	(void)state;
	ratectl_reset(&rc, rate);
	t0 = clock_usec();
	for (uint64_t sent = 0; sent < total; sent += batch)
		ratectl_pace(&rc, &p, batch, &cancel);
	elapsed = clock_usec() - t0;
	/* Never faster than the rate (a little clock slack allowed)... */
	assert_true(elapsed >= expect * 95 / 100);
	/* ...and not much slower, even on a busy machine. */
	assert_true(elapsed <= expect + 2000000);
}

static void test_unlimited(void **state)
{
	struct ratectl rc = {0};
	struct pacer p = {0};
	atomic_bool cancel = false;
	uint64_t t0 = clock_usec();

	(void)state;
	ratectl_reset(&rc, 0);
	for (int i = 0; i < 1000; i++)
		ratectl_pace(&rc, &p, 1 << 30, &cancel);
	/* A TiB "sent" without a wait. */
	assert_true(clock_usec() - t0 < 2000000);
}

struct pacing {
	struct ratectl *rc;
	struct pacer p;
	uint64_t k;
	atomic_bool cancel;
	atomic_bool entered, returned;
	pthread_t thread;
};

static void *pacing_main(void *arg)
{
	struct pacing *pc = arg;

	atomic_store(&pc->entered, true);
	ratectl_pace(pc->rc, &pc->p, pc->k, &pc->cancel);
	atomic_store(&pc->returned, true);
	return NULL;
}

static bool returned(void *arg)
{
	return atomic_load(&((struct pacing *)arg)->returned);
}

static bool entered(void *arg)
{
	return atomic_load(&((struct pacing *)arg)->entered);
}

static void pacing_start_with(struct pacing *pc, struct ratectl *rc, uint64_t k,
			      void (*on_wait)(void *arg), void *on_wait_arg)
{
	memset(pc, 0, sizeof(*pc));
	pc->rc = rc;
	pc->k = k;
	pc->p.on_wait = on_wait;
	pc->p.on_wait_arg = on_wait_arg;
	assert_int_equal(pthread_create(&pc->thread, NULL, pacing_main, pc), 0);
	assert_int_equal(testlib_wait_until(entered, pc, DEADLINE_USEC), 0);
}

static void pacing_start(struct pacing *pc, struct ratectl *rc, uint64_t k)
{
	pacing_start_with(pc, rc, k, NULL, NULL);
}

static void pacing_join(struct pacing *pc)
{
	assert_int_equal(testlib_wait_until(returned, pc, DEADLINE_USEC), 0);
	assert_int_equal(pthread_join(pc->thread, NULL), 0);
}

static void test_pause_blocks_until_resume(void **state)
{
	struct ratectl rc = {0};
	struct pacing pc;

	(void)state;
	ratectl_reset(&rc, 0);
	ratectl_set_paused(&rc, true);
	pacing_start(&pc, &rc, 4096);
	/* Unlimited, yet held: the pause wins. */
	assert_int_equal(testlib_wait_until(returned, &pc, STILL_BLOCKED_USEC), -ETIMEDOUT);
	ratectl_set_paused(&rc, false);
	pacing_join(&pc);

	/* reset() starts a run unpaused. */
	ratectl_set_paused(&rc, true);
	ratectl_reset(&rc, 0);
	assert_false(atomic_load(&rc.paused));
	pacing_start(&pc, &rc, 4096);
	pacing_join(&pc);
}

static void count_wait(void *arg)
{
	atomic_fetch_add((atomic_uint *)arg, 1);
}

static bool waited_thrice(void *arg)
{
	return atomic_load((atomic_uint *)arg) >= 3;
}

/* The owner's hook (a job's keepalive) runs at every tick of a wait:
 * paused, or ahead of the rate; never when nothing waits. */
static void test_on_wait(void **state)
{
	struct ratectl rc = {0};
	struct pacing pc;
	atomic_uint n = 0;

	(void)state;
	ratectl_reset(&rc, 0);
	ratectl_set_paused(&rc, true);
	pacing_start_with(&pc, &rc, 4096, count_wait, &n);
	assert_int_equal(testlib_wait_until(waited_thrice, &n, DEADLINE_USEC), 0);
	assert_false(atomic_load(&pc.returned));
	ratectl_set_paused(&rc, false);
	pacing_join(&pc);

	/* 64 KiB at 256 KiB/s: a quarter second of ticks. */
	atomic_store(&n, 0);
	ratectl_reset(&rc, 256 << 10);
	pacing_start_with(&pc, &rc, 64 << 10, count_wait, &n);
	pacing_join(&pc);
	assert_true(atomic_load(&n) >= 1);

	atomic_store(&n, 0);
	ratectl_reset(&rc, 0);
	pacing_start_with(&pc, &rc, 1 << 30, count_wait, &n);
	pacing_join(&pc);
	assert_int_equal(atomic_load(&n), 0);
}

static void test_cancel_releases_paused(void **state)
{
	struct ratectl rc = {0};
	struct pacing pc;

	(void)state;
	ratectl_reset(&rc, 1024);
	ratectl_set_paused(&rc, true);
	pacing_start(&pc, &rc, 1 << 20);
	assert_int_equal(testlib_wait_until(returned, &pc, STILL_BLOCKED_USEC), -ETIMEDOUT);
	atomic_store(&pc.cancel, true);
	pacing_join(&pc);
	/* Still paused: only the cancelled pacer left. */
	assert_true(atomic_load(&rc.paused));
}

static void test_rate_change_live(void **state)
{
	struct ratectl rc = {0};
	struct pacing pc;
	uint64_t t0;

	(void)state;
	/* 1 MiB at 64 KiB/s: 16 s of wait, cut short by a faster rate. */
	ratectl_reset(&rc, 64 << 10);
	pacing_start(&pc, &rc, 1 << 20);
	assert_int_equal(testlib_wait_until(returned, &pc, STILL_BLOCKED_USEC), -ETIMEDOUT);
	t0 = clock_usec();
	ratectl_set_rate(&rc, 1ull << 30);
	pacing_join(&pc);
	assert_true(clock_usec() - t0 < 5000000);

	/* And by lifting the limit. */
	ratectl_reset(&rc, 64 << 10);
	pacing_start(&pc, &rc, 1 << 20);
	assert_int_equal(testlib_wait_until(returned, &pc, STILL_BLOCKED_USEC), -ETIMEDOUT);
	ratectl_set_rate(&rc, 0);
	pacing_join(&pc);

	/* A slower rate applies from the change on: what the pacer already
	 * accounted is due at the new rate. */
	ratectl_reset(&rc, 1ull << 30);
	{
		struct pacer p = {0};
		atomic_bool cancel = false;

		ratectl_pace(&rc, &p, 1 << 20, &cancel);
		ratectl_set_rate(&rc, 4 << 20);
		t0 = clock_usec();
		ratectl_pace(&rc, &p, 1 << 20, &cancel); /* 250 ms at 4 MiB/s */
		assert_true(clock_usec() - t0 >= 250000 * 95 / 100);
	}
}

/* ---- the control commands, over a real socket ---- */

struct ctl {
	struct ratectl rc;
	bool running;
};

static int cmd_rate(void *userdata, struct control_client *c, struct json_object *req)
{
	struct ctl *ctl = userdata;

	return ratectl_cmd(&ctl->rc, ctl->running, c, req);
}

static const struct control_field rate_fields[] = {
	{"rate", CONTROL_FIELD_UINT64, CONTROL_FIELD_REQUIRED},
	{NULL, 0, 0},
};

static const struct control_command cmds[] = {
	{"pause", cmd_rate, NULL, 0},
	{"resume", cmd_rate, NULL, 0},
	{"rate", cmd_rate, rate_fields, 0},
	{"bogus", cmd_rate, NULL, 0},
};

static struct json_object *roundtrip(int fd, const char *line)
{
	struct json_object *o = NULL;

	assert_int_equal(write(fd, line, strlen(line)), (ssize_t)strlen(line));
	assert_int_equal(control_recv(fd, 5000, &o), 0);
	return o;
}

static json_object *get(json_object *o, const char *key)
{
	json_object *v = NULL;

	assert_true(json_object_object_get_ex(o, key, &v));
	return v;
}

static void test_cmd(void **state)
{
	_cleanup_free_ char *dir = NULL, *path = NULL;
	struct control_server *s;
	struct ctl ctl = {0};
	json_object *o;
	int fd;

	(void)state;
	assert_int_equal(testlib_tmpdir_new(&dir), 0);
	path = testlib_path(dir, "ctl.sock");
	assert_non_null(path);
	ratectl_reset(&ctl.rc, 1000);
	assert_int_equal(control_server_new(path, "test", cmds, 4, &ctl, &s), 0);
	assert_int_equal(control_connect(path, &fd), 0);

	/* Nothing running: refused, nothing changed. */
	o = roundtrip(fd, "{\"cmd\":\"pause\"}\n");
	assert_false(json_object_get_boolean(get(o, "ok")));
	assert_non_null(strstr(json_object_get_string(get(o, "error")), "no resync is running"));
	json_object_put(o);
	assert_false(atomic_load(&ctl.rc.paused));

	ctl.running = true;
	o = roundtrip(fd, "{\"cmd\":\"pause\"}\n");
	assert_true(json_object_get_boolean(get(o, "ok")));
	assert_true(json_object_get_boolean(get(o, "paused")));
	assert_int_equal(json_object_get_uint64(get(o, "max_rate")), 1000);
	assert_true(json_object_get_boolean(get(o, "running")));
	json_object_put(o);
	assert_true(atomic_load(&ctl.rc.paused));

	o = roundtrip(fd, "{\"cmd\":\"rate\",\"rate\":1048576}\n");
	assert_true(json_object_get_boolean(get(o, "ok")));
	assert_int_equal(json_object_get_uint64(get(o, "max_rate")), 1048576);
	assert_true(json_object_get_boolean(get(o, "paused")));
	json_object_put(o);
	assert_int_equal(atomic_load(&ctl.rc.rate), 1048576);

	/* Bad rates are refused (by the socket's field check) naming the field, and change nothing. */
	o = roundtrip(fd, "{\"cmd\":\"rate\",\"rate\":\"fast\"}\n");
	assert_false(json_object_get_boolean(get(o, "ok")));
	assert_non_null(strstr(json_object_get_string(get(o, "error")), "field \"rate\""));
	json_object_put(o);
	o = roundtrip(fd, "{\"cmd\":\"rate\",\"rate\":-1}\n");
	assert_false(json_object_get_boolean(get(o, "ok")));
	json_object_put(o);
	o = roundtrip(fd, "{\"cmd\":\"rate\"}\n");
	assert_false(json_object_get_boolean(get(o, "ok")));
	json_object_put(o);
	assert_int_equal(atomic_load(&ctl.rc.rate), 1048576);

	o = roundtrip(fd, "{\"cmd\":\"rate\",\"rate\":0}\n");
	assert_true(json_object_get_boolean(get(o, "ok")));
	assert_int_equal(json_object_get_uint64(get(o, "max_rate")), 0);
	json_object_put(o);

	o = roundtrip(fd, "{\"cmd\":\"resume\"}\n");
	assert_true(json_object_get_boolean(get(o, "ok")));
	assert_false(json_object_get_boolean(get(o, "paused")));
	json_object_put(o);
	assert_false(atomic_load(&ctl.rc.paused));

	/* A command it does not know: -EINVAL, answered by the server. */
	o = roundtrip(fd, "{\"cmd\":\"bogus\"}\n");
	assert_false(json_object_get_boolean(get(o, "ok")));
	json_object_put(o);

	close(fd);
	control_server_free(s);
	testlib_tmpdir_remove(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rate_held),
		cmocka_unit_test(test_unlimited),
		cmocka_unit_test(test_pause_blocks_until_resume),
		cmocka_unit_test(test_cancel_releases_paused),
		cmocka_unit_test(test_on_wait),
		cmocka_unit_test(test_rate_change_live),
		cmocka_unit_test(test_cmd),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
