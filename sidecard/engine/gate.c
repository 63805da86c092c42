/*
 * gate.c: the gating engine. gate_check evaluates a check in the order of
 * PROTOCOL.md and, when it is allowed, places its holds; gate_report and
 * gate_expire settle them. Every amount is integer micro-dollars and every
 * addition is checked before anything is written.
 *
 * Threads: the daemon's loop thread only (the segment's single writer). A
 * check reads limits and writes holds with no other writer in between, so
 * "committed plus held never exceeds a limit" holds by construction: each
 * allowed estimate was at most the room left when it was placed.
 *
 * Each state change is bracketed by shm_change_begin/end and each record
 * written under its seqlock, so readers of the shared mapping see either the
 * old or the new value of every record.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "alerts.h"
#include "common.h"
#include "gate.h"
#include "pricing.h"
#include "log.h"

static const char *const check_type_words[] = {"api_call", "compute", "data", "tool", "other"};
static const struct sc_names check_types = {check_type_words, 5};

_Static_assert((int)GATE_RISK_MEDIUM == (int)SC_RISK_MEDIUM && (int)GATE_RISK_HIGH == (int)SC_RISK_HIGH,
               "risk levels are the public enum's");

const char *gate_risk_name(int risk)
{
	return sc_risk_name((enum sc_risk)risk);
}

/* -------------------------------------------------------------- helpers */

int gate_risk_reason(const char *reason)
{
	static const char *const risk[] = {"agent_frozen", "score_too_low", "wallet_debt", "org_debt"};

	for (size_t i = 0; i < sizeof(risk) / sizeof(risk[0]); i++)
		if (strcmp(reason, risk[i]) == 0)
			return 1;
	return 0;
}

int32_t gate_day(int64_t now)
{
	return (int32_t)(now / GATE_US_PER_DAY);
}

int32_t gate_minute(int64_t now)
{
	return (int32_t)(now / GATE_US_PER_MINUTE);
}

int64_t gate_daily_used(int32_t day, int64_t spent, int64_t held, int32_t today)
{
	return sc_add_sat(day == today ? spent : 0, held);
}

int64_t gate_rate_count(const struct shm_rule *r, int64_t now)
{
	return state_window_count(&r->rate, now);
}

/* ------------------------------------------------------------- counters */

enum counter {
	C_CHECKS, C_ALLOWED, C_BLOCKED, C_REPORTS, C_EXPIRED, C_TOPUPS, C_ANOMALIES, C_RISK_BLOCKED
};

static void count(struct state *st, enum counter c)
{
	struct shm_header *h = state_shm(st)->hdr;
	uint64_t *field[] = {&h->checks,  &h->allowed, &h->blocked,   &h->reports,
	                     &h->expired, &h->topups,  &h->anomalies, &h->risk_blocked};

	shm_write_begin(&h->seq);
	(*field[c])++;
	shm_write_end(&h->seq);
}

/* ---------------------------------------------------------------- check */

/* The reasons a check would be blocked for, in evaluation order. */
struct verdict {
	unsigned n;
	int stop_at_first;
	char reason[SC_WARNINGS_MAX][SC_REASON_MAX + 1];
};

/* Adds a reason; returns 1 when evaluation should stop. */
static int refuse(struct verdict *v, const char *fmt, ...)
{
	va_list ap;

	if (v->n < SC_WARNINGS_MAX) {
		va_start(ap, fmt);
		vsnprintf(v->reason[v->n], sizeof(v->reason[0]), fmt, ap);
		va_end(ap);
		v->n++;
	}
	return v->stop_at_first;
}

/*
 * Steps 5 and 6: a wallet's per-transaction, daily and balance limits; avail
 * is what the check may use of the balance, today the org's local day.
 * broke: the reason for an estimate of 0 with no funds available, which
 * the reference hub refuses (402); NULL lets it through.
 */
static int wallet_limits(const struct shm_wallet *w, const char *prefix, const char *empty,
                         const char *broke, int64_t est, int32_t today, int64_t avail,
                         struct verdict *v)
{
	if (w->max_per_txn > 0 && est > w->max_per_txn && refuse(v, "%s:max_per_txn", prefix))
		return 1;
	if (w->daily_limit > 0 &&
	    est > w->daily_limit - gate_daily_used(w->day, w->daily_spent, w->held, today) &&
	    refuse(v, "%s:daily_spend_limit", prefix))
		return 1;
	if (broke && est == 0 && avail <= 0)
		return refuse(v, "%s", broke);
	return est > avail && refuse(v, "%s", empty);
}

/*
 * Step 3b: the hold quotas. They stop a critical agent too: like the hold
 * table's capacity, they are not a spending limit but every other
 * tenant's share of the table.
 */
static int hold_quota(struct state *st, const struct shm_agent *a, struct verdict *v)
{
	const struct state_settings *set = &state_config(st)->set;

	if (set->max_holds_per_agent && a->open_holds >= set->max_holds_per_agent) {
		v->stop_at_first = 1;
		return refuse(v, "max_holds_per_agent:%u", set->max_holds_per_agent);
	}
	if (set->max_holds_per_org && state_org_holds(st, a->org_slot) >= set->max_holds_per_org) {
		v->stop_at_first = 1;
		return refuse(v, "max_holds_per_org:%u", set->max_holds_per_org);
	}
	return 0;
}

