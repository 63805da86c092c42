/*
 * check_integration.c: end-to-end tests of sidecard, driven only through
 * libsidecard against the real daemon started as a child process
 * (tests/daemon.c). Each test gets a fresh daemon on a fresh temporary
 * state directory, so tests never see each other's objects.
 *
 * What is covered, against protocol/PROTOCOL.md: every method; every block
 * reason; the most specific rule; critical agents (never blocked, warned);
 * high-priority top-ups; report outcomes with balances and debt; idempotent
 * check and report (replay and mismatch); hold expiry (--hold-ttl 1); kredit
 * scores, automatic and operator status changes, anomalies and the events
 * they record; transactions listed by org, risk level, status and time
 * window, paged with `before`, summed, ranked by agent (agents.top), and
 * the fleet overview, all against the test's own tally; task usage caps
 * (--task-max-usage) across agents, with reports, critical agents, expiry
 * and a restart, against the test's own tally of tasks.usage; wallet
 * transfers (between agents, into and out of the org's wallet, refusals that
 * change nothing) and adjustments, the transactions they record with their
 * reason and balance_after, and their survival of a restart; argument errors
 * naming the field; a connection to a daemon
 * that went away; a restart on the same state directory; and the concurrency test:
 * 16 connections race checks against one wallet worth a tenth of their
 * estimates, and the final balance must equal the tally of acknowledged
 * charges. The client's own strictness (wrong msgid, oversized or malformed
 * responses) needs a misbehaving daemon: see check_client.c, run from here.
 *
 * Threads: the Check runner forks each test (CK_FORK); the concurrency test
 * adds its own threads, each with its own connection, which record results
 * and never call ck_assert (only the test's main thread asserts).
 * Every test is bounded by Check's timeout and by an alarm
 * (test_daemon_timeout), which also takes the daemon down with it.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <check.h>

#include "client_fixture.h"
#include "daemon.h"
#include "sidecard.h"
#include "suites.h"
#include "testutil.h"

#define USD(x) ((sc_micros)((x) * SC_MICROS_PER_USD))
#define CENTS(x) ((sc_micros)(x) * 10000)
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
#define TEST_TIMEOUT_S 60

static struct test_daemon d;
static sc_client *c;

/* Asserts that a library call succeeded, showing the daemon's message if not. */
#define OK(call) TEST_OK(c, call)

/* Asserts that a call failed with `code` and that the message mentions `word`. */
#define FAILS(call, code, word)                                                          \
	do {                                                                             \
		int rc_ = (call);                                                        \
		ck_assert_msg(rc_ == (code), "%s: expected %s, got %s (%s)", #call,      \
		              sc_err_name(code), sc_err_name(rc_), sc_last_error(c));    \
		ck_assert_msg(strstr(sc_last_error(c), (word)) != NULL,                  \
		              "%s: message '%s' does not name '%s'", #call,              \
		              sc_last_error(c), (word));                                 \
	} while (0)

static void start(const char *const *extra)
{
	test_client_start(&d, &c, extra, TEST_TIMEOUT_S);
}

static void stop(void)
{
	test_client_stop(&d, &c);
}

static void setup_default(void)
{
	start(NULL);
}

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

#define CONC_TTL "4"

static void setup_concurrency(void)
{
	static const char *const args[] = { "--hold-ttl", CONC_TTL, NULL };

	start(args);
	test_daemon_timeout(120);
}

/* ----- helpers ----- */

static uint64_t new_org(const char *name)
{
	sc_org o;

	OK(sc_orgs_create(c, name, &o));
	return o.id;
}

/* An agent in a new org, with a balance (budget = balance) and optional limits. */
static uint64_t new_agent_in(const char *org, const char *name, enum sc_priority p,
                             sc_micros balance, sc_micros max_per_txn, sc_micros daily,
                             const sc_rule *rules, size_t n_rules)
{
	sc_wallet_update w = {
		.set = SC_WALLET_SET_BALANCE | SC_WALLET_SET_MAX_PER_TXN |
		       SC_WALLET_SET_DAILY_SPEND_LIMIT,
		.balance = balance,
		.max_per_txn = max_per_txn,
		.daily_spend_limit = daily,
	};
	sc_agent a;

	OK(sc_agents_create(c, org, name, p, &w, rules, n_rules, &a));
	return a.id;
}

static uint64_t new_agent(sc_micros balance)
{
	static int n;
	char org[32];

	snprintf(org, sizeof(org), "org-%d", ++n);
	new_org(org);
	return new_agent_in(org, "bot", SC_PRIORITY_NORMAL, balance, 0, 0, NULL, 0);
}

static sc_decision check_as(uint64_t agent, const char *action, sc_micros cost, const char *key)
{
	sc_check_req req = { .agent_id = agent, .action = action, .estimated_cost = cost,
		             .idempotency_key = key };
	sc_decision dec;

	OK(sc_check(c, &req, &dec));
	return dec;
}

static uint64_t allow(uint64_t agent, const char *action, sc_micros cost)
{
	sc_decision dec = check_as(agent, action, cost, NULL);

	ck_assert_msg(dec.allowed, "%s for %lld blocked: %s", action, (long long)cost,
	              dec.block_reason);
	ck_assert_uint_gt(dec.transaction_id, 0);
	ck_assert_str_eq(dec.block_reason, "");
	return dec.transaction_id;
}

static void blocked(uint64_t agent, const char *action, sc_micros cost, const char *reason)
{
	sc_decision dec = check_as(agent, action, cost, NULL);

	ck_assert_msg(!dec.allowed, "%s for %lld allowed, expected %s", action, (long long)cost,
	              reason);
	ck_assert_str_eq(dec.block_reason, reason);
	ck_assert_int_eq(dec.replayed, 0);
}

static sc_wallet wallet(uint64_t agent)
{
	sc_wallet w;

	OK(sc_wallets_get(c, agent, &w));
	return w;
}

