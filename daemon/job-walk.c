/* The primary's walk of a secondary's hash tree, level by level with
 * every request of a level in flight at once (issue 18): a round trip a
 * level, not one a request. It starts below the root, at the deepest
 * level whose whole reply fits a budget sized by the link's round trip
 * (job_walk_first_level()): the levels above it would differ anyway
 * wherever a page does, and each would cost a round trip. Plain
 * HASH_REQ/HASH_REPLY, in order: every peer answers them, so no feature
 * bit is needed.
 *
 * The first level's request is the job's prefetch (job_prefetch()): sent
 * before this volume is hashed, it makes the secondary build its tree
 * at once, and its reply starts the walk, so it costs no round trip of
 * its own. A plan's walk leaves a memo (struct walk_memo): that first
 * level and the differing leaves with the secondary's hashes of them.
 * The resync that follows the plan asks for the memo's first level
 * again; when its tree is the plan's (same seed and shape: this volume
 * unchanged) and the secondary's first level is the one the plan saw,
 * every node below is the same too (the walk's own inference: equal
 * hashes, equal subtrees), so the plan's leaves are the answer and the
 * levels below cost no round trip. A secondary written since answers
 * with other hashes, and the walk goes on from them as usual. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "job-early.h"
#include "job-walk.h"
#include "node-int.h"
#include "resync/failpoint.h"
#include "resync/limits.h"
#include "resync/macro.h"

enum {
	/* The first level asked for: the deepest whose nodes fit the
	 * budget (job_walk_first_nodes()), whole. The floor: 4096 nodes
	 * (64 KiB of hashes), what any link gets. */
	JOB_WALK_FIRST_NODES = 4096,
	/* The cap, in requests of RESYNC_WIRE_HASHES_MAX nodes (1 MiB of
	 * hashes each): all of them go in one flight (the prefetch, the
	 * hellos'), and their replies wait in the socket buffers while this
	 * side hashes (job_walk_link_rtt()). 8 MiB: 100 ms at the assumed
	 * rate, level 0 whole at 2 GiB. A peer that cannot take the rest of
	 * a HASH_REQ_IF (WIRE_FEATURE_HASH_MORE) gets one (job-hashif.c). */
	JOB_WALK_FIRST_REQS = 8,
	/* The link's rate that the budget assumes, bytes a second. */
	JOB_WALK_LINK_RATE = 100 << 20,
	/* A slow disk's hashing rate, bytes a second (job_walk_link_rtt()). */
	JOB_WALK_HASH_RATE = 100 << 20,
	/* Round trips below this keep the floor: loopback, a LAN, a metro
	 * link, where a round trip saved is worth little; and a loaded
	 * machine's scheduling makes a loopback's measured round trip
	 * (TLS handshake, hellos) 1.4-3.8 ms at a load average of 8 here. */
	JOB_WALK_RTT_MIN_USEC = 5000,
	/* Ranges in one HASH_REQ of the walk (16 bytes each on the wire). */
	JOB_WALK_REQ_RANGES = 2048,
	/* Request bytes sent past the oldest unanswered one: while the
	 * secondary writes a reply that this side does not read yet, what
	 * is sent must fit in the socket buffers (the receiver's 128 KiB by
	 * default, its advertised window about half), or both would wait. */
	JOB_WALK_INFLIGHT_BYTES = 48 << 10,
	JOB_WALK_PENDING_MAX = 64,
};

/* A growable array of ranges or of node indices. */
struct walk_vec {
	void *v;
	size_t n, cap, size;
};

static int walk_vec_push(struct walk_vec *a, const void *x)
{
	if (a->n == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 256;
		void *nv = reallocarray(a->v, cap, a->size);

		if (!nv)
			return -ENOMEM;
		a->v = nv;
		a->cap = cap;
	}
	memcpy((char *)a->v + a->n * a->size, x, a->size);
	a->n++;
	return 0;
}

/* One request in flight: its ranges are todo's [first, first + n), split
 * so that no request asks more than RESYNC_WIRE_HASHES_MAX hashes. */
struct walk_req {
	size_t first, n;
	uint64_t hashes;
	size_t bytes; /* encoded */
	uint64_t t_sent; /* clock_usec() when sent; 0: unknown */
};

