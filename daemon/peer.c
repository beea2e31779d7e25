/* The peer transport (peer.h): contexts, TCP connections, frames over TLS
 * or plaintext, the listener. TLS 1.3 with the cluster's PSK (the
 * OpenSSL contexts, the handshake, OpenSSL's errors) is peer-tls.c's. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include "peer-int.h"
#include "peer.h"
#include "resync/clock.h"
#include "resync/limits.h"
#include "resync/macro.h"
#include "wire.h"

#define PSK_SALT "resync peer psk v1"
enum {
	PSK_LEN = 32,
	TLS_RECORD_MAX = 16384, /* plaintext bytes a TLS record carries */
};

struct peer_listener {
	struct peer_ctx *ctx;
	int fd;
	uint16_t port;
};

int peer_ctx_new(const struct cluster_config *cfg, const struct secret *secret,
		 struct peer_ctx **ret)
{
	struct peer_ctx *ctx;
	int r;

	if (!cfg->name || strlen(cfg->name) > RESYNC_NAME_MAX)
		return -EINVAL;
	if (!cfg->insecure && !secret)
		return -EINVAL;
	ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return -ENOMEM;
	ctx->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (ctx->stop_fd < 0) {
		r = -errno;
		free(ctx);
		return r;
	}
	strcpy(ctx->cluster, cfg->name);
	ctx->connect_ms = PEER_TIMEOUT_CONNECT_MS;
	ctx->io_ms = PEER_TIMEOUT_IO_MS;
	ctx->tls = !cfg->insecure;
	if (ctx->tls) {
		r = secret_derive(secret, PSK_SALT, cfg->name, PSK_LEN, &ctx->psk);
		if (r < 0) {
			peer_ctx_free(ctx);
			return r;
		}
		ctx->client = peer_tls_ctx_new(false);
		ctx->server = peer_tls_ctx_new(true);
		if (!ctx->client || !ctx->server) {
			peer_ctx_free(ctx);
			return -EIO;
		}
	}
	*ret = ctx;
	return 0;
}

void peer_ctx_free(struct peer_ctx *ctx)
{
	if (!ctx)
		return;
	SSL_CTX_free(ctx->client);
	SSL_CTX_free(ctx->server);
	secret_free(ctx->psk);
	close(ctx->stop_fd);
	free(ctx);
}

void peer_ctx_shutdown(struct peer_ctx *ctx)
{
	uint64_t one = 1;

	atomic_store(&ctx->stopped, true);
	(void)!write(ctx->stop_fd, &one, sizeof(one));
}

void peer_ctx_set_timeouts(struct peer_ctx *ctx, unsigned connect_ms, unsigned io_ms)
{
	ctx->connect_ms = connect_ms;
	ctx->io_ms = io_ms;
}

int peer_ctx_tls(const struct peer_ctx *ctx)
{
	return ctx->tls;
}

static void remote_name(const struct sockaddr *sa, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)sa;

		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		port = ntohs(in->sin_port);
		snprintf(buf, len, "%s:%u", host, port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)sa;

		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		port = ntohs(in6->sin6_port);
		snprintf(buf, len, "[%s]:%u", host, port);
	} else {
		snprintf(buf, len, "?");
	}
}

