/*
 * check_gate_sweep.c: the gate suite's invariant sweep (check_gate.c builds
 * the suite): a seeded random mix of checks, reports, replays, fundings,
 * freezes and expiries on five agents, after every step of which the
 * segment must agree with the test's own model of balances, holds, limits
 * and idempotency keys. Three seeds, one of them on tables small enough to
 * fill and wrap.
 *
 * Fixture, clock and thread as in check_gate.c: a fresh state segment per
 * test (gate_fixture.c), time moved explicitly from T0, the test thread as
 * the state's only writer reading the segment's records directly.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "gate.h"
#include "shm.h"
#include "sidecard.h"
#include "state.h"
#include "state_check.h"
#include "suites.h"
#include "gate_fixture.h"
#include "testutil.h"

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
		int rank = state_pattern_rank(rule_match(r), strlen(rule_match(r)), action,
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
	unsigned n = 0;
	unsigned long long st = (unsigned long long)w->step;
	char err[256];

	for (uint32_t i = 0; i < g_m->hdr->hold_cap; i++)
		n += g_m->holds[i].rec.used != 0;
	SW_REQUIRE(n == w->n_open, "step %llu: %u holds in the table, %u open", st, n, w->n_open);
	SW_REQUIRE(state_check_holds(g_m, err, sizeof err) == 0, "step %llu: %s", st, err);
	for (int a = 0; a < SW_AGENTS; a++) {
		const struct shm_wallet *aw = AW(w->slot[a]);

		SW_REQUIRE(aw->balance - aw->debt == w->net[a],
		           "step %llu: agent %d balance-debt %lld, expected %lld", st, a,
		           (long long)(aw->balance - aw->debt), (long long)w->net[a]);
	}
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
	struct shm_caps caps = { 4, 8, 64, 64, 8192, 8192, 8192, 8192, 8192, 128, 4 };

	run_sweep(caps, UINT64_C(0x5eed5eed12345678), 0);
}
END_TEST

START_TEST(test_random_sweep_other_seed)
{
	struct shm_caps caps = { 4, 8, 64, 64, 8192, 8192, 8192, 8192, 8192, 128, 4 };

	run_sweep(caps, UINT64_C(0x0123456789abcdef), 0);
}
END_TEST

/* Four hold slots and a 32-transaction history: full tables and reuse. */
START_TEST(test_random_sweep_small_tables)
{
	struct shm_caps caps = { 4, 8, 64, 4, 32, 32, 32, 32, 32, 128, 4 };

	run_sweep(caps, UINT64_C(0xfeedface0badf00d), 1);
}
END_TEST

/* ====================================================================== */

void gate_sweep_tcases(Suite *s)
{
	TCase *t;

	t = test_add_tcase_tmp(s, "invariant_sweep", gate_setup, gate_teardown, 60);
	tcase_add_test(t, test_random_sweep_keeps_invariants);
	tcase_add_test(t, test_random_sweep_other_seed);
	tcase_add_test(t, test_random_sweep_small_tables);
}
