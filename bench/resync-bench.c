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
 *
 * Here: options, the work directory, every case run and the results
 * printed; one case's run is resync-bench-run.c's, the data and files
 * resync-bench-files.c's (resync-bench.h). */
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

DEFINE_FREE_FUNC(struct volume, volume_free)
#define _cleanup_volume_ _cleanup_(volume_freep)

static int join_path(char *out, const char *dir, const char *name)
{
	int n = snprintf(out, PATH_MAX, "%s/%s", dir, name);

	return n < 0 || n >= PATH_MAX ? -ENAMETOOLONG : 0;
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
		bench_errorf("reading '%s' and '%s' failed: %s", argv[2], argv[3], strerror(-r));
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
			bench_errorf("unknown %s '%s'", what, tok);
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

/* An option of parse_args() with a value to check: --size, --runs,
 * --cases, --skip. Returns 0, or -1 (reported). */
static int parse_value(struct bench *b, int c, const char *arg, const char *const *case_names,
		       bool *any_case)
{
	uint64_t v;

	switch (c) {
	case 's':
		if (parse_size(arg, &v) < 0 || v < BENCH_BLOCK || v > (1ULL << 40)) {
			bench_errorf("invalid size '%s': 4K to 1T, with K, M, G suffixes", arg);
			return -1;
		}
		b->size = v;
		return 0;
	case 'r':
		if (parse_size(arg, &v) < 0 || v == 0 || v > BENCH_RUNS_MAX) {
			bench_errorf("invalid run count '%s'", arg);
			return -1;
		}
		b->runs = (unsigned)v;
		return 0;
	case 'c':
		if (parse_list(arg, b->want_case, case_names, N_CASES, "case") < 0)
			return -1;
		*any_case = true;
		return 0;
	case 'x':
		if (parse_list(arg, b->skip, tool_names, T_COUNT, "tool") < 0)
			return -1;
		if (b->skip[T_RESYNC]) {
			bench_errorf("resync-diff is what is measured; it cannot be skipped");
			return -1;
		}
		return 0;
	}
	return -1;
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
		switch (c) {
		case 'd':
			b->dir = optarg;
			break;
		case 's':
		case 'r':
		case 'c':
		case 'x':
			if (parse_value(b, c, optarg, case_names, &any_case) < 0)
				return -1;
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
		bench_errorf("cannot find this program: %s", strerror(-r));
		return r;
	}
	if (!b->resync_diff) {
		r = self_dir_path(resync_default, sizeof(resync_default), "../tools/resync-diff");
		if (r < 0)
			return r;
		b->resync_diff = resync_default;
	}
	if (access(b->resync_diff, X_OK) < 0) {
		bench_errorf("cannot run '%s': %s (give --resync-diff PATH)", b->resync_diff,
			     strerror(errno));
		return -errno;
	}
	if (!b->dir) {
		static char tmpl[] = "/var/tmp/resync-bench.XXXXXX";

		if (!mkdtemp(tmpl)) {
			bench_errorf("cannot create a work directory under /var/tmp: %s",
				     strerror(errno));
			return -errno;
		}
		b->dir = tmpl;
		b->dir_made = true;
	} else if (mkdir(b->dir, 0755) == 0) {
		b->dir_made = true;
	} else if (errno != EEXIST) {
		bench_errorf("cannot create '%s': %s", b->dir, strerror(errno));
		return -errno;
	}
	b->dirfd = open(b->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (b->dirfd < 0) {
		bench_errorf("cannot open '%s': %s", b->dir, strerror(errno));
		return -errno;
	}
	/* Source, pristine copy, destination, and rdiff's output and delta
	 * (as large as a volume when nothing matches). */
	need = b->size * (b->skip[T_RDIFF] ? 3 : 5) + (64ULL << 20);
	if (fstatvfs(b->dirfd, &sv) == 0 && (uint64_t)sv.f_bavail * sv.f_frsize < need) {
		char h1[32], h2[32];

		bench_errorf("'%s' has %s free, the benchmark needs %s", b->dir,
			     format_bytes((uint64_t)sv.f_bavail * sv.f_frsize, h1, sizeof(h1)),
			     format_bytes(need, h2, sizeof(h2)));
		return -ENOSPC;
	}
	if (join_path(b->src, b->dir, "src.img") < 0 ||
	    join_path(b->pristine, b->dir, "pristine.img") < 0 ||
	    join_path(b->dst, b->dir, "dst.img") < 0 || join_path(b->sig, b->dir, "rdiff.sig") < 0 ||
	    join_path(b->delta, b->dir, "rdiff.delta") < 0 ||
	    join_path(b->out, b->dir, "rdiff.out") < 0) {
		bench_errorf("work directory path too long");
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
	r = bench_volume_generate(b->src, b->size, BENCH_SEED, NULL, 0);
	if (r < 0) {
		bench_errorf("cannot write '%s': %s", b->src, strerror(-r));
		return r;
	}
	for (size_t i = 0; i < N_CASES; i++) {
		cr[i].def = &case_defs[i];
		if (!b->want_case[i])
			continue;
		r = bench_case_run(b, &cr[i]);
		if (r < 0)
			goto out;
	}

	fprintf(table, "\nresync-bench: %s volumes (%.3f GB), page cache warm, %u runs each\n",
		format_bytes(b->size, h, sizeof(h)), (double)b->size / 1e9, b->runs);
	for (size_t i = 0; i < N_CASES; i++)
		if (b->want_case[i])
			bench_case_print(table, b, &cr[i]);
	if (b->want_case[1]) {
		have_goals = true;
		missed = bench_goals_eval(&cr[1], goals);
		bench_goals_print(table, goals);
	}
	if (b->json) {
		struct json_object *j = json_object_new_object(), *cases = json_object_new_array();

		json_object_object_add(j, "size", json_object_new_uint64(b->size));
		json_object_object_add(j, "runs", json_object_new_int((int)b->runs));
		json_object_object_add(j, "dir", json_object_new_string(b->dir));
		for (size_t i = 0; i < N_CASES; i++)
			if (b->want_case[i])
				json_object_array_add(cases, bench_case_json(b, &cr[i]));
		json_object_object_add(j, "cases", cases);
		if (have_goals)
			json_object_object_add(j, "goals_at_1_percent", bench_goals_json(goals));
		puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY));
		json_object_put(j);
	}
	if (fflush(stdout) != 0) {
		bench_errorf("cannot write output: %s", strerror(errno));
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
		bench_errorf("failed");
		return 1;
	}
	return r;
}
