/* In-place patch: BASIS becomes NEW without a second copy.
 *
 * Every COPY reads the basis and every command writes its own range of
 * NEW, so a write may destroy what a later COPY still has to read. The
 * copies are ordered over a graph (an edge i -> j when copy i reads what
 * copy j writes: i must run first), in topological order; where a cycle
 * stops that, one copy of it is staged (its source read into a temporary
 * file, which frees its successors) and written out once its own turn
 * comes. Literals read only the delta and are written last. Everything is
 * planned, and a delta that does not fit its basis or needs more staging
 * than RDELTA_STAGE_MAX refused, before the first write.
 *
 * A journal beside BASIS (BASIS.resync-inplace, written with
 * file_write_atomic) exists from just before the first write to just after
 * the last one is on disk: a run that finds it knows that an earlier one
 * was interrupted and that BASIS is neither the old file nor the new. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "resync/clock.h"
#include "resync/fileio.h"
#include "resync/io.h"
#include "resync/macro.h"

#include "rdelta-int.h"

enum act_kind {
	ACT_COPY = 1, /* copy src -> dst in the basis */
	ACT_STAGE,    /* copy src -> the staging file */
	ACT_UNSTAGE,  /* staging file -> dst */
};

struct act {
	enum act_kind kind;
	uint32_t cmd; /* index into the delta's commands */
	uint64_t stage_off;
};

struct plan {
	struct act *acts;
	size_t n;
	uint64_t staged;
};

