/*
 * check_integration_gate.c: the integration suite's tests of check and
 * report through the daemon (check_integration.c builds the suite): every
 * block reason; the most specific rule; critical agents (never blocked,
 * warned); high-priority top-ups; report outcomes with balances and debt;
 * idempotent check and report (replay and mismatch); hold expiry
 * (--hold-ttl 1, charging the estimate or nothing); and the concurrency
 * test: 16 connections race checks against one wallet worth a tenth of their
 * estimates, and the final balance must equal the tally of acknowledged
 * charges.
 *
 * Threads: the Check runner forks each test; the concurrency test adds its
 * own threads, each with its own connection, which record results and never
 * call ck_assert (only the test's main thread asserts).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "integration_fixture.h"
#include "suites.h"

/* ----- block reasons ----- */

START_TEST(test_block_agent_not_found)
{
	sc_decision dec = check_as(424242, "x", 1, NULL);

	ck_assert_int_eq(dec.allowed, 0);
	ck_assert_str_eq(dec.block_reason, "agent_not_found");
	ck_assert_uint_eq(dec.transaction_id, 0);
}
END_TEST

START_TEST(test_block_agent_frozen)
{
	uint64_t id = new_agent(USD(10));
	sc_agent a;

	OK(sc_agents_update(c, id, NULL, -1, SC_STATUS_FROZEN, &a));
	blocked(id, "x", USD(1), "agent_frozen");
	/* Freezing stops even a critical agent. */
	OK(sc_agents_update(c, id, NULL, SC_PRIORITY_CRITICAL, -1, &a));
	blocked(id, "x", USD(1), "agent_frozen");
	OK(sc_agents_update(c, id, NULL, SC_PRIORITY_NORMAL, SC_STATUS_ACTIVE, &a));
	allow(id, "x", USD(1));
}
END_TEST

START_TEST(test_block_wallet_debt)
{
	uint64_t id = new_agent(USD(1)), txn;
	sc_wallet_update u = { .set = SC_WALLET_SET_DEBT | SC_WALLET_SET_BALANCE,
		               .balance = USD(5) };
	sc_settlement s;
	sc_wallet w;

	txn = allow(id, "x", USD(1));
	s = report(txn, SC_OUTCOME_SUCCESS, 1, USD(3));
	ck_assert_int_eq(s.charged, USD(3));
	ck_assert_int_eq(s.balance, 0);
	ck_assert_int_eq(s.debt, USD(2));
	w = wallet(id);
	ck_assert_int_eq(w.balance, 0);
	ck_assert_int_eq(w.debt, USD(2));
	blocked(id, "x", 1, "wallet_debt");
	OK(sc_wallets_update(c, id, &u, &w));
	ck_assert_int_eq(w.debt, 0);
	allow(id, "x", USD(1));
}
END_TEST

START_TEST(test_block_org_limits)
{
	sc_wallet_update u = { .set = SC_WALLET_SET_BALANCE | SC_WALLET_SET_MAX_PER_TXN |
		                      SC_WALLET_SET_DAILY_SPEND_LIMIT,
		               .balance = USD(100),
		               .max_per_txn = USD(5),
		               .daily_spend_limit = USD(8) };
	uint64_t org = new_org("org"), id, txn;
	sc_wallet w;

	id = new_agent_in("org", "bot", SC_PRIORITY_NORMAL, USD(1000), 0, 0, NULL, 0);
	/* An unlimited org wallet gates nothing. */
	report(allow(id, "x", USD(50)), SC_OUTCOME_FAILURE, 0, 0);
	OK(sc_org_wallet_update(c, org, &u, &w));
	blocked(id, "x", USD(6), "org:max_per_txn");
	txn = allow(id, "x", USD(5));
	blocked(id, "x", USD(4), "org:daily_spend_limit");
	OK(sc_org_wallet_get(c, org, &w));
	ck_assert_int_eq(w.held, USD(5));
	report(txn, SC_OUTCOME_SUCCESS, 1, USD(2));
	OK(sc_org_wallet_get(c, org, &w));
	ck_assert_int_eq(w.balance, USD(98));
	ck_assert_int_eq(w.daily_spent, USD(2));

	u.set = SC_WALLET_SET_BALANCE | SC_WALLET_SET_MAX_PER_TXN | SC_WALLET_SET_DAILY_SPEND_LIMIT;
	u.balance = USD(3);
	u.max_per_txn = 0;
	u.daily_spend_limit = 0;
	OK(sc_org_wallet_update(c, org, &u, &w));
	blocked(id, "x", USD(4), "org_empty");
	allow(id, "x", USD(3));
	blocked(id, "x", 1, "org_empty");
}
END_TEST

