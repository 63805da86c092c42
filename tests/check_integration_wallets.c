/*
 * check_integration_wallets.c: the integration suite's tests of wallets
 * (check_integration.c builds the suite): transfers between agents, into and
 * out of the org's wallet, and refusals that change nothing; adjustments;
 * the transactions they record with their reason and balance_after; time
 * zones, spend per period and budget periods; sub-budgets carved and
 * released; and restarts on the same state directory, which keep orgs,
 * agents, rules, wallets, open holds and every transfer.
 *
 * Threads: the test's main thread, in a process the Check runner forks.
 */
#include <inttypes.h>
#include <string.h>

#include "integration_fixture.h"
#include "suites.h"

/* ----- transfers and adjustments ----- */

static sc_wallet_ref of_agent(uint64_t id)
{
	return (sc_wallet_ref){ .agent_id = id };
}

static sc_wallet_ref of_org(uint64_t id)
{
	return (sc_wallet_ref){ .org_id = id };
}

static sc_wallet org_wallet(uint64_t org)
{
	sc_wallet w;

	OK(sc_org_wallet_get(c, org, &w));
	return w;
}

/* Every transaction of the kept history (at most 1000), newest first; *n of them. */
static sc_transaction *all_transactions(size_t *n)
{
	sc_transaction *list;
	sc_txn_filter f;

	sc_txn_filter_init(&f);
	f.limit = 1000;
	OK(sc_transactions_query(c, &f, &list, n));
	return list;
}

/* What one side of a transfer, or an adjustment, must have recorded. */
struct wallet_txn {
	uint64_t id, agent_id, org_id; /* agent_id 0: the org's wallet */
	const char *type;
	sc_micros charged, balance_after;
	const char *reason;
};

static void assert_wallet_txn(const struct wallet_txn *want)
{
	sc_transaction *list;
	size_t n, i;

	list = all_transactions(&n);
	for (i = 0; i < n && list[i].id != want->id; i++)
		;
	ck_assert_msg(i < n, "transaction %" PRIu64 " not listed", want->id);
	ck_assert_uint_eq(list[i].agent_id, want->agent_id);
	ck_assert_uint_eq(list[i].org_id, want->org_id);
	ck_assert_str_eq(list[i].type, want->type);
	ck_assert_int_eq(list[i].status, SC_TXN_SETTLED);
	ck_assert_int_eq(list[i].charged, want->charged);
	ck_assert_int_eq(list[i].balance_after, want->balance_after);
	ck_assert_str_eq(list[i].reason, want->reason);
	ck_assert_uint_eq(list[i].rule_id, 0);
	ck_assert_str_eq(list[i].block_reason, "");
	ck_assert_int_ge(list[i].settled_at, list[i].created_at);
	sc_transactions_free(list);
}

/* Two agents of one org; the debit and the credit say what moved and what was left. */
START_TEST(test_transfer_between_agents)
{
	uint64_t org = new_org("team"), a, b, ids[2];
	sc_wallet from, to, w;

	a = new_agent_in("team", "a", SC_PRIORITY_NORMAL, USD(10), 0, 0, NULL, 0);
	b = new_agent_in("team", "b", SC_PRIORITY_NORMAL, USD(5), 0, 0, NULL, 0);
	OK(sc_wallets_transfer(c, of_agent(a), of_agent(b), CENTS(250), "rebalance", &from, &to,
	                       ids));
	ck_assert_int_eq(from.balance, CENTS(750));
	ck_assert_int_eq(from.available, CENTS(750));
	ck_assert_int_eq(to.balance, CENTS(750));
	ck_assert_int_eq(to.limited, 1);
	w = wallet(a);
	ck_assert_int_eq(memcmp(&w, &from, sizeof(w)), 0);
	w = wallet(b);
	ck_assert_int_eq(memcmp(&w, &to, sizeof(w)), 0);
	ck_assert_uint_gt(ids[0], 0);
	ck_assert_uint_ne(ids[0], ids[1]);
	assert_wallet_txn(&(struct wallet_txn){ ids[0], a, org, "transfer", CENTS(250), CENTS(750),
	                                        "rebalance" });
	assert_wallet_txn(&(struct wallet_txn){ ids[1], b, org, "transfer", -CENTS(250),
	                                        CENTS(750), "rebalance" });
	ck_assert_str_eq(test_transaction(c, a, ids[0]).type, "transfer");
	ck_assert_str_eq(test_transaction(c, b, ids[1]).reason, "rebalance");

	/* Every out parameter may be NULL; the money still moves. */
	OK(sc_wallets_transfer(c, of_agent(b), of_agent(a), USD(1), "back", NULL, NULL, NULL));
	ck_assert_int_eq(wallet(a).balance, CENTS(850));
	ck_assert_int_eq(wallet(b).balance, CENTS(650));
	/* The whole of the available funds may move. */
	OK(sc_wallets_transfer(c, of_agent(b), of_agent(a), CENTS(650), "all", &from, &to, NULL));
	ck_assert_int_eq(from.balance, 0);
	ck_assert_int_eq(to.balance, USD(15));
}
END_TEST