static sc_settlement report(uint64_t txn, enum sc_outcome o, int has_actual, sc_micros actual)
{
	sc_settlement s;

	OK(sc_report(c, txn, o, has_actual, actual, &s));
	ck_assert_uint_eq(s.transaction_id, txn);
	ck_assert_int_eq(s.outcome, o);
	return s;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* ----- methods ----- */

START_TEST(test_hello)
{
	sc_client *other;

	ck_assert_str_eq(sc_server_version(c), SC_VERSION);
	ck_assert_str_eq(sc_last_error(c), "");
	ck_assert_int_eq(sc_connect("/nonexistent/sidecard.sock", &other), -ENOENT);
	ck_assert_ptr_null(other);
}
END_TEST

START_TEST(test_orgs)
{
	sc_org a, b, *list;
	size_t n;

	OK(sc_orgs_create(c, "alpha", &a));
	OK(sc_orgs_create(c, "beta", &b));
	ck_assert_uint_gt(a.id, 0);
	ck_assert_uint_gt(b.id, a.id);
	ck_assert_str_eq(a.name, "alpha");
	ck_assert_uint_eq(a.agents, 0);
	ck_assert_int_gt(a.created_at, INT64_C(1600000000000000));
	ck_assert_int_eq(a.wallet.limited, 0);
	ck_assert_int_eq(a.wallet.balance, 0);
	FAILS(sc_orgs_create(c, "alpha", &a), SC_EEXISTS, "alpha");

	new_agent_in("beta", "bot", SC_PRIORITY_NORMAL, USD(1), 0, 0, NULL, 0);
	OK(sc_orgs_list(c, &list, &n));
	ck_assert_uint_eq(n, 2);
	ck_assert_uint_eq(list[0].id, a.id);
	ck_assert_str_eq(list[1].name, "beta");
	ck_assert_uint_eq(list[1].agents, 1);
	sc_orgs_free(list);
}
END_TEST

START_TEST(test_agents_create_get_list)
{
	sc_rule rules[2] = { test_rule("OpenAI cap", "openai.*", USD(5), USD(100), 50),
		             test_rule("Default", "*", USD(50), USD(500), 200) };
	sc_wallet_update w = { .set = SC_WALLET_SET_BALANCE | SC_WALLET_SET_MAX_PER_TXN |
		                      SC_WALLET_SET_DAILY_SPEND_LIMIT,
		               .balance = USD(5000),
		               .max_per_txn = USD(100),
		               .daily_spend_limit = USD(1000) };
	sc_agent a, got, *list;
	char org_id[24];
	uint64_t org = new_org("my-team");
	size_t n;

	new_org("other");
	OK(sc_agents_create(c, "my-team", "research-bot", SC_PRIORITY_HIGH, &w, rules, 2, &a));
	ck_assert_uint_gt(a.id, 0);
	ck_assert_uint_eq(a.org_id, org);
	ck_assert_str_eq(a.org, "my-team");
	ck_assert_str_eq(a.name, "research-bot");
	ck_assert_int_eq(a.priority, SC_PRIORITY_HIGH);
	ck_assert_int_eq(a.status, SC_STATUS_ACTIVE);
	ck_assert_int_eq(a.wallet.balance, USD(5000));
	ck_assert_int_eq(a.wallet.budget, USD(5000)); /* defaults to the balance */
	ck_assert_int_eq(a.wallet.available, USD(5000));
	ck_assert_int_eq(a.wallet.max_per_txn, USD(100));
	ck_assert_int_eq(a.wallet.daily_spend_limit, USD(1000));
	ck_assert_int_eq(a.wallet.limited, 1);
	ck_assert_uint_eq(a.n_rules, 2);
	ck_assert_str_eq(a.rules[0].name, "OpenAI cap");
	ck_assert_str_eq(a.rules[0].match, "openai.*");
	ck_assert_int_eq(a.rules[0].max_cost_per_txn, USD(5));
	ck_assert_int_eq(a.rules[0].hourly_rate_limit, 50);
	ck_assert_uint_gt(a.rules[0].id, 0);
	ck_assert_uint_ne(a.rules[0].id, a.rules[1].id);

	OK(sc_agents_get(c, a.id, &got));
	ck_assert_int_eq(memcmp(&got.wallet, &a.wallet, sizeof(a.wallet)), 0);
	ck_assert_str_eq(got.rules[1].match, "*");

	/* The org by decimal id; the default priority; no wallet. */
	snprintf(org_id, sizeof(org_id), "%" PRIu64, org);
	OK(sc_agents_create(c, org_id, "second", SC_PRIORITY_NORMAL, NULL, NULL, 0, &got));
	ck_assert_uint_eq(got.org_id, org);
	ck_assert_int_eq(got.wallet.balance, 0);
	ck_assert_uint_eq(got.n_rules, 0);
	new_agent_in("other", "research-bot", SC_PRIORITY_NORMAL, 0, 0, 0, NULL, 0);

	FAILS(sc_agents_create(c, "my-team", "research-bot", SC_PRIORITY_NORMAL, NULL, NULL, 0,
	                       &got),
	      SC_EEXISTS, "research-bot");
	ck_assert_int_eq(sc_agents_create(c, "nobody", "x", SC_PRIORITY_NORMAL, NULL, NULL, 0, &got),
	                 SC_ENOTFOUND);
	ck_assert_int_eq(sc_agents_get(c, 999999, &got), SC_ENOTFOUND);

	OK(sc_agents_list(c, 0, &list, &n));
	ck_assert_uint_eq(n, 3);
	ck_assert_uint_lt(list[0].id, list[1].id);
	sc_agents_free(list);
	OK(sc_agents_list(c, org, &list, &n));
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(list[0].name, "research-bot");
	ck_assert_str_eq(list[1].name, "second");
	sc_agents_free(list);
}
END_TEST

START_TEST(test_agents_update)
{
	uint64_t id = new_agent(USD(10));
	sc_agent a;

	OK(sc_agents_update(c, id, "renamed", -1, -1, &a));
	ck_assert_str_eq(a.name, "renamed");
	ck_assert_int_eq(a.priority, SC_PRIORITY_NORMAL);
	OK(sc_agents_update(c, id, NULL, SC_PRIORITY_CRITICAL, SC_STATUS_THROTTLED, &a));
	ck_assert_str_eq(a.name, "renamed");
	ck_assert_int_eq(a.priority, SC_PRIORITY_CRITICAL);
	ck_assert_int_eq(a.status, SC_STATUS_THROTTLED);
	OK(sc_agents_update(c, id, NULL, -1, SC_STATUS_FROZEN, &a));
	ck_assert_int_eq(a.status, SC_STATUS_FROZEN);
	OK(sc_agents_get(c, id, &a));
	ck_assert_int_eq(a.status, SC_STATUS_FROZEN);
	OK(sc_agents_update(c, id, NULL, -1, SC_STATUS_ACTIVE, &a));
	ck_assert_int_eq(a.status, SC_STATUS_ACTIVE);
	ck_assert_int_eq(sc_agents_update(c, 999999, "x", -1, -1, &a), SC_ENOTFOUND);
}
END_TEST

START_TEST(test_agents_delete)
{
	uint64_t id = new_agent(USD(10)), txn;
	sc_agent a;

	txn = allow(id, "tool.run", USD(1));
	FAILS(sc_agents_delete(c, id), SC_EUNAVAILABLE, "");
	report(txn, SC_OUTCOME_SUCCESS, 0, 0);
	OK(sc_agents_delete(c, id));
	ck_assert_int_eq(sc_agents_get(c, id, &a), SC_ENOTFOUND);
	ck_assert_int_eq(sc_agents_delete(c, id), SC_ENOTFOUND);
	blocked(id, "tool.run", USD(1), "agent_not_found");
}
END_TEST

START_TEST(test_rules)
{
	uint64_t id = new_agent(USD(100)), txn;
	sc_rule r = test_rule("Flight cap", "flight.*", USD(800), USD(3000), 10), got, *list;
	size_t n, i;
	char name[16], match[16];

	OK(sc_rules_add(c, id, &r, &got));
	ck_assert_uint_gt(got.id, 0);
	ck_assert_str_eq(got.name, "Flight cap");
	ck_assert_int_eq(got.max_cost_per_txn, USD(800));
	ck_assert_int_eq(got.daily_spent, 0);
	ck_assert_int_eq(got.hourly_count, 0);

	txn = allow(id, "flight.booking", USD(20));
	report(txn, SC_OUTCOME_SUCCESS, 1, USD(15));

	/* An update changes only the given fields and keeps the counters. */
	r.max_cost_per_txn = USD(1000);
	OK(sc_rules_update(c, id, got.id, SC_RULE_SET_MAX_COST_PER_TXN, &r, &got));
	ck_assert_int_eq(got.max_cost_per_txn, USD(1000));
	ck_assert_int_eq(got.daily_spend_limit, USD(3000));
	ck_assert_int_eq(got.daily_spent, USD(15));
	ck_assert_int_eq(got.hourly_count, 1);
	snprintf(r.name, sizeof(r.name), "Flights");
	OK(sc_rules_update(c, id, got.id, SC_RULE_SET_NAME, &r, &got));
	ck_assert_str_eq(got.name, "Flights");
	ck_assert_str_eq(got.match, "flight.*");

	r = test_rule("Other", "flight.*", 0, 0, 0);
	FAILS(sc_rules_add(c, id, &r, &got), SC_EEXISTS, "");
	r = test_rule("Bad", "open*ai", 0, 0, 0);
	FAILS(sc_rules_add(c, id, &r, &got), SC_EINVAL, "match");

	/* A hold under a removed rule still settles. */
	txn = allow(id, "flight.booking", USD(5));
	OK(sc_rules_list(c, id, &list, &n));
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(list[0].name, "Flights");
	OK(sc_rules_remove(c, id, list[0].id));
	ck_assert_int_eq(report(txn, SC_OUTCOME_SUCCESS, 0, 0).balance, USD(100 - 15 - 5));
	ck_assert_int_eq(sc_rules_remove(c, id, list[0].id), SC_ENOTFOUND);
	sc_rules_free(list);
	OK(sc_rules_list(c, id, &list, &n));
	ck_assert_uint_eq(n, 0);
	sc_rules_free(list);

	/* At most 32 rules per agent. */
	for (i = 0; i < SC_RULES_MAX; i++) {
		snprintf(name, sizeof(name), "r%zu", i);
		snprintf(match, sizeof(match), "a%zu.*", i);
		r = test_rule(name, match, 0, 0, 0);
		OK(sc_rules_add(c, id, &r, &got));
	}
	r = test_rule("one-too-many", "b.*", 0, 0, 0);
	ck_assert_int_eq(sc_rules_add(c, id, &r, &got), SC_ELIMIT);
	ck_assert_int_eq(sc_rules_list(c, 999999, &list, &n), SC_ENOTFOUND);
}
END_TEST

static void setup_six_rule_texts(void)
{
	static const char *const args[] = { "--rule-texts", "6", NULL };

	start(args);
}

static int64_t stat_of(const char *name)
{
	int64_t v = -1;

	OK(sc_stat(c, name, &v));
	return v;
}

/*
 * A fleet's identical rules are stored once: rule_texts counts distinct
 * names and patterns; a daemon started with --rule-texts 6 refuses a seventh
 * with limit_exceeded naming the option and changes nothing; renaming a
 * rule whose old name no other rule uses fits; deleting agents gives their
 * texts back; and a restart keeps the count and the sharing.
 */
START_TEST(test_rule_texts_shared_and_limited)
{
	sc_rule fleet[2] = { test_rule("chat", "openai.chat", 0, 0, 10),
		             test_rule("openai", "openai.*", 0, 0, 10) };
	sc_rule search = test_rule("search", "search.*", 0, 0, 0);
	sc_rule tools = test_rule("tools", "tool.*", 0, 0, 0);
	sc_rule all = test_rule("all", "*", 0, 0, 0), got, *list;
	uint64_t id[3], lone;
	sc_agent a;
	size_t n;

	new_org("fleet");
	for (int i = 0; i < 3; i++) {
		char name[16];

		snprintf(name, sizeof(name), "bot-%d", i);
		id[i] = new_agent_in("fleet", name, SC_PRIORITY_NORMAL, USD(10), 0, 0, fleet, 2);
	}
	ck_assert_int_eq(stat_of("rule_texts"), 4);
	ck_assert_int_eq(stat_of("capacity_rule_texts"), 6);
	lone = new_agent_in("fleet", "lone", SC_PRIORITY_NORMAL, USD(10), 0, 0, &search, 1);
	ck_assert_int_eq(stat_of("rule_texts"), 6);

	FAILS(sc_agents_create(c, "fleet", "late", SC_PRIORITY_NORMAL, NULL, &tools, 1, &a),
	      SC_ELIMIT, "--rule-texts");
	FAILS(sc_rules_add(c, id[0], &tools, &got), SC_ELIMIT, "--rule-texts");
	ck_assert_int_eq(stat_of("agents"), 4);
	ck_assert_int_eq(stat_of("rules"), 7);
	ck_assert_int_eq(sc_agents_get(c, 5, &a), SC_ENOTFOUND);

	/* "search" is lone's alone: the rename frees it as it takes "find" */
	OK(sc_rules_list(c, lone, &list, &n));
	ck_assert_uint_eq(n, 1);
	snprintf(search.name, sizeof(search.name), "find");
	OK(sc_rules_update(c, lone, list[0].id, SC_RULE_SET_NAME, &search, &got));
	sc_rules_free(list);
	ck_assert_str_eq(got.name, "find");
	ck_assert_int_eq(stat_of("rule_texts"), 6);

	/* a deleted agent's texts are given back; rules are listed in creation order */
	OK(sc_agents_delete(c, id[2]));
	ck_assert_int_eq(stat_of("rule_texts"), 6);
	OK(sc_agents_delete(c, lone));
	ck_assert_int_eq(stat_of("rule_texts"), 4);
	OK(sc_rules_add(c, id[0], &all, &got));
	OK(sc_rules_list(c, id[0], &list, &n));
	ck_assert_uint_eq(n, 3);
	ck_assert_str_eq(list[0].name, "chat");
	ck_assert_str_eq(list[1].name, "openai");
	ck_assert_str_eq(list[2].name, "all");
	sc_rules_free(list);
	ck_assert_int_eq(stat_of("rule_texts"), 6);

	sc_close(c);
	c = NULL;
	ck_assert_int_eq(test_daemon_restart(&d), 0);
	OK(sc_connect(d.socket, &c));
	ck_assert_int_eq(stat_of("rule_texts"), 6);
	/* shared strings are found again after the restart: no new text needed */
	new_agent_in("fleet", "bot-9", SC_PRIORITY_NORMAL, USD(10), 0, 0, fleet, 2);
	ck_assert_int_eq(stat_of("rule_texts"), 6);
	for (int i = 0; i < 2; i++)
		OK(sc_agents_delete(c, id[i]));
	/* bot-9's two rules are what is left */
	ck_assert_int_eq(stat_of("rule_texts"), 4);
	OK(sc_agents_create(c, "fleet", "late", SC_PRIORITY_NORMAL, NULL, &tools, 1, &a));
	ck_assert_int_eq(stat_of("rule_texts"), 6);
}
END_TEST

START_TEST(test_wallets)
{
	uint64_t id = new_agent(USD(10)), org = new_org("funded");
	sc_wallet_update u = { .set = SC_WALLET_SET_BALANCE | SC_WALLET_SET_BUDGET |
		                      SC_WALLET_SET_MAX_PER_TXN | SC_WALLET_SET_DAILY_SPEND_LIMIT,
		               .balance = USD(20),
		               .budget = USD(40),
		               .max_per_txn = USD(3),
		               .daily_spend_limit = USD(7) };
	sc_wallet w;

	w = wallet(id);
	ck_assert_int_eq(w.balance, USD(10));
	ck_assert_int_eq(w.budget, USD(10));
	ck_assert_int_eq(w.limited, 1);
	OK(sc_wallets_update(c, id, &u, &w));
	ck_assert_int_eq(w.balance, USD(20));
	ck_assert_int_eq(w.budget, USD(40));
	ck_assert_int_eq(w.max_per_txn, USD(3));
	ck_assert_int_eq(w.daily_spend_limit, USD(7));
	ck_assert_int_eq(w.available, USD(20));
	u.set = SC_WALLET_SET_BUDGET;
	u.budget = USD(50);
	OK(sc_wallets_update(c, id, &u, &w));
	ck_assert_int_eq(w.balance, USD(20));
	ck_assert_int_eq(w.budget, USD(50));

	OK(sc_org_wallet_get(c, org, &w));
	ck_assert_int_eq(w.limited, 0);
	u.set = SC_WALLET_SET_BALANCE;
	u.balance = USD(100);
	OK(sc_org_wallet_update(c, org, &u, &w));
	ck_assert_int_eq(w.limited, 1);
	ck_assert_int_eq(w.balance, USD(100));
	OK(sc_org_wallet_get(c, org, &w));
	ck_assert_int_eq(w.limited, 1);

	ck_assert_int_eq(sc_wallets_get(c, 999999, &w), SC_ENOTFOUND);
	ck_assert_int_eq(sc_org_wallet_get(c, 999999, &w), SC_ENOTFOUND);
	u.set = SC_WALLET_SET_BALANCE;
	u.balance = -1;
	FAILS(sc_wallets_update(c, id, &u, &w), SC_EINVAL, "balance");
}
END_TEST

START_TEST(test_transactions_list)
{
	uint64_t a = new_agent(USD(10)), b = new_agent(USD(10)), t1, t2;
	sc_transaction *list;
	size_t n;

	t1 = allow(a, "search.web", USD(1));
	t2 = allow(a, "search.web", USD(2));
	blocked(a, "search.web", USD(20), "wallet_empty");
	allow(b, "search.web", USD(1));
	report(t1, SC_OUTCOME_SUCCESS, 0, 0);

	OK(sc_transactions_list(c, a, -1, 0, &list, &n));
	ck_assert_uint_eq(n, 3);
	ck_assert_uint_gt(list[0].id, list[1].id); /* newest first */
	ck_assert_int_eq(list[0].status, SC_TXN_BLOCKED);
	ck_assert_str_eq(list[0].block_reason, "wallet_empty");
	ck_assert_int_eq(list[0].has_outcome, 0);
	ck_assert_uint_eq(list[1].id, t2);
	ck_assert_int_eq(list[1].status, SC_TXN_PENDING);
	ck_assert_int_eq(list[1].settled_at, 0);
	ck_assert_uint_eq(list[2].id, t1);
	ck_assert_int_eq(list[2].status, SC_TXN_SETTLED);
	ck_assert_int_eq(list[2].has_outcome, 1);
	ck_assert_int_eq(list[2].outcome, SC_OUTCOME_SUCCESS);
	ck_assert_int_eq(list[2].charged, USD(1));
	ck_assert_int_eq(list[2].estimated_cost, USD(1));
	ck_assert_str_eq(list[2].action, "search.web");
	ck_assert_str_eq(list[2].type, "other");
	ck_assert_str_eq(list[2].risk_level, "low");
	ck_assert_uint_eq(list[2].agent_id, a);
	ck_assert_int_ge(list[2].settled_at, list[2].created_at);
	sc_transactions_free(list);

	OK(sc_transactions_list(c, a, SC_TXN_PENDING, 0, &list, &n));
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(list[0].id, t2);
	sc_transactions_free(list);
	OK(sc_transactions_list(c, 0, -1, 2, &list, &n));
	ck_assert_uint_eq(n, 2);
	ck_assert_uint_eq(list[0].agent_id, b);
	sc_transactions_free(list);
	FAILS(sc_transactions_list(c, 0, -1, 1001, &list, &n), SC_EINVAL, "limit");
	ck_assert_ptr_null(list);
}
END_TEST

START_TEST(test_stats)
{
	static const struct {
		const char *name;
		int64_t value;
	} exact[] = {
		{ "checks", 2 }, { "allowed", 1 }, { "blocked", 1 }, { "holds_open", 1 }, { "agents", 1 },
	};
	uint64_t id = new_agent(USD(10));
	int64_t v;

	allow(id, "x", USD(1));
	blocked(id, "x", USD(100), "wallet_empty");
	for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++) {
		OK(sc_stat(c, exact[i].name, &v));
		ck_assert_msg(v == exact[i].value, "%s = %lld, expected %lld", exact[i].name,
		              (long long)v, (long long)exact[i].value);
	}
	OK(sc_stat(c, "connections_open", &v));
	ck_assert_int_ge(v, 1);
	OK(sc_stat(c, "capacity_holds", &v));
	ck_assert_int_gt(v, 0);
	ck_assert_int_eq(sc_stat(c, "no_such_counter", &v), SC_ENOTFOUND);
}
END_TEST

START_TEST(test_argument_errors)
{
	uint64_t id = new_agent(USD(10));
	sc_check_req req = { .agent_id = id, .action = "x", .estimated_cost = -1 };
	sc_settlement s;
	sc_decision dec;
	sc_agent a;
	sc_org o;
	char key[SC_KEY_MAX + 2];
	uint64_t txn;

	FAILS(sc_check(c, &req, &dec), SC_EINVAL, "estimated_cost");
	req.estimated_cost = 1;
	req.type = "bogus";
	FAILS(sc_check(c, &req, &dec), SC_EINVAL, "type");
	req.type = NULL;
	req.action = "";
	FAILS(sc_check(c, &req, &dec), SC_EINVAL, "action");
	req.action = "has space";
	FAILS(sc_check(c, &req, &dec), SC_EINVAL, "action");
	req.action = "x";
	memset(key, 'k', sizeof(key) - 1);
	key[sizeof(key) - 1] = '\0';
	req.idempotency_key = key;
	FAILS(sc_check(c, &req, &dec), SC_EINVAL, "idempotency_key");
	FAILS(sc_orgs_create(c, "", &o), SC_EINVAL, "name");
	FAILS(sc_agents_create(c, "org-1", "x", (enum sc_priority)7, NULL, NULL, 0, &a), SC_EINVAL,
	      "priority");
	ck_assert_int_eq(sc_report(c, 999999, SC_OUTCOME_SUCCESS, 0, 0, &s), SC_ENOTFOUND);

	txn = allow(id, "x", USD(1));
	FAILS(sc_report(c, txn, SC_OUTCOME_PARTIAL, 0, 0, &s), SC_EINVAL, "actual_cost");
	FAILS(sc_report(c, txn, SC_OUTCOME_SUCCESS, 1, -5, &s), SC_EINVAL, "actual_cost");
	/* A caller that needs only the return code passes no result structure. */
	ck_assert_int_eq(sc_report(c, txn, SC_OUTCOME_SUCCESS, 0, 0, NULL), 0);
	/* The connection survives argument errors. */
	ck_assert_int_eq(wallet(id).balance, USD(9));
}
END_TEST

