/* The peer transport's TLS 1.3 with an external PSK (OpenSSL 3), as
 * NOTES.md records: the client offers only TLS_AES_128_GCM_SHA256 (the
 * PSK's suite, so that the server never picks a SHA-384 suite and falls
 * back to certificates), the PSK session is built with
 * SSL_SESSION_set1_master_key, _set_cipher and _set_protocol_version, and
 * the client callback offers nothing when asked for another digest.
 * OpenSSL's error queue is read in exactly one place, peer_tls_error(). */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>

#include "peer-int.h"

#define PSK_SUITE "TLS_AES_128_GCM_SHA256"
enum {
	/* Userspace buffers between OpenSSL and the socket, each way: one
	 * read() or write() moves this much instead of one 16 KiB record. */
	TLS_BIO_BUFFER = 256 * 1024,
};
static const unsigned char psk_suite_id[2] = {0x13, 0x01}; /* TLS_AES_128_GCM_SHA256 */

/* A TLS 1.3 session resting on the cluster's key, for cipher. */
static SSL_SESSION *psk_session_new(const struct peer_conn *c, const SSL_CIPHER *cipher)
{
	SSL_SESSION *s = SSL_SESSION_new();

	if (s && (!SSL_SESSION_set1_master_key(s, secret_data(c->ctx->psk), secret_size(c->ctx->psk)) ||
		  !SSL_SESSION_set_cipher(s, cipher) ||
		  !SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION))) {
		SSL_SESSION_free(s);
		s = NULL;
	}
	return s;
}

static int psk_use_cb(SSL *ssl, const EVP_MD *md, const unsigned char **id, size_t *idlen,
		      SSL_SESSION **sess)
{
	struct peer_conn *c = SSL_get_app_data(ssl);
	const SSL_CIPHER *cipher = SSL_CIPHER_find(ssl, psk_suite_id);
	SSL_SESSION *s;

	*sess = NULL;
	*id = NULL;
	*idlen = 0;
	if (!cipher)
		return 0;
	if (md && md != SSL_CIPHER_get_handshake_digest(cipher))
		return 1; /* another digest: offer no PSK for it */
	s = psk_session_new(c, cipher);
	if (!s)
		return 0;
	*sess = s;
	*id = (const unsigned char *)c->ctx->cluster;
	*idlen = strlen(c->ctx->cluster);
	return 1;
}

static int psk_find_cb(SSL *ssl, const unsigned char *id, size_t idlen, SSL_SESSION **sess)
{
	struct peer_conn *c = SSL_get_app_data(ssl);
	const SSL_CIPHER *cipher = SSL_CIPHER_find(ssl, psk_suite_id);
	SSL_SESSION *s;

	*sess = NULL;
	if (idlen != strlen(c->ctx->cluster) || memcmp(id, c->ctx->cluster, idlen)) {
		char shown[RESYNC_NAME_MAX + 1];
		size_t n = 0;

		for (size_t i = 0; i < idlen && n < RESYNC_NAME_MAX; i++)
			shown[n++] = id[i] >= 0x20 && id[i] < 0x7f ? id[i] : '?';
		shown[n] = 0;
		set_error(c->error, sizeof(c->error),
			  "peer belongs to cluster '%s', this node to cluster '%s'", shown,
			  c->ctx->cluster);
		return 0; /* abort the handshake: no certificate fallback */
	}
	if (!cipher)
		return 0;
	s = psk_session_new(c, cipher);
	if (!s)
		return 0;
	*sess = s;
	return 1;
}

