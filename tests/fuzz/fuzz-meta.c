/* Fuzz target for the metadata loader: the input is written as the
 * metadata file beside a sparse image (of the size slot 0's header names
 * when it is small, else 1 MiB + 100 bytes) and opened with meta_open().
 * Each input runs twice: as it is, and (when it holds a header) with the
 * header and bitmap checksums of both slots made right, so that the
 * fields behind them are reached. Each run checks:
 *   - a read-only open refuses with -EBADMSG, -EPROTONOSUPPORT or -EFBIG,
 *     or gives sane metadata (meta_info, dirty ranges inside the volume
 *     and the same as the bitmap's bits, untrusted when the sizes
 *     differ), and never changes the file;
 *   - an owner's open (META_CREATE) takes any damaged file over (rebuilt,
 *     untrusted, every bit dirty) and shows the same dirty blocks, state
 *     and generations as the read-only open did when the sizes agree;
 *   - after a block is marked dirty and the owner stops cleanly, a
 *     read-only open finds the metadata clean, the same state and
 *     generations, and the dirty blocks it had plus the new one. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "fuzz.h"
#include "meta-int.h"
#include "resync/macro.h"
#include "resync/meta.h"
#include "resync/range.h"
#include "resync/volume.h"
#include "testlib.h"

enum {
	IMAGE_SIZE_MAX = 64 << 20,	      /* a header's size above this is not followed */
	IMAGE_SIZE_DEFAULT = (1 << 20) + 100, /* a short last block */
};

static char *dir, *img_path, *meta_path;

static void cleanup(void)
{
	testlib_tmpdir_remove(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	FUZZ_CHECK(testlib_tmpdir_new(&dir) == 0);
	img_path = testlib_path(dir, "img");
	meta_path = testlib_path(dir, "img.resync-meta");
	FUZZ_CHECK(img_path && meta_path);
	atexit(cleanup);
	return 0;
}

static uint64_t le64_at(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return le64toh(v);
}

static void le64_put(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, 8);
}

/* Make both slots' checksums right, where the input holds them. */
static void checksums_fix(uint8_t *buf, size_t size)
{
	for (unsigned s = 0; s < 2; s++) {
		uint8_t *h = buf + (size_t)s * META_HEADER_SIZE;
		uint64_t bb, off;

		if (size < (size_t)(s + 1) * META_HEADER_SIZE)
			return;
		bb = le64_at(h + offsetof(struct meta_disk_header, bitmap_bytes));
		off = bb <= size ? meta_bitmap_slot_off(bb, s) : UINT64_MAX;
		if (off <= size && bb <= size - off)
			le64_put(h + offsetof(struct meta_disk_header, bitmap_csum),
				 XXH64(buf + off, bb, 0));
		le64_put(h + offsetof(struct meta_disk_header, header_csum),
			 XXH64(h, offsetof(struct meta_disk_header, header_csum), 0));
	}
}

static void file_put(const char *path, const void *data, size_t size)
{
	FUZZ_CHECK(testlib_file_write(path, data, size) == 0);
}

/* What an open gives: info and dirty ranges. */
struct seen {
	struct meta_info info;
	struct rangelist dirty;
};

static void seen_take(struct meta *m, uint64_t image_size, struct seen *ret)
{
	struct meta_info *i = &ret->info;
	uint64_t end = 0, nblocks;
	uint8_t *bitmap;
	long long bm;

	memset(ret, 0, sizeof(*ret));
	FUZZ_CHECK(meta_info_get(m, i) == 0);
	FUZZ_CHECK(resync_block_size_valid(i->block_size));
	FUZZ_CHECK(i->al_extent_size >= i->block_size &&
		   !(i->al_extent_size & (i->al_extent_size - 1)));
	FUZZ_CHECK(i->al_capacity >= 4 && i->al_capacity <= RESYNC_META_AL_MAX);
	FUZZ_CHECK(i->al_used <= i->al_capacity);
	FUZZ_CHECK(i->state < META_STATE_COUNT && i->history_n <= RESYNC_META_HISTORY);
	FUZZ_CHECK(i->seq > 0);
	if (i->volume_size != image_size)
		FUZZ_CHECK(!i->bitmap_trusted);
	FUZZ_CHECK(meta_dirty_ranges(m, &ret->dirty) == 0);
	for (size_t k = 0; k < ret->dirty.n; k++) {
		const struct range *r = &ret->dirty.v[k];

		FUZZ_CHECK(r->len > 0 && r->off >= end && r->off + r->len <= i->volume_size);
		end = r->off + r->len;
	}
	FUZZ_CHECK(rangelist_bytes(&ret->dirty) == meta_dirty_bytes(m));
	/* The bitmap says the same blocks. */
	nblocks = DIV_ROUND_UP(i->volume_size, i->block_size);
	bitmap = malloc(DIV_ROUND_UP(nblocks, 8) + 1);
	FUZZ_CHECK(bitmap);
	bm = meta_bitmap_read(m, bitmap, DIV_ROUND_UP(nblocks, 8) + 1);
	FUZZ_CHECK(bm == (long long)DIV_ROUND_UP(nblocks, 8));
	for (size_t k = 0, b = 0; b < nblocks; b++) {
		bool set = bitmap[b / 8] & (1u << (b % 8));
		uint64_t off = b * i->block_size;

		while (k < ret->dirty.n && ret->dirty.v[k].off + ret->dirty.v[k].len <= off)
			k++;
		FUZZ_CHECK(set == (k < ret->dirty.n && ret->dirty.v[k].off <= off));
		FUZZ_CHECK(set == meta_dirty_test(m, b));
	}
	free(bitmap);
}