START_TEST(test_daemon_gone)
{
	uint64_t id = new_agent(USD(10));
	sc_wallet w;
	int rc;

	ck_assert_int_eq(test_daemon_stop(&d), 0);
	rc = sc_wallets_get(c, id, &w);
	ck_assert_msg(rc == SC_ECLOSED || (rc < 0 && rc > -200), "got %s", sc_err_name(rc));
	ck_assert_str_ne(sc_last_error(c), "");
	ck_assert_int_eq(sc_wallets_get(c, id, &w), SC_ECLOSED);
	sc_close(c);
	c = NULL;
}
END_TEST

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

static int has_warning(const sc_decision *dec, const char *w)
{
	unsigned i;

	for (i = 0; i < dec->n_warnings; i++)
		if (strcmp(dec->warnings[i], w) == 0)
			return 1;
	return 0;
}

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

/* ----- transfers and adjustments ----- */

static sc_wallet_ref of_agent(uint64_t id)
{
	return (sc_wallet_ref){ .agent_id = id };
}

static sc_wallet_ref of_org(uint64_t id)
{
	return (sc_wallet_ref){ .org_id = id };
}

static sc_wallet org_wallet(uint64_t org)
{
	sc_wallet w;

	OK(sc_org_wallet_get(c, org, &w));
	return w;
}

/* Every transaction of the kept history (at most 1000), newest first; *n of them. */
static sc_transaction *all_transactions(size_t *n)
{
	sc_transaction *list;
	sc_txn_filter f;

	sc_txn_filter_init(&f);
	f.limit = 1000;
	OK(sc_transactions_query(c, &f, &list, n));
	return list;
}

/* What one side of a transfer, or an adjustment, must have recorded. */
struct wallet_txn {
	uint64_t id, agent_id, org_id; /* agent_id 0: the org's wallet */
	const char *type;
	sc_micros charged, balance_after;
	const char *reason;
};

static void assert_wallet_txn(const struct wallet_txn *want)
{
	sc_transaction *list;
	size_t n, i;

	list = all_transactions(&n);
	for (i = 0; i < n && list[i].id != want->id; i++)
		;
	ck_assert_msg(i < n, "transaction %" PRIu64 " not listed", want->id);
	ck_assert_uint_eq(list[i].agent_id, want->agent_id);
	ck_assert_uint_eq(list[i].org_id, want->org_id);
	ck_assert_str_eq(list[i].type, want->type);
	ck_assert_int_eq(list[i].status, SC_TXN_SETTLED);
	ck_assert_int_eq(list[i].charged, want->charged);
	ck_assert_int_eq(list[i].balance_after, want->balance_after);
	ck_assert_str_eq(list[i].reason, want->reason);
	ck_assert_uint_eq(list[i].rule_id, 0);
	ck_assert_str_eq(list[i].block_reason, "");
	ck_assert_int_ge(list[i].settled_at, list[i].created_at);
	sc_transactions_free(list);
}

/* Two agents of one org; the debit and the credit say what moved and what was left. */
START_TEST(test_transfer_between_agents)
{
	uint64_t org = new_org("team"), a, b, ids[2];
	sc_wallet from, to, w;

	a = new_agent_in("team", "a", SC_PRIORITY_NORMAL, USD(10), 0, 0, NULL, 0);
	b = new_agent_in("team", "b", SC_PRIORITY_NORMAL, USD(5), 0, 0, NULL, 0);
	OK(sc_wallets_transfer(c, of_agent(a), of_agent(b), CENTS(250), "rebalance", &from, &to,
	                       ids));
	ck_assert_int_eq(from.balance, CENTS(750));
	ck_assert_int_eq(from.available, CENTS(750));
	ck_assert_int_eq(to.balance, CENTS(750));
	ck_assert_int_eq(to.limited, 1);
	w = wallet(a);
	ck_assert_int_eq(memcmp(&w, &from, sizeof(w)), 0);
	w = wallet(b);
	ck_assert_int_eq(memcmp(&w, &to, sizeof(w)), 0);
	ck_assert_uint_gt(ids[0], 0);
	ck_assert_uint_ne(ids[0], ids[1]);
	assert_wallet_txn(&(struct wallet_txn){ ids[0], a, org, "transfer", CENTS(250), CENTS(750),
	                                        "rebalance" });
	assert_wallet_txn(&(struct wallet_txn){ ids[1], b, org, "transfer", -CENTS(250),
	                                        CENTS(750), "rebalance" });
	ck_assert_str_eq(test_transaction(c, a, ids[0]).type, "transfer");
	ck_assert_str_eq(test_transaction(c, b, ids[1]).reason, "rebalance");

	/* Every out parameter may be NULL; the money still moves. */
	OK(sc_wallets_transfer(c, of_agent(b), of_agent(a), USD(1), "back", NULL, NULL, NULL));
	ck_assert_int_eq(wallet(a).balance, CENTS(850));
	ck_assert_int_eq(wallet(b).balance, CENTS(650));
	/* The whole of the available funds may move. */
	OK(sc_wallets_transfer(c, of_agent(b), of_agent(a), CENTS(650), "all", &from, &to, NULL));
	ck_assert_int_eq(from.balance, 0);
	ck_assert_int_eq(to.balance, USD(15));
}
END_TEST

/* Indexes into the wallet refs of test_transfer_refused. */
enum { R_A, R_B, R_OTHER_ORG, R_ORG, R_BOTH, R_NONE, R_UNKNOWN };

static const struct {
	int from, to;
	sc_micros amount;
	const char *reason;
	int code;
	const char *word; /* in the message */
} refused_transfers[] = {
	/* a holds $8 of its $10: $2 is available, a cent more is not */
	{ R_A, R_B, CENTS(201), "r", SC_EINVAL, "available" },
	{ R_A, R_B, USD(10), "r", SC_EINVAL, "available" },
	{ R_ORG, R_B, 1, "r", SC_EINVAL, "available" }, /* an unfunded org wallet */
	{ R_A, R_OTHER_ORG, 1, "r", SC_EINVAL, "org" },
	{ R_OTHER_ORG, R_ORG, 1, "r", SC_EINVAL, "org" },
	{ R_A, R_A, 1, "r", SC_EINVAL, "same" },
	{ R_A, R_B, 0, "r", SC_EINVAL, "amount" },
	{ R_A, R_B, -1, "r", SC_EINVAL, "amount" },
	{ R_A, R_B, 1, "", SC_EINVAL, "reason" },
	{ R_A, R_B, 1, NULL, SC_EINVAL, "reason" },
	{ R_BOTH, R_B, 1, "r", SC_EINVAL, "from" },
	{ R_NONE, R_B, 1, "r", SC_EINVAL, "from" },
	{ R_A, R_NONE, 1, "r", SC_EINVAL, "to" },
	{ R_UNKNOWN, R_B, 1, "r", SC_ENOTFOUND, "from_agent_id" },
	{ R_A, R_UNKNOWN, 1, "r", SC_ENOTFOUND, "to_agent_id" },
};

/* Each refused transfer changes nothing: no wallet, no transaction. */
START_TEST(test_transfer_refused)
{
	uint64_t org = new_org("team"), a, b, x, ids[2] = { 0, 0 };
	sc_wallet before[4], after[4], from, to;
	sc_wallet_ref refs[7];
	sc_transaction *list;
	size_t n_before, n, i, k;

	a = new_agent_in("team", "a", SC_PRIORITY_NORMAL, USD(10), 0, 0, NULL, 0);
	b = new_agent_in("team", "b", SC_PRIORITY_NORMAL, USD(5), 0, 0, NULL, 0);
	new_org("other");
	x = new_agent_in("other", "x", SC_PRIORITY_NORMAL, USD(5), 0, 0, NULL, 0);
	allow(a, "x", USD(8));
	refs[R_A] = of_agent(a);
	refs[R_B] = of_agent(b);
	refs[R_OTHER_ORG] = of_agent(x);
	refs[R_ORG] = of_org(org);
	refs[R_BOTH] = (sc_wallet_ref){ .agent_id = a, .org_id = org };
	refs[R_NONE] = (sc_wallet_ref){ 0 };
	refs[R_UNKNOWN] = of_agent(999999);

	before[0] = wallet(a);
	before[1] = wallet(b);
	before[2] = wallet(x);
	before[3] = org_wallet(org);
	sc_transactions_free(all_transactions(&n_before));
	for (i = 0; i < COUNT(refused_transfers); i++) {
		FAILS(sc_wallets_transfer(c, refs[refused_transfers[i].from],
		                          refs[refused_transfers[i].to], refused_transfers[i].amount,
		                          refused_transfers[i].reason, &from, &to, ids),
		      refused_transfers[i].code, refused_transfers[i].word);
		ck_assert_uint_eq(ids[0], 0);
	}
	after[0] = wallet(a);
	after[1] = wallet(b);
	after[2] = wallet(x);
	after[3] = org_wallet(org);
	for (k = 0; k < COUNT(before); k++)
		ck_assert_msg(memcmp(&before[k], &after[k], sizeof(sc_wallet)) == 0,
		              "wallet %zu changed by a refused transfer", k);
	ck_assert_int_eq(after[3].limited, 0);
	list = all_transactions(&n);
	ck_assert_uint_eq(n, n_before);
	sc_transactions_free(list);

	/* Exactly the available funds do move, leaving the hold covered. */
	OK(sc_wallets_transfer(c, refs[R_A], refs[R_B], USD(2), "r", &from, &to, ids));
	ck_assert_int_eq(from.balance, USD(8));
	ck_assert_int_eq(from.held, USD(8));
	ck_assert_int_eq(from.available, 0);
	ck_assert_int_eq(to.balance, USD(7));
}
END_TEST

/* Money moved into the org's wallet funds it: it becomes limited and gates the org. */
START_TEST(test_transfer_org_wallet)
{
	uint64_t org = new_org("team"), a, b, txn, ids[2];
	sc_wallet from, to;
	sc_txn_filter f;
	sc_transaction *list;
	size_t n, i, org_txns = 0;

	a = new_agent_in("team", "a", SC_PRIORITY_NORMAL, USD(10), 0, 0, NULL, 0);
	b = new_agent_in("team", "b", SC_PRIORITY_NORMAL, USD(10), 0, 0, NULL, 0);
	ck_assert_int_eq(org_wallet(org).limited, 0);
	OK(sc_wallets_transfer(c, of_agent(a), of_org(org), USD(4), "fund the org", &from, &to,
	                       ids));
	ck_assert_int_eq(from.balance, USD(6));
	ck_assert_int_eq(to.balance, USD(4));
	ck_assert_int_eq(to.limited, 1);
	ck_assert_int_eq(org_wallet(org).limited, 1);
	assert_wallet_txn(&(struct wallet_txn){ ids[0], a, org, "transfer", USD(4), USD(6),
	                                        "fund the org" });
	assert_wallet_txn(&(struct wallet_txn){ ids[1], 0, org, "transfer", -USD(4), USD(4),
	                                        "fund the org" });

	/* The org wallet now gates b, whose own wallet holds $10. */
	blocked(b, "x", USD(4) + 1, "org_empty");
	txn = allow(b, "x", USD(4));
	/* Held money is not available to move out of the org wallet either. */
	FAILS(sc_wallets_transfer(c, of_org(org), of_agent(a), 1, "r", NULL, NULL, NULL),
	      SC_EINVAL, "available");
	report(txn, SC_OUTCOME_SUCCESS, 1, USD(1));
	OK(sc_wallets_transfer(c, of_org(org), of_agent(a), USD(3), "return", &from, &to, ids));
	ck_assert_int_eq(from.balance, 0);
	ck_assert_int_eq(from.limited, 1);
	ck_assert_int_eq(to.balance, USD(9));
	assert_wallet_txn(&(struct wallet_txn){ ids[0], 0, org, "transfer", USD(3), 0, "return" });
	assert_wallet_txn(&(struct wallet_txn){ ids[1], a, org, "transfer", -USD(3), USD(9),
	                                        "return" });

	/* The org's listing has its own wallet's transactions, without an agent. */
	sc_txn_filter_init(&f);
	f.org_id = org;
	OK(sc_transactions_query(c, &f, &list, &n));
	for (i = 0; i < n; i++)
		org_txns += list[i].agent_id == 0;
	ck_assert_uint_eq(org_txns, 2);
	sc_transactions_free(list);
}
END_TEST

/* Adjustments of one agent and of its org, in order; `code` 0 is accepted. */
static const struct {
	int org; /* 1: the org's wallet */
	sc_micros amount;
	const char *reason;
	int code;
	sc_micros balance; /* after the step */
} adjust_steps[] = {
	{ 0, USD(5), "bonus", 0, USD(15) },
	{ 0, -CENTS(250), "refund", 0, CENTS(1250) },
	{ 0, -(CENTS(1250) + 1), "too much", SC_EINVAL, CENTS(1250) },
	{ 0, 0, "nothing", SC_EINVAL, CENTS(1250) },
	{ 0, -CENTS(1250), "write off", 0, 0 }, /* down to exactly 0 */
	{ 0, -1, "below zero", SC_EINVAL, 0 },
	{ 1, USD(20), "grant", 0, USD(20) },
	{ 1, -USD(21), "too much", SC_EINVAL, USD(20) },
	{ 1, -USD(20), "reclaim", 0, 0 },
};

