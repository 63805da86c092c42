/*
 * check_integration_visibility.c: the integration suite's tests of what an
 * operator sees (check_integration.c builds the suite): kredit scores,
 * automatic and operator status changes, anomalies and the events they
 * record; transactions listed by org, risk level, status and time window,
 * paged with `before`, summed, ranked by agent (agents.top), and the fleet
 * overview, all against the test's own tally; and alerts pushed to the
 * connections that subscribed, with their filters.
 *
 * Threads: the test's main thread, in a process the Check runner forks.
 */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "integration_fixture.h"
#include "suites.h"

/* ----- kredit score and events ----- */

static sc_score score_of(uint64_t agent)
{
	sc_score sc;

	OK(sc_score_get(c, agent, &sc));
	ck_assert_uint_eq(sc.agent_id, agent);
	return sc;
}

/* The agent's events, newest first; free with sc_events_free. */
static sc_event *events_of(uint64_t agent, size_t *n)
{
	sc_event *list;

	OK(sc_agents_events(c, agent, 0, &list, n));
	return list;
}

/* Asserts the counters of sc with a table: each factor is named in the message. */
#define FACTOR(member, value) { #member, offsetof(sc_score, member), (value) }

struct factor {
	const char *name;
	size_t off;
	uint64_t value;
};

static void assert_factors(const sc_score *sc, const struct factor *f, size_t n)
{
	uint64_t v;
	size_t i;

	for (i = 0; i < n; i++) {
		memcpy(&v, (const char *)sc + f[i].off, sizeof(v));
		ck_assert_msg(v == f[i].value, "%s = %" PRIu64 ", expected %" PRIu64, f[i].name, v,
		              f[i].value);
	}
}

START_TEST(test_score_new_agent)
{
	static const struct factor zero[] = {
		FACTOR(checks, 0),   FACTOR(blocked, 0), FACTOR(settled, 0),   FACTOR(failures, 0),
		FACTOR(overruns, 0), FACTOR(expired, 0), FACTOR(anomalies, 0),
	};
	uint64_t id = new_agent(USD(10));
	sc_event *list;
	sc_score sc = score_of(id);
	size_t n;

	ck_assert_int_eq(sc.score, 650);
	ck_assert_int_eq(sc.status, SC_STATUS_ACTIVE);
	assert_factors(&sc, zero, COUNT(zero));
	ck_assert_int_eq(sc.average_cost, 0);
	ck_assert_int_ge(sc.age_s, 0);
	list = events_of(id, &n);
	ck_assert_uint_eq(n, 0);
	sc_events_free(list);
	ck_assert_int_eq(sc_score_get(c, 999999, &sc), SC_ENOTFOUND);
	ck_assert_int_eq(sc_agents_events(c, 999999, 0, &list, &n), SC_ENOTFOUND);
	ck_assert_ptr_null(list);
	FAILS(sc_agents_events(c, id, 1001, &list, &n), SC_EINVAL, "limit");
}
END_TEST

/*
 * 20 failed reports whose actual cost exceeds the estimate: failure and
 * overrun rates of 100%, so raw = 850 - 250 - 150 = 450, at full weight
 * after 20 outcomes. After k outcomes the score is 650 - 10k: it falls
 * below 500 (throttle) at the 16th, at 490, and never below 350 (freeze).
 */
START_TEST(test_score_throttles_on_failures)
{
	static const struct factor after[] = {
		FACTOR(checks, 20),   FACTOR(blocked, 0), FACTOR(settled, 20),  FACTOR(failures, 20),
		FACTOR(overruns, 20), FACTOR(expired, 0), FACTOR(anomalies, 0),
	};
	uint64_t id = new_agent(USD(1000));
	sc_event *list;
	sc_score sc;
	sc_agent a;
	size_t n;
	int i;

	for (i = 1; i <= 20; i++) {
		report(allow(id, "tool.run", USD(1)), SC_OUTCOME_FAILURE, 1, USD(2));
		sc = score_of(id);
		ck_assert_int_eq(sc.score, 650 - 10 * i);
		ck_assert_int_eq(sc.status, i < 16 ? SC_STATUS_ACTIVE : SC_STATUS_THROTTLED);
	}
	ck_assert_int_eq(sc.score, 450);
	assert_factors(&sc, after, COUNT(after));
	ck_assert_int_eq(sc.average_cost, USD(2));
	OK(sc_agents_get(c, id, &a));
	ck_assert_int_eq(a.status, SC_STATUS_THROTTLED);

	list = events_of(id, &n);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(list[0].type, SC_EVENT_STATUS_CHANGE);
	ck_assert_uint_eq(list[0].agent_id, id);
	ck_assert_uint_gt(list[0].id, 0);
	ck_assert_int_gt(list[0].time, 0);
	ck_assert_int_eq(list[0].has_status, 1);
	ck_assert_int_eq(list[0].from, SC_STATUS_ACTIVE);
	ck_assert_int_eq(list[0].to, SC_STATUS_THROTTLED);
	ck_assert_int_eq(list[0].score, 490);
	ck_assert_str_eq(list[0].reason, "score");
	sc_events_free(list);
}
END_TEST

/*
 * Step 9 of the gate, both sides of each boundary: no anomaly before 5
 * settled transactions, then 10x the average is medium and 100x high. The
 * holds stay open, so the average stays $1.
 */
