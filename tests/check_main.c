/*
 * check_main.c: the unit test runner. Runs every suite of suites.h in one
 * SRunner with CK_NORMAL output; the exit status is non-zero when any test
 * failed. Set CK_FORK=no to run the tests in-process (under valgrind or a
 * debugger). Single-threaded.
 */
#include <stdlib.h>

#include "suites.h"

int main(void)
{
	SRunner *sr = srunner_create(money_suite());
	int failed;

	srunner_add_suite(sr, frame_suite());
	srunner_add_suite(sr, server_suite());
	srunner_add_suite(sr, shm_suite());
	srunner_add_suite(sr, snap_suite());
	srunner_add_suite(sr, gate_suite());
	srunner_add_suite(sr, score_suite());
	srunner_add_suite(sr, task_suite());
	srunner_add_suite(sr, wallet_suite());
	srunner_add_suite(sr, period_suite());
	srunner_add_suite(sr, tz_suite());
	srunner_add_suite(sr, pricing_suite());
	srunner_add_suite(sr, alerts_suite());
	srunner_add_suite(sr, rules_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