/* Time zones, spend per period and budget periods through the protocol. */
START_TEST(test_timezone_spend_and_period)
{
	sc_wallet_update daily = { .set = SC_WALLET_SET_PERIOD | SC_WALLET_SET_BUDGET,
		                   .budget = USD(10), .period = SC_PERIOD_DAILY };
	int64_t day = INT64_C(86400000000), ist = INT64_C(19800000000); /* UTC+5:30 */
	uint64_t a, org;
	sc_spend s;
	sc_wallet w;
	sc_org o;

	OK(sc_orgs_create_tz(c, "mumbai", "Asia/Kolkata", &o));
	ck_assert_str_eq(o.timezone, "Asia/Kolkata");
	ck_assert_str_eq(o.timezone_rule, "IST-5:30");
	org = o.id;
	FAILS(sc_orgs_create_tz(c, "mars", "Mars/Olympus_Mons", &o), SC_ENOTFOUND, "timezone");
	FAILS(sc_orgs_create_tz(c, "up", "../../etc/passwd", &o), SC_EINVAL, "timezone");
	a = new_agent_in("mumbai", "bot", SC_PRIORITY_NORMAL, USD(10), 0, 0, NULL, 0);
	OK(sc_wallets_update(c, a, &daily, &w));
	ck_assert_int_eq(w.period, SC_PERIOD_DAILY);
	report(allow(a, "tool.run", USD(3)), SC_OUTCOME_SUCCESS, 1, USD(2));
	allow(a, "tool.run", USD(1));

	OK(sc_spend_get(c, (sc_wallet_ref){ .agent_id = a }, &s));
	ck_assert_int_eq(s.total, USD(2));
	ck_assert_int_eq(s.daily, USD(2));
	ck_assert_int_eq(s.weekly, USD(2));
	ck_assert_int_eq(s.monthly, USD(2));
	ck_assert_int_eq(s.held, USD(1));
	ck_assert_int_eq(s.budget, USD(10));
	ck_assert_int_eq(s.period, SC_PERIOD_DAILY);
	ck_assert_str_eq(s.timezone, "Asia/Kolkata");
	/* the local day ends at 18:30 UTC */
	ck_assert_int_eq((s.daily_reset_at + ist) % day, 0);
	ck_assert_int_eq(s.period_reset_at, s.daily_reset_at);
	ck_assert_int_ge(s.weekly_reset_at, s.daily_reset_at);
	ck_assert_int_ge(s.monthly_reset_at, s.daily_reset_at);

	/* the org's own wallet has no period; back to UTC */
	OK(sc_spend_get(c, of_org(org), &s));
	ck_assert_int_eq(s.period_reset_at, 0);
	OK(sc_orgs_set_timezone(c, org, "UTC", &o));
	ck_assert_str_eq(o.timezone_rule, "UTC0");
	OK(sc_spend_get(c, (sc_wallet_ref){ .agent_id = a }, &s));
	ck_assert_int_eq(s.daily_reset_at % day, 0);
	FAILS(sc_spend_get(c, (sc_wallet_ref){ .agent_id = a, .org_id = org }, &s), SC_EINVAL,
	      "exactly one");
}
END_TEST

/* A sub-budget through the protocol: reserved for its agent, released on request. */
START_TEST(test_carve_and_release)
{
	sc_wallet_update funds = { .set = SC_WALLET_SET_BALANCE, .balance = USD(10) };
	uint64_t org = new_org("pool"), carved, shared, id;
	sc_wallet agent, ow;

	carved = new_agent_in("pool", "carved", SC_PRIORITY_NORMAL, 0, 0, 0, NULL, 0);
	shared = new_agent_in("pool", "shared", SC_PRIORITY_NORMAL, USD(100), 0, 0, NULL, 0);
	FAILS(sc_wallets_carve(c, carved, USD(6), "q4", NULL, NULL, NULL), SC_EINVAL, "unlimited");
	OK(sc_org_wallet_update(c, org, &funds, &ow));
	OK(sc_wallets_carve(c, carved, USD(6), "q4", &agent, &ow, &id));
	ck_assert_int_eq(agent.balance, USD(6));
	ck_assert_int_eq(agent.reserved, USD(6));
	ck_assert_int_eq(agent.sub_budget, 1);
	ck_assert_int_eq(ow.reserved, USD(6));
	ck_assert_uint_gt(id, 0);
	FAILS(sc_wallets_carve(c, shared, USD(5), "too much", NULL, NULL, NULL), SC_EINVAL,
	      "unreserved");
	blocked(shared, "tool.run", USD(5), "org_empty");
	allow(carved, "tool.run", USD(6));
	OK(sc_wallets_release(c, carved, &agent, &ow));
	ck_assert_int_eq(agent.sub_budget, 0);
	ck_assert_int_eq(ow.reserved, 0);
	FAILS(sc_wallets_release(c, carved, NULL, NULL), SC_EINVAL, "no sub-budget");
}
END_TEST

START_TEST(test_adjust)
{
	uint64_t org = new_org("team"), a, txn;
	sc_wallet after, w;
	size_t i;

	a = new_agent_in("team", "a", SC_PRIORITY_NORMAL, USD(10), 0, 0, NULL, 0);
	for (i = 0; i < COUNT(adjust_steps); i++) {
		sc_wallet_ref ref = adjust_steps[i].org ? of_org(org) : of_agent(a);

		txn = 0;
		if (adjust_steps[i].code != 0) {
			FAILS(sc_wallets_adjust(c, ref, adjust_steps[i].amount, adjust_steps[i].reason,
			                        &after, &txn),
			      adjust_steps[i].code, "amount");
			ck_assert_uint_eq(txn, 0);
		} else {
			OK(sc_wallets_adjust(c, ref, adjust_steps[i].amount, adjust_steps[i].reason,
			                     &after, &txn));
			ck_assert_int_eq(after.limited, 1);
			assert_wallet_txn(&(struct wallet_txn){ txn, adjust_steps[i].org ? 0 : a, org,
			                                        "adjustment", -adjust_steps[i].amount,
			                                        adjust_steps[i].balance,
			                                        adjust_steps[i].reason });
		}
		w = adjust_steps[i].org ? org_wallet(org) : wallet(a);
		ck_assert_msg(w.balance == adjust_steps[i].balance,
		              "step %zu: balance %lld, expected %lld", i, (long long)w.balance,
		              (long long)adjust_steps[i].balance);
		if (adjust_steps[i].code == 0)
			ck_assert_int_eq(memcmp(&w, &after, sizeof(w)), 0);
	}
	FAILS(sc_wallets_adjust(c, of_agent(a), USD(1), NULL, NULL, NULL), SC_EINVAL, "reason");
	FAILS(sc_wallets_adjust(c, (sc_wallet_ref){ .agent_id = a, .org_id = org }, USD(1), "r",
	                        NULL, NULL),
	      SC_EINVAL, "wallet");
	ck_assert_int_eq(sc_wallets_adjust(c, of_agent(999999), USD(1), "r", NULL, NULL),
	                 SC_ENOTFOUND);
	OK(sc_wallets_adjust(c, of_agent(a), USD(1), "r", NULL, NULL));
	ck_assert_int_eq(wallet(a).balance, USD(1));
}
END_TEST

/* A check's transaction carries the balance when it was decided, then once settled. */
START_TEST(test_balance_after_check)
{
	uint64_t id = new_agent(USD(10)), pending, settled;
	sc_transaction *list;
	size_t n;

	settled = allow(id, "x", USD(2));
	ck_assert_int_eq(test_transaction(c, id, settled).balance_after, USD(10));
	report(settled, SC_OUTCOME_SUCCESS, 1, CENTS(150));
	ck_assert_int_eq(test_transaction(c, id, settled).balance_after, CENTS(850));
	ck_assert_str_eq(test_transaction(c, id, settled).reason, "");
	pending = allow(id, "x", USD(1));
	ck_assert_int_eq(test_transaction(c, id, pending).balance_after, CENTS(850));
	blocked(id, "x", USD(20), "wallet_empty");
	OK(sc_transactions_list(c, id, SC_TXN_BLOCKED, 0, &list, &n));
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(list[0].balance_after, CENTS(850));
	sc_transactions_free(list);
	report(pending, SC_OUTCOME_FAILURE, 0, 0);
	ck_assert_int_eq(test_transaction(c, id, pending).balance_after, CENTS(850));
}
END_TEST

/* Transfers and adjustments are in the ledger: a restart (SIGTERM, start) keeps them all. */
START_TEST(test_transfers_survive_restart)
{
	uint64_t org = new_org("team"), a, b, ids[2];
	sc_transaction *before, *after;
	sc_wallet w_before[3], w_after[3];
	size_t n_before, n_after, i;

	a = new_agent_in("team", "a", SC_PRIORITY_NORMAL, USD(10), 0, 0, NULL, 0);
	b = new_agent_in("team", "b", SC_PRIORITY_NORMAL, USD(5), 0, 0, NULL, 0);
	OK(sc_wallets_transfer(c, of_agent(a), of_agent(b), CENTS(250), "rebalance", NULL, NULL,
	                       NULL));
	OK(sc_wallets_transfer(c, of_agent(b), of_org(org), USD(3), "fund", NULL, NULL, NULL));
	OK(sc_wallets_adjust(c, of_agent(a), -USD(1), "refund", NULL, NULL));
	OK(sc_wallets_adjust(c, of_org(org), USD(2), "grant", NULL, NULL));
	w_before[0] = wallet(a);
	w_before[1] = wallet(b);
	w_before[2] = org_wallet(org);
	before = all_transactions(&n_before);
	ck_assert_uint_eq(n_before, 6);

	sc_close(c);
	c = NULL;
	ck_assert_int_eq(test_daemon_restart(&d), 0);
	OK(sc_connect(d.socket, &c));

	w_after[0] = wallet(a);
	w_after[1] = wallet(b);
	w_after[2] = org_wallet(org);
	ck_assert_int_eq(memcmp(w_after, w_before, sizeof(w_after)), 0);
	ck_assert_int_eq(w_after[0].balance, CENTS(650));
	ck_assert_int_eq(w_after[1].balance, CENTS(450));
	ck_assert_int_eq(w_after[2].balance, USD(5));
	ck_assert_int_eq(w_after[2].limited, 1);
	after = all_transactions(&n_after);
	ck_assert_uint_eq(n_after, n_before);
	for (i = 0; i < n_after; i++)
		ck_assert_msg(memcmp(&after[i], &before[i], sizeof(sc_transaction)) == 0,
		              "transaction %" PRIu64 " differs after the restart", before[i].id);
	ck_assert_uint_eq(after[0].agent_id, 0);
	ck_assert_str_eq(after[0].reason, "grant");
	ck_assert_int_eq(after[0].balance_after, USD(5));

	/* Money still moves after the restart, under new ids. */
	OK(sc_wallets_transfer(c, of_org(org), of_agent(a), USD(5), "back", NULL, NULL, ids));
	ck_assert_uint_gt(ids[0], before[0].id);
	ck_assert_int_eq(org_wallet(org).balance, 0);
	sc_transactions_free(before);
	sc_transactions_free(after);
}
END_TEST

/* ----- expiry (--hold-ttl 1) ----- */

/* Waits up to 5 s for the agent's holds to be gone. */
static sc_wallet wait_no_holds(uint64_t agent)
{
	sc_wallet w;
	int i;

	for (i = 0; i < 100; i++) {
		w = wallet(agent);
		if (w.held == 0)
			break;
		sleep_ms(50);
	}
	return w;
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
	sleep_ms(2500);
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
	sleep_ms(2500);
	w = wait_no_holds(id);
	ck_assert_int_eq(w.held, 0);
	ck_assert_int_eq(w.balance, USD(10));
	ck_assert_int_eq(test_transaction(c, id, txn).status, SC_TXN_EXPIRED);
	ck_assert_int_eq(test_transaction(c, id, txn).charged, 0);
}
END_TEST

/* ----- restart ----- */

START_TEST(test_restart_keeps_state)
{
	sc_rule r = test_rule("OpenAI cap", "openai.*", USD(5), USD(100), 50);
	sc_wallet_update u = { .set = SC_WALLET_SET_BALANCE, .balance = USD(500) };
	sc_org *orgs_before, *orgs_after;
	sc_agent before, after;
	uint64_t org, id, open;
	size_t n_before, n_after, i;
	sc_wallet w;

	org = new_org("keep");
	new_org("also");
	id = new_agent_in("keep", "bot", SC_PRIORITY_HIGH, USD(100), USD(20), USD(50), &r, 1);
	OK(sc_org_wallet_update(c, org, &u, &w));
	report(allow(id, "openai.chat", USD(4)), SC_OUTCOME_SUCCESS, 1, USD(3));
	open = allow(id, "openai.chat", USD(2));
	OK(sc_agents_get(c, id, &before));
	OK(sc_orgs_list(c, &orgs_before, &n_before));

	sc_close(c);
	c = NULL;
	ck_assert_int_eq(test_daemon_restart(&d), 0);
	OK(sc_connect(d.socket, &c));

	OK(sc_orgs_list(c, &orgs_after, &n_after));
	ck_assert_uint_eq(n_after, n_before);
	for (i = 0; i < n_after; i++) {
		ck_assert_uint_eq(orgs_after[i].id, orgs_before[i].id);
		ck_assert_str_eq(orgs_after[i].name, orgs_before[i].name);
		ck_assert_int_eq(memcmp(&orgs_after[i].wallet, &orgs_before[i].wallet,
		                        sizeof(sc_wallet)),
		                 0);
	}
	sc_orgs_free(orgs_before);
	sc_orgs_free(orgs_after);
	OK(sc_agents_get(c, id, &after));
	ck_assert_str_eq(after.name, "bot");
	ck_assert_int_eq(after.priority, SC_PRIORITY_HIGH);
	ck_assert_int_eq(after.wallet.balance, USD(97));
	ck_assert_int_eq(after.wallet.held, USD(2));
	ck_assert_int_eq(memcmp(&after.wallet, &before.wallet, sizeof(sc_wallet)), 0);
	ck_assert_uint_eq(after.n_rules, 1);
	ck_assert_uint_eq(after.rules[0].id, before.rules[0].id);
	ck_assert_str_eq(after.rules[0].name, "OpenAI cap");
	ck_assert_int_eq(after.rules[0].daily_spent, before.rules[0].daily_spent);

	/* The hold opened before the restart settles after it; new ids do not collide. */
	ck_assert_int_eq(report(open, SC_OUTCOME_SUCCESS, 0, 0).balance, USD(95));
	ck_assert_uint_gt(new_org("new"), org);
}
END_TEST

