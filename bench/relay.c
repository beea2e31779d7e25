/*
 * resync-relay: a TCP relay for benchmarks that shapes a link without
 * becoming its bottleneck. Each accepted connection is joined to the
 * target; per direction the bytes wait a fixed one-way delay in a timed
 * queue (chunks stamped with their delivery time) and leave through a
 * token bucket (a rate cap, burst about one delay's worth). One thread,
 * epoll, one copy in (read) and one out (write) of each byte.
 *
 * Usage: resync-relay --target HOST:PORT [--listen HOST:PORT] [--delay-ms MS]
 *        [--rate BYTES] [--burst BYTES] [--inflight BYTES]
 *
 * It prints "listening HOST:PORT" once ready, and its counters as one
 * JSON line ({"conns":N,"up":B,"down":B}) on SIGTERM/SIGINT (then exits 0)
 * and for each "stats" line read on stdin. "up" is what went from the
 * connecting side to the target.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK_BYTES (256u << 10)
/* A chunk still being filled takes more bytes read within this long: the
 * bytes join a chunk stamped up to this much earlier (delivered that much
 * early at most), and small reads do not each take a 256 KiB buffer. */
#define COALESCE_NS 200000ull
#define MAX_EVENTS 64

enum { UP, DOWN };

struct chunk {
	struct chunk *next;
	uint64_t due_ns; /* monotonic: when its first byte may leave */
	size_t len, off;
	unsigned char data[CHUNK_BYTES];
};

struct dir {
	int src, dst;
	struct chunk *head, *tail;
	size_t held;      /* chunks queued, counted at their capacity */
	double tokens;    /* bytes the bucket allows now */
	uint64_t fill_ns; /* when tokens were last refilled */
	bool eof;         /* src said EOF: shut dst down once drained */
	bool shut;        /* dst shut down for writing */
	bool blocked;     /* dst said EAGAIN: wait for EPOLLOUT */
	uint64_t *count;
	uint64_t *stalls;
};

/* What an epoll event is about. */
enum { TAG_LISTEN, TAG_SIGNAL, TAG_STDIN, TAG_SIDE };

struct tag {
	int kind;
	int idx; /* TAG_SIDE: which fd of c */
	struct conn *c;
};

struct conn {
	struct conn *prev, *next;
	int fd[2]; /* [0] the accepted side, [1] the target side */
	struct tag tag[2];
	uint32_t events[2];
	struct dir d[2];
	bool dead;
};

struct relay {
	int ep, lfd, sfd;
	struct sockaddr_in target;
	uint64_t delay_ns, rate, burst, inflight;
	uint64_t conns, bytes[2];
	uint64_t late_wakes;   /* woken more than 5 ms after a due time: starved */
	uint64_t max_late_us;
	uint64_t stalls[2]; /* writes refused (EAGAIN): the receiver was slow */
	struct conn *live;
	struct chunk *free_chunks;
	struct tag tags[3]; /* listen, signal, stdin */
	char line[256];
	size_t line_len;
	bool stdin_open;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int parse_addr(const char *s, struct sockaddr_in *ret)
{
	char host[64];
	const char *colon = strrchr(s, ':');
	char *end;
	unsigned long port;

	if (!colon || (size_t)(colon - s) >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (errno || *end || end == colon + 1 || port > 65535)
		return -EINVAL;
	memset(ret, 0, sizeof(*ret));
	ret->sin_family = AF_INET;
	ret->sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &ret->sin_addr) != 1)
		return -EINVAL;
	return 0;
}

/* A size with an optional K/M/G suffix (powers of 1024). */
static int parse_size(const char *s, uint64_t *ret)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *s == '-')
		return -EINVAL;
	switch (*end) {
	case 'K': case 'k': v <<= 10; end++; break;
	case 'M': case 'm': v <<= 20; end++; break;
	case 'G': case 'g': v <<= 30; end++; break;
	default: break;
	}
	if (*end)
		return -EINVAL;
	*ret = v;
	return 0;
}

