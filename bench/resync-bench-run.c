/* One case of resync-bench (resync-bench.h): its diverged volumes
 * prepared, then every tool timed round-robin (the starting tool rotating
 * each round), each run set up untimed (destination restored, file
 * system synced, page cache warm) and its result compared with the
 * source; then the case's table, its JSON and the goals at 1 %. */
#include <errno.h>
#include <fcntl.h>
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
#include "resync-bench.h"

const char *const tool_names[T_COUNT] = {"resync-diff", "rdiff", "rsync",
						"cp",	       "cat",	"read"};

const struct case_def case_defs[N_CASES] = {
	{"0", "0 % changed", 0},
	{"1", "1 % changed", 1},
	{"10", "10 % changed", 10},
	{"diff", "entirely different", 100},
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
		bm = bench_changed_pick(cr->blocks_total, cr->blocks_changed, change_seed);
		if (!bm)
			return -ENOMEM;
	}
	r = bench_volume_generate(b->pristine, b->size, seed, bm, change_seed);
	if (r < 0) {
		bench_errorf("cannot write '%s': %s", b->pristine, strerror(-r));
		return r;
	}
	r = bench_engine_sync(b->pristine, b->dst);
	if (r < 0)
		bench_errorf("cannot copy '%s' to '%s': %s", b->pristine, b->dst, strerror(-r));
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
	r = bench_engine_sync(b->pristine, b->dst);
	if (r < 0) {
		bench_errorf("cannot restore '%s': %s", b->dst, strerror(-r));
		return r;
	}
	if (syncfs(b->dirfd) < 0) {
		bench_errorf("syncfs '%s': %s", b->dir, strerror(errno));
		return -errno;
	}
	r = bench_file_warm(b->src, b->buf_a);
	if (r >= 0)
		r = bench_file_warm(b->dst, b->buf_a);
	if (r < 0)
		bench_errorf("cannot read the volumes: %s", strerror(-r));
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
		r = bench_child_run(steps[i], maxrss);
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
	r = bench_files_compare(b->src, out, b->buf_a, b->buf_b, &off);
	if (r < 0) {
		bench_errorf("cannot compare '%s' with '%s': %s", b->src, out, strerror(-r));
		return r;
	}
	if (r > 0) {
		bench_errorf("FAILED: after %s, '%s' differs from the source at byte %" PRIu64,
			     tool_names[t], out, off);
		return -EIO;
	}
	return 0;
}

int bench_case_run(struct bench *b, struct case_result *cr)
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

void bench_case_print(FILE *f, const struct bench *b, const struct case_result *cr)
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

/* The project's targets at 1 % divergence. Returns how many were missed. */
unsigned bench_goals_eval(const struct case_result *cr, struct goal g[4])
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

void bench_goals_print(FILE *f, const struct goal g[4])
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

struct json_object *bench_case_json(const struct bench *b, const struct case_result *cr)
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

struct json_object *bench_goals_json(const struct goal g[4])
{
	struct json_object *o = json_object_new_object();

	for (int i = 0; i < 4; i++) {
		struct json_object *e;
		bool met;

		if (!g[i].known)
			continue;
		e = json_object_new_object();
		json_object_object_add(e, "value", json_object_new_double(g[i].value));
		json_object_object_add(e, "limit", json_object_new_double(g[i].limit));
		met = g[i].at_least ? g[i].value >= g[i].limit : g[i].value <= g[i].limit;
		json_object_object_add(e, "met", json_object_new_boolean(met));
		json_object_object_add(o, g[i].what, e);
	}
	return o;
}
