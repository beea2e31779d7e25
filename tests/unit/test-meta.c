/* Volume metadata: fresh files, bitmap operations, the activity log (hits
 * cost nothing, misses one write, folds keep coverage, blocks dirty on
 * disk cost nothing), unclean stops,
 * torn and garbage slots, image identity, durable setters, and concurrent
 * marks. */
#include <errno.h>
#include <endian.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "resync/macro.h"
#include "resync/meta.h"
#include "resync/volume.h"
#include "meta-int.h"
#include "testlib.h"

#define BS 4096u
#define SIZE (1024u * BS + 1000u) /* 1025 blocks, the last one short */

struct fixture {
	char *dir;
	char *img;
	char *meta;
	struct volume *vol;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	int fd;

	assert_non_null(f);
	assert_int_equal(testlib_tmpdir_new(&f->dir), 0);
	f->img = testlib_path(f->dir, "img");
	f->meta = testlib_path(f->dir, "img.resync-meta");
	fd = open(f->img, O_RDWR | O_CREAT, 0644);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, SIZE), 0);
	close(fd);
	assert_int_equal(volume_open(f->img, VOLUME_WRITE | VOLUME_LOCK, &f->vol), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	volume_free(f->vol);
	testlib_tmpdir_remove(f->dir);
	free(f->dir);
	free(f->img);
	free(f->meta);
	free(f);
	return 0;
}

static const struct meta_opts small_al = {.block_size = BS, .al_extents = 4, .al_extent_size = 4 * BS};

static struct meta *open_owner(struct fixture *f)
{
	struct meta *m = NULL;

	assert_int_equal(meta_open(f->vol, NULL, META_CREATE, &small_al, &m), 0);
	return m;
}

static struct meta *open_ro(struct fixture *f)
{
	struct meta *m = NULL;

	assert_int_equal(meta_open(f->vol, NULL, META_READONLY, NULL, &m), 0);
	return m;
}

static void assert_ranges(struct meta *m, const struct range *want, size_t n)
{
	struct rangelist l = {0};

	assert_int_equal(meta_dirty_ranges(m, &l), 0);
	assert_int_equal(l.n, n);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(l.v[i].off, want[i].off);
		assert_int_equal(l.v[i].len, want[i].len);
	}
	rangelist_release(&l);
}

static void test_meta_fresh(void **state)
{
	struct fixture *f = *state;
	struct meta *m;
	struct meta_info mi;

	/* Nothing there: read-only says so, an owner creates. */
	assert_int_equal(meta_open(f->vol, NULL, META_READONLY, NULL, &m), -ENOENT);
	assert_int_equal(meta_open(f->vol, NULL, 0, NULL, &m), -ENOENT);
	m = open_owner(f);
	assert_int_equal(meta_info_get(m, &mi), 0);
	assert_int_equal(mi.volume_size, SIZE);
	assert_int_equal(mi.block_size, BS);
	assert_false(mi.clean);
	assert_true(mi.bitmap_trusted);
	assert_false(meta_uuid_is_null(&mi.generation));
	assert_false(meta_uuid_is_null(&mi.node));
	assert_int_equal(meta_dirty_bytes(m), 0);
	assert_int_equal(meta_mark_clean(m), 0);
	meta_free(m);

	m = open_ro(f);
	assert_int_equal(meta_info_get(m, &mi), 0);
	assert_true(mi.clean);
	assert_int_equal(meta_dirty_mark(m, 0, 1), -EROFS);
	meta_free(m);
}

