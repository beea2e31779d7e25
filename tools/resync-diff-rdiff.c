/* resync-diff signature|delta|patch: librsync's rdiff, argument- and
 * format-compatible, over the engine's rdelta module.
 *
 *   signature [BASIS [SIGNATURE]]
 *   delta SIGNATURE [NEWFILE [DELTA]]
 *   patch BASIS [DELTA [NEWFILE]]
 *   patch --inplace BASIS [DELTA]
 *
 * A missing file argument or '-' means standard input or output. Exit codes
 * are rdiff's (librsync's rs_result values): 0 done, 100 I/O error (also a
 * missing input, or an existing output without --force), 101 usage error,
 * 102 out of memory, 103 truncated input, 104 bad magic, 105 not
 * implemented, 106 corrupt input, 107 internal error, 108 bad parameter.
 *
 * Where this differs from rdiff, on purpose:
 *  - An output file is written under a temporary name (an unnamed O_TMPFILE
 *    where the file system has it) and renamed into place only on success,
 *    so a failed run leaves no partial file behind and an existing file
 *    untouched. An existing output that is not a regular file (a device, a
 *    FIFO) is written in place. A replaced file gets a new inode with
 *    default permissions. Standard output is streamed as it is produced.
 *  - Errors are one line on stderr, naming the file and the cause.
 *  - Parameters are checked before any file is opened: a block size above
 *    RDELTA_BLOCK_LEN_MAX or a sum size the hash cannot give is refused
 *    (exit 108) where rdiff would abort or fail after creating its output.
 *  - A delta that copies from past the end of the basis says so (exit 103,
 *    as rdiff's "unexpected end of input").
 *  - Options follow the command (resync-diff dispatches on its first
 *    argument); they may be mixed with the file arguments. Command names
 *    are not abbreviated. -I/-O (buffer sizes) and -v are accepted and
 *    ignored; -s prints the operation statistics but not librsync's hash
 *    table match statistics.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "resync/macro.h"
#include "resync/rdelta.h"

#include "resync-diff.h"

/* rdiff's exit codes: librsync's rs_result values. */
enum rdiff_exit {
	RDIFF_DONE = 0,
	RDIFF_IO_ERROR = 100,
	RDIFF_SYNTAX_ERROR = 101,
	RDIFF_MEM_ERROR = 102,
	RDIFF_INPUT_ENDED = 103,
	RDIFF_BAD_MAGIC = 104,
	RDIFF_UNIMPLEMENTED = 105,
	RDIFF_CORRUPT = 106,
	RDIFF_INTERNAL_ERROR = 107,
	RDIFF_PARAM_ERROR = 108,
};

DEFINE_FREE_FUNC(struct rdelta_signature, rdelta_signature_free)
#define _cleanup_rdelta_signature_ _cleanup_(rdelta_signature_freep)

static int exit_code(int r)
{
	switch (r) {
	case 0:
		return RDIFF_DONE;
	case -ENOMEM:
		return RDIFF_MEM_ERROR;
	case -ENODATA:
	case -ENXIO:
		return RDIFF_INPUT_ENDED;
	case -EBADMSG:
		return RDIFF_BAD_MAGIC;
	case -ENOTSUP:
		return RDIFF_UNIMPLEMENTED;
	case -EILSEQ:
	case -EFBIG:
		return RDIFF_CORRUPT;
	case -ENOTRECOVERABLE:
		return RDIFF_INTERNAL_ERROR;
	case -EINVAL:
		return RDIFF_PARAM_ERROR;
	}
	return RDIFF_IO_ERROR;
}

static bool is_std(const char *path)
{
	return !path || !strcmp(path, "-");
}

static const char *in_name(const char *path)
{
	return is_std(path) ? "standard input" : path;
}

static const char *out_name(const char *path)
{
	return is_std(path) ? "standard output" : path;
}

struct opts {
	struct rdelta_sig_params sig;
	bool force;
	bool stats;
	bool inplace;
};

