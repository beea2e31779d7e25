/* resyncfs IMAGE MOUNTPOINT [-f] [-o OPTIONS]: a volume without a cluster,
 * served as MOUNTPOINT/volume. SIGTERM, SIGINT, SIGHUP and fusermount3 -u
 * unmount cleanly and leave clean metadata. */
#define FUSE_USE_VERSION 312

#include <errno.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "resync/fusefs.h"
#include "resync/macro.h"
#include "resync/parse.h"

#define EXIT_USAGE 2

static const char usage[] =
	"usage: resyncfs IMAGE MOUNTPOINT [-f] [-o OPTION[,OPTION...]]\n"
	"Serve IMAGE as the file MOUNTPOINT/volume, tracking written blocks in\n"
	"IMAGE.resync-meta (see 'resyncctl info --volume IMAGE').\n"
	"\n"
	"  -f                  stay in the foreground\n"
	"  -o block_size=SIZE  block of dirty tracking for fresh metadata (default 64K)\n"
	"  -o meta=PATH        metadata file (default IMAGE.resync-meta)\n"
	"  -o control=PATH     control socket: freeze [wait|fail], thaw,\n"
	"                      invalidate OFF LEN, rewrite OFF LEN FILE, status, stats\n"
	"  -o al_extents=N     activity-log extents of fresh metadata (default 256, max 768)\n"
	"  -o al_extent_size=SIZE  bytes per extent (default 4M)\n"
	"  -o threads=N        FUSE worker threads (default 16)\n"
	"  -o rtprio=N         their real-time priority, SCHED_FIFO 1-99 (default 10;\n"
	"                      0: normal scheduling; kept normal without CAP_SYS_NICE)\n"
	"  -o io=sync|uring    image I/O backend (default sync)\n"
	"  -o splice           serve reads by splicing from the image\n"
	"  -o writeback        kernel writeback cache (a 'fail' fence cannot refuse\n"
	"                      writes the kernel already accepted)\n"
	"  -o notrack          UNSAFE, benchmarks only: no dirty tracking; the\n"
	"                      bitmap is marked untrusted (next resync: full compare)\n"
	"  -o OTHER            passed to FUSE (allow_other, ...)\n"
	"Signals: SIGTERM, SIGINT, SIGHUP unmount cleanly.\n";

struct args {
	const char *image, *mountpoint;
	const char *pos[2]; /* the positional arguments */
	unsigned npos;
	char *meta_path, *control; /* owned */
	bool foreground;
	struct fusefs_opts fo;
	char fuse_opts[1024];
};