START_TEST(test_anomaly_risk_and_event)
{
	static const struct {
		sc_micros estimate;
		const char *risk_level;
	} checks[] = {
		{ USD(10) - 1, "low" },   { USD(10), "medium" }, { USD(100) - 1, "medium" },
		{ USD(100), "high" },
	};
	uint64_t id = new_agent(USD(1000)), txn[COUNT(checks)];
	sc_decision dec;
	sc_event *list;
	sc_score sc;
	int64_t anomalies;
	size_t i, n;
	char reason[64];

	for (i = 0; i < 4; i++)
		report(allow(id, "tool.run", USD(1)), SC_OUTCOME_SUCCESS, 0, 0);
	dec = check_as(id, "tool.run", USD(10), NULL);
	ck_assert_int_eq(dec.allowed, 1);
	ck_assert_str_eq(dec.risk_level, "low"); /* 4 settled: no baseline yet */
	report(dec.transaction_id, SC_OUTCOME_SUCCESS, 1, USD(1));
	for (i = 0; i < COUNT(checks); i++) {
		dec = check_as(id, "tool.run", checks[i].estimate, NULL);
		ck_assert_msg(dec.allowed, "%zu: blocked: %s", i, dec.block_reason);
		ck_assert_msg(strcmp(dec.risk_level, checks[i].risk_level) == 0,
		              "estimate %lld: risk %s, expected %s", (long long)checks[i].estimate,
		              dec.risk_level, checks[i].risk_level);
		ck_assert_str_eq(test_transaction(c, id, dec.transaction_id).risk_level,
		                 checks[i].risk_level);
		txn[i] = dec.transaction_id;
	}

	sc = score_of(id);
	ck_assert_uint_eq(sc.anomalies, 3);
	ck_assert_int_eq(sc.average_cost, USD(1));
	OK(sc_stat(c, "anomalies", &anomalies));
	ck_assert_int_eq(anomalies, 3);
	list = events_of(id, &n);
	ck_assert_uint_eq(n, 3);
	for (i = 0; i < n; i++) {
		/* Newest first: the anomalies of checks 3, 2 and 1. */
		snprintf(reason, sizeof(reason), "transaction %" PRIu64 ": ", txn[3 - i]);
		ck_assert_int_eq(list[i].type, SC_EVENT_ANOMALY);
		ck_assert_int_eq(list[i].has_status, 0);
		ck_assert_msg(strncmp(list[i].reason, reason, strlen(reason)) == 0,
		              "reason '%s' does not start with '%s'", list[i].reason, reason);
		ck_assert_msg(strstr(list[i].reason, "x the average cost") != NULL, "reason '%s'",
		              list[i].reason);
	}
	ck_assert_uint_gt(list[0].id, list[1].id);
	ck_assert_ptr_nonnull(strstr(list[0].reason, ": 100x"));
	ck_assert_ptr_nonnull(strstr(list[2].reason, ": 10x"));
	sc_events_free(list);
}
END_TEST

START_TEST(test_operator_status_events)
{
	static const struct {
		enum sc_status from, to;
	} changes[] = {
		{ SC_STATUS_ACTIVE, SC_STATUS_FROZEN },
		{ SC_STATUS_FROZEN, SC_STATUS_ACTIVE },
	};
	uint64_t id = new_agent(USD(10));
	sc_event *list;
	sc_agent a;
	size_t i, n;

	for (i = 0; i < COUNT(changes); i++)
		OK(sc_agents_update(c, id, NULL, -1, (int)changes[i].to, &a));
	list = events_of(id, &n);
	ck_assert_uint_eq(n, COUNT(changes));
	for (i = 0; i < n; i++) {
		const sc_event *e = &list[n - 1 - i]; /* newest first */

		ck_assert_int_eq(e->type, SC_EVENT_STATUS_CHANGE);
		ck_assert_int_eq(e->has_status, 1);
		ck_assert_int_eq(e->from, changes[i].from);
		ck_assert_int_eq(e->to, changes[i].to);
		ck_assert_int_eq(e->score, 650);
		ck_assert_str_eq(e->reason, "operator");
	}
	sc_events_free(list);
	OK(sc_agents_events(c, id, 1, &list, &n));
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(list[0].to, SC_STATUS_ACTIVE);
	sc_events_free(list);
}
END_TEST

/* ----- visibility: transaction filters and paging, summary, top agents, fleet ----- */

/*
 * The fleet every visibility test starts from: orgs alpha and beta of two
 * agents each, driven by vis_steps into transactions of every status but
 * expired and of every risk level. The test keeps its own record of each
 * transaction (struct vis_txn) and checks the daemon's answers against
 * that tally, never against another answer of the daemon.
 */
enum { A1, A2, B1, B2, N_VIS_AGENTS };

static const struct {
	const char *org, *name;
	enum sc_priority priority;
	sc_micros max_per_txn;
} vis_agents[N_VIS_AGENTS] = {
	[A1] = { "alpha", "a1", SC_PRIORITY_NORMAL, 0 },
	[A2] = { "alpha", "a2", SC_PRIORITY_NORMAL, 0 },
	[B1] = { "beta", "b1", SC_PRIORITY_NORMAL, 0 },
	[B2] = { "beta", "b2", SC_PRIORITY_CRITICAL, USD(1) },
};

/* One check: allowed unless block_reason is set; then settled if `settle`, else left pending. */
struct vis_step {
	int agent;
	sc_micros estimate;
	const char *block_reason;
	enum sc_risk risk;
	int settle;
	enum sc_outcome outcome;
	sc_micros actual;
	int freeze_first; /* the operator freezes the agent before this check */
};

#define SETTLED(a, cost, risk_, outcome_, actual_)                                          \
	{ .agent = (a), .estimate = (cost), .risk = (risk_), .settle = 1, .outcome = (outcome_), \
	  .actual = (actual_) }
#define PENDING(a, cost, risk_) { .agent = (a), .estimate = (cost), .risk = (risk_) }
#define BLOCKED(a, cost, reason, freeze)                                                    \
	{ .agent = (a), .estimate = (cost), .block_reason = (reason), .risk = SC_RISK_LOW,      \
	  .freeze_first = (freeze) }

