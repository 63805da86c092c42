/*
 * check_gate.c: unit tests of the gating engine (sidecard/engine/gate.c) on top of
 * the state model (sidecard/store/state.c), written from protocol/PROTOCOL.md
 * ("Gating semantics") and gate.h alone, independently of the code.
 *
 * This file tests the decision of a check: action and pattern syntax, UTC
 * days and the hourly window, every block reason at its boundary and the
 * order they are tried in, unlimited wallets, the most specific rule, daily
 * limits, critical and high priority, and the header counters. It builds the
 * "gate" suite; the suite's other test cases live beside it, each file adding
 * its own (suites.h): check_gate_holds.c, check_gate_bounds.c and
 * check_gate_sweep.c.
 *
 * Every test runs on a fresh state segment in its own temporary directory
 * (removed in teardown), with small capacities and an explicit clock: time
 * is the `now` argument of gate_check/gate_report/gate_expire, starting at
 * T0 = Monday 2026-11-23T10:00:00Z and moved forward on purpose. Nothing
 * sleeps.
 *
 * Thread: the test thread plays the daemon's loop thread, the state's only
 * writer, so it registers with liburcu in setup and unregisters in teardown.
 * It reads the segment's records directly (no concurrent writer exists).
 */
#include <check.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "gate.h"
#include "shm.h"
#include "sidecard.h"
#include "state.h"
#include "suites.h"
#include "gate_fixture.h"
#include "testutil.h"

/* ====================================================================== */
/* pure helpers */

/*
 * Interpretation (PROTOCOL.md "Action patterns"): an action is 1 to 127
 * printable ASCII characters (0x21..0x7e: space and control bytes are out)
 * and never contains '*'. A pattern is "*", "<action>.*" where <action> is
 * itself a valid action (so ".*" with its empty prefix is invalid), or an
 * exact action; '*' appears nowhere else. The 127-byte limit covers the
 * whole pattern, ".*" included.
 */
START_TEST(test_action_valid_boundaries)
{
	char buf[200];

	memset(buf, 'a', sizeof buf);
	ck_assert_int_eq(state_action_valid(buf, 1), 1);
	ck_assert_int_eq(state_action_valid(buf, 127), 1);
	ck_assert_int_eq(state_action_valid(buf, 128), 0);
	ck_assert_int_eq(state_action_valid("", 0), 0);
	ck_assert_int_eq(state_action_valid("openai.chat", 11), 1);
	ck_assert_int_eq(state_action_valid("~!#$%&'()+,-/:;<=>?@[]^_`{|}", 28), 1);
	ck_assert_int_eq(state_action_valid("a b", 3), 0);
	ck_assert_int_eq(state_action_valid(" ab", 3), 0);
	ck_assert_int_eq(state_action_valid("ab ", 3), 0);
	ck_assert_int_eq(state_action_valid("a*", 2), 0);
	ck_assert_int_eq(state_action_valid("*", 1), 0);
	ck_assert_int_eq(state_action_valid("a.*", 3), 0);
	ck_assert_int_eq(state_action_valid("a\tb", 3), 0);
	ck_assert_int_eq(state_action_valid("a\x7f", 2), 0);
	ck_assert_int_eq(state_action_valid("caf\xc3\xa9", 5), 0);
	ck_assert_int_eq(state_action_valid("ab\0c", 4), 0);
	/* only len bytes count: the string need not be NUL-terminated */
	ck_assert_int_eq(state_action_valid("ab c", 2), 1);
}
END_TEST

START_TEST(test_pattern_valid_forms)
{
	char buf[200];

	ck_assert_int_eq(state_pattern_valid("*", 1), 1);
	ck_assert_int_eq(state_pattern_valid("a.*", 3), 1);
	ck_assert_int_eq(state_pattern_valid("openai.*", 8), 1);
	ck_assert_int_eq(state_pattern_valid("openai.chat.*", 13), 1);
	ck_assert_int_eq(state_pattern_valid("flight.booking", 14), 1);
	ck_assert_int_eq(state_pattern_valid("a", 1), 1);

	ck_assert_int_eq(state_pattern_valid("", 0), 0);
	ck_assert_int_eq(state_pattern_valid("a*", 2), 0);
	ck_assert_int_eq(state_pattern_valid(".*", 2), 0); /* empty prefix */
	ck_assert_int_eq(state_pattern_valid("*a", 2), 0);
	ck_assert_int_eq(state_pattern_valid("*.a", 3), 0);
	ck_assert_int_eq(state_pattern_valid("a*b", 3), 0);
	ck_assert_int_eq(state_pattern_valid("a.*.b", 5), 0);
	ck_assert_int_eq(state_pattern_valid("a.**", 4), 0);
	ck_assert_int_eq(state_pattern_valid("**", 2), 0);
	ck_assert_int_eq(state_pattern_valid("a .*", 4), 0);
	ck_assert_int_eq(state_pattern_valid("a b", 3), 0);
	ck_assert_int_eq(state_pattern_valid("a\n", 2), 0);

	memset(buf, 'a', sizeof buf);
	ck_assert_int_eq(state_pattern_valid(buf, 127), 1);
	ck_assert_int_eq(state_pattern_valid(buf, 128), 0);
	/* 125 + ".*" = 127 bytes: fits; 126 + ".*" = 128: too long */
	buf[125] = '.';
	buf[126] = '*';
	ck_assert_int_eq(state_pattern_valid(buf, 127), 1);
	memset(buf, 'a', sizeof buf);
	buf[126] = '.';
	buf[127] = '*';
	ck_assert_int_eq(state_pattern_valid(buf, 128), 0);
}
END_TEST

START_TEST(test_pattern_rank_specificity_order)
{
	const char *act = "openai.chat.x";
	size_t alen = strlen(act);
	int star = state_pattern_rank("*", 1, act, alen);
	int p_short = state_pattern_rank("openai.*", 8, act, alen);
	int p_long = state_pattern_rank("openai.chat.*", 13, act, alen);
	int exact = state_pattern_rank(act, alen, act, alen);

	ck_assert_int_eq(star, 0);
	ck_assert_int_ge(p_short, 1);
	ck_assert_int_gt(p_long, p_short);
	ck_assert_int_eq(exact, INT_MAX);
	/* 1 + the prefix length, whether or not the prefix counts its '.' */
	ck_assert_msg(p_short == 1 + 6 || p_short == 1 + 7, "rank of openai.* is %d", p_short);
	ck_assert_msg(p_long == 1 + 11 || p_long == 1 + 12, "rank of openai.chat.* is %d", p_long);
}
END_TEST