static int errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int errorf(const char *fmt, ...)
{
	va_list ap;

	fputs("resyncfs: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return -EINVAL;
}

static int parse_u32(const char *key, const char *val, uint32_t *ret)
{
	uint64_t v;

	if (parse_size(val, &v) < 0 || v > UINT32_MAX)
		return errorf("invalid %s '%s'", key, val);
	*ret = (uint32_t)v;
	return 0;
}

enum {
	KEY_HELP,
	KEY_FOREGROUND,
	KEY_BLOCK_SIZE,
	KEY_META,
	KEY_CONTROL,
	KEY_AL_EXTENTS,
	KEY_AL_EXTENT_SIZE,
	KEY_THREADS,
	KEY_IO,
	KEY_SPLICE,
	KEY_NOTRACK,
	KEY_WRITEBACK,
	KEY_RTPRIO,
};

/* Our options; "key=" templates match only with a value, the others only
 * without one: anything else in a -o list goes to FUSE. */
static const struct fuse_opt resyncfs_opts[] = {
    FUSE_OPT_KEY("-h", KEY_HELP),
    FUSE_OPT_KEY("--help", KEY_HELP),
    FUSE_OPT_KEY("-f", KEY_FOREGROUND),
    FUSE_OPT_KEY("block_size=", KEY_BLOCK_SIZE),
    FUSE_OPT_KEY("meta=", KEY_META),
    FUSE_OPT_KEY("control=", KEY_CONTROL),
    FUSE_OPT_KEY("al_extents=", KEY_AL_EXTENTS),
    FUSE_OPT_KEY("al_extent_size=", KEY_AL_EXTENT_SIZE),
    FUSE_OPT_KEY("threads=", KEY_THREADS),
    FUSE_OPT_KEY("io=", KEY_IO),
    FUSE_OPT_KEY("splice", KEY_SPLICE),
    FUSE_OPT_KEY("notrack", KEY_NOTRACK),
    FUSE_OPT_KEY("writeback", KEY_WRITEBACK),
    FUSE_OPT_KEY("rtprio=", KEY_RTPRIO),
    FUSE_OPT_END,
};

/* An option's value: what follows '=' (the templates above ensure one). */
static const char *opt_value(const char *arg)
{
	return strchr(arg, '=') + 1;
}

/* fuse_opt_parse()'s callback. Returns 0 (taken, not kept in outargs) or
 * -1 (stop: the error is printed). */
static int parse_opt(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct args *a = data;
	const char *val;
	size_t used;

	(void)outargs;
	switch (key) {
	case KEY_HELP:
		fputs(usage, stdout);
		exit(0);
	case KEY_FOREGROUND:
		a->foreground = true;
		return 0;
	case KEY_BLOCK_SIZE:
		return parse_u32("block_size", opt_value(arg), &a->fo.meta.block_size) < 0 ? -1 : 0;
	case KEY_AL_EXTENTS:
		return parse_u32("al_extents", opt_value(arg), &a->fo.meta.al_extents) < 0 ? -1 : 0;
	case KEY_AL_EXTENT_SIZE:
		return parse_u32("al_extent_size", opt_value(arg), &a->fo.meta.al_extent_size) < 0
			   ? -1
			   : 0;
	case KEY_THREADS:
		return parse_u32("threads", opt_value(arg), &a->fo.max_threads) < 0 ? -1 : 0;
	case KEY_META:
	case KEY_CONTROL: {
		/* fuse_opt_parse() frees its copy of the -o list: keep ours. */
		char **slot = key == KEY_META ? &a->meta_path : &a->control;

		free(*slot);
		*slot = strdup(opt_value(arg));
		return *slot ? 0 : (errorf("out of memory"), -1);
	}
	case KEY_IO:
		val = opt_value(arg);
		if (!strcmp(val, "sync"))
			a->fo.io = IO_KIND_SYNC;
		else if (!strcmp(val, "uring") || !strcmp(val, "io_uring"))
			a->fo.io = IO_KIND_URING;
		else
			return errorf("invalid io '%s': sync or uring", val), -1;
		return 0;
	case KEY_SPLICE:
		a->fo.splice_read = true;
		return 0;
	case KEY_NOTRACK:
		a->fo.no_tracking = true;
		return 0;
	case KEY_RTPRIO: {
		uint32_t prio = 0;

		if (parse_u32("rtprio", opt_value(arg), &prio) < 0)
			return -1;
		if (prio > 99)
			return errorf("invalid rtprio '%s': 0 to 99", opt_value(arg)), -1;
		a->fo.rt_priority = prio ? (int)prio : -1;
		return 0;
	}
	case KEY_WRITEBACK:
		a->fo.writeback = true;
		return 0;
	case FUSE_OPT_KEY_NONOPT:
		if (a->npos >= 2)
			return errorf("too many arguments"), -1;
		a->pos[a->npos++] = arg;
		return 0;
	default: /* FUSE_OPT_KEY_OPT: an unknown option, or one for FUSE */
		if (!*arg)
			return 0; /* an empty item of a -o list */
		/* From the command line (an item of a -o list that starts
		 * with '-' is taken as one too); a lone "-" is a path. */
		if (arg[0] == '-' && arg[1])
			return errorf("unknown option '%s'", arg), -1;
		if (arg[0] == '-')
			return parse_opt(data, arg, FUSE_OPT_KEY_NONOPT, outargs);
		used = strlen(a->fuse_opts);
		if (snprintf(a->fuse_opts + used, sizeof(a->fuse_opts) - used, "%s%s",
			     used ? "," : "", arg) >= (int)(sizeof(a->fuse_opts) - used))
			return errorf("too many mount options"), -1;
		return 0;
	}
}

static int parse_args(int argc, char **argv, struct args *a)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	int r = 0;

	/* What libfuse reads otherwise than we always did: a -o without its
	 * list is a usage error (not libfuse's message), and "--" an unknown
	 * option (not the end of the options). */
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-o") && ++i == argc)
			return -EINVAL;
		if (!strcmp(argv[i], "--"))
			return errorf("unknown option '--'");
	}
	if (fuse_opt_parse(&args, a, resyncfs_opts, parse_opt) < 0)
		r = -EINVAL;
	fuse_opt_free_args(&args);
	if (r < 0 || a->npos != 2)
		return -EINVAL;
	a->image = a->pos[0];
	a->mountpoint = a->pos[1];
	a->fo.meta_path = a->meta_path;
	return 0;
}