/* Indexes into the wallet refs of test_transfer_refused. */
enum { R_A, R_B, R_OTHER_ORG, R_ORG, R_BOTH, R_NONE, R_UNKNOWN };

static const struct {
	int from, to;
	sc_micros amount;
	const char *reason;
	int code;
	const char *word; /* in the message */
} refused_transfers[] = {
	/* a holds $8 of its $10: $2 is available, a cent more is not */
	{ R_A, R_B, CENTS(201), "r", SC_EINVAL, "available" },
	{ R_A, R_B, USD(10), "r", SC_EINVAL, "available" },
	{ R_ORG, R_B, 1, "r", SC_EINVAL, "available" }, /* an unfunded org wallet */
	{ R_A, R_OTHER_ORG, 1, "r", SC_EINVAL, "org" },
	{ R_OTHER_ORG, R_ORG, 1, "r", SC_EINVAL, "org" },
	{ R_A, R_A, 1, "r", SC_EINVAL, "same" },
	{ R_A, R_B, 0, "r", SC_EINVAL, "amount" },
	{ R_A, R_B, -1, "r", SC_EINVAL, "amount" },
	{ R_A, R_B, 1, "", SC_EINVAL, "reason" },
	{ R_A, R_B, 1, NULL, SC_EINVAL, "reason" },
	{ R_BOTH, R_B, 1, "r", SC_EINVAL, "from" },
	{ R_NONE, R_B, 1, "r", SC_EINVAL, "from" },
	{ R_A, R_NONE, 1, "r", SC_EINVAL, "to" },
	{ R_UNKNOWN, R_B, 1, "r", SC_ENOTFOUND, "from_agent_id" },
	{ R_A, R_UNKNOWN, 1, "r", SC_ENOTFOUND, "to_agent_id" },
};

