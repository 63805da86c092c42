/*
 * check_task.c: unit tests of the per-task usage cap (gate step 8) and of
 * how the daemon remembers tasks (least recently used reuse, never a task
 * with open holds), from PROTOCOL.md.
 *
 * Uses the gate fixture: a fresh state per test, an explicit clock.
 */
#include <check.h>
#include <string.h>

#include "gate_fixture.h"
#include "suites.h"
#include "testutil.h"

#define BIG (INT64_C(1000000000000))
#define CAP 3000

/* A check carrying a task id; returns gate_check's code. */
static int task_check(uint64_t agent, const char *task, int64_t est, int64_t now,
                      struct gate_decision *d)
{
	struct gate_check_req r;

	memset(&r, 0, sizeof r);
	r.agent_id = agent;
	r.action = str("tool.run");
	r.estimate = est;
	r.task = str(task);
	memset(d, 0, sizeof *d);
	g_err[0] = '\0';
	return gate_check(g_st, &r, now, d, g_err, sizeof g_err);
}

/* Sets the task cap, keeping the other settings. */
static void set_task_cap(int64_t cap)
{
	struct state_settings set = state_config(g_st)->set;

	set.task_max_usage = cap;
	state_set_settings(g_st, &set);
}

static const struct shm_task *task_of(const char *id)
{
	uint32_t slot = state_task_find(g_st, g_m->orgs[g_org].id, str(id));

	return slot == SHM_NONE ? NULL : &g_m->tasks[slot];
}

START_TEST(test_cap_spans_agents_and_counts_holds)
{
	struct gate_decision d1, d2, d3;
	uint64_t a = simple_agent("a", BIG, NULL), b = simple_agent("b", BIG, NULL);

	set_task_cap(CAP);
	ck_assert_int_eq(task_check(a, "job", 2000, T0, &d1), 0);
	ck_assert(d1.allowed);
	ck_assert_int_eq(task_check(b, "job", 1001, T0, &d2), 0);
	ck_assert(!d2.allowed);
	ck_assert_str_eq(d2.block_reason, "task:max_usage");
	ck_assert_int_eq(task_check(b, "job", 1000, T0, &d3), 0); /* exactly the cap */
	ck_assert(d3.allowed);
	ck_assert_int_eq(task_of("job")->held, 3000);
	ck_assert_uint_eq(task_of("job")->open_holds, 2);
	ck_assert_uint_eq(task_of("job")->checks, 3);
	/* settling for less frees room; usage counts what was charged */
	SETTLE(d1.txn_id, SC_OUTCOME_SUCCESS, 1, 500, T0 + SEC);
	ck_assert_int_eq(task_of("job")->used, 500);
	ck_assert_int_eq(task_of("job")->held, 1000);
	ck_assert_int_eq(task_check(a, "job", 1500, T0 + SEC, &d1), 0);
	ck_assert(d1.allowed);
	ck_assert_str_eq(state_txn_by_id(g_st, d1.txn_id)->task_id, "job");
	/* other tasks and checks without a task are not affected */
	ck_assert_int_eq(task_check(a, "other", 3000, T0 + SEC, &d2), 0);
	ck_assert(d2.allowed);
	ALLOW(a, "tool.run", 10 * CAP, T0 + SEC);
}
END_TEST

START_TEST(test_zero_cap_is_unlimited)
{
	struct gate_decision d;
	uint64_t a = simple_agent("a", BIG, NULL);

	set_task_cap(0);
	ck_assert_int_eq(task_check(a, "job", BIG / 2, T0, &d), 0);
	ck_assert(d.allowed);
}
END_TEST

START_TEST(test_expiry_counts_as_usage)
{
	struct gate_decision d;
	uint64_t a = simple_agent("a", BIG, NULL);

	set_task_cap(CAP);
	ck_assert_int_eq(task_check(a, "job", 2000, T0, &d), 0);
	gate_expire(g_st, T0 + TTL + SEC);
	ck_assert_int_eq(task_of("job")->used, 2000);
	ck_assert_int_eq(task_of("job")->held, 0);
	ck_assert_int_eq(task_check(a, "job", 1001, T0 + TTL + SEC, &d), 0);
	ck_assert_str_eq(d.block_reason, "task:max_usage");
}
END_TEST

START_TEST(test_critical_is_warned)
{
	struct gate_decision d;
	uint64_t c = agent_new("c", SC_PRIORITY_CRITICAL, BIG, 0, 0, NULL, 0, NULL);

	set_task_cap(CAP);
	ck_assert_int_eq(task_check(c, "job", CAP + 1, T0, &d), 0);
	ck_assert(d.allowed);
	ck_assert(has_warning(&d, "task:max_usage"));
}
END_TEST

START_TEST(test_least_recently_used_task_is_forgotten)
{
	struct shm_caps caps = default_caps;
	struct gate_decision d;
	uint64_t a;

	caps.tasks = 2;
	open_state(caps, TTL, 1);
	a = simple_agent("a", BIG, NULL);
	set_task_cap(CAP);
	ck_assert_int_eq(task_check(a, "t1", 100, T0, &d), 0);
	SETTLE(d.txn_id, SC_OUTCOME_SUCCESS, 0, 0, T0 + 1 * SEC);
	ck_assert_int_eq(task_check(a, "t2", 100, T0 + 2 * SEC, &d), 0); /* t2 stays open */
	ck_assert_int_eq(task_check(a, "t3", 100, T0 + 3 * SEC, &d), 0);
	ck_assert(d.allowed);
	ck_assert_ptr_null(task_of("t1")); /* forgotten: least recently used, no holds */
	ck_assert_ptr_nonnull(task_of("t2"));
	ck_assert_ptr_nonnull(task_of("t3"));
	/* every remembered task has open holds: a new task is refused, nothing changes */
	ck_assert_int_eq(task_check(a, "t4", 100, T0 + 4 * SEC, &d), SC_ELIMIT);
	ck_assert_ptr_nonnull(strstr(g_err, "task capacity"));
	ck_assert_ptr_null(task_of("t4"));
	ck_assert_uint_eq(holds_open(), 2);
}
END_TEST

START_TEST(test_bad_task_id_refused)
{
	struct gate_decision d;
	uint64_t a = simple_agent("a", BIG, NULL);

	ck_assert_int_eq(task_check(a, "has space", 1, T0, &d), SC_EINVAL);
	ck_assert_ptr_nonnull(strstr(g_err, "task_id"));
}
END_TEST

Suite *task_suite(void)
{
	const struct test_case tests[] = {
		{"cap_spans_agents", test_cap_spans_agents_and_counts_holds},
		{"zero_cap", test_zero_cap_is_unlimited},
		{"expiry_usage", test_expiry_counts_as_usage},
		{"critical", test_critical_is_warned},
		{"lru", test_least_recently_used_task_is_forgotten},
		{"bad_id", test_bad_task_id_refused},
	};
	Suite *s = suite_create("task");

	test_add_cases_tmp(s, tests, sizeof(tests) / sizeof(tests[0]), gate_setup, gate_teardown);
	return s;
}
