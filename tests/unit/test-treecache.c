/* The hash tree kept while the image is unchanged (daemon/treecache.c):
 * taken once, only for its seed, fanout and leaf size, and only while
 * the image's identity (device, inode, size, mtime, ctime) is the one it
 * was hashed at; kept across a clean restart in IMAGE.resync-hashes and
 * taken back from there only for the same image, the file removed either
 * way and ignored when damaged. A node without a mount (node-fixture.c). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "node-fixture.h"
#include "resync/blockcmp.h"
#include "resync/macro.h"
#include "testlib.h"

#define SIZE ((size_t)(1 << 20) + 100)
#define LEAF RESYNC_PAGE
#define NLEAVES DIV_ROUND_UP(SIZE, LEAF)

struct fx {
	struct tcluster tc;
	struct node *n;
	char *hashes_path; /* IMAGE.resync-hashes */
};

/* The image's times a minute back, so that any write from now on moves
 * its mtime (and not only within the clock's coarse tick). */
static void image_age(struct fx *f)
{
	struct timespec t[2];

	clock_gettime(CLOCK_REALTIME, &t[0]);
	t[0].tv_sec -= 60;
	t[1] = t[0];
	assert_int_equal(utimensat(AT_FDCWD, f->n->self->volume, t, 0), 0);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	tcluster_init(&f->tc, SIZE, 3);
	f->n = tnode_new(&f->tc, "s");
	assert_true(asprintf(&f->hashes_path, "%s.resync-hashes", f->n->self->volume) > 0);
	image_age(f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	tnode_free(f->n);
	tcluster_release(&f->tc);
	free(f->hashes_path);
	free(f);
	return 0;
}

/* A tree of this image for seed and fanout, as session.c's session_tree()
 * builds one to be cached. */
static struct tree_cache tree_build(struct fx *f, uint64_t seed, unsigned fanout)
{
	struct blockcmp_opts o = {.block_size = LEAF, .seed = seed};
	struct tree_cache c = {0};

	assert_true(node_image_still(f->n, &c.id));
	c.built = clock_usec();
	c.hashes = calloc(NLEAVES, sizeof(*c.hashes));
	assert_non_null(c.hashes);
	assert_int_equal(blockcmp_hash_volume(f->n->vol, 0, SIZE, &o, c.hashes), 0);
	assert_int_equal(hashtree_new(c.hashes, NLEAVES, fanout, seed, &c.tree), 0);
	c.seed = seed;
	c.fanout = fanout;
	c.leaf = LEAF;
	return c;
}

/* Rewrite one byte of the image with itself: the content is the same,
 * its identity is not. */
static void image_touch(struct fx *f)
{
	int fd = open(f->n->self->volume, O_RDWR | O_CLOEXEC);
	unsigned char b;

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &b, 1, 12345), 1);
	assert_int_equal(pwrite(fd, &b, 1, 12345), 1);
	close(fd);
}

static bool file_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static void test_put_take(void **state)
{
	struct fx *f = *state;
	struct tree_cache c = tree_build(f, 77, NODE_FINE_FANOUT), got;
	struct hashtree *tree = c.tree;

	tree_cache_put(f->n, &c);
	assert_null(c.tree); /* handed over whole */
	assert_null(c.hashes);
	assert_false(tree_cache_take(f->n, 78, NODE_FINE_FANOUT, LEAF, &got));
	assert_false(tree_cache_take(f->n, 77, NODE_FINE_FANOUT * 2, LEAF, &got));
	assert_false(tree_cache_take(f->n, 77, NODE_FINE_FANOUT, LEAF * 2, &got));
	assert_true(tree_cache_take(f->n, 77, NODE_FINE_FANOUT, LEAF, &got));
	assert_ptr_equal(got.tree, tree);
	assert_int_equal(got.seed, 77);
	assert_int_equal(got.leaf, LEAF);
	/* Taken once: the cache is empty now. */
	assert_int_equal(f->n->tcache.built, 0);
	assert_false(tree_cache_take(f->n, 77, NODE_FINE_FANOUT, LEAF, &c));

	/* Seed 0 takes the one there, whatever its seed. */
	tree_cache_put(f->n, &got);
	assert_true(tree_cache_take(f->n, 0, NODE_FINE_FANOUT, LEAF, &got));
	assert_int_equal(got.seed, 77);
	/* A put replaces what is there (nothing leaks). */
	tree_cache_put(f->n, &got);
	c = tree_build(f, 5, NODE_FINE_FANOUT);
	tree_cache_put(f->n, &c);
	assert_true(tree_cache_take(f->n, 0, NODE_FINE_FANOUT, LEAF, &got));
	assert_int_equal(got.seed, 5);
	tree_cache_release(&got);
}

/* Any write to the image after the hashing, even of the same bytes,
 * makes the tree stale. */
