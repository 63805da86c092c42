/*
 * check_period.c: unit tests of org calendars in a time zone, daily limits
 * on the org's local day, budget periods that refill wallets, spend per
 * period, sub-budgets carved from an org's wallet and steps of the wall
 * clock (period.c), from PROTOCOL.md and docs/DESIGN.md ("Time").
 *
 * Uses the gate fixture: a fresh state per test, an explicit clock. T0 is
 * Monday 2026-11-23T10:00:00Z.
 */
#include <check.h>
#include <string.h>

#include "gate_fixture.h"
#include "suites.h"
#include "testutil.h"

#define NEW_YORK "EST5EDT,M3.2.0,M11.1.0" /* UTC-5 in November */
#define LOCAL_MIDNIGHT (MIDNIGHT + 5 * HOUR) /* Tuesday 00:00 in New York */

static const uint8_t META[] = {0x81, 0xa6, 'r', 'e', 'a', 's', 'o', 'n', 0xa1, 'x'};

static void set_budget(uint32_t slot, int org, int64_t budget, enum sc_period period)
{
	struct gate_wallet_ref ref = {slot, org};
	sc_wallet_update u;

	memset(&u, 0, sizeof u);
	u.set = SC_WALLET_SET_BUDGET;
	u.budget = budget;
	ck_assert_int_eq(state_wallet_update(g_st, slot, org, &u, g_err, sizeof g_err), 0);
	gate_roll(g_st, T0);
	gate_wallet_period(g_st, &ref, period);
}

/* The newest transaction of the history. */
static const struct shm_txn *last_txn(void)
{
	return state_txn_by_id(g_st, g_m->hdr->next_txn_id - 1);
}

START_TEST(test_daily_limit_follows_the_org_time_zone)
{
	uint32_t a;
	uint64_t id = agent_new("a", SC_PRIORITY_NORMAL, 100000, 0, 1000, NULL, 0, &a);

	gate_org_timezone(g_st, g_org, "America/New_York", NEW_YORK, T0);
	ck_assert_int_eq(g_m->orgs[g_org].cal.next_day, LOCAL_MIDNIGHT);
	SETTLE(ALLOW(id, "tool.run", 1000, T0), SC_OUTCOME_SUCCESS, 0, 0, T0);
	/* UTC midnight is not New York's: still Monday there */
	BLOCK(id, "tool.run", 1, MIDNIGHT + HOUR, "wallet:daily_spend_limit");
	BLOCK(id, "tool.run", 1, LOCAL_MIDNIGHT - 1, "wallet:daily_spend_limit");
	ALLOW(id, "tool.run", 1000, LOCAL_MIDNIGHT);
}
END_TEST

START_TEST(test_utc_org_rolls_at_utc_midnight)
{
	uint32_t a;
	uint64_t id = agent_new("a", SC_PRIORITY_NORMAL, 100000, 0, 1000, NULL, 0, &a);

	SETTLE(ALLOW(id, "tool.run", 1000, T0), SC_OUTCOME_SUCCESS, 0, 0, T0);
	ck_assert_int_eq(gate_next_roll(g_st), MIDNIGHT);
	BLOCK(id, "tool.run", 1, MIDNIGHT - 1, "wallet:daily_spend_limit");
	ALLOW(id, "tool.run", 1000, MIDNIGHT);
	ck_assert_int_eq(gate_next_roll(g_st), MIDNIGHT + DAY);
}
END_TEST

START_TEST(test_rule_daily_limit_follows_the_org_day)
{
	struct state_rule_spec r = rspec("cap", "*", 0, 500, 0);
	uint32_t a;
	uint64_t id = agent_new("a", SC_PRIORITY_NORMAL, 100000, 0, 0, &r, 1, &a);

	gate_org_timezone(g_st, g_org, "America/New_York", NEW_YORK, T0);
	SETTLE(ALLOW(id, "tool.run", 500, T0), SC_OUTCOME_SUCCESS, 0, 0, T0);
	BLOCK(id, "tool.run", 1, MIDNIGHT + HOUR, "rule:cap:daily_spend_limit");
	ALLOW(id, "tool.run", 500, LOCAL_MIDNIGHT + 1);
}
END_TEST