START_TEST(test_pattern_rank_matching)
{
	/* a prefix pattern needs a dot-separated continuation */
	ck_assert_int_eq(state_pattern_rank("openai.*", 8, "openai", 6), -1);
	ck_assert_int_gt(state_pattern_rank("openai.*", 8, "openai.chat", 11), 0);
	ck_assert_int_gt(state_pattern_rank("openai.*", 8, "openai.chat.stream", 18), 0);
	ck_assert_int_eq(state_pattern_rank("openai.*", 8, "openaix.chat", 12), -1);
	ck_assert_int_eq(state_pattern_rank("openai.*", 8, "xopenai.chat", 12), -1);
	ck_assert_int_eq(state_pattern_rank("openai.chat.*", 13, "openai.chat", 11), -1);
	/* exact patterns match only themselves */
	ck_assert_int_eq(state_pattern_rank("flight.booking", 14, "flight.booking", 14), INT_MAX);
	ck_assert_int_eq(state_pattern_rank("flight.booking", 14, "flight.bookings", 15), -1);
	ck_assert_int_eq(state_pattern_rank("flight.booking", 14, "flight.book", 11), -1);
	ck_assert_int_eq(state_pattern_rank("openai", 6, "openai.chat", 11), -1);
	/* "*" matches everything */
	ck_assert_int_eq(state_pattern_rank("*", 1, "x", 1), 0);
	ck_assert_int_eq(state_pattern_rank("*", 1, "openai", 6), 0);
	/* lengths are honoured, not NUL terminators */
	ck_assert_int_eq(state_pattern_rank("openai.*", 8, "openai.chat", 6), -1);
}
END_TEST

START_TEST(test_utc_day_and_minute_boundaries)
{
	ck_assert_int_eq(gate_day(0), 0);
	ck_assert_int_eq(gate_day(1), 0);
	ck_assert_int_eq(gate_day(DAY - 1), 0);
	ck_assert_int_eq(gate_day(DAY), 1);
	ck_assert_int_eq(gate_day(T0), T0_DAY);
	ck_assert_int_eq(gate_day(MIDNIGHT - 1), T0_DAY);
	ck_assert_int_eq(gate_day(MIDNIGHT), T0_DAY + 1);
	ck_assert_int_eq(gate_minute(0), 0);
	ck_assert_int_eq(gate_minute(MIN - 1), 0);
	ck_assert_int_eq(gate_minute(MIN), 1);
	ck_assert_int_eq(gate_minute(T0), T0_MINUTE);
	ck_assert_int_eq(gate_minute(T0 - 1), T0_MINUTE - 1);
	ck_assert_int_eq(gate_minute(T0 + MIN - 1), T0_MINUTE);
	/* 2100-01-01T00:00:00Z still fits and stays positive */
	ck_assert_int_eq(gate_day(INT64_C(4102444800) * SEC), 47482);
	ck_assert_int_eq(gate_minute(INT64_C(4102444800) * SEC), 68374080);
}
END_TEST

START_TEST(test_daily_used_resets_on_new_utc_day)
{
	ck_assert_int_eq(gate_daily_used(T0_DAY, 50, 10, gate_day(T0)), 60);
	ck_assert_int_eq(gate_daily_used(T0_DAY, 50, 0, gate_day(MIDNIGHT - 1)), 50);
	/* spent on an earlier day no longer counts; holds always do */
	ck_assert_int_eq(gate_daily_used(T0_DAY, 50, 0, gate_day(MIDNIGHT)), 0);
	ck_assert_int_eq(gate_daily_used(T0_DAY, 50, 10, gate_day(MIDNIGHT)), 10);
	ck_assert_int_eq(gate_daily_used(T0_DAY - 1, 50, 10, gate_day(T0)), 10);
	ck_assert_int_eq(gate_daily_used(0, 0, 0, gate_day(T0)), 0);
}
END_TEST

START_TEST(test_rate_count_sliding_window)
{
	static struct shm_rule r;
	int32_t b = state_window_bucket(T0);

	/* T0 is the first instant of its four-minute bucket */
	ck_assert_int_eq(b, T0_MINUTE / 4);
	ck_assert_int_eq(state_window_bucket(T0 - 1), b - 1);
	ck_assert_int_eq(state_window_bucket(T0 + 4 * MIN - 1), b);
	memset(&r, 0, sizeof r);
	ck_assert_int_eq(gate_rate_count(&r, T0), 0);
	r.hourly_limit = 100;
	r.rate.newest = b;
	r.rate.n[b % SHM_WINDOW_BUCKETS] = 3;
	r.rate.n[(b - 15) % SHM_WINDOW_BUCKETS] = 2; /* the oldest bucket counted at T0 */
	ck_assert_int_eq(gate_rate_count(&r, T0), 5);
	ck_assert_int_eq(gate_rate_count(&r, T0 + 3 * MIN + 59 * SEC), 5);
	/* bucket b + 1 reuses the index of b - 15: stale, not counted */
	ck_assert_int_eq(gate_rate_count(&r, T0 + 4 * MIN), 3);
	/* bucket b counts until the bucket 15 after it ends: 64 minutes from T0 */
	ck_assert_int_eq(gate_rate_count(&r, T0 + 60 * MIN), 3);
	ck_assert_int_eq(gate_rate_count(&r, T0 + 63 * MIN + 59 * SEC), 3);
	ck_assert_int_eq(gate_rate_count(&r, T0 + 64 * MIN), 0);
	/* a clock that stepped back behind the newest bucket counts every bucket held */
	ck_assert_int_eq(gate_rate_count(&r, T0 - 10 * MIN), 5);
	ck_assert_int_eq(gate_rate_count(&r, T0 + 3 * DAY), 0);
}
END_TEST

/* ====================================================================== */
/* block reasons, one by one, each at its boundary */

START_TEST(test_agent_not_found_has_no_transaction)
{
	struct gate_decision d;
	uint64_t next = g_m->hdr->next_txn_id;

	simple_agent("a", 1000, NULL);
	ck_assert_int_eq(check_req(999999, "x", 1, NULL, T0, &d), 0);
	ck_assert_int_eq(d.allowed, 0);
	ck_assert_str_eq(d.block_reason, "agent_not_found");
	ck_assert_uint_eq(d.txn_id, 0);
	ck_assert_uint_eq(g_m->hdr->next_txn_id, next);
}
END_TEST

START_TEST(test_agent_frozen_blocks)
{
	uint32_t s;
	uint64_t a = simple_agent("a", 1000, &s);
	uint64_t t;
	struct shm_txn *tx;

	set_status(s, SC_STATUS_FROZEN);
	t = BLOCK(a, "x", 1, T0, "agent_frozen");
	ck_assert_uint_ne(t, 0);
	tx = state_txn_by_id(g_st, t);
	ck_assert_ptr_nonnull(tx);
	ck_assert_int_eq(tx->status, SC_TXN_BLOCKED);
	ck_assert_str_eq(tx->block_reason, "agent_frozen");
	ck_assert_int_eq(AW(s)->held, 0);
	set_status(s, SC_STATUS_ACTIVE);
	ALLOW(a, "x", 1, T0);
}
END_TEST