static const struct vis_step vis_steps[] = {
	SETTLED(A1, USD(2), SC_RISK_LOW, SC_OUTCOME_SUCCESS, USD(2)),
	SETTLED(A2, USD(3), SC_RISK_LOW, SC_OUTCOME_SUCCESS, USD(3)),
	/* five settled dollars give b1 the average cost that step 9 of the gate needs */
	SETTLED(B1, USD(1), SC_RISK_LOW, SC_OUTCOME_SUCCESS, USD(1)),
	SETTLED(B1, USD(1), SC_RISK_LOW, SC_OUTCOME_SUCCESS, USD(1)),
	SETTLED(B1, USD(1), SC_RISK_LOW, SC_OUTCOME_SUCCESS, USD(1)),
	SETTLED(B1, USD(1), SC_RISK_LOW, SC_OUTCOME_SUCCESS, USD(1)),
	SETTLED(B1, USD(1), SC_RISK_LOW, SC_OUTCOME_SUCCESS, USD(1)),
	PENDING(B1, USD(10), SC_RISK_MEDIUM), /* 10x the average cost: an anomaly */
	SETTLED(B2, USD(5), SC_RISK_HIGH, SC_OUTCOME_SUCCESS, USD(4)), /* critical, past its max */
	BLOCKED(A1, USD(500), "wallet_empty", 0),
	SETTLED(A1, USD(1), SC_RISK_LOW, SC_OUTCOME_FAILURE, 0), /* settled, charged nothing */
	PENDING(A2, USD(1), SC_RISK_LOW),
	BLOCKED(A2, USD(1), "agent_frozen", 1),
};

#undef SETTLED
#undef PENDING
#undef BLOCKED

#define VIS_N COUNT(vis_steps)

struct vis_txn {
	uint64_t id;
	int agent;
	enum sc_txn_status status;
	enum sc_risk risk;
	sc_micros estimate, charged;
	int64_t created_at;
};

struct vis {
	uint64_t agent[N_VIS_AGENTS], org_of[N_VIS_AGENTS];
	struct vis_txn txn[VIS_N]; /* oldest first */
};

static struct vis v;

static void vis_build(void)
{
	sc_transaction *list;
	sc_settlement s;
	sc_decision dec;
	size_t i, n;
	sc_agent a;

	new_org("alpha");
	new_org("beta");
	for (i = 0; i < N_VIS_AGENTS; i++) {
		v.agent[i] = new_agent_in(vis_agents[i].org, vis_agents[i].name,
		                          vis_agents[i].priority, USD(100), vis_agents[i].max_per_txn, 0,
		                          NULL, 0);
		OK(sc_agents_get(c, v.agent[i], &a));
		v.org_of[i] = a.org_id;
	}
	for (i = 0; i < VIS_N; i++) {
		const struct vis_step *st = &vis_steps[i];
		struct vis_txn *t = &v.txn[i];

		if (st->freeze_first)
			OK(sc_agents_update(c, v.agent[st->agent], NULL, -1, SC_STATUS_FROZEN, &a));
		dec = check_as(v.agent[st->agent], "tool.run", st->estimate, NULL);
		ck_assert_msg(dec.allowed == (st->block_reason == NULL), "step %zu: %s", i,
		              dec.block_reason);
		ck_assert_str_eq(dec.block_reason, st->block_reason ? st->block_reason : "");
		ck_assert_str_eq(dec.risk_level, sc_risk_name(st->risk));
		*t = (struct vis_txn){ .id = dec.transaction_id, .agent = st->agent,
			               .status = dec.allowed ? SC_TXN_PENDING : SC_TXN_BLOCKED,
			               .risk = st->risk, .estimate = st->estimate };
		if (st->settle) {
			OK(sc_report(c, t->id, st->outcome, 1, st->actual, &s));
			ck_assert_int_eq(s.charged, st->actual);
			t->status = SC_TXN_SETTLED;
			t->charged = s.charged;
		}
		if (i > 0)
			ck_assert_uint_gt(t->id, v.txn[i - 1].id);
	}
	/* The only thing the tally takes from the daemon: when each transaction was created. */
	OK(sc_transactions_list(c, 0, -1, 1000, &list, &n));
	ck_assert_uint_eq(n, VIS_N);
	for (i = 0; i < n; i++) {
		ck_assert_uint_eq(list[i].id, v.txn[VIS_N - 1 - i].id);
		v.txn[VIS_N - 1 - i].created_at = list[i].created_at;
	}
	sc_transactions_free(list);
}

/* Whether the tally's t passes f (PROTOCOL.md, transactions.list); the limit aside. */
static int vis_keeps(const struct vis_txn *t, const sc_txn_filter *f)
{
	return (f->agent_id == 0 || v.agent[t->agent] == f->agent_id) &&
	       (f->org_id == 0 || v.org_of[t->agent] == f->org_id) &&
	       (f->status < 0 || (int)t->status == f->status) &&
	       (f->risk < 0 || (int)t->risk == f->risk) && t->created_at >= f->since &&
	       (f->until == 0 || t->created_at < f->until) && (f->before == 0 || t->id < f->before);
}

/* The tally's transactions that f keeps, newest first, into ids; returns how many. */
static size_t vis_expect(const sc_txn_filter *f, uint64_t *ids)
{
	size_t i, n = 0;

	for (i = VIS_N; i-- > 0;)
		if (vis_keeps(&v.txn[i], f) && (f->limit == 0 || n < f->limit))
			ids[n++] = v.txn[i].id;
	return n;
}

static const struct vis_txn *vis_txn_by_id(uint64_t id)
{
	size_t i;

	for (i = 0; i < VIS_N && v.txn[i].id != id; i++)
		;
	ck_assert_msg(i < VIS_N, "transaction %" PRIu64 " is not the test's", id);
	return &v.txn[i];
}

/*
 * Queries with f (NULL: no filter) and asserts the answer is the tally's, in
 * order, field by field; returns how many transactions were listed.
 */
