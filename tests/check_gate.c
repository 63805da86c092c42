/*
 * check_gate.c: unit tests of the gating engine (sidecard/gate.c) on top of
 * the state model (sidecard/state.c), written from protocol/PROTOCOL.md
 * ("Gating semantics") and gate.h alone, independently of the code.
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <urcu.h>

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
	ck_assert_int_eq(gate_action_valid(buf, 1), 1);
	ck_assert_int_eq(gate_action_valid(buf, 127), 1);
	ck_assert_int_eq(gate_action_valid(buf, 128), 0);
	ck_assert_int_eq(gate_action_valid("", 0), 0);
	ck_assert_int_eq(gate_action_valid("openai.chat", 11), 1);
	ck_assert_int_eq(gate_action_valid("~!#$%&'()+,-/:;<=>?@[]^_`{|}", 28), 1);
	ck_assert_int_eq(gate_action_valid("a b", 3), 0);
	ck_assert_int_eq(gate_action_valid(" ab", 3), 0);
	ck_assert_int_eq(gate_action_valid("ab ", 3), 0);
	ck_assert_int_eq(gate_action_valid("a*", 2), 0);
	ck_assert_int_eq(gate_action_valid("*", 1), 0);
	ck_assert_int_eq(gate_action_valid("a.*", 3), 0);
	ck_assert_int_eq(gate_action_valid("a\tb", 3), 0);
	ck_assert_int_eq(gate_action_valid("a\x7f", 2), 0);
	ck_assert_int_eq(gate_action_valid("caf\xc3\xa9", 5), 0);
	ck_assert_int_eq(gate_action_valid("ab\0c", 4), 0);
	/* only len bytes count: the string need not be NUL-terminated */
	ck_assert_int_eq(gate_action_valid("ab c", 2), 1);
}
END_TEST

START_TEST(test_pattern_valid_forms)
{
	char buf[200];

	ck_assert_int_eq(gate_pattern_valid("*", 1), 1);
	ck_assert_int_eq(gate_pattern_valid("a.*", 3), 1);
	ck_assert_int_eq(gate_pattern_valid("openai.*", 8), 1);
	ck_assert_int_eq(gate_pattern_valid("openai.chat.*", 13), 1);
	ck_assert_int_eq(gate_pattern_valid("flight.booking", 14), 1);
	ck_assert_int_eq(gate_pattern_valid("a", 1), 1);

	ck_assert_int_eq(gate_pattern_valid("", 0), 0);
	ck_assert_int_eq(gate_pattern_valid("a*", 2), 0);
	ck_assert_int_eq(gate_pattern_valid(".*", 2), 0); /* empty prefix */
	ck_assert_int_eq(gate_pattern_valid("*a", 2), 0);
	ck_assert_int_eq(gate_pattern_valid("*.a", 3), 0);
	ck_assert_int_eq(gate_pattern_valid("a*b", 3), 0);
	ck_assert_int_eq(gate_pattern_valid("a.*.b", 5), 0);
	ck_assert_int_eq(gate_pattern_valid("a.**", 4), 0);
	ck_assert_int_eq(gate_pattern_valid("**", 2), 0);
	ck_assert_int_eq(gate_pattern_valid("a .*", 4), 0);
	ck_assert_int_eq(gate_pattern_valid("a b", 3), 0);
	ck_assert_int_eq(gate_pattern_valid("a\n", 2), 0);

	memset(buf, 'a', sizeof buf);
	ck_assert_int_eq(gate_pattern_valid(buf, 127), 1);
	ck_assert_int_eq(gate_pattern_valid(buf, 128), 0);
	/* 125 + ".*" = 127 bytes: fits; 126 + ".*" = 128: too long */
	buf[125] = '.';
	buf[126] = '*';
	ck_assert_int_eq(gate_pattern_valid(buf, 127), 1);
	memset(buf, 'a', sizeof buf);
	buf[126] = '.';
	buf[127] = '*';
	ck_assert_int_eq(gate_pattern_valid(buf, 128), 0);
}
END_TEST