/* Each refused transfer changes nothing: no wallet, no transaction. */
START_TEST(test_transfer_refused)
{
	uint64_t org = new_org("team"), a, b, x, ids[2] = { 0, 0 };
	sc_wallet before[4], after[4], from, to;
	sc_wallet_ref refs[7];
	sc_transaction *list;
	size_t n_before, n, i, k;

	a = new_agent_in("team", "a", SC_PRIORITY_NORMAL, USD(10), 0, 0, NULL, 0);
	b = new_agent_in("team", "b", SC_PRIORITY_NORMAL, USD(5), 0, 0, NULL, 0);
	new_org("other");
	x = new_agent_in("other", "x", SC_PRIORITY_NORMAL, USD(5), 0, 0, NULL, 0);
	allow(a, "x", USD(8));
	refs[R_A] = of_agent(a);
	refs[R_B] = of_agent(b);
	refs[R_OTHER_ORG] = of_agent(x);
	refs[R_ORG] = of_org(org);
	refs[R_BOTH] = (sc_wallet_ref){ .agent_id = a, .org_id = org };
	refs[R_NONE] = (sc_wallet_ref){ 0 };
	refs[R_UNKNOWN] = of_agent(999999);

	before[0] = wallet(a);
	before[1] = wallet(b);
	before[2] = wallet(x);
	before[3] = org_wallet(org);
	sc_transactions_free(all_transactions(&n_before));
	for (i = 0; i < COUNT(refused_transfers); i++) {
		FAILS(sc_wallets_transfer(c, refs[refused_transfers[i].from],
		                          refs[refused_transfers[i].to], refused_transfers[i].amount,
		                          refused_transfers[i].reason, &from, &to, ids),
		      refused_transfers[i].code, refused_transfers[i].word);
		ck_assert_uint_eq(ids[0], 0);
	}
	after[0] = wallet(a);
	after[1] = wallet(b);
	after[2] = wallet(x);
	after[3] = org_wallet(org);
	for (k = 0; k < COUNT(before); k++)
		ck_assert_msg(memcmp(&before[k], &after[k], sizeof(sc_wallet)) == 0,
		              "wallet %zu changed by a refused transfer", k);
	ck_assert_int_eq(after[3].limited, 0);
	list = all_transactions(&n);
	ck_assert_uint_eq(n, n_before);
	sc_transactions_free(list);

	/* Exactly the available funds do move, leaving the hold covered. */
	OK(sc_wallets_transfer(c, refs[R_A], refs[R_B], USD(2), "r", &from, &to, ids));
	ck_assert_int_eq(from.balance, USD(8));
	ck_assert_int_eq(from.held, USD(8));
	ck_assert_int_eq(from.available, 0);
	ck_assert_int_eq(to.balance, USD(7));
}
END_TEST

/* Money moved into the org's wallet funds it: it becomes limited and gates the org. */
START_TEST(test_transfer_org_wallet)
{
	uint64_t org = new_org("team"), a, b, txn, ids[2];
	sc_wallet from, to;
	sc_txn_filter f;
	sc_transaction *list;
	size_t n, i, org_txns = 0;

	a = new_agent_in("team", "a", SC_PRIORITY_NORMAL, USD(10), 0, 0, NULL, 0);
	b = new_agent_in("team", "b", SC_PRIORITY_NORMAL, USD(10), 0, 0, NULL, 0);
	ck_assert_int_eq(org_wallet(org).limited, 0);
	OK(sc_wallets_transfer(c, of_agent(a), of_org(org), USD(4), "fund the org", &from, &to,
	                       ids));
	ck_assert_int_eq(from.balance, USD(6));
	ck_assert_int_eq(to.balance, USD(4));
	ck_assert_int_eq(to.limited, 1);
	ck_assert_int_eq(org_wallet(org).limited, 1);
	assert_wallet_txn(&(struct wallet_txn){ ids[0], a, org, "transfer", USD(4), USD(6),
	                                        "fund the org" });
	assert_wallet_txn(&(struct wallet_txn){ ids[1], 0, org, "transfer", -USD(4), USD(4),
	                                        "fund the org" });

	/* The org wallet now gates b, whose own wallet holds $10. */
	blocked(b, "x", USD(4) + 1, "org_empty");
	txn = allow(b, "x", USD(4));
	/* Held money is not available to move out of the org wallet either. */
	FAILS(sc_wallets_transfer(c, of_org(org), of_agent(a), 1, "r", NULL, NULL, NULL),
	      SC_EINVAL, "available");
	report(txn, SC_OUTCOME_SUCCESS, 1, USD(1));
	OK(sc_wallets_transfer(c, of_org(org), of_agent(a), USD(3), "return", &from, &to, ids));
	ck_assert_int_eq(from.balance, 0);
	ck_assert_int_eq(from.limited, 1);
	ck_assert_int_eq(to.balance, USD(9));
	assert_wallet_txn(&(struct wallet_txn){ ids[0], 0, org, "transfer", USD(3), 0, "return" });
	assert_wallet_txn(&(struct wallet_txn){ ids[1], a, org, "transfer", -USD(3), USD(9),
	                                        "return" });

	/* The org's listing has its own wallet's transactions, without an agent. */
	sc_txn_filter_init(&f);
	f.org_id = org;
	OK(sc_transactions_query(c, &f, &list, &n));
	for (i = 0; i < n; i++)
		org_txns += list[i].agent_id == 0;
	ck_assert_uint_eq(org_txns, 2);
	sc_transactions_free(list);
}
END_TEST

