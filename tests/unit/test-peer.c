/* The peer transport on loopback: frames over TLS 1.3 with the cluster's
 * PSK, refusals with a reason on both sides (wrong key, another cluster,
 * plaintext against TLS), plaintext only when insecure, limits and
 * timeouts; and the TLS throughput of 1 MiB frames. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "peer.h"
#include "resync/macro.h"
#include "testlib.h"
#include "wire.h"

/* SRV_KEEPALIVE: echo each frame after srv_keepalive_ms() of KEEPALIVEs
 * every SRV_KEEPALIVE_EVERY_MS. */
enum srv_mode { SRV_ECHO, SRV_SINK, SRV_KEEPALIVE };
enum { SRV_KEEPALIVE_MS = 600, SRV_KEEPALIVE_EVERY_MS = 100 };

/* How long the server sends KEEPALIVEs before its answer: five times as
 * long under valgrind, whose threads (on a loaded machine) may be
 * scheduled hundreds of milliseconds apart, against a receive timeout of
 * half of it. Memcheck looks for memory errors, not timing. */
static unsigned srv_keepalive_ms(void)
{
	return testlib_valgrind() ? 5 * SRV_KEEPALIVE_MS : SRV_KEEPALIVE_MS;
}

struct srv {
	struct peer_ctx *ctx;
	struct peer_listener *l;
	enum srv_mode mode;
	int accept_r; /* result of accept */
	int recv_r;   /* the error that ended the loop */
	char err[512];
	char conn_err[512];
	uint64_t bytes;
	unsigned keepalives; /* sent, in SRV_KEEPALIVE */
	int tls;
	pthread_t thread;
};

static void *srv_main(void *arg)
{
	struct srv *s = arg;
	struct peer_conn *c = NULL;
	unsigned char *buf = malloc(RESYNC_WIRE_FRAME_MAX);

	s->accept_r = peer_listener_accept(s->l, 10000, s->err, sizeof(s->err), &c);
	if (s->accept_r < 0) {
		free(buf);
		return NULL;
	}
	/* The accept took the TCP connection only: the handshake is the
	 * connection owner's (here, this thread's). */
	s->accept_r = peer_conn_handshake(c, 0, s->err, sizeof(s->err));
	if (s->accept_r < 0) {
		peer_conn_free(c);
		free(buf);
		return NULL;
	}
	s->tls = peer_conn_tls(c);
	for (;;) {
		uint16_t type;
		size_t len;

		s->recv_r = peer_conn_recv_frame(c, &type, buf, RESYNC_WIRE_FRAME_MAX, &len);
		if (s->recv_r < 0) {
			snprintf(s->conn_err, sizeof(s->conn_err), "%s", peer_conn_error(c));
			break;
		}
		s->bytes += len;
		if (type == WIRE_COMMIT) {
			s->recv_r = peer_conn_send_frame(c, WIRE_COMMIT, buf, len);
			break;
		}
		if (s->mode == SRV_KEEPALIVE) {
			uint64_t until = clock_usec() + srv_keepalive_ms() * 1000ull;

			while (clock_usec() < until) {
				int r = peer_conn_keepalive(c, SRV_KEEPALIVE_EVERY_MS);

				if (r < 0)
					break;
				s->keepalives += r;
				usleep(10000);
			}
		}
		if (s->mode != SRV_SINK && peer_conn_send_frame(c, type, buf, len) < 0)
			break;
	}
	peer_conn_free(c);
	free(buf);
	return NULL;
}

struct fixture {
	char *dir;
	struct cluster_config *cfg, *cfg_insecure, *cfg_other;
	struct secret *key, *key2;
};

static struct cluster_config *parse(const char *text)
{
	struct cluster_config *cfg = NULL;
	char err[512];

	if (cluster_config_parse("test.conf", text, err, sizeof(err), &cfg) < 0)
		fail_msg("%s", err);
	return cfg;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	_cleanup_free_ char *path = NULL;
	char err[512];