/* ----- concurrency ----- */

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
		sleep_ms(50);
	ck_assert_int_eq(final.held, 0);
	ck_assert_msg(final.balance == CONC_BALANCE - charged - expired,
	              "balance %lld, expected %lld - %lld charged - %lld expired (%d reported, "
	              "%d expired)",
	              (long long)final.balance, (long long)CONC_BALANCE, (long long)charged,
	              (long long)expired, reported, left);
	ck_assert_int_eq(final.debt, 0);
}
END_TEST

/* ----- kredit score and events ----- */

static sc_score score_of(uint64_t agent)
{
	sc_score sc;

	OK(sc_score_get(c, agent, &sc));
	ck_assert_uint_eq(sc.agent_id, agent);
	return sc;
}

/* The agent's events, newest first; free with sc_events_free. */
static sc_event *events_of(uint64_t agent, size_t *n)
{
	sc_event *list;

	OK(sc_agents_events(c, agent, 0, &list, n));
	return list;
}

/* Asserts the counters of sc with a table: each factor is named in the message. */
#define FACTOR(member, value) { #member, offsetof(sc_score, member), (value) }

struct factor {
	const char *name;
	size_t off;
	uint64_t value;
};

static void assert_factors(const sc_score *sc, const struct factor *f, size_t n)
{
	uint64_t v;
	size_t i;

	for (i = 0; i < n; i++) {
		memcpy(&v, (const char *)sc + f[i].off, sizeof(v));
		ck_assert_msg(v == f[i].value, "%s = %" PRIu64 ", expected %" PRIu64, f[i].name, v,
		              f[i].value);
	}
}

START_TEST(test_score_new_agent)
{
	static const struct factor zero[] = {
		FACTOR(checks, 0),   FACTOR(blocked, 0), FACTOR(settled, 0),   FACTOR(failures, 0),
		FACTOR(overruns, 0), FACTOR(expired, 0), FACTOR(anomalies, 0),
	};
	uint64_t id = new_agent(USD(10));
	sc_event *list;
	sc_score sc = score_of(id);
	size_t n;

	ck_assert_int_eq(sc.score, 650);
	ck_assert_int_eq(sc.status, SC_STATUS_ACTIVE);
	assert_factors(&sc, zero, COUNT(zero));
	ck_assert_int_eq(sc.average_cost, 0);
	ck_assert_int_ge(sc.age_s, 0);
	list = events_of(id, &n);
	ck_assert_uint_eq(n, 0);
	sc_events_free(list);
	ck_assert_int_eq(sc_score_get(c, 999999, &sc), SC_ENOTFOUND);
	ck_assert_int_eq(sc_agents_events(c, 999999, 0, &list, &n), SC_ENOTFOUND);
	ck_assert_ptr_null(list);
	FAILS(sc_agents_events(c, id, 1001, &list, &n), SC_EINVAL, "limit");
}
END_TEST

/*
 * 20 failed reports whose actual cost exceeds the estimate: failure and
 * overrun rates of 100%, so raw = 850 - 250 - 150 = 450, at full weight
 * after 20 outcomes. After k outcomes the score is 650 - 10k: it falls
 * below 500 (throttle) at the 16th, at 490, and never below 350 (freeze).
 */
START_TEST(test_score_throttles_on_failures)
{
	static const struct factor after[] = {
		FACTOR(checks, 20),   FACTOR(blocked, 0), FACTOR(settled, 20),  FACTOR(failures, 20),
		FACTOR(overruns, 20), FACTOR(expired, 0), FACTOR(anomalies, 0),
	};
	uint64_t id = new_agent(USD(1000));
	sc_event *list;
	sc_score sc;
	sc_agent a;
	size_t n;
	int i;

	for (i = 1; i <= 20; i++) {
		report(allow(id, "tool.run", USD(1)), SC_OUTCOME_FAILURE, 1, USD(2));
		sc = score_of(id);
		ck_assert_int_eq(sc.score, 650 - 10 * i);
		ck_assert_int_eq(sc.status, i < 16 ? SC_STATUS_ACTIVE : SC_STATUS_THROTTLED);
	}
	ck_assert_int_eq(sc.score, 450);
	assert_factors(&sc, after, COUNT(after));
	ck_assert_int_eq(sc.average_cost, USD(2));
	OK(sc_agents_get(c, id, &a));
	ck_assert_int_eq(a.status, SC_STATUS_THROTTLED);

	list = events_of(id, &n);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(list[0].type, SC_EVENT_STATUS_CHANGE);
	ck_assert_uint_eq(list[0].agent_id, id);
	ck_assert_uint_gt(list[0].id, 0);
	ck_assert_int_gt(list[0].time, 0);
	ck_assert_int_eq(list[0].has_status, 1);
	ck_assert_int_eq(list[0].from, SC_STATUS_ACTIVE);
	ck_assert_int_eq(list[0].to, SC_STATUS_THROTTLED);
	ck_assert_int_eq(list[0].score, 490);
	ck_assert_str_eq(list[0].reason, "score");
	sc_events_free(list);
}
END_TEST

/*
 * Step 9 of the gate, both sides of each boundary: no anomaly before 5
 * settled transactions, then 10x the average is medium and 100x high. The
 * holds stay open, so the average stays $1.
 */
START_TEST(test_anomaly_risk_and_event)
{
	static const struct {
		sc_micros estimate;
		const char *risk_level;
	} checks[] = {
		{ USD(10) - 1, "low" },   { USD(10), "medium" }, { USD(100) - 1, "medium" },
		{ USD(100), "high" },
	};
	uint64_t id = new_agent(USD(1000)), txn[COUNT(checks)];
	sc_decision dec;
	sc_event *list;
	sc_score sc;
	int64_t anomalies;
	size_t i, n;
	char reason[64];

	for (i = 0; i < 4; i++)
		report(allow(id, "tool.run", USD(1)), SC_OUTCOME_SUCCESS, 0, 0);
	dec = check_as(id, "tool.run", USD(10), NULL);
	ck_assert_int_eq(dec.allowed, 1);
	ck_assert_str_eq(dec.risk_level, "low"); /* 4 settled: no baseline yet */
	report(dec.transaction_id, SC_OUTCOME_SUCCESS, 1, USD(1));
	for (i = 0; i < COUNT(checks); i++) {
		dec = check_as(id, "tool.run", checks[i].estimate, NULL);
		ck_assert_msg(dec.allowed, "%zu: blocked: %s", i, dec.block_reason);
		ck_assert_msg(strcmp(dec.risk_level, checks[i].risk_level) == 0,
		              "estimate %lld: risk %s, expected %s", (long long)checks[i].estimate,
		              dec.risk_level, checks[i].risk_level);
		ck_assert_str_eq(test_transaction(c, id, dec.transaction_id).risk_level,
		                 checks[i].risk_level);
		txn[i] = dec.transaction_id;
	}

	sc = score_of(id);
	ck_assert_uint_eq(sc.anomalies, 3);
	ck_assert_int_eq(sc.average_cost, USD(1));
	OK(sc_stat(c, "anomalies", &anomalies));
	ck_assert_int_eq(anomalies, 3);
	list = events_of(id, &n);
	ck_assert_uint_eq(n, 3);
	for (i = 0; i < n; i++) {
		/* Newest first: the anomalies of checks 3, 2 and 1. */
		snprintf(reason, sizeof(reason), "transaction %" PRIu64 ": ", txn[3 - i]);
		ck_assert_int_eq(list[i].type, SC_EVENT_ANOMALY);
		ck_assert_int_eq(list[i].has_status, 0);
		ck_assert_msg(strncmp(list[i].reason, reason, strlen(reason)) == 0,
		              "reason '%s' does not start with '%s'", list[i].reason, reason);
		ck_assert_msg(strstr(list[i].reason, "x the average cost") != NULL, "reason '%s'",
		              list[i].reason);
	}
	ck_assert_uint_gt(list[0].id, list[1].id);
	ck_assert_ptr_nonnull(strstr(list[0].reason, ": 100x"));
	ck_assert_ptr_nonnull(strstr(list[2].reason, ": 10x"));
	sc_events_free(list);
}
END_TEST

START_TEST(test_operator_status_events)
{
	static const struct {
		enum sc_status from, to;
	} changes[] = {
		{ SC_STATUS_ACTIVE, SC_STATUS_FROZEN },
		{ SC_STATUS_FROZEN, SC_STATUS_ACTIVE },
	};
	uint64_t id = new_agent(USD(10));
	sc_event *list;
	sc_agent a;
	size_t i, n;

	for (i = 0; i < COUNT(changes); i++)
		OK(sc_agents_update(c, id, NULL, -1, (int)changes[i].to, &a));
	list = events_of(id, &n);
	ck_assert_uint_eq(n, COUNT(changes));
	for (i = 0; i < n; i++) {
		const sc_event *e = &list[n - 1 - i]; /* newest first */

		ck_assert_int_eq(e->type, SC_EVENT_STATUS_CHANGE);
		ck_assert_int_eq(e->has_status, 1);
		ck_assert_int_eq(e->from, changes[i].from);
		ck_assert_int_eq(e->to, changes[i].to);
		ck_assert_int_eq(e->score, 650);
		ck_assert_str_eq(e->reason, "operator");
	}
	sc_events_free(list);
	OK(sc_agents_events(c, id, 1, &list, &n));
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(list[0].to, SC_STATUS_ACTIVE);
	sc_events_free(list);
}
END_TEST

/* ----- visibility: transaction filters and paging, summary, top agents, fleet ----- */

/*
 * The fleet every visibility test starts from: orgs alpha and beta of two
 * agents each, driven by vis_steps into transactions of every status but
 * expired and of every risk level. The test keeps its own record of each
 * transaction (struct vis_txn) and checks the daemon's answers against
 * that tally, never against another answer of the daemon.
 */
enum { A1, A2, B1, B2, N_VIS_AGENTS };

static const struct {
	const char *org, *name;
	enum sc_priority priority;
	sc_micros max_per_txn;
} vis_agents[N_VIS_AGENTS] = {
	[A1] = { "alpha", "a1", SC_PRIORITY_NORMAL, 0 },
	[A2] = { "alpha", "a2", SC_PRIORITY_NORMAL, 0 },
	[B1] = { "beta", "b1", SC_PRIORITY_NORMAL, 0 },
	[B2] = { "beta", "b2", SC_PRIORITY_CRITICAL, USD(1) },
};

/* One check: allowed unless block_reason is set; then settled if `settle`, else left pending. */
struct vis_step {
	int agent;
	sc_micros estimate;
	const char *block_reason;
	enum sc_risk risk;
	int settle;
	enum sc_outcome outcome;
	sc_micros actual;
	int freeze_first; /* the operator freezes the agent before this check */
};

#define SETTLED(a, cost, risk_, outcome_, actual_)                                          \
	{ .agent = (a), .estimate = (cost), .risk = (risk_), .settle = 1, .outcome = (outcome_), \
	  .actual = (actual_) }
#define PENDING(a, cost, risk_) { .agent = (a), .estimate = (cost), .risk = (risk_) }
#define BLOCKED(a, cost, reason, freeze)                                                    \
	{ .agent = (a), .estimate = (cost), .block_reason = (reason), .risk = SC_RISK_LOW,      \
	  .freeze_first = (freeze) }

static const struct vis_step vis_steps[] = {
	SETTLED(A1, USD(2), SC_RISK_LOW, SC_OUTCOME_SUCCESS, USD(2)),
	SETTLED(A2, USD(3), SC_RISK_LOW, SC_OUTCOME_SUCCESS, USD(3)),
	/* five settled dollars give b1 the average cost that step 9 of the gate needs */
	SETTLED(B1, USD(1), SC_RISK_LOW, SC_OUTCOME_SUCCESS, USD(1)),
	SETTLED(B1, USD(1), SC_RISK_LOW, SC_OUTCOME_SUCCESS, USD(1)),
	SETTLED(B1, USD(1), SC_RISK_LOW, SC_OUTCOME_SUCCESS, USD(1)),
	SETTLED(B1, USD(1), SC_RISK_LOW, SC_OUTCOME_SUCCESS, USD(1)),
	SETTLED(B1, USD(1), SC_RISK_LOW, SC_OUTCOME_SUCCESS, USD(1)),
	PENDING(B1, USD(10), SC_RISK_MEDIUM), /* 10x the average cost: an anomaly */
	SETTLED(B2, USD(5), SC_RISK_HIGH, SC_OUTCOME_SUCCESS, USD(4)), /* critical, past its max */
	BLOCKED(A1, USD(500), "wallet_empty", 0),
	SETTLED(A1, USD(1), SC_RISK_LOW, SC_OUTCOME_FAILURE, 0), /* settled, charged nothing */
	PENDING(A2, USD(1), SC_RISK_LOW),
	BLOCKED(A2, USD(1), "agent_frozen", 1),
};

#undef SETTLED
#undef PENDING
#undef BLOCKED

#define VIS_N COUNT(vis_steps)

struct vis_txn {
	uint64_t id;
	int agent;
	enum sc_txn_status status;
	enum sc_risk risk;
	sc_micros estimate, charged;
	int64_t created_at;
};

struct vis {
	uint64_t agent[N_VIS_AGENTS], org_of[N_VIS_AGENTS];
	struct vis_txn txn[VIS_N]; /* oldest first */
};

static struct vis v;