/* Adjustments of one agent and of its org, in order; `code` 0 is accepted. */
static const struct {
	int org; /* 1: the org's wallet */
	sc_micros amount;
	const char *reason;
	int code;
	sc_micros balance; /* after the step */
} adjust_steps[] = {
	{ 0, USD(5), "bonus", 0, USD(15) },
	{ 0, -CENTS(250), "refund", 0, CENTS(1250) },
	{ 0, -(CENTS(1250) + 1), "too much", SC_EINVAL, CENTS(1250) },
	{ 0, 0, "nothing", SC_EINVAL, CENTS(1250) },
	{ 0, -CENTS(1250), "write off", 0, 0 }, /* down to exactly 0 */
	{ 0, -1, "below zero", SC_EINVAL, 0 },
	{ 1, USD(20), "grant", 0, USD(20) },
	{ 1, -USD(21), "too much", SC_EINVAL, USD(20) },
	{ 1, -USD(20), "reclaim", 0, 0 },
};

/* Time zones, spend per period and budget periods through the protocol. */
START_TEST(test_timezone_spend_and_period)
{
	sc_wallet_update daily = { .set = SC_WALLET_SET_PERIOD | SC_WALLET_SET_BUDGET,
		                   .budget = USD(10), .period = SC_PERIOD_DAILY };
	int64_t day = INT64_C(86400000000), ist = INT64_C(19800000000); /* UTC+5:30 */
	uint64_t a, org;
	sc_spend s;
	sc_wallet w;
	sc_org o;

	OK(sc_orgs_create_tz(c, "mumbai", "Asia/Kolkata", &o));
	ck_assert_str_eq(o.timezone, "Asia/Kolkata");
	ck_assert_str_eq(o.timezone_rule, "IST-5:30");
	org = o.id;
	FAILS(sc_orgs_create_tz(c, "mars", "Mars/Olympus_Mons", &o), SC_ENOTFOUND, "timezone");
	FAILS(sc_orgs_create_tz(c, "up", "../../etc/passwd", &o), SC_EINVAL, "timezone");
	a = new_agent_in("mumbai", "bot", SC_PRIORITY_NORMAL, USD(10), 0, 0, NULL, 0);
	OK(sc_wallets_update(c, a, &daily, &w));
	ck_assert_int_eq(w.period, SC_PERIOD_DAILY);
	report(allow(a, "tool.run", USD(3)), SC_OUTCOME_SUCCESS, 1, USD(2));
	allow(a, "tool.run", USD(1));

	OK(sc_spend_get(c, (sc_wallet_ref){ .agent_id = a }, &s));
	ck_assert_int_eq(s.total, USD(2));
	ck_assert_int_eq(s.daily, USD(2));
	ck_assert_int_eq(s.weekly, USD(2));
	ck_assert_int_eq(s.monthly, USD(2));
	ck_assert_int_eq(s.held, USD(1));
	ck_assert_int_eq(s.budget, USD(10));
	ck_assert_int_eq(s.period, SC_PERIOD_DAILY);
	ck_assert_str_eq(s.timezone, "Asia/Kolkata");
	/* the local day ends at 18:30 UTC */
	ck_assert_int_eq((s.daily_reset_at + ist) % day, 0);
	ck_assert_int_eq(s.period_reset_at, s.daily_reset_at);
	ck_assert_int_ge(s.weekly_reset_at, s.daily_reset_at);
	ck_assert_int_ge(s.monthly_reset_at, s.daily_reset_at);

	/* the org's own wallet has no period; back to UTC */
	OK(sc_spend_get(c, of_org(org), &s));
	ck_assert_int_eq(s.period_reset_at, 0);
	OK(sc_orgs_set_timezone(c, org, "UTC", &o));
	ck_assert_str_eq(o.timezone_rule, "UTC0");
	OK(sc_spend_get(c, (sc_wallet_ref){ .agent_id = a }, &s));
	ck_assert_int_eq(s.daily_reset_at % day, 0);
	FAILS(sc_spend_get(c, (sc_wallet_ref){ .agent_id = a, .org_id = org }, &s), SC_EINVAL,
	      "exactly one");
}
END_TEST