	assert_int_equal(testlib_tmpdir_new(&f->dir), 0);
	path = testlib_path(f->dir, "demo.key");
	assert_int_equal(testlib_file_write(path, "correct horse battery staple\n", 29), 0);
	assert_int_equal(chmod(path, 0600), 0);
	assert_int_equal(secret_load(path, err, sizeof(err), &f->key), 0);
	assert_int_equal(secret_new("another key, same length.", 25, &f->key2), 0);
	f->cfg = parse("[cluster]\nname = demo\nsecret_file = /k\n"
		       "[node a]\naddress = 127.0.0.1:1\nvolume = /v\n");
	f->cfg_other = parse("[cluster]\nname = other\nsecret_file = /k\n"
			     "[node a]\naddress = 127.0.0.1:1\nvolume = /v\n");
	f->cfg_insecure = parse("[cluster]\nname = demo\ninsecure = true\n"
				"[node a]\naddress = 127.0.0.1:1\nvolume = /v\n");
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	cluster_config_free(f->cfg);
	cluster_config_free(f->cfg_other);
	cluster_config_free(f->cfg_insecure);
	secret_free(f->key);
	secret_free(f->key2);
	testlib_tmpdir_remove(f->dir);
	free(f->dir);
	free(f);
	return 0;
}

/* Start a server of cfg/key on a free loopback port; node describes it. */
static void srv_start(struct srv *s, const struct cluster_config *cfg, const struct secret *key,
		      enum srv_mode mode, struct node_config *node, char *addr, size_t addrlen)
{
	char err[512];

	memset(s, 0, sizeof(*s));
	s->mode = mode;
	assert_int_equal(peer_ctx_new(cfg, key, &s->ctx), 0);
	peer_ctx_set_timeouts(s->ctx, 5000, 10000);
	assert_int_equal(peer_listener_new(s->ctx, "127.0.0.1", 0, err, sizeof(err), &s->l), 0);
	assert_true(peer_listener_port(s->l) > 0);
	assert_true(peer_listener_fd(s->l) >= 0);
	snprintf(addr, addrlen, "127.0.0.1:%u", peer_listener_port(s->l));
	*node = (struct node_config){
		.name = (char *)"server",
		.address = addr,
		.host = (char *)"127.0.0.1",
		.port = peer_listener_port(s->l),
	};
	assert_int_equal(pthread_create(&s->thread, NULL, srv_main, s), 0);
}

static void srv_stop(struct srv *s)
{
	assert_int_equal(pthread_join(s->thread, NULL), 0);
	peer_listener_free(s->l);
	peer_ctx_free(s->ctx);
}

static void send_commit(struct peer_conn *c)
{
	unsigned char buf[64];
	struct wire_uuid g = {{7}};
	uint16_t type;
	size_t len;

	assert_int_equal(wire_commit_encode(&g, buf, sizeof(buf), &len), 0);
	assert_int_equal(peer_conn_send_frame(c, WIRE_COMMIT, buf, len), 0);
	assert_int_equal(peer_conn_recv_frame(c, &type, buf, sizeof(buf), &len), 0);
	assert_int_equal(type, WIRE_COMMIT);
}