static size_t vis_assert_query(const char *what, const sc_txn_filter *f)
{
	uint64_t want[VIS_N];
	sc_transaction *list;
	sc_txn_filter any;
	size_t n_want, n, i;

	sc_txn_filter_init(&any);
	n_want = vis_expect(f ? f : &any, want);
	OK(sc_transactions_query(c, f, &list, &n));
	ck_assert_msg(n == n_want, "%s: %zu transactions, expected %zu", what, n, n_want);
	for (i = 0; i < n; i++) {
		const struct vis_txn *t = vis_txn_by_id(list[i].id);

		ck_assert_msg(list[i].id == want[i], "%s: #%zu is %" PRIu64 ", expected %" PRIu64,
		              what, i, list[i].id, want[i]);
		ck_assert_uint_eq(list[i].agent_id, v.agent[t->agent]);
		ck_assert_uint_eq(list[i].org_id, v.org_of[t->agent]);
		ck_assert_int_eq(list[i].status, t->status);
		ck_assert_int_eq(list[i].risk, t->risk);
		ck_assert_str_eq(list[i].risk_level, sc_risk_name(t->risk));
		ck_assert_int_eq(list[i].estimated_cost, t->estimate);
		ck_assert_int_eq(list[i].charged, t->charged);
	}
	sc_transactions_free(list);
	return n;
}

/* A filter of the tally's terms: an agent and an org by index (-1: any). */
static sc_txn_filter vis_filter(int agent, int org_of_agent, int status, int risk)
{
	sc_txn_filter f;

	sc_txn_filter_init(&f);
	f.agent_id = agent >= 0 ? v.agent[agent] : 0;
	f.org_id = org_of_agent >= 0 ? v.org_of[org_of_agent] : 0;
	f.status = status;
	f.risk = risk;
	return f;
}

START_TEST(test_txn_query_filters)
{
	static const struct {
		const char *what;
		int agent, org_of; /* vis indexes, -1: any */
		int status, risk;
		size_t count;
	} cases[] = {
		{ "everything", -1, -1, -1, -1, VIS_N },
		{ "org alpha", -1, A1, -1, -1, 6 },
		{ "org beta", -1, B1, -1, -1, 7 },
		{ "risk low", -1, -1, -1, SC_RISK_LOW, VIS_N - 2 },
		{ "risk medium", -1, -1, -1, SC_RISK_MEDIUM, 1 },
		{ "risk high", -1, -1, -1, SC_RISK_HIGH, 1 },
		{ "blocked", -1, -1, SC_TXN_BLOCKED, -1, 2 },
		{ "expired", -1, -1, SC_TXN_EXPIRED, -1, 0 },
		{ "pending in alpha", -1, A1, SC_TXN_PENDING, -1, 1 },
		{ "settled low-risk in beta", -1, B1, SC_TXN_SETTLED, SC_RISK_LOW, 5 },
		{ "b1's pending medium", B1, -1, SC_TXN_PENDING, SC_RISK_MEDIUM, 1 },
		{ "b1 in org alpha", B1, A1, -1, -1, 0 },
		{ "high risk in alpha", -1, A1, -1, SC_RISK_HIGH, 0 },
	};
	sc_transaction *list;
	sc_txn_filter f;
	size_t i, n;

	vis_build();
	for (i = 0; i < COUNT(cases); i++) {
		f = vis_filter(cases[i].agent, cases[i].org_of, cases[i].status, cases[i].risk);
		ck_assert_msg(vis_assert_query(cases[i].what, &f) == cases[i].count,
		              "%s: not %zu transactions", cases[i].what, cases[i].count);
	}
	f = vis_filter(-1, -1, -1, -1);
	f.limit = 3;
	ck_assert_uint_eq(vis_assert_query("the newest 3", &f), 3);
	ck_assert_uint_eq(vis_assert_query("no filter", NULL), VIS_N);

	f = vis_filter(-1, -1, SC_TXN_EXPIRED + 1, -1);
	FAILS(sc_transactions_query(c, &f, &list, &n), SC_EINVAL, "status");
	ck_assert_ptr_null(list);
	f = vis_filter(-1, -1, -1, SC_RISK_HIGH + 1);
	FAILS(sc_transactions_query(c, &f, &list, &n), SC_EINVAL, "risk");
	f = vis_filter(-1, -1, -1, -1);
	f.limit = 1001;
	FAILS(sc_transactions_query(c, &f, &list, &n), SC_EINVAL, "limit");
	f.limit = 0;
	f.since = -1;
	FAILS(sc_transactions_query(c, &f, &list, &n), SC_EINVAL, "since");
}
END_TEST

/* Pages of 2 chained by `before` cover each transaction exactly once, newest first. */
START_TEST(test_txn_query_paging)
{
	static const struct {
		const char *what;
		int org_of, status, risk;
	} cases[] = {
		{ "everything", -1, -1, -1 },
		{ "org alpha", A1, -1, -1 },
		{ "settled", -1, SC_TXN_SETTLED, -1 },
		{ "risk low in beta", B1, -1, SC_RISK_LOW },
	};
	uint64_t want[VIS_N], got[VIS_N + 2];
	sc_transaction *page;
	sc_txn_filter f;
	size_t i, k, n, n_want, n_got, pages;

	vis_build();
	for (i = 0; i < COUNT(cases); i++) {
		f = vis_filter(-1, cases[i].org_of, cases[i].status, cases[i].risk);
		n_want = vis_expect(&f, want);
		f.limit = 2;
		n_got = 0;
		pages = 0;
		do {
			OK(sc_transactions_query(c, &f, &page, &n));
			ck_assert_uint_le(n, 2);
			ck_assert_msg(n_got + n <= n_want, "%s: more than %zu transactions",
			              cases[i].what, n_want);
			for (k = 0; k < n; k++) {
				if (f.before != 0)
					ck_assert_uint_lt(page[k].id, f.before);
				got[n_got++] = page[k].id;
			}
			if (n > 0)
				f.before = page[n - 1].id;
			sc_transactions_free(page);
			pages++;
		} while (n == 2);
		ck_assert_msg(n_got == n_want, "%s: %zu transactions over the pages, expected %zu",
		              cases[i].what, n_got, n_want);
		for (k = 0; k < n_got; k++)
			ck_assert_msg(got[k] == want[k], "%s: #%zu is %" PRIu64 ", expected %" PRIu64,
			              cases[i].what, k, got[k], want[k]);
		/* A last short page, or an empty one after an even count. */
		ck_assert_uint_eq(pages, n_want / 2 + 1);
	}
	/* A cursor at the oldest id leaves nothing; one past the newest, everything. */
	f = vis_filter(-1, -1, -1, -1);
	f.before = v.txn[0].id;
	ck_assert_uint_eq(vis_assert_query("before the oldest", &f), 0);
	f.before = v.txn[VIS_N - 1].id + 1;
	ck_assert_uint_eq(vis_assert_query("before past the newest", &f), VIS_N);
}
END_TEST

