/*
 * dispatch_view.c: the read-only methods that look across the state:
 * score, events, task usage, transaction listings and summaries, top
 * spenders, fleet and stats (PROTOCOL.md). They change nothing and write no
 * ledger record.
 *
 * Threads: the loop thread, through dispatch_request.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "common.h"
#include "call.h"
#include "dispatch_methods.h"
#include "gate.h"
#include "ledger_writer.h"

int m_score(struct call *c)
{
	const struct shm_agent *a;
	msgpack_packer *pk;
	uint32_t slot;
	int rc;

	if ((rc = call_agent_arg(c, &slot)))
		return rc;
	a = &c->m->agents[slot];
	pk = call_ok(c);
	call_map(c, 4);
	proto_pack_key_u64(pk, "agent_id", a->id);
	proto_pack_key_i64(pk, "score", a->score);
	proto_pack_key_str(pk, "status", sc_status_name(a->status));
	proto_pack_cstr(pk, "factors");
	call_map(c, 9);
	proto_pack_key_u64(pk, "checks", a->checks);
	proto_pack_key_u64(pk, "blocked", a->blocked);
	proto_pack_key_u64(pk, "settled", a->settled);
	proto_pack_key_u64(pk, "failures", a->failures);
	proto_pack_key_u64(pk, "overruns", a->overruns);
	proto_pack_key_u64(pk, "expired", a->expired);
	proto_pack_key_u64(pk, "anomalies", a->anomalies);
	proto_pack_key_i64(pk, "average_cost",
	                   a->settled ? a->charged_total / (int64_t)a->settled : 0);
	proto_pack_key_i64(pk, "age_s", (c->now - a->created_at) / 1000000);
	return 0;
}

static void pack_event(struct call *c, const struct shm_event *e)
{
	int status_change = e->type == SHM_EVENT_STATUS;
	msgpack_packer *pk = c->pk;

	call_map(c, 8);
	proto_pack_key_u64(pk, "id", e->id);
	proto_pack_key_u64(pk, "agent_id", e->agent_id);
	proto_pack_key_str(pk, "type", sc_event_type_name((enum sc_event_type)(e->type - SHM_EVENT_STATUS)));
	proto_pack_key_i64(pk, "time", e->time);
	proto_pack_key_i64(pk, "score", e->score);
	proto_pack_key_str(pk, "from", status_change ? sc_status_name(e->from) : NULL);
	proto_pack_key_str(pk, "to", status_change ? sc_status_name(e->to) : NULL);
	proto_pack_key_str(pk, "reason", e->reason);
}

static const void *event_get(struct state *st, uint64_t id)
{
	return state_event_by_id(st, id);
}

static int event_keep(const void *rec, const struct ring_filter *f)
{
	return ((const struct shm_event *)rec)->agent_id == f->agent_id;
}

static void event_pack(struct call *c, const void *rec)
{
	pack_event(c, rec);
}

int m_agents_events(struct call *c)
{
	const struct shm_header *h = c->m->hdr;
	const struct ring r = {h->next_event_id, h->event_cap, event_get, event_keep, event_pack};
	struct ring_filter f = RING_FILTER_ANY;
	int64_t limit = 50;
	uint32_t slot;
	int rc;

	if ((rc = call_agent_arg(c, &slot)) || (rc = proto_arg_int(c->a, "limit", 0, 1, 1000, &limit, NULL)))
		return rc;
	f.agent_id = c->m->agents[slot].id;
	return list_ring(c, &r, &f, limit);
}

static int txn_keep(const struct shm_txn *t, const struct ring_filter *f)
{
	return (!f->agent_id || t->agent_id == f->agent_id) && (!f->org_id || t->org_id == f->org_id) &&
	       (f->status < 0 || t->status == f->status) && (f->risk < 0 || t->risk == f->risk) &&
	       t->created_at >= f->since && t->created_at < f->until;
}

/* The filters transactions.list, .summary and agents.top share. */
static int txn_filter_args(struct call *c, struct ring_filter *f)
{
	int present, rc;

	if ((rc = proto_arg_u64(c->a, "agent_id", 0, &f->agent_id, &present)) ||
	    (rc = proto_arg_u64(c->a, "org_id", 0, &f->org_id, &present)) ||
	    (rc = proto_arg_int(c->a, "since", 0, 0, INT64_MAX, &f->since, &present)) ||
	    (rc = proto_arg_int(c->a, "until", 0, 0, INT64_MAX, &f->until, &present)))
		return rc;
	return 0;
}

