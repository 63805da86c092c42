/*
 * check_alerts.c: unit tests of the alerts (sidecard/engine/alerts.c) raised by
 * the gate, written from PROTOCOL.md "Alerts": low balance (warning, then
 * critical, once per period, again in the next period), high velocity at
 * the setting and twice it, anomalies, budget exceeded through a daily
 * limit overrun, and an org wallet's low balance after a check and an
 * adjustment.
 *
 * The org's calendar is not maintained by the gate yet (its fields stay 0),
 * so a test moves to the next period by setting the org's cal.day itself.
 *
 * Thread: the test thread plays the daemon's loop thread (gate_fixture.c).
 */
#include <check.h>
#include <string.h>

#include "alerts.h"
#include "gate_fixture.h"
#include "suites.h"

#define USD(x) ((int64_t)(x) * SEC)
#define CENTS(x) ((int64_t)(x) * 10000)

/* The alerts raised so far, oldest first. */
static unsigned alerts(const struct shm_alert **out, unsigned max)
{
	unsigned n = 0;

	for (uint64_t id = 1; id < g_m->hdr->next_alert_id; id++) {
		const struct shm_alert *a = state_alert_by_id(g_st, id);

		ck_assert_ptr_nonnull(a);
		if (n < max)
			out[n] = a;
		n++;
	}
	return n;
}

static void expect_alert(const struct shm_alert *a, enum shm_alert_kind kind, int critical,
                         uint64_t agent_id, int64_t value, int64_t threshold, uint64_t txn_id)
{
	ck_assert_int_eq(a->kind, kind);
	ck_assert_int_eq(a->severity, critical);
	ck_assert_uint_eq(a->agent_id, agent_id);
	ck_assert_uint_eq(a->org_id, g_m->orgs[g_org].id);
	ck_assert_int_eq(a->value, value);
	ck_assert_int_eq(a->threshold, threshold);
	ck_assert_uint_eq(a->txn_id, txn_id);
}

static void set_velocity(int64_t n)
{
	struct state_settings set = *(&state_config(g_st)->set);

	set.alert_velocity = n;
	state_set_settings(g_st, &set);
}

START_TEST(test_period_key)
{
	struct shm_wallet w;
	struct shm_calendar cal = {.day = 20780, .week = 20776, .month = 2026 * 12 + 10};

	memset(&w, 0, sizeof(w));
	ck_assert_int_eq(gate_period_key(&w, &cal), 20780);
	w.period = SHM_PERIOD_DAILY;
	ck_assert_int_eq(gate_period_key(&w, &cal), 20780);
	w.period = SHM_PERIOD_WEEKLY;
	ck_assert_int_eq(gate_period_key(&w, &cal), 20776);
	w.period = SHM_PERIOD_MONTHLY;
	ck_assert_int_eq(gate_period_key(&w, &cal), 2026 * 12 + 10);
}
END_TEST

