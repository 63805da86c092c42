/*
 * check_integration_tasks.c: the integration suite's tests of task usage
 * caps (check_integration.c builds the suite): one task shared by two agents
 * of an org under --task-max-usage, with reports, checks without a task,
 * critical agents, expiry and a restart, all against the test's own tally
 * of tasks.usage; task ids the daemon refuses; and the default cap.
 *
 * Threads: the test's main thread, in a process the Check runner forks.
 */
#include <stdio.h>
#include <string.h>

#include "integration_fixture.h"
#include "suites.h"

/* ----- tasks ----- */

/*
 * The "tasks" test cases run the daemon with --task-max-usage TASK_CAP, so
 * that the cap is known; the default cap is checked on a default daemon.
 */
#define TASK_CAP USD(3)
#define TASK_CAP_ARG "3000000"

static void setup_task_cap(void)
{
	static const char *const args[] = { "--task-max-usage", TASK_CAP_ARG, NULL };

	start(args);
}

static void setup_task_cap_short_ttl(void)
{
	static const char *const args[] = { "--task-max-usage", TASK_CAP_ARG, "--hold-ttl", "1",
		                            NULL };

	start(args);
}


static uint64_t allow_task(uint64_t agent, sc_micros cost, const char *task)
{
	sc_decision dec = check_task(agent, cost, task);

	ck_assert_msg(dec.allowed, "%lld for task %s blocked: %s", (long long)cost, task,
	              dec.block_reason);
	ck_assert_uint_eq(dec.n_warnings, 0);
	return dec.transaction_id;
}

static void blocked_task(uint64_t agent, sc_micros cost, const char *task)
{
	sc_decision dec = check_task(agent, cost, task);

	ck_assert_msg(!dec.allowed, "%lld for task %s allowed", (long long)cost, task);
	ck_assert_str_eq(dec.block_reason, "task:max_usage");
}

static sc_task_usage task_usage(const char *task)
{
	sc_task_usage u;

	OK(sc_tasks_usage(c, task, &u));
	ck_assert_str_eq(u.task_id, task);
	ck_assert_int_gt(u.created_at, INT64_C(1600000000000000));
	ck_assert_int_ge(u.last_at, u.created_at);
	return u;
}

/* What the test expects of a task: its own tally, never another answer of the daemon. */
struct task_tally {
	sc_micros usage, held;
	uint64_t checks;
	uint32_t open_holds;
};

static void assert_task(const char *what, const char *task, sc_micros max_usage,
                        const struct task_tally *want)
{
	sc_task_usage u = task_usage(task);

	ck_assert_msg(u.usage == want->usage && u.held == want->held &&
	                      u.checks == want->checks && u.open_holds == want->open_holds &&
	                      u.max_usage == max_usage,
	              "%s: task %s has usage %lld, held %lld, checks %llu, open_holds %u, "
	              "max_usage %lld; expected %lld, %lld, %llu, %u, %lld",
	              what, task, (long long)u.usage, (long long)u.held,
	              (unsigned long long)u.checks, u.open_holds, (long long)u.max_usage,
	              (long long)want->usage, (long long)want->held,
	              (unsigned long long)want->checks, want->open_holds, (long long)max_usage);
}

/*
 * One step on one task shared by two agents of one org: a check by
 * agent 0 or 1 (allowed unless `blocked`), or the report of the check made
 * at step `settles` with an actual cost. Each check is $cost of "job".
 */
struct task_step {
	int agent; /* 0 or 1; -1: a report */
	sc_micros cost; /* the estimate, or the actual cost of a report */
	int blocked;
	int settles;
};

#define T_ALLOW(a, amount) { .agent = (a), .cost = (amount) }
#define T_BLOCK(a, amount) { .agent = (a), .cost = (amount), .blocked = 1 }
#define T_REPORT(step, actual) { .agent = -1, .cost = (actual), .settles = (step) }

static const struct task_step task_steps[] = {
	/* 0 */ T_ALLOW(0, USD(1)),
	/* 1 */ T_ALLOW(1, CENTS(150)),
	/* 2 */ T_ALLOW(0, CENTS(50)), /* held + estimate is exactly the cap */
	/* 3 */ T_BLOCK(1, 1),
	/* 4 */ T_REPORT(0, CENTS(40)), /* a lower actual cost frees 60 cents */
	/* 5 */ T_BLOCK(1, CENTS(60) + 1),
	/* 6 */ T_ALLOW(1, CENTS(60)),
	/* 7 */ T_BLOCK(0, 1),
	/* 8 */ T_REPORT(1, USD(2)), /* an overrun: usage plus held is above the cap */
	/* 9 */ T_BLOCK(0, 1),
	/* 10 */ T_REPORT(2, 0),
	/* 11 */ T_REPORT(6, CENTS(10)), /* usage $2.50, nothing held */
	/* 12 */ T_BLOCK(1, CENTS(50) + 1),
	/* 13 */ T_ALLOW(0, CENTS(50)),
	/* 14 */ T_BLOCK(1, 1),
};

