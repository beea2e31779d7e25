/* The FUSE session resyncfs sets up, as numbers: the mount's one file,
 * its request sizes, its queue and its workers. bench/fuse-floor.c, the
 * least server that measures what bounds resyncfs, takes the same ones
 * from here, so the two cannot drift apart. No dependencies. */
#pragma once

/* The volume file: inode and name under the mount's root. */
#define RESYNC_FUSEFS_VOLUME_INO 2
#define RESYNC_FUSEFS_NAME "volume"
/* Largest READ, and the write buffer (a WRITE is one page less: the
 * request's header page in the splice pipe). */
#define RESYNC_FUSEFS_MAX_IO (1u << 20)
#define RESYNC_FUSEFS_MAX_WRITE (RESYNC_FUSEFS_MAX_IO - 4096u)
/* Background requests the kernel lets through (loop direct I/O, AIO). */
#define RESYNC_FUSEFS_MAX_BACKGROUND 64
/* Entry and attribute timeout, seconds: the tree never changes; a grown
 * size is invalidated. */
#define RESYNC_FUSEFS_TIMEOUT 86400.0
/* Worker threads by default (fusefs.c says why 16). */
#define RESYNC_FUSEFS_THREADS_DEFAULT 16
