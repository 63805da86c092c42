/*
 * check_pricing.c: unit tests of versioned rates per model and of reports
 * priced from token counts (sidecard/engine/pricing.c, gate_report_tokens), from
 * PROTOCOL.md "Pricing".
 *
 * Uses the gate fixture: a fresh state per test, an explicit clock. Rates
 * are micro-dollars per million tokens: $2.50/M is 2500000.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gate_fixture.h"
#include "pricing.h"
#include "suites.h"
#include "testutil.h"

#define BIG (INT64_C(1000000000000))
#define PER_M(dollars_x100) ((int64_t)(dollars_x100) * 10000) /* $/M in cents -> micros */

/* Adds a version of model; asserts success and returns its slot. */
static uint32_t add_rate(const char *model, int64_t in, int64_t out, int64_t cached,
                         int64_t effective_from, int64_t now)
{
	struct pricing_rate r = {{in, out, cached}};
	uint32_t slot = SHM_NONE;
	int rc;

	g_err[0] = '\0';
	rc = pricing_add(g_st, str(model), &r, effective_from, now, &slot, g_err, sizeof g_err);
	ck_assert_msg(rc == 0, "pricing_add(%s): %d (%s)", model, rc, g_err);
	return slot;
}

static int report_tokens(uint64_t txn, enum sc_outcome o, const char *model, uint64_t in,
                         uint64_t out, uint64_t cached, int64_t now, struct gate_settlement *s)
{
	const uint64_t tokens[3] = {in, out, cached};

	g_err[0] = '\0';
	return gate_report_tokens(g_st, txn, o, str(model), tokens, now, s, g_err, sizeof g_err);
}

static int64_t cost_of(int64_t in_rate, int64_t out_rate, int64_t cached_rate, uint64_t in,
                       uint64_t out, uint64_t cached, int *rc)
{
	struct shm_price p;
	const uint64_t tokens[3] = {in, out, cached};
	int64_t cost = -1;

	memset(&p, 0, sizeof p);
	strcpy(p.model, "m");
	p.version = 1;
	p.input = in_rate;
	p.output = out_rate;
	p.cached_input = cached_rate;
	g_err[0] = '\0';
	*rc = pricing_cost(&p, tokens, &cost, g_err, sizeof g_err);
	return cost;
}

static const struct shm_txn *txn(uint64_t id)
{
	const struct shm_txn *t = state_txn_by_id(g_st, id);

	ck_assert_ptr_nonnull(t);
	return t;
}

START_TEST(test_cost_rounds_up)
{
	int rc;

	/* 1 token at $2.50/M is 2.5 micros: charged 3, never 2. */
	ck_assert_int_eq(cost_of(PER_M(250), 0, 0, 1, 0, 0, &rc), 3);
	ck_assert_int_eq(rc, 0);
	/* Exact amounts are not rounded. */
	ck_assert_int_eq(cost_of(PER_M(250), 0, 0, 1000000, 0, 0, &rc), PER_M(250));
	/* 5000 in at $2.50/M + 1500 out at $10/M + 2000 cached at $1.25/M = 12500 + 15000 + 2500 */
	ck_assert_int_eq(cost_of(PER_M(250), PER_M(1000), PER_M(125), 5000, 1500, 2000, &rc),
	                 30000);
	/* 1 micro more than exact rounds up by one; the sum is rounded once, not each part. */
	ck_assert_int_eq(cost_of(1, 1, 1, 1, 1, 1, &rc), 1);
	ck_assert_int_eq(cost_of(1000001, 0, 0, 1, 0, 0, &rc), 2);
	ck_assert_int_eq(cost_of(999999, 0, 0, 1, 0, 0, &rc), 1);
	/* An explicit zero is a measured zero. */
	ck_assert_int_eq(cost_of(PER_M(250), PER_M(1000), 0, 0, 0, 0, &rc), 0);
	ck_assert_int_eq(rc, 0);
}
END_TEST

