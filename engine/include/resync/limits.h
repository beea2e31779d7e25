/* Every size limit of the project in one place. Lengths that come from a
 * peer or a file are checked against these before use. */
#pragma once

enum resync_limits {
	RESYNC_BLOCK_MIN = 4096,
	RESYNC_BLOCK_MAX = 1 << 20,
	RESYNC_BLOCK_DEFAULT = 64 * 1024,
	/* Granularity of writes inside a differing block: pages that still
	 * match are not rewritten. */
	RESYNC_PAGE = 4096,
	/* Unit of I/O of the compare/hash readers. */
	RESYNC_CHUNK = 1 << 20,
	/* Work unit handed to a reader thread. */
	RESYNC_UNIT = 8 << 20,
	RESYNC_THREADS_MAX = 16,
	RESYNC_IO_DEPTH_MAX = 64,
};

/* Whether a block size is acceptable: a power of two in [4 KiB, 1 MiB]. */
static inline int resync_block_size_valid(unsigned long long bs)
{
	return bs >= RESYNC_BLOCK_MIN && bs <= RESYNC_BLOCK_MAX && (bs & (bs - 1)) == 0;
}