struct walk {
	struct job *j;
	struct peer_conn *c;
	unsigned char *buf;
	struct hash128 *h; /* RESYNC_WIRE_HASHES_MAX */
	unsigned level, first_level;
	struct walk_vec todo;  /* struct hashtree_range, ascending, each <= HASHES_MAX */
	size_t next;	       /* todo's first range not asked for yet */
	struct walk_vec found; /* uint64_t: differing nodes at level, ascending */
	/* With a memo to make or to use: the peer's hashes of the first
	 * level, and (to make one) of the differing leaves, as found. */
	struct walk_vec first, found_h;
	bool keep_first;
	struct walk_req q[JOB_WALK_PENDING_MAX];
	size_t q_head, q_n; /* the FIFO of requests sent, unanswered */
	size_t inflight;    /* bytes of q's requests but the oldest */
};

/* The nodes the walk's first level may have, for a link whose round trip
 * is rtt_usec (0: not measured). Starting a level deeper saves that
 * level's round trip and costs the reply's extra hashes, those of nodes
 * under parents that would have compared equal: at most the whole
 * level's reply. At the assumed JOB_WALK_LINK_RATE, a reply of rtt x
 * rate bytes takes as long as the round trip it saves, so a level whose
 * whole reply fits that budget never costs more than it saves (and with
 * scattered changes most of it would be asked anyway: at 1 % of 4 KiB
 * pages, 15 % of the 16-page nodes of level 1 differ, and nearly all of
 * level 2's). Between the floor (today's 64 KiB: what loopback and a LAN
 * keep, below JOB_WALK_RTT_MIN_USEC) and the cap (one request); 50 ms
 * makes 5 MiB, capped: level 1 whole at 512 MiB (8,192 hashes) and at
 * 2 GiB (32,768). */
uint64_t job_walk_first_nodes(uint64_t rtt_usec, unsigned reqs)
{
	uint64_t bytes, cap = (uint64_t)MAX(MIN(reqs, (unsigned)JOB_WALK_FIRST_REQS), 1u) *
			      RESYNC_WIRE_HASHES_MAX;

	if (rtt_usec < JOB_WALK_RTT_MIN_USEC)
		return JOB_WALK_FIRST_NODES;
	bytes = MIN(rtt_usec, (uint64_t)3600 * 1000000) * JOB_WALK_LINK_RATE / 1000000;
	return MAX(MIN(bytes / sizeof(struct hash128), cap), (uint64_t)JOB_WALK_FIRST_NODES);
}

unsigned job_walk_first_parts(uint64_t count)
{
	return (unsigned)DIV_ROUND_UP(count, (uint64_t)RESYNC_WIRE_HASHES_MAX);
}

/* Part k's range of the first level f (the walk's split: walk_todo_add()
 * then walk_send(), one range of at most RESYNC_WIRE_HASHES_MAX each). */
static struct hashtree_range walk_first_range(const struct walk_first *f, unsigned k)
{
	uint64_t first = (uint64_t)k * RESYNC_WIRE_HASHES_MAX;

	return (struct hashtree_range){first, MIN(f->count - first, (uint64_t)RESYNC_WIRE_HASHES_MAX)};
}

int job_walk_first_encode(const struct walk_first *f, unsigned k, unsigned char *buf,
			  size_t *ret_len)
{
	struct hashtree_range x;

	if (k >= job_walk_first_parts(f->count))
		return -EINVAL;
	x = walk_first_range(f, k);
	return wire_hash_req_encode(f->seed, f->level, f->fanout, f->leaf_wire, &x, 1, buf,
				    RESYNC_WIRE_FRAME_MAX, ret_len);
}

int job_walk_first_send(struct peer_conn *c, uint16_t type, const struct walk_first *f,
			unsigned from)
{
	unsigned char buf[128]; /* one range */
	size_t len;
	int r = 0;

	for (unsigned k = from; k < job_walk_first_parts(f->count) && r >= 0; k++) {
		struct hashtree_range x = walk_first_range(f, k);

		r = wire_hash_req_encode(f->seed, f->level, f->fanout, f->leaf_wire, &x, 1, buf,
					 sizeof(buf), &len);
		if (r >= 0)
			r = peer_conn_send_frame(c, type, buf, len);
	}
	return r;
}

int job_walk_first_rest(void *arg, struct peer_conn *c)
{
	struct job *j = arg;

	return job_walk_first_send(c, j->first_rest, &j->first_req, 1);
}

/* The level a walk starts at, for a tree of nleaves leaves and fanout
 * (hashtree.c's shape): the deepest with at most max_nodes nodes, and
 * its count. Known before the tree is built (the prefetch asks for it). */
