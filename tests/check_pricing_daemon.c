/*
 * check_pricing_daemon.c: versioned rates and reports priced from token
 * counts through libsidecard against the real daemon (run by
 * check_integration beside its other suites): pricing.set/list/get, a
 * check reported with tokens and the transaction that records them, an
 * unpriced model refused with its message, and prices and priced
 * transactions surviving a restart, both attached to state.shm and rebuilt
 * by replaying the ledger (whose replay checks every result byte for byte).
 */
#include <inttypes.h>
#include <signal.h>
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

#define USD(x) ((sc_micros)(x) * SC_MICROS_PER_USD)
#define PER_M(cents) ((sc_micros)(cents) * 10000) /* dollars per million, in cents */
#define HOUR_US (INT64_C(3600) * 1000000)
#define TIMEOUT_S 60

static struct test_daemon d;
static sc_client *c;

#define OK(call) TEST_OK(c, call)

static void setup(void)
{
	test_client_start(&d, &c, NULL, TIMEOUT_S);
}

static void teardown(void)
{
	test_client_stop(&d, &c);
}

static int64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t new_agent(const char *org, sc_micros balance)
{
	sc_wallet_update w = { .set = SC_WALLET_SET_BALANCE, .balance = balance };
	sc_agent a;
	sc_org o;

	OK(sc_orgs_create(c, org, &o));
	OK(sc_agents_create(c, org, "bot", SC_PRIORITY_NORMAL, &w, NULL, 0, &a));
	return a.id;
}

static uint64_t allow(uint64_t agent, sc_micros estimate)
{
	return test_allow(c, agent, "llm.chat", estimate);
}

static sc_price set_rate(const char *model, sc_micros in, sc_micros out, const sc_micros *cached,
                         int64_t from)
{
	sc_price p;

	OK(sc_pricing_set(c, model, in, out, cached, &from, &p));
	ck_assert_str_eq(p.model, model);
	return p;
}

