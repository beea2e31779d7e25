/* The walk's first level (job-walk.c): which level of a secondary's hash
 * tree the primary asks for whole first, sized by the link's round trip
 * (issue 18). The rest of the walk's interface is in node-int.h. */
#pragma once

#include <stdint.h>

struct job;

/* The nodes the walk's first level may have over a link of round trip
 * rtt_usec (0: unknown): the floor of 4,096 below 5 ms, up to one
 * request's RESYNC_WIRE_HASHES_MAX (the rule is in job-walk.c). */
uint64_t job_walk_first_nodes(uint64_t rtt_usec);
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