void job_walk_first(uint64_t nleaves, unsigned fanout, uint64_t max_nodes, unsigned *ret_level,
		    uint64_t *ret_count)
{
	unsigned level = 0;
	uint64_t c = nleaves;

	while (c > max_nodes) {
		c = DIV_ROUND_UP(c, fanout);
		level++;
	}
	*ret_level = level;
	*ret_count = c;
}

/* The count of nodes at level of a tree of nleaves leaves and fanout. */
static uint64_t walk_level_count(uint64_t nleaves, unsigned fanout, unsigned level)
{
	uint64_t c = nleaves;

	for (unsigned i = 0; i < level && c > 1; i++)
		c = DIV_ROUND_UP(c, fanout);
	return c;
}

/* The round trip that sizes j's first level: 0 (the floor) when this
 * volume is large. The first level's request goes before this side has
 * hashed its volume (the prefetch), and its reply waits in the socket
 * buffers until then; a reply larger than they hold (some 100 KiB) keeps
 * the secondary's send waiting, which gives up after session_timeout.
 * So a deeper level only for a volume hashed in half of that at a slow
 * disk's 100 MiB/s (6 GiB at the default 120 s). */
static uint64_t job_walk_link_rtt(const struct job *j)
{
	uint64_t rtt = j->c ? peer_conn_rtt_usec(j->c) : 0;
	const char *e = getenv("RESYNC_WALK_RTT_USEC");

	/* For tests: the round trip taken as measured (resyncd(8)). */
	if (e && *e)
		rtt = strtoull(e, NULL, 10);

	/* In ms of hashing against ms of timeout. */
	if (j->ctx && j->ctx->vol &&
	    volume_size(j->ctx->vol) / (JOB_WALK_HASH_RATE / 1000) > j->ctx->cfg->session_timeout_ms / 2)
		return 0;
	return rtt;
}

void job_walk_first_level(struct job *j, uint64_t nleaves, unsigned fanout, unsigned *ret_level,
			  uint64_t *ret_count)
{
	const struct walk_memo *m = j->memo_in;

	/* first_fanout 0: not chosen yet (a tree's fanout is 2 or more). */
	if (j->first_nleaves != nleaves || j->first_fanout != fanout) {
		if (m && m->set && m->nleaves == nleaves && m->fanout == fanout) {
			/* The plan's: the level its memo holds. */
			j->first_level = m->first_level;
		} else {
			uint64_t rtt = job_walk_link_rtt(j), count;
			unsigned base;

			job_walk_first(nleaves, fanout,
				       job_walk_first_nodes(rtt, j->first_one ? 1 : JOB_WALK_FIRST_REQS),
				       &j->first_level, &count);
			job_walk_first(nleaves, fanout, JOB_WALK_FIRST_NODES, &base, &count);
			if (j->first_level < base)
				log_info("the walk of '%s' starts at level %u (%" PRIu64
					 " hashes) for a round trip of %.1f ms",
					 j->peer ? j->peer->name : "?", j->first_level,
					 walk_level_count(nleaves, fanout, j->first_level),
					 (double)rtt / 1000);
		}
		j->first_nleaves = nleaves;
		j->first_fanout = fanout;
	}
	*ret_level = j->first_level;
	*ret_count = walk_level_count(nleaves, fanout, j->first_level);
}

int job_memo_first_req(struct job *j, const struct walk_memo *m, size_t *ret_len)
{
	j->first_req = (struct walk_first){
		.seed = m->seed,
		.count = walk_level_count(m->nleaves, m->fanout, m->first_level),
		.level = m->first_level,
		.fanout = m->fanout,
		.leaf_wire = m->leaf_wire,
		.t_sent = clock_usec(), /* it goes in the hellos' flight */
	};
	j->first_rest = WIRE_HASH_REQ;
	return job_walk_first_encode(&j->first_req, 0, j->buf, ret_len);
}

void walk_memo_release(struct walk_memo *m)
{
	free(m->first);
	free(m->leaves);
	free(m->leaf_h);
	memset(m, 0, sizeof(*m));
}

/* Add [first, first + count) to the level's todo, merged with the last
 * range when adjacent, never longer than a request may ask. */