static void vis_build(void)
{
	sc_transaction *list;
	sc_settlement s;
	sc_decision dec;
	size_t i, n;
	sc_agent a;

	new_org("alpha");
	new_org("beta");
	for (i = 0; i < N_VIS_AGENTS; i++) {
		v.agent[i] = new_agent_in(vis_agents[i].org, vis_agents[i].name,
		                          vis_agents[i].priority, USD(100), vis_agents[i].max_per_txn, 0,
		                          NULL, 0);
		OK(sc_agents_get(c, v.agent[i], &a));
		v.org_of[i] = a.org_id;
	}
	for (i = 0; i < VIS_N; i++) {
		const struct vis_step *st = &vis_steps[i];
		struct vis_txn *t = &v.txn[i];

		if (st->freeze_first)
			OK(sc_agents_update(c, v.agent[st->agent], NULL, -1, SC_STATUS_FROZEN, &a));
		dec = check_as(v.agent[st->agent], "tool.run", st->estimate, NULL);
		ck_assert_msg(dec.allowed == (st->block_reason == NULL), "step %zu: %s", i,
		              dec.block_reason);
		ck_assert_str_eq(dec.block_reason, st->block_reason ? st->block_reason : "");
		ck_assert_str_eq(dec.risk_level, sc_risk_name(st->risk));
		*t = (struct vis_txn){ .id = dec.transaction_id, .agent = st->agent,
			               .status = dec.allowed ? SC_TXN_PENDING : SC_TXN_BLOCKED,
			               .risk = st->risk, .estimate = st->estimate };
		if (st->settle) {
			OK(sc_report(c, t->id, st->outcome, 1, st->actual, &s));
			ck_assert_int_eq(s.charged, st->actual);
			t->status = SC_TXN_SETTLED;
			t->charged = s.charged;
		}
		if (i > 0)
			ck_assert_uint_gt(t->id, v.txn[i - 1].id);
	}
	/* The only thing the tally takes from the daemon: when each transaction was created. */
	OK(sc_transactions_list(c, 0, -1, 1000, &list, &n));
	ck_assert_uint_eq(n, VIS_N);
	for (i = 0; i < n; i++) {
		ck_assert_uint_eq(list[i].id, v.txn[VIS_N - 1 - i].id);
		v.txn[VIS_N - 1 - i].created_at = list[i].created_at;
	}
	sc_transactions_free(list);
}

/* Whether the tally's t passes f (PROTOCOL.md, transactions.list); the limit aside. */
static int vis_keeps(const struct vis_txn *t, const sc_txn_filter *f)
{
	return (f->agent_id == 0 || v.agent[t->agent] == f->agent_id) &&
	       (f->org_id == 0 || v.org_of[t->agent] == f->org_id) &&
	       (f->status < 0 || (int)t->status == f->status) &&
	       (f->risk < 0 || (int)t->risk == f->risk) && t->created_at >= f->since &&
	       (f->until == 0 || t->created_at < f->until) && (f->before == 0 || t->id < f->before);
}

/* The tally's transactions that f keeps, newest first, into ids; returns how many. */
static size_t vis_expect(const sc_txn_filter *f, uint64_t *ids)
{
	size_t i, n = 0;

	for (i = VIS_N; i-- > 0;)
		if (vis_keeps(&v.txn[i], f) && (f->limit == 0 || n < f->limit))
			ids[n++] = v.txn[i].id;
	return n;
}

static const struct vis_txn *vis_txn_by_id(uint64_t id)
{
	size_t i;

	for (i = 0; i < VIS_N && v.txn[i].id != id; i++)
		;
	ck_assert_msg(i < VIS_N, "transaction %" PRIu64 " is not the test's", id);
	return &v.txn[i];
}

/*
 * Queries with f (NULL: no filter) and asserts the answer is the tally's, in
 * order, field by field; returns how many transactions were listed.
 */
static size_t vis_assert_query(const char *what, const sc_txn_filter *f)
{
	uint64_t want[VIS_N];
	sc_transaction *list;
	sc_txn_filter any;
	size_t n_want, n, i;

	sc_txn_filter_init(&any);
	n_want = vis_expect(f ? f : &any, want);
	OK(sc_transactions_query(c, f, &list, &n));
	ck_assert_msg(n == n_want, "%s: %zu transactions, expected %zu", what, n, n_want);
	for (i = 0; i < n; i++) {
		const struct vis_txn *t = vis_txn_by_id(list[i].id);

		ck_assert_msg(list[i].id == want[i], "%s: #%zu is %" PRIu64 ", expected %" PRIu64,
		              what, i, list[i].id, want[i]);
		ck_assert_uint_eq(list[i].agent_id, v.agent[t->agent]);
		ck_assert_uint_eq(list[i].org_id, v.org_of[t->agent]);
		ck_assert_int_eq(list[i].status, t->status);
		ck_assert_int_eq(list[i].risk, t->risk);
		ck_assert_str_eq(list[i].risk_level, sc_risk_name(t->risk));
		ck_assert_int_eq(list[i].estimated_cost, t->estimate);
		ck_assert_int_eq(list[i].charged, t->charged);
	}
	sc_transactions_free(list);
	return n;
}

/* A filter of the tally's terms: an agent and an org by index (-1: any). */
static sc_txn_filter vis_filter(int agent, int org_of_agent, int status, int risk)
{
	sc_txn_filter f;

	sc_txn_filter_init(&f);
	f.agent_id = agent >= 0 ? v.agent[agent] : 0;
	f.org_id = org_of_agent >= 0 ? v.org_of[org_of_agent] : 0;
	f.status = status;
	f.risk = risk;
	return f;
}

START_TEST(test_txn_query_filters)
{
	static const struct {
		const char *what;
		int agent, org_of; /* vis indexes, -1: any */
		int status, risk;
		size_t count;
	} cases[] = {
		{ "everything", -1, -1, -1, -1, VIS_N },
		{ "org alpha", -1, A1, -1, -1, 6 },
		{ "org beta", -1, B1, -1, -1, 7 },
		{ "risk low", -1, -1, -1, SC_RISK_LOW, VIS_N - 2 },
		{ "risk medium", -1, -1, -1, SC_RISK_MEDIUM, 1 },
		{ "risk high", -1, -1, -1, SC_RISK_HIGH, 1 },
		{ "blocked", -1, -1, SC_TXN_BLOCKED, -1, 2 },
		{ "expired", -1, -1, SC_TXN_EXPIRED, -1, 0 },
		{ "pending in alpha", -1, A1, SC_TXN_PENDING, -1, 1 },
		{ "settled low-risk in beta", -1, B1, SC_TXN_SETTLED, SC_RISK_LOW, 5 },
		{ "b1's pending medium", B1, -1, SC_TXN_PENDING, SC_RISK_MEDIUM, 1 },
		{ "b1 in org alpha", B1, A1, -1, -1, 0 },
		{ "high risk in alpha", -1, A1, -1, SC_RISK_HIGH, 0 },
	};
	sc_transaction *list;
	sc_txn_filter f;
	size_t i, n;

	vis_build();
	for (i = 0; i < COUNT(cases); i++) {
		f = vis_filter(cases[i].agent, cases[i].org_of, cases[i].status, cases[i].risk);
		ck_assert_msg(vis_assert_query(cases[i].what, &f) == cases[i].count,
		              "%s: not %zu transactions", cases[i].what, cases[i].count);
	}
	f = vis_filter(-1, -1, -1, -1);
	f.limit = 3;
	ck_assert_uint_eq(vis_assert_query("the newest 3", &f), 3);
	ck_assert_uint_eq(vis_assert_query("no filter", NULL), VIS_N);

	f = vis_filter(-1, -1, SC_TXN_EXPIRED + 1, -1);
	FAILS(sc_transactions_query(c, &f, &list, &n), SC_EINVAL, "status");
	ck_assert_ptr_null(list);
	f = vis_filter(-1, -1, -1, SC_RISK_HIGH + 1);
	FAILS(sc_transactions_query(c, &f, &list, &n), SC_EINVAL, "risk");
	f = vis_filter(-1, -1, -1, -1);
	f.limit = 1001;
	FAILS(sc_transactions_query(c, &f, &list, &n), SC_EINVAL, "limit");
	f.limit = 0;
	f.since = -1;
	FAILS(sc_transactions_query(c, &f, &list, &n), SC_EINVAL, "since");
}
END_TEST

/* Pages of 2 chained by `before` cover each transaction exactly once, newest first. */
START_TEST(test_txn_query_paging)
{
	static const struct {
		const char *what;
		int org_of, status, risk;
	} cases[] = {
		{ "everything", -1, -1, -1 },
		{ "org alpha", A1, -1, -1 },
		{ "settled", -1, SC_TXN_SETTLED, -1 },
		{ "risk low in beta", B1, -1, SC_RISK_LOW },
	};
	uint64_t want[VIS_N], got[VIS_N + 2];
	sc_transaction *page;
	sc_txn_filter f;
	size_t i, k, n, n_want, n_got, pages;

	vis_build();
	for (i = 0; i < COUNT(cases); i++) {
		f = vis_filter(-1, cases[i].org_of, cases[i].status, cases[i].risk);
		n_want = vis_expect(&f, want);
		f.limit = 2;
		n_got = 0;
		pages = 0;
		do {
			OK(sc_transactions_query(c, &f, &page, &n));
			ck_assert_uint_le(n, 2);
			ck_assert_msg(n_got + n <= n_want, "%s: more than %zu transactions",
			              cases[i].what, n_want);
			for (k = 0; k < n; k++) {
				if (f.before != 0)
					ck_assert_uint_lt(page[k].id, f.before);
				got[n_got++] = page[k].id;
			}
			if (n > 0)
				f.before = page[n - 1].id;
			sc_transactions_free(page);
			pages++;
		} while (n == 2);
		ck_assert_msg(n_got == n_want, "%s: %zu transactions over the pages, expected %zu",
		              cases[i].what, n_got, n_want);
		for (k = 0; k < n_got; k++)
			ck_assert_msg(got[k] == want[k], "%s: #%zu is %" PRIu64 ", expected %" PRIu64,
			              cases[i].what, k, got[k], want[k]);
		/* A last short page, or an empty one after an even count. */
		ck_assert_uint_eq(pages, n_want / 2 + 1);
	}
	/* A cursor at the oldest id leaves nothing; one past the newest, everything. */
	f = vis_filter(-1, -1, -1, -1);
	f.before = v.txn[0].id;
	ck_assert_uint_eq(vis_assert_query("before the oldest", &f), 0);
	f.before = v.txn[VIS_N - 1].id + 1;
	ck_assert_uint_eq(vis_assert_query("before past the newest", &f), VIS_N);
}
END_TEST

/*
 * since is inclusive and until exclusive, at boundaries taken from the
 * created_at of transactions: the boundary transaction is on the since side.
 */
START_TEST(test_txn_query_window)
{
	const struct vis_txn *early = &v.txn[3], *mid = &v.txn[VIS_N / 2], *late = &v.txn[VIS_N - 3];
	size_t n_since, n_until;
	sc_txn_filter f;

	vis_build();
	ck_assert_int_lt(early->created_at, late->created_at);

	f = vis_filter(-1, -1, -1, -1);
	f.since = mid->created_at;
	n_since = vis_assert_query("since the middle", &f);
	ck_assert(vis_keeps(mid, &f));
	ck_assert(!vis_keeps(&v.txn[0], &f));
	f = vis_filter(-1, -1, -1, -1);
	f.until = mid->created_at;
	n_until = vis_assert_query("until the middle", &f);
	ck_assert(!vis_keeps(mid, &f));
	ck_assert(vis_keeps(&v.txn[0], &f));
	ck_assert_uint_eq(n_since + n_until, VIS_N);

	f = vis_filter(-1, -1, -1, -1);
	f.since = early->created_at;
	f.until = late->created_at;
	ck_assert_uint_ge(vis_assert_query("between two", &f), 1);
	ck_assert(vis_keeps(early, &f) && vis_keeps(mid, &f) && !vis_keeps(late, &f));
	f.until = f.since;
	ck_assert_uint_eq(vis_assert_query("an empty window", &f), 0);
	f.until = f.since + 1;
	ck_assert_uint_ge(vis_assert_query("one microsecond", &f), 1);

	f = vis_filter(-1, A1, SC_TXN_SETTLED, -1);
	f.since = early->created_at;
	f.until = late->created_at;
	vis_assert_query("settled in alpha between two", &f);
	f = vis_filter(-1, -1, -1, -1);
	f.since = v.txn[VIS_N - 1].created_at + 1;
	ck_assert_uint_eq(vis_assert_query("after the newest", &f), 0);
}
END_TEST

/* The tally's summary of f (only agent, org and window apply). */
static sc_txn_summary vis_summary(const sc_txn_filter *f)
{
	sc_txn_summary s;
	uint64_t *by_status[] = { &s.pending, &s.settled, &s.blocked, &s.expired };
	size_t i;

	memset(&s, 0, sizeof(s));
	for (i = 0; i < VIS_N; i++) {
		if (!vis_keeps(&v.txn[i], f))
			continue;
		s.total++;
		(*by_status[v.txn[i].status])++;
		s.charged += v.txn[i].charged;
		s.estimated += v.txn[i].estimate;
	}
	return s;
}

#define SUMMARY_FIELD(m) { #m, offsetof(sc_txn_summary, m) }

START_TEST(test_txn_summary)
{
	static const struct {
		const char *name;
		size_t off;
	} fields[] = {
		SUMMARY_FIELD(total),   SUMMARY_FIELD(pending), SUMMARY_FIELD(settled),
		SUMMARY_FIELD(blocked), SUMMARY_FIELD(expired), SUMMARY_FIELD(charged),
		SUMMARY_FIELD(estimated),
	};
	static const struct {
		const char *what;
		int agent, org_of, window; /* window: since the middle transaction */
	} cases[] = {
		{ "everything", -1, -1, 0 }, { "org alpha", -1, A1, 0 }, { "org beta", -1, B1, 0 },
		{ "agent a2", A2, -1, 0 },   { "since the middle", -1, -1, 1 },
		{ "beta since the middle", -1, B1, 1 },
	};
	sc_txn_summary got, want;
	sc_txn_filter f;
	int64_t a, b;
	size_t i, k;

	vis_build();
	for (i = 0; i < COUNT(cases); i++) {
		f = vis_filter(cases[i].agent, cases[i].org_of, -1, -1);
		if (cases[i].window)
			f.since = v.txn[VIS_N / 2].created_at;
		want = vis_summary(&f);
		OK(sc_transactions_summary(c, &f, &got));
		for (k = 0; k < COUNT(fields); k++) {
			memcpy(&a, (const char *)&got + fields[k].off, sizeof(a));
			memcpy(&b, (const char *)&want + fields[k].off, sizeof(b));
			ck_assert_msg(a == b, "%s: %s = %" PRId64 ", the test tallied %" PRId64,
			              cases[i].what, fields[k].name, a, b);
		}
		ck_assert_uint_eq(got.total, got.pending + got.settled + got.blocked + got.expired);
	}
	/* The tally itself, by hand: 13 checks, $14 charged of $528 estimated. */
	OK(sc_transactions_summary(c, NULL, &got));
	ck_assert_uint_eq(got.total, VIS_N);
	ck_assert_uint_eq(got.pending, 2);
	ck_assert_uint_eq(got.settled, 9);
	ck_assert_uint_eq(got.blocked, 2);
	ck_assert_uint_eq(got.expired, 0);
	ck_assert_int_eq(got.charged, USD(14));
	ck_assert_int_eq(got.estimated, USD(528));
	f = vis_filter(-1, -1, -1, -1);
	f.until = v.txn[0].created_at;
	OK(sc_transactions_summary(c, &f, &got));
	ck_assert_uint_eq(got.total, 0);
	ck_assert_int_eq(got.charged, 0);
}
END_TEST

