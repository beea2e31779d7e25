/* The rdelta jobs as resumable state machines: driven with tiny buffers
 * they produce what the descriptor drivers produce; header checks, errors
 * of the basis reader and truncated streams come out as documented. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "resync/macro.h"
#include "resync/rdelta.h"

struct buf {
	uint8_t *p;
	size_t len, cap;
};

static void buf_put(struct buf *b, const void *p, size_t n)
{
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2 + 64;
		b->p = realloc(b->p, b->cap);
		assert_non_null(b->p);
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

static void fill(uint8_t *p, size_t n, uint32_t seed)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		p[i] = (uint8_t)(seed >> 16);
	}
}

/* Run job over in, handing it at most in_step bytes and out_step bytes of
 * room at a time. Returns the job's final result. */
static int drive(struct rdelta_job *job, const struct buf *in, size_t in_step, size_t out_step,
		 struct buf *out)
{
	size_t off = 0;
	uint8_t tmp[64];

	assert_true(out_step <= sizeof(tmp));
	for (int guard = 0; guard < 50000000; guard++) {
		size_t n = MIN(in_step, in->len - off);
		const void *ip = in->p + off;
		size_t il = n, ol = out_step;
		void *op = tmp;
		int r;

		r = rdelta_job_step(job, &ip, &il, off + n == in->len, &op, &ol);
		if (r < 0)
			return r;
		off += n - il;
		if (out)
			buf_put(out, tmp, out_step - ol);
		else
			assert_int_equal(ol, out_step);
		if (r == 1)
			return 0;
	}
	fail_msg("job made no progress");
	return -1;
}

static long long mem_read(void *arg, uint64_t off, void *p, size_t len)
{
	const struct buf *b = arg;

	if (off >= b->len)
		return 0;
	len = MIN(len, b->len - (size_t)off);
	memcpy(p, b->p + off, len);
	return (long long)len;
}

static long long failing_read(void *arg, uint64_t off, void *p, size_t len)
{
	(void)arg;
	(void)off;
	(void)p;
	(void)len;
	return -EDOM;
}

static int memfd_with(const struct buf *b)
{
	int fd = memfd_create("rdelta-test", MFD_CLOEXEC);

	assert_true(fd >= 0);
	if (b)
		assert_int_equal(write(fd, b->p, b->len), (ssize_t)b->len);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	return fd;
}

static void fd_contents(int fd, struct buf *out)
{
	uint8_t tmp[4096];
	ssize_t n;

	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	while ((n = read(fd, tmp, sizeof(tmp))) > 0)
		buf_put(out, tmp, (size_t)n);
	assert_true(n == 0);
}

struct fixture {
	struct buf basis, new, sig, delta;
	struct rdelta_sig_params p;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	uint8_t *b = malloc(40000), *n = malloc(41000);

