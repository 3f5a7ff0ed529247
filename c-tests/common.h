/*
 * Shared helpers for the haquic C test suite.
 *
 * Each test is a function returning 0 on success. The CHECK macros print the
 * failing expression with its file and line and jump to the test's cleanup
 * label, so every test ends with unconditional _unref calls.
 */
#ifndef HAQUIC_TEST_COMMON_H
#define HAQUIC_TEST_COMMON_H

#include <stdio.h>
#include <string.h>
#include "haquic.h"

struct test_case {
	const char *name;
	int (*fn)(void);
};

/* Directory holding the fixture files (certificates, keys, garbage). */
extern const char *fixtures_dir;

/* Returns "<fixtures_dir>/<name>" in a static rotating buffer. */
const char *fixture(const char *name);

/* Reads a whole file into a malloc'ed buffer; returns NULL on error. */
unsigned char *read_file(const char *path, size_t *len);

#define FAILF(...) do { \
	fprintf(stderr, "    %s:%d: ", __FILE__, __LINE__); \
	fprintf(stderr, __VA_ARGS__); \
	fputc('\n', stderr); \
	goto cleanup; \
} while (0)

#define CHECK(cond) do { \
	if (!(cond)) \
		FAILF("check failed: %s", #cond); \
} while (0)

/* Compares two haquic_result values and prints both names on mismatch. */
#define CHECK_RESULT(expr, expected) do { \
	haquic_result got_ = (expr); \
	if (got_ != (expected)) \
		FAILF("%s returned %d (%s), expected %d (%s)", #expr, \
		      (int)got_, haquic_strerror((int)got_), \
		      (int)(expected), haquic_strerror((int)(expected))); \
} while (0)

#define CHECK_STR_CONTAINS(hay, needle) do { \
	const char *h_ = (hay); \
	if (!h_ || !strstr(h_, (needle))) \
		FAILF("\"%s\" does not contain \"%s\"", h_ ? h_ : "(null)", (needle)); \
} while (0)

/* Test tables, one per test file. */
extern const struct test_case config_tests[];
extern const struct test_case misc_tests[];
extern const struct test_case coexist_tests[];
extern const struct test_case engine_tests[];
extern const struct test_case thread_tests[];
extern const struct test_case hostapi_tests[];
extern const struct test_case regress_tests[];

#endif
