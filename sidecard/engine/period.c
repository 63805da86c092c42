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

#include "period.h"
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
	w->daily_spent = sc_add_sat(w->daily_spent, charge);
	w->weekly_spent = sc_add_sat(w->weekly_spent, charge);
	w->monthly_spent = sc_add_sat(w->monthly_spent, charge);
	w->total_spent = sc_add_sat(w->total_spent, charge);
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

/* ---------------------------------------------------------- clock steps */

/* A refill key that names no period: the wallet's refill is due at its next roll. */
#define KEY_DUE INT32_MIN

/*
 * The first half of carrying a wallet across a step, at the calendar it
 * has: what counts in no current period is dropped (it counted as 0
 * already), so that every counter and mark left belongs to the current
 * period, whatever its key becomes next.
 */
static void keep_current(struct shm_wallet *w, const struct shm_calendar *cal)
{
	int32_t key = gate_period_key(w, cal);

	if (w->day != cal->day)
		w->daily_spent = 0;
	if (w->week != cal->week)
		w->weekly_spent = 0;
	if (w->month != cal->month)
		w->monthly_spent = 0;
	if (w->period != SHM_PERIOD_NONE && w->period_key != key)
		w->period_key = KEY_DUE;
	for (int i = 0; i < SHM_ALERT_MARKS; i++)
		if (w->alerted[i] != 0 && w->alerted[i] - 1 < key)
			w->alerted[i] = 0;
}

/* The second half, at the calendar the step moved to: the current period is now this one. */
static void move_current(struct shm_wallet *w, const struct shm_calendar *cal)
{
	int32_t key = gate_period_key(w, cal);

	w->day = cal->day;
	w->week = cal->week;
	w->month = cal->month;
	if (w->period != SHM_PERIOD_NONE && w->period_key != KEY_DUE)
		w->period_key = key;
	for (int i = 0; i < SHM_ALERT_MARKS; i++)
		if (w->alerted[i] != 0)
			w->alerted[i] = key + 1;
}

/*
 * One half of a step for every wallet and rule, each at its org's
 * calendar: before the calendars move (keep_current), or after, with the
 * windows moved by the step (move_current).
 */
static void carry_all(struct shm *m, int moved, int64_t step)
{
	const struct shm_header *h = m->hdr;

	for (uint32_t i = 0; i < h->org_top; i++) {
		struct shm_org *o = &m->orgs[i];

		if (!o->rec.used)
			continue;
		state_org_write_begin(o);
		(moved ? move_current : keep_current)(&o->wallet, &o->cal);
		shm_org_write_end(o);
	}
	for (uint32_t i = 0; i < h->agent_top; i++) {
		struct shm_agent *a = &m->agents[i];

		if (!a->rec.used)
			continue;
		state_agent_write_begin(a);
		(moved ? move_current : keep_current)(&a->wallet, &m->orgs[a->org_slot].cal);
		if (moved)
			state_window_shift(&a->vel, step);
		shm_agent_write_end(a);
	}
	for (uint32_t i = 0; i < h->rule_top; i++) {
		struct shm_rule *r = &m->rules[i];
		const struct shm_calendar *cal;

		if (!r->rec.used)
			continue;
		cal = &m->orgs[m->agents[r->agent_slot].org_slot].cal;
		shm_write_begin(&r->rec.seq);
		/* a rule counts a day only */
		if (!moved && r->day != cal->day)
			r->daily_spent = 0;
		r->day = cal->day;
		if (moved)
			state_window_shift(&r->rate, step);
		shm_write_end(&r->rec.seq);
	}
}

void gate_clock_step(struct state *st, int64_t step, int64_t now)
{
	struct shm *m = state_shm(st);
	struct shm_header *h = m->hdr;
	int64_t next = INT64_MAX;

	/* what the elapsed time ended before the step ends as it would have */
	gate_roll(st, sc_add_sat(now, -step));
	shm_change_begin(m);
	carry_all(m, 0, step);
	for (uint32_t i = 0; i < h->org_top; i++) {
		struct shm_org *o = &m->orgs[i];

		if (!o->rec.used)
			continue;
		state_org_write_begin(o);
		gate_calendar(o->tz_rule, now, &o->cal);
		shm_org_write_end(o);
		if (o->cal.next_day < next)
			next = o->cal.next_day;
	}
	carry_all(m, 1, step);
	for (uint32_t i = 0; i < h->hold_top; i++) {
		struct shm_hold *ho = &m->holds[i];

		if (!ho->rec.used)
			continue;
		shm_write_begin(&ho->rec.seq);
		ho->expires_at = sc_add_sat(ho->expires_at, step);
		shm_write_end(&ho->rec.seq);
	}
	shm_write_begin(&h->seq);
	h->next_roll = next;
	shm_write_end(&h->seq);
	shm_change_end(m);
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

	return sc_add_sat(state_wallet_available(&o->wallet), -others);
}

void gate_carve_sync(struct state *st, struct shm_agent *a)
{
	struct shm_org *o = &state_shm(st)->orgs[a->org_slot];
	int64_t avail = state_wallet_available(&a->wallet);
	int64_t r = a->wallet.carved && avail > 0 ? avail : 0;

	if (r == a->wallet.reserving)
		return;
	state_org_write_begin(o);
	o->wallet.reserving = sc_add_sat(o->wallet.reserving, r - a->wallet.reserving);
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
	avail = state_wallet_available(&a->wallet);
	if (__builtin_add_overflow(a->wallet.balance, amount, &balance)) {
		sc_errorf(err, errlen, "amount: the agent's balance would overflow");
		return SC_ERANGE;
	}
	if (sc_add_sat(avail > 0 ? avail : 0, amount) > free_funds) {
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