START_TEST(test_wallet_debt_blocks_until_repaid)
{
	uint32_t s;
	uint64_t a = simple_agent("a", 100, &s);
	uint64_t t = ALLOW(a, "x", 50, T0);
	struct gate_settlement st = SETTLE(t, SC_OUTCOME_SUCCESS, 1, 150, T0 + SEC);

	ck_assert_int_eq(st.balance, 0);
	ck_assert_int_eq(st.debt, 50);
	BLOCK(a, "x", 1, T0 + 2 * SEC, "wallet_debt");
	/* funds alone do not lift the block: the debt must be repaid */
	wallet_update(s, 0, SC_WALLET_SET_BALANCE, 1000, 0, 0, 0);
	BLOCK(a, "x", 1, T0 + 3 * SEC, "wallet_debt");
	wallet_update(s, 0, SC_WALLET_SET_DEBT, 0, 0, 0, 0);
	ck_assert_int_eq(AW(s)->debt, 0);
	ALLOW(a, "x", 1, T0 + 4 * SEC);
}
END_TEST

START_TEST(test_org_debt_blocks_until_repaid)
{
	uint32_t s;
	uint64_t a = simple_agent("a", 10000, &s);
	uint64_t t;

	org_fund(100, 0, 0);
	t = ALLOW(a, "x", 50, T0);
	SETTLE(t, SC_OUTCOME_SUCCESS, 1, 150, T0 + SEC);
	ck_assert_int_eq(OW()->balance, 0);
	ck_assert_int_eq(OW()->debt, 50);
	ck_assert_int_eq(AW(s)->balance, 10000 - 150);
	ck_assert_int_eq(AW(s)->debt, 0);
	BLOCK(a, "x", 1, T0 + 2 * SEC, "org_debt");
	wallet_update(g_org, 1, SC_WALLET_SET_BALANCE | SC_WALLET_SET_DEBT, 1000, 0, 0, 0);
	ALLOW(a, "x", 1, T0 + 3 * SEC);
}
END_TEST

START_TEST(test_org_max_per_txn)
{
	uint64_t a = simple_agent("a", 10000, NULL);

	org_fund(10000, 100, 0);
	ALLOW(a, "x", 100, T0);
	BLOCK(a, "x", 101, T0, "org:max_per_txn");
}
END_TEST

START_TEST(test_org_daily_spend_limit_across_agents)
{
	uint64_t a = simple_agent("a", 10000, NULL);
	uint64_t b = simple_agent("b", 10000, NULL);

	org_fund(10000, 0, 100);
	ALLOW(a, "x", 60, T0);
	BLOCK(b, "x", 50, T0, "org:daily_spend_limit");
	ALLOW(b, "x", 40, T0);
	BLOCK(a, "x", 1, T0, "org:daily_spend_limit");
}
END_TEST

START_TEST(test_org_empty_across_agents)
{
	uint64_t a = simple_agent("a", 10000, NULL);
	uint64_t b = simple_agent("b", 10000, NULL);

	org_fund(100, 0, 0);
	ALLOW(a, "x", 70, T0);
	ck_assert_int_eq(OW()->held, 70);
	BLOCK(b, "x", 31, T0, "org_empty");
	ALLOW(b, "x", 30, T0);
	ck_assert_int_eq(OW()->held, 100);
	BLOCK(a, "x", 1, T0, "org_empty");
}
END_TEST

START_TEST(test_wallet_max_per_txn)
{
	uint64_t a = agent_new("a", SC_PRIORITY_NORMAL, 1000, 100, 0, NULL, 0, NULL);

	ALLOW(a, "x", 100, T0);
	BLOCK(a, "x", 101, T0, "wallet:max_per_txn");
}
END_TEST

START_TEST(test_wallet_daily_spend_limit)
{
	uint64_t a = agent_new("a", SC_PRIORITY_NORMAL, 1000, 0, 100, NULL, 0, NULL);

	ALLOW(a, "x", 60, T0);
	BLOCK(a, "x", 50, T0, "wallet:daily_spend_limit");
	ALLOW(a, "x", 40, T0);
	BLOCK(a, "x", 1, T0, "wallet:daily_spend_limit");
}
END_TEST

START_TEST(test_wallet_empty)
{
	uint32_t s;
	uint64_t a = simple_agent("a", 100, &s);
	struct gate_decision d;

	ALLOW(a, "x", 60, T0);
	BLOCK(a, "x", 41, T0, "wallet_empty");
	ck_assert_int_eq(check_req(a, "x", 40, NULL, T0, &d), 0);
	ck_assert_int_eq(d.allowed, 1);
	ck_assert_int_eq(d.available, 0);
	ck_assert_int_eq(check_req(a, "x", 1, NULL, T0, &d), 0);
	ck_assert_int_eq(d.allowed, 0);
	ck_assert_str_eq(d.block_reason, "wallet_empty");
	ck_assert_int_eq(d.available, 0);
	ck_assert_int_eq(AW(s)->held, 100);
}
END_TEST

START_TEST(test_rule_max_cost_per_txn)
{
	struct state_rule_spec r = rspec("OpenAI cap", "openai.*", 10, 0, 0);
	uint64_t a = agent_new("a", SC_PRIORITY_NORMAL, 1000, 0, 0, &r, 1, NULL);

	ALLOW(a, "openai.chat", 10, T0);
	BLOCK(a, "openai.chat", 11, T0, "rule:OpenAI cap:max_cost_per_txn");
	/* an action no rule matches has no rule limits */
	ALLOW(a, "anthropic.chat", 11, T0);
}
END_TEST

START_TEST(test_rule_daily_spend_limit)
{
	struct state_rule_spec r = rspec("cap", "openai.*", 0, 100, 0);
	uint64_t a = agent_new("a", SC_PRIORITY_NORMAL, 1000, 0, 0, &r, 1, NULL);

	ALLOW(a, "openai.chat", 60, T0);
	BLOCK(a, "openai.embed", 50, T0, "rule:cap:daily_spend_limit");
	ALLOW(a, "openai.embed", 40, T0);
	BLOCK(a, "openai.chat", 1, T0, "rule:cap:daily_spend_limit");
	ALLOW(a, "other", 500, T0);
}
END_TEST

START_TEST(test_rule_hourly_rate_limit)
{
	struct state_rule_spec r = rspec("cap", "openai.*", 0, 0, 3);
	uint32_t s;
	uint64_t a = agent_new("a", SC_PRIORITY_NORMAL, 1000, 0, 0, &r, 1, &s);

	ALLOW(a, "openai.chat", 1, T0);
	ALLOW(a, "openai.chat", 1, T0 + MIN);
	ALLOW(a, "openai.embed", 1, T0 + 2 * MIN);
	BLOCK(a, "openai.chat", 1, T0 + 3 * MIN, "rule:cap:hourly_rate_limit");
	ck_assert_int_eq(gate_rate_count(&g_m->rules[rule_slot(s, "cap")], T0 + 3 * MIN), 3);
}
END_TEST

START_TEST(test_blocked_decision_is_recorded)
{
	uint32_t s;
	uint64_t a = simple_agent("a", 100, &s);
	uint64_t blocked0 = g_m->hdr->blocked;
	uint64_t t = BLOCK(a, "x.y", 101, T0, "wallet_empty");
	struct shm_txn *tx = state_txn_by_id(g_st, t);

	ck_assert_ptr_nonnull(tx);
	ck_assert_int_eq(tx->status, SC_TXN_BLOCKED);
	ck_assert_str_eq(tx->block_reason, "wallet_empty");
	ck_assert_str_eq(tx->action, "x.y");
	ck_assert_uint_eq(tx->agent_id, a);
	ck_assert_int_eq(tx->estimate, 101);
	ck_assert_int_eq(tx->charged, 0);
	ck_assert_int_eq(tx->created_at, T0);
	ck_assert_int_eq(AW(s)->held, 0);
	ck_assert_int_eq(AW(s)->balance, 100);
	ck_assert_uint_eq(g_m->hdr->blocked, blocked0 + 1);
	ck_assert_int_eq(state_hold_by_txn(g_st, t, &s), SC_ENOTFOUND);
}
END_TEST

