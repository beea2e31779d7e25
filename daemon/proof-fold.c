/* The proof's leaves of a resync's writes, folded in before the proof
 * (issue 18): a secondary's proof used to hash again, under the primary's
 * fence, every 64 KiB block its resync wrote a page of (1 % of 4 KiB pages
 * scattered over 2 GiB touch 15 % of the blocks: about 60 ms of fence).
 *
 * Now each CHECKPOINT, once its data reached the volume, hashes the
 * leaves of the blocks written since the last one (outside the fence,
 * while the disk writes them back) and keeps, for each range written, a
 * hash of its bytes as read back then: from the same reads as the
 * leaves (proof_tree_update_each()), or read on its own where a range
 * straddles two of them. Only ranges that cover less than
 * half of the blocks they touch (scattered pages) are folded: reading a
 * denser range again costs as much as hashing its blocks, which the
 * proof does for it as before. The proof (session_proof_stale())
 * reads again only those written bytes: a range whose bytes changed since
 * (corrupt-before-commit's case: a written byte changed behind the
 * daemon) has its blocks hashed again, so the root shows it; so does
 * anything written after the last fold (the last pass).
 *
 * What the fold does not re-read at the proof: the pages of a written
 * block that the resync did not write, between the fold and the proof.
 * Those are like every page the resync did not write, which the proof
 * never re-reads either (kept leaves; resync.conf(5), PROOF): the mount
 * is fenced from the first write to the commit, so only a failing disk or
 * a writer behind the daemon changes them, and that is what verify finds.
 *
 * Thread-safety: the session's thread only (the leaves under proof_lock,
 * through node_proof_fold()). */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "node-int.h"
#include "resync/io.h"
#include "resync/limits.h"
#include "resync/macro.h"

/* Checks cover at most this many bytes each: one read, one hash. */
enum { PROOF_CHECK_MAX = RESYNC_CHUNK };

static int proof_check_reserve(struct session *s, size_t more)
{
	struct proof_check *v;
	size_t cap;

	if (s->n_checks + more <= s->cap_checks)
		return 0;
	cap = MAX(s->cap_checks * 2, s->n_checks + more);
	v = reallocarray(s->proof_checks, cap, sizeof(*v));
	if (!v)
		return -ENOMEM;
	s->proof_checks = v;
	s->cap_checks = cap;
	return 0;
}

/* The seed-0 hash of len bytes at off of this volume, read now: in the
 * mapping the session holds (s->map_held), else into buf. */
static int proof_check_hash(struct session *s, unsigned char *buf, uint64_t off, size_t len,
			    struct hash128 *ret)
{
	const unsigned char *p = buf;
	int r = s->map_held ? volume_map_read(s->n->vol, buf, len, off, &p)
			    : fd_pread_full(volume_fd(s->n->vol), buf, len, off);

	if (r < 0)
		return r;
	*ret = hash_block(p, len, 0);
	return 0;
}

/* Whether reading again the bytes of a range at the proof saves reads:
 * it covers less than half of the blocks it touches (scattered pages).
 * A denser one is left to the proof, which hashes its blocks again (as
 * many bytes, on every core), and is not folded. */
static bool proof_range_sparse(const struct range *x)
{
	uint64_t bs = PROOF_BLOCK_DEFAULT, first = x->off / bs, last = (x->off + x->len - 1) / bs;

	return x->len && x->len * 2 < (last - first + 1) * bs;
}

/* The fold's new checks, hashed from the pieces the leaves' update reads
 * (fold_seen()) rather than read again: sorted by offset, the pieces
 * come in increasing offsets. */
struct fold_checks {
	struct proof_check *v;
	bool *have; /* v[i].h was hashed from a piece */
	size_t n, next;
};

static int proof_check_cmp(const void *a, const void *b)
{
	const struct proof_check *x = a, *y = b;

	return x->off < y->off ? -1 : x->off > y->off;
}

/* proof_read_fn: the checks that lie inside the piece, hashed from it.
 * One that straddles two pieces (or lies in a run blockcmp's threads
 * hashed) is left for a read of its own. */
static void fold_seen(void *arg, uint64_t off, const unsigned char *p, size_t len)
{
	struct fold_checks *fc = arg;

	while (fc->next < fc->n && fc->v[fc->next].off < off)
		fc->next++;
	for (; fc->next < fc->n && fc->v[fc->next].off + fc->v[fc->next].len <= off + len; fc->next++) {
		struct proof_check *c = &fc->v[fc->next];

		c->h = hash_block(p + (c->off - off), (size_t)c->len, 0);
		fc->have[fc->next] = true;
	}
}