static const char usage_text[] =
	"usage: resync-diff signature [OPTIONS] [BASIS [SIGNATURE]]\n"
	"       resync-diff delta [OPTIONS] SIGNATURE [NEWFILE [DELTA]]\n"
	"       resync-diff patch [OPTIONS] BASIS [DELTA [NEWFILE]]\n"
	"       resync-diff patch --inplace [OPTIONS] BASIS [DELTA]\n"
	"librsync's rdiff: the same arguments, files and exit codes. A missing\n"
	"file or '-' is standard input or output. An output file appears only\n"
	"when the command succeeds.\n"
	"  -f, --force               overwrite an existing output file\n"
	"  -s, --statistics          print statistics on stderr\n"
	"      --inplace             patch: rewrite BASIS into NEWFILE in place\n"
	"  -H, --hash=ALG            signature hash: blake2 (default), md4\n"
	"  -R, --rollsum=ALG         rolling sum: rabinkarp (default), rollsum\n"
	"  -b, --block-size=BYTES    signature block size, 0 (default) for recommended\n"
	"  -S, --sum-size=BYTES      signature strength, 0 (default) for max, -1 for min\n"
	"  -V, --version             print the version\n"
	"  -h, -?, --help            print this help\n"
	"Exit: 0 done, 100 I/O error or existing output, 101 usage, 103 truncated\n"
	"input, 104 not a signature/delta, 106 corrupt, 108 bad parameter.\n"
	"--inplace needs no second copy of the file; it refuses, before the first\n"
	"write, a delta that does not fit BASIS (103) and a BASIS whose earlier\n"
	"in-place patch was interrupted (100: BASIS.resync-inplace exists).\n";

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("resync-diff: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("; try 'resync-diff signature --help'\n", stderr);
	return RDIFF_SYNTAX_ERROR;
}

/* Parse a whole decimal (or 0x hex) integer, as rdiff's popt does. */
static int parse_long(const char *s, long *ret)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 0);
	if (errno || end == s || *end)
		return -EINVAL;
	*ret = v;
	return 0;
}

/* Returns the index of the first operand, or -(exit code + 1) when the
 * command is over (help shown, or an error reported). */