/* ====================================================================== */
/* evaluation order: the earlier step wins */

START_TEST(test_order_frozen_beats_debt)
{
	uint32_t s;
	uint64_t a = simple_agent("a", 100, &s);
	uint64_t t = ALLOW(a, "x", 50, T0);

	SETTLE(t, SC_OUTCOME_SUCCESS, 1, 300, T0);
	set_status(s, SC_STATUS_FROZEN);
	BLOCK(a, "x", 1, T0, "agent_frozen");
	set_status(s, SC_STATUS_ACTIVE);
	BLOCK(a, "x", 1, T0, "wallet_debt");
}
END_TEST

START_TEST(test_order_wallet_debt_beats_org_debt)
{
	uint32_t s;
	uint64_t a = simple_agent("a", 100, &s);
	uint64_t t;

	org_fund(100, 0, 0);
	t = ALLOW(a, "x", 50, T0);
	SETTLE(t, SC_OUTCOME_SUCCESS, 1, 300, T0);
	ck_assert_int_eq(AW(s)->debt, 200);
	ck_assert_int_eq(OW()->debt, 200);
	BLOCK(a, "x", 1, T0, "wallet_debt");
	wallet_update(s, 0, SC_WALLET_SET_BALANCE | SC_WALLET_SET_DEBT, 1000, 0, 0, 0);
	BLOCK(a, "x", 1, T0, "org_debt");
}
END_TEST

/*
 * Every limit of steps 5-7 is violated at once; lifting them one at a time
 * must reveal the reasons in the documented order. Blocked checks do not
 * count, so the rule's single allowed call stays the only one.
 */
START_TEST(test_order_steps_5_to_7_peeled_one_by_one)
{
	struct state_rule_spec r = rspec("r", "*", 0, 0, 1);
	struct state_rule_spec upd;
	uint32_t s, rs;
	uint64_t a = agent_new("a", SC_PRIORITY_NORMAL, 1000, 0, 0, &r, 1, &s);
	uint64_t t = ALLOW(a, "a.b", 1, T0);
	uint64_t rule_id;
	int rc;

	SETTLE(t, SC_OUTCOME_SUCCESS, 0, 0, T0);
	rs = rule_slot(s, "r");
	rule_id = g_m->rules[rs].id;
	org_fund(150, 100, 150);
	wallet_update(s, 0,
	              SC_WALLET_SET_BALANCE | SC_WALLET_SET_MAX_PER_TXN |
	                      SC_WALLET_SET_DAILY_SPEND_LIMIT,
	              150, 100, 150, 0);
	memset(&upd, 0, sizeof upd);
	upd.set = STATE_RULE_SET_MAX_COST | STATE_RULE_SET_DAILY;
	upd.max_cost_per_txn = 10;
	upd.daily_limit = 20;
	rc = state_rule_update(g_st, s, rule_id, &upd, &rs, g_err, sizeof g_err);
	ck_assert_msg(rc == 0, "state_rule_update: %d (%s)", rc, g_err);

	BLOCK(a, "a.b", 200, T0 + MIN, "org:max_per_txn");
	wallet_update(g_org, 1, SC_WALLET_SET_MAX_PER_TXN, 0, 0, 0, 0);
	BLOCK(a, "a.b", 200, T0 + MIN, "org:daily_spend_limit");
	wallet_update(g_org, 1, SC_WALLET_SET_DAILY_SPEND_LIMIT, 0, 0, 0, 0);
	BLOCK(a, "a.b", 200, T0 + MIN, "org_empty");
	wallet_update(g_org, 1, SC_WALLET_SET_BALANCE, 100000, 0, 0, 0);
	BLOCK(a, "a.b", 200, T0 + MIN, "wallet:max_per_txn");
	wallet_update(s, 0, SC_WALLET_SET_MAX_PER_TXN, 0, 0, 0, 0);
	BLOCK(a, "a.b", 200, T0 + MIN, "wallet:daily_spend_limit");
	wallet_update(s, 0, SC_WALLET_SET_DAILY_SPEND_LIMIT, 0, 0, 0, 0);
	BLOCK(a, "a.b", 200, T0 + MIN, "wallet_empty");
	wallet_update(s, 0, SC_WALLET_SET_BALANCE, 100000, 0, 0, 0);
	BLOCK(a, "a.b", 200, T0 + MIN, "rule:r:max_cost_per_txn");
	upd.set = STATE_RULE_SET_MAX_COST;
	upd.max_cost_per_txn = 0;
	ck_assert_int_eq(state_rule_update(g_st, s, rule_id, &upd, &rs, g_err, sizeof g_err), 0);
	BLOCK(a, "a.b", 200, T0 + MIN, "rule:r:daily_spend_limit");
	upd.set = STATE_RULE_SET_DAILY;
	upd.daily_limit = 0;
	ck_assert_int_eq(state_rule_update(g_st, s, rule_id, &upd, &rs, g_err, sizeof g_err), 0);
	BLOCK(a, "a.b", 200, T0 + MIN, "rule:r:hourly_rate_limit");
	upd.set = STATE_RULE_SET_HOURLY;
	upd.hourly_limit = 0;
	ck_assert_int_eq(state_rule_update(g_st, s, rule_id, &upd, &rs, g_err, sizeof g_err), 0);
	ALLOW(a, "a.b", 200, T0 + MIN);
}
END_TEST

START_TEST(test_order_org_debt_beats_org_limits)
{
	uint32_t s;
	uint64_t a = simple_agent("a", 100000, &s);
	uint64_t t;

	org_fund(100, 0, 0);
	t = ALLOW(a, "x", 50, T0);
	SETTLE(t, SC_OUTCOME_SUCCESS, 1, 300, T0);
	wallet_update(g_org, 1, SC_WALLET_SET_MAX_PER_TXN, 0, 1, 0, 0);
	BLOCK(a, "x", 5, T0, "org_debt");
}
END_TEST

/* ====================================================================== */
/* unlimited */

START_TEST(test_zero_limits_are_unlimited)
{
	struct state_rule_spec r = rspec("all", "*", 0, 0, 0);
	uint32_t s;
	uint64_t a = agent_new("a", SC_PRIORITY_NORMAL, INT64_C(1000000000000), 0, 0, &r, 1, &s);

	for (int i = 0; i < 5; i++)
		ALLOW(a, "x", INT64_C(100000000000), T0);
	for (int i = 0; i < 200; i++)
		SETTLE(ALLOW(a, "x", 1, T0), SC_OUTCOME_FAILURE, 0, 0, T0);
	ck_assert_int_eq(AW(s)->held, INT64_C(500000000000));
}
END_TEST