SSL_CTX *peer_tls_ctx_new(bool server)
{
	SSL_CTX *t = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());

	if (!t)
		return NULL;
	if (!SSL_CTX_set_min_proto_version(t, TLS1_3_VERSION) ||
	    !SSL_CTX_set_max_proto_version(t, TLS1_3_VERSION) ||
	    !SSL_CTX_set_ciphersuites(t, PSK_SUITE)) {
		SSL_CTX_free(t);
		return NULL;
	}
	SSL_CTX_set_session_cache_mode(t, SSL_SESS_CACHE_OFF);
	/* No read-ahead: OpenSSL 3.0 moves whatever its read buffer holds
	 * beyond the current record to the buffer's start before each record
	 * (ssl3_read_n), so a large read-ahead buffer costs a memmove of up
	 * to the whole buffer per 16 KiB record: measured as 12 % of all CPU
	 * samples at 256 KiB. The buffering BIO below conn_bio_new() gives
	 * the same few large read() calls without that. */
	SSL_CTX_set_options(t, SSL_OP_NO_TICKET);
	if (server) {
		SSL_CTX_set_num_tickets(t, 0);
		SSL_CTX_set_psk_find_session_callback(t, psk_find_cb);
	} else {
		SSL_CTX_set_psk_use_session_callback(t, psk_use_cb);
	}
	return t;
}

/* After an SSL call that returned ret <= 0: wait until the socket is
 * ready for what it wants (0, or -errno from the wait, -ETIMEDOUT past the
 * deadline), or 1 when the call failed for good (see peer_tls_error). */
int peer_tls_wait(struct peer_conn *c, int ret, uint64_t deadline)
{
	switch (SSL_get_error(c->ssl, ret)) {
	case SSL_ERROR_WANT_READ:
		return wait_fd(c->ctx, c->fd, POLLIN, deadline);
	case SSL_ERROR_WANT_WRITE:
		return wait_fd(c->ctx, c->fd, POLLOUT, deadline);
	default:
		return 1;
	}
}

/* Turn OpenSSL's error queue (and a failed call's result) into -errno and
 * words. Authentication failures are told apart from the rest: they are
 * -EKEYREJECTED, and their words say "authentication ... failed". */
int peer_tls_error(struct peer_conn *c, int ret, const char *during, bool server)
{
	int e = SSL_get_error(c->ssl, ret);
	unsigned long err = ERR_peek_last_error();
	int reason = ERR_GET_REASON(err);
	char detail[256] = "";
	int r = -EIO;

	if (err)
		ERR_error_string_n(err, detail, sizeof(detail));
	ERR_clear_error();
	if (c->error[0])
		return -EKEYREJECTED; /* a callback already said why */
	if (e == SSL_ERROR_ZERO_RETURN ||
	    (e == SSL_ERROR_SYSCALL && !err && (errno == 0 || errno == ECONNRESET))) {
		set_error(c->error, sizeof(c->error), "%s closed the connection during %s%s",
			  c->remote, during,
			  server ? "" : " (is it configured with insecure = true, or another key?)");
		return -ECONNRESET;
	}
	if (e == SSL_ERROR_SYSCALL && !err) {
		r = errno ? -errno : -EIO;
		set_error(c->error, sizeof(c->error), "%s: %s failed: %s", c->remote, during,
			  strerror(-r));
		return r;
	}
	if (reason == SSL_R_BINDER_DOES_NOT_VERIFY ||
	    reason == SSL_AD_REASON_OFFSET + SSL_AD_DECRYPT_ERROR) {
		set_error(c->error, sizeof(c->error),
			  "authentication with %s failed: its cluster key differs from ours "
			  "(%s)",
			  c->remote, detail);
		return -EKEYREJECTED;
	}
	if (reason >= SSL_AD_REASON_OFFSET) {
		set_error(c->error, sizeof(c->error),
			  "authentication with %s failed: it refused the TLS handshake: its cluster "
			  "name or cluster key differs from ours (%s)",
			  c->remote, detail);
		return -EKEYREJECTED;
	}
	/* during is a phrase that takes the address ("sending to") or a
	 * noun that takes "with" ("the TLS handshake"). */
	set_error(c->error, sizeof(c->error), "%s %s%s failed: %s", during,
		  strstr(during, " to") || strstr(during, " from") ? "" : "with ", c->remote,
		  detail[0] ? detail : "unknown TLS error");
	return r;
}

/* A buffering BIO over its own socket BIO on c->fd (which stays ours to
 * close), with a TLS_BIO_BUFFER buffer for reading or for writing. Without
 * it every TLS record costs a write() on one side and a read() of its
 * header plus one of its body on the other. */