static int parse_opts(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{"block-size", required_argument, NULL, 'b'},
		{"sum-size", required_argument, NULL, 'S'},
		{"hash", required_argument, NULL, 'H'},
		{"rollsum", required_argument, NULL, 'R'},
		{"force", no_argument, NULL, 'f'},
		{"statistics", no_argument, NULL, 's'},
		{"stats", no_argument, NULL, 's'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{"verbose", no_argument, NULL, 'v'},
		{"input-size", required_argument, NULL, 'I'},
		{"output-size", required_argument, NULL, 'O'},
		{"gzip", optional_argument, NULL, 'z'},
		{"inplace", no_argument, NULL, 'P'},
		{"bzip2", optional_argument, NULL, 'i'},
		{0},
	};
	long block = 0, sum = 0;
	unsigned max;
	int c;

	*o = (struct opts){0};
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":b:S:H:R:fshVvI:O:zi", longopts, NULL)) != -1) {
		long v;

		switch (c) {
		case 'b':
			if (parse_long(optarg, &v) < 0)
				return -1 - usage_error("bad block size '%s': not a number", optarg);
			if (v < 0 || v > RDELTA_BLOCK_LEN_MAX) {
				resync_diff_errorf("invalid block size %ld: 1 to %d bytes, or 0 for the "
				       "recommended size",
				       v, RDELTA_BLOCK_LEN_MAX);
				return -1 - RDIFF_PARAM_ERROR;
			}
			block = v;
			break;
		case 'S':
			if (parse_long(optarg, &v) < 0)
				return -1 - usage_error("bad sum size '%s': not a number", optarg);
			sum = v;
			break;
		case 'H':
			if (!strcmp(optarg, "blake2"))
				o->sig.hash = RDELTA_HASH_BLAKE2;
			else if (!strcmp(optarg, "md4"))
				o->sig.hash = RDELTA_HASH_MD4;
			else
				return -1 - usage_error("unknown hash algorithm '%s' "
							"(blake2 or md4)",
							optarg);
			break;
		case 'R':
			if (!strcmp(optarg, "rabinkarp"))
				o->sig.rollsum = RDELTA_ROLLSUM_RABINKARP;
			else if (!strcmp(optarg, "rollsum"))
				o->sig.rollsum = RDELTA_ROLLSUM_RSYNC;
			else
				return -1 - usage_error("unknown rollsum algorithm '%s' "
							"(rabinkarp or rollsum)",
							optarg);
			break;
		case 'f':
			o->force = true;
			break;
		case 'P':
			o->inplace = true;
			break;
		case 's':
			o->stats = true;
			break;
		case 'h':
			fputs(usage_text, stdout);
			return -1 - RDIFF_DONE;
		case 'V':
			printf("resync-diff (librsync %s)\n", rdelta_librsync_version());
			return -1 - RDIFF_DONE;
		case 'v':
		case 'I':
		case 'O':
			/* Tracing and buffer sizes: accepted, not needed. */
			break;
		case 'z':
		case 'i':
			resync_diff_errorf("compression is not implemented (as in rdiff)");
			return -1 - RDIFF_UNIMPLEMENTED;
		case ':':
			return -1 - usage_error("option '%s' needs a value", argv[optind - 1]);
		default:
			/* rdiff's -? is its help. */
			if (optopt == '?') {
				fputs(usage_text, stdout);
				return -1 - RDIFF_DONE;
			}
			return -1 - usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	max = rdelta_hash_len_max(o->sig.hash);
	if (sum < -1 || sum > (long)max) {
		resync_diff_errorf("invalid sum size %ld: %s sums are 1 to %u bytes (0 for the most, "
		       "-1 for the least that is safe)",
		       sum, o->sig.hash == RDELTA_HASH_MD4 ? "md4" : "blake2", max);
		return -1 - RDIFF_PARAM_ERROR;
	}
	o->sig.block_len = (uint32_t)block;
	o->sig.strong_len = (int32_t)sum;
	return optind;
}

/* An input: standard input, or a file opened read-only. */
static int input_open(const char *path, int *ret_fd)
{
	int fd;

	if (is_std(path)) {
		*ret_fd = STDIN_FILENO;
		return 0;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		resync_diff_errorf("cannot open '%s' for reading: %s", path, strerror(errno));
		return -errno;
	}
	*ret_fd = fd;
	return 0;
}

static void input_close(int fd)
{
	if (fd > STDERR_FILENO)
		close(fd);
}

/* An output: standard output, a device or FIFO written in place, or a
 * regular file written under a temporary name and renamed on success. */
struct output {
	const char *path; /* NULL for standard output */
	char *target;	  /* the file to replace (symlinks resolved) */
	char *dir;	  /* its directory */
	char *tmpname;	  /* a named temporary file, to remove on failure */
	int fd;
	bool replace; /* the target existed (--force) */
	bool anon;    /* fd is an unnamed O_TMPFILE */
};

static void output_release(struct output *o)
{
	if (o->fd > STDERR_FILENO)
		close(o->fd);
	o->fd = -1;
	if (o->tmpname)
		unlink(o->tmpname);
	free(o->tmpname);
	free(o->target);
	free(o->dir);
	*o = (struct output){.fd = -1};
}

static int split_dir(struct output *o)
{
	char *slash = strrchr(o->target, '/');

	if (!slash)
		o->dir = strdup(".");
	else if (slash == o->target)
		o->dir = strdup("/");
	else
		o->dir = strndup(o->target, (size_t)(slash - o->target));
	return o->dir ? 0 : -ENOMEM;
}

/* A free name beside the target for a temporary file. */
static char *temp_name(const struct output *o)
{
	const char *base = strrchr(o->target, '/');
	char *name;

	base = base ? base + 1 : o->target;
	if (asprintf(&name, "%s/.%s.XXXXXX", o->dir, base) < 0)
		return NULL;
	return name;
}

static int output_open(const char *path, bool force, struct output *o)
{
	struct stat st;
	mode_t mask;
	int fd, r;

	*o = (struct output){.fd = -1};
	if (is_std(path)) {
		o->fd = STDOUT_FILENO;
		return 0;
	}
	o->path = path;
	if (lstat(path, &st) == 0) {
		if (!force) {
			resync_diff_errorf("'%s' exists; use --force (-f) to overwrite it", path);
			return -EEXIST;
		}
		o->replace = true;
		if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
			/* A device or FIFO is written in place, as rdiff does. */
			fd = open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
			if (fd < 0) {
				r = -errno;
				resync_diff_errorf("cannot open '%s' for writing: %s", path, strerror(-r));
				return r;
			}
			o->fd = fd;
			return 0;
		}
		/* Replace what a symlink points to, not the link. */
		o->target = realpath(path, NULL);
		if (!o->target && errno != ENOENT) {
			r = -errno;
			resync_diff_errorf("cannot resolve '%s': %s", path, strerror(-r));
			return r;
		}
	}
	if (!o->target)
		o->target = strdup(path);
	if (!o->target || split_dir(o) < 0) {
		resync_diff_errorf("out of memory");
		return -ENOMEM;
	}

	mask = umask(0);
	umask(mask);
	fd = open(o->dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0666 & ~mask);
	if (fd >= 0) {
		o->anon = true;
	} else {
		o->tmpname = temp_name(o);
		if (!o->tmpname) {
			resync_diff_errorf("out of memory");
			return -ENOMEM;
		}
		fd = mkostemp(o->tmpname, O_CLOEXEC);
		if (fd < 0) {
			r = -errno;
			free(o->tmpname);
			o->tmpname = NULL;
			resync_diff_errorf("cannot create a file in '%s' for '%s': %s", o->dir, path,
			       strerror(-r));
			return r;
		}
		(void)fchmod(fd, 0666 & ~mask);
	}
	o->fd = fd;
	return 0;
}