START_TEST(test_pattern_rank_specificity_order)
{
	const char *act = "openai.chat.x";
	size_t alen = strlen(act);
	int star = gate_pattern_rank("*", 1, act, alen);
	int p_short = gate_pattern_rank("openai.*", 8, act, alen);
	int p_long = gate_pattern_rank("openai.chat.*", 13, act, alen);
	int exact = gate_pattern_rank(act, alen, act, alen);

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
	ck_assert_int_eq(gate_pattern_rank("openai.*", 8, "openai", 6), -1);
	ck_assert_int_gt(gate_pattern_rank("openai.*", 8, "openai.chat", 11), 0);
	ck_assert_int_gt(gate_pattern_rank("openai.*", 8, "openai.chat.stream", 18), 0);
	ck_assert_int_eq(gate_pattern_rank("openai.*", 8, "openaix.chat", 12), -1);
	ck_assert_int_eq(gate_pattern_rank("openai.*", 8, "xopenai.chat", 12), -1);
	ck_assert_int_eq(gate_pattern_rank("openai.chat.*", 13, "openai.chat", 11), -1);
	/* exact patterns match only themselves */
	ck_assert_int_eq(gate_pattern_rank("flight.booking", 14, "flight.booking", 14), INT_MAX);
	ck_assert_int_eq(gate_pattern_rank("flight.booking", 14, "flight.bookings", 15), -1);
	ck_assert_int_eq(gate_pattern_rank("flight.booking", 14, "flight.book", 11), -1);
	ck_assert_int_eq(gate_pattern_rank("openai", 6, "openai.chat", 11), -1);
	/* "*" matches everything */
	ck_assert_int_eq(gate_pattern_rank("*", 1, "x", 1), 0);
	ck_assert_int_eq(gate_pattern_rank("*", 1, "openai", 6), 0);
	/* lengths are honoured, not NUL terminators */
	ck_assert_int_eq(gate_pattern_rank("openai.*", 8, "openai.chat", 6), -1);
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
	int32_t b = gate_window_bucket(T0);

	/* T0 is the first instant of its four-minute bucket */
	ck_assert_int_eq(b, T0_MINUTE / 4);
	ck_assert_int_eq(gate_window_bucket(T0 - 1), b - 1);
	ck_assert_int_eq(gate_window_bucket(T0 + 4 * MIN - 1), b);
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

/* ====================================================================== */
/* holds: placed by check, settled by report */

struct lifecycle {
	uint32_t s, rs;
	uint64_t a, t;
};

static void lifecycle_start(struct lifecycle *l, int64_t est)
{
	struct state_rule_spec r = rspec("r", "api.*", 0, 0, 0);
	struct gate_decision d;
	uint32_t hs;
	struct shm_hold *h;
	struct shm_txn *tx;

	org_fund(10000, 0, 0);
	l->a = agent_new("a", SC_PRIORITY_NORMAL, 1000, 0, 0, &r, 1, &l->s);
	l->rs = rule_slot(l->s, "r");
	ck_assert_int_eq(check_req(l->a, "api.x", est, NULL, T0, &d), 0);
	ck_assert_int_eq(d.allowed, 1);
	ck_assert_int_eq(d.risk, GATE_RISK_LOW);
	ck_assert_uint_eq(d.n_warnings, 0);
	ck_assert_int_eq(d.available, 1000 - est);
	l->t = d.txn_id;

	ck_assert_int_eq(AW(l->s)->balance, 1000);
	ck_assert_int_eq(AW(l->s)->held, est);
	ck_assert_int_eq(OW()->balance, 10000);
	ck_assert_int_eq(OW()->held, est);
	ck_assert_int_eq(g_m->rules[l->rs].held, est);
	ck_assert_int_eq(gate_rate_count(&g_m->rules[l->rs], T0), 1);
	ck_assert_uint_eq(g_m->agents[l->s].open_holds, 1);
	ck_assert_int_eq(holds_of_agent(l->s), est);

	ck_assert_int_eq(state_hold_by_txn(g_st, l->t, &hs), 0);
	h = &g_m->holds[hs];
	ck_assert_uint_eq(h->rec.used, 1);
	ck_assert_uint_eq(h->txn_id, l->t);
	ck_assert_uint_eq(h->agent_id, l->a);
	ck_assert_uint_eq(h->agent_slot, l->s);
	ck_assert_uint_eq(h->org_slot, g_org);
	ck_assert_uint_eq(h->rule_slot, l->rs);
	ck_assert_uint_eq(h->rule_id, g_m->rules[l->rs].id);
	ck_assert_uint_eq(h->org_limited, 1);
	ck_assert_int_eq(h->amount, est);
	ck_assert_int_eq(h->created_at, T0);
	ck_assert_int_eq(h->expires_at, T0 + TTL);

	tx = state_txn_by_id(g_st, l->t);
	ck_assert_ptr_nonnull(tx);
	ck_assert_uint_eq(tx->id, l->t);
	ck_assert_int_eq(tx->status, SC_TXN_PENDING);
	ck_assert_uint_eq(tx->agent_id, l->a);
	ck_assert_uint_eq(tx->org_id, g_m->orgs[g_org].id);
	ck_assert_uint_eq(tx->rule_id, g_m->rules[l->rs].id);
	ck_assert_int_eq(tx->estimate, est);
	ck_assert_int_eq(tx->created_at, T0);
	ck_assert_str_eq(tx->action, "api.x");
	ck_assert_str_eq(tx->type, "other");
	ck_assert_str_eq(tx->block_reason, "");
}

/* After settling l's hold with charged: every scope released and charged. */
static void lifecycle_settled(const struct lifecycle *l, const struct gate_settlement *st,
                              enum sc_outcome outcome, int64_t charged, int64_t now)
{
	struct shm_txn *tx = state_txn_by_id(g_st, l->t);
	uint32_t hs;

	ck_assert_int_eq(st->charged, charged);
	ck_assert_int_eq(st->outcome, outcome);
	ck_assert_int_eq(st->replayed, 0);
	ck_assert_int_eq(st->balance, 1000 - charged);
	ck_assert_int_eq(st->debt, 0);
	ck_assert_int_eq(AW(l->s)->balance, 1000 - charged);
	ck_assert_int_eq(AW(l->s)->held, 0);
	ck_assert_int_eq(AW(l->s)->daily_spent, charged);
	ck_assert_int_eq(OW()->balance, 10000 - charged);
	ck_assert_int_eq(OW()->held, 0);
	ck_assert_int_eq(OW()->daily_spent, charged);
	ck_assert_int_eq(g_m->rules[l->rs].held, 0);
	ck_assert_int_eq(g_m->rules[l->rs].daily_spent, charged);
	ck_assert_uint_eq(g_m->agents[l->s].open_holds, 0);
	ck_assert_int_eq(state_hold_by_txn(g_st, l->t, &hs), SC_ENOTFOUND);
	ck_assert_uint_eq(holds_open(), 0);
	ck_assert_ptr_nonnull(tx);
	ck_assert_int_eq(tx->status, SC_TXN_SETTLED);
	ck_assert_int_eq(tx->has_outcome, 1);
	ck_assert_int_eq(tx->outcome, outcome);
	ck_assert_int_eq(tx->charged, charged);
	ck_assert_int_eq(tx->settled_at, now);
	ck_assert_int_eq(gate_next_expiry(g_st), INT64_MAX);
}

/* Reports on a hold of 300, and what each must charge. */
static const struct {
	enum sc_outcome outcome;
	int has_actual;
	int64_t actual, charged;
} settle_cases[] = {
	{ SC_OUTCOME_SUCCESS, 0, 0, 300 },   /* success charges the estimate by default */
	{ SC_OUTCOME_SUCCESS, 1, 240, 240 }, /* success with an actual cost */
	{ SC_OUTCOME_SUCCESS, 1, 450, 450 }, /* an actual cost above the estimate */
	{ SC_OUTCOME_FAILURE, 0, 0, 0 },     /* failure charges nothing by default */
	{ SC_OUTCOME_FAILURE, 1, 30, 30 },   /* failure with an actual cost */
};

START_TEST(test_report_settles_hold)
{
	struct lifecycle l;
	struct gate_settlement st;

	lifecycle_start(&l, 300);
	st = SETTLE(l.t, settle_cases[_i].outcome, settle_cases[_i].has_actual,
	            settle_cases[_i].actual, T0 + SEC);
	lifecycle_settled(&l, &st, settle_cases[_i].outcome, settle_cases[_i].charged, T0 + SEC);
}
END_TEST

/*
 * Every open hold is found by its transaction id whatever the order holds
 * come and go in: rounds of reports in a scrambled order, each settled hold
 * replaced by a new check, then the rest after a restart rebuilt the index
 * from the segment. A settled transaction has no hold any more: reporting
 * it again replays the settlement.
 */
START_TEST(test_report_finds_holds_in_any_order)
{
	enum { N = 500, ROUNDS = 8 };
	struct shm_caps caps = default_caps;
	uint64_t open[N], first, agent;
	uint32_t slot;
	struct gate_settlement st;
	int64_t now = T0;

	caps.holds = N;
	caps.txns = 4096;
	open_state(caps, TTL, 1);
	agent = simple_agent("many", INT64_C(1000000000000), &slot);
	for (unsigned i = 0; i < N; i++)
		open[i] = ALLOW(agent, "tool.search", 1000 + i, now);
	first = open[0];
	for (unsigned r = 0; r < ROUNDS; r++) {
		now += SEC;
		/* a stride of 7 from a moving start visits every hold in a scrambled order */
		for (unsigned k = 0, i = r; k < N / 2; k++, i = (i + 7) % N) {
			st = SETTLE(open[i], SC_OUTCOME_FAILURE, 1, 1, now);
			ck_assert_uint_eq(st.txn_id, open[i]);
			open[i] = ALLOW(agent, "tool.search", 1, now);
		}
		ck_assert_uint_eq(holds_open(), N);
	}
	reattach();
	for (unsigned i = N; i-- > 0;)
		SETTLE(open[i], SC_OUTCOME_FAILURE, 0, 0, now + SEC);
	ck_assert_uint_eq(holds_open(), 0);
	ck_assert_int_eq(AW(slot)->held, 0);
	st = SETTLE(first, SC_OUTCOME_FAILURE, 1, 1, now + 2 * SEC);
	ck_assert(st.replayed);
}
END_TEST

START_TEST(test_report_partial_requires_actual)
{
	struct lifecycle l;
	struct gate_settlement st;

	lifecycle_start(&l, 300);
	ck_assert_int_eq(report_rc(l.t, SC_OUTCOME_PARTIAL, 0, 0, T0 + SEC), SC_EINVAL);
	ck_assert_msg(g_err[0] != '\0', "no message for partial without actual_cost");
	/* nothing changed: the hold is still open */
	ck_assert_int_eq(AW(l.s)->held, 300);
	ck_assert_int_eq(AW(l.s)->balance, 1000);
	ck_assert_int_eq(state_txn_by_id(g_st, l.t)->status, SC_TXN_PENDING);
	st = SETTLE(l.t, SC_OUTCOME_PARTIAL, 1, 120, T0 + SEC);
	lifecycle_settled(&l, &st, SC_OUTCOME_PARTIAL, 120, T0 + SEC);
}
END_TEST

START_TEST(test_report_above_balance_becomes_debt)
{
	uint32_t s;
	uint64_t a = simple_agent("a", 100, &s);
	uint64_t t = ALLOW(a, "x", 80, T0);
	struct gate_settlement st = SETTLE(t, SC_OUTCOME_SUCCESS, 1, 130, T0);

	ck_assert_int_eq(st.charged, 130);
	ck_assert_int_eq(st.balance, 0);
	ck_assert_int_eq(st.debt, 30);
	ck_assert_int_eq(AW(s)->balance, 0);
	ck_assert_int_eq(AW(s)->debt, 30);
	ck_assert_int_eq(AW(s)->held, 0);
	BLOCK(a, "x", 1, T0, "wallet_debt");
	wallet_update(s, 0, SC_WALLET_SET_BALANCE | SC_WALLET_SET_DEBT, 500, 0, 0, 0);
	ALLOW(a, "x", 100, T0);
}
END_TEST

START_TEST(test_report_negative_actual_is_invalid)
{
	uint32_t s;
	uint64_t a = simple_agent("a", 100, &s);
	uint64_t t = ALLOW(a, "x", 80, T0);

	ck_assert_int_eq(report_rc(t, SC_OUTCOME_SUCCESS, 1, -1, T0), SC_EINVAL);
	ck_assert_int_eq(AW(s)->held, 80);
	ck_assert_int_eq(AW(s)->balance, 100);
	ck_assert_int_eq(state_txn_by_id(g_st, t)->status, SC_TXN_PENDING);
}
END_TEST

START_TEST(test_report_of_blocked_or_unknown_txn)
{
	uint64_t a = simple_agent("a", 100, NULL);
	uint64_t t = BLOCK(a, "x", 101, T0, "wallet_empty");

	ck_assert_int_eq(report_rc(t, SC_OUTCOME_SUCCESS, 0, 0, T0), SC_EINVAL);
	ck_assert_int_eq(report_rc(t, SC_OUTCOME_FAILURE, 0, 0, T0), SC_EINVAL);
	ck_assert_int_eq(report_rc(987654, SC_OUTCOME_SUCCESS, 0, 0, T0), SC_ENOTFOUND);
}
END_TEST

/* ====================================================================== */
/* money overflow: refused or blocked, never wrapped */

START_TEST(test_estimate_near_int64_max_does_not_wrap)
{
	uint32_t s;
	uint64_t a = simple_agent("a", INT64_MAX, &s);
	struct gate_decision d;
	int rc;

	ALLOW(a, "x", 10, T0);
	rc = check_req(a, "x", INT64_MAX - 5, NULL, T0, &d);
	ck_assert_msg(rc == SC_ERANGE || (rc == 0 && !d.allowed),
	              "estimate beyond available: rc %d allowed %d", rc, d.allowed);
	ck_assert_int_eq(AW(s)->held, 10);
	rc = check_req(a, "x", INT64_MAX, NULL, T0, &d);
	ck_assert_msg(rc == SC_ERANGE || (rc == 0 && !d.allowed),
	              "estimate INT64_MAX: rc %d allowed %d", rc, d.allowed);
	ck_assert_int_eq(AW(s)->held, 10);
	ck_assert_int_ge(AW(s)->balance, 0);
}
END_TEST

START_TEST(test_critical_hold_overflow_refused)
{
	uint32_t s;
	uint64_t a = agent_new("a", SC_PRIORITY_CRITICAL, 0, 0, 0, NULL, 0, &s);
	struct gate_decision d;
	int rc;

	rc = check_req(a, "x", INT64_MAX, NULL, T0, &d);
	ck_assert_msg(rc == SC_ERANGE || rc == 0, "rc %d", rc);
	if (rc == 0 && d.allowed) {
		ck_assert_int_eq(AW(s)->held, INT64_MAX);
		rc = check_req(a, "x", 1, NULL, T0, &d);
		ck_assert_msg(rc == SC_ERANGE || (rc == 0 && !d.allowed),
		              "held INT64_MAX + 1 accepted: rc %d allowed %d held %lld", rc,
		              d.allowed, (long long)AW(s)->held);
		ck_assert_int_eq(AW(s)->held, INT64_MAX);
	} else {
		ck_assert_int_eq(AW(s)->held, 0);
	}
	ck_assert_int_ge(AW(s)->held, 0);
}
END_TEST

START_TEST(test_report_actual_overflow_refused_or_saturated)
{
	struct state_rule_spec r = rspec("r", "*", 0, 0, 0);
	uint32_t s, rs;
	uint64_t a = agent_new("a", SC_PRIORITY_NORMAL, 100, 0, 0, &r, 1, &s);
	uint64_t t = ALLOW(a, "x", 50, T0);
	struct gate_settlement st;
	int rc;

	rs = rule_slot(s, "r");
	SETTLE(t, SC_OUTCOME_SUCCESS, 0, 0, T0);
	ck_assert_int_eq(AW(s)->daily_spent, 50);
	t = ALLOW(a, "x", 10, T0);
	/* daily_spent 50 + INT64_MAX does not fit */
	rc = gate_report(g_st, t, SC_OUTCOME_SUCCESS, 1, INT64_MAX, T0, &st, g_err, sizeof g_err);
	ck_assert_msg(rc == 0 || rc == SC_ERANGE, "rc %d", rc);
	if (rc == SC_ERANGE) {
		ck_assert_int_eq(AW(s)->held, 10);
		ck_assert_int_eq(AW(s)->balance, 50);
		ck_assert_int_eq(AW(s)->daily_spent, 50);
	} else {
		ck_assert_int_eq(AW(s)->held, 0);
		ck_assert_int_eq(AW(s)->balance, 0);
		ck_assert_int_eq(AW(s)->debt, INT64_MAX - 50);
		ck_assert_int_ge(AW(s)->daily_spent, 50);
		ck_assert_int_ge(g_m->rules[rs].daily_spent, 50);
	}
	ck_assert_int_ge(g_m->rules[rs].held, 0);
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
/* request validation */

START_TEST(test_invalid_requests_change_nothing)
{
	uint32_t s;
	uint64_t a = simple_agent("a", 1000, &s);
	uint64_t next = g_m->hdr->next_txn_id;
	struct gate_check_req r;
	struct gate_decision d;
	uint8_t meta[SHM_METADATA_MAX + 1];
	char key[SC_KEY_MAX + 2];

	ck_assert_int_eq(check_req(a, "a b", 1, NULL, T0, &d), SC_EINVAL);
	ck_assert_int_eq(check_req(a, "", 1, NULL, T0, &d), SC_EINVAL);
	ck_assert_int_eq(check_req(a, "x*", 1, NULL, T0, &d), SC_EINVAL);
	ck_assert_int_eq(check_req(a, "x", -1, NULL, T0, &d), SC_EINVAL);
	ck_assert_msg(g_err[0] != '\0', "no message for a negative estimate");
	memset(key, 'k', sizeof key);
	key[SC_KEY_MAX + 1] = '\0';
	ck_assert_int_eq(check_req(a, "x", 1, key, T0, &d), SC_EINVAL);
	memset(&r, 0, sizeof r);
	memset(meta, 0, sizeof meta);
	r.agent_id = a;
	r.action = str("x");
	r.estimate = 1;
	r.meta = meta;
	r.meta_len = sizeof meta;
	ck_assert_int_eq(gate_check(g_st, &r, T0, &d, g_err, sizeof g_err), SC_EINVAL);
	ck_assert_uint_eq(g_m->hdr->next_txn_id, next);
	ck_assert_int_eq(AW(s)->held, 0);
	/* the longest key is fine */
	key[SC_KEY_MAX] = '\0';
	ck_assert_int_eq(check_req(a, "x", 1, key, T0, &d), 0);
	ck_assert_int_eq(d.allowed, 1);
}
END_TEST

START_TEST(test_type_and_metadata_kept_with_transaction)
{
	uint64_t a = simple_agent("a", 1000, NULL);
	static const uint8_t meta[] = { 0x81, 0xa1, 'k', 0x07 }; /* {"k": 7} */
	struct gate_check_req r;
	struct gate_decision d;
	struct shm_txn *tx;

	memset(&r, 0, sizeof r);
	r.agent_id = a;
	r.action = str("tool.search");
	r.estimate = 5;
	r.type = str("api_call");
	r.meta = meta;
	r.meta_len = sizeof meta;
	ck_assert_int_eq(gate_check(g_st, &r, T0, &d, g_err, sizeof g_err), 0);
	ck_assert_int_eq(d.allowed, 1);
	tx = state_txn_by_id(g_st, d.txn_id);
	ck_assert_ptr_nonnull(tx);
	ck_assert_str_eq(tx->type, "api_call");
	ck_assert_uint_eq(tx->meta_len, sizeof meta);
	ck_assert_mem_eq(tx->meta, meta, sizeof meta);
}
END_TEST

/* ====================================================================== */
/* idempotency of check */

START_TEST(test_check_replay_returns_original_without_second_hold)
{
	uint32_t s;
	uint64_t a = simple_agent("a", 1000, &s);
	uint64_t next;
	struct gate_decision d1, d2;

	ck_assert_int_eq(check_req(a, "x", 100, "k1", T0, &d1), 0);
	ck_assert_int_eq(d1.allowed, 1);
	ck_assert_int_eq(d1.replayed, 0);
	next = g_m->hdr->next_txn_id;
	ck_assert_int_eq(check_req(a, "x", 100, "k1", T0 + SEC, &d2), 0);
	ck_assert_int_eq(d2.allowed, 1);
	ck_assert_int_eq(d2.replayed, 1);
	ck_assert_uint_eq(d2.txn_id, d1.txn_id);
	ck_assert_int_eq(AW(s)->held, 100);
	ck_assert_uint_eq(holds_open(), 1);
	ck_assert_uint_eq(g_m->hdr->next_txn_id, next);
	ck_assert_ptr_nonnull(state_txn_by_key(g_st, a, str("k1")));
	ck_assert_uint_eq(state_txn_by_key(g_st, a, str("k1"))->id, d1.txn_id);
}
END_TEST

START_TEST(test_check_replay_of_blocked_decision)
{
	uint32_t s;
	uint64_t a = simple_agent("a", 1000, &s);
	struct gate_decision d1, d2;

	ck_assert_int_eq(check_req(a, "x", 2000, "kb", T0, &d1), 0);
	ck_assert_int_eq(d1.allowed, 0);
	ck_assert_str_eq(d1.block_reason, "wallet_empty");
	wallet_update(s, 0, SC_WALLET_SET_BALANCE, 100000, 0, 0, 0);
	ck_assert_int_eq(check_req(a, "x", 2000, "kb", T0, &d2), 0);
	ck_assert_int_eq(d2.allowed, 0);
	ck_assert_int_eq(d2.replayed, 1);
	ck_assert_str_eq(d2.block_reason, "wallet_empty");
	ck_assert_uint_eq(d2.txn_id, d1.txn_id);
	ck_assert_int_eq(AW(s)->held, 0);
}
END_TEST

START_TEST(test_check_replay_after_report)
{
	uint32_t s;
	uint64_t a = simple_agent("a", 1000, &s);
	struct gate_decision d1, d2;

	ck_assert_int_eq(check_req(a, "x", 100, "k1", T0, &d1), 0);
	SETTLE(d1.txn_id, SC_OUTCOME_SUCCESS, 0, 0, T0);
	ck_assert_int_eq(check_req(a, "x", 100, "k1", T0, &d2), 0);
	ck_assert_int_eq(d2.replayed, 1);
	ck_assert_int_eq(d2.allowed, 1);
	ck_assert_uint_eq(d2.txn_id, d1.txn_id);
	ck_assert_int_eq(AW(s)->held, 0);
	ck_assert_int_eq(AW(s)->balance, 900);
	ck_assert_uint_eq(holds_open(), 0);
}
END_TEST

START_TEST(test_check_key_mismatch_is_exists)
{
	uint32_t s;
	uint64_t a = simple_agent("a", 1000, &s);
	uint64_t next;
	struct gate_decision d;

	ck_assert_int_eq(check_req(a, "x", 100, "k1", T0, &d), 0);
	next = g_m->hdr->next_txn_id;
	ck_assert_int_eq(check_req(a, "x", 101, "k1", T0, &d), SC_EEXISTS);
	ck_assert_int_eq(check_req(a, "y", 100, "k1", T0, &d), SC_EEXISTS);
	ck_assert_int_eq(AW(s)->held, 100);
	ck_assert_uint_eq(g_m->hdr->next_txn_id, next);
}
END_TEST

START_TEST(test_check_keys_are_per_agent)
{
	uint32_t sa, sb;
	uint64_t a = simple_agent("a", 1000, &sa);
	uint64_t b = simple_agent("b", 1000, &sb);
	struct gate_decision da, db;

	ck_assert_int_eq(check_req(a, "x", 100, "k", T0, &da), 0);
	ck_assert_int_eq(check_req(b, "x", 100, "k", T0, &db), 0);
	ck_assert_int_eq(db.replayed, 0);
	ck_assert_int_eq(db.allowed, 1);
	ck_assert_uint_ne(da.txn_id, db.txn_id);
	ck_assert_int_eq(AW(sa)->held, 100);
	ck_assert_int_eq(AW(sb)->held, 100);
}
END_TEST

/* ====================================================================== */
/* idempotency of report */

START_TEST(test_report_replay_same_values_charges_once)
{
	uint32_t s;
	uint64_t a = simple_agent("a", 1000, &s);
	uint64_t t = ALLOW(a, "x", 100, T0);
	struct gate_settlement s1 = SETTLE(t, SC_OUTCOME_SUCCESS, 1, 70, T0);
	struct gate_settlement s2 = SETTLE(t, SC_OUTCOME_SUCCESS, 1, 70, T0 + MIN);

	ck_assert_int_eq(s1.replayed, 0);
	ck_assert_int_eq(s2.replayed, 1);
	ck_assert_int_eq(s2.charged, 70);
	ck_assert_int_eq(s2.outcome, SC_OUTCOME_SUCCESS);
	ck_assert_int_eq(s2.balance, 930);
	ck_assert_int_eq(AW(s)->balance, 930);
	ck_assert_int_eq(AW(s)->daily_spent, 70);
	ck_assert_int_eq(state_txn_by_id(g_st, t)->settled_at, T0);
}
END_TEST

START_TEST(test_report_replay_with_default_cost)
{
	uint32_t s;
	uint64_t a = simple_agent("a", 1000, &s);
	uint64_t t = ALLOW(a, "x", 100, T0);
	struct gate_settlement st;

	SETTLE(t, SC_OUTCOME_FAILURE, 0, 0, T0);
	st = SETTLE(t, SC_OUTCOME_FAILURE, 0, 0, T0);
	ck_assert_int_eq(st.replayed, 1);
	ck_assert_int_eq(st.charged, 0);
	ck_assert_int_eq(AW(s)->balance, 1000);
}
END_TEST

START_TEST(test_report_replay_different_values_is_exists)
{
	uint32_t s;
	uint64_t a = simple_agent("a", 1000, &s);
	uint64_t t = ALLOW(a, "x", 100, T0);

	SETTLE(t, SC_OUTCOME_SUCCESS, 1, 70, T0);
	ck_assert_int_eq(report_rc(t, SC_OUTCOME_SUCCESS, 1, 80, T0), SC_EEXISTS);
	ck_assert_int_eq(report_rc(t, SC_OUTCOME_FAILURE, 1, 70, T0), SC_EEXISTS);
	ck_assert_int_eq(report_rc(t, SC_OUTCOME_PARTIAL, 1, 70, T0), SC_EEXISTS);
	ck_assert_int_eq(AW(s)->balance, 930);
	ck_assert_int_eq(AW(s)->daily_spent, 70);
}
END_TEST

/* ====================================================================== */
/* expiry */

START_TEST(test_next_expiry_is_created_plus_ttl)
{
	uint64_t a = simple_agent("a", 1000, NULL);

	ck_assert_int_eq(gate_next_expiry(g_st), INT64_MAX);
	ALLOW(a, "x", 1, T0 + 5 * SEC);
	ck_assert_int_eq(gate_next_expiry(g_st), T0 + 5 * SEC + TTL);
	ALLOW(a, "x", 1, T0 + 9 * SEC);
	ck_assert_int_eq(gate_next_expiry(g_st), T0 + 5 * SEC + TTL);
}
END_TEST

START_TEST(test_expire_before_due_does_nothing)
{
	uint32_t s;
	uint64_t a = simple_agent("a", 1000, &s);
	uint64_t t = ALLOW(a, "x", 100, T0);

	ck_assert_uint_eq(gate_expire(g_st, T0 + TTL - 1), 0);
	ck_assert_int_eq(AW(s)->held, 100);
	ck_assert_int_eq(AW(s)->balance, 1000);
	ck_assert_int_eq(state_txn_by_id(g_st, t)->status, SC_TXN_PENDING);
	SETTLE(t, SC_OUTCOME_SUCCESS, 0, 0, T0 + TTL - 1);
}
END_TEST

START_TEST(test_expire_at_due_charges_estimate)
{
	struct state_rule_spec r = rspec("r", "*", 0, 0, 0);
	uint32_t s, rs, hs;
	uint64_t a = agent_new("a", SC_PRIORITY_NORMAL, 1000, 0, 0, &r, 1, &s);
	uint64_t expired0 = g_m->hdr->expired;
	uint64_t t;
	struct shm_txn *tx;

	org_fund(5000, 0, 0);
	rs = rule_slot(s, "r");
	t = ALLOW(a, "x", 100, T0);
	ck_assert_uint_eq(gate_expire(g_st, T0 + TTL), 1);
	tx = state_txn_by_id(g_st, t);
	ck_assert_ptr_nonnull(tx);
	ck_assert_int_eq(tx->status, SC_TXN_EXPIRED);
	ck_assert_int_eq(tx->charged, 100);
	ck_assert_int_eq(AW(s)->held, 0);
	ck_assert_int_eq(AW(s)->balance, 900);
	ck_assert_int_eq(AW(s)->daily_spent, 100);
	ck_assert_int_eq(OW()->held, 0);
	ck_assert_int_eq(OW()->balance, 4900);
	ck_assert_int_eq(g_m->rules[rs].held, 0);
	ck_assert_int_eq(g_m->rules[rs].daily_spent, 100);
	ck_assert_uint_eq(g_m->agents[s].open_holds, 0);
	ck_assert_int_eq(state_hold_by_txn(g_st, t, &hs), SC_ENOTFOUND);
	ck_assert_int_eq(gate_next_expiry(g_st), INT64_MAX);
	ck_assert_uint_eq(g_m->hdr->expired, expired0 + 1);
	ck_assert_uint_eq(gate_expire(g_st, T0 + 2 * TTL), 0);
	ck_assert_int_eq(AW(s)->balance, 900);
}
END_TEST

START_TEST(test_expire_charges_nothing_when_configured)
{
	uint32_t s;
	uint64_t a, t;
	struct shm_txn *tx;

	open_state(default_caps, TTL, 0);
	a = simple_agent("a", 1000, &s);
	t = ALLOW(a, "x", 100, T0);
	ck_assert_uint_eq(gate_expire(g_st, T0 + TTL), 1);
	tx = state_txn_by_id(g_st, t);
	ck_assert_ptr_nonnull(tx);
	ck_assert_int_eq(tx->status, SC_TXN_EXPIRED);
	ck_assert_int_eq(tx->charged, 0);
	ck_assert_int_eq(AW(s)->held, 0);
	ck_assert_int_eq(AW(s)->balance, 1000);
	ck_assert_int_eq(AW(s)->debt, 0);
}
END_TEST

START_TEST(test_report_after_expiry_is_invalid)
{
	uint32_t s;
	uint64_t a = simple_agent("a", 1000, &s);
	uint64_t t = ALLOW(a, "x", 100, T0);

	ck_assert_uint_eq(gate_expire(g_st, T0 + TTL), 1);
	ck_assert_int_eq(report_rc(t, SC_OUTCOME_SUCCESS, 0, 0, T0 + TTL), SC_EINVAL);
	ck_assert_int_eq(report_rc(t, SC_OUTCOME_FAILURE, 0, 0, T0 + TTL), SC_EINVAL);
	ck_assert_int_eq(AW(s)->balance, 900);
}
END_TEST

START_TEST(test_expire_oldest_first)
{
	uint32_t s;
	uint64_t a = simple_agent("a", 1000, &s);
	uint64_t t1 = ALLOW(a, "x", 1, T0);
	uint64_t t2 = ALLOW(a, "x", 2, T0 + 10 * SEC);
	uint64_t t3 = ALLOW(a, "x", 4, T0 + 20 * SEC);

	ck_assert_uint_eq(gate_expire(g_st, T0 + 10 * SEC + TTL), 2);
	ck_assert_int_eq(state_txn_by_id(g_st, t1)->status, SC_TXN_EXPIRED);
	ck_assert_int_eq(state_txn_by_id(g_st, t2)->status, SC_TXN_EXPIRED);
	ck_assert_int_eq(state_txn_by_id(g_st, t3)->status, SC_TXN_PENDING);
	ck_assert_int_eq(gate_next_expiry(g_st), T0 + 20 * SEC + TTL);
	ck_assert_int_eq(AW(s)->held, 4);
	ck_assert_int_eq(AW(s)->balance, 997);
}
END_TEST

START_TEST(test_settled_hold_does_not_expire)
{
	uint32_t s;
	uint64_t a = simple_agent("a", 1000, &s);
	uint64_t t1 = ALLOW(a, "x", 100, T0);
	uint64_t t2 = ALLOW(a, "x", 10, T0 + SEC);

	SETTLE(t1, SC_OUTCOME_FAILURE, 0, 0, T0 + SEC);
	ck_assert_int_eq(gate_next_expiry(g_st), T0 + SEC + TTL);
	ck_assert_uint_eq(gate_expire(g_st, T0 + 2 * TTL), 1);
	ck_assert_int_eq(state_txn_by_id(g_st, t1)->status, SC_TXN_SETTLED);
	ck_assert_int_eq(state_txn_by_id(g_st, t2)->status, SC_TXN_EXPIRED);
	ck_assert_int_eq(AW(s)->balance, 990);
}
END_TEST

/* An open hold outlives its transaction's slot in the history ring. */
START_TEST(test_hold_survives_history_wrap)
{
	struct shm_caps caps = { 4, 8, 64, 8, 8, 8, 8, 8, 8, 128 };
	uint32_t s, hs;
	uint64_t a, t;
	struct gate_decision d;

	open_state(caps, TTL, 1);
	a = simple_agent("a", 1000, &s);
	t = ALLOW(a, "x", 100, T0);
	for (int i = 0; i < 12; i++)
		check_req(a, "x", 5000, NULL, T0 + SEC, &d);
	ck_assert_int_eq(AW(s)->held, 100);
	ck_assert_uint_eq(gate_expire(g_st, T0 + TTL), 1);
	ck_assert_int_eq(AW(s)->held, 0);
	ck_assert_int_eq(AW(s)->balance, 900);
	ck_assert_uint_eq(g_m->agents[s].open_holds, 0);
	ck_assert_int_eq(state_hold_by_txn(g_st, t, &hs), SC_ENOTFOUND);
	ck_assert_uint_eq(holds_open(), 0);
}
END_TEST

/* ====================================================================== */
/* capacities */

START_TEST(test_hold_table_full_is_limit_and_changes_nothing)
{
	struct shm_caps caps = { 4, 8, 64, 2, 64, 64, 64, 64, 64, 128 };
	struct state_rule_spec r = rspec("r", "*", 0, 0, 0);
	uint32_t s, rs;
	uint64_t a, t1, next;
	struct gate_decision d;
	int rc;

	open_state(caps, TTL, 1);
	org_fund(10000, 0, 0);
	a = agent_new("a", SC_PRIORITY_NORMAL, 1000, 0, 0, &r, 1, &s);
	rs = rule_slot(s, "r");
	t1 = ALLOW(a, "x", 10, T0);
	ALLOW(a, "x", 20, T0);
	next = g_m->hdr->next_txn_id;
	rc = check_req(a, "x", 30, NULL, T0, &d);
	ck_assert_int_eq(rc, SC_ELIMIT);
	ck_assert_msg(g_err[0] != '\0', "no message for a full hold table");
	ck_assert_int_eq(AW(s)->held, 30);
	ck_assert_int_eq(OW()->held, 30);
	ck_assert_int_eq(g_m->rules[rs].held, 30);
	ck_assert_int_eq(gate_rate_count(&g_m->rules[rs], T0), 2);
	ck_assert_uint_eq(g_m->agents[s].open_holds, 2);
	ck_assert_int_eq(holds_of_agent(s), 30);
	ck_assert_uint_eq(g_m->hdr->next_txn_id, next);
	SETTLE(t1, SC_OUTCOME_SUCCESS, 0, 0, T0);
	ALLOW(a, "x", 30, T0);
}
END_TEST

START_TEST(test_agent_capacity_is_limit)
{
	char name[32];
	uint32_t slots[8];
	uint64_t ids[8];
	struct state_agent_spec spec;
	struct state_counts c;
	uint32_t s;
	int rc;

	for (int i = 0; i < 8; i++) {
		snprintf(name, sizeof name, "agent%d", i);
		ids[i] = simple_agent(name, 1000, &slots[i]);
	}
	memset(&spec, 0, sizeof spec);
	spec.org_slot = g_org;
	spec.name = str("one-too-many");
	spec.wallet.set = SC_WALLET_SET_BALANCE;
	spec.wallet.balance = 5;
	g_err[0] = '\0';
	rc = state_agent_create(g_st, &spec, T0, &s, g_err, sizeof g_err);
	ck_assert_int_eq(rc, SC_ELIMIT);
	ck_assert_msg(g_err[0] != '\0', "no message for a full agent table");
	state_counts(g_st, &c);
	ck_assert_uint_eq(c.agents, 8);
	ck_assert_uint_eq(g_m->orgs[g_org].n_agents, 8);
	ck_assert_int_eq(state_agent_by_id(g_st, ids[3], &s), 0);
	ck_assert_uint_eq(s, slots[3]);
	ALLOW(ids[7], "x", 10, T0);
	ck_assert_int_eq(state_agent_delete(g_st, slots[0], g_err, sizeof g_err), 0);
	rc = state_agent_create(g_st, &spec, T0, &s, g_err, sizeof g_err);
	ck_assert_msg(rc == 0, "create after delete: %d (%s)", rc, g_err);
	ck_assert_uint_gt(g_m->agents[s].id, ids[7]);
}
END_TEST

START_TEST(test_rule_capacity_refuses_whole_agent)
{
	struct shm_caps caps = { 4, 8, 4, 8, 64, 64, 64, 64, 64, 8 };
	struct state_rule_spec r[3];
	struct state_agent_spec spec;
	struct state_counts c;
	uint32_t s;
	int rc;

	open_state(caps, TTL, 1);
	r[0] = rspec("r0", "a.*", 0, 0, 0);
	r[1] = rspec("r1", "b.*", 0, 0, 0);
	r[2] = rspec("r2", "c.*", 0, 0, 0);
	agent_new("a", SC_PRIORITY_NORMAL, 1000, 0, 0, r, 3, NULL);
	memset(&spec, 0, sizeof spec);
	spec.org_slot = g_org;
	spec.name = str("b");
	spec.rules = r;
	spec.n_rules = 2;
	g_err[0] = '\0';
	rc = state_agent_create(g_st, &spec, T0, &s, g_err, sizeof g_err);
	ck_assert_int_eq(rc, SC_ELIMIT);
	ck_assert_msg(g_err[0] != '\0', "no message for a full rule table");
	state_counts(g_st, &c);
	ck_assert_uint_eq(c.agents, 1);
	ck_assert_uint_eq(c.rules, 3);
	ck_assert_uint_eq(g_m->orgs[g_org].n_agents, 1);
}
END_TEST

START_TEST(test_rules_per_agent_limit)
{
	struct state_rule_spec r;
	char name[32], match[32];
	uint32_t s, rs;
	int rc;

	simple_agent("a", 1000, &s);
	for (int i = 0; i < SC_RULES_MAX; i++) {
		snprintf(name, sizeof name, "r%d", i);
		snprintf(match, sizeof match, "m%d.*", i);
		r = rspec(name, match, 0, 0, 0);
		rc = state_rule_add(g_st, s, &r, &rs, g_err, sizeof g_err);
		ck_assert_msg(rc == 0, "rule %d: %d (%s)", i, rc, g_err);
	}
	r = rspec("extra", "extra.*", 0, 0, 0);
	ck_assert_int_eq(state_rule_add(g_st, s, &r, &rs, g_err, sizeof g_err), SC_ELIMIT);
	ck_assert_uint_eq(g_m->agents[s].n_rules, SC_RULES_MAX);
}
END_TEST

/* ====================================================================== */
/* deleting while holds are open */

START_TEST(test_agent_delete_refused_with_open_holds)
{
	uint32_t s, s2;
	uint64_t a = simple_agent("a", 1000, &s);
	uint64_t t = ALLOW(a, "x", 10, T0);
	struct gate_decision d;

	ck_assert_int_eq(state_agent_delete(g_st, s, g_err, sizeof g_err), SC_EUNAVAILABLE);
	ck_assert_int_eq(state_agent_by_id(g_st, a, &s2), 0);
	ck_assert_int_eq(AW(s)->held, 10);
	SETTLE(t, SC_OUTCOME_SUCCESS, 0, 0, T0);
	ck_assert_int_eq(state_agent_delete(g_st, s, g_err, sizeof g_err), 0);
	ck_assert_int_eq(state_agent_by_id(g_st, a, &s2), SC_ENOTFOUND);
	ck_assert_uint_eq(g_m->orgs[g_org].n_agents, 0);
	ck_assert_int_eq(check_req(a, "x", 1, NULL, T0, &d), 0);
	ck_assert_str_eq(d.block_reason, "agent_not_found");
	ck_assert_uint_eq(d.txn_id, 0);
}
END_TEST

START_TEST(test_rule_removed_under_open_hold_settles)
{
	struct state_rule_spec r = rspec("r", "api.*", 200, 1000, 0);
	struct state_rule_spec r2 = rspec("n", "api.*", 0, 0, 0);
	uint32_t s, rs, rs2;
	uint64_t a = agent_new("a", SC_PRIORITY_NORMAL, 1000, 0, 0, &r, 1, &s);
	uint64_t t = ALLOW(a, "api.x", 100, T0);
	struct gate_settlement st;

	rs = rule_slot(s, "r");
	ck_assert_int_eq(state_rule_remove(g_st, s, g_m->rules[rs].id, g_err, sizeof g_err), 0);
	ck_assert_uint_eq(g_m->agents[s].n_rules, 0);
	/* a new rule may take the freed slot: it must not inherit the old hold */
	ck_assert_int_eq(state_rule_add(g_st, s, &r2, &rs2, g_err, sizeof g_err), 0);
	st = SETTLE(t, SC_OUTCOME_SUCCESS, 1, 80, T0 + SEC);
	ck_assert_int_eq(st.charged, 80);
	ck_assert_int_eq(AW(s)->balance, 920);
	ck_assert_int_eq(AW(s)->held, 0);
	ck_assert_int_eq(g_m->rules[rs2].held, 0);
	ck_assert_int_eq(g_m->rules[rs2].daily_spent, 0);
	ck_assert_uint_eq(holds_open(), 0);
	/* the old rule's limit is gone */
	ALLOW(a, "api.x", 500, T0 + SEC);
}
END_TEST

START_TEST(test_rule_removed_under_open_hold_expires)
{
	struct state_rule_spec r = rspec("r", "api.*", 0, 0, 0);
	struct state_rule_spec r2 = rspec("n", "api.*", 0, 0, 0);
	uint32_t s, rs, rs2;
	uint64_t a = agent_new("a", SC_PRIORITY_NORMAL, 1000, 0, 0, &r, 1, &s);

	ALLOW(a, "api.x", 100, T0);
	rs = rule_slot(s, "r");
	ck_assert_int_eq(state_rule_remove(g_st, s, g_m->rules[rs].id, g_err, sizeof g_err), 0);
	ck_assert_int_eq(state_rule_add(g_st, s, &r2, &rs2, g_err, sizeof g_err), 0);
	ck_assert_uint_eq(gate_expire(g_st, T0 + TTL), 1);
	ck_assert_int_eq(AW(s)->balance, 900);
	ck_assert_int_eq(AW(s)->held, 0);
	ck_assert_int_eq(g_m->rules[rs2].held, 0);
	ck_assert_int_eq(g_m->rules[rs2].daily_spent, 0);
}
END_TEST

START_TEST(test_rule_update_keeps_counters)
{
	struct state_rule_spec r = rspec("r", "api.*", 0, 0, 2);
	struct state_rule_spec upd;
	uint32_t s, rs;
	uint64_t a = agent_new("a", SC_PRIORITY_NORMAL, 1000, 0, 0, &r, 1, &s);

	ALLOW(a, "api.x", 100, T0);
	ALLOW(a, "api.x", 100, T0);
	rs = rule_slot(s, "r");
	memset(&upd, 0, sizeof upd);
	upd.set = STATE_RULE_SET_MAX_COST;
	upd.max_cost_per_txn = 1000;
	ck_assert_int_eq(state_rule_update(g_st, s, g_m->rules[rs].id, &upd, &rs, g_err,
	                                   sizeof g_err), 0);
	ck_assert_int_eq(g_m->rules[rs].held, 200);
	ck_assert_int_eq(g_m->rules[rs].hourly_limit, 2);
	BLOCK(a, "api.x", 1, T0, "rule:r:hourly_rate_limit");
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
/* validation of the objects the gate relies on */

START_TEST(test_overlong_pattern_refused_by_rule_add)
{
	char pat[200];
	struct state_rule_spec r;
	uint32_t s, rs;

	simple_agent("a", 1000, &s);
	memset(pat, 'a', sizeof pat);
	pat[126] = '.';
	pat[127] = '*';
	pat[128] = '\0';
	r = rspec("long", pat, 0, 0, 0);
	ck_assert_int_eq(state_rule_add(g_st, s, &r, &rs, g_err, sizeof g_err), SC_EINVAL);
	ck_assert_uint_eq(g_m->agents[s].n_rules, 0);
	/* 127 bytes fit, and are kept whole */
	memset(pat, 'a', sizeof pat);
	pat[125] = '.';
	pat[126] = '*';
	pat[127] = '\0';
	r = rspec("long", pat, 0, 0, 0);
	ck_assert_int_eq(state_rule_add(g_st, s, &r, &rs, g_err, sizeof g_err), 0);
	ck_assert_str_eq(rule_match(&g_m->rules[rs]), pat);
}
END_TEST

START_TEST(test_rule_specs_validated)
{
	struct state_rule_spec r;
	uint32_t s, rs;
	char name[80];

	simple_agent("a", 1000, &s);
	r = rspec("r", ".*", 0, 0, 0);
	ck_assert_int_eq(state_rule_add(g_st, s, &r, &rs, g_err, sizeof g_err), SC_EINVAL);
	ck_assert_msg(g_err[0] != '\0', "no message for a bad pattern");
	r = rspec("r", "a*", 0, 0, 0);
	ck_assert_int_eq(state_rule_add(g_st, s, &r, &rs, g_err, sizeof g_err), SC_EINVAL);
	r = rspec("r", "", 0, 0, 0);
	ck_assert_int_eq(state_rule_add(g_st, s, &r, &rs, g_err, sizeof g_err), SC_EINVAL);
	r = rspec("", "a.*", 0, 0, 0);
	ck_assert_int_eq(state_rule_add(g_st, s, &r, &rs, g_err, sizeof g_err), SC_EINVAL);
	memset(name, 'n', sizeof name);
	name[64] = '\0';
	r = rspec(name, "a.*", 0, 0, 0);
	ck_assert_int_eq(state_rule_add(g_st, s, &r, &rs, g_err, sizeof g_err), SC_EINVAL);
	r = rspec("r", "a.*", -1, 0, 0);
	ck_assert_int_eq(state_rule_add(g_st, s, &r, &rs, g_err, sizeof g_err), SC_EINVAL);
	r = rspec("r", "a.*", 0, -1, 0);
	ck_assert_int_eq(state_rule_add(g_st, s, &r, &rs, g_err, sizeof g_err), SC_EINVAL);
	r = rspec("r", "a.*", 0, 0, -1);
	ck_assert_int_eq(state_rule_add(g_st, s, &r, &rs, g_err, sizeof g_err), SC_EINVAL);
	ck_assert_uint_eq(g_m->agents[s].n_rules, 0);

	name[63] = '\0';
	r = rspec(name, "a.*", 0, 0, 0);
	ck_assert_int_eq(state_rule_add(g_st, s, &r, &rs, g_err, sizeof g_err), 0);
	r = rspec("other", "a.*", 0, 0, 0);
	ck_assert_int_eq(state_rule_add(g_st, s, &r, &rs, g_err, sizeof g_err), SC_EEXISTS);
	r = rspec(name, "b.*", 0, 0, 0);
	ck_assert_int_eq(state_rule_add(g_st, s, &r, &rs, g_err, sizeof g_err), SC_EEXISTS);
	ck_assert_uint_eq(g_m->agents[s].n_rules, 1);
}
END_TEST

START_TEST(test_rule_name_of_63_bytes_in_block_reason)
{
	char name[64], reason[SC_REASON_MAX + 1];
	struct state_rule_spec r;
	uint64_t a;

	memset(name, 'n', sizeof name);
	name[63] = '\0';
	r = rspec(name, "*", 1, 0, 0);
	a = agent_new("a", SC_PRIORITY_NORMAL, 1000, 0, 0, &r, 1, NULL);
	snprintf(reason, sizeof reason, "rule:%s:max_cost_per_txn", name);
	BLOCK(a, "x", 2, T0, reason);
}
END_TEST

START_TEST(test_agent_specs_validated)
{
	struct state_agent_spec spec;
	char name[80];
	uint32_t s, org2;
	struct state_counts c;

	memset(&spec, 0, sizeof spec);
	spec.org_slot = g_org;
	memset(name, 'n', sizeof name);
	name[64] = '\0';
	spec.name = str(name);
	ck_assert_int_eq(state_agent_create(g_st, &spec, T0, &s, g_err, sizeof g_err), SC_EINVAL);
	spec.name = str("");
	ck_assert_int_eq(state_agent_create(g_st, &spec, T0, &s, g_err, sizeof g_err), SC_EINVAL);
	spec.name = str("neg");
	spec.wallet.set = SC_WALLET_SET_BALANCE;
	spec.wallet.balance = -1;
	ck_assert_int_eq(state_agent_create(g_st, &spec, T0, &s, g_err, sizeof g_err), SC_EINVAL);
	spec.wallet.balance = 0;
	state_counts(g_st, &c);
	ck_assert_uint_eq(c.agents, 0);

	name[63] = '\0';
	spec.name = str(name);
	ck_assert_int_eq(state_agent_create(g_st, &spec, T0, &s, g_err, sizeof g_err), 0);
	ck_assert_str_eq(g_m->agents[s].name, name);
	ck_assert_int_eq(state_agent_create(g_st, &spec, T0, &s, g_err, sizeof g_err), SC_EEXISTS);
	/* names are unique within an org only */
	ck_assert_int_eq(state_org_create(g_st, str("second"), T0, &org2, g_err, sizeof g_err), 0);
	spec.org_slot = org2;
	ck_assert_int_eq(state_agent_create(g_st, &spec, T0, &s, g_err, sizeof g_err), 0);
	ck_assert_int_eq(state_org_create(g_st, str("second"), T0, &org2, g_err, sizeof g_err),
	                 SC_EEXISTS);
	memset(name, 'o', sizeof name);
	name[64] = '\0';
	ck_assert_int_eq(state_org_create(g_st, str(name), T0, &org2, g_err, sizeof g_err),
	                 SC_EINVAL);
}
END_TEST

/* An org slot that holds no org (the caller's bug) is still refused. */
START_TEST(test_agent_in_free_org_slot_refused)
{
	struct state_agent_spec spec;
	struct state_counts c;
	uint32_t s;

	memset(&spec, 0, sizeof spec);
	spec.name = str("orphan");
	spec.org_slot = g_org == g_m->hdr->org_cap - 1 ? 0 : g_m->hdr->org_cap - 1;
	ck_assert_uint_eq(g_m->orgs[spec.org_slot].rec.used, 0);
	ck_assert_msg(state_agent_create(g_st, &spec, T0, &s, g_err, sizeof g_err) < 0,
	              "agent created in a free org slot");
	state_counts(g_st, &c);
	ck_assert_uint_eq(c.agents, 0);
}
END_TEST

START_TEST(test_wallet_update_negative_is_invalid)
{
	uint32_t s;
	sc_wallet_update u;

	simple_agent("a", 1000, &s);
	memset(&u, 0, sizeof u);
	u.set = SC_WALLET_SET_BALANCE;
	u.balance = -1;
	ck_assert_int_eq(state_wallet_update(g_st, s, 0, &u, g_err, sizeof g_err), SC_EINVAL);
	u.set = SC_WALLET_SET_DAILY_SPEND_LIMIT;
	u.balance = 0;
	u.daily_spend_limit = -5;
	ck_assert_int_eq(state_wallet_update(g_st, s, 0, &u, g_err, sizeof g_err), SC_EINVAL);
	u.set = SC_WALLET_SET_DEBT;
	u.daily_spend_limit = 0;
	u.debt = -5;
	ck_assert_int_eq(state_wallet_update(g_st, g_org, 1, &u, g_err, sizeof g_err), SC_EINVAL);
	ck_assert_int_eq(AW(s)->balance, 1000);
	ck_assert_int_eq(AW(s)->daily_limit, 0);
	ck_assert_uint_eq(OW()->limited, 0);
}
END_TEST

START_TEST(test_invalid_outcome_and_type)
{
	uint32_t s;
	uint64_t a = simple_agent("a", 1000, &s);
	uint64_t t = ALLOW(a, "x", 10, T0);
	struct gate_check_req r;
	struct gate_decision d;

	ck_assert_int_eq(report_rc(t, (enum sc_outcome)7, 0, 0, T0), SC_EINVAL);
	ck_assert_int_eq(AW(s)->held, 10);
	memset(&r, 0, sizeof r);
	r.agent_id = a;
	r.action = str("x");
	r.estimate = 1;
	r.type = str("bogus");
	ck_assert_int_eq(gate_check(g_st, &r, T0, &d, g_err, sizeof g_err), SC_EINVAL);
	r.type = str("api_call_with_a_long_tail");
	ck_assert_int_eq(gate_check(g_st, &r, T0, &d, g_err, sizeof g_err), SC_EINVAL);
	ck_assert_int_eq(AW(s)->held, 10);
}
END_TEST

START_TEST(test_longest_action_and_key_kept_whole)
{
	char action[SC_ACTION_MAX + 1], key[SC_KEY_MAX + 1];
	uint64_t a = simple_agent("a", 1000, NULL);
	struct gate_decision d1, d2;
	struct shm_txn *tx;

	memset(action, 'x', sizeof action);
	action[SC_ACTION_MAX] = '\0';
	memset(key, 'k', sizeof key);
	key[SC_KEY_MAX] = '\0';
	ck_assert_int_eq(check_req(a, action, 5, key, T0, &d1), 0);
	ck_assert_int_eq(d1.allowed, 1);
	tx = state_txn_by_id(g_st, d1.txn_id);
	ck_assert_ptr_nonnull(tx);
	ck_assert_str_eq(tx->action, action);
	ck_assert_str_eq(tx->idem_key, key);
	ck_assert_int_eq(check_req(a, action, 5, key, T0, &d2), 0);
	ck_assert_int_eq(d2.replayed, 1);
	ck_assert_uint_eq(d2.txn_id, d1.txn_id);
	/* a key differing only in its last byte is another key */
	key[SC_KEY_MAX - 1] = 'j';
	ck_assert_int_eq(check_req(a, action, 5, key, T0, &d2), 0);
	ck_assert_int_eq(d2.replayed, 0);
}
END_TEST

/* ====================================================================== */
/* more edges */

START_TEST(test_org_balance_zero_makes_it_limited)
{
	uint64_t a = simple_agent("a", 1000, NULL);

	wallet_update(g_org, 1, SC_WALLET_SET_BALANCE, 0, 0, 0, 0);
	ck_assert_uint_eq(OW()->limited, 1);
	BLOCK(a, "x", 1, T0, "org_empty");
}
END_TEST

/* A hold placed while the org wallet gated nothing must not be released
 * from it after the org wallet became limited. */
START_TEST(test_hold_from_before_org_was_limited)
{
	uint32_t s;
	uint64_t a = simple_agent("a", 1000, &s);
	uint64_t t = ALLOW(a, "x", 100, T0);
	uint64_t t2;

	org_fund(500, 0, 0);
	ck_assert_int_eq(OW()->held, 0);
	t2 = ALLOW(a, "x", 50, T0);
	ck_assert_int_eq(OW()->held, 50);
	SETTLE(t, SC_OUTCOME_SUCCESS, 0, 0, T0);
	ck_assert_int_eq(OW()->held, 50);
	ck_assert_int_ge(OW()->balance, 0);
	SETTLE(t2, SC_OUTCOME_SUCCESS, 0, 0, T0);
	ck_assert_int_eq(OW()->held, 0);
	ck_assert_int_eq(AW(s)->balance, 850);
	ck_assert_int_eq(AW(s)->held, 0);
}
END_TEST

START_TEST(test_critical_warnings_bounded)
{
	struct state_rule_spec r = rspec("r", "*", 1, 1, 1);
	uint32_t s;
	uint64_t a = agent_new("a", SC_PRIORITY_CRITICAL, 10, 1, 1, &r, 1, &s);
	struct gate_decision d;

	org_fund(10, 1, 1);
	ALLOW(a, "x", 1, T0);
	/* nine limits exceeded at once, room for SC_WARNINGS_MAX = 8 */
	ck_assert_int_eq(check_req(a, "x", 100, NULL, T0, &d), 0);
	ck_assert_int_eq(d.allowed, 1);
	ck_assert_int_eq(d.risk, GATE_RISK_HIGH);
	ck_assert_uint_ge(d.n_warnings, 1);
	ck_assert_uint_le(d.n_warnings, SC_WARNINGS_MAX);
	ck_assert_str_eq(d.warnings[0], "org:max_per_txn");
	for (unsigned i = 0; i < d.n_warnings; i++)
		ck_assert_uint_lt(strlen(d.warnings[i]), sizeof d.warnings[i]);
}
END_TEST

START_TEST(test_throttled_unlimited_rule_stays_unlimited)
{
	struct state_rule_spec r = rspec("r", "*", 0, 0, 0);
	uint32_t s;
	uint64_t a = agent_new("a", SC_PRIORITY_NORMAL, 1000, 0, 0, &r, 1, &s);

	set_status(s, SC_STATUS_THROTTLED);
	for (int i = 0; i < 10; i++)
		SETTLE(ALLOW(a, "x", 1, T0), SC_OUTCOME_FAILURE, 0, 0, T0);
}
END_TEST

/* A hold placed before midnight and settled after counts on the new day. */
START_TEST(test_report_after_midnight_counts_new_day)
{
	struct state_rule_spec r = rspec("r", "*", 0, 1000, 0);
	uint32_t s, rs;
	uint64_t a = agent_new("a", SC_PRIORITY_NORMAL, 10000, 0, 1000, &r, 1, &s);
	uint64_t t;

	rs = rule_slot(s, "r");
	SETTLE(ALLOW(a, "x", 500, T0), SC_OUTCOME_SUCCESS, 0, 0, T0);
	t = ALLOW(a, "x", 100, MIDNIGHT - MIN);
	SETTLE(t, SC_OUTCOME_SUCCESS, 0, 0, MIDNIGHT + MIN);
	ck_assert_int_eq(AW(s)->day, T0_DAY + 1);
	ck_assert_int_eq(AW(s)->daily_spent, 100);
	ck_assert_int_eq(g_m->rules[rs].day, T0_DAY + 1);
	ck_assert_int_eq(g_m->rules[rs].daily_spent, 100);
	BLOCK(a, "x", 901, MIDNIGHT + MIN, "wallet:daily_spend_limit");
	ALLOW(a, "x", 900, MIDNIGHT + MIN);
}
END_TEST

START_TEST(test_key_forgotten_after_history_wrap)
{
	struct shm_caps caps = { 4, 8, 64, 8, 8, 8, 8, 8, 8, 128 };
	uint64_t a, t1;
	struct gate_decision d;

	open_state(caps, TTL, 1);
	a = simple_agent("a", 100000, NULL);
	ck_assert_int_eq(check_req(a, "x", 10, "k", T0, &d), 0);
	t1 = d.txn_id;
	SETTLE(t1, SC_OUTCOME_SUCCESS, 0, 0, T0);
	for (int i = 0; i < 10; i++)
		SETTLE(ALLOW(a, "y", 1, T0), SC_OUTCOME_SUCCESS, 0, 0, T0);
	ck_assert_ptr_null(state_txn_by_id(g_st, t1));
	ck_assert_ptr_null(state_txn_by_key(g_st, a, str("k")));
	ck_assert_int_eq(report_rc(t1, SC_OUTCOME_SUCCESS, 0, 0, T0), SC_ENOTFOUND);
	/* the key is free again: a new decision, even with another estimate */
	ck_assert_int_eq(check_req(a, "x", 20, "k", T0, &d), 0);
	ck_assert_int_eq(d.replayed, 0);
	ck_assert_int_eq(d.allowed, 1);
	ck_assert_uint_gt(d.txn_id, t1);
}
END_TEST

START_TEST(test_expiry_queue_after_reports_out_of_order)
{
	uint32_t s;
	uint64_t a = simple_agent("a", 1000, &s);
	uint64_t t1 = ALLOW(a, "x", 1, T0);
	uint64_t t2 = ALLOW(a, "x", 2, T0 + 10 * SEC);
	uint64_t t3 = ALLOW(a, "x", 4, T0 + 20 * SEC);
	uint64_t t4;

	SETTLE(t2, SC_OUTCOME_FAILURE, 0, 0, T0 + 30 * SEC);
	ck_assert_int_eq(gate_next_expiry(g_st), T0 + TTL);
	SETTLE(t1, SC_OUTCOME_FAILURE, 0, 0, T0 + 30 * SEC);
	ck_assert_int_eq(gate_next_expiry(g_st), T0 + 20 * SEC + TTL);
	t4 = ALLOW(a, "x", 8, T0 + 40 * SEC);
	ck_assert_uint_eq(state_hold_oldest(g_st) != SHM_NONE, 1);
	ck_assert_uint_eq(g_m->holds[state_hold_oldest(g_st)].txn_id, t3);
	ck_assert_uint_eq(gate_expire(g_st, T0 + 40 * SEC + TTL), 2);
	ck_assert_int_eq(state_txn_by_id(g_st, t4)->status, SC_TXN_EXPIRED);
	ck_assert_int_eq(AW(s)->balance, 1000 - 12);
	ck_assert_int_eq(gate_next_expiry(g_st), INT64_MAX);
	ck_assert_uint_eq(state_hold_oldest(g_st), SHM_NONE);
}
END_TEST

START_TEST(test_rule_update_match_changes_matching)
{
	struct state_rule_spec r[2];
	struct state_rule_spec upd;
	uint32_t s, rs;
	uint64_t a, rid;

	r[0] = rspec("r", "a.*", 10, 0, 0);
	r[1] = rspec("q", "c.*", 10, 0, 0);
	a = agent_new("a", SC_PRIORITY_NORMAL, 1000, 0, 0, r, 2, &s);
	rid = g_m->rules[rule_slot(s, "r")].id;
	BLOCK(a, "a.x", 100, T0, "rule:r:max_cost_per_txn");
	memset(&upd, 0, sizeof upd);
	upd.set = STATE_RULE_SET_MATCH;
	upd.match = str("b.*");
	ck_assert_int_eq(state_rule_update(g_st, s, rid, &upd, &rs, g_err, sizeof g_err), 0);
	ck_assert_str_eq(rule_match(&g_m->rules[rs]), "b.*");
	ALLOW(a, "a.x", 100, T0);
	BLOCK(a, "b.x", 100, T0, "rule:r:max_cost_per_txn");
	upd.match = str("c.*");
	ck_assert_int_eq(state_rule_update(g_st, s, rid, &upd, &rs, g_err, sizeof g_err),
	                 SC_EEXISTS);
	upd.match = str("c*");
	ck_assert_int_eq(state_rule_update(g_st, s, rid, &upd, &rs, g_err, sizeof g_err),
	                 SC_EINVAL);
	upd.set = STATE_RULE_SET_NAME;
	upd.name = str("q");
	ck_assert_int_eq(state_rule_update(g_st, s, rid, &upd, &rs, g_err, sizeof g_err),
	                 SC_EEXISTS);
	ck_assert_int_eq(state_rule_update(g_st, s, 987654, &upd, &rs, g_err, sizeof g_err),
	                 SC_ENOTFOUND);
	BLOCK(a, "b.x", 100, T0, "rule:r:max_cost_per_txn");
}
END_TEST

START_TEST(test_agent_delete_frees_its_rules)
{
	struct state_rule_spec r[3];
	struct state_counts c0, c1;
	uint32_t s;

	r[0] = rspec("r0", "a.*", 0, 0, 0);
	r[1] = rspec("r1", "b.*", 0, 0, 0);
	r[2] = rspec("r2", "c.*", 0, 0, 0);
	agent_new("a", SC_PRIORITY_NORMAL, 1000, 0, 0, r, 3, &s);
	state_counts(g_st, &c0);
	ck_assert_int_eq(state_agent_delete(g_st, s, g_err, sizeof g_err), 0);
	state_counts(g_st, &c1);
	ck_assert_uint_eq(c1.agents, c0.agents - 1);
	ck_assert_uint_eq(c1.rules, c0.rules - 3);
	/* the same name can be used again in the org */
	agent_new("a", SC_PRIORITY_NORMAL, 1000, 0, 0, r, 3, &s);
}
END_TEST

/* ====================================================================== */
/* restart: the state model re-attaches to the segment it left */

START_TEST(test_restart_keeps_holds_keys_and_expiry_queue)
{
	struct state_rule_spec r = rspec("r", "api.*", 0, 1000, 3);
	uint32_t s, s2, rs, hs;
	uint64_t a, t1, t2;
	struct gate_decision d;

	org_fund(5000, 0, 0);
	a = agent_new("a", SC_PRIORITY_NORMAL, 1000, 0, 0, &r, 1, &s);
	ck_assert_int_eq(check_req(a, "api.x", 100, "key-1", T0, &d), 0);
	ck_assert_int_eq(d.allowed, 1);
	t1 = d.txn_id;
	t2 = ALLOW(a, "api.y", 50, T0 + 10 * SEC);

	reattach();
	ck_assert_int_eq(state_agent_by_id(g_st, a, &s2), 0);
	ck_assert_uint_eq(s2, s);
	ck_assert_int_eq(state_org_by_name(g_st, str("acme"), &s2), 0);
	ck_assert_uint_eq(s2, g_org);
	rs = state_rule_match(g_st, s, "api.z", 5);
	ck_assert_uint_eq(rs, rule_slot(s, "r"));
	ck_assert_int_eq(gate_rate_count(&g_m->rules[rs], T0 + 10 * SEC), 2);
	ck_assert_int_eq(state_hold_by_txn(g_st, t1, &hs), 0);
	ck_assert_int_eq(state_hold_by_txn(g_st, t2, &hs), 0);
	ck_assert_int_eq(gate_next_expiry(g_st), T0 + TTL);

	/* the key is remembered */
	ck_assert_int_eq(check_req(a, "api.x", 100, "key-1", T0 + 20 * SEC, &d), 0);
	ck_assert_int_eq(d.replayed, 1);
	ck_assert_uint_eq(d.txn_id, t1);
	ck_assert_int_eq(AW(s)->held, 150);
	/* the rule's hourly window survived: one more, then blocked */
	ALLOW(a, "api.z", 1, T0 + 20 * SEC);
	BLOCK(a, "api.z", 1, T0 + 20 * SEC, "rule:r:hourly_rate_limit");

	SETTLE(t1, SC_OUTCOME_SUCCESS, 1, 90, T0 + 30 * SEC);
	ck_assert_int_eq(AW(s)->balance, 910);
	ck_assert_int_eq(OW()->balance, 4910);
	ck_assert_int_eq(gate_next_expiry(g_st), T0 + 10 * SEC + TTL);
	ck_assert_uint_eq(gate_expire(g_st, T0 + 10 * SEC + TTL), 1);
	ck_assert_int_eq(state_txn_by_id(g_st, t2)->status, SC_TXN_EXPIRED);
	ck_assert_int_eq(AW(s)->balance, 860);
	ck_assert_int_eq(AW(s)->held, 1);
	ck_assert_int_eq(g_m->rules[rs].held, 1);
	/* new ids continue after the old ones */
	ck_assert_uint_gt(ALLOW(a, "other", 1, T0 + HOUR), t2);
}
END_TEST

START_TEST(test_restart_then_more_objects)
{
	uint32_t s1, s2;
	uint64_t a1 = simple_agent("a1", 100, &s1);
	uint64_t a2;

	reattach();
	a2 = simple_agent("a2", 100, &s2);
	ck_assert_uint_gt(a2, a1);
	ck_assert_uint_ne(s2, s1);
	ck_assert_uint_eq(g_m->orgs[g_org].n_agents, 2);
	ck_assert_uint_eq(g_m->agents[s1].id, a1);
	ck_assert_int_eq(state_agent_create(g_st,
	                                    &(struct state_agent_spec){ .org_slot = g_org,
	                                                                .name = str("a1") },
	                                    T0, &s2, g_err, sizeof g_err),
	                 SC_EEXISTS);
}
END_TEST

/* ====================================================================== */
/* invariant sweep: a seeded random mix of everything */

#define SW_AGENTS 5
#define SW_KEYS 8
#define SW_SETTLED 64
#define SW_REQUIRE(cond, ...)                      \
	do {                                       \
		if (!(cond))                       \
			ck_abort_msg(__VA_ARGS__); \
	} while (0)

static const char *const sw_actions[] = { "openai.chat", "openai.embed", "tool.search",
	                                  "flight.booking", "openai" };
#define SW_NACTIONS (sizeof sw_actions / sizeof sw_actions[0])

struct sw_open {
	uint64_t txn;
	int agent;
	int64_t est, due;
};

struct sw_settled {
	uint64_t txn;
	enum sc_outcome outcome;
	int has;
	int64_t actual, charged;
};

struct sw_key {
	int used, action, allowed;
	int64_t est;
	uint64_t txn;
};

struct sweep {
	uint64_t rng;
	int64_t now;
	uint64_t id[SW_AGENTS];
	uint32_t slot[SW_AGENTS];
	int64_t net[SW_AGENTS]; /* balance - debt each agent wallet must show */
	int64_t org_net;
	struct sw_open open[128];
	unsigned n_open;
	struct sw_settled settled[SW_SETTLED];
	unsigned n_settled;
	struct sw_key keys[SW_AGENTS][SW_KEYS];
	int frozen1;
	int small; /* history shorter than the life of some holds; no keys */
	unsigned n_allowed, n_blocked, n_reports, n_expired, n_replays, n_full;
	uint64_t step;
};

static uint64_t sw_rnd(struct sweep *w)
{
	w->rng ^= w->rng >> 12;
	w->rng ^= w->rng << 25;
	w->rng ^= w->rng >> 27;
	return w->rng * UINT64_C(0x2545F4914F6CDD1D);
}

static int64_t sw_below(struct sweep *w, int64_t n)
{
	return (int64_t)(sw_rnd(w) % (uint64_t)n);
}

static void sw_expire_to(struct sweep *w, int64_t now)
{
	unsigned expected = 0, n;

	w->now = now;
	for (unsigned i = 0; i < w->n_open; i++)
		if (w->open[i].due <= now)
			expected++;
	n = gate_expire(g_st, now);
	SW_REQUIRE(n == expected, "step %llu: gate_expire expired %u, %u were due",
	           (unsigned long long)w->step, n, expected);
	for (unsigned i = 0; i < w->n_open;) {
		struct sw_open *o = &w->open[i];

		if (o->due > now) {
			i++;
			continue;
		}
		struct shm_txn *tx = state_txn_by_id(g_st, o->txn);

		SW_REQUIRE((w->small && !tx) ||
		                   (tx && tx->status == SC_TXN_EXPIRED && tx->charged == o->est),
		           "step %llu: txn %llu not expired with its estimate charged",
		           (unsigned long long)w->step, (unsigned long long)o->txn);
		w->net[o->agent] -= o->est;
		w->org_net -= o->est;
		w->n_expired++;
		w->open[i] = w->open[--w->n_open];
	}
}

/* The agent's rules from the rule table itself, not from its list. */
static unsigned sw_rules_of(uint32_t agent_slot, uint32_t *slots)
{
	unsigned n = 0;

	for (uint32_t rs = 0; rs < g_m->hdr->rule_cap; rs++)
		if (g_m->rules[rs].rec.used && g_m->rules[rs].agent_slot == agent_slot)
			slots[n++] = rs;
	return n;
}

static const struct shm_rule *sw_rule_by_id(uint32_t agent_slot, uint64_t id, uint32_t *rs_out)
{
	uint32_t slots[64];
	unsigned n = sw_rules_of(agent_slot, slots);

	for (unsigned i = 0; i < n; i++) {
		uint32_t rs = slots[i];

		if (g_m->rules[rs].id == id) {
			if (rs_out)
				*rs_out = rs;
			return &g_m->rules[rs];
		}
	}
	return NULL;
}

/* The most specific rule by our own reading of the spec, or 0. */
static uint64_t sw_expected_rule(uint32_t agent_slot, const char *action)
{
	uint32_t slots[64];
	unsigned n = sw_rules_of(agent_slot, slots);
	int best = -1;
	uint64_t id = 0;

	for (unsigned i = 0; i < n; i++) {
		const struct shm_rule *r = &g_m->rules[slots[i]];
		int rank = gate_pattern_rank(rule_match(r), strlen(rule_match(r)), action,
		                             strlen(action));

		if (rank > best) {
			best = rank;
			id = r->id;
		}
	}
	return id;
}

/* The limits an allowed check of a non-critical agent must have respected. */
static void sw_after_allowed(struct sweep *w, int ai, uint64_t txn, const char *action,
                             int64_t est)
{
	uint32_t s = w->slot[ai];
	const struct shm_wallet *aw = AW(s);
	const struct shm_wallet *ow = OW();
	const struct shm_agent *ag = &g_m->agents[s];
	const struct shm_txn *tx = state_txn_by_id(g_st, txn);
	const struct shm_rule *r;
	unsigned long long st = (unsigned long long)w->step;

	SW_REQUIRE(aw->held <= aw->balance, "step %llu: agent %d held %lld > balance %lld", st, ai,
	           (long long)aw->held, (long long)aw->balance);
	SW_REQUIRE(!aw->max_per_txn || est <= aw->max_per_txn, "step %llu: wallet max", st);
	SW_REQUIRE(!aw->daily_limit ||
	                   gate_daily_used(aw->day, aw->daily_spent, aw->held, gate_day(w->now)) <=
	                           aw->daily_limit,
	           "step %llu: agent %d over its daily limit", st, ai);
	SW_REQUIRE(ow->held <= ow->balance, "step %llu: org held %lld > balance %lld", st,
	           (long long)ow->held, (long long)ow->balance);
	SW_REQUIRE(!ow->max_per_txn || est <= ow->max_per_txn, "step %llu: org max", st);
	SW_REQUIRE(!ow->daily_limit ||
	                   gate_daily_used(ow->day, ow->daily_spent, ow->held, gate_day(w->now)) <=
	                           ow->daily_limit,
	           "step %llu: org over its daily limit", st);
	SW_REQUIRE(aw->debt == 0 && ow->debt == 0, "step %llu: allowed with debt", st);
	SW_REQUIRE(ag->status != SC_STATUS_FROZEN, "step %llu: frozen agent allowed", st);
	SW_REQUIRE(tx != NULL, "step %llu: allowed txn %llu not in history", st,
	           (unsigned long long)txn);
	SW_REQUIRE(tx->rule_id == sw_expected_rule(s, action),
	           "step %llu: %s matched rule %llu, expected %llu", st, action,
	           (unsigned long long)tx->rule_id,
	           (unsigned long long)sw_expected_rule(s, action));
	if (!tx->rule_id)
		return;
	r = sw_rule_by_id(s, tx->rule_id, NULL);
	SW_REQUIRE(r != NULL, "step %llu: rule %llu missing", st, (unsigned long long)tx->rule_id);
	SW_REQUIRE(!r->max_cost_per_txn || est <= r->max_cost_per_txn, "step %llu: rule max", st);
	SW_REQUIRE(!r->daily_limit ||
	                   gate_daily_used(r->day, r->daily_spent, r->held, gate_day(w->now)) <=
	                           r->daily_limit,
	           "step %llu: rule %s over its daily limit", st, rule_name(r));
	if (r->hourly_limit) {
		int64_t lim = r->hourly_limit;

		if (ag->status == SC_STATUS_THROTTLED)
			lim = lim / 2 > 0 ? lim / 2 : 1;
		SW_REQUIRE(gate_rate_count(r, w->now) <= lim,
		           "step %llu: rule %s counted %lld calls, limit %lld", st, rule_name(r),
		           (long long)gate_rate_count(r, w->now), (long long)lim);
	}
}

static void sw_check(struct sweep *w)
{
	int ai = (int)sw_below(w, SW_AGENTS);
	uint32_t s = w->slot[ai];
	int act = (int)sw_below(w, SW_NACTIONS);
	int64_t est = sw_below(w, 10) == 0 ? sw_below(w, 100) : sw_below(w, 250000);
	int k = sw_below(w, 5) == 0 && !w->small ? (int)sw_below(w, SW_KEYS) : -1;
	char key[16];

	/* half the reuses of a key are true retries */
	if (k >= 0 && w->keys[ai][k].used && sw_below(w, 2)) {
		act = w->keys[ai][k].action;
		est = w->keys[ai][k].est;
	}
	struct shm_wallet before = *AW(s);
	uint64_t topups0 = g_m->hdr->topups, next0 = g_m->hdr->next_txn_id;
	struct gate_decision d;
	unsigned long long st = (unsigned long long)w->step;
	int rc;

	snprintf(key, sizeof key, "k%d", k);
	rc = check_req(w->id[ai], sw_actions[act], est, k >= 0 ? key : NULL, w->now, &d);
	if (k >= 0 && w->keys[ai][k].used) {
		struct sw_key *kk = &w->keys[ai][k];

		if (kk->action == act && kk->est == est) {
			SW_REQUIRE(rc == 0 && d.replayed && d.txn_id == kk->txn &&
			                   d.allowed == kk->allowed,
			           "step %llu: replay of key %s: rc %d replayed %d txn %llu/%llu", st,
			           key, rc, d.replayed, (unsigned long long)d.txn_id,
			           (unsigned long long)kk->txn);
			w->n_replays++;
		} else {
			SW_REQUIRE(rc == SC_EEXISTS, "step %llu: reused key %s: rc %d", st, key, rc);
		}
		SW_REQUIRE(AW(s)->held == before.held && AW(s)->balance == before.balance &&
		                   g_m->hdr->next_txn_id == next0,
		           "step %llu: a replay changed the wallet", st);
		return;
	}
	if (rc == SC_ELIMIT) {
		w->n_full++;
		SW_REQUIRE(w->n_open == g_m->hdr->hold_cap,
		           "step %llu: SC_ELIMIT with %u of %u holds open", st, w->n_open,
		           g_m->hdr->hold_cap);
		SW_REQUIRE(AW(s)->held == before.held && AW(s)->balance == before.balance,
		           "step %llu: SC_ELIMIT changed the wallet", st);
		return;
	}
	SW_REQUIRE(rc == 0, "step %llu: gate_check returned %d (%s)", st, rc, g_err);
	SW_REQUIRE(!d.replayed && d.txn_id != 0, "step %llu: fresh check replayed/no id", st);
	if (g_m->agents[s].priority == SC_PRIORITY_HIGH)
		w->net[ai] += (int64_t)(g_m->hdr->topups - topups0) * (AW(s)->budget / 2);
	else
		SW_REQUIRE(g_m->hdr->topups == topups0, "step %llu: top-up of a non-high agent", st);
	if (k >= 0) {
		w->keys[ai][k].used = 1;
		w->keys[ai][k].action = act;
		w->keys[ai][k].est = est;
		w->keys[ai][k].txn = d.txn_id;
		w->keys[ai][k].allowed = d.allowed;
	}
	if (!d.allowed) {
		w->n_blocked++;
		SW_REQUIRE(d.block_reason[0] != '\0', "step %llu: blocked without reason", st);
		SW_REQUIRE(AW(s)->held == before.held, "step %llu: blocked check held money", st);
		SW_REQUIRE(g_m->agents[s].priority != SC_PRIORITY_CRITICAL ||
		                   !strcmp(d.block_reason, "agent_frozen"),
		           "step %llu: critical agent blocked: %s", st, d.block_reason);
		return;
	}
	w->n_allowed++;
	SW_REQUIRE(AW(s)->held == before.held + est, "step %llu: held %lld, expected %lld + %lld",
	           st, (long long)AW(s)->held, (long long)before.held, (long long)est);
	SW_REQUIRE(d.available == AW(s)->balance - AW(s)->held, "step %llu: available", st);
	if (g_m->agents[s].priority != SC_PRIORITY_CRITICAL)
		sw_after_allowed(w, ai, d.txn_id, sw_actions[act], est);
	else
		SW_REQUIRE(d.n_warnings == 0 || d.risk == GATE_RISK_HIGH,
		           "step %llu: critical warned at low risk", st);
	SW_REQUIRE(w->n_open < sizeof w->open / sizeof w->open[0], "too many open holds");
	w->open[w->n_open].txn = d.txn_id;
	w->open[w->n_open].agent = ai;
	w->open[w->n_open].est = est;
	w->open[w->n_open].due = w->now + TTL;
	w->n_open++;
}

static void sw_report(struct sweep *w)
{
	unsigned i;
	struct sw_open o;
	enum sc_outcome outcome = (enum sc_outcome)sw_below(w, 3);
	int has = outcome == SC_OUTCOME_PARTIAL ? 1 : (int)sw_below(w, 2);
	int64_t actual, expect;
	struct gate_settlement s;
	unsigned long long st = (unsigned long long)w->step;
	int rc;

	if (!w->n_open)
		return;
	i = (unsigned)sw_below(w, w->n_open);
	o = w->open[i];
	actual = has ? sw_below(w, 2 * o.est + 1000) : 0;
	rc = gate_report(g_st, o.txn, outcome, has, actual, w->now, &s, g_err, sizeof g_err);
	if (rc == SC_ENOTFOUND && w->small && !state_txn_by_id(g_st, o.txn))
		return; /* out of the history: the hold stays open until it expires */
	SW_REQUIRE(rc == 0, "step %llu: report of %llu returned %d (%s)", st,
	           (unsigned long long)o.txn, rc, g_err);
	expect = has ? actual : (outcome == SC_OUTCOME_SUCCESS ? o.est : 0);
	SW_REQUIRE(s.charged == expect && !s.replayed && s.txn_id == o.txn,
	           "step %llu: settlement charged %lld, expected %lld", st, (long long)s.charged,
	           (long long)expect);
	SW_REQUIRE(s.balance == AW(w->slot[o.agent])->balance &&
	                   s.debt == AW(w->slot[o.agent])->debt,
	           "step %llu: settlement balance/debt differ from the wallet", st);
	w->net[o.agent] -= s.charged;
	w->org_net -= s.charged;
	w->n_reports++;
	w->open[i] = w->open[--w->n_open];
	w->settled[w->n_settled % SW_SETTLED].txn = o.txn;
	w->settled[w->n_settled % SW_SETTLED].outcome = outcome;
	w->settled[w->n_settled % SW_SETTLED].has = has;
	w->settled[w->n_settled % SW_SETTLED].actual = actual;
	w->settled[w->n_settled % SW_SETTLED].charged = s.charged;
	w->n_settled++;
}

static void sw_report_again(struct sweep *w)
{
	struct sw_settled *e;
	struct gate_settlement s;
	unsigned long long st = (unsigned long long)w->step;
	int rc;

	if (!w->n_settled)
		return;
	e = &w->settled[sw_below(w, w->n_settled < SW_SETTLED ? w->n_settled : SW_SETTLED)];
	if (!state_txn_by_id(g_st, e->txn)) {
		rc = gate_report(g_st, e->txn, e->outcome, e->has, e->actual, w->now, &s, g_err,
		                 sizeof g_err);
		SW_REQUIRE(w->small && rc == SC_ENOTFOUND,
		           "step %llu: report of a forgotten txn: rc %d", st, rc);
	} else if (sw_below(w, 2)) {
		rc = gate_report(g_st, e->txn, e->outcome, e->has, e->actual, w->now, &s, g_err,
		                 sizeof g_err);
		SW_REQUIRE(rc == 0 && s.replayed && s.charged == e->charged,
		           "step %llu: same report again: rc %d replayed %d", st, rc, s.replayed);
	} else {
		enum sc_outcome other = (enum sc_outcome)((e->outcome + 1) % 3);

		rc = gate_report(g_st, e->txn, other, 1, e->charged + 1, w->now, &s, g_err,
		                 sizeof g_err);
		SW_REQUIRE(rc == SC_EEXISTS, "step %llu: different report again: rc %d", st, rc);
	}
}

static void sw_fund(struct sweep *w)
{
	int ai = (int)sw_below(w, SW_AGENTS + 1);
	int64_t add = sw_below(w, 300000);
	int clear = (int)sw_below(w, 2);

	if (ai == SW_AGENTS) {
		struct shm_wallet *ow = OW();

		wallet_update(g_org, 1, SC_WALLET_SET_BALANCE | (clear ? SC_WALLET_SET_DEBT : 0u),
		              ow->balance + add * 4, 0, 0, 0);
		w->org_net = ow->balance - ow->debt;
	} else {
		struct shm_wallet *aw = AW(w->slot[ai]);

		wallet_update(w->slot[ai], 0,
		              SC_WALLET_SET_BALANCE | (clear ? SC_WALLET_SET_DEBT : 0u),
		              aw->balance + add, 0, 0, 0);
		w->net[ai] = aw->balance - aw->debt;
	}
}

static void sw_invariants(struct sweep *w)
{
	int64_t org_held = 0;
	int64_t agent_held[SW_AGENTS] = { 0 };
	unsigned n = 0;
	unsigned long long st = (unsigned long long)w->step;

	for (uint32_t i = 0; i < g_m->hdr->hold_cap; i++) {
		const struct shm_hold *h = &g_m->holds[i];

		if (!h->rec.used)
			continue;
		n++;
		if (h->org_limited)
			org_held += h->amount;
		for (int a = 0; a < SW_AGENTS; a++)
			if (h->agent_slot == w->slot[a])
				agent_held[a] += h->amount;
	}
	SW_REQUIRE(n == w->n_open, "step %llu: %u holds in the table, %u open", st, n, w->n_open);
	for (int a = 0; a < SW_AGENTS; a++) {
		const struct shm_wallet *aw = AW(w->slot[a]);
		const struct shm_agent *ag = &g_m->agents[w->slot[a]];

		SW_REQUIRE(aw->balance >= 0 && aw->debt >= 0, "step %llu: agent %d balance %lld debt %lld",
		           st, a, (long long)aw->balance, (long long)aw->debt);
		SW_REQUIRE(aw->held == agent_held[a], "step %llu: agent %d held %lld, holds sum %lld", st,
		           a, (long long)aw->held, (long long)agent_held[a]);
		SW_REQUIRE(aw->balance - aw->debt == w->net[a],
		           "step %llu: agent %d balance-debt %lld, expected %lld", st, a,
		           (long long)(aw->balance - aw->debt), (long long)w->net[a]);
		for (uint32_t rs = ag->first_rule; rs != SHM_NONE; rs = g_m->rules[rs].next) {
			int64_t sum = 0;

			for (uint32_t i = 0; i < g_m->hdr->hold_cap; i++)
				if (g_m->holds[i].rec.used && g_m->holds[i].rule_slot == rs)
					sum += g_m->holds[i].amount;
			SW_REQUIRE(g_m->rules[rs].held == sum, "step %llu: rule %s held %lld, holds %lld",
			           st, rule_name(&g_m->rules[rs]), (long long)g_m->rules[rs].held,
			           (long long)sum);
		}
	}
	SW_REQUIRE(OW()->balance >= 0 && OW()->debt >= 0, "step %llu: org balance/debt negative", st);
	SW_REQUIRE(OW()->held == org_held, "step %llu: org held %lld, holds sum %lld", st,
	           (long long)OW()->held, (long long)org_held);
	SW_REQUIRE(OW()->balance - OW()->debt == w->org_net,
	           "step %llu: org balance-debt %lld, expected %lld", st,
	           (long long)(OW()->balance - OW()->debt), (long long)w->org_net);
}

static void run_sweep(struct shm_caps caps, uint64_t seed, int small)
{
	static struct sweep w;
	struct state_rule_spec r0[2], r1, r3, r4;

	open_state(caps, TTL, 1);
	memset(&w, 0, sizeof w);
	w.rng = seed;
	w.small = small;
	w.now = T0;
	org_fund(5000000, 400000, 3000000);
	w.org_net = 5000000;
	r0[0] = rspec("oa", "openai.*", 150000, 400000, 20);
	r0[1] = rspec("all", "*", 0, 0, 30);
	r1 = rspec("chat", "openai.chat", 0, 100000, 5);
	r3 = rspec("any", "*", 1000, 0, 0);
	r4 = rspec("t", "tool.*", 0, 0, 6);
	w.id[0] = agent_new("a0", SC_PRIORITY_NORMAL, 1000000, 200000, 600000, r0, 2, &w.slot[0]);
	w.id[1] = agent_new("a1", SC_PRIORITY_NORMAL, 300000, 0, 0, &r1, 1, &w.slot[1]);
	w.id[2] = agent_new("a2", SC_PRIORITY_HIGH, 500000, 0, 0, NULL, 0, &w.slot[2]);
	w.id[3] = agent_new("a3", SC_PRIORITY_CRITICAL, 100000, 0, 0, &r3, 1, &w.slot[3]);
	w.id[4] = agent_new("a4", SC_PRIORITY_NORMAL, 800000, 0, 0, &r4, 1, &w.slot[4]);
	set_status(w.slot[4], SC_STATUS_THROTTLED);
	for (int a = 0; a < SW_AGENTS; a++)
		w.net[a] = AW(w.slot[a])->balance;

	for (w.step = 0; w.step < 5000; w.step++) {
		int64_t op = sw_below(&w, 100);

		if (op < 45)
			sw_check(&w);
		else if (op < 70)
			sw_report(&w);
		else if (op < 75)
			sw_report_again(&w);
		else if (op < 85)
			sw_expire_to(&w, w.now + sw_below(&w, 20 * MIN));
		else if (op < 90)
			sw_fund(&w);
		else if (op < 94)
			sw_expire_to(&w, w.now + sw_below(&w, 3 * HOUR));
		else if (op < 96) {
			w.frozen1 = !w.frozen1;
			set_status(w.slot[1], w.frozen1 ? SC_STATUS_FROZEN : SC_STATUS_ACTIVE);
		} else {
			sw_expire_to(&w, w.now + sw_below(&w, 5 * SEC));
		}
		sw_invariants(&w);
	}
	if (small) {
		ck_assert_uint_gt(w.n_full, 10);
		ck_assert_uint_gt(w.n_allowed, 200);
		ck_assert_uint_gt(w.n_expired, 10);
		return;
	}
	/* the mix really exercised both sides */
	ck_assert_uint_gt(w.n_allowed, 200);
	ck_assert_uint_gt(w.n_blocked, 50);
	ck_assert_uint_gt(w.n_reports, 200);
	ck_assert_uint_gt(w.n_expired, 10);
	ck_assert_uint_gt(w.n_replays, 5);
}

START_TEST(test_random_sweep_keeps_invariants)
{
	struct shm_caps caps = { 4, 8, 64, 64, 8192, 8192, 8192, 8192, 8192, 128 };

	run_sweep(caps, UINT64_C(0x5eed5eed12345678), 0);
}
END_TEST

START_TEST(test_random_sweep_other_seed)
{
	struct shm_caps caps = { 4, 8, 64, 64, 8192, 8192, 8192, 8192, 8192, 128 };

	run_sweep(caps, UINT64_C(0x0123456789abcdef), 0);
}
END_TEST

/* Four hold slots and a 32-transaction history: full tables and reuse. */
START_TEST(test_random_sweep_small_tables)
{
	struct shm_caps caps = { 4, 8, 64, 4, 32, 32, 32, 32, 32, 128 };

	run_sweep(caps, UINT64_C(0xfeedface0badf00d), 1);
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

	t = tc("hold_lifecycle", 1);
	tcase_add_loop_test(t, test_report_settles_hold, 0,
	                    sizeof(settle_cases) / sizeof(settle_cases[0]));
	tcase_add_test(t, test_report_finds_holds_in_any_order);
	tcase_add_test(t, test_report_partial_requires_actual);
	tcase_add_test(t, test_report_above_balance_becomes_debt);
	tcase_add_test(t, test_report_negative_actual_is_invalid);
	tcase_add_test(t, test_report_of_blocked_or_unknown_txn);
	suite_add_tcase(s, t);

	t = tc("money_overflow", 1);
	tcase_add_test(t, test_estimate_near_int64_max_does_not_wrap);
	tcase_add_test(t, test_critical_hold_overflow_refused);
	tcase_add_test(t, test_report_actual_overflow_refused_or_saturated);
	suite_add_tcase(s, t);

	t = tc("request_validation", 1);
	tcase_add_test(t, test_invalid_requests_change_nothing);
	tcase_add_test(t, test_type_and_metadata_kept_with_transaction);
	suite_add_tcase(s, t);

	t = tc("idempotent_check", 1);
	tcase_add_test(t, test_check_replay_returns_original_without_second_hold);
	tcase_add_test(t, test_check_replay_of_blocked_decision);
	tcase_add_test(t, test_check_replay_after_report);
	tcase_add_test(t, test_check_key_mismatch_is_exists);
	tcase_add_test(t, test_check_keys_are_per_agent);
	suite_add_tcase(s, t);

	t = tc("idempotent_report", 1);
	tcase_add_test(t, test_report_replay_same_values_charges_once);
	tcase_add_test(t, test_report_replay_with_default_cost);
	tcase_add_test(t, test_report_replay_different_values_is_exists);
	suite_add_tcase(s, t);

	t = tc("expiry", 1);
	tcase_add_test(t, test_next_expiry_is_created_plus_ttl);
	tcase_add_test(t, test_expire_before_due_does_nothing);
	tcase_add_test(t, test_expire_at_due_charges_estimate);
	tcase_add_test(t, test_expire_charges_nothing_when_configured);
	tcase_add_test(t, test_report_after_expiry_is_invalid);
	tcase_add_test(t, test_expire_oldest_first);
	tcase_add_test(t, test_settled_hold_does_not_expire);
	tcase_add_test(t, test_hold_survives_history_wrap);
	suite_add_tcase(s, t);

	t = tc("capacity", 1);
	tcase_add_test(t, test_hold_table_full_is_limit_and_changes_nothing);
	tcase_add_test(t, test_agent_capacity_is_limit);
	tcase_add_test(t, test_rule_capacity_refuses_whole_agent);
	tcase_add_test(t, test_rules_per_agent_limit);
	suite_add_tcase(s, t);

	t = tc("delete_under_holds", 1);
	tcase_add_test(t, test_agent_delete_refused_with_open_holds);
	tcase_add_test(t, test_rule_removed_under_open_hold_settles);
	tcase_add_test(t, test_rule_removed_under_open_hold_expires);
	tcase_add_test(t, test_rule_update_keeps_counters);
	suite_add_tcase(s, t);

	t = tc("object_validation", 1);
	tcase_add_test(t, test_overlong_pattern_refused_by_rule_add);
	tcase_add_test(t, test_rule_specs_validated);
	tcase_add_test(t, test_rule_name_of_63_bytes_in_block_reason);
	tcase_add_test(t, test_agent_specs_validated);
	tcase_add_test(t, test_agent_in_free_org_slot_refused);
	tcase_add_test(t, test_wallet_update_negative_is_invalid);
	tcase_add_test(t, test_invalid_outcome_and_type);
	tcase_add_test(t, test_longest_action_and_key_kept_whole);
	suite_add_tcase(s, t);

	t = tc("edges", 1);
	tcase_add_test(t, test_org_balance_zero_makes_it_limited);
	tcase_add_test(t, test_hold_from_before_org_was_limited);
	tcase_add_test(t, test_critical_warnings_bounded);
	tcase_add_test(t, test_throttled_unlimited_rule_stays_unlimited);
	tcase_add_test(t, test_report_after_midnight_counts_new_day);
	tcase_add_test(t, test_key_forgotten_after_history_wrap);
	tcase_add_test(t, test_expiry_queue_after_reports_out_of_order);
	tcase_add_test(t, test_rule_update_match_changes_matching);
	tcase_add_test(t, test_agent_delete_frees_its_rules);
	suite_add_tcase(s, t);

	t = tc("restart", 1);
	tcase_add_test(t, test_restart_keeps_holds_keys_and_expiry_queue);
	tcase_add_test(t, test_restart_then_more_objects);
	suite_add_tcase(s, t);

	t = tc("header_counters", 1);
	tcase_add_test(t, test_header_counters);
	suite_add_tcase(s, t);

	t = tc("invariant_sweep", 1);
	tcase_set_timeout(t, 60);
	tcase_add_test(t, test_random_sweep_keeps_invariants);
	tcase_add_test(t, test_random_sweep_other_seed);
	tcase_add_test(t, test_random_sweep_small_tables);
	suite_add_tcase(s, t);

	return s;
}
