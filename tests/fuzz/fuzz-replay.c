/* The corpus replayer every fuzz target links when it is not built for
 * libFuzzer: main() feeds LLVMFuzzerTestOneInput() each file named on the
 * command line, and each file of each directory named (in name order, so
 * a failure is found again at once), after LLVMFuzzerInitialize() when
 * the target has one. A target's checks abort on a failure, so the test
 * fails there; an unreadable input or an empty corpus fails it too. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

/* Targets that need no set-up leave it out. */
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rbe");
	unsigned char *buf = NULL;
	long len;
	int r = -EIO;

	if (!f)
		return -errno;
	if (fseek(f, 0, SEEK_END) < 0 || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) < 0)
		goto out;
	/* A copy of exactly len bytes: ASan sees a read past the input. */
	buf = malloc(len > 0 ? (size_t)len : 1);
	if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len)
		goto out;
	LLVMFuzzerTestOneInput(buf, (size_t)len);
	r = 0;
out:
	fclose(f);
	free(buf);
	return r;
}

static int replay_dir(const char *dir, unsigned *n)
{
	struct dirent **names;
	int count = scandir(dir, &names, NULL, alphasort), r = 0;

	if (count < 0)
		return -errno;
	for (int i = 0; i < count; i++) {
		char path[4096];

		if (!r && names[i]->d_name[0] != '.') {
			snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
			r = replay_file(path);
			if (r < 0)
				fprintf(stderr, "cannot read '%s': %s\n", path, strerror(-r));
			else
				(*n)++;
		}
		free(names[i]);
	}
	free(names);
	return r;
}

int main(int argc, char **argv)
{
	const char *name = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
	unsigned n = 0;

	if (LLVMFuzzerInitialize(&argc, &argv) != 0)
		return 1;
	for (int i = 1; i < argc; i++) {
		struct stat st;
		int r;

		if (stat(argv[i], &st) < 0) {
			fprintf(stderr, "%s: cannot read '%s': %s\n", name, argv[i],
				strerror(errno));
			return 1;
		}
		if (S_ISDIR(st.st_mode)) {
			r = replay_dir(argv[i], &n);
		} else {
			r = replay_file(argv[i]);
			n += r == 0;
		}
		if (r < 0)
			return 1;
	}
	printf("%s: replayed %u inputs\n", name, n);
	return n ? 0 : 1;
}
