/*
 * testutil.h: helpers shared by the Check test programs: the temporary
 * directory fixture and suite registration.
 *
 * Temporary directories: a test that fails an assertion exits at once,
 * without its teardown (Check's fork mode calls _exit), so each test case's
 * directories are made inside a base directory that the runner process
 * creates and removes around the test case (an unchecked fixture:
 * test_tmp_base_create and test_tmp_base_remove). Without a base,
 * directories go to /tmp.
 *
 * Threads: the test's main thread, or the runner process for the base.
 */
#ifndef SC_TESTS_TESTUTIL_H
#define SC_TESTS_TESTUTIL_H

#include <check.h>
#include <stddef.h>

/* Unchecked fixture pair: makes (asserting it could) and removes the base. */
void test_tmp_base_create(void);
void test_tmp_base_remove(void);

/* Makes a new temporary directory (inside the base, if any) into dir. 0 or -1. */
int test_tmpdir(char *dir, size_t len);

/* Removes dir and everything below it, without following links. */
void test_rm_tree(const char *dir);

/*
 * A TCase named name whose tests run in temporary directories: the base
 * fixture around the test case, setup and teardown around each test.
 */
TCase *test_tcase_tmp(const char *name, void (*setup)(void), void (*teardown)(void));

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

#endif /* SC_TESTS_TESTUTIL_H */