START_TEST(test_priced_report)
{
	int64_t now = now_us(), later = now + 24 * HOUR_US;
	sc_micros cached = PER_M(125);
	uint64_t agent = new_agent("team", USD(100)), t1, t2;
	sc_tokens tokens = { "gpt-x", 5000, 1500, 2000 };
	sc_price p, *list;
	sc_settlement s;
	sc_transaction t;
	size_t n;

	p = set_rate("gpt-x", PER_M(250), PER_M(1000), &cached, now - 2 * HOUR_US);
	ck_assert_uint_eq(p.version, 1);
	ck_assert_int_eq(p.cached_input, PER_M(125));
	ck_assert_int_eq(p.effective_from, now - 2 * HOUR_US);
	p = set_rate("gpt-x", PER_M(500), PER_M(2000), NULL, later);
	ck_assert_uint_eq(p.version, 2);
	ck_assert_int_eq(p.cached_input, PER_M(500)); /* defaults to input */

	OK(sc_pricing_list(c, NULL, &list, &n));
	ck_assert_uint_eq(n, 2);
	ck_assert_uint_eq(list[0].version, 1);
	ck_assert_int_eq(list[0].output, PER_M(1000));
	ck_assert_uint_eq(list[1].version, 2);
	ck_assert_int_eq(list[1].effective_from, later);
	sc_prices_free(list);
	OK(sc_pricing_get(c, "gpt-x", NULL, &p));
	ck_assert_uint_eq(p.version, 1); /* version 2 is not in force yet */
	OK(sc_pricing_get(c, "gpt-x", &later, &p));
	ck_assert_uint_eq(p.version, 2);

	/* 5000 x 2.50 + 1500 x 10 + 2000 x 1.25 per million = 12500 + 15000 + 2500 micros */
	t1 = allow(agent, USD(1));
	OK(sc_report_tokens(c, t1, SC_OUTCOME_SUCCESS, &tokens, &s));
	ck_assert_int_eq(s.charged, 30000);
	ck_assert_str_eq(s.model, "gpt-x");
	ck_assert_uint_eq(s.rate_version, 1);
	ck_assert_int_eq(s.replayed, 0);
	ck_assert_int_eq(s.balance, USD(100) - 30000);
	OK(sc_report_tokens(c, t1, SC_OUTCOME_SUCCESS, &tokens, &s));
	ck_assert_int_eq(s.replayed, 1);
	ck_assert_int_eq(s.balance, USD(100) - 30000);
	tokens.input_tokens++;
	ck_assert_int_eq(sc_report_tokens(c, t1, SC_OUTCOME_SUCCESS, &tokens, &s), SC_EEXISTS);

	t = test_transaction(c, agent, t1);
	ck_assert_str_eq(t.model, "gpt-x");
	ck_assert_uint_eq(t.rate_version, 1);
	ck_assert_uint_eq(t.input_tokens, 5000);
	ck_assert_uint_eq(t.output_tokens, 1500);
	ck_assert_uint_eq(t.cached_input_tokens, 2000);
	ck_assert_int_eq(t.charged, 30000);
	ck_assert_int_eq(t.status, SC_TXN_SETTLED);

	/* A third version in force from now on prices the next check; failure pays tokens too. */
	p = set_rate("gpt-x", PER_M(300), PER_M(300), NULL, now_us());
	ck_assert_uint_eq(p.version, 3);
	t2 = allow(agent, USD(1));
	tokens = (sc_tokens){ "gpt-x", 1, 0, 0 };
	OK(sc_report_tokens(c, t2, SC_OUTCOME_FAILURE, &tokens, &s));
	ck_assert_int_eq(s.charged, 3); /* 3 micros per token, exactly */
	ck_assert_uint_eq(s.rate_version, 3);

	/* An unpriced check keeps nil pricing fields. */
	t2 = allow(agent, USD(1));
	OK(sc_report(c, t2, SC_OUTCOME_SUCCESS, 1, 7, &s));
	ck_assert_str_eq(s.model, "");
	ck_assert_uint_eq(s.rate_version, 0);
	t = test_transaction(c, agent, t2);
	ck_assert_str_eq(t.model, "");
	ck_assert_uint_eq(t.rate_version, 0);
}
END_TEST

START_TEST(test_unpriced_model_refused)
{
	uint64_t agent = new_agent("team", USD(10)), txn;
	sc_tokens tokens = { "no-such-model", 100, 100, 0 };
	sc_settlement s;
	sc_wallet w;
	sc_price p, *list;
	size_t n;

	txn = allow(agent, USD(2));
	ck_assert_int_eq(sc_report_tokens(c, txn, SC_OUTCOME_SUCCESS, &tokens, &s), SC_ENOTFOUND);
	ck_assert_msg(strstr(sc_last_error(c), "model: no rate for 'no-such-model' in force at ") ==
	                      sc_last_error(c),
	              "message: %s", sc_last_error(c));
	OK(sc_wallets_get(c, agent, &w));
	ck_assert_int_eq(w.held, USD(2));
	ck_assert_int_eq(w.balance, USD(10));
	ck_assert_int_eq(sc_pricing_get(c, "no-such-model", NULL, &p), SC_ENOTFOUND);
	ck_assert_int_eq(sc_pricing_list(c, "no-such-model", &list, &n), SC_ENOTFOUND);
	ck_assert_int_eq(sc_pricing_set(c, "bad model", 1, 1, NULL, NULL, &p), SC_EINVAL);
	ck_assert_int_eq(sc_pricing_set(c, "m", -1, 1, NULL, NULL, &p), SC_EINVAL);
	ck_assert_ptr_nonnull(strstr(sc_last_error(c), "input"));
	/* The hold still settles. */
	OK(sc_report(c, txn, SC_OUTCOME_SUCCESS, 0, 0, &s));
	ck_assert_int_eq(s.charged, USD(2));
}
END_TEST

