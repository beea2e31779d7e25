/* The FUSE volume's operations (fusefs-int.h): libfuse3 low-level
 * requests over one file (lookup, getattr, read, write, fsync,
 * fallocate, ...), each worker thread with its own I/O context, writes
 * marked dirty and held by the fence. The table is fusefs_ops. */
#define FUSE_USE_VERSION 312

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <sched.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "resync/clock.h"
#include "resync/fusefs.h"
#include "resync/io.h"
#include "resync/limits.h"
#include "resync/macro.h"
#include "resync/meta.h"
#include "resync/volume.h"
#include "fence.h"
#include "fusefs-int.h"

#define FUSEFS_ROOT_INO FUSE_ROOT_ID
#define FUSEFS_NAME RESYNC_FUSEFS_NAME
/* A write request and its header page fill a 1 MiB pipe (see op_init). */
#define FUSEFS_MAX_WRITE RESYNC_FUSEFS_MAX_WRITE
#define FUSEFS_MAX_BACKGROUND RESYNC_FUSEFS_MAX_BACKGROUND
#define FUSEFS_TIMEOUT RESYNC_FUSEFS_TIMEOUT

/* Per worker thread: an I/O context and a bounce buffer for reads. */
struct fusefs_worker {
	struct io_ctx *io;
	void *buf;
};

void fusefs_worker_free(void *p)
{
	struct fusefs_worker *w = p;

	if (!w)
		return;
	io_ctx_free(w->io);
	free(w->buf);
	free(w);
}

static struct fusefs_worker *fusefs_worker_get(struct fusefs *fs)
{
	struct fusefs_worker *w = pthread_getspecific(fs->worker_key);
	enum io_kind kind = fs->opts.io;

	if (w)
		return w;
	w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	if (kind == IO_KIND_AUTO) {
		/* Plain pwrite beats buffered io_uring for one request at a
		 * time; RESYNC_IO still chooses when set. */
		const char *e = getenv("RESYNC_IO");

		kind = e && *e ? IO_KIND_AUTO : IO_KIND_SYNC;
	}
	if (io_ctx_new(kind, 1, &w->io) < 0 ||
	    posix_memalign(&w->buf, RESYNC_PAGE, FUSEFS_MAX_IO)) {
		fusefs_worker_free(w);
		return NULL;
	}
	pthread_setspecific(fs->worker_key, w);
	return w;
}

static struct fusefs *req_fs(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* Whether this FUSE worker thread has taken its scheduling policy. */
static __thread bool fusefs_thread_ready;

/* At a worker thread's first request: real-time scheduling (see
 * fusefs_opts.rt_priority), so that a request's wake-up does not queue
 * behind the CPU's other tasks. Tried once a thread; a refusal (no
 * CAP_SYS_NICE) leaves it as it is. */
static void fusefs_thread_prepare(struct fusefs *fs)
{
	struct sched_param sp = {0};
	int prio = fs->opts.rt_priority;

	fusefs_thread_ready = true;
	if (prio < 0)
		return;
	sp.sched_priority = prio ? MIN(prio, 99) : FUSEFS_RT_PRIORITY_DEFAULT;
	(void)pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp);
}

/* Every request: count it, and the thread's scheduling at its first. */
static void fusefs_enter(fuse_req_t req, enum fusefs_stat kind)
{
	struct fusefs *fs = req_fs(req);

	if (!fusefs_thread_ready)
		fusefs_thread_prepare(fs);
	atomic_fetch_add_explicit(&fs->stats.n[kind], 1, memory_order_relaxed);
}