START_TEST(test_block_org_debt)
{
	sc_wallet_update u = { .set = SC_WALLET_SET_BALANCE, .balance = USD(2) };
	uint64_t org = new_org("org"), id, txn;
	sc_settlement s;
	sc_wallet w;

	id = new_agent_in("org", "bot", SC_PRIORITY_NORMAL, USD(10), 0, 0, NULL, 0);
	OK(sc_org_wallet_update(c, org, &u, &w));
	txn = allow(id, "x", USD(1));
	s = report(txn, SC_OUTCOME_SUCCESS, 1, USD(3));
	ck_assert_int_eq(s.balance, USD(7)); /* the agent wallet */
	ck_assert_int_eq(s.debt, 0);
	OK(sc_org_wallet_get(c, org, &w));
	ck_assert_int_eq(w.balance, 0);
	ck_assert_int_eq(w.debt, USD(1));
	blocked(id, "x", 1, "org_debt");
	u.set = SC_WALLET_SET_DEBT | SC_WALLET_SET_BALANCE;
	u.debt = 0;
	u.balance = USD(5);
	OK(sc_org_wallet_update(c, org, &u, &w));
	allow(id, "x", USD(1));
}
END_TEST

START_TEST(test_block_wallet_limits)
{
	uint64_t id, poor;

	new_org("org");
	id = new_agent_in("org", "bot", SC_PRIORITY_NORMAL, USD(100), USD(10), USD(15), NULL, 0);
	blocked(id, "x", USD(10) + 1, "wallet:max_per_txn");
	allow(id, "x", USD(10));
	blocked(id, "x", USD(6), "wallet:daily_spend_limit");
	allow(id, "x", USD(5)); /* exactly the daily limit */
	blocked(id, "x", 1, "wallet:daily_spend_limit");

	poor = new_agent_in("org", "poor", SC_PRIORITY_NORMAL, USD(5), 0, 0, NULL, 0);
	blocked(poor, "x", USD(5) + 1, "wallet_empty");
	allow(poor, "x", USD(5)); /* exactly the balance */
	blocked(poor, "x", 1, "wallet_empty");
	ck_assert_int_eq(wallet(poor).available, 0);
}
END_TEST

START_TEST(test_block_rule_limits)
{
	sc_rule rules[] = { test_rule("OpenAI cap", "openai.*", USD(5), USD(12), 0),
		            test_rule("rate", "search", 0, 0, 2) };
	uint64_t id;
	sc_rule *list;
	size_t n;

	new_org("org");
	id = new_agent_in("org", "bot", SC_PRIORITY_NORMAL, USD(1000), 0, 0, rules, 2);
	blocked(id, "openai.chat", USD(5) + 1, "rule:OpenAI cap:max_cost_per_txn");
	allow(id, "openai.chat", USD(5));
	allow(id, "openai.embed", USD(5));
	blocked(id, "openai.chat", USD(3), "rule:OpenAI cap:daily_spend_limit");
	allow(id, "openai.chat", USD(2));
	blocked(id, "openai.chat", 1, "rule:OpenAI cap:daily_spend_limit");

	allow(id, "search", USD(1));
	allow(id, "search", USD(1));
	blocked(id, "search", USD(1), "rule:rate:hourly_rate_limit");
	/* An action no rule matches is not limited by any. */
	allow(id, "other.thing", USD(100));

	OK(sc_rules_list(c, id, &list, &n));
	ck_assert_uint_eq(n, 2);
	ck_assert_int_eq(list[1].hourly_count, 2);
	sc_rules_free(list);
}
END_TEST

