/* resync-test-mkimg: build images with known content and divergence for the
 * shell tests.
 *   fill PATH SIZE SEED          PATH gets SIZE bytes of SEED's stream
 *   scribble PATH OFF LEN SEED   change every byte of [OFF, OFF+LEN)
 *                                (the file grows when the range passes its end)
 *   pair SRC DST SRC_SIZE DST_SIZE NRANGES MAXLEN SEED
 *                                testlib_image_pair(): DST = SRC resized, with
 *                                NRANGES random ranges of up to MAXLEN changed
 * Sizes take K, M, G suffixes. Exit 0, or 2 with one line on stderr. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resync/macro.h"
#include "resync/parse.h"
#include "testlib.h"

static int fail(const char *what, int r)
{
	fprintf(stderr, "resync-test-mkimg: %s: %s\n", what, strerror(-r));
	return 2;
}

static int num(const char *s, uint64_t *ret)
{
	int r = parse_size(s, ret);

	if (r < 0 || *ret > (uint64_t)SIZE_MAX / 2) {
		fprintf(stderr, "resync-test-mkimg: invalid number '%s'\n", s);
		return -EINVAL;
	}
	return 0;
}

static int usage(void)
{
	fputs("usage: resync-test-mkimg fill PATH SIZE SEED\n"
	      "       resync-test-mkimg scribble PATH OFF LEN SEED\n"
	      "       resync-test-mkimg pair SRC DST SRC_SIZE DST_SIZE NRANGES MAXLEN SEED\n",
	      stderr);
	return 2;
}

int main(int argc, char **argv)
{
	uint64_t v[5];
	int r;

	if (argc == 5 && !strcmp(argv[1], "fill")) {
		_cleanup_free_ void *buf = NULL;

		if (num(argv[3], &v[0]) < 0 || num(argv[4], &v[1]) < 0)
			return 2;
		buf = malloc(v[0] + 1);
		if (!buf)
			return fail("fill", -ENOMEM);
		testlib_fill(buf, v[0], v[1]);
		r = testlib_file_write(argv[2], buf, v[0]);
		return r < 0 ? fail(argv[2], r) : 0;
	}
	if (argc == 6 && !strcmp(argv[1], "scribble")) {
		_cleanup_free_ void *buf = NULL;
		unsigned char *p;
		size_t n;

		for (int i = 0; i < 3; i++)
			if (num(argv[3 + i], &v[i]) < 0)
				return 2;
		r = testlib_file_read(argv[2], &buf, &n);
		if (r < 0)
			return fail(argv[2], r);
		if (v[0] + v[1] > n) {
			p = realloc(buf, v[0] + v[1]);
			if (!p)
				return fail("scribble", -ENOMEM);
			memset(p + n, 0, v[0] + v[1] - n);
			buf = p;
			n = v[0] + v[1];
		}
		testlib_scribble(buf, v[0], v[1], v[2]);
		r = testlib_file_write(argv[2], buf, n);
		return r < 0 ? fail(argv[2], r) : 0;
	}
	if (argc == 9 && !strcmp(argv[1], "pair")) {
		for (int i = 0; i < 5; i++)
			if (num(argv[4 + i], &v[i]) < 0)
				return 2;
		r = testlib_image_pair(argv[2], argv[3], v[0], v[1], (unsigned)v[2], v[3], v[4],
				       NULL, NULL);
		return r < 0 ? fail("pair", r) : 0;
	}
	return usage();
}