/* A sub-budget through the protocol: reserved for its agent, released on request. */
START_TEST(test_carve_and_release)
{
	sc_wallet_update funds = { .set = SC_WALLET_SET_BALANCE, .balance = USD(10) };
	uint64_t org = new_org("pool"), carved, shared, id;
	sc_wallet agent, ow;

	carved = new_agent_in("pool", "carved", SC_PRIORITY_NORMAL, 0, 0, 0, NULL, 0);
	shared = new_agent_in("pool", "shared", SC_PRIORITY_NORMAL, USD(100), 0, 0, NULL, 0);
	FAILS(sc_wallets_carve(c, carved, USD(6), "q4", NULL, NULL, NULL), SC_EINVAL, "unlimited");
	OK(sc_org_wallet_update(c, org, &funds, &ow));
	OK(sc_wallets_carve(c, carved, USD(6), "q4", &agent, &ow, &id));
	ck_assert_int_eq(agent.balance, USD(6));
	ck_assert_int_eq(agent.reserved, USD(6));
	ck_assert_int_eq(agent.sub_budget, 1);
	ck_assert_int_eq(ow.reserved, USD(6));
	ck_assert_uint_gt(id, 0);
	FAILS(sc_wallets_carve(c, shared, USD(5), "too much", NULL, NULL, NULL), SC_EINVAL,
	      "unreserved");
	blocked(shared, "tool.run", USD(5), "org_empty");
	allow(carved, "tool.run", USD(6));
	OK(sc_wallets_release(c, carved, &agent, &ow));
	ck_assert_int_eq(agent.sub_budget, 0);
	ck_assert_int_eq(ow.reserved, 0);
	FAILS(sc_wallets_release(c, carved, NULL, NULL), SC_EINVAL, "no sub-budget");
}
END_TEST

/* Deleting an agent ends its sub-budget: the org's reservation for it goes too. */
START_TEST(test_delete_carved_agent)
{
	sc_wallet_update funds = { .set = SC_WALLET_SET_BALANCE, .balance = USD(10) };
	uint64_t org = new_org("pool"), carved, shared;
	sc_wallet ow;

	carved = new_agent_in("pool", "carved", SC_PRIORITY_NORMAL, 0, 0, 0, NULL, 0);
	shared = new_agent_in("pool", "shared", SC_PRIORITY_NORMAL, USD(100), 0, 0, NULL, 0);
	OK(sc_org_wallet_update(c, org, &funds, &ow));
	OK(sc_wallets_carve(c, carved, USD(6), "q4", NULL, NULL, NULL));
	blocked(shared, "tool.run", USD(5), "org_empty");
	OK(sc_agents_delete(c, carved));
	ck_assert_int_eq(org_wallet(org).reserved, 0);
	allow(shared, "tool.run", USD(5));
}
END_TEST

/*
 * A transfer's or an adjustment's transaction is not a check's: reporting
 * it is invalid_argument and changes nothing (it was internal for the org
 * wallet's side, already_exists for an agent's).
 */