START_TEST(test_throttled_halves_rate)
{
	sc_rule r = test_rule("rate", "*", 0, 0, 3);
	uint64_t id;
	sc_agent a;

	new_org("org");
	id = new_agent_in("org", "bot", SC_PRIORITY_NORMAL, USD(100), 0, 0, &r, 1);
	OK(sc_agents_update(c, id, NULL, -1, SC_STATUS_THROTTLED, &a));
	allow(id, "x", 1); /* 3 / 2 = 1 */
	blocked(id, "x", 1, "rule:rate:hourly_rate_limit");
	OK(sc_agents_update(c, id, NULL, -1, SC_STATUS_ACTIVE, &a));
	allow(id, "x", 1);
	allow(id, "x", 1);
	blocked(id, "x", 1, "rule:rate:hourly_rate_limit");
}
END_TEST

START_TEST(test_most_specific_rule)
{
	sc_rule rules[] = { test_rule("star", "*", USD(1), 0, 0),
		            test_rule("openai", "openai.*", USD(5), 0, 0),
		            test_rule("chat", "openai.chat.*", USD(2), 0, 0),
		            test_rule("exact", "openai.chat", USD(10), 0, 0) };
	uint64_t id, txn;
	sc_agent a;

	new_org("org");
	id = new_agent_in("org", "bot", SC_PRIORITY_NORMAL, USD(1000), 0, 0, rules, 4);
	OK(sc_agents_get(c, id, &a));

	txn = allow(id, "openai.chat", USD(7)); /* exact beats every prefix */
	ck_assert_uint_eq(test_transaction(c, id, txn).rule_id, a.rules[3].id);
	blocked(id, "openai.embed", USD(6), "rule:openai:max_cost_per_txn");
	txn = allow(id, "openai.embed", USD(3)); /* a prefix beats '*' */
	ck_assert_uint_eq(test_transaction(c, id, txn).rule_id, a.rules[1].id);
	blocked(id, "openai.chat.stream", USD(3), "rule:chat:max_cost_per_txn"); /* longer prefix */
	blocked(id, "anthropic.messages", USD(2), "rule:star:max_cost_per_txn");
	blocked(id, "openai", USD(2), "rule:star:max_cost_per_txn"); /* openai.* needs the dot */
	txn = allow(id, "anthropic.messages", USD(1));
	ck_assert_uint_eq(test_transaction(c, id, txn).rule_id, a.rules[0].id);
}
END_TEST

START_TEST(test_critical_never_blocked)
{
	static const char *const expected[] = { "org:max_per_txn",         "org_empty",
		                                "wallet:max_per_txn",      "wallet:daily_spend_limit",
		                                "wallet_empty",            "rule:cap:max_cost_per_txn" };
	sc_wallet_update u = { .set = SC_WALLET_SET_BALANCE | SC_WALLET_SET_MAX_PER_TXN,
		               .balance = USD(2),
		               .max_per_txn = USD(1) };
	sc_rule r = test_rule("cap", "*", USD(1), 0, 0);
	uint64_t org = new_org("org"), id, txn;
	sc_decision dec;
	sc_settlement s;
	sc_wallet w;
	size_t i;

	id = new_agent_in("org", "vip", SC_PRIORITY_CRITICAL, USD(1), USD(2), USD(3), &r, 1);
	OK(sc_org_wallet_update(c, org, &u, &w));
	dec = check_as(id, "x", USD(5), NULL);
	ck_assert_int_eq(dec.allowed, 1);
	ck_assert_str_eq(dec.risk_level, "high");
	ck_assert_int_eq(dec.available, USD(1) - USD(5));
	for (i = 0; i < COUNT(expected); i++)
		ck_assert_msg(has_warning(&dec, expected[i]), "no warning %s (%u warnings)",
		              expected[i], dec.n_warnings);
	txn = dec.transaction_id;

	/* Its debt does not stop it either. */
	s = report(txn, SC_OUTCOME_SUCCESS, 1, USD(4));
	ck_assert_int_eq(s.balance, 0);
	ck_assert_int_eq(s.debt, USD(3));
	dec = check_as(id, "x", USD(1), NULL);
	ck_assert_int_eq(dec.allowed, 1);
	w = wallet(id);
	ck_assert_int_eq(w.held, USD(1));
	ck_assert_int_lt(w.available, 0);
}
END_TEST

