/*
 * testutil.c: the temporary directory fixture, suite registration, request
 * builders and whole-file helpers shared by the Check test programs (see testutil.h for
 * the contract).
 *
 * Threads: the test's main thread; the base directory is made and removed
 * by the runner process. Ownership: the base lives for one test case, a
 * test's directories until its teardown (or the base's removal).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

void test_tmp_base_create(void)
{
	if (test_tmp_base_make() != 0)
		ck_abort_msg("no base directory: mkdtemp failed");
}

sc_rule test_rule(const char *name, const char *match, sc_micros max_cost, sc_micros daily,
                  int64_t hourly)
{
	sc_rule r;

	memset(&r, 0, sizeof(r));
	snprintf(r.name, sizeof(r.name), "%s", name);
	snprintf(r.match, sizeof(r.match), "%s", match);
	r.max_cost_per_txn = max_cost;
	r.daily_spend_limit = daily;
	r.hourly_rate_limit = hourly;
	return r;
}

TCase *test_tcase_tmp(const char *name, void (*setup)(void), void (*teardown)(void))
{
	TCase *tc = tcase_create(name);

	tcase_add_unchecked_fixture(tc, test_tmp_base_create, test_tmp_base_remove);
	tcase_add_checked_fixture(tc, setup, teardown);
	return tc;
}

TCase *test_add_tcase_tmp(Suite *s, const char *name, void (*setup)(void),
                          void (*teardown)(void), double timeout)
{
	TCase *tc = test_tcase_tmp(name, setup, teardown);

	if (timeout > 0)
		tcase_set_timeout(tc, timeout);
	suite_add_tcase(s, tc);
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

void test_add_cases_tmp(Suite *s, const struct test_case *cases, size_t n,
                        void (*setup)(void), void (*teardown)(void))
{
	for (size_t i = 0; i < n; i++)
		tcase_add_test(test_add_tcase_tmp(s, cases[i].name, setup, teardown, 0), cases[i].test);
}

char *test_read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t n = 0, cap = 0, got;

	if (f == NULL)
		return NULL;
	do {
		if (cap - n < 4096) {
			buf = realloc(buf, cap = cap * 2 + 8192);
			ck_assert_ptr_nonnull(buf);
		}
		got = fread(buf + n, 1, cap - n - 1, f);
		n += got;
	} while (got > 0);
	fclose(f);
	buf[n] = '\0';
	if (len)
		*len = n;
	return buf;
}

void test_write_file(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
	ck_assert_int_eq(write(fd, buf, len), (ssize_t)len);
	close(fd);
}

int test_all_zero(const void *p, size_t len)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < len; i++)
		if (b[i] != 0)
			return 0;
	return 1;
}

int test_run_suite(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

void test_faultfs_begin(char *control, size_t len)
{
	const char *lib = getenv("FAULTFS_LIB");
	char base[128];

	ck_assert_msg(lib && access(lib, R_OK) == 0,
	              "FAULTFS_LIB (%s) does not name the built tests/.libs/libfaultfs.so",
	              lib ? lib : "unset");
	ck_assert_int_eq(test_tmpdir(base, sizeof(base)), 0);
	snprintf(control, len, "%s/fault", base);
	setenv("LD_PRELOAD", lib, 1);
	setenv("FAULTFS_CONTROL", control, 1);
	/* a daemon built with --enable-sanitizers accepts a preload before its runtime */
	setenv("ASAN_OPTIONS", "verify_asan_link_order=0", 1);
}

void test_faultfs_end(void)
{
	unsetenv("LD_PRELOAD");
	unsetenv("ASAN_OPTIONS");
}