/* The library does not log: a busy mount's wait is said here. */
static void on_wait(void *arg, const char *why, unsigned waited_ms, unsigned limit_ms)
{
	errorf("%s", why);
}

static void *signal_thread(void *arg)
{
	struct fusefs *fs = arg;
	sigset_t set;
	int sig;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	for (;;) {
		if (sigwait(&set, &sig) != 0)
			continue;
		/* The loop ends when the kernel has written back and let go. */
		fusefs_unmount(fs);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	struct args a = {0};
	struct fusefs *fs = NULL;
	pthread_t sig_thread;
	sigset_t set;
	int r, rs;

	if (parse_args(argc, argv, &a) < 0) {
		fputs(usage, stderr);
		return EXIT_USAGE;
	}
	a.fo.image = a.image;
	a.fo.mountpoint = a.mountpoint;
	a.fo.fuse_options = a.fuse_opts[0] ? a.fuse_opts : NULL;
	a.fo.on_wait = on_wait;

	/* Signals are taken by one thread; every other thread blocks them. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	r = fusefs_mountpoint_check(a.mountpoint);
	if (r == -EBUSY) {
		errorf("'%s' is already a mount point (a volume or another file system is "
		       "mounted there): not mounting on top of it",
		       a.mountpoint);
		return 1;
	}
	r = fusefs_new(&a.fo, &fs);
	if (r == -EBUSY) {
		errorf("'%s' is in use by another writer (resyncfs, resyncd or resync-diff)",
		       a.image);
		return 1;
	}
	if (r < 0) {
		errorf("cannot serve '%s' at '%s': %s", a.image, a.mountpoint, strerror(-r));
		return 1;
	}
	if (fuse_daemonize(a.foreground) < 0) {
		fusefs_free(fs);
		return 1;
	}
	if (a.control) {
		r = fusefs_control_start(fs, a.control);
		if (r == -EADDRINUSE)
			errorf("cannot listen on '%s': another process serves it (a live control "
			       "socket is never replaced)", a.control);
		else if (r < 0)
			errorf("cannot listen on '%s': %s", a.control, strerror(-r));
		if (r < 0) {
			fusefs_unmount(fs);
			fusefs_free(fs);
			return 1;
		}
	}
	r = pthread_create(&sig_thread, NULL, signal_thread, fs);
	if (r) {
		errorf("cannot start: %s", strerror(r));
		fusefs_free(fs);
		return 1;
	}

	r = fusefs_run(fs);
	if (r < 0)
		errorf("serving '%s' failed: %s", a.image, strerror(-r));
	pthread_cancel(sig_thread);
	pthread_join(sig_thread, NULL);
	rs = fusefs_stop(fs);
	if (rs == -EBUSY)
		errorf("'%s' was detached while busy: its metadata is left unclean", a.image);
	else if (rs < 0)
		errorf("cannot leave clean metadata for '%s': %s", a.image, strerror(-rs));
	fusefs_free(fs);
	free(a.meta_path);
	free(a.control);
	return r < 0 || rs < 0 ? 1 : 0;
}
