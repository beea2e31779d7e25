/* Fuzz target for the patchers: the input is a basis and a delta (a
 * 2-byte big-endian basis length, the basis, the delta). The delta is
 * applied three ways: by librsync (an rdelta patch job), by the engine into
 * a new file (rdelta_fast_patch()) and by the engine in place
 * (rdelta_patch_inplace_buf()). Checked:
 *   - the engine's patches fail only with documented errors, both or
 *     neither; a failed in-place patch leaves the basis exactly as it was
 *     (every refusal comes before the first write) and no journal;
 *   - when they succeed, librsync succeeded too and all three made the
 *     same file, and the journal is gone. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "rdelta-int.h"

static char journal[4096];
static char dir[4000];

static void remove_dir(void)
{
	rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *tmp = getenv("TMPDIR");

	(void)argc;
	(void)argv;
	setenv("RESYNC_IO", "sync", 1); /* ASan cannot see io_uring's writes */
	snprintf(dir, sizeof(dir), "%s/fuzz-rdpatch-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	FUZZ_CHECK(mkdtemp(dir));
	atexit(remove_dir);
	snprintf(journal, sizeof(journal), "%s/basis.resync-inplace", dir);
	return 0;
}

struct mem {
	const uint8_t *p;
	size_t len;
};

static long long mem_read(void *arg, uint64_t off, void *buf, size_t len)
{
	const struct mem *m = arg;

	if (off >= m->len)
		return 0;
	len = len < m->len - off ? len : (size_t)(m->len - off);
	memcpy(buf, m->p + off, len);
	return (long long)len;
}

/* librsync's patch, in memory: 0 and *ret, or its error. */
static int librsync_patch(const uint8_t *basis, size_t blen, const uint8_t *delta, size_t dlen,
			  uint8_t **ret, size_t *ret_len)
{
	struct mem m = {basis, blen};
	struct rdelta_job *job;
	size_t cap = 1 << 16, len = 0;
	uint8_t *out = malloc(cap);
	int r;

	FUZZ_CHECK(out && rdelta_job_new_patch(mem_read, &m, &job) == 0);
	for (;;) {
		const void *ip = delta;
		size_t il = dlen, ol = cap - len, before = len;
		void *op = out + len;

		r = rdelta_job_step(job, &ip, &il, true, &op, &ol);
		len = cap - ol;
		if (r == 0 && il == dlen && len == before) {
			r = -ENOTRECOVERABLE; /* no progress: give up */
			break;
		}
		delta = ip;
		dlen = il;
		if (r != 0)
			break;
		if (ol == 0) {
			if (cap >= (1u << 24)) {
				r = -EFBIG; /* librsync would make more than we compare */
				break;
			}
			out = realloc(out, cap *= 2);
			FUZZ_CHECK(out);
		} else if (il == 0) {
			r = -ENODATA;
			break;
		}
	}
	rdelta_job_free(job);
	*ret = out;
	*ret_len = len;
	return r < 0 ? r : 0;
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
	size_t blen, dlen, out_len, in_len, ref_len;
	const uint8_t *delta;
	int a, b, o, r, rf, rl;
	uint8_t *out, *in, *ref;

	if (size < 2)
		return 0;
	blen = (size_t)data[0] << 8 | data[1];
	if (blen > size - 2)
		return 0;
	delta = data + 2 + blen;
	dlen = size - 2 - blen;
	a = memfd_create("basis", MFD_CLOEXEC);
	b = memfd_create("inplace", MFD_CLOEXEC);
	o = memfd_create("new", MFD_CLOEXEC);
	FUZZ_CHECK(a >= 0 && b >= 0 && o >= 0);
	FUZZ_CHECK(write(a, data + 2, blen) == (ssize_t)blen);
	FUZZ_CHECK(write(b, data + 2, blen) == (ssize_t)blen);

	rl = librsync_patch(data + 2, blen, delta, dlen, &ref, &ref_len);
	rf = rdelta_fast_patch(a, delta, dlen, o, &st);
	r = rdelta_patch_inplace_buf(b, journal, delta, dlen, &st);
	FUZZ_CHECK(r == 0 || r == -EBADMSG || r == -EILSEQ || r == -ENODATA || r == -EFBIG ||
		   r == -ENXIO);
	FUZZ_CHECK(rf == r);
	FUZZ_CHECK(access(journal, F_OK) < 0);
	in = file_bytes(b, &in_len);
	if (r < 0) {
		FUZZ_CHECK(in_len == blen && !memcmp(in, data + 2, blen));
	} else {
		out = file_bytes(o, &out_len);
		FUZZ_CHECK(out_len == in_len && !memcmp(out, in, in_len));
		/* librsync agrees, unless the result is beyond what it is
		 * given room for here. */
		FUZZ_CHECK(rl == 0 || rl == -EFBIG);
		FUZZ_CHECK(rl || (ref_len == in_len && !memcmp(ref, in, in_len)));
		free(out);
	}
	free(ref);
	free(in);
	close(a);
	close(b);
	close(o);
	return 0;
}
