/*
 * What the wire's fuzz targets share: the key they tag with, the check that
 * aborts (libFuzzer reports it), and string equality that takes NULLs.
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_FUZZ_UTIL_H
#define TSYNC_FUZZ_UTIL_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "wire/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t fuzz_key[WIRE_KEY_BYTES] = "thingsync-fuzz-key-0123456789ab";

static inline void check(bool ok)
{
	if (!ok)
		abort();
}

static inline bool same_str(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

#endif
