/*
 * check_score.c: unit tests of the kredit score, the status escalation it
 * drives, anomaly detection and agent events (sidecard/engine/score.c and the gate
 * steps 8 and 9), from the formula and thresholds in PROTOCOL.md.
 *
 * Uses the gate fixture: a fresh state per test, an explicit clock.
 */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "gate_fixture.h"
#include "suites.h"
#include "testutil.h"

#define EST 1000
#define BIG (INT64_C(1000000000000))

/* Allows one check and settles it; returns the transaction. */
static uint64_t outcome(uint64_t agent, enum sc_outcome o, int64_t actual, int64_t *now)
{
	uint64_t txn = ALLOW(agent, "tool.run", EST, *now);

	SETTLE(txn, o, 1, actual, *now + SEC);
	*now += 2 * SEC;
	return txn;
}

/* Allows one check and lets its hold expire. */
static void expiry(uint64_t agent, int64_t *now)
{
	ALLOW(agent, "tool.run", EST, *now);
	*now += TTL + SEC;
	gate_expire(g_st, *now);
}

/* The newest event of an agent of this type, or NULL. */
static const struct shm_event *last_event(uint64_t agent, enum shm_event_type type)
{
	for (uint64_t id = g_m->hdr->next_event_id - 1; id > 0; id--) {
		const struct shm_event *e = state_event_by_id(g_st, id);

		if (e && e->agent_id == agent && e->type == type)
			return e;
	}
	return NULL;
}

START_TEST(test_new_agent_starts_at_650)
{
	uint32_t s;

	simple_agent("a", BIG, &s);
	ck_assert_int_eq(g_m->agents[s].score, STATE_SCORE_START);
	ck_assert_int_eq(gate_score(&g_m->agents[s]), 650);
}
END_TEST

START_TEST(test_formula)
{
	struct shm_agent a;

	memset(&a, 0, sizeof a);
	ck_assert_int_eq(gate_score(&a), 650); /* no experience */
	a.settled = 20;
	ck_assert_int_eq(gate_score(&a), 850); /* a spotless record */
	a.failures = 20;
	ck_assert_int_eq(gate_score(&a), 600); /* 850 - 250 */
	a.overruns = 20;
	ck_assert_int_eq(gate_score(&a), 450); /* - 150 */
	a.settled = 10;
	a.failures = a.overruns = 10;
	ck_assert_int_eq(gate_score(&a), 550); /* 650 + (450 - 650) * 10 / 20 */
	a.settled = 20;
	a.failures = a.overruns = 20;
	a.expired = 20;
	a.checks = 40;
	a.blocked = 0;
	ck_assert_int_eq(gate_score(&a), 350); /* - 200 * 500 / 1000 */
	a.checks = 80;
	a.blocked = 40;
	a.anomalies = 80;
	ck_assert_int_eq(gate_score(&a), 300); /* clamped */
}
END_TEST

START_TEST(test_failures_throttle_then_recovery_activates)
{
	int64_t now = T0;
	uint32_t s;
	uint64_t id = simple_agent("a", BIG, &s);
	const struct shm_event *e;

	for (int i = 0; i < 20; i++)
		outcome(id, SC_OUTCOME_FAILURE, EST + 1, &now); /* failed and overran */
	ck_assert_int_eq(g_m->agents[s].score, 450);
	ck_assert_int_eq(g_m->agents[s].status, SC_STATUS_THROTTLED);
	e = last_event(id, SHM_EVENT_STATUS);
	ck_assert_ptr_nonnull(e);
	ck_assert_int_eq(e->from, SC_STATUS_ACTIVE);
	ck_assert_int_eq(e->to, SC_STATUS_THROTTLED);
	ck_assert_str_eq(e->reason, "score");
	/* 40 clean successes: 1/3 failed and overran -> 850 - 83 - 50 = 717 */
	for (int i = 0; i < 40; i++)
		outcome(id, SC_OUTCOME_SUCCESS, EST, &now);
	ck_assert_int_ge(g_m->agents[s].score, GATE_SCORE_RECOVER);
	ck_assert_int_eq(g_m->agents[s].status, SC_STATUS_ACTIVE);
	e = last_event(id, SHM_EVENT_STATUS);
	ck_assert_int_eq(e->to, SC_STATUS_ACTIVE);
}
END_TEST

