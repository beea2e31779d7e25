/* resync-test-crashcheck IMAGE META PRIMARY START TARGET_GEN START_GEN:
 * what a secondary's files claim after a crash, checked against the
 * truth (the metadata crash-consistency test, issue 13 item 2). META is
 * opened read-only with the engine's loader (an unclean stop's activity
 * log counts as dirty, as the owner's open folds it); then:
 *   - UpToDate under TARGET_GEN (the primary's generation of the resync):
 *     IMAGE must equal PRIMARY;
 *   - a trusted bitmap outside Inconsistent: every clean block equals the
 *     data of its generation (PRIMARY under TARGET_GEN, START under
 *     START_GEN; another generation is not checked);
 *   - a checkpoint of TARGET_GEN at OFF: IMAGE[0, OFF) equals PRIMARY's.
 * Prints one JSON object: state, generation (target, start, other),
 * trusted, checkpoint, violations (a list of sentences). Exit 0 when
 * there is none, 1 otherwise, 2 when the files cannot be read (said). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resync/io.h"
#include "resync/macro.h"
#include "resync/meta.h"
#include "resync/volume.h"

static unsigned char *slurp(const char *path, uint64_t size)
{
	unsigned char *b = calloc(1, size ? size : 1);
	struct volume *v = NULL;

	if (!b || volume_open(path, 0, &v) < 0 ||
	    fd_pread_full(volume_fd(v), b, (size_t)MIN(size, volume_size(v)), 0) < 0) {
		volume_free(v);
		free(b);
		return NULL;
	}
	volume_free(v);
	return b;
}

static int violation(int n, const char *what, uint64_t a, uint64_t b)
{
	printf("%s\"%s %" PRIu64 " %" PRIu64 "\"", n ? ", " : "", what, a, b);
	return n + 1;
}

int main(int argc, char **argv)
{
	struct meta_uuid target, start;
	struct volume *v = NULL;
	struct meta *m = NULL;
	struct meta_info mi;
	unsigned char *img, *pri, *st, *ref;
	uint64_t size, bs, nb;
	int r, nv = 0;
	bool is_target, is_start;

	if (argc != 7 || meta_uuid_parse(argv[5], &target) < 0 ||
	    meta_uuid_parse(argv[6], &start) < 0) {
		fprintf(stderr, "usage: resync-test-crashcheck IMAGE META PRIMARY START TARGET_GEN "
				"START_GEN\n");
		return 2;
	}
	r = volume_open(argv[1], 0, &v);
	if (r >= 0)
		r = meta_open(v, argv[2], META_READONLY, NULL, &m);
	if (r < 0) {
		/* Unreadable metadata is rebuilt untrusted by the owner's
		 * open (every block compared): no claim, nothing to check. */
		printf("{\"state\": null, \"error\": \"%s\", \"violations\": []}\n", strerror(-r));
		volume_free(v);
		return r == -EBADMSG || r == -ENOENT ? 0 : 2;
	}
	meta_info_get(m, &mi);
	size = volume_size(v);
	bs = mi.block_size;
	nb = DIV_ROUND_UP(size, bs);
	img = slurp(argv[1], size);
	pri = slurp(argv[3], size);
	st = slurp(argv[4], size);
	if (!img || !pri || !st) {
		fprintf(stderr, "resync-test-crashcheck: cannot read the images\n");
		return 2;
	}
	is_target = !memcmp(&mi.generation, &target, sizeof(target));
	is_start = !memcmp(&mi.generation, &start, sizeof(start));
	printf("{\"state\": \"%s\", \"generation\": \"%s\", \"trusted\": %s, \"checkpoint\": ",
	       meta_state_name(mi.state),
	       is_target  ? "target"
	       : is_start ? "start"
			  : "other",
	       mi.bitmap_trusted ? "true" : "false");
	if (mi.checkpoint_set)
		printf("%" PRIu64, mi.checkpoint_off);
	else
		printf("null");
	printf(", \"violations\": [");
	if (mi.state == META_STATE_UPTODATE && is_target && memcmp(img, pri, size))
		nv = violation(
		    nv,
		    "UpToDate under the primary's generation over different data: size, 0:", size,
		    0);
	ref = is_target ? pri : is_start ? st : NULL;
	if (ref && mi.bitmap_trusted && mi.state != META_STATE_INCONSISTENT) {
		for (uint64_t b = 0; b < nb; b++) {
			uint64_t off = b * bs, len = MIN(bs, size - off);

			if (!meta_dirty_test(m, b) && memcmp(img + off, ref + off, len))
				nv = violation(
				    nv, "a clean bit over a differing block: block, offset:", b,
				    off);
		}
	}
	if (mi.checkpoint_set && !memcmp(&mi.checkpoint_id, &target, sizeof(target)) &&
	    memcmp(img, pri, MIN(mi.checkpoint_off, size)))
		nv = violation(nv, "a checkpoint over data that differs below it: offset, 0:",
			       mi.checkpoint_off, 0);
	printf("]}\n");
	meta_free(m);
	volume_free(v);
	free(img);
	free(pri);
	free(st);
	return nv ? 1 : 0;
}