static void exchange(struct peer_conn *c)
{
	struct wire_hello h = {.cluster = "demo", .node = "a", .proto_min = 1, .proto_max = 1,
			       .block_size = 65536, .volume_size = 1 << 30};
	unsigned char *out = malloc(RESYNC_WIRE_FRAME_MAX), *in = malloc(RESYNC_WIRE_FRAME_MAX);
	struct wire_hello d;
	uint16_t type;
	size_t len, got;

	assert_int_equal(wire_hello_encode(&h, out, RESYNC_WIRE_FRAME_MAX, &len), 0);
	assert_int_equal(peer_conn_send_frame(c, WIRE_HELLO, out, len), 0);
	assert_int_equal(peer_conn_recv_frame(c, &type, in, RESYNC_WIRE_FRAME_MAX, &got), 0);
	assert_int_equal(type, WIRE_HELLO);
	assert_int_equal(wire_hello_decode(in, got, &d), 0);
	assert_string_equal(d.cluster, "demo");

	/* Empty, small, large and the largest frames, echoed intact. */
	{
		static const size_t sizes[] = {0, 1, 16383, 16384, 16385, 1 << 20,
					       RESYNC_WIRE_FRAME_MAX};

		for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
			testlib_fill(out, sizes[i], i + 1);
			assert_int_equal(peer_conn_send_frame(c, WIRE_BLOCKS, out, sizes[i]), 0);
			assert_int_equal(
				peer_conn_recv_frame(c, &type, in, RESYNC_WIRE_FRAME_MAX, &got), 0);
			assert_int_equal(type, WIRE_BLOCKS);
			assert_int_equal(got, sizes[i]);
			assert_memory_equal(in, out, sizes[i]);
		}
	}
	assert_int_equal(peer_conn_send_frame(c, WIRE_BLOCKS, out, RESYNC_WIRE_FRAME_MAX + 1),
			 -EINVAL);
	assert_int_equal(peer_conn_send_frame(c, 0, out, 1), -EINVAL);
	free(out);
	free(in);
}

static void test_tls_exchange(void **state)
{
	struct fixture *f = *state;
	struct peer_ctx *ctx = NULL;
	struct peer_conn *c = NULL;
	struct node_config node;
	struct srv s;
	char addr[64], err[512];

	srv_start(&s, f->cfg, f->key, SRV_ECHO, &node, addr, sizeof(addr));
	assert_int_equal(peer_ctx_new(f->cfg, f->key, &ctx), 0);
	assert_true(peer_ctx_tls(ctx));
	assert_int_equal(peer_conn_connect(ctx, &node, err, sizeof(err), &c), 0);
	assert_true(peer_conn_tls(c));
	assert_non_null(strstr(peer_conn_remote(c), "server"));
	exchange(c);
	send_commit(c);
	assert_true(peer_conn_bytes_sent(c) > (1 << 20) + (uint64_t)RESYNC_WIRE_FRAME_MAX);
	assert_int_equal(peer_conn_bytes_sent(c), peer_conn_bytes_received(c));
	peer_conn_free(c);
	srv_stop(&s);
	assert_int_equal(s.accept_r, 0);
	assert_true(s.tls);
	peer_ctx_free(ctx);
}

static void test_wrong_key(void **state)
{
	struct fixture *f = *state;
	struct peer_ctx *ctx = NULL;
	struct peer_conn *c = NULL;
	struct node_config node;
	struct srv s;
	char addr[64], err[512];
	int r;

	srv_start(&s, f->cfg, f->key, SRV_ECHO, &node, addr, sizeof(addr));
	assert_int_equal(peer_ctx_new(f->cfg, f->key2, &ctx), 0);
	r = peer_conn_connect(ctx, &node, err, sizeof(err), &c);
	srv_stop(&s);
	print_message("client: %s\nserver: %s\n", err, s.err);
	assert_int_equal(r, -EKEYREJECTED);
	assert_null(c);
	assert_non_null(strstr(err, "node 'server'"));
	assert_non_null(strstr(err, "key"));
	assert_int_equal(s.accept_r, -EKEYREJECTED);
	assert_non_null(strstr(s.err, "authentication with 127.0.0.1:"));
	assert_non_null(strstr(s.err, "cluster key differs"));
	peer_ctx_free(ctx);
}

