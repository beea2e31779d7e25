/* Fuzz target for the tree cache's file (IMAGE.resync-hashes, read back
 * at start by tree_file_load()): the input is the file, parsed by
 * tree_file_parse() for an image of a fixed identity, then for the
 * identity its own header names (so the checks behind it are reached),
 * then once more with its check hash made right (so the tree is built).
 * Checked: a refusal is -ESTALE or -EBADMSG; what is taken back is the
 * file's own seed, fanout, leaf size and hashes, exactly the image's
 * leaves, for that image, and a tree of that shape built from them. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "node-int.h"
#include "resync/hashtree.h"
#include "resync/macro.h"

static void check_tree(const struct hashtree *t, const struct tree_cache *c, uint64_t n)
{
	struct hashtree *again = NULL;
	unsigned levels = hashtree_levels(t);

	FUZZ_CHECK(hashtree_fanout(t) == c->fanout && hashtree_seed(t) == c->seed);
	FUZZ_CHECK(hashtree_level_count(t, 0) == n);
	FUZZ_CHECK(n ? levels >= 1 && hashtree_level_count(t, levels - 1) == 1 : levels == 0);
	FUZZ_CHECK(hashtree_new(c->hashes, n, c->fanout, c->seed, &again) == 0);
	FUZZ_CHECK(hashtree_levels(again) == levels);
	if (n)
		FUZZ_CHECK(hash128_equal(hashtree_node(t, levels - 1, 0),
					 hashtree_node(again, levels - 1, 0)));
	hashtree_free(again);
}

static void try_parse(const uint8_t *buf, size_t len, const struct image_id *now)
{
	struct tree_cache c;
	struct tree_file_hdr h;
	uint64_t n;
	int r;

	r = tree_file_parse(buf, len, now, &c);
	FUZZ_CHECK(r == 0 || r == -ESTALE || r == -EBADMSG);
	if (r < 0)
		return;
	FUZZ_CHECK(len >= sizeof(h));
	memcpy(&h, buf, sizeof(h));
	FUZZ_CHECK(!memcmp(h.magic, TREE_FILE_MAGIC, sizeof(h.magic)));
	FUZZ_CHECK(image_id_equal(&c.id, now) && c.built);
	FUZZ_CHECK(c.seed == h.seed && c.fanout == h.fanout && c.leaf == h.leaf);
	FUZZ_CHECK(resync_block_size_valid(c.leaf));
	n = DIV_ROUND_UP(now->size, c.leaf);
	FUZZ_CHECK(len == sizeof(h) + n * sizeof(struct hash128));
	FUZZ_CHECK(!n || !memcmp(c.hashes, buf + sizeof(h), n * sizeof(struct hash128)));
	FUZZ_CHECK(c.tree);
	check_tree(c.tree, &c, n);
	tree_cache_release(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct image_id fixed = {.dev = 2049,
					      .ino = 12,
					      .size = (1 << 20) + 100,
					      .mtime = {1700000000, 1},
					      .ctime = {1700000000, 2}};
	struct tree_file_hdr h;
	uint8_t *copy;

	try_parse(data, size, &fixed);
	if (size < sizeof(h))
		return 0;
	memcpy(&h, data, sizeof(h));
	try_parse(data, size, &h.id);
	copy = malloc(size);
	FUZZ_CHECK(copy);
	memcpy(copy, data, size);
	h.check = hash_block(copy + sizeof(h), size - sizeof(h), 0);
	memcpy(copy, &h, sizeof(h));
	try_parse(copy, size, &h.id);
	free(copy);
	return 0;
}
