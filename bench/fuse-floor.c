/* fuse-floor IMAGE MOUNTPOINT [--null] [--threads N] [--rtprio N]
 *             [--no-splice-read] [--direct-read]
 *
 * The floor under resyncfs, for bench/volume-bench: the least a FUSE
 * server can do to serve IMAGE as MOUNTPOINT/volume, set up exactly as
 * resyncfs sets up its session (fusefs/fusefs.c: the mount options, the
 * init callback's max_read/max_write/max_readahead/max_background and
 * capabilities, the entry and attribute timeouts, keep_cache, the
 * multi-threaded loop with clone_fd and 16 workers, the workers' SCHED_FIFO
 * priority at their first request), but with nothing of the volume's own
 * work: READ is a pread of the image, WRITE a pwrite (or a splice from the
 * request's pipe, as resyncfs), FSYNC one fdatasync, FLUSH nothing; no
 * marks, no fence, no flush bookkeeping, no counters.
 *
 * --null: no I/O (READ copies from memory, WRITE copies into memory, FSYNC
 * returns at once): what one FUSE round trip costs on this machine and
 * little else. The memory is a private copy-on-write map of IMAGE, so that
 * a file system on the volume still reads what it wrote (a server that
 * replied zeros could not hold ext4), populated at the start (so that no
 * request faults the image in); nothing reaches IMAGE. --no-splice-read: requests are read(), never spliced (an
 * experiment: resyncfs lets libfuse splice every request into a pipe).
 * --direct-read: page-aligned READs pread an O_DIRECT descriptor of IMAGE
 * (an experiment: cold reads as the plain loop device's, no page cache).
 *
 * Serves in the foreground until unmounted (umount, fusermount3 -u) or
 * until SIGTERM/SIGINT/SIGHUP. Exit 0, 1 on failure, 2 on usage errors. */
#define FUSE_USE_VERSION 312

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <getopt.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "resync/fusefs-session.h"

/* resyncfs's session, from its own header. */
#define FLOOR_VOLUME_INO RESYNC_FUSEFS_VOLUME_INO
#define FLOOR_PAGE 4096u
#define FLOOR_NAME RESYNC_FUSEFS_NAME
#define FLOOR_MAX_IO RESYNC_FUSEFS_MAX_IO
#define FLOOR_MAX_WRITE RESYNC_FUSEFS_MAX_WRITE
#define FLOOR_MAX_BACKGROUND RESYNC_FUSEFS_MAX_BACKGROUND
#define FLOOR_TIMEOUT RESYNC_FUSEFS_TIMEOUT
#define FLOOR_THREADS RESYNC_FUSEFS_THREADS_DEFAULT
#define FLOOR_RTPRIO 10

#define EXIT_USAGE 2

struct floor {
	int fd;		 /* the image */
	uint64_t size;	 /* its size, fixed */
	bool null;	 /* no I/O */
	bool splice_read; /* let libfuse splice requests (write_buf) */
	int rtprio;	 /* 0: normal scheduling */
	char *map;	 /* --null: IMAGE mapped MAP_PRIVATE */
	int dfd;	 /* --direct-read: IMAGE opened O_DIRECT, else -1 */
};

static const char usage[] =
	"usage: fuse-floor IMAGE MOUNTPOINT [--null] [--threads N] [--rtprio N] [--no-splice-read]\n"
	"                  [--direct-read]\n"
	"Serve IMAGE as MOUNTPOINT/volume with nothing but pread, pwrite and fdatasync,\n"
	"set up as resyncfs is (a floor for bench/volume-bench).\n"
	"  --null            no I/O: reads and writes copy from and to a private map of\n"
	"                    IMAGE (never written back), fsync returns at once\n"
	"  --threads N       FUSE worker threads (default 16, as resyncfs)\n"
	"  --rtprio N        their SCHED_FIFO priority (default 10, as resyncfs; 0: normal)\n"
	"  --no-splice-read  read() every request instead of splicing it into a pipe\n"
	"  --direct-read     page-aligned reads with O_DIRECT (no page cache of IMAGE)\n";

static struct floor *req_floor(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* resyncfs's workers take SCHED_FIFO at their first request: so do ours. */
static __thread bool floor_thread_ready;

static void floor_enter(fuse_req_t req)
{
	struct floor *f = req_floor(req);
	struct sched_param sp = {.sched_priority = f->rtprio};

	if (floor_thread_ready)
		return;
	floor_thread_ready = true;
	if (f->rtprio > 0)
		(void)pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp);
}