static void fusefs_stat(struct fusefs *fs, fuse_ino_t ino, struct stat *st)
{
	struct stat img;

	memset(st, 0, sizeof(*st));
	if (fstat(volume_fd(fs->vol), &img) < 0)
		memset(&img, 0, sizeof(img));
	st->st_ino = ino;
	st->st_uid = img.st_uid;
	st->st_gid = img.st_gid;
	st->st_atim = img.st_atim;
	st->st_mtim = img.st_mtim;
	st->st_ctim = img.st_ctim;
	st->st_blksize = (blksize_t)fs->block_size;
	if (ino == FUSEFS_ROOT_INO) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
	} else {
		st->st_mode = S_IFREG | 0644;
		st->st_nlink = 1;
		st->st_size = (off_t)fusefs_size(fs);
		st->st_blocks = S_ISREG(img.st_mode) ? img.st_blocks : (blkcnt_t)(fusefs_size(fs) / 512);
	}
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct fusefs *fs = userdata;

	/* libfuse receives a request by splicing it into a pipe of max_write
	 * plus one header page, and silently falls back to read() when the
	 * pipe cannot grow that far: past pipe-max-size (1 MiB by default)
	 * that needs CAP_SYS_RESOURCE, which even root lacks in containers.
	 * FUSE_CAP_SPLICE_READ is on by default with op_write_buf. */
	conn->max_write = FUSEFS_MAX_WRITE;
	/* Must match the max_read mount option, or the kernel refuses. */
	conn->max_read = FUSEFS_MAX_IO;
	conn->max_readahead = FUSEFS_MAX_IO;
	/* Direct I/O from a loop device (and any AIO) arrives as background
	 * requests, which the kernel holds back past max_background (12 by
	 * default): let a deep queue through (capped by the kernel's
	 * max_user_bgreq for a mount without CAP_SYS_ADMIN). */
	conn->max_background = FUSEFS_MAX_BACKGROUND;
	conn->congestion_threshold = FUSEFS_MAX_BACKGROUND * 3 / 4;
	/* We invalidate explicitly; mtime changes from our own writes must
	 * not throw the page cache away. */
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
	if (fs->opts.splice_read)
		conn->want |= conn->capable & (FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
	if (fs->opts.writeback && (conn->capable & FUSE_CAP_WRITEBACK_CACHE))
		conn->want |= FUSE_CAP_WRITEBACK_CACHE;
	else
		conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	conn->time_gran = 1;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fusefs *fs = req_fs(req);
	struct fuse_entry_param e;

	fusefs_enter(req, FUSEFS_STAT_OTHERS);
	if (parent != FUSEFS_ROOT_INO || strcmp(name, FUSEFS_NAME)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	memset(&e, 0, sizeof(e));
	e.ino = FUSEFS_VOLUME_INO;
	e.generation = 1;
	e.attr_timeout = FUSEFS_TIMEOUT;
	e.entry_timeout = FUSEFS_TIMEOUT;
	fusefs_stat(fs, FUSEFS_VOLUME_INO, &e.attr);
	fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	fusefs_enter(req, FUSEFS_STAT_OTHERS);
	if (ino != FUSEFS_ROOT_INO && ino != FUSEFS_VOLUME_INO) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	fusefs_stat(req_fs(req), ino, &st);
	fuse_reply_attr(req, &st, FUSEFS_TIMEOUT);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct fusefs *fs = req_fs(req);
	struct stat st;

	fusefs_enter(req, FUSEFS_STAT_OTHERS);
	if (ino != FUSEFS_VOLUME_INO && ino != FUSEFS_ROOT_INO) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	/* The volume's size is fixed: truncating to any other size is not
	 * permitted (EPERM); to its own size is a no-op. */
	if ((to_set & FUSE_SET_ATTR_SIZE) &&
	    (ino != FUSEFS_VOLUME_INO || (uint64_t)attr->st_size != fusefs_size(fs))) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	/* Times are the image's; touching them is accepted and ignored. */
	fusefs_stat(fs, ino, &st);
	fuse_reply_attr(req, &st, FUSEFS_TIMEOUT);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	static const struct {
		const char *name;
		fuse_ino_t ino;
		mode_t mode;
	} ents[] = {
		{".", FUSEFS_ROOT_INO, S_IFDIR},
		{"..", FUSEFS_ROOT_INO, S_IFDIR},
		{FUSEFS_NAME, FUSEFS_VOLUME_INO, S_IFREG},
	};
	char buf[512];
	size_t used = 0;

	fusefs_enter(req, FUSEFS_STAT_OTHERS);
	if (ino != FUSEFS_ROOT_INO) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	size = MIN(size, sizeof(buf));
	for (off_t i = off; i >= 0 && (size_t)i < ARRAY_SIZE(ents); i++) {
		struct stat st = {.st_ino = ents[i].ino, .st_mode = ents[i].mode};
		size_t n = fuse_add_direntry(req, buf + used, size - used, ents[i].name, &st, i + 1);

		if (n > size - used)
			break;
		used += n;
	}
	fuse_reply_buf(req, buf, used);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fusefs_enter(req, FUSEFS_STAT_OTHERS);
	if (ino != FUSEFS_VOLUME_INO) {
		fuse_reply_err(req, ino == FUSEFS_ROOT_INO ? EISDIR : ENOENT);
		return;
	}
	/* The page cache stays valid between opens: nothing changes the
	 * image behind our back without fusefs_invalidate(). */
	fi->keep_cache = 1;
	fuse_reply_open(req, fi);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fusefs *fs = req_fs(req);
	struct fusefs_worker *w;
	long long n;

	fusefs_enter(req, FUSEFS_STAT_READS);
	if ((uint64_t)off >= fusefs_size(fs)) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	size = (size_t)MIN((uint64_t)size, fusefs_size(fs) - (uint64_t)off);
	size = MIN(size, (size_t)FUSEFS_MAX_IO);
	if (fs->opts.splice_read) {
		struct fuse_bufvec bv = FUSE_BUFVEC_INIT(size);

		bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
		bv.buf[0].fd = volume_fd(fs->vol);
		bv.buf[0].pos = off;
		fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_MOVE);
		return;
	}
	w = fusefs_worker_get(fs);
	if (!w) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = io_pread_full(w->io, volume_fd(fs->vol), w->buf, size, (uint64_t)off);
	if (n < 0) {
		fuse_reply_err(req, (int)-n);
		return;
	}
	fuse_reply_buf(req, w->buf, (size_t)n);
}

