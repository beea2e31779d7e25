/* The peer transport's pieces share this header: the context and the
 * connection, and the small helpers both use. Not for outside peer*.c:
 * peer.h is the transport's public face.
 *
 * Pieces (one concern a file):
 *   peer.c      contexts, TCP connect, frames over TLS or plaintext, the
 *               listener and accept
 *   peer-tls.c  TLS 1.3 with the cluster's PSK: the OpenSSL contexts and
 *               callbacks, the handshake, OpenSSL's errors in words */
#pragma once

#include <openssl/ssl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "peer.h"
#include "resync/clock.h"
#include "resync/limits.h"
#include "resync/macro.h"

struct peer_ctx {
	bool tls;
	char cluster[RESYNC_NAME_MAX + 1];
	struct secret *psk; /* derived; NULL when insecure */
	SSL_CTX *client, *server;
	unsigned connect_ms, io_ms;
	/* peer_ctx_shutdown(): readable for good once written, so that
	 * every wait of every connection of ctx ends at once. */
	int stop_fd;
	atomic_bool stopped;
};

struct peer_conn {
	struct peer_ctx *ctx;
	struct peer_ctx *own_ctx; /* peer_conn_new_plain()'s: freed with c */
	int fd;
	SSL *ssl;
	unsigned timeout_ms;
	uint64_t sent, received;
	uint64_t last_sent_ms; /* now_ms() of the last frame sent (or of c's making) */
	/* Round trips (issue 18): frames received other than KEEPALIVEs
	 * (exchanges), and waits paid in sequence: a receive that found
	 * nothing to read while a frame sent since the last such wait was
	 * unanswered, so that it waited for the peer. The connect's TCP and
	 * TLS handshakes count one each. */
	uint64_t exchanges, round_trips;
	uint64_t rtt_usec; /* the least round trip measured (peer_conn_rtt_usec()), 0: none */
	bool asked; /* a frame sent since the last counted wait */
	uint16_t last_type; /* of the last frame sent (the trace of round trips) */
	bool ready; /* handshake done (or plaintext): frames may pass */
	bool broken;
	char remote[300];
	char error[512];
};

/* Deadlines and timeouts here are in milliseconds (poll's unit). */
static inline uint64_t now_ms(void)
{
	return clock_usec() / 1000;
}

static inline void set_error(char *buf, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static inline void set_error(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (!len)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
}

/* Wait until fd is ready for events or the deadline (0 = none) passes;
 * -ECANCELED once ctx is shut down (peer_ctx_shutdown). */
static inline int wait_fd(const struct peer_ctx *ctx, int fd, short events, uint64_t deadline)
{
	for (;;) {
		struct pollfd p[2] = {{.fd = fd, .events = events},
				      {.fd = ctx->stop_fd, .events = POLLIN}};
		int timeout = -1, n;

		if (atomic_load(&ctx->stopped))
			return -ECANCELED;
		if (deadline) {
			uint64_t now = now_ms();

			if (now >= deadline)
				return -ETIMEDOUT;
			timeout = (int)MIN(deadline - now, (uint64_t)INT32_MAX);
		}
		n = poll(p, 2, timeout);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ETIMEDOUT;
		if (p[1].revents)
			return -ECANCELED;
		return 0; /* readable, writable, or an error the next call reports */
	}
}

static inline uint64_t deadline_in(unsigned ms)
{
	return ms ? now_ms() + ms : 0;
}

/* peer-tls.c */

/* A TLS 1.3 client or server context that offers only the cluster's PSK
 * suite and finds the PSK through the callbacks; NULL on failure. */
SSL_CTX *peer_tls_ctx_new(bool server);
/* After an SSL call that returned ret <= 0: wait until the socket is
 * ready for what it wants (0, or -errno from the wait, -ETIMEDOUT past the
 * deadline), or 1 when the call failed for good (see peer_tls_error). */
int peer_tls_wait(struct peer_conn *c, int ret, uint64_t deadline);
/* OpenSSL's error queue (and a failed call's result) as -errno, with
 * words in c->error; authentication failures are -EKEYREJECTED. */
int peer_tls_error(struct peer_conn *c, int ret, const char *during, bool server);
/* The TLS handshake within timeout_ms (none without TLS); c->ready on
 * success, -errno and words in c->error otherwise. */
int peer_tls_handshake(struct peer_conn *c, bool server, unsigned timeout_ms);
