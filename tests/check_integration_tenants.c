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
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "integration_fixture.h"
#include "suites.h"

/* ----- hold quotas ----- */

/* The default quotas of a table of 64 holds: 4 per agent, 32 per org. */
static void setup_quotas(void)
{
	static const char *const args[] = { "--holds", "64", NULL };

	start(args);
}

static void setup_quota_options(void)
{
	static const char *const args[] = { "--holds", "64", "--max-holds-per-agent", "2",
		                            "--max-holds-per-org", "3", NULL };

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
	for (int i = 0; i < 4; i++)
		allow(a, "llm.call", CENTS(1));
	blocked(a, "llm.call", CENTS(1), "max_holds_per_agent:4");
	allow(b, "llm.call", CENTS(1));
	ck_assert_int_eq(stat_of("holds_open"), 5);
	ck_assert_int_eq(stat_of("max_holds_per_agent"), 4);
	ck_assert_int_eq(stat_of("max_holds_per_org"), 32);
}
END_TEST

/* The quota stops a critical agent too: it is the other tenants' share, not a limit. */
START_TEST(test_org_quota)
{
	uint64_t a[9], crit, other;

	new_org("acme");
	new_org("other");
	for (int i = 0; i < 8; i++) {
		char name[16];

		snprintf(name, sizeof(name), "worker%d", i);
		a[i] = new_agent_in("acme", name, SC_PRIORITY_NORMAL, USD(10), 0, 0, NULL, 0);
		for (int k = 0; k < 4; k++)
			allow(a[i], "llm.call", CENTS(1));
	}
	a[8] = new_agent_in("acme", "late", SC_PRIORITY_NORMAL, USD(10), 0, 0, NULL, 0);
	crit = new_agent_in("acme", "boss", SC_PRIORITY_CRITICAL, USD(10), 0, 0, NULL, 0);
	other = new_agent_in("other", "victim", SC_PRIORITY_NORMAL, USD(10), 0, 0, NULL, 0);
	blocked(a[8], "llm.call", CENTS(1), "max_holds_per_org:32");
	blocked(crit, "llm.call", CENTS(1), "max_holds_per_org:32");
	allow(other, "llm.call", CENTS(1));
	/* a report gives the org its room back */
	report(test_allow(c, other, "llm.call", 0), SC_OUTCOME_SUCCESS, 0, 0);
}
END_TEST

/* The quotas the options give, shown by stats and named by the block reason. */
START_TEST(test_quota_options)
{
	uint64_t a, b;

	new_org("acme");
	a = new_agent_in("acme", "one", SC_PRIORITY_NORMAL, USD(10), 0, 0, NULL, 0);
	b = new_agent_in("acme", "two", SC_PRIORITY_NORMAL, USD(10), 0, 0, NULL, 0);
	ck_assert_int_eq(stat_of("max_holds_per_agent"), 2);
	ck_assert_int_eq(stat_of("max_holds_per_org"), 3);
	allow(a, "llm.call", CENTS(1));
	allow(a, "llm.call", CENTS(1));
	blocked(a, "llm.call", CENTS(1), "max_holds_per_agent:2");
	allow(b, "llm.call", CENTS(1));
	blocked(b, "llm.call", CENTS(1), "max_holds_per_org:3");
}
END_TEST

/* ----- idempotency keys ----- */

static void setup_short_history(void)
{
	static const char *const args[] = { "--history", "64", NULL };

	start(args);
}

/* Another org's blocked checks that wrap the whole history. */
static void flood(uint64_t attacker, int n)
{
	for (int i = 0; i < n; i++)
		blocked(attacker, "llm.call", USD(5), "wallet_empty");
}

/* The victim's retry of a check that was allowed, with its key: one hold, not two. */
static void assert_replayed(uint64_t victim, const char *key, uint64_t txn)
{
	sc_micros held = wallet(victim).held;
	sc_decision dec = check_as(victim, "llm.call", CENTS(10), key);

	ck_assert_msg(dec.replayed, "the retry of %s was decided again (transaction %llu)", key,
	              (unsigned long long)dec.transaction_id);
	ck_assert_uint_eq(dec.transaction_id, txn);
	ck_assert_int_eq(wallet(victim).held, held);
}

/* A new key of the victim's: allowed, not a replay; its transaction. */
static uint64_t keyed(uint64_t victim, int n)
{
	char key[24];
	sc_decision dec;

	snprintf(key, sizeof(key), "retry-%d", n);
	dec = check_as(victim, "llm.call", CENTS(10), key);
	ck_assert_msg(dec.allowed && !dec.replayed, "%s: allowed %d, replayed %d", key,
	              dec.allowed, dec.replayed);
	return dec.transaction_id;
}

/*
 * With a history of 64 transactions and the default 16 keys kept per
 * agent: another org's 200 blocked checks do not make the victim's retries
 * count twice, nor do a restart and a rebuild; only the victim's own newer
 * keys replace its kept ones.
 */