static int64_t hourly_limit(const struct shm_agent *a, const struct shm_rule *r)
{
	if (a->status != SC_STATUS_THROTTLED || r->hourly_limit == 0)
		return r->hourly_limit;
	return r->hourly_limit / 2 > 0 ? r->hourly_limit / 2 : 1;
}

/* Step 7: the most specific rule's limits; name is the rule's. */
static int rule_limits(const struct shm_agent *a, const struct shm_rule *r, const char *name,
                       int64_t est, int32_t today, int64_t now, struct verdict *v)
{
	int64_t hourly = hourly_limit(a, r);

	if (r->max_cost_per_txn > 0 && est > r->max_cost_per_txn &&
	    refuse(v, "rule:%s:max_cost_per_txn", name))
		return 1;
	if (r->daily_limit > 0 &&
	    est > r->daily_limit - gate_daily_used(r->day, r->daily_spent, r->held, today) &&
	    refuse(v, "rule:%s:daily_spend_limit", name))
		return 1;
	return hourly > 0 && gate_rate_count(r, now) >= hourly &&
	       refuse(v, "rule:%s:hourly_rate_limit", name);
}

/* Priority high: tops up by 50% of budget when available < 10% of budget. */
static void maybe_top_up(struct state *st, struct shm_agent *a, int64_t now)
{
	struct shm_wallet *w = &a->wallet;
	int64_t add = w->budget / 2, balance;

	if (a->priority != SC_PRIORITY_HIGH || w->budget <= 0 || add == 0 ||
	    state_wallet_available(w) >= w->budget / 10 || __builtin_add_overflow(w->balance, add, &balance))
		return;
	state_agent_write_begin(a);
	w->balance = balance;
	shm_agent_write_end(a);
	gate_wallet_txn(st, a->id, a->org_id, "wallet.topup", "topup", add, 0, balance, NULL, 0, now);
	count(st, C_TOPUPS);
	log_info("agent %llu topped up by %lld micros (priority high)", (unsigned long long)a->id,
	         (long long)add);
}

/* An optional key (idempotency key, task id): absent, or 1..63 printable bytes. */
static int key_valid(struct state_str k)
{
	return k.len == 0 || (k.len <= SC_KEY_MAX && state_action_valid(k.p, k.len));
}

static int validate_check(const struct gate_check_req *req, char *err, size_t errlen)
{
	if (!state_action_valid(req->action.p, req->action.len)) {
		sc_errorf(err, errlen, "action: must be 1 to %d printable characters without spaces or '*'",
		     SC_ACTION_MAX);
		return SC_EINVAL;
	}
	if (req->estimate < 0) {
		sc_errorf(err, errlen, "estimated_cost: must not be negative");
		return SC_EINVAL;
	}
	if (req->type.len && sc_names_find(&check_types, req->type.p, req->type.len) < 0) {
		sc_errorf(err, errlen, "type: must be api_call, compute, data, tool or other");
		return SC_EINVAL;
	}
	if (!key_valid(req->key) || !key_valid(req->task)) {
		sc_errorf(err, errlen, "%s: must be 1 to %d printable characters without spaces",
		          key_valid(req->key) ? "task_id" : "idempotency_key", SC_KEY_MAX);
		return SC_EINVAL;
	}
	if (req->meta_len > SHM_METADATA_MAX) {
		sc_errorf(err, errlen, "metadata: %zu bytes packed, more than %d", req->meta_len,
		     SHM_METADATA_MAX);
		return SC_EINVAL;
	}
	return 0;
}

/* Step 2: the decision of an earlier check with the same key. */
static int replay(const struct gate_check_req *req, const struct shm_key *t,
                  const struct shm_agent *a, struct gate_decision *out, char *err, size_t errlen)
{
	if (t->estimate != req->estimate || strlen(t->action) != req->action.len ||
	    memcmp(t->action, req->action.p, req->action.len) != 0) {
		sc_errorf(err, errlen,
		     "idempotency_key: already used by transaction %llu for a different action or "
		     "estimate",
		     (unsigned long long)t->txn_id);
		return SC_EEXISTS;
	}
	out->allowed = t->allowed;
	out->txn_id = t->txn_id;
	out->risk = t->risk;
	memcpy(out->block_reason, t->block_reason, sizeof(out->block_reason));
	out->available = state_wallet_available(&a->wallet);
	out->replayed = 1;
	return 0;
}

static void copy_req_str(char *dst, size_t size, struct state_str s)
{
	size_t n = s.len < size - 1 ? s.len : size - 1;

	if (n)
		memcpy(dst, s.p, n);
	dst[n] = '\0';
}

