/* resync-bench: resync-diff sync side by side with rdiff, rsync, cp, cat of
 * both volumes (the bound) and the engine's own reader.
 *
 * Every tool runs as a child process, timed with CLOCK_MONOTONIC around
 * fork and wait4(), whose rusage gives its peak RSS. Before each timed run
 * (untimed) the destination is restored from a pristine diverged copy with
 * the engine, the file system is synced so no writeback from an earlier run
 * competes, and both volumes are read into the page cache. Tools run
 * round-robin, the starting tool rotating each round, so drift hits them all
 * alike. After each run the result is compared with the source.
 *
 *   resync-bench [--size 2G] [--runs 3] [--cases 0,1,10,diff] [--skip rdiff,rsync] ...
 *   resync-bench read A B     (internal) read both with the engine, hashing off
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "resync/blockcmp.h"
#include "resync/clock.h"
#include "resync/fileio.h"
#include "resync/limits.h"
#include "resync/macro.h"
#include "resync/parse.h"
#include "resync/volume.h"

#define EXIT_USAGE 2
#define BENCH_BUF (1u << 20)
#define BENCH_BLOCK 4096u
#define BENCH_RUNS_MAX 1000
#define BENCH_SEED 0x7265737973796e63ULL /* "resysync": fixed, so runs repeat */

DEFINE_FREE_FUNC(struct volume, volume_free)
#define _cleanup_volume_ _cleanup_(volume_freep)