START_TEST(test_daily_period_refills_to_the_budget)
{
	uint32_t a;
	uint64_t id = simple_agent("a", 1000, &a);
	const struct shm_txn *t;

	set_budget(a, 0, 1000, SC_PERIOD_DAILY);
	SETTLE(ALLOW(id, "tool.run", 800, T0), SC_OUTCOME_SUCCESS, 0, 0, T0);
	ck_assert_int_eq(AW(a)->balance, 200);
	ck_assert_uint_eq(gate_roll(g_st, MIDNIGHT - 1), 0);
	ck_assert_int_eq(AW(a)->balance, 200);
	ck_assert_uint_eq(gate_roll(g_st, MIDNIGHT), 1);
	ck_assert_int_eq(AW(a)->balance, 1000);
	t = last_txn();
	ck_assert_str_eq(t->type, "refill");
	ck_assert_int_eq(t->charged, -800);
	ck_assert_int_eq(t->balance_after, 1000);
	ck_assert_int_eq(t->created_at, MIDNIGHT);
	/* once per period: a second roll that day refills nothing */
	ck_assert_uint_eq(gate_roll(g_st, MIDNIGHT + HOUR), 0);
	ck_assert_ptr_eq(last_txn(), t);
}
END_TEST

START_TEST(test_refill_repays_debt_first_and_never_lowers_a_balance)
{
	uint32_t a, b;
	uint64_t id = simple_agent("a", 1000, &a);

	simple_agent("b", 5000, &b);
	set_budget(a, 0, 1000, SC_PERIOD_DAILY);
	set_budget(b, 0, 1000, SC_PERIOD_DAILY);
	SETTLE(ALLOW(id, "tool.run", 1000, T0), SC_OUTCOME_SUCCESS, 1, 1300, T0);
	ck_assert_int_eq(AW(a)->balance, 0);
	ck_assert_int_eq(AW(a)->debt, 300);
	gate_roll(g_st, MIDNIGHT);
	ck_assert_int_eq(AW(a)->debt, 0);
	ck_assert_int_eq(AW(a)->balance, 700);
	ck_assert_int_eq(AW(b)->balance, 5000);
}
END_TEST

START_TEST(test_weekly_period_refills_on_monday_and_monthly_on_the_first)
{
	uint32_t a, b;
	uint64_t ia = simple_agent("weekly", 1000, &a), ib = simple_agent("monthly", 1000, &b);
	int64_t monday = MIDNIGHT + 6 * DAY;   /* 2026-11-30T00:00Z */
	int64_t december = MIDNIGHT + 7 * DAY; /* 2026-12-01T00:00Z */

	set_budget(a, 0, 1000, SC_PERIOD_WEEKLY);
	set_budget(b, 0, 1000, SC_PERIOD_MONTHLY);
	SETTLE(ALLOW(ia, "tool.run", 600, T0), SC_OUTCOME_SUCCESS, 0, 0, T0);
	SETTLE(ALLOW(ib, "tool.run", 600, T0), SC_OUTCOME_SUCCESS, 0, 0, T0);
	for (int64_t t = MIDNIGHT; t < monday; t += DAY)
		gate_roll(g_st, t);
	ck_assert_int_eq(AW(a)->balance, 400);
	gate_roll(g_st, monday);
	ck_assert_int_eq(AW(a)->balance, 1000);
	ck_assert_int_eq(AW(b)->balance, 400);
	gate_roll(g_st, december);
	ck_assert_int_eq(AW(b)->balance, 1000);
}
END_TEST

START_TEST(test_org_wallet_period_refills_a_funded_org)
{
	uint32_t a;
	uint64_t id = simple_agent("a", 100000, &a);

	org_fund(1000, 0, 0);
	set_budget(g_org, 1, 1000, SC_PERIOD_DAILY);
	SETTLE(ALLOW(id, "tool.run", 900, T0), SC_OUTCOME_SUCCESS, 0, 0, T0);
	ck_assert_int_eq(OW()->balance, 100);
	ALLOW(id, "tool.run", 1000, MIDNIGHT);
	ck_assert_int_eq(OW()->balance, 1000);
	ck_assert_int_eq(OW()->held, 1000);
}
END_TEST

