/* bench-peer: the peer transport's one-way throughput over loopback, a
 * tool and not a test (its numbers depend on the machine's load).
 *
 *   bench-peer [--plain] [--size MiB] [--frame BYTES] [--runs N] [--echo]
 *
 * Each run opens one connection, sends --size MiB in frames of --frame
 * bytes (default 1 MiB) to a receiving thread, then a COMMIT that the
 * receiver echoes, so the clock stops when every byte has arrived. With
 * --echo the receiver sends every frame back and the sender reads each
 * echo before the next frame (latency-bound, as a request/reply session
 * is). Prints every run and the median in MB/s (10^6 bytes), and the CPU
 * time each side spent a byte (user and system), which a loaded machine
 * does not distort as it does the wall clock. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "peer.h"
#include "resync/macro.h"
#include "testlib.h"
#include "wire.h"

struct sink {
	struct peer_listener *l;
	bool echo;
	int r;
	uint64_t bytes;
	uint64_t cpu_ns; /* the receiving thread's CPU time, user and system */
	pthread_t thread;
};

static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void *sink_main(void *arg)
{
	struct sink *s = arg;
	struct peer_conn *c = NULL;
	unsigned char *buf = malloc(RESYNC_WIRE_FRAME_MAX);
	char err[512];
	uint64_t cpu0;

	s->r = buf ? peer_listener_accept(s->l, 10000, err, sizeof(err), &c) : -ENOMEM;
	if (s->r >= 0) {
		s->r = peer_conn_handshake(c, 0, err, sizeof(err));
		if (s->r < 0)
			peer_conn_free(c);
	}
	if (s->r < 0) {
		fprintf(stderr, "bench-peer: accept: %s\n", err);
		free(buf);
		return NULL;
	}
	cpu0 = thread_cpu_ns();
	for (;;) {
		uint16_t type;
		size_t len;

		s->r = peer_conn_recv_frame(c, &type, buf, RESYNC_WIRE_FRAME_MAX, &len);
		if (s->r < 0) {
			fprintf(stderr, "bench-peer: receive: %s\n", peer_conn_error(c));
			break;
		}
		s->bytes += len;
		if (type == WIRE_COMMIT || s->echo) {
			s->r = peer_conn_send_frame(c, type, buf, len);
			if (s->r < 0 || type == WIRE_COMMIT)
				break;
		}
	}
	s->cpu_ns = thread_cpu_ns() - cpu0;
	peer_conn_free(c);
	free(buf);
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

struct result {
	double mbs;	 /* MB/s, wall clock */
	double send_cpu; /* CPU ns a byte, sending thread */
	double recv_cpu; /* CPU ns a byte, receiving thread */
};

static int run(struct peer_ctx *ctx, const unsigned char *out, size_t frame, uint64_t total,
	       bool echo, struct result *ret)
{
	struct sink s = {.echo = echo};
	struct node_config node = {.name = (char *)"sink", .host = (char *)"127.0.0.1"};
	struct peer_conn *c = NULL;
	unsigned char *back = NULL;
	char addr[64], err[512];
	uint64_t t0, cpu0, sent = 0;
	uint16_t type;
	size_t len;
	int r;

	r = peer_listener_new(ctx, "127.0.0.1", 0, err, sizeof(err), &s.l);
	if (r < 0) {
		fprintf(stderr, "bench-peer: %s\n", err);
		return r;
	}
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", peer_listener_port(s.l));
	node.address = addr;
	node.port = peer_listener_port(s.l);
	if (pthread_create(&s.thread, NULL, sink_main, &s)) {
		peer_listener_free(s.l);
		return -EAGAIN;
	}
	r = peer_conn_connect(ctx, &node, err, sizeof(err), &c);
	if (r < 0) {
		fprintf(stderr, "bench-peer: %s\n", err);
		goto out;
	}
	back = malloc(RESYNC_WIRE_FRAME_MAX);
	if (!back) {
		r = -ENOMEM;
		goto out;
	}
	t0 = clock_usec();
	cpu0 = thread_cpu_ns();
	for (sent = 0; sent < total; sent += frame) {
		r = peer_conn_send_frame(c, WIRE_BLOCKS, out, frame);
		if (r >= 0 && echo)
			r = peer_conn_recv_frame(c, &type, back, RESYNC_WIRE_FRAME_MAX, &len);
		if (r < 0) {
			fprintf(stderr, "bench-peer: %s\n", peer_conn_error(c));
			goto out;
		}
	}
	r = peer_conn_send_frame(c, WIRE_COMMIT, NULL, 0);
	if (r >= 0)
		r = peer_conn_recv_frame(c, &type, back, RESYNC_WIRE_FRAME_MAX, &len);
	if (r < 0) {
		fprintf(stderr, "bench-peer: %s\n", peer_conn_error(c));
		goto out;
	}
	ret->mbs = sent * (echo ? 2.0 : 1.0) / ((clock_usec() - t0) / 1e6) / 1e6;
	ret->send_cpu = (thread_cpu_ns() - cpu0) / (double)sent;
out:
	peer_conn_free(c);
	pthread_join(s.thread, NULL);
	ret->recv_cpu = s.cpu_ns / (double)(sent ? sent : 1);
	peer_listener_free(s.l);
	free(back);
	if (r >= 0 && s.bytes != sent) {
		fprintf(stderr, "bench-peer: %llu bytes arrived of %llu\n",
			(unsigned long long)s.bytes, (unsigned long long)sent);
		r = -EIO;
	}
	return r;
}

static double median(const double *v, unsigned long n)
{
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"plain", no_argument, NULL, 'p'},
	    {"size", required_argument, NULL, 's'},
	    {"frame", required_argument, NULL, 'f'},
	    {"runs", required_argument, NULL, 'r'},
	    {"echo", no_argument, NULL, 'e'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	struct cluster_config cfg = {.name = (char *)"bench"};
	struct secret *key = NULL;
	struct peer_ctx *ctx = NULL;
	unsigned long size_mib = 1024, frame = 1 << 20, runs = 5;
	bool echo = false;
	unsigned char *out;
	struct result res = {0};
	double mbs[64], scpu[64], rcpu[64];
	int opt, r;

	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'p':
			cfg.insecure = true;
			break;
		case 's':
			size_mib = strtoul(optarg, NULL, 0);
			break;
		case 'f':
			frame = strtoul(optarg, NULL, 0);
			break;
		case 'r':
			runs = strtoul(optarg, NULL, 0);
			break;
		case 'e':
			echo = true;
			break;
		case 'h':
			printf("usage: bench-peer [--plain] [--size MiB] [--frame BYTES] "
			       "[--runs N] [--echo]\n");
			return 0;
		default:
			return 2;
		}
	}
	if (!frame || frame > RESYNC_WIRE_FRAME_MAX || !runs || runs > 64 || !size_mib) {
		fprintf(stderr, "bench-peer: frame 1..%u bytes, runs 1..64, size > 0\n",
			RESYNC_WIRE_FRAME_MAX);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	out = malloc(frame);
	if (!out || secret_new("bench key, any 32 bytes at all.", 31, &key) < 0)
		return 1;
	testlib_fill(out, frame, 7);
	r = peer_ctx_new(&cfg, key, &ctx);
	if (r < 0) {
		fprintf(stderr, "bench-peer: peer_ctx_new: %s\n", strerror(-r));
		return 1;
	}
	for (unsigned long i = 0; i < runs; i++) {
		r = run(ctx, out, frame, size_mib << 20, echo, &res);
		if (r < 0)
			return 1;
		mbs[i] = res.mbs;
		scpu[i] = res.send_cpu;
		rcpu[i] = res.recv_cpu;
		printf("run %lu: %.0f MB/s; CPU a byte: sender %.3f ns, receiver %.3f ns\n", i + 1,
		       res.mbs, res.send_cpu, res.recv_cpu);
	}
	qsort(mbs, runs, sizeof(mbs[0]), cmp_double);
	qsort(scpu, runs, sizeof(scpu[0]), cmp_double);
	qsort(rcpu, runs, sizeof(rcpu[0]), cmp_double);
	/* The CPU time a byte does not depend on the machine's load as the
	 * wall clock does: 1000 / the busier side's ns is what one core per
	 * side would reach. */
	printf("%s, %lu-byte frames%s, %lu MiB a run: median %.0f MB/s (min %.0f, max %.0f); "
	       "CPU a byte: sender %.3f ns, receiver %.3f ns (one core each: %.0f MB/s)\n",
	       cfg.insecure ? "plaintext" : "TLS 1.3 AES-128-GCM", frame, echo ? ", echoed" : "",
	       size_mib, median(mbs, runs), mbs[0], mbs[runs - 1], median(scpu, runs),
	       median(rcpu, runs), 1000 / MAX(median(scpu, runs), median(rcpu, runs)));
	peer_ctx_free(ctx);
	secret_free(key);
	free(out);
	return 0;
}