START_TEST(test_report_wallet_transaction)
{
	uint64_t org = new_org("team"), a, ids[2], adj;
	sc_wallet before_a, before_org;
	size_t i;

	a = new_agent_in("team", "a", SC_PRIORITY_NORMAL, USD(10), 0, 0, NULL, 0);
	OK(sc_wallets_transfer(c, of_agent(a), of_org(org), USD(4), "fund", NULL, NULL, ids));
	OK(sc_wallets_adjust(c, of_agent(a), USD(1), "credit", NULL, &adj));
	before_a = wallet(a);
	before_org = org_wallet(org);
	for (i = 0; i < 3; i++) {
		uint64_t txn = i < 2 ? ids[i] : adj;

		FAILS(sc_report(c, txn, SC_OUTCOME_SUCCESS, 1, 0, NULL), SC_EINVAL, "not a check");
		FAILS(sc_report(c, txn, SC_OUTCOME_FAILURE, 0, 0, NULL), SC_EINVAL, "not a check");
	}
	ck_assert_int_eq(wallet(a).balance, before_a.balance);
	ck_assert_int_eq(org_wallet(org).balance, before_org.balance);
	ck_assert_int_eq(org_wallet(org).held, 0);
}
END_TEST

START_TEST(test_adjust)
{
	uint64_t org = new_org("team"), a, txn;
	sc_wallet after, w;
	size_t i;

	a = new_agent_in("team", "a", SC_PRIORITY_NORMAL, USD(10), 0, 0, NULL, 0);
	for (i = 0; i < COUNT(adjust_steps); i++) {
		sc_wallet_ref ref = adjust_steps[i].org ? of_org(org) : of_agent(a);

		txn = 0;
		if (adjust_steps[i].code != 0) {
			FAILS(sc_wallets_adjust(c, ref, adjust_steps[i].amount, adjust_steps[i].reason,
			                        &after, &txn),
			      adjust_steps[i].code, "amount");
			ck_assert_uint_eq(txn, 0);
		} else {
			OK(sc_wallets_adjust(c, ref, adjust_steps[i].amount, adjust_steps[i].reason,
			                     &after, &txn));
			ck_assert_int_eq(after.limited, 1);
			assert_wallet_txn(&(struct wallet_txn){ txn, adjust_steps[i].org ? 0 : a, org,
			                                        "adjustment", -adjust_steps[i].amount,
			                                        adjust_steps[i].balance,
			                                        adjust_steps[i].reason });
		}
		w = adjust_steps[i].org ? org_wallet(org) : wallet(a);
		ck_assert_msg(w.balance == adjust_steps[i].balance,
		              "step %zu: balance %lld, expected %lld", i, (long long)w.balance,
		              (long long)adjust_steps[i].balance);
		if (adjust_steps[i].code == 0)
			ck_assert_int_eq(memcmp(&w, &after, sizeof(w)), 0);
	}
	FAILS(sc_wallets_adjust(c, of_agent(a), USD(1), NULL, NULL, NULL), SC_EINVAL, "reason");
	FAILS(sc_wallets_adjust(c, (sc_wallet_ref){ .agent_id = a, .org_id = org }, USD(1), "r",
	                        NULL, NULL),
	      SC_EINVAL, "wallet");
	ck_assert_int_eq(sc_wallets_adjust(c, of_agent(999999), USD(1), "r", NULL, NULL),
	                 SC_ENOTFOUND);
	OK(sc_wallets_adjust(c, of_agent(a), USD(1), "r", NULL, NULL));
	ck_assert_int_eq(wallet(a).balance, USD(1));
}
END_TEST

/* A check's transaction carries the balance when it was decided, then once settled. */
START_TEST(test_balance_after_check)
{
	uint64_t id = new_agent(USD(10)), pending, settled;
	sc_transaction *list;
	size_t n;

	settled = allow(id, "x", USD(2));
	ck_assert_int_eq(test_transaction(c, id, settled).balance_after, USD(10));
	report(settled, SC_OUTCOME_SUCCESS, 1, CENTS(150));
	ck_assert_int_eq(test_transaction(c, id, settled).balance_after, CENTS(850));
	ck_assert_str_eq(test_transaction(c, id, settled).reason, "");
	pending = allow(id, "x", USD(1));
	ck_assert_int_eq(test_transaction(c, id, pending).balance_after, CENTS(850));
	blocked(id, "x", USD(20), "wallet_empty");
	OK(sc_transactions_list(c, id, SC_TXN_BLOCKED, 0, &list, &n));
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(list[0].balance_after, CENTS(850));
	sc_transactions_free(list);
	report(pending, SC_OUTCOME_FAILURE, 0, 0);
	ck_assert_int_eq(test_transaction(c, id, pending).balance_after, CENTS(850));
}
END_TEST