/* Index (among cps) of the first copy whose destination ends after off. */
static size_t first_dst_after(const struct rdelta_cmd *const *cps, size_t n, uint64_t off)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (cps[mid]->dst + cps[mid]->len <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The graph over the copies, as adjacency lists (CSR). */
struct graph {
	size_t n;
	const struct rdelta_cmd **cps; /* the copies, by destination */
	uint32_t *cmd;		       /* their command indices */
	size_t *first;		       /* [n + 1] */
	uint32_t *next;		       /* successors */
	uint32_t *indeg;
};

static void graph_release(struct graph *g)
{
	free(g->cps);
	free(g->cmd);
	free(g->first);
	free(g->next);
	free(g->indeg);
}

/* Call fn for each copy j != i whose destination meets i's source. */
#define FOR_EACH_CLOBBER(g, i, j)                                                                  \
	for (size_t j = first_dst_after((g)->cps, (g)->n, (g)->cps[i]->src);                       \
	     j < (g)->n && (g)->cps[j]->dst < (g)->cps[i]->src + (g)->cps[i]->len; j++)            \
		if (j != i)

static int graph_build(const struct rdelta_cmds *c, struct graph *g)
{
	size_t e = 0;

	*g = (struct graph){0};
	for (size_t k = 0; k < c->n; k++)
		g->n += c->v[k].copy;
	g->cps = malloc((g->n + 1) * sizeof(*g->cps));
	g->cmd = malloc((g->n + 1) * sizeof(*g->cmd));
	g->first = calloc(g->n + 1, sizeof(*g->first));
	g->indeg = calloc(g->n + 1, sizeof(*g->indeg));
	if (!g->cps || !g->cmd || !g->first || !g->indeg)
		return -ENOMEM;
	for (size_t k = 0, i = 0; k < c->n; k++)
		if (c->v[k].copy) {
			g->cps[i] = &c->v[k];
			g->cmd[i++] = (uint32_t)k;
		}
	for (size_t i = 0; i < g->n; i++) {
		g->first[i] = e;
		FOR_EACH_CLOBBER(g, i, j)
			e++;
	}
	g->first[g->n] = e;
	g->next = malloc((e + 1) * sizeof(*g->next));
	if (!g->next)
		return -ENOMEM;
	e = 0;
	for (size_t i = 0; i < g->n; i++)
		FOR_EACH_CLOBBER(g, i, j) {
			g->next[e++] = (uint32_t)j;
			g->indeg[j]++;
		}
	return 0;
}

/* Copy i has read its source: its successors may go. */
static void release_succ(struct graph *g, size_t i, uint32_t *queue, size_t *qn)
{
	for (size_t e = g->first[i]; e < g->first[i + 1]; e++)
		if (--g->indeg[g->next[e]] == 0)
			queue[(*qn)++] = g->next[e];
}

/* Stage the first copy not done yet (one on a cycle, as nothing is ready). */
static int plan_stage(struct graph *g, struct plan *p, bool *staged, const bool *done,
		      size_t *cursor, uint32_t *queue, size_t *qn)
{
	size_t k = *cursor;

	while (k < g->n && (done[k] || staged[k]))
		k++;
	*cursor = k;
	if (k == g->n)
		return -ENOTRECOVERABLE; /* nothing ready and nothing left: a bug */
	staged[k] = true;
	p->acts[p->n++] = (struct act){ACT_STAGE, g->cmd[k], p->staged};
	p->staged += g->cps[k]->len;
	if (p->staged > RDELTA_STAGE_MAX)
		return -EFBIG;
	release_succ(g, k, queue, qn);
	return 0;
}

static int plan_build(const struct rdelta_cmds *c, struct plan *p)
{
	struct graph g;
	_cleanup_free_ uint32_t *queue = NULL;
	_cleanup_free_ bool *staged = NULL, *done = NULL;
	_cleanup_free_ uint64_t *stage_off = NULL;
	size_t qh = 0, qn = 0, cursor = 0, ndone = 0;
	int r;

	*p = (struct plan){0};
	r = graph_build(c, &g);
	queue = malloc((g.n + 1) * sizeof(*queue));
	staged = calloc(g.n + 1, 1);
	done = calloc(g.n + 1, 1);
	stage_off = calloc(g.n + 1, sizeof(*stage_off));
	p->acts = malloc((2 * g.n + 1) * sizeof(*p->acts));
	if (r >= 0 && (!queue || !staged || !done || !stage_off || !p->acts))
		r = -ENOMEM;
	for (size_t i = 0; r >= 0 && i < g.n; i++)
		if (g.indeg[i] == 0)
			queue[qn++] = (uint32_t)i;
	while (r >= 0 && ndone < g.n) {
		uint32_t i;

		if (qh == qn) {
			r = plan_stage(&g, p, staged, done, &cursor, queue, &qn);
			if (r >= 0)
				stage_off[cursor] = p->acts[p->n - 1].stage_off;
			continue;
		}
		i = queue[qh++];
		if (staged[i]) {
			p->acts[p->n++] = (struct act){ACT_UNSTAGE, g.cmd[i], stage_off[i]};
		} else {
			p->acts[p->n++] = (struct act){ACT_COPY, g.cmd[i], 0};
			release_succ(&g, i, queue, &qn);
		}
		done[i] = true;
		ndone++;
	}
	graph_release(&g);
	if (r < 0) {
		free(p->acts);
		p->acts = NULL;
	}
	return r;
}

char *rdelta_inplace_journal(const char *basis_path)
{
	char *j;

	if (asprintf(&j, "%s.resync-inplace", basis_path) < 0)
		return NULL;
	return j;
}

struct inplace {
	int fd;
	int stage_fd;
	struct io_ctx *io;
	uint8_t *buf;
	size_t cap;
	const uint8_t *delta;
	const struct rdelta_cmds *c;
	const char *journal;
	uint64_t basis_size;
	size_t delta_len;
};

/* len bytes from (from, src) to (to, dst), like memmove when from == to. */
static int move_range(struct inplace *ip, int from, uint64_t src, int to, uint64_t dst,
		      uint64_t len)
{
	bool back = from == to && dst > src && dst < src + len;

	if (from == to && src == dst)
		return 0; /* data that stays where it is: nothing to do */

	for (uint64_t done = 0; done < len;) {
		size_t n = (size_t)MIN((uint64_t)ip->cap, len - done);
		uint64_t off = back ? len - done - n : done;
		long long got = io_pread_full(ip->io, from, ip->buf, n, src + off);

		if (got < 0)
			return (int)got;
		if ((size_t)got != n)
			return -ENXIO; /* the basis shrank under us */
		got = io_pwrite_full(ip->io, to, ip->buf, n, dst + off);
		if (got < 0)
			return (int)got;
		done += n;
	}
	return 0;
}

static int journal_write(const struct inplace *ip, const char *phase)
{
	char text[512];
	int n = snprintf(text, sizeof(text),
			 "resync-diff in-place patch\nphase=%s\nbasis_size=%" PRIu64
			 "\nnew_size=%" PRIu64 "\ndelta_size=%zu\n",
			 phase, ip->basis_size, ip->c->new_len, ip->delta_len);

	return file_write_atomic(ip->journal, text, (size_t)n, 0600);
}

static bool failpoint(const char *name)
{
	const char *v = getenv("RESYNC_FAILPOINT");

	return v && !strcmp(v, name);
}

static int run_plan(struct inplace *ip, const struct plan *p)
{
	const struct rdelta_cmds *c = ip->c;
	int r;

	for (size_t k = 0; k < p->n; k++) {
		const struct act *a = &p->acts[k];
		const struct rdelta_cmd *cmd = &c->v[a->cmd];

		if (a->kind == ACT_COPY)
			r = move_range(ip, ip->fd, cmd->src, ip->fd, cmd->dst, cmd->len);
		else if (a->kind == ACT_STAGE)
			r = move_range(ip, ip->fd, cmd->src, ip->stage_fd, a->stage_off, cmd->len);
		else
			r = move_range(ip, ip->stage_fd, a->stage_off, ip->fd, cmd->dst, cmd->len);
		if (r < 0)
			return r;
		if (a->kind != ACT_STAGE && failpoint("rdelta-inplace-kill"))
			raise(SIGKILL); /* tests: die after the first write */
	}
	for (size_t k = 0; k < c->n; k++) {
		const struct rdelta_cmd *cmd = &c->v[k];
		long long w;

		if (cmd->copy)
			continue;
		w = io_pwrite_full(ip->io, ip->fd, ip->delta + cmd->src, (size_t)cmd->len, cmd->dst);
		if (w < 0)
			return (int)w;
		if (failpoint("rdelta-inplace-kill"))
			raise(SIGKILL);
	}
	return 0;
}

static int inplace_apply(struct inplace *ip, const struct plan *p, struct rdelta_stats *st)
{
	const char *dir_end = strrchr(ip->journal, '/');
	_cleanup_free_ char *dir = dir_end ? strndup(ip->journal, (size_t)(dir_end - ip->journal) + 1)
					   : strdup(".");
	int r;

	if (!dir)
		return -ENOMEM;
	if (p->staged) {
		/* Beside BASIS (same file system, where there is room for it),
		 * else in TMPDIR where that file system has no O_TMPFILE. */
		const char *tmp = getenv("TMPDIR");

		ip->stage_fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
		if (ip->stage_fd < 0 && errno == EOPNOTSUPP)
			ip->stage_fd = open(tmp && *tmp ? tmp : "/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC,
					    0600);
		if (ip->stage_fd < 0)
			return -errno;
	}
	r = journal_write(ip, "rewriting");
	if (r < 0)
		return r;
	if (ip->c->new_len > ip->basis_size && ftruncate(ip->fd, (off_t)ip->c->new_len) < 0)
		return -errno;
	r = run_plan(ip, p);
	if (r < 0)
		return r;
	if (ip->c->new_len < ip->basis_size && ftruncate(ip->fd, (off_t)ip->c->new_len) < 0)
		return -errno;
	if (fdatasync(ip->fd) < 0)
		return -errno;
	/* BASIS is NEW, on disk: the journal goes. */
	if (unlink(ip->journal) < 0)
		return -errno;
	r = fsync_directory_of(ip->journal);
	for (size_t k = 0; k < ip->c->n; k++) {
		const struct rdelta_cmd *cmd = &ip->c->v[k];

		if (cmd->copy) {
			st->copy_cmds++;
			st->copy_bytes += cmd->len;
		} else {
			st->lit_cmds++;
			st->lit_bytes += cmd->len;
		}
	}
	st->in_bytes = ip->delta_len;
	st->out_bytes = ip->c->new_len;
	return r;
}

int rdelta_delta_load(int fd, const uint8_t **ret, size_t *ret_len, bool *ret_mapped)
{
	struct stat st;
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0;

	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
	    lseek(fd, 0, SEEK_CUR) == 0) {
		void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);

		if (m == MAP_FAILED)
			return -errno;
		*ret = m;
		*ret_len = (size_t)st.st_size;
		*ret_mapped = true;
		return 0;
	}
	for (;;) {
		ssize_t n;

		if (len == cap) {
			uint8_t *b = realloc(buf, cap = cap ? cap * 2 : RDELTA_IO_BUF);

			if (!b) {
				free(buf);
				return -ENOMEM;
			}
			buf = b;
		}
		n = fd_read_all(fd, buf + len, cap - len);
		if (n < 0) {
			free(buf);
			return (int)n;
		}
		len += (size_t)n;
		if (len < cap)
			break;
	}
	*ret = buf;
	*ret_len = len;
	*ret_mapped = false;
	return 0;
}

