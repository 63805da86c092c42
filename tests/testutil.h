/*
 * testutil.h: helpers shared by the Check test programs: the temporary
 * directory fixture (over tmpdir.h), suite registration, and what the suites
 * that drive the daemon through libsidecard share (OK, test_rule).
 *
 * Threads: the test's main thread, or the runner process for the base.
 */
#ifndef SC_TESTS_TESTUTIL_H
#define SC_TESTS_TESTUTIL_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

#include "sidecard.h"
#include "tmpdir.h"

/*
 * Unchecked fixture pair with test_tmp_base_remove (tmpdir.h): makes the
 * base of the test case's temporary directories, asserting it could.
 */
void test_tmp_base_create(void);

/* Asserts that a libsidecard call on client succeeded, showing the daemon's message if not. */
#define TEST_OK(client, call)                                                            \
	do {                                                                             \
		int rc_ = (call);                                                        \
		ck_assert_msg(rc_ == 0, "%s: %s: %s", #call, sc_err_name(rc_),           \
		              sc_last_error(client));                                    \
	} while (0)

/* A rule with these limits (0: none). */
sc_rule test_rule(const char *name, const char *match, sc_micros max_cost, sc_micros daily,
                  int64_t hourly);

/*
 * A TCase named name whose tests run in temporary directories: the base
 * fixture around the test case, setup and teardown around each test.
 */
TCase *test_tcase_tmp(const char *name, void (*setup)(void), void (*teardown)(void));

/* The same, with this timeout in seconds (0 keeps Check's default), added to s. */
TCase *test_add_tcase_tmp(Suite *s, const char *name, void (*setup)(void),
                          void (*teardown)(void), double timeout);

/* A test and the name of the one-test TCase it runs in. */
struct test_case {
	const char *name;
	const TTest *test;
};

/*
 * Adds one TCase per case to s, each with this timeout in seconds (0 keeps
 * Check's default).
 */
void test_add_cases(Suite *s, const struct test_case *cases, size_t n, double timeout);

/* The same, each case in its own test_tcase_tmp with setup and teardown. */
void test_add_cases_tmp(Suite *s, const struct test_case *cases, size_t n,
                        void (*setup)(void), void (*teardown)(void));

/* ----- files ----- */

/* The whole content of a file, NUL-terminated; *len (if not NULL) its size. NULL if it
 * cannot be opened. Caller frees. */
char *test_read_file(const char *path, size_t *len);

/* Creates or replaces path (mode 0600) with buf[0..len), asserting that it worked. */
void test_write_file(const char *path, const void *buf, size_t len);

/* 1 if every one of the len bytes at p is 0. */
int test_all_zero(const void *p, size_t len);

/*
 * Makes the next daemon started run under tests/faultfs.c ($FAULTFS_LIB,
 * asserted to be there): control receives the path of its control file, in
 * a new temporary directory (absent: no fault). test_faultfs_end, once the
 * daemon started, leaves the test's own processes without the shim.
 */
void test_faultfs_begin(char *control, size_t len);
void test_faultfs_end(void);

/* Runs the suite's tests (CK_NORMAL) and gives main's exit status. */
int test_run_suite(Suite *s);

#endif /* SC_TESTS_TESTUTIL_H */
