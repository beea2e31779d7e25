/* resyncctl: the operator CLI. Commands dispatch from one table; each
 * parses its own options. `info` reads a volume's metadata without any
 * daemon; the daemon's commands join the table as they come. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resync/macro.h"
#include "resync/meta.h"
#include "resync/parse.h"
#include "resync/range.h"
#include "resync/volume.h"
#include "resyncctl.h"

#define EXIT_USAGE 2

DEFINE_FREE_FUNC(struct volume, volume_free)
DEFINE_FREE_FUNC(struct meta, meta_free)

static void errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void errorf(const char *fmt, ...)
{
	va_list ap;

	fputs("resyncctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ---- info ---- */

static const char info_usage[] =
	"usage: resyncctl info --volume IMAGE [--meta PATH] [--json]\n"
	"Print a volume's metadata: size, block size, state, generation, clean\n"
	"flag, whether the bitmap is trusted, and the dirty byte ranges.\n"
	"Works without a daemon, also while the volume is mounted (then the\n"
	"activity log's extents count as dirty).\n";

static int info_print_json(const struct meta_info *mi, const struct rangelist *dirty,
			   uint64_t dirty_bytes)
{
	json_object *o = json_object_new_object(), *ranges = json_object_new_array(),
		    *hist = json_object_new_array();
	char u[40];

	json_object_object_add(o, "size", json_object_new_uint64(mi->volume_size));
	json_object_object_add(o, "block_size", json_object_new_uint64(mi->block_size));
	json_object_object_add(o, "state", json_object_new_string(meta_state_name(mi->state)));
	json_object_object_add(o, "generation",
			       json_object_new_string(meta_uuid_format(&mi->generation, u, sizeof(u))));
	for (unsigned i = 0; i < mi->history_n; i++)
		json_object_array_add(
			hist, json_object_new_string(meta_uuid_format(&mi->history[i], u, sizeof(u))));
	json_object_object_add(o, "history", hist);
	json_object_object_add(o, "node",
			       json_object_new_string(meta_uuid_format(&mi->node, u, sizeof(u))));
	json_object_object_add(o, "clean", json_object_new_boolean(mi->clean));
	json_object_object_add(o, "bitmap_trusted", json_object_new_boolean(mi->bitmap_trusted));
	json_object_object_add(o, "dirty_bytes", json_object_new_uint64(dirty_bytes));
	for (size_t i = 0; i < dirty->n; i++) {
		json_object *r = json_object_new_array();

		json_object_array_add(r, json_object_new_uint64(dirty->v[i].off));
		json_object_array_add(r, json_object_new_uint64(dirty->v[i].len));
		json_object_array_add(ranges, r);
	}
	json_object_object_add(o, "dirty_ranges", ranges);
	if (mi->checkpoint_set) {
		json_object *c = json_object_new_object();

		json_object_object_add(c, "offset", json_object_new_uint64(mi->checkpoint_off));
		json_object_object_add(c, "resync_id",
				       json_object_new_string(
					       meta_uuid_format(&mi->checkpoint_id, u, sizeof(u))));
		json_object_object_add(o, "checkpoint", c);
	} else {
		json_object_object_add(o, "checkpoint", NULL);
	}
	json_object_object_add(o, "activity_log_extents", json_object_new_uint64(mi->al_capacity));
	json_object_object_add(o, "activity_log_extent_size",
			       json_object_new_uint64(mi->al_extent_size));
	puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return 0;
}

static void info_print_text(const char *image, const struct meta_info *mi,
			    const struct rangelist *dirty, uint64_t dirty_bytes)
{
	char b[32], u[40];

	printf("volume:          %s\n", image);
	printf("size:            %" PRIu64 " (%s)\n", mi->volume_size,
	       format_bytes(mi->volume_size, b, sizeof(b)));
	printf("block size:      %" PRIu32 "\n", mi->block_size);
	printf("state:           %s\n", meta_state_name(mi->state));
	printf("generation:      %s\n", meta_uuid_format(&mi->generation, u, sizeof(u)));
	for (unsigned i = 0; i < mi->history_n; i++)
		printf("  earlier:       %s\n", meta_uuid_format(&mi->history[i], u, sizeof(u)));
	printf("node:            %s\n", meta_uuid_format(&mi->node, u, sizeof(u)));
	printf("clean:           %s\n", mi->clean ? "yes" : "no (in use, or stopped uncleanly)");
	printf("bitmap trusted:  %s\n",
	       mi->bitmap_trusted ? "yes" : "no (image changed while unowned: full compare)");
	if (mi->checkpoint_set)
		printf("checkpoint:      %" PRIu64 " of resync %s\n", mi->checkpoint_off,
		       meta_uuid_format(&mi->checkpoint_id, u, sizeof(u)));
	printf("dirty:           %" PRIu64 " bytes (%s) in %zu ranges\n", dirty_bytes,
	       format_bytes(dirty_bytes, b, sizeof(b)), dirty->n);
	for (size_t i = 0; i < dirty->n; i++)
		printf("  %" PRIu64 "+%" PRIu64 "\n", dirty->v[i].off, dirty->v[i].len);
}