/* Transfers and adjustments are in the ledger: a restart (SIGTERM, start) keeps them all. */
START_TEST(test_transfers_survive_restart)
{
	uint64_t org = new_org("team"), a, b, ids[2];
	sc_transaction *before, *after;
	sc_wallet w_before[3], w_after[3];
	size_t n_before, n_after, i;

	a = new_agent_in("team", "a", SC_PRIORITY_NORMAL, USD(10), 0, 0, NULL, 0);
	b = new_agent_in("team", "b", SC_PRIORITY_NORMAL, USD(5), 0, 0, NULL, 0);
	OK(sc_wallets_transfer(c, of_agent(a), of_agent(b), CENTS(250), "rebalance", NULL, NULL,
	                       NULL));
	OK(sc_wallets_transfer(c, of_agent(b), of_org(org), USD(3), "fund", NULL, NULL, NULL));
	OK(sc_wallets_adjust(c, of_agent(a), -USD(1), "refund", NULL, NULL));
	OK(sc_wallets_adjust(c, of_org(org), USD(2), "grant", NULL, NULL));
	w_before[0] = wallet(a);
	w_before[1] = wallet(b);
	w_before[2] = org_wallet(org);
	before = all_transactions(&n_before);
	ck_assert_uint_eq(n_before, 6);

	sc_close(c);
	c = NULL;
	ck_assert_int_eq(test_daemon_restart(&d), 0);
	OK(sc_connect(d.socket, &c));

	w_after[0] = wallet(a);
	w_after[1] = wallet(b);
	w_after[2] = org_wallet(org);
	ck_assert_int_eq(memcmp(w_after, w_before, sizeof(w_after)), 0);
	ck_assert_int_eq(w_after[0].balance, CENTS(650));
	ck_assert_int_eq(w_after[1].balance, CENTS(450));
	ck_assert_int_eq(w_after[2].balance, USD(5));
	ck_assert_int_eq(w_after[2].limited, 1);
	after = all_transactions(&n_after);
	ck_assert_uint_eq(n_after, n_before);
	for (i = 0; i < n_after; i++)
		ck_assert_msg(memcmp(&after[i], &before[i], sizeof(sc_transaction)) == 0,
		              "transaction %" PRIu64 " differs after the restart", before[i].id);
	ck_assert_uint_eq(after[0].agent_id, 0);
	ck_assert_str_eq(after[0].reason, "grant");
	ck_assert_int_eq(after[0].balance_after, USD(5));

	/* Money still moves after the restart, under new ids. */
	OK(sc_wallets_transfer(c, of_org(org), of_agent(a), USD(5), "back", NULL, NULL, ids));
	ck_assert_uint_gt(ids[0], before[0].id);
	ck_assert_int_eq(org_wallet(org).balance, 0);
	sc_transactions_free(before);
	sc_transactions_free(after);
}
END_TEST

/* ----- restart ----- */

