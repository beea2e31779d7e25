/* The FUSE volume: libfuse3 low-level operations over one file. */
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
#define FUSEFS_VOLUME_INO 2
#define FUSEFS_NAME "volume"
#define FUSEFS_MAX_IO (1u << 20)
/* A write request and its header page fill a 1 MiB pipe (see op_init). */
#define FUSEFS_MAX_WRITE (FUSEFS_MAX_IO - RESYNC_PAGE)
#define FUSEFS_MAX_BACKGROUND 64
#define FUSEFS_TIMEOUT 86400.0 /* the tree never changes; a grown size is invalidated */

extern char **environ;

/* Per worker thread: an I/O context and a bounce buffer for reads. */
struct fusefs_worker {
	struct io_ctx *io;
	void *buf;
};

/* The volume's size: fixed, except that a file volume may be grown to
 * its primary's (fusefs_grow()) while requests run; read atomically. */
static inline uint64_t fusefs_size(const struct fusefs *fs)
{
	return volume_size(fs->vol);
}

static void fusefs_worker_free(void *p)
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
static long long fusefs_write_image(struct fusefs *fs, struct io_ctx *io, const void *buf,
				    size_t size, uint64_t off, bool fenced)
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

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct fusefs *fs = req_fs(req);
	struct fusefs_worker *w;
	long long n;

	fusefs_enter(req, FUSEFS_STAT_WRITES);
	if (size == 0) {
		fuse_reply_write(req, 0);
		return;
	}
	/* Like a block device: nothing past the end, short at the end. */
	if ((uint64_t)off >= fusefs_size(fs)) {
		fuse_reply_err(req, ENOSPC);
		return;
	}
	size = (size_t)MIN((uint64_t)size, fusefs_size(fs) - (uint64_t)off);
	w = fusefs_worker_get(fs);
	if (!w) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = fusefs_write_image(fs, w->io, buf, size, (uint64_t)off, true);
	if (n < 0) {
		fuse_reply_err(req, (int)-n);
		return;
	}
	fuse_reply_write(req, (size_t)n);
}

static void op_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in, off_t off,
			 struct fuse_file_info *fi)
{
	struct fusefs *fs = req_fs(req);
	struct fusefs_worker *w;
	size_t size = fuse_buf_size(in);
	long long n;

	fusefs_enter(req, FUSEFS_STAT_WRITES);
	if (size == 0) {
		fuse_reply_write(req, 0);
		return;
	}
	if ((uint64_t)off >= fusefs_size(fs)) {
		fuse_reply_err(req, ENOSPC);
		return;
	}
	size = (size_t)MIN((uint64_t)size, fusefs_size(fs) - (uint64_t)off);
	if (in->count == 1 && !(in->buf[0].flags & FUSE_BUF_IS_FD)) {
		/* A small request libfuse already read into memory: the
		 * engine's I/O context, as op_write(). */
		w = fusefs_worker_get(fs);
		if (!w) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		n = fusefs_write_image(fs, w->io, (const char *)in->buf[0].mem + in->off, size,
				       (uint64_t)off, true);
	} else {
		/* What is left in the pipe (past the end of the volume, or
		 * after an error) is dropped by libfuse with the pipe. */
		n = fusefs_write_image_bufvec(fs, in, size, (uint64_t)off);
	}
	if (n < 0) {
		fuse_reply_err(req, (int)-n);
		return;
	}
	fuse_reply_write(req, (size_t)n);
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

static const struct fuse_lowlevel_ops fusefs_ops = {
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

/* ---- mount points ---- */

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void mountinfo_unescape(char *s)
{
	char *d = s;

	while (*s) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*d++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
			s += 4;
		} else {
			*d++ = *s++;
		}
	}
	*d = 0;
}

/* Whether the absolute, canonical path is a mount point in our namespace:
 * 1 and the device of the topmost mount there, 0, or -errno. */