START_TEST(test_cost_overflow_is_out_of_range)
{
	int rc;

	/* Exactly INT64_MAX fits... */
	ck_assert_int_eq(cost_of(1000000, 0, 0, INT64_MAX, 0, 0, &rc), INT64_MAX);
	ck_assert_int_eq(rc, 0);
	/* ...one more micro-dollar per million does not. */
	cost_of(1000001, 0, 0, INT64_MAX, 0, 0, &rc);
	ck_assert_int_eq(rc, SC_ERANGE);
	ck_assert_ptr_nonnull(strstr(g_err, "input_tokens"));
	/* The largest products of all three kinds do not wrap 128 bits either. */
	cost_of(INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX, &rc);
	ck_assert_int_eq(rc, SC_ERANGE);
	/* The message names the count that weighs most. */
	cost_of(1, 2000000, 1, 1, INT64_MAX / 2 + 1, 1, &rc);
	ck_assert_int_eq(rc, SC_ERANGE);
	ck_assert_msg(strncmp(g_err, "output_tokens:", 14) == 0, "%s", g_err);
	/* Token counts beyond INT64_MAX are refused, naming the field. */
	cost_of(1, 1, 1, 0, (uint64_t)INT64_MAX + 1, 0, &rc);
	ck_assert_int_eq(rc, SC_EINVAL);
	ck_assert_ptr_nonnull(strstr(g_err, "output_tokens"));
}
END_TEST

START_TEST(test_report_overflow_changes_nothing)
{
	uint32_t slot;
	uint64_t a = simple_agent("a", BIG, &slot), t;
	struct gate_settlement s;

	add_rate("big", INT64_MAX, 0, 0, T0 - DAY, T0 - DAY);
	t = ALLOW(a, "llm.chat", 100, T0);
	ck_assert_int_eq(report_tokens(t, SC_OUTCOME_SUCCESS, "big", INT64_MAX, 0, 0, T0 + MIN, &s),
	                 SC_ERANGE);
	ck_assert_int_eq(holds_open(), 1);
	ck_assert_int_eq(AW(slot)->balance, BIG);
	ck_assert_int_eq(txn(t)->status, SC_TXN_PENDING);
}
END_TEST

START_TEST(test_version_in_force_by_effective_date)
{
	uint32_t slot;
	uint64_t a = simple_agent("a", BIG, &slot), before, after;
	struct gate_settlement s;

	add_rate("gpt", PER_M(250), PER_M(1000), PER_M(125), T0 - DAY, T0 - DAY);
	add_rate("gpt", PER_M(500), PER_M(2000), PER_M(250), T0 + HOUR, T0);
	before = ALLOW(a, "llm.chat", 100000, T0 + 30 * MIN);
	after = ALLOW(a, "llm.chat", 100000, T0 + HOUR);

	/* Both reported after version 2 took effect: each pays the rate of its check. */
	ck_assert_int_eq(report_tokens(before, SC_OUTCOME_SUCCESS, "gpt", 1000, 1000, 1000,
	                               T0 + 2 * HOUR, &s), 0);
	ck_assert_int_eq(s.charged, 2500 + 10000 + 1250);
	ck_assert_str_eq(s.model, "gpt");
	ck_assert_uint_eq(s.rate_version, 1);
	ck_assert_int_eq(report_tokens(after, SC_OUTCOME_SUCCESS, "gpt", 1000, 1000, 1000,
	                               T0 + 2 * HOUR, &s), 0);
	ck_assert_int_eq(s.charged, 5000 + 20000 + 2500);
	ck_assert_uint_eq(s.rate_version, 2);
	ck_assert_int_eq(AW(slot)->balance, BIG - 13750 - 27500);

	/* The transactions record the model, the version and the tokens. */
	ck_assert_str_eq(txn(before)->model, "gpt");
	ck_assert_uint_eq(txn(before)->rate_version, 1);
	ck_assert_uint_eq(txn(after)->rate_version, 2);
	ck_assert_uint_eq(txn(after)->tokens[0], 1000);
	ck_assert_uint_eq(txn(after)->tokens[2], 1000);
	ck_assert_int_eq(txn(after)->charged, 27500);
}
END_TEST

