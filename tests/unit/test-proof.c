/* The proof's root: one value whatever path hashed the leaves (blockcmp's
 * threads or the caller's), leaves updated by ranges equal a full hash,
 * the leaf file round-trips and refuses another key, and the xxh3 leaves
 * are the reference library's canonical xxh3-128. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <xxhash.h>

#include "resync/blockcmp.h"
#include "resync/failpoint.h"
#include "resync/hash.h"
#include "resync/io.h"
#include "resync/limits.h"
#include "resync/macro.h"
#include "resync/proof.h"
#include "resync/volume.h"
#include "testlib.h"

#define SIZE ((9u << 20) + 12345) /* a short last block */

static struct volume *make_volume(char *path, size_t n, unsigned seed)
{
	_cleanup_free_ unsigned char *buf = malloc(SIZE);
	struct volume *v = NULL;
	int fd = mkstemp(path);

	(void)n;
	assert_true(fd >= 0);
	assert_non_null(buf);
	testlib_fill(buf, SIZE, seed);
	assert_int_equal(fd_pwrite_full(fd, buf, SIZE, 0), 0);
	close(fd);
	assert_int_equal(volume_open(path, VOLUME_WRITE, &v), 0);
	return v;
}

static void root_of(struct volume *v, enum proof_hash h, struct proof_digest *ret)
{
	struct proof_tree t;

	assert_int_equal(proof_tree_init(&t, h, PROOF_BLOCK_DEFAULT, volume_size(v)), 0);
	assert_int_equal(proof_tree_update(&t, v, NULL, NULL), 0);
	assert_int_equal(proof_tree_root(&t, ret), 0);
	proof_tree_release(&t);
}

static void test_leaf_is_xxh3(void **state)
{
	char path[] = "/tmp/test-proof-XXXXXX";
	struct volume *v = make_volume(path, sizeof(path), 1);
	_cleanup_free_ unsigned char *buf = malloc(SIZE);
	struct proof_tree t;
	XXH128_canonical_t c;

	(void)state;
	assert_int_equal(fd_pread_full(volume_fd(v), buf, SIZE, 0), 0);
	assert_int_equal(proof_tree_init(&t, PROOF_HASH_XXH3, PROOF_BLOCK_DEFAULT, SIZE), 0);
	assert_int_equal(proof_tree_update(&t, v, NULL, NULL), 0);
	for (uint64_t i = 0; i < t.nleaves; i++) {
		size_t off = i * PROOF_BLOCK_DEFAULT;

		XXH128_canonicalFromHash(&c, XXH3_128bits_withSeed(
						     buf + off, MIN((size_t)PROOF_BLOCK_DEFAULT, SIZE - off), 0));
		assert_memory_equal(t.leaves[i].b, c.digest, 16);
	}
	proof_tree_release(&t);
	volume_free(v);
	unlink(path);
}

/* Both hashes: a full hash equals leaves updated range by range after a
 * change, and the root moves with one changed byte. */
static void test_update_ranges(void **state)
{
	char path[] = "/tmp/test-proof-XXXXXX";
	struct volume *v = make_volume(path, sizeof(path), 2);

	(void)state;
	for (unsigned h = 0; h < PROOF_HASH_COUNT; h++) {
		struct proof_digest before, after, inc;
		struct rangelist l = {0};
		struct proof_tree t;
		uint64_t hashed;
		unsigned char x = (unsigned char)(0x11 * (h + 1));

		root_of(v, h, &before);
		assert_int_equal(proof_tree_init(&t, h, PROOF_BLOCK_DEFAULT, SIZE), 0);
		assert_int_equal(proof_tree_update(&t, v, NULL, NULL), 0);
		assert_int_equal(fd_pwrite_full(volume_fd(v), &x, 1, 3 * PROOF_BLOCK_DEFAULT + 7), 0);
		assert_int_equal(fd_pwrite_full(volume_fd(v), &x, 1, SIZE - 1), 0);
		root_of(v, h, &after);
		assert_memory_not_equal(before.b, after.b, proof_digest_len(h));
		assert_int_equal(rangelist_add(&l, SIZE - 1, 1), 0);
		assert_int_equal(rangelist_add(&l, 3 * PROOF_BLOCK_DEFAULT + 7, 1), 0);
		assert_int_equal(proof_tree_update(&t, v, &l, &hashed), 0);
		assert_int_equal(hashed, 2);
		assert_int_equal(proof_tree_root(&t, &inc), 0);
		assert_memory_equal(inc.b, after.b, proof_digest_len(h));
		proof_tree_release(&t);
		rangelist_release(&l);
	}
	volume_free(v);
	unlink(path);
}

