/* What test-wire.c and test-wire-data.c share: the truncation check every
 * message passes, and little-endian writers for payloads made by hand. */
#pragma once

#include <endian.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "wire.h"

/* Every proper prefix of a valid payload, and the payload with a byte
 * more, are refused. */
static inline void check_truncations(unsigned type, const unsigned char *p, size_t len)
{
	unsigned char *copy = malloc(len + 1);

	assert_int_equal(wire_payload_check(type, p, len), 0);
	memcpy(copy, p, len);
	for (size_t l = 0; l < len; l++)
		if (wire_payload_check(type, copy, l) != -EBADMSG)
			fail_msg("%s: prefix of %zu of %zu bytes accepted", wire_type_name(type), l,
				 len);
	copy[len] = 0;
	assert_int_equal(wire_payload_check(type, copy, len + 1), -EBADMSG);
	free(copy);
}

static inline void put16(unsigned char *p, uint16_t v)
{
	v = htole16(v);
	memcpy(p, &v, 2);
}

static inline void put32(unsigned char *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}

static inline void put64(unsigned char *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, 8);
}
