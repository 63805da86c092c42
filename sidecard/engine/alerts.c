/*
 * alerts.c: evaluation of the alerts (PROTOCOL.md "Alerts"). After each
 * change of a wallet the gate calls alerts_evaluate, which compares the
 * wallet with its thresholds and, for a threshold crossed, records an alert
 * in the segment's ring (state_alert_add), unless that threshold already
 * fired in the wallet's current period.
 *
 *   kind             wallets          warning                 critical
 *   low_balance      agent, org (1)   available < T (2)       available < T / 5
 *   high_velocity    agent            allowed checks in the   twice the setting
 *                                     sliding hour >= setting
 *   budget_exceeded  agent, org (1)   -                       period spend > budget,
 *                                                             or daily spend > daily limit
 *   anomaly          agent            risk medium (10x)       risk high (100x)
 *
 *   (1) an org wallet only while it is limited (funded)
 *   (2) T = the wallet's low_balance, or a tenth of its budget when that is
 *       0; no alert when T is 0
 *
 * ONCE PER PERIOD. Each (wallet, threshold) pair has a mark in
 * shm_wallet.alerted[] holding 1 + the key of the period in which it last
 * fired (gate_period_key: the wallet's budget period, else the org's local
 * day); it fires again only in a later period. Velocity and anomaly marks
 * live in the agent's wallet. A critical alert that fires without its
 * warning having fired in the period marks the warning too: the crossing is
 * reported once, at its worst.
 *
 * Alerts are derived from the ledger's records like the rest of the state:
 * they have no ledger record of their own and a replay raises them again,
 * identically (their time is the record's).
 *
 * Threads: the daemon's loop thread, inside the gate's change brackets.
 */
#include <stdio.h>
#include <string.h>

#include "alerts.h"
#include "log.h"

/* The wallet being evaluated, with what an alert says about its owner. */
struct owner {
	struct shm_wallet *w;
	uint32_t *seq; /* the seqlock of the record holding w */
	const struct shm_calendar *cal;
	uint64_t agent_id, org_id;
	/* "agent 7 (research-bot)" or "org 1 (acme)", formatted only when an alert fires */
	const char *who_kind, *who_name;
};

static void owner_agent(struct shm *m, struct shm_agent *a, struct owner *o)
{
	o->w = &a->wallet;
	o->seq = &a->rec.seq;
	o->cal = &m->orgs[a->org_slot].cal;
	o->agent_id = a->id;
	o->org_id = a->org_id;
	o->who_kind = "agent";
	o->who_name = a->name;
}

static void owner_org(struct shm_org *org, struct owner *o)
{
	o->w = &org->wallet;
	o->seq = &org->rec.seq;
	o->cal = &org->cal;
	o->agent_id = 0;
	o->org_id = org->id;
	o->who_kind = "org";
	o->who_name = org->name;
}

/* "$4.20" or "-$4.20". */
static const char *usd(int64_t m, char *buf, size_t len)
{
	char tmp[SC_MONEY_STRLEN];

	sc_money_format(m, tmp, sizeof(tmp));
	snprintf(buf, len, "%s$%s", tmp[0] == '-' ? "-" : "", tmp + (tmp[0] == '-'));
	return buf;
}

/*
 * 1 if mark already fired in the wallet's current period. A threshold stays
 * crossed for many changes in a row (every check of a busy agent past its
 * velocity), so callers ask this before formatting a message nobody reads.
 */
static int mark_fired(const struct owner *o, enum shm_alert_mark mark)
{
	int32_t fired = o->w->alerted[mark];

	return fired != 0 && fired - 1 >= gate_period_key(o->w, o->cal);
}

/* 1 if mark has not fired in the wallet's current period; then records that it has. */
static int take_mark(const struct owner *o, enum shm_alert_mark mark)
{
	int32_t key = gate_period_key(o->w, o->cal);

	if (mark_fired(o, mark))
		return 0;
	state_wallet_write_begin(o->seq, o->agent_id == 0);
	o->w->alerted[mark] = key + 1;
	shm_wallet_write_end(o->seq, o->agent_id == 0);
	return 1;
}

struct alert_spec {
	enum shm_alert_mark mark;
	enum shm_alert_kind kind;
	int critical;
	int64_t value, threshold;
	uint64_t txn_id;
};

/*
 * Raises the alert of spec, its message "<who>: <what>", unless its mark
 * fired this period. A critical level that fires marks its warning too
 * (warning_mark; SHM_ALERT_MARKS: none).
 */
static void raise_alert(struct state *st, const struct owner *o, const struct alert_spec *s,
                        enum shm_alert_mark warning_mark, const char *what, int64_t now)
{
	struct shm_alert a;

	if (!take_mark(o, s->mark))
		return;
	if (warning_mark != SHM_ALERT_MARKS)
		take_mark(o, warning_mark);
	memset(&a, 0, sizeof(a));
	a.agent_id = o->agent_id;
	a.org_id = o->org_id;
	a.txn_id = s->txn_id;
	a.time = now;
	a.kind = (uint8_t)s->kind;
	a.severity = (uint8_t)(s->critical != 0);
	a.value = s->value;
	a.threshold = s->threshold;
	snprintf(a.message, sizeof(a.message), "%s %llu (%s): %s", o->who_kind,
	         (unsigned long long)(o->agent_id ? o->agent_id : o->org_id), o->who_name, what);
	log_debug("alert %llu: %s", (unsigned long long)state_alert_add(st, &a), a.message);
}