START_TEST(test_org_wallet_gates_nothing_until_limited)
{
	uint32_t s;
	uint64_t a = simple_agent("a", 100000, &s);
	uint64_t t;

	/* limits without a balance leave the org wallet unlimited */
	wallet_update(g_org, 1, SC_WALLET_SET_MAX_PER_TXN | SC_WALLET_SET_DAILY_SPEND_LIMIT, 0, 10,
	              10, 0);
	ck_assert_uint_eq(OW()->limited, 0);
	t = ALLOW(a, "x", 1000, T0);
	SETTLE(t, SC_OUTCOME_SUCCESS, 0, 0, T0);
	ck_assert_int_eq(OW()->balance, 0);
	ck_assert_int_eq(OW()->debt, 0);
	ck_assert_int_eq(AW(s)->balance, 100000 - 1000);
	wallet_update(g_org, 1, SC_WALLET_SET_BALANCE, 1000000, 0, 0, 0);
	ck_assert_uint_eq(OW()->limited, 1);
	BLOCK(a, "x", 1000, T0, "org:max_per_txn");
}
END_TEST

/* ====================================================================== */
/* the most specific rule, and only it */

START_TEST(test_most_specific_rule_only)
{
	struct state_rule_spec r[4];
	uint32_t s;
	uint64_t a, t;
	struct shm_txn *tx;

	r[0] = rspec("all", "*", 1, 0, 1);
	r[1] = rspec("oa", "openai.*", 100, 0, 0);
	r[2] = rspec("chat", "openai.chat", 1000, 0, 0);
	r[3] = rspec("stream", "openai.chat.*", 10, 0, 0);
	a = agent_new("a", SC_PRIORITY_NORMAL, 1000000, 0, 0, r, 4, &s);

	/* the "*" rule's tiny limits never touch an exactly matched action */
	for (int i = 0; i < 3; i++) {
		t = ALLOW(a, "openai.chat", 500, T0);
		tx = state_txn_by_id(g_st, t);
		ck_assert_ptr_nonnull(tx);
		ck_assert_uint_eq(tx->rule_id, g_m->rules[rule_slot(s, "chat")].id);
	}
	BLOCK(a, "openai.chat", 1001, T0, "rule:chat:max_cost_per_txn");
	ALLOW(a, "openai.embed", 100, T0);
	BLOCK(a, "openai.embed", 101, T0, "rule:oa:max_cost_per_txn");
	ALLOW(a, "openai.chat.stream", 10, T0);
	BLOCK(a, "openai.chat.stream", 11, T0, "rule:stream:max_cost_per_txn");
	/* "openai" itself is not under "openai.*" */
	ALLOW(a, "openai", 1, T0);
	BLOCK(a, "openai", 1, T0, "rule:all:hourly_rate_limit");
	BLOCK(a, "anthropic.x", 2, T0, "rule:all:max_cost_per_txn");

	ck_assert_uint_eq(state_rule_match(g_st, s, "openai.chat", 11), rule_slot(s, "chat"));
	ck_assert_uint_eq(state_rule_match(g_st, s, "openai.chat.x", 13), rule_slot(s, "stream"));
	ck_assert_uint_eq(state_rule_match(g_st, s, "openai.x", 8), rule_slot(s, "oa"));
	ck_assert_uint_eq(state_rule_match(g_st, s, "openai", 6), rule_slot(s, "all"));
}
END_TEST

START_TEST(test_no_matching_rule_means_no_rule)
{
	struct state_rule_spec r = rspec("oa", "openai.*", 1, 1, 1);
	uint32_t s;
	uint64_t a = agent_new("a", SC_PRIORITY_NORMAL, 1000, 0, 0, &r, 1, &s);
	uint64_t t = ALLOW(a, "tool.search", 500, T0);
	struct shm_txn *tx = state_txn_by_id(g_st, t);
	uint32_t hs;

	ck_assert_uint_eq(state_rule_match(g_st, s, "tool.search", 11), SHM_NONE);
	ck_assert_ptr_nonnull(tx);
	ck_assert_uint_eq(tx->rule_id, 0);
	ck_assert_int_eq(state_hold_by_txn(g_st, t, &hs), 0);
	ck_assert_uint_eq(g_m->holds[hs].rule_slot, SHM_NONE);
	ck_assert_uint_eq(g_m->holds[hs].rule_id, 0);
	ck_assert_int_eq(g_m->rules[rule_slot(s, "oa")].held, 0);
}
END_TEST

/* ====================================================================== */
/* the hourly window */

START_TEST(test_hourly_blocked_checks_do_not_count)
{
	struct state_rule_spec r = rspec("r", "*", 10, 0, 2);
	uint32_t s;
	uint64_t a = agent_new("a", SC_PRIORITY_NORMAL, 100, 0, 0, &r, 1, &s);

	ALLOW(a, "x", 1, T0);
	BLOCK(a, "x", 11, T0, "rule:r:max_cost_per_txn");
	BLOCK(a, "x", 11, T0, "rule:r:max_cost_per_txn");
	BLOCK(a, "x", 1000, T0, "wallet_empty");
	ck_assert_int_eq(gate_rate_count(&g_m->rules[rule_slot(s, "r")], T0), 1);
	ALLOW(a, "x", 1, T0);
	BLOCK(a, "x", 1, T0, "rule:r:hourly_rate_limit");
	BLOCK(a, "x", 1, T0 + 30 * MIN, "rule:r:hourly_rate_limit");
	ck_assert_int_eq(gate_rate_count(&g_m->rules[rule_slot(s, "r")], T0 + 30 * MIN), 2);
	/* the blocked check at +30 min did not count: both slots free once T0's bucket leaves */
	BLOCK(a, "x", 1, T0 + 63 * MIN + 59 * SEC, "rule:r:hourly_rate_limit");
	ALLOW(a, "x", 1, T0 + 64 * MIN);
	ALLOW(a, "x", 1, T0 + 64 * MIN);
}
END_TEST

/*
 * The window is the four-minute bucket of now and the 15 before it: a call
 * counts until the 15th bucket after its own ends, 60 to 64 minutes after
 * it was made. T0 starts a bucket, so its call counts for the full 64
 * minutes; the call at T0 + 30 min (bucket T0 + 28 .. 32) for 62.
 */
START_TEST(test_hourly_calls_age_out_after_60_to_64_minutes)
{
	struct state_rule_spec r = rspec("r", "*", 0, 0, 2);
	uint32_t s;
	uint64_t a = agent_new("a", SC_PRIORITY_NORMAL, 1000, 0, 0, &r, 1, &s);

	ALLOW(a, "x", 1, T0);
	ALLOW(a, "x", 1, T0 + 30 * MIN);
	BLOCK(a, "x", 1, T0 + 59 * MIN, "rule:r:hourly_rate_limit");
	BLOCK(a, "x", 1, T0 + 60 * MIN, "rule:r:hourly_rate_limit");
	BLOCK(a, "x", 1, T0 + 63 * MIN + 59 * SEC, "rule:r:hourly_rate_limit");
	ALLOW(a, "x", 1, T0 + 64 * MIN);
	BLOCK(a, "x", 1, T0 + 64 * MIN, "rule:r:hourly_rate_limit");
	BLOCK(a, "x", 1, T0 + 91 * MIN + 59 * SEC, "rule:r:hourly_rate_limit");
	ALLOW(a, "x", 1, T0 + 92 * MIN);
}
END_TEST

