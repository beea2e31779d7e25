/* The generic I/O layer: picks a backend and makes every transfer total. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "resync/io.h"
#include "resync/limits.h"
#include "resync/macro.h"
#include "io-int.h"

static enum io_kind io_kind_from_env(void);

struct io_ctx {
	const struct io_ops *ops;
	void *backend;
	unsigned depth;
	unsigned inflight;
};

/* One submission never asks the kernel for more than this. */
#define IO_MAX_PER_CALL (1u << 30)

static const struct io_ops *io_ops_for(enum io_kind kind)
{
	switch (kind) {
	case IO_KIND_URING:
		return &io_uring_ops;
	case IO_KIND_SYNC:
		return &io_sync_ops;
	case IO_KIND_FAULT:
		return &io_fault_ops;
	case IO_KIND_AUTO:
		break;
	}
	return NULL;
}

enum io_kind io_kind_resolve(enum io_kind kind)
{
	return kind == IO_KIND_AUTO ? io_kind_from_env() : kind;
}

static enum io_kind io_kind_from_env(void)
{
	const char *e = getenv("RESYNC_IO");

	if (!e || !*e || !strcmp(e, "auto"))
		return IO_KIND_AUTO;
	if (!strcmp(e, "sync"))
		return IO_KIND_SYNC;
	if (!strcmp(e, "uring") || !strcmp(e, "io_uring"))
		return IO_KIND_URING;
	if (!strcmp(e, "fault"))
		return IO_KIND_FAULT;
	return IO_KIND_AUTO;
}

/* RESYNC_FAULT is read once per process, when the first fault context is
 * made, so that every thread counts against the same configuration. */
static pthread_once_t fault_env_once = PTHREAD_ONCE_INIT;
static int fault_env_result;

static void io_fault_from_env(void)
{
	const char *spec = getenv("RESYNC_FAULT");
	struct io_fault_config cfg;

	if (!spec)
		return;
	fault_env_result = io_fault_parse(spec, &cfg);
	if (fault_env_result >= 0)
		fault_env_result = io_fault_configure(&cfg);
}

static int io_ctx_new_ops(const struct io_ops *ops, unsigned depth, struct io_ctx **ret)
{
	struct io_ctx *ctx = calloc(1, sizeof(*ctx));
	int r;

	if (!ctx)
		return -ENOMEM;
	ctx->ops = ops;
	ctx->depth = depth;
	r = ops->init(ctx, depth);
	if (r < 0) {
		free(ctx);
		return r;
	}
	*ret = ctx;
	return 0;
}

int io_ctx_new(enum io_kind kind, unsigned depth, struct io_ctx **ret)
{
	int r;

	if (depth == 0 || depth > RESYNC_IO_DEPTH_MAX)
		return -EINVAL;
	if (kind == IO_KIND_AUTO)
		kind = io_kind_from_env();
	if (kind == IO_KIND_FAULT) {
		pthread_once(&fault_env_once, io_fault_from_env);
		if (fault_env_result < 0)
			return fault_env_result;
	}
	if (kind != IO_KIND_AUTO)
		return io_ctx_new_ops(io_ops_for(kind), depth, ret);

	/* Auto: io_uring where the kernel allows it (it may be missing,
	 * disabled by sysctl or refused by seccomp), else plain syscalls. */
	r = io_ctx_new_ops(&io_uring_ops, depth, ret);
	if (r >= 0)
		return r;
	return io_ctx_new_ops(&io_sync_ops, depth, ret);
}

void io_ctx_free(struct io_ctx *ctx)
{
	if (!ctx)
		return;
	ctx->ops->release(ctx);
	free(ctx);
}

const char *io_ctx_name(const struct io_ctx *ctx)
{
	return ctx->ops->name;
}

void *io_ctx_backend(struct io_ctx *ctx)
{
	return ctx->backend;
}

void io_ctx_set_backend(struct io_ctx *ctx, void *data)
{
	ctx->backend = data;
}

unsigned io_ctx_depth(const struct io_ctx *ctx)
{
	return ctx->depth;
}

unsigned io_ctx_inflight(const struct io_ctx *ctx)
{
	return ctx->inflight;
}

int io_ctx_submit(struct io_ctx *ctx, struct io_req *req)
{
	int r;

	if (ctx->inflight >= ctx->depth)
		return -EBUSY;
	req->done = 0;
	req->res = 0;
	r = ctx->ops->submit(ctx, req);
	if (r < 0)
		return r;
	ctx->inflight++;
	return 0;
}

int io_ctx_wait(struct io_ctx *ctx, struct io_req **ret_req)
{
	if (ctx->inflight == 0)
		return -ENOENT;

	for (;;) {
		struct io_req *req;
		long long res;
		int r;

		r = ctx->ops->reap(ctx, &req, &res);
		if (r < 0)
			return r;

		if (res == -EINTR || res == -EAGAIN)
			goto resubmit;
		if (res < 0) {
			req->res = (int)res;
			goto complete;
		}
		if (req->op == IO_OP_FSYNC)
			goto complete;
		req->done += (size_t)res;
		if (req->done >= req->len)
			goto complete;
		if (res == 0) {
			/* End of file for a read; a write that makes no
			 * progress would loop forever. */
			if (req->op == IO_OP_WRITE)
				req->res = -EIO;
			goto complete;
		}
	resubmit:
		r = ctx->ops->submit(ctx, req);
		if (r >= 0)
			continue;
		req->res = r;
	complete:
		ctx->inflight--;
		*ret_req = req;
		return 0;
	}
}

static long long io_run_one(struct io_ctx *ctx, struct io_req *req)
{
	struct io_req *done;
	int r;

	/* The synchronous helpers need a free slot. */
	if (ctx->inflight >= ctx->depth)
		return -EBUSY;
	r = io_ctx_submit(ctx, req);
	if (r < 0)
		return r;
	for (;;) {
		r = io_ctx_wait(ctx, &done);
		if (r < 0)
			return r;
		if (done == req)
			break;
		/* Not ours: a caller mixing async and sync use must not. */
		return -EINVAL;
	}
	if (req->res < 0)
		return req->res;
	return (long long)req->done;
}

long long io_pread_full(struct io_ctx *ctx, int fd, void *buf, size_t len, uint64_t off)
{
	struct io_req req = {.op = IO_OP_READ, .fd = fd, .buf = buf, .len = len, .off = off};

	return io_run_one(ctx, &req);
}

long long io_pwrite_full(struct io_ctx *ctx, int fd, const void *buf, size_t len, uint64_t off)
{
	struct io_req req = {
		.op = IO_OP_WRITE, .fd = fd, .buf = (void *)buf, .len = len, .off = off};

	return io_run_one(ctx, &req);
}

int io_fdatasync(struct io_ctx *ctx, int fd)
{
	struct io_req req = {.op = IO_OP_FSYNC, .fd = fd};
	long long r = io_run_one(ctx, &req);

	return r < 0 ? (int)r : 0;
}

size_t io_req_remaining(const struct io_req *req)
{
	return MIN(req->len - req->done, (size_t)IO_MAX_PER_CALL);
}