/* Put a finished output in place. */
static int output_commit(struct output *o)
{
	char proc[64];
	int r;

	if (!o->path || (!o->anon && !o->tmpname))
		return 0; /* standard output, or written in place */

	if (o->anon) {
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", o->fd);
		if (!o->replace) {
			/* Fails if somebody created the file meanwhile. */
			if (linkat(AT_FDCWD, proc, AT_FDCWD, o->target, AT_SYMLINK_FOLLOW) < 0)
				goto fail;
			goto done;
		}
		/* linkat cannot replace: link under a free name, rename. */
		for (int tries = 0;; tries++) {
			o->tmpname = temp_name(o);
			if (!o->tmpname) {
				errno = ENOMEM;
				goto fail;
			}
			/* mktemp's name is only a candidate: linkat refuses an
			 * existing one, and we retry. */
			int fd = mkstemp(o->tmpname);
			if (fd < 0)
				goto fail;
			close(fd);
			unlink(o->tmpname);
			if (linkat(AT_FDCWD, proc, AT_FDCWD, o->tmpname, AT_SYMLINK_FOLLOW) == 0)
				break;
			if (errno != EEXIST || tries >= 16)
				goto fail;
			free(o->tmpname);
			o->tmpname = NULL;
		}
	}
	if (o->replace) {
		if (rename(o->tmpname, o->target) < 0)
			goto fail;
	} else if (renameat2(AT_FDCWD, o->tmpname, AT_FDCWD, o->target, RENAME_NOREPLACE) < 0) {
		goto fail;
	}
	free(o->tmpname);
	o->tmpname = NULL;
done:
	r = close(o->fd);
	o->fd = -1;
	if (r < 0) {
		r = -errno;
		resync_diff_errorf("cannot write '%s': %s", o->path, strerror(-r));
		return r;
	}
	return 0;
fail:
	r = -errno;
	if (r == -EEXIST)
		resync_diff_errorf("'%s' appeared while it was being written; use --force (-f) to "
		       "overwrite it",
		       o->path);
	else
		resync_diff_errorf("cannot put '%s' in place: %s", o->path, strerror(-r));
	return r;
}