/* The tally's top agents over f's org and window: charged transactions only, most first. */
static size_t vis_top(const sc_txn_filter *f, unsigned limit, sc_top_agent *out)
{
	sc_micros spend[N_VIS_AGENTS] = { 0 };
	uint64_t count[N_VIS_AGENTS] = { 0 };
	size_t i, n = 0;
	int best, a;

	for (i = 0; i < VIS_N; i++)
		if (v.txn[i].charged > 0 && vis_keeps(&v.txn[i], f)) {
			spend[v.txn[i].agent] += v.txn[i].charged;
			count[v.txn[i].agent]++;
		}
	while (n < limit) {
		for (best = -1, a = 0; a < N_VIS_AGENTS; a++)
			if (count[a] && (best < 0 || spend[a] > spend[best]))
				best = a;
		if (best < 0)
			break;
		out[n] = (sc_top_agent){ .agent_id = v.agent[best], .spend = spend[best],
			                 .transactions = count[best] };
		snprintf(out[n].name, sizeof(out[n].name), "%s", vis_agents[best].name);
		count[best] = 0;
		n++;
	}
	return n;
}

START_TEST(test_agents_top)
{
	static const struct {
		const char *what;
		int org_of, window;
		unsigned limit;
		size_t count;
	} cases[] = {
		{ "everyone", -1, 0, 0, 4 },      { "the top 2", -1, 0, 2, 2 },
		{ "org alpha", A1, 0, 0, 2 },     { "org beta, top 1", B1, 0, 1, 1 },
		{ "since the middle", -1, 1, 0, 0 /* from the tally */ },
	};
	sc_top_agent *list, want[N_VIS_AGENTS];
	sc_txn_filter f;
	size_t i, k, n, n_want;

	vis_build();
	for (i = 0; i < COUNT(cases); i++) {
		f = vis_filter(-1, cases[i].org_of, -1, -1);
		if (cases[i].window)
			f.since = v.txn[VIS_N / 2].created_at;
		n_want = vis_top(&f, cases[i].limit ? cases[i].limit : 10, want);
		if (cases[i].count)
			ck_assert_uint_eq(n_want, cases[i].count);
		OK(sc_agents_top(c, f.org_id, f.since, f.until, cases[i].limit, &list, &n));
		ck_assert_msg(n == n_want, "%s: %zu agents, expected %zu", cases[i].what, n, n_want);
		for (k = 0; k < n; k++) {
			ck_assert_msg(list[k].agent_id == want[k].agent_id,
			              "%s: #%zu is agent %" PRIu64 ", expected %" PRIu64,
			              cases[i].what, k, list[k].agent_id, want[k].agent_id);
			ck_assert_str_eq(list[k].name, want[k].name);
			ck_assert_int_eq(list[k].spend, want[k].spend);
			ck_assert_uint_eq(list[k].transactions, want[k].transactions);
			if (k > 0)
				ck_assert_int_ge(list[k - 1].spend, list[k].spend);
		}
		sc_top_agents_free(list);
	}
	/* The tally by hand: b1 $5 in 5 charges, b2 $4, a2 $3, a1 $2 (its failure charged $0). */
	OK(sc_agents_top(c, 0, 0, 0, 0, &list, &n));
	ck_assert_uint_eq(n, 4);
	ck_assert_uint_eq(list[0].agent_id, v.agent[B1]);
	ck_assert_int_eq(list[0].spend, USD(5));
	ck_assert_uint_eq(list[0].transactions, 5);
	ck_assert_uint_eq(list[3].agent_id, v.agent[A1]);
	ck_assert_int_eq(list[3].spend, USD(2));
	ck_assert_uint_eq(list[3].transactions, 1);
	sc_top_agents_free(list);
	OK(sc_agents_top(c, 0, v.txn[VIS_N - 1].created_at + 1, 0, 0, &list, &n));
	ck_assert_uint_eq(n, 0);
	sc_top_agents_free(list);
	FAILS(sc_agents_top(c, 0, 0, 0, 101, &list, &n), SC_EINVAL, "limit");
	ck_assert_ptr_null(list);
}
END_TEST

START_TEST(test_fleet)
{
	sc_fleet fl;
	sc_score sc;
	int64_t risk_blocked, scores = 0;
	sc_micros spend = 0;
	size_t i;

	OK(sc_fleet_get(c, &fl));
	ck_assert_uint_eq(fl.total_agents, 0);
	ck_assert_int_eq(fl.total_spend, 0);
	ck_assert_int_eq(fl.avg_credit_score, 0);

	vis_build();
	for (i = 0; i < VIS_N; i++)
		spend += v.txn[i].charged;
	for (i = 0; i < N_VIS_AGENTS; i++) {
		OK(sc_score_get(c, v.agent[i], &sc));
		scores += sc.score;
	}
	OK(sc_fleet_get(c, &fl));
	ck_assert_uint_eq(fl.total_agents, N_VIS_AGENTS);
	ck_assert_uint_eq(fl.active_agents, N_VIS_AGENTS - 1);
	ck_assert_uint_eq(fl.throttled_agents, 0);
	ck_assert_uint_eq(fl.frozen_agents, 1); /* a2 */
	ck_assert_int_eq(fl.total_spend, spend);
	ck_assert_int_eq(fl.total_spend, USD(14));
	/* agent_frozen is a risk control; wallet_empty is not. */
	ck_assert_uint_eq(fl.risk_events_blocked, 1);
	ck_assert_uint_eq(fl.anomalies, 1);
	ck_assert_int_eq(fl.avg_credit_score, scores / N_VIS_AGENTS);
	OK(sc_stat(c, "risk_blocked", &risk_blocked));
	ck_assert_int_eq(risk_blocked, 1);
}
END_TEST

/* ----- tasks ----- */

/*
 * The "tasks" test cases run the daemon with --task-max-usage TASK_CAP, so
 * that the cap is known; the default cap is checked on a default daemon.
 */
#define TASK_CAP USD(3)
#define TASK_CAP_ARG "3000000"

static void setup_task_cap(void)
{
	static const char *const args[] = { "--task-max-usage", TASK_CAP_ARG, NULL };

	start(args);
}

static void setup_task_cap_short_ttl(void)
{
	static const char *const args[] = { "--task-max-usage", TASK_CAP_ARG, "--hold-ttl", "1",
		                            NULL };

	start(args);
}

static sc_decision check_task(uint64_t agent, sc_micros cost, const char *task)
{
	sc_check_req req = { .agent_id = agent, .action = "llm.call", .estimated_cost = cost,
		             .task_id = task };
	sc_decision dec;

	OK(sc_check(c, &req, &dec));
	return dec;
}

static uint64_t allow_task(uint64_t agent, sc_micros cost, const char *task)
{
	sc_decision dec = check_task(agent, cost, task);

	ck_assert_msg(dec.allowed, "%lld for task %s blocked: %s", (long long)cost, task,
	              dec.block_reason);
	ck_assert_uint_eq(dec.n_warnings, 0);
	return dec.transaction_id;
}

static void blocked_task(uint64_t agent, sc_micros cost, const char *task)
{
	sc_decision dec = check_task(agent, cost, task);

	ck_assert_msg(!dec.allowed, "%lld for task %s allowed", (long long)cost, task);
	ck_assert_str_eq(dec.block_reason, "task:max_usage");
}

static sc_task_usage task_usage(const char *task)
{
	sc_task_usage u;

	OK(sc_tasks_usage(c, task, &u));
	ck_assert_str_eq(u.task_id, task);
	ck_assert_int_gt(u.created_at, INT64_C(1600000000000000));
	ck_assert_int_ge(u.last_at, u.created_at);
	return u;
}

/* What the test expects of a task: its own tally, never another answer of the daemon. */
struct task_tally {
	sc_micros usage, held;
	uint64_t checks;
	uint32_t open_holds;
};

static void assert_task(const char *what, const char *task, sc_micros max_usage,
                        const struct task_tally *want)
{
	sc_task_usage u = task_usage(task);

	ck_assert_msg(u.usage == want->usage && u.held == want->held &&
	                      u.checks == want->checks && u.open_holds == want->open_holds &&
	                      u.max_usage == max_usage,
	              "%s: task %s has usage %lld, held %lld, checks %llu, open_holds %u, "
	              "max_usage %lld; expected %lld, %lld, %llu, %u, %lld",
	              what, task, (long long)u.usage, (long long)u.held,
	              (unsigned long long)u.checks, u.open_holds, (long long)u.max_usage,
	              (long long)want->usage, (long long)want->held,
	              (unsigned long long)want->checks, want->open_holds, (long long)max_usage);
}

/*
 * One step on one task shared by two agents of different orgs: a check by
 * agent 0 or 1 (allowed unless `blocked`), or the report of the check made
 * at step `settles` with an actual cost. Each check is $cost of "job".
 */
struct task_step {
	int agent; /* 0 or 1; -1: a report */
	sc_micros cost; /* the estimate, or the actual cost of a report */
	int blocked;
	int settles;
};

#define T_ALLOW(a, amount) { .agent = (a), .cost = (amount) }
#define T_BLOCK(a, amount) { .agent = (a), .cost = (amount), .blocked = 1 }
#define T_REPORT(step, actual) { .agent = -1, .cost = (actual), .settles = (step) }

static const struct task_step task_steps[] = {
	/* 0 */ T_ALLOW(0, USD(1)),
	/* 1 */ T_ALLOW(1, CENTS(150)),
	/* 2 */ T_ALLOW(0, CENTS(50)), /* held + estimate is exactly the cap */
	/* 3 */ T_BLOCK(1, 1),
	/* 4 */ T_REPORT(0, CENTS(40)), /* a lower actual cost frees 60 cents */
	/* 5 */ T_BLOCK(1, CENTS(60) + 1),
	/* 6 */ T_ALLOW(1, CENTS(60)),
	/* 7 */ T_BLOCK(0, 1),
	/* 8 */ T_REPORT(1, USD(2)), /* an overrun: usage plus held is above the cap */
	/* 9 */ T_BLOCK(0, 1),
	/* 10 */ T_REPORT(2, 0),
	/* 11 */ T_REPORT(6, CENTS(10)), /* usage $2.50, nothing held */
	/* 12 */ T_BLOCK(1, CENTS(50) + 1),
	/* 13 */ T_ALLOW(0, CENTS(50)),
	/* 14 */ T_BLOCK(1, 1),
};

#undef T_ALLOW
#undef T_BLOCK
#undef T_REPORT

START_TEST(test_task_cap_across_agents)
{
	uint64_t agent[2] = { new_agent(USD(100)), new_agent(USD(100)) };
	uint64_t txn[COUNT(task_steps)] = { 0 };
	struct task_tally want = { 0 };
	sc_transaction *list;
	int64_t created_at = 0;
	size_t i, k, n;
	char what[32];

	ck_assert_int_eq(sc_tasks_usage(c, "job", &(sc_task_usage){ 0 }), SC_ENOTFOUND);
	for (i = 0; i < COUNT(task_steps); i++) {
		const struct task_step *s = &task_steps[i];

		if (s->agent < 0) {
			report(txn[s->settles], SC_OUTCOME_SUCCESS, 1, s->cost);
			want.usage += s->cost;
			want.held -= task_steps[s->settles].cost;
			want.open_holds--;
		} else if (s->blocked) {
			blocked_task(agent[s->agent], s->cost, "job");
			want.checks++;
		} else {
			txn[i] = allow_task(agent[s->agent], s->cost, "job");
			want.held += s->cost;
			want.checks++;
			want.open_holds++;
		}
		snprintf(what, sizeof(what), "step %zu", i);
		assert_task(what, "job", TASK_CAP, &want);
		if (created_at == 0)
			created_at = task_usage("job").created_at;
		ck_assert_int_eq(task_usage("job").created_at, created_at);
	}

	/* Every transaction of the task, allowed or blocked, names it. */
	for (k = 0; k < 2; k++) {
		OK(sc_transactions_list(c, agent[k], -1, 0, &list, &n));
		ck_assert_uint_gt(n, 0);
		for (i = 0; i < n; i++)
			ck_assert_str_eq(list[i].task_id, "job");
		sc_transactions_free(list);
	}
	ck_assert_str_eq(test_transaction(c, agent[0], txn[0]).task_id, "job");
}
END_TEST

START_TEST(test_task_check_without_task)
{
	uint64_t id = new_agent(USD(100)), txn;
	struct task_tally full = { .held = TASK_CAP, .checks = 2, .open_holds = 1 };

	allow_task(id, TASK_CAP, "full");
	blocked_task(id, 1, "full");
	/* A check without a task is not limited by any, and counts toward none. */
	txn = allow(id, "llm.call", USD(50));
	ck_assert_str_eq(test_transaction(c, id, txn).task_id, "");
	report(txn, SC_OUTCOME_SUCCESS, 0, 0);
	assert_task("after checks without a task", "full", TASK_CAP, &full);
	/* Another task has its own usage. */
	allow_task(id, TASK_CAP, "other");
	assert_task("another task", "other", TASK_CAP,
	            &(struct task_tally){ .held = TASK_CAP, .checks = 1, .open_holds = 1 });
	assert_task("the first task", "full", TASK_CAP, &full);
}
END_TEST