START_TEST(test_low_balance_warning_then_critical_once_per_period)
{
	const struct shm_alert *a[8];
	uint32_t slot;
	uint64_t id = simple_agent("research-bot", USD(100), &slot), t1, t2, t3;

	/* T = budget / 10 = $10; available $15 raises nothing */
	SETTLE(ALLOW(id, "x.y", USD(85), T0), SC_OUTCOME_SUCCESS, 0, 0, T0);
	ck_assert_uint_eq(alerts(a, 8), 0);
	t1 = ALLOW(id, "x.y", USD(6), T0 + SEC); /* a hold lowers available to $9 */
	ck_assert_uint_eq(alerts(a, 8), 1);
	expect_alert(a[0], SHM_ALERT_LOW_BALANCE, 0, id, USD(9), USD(10), t1);
	ck_assert_str_eq(a[0]->message, "agent 1 (research-bot): available $9.00 below $10.00");
	ck_assert_int_eq(a[0]->time, T0 + SEC);
	SETTLE(t1, SC_OUTCOME_SUCCESS, 0, 0, T0 + 2 * SEC);
	t2 = ALLOW(id, "x.y", USD(1), T0 + 3 * SEC); /* $8: still the same warning */
	SETTLE(t2, SC_OUTCOME_SUCCESS, 0, 0, T0 + 4 * SEC);
	ck_assert_uint_eq(alerts(a, 8), 1);
	t3 = ALLOW(id, "x.y", CENTS(650), T0 + 5 * SEC); /* $1.50 < T / 5 */
	ck_assert_uint_eq(alerts(a, 8), 2);
	expect_alert(a[1], SHM_ALERT_LOW_BALANCE, 1, id, CENTS(150), USD(2), t3);
	ck_assert_str_eq(a[1]->message, "agent 1 (research-bot): available $1.50 below $2.00");
	SETTLE(t3, SC_OUTCOME_SUCCESS, 0, 0, T0 + 6 * SEC);
	ALLOW(id, "x.y", CENTS(10), T0 + 7 * SEC);
	ck_assert_uint_eq(alerts(a, 8), 2);

	/* the next day of the org's calendar: critical again, the warning is folded into it */
	g_m->orgs[g_org].cal.day += 1;
	t1 = ALLOW(id, "x.y", CENTS(10), T0 + DAY);
	ck_assert_uint_eq(alerts(a, 8), 3);
	expect_alert(a[2], SHM_ALERT_LOW_BALANCE, 1, id, CENTS(130), USD(2), t1);
	ALLOW(id, "x.y", CENTS(10), T0 + DAY + SEC);
	ck_assert_uint_eq(alerts(a, 8), 3);
}
END_TEST

START_TEST(test_low_balance_threshold_of_the_wallet)
{
	const struct shm_alert *a[4];
	sc_wallet_update u = {.set = SC_WALLET_SET_LOW_BALANCE, .low_balance = USD(50)};
	uint32_t slot;
	uint64_t id = simple_agent("bot", USD(100), &slot), t;

	ck_assert_int_eq(state_wallet_update(g_st, slot, 0, &u, g_err, sizeof(g_err)), 0);
	ck_assert_int_eq(AW(slot)->low_balance, USD(50));
	t = ALLOW(id, "x.y", USD(60), T0);
	ck_assert_uint_eq(alerts(a, 4), 1);
	expect_alert(a[0], SHM_ALERT_LOW_BALANCE, 0, id, USD(40), USD(50), t);

	/* budget and threshold 0: no low-balance alert at all */
	u.low_balance = 0;
	u.set |= SC_WALLET_SET_BUDGET;
	u.budget = 0;
	g_m->orgs[g_org].cal.day += 1;
	ck_assert_int_eq(state_wallet_update(g_st, slot, 0, &u, g_err, sizeof(g_err)), 0);
	ALLOW(id, "x.y", USD(39), T0 + DAY);
	ck_assert_uint_eq(alerts(a, 4), 1);
}
END_TEST

START_TEST(test_velocity_at_the_setting_and_twice_it)
{
	const struct shm_alert *a[4];
	uint64_t id = simple_agent("fast", USD(1000), NULL), t[8];

	set_velocity(3);
	for (int i = 0; i < 2; i++)
		t[i] = ALLOW(id, "x.y", 1, T0 + i * SEC);
	BLOCK(id, "x.y", USD(2000), T0 + 2 * SEC, "wallet_empty"); /* blocked: not counted */
	ck_assert_uint_eq(alerts(a, 4), 0);
	t[2] = ALLOW(id, "x.y", 1, T0 + 3 * SEC);
	ck_assert_uint_eq(alerts(a, 4), 1);
	expect_alert(a[0], SHM_ALERT_VELOCITY, 0, id, 3, 3, t[2]);
	t[3] = ALLOW(id, "x.y", 1, T0 + 30 * MIN);
	t[4] = ALLOW(id, "x.y", 1, T0 + 31 * MIN);
	ck_assert_uint_eq(alerts(a, 4), 1);
	t[5] = ALLOW(id, "x.y", 1, T0 + 32 * MIN);
	ck_assert_uint_eq(alerts(a, 4), 2);
	expect_alert(a[1], SHM_ALERT_VELOCITY, 1, id, 6, 6, t[5]);
	ck_assert_str_eq(a[1]->message, "agent 1 (fast): 6 allowed checks in the last hour, at least 6");
	ALLOW(id, "x.y", 1, T0 + 33 * MIN);
	ck_assert_uint_eq(alerts(a, 4), 2);
	ck_assert_int_eq(state_window_count(&g_m->agents[0].vel, T0 + 33 * MIN), 7);
	/*
	 * The window slides in four-minute buckets: the first three, in the
	 * bucket T0 starts, count until the 15th bucket after it ends, at 64 minutes.
	 */
	ck_assert_int_eq(state_window_count(&g_m->agents[0].vel, T0 + 63 * MIN + 59 * SEC), 7);
	ck_assert_int_eq(state_window_count(&g_m->agents[0].vel, T0 + 64 * MIN), 4);
}
END_TEST