/* Records the transaction of a decision. */
static struct shm_txn *record(struct state *st, const struct gate_check_req *req,
                              const struct shm_agent *a, const struct shm_rule *r,
                              const struct gate_decision *d, int64_t now)
{
	struct shm_txn *t = state_txn_begin(st, a->id, (uint32_t)(a - state_shm(st)->agents));

	t->org_id = a->org_id;
	t->rule_id = r ? r->id : 0;
	t->estimate = req->estimate;
	t->balance_after = a->wallet.balance;
	t->created_at = now;
	t->status = d->allowed ? SC_TXN_PENDING : SC_TXN_BLOCKED;
	t->risk = (uint8_t)d->risk;
	copy_req_str(t->action, sizeof(t->action), req->action);
	if (req->type.len)
		copy_req_str(t->type, sizeof(t->type), req->type);
	else
		strcpy(t->type, "other");
	memcpy(t->block_reason, d->block_reason, sizeof(t->block_reason));
	copy_req_str(t->idem_key, sizeof(t->idem_key), req->key);
	copy_req_str(t->task_id, sizeof(t->task_id), req->task);
	t->meta_len = (uint16_t)req->meta_len;
	if (req->meta_len)
		memcpy(t->meta, req->meta, req->meta_len);
	if (t->idem_key[0] && state_txn_index_key(st, t) != 0)
		log_error("cannot index idempotency key of transaction %llu: out of memory",
		          (unsigned long long)t->id);
	shm_write_end(&t->rec.seq);
	return t;
}

/* Places the holds of an allowed check. All sums were checked by the caller. */
static void place_holds(struct state *st, uint32_t agent_slot, uint32_t rule_slot,
                        uint32_t task_slot, uint32_t hold_slot, const struct gate_check_req *req,
                        uint64_t txn_id, int64_t now)
{
	struct shm *m = state_shm(st);
	struct shm_agent *a = &m->agents[agent_slot];
	struct shm_org *o = &m->orgs[a->org_slot];
	struct shm_hold *h = &m->holds[hold_slot];

	state_agent_write_begin(a);
	a->wallet.held += req->estimate;
	a->open_holds++;
	shm_agent_write_end(a);
	if (o->wallet.limited) {
		state_org_write_begin(o);
		o->wallet.held += req->estimate;
		shm_org_write_end(o);
	}
	if (rule_slot != SHM_NONE) {
		struct shm_rule *r = &m->rules[rule_slot];

		shm_write_begin(&r->rec.seq);
		r->held += req->estimate;
		state_window_add(&r->rate, now);
		shm_write_end(&r->rec.seq);
	}
	if (task_slot != SHM_NONE) {
		struct shm_task *t = &m->tasks[task_slot];

		shm_write_begin(&t->rec.seq);
		t->held += req->estimate;
		t->open_holds++;
		shm_write_end(&t->rec.seq);
	}
	shm_write_begin(&h->rec.seq);
	h->rec.used = 1;
	h->txn_id = txn_id;
	h->agent_id = a->id;
	h->agent_slot = agent_slot;
	h->org_slot = a->org_slot;
	h->rule_slot = rule_slot;
	h->rule_id = rule_slot != SHM_NONE ? m->rules[rule_slot].id : 0;
	h->org_limited = o->wallet.limited;
	h->task_slot = task_slot;
	h->task_uid = task_slot != SHM_NONE ? m->tasks[task_slot].uid : 0;
	h->amount = req->estimate;
	h->created_at = now;
	h->expires_at = sc_add_sat(now, state_config(st)->set.hold_ttl_us);
	shm_write_end(&h->rec.seq);
	state_hold_link(st, hold_slot);
}

/* The holds of this estimate must fit in 64 bits everywhere they go. */
static int holds_fit(const struct shm *m, const struct shm_agent *a, uint32_t rule_slot,
                     uint32_t task_slot, int64_t est, char *err, size_t errlen)
{
	int64_t unused;

	if (__builtin_add_overflow(a->wallet.held, est, &unused) ||
	    __builtin_add_overflow(m->orgs[a->org_slot].wallet.held, est, &unused) ||
	    (rule_slot != SHM_NONE && __builtin_add_overflow(m->rules[rule_slot].held, est, &unused)) ||
	    (task_slot != SHM_NONE && __builtin_add_overflow(m->tasks[task_slot].held, est, &unused))) {
		sc_errorf(err, errlen, "estimated_cost: holding it would overflow the held total");
		return SC_ERANGE;
	}
	return 0;
}

/* Step 8: the task's usage cap. */
static int task_limit(struct state *st, const struct shm_task *t, int64_t est, struct verdict *v)
{
	int64_t cap = state_config(st)->set.task_max_usage;

	return cap > 0 && est > cap - sc_add_sat(t->used, t->held) && refuse(v, "task:max_usage");
}