START_TEST(test_future_version_not_used_yet)
{
	uint64_t a = simple_agent("a", BIG, NULL), t;
	struct gate_settlement s;
	uint32_t slot;

	add_rate("gpt", PER_M(100), PER_M(100), PER_M(100), T0 - DAY, T0 - DAY);
	add_rate("gpt", PER_M(900), PER_M(900), PER_M(900), T0 + DAY, T0);
	ck_assert_int_eq(pricing_at(g_st, str("gpt"), T0 + DAY - 1, &slot, g_err, sizeof g_err), 0);
	ck_assert_uint_eq(g_m->prices[slot].version, 1);
	ck_assert_int_eq(pricing_at(g_st, str("gpt"), T0 + DAY, &slot, g_err, sizeof g_err), 0);
	ck_assert_uint_eq(g_m->prices[slot].version, 2);

	t = ALLOW(a, "llm.chat", 100, T0 + MIN);
	ck_assert_int_eq(report_tokens(t, SC_OUTCOME_SUCCESS, "gpt", 1000000, 0, 0, T0 + 2 * DAY, &s),
	                 0);
	ck_assert_int_eq(s.charged, PER_M(100));
	ck_assert_uint_eq(s.rate_version, 1);
}
END_TEST

START_TEST(test_tie_goes_to_the_higher_version)
{
	uint32_t slot;

	add_rate("gpt", 1, 1, 1, T0, T0);
	add_rate("gpt", 2, 2, 2, T0, T0);
	add_rate("gpt", 3, 3, 3, T0 - HOUR, T0); /* newest, but older in force */
	ck_assert_int_eq(pricing_at(g_st, str("gpt"), T0, &slot, g_err, sizeof g_err), 0);
	ck_assert_uint_eq(g_m->prices[slot].version, 2);
	ck_assert_int_eq(pricing_at(g_st, str("gpt"), T0 - 1, &slot, g_err, sizeof g_err), 0);
	ck_assert_uint_eq(g_m->prices[slot].version, 3);
	ck_assert_int_eq(pricing_at(g_st, str("gpt"), T0 - HOUR - 1, &slot, g_err, sizeof g_err),
	                 SC_ENOTFOUND);
}
END_TEST

START_TEST(test_unpriced_model_leaves_the_hold_open)
{
	uint32_t slot;
	uint64_t a = simple_agent("a", BIG, &slot), t;
	struct gate_settlement s;

	/* Priced only from after the check: the check's time has no rate. */
	add_rate("late", 1, 1, 1, T0 + HOUR, T0);
	t = ALLOW(a, "llm.chat", 700, T0);
	ck_assert_int_eq(report_tokens(t, SC_OUTCOME_SUCCESS, "nope", 10, 10, 0, T0 + MIN, &s),
	                 SC_ENOTFOUND);
	ck_assert_str_eq(g_err, "model: no rate for 'nope' in force at 2026-11-23T10:00:00Z");
	ck_assert_int_eq(report_tokens(t, SC_OUTCOME_SUCCESS, "late", 10, 10, 0, T0 + 2 * HOUR, &s),
	                 SC_ENOTFOUND);
	ck_assert_ptr_nonnull(strstr(g_err, "'late'"));
	/* Nothing changed: the hold is open, nothing charged, and it settles normally. */
	ck_assert_int_eq(holds_open(), 1);
	ck_assert_int_eq(AW(slot)->held, 700);
	ck_assert_int_eq(AW(slot)->balance, BIG);
	ck_assert_int_eq(txn(t)->status, SC_TXN_PENDING);
	s = SETTLE(t, SC_OUTCOME_SUCCESS, 0, 0, T0 + 3 * HOUR);
	ck_assert_int_eq(s.charged, 700);
	ck_assert_str_eq(s.model, "");
	ck_assert_uint_eq(txn(t)->rate_version, 0);
}
END_TEST

