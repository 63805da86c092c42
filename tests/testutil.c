/*
 * testutil.c: the temporary directory fixture and suite registration shared
 * by the Check test programs (see testutil.h for the contract).
 *
 * Threads: the test's main thread; the base directory is made and removed
 * by the runner process. Ownership: the base lives for one test case, a
 * test's directories until its teardown (or the base's removal).
 */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "testutil.h"

/* The base directory of this test case's temporary directories, or "". */
static char base[48];

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

void test_rm_tree(const char *dir)
{
	nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

void test_tmp_base_create(void)
{
	snprintf(base, sizeof(base), "/tmp/sidecard-test.XXXXXX");
	if (mkdtemp(base) == NULL) {
		base[0] = '\0';
		ck_abort_msg("no base directory: mkdtemp failed");
	}
}

void test_tmp_base_remove(void)
{
	if (base[0] != '\0')
		test_rm_tree(base);
	base[0] = '\0';
}

int test_tmpdir(char *dir, size_t len)
{
	int n = snprintf(dir, len, "%s/%s", base[0] ? base : "/tmp",
	                 base[0] ? "d.XXXXXX" : "sidecard-test.XXXXXX");

	if (n < 0 || (size_t)n >= len || mkdtemp(dir) == NULL) {
		perror("test: mkdtemp");
		return -1;
	}
	return 0;
}

TCase *test_tcase_tmp(const char *name, void (*setup)(void), void (*teardown)(void))
{
	TCase *tc = tcase_create(name);

	tcase_add_unchecked_fixture(tc, test_tmp_base_create, test_tmp_base_remove);
	tcase_add_checked_fixture(tc, setup, teardown);
	return tc;
}

void test_add_cases(Suite *s, const struct test_case *cases, size_t n, double timeout)
{
	for (size_t i = 0; i < n; i++) {
		TCase *tc = tcase_create(cases[i].name);

		if (timeout > 0)
			tcase_set_timeout(tc, timeout);
		tcase_add_test(tc, cases[i].test);
		suite_add_tcase(s, tc);
	}
}