static struct chunk *chunk_get(struct relay *r)
{
	struct chunk *c = r->free_chunks;

	if (c)
		r->free_chunks = c->next;
	else
		c = malloc(sizeof(*c));
	if (c) {
		c->next = NULL;
		c->len = c->off = 0;
	}
	return c;
}

static void chunk_put(struct relay *r, struct chunk *c)
{
	c->next = r->free_chunks;
	r->free_chunks = c;
}

static void conn_close(struct relay *r, struct conn *c)
{
	if (c->dead)
		return;
	c->dead = true;
	for (int i = 0; i < 2; i++) {
		struct chunk *k;

		while ((k = c->d[i].head)) {
			c->d[i].head = k->next;
			chunk_put(r, k);
		}
		c->d[i].tail = NULL;
		c->d[i].held = 0;
		close(c->fd[i]); /* also leaves the epoll set */
	}
}

static void conn_free(struct relay *r, struct conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		r->live = c->next;
	if (c->next)
		c->next->prev = c->prev;
	free(c);
}

/* Read what src has into the queue, stamped now + delay. Returns -1 when
 * the connection must close (an error), else 0. */
static int dir_read(struct relay *r, struct dir *d)
{
	while (!d->eof && d->held < r->inflight) {
		uint64_t now = now_ns();
		struct chunk *t = d->tail;
		ssize_t n;

		if (!t || t->off || t->len == CHUNK_BYTES ||
		    now > t->due_ns - r->delay_ns + COALESCE_NS) {
			t = chunk_get(r);
			if (!t)
				return -1;
			t->due_ns = now + r->delay_ns;
			if (d->tail)
				d->tail->next = t;
			else
				d->head = t;
			d->tail = t;
			d->held += CHUNK_BYTES;
		}
		n = read(d->src, t->data + t->len, CHUNK_BYTES - t->len);
		if (n > 0) {
			t->len += (size_t)n;
			continue;
		}
		if (n == 0) {
			d->eof = true;
			break;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN)
			break;
		return -1;
	}
	return 0;
}

static void dir_refill(const struct relay *r, struct dir *d, uint64_t now)
{
	if (!r->rate)
		return;
	const struct chunk *h = d->head;

	d->tokens += (double)(now - d->fill_ns) * (double)r->rate / 1e9;
	/* The bucket overflows only while the link idles. When bytes were
	 * already due at the last refill, the link was busy all along and
	 * the relay merely ran late (a shared CPU): what the link would
	 * have carried meanwhile is owed, as a real link would have sent it. */
	if (d->tokens > (double)r->burst && !(h && h->len > h->off && h->due_ns <= d->fill_ns))
		d->tokens = (double)r->burst;
	d->fill_ns = now;
}

/* Deliver what is due and allowed. Returns -1 when the connection must
 * close; *ret_wake: the time something more will be due (0: none). */
static int dir_write(struct relay *r, struct dir *d, uint64_t *ret_wake)
{
	*ret_wake = 0;
	while (d->head && !d->blocked) {
		struct chunk *h = d->head;
		uint64_t now = now_ns();
		size_t want = h->len - h->off;
		ssize_t n;

		if (!want) {
			if (h == d->tail && !d->eof)
				break; /* still filling: more may come */
			goto drop;
		}
		if (h->due_ns > now) {
			*ret_wake = h->due_ns;
			break;
		}
		if (r->rate) {
			/* Writes of at least 64 KiB (or what is left), not a
			 * trickle of tiny ones. */
			size_t least = want < (64u << 10) ? want : (64u << 10);

			dir_refill(r, d, now);
			if (d->tokens < (double)least) {
				*ret_wake = now + (uint64_t)(((double)least - d->tokens) * 1e9 /
							     (double)r->rate) + 1;
				break;
			}
			if ((double)want > d->tokens)
				want = (size_t)d->tokens;
		}
		n = write(d->dst, h->data + h->off, want);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				d->blocked = true;
				(*d->stalls)++;
				break;
			}
			return -1;
		}
		h->off += (size_t)n;
		*d->count += (uint64_t)n;
		if (r->rate)
			d->tokens -= (double)n;
		if (h->off < h->len || (h == d->tail && !d->eof))
			continue;