static void test_meta_bitmap_ops(void **state)
{
	struct fixture *f = *state;
	struct meta *m = open_owner(f);
	uint8_t bm[256];
	const struct range want1[] = {{0, BS}, {5 * BS, 2 * BS}, {1024ull * BS, 1000}};
	const struct range want2[] = {{0, BS}, {1024ull * BS, 1000}};

	assert_int_equal(meta_dirty_mark(m, 10, 1), 0);		   /* block 0 */
	assert_int_equal(meta_dirty_mark(m, 6 * BS - 1, 2), 0);	   /* blocks 5, 6 */
	assert_int_equal(meta_dirty_mark(m, SIZE - 1, 1), 0);	   /* the short block */
	assert_int_equal(meta_dirty_mark(m, SIZE, 1), -EINVAL);	   /* past the end */
	assert_int_equal(meta_dirty_mark(m, SIZE - 1, 2), -EINVAL); /* across it */
	assert_int_equal(meta_dirty_mark(m, 100, 0), 0);	   /* empty */
	assert_ranges(m, want1, 3);
	assert_int_equal(meta_dirty_bytes(m), 3 * BS + 1000);
	assert_true(meta_dirty_test(m, 5));
	assert_false(meta_dirty_test(m, 4));
	assert_false(meta_dirty_test(m, 5000));
	assert_int_equal(meta_bitmap_read(m, bm, 10), -ENOSPC);
	assert_int_equal(meta_bitmap_read(m, bm, sizeof(bm)), 129);
	assert_int_equal(bm[0], 0x61); /* blocks 0, 5, 6 */
	assert_int_equal(bm[128], 0x01);

	/* Clear only whole blocks: a range inside block 5 and all of 6. */
	assert_int_equal(meta_dirty_clear(m, 5 * BS + 1, 2 * BS - 1), 0);
	assert_true(meta_dirty_test(m, 5));
	assert_false(meta_dirty_test(m, 6));
	assert_int_equal(meta_dirty_clear(m, 5 * BS, BS), 0);
	assert_ranges(m, want2, 2);
	/* The short block clears when the range reaches the end. */
	assert_int_equal(meta_dirty_clear(m, 1024ull * BS, 1000), 0);
	assert_int_equal(meta_dirty_bytes(m), BS);

	/* Clean stop, reopen: exactly the same bits. */
	assert_int_equal(meta_mark_clean(m), 0);
	meta_free(m);
	m = open_ro(f);
	assert_ranges(m, want2, 1);
	meta_free(m);
	m = open_owner(f);
	assert_ranges(m, want2, 1);
	meta_free(m);
}

static void test_meta_activity_log(void **state)
{
	struct fixture *f = *state;
	struct meta *m = open_owner(f);
	struct meta_info mi;
	uint64_t w0, w;

	/* Extents are 4 blocks; the log holds 4 of them. */
	w0 = meta_writes(m);
	assert_int_equal(meta_dirty_mark(m, 0, 1), 0);
	w = meta_writes(m);
	assert_int_equal(w, w0 + 1); /* a miss costs one write */
	for (unsigned i = 0; i < 4 * BS; i += 512)
		assert_int_equal(meta_dirty_mark(m, i, 100), 0);
	assert_int_equal(meta_writes(m), w); /* hits cost nothing */
	/* Eight more extents: the log folds into the bitmap on the way. */
	for (unsigned e = 1; e <= 8; e++)
		assert_int_equal(meta_dirty_mark(m, e * 4 * BS + 7, 1), 0);
	assert_int_equal(meta_info_get(m, &mi), 0);
	assert_true(mi.al_used <= 4);
	assert_true(meta_writes(m) >= w + 8);
	/* A write too wide for the log writes the bits themselves. */
	assert_int_equal(meta_dirty_mark(m, 100 * BS, 40 * BS), 0);
	/* Unclean stop: nothing more is written. */
	meta_free(m);

	m = open_ro(f);
	assert_int_equal(meta_info_get(m, &mi), 0);
	assert_false(mi.clean);
	/* Every marked block is covered; extras are whole log extents. */
	assert_true(meta_dirty_test(m, 0));
	for (unsigned e = 1; e <= 8; e++)
		assert_true(meta_dirty_test(m, e * 4));
	for (unsigned b = 100; b < 140; b++)
		assert_true(meta_dirty_test(m, b));
	assert_false(meta_dirty_test(m, 99));
	assert_false(meta_dirty_test(m, 140));
	assert_false(meta_dirty_test(m, 500));
	{
		/* The folded extents are at most the log's last 4 extents
		 * beyond the exact bits. */
		uint64_t exact = (1 + 8 + 40) * (uint64_t)BS;

		assert_true(meta_dirty_bytes(m) >= exact);
		assert_true(meta_dirty_bytes(m) <= exact + 4 * 4 * (uint64_t)BS);
	}
	meta_free(m);

	/* Taking over folds the log into the bitmap; a clean stop keeps it. */
	m = open_owner(f);
	w = meta_dirty_bytes(m);
	assert_int_equal(meta_mark_clean(m), 0);
	meta_free(m);
	m = open_ro(f);
	assert_int_equal(meta_dirty_bytes(m), w);
	meta_free(m);
}