START_TEST(test_keys_outlive_other_tenants_traffic)
{
	uint64_t victim, attacker, txn[20];
	char key[16];
	sc_decision dec;

	new_org("victim");
	new_org("attacker");
	victim = new_agent_in("victim", "v", SC_PRIORITY_NORMAL, USD(10), 0, 0, NULL, 0);
	attacker = new_agent_in("attacker", "a", SC_PRIORITY_NORMAL, USD(1), 0, 0, NULL, 0);
	for (int i = 0; i < 4; i++)
		txn[i] = keyed(victim, i);
	flood(attacker, 200);
	for (int i = 0; i < 4; i++) {
		snprintf(key, sizeof(key), "retry-%d", i);
		assert_replayed(victim, key, txn[i]);
	}

	/* kept across a restart (attach) and a rebuild (a snapshot and the ledger) */
	sc_close(c);
	c = NULL;
	ck_assert_int_eq(test_daemon_restart(&d), 0);
	OK(sc_connect(d.socket, &c));
	assert_replayed(victim, "retry-0", txn[0]);
	test_client_rebuild(&d, &c);
	assert_replayed(victim, "retry-3", txn[3]);

	/* the victim's own 16 newer keys are what replace them */
	for (int i = 4; i < 20; i++)
		txn[i] = keyed(victim, i);
	flood(attacker, 100);
	assert_replayed(victim, "retry-4", txn[4]);
	assert_replayed(victim, "retry-19", txn[19]);
	dec = check_as(victim, "llm.call", CENTS(10), "retry-3");
	ck_assert_msg(!dec.replayed, "a 17th key back is still kept");
}
END_TEST

/* ----- tasks ----- */

static void setup_task_cap(void)
{
	static const char *const args[] = { "--task-max-usage", "3000000", NULL };

	start(args);
}


/* Another org's agent drives "job-7" to the cap; the victim's own "job-7" is untouched. */
START_TEST(test_task_ids_per_org)
{
	uint64_t org_a = new_org("acme"), org_b = new_org("other");
	uint64_t a = new_agent_in("acme", "thief", SC_PRIORITY_NORMAL, USD(100), 0, 0, NULL, 0);
	uint64_t b = new_agent_in("other", "victim", SC_PRIORITY_NORMAL, USD(100), 0, 0, NULL, 0);
	sc_task_usage u;
	sc_decision dec;

	dec = check_task(a, USD(3), "job-7");
	ck_assert_msg(dec.allowed, "blocked: %s", dec.block_reason);
	dec = check_task(a, 1, "job-7");
	ck_assert_str_eq(dec.block_reason, "task:max_usage");
	dec = check_task(b, USD(1), "job-7");
	ck_assert_msg(dec.allowed, "the other org's task blocked the victim: %s", dec.block_reason);
	OK(sc_tasks_usage_org(c, org_a, "job-7", &u));
	ck_assert_uint_eq(u.org_id, org_a);

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

/* ----- capacities given on the command line ----- */

static void setup_few_prices(void)
{
	static const char *const args[] = { "--prices", "2", "--history", "64", NULL };

	start(args);
}

static void set_price(const char *model)
{
	sc_price p;

	OK(sc_pricing_set(c, model, 1000000, 2000000, NULL, NULL, &p));
}

/* Restarts d with one option's value changed (d keeps its arguments for restarts). */
static int restart_with(const char *option, const char *value)
{
	for (size_t i = 0; d.extra[i] != NULL; i++)
		if (strcmp(d.extra[i], option) == 0)
			d.extra[i + 1] = value;
	if (c != NULL)
		sc_close(c);
	c = NULL;
	if (test_daemon_restart(&d) != 0)
		return -1;
	OK(sc_connect(d.socket, &c));
	return 0;
}

/* A full rate table grows with a larger --prices, through restarts and rebuilds. */
START_TEST(test_prices_grow)
{
	sc_price p;

	set_price("m1");
	set_price("m2");
	FAILS(sc_pricing_set(c, "m3", 1, 1, NULL, NULL, &p), SC_ELIMIT, "--prices");
	ck_assert_int_eq(restart_with("--prices", "8"), 0);
	ck_assert_int_eq(stat_of("capacity_prices"), 8);
	set_price("m3");
	OK(sc_pricing_get(c, "m1", NULL, &p));

	/* a rebuild from the snapshot (taken as it grew) and the ledger keeps the larger table */
	test_client_rebuild(&d, &c);
	ck_assert_int_eq(stat_of("capacity_prices"), 8);
	OK(sc_pricing_get(c, "m3", NULL, &p));
	set_price("m4");
}
END_TEST

/* A table cannot shrink, and a ring cannot change: the daemon refuses to start. */
START_TEST(test_capacity_change_refused)
{
	set_price("m1");
	ck_assert_int_eq(restart_with("--prices", "1"), -1);
	ck_assert_int_ne(d.status, 0);
	ck_assert_int_eq(restart_with("--prices", "2"), 0);
	ck_assert_int_eq(restart_with("--history", "128"), -1);
	ck_assert_int_ne(d.status, 0);
	ck_assert_int_eq(restart_with("--history", "64"), 0);
	ck_assert_int_eq(stat_of("capacity_history"), 64);
	OK(sc_pricing_get(c, "m1", NULL, &(sc_price){ 0 }));
}
END_TEST

/* ----- the suite ----- */

void integration_tenants_tcases(Suite *s)
{
	TCase *tc = daemon_tcase(s, "tenant_holds", setup_quotas, TEST_TIMEOUT_S);

	tcase_add_test(tc, test_zero_estimate_without_funds);
	tcase_add_test(tc, test_agent_quota);
	tcase_add_test(tc, test_org_quota);
	tc = daemon_tcase(s, "tenant_quota_options", setup_quota_options, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_quota_options);
	tc = daemon_tcase(s, "tenant_keys", setup_short_history, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_keys_outlive_other_tenants_traffic);
	tc = daemon_tcase(s, "tenant_capacities", setup_few_prices, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_prices_grow);
	tcase_add_test(tc, test_capacity_change_refused);
	tc = daemon_tcase(s, "tenant_tasks", setup_task_cap, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_task_ids_per_org);
}
