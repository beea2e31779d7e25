/* The transport between daemons: TCP, secured with TLS 1.3 and an external
 * pre-shared key (no certificates), carrying the frames of wire.h.
 *
 * The PSK identity is the cluster name; the PSK itself is
 * HKDF-SHA256(secret, salt "resync peer psk v1", info cluster name), so the
 * key file's bytes are never a key on the wire and two clusters sharing a
 * key file still have different keys. Plaintext is used only when the
 * cluster says insecure = true, and then on both ends: a TLS node refuses a
 * plaintext peer and the other way round, each saying so.
 *
 * Threads: a peer_ctx is read-only once made and may be shared (only
 * peer_ctx_shutdown() changes it, from any thread); a peer_listener may
 * be used by one thread at a time; a peer_conn belongs to one thread at a
 * time (send and receive from the same thread, or serialise them), except
 * for peer_conn_shutdown(), which any thread may call while the owner has
 * not freed it. Writes to a closed socket must not kill the process:
 * the daemon ignores SIGPIPE. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct peer_ctx;
struct peer_listener;
struct peer_conn;

enum {
	PEER_TIMEOUT_CONNECT_MS = 10000, /* TCP connect plus TLS handshake */
	PEER_TIMEOUT_IO_MS = 30000,	 /* one frame sent or received */
};

/* The transport of cfg's cluster. secret is required unless cfg->insecure
 * (then it is ignored) and is not kept: the derived key is. Returns 0,
 * -EINVAL, -ENOMEM or -EIO (OpenSSL failed). */
int peer_ctx_new(const struct cluster_config *cfg, const struct secret *secret,
		 struct peer_ctx **ret);
void peer_ctx_free(struct peer_ctx *ctx);
/* Change the default timeouts of new connections (before sharing ctx). */
void peer_ctx_set_timeouts(struct peer_ctx *ctx, unsigned connect_ms, unsigned io_ms);
/* Whether connections are TLS (0: the cluster is insecure). */
int peer_ctx_tls(const struct peer_ctx *ctx);
/* Stop all traffic of ctx, for a node that stops: every wait of every
 * connection and listener of ctx (handshakes, sends, receives, accepts)
 * ends at once with -ECANCELED, now and from then on, and no new
 * connection is made. Nothing is closed or freed: each owner still
 * frees its own. Thread-safe, idempotent; ctx stays valid until
 * peer_ctx_free(), which must come after every connection's free. */
void peer_ctx_shutdown(struct peer_ctx *ctx);

/* Connect to node's address and complete the TLS handshake, within the
 * connect timeout. On failure a message naming the node and the reason
 * (refused, timed out, authentication failed, ...) goes to err. A failed
 * authentication (the peer's cluster key or cluster name differs) is
 * -EKEYREJECTED, and only that: a connect(2) refused by the system stays
 * -EACCES. */
int peer_conn_connect(struct peer_ctx *ctx, const struct node_config *node, char *err,
		      size_t errlen, struct peer_conn **ret);
/* A plaintext connection over fd, a connected stream socket (a
 * socketpair(2) end, say), ready for frames at once: no TLS, no
 * handshake (peer_conn_handshake() returns 0), no cluster context (it
 * has one of its own, freed with it; the default timeouts). For tests
 * and local transports, never for traffic between machines. Takes fd,
 * also on failure; makes it non-blocking and close-on-exec. remote names
 * the other end in messages (NULL: "a local peer"). Returns 0 and *ret,
 * or -ENOMEM, -errno of fcntl(2) or eventfd(2). */
int peer_conn_new_plain(int fd, const char *remote, struct peer_conn **ret);
/* Close (a TLS close_notify is attempted without waiting). NULL is fine. */
void peer_conn_free(struct peer_conn *c);
/* Shut the socket down both ways (shutdown(2), SHUT_RDWR), from any
 * thread, to wake c's owner: its waits end and its next send or receive
 * fails (as if the peer had gone: -ECONNRESET, or -EIO under TLS). Closes and frees
 * nothing: the owner still calls peer_conn_free(); the caller makes sure
 * c is not freed meanwhile (e.g. both under one lock). */
void peer_conn_shutdown(struct peer_conn *c);
/* Timeout of each later send or receive, milliseconds (0 = none). */
void peer_conn_set_timeout(struct peer_conn *c, unsigned ms);
/* Send one frame; the payload is at most RESYNC_WIRE_FRAME_MAX bytes.
 * Total: returns 0 only when everything was handed to the kernel. -errno
 * otherwise (-ETIMEDOUT, -EPIPE, -ECONNRESET, -EIO), with
 * peer_conn_error() saying more. After an error the connection is
 * unusable. */
int peer_conn_send_frame(struct peer_conn *c, uint16_t type, const void *payload, size_t len);
/* Send a KEEPALIVE frame (WIRE_FEATURE_KEEPALIVE) when nothing was sent
 * on c for idle_ms: for c's owner while it waits on something other than
 * the peer, so that the peer's receive deadline does not pass. Only to a
 * peer whose hello offered the feature: the caller checks. Returns 1
 * when one was sent, 0 when none was due, -errno as
 * peer_conn_send_frame(). Same thread rules as any send. */