static BIO *conn_bio_new(struct peer_conn *c, bool reading)
{
	BIO *buf = BIO_new(BIO_f_buffer());
	BIO *sock = BIO_new_socket(c->fd, BIO_NOCLOSE);

	if (!buf || !sock ||
	    !(reading ? BIO_set_read_buffer_size(buf, TLS_BIO_BUFFER)
		      : BIO_set_write_buffer_size(buf, TLS_BIO_BUFFER))) {
		BIO_free(buf);
		BIO_free(sock);
		return NULL;
	}
	return BIO_push(buf, sock);
}

/* The accepting side, before the handshake: peek at the first byte, to
 * say plainly when a plaintext peer knocks. 0 when it may be TLS. */
static int conn_peek_tls(struct peer_conn *c, uint64_t deadline, unsigned timeout_ms)
{
	unsigned char first;
	ssize_t n;
	int r;

	for (;;) {
		r = wait_fd(c->ctx, c->fd, POLLIN, deadline);
		if (r == -ECANCELED) {
			set_error(c->error, sizeof(c->error),
				  "handshake with %s abandoned: this node is stopping", c->remote);
			return r;
		}
		if (r < 0) {
			set_error(c->error, sizeof(c->error), "%s sent nothing within %u ms",
				  c->remote, timeout_ms);
			return r;
		}
		n = recv(c->fd, &first, 1, MSG_PEEK);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		break;
	}
	if (n == 0) {
		set_error(c->error, sizeof(c->error),
			  "%s closed the connection before the handshake", c->remote);
		return -ECONNRESET;
	}
	if (n == 1 && first != 0x16) {
		set_error(c->error, sizeof(c->error),
			  "%s speaks without TLS; this cluster requires TLS "
			  "(is the peer configured with insecure = true?)",
			  c->remote);
		return -EPROTO;
	}
	return 0;
}

/* c->ssl, over its own read and write BIO chains. */
static int conn_ssl_new(struct peer_conn *c, bool server)
{
	BIO *rbio, *wbio;

	c->ssl = SSL_new(server ? c->ctx->server : c->ctx->client);
	if (!c->ssl) {
		set_error(c->error, sizeof(c->error), "cannot set up TLS");
		return -ENOMEM;
	}
	/* Two chains so that buffered reads and buffered writes never share
	 * a BIO; the ssl owns both from here on. */
	rbio = conn_bio_new(c, true);
	wbio = conn_bio_new(c, false);
	if (!rbio || !wbio) {
		BIO_free_all(rbio);
		BIO_free_all(wbio);
		set_error(c->error, sizeof(c->error), "cannot set up TLS");
		return -ENOMEM;
	}
	SSL_set_bio(c->ssl, rbio, wbio);
	SSL_set_app_data(c->ssl, c);
	return 0;
}

/* The TLS handshake within timeout_ms. c->ready on success. */
int peer_tls_handshake(struct peer_conn *c, bool server, unsigned timeout_ms)
{
	uint64_t deadline = deadline_in(timeout_ms);
	int r;

	if (!c->ctx->tls) {
		c->ready = true;
		return 0;
	}
	if (server) {
		r = conn_peek_tls(c, deadline, timeout_ms);
		if (r < 0)
			return r;
	}
	r = conn_ssl_new(c, server);
	if (r < 0)
		return r;
	ERR_clear_error();
	for (;;) {
		int ret = server ? SSL_accept(c->ssl) : SSL_connect(c->ssl);

		if (ret == 1)
			break;
		r = peer_tls_wait(c, ret, deadline);
		if (r > 0)
			return peer_tls_error(c, ret, "the TLS handshake", server);
		if (r == -ECANCELED) {
			set_error(c->error, sizeof(c->error),
				  "handshake with %s abandoned: this node is stopping", c->remote);
			return r;
		}
		if (r < 0) {
			set_error(c->error, sizeof(c->error),
				  "TLS handshake with %s timed out after %u ms", c->remote,
				  timeout_ms);
			return r;
		}
	}
	if (!SSL_session_reused(c->ssl)) {
		/* Without the PSK there is no authentication at all. */
		set_error(c->error, sizeof(c->error),
			  "authentication with %s failed: it did not use the cluster key", c->remote);
		return -EKEYREJECTED;
	}
	c->ready = true;
	return 0;
}