START_TEST(test_failure_with_tokens_charges_them)
{
	uint32_t slot;
	uint64_t a = simple_agent("a", BIG, &slot), t;
	struct gate_settlement s;

	add_rate("gpt", PER_M(250), PER_M(1000), PER_M(250), T0 - DAY, T0 - DAY);
	t = ALLOW(a, "llm.chat", 1000000, T0);
	ck_assert_int_eq(report_tokens(t, SC_OUTCOME_FAILURE, "gpt", 4000, 0, 0, T0 + MIN, &s), 0);
	ck_assert_int_eq(s.charged, 10000);
	ck_assert_int_eq(txn(t)->outcome, SC_OUTCOME_FAILURE);
	ck_assert_int_eq(txn(t)->charged, 10000);
	ck_assert_int_eq(AW(slot)->balance, BIG - 10000);
	ck_assert_int_eq(AW(slot)->held, 0);

	/* partial needs no actual_cost when priced from tokens. */
	t = ALLOW(a, "llm.chat", 1000000, T0);
	ck_assert_int_eq(report_tokens(t, SC_OUTCOME_PARTIAL, "gpt", 0, 1, 0, T0 + MIN, &s), 0);
	ck_assert_int_eq(s.charged, 10);
}
END_TEST

START_TEST(test_idempotent_replay_compares_the_cost)
{
	uint32_t slot;
	uint64_t a = simple_agent("a", BIG, &slot), t;
	struct gate_settlement s;

	add_rate("gpt", PER_M(250), PER_M(1000), PER_M(250), T0 - DAY, T0 - DAY);
	t = ALLOW(a, "llm.chat", 1000000, T0);
	ck_assert_int_eq(report_tokens(t, SC_OUTCOME_SUCCESS, "gpt", 5000, 1500, 0, T0 + MIN, &s), 0);
	ck_assert_int_eq(s.replayed, 0);
	/* A later version does not change the replay: it prices at the check's time. */
	add_rate("gpt", PER_M(900), PER_M(900), PER_M(900), T0 + HOUR, T0 + HOUR);
	ck_assert_int_eq(report_tokens(t, SC_OUTCOME_SUCCESS, "gpt", 5000, 1500, 0, T0 + 2 * HOUR,
	                               &s), 0);
	ck_assert_int_eq(s.replayed, 1);
	ck_assert_int_eq(s.charged, 27500);
	ck_assert_str_eq(s.model, "gpt");
	ck_assert_uint_eq(s.rate_version, 1);
	ck_assert_int_eq(AW(slot)->balance, BIG - 27500);

	/* Other tokens, another cost: not the same report. */
	ck_assert_int_eq(report_tokens(t, SC_OUTCOME_SUCCESS, "gpt", 5001, 1500, 0, T0 + 2 * HOUR,
	                               &s), SC_EEXISTS);
	/* The same charge as an actual_cost, without the model: not the same report either. */
	ck_assert_int_eq(report_rc(t, SC_OUTCOME_SUCCESS, 1, 27500, T0 + 2 * HOUR), SC_EEXISTS);
	ck_assert_int_eq(AW(slot)->balance, BIG - 27500);
}
END_TEST