START_TEST(test_high_topup)
{
	sc_wallet_update wu = { .set = SC_WALLET_SET_BALANCE | SC_WALLET_SET_BUDGET,
		                .balance = USD(5),
		                .budget = USD(100) };
	sc_transaction *list;
	sc_decision dec;
	sc_agent a;
	size_t n, i;
	int topups = 0;

	new_org("org");
	OK(sc_agents_create(c, "org", "hi", SC_PRIORITY_HIGH, &wu, NULL, 0, &a));
	/* Available $5 is below 10% of the $100 budget: topped up by $50 first. */
	dec = check_as(a.id, "x", USD(1), NULL);
	ck_assert_int_eq(dec.allowed, 1);
	ck_assert_int_eq(dec.available, USD(54));
	ck_assert_int_eq(wallet(a.id).balance, USD(55));
	/* Above 10% now: no second top-up. */
	dec = check_as(a.id, "x", USD(1), NULL);
	ck_assert_int_eq(dec.available, USD(53));
	ck_assert_int_eq(wallet(a.id).balance, USD(55));

	OK(sc_transactions_list(c, a.id, -1, 0, &list, &n));
	for (i = 0; i < n; i++)
		topups += strcmp(list[i].type, "topup") == 0;
	sc_transactions_free(list);
	ck_assert_int_eq(topups, 1);

	/* A normal agent in the same situation is not topped up. */
	OK(sc_agents_create(c, "org", "lo", SC_PRIORITY_NORMAL, &wu, NULL, 0, &a));
	blocked(a.id, "x", USD(6), "wallet_empty");
}
END_TEST

START_TEST(test_report_outcomes)
{
	uint64_t id = new_agent(USD(100)), t;
	sc_settlement s;
	sc_transaction tx;
	sc_wallet w;

	s = report(allow(id, "x", USD(10)), SC_OUTCOME_SUCCESS, 0, 0);
	ck_assert_int_eq(s.charged, USD(10)); /* default: the estimate */
	ck_assert_int_eq(s.balance, USD(90));
	ck_assert_int_eq(s.replayed, 0);
	s = report(allow(id, "x", USD(10)), SC_OUTCOME_SUCCESS, 1, USD(4));
	ck_assert_int_eq(s.charged, USD(4));
	ck_assert_int_eq(s.balance, USD(86));
	s = report(allow(id, "x", USD(10)), SC_OUTCOME_PARTIAL, 1, USD(3));
	ck_assert_int_eq(s.charged, USD(3));
	ck_assert_int_eq(s.balance, USD(83));
	s = report(allow(id, "x", USD(10)), SC_OUTCOME_FAILURE, 0, 0);
	ck_assert_int_eq(s.charged, 0); /* default: nothing */
	ck_assert_int_eq(s.balance, USD(83));
	t = allow(id, "x", USD(10));
	s = report(t, SC_OUTCOME_FAILURE, 1, USD(1));
	ck_assert_int_eq(s.charged, USD(1));
	ck_assert_int_eq(s.balance, USD(82));
	tx = test_transaction(c, id, t);
	ck_assert_int_eq(tx.status, SC_TXN_SETTLED);
	ck_assert_int_eq(tx.outcome, SC_OUTCOME_FAILURE);
	ck_assert_int_eq(tx.charged, USD(1));
	s = report(allow(id, "x", USD(10)), SC_OUTCOME_SUCCESS, 1, USD(12)); /* above the estimate */
	ck_assert_int_eq(s.charged, USD(12));
	ck_assert_int_eq(s.balance, USD(70));
	/* Above the balance: the balance goes to 0, the rest is debt. */
	s = report(allow(id, "x", USD(70)), SC_OUTCOME_SUCCESS, 1, USD(75));
	ck_assert_int_eq(s.charged, USD(75));
	ck_assert_int_eq(s.balance, 0);
	ck_assert_int_eq(s.debt, USD(5));
	w = wallet(id);
	ck_assert_int_eq(w.held, 0);
	ck_assert_int_eq(w.balance, 0);
	ck_assert_int_eq(w.debt, USD(5));
	ck_assert_int_eq(w.daily_spent, USD(10 + 4 + 3 + 1 + 12 + 75));
}
END_TEST

