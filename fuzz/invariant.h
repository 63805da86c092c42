/*
 * invariant.h: CHECK(cond), the fuzz targets' assertion. A broken invariant
 * names its file, line and condition and aborts, which both libFuzzer and
 * the standalone smoke driver report as a crash with the input that caused it.
 */
#ifndef SIDECARD_FUZZ_INVARIANT_H
#define SIDECARD_FUZZ_INVARIANT_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                   \
	do {                                                                          \
		if (!(cond)) {                                                        \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__,   \
			        __LINE__, #cond);                                     \
			abort();                                                      \
		}                                                                     \
	} while (0)

#endif /* SIDECARD_FUZZ_INVARIANT_H */
