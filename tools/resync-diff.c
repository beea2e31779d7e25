/* resync-diff: the offline image tool.
 *   sync SRC DST     make DST byte-identical to SRC, writing only what differs
 *   compare A B      list the differing ranges, write nothing (exit 0/1/2 as cmp)
 *   hash IMAGE       the proof's root hash of an image (resync/proof.h)
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "resync/blockcmp.h"
#include "resync/limits.h"
#include "resync/macro.h"
#include "resync/parse.h"
#include "resync/proof.h"
#include "resync/volume.h"

#include "resync-diff.h"

#define EXIT_USAGE 2
#define EXIT_ERROR 2

DEFINE_FREE_FUNC(struct volume, volume_free)
#define _cleanup_volume_ _cleanup_(volume_freep)

void resync_diff_errorf(const char *fmt, ...)
{
	va_list ap;

	fputs("resync-diff: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int open_error(const char *path, int r)
{
	switch (r) {
	case -EBUSY:
		resync_diff_errorf("'%s' is in use by another writer (resyncfs, resyncd or resync-diff)", path);
		break;
	case -EINVAL:
		resync_diff_errorf("'%s' is neither a regular file nor a block device", path);
		break;
	default:
		resync_diff_errorf("cannot open '%s': %s", path, strerror(-r));
	}
	return EXIT_ERROR;
}

struct common_opts {
	uint32_t block_size;
	bool json;
	bool dry_run;
	bool hash;
	unsigned threads;
};

/* Parse the options shared by sync and compare; returns the index of the
 * first operand or -1 (usage error, already reported) or -2 (help shown). */
