/* What the fuzz targets share: libFuzzer's entry points (each target
 * defines LLVMFuzzerTestOneInput(), and LLVMFuzzerInitialize() when it
 * needs set-up), and the check that aborts on a broken invariant, so that
 * libFuzzer keeps the input and the corpus replayer fails. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_CHECK(cond)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)
