/*
 * check_gate_bounds.c: the gate suite's tests of what the gate refuses and
 * where its tables end (check_gate.c builds the suite): money that would
 * overflow int64 is refused or blocked, never wrapped; invalid requests and
 * object specs change nothing; full hold, agent and rule tables are
 * SC_ELIMIT; and the edges where features meet (an org wallet limited under
 * open holds, a report after midnight, a key past the history ring, a rule
 * whose pattern changes).
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
#include "suites.h"
#include "gate_fixture.h"
#include "testutil.h"

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
/* capacities */

START_TEST(test_hold_table_full_is_limit_and_changes_nothing)
{
	struct shm_caps caps = { 4, 8, 64, 2, 64, 64, 64, 64, 64, 128, 0 };
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
	struct shm_caps caps = { 4, 8, 4, 8, 64, 64, 64, 64, 64, 8, 0 };
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
	struct shm_caps caps = { 4, 8, 64, 8, 8, 8, 8, 8, 8, 128, 0 };
	uint64_t a, t1;
	struct gate_decision d;
	struct shm_key seen;

	open_state(caps, TTL, 1);
	a = simple_agent("a", 100000, NULL);
	ck_assert_int_eq(check_req(a, "x", 10, "k", T0, &d), 0);
	t1 = d.txn_id;
	SETTLE(t1, SC_OUTCOME_SUCCESS, 0, 0, T0);
	for (int i = 0; i < 10; i++)
		SETTLE(ALLOW(a, "y", 1, T0), SC_OUTCOME_SUCCESS, 0, 0, T0);
	ck_assert_ptr_null(state_txn_by_id(g_st, t1));
	ck_assert_int_eq(state_key_find(g_st, 0, str("k"), &seen), SC_ENOTFOUND);
	ck_assert_int_eq(report_rc(t1, SC_OUTCOME_SUCCESS, 0, 0, T0), SC_ENOTFOUND);
	/* the key is free again: a new decision, even with another estimate */
	ck_assert_int_eq(check_req(a, "x", 20, "k", T0, &d), 0);
	ck_assert_int_eq(d.replayed, 0);
	ck_assert_int_eq(d.allowed, 1);
	ck_assert_uint_gt(d.txn_id, t1);
}
END_TEST

/*
 * With two keys kept per agent, an agent's keys outlive the history that
 * another agent's checks wrap, until two newer keys of its own replace them.
 */
