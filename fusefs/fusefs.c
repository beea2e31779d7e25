/* The FUSE volume: libfuse3 low-level operations over one file. Here the
 * lifecycle (new, run, start, stop, free) and what the daemon asks of a
 * running mount (fence, tracking, invalidation, growth, rewrites). The
 * operations are fusefs-ops.c's, the mount point's fusefs-mount.c's. */
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

/* ---- lifecycle ---- */

/* The FUSE session, mounted at fs->mountpoint. Returns 0 or -errno. */
static int fusefs_session_mount(struct fusefs *fs)
{
	const struct fusefs_opts *opts = &fs->opts;
	_cleanup_free_ char *mount_opts = NULL;
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);

	if (asprintf(&mount_opts,
		     "-ofsname=%s,subtype=resyncfs,max_read=%u,default_permissions%s%s",
		     opts->image, FUSEFS_MAX_IO, opts->fuse_options ? "," : "",
		     opts->fuse_options ? opts->fuse_options : "") < 0)
		return -ENOMEM;
	/* fsname may hold commas; FUSE's option parser takes "\," for them. */
	if (fuse_opt_add_arg(&args, "resyncfs") < 0 || fuse_opt_add_arg(&args, mount_opts) < 0) {
		fuse_opt_free_args(&args);
		return -ENOMEM;
	}
	fs->se = fuse_session_new(&args, &fusefs_ops, sizeof(fusefs_ops), fs);
	fuse_opt_free_args(&args);
	if (!fs->se)
		return -EINVAL;
	if (fuse_session_mount(fs->se, fs->mountpoint) != 0)
		return -EIO;
	fs->mounted = true;
	return 0;
}

int fusefs_new(const struct fusefs_opts *opts, struct fusefs **ret)
{
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

	r = fusefs_session_mount(fs);
	if (r < 0)
		goto fail;
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
#define FUSEFS_THREADS_DEFAULT RESYNC_FUSEFS_THREADS_DEFAULT

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