int peer_conn_keepalive(struct peer_conn *c, unsigned idle_ms);
/* Whether a receive would find something (a frame, its start, the end of
 * the stream or an error) without waiting: for a sender that must notice
 * what the peer says while it streams. A KEEPALIVE counts too, and a
 * receive after it waits for the next frame: peers send KEEPALIVEs only
 * while the other side waits for their answer, never while it streams. */
bool peer_conn_readable(struct peer_conn *c);
/* Whether the peer ended the connection (it closed it, or its process is
 * gone: the kernel closed it), or a send or receive broke it: nothing it
 * sends can arrive any more, though what it sent before may still be
 * read. Without waiting; a peer whose machine went silent is not seen. */
bool peer_conn_peer_closed(struct peer_conn *c);
/* Receive one frame into buf (cap bytes): its header is validated
 * (wire_header_decode) and its length checked against cap before the
 * payload is read. KEEPALIVE frames are skipped (from any peer, whether
 * it offered the feature or not), each starting the timeout over: the
 * timeout bounds the peer's silence. -EBADMSG for a malformed header (a
 * KEEPALIVE with a payload too), -EMSGSIZE when the payload exceeds cap,
 * -ECONNRESET when the peer closed, -ETIMEDOUT. The payload itself is
 * for the caller to decode. */
int peer_conn_recv_frame(struct peer_conn *c, uint16_t *ret_type, void *buf, size_t cap,
			 size_t *ret_len);
/* The last failure of c in words (empty if none). */
const char *peer_conn_error(const struct peer_conn *c);
/* The peer's address, "HOST:PORT". */
const char *peer_conn_remote(const struct peer_conn *c);
/* Whether c is encrypted. */
int peer_conn_tls(const struct peer_conn *c);
/* Frame bytes (headers and payloads) sent and received on c. */
uint64_t peer_conn_bytes_sent(const struct peer_conn *c);
uint64_t peer_conn_bytes_received(const struct peer_conn *c);
/* Frames received (KEEPALIVEs aside), and the round trips paid in
 * sequence on c: receives that had to wait for an answer to a frame sent
 * since the last such wait (a reply already there, or a second reply to
 * requests sent together, costs none), plus one each for the TCP and TLS
 * handshakes of peer_conn_connect(). */
uint64_t peer_conn_exchanges(const struct peer_conn *c);
uint64_t peer_conn_round_trips(const struct peer_conn *c);
/* The round trip to the peer as measured on c, in microseconds: the
 * least of the samples noted (peer_conn_connect() notes its TLS
 * handshake's time, one round trip with TLS 1.3 and a PSK; the asking
 * side notes its hello exchange's), 0 when none was. The TCP connect is
 * not a sample: a proxy or relay in front of the peer answers it at
 * once. */
uint64_t peer_conn_rtt_usec(const struct peer_conn *c);
void peer_conn_note_rtt(struct peer_conn *c, uint64_t usec);

/* Listen on host:port (port 0 picks a free one; see peer_listener_port).
 * The socket is non-blocking and close-on-exec. */
int peer_listener_new(struct peer_ctx *ctx, const char *host, uint16_t port, char *err,
		      size_t errlen, struct peer_listener **ret);
void peer_listener_free(struct peer_listener *l);
uint16_t peer_listener_port(const struct peer_listener *l);
/* The listening fd, for the caller's poll loop. */
int peer_listener_fd(const struct peer_listener *l);
/* Wait up to timeout_ms (-1: forever) for a connection and accept it:
 * the TCP connection only, no byte is read, so that an accept loop never
 * waits for a peer. The connection carries no frame (-ENOTCONN) until
 * peer_conn_handshake() succeeded; the caller owns it. -ETIMEDOUT when no
 * one connected in time, -ECANCELED after peer_ctx_shutdown(), or
 * accept(2)'s -errno (-EMFILE, -ENFILE, -ENOBUFS, -ENOMEM: the caller
 * backs off), with words in err. */
int peer_listener_accept(struct peer_listener *l, int timeout_ms, char *err, size_t errlen,
			 struct peer_conn **ret);
/* The accepting side's handshake on c from peer_listener_accept(), within
 * timeout_ms (0: the context's connect timeout); run by c's owner, not by
 * the accept loop. 0 when authenticated (or plaintext in an insecure
 * cluster); -EACCES (authentication), -EPROTO (not our protocol, or c
 * was not fresh from the listener), -ETIMEDOUT, -ECONNRESET, -ECANCELED
 * (peer_ctx_shutdown) or another -errno, with a message naming the
 * peer's address in err. After a failure c is only to be freed. */
int peer_conn_handshake(struct peer_conn *c, unsigned timeout_ms, char *err, size_t errlen);