int m_tasks_usage(struct call *c)
{
	const struct shm_task *t;
	struct state_str id;
	msgpack_packer *pk;
	uint32_t slot;
	unsigned orgs;
	int64_t org_id;
	int has_org, rc;

	if ((rc = call_arg_str(c, c->a, "task_id", 1, SC_KEY_MAX, &id, NULL)) ||
	    (rc = proto_arg_int(c->a, "org_id", 0, 1, INT64_MAX, &org_id, &has_org)))
		return rc;
	if (has_org) {
		if ((slot = state_task_find(c->st, (uint64_t)org_id, id)) == SHM_NONE)
			return call_fail(c, SC_ENOTFOUND, "task_id: org %lld has no task '%.*s'",
			                 (long long)org_id, (int)id.len, id.p);
	} else if ((orgs = state_task_orgs(c->st, id, &slot)) == 0) {
		return call_fail(c, SC_ENOTFOUND, "task_id: no task '%.*s'", (int)id.len, id.p);
	} else if (orgs > 1) {
		return call_fail(c, SC_EINVAL,
		                 "org_id: required, %u orgs have a task '%.*s' (tasks belong to an org)",
		                 orgs, (int)id.len, id.p);
	}
	t = &c->m->tasks[slot];
	pk = call_ok(c);
	call_map(c, 9);
	proto_pack_key_str(pk, "task_id", t->id);
	proto_pack_key_u64(pk, "org_id", t->org_id);
	proto_pack_key_i64(pk, "usage", t->used);
	proto_pack_key_i64(pk, "held", t->held);
	proto_pack_key_i64(pk, "max_usage", state_config(c->st)->set.task_max_usage);
	proto_pack_key_u64(pk, "checks", t->checks);
	proto_pack_key_u64(pk, "open_holds", t->open_holds);
	proto_pack_key_i64(pk, "created_at", t->created_at);
	proto_pack_key_i64(pk, "last_at", t->last_at);
	return 0;
}

/*
 * Calls visit for every transaction still in the history that f keeps
 * (below f->before if set), newest first, until visit returns 0. A live
 * agent's are walked through its own chain (state_txn_newest): the cost is
 * that agent's history, not everyone's.
 */
static void each_txn(struct call *c, const struct ring_filter *f,
                     int (*visit)(void *arg, const struct shm_txn *t), void *arg)
{
	const struct shm_header *h = c->m->hdr;
	uint64_t start = f->before && f->before < h->next_txn_id ? f->before : h->next_txn_id;
	uint32_t a;

	if (f->agent_id && state_agent_by_id(c->st, f->agent_id, &a) == 0) {
		for (uint32_t s = state_txn_newest(c->st, a); s != SHM_NONE;
		     s = state_txn_older(c->st, s)) {
			const struct shm_txn *t = &c->m->txns[s];

			if (t->id < start && txn_keep(t, f) && !visit(arg, t))
				return;
		}
		return;
	}
	for (uint64_t id = start - 1; id > 0 && h->next_txn_id - id <= h->txn_cap; id--) {
		const struct shm_txn *t = state_txn_by_id(c->st, id);

		if (t && txn_keep(t, f) && !visit(arg, t))
			return;
	}
}

struct page {
	const struct shm_txn **found;
	size_t n, limit;
};

static int add_to_page(void *arg, const struct shm_txn *t)
{
	struct page *p = arg;

	p->found[p->n++] = t;
	return p->n < p->limit;
}

int m_transactions_list(struct call *c)
{
	struct ring_filter f = RING_FILTER_ANY;
	struct page p = { 0 };
	int64_t limit = 50;
	int present, rc;

	if ((rc = txn_filter_args(c, &f)) ||
	    (rc = call_enum_arg(c, c->a, "status", &sc_txn_status_names, &f.status, &present)) ||
	    (rc = call_enum_arg(c, c->a, "risk_level", &sc_risk_names, &f.risk, &present)) ||
	    (rc = proto_arg_u64(c->a, "before", 0, &f.before, &present)) ||
	    (rc = proto_arg_int(c->a, "limit", 0, 1, 1000, &limit, NULL)))
		return rc;
	p.limit = (size_t)limit;
	if (!(p.found = malloc(p.limit * sizeof(*p.found))))
		return call_fail(c, SC_EINTERNAL, "out of memory");
	each_txn(c, &f, add_to_page, &p);
	call_ok(c);
	msgpack_pack_array(c->pk, p.n);
	for (size_t i = 0; i < p.n; i++)
		pack_txn(c, p.found[i]);
	free(p.found);
	return 0;
}

struct summary {
	uint64_t by_status[SC_TXN_EXPIRED + 1];
	int64_t charged, estimated;
};

static int add_to_summary(void *arg, const struct shm_txn *t)
{
	struct summary *s = arg;

	if (t->status <= SC_TXN_EXPIRED)
		s->by_status[t->status]++;
	s->charged = sc_add_sat(s->charged, t->charged);
	s->estimated = sc_add_sat(s->estimated, t->estimate);
	return 1;
}

