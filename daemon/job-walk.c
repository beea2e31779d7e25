/* The primary's walk of a secondary's hash tree, level by level with
 * every request of a level in flight at once (issue 18): a round trip a
 * level, not one a request. It starts below the root, at the deepest
 * level small enough to fetch whole (JOB_WALK_FIRST_NODES): the levels
 * above it would differ anyway wherever a page does, and each would cost
 * a round trip. Plain HASH_REQ/HASH_REPLY, in order: every peer answers
 * them, so no feature bit is needed. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "node-int.h"
#include "resync/failpoint.h"
#include "resync/limits.h"
#include "resync/macro.h"

enum {
	/* The first level asked for: the deepest with at most this many
	 * nodes (64 KiB of hashes), whole. */
	JOB_WALK_FIRST_NODES = 4096,
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
};

struct walk {
	struct job *j;
	struct peer_conn *c;
	unsigned char *buf;
	struct hash128 *h; /* RESYNC_WIRE_HASHES_MAX */
	unsigned level;
	struct walk_vec todo;  /* struct hashtree_range, ascending, each <= HASHES_MAX */
	struct walk_vec found; /* uint64_t: differing nodes at level, ascending */
	struct walk_req q[JOB_WALK_PENDING_MAX];
	size_t q_head, q_n; /* the FIFO of requests sent, unanswered */
	size_t inflight;    /* bytes of q's requests but the oldest */
};

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
static int walk_send(struct walk *w, size_t *next)
{
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

	r = job_recv(w->j, w->c, w->buf, &type, &len);
	if (r < 0)
		return r;
	if (type != WIRE_HASH_REPLY || wire_hash_reply_decode(w->buf, len, &rep) < 0 ||
	    rep.n_hashes != rq.hashes || rep.level != w->level)
		return -EBADMSG;
	FAILPOINT("primary-tree-level");
	r = wire_hash_reply_get(&rep, w->h, RESYNC_WIRE_HASHES_MAX);
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
				if (r < 0)
					return r;
			}
	return 0;
}

/* Every request of the level sent, as many in flight as the window
 * lets, and every reply read. */
static int walk_level(struct walk *w)
{
	size_t next = 0;
	int r;

	w->found.n = 0;
	while (next < w->todo.n || w->q_n) {
		/* The next request's size, at most (16 bytes a range). */
		size_t est = 64 + 16 * MIN(w->todo.n - next, (size_t)JOB_WALK_REQ_RANGES);

		if (next < w->todo.n && w->q_n < JOB_WALK_PENDING_MAX &&
		    (w->q_n == 0 || w->inflight + est <= JOB_WALK_INFLIGHT_BYTES)) {
			r = walk_send(w, &next);
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
	for (size_t i = 0; i < w->found.n; i++) {
		uint64_t first = f[i] * fanout;

		r = walk_todo_add(w, first, MIN(fanout, below - first));
		if (r < 0)
			return r;
	}
	return 0;
}

int job_walk(struct job *j, struct peer_conn *c, unsigned char *buf, uint64_t **ret_leaves,
	     size_t *ret_n)
{
	struct walk w = {
		.j = j, .c = c, .buf = buf,
		.todo = {.size = sizeof(struct hashtree_range)},
		.found = {.size = sizeof(uint64_t)},
	};
	unsigned levels = hashtree_levels(j->tree);
	int r = 0;

	*ret_leaves = NULL;
	*ret_n = 0;
	if (!levels)
		return 0;
	w.h = malloc(RESYNC_WIRE_HASHES_MAX * sizeof(*w.h));
	if (!w.h)
		return -ENOMEM;
	w.level = levels - 1;
	while (w.level > 0 && hashtree_level_count(j->tree, w.level - 1) <= JOB_WALK_FIRST_NODES)
		w.level--;
	r = walk_todo_add(&w, 0, hashtree_level_count(j->tree, w.level));
	while (r >= 0) {
		r = walk_level(&w);
		if (r < 0 || w.level == 0 || w.found.n == 0)
			break;
		r = walk_descend(&w);
	}
	free(w.h);
	free(w.todo.v);
	if (r < 0 || w.level != 0) {
		free(w.found.v); /* failed, or equal above the leaves */
		return r < 0 ? r : 0;
	}
	*ret_leaves = w.found.v;
	*ret_n = w.found.n;
	return 0;
}