/* Counts a decision on the agent and the header, with its events. */
static void note_check(struct state *st, struct shm_agent *a, struct shm_task *task,
                       const struct gate_decision *d, int anomaly, int64_t ratio, int64_t now)
{
	char reason[SC_REASON_MAX + 1];

	if (task) {
		shm_write_begin(&task->rec.seq);
		task->checks++;
		task->last_at = now;
		shm_write_end(&task->rec.seq);
	}

	state_agent_write_begin(a);
	a->checks++;
	a->blocked += !d->allowed;
	a->anomalies += anomaly != GATE_RISK_LOW;
	shm_agent_write_end(a);
	count(st, C_CHECKS);
	count(st, d->allowed ? C_ALLOWED : C_BLOCKED);
	if (!d->allowed && gate_risk_reason(d->block_reason))
		count(st, C_RISK_BLOCKED);
	if (anomaly != GATE_RISK_LOW) {
		count(st, C_ANOMALIES);
		snprintf(reason, sizeof(reason), "transaction %llu: %lldx the average cost",
		         (unsigned long long)d->txn_id, (long long)ratio);
		state_event_add(st, a, SHM_EVENT_ANOMALY, -1, -1, reason, now);
	}
	if (d->n_warnings) {
		size_t n = (size_t)snprintf(reason, sizeof(reason), "transaction %llu:",
		                            (unsigned long long)d->txn_id);

		for (unsigned i = 0; i < d->n_warnings && n < sizeof(reason); i++)
			n += (size_t)snprintf(reason + n, sizeof(reason) - n, " %s", d->warnings[i]);
		state_event_add(st, a, SHM_EVENT_CRITICAL, -1, -1, reason, now);
		log_warn("critical agent %llu allowed past %u limit(s), first %s (transaction %llu)",
		         (unsigned long long)a->id, d->n_warnings, d->warnings[0],
		         (unsigned long long)d->txn_id);
	}
}

int gate_check(struct state *st, const struct gate_check_req *req, int64_t now,
               struct gate_decision *out, char *err, size_t errlen)
{
	struct shm *m = state_shm(st);
	struct verdict v = {.n = 0, .stop_at_first = 1};
	struct shm_agent *a;
	const struct shm_org *o;
	const struct shm_rule *r;
	uint32_t agent_slot, rule_slot, hold_slot = SHM_NONE, task_slot = SHM_NONE;
	struct shm_task *task = NULL;
	struct shm_key seen;
	int anomaly = GATE_RISK_LOW, new_task = 0, rc;
	int64_t ratio = 0;

	memset(out, 0, sizeof(*out));
	gate_roll(st, now);
	if ((rc = validate_check(req, err, errlen)) != 0)
		return rc;
	if (state_agent_by_id(st, req->agent_id, &agent_slot) != 0) {
		strcpy(out->block_reason, "agent_not_found");
		count(st, C_CHECKS);
		count(st, C_BLOCKED);
		return 0;
	}
	a = &m->agents[agent_slot];
	o = &m->orgs[a->org_slot];
	state_seal_verify(a, o);
	if (req->key.len && state_key_find(st, agent_slot, req->key, &seen) == 0)
		return replay(req, &seen, a, out, err, errlen);

	rule_slot = state_rule_match(st, agent_slot, req->action.p, req->action.len);
	r = rule_slot != SHM_NONE ? &m->rules[rule_slot] : NULL;
	if (a->priority == SC_PRIORITY_CRITICAL)
		v.stop_at_first = 0;
	if (req->task.len && (task_slot = state_task_find(st, o->id, req->task)) == SHM_NONE)
		new_task = 1;
	/* Capacity and overflow are settled before anything changes (a top-up included). */
	if ((rc = holds_fit(m, a, rule_slot, task_slot, req->estimate, err, errlen)) != 0)
		return rc;
	if (new_task && (rc = state_task_reserve(st, &task_slot)) != 0) {
		sc_errorf(err, errlen, "task capacity (%u) reached: every task has open holds",
		          m->hdr->task_cap);
		return rc;
	}
	if ((rc = state_hold_alloc(st, &hold_slot)) != 0) {
		sc_errorf(err, errlen, "hold capacity (%u) reached: too many open holds",
		          m->hdr->hold_cap);
		return rc;
	}

	shm_change_begin(m);
	if (new_task)
		state_task_create(st, task_slot, o->id, req->task, now);
	if (task_slot != SHM_NONE)
		task = &m->tasks[task_slot];
	if (a->status == SC_STATUS_FROZEN) {
		refuse(&v, "agent_frozen");
		v.stop_at_first = 1;
	} else if (a->priority != SC_PRIORITY_CRITICAL && a->wallet.debt > 0) {
		refuse(&v, "wallet_debt");
	} else if (a->priority != SC_PRIORITY_CRITICAL && o->wallet.limited && o->wallet.debt > 0) {
		refuse(&v, "org_debt");
	} else if (!hold_quota(st, a, &v) &&
	           !(o->wallet.limited &&
	             wallet_limits(&o->wallet, "org", "org_empty", NULL, req->estimate, o->cal.day,
	                           gate_org_available(o, a), &v))) {
		maybe_top_up(st, a, now);
		/* steps 6 to 9: wallet, most specific rule, task, score */
		if (!wallet_limits(&a->wallet, "wallet", "wallet_empty", "insufficient_funds",
		                   req->estimate, o->cal.day, state_wallet_available(&a->wallet), &v) &&
		    !(r && rule_limits(a, r, m->texts[r->name].s, req->estimate, o->cal.day, now, &v)) &&
		    !(task && task_limit(st, task, req->estimate, &v)) && a->score < GATE_SCORE_BLOCK)
			refuse(&v, "score_too_low");
	}