static void low_balance(struct state *st, const struct owner *o, uint64_t txn_id, int64_t now)
{
	const struct shm_wallet *w = o->w;
	int64_t t = w->low_balance > 0 ? w->low_balance : w->budget / 10;
	int64_t avail = state_wallet_available(w);
	char v[SC_MONEY_STRLEN + 2], th[SC_MONEY_STRLEN + 2], what[SC_REASON_MAX + 1];
	struct alert_spec s = {SHM_MARK_LOW_WARNING, SHM_ALERT_LOW_BALANCE, 0, 0, t, txn_id};

	if (t <= 0 || avail >= t)
		return;
	s.value = avail;
	if (avail < t / 5) {
		s.mark = SHM_MARK_LOW_CRITICAL;
		s.critical = 1;
		s.threshold = t / 5;
	}
	if (mark_fired(o, s.mark))
		return;
	snprintf(what, sizeof(what), "available %s below %s", usd(avail, v, sizeof(v)),
	         usd(s.threshold, th, sizeof(th)));
	raise_alert(st, o, &s, s.critical ? SHM_MARK_LOW_WARNING : SHM_ALERT_MARKS, what, now);
}

static void budget(struct state *st, const struct owner *o, uint64_t txn_id, int64_t now)
{
	static const char *const when[] = {"today", "today", "this week", "this month"};
	const struct shm_wallet *w = o->w;
	int64_t daily = gate_period_spent(w, o->cal, SHM_PERIOD_DAILY);
	int64_t spent = gate_period_spent(w, o->cal, w->period);
	struct alert_spec s = {SHM_MARK_BUDGET, SHM_ALERT_BUDGET, 1, 0, 0, txn_id};
	char v[SC_MONEY_STRLEN + 2], th[SC_MONEY_STRLEN + 2], what[SC_REASON_MAX + 1];

	if (w->period != SHM_PERIOD_NONE && w->period <= SHM_PERIOD_MONTHLY && w->budget > 0 &&
	    spent > w->budget) {
		if (mark_fired(o, s.mark))
			return;
		s.value = spent;
		s.threshold = w->budget;
		snprintf(what, sizeof(what), "spent %s %s, above the budget of %s",
		         usd(spent, v, sizeof(v)), when[w->period], usd(w->budget, th, sizeof(th)));
		raise_alert(st, o, &s, SHM_ALERT_MARKS, what, now);
	} else if (w->daily_limit > 0 && daily > w->daily_limit) {
		if (mark_fired(o, s.mark))
			return;
		s.value = daily;
		s.threshold = w->daily_limit;
		snprintf(what, sizeof(what), "spent %s today, above the daily spend limit of %s",
		         usd(daily, v, sizeof(v)), usd(w->daily_limit, th, sizeof(th)));
		raise_alert(st, o, &s, SHM_ALERT_MARKS, what, now);
	}
}

static void velocity(struct state *st, struct shm_agent *a, const struct owner *o,
                     uint64_t txn_id, int64_t now)
{
	int64_t limit = state_config(st)->set.alert_velocity, n;
	struct alert_spec s = {SHM_MARK_VELOCITY_WARNING, SHM_ALERT_VELOCITY, 0, 0, limit, txn_id};
	char what[SC_REASON_MAX + 1];

	state_agent_write_begin(a);
	state_window_add(&a->vel, now);
	shm_agent_write_end(a);
	if (limit <= 0 || (n = state_window_count(&a->vel, now)) < limit)
		return;
	s.value = n;
	if (n >= sc_add_sat(limit, limit)) {
		s.mark = SHM_MARK_VELOCITY_CRITICAL;
		s.critical = 1;
		s.threshold = sc_add_sat(limit, limit);
	}
	if (mark_fired(o, s.mark))
		return;
	snprintf(what, sizeof(what), "%lld allowed checks in the last hour, at least %lld",
	         (long long)n, (long long)s.threshold);
	raise_alert(st, o, &s, s.critical ? SHM_MARK_VELOCITY_WARNING : SHM_ALERT_MARKS, what, now);
}

static void anomaly(struct state *st, const struct owner *o, const struct alerts_change *ch,
                    int64_t now)
{
	int high = ch->anomaly == GATE_RISK_HIGH;
	struct alert_spec s = {high ? SHM_MARK_ANOMALY_CRITICAL : SHM_MARK_ANOMALY_WARNING,
	                       SHM_ALERT_ANOMALY, high, ch->ratio, high ? 100 : 10, ch->txn_id};
	char what[SC_REASON_MAX + 1];

	if (mark_fired(o, s.mark))
		return;
	snprintf(what, sizeof(what), "transaction %llu estimated %lldx the average cost",
	         (unsigned long long)ch->txn_id, (long long)ch->ratio);
	raise_alert(st, o, &s, SHM_ALERT_MARKS, what, now);
}

void alerts_evaluate(struct state *st, const struct alerts_change *ch, int64_t now)
{
	struct shm *m = state_shm(st);
	uint32_t org_slot = ch->wallet.slot;
	struct owner o;

	if (!ch->wallet.org) {
		struct shm_agent *a = &m->agents[ch->wallet.slot];

		owner_agent(m, a, &o);
		if (ch->allowed_check)
			velocity(st, a, &o, ch->txn_id, now);
		if (ch->anomaly != GATE_RISK_LOW)
			anomaly(st, &o, ch, now);
		low_balance(st, &o, ch->txn_id, now);
		budget(st, &o, ch->txn_id, now);
		org_slot = a->org_slot;
	}
	owner_org(&m->orgs[org_slot], &o);
	if (o.w->limited) {
		low_balance(st, &o, ch->txn_id, now);
		budget(st, &o, ch->txn_id, now);
	}
}