static int cmd_info(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"volume", required_argument, NULL, 'v'},
		{"meta", required_argument, NULL, 'm'},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	_cleanup_(volume_freep) struct volume *v = NULL;
	_cleanup_(meta_freep) struct meta *m = NULL;
	struct rangelist dirty = {0};
	const char *image = NULL, *meta_path = NULL;
	struct meta_info mi;
	bool json = false;
	int c, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "v:m:jh", longopts, NULL)) != -1) {
		switch (c) {
		case 'v':
			image = optarg;
			break;
		case 'm':
			meta_path = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 'h':
			fputs(info_usage, stdout);
			return 0;
		default:
			fputs(info_usage, stderr);
			return EXIT_USAGE;
		}
	}
	if (!image || optind != argc) {
		fputs(info_usage, stderr);
		return EXIT_USAGE;
	}
	r = volume_open(image, 0, &v);
	if (r < 0) {
		errorf("cannot open '%s': %s", image, strerror(-r));
		return 1;
	}
	r = meta_open(v, meta_path, META_READONLY, NULL, &m);
	if (r == -ENOENT) {
		errorf("'%s' has no metadata yet (it gets some at its first mount)", image);
		return 1;
	}
	if (r == -EBADMSG) {
		errorf("the metadata of '%s' is damaged (both slots fail their checksums)", image);
		return 1;
	}
	if (r < 0) {
		errorf("cannot read the metadata of '%s': %s", image, strerror(-r));
		return 1;
	}
	meta_info_get(m, &mi);
	r = meta_dirty_ranges(m, &dirty);
	if (r < 0) {
		errorf("out of memory");
		return 1;
	}
	if (json)
		info_print_json(&mi, &dirty, rangelist_bytes(&dirty));
	else
		info_print_text(image, &mi, &dirty, rangelist_bytes(&dirty));
	rangelist_release(&dirty);
	return 0;
}

/* ---- dispatch ---- */

struct command {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *help;
};

static const struct command commands[] = {
	{"info", cmd_info, "print a volume's metadata (no daemon needed)"},
	{"status", resyncctl_status, "show the cluster's nodes, states and generations"},
	{"verify", resyncctl_verify, "compare every secondary with the primary, writing nothing"},
	{"resync", resyncctl_resync, "make every secondary identical to the primary"},
	{"cancel", resyncctl_cancel, "stop a running resync at a checkpoint"},
	{"rollback", resyncctl_rollback, "put back what the last resync overwrote on a node"},
	{"promote", resyncctl_promote, "make a named primary that refused its role act as primary (--force)"},
	{"events", resyncctl_events, "print the daemon's events as they happen"},
	{"pause", resyncctl_pause, "hold the running resync"},
	{"resume", resyncctl_resume, "let a paused resync go on"},
	{"rate", resyncctl_rate, "change the running resync's maximum rate"},
};

static void usage(FILE *f)
{
	fputs("usage: resyncctl COMMAND [OPTIONS]\n\ncommands:\n", f);
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
	fputs("\n'resyncctl COMMAND --help' describes a command.\n", f);
}

int main(int argc, char **argv)
{
	int skip = resyncctl_global_opts(argc, argv);

	if (skip < 0) {
		usage(stderr);
		return EXIT_USAGE;
	}
	argc -= skip;
	argv += skip;
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		if (!strcmp(argv[1], commands[i].name))
			return commands[i].fn(argc - 1, argv + 1);
	errorf("unknown command '%s'", argv[1]);
	usage(stderr);
	return EXIT_USAGE;
}