static int finish_output(struct output *o, int r)
{
	if (r >= 0)
		r = output_commit(o);
	output_release(o);
	return r;
}

static void print_stats(const struct rdelta_stats *st)
{
	double s = st->seconds > 0 ? st->seconds : 1e-6;

	fprintf(stderr, "resync-diff: %s statistics:", st->op ? st->op : "job");
	if (st->lit_cmds)
		fprintf(stderr, " literal[%" PRIu64 " cmds, %" PRIu64 " bytes, %" PRIu64 " cmdbytes]",
			st->lit_cmds, st->lit_bytes, st->lit_cmdbytes);
	if (st->copy_cmds || st->false_matches)
		fprintf(stderr,
			" copy[%" PRIu64 " cmds, %" PRIu64 " bytes, %" PRIu64 " cmdbytes, %" PRIu64
			" false]",
			st->copy_cmds, st->copy_bytes, st->copy_cmdbytes, st->false_matches);
	if (st->sig_blocks)
		fprintf(stderr, " signature[%" PRIu64 " blocks, %" PRIu64 " bytes per block]",
			st->sig_blocks, st->block_len);
	fprintf(stderr, " speed[%.1f MB (%.1f MB/s) in, %.1f MB (%.1f MB/s) out, %.3f sec]\n",
		(double)st->in_bytes / 1e6, (double)st->in_bytes / 1e6 / s,
		(double)st->out_bytes / 1e6, (double)st->out_bytes / 1e6 / s, st->seconds);
}

/* Take up to n optional operands; more is a usage error. */
static int operands(int argc, char **argv, int i, int min, int max, const char **v,
		    const char *usage)
{
	int n = argc - i;

	if (n < min)
		return usage_error("missing arguments: %s", usage);
	if (n > max)
		return usage_error("too many arguments: %s", usage);
	for (int k = 0; k < max; k++)
		v[k] = k < n ? argv[i + k] : NULL;
	return 0;
}

int cmd_signature(int argc, char **argv)
{
	const char *f[2] = {NULL, NULL};
	struct rdelta_stats st = {0};
	struct output out;
	struct opts o;
	int i, in, r;

	i = parse_opts(argc, argv, &o);
	if (i < 0)
		return -1 - i;
	if (o.inplace)
		return usage_error("--inplace is an option of patch");
	r = operands(argc, argv, i, 0, 2, f, "signature [BASIS [SIGNATURE]]");
	if (r)
		return r;

	r = input_open(f[0], &in);
	if (r < 0)
		return RDIFF_IO_ERROR;
	r = output_open(f[1], o.force, &out);
	if (r < 0) {
		input_close(in);
		return RDIFF_IO_ERROR;
	}
	r = rdelta_signature_fd(in, out.fd, &o.sig, &st);
	input_close(in);
	if (r < 0) {
		if (r == -EINVAL)
			resync_diff_errorf("invalid signature parameters for '%s'", in_name(f[0]));
		else
			resync_diff_errorf("signature of '%s' into '%s' failed: %s", in_name(f[0]),
			       out_name(f[1]), strerror(-r));
	}
	r = finish_output(&out, r);
	if (r >= 0 && o.stats)
		print_stats(&st);
	return exit_code(r);
}

static void sig_error(const char *name, int r)
{
	switch (r) {
	case -ENODATA:
		resync_diff_errorf("signature '%s' is truncated (unexpected end of input)", name);
		break;
	case -EBADMSG:
		resync_diff_errorf("'%s' is not a librsync signature (bad magic number)", name);
		break;
	case -EILSEQ:
		resync_diff_errorf("signature '%s' is corrupt: implausible block or sum length", name);
		break;
	case -EFBIG:
		resync_diff_errorf("signature '%s' describes more than %d blocks", name,
		       RDELTA_SIG_BLOCKS_MAX);
		break;
	default:
		resync_diff_errorf("cannot read signature '%s': %s", name, strerror(-r));
	}
}

