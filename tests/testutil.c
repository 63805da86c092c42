/*
 * testutil.c: the temporary directory fixture, suite registration and
 * request builders shared by the Check test programs (see testutil.h for
 * the contract).
 *
 * Threads: the test's main thread; the base directory is made and removed
 * by the runner process. Ownership: the base lives for one test case, a
 * test's directories until its teardown (or the base's removal).
 */
#include <stdio.h>
#include <string.h>

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
