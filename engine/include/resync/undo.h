/* The undo journal: the contents a resync overwrote on a secondary, kept
 * beside the volume ("IMAGE.resync-undo") so that a rollback can put them
 * back (DESIGN.md, "Metadata"; issue 11).
 *
 * Format (little-endian, converted in undo.c only):
 *   header, UNDO_HEADER_SIZE bytes: magic "RSYNUNDO", version, the volume's
 *     size, the page size, the node's state, generation and history before
 *     the resync, the primary's generation the resync went to, when it was
 *     made and until when it is kept; an xxh3-64 checksum of all of it.
 *   records, each UNDO_RECORD_SIZE bytes of header {magic "UREC", type,
 *     encoding, offset, raw_len, enc_len, seq, check} and enc_len bytes of
 *     payload. A BLOCK record holds the old bytes [offset, offset+raw_len)
 *     of the volume, zstd-compressed when that is smaller (encoding 1) or
 *     raw (0). A ROLLBACK record (no payload) says a rollback started. check
 *     is an xxh3-64 over the record's header (check zeroed) and payload;
 *     seq counts records from 0, so a record copied from elsewhere fails.
 *
 * Each page (RESYNC_PAGE bytes) of the volume is saved at most once: the
 * first time a resync overwrites it. The journal therefore holds each
 * page's content from before the resync, whatever order the records are
 * replayed in, and a resync resumed after a crash goes on appending to the
 * same journal (undo_open() rebuilds which pages are saved).
 *
 * Crash safety: the header is written to a new file, fsynced and renamed
 * into place (undo_create()). Records are appended; undo_sync() makes
 * them durable. The caller calls undo_sync() before it writes any byte
 * that undo_save() saved: a crash then loses only records whose
 * overwrite never happened. undo_open() takes a torn last record
 * (short, or failing its check at the end of the file) as such a lost
 * record and cuts it off; a damaged record followed by more data is
 * damage: -EBADMSG.
 *
 * Not thread-safe: one journal, one user at a time. The library does not
 * log. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "resync/meta.h"

enum {
	UNDO_VERSION = 1,
	UNDO_HEADER_SIZE = 256,
	UNDO_RECORD_SIZE = 40,
	UNDO_RECORD_MAX = 1 << 20, /* raw bytes of one BLOCK record */
};

/* When a resync journals what it overwrites on a secondary. Values are
 * config and wire values: they never change. */
enum undo_mode {
	UNDO_MODE_OFF = 0,	/* never */
	UNDO_MODE_DIVERGED = 1, /* on a secondary that holds writes the primary lacks */
	UNDO_MODE_ON = 2,	/* always */
	UNDO_MODE_COUNT,
};
/* "off", "diverged", "on"; "?" for a value that is none. */
const char *undo_mode_name(enum undo_mode mode);

/* What a journal says of the volume before its resync. */
struct undo_info {
	uint64_t volume_size;
	enum meta_state state; /* before the resync */
	struct meta_uuid generation;
	struct meta_uuid history[RESYNC_META_HISTORY]; /* newest first */
	unsigned history_n;
	struct meta_uuid target; /* the primary's generation the resync went to */
	uint64_t created;	 /* unix seconds */
	uint64_t keep_until;	 /* unix seconds: dropped after */
};

struct undo_journal;

/* "IMAGE.resync-undo" for image; *ret is malloc'd. 0 or -ENOMEM. */
int undo_path_default(const char *image, char **ret);

/* A new, empty journal at path (replacing any there), crash-safely, open
 * for appending. max_bytes bounds the file (0: unbounded): undo_save()
 * fails with -EFBIG rather than grow past it. Returns 0 and *ret, or
 * -errno. */
int undo_create(const char *path, const struct undo_info *info, uint64_t max_bytes,
		struct undo_journal **ret);
/* Open the journal at path for a volume of volume_size bytes: the header
 * is checked, every record is read and checked, a torn last record is
 * cut off (writable journals only), and the saved pages are known again.
 * Returns 0 and *ret; -ENOENT (none); -EBADMSG (damaged: a bad header, a
 * damaged record before the end, another volume's size); -errno. */
int undo_open(const char *path, uint64_t volume_size, uint64_t max_bytes,
	      struct undo_journal **ret);
/* Close; nothing is written. NULL is accepted. */
void undo_free(struct undo_journal *j);

void undo_info_get(const struct undo_journal *j, struct undo_info *ret);
/* The journal's size in bytes (header and records). */
uint64_t undo_bytes(const struct undo_journal *j);
/* Old bytes saved (raw, before compression). */
uint64_t undo_saved_bytes(const struct undo_journal *j);
/* BLOCK records held. */
uint64_t undo_records(const struct undo_journal *j);
/* A ROLLBACK record is in the journal: a rollback started and may not
 * have ended. */
bool undo_rollback_started(const struct undo_journal *j);

/* Save the current bytes of the pages of [off, off+len) of the volume
 * behind vol_fd (of the journal's volume_size) that are not saved yet:
 * read, compressed, appended as BLOCK records. Not durable until
 * undo_sync(). Returns 0; -EINVAL (outside the volume); -EFBIG (past
 * max_bytes: nothing of this call is counted as saved); -errno. */
int undo_save(struct undo_journal *j, int vol_fd, uint64_t off, uint64_t len);
/* Make every record appended so far durable (fdatasync). 0 or -errno. */
int undo_sync(struct undo_journal *j);
/* Append a ROLLBACK record and make it durable. 0 or -errno. */
int undo_rollback_mark(struct undo_journal *j);

/* Called after each record's bytes reached the volume. */
typedef void undo_written_fn(void *arg, uint64_t off, uint64_t len);
/* Write every BLOCK record back to the volume behind vol_fd, newest
 * first, each record checked again, then fdatasync the volume. Returns 0
 * or -errno (-EBADMSG: a record failed its check; what was written
 * stays, and a replay may be repeated). */
int undo_replay(struct undo_journal *j, int vol_fd, undo_written_fn *on_written, void *arg);
/* The byte ranges the journal covers, in record order, to fn. */
int undo_ranges(const struct undo_journal *j, undo_written_fn *fn, void *arg);

/* Remove the journal at path durably (unlink, fsync of the directory).
 * 0 when there was none, or -errno. */
int undo_remove(const char *path);