static void socket_tune(int fd)
{
	int one = 1;

	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	(void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
}

static struct peer_conn *conn_alloc(struct peer_ctx *ctx, int fd)
{
	struct peer_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->ctx = ctx;
	c->fd = fd;
	c->timeout_ms = ctx->io_ms;
	c->last_sent_ms = now_ms();
	return c;
}

static int tcp_connect(const struct peer_ctx *ctx, const struct node_config *node,
		       uint64_t deadline, char *err, size_t errlen, int *ret_fd)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	char port[8];
	int r, last = -ECONNREFUSED;

	snprintf(port, sizeof(port), "%u", node->port);
	r = getaddrinfo(node->host, port, &hints, &res);
	if (r != 0) {
		set_error(err, errlen, "cannot resolve '%s' for node '%s': %s", node->host,
			  node->name, gai_strerror(r));
		return -EHOSTUNREACH;
	}
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		_cleanup_close_ int fd = socket(ai->ai_family,
						ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
						ai->ai_protocol);
		int soerr = 0;
		socklen_t sl = sizeof(soerr);

		if (fd < 0) {
			last = -errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
			if (errno != EINPROGRESS) {
				last = -errno;
				continue;
			}
			r = wait_fd(ctx, fd, POLLOUT, deadline);
			if (r == -ECANCELED) {
				last = r;
				break;
			}
			if (r < 0) {
				last = r;
				continue;
			}
			if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
				soerr = errno;
			if (soerr) {
				last = -soerr;
				continue;
			}
		}
		socket_tune(fd);
		freeaddrinfo(res);
		*ret_fd = TAKE_FD(fd);
		return 0;
	}
	freeaddrinfo(res);
	set_error(err, errlen, "cannot connect to node '%s' at %s: %s", node->name, node->address,
		  strerror(-last));
	return last;
}

int peer_conn_connect(struct peer_ctx *ctx, const struct node_config *node, char *err,
		      size_t errlen, struct peer_conn **ret)
{
	struct peer_conn *c;
	uint64_t t0;
	int fd = -1, r;

	if (errlen)
		err[0] = 0;
	if (atomic_load(&ctx->stopped)) {
		set_error(err, errlen, "not connecting to node '%s': this node is stopping",
			  node->name);
		return -ECANCELED;
	}
	r = tcp_connect(ctx, node, deadline_in(ctx->connect_ms), err, errlen, &fd);
	if (r < 0)
		return r;
	c = conn_alloc(ctx, fd);
	if (!c) {
		close(fd);
		return -ENOMEM;
	}
	snprintf(c->remote, sizeof(c->remote), "node '%s' (%s)", node->name, node->address);
	c->round_trips = ctx->tls ? 2 : 1; /* TCP's handshake, TLS's */
	t0 = clock_usec();
	r = peer_tls_handshake(c, false, ctx->connect_ms);
	if (r < 0) {
		set_error(err, errlen, "%s", c->error);
		peer_conn_free(c);
		return r;
	}
	if (ctx->tls)
		peer_conn_note_rtt(c, clock_usec() - t0);
	*ret = c;
	return 0;
}

int peer_conn_new_plain(int fd, const char *remote, struct peer_conn **ret)
{
	struct peer_ctx *ctx = NULL;
	struct peer_conn *c;
	int fl, r;

	/* Non-blocking, as every connection of this file: waits go through
	 * wait_fd() and honour the timeouts. */
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
	    fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
		r = -errno;
		goto fail;
	}
	/* A context of its own, insecure (ctx->tls false: the plaintext
	 * path of every send and receive), for the stop eventfd that every
	 * wait polls. */
	ctx = calloc(1, sizeof(*ctx));
	if (!ctx) {
		r = -ENOMEM;
		goto fail;
	}
	ctx->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (ctx->stop_fd < 0) {
		r = -errno;
		free(ctx);
		ctx = NULL;
		goto fail;
	}
	ctx->connect_ms = PEER_TIMEOUT_CONNECT_MS;
	ctx->io_ms = PEER_TIMEOUT_IO_MS;
	c = conn_alloc(ctx, fd);
	if (!c) {
		r = -ENOMEM;
		goto fail;
	}
	c->own_ctx = ctx;
	c->ready = true;
	snprintf(c->remote, sizeof(c->remote), "%s", remote ? remote : "a local peer");
	*ret = c;
	return 0;
fail:
	peer_ctx_free(ctx);
	close(fd);
	return r;
}

