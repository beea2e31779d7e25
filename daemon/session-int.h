/* The secondary's session, shared by two of its rooms: session.c (the
 * frames dispatched by type, the reads, the thread) and session-write.c
 * (the primary's writes). struct session and what other rooms call are
 * in node-int.h. Not for the rest of the daemon. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "node-int.h"

/* The handlers of the primary's writes, for session_ops[] (struct
 * session_op's contract: 0 to go on, -errno to end with an ERROR). */
int session_blocks(struct session *s, size_t len);
int session_extents(struct session *s, size_t len);
int session_checkpoint(struct session *s, size_t len);
int session_commit(struct session *s, size_t len);
int session_proof_req(struct session *s, size_t len);
int session_proof_commit(struct session *s, size_t len);
/* The writing ended (the writeback stopped, the data synced, the mount
 * thawed, n->writing released): at a commit and at the session's end.
 * Nothing to do when the session is not writing. */
void session_write_end(struct session *s);
/* A frame of type (ACK) that carries off. */
int session_send_offset(struct peer_conn *c, uint16_t type, uint64_t off);
