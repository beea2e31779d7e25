/* Fuzz target for the engine's delta reader (rdelta_cmds_parse(), what
 * resync-diff patch --inplace reads): the input is one delta file.
 * Checked:
 *   - a refusal is one of the documented errors;
 *   - the commands taken tile NEW from 0 to new_len without gap or
 *     overlap, each of positive length; a literal's data lies inside the
 *     input, after its command; no copy reads past basis_needed;
 *   - the same input parsed twice gives the same commands. */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "rdelta-int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rdelta_cmds c = {0}, again = {0};
	uint64_t pos = 0;
	int r = rdelta_cmds_parse(data, size, &c);

	FUZZ_CHECK(r == 0 || r == -EBADMSG || r == -EILSEQ || r == -ENODATA || r == -EFBIG);
	if (r < 0)
		return 0;
	for (size_t k = 0; k < c.n; k++) {
		const struct rdelta_cmd *cmd = &c.v[k];

		FUZZ_CHECK(cmd->dst == pos && cmd->len > 0);
		if (cmd->copy)
			FUZZ_CHECK(cmd->src + cmd->len <= c.basis_needed);
		else
			FUZZ_CHECK(cmd->src > 4 && cmd->src <= size && cmd->len <= size - cmd->src);
		pos += cmd->len;
	}
	FUZZ_CHECK(pos == c.new_len);
	FUZZ_CHECK(rdelta_cmds_parse(data, size, &again) == 0);
	FUZZ_CHECK(again.n == c.n && (!c.n || !memcmp(again.v, c.v, c.n * sizeof(*c.v))));
	rdelta_cmds_release(&again);
	rdelta_cmds_release(&c);
	return 0;
}