START_TEST(test_velocity_off_at_zero)
{
	const struct shm_alert *a[2];
	uint64_t id = simple_agent("fast", USD(1000), NULL);

	set_velocity(0);
	for (int i = 0; i < 20; i++)
		ALLOW(id, "x.y", 1, T0 + i * SEC);
	ck_assert_uint_eq(alerts(a, 2), 0);
}
END_TEST

START_TEST(test_anomaly_warning_and_critical)
{
	const struct shm_alert *a[4];
	uint64_t id = simple_agent("odd", USD(10000), NULL), t10, t100;

	for (int i = 0; i < GATE_ANOMALY_BASELINE; i++)
		SETTLE(ALLOW(id, "x.y", USD(1), T0 + i * SEC), SC_OUTCOME_SUCCESS, 0, 0, T0 + i * SEC);
	ck_assert_uint_eq(alerts(a, 4), 0);
	t10 = ALLOW(id, "x.y", USD(10), T0 + MIN);
	ck_assert_uint_eq(alerts(a, 4), 1);
	expect_alert(a[0], SHM_ALERT_ANOMALY, 0, id, 10, 10, t10);
	ck_assert_str_eq(a[0]->message, "agent 1 (odd): transaction 6 estimated 10x the average cost");
	t100 = ALLOW(id, "x.y", USD(100), T0 + 2 * MIN);
	ck_assert_uint_eq(alerts(a, 4), 2);
	expect_alert(a[1], SHM_ALERT_ANOMALY, 1, id, 100, 100, t100);
	ALLOW(id, "x.y", USD(20), T0 + 3 * MIN); /* another medium anomaly, same day */
	ck_assert_uint_eq(alerts(a, 4), 2);
}
END_TEST

START_TEST(test_budget_exceeded_by_daily_limit_overrun)
{
	const struct shm_alert *a[4];
	uint64_t id = agent_new("spender", SC_PRIORITY_CRITICAL, USD(100), 0, USD(10), NULL, 0, NULL);
	uint64_t t = ALLOW(id, "x.y", USD(8), T0);

	SETTLE(t, SC_OUTCOME_SUCCESS, 1, USD(8), T0 + SEC);
	ck_assert_uint_eq(alerts(a, 4), 0);
	t = ALLOW(id, "x.y", USD(2), T0 + 2 * SEC);
	SETTLE(t, SC_OUTCOME_SUCCESS, 1, USD(4), T0 + 3 * SEC); /* $12 spent today, limit $10 */
	ck_assert_uint_eq(alerts(a, 4), 1);
	expect_alert(a[0], SHM_ALERT_BUDGET, 1, id, USD(12), USD(10), t);
	ck_assert_str_eq(a[0]->message,
	                 "agent 1 (spender): spent $12.00 today, above the daily spend limit of $10.00");
	/* a critical agent overruns further the same day: not raised again */
	SETTLE(ALLOW(id, "x.y", 0, T0 + 4 * SEC), SC_OUTCOME_SUCCESS, 1, USD(1), T0 + 5 * SEC);
	ck_assert_uint_eq(alerts(a, 4), 1);
}
END_TEST