	out->allowed = v.n == 0 || !v.stop_at_first;
	if (out->allowed) {
		for (unsigned i = 0; i < v.n; i++)
			memcpy(out->warnings[i], v.reason[i], sizeof(out->warnings[i]));
		out->n_warnings = v.n;
		anomaly = gate_anomaly(a, req->estimate, &ratio); /* step 10 */
		out->risk = v.n ? GATE_RISK_HIGH : anomaly;
	} else {
		state_hold_release(st, hold_slot);
		memcpy(out->block_reason, v.reason[0], sizeof(out->block_reason));
	}
	out->txn_id = record(st, req, a, r, out, now)->id;
	if (out->allowed)
		place_holds(st, agent_slot, rule_slot, task_slot, hold_slot, req, out->txn_id, now);
	note_check(st, a, task, out, anomaly, ratio, now);
	gate_carve_sync(st, a);
	alerts_evaluate(st, &(struct alerts_change){{agent_slot, 0}, out->allowed ? out->txn_id : 0,
	                                            out->allowed, anomaly, ratio}, now);
	shm_change_end(m);
	out->available = state_wallet_available(&a->wallet);
	return 0;
}

/* --------------------------------------------------------------- settle */

/* Releases a hold of amount and charges charge; the rest of a charge past the balance is debt. */
static void wallet_settle(struct shm_wallet *w, const struct shm_calendar *cal, int64_t amount,
                          int64_t charge)
{
	w->held -= amount;
	gate_spend_add(w, cal, charge);
	if (charge <= w->balance) {
		w->balance -= charge;
	} else {
		w->debt = sc_add_sat(w->debt, charge - w->balance);
		w->balance = 0;
	}
}

static int charge_fits(const struct shm_wallet *w, int64_t charge)
{
	int64_t unused;

	return !__builtin_add_overflow(w->daily_spent, charge, &unused) &&
	       (charge <= w->balance || !__builtin_add_overflow(w->debt, charge - w->balance, &unused));
}

/* pc: the pricing of a report from token counts, recorded with it; NULL otherwise. */
static void settle(struct state *st, uint32_t hold_slot, int64_t charge, enum sc_txn_status status,
                   enum sc_outcome outcome, const struct pricing_charge *pc, int64_t now)
{
	struct shm *m = state_shm(st);
	struct shm_hold *h = &m->holds[hold_slot];
	struct shm_agent *a = &m->agents[h->agent_slot];
	struct shm_org *o = &m->orgs[h->org_slot];
	struct shm_txn *t = state_txn_by_id(st, h->txn_id);

	SC_ASSERT(a->rec.used && a->id == h->agent_id);
	state_agent_write_begin(a);
	wallet_settle(&a->wallet, &o->cal, h->amount, charge);
	a->open_holds--;
	if (status == SC_TXN_SETTLED) {
		a->settled++;
		a->failures += outcome == SC_OUTCOME_FAILURE;
		a->overruns += charge > h->amount;
		a->charged_total = sc_add_sat(a->charged_total, charge);
	} else {
		a->expired++;
	}
	shm_agent_write_end(a);
	gate_rescore(st, a, now);
	if (h->org_limited) {
		state_org_write_begin(o);
		wallet_settle(&o->wallet, &o->cal, h->amount, charge);
		shm_org_write_end(o);
	}
	if (h->rule_slot != SHM_NONE && m->rules[h->rule_slot].rec.used &&
	    m->rules[h->rule_slot].id == h->rule_id) {
		struct shm_rule *r = &m->rules[h->rule_slot];

		shm_write_begin(&r->rec.seq);
		r->held -= h->amount;
		if (r->day != o->cal.day) {
			r->day = o->cal.day;
			r->daily_spent = 0;
		}
		r->daily_spent = sc_add_sat(r->daily_spent, charge);
		shm_write_end(&r->rec.seq);
	}
	if (h->task_slot != SHM_NONE && m->tasks[h->task_slot].rec.used &&
	    m->tasks[h->task_slot].uid == h->task_uid) {
		struct shm_task *task = &m->tasks[h->task_slot];

		shm_write_begin(&task->rec.seq);
		task->held -= h->amount;
		task->open_holds--;
		task->used = sc_add_sat(task->used, charge);
		task->last_at = now;
		shm_write_end(&task->rec.seq);
	}
	if (t) {
		shm_write_begin(&t->rec.seq);
		t->status = (uint8_t)status;
		t->outcome = (uint8_t)outcome;
		t->has_outcome = status == SC_TXN_SETTLED;
		t->charged = charge;
		t->balance_after = a->wallet.balance;
		t->settled_at = now;
		if (pc) {
			memcpy(t->model, pc->model, sizeof(t->model));
			t->rate_version = pc->rate_version;
			memcpy(t->tokens, pc->tokens, sizeof(t->tokens));
		}
		shm_write_end(&t->rec.seq);
	}
	alerts_evaluate(st, &(struct alerts_change){.wallet = {h->agent_slot, 0}, .txn_id = h->txn_id},
	                now);
	state_hold_free(st, hold_slot);
	gate_carve_sync(st, a);
	count(st, status == SC_TXN_SETTLED ? C_REPORTS : C_EXPIRED);
}

