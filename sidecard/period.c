/*
 * period.c: time and hierarchy in the gate. Each org has a calendar in its
 * time zone (UTC unless set): its local day, Monday week and month, and when
 * each ends. Wallets count spend per period of that calendar, daily limits
 * count the org's local day, and a wallet with a budget period is refilled
 * to its budget when a new period begins. A sub-budget reserves part of an
 * org's wallet for one agent.
 *
 * Rolling over is a change of state (a refill moves money), so it happens
 * only inside recorded changes: at the start of every gate operation, and
 * from the daemon's timer as its own ledger record. Either way it is a pure
 * function of the time and the org's stored POSIX rule, never of the tzdata
 * installed when the ledger is replayed.
 *
 * Threads: the loop thread (the state's single writer), like gate.c.
 */
#include <stdio.h>
#include <string.h>

#include "gate.h"
#include "log.h"
#include "tz.h"

int32_t gate_period_key(const struct shm_wallet *w, const struct shm_calendar *cal)
{
	switch (w->period) {
	case SHM_PERIOD_WEEKLY:
		return cal->week;
	case SHM_PERIOD_MONTHLY:
		return cal->month;
	default:
		return cal->day;
	}
}

int64_t gate_period_end(const struct shm_wallet *w, const struct shm_calendar *cal)
{
	switch (w->period) {
	case SHM_PERIOD_WEEKLY:
		return cal->next_week;
	case SHM_PERIOD_MONTHLY:
		return cal->next_month;
	default:
		return cal->next_day;
	}
}

int64_t gate_period_spent(const struct shm_wallet *w, const struct shm_calendar *cal, int period)
{
	switch (period) {
	case SHM_PERIOD_WEEKLY:
		return w->week == cal->week ? w->weekly_spent : 0;
	case SHM_PERIOD_MONTHLY:
		return w->month == cal->month ? w->monthly_spent : 0;
	default:
		return w->day == cal->day ? w->daily_spent : 0;
	}
}

void gate_spend_add(struct shm_wallet *w, const struct shm_calendar *cal, int64_t charge)
{
	if (w->day != cal->day) {
		w->day = cal->day;
		w->daily_spent = 0;
	}
	if (w->week != cal->week) {
		w->week = cal->week;
		w->weekly_spent = 0;
	}
	if (w->month != cal->month) {
		w->month = cal->month;
		w->monthly_spent = 0;
	}
	w->daily_spent = gate_add_sat(w->daily_spent, charge);
	w->weekly_spent = gate_add_sat(w->weekly_spent, charge);
	w->monthly_spent = gate_add_sat(w->monthly_spent, charge);
	w->total_spent = gate_add_sat(w->total_spent, charge);
}

void gate_calendar(const char *rule, int64_t now, struct shm_calendar *cal)
{
	struct tz_calendar c;
	struct tz z;

	if (tz_parse(rule[0] ? rule : "UTC0", strlen(rule[0] ? rule : "UTC0"), &z, NULL, 0) != 0) {
		/* rules are validated before they are stored; this is the last resort */
		log_error("time zone rule '%s' no longer parses; using UTC", rule);
		tz_parse("UTC0", 4, &z, NULL, 0);
	}
	tz_calendar(&z, now, &c);
	*cal = (struct shm_calendar){.day = c.day,
	                             .week = c.week,
	                             .month = c.month,
	                             .day_start = c.day_start,
	                             .next_day = c.next_day,
	                             .next_week = c.next_week,
	                             .next_month = c.next_month};
}

/* A new budget period began: the wallet is refilled to its budget, debt first. */
static void refill(struct state *st, struct shm_wallet *w, uint32_t *seq, uint64_t agent_id,
                   uint64_t org_id, const struct shm_calendar *cal, int64_t now)
{
	int32_t key = gate_period_key(w, cal);
	int64_t add = w->balance < w->budget ? w->budget - w->balance : 0;
	int64_t repay = add < w->debt ? add : w->debt;

	state_wallet_write_begin(seq, agent_id == 0);
	w->period_key = key;
	w->debt -= repay;
	w->balance += add - repay;
	shm_wallet_write_end(seq, agent_id == 0);
	if (add > 0)
		gate_wallet_txn(st, agent_id, org_id, "wallet.refill", "refill", add, -add, w->balance,
		                NULL, 0, now);
}

static int refill_due(const struct shm_wallet *w, const struct shm_calendar *cal)
{
	return w->period != SHM_PERIOD_NONE && w->period_key != gate_period_key(w, cal);
}