/*
 * Never more than the limit in any 60-minute span: a call at the last
 * instant of a bucket still counts 60 minutes later and is gone one second
 * after that.
 */
START_TEST(test_hourly_window_covers_every_60_minutes)
{
	struct state_rule_spec r = rspec("r", "*", 0, 0, 1);
	uint64_t a = agent_new("a", SC_PRIORITY_NORMAL, 1000, 0, 0, &r, 1, NULL);
	int64_t last = T0 + 4 * MIN - SEC; /* the last second of T0's bucket */

	ALLOW(a, "x", 1, last);
	BLOCK(a, "x", 1, last + 60 * MIN, "rule:r:hourly_rate_limit");
	ALLOW(a, "x", 1, last + 60 * MIN + SEC);
}
END_TEST

/* Buckets are reused modulo 16 buckets (64 minutes): an old bucket must not come back. */
START_TEST(test_hourly_stale_buckets_are_not_counted)
{
	struct state_rule_spec r = rspec("r", "*", 0, 0, 1);
	uint64_t a = agent_new("a", SC_PRIORITY_NORMAL, 1000, 0, 0, &r, 1, NULL);

	ALLOW(a, "x", 1, T0);
	ALLOW(a, "x", 1, T0 + 64 * MIN);
	BLOCK(a, "x", 1, T0 + 64 * MIN + SEC, "rule:r:hourly_rate_limit");
	ALLOW(a, "x", 1, T0 + 128 * MIN);
	BLOCK(a, "x", 1, T0 + 130 * MIN, "rule:r:hourly_rate_limit");
	ALLOW(a, "x", 1, T0 + 3 * DAY);
	BLOCK(a, "x", 1, T0 + 3 * DAY + 3 * MIN, "rule:r:hourly_rate_limit");
}
END_TEST

START_TEST(test_throttled_halves_hourly_limit)
{
	struct state_rule_spec r5 = rspec("r", "*", 0, 0, 5);
	struct state_rule_spec r3 = rspec("r", "*", 0, 0, 3);
	struct state_rule_spec r1 = rspec("r", "*", 0, 0, 1);
	uint32_t s5, s3, s1;
	uint64_t a5 = agent_new("a5", SC_PRIORITY_NORMAL, 1000, 0, 0, &r5, 1, &s5);
	uint64_t a3 = agent_new("a3", SC_PRIORITY_NORMAL, 1000, 0, 0, &r3, 1, &s3);
	uint64_t a1 = agent_new("a1", SC_PRIORITY_NORMAL, 1000, 0, 0, &r1, 1, &s1);

	set_status(s5, SC_STATUS_THROTTLED);
	set_status(s3, SC_STATUS_THROTTLED);
	set_status(s1, SC_STATUS_THROTTLED);
	ALLOW(a5, "x", 1, T0);
	ALLOW(a5, "x", 1, T0);
	BLOCK(a5, "x", 1, T0, "rule:r:hourly_rate_limit");
	ALLOW(a3, "x", 1, T0);
	BLOCK(a3, "x", 1, T0, "rule:r:hourly_rate_limit");
	ALLOW(a1, "x", 1, T0);
	BLOCK(a1, "x", 1, T0, "rule:r:hourly_rate_limit");
	/* back to active: the full limit again */
	set_status(s5, SC_STATUS_ACTIVE);
	ALLOW(a5, "x", 1, T0);
	ALLOW(a5, "x", 1, T0);
	ALLOW(a5, "x", 1, T0);
	BLOCK(a5, "x", 1, T0, "rule:r:hourly_rate_limit");
}
END_TEST

/* ====================================================================== */
/* daily limits: holds count, UTC midnight resets */

START_TEST(test_wallet_daily_counts_holds_and_resets_at_midnight)
{
	uint32_t s;
	uint64_t a = agent_new("a", SC_PRIORITY_NORMAL, 10000, 0, 100, NULL, 0, &s);
	uint64_t t1 = ALLOW(a, "x", 60, T0);
	uint64_t t2;

	BLOCK(a, "x", 50, T0, "wallet:daily_spend_limit");
	t2 = ALLOW(a, "x", 40, T0);
	SETTLE(t1, SC_OUTCOME_SUCCESS, 0, 0, T0 + MIN);
	SETTLE(t2, SC_OUTCOME_SUCCESS, 0, 0, T0 + MIN);
	ck_assert_int_eq(AW(s)->daily_spent, 100);
	ck_assert_int_eq(AW(s)->day, T0_DAY);
	BLOCK(a, "x", 1, MIDNIGHT - 1, "wallet:daily_spend_limit");
	ALLOW(a, "x", 100, MIDNIGHT);
	BLOCK(a, "x", 1, MIDNIGHT, "wallet:daily_spend_limit");
}
END_TEST

START_TEST(test_daily_counts_actual_above_estimate)
{
	uint64_t a = agent_new("a", SC_PRIORITY_NORMAL, 10000, 0, 100, NULL, 0, NULL);
	uint64_t t = ALLOW(a, "x", 10, T0);

	SETTLE(t, SC_OUTCOME_SUCCESS, 1, 95, T0);
	BLOCK(a, "x", 6, T0, "wallet:daily_spend_limit");
	ALLOW(a, "x", 5, T0);
}
END_TEST

START_TEST(test_rule_daily_resets_at_midnight)
{
	struct state_rule_spec r = rspec("r", "api.*", 0, 100, 0);
	uint32_t s, rs;
	uint64_t a = agent_new("a", SC_PRIORITY_NORMAL, 10000, 0, 0, &r, 1, &s);
	uint64_t t1 = ALLOW(a, "api.x", 70, T0);

	rs = rule_slot(s, "r");
	ck_assert_int_eq(g_m->rules[rs].held, 70);
	BLOCK(a, "api.x", 31, T0, "rule:r:daily_spend_limit");
	SETTLE(t1, SC_OUTCOME_SUCCESS, 0, 0, T0);
	ck_assert_int_eq(g_m->rules[rs].held, 0);
	ck_assert_int_eq(g_m->rules[rs].daily_spent, 70);
	ALLOW(a, "api.x", 30, T0);
	BLOCK(a, "api.x", 1, MIDNIGHT - 1, "rule:r:daily_spend_limit");
	ALLOW(a, "api.x", 70, MIDNIGHT + HOUR);
}
END_TEST

START_TEST(test_org_daily_resets_at_midnight)
{
	uint64_t a = simple_agent("a", 10000, NULL);
	uint64_t t;

	org_fund(10000, 0, 100);
	t = ALLOW(a, "x", 100, T0);
	SETTLE(t, SC_OUTCOME_SUCCESS, 0, 0, T0);
	BLOCK(a, "x", 1, MIDNIGHT - 1, "org:daily_spend_limit");
	ALLOW(a, "x", 100, MIDNIGHT);
}
END_TEST