void rdelta_delta_unload(const uint8_t *delta, size_t len, bool mapped)
{
	if (mapped)
		munmap((void *)(uintptr_t)delta, len);
	else
		free((void *)(uintptr_t)delta);
}

int rdelta_patch_inplace_buf(int basis_fd, const char *journal, const uint8_t *delta,
			     size_t delta_len, struct rdelta_stats *st)
{
	struct rdelta_cmds c = {0};
	struct plan p = {0};
	struct inplace ip = {.fd = basis_fd, .stage_fd = -1, .delta = delta,
			     .delta_len = delta_len, .c = &c, .journal = journal};
	struct stat sb;
	int r;

	if (fstat(basis_fd, &sb) < 0)
		return -errno;
	if (!S_ISREG(sb.st_mode))
		return -ESPIPE;
	ip.basis_size = (uint64_t)sb.st_size;
	r = rdelta_cmds_parse(delta, delta_len, &c);
	if (r >= 0 && c.basis_needed > ip.basis_size)
		r = -ENXIO; /* refused before any write */
	if (r >= 0)
		r = plan_build(&c, &p);
	if (r >= 0) {
		ip.cap = RDELTA_IO_BUF / 4;
		ip.buf = malloc(ip.cap);
		r = ip.buf ? io_ctx_new(IO_KIND_AUTO, 1, &ip.io) : -ENOMEM;
	}
	if (r >= 0)
		r = inplace_apply(&ip, &p, st);
	io_ctx_free(ip.io);
	free(ip.buf);
	if (ip.stage_fd >= 0)
		close(ip.stage_fd);
	free(p.acts);
	rdelta_cmds_release(&c);
	return r;
}

int rdelta_patch_inplace(const char *basis_path, int delta_fd, struct rdelta_stats *ret_stats)
{
	struct rdelta_stats st = {.op = "patch"};
	_cleanup_free_ char *journal = rdelta_inplace_journal(basis_path);
	_cleanup_close_ int fd = -1;
	const uint8_t *delta = NULL;
	uint64_t t0 = clock_usec();
	size_t len = 0;
	bool mapped = false;
	int r;

	if (!journal)
		return -ENOMEM;
	fd = open(basis_path, O_RDWR | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	/* One writer per file, as resyncfs, resyncd and resync-diff sync. */
	if (flock(fd, LOCK_EX | LOCK_NB) < 0)
		return errno == EWOULDBLOCK ? -EBUSY : -errno;
	if (access(journal, F_OK) == 0)
		return -EUCLEAN; /* an earlier run was interrupted */
	r = rdelta_delta_load(delta_fd, &delta, &len, &mapped);
	if (r < 0)
		return r;
	r = rdelta_patch_inplace_buf(fd, journal, delta, len, &st);
	rdelta_delta_unload(delta, len, mapped);
	st.seconds = (double)(clock_usec() - t0) / 1e6;
	if (ret_stats)
		*ret_stats = st;
	return r;
}