static void fill_settlement(const struct shm_agent *a, uint64_t txn_id, enum sc_outcome outcome,
                            int64_t charged, int replayed, struct gate_settlement *out)
{
	out->txn_id = txn_id;
	out->outcome = outcome;
	out->charged = charged;
	out->balance = a->wallet.balance;
	out->debt = a->wallet.debt;
	out->replayed = replayed;
}

static int64_t default_charge(enum sc_outcome outcome, int has_actual, int64_t actual,
                              int64_t estimate)
{
	if (has_actual)
		return actual;
	return outcome == SC_OUTCOME_SUCCESS ? estimate : 0;
}

/* What a report asks to charge: actual_cost, or tokens of a model (model.len > 0). */
struct report_cost {
	int has_actual;
	int64_t actual;
	struct state_str model;
	const uint64_t *tokens;
};

/* The charge of a report on a hold placed at created_at; priced reports fill pc. */
static int report_charge(struct state *st, enum sc_outcome outcome, const struct report_cost *rc,
                         int64_t estimate, int64_t created_at, struct pricing_charge *pc,
                         int64_t *charge, char *err, size_t errlen)
{
	int e;

	memset(pc, 0, sizeof(*pc));
	if (rc->model.len == 0) {
		*charge = default_charge(outcome, rc->has_actual, rc->actual, estimate);
		return 0;
	}
	e = pricing_price(st, rc->model, rc->tokens, created_at, pc, err, errlen);
	if (e == 0)
		*charge = pc->cost;
	return e;
}

/* A report of a transaction that has no open hold. */
static int report_closed(struct state *st, uint64_t txn_id, enum sc_outcome outcome,
                         const struct report_cost *cost, struct gate_settlement *out, char *err,
                         size_t errlen)
{
	struct shm *m = state_shm(st);
	const struct shm_txn *t = state_txn_by_id(st, txn_id);
	struct pricing_charge pc;
	uint32_t agent_slot;
	int64_t charge;
	int rc;

	if (!t) {
		sc_errorf(err, errlen, "transaction_id: no open or recent transaction %llu",
		     (unsigned long long)txn_id);
		return SC_ENOTFOUND;
	}
	/* a transfer, adjustment, carve, refill or top-up moved money without a hold */
	if (sc_names_find(&check_types, t->type, strlen(t->type)) < 0) {
		sc_errorf(err, errlen, "transaction_id: transaction %llu is a %s, not a check; only "
		          "a check's transaction can be reported", (unsigned long long)txn_id, t->type);
		return SC_EINVAL;
	}
	if (t->status == SC_TXN_BLOCKED) {
		sc_errorf(err, errlen, "transaction_id: transaction %llu was blocked; there is nothing to report",
		     (unsigned long long)txn_id);
		return SC_EINVAL;
	}
	if (t->status == SC_TXN_EXPIRED) {
		sc_errorf(err, errlen, "transaction_id: the hold of transaction %llu expired and was settled",
		     (unsigned long long)txn_id);
		return SC_EINVAL;
	}
	if (t->status != SC_TXN_SETTLED) {
		sc_errorf(err, errlen, "transaction %llu has no hold and no settlement",
		     (unsigned long long)txn_id);
		return SC_EINTERNAL;
	}
	/* the settlement stands, but the reply's wallet figures have no agent to come from */
	if (state_agent_by_id(st, t->agent_id, &agent_slot) != 0) {
		sc_errorf(err, errlen,
		     "transaction_id: transaction %llu was settled as %s with %lld micros, and its "
		     "agent %llu has since been deleted",
		     (unsigned long long)txn_id, sc_outcome_name(t->outcome), (long long)t->charged,
		     (unsigned long long)t->agent_id);
		return SC_ENOTFOUND;
	}
	if ((rc = report_charge(st, outcome, cost, t->estimate, t->created_at, &pc, &charge, err,
	                        errlen)) != 0)
		return rc;
	if (t->outcome != outcome || t->charged != charge || strcmp(t->model, pc.model) != 0) {
		sc_errorf(err, errlen,
		     "transaction_id: transaction %llu was already settled as %s with %lld micros",
		     (unsigned long long)txn_id, sc_outcome_name(t->outcome), (long long)t->charged);
		return SC_EEXISTS;
	}
	fill_settlement(&m->agents[agent_slot], txn_id, outcome, t->charged, 1, out);
	memcpy(out->model, t->model, sizeof(out->model));
	out->rate_version = t->rate_version;
	return 0;
}