START_TEST(test_spend_counts_day_week_month_and_total)
{
	uint32_t a;
	uint64_t id = simple_agent("a", 100000, &a);
	const struct shm_calendar *cal = &g_m->orgs[g_org].cal;

	SETTLE(ALLOW(id, "tool.run", 100, T0), SC_OUTCOME_SUCCESS, 0, 0, T0);
	SETTLE(ALLOW(id, "tool.run", 200, MIDNIGHT), SC_OUTCOME_SUCCESS, 0, 0, MIDNIGHT);
	ck_assert_int_eq(AW(a)->day == cal->day ? AW(a)->daily_spent : 0, 200);
	ck_assert_int_eq(AW(a)->weekly_spent, 300);
	ck_assert_int_eq(AW(a)->monthly_spent, 300);
	ck_assert_int_eq(AW(a)->total_spent, 300);
	/* next Monday: a new week, the same month */
	SETTLE(ALLOW(id, "tool.run", 50, MIDNIGHT + 6 * DAY), SC_OUTCOME_SUCCESS, 0, 0,
	       MIDNIGHT + 6 * DAY);
	ck_assert_int_eq(AW(a)->weekly_spent, 50);
	ck_assert_int_eq(AW(a)->monthly_spent, 350);
	ck_assert_int_eq(AW(a)->total_spent, 350);
	ck_assert_int_eq(cal->week, cal->day);
}
END_TEST

static int carve(uint32_t slot, int64_t amount)
{
	uint64_t id;

	g_err[0] = '\0';
	return gate_carve(g_st, slot, amount, META, sizeof(META), T0, &id, g_err, sizeof g_err);
}

START_TEST(test_sub_budget_is_reserved_for_its_agent)
{
	uint32_t a, b;
	uint64_t ia = simple_agent("carved", 0, &a), ib = simple_agent("shared", 100000, &b);

	org_fund(1000, 0, 0);
	ck_assert_int_eq(carve(a, 600), 0);
	ck_assert_int_eq(AW(a)->balance, 600);
	ck_assert_int_eq(AW(a)->reserving, 600);
	ck_assert_int_eq(OW()->reserving, 600);
	ck_assert_str_eq(last_txn()->type, "carve");
	/* the other agent sees only the unreserved 400 */
	BLOCK(ib, "tool.run", 401, T0, "org_empty");
	SETTLE(ALLOW(ib, "tool.run", 400, T0), SC_OUTCOME_SUCCESS, 0, 0, T0);
	/* the carved agent still has all of its sub-budget */
	ALLOW(ia, "tool.run", 600, T0);
	ck_assert_int_eq(OW()->reserving, 0);
	ck_assert_int_eq(OW()->held, 600);
}
END_TEST

START_TEST(test_sub_budget_follows_spend_and_release)
{
	uint32_t a, b;
	uint64_t ia = simple_agent("carved", 0, &a), ib = simple_agent("shared", 100000, &b);

	org_fund(1000, 0, 0);
	ck_assert_int_eq(carve(a, 600), 0);
	SETTLE(ALLOW(ia, "tool.run", 200, T0), SC_OUTCOME_SUCCESS, 1, 100, T0);
	ck_assert_int_eq(AW(a)->balance, 500);
	ck_assert_int_eq(OW()->balance, 900);
	ck_assert_int_eq(OW()->reserving, 500);
	BLOCK(ib, "tool.run", 401, T0, "org_empty");
	gate_release(g_st, a);
	ck_assert_int_eq(OW()->reserving, 0);
	ck_assert_int_eq(AW(a)->reserving, 0);
	ALLOW(ib, "tool.run", 900, T0);
}
END_TEST

START_TEST(test_carve_refusals_change_nothing)
{
	uint32_t a, b;

	simple_agent("a", 0, &a);
	simple_agent("b", 0, &b);
	ck_assert_int_eq(carve(a, 100), SC_EINVAL); /* the org wallet is unlimited */
	org_fund(1000, 0, 0);
	ck_assert_int_eq(carve(a, 0), SC_EINVAL);
	ck_assert_int_eq(carve(a, 700), 0);
	ck_assert_int_eq(carve(b, 301), SC_EINVAL);
	ck_assert_msg(strstr(g_err, "unreserved") != NULL, "%s", g_err);
	ck_assert_int_eq(AW(b)->balance, 0);
	ck_assert_int_eq(OW()->reserving, 700);
	ck_assert_int_eq(carve(b, 300), 0);
	ck_assert_int_eq(OW()->reserving, 1000);
}
END_TEST