int m_transactions_summary(struct call *c)
{
	struct ring_filter f = RING_FILTER_ANY;
	struct summary s;
	msgpack_packer *pk;
	uint64_t total = 0;
	int rc;

	if ((rc = txn_filter_args(c, &f)))
		return rc;
	memset(&s, 0, sizeof(s));
	each_txn(c, &f, add_to_summary, &s);
	for (int i = 0; i <= SC_TXN_EXPIRED; i++)
		total += s.by_status[i];
	pk = call_ok(c);
	call_map(c, 7);
	proto_pack_key_u64(pk, "total", total);
	for (int i = 0; i <= SC_TXN_EXPIRED; i++)
		proto_pack_key_u64(pk, sc_txn_status_name((enum sc_txn_status)i), s.by_status[i]);
	proto_pack_key_i64(pk, "charged", s.charged);
	proto_pack_key_i64(pk, "estimated", s.estimated);
	return 0;
}

/* Spend per agent slot over a window, for agents.top. */
struct spend {
	struct call *c;
	int64_t *by_slot;
	uint64_t *count;
};

static int add_spend(void *arg, const struct shm_txn *t)
{
	struct spend *s = arg;
	uint32_t slot;

	if (t->charged > 0 && state_agent_by_id(s->c->st, t->agent_id, &slot) == 0) {
		s->by_slot[slot] = sc_add_sat(s->by_slot[slot], t->charged);
		s->count[slot]++;
	}
	return 1;
}

int m_agents_top(struct call *c)
{
	uint32_t cap = c->m->hdr->agent_cap;
	struct ring_filter f = RING_FILTER_ANY;
	struct spend s = {c, calloc(cap, sizeof(int64_t)), calloc(cap, sizeof(uint64_t))};
	uint32_t *order = calloc(cap, sizeof(uint32_t)), n = 0;
	uint64_t *txns = calloc(cap, sizeof(uint64_t));
	int64_t limit = 10;
	int present, rc = 0;

	if (!s.by_slot || !s.count || !order || !txns)
		rc = call_fail(c, SC_EINTERNAL, "out of memory");
	else if ((rc = proto_arg_u64(c->a, "org_id", 0, &f.org_id, &present)) == 0 &&
	         (rc = proto_arg_int(c->a, "since", 0, 0, INT64_MAX, &f.since, &present)) == 0 &&
	         (rc = proto_arg_int(c->a, "until", 0, 0, INT64_MAX, &f.until, &present)) == 0 &&
	         (rc = proto_arg_int(c->a, "limit", 0, 1, 100, &limit, NULL)) == 0) {
		each_txn(c, &f, add_spend, &s);
		/* selection of the largest, ties by lower slot: limit is small */
		for (; n < (uint32_t)limit; n++) {
			uint32_t best = SHM_NONE;

			for (uint32_t i = 0; i < cap; i++)
				if (s.count[i] && (best == SHM_NONE || s.by_slot[i] > s.by_slot[best]))
					best = i;
			if (best == SHM_NONE)
				break;
			order[n] = best;
			txns[n] = s.count[best];
			s.count[best] = 0; /* taken */
		}
		call_ok(c);
		msgpack_pack_array(c->pk, n);
		for (uint32_t i = 0; i < n; i++) {
			const struct shm_agent *a = &c->m->agents[order[i]];

			call_map(c, 4);
			proto_pack_key_u64(c->pk, "agent_id", a->id);
			proto_pack_key_str(c->pk, "name", a->name);
			proto_pack_key_i64(c->pk, "spend", s.by_slot[order[i]]);
			proto_pack_key_u64(c->pk, "transactions", txns[i]);
		}
	}
	free(txns);
	free(s.by_slot);
	free(s.count);
	free(order);
	return rc;
}

int m_fleet(struct call *c)
{
	const struct shm_header *h = c->m->hdr;
	uint64_t by_status[SC_STATUS_FROZEN + 1] = {0}, agents = 0;
	int64_t spend = 0, scores = 0;
	msgpack_packer *pk;

	for (uint32_t i = 0; i < h->agent_cap; i++) {
		const struct shm_agent *a = &c->m->agents[i];

		if (!a->rec.used)
			continue;
		agents++;
		by_status[a->status <= SC_STATUS_FROZEN ? a->status : SC_STATUS_ACTIVE]++;
		spend = sc_add_sat(spend, a->charged_total);
		scores += a->score;
	}
	pk = call_ok(c);
	call_map(c, 8);
	proto_pack_key_u64(pk, "total_agents", agents);
	proto_pack_key_u64(pk, "active_agents", by_status[SC_STATUS_ACTIVE]);
	proto_pack_key_u64(pk, "throttled_agents", by_status[SC_STATUS_THROTTLED]);
	proto_pack_key_u64(pk, "frozen_agents", by_status[SC_STATUS_FROZEN]);
	proto_pack_key_i64(pk, "total_spend", spend);
	proto_pack_key_u64(pk, "risk_events_blocked", h->risk_blocked);
	proto_pack_key_u64(pk, "anomalies", h->anomalies);
	proto_pack_key_i64(pk, "avg_credit_score", agents ? scores / (int64_t)agents : 0);
	return 0;
}

