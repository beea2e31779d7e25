/* Moved and shifted data in a full resync, the primary's side (issue 12;
 * WIRE_FEATURE_COPY, WIRE_FEATURE_ROLLING; the secondary's side is
 * moved-session.c).
 *
 * After the hash-tree walk the primary knows every leaf hash of the
 * secondary: the walk's level-0 replies hold those of the differing
 * leaves (moved_note_leaves() keeps them), and every other leaf equals
 * the primary's own. Then, before pass 1 sends data:
 *   1. moved blocks: each differing leaf whose hash the secondary holds
 *      at another leaf travels as a copy from there;
 *   2. shifted data (delta auto or rolling): the regions left (runs of
 *      differing leaves) are searched with rsync's weak rolling checksum
 *      for windows equal to the secondary's leaves (their weak sums asked
 *      for with WEAK_REQ; the strong hash confirms), at any byte offset.
 * Copies are merged into runs, ordered so that a copy that reads a range
 * goes before one that overwrites it (cycles end up in one COPY frame,
 * where the secondary reads every source before it writes), and sent as
 * COPY frames, each answered by a COPY_ACK. What is not copied (and what
 * a secondary refused: its source no longer matched) is sent as data by
 * pass 1 as before, rounded out to pages. Copies all go before the first
 * CHECKPOINT, so a checkpoint's "every byte below" stays true; a resync
 * after a crash compares again and copies only from sources that still
 * hold what their check says. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "job-early.h"
#include "moved-int.h"
#include "node-int.h"
#include "resync/io.h"
#include "resync/limits.h"
#include "resync/macro.h"
#include "resync/rollsum.h"

enum {
	MOVED_CHUNK = 8 << 20, /* primary bytes scanned at a time */
	/* auto: window starts tried without a match before a region gives
	 * up and goes as data. The rolling search runs at about the speed
	 * at which zstd and TLS send (bench/cluster-bench): past this,
	 * searching costs more than sending what it has not found. */
	MOVED_MISS_MAX = 4 << 20,
	/* auto: a chunk is searched against the secondary's differing leaves
	 * this close to it (shifts of up to this much are found; rolling
	 * searches the whole volume). */
	MOVED_NEAR = 32 << 20,
	/* auto: the weak sums asked for at once reach this far past the
	 * chunk, so that many small regions cost a few round trips. */
	MOVED_AHEAD = 256 << 20,
};

/* A differing leaf: its index and the secondary's hash of it. */
struct moved_leaf {
	uint64_t idx;
	struct hash128 h;
};

/* A leaf-sized piece of the primary found on the secondary: the bytes at
 * dst are the secondary's leaf src_leaf, whose hash is h. */
struct moved_piece {
	uint64_t dst, src_leaf;
	struct hash128 h;
};

/* Adjacent pieces merged: pieces [first, first + n) of the sorted list. */
struct moved_copy {
	uint64_t dst, src;
	uint32_t len;
	size_t first, n;
	bool failed;
};

struct moved {
	struct moved_leaf *rl; /* differing leaves, from the walk */
	size_t nrl, caprl;
	uint32_t *weak; /* the secondary's weak sums of rl[0, nweak) (auto) */
	size_t nweak;
	struct moved_piece *pc;
	size_t npc, cappc;
	struct moved_copy *cp;
	size_t ncp;
	struct rangelist rest; /* what pass 1 sends as data */
	uint64_t size, nleaves;
	uint32_t leaf;
	/* The hash of a leaf of zeros: such data goes as data (zstd makes it
	 * a few bytes, the secondary punches it), never as a copy. */
	struct hash128 zero;
	uint64_t last_match; /* the scan's: end of the last window found */
	uint64_t last_keepalive;
};

/* Whether this job looks for moved data at all. */
static bool moved_wanted(const struct job *j)
{
	return j->write && j->mode == JOB_FULL && j->delta != CONFIG_DELTA_ALIGNED &&
	       (j->features & WIRE_FEATURE_COPY);
}