/* ====================================================================== */
/* critical priority */

START_TEST(test_critical_never_blocked_and_warned)
{
	struct state_rule_spec r = rspec("r", "*", 10, 10, 1);
	uint32_t s;
	uint64_t a = agent_new("a", SC_PRIORITY_CRITICAL, 100, 50, 80, &r, 1, &s);
	struct gate_decision d;
	const char *expected[] = {
		"org:max_per_txn",         "org_empty",
		"wallet:max_per_txn",      "wallet:daily_spend_limit",
		"wallet_empty",            "rule:r:max_cost_per_txn",
		"rule:r:daily_spend_limit", "rule:r:hourly_rate_limit",
	};

	org_fund(50, 20, 0);
	/* within every limit: low risk, no warning */
	ck_assert_int_eq(check_req(a, "x", 1, NULL, T0, &d), 0);
	ck_assert_int_eq(d.allowed, 1);
	ck_assert_int_eq(d.risk, GATE_RISK_LOW);
	ck_assert_uint_eq(d.n_warnings, 0);

	ck_assert_int_eq(check_req(a, "x", 200, NULL, T0, &d), 0);
	ck_assert_int_eq(d.allowed, 1);
	ck_assert_str_eq(d.block_reason, "");
	ck_assert_int_eq(d.risk, GATE_RISK_HIGH);
	ck_assert_uint_eq(d.n_warnings, 8);
	for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++)
		ck_assert_msg(has_warning(&d, expected[i]), "warning '%s' missing", expected[i]);
	ck_assert_int_eq(AW(s)->held, 201);
	ck_assert_int_eq(d.available, 100 - 201);
	ck_assert_int_eq(OW()->held, 201);
	ck_assert_int_eq(g_m->rules[rule_slot(s, "r")].held, 201);
}
END_TEST

START_TEST(test_critical_frozen_still_blocked)
{
	uint32_t s;
	uint64_t a = agent_new("a", SC_PRIORITY_CRITICAL, 100, 0, 0, NULL, 0, &s);

	set_status(s, SC_STATUS_FROZEN);
	BLOCK(a, "x", 1, T0, "agent_frozen");
	ck_assert_int_eq(AW(s)->held, 0);
}
END_TEST

START_TEST(test_critical_passes_debt)
{
	uint32_t s;
	uint64_t a = agent_new("a", SC_PRIORITY_CRITICAL, 100, 0, 0, NULL, 0, &s);
	uint64_t t;
	struct gate_decision d;

	org_fund(100, 0, 0);
	t = ALLOW(a, "x", 50, T0);
	SETTLE(t, SC_OUTCOME_SUCCESS, 1, 300, T0);
	ck_assert_int_eq(AW(s)->debt, 200);
	ck_assert_int_eq(OW()->debt, 200);
	ck_assert_int_eq(check_req(a, "x", 10, NULL, T0, &d), 0);
	ck_assert_msg(d.allowed, "critical agent with debt blocked: %s", d.block_reason);
	ck_assert_int_eq(AW(s)->held, 10);
	ck_assert_int_eq(d.available, -10);
}
END_TEST

/* ====================================================================== */
/* high priority top-ups */

static unsigned topup_txns(uint64_t agent)
{
	unsigned n = 0;

	for (uint32_t i = 0; i < g_m->hdr->txn_cap; i++)
		if (g_m->txns[i].rec.used && g_m->txns[i].agent_id == agent &&
		    !strcmp(g_m->txns[i].type, "topup"))
			n++;
	return n;
}

START_TEST(test_high_priority_topup_below_ten_percent)
{
	uint32_t s;
	uint64_t a = agent_new("a", SC_PRIORITY_HIGH, 1000, 0, 0, NULL, 0, &s);
	uint64_t t = ALLOW(a, "x", 950, T0);
	uint64_t topups0;
	struct gate_decision d;

	SETTLE(t, SC_OUTCOME_SUCCESS, 0, 0, T0);
	ck_assert_int_eq(AW(s)->balance, 50);
	ck_assert_int_eq(AW(s)->budget, 1000);
	topups0 = g_m->hdr->topups;
	ck_assert_int_eq(check_req(a, "x", 200, NULL, T0, &d), 0);
	ck_assert_msg(d.allowed, "high agent below 10%% not topped up: %s", d.block_reason);
	ck_assert_int_eq(AW(s)->balance, 550);
	ck_assert_int_eq(AW(s)->held, 200);
	ck_assert_int_eq(d.available, 350);
	ck_assert_uint_eq(g_m->hdr->topups, topups0 + 1);
	ck_assert_uint_eq(topup_txns(a), 1);
}
END_TEST

/* PROTOCOL.md: "available funds below 10% of its budget": holds count. */
START_TEST(test_high_priority_topup_counts_holds)
{
	uint32_t s;
	uint64_t a = agent_new("a", SC_PRIORITY_HIGH, 1000, 0, 0, NULL, 0, &s);

	ALLOW(a, "x", 920, T0);
	ALLOW(a, "x", 300, T0);
	ck_assert_int_eq(AW(s)->balance, 1500);
	ck_assert_int_eq(AW(s)->held, 1220);
}
END_TEST

START_TEST(test_high_priority_no_topup_at_ten_percent)
{
	uint32_t s;
	uint64_t a = agent_new("a", SC_PRIORITY_HIGH, 1000, 0, 0, NULL, 0, &s);
	uint64_t t = ALLOW(a, "x", 900, T0);
	uint64_t topups0;

	SETTLE(t, SC_OUTCOME_SUCCESS, 0, 0, T0);
	topups0 = g_m->hdr->topups;
	BLOCK(a, "x", 200, T0, "wallet_empty");
	ck_assert_int_eq(AW(s)->balance, 100);
	ck_assert_uint_eq(g_m->hdr->topups, topups0);
	ck_assert_uint_eq(topup_txns(a), 0);
}
END_TEST

START_TEST(test_normal_priority_never_topped_up)
{
	uint32_t s;
	uint64_t a = simple_agent("a", 1000, &s);
	uint64_t t = ALLOW(a, "x", 950, T0);
	uint64_t topups0;

	SETTLE(t, SC_OUTCOME_SUCCESS, 0, 0, T0);
	topups0 = g_m->hdr->topups;
	BLOCK(a, "x", 200, T0, "wallet_empty");
	ck_assert_int_eq(AW(s)->balance, 50);
	ck_assert_uint_eq(g_m->hdr->topups, topups0);
}
END_TEST

/* A top-up on a wallet whose balance is already near INT64_MAX. */
START_TEST(test_topup_overflow_does_not_wrap)
{
	uint32_t s;
	uint64_t a = agent_new("a", SC_PRIORITY_HIGH, INT64_MAX, 0, 0, NULL, 0, &s);
	struct gate_decision d;
	int rc;

	ck_assert_int_eq(AW(s)->budget, INT64_MAX);
	ALLOW(a, "x", INT64_MAX - 1, T0);
	/* available 1 < 10% of the budget: a top-up of INT64_MAX / 2 cannot fit */
	rc = check_req(a, "x", 1, NULL, T0, &d);
	ck_assert_msg(rc == 0 || rc == SC_ERANGE, "rc %d", rc);
	ck_assert_msg(AW(s)->balance >= AW(s)->held && AW(s)->balance > 0,
	              "balance %lld held %lld", (long long)AW(s)->balance,
	              (long long)AW(s)->held);
	ck_assert_int_ge(AW(s)->held, INT64_MAX - 1);
}
END_TEST

