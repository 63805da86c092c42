/*
 * check_integration_tenants.c: the integration suite's tests that one
 * tenant cannot starve or rob another through a table they share
 * (check_integration.c builds the suite): hold quotas per agent and per
 * org, a $0 check at a $0 balance, idempotency keys that other agents'
 * traffic cannot flush, tasks scoped to their org, and table capacities
 * given on the command line.
 *
 * Threads: the test's main thread, in a process the Check runner forks.
 */
#include <stdio.h>
#include <string.h>

#include "integration_fixture.h"
#include "suites.h"

/* ----- hold quotas ----- */

static void setup_quotas(void)
{
	static const char *const args[] = { "--holds", "64", "--max-holds-per-agent", "4",
		                            "--max-holds-per-org", "8", NULL };

	start(args);
}

static int64_t stat_of(const char *name)
{
	int64_t v;

	OK(sc_stat(c, name, &v));
	return v;
}

/* An agent with no funds fills its quota with free checks no more: the hub's 402. */
START_TEST(test_zero_estimate_without_funds)
{
	uint64_t broke = new_agent(0), funded = new_agent(USD(1));

	blocked(broke, "llm.call", 0, "insufficient_funds");
	allow(funded, "llm.call", 0);
	ck_assert_int_eq(stat_of("holds_open"), 1);
}
END_TEST

START_TEST(test_agent_quota)
{
	uint64_t a, b;

	new_org("acme");
	new_org("other");
	a = new_agent_in("acme", "greedy", SC_PRIORITY_NORMAL, USD(10), 0, 0, NULL, 0);
	b = new_agent_in("other", "victim", SC_PRIORITY_NORMAL, USD(10), 0, 0, NULL, 0);
	ck_assert_int_eq(stat_of("max_holds_per_agent"), 4);
	ck_assert_int_eq(stat_of("max_holds_per_org"), 8);
	for (int i = 0; i < 4; i++)
		allow(a, "llm.call", CENTS(1));
	blocked(a, "llm.call", CENTS(1), "max_holds_per_agent:4");
	allow(b, "llm.call", CENTS(1));
	ck_assert_int_eq(stat_of("holds_open"), 5);
}
END_TEST

/* The quota stops a critical agent too: it is the other tenants' share, not a limit. */
START_TEST(test_org_quota)
{
	uint64_t a[3], crit, other;

	new_org("acme");
	new_org("other");
	for (int i = 0; i < 2; i++) {
		char name[16];

		snprintf(name, sizeof(name), "worker%d", i);
		a[i] = new_agent_in("acme", name, SC_PRIORITY_NORMAL, USD(10), 0, 0, NULL, 0);
		for (int k = 0; k < 4; k++)
			allow(a[i], "llm.call", CENTS(1));
	}
	a[2] = new_agent_in("acme", "late", SC_PRIORITY_NORMAL, USD(10), 0, 0, NULL, 0);
	crit = new_agent_in("acme", "boss", SC_PRIORITY_CRITICAL, USD(10), 0, 0, NULL, 0);
	other = new_agent_in("other", "victim", SC_PRIORITY_NORMAL, USD(10), 0, 0, NULL, 0);
	blocked(a[2], "llm.call", CENTS(1), "max_holds_per_org:8");
	blocked(crit, "llm.call", CENTS(1), "max_holds_per_org:8");
	allow(other, "llm.call", CENTS(1));
}
END_TEST

/* ----- the suite ----- */

void integration_tenants_tcases(Suite *s)
{
	TCase *tc = daemon_tcase(s, "tenant_holds", setup_quotas, TEST_TIMEOUT_S);

	tcase_add_test(tc, test_zero_estimate_without_funds);
	tcase_add_test(tc, test_agent_quota);
	tcase_add_test(tc, test_org_quota);
}