static int mountinfo_find(const char *path, dev_t *ret_dev)
{
	_cleanup_free_ char *line = NULL;
	size_t cap = 0;
	FILE *f = fopen("/proc/self/mountinfo", "re");
	int found = 0;

	if (!f)
		return -errno;
	while (getline(&line, &cap, f) > 0) {
		unsigned major, minor;
		char *save = NULL, *mnt;

		/* ID PARENT MAJOR:MINOR ROOT MOUNTPOINT ... */
		if (!strtok_r(line, " ", &save) || !strtok_r(NULL, " ", &save))
			continue;
		mnt = strtok_r(NULL, " ", &save);
		if (!mnt || sscanf(mnt, "%u:%u", &major, &minor) != 2)
			continue;
		if (!strtok_r(NULL, " ", &save))
			continue;
		mnt = strtok_r(NULL, " ", &save);
		if (!mnt)
			continue;
		mountinfo_unescape(mnt);
		if (strcmp(mnt, path))
			continue;
		/* Later lines are mounted later: the last one is on top. */
		found = 1;
		if (ret_dev)
			*ret_dev = makedev(major, minor);
	}
	fclose(f);
	return found;
}

int fusefs_mountpoint_check(const char *mountpoint)
{
	_cleanup_free_ char *path = realpath(mountpoint, NULL);
	_cleanup_free_ char *parent = NULL;
	struct stat st, pst;
	int r;

	if (!path)
		return -errno;
	r = mountinfo_find(path, NULL);
	if (r >= 0)
		return r > 0 ? -EBUSY : 0;
	/* No /proc: a mount point is on another device than its parent
	 * (a bind mount of the same file system goes unseen). */
	if (!strcmp(path, "/"))
		return -EBUSY;
	if (asprintf(&parent, "%s/..", path) < 0) {
		parent = NULL;
		return -ENOMEM;
	}
	if (stat(path, &st) < 0 || stat(parent, &pst) < 0)
		return -errno;
	return st.st_dev != pst.st_dev ? -EBUSY : 0;
}

/* Whether link (a /proc/PID/{cwd,root,fd/N}) points at or under mnt. */
static bool proc_link_under(int dirfd, const char *link, const char *mnt, size_t mnt_len)
{
	char buf[4096];
	ssize_t n = readlinkat(dirfd, link, buf, sizeof(buf) - 1);

	if (n <= 0)
		return false;
	buf[n] = 0;
	return !strncmp(buf, mnt, mnt_len) && (buf[mnt_len] == 0 || buf[mnt_len] == '/' ||
					      !strcmp(mnt, "/"));
}

static bool proc_pid_holds(int piddir, const char *mnt)
{
	size_t len = strlen(mnt);
	struct dirent *de;
	bool held = false;
	DIR *d;
	int fd;

	if (proc_link_under(piddir, "cwd", mnt, len) || proc_link_under(piddir, "root", mnt, len))
		return true;
	fd = openat(piddir, "fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return false;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return false;
	}
	while (!held && (de = readdir(d)))
		held = de->d_name[0] != '.' && proc_link_under(fd, de->d_name, mnt, len);
	closedir(d);
	return held;
}

/* Why the mount is busy, for people: the processes whose working
 * directory, root or open files are on it (those /proc lets us see). */