START_TEST(test_budget_update_sets_topup_size)
{
	uint32_t s;
	uint64_t a = agent_new("a", SC_PRIORITY_HIGH, 100, 0, 0, NULL, 0, &s);

	wallet_update(s, 0, SC_WALLET_SET_BALANCE, 0, 0, 0, 0);
	{
		sc_wallet_update u;

		memset(&u, 0, sizeof u);
		u.set = SC_WALLET_SET_BUDGET;
		u.budget = 2000;
		ck_assert_int_eq(state_wallet_update(g_st, s, 0, &u, g_err, sizeof g_err), 0);
	}
	ck_assert_int_eq(AW(s)->budget, 2000);
	ALLOW(a, "x", 1000, T0);
	ck_assert_int_eq(AW(s)->balance, 1000);
	ck_assert_int_eq(AW(s)->held, 1000);
}
END_TEST

/* ====================================================================== */
/* header counters */

START_TEST(test_header_counters)
{
	uint64_t a = simple_agent("a", 100, NULL);
	struct shm_header h0 = *g_m->hdr;
	uint64_t t1, t2;

	t1 = ALLOW(a, "x", 10, T0);
	t2 = ALLOW(a, "x", 10, T0);
	BLOCK(a, "x", 1000, T0, "wallet_empty");
	SETTLE(t1, SC_OUTCOME_SUCCESS, 0, 0, T0);
	ck_assert_uint_eq(gate_expire(g_st, T0 + TTL), 1);
	ck_assert_uint_eq(g_m->hdr->checks, h0.checks + 3);
	ck_assert_uint_eq(g_m->hdr->allowed, h0.allowed + 2);
	ck_assert_uint_eq(g_m->hdr->blocked, h0.blocked + 1);
	ck_assert_uint_eq(g_m->hdr->reports, h0.reports + 1);
	ck_assert_uint_eq(g_m->hdr->expired, h0.expired + 1);
	ck_assert_uint_gt(t2, t1);
}
END_TEST

/* ====================================================================== */

static TCase *tc(const char *name, int fixture)
{
	return fixture ? test_tcase_tmp(name, gate_setup, gate_teardown) : tcase_create(name);
}

Suite *gate_suite(void)
{
	Suite *s = suite_create("gate");
	TCase *t;

	t = tc("action_and_pattern_syntax", 0);
	tcase_add_test(t, test_action_valid_boundaries);
	tcase_add_test(t, test_pattern_valid_forms);
	suite_add_tcase(s, t);

	t = tc("pattern_rank", 0);
	tcase_add_test(t, test_pattern_rank_specificity_order);
	tcase_add_test(t, test_pattern_rank_matching);
	suite_add_tcase(s, t);

	t = tc("utc_time", 0);
	tcase_add_test(t, test_utc_day_and_minute_boundaries);
	tcase_add_test(t, test_daily_used_resets_on_new_utc_day);
	tcase_add_test(t, test_rate_count_sliding_window);
	suite_add_tcase(s, t);

	t = tc("block_reasons", 1);
	tcase_add_test(t, test_agent_not_found_has_no_transaction);
	tcase_add_test(t, test_agent_frozen_blocks);
	tcase_add_test(t, test_wallet_debt_blocks_until_repaid);
	tcase_add_test(t, test_org_debt_blocks_until_repaid);
	tcase_add_test(t, test_org_max_per_txn);
	tcase_add_test(t, test_org_daily_spend_limit_across_agents);
	tcase_add_test(t, test_org_empty_across_agents);
	tcase_add_test(t, test_wallet_max_per_txn);
	tcase_add_test(t, test_wallet_daily_spend_limit);
	tcase_add_test(t, test_wallet_empty);
	tcase_add_test(t, test_rule_max_cost_per_txn);
	tcase_add_test(t, test_rule_daily_spend_limit);
	tcase_add_test(t, test_rule_hourly_rate_limit);
	tcase_add_test(t, test_blocked_decision_is_recorded);
	suite_add_tcase(s, t);

	t = tc("evaluation_order", 1);
	tcase_add_test(t, test_order_frozen_beats_debt);
	tcase_add_test(t, test_order_wallet_debt_beats_org_debt);
	tcase_add_test(t, test_order_org_debt_beats_org_limits);
	tcase_add_test(t, test_order_steps_5_to_7_peeled_one_by_one);
	suite_add_tcase(s, t);

	t = tc("unlimited", 1);
	tcase_add_test(t, test_zero_limits_are_unlimited);
	tcase_add_test(t, test_org_wallet_gates_nothing_until_limited);
	suite_add_tcase(s, t);

	t = tc("most_specific_rule", 1);
	tcase_add_test(t, test_most_specific_rule_only);
	tcase_add_test(t, test_no_matching_rule_means_no_rule);
	suite_add_tcase(s, t);

	t = tc("hourly_window", 1);
	tcase_add_test(t, test_hourly_blocked_checks_do_not_count);
	tcase_add_test(t, test_hourly_calls_age_out_after_60_to_64_minutes);
	tcase_add_test(t, test_hourly_window_covers_every_60_minutes);
	tcase_add_test(t, test_hourly_stale_buckets_are_not_counted);
	tcase_add_test(t, test_throttled_halves_hourly_limit);
	suite_add_tcase(s, t);

	t = tc("daily_limits", 1);
	tcase_add_test(t, test_wallet_daily_counts_holds_and_resets_at_midnight);
	tcase_add_test(t, test_daily_counts_actual_above_estimate);
	tcase_add_test(t, test_rule_daily_resets_at_midnight);
	tcase_add_test(t, test_org_daily_resets_at_midnight);
	suite_add_tcase(s, t);

	t = tc("critical_priority", 1);
	tcase_add_test(t, test_critical_never_blocked_and_warned);
	tcase_add_test(t, test_critical_frozen_still_blocked);
	tcase_add_test(t, test_critical_passes_debt);
	suite_add_tcase(s, t);

	t = tc("high_priority_topup", 1);
	tcase_add_test(t, test_high_priority_topup_below_ten_percent);
	tcase_add_test(t, test_high_priority_topup_counts_holds);
	tcase_add_test(t, test_high_priority_no_topup_at_ten_percent);
	tcase_add_test(t, test_normal_priority_never_topped_up);
	tcase_add_test(t, test_topup_overflow_does_not_wrap);
	tcase_add_test(t, test_budget_update_sets_topup_size);
	suite_add_tcase(s, t);

	t = tc("header_counters", 1);
	tcase_add_test(t, test_header_counters);
	suite_add_tcase(s, t);

	gate_holds_tcases(s);
	gate_bounds_tcases(s);
	gate_sweep_tcases(s);
	return s;
}
