/* Fuzz target for the wire format: the input is a stream of frames (header
 * and payload) as a peer would send them. Every frame is decoded; what
 * decodes must encode back to the same bytes, and BLOCKS data must unpack
 * to exactly its declared length or be refused. Built as a libFuzzer target
 * with -DRESYNC_LIBFUZZER, and otherwise as a replayer of the files given
 * on the command line (files or directories), so every build replays the
 * corpus. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned char out[RESYNC_WIRE_FRAME_MAX];
static unsigned char raw[RESYNC_WIRE_BLOCKS_MAX];

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "fuzz-wire: %s:%d: %s\n", __FILE__, __LINE__, #cond);      \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

static void one_frame(struct wire_zstd *z, unsigned type, const uint8_t *p, size_t len)
{
	size_t n = 0;
	int r = wire_payload_check(type, p, len);

	CHECK(r == 0 || r == -EBADMSG);
	if (r < 0)
		return;
	switch (type) {
	case WIRE_HELLO:
	case WIRE_HELLO_ACK: {
		struct wire_hello h;

		CHECK(wire_hello_decode(p, len, &h) == 0);
		CHECK(wire_hello_encode(&h, out, sizeof(out), &n) == 0);
		CHECK(n == len && !memcmp(out, p, len));
		break;
	}
	case WIRE_REFUSE:
	case WIRE_ERROR: {
		struct wire_text t;

		CHECK(wire_text_decode(p, len, &t) == 0);
		CHECK(wire_text_encode(&t, out, sizeof(out), &n) == 0);
		CHECK(n == len && !memcmp(out, p, len));
		break;
	}
	case WIRE_HASH_REQ: {
		static struct hashtree_range rr[RESYNC_WIRE_RANGES_MAX];
		struct wire_hash_req q;
		uint64_t total = 0;

		CHECK(wire_hash_req_decode(p, len, &q) == 0);
		for (uint32_t i = 0; i < q.n_ranges; i++) {
			rr[i] = wire_hash_req_range(&q, i);
			total += rr[i].count;
		}
		CHECK(total == q.n_hashes && total <= RESYNC_WIRE_HASHES_MAX);
		CHECK(wire_hash_req_encode(q.seed, q.level, q.fanout, rr, q.n_ranges, out,
					   sizeof(out), &n) == 0);
		CHECK(n == len && !memcmp(out, p, len));
		break;
	}
	case WIRE_HASH_REPLY:
	case WIRE_PAGE_REPLY: {
		static struct hash128 h[RESYNC_WIRE_HASHES_MAX];
		struct wire_hash_reply rep;

		CHECK(wire_hash_reply_decode(p, len, &rep) == 0);
		CHECK(wire_hash_reply_get(&rep, h, RESYNC_WIRE_HASHES_MAX) == 0);
		CHECK(wire_hash_reply_encode(rep.level, h, rep.n_hashes, out, sizeof(out), &n) == 0);
		CHECK(n == len && !memcmp(out, p, len));
		break;
	}
	case WIRE_PAGE_REQ: {
		static struct hashtree_range rr[RESYNC_WIRE_RANGES_MAX];
		struct wire_page_req q;
		uint64_t total = 0;

		CHECK(wire_page_req_decode(p, len, &q) == 0);
		for (uint32_t i = 0; i < q.n_ranges; i++) {
			rr[i] = wire_page_req_range(&q, i);
			CHECK(rr[i].count > 0 && rr[i].first % q.page_size == 0);
			total += wire_pages(rr[i].count, q.page_size);
		}
		CHECK(total == q.n_pages && total <= RESYNC_WIRE_HASHES_MAX);
		CHECK(wire_page_req_encode(q.seed, q.page_size, rr, q.n_ranges, out, sizeof(out),
					   &n) == 0);
		CHECK(n == len && !memcmp(out, p, len));
		break;
	}
	case WIRE_BLOCKS: {
		struct wire_blocks b;

		CHECK(wire_blocks_decode(p, len, &b) == 0);
		CHECK(b.raw_len >= 1 && b.raw_len <= RESYNC_WIRE_BLOCKS_MAX);
		r = wire_blocks_unpack(z, &b, raw, sizeof(raw));
		CHECK(r == (int)b.raw_len || (r == -EBADMSG && b.encoding == WIRE_ENC_ZSTD));
		break;
	}
	case WIRE_ACK:
	case WIRE_CHECKPOINT: {
		uint64_t off;

		CHECK(wire_offset_decode(p, len, &off) == 0);
		CHECK(wire_offset_encode(off, out, sizeof(out), &n) == 0);
		CHECK(n == len && !memcmp(out, p, len));
		break;
	}
	case WIRE_COMMIT: {
		struct wire_uuid g;

		CHECK(wire_commit_decode(p, len, &g) == 0);
		CHECK(wire_commit_encode(&g, out, sizeof(out), &n) == 0);
		CHECK(n == len && !memcmp(out, p, len));
		break;
	}
	default:
		CHECK(0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct wire_zstd *z;

	if (!z && wire_zstd_new(1, &z) < 0)
		abort();
	while (size >= WIRE_HEADER_SIZE) {
		struct wire_header h;

		if (wire_header_decode(data, &h) < 0)
			return 0;
		CHECK(h.length <= RESYNC_WIRE_FRAME_MAX);
		data += WIRE_HEADER_SIZE;
		size -= WIRE_HEADER_SIZE;
		if (h.length > size)
			return 0; /* a truncated frame: the receiver would wait */
		one_frame(z, h.type, data, h.length);
		data += h.length;
		size -= h.length;
	}
	return 0;
}

#ifndef RESYNC_LIBFUZZER
static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	unsigned char *buf;
	long len;

	if (!f)
		return -errno;
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	rewind(f);
	buf = malloc(len > 0 ? len : 1);
	if (!buf || fread(buf, 1, len, f) != (size_t)len) {
		fclose(f);
		free(buf);
		return -EIO;
	}
	fclose(f);
	LLVMFuzzerTestOneInput(buf, len);
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned n = 0;

	for (int i = 1; i < argc; i++) {
		struct stat st;
		DIR *d;
		struct dirent *e;

		if (stat(argv[i], &st) < 0) {
			perror(argv[i]);
			return 1;
		}
		if (!S_ISDIR(st.st_mode)) {
			if (replay_file(argv[i]) < 0)
				return 1;
			n++;
			continue;
		}
		d = opendir(argv[i]);
		if (!d)
			return 1;
		while ((e = readdir(d))) {
			char path[4096];

			if (e->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "%s/%s", argv[i], e->d_name);
			if (replay_file(path) < 0) {
				fprintf(stderr, "cannot read %s\n", path);
				closedir(d);
				return 1;
			}
			n++;
		}
		closedir(d);
	}
	printf("fuzz-wire: replayed %u inputs\n", n);
	return n ? 0 : 1;
}
#endif