drop:
		d->head = h->next;
		if (!d->head)
			d->tail = NULL;
		d->held -= CHUNK_BYTES;
		chunk_put(r, h);
	}
	if (!d->head && d->eof && !d->shut) {
		shutdown(d->dst, SHUT_WR);
		d->shut = true;
	}
	return 0;
}

/* The epoll interest of each side, changed only when it differs. */
static int conn_arm(struct relay *r, struct conn *c)
{
	for (int i = 0; i < 2; i++) {
		/* fd[i] is the source of d[i] and the destination of d[1-i]. */
		uint32_t ev = 0;

		if (!c->d[i].eof && c->d[i].held < r->inflight)
			ev |= EPOLLIN;
		if (c->d[1 - i].blocked)
			ev |= EPOLLOUT;
		if (ev != c->events[i]) {
			struct epoll_event e = { .events = ev, .data.ptr = &c->tag[i] };

			if (epoll_ctl(r->ep, EPOLL_CTL_MOD, c->fd[i], &e) < 0)
				return -1;
			c->events[i] = ev;
		}
	}
	return 0;
}

/* Run both directions as far as they go. *wake: the earliest time one
 * of them needs a look again (lowered, never raised). */
static void conn_step(struct relay *r, struct conn *c, uint64_t *wake)
{
	for (int i = 0; i < 2 && !c->dead; i++) {
		uint64_t w;

		if (dir_read(r, &c->d[i]) < 0 || dir_write(r, &c->d[i], &w) < 0) {
			conn_close(r, c);
			return;
		}
		if (w && (!*wake || w < *wake))
			*wake = w;
	}
	if (c->d[UP].shut && c->d[DOWN].shut) {
		conn_close(r, c);
		return;
	}
	if (conn_arm(r, c) < 0)
		conn_close(r, c);
}

