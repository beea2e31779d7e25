/* A plan's kept connections (daemon/plan-keep.c): given to the resync
 * that presents the token, closed for any other (another token, none,
 * after the expiry, at the stop), each close seen by the peer. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "node-int.h"
#include "resync/clock.h"

enum { NPEERS = 2, WAIT_MS = 10000 };

struct fx {
	struct cluster_config *cfg;
	struct node n;
	struct peer_conn *far[NPEERS]; /* the secondaries' ends */
};

static int setup_timeout(void **state, const char *timeout)
{
	struct fx *f = calloc(1, sizeof(*f));
	char err[256], text[512];

	assert_non_null(f);
	snprintf(text, sizeof(text),
		 "[cluster]\nname = demo\nprimary = p\ninsecure = true\nsession_timeout = %s\n"
		 "[node p]\naddress = 127.0.0.1:7901\nvolume = /nonexistent/p.img\n"
		 "[node s]\naddress = 127.0.0.1:7902\nvolume = /nonexistent/s.img\n"
		 "[node t]\naddress = 127.0.0.1:7903\nvolume = /nonexistent/t.img\n",
		 timeout);
	assert_int_equal(cluster_config_parse("test.conf", text, err, sizeof(err), &f->cfg), 0);
	f->n.cfg = f->cfg;
	assert_int_equal(node_plan_keep_new(&f->n), 0);
	*state = f;
	return 0;
}

static int setup(void **state)
{
	return setup_timeout(state, "120s");
}

static int setup_short(void **state)
{
	return setup_timeout(state, "1s"); /* kept half of it */
}

static void far_free(struct fx *f)
{
	for (size_t i = 0; i < NPEERS; i++) {
		peer_conn_free(f->far[i]);
		f->far[i] = NULL;
	}
}

static int teardown(void **state)
{
	struct fx *f = *state;

	node_plan_keep_free(&f->n);
	far_free(f);
	cluster_config_free(f->cfg);
	free(f);
	return 0;
}

/* A plan of NPEERS connections (s and t), kept: its token. */
static void keep(struct fx *f, char *token)
{
	struct plan_kept *v = calloc(NPEERS, sizeof(*v));
	static const char *const names[NPEERS] = {"s", "t"};

	assert_non_null(v);
	far_free(f);
	for (size_t i = 0; i < NPEERS; i++) {
		int sv[2];

		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
		assert_int_equal(peer_conn_new_plain(sv[0], "the primary", &v[i].c), 0);
		assert_int_equal(peer_conn_new_plain(sv[1], names[i], &f->far[i]), 0);
		peer_conn_set_timeout(f->far[i], WAIT_MS);
		v[i].peer = cluster_config_node(f->cfg, names[i]);
		assert_non_null(v[i].peer);
	}
	assert_int_equal(node_plan_keep_put(&f->n, v, NPEERS, token), 0);
	assert_true(strlen(token) > 8);
}

/* Every secondary's end sees its connection closed (within WAIT_MS). */
static void assert_closed(struct fx *f)
{
	unsigned char buf[64];
	uint16_t type;
	size_t len;

	for (size_t i = 0; i < NPEERS; i++)
		assert_int_equal(peer_conn_recv_frame(f->far[i], &type, buf, sizeof(buf), &len),
				 -ECONNRESET);
}

/* The right token: the connections, open, each to its secondary. */
static void test_take(void **state)
{
	struct fx *f = *state;
	char token[NODE_PLAN_TOKEN_MAX];
	struct plan_kept *v;
	unsigned char buf[64];
	uint16_t type;
	size_t n, len;

	keep(f, token);
	assert_true(node_plan_keep_take(&f->n, token, &v, &n));
	assert_int_equal(n, NPEERS);
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(v[i].peer->name, i ? "t" : "s");
		assert_int_equal(peer_conn_send_frame(v[i].c, WIRE_STATUS_REQ, NULL, 0), 0);
		assert_int_equal(peer_conn_recv_frame(f->far[i], &type, buf, sizeof(buf), &len), 0);
		assert_int_equal(type, WIRE_STATUS_REQ);
	}
	plan_kept_free(v, n);
	assert_closed(f);
	/* Taken once: a second resync with the token gets nothing. */
	assert_false(node_plan_keep_take(&f->n, token, &v, &n));
	assert_null(v);
	assert_int_equal(n, 0);
}

/* Another token, or none (another run): let go, closed. A new plan lets
 * the last one go too. */
static void test_refused(void **state)
{
	struct fx *f = *state;
	char token[NODE_PLAN_TOKEN_MAX], first[NODE_PLAN_TOKEN_MAX];
	struct plan_kept *v;
	size_t n;

	keep(f, token);
	token[0] = token[0] == '0' ? '1' : '0';
	assert_false(node_plan_keep_take(&f->n, token, &v, &n));
	assert_null(v);
	assert_closed(f);
	keep(f, token);
	assert_false(node_plan_keep_take(&f->n, NULL, &v, &n));
	assert_closed(f);
	keep(f, first);
	{
		struct peer_conn *old[NPEERS];

		memcpy(old, f->far, sizeof(old));
		memset(f->far, 0, sizeof(f->far));
		keep(f, token);
		assert_string_not_equal(first, token);
		for (size_t i = 0; i < NPEERS; i++) {
			unsigned char buf[64];
			uint16_t type;
			size_t len;

			peer_conn_set_timeout(old[i], WAIT_MS);
			assert_int_equal(peer_conn_recv_frame(old[i], &type, buf, sizeof(buf), &len),
					 -ECONNRESET);
			peer_conn_free(old[i]);
		}
	}
	assert_false(node_plan_keep_take(&f->n, first, &v, &n));
	assert_closed(f);
}

/* Kept half the session_timeout (0.5 s here): then closed by the
 * keeper's thread, and its token no longer takes anything. */
static void test_expiry(void **state)
{
	struct fx *f = *state;
	char token[NODE_PLAN_TOKEN_MAX];
	struct plan_kept *v;
	uint64_t t0 = clock_usec();
	size_t n;

	keep(f, token);
	assert_closed(f);
	assert_true(clock_usec() - t0 >= 400000);
	assert_false(node_plan_keep_take(&f->n, token, &v, &n));
}

/* The node's stop closes what is kept and joins the keeper. */
static void test_stop(void **state)
{
	struct fx *f = *state;
	char token[NODE_PLAN_TOKEN_MAX];
	struct plan_kept *v;
	size_t n;

	keep(f, token);
	node_plan_keep_stop(&f->n);
	assert_closed(f);
	assert_false(node_plan_keep_take(&f->n, token, &v, &n));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_take, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expiry, setup_short, teardown),
		cmocka_unit_test_setup_teardown(test_stop, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