START_TEST(test_blocked_counts_nowhere)
{
	sc_rule r = test_rule("cap", "*", USD(2), USD(3), 0);
	uint64_t id;
	sc_rule *list;
	size_t n;
	sc_wallet w;

	new_org("org");
	id = new_agent_in("org", "bot", SC_PRIORITY_NORMAL, USD(10), 0, 0, &r, 1);
	blocked(id, "x", USD(3), "rule:cap:max_cost_per_txn");
	w = wallet(id);
	ck_assert_int_eq(w.held, 0);
	ck_assert_int_eq(w.balance, USD(10));
	OK(sc_rules_list(c, id, &list, &n));
	ck_assert_int_eq(list[0].daily_spent, 0);
	ck_assert_int_eq(list[0].hourly_count, 0);
	sc_rules_free(list);
}
END_TEST

START_TEST(test_idempotent_check)
{
	uint64_t id = new_agent(USD(10)), poor = new_agent(USD(1));
	sc_check_req req = { .agent_id = id, .action = "x", .estimated_cost = USD(3),
		             .idempotency_key = "k1" };
	sc_decision first, again;
	sc_wallet_update u = { .set = SC_WALLET_SET_BALANCE, .balance = USD(100) };
	sc_wallet w;

	first = check_as(id, "x", USD(3), "k1");
	ck_assert_int_eq(first.allowed, 1);
	ck_assert_int_eq(first.replayed, 0);
	again = check_as(id, "x", USD(3), "k1");
	ck_assert_int_eq(again.allowed, 1);
	ck_assert_int_eq(again.replayed, 1);
	ck_assert_uint_eq(again.transaction_id, first.transaction_id);
	ck_assert_int_eq(wallet(id).held, USD(3));
	ck_assert_str_eq(test_transaction(c, id, first.transaction_id).idempotency_key, "k1");

	req.estimated_cost = USD(4);
	FAILS(sc_check(c, &req, &again), SC_EEXISTS, "");
	req.estimated_cost = USD(3);
	req.action = "y";
	FAILS(sc_check(c, &req, &again), SC_EEXISTS, "");
	ck_assert_int_eq(wallet(id).held, USD(3));

	/* Keys are per agent. */
	ck_assert_int_eq(check_as(poor, "x", USD(1), "k1").replayed, 0);

	/* A blocked decision replays as blocked, even once it would pass. */
	first = check_as(poor, "x", USD(5), "k2");
	ck_assert_int_eq(first.allowed, 0);
	OK(sc_wallets_update(c, poor, &u, &w));
	again = check_as(poor, "x", USD(5), "k2");
	ck_assert_int_eq(again.allowed, 0);
	ck_assert_int_eq(again.replayed, 1);
	ck_assert_str_eq(again.block_reason, "wallet_empty");
	ck_assert_uint_eq(again.transaction_id, first.transaction_id);
}
END_TEST

START_TEST(test_idempotent_report)
{
	uint64_t id = new_agent(USD(10)), txn;
	sc_settlement first, again;

	txn = allow(id, "x", USD(3));
	first = report(txn, SC_OUTCOME_SUCCESS, 1, USD(2));
	ck_assert_int_eq(first.replayed, 0);
	again = report(txn, SC_OUTCOME_SUCCESS, 1, USD(2));
	ck_assert_int_eq(again.replayed, 1);
	ck_assert_int_eq(again.charged, USD(2));
	ck_assert_int_eq(again.balance, first.balance);
	ck_assert_int_eq(wallet(id).balance, USD(8));
	FAILS(sc_report(c, txn, SC_OUTCOME_SUCCESS, 1, USD(1), &again), SC_EEXISTS, "");
	FAILS(sc_report(c, txn, SC_OUTCOME_FAILURE, 1, USD(2), &again), SC_EEXISTS, "");
	ck_assert_int_eq(wallet(id).balance, USD(8));

	/* A blocked transaction cannot be reported. */
	txn = check_as(id, "x", USD(100), NULL).transaction_id;
	ck_assert_uint_gt(txn, 0);
	ck_assert_int_eq(sc_report(c, txn, SC_OUTCOME_SUCCESS, 0, 0, &again), SC_EINVAL);
}
END_TEST

/* ----- expiry (--hold-ttl 1) ----- */

static void setup_short_ttl(void)
{
	static const char *const args[] = { "--hold-ttl", "1", NULL };

	start(args);
}