/* The first half of every write to the image: the fence, then durable
 * marks for [off, off+size). On success the caller writes the bytes and
 * then calls fusefs_write_end(); on failure nothing is held. */
static int fusefs_write_begin(struct fusefs *fs, uint64_t off, size_t size, bool fenced)
{
	int r;

	if (fenced) {
		r = fence_enter(&fs->fence);
		if (r < 0)
			return r;
	}
	r = fs->opts.no_tracking ? 0 : meta_dirty_mark(fs->meta, off, size);
	if (r < 0) {
		if (fenced)
			fence_leave(&fs->fence);
		return r == -EINVAL ? -EINVAL : -EIO;
	}
	return 0;
}

/* The second half: the bytes [off, off+done) are in the image; they are
 * recorded for a resync's next pass now, before the fence is left (see
 * track.h: a mark after the bytes, inside the fence's in-flight window,
 * is what makes a pass's set and the primary's final freeze complete). */
static void fusefs_write_end(struct fusefs *fs, uint64_t off, uint64_t done, bool fenced)
{
	track_mark(&fs->track, off, done);
	flush_wrote(&fs->flush);
	if (fenced)
		fence_leave(&fs->fence);
}

/* Every write from a buffer goes through here: fence, durable marks, then
 * the bytes, then the resync's record. Returns bytes written or -errno. */
long long fusefs_write_image(struct fusefs *fs, struct io_ctx *io, const void *buf, size_t size,
			     uint64_t off, bool fenced)
{
	long long n;
	int r;

	r = fusefs_write_begin(fs, off, size, fenced);
	if (r < 0)
		return r;
	n = io_pwrite_full(io, volume_fd(fs->vol), buf, size, off);
	/* A failed write may have changed some bytes: recorded all the same. */
	fusefs_write_end(fs, off, size, fenced);
	return n;
}

/* A write whose bytes wait in a pipe (FUSE_CAP_SPLICE_READ): fence, durable
 * marks, then the bytes spliced from the pipe into the image, which saves
 * copying them through a buffer of ours. Returns bytes written or -errno. */
static long long fusefs_write_image_bufvec(struct fusefs *fs, struct fuse_bufvec *src,
					   size_t size, uint64_t off)
{
	struct fuse_bufvec dst = FUSE_BUFVEC_INIT(size);
	size_t done = 0;
	ssize_t n;
	int r;

	dst.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	dst.buf[0].fd = volume_fd(fs->vol);
	dst.buf[0].pos = (off_t)off;
	r = fusefs_write_begin(fs, off, size, true);
	if (r < 0)
		return r;
	/* fuse_buf_copy() makes one splice or pwrite per buffer and advances
	 * both vectors by what it moved: loop over short counts and EINTR. */
	while (done < size) {
		n = fuse_buf_copy(&dst, src, FUSE_BUF_SPLICE_MOVE);
		if (n == -EINTR)
			continue;
		if (n < 0) {
			r = (int)n;
			break;
		}
		if (n == 0) {
			r = -EIO; /* the pipe ran dry before the request's size */
			break;
		}
		done += (size_t)n;
	}
	fusefs_write_end(fs, off, size, true);
	if (r < 0 && done == 0)
		return r;
	return (long long)done;
}

/* Clips a write of *size bytes at off to the volume like a block device
 * (nothing past the end, short at the end). Returns false when it has
 * already replied: an empty write, or one past the end. */
static bool write_clip(fuse_req_t req, struct fusefs *fs, off_t off, size_t *size)
{
	if (*size == 0) {
		fuse_reply_write(req, 0);
		return false;
	}
	if ((uint64_t)off >= fusefs_size(fs)) {
		fuse_reply_err(req, ENOSPC);
		return false;
	}
	*size = (size_t)MIN((uint64_t)*size, fusefs_size(fs) - (uint64_t)off);
	return true;
}