START_TEST(test_throttled_halves_hourly_limit)
{
	struct state_rule_spec r = rspec("calls", "*", 0, 0, 4);
	int64_t now = T0;
	uint32_t s;
	uint64_t id = agent_new("a", SC_PRIORITY_NORMAL, BIG, 0, 0, &r, 1, &s);

	for (int i = 0; i < 20; i++) {
		outcome(id, SC_OUTCOME_FAILURE, EST + 1, &now);
		now += 2 * HOUR; /* keep the hourly window empty */
	}
	ck_assert_int_eq(g_m->agents[s].status, SC_STATUS_THROTTLED);
	ALLOW(id, "tool.run", EST, now);
	ALLOW(id, "tool.run", EST, now);
	BLOCK(id, "tool.run", EST, now, "rule:calls:hourly_rate_limit");
}
END_TEST

START_TEST(test_score_below_400_blocks_and_below_350_freezes)
{
	int64_t now = T0;
	uint32_t s;
	uint64_t id = simple_agent("a", BIG, &s);
	struct shm_agent *a = &g_m->agents[s];

	/* a record of 20 failed overruns and 19 expiries, scored 650 until the next outcome */
	a->settled = a->failures = a->overruns = 20;
	a->expired = 19;
	a->checks = 39;
	expiry(id, &now);
	/* 850 - 250 - 150 - 200 * 20/40 = 350: blocked, not frozen */
	ck_assert_int_eq(a->score, 350);
	ck_assert_int_ne(a->status, SC_STATUS_FROZEN);
	BLOCK(id, "tool.run", EST, now, "score_too_low");
	/* one more expiry (let through by setting the score back): 21/42 expired -> frozen */
	a->score = GATE_SCORE_BLOCK;
	expiry(id, &now);
	ck_assert_int_lt(a->score, GATE_SCORE_FREEZE);
	ck_assert_int_eq(a->status, SC_STATUS_FROZEN);
	ck_assert_uint_eq(a->status_auto, 1);
	BLOCK(id, "tool.run", EST, now, "agent_frozen");
}
END_TEST

START_TEST(test_operator_status_is_recorded_and_kept)
{
	int64_t now = T0;
	uint32_t s;
	uint64_t id = simple_agent("a", BIG, &s);
	const struct shm_event *e;

	set_status(s, SC_STATUS_FROZEN);
	e = last_event(id, SHM_EVENT_STATUS);
	ck_assert_ptr_nonnull(e);
	ck_assert_str_eq(e->reason, "operator");
	ck_assert_int_eq(e->to, SC_STATUS_FROZEN);
	set_status(s, SC_STATUS_ACTIVE);
	for (int i = 0; i < 20; i++)
		outcome(id, SC_OUTCOME_SUCCESS, EST, &now);
	ck_assert_int_eq(g_m->agents[s].score, 850);
	ck_assert_int_eq(g_m->agents[s].status, SC_STATUS_ACTIVE);
	/* an operator's throttle is not lifted by a good score */
	set_status(s, SC_STATUS_THROTTLED);
	outcome(id, SC_OUTCOME_SUCCESS, EST, &now);
	ck_assert_int_eq(g_m->agents[s].status, SC_STATUS_THROTTLED);
}
END_TEST