static sc_price *prices(size_t *n)
{
	sc_price *list;

	OK(sc_pricing_list(c, NULL, &list, n));
	return list;
}

static sc_transaction *transactions(uint64_t agent, size_t *n)
{
	sc_transaction *list;

	OK(sc_transactions_list(c, agent, -1, 1000, &list, n));
	return list;
}

static void reconnect(void)
{
	ck_assert_int_eq(test_daemon_restart(&d), 0);
	OK(sc_connect(d.socket, &c));
}

START_TEST(test_pricing_survives_restart)
{
	int64_t now = now_us();
	uint64_t agent = new_agent("team", USD(100)), settled, open;
	sc_tokens tokens = { "claude", 1000, 1000, 1000 };
	sc_price *p0, *p1;
	sc_transaction *t0, *t1;
	size_t np0, np1, nt0, nt1, i;
	sc_settlement s;
	char shm[160];
	sc_price p;

	set_rate("claude", PER_M(300), PER_M(1500), NULL, now - HOUR_US);
	set_rate("gpt-x", PER_M(250), PER_M(1000), NULL, now - HOUR_US);
	set_rate("claude", PER_M(100), PER_M(100), NULL, now + 100 * HOUR_US);
	settled = allow(agent, USD(1));
	OK(sc_report_tokens(c, settled, SC_OUTCOME_SUCCESS, &tokens, &s));
	ck_assert_int_eq(s.charged, 1000 * 3 + 1000 * 15 + 1000 * 3);
	open = allow(agent, USD(1));
	p0 = prices(&np0);
	t0 = transactions(agent, &nt0);
	ck_assert_uint_eq(np0, 3);

	for (int rebuild = 0; rebuild <= 1; rebuild++) {
		sc_close(c);
		c = NULL;
		if (rebuild) {
			/* Without state.shm, the state is rebuilt by replaying the ledger. */
			ck_assert_int_ge(test_daemon_kill(&d, SIGKILL), 0);
			snprintf(shm, sizeof(shm), "%s", d.segment);
			ck_assert_int_eq(unlink(shm), 0);
		}
		reconnect();
		p1 = prices(&np1);
		t1 = transactions(agent, &nt1);
		ck_assert_uint_eq(np1, np0);
		ck_assert_int_eq(memcmp(p0, p1, np0 * sizeof(*p0)), 0);
		ck_assert_uint_eq(nt1, nt0);
		for (i = 0; i < nt0; i++)
			ck_assert_msg(memcmp(&t0[i], &t1[i], sizeof(*t0)) == 0,
			              "transaction %" PRIu64 " differs after restart %d", t0[i].id,
			              rebuild);
		sc_prices_free(p1);
		sc_transactions_free(t1);
	}

	/* After the restarts: the open hold is priced at its check's rate, numbering goes on. */
	tokens = (sc_tokens){ "claude", 0, 2000, 0 };
	OK(sc_report_tokens(c, open, SC_OUTCOME_SUCCESS, &tokens, &s));
	ck_assert_int_eq(s.charged, 2000 * 15); /* 2000 output tokens at $15/M */
	ck_assert_uint_eq(s.rate_version, 1);
	p = set_rate("claude", 1, 1, NULL, now);
	ck_assert_uint_eq(p.version, 3);
	p = set_rate("gpt-x", 1, 1, NULL, now);
	ck_assert_uint_eq(p.version, 2);
	sc_prices_free(p0);
	sc_transactions_free(t0);
}
END_TEST

Suite *pricing_daemon_suite(void)
{
	Suite *s = suite_create("pricing-daemon");
	TCase *tc = test_add_tcase_tmp(s, "pricing", setup, teardown, TIMEOUT_S);

	tcase_add_test(tc, test_priced_report);
	tcase_add_test(tc, test_unpriced_model_refused);
	tcase_add_test(tc, test_pricing_survives_restart);
	return s;
}
