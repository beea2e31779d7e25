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
	"                      invalidate OFF LEN, rewrite OFF LEN FILE, status\n"
	"  -o al_extents=N     activity-log extents of fresh metadata (default 256, max 768)\n"
	"  -o al_extent_size=SIZE  bytes per extent (default 4M)\n"
	"  -o threads=N        FUSE worker threads (default 8)\n"
	"  -o io=sync|uring    image I/O backend (default sync)\n"
	"  -o splice           serve reads by splicing from the image\n"
	"  -o writeback        kernel writeback cache (a 'fail' fence cannot refuse\n"
	"                      writes the kernel already accepted)\n"
	"  -o notrack          UNSAFE, benchmarks only: no dirty tracking; the\n"
	"                      bitmap is marked untrusted (next resync: full compare)\n"
	"  -o OTHER            passed to FUSE (allow_other, ...)\n"
	"Signals: SIGTERM, SIGINT, SIGHUP unmount cleanly.\n";

struct args {
	const char *image, *mountpoint, *control;
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

/* Our options out of a -o list; the rest goes to FUSE. */
static int parse_o(struct args *a, char *list)
{
	char *save = NULL;

	for (char *o = strtok_r(list, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
		char *val = strchr(o, '=');
		size_t used;

		if (val)
			*val++ = 0;
		if (!strcmp(o, "block_size") && val) {
			if (parse_u32(o, val, &a->fo.meta.block_size) < 0)
				return -EINVAL;
		} else if (!strcmp(o, "meta") && val) {
			a->fo.meta_path = val;
		} else if (!strcmp(o, "control") && val) {
			a->control = val;
		} else if (!strcmp(o, "al_extents") && val) {
			if (parse_u32(o, val, &a->fo.meta.al_extents) < 0)
				return -EINVAL;
		} else if (!strcmp(o, "al_extent_size") && val) {
			if (parse_u32(o, val, &a->fo.meta.al_extent_size) < 0)
				return -EINVAL;
		} else if (!strcmp(o, "threads") && val) {
			if (parse_u32(o, val, &a->fo.max_threads) < 0)
				return -EINVAL;
		} else if (!strcmp(o, "io") && val) {
			if (!strcmp(val, "sync"))
				a->fo.io = IO_KIND_SYNC;
			else if (!strcmp(val, "uring") || !strcmp(val, "io_uring"))
				a->fo.io = IO_KIND_URING;
			else
				return errorf("invalid io '%s': sync or uring", val);
		} else if (!strcmp(o, "splice") && !val) {
			a->fo.splice_read = true;
		} else if (!strcmp(o, "notrack") && !val) {
			a->fo.no_tracking = true;
		} else if (!strcmp(o, "writeback") && !val) {
			a->fo.writeback = true;
		} else {
			used = strlen(a->fuse_opts);
			if (snprintf(a->fuse_opts + used, sizeof(a->fuse_opts) - used, "%s%s%s%s",
				     used ? "," : "", o, val ? "=" : "", val ? val : "") >=
			    (int)(sizeof(a->fuse_opts) - used))
				return errorf("too many mount options");
		}
	}
	return 0;
}

static int parse_args(int argc, char **argv, struct args *a)
{
	const char *pos[2];
	unsigned npos = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			fputs(usage, stdout);
			exit(0);
		} else if (!strcmp(argv[i], "-f")) {
			a->foreground = true;
		} else if (!strcmp(argv[i], "-o") || !strncmp(argv[i], "-o", 2)) {
			char *list = argv[i][2] ? argv[i] + 2 : (i + 1 < argc ? argv[++i] : NULL);

			if (!list || parse_o(a, list) < 0)
				return -EINVAL;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			return errorf("unknown option '%s'", argv[i]);
		} else if (npos < 2) {
			pos[npos++] = argv[i];
		} else {
			return errorf("too many arguments");
		}
	}
	if (npos != 2)
		return -EINVAL;
	a->image = pos[0];
	a->mountpoint = pos[1];
	return 0;
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

	/* Signals are taken by one thread; every other thread blocks them. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

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
	if (rs < 0)
		errorf("cannot leave clean metadata for '%s': %s", a.image, strerror(-rs));
	fusefs_free(fs);
	return r < 0 || rs < 0 ? 1 : 0;
}