static int report(struct state *st, uint64_t txn_id, enum sc_outcome outcome,
                  const struct report_cost *cost, int64_t now, struct gate_settlement *out,
                  char *err, size_t errlen)
{
	struct shm *m = state_shm(st);
	const struct shm_hold *h;
	const struct shm_agent *a;
	struct pricing_charge pc;
	uint32_t hold_slot;
	int64_t charge;
	int has_actual = cost->has_actual, rc;
	int64_t actual = cost->actual;

	memset(out, 0, sizeof(*out));
	gate_roll(st, now);
	if ((unsigned)outcome > SC_OUTCOME_PARTIAL) {
		sc_errorf(err, errlen, "outcome: must be success, failure or partial");
		return SC_EINVAL;
	}
	if (has_actual && actual < 0) {
		sc_errorf(err, errlen, "actual_cost: must not be negative");
		return SC_EINVAL;
	}
	if (outcome == SC_OUTCOME_PARTIAL && !has_actual && cost->model.len == 0) {
		sc_errorf(err, errlen, "actual_cost: required when the outcome is partial");
		return SC_EINVAL;
	}
	if (state_hold_by_txn(st, txn_id, &hold_slot) != 0)
		return report_closed(st, txn_id, outcome, cost, out, err, errlen);
	h = &m->holds[hold_slot];
	a = &m->agents[h->agent_slot];
	/* A priced report uses the rate in force when the check placed the hold. */
	if ((rc = report_charge(st, outcome, cost, h->amount, h->created_at, &pc, &charge, err,
	                        errlen)) != 0)
		return rc;
	if (!charge_fits(&a->wallet, charge) ||
	    (h->org_limited && !charge_fits(&m->orgs[h->org_slot].wallet, charge))) {
		sc_errorf(err, errlen, "actual_cost: charging %lld micros would overflow the wallet's totals",
		     (long long)charge);
		return SC_ERANGE;
	}
	shm_change_begin(m);
	settle(st, hold_slot, charge, SC_TXN_SETTLED, outcome, cost->model.len ? &pc : NULL, now);
	shm_change_end(m);
	fill_settlement(a, txn_id, outcome, charge, 0, out);
	memcpy(out->model, pc.model, sizeof(out->model));
	out->rate_version = pc.rate_version;
	return 0;
}

int gate_report(struct state *st, uint64_t txn_id, enum sc_outcome outcome, int has_actual,
                int64_t actual, int64_t now, struct gate_settlement *out, char *err,
                size_t errlen)
{
	const struct report_cost cost = {has_actual, actual, {"", 0}, NULL};

	return report(st, txn_id, outcome, &cost, now, out, err, errlen);
}

int gate_report_tokens(struct state *st, uint64_t txn_id, enum sc_outcome outcome,
                       struct state_str model, const uint64_t tokens[3], int64_t now,
                       struct gate_settlement *out, char *err, size_t errlen)
{
	const struct report_cost cost = {0, 0, model, tokens};

	if (model.len == 0) {
		sc_errorf(err, errlen, "model: must be 1 to %d printable characters without spaces or '*'",
		          SC_NAME_MAX);
		return SC_EINVAL;
	}
	return report(st, txn_id, outcome, &cost, now, out, err, errlen);
}

unsigned gate_expire(struct state *st, int64_t now)
{
	struct shm *m = state_shm(st);
	int charges = state_config(st)->set.expiry_charges;
	unsigned n = 0;
	uint32_t slot;

	gate_roll(st, now);
	while ((slot = state_hold_oldest(st)) != SHM_NONE && m->holds[slot].expires_at <= now) {
		const struct shm_hold *h = &m->holds[slot];

		log_debug("hold of transaction %llu expired", (unsigned long long)h->txn_id);
		shm_change_begin(m);
		settle(st, slot, charges ? h->amount : 0, SC_TXN_EXPIRED, SC_OUTCOME_FAILURE, NULL, now);
		shm_change_end(m);
		n++;
	}
	return n;
}

/* ------------------------------------------------ transfers, adjustments */

/*
 * The wallet of an agent or an org, its record's seqlock, the ids a
 * transaction names, and the calendar of the org it counts in.
 */
struct owner {
	struct shm_wallet *w;
	uint32_t *seq;
	uint64_t agent_id, org_id;
	const struct shm_calendar *cal;
};

static struct owner owner_of(struct state *st, const struct gate_wallet_ref *ref)
{
	struct shm *m = state_shm(st);

	if (ref->org) {
		struct shm_org *o = &m->orgs[ref->slot];

		return (struct owner){&o->wallet, &o->rec.seq, 0, o->id, &o->cal};
	}
	struct shm_agent *a = &m->agents[ref->slot];

	return (struct owner){&a->wallet, &a->rec.seq, a->id, a->org_id, &m->orgs[a->org_slot].cal};
}

void gate_wallet_period(struct state *st, const struct gate_wallet_ref *ref, int period)
{
	struct owner o = owner_of(st, ref);

	state_wallet_write_begin(o.seq, o.agent_id == 0);
	o.w->period = (uint8_t)period;
	o.w->period_key = gate_period_key(o.w, o.cal);
	shm_wallet_write_end(o.seq, o.agent_id == 0);
}