void moved_free(struct job *j)
{
	struct moved *m = j->moved;

	if (!m)
		return;
	free(m->rl);
	free(m->weak);
	free(m->pc);
	free(m->cp);
	rangelist_release(&m->rest);
	free(m);
	j->moved = NULL;
}

int moved_note_leaves(struct job *j, const struct hashtree_step *st, const struct hash128 *h)
{
	struct moved *m = j->moved;
	size_t k = 0;

	if (st->level != 0 || !moved_wanted(j))
		return 0;
	if (!m && !(m = j->moved = calloc(1, sizeof(*m))))
		return -ENOMEM;
	for (size_t i = 0; i < st->n_ranges; i++)
		for (uint64_t x = st->ranges[i].first; x < st->ranges[i].first + st->ranges[i].count;
		     x++, k++) {
			if (hash128_equal(hashtree_node(j->tree, 0, x), &h[k]))
				continue;
			if (m->nrl == m->caprl) {
				size_t cap = m->caprl ? 2 * m->caprl : 1024;
				struct moved_leaf *v = realloc(m->rl, cap * sizeof(*v));

				if (!v)
					return -ENOMEM;
				m->rl = v;
				m->caprl = cap;
			}
			m->rl[m->nrl++] = (struct moved_leaf){x, h[k]};
		}
	return 0;
}

static int leaf_cmp(const void *a, const void *b)
{
	uint64_t x = ((const struct moved_leaf *)a)->idx, y = ((const struct moved_leaf *)b)->idx;

	return x < y ? -1 : x > y;
}

static uint32_t leaf_len(const struct moved *m, uint64_t i)
{
	return (uint32_t)MIN((uint64_t)m->leaf, m->size - i * m->leaf);
}

/* The secondary's hash of leaf i; *cur walks m->rl for ascending i. */
static const struct hash128 *sec_hash(const struct job *j, const struct moved *m, uint64_t i,
				      size_t *cur)
{
	while (*cur < m->nrl && m->rl[*cur].idx < i)
		(*cur)++;
	if (*cur < m->nrl && m->rl[*cur].idx == i)
		return &m->rl[*cur].h;
	return hashtree_node(j->tree, 0, i);
}

/* The same for any i: a binary search of m->rl. */
static const struct hash128 *sec_hash_at(const struct job *j, const struct moved *m, uint64_t i)
{
	size_t lo = 0, hi = m->nrl;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (m->rl[mid].idx < i)
			lo = mid + 1;
		else
			hi = mid;
	}
	return sec_hash(j, m, i, &lo);
}