#undef T_ALLOW
#undef T_BLOCK
#undef T_REPORT

START_TEST(test_task_cap_across_agents)
{
	uint64_t agent[2];
	uint64_t txn[COUNT(task_steps)] = { 0 };
	struct task_tally want = { 0 };
	sc_transaction *list;
	int64_t created_at = 0;
	size_t i, k, n;
	char what[32];

	new_org("team");
	agent[0] = new_agent_in("team", "a", SC_PRIORITY_NORMAL, USD(100), 0, 0, NULL, 0);
	agent[1] = new_agent_in("team", "b", SC_PRIORITY_NORMAL, USD(100), 0, 0, NULL, 0);
	ck_assert_int_eq(sc_tasks_usage(c, "job", &(sc_task_usage){ 0 }), SC_ENOTFOUND);
	for (i = 0; i < COUNT(task_steps); i++) {
		const struct task_step *s = &task_steps[i];

		if (s->agent < 0) {
			report(txn[s->settles], SC_OUTCOME_SUCCESS, 1, s->cost);
			want.usage += s->cost;
			want.held -= task_steps[s->settles].cost;
			want.open_holds--;
		} else if (s->blocked) {
			blocked_task(agent[s->agent], s->cost, "job");
			want.checks++;
		} else {
			txn[i] = allow_task(agent[s->agent], s->cost, "job");
			want.held += s->cost;
			want.checks++;
			want.open_holds++;
		}
		snprintf(what, sizeof(what), "step %zu", i);
		assert_task(what, "job", TASK_CAP, &want);
		if (created_at == 0)
			created_at = task_usage("job").created_at;
		ck_assert_int_eq(task_usage("job").created_at, created_at);
	}

	/* Every transaction of the task, allowed or blocked, names it. */
	for (k = 0; k < 2; k++) {
		OK(sc_transactions_list(c, agent[k], -1, 0, &list, &n));
		ck_assert_uint_gt(n, 0);
		for (i = 0; i < n; i++)
			ck_assert_str_eq(list[i].task_id, "job");
		sc_transactions_free(list);
	}
	ck_assert_str_eq(test_transaction(c, agent[0], txn[0]).task_id, "job");
}
END_TEST

START_TEST(test_task_check_without_task)
{
	uint64_t id = new_agent(USD(100)), txn;
	struct task_tally full = { .held = TASK_CAP, .checks = 2, .open_holds = 1 };

	allow_task(id, TASK_CAP, "full");
	blocked_task(id, 1, "full");
	/* A check without a task is not limited by any, and counts toward none. */
	txn = allow(id, "llm.call", USD(50));
	ck_assert_str_eq(test_transaction(c, id, txn).task_id, "");
	report(txn, SC_OUTCOME_SUCCESS, 0, 0);
	assert_task("after checks without a task", "full", TASK_CAP, &full);
	/* Another task has its own usage. */
	allow_task(id, TASK_CAP, "other");
	assert_task("another task", "other", TASK_CAP,
	            &(struct task_tally){ .held = TASK_CAP, .checks = 1, .open_holds = 1 });
	assert_task("the first task", "full", TASK_CAP, &full);
}
END_TEST

START_TEST(test_task_critical_warned)
{
	uint64_t id, vip;
	sc_decision dec;

	new_org("org");
	id = new_agent_in("org", "bot", SC_PRIORITY_NORMAL, USD(100), 0, 0, NULL, 0);
	vip = new_agent_in("org", "vip", SC_PRIORITY_CRITICAL, USD(100), 0, 0, NULL, 0);
	allow_task(id, TASK_CAP, "t");
	dec = check_task(vip, USD(1), "t");
	ck_assert_int_eq(dec.allowed, 1);
	ck_assert_str_eq(dec.block_reason, "");
	ck_assert_str_eq(dec.risk_level, "high");
	ck_assert_uint_eq(dec.n_warnings, 1);
	ck_assert_str_eq(dec.warnings[0], "task:max_usage");
	/* Its hold counts toward the task, past the cap. */
	assert_task("after the critical check", "t", TASK_CAP,
	            &(struct task_tally){ .held = TASK_CAP + USD(1), .checks = 2, .open_holds = 2 });
	blocked_task(id, 1, "t");
	/* An estimate above the cap on its own. */
	dec = check_task(vip, TASK_CAP + 1, "fresh");
	ck_assert_int_eq(dec.allowed, 1);
	ck_assert_msg(has_warning(&dec, "task:max_usage"), "no warning task:max_usage");
	blocked_task(id, TASK_CAP + 1, "another");
}
END_TEST