/* The write's reply: its byte count, or its error. */
static void write_reply(fuse_req_t req, long long n)
{
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		fuse_reply_write(req, (size_t)n);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct fusefs *fs = req_fs(req);
	struct fusefs_worker *w;

	fusefs_enter(req, FUSEFS_STAT_WRITES);
	if (!write_clip(req, fs, off, &size))
		return;
	w = fusefs_worker_get(fs);
	if (!w) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	write_reply(req, fusefs_write_image(fs, w->io, buf, size, (uint64_t)off, true));
}

static void op_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in, off_t off,
			 struct fuse_file_info *fi)
{
	struct fusefs *fs = req_fs(req);
	struct fusefs_worker *w;
	size_t size = fuse_buf_size(in);

	fusefs_enter(req, FUSEFS_STAT_WRITES);
	if (!write_clip(req, fs, off, &size))
		return;
	if (in->count == 1 && !(in->buf[0].flags & FUSE_BUF_IS_FD)) {
		/* A small request libfuse already read into memory: the
		 * engine's I/O context, as op_write(). */
		w = fusefs_worker_get(fs);
		if (!w) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		write_reply(req, fusefs_write_image(fs, w->io, (const char *)in->buf[0].mem + in->off,
						    size, (uint64_t)off, true));
		return;
	}
	/* What is left in the pipe (past the end of the volume, or after an
	 * error) is dropped by libfuse with the pipe. */
	write_reply(req, fusefs_write_image_bufvec(fs, in, size, (uint64_t)off));
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fusefs_enter(req, FUSEFS_STAT_FLUSHES);
	fuse_reply_err(req, 0);
}

static int fusefs_flush_image(void *arg)
{
	struct fusefs *fs = arg;

	return volume_flush(fs->vol);
}

/* Durable once every write acknowledged before it is: one flush of the
 * image, unless one that started after those writes already succeeded
 * (a FLUSH, a second FSYNC) or is running for several FSYNCs at once
 * (flush.h). */
static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct fusefs *fs = req_fs(req);
	int r;

	fusefs_enter(req, FUSEFS_STAT_FSYNCS);
	r = flush_sync(&fs->flush, fusefs_flush_image, fs);
	fuse_reply_err(req, r < 0 ? -r : 0);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
			 struct fuse_file_info *fi)
{
	struct fusefs *fs = req_fs(req);
	uint64_t end;
	int r;

	fusefs_enter(req, FUSEFS_STAT_OTHERS);
	if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	if (off < 0 || len <= 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	end = (uint64_t)off + (uint64_t)len;
	if (end > fusefs_size(fs)) {
		/* Growing is not permitted; KEEP_SIZE requests are clipped. */
		if (!(mode & FALLOC_FL_KEEP_SIZE)) {
			fuse_reply_err(req, EFBIG);
			return;
		}
		if ((uint64_t)off >= fusefs_size(fs)) {
			fuse_reply_err(req, 0);
			return;
		}
		end = fusefs_size(fs);
	}
	if (!(mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))) {
		/* Allocation changes no byte: no mark, no fence. */
		r = fallocate(volume_fd(fs->vol), FALLOC_FL_KEEP_SIZE, off, (off_t)(end - (uint64_t)off));
		fuse_reply_err(req, r < 0 ? errno : 0);
		return;
	}
	r = fence_enter(&fs->fence);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	r = meta_dirty_mark(fs->meta, (uint64_t)off, end - (uint64_t)off);
	if (r < 0)
		r = -EIO;
	else if (fallocate(volume_fd(fs->vol), mode | FALLOC_FL_KEEP_SIZE, off,
			   (off_t)(end - (uint64_t)off)) < 0)
		r = -errno;
	fusefs_write_end(fs, (uint64_t)off, end - (uint64_t)off, true);
	fuse_reply_err(req, r < 0 ? -r : 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct fusefs *fs = req_fs(req);
	struct statvfs sv = {
		.f_bsize = fs->block_size,
		.f_frsize = fs->block_size,
		.f_blocks = DIV_ROUND_UP(fusefs_size(fs), fs->block_size),
		.f_files = 2,
		.f_namemax = 255,
	};

	fusefs_enter(req, FUSEFS_STAT_OTHERS);
	fuse_reply_statfs(req, &sv);
}

const struct fuse_lowlevel_ops fusefs_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.readdir = op_readdir,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	.write_buf = op_write_buf,
	.flush = op_flush,
	.fsync = op_fsync,
	.fallocate = op_fallocate,
	.statfs = op_statfs,
};