static void setup_short_ttl_no_charge(void)
{
	static const char *const args[] = { "--hold-ttl", "1", "--expiry-charge", "none", NULL };

	start(args);
}

START_TEST(test_hold_expiry)
{
	uint64_t id = new_agent(USD(10)), txn, kept;
	sc_settlement s;
	sc_transaction t;
	sc_wallet w;
	int64_t expired;

	txn = allow(id, "x", USD(3));
	kept = allow(id, "x", USD(2));
	report(kept, SC_OUTCOME_SUCCESS, 1, USD(1));
	test_sleep_ms(2500);
	w = wait_no_holds(id);
	ck_assert_int_eq(w.held, 0);
	ck_assert_int_eq(w.balance, USD(10 - 3 - 1)); /* the estimate is charged */
	t = test_transaction(c, id, txn);
	ck_assert_int_eq(t.status, SC_TXN_EXPIRED);
	ck_assert_int_eq(t.charged, USD(3));
	ck_assert_int_eq(test_transaction(c, id, kept).status, SC_TXN_SETTLED);
	ck_assert_int_eq(sc_report(c, txn, SC_OUTCOME_SUCCESS, 0, 0, &s), SC_EINVAL);
	OK(sc_stat(c, "expired", &expired));
	ck_assert_int_eq(expired, 1);
	OK(sc_stat(c, "holds_open", &expired));
	ck_assert_int_eq(expired, 0);
}
END_TEST

START_TEST(test_hold_expiry_no_charge)
{
	uint64_t id = new_agent(USD(10)), txn;
	sc_wallet w;

	txn = allow(id, "x", USD(3));
	test_sleep_ms(2500);
	w = wait_no_holds(id);
	ck_assert_int_eq(w.held, 0);
	ck_assert_int_eq(w.balance, USD(10));
	ck_assert_int_eq(test_transaction(c, id, txn).status, SC_TXN_EXPIRED);
	ck_assert_int_eq(test_transaction(c, id, txn).charged, 0);
}
END_TEST

/* ----- concurrency ----- */

#define CONC_TTL "4"

static void setup_concurrency(void)
{
	static const char *const args[] = { "--hold-ttl", CONC_TTL, NULL };

	start(args);
	test_daemon_timeout(120);
}

#define THREADS 16
#define CHECKS_PER_THREAD 100
#define CONC_BALANCE USD(100)

struct attempt {
	uint64_t txn;
	sc_micros estimate;
	int allowed;
	/* settlement phase */
	int reported;    /* 0: left to expire */
	sc_micros charged; /* from the daemon's acknowledgement */
	sc_micros expected;
	int expired_first; /* the report found the hold already expired */
};

struct worker {
	pthread_t thread;
	const char *socket;
	uint64_t agent;
	unsigned seed;
	pthread_barrier_t *go;
	struct attempt attempts[CHECKS_PER_THREAD];
	int n_attempts;
	int phase; /* 1: check, 2: report */
	int rc;    /* first failure, 0 if none */
	char error[256];
	char unexpected_reason[SC_REASON_MAX + 1];
};

static void worker_fail(struct worker *w, int rc, sc_client *cl, const char *what)
{
	if (w->rc == 0) {
		w->rc = rc;
		snprintf(w->error, sizeof(w->error), "%s: %s: %s", what, sc_err_name(rc),
		         cl ? sc_last_error(cl) : "");
	}
}

static void *worker_check(struct worker *w, sc_client *cl)
{
	static const char *const actions[] = { "openai.chat", "search.web", "tool.run" };
	sc_decision dec;
	int i, rc;

	for (i = 0; i < CHECKS_PER_THREAD; i++) {
		/* Estimates average CONC_BALANCE * 10 / all checks: ten times the balance. */
		sc_micros mean = CONC_BALANCE * 10 / (THREADS * CHECKS_PER_THREAD);
		struct attempt *a = &w->attempts[i];
		sc_check_req req = { .agent_id = w->agent, .action = actions[i % 3] };

		req.estimated_cost = 1 + (sc_micros)(rand_r(&w->seed) % (unsigned)(2 * mean));
		rc = sc_check(cl, &req, &dec);
		if (rc != 0) {
			worker_fail(w, rc, cl, "check");
			break;
		}
		a->txn = dec.transaction_id;
		a->estimate = req.estimated_cost;
		a->allowed = dec.allowed;
		if (!dec.allowed && strcmp(dec.block_reason, "wallet_empty") != 0)
			snprintf(w->unexpected_reason, sizeof(w->unexpected_reason), "%s",
			         dec.block_reason);
		w->n_attempts++;
	}
	return NULL;
}

