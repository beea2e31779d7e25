/* Plain pread/pwrite backend, and the fault-injecting backend built on it.
 * Each submit runs the system call at once and queues its raw result; reap
 * hands results back in submission order. */
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io-int.h"
#include "resync/macro.h"

struct io_sync {
	unsigned cap, head, count;
	struct io_done {
		struct io_req *req;
		long long res;
	} q[];
};

static int io_sync_init(struct io_ctx *ctx, unsigned depth)
{
	struct io_sync *s = calloc(1, sizeof(*s) + depth * sizeof(s->q[0]));

	if (!s)
		return -ENOMEM;
	s->cap = depth;
	io_ctx_set_backend(ctx, s);
	return 0;
}

static void io_sync_release(struct io_ctx *ctx)
{
	free(io_ctx_backend(ctx));
}

static long long io_sync_do(struct io_req *req, size_t len)
{
	char *buf = (char *)req->buf + req->done;
	off_t off = (off_t)(req->off + req->done);
	ssize_t n;

	switch (req->op) {
	case IO_OP_READ:
		n = pread(req->fd, buf, len, off);
		break;
	case IO_OP_WRITE:
		n = pwrite(req->fd, buf, len, off);
		break;
	case IO_OP_FSYNC:
		n = fdatasync(req->fd);
		break;
	default:
		return -EINVAL;
	}
	return n < 0 ? -errno : n;
}

static int io_sync_queue(struct io_ctx *ctx, struct io_req *req, long long res)
{
	struct io_sync *s = io_ctx_backend(ctx);

	if (s->count >= s->cap)
		return -EBUSY;
	s->q[(s->head + s->count) % s->cap] = (struct io_done){req, res};
	s->count++;
	return 0;
}

static int io_sync_submit(struct io_ctx *ctx, struct io_req *req)
{
	return io_sync_queue(ctx, req, io_sync_do(req, io_req_remaining(req)));
}

static int io_sync_reap(struct io_ctx *ctx, struct io_req **ret_req, long long *ret_res)
{
	struct io_sync *s = io_ctx_backend(ctx);

	if (s->count == 0)
		return -ENOENT;
	*ret_req = s->q[s->head].req;
	*ret_res = s->q[s->head].res;
	s->head = (s->head + 1) % s->cap;
	s->count--;
	return 0;
}

const struct io_ops io_sync_ops = {
	.name = "sync",
	.init = io_sync_init,
	.release = io_sync_release,
	.submit = io_sync_submit,
	.reap = io_sync_reap,
};

/* ---- fault injection ---- */

static struct io_fault_config fault_cfg;
static atomic_ulong fault_calls;

int io_fault_configure(const struct io_fault_config *cfg)
{
	if (cfg->nth && cfg->err <= 0)
		return -EINVAL;
	/* The generic layer retries EINTR and EAGAIN: failing them forever
	 * would never end. */
	if (cfg->nth && cfg->count == 0 && (cfg->err == EINTR || cfg->err == EAGAIN))
		return -EINVAL;
	fault_cfg = *cfg;
	atomic_store(&fault_calls, 0);
	return 0;
}

unsigned long io_fault_calls(void)
{
	return atomic_load(&fault_calls);
}

static const struct {
	const char *name;
	int err;
} fault_errnos[] = {
	{"EIO", EIO},	    {"ENOSPC", ENOSPC}, {"EDQUOT", EDQUOT}, {"EINTR", EINTR},
	{"EAGAIN", EAGAIN}, {"EROFS", EROFS},	{"EBADF", EBADF},   {"EFBIG", EFBIG},
};

int io_fault_parse(const char *spec, struct io_fault_config *ret)
{
	struct io_fault_config cfg = {.err = EIO};
	_cleanup_free_ char *copy = strdup(spec);
	char *save = NULL;

	if (!copy)
		return -ENOMEM;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *val = strchr(tok, '='), *end;

		if (!val)
			return -EINVAL;
		*val++ = '\0';
		if (!strcmp(tok, "op")) {
			if (!strcmp(val, "read"))
				cfg.ops = IO_OP_READ;
			else if (!strcmp(val, "write"))
				cfg.ops = IO_OP_WRITE;
			else if (!strcmp(val, "fsync"))
				cfg.ops = IO_OP_FSYNC;
			else if (!strcmp(val, "any"))
				cfg.ops = 0;
			else
				return -EINVAL;
		} else if (!strcmp(tok, "nth") || !strcmp(tok, "count")) {
			unsigned long v;

			if (*val < '0' || *val > '9')
				return -EINVAL; /* strtoul would wrap "-1" */
			errno = 0;
			v = strtoul(val, &end, 10);
			if (errno || *end || end == val)
				return -EINVAL;
			if (!strcmp(tok, "nth"))
				cfg.nth = v;
			else
				cfg.count = v;
		} else if (!strcmp(tok, "errno")) {
			size_t i;

			for (i = 0; i < ARRAY_SIZE(fault_errnos); i++)
				if (!strcmp(val, fault_errnos[i].name))
					break;
			if (i == ARRAY_SIZE(fault_errnos))
				return -EINVAL;
			cfg.err = fault_errnos[i].err;
		} else if (!strcmp(tok, "short")) {
			cfg.short_io = !strcmp(val, "1");
		} else {
			return -EINVAL;
		}
	}
	*ret = cfg;
	return 0;
}

static int io_fault_submit(struct io_ctx *ctx, struct io_req *req)
{
	size_t len = io_req_remaining(req);
	unsigned long n;

	if (fault_cfg.ops && !(fault_cfg.ops & req->op))
		return io_sync_submit(ctx, req);

	n = atomic_fetch_add(&fault_calls, 1) + 1;
	if (fault_cfg.nth && n >= fault_cfg.nth &&
	    (fault_cfg.count == 0 || n < fault_cfg.nth + fault_cfg.count))
		return io_sync_queue(ctx, req, -fault_cfg.err);
	if (fault_cfg.short_io && len > 1)
		len /= 2;
	return io_sync_queue(ctx, req, io_sync_do(req, len));
}

const struct io_ops io_fault_ops = {
	.name = "fault",
	.init = io_sync_init,
	.release = io_sync_release,
	.submit = io_fault_submit,
	.reap = io_sync_reap,
};
