/* The cluster key in memory: one anonymous mapping, locked so it is never
 * swapped, left out of core dumps, and wiped before it is unmapped. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "config.h"
#include "resync/fileio.h"
#include "resync/limits.h"
#include "resync/macro.h"

struct secret {
	size_t len;	 /* key bytes */
	size_t map_len;	 /* bytes mapped, this header included */
	unsigned char data[];
};

static int secret_alloc(size_t len, struct secret **ret)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t map_len = DIV_ROUND_UP(sizeof(struct secret) + len + 1, (size_t)page) * page;
	struct secret *s;

	s = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (s == MAP_FAILED)
		return -errno;
	if (mlock(s, map_len) < 0) {
		int e = errno;

		munmap(s, map_len);
		return -e;
	}
	(void)madvise(s, map_len, MADV_DONTDUMP);
	s->len = len;
	s->map_len = map_len;
	*ret = s;
	return 0;
}

void secret_free(struct secret *s)
{
	size_t map_len;

	if (!s)
		return;
	map_len = s->map_len;
	explicit_bzero(s, map_len);
	munlock(s, map_len);
	munmap(s, map_len);
}

DEFINE_FREE_FUNC(struct secret, secret_free)

int secret_new(const void *data, size_t len, struct secret **ret)
{
	struct secret *s;
	int r;

	r = secret_alloc(len, &s);
	if (r < 0)
		return r;
	memcpy(s->data, data, len);
	*ret = s;
	return 0;
}

const void *secret_data(const struct secret *s)
{
	return s->data;
}

size_t secret_size(const struct secret *s)
{
	return s->len;
}

int secret_load(const char *path, char *err, size_t errlen, struct secret **ret)
{
	_cleanup_(secret_freep) struct secret *s = NULL;
	_cleanup_close_ int fd = -1;
	struct stat st;
	size_t len;
	ssize_t n;
	int r;

	if (errlen)
		err[0] = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0 || fstat(fd, &st) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot open secret file '%s': %s", path, strerror(-r));
		return r;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "secret file '%s' is not a regular file", path);
		return -EINVAL;
	}
	if (st.st_mode & 077) {
		snprintf(err, errlen,
			 "secret file '%s' is accessible to group or others (mode %04o); "
			 "run: chmod 600 '%s'",
			 path, (unsigned)(st.st_mode & 07777), path);
		return -EPERM;
	}
	/* Read into locked memory directly: the key never sits in a stdio
	 * buffer. One byte more than allowed, to notice a file too long. */
	r = secret_alloc(RESYNC_SECRET_MAX + 2, &s);
	if (r < 0) {
		snprintf(err, errlen, "cannot lock memory for the secret: %s", strerror(-r));
		return r;
	}
	n = fd_read_all(fd, s->data, RESYNC_SECRET_MAX + 2);
	if (n < 0) {
		snprintf(err, errlen, "cannot read secret file '%s': %s", path, strerror((int)-n));
		return (int)n;
	}
	len = (size_t)n;
	if (len && s->data[len - 1] == '\n')
		len--;
	if (len && s->data[len - 1] == '\r')
		len--;
	if (len < RESYNC_SECRET_MIN || len > RESYNC_SECRET_MAX) {
		snprintf(err, errlen, "secret file '%s' must hold %d to %d bytes, not %s%zu", path,
			 RESYNC_SECRET_MIN, RESYNC_SECRET_MAX, len > RESYNC_SECRET_MAX ? "more than " : "",
			 MIN(len, (size_t)RESYNC_SECRET_MAX));
		return -EINVAL;
	}
	explicit_bzero(s->data + len, RESYNC_SECRET_MAX + 2 - len);
	s->len = len;
	*ret = TAKE_PTR(s);
	return 0;
}

int secret_derive(const struct secret *s, const char *salt, const char *info, size_t len,
		  struct secret **ret)
{
	_cleanup_(secret_freep) struct secret *out = NULL;
	EVP_KDF *kdf;
	EVP_KDF_CTX *kctx;
	OSSL_PARAM params[5], *p = params;
	int r;

	if (len == 0 || len > 64)
		return -EINVAL;
	r = secret_alloc(len, &out);
	if (r < 0)
		return r;
	kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	if (!kdf)
		return -ENOTSUP;
	kctx = EVP_KDF_CTX_new(kdf);
	EVP_KDF_free(kdf);
	if (!kctx)
		return -ENOMEM;
	*p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)s->data, s->len);
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, strlen(salt));
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, strlen(info));
	*p = OSSL_PARAM_construct_end();
	r = EVP_KDF_derive(kctx, out->data, len, params) == 1 ? 0 : -EIO;
	EVP_KDF_CTX_free(kctx);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(out);
	return 0;
}