START_TEST(test_keys_kept_past_history_wrap)
{
	struct shm_caps caps = { 4, 8, 64, 8, 8, 8, 8, 8, 8, 128, 2 };
	uint64_t a, b, t1;
	uint32_t sa;
	struct gate_decision d;

	open_state(caps, TTL, 1);
	a = simple_agent("a", 100000, &sa);
	b = simple_agent("b", 100000, NULL);
	ck_assert_int_eq(check_req(a, "x", 10, "k", T0, &d), 0);
	t1 = d.txn_id;
	ck_assert_int_eq(check_req(a, "x", 5000000, "blocked", T0, &d), 0);
	ck_assert_int_eq(d.allowed, 0);
	for (int i = 0; i < 20; i++)
		check_req(b, "y", 5000000, NULL, T0, &d);
	ck_assert_ptr_null(state_txn_by_id(g_st, t1));
	ck_assert_int_eq(check_req(a, "x", 10, "k", T0, &d), 0);
	ck_assert_int_eq(d.replayed, 1);
	ck_assert_int_eq(d.allowed, 1);
	ck_assert_uint_eq(d.txn_id, t1);
	ck_assert_int_eq(check_req(a, "x", 5000000, "blocked", T0, &d), 0);
	ck_assert_int_eq(d.replayed, 1);
	ck_assert_str_eq(d.block_reason, "wallet_empty");
	ck_assert_int_eq(check_req(a, "x", 11, "k", T0, &d), SC_EEXISTS);
	/* survives a restart that attaches to the segment */
	reattach();
	ck_assert_int_eq(check_req(a, "x", 10, "k", T0, &d), 0);
	ck_assert_int_eq(d.replayed, 1);
	/* two newer keys of its own, once out of the history, take the places */
	ck_assert_int_eq(check_req(a, "x", 1, "k2", T0, &d), 0);
	ck_assert_int_eq(check_req(a, "x", 1, "k3", T0, &d), 0);
	for (int i = 0; i < 20; i++)
		check_req(b, "y", 5000000, NULL, T0, &d);
	ck_assert_int_eq(check_req(a, "x", 1, "k3", T0, &d), 0);
	ck_assert_int_eq(d.replayed, 1);
	ck_assert_int_eq(check_req(a, "x", 10, "k", T0, &d), 0);
	ck_assert_int_eq(d.replayed, 0);
	/* deleting the agent frees its kept keys */
	SETTLE(t1, SC_OUTCOME_SUCCESS, 0, 0, T0);
	SETTLE(d.txn_id, SC_OUTCOME_SUCCESS, 0, 0, T0);
	for (uint32_t i = 0; i < g_m->hdr->hold_top; i++)
		if (g_m->holds[i].rec.used)
			SETTLE(g_m->holds[i].txn_id, SC_OUTCOME_SUCCESS, 0, 0, T0);
	ck_assert_int_eq(state_agent_delete(g_st, sa, g_err, sizeof g_err), 0);
	for (uint32_t i = 0; i < g_m->hdr->key_top; i++)
		ck_assert_msg(!g_m->keys[i].rec.used || g_m->keys[i].agent_id != a,
		              "key slot %u of the deleted agent", i);
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

void gate_bounds_tcases(Suite *s)
{
	TCase *t;

	t = test_add_tcase_tmp(s, "money_overflow", gate_setup, gate_teardown, 0);
	tcase_add_test(t, test_estimate_near_int64_max_does_not_wrap);
	tcase_add_test(t, test_critical_hold_overflow_refused);
	tcase_add_test(t, test_report_actual_overflow_refused_or_saturated);

	t = test_add_tcase_tmp(s, "request_validation", gate_setup, gate_teardown, 0);
	tcase_add_test(t, test_invalid_requests_change_nothing);
	tcase_add_test(t, test_type_and_metadata_kept_with_transaction);

	t = test_add_tcase_tmp(s, "capacity", gate_setup, gate_teardown, 0);
	tcase_add_test(t, test_hold_table_full_is_limit_and_changes_nothing);
	tcase_add_test(t, test_agent_capacity_is_limit);
	tcase_add_test(t, test_rule_capacity_refuses_whole_agent);
	tcase_add_test(t, test_rules_per_agent_limit);

	t = test_add_tcase_tmp(s, "object_validation", gate_setup, gate_teardown, 0);
	tcase_add_test(t, test_overlong_pattern_refused_by_rule_add);
	tcase_add_test(t, test_rule_specs_validated);
	tcase_add_test(t, test_rule_name_of_63_bytes_in_block_reason);
	tcase_add_test(t, test_agent_specs_validated);
	tcase_add_test(t, test_agent_in_free_org_slot_refused);
	tcase_add_test(t, test_wallet_update_negative_is_invalid);
	tcase_add_test(t, test_invalid_outcome_and_type);
	tcase_add_test(t, test_longest_action_and_key_kept_whole);

	t = test_add_tcase_tmp(s, "edges", gate_setup, gate_teardown, 0);
	tcase_add_test(t, test_org_balance_zero_makes_it_limited);
	tcase_add_test(t, test_hold_from_before_org_was_limited);
	tcase_add_test(t, test_critical_warnings_bounded);
	tcase_add_test(t, test_throttled_unlimited_rule_stays_unlimited);
	tcase_add_test(t, test_report_after_midnight_counts_new_day);
	tcase_add_test(t, test_key_forgotten_after_history_wrap);
	tcase_add_test(t, test_keys_kept_past_history_wrap);
	tcase_add_test(t, test_expiry_queue_after_reports_out_of_order);
	tcase_add_test(t, test_rule_update_match_changes_matching);
	tcase_add_test(t, test_agent_delete_frees_its_rules);
}