	fill(b, 40000, 1);
	/* new: basis with 1000 bytes inserted at 10000 and a rewritten range */
	memcpy(n, b, 10000);
	fill(n + 10000, 1000, 2);
	memcpy(n + 11000, b + 10000, 30000);
	fill(n + 30000, 300, 3);
	buf_put(&f->basis, b, 40000);
	buf_put(&f->new, n, 41000);
	free(b);
	free(n);
	f->p = (struct rdelta_sig_params){.block_len = 512, .strong_len = 8};
	assert_int_equal(rdelta_sig_params_resolve(&f->p, 40000), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	free(f->basis.p);
	free(f->new.p);
	free(f->sig.p);
	free(f->delta.p);
	free(f);
	return 0;
}

static void test_params(void **state)
{
	struct rdelta_sig_params p = {0};

	(void)state;
	/* rdiff's recommendations: sqrt of the size rounded down to 128,
	 * at least 256; 2048 for an unknown size; the hash's full length. */
	assert_int_equal(rdelta_sig_params_resolve(&p, 256 << 20), 0);
	assert_int_equal(p.block_len, 16384);
	assert_int_equal(p.strong_len, 32);
	p = (struct rdelta_sig_params){.hash = RDELTA_HASH_MD4};
	assert_int_equal(rdelta_sig_params_resolve(&p, -1), 0);
	assert_int_equal(p.block_len, 2048);
	assert_int_equal(p.strong_len, 16);
	p = (struct rdelta_sig_params){.strong_len = -1};
	assert_int_equal(rdelta_sig_params_resolve(&p, 1000), 0);
	assert_int_equal(p.block_len, 256);
	assert_true(p.strong_len > 0 && p.strong_len < 32);
	p = (struct rdelta_sig_params){.hash = RDELTA_HASH_MD4, .strong_len = 17};
	assert_int_equal(rdelta_sig_params_resolve(&p, 1000), -EINVAL);
	p = (struct rdelta_sig_params){.block_len = RDELTA_BLOCK_LEN_MAX + 1};
	assert_int_equal(rdelta_sig_params_resolve(&p, 1000), -EINVAL);
	p = (struct rdelta_sig_params){.strong_len = -2};
	assert_int_equal(rdelta_sig_params_resolve(&p, 1000), -EINVAL);
}

/* signature, delta and patch in 1-byte and odd-sized steps equal the fd
 * drivers' output, and the patch reproduces the new file. */
static void test_small_steps(void **state)
{
	struct fixture *f = *state;
	struct rdelta_job *job;
	struct rdelta_signature *sig;
	struct buf fsig = {0}, fdelta = {0}, out = {0};
	struct rdelta_stats st;
	int bfd, nfd, sfd, dfd, ofd;

	/* the reference, through the fd drivers */
	bfd = memfd_with(&f->basis);
	nfd = memfd_with(&f->new);
	sfd = memfd_with(NULL);
	dfd = memfd_with(NULL);
	ofd = memfd_with(NULL);
	assert_int_equal(rdelta_signature_fd(bfd, sfd, &f->p, &st), 0);
	assert_int_equal(st.sig_blocks, DIV_ROUND_UP(40000, 512));
	assert_int_equal(st.in_bytes, 40000);
	assert_int_equal(lseek(sfd, 0, SEEK_SET), 0);
	assert_int_equal(rdelta_signature_load_fd(sfd, &sig, NULL), 0);
	assert_int_equal(rdelta_signature_block_len(sig), 512);
	assert_int_equal(rdelta_signature_blocks(sig), DIV_ROUND_UP(40000, 512));
	assert_int_equal(rdelta_delta_fd(sig, nfd, dfd, NULL), 0);
	rdelta_signature_free(sig);
	assert_int_equal(lseek(dfd, 0, SEEK_SET), 0);
	assert_int_equal(rdelta_patch_fd(bfd, dfd, ofd, &st), 0);
	fd_contents(sfd, &fsig);
	fd_contents(dfd, &fdelta);
	fd_contents(ofd, &out);
	assert_int_equal(out.len, f->new.len);
	assert_memory_equal(out.p, f->new.p, out.len);
	out.len = 0;

	/* signature, 1 byte in and out at a time */
	assert_int_equal(rdelta_job_new_signature(&f->p, &job), 0);
	assert_int_equal(drive(job, &f->basis, 1, 1, &f->sig), 0);
	/* a finished job stays finished */
	{
		const void *ip = NULL;
		void *op = NULL;
		size_t il = 0, ol = 0;

		assert_int_equal(rdelta_job_step(job, &ip, &il, true, &op, &ol), 1);
	}
	rdelta_job_free(job);
	assert_int_equal(f->sig.len, fsig.len);
	assert_memory_equal(f->sig.p, fsig.p, fsig.len);

	/* load in 1-byte pieces, delta in 7-byte pieces with 3 bytes of room */
	assert_int_equal(rdelta_job_new_loadsig(&job), 0);
	assert_int_equal(rdelta_job_take_signature(job, &sig), -EINVAL);
	assert_int_equal(drive(job, &f->sig, 1, 1, NULL), 0);
	assert_int_equal(rdelta_job_take_signature(job, &sig), 0);
	rdelta_job_free(job);
	assert_int_equal(rdelta_job_new_delta(sig, &job), 0);
	assert_int_equal(drive(job, &f->new, 7, 3, &f->delta), 0);
	rdelta_job_stats(job, &st);
	assert_string_equal(st.op, "delta");
	assert_true(st.copy_bytes >= 30000);
	rdelta_job_free(job);
	rdelta_signature_free(sig);
	assert_int_equal(f->delta.len, fdelta.len);
	assert_memory_equal(f->delta.p, fdelta.p, fdelta.len);

	/* patch in 5-byte pieces with 64 bytes of room */
	assert_int_equal(rdelta_job_new_patch(mem_read, &f->basis, &job), 0);
	assert_int_equal(drive(job, &f->delta, 5, 64, &out), 0);
	rdelta_job_free(job);
	assert_int_equal(out.len, f->new.len);
	assert_memory_equal(out.p, f->new.p, out.len);

	free(fsig.p);
	free(fdelta.p);
	free(out.p);
	close(bfd);
	close(nfd);
	close(sfd);
	close(dfd);
	close(ofd);
}

static int load(const uint8_t *p, size_t len, size_t step)
{
	struct rdelta_job *job;
	struct rdelta_signature *sig = NULL;
	struct buf in = {(uint8_t *)(uintptr_t)p, len, len};
	int r;

	assert_int_equal(rdelta_job_new_loadsig(&job), 0);
	r = drive(job, &in, step, 1, NULL);
	if (r == 0)
		r = rdelta_job_take_signature(job, &sig);
	rdelta_signature_free(sig);
	rdelta_job_free(job);
	return r;
}

static void test_bad_signatures(void **state)
{
	struct fixture *f = *state;
	uint8_t h[RDELTA_HEADER_LEN + 36] = {0x72, 0x73, 0x01, 0x47, 0x80, 0, 0, 0, 0, 0, 0, 0x20};

	/* a block length of 2^31: corrupt, however the bytes arrive */
	assert_int_equal(load(h, sizeof(h), 1), -EILSEQ);
	assert_int_equal(load(h, sizeof(h), 100), -EILSEQ);
	/* just above our limit */
	h[4] = 0x04;
	h[7] = 0x01;
	assert_int_equal(load(h, sizeof(h), 5), -EILSEQ);
	/* a strong sum longer than MD4's */
	memcpy(h, (uint8_t[]){0x72, 0x73, 0x01, 0x46, 0, 0, 2, 0, 0, 0, 0, 17}, 12);
	assert_int_equal(load(h, sizeof(h), 3), -EILSEQ);
	/* not a signature: a delta's magic */
	h[2] = 0x02;
	h[3] = 0x36;
	assert_int_equal(load(h, sizeof(h), 3), -EBADMSG);
	/* truncated inside the header and inside a block sum */
	assert_int_equal(load(f->sig.p, 7, 1), -ENODATA);
	assert_int_equal(load(f->sig.p, f->sig.len - 3, 64), -ENODATA);
	/* the whole of it loads */
	assert_int_equal(load(f->sig.p, f->sig.len, 64), 0);
}

static void test_bad_patches(void **state)
{
	struct fixture *f = *state;
	struct rdelta_job *job;
	struct buf out = {0}, part = {f->delta.p, f->delta.len / 2, f->delta.len / 2};
	struct buf short_basis = {f->basis.p, 5000, 5000};

	/* truncated delta */
	assert_int_equal(rdelta_job_new_patch(mem_read, &f->basis, &job), 0);
	assert_int_equal(drive(job, &part, 13, 64, &out), -ENODATA);
	rdelta_job_free(job);
	/* a basis shorter than the delta's copies */
	out.len = 0;
	assert_int_equal(rdelta_job_new_patch(mem_read, &short_basis, &job), 0);
	assert_int_equal(drive(job, &f->delta, 64, 64, &out), -ENXIO);
	rdelta_job_free(job);
	/* the basis reader's error comes out unchanged */
	out.len = 0;
	assert_int_equal(rdelta_job_new_patch(failing_read, NULL, &job), 0);
	assert_int_equal(drive(job, &f->delta, 64, 64, &out), -EDOM);
	rdelta_job_free(job);
	/* a signature is not a delta */
	out.len = 0;
	assert_int_equal(rdelta_job_new_patch(mem_read, &f->basis, &job), 0);
	assert_int_equal(drive(job, &f->sig, 64, 64, &out), -EBADMSG);
	rdelta_job_free(job);
	free(out.p);
}

static void test_patch_needs_seekable_basis(void **state)
{
	int pfd[2], dfd, ofd;

	(void)state;
	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	dfd = memfd_with(NULL);
	ofd = memfd_with(NULL);
	assert_int_equal(rdelta_patch_fd(pfd[0], dfd, ofd, NULL), -ESPIPE);
	close(pfd[0]);
	close(pfd[1]);
	close(dfd);
	close(ofd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_params),
		/* these share the fixture's signature and delta, in order */
		cmocka_unit_test(test_small_steps),
		cmocka_unit_test(test_bad_signatures),
		cmocka_unit_test(test_bad_patches),
		cmocka_unit_test(test_patch_needs_seekable_basis),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