static void fusefs_busy_why(const struct fusefs *fs, const char *then, char *buf, size_t size)
{
	char first[384] = "";
	unsigned holders = 0;
	struct dirent *de;
	DIR *proc = opendir("/proc");

	while (proc && (de = readdir(proc))) {
		char comm[64] = "?";
		int piddir, fd;
		ssize_t n;

		if (de->d_name[0] < '1' || de->d_name[0] > '9' || atoi(de->d_name) == getpid())
			continue;
		piddir = openat(dirfd(proc), de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (piddir < 0)
			continue;
		if (proc_pid_holds(piddir, fs->mountpoint) && holders++ == 0) {
			fd = openat(piddir, "comm", O_RDONLY | O_CLOEXEC);
			n = fd >= 0 ? read(fd, comm, sizeof(comm) - 1) : -1;
			if (n > 0)
				comm[n - (comm[n - 1] == '\n')] = 0;
			if (fd >= 0)
				close(fd);
			snprintf(first, sizeof(first), "pid %s (%s)", de->d_name, comm);
		}
		close(piddir);
	}
	if (proc)
		closedir(proc);
	if (holders > 1)
		snprintf(buf, size, "'%s' is busy: held by %s and %u more process%s; %s",
			 fs->mountpoint, first, holders - 1, holders > 2 ? "es" : "", then);
	else if (holders)
		snprintf(buf, size, "'%s' is busy: held by %s; %s", fs->mountpoint, first, then);
	else
		snprintf(buf, size,
			 "'%s' is busy (a process has a file open or its working directory on it); %s",
			 fs->mountpoint, then);
}

/* ---- lifecycle ---- */

int fusefs_new(const struct fusefs_opts *opts, struct fusefs **ret)
{
	_cleanup_free_ char *mount_opts = NULL;
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct meta_info info;
	struct fusefs *fs;
	struct stat st;
	int r;

	if (!opts->image || !opts->mountpoint)
		return -EINVAL;
	if (stat(opts->mountpoint, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	/* Before the image is touched: a refused mount changes nothing. */
	r = fusefs_mountpoint_check(opts->mountpoint);
	if (r < 0)
		return r;

	fs = calloc(1, sizeof(*fs));
	if (!fs)
		return -ENOMEM;
	fs->opts = *opts;
	fence_init(&fs->fence);
	flush_init(&fs->flush);
	/* What reached the image before this mount (a previous owner that
	 * stopped uncleanly) is flushed by the first FSYNC all the same. */
	flush_wrote(&fs->flush);
	track_init(&fs->track);
	pthread_mutex_init(&fs->lock, NULL);
	pthread_mutex_init(&fs->io_lock, NULL);
	pthread_cond_init(&fs->cond, NULL);
	fs->control_fd = -1;
	fs->control_stop[0] = fs->control_stop[1] = -1;
	if (pthread_key_create(&fs->worker_key, fusefs_worker_free)) {
		free(fs);
		return -ENOMEM;
	}
	fs->key_created = true;
	fs->mountpoint = realpath(opts->mountpoint, NULL);
	if (!fs->mountpoint) {
		r = -errno;
		goto fail;
	}

	r = volume_open(opts->image, VOLUME_WRITE | VOLUME_LOCK, &fs->vol);
	if (r < 0)
		goto fail;
	r = meta_open(fs->vol, opts->meta_path, META_CREATE, &opts->meta, &fs->meta);
	if (r < 0)
		goto fail;
	if (opts->no_tracking) {
		/* Writes go unmarked from now on: the bitmap says nothing. */
		r = meta_trusted_set(fs->meta, false);
		if (r < 0)
			goto fail;
	}
	meta_info_get(fs->meta, &info);
	fs->block_size = info.block_size;
	r = io_ctx_new(IO_KIND_SYNC, 1, &fs->io);
	if (r < 0)
		goto fail;

	if (asprintf(&mount_opts,
		     "-ofsname=%s,subtype=resyncfs,max_read=%u,default_permissions%s%s",
		     opts->image, FUSEFS_MAX_IO, opts->fuse_options ? "," : "",
		     opts->fuse_options ? opts->fuse_options : "") < 0) {
		r = -ENOMEM;
		goto fail;
	}
	/* fsname may hold commas; FUSE's option parser takes "\," for them. */
	if (fuse_opt_add_arg(&args, "resyncfs") < 0 || fuse_opt_add_arg(&args, mount_opts) < 0) {
		r = -ENOMEM;
		goto fail;
	}
	fs->se = fuse_session_new(&args, &fusefs_ops, sizeof(fusefs_ops), fs);
	fuse_opt_free_args(&args);
	if (!fs->se) {
		r = -EINVAL;
		goto fail;
	}
	if (fuse_session_mount(fs->se, fs->mountpoint) != 0) {
		r = -EIO;
		goto fail;
	}
	fs->mounted = true;
	*ret = fs;
	return 0;
fail:
	fusefs_free(fs);
	return r;
}

/* Worker threads: a loop device at iodepth 16 has 16 requests in flight,
 * and an FSYNC holds its worker for up to two flushes of the image (the
 * running one, then its own): with 8 workers the writes queued behind
 * blocked FSYNCs (bench/README.md, "volume-bench": randwrite-qd16 at
 * 45-64 % of the plain image with 8, 120-126 % with 16, same runs;
 * one run of three said otherwise: see there). */
#define FUSEFS_THREADS_DEFAULT 16

int fusefs_run(struct fusefs *fs)
{
	struct fuse_loop_config *cfg;
	int r;

	cfg = fuse_loop_cfg_create();
	if (!cfg)
		return -ENOMEM;
	pthread_mutex_lock(&fs->lock);
	fs->running = true;
	pthread_mutex_unlock(&fs->lock);
	fuse_loop_cfg_set_clone_fd(cfg, 1);
	fuse_loop_cfg_set_max_threads(cfg, fs->opts.max_threads ? fs->opts.max_threads
							 : FUSEFS_THREADS_DEFAULT);
	r = fuse_session_loop_mt(fs->se, cfg);
	fuse_loop_cfg_destroy(cfg);

	pthread_mutex_lock(&fs->lock);
	fs->loop_done = true;
	fs->loop_error = r < 0 ? r : r > 0 ? -EIO : 0;
	pthread_cond_broadcast(&fs->cond);
	pthread_mutex_unlock(&fs->lock);
	return fs->loop_error;
}

static void *fusefs_thread(void *arg)
{
	fusefs_run(arg);
	return NULL;
}

int fusefs_start(struct fusefs *fs)
{
	int r;

	/* Running from here: a stop that comes before the thread reaches
	 * its loop must unmount too, or the loop, once it starts, waits for
	 * requests forever and the stop's join with it. */
	pthread_mutex_lock(&fs->lock);
	fs->running = true;
	pthread_mutex_unlock(&fs->lock);
	r = pthread_create(&fs->thread, NULL, fusefs_thread, fs);
	if (r) {
		pthread_mutex_lock(&fs->lock);
		fs->running = false;
		pthread_mutex_unlock(&fs->lock);
		return -r;
	}
	fs->thread_started = true;
	return 0;
}

int fusefs_unmount_lazy(const char *mountpoint)
{
	const char *argv[] = {"fusermount3", "-u", "-z", mountpoint, NULL};
	pid_t pid;
	int status, r;

	if (geteuid() == 0)
		return umount2(mountpoint, MNT_DETACH) == 0 ? 0 : -errno;
	r = posix_spawnp(&pid, argv[0], NULL, NULL, (char *const *)argv, environ);
	if (r)
		return -r;
	if (waitpid(pid, &status, 0) < 0)
		return -errno;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

/* fusermount3 with args, quiet: 0 when it exited 0. */
static int fusefs_fusermount(const char *const *argv)
{
	posix_spawn_file_actions_t fa;
	pid_t pid;
	int status, r;

	r = posix_spawn_file_actions_init(&fa);
	if (r)
		return -r;
	/* Its "Device or resource busy" is ours to report, once. */
	r = posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	if (!r)
		r = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (r)
		return -r;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

/* One plain unmount: 0 when gone (or not mounted any more), -EBUSY while
 * busy, -errno. */
static int fusefs_unmount_once(struct fusefs *fs)
{
	const char *argv[] = {"fusermount3", "-u", fs->mountpoint, NULL};
	int r;

	if (geteuid() == 0) {
		if (umount2(fs->mountpoint, UMOUNT_NOFOLLOW) == 0)
			return 0;
		return errno == EINVAL ? 0 : -errno; /* EINVAL: not mounted any more */
	}
	r = fusefs_fusermount(argv);
	if (r >= 0)
		return 0;
	/* fusermount3 says why only in words: still mounted means busy. */
	r = mountinfo_find(fs->mountpoint, NULL);
	return r == 0 ? 0 : -EBUSY;
}

/* Past the limit: detach the mount from the tree and abort its FUSE
 * connection, so that the loop ends now, not when the last holder closes,
 * and no write reaches the image afterwards. */
static int fusefs_detach(struct fusefs *fs)
{
	const char *argv[] = {"fusermount3", "-u", "-z", fs->mountpoint, NULL};
	char path[64];
	dev_t dev = 0;
	bool have_dev = mountinfo_find(fs->mountpoint, &dev) > 0;
	int fd, r;

	if (geteuid() == 0) {
		/* A FUSE file system's umount -f aborts the connection, even
		 * when the unmount itself then fails as busy. */
		if (umount2(fs->mountpoint, MNT_FORCE | UMOUNT_NOFOLLOW) == 0)
			return 0;
		if (umount2(fs->mountpoint, MNT_DETACH | UMOUNT_NOFOLLOW) < 0 && errno != EINVAL)
			return -errno;
		return 0;
	}
	r = fusefs_fusermount(argv);
	if (r < 0)
		return r;
	/* The connection's abort file is its mounter's (fusectl). */
	if (!have_dev)
		return -ENOENT;
	snprintf(path, sizeof(path), "/sys/fs/fuse/connections/%u/abort", minor(dev));
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	r = write(fd, "1", 1) == 1 ? 0 : -errno;
	close(fd);
	return r;
}

int fusefs_unmount(struct fusefs *fs)
{
	unsigned limit = fs->opts.stop_wait_ms ? fs->opts.stop_wait_ms : FUSEFS_STOP_WAIT_MS_DEFAULT;
	uint64_t t0 = (clock_usec() / 1000), waited = 0;
	char why[1024];
	bool told = false;
	int r;

	pthread_mutex_lock(&fs->lock);
	if (fs->unmounting) {
		pthread_mutex_unlock(&fs->lock);
		return 0;
	}
	fs->unmounting = true;
	pthread_mutex_unlock(&fs->lock);

	for (;;) {
		r = fusefs_unmount_once(fs);
		if (r != -EBUSY)
			break;
		waited = (clock_usec() / 1000) - t0;
		if (waited >= limit)
			break;
		if (!told && fs->opts.on_wait) {
			char then[96];

			snprintf(then, sizeof(then), "waiting up to %u.%us for it to be released",
				 limit / 1000, limit % 1000 / 100);
			fusefs_busy_why(fs, then, why, sizeof(why));
			fs->opts.on_wait(fs->opts.on_wait_arg, why, (unsigned)waited, limit);
		}
		told = true;
		usleep(50000);
	}
	if (r == -EBUSY) {
		if (fs->opts.on_wait) {
			fusefs_busy_why(fs,
					"detaching it lazily: its holders' I/O now fails, and the "
					"metadata is left unclean",
					why, sizeof(why));
			fs->opts.on_wait(fs->opts.on_wait_arg, why, (unsigned)waited, limit);
		}
		r = fusefs_detach(fs);
		pthread_mutex_lock(&fs->lock);
		fs->detached = true;
		pthread_mutex_unlock(&fs->lock);
	}
	pthread_mutex_lock(&fs->lock);
	fs->unmounting = false;
	pthread_mutex_unlock(&fs->lock);
	return r;
}

int fusefs_stop(struct fusefs *fs)
{
	bool detached;
	int r;

	if (fs->stopped)
		return fs->stop_result;
	pthread_mutex_lock(&fs->lock);
	if (!fs->loop_done && fs->running) {
		pthread_mutex_unlock(&fs->lock);
		r = fusefs_unmount(fs);
		if (r < 0)
			return r;
		pthread_mutex_lock(&fs->lock);
		while (!fs->loop_done)
			pthread_cond_wait(&fs->cond, &fs->lock);
	}
	pthread_mutex_unlock(&fs->lock);
	if (fs->thread_started) {
		pthread_join(fs->thread, NULL);
		fs->thread_started = false;
	}
	fusefs_control_stop(fs);
	pthread_mutex_lock(&fs->lock);
	detached = fs->detached;
	pthread_mutex_unlock(&fs->lock);
	/* Detached, the path may hold somebody else's mount by now. */
	if (fs->mounted && !detached)
		fuse_session_unmount(fs->se);
	fs->mounted = false;
	if (detached) {
		/* Writers were cut off mid-stream (and, with the writeback
		 * cache, some of what the kernel acknowledged never came):
		 * what reached the image is marked, but the stop was not
		 * clean, and the next owner must not take it as one. */
		r = volume_flush(fs->vol);
		fs->stopped = true;
		fs->stop_result = r < 0 ? r : -EBUSY;
		return fs->stop_result;
	}
	/* No request can arrive now: the image is flushed and the metadata
	 * marked clean. A fence left frozen has nothing to hold. */
	r = meta_mark_clean(fs->meta);
	fs->stopped = true;
	fs->stop_result = r;
	return r;
}

void fusefs_free(struct fusefs *fs)
{
	if (!fs)
		return;
	if (fs->thread_started) {
		fusefs_unmount(fs);
		pthread_join(fs->thread, NULL);
	}
	fusefs_control_stop(fs);
	if (fs->se) {
		if (fs->mounted)
			fuse_session_unmount(fs->se);
		fuse_session_destroy(fs->se);
	}
	meta_free(fs->meta);
	io_ctx_free(fs->io);
	volume_free(fs->vol);
	if (fs->key_created) {
		fusefs_worker_free(pthread_getspecific(fs->worker_key));
		pthread_key_delete(fs->worker_key);
	}
	fence_release(&fs->fence);
	flush_release(&fs->flush);
	track_release(&fs->track);
	pthread_mutex_destroy(&fs->lock);
	pthread_mutex_destroy(&fs->io_lock);
	pthread_cond_destroy(&fs->cond);
	free(fs->mountpoint);
	free(fs);
}

/* ---- fence, invalidation ---- */

int fusefs_fence_freeze(struct fusefs *fs, enum fusefs_fence_mode mode)
{
	if (mode != FUSEFS_FENCE_WAIT && mode != FUSEFS_FENCE_FAIL)
		return -EINVAL;
	fence_freeze(&fs->fence, mode);
	return 0;
}

int fusefs_fence_thaw(struct fusefs *fs)
{
	/* Whatever a resync wrote straight into the image under the freeze
	 * is flushed by the next FSYNC, as writes through the mount are. */
	flush_wrote(&fs->flush);
	fence_thaw(&fs->fence);
	return 0;
}

bool fusefs_fence_frozen(struct fusefs *fs)
{
	return fence_frozen(&fs->fence);
}

unsigned fusefs_fence_waiting(struct fusefs *fs)
{
	return fence_waiting(&fs->fence);
}

int fusefs_track_start(struct fusefs *fs, uint32_t block_size)
{
	return track_start(&fs->track, fusefs_size(fs), block_size);
}

int fusefs_track_swap(struct fusefs *fs, unsigned char **ret_bits, size_t *ret_size)
{
	return track_swap(&fs->track, ret_bits, ret_size);
}

void fusefs_track_stop(struct fusefs *fs)
{
	track_stop(&fs->track);
}

int fusefs_invalidate(struct fusefs *fs, uint64_t off, uint64_t len)
{
	int r;

	if (off > fusefs_size(fs) || len > fusefs_size(fs) - off)
		return -EINVAL;
	if (len == 0)
		return 0;
	r = fuse_lowlevel_notify_inval_inode(fs->se, FUSEFS_VOLUME_INO, (off_t)off, (off_t)len);
	/* -ENOENT: the kernel holds nothing of the file, so nothing is stale. */
	if (r == -ENOENT)
		return 0;
	return r < 0 ? r : 0;
}

int fusefs_grow(struct fusefs *fs, uint64_t size)
{
	bool frozen = fusefs_fence_frozen(fs);
	int r;

	if (size == fusefs_size(fs))
		return 0;
	if (size < fusefs_size(fs))
		return -EINVAL;
	if (volume_is_blockdev(fs->vol))
		return -EFBIG;
	r = meta_resize_check(fs->meta, size);
	if (r < 0)
		return r;
	/* Writes drain and wait: none may land while the metadata is
	 * rebuilt for the new size. */
	if (!frozen) {
		r = fusefs_fence_freeze(fs, FUSEFS_FENCE_WAIT);
		if (r < 0)
			return r;
	}
	r = volume_set_size(fs->vol, size);
	if (r >= 0)
		r = meta_resize(fs->meta);
	if (r >= 0) {
		/* The kernel keeps the file's attributes for a day: drop
		 * them, so that the new size shows at once. */
		if (fs->se)
			(void)fuse_lowlevel_notify_inval_inode(fs->se, FUSEFS_VOLUME_INO, -1, 0);
	}
	if (!frozen)
		fusefs_fence_thaw(fs);
	return r;
}

int fusefs_rewrite(struct fusefs *fs, uint64_t off, const void *buf, uint64_t len)
{
	long long n;

	if (off > fusefs_size(fs) || len > fusefs_size(fs) - off)
		return -EINVAL;
	if (len == 0)
		return 0;
	pthread_mutex_lock(&fs->io_lock);
	n = fusefs_write_image(fs, fs->io, buf, (size_t)len, off, false);
	pthread_mutex_unlock(&fs->io_lock);
	if (n < 0)
		return (int)n;
	return fusefs_invalidate(fs, off, len);
}

struct volume *fusefs_volume(struct fusefs *fs)
{
	return fs->vol;
}

struct meta *fusefs_meta(struct fusefs *fs)
{
	return fs->meta;
}

const char *fusefs_mountpoint(const struct fusefs *fs)
{
	return fs->mountpoint;
}
