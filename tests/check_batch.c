/*
 * check_batch.c: pipelined checks (sc_check_batch) and check metadata
 * against the real daemon (tests/daemon.c), run by check_integration.
 *
 * What is checked: a batch larger than the window (SC_CHECK_BATCH_WINDOW)
 * is answered in request order, each answer the one sc_check() would have
 * given (transaction ids increase, each agent's available funds fall by one
 * estimate per check); a blocked decision inside a batch blocks exactly
 * the requests past the wallet's funds and nothing else; an error of the
 * daemon's (a negative estimate) and a request the library refuses (no
 * action) fail only their own entry, with the message kept; requests
 * bigger than a socket buffer's worth per window (metadata of 400 bytes)
 * go through without either side blocking; the connection carries on with
 * ordinary calls after a batch; and a daemon that is gone fails every entry
 * with the transport error. Metadata: accepted up to the daemon's 512
 * packed bytes, refused past it naming the field, refused locally without a
 * key.
 *
 * Threads: the Check runner forks each test; each test is the only client.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "client_fixture.h"
#include "daemon.h"
#include "sidecard.h"
#include "suites.h"
#include "testutil.h"

#define USD(x) ((sc_micros)((x) * SC_MICROS_PER_USD))
#define TEST_TIMEOUT_S 60

static struct test_daemon d;
static sc_client *c;

#define OK(call) TEST_OK(c, call)

static void setup(void)
{
	test_client_start(&d, &c, NULL, TEST_TIMEOUT_S);
}

static void teardown(void)
{
	test_client_stop(&d, &c);
}

/* An agent of org "batch" (created on first use) with balance and no other limit. */
static uint64_t new_agent(const char *name, sc_micros balance)
{
	sc_wallet_update w = { .set = SC_WALLET_SET_BALANCE, .balance = balance };
	sc_agent a;
	sc_org o;
	int rc = sc_orgs_create(c, "batch", &o);

	ck_assert_msg(rc == 0 || rc == SC_EEXISTS, "orgs.create: %s", sc_err_name(rc));
	OK(sc_agents_create(c, "batch", name, SC_PRIORITY_NORMAL, &w, NULL, 0, &a));
	return a.id;
}

/* Runs a batch of n and asserts that the batch itself succeeded. */
static void batch(const sc_check_req *reqs, size_t n, sc_decision *outs, int *rcs)
{
	OK(sc_check_batch(c, reqs, n, outs, rcs));
}

START_TEST(test_batch_larger_than_window_in_order)
{
	enum { N = 3 * SC_CHECK_BATCH_WINDOW + 17 };
	static sc_check_req reqs[N];
	static sc_decision outs[N];
	static int rcs[N];
	uint64_t agents[2] = { new_agent("even", USD(1000)), new_agent("odd", USD(1000)) };
	sc_micros expect[2] = { USD(1000), USD(1000) };
	sc_wallet w;
	size_t i;

	for (i = 0; i < N; i++)
		reqs[i] = (sc_check_req){ .agent_id = agents[i % 2], .action = "llm.chat",
			                  .estimated_cost = 1000 + (sc_micros)i };
	batch(reqs, N, outs, rcs);
	for (i = 0; i < N; i++) {
		ck_assert_msg(rcs[i] == 0, "request %zu: %s", i, sc_err_name(rcs[i]));
		ck_assert_msg(outs[i].allowed, "request %zu: %s", i, outs[i].block_reason);
		if (i > 0)
			ck_assert_uint_gt(outs[i].transaction_id, outs[i - 1].transaction_id);
		expect[i % 2] -= 1000 + (sc_micros)i;
		ck_assert_int_eq(outs[i].available, expect[i % 2]);
	}
	OK(sc_wallets_get(c, agents[0], &w));
	ck_assert_int_eq(w.available, expect[0]);
	ck_assert_int_eq(w.held, USD(1000) - expect[0]);
}
END_TEST

START_TEST(test_batch_blocked_inside)
{
	enum { N = 40 };
	sc_check_req reqs[N];
	sc_decision outs[N];
	int rcs[N];
	uint64_t poor = new_agent("poor", 10 * 5000), rich = new_agent("rich", USD(100));
	size_t i, poor_allowed = 0;

	for (i = 0; i < N; i++)
		reqs[i] = (sc_check_req){ .agent_id = i % 2 ? poor : rich, .action = "tool.run",
			                  .estimated_cost = 5000 };
	reqs[7].agent_id = 999999; /* no such agent: blocked, not an error */
	batch(reqs, N, outs, rcs);
	for (i = 0; i < N; i++) {
		ck_assert_msg(rcs[i] == 0, "request %zu: %s", i, sc_err_name(rcs[i]));
		if (i == 7) {
			ck_assert(!outs[i].allowed);
			ck_assert_str_eq(outs[i].block_reason, "agent_not_found");
		} else if (i % 2 == 0) {
			ck_assert_msg(outs[i].allowed, "rich %zu: %s", i, outs[i].block_reason);
		} else if (poor_allowed < 10) {
			/* the first ten checks of the poor agent fit its funds exactly */
			ck_assert_msg(outs[i].allowed, "poor %zu: %s", i, outs[i].block_reason);
			poor_allowed++;
		} else {
			ck_assert(!outs[i].allowed);
			ck_assert_str_eq(outs[i].block_reason, "wallet_empty");
		}
	}
	ck_assert_uint_eq(poor_allowed, 10);
}
END_TEST