START_TEST(test_task_critical_warned)
{
	uint64_t id, vip;
	sc_decision dec;

	new_org("org");
	id = new_agent_in("org", "bot", SC_PRIORITY_NORMAL, USD(100), 0, 0, NULL, 0);
	vip = new_agent_in("org", "vip", SC_PRIORITY_CRITICAL, USD(100), 0, 0, NULL, 0);
	allow_task(id, TASK_CAP, "t");
	dec = check_task(vip, USD(1), "t");
	ck_assert_int_eq(dec.allowed, 1);
	ck_assert_str_eq(dec.block_reason, "");
	ck_assert_str_eq(dec.risk_level, "high");
	ck_assert_uint_eq(dec.n_warnings, 1);
	ck_assert_str_eq(dec.warnings[0], "task:max_usage");
	/* Its hold counts toward the task, past the cap. */
	assert_task("after the critical check", "t", TASK_CAP,
	            &(struct task_tally){ .held = TASK_CAP + USD(1), .checks = 2, .open_holds = 2 });
	blocked_task(id, 1, "t");
	/* An estimate above the cap on its own. */
	dec = check_task(vip, TASK_CAP + 1, "fresh");
	ck_assert_int_eq(dec.allowed, 1);
	ck_assert_msg(has_warning(&dec, "task:max_usage"), "no warning task:max_usage");
	blocked_task(id, TASK_CAP + 1, "another");
}
END_TEST

START_TEST(test_task_errors)
{
	uint64_t id = new_agent(USD(100));
	sc_check_req req = { .agent_id = id, .action = "x", .estimated_cost = 1 };
	static const char *const bad[] = { "", "has space", "tab\there" };
	char long_id[SC_KEY_MAX + 2], max_id[SC_KEY_MAX + 1];
	sc_task_usage u;
	sc_decision dec;
	size_t i;

	ck_assert_int_eq(sc_tasks_usage(c, "never-checked", &u), SC_ENOTFOUND);
	FAILS(sc_tasks_usage(c, NULL, &u), SC_EINVAL, "task_id");
	for (i = 0; i < COUNT(bad); i++) {
		req.task_id = bad[i];
		FAILS(sc_check(c, &req, &dec), SC_EINVAL, "task_id");
	}
	memset(long_id, 't', sizeof(long_id) - 1);
	long_id[sizeof(long_id) - 1] = '\0';
	req.task_id = long_id;
	FAILS(sc_check(c, &req, &dec), SC_EINVAL, "task_id");
	memset(max_id, 't', sizeof(max_id) - 1);
	max_id[sizeof(max_id) - 1] = '\0';
	req.task_id = max_id;
	OK(sc_check(c, &req, &dec));
	ck_assert_int_eq(dec.allowed, 1);
	assert_task("a task id of SC_KEY_MAX bytes", max_id, TASK_CAP,
	            &(struct task_tally){ .held = 1, .checks = 1, .open_holds = 1 });
	/* The refused checks left no task behind. */
	ck_assert_int_ne(sc_tasks_usage(c, "has space", &u), 0);
}
END_TEST

/* Expired holds charge their estimate to the task, as to the wallets. */
START_TEST(test_task_hold_expiry)
{
	uint64_t id = new_agent(USD(100));

	allow_task(id, USD(2), "exp");
	sleep_ms(1500);
	ck_assert_int_eq(wait_no_holds(id).held, 0);
	assert_task("after the expiry", "exp", TASK_CAP,
	            &(struct task_tally){ .usage = USD(2), .checks = 1 });
	blocked_task(id, USD(1) + 1, "exp");
	allow_task(id, USD(1), "exp");
}
END_TEST

START_TEST(test_task_survives_restart)
{
	uint64_t id = new_agent(USD(100)), open;
	sc_task_usage before, after;

	report(allow_task(id, USD(1), "keep"), SC_OUTCOME_SUCCESS, 1, CENTS(50));
	open = allow_task(id, USD(2), "keep");
	before = task_usage("keep");

	sc_close(c);
	c = NULL;
	ck_assert_int_eq(test_daemon_restart(&d), 0);
	OK(sc_connect(d.socket, &c));

	after = task_usage("keep");
	ck_assert_int_eq(memcmp(&after, &before, sizeof(after)), 0);
	blocked_task(id, CENTS(50) + 1, "keep");
	report(open, SC_OUTCOME_SUCCESS, 1, USD(1));
	assert_task("after the restart", "keep", TASK_CAP,
	            &(struct task_tally){ .usage = CENTS(150), .checks = 3 });
}
END_TEST

/* Without --task-max-usage the cap is $5. */
START_TEST(test_task_default_cap)
{
	uint64_t id = new_agent(USD(100));

	allow_task(id, USD(5), "t");
	blocked_task(id, 1, "t");
	assert_task("the default cap", "t", USD(5),
	            &(struct task_tally){ .held = USD(5), .checks = 2, .open_holds = 1 });
}
END_TEST

/* ----- alerts ----- */

/* The next alert pushed to sub within 2 s. */
static sc_alert next_alert(sc_client *sub)
{
	sc_alert a;
	int rc = sc_alert_next(sub, 2000, &a);

	ck_assert_msg(rc == 0, "no alert pushed: %s (%s)", sc_err_name(rc), sc_last_error(sub));
	return a;
}

static void no_alert(sc_client *conn)
{
	sc_alert a;
	int rc = sc_alert_next(conn, 300, &a);

	ck_assert_msg(rc == -ETIMEDOUT, "expected no alert, got %s: %s", sc_err_name(rc),
	              rc == 0 ? a.message : sc_last_error(conn));
}

START_TEST(test_alerts_pushed_to_subscribers)
{
	sc_client *sub, *other, *sub2;
	sc_wallet_update u = { .set = SC_WALLET_SET_LOW_BALANCE, .low_balance = USD(5) };
	sc_alert_filter f;
	sc_alert a, *list;
	sc_wallet w;
	uint64_t agent = new_agent(USD(10)), last = 99, txn, second;
	int64_t count;
	size_t n;

	OK(sc_connect(d.socket, &sub));
	OK(sc_connect(d.socket, &other));
	TEST_OK(sub, sc_alerts_subscribe(sub, &last));
	ck_assert_uint_eq(last, 0);

	/* a hold takes available to $0.50, below a tenth of the $10 budget */
	txn = allow(agent, "openai.chat", CENTS(950));
	a = next_alert(sub);
	ck_assert_int_eq(a.kind, SC_ALERT_LOW_BALANCE);
	ck_assert_int_eq(a.severity, SC_SEVERITY_WARNING);
	ck_assert_uint_eq(a.agent_id, agent);
	ck_assert_uint_eq(a.transaction_id, txn);
	ck_assert_int_eq(a.value, CENTS(50));
	ck_assert_int_eq(a.threshold, USD(1));
	ck_assert_str_eq(a.message, "agent 1 (bot): available $0.50 below $1.00");
	no_alert(other);

	OK(sc_alerts_list(c, NULL, &list, &n));
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(list[0].id, a.id);
	ck_assert_str_eq(list[0].message, a.message);
	sc_alerts_free(list);
	sc_alert_filter_init(&f);
	f.kind = SC_ALERT_ANOMALY;
	OK(sc_alerts_list(c, &f, &list, &n));
	ck_assert_uint_eq(n, 0);
	sc_alerts_free(list);

	/* a subscriber that raises an alert itself gets it after its reply */
	OK(sc_connect(d.socket, &sub2));
	TEST_OK(sub2, sc_alerts_subscribe(sub2, &last));
	ck_assert_uint_eq(last, a.id);
	sc_close(sub); /* gone before the next alert: the daemon must not mind */
	TEST_OK(sub2, sc_wallets_update(sub2, agent, &u, &w));
	ck_assert_int_eq(w.low_balance, USD(5));
	a = next_alert(sub2);
	ck_assert_int_eq(a.severity, SC_SEVERITY_CRITICAL);
	ck_assert_int_eq(a.threshold, USD(1)); /* a fifth of $5 */
	ck_assert_uint_eq(a.transaction_id, 0);
	no_alert(other);

	/* unsubscribed: nothing more */
	TEST_OK(sub2, sc_alerts_unsubscribe(sub2));
	second = new_agent_in("org-1", "second", SC_PRIORITY_NORMAL, USD(10), 0, 0, NULL, 0);
	allow(second, "openai.chat", CENTS(950));
	OK(sc_alerts_list(c, NULL, &list, &n));
	ck_assert_uint_eq(n, 3);
	ck_assert_uint_eq(list[0].agent_id, second);
	ck_assert_uint_gt(list[0].id, list[1].id);
	sc_alerts_free(list);
	no_alert(sub2);

	OK(sc_stat(c, "alerts_dropped", &count));
	ck_assert_int_eq(count, 0);
	ck_assert_uint_eq(sc_alerts_dropped(sub2), 0);
	sc_close(sub2);
	sc_close(other);
}
END_TEST

START_TEST(test_alerts_budget_and_filters)
{
	sc_client *sub;
	sc_alert_filter f;
	sc_alert a, *list;
	uint64_t agent, last, txn;
	size_t n;

	new_org("spenders");
	agent = new_agent_in("spenders", "overrun", SC_PRIORITY_NORMAL, USD(100), 0, USD(10), NULL, 0);
	OK(sc_connect(d.socket, &sub));
	TEST_OK(sub, sc_alerts_subscribe(sub, &last));
	txn = allow(agent, "tool.run", USD(9));
	report(txn, SC_OUTCOME_SUCCESS, 1, USD(15));
	a = next_alert(sub);
	ck_assert_int_eq(a.kind, SC_ALERT_BUDGET_EXCEEDED);
	ck_assert_int_eq(a.severity, SC_SEVERITY_CRITICAL);
	ck_assert_int_eq(a.value, USD(15));
	ck_assert_int_eq(a.threshold, USD(10));
	ck_assert_uint_eq(a.transaction_id, txn);
	sc_alert_filter_init(&f);
	f.agent_id = agent;
	f.kind = SC_ALERT_BUDGET_EXCEEDED;
	OK(sc_alerts_list(c, &f, &list, &n));
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(list[0].id, a.id);
	sc_alerts_free(list);
	f.agent_id = agent + 1;
	OK(sc_alerts_list(c, &f, &list, &n));
	ck_assert_uint_eq(n, 0);
	sc_alerts_free(list);
	f.kind = 9;
	FAILS(sc_alerts_list(c, &f, &list, &n), SC_EINVAL, "kind");
	sc_close(sub);
}
END_TEST

static TCase *tcase(Suite *s, const char *name, void (*setup)(void), unsigned timeout)
{
	return test_add_tcase_tmp(s, name, setup, stop, timeout);
}

static Suite *integration_suite(void)
{
	Suite *s = suite_create("integration");
	TCase *tc;

	tc = tcase(s, "methods", setup_default, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_hello);
	tcase_add_test(tc, test_orgs);
	tcase_add_test(tc, test_agents_create_get_list);
	tcase_add_test(tc, test_agents_update);
	tcase_add_test(tc, test_agents_delete);
	tcase_add_test(tc, test_rules);
	tcase_add_test(tc, test_wallets);
	tcase_add_test(tc, test_transactions_list);
	tcase_add_test(tc, test_stats);
	tcase_add_test(tc, test_argument_errors);
	tcase_add_test(tc, test_daemon_gone);
	tcase_add_test(tc, test_task_default_cap);

	tc = tcase(s, "rule_texts", setup_six_rule_texts, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_rule_texts_shared_and_limited);

	tc = tcase(s, "gate", setup_default, TEST_TIMEOUT_S);
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

	tc = tcase(s, "wallets", setup_default, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_transfer_between_agents);
	tcase_add_test(tc, test_transfer_refused);
	tcase_add_test(tc, test_transfer_org_wallet);
	tcase_add_test(tc, test_adjust);
	tcase_add_test(tc, test_timezone_spend_and_period);
	tcase_add_test(tc, test_carve_and_release);
	tcase_add_test(tc, test_balance_after_check);

	tc = tcase(s, "score", setup_default, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_score_new_agent);
	tcase_add_test(tc, test_score_throttles_on_failures);
	tcase_add_test(tc, test_anomaly_risk_and_event);
	tcase_add_test(tc, test_operator_status_events);

	tc = tcase(s, "visibility", setup_default, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_txn_query_filters);
	tcase_add_test(tc, test_txn_query_paging);
	tcase_add_test(tc, test_txn_query_window);
	tcase_add_test(tc, test_txn_summary);
	tcase_add_test(tc, test_agents_top);
	tcase_add_test(tc, test_fleet);

	tc = tcase(s, "tasks", setup_task_cap, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_task_cap_across_agents);
	tcase_add_test(tc, test_task_check_without_task);
	tcase_add_test(tc, test_task_critical_warned);
	tcase_add_test(tc, test_task_errors);
	tcase_add_test(tc, test_task_survives_restart);
	tc = tcase(s, "tasks-expiry", setup_task_cap_short_ttl, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_task_hold_expiry);

	tc = tcase(s, "expiry", setup_short_ttl, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_hold_expiry);
	tc = tcase(s, "expiry-none", setup_short_ttl_no_charge, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_hold_expiry_no_charge);

	tc = tcase(s, "alerts", setup_default, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_alerts_pushed_to_subscribers);
	tcase_add_test(tc, test_alerts_budget_and_filters);

	tc = tcase(s, "restart", setup_default, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_restart_keeps_state);
	tcase_add_test(tc, test_transfers_survive_restart);
	tc = tcase(s, "concurrency", setup_concurrency, 120);
	tcase_add_test(tc, test_concurrent_checks_never_overspend);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(integration_suite());
	int failed;

	srunner_add_suite(sr, client_suite());
	srunner_add_suite(sr, batch_suite());
	srunner_add_suite(sr, pricing_daemon_suite());
	srunner_add_suite(sr, peek_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