/* A write to blocks the bitmap on disk already holds dirty needs no log
 * entry (the fsync path of a database rewriting its pages); anything not
 * on disk yet, or cleared since, still costs its write; and a crash after
 * such writes still finds every one of them dirty. */
static void test_meta_durable_bits(void **state)
{
	struct fixture *f = *state;
	struct meta *m = open_owner(f);
	uint64_t w;

	/* Dirty blocks 0-3 and 40, then a clean stop folds them to disk. */
	assert_int_equal(meta_dirty_mark(m, 0, 4 * BS), 0);
	assert_int_equal(meta_dirty_mark(m, 40 * BS, 1), 0);
	assert_int_equal(meta_mark_clean(m), 0);
	meta_free(m);

	m = open_owner(f);
	w = meta_writes(m);
	for (unsigned i = 0; i < 4 * BS; i += 1000)
		assert_int_equal(meta_dirty_mark(m, i, 100), 0);
	assert_int_equal(meta_dirty_mark(m, 40 * BS + 5, 10), 0);
	assert_int_equal(meta_writes(m), w); /* on disk already: free */
	/* Partly new (blocks 3-4): the log takes the extent. */
	assert_int_equal(meta_dirty_mark(m, 3 * BS, 2 * BS), 0);
	assert_int_equal(meta_writes(m), w + 1);
	/* Cleared by a resync: a new write there is a miss again. */
	assert_int_equal(meta_dirty_clear(m, 40 * BS, BS), 0);
	w = meta_writes(m);
	assert_int_equal(meta_dirty_mark(m, 40 * BS, 1), 0);
	assert_int_equal(meta_writes(m), w + 1);
	/* Crash: every block written above is dirty for the next owner. */
	meta_free(m);
	m = open_ro(f);
	for (unsigned b = 0; b <= 4; b++)
		assert_true(meta_dirty_test(m, b));
	assert_true(meta_dirty_test(m, 40));
	meta_free(m);

	/* A bitmap cleared in memory is not durable until its commit: the
	 * take-over commit of the reopened owner is the only bitmap on disk. */
	m = open_owner(f);
	assert_int_equal(meta_dirty_clear(m, 0, SIZE), 0);
	w = meta_writes(m);
	assert_int_equal(meta_dirty_mark(m, 0, 1), 0);
	assert_int_equal(meta_writes(m), w + 1);
	meta_free(m);
	m = open_ro(f);
	assert_true(meta_dirty_test(m, 0));
	assert_false(meta_dirty_test(m, 40));
	meta_free(m);
}

static void corrupt(const char *path, uint64_t off)
{
	int fd = open(path, O_RDWR);
	uint8_t b;

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
	b ^= 0x5a;
	assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
	close(fd);
}