START_TEST(test_versions_numbered_per_model_and_listed)
{
	uint32_t *slots, n;

	add_rate("b-model", 1, 1, 1, T0, T0);
	add_rate("a-model", 2, 2, 2, T0, T0);
	add_rate("b-model", 3, 3, 3, T0, T0);
	ck_assert_int_eq(pricing_list(g_st, NULL, &slots, &n, g_err, sizeof g_err), 0);
	ck_assert_uint_eq(n, 3);
	ck_assert_str_eq(g_m->prices[slots[0]].model, "a-model");
	ck_assert_uint_eq(g_m->prices[slots[0]].version, 1);
	ck_assert_str_eq(g_m->prices[slots[1]].model, "b-model");
	ck_assert_uint_eq(g_m->prices[slots[1]].version, 1);
	ck_assert_uint_eq(g_m->prices[slots[2]].version, 2);
	ck_assert_int_eq(g_m->prices[slots[2]].input, 3);
	free(slots);
	ck_assert_int_eq(pricing_list(g_st, &(struct state_str){"zz", 2}, &slots, &n, g_err,
	                              sizeof g_err), SC_ENOTFOUND);

	/* After a restart the index is rebuilt: numbering goes on, lookups work. */
	reattach();
	add_rate("b-model", 4, 4, 4, T0 + HOUR, T0);
	ck_assert_int_eq(pricing_list(g_st, &(struct state_str){"b-model", 7}, &slots, &n, g_err,
	                              sizeof g_err), 0);
	ck_assert_uint_eq(n, 3);
	ck_assert_uint_eq(g_m->prices[slots[2]].version, 3);
	free(slots);
	ck_assert_int_eq(pricing_at(g_st, str("b-model"), T0, &n, g_err, sizeof g_err), 0);
	ck_assert_uint_eq(g_m->prices[n].version, 2);
}
END_TEST

START_TEST(test_table_full_and_bad_arguments)
{
	struct shm_caps caps = default_caps;
	struct pricing_rate r = {{1, 1, 1}}, neg = {{1, -1, 1}};
	uint32_t slot;

	caps.prices = 2;
	open_state(caps, TTL, 1);
	add_rate("m", 1, 1, 1, T0, T0);
	add_rate("n", 1, 1, 1, T0, T0);
	ck_assert_int_eq(pricing_add(g_st, str("m"), &r, T0, T0, &slot, g_err, sizeof g_err),
	                 SC_ELIMIT);
	ck_assert_str_eq(g_err, "prices: the table of 2 rate versions is full (option --prices)");

	open_state(default_caps, TTL, 1);
	ck_assert_int_eq(pricing_add(g_st, str("has space"), &r, T0, T0, &slot, g_err, sizeof g_err),
	                 SC_EINVAL);
	ck_assert_ptr_nonnull(strstr(g_err, "model"));
	ck_assert_int_eq(pricing_add(g_st, str(""), &r, T0, T0, &slot, g_err, sizeof g_err),
	                 SC_EINVAL);
	ck_assert_int_eq(pricing_add(g_st, str("m"), &neg, T0, T0, &slot, g_err, sizeof g_err),
	                 SC_EINVAL);
	ck_assert_str_eq(g_err, "output: must not be negative");
	ck_assert_uint_eq(g_m->hdr->next_price_id, 1);
}
END_TEST

Suite *pricing_suite(void)
{
	const struct test_case tests[] = {
		{"cost_rounds_up", test_cost_rounds_up},
		{"cost_overflow", test_cost_overflow_is_out_of_range},
		{"report_overflow", test_report_overflow_changes_nothing},
		{"in_force_by_date", test_version_in_force_by_effective_date},
		{"future_version", test_future_version_not_used_yet},
		{"tie", test_tie_goes_to_the_higher_version},
		{"unpriced_model", test_unpriced_model_leaves_the_hold_open},
		{"failure_tokens", test_failure_with_tokens_charges_them},
		{"idempotent_replay", test_idempotent_replay_compares_the_cost},
		{"versions_listed", test_versions_numbered_per_model_and_listed},
		{"table_full", test_table_full_and_bad_arguments},
	};
	Suite *s = suite_create("pricing");

	test_add_cases_tmp(s, tests, sizeof(tests) / sizeof(tests[0]), gate_setup, gate_teardown);
	return s;
}