static int piece_add(struct moved *m, uint64_t dst, uint64_t src_leaf, const struct hash128 *h)
{
	if (m->npc == m->cappc) {
		size_t cap = m->cappc ? 2 * m->cappc : 1024;
		struct moved_piece *v = realloc(m->pc, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		m->pc = v;
		m->cappc = cap;
	}
	m->pc[m->npc++] = (struct moved_piece){dst, src_leaf, *h};
	return 0;
}

/* 1. Moved blocks: a table of the primary's hashes of the differing
 * leaves, probed with every leaf hash of the secondary. src[k] is then
 * the secondary's leaf holding differing leaf k's bytes (UINT64_MAX:
 * none). */
static int moved_aligned(const struct job *j, struct moved *m, uint64_t *src)
{
	struct moved_table t;
	size_t cur = 0;
	int r = moved_table_init(&t, m->nrl);

	if (r < 0) {
		moved_table_release(&t);
		return r;
	}
	for (size_t k = 0; k < m->nrl; k++) {
		const struct hash128 *ph = hashtree_node(j->tree, 0, m->rl[k].idx);

		src[k] = UINT64_MAX;
		if (!hash128_equal(ph, &m->zero))
			moved_table_put(&t, ph, k);
	}
	for (uint64_t i = 0; i < m->nleaves; i++) {
		const struct hash128 *sh = sec_hash(j, m, i, &cur);

		for (size_t s = moved_table_next(&t, sh, SIZE_MAX); s != SIZE_MAX;
		     s = moved_table_next(&t, sh, s)) {
			size_t k = t.slot[s].k1 - 1;
			uint64_t x = m->rl[k].idx;

			if (src[k] == UINT64_MAX && x != i && leaf_len(m, x) == leaf_len(m, i) &&
			    hash128_equal(hashtree_node(j->tree, 0, x), sh))
				src[k] = i;
		}
	}
	moved_table_release(&t);
	return 0;
}

/* Receive a reply of type want into buf; an ERROR or another type fails
 * with the job's error text said. */
static int moved_recv(struct job *j, uint16_t want, size_t *ret_len)
{
	uint16_t type;
	/* A checkpoint's ACK may come first (job-early.c's). */
	int r = job_recv_reply(j, j->c, j->buf, &type, ret_len);

	if (r < 0)
		return r;
	if (type != want) {
		snprintf(j->err, sizeof(j->err), "node '%s': %s where %s was due", j->peer->name,
			 wire_type_name(type), wire_type_name(want));
		return -EBADMSG;
	}
	return 0;
}

static int moved_send(struct job *j, uint16_t type, size_t len)
{
	int r = peer_conn_send_frame(j->c, type, j->buf, len);

	if (r < 0)
		snprintf(j->err, sizeof(j->err), "node '%s': %s", j->peer->name,
			 peer_conn_error(j->c));
	return r;
}

/* The weak sums of leaves cand[0, n) (ascending, full-sized), asked
 * for in one WEAK_REQ, into out. */
static int moved_weak_batch(struct job *j, struct moved *m, const uint64_t *cand, size_t n,
			    uint32_t *out)
{
	struct hashtree_range rr[RESYNC_WIRE_RANGES_MAX];
	struct wire_weak_reply rep;
	size_t nr = 0, len;
	int r;

	for (size_t i = 0; i < n; i++) {
		if (nr && rr[nr - 1].first + rr[nr - 1].count == cand[i] * m->leaf)
			rr[nr - 1].count += m->leaf;
		else
			rr[nr++] = (struct hashtree_range){cand[i] * m->leaf, m->leaf};
	}
	r = wire_page_req_encode(0, m->leaf, rr, nr, j->buf, RESYNC_WIRE_FRAME_MAX, &len);
	if (r >= 0)
		r = moved_send(j, WIRE_WEAK_REQ, len);
	if (r >= 0)
		r = moved_recv(j, WIRE_WEAK_REPLY, &len);
	if (r < 0)
		return r;
	if (wire_weak_reply_decode(j->buf, len, &rep) < 0 || rep.n != n) {
		snprintf(j->err, sizeof(j->err), "node '%s': malformed WEAK_REPLY", j->peer->name);
		return -EBADMSG;
	}
	for (size_t i = 0; i < n; i++)
		out[i] = wire_weak_reply_get(&rep, i);
	return 0;
}

/* The same for any number of leaves: batches of at most
 * RESYNC_WIRE_HASHES_MAX sums in RESYNC_WIRE_RANGES_MAX runs. */
static int moved_weak_fetch(struct job *j, struct moved *m, const uint64_t *cand, size_t nc,
			    uint32_t *out)
{
	size_t done = 0;
	int r;

	while (done < nc) {
		size_t k = 0, runs = 0;

		while (done + k < nc && k < RESYNC_WIRE_HASHES_MAX) {
			if (!k || cand[done + k] != cand[done + k - 1] + 1) {
				if (runs == RESYNC_WIRE_RANGES_MAX)
					break;
				runs++;
			}
			k++;
		}
		r = moved_weak_batch(j, m, cand + done, k, out + done);
		if (r < 0)
			return r;
		done += k;
	}
	return 0;
}

/* delta = rolling: one matcher over every full leaf of the secondary. */
static int moved_matcher_all(struct job *j, struct moved *m, struct rollmatch **ret)
{
	uint64_t n = m->nleaves;
	_cleanup_free_ uint64_t *cand = calloc(n ? n : 1, sizeof(*cand));
	_cleanup_free_ uint32_t *weak = malloc((n ? n : 1) * sizeof(*weak));
	_cleanup_free_ struct rollmatch_block *b = malloc((n ? n : 1) * sizeof(*b));
	size_t nc = 0, cur = 0;
	int r;

	if (!cand || !weak || !b)
		return -ENOMEM;
	for (uint64_t x = 0; x < n; x++)
		if (leaf_len(m, x) == m->leaf && !hash128_equal(sec_hash(j, m, x, &cur), &m->zero))
			cand[nc++] = x;
	cur = 0;
	r = moved_weak_fetch(j, m, cand, nc, weak);
	if (r < 0)
		return r;
	for (size_t i = 0; i < nc; i++)
		b[i] = (struct rollmatch_block){weak[i], *sec_hash(j, m, cand[i], &cur), cand[i]};
	return rollmatch_new(b, nc, m->leaf, j->seed, ret);
}

/* The first entry of m->rl at or past byte off. */
static size_t rl_at(const struct moved *m, uint64_t off)
{
	size_t lo = 0, hi = m->nrl;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (m->rl[mid].idx * m->leaf < off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* delta = auto: a matcher over the secondary's differing leaves in
 * [from, to) (the neighbourhood of a chunk), their weak sums fetched as
 * the search first needs them (m->weak[0, m->nweak) are known). */
static int moved_matcher_near(struct job *j, struct moved *m, uint64_t from, uint64_t to,
			      struct rollmatch **ret)
{
	size_t lo = rl_at(m, from), hi = rl_at(m, to), nc = 0;
	_cleanup_free_ struct rollmatch_block *b = NULL;
	int r;

	if (hi > m->nweak) {
		size_t ahead = rl_at(m, to + MOVED_AHEAD);

		_cleanup_free_ uint64_t *cand = calloc(ahead - m->nweak, sizeof(*cand));
		_cleanup_free_ size_t *at = malloc((ahead - m->nweak) * sizeof(*at));
		_cleanup_free_ uint32_t *w = malloc((ahead - m->nweak) * sizeof(*w));

		if (!cand || !at || !w)
			return -ENOMEM;
		for (size_t i = m->nweak; i < ahead; i++)
			if (leaf_len(m, m->rl[i].idx) == m->leaf &&
			    !hash128_equal(&m->rl[i].h, &m->zero)) {
				at[nc] = i;
				cand[nc++] = m->rl[i].idx;
			}
		r = moved_weak_fetch(j, m, cand, nc, w);
		if (r < 0)
			return r;
		for (size_t i = 0; i < nc; i++)
			m->weak[at[i]] = w[i];
		m->nweak = ahead;
		nc = 0;
	}
	b = malloc((hi > lo ? hi - lo : 1) * sizeof(*b));
	if (!b)
		return -ENOMEM;
	for (size_t i = lo; i < hi; i++)
		if (leaf_len(m, m->rl[i].idx) == m->leaf && !hash128_equal(&m->rl[i].h, &m->zero))
			b[nc++] = (struct rollmatch_block){m->weak[i], m->rl[i].h, m->rl[i].idx};
	return rollmatch_new(b, nc, m->leaf, j->seed, ret);
}

struct moved_scan {
	struct moved *m;
	const struct job *j;
	uint64_t base; /* volume offset of the scanned buffer */
};

static int moved_on_match(void *arg, size_t pos, uint64_t id)
{
	struct moved_scan *sc = arg;
	uint64_t dst = sc->base + pos;
	const struct hash128 *h;

	if (dst == id * sc->m->leaf)
		return 0; /* in place: cannot be, the leaf differs */
	h = sec_hash_at(sc->j, sc->m, id);
	sc->m->last_match = dst + sc->m->leaf;
	return piece_add(sc->m, dst, id, h);
}

/* Between chunks: a cancel or a give-up stops the search; a long search
 * keeps the secondary's session alive. */
static int moved_pause_point(struct job *j, struct moved *m)
{
	if (atomic_load(&j->abort) || atomic_load(j->ctx->cancel))
		return job_cancelled(j, j->c);
	if ((j->features & WIRE_FEATURE_KEEPALIVE) &&
	    clock_usec() - m->last_keepalive >= 1000000) {
		m->last_keepalive = clock_usec();
		(void)peer_conn_keepalive(j->c, node_keepalive_ms(j->ctx->cfg));
	}
	return 0;
}

/* 2. Search the region [off, end) of the primary for the secondary's
 * leaves at any byte offset, chunk by chunk: against every leaf (rm,
 * delta = rolling), or against the differing leaves within MOVED_NEAR of
 * the chunk (auto), giving up after MOVED_MISS_MAX bytes without a
 * match. */
static int moved_region(struct job *j, struct moved *m, const struct rollmatch *rm,
			unsigned char *buf, uint64_t off, uint64_t end)
{
	bool bounded = !rm;
	struct moved_scan sc = {m, j, 0};
	int fd = volume_fd(j->ctx->vol), r;

	m->last_match = off;
	while (end - off >= m->leaf) {
		size_t k = (size_t)MIN(end - off, (uint64_t)MOVED_CHUNK), miss = 0;
		struct rollmatch *near = NULL;
		long long used;

		if (bounded) {
			if (off - m->last_match >= MOVED_MISS_MAX)
				break; /* gives up: the rest goes as data */
			miss = MOVED_MISS_MAX - (size_t)(off - m->last_match);
		}
		r = moved_pause_point(j, m);
		if (r >= 0 && bounded)
			r = moved_matcher_near(j, m, off > MOVED_NEAR ? off - MOVED_NEAR : 0,
					       off + k + MOVED_NEAR, &near);
		if (r < 0)
			return r;
		r = fd_pread_full(fd, buf, k, off);
		if (r < 0) {
			rollmatch_free(near);
			snprintf(j->err, sizeof(j->err), "cannot read this volume at %" PRIu64 ": %s",
				 off, strerror(-r));
			return r;
		}
		j->bytes_read += k;
		sc.base = off;
		used = rollmatch_scan(near ? near : rm, buf, k, miss, moved_on_match, &sc);
		rollmatch_free(near);
		if (used < 0)
			return (int)used;
		off += (uint64_t)used;
		if ((uint64_t)used < k - m->leaf + 1)
			break; /* gave up inside this chunk */
	}
	return 0;
}

/* The regions left after step 1 (runs of differing leaves without a
 * source, MOVED_REGION_MIN bytes or more), each searched. */
static int moved_rolling(struct job *j, struct moved *m, const uint64_t *src)
{
	struct rollmatch *rm = NULL;
	_cleanup_free_ unsigned char *buf = NULL;
	size_t a = 0;
	int r;

	if (!(j->features & WIRE_FEATURE_ROLLING))
		return 0;
	for (size_t k = 0, run = 0; k < m->nrl; k++) {
		run = src[k] == UINT64_MAX && k && src[k - 1] == UINT64_MAX &&
				      m->rl[k].idx == m->rl[k - 1].idx + 1
			      ? run + 1
			      : (src[k] == UINT64_MAX);
		if (run * m->leaf >= MOVED_REGION_MIN)
			break;
		if (k + 1 == m->nrl)
			return 0; /* no region worth a search */
	}
	buf = malloc(MOVED_CHUNK);
	m->weak = malloc(m->nrl * sizeof(*m->weak));
	if (!buf || !m->weak)
		return -ENOMEM;
	r = j->delta == CONFIG_DELTA_ROLLING ? moved_matcher_all(j, m, &rm) : 0;
	while (r >= 0 && a < m->nrl) {
		size_t b = a + 1;

		if (src[a] != UINT64_MAX) {
			a++;
			continue;
		}
		while (b < m->nrl && src[b] == UINT64_MAX && m->rl[b].idx == m->rl[b - 1].idx + 1)
			b++;
		if ((b - a) * m->leaf >= MOVED_REGION_MIN)
			r = moved_region(j, m, rm, buf, m->rl[a].idx * m->leaf,
					 MIN((m->rl[b - 1].idx + 1) * m->leaf, m->size));
		a = b;
	}
	rollmatch_free(rm);
	return r;
}

static int piece_cmp(const void *a, const void *b)
{
	uint64_t x = ((const struct moved_piece *)a)->dst, y = ((const struct moved_piece *)b)->dst;

	return x < y ? -1 : x > y;
}

/* Sorted pieces merged into copies: adjacent on both sides, whole leaves
 * but the last, at most RESYNC_WIRE_COPY_LEN_MAX bytes. */
static int moved_merge(struct moved *m)
{
	if (m->npc)
		qsort(m->pc, m->npc, sizeof(*m->pc), piece_cmp);
	m->cp = calloc(m->npc ? m->npc : 1, sizeof(*m->cp));
	if (!m->cp)
		return -ENOMEM;
	for (size_t i = 0; i < m->npc; i++) {
		const struct moved_piece *p = &m->pc[i];
		struct moved_copy *c = m->ncp ? &m->cp[m->ncp - 1] : NULL;
		uint32_t pl = leaf_len(m, p->src_leaf);

		if (c && p->dst == c->dst + c->len && p->src_leaf * m->leaf == c->src + c->len &&
		    c->len % m->leaf == 0 && c->len + pl <= RESYNC_WIRE_COPY_LEN_MAX) {
			c->len += pl;
			c->n++;
			continue;
		}
		m->cp[m->ncp++] = (struct moved_copy){p->dst, p->src_leaf * m->leaf, pl, i, 1, false};
	}
	return 0;
}

/* Copies by source offset, for moved_order(). */
static int src_cmp(const void *a, const void *b, void *arg)
{
	const struct moved *m = arg;
	uint64_t x = m->cp[*(const size_t *)a].src, y = m->cp[*(const size_t *)b].src;

	return x < y ? -1 : x > y;
}

static int idx_cmp(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;

	return x < y ? -1 : x > y;
}

/* Call fn(arg, i, jj) for every copy i (i != jj) whose source overlaps
 * copy jj's destination: i reads what jj writes, so i goes first. by_src
 * holds the copies sorted by source offset. */
static void overlaps(const struct moved *m, const size_t *by_src, size_t jj,
		     void (*fn)(void *arg, size_t i, size_t jj), void *arg)
{
	uint64_t d = m->cp[jj].dst, e = d + m->cp[jj].len;
	uint64_t from = d > RESYNC_WIRE_COPY_LEN_MAX ? d - RESYNC_WIRE_COPY_LEN_MAX : 0;
	size_t lo = 0, hi = m->ncp;

	while (lo < hi) { /* the first source starting at from or later */
		size_t mid = lo + (hi - lo) / 2;

		if (m->cp[by_src[mid]].src < from)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (size_t k = lo; k < m->ncp && m->cp[by_src[k]].src < e; k++) {
		size_t i = by_src[k];

		if (i != jj && m->cp[i].src + m->cp[i].len > d)
			fn(arg, i, jj);
	}
}

struct order_graph {
	size_t *indeg, *outn, *start, *adj;
	bool fill;
};

static void edge_note(void *arg, size_t i, size_t jj)
{
	struct order_graph *g = arg;

	if (!g->fill) {
		g->outn[i]++;
		g->indeg[jj]++;
	} else {
		g->adj[g->start[i] + g->outn[i]++] = jj;
	}
}

/* The order copies go in: Kahn's topological order of "reads before it
 * is overwritten"; a cycle (blocks that swapped places) is broken at its
 * lowest copy, and its members follow it, so that a cycle that fits a
 * frame is staged whole by the secondary. */
static int moved_order(const struct moved *m, size_t *order)
{
	size_t n = m->ncp, head = 0, tail = 0, brk = 0, edges = 0;
	_cleanup_free_ size_t *by_src = malloc(n * sizeof(size_t));
	_cleanup_free_ size_t *indeg = calloc(n, sizeof(size_t));
	_cleanup_free_ size_t *outn = calloc(n, sizeof(size_t));
	_cleanup_free_ size_t *start = malloc((n + 1) * sizeof(size_t));
	_cleanup_free_ bool *done = calloc(n, sizeof(bool));
	_cleanup_free_ size_t *adj = NULL;
	struct order_graph g;

	if (!by_src || !indeg || !outn || !start || !done)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		by_src[i] = i;
	qsort_r(by_src, n, sizeof(*by_src), src_cmp, (void *)m);
	g = (struct order_graph){indeg, outn, start, NULL, false};
	for (size_t jj = 0; jj < n; jj++)
		overlaps(m, by_src, jj, edge_note, &g);
	for (size_t i = 0; i < n; i++) {
		start[i] = edges;
		edges += outn[i];
		outn[i] = 0;
	}
	adj = malloc((edges ? edges : 1) * sizeof(*adj));
	if (!adj)
		return -ENOMEM;
	g.adj = adj;
	g.fill = true;
	for (size_t jj = 0; jj < n; jj++)
		overlaps(m, by_src, jj, edge_note, &g);
	for (size_t i = 0; i < n; i++)
		if (!indeg[i])
			order[tail++] = i, done[i] = true;
	while (head < n) {
		if (head == tail) { /* a cycle: break it at its lowest copy */
			while (done[brk])
				brk++;
			order[tail++] = brk;
			done[brk] = true;
		}
		for (size_t e = 0, i = order[head++]; e < outn[i]; e++) {
			size_t jj = adj[start[i] + e];

			if (!done[jj] && --indeg[jj] == 0)
				order[tail++] = jj, done[jj] = true;
		}
	}
	return 0;
}

/* A frame's copies by destination (cp is sorted by dst: by index). */
static void moved_sort_by_dst(const struct moved *m, size_t *fr, size_t n)
{
	(void)m;
	qsort(fr, n, sizeof(*fr), idx_cmp);
}

/* Send the copies in order, in COPY frames of at most
 * RESYNC_WIRE_COPIES_MAX entries and RESYNC_WIRE_COPY_STAGE_MAX bytes;
 * each COPY_ACK marks the copies refused. */
static int moved_send_copies(struct job *j, struct moved *m, const size_t *order)
{
	_cleanup_free_ struct wire_copy_entry *e = malloc(RESYNC_WIRE_COPIES_MAX * sizeof(*e));
	_cleanup_free_ size_t *fr = malloc(RESYNC_WIRE_COPIES_MAX * sizeof(*fr));
	struct hash128 ph[RESYNC_WIRE_COPY_LEN_MAX / RESYNC_BLOCK_MIN];
	size_t i = 0;
	int r;

	if (!e || !fr)
		return -ENOMEM;
	while (i < m->ncp) {
		struct wire_copy_ack ack;
		uint64_t bytes = 0;
		size_t n = 0, len;

		while (i < m->ncp && n < RESYNC_WIRE_COPIES_MAX &&
		       bytes + m->cp[order[i]].len <= RESYNC_WIRE_COPY_STAGE_MAX) {
			bytes += m->cp[order[i]].len;
			fr[n++] = order[i++];
		}
		moved_sort_by_dst(m, fr, n);
		for (size_t k = 0; k < n; k++) {
			const struct moved_copy *c = &m->cp[fr[k]];

			for (size_t p = 0; p < c->n; p++)
				ph[p] = m->pc[c->first + p].h;
			e[k] = (struct wire_copy_entry){c->dst, c->src, c->len,
							wire_copy_check(ph, c->n, j->seed)};
		}
		r = wire_copy_encode(j->seed, m->leaf, e, n, j->buf, RESYNC_WIRE_FRAME_MAX, &len);
		if (r >= 0)
			r = moved_send(j, WIRE_COPY, len);
		if (r >= 0)
			r = moved_recv(j, WIRE_COPY_ACK, &len);
		if (r < 0)
			return r;
		if (wire_copy_ack_decode(j->buf, len, &ack) < 0 || ack.n != n) {
			snprintf(j->err, sizeof(j->err), "node '%s': malformed COPY_ACK",
				 j->peer->name);
			return -EBADMSG;
		}
		for (size_t k = 0; k < n; k++) {
			m->cp[fr[k]].failed = wire_copy_ack_failed(&ack, k);
			if (m->cp[fr[k]].failed)
				j->copies_failed++;
			else
				j->bytes_copied += m->cp[fr[k]].len;
		}
		r = moved_pause_point(j, m);
		if (r < 0)
			return r;
	}
	return 0;
}

/* What pass 1 sends as data: the differing ranges less what was copied,
 * each piece rounded out to pages (a page written whole costs less than
 * a page hash; its bytes are the primary's either way). */
static int moved_rest(struct job *j, struct moved *m)
{
	_cleanup_free_ size_t *order = malloc((m->ncp ? m->ncp : 1) * sizeof(*order));
	size_t c = 0, n = 0;
	int r = 0;

	if (!order)
		return -ENOMEM;
	for (size_t i = 0; i < m->ncp; i++)
		if (!m->cp[i].failed)
			order[n++] = i; /* cp is sorted by dst already */
	for (size_t i = 0; i < j->ranges.n && r >= 0; i++) {
		uint64_t off = j->ranges.v[i].off, end = off + j->ranges.v[i].len;

		while (off < end && r >= 0) {
			uint64_t stop = end, next = end, a, b;

			while (c < n && m->cp[order[c]].dst + m->cp[order[c]].len <= off)
				c++;
			if (c < n && m->cp[order[c]].dst < end) {
				stop = MAX(off, m->cp[order[c]].dst);
				next = MIN(end, m->cp[order[c]].dst + m->cp[order[c]].len);
			}
			a = off / RESYNC_PAGE * RESYNC_PAGE;
			b = MIN(DIV_ROUND_UP(stop, RESYNC_PAGE) * RESYNC_PAGE, m->size);
			if (stop > off)
				r = rangelist_add(&m->rest, a, b - a);
			off = next;
		}
	}
	rangelist_normalize(&m->rest);
	return r;
}

int moved_run(struct job *j, const struct rangelist **ret)
{
	struct moved *m = j->moved;
	_cleanup_free_ uint64_t *src = NULL;
	_cleanup_free_ size_t *order = NULL;
	uint64_t t0 = clock_usec();
	int r;

	*ret = &j->ranges;
	if (!moved_wanted(j) || !m || !m->nrl)
		return 0;
	m->size = volume_size(j->ctx->vol);
	m->leaf = j->leaf;
	m->nleaves = hashtree_level_count(j->tree, 0);
	m->last_keepalive = clock_usec();
	{
		_cleanup_free_ unsigned char *z = calloc(1, m->leaf);

		if (!z)
			return -ENOMEM;
		m->zero = hash_block(z, m->leaf, j->seed);
	}
	qsort(m->rl, m->nrl, sizeof(*m->rl), leaf_cmp);
	src = malloc(m->nrl * sizeof(*src));
	if (!src)
		return -ENOMEM;
	r = moved_aligned(j, m, src);
	for (size_t k = 0; k < m->nrl && r >= 0; k++)
		if (src[k] != UINT64_MAX)
			r = piece_add(m, m->rl[k].idx * m->leaf, src[k],
				      hashtree_node(j->tree, 0, m->rl[k].idx));
	if (r >= 0)
		r = moved_rolling(j, m, src);
	if (r >= 0)
		r = moved_merge(m);
	if (r >= 0 && m->ncp) {
		order = malloc(m->ncp * sizeof(*order));
		r = order ? moved_order(m, order) : -ENOMEM;
	}
	if (r >= 0 && m->ncp)
		r = moved_send_copies(j, m, order);
	if (r >= 0)
		r = moved_rest(j, m);
	if (r < 0)
		return r;
	j->search_usec = clock_usec() - t0;
	/* One line a secondary: what the search found and what it cost. */
	log_info("resync of '%s': %" PRIu64 " bytes copied where it holds them (%zu copies, %" PRIu64
		 " refused), %" PRIu64 " bytes left to send, %.3f s to find and copy",
		 j->peer->name, j->bytes_copied, m->ncp, j->copies_failed,
		 rangelist_bytes(&m->rest), (double)j->search_usec / 1e6);
	j->bytes_sent = peer_conn_bytes_sent(j->c);
	*ret = &m->rest;
	return 0;
}