static void test_meta_torn_slots(void **state)
{
	struct fixture *f = *state;
	struct meta *m = open_owner(f);
	struct meta_info mi, mi2;
	uint64_t bitmap_bytes = DIV_ROUND_UP(DIV_ROUND_UP(SIZE, BS), 8);
	unsigned active;

	assert_int_equal(meta_dirty_mark(m, 0, 1), 0);
	assert_int_equal(meta_state_set(m, META_STATE_OUTDATED), 0);
	assert_int_equal(meta_dirty_mark(m, 50 * BS, 1), 0);
	assert_int_equal(meta_mark_clean(m), 0);
	assert_int_equal(meta_info_get(m, &mi), 0);
	meta_free(m);
	/* Slots alternate; seq n sits in the slot the parity says. */
	m = open_ro(f);
	assert_int_equal(meta_info_get(m, &mi2), 0);
	assert_int_equal(mi2.seq, mi.seq);
	meta_free(m);

	/* Find the active slot: the one whose header carries seq. */
	{
		int fd = open(f->meta, O_RDONLY);
		uint64_t seq0;

		assert_true(fd >= 0);
		assert_int_equal(pread(fd, &seq0, 8, 16), 8);
		close(fd);
		active = le64toh(seq0) == mi.seq ? 0 : 1;
	}

	/* A torn bitmap in the active slot: the older slot is the state. */
	corrupt(f->meta, meta_bitmap_slot_off(bitmap_bytes, active) + 3);
	m = open_ro(f);
	assert_int_equal(meta_info_get(m, &mi2), 0);
	assert_int_equal(mi2.seq, mi.seq - 1);
	assert_int_equal(mi2.state, META_STATE_OUTDATED);
	assert_true(meta_dirty_test(m, 0)); /* still covered (bit or log) */
	meta_free(m);
	corrupt(f->meta, meta_bitmap_slot_off(bitmap_bytes, active) + 3); /* undo */
	m = open_ro(f);
	assert_int_equal(meta_info_get(m, &mi2), 0);
	assert_int_equal(mi2.seq, mi.seq);
	meta_free(m);

	/* A garbage header field (checksum mismatch), likewise. */
	corrupt(f->meta, (uint64_t)active * META_HEADER_SIZE + 40);
	m = open_ro(f);
	assert_int_equal(meta_info_get(m, &mi2), 0);
	assert_int_equal(mi2.seq, mi.seq - 1);
	meta_free(m);

	/* Both slots garbage: read-only refuses, an owner rebuilds with every
	 * block dirty and the bitmap untrusted. */
	corrupt(f->meta, (uint64_t)(active ^ 1) * META_HEADER_SIZE + 100);
	assert_int_equal(meta_open(f->vol, NULL, META_READONLY, NULL, &m), -EBADMSG);
	m = open_owner(f);
	assert_int_equal(meta_info_get(m, &mi2), 0);
	assert_false(mi2.bitmap_trusted);
	assert_int_equal(meta_dirty_bytes(m), SIZE);
	meta_free(m);

	/* A future version is refused, not misread. */
	{
		int fd = open(f->meta, O_RDWR);
		uint32_t v = htole32(99);

		assert_true(fd >= 0);
		assert_int_equal(pwrite(fd, &v, 4, 8), 4);
		assert_int_equal(pwrite(fd, &v, 4, META_HEADER_SIZE + 8), 4);
		close(fd);
		assert_int_equal(meta_open(f->vol, NULL, META_READONLY, NULL, &m),
				 -EPROTONOSUPPORT);
	}
}

static void test_meta_identity(void **state)
{
	struct fixture *f = *state;
	struct meta *m = open_owner(f);
	struct meta_info mi;
	struct timespec ts[2] = {{1000, 0}, {1000, 0}};

	assert_int_equal(meta_dirty_mark(m, 0, 1), 0);
	assert_int_equal(meta_mark_clean(m), 0);
	meta_free(m);
	/* Unchanged: trusted. */
	m = open_ro(f);
	assert_int_equal(meta_info_get(m, &mi), 0);
	assert_true(mi.bitmap_trusted);
	meta_free(m);
	m = open_owner(f);
	assert_int_equal(meta_mark_clean(m), 0);
	meta_free(m);

	/* Touched while nobody owned it: untrusted, and it stays so. */
	assert_int_equal(futimens(volume_fd(f->vol), ts), 0);
	m = open_ro(f);
	assert_int_equal(meta_info_get(m, &mi), 0);
	assert_false(mi.bitmap_trusted);
	meta_free(m);
	m = open_owner(f);
	assert_int_equal(meta_mark_clean(m), 0);
	meta_free(m);
	m = open_ro(f);
	assert_int_equal(meta_info_get(m, &mi), 0);
	assert_false(mi.bitmap_trusted);
	meta_free(m);
	/* Until the owner says the bitmap is right again. */
	m = open_owner(f);
	assert_int_equal(meta_trusted_set(m, true), 0);
	assert_int_equal(meta_mark_clean(m), 0);
	meta_free(m);
	m = open_ro(f);
	assert_int_equal(meta_info_get(m, &mi), 0);
	assert_true(mi.bitmap_trusted);
	meta_free(m);

	/* Resized while unowned: untrusted, rebuilt for the new size. */
	volume_free(f->vol);
	assert_int_equal(truncate(f->img, SIZE + 8 * BS), 0);
	assert_int_equal(volume_open(f->img, VOLUME_WRITE | VOLUME_LOCK, &f->vol), 0);
	m = open_owner(f);
	assert_int_equal(meta_info_get(m, &mi), 0);
	assert_false(mi.bitmap_trusted);
	assert_int_equal(mi.volume_size, SIZE + 8 * BS);
	assert_int_equal(meta_dirty_bytes(m), SIZE + 8 * BS);
	meta_free(m);
}

