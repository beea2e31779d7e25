/* The patch writer: applies blocks received out of a stream (a network
 * resync, a delta) to a destination volume. Adjacent pieces are merged into
 * large writes, all-zero runs become holes where the volume can punch them,
 * and every range that reached the volume is reported, so that a FUSE
 * mount can drop its cached pages and a checkpoint can advance.
 *
 * Not thread-safe: one writer per stream. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "resync/io.h"
#include "resync/volume.h"

struct patch_opts {
	enum io_kind io;  /* IO_KIND_AUTO by default */
	bool punch_zeros; /* write zero runs of >= 64 KiB as holes */
	size_t batch;	  /* merge buffer; 0 = 4 MiB */
	/* Called after each write reached the volume (not yet durable). */
	void (*on_written)(void *arg, uint64_t off, uint64_t len);
	void *arg;
};

struct patch_stats {
	uint64_t bytes_written; /* bytes put, written or punched */
	uint64_t bytes_punched;
	uint64_t writes; /* write or punch calls issued */
};

struct patch_writer;

/* Borrow dst (must be open for writing) for the writer's lifetime. */
int patch_writer_new(struct volume *dst, const struct patch_opts *opts, struct patch_writer **ret);
/* Free; pending data not flushed is dropped (call patch_writer_sync first). */
void patch_writer_free(struct patch_writer *w);

/* Queue len bytes for offset off; data is copied, the caller keeps it.
 * Writes past the volume's end are refused with -EFBIG. */
int patch_writer_put(struct patch_writer *w, uint64_t off, const void *data, size_t len);
/* What is queued written, then len bytes of data at off at once, from
 * data itself (no copy: for runs that are not adjacent, which put would
 * not merge anyway). Refused past the volume's end as put. Returns 0 or
 * -errno of the write. */
int patch_writer_write(struct patch_writer *w, uint64_t off, const void *data, size_t len);
/* Write whatever is queued. */
int patch_writer_flush(struct patch_writer *w);
/* Flush and make everything durable (fdatasync). The first sync of a
 * writer always issues one (it also covers whatever was left dirty in
 * the destination before the writer existed: a killed process's
 * writes); after a successful one, a sync with nothing written or
 * punched through w since issues none: there is nothing more to make
 * durable (a resync's commit follows the checkpoint that flushed its
 * last pass, and each flush on a disk shared with other secondaries
 * waits for their writes too). */
int patch_writer_sync(struct patch_writer *w);
void patch_writer_stats(const struct patch_writer *w, struct patch_stats *ret);