static void test_other_cluster(void **state)
{
	struct fixture *f = *state;
	struct peer_ctx *ctx = NULL;
	struct peer_conn *c = NULL;
	struct node_config node;
	struct srv s;
	char addr[64], err[512];
	int r;

	/* Same key file, another cluster name: refused by name. */
	srv_start(&s, f->cfg, f->key, SRV_ECHO, &node, addr, sizeof(addr));
	assert_int_equal(peer_ctx_new(f->cfg_other, f->key, &ctx), 0);
	r = peer_conn_connect(ctx, &node, err, sizeof(err), &c);
	srv_stop(&s);
	print_message("client: %s\nserver: %s\n", err, s.err);
	assert_int_equal(r, -EKEYREJECTED);
	assert_non_null(strstr(err, "refused the TLS handshake: its cluster name or cluster key"));
	assert_int_equal(s.accept_r, -EKEYREJECTED);
	assert_string_equal(s.err, "peer belongs to cluster 'other', this node to cluster 'demo'");
	peer_ctx_free(ctx);
}

static void test_insecure(void **state)
{
	struct fixture *f = *state;
	struct peer_ctx *ctx = NULL;
	struct peer_conn *c = NULL;
	struct node_config node;
	struct srv s;
	char addr[64], err[512];

	/* A secure cluster needs the key; an insecure one ignores it. */
	assert_int_equal(peer_ctx_new(f->cfg, NULL, &ctx), -EINVAL);
	srv_start(&s, f->cfg_insecure, NULL, SRV_ECHO, &node, addr, sizeof(addr));
	assert_int_equal(peer_ctx_new(f->cfg_insecure, NULL, &ctx), 0);
	assert_false(peer_ctx_tls(ctx));
	assert_int_equal(peer_conn_connect(ctx, &node, err, sizeof(err), &c), 0);
	assert_false(peer_conn_tls(c));
	exchange(c);
	send_commit(c);
	peer_conn_free(c);
	srv_stop(&s);
	assert_int_equal(s.accept_r, 0);
	assert_false(s.tls);
	peer_ctx_free(ctx);
}

static void test_plaintext_vs_tls(void **state)
{
	struct fixture *f = *state;
	struct peer_ctx *ctx = NULL;
	struct peer_conn *c = NULL;
	struct node_config node;
	struct srv s;
	char addr[64], err[512];
	unsigned char buf[64];
	uint16_t type;
	size_t len;
	int r;

	/* A plaintext client knocks at a TLS node. */
	srv_start(&s, f->cfg, f->key, SRV_ECHO, &node, addr, sizeof(addr));
	assert_int_equal(peer_ctx_new(f->cfg_insecure, NULL, &ctx), 0);
	assert_int_equal(peer_conn_connect(ctx, &node, err, sizeof(err), &c), 0);
	assert_int_equal(peer_conn_send_frame(c, WIRE_ACK, "\0\0\0\0\0\0\0\0", 8), 0);
	r = peer_conn_recv_frame(c, &type, buf, sizeof(buf), &len);
	srv_stop(&s);
	print_message("client: %s\nserver: %s\n", peer_conn_error(c), s.err);
	assert_true(r == -ECONNRESET || r == -EPIPE);
	assert_int_equal(s.accept_r, -EPROTO);
	assert_non_null(strstr(s.err, "speaks without TLS; this cluster requires TLS"));
	peer_conn_free(c);
	peer_ctx_free(ctx);

	/* A TLS client at a plaintext node. */
	srv_start(&s, f->cfg_insecure, NULL, SRV_ECHO, &node, addr, sizeof(addr));
	assert_int_equal(peer_ctx_new(f->cfg, f->key, &ctx), 0);
	r = peer_conn_connect(ctx, &node, err, sizeof(err), &c);
	srv_stop(&s);
	print_message("client: %s\nserver: %s\n", err, s.conn_err);
	assert_int_equal(r, -ECONNRESET);
	assert_non_null(strstr(err, "closed the connection during the TLS handshake"));
	assert_int_equal(s.accept_r, 0);
	assert_int_equal(s.recv_r, -EBADMSG);
	assert_non_null(strstr(s.conn_err, "started a TLS handshake; this cluster is configured "
					   "with insecure = true"));
	peer_ctx_free(ctx);
}

