/*
 * check_integration.c: end-to-end tests of sidecard, driven only through
 * libsidecard against the real daemon started as a child process
 * (tests/daemon.c). Each test gets a fresh daemon on a fresh temporary
 * state directory, so tests never see each other's objects.
 *
 * This file is the check_integration program: it builds the "integration"
 * suite and runs it beside the other suites that drive a daemon (client,
 * batch, pricing-daemon, peek). Its own tests cover the admin methods
 * against protocol/PROTOCOL.md (hello, orgs, agents, rules and their shared
 * texts, wallets, transactions, stats), argument errors naming the field,
 * and a connection to a daemon that went away. The suite's other test cases
 * live beside it, each file adding its own (suites.h):
 * check_integration_gate.c (check and report, expiry, concurrency),
 * check_integration_wallets.c (transfers, adjustments, restarts),
 * check_integration_visibility.c (scores, events, queries, alerts) and
 * check_integration_tasks.c (task usage caps); integration_fixture.h holds
 * the daemon, the connection and the helpers they share. The client's own
 * strictness (wrong msgid, oversized or malformed responses) needs a
 * misbehaving daemon: see check_client.c, run from here.
 *
 * Threads: the Check runner forks each test (CK_FORK). Every test is
 * bounded by Check's timeout and by an alarm (test_daemon_timeout), which
 * also takes the daemon down with it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "integration_fixture.h"
#include "suites.h"

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

/*
 * A report retried after its agent was deleted: the settlement stands, but
 * there is no wallet to answer with. not_found naming both, not internal.
 */
START_TEST(test_report_after_agent_deleted)
{
	uint64_t id = new_agent(USD(10)), txn;
	char agent[32];
	sc_settlement s;

	txn = allow(id, "tool.run", USD(1));
	report(txn, SC_OUTCOME_SUCCESS, 0, 0);
	OK(sc_agents_delete(c, id));
	FAILS(sc_report(c, txn, SC_OUTCOME_SUCCESS, 0, 0, &s), SC_ENOTFOUND, "transaction_id");
	snprintf(agent, sizeof(agent), "agent %" PRIu64 " has since been deleted", id);
	ck_assert_msg(strstr(sc_last_error(c), agent) && strstr(sc_last_error(c), "settled as success"),
	              "message '%s' does not say the transaction was settled and its agent deleted",
	              sc_last_error(c));
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

/*
 * Text that is stored and listed must be valid UTF-8 without control or
 * bidirectional formatting characters: strict clients could not list it,
 * and an override would show one name as another.
 */
START_TEST(test_text_arguments)
{
	static const struct {
		const char *text, *rule;
	} bad[] = {
		{ "caf\xc3", "not valid UTF-8 (byte 3)" },
		{ "\xc0\xafroot", "not valid UTF-8 (byte 0)" },       /* overlong '/' */
		{ "\xed\xa0\x80x", "not valid UTF-8 (byte 0)" },     /* a surrogate */
		{ "a\nb", "must not contain control characters (U+000A at byte 1)" },
		{ "a\x1b[31m", "must not contain control characters (U+001B at byte 1)" },
		{ "a\xc2\x85", "must not contain control characters (U+0085 at byte 1)" },
		{ "pay\xe2\x80\xaeyap",
		  "must not contain bidirectional formatting characters (U+202E at byte 3)" },
		{ "x\xe2\x81\xa6y",
		  "must not contain bidirectional formatting characters (U+2066 at byte 1)" },
	};
	sc_rule rule = test_rule("r", "x", USD(1), 0, 0);
	sc_check_req req = { .action = "x", .estimated_cost = 1 };
	uint64_t id = new_agent(USD(10));
	char want[128];
	sc_decision dec;
	sc_agent a;
	sc_org o;

	req.agent_id = id;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(want, sizeof(want), "name: %s", bad[i].rule);
		FAILS(sc_orgs_create(c, bad[i].text, &o), SC_EINVAL, want);
		FAILS(sc_agents_create(c, "org-1", bad[i].text, SC_PRIORITY_NORMAL, NULL, NULL, 0, &a),
		      SC_EINVAL, want);
		FAILS(sc_agents_update(c, id, bad[i].text, -1, -1, &a), SC_EINVAL, want);
		snprintf(rule.name, sizeof(rule.name), "%s", bad[i].text);
		FAILS(sc_rules_add(c, id, &rule, NULL), SC_EINVAL, "name: ");
		req.action = bad[i].text;
		FAILS(sc_check(c, &req, &dec), SC_EINVAL, "action: ");
		req.action = "x";
		req.idempotency_key = bad[i].text;
		FAILS(sc_check(c, &req, &dec), SC_EINVAL, "idempotency_key: ");
		req.idempotency_key = NULL;
	}
	/* text beyond ASCII is welcome */
	OK(sc_orgs_create(c, "\xc3\xa9quipe-\xe6\x97\xa5\xe6\x9c\xac-\xf0\x9f\x9a\x80", &o));
	ck_assert_str_eq(o.name, "\xc3\xa9quipe-\xe6\x97\xa5\xe6\x9c\xac-\xf0\x9f\x9a\x80");
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

static Suite *integration_suite(void)
{
	Suite *s = suite_create("integration");
	TCase *tc;

	tc = daemon_tcase(s, "methods", setup_default, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_hello);
	tcase_add_test(tc, test_orgs);
	tcase_add_test(tc, test_agents_create_get_list);
	tcase_add_test(tc, test_agents_update);
	tcase_add_test(tc, test_agents_delete);
	tcase_add_test(tc, test_report_after_agent_deleted);
	tcase_add_test(tc, test_rules);
	tcase_add_test(tc, test_wallets);
	tcase_add_test(tc, test_transactions_list);
	tcase_add_test(tc, test_stats);
	tcase_add_test(tc, test_argument_errors);
	tcase_add_test(tc, test_text_arguments);
	tcase_add_test(tc, test_daemon_gone);

	tc = daemon_tcase(s, "rule_texts", setup_six_rule_texts, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_rule_texts_shared_and_limited);

	integration_gate_tcases(s);
	integration_wallets_tcases(s);
	integration_visibility_tcases(s);
	integration_tasks_tcases(s);
	integration_hostile_tcases(s);
	integration_tenants_tcases(s);
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