START_TEST(test_batch_errors_stay_in_their_entry)
{
	enum { N = 9 };
	sc_check_req reqs[N];
	sc_decision outs[N], one;
	int rcs[N];
	uint64_t agent = new_agent("errs", USD(10));
	size_t i;

	for (i = 0; i < N; i++)
		reqs[i] = (sc_check_req){ .agent_id = agent, .action = "x", .estimated_cost = 100 };
	reqs[2].action = NULL;       /* refused by the library, never sent */
	reqs[5].estimated_cost = -1; /* refused by the daemon */
	batch(reqs, N, outs, rcs);
	for (i = 0; i < N; i++) {
		if (i == 2)
			ck_assert_int_eq(rcs[i], SC_EINVAL);
		else if (i == 5)
			ck_assert_int_eq(rcs[i], SC_EINVAL);
		else
			ck_assert_msg(rcs[i] == 0 && outs[i].allowed, "request %zu: %s", i,
			              sc_err_name(rcs[i]));
	}
	ck_assert_msg(strstr(sc_last_error(c), "estimated_cost") != NULL, "message: %s",
	              sc_last_error(c));
	ck_assert_int_eq(outs[8].available, USD(10) - 7 * 100);
	/* the connection goes on with ordinary calls and msgids */
	OK(sc_check(c, &reqs[0], &one));
	ck_assert(one.allowed);
	ck_assert_uint_gt(one.transaction_id, outs[8].transaction_id);
	OK(sc_check_batch(c, reqs, 0, NULL, NULL));
	ck_assert_int_eq(sc_check_batch(c, reqs, 1, NULL, rcs), SC_EINVAL);
}
END_TEST

START_TEST(test_batch_big_requests_do_not_block)
{
	enum { N = 2 * SC_CHECK_BATCH_WINDOW };
	static sc_check_req reqs[N];
	static sc_decision outs[N];
	static int rcs[N];
	static char value[401];
	sc_meta meta[] = { { "note", value } };
	uint64_t agent = new_agent("big", USD(100));
	size_t i;

	memset(value, 'v', sizeof(value) - 1);
	for (i = 0; i < N; i++)
		reqs[i] = (sc_check_req){ .agent_id = agent, .action = "llm.chat",
			                  .estimated_cost = 1, .metadata = meta, .n_metadata = 1 };
	batch(reqs, N, outs, rcs);
	for (i = 0; i < N; i++)
		ck_assert_msg(rcs[i] == 0 && outs[i].allowed, "request %zu: %s %s", i,
		              sc_err_name(rcs[i]), sc_last_error(c));
	ck_assert_int_eq(outs[N - 1].available, USD(100) - N);
}
END_TEST

START_TEST(test_check_metadata_limits)
{
	static char value[600];
	sc_meta meta[] = { { "note", value }, { "model", "gpt" } };
	sc_check_req req = { .agent_id = new_agent("meta", USD(1)), .action = "x",
		             .estimated_cost = 1, .metadata = meta, .n_metadata = 2 };
	sc_decision dec;
	sc_wallet w;
	int rc;

	memset(value, 'v', 490); /* with the keys and headers: just under 512 packed */
	OK(sc_check(c, &req, &dec));
	ck_assert(dec.allowed);
	memset(value, 'v', sizeof(value) - 1);
	rc = sc_check(c, &req, &dec);
	ck_assert_int_eq(rc, SC_EINVAL);
	ck_assert_msg(strstr(sc_last_error(c), "metadata") != NULL, "%s", sc_last_error(c));
	meta[1].key = "";
	ck_assert_int_eq(sc_check(c, &req, &dec), SC_EINVAL);
	ck_assert_msg(strstr(sc_last_error(c), "entry 1") != NULL, "%s", sc_last_error(c));
	req.metadata = NULL;
	ck_assert_int_eq(sc_check(c, &req, &dec), SC_EINVAL);
	/* the refused checks held nothing */
	OK(sc_wallets_get(c, req.agent_id, &w));
	ck_assert_int_eq(w.held, 1);
}
END_TEST

START_TEST(test_batch_daemon_gone)
{
	enum { N = 5 };
	sc_check_req reqs[N];
	sc_decision outs[N];
	int rcs[N], rc;
	uint64_t agent = new_agent("gone", USD(1));
	size_t i;

	for (i = 0; i < N; i++)
		reqs[i] = (sc_check_req){ .agent_id = agent, .action = "x", .estimated_cost = 1 };
	ck_assert_int_eq(test_daemon_kill(&d, SIGKILL), 128 + SIGKILL);
	rc = sc_check_batch(c, reqs, N, outs, rcs);
	ck_assert_msg(rc == SC_ECLOSED || rc == -ECONNRESET || rc == -EPIPE, "got %s",
	              sc_err_name(rc));
	for (i = 0; i < N; i++)
		ck_assert_int_eq(rcs[i], rc);
	ck_assert_int_eq(sc_check_batch(c, reqs, N, outs, rcs), SC_ECLOSED);
	ck_assert_int_eq(rcs[N - 1], SC_ECLOSED);
}
END_TEST

Suite *batch_suite(void)
{
	Suite *s = suite_create("batch");
	TCase *tc = test_add_tcase_tmp(s, "batch", setup, teardown, TEST_TIMEOUT_S);

	tcase_add_test(tc, test_batch_larger_than_window_in_order);
	tcase_add_test(tc, test_batch_blocked_inside);
	tcase_add_test(tc, test_batch_errors_stay_in_their_entry);
	tcase_add_test(tc, test_batch_big_requests_do_not_block);
	tcase_add_test(tc, test_check_metadata_limits);
	tcase_add_test(tc, test_batch_daemon_gone);
	return s;
}