START_TEST(test_org_transfer_cannot_take_reserved_funds)
{
	uint32_t a, b;
	uint64_t ids[2];
	struct gate_wallet_ref org = {g_org, 1}, to = {0, 0};

	simple_agent("a", 0, &a);
	simple_agent("b", 0, &b);
	to.slot = b;
	org_fund(1000, 0, 0);
	ck_assert_int_eq(carve(a, 600), 0);
	ck_assert_int_eq(gate_transfer(g_st, &org, &to, 401, META, sizeof(META), T0, ids, g_err,
	                               sizeof g_err),
	                 SC_EINVAL);
	ck_assert_int_eq(gate_transfer(g_st, &org, &to, 400, META, sizeof(META), T0, ids, g_err,
	                               sizeof g_err),
	                 0);
}
END_TEST

/*
 * A step of the wall clock (gate_clock_step) a year forward, a year back
 * and a few minutes forward (not whole window buckets): the open hold
 * expires after its TTL of elapsed time, the hourly limit frees an hour of
 * elapsed time later (rounded up to a bucket), the day's spend counts in
 * the date the step lands on, and the day rolls, refilling once, at the
 * next midnight of that date; the step itself refills nothing.
 */
START_TEST(test_clock_step_keeps_durations_and_the_day)
{
	static const int64_t steps[] = {365 * DAY, -365 * DAY, 7 * MIN};
	const int64_t step = steps[_i], bucket = SHM_WINDOW_MINUTES * MIN;
	const int64_t shift = (step / bucket + (step % bucket > 0)) * bucket;
	const int64_t at = T0 + MIN + step, next_day = (at / DAY + 1) * DAY;
	struct state_rule_spec r = rspec("cap", "*", 0, 0, 2);
	uint32_t a;
	uint64_t id = agent_new("a", SC_PRIORITY_NORMAL, 100000, 0, 1000, &r, 1, &a);

	set_budget(a, 0, 100000, SC_PERIOD_DAILY);
	SETTLE(ALLOW(id, "tool.run", 400, T0), SC_OUTCOME_SUCCESS, 0, 0, T0);
	ALLOW(id, "tool.run", 100, T0);
	gate_clock_step(g_st, step, at);
	ck_assert_int_eq(AW(a)->balance, 99600);
	ck_assert_int_eq(gate_next_roll(g_st), next_day);
	/* 400 spent and 100 held today, whatever the date */
	BLOCK(id, "tool.run", 501, at, "wallet:daily_spend_limit");
	BLOCK(id, "tool.run", 1, at, "rule:cap:hourly_rate_limit");
	ck_assert_uint_eq(gate_expire(g_st, T0 + TTL - 1 + step), 0);
	ck_assert_uint_eq(gate_expire(g_st, T0 + TTL + step), 1);
	BLOCK(id, "tool.run", 1, T0 + 64 * MIN - 1 + shift, "rule:cap:hourly_rate_limit");
	ALLOW(id, "tool.run", 1, T0 + 64 * MIN + shift);
	ck_assert_uint_eq(gate_roll(g_st, next_day - 1), 0);
	ck_assert_uint_eq(gate_roll(g_st, next_day), 1);
	ck_assert_str_eq(last_txn()->type, "refill");
	ck_assert_int_eq(AW(a)->balance, 100000);
	/* a new day: only the hold of the last check counts */
	ALLOW(id, "tool.run", 999, next_day);
}
END_TEST

Suite *period_suite(void)
{
	Suite *s = suite_create("period");
	TCase *tc = tcase_create("period");

	tcase_add_checked_fixture(tc, gate_setup, gate_teardown);
	tcase_add_test(tc, test_daily_limit_follows_the_org_time_zone);
	tcase_add_test(tc, test_utc_org_rolls_at_utc_midnight);
	tcase_add_test(tc, test_rule_daily_limit_follows_the_org_day);
	tcase_add_test(tc, test_daily_period_refills_to_the_budget);
	tcase_add_test(tc, test_refill_repays_debt_first_and_never_lowers_a_balance);
	tcase_add_test(tc, test_weekly_period_refills_on_monday_and_monthly_on_the_first);
	tcase_add_test(tc, test_org_wallet_period_refills_a_funded_org);
	tcase_add_test(tc, test_spend_counts_day_week_month_and_total);
	tcase_add_test(tc, test_sub_budget_is_reserved_for_its_agent);
	tcase_add_test(tc, test_sub_budget_follows_spend_and_release);
	tcase_add_test(tc, test_carve_refusals_change_nothing);
	tcase_add_test(tc, test_org_transfer_cannot_take_reserved_funds);
	tcase_add_loop_test(tc, test_clock_step_keeps_durations_and_the_day, 0, 3);
	suite_add_tcase(s, tc);
	return s;
}