/*
 * since is inclusive and until exclusive, at boundaries taken from the
 * created_at of transactions: the boundary transaction is on the since side.
 */
START_TEST(test_txn_query_window)
{
	const struct vis_txn *early = &v.txn[3], *mid = &v.txn[VIS_N / 2], *late = &v.txn[VIS_N - 3];
	size_t n_since, n_until;
	sc_txn_filter f;

	vis_build();
	ck_assert_int_lt(early->created_at, late->created_at);

	f = vis_filter(-1, -1, -1, -1);
	f.since = mid->created_at;
	n_since = vis_assert_query("since the middle", &f);
	ck_assert(vis_keeps(mid, &f));
	ck_assert(!vis_keeps(&v.txn[0], &f));
	f = vis_filter(-1, -1, -1, -1);
	f.until = mid->created_at;
	n_until = vis_assert_query("until the middle", &f);
	ck_assert(!vis_keeps(mid, &f));
	ck_assert(vis_keeps(&v.txn[0], &f));
	ck_assert_uint_eq(n_since + n_until, VIS_N);

	f = vis_filter(-1, -1, -1, -1);
	f.since = early->created_at;
	f.until = late->created_at;
	ck_assert_uint_ge(vis_assert_query("between two", &f), 1);
	ck_assert(vis_keeps(early, &f) && vis_keeps(mid, &f) && !vis_keeps(late, &f));
	f.until = f.since;
	ck_assert_uint_eq(vis_assert_query("an empty window", &f), 0);
	f.until = f.since + 1;
	ck_assert_uint_ge(vis_assert_query("one microsecond", &f), 1);

	f = vis_filter(-1, A1, SC_TXN_SETTLED, -1);
	f.since = early->created_at;
	f.until = late->created_at;
	vis_assert_query("settled in alpha between two", &f);
	f = vis_filter(-1, -1, -1, -1);
	f.since = v.txn[VIS_N - 1].created_at + 1;
	ck_assert_uint_eq(vis_assert_query("after the newest", &f), 0);
}
END_TEST

/* The tally's summary of f (only agent, org and window apply). */
static sc_txn_summary vis_summary(const sc_txn_filter *f)
{
	sc_txn_summary s;
	uint64_t *by_status[] = { &s.pending, &s.settled, &s.blocked, &s.expired };
	size_t i;

	memset(&s, 0, sizeof(s));
	for (i = 0; i < VIS_N; i++) {
		if (!vis_keeps(&v.txn[i], f))
			continue;
		s.total++;
		(*by_status[v.txn[i].status])++;
		s.charged += v.txn[i].charged;
		s.estimated += v.txn[i].estimate;
	}
	return s;
}

#define SUMMARY_FIELD(m) { #m, offsetof(sc_txn_summary, m) }

START_TEST(test_txn_summary)
{
	static const struct {
		const char *name;
		size_t off;
	} fields[] = {
		SUMMARY_FIELD(total),   SUMMARY_FIELD(pending), SUMMARY_FIELD(settled),
		SUMMARY_FIELD(blocked), SUMMARY_FIELD(expired), SUMMARY_FIELD(charged),
		SUMMARY_FIELD(estimated),
	};
	static const struct {
		const char *what;
		int agent, org_of, window; /* window: since the middle transaction */
	} cases[] = {
		{ "everything", -1, -1, 0 }, { "org alpha", -1, A1, 0 }, { "org beta", -1, B1, 0 },
		{ "agent a2", A2, -1, 0 },   { "since the middle", -1, -1, 1 },
		{ "beta since the middle", -1, B1, 1 },
	};
	sc_txn_summary got, want;
	sc_txn_filter f;
	int64_t a, b;
	size_t i, k;

	vis_build();
	for (i = 0; i < COUNT(cases); i++) {
		f = vis_filter(cases[i].agent, cases[i].org_of, -1, -1);
		if (cases[i].window)
			f.since = v.txn[VIS_N / 2].created_at;
		want = vis_summary(&f);
		OK(sc_transactions_summary(c, &f, &got));
		for (k = 0; k < COUNT(fields); k++) {
			memcpy(&a, (const char *)&got + fields[k].off, sizeof(a));
			memcpy(&b, (const char *)&want + fields[k].off, sizeof(b));
			ck_assert_msg(a == b, "%s: %s = %" PRId64 ", the test tallied %" PRId64,
			              cases[i].what, fields[k].name, a, b);
		}
		ck_assert_uint_eq(got.total, got.pending + got.settled + got.blocked + got.expired);
	}
	/* The tally itself, by hand: 13 checks, $14 charged of $528 estimated. */
	OK(sc_transactions_summary(c, NULL, &got));
	ck_assert_uint_eq(got.total, VIS_N);
	ck_assert_uint_eq(got.pending, 2);
	ck_assert_uint_eq(got.settled, 9);
	ck_assert_uint_eq(got.blocked, 2);
	ck_assert_uint_eq(got.expired, 0);
	ck_assert_int_eq(got.charged, USD(14));
	ck_assert_int_eq(got.estimated, USD(528));
	f = vis_filter(-1, -1, -1, -1);
	f.until = v.txn[0].created_at;
	OK(sc_transactions_summary(c, &f, &got));
	ck_assert_uint_eq(got.total, 0);
	ck_assert_int_eq(got.charged, 0);
}
END_TEST