static void floor_stat(const struct floor *f, fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	if (ino == FUSE_ROOT_ID) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
	} else {
		st->st_mode = S_IFREG | 0644;
		st->st_nlink = 1;
		st->st_size = (off_t)f->size;
		st->st_blocks = (blkcnt_t)(f->size / 512);
	}
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct floor *f = userdata;

	conn->max_write = FLOOR_MAX_WRITE;
	conn->max_read = FLOOR_MAX_IO;
	conn->max_readahead = FLOOR_MAX_IO;
	conn->max_background = FLOOR_MAX_BACKGROUND;
	conn->congestion_threshold = FLOOR_MAX_BACKGROUND * 3 / 4;
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	if (!f->splice_read)
		conn->want &= ~FUSE_CAP_SPLICE_READ;
	conn->time_gran = 1;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e = {0};

	floor_enter(req);
	if (parent != FUSE_ROOT_ID || strcmp(name, FLOOR_NAME)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	e.ino = FLOOR_VOLUME_INO;
	e.generation = 1;
	e.attr_timeout = FLOOR_TIMEOUT;
	e.entry_timeout = FLOOR_TIMEOUT;
	floor_stat(req_floor(req), FLOOR_VOLUME_INO, &e.attr);
	fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	floor_enter(req);
	if (ino != FUSE_ROOT_ID && ino != FLOOR_VOLUME_INO) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	floor_stat(req_floor(req), ino, &st);
	fuse_reply_attr(req, &st, FLOOR_TIMEOUT);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	floor_enter(req);
	if (ino != FLOOR_VOLUME_INO) {
		fuse_reply_err(req, ino == FUSE_ROOT_ID ? EISDIR : ENOENT);
		return;
	}
	fi->keep_cache = 1;
	fuse_reply_open(req, fi);
}

/* A worker's read buffer, allocated at its first read and freed when the
 * worker ends (libfuse's loop ends its threads; the key's destructor runs
 * for each). */
static pthread_key_t floor_buf_key;

