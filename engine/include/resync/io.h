/* Volume I/O behind one ops table: io_uring, plain pread/pwrite, and a
 * fault-injecting backend for tests.
 *
 * An io_ctx belongs to one thread. Requests are caller-owned; a request and
 * its buffer belong to the context from io_ctx_submit() until io_ctx_wait()
 * returns it. The generic layer makes I/O total: short transfers and EINTR or
 * EAGAIN are resubmitted, so a completed request has either res < 0 (-errno)
 * or done == len, except a read that hit end of file (done < len, res == 0). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum io_kind {
	IO_KIND_AUTO = 0, /* RESYNC_IO env (uring|sync|fault), else io_uring, else sync */
	IO_KIND_URING,
	IO_KIND_SYNC,
	IO_KIND_FAULT, /* sync backend with faults from RESYNC_FAULT */
};

enum io_op {
	IO_OP_READ = 1 << 0,
	IO_OP_WRITE = 1 << 1,
	IO_OP_FSYNC = 1 << 2, /* fdatasync; buf, len and off unused */
};

struct io_req {
	enum io_op op;
	int fd;
	void *buf;
	size_t len;
	uint64_t off;
	/* Filled by the context. */
	size_t done;
	int res;
	/* Caller's tag, untouched. */
	void *user;
};

struct io_ctx;

/* A backend. Each call transfers at most once; the generic layer loops.
 * submit() queues the request's remaining part (buf + done, len - done,
 * off + done); reap() returns one finished request and its raw result
 * (bytes or -errno), waiting if none is ready. */
struct io_ops {
	const char *name;
	int (*init)(struct io_ctx *ctx, unsigned depth);
	void (*release)(struct io_ctx *ctx);
	int (*submit)(struct io_ctx *ctx, struct io_req *req);
	int (*reap)(struct io_ctx *ctx, struct io_req **ret_req, long long *ret_res);
};

/* Fault injection (IO_KIND_FAULT). Counters are process-wide, so "the Nth
 * write" means the Nth write call of the whole process. Configured by
 * io_fault_configure() or the RESYNC_FAULT environment variable:
 * "op=write,nth=3,errno=ENOSPC,count=1,short=1" (every key optional). */
struct io_fault_config {
	unsigned ops;	     /* IO_OP_* mask the fault applies to; 0 = all */
	unsigned long nth;   /* first failing call, counted from 1; 0 = never */
	unsigned long count; /* how many calls fail from nth on; 0 = all of them */
	int err;	     /* positive errno to fail with */
	bool short_io;	     /* transfer at most half of each request (still total) */
};
int io_fault_configure(const struct io_fault_config *cfg);
int io_fault_parse(const char *spec, struct io_fault_config *ret);
/* Calls counted so far by the fault backend (all ops). */
unsigned long io_fault_calls(void);

/* The kind a context of kind would get from the environment: kind itself
 * unless it is IO_KIND_AUTO, then RESYNC_IO's choice, else IO_KIND_AUTO. */
enum io_kind io_kind_resolve(enum io_kind kind);

/* Create a context of kind (IO_KIND_AUTO resolves as documented above) with
 * up to depth requests in flight. Returns 0 or -errno. */
int io_ctx_new(enum io_kind kind, unsigned depth, struct io_ctx **ret);
void io_ctx_free(struct io_ctx *ctx);
/* The backend's name: "io_uring", "sync" or "fault". */
const char *io_ctx_name(const struct io_ctx *ctx);
/* Private data slot for the backend. */
void *io_ctx_backend(struct io_ctx *ctx);
void io_ctx_set_backend(struct io_ctx *ctx, void *data);
unsigned io_ctx_depth(const struct io_ctx *ctx);
unsigned io_ctx_inflight(const struct io_ctx *ctx);

/* Queue a request; fails with -EBUSY when depth requests are in flight. */
int io_ctx_submit(struct io_ctx *ctx, struct io_req *req);
/* Wait for one request to complete (total, as described above) and return
 * it. Returns 0, or -errno if the context itself failed; the request's own
 * error is in req->res. -ENOENT when nothing is in flight. */
int io_ctx_wait(struct io_ctx *ctx, struct io_req **ret_req);

/* Synchronous helpers over a context. Return bytes transferred (reads stop
 * short only at end of file) or -errno. */
long long io_pread_full(struct io_ctx *ctx, int fd, void *buf, size_t len, uint64_t off);
long long io_pwrite_full(struct io_ctx *ctx, int fd, const void *buf, size_t len, uint64_t off);
int io_fdatasync(struct io_ctx *ctx, int fd);

/* The same without a context, for small files and callers that have no
 * backend to choose (metadata, caches): pread/pwrite until len, over
 * EINTR and short counts. 0, -ENODATA when a read meets end of file, or
 * -errno. */
int fd_pread_full(int fd, void *buf, size_t len, uint64_t off);
int fd_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);

/* The backends, for callers and tests that want one explicitly. */
extern const struct io_ops io_uring_ops;
extern const struct io_ops io_sync_ops;
extern const struct io_ops io_fault_ops;