START_TEST(test_task_errors)
{
	uint64_t id = new_agent(USD(100));
	sc_check_req req = { .agent_id = id, .action = "x", .estimated_cost = 1 };
	static const char *const bad[] = { "", "has space", "tab\there" };
	char long_id[SC_KEY_MAX + 2], max_id[SC_KEY_MAX + 1];
	sc_task_usage u;
	sc_decision dec;
	size_t i;

	ck_assert_int_eq(sc_tasks_usage(c, "never-checked", &u), SC_ENOTFOUND);
	FAILS(sc_tasks_usage(c, NULL, &u), SC_EINVAL, "task_id");
	for (i = 0; i < COUNT(bad); i++) {
		req.task_id = bad[i];
		FAILS(sc_check(c, &req, &dec), SC_EINVAL, "task_id");
	}
	memset(long_id, 't', sizeof(long_id) - 1);
	long_id[sizeof(long_id) - 1] = '\0';
	req.task_id = long_id;
	FAILS(sc_check(c, &req, &dec), SC_EINVAL, "task_id");
	memset(max_id, 't', sizeof(max_id) - 1);
	max_id[sizeof(max_id) - 1] = '\0';
	req.task_id = max_id;
	OK(sc_check(c, &req, &dec));
	ck_assert_int_eq(dec.allowed, 1);
	assert_task("a task id of SC_KEY_MAX bytes", max_id, TASK_CAP,
	            &(struct task_tally){ .held = 1, .checks = 1, .open_holds = 1 });
	/* The refused checks left no task behind. */
	ck_assert_int_ne(sc_tasks_usage(c, "has space", &u), 0);
}
END_TEST

/* Expired holds charge their estimate to the task, as to the wallets. */
START_TEST(test_task_hold_expiry)
{
	uint64_t id = new_agent(USD(100));

	allow_task(id, USD(2), "exp");
	test_sleep_ms(1500);
	ck_assert_int_eq(wait_no_holds(id).held, 0);
	assert_task("after the expiry", "exp", TASK_CAP,
	            &(struct task_tally){ .usage = USD(2), .checks = 1 });
	blocked_task(id, USD(1) + 1, "exp");
	allow_task(id, USD(1), "exp");
}
END_TEST

START_TEST(test_task_survives_restart)
{
	uint64_t id = new_agent(USD(100)), open;
	sc_task_usage before, after;

	report(allow_task(id, USD(1), "keep"), SC_OUTCOME_SUCCESS, 1, CENTS(50));
	open = allow_task(id, USD(2), "keep");
	before = task_usage("keep");

	sc_close(c);
	c = NULL;
	ck_assert_int_eq(test_daemon_restart(&d), 0);
	OK(sc_connect(d.socket, &c));

	after = task_usage("keep");
	ck_assert_int_eq(memcmp(&after, &before, sizeof(after)), 0);
	blocked_task(id, CENTS(50) + 1, "keep");
	report(open, SC_OUTCOME_SUCCESS, 1, USD(1));
	assert_task("after the restart", "keep", TASK_CAP,
	            &(struct task_tally){ .usage = CENTS(150), .checks = 3 });
}
END_TEST

/* Without --task-max-usage the cap is $5. */
START_TEST(test_task_default_cap)
{
	uint64_t id = new_agent(USD(100));

	allow_task(id, USD(5), "t");
	blocked_task(id, 1, "t");
	assert_task("the default cap", "t", USD(5),
	            &(struct task_tally){ .held = USD(5), .checks = 2, .open_holds = 1 });
}
END_TEST

/* ----- the test cases ----- */

void integration_tasks_tcases(Suite *s)
{
	TCase *tc;

	tc = daemon_tcase(s, "tasks", setup_task_cap, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_task_cap_across_agents);
	tcase_add_test(tc, test_task_check_without_task);
	tcase_add_test(tc, test_task_critical_warned);
	tcase_add_test(tc, test_task_errors);
	tcase_add_test(tc, test_task_survives_restart);

	tc = daemon_tcase(s, "tasks-expiry", setup_task_cap_short_ttl, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_task_hold_expiry);

	tc = daemon_tcase(s, "tasks-default", setup_default, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_task_default_cap);
}
