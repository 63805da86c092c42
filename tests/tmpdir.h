/*
 * tmpdir.h: temporary directories for the tests, the crash harness and the
 * benchmark. Check-free, so that programs run outside Check (tests/crash.c,
 * bench/ledger_bench.c) can use it and tests/daemon.c with it.
 *
 * A test that fails an assertion exits at once, without its teardown
 * (Check's fork mode calls _exit), so the Check programs make each test
 * case's directories inside a base directory that the runner process creates
 * and removes around the test case (test_tmp_base_create in testutil.h, and
 * test_tmp_base_remove). Without a base, directories go to /tmp.
 *
 * Threads: the main thread, or the runner process for the base.
 */
#ifndef SC_TESTS_TMPDIR_H
#define SC_TESTS_TMPDIR_H

#include <stddef.h>

/* Makes the base directory. 0, or -1 (no base) with the reason on stderr. */
int test_tmp_base_make(void);

/* Removes the base directory and everything in it, if there is one. */
void test_tmp_base_remove(void);

/* Makes a new temporary directory (inside the base, if any) into dir. 0 or -1. */
int test_tmpdir(char *dir, size_t len);

/* Removes dir and everything below it, without following links. */
void test_rm_tree(const char *dir);

#endif /* SC_TESTS_TMPDIR_H */
