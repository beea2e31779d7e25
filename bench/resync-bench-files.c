/* resync-bench's data and files (resync-bench.h): generated volumes
 * (xoshiro256** seeded through splitmix64, so that runs repeat), reads
 * that warm the page cache, compares, the engine's untimed restore, and
 * children run and timed with wait4() for their peak RSS. */
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

DEFINE_FREE_FUNC(struct volume, volume_free)
#define _cleanup_volume_ _cleanup_(volume_freep)

void bench_errorf(const char *fmt, ...)
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

/* Choose count distinct 4 KiB blocks of nblocks, scattered by seed. */
uint64_t *bench_changed_pick(uint64_t nblocks, uint64_t count, uint64_t seed)
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

/* ---- files ---- */

/* Write a volume of size bytes: the stream of seed, with the 4 KiB blocks
 * marked in changed (a bitmap, or NULL) replaced by data of change_seed. */
int bench_volume_generate(const char *path, uint64_t size, uint64_t seed, const uint64_t *changed,
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
int bench_file_warm(const char *path, unsigned char *buf)
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
int bench_files_compare(const char *a, const char *b, unsigned char *ba, unsigned char *bb,
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
int bench_engine_sync(const char *src_path, const char *dst_path)
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
int bench_child_run(const char *const argv[], long *maxrss)
{
	struct rusage ru;
	int status;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		bench_errorf("fork: %s", strerror(errno));
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
			bench_errorf("wait4: %s", strerror(errno));
			return -1;
		}
	}
	if (ru.ru_maxrss > *maxrss)
		*maxrss = ru.ru_maxrss;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status))
		bench_errorf("'%s %s' exited with status %d", argv[0], argv[1] ? argv[1] : "",
			     WEXITSTATUS(status));
	else
		bench_errorf("'%s %s' killed by signal %d", argv[0], argv[1] ? argv[1] : "",
			     WTERMSIG(status));
	return -1;
}