static void test_limits_timeouts(void **state)
{
	struct fixture *f = *state;
	struct peer_ctx *ctx = NULL;
	struct peer_conn *c = NULL;
	struct peer_listener *l = NULL;
	struct node_config node;
	struct srv s;
	char addr[64], err[512];
	unsigned char buf[64], big[100];
	uint16_t type;
	size_t len;
	uint64_t t0;

	srv_start(&s, f->cfg, f->key, SRV_ECHO, &node, addr, sizeof(addr));
	assert_int_equal(peer_ctx_new(f->cfg, f->key, &ctx), 0);
	assert_int_equal(peer_conn_connect(ctx, &node, err, sizeof(err), &c), 0);

	/* Nothing arrives: the receive gives up at its deadline. */
	peer_conn_set_timeout(c, 200);
	t0 = clock_usec();
	assert_int_equal(peer_conn_recv_frame(c, &type, buf, sizeof(buf), &len), -ETIMEDOUT);
	assert_true(clock_usec() - t0 >= 190000);
	assert_non_null(strstr(peer_conn_error(c), "timed out after 200 ms"));
	peer_conn_free(c);

	/* A frame larger than the receiver's buffer is refused before it
	 * is read. */
	srv_stop(&s);
	srv_start(&s, f->cfg, f->key, SRV_ECHO, &node, addr, sizeof(addr));
	assert_int_equal(peer_conn_connect(ctx, &node, err, sizeof(err), &c), 0);
	memset(big, 1, sizeof(big));
	assert_int_equal(peer_conn_send_frame(c, WIRE_BLOCKS, big, sizeof(big)), 0);
	assert_int_equal(peer_conn_recv_frame(c, &type, buf, sizeof(buf), &len), -EMSGSIZE);
	assert_non_null(strstr(peer_conn_error(c), "BLOCKS frame of 100 bytes"));
	assert_int_equal(peer_conn_recv_frame(c, &type, buf, sizeof(buf), &len), -EPIPE);
	peer_conn_free(c);
	srv_stop(&s);

	/* Nobody connects: accept gives up; nobody listens: refused. */
	assert_int_equal(peer_listener_new(ctx, "127.0.0.1", 0, err, sizeof(err), &l), 0);
	assert_int_equal(peer_listener_accept(l, 100, err, sizeof(err), &c), -ETIMEDOUT);
	node.port = peer_listener_port(l);
	peer_listener_free(l);
	assert_int_equal(peer_conn_connect(ctx, &node, err, sizeof(err), &c), -ECONNREFUSED);
	assert_non_null(strstr(err, "cannot connect to node 'server'"));
	peer_ctx_free(ctx);
}

/* A peer that sends KEEPALIVEs while it works on an answer: the receive
 * skips them, and each starts the deadline over, so an answer that takes
 * twice the timeout still arrives. A KEEPALIVE with a payload is refused. */
static void test_keepalive(void **state)
{
	struct fixture *f = *state;
	struct peer_ctx *ctx = NULL;
	struct peer_conn *c = NULL;
	struct node_config node;
	struct srv s;
	char addr[64], err[512];
	unsigned char buf[64] = {0}; /* its first byte is sent as a payload below */
	uint16_t type;
	size_t len;
	uint64_t t0, got;

	srv_start(&s, f->cfg, f->key, SRV_KEEPALIVE, &node, addr, sizeof(addr));
	assert_int_equal(peer_ctx_new(f->cfg, f->key, &ctx), 0);
	assert_int_equal(peer_conn_connect(ctx, &node, err, sizeof(err), &c), 0);
	peer_conn_set_timeout(c, srv_keepalive_ms() / 2);
	assert_int_equal(peer_conn_send_frame(c, WIRE_STATUS_REQ, NULL, 0), 0);
	t0 = clock_usec();
	got = peer_conn_bytes_received(c);
	assert_int_equal(peer_conn_recv_frame(c, &type, buf, sizeof(buf), &len), 0);
	assert_true(clock_usec() - t0 >= (srv_keepalive_ms() - 20) * 1000ull);
	assert_int_equal(type, WIRE_STATUS_REQ); /* the echo, not a KEEPALIVE */
	assert_int_equal(len, 0);
	/* Not due right after a send. */
	assert_int_equal(peer_conn_keepalive(c, 60000), 0);
	/* A KEEPALIVE is a header's bytes, counted as received. */
	assert_true(peer_conn_bytes_received(c) - got >= 2 * WIRE_HEADER_SIZE);
	assert_int_equal(peer_conn_keepalive(c, 0), 1);

	/* A KEEPALIVE that carries bytes is a malformed frame. */
	assert_int_equal(peer_conn_send_frame(c, WIRE_KEEPALIVE, buf, 1), 0);
	srv_stop(&s);
	/* One every SRV_KEEPALIVE_EVERY_MS; under valgrind, at least one per
	 * receive timeout (the answer's arrival proves no more). */
	assert_true(s.keepalives >= (testlib_valgrind() ? 2u
						      : SRV_KEEPALIVE_MS / SRV_KEEPALIVE_EVERY_MS - 1));
	assert_int_equal(s.recv_r, -EBADMSG);
	assert_non_null(strstr(s.conn_err, "KEEPALIVE frame with a payload"));
	peer_conn_free(c);
	peer_ctx_free(ctx);
}