unsigned gate_roll(struct state *st, int64_t now)
{
	struct shm *m = state_shm(st);
	struct shm_header *h = m->hdr;
	int64_t next = INT64_MAX;
	unsigned refills = 0, rolled = 0;

	if (now < h->next_roll)
		return 0;
	shm_change_begin(m);
	for (uint32_t i = 0; i < h->org_cap; i++) {
		struct shm_org *o = &m->orgs[i];

		if (!o->rec.used)
			continue;
		if (o->cal.next_day <= now) {
			state_org_write_begin(o);
			gate_calendar(o->tz_rule, now, &o->cal);
			shm_org_write_end(o);
			rolled++;
			if (o->wallet.limited && refill_due(&o->wallet, &o->cal)) {
				refill(st, &o->wallet, &o->rec.seq, 0, o->id, &o->cal, now);
				refills++;
			}
		}
		if (o->cal.next_day < next)
			next = o->cal.next_day;
	}
	for (uint32_t i = 0; rolled && i < h->agent_cap; i++) {
		struct shm_agent *a = &m->agents[i];
		const struct shm_org *o = &m->orgs[a->org_slot];

		if (a->rec.used && refill_due(&a->wallet, &o->cal)) {
			refill(st, &a->wallet, &a->rec.seq, a->id, a->org_id, &o->cal, now);
			gate_carve_sync(st, a);
			refills++;
		}
	}
	shm_write_begin(&h->seq);
	h->next_roll = next;
	shm_write_end(&h->seq);
	shm_change_end(m);
	if (refills)
		log_info("%u wallet(s) refilled for a new budget period", refills);
	return rolled;
}

int64_t gate_next_roll(struct state *st)
{
	return state_shm(st)->hdr->next_roll;
}

void gate_org_timezone(struct state *st, uint32_t org_slot, const char *name, const char *rule,
                       int64_t now)
{
	struct shm *m = state_shm(st);
	struct shm_org *o = &m->orgs[org_slot];

	shm_change_begin(m);
	state_org_write_begin(o);
	snprintf(o->tz_name, sizeof(o->tz_name), "%s", name);
	snprintf(o->tz_rule, sizeof(o->tz_rule), "%s", rule);
	gate_calendar(o->tz_rule, now, &o->cal);
	shm_org_write_end(o);
	if (o->cal.next_day < m->hdr->next_roll) {
		shm_write_begin(&m->hdr->seq);
		m->hdr->next_roll = o->cal.next_day;
		shm_write_end(&m->hdr->seq);
	}
	shm_change_end(m);
}

/* --------------------------------------------------------- sub-budgets */

int64_t gate_org_available(const struct shm_org *o, const struct shm_agent *a)
{
	int64_t others = o->wallet.reserving - (a ? a->wallet.reserving : 0);

	return gate_add_sat(gate_available(&o->wallet), -others);
}

void gate_carve_sync(struct state *st, struct shm_agent *a)
{
	struct shm_org *o = &state_shm(st)->orgs[a->org_slot];
	int64_t avail = gate_available(&a->wallet);
	int64_t r = a->wallet.carved && avail > 0 ? avail : 0;

	if (r == a->wallet.reserving)
		return;
	state_org_write_begin(o);
	o->wallet.reserving = gate_add_sat(o->wallet.reserving, r - a->wallet.reserving);
	shm_org_write_end(o);
	state_agent_write_begin(a);
	a->wallet.reserving = r;
	shm_agent_write_end(a);
}

int gate_carve(struct state *st, uint32_t agent_slot, int64_t amount, const uint8_t *meta,
               size_t meta_len, int64_t now, uint64_t *txn_id, char *err, size_t errlen)
{
	struct shm *m = state_shm(st);
	struct shm_agent *a = &m->agents[agent_slot];
	const struct shm_org *o = &m->orgs[a->org_slot];
	int64_t free_funds, balance, avail;

	gate_roll(st, now);
	if (amount <= 0) {
		sc_errorf(err, errlen, "amount: must be more than 0");
		return SC_EINVAL;
	}
	if (!o->wallet.limited) {
		sc_errorf(err, errlen,
		          "org %llu: its wallet is unlimited; fund it before carving sub-budgets",
		          (unsigned long long)o->id);
		return SC_EINVAL;
	}
	/* the reservation grows from what the agent reserves now to its available plus amount */
	free_funds = gate_org_available(o, a);
	avail = gate_available(&a->wallet);
	if (__builtin_add_overflow(a->wallet.balance, amount, &balance)) {
		sc_errorf(err, errlen, "amount: the agent's balance would overflow");
		return SC_ERANGE;
	}
	if (gate_add_sat(avail > 0 ? avail : 0, amount) > free_funds) {
		sc_errorf(err, errlen,
		          "amount: %lld plus the agent's available %lld exceeds the org's "
		          "unreserved available funds (%lld)",
		          (long long)amount, (long long)(avail > 0 ? avail : 0), (long long)free_funds);
		return SC_EINVAL;
	}
	shm_change_begin(m);
	state_agent_write_begin(a);
	a->wallet.balance = balance;
	a->wallet.carved = 1;
	shm_agent_write_end(a);
	*txn_id = gate_wallet_txn(st, a->id, a->org_id, "wallet.carve", "carve", amount, -amount,
	                          balance, meta, meta_len, now);
	gate_carve_sync(st, a);
	shm_change_end(m);
	return 0;
}

void gate_release(struct state *st, uint32_t agent_slot)
{
	struct shm *m = state_shm(st);
	struct shm_agent *a = &m->agents[agent_slot];

	shm_change_begin(m);
	state_agent_write_begin(a);
	a->wallet.carved = 0;
	shm_agent_write_end(a);
	gate_carve_sync(st, a);
	shm_change_end(m);
}