/* The delta maps NEW: a NEW that shrinks meanwhile (another writer
 * truncating it) raises SIGBUS on the next page read. Say so and leave,
 * as for a failed read: the delta, still an unnamed file, is not kept. */
static char sigbus_msg[512];
static size_t sigbus_len;

static void delta_sigbus(int sig)
{
	(void)sig;
	if (write(STDERR_FILENO, sigbus_msg, sigbus_len) < 0) {
		/* nothing else to say it with */
	}
	_exit(RDIFF_IO_ERROR);
}

static void delta_catch_sigbus(const char *new_name)
{
	struct sigaction sa = {.sa_handler = delta_sigbus};
	int n = snprintf(sigbus_msg, sizeof(sigbus_msg),
			 "resync-diff: '%s' shrank while the delta read it; no delta written\n",
			 new_name);

	sigbus_len = n < 0 ? 0 : MIN((size_t)n, sizeof(sigbus_msg) - 1);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
}

int cmd_delta(int argc, char **argv)
{
	_cleanup_rdelta_signature_ struct rdelta_signature *sig = NULL;
	const char *f[3] = {NULL, NULL, NULL};
	struct rdelta_stats st = {0};
	struct output out;
	struct opts o;
	int i, sig_fd, in, r;

	i = parse_opts(argc, argv, &o);
	if (i < 0)
		return -1 - i;
	if (o.inplace)
		return usage_error("--inplace is an option of patch");
	r = operands(argc, argv, i, 1, 3, f, "delta SIGNATURE [NEWFILE [DELTA]]");
	if (r)
		return r;
	if (is_std(f[0]) && is_std(f[1])) {
		usage_error("the signature and the new file cannot both be standard input");
		return RDIFF_SYNTAX_ERROR;
	}

	/* Open everything first, as rdiff: a missing input or an existing
	 * output fails before any work. */
	if (input_open(f[0], &sig_fd) < 0)
		return RDIFF_IO_ERROR;
	if (input_open(f[1], &in) < 0) {
		input_close(sig_fd);
		return RDIFF_IO_ERROR;
	}
	if (output_open(f[2], o.force, &out) < 0) {
		input_close(sig_fd);
		input_close(in);
		return RDIFF_IO_ERROR;
	}

	r = rdelta_signature_load_fd(sig_fd, &sig, &st);
	input_close(sig_fd);
	if (o.stats)
		print_stats(&st);
	if (r < 0) {
		sig_error(in_name(f[0]), r);
	} else {
		delta_catch_sigbus(in_name(f[1]));
		r = rdelta_delta_fd(sig, in, out.fd, &st);
		if (r < 0)
			resync_diff_errorf("delta of '%s' against '%s' into '%s' failed: %s", in_name(f[1]),
			       f[0], out_name(f[2]), strerror(-r));
	}
	input_close(in);
	r = finish_output(&out, r);
	if (r >= 0 && o.stats)
		print_stats(&st);
	return exit_code(r);
}

static void patch_error(const char *basis, const char *delta, const char *new, int r)
{
	switch (r) {
	case -ENODATA:
		resync_diff_errorf("delta '%s' is truncated (unexpected end of input)", delta);
		break;
	case -EBADMSG:
		resync_diff_errorf("'%s' is not a librsync delta (bad magic number)", delta);
		break;
	case -EILSEQ:
		resync_diff_errorf("delta '%s' is corrupt", delta);
		break;
	case -ENXIO:
		resync_diff_errorf("delta '%s' copies from past the end of '%s': is it the right basis?",
		       delta, basis);
		break;
	case -ESPIPE:
		resync_diff_errorf("basis '%s' must be a seekable file, not a pipe", basis);
		break;
	default:
		resync_diff_errorf("patch of '%s' with '%s' into '%s' failed: %s", basis, delta, new,
		       strerror(-r));
	}
}

