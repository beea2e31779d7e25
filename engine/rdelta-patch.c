/* Patch by the engine: the delta (mapped) parsed into its commands, the
 * basis read through the engine's I/O in large pieces, NEW written in
 * order in large writes. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "resync/fileio.h"
#include "resync/io.h"
#include "resync/macro.h"

#include "rdelta-int.h"

static int basis_size(int fd, uint64_t *ret)
{
	struct stat st;
	off_t end;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (S_ISREG(st.st_mode)) {
		*ret = (uint64_t)st.st_size;
		return 0;
	}
	end = lseek(fd, 0, SEEK_END); /* a block device */
	if (end < 0)
		return errno == ESPIPE ? -ESPIPE : -errno;
	*ret = (uint64_t)end;
	return 0;
}

static int patch_run(int basis_fd, const uint8_t *delta, const struct rdelta_cmds *c,
		     int out_fd, struct io_ctx *io, uint8_t *buf, size_t cap)
{
	size_t used = 0;
	int r;

	for (size_t k = 0; k < c->n; k++) {
		const struct rdelta_cmd *cmd = &c->v[k];

		for (uint64_t off = 0; off < cmd->len;) {
			size_t n = (size_t)MIN((uint64_t)(cap - used), cmd->len - off);

			if (cmd->copy) {
				long long got = io_pread_full(io, basis_fd, buf + used, n, cmd->src + off);

				if (got < 0)
					return (int)got;
				if ((size_t)got != n)
					return -ENXIO; /* the basis shrank */
			} else {
				memcpy(buf + used, delta + cmd->src + off, n);
			}
			used += n;
			off += n;
			if (used == cap) {
				r = fd_write_all(out_fd, buf, used);
				if (r < 0)
					return r;
				used = 0;
			}
		}
	}
	return used ? fd_write_all(out_fd, buf, used) : 0;
}

int rdelta_fast_patch(int basis_fd, const uint8_t *delta, size_t delta_len, int out_fd,
		      struct rdelta_stats *st)
{
	struct rdelta_cmds c = {0};
	struct io_ctx *io = NULL;
	/* Writes of 256 KiB: single writes of several MiB were measured to
	 * stall much longer in the kernel's dirty-page throttling here. */
	const size_t cap = (size_t)RDELTA_IO_BUF / 4;
	_cleanup_free_ uint8_t *buf = NULL;
	uint64_t size = 0;
	int r;

	r = basis_size(basis_fd, &size);
	if (r >= 0)
		r = rdelta_cmds_parse(delta, delta_len, &c);
	if (r >= 0 && c.basis_needed > size)
		r = -ENXIO;
	if (r >= 0) {
		buf = malloc(cap);
		r = buf ? io_ctx_new(IO_KIND_AUTO, 1, &io) : -ENOMEM;
	}
	if (r >= 0)
		r = patch_run(basis_fd, delta, &c, out_fd, io, buf, cap);
	for (size_t k = 0; k < c.n; k++) {
		if (c.v[k].copy) {
			st->copy_cmds++;
			st->copy_bytes += c.v[k].len;
		} else {
			st->lit_cmds++;
			st->lit_bytes += c.v[k].len;
		}
	}
	st->in_bytes = delta_len;
	st->out_bytes = r >= 0 ? c.new_len : 0;
	io_ctx_free(io);
	rdelta_cmds_release(&c);
	return r;
}