static void errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void errorf(const char *fmt, ...)
{
	va_list ap;

	fputs("resync-bench: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ---- data: xoshiro256** seeded through splitmix64 ---- */

struct rng {
	uint64_t s[4];
};

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void rng_init(struct rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl64(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static inline uint64_t rng_next(struct rng *r)
{
	uint64_t *s = r->s;
	uint64_t out = rotl64(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl64(s[3], 45);
	return out;
}

/* len a multiple of 8 */
static void rng_fill(struct rng *r, unsigned char *buf, size_t len)
{
	for (size_t i = 0; i < len; i += 8) {
		uint64_t v = rng_next(r);

		memcpy(buf + i, &v, 8);
	}
}

/* ---- files ---- */

/* Write a volume of size bytes: the stream of seed, with the 4 KiB blocks
 * marked in changed (a bitmap, or NULL) replaced by data of change_seed. */
static int volume_generate(const char *path, uint64_t size, uint64_t seed, const uint64_t *changed,
			   uint64_t change_seed)
{
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	_cleanup_free_ unsigned char *buf = NULL;
	struct rng data, chg;
	int r;

	if (fd < 0)
		return -errno;
	buf = aligned_alloc(4096, BENCH_BUF);
	if (!buf)
		return -ENOMEM;
	rng_init(&data, seed);
	rng_init(&chg, change_seed);
	for (uint64_t off = 0; off < size; off += BENCH_BUF) {
		size_t len = (size_t)MIN((uint64_t)BENCH_BUF, size - off);

		rng_fill(&data, buf, BENCH_BUF);
		for (size_t b = 0; changed && b < len; b += BENCH_BLOCK) {
			uint64_t blk = (off + b) / BENCH_BLOCK;

			if (changed[blk / 64] & (1ULL << (blk % 64)))
				rng_fill(&chg, buf + b, BENCH_BLOCK);
		}
		r = fd_write_all(fd, buf, len);
		if (r < 0)
			return r;
	}
	if (fdatasync(fd) < 0)
		return -errno;
	return 0;
}

/* Read a whole file (to warm the page cache). */
static int file_warm(const char *path, unsigned char *buf)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	do {
		n = fd_read_all(fd, buf, BENCH_BUF);
		if (n < 0)
			return (int)n;
	} while (n > 0);
	return 0;
}

/* 0 when identical, 1 when they differ (*ret_off: first differing byte),
 * -errno on error. */
static int files_compare(const char *a, const char *b, unsigned char *ba, unsigned char *bb,
			 uint64_t *ret_off)
{
	_cleanup_close_ int fa = open(a, O_RDONLY | O_CLOEXEC);
	_cleanup_close_ int fb = open(b, O_RDONLY | O_CLOEXEC);
	uint64_t off = 0;

	if (fa < 0 || fb < 0)
		return -errno;
	for (;;) {
		ssize_t na = fd_read_all(fa, ba, BENCH_BUF);
		ssize_t nb = fd_read_all(fb, bb, BENCH_BUF);

		if (na < 0)
			return (int)na;
		if (nb < 0)
			return (int)nb;
		if (na != nb || memcmp(ba, bb, (size_t)na)) {
			size_t i = 0;

			while (i < (size_t)MIN(na, nb) && ba[i] == bb[i])
				i++;
			*ret_off = off + i;
			return 1;
		}
		if (na == 0)
			return 0;
		off += (uint64_t)na;
	}
}

/* Make dst identical to src with the engine (untimed restore). */
static int engine_sync(const char *src_path, const char *dst_path)
{
	_cleanup_volume_ struct volume *src = NULL, *dst = NULL;
	struct blockcmp_opts o = {.mode = BLOCKCMP_MEMCMP, .write = true};
	int r;

	r = volume_open(src_path, 0, &src);
	if (r < 0)
		return r;
	r = volume_open(dst_path, VOLUME_CREATE | VOLUME_LOCK, &dst);
	if (r < 0)
		return r;
	return blockcmp_run(src, dst, &o, NULL, NULL);
}

/* ---- children ---- */

/* Run argv (stdin and stdout on /dev/null), wait with wait4(). Adds the
 * child's peak RSS (KiB) into *maxrss as a maximum. Returns 0 when it
 * exited 0, else -1 (reported). */
static int child_run(const char *const argv[], long *maxrss)
{
	struct rusage ru;
	int status;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		errorf("fork: %s", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		int nul = open("/dev/null", O_RDWR);

		if (nul < 0 || dup2(nul, 0) < 0 || dup2(nul, 1) < 0)
			_exit(126);
		execvp(argv[0], (char *const *)argv);
		fprintf(stderr, "resync-bench: cannot run '%s': %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	while (wait4(pid, &status, 0, &ru) < 0) {
		if (errno != EINTR) {
			errorf("wait4: %s", strerror(errno));
			return -1;
		}
	}
	if (ru.ru_maxrss > *maxrss)
		*maxrss = ru.ru_maxrss;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status))
		errorf("'%s %s' exited with status %d", argv[0], argv[1] ? argv[1] : "",
		       WEXITSTATUS(status));
	else
		errorf("'%s %s' killed by signal %d", argv[0], argv[1] ? argv[1] : "",
		       WTERMSIG(status));
	return -1;
}

/* ---- the benchmark ---- */

enum tool_id { T_RESYNC, T_RDIFF, T_RSYNC, T_CP, T_CAT, T_READ, T_COUNT };

static const char *const tool_names[T_COUNT] = {"resync-diff", "rdiff", "rsync",
						"cp",	       "cat",	"read"};

struct case_def {
	const char *name;  /* as given to --cases */
	const char *label; /* as printed */
	unsigned percent;  /* of 4 KiB blocks changed; 100 = an unrelated volume */
};

static const struct case_def case_defs[] = {
	{"0", "0 % changed", 0},
	{"1", "1 % changed", 1},
	{"10", "10 % changed", 10},
	{"diff", "entirely different", 100},
};
#define N_CASES ARRAY_SIZE(case_defs)

struct bench {
	uint64_t size;
	unsigned runs;
	bool skip[T_COUNT];
	bool want_case[N_CASES];
	bool json, keep, strict;
	char *dir;
	bool dir_made;
	char *resync_diff;
	char self[PATH_MAX];
	char src[PATH_MAX], pristine[PATH_MAX], dst[PATH_MAX];
	char sig[PATH_MAX], delta[PATH_MAX], out[PATH_MAX];
	unsigned char *buf_a, *buf_b;
	int dirfd;
};

struct result {
	double *times;
	double median;
	long maxrss_kib;
	bool ran;
};

struct case_result {
	const struct case_def *def;
	uint64_t blocks_changed, blocks_total;
	struct result tool[T_COUNT];
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(const double *v, unsigned n)
{
	_cleanup_free_ double *s = malloc(n * sizeof(*s));

	if (!s || n == 0)
		return 0;
	memcpy(s, v, n * sizeof(*s));
	qsort(s, n, sizeof(*s), cmp_double);
	return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

static int join_path(char *out, const char *dir, const char *name)
{
	int n = snprintf(out, PATH_MAX, "%s/%s", dir, name);

	return n < 0 || n >= PATH_MAX ? -ENAMETOOLONG : 0;
}

/* Choose count distinct 4 KiB blocks of nblocks, scattered by seed. */
static uint64_t *changed_pick(uint64_t nblocks, uint64_t count, uint64_t seed)
{
	uint64_t *bm = calloc(DIV_ROUND_UP(nblocks, 64), sizeof(uint64_t));
	uint64_t x = seed;

	if (!bm)
		return NULL;
	for (uint64_t n = 0; n < count;) {
		uint64_t b = splitmix64(&x) % nblocks;

		if (bm[b / 64] & (1ULL << (b % 64)))
			continue;
		bm[b / 64] |= 1ULL << (b % 64);
		n++;
	}
	return bm;
}

/* Build the pristine diverged destination of a case, and a working copy. */
static int case_prepare(struct bench *b, struct case_result *cr)
{
	const struct case_def *d = cr->def;
	_cleanup_free_ uint64_t *bm = NULL;
	uint64_t seed = BENCH_SEED, change_seed = BENCH_SEED ^ (0x100 + d->percent);
	int r;

	cr->blocks_total = DIV_ROUND_UP(b->size, BENCH_BLOCK);
	if (d->percent == 100) {
		/* An unrelated volume: another stream altogether. */
		seed = BENCH_SEED ^ 0xd1ffULL;
		cr->blocks_changed = cr->blocks_total;
	} else if (d->percent > 0) {
		cr->blocks_changed = (cr->blocks_total * d->percent + 50) / 100;
		if (cr->blocks_changed == 0)
			cr->blocks_changed = 1;
		bm = changed_pick(cr->blocks_total, cr->blocks_changed, change_seed);
		if (!bm)
			return -ENOMEM;
	}
	r = volume_generate(b->pristine, b->size, seed, bm, change_seed);
	if (r < 0) {
		errorf("cannot write '%s': %s", b->pristine, strerror(-r));
		return r;
	}
	r = engine_sync(b->pristine, b->dst);
	if (r < 0)
		errorf("cannot copy '%s' to '%s': %s", b->pristine, b->dst, strerror(-r));
	return r;
}

/* Untimed: restore the diverged destination, flush every dirty page of
 * the file system, and read both volumes into the page cache. */
static int run_setup(struct bench *b)
{
	int r;

	unlink(b->sig);
	unlink(b->delta);
	unlink(b->out);
	r = engine_sync(b->pristine, b->dst);
	if (r < 0) {
		errorf("cannot restore '%s': %s", b->dst, strerror(-r));
		return r;
	}
	if (syncfs(b->dirfd) < 0) {
		errorf("syncfs '%s': %s", b->dir, strerror(errno));
		return -errno;
	}
	r = file_warm(b->src, b->buf_a);
	if (r >= 0)
		r = file_warm(b->dst, b->buf_a);
	if (r < 0)
		errorf("cannot read the volumes: %s", strerror(-r));
	return r;
}

/* Time one run of a tool. Returns 0 or -1 (reported). */
static int run_tool(struct bench *b, enum tool_id t, double *ret_seconds, long *maxrss)
{
	const char *resync[] = {b->resync_diff, "sync", b->src, b->dst, NULL};
	const char *rd_sig[] = {"rdiff", "signature", b->dst, b->sig, NULL};
	const char *rd_delta[] = {"rdiff", "delta", b->sig, b->src, b->delta, NULL};
	const char *rd_patch[] = {"rdiff", "patch", b->dst, b->delta, b->out, NULL};
	/* --ignore-times: never skip the file on its size and mtime. */
	const char *rsync[] = {"rsync", "--inplace", "--no-whole-file", "--ignore-times",
			 b->src,  b->dst,      NULL};
	const char *cp[] = {"cp", b->src, b->dst, NULL};
	const char *cat[] = {"cat", b->src, b->dst, NULL};
	const char *rd[] = {b->self, "read", b->src, b->dst, NULL};
	const char *const *steps[3] = {NULL};
	uint64_t t0, t1;
	int r = 0;

	switch (t) {
	case T_RESYNC:
		steps[0] = resync;
		break;
	case T_RDIFF:
		steps[0] = rd_sig;
		steps[1] = rd_delta;
		steps[2] = rd_patch;
		break;
	case T_RSYNC:
		steps[0] = rsync;
		break;
	case T_CP:
		steps[0] = cp;
		break;
	case T_CAT:
		steps[0] = cat;
		break;
	case T_READ:
		steps[0] = rd;
		break;
	case T_COUNT:
		return -1;
	}
	t0 = clock_usec();
	for (size_t i = 0; i < ARRAY_SIZE(steps) && steps[i] && r == 0; i++)
		r = child_run(steps[i], maxrss);
	t1 = clock_usec();
	*ret_seconds = (double)(t1 - t0) / 1e6;
	return r;
}

/* Untimed: the tool's result must equal the source. */
static int run_verify(struct bench *b, enum tool_id t)
{
	const char *out;
	uint64_t off = 0;
	int r;

	switch (t) {
	case T_RESYNC:
	case T_RSYNC:
	case T_CP:
		out = b->dst;
		break;
	case T_RDIFF:
		out = b->out;
		break;
	default:
		return 0;
	}
	r = files_compare(b->src, out, b->buf_a, b->buf_b, &off);
	if (r < 0) {
		errorf("cannot compare '%s' with '%s': %s", b->src, out, strerror(-r));
		return r;
	}
	if (r > 0) {
		errorf("FAILED: after %s, '%s' differs from the source at byte %" PRIu64,
		       tool_names[t], out, off);
		return -EIO;
	}
	return 0;
}

static int case_run(struct bench *b, struct case_result *cr)
{
	enum tool_id order[T_COUNT];
	unsigned n = 0;
	int r;

	for (unsigned t = 0; t < T_COUNT; t++) {
		if (b->skip[t])
			continue;
		order[n++] = t;
		cr->tool[t].ran = true;
		cr->tool[t].times = calloc(b->runs, sizeof(double));
		if (!cr->tool[t].times)
			return -ENOMEM;
	}
	fprintf(stderr, "resync-bench: case %s: preparing\n", cr->def->label);
	r = case_prepare(b, cr);
	if (r < 0)
		return r;
	for (unsigned run = 0; run < b->runs; run++) {
		for (unsigned k = 0; k < n; k++) {
			/* Rotate the starting tool every round. */
			enum tool_id t = order[(k + run) % n];
			double s;

			r = run_setup(b);
			if (r < 0)
				return r;
			if (run_tool(b, t, &s, &cr->tool[t].maxrss_kib) < 0)
				return -EIO;
			cr->tool[t].times[run] = s;
			fprintf(stderr, "resync-bench: case %s, run %u/%u: %-11s %8.3f s\n",
				cr->def->label, run + 1, b->runs, tool_names[t], s);
			r = run_verify(b, t);
			if (r < 0)
				return r;
		}
	}
	for (unsigned t = 0; t < T_COUNT; t++)
		if (cr->tool[t].ran)
			cr->tool[t].median = median(cr->tool[t].times, b->runs);
	unlink(b->sig);
	unlink(b->delta);
	unlink(b->out);
	return 0;
}

/* peer's time over this tool's: how many times faster this one is. */
static double speedup(const struct case_result *cr, enum tool_id t, enum tool_id peer)
{
	if (!cr->tool[t].ran || !cr->tool[peer].ran || cr->tool[t].median <= 0)
		return 0;
	return cr->tool[peer].median / cr->tool[t].median;
}

static void print_case(FILE *f, const struct bench *b, const struct case_result *cr)
{
	double gb = (double)b->size / 1e9;

	fprintf(f, "\ncase %s: %" PRIu64 " of %" PRIu64 " 4 KiB blocks differ, median of %u\n",
		cr->def->label, cr->blocks_changed, cr->blocks_total, b->runs);
	fprintf(f, "%-12s %9s %7s %6s %9s", "tool", "median s", "GB/s", "x cat", "peak MiB");
	for (unsigned p = 0; p < T_COUNT; p++)
		if (cr->tool[p].ran)
			fprintf(f, " %*s", p == T_RESYNC ? 14 : 9, tool_names[p]);
	fputc('\n', f);
	for (unsigned t = 0; t < T_COUNT; t++) {
		const struct result *r = &cr->tool[t];

		if (!r->ran)
			continue;
		fprintf(f, "%-12s %9.3f %7.2f ", tool_names[t], r->median,
			r->median > 0 ? gb / r->median : 0);
		if (cr->tool[T_CAT].ran && cr->tool[T_CAT].median > 0)
			fprintf(f, "%6.2f", r->median / cr->tool[T_CAT].median);
		else
			fprintf(f, "%6s", "-");
		fprintf(f, " %9.1f", (double)r->maxrss_kib / 1024);
		for (unsigned p = 0; p < T_COUNT; p++)
			if (cr->tool[p].ran)
				fprintf(f, " %*.2f", p == T_RESYNC ? 14 : 9, speedup(cr, t, p));
		fputc('\n', f);
	}
}

struct goal {
	const char *what;
	double value, limit;
	bool at_least; /* value >= limit, else value <= limit */
	bool known;
};

/* The project's targets at 1 % divergence. Returns how many were missed. */
static unsigned goals_eval(const struct case_result *cr, struct goal g[4])
{
	const struct result *rs = &cr->tool[T_RESYNC];
	unsigned missed = 0;

	g[0] = (struct goal){"speedup over rdiff", speedup(cr, T_RESYNC, T_RDIFF), 40, true,
			     rs->ran && cr->tool[T_RDIFF].ran};
	g[1] = (struct goal){"speedup over rsync", speedup(cr, T_RESYNC, T_RSYNC), 12, true,
			     rs->ran && cr->tool[T_RSYNC].ran};
	g[2] = (struct goal){"time over cat of both", 0, 1.2, false,
			     rs->ran && cr->tool[T_CAT].ran && cr->tool[T_CAT].median > 0};
	if (g[2].known)
		g[2].value = rs->median / cr->tool[T_CAT].median;
	g[3] = (struct goal){"peak RSS MiB", (double)rs->maxrss_kib / 1024, 64, false, rs->ran};
	for (int i = 0; i < 4; i++)
		if (g[i].known && (g[i].at_least ? g[i].value < g[i].limit : g[i].value > g[i].limit))
			missed++;
	return missed;
}

static void print_goals(FILE *f, const struct goal g[4])
{
	fprintf(f, "\ngoals of resync-diff sync at 1 %% changed:\n");
	for (int i = 0; i < 4; i++) {
		bool ok = g[i].at_least ? g[i].value >= g[i].limit : g[i].value <= g[i].limit;

		if (!g[i].known) {
			fprintf(f, "  %-22s %8s   (not measured)\n", g[i].what, "-");
			continue;
		}
		fprintf(f, "  %-22s %8.2f   %s %g: %s\n", g[i].what, g[i].value,
			g[i].at_least ? ">=" : "<=", g[i].limit, ok ? "met" : "MISSED");
	}
}

static struct json_object *json_case(const struct bench *b, const struct case_result *cr)
{
	struct json_object *o = json_object_new_object(), *tools = json_object_new_object();
	double gb = (double)b->size / 1e9;

	json_object_object_add(o, "name", json_object_new_string(cr->def->name));
	json_object_object_add(o, "label", json_object_new_string(cr->def->label));
	json_object_object_add(o, "blocks_changed", json_object_new_uint64(cr->blocks_changed));
	json_object_object_add(o, "blocks_total", json_object_new_uint64(cr->blocks_total));
	for (unsigned t = 0; t < T_COUNT; t++) {
		const struct result *r = &cr->tool[t];
		struct json_object *j, *times, *vs;

		if (!r->ran)
			continue;
		j = json_object_new_object();
		times = json_object_new_array();
		vs = json_object_new_object();
		for (unsigned i = 0; i < b->runs; i++)
			json_object_array_add(times, json_object_new_double(r->times[i]));
		json_object_object_add(j, "seconds", times);
		json_object_object_add(j, "median_seconds", json_object_new_double(r->median));
		json_object_object_add(j, "gb_per_second",
				       json_object_new_double(r->median > 0 ? gb / r->median : 0));
		if (cr->tool[T_CAT].ran && cr->tool[T_CAT].median > 0)
			json_object_object_add(
				j, "times_cat",
				json_object_new_double(r->median / cr->tool[T_CAT].median));
		json_object_object_add(j, "peak_rss_mib",
				       json_object_new_double((double)r->maxrss_kib / 1024));
		for (unsigned p = 0; p < T_COUNT; p++)
			if (cr->tool[p].ran && p != t)
				json_object_object_add(vs, tool_names[p],
						       json_object_new_double(speedup(cr, t, p)));
		json_object_object_add(j, "speedup_over", vs);
		json_object_object_add(tools, tool_names[t], j);
	}
	json_object_object_add(o, "tools", tools);
	return o;
}

/* ---- internal mode: the engine's reader, hashing off ---- */

static int cmd_read(int argc, char **argv)
{
	_cleanup_volume_ struct volume *a = NULL, *b = NULL;
	struct blockcmp_opts o = {.mode = BLOCKCMP_READ_ONLY};
	int r;

	if (argc != 4) {
		fputs("usage: resync-bench read A B\n", stderr);
		return EXIT_USAGE;
	}
	r = volume_open(argv[2], 0, &a);
	if (r >= 0)
		r = volume_open(argv[3], 0, &b);
	if (r >= 0)
		r = blockcmp_run(a, b, &o, NULL, NULL);
	if (r < 0) {
		errorf("reading '%s' and '%s' failed: %s", argv[2], argv[3], strerror(-r));
		return 1;
	}
	return 0;
}

/* ---- options ---- */

static const char usage_text[] =
	"usage: resync-bench [OPTIONS]\n"
	"Time resync-diff sync against rdiff, rsync, cp, cat of both volumes and the\n"
	"engine's reader, on generated volumes with 0 %, 1 %, 10 % of 4 KiB blocks\n"
	"changed and an entirely different one. Page cache warm; medians of N runs.\n"
	"  -d, --dir DIR          work directory (default: a new one under /var/tmp)\n"
	"  -s, --size SIZE        volume size, K/M/G suffixes (default 2G)\n"
	"  -r, --runs N           timed runs per tool and case (default 3)\n"
	"  -c, --cases LIST       cases to run: 0,1,10,diff (default all)\n"
	"  -x, --skip LIST        tools to skip: rdiff,rsync,cp,cat,read\n"
	"      --resync-diff PATH the resync-diff binary (default: ../tools/resync-diff\n"
	"                         beside this program in the build directory)\n"
	"  -j, --json             print the results as one JSON document on stdout\n"
	"                         (the table then goes to stderr)\n"
	"  -k, --keep             keep the work files\n"
	"      --strict           exit 1 when a goal at 1 % is missed\n"
	"  -h, --help             this text\n"
	"Internal: resync-bench read A B reads both with the engine, hashing off.\n";

static int parse_list(const char *arg, bool *set, const char *const *names, size_t n,
		      const char *what)
{
	_cleanup_free_ char *copy = strdup(arg);
	char *save = NULL;

	if (!copy)
		return -ENOMEM;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		size_t i;

		for (i = 0; i < n; i++)
			if (!strcmp(tok, names[i]))
				break;
		if (i == n && !strcmp(what, "case") && !strcmp(tok, "100"))
			i = N_CASES - 1;
		if (i == n) {
			errorf("unknown %s '%s'", what, tok);
			return -EINVAL;
		}
		set[i] = true;
	}
	return 0;
}

static int self_dir_path(char *out, size_t size, const char *rel)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	char *slash;

	if (n < 0)
		return -errno;
	exe[n] = '\0';
	slash = strrchr(exe, '/');
	if (!slash)
		return -ENOENT;
	*slash = '\0';
	n = snprintf(out, size, "%s/%s", exe, rel);
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

static int parse_args(int argc, char **argv, struct bench *b)
{
	static const struct option longopts[] = {
		{"dir", required_argument, NULL, 'd'},
		{"size", required_argument, NULL, 's'},
		{"runs", required_argument, NULL, 'r'},
		{"cases", required_argument, NULL, 'c'},
		{"skip", required_argument, NULL, 'x'},
		{"resync-diff", required_argument, NULL, 'R'},
		{"json", no_argument, NULL, 'j'},
		{"keep", no_argument, NULL, 'k'},
		{"strict", no_argument, NULL, 'S'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	const char *case_names[N_CASES];
	bool any_case = false;
	int c;

	for (size_t i = 0; i < N_CASES; i++)
		case_names[i] = case_defs[i].name;
	b->size = 2ULL << 30;
	b->runs = 3;
	while ((c = getopt_long(argc, argv, "d:s:r:c:x:jkh", longopts, NULL)) != -1) {
		uint64_t v;

		switch (c) {
		case 'd':
			b->dir = optarg;
			break;
		case 's':
			if (parse_size(optarg, &v) < 0 || v < BENCH_BLOCK || v > (1ULL << 40)) {
				errorf("invalid size '%s': 4K to 1T, with K, M, G suffixes",
				       optarg);
				return -1;
			}
			b->size = v;
			break;
		case 'r':
			if (parse_size(optarg, &v) < 0 || v == 0 || v > BENCH_RUNS_MAX) {
				errorf("invalid run count '%s'", optarg);
				return -1;
			}
			b->runs = (unsigned)v;
			break;
		case 'c':
			if (parse_list(optarg, b->want_case, case_names, N_CASES, "case") < 0)
				return -1;
			any_case = true;
			break;
		case 'x':
			if (parse_list(optarg, b->skip, tool_names, T_COUNT, "tool") < 0)
				return -1;
			if (b->skip[T_RESYNC]) {
				errorf("resync-diff is what is measured; it cannot be skipped");
				return -1;
			}
			break;
		case 'R':
			b->resync_diff = optarg;
			break;
		case 'j':
			b->json = true;
			break;
		case 'k':
			b->keep = true;
			break;
		case 'S':
			b->strict = true;
			break;
		case 'h':
			fputs(usage_text, stdout);
			return 1;
		default:
			fputs(usage_text, stderr);
			return -1;
		}
	}
	if (optind != argc) {
		fputs(usage_text, stderr);
		return -1;
	}
	if (!any_case)
		for (size_t i = 0; i < N_CASES; i++)
			b->want_case[i] = true;
	return 0;
}

static int bench_setup(struct bench *b)
{
	static char resync_default[PATH_MAX];
	struct statvfs sv;
	uint64_t need;
	int r;

	r = self_dir_path(b->self, sizeof(b->self), "resync-bench");
	if (r < 0) {
		errorf("cannot find this program: %s", strerror(-r));
		return r;
	}
	if (!b->resync_diff) {
		r = self_dir_path(resync_default, sizeof(resync_default), "../tools/resync-diff");
		if (r < 0)
			return r;
		b->resync_diff = resync_default;
	}
	if (access(b->resync_diff, X_OK) < 0) {
		errorf("cannot run '%s': %s (give --resync-diff PATH)", b->resync_diff,
		       strerror(errno));
		return -errno;
	}
	if (!b->dir) {
		static char tmpl[] = "/var/tmp/resync-bench.XXXXXX";

		if (!mkdtemp(tmpl)) {
			errorf("cannot create a work directory under /var/tmp: %s",
			       strerror(errno));
			return -errno;
		}
		b->dir = tmpl;
		b->dir_made = true;
	} else if (mkdir(b->dir, 0755) == 0) {
		b->dir_made = true;
	} else if (errno != EEXIST) {
		errorf("cannot create '%s': %s", b->dir, strerror(errno));
		return -errno;
	}
	b->dirfd = open(b->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (b->dirfd < 0) {
		errorf("cannot open '%s': %s", b->dir, strerror(errno));
		return -errno;
	}
	/* Source, pristine copy, destination, and rdiff's output and delta
	 * (as large as a volume when nothing matches). */
	need = b->size * (b->skip[T_RDIFF] ? 3 : 5) + (64ULL << 20);
	if (fstatvfs(b->dirfd, &sv) == 0 && (uint64_t)sv.f_bavail * sv.f_frsize < need) {
		char h1[32], h2[32];

		errorf("'%s' has %s free, the benchmark needs %s", b->dir,
		       format_bytes((uint64_t)sv.f_bavail * sv.f_frsize, h1, sizeof(h1)),
		       format_bytes(need, h2, sizeof(h2)));
		return -ENOSPC;
	}
	if (join_path(b->src, b->dir, "src.img") < 0 ||
	    join_path(b->pristine, b->dir, "pristine.img") < 0 ||
	    join_path(b->dst, b->dir, "dst.img") < 0 || join_path(b->sig, b->dir, "rdiff.sig") < 0 ||
	    join_path(b->delta, b->dir, "rdiff.delta") < 0 ||
	    join_path(b->out, b->dir, "rdiff.out") < 0) {
		errorf("work directory path too long");
		return -ENAMETOOLONG;
	}
	b->buf_a = aligned_alloc(4096, BENCH_BUF);
	b->buf_b = aligned_alloc(4096, BENCH_BUF);
	if (!b->buf_a || !b->buf_b)
		return -ENOMEM;
	return 0;
}

static void bench_cleanup(struct bench *b)
{
	if (b->dir && !b->keep) {
		const char *const files[] = {b->src, b->pristine, b->dst, b->sig, b->delta, b->out};

		for (size_t i = 0; i < ARRAY_SIZE(files); i++)
			if (files[i][0])
				unlink(files[i]);
		if (b->dir_made)
			rmdir(b->dir);
	}
	if (b->dirfd >= 0)
		close(b->dirfd);
	free(b->buf_a);
	free(b->buf_b);
}

static int bench_main(struct bench *b)
{
	struct case_result cr[N_CASES] = {0};
	struct goal goals[4];
	unsigned missed = 0;
	bool have_goals = false;
	FILE *table = b->json ? stderr : stdout;
	char h[32];
	int r;

	fprintf(stderr, "resync-bench: %s volumes in '%s', %u runs, resync-diff '%s'\n",
		format_bytes(b->size, h, sizeof(h)), b->dir, b->runs, b->resync_diff);
	r = volume_generate(b->src, b->size, BENCH_SEED, NULL, 0);
	if (r < 0) {
		errorf("cannot write '%s': %s", b->src, strerror(-r));
		return r;
	}
	for (size_t i = 0; i < N_CASES; i++) {
		cr[i].def = &case_defs[i];
		if (!b->want_case[i])
			continue;
		r = case_run(b, &cr[i]);
		if (r < 0)
			goto out;
	}

	fprintf(table, "\nresync-bench: %s volumes (%.3f GB), page cache warm, %u runs each\n",
		format_bytes(b->size, h, sizeof(h)), (double)b->size / 1e9, b->runs);
	for (size_t i = 0; i < N_CASES; i++)
		if (b->want_case[i])
			print_case(table, b, &cr[i]);
	if (b->want_case[1]) {
		have_goals = true;
		missed = goals_eval(&cr[1], goals);
		print_goals(table, goals);
	}
	if (b->json) {
		struct json_object *j = json_object_new_object(), *cases = json_object_new_array();

		json_object_object_add(j, "size", json_object_new_uint64(b->size));
		json_object_object_add(j, "runs", json_object_new_int((int)b->runs));
		json_object_object_add(j, "dir", json_object_new_string(b->dir));
		for (size_t i = 0; i < N_CASES; i++)
			if (b->want_case[i])
				json_object_array_add(cases, json_case(b, &cr[i]));
		json_object_object_add(j, "cases", cases);
		if (have_goals) {
			struct json_object *g = json_object_new_object();

			for (int i = 0; i < 4; i++) {
				struct json_object *e = json_object_new_object();

				if (!goals[i].known)
					continue;
				json_object_object_add(e, "value",
						       json_object_new_double(goals[i].value));
				json_object_object_add(e, "limit",
						       json_object_new_double(goals[i].limit));
				json_object_object_add(
					e, "met",
					json_object_new_boolean(
						goals[i].at_least ? goals[i].value >= goals[i].limit
								  : goals[i].value <= goals[i].limit));
				json_object_object_add(g, goals[i].what, e);
			}
			json_object_object_add(j, "goals_at_1_percent", g);
		}
		puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY));
		json_object_put(j);
	}
	if (fflush(stdout) != 0) {
		errorf("cannot write output: %s", strerror(errno));
		r = -EIO;
		goto out;
	}
	r = b->strict && missed ? 1 : 0;
out:
	for (size_t i = 0; i < N_CASES; i++)
		for (unsigned t = 0; t < T_COUNT; t++)
			free(cr[i].tool[t].times);
	return r;
}

int main(int argc, char **argv)
{
	struct bench b = {.dirfd = -1};
	int r;

	if (argc > 1 && !strcmp(argv[1], "read"))
		return cmd_read(argc, argv);
	r = parse_args(argc, argv, &b);
	if (r > 0)
		return 0;
	if (r < 0)
		return EXIT_USAGE;
	r = bench_setup(&b);
	if (r >= 0)
		r = bench_main(&b);
	bench_cleanup(&b);
	if (r < 0) {
		errorf("failed");
		return 1;
	}
	return r;
}