int m_stats(struct call *c)
{
	const struct shm_header *h = c->m->hdr;
	struct srv_stats ss;
	struct ledger_stats ls;
	struct state_counts sc;
	msgpack_packer *pk;
	const char *shm_path = state_config(c->st)->path;
	char abs_path[PATH_MAX];

	/* Absolute, so that a client in another directory can map it (sc_peek_open_client). */
	if (realpath(shm_path, abs_path) != NULL)
		shm_path = abs_path;
	memset(&ss, 0, sizeof(ss));
	if (c->d->srv)
		srv_get_stats(c->d->srv, &ss);
	state_counts(c->st, &sc);
	memset(&ls, 0, sizeof(ls));
	if (c->d->ledger)
		ledger_get_stats(c->d->ledger, &ls);
	pk = call_ok(c);
	call_map(c, 44);
	proto_pack_key_u64(pk, "ledger_last_seq", ls.last_seq);
	proto_pack_key_u64(pk, "ledger_durable_seq", ls.durable_seq);
	proto_pack_key_u64(pk, "ledger_syncs", ls.syncs);
	proto_pack_key_u64(pk, "ledger_records_synced", ls.records_synced);
	proto_pack_key_u64(pk, "ledger_failed", (uint64_t)ls.failed);
	proto_pack_key_u64(pk, "ledger_buffer_bytes", ls.buffer_bytes);
	proto_pack_key_u64(pk, "checkpoint_seq", c->d->checkpoint_seq);
	proto_pack_key_u64(pk, "checkpoint_failures", c->d->checkpoint_failures);
	proto_pack_key_i64(pk, "uptime_s", clock_uptime() / 1000000);
	proto_pack_key_u64(pk, "orgs", sc.orgs);
	proto_pack_key_u64(pk, "agents", sc.agents);
	proto_pack_key_u64(pk, "rules", sc.rules);
	proto_pack_key_u64(pk, "rule_texts", sc.texts);
	proto_pack_key_u64(pk, "holds_open", sc.holds);
	proto_pack_key_u64(pk, "checks", h->checks);
	proto_pack_key_u64(pk, "allowed", h->allowed);
	proto_pack_key_u64(pk, "blocked", h->blocked);
	proto_pack_key_u64(pk, "reports", h->reports);
	proto_pack_key_u64(pk, "expired", h->expired);
	proto_pack_key_u64(pk, "topups", h->topups);
	proto_pack_key_u64(pk, "anomalies", h->anomalies);
	proto_pack_key_u64(pk, "risk_blocked", h->risk_blocked);
	proto_pack_key_u64(pk, "connections_open", ss.connections_open);
	proto_pack_key_u64(pk, "connections_total", ss.connections_total);
	proto_pack_key_u64(pk, "requests", ss.requests);
	proto_pack_key_u64(pk, "protocol_errors", ss.protocol_errors);
	proto_pack_key_u64(pk, "rejected_connections", ss.rejected_connections);
	proto_pack_key_u64(pk, "read_pauses", ss.read_pauses);
	proto_pack_key_u64(pk, "outstanding_peak", ss.outstanding_peak);
	proto_pack_key_u64(pk, "capacity_orgs", h->org_cap);
	proto_pack_key_u64(pk, "capacity_agents", h->agent_cap);
	proto_pack_key_u64(pk, "capacity_rules", h->rule_cap);
	proto_pack_key_u64(pk, "capacity_holds", h->hold_cap);
	proto_pack_key_u64(pk, "capacity_history", h->txn_cap);
	proto_pack_key_u64(pk, "capacity_events", h->event_cap);
	proto_pack_key_u64(pk, "capacity_tasks", h->task_cap);
	proto_pack_key_u64(pk, "capacity_prices", h->price_cap);
	proto_pack_key_u64(pk, "capacity_alerts", h->alert_cap);
	proto_pack_key_u64(pk, "capacity_rule_texts", h->text_cap);
	proto_pack_key_u64(pk, "capacity_keys_per_agent", h->keys_per_agent);
	proto_pack_key_u64(pk, "max_holds_per_agent", h->max_holds_per_agent);
	proto_pack_key_u64(pk, "max_holds_per_org", h->max_holds_per_org);
	proto_pack_key_u64(pk, "alerts_dropped", ss.notifications_dropped);
	proto_pack_key_str(pk, "state_path", shm_path);
	return 0;
}

/* The hot methods first: lookup is a linear scan. */