void peer_conn_free(struct peer_conn *c)
{
	if (!c)
		return;
	if (c->ssl) {
		if (!c->broken && SSL_is_init_finished(c->ssl))
			(void)SSL_shutdown(c->ssl); /* non-blocking: best effort */
		SSL_free(c->ssl);
	}
	ERR_clear_error();
	if (c->fd >= 0)
		close(c->fd);
	peer_ctx_free(c->own_ctx);
	free(c);
}

void peer_conn_shutdown(struct peer_conn *c)
{
	/* Only the socket's state changes: the fd stays open (and its
	 * number ours) until the owner's peer_conn_free(), so this never
	 * races with a reuse of the number. */
	(void)shutdown(c->fd, SHUT_RDWR);
}

void peer_conn_set_timeout(struct peer_conn *c, unsigned ms)
{
	c->timeout_ms = ms;
}

const char *peer_conn_error(const struct peer_conn *c)
{
	return c->error;
}

const char *peer_conn_remote(const struct peer_conn *c)
{
	return c->remote;
}

int peer_conn_tls(const struct peer_conn *c)
{
	return c->ssl != NULL;
}

uint64_t peer_conn_bytes_sent(const struct peer_conn *c)
{
	return c->sent;
}

uint64_t peer_conn_bytes_received(const struct peer_conn *c)
{
	return c->received;
}

uint64_t peer_conn_exchanges(const struct peer_conn *c)
{
	return c->exchanges;
}

uint64_t peer_conn_round_trips(const struct peer_conn *c)
{
	return c->round_trips;
}

uint64_t peer_conn_rtt_usec(const struct peer_conn *c)
{
	return c->rtt_usec;
}

void peer_conn_note_rtt(struct peer_conn *c, uint64_t usec)
{
	usec = MAX(usec, (uint64_t)1); /* 0 is "none" */
	if (!c->rtt_usec || usec < c->rtt_usec)
		c->rtt_usec = usec;
}

static int conn_fail(struct peer_conn *c, int r, const char *what)
{
	c->broken = true;
	if (r == -ETIMEDOUT)
		set_error(c->error, sizeof(c->error), "%s %s timed out after %u ms", what,
			  c->remote, c->timeout_ms);
	else if (r == -ECANCELED)
		set_error(c->error, sizeof(c->error), "%s %s stopped: this node is stopping",
			  what, c->remote);
	else if (r == -ECONNRESET)
		set_error(c->error, sizeof(c->error), "%s closed the connection", c->remote);
	else if (!c->error[0])
		set_error(c->error, sizeof(c->error), "%s %s failed: %s", what, c->remote,
			  strerror(-r));
	return r;
}

/* Encrypt all of buf into the write BIO, which passes it on to the kernel
 * whenever it holds TLS_BIO_BUFFER bytes; tls_flush() sends the rest. */
static int tls_write(struct peer_conn *c, const void *buf, size_t len, uint64_t deadline)
{
	const unsigned char *p = buf;
	int r;

	while (len) {
		size_t done = 0;
		int ret;

		ERR_clear_error();
		ret = SSL_write_ex(c->ssl, p, len, &done);
		if (ret == 1) {
			p += done;
			len -= done;
			continue;
		}
		r = peer_tls_wait(c, ret, deadline);
		if (r > 0) {
			r = peer_tls_error(c, ret, "sending to", false);
			if (r == -EIO && errno == EPIPE)
				r = -EPIPE;
			return r;
		}
		if (r < 0)
			return r;
	}
	return 0;
}

/* Hand everything the write BIO holds to the kernel. */
static int tls_flush(struct peer_conn *c, uint64_t deadline)
{
	BIO *wbio = SSL_get_wbio(c->ssl);
	int r;

	for (;;) {
		ERR_clear_error();
		errno = 0;
		if (BIO_flush(wbio) > 0)
			return 0;
		if (!BIO_should_retry(wbio))
			return errno ? -errno : -EIO;
		r = wait_fd(c->ctx, c->fd, POLLOUT, deadline);
		if (r < 0)
			return r;
	}
}