START_TEST(test_restart_keeps_state)
{
	sc_rule r = test_rule("OpenAI cap", "openai.*", USD(5), USD(100), 50);
	sc_wallet_update u = { .set = SC_WALLET_SET_BALANCE, .balance = USD(500) };
	sc_org *orgs_before, *orgs_after;
	sc_agent before, after;
	uint64_t org, id, open;
	size_t n_before, n_after, i;
	sc_wallet w;

	org = new_org("keep");
	new_org("also");
	id = new_agent_in("keep", "bot", SC_PRIORITY_HIGH, USD(100), USD(20), USD(50), &r, 1);
	OK(sc_org_wallet_update(c, org, &u, &w));
	report(allow(id, "openai.chat", USD(4)), SC_OUTCOME_SUCCESS, 1, USD(3));
	open = allow(id, "openai.chat", USD(2));
	OK(sc_agents_get(c, id, &before));
	OK(sc_orgs_list(c, &orgs_before, &n_before));

	sc_close(c);
	c = NULL;
	ck_assert_int_eq(test_daemon_restart(&d), 0);
	OK(sc_connect(d.socket, &c));

	OK(sc_orgs_list(c, &orgs_after, &n_after));
	ck_assert_uint_eq(n_after, n_before);
	for (i = 0; i < n_after; i++) {
		ck_assert_uint_eq(orgs_after[i].id, orgs_before[i].id);
		ck_assert_str_eq(orgs_after[i].name, orgs_before[i].name);
		ck_assert_int_eq(memcmp(&orgs_after[i].wallet, &orgs_before[i].wallet,
		                        sizeof(sc_wallet)),
		                 0);
	}
	sc_orgs_free(orgs_before);
	sc_orgs_free(orgs_after);
	OK(sc_agents_get(c, id, &after));
	ck_assert_str_eq(after.name, "bot");
	ck_assert_int_eq(after.priority, SC_PRIORITY_HIGH);
	ck_assert_int_eq(after.wallet.balance, USD(97));
	ck_assert_int_eq(after.wallet.held, USD(2));
	ck_assert_int_eq(memcmp(&after.wallet, &before.wallet, sizeof(sc_wallet)), 0);
	ck_assert_uint_eq(after.n_rules, 1);
	ck_assert_uint_eq(after.rules[0].id, before.rules[0].id);
	ck_assert_str_eq(after.rules[0].name, "OpenAI cap");
	ck_assert_int_eq(after.rules[0].daily_spent, before.rules[0].daily_spent);

	/* The hold opened before the restart settles after it; new ids do not collide. */
	ck_assert_int_eq(report(open, SC_OUTCOME_SUCCESS, 0, 0).balance, USD(95));
	ck_assert_uint_gt(new_org("new"), org);
}
END_TEST

/* ----- the test cases ----- */

/* A wallet update whose result the caller does not want (out NULL) is made all the same. */
START_TEST(test_wallet_update_without_result)
{
	sc_wallet_update u = { .set = SC_WALLET_SET_BALANCE, .balance = USD(7) };
	uint64_t org = new_org("quiet"), agent;
	sc_wallet w;

	agent = new_agent_in("quiet", "q", SC_PRIORITY_NORMAL, USD(1), 0, 0, NULL, 0);
	OK(sc_wallets_update(c, agent, &u, NULL));
	ck_assert_int_eq(wallet(agent).balance, USD(7));
	OK(sc_org_wallet_update(c, org, &u, NULL));
	OK(sc_org_wallet_get(c, org, &w));
	ck_assert_int_eq(w.balance, USD(7));
	stop();
}
END_TEST

void integration_wallets_tcases(Suite *s)
{
	TCase *tc;

	tc = daemon_tcase(s, "wallets", setup_default, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_transfer_between_agents);
	tcase_add_test(tc, test_transfer_refused);
	tcase_add_test(tc, test_transfer_org_wallet);
	tcase_add_test(tc, test_adjust);
	tcase_add_test(tc, test_report_wallet_transaction);
	tcase_add_test(tc, test_timezone_spend_and_period);
	tcase_add_test(tc, test_carve_and_release);
	tcase_add_test(tc, test_delete_carved_agent);
	tcase_add_test(tc, test_wallet_update_without_result);
	tcase_add_test(tc, test_balance_after_check);

	tc = daemon_tcase(s, "restart", setup_default, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_restart_keeps_state);
	tcase_add_test(tc, test_transfers_survive_restart);
}
