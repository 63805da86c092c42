/*
 * integration_fixture.c: the daemon, the connection and the helpers of the
 * integration suite's files (see integration_fixture.h for the contract).
 *
 * Threads: the test's main thread. Ownership: d and c belong to the running
 * test; start() fills them and stop() empties them.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "integration_fixture.h"

struct test_daemon d;
sc_client *c;

void start(const char *const *extra)
{
	test_client_start(&d, &c, extra, TEST_TIMEOUT_S);
}

void stop(void)
{
	test_client_stop(&d, &c);
}

void setup_default(void)
{
	start(NULL);
}

uint64_t new_org(const char *name)
{
	sc_org o;

	OK(sc_orgs_create(c, name, &o));
	return o.id;
}

uint64_t new_agent_in(const char *org, const char *name, enum sc_priority p,
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

uint64_t new_agent(sc_micros balance)
{
	static int n;
	char org[32];

	snprintf(org, sizeof(org), "org-%d", ++n);
	new_org(org);
	return new_agent_in(org, "bot", SC_PRIORITY_NORMAL, balance, 0, 0, NULL, 0);
}

sc_decision check_task(uint64_t agent, sc_micros cost, const char *task)
{
	sc_check_req req = { .agent_id = agent, .action = "llm.call", .estimated_cost = cost,
		             .task_id = task };
	sc_decision dec;

	OK(sc_check(c, &req, &dec));
	return dec;
}

sc_decision check_as(uint64_t agent, const char *action, sc_micros cost, const char *key)
{
	sc_check_req req = { .agent_id = agent, .action = action, .estimated_cost = cost,
		             .idempotency_key = key };
	sc_decision dec;

	OK(sc_check(c, &req, &dec));
	return dec;
}

uint64_t allow(uint64_t agent, const char *action, sc_micros cost)
{
	sc_decision dec = check_as(agent, action, cost, NULL);

	ck_assert_msg(dec.allowed, "%s for %lld blocked: %s", action, (long long)cost,
	              dec.block_reason);
	ck_assert_uint_gt(dec.transaction_id, 0);
	ck_assert_str_eq(dec.block_reason, "");
	return dec.transaction_id;
}

void blocked(uint64_t agent, const char *action, sc_micros cost, const char *reason)
{
	sc_decision dec = check_as(agent, action, cost, NULL);

	ck_assert_msg(!dec.allowed, "%s for %lld allowed, expected %s", action, (long long)cost,
	              reason);
	ck_assert_str_eq(dec.block_reason, reason);
	ck_assert_int_eq(dec.replayed, 0);
}

sc_wallet wallet(uint64_t agent)
{
	sc_wallet w;

	OK(sc_wallets_get(c, agent, &w));
	return w;
}

sc_settlement report(uint64_t txn, enum sc_outcome o, int has_actual, sc_micros actual)
{
	sc_settlement s;

	OK(sc_report(c, txn, o, has_actual, actual, &s));
	ck_assert_uint_eq(s.transaction_id, txn);
	ck_assert_int_eq(s.outcome, o);
	return s;
}

int has_warning(const sc_decision *dec, const char *w)
{
	unsigned i;

	for (i = 0; i < dec->n_warnings; i++)
		if (strcmp(dec->warnings[i], w) == 0)
			return 1;
	return 0;
}

sc_wallet wait_no_holds(uint64_t agent)
{
	sc_wallet w;
	int i;

	for (i = 0; i < 100; i++) {
		w = wallet(agent);
		if (w.held == 0)
			break;
		test_sleep_ms(50);
	}
	return w;
}

TCase *daemon_tcase(Suite *s, const char *name, void (*setup)(void), unsigned timeout)
{
	return test_add_tcase_tmp(s, name, setup, stop, timeout);
}