/* Write all of iov[0, n) to the plaintext socket: header and payload in
 * one call where the socket buffer takes them. iov is consumed. */
static int plain_writev(struct peer_conn *c, struct iovec *iov, size_t n, uint64_t deadline)
{
	int r;

	while (n) {
		struct msghdr m = {.msg_iov = iov, .msg_iovlen = n};
		ssize_t w = sendmsg(c->fd, &m, MSG_NOSIGNAL);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				return -errno;
			r = wait_fd(c->ctx, c->fd, POLLOUT, deadline);
			if (r < 0)
				return r;
			continue;
		}
		while (n && (size_t)w >= iov->iov_len) {
			w -= iov->iov_len;
			iov++;
			n--;
		}
		if (n) {
			iov->iov_base = (unsigned char *)iov->iov_base + w;
			iov->iov_len -= w;
		}
	}
	return 0;
}

/* Read exactly len bytes. -ECONNRESET on end of stream. */
static int conn_read(struct peer_conn *c, void *buf, size_t len, uint64_t deadline)
{
	unsigned char *p = buf;
	int r;

	while (len) {
		if (c->ssl) {
			size_t done = 0;
			int ret;

			ERR_clear_error();
			ret = SSL_read_ex(c->ssl, p, len, &done);
			if (ret == 1) {
				p += done;
				len -= done;
				continue;
			}
			r = peer_tls_wait(c, ret, deadline);
			if (r > 0)
				return peer_tls_error(c, ret, "receiving from", false);
		} else {
			ssize_t n = recv(c->fd, p, len, 0);

			if (n > 0) {
				p += n;
				len -= n;
				continue;
			}
			if (n == 0)
				return -ECONNRESET;
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				return -errno;
			r = wait_fd(c->ctx, c->fd, POLLIN, deadline);
		}
		if (r < 0)
			return r;
	}
	return 0;
}

int peer_conn_send_frame(struct peer_conn *c, uint16_t type, const void *payload, size_t len)
{
	uint64_t deadline = deadline_in(c->timeout_ms);
	unsigned char hdr[WIRE_HEADER_SIZE];
	int r;

	if (c->broken)
		return -EPIPE;
	if (!c->ready)
		return -ENOTCONN;
	if (len > RESYNC_WIRE_FRAME_MAX || type < WIRE_HELLO || type > WIRE_TYPE_MAX)
		return -EINVAL;
	wire_header_encode(type, len, hdr);
	if (c->ssl) {
		/* The header shares the first record with the payload's start,
		 * so a frame takes no more records than its bytes need. */
		unsigned char first[TLS_RECORD_MAX];
		size_t n = MIN(len, sizeof(first) - sizeof(hdr));

		memcpy(first, hdr, sizeof(hdr));
		if (n)
			memcpy(first + sizeof(hdr), payload, n);
		r = tls_write(c, first, sizeof(hdr) + n, deadline);
		if (r >= 0 && len > n)
			r = tls_write(c, (const unsigned char *)payload + n, len - n, deadline);
		if (r >= 0)
			r = tls_flush(c, deadline);
	} else {
		struct iovec iov[2] = {
			{.iov_base = hdr, .iov_len = sizeof(hdr)},
			{.iov_base = (void *)payload, .iov_len = len},
		};

		r = plain_writev(c, iov, ARRAY_SIZE(iov), deadline);
	}
	if (r < 0)
		return conn_fail(c, r, "sending to");
	c->sent += sizeof(hdr) + len;
	c->last_sent_ms = now_ms();
	if (type != WIRE_KEEPALIVE) {
		c->asked = true;
		c->last_type = type;
	}
	return 0;
}