/* The tally's top agents over f's org and window: charged transactions only, most first. */
static size_t vis_top(const sc_txn_filter *f, unsigned limit, sc_top_agent *out)
{
	sc_micros spend[N_VIS_AGENTS] = { 0 };
	uint64_t count[N_VIS_AGENTS] = { 0 };
	size_t i, n = 0;
	int best, a;

	for (i = 0; i < VIS_N; i++)
		if (v.txn[i].charged > 0 && vis_keeps(&v.txn[i], f)) {
			spend[v.txn[i].agent] += v.txn[i].charged;
			count[v.txn[i].agent]++;
		}
	while (n < limit) {
		for (best = -1, a = 0; a < N_VIS_AGENTS; a++)
			if (count[a] && (best < 0 || spend[a] > spend[best]))
				best = a;
		if (best < 0)
			break;
		out[n] = (sc_top_agent){ .agent_id = v.agent[best], .spend = spend[best],
			                 .transactions = count[best] };
		snprintf(out[n].name, sizeof(out[n].name), "%s", vis_agents[best].name);
		count[best] = 0;
		n++;
	}
	return n;
}

START_TEST(test_agents_top)
{
	static const struct {
		const char *what;
		int org_of, window;
		unsigned limit;
		size_t count;
	} cases[] = {
		{ "everyone", -1, 0, 0, 4 },      { "the top 2", -1, 0, 2, 2 },
		{ "org alpha", A1, 0, 0, 2 },     { "org beta, top 1", B1, 0, 1, 1 },
		{ "since the middle", -1, 1, 0, 0 /* from the tally */ },
	};
	sc_top_agent *list, want[N_VIS_AGENTS];
	sc_txn_filter f;
	size_t i, k, n, n_want;

	vis_build();
	for (i = 0; i < COUNT(cases); i++) {
		f = vis_filter(-1, cases[i].org_of, -1, -1);
		if (cases[i].window)
			f.since = v.txn[VIS_N / 2].created_at;
		n_want = vis_top(&f, cases[i].limit ? cases[i].limit : 10, want);
		if (cases[i].count)
			ck_assert_uint_eq(n_want, cases[i].count);
		OK(sc_agents_top(c, f.org_id, f.since, f.until, cases[i].limit, &list, &n));
		ck_assert_msg(n == n_want, "%s: %zu agents, expected %zu", cases[i].what, n, n_want);
		for (k = 0; k < n; k++) {
			ck_assert_msg(list[k].agent_id == want[k].agent_id,
			              "%s: #%zu is agent %" PRIu64 ", expected %" PRIu64,
			              cases[i].what, k, list[k].agent_id, want[k].agent_id);
			ck_assert_str_eq(list[k].name, want[k].name);
			ck_assert_int_eq(list[k].spend, want[k].spend);
			ck_assert_uint_eq(list[k].transactions, want[k].transactions);
			if (k > 0)
				ck_assert_int_ge(list[k - 1].spend, list[k].spend);
		}
		sc_top_agents_free(list);
	}
	/* The tally by hand: b1 $5 in 5 charges, b2 $4, a2 $3, a1 $2 (its failure charged $0). */
	OK(sc_agents_top(c, 0, 0, 0, 0, &list, &n));
	ck_assert_uint_eq(n, 4);
	ck_assert_uint_eq(list[0].agent_id, v.agent[B1]);
	ck_assert_int_eq(list[0].spend, USD(5));
	ck_assert_uint_eq(list[0].transactions, 5);
	ck_assert_uint_eq(list[3].agent_id, v.agent[A1]);
	ck_assert_int_eq(list[3].spend, USD(2));
	ck_assert_uint_eq(list[3].transactions, 1);
	sc_top_agents_free(list);
	OK(sc_agents_top(c, 0, v.txn[VIS_N - 1].created_at + 1, 0, 0, &list, &n));
	ck_assert_uint_eq(n, 0);
	sc_top_agents_free(list);
	FAILS(sc_agents_top(c, 0, 0, 0, 101, &list, &n), SC_EINVAL, "limit");
	ck_assert_ptr_null(list);
}
END_TEST

START_TEST(test_fleet)
{
	sc_fleet fl;
	sc_score sc;
	int64_t risk_blocked, scores = 0;
	sc_micros spend = 0;
	size_t i;

	OK(sc_fleet_get(c, &fl));
	ck_assert_uint_eq(fl.total_agents, 0);
	ck_assert_int_eq(fl.total_spend, 0);
	ck_assert_int_eq(fl.avg_credit_score, 0);

	vis_build();
	for (i = 0; i < VIS_N; i++)
		spend += v.txn[i].charged;
	for (i = 0; i < N_VIS_AGENTS; i++) {
		OK(sc_score_get(c, v.agent[i], &sc));
		scores += sc.score;
	}
	OK(sc_fleet_get(c, &fl));
	ck_assert_uint_eq(fl.total_agents, N_VIS_AGENTS);
	ck_assert_uint_eq(fl.active_agents, N_VIS_AGENTS - 1);
	ck_assert_uint_eq(fl.throttled_agents, 0);
	ck_assert_uint_eq(fl.frozen_agents, 1); /* a2 */
	ck_assert_int_eq(fl.total_spend, spend);
	ck_assert_int_eq(fl.total_spend, USD(14));
	/* agent_frozen is a risk control; wallet_empty is not. */
	ck_assert_uint_eq(fl.risk_events_blocked, 1);
	ck_assert_uint_eq(fl.anomalies, 1);
	ck_assert_int_eq(fl.avg_credit_score, scores / N_VIS_AGENTS);
	OK(sc_stat(c, "risk_blocked", &risk_blocked));
	ck_assert_int_eq(risk_blocked, 1);
}
END_TEST

