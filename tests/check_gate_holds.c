/*
 * check_gate_holds.c: the gate suite's tests of holds (check_gate.c builds
 * the suite): a hold placed by check and settled by report, replays of check
 * and report by idempotency key, expiry of holds past their TTL, deleting
 * agents and rules under open holds, and a restart that re-attaches to the
 * segment with its holds, keys and expiry queue.
 *
 * Fixture, clock and thread as in check_gate.c: a fresh state segment per
 * test (gate_fixture.c), time moved explicitly from T0, the test thread as
 * the state's only writer reading the segment's records directly.
 */
#include <check.h>
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
/* idempotency of check */

START_TEST(test_check_replay_returns_original_without_second_hold)
{
	uint32_t s;
	uint64_t a = simple_agent("a", 1000, &s);
	uint64_t next;
	struct gate_decision d1, d2;
	struct shm_key seen;

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
	ck_assert_int_eq(state_key_find(g_st, s, str("k1"), &seen), 0);
	ck_assert_uint_eq(seen.txn_id, d1.txn_id);
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
	struct shm_caps caps = { 4, 8, 64, 8, 8, 8, 8, 8, 8, 128, 0 };
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

void gate_holds_tcases(Suite *s)
{
	TCase *t;

	t = test_add_tcase_tmp(s, "hold_lifecycle", gate_setup, gate_teardown, 0);
	tcase_add_loop_test(t, test_report_settles_hold, 0,
	                    sizeof(settle_cases) / sizeof(settle_cases[0]));
	tcase_add_test(t, test_report_finds_holds_in_any_order);
	tcase_add_test(t, test_report_partial_requires_actual);
	tcase_add_test(t, test_report_above_balance_becomes_debt);
	tcase_add_test(t, test_report_negative_actual_is_invalid);
	tcase_add_test(t, test_report_of_blocked_or_unknown_txn);

	t = test_add_tcase_tmp(s, "idempotent_check", gate_setup, gate_teardown, 0);
	tcase_add_test(t, test_check_replay_returns_original_without_second_hold);
	tcase_add_test(t, test_check_replay_of_blocked_decision);
	tcase_add_test(t, test_check_replay_after_report);
	tcase_add_test(t, test_check_key_mismatch_is_exists);
	tcase_add_test(t, test_check_keys_are_per_agent);

	t = test_add_tcase_tmp(s, "idempotent_report", gate_setup, gate_teardown, 0);
	tcase_add_test(t, test_report_replay_same_values_charges_once);
	tcase_add_test(t, test_report_replay_with_default_cost);
	tcase_add_test(t, test_report_replay_different_values_is_exists);

	t = test_add_tcase_tmp(s, "expiry", gate_setup, gate_teardown, 0);
	tcase_add_test(t, test_next_expiry_is_created_plus_ttl);
	tcase_add_test(t, test_expire_before_due_does_nothing);
	tcase_add_test(t, test_expire_at_due_charges_estimate);
	tcase_add_test(t, test_expire_charges_nothing_when_configured);
	tcase_add_test(t, test_report_after_expiry_is_invalid);
	tcase_add_test(t, test_expire_oldest_first);
	tcase_add_test(t, test_settled_hold_does_not_expire);
	tcase_add_test(t, test_hold_survives_history_wrap);

	t = test_add_tcase_tmp(s, "delete_under_holds", gate_setup, gate_teardown, 0);
	tcase_add_test(t, test_agent_delete_refused_with_open_holds);
	tcase_add_test(t, test_rule_removed_under_open_hold_settles);
	tcase_add_test(t, test_rule_removed_under_open_hold_expires);
	tcase_add_test(t, test_rule_update_keeps_counters);

	t = test_add_tcase_tmp(s, "restart", gate_setup, gate_teardown, 0);
	tcase_add_test(t, test_restart_keeps_holds_keys_and_expiry_queue);
	tcase_add_test(t, test_restart_then_more_objects);
}
