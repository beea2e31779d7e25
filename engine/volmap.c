/* A read-only mapping of a whole volume (resync/volmap.h). */
#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "resync/volmap.h"
#include "resync/volume.h"

int volume_map_init(struct volume_map *m, struct volume *v)
{
	uint64_t len = volume_size(v);
	void *p;

	m->p = NULL;
	m->len = 0;
	if (!len || volume_on_tmpfs(v))
		return -ENOTSUP;
	if (len > SIZE_MAX)
		return -EFBIG;
	p = mmap(NULL, (size_t)len, PROT_READ, MAP_SHARED, volume_fd(v), 0);
	if (p == MAP_FAILED)
		return -errno;
	m->p = p;
	m->len = len;
	return 0;
}

void volume_map_release(struct volume_map *m)
{
	if (m->p)
		munmap((void *)m->p, (size_t)m->len);
	m->p = NULL;
	m->len = 0;
}

int volume_map_get(const struct volume_map *m, uint64_t off, uint64_t len,
		   const unsigned char **ret)
{
	/* madvise wants a page-aligned start: the page of off. */
	uint64_t start = off & ~((uint64_t)sysconf(_SC_PAGESIZE) - 1);

	if (!m->p || off > m->len || len > m->len - off)
		return -EINVAL;
	if (len && madvise((void *)(m->p + start), (size_t)(off + len - start),
			   MADV_POPULATE_READ) < 0)
		return -errno;
	*ret = m->p + off;
	return 0;
}