/* ----- alerts ----- */

/* The next alert pushed to sub within 2 s. */
static sc_alert next_alert(sc_client *sub)
{
	sc_alert a;
	int rc = sc_alert_next(sub, 2000, &a);

	ck_assert_msg(rc == 0, "no alert pushed: %s (%s)", sc_err_name(rc), sc_last_error(sub));
	return a;
}

static void no_alert(sc_client *conn)
{
	sc_alert a;
	int rc = sc_alert_next(conn, 300, &a);

	ck_assert_msg(rc == -ETIMEDOUT, "expected no alert, got %s: %s", sc_err_name(rc),
	              rc == 0 ? a.message : sc_last_error(conn));
}

START_TEST(test_alerts_pushed_to_subscribers)
{
	sc_client *sub, *other, *sub2;
	sc_wallet_update u = { .set = SC_WALLET_SET_LOW_BALANCE, .low_balance = USD(5) };
	sc_alert_filter f;
	sc_alert a, *list;
	sc_wallet w;
	uint64_t agent = new_agent(USD(10)), last = 99, txn, second;
	int64_t count;
	size_t n;

	OK(sc_connect(d.socket, &sub));
	OK(sc_connect(d.socket, &other));
	TEST_OK(sub, sc_alerts_subscribe(sub, &last));
	ck_assert_uint_eq(last, 0);

	/* a hold takes available to $0.50, below a tenth of the $10 budget */
	txn = allow(agent, "openai.chat", CENTS(950));
	a = next_alert(sub);
	ck_assert_int_eq(a.kind, SC_ALERT_LOW_BALANCE);
	ck_assert_int_eq(a.severity, SC_SEVERITY_WARNING);
	ck_assert_uint_eq(a.agent_id, agent);
	ck_assert_uint_eq(a.transaction_id, txn);
	ck_assert_int_eq(a.value, CENTS(50));
	ck_assert_int_eq(a.threshold, USD(1));
	ck_assert_str_eq(a.message, "agent 1 (bot): available $0.50 below $1.00");
	no_alert(other);

	OK(sc_alerts_list(c, NULL, &list, &n));
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(list[0].id, a.id);
	ck_assert_str_eq(list[0].message, a.message);
	sc_alerts_free(list);
	sc_alert_filter_init(&f);
	f.kind = SC_ALERT_ANOMALY;
	OK(sc_alerts_list(c, &f, &list, &n));
	ck_assert_uint_eq(n, 0);
	sc_alerts_free(list);

	/* a subscriber that raises an alert itself gets it after its reply */
	OK(sc_connect(d.socket, &sub2));
	TEST_OK(sub2, sc_alerts_subscribe(sub2, &last));
	ck_assert_uint_eq(last, a.id);
	sc_close(sub); /* gone before the next alert: the daemon must not mind */
	TEST_OK(sub2, sc_wallets_update(sub2, agent, &u, &w));
	ck_assert_int_eq(w.low_balance, USD(5));
	a = next_alert(sub2);
	ck_assert_int_eq(a.severity, SC_SEVERITY_CRITICAL);
	ck_assert_int_eq(a.threshold, USD(1)); /* a fifth of $5 */
	ck_assert_uint_eq(a.transaction_id, 0);
	no_alert(other);

	/* unsubscribed: nothing more */
	TEST_OK(sub2, sc_alerts_unsubscribe(sub2));
	second = new_agent_in("org-1", "second", SC_PRIORITY_NORMAL, USD(10), 0, 0, NULL, 0);
	allow(second, "openai.chat", CENTS(950));
	OK(sc_alerts_list(c, NULL, &list, &n));
	ck_assert_uint_eq(n, 3);
	ck_assert_uint_eq(list[0].agent_id, second);
	ck_assert_uint_gt(list[0].id, list[1].id);
	sc_alerts_free(list);
	no_alert(sub2);

	OK(sc_stat(c, "alerts_dropped", &count));
	ck_assert_int_eq(count, 0);
	ck_assert_uint_eq(sc_alerts_dropped(sub2), 0);
	sc_close(sub2);
	sc_close(other);
}
END_TEST

START_TEST(test_alerts_budget_and_filters)
{
	sc_client *sub;
	sc_alert_filter f;
	sc_alert a, *list;
	uint64_t agent, last, txn;
	size_t n;

	new_org("spenders");
	agent = new_agent_in("spenders", "overrun", SC_PRIORITY_NORMAL, USD(100), 0, USD(10), NULL, 0);
	OK(sc_connect(d.socket, &sub));
	TEST_OK(sub, sc_alerts_subscribe(sub, &last));
	txn = allow(agent, "tool.run", USD(9));
	report(txn, SC_OUTCOME_SUCCESS, 1, USD(15));
	a = next_alert(sub);
	ck_assert_int_eq(a.kind, SC_ALERT_BUDGET_EXCEEDED);
	ck_assert_int_eq(a.severity, SC_SEVERITY_CRITICAL);
	ck_assert_int_eq(a.value, USD(15));
	ck_assert_int_eq(a.threshold, USD(10));
	ck_assert_uint_eq(a.transaction_id, txn);
	sc_alert_filter_init(&f);
	f.agent_id = agent;
	f.kind = SC_ALERT_BUDGET_EXCEEDED;
	OK(sc_alerts_list(c, &f, &list, &n));
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(list[0].id, a.id);
	sc_alerts_free(list);
	f.agent_id = agent + 1;
	OK(sc_alerts_list(c, &f, &list, &n));
	ck_assert_uint_eq(n, 0);
	sc_alerts_free(list);
	f.kind = 9;
	FAILS(sc_alerts_list(c, &f, &list, &n), SC_EINVAL, "kind");
	sc_close(sub);
}
END_TEST

/* ----- one agent's history, through its own chain ----- */