int peer_conn_keepalive(struct peer_conn *c, unsigned idle_ms)
{
	int r;

	if (now_ms() - c->last_sent_ms < idle_ms)
		return 0;
	r = peer_conn_send_frame(c, WIRE_KEEPALIVE, NULL, 0);
	return r < 0 ? r : 1;
}

bool peer_conn_readable(struct peer_conn *c)
{
	struct pollfd p = {.fd = c->fd, .events = POLLIN};

	if (c->broken)
		return true; /* a receive says why at once */
	/* Decrypted bytes, or record bytes the read buffer took already. */
	if (c->ssl && (SSL_pending(c->ssl) > 0 || BIO_pending(SSL_get_rbio(c->ssl)) > 0))
		return true;
	return poll(&p, 1, 0) > 0;
}

bool peer_conn_peer_closed(struct peer_conn *c)
{
	struct pollfd p = {.fd = c->fd, .events = POLLRDHUP};

	if (c->broken)
		return true;
	return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* Read and validate one frame header within deadline. */
static int conn_recv_header(struct peer_conn *c, uint64_t deadline, struct wire_header *ret)
{
	unsigned char hdr[WIRE_HEADER_SIZE];
	int r;

	r = conn_read(c, hdr, sizeof(hdr), deadline);
	if (r < 0)
		return conn_fail(c, r, "receiving from");
	r = wire_header_decode(hdr, ret);
	if (r < 0) {
		c->broken = true;
		if (!c->ssl && hdr[0] == 0x16 && hdr[1] == 0x03)
			set_error(c->error, sizeof(c->error),
				  "%s started a TLS handshake; this cluster is configured with "
				  "insecure = true",
				  c->remote);
		else
			set_error(c->error, sizeof(c->error),
				  "%s sent a malformed frame header", c->remote);
		return r;
	}
	c->received += sizeof(hdr);
	return 0;
}

/* RESYNC_TRACE_ROUND_TRIPS=1 in the environment: each wait paid in
 * sequence is said on stderr, with the last frame sent before it, so
 * that the round trips of a resync can be listed in order (issue 18). */
static void peer_conn_trace(const struct peer_conn *c)
{
	static atomic_int on = -1;

	if (atomic_load(&on) < 0) {
		const char *e = getenv("RESYNC_TRACE_ROUND_TRIPS");

		atomic_store(&on, e && *e && strcmp(e, "0"));
	}
	if (atomic_load(&on))
		fprintf(stderr, "resyncd: round trip %llu with %s after %s\n",
			(unsigned long long)c->round_trips, c->remote,
			wire_type_name(c->last_type));
}

int peer_conn_recv_frame(struct peer_conn *c, uint16_t *ret_type, void *buf, size_t cap,
			 size_t *ret_len)
{
	uint64_t deadline;
	struct wire_header h;
	int r;

	if (c->broken)
		return -EPIPE;
	if (!c->ready)
		return -ENOTCONN;
	if (c->asked && !peer_conn_readable(c)) {
		c->round_trips++;
		c->asked = false;
		peer_conn_trace(c);
	}
	/* KEEPALIVEs are skipped, and each starts the deadline over: the
	 * timeout measures a silent peer, not the gap between two frames
	 * that mean something. */
	do {
		deadline = deadline_in(c->timeout_ms);
		r = conn_recv_header(c, deadline, &h);
		if (r < 0)
			return r;
		if (h.type == WIRE_KEEPALIVE && h.length != 0) {
			c->broken = true;
			set_error(c->error, sizeof(c->error),
				  "%s sent a KEEPALIVE frame with a payload", c->remote);
			return -EBADMSG;
		}
	} while (h.type == WIRE_KEEPALIVE);
	if (h.length > cap) {
		c->broken = true;
		set_error(c->error, sizeof(c->error),
			  "%s sent a %s frame of %u bytes, more than the %zu expected", c->remote,
			  wire_type_name(h.type), h.length, cap);
		return -EMSGSIZE;
	}
	r = conn_read(c, buf, h.length, deadline);
	if (r < 0)
		return conn_fail(c, r, "receiving from");
	c->received += h.length;
	c->exchanges++;
	*ret_type = h.type;
	*ret_len = h.length;
	return 0;
}

int peer_listener_new(struct peer_ctx *ctx, const char *host, uint16_t port, char *err,
		      size_t errlen, struct peer_listener **ret)
{
	struct addrinfo hints = {
		.ai_socktype = SOCK_STREAM,
		.ai_flags = AI_NUMERICSERV | AI_PASSIVE,
	};
	struct addrinfo *res = NULL;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct peer_listener *l;
	_cleanup_close_ int fd = -1;
	char ports[8];
	int one = 1, r;

	if (errlen)
		err[0] = 0;
	snprintf(ports, sizeof(ports), "%u", port);
	r = getaddrinfo(host, ports, &hints, &res);
	if (r != 0) {
		set_error(err, errlen, "cannot resolve '%s': %s", host, gai_strerror(r));
		return -EADDRNOTAVAIL;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		r = -errno;
		freeaddrinfo(res);
		set_error(err, errlen, "cannot create a socket: %s", strerror(-r));
		return r;
	}
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 64) < 0) {
		r = -errno;
		freeaddrinfo(res);
		set_error(err, errlen, "cannot listen on %s:%u: %s", host, port, strerror(-r));
		return r;
	}
	freeaddrinfo(res);
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
		return -errno;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->ctx = ctx;
	l->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
					   : ntohs(((struct sockaddr_in *)&ss)->sin_port);
	l->fd = TAKE_FD(fd);
	*ret = l;
	return 0;
}