/* The checks of the sparse ranges of l, from s->n_checks on (reserved):
 * offsets and lengths, sorted. Returns their number. */
static size_t fold_checks_make(struct session *s, const struct rangelist *l)
{
	struct proof_check *c = s->proof_checks + s->n_checks;
	size_t k = 0;

	for (size_t i = 0; i < l->n; i++) {
		for (uint64_t o = 0; o < l->v[i].len; o += PROOF_CHECK_MAX, k++) {
			c[k].off = l->v[i].off + o;
			c[k].len = MIN(l->v[i].len - o, (uint64_t)PROOF_CHECK_MAX);
		}
	}
	qsort(c, k, sizeof(*c), proof_check_cmp);
	return k;
}

/* The fold's leaves (the checks hashed from their reads), then the
 * checks they did not cover read on their own. */
static int fold_leaves_checks(struct session *s, const struct rangelist *l, size_t pieces,
			      uint64_t *ret_hashed)
{
	_cleanup_free_ unsigned char *buf = NULL;
	_cleanup_free_ bool *have = calloc(pieces ? pieces : 1, sizeof(*have));
	struct fold_checks fc = {s->proof_checks + s->n_checks, have, 0, 0};
	int r;

	if (!have)
		return -ENOMEM;
	fc.n = fold_checks_make(s, l);
	r = node_proof_fold(s->n, l, fold_seen, &fc, ret_hashed);
	if (r < 0)
		return r;
	for (size_t i = 0; i < fc.n; i++) {
		if (have[i])
			continue;
		if (!buf && !(buf = malloc(PROOF_CHECK_MAX)))
			return -ENOMEM;
		r = proof_check_hash(s, buf, fc.v[i].off, (size_t)fc.v[i].len, &fc.v[i].h);
		if (r < 0)
			return r;
	}
	s->n_checks += fc.n;
	return 0;
}

int session_proof_fold(struct session *s)
{
	struct node *n = s->n;
	_cleanup_(rangelist_release) struct rangelist l = {0}, dense = {0};
	size_t pieces = 0;
	uint64_t hashed = 0;
	int r = 0;

	if (!n->cfg->proof || !s->proof_unfolded.n)
		return 0;
	for (size_t i = 0; i < s->proof_unfolded.n && r >= 0; i++) {
		const struct range *x = &s->proof_unfolded.v[i];

		r = proof_range_sparse(x) ? rangelist_add(&l, x->off, x->len)
					  : rangelist_add(&dense, x->off, x->len);
		pieces += (size_t)DIV_ROUND_UP(x->len, (uint64_t)PROOF_CHECK_MAX);
	}
	if (r < 0)
		return r;
	if (!l.n)
		return 0;
	r = proof_check_reserve(s, pieces);
	if (r < 0)
		return r;
	r = fold_leaves_checks(s, &l, pieces, &hashed);
	if (r < 0) {
		/* No leaves held (the proof hashes every block), they were
		 * dropped, or a check could not be read: these ranges stay
		 * for the proof (hashing folded blocks again is harmless). */
		return r == -ESTALE ? 0 : r;
	}
	s->proof_folded_blocks += hashed;
	/* The dense ranges stay for the proof; without them, no leaves. */
	s->proof_unfolded.n = 0;
	r = rangelist_extend(&s->proof_unfolded, &dense);
	if (r < 0)
		node_proof_forget(n);
	return r;
}

int session_proof_stale(struct session *s, struct rangelist *ret)
{
	_cleanup_free_ unsigned char *buf = NULL;
	uint64_t changed = 0;
	int r;

	if (s->n_checks && !(buf = malloc(PROOF_CHECK_MAX)))
		return -ENOMEM;
	for (size_t i = 0; i < s->n_checks; i++) {
		const struct proof_check *c = &s->proof_checks[i];
		struct hash128 h;

		r = proof_check_hash(s, buf, c->off, (size_t)c->len, &h);
		if (r < 0)
			return r;
		if (hash128_equal(&h, &c->h))
			continue;
		changed++;
		r = rangelist_add(ret, c->off, c->len);
		if (r < 0)
			return r;
	}
	if (changed)
		log_warning("%" PRIu64 " of %zu ranges this resync wrote changed after they were written: the proof hashes their blocks again",
			    changed, s->n_checks);
	return rangelist_extend(ret, &s->proof_unfolded);
}

void session_proof_fold_release(struct session *s)
{
	rangelist_release(&s->proof_unfolded);
	free(s->proof_checks);
	s->proof_checks = NULL;
	s->n_checks = s->cap_checks = 0;
}
