/* hash-floor IMAGE [--runs N] [--impl avx512|avx2|sse2]
 *
 * What a secondary's compare costs at least on this machine, step by step,
 * one thread, IMAGE in the page cache (read it once before): what a
 * cluster resync's plan pays on every secondary whose tree is not kept
 * (bench/README.md, issue 18's three-node row). The daemon does exactly
 * these steps (engine/blockcmp.c, engine/volume.c), on several threads:
 *
 *   populate   a read-only shared mapping of IMAGE, MADV_POPULATE_READ
 *              over each 8 MiB unit: the page tables, 8 bytes per 4 KiB
 *   hash 4K    the tree's leaves: seeded xxh3-128 of every 4 KiB page,
 *              from the mapping (the bytes come from memory)
 *   proof 64K  the proof's leaves: seed-0 xxh3-128 of every 64 KiB block,
 *              right after its sixteen pages (the bytes are in the cache)
 *   one pass   both at once, as blockcmp makes them now (hash_span()): each
 *              64 KiB block's pages and the block from one pass over its
 *              bytes (they come from memory again)
 *   unmap      munmap of the populated mapping
 *   copy+hash  the other way: pread of 1 MiB chunks into one buffer (the
 *              page cache copied out), then the seeded 4 KiB hashes
 *
 * Prints the median CPU seconds of each over the runs, GB/s, and whether
 * the page cache maps IMAGE with 2 MiB entries (FilePmdMapped: large
 * folios make the page tables almost free). Exit 0, 1 on failure, 2 on
 * usage errors. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "resync/hash.h"
#include "resync/io.h"
#include "resync/limits.h"
#include "resync/macro.h"

enum { STEPS = 6, RUNS_MAX = 99, PAGE = 4096, LEAF = 65536 };

static const char *const step_names[STEPS] = {"populate", "hash 4K",	  "proof 64K",
					      "unmap",	  "copy+hash 4K", "one pass"};

static double thread_cpu(void)
{
	struct rusage ru;

	getrusage(RUSAGE_THREAD, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* FilePmdMapped of the mapping at m (/proc/self/smaps), in KiB; -1 if
 * not found. */
static long pmd_mapped_kib(const void *m)
{
	char head[32], line[256];
	int in = 0;
	long kib = -1;
	FILE *f = fopen("/proc/self/smaps", "re");

	if (!f)
		return -1;
	snprintf(head, sizeof(head), "%lx-", (unsigned long)m);
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, head, strlen(head)))
			in = 1;
		else if (in && sscanf(line, "FilePmdMapped: %ld kB", &kib) == 1)
			break;
	}
	fclose(f);
	return kib;
}

/* One run: the CPU seconds of each step into t[]; the hashes' xor into
 * *sink (so that nothing is optimised away). */