static int walk_todo_add(struct walk *w, uint64_t first, uint64_t count)
{
	while (count) {
		struct hashtree_range *last =
			w->todo.n ? &((struct hashtree_range *)w->todo.v)[w->todo.n - 1] : NULL;
		uint64_t take;
		int r;

		if (last && last->first + last->count == first &&
		    last->count < RESYNC_WIRE_HASHES_MAX) {
			take = MIN(count, RESYNC_WIRE_HASHES_MAX - last->count);
			last->count += take;
		} else {
			struct hashtree_range x = {first, MIN(count, (uint64_t)RESYNC_WIRE_HASHES_MAX)};

			take = x.count;
			r = walk_vec_push(&w->todo, &x);
			if (r < 0)
				return r;
		}
		first += take;
		count -= take;
	}
	return 0;
}

/* Encode and send the request of todo's ranges from *next (as many as
 * fit one request); *next moves past them. */
static int walk_send(struct walk *w)
{
	size_t *next = &w->next;
	const struct hashtree_range *t = w->todo.v;
	struct job *j = w->j;
	struct walk_req rq = {.first = *next};
	size_t len;
	int r;

	while (*next < w->todo.n && rq.n < JOB_WALK_REQ_RANGES &&
	       rq.hashes + t[*next].count <= RESYNC_WIRE_HASHES_MAX) {
		rq.hashes += t[*next].count;
		rq.n++;
		(*next)++;
	}
	r = wire_hash_req_encode(j->seed, w->level, hashtree_fanout(j->tree), job_leaf_wire(j),
				 t + rq.first, rq.n, w->buf, RESYNC_WIRE_FRAME_MAX, &len);
	if (r < 0)
		return r;
	r = peer_conn_send_frame(w->c, WIRE_HASH_REQ, w->buf, len);
	if (r < 0) {
		snprintf(j->err, sizeof(j->err), "node '%s': %s", j->peer->name,
			 peer_conn_error(w->c));
		return r;
	}
	rq.bytes = len;
	rq.t_sent = clock_usec();
	if (w->q_n)
		w->inflight += len;
	w->q[(w->q_head + w->q_n++) % JOB_WALK_PENDING_MAX] = rq;
	return 0;
}

/* The oldest request's reply: its differing nodes added to found. */
static int walk_recv(struct walk *w)
{
	struct walk_req rq = w->q[w->q_head];
	const struct hashtree_range *t = w->todo.v;
	const struct hashtree *tree = w->j->tree;
	struct wire_hash_reply rep;
	uint64_t k = 0;
	uint16_t type;
	size_t len;
	int r;

	/* A checkpoint's ACK may come first: data behind the hellos. */
	r = job_recv_reply(w->j, w->c, w->buf, &type, &len);
	if (r < 0)
		return r;
	if (type != WIRE_HASH_REPLY || wire_hash_reply_decode(w->buf, len, &rep) < 0 ||
	    rep.n_hashes != rq.hashes || rep.level != w->level)
		return -EBADMSG;
	/* A lower bound of the link's rate: the reply's bytes over the time
	 * since its request went (the round trip, the secondary's work and
	 * slow start included; for the prefetch's, also this volume's hash
	 * before it was read: a low bound then, which the fastest reply
	 * taken leaves out; a resync with its plan's walk has little else
	 * measured). */
	if (rq.t_sent)
		job_note_reply_rate(w->j, (double)len / (double)MAX(clock_usec() - rq.t_sent, (uint64_t)1));
	FAILPOINT("primary-tree-level");
	r = wire_hash_reply_get(&rep, w->h, RESYNC_WIRE_HASHES_MAX);
	if (r < 0)
		return r;
	for (uint64_t i = 0; w->keep_first && w->level == w->first_level && i < rq.hashes && r >= 0;
	     i++)
		r = walk_vec_push(&w->first, &w->h[i]);
	if (r < 0)
		return r;
	if (w->level == 0) {
		/* The secondary's hashes of these leaves: moved blocks (moved.c). */
		struct hashtree_step st = {.level = 0, .n_ranges = rq.n, .ranges = t + rq.first,
					   .n_hashes = rq.hashes};

		r = moved_note_leaves(w->j, &st, w->h);
		if (r < 0)
			return r;
	}
	w->q_head = (w->q_head + 1) % JOB_WALK_PENDING_MAX;
	w->q_n--;
	if (w->q_n)
		w->inflight -= w->q[w->q_head].bytes;
	for (size_t i = rq.first; i < rq.first + rq.n; i++)
		for (uint64_t x = t[i].first; x < t[i].first + t[i].count; x++, k++)
			if (!hash128_equal(hashtree_node(tree, w->level, x), &w->h[k])) {
				r = walk_vec_push(&w->found, &x);
				if (r >= 0 && w->level == 0 && w->j->memo_make)
					r = walk_vec_push(&w->found_h, &w->h[k]);
				if (r < 0)
					return r;
			}
	return 0;
}

