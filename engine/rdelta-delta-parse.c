/* The delta reader: a whole delta in memory into its list of commands,
 * every length and offset checked before it is used. */
#include <errno.h>
#include <stdlib.h>

#include "rdelta-int.h"

void rdelta_cmds_release(struct rdelta_cmds *c)
{
	free(c->v);
	*c = (struct rdelta_cmds){0};
}

static int cmds_push(struct rdelta_cmds *c, const struct rdelta_cmd *cmd)
{
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 256;
		struct rdelta_cmd *v;

		if (cap > RDELTA_CMDS_MAX)
			cap = RDELTA_CMDS_MAX;
		if (c->n >= cap)
			return -EFBIG;
		v = realloc(c->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		c->v = v;
		c->cap = cap;
	}
	c->v[c->n++] = *cmd;
	return 0;
}

/* A big-endian integer of n bytes at *off; -ENODATA past the end. */
static int get_int(const uint8_t *buf, size_t len, size_t *off, unsigned n, uint64_t *ret)
{
	uint64_t v = 0;

	if (len - *off < n)
		return -ENODATA;
	for (unsigned i = 0; i < n; i++)
		v = v << 8 | buf[*off + i];
	*off += n;
	*ret = v;
	return 0;
}

/* One command at *off (after its opcode op). */
static int parse_cmd(const uint8_t *buf, size_t len, size_t *off, uint8_t op,
		     struct rdelta_cmds *c)
{
	struct rdelta_cmd cmd = {.dst = c->new_len};
	int r;

	if (op <= 0x40) {
		cmd.len = op;
	} else if (op < RDELTA_OP_COPY_N1_N1) {
		r = get_int(buf, len, off, 1u << (op - RDELTA_OP_LITERAL_N1), &cmd.len);
		if (r < 0)
			return r;
	} else if (op <= RDELTA_OP_COPY_N8_N8) {
		unsigned k = op - RDELTA_OP_COPY_N1_N1;

		cmd.copy = true;
		r = get_int(buf, len, off, 1u << (k / 4), &cmd.src);
		if (r >= 0)
			r = get_int(buf, len, off, 1u << (k % 4), &cmd.len);
		if (r < 0)
			return r;
		if (cmd.src > INT64_MAX || cmd.len > INT64_MAX - cmd.src)
			return -EILSEQ;
	} else {
		return -EILSEQ; /* a reserved opcode */
	}
	if (cmd.len > INT64_MAX - c->new_len)
		return -EILSEQ;
	if (!cmd.copy) {
		if (len - *off < cmd.len)
			return -ENODATA;
		cmd.src = *off;
		*off += (size_t)cmd.len;
	}
	if (cmd.len == 0)
		return -EILSEQ; /* librsync refuses it as corrupt too */
	c->new_len += cmd.len;
	if (cmd.copy && cmd.src + cmd.len > c->basis_needed)
		c->basis_needed = cmd.src + cmd.len;
	return cmds_push(c, &cmd);
}

int rdelta_cmds_parse(const uint8_t *buf, size_t len, struct rdelta_cmds *ret)
{
	struct rdelta_cmds c = {0};
	size_t off = 4;
	int r = 0;

	if (len < 4)
		return -ENODATA;
	if (rdelta_be32(buf) != RDELTA_DELTA_MAGIC)
		return -EBADMSG;
	for (;;) {
		uint8_t op;

		if (off >= len) {
			r = -ENODATA;
			break;
		}
		op = buf[off++];
		if (op == RDELTA_OP_END)
			break; /* what follows is ignored, as librsync does */
		r = parse_cmd(buf, len, &off, op, &c);
		if (r < 0)
			break;
	}
	if (r < 0) {
		rdelta_cmds_release(&c);
		return r;
	}
	*ret = c;
	return 0;
}
