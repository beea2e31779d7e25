#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "resync/io.h"
#include "resync/macro.h"
#include "resync/volume.h"

struct volume {
	int fd;
	bool blockdev;
	bool writable;
	uint64_t size;
	dev_t dev;
	ino_t ino;
	dev_t rdev;
	char *path;
	/* volume_map_hold()'s mapping, its length and holders. */
	pthread_mutex_t map_lock;
	const unsigned char *map;
	uint64_t map_len;
	unsigned map_holds;
};

int volume_open(const char *path, unsigned flags, struct volume **ret)
{
	_cleanup_close_ int fd = -1;
	struct volume *v;
	struct stat st;
	/* O_NONBLOCK so that opening a FIFO does not wait for a peer: it is
	 * refused below like any other non-file. Cleared once the type is
	 * known. */
	int oflags = O_CLOEXEC | O_NOCTTY | O_NONBLOCK, fl;

	if (flags & VOLUME_CREATE)
		flags |= VOLUME_WRITE;
	oflags |= (flags & VOLUME_WRITE) ? O_RDWR : O_RDONLY;
	if (flags & VOLUME_CREATE)
		oflags |= O_CREAT;

	fd = open(path, oflags, 0644);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (S_ISDIR(st.st_mode))
		return -EISDIR;
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
		return -EINVAL;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
		return -errno;

	if (flags & VOLUME_LOCK) {
		/* One writer per volume: resyncfs, resyncd and resync-diff
		 * all take this lock before writing. */
		if (flock(fd, LOCK_EX | LOCK_NB) < 0)
			return errno == EWOULDBLOCK ? -EBUSY : -errno;
	}

	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->path = strdup(path);
	if (!v->path) {
		free(v);
		return -ENOMEM;
	}
	pthread_mutex_init(&v->map_lock, NULL);
	v->blockdev = S_ISBLK(st.st_mode);
	v->writable = flags & VOLUME_WRITE;
	v->dev = st.st_dev;
	v->ino = st.st_ino;
	v->rdev = st.st_rdev;
	if (v->blockdev) {
		uint64_t sz;

		if (ioctl(fd, BLKGETSIZE64, &sz) < 0) {
			int r = -errno;

			free(v->path);
			free(v);
			return r;
		}
		v->size = sz;
	} else {
		v->size = (uint64_t)st.st_size;
	}
	v->fd = TAKE_FD(fd);
	*ret = v;
	return 0;
}

void volume_free(struct volume *v)
{
	if (!v)
		return;
	if (v->map)
		munmap((void *)v->map, (size_t)v->map_len);
	pthread_mutex_destroy(&v->map_lock);
	close(v->fd);
	free(v->path);
	free(v);
}

int volume_map_hold(struct volume *v)
{
	uint64_t size = volume_size(v);
	int r = 0;

	pthread_mutex_lock(&v->map_lock);
	if (!v->map) {
		void *m;

		if (!size || size > SIZE_MAX || volume_on_tmpfs(v)) {
			r = -EOPNOTSUPP;
			goto out;
		}
		m = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, v->fd, 0);
		if (m == MAP_FAILED) {
			r = -errno;
			goto out;
		}
		v->map = m;
		v->map_len = size;
	}
	v->map_holds++;
out:
	pthread_mutex_unlock(&v->map_lock);
	return r;
}

void volume_map_release(struct volume *v)
{
	pthread_mutex_lock(&v->map_lock);
	if (v->map_holds && --v->map_holds == 0) {
		munmap((void *)v->map, (size_t)v->map_len);
		v->map = NULL;
		v->map_len = 0;
	}
	pthread_mutex_unlock(&v->map_lock);
}

int volume_map_read(struct volume *v, void *buf, size_t len, uint64_t off,
		    const unsigned char **ret)
{
	const unsigned char *m;
	uint64_t ml, pg = (uint64_t)sysconf(_SC_PAGESIZE);
	int r;

	m = volume_map(v, &ml);
	if (m && len && off <= ml && len <= ml - off) {
		/* madvise() takes whole pages. */
		uint64_t a = off / pg * pg, e = MIN(DIV_ROUND_UP(off + len, pg) * pg, ml);

		if (madvise((void *)(m + a), (size_t)(e - a), MADV_POPULATE_READ) == 0) {
			*ret = m + off;
			return 0;
		}
	}
	r = fd_pread_full(v->fd, buf, len, off);
	if (r < 0)
		return r;
	*ret = buf;
	return 0;
}

const unsigned char *volume_map(struct volume *v, uint64_t *ret_len)
{
	const unsigned char *m;

	pthread_mutex_lock(&v->map_lock);
	m = v->map;
	*ret_len = v->map_len;
	pthread_mutex_unlock(&v->map_lock);
	return m;
}

int volume_fd(const struct volume *v)
{
	return v->fd;
}

const char *volume_path(const struct volume *v)
{
	return v->path;
}

uint64_t volume_size(const struct volume *v)
{
	/* Atomic: a file volume may be grown while readers run. */
	return __atomic_load_n(&v->size, __ATOMIC_ACQUIRE);
}

bool volume_is_blockdev(const struct volume *v)
{
	return v->blockdev;
}

bool volume_on_tmpfs(const struct volume *v)
{
	struct statfs sf;

	return fstatfs(v->fd, &sf) == 0 && sf.f_type == TMPFS_MAGIC;
}

bool volume_same(const struct volume *a, const struct volume *b)
{
	if (a->blockdev || b->blockdev)
		return a->blockdev && b->blockdev && a->rdev == b->rdev;
	return a->dev == b->dev && a->ino == b->ino;
}

int volume_set_size(struct volume *v, uint64_t size)
{
	if (size == volume_size(v))
		return 0;
	if (v->blockdev)
		return -EFBIG;
	if (!v->writable)
		return -EBADF;
	if (size > INT64_MAX)
		return -EFBIG;
	if (ftruncate(v->fd, (off_t)size) < 0)
		return -errno;
	__atomic_store_n(&v->size, size, __ATOMIC_RELEASE);
	return 0;
}

int volume_punch(struct volume *v, uint64_t off, uint64_t len)
{
	if (len == 0)
		return 0;
	if (fallocate(v->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) <
	    0)
		return errno == ENOSYS ? -EOPNOTSUPP : -errno;
	return 0;
}

int volume_flush(struct volume *v)
{
	if (fdatasync(v->fd) < 0)
		return -errno;
	return 0;
}