/* Every request of the level sent, as many in flight as the window
 * lets, and every reply read. */
static int walk_level(struct walk *w)
{
	int r;

	w->found.n = 0;
	w->found_h.n = 0;
	while (w->next < w->todo.n || w->q_n) {
		/* The next request's size, at most (16 bytes a range). */
		size_t est = 64 + 16 * MIN(w->todo.n - w->next, (size_t)JOB_WALK_REQ_RANGES);

		if (w->next < w->todo.n && w->q_n < JOB_WALK_PENDING_MAX &&
		    (w->q_n == 0 || w->inflight + est <= JOB_WALK_INFLIGHT_BYTES)) {
			r = walk_send(w);
		} else {
			r = walk_recv(w);
		}
		if (r < 0)
			return r;
	}
	return 0;
}

/* The level below: the children of the nodes found differing. */
static int walk_descend(struct walk *w)
{
	const struct hashtree *tree = w->j->tree;
	uint64_t fanout = hashtree_fanout(tree), below;
	const uint64_t *f = w->found.v;
	int r;

	w->level--;
	below = hashtree_level_count(tree, w->level);
	w->todo.n = 0;
	w->next = 0;
	for (size_t i = 0; i < w->found.n; i++) {
		uint64_t first = f[i] * fanout;

		r = walk_todo_add(w, first, MIN(fanout, below - first));
		if (r < 0)
			return r;
	}
	return 0;
}

/* The prefetch (job_prefetch(), or the hellos' flight) asked for the
 * first level already, a request a range of todo (job_walk_first_send()
 * splits it as walk_todo_add() does): they are the walk's first requests
 * in flight. */
static void walk_prefetched(struct walk *w)
{
	struct job *j = w->j;
	const struct hashtree_range *t = w->todo.v;

	if (!j->prefetched || w->todo.n > JOB_WALK_PENDING_MAX ||
	    w->todo.n != job_walk_first_parts(j->first_req.count))
		return;
	j->prefetched = false;
	for (size_t i = 0; i < w->todo.n; i++)
		w->q[i] = (struct walk_req){.first = i, .n = 1, .hashes = t[i].count,
					    .t_sent = j->first_req.t_sent};
	w->q_head = 0;
	w->q_n = w->todo.n;
	w->inflight = 0; /* a range each: far below the window */
	w->next = w->todo.n;
}

/* Whether memo m was made against this job's tree (same seed and shape)
 * and the secondary's first level is still the one it saw. */
static bool walk_memo_holds(const struct walk *w, const struct walk_memo *m)
{
	const struct hashtree *t = w->j->tree;

	return m && m->set && m->seed == hashtree_seed(t) && m->fanout == hashtree_fanout(t) &&
	       m->leaf == w->j->leaf && m->nleaves == hashtree_level_count(t, 0) &&
	       m->nfirst == w->first.n &&
	       !memcmp(m->first, w->first.v, m->nfirst * sizeof(struct hash128));
}

/* The plan's answer taken: its leaves, and the secondary's hashes of
 * them for the moved-data search (as a level-0 reply would give). */
static int walk_memo_use(struct walk *w, const struct walk_memo *m)
{
	_cleanup_free_ struct hashtree_range *one = NULL;
	struct hashtree_step st = {.level = 0};
	int r;

	/* A first level that is the leaves: the reply just read told
	 * moved.c the secondary's hashes of them all (walk_recv()), the
	 * plan's among them; told twice, a leaf would be copied twice. */
	bool noted = w->level == 0;

	w->found.n = 0;
	for (size_t i = 0; i < m->nleaves_diff; i++) {
		r = walk_vec_push(&w->found, &m->leaves[i]);
		if (r < 0)
			return r;
	}
	w->level = 0;
	if (noted)
		return 0;
	if (!m->nleaves_diff)
		return 0;
	one = calloc(m->nleaves_diff, sizeof(*one));
	if (!one)
		return -ENOMEM;
	for (size_t i = 0; i < m->nleaves_diff; i++)
		one[i] = (struct hashtree_range){m->leaves[i], 1};
	st.n_ranges = m->nleaves_diff;
	st.ranges = one;
	st.n_hashes = m->nleaves_diff;
	return moved_note_leaves(w->j, &st, m->leaf_h);
}

