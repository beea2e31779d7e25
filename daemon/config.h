/* The daemon's side of the configuration: the cluster file itself is read
 * by the shared library (resync/config.h, also used by resyncctl); the
 * cluster's shared secret needs OpenSSL and stays here. */
#pragma once

#include <stddef.h>

#include "resync/config.h"

/* The cluster key, read once from a file and kept in locked memory that is
 * wiped when freed. */
struct secret;

/* Read path: refused unless it is a regular file that neither group nor
 * others may read or write, holding RESYNC_SECRET_MIN to RESYNC_SECRET_MAX
 * bytes (one trailing newline is not part of the key). On failure a
 * message naming the file is written to err. Returns 0 and *ret, or
 * -EPERM (mode), -EINVAL (type, length), -errno. */
int secret_load(const char *path, char *err, size_t errlen, struct secret **ret);
/* A secret holding a copy of data[0, len) (tests; derived keys). */
int secret_new(const void *data, size_t len, struct secret **ret);
/* Wipe and release; NULL is accepted. */
void secret_free(struct secret *s);
const void *secret_data(const struct secret *s);
size_t secret_size(const struct secret *s);
/* HKDF-SHA256 of the secret with salt and info, len bytes (1 to 64), into
 * a new secret. The key that TLS uses is derived this way so that the raw
 * file contents never serve as a key on the wire. */
int secret_derive(const struct secret *s, const char *salt, const char *info, size_t len,
		  struct secret **ret);
