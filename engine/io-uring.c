/* io_uring backend. Submissions are batched: submit() only fills SQEs and
 * reap() pushes them to the kernel while it waits, so a caller that queues
 * several reads pays one system call. */
#include <errno.h>
#include <unistd.h>
#include <liburing.h>
#include <stdlib.h>

#include "io-int.h"

struct io_uring_backend {
	struct io_uring ring;
	unsigned unsubmitted;
};

static int io_uring_backend_init(struct io_ctx *ctx, unsigned depth)
{
	struct io_uring_backend *b = calloc(1, sizeof(*b));
	int r;

	if (!b)
		return -ENOMEM;
	r = io_uring_queue_init(depth, &b->ring, 0);
	if (r < 0) {
		free(b);
		return r;
	}
	io_ctx_set_backend(ctx, b);
	return 0;
}

static void io_uring_backend_release(struct io_ctx *ctx)
{
	struct io_uring_backend *b = io_ctx_backend(ctx);

	io_uring_queue_exit(&b->ring);
	free(b);
}

/* io_uring_enter() may refuse for a moment (-EAGAIN: out of resources;
 * -EBUSY: completions not yet reaped fill the CQ ring): such a refusal
 * is retried a bounded number of times, yielding in between, before it
 * fails the request. */
enum { IO_URING_RETRIES = 2000, IO_URING_RETRY_USEC = 500 };

static bool io_uring_transient(int r)
{
	return r == -EAGAIN || r == -EBUSY || r == -EINTR;
}

static int io_uring_backend_submit(struct io_ctx *ctx, struct io_req *req)
{
	struct io_uring_backend *b = io_ctx_backend(ctx);
	struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);
	size_t len = io_req_remaining(req);

	for (unsigned tries = 0; !sqe; tries++) {
		int r = io_uring_submit(&b->ring);

		if (r < 0 && (!io_uring_transient(r) || tries >= IO_URING_RETRIES))
			return r;
		if (r >= 0)
			b->unsubmitted = 0;
		sqe = io_uring_get_sqe(&b->ring);
		if (!sqe && tries >= IO_URING_RETRIES)
			return -EBUSY;
		if (!sqe)
			usleep(IO_URING_RETRY_USEC);
	}
	switch (req->op) {
	case IO_OP_READ:
		io_uring_prep_read(sqe, req->fd, (char *)req->buf + req->done, (unsigned)len,
				   req->off + req->done);
		break;
	case IO_OP_WRITE:
		io_uring_prep_write(sqe, req->fd, (char *)req->buf + req->done, (unsigned)len,
				    req->off + req->done);
		break;
	case IO_OP_FSYNC:
		io_uring_prep_fsync(sqe, req->fd, IORING_FSYNC_DATASYNC);
		break;
	default:
		return -EINVAL;
	}
	io_uring_sqe_set_data(sqe, req);
	b->unsubmitted++;
	return 0;
}

static int io_uring_backend_reap(struct io_ctx *ctx, struct io_req **ret_req, long long *ret_res)
{
	struct io_uring_backend *b = io_ctx_backend(ctx);
	struct io_uring_cqe *cqe;
	int r;

	for (unsigned tries = 0;; tries++) {
		if (b->unsubmitted) {
			r = io_uring_submit_and_wait(&b->ring, 1);
			if (r >= 0)
				b->unsubmitted = 0;
		} else {
			r = io_uring_wait_cqe(&b->ring, &cqe);
		}
		/* Refused for now: a completion already there is taken (it
		 * frees room), else wait a moment and submit again. */
		if (r < 0 && io_uring_transient(r) && io_uring_peek_cqe(&b->ring, &cqe) == 0)
			break;
		if (r == -EINTR)
			continue;
		if (r < 0 && io_uring_transient(r) && tries < IO_URING_RETRIES) {
			usleep(IO_URING_RETRY_USEC);
			continue;
		}
		if (r < 0)
			return r;
		r = io_uring_peek_cqe(&b->ring, &cqe);
		if (r == -EAGAIN)
			continue;
		if (r < 0)
			return r;
		break;
	}
	*ret_req = io_uring_cqe_get_data(cqe);
	*ret_res = cqe->res;
	io_uring_cqe_seen(&b->ring, cqe);
	return 0;
}

const struct io_ops io_uring_ops = {
	.name = "io_uring",
	.init = io_uring_backend_init,
	.release = io_uring_backend_release,
	.submit = io_uring_backend_submit,
	.reap = io_uring_backend_reap,
};
