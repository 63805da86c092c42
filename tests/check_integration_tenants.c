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

/* ----- tasks ----- */

static void setup_task_cap(void)
{
	static const char *const args[] = { "--task-max-usage", "3000000", NULL };

	start(args);
}

static sc_decision task_check(uint64_t agent, sc_micros cost, const char *task)
{
	sc_check_req req = { .agent_id = agent, .action = "llm.call", .estimated_cost = cost,
		             .task_id = task };
	sc_decision dec;

	OK(sc_check(c, &req, &dec));
	return dec;
}

/* Another org's agent drives "job-7" to the cap; the victim's own "job-7" is untouched. */
START_TEST(test_task_ids_per_org)
{
	uint64_t org_a = new_org("acme"), org_b = new_org("other");
	uint64_t a = new_agent_in("acme", "thief", SC_PRIORITY_NORMAL, USD(100), 0, 0, NULL, 0);
	uint64_t b = new_agent_in("other", "victim", SC_PRIORITY_NORMAL, USD(100), 0, 0, NULL, 0);
	sc_task_usage u;
	sc_decision dec;

	dec = task_check(a, USD(3), "job-7");
	ck_assert_msg(dec.allowed, "blocked: %s", dec.block_reason);
	dec = task_check(a, 1, "job-7");
	ck_assert_str_eq(dec.block_reason, "task:max_usage");
	OK(sc_tasks_usage(c, "job-7", &u));
	ck_assert_uint_eq(u.org_id, org_a);
	dec = task_check(b, USD(1), "job-7");
	ck_assert_msg(dec.allowed, "the other org's task blocked the victim: %s", dec.block_reason);

	/* Two orgs have a "job-7" now: a read must say whose. */
	FAILS(sc_tasks_usage(c, "job-7", &u), SC_EINVAL, "org_id");
	OK(sc_tasks_usage_org(c, org_b, "job-7", &u));
	ck_assert_uint_eq(u.org_id, org_b);
	ck_assert_int_eq(u.held, USD(1));
	ck_assert_uint_eq(u.checks, 1);
	OK(sc_tasks_usage_org(c, org_a, "job-7", &u));
	ck_assert_int_eq(u.held, USD(3));
	ck_assert_uint_eq(u.checks, 2);
	FAILS(sc_tasks_usage_org(c, org_b, "job-8", &u), SC_ENOTFOUND, "job-8");
}
END_TEST

/* ----- the suite ----- */

void integration_tenants_tcases(Suite *s)
{
	TCase *tc = daemon_tcase(s, "tenant_holds", setup_quotas, TEST_TIMEOUT_S);

	tcase_add_test(tc, test_zero_estimate_without_funds);
	tcase_add_test(tc, test_agent_quota);
	tcase_add_test(tc, test_org_quota);
	tc = daemon_tcase(s, "tenant_tasks", setup_task_cap, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_task_ids_per_org);
}
