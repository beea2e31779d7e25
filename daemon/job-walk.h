/* The walk's first level (job-walk.c): which level of a secondary's hash
 * tree the primary asks for whole first, sized by the link's round trip
 * (issue 18). The rest of the walk's interface is in node-int.h. */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct job;
struct peer_conn;
struct walk_first;

/* The nodes the walk's first level may have over a link of round trip
 * rtt_usec (0: unknown): the floor of 4,096 below 5 ms, up to reqs
 * requests of RESYNC_WIRE_HASHES_MAX (at most JOB_WALK_FIRST_REQS; the
 * rule is in job-walk.c). */
uint64_t job_walk_first_nodes(uint64_t rtt_usec, unsigned reqs);
/* The requests a first level of count nodes takes. */
unsigned job_walk_first_parts(uint64_t count);
/* Part k of first level f as a HASH_REQ's payload into buf (of
 * RESYNC_WIRE_FRAME_MAX): 0 and *ret_len, or -EINVAL past its parts. */
int job_walk_first_encode(const struct walk_first *f, unsigned k, unsigned char *buf,
			  size_t *ret_len);
/* Parts from..the last of f sent on c as frames of type (HASH_REQ, or
 * HASH_REQ_MORE behind a HASH_REQ_IF): 0 or -errno. */
int job_walk_first_send(struct peer_conn *c, uint16_t type, const struct walk_first *f,
			unsigned from);
/* struct peer_early's rest for job arg: j->first_req's parts after the
 * first, as j->first_rest frames. */
int job_walk_first_rest(void *arg, struct peer_conn *c);
/* The deepest level of a tree of nleaves leaves and fanout with at most
 * max_nodes nodes, and its count of nodes. */
void job_walk_first(uint64_t nleaves, unsigned fanout, uint64_t max_nodes, unsigned *ret_level,
		    uint64_t *ret_count);
/* The level j's walk starts at, and its count (the prefetch's request):
 * the plan's memo's (j->memo_in) when its tree has this shape, else by
 * the round trip measured on j->c; chosen once (j->first_level), so that
 * the prefetch and the walk ask the same. */
void job_walk_first_level(struct job *j, uint64_t nleaves, unsigned fanout, unsigned *ret_level,
			  uint64_t *ret_count);
