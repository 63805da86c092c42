/*
 * check_wallet.c: unit tests of wallet transfers and operator adjustments
 * (gate_transfer, gate_adjust) and of balance_after on transactions, from
 * PROTOCOL.md.
 *
 * Uses the gate fixture: a fresh state per test, an explicit clock.
 */
#include <check.h>
#include <string.h>

#include "gate_fixture.h"
#include "suites.h"
#include "testutil.h"

static const uint8_t META[] = {0x81, 0xa6, 'r', 'e', 'a', 's', 'o', 'n', 0xa1, 'x'};

static struct gate_wallet_ref agent_ref(uint32_t slot)
{
	return (struct gate_wallet_ref){slot, 0};
}

static int transfer(struct gate_wallet_ref from, struct gate_wallet_ref to, int64_t amount,
                    uint64_t ids[2])
{
	g_err[0] = '\0';
	return gate_transfer(g_st, &from, &to, amount, META, sizeof(META), T0, ids, g_err,
	                     sizeof g_err);
}

START_TEST(test_transfer_moves_money_and_records_both_sides)
{
	uint32_t a, b;
	uint64_t ids[2];
	const struct shm_txn *debit, *credit;

	simple_agent("a", 10000, &a);
	simple_agent("b", 1000, &b);
	ck_assert_int_eq(transfer(agent_ref(a), agent_ref(b), 4000, ids), 0);
	ck_assert_int_eq(AW(a)->balance, 6000);
	ck_assert_int_eq(AW(b)->balance, 5000);
	debit = state_txn_by_id(g_st, ids[0]);
	credit = state_txn_by_id(g_st, ids[1]);
	ck_assert_str_eq(debit->type, "transfer");
	ck_assert_int_eq(debit->charged, 4000);
	ck_assert_int_eq(debit->balance_after, 6000);
	ck_assert_int_eq(credit->charged, -4000);
	ck_assert_int_eq(credit->balance_after, 5000);
	ck_assert_int_eq(debit->status, SC_TXN_SETTLED);
	ck_assert_uint_eq(credit->meta_len, sizeof(META));
}
END_TEST

START_TEST(test_transfer_refusals_change_nothing)
{
	uint32_t a, b;
	uint64_t ids[2];

	simple_agent("a", 10000, &a);
	simple_agent("b", 1000, &b);
	ALLOW(g_m->agents[a].id, "tool.run", 7000, T0);
	/* available is 3000: held money cannot be moved */
	ck_assert_int_eq(transfer(agent_ref(a), agent_ref(b), 3001, ids), SC_EINVAL);
	ck_assert_ptr_nonnull(strstr(g_err, "available"));
	ck_assert_int_eq(transfer(agent_ref(a), agent_ref(a), 1, ids), SC_EINVAL);
	ck_assert_int_eq(transfer(agent_ref(a), agent_ref(b), 0, ids), SC_EINVAL);
	ck_assert_int_eq(AW(a)->balance, 10000);
	ck_assert_int_eq(AW(b)->balance, 1000);
}
END_TEST

START_TEST(test_transfer_to_org_wallet_funds_it)
{
	uint32_t a;
	uint64_t ids[2];
	struct gate_wallet_ref org = {g_org, 1};

	simple_agent("a", 10000, &a);
	ck_assert_int_eq(OW()->limited, 0);
	ck_assert_int_eq(transfer(agent_ref(a), org, 2500, ids), 0);
	ck_assert_int_eq(OW()->balance, 2500);
	ck_assert_int_eq(OW()->limited, 1);
	ck_assert_uint_eq(state_txn_by_id(g_st, ids[1])->agent_id, 0);
}
END_TEST

START_TEST(test_adjust_credit_and_debit)
{
	uint32_t a;
	uint64_t id;
	struct gate_wallet_ref ref;

	simple_agent("a", 1000, &a);
	ref = agent_ref(a);
	ck_assert_int_eq(gate_adjust(g_st, &ref, 500, META, sizeof(META), T0, &id, g_err, sizeof g_err),
	                 0);
	ck_assert_int_eq(AW(a)->balance, 1500);
	ck_assert_int_eq(state_txn_by_id(g_st, id)->charged, -500);
	ck_assert_int_eq(state_txn_by_id(g_st, id)->balance_after, 1500);
	ck_assert_int_eq(gate_adjust(g_st, &ref, -1500, META, sizeof(META), T0, &id, g_err,
	                             sizeof g_err),
	                 0);
	ck_assert_int_eq(AW(a)->balance, 0);
	ck_assert_int_eq(gate_adjust(g_st, &ref, -1, META, sizeof(META), T0, &id, g_err, sizeof g_err),
	                 SC_EINVAL);
	ck_assert_int_eq(gate_adjust(g_st, &ref, 0, META, sizeof(META), T0, &id, g_err, sizeof g_err),
	                 SC_EINVAL);
	ck_assert_int_eq(AW(a)->balance, 0);
}
END_TEST

START_TEST(test_balance_after_on_checks)
{
	uint32_t a;
	uint64_t id, blocked;

	simple_agent("a", 1000, &a);
	id = ALLOW(g_m->agents[a].id, "tool.run", 400, T0);
	ck_assert_int_eq(state_txn_by_id(g_st, id)->balance_after, 1000);
	SETTLE(id, SC_OUTCOME_SUCCESS, 1, 300, T0 + SEC);
	ck_assert_int_eq(state_txn_by_id(g_st, id)->balance_after, 700);
	blocked = BLOCK(g_m->agents[a].id, "tool.run", 5000, T0 + SEC, "wallet_empty");
	ck_assert_int_eq(state_txn_by_id(g_st, blocked)->balance_after, 700);
}
END_TEST

Suite *wallet_suite(void)
{
	const struct test_case tests[] = {
		{"transfer", test_transfer_moves_money_and_records_both_sides},
		{"transfer_refused", test_transfer_refusals_change_nothing},
		{"transfer_to_org", test_transfer_to_org_wallet_funds_it},
		{"adjust", test_adjust_credit_and_debit},
		{"balance_after", test_balance_after_on_checks},
	};
	Suite *s = suite_create("wallet");

	test_add_cases_tmp(s, tests, sizeof(tests) / sizeof(tests[0]), gate_setup, gate_teardown);
	return s;
}