static void *floor_buf_get(void)
{
	void *buf = pthread_getspecific(floor_buf_key);

	if (buf)
		return buf;
	if (posix_memalign(&buf, FLOOR_PAGE, FLOOR_MAX_IO))
		return NULL;
	if (pthread_setspecific(floor_buf_key, buf)) {
		free(buf);
		return NULL;
	}
	return buf;
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct floor *f = req_floor(req);
	size_t done = 0;
	int fd = f->fd;
	char *buf;
	ssize_t n;

	(void)ino;
	(void)fi;
	floor_enter(req);
	if (off < 0 || (uint64_t)off >= f->size) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	if (size > f->size - (uint64_t)off)
		size = (size_t)(f->size - (uint64_t)off);
	if (size > FLOOR_MAX_IO)
		size = FLOOR_MAX_IO;
	if (f->null) {
		fuse_reply_buf(req, f->map + off, size);
		return;
	}
	/* --direct-read: page-aligned reads bypass the image's page cache,
	 * as the plain loop device's do (writes stay buffered: an O_DIRECT
	 * read writes back what the page cache holds dirty in its range). */
	if (f->dfd >= 0 && !(off % FLOOR_PAGE) && !(size % FLOOR_PAGE))
		fd = f->dfd;
	buf = floor_buf_get();
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	while (done < size) {
		n = pread(fd, buf + done, size - done, off + (off_t)done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fuse_reply_err(req, errno);
			return;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	fuse_reply_buf(req, buf, done);
}

/* Bytes from a buffer into the image: the count written, or -errno. */
static ssize_t floor_pwrite(const struct floor *f, const char *buf, size_t size, off_t off)
{
	size_t done = 0;
	ssize_t n;

	while (done < size) {
		n = pwrite(f->fd, buf + done, size - done, off + (off_t)done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return done ? (ssize_t)done : -errno;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

/* Bytes from a buffer into the image, or into the map with --null. */
static ssize_t floor_write_mem(const struct floor *f, const char *buf, size_t size, off_t off)
{
	if (f->null) {
		memcpy(f->map + off, buf, size);
		return (ssize_t)size;
	}
	return floor_pwrite(f, buf, size, off);
}

/* Bytes waiting in the request's pipe into the image (or the private map
 * with --null), as resyncfs splices them: the count moved, or -errno. */
static ssize_t floor_splice(const struct floor *f, struct fuse_bufvec *src, size_t size,
			    off_t off)
{
	struct fuse_bufvec dst = FUSE_BUFVEC_INIT(size);
	size_t done = 0;
	ssize_t n;

	if (f->null) {
		dst.buf[0].mem = f->map + off;
	} else {
		dst.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
		dst.buf[0].fd = f->fd;
		dst.buf[0].pos = off;
	}
	while (done < size) {
		n = fuse_buf_copy(&dst, src, FUSE_BUF_SPLICE_MOVE);
		if (n == -EINTR)
			continue;
		if (n < 0)
			return done ? (ssize_t)done : n;
		if (n == 0)
			return done ? (ssize_t)done : -EIO;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

/* The request's size, clipped to the image; 0 and ENOSPC past its end. */
static size_t floor_clip(const struct floor *f, size_t size, off_t off, int *ret_err)
{
	*ret_err = 0;
	if (off < 0 || (uint64_t)off >= f->size) {
		*ret_err = off < 0 ? EINVAL : ENOSPC;
		return 0;
	}
	if (size > f->size - (uint64_t)off)
		size = (size_t)(f->size - (uint64_t)off);
	return size;
}

static void floor_reply_write(fuse_req_t req, ssize_t n)
{
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		fuse_reply_write(req, (size_t)n);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct floor *f = req_floor(req);
	int err = 0;

	(void)ino;
	(void)fi;
	floor_enter(req);
	size = size ? floor_clip(f, size, off, &err) : 0;
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	floor_reply_write(req, floor_write_mem(f, buf, size, off));
}

static void op_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in, off_t off,
			 struct fuse_file_info *fi)
{
	struct floor *f = req_floor(req);
	size_t size = fuse_buf_size(in);
	int err = 0;

	(void)ino;
	(void)fi;
	floor_enter(req);
	size = size ? floor_clip(f, size, off, &err) : 0;
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	if (!size) {
		fuse_reply_write(req, 0);
		return;
	}
	if (in->count == 1 && !(in->buf[0].flags & FUSE_BUF_IS_FD)) {
		/* A small request libfuse already read into memory. */
		floor_reply_write(req, floor_write_mem(f, (const char *)in->buf[0].mem + in->off,
						       size, off));
		return;
	}
	floor_reply_write(req, floor_splice(f, in, size, off));
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	floor_enter(req);
	fuse_reply_err(req, 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct floor *f = req_floor(req);

	(void)ino;
	(void)datasync;
	(void)fi;
	floor_enter(req);
	if (f->null) {
		fuse_reply_err(req, 0);
		return;
	}
	fuse_reply_err(req, fdatasync(f->fd) < 0 ? errno : 0);
}

static const struct fuse_lowlevel_ops floor_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.getattr = op_getattr,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	.write_buf = op_write_buf,
	.flush = op_flush,
	.fsync = op_fsync,
};

/* Without write_buf libfuse never splices a request in (it turns
 * FUSE_CAP_SPLICE_READ on by default only for a write_buf). */
static const struct fuse_lowlevel_ops floor_ops_nosplice = {
	.init = op_init,
	.lookup = op_lookup,
	.getattr = op_getattr,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	.flush = op_flush,
	.fsync = op_fsync,
};

/* Parses argv into f, the image and the mount point; -EINVAL on a usage
 * error (printed). */
static int floor_parse(int argc, char **argv, struct floor *f, unsigned *ret_threads,
		       const char **ret_image, const char **ret_mnt)
{
	static const struct option longopts[] = {
		{"null", no_argument, NULL, 'n'},
		{"threads", required_argument, NULL, 't'},
		{"rtprio", required_argument, NULL, 'r'},
		{"no-splice-read", no_argument, NULL, 's'},
		{"direct-read", no_argument, NULL, 'd'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	char *end;
	long v;
	int c;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			f->null = true;
			break;
		case 's':
			f->splice_read = false;
			break;
		case 'd':
			f->dfd = 0; /* opened in main() */
			break;
		case 't':
		case 'r':
			errno = 0;
			v = strtol(optarg, &end, 10);
			if (errno || *end || end == optarg || v < (c == 't' ? 1 : 0) ||
			    v > (c == 't' ? 256 : 99)) {
				fprintf(stderr, "fuse-floor: invalid %s '%s'\n",
					c == 't' ? "threads" : "rtprio", optarg);
				return -EINVAL;
			}
			if (c == 't')
				*ret_threads = (unsigned)v;
			else
				f->rtprio = (int)v;
			break;
		case 'h':
			fputs(usage, stdout);
			exit(0);
		default:
			return -EINVAL;
		}
	}
	if (argc - optind != 2)
		return -EINVAL;
	*ret_image = argv[optind];
	*ret_mnt = argv[optind + 1];
	return 0;
}

/* Serves until unmounted: 0, or 1 on failure (printed). */
static int floor_serve(struct floor *f, const char *image, const char *mnt, unsigned threads)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_loop_config *cfg = NULL;
	struct fuse_session *se;
	char opts[4200];
	int r = 1;

	/* As resyncfs: fsname (commas escaped by nobody: the benchmark's
	 * paths have none), max_read, default_permissions. */
	if (snprintf(opts, sizeof(opts), "-ofsname=%s,subtype=fuse-floor,max_read=%u,default_permissions",
		     image, FLOOR_MAX_IO) >= (int)sizeof(opts) ||
	    fuse_opt_add_arg(&args, "fuse-floor") < 0 || fuse_opt_add_arg(&args, opts) < 0) {
		fprintf(stderr, "fuse-floor: options too long\n");
		fuse_opt_free_args(&args);
		return 1;
	}
	se = fuse_session_new(&args, f->splice_read ? &floor_ops : &floor_ops_nosplice,
			      sizeof(floor_ops), f);
	fuse_opt_free_args(&args);
	if (!se)
		return 1;
	if (fuse_set_signal_handlers(se) != 0)
		goto out;
	if (fuse_session_mount(se, mnt) != 0)
		goto out_signals;
	cfg = fuse_loop_cfg_create();
	if (cfg) {
		fuse_loop_cfg_set_clone_fd(cfg, 1);
		fuse_loop_cfg_set_max_threads(cfg, threads);
		r = fuse_session_loop_mt(se, cfg) != 0;
		fuse_loop_cfg_destroy(cfg);
	}
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out:
	fuse_session_destroy(se);
	return r;
}

int main(int argc, char **argv)
{
	struct floor f = {.fd = -1, .dfd = -1, .splice_read = true, .rtprio = FLOOR_RTPRIO};
	unsigned threads = FLOOR_THREADS;
	const char *image, *mnt;
	struct stat st;
	int r;

	if (floor_parse(argc, argv, &f, &threads, &image, &mnt) < 0) {
		fputs(usage, stderr);
		return EXIT_USAGE;
	}
	f.fd = open(image, O_RDWR | O_CLOEXEC);
	if (f.fd < 0 || fstat(f.fd, &st) < 0) {
		fprintf(stderr, "fuse-floor: cannot open '%s': %s\n", image, strerror(errno));
		return 1;
	}
	if (!S_ISREG(st.st_mode)) {
		fprintf(stderr, "fuse-floor: '%s' is not a regular file\n", image);
		return 1;
	}
	f.size = (uint64_t)st.st_size;
	if (f.dfd == 0) {
		f.dfd = open(image, O_RDONLY | O_DIRECT | O_CLOEXEC);
		if (f.dfd < 0) {
			fprintf(stderr, "fuse-floor: cannot open '%s' O_DIRECT: %s\n", image,
				strerror(errno));
			return 1;
		}
	}
	if (f.null) {
		/* Populated now: a cold read must not fault the image in. */
		void *m = mmap(NULL, f.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_POPULATE,
			       f.fd, 0);

		if (m == MAP_FAILED) {
			fprintf(stderr, "fuse-floor: cannot map '%s': %s\n", image, strerror(errno));
			return 1;
		}
		f.map = m;
	}
	if (pthread_key_create(&floor_buf_key, free)) {
		fprintf(stderr, "fuse-floor: out of memory\n");
		return 1;
	}
	r = floor_serve(&f, image, mnt, threads);
	/* This thread served too (libfuse's loop runs in it). */
	free(pthread_getspecific(floor_buf_key));
	pthread_key_delete(floor_buf_key);
	/* What the page cache holds of the image is written before the exit
	 * (resyncfs flushes at its stop, too). */
	if (!f.null && fdatasync(f.fd) < 0) {
		fprintf(stderr, "fuse-floor: cannot flush '%s': %s\n", image, strerror(errno));
		r = 1;
	}
	if (f.map)
		munmap(f.map, f.size);
	if (f.dfd >= 0)
		close(f.dfd);
	close(f.fd);
	return r;
}