static bool ranges_equal(const struct rangelist *a, const struct rangelist *b)
{
	return a->n == b->n && (!a->n || !memcmp(a->v, b->v, a->n * sizeof(*a->v)));
}

/* The same node, state and generations. */
static bool same_identity(const struct meta_info *a, const struct meta_info *b)
{
	return a->state == b->state && !memcmp(&a->node, &b->node, sizeof(a->node)) &&
	       !memcmp(&a->generation, &b->generation, sizeof(a->generation)) &&
	       a->history_n == b->history_n &&
	       !memcmp(a->history, b->history, a->history_n * sizeof(a->history[0]));
}

static void run(struct volume *v, uint64_t image_size, const uint8_t *data, size_t size)
{
	struct seen ro = {0}, rw = {0}, after = {0};
	struct meta *m = NULL;
	bool ro_ok;
	void *back;
	size_t back_len;
	int r;

	file_put(meta_path, data, size);
	r = meta_open(v, meta_path, META_READONLY, NULL, &m);
	FUZZ_CHECK(r == 0 || r == -EBADMSG || r == -EPROTONOSUPPORT || r == -EFBIG);
	ro_ok = r == 0;
	if (ro_ok) {
		seen_take(m, image_size, &ro);
		meta_free(m);
	}
	FUZZ_CHECK(testlib_file_read(meta_path, &back, &back_len) == 0);
	FUZZ_CHECK(back_len == size && !memcmp(back, data, size));
	free(back);

	/* The owner's open. */
	m = NULL;
	r = meta_open(v, meta_path, META_CREATE, NULL, &m);
	FUZZ_CHECK(r == 0 || r == -EPROTONOSUPPORT || r == -EFBIG);
	if (r < 0) {
		FUZZ_CHECK(!ro_ok);
		goto out;
	}
	seen_take(m, image_size, &rw);
	FUZZ_CHECK(rw.info.volume_size == image_size && !rw.info.clean);
	if (!ro_ok) {
		/* Rebuilt: nothing is known. */
		FUZZ_CHECK(!rw.info.bitmap_trusted && rangelist_bytes(&rw.dirty) == image_size);
	} else if (ro.info.volume_size == image_size) {
		FUZZ_CHECK(ranges_equal(&ro.dirty, &rw.dirty));
		FUZZ_CHECK(ro.info.bitmap_trusted == rw.info.bitmap_trusted);
		FUZZ_CHECK(same_identity(&ro.info, &rw.info));
	}
	if (image_size) {
		FUZZ_CHECK(meta_dirty_mark(m, image_size - 1, 1) == 0);
		FUZZ_CHECK(rangelist_add(&rw.dirty,
					 (image_size - 1) / rw.info.block_size * rw.info.block_size,
					 image_size - (image_size - 1) / rw.info.block_size *
							  rw.info.block_size) == 0);
		rangelist_normalize(&rw.dirty);
	}
	FUZZ_CHECK(meta_mark_clean(m) == 0);
	meta_free(m);
	m = NULL;

	/* A clean stop, seen by a reader. */
	FUZZ_CHECK(meta_open(v, meta_path, META_READONLY, NULL, &m) == 0);
	seen_take(m, image_size, &after);
	meta_free(m);
	FUZZ_CHECK(after.info.clean && after.info.volume_size == image_size);
	FUZZ_CHECK(after.info.bitmap_trusted == rw.info.bitmap_trusted);
	FUZZ_CHECK(same_identity(&after.info, &rw.info));
	FUZZ_CHECK(ranges_equal(&after.dirty, &rw.dirty));
out:
	rangelist_release(&ro.dirty);
	rangelist_release(&rw.dirty);
	rangelist_release(&after.dirty);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t image_size = IMAGE_SIZE_DEFAULT;
	struct volume *v = NULL;
	int fd;

	if (!dir)
		LLVMFuzzerInitialize(NULL, NULL);
	if (size >= 32 && le64_at(data + 24) <= IMAGE_SIZE_MAX)
		image_size = le64_at(data + 24);
	fd = open(img_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	FUZZ_CHECK(fd >= 0 && ftruncate(fd, (off_t)image_size) == 0);
	close(fd);
	FUZZ_CHECK(volume_open(img_path, VOLUME_WRITE | VOLUME_LOCK, &v) == 0);
	run(v, image_size, data, size);
	if (size >= META_HEADER_SIZE) {
		uint8_t *fixed = malloc(size);

		FUZZ_CHECK(fixed);
		memcpy(fixed, data, size);
		checksums_fix(fixed, size);
		run(v, image_size, fixed, size);
		free(fixed);
	}
	volume_free(v);
	return 0;
}
