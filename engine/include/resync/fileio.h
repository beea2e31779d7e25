/* File plumbing, once for every module: total reads and writes on any fd,
 * the atomic file writer (temporary file, fsync, rename, fsync of the
 * directory), mkdir -p.
 *
 * Every function returns >= 0 on success and -errno on failure, touches no
 * global state but errno, and is safe to call from any thread. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Read len bytes from fd (a file, pipe or socket) at its current position,
 * over short reads and EINTR. Returns the bytes read, less than len only at
 * end of file, or -errno (what was read before the error is lost). A
 * non-blocking fd that has nothing gives -EAGAIN. */
ssize_t fd_read_all(int fd, void *buf, size_t len);

/* Write all len bytes of buf to fd, over short writes and EINTR. On a
 * socket the writes never raise SIGPIPE (a closed peer gives -EPIPE).
 * Returns 0 or -errno. */
int fd_write_all(int fd, const void *buf, size_t len);

/* pread() until len bytes or end of file, over short reads and EINTR.
 * Returns the bytes read (less than len only at end of file) or -errno.
 * fd_pread_full() (resync/io.h) is the same for callers that want all of
 * it or an error. */
ssize_t fd_pread_all(int fd, void *buf, size_t len, uint64_t off);

/* Replace path with the len bytes of data, crash-safely: the bytes go to
 * a new file of mode (less the umask) beside path, which is fsynced and
 * renamed over path, then the directory is fsynced. After a crash path
 * holds the old content or the new one, never a mix. On failure the
 * temporary file is removed and path is untouched. Returns 0 or -errno. */
int file_write_atomic(const char *path, const void *data, size_t len, mode_t mode);

/* The same in two steps, for writers that fill the file themselves (at
 * offsets, with ftruncate, ...). file_atomic_open() creates a new empty
 * file of mode (less the umask) in path's directory, named
 * "PATH.NNN-NNN.tmp" (unique in the process and across processes), opened
 * read-write with O_CLOEXEC; *ret_tmp (the caller frees it) is its name.
 * Returns the fd or -errno. file_atomic_commit() fsyncs fd, renames tmp
 * over path and fsyncs the directory; fd stays open (the caller closes it
 * or keeps it: it is now path's). On failure of the fsync or the rename it
 * removes tmp. A caller that gives up before the commit unlinks tmp
 * itself. Returns 0 or -errno. */
int file_atomic_open(const char *path, mode_t mode, char **ret_tmp);
int file_atomic_commit(int fd, const char *tmp, const char *path);

/* fsync the directory that holds path (path's parent; "." when path has no
 * slash), so that a rename or an unlink in it is durable. Returns 0 or
 * -errno. */
int fsync_directory_of(const char *path);

/* Create the directory path and any missing parents. Parents are made
 * 0755, the last one mode (both less the umask); existing directories are
 * fine. Returns 0, -ENOTDIR or -EEXIST when something that is not a
 * directory is in the way, or -errno. */
int mkdir_p(const char *path, mode_t mode);
