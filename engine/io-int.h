/* Private to the I/O backends. */
#pragma once

#include "resync/io.h"

/* Bytes of req left to transfer in one call (bounded). */
size_t io_req_remaining(const struct io_req *req);
