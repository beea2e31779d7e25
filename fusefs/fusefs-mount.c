/* The FUSE volume's mount point (fusefs-int.h): checked before a mount
 * (not mounted already, not inside another resync mount), and unmounted
 * at the stop: politely while it is busy, then detached with the
 * connection aborted past the limit, with words on who holds it. */
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

extern char **environ;

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