/* Reports four holds in five with a random outcome and cost; the fifth expires. */
static void worker_report(struct worker *w, sc_client *cl)
{
	sc_settlement s;
	int i, rc, has_actual;
	sc_micros actual;
	enum sc_outcome o;

	for (i = 0; i < w->n_attempts; i++) {
		struct attempt *a = &w->attempts[i];
		unsigned r = (unsigned)rand_r(&w->seed);

		if (!a->allowed || r % 5 == 0)
			continue;
		o = (enum sc_outcome)((r / 5) % 3);
		has_actual = o == SC_OUTCOME_PARTIAL || (r / 15) % 2 == 0;
		actual = (sc_micros)((unsigned)rand_r(&w->seed) % (unsigned)(a->estimate + 1));
		if (!has_actual)
			a->expected = o == SC_OUTCOME_SUCCESS ? a->estimate : 0;
		else
			a->expected = actual;
		rc = sc_report(cl, a->txn, o, has_actual, actual, &s);
		if (rc == SC_EINVAL) {
			/* Too late: the hold expired first and was charged its estimate. */
			a->expired_first = 1;
			continue;
		}
		if (rc != 0) {
			worker_fail(w, rc, cl, "report");
			break;
		}
		a->reported = 1;
		a->charged = s.charged;
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	sc_client *cl = NULL;
	int rc = sc_connect(w->socket, &cl);

	if (rc != 0)
		worker_fail(w, rc, NULL, "connect");
	pthread_barrier_wait(w->go);
	if (rc == 0) {
		if (w->phase == 1)
			worker_check(w, cl);
		else
			worker_report(w, cl);
	}
	sc_close(cl);
	return NULL;
}

struct monitor {
	pthread_t thread;
	const char *socket;
	uint64_t agent;
	volatile int stop;
	int polls, violations, rc;
	sc_wallet worst;
};

/* Polls the wallet while the workers check: held never exceeds the balance. */
static void *monitor_main(void *arg)
{
	struct monitor *m = arg;
	sc_client *cl;
	sc_wallet w;

	if ((m->rc = sc_connect(m->socket, &cl)) != 0)
		return NULL;
	while (!__atomic_load_n(&m->stop, __ATOMIC_ACQUIRE)) {
		if ((m->rc = sc_wallets_get(cl, m->agent, &w)) != 0)
			break;
		m->polls++;
		if (w.held > w.balance || w.available < 0 || w.balance != CONC_BALANCE) {
			m->violations++;
			m->worst = w;
		}
	}
	sc_close(cl);
	return NULL;
}

static void run_workers(struct worker *w, pthread_barrier_t *go, int phase)
{
	int i;

	pthread_barrier_init(go, NULL, THREADS);
	for (i = 0; i < THREADS; i++) {
		w[i].phase = phase;
		ck_assert_int_eq(pthread_create(&w[i].thread, NULL, worker_main, &w[i]), 0);
	}
	for (i = 0; i < THREADS; i++)
		pthread_join(w[i].thread, NULL);
	pthread_barrier_destroy(go);
	for (i = 0; i < THREADS; i++)
		ck_assert_msg(w[i].rc == 0, "thread %d: %s", i, w[i].error);
}

START_TEST(test_concurrent_checks_never_overspend)
{
	static struct worker w[THREADS];
	struct monitor m;
	pthread_barrier_t go;
	sc_micros held = 0, charged = 0, expired = 0;
	unsigned seed = (unsigned)time(NULL);
	int i, j, allowed = 0, reported = 0, left = 0;
	uint64_t id;
	sc_wallet final;

	id = new_agent(CONC_BALANCE);
	fprintf(stderr, "concurrency: seed %u\n", seed);

	memset(w, 0, sizeof(w));
	memset(&m, 0, sizeof(m));
	for (i = 0; i < THREADS; i++) {
		w[i].socket = d.socket;
		w[i].agent = id;
		w[i].seed = seed + (unsigned)i;
		w[i].go = &go;
	}
	m.socket = d.socket;
	m.agent = id;
	ck_assert_int_eq(pthread_create(&m.thread, NULL, monitor_main, &m), 0);
	run_workers(w, &go, 1);
	__atomic_store_n(&m.stop, 1, __ATOMIC_RELEASE);
	pthread_join(m.thread, NULL);
	ck_assert_msg(m.rc == 0, "monitor: %s", sc_err_name(m.rc));
	ck_assert_msg(m.violations == 0,
	              "%d of %d polls saw held %lld > balance %lld (available %lld)",
	              m.violations, m.polls, (long long)m.worst.held, (long long)m.worst.balance,
	              (long long)m.worst.available);

	for (i = 0; i < THREADS; i++) {
		ck_assert_int_eq(w[i].n_attempts, CHECKS_PER_THREAD);
		ck_assert_msg(w[i].unexpected_reason[0] == '\0', "blocked for %s",
		              w[i].unexpected_reason);
		for (j = 0; j < w[i].n_attempts; j++) {
			if (w[i].attempts[j].allowed) {
				held += w[i].attempts[j].estimate;
				allowed++;
			}
		}
	}
	/* Every acknowledged hold is still open: their sum is the wallet's held. */
	final = wallet(id);
	ck_assert_int_le(held, CONC_BALANCE);
	ck_assert_int_eq(final.held, held);
	ck_assert_int_eq(final.balance, CONC_BALANCE);
	ck_assert_int_gt(allowed, 0);
	ck_assert_int_lt(allowed, THREADS * CHECKS_PER_THREAD);

	run_workers(w, &go, 2);
	for (i = 0; i < THREADS; i++) {
		for (j = 0; j < w[i].n_attempts; j++) {
			struct attempt *a = &w[i].attempts[j];

			if (!a->allowed)
				continue;
			if (a->reported) {
				ck_assert_int_eq(a->charged, a->expected);
				charged += a->charged;
				reported++;
			} else {
				expired += a->estimate;
				left++;
			}
		}
	}
	ck_assert_int_gt(reported, 0);
	/* Wait for the unreported holds to expire (TTL plus the sweep). */
	for (i = 0; i < 200 && (final = wallet(id)).held != 0; i++)
		test_sleep_ms(50);
	ck_assert_int_eq(final.held, 0);
	ck_assert_msg(final.balance == CONC_BALANCE - charged - expired,
	              "balance %lld, expected %lld - %lld charged - %lld expired (%d reported, "
	              "%d expired)",
	              (long long)final.balance, (long long)CONC_BALANCE, (long long)charged,
	              (long long)expired, reported, left);
	ck_assert_int_eq(final.debt, 0);
}
END_TEST

/* ----- the test cases ----- */

void integration_gate_tcases(Suite *s)
{
	TCase *tc;

	tc = daemon_tcase(s, "gate", setup_default, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_block_agent_not_found);
	tcase_add_test(tc, test_block_agent_frozen);
	tcase_add_test(tc, test_block_wallet_debt);
	tcase_add_test(tc, test_block_org_limits);
	tcase_add_test(tc, test_block_org_debt);
	tcase_add_test(tc, test_block_wallet_limits);
	tcase_add_test(tc, test_block_rule_limits);
	tcase_add_test(tc, test_throttled_halves_rate);
	tcase_add_test(tc, test_most_specific_rule);
	tcase_add_test(tc, test_critical_never_blocked);
	tcase_add_test(tc, test_high_topup);
	tcase_add_test(tc, test_report_outcomes);
	tcase_add_test(tc, test_blocked_counts_nowhere);
	tcase_add_test(tc, test_idempotent_check);
	tcase_add_test(tc, test_idempotent_report);

	tc = daemon_tcase(s, "expiry", setup_short_ttl, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_hold_expiry);

	tc = daemon_tcase(s, "expiry-none", setup_short_ttl_no_charge, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_hold_expiry_no_charge);

	tc = daemon_tcase(s, "concurrency", setup_concurrency, 120);
	tcase_add_test(tc, test_concurrent_checks_never_overspend);
}