static void test_meta_setters(void **state)
{
	struct fixture *f = *state;
	struct meta *m = open_owner(f);
	struct meta_uuid g[6], id;
	struct meta_info mi;
	char buf[40];

	for (unsigned i = 0; i < 6; i++)
		assert_int_equal(meta_uuid_random(&g[i]), 0);
	assert_int_equal(meta_uuid_random(&id), 0);
	assert_int_equal(meta_state_set(m, META_STATE_INCONSISTENT), 0);
	assert_int_equal(meta_state_set(m, (enum meta_state)42), -EINVAL);
	for (unsigned i = 0; i < 6; i++)
		assert_int_equal(meta_generation_set(m, &g[i]), 0);
	assert_int_equal(meta_checkpoint_set(m, 12345, &id), 0);
	assert_int_equal(meta_checkpoint_set(m, SIZE + 1, &id), -EINVAL);
	meta_free(m); /* unclean: durable setters are durable anyway */

	m = open_ro(f);
	assert_int_equal(meta_info_get(m, &mi), 0);
	assert_int_equal(mi.state, META_STATE_INCONSISTENT);
	assert_memory_equal(&mi.generation, &g[5], 16);
	assert_int_equal(mi.history_n, RESYNC_META_HISTORY);
	assert_memory_equal(&mi.history[0], &g[4], 16);
	assert_memory_equal(&mi.history[3], &g[1], 16);
	assert_true(mi.checkpoint_set);
	assert_int_equal(mi.checkpoint_off, 12345);
	assert_memory_equal(&mi.checkpoint_id, &id, 16);
	meta_free(m);

	m = open_owner(f);
	assert_int_equal(meta_checkpoint_clear(m), 0);
	assert_int_equal(meta_history_set(m, g, 2), 0);
	assert_int_equal(meta_history_set(m, g, 5), -EINVAL);
	assert_int_equal(meta_info_get(m, &mi), 0);
	assert_false(mi.checkpoint_set);
	assert_int_equal(mi.history_n, 2);
	meta_free(m);

	/* A resync's end in one update: a secondary (at g[5]) takes g[3]. */
	m = open_owner(f);
	assert_int_equal(meta_dirty_mark(m, 3 * BS, 2 * BS), 0);
	assert_int_equal(meta_trusted_set(m, false), 0);
	assert_int_equal(meta_state_set(m, META_STATE_INCONSISTENT), 0);
	assert_int_equal(meta_checkpoint_set(m, 777, &id), 0);
	assert_int_equal(meta_resync_commit(m, &g[3], true), 0);
	assert_int_equal(meta_dirty_bytes(m), 0);
	/* Unclean stop: the activity log's extents count as dirty again
	 * at the next open (conservative); everything else is durable. */
	meta_free(m);
	m = open_ro(f);
	assert_int_equal(meta_info_get(m, &mi), 0);
	assert_int_equal(mi.state, META_STATE_UPTODATE);
	assert_true(mi.bitmap_trusted);
	assert_false(mi.checkpoint_set);
	assert_memory_equal(&mi.generation, &g[3], 16);
	assert_memory_equal(&mi.history[0], &g[5], 16); /* the current one before */
	meta_free(m);
	/* The primary's: a new generation, the bits gone, state and trust kept. */
	m = open_owner(f);
	assert_int_equal(meta_dirty_mark(m, 0, BS), 0);
	assert_int_equal(meta_trusted_set(m, false), 0);
	assert_int_equal(meta_state_set(m, META_STATE_OUTDATED), 0);
	assert_int_equal(meta_resync_commit(m, &g[0], false), 0);
	assert_int_equal(meta_dirty_bytes(m), 0);
	assert_int_equal(meta_mark_clean(m), 0);
	meta_free(m);
	m = open_ro(f);
	assert_int_equal(meta_info_get(m, &mi), 0);
	assert_int_equal(mi.state, META_STATE_OUTDATED);
	assert_false(mi.bitmap_trusted);
	assert_int_equal(meta_dirty_bytes(m), 0);
	assert_memory_equal(&mi.generation, &g[0], 16);
	assert_memory_equal(&mi.history[0], &g[3], 16);
	meta_free(m);

	/* Names and UUID text. */
	{
		enum meta_state s;
		struct meta_uuid u;

		assert_string_equal(meta_state_name(META_STATE_UPTODATE), "UpToDate");
		assert_int_equal(meta_state_parse("diverged", &s), 0);
		assert_int_equal(s, META_STATE_DIVERGED);
		assert_int_equal(meta_state_parse("nope", &s), -EINVAL);
		for (int i = 0; i < META_STATE_COUNT; i++) {
			assert_int_equal(meta_state_parse(meta_state_name((enum meta_state)i), &s), 0);
			assert_int_equal(s, i);
		}
		assert_string_equal(meta_state_name(META_STATE_COUNT), "Unknown");
		meta_uuid_format(&g[0], buf, sizeof(buf));
		assert_int_equal(strlen(buf), 36);
		assert_int_equal(meta_uuid_parse(buf, &u), 0);
		assert_memory_equal(&u, &g[0], 16);
		assert_int_equal(meta_uuid_parse("12", &u), -EINVAL);
		assert_int_equal(meta_uuid_parse("zz345678-1234-1234-1234-123456789012", &u),
				 -EINVAL);
	}
}