/* The walk's result kept as the job's memo (a plan's). */
static int walk_memo_make(struct walk *w)
{
	struct job *j = w->j;
	struct walk_memo *m = &j->memo;

	walk_memo_release(m);
	m->seed = hashtree_seed(j->tree);
	m->fanout = hashtree_fanout(j->tree);
	m->leaf = j->leaf;
	m->leaf_wire = job_leaf_wire(j);
	m->nleaves = hashtree_level_count(j->tree, 0);
	m->first_level = w->first_level;
	m->nfirst = w->first.n;
	m->first = malloc((w->first.n ? w->first.n : 1) * sizeof(struct hash128));
	m->nleaves_diff = w->level == 0 ? w->found.n : 0;
	m->leaves = malloc((m->nleaves_diff ? m->nleaves_diff : 1) * sizeof(uint64_t));
	m->leaf_h = malloc((m->nleaves_diff ? m->nleaves_diff : 1) * sizeof(struct hash128));
	if (!m->first || !m->leaves || !m->leaf_h) {
		walk_memo_release(m);
		return -ENOMEM;
	}
	if (w->first.n)
		memcpy(m->first, w->first.v, w->first.n * sizeof(struct hash128));
	if (m->nleaves_diff) {
		memcpy(m->leaves, w->found.v, m->nleaves_diff * sizeof(uint64_t));
		memcpy(m->leaf_h, w->found_h.v, m->nleaves_diff * sizeof(struct hash128));
	}
	m->features = j->features;
	m->proto_min = j->hello.proto_min;
	m->proto_max = j->hello.proto_max;
	m->quiet = moved_memo_quiet(j, m->leaves, m->leaf_h, m->nleaves_diff);
	m->reply_rate = j->reply_rate;
	m->set = true;
	return 0;
}

/* The levels from the first down, each in one round trip; the first's
 * reply checked against the plan's memo, which may end the walk there. */
static int walk_levels(struct walk *w)
{
	struct job *j = w->j;
	int r;

	r = walk_todo_add(w, 0, hashtree_level_count(j->tree, w->level));
	if (r >= 0)
		walk_prefetched(w);
	while (r >= 0) {
		r = walk_level(w);
		if (r < 0)
			break;
		if (w->level == w->first_level && walk_memo_holds(w, j->memo_in)) {
			j->memo_used = true;
			return walk_memo_use(w, j->memo_in);
		}
		if (w->level == 0 || w->found.n == 0)
			break;
		r = walk_descend(w);
	}
	return r;
}

int job_walk(struct job *j, struct peer_conn *c, unsigned char *buf, uint64_t **ret_leaves,
	     size_t *ret_n)
{
	struct walk w = {
		.j = j, .c = c, .buf = buf,
		.todo = {.size = sizeof(struct hashtree_range)},
		.found = {.size = sizeof(uint64_t)},
		.first = {.size = sizeof(struct hash128)},
		.found_h = {.size = sizeof(struct hash128)},
		.keep_first = j->memo_make || j->memo_in,
	};
	unsigned levels = hashtree_levels(j->tree);
	uint64_t count;
	int r = 0;

	*ret_leaves = NULL;
	*ret_n = 0;
	if (!levels)
		return 0;
	job_walk_first_level(j, hashtree_level_count(j->tree, 0), hashtree_fanout(j->tree),
			     &w.first_level, &count);
	if (w.first_level >= levels)
		return -EINVAL; /* our bug: the level is the tree's shape's */
	w.h = malloc(RESYNC_WIRE_HASHES_MAX * sizeof(*w.h));
	if (!w.h)
		return -ENOMEM;
	w.level = w.first_level;
	r = walk_levels(&w);
	if (r >= 0 && j->memo_make && !j->memo_used)
		r = walk_memo_make(&w);
	free(w.h);
	free(w.todo.v);
	free(w.first.v);
	free(w.found_h.v);
	if (r < 0 || w.level != 0) {
		free(w.found.v); /* failed, or equal above the leaves */
		return r < 0 ? r : 0;
	}
	*ret_leaves = w.found.v;
	*ret_n = w.found.n;
	return 0;
}
