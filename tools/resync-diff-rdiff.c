/* rdiff-compatible commands; implemented in the rdelta work. */
#include <stdio.h>

#include "resync-diff.h"

static int not_yet(const char *name)
{
	fprintf(stderr, "resync-diff: '%s' is not available in this build\n", name);
	return 2;
}

int cmd_signature(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	return not_yet("signature");
}

int cmd_delta(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	return not_yet("delta");
}

int cmd_patch(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	return not_yet("patch");
}