void peer_listener_free(struct peer_listener *l)
{
	if (!l)
		return;
	close(l->fd);
	free(l);
}

uint16_t peer_listener_port(const struct peer_listener *l)
{
	return l->port;
}

int peer_listener_fd(const struct peer_listener *l)
{
	return l->fd;
}

int peer_listener_accept(struct peer_listener *l, int timeout_ms, char *err, size_t errlen,
			 struct peer_conn **ret)
{
	uint64_t deadline = timeout_ms < 0 ? 0 : now_ms() + (unsigned)timeout_ms;
	struct sockaddr_storage ss;
	struct peer_conn *c;
	int fd, r;

	if (errlen)
		err[0] = 0;
	for (;;) {
		socklen_t sl = sizeof(ss);

		fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd >= 0)
			break;
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno != EAGAIN) {
			r = -errno;
			set_error(err, errlen, "accept failed: %s", strerror(-r));
			return r;
		}
		r = wait_fd(l->ctx, l->fd, POLLIN, deadline);
		if (r == -ECANCELED) {
			set_error(err, errlen, "not accepting: this node is stopping");
			return r;
		}
		if (r < 0) {
			set_error(err, errlen, "no peer connected within %d ms", timeout_ms);
			return r;
		}
	}
	socket_tune(fd);
	c = conn_alloc(l->ctx, fd);
	if (!c) {
		close(fd);
		set_error(err, errlen, "accept failed: %s", strerror(ENOMEM));
		return -ENOMEM;
	}
	remote_name((struct sockaddr *)&ss, c->remote, sizeof(c->remote));
	*ret = c;
	return 0;
}

int peer_conn_handshake(struct peer_conn *c, unsigned timeout_ms, char *err, size_t errlen)
{
	int r;

	if (errlen)
		err[0] = 0;
	if (c->ready)
		return 0;
	if (c->ssl || c->broken) {
		set_error(err, errlen, "%s: %s", c->remote, c->error[0] ? c->error : "handshake failed");
		return -EPROTO;
	}
	r = peer_tls_handshake(c, true, timeout_ms ? timeout_ms : c->ctx->connect_ms);
	if (r < 0) {
		c->broken = true;
		set_error(err, errlen, "%s", c->error);
	}
	return r;
}