struct marker {
	struct meta *m;
	uint64_t seed;
	uint64_t offs[50];
};

static void *marker_thread(void *arg)
{
	struct marker *mk = arg;
	uint64_t st = mk->seed;

	for (unsigned i = 0; i < 50; i++) {
		mk->offs[i] = testlib_rand_below(&st, SIZE - 3 * BS);
		if (meta_dirty_mark(mk->m, mk->offs[i], 2 * BS) < 0)
			return (void *)1;
	}
	return NULL;
}

static void test_meta_concurrent_marks(void **state)
{
	struct fixture *f = *state;
	struct meta *m = open_owner(f);
	struct marker mk[4];
	pthread_t t[4];

	for (unsigned i = 0; i < 4; i++) {
		mk[i] = (struct marker){.m = m, .seed = i + 1};
		assert_int_equal(pthread_create(&t[i], NULL, marker_thread, &mk[i]), 0);
	}
	for (unsigned i = 0; i < 4; i++) {
		void *ret;

		assert_int_equal(pthread_join(t[i], &ret), 0);
		assert_null(ret);
	}
	meta_free(m); /* unclean */
	m = open_ro(f);
	for (unsigned i = 0; i < 4; i++)
		for (unsigned j = 0; j < 50; j++)
			for (uint64_t b = mk[i].offs[j] / BS; b <= (mk[i].offs[j] + 2 * BS - 1) / BS;
			     b++)
				assert_true(meta_dirty_test(m, b));
	meta_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_meta_fresh, setup, teardown),
		cmocka_unit_test_setup_teardown(test_meta_bitmap_ops, setup, teardown),
		cmocka_unit_test_setup_teardown(test_meta_activity_log, setup, teardown),
		cmocka_unit_test_setup_teardown(test_meta_durable_bits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_meta_torn_slots, setup, teardown),
		cmocka_unit_test_setup_teardown(test_meta_identity, setup, teardown),
		cmocka_unit_test_setup_teardown(test_meta_setters, setup, teardown),
		cmocka_unit_test_setup_teardown(test_meta_concurrent_marks, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
