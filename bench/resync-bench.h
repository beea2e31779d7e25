/* Private to resync-bench: what its three files share.
 *
 *   resync-bench.c        options, the work directory, the run of every
 *                         case, the results printed (table, JSON), main
 *   resync-bench-run.c    one case: its volumes prepared, every tool timed
 *                         round-robin and its result checked; a case's
 *                         table, JSON and the goals at 1 %
 *   resync-bench-files.c  generated volumes, warm reads, compares, the
 *                         engine's restore, children timed with wait4() */
#pragma once

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "resync/macro.h"

#define EXIT_USAGE 2
#define BENCH_BUF (1u << 20)
#define BENCH_BLOCK 4096u
#define BENCH_RUNS_MAX 1000
#define BENCH_SEED 0x7265737973796e63ULL /* "resysync": fixed, so runs repeat */

struct json_object;

enum tool_id { T_RESYNC, T_RDIFF, T_RSYNC, T_CP, T_CAT, T_READ, T_COUNT };

struct case_def {
	const char *name;  /* as given to --cases */
	const char *label; /* as printed */
	unsigned percent;  /* of 4 KiB blocks changed; 100 = an unrelated volume */
};

enum { N_CASES = 4 };

extern const char *const tool_names[T_COUNT];
extern const struct case_def case_defs[N_CASES];

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

struct goal {
	const char *what;
	double value, limit;
	bool at_least; /* value >= limit, else value <= limit */
	bool known;
};

/* resync-bench-files.c */
void bench_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Choose count distinct 4 KiB blocks of nblocks, scattered by seed: a
 * bitmap (free it), or NULL. */
uint64_t *bench_changed_pick(uint64_t nblocks, uint64_t count, uint64_t seed);
/* Write a volume of size bytes: the stream of seed, with the 4 KiB blocks
 * set in changed (may be NULL) from the stream of change_seed. */
int bench_volume_generate(const char *path, uint64_t size, uint64_t seed, const uint64_t *changed,
			  uint64_t change_seed);
/* Read a whole file (to warm the page cache) through buf (BENCH_BUF). */
int bench_file_warm(const char *path, unsigned char *buf);
/* 0 when identical, 1 when they differ (*ret_off: first differing byte),
 * or -errno. */
int bench_files_compare(const char *a, const char *b, unsigned char *ba, unsigned char *bb,
			uint64_t *ret_off);
/* Make dst identical to src with the engine (untimed restore). */
int bench_engine_sync(const char *src_path, const char *dst_path);
/* Run argv (stdin and stdout on /dev/null) and wait; *maxrss: its peak
 * RSS in KiB. 0 when it exited 0, else -1 (reported). */
int bench_child_run(const char *const argv[], long *maxrss);

/* resync-bench-run.c */
/* Prepare cr's volumes, then time every tool not skipped b->runs times,
 * round-robin, checking each result. 0 or -errno (reported). */
int bench_case_run(struct bench *b, struct case_result *cr);
void bench_case_print(FILE *f, const struct bench *b, const struct case_result *cr);
struct json_object *bench_case_json(const struct bench *b, const struct case_result *cr);
/* The project's targets at 1 % divergence. Returns how many were missed. */
unsigned bench_goals_eval(const struct case_result *cr, struct goal g[4]);
void bench_goals_print(FILE *f, const struct goal g[4]);
struct json_object *bench_goals_json(const struct goal g[4]);
