/* Listening UNIX stream sockets made safely, for the control sockets of
 * resyncd and resyncfs (no dependency beyond libc).
 *
 * A socket path where a live server answers is never taken over; one left
 * by a dead process is replaced. The socket is private (0600) before
 * anyone can connect, without touching the process's umask (other threads
 * may be creating files). */
#pragma once

/* Listen at path with the given backlog. The path is probed first: a
 * server that answers (or whose backlog is full) gives -EADDRINUSE; a
 * socket file nobody listens on is removed; a path that is not a socket
 * gives -EEXIST and is left alone. The new socket is bound, made 0600
 * (chmod before listen(), so nobody connects while it is wider) and then
 * listens. Returns 0 and *ret_fd (O_CLOEXEC; the caller closes it and
 * unlinks path), or -errno (-ENAMETOOLONG: the path does not fit a
 * sockaddr_un). Thread-safe. */
int unixsock_listen(const char *path, int backlog, int *ret_fd);

/* Connect to path. Returns 0 and *ret_fd (O_CLOEXEC), or -errno. */
int unixsock_connect(const char *path, int *ret_fd);

/* After accept() failed with errno err: how many milliseconds the accept
 * loop waits before it accepts again. Running out of descriptors or
 * memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) backs off from 100 ms, doubling
 * to 1 s, instead of spinning on a listening socket that stays readable;
 * anything else (a client that hung up first, EINTR) retries at once and
 * gives 0. *backoff_ms holds the loop's state: start it at 0 and reset it
 * to 0 after an accept succeeds. */
unsigned unixsock_accept_delay(int err, unsigned *backoff_ms);