static void test_file(void **state)
{
	char path[] = "/tmp/test-proof-XXXXXX", fpath[64];
	struct volume *v = make_volume(path, sizeof(path), 3);
	struct proof_key k = {{1, 2, 3}}, other = {{9}};
	struct proof_tree t, u;
	struct proof_digest a, b;

	(void)state;
	snprintf(fpath, sizeof(fpath), "%s.resync-proof", path);
	assert_int_equal(proof_tree_init(&t, PROOF_HASH_XXH3, PROOF_BLOCK_DEFAULT, SIZE), 0);
	assert_int_equal(proof_tree_update(&t, v, NULL, NULL), 0);
	assert_int_equal(proof_file_save(fpath, &t, &k), 0);
	assert_int_equal(proof_file_load(fpath, &other, PROOF_HASH_XXH3, PROOF_BLOCK_DEFAULT, SIZE, &u),
			 -ESTALE);
	assert_int_equal(proof_file_load(fpath, &k, PROOF_HASH_SHA256, PROOF_BLOCK_DEFAULT, SIZE, &u),
			 -ESTALE);
	assert_int_equal(proof_file_load(fpath, &k, PROOF_HASH_XXH3, PROOF_BLOCK_DEFAULT, SIZE, &u), 0);
	assert_int_equal(proof_tree_root(&t, &a), 0);
	assert_int_equal(proof_tree_root(&u, &b), 0);
	assert_memory_equal(a.b, b.b, 16);
	proof_tree_release(&u);
	/* A flipped byte of a leaf: damaged. */
	{
		int fd = open(fpath, O_RDWR | O_CLOEXEC);
		unsigned char c;

		assert_true(fd >= 0);
		assert_int_equal(fd_pread_full(fd, &c, 1, 100), 0);
		c ^= 1;
		assert_int_equal(fd_pwrite_full(fd, &c, 1, 100), 0);
		close(fd);
	}
	assert_int_equal(proof_file_load(fpath, &k, PROOF_HASH_XXH3, PROOF_BLOCK_DEFAULT, SIZE, &u),
			 -EBADMSG);
	proof_tree_release(&t);
	volume_free(v);
	unlink(fpath);
	unlink(path);
}

/* The volume's mapping (volume_map_hold()): held twice, it stays until
 * the last release; bytes written through the file while it is held are
 * what an update hashes from it (the fold of a secondary whose session
 * holds it); the root equals a full hash without it. tmpfs and an empty
 * volume are not mapped. */
static void test_update_held(void **state)
{
	char path[] = "/var/tmp/test-proof-XXXXXX";
	struct volume *v = make_volume(path, sizeof(path), 3);
	char shm[] = "/dev/shm/test-proof-XXXXXX";
	struct volume *e = NULL;
	uint64_t len;
	int fd;

	(void)state;
	assert_int_equal(volume_map_hold(v), 0);
	assert_int_equal(volume_map_hold(v), 0);
	assert_non_null(volume_map(v, &len));
	assert_int_equal(len, SIZE);
	volume_map_release(v);
	assert_non_null(volume_map(v, &len));
	for (unsigned h = 0; h < PROOF_HASH_COUNT; h++) {
		struct proof_digest full, inc;
		struct rangelist l = {0};
		struct proof_tree t;
		unsigned char x[5000];

		memset(x, 0x5a + (int)h, sizeof(x));
		assert_int_equal(proof_tree_init(&t, h, PROOF_BLOCK_DEFAULT, SIZE), 0);
		assert_int_equal(proof_tree_update(&t, v, NULL, NULL), 0);
		/* Pages the mapping holds, then changed behind it. */
		assert_int_equal(fd_pwrite_full(volume_fd(v), x, sizeof(x), 5 * PROOF_BLOCK_DEFAULT - 100), 0);
		assert_int_equal(rangelist_add(&l, 5 * PROOF_BLOCK_DEFAULT - 100, sizeof(x)), 0);
		assert_int_equal(proof_tree_update(&t, v, &l, NULL), 0);
		assert_int_equal(proof_tree_root(&t, &inc), 0);
		volume_map_release(v);
		assert_null(volume_map(v, &len));
		root_of(v, h, &full);
		assert_memory_equal(inc.b, full.b, proof_digest_len(h));
		assert_int_equal(volume_map_hold(v), 0);
		proof_tree_release(&t);
		rangelist_release(&l);
	}
	volume_map_release(v);
	volume_free(v);
	unlink(path);

	fd = mkstemp(shm);
	if (fd >= 0) {
		assert_int_equal(ftruncate(fd, 1 << 20), 0);
		close(fd);
		assert_int_equal(volume_open(shm, 0, &e), 0);
		assert_int_equal(volume_map_hold(e), -EOPNOTSUPP);
		assert_null(volume_map(e, &len));
		volume_free(e);
		assert_int_equal(truncate(shm, 0), 0);
		assert_int_equal(volume_open(shm, 0, &e), 0);
		assert_int_equal(volume_map_hold(e), -EOPNOTSUPP);
		volume_free(e);
		unlink(shm);
	}
}