static int parse_common(int argc, char **argv, const char *usage, bool allow_dry_run,
			struct common_opts *o)
{
	static const struct option longopts[] = {
		{"block-size", required_argument, NULL, 'b'},
		{"json", no_argument, NULL, 'j'},
		{"dry-run", no_argument, NULL, 'n'},
		{"hash", no_argument, NULL, 'H'},
		{"threads", required_argument, NULL, 't'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	int c;

	*o = (struct common_opts){.block_size = RESYNC_BLOCK_DEFAULT};
	optind = 1;
	while ((c = getopt_long(argc, argv, "b:jnHt:h", longopts, NULL)) != -1) {
		uint64_t v;

		switch (c) {
		case 'b':
			if (parse_size(optarg, &v) < 0 || !resync_block_size_valid(v)) {
				resync_diff_errorf("invalid block size '%s': a power of two from 4K to 1M",
				       optarg);
				return -1;
			}
			o->block_size = (uint32_t)v;
			break;
		case 'j':
			o->json = true;
			break;
		case 'n':
			if (!allow_dry_run) {
				fprintf(stderr, "%s", usage);
				return -1;
			}
			o->dry_run = true;
			break;
		case 'H':
			o->hash = true;
			break;
		case 't':
			if (parse_size(optarg, &v) < 0 || v == 0 || v > RESYNC_THREADS_MAX) {
				resync_diff_errorf("invalid thread count '%s'", optarg);
				return -1;
			}
			o->threads = (unsigned)v;
			break;
		case 'h':
			fputs(usage, stdout);
			return -2;
		default:
			fputs(usage, stderr);
			return -1;
		}
	}
	return optind;
}

static int open_pair(const char *a_path, const char *b_path, bool write, bool dry_run,
		     struct volume **ret_a, struct volume **ret_b)
{
	_cleanup_volume_ struct volume *a = NULL, *b = NULL;
	int r;

	r = volume_open(a_path, 0, &a);
	if (r < 0)
		return open_error(a_path, r);
	if (write && !dry_run) {
		r = volume_open(b_path, VOLUME_CREATE | VOLUME_LOCK, &b);
	} else {
		r = volume_open(b_path, 0, &b);
		if (r == -ENOENT && write) {
			/* A dry run against a missing destination compares
			 * with an empty file, without creating it. */
			char path[64];
			_cleanup_close_ int fd = memfd_create("resync-empty", MFD_CLOEXEC);

			if (fd < 0)
				return open_error(b_path, -errno);
			snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
			r = volume_open(path, 0, &b);
		}
	}
	if (r < 0)
		return open_error(b_path, r);
	if (volume_same(a, b)) {
		resync_diff_errorf("'%s' and '%s' are the same file", a_path, b_path);
		return EXIT_ERROR;
	}
	*ret_a = TAKE_PTR(a);
	*ret_b = TAKE_PTR(b);
	return 0;
}

static const char *where_text(enum blockcmp_where at)
{
	switch (at) {
	case BLOCKCMP_AT_READ_SRC:
		return "reading the source";
	case BLOCKCMP_AT_READ_DST:
		return "reading the destination";
	case BLOCKCMP_AT_WRITE:
		return "writing the destination";
	case BLOCKCMP_AT_FLUSH:
		return "flushing the destination";
	case BLOCKCMP_AT_CANCEL:
		return "cancelled";
	case BLOCKCMP_AT_SETUP:
	case BLOCKCMP_AT_NONE:
		break;
	}
	return "preparing";
}

static void stats_to_json(struct json_object *o, const struct blockcmp_stats *st)
{
	json_object_object_add(o, "bytes_compared", json_object_new_uint64(st->bytes_compared));
	json_object_object_add(o, "bytes_read", json_object_new_uint64(st->bytes_read));
	json_object_object_add(o, "blocks_differing", json_object_new_uint64(st->blocks_differing));
	json_object_object_add(o, "bytes_differing", json_object_new_uint64(st->bytes_differing));
	json_object_object_add(o, "seconds", json_object_new_double(st->seconds));
	json_object_object_add(o, "src_size", json_object_new_uint64(st->src_size));
	json_object_object_add(o, "dst_size", json_object_new_uint64(st->dst_size_before));
	json_object_object_add(o, "io_backend",
			       json_object_new_string(st->io_backend ? st->io_backend : "none"));
	json_object_object_add(o, "threads", json_object_new_int((int)st->threads));
}

static void print_json(struct json_object *o)
{
	puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
}

static double gbps(uint64_t bytes, double s)
{
	return s > 0 ? (double)bytes / s / 1e9 : 0;
}

static const char sync_usage[] =
	"usage: resync-diff sync SRC DST [--block-size SIZE] [--dry-run] [--hash] [--json]\n"
	"Make DST byte-identical to SRC in place, writing only the pages of the\n"
	"blocks that differ. DST is created if missing and given SRC's size.\n"
	"  -b, --block-size SIZE  unit of comparison, 4K..1M, power of two (default 64K)\n"
	"  -n, --dry-run          write nothing; report what would be written\n"
	"  -H, --hash             compare seeded xxh3-128 hashes instead of bytes\n"
	"  -t, --threads N        reader threads (default: one per CPU)\n"
	"  -j, --json             print one JSON object\n";

int cmd_sync(int argc, char **argv)
{
	_cleanup_volume_ struct volume *src = NULL, *dst = NULL;
	struct blockcmp_stats st = {0};
	struct common_opts o;
	struct blockcmp_opts bo;
	char b1[32], b2[32], b3[32];
	int i, r;

	i = parse_common(argc, argv, sync_usage, true, &o);
	if (i == -2)
		return 0;
	if (i < 0)
		return EXIT_USAGE;
	if (argc - i != 2) {
		fputs(sync_usage, stderr);
		return EXIT_USAGE;
	}
	r = open_pair(argv[i], argv[i + 1], true, o.dry_run, &src, &dst);
	if (r)
		return r;

	bo = (struct blockcmp_opts){
		.block_size = o.block_size,
		.threads = o.threads,
		.mode = o.hash ? BLOCKCMP_HASH : BLOCKCMP_MEMCMP,
		.write = !o.dry_run,
		.punch_zeros = true,
	};
	if (o.hash && hash_seed_random(&bo.seed) < 0)
		bo.seed = (uint64_t)getpid();
	r = blockcmp_run(src, dst, &bo, NULL, &st);
	if (r == -EFBIG) {
		resync_diff_errorf("'%s' is a block device of %" PRIu64 " bytes; '%s' has %" PRIu64
		       ": the sizes must match",
		       argv[i + 1], st.dst_size_before, argv[i], st.src_size);
		return EXIT_ERROR;
	}
	if (r < 0) {
		resync_diff_errorf("sync of '%s' into '%s' failed %s: %s; the first %" PRIu64
		       " bytes are in sync, %" PRIu64 " bytes were written",
		       argv[i], argv[i + 1], where_text(st.failed_at), strerror(-r), st.done_upto,
		       st.bytes_written);
		return EXIT_ERROR;
	}

	if (o.json) {
		struct json_object *j = json_object_new_object();

		stats_to_json(j, &st);
		json_object_object_add(j, "bytes_written", json_object_new_uint64(st.bytes_written));
		json_object_object_add(j, "bytes_punched", json_object_new_uint64(st.bytes_punched));
		json_object_object_add(j, "block_size", json_object_new_uint64(o.block_size));
		json_object_object_add(j, "dry_run", json_object_new_boolean(o.dry_run));
		print_json(j);
	} else {
		printf("%s %s, %" PRIu64 " blocks differing, %s %s in %.3f s (%.2f GB/s)\n",
		       o.dry_run ? "would sync:" : "synced:",
		       format_bytes(st.bytes_compared, b1, sizeof(b1)), st.blocks_differing,
		       format_bytes(st.bytes_written, b2, sizeof(b2)),
		       o.dry_run ? "to write" : "written", st.seconds,
		       gbps(st.bytes_compared, st.seconds));
		if (st.dst_size_before != st.src_size)
			printf("%s size: %s -> %s\n", o.dry_run ? "would change" : "changed",
			       format_bytes(st.dst_size_before, b3, sizeof(b3)),
			       format_bytes(st.src_size, b1, sizeof(b1)));
	}
	return 0;
}

static const char compare_usage[] =
	"usage: resync-diff compare A B [--block-size SIZE] [--hash] [--json]\n"
	"List the byte ranges where A and B differ, one 'OFFSET LENGTH' a line.\n"
	"Writes nothing. Exit 0 when identical, 1 when they differ, 2 on error.\n"
	"  -b, --block-size SIZE  unit of comparison, 4K..1M, power of two (default 64K)\n"
	"  -H, --hash             compare seeded xxh3-128 hashes instead of bytes\n"
	"  -t, --threads N        reader threads (default: one per CPU)\n"
	"  -j, --json             print one JSON object\n";

int cmd_compare(int argc, char **argv)
{
	_cleanup_volume_ struct volume *a = NULL, *b = NULL;
	struct rangelist ranges = {0};
	struct blockcmp_stats st = {0};
	struct common_opts o;
	struct blockcmp_opts bo;
	uint64_t sa, sb;
	bool differ;
	int i, r;

	i = parse_common(argc, argv, compare_usage, false, &o);
	if (i == -2)
		return 0;
	if (i < 0)
		return EXIT_USAGE;
	if (argc - i != 2) {
		fputs(compare_usage, stderr);
		return EXIT_USAGE;
	}
	r = open_pair(argv[i], argv[i + 1], false, false, &a, &b);
	if (r)
		return r;

	bo = (struct blockcmp_opts){
		.block_size = o.block_size,
		.threads = o.threads,
		.mode = o.hash ? BLOCKCMP_HASH : BLOCKCMP_MEMCMP,
	};
	if (o.hash && hash_seed_random(&bo.seed) < 0)
		bo.seed = (uint64_t)getpid();
	r = blockcmp_run(a, b, &bo, &ranges, &st);
	if (r < 0) {
		resync_diff_errorf("compare of '%s' and '%s' failed %s: %s", argv[i], argv[i + 1],
		       where_text(st.failed_at), strerror(-r));
		return EXIT_ERROR;
	}
	/* Past the shorter one's end, everything differs. */
	sa = volume_size(a);
	sb = volume_size(b);
	if (sa != sb && rangelist_add(&ranges, MIN(sa, sb), MAX(sa, sb) - MIN(sa, sb)) < 0) {
		resync_diff_errorf("out of memory");
		return EXIT_ERROR;
	}
	rangelist_normalize(&ranges);
	differ = ranges.n > 0;

	if (o.json) {
		struct json_object *j = json_object_new_object(), *arr = json_object_new_array();

		stats_to_json(j, &st);
		json_object_object_add(j, "block_size", json_object_new_uint64(o.block_size));
		json_object_object_add(j, "identical", json_object_new_boolean(!differ));
		json_object_object_add(j, "size_a", json_object_new_uint64(sa));
		json_object_object_add(j, "size_b", json_object_new_uint64(sb));
		for (size_t k = 0; k < ranges.n; k++) {
			struct json_object *p = json_object_new_array_ext(2);

			json_object_array_add(p, json_object_new_uint64(ranges.v[k].off));
			json_object_array_add(p, json_object_new_uint64(ranges.v[k].len));
			json_object_array_add(arr, p);
		}
		json_object_object_add(j, "ranges", arr);
		print_json(j);
	} else {
		char b1[32], b2[32];

		for (size_t k = 0; k < ranges.n; k++)
			printf("%" PRIu64 " %" PRIu64 "\n", ranges.v[k].off, ranges.v[k].len);
		if (sa != sb)
			fprintf(stderr, "sizes differ: '%s' has %" PRIu64 " bytes, '%s' %" PRIu64 "\n",
				argv[i], sa, argv[i + 1], sb);
		fprintf(stderr, "%s: %" PRIu64 " blocks differ (%s) of %s compared in %.3f s\n",
			differ ? "differ" : "identical", st.blocks_differing,
			format_bytes(rangelist_bytes(&ranges), b1, sizeof(b1)),
			format_bytes(st.bytes_compared, b2, sizeof(b2)), st.seconds);
	}
	rangelist_release(&ranges);
	if (fflush(stdout) != 0) {
		resync_diff_errorf("cannot write output: %s", strerror(errno));
		return EXIT_ERROR;
	}
	return differ ? 1 : 0;
}

/* hash IMAGE: the root a resync's proof shows for a volume of these
 * bytes (resync/proof.h), so that a copy can be checked offline. */
static int cmd_hash(int argc, char **argv)
{
	static const char usage[] =
		"usage: resync-diff hash [--block-size SIZE] [--hash xxh3|sha256] [--json] IMAGE\n";
	static const struct option longopts[] = {
		{"block-size", required_argument, NULL, 'b'},
		{"hash", required_argument, NULL, 'H'},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	_cleanup_volume_ struct volume *v = NULL;
	struct proof_tree t = {0};
	struct proof_digest root;
	enum proof_hash h = PROOF_HASH_XXH3;
	uint32_t bs = PROOF_BLOCK_DEFAULT;
	char text[PROOF_TEXT_MAX];
	bool json = false;
	int c, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "b:H:jh", longopts, NULL)) != -1) {
		uint64_t x;

		switch (c) {
		case 'b':
			if (parse_size(optarg, &x) < 0 || !resync_block_size_valid(x)) {
				resync_diff_errorf("invalid block size '%s': a power of two from 4K to 1M",
						   optarg);
				return EXIT_USAGE;
			}
			bs = (uint32_t)x;
			break;
		case 'H':
			if (proof_hash_parse(optarg, &h) < 0) {
				resync_diff_errorf("invalid hash '%s': xxh3 or sha256", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'j':
			json = true;
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			fputs(usage, stderr);
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 1) {
		fputs(usage, stderr);
		return EXIT_USAGE;
	}
	r = volume_open(argv[optind], 0, &v);
	if (r < 0)
		return open_error(argv[optind], r);
	r = proof_tree_init(&t, h, bs, volume_size(v));
	if (r >= 0)
		r = proof_tree_update(&t, v, NULL, NULL);
	if (r >= 0)
		r = proof_tree_root(&t, &root);
	proof_tree_release(&t);
	if (r < 0) {
		resync_diff_errorf("cannot hash '%s': %s", argv[optind], strerror(-r));
		return EXIT_ERROR;
	}
	proof_format(h, &root, text, sizeof(text));
	if (json) {
		json_object *o = json_object_new_object();

		json_object_object_add(o, "image", json_object_new_string(argv[optind]));
		json_object_object_add(o, "size", json_object_new_uint64(volume_size(v)));
		json_object_object_add(o, "block_size", json_object_new_uint64(bs));
		json_object_object_add(o, "hash", json_object_new_string(proof_hash_name(h)));
		json_object_object_add(o, "root", json_object_new_string(text));
		puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
		json_object_put(o);
	} else {
		printf("%s  %s\n", text, argv[optind]);
	}
	if (fflush(stdout) != 0) {
		resync_diff_errorf("cannot write output: %s", strerror(errno));
		return EXIT_ERROR;
	}
	return 0;
}

static const struct command {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *help;
} commands[] = {
	{"sync", cmd_sync, "make DST byte-identical to SRC in place, writing only differences"},
	{"compare", cmd_compare, "list the byte ranges where two images differ"},
	{"hash", cmd_hash, "print the proof's root hash of an image (as a resync reports it)"},
	{"signature", cmd_signature, "write a librsync signature of a file (as rdiff)"},
	{"delta", cmd_delta, "write a librsync delta from a signature and a new file (as rdiff)"},
	{"patch", cmd_patch, "apply a librsync delta to a basis file (as rdiff)"},
};

static void usage(FILE *f)
{
	fputs("usage: resync-diff COMMAND [OPTIONS] ARGS...\n\ncommands:\n", f);
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
	fputs("\n'resync-diff COMMAND --help' shows a command's options.\n", f);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	/* rdiff takes options before the command too ("rdiff -b 512
	 * signature ..."): find the command word and hand it the rest, with
	 * the leading options first. */
	for (int k = 1; k < argc; k++) {
		if (argv[k][0] == '-' && strcmp(argv[k], "-"))
			continue;
		for (size_t i = 0; i < ARRAY_SIZE(commands); i++) {
			char *cmd = argv[k];

			if (strcmp(cmd, commands[i].name))
				continue;
			memmove(argv + 2, argv + 1, (size_t)(k - 1) * sizeof(*argv));
			argv[1] = cmd;
			return commands[i].fn(argc - 1, argv + 1);
		}
		/* An option's argument ("-b 512"): keep looking. */
		if (k == 1)
			break;
	}
	resync_diff_errorf("unknown command '%s'", argv[1]);
	usage(stderr);
	return EXIT_USAGE;
}
