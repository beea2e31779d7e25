/* Fuzz target for the engine's signature reader (rdelta_sigidx_parse(),
 * what resync-diff delta loads): the input is one signature file. Checked:
 *   - a refusal is one of the documented errors;
 *   - a signature taken holds (size - 12) / (4 + strong_len) blocks, and
 *     every block is found again through the index (weak sum, then the
 *     strong sum of the one kept for identical blocks);
 *   - a delta of the input itself against it is searched and encoded, and
 *     the delta reader takes it back with the input's length. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "rdelta-int.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	setenv("RESYNC_IO", "sync", 1); /* ASan cannot see io_uring's writes */
	return 0;
}

static void check_index(const struct rdelta_sigidx *s)
{
	for (uint64_t i = 0; i < s->blocks; i++) {
		bool found = false;

		FUZZ_CHECK(rdelta_sigidx_maybe(s, s->weak[i]));
		for (uint32_t h = rdelta_sigidx_hash(s, s->weak[i]); s->slot[h] && !found;
		     h = (h + 1) & s->mask) {
			uint64_t j = s->slot[h] - 1;

			FUZZ_CHECK(j < s->blocks);
			found = s->weak[j] == s->weak[i] &&
				!memcmp(s->strong + j * s->strong_len, s->strong + i * s->strong_len,
					s->strong_len);
		}
		FUZZ_CHECK(found);
	}
}

static void check_delta(const struct rdelta_sigidx *s, const uint8_t *data, size_t size)
{
	struct rdelta_stats st = {0};
	struct rdelta_cmds c = {0};
	int in = memfd_create("new", MFD_CLOEXEC), out = memfd_create("delta", MFD_CLOEXEC);
	uint8_t *d;
	off_t len;

	FUZZ_CHECK(in >= 0 && out >= 0);
	FUZZ_CHECK(write(in, data, size) == (ssize_t)size);
	FUZZ_CHECK(rdelta_fast_delta(s, in, size, out, &st) == 0);
	len = lseek(out, 0, SEEK_END);
	FUZZ_CHECK(len >= 5 && st.out_bytes == (uint64_t)len);
	d = malloc((size_t)len);
	FUZZ_CHECK(d && pread(out, d, (size_t)len, 0) == len);
	FUZZ_CHECK(rdelta_cmds_parse(d, (size_t)len, &c) == 0);
	FUZZ_CHECK(c.new_len == size);
	FUZZ_CHECK(c.basis_needed <= s->blocks * (uint64_t)s->block_len);
	rdelta_cmds_release(&c);
	free(d);
	close(in);
	close(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rdelta_sigidx *s = NULL;
	int r = rdelta_sigidx_parse(data, size, &s);

	FUZZ_CHECK(r == 0 || r == -EBADMSG || r == -EILSEQ || r == -ENODATA || r == -EFBIG);
	if (r < 0)
		return 0;
	FUZZ_CHECK(size >= RDELTA_HEADER_LEN);
	FUZZ_CHECK(s->blocks == (size - RDELTA_HEADER_LEN) / (4 + s->strong_len));
	check_index(s);
	check_delta(s, data, size);
	rdelta_sigidx_free(s);
	return 0;
}