static void test_written_after(void **state)
{
	struct fx *f = *state;
	struct tree_cache c = tree_build(f, 1, NODE_FINE_FANOUT), got;
	struct image_id now;

	tree_cache_put(f->n, &c);
	image_touch(f);
	assert_int_equal(node_image_id(f->n, &now), 0);
	assert_false(image_id_equal(&now, &f->n->tcache.id));
	/* An mtime not older than the clock's tick (here: ahead of it): a
	 * tree hashed now may not be cached. */
	{
		struct timespec t[2];

		clock_gettime(CLOCK_REALTIME, &t[0]);
		t[0].tv_sec += 10;
		t[1] = t[0];
		assert_int_equal(utimensat(AT_FDCWD, f->n->self->volume, t, 0), 0);
		assert_false(node_image_still(f->n, &now));
	}
	assert_false(tree_cache_take(f->n, 1, NODE_FINE_FANOUT, LEAF, &got));
	/* Nothing is saved for the next start either. */
	tree_file_save(f->n);
	assert_false(file_exists(f->hashes_path));
}

/* Saved at a clean stop, taken back at the next start while the image
 * is unchanged: the same hashes and tree, the file gone. */
static void test_file_round_trip(void **state)
{
	struct fx *f = *state;
	struct tree_cache c = tree_build(f, 31, NODE_FINE_FANOUT), got;
	struct hash128 *hashes = malloc(NLEAVES * sizeof(*hashes)), root;
	unsigned levels = hashtree_levels(c.tree);

	assert_non_null(hashes);
	memcpy(hashes, c.hashes, NLEAVES * sizeof(*hashes));
	root = *hashtree_node(c.tree, levels - 1, 0);
	tree_cache_put(f->n, &c);
	tree_file_save(f->n);
	assert_true(file_exists(f->hashes_path));

	/* A restart: the cache is empty, then loaded from the file. */
	tree_cache_release(&f->n->tcache);
	tree_file_load(f->n);
	assert_false(file_exists(f->hashes_path));
	assert_true(tree_cache_take(f->n, 31, NODE_FINE_FANOUT, LEAF, &got));
	assert_memory_equal(got.hashes, hashes, NLEAVES * sizeof(*hashes));
	assert_int_equal(hashtree_levels(got.tree), levels);
	assert_true(hash128_equal(hashtree_node(got.tree, levels - 1, 0), &root));
	tree_cache_release(&got);

	/* Taken back once only. */
	tree_file_load(f->n);
	assert_int_equal(f->n->tcache.built, 0);
	free(hashes);
}

/* The image written after the save: not taken back, the file removed. */
static void test_file_modified(void **state)
{
	struct fx *f = *state;
	struct tree_cache c = tree_build(f, 9, NODE_FINE_FANOUT);

	tree_cache_put(f->n, &c);
	tree_file_save(f->n);
	assert_true(file_exists(f->hashes_path));
	tree_cache_release(&f->n->tcache);
	image_touch(f);
	tree_file_load(f->n);
	assert_int_equal(f->n->tcache.built, 0);
	assert_null(f->n->tcache.tree);
	assert_false(file_exists(f->hashes_path));
}

enum damage { DAMAGE_MAGIC, DAMAGE_HASH, DAMAGE_SHORT, DAMAGE_LONG, DAMAGE_EMPTY };

/* A damaged file is ignored (and removed). */
static void test_file_corrupt(void **state)
{
	struct fx *f = *state;

	for (int d = DAMAGE_MAGIC; d <= DAMAGE_EMPTY; d++) {
		struct tree_cache c = tree_build(f, 100 + d, NODE_FINE_FANOUT);
		struct stat st;
		unsigned char b;
		int fd;

		tree_cache_put(f->n, &c);
		tree_file_save(f->n);
		tree_cache_release(&f->n->tcache);
		fd = open(f->hashes_path, O_RDWR | O_CLOEXEC);
		assert_true(fd >= 0);
		assert_int_equal(fstat(fd, &st), 0);
		switch (d) {
		case DAMAGE_MAGIC:
		case DAMAGE_HASH: {
			/* The magic's first byte, or a leaf hash's last. */
			off_t at = d == DAMAGE_MAGIC ? 0 : st.st_size - 1;

			assert_int_equal(pread(fd, &b, 1, at), 1);
			b ^= 0x40;
			assert_int_equal(pwrite(fd, &b, 1, at), 1);
			break;
		}
		case DAMAGE_SHORT:
			assert_int_equal(ftruncate(fd, st.st_size - 1), 0);
			break;
		case DAMAGE_LONG:
			assert_int_equal(ftruncate(fd, st.st_size + 16), 0);
			break;
		case DAMAGE_EMPTY:
			assert_int_equal(ftruncate(fd, 0), 0);
			break;
		}
		close(fd);
		tree_file_load(f->n);
		if (f->n->tcache.built)
			fail_msg("damage %d: the tree was taken back", d);
		assert_false(file_exists(f->hashes_path));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_put_take, setup, teardown),
		cmocka_unit_test_setup_teardown(test_written_after, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_modified, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_corrupt, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