static int cmd_patch_inplace(const struct opts *o, int argc, char **argv, int i)
{
	_cleanup_free_ char *journal = NULL;
	const char *f[2] = {NULL, NULL};
	struct rdelta_stats st = {0};
	int delta, r;

	r = operands(argc, argv, i, 1, 2, f, "patch --inplace BASIS [DELTA]");
	if (r)
		return r;
	if (is_std(f[0])) {
		usage_error("--inplace rewrites a file: BASIS cannot be standard input");
		return RDIFF_SYNTAX_ERROR;
	}
	if (input_open(f[1], &delta) < 0)
		return RDIFF_IO_ERROR;
	r = rdelta_patch_inplace(f[0], delta, &st);
	input_close(delta);
	journal = rdelta_inplace_journal(f[0]);
	switch (r) {
	case 0:
		break;
	case -EUCLEAN:
		resync_diff_errorf("an earlier in-place patch of '%s' was interrupted ('%s' exists): "
				   "'%s' is partly rewritten, neither the old file nor the new one; "
				   "restore it from a copy (or rebuild NEWFILE with a plain patch "
				   "from a copy of the old basis), then remove '%s'",
				   f[0], journal ? journal : "?", f[0], journal ? journal : "?");
		return RDIFF_IO_ERROR;
	case -EBUSY:
		resync_diff_errorf("'%s' is in use by another writer (resyncfs, resyncd or "
				   "resync-diff); nothing was written",
				   f[0]);
		return RDIFF_IO_ERROR;
	case -EFBIG:
		resync_diff_errorf("in-place patch of '%s' refused before any write: its copies "
				   "would need more than 1 GiB of staging; use a plain patch",
				   f[0]);
		return RDIFF_IO_ERROR;
	case -ENXIO:
		resync_diff_errorf("delta '%s' copies from past the end of '%s': is it the right "
				   "basis? (nothing was written)",
				   in_name(f[1]), f[0]);
		return RDIFF_INPUT_ENDED;
	default:
		patch_error(f[0], in_name(f[1]), f[0], r);
		if (journal && access(journal, F_OK) == 0)
			resync_diff_errorf("'%s' is partly rewritten ('%s' records it)", f[0],
					   journal);
		return exit_code(r);
	}
	if (o->stats)
		print_stats(&st);
	return RDIFF_DONE;
}

int cmd_patch(int argc, char **argv)
{
	const char *f[3] = {NULL, NULL, NULL};
	struct rdelta_stats st = {0};
	struct output out;
	struct opts o;
	int i, basis, delta, r;

	i = parse_opts(argc, argv, &o);
	if (i < 0)
		return -1 - i;
	if (o.inplace)
		return cmd_patch_inplace(&o, argc, argv, i);
	r = operands(argc, argv, i, 1, 3, f, "patch BASIS [DELTA [NEWFILE]]");
	if (r)
		return r;
	if (is_std(f[0]) && is_std(f[1])) {
		usage_error("the basis and the delta cannot both be standard input");
		return RDIFF_SYNTAX_ERROR;
	}

	if (input_open(f[0], &basis) < 0)
		return RDIFF_IO_ERROR;
	if (input_open(f[1], &delta) < 0) {
		input_close(basis);
		return RDIFF_IO_ERROR;
	}
	if (output_open(f[2], o.force, &out) < 0) {
		input_close(basis);
		input_close(delta);
		return RDIFF_IO_ERROR;
	}
	r = rdelta_patch_fd(basis, delta, out.fd, &st);
	input_close(basis);
	input_close(delta);
	if (r < 0)
		patch_error(in_name(f[0]), in_name(f[1]), out_name(f[2]), r);
	r = finish_output(&out, r);
	if (o.stats)
		print_stats(&st);
	return exit_code(r);
}