/* A weekly budget overspent fires once that week, and again in the next week only. */
START_TEST(test_budget_exceeded_by_period_spend_once_per_week)
{
	const struct shm_alert *a[4];
	uint32_t slot;
	uint64_t id = agent_new("weekly", SC_PRIORITY_CRITICAL, USD(100), 0, 0, NULL, 0, &slot);
	int64_t tue = MIDNIGHT + HOUR, monday = MIDNIGHT + 6 * DAY + HOUR;
	sc_wallet_update u = {.set = SC_WALLET_SET_BUDGET, .budget = USD(10)};

	ck_assert_int_eq(state_wallet_update(g_st, slot, 0, &u, g_err, sizeof(g_err)), 0);
	gate_roll(g_st, T0);
	gate_wallet_period(g_st, &(struct gate_wallet_ref){slot, 0}, SC_PERIOD_WEEKLY);
	SETTLE(ALLOW(id, "x.y", USD(6), T0), SC_OUTCOME_SUCCESS, 1, USD(6), T0);
	SETTLE(ALLOW(id, "x.y", USD(6), tue), SC_OUTCOME_SUCCESS, 1, USD(6), tue);
	ck_assert_uint_eq(alerts(a, 4), 1);
	ck_assert_int_eq(a[0]->kind, SHM_ALERT_BUDGET);
	ck_assert_int_eq(a[0]->value, USD(12));
	SETTLE(ALLOW(id, "x.y", USD(1), tue + DAY), SC_OUTCOME_SUCCESS, 1, USD(1), tue + DAY);
	ck_assert_uint_eq(alerts(a, 4), 1);
	/* Monday: the wallet is refilled, a new week begins, the mark is free again */
	SETTLE(ALLOW(id, "x.y", USD(11), monday), SC_OUTCOME_SUCCESS, 1, USD(11), monday);
	ck_assert_uint_eq(alerts(a, 4), 2);
	ck_assert_int_eq(a[1]->kind, SHM_ALERT_BUDGET);
	ck_assert_int_eq(a[1]->value, USD(11));
}
END_TEST

START_TEST(test_org_wallet_low_balance)
{
	const struct shm_alert *a[4];
	sc_wallet_update u = {.set = SC_WALLET_SET_LOW_BALANCE, .low_balance = USD(20)};
	struct gate_wallet_ref org = {g_org, 1};
	uint64_t id = simple_agent("member", USD(1000), NULL), t, adj;

	ALLOW(id, "x.y", USD(90), T0); /* unlimited org wallet: nothing */
	ck_assert_uint_eq(alerts(a, 4), 0);
	org_fund(USD(100), 0, 0);
	ck_assert_int_eq(state_wallet_update(g_st, g_org, 1, &u, g_err, sizeof(g_err)), 0);
	t = ALLOW(id, "x.y", USD(85), T0 + SEC);
	ck_assert_uint_eq(alerts(a, 4), 1);
	expect_alert(a[0], SHM_ALERT_LOW_BALANCE, 0, 0, USD(15), USD(20), t);
	ck_assert_str_eq(a[0]->message, "org 1 (acme): available $15.00 below $20.00");
	ck_assert_int_eq(gate_adjust(g_st, &org, -USD(12), NULL, 0, T0 + 2 * SEC, &adj, g_err,
	                             sizeof(g_err)), 0);
	ck_assert_uint_eq(alerts(a, 4), 2);
	expect_alert(a[1], SHM_ALERT_LOW_BALANCE, 1, 0, USD(3), USD(4), adj);
}
END_TEST

Suite *alerts_suite(void)
{
	Suite *s = suite_create("alerts");
	TCase *tc = tcase_create("alerts");

	tcase_add_checked_fixture(tc, gate_setup, gate_teardown);
	tcase_add_test(tc, test_period_key);
	tcase_add_test(tc, test_low_balance_warning_then_critical_once_per_period);
	tcase_add_test(tc, test_low_balance_threshold_of_the_wallet);
	tcase_add_test(tc, test_velocity_at_the_setting_and_twice_it);
	tcase_add_test(tc, test_velocity_off_at_zero);
	tcase_add_test(tc, test_anomaly_warning_and_critical);
	tcase_add_test(tc, test_budget_exceeded_by_daily_limit_overrun);
	tcase_add_test(tc, test_budget_exceeded_by_period_spend_once_per_week);
	tcase_add_test(tc, test_org_wallet_low_balance);
	suite_add_tcase(s, tc);
	return s;
}
