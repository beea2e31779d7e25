/* Helpers shared by the C tests: scratch directories, deterministic data,
 * whole-file I/O, images with known divergence, and waiting for a
 * condition with a deadline (tests never sleep and hope).
 *
 * Every function returns >= 0 or -errno unless it says otherwise; none of
 * them calls cmocka, so any test (or fuzz replayer) can link them. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "resync/clock.h" /* clock_usec(): time for deadlines */

/* Create a fresh private directory under $TMPDIR (default /tmp). The
 * caller owns *ret (free it) and removes the tree with
 * testlib_tmpdir_remove(). */
int testlib_tmpdir_new(char **ret);
/* Remove dir and everything below it. NULL is accepted. */
int testlib_tmpdir_remove(const char *dir);
/* "dir/name", malloc'ed; NULL on allocation failure. */
char *testlib_path(const char *dir, const char *name);

/* A deterministic generator (splitmix64): the same seed gives the same
 * stream on every machine. */
uint64_t testlib_rand(uint64_t *state);
/* A value in [0, n); n > 0. */
uint64_t testlib_rand_below(uint64_t *state, uint64_t n);
/* Fill buf with the stream of seed. */
void testlib_fill(void *buf, size_t len, uint64_t seed);
/* Change every byte of buf[off, off+len) (XOR with a non-zero stream
 * byte), so the range is known to differ from what it held. */
void testlib_scribble(void *buf, size_t off, size_t len, uint64_t seed);

/* Write len bytes to path, created or truncated, mode 0644. */
int testlib_file_write(const char *path, const void *buf, size_t len);
/* Read all of path into a malloc'ed buffer (*ret, never NULL on success
 * even for an empty file) and its length. */
int testlib_file_read(const char *path, void **ret, size_t *ret_len);
/* Whether path holds exactly buf[0, len). 1 yes, 0 no, or -errno. */
int testlib_file_equals(const char *path, const void *buf, size_t len);

/* Build a pair of images with known divergence: src of src_size bytes of
 * seed's stream, dst a copy of it resized to dst_size (new bytes from a
 * different stream), with nranges random ranges (up to max_len bytes
 * each) scribbled over. Both buffers are returned malloc'ed when the ret
 * pointers are not NULL, and written to src_path and dst_path when those
 * are not NULL. */
int testlib_image_pair(const char *src_path, const char *dst_path, size_t src_size, size_t dst_size,
		       unsigned nranges, size_t max_len, uint64_t seed, unsigned char **ret_src,
		       unsigned char **ret_dst);

/* Poll cond(arg) until it returns true or timeout_usec passes, backing
 * off from 1 ms to 50 ms between polls. Returns 0 when the condition
 * held, -ETIMEDOUT otherwise (after one last check). */
int testlib_wait_until(bool (*cond)(void *arg), void *arg, uint64_t timeout_usec);

/* Whether the test runs under valgrind (the 'valgrind' test setup sets
 * RESYNC_VALGRIND=1; a run by hand is recognised too when valgrind's
 * header was there at build time). Valgrind does not see what the kernel
 * writes into buffers through io_uring, so tests skip their io_uring
 * variants under it (the plain backend runs the same checks). */
bool testlib_valgrind(void);
