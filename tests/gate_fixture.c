/*
 * gate_fixture.c: the state-and-clock fixture the gate and score suites
 * share: a fresh state segment per test in its own temporary directory, an
 * org named "acme", builders for agents, rules and wallets, and checks and
 * reports that assert their outcome and say on which line they were asked.
 *
 * Thread: the test thread plays the daemon's loop thread (registered with
 * liburcu in setup).
 */
#include <check.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <urcu.h>

#include "gate_fixture.h"
#include "testutil.h"


char g_dir[96];
char g_path[128];
struct state *g_st;
struct shm *g_m;
uint32_t g_org;
char g_err[256];

const struct shm_caps default_caps = { 4, 8, 64, 32, 256, 256, 256, 256, 256, 128, 4 };

/* ---------------------------------------------------------------------- */
/* fixture */

struct state_str str(const char *s)
{
	struct state_str v;

	v.p = s;
	v.len = s ? strlen(s) : 0;
	return v;
}

/* Replaces the state with a fresh one of these capacities and settings. */
void open_state(struct shm_caps caps, int64_t ttl, int expiry_charges)
{
	struct state_config cfg;
	int rc;

	if (g_st) {
		state_close(g_st);
		g_st = NULL;
	}
	unlink(g_path);
	memset(&cfg, 0, sizeof cfg);
	cfg.path = g_path;
	cfg.caps = caps;
	cfg.set.hold_ttl_us = ttl;
	cfg.set.expiry_charges = expiry_charges;
	g_err[0] = '\0';
	rc = state_open(&g_st, &cfg, g_err, sizeof g_err);
	ck_assert_msg(rc == 0, "state_open: %d (%s)", rc, g_err);
	g_m = state_shm(g_st);
	ck_assert_ptr_nonnull(g_m);
	rc = state_org_create(g_st, str("acme"), T0 - DAY, &g_org, g_err, sizeof g_err);
	ck_assert_msg(rc == 0, "state_org_create: %d (%s)", rc, g_err);
}

/* Closes the state and opens the same segment again, as a restart would. */
void reattach(void)
{
	struct state_config cfg = *state_config(g_st);
	int rc;

	cfg.path = g_path;
	state_close(g_st);
	g_st = NULL;
	g_m = NULL;
	g_err[0] = '\0';
	rc = state_open(&g_st, &cfg, g_err, sizeof g_err);
	ck_assert_msg(rc == 0, "state_open again: %d (%s)", rc, g_err);
	g_m = state_shm(g_st);
}

void gate_setup(void)
{
	rcu_register_thread();
	ck_assert_int_eq(test_tmpdir(g_dir, sizeof g_dir), 0);
	snprintf(g_path, sizeof g_path, "%s/state.shm", g_dir);
	g_st = NULL;
	open_state(default_caps, TTL, 1);
}

void gate_teardown(void)
{
	if (g_st)
		state_close(g_st);
	g_st = NULL;
	g_m = NULL;
	test_rm_tree(g_dir);
	rcu_unregister_thread();
}

/* ---------------------------------------------------------------------- */
/* building objects */

struct state_rule_spec rspec(const char *name, const char *match, int64_t max_cost,
                                    int64_t daily, int64_t hourly)
{
	struct state_rule_spec r;

	memset(&r, 0, sizeof r);
	r.set = STATE_RULE_SET_NAME | STATE_RULE_SET_MATCH | STATE_RULE_SET_MAX_COST |
	        STATE_RULE_SET_DAILY | STATE_RULE_SET_HOURLY;
	r.name = str(name);
	r.match = str(match);
	r.max_cost_per_txn = max_cost;
	r.daily_limit = daily;
	r.hourly_limit = hourly;
	return r;
}

/* Creates an agent in org "acme"; budget defaults to the balance. */
uint64_t agent_new(const char *name, enum sc_priority prio, int64_t balance,
                          int64_t max_per_txn, int64_t daily, const struct state_rule_spec *rules,
                          size_t n_rules, uint32_t *slot)
{
	struct state_agent_spec spec;
	uint32_t s = SHM_NONE;
	int rc;

	memset(&spec, 0, sizeof spec);
	spec.org_slot = g_org;
	spec.name = str(name);
	spec.priority = prio;
	spec.wallet.set = SC_WALLET_SET_BALANCE | SC_WALLET_SET_MAX_PER_TXN |
	                  SC_WALLET_SET_DAILY_SPEND_LIMIT;
	spec.wallet.balance = balance;
	spec.wallet.max_per_txn = max_per_txn;
	spec.wallet.daily_spend_limit = daily;
	spec.n_rules = n_rules;
	spec.rules = rules;
	g_err[0] = '\0';
	rc = state_agent_create(g_st, &spec, T0 - HOUR, &s, g_err, sizeof g_err);
	ck_assert_msg(rc == 0, "state_agent_create(%s): %d (%s)", name, rc, g_err);
	ck_assert_uint_lt(s, g_m->hdr->agent_cap);
	if (slot)
		*slot = s;
	return g_m->agents[s].id;
}

uint64_t simple_agent(const char *name, int64_t balance, uint32_t *slot)
{
	return agent_new(name, SC_PRIORITY_NORMAL, balance, 0, 0, NULL, 0, slot);
}

void wallet_update(uint32_t slot, int org, unsigned set, int64_t balance, int64_t max_per_txn,
                          int64_t daily, int64_t debt)
{
	sc_wallet_update u;
	int rc;

	memset(&u, 0, sizeof u);
	u.set = set;
	u.balance = balance;
	u.max_per_txn = max_per_txn;
	u.daily_spend_limit = daily;
	u.debt = debt;
	g_err[0] = '\0';
	rc = state_wallet_update(g_st, slot, org, &u, g_err, sizeof g_err);
	ck_assert_msg(rc == 0, "state_wallet_update: %d (%s)", rc, g_err);
}