static int sock_tune(int fd)
{
	int one = 1;

	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
		return -1;
	return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void relay_accept(struct relay *r)
{
	for (;;) {
		int a = accept4(r->lfd, NULL, NULL, SOCK_CLOEXEC), b;
		struct conn *c;

		if (a < 0)
			return;
		r->conns++;
		b = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		/* A blocking connect: the targets are local, and a refusal
		 * comes at once (the accepted side is then closed). */
		if (b < 0 || connect(b, (struct sockaddr *)&r->target, sizeof(r->target)) < 0 ||
		    sock_tune(a) < 0 || sock_tune(b) < 0 || !(c = calloc(1, sizeof(*c)))) {
			fprintf(stderr, "resync-relay: connection to the target: %s\n",
				strerror(errno));
			close(a);
			if (b >= 0)
				close(b);
			continue;
		}
		c->fd[0] = a;
		c->fd[1] = b;
		for (int i = 0; i < 2; i++) {
			struct epoll_event e = { .events = EPOLLIN, .data.ptr = &c->tag[i] };

			c->tag[i] = (struct tag){ .kind = TAG_SIDE, .idx = i, .c = c };
			c->d[i].src = c->fd[i];
			c->d[i].dst = c->fd[1 - i];
			c->d[i].count = &r->bytes[i];
			c->d[i].stalls = &r->stalls[i];
			c->d[i].tokens = (double)r->burst;
			c->d[i].fill_ns = now_ns();
			c->events[i] = EPOLLIN;
			epoll_ctl(r->ep, EPOLL_CTL_ADD, c->fd[i], &e);
		}
		c->next = r->live;
		if (r->live)
			r->live->prev = c;
		r->live = c;
	}
}

static void relay_print(const struct relay *r)
{
	printf("{\"conns\":%" PRIu64 ",\"up\":%" PRIu64 ",\"down\":%" PRIu64
	       ",\"late_wakes\":%" PRIu64 ",\"max_late_us\":%" PRIu64 ",\"stalls_up\":%" PRIu64
	       ",\"stalls_down\":%" PRIu64 "}\n",
	       r->conns, r->bytes[UP], r->bytes[DOWN], r->late_wakes, r->max_late_us, r->stalls[UP],
	       r->stalls[DOWN]);
	fflush(stdout);
}

static void relay_stdin(struct relay *r)
{
	ssize_t n = read(0, r->line + r->line_len, sizeof(r->line) - 1 - r->line_len);
	char *nl;

	if (n <= 0) {
		if (n == 0 || errno != EINTR) {
			epoll_ctl(r->ep, EPOLL_CTL_DEL, 0, NULL);
			r->stdin_open = false;
		}
		return;
	}
	r->line_len += (size_t)n;
	r->line[r->line_len] = '\0';
	while ((nl = strchr(r->line, '\n'))) {
		*nl = '\0';
		if (!strcmp(r->line, "stats"))
			relay_print(r);
		else
			fprintf(stderr, "resync-relay: unknown command '%s'\n", r->line);
		r->line_len -= (size_t)(nl + 1 - r->line);
		memmove(r->line, nl + 1, r->line_len + 1);
	}
	if (r->line_len == sizeof(r->line) - 1)
		r->line_len = 0; /* an overlong line: dropped */
}

static int relay_loop(struct relay *r)
{
	struct epoll_event ev[MAX_EVENTS];
	uint64_t wake = 0;

	for (;;) {
		struct timespec ts, *tp = NULL;
		int n;

		if (wake) {
			uint64_t now = now_ns(), left = wake > now ? wake - now : 0;

			ts.tv_sec = (time_t)(left / 1000000000ull);
			ts.tv_nsec = (long)(left % 1000000000ull);
			tp = &ts;
		}
		n = epoll_pwait2(r->ep, ev, MAX_EVENTS, tp, NULL);
		if (n < 0 && errno != EINTR) {
			perror("resync-relay: epoll_pwait2");
			return 1;
		}
		if (wake) {
			uint64_t now = now_ns();

			if (now > wake + 5000000ull) {
				r->late_wakes++;
				if ((now - wake) / 1000 > r->max_late_us)
					r->max_late_us = (now - wake) / 1000;
			}
		}
		for (int i = 0; i < n; i++) {
			struct tag *t = ev[i].data.ptr;

			switch (t->kind) {
			case TAG_LISTEN:
				relay_accept(r);
				break;
			case TAG_SIGNAL:
				relay_print(r);
				return 0;
			case TAG_STDIN:
				relay_stdin(r);
				break;
			case TAG_SIDE:
				/* fd[idx] writable: the destination of the
				 * other side's direction is. */
				if (ev[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
					t->c->d[1 - t->idx].blocked = false;
				break;
			}
		}
		/* Every live connection steps: a timed queue or a bucket may
		 * have come due whether or not its sockets woke. */
		wake = 0;
		for (struct conn *c = r->live, *next; c; c = next) {
			next = c->next;
			conn_step(r, c, &wake);
			if (c->dead)
				conn_free(r, c);
		}
	}
}

/* Everything held, at exit. */
static void relay_release(struct relay *r)
{
	struct chunk *k;

	while (r->live) {
		struct conn *c = r->live;

		conn_close(r, c);
		conn_free(r, c);
	}
	while ((k = r->free_chunks)) {
		r->free_chunks = k->next;
		free(k);
	}
	close(r->lfd);
	close(r->sfd);
	close(r->ep);
}

static void usage(FILE *f)
{
	fputs("usage: resync-relay --target HOST:PORT [--listen HOST:PORT] [--delay-ms MS]\n"
	      "                    [--rate BYTES] [--burst BYTES] [--inflight BYTES]\n", f);
}

/* The options into r and *ret_listen. Returns -1 to exit 0 (--help),
 * -2 on a usage error (said), 0 to run. */
static int relay_args(struct relay *r, struct sockaddr_in *ret_listen, int argc, char **argv)
{
	const char *listen_s = "127.0.0.1:0", *target_s = NULL;
	double delay_ms = 0;
	bool burst_set = false;

	/* OPTION VALUE pairs (--help alone). */
	for (int i = 1; i < argc; i += 2) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		int bad = 0;

		if (!strcmp(argv[i], "--help")) {
			usage(stdout);
			return -1;
		}
		if (!v) {
			usage(stderr);
			return -2;
		}
		if (!strcmp(argv[i], "--target"))
			target_s = v;
		else if (!strcmp(argv[i], "--listen"))
			listen_s = v;
		else if (!strcmp(argv[i], "--delay-ms")) {
			char *end;

			delay_ms = strtod(v, &end);
			bad = *end || end == v || !(delay_ms >= 0 && delay_ms <= 60000);
		} else if (!strcmp(argv[i], "--rate"))
			bad = parse_size(v, &r->rate);
		else if (!strcmp(argv[i], "--burst")) {
			bad = parse_size(v, &r->burst) || !r->burst;
			burst_set = true;
		} else if (!strcmp(argv[i], "--inflight"))
			bad = parse_size(v, &r->inflight) || r->inflight < CHUNK_BYTES;
		else {
			usage(stderr);
			return -2;
		}
		if (bad) {
			fprintf(stderr, "resync-relay: bad value for %s: '%s'\n", argv[i], v);
			return -2;
		}
	}
	if (!target_s || parse_addr(target_s, &r->target) < 0 ||
	    parse_addr(listen_s, ret_listen) < 0) {
		fprintf(stderr, "resync-relay: --target and --listen take IPV4:PORT\n");
		usage(stderr);
		return -2;
	}
	r->delay_ns = (uint64_t)(delay_ms * 1e6);
	if (!burst_set) {
		/* About one delay's worth, at least one write's. */
		r->burst = (uint64_t)((double)r->rate * delay_ms / 1000.0);
		if (r->burst < (256u << 10))
			r->burst = 256u << 10;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct relay r = { .inflight = 32u << 20, .stdin_open = true };
	struct sockaddr_in listen_at;
	sigset_t mask;
	socklen_t len = sizeof(listen_at);
	int one = 1, a;

	a = relay_args(&r, &listen_at, argc, argv);
	if (a < 0)
		return a == -1 ? 0 : 2;
	for (int i = 0; i < 3; i++)
		r.tags[i].kind = i;
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	r.sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	r.ep = epoll_create1(EPOLL_CLOEXEC);
	r.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (r.sfd < 0 || r.ep < 0 || r.lfd < 0 ||
	    setsockopt(r.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(r.lfd, (struct sockaddr *)&listen_at, sizeof(listen_at)) < 0 ||
	    listen(r.lfd, 64) < 0 || getsockname(r.lfd, (struct sockaddr *)&listen_at, &len) < 0) {
		fprintf(stderr, "resync-relay: cannot listen: %s\n", strerror(errno));
		return 1;
	}
	{
		struct epoll_event e = { .events = EPOLLIN, .data.ptr = &r.tags[TAG_LISTEN] };
		struct epoll_event s = { .events = EPOLLIN, .data.ptr = &r.tags[TAG_SIGNAL] };
		struct epoll_event in = { .events = EPOLLIN, .data.ptr = &r.tags[TAG_STDIN] };
		char host[INET_ADDRSTRLEN];

		if (epoll_ctl(r.ep, EPOLL_CTL_ADD, r.lfd, &e) < 0 ||
		    epoll_ctl(r.ep, EPOLL_CTL_ADD, r.sfd, &s) < 0) {
			perror("resync-relay: epoll_ctl");
			return 1;
		}
		/* stdin for "stats" lines; a file or /dev/null cannot be
		 * polled and is simply not read. */
		if (epoll_ctl(r.ep, EPOLL_CTL_ADD, 0, &in) < 0)
			r.stdin_open = false;
		inet_ntop(AF_INET, &listen_at.sin_addr, host, sizeof(host));
		printf("listening %s:%u\n", host, ntohs(listen_at.sin_port));
		fflush(stdout);
	}
	{
		int rc = relay_loop(&r);

		relay_release(&r);
		return rc;
	}
}