static int run_once(int fd, uint64_t size, unsigned char *buf, double t[STEPS], uint64_t *sink,
		    long *pmd_kib)
{
	unsigned char *m;
	double c;

	c = thread_cpu();
	m = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		return -errno;
	for (uint64_t u = 0; u < size; u += RESYNC_UNIT)
		if (madvise(m + u, (size_t)MIN((uint64_t)RESYNC_UNIT, size - u), MADV_POPULATE_READ) < 0) {
			int r = -errno;

			munmap(m, (size_t)size);
			return r;
		}
	t[0] = thread_cpu() - c;
	*pmd_kib = pmd_mapped_kib(m);

	c = thread_cpu();
	for (uint64_t k = 0; k < size; k += PAGE)
		*sink ^= hash_block(m + k, (size_t)MIN((uint64_t)PAGE, size - k), 0x5eed).lo;
	t[1] = thread_cpu() - c;

	/* The proof's pass as blockcmp makes it: each block right after its
	 * pages (timed apart: its bytes are in the cache by then). */
	t[2] = 0;
	for (uint64_t b = 0; b < size; b += LEAF) {
		size_t l = (size_t)MIN((uint64_t)LEAF, size - b);

		for (size_t k = 0; k < l; k += PAGE)
			*sink ^= hash_block(m + b + k, MIN((size_t)PAGE, l - k), 0x5eed).hi;
		c = thread_cpu();
		*sink ^= hash_block(m + b, l, 0).lo;
		t[2] += thread_cpu() - c;
	}

	c = thread_cpu();
	for (uint64_t b = 0; b < size; b += LEAF) {
		size_t l = (size_t)MIN((uint64_t)LEAF, size - b);
		struct hash128 leaves[LEAF / PAGE], whole;

		hash_span(m + b, l, PAGE, 0x5eed, leaves, &whole);
		*sink ^= leaves[0].lo ^ whole.lo;
	}
	t[5] = thread_cpu() - c;

	c = thread_cpu();
	munmap(m, (size_t)size);
	t[3] = thread_cpu() - c;

	c = thread_cpu();
	for (uint64_t o = 0; o < size; o += RESYNC_CHUNK) {
		size_t l = (size_t)MIN((uint64_t)RESYNC_CHUNK, size - o);
		int r = fd_pread_full(fd, buf, l, o);

		if (r < 0)
			return r;
		for (size_t k = 0; k < l; k += PAGE)
			*sink ^= hash_block(buf + k, MIN((size_t)PAGE, l - k), 0x5eed).lo;
	}
	t[4] = thread_cpu() - c;
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: hash-floor IMAGE [--runs N] [--impl avx512|avx2|sse2]\n"
		   "What a secondary's compare of IMAGE costs at least, step by step (one\n"
		   "thread, IMAGE in the page cache): populate the mapping, the seeded 4 KiB\n"
		   "hashes, the proof's 64 KiB pass, both in one pass, unmap; and\n"
		   "pread-and-hash for comparison.\n"
		   "--impl: the hash's vector path (default: the widest this CPU runs).\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {{"runs", required_argument, NULL, 'r'},
					     {"impl", required_argument, NULL, 'i'},
					     {"help", no_argument, NULL, 'h'},
					     {NULL, 0, NULL, 0}};
	double t[RUNS_MAX][STEPS], med[STEPS], col[RUNS_MAX];
	unsigned runs = 3;
	uint64_t size, sink = 0;
	long pmd_kib = -1;
	unsigned char *buf;
	off_t end;
	int c, fd;

	while ((c = getopt_long(argc, argv, "r:i:h", opts, NULL)) != -1) {
		if (c == 'r') {
			runs = (unsigned)strtoul(optarg, NULL, 10);
		} else if (c == 'i') {
			if (hash_impl_set(optarg) < 0) {
				fprintf(stderr, "hash-floor: --impl %s: not on this CPU or build\n",
					optarg);
				return 2;
			}
		} else if (c == 'h') {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (optind + 1 != argc || runs < 1 || runs > RUNS_MAX) {
		usage(stderr);
		return 2;
	}
	fd = open(argv[optind], O_RDONLY | O_CLOEXEC);
	if (fd < 0 || (end = lseek(fd, 0, SEEK_END)) <= 0) {
		fprintf(stderr, "hash-floor: %s: %s\n", argv[optind],
			fd < 0 ? strerror(errno) : "empty or unreadable");
		return 1;
	}
	size = (uint64_t)end;
	buf = malloc(RESYNC_CHUNK);
	if (!buf)
		return 1;
	for (unsigned i = 0; i < runs; i++) {
		int r = run_once(fd, size, buf, t[i], &sink, &pmd_kib);

		if (r < 0) {
			fprintf(stderr, "hash-floor: %s: %s\n", argv[optind], strerror(-r));
			return 1;
		}
	}
	for (unsigned s = 0; s < STEPS; s++) {
		for (unsigned i = 0; i < runs; i++)
			col[i] = t[i][s];
		qsort(col, runs, sizeof(col[0]), cmp_double);
		med[s] = col[runs / 2];
	}
	printf("hash-floor: %.0f MiB, one thread (%s), median of %u; FilePmdMapped %ld KiB\n",
	       (double)size / 1048576.0, hash_impl_name(), runs, pmd_kib);
	printf("%-14s %10s %8s\n", "step", "cpu s", "GB/s");
	for (unsigned s = 0; s < STEPS; s++)
		printf("%-14s %10.3f %8.1f\n", step_names[s], med[s],
		       med[s] > 0 ? (double)size / med[s] / 1e9 : 0.0);
	printf("%-14s %10.3f %8s   (populate + hash 4K + proof 64K + unmap)\n", "mapped, total",
	       med[0] + med[1] + med[2] + med[3], "");
	printf("%-14s %10.3f %8s   (populate + one pass + unmap)\n", "mapped, now",
	       med[0] + med[5] + med[3], "");
	/* Printed so that the hashes cannot be left out by the compiler. */
	fprintf(stderr, "hash-floor: (%016llx)\n", (unsigned long long)sink);
	free(buf);
	close(fd);
	return 0;
}