/* Funds the org wallet (which makes it limited) with these limits. */
void org_fund(int64_t balance, int64_t max_per_txn, int64_t daily)
{
	wallet_update(g_org, 1,
	              SC_WALLET_SET_BALANCE | SC_WALLET_SET_MAX_PER_TXN |
	                      SC_WALLET_SET_DAILY_SPEND_LIMIT,
	              balance, max_per_txn, daily, 0);
}

void set_status(uint32_t slot, enum sc_status status)
{
	int rc = state_agent_update(g_st, slot, NULL, -1, (int)status, T0, g_err, sizeof g_err);

	ck_assert_msg(rc == 0, "state_agent_update: %d (%s)", rc, g_err);
}

struct shm_wallet *AW(uint32_t slot)
{
	return &g_m->agents[slot].wallet;
}

struct shm_wallet *OW(void)
{
	return &g_m->orgs[g_org].wallet;
}

uint32_t rule_slot(uint32_t agent_slot, const char *name)
{
	const struct shm_agent *a = &g_m->agents[agent_slot];
	unsigned n = 0;

	for (uint32_t rs = a->first_rule; rs != SHM_NONE; rs = g_m->rules[rs].next) {
		ck_assert_uint_lt(rs, g_m->hdr->rule_cap);
		ck_assert_uint_le(++n, a->n_rules);
		if (!strcmp(rule_name(&g_m->rules[rs]), name))
			return rs;
	}
	ck_abort_msg("agent has no rule named %s", name);
	return SHM_NONE;
}

const char *rule_name(const struct shm_rule *r)
{
	return g_m->texts[r->name].s;
}

const char *rule_match(const struct shm_rule *r)
{
	return g_m->texts[r->match].s;
}

/* Sums of the open holds, straight from the hold table. */
int64_t holds_of_agent(uint32_t agent_slot)
{
	int64_t sum = 0;

	for (uint32_t i = 0; i < g_m->hdr->hold_cap; i++)
		if (g_m->holds[i].rec.used && g_m->holds[i].agent_slot == agent_slot)
			sum += g_m->holds[i].amount;
	return sum;
}

unsigned holds_open(void)
{
	unsigned n = 0;

	for (uint32_t i = 0; i < g_m->hdr->hold_cap; i++)
		if (g_m->holds[i].rec.used)
			n++;
	return n;
}

/* ---------------------------------------------------------------------- */
/* checks and reports */

int check_req(uint64_t agent, const char *action, int64_t est, const char *key, int64_t now,
                     struct gate_decision *d)
{
	struct gate_check_req r;

	memset(&r, 0, sizeof r);
	r.agent_id = agent;
	r.action = str(action);
	r.estimate = est;
	if (key)
		r.key = str(key);
	memset(d, 0, sizeof *d);
	g_err[0] = '\0';
	return gate_check(g_st, &r, now, d, g_err, sizeof g_err);
}


uint64_t allow_(int line, uint64_t agent, const char *action, int64_t est, int64_t now)
{
	struct gate_decision d;
	int rc = check_req(agent, action, est, NULL, now, &d);

	ck_assert_msg(rc == 0, "line %d: gate_check(%s, %lld) returned %d (%s)", line, action,
	              (long long)est, rc, g_err);
	ck_assert_msg(d.allowed, "line %d: check(%s, %lld) expected allowed, got blocked '%s'", line,
	              action, (long long)est, d.block_reason);
	ck_assert_msg(d.txn_id != 0, "line %d: allowed check without a transaction id", line);
	ck_assert_msg(!d.replayed, "line %d: fresh check reported as replayed", line);
	return d.txn_id;
}

uint64_t block_(int line, uint64_t agent, const char *action, int64_t est, int64_t now,
                       const char *reason)
{
	struct gate_decision d;
	int rc = check_req(agent, action, est, NULL, now, &d);

	ck_assert_msg(rc == 0, "line %d: gate_check(%s, %lld) returned %d (%s)", line, action,
	              (long long)est, rc, g_err);
	ck_assert_msg(!d.allowed, "line %d: check(%s, %lld) expected blocked '%s', got allowed",
	              line, action, (long long)est, reason);
	ck_assert_msg(!strcmp(d.block_reason, reason),
	              "line %d: check(%s, %lld) expected block reason '%s', got '%s'", line, action,
	              (long long)est, reason, d.block_reason);
	return d.txn_id;
}

struct gate_settlement settle_(int line, uint64_t txn, enum sc_outcome outcome, int has,
                                      int64_t actual, int64_t now)
{
	struct gate_settlement s;
	int rc;

	memset(&s, 0, sizeof s);
	g_err[0] = '\0';
	rc = gate_report(g_st, txn, outcome, has, actual, now, &s, g_err, sizeof g_err);
	ck_assert_msg(rc == 0, "line %d: gate_report(%llu) returned %d (%s)", line,
	              (unsigned long long)txn, rc, g_err);
	ck_assert_msg(s.txn_id == txn, "line %d: settlement of txn %llu names txn %llu", line,
	              (unsigned long long)txn, (unsigned long long)s.txn_id);
	return s;
}

int report_rc(uint64_t txn, enum sc_outcome outcome, int has, int64_t actual, int64_t now)
{
	struct gate_settlement s;

	g_err[0] = '\0';
	return gate_report(g_st, txn, outcome, has, actual, now, &s, g_err, sizeof g_err);
}

int has_warning(const struct gate_decision *d, const char *w)
{
	for (unsigned i = 0; i < d->n_warnings && i < SC_WARNINGS_MAX; i++)
		if (!strcmp(d->warnings[i], w))
			return 1;
	return 0;
}