/* volume_map_read(): in the mapping at unaligned offsets and lengths
 * while it is held (the bytes written through the file since included),
 * read into the buffer when none is held or the range lies past the
 * mapping (the volume grew after it was made). */
static void test_map_read(void **state)
{
	char path[] = "/var/tmp/test-proof-XXXXXX";
	struct volume *v = make_volume(path, sizeof(path), 5);
	_cleanup_free_ unsigned char *want = malloc(SIZE + 8192);
	unsigned char buf[9000];
	const unsigned char *p;
	const unsigned char *m;
	uint64_t len;

	(void)state;
	assert_non_null(want);
	assert_int_equal(fd_pread_full(volume_fd(v), want, SIZE, 0), 0);
	assert_int_equal(volume_map_read(v, buf, 100, 7, &p), 0);
	assert_ptr_equal(p, buf);
	assert_memory_equal(p, want + 7, 100);
	assert_int_equal(volume_map_hold(v), 0);
	m = volume_map(v, &len);
	memset(want + 4090, 0xa5, 20);
	assert_int_equal(fd_pwrite_full(volume_fd(v), want + 4090, 20, 4090), 0);
	assert_int_equal(volume_map_read(v, buf, 8000, 4001, &p), 0);
	assert_ptr_equal(p, m + 4001);
	assert_memory_equal(p, want + 4001, 8000);
	/* The short last page. */
	assert_int_equal(volume_map_read(v, buf, 300, SIZE - 300, &p), 0);
	assert_ptr_equal(p, m + SIZE - 300);
	assert_memory_equal(p, want + SIZE - 300, 300);
	/* Grown past the mapping: read. */
	assert_int_equal(volume_set_size(v, SIZE + 8192), 0);
	memset(want + SIZE, 0, 8192);
	assert_int_equal(volume_map_read(v, buf, 5000, SIZE - 1000, &p), 0);
	assert_ptr_equal(p, buf);
	assert_memory_equal(p, want + SIZE - 1000, 5000);
	volume_map_release(v);
	volume_free(v);
	unlink(path);
}

/* Rss of the mapping that starts at p (/proc/self/smaps), in KiB. */
static long mapping_rss_kib(const void *p)
{
	char head[32], line[256];
	bool in = false;
	long kib = -1;
	FILE *f = fopen("/proc/self/smaps", "re");

	assert_non_null(f);
	snprintf(head, sizeof(head), "%lx-", (unsigned long)p);
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, head, strlen(head)))
			in = true;
		else if (in && sscanf(line, "Rss: %ld kB", &kib) == 1)
			break;
	}
	fclose(f);
	return kib;
}

/* blockcmp hashes from the held mapping and leaves its page tables made
 * (a secondary's folds use them); a large volume's job drops them unit
 * by unit (the failpoint stands for a volume above 64 GiB), with the
 * same hashes. */
static void test_hash_mapping_kept(void **state)
{
	const size_t n = RESYNC_UNIT + 12345; /* two units */
	char path[] = "/var/tmp/test-proof-XXXXXX";
	struct volume *v = make_volume(path, sizeof(path), 4);
	struct blockcmp_opts o = {.block_size = 4096, .seed = 77};
	_cleanup_free_ struct hash128 *a = calloc(DIV_ROUND_UP(n, 4096), sizeof(*a));
	_cleanup_free_ struct hash128 *b = calloc(DIV_ROUND_UP(n, 4096), sizeof(*b));
	const unsigned char *m;
	uint64_t len;
	bool mapped = io_kind_resolve(IO_KIND_AUTO) == IO_KIND_AUTO;

	(void)state;
	assert_true(n <= SIZE);
	assert_int_equal(volume_map_hold(v), 0);
	m = volume_map(v, &len);
	assert_non_null(m);
	assert_int_equal(blockcmp_hash_volume(v, 0, n, &o, a), 0);
	/* Every hashed page is still mapped (blockcmp maps only with the
	 * automatic backend: RESYNC_IO=sync under valgrind reads). */
	if (mapped)
		assert_true(mapping_rss_kib(m) >= (long)(n / 1024));
	assert_int_equal(failpoint_parse("blockcmp-map-drop"), 0);
	assert_int_equal(blockcmp_hash_volume(v, 0, n, &o, b), 0);
	assert_int_equal(failpoint_parse(NULL), 0);
	if (mapped)
		assert_true(mapping_rss_kib(m) < (long)(RESYNC_UNIT / 1024));
	assert_memory_equal(a, b, DIV_ROUND_UP(n, 4096) * sizeof(*a));
	volume_map_release(v);
	volume_free(v);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_leaf_is_xxh3),
		cmocka_unit_test(test_update_ranges),
		cmocka_unit_test(test_file),
		cmocka_unit_test(test_update_held),
		cmocka_unit_test(test_hash_mapping_kept),
		cmocka_unit_test(test_map_read),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
