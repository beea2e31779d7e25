/* A growable list of byte ranges. */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct range {
	uint64_t off, len;
};

struct rangelist {
	struct range *v;
	size_t n, cap;
};

/* Append [off, off+len), merging with the last range when adjacent. */
int rangelist_add(struct rangelist *l, uint64_t off, uint64_t len);
/* Append all of other's ranges. */
int rangelist_extend(struct rangelist *l, const struct rangelist *other);
/* Sort by offset and merge adjacent or overlapping ranges. */
void rangelist_normalize(struct rangelist *l);
/* Sum of lengths. */
uint64_t rangelist_bytes(const struct rangelist *l);
void rangelist_release(struct rangelist *l);