START_TEST(test_anomaly_levels)
{
	struct gate_decision d;
	int64_t now = T0;
	uint32_t s;
	uint64_t id = simple_agent("a", BIG, &s);
	const struct shm_event *e;
	uint64_t before = g_m->hdr->anomalies;

	for (int i = 0; i < GATE_ANOMALY_BASELINE - 1; i++)
		outcome(id, SC_OUTCOME_SUCCESS, EST, &now);
	/* no baseline yet: a huge estimate is not judged */
	ck_assert_int_eq(check_req(id, "tool.run", 1000 * EST, NULL, now, &d), 0);
	ck_assert_int_eq(d.risk, GATE_RISK_LOW);
	SETTLE(d.txn_id, SC_OUTCOME_SUCCESS, 1, EST, now);
	/* average cost is now EST */
	ck_assert_int_eq(check_req(id, "tool.run", 10 * EST - 1, NULL, now, &d), 0);
	ck_assert_int_eq(d.risk, GATE_RISK_LOW);
	ck_assert_int_eq(check_req(id, "tool.run", 10 * EST, NULL, now, &d), 0);
	ck_assert(d.allowed);
	ck_assert_int_eq(d.risk, GATE_RISK_MEDIUM);
	ck_assert_int_eq(state_txn_by_id(g_st, d.txn_id)->risk, GATE_RISK_MEDIUM);
	e = last_event(id, SHM_EVENT_ANOMALY);
	ck_assert_ptr_nonnull(e);
	ck_assert_ptr_nonnull(strstr(e->reason, "10x"));
	ck_assert_int_eq(check_req(id, "tool.run", 100 * EST, NULL, now, &d), 0);
	ck_assert_int_eq(d.risk, GATE_RISK_HIGH);
	ck_assert_uint_eq(g_m->agents[s].anomalies, 2);
	ck_assert_uint_eq(g_m->hdr->anomalies, before + 2);
}
END_TEST

START_TEST(test_critical_below_400_is_warned_not_blocked)
{
	struct gate_decision d;
	int64_t now = T0;
	uint32_t s;
	uint64_t id = agent_new("c", SC_PRIORITY_CRITICAL, BIG, 0, 0, NULL, 0, &s);
	const struct shm_event *e;

	g_m->agents[s].score = 399;
	ck_assert_int_eq(check_req(id, "tool.run", EST, NULL, now, &d), 0);
	ck_assert(d.allowed);
	ck_assert(has_warning(&d, "score_too_low"));
	ck_assert_int_eq(d.risk, GATE_RISK_HIGH);
	e = last_event(id, SHM_EVENT_CRITICAL);
	ck_assert_ptr_nonnull(e);
	ck_assert_ptr_nonnull(strstr(e->reason, "score_too_low"));
}
END_TEST

START_TEST(test_counters_behind_the_score)
{
	int64_t now = T0;
	uint32_t s;
	uint64_t id = agent_new("a", SC_PRIORITY_NORMAL, BIG, 5 * EST, 0, NULL, 0, &s);
	const struct shm_agent *a = &g_m->agents[s];

	outcome(id, SC_OUTCOME_SUCCESS, EST, &now);
	outcome(id, SC_OUTCOME_PARTIAL, 2 * EST, &now);
	outcome(id, SC_OUTCOME_FAILURE, 0, &now);
	expiry(id, &now);
	ck_assert_int_eq(a->score, gate_score(a));
	BLOCK(id, "tool.run", 6 * EST, now, "wallet:max_per_txn");
	ck_assert_uint_eq(a->checks, 5);
	ck_assert_uint_eq(a->blocked, 1);
	ck_assert_uint_eq(a->settled, 3);
	ck_assert_uint_eq(a->failures, 1);
	ck_assert_uint_eq(a->overruns, 1);
	ck_assert_uint_eq(a->expired, 1);
	ck_assert_int_eq(a->charged_total, 3 * EST);
}
END_TEST

Suite *score_suite(void)
{
	const struct test_case tests[] = {
		{"new_agent", test_new_agent_starts_at_650},
		{"formula", test_formula},
		{"throttle_and_recover", test_failures_throttle_then_recovery_activates},
		{"throttled_halves_hourly", test_throttled_halves_hourly_limit},
		{"block_and_freeze", test_score_below_400_blocks_and_below_350_freezes},
		{"operator_status", test_operator_status_is_recorded_and_kept},
		{"anomaly", test_anomaly_levels},
		{"critical", test_critical_below_400_is_warned_not_blocked},
		{"counters", test_counters_behind_the_score},
	};
	Suite *s = suite_create("score");

	test_add_cases_tmp(s, tests, sizeof(tests) / sizeof(tests[0]), gate_setup, gate_teardown);
	return s;
}
