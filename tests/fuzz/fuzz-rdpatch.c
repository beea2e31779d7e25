/* Fuzz target for the patchers: the input is a basis and a delta (a
 * 2-byte big-endian basis length, the basis, the delta). The delta is
 * applied by librsync (rdelta_patch_fd(), into a new file) and in place by
 * the engine (rdelta_patch_inplace_buf()). Checked:
 *   - the in-place patch fails only with a documented error, and then
 *     leaves the basis exactly as it was (every refusal comes before the
 *     first write) and no journal;
 *   - when it succeeds, librsync succeeded too and both made the same
 *     file, and the journal is gone. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "rdelta-int.h"

static char journal[4096];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *tmp = getenv("TMPDIR");
	static char dir[4000];

	(void)argc;
	(void)argv;
	setenv("RESYNC_IO", "sync", 1); /* ASan cannot see io_uring's writes */
	snprintf(dir, sizeof(dir), "%s/fuzz-rdpatch-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	FUZZ_CHECK(mkdtemp(dir));
	snprintf(journal, sizeof(journal), "%s/basis.resync-inplace", dir);
	return 0;
}

static uint8_t *file_bytes(int fd, size_t *ret_len)
{
	off_t len = lseek(fd, 0, SEEK_END);
	uint8_t *b = malloc(len > 0 ? (size_t)len : 1);

	FUZZ_CHECK(len >= 0 && b && pread(fd, b, (size_t)len, 0) == len);
	*ret_len = (size_t)len;
	return b;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rdelta_stats st = {0};
	size_t blen, dlen, out_len, in_len;
	const uint8_t *delta;
	int a, b, d, o, r, rl;
	uint8_t *out, *in;

	if (size < 2)
		return 0;
	blen = (size_t)data[0] << 8 | data[1];
	if (blen > size - 2)
		return 0;
	delta = data + 2 + blen;
	dlen = size - 2 - blen;
	a = memfd_create("basis", MFD_CLOEXEC);
	b = memfd_create("inplace", MFD_CLOEXEC);
	d = memfd_create("delta", MFD_CLOEXEC);
	o = memfd_create("new", MFD_CLOEXEC);
	FUZZ_CHECK(a >= 0 && b >= 0 && d >= 0 && o >= 0);
	FUZZ_CHECK(write(a, data + 2, blen) == (ssize_t)blen);
	FUZZ_CHECK(write(b, data + 2, blen) == (ssize_t)blen);
	FUZZ_CHECK(write(d, delta, dlen) == (ssize_t)dlen);
	FUZZ_CHECK(lseek(d, 0, SEEK_SET) == 0);

	rl = rdelta_patch_fd(a, d, o, NULL);
	r = rdelta_patch_inplace_buf(b, journal, delta, dlen, &st);
	FUZZ_CHECK(r == 0 || r == -EBADMSG || r == -EILSEQ || r == -ENODATA || r == -EFBIG ||
		   r == -ENXIO);
	FUZZ_CHECK(access(journal, F_OK) < 0);
	in = file_bytes(b, &in_len);
	if (r < 0) {
		FUZZ_CHECK(in_len == blen && !memcmp(in, data + 2, blen));
	} else {
		FUZZ_CHECK(rl == 0);
		out = file_bytes(o, &out_len);
		FUZZ_CHECK(out_len == in_len && !memcmp(out, in, in_len));
		free(out);
	}
	free(in);
	close(a);
	close(b);
	close(d);
	close(o);
	return 0;
}