#define SHORT_HISTORY 64
#define CHAIN_AGENTS 3
#define CHAIN_CHECKS 200

static void setup_short_history(void)
{
	static const char *const extra[] = { "--history", "64", NULL };

	start(extra);
}

/* Agent k's transactions still in the history, newest first, from the ids it got. */
static size_t chain_expect(const uint64_t *ids, const int *owner, uint64_t last, int k,
                           uint64_t before, uint64_t *want)
{
	size_t n = 0;

	for (int i = CHAIN_CHECKS - 1; i >= 0; i--)
		if (owner[i] == k && last - ids[i] < SHORT_HISTORY && (!before || ids[i] < before))
			want[n++] = ids[i];
	return n;
}

/* Lists agent k's transactions two at a time with `before`, and all at once. */
static void chain_check(const uint64_t *agents, const uint64_t *ids, const int *owner,
                        uint64_t last, int k, const char *when)
{
	uint64_t want[CHAIN_CHECKS];
	sc_transaction *page;
	sc_txn_filter f;
	size_t n, n_want = chain_expect(ids, owner, last, k, 0, want), got = 0;

	sc_txn_filter_init(&f);
	f.agent_id = agents[k];
	f.limit = 1000;
	OK(sc_transactions_query(c, &f, &page, &n));
	ck_assert_msg(n == n_want, "%s: agent %d: %zu transactions, not %zu", when, k, n, n_want);
	for (size_t i = 0; i < n; i++)
		ck_assert_uint_eq(page[i].id, want[i]);
	sc_transactions_free(page);
	f.limit = 2;
	do {
		OK(sc_transactions_query(c, &f, &page, &n));
		for (size_t i = 0; i < n; i++, got++) {
			ck_assert_uint_lt(got, n_want);
			ck_assert_uint_eq(page[i].id, want[got]);
		}
		if (n)
			f.before = page[n - 1].id;
		sc_transactions_free(page);
	} while (n == 2);
	ck_assert_uint_eq(got, n_want);
}

/*
 * Agents whose checks interleave in a history of 64 that wraps three
 * times list exactly their own transactions still kept, newest first,
 * whole or page by page; an agent created in a deleted agent's slot has
 * none of the deleted one's; and so after a restart that re-attaches and
 * one that rebuilds the state from the ledger.
 */
START_TEST(test_txn_list_by_agent_chain)
{
	uint64_t agents[CHAIN_AGENTS + 1], ids[CHAIN_CHECKS], last = 0, gone;
	int owner[CHAIN_CHECKS];
	sc_transaction *page;
	sc_txn_filter f;
	size_t n;

	new_org("chain");
	for (int k = 0; k < CHAIN_AGENTS; k++) {
		char name[16];

		snprintf(name, sizeof(name), "a%d", k);
		agents[k] = new_agent_in("chain", name, SC_PRIORITY_NORMAL, USD(1000), 0, 0, NULL, 0);
	}
	gone = new_agent_in("chain", "gone", SC_PRIORITY_NORMAL, USD(1000), 0, 0, NULL, 0);
	report(allow(gone, "llm.chat", 1), SC_OUTCOME_SUCCESS, 1, 1);
	for (int i = 0; i < CHAIN_CHECKS; i++) {
		owner[i] = (i * 7 + i / 5) % CHAIN_AGENTS;
		ids[i] = last = allow(agents[owner[i]], "llm.chat", 1 + i);
		report(ids[i], SC_OUTCOME_SUCCESS, 1, 1);
	}
	for (int k = 0; k < CHAIN_AGENTS; k++)
		chain_check(agents, ids, owner, last, k, "live");
	/* an agent made after a deletion may take the deleted one's slot, not its history */
	OK(sc_agents_delete(c, gone));
	agents[CHAIN_AGENTS] = new_agent_in("chain", "new", SC_PRIORITY_NORMAL, USD(1), 0, 0,
	                                    NULL, 0);
	sc_txn_filter_init(&f);
	f.agent_id = agents[CHAIN_AGENTS];
	OK(sc_transactions_query(c, &f, &page, &n));
	ck_assert_uint_eq(n, 0);
	sc_transactions_free(page);
	sc_close(c);
	ck_assert_int_eq(test_daemon_restart(&d), 0);
	OK(sc_connect(d.socket, &c));
	for (int k = 0; k < CHAIN_AGENTS; k++)
		chain_check(agents, ids, owner, last, k, "re-attached");
	sc_close(c);
	ck_assert_int_eq(test_daemon_kill(&d, SIGTERM), 0);
	ck_assert_int_eq(unlink(d.segment), 0);
	ck_assert_int_eq(test_daemon_restart(&d), 0);
	OK(sc_connect(d.socket, &c));
	for (int k = 0; k < CHAIN_AGENTS; k++)
		chain_check(agents, ids, owner, last, k, "rebuilt");
	stop();
}
END_TEST

/* ----- the test cases ----- */

void integration_visibility_tcases(Suite *s)
{
	TCase *tc;

	tc = daemon_tcase(s, "score", setup_default, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_score_new_agent);
	tcase_add_test(tc, test_score_throttles_on_failures);
	tcase_add_test(tc, test_anomaly_risk_and_event);
	tcase_add_test(tc, test_operator_status_events);

	tc = daemon_tcase(s, "visibility", setup_default, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_txn_query_filters);
	tcase_add_test(tc, test_txn_query_paging);
	tcase_add_test(tc, test_txn_query_window);
	tcase_add_test(tc, test_txn_summary);
	tcase_add_test(tc, test_agents_top);
	tcase_add_test(tc, test_fleet);

	tc = daemon_tcase(s, "history_chain", setup_short_history, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_txn_list_by_agent_chain);

	tc = daemon_tcase(s, "alerts", setup_default, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_alerts_pushed_to_subscribers);
	tcase_add_test(tc, test_alerts_budget_and_filters);
}