/* What a transfer may take: an org's available funds exclude its agents' sub-budgets. */
static int64_t source_available(struct state *st, const struct gate_wallet_ref *ref)
{
	struct owner o = owner_of(st, ref);
	int64_t a = state_wallet_available(o.w);

	return ref->org ? sc_add_sat(a, -o.w->reserving) : a;
}

/* A sub-budget follows its agent's available funds. */
static void sync_owner(struct state *st, const struct gate_wallet_ref *ref)
{
	if (!ref->org)
		gate_carve_sync(st, &state_shm(st)->agents[ref->slot]);
}

int gate_transfer(struct state *st, const struct gate_wallet_ref *from,
                  const struct gate_wallet_ref *to, int64_t amount, const uint8_t *meta,
                  size_t meta_len, int64_t now, uint64_t ids[2], char *err, size_t errlen)
{
	struct owner src = owner_of(st, from), dst = owner_of(st, to);
	struct shm *m = state_shm(st);
	int64_t balance;

	gate_roll(st, now);
	if (amount <= 0) {
		sc_errorf(err, errlen, "amount: must be more than 0");
		return SC_EINVAL;
	}
	if (src.org_id != dst.org_id) {
		sc_errorf(err, errlen, "a transfer stays within one org (%llu is not %llu)",
		          (unsigned long long)src.org_id, (unsigned long long)dst.org_id);
		return SC_EINVAL;
	}
	if (src.w == dst.w) {
		sc_errorf(err, errlen, "the source and the destination are the same wallet");
		return SC_EINVAL;
	}
	if (amount > source_available(st, from)) {
		sc_errorf(err, errlen,
		          "amount: %lld exceeds the source's available funds (%lld%s)",
		          (long long)amount, (long long)source_available(st, from),
		          from->org ? ", not counting sub-budgets" : "");
		return SC_EINVAL;
	}
	if (__builtin_add_overflow(dst.w->balance, amount, &balance)) {
		sc_errorf(err, errlen, "amount: the destination's balance would overflow");
		return SC_ERANGE;
	}
	shm_change_begin(m);
	state_wallet_write_begin(src.seq, src.agent_id == 0);
	src.w->balance -= amount;
	shm_wallet_write_end(src.seq, src.agent_id == 0);
	state_wallet_write_begin(dst.seq, dst.agent_id == 0);
	dst.w->balance = balance;
	dst.w->limited = 1;
	shm_wallet_write_end(dst.seq, dst.agent_id == 0);
	ids[0] = gate_wallet_txn(st, src.agent_id, src.org_id, "wallet.transfer", "transfer", amount,
	                    amount, src.w->balance, meta, meta_len, now);
	ids[1] = gate_wallet_txn(st, dst.agent_id, dst.org_id, "wallet.transfer", "transfer", amount,
	                    -amount, balance, meta, meta_len, now);
	sync_owner(st, from);
	sync_owner(st, to);
	alerts_evaluate(st, &(struct alerts_change){.wallet = *from, .txn_id = ids[0]}, now);
	alerts_evaluate(st, &(struct alerts_change){.wallet = *to, .txn_id = ids[1]}, now);
	shm_change_end(m);
	return 0;
}

int gate_adjust(struct state *st, const struct gate_wallet_ref *ref, int64_t amount,
                const uint8_t *meta, size_t meta_len, int64_t now, uint64_t *txn_id, char *err,
                size_t errlen)
{
	struct owner o = owner_of(st, ref);
	struct shm *m = state_shm(st);
	int64_t balance;

	gate_roll(st, now);
	if (amount == 0 || amount == INT64_MIN) {
		sc_errorf(err, errlen, "amount: must be a non-zero number of micro-dollars");
		return SC_EINVAL;
	}
	if (__builtin_add_overflow(o.w->balance, amount, &balance)) {
		sc_errorf(err, errlen, "amount: the balance would overflow");
		return SC_ERANGE;
	}
	if (balance < 0) {
		sc_errorf(err, errlen, "amount: a debit of %lld exceeds the balance (%lld)",
		          (long long)-amount, (long long)o.w->balance);
		return SC_EINVAL;
	}
	shm_change_begin(m);
	state_wallet_write_begin(o.seq, o.agent_id == 0);
	o.w->balance = balance;
	o.w->limited = 1;
	shm_wallet_write_end(o.seq, o.agent_id == 0);
	*txn_id = gate_wallet_txn(st, o.agent_id, o.org_id, "wallet.adjust", "adjustment",
	                     amount < 0 ? -amount : amount, -amount, balance, meta, meta_len, now);
	sync_owner(st, ref);
	alerts_evaluate(st, &(struct alerts_change){.wallet = *ref, .txn_id = *txn_id}, now);
	shm_change_end(m);
	return 0;
}

int64_t gate_next_expiry(struct state *st)
{
	uint32_t slot = state_hold_oldest(st);

	return slot == SHM_NONE ? INT64_MAX : state_shm(st)->holds[slot].expires_at;
}