static uint64_t mono_ms(void)
{
	return clock_usec() / 1000;
}

static int tcp_open(uint16_t port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

struct waiter {
	struct peer_conn *c;
	int r;
	pthread_t t;
};

static void *recv_main(void *arg)
{
	struct waiter *w = arg;
	unsigned char buf[64];
	uint16_t type;
	size_t len;

	w->r = peer_conn_recv_frame(w->c, &type, buf, sizeof(buf), &len);
	return NULL;
}

struct connect_args {
	struct peer_ctx *ctx;
	const struct node_config *node;
	struct peer_conn *c;
	int r;
	pthread_t t;
};

static void *connect_main(void *arg)
{
	struct connect_args *a = arg;
	char err[512];

	a->r = peer_conn_connect(a->ctx, a->node, err, sizeof(err), &a->c);
	return NULL;
}

static void *handshake_main(void *arg)
{
	struct waiter *w = arg;
	char err[512];

	w->r = peer_conn_handshake(w->c, 0, err, sizeof(err));
	return NULL;
}

/* The accept takes the TCP connection only: an idle connection holds no
 * one but its owner, whose handshake gives up at its own deadline; a
 * connection shut down from another thread, or a whole context, wakes
 * its owner at once. */
static void test_accept_split(void **state)
{
	struct fixture *f = *state;
	struct peer_ctx *sctx = NULL, *ctx = NULL;
	struct peer_listener *l = NULL;
	struct peer_conn *idle = NULL, *c = NULL, *sc = NULL;
	struct node_config node;
	struct waiter w = {0};
	char addr[64], err[512];
	unsigned char buf[64];
	uint16_t type;
	size_t len;
	uint64_t t0;
	int fd1;

	assert_int_equal(peer_ctx_new(f->cfg, f->key, &sctx), 0);
	assert_int_equal(peer_ctx_new(f->cfg, f->key, &ctx), 0);
	assert_int_equal(peer_listener_new(sctx, "127.0.0.1", 0, err, sizeof(err), &l), 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", peer_listener_port(l));
	node = (struct node_config){.name = (char *)"server", .address = addr,
				    .host = (char *)"127.0.0.1", .port = peer_listener_port(l)};

	/* An idle TCP connection is accepted at once; it carries nothing
	 * before its handshake, which times out at the deadline given. */
	fd1 = tcp_open(peer_listener_port(l));
	t0 = mono_ms();
	assert_int_equal(peer_listener_accept(l, 5000, err, sizeof(err), &idle), 0);
	assert_true(mono_ms() - t0 < 1000);
	assert_int_equal(peer_conn_send_frame(idle, WIRE_STATUS_REQ, NULL, 0), -ENOTCONN);
	assert_int_equal(peer_conn_recv_frame(idle, &type, buf, sizeof(buf), &len), -ENOTCONN);
	t0 = mono_ms();
	assert_int_equal(peer_conn_handshake(idle, 200, err, sizeof(err)), -ETIMEDOUT);
	assert_true(mono_ms() - t0 >= 190);
	assert_non_null(strstr(err, "sent nothing within 200 ms"));
	peer_conn_free(idle);
	close(fd1);

	/* A real peer behind an idle one: accepting does not wait for the
	 * idle one; the peer's handshake runs on this (the owner's) thread. */
	fd1 = tcp_open(peer_listener_port(l));
	assert_int_equal(peer_listener_accept(l, 5000, err, sizeof(err), &idle), 0);
	{
		struct connect_args a = {.ctx = ctx, .node = &node};

		assert_int_equal(pthread_create(&a.t, NULL, connect_main, &a), 0);
		assert_int_equal(peer_listener_accept(l, 5000, err, sizeof(err), &sc), 0);
		assert_int_equal(peer_conn_handshake(sc, 5000, err, sizeof(err)), 0);
		assert_int_equal(pthread_join(a.t, NULL), 0);
		assert_int_equal(a.r, 0);
		c = a.c;
	}
	assert_true(peer_conn_tls(sc));
	assert_int_equal(peer_conn_handshake(sc, 0, err, sizeof(err)), 0); /* done already */

	/* peer_conn_shutdown from another thread wakes a blocked receive. */
	peer_conn_set_timeout(sc, 0);
	w.c = sc;
	assert_int_equal(pthread_create(&w.t, NULL, recv_main, &w), 0);
	t0 = mono_ms();
	usleep(100000); /* most often it blocks by now; either way it must end */
	peer_conn_shutdown(sc);
	assert_int_equal(pthread_join(w.t, NULL), 0);
	assert_true(w.r < 0); /* the end of the stream: -EIO under TLS (no close_notify) */
	assert_true(mono_ms() - t0 < 2000);
	peer_conn_free(sc);

	/* peer_ctx_shutdown wakes every wait of the context (here a
	 * handshake that would wait 10 s for the idle connection), and
	 * refuses what comes after. */
	w.c = idle;
	assert_int_equal(pthread_create(&w.t, NULL, handshake_main, &w), 0);
	t0 = mono_ms();
	usleep(100000);
	peer_ctx_shutdown(sctx);
	assert_int_equal(pthread_join(w.t, NULL), 0);
	assert_int_equal(w.r, -ECANCELED);
	assert_true(mono_ms() - t0 < 2000);
	assert_int_equal(peer_listener_accept(l, 5000, err, sizeof(err), &sc), -ECANCELED);
	peer_conn_free(idle);
	close(fd1);
	peer_conn_free(c);
	peer_listener_free(l);
	peer_ctx_free(sctx);
	peer_ctx_free(ctx);
}

/* TLS throughput of 1 MiB frames over loopback, one way. */
/* peer_conn_new_plain(): a socketpair's ends carry frames at once, in
 * plaintext, with the timeouts, shutdown and end of stream of any
 * connection. */
static void test_plain(void **state)
{
	struct peer_conn *a = NULL, *b = NULL;
	struct waiter w = {0};
	unsigned char buf[64];
	char err[64];
	uint16_t type;
	size_t len;
	int sv[2];

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(peer_conn_new_plain(sv[0], "left", &a), 0);
	assert_int_equal(peer_conn_new_plain(sv[1], NULL, &b), 0);
	assert_string_equal(peer_conn_remote(a), "left");
	assert_string_equal(peer_conn_remote(b), "a local peer");
	assert_int_equal(peer_conn_tls(a), 0);
	assert_int_equal(peer_conn_handshake(a, 0, err, sizeof(err)), 0);

	assert_int_equal(peer_conn_send_frame(a, WIRE_STATUS_REQ, NULL, 0), 0);
	assert_int_equal(peer_conn_send_frame(a, WIRE_ACK, "12345678", 8), 0);
	assert_true(peer_conn_readable(b));
	assert_int_equal(peer_conn_recv_frame(b, &type, buf, sizeof(buf), &len), 0);
	assert_int_equal(type, WIRE_STATUS_REQ);
	assert_int_equal(len, 0);
	assert_int_equal(peer_conn_recv_frame(b, &type, buf, sizeof(buf), &len), 0);
	assert_int_equal(type, WIRE_ACK);
	assert_memory_equal(buf, "12345678", 8);
	assert_int_equal(peer_conn_bytes_sent(a), peer_conn_bytes_received(b));
	assert_false(peer_conn_readable(b));

	/* Nothing arrives: the deadline holds (the fd is non-blocking). */
	peer_conn_set_timeout(b, 100);
	assert_int_equal(peer_conn_recv_frame(b, &type, buf, sizeof(buf), &len), -ETIMEDOUT);
	peer_conn_free(b);

	/* The other end closed: end of stream. */
	assert_int_equal(peer_conn_recv_frame(a, &type, buf, sizeof(buf), &len), -ECONNRESET);
	peer_conn_free(a);

	/* A shutdown from another thread wakes a waiting receive. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(peer_conn_new_plain(sv[0], "left", &a), 0);
	assert_int_equal(peer_conn_new_plain(sv[1], "right", &b), 0);
	peer_conn_set_timeout(a, 0);
	w.c = a;
	assert_int_equal(pthread_create(&w.t, NULL, recv_main, &w), 0);
	peer_conn_shutdown(a);
	assert_int_equal(pthread_join(w.t, NULL), 0);
	assert_int_equal(w.r, -ECONNRESET);
	peer_conn_free(a);
	peer_conn_free(b);

	/* Not a descriptor: refused (and nothing leaks). */
	assert_int_equal(peer_conn_new_plain(-1, NULL, &a), -EBADF);
}

static void test_throughput(void **state)
{
	struct fixture *f = *state;
	/* Under valgrind the figure means nothing and 512 MiB of AES takes
	 * minutes: a few frames still check the path. */
	uint64_t total = getenv("RESYNC_LONG") ? 4ull << 30
			 : testlib_valgrind()  ? 16ull << 20
					       : 512ull << 20;
	struct peer_ctx *ctx = NULL;
	struct peer_conn *c = NULL;
	struct node_config node;
	unsigned char *out = malloc(1 << 20);
	struct srv s;
	char addr[64], err[512];
	uint64_t t0;
	double secs;

	testlib_fill(out, 1 << 20, 11);
	srv_start(&s, f->cfg, f->key, SRV_SINK, &node, addr, sizeof(addr));
	assert_int_equal(peer_ctx_new(f->cfg, f->key, &ctx), 0);
	assert_int_equal(peer_conn_connect(ctx, &node, err, sizeof(err), &c), 0);
	t0 = clock_usec();
	for (uint64_t sent = 0; sent < total; sent += 1 << 20)
		assert_int_equal(peer_conn_send_frame(c, WIRE_BLOCKS, out, 1 << 20), 0);
	send_commit(c); /* the server has everything once it echoes this */
	secs = (clock_usec() - t0) / 1e6;
	peer_conn_free(c);
	srv_stop(&s);
	assert_int_equal(s.bytes, total + 16);
	print_message("TLS 1.3 (AES-128-GCM) loopback, 1 MiB frames: %.0f MB/s (%.1f GiB in %.2f "
		      "s)\n",
		      total / secs / 1e6, total / 1073741824.0, secs);
	peer_ctx_free(ctx);
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tls_exchange),	 cmocka_unit_test(test_wrong_key),
		cmocka_unit_test(test_other_cluster),	 cmocka_unit_test(test_insecure),
		cmocka_unit_test(test_plaintext_vs_tls), cmocka_unit_test(test_limits_timeouts),
		cmocka_unit_test(test_accept_split),	 cmocka_unit_test(test_throughput),
		cmocka_unit_test(test_plain),
		cmocka_unit_test(test_keepalive),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
