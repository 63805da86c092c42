/*
 * dispatch.c: the protocol's methods (PROTOCOL.md). Each method reads its
 * named arguments, calls the state or the gate, and only when everything
 * that can fail has succeeded packs nil (no error) and its result; on
 * failure it packs nothing and returns the code, and dispatch_request packs
 * the error map. So a response is never half an error.
 *
 * Threads: called by the server for each request on the thread serving the
 * connection, which may be any of several workers (registered with
 * liburcu). The method, its ledger record and the copy of its result into
 * the response all run under the commit lock (d->lock); the expiries, day
 * rolls and settings that the main loop applies take it too. So however
 * many threads serve connections, the state has one writer at a time and
 * the ledger holds the changes in exactly the order they were applied,
 * which is what replay relies on. What runs outside the lock, in parallel:
 * the socket reads and writes, the framing and msgpack decoding of the
 * request (server.c) and the method lookup.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alerts.h"
#include "clock.h"
#include "common.h"
#include "dispatch.h"
#include "gate.h"
#include "dispatch_int.h"
#include "ledger_writer.h"
#include "log.h"

int call_fail(struct call *c, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	va_end(ap);
	return code;
}

/* ------------------------------------------------------------- packing */

void call_map(struct call *c, size_t n)
{
	msgpack_pack_map(c->pk, n);
}

const struct shm_org *call_wallet_org(struct call *c, const struct gate_wallet_ref *ref)
{
	return &c->m->orgs[ref->org ? ref->slot : c->m->agents[ref->slot].org_slot];
}

const struct shm_wallet *call_wallet(struct call *c, const struct gate_wallet_ref *ref)
{
	return ref->org ? &c->m->orgs[ref->slot].wallet : &c->m->agents[ref->slot].wallet;
}

void pack_wallet(struct call *c, const struct gate_wallet_ref *ref)
{
	const struct shm_wallet *w = call_wallet(c, ref);
	const struct shm_calendar *cal = &call_wallet_org(c, ref)->cal;
	msgpack_packer *pk = c->pk;

	call_map(c, 12);
	proto_pack_key_i64(pk, "balance", w->balance);
	proto_pack_key_i64(pk, "held", w->held);
	proto_pack_key_i64(pk, "available", state_wallet_available(w));
	proto_pack_key_i64(pk, "budget", w->budget);
	proto_pack_key_i64(pk, "max_per_txn", w->max_per_txn);
	proto_pack_key_i64(pk, "daily_spend_limit", w->daily_limit);
	proto_pack_key_i64(pk, "daily_spent", gate_period_spent(w, cal, SHM_PERIOD_DAILY));
	proto_pack_key_i64(pk, "debt", w->debt);
	proto_pack_key_str(pk, "period", sc_period_name(w->period));
	proto_pack_key_i64(pk, "reserved", w->reserving);
	proto_pack_key_i64(pk, "low_balance", w->low_balance);
	if (ref->org)
		proto_pack_key_bool(pk, "limited", (int)w->limited);
	else
		proto_pack_key_bool(pk, "sub_budget", w->carved);
}

void pack_rule(struct call *c, const struct shm_rule *r, const struct shm_agent *a)
{
	msgpack_packer *pk = c->pk;

	call_map(c, 8);
	proto_pack_key_u64(pk, "id", r->id);
	proto_pack_key_str(pk, "name", c->m->texts[r->name].s);
	proto_pack_key_str(pk, "match", c->m->texts[r->match].s);
	proto_pack_key_i64(pk, "max_cost_per_txn", r->max_cost_per_txn);
	proto_pack_key_i64(pk, "daily_spend_limit", r->daily_limit);
	proto_pack_key_i64(pk, "hourly_rate_limit", r->hourly_limit);
	proto_pack_key_i64(pk, "daily_spent",
	                   r->day == c->m->orgs[a->org_slot].cal.day ? r->daily_spent : 0);
	proto_pack_key_i64(pk, "hourly_count", gate_rate_count(r, c->now));
}

/* The agent's rules, in creation order. */
static void pack_rules(struct call *c, uint32_t agent_slot)
{
	uint32_t slots[SC_RULES_MAX];
	unsigned n = state_rule_list(c->st, agent_slot, slots);

	msgpack_pack_array(c->pk, n);
	for (unsigned i = 0; i < n; i++)
		pack_rule(c, &c->m->rules[slots[i]], &c->m->agents[agent_slot]);
}

void pack_agent(struct call *c, uint32_t slot)
{
	pack_agent_map(c, slot, 0);
}

void pack_agent_map(struct call *c, uint32_t slot, unsigned more)
{
	const struct shm_agent *a = &c->m->agents[slot];
	msgpack_packer *pk = c->pk;

	call_map(c, 9 + more);
	proto_pack_key_u64(pk, "id", a->id);
	proto_pack_key_u64(pk, "org_id", a->org_id);
	proto_pack_key_str(pk, "org", c->m->orgs[a->org_slot].name);
	proto_pack_key_str(pk, "name", a->name);
	proto_pack_key_str(pk, "priority", sc_priority_name(a->priority));
	proto_pack_key_str(pk, "status", sc_status_name(a->status));
	proto_pack_key_i64(pk, "created_at", a->created_at);
	proto_pack_cstr(pk, "wallet");
	pack_wallet(c, &(struct gate_wallet_ref){slot, 0});
	proto_pack_cstr(pk, "rules");
	pack_rules(c, slot);
}

void pack_org(struct call *c, uint32_t slot)
{
	const struct shm_org *o = &c->m->orgs[slot];
	msgpack_packer *pk = c->pk;

	call_map(c, 7);
	proto_pack_key_u64(pk, "id", o->id);
	proto_pack_key_str(pk, "name", o->name);
	proto_pack_key_u64(pk, "agents", o->n_agents);
	proto_pack_key_i64(pk, "created_at", o->created_at);
	proto_pack_key_str(pk, "timezone", o->tz_name[0] ? o->tz_name : "UTC");
	proto_pack_key_str(pk, "timezone_rule", o->tz_rule[0] ? o->tz_rule : "UTC0");
	proto_pack_cstr(pk, "wallet");
	pack_wallet(c, &(struct gate_wallet_ref){slot, 1});
}

void pack_key_opt_u64(msgpack_packer *pk, const char *key, uint64_t v)
{
	proto_pack_cstr(pk, key);
	if (v)
		msgpack_pack_uint64(pk, v);
	else
		msgpack_pack_nil(pk);
}

void pack_key_opt_str(msgpack_packer *pk, const char *key, const char *s)
{
	proto_pack_key_str(pk, key, s[0] ? s : NULL);
}

/* model, rate_version and the tokens of a report priced from token counts; nil otherwise. */
static void pack_txn_pricing(msgpack_packer *pk, const struct shm_txn *t)
{
	static const char *const keys[] = {"input_tokens", "output_tokens", "cached_input_tokens"};

	pack_key_opt_str(pk, "model", t->model);
	pack_key_opt_u64(pk, "rate_version", t->rate_version);
	for (int k = 0; k < 3; k++) {
		proto_pack_cstr(pk, keys[k]);
		if (t->rate_version)
			msgpack_pack_uint64(pk, t->tokens[k]);
		else
			msgpack_pack_nil(pk);
	}
}

void pack_txn(struct call *c, const struct shm_txn *t)
{
	msgpack_packer *pk = c->pk;

	call_map(c, 23);
	proto_pack_key_u64(pk, "id", t->id);
	pack_key_opt_u64(pk, "agent_id", t->agent_id);
	proto_pack_key_u64(pk, "org_id", t->org_id);
	pack_key_opt_u64(pk, "rule_id", t->rule_id);
	proto_pack_key_str(pk, "action", t->action);
	proto_pack_key_str(pk, "type", t->type);
	proto_pack_key_str(pk, "status", sc_txn_status_name(t->status));
	proto_pack_key_str(pk, "outcome", t->has_outcome ? sc_outcome_name(t->outcome) : NULL);
	proto_pack_key_i64(pk, "estimated_cost", t->estimate);
	proto_pack_key_i64(pk, "charged", t->charged);
	proto_pack_key_i64(pk, "balance_after", t->balance_after);
	pack_key_opt_str(pk, "block_reason", t->block_reason);
	proto_pack_key_str(pk, "risk_level", gate_risk_name(t->risk));
	pack_key_opt_str(pk, "idempotency_key", t->idem_key);
	pack_key_opt_str(pk, "task_id", t->task_id);
	proto_pack_cstr(pk, "metadata");
	if (t->meta_len)
		pk->callback(pk->data, (const char *)t->meta, t->meta_len);
	else
		msgpack_pack_nil(pk);
	proto_pack_key_i64(pk, "created_at", t->created_at);
	pack_txn_pricing(pk, t);
	if (t->settled_at)
		proto_pack_key_i64(pk, "settled_at", t->settled_at);
	else
		proto_pack_key_str(pk, "settled_at", NULL);
}

/* Starts a successful response: the nil error. */
msgpack_packer *call_ok(struct call *c)
{
	msgpack_pack_nil(c->pk);
	return c->pk;
}

/* ------------------------------------------------------ argument helpers */

int call_arg_str(struct call *c, struct proto_args *a, const char *key, int required,
                   size_t max, struct state_str *out, int *present)
{
	/* a record's text was checked when it was written; an older daemon checked less */
	if (c->replaying)
		return proto_arg_str(a, key, required, max, &out->p, &out->len, present);
	return proto_arg_text(a, key, required, max, &out->p, &out->len, present);
}

int call_agent_arg(struct call *c, uint32_t *slot)
{
	uint64_t id;
	int rc = proto_arg_u64(c->a, "agent_id", 1, &id, NULL);

	if (rc != 0)
		return rc;
	if (state_agent_by_id(c->st, id, slot) != 0)
		return call_fail(c, SC_ENOTFOUND, "agent_id: no agent %llu", (unsigned long long)id);
	return 0;
}

/* "org" (or another key): an org name or id. */
int call_org_ref_arg(struct call *c, const char *key, int required, uint32_t *slot,
                       int *present)
{
	const msgpack_object *o = NULL;
	int rc = proto_arg_obj(c->a, key, required, -1, &o, present);

	if (rc != 0 || o == NULL)
		return rc;
	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
		if (state_org_by_id(c->st, o->via.u64, slot) != 0)
			return call_fail(c, SC_ENOTFOUND, "%s: no org %llu", key,
			             (unsigned long long)o->via.u64);
		return 0;
	}
	if (o->type == MSGPACK_OBJECT_STR) {
		struct state_str name = {o->via.str.ptr, o->via.str.size};

		if (state_org_by_name(c->st, name, slot) != 0)
			return call_fail(c, SC_ENOTFOUND, "%s: no org named '%.*s'", key,
			             (int)(name.len > 64 ? 64 : name.len), name.p);
		return 0;
	}
	return call_fail(c, SC_EINVAL, "%s: must be an org name (string) or id (integer)", key);
}

int call_org_id_arg(struct call *c, const char *key, uint32_t *slot, int *present)
{
	uint64_t id;
	int rc = proto_arg_u64(c->a, key, present == NULL, &id, present);

	if (rc != 0 || (present && !*present))
		return rc;
	if (state_org_by_id(c->st, id, slot) != 0)
		return call_fail(c, SC_ENOTFOUND, "%s: no org %llu", key, (unsigned long long)id);
	return 0;
}

/* An enum given by its word; *out is its value. */
int call_enum_arg(struct call *c, struct proto_args *a, const char *key,
                    const struct sc_names *names, int *out, int *present)
{
	struct state_str s;
	char allowed[96] = "";
	int rc = call_arg_str(c, a, key, 0, 0, &s, present), v;

	if (rc != 0 || !*present)
		return rc;
	if ((v = sc_names_find(names, s.p, s.len)) >= 0) {
		*out = v;
		return 0;
	}
	for (unsigned i = 0; i < names->n; i++)
		snprintf(allowed + strlen(allowed), sizeof(allowed) - strlen(allowed), "%s%s",
		         i == 0 ? "" : i + 1 == names->n ? " or " : ", ", names->v[i]);
	return call_fail(c, SC_EINVAL, "%s: must be %s", key, allowed);
}

/* The fields each method accepts; anything else is an unknown field. */
#define WALLET_FIELDS "balance", "budget", "max_per_txn", "daily_spend_limit", "low_balance"
#define RULE_FIELDS "name", "match", "max_cost_per_txn", "daily_spend_limit", "hourly_rate_limit"
#define FIELDS(...) ((const char *const[]){__VA_ARGS__, NULL})

static const char *const wallet_fields[] = {WALLET_FIELDS, NULL};
static const char *const rule_fields[] = {RULE_FIELDS, NULL};

/* Wallet fields shared by agents.create and wallets.update. */
static int wallet_args(struct proto_args *a, int with_debt, sc_wallet_update *u)
{
	static const struct {
		const char *key;
		unsigned bit;
		size_t off;
	} fields[] = {
		{"balance", SC_WALLET_SET_BALANCE, offsetof(sc_wallet_update, balance)},
		{"budget", SC_WALLET_SET_BUDGET, offsetof(sc_wallet_update, budget)},
		{"max_per_txn", SC_WALLET_SET_MAX_PER_TXN, offsetof(sc_wallet_update, max_per_txn)},
		{"daily_spend_limit", SC_WALLET_SET_DAILY_SPEND_LIMIT,
		 offsetof(sc_wallet_update, daily_spend_limit)},
		{"low_balance", SC_WALLET_SET_LOW_BALANCE, offsetof(sc_wallet_update, low_balance)},
		{"debt", SC_WALLET_SET_DEBT, offsetof(sc_wallet_update, debt)},
	};
	size_t n = sizeof(fields) / sizeof(fields[0]) - (with_debt ? 0 : 1);

	memset(u, 0, sizeof(*u));
	for (size_t i = 0; i < n; i++) {
		int present, rc;
		int64_t v;

		rc = proto_arg_money(a, fields[i].key, 0, &v, &present);
		if (rc != 0)
			return rc;
		if (present) {
			u->set |= fields[i].bit;
			memcpy((char *)u + fields[i].off, &v, sizeof(v));
		}
	}
	return 0;
}

/* Rule fields shared by agents.create, rules.add and rules.update. */
static int rule_args(struct call *c, struct proto_args *a, struct state_rule_spec *r)
{
	static const struct {
		const char *key;
		unsigned bit;
		int money;
		size_t off;
	} limits[] = {
		{"max_cost_per_txn", STATE_RULE_SET_MAX_COST, 1,
		 offsetof(struct state_rule_spec, max_cost_per_txn)},
		{"daily_spend_limit", STATE_RULE_SET_DAILY, 1,
		 offsetof(struct state_rule_spec, daily_limit)},
		{"hourly_rate_limit", STATE_RULE_SET_HOURLY, 0,
		 offsetof(struct state_rule_spec, hourly_limit)},
	};
	int present, rc;

	memset(r, 0, sizeof(*r));
	if ((rc = call_arg_str(c, a, "name", 0, SC_NAME_MAX, &r->name, &present)) != 0)
		return rc;
	r->set |= present ? STATE_RULE_SET_NAME : 0;
	if ((rc = call_arg_str(c, a, "match", 0, SC_ACTION_MAX, &r->match, &present)) != 0)
		return rc;
	r->set |= present ? STATE_RULE_SET_MATCH : 0;
	for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
		int64_t v;

		rc = limits[i].money ? proto_arg_money(a, limits[i].key, 0, &v, &present)
		                     : proto_arg_int(a, limits[i].key, 0, 0, INT64_MAX, &v, &present);
		if (rc != 0)
			return rc;
		if (present) {
			r->set |= limits[i].bit;
			memcpy((char *)r + limits[i].off, &v, sizeof(v));
		}
	}
	return 0;
}

/* ------------------------------------------------------------- methods */

static int m_orgs_create(struct call *c)
{
	char tz[SHM_TZ_MAX + 1], rule[SHM_TZ_MAX + 1];
	struct state_str name;
	uint32_t slot;
	int has_tz, rc;

	if ((rc = call_arg_str(c, c->a, "name", 1, SC_NAME_MAX, &name, NULL)) ||
	    (rc = call_timezone_arg(c, tz, rule, &has_tz)) ||
	    (rc = state_org_create(c->st, name, c->now, &slot, c->err, sizeof(c->err))))
		return rc;
	gate_org_timezone(c->st, slot, has_tz ? tz : "", has_tz ? rule : "", c->now);
	call_ok(c);
	pack_org(c, slot);
	return 0;
}

/* Used slots of a table in id order. */
struct id_slot {
	uint64_t id;
	uint32_t slot;
};

static int id_slot_cmp(const void *a, const void *b)
{
	const struct id_slot *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

static int m_orgs_list(struct call *c)
{
	uint32_t cap = c->m->hdr->org_cap, n = 0;
	struct id_slot *v;

	if (!(v = malloc((size_t)cap * sizeof(*v))))
		return call_fail(c, SC_EINTERNAL, "out of memory");
	for (uint32_t i = 0; i < cap; i++)
		if (c->m->orgs[i].rec.used)
			v[n++] = (struct id_slot){c->m->orgs[i].id, i};
	qsort(v, n, sizeof(*v), id_slot_cmp);
	call_ok(c);
	msgpack_pack_array(c->pk, n);
	for (uint32_t i = 0; i < n; i++)
		pack_org(c, v[i].slot);
	free(v);
	return 0;
}

#define MAX_CREATE_RULES SC_RULES_MAX

static int m_agents_create(struct call *c)
{
	struct state_agent_spec spec;
	struct state_rule_spec rules[MAX_CREATE_RULES];
	const msgpack_object *wallet, *rlist;
	struct proto_args sub;
	int present, prio, rc;
	uint32_t slot;

	memset(&spec, 0, sizeof(spec));
	if ((rc = call_org_ref_arg(c, "org", 1, &spec.org_slot, NULL)) ||
	    (rc = call_arg_str(c, c->a, "name", 1, SC_NAME_MAX, &spec.name, NULL)) ||
	    (rc = call_enum_arg(c, c->a, "priority", &sc_priority_names, &prio, &present)))
		return rc;
	spec.priority = present ? (enum sc_priority)prio : SC_PRIORITY_NORMAL;
	if ((rc = proto_arg_obj(c->a, "wallet", 0, MSGPACK_OBJECT_MAP, &wallet, &present)))
		return rc;
	if (present && ((rc = proto_args_sub(c->a, wallet, "wallet", &sub)) ||
	                (rc = proto_args_expect(&sub, wallet_fields)) ||
	                (rc = wallet_args(&sub, 0, &spec.wallet))))
		return rc;
	if ((rc = proto_arg_obj(c->a, "rules", 0, MSGPACK_OBJECT_ARRAY, &rlist, &present)))
		return rc;
	if (present) {
		if (rlist->via.array.size > MAX_CREATE_RULES)
			return call_fail(c, SC_ELIMIT, "rules: an agent has at most %d rules", SC_RULES_MAX);
		for (uint32_t i = 0; i < rlist->via.array.size; i++) {
			char prefix[32];

			snprintf(prefix, sizeof(prefix), "rules[%u]", i);
			if ((rc = proto_args_sub(c->a, &rlist->via.array.ptr[i], prefix, &sub)) ||
			    (rc = proto_args_expect(&sub, rule_fields)) ||
			    (rc = rule_args(c, &sub, &rules[i])))
				return rc;
		}
		spec.n_rules = rlist->via.array.size;
		spec.rules = rules;
	}
	if ((rc = state_agent_create(c->st, &spec, c->now, &slot, c->err, sizeof(c->err))))
		return rc;
	call_ok(c);
	if (!call_token_recorded(c)) {
		pack_agent(c, slot);
		return 0;
	}
	pack_agent_map(c, slot, 1);
	return call_pack_agent_token(c, slot);
}

static int m_agents_get(struct call *c)
{
	uint32_t slot;
	int rc;

	if ((rc = call_agent_arg(c, &slot)))
		return rc;
	call_ok(c);
	pack_agent(c, slot);
	return 0;
}

static int m_agents_list(struct call *c)
{
	uint32_t cap = c->m->hdr->agent_cap, n = 0, org_slot = 0;
	uint64_t org_id = 0;
	struct id_slot *v;
	int present, rc;

	if ((rc = call_org_ref_arg(c, "org", 0, &org_slot, &present)))
		return rc;
	if (present)
		org_id = c->m->orgs[org_slot].id;
	if (!(v = malloc((size_t)cap * sizeof(*v))))
		return call_fail(c, SC_EINTERNAL, "out of memory");
	for (uint32_t i = 0; i < cap; i++) {
		const struct shm_agent *a = &c->m->agents[i];

		if (a->rec.used && (!org_id || a->org_id == org_id))
			v[n++] = (struct id_slot){a->id, i};
	}
	qsort(v, n, sizeof(*v), id_slot_cmp);
	call_ok(c);
	msgpack_pack_array(c->pk, n);
	for (uint32_t i = 0; i < n; i++)
		pack_agent(c, v[i].slot);
	free(v);
	return 0;
}

static int m_agents_update(struct call *c)
{
	struct state_str name;
	int has_name, has_prio, has_status, prio = -1, status = -1, rc;
	uint32_t slot;

	if ((rc = call_agent_arg(c, &slot)) ||
	    (rc = call_arg_str(c, c->a, "name", 0, SC_NAME_MAX, &name, &has_name)) ||
	    (rc = call_enum_arg(c, c->a, "priority", &sc_priority_names, &prio, &has_prio)) ||
	    (rc = call_enum_arg(c, c->a, "status", &sc_status_names, &status, &has_status)) ||
	    (rc = state_agent_update(c->st, slot, has_name ? &name : NULL, has_prio ? prio : -1,
	                             has_status ? status : -1, c->now, c->err, sizeof(c->err))))
		return rc;
	call_ok(c);
	pack_agent(c, slot);
	return 0;
}

static int m_agents_delete(struct call *c)
{
	uint32_t slot;
	int rc;

	if ((rc = call_agent_arg(c, &slot)) ||
	    (rc = state_agent_delete(c->st, slot, c->err, sizeof(c->err))))
		return rc;
	c->d->token_epoch++; /* its connections' tokens stand no more */
	call_ok(c);
	call_map(c, 1);
	proto_pack_key_bool(c->pk, "deleted", 1);
	return 0;
}

static int m_rules_add(struct call *c)
{
	struct state_rule_spec spec;
	uint32_t slot, rule_slot;
	int rc;

	if ((rc = call_agent_arg(c, &slot)) || (rc = rule_args(c, c->a, &spec)) ||
	    (rc = state_rule_add(c->st, slot, &spec, &rule_slot, c->err, sizeof(c->err))))
		return rc;
	call_ok(c);
	pack_rule(c, &c->m->rules[rule_slot], &c->m->agents[slot]);
	return 0;
}

static int m_rules_list(struct call *c)
{
	uint32_t slot;
	int rc;

	if ((rc = call_agent_arg(c, &slot)))
		return rc;
	call_ok(c);
	pack_rules(c, slot);
	return 0;
}

static int m_rules_update(struct call *c)
{
	struct state_rule_spec spec;
	uint32_t slot, rule_slot;
	uint64_t rule_id;
	int rc;

	if ((rc = call_agent_arg(c, &slot)) || (rc = proto_arg_u64(c->a, "rule_id", 1, &rule_id, NULL)) ||
	    (rc = rule_args(c, c->a, &spec)) ||
	    (rc = state_rule_update(c->st, slot, rule_id, &spec, &rule_slot, c->err, sizeof(c->err))))
		return rc;
	call_ok(c);
	pack_rule(c, &c->m->rules[rule_slot], &c->m->agents[slot]);
	return 0;
}

static int m_rules_remove(struct call *c)
{
	uint64_t rule_id;
	uint32_t slot;
	int rc;

	if ((rc = call_agent_arg(c, &slot)) || (rc = proto_arg_u64(c->a, "rule_id", 1, &rule_id, NULL)) ||
	    (rc = state_rule_remove(c->st, slot, rule_id, c->err, sizeof(c->err))))
		return rc;
	call_ok(c);
	call_map(c, 1);
	proto_pack_key_bool(c->pk, "removed", 1);
	return 0;
}

/* A wallet named by <prefix>agent_id or <prefix>org_id: exactly one. */
int call_wallet_ref_arg(struct call *c, const char *prefix, struct gate_wallet_ref *ref)
{
	char akey[32], okey[32];
	uint32_t agent_slot = 0, org_slot = 0;
	uint64_t id = 0;
	int has_agent, has_org, rc;

	snprintf(akey, sizeof(akey), "%sagent_id", prefix);
	snprintf(okey, sizeof(okey), "%sorg_id", prefix);
	if ((rc = proto_arg_u64(c->a, akey, 0, &id, &has_agent)) ||
	    (rc = call_org_id_arg(c, okey, &org_slot, &has_org)))
		return rc;
	if (has_agent == has_org)
		return call_fail(c, SC_EINVAL, "give exactly one of %s and %s", akey, okey);
	if (has_agent && state_agent_by_id(c->st, id, &agent_slot) != 0)
		return call_fail(c, SC_ENOTFOUND, "%s: no agent %llu", akey, (unsigned long long)id);
	*ref = (struct gate_wallet_ref){has_org ? org_slot : agent_slot, has_org};
	return 0;
}

static int m_wallets_get(struct call *c)
{
	struct gate_wallet_ref ref;
	int rc;

	if ((rc = call_wallet_ref_arg(c, "", &ref)))
		return rc;
	call_ok(c);
	pack_wallet(c, &ref);
	return 0;
}

static int m_wallets_update(struct call *c)
{
	struct gate_wallet_ref ref;
	sc_wallet_update u;
	int period = 0, has_period, rc;

	if ((rc = call_wallet_ref_arg(c, "", &ref)) || (rc = wallet_args(c->a, 1, &u)) ||
	    (rc = call_enum_arg(c, c->a, "period", &sc_period_names, &period, &has_period)) ||
	    (rc = state_wallet_update(c->st, ref.slot, ref.org, &u, c->err, sizeof(c->err))))
		return rc;
	if (has_period)
		gate_wallet_period(c->st, &ref, period);
	if (!ref.org)
		gate_carve_sync(c->st, &c->m->agents[ref.slot]);
	alerts_evaluate(c->st, &(struct alerts_change){.wallet = ref}, c->now);
	call_ok(c);
	pack_wallet(c, &ref);
	return 0;
}

/* A packer's output into a fixed buffer; overflow is noted, not grown. */
struct fixed_buf {
	uint8_t *p;
	size_t len, cap;
	int overflow;
};

static int fixed_write(void *data, const char *buf, size_t len)
{
	struct fixed_buf *b = data;

	if (len > b->cap - b->len) {
		b->overflow = 1;
		return -1;
	}
	memcpy(b->p + b->len, buf, len);
	b->len += len;
	return 0;
}

/* The {reason} metadata of a transfer or adjustment, packed into buf. */
int call_reason_meta(struct call *c, uint8_t *buf, size_t *len)
{
	struct fixed_buf b = {buf, 0, SHM_METADATA_MAX, 0};
	struct state_str reason;
	msgpack_packer mp;
	int rc = call_arg_str(c, c->a, "reason", 1, SC_REASON_MAX, &reason, NULL);

	if (rc != 0)
		return rc;
	msgpack_packer_init(&mp, &b, fixed_write);
	msgpack_pack_map(&mp, 1);
	proto_pack_cstr(&mp, "reason");
	proto_pack_strn(&mp, reason.p, reason.len);
	*len = b.len;
	return 0;
}

static int m_wallets_transfer(struct call *c)
{
	struct gate_wallet_ref from, to;
	uint8_t meta[SHM_METADATA_MAX];
	size_t meta_len;
	int64_t amount;
	uint64_t ids[2];
	msgpack_packer *pk;
	int rc;

	if ((rc = call_wallet_ref_arg(c, "from_", &from)) || (rc = call_wallet_ref_arg(c, "to_", &to)) ||
	    (rc = proto_arg_money(c->a, "amount", 1, &amount, NULL)) ||
	    (rc = call_reason_meta(c, meta, &meta_len)) ||
	    (rc = gate_transfer(c->st, &from, &to, amount, meta, meta_len, c->now, ids, c->err,
	                        sizeof(c->err))))
		return rc;
	pk = call_ok(c);
	call_map(c, 4);
	proto_pack_key_i64(pk, "amount", amount);
	proto_pack_cstr(pk, "from");
	pack_wallet(c, &from);
	proto_pack_cstr(pk, "to");
	pack_wallet(c, &to);
	proto_pack_cstr(pk, "transactions");
	msgpack_pack_array(pk, 2);
	msgpack_pack_uint64(pk, ids[0]);
	msgpack_pack_uint64(pk, ids[1]);
	return 0;
}

static int m_wallets_adjust(struct call *c)
{
	struct gate_wallet_ref ref;
	uint8_t meta[SHM_METADATA_MAX];
	size_t meta_len;
	int64_t amount;
	uint64_t id;
	msgpack_packer *pk;
	int rc;

	if ((rc = call_wallet_ref_arg(c, "", &ref)) ||
	    (rc = proto_arg_int(c->a, "amount", 1, -INT64_MAX, INT64_MAX, &amount, NULL)) ||
	    (rc = call_reason_meta(c, meta, &meta_len)) ||
	    (rc = gate_adjust(c->st, &ref, amount, meta, meta_len, c->now, &id, c->err,
	                      sizeof(c->err))))
		return rc;
	pk = call_ok(c);
	call_map(c, 2);
	proto_pack_cstr(pk, "wallet");
	pack_wallet(c, &ref);
	proto_pack_key_u64(pk, "transaction_id", id);
	return 0;
}

/* A string literal's bytes and length, for proto_put_str. */
#define LIT(s) (s), (sizeof(s) - 1)

/*
 * The nil error and check's result, built in one buffer and written to the
 * response at once: the check is the method that runs a million times a
 * second, and a packer call per key costs more than the gate itself.
 * CHECK_RESULT_MAX bounds the longest result, 16 warnings of 127 bytes.
 */
#define CHECK_RESULT_MAX (160 + (SC_WARNINGS_MAX + 1) * (SC_REASON_MAX + 3))

static void pack_check_result(struct call *c, const struct gate_decision *d)
{
	char mem[CHECK_RESULT_MAX];
	struct proto_buf b;

	proto_buf_init(&b, mem, sizeof(mem));
	proto_put_nil(&b);
	proto_put_map(&b, d->allowed ? 6 : 7);
	proto_put_str(&b, LIT("status"));
	if (d->allowed)
		proto_put_str(&b, LIT("allowed"));
	else
		proto_put_str(&b, LIT("blocked"));
	proto_put_str(&b, LIT("transaction_id"));
	if (d->txn_id)
		proto_put_u64(&b, d->txn_id);
	else
		proto_put_nil(&b);
	if (!d->allowed) {
		proto_put_str(&b, LIT("block_reason"));
		proto_put_cstr(&b, d->block_reason);
	}
	proto_put_str(&b, LIT("risk_level"));
	proto_put_cstr(&b, gate_risk_name(d->risk));
	proto_put_str(&b, LIT("available"));
	proto_put_i64(&b, d->available);
	proto_put_str(&b, LIT("warnings"));
	proto_put_array(&b, d->n_warnings);
	for (unsigned i = 0; i < d->n_warnings; i++)
		proto_put_cstr(&b, d->warnings[i]);
	proto_put_str(&b, LIT("replayed"));
	proto_put_bool(&b, d->replayed);
	SC_ASSERT(!b.overflow);
	c->pk->callback(c->pk->data, b.start, proto_buf_len(&b));
}

static int m_check(struct call *c)
{
	struct gate_check_req req;
	struct gate_decision d;
	const msgpack_object *meta;
	uint8_t metabuf[SHM_METADATA_MAX];
	int present, rc;

	memset(&req, 0, sizeof(req));
	if ((rc = proto_arg_u64(c->a, "agent_id", 1, &req.agent_id, NULL)) ||
	    (rc = call_arg_str(c, c->a, "action", 1, SC_ACTION_MAX, &req.action, NULL)) ||
	    (rc = proto_arg_money(c->a, "estimated_cost", 1, &req.estimate, NULL)) ||
	    (rc = call_arg_str(c, c->a, "type", 0, SC_TYPE_MAX, &req.type, NULL)) ||
	    (rc = call_arg_str(c, c->a, "idempotency_key", 0, SC_KEY_MAX, &req.key, NULL)) ||
	    (rc = call_arg_str(c, c->a, "task_id", 0, SC_KEY_MAX, &req.task, NULL)) ||
	    (rc = proto_arg_obj(c->a, "metadata", 0, MSGPACK_OBJECT_MAP, &meta, &present)))
		return rc;
	if (present) {
		struct fixed_buf b = {metabuf, 0, sizeof(metabuf), 0};
		msgpack_packer mp;

		msgpack_packer_init(&mp, &b, fixed_write);
		msgpack_pack_object(&mp, *meta);
		if (b.overflow)
			return call_fail(c, SC_EINVAL, "metadata: more than %d bytes packed",
			             SHM_METADATA_MAX);
		req.meta = metabuf;
		req.meta_len = b.len;
	}
	if ((rc = gate_check(c->st, &req, c->now, &d, c->err, sizeof(c->err))) != 0)
		return rc;
	c->replayed = d.replayed;
	if (d.allowed && !d.replayed && c->d->hold_placed)
		c->d->hold_placed(c->d->hold_placed_arg);
	pack_check_result(c, &d);
	return 0;
}

/*
 * The nil error and report's result in one buffer, one write, as for the
 * check: every check is followed by its report, live and on replay.
 */
static void pack_report_result(struct call *c, const struct gate_settlement *s)
{
	char mem[160 + SC_NAME_MAX];
	struct proto_buf b;

	proto_buf_init(&b, mem, sizeof(mem));
	proto_put_nil(&b);
	proto_put_map(&b, 9);
	proto_put_str(&b, LIT("transaction_id"));
	proto_put_u64(&b, s->txn_id);
	proto_put_str(&b, LIT("status"));
	proto_put_str(&b, LIT("settled"));
	proto_put_str(&b, LIT("outcome"));
	proto_put_cstr(&b, sc_outcome_name(s->outcome));
	proto_put_str(&b, LIT("charged"));
	proto_put_i64(&b, s->charged);
	proto_put_str(&b, LIT("balance"));
	proto_put_i64(&b, s->balance);
	proto_put_str(&b, LIT("debt"));
	proto_put_i64(&b, s->debt);
	proto_put_str(&b, LIT("replayed"));
	proto_put_bool(&b, s->replayed);
	proto_put_str(&b, LIT("model"));
	if (s->model[0])
		proto_put_cstr(&b, s->model);
	else
		proto_put_nil(&b);
	proto_put_str(&b, LIT("rate_version"));
	if (s->rate_version)
		proto_put_u64(&b, s->rate_version);
	else
		proto_put_nil(&b);
	SC_ASSERT(!b.overflow);
	c->pk->callback(c->pk->data, b.start, proto_buf_len(&b));
}

static int m_report(struct call *c)
{
	struct gate_settlement s;
	struct state_str model;
	uint64_t txn_id, tokens[3];
	int64_t actual = 0;
	int outcome, has_outcome, has_actual, has_model, has_tokens, rc;

	if ((rc = proto_arg_u64(c->a, "transaction_id", 1, &txn_id, NULL)) ||
	    (rc = call_enum_arg(c, c->a, "outcome", &sc_outcome_names, &outcome, &has_outcome)))
		return rc;
	if (!has_outcome)
		return call_fail(c, SC_EINVAL, "outcome: required");
	if ((rc = proto_arg_money(c->a, "actual_cost", 0, &actual, &has_actual)) ||
	    (rc = call_arg_str(c, c->a, "model", 0, SC_NAME_MAX, &model, &has_model)) ||
	    (rc = pricing_token_args(c, tokens, &has_tokens)))
		return rc;
	if (has_model && has_actual)
		return call_fail(c, SC_EINVAL,
		                 "model, actual_cost: give either token counts of a model or an "
		                 "actual_cost, not both");
	if (has_tokens && !has_model)
		return call_fail(c, SC_EINVAL, "model: required with token counts");
	if (c->peer && c->peer->role == ACCESS_AGENT) {
		const struct shm_txn *t = state_txn_by_id(c->st, txn_id);

		if (t && t->agent_id != c->peer->id)
			return call_fail(c, SC_EDENIED,
			                 "transaction_id: transaction %llu is not agent %llu's, for which "
			                 "this connection acts",
			                 (unsigned long long)txn_id, (unsigned long long)c->peer->id);
	}
	rc = has_model ? gate_report_tokens(c->st, txn_id, (enum sc_outcome)outcome, model, tokens,
	                                    c->now, &s, c->err, sizeof(c->err))
	               : gate_report(c->st, txn_id, (enum sc_outcome)outcome, has_actual, actual,
	                             c->now, &s, c->err, sizeof(c->err));
	if (rc != 0)
		return rc;
	c->replayed = s.replayed;
	pack_report_result(c, &s);
	return 0;
}

/*
 * Who may call a method (PROTOCOL.md, "Roles"): sets of enum access_role,
 * and ANYONE for hello, which a connection calls before it has a role.
 * An agent calls an OWN or GATE method for itself only (agent_scope).
 */
#define ANYONE 8u
#define ADMIN ACCESS_ADMIN
#define READ (ACCESS_ADMIN | ACCESS_READER)
#define OWN (ACCESS_ADMIN | ACCESS_READER | ACCESS_AGENT)
#define GATE (ACCESS_ADMIN | ACCESS_AGENT)

static const struct method {
	const char *name;
	method_fn fn;
	const char *const *fields;
	unsigned ledger_type; /* 0: a read, not recorded */
	unsigned roles;       /* who may call it */
} methods[] = {
	{"check", m_check,
	 FIELDS("agent_id", "action", "estimated_cost", "type", "metadata", "idempotency_key",
	        "task_id"),
	 LEDGER_CHECK, GATE},
	{"report", m_report,
	 FIELDS("transaction_id", "outcome", "actual_cost", "model", "input_tokens", "output_tokens",
	        "cached_input_tokens"),
	 LEDGER_REPORT, GATE},
	{"pricing.set", m_pricing_set,
	 FIELDS("model", "input", "output", "cached_input", "effective_from"), LEDGER_PRICING_SET,
	 ADMIN},
	{"pricing.list", m_pricing_list, FIELDS("model"), 0, OWN},
	{"pricing.get", m_pricing_get, FIELDS("model", "at"), 0, OWN},
	{"hello", m_hello, FIELDS("token"), 0, OWN | ANYONE},
	{"wallets.get", m_wallets_get, FIELDS("agent_id", "org_id"), 0, OWN},
	{"wallets.transfer", m_wallets_transfer,
	 FIELDS("from_agent_id", "from_org_id", "to_agent_id", "to_org_id", "amount", "reason"),
	 LEDGER_WALLETS_TRANSFER, ADMIN},
	{"wallets.adjust", m_wallets_adjust, FIELDS("agent_id", "org_id", "amount", "reason"),
	 LEDGER_WALLETS_ADJUST, ADMIN},
	{"wallets.update", m_wallets_update,
	 FIELDS("agent_id", "org_id", WALLET_FIELDS, "debt", "period"), LEDGER_WALLETS_UPDATE, ADMIN},
	{"wallets.carve", m_wallets_carve, FIELDS("agent_id", "amount", "reason"),
	 LEDGER_WALLETS_CARVE, ADMIN},
	{"wallets.release", m_wallets_release, FIELDS("agent_id"), LEDGER_WALLETS_RELEASE, ADMIN},
	{"spend", m_spend, FIELDS("agent_id", "org_id"), 0, OWN},
	{"orgs.create", m_orgs_create, FIELDS("name", "timezone"), LEDGER_ORGS_CREATE, ADMIN},
	{"orgs.update", m_orgs_update, FIELDS("org_id", "timezone"), LEDGER_ORGS_UPDATE, ADMIN},
	{"orgs.list", m_orgs_list, FIELDS(NULL), 0, READ},
	{"agents.create", m_agents_create, FIELDS("org", "name", "priority", "wallet", "rules"),
	 LEDGER_AGENTS_CREATE, ADMIN},
	{"agents.get", m_agents_get, FIELDS("agent_id"), 0, OWN},
	{"agents.list", m_agents_list, FIELDS("org"), 0, READ},
	{"agents.update", m_agents_update, FIELDS("agent_id", "name", "priority", "status"),
	 LEDGER_AGENTS_UPDATE, ADMIN},
	{"agents.delete", m_agents_delete, FIELDS("agent_id"), LEDGER_AGENTS_DELETE, ADMIN},
	{"agents.rotate_token", m_agents_rotate_token, FIELDS("agent_id"), LEDGER_AGENTS_ROTATE_TOKEN,
	 ADMIN},
	{"rules.add", m_rules_add, FIELDS("agent_id", RULE_FIELDS), LEDGER_RULES_ADD, ADMIN},
	{"rules.list", m_rules_list, FIELDS("agent_id"), 0, OWN},
	{"rules.update", m_rules_update, FIELDS("agent_id", "rule_id", RULE_FIELDS),
	 LEDGER_RULES_UPDATE, ADMIN},
	{"rules.remove", m_rules_remove, FIELDS("agent_id", "rule_id"), LEDGER_RULES_REMOVE, ADMIN},
	{"transactions.list", m_transactions_list,
	 FIELDS("agent_id", "org_id", "status", "risk_level", "since", "until", "before", "limit"), 0,
	 OWN},
	{"stats", m_stats, FIELDS(NULL), 0, READ},
	{"score", m_score, FIELDS("agent_id"), 0, OWN},
	{"agents.events", m_agents_events, FIELDS("agent_id", "limit"), 0, OWN},
	{"transactions.summary", m_transactions_summary,
	 FIELDS("agent_id", "org_id", "since", "until"), 0, OWN},
	{"agents.top", m_agents_top, FIELDS("org_id", "since", "until", "limit"), 0, READ},
	{"fleet", m_fleet, FIELDS(NULL), 0, READ},
	{"tasks.usage", m_tasks_usage, FIELDS("task_id", "org_id"), 0, READ},
	{"alerts.list", m_alerts_list,
	 FIELDS("agent_id", "org_id", "kind", "severity", "since", "before", "limit"), 0, OWN},
	{"alerts.subscribe", m_alerts_subscribe, FIELDS(NULL), 0, OWN},
	{"alerts.unsubscribe", m_alerts_unsubscribe, FIELDS(NULL), 0, OWN},
	{"tokens.create", m_tokens_create, FIELDS("role", "name"), LEDGER_TOKENS_CREATE, ADMIN},
	{"tokens.list", m_tokens_list, FIELDS(NULL), 0, ADMIN},
	{"tokens.revoke", m_tokens_revoke, FIELDS("token_id"), LEDGER_TOKENS_REVOKE, ADMIN},
};

static const struct method *find_method(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		if (strlen(methods[i].name) == len && memcmp(methods[i].name, name, len) == 0)
			return &methods[i];
	return NULL;
}

const char *dispatch_method_name(unsigned i, int *changes)
{
	if (i >= sizeof(methods) / sizeof(methods[0]))
		return NULL;
	if (changes)
		*changes = methods[i].ledger_type != 0;
	return methods[i].name;
}

unsigned dispatch_method_roles(unsigned i)
{
	return i < sizeof(methods) / sizeof(methods[0]) ? methods[i].roles & ~ANYONE : 0;
}

const char *const *dispatch_method_fields(unsigned i)
{
	return i < sizeof(methods) / sizeof(methods[0]) ? methods[i].fields : NULL;
}

/*
 * Appends the record of a change: [params, result] at its time. params are
 * copied as the client sent them when the server kept their bytes, which
 * costs a memcpy where packing the unpacked objects again walks them all.
 */
/*
 * Bytes of the msgpack array or map header at p (len bytes): 1, 3 or 5,
 * or 0 if p does not start with one of the kind (0x90 array, 0x80 map).
 */
static size_t head_len(const char *p, size_t len, unsigned kind)
{
	unsigned char b = len ? (unsigned char)p[0] : 0;

	if ((b & 0xf0) == kind)
		return 1;
	if (b == (kind == 0x90 ? 0xdc : 0xde))
		return len >= 3 ? 3 : 0;
	if (b == (kind == 0x90 ? 0xdd : 0xdf))
		return len >= 5 ? 5 : 0;
	return 0;
}

/*
 * The params of an agent's request with its own agent_id added (agent_scope):
 * the client's bytes of its fields, copied, behind a map header counting
 * one more and followed by the agent_id, which packs the same as packing
 * the rebuilt object, at the cost of a copy.
 */
static void pack_own_params(msgpack_packer *lp, const struct srv_request *req,
                            const struct call *c)
{
	const char *p = req->params_raw;
	size_t len = req->params_raw_len, a = p ? head_len(p, len, 0x90) : 0;
	size_t m = a ? head_len(p + a, len - a, 0x80) : 0;
	const msgpack_object *map = &c->own_params[0];

	if (!m) {
		msgpack_pack_object(lp, c->own_params[1]);
		return;
	}
	msgpack_pack_array(lp, 1);
	msgpack_pack_map(lp, map->via.map.size);
	lp->callback(lp->data, p + a + m, len - a - m);
	msgpack_pack_object(lp, map->via.map.ptr[map->via.map.size - 1].key);
	msgpack_pack_object(lp, map->via.map.ptr[map->via.map.size - 1].val);
}

static uint64_t record(struct dispatch *d, unsigned type, int64_t now,
                       const struct srv_request *req, const struct call *c)
{
	msgpack_packer *lp = ledger_begin(d->ledger, type, now);
	uint64_t seq;

	msgpack_pack_array(lp, req->peer ? 3 : 2);
	if (req->peer)
		dispatch_pack_actor(lp, req->peer);
	if (c->own)
		pack_own_params(lp, req, c);
	else if (req->params_raw)
		lp->callback(lp->data, req->params_raw, req->params_raw_len);
	else if (req->params)
		msgpack_pack_object(lp, *req->params);
	else
		msgpack_pack_array(lp, 0);
	/* the result without the nil error packed before it */
	lp->callback(lp->data, d->scratch.data + 1, d->scratch.size - 1);
	seq = ledger_commit(d->ledger);
	state_set_applied(d->st, seq);
	return seq;
}

#define SEGMENT_LOST                                                                       \
	"state segment: another process cut it short; the daemon is stopping, and its next "  \
	"start rebuilds the state from the ledger"

static const char *const other_fields[] = {"org_id", "org", "from_agent_id", "from_org_id",
                                           "to_agent_id", "to_org_id"};
#define N_OTHERS (sizeof(other_fields) / sizeof(other_fields[0]))
#define N_METHODS (sizeof(methods) / sizeof(methods[0]))
#define SCOPE_AGENT_ID (1u << N_OTHERS) /* the method takes an agent_id */

/*
 * Per method, which of other_fields it takes (bit i) and whether it takes
 * an agent_id: found once, so that an agent's check does not compare
 * field names.
 */
static unsigned scope_of[N_METHODS];
static pthread_once_t scope_once = PTHREAD_ONCE_INIT;

static void find_scopes(void)
{
	for (size_t m = 0; m < N_METHODS; m++)
		for (const char *const *f = methods[m].fields; *f; f++) {
			for (size_t i = 0; i < N_OTHERS; i++)
				if (strcmp(*f, other_fields[i]) == 0)
					scope_of[m] |= 1u << i;
			if (strcmp(*f, "agent_id") == 0)
				scope_of[m] |= SCOPE_AGENT_ID;
		}
}

/*
 * An agent's request names only itself: an agent_id other than its own,
 * or any org, is permission_denied, and a method that takes an agent_id
 * gets the agent's own when the request left it out (in c->own_params,
 * which the ledger then records), so a listing is the agent's alone.
 */
static int agent_scope(struct call *c, const struct method *m, struct proto_args *args,
                       const msgpack_object *params)
{
	uint64_t own = c->peer->id, id;
	const msgpack_object *o;
	unsigned scope;
	int present = 0, rc = 0;

	pthread_once(&scope_once, find_scopes);
	scope = scope_of[m - methods];
	for (size_t i = 0; i < N_OTHERS; i++)
		if ((scope & 1u << i) &&
		    (rc = proto_arg_obj(args, other_fields[i], 0, -1, &o, &present)) == 0 && present)
			return call_fail(c, SC_EDENIED,
			                 "%s: %s: this connection acts for agent %llu only", m->name,
			                 other_fields[i], (unsigned long long)own);
	if (rc != 0 || !(scope & SCOPE_AGENT_ID))
		return rc;
	if ((rc = proto_arg_u64(args, "agent_id", 0, &id, &present)))
		return rc;
	if (present && id != own)
		return call_fail(c, SC_EDENIED,
		                 "%s: agent_id: this connection acts for agent %llu, not %llu", m->name,
		                 (unsigned long long)own, (unsigned long long)id);
	if (present)
		return 0;
	/* params were checked by proto_args_init: nil, [] or [map] */
	uint32_t n = params && params->via.array.size ? params->via.array.ptr[0].via.map.size : 0;

	if (n)
		memcpy(c->own_kv, params->via.array.ptr[0].via.map.ptr, n * sizeof(c->own_kv[0]));
	c->own_kv[n].key = (msgpack_object){.type = MSGPACK_OBJECT_STR,
	                                    .via.str = {.size = 8, .ptr = "agent_id"}};
	c->own_kv[n].val = (msgpack_object){.type = MSGPACK_OBJECT_POSITIVE_INTEGER, .via.u64 = own};
	c->own_params[0] = (msgpack_object){.type = MSGPACK_OBJECT_MAP,
	                                    .via.map = {.size = n + 1, .ptr = c->own_kv}};
	c->own_params[1] = (msgpack_object){.type = MSGPACK_OBJECT_ARRAY,
	                                    .via.array = {.size = 1, .ptr = c->own_params}};
	if ((rc = proto_args_init(args, &c->own_params[1], c->err, sizeof(c->err))) == 0 &&
	    (rc = proto_args_expect(args, m->fields)) == 0)
		c->own = 1;
	return rc;
}

/* Runs a method; its result (after a nil error) is left in d->scratch. */
static int run(struct dispatch *d, const struct method *m, const struct srv_request *req,
               int64_t now, struct call *c)
{
	struct proto_args args;
	msgpack_packer spk;
	int rc;

	d->scratch.size = 0;
	msgpack_packer_init(&spk, &d->scratch, msgpack_sbuffer_write);
	*c = (struct call){.d = d, .st = d->st, .m = state_shm(d->st), .a = &args, .pk = &spk,
	                   .now = now, .conn_id = req->conn_id, .peer = req->peer};
	if ((rc = proto_args_init(&args, req->params, c->err, sizeof(c->err))) == 0 &&
	    (rc = proto_args_expect(&args, m->fields)) == 0 &&
	    (!c->peer || c->peer->role != ACCESS_AGENT ||
	     (rc = agent_scope(c, m, &args, req->params)) == 0))
		rc = m->fn(c);
	return rc;
}

/*
 * Whether the connection may call m: 0, or permission_denied with the role
 * it would need in c->err. A connection that has not said who it is may
 * call hello only; one on the agent socket is closed if it tries anything
 * else (it is not the client that socket is for).
 */
static int allowed(const struct method *m, struct access_peer *p, struct call *c)
{
	unsigned have = p->role ? p->role : ANYONE;

	if (m->roles & have)
		return 0;
	if (p->agent_socket && p->role == ACCESS_NONE)
		p->close = 1;
	if (p->role == ACCESS_AGENT)
		return call_fail(c, SC_EDENIED, "%s: needs role %s; this connection is agent %llu",
		                 m->name, access_roles_needed(m->roles & ~ANYONE & ~ACCESS_AGENT),
		                 (unsigned long long)p->id);
	return call_fail(c, SC_EDENIED, "%s: needs role %s; this connection is %s%s", m->name,
	                 access_roles_needed(m->roles & ~ANYONE), access_role_name(p->role),
	                 p->role == ACCESS_NONE ? " (call hello with a token first)" : "");
}

static unsigned clock_change(struct dispatch *d, unsigned type,
                             unsigned (*apply)(struct state *st, int64_t now), int64_t now);

/*
 * A step seen since the last change is applied and recorded first (a
 * LEDGER_CLOCK record), so that no change sees the new time before the
 * state took the step; a replay applies it at the same point.
 */
int64_t dispatch_time(struct dispatch *d)
{
	struct shm *shm = state_shm(d->st);
	int64_t step, now = clock_now_step(&step);

	if (step == 0)
		return now;
	shm_change_begin(shm);
	gate_clock_step(d->st, step, now);
	if (d->ledger) {
		msgpack_packer *lp = ledger_begin(d->ledger, LEDGER_CLOCK, now);

		msgpack_pack_array(lp, 1);
		msgpack_pack_int64(lp, step);
		state_set_applied(d->st, ledger_commit(d->ledger));
	}
	shm_change_end(shm);
	d->steps++;
	/* the timer waits real time for deadlines the step moved: re-armed */
	if (d->hold_placed)
		d->hold_placed(d->hold_placed_arg);
	return now;
}

/* The value of d->taken when this thread last released the lock in a request. */
static __thread uint64_t released_at;

/*
 * The commit lock for a request. glibc's mutex is not fair: a worker that
 * releases it and comes back for its next pipelined request takes it again
 * before a waiting worker, woken by the release, is even running, so one
 * connection's burst could hold every other worker's clients off for as
 * long as it lasts (the loop's turns, server.c, only share one worker).
 * So a thread that finds another waiting and nobody having taken the lock
 * since its own release lets the waiter go first, waiting for it at most
 * a few hundred microseconds. With one loop there is no other thread.
 */
static void request_lock(struct dispatch *d)
{
	if (!d->threaded) {
		pthread_mutex_lock(&d->lock);
		return;
	}
	for (int i = 0; i < 200 && __atomic_load_n(&d->waiting, __ATOMIC_ACQUIRE) &&
	                __atomic_load_n(&d->taken, __ATOMIC_ACQUIRE) == released_at;
	     i++)
		sched_yield();
	if (pthread_mutex_trylock(&d->lock) != 0) {
		__atomic_add_fetch(&d->waiting, 1, __ATOMIC_ACQ_REL);
		pthread_mutex_lock(&d->lock);
		__atomic_sub_fetch(&d->waiting, 1, __ATOMIC_ACQ_REL);
	}
	__atomic_add_fetch(&d->taken, 1, __ATOMIC_RELEASE);
}

static void request_unlock(struct dispatch *d)
{
	if (d->threaded)
		released_at = __atomic_load_n(&d->taken, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&d->lock);
}

uint64_t dispatch_request(void *ctx, const struct srv_request *req, msgpack_packer *pk)
{
	struct dispatch *d = ctx;
	const struct method *m = find_method(req->method, req->method_len);
	struct shm *shm = state_shm(d->st);
	const char *refused;
	uint64_t seq = 0;
	struct call c;
	int rc;

	c.err[0] = '\0';
	c.secret_at = 0;
	if (!m) {
		rc = call_fail(&c, SC_EUNSUPPORTED, "unknown method '%.*s'",
		           (int)(req->method_len > 64 ? 64 : req->method_len), req->method);
		goto fail;
	}
	if (req->peer && (rc = allowed(m, req->peer, &c)) != 0)
		goto fail;
	request_lock(d);
	/*
	 * A token is looked at again only when something that can end one
	 * happened since it was last found standing (dispatch.token_epoch).
	 */
	if (req->peer && req->peer->by_token && req->peer->epoch != d->token_epoch + 1 &&
	    dispatch_peer_valid(d, req->peer))
		req->peer->epoch = d->token_epoch + 1;
	if (req->peer && req->peer->by_token && req->peer->epoch != d->token_epoch + 1) {
		dispatch_access_closed(d, req->peer);
		if (req->peer->agent_socket)
			req->peer->close = 1;
		rc = call_fail(&c, SC_EDENIED,
		               "token: revoked or replaced since this connection presented it; hello "
		               "again with the current token");
	} else if (d->segment_lost) {
		rc = call_fail(&c, SC_EUNAVAILABLE, "%s", SEGMENT_LOST);
	} else if (m->ledger_type && d->ledger && (refused = ledger_failure(d->ledger))) {
		rc = call_fail(&c, SC_EUNAVAILABLE, "%s", refused);
	} else {
		/* read under the lock, so the ledger's times follow its order */
		int64_t now = m->ledger_type ? dispatch_time(d) : clock_now();

		/* a new day begins before the change that sees it */
		if (m->ledger_type && now >= gate_next_roll(d->st))
			clock_change(d, LEDGER_ROLL, gate_roll, now);
		if (m->ledger_type)
			shm_change_begin(shm);
		rc = run(d, m, req, now, &c);
		if (rc == 0 && m->ledger_type && !c.replayed && d->ledger)
			seq = record(d, m->ledger_type, c.now, req, &c);
		if (m->ledger_type)
			shm_change_end(shm);
		if (m->ledger_type && d->alerts_raised && dispatch_alerts_pending(d))
			d->alerts_raised(d->alerts_raised_arg);
	}
	if (rc == 0) {
		if (c.secret_at) {
			/* the reply shows the token where the record keeps its hash */
			pk->callback(pk->data, d->scratch.data, c.secret_at);
			proto_pack_key_str(pk, "token", c.secret);
			access_wipe(c.secret, sizeof(c.secret));
		} else {
			pk->callback(pk->data, d->scratch.data, d->scratch.size);
		}
		request_unlock(d);
		return d->strict ? seq : 0;
	}
	request_unlock(d);
	if (req->peer && req->peer->agent_socket && req->peer->role == ACCESS_NONE)
		req->peer->close = 1;
fail:
	proto_pack_error(pk, rc, c.err[0] ? c.err : NULL);
	msgpack_pack_nil(pk);
	return 0;
}

/*
 * Applies a change the clock makes (expiries, a new day) at now and, if it
 * changed anything, records it as an empty record of that type: a replay
 * applies the same function at the record's time. Under the commit lock.
 */
static unsigned clock_change(struct dispatch *d, unsigned type,
                             unsigned (*apply)(struct state *st, int64_t now), int64_t now)
{
	struct shm *shm = state_shm(d->st);
	unsigned n;

	if (d->segment_lost)
		return 0;
	shm_change_begin(shm);
	n = apply(d->st, now);
	if (n && d->ledger) {
		msgpack_pack_array(ledger_begin(d->ledger, type, now), 0);
		state_set_applied(d->st, ledger_commit(d->ledger));
	}
	shm_change_end(shm);
	return n;
}

unsigned dispatch_expire(struct dispatch *d)
{
	unsigned n;
	int64_t now;

	pthread_mutex_lock(&d->lock);
	now = dispatch_time(d);
	/* a roll that expires nothing is still a change: recorded on its own */
	clock_change(d, LEDGER_ROLL, gate_roll, now);
	n = clock_change(d, LEDGER_EXPIRE, gate_expire, now);
	pthread_mutex_unlock(&d->lock);
	return n;
}

void dispatch_settings(struct dispatch *d, const struct state_settings *set)
{
	const struct shm_header *h = state_shm(d->st)->hdr;
	struct shm *shm = state_shm(d->st);
	msgpack_packer *lp;
	int64_t now;

	pthread_mutex_lock(&d->lock);
	now = dispatch_time(d);
	shm_change_begin(shm);
	state_set_settings(d->st, set);
	if (d->ledger) {
		lp = ledger_begin(d->ledger, LEDGER_SETTINGS, now);
		msgpack_pack_map(lp, 8);
		proto_pack_key_i64(lp, "task_max_usage", set->task_max_usage);
		proto_pack_key_u64(lp, "max_holds_per_agent", set->max_holds_per_agent);
		proto_pack_key_u64(lp, "max_holds_per_org", set->max_holds_per_org);
		proto_pack_key_i64(lp, "gate", GATE_VERSION);
		proto_pack_key_i64(lp, "hold_ttl_us", set->hold_ttl_us);
		proto_pack_key_bool(lp, "expiry_charges", set->expiry_charges);
		proto_pack_key_i64(lp, "alert_velocity", set->alert_velocity);
		proto_pack_cstr(lp, "capacity");
		msgpack_pack_map(lp, 11);
		proto_pack_key_u64(lp, "orgs", h->org_cap);
		proto_pack_key_u64(lp, "agents", h->agent_cap);
		proto_pack_key_u64(lp, "rules", h->rule_cap);
		proto_pack_key_u64(lp, "holds", h->hold_cap);
		proto_pack_key_u64(lp, "history", h->txn_cap);
		proto_pack_key_u64(lp, "events", h->event_cap);
		proto_pack_key_u64(lp, "tasks", h->task_cap);
		proto_pack_key_u64(lp, "prices", h->price_cap);
		proto_pack_key_u64(lp, "alerts", h->alert_cap);
		proto_pack_key_u64(lp, "rule_texts", h->text_cap);
		proto_pack_key_u64(lp, "keys_per_agent", h->keys_per_agent);
		state_set_applied(d->st, ledger_commit(d->ledger));
	}
	shm_change_end(shm);
	pthread_mutex_unlock(&d->lock);
}

/* ------------------------------------------------------------- replay */

static int replay_settings(struct dispatch *d, const msgpack_object *body, char *err,
                           size_t errlen)
{
	struct proto_args a;
	struct state_settings set;
	int64_t version, per_agent, per_org;
	int rc;
	const msgpack_object *cap;

	if ((rc = proto_args_map(&a, body, err, errlen)) ||
	    (rc = proto_arg_int(&a, "gate", 1, 1, INT64_MAX, &version, NULL)))
		return rc;
	/* before its fields: an older record lacks the newer ones, and the version says why */
	if (version != GATE_VERSION) {
		sc_errorf(err, errlen,
		          "the ledger was written by gate version %lld and this daemon implements "
		          "version %d: its records cannot be replayed (docs/DESIGN.md, \"Upgrades\")",
		          (long long)version, GATE_VERSION);
		return SC_EUNSUPPORTED;
	}
	if ((rc = proto_arg_int(&a, "hold_ttl_us", 1, 1, INT64_MAX, &set.hold_ttl_us, NULL)) ||
	    (rc = proto_arg_int(&a, "task_max_usage", 1, 0, INT64_MAX, &set.task_max_usage, NULL)) ||
	    (rc = proto_arg_int(&a, "alert_velocity", 1, 0, INT64_MAX, &set.alert_velocity, NULL)) ||
	    (rc = proto_arg_bool(&a, "expiry_charges", 1, &set.expiry_charges, NULL)) ||
	    (rc = proto_arg_int(&a, "max_holds_per_agent", 1, 0, UINT32_MAX, &per_agent, NULL)) ||
	    (rc = proto_arg_int(&a, "max_holds_per_org", 1, 0, UINT32_MAX, &per_org, NULL)) ||
	    (rc = proto_arg_obj(&a, "capacity", 1, MSGPACK_OBJECT_MAP, &cap, NULL)))
		return rc;
	set.max_holds_per_agent = (uint32_t)per_agent;
	set.max_holds_per_org = (uint32_t)per_org;
	state_set_settings(d->st, &set);
	return 0;
}

int dispatch_settings_caps(const char *body, size_t len, struct shm_caps *caps)
{
	static const char *const keys[] = {"orgs",   "agents", "rules",  "holds",
	                                   "history", "events", "tasks",  "prices",
	                                   "alerts", "rule_texts", "keys_per_agent"};
	uint32_t *fields[] = {&caps->orgs,   &caps->agents, &caps->rules,
	                      &caps->holds,  &caps->txns,   &caps->events,
	                      &caps->tasks,  &caps->prices, &caps->alerts,
	                      &caps->texts,  &caps->keys_per_agent};
	const msgpack_object *cap;
	msgpack_unpacked u;
	struct proto_args a, sub;
	char err[ERRLEN];
	size_t off = 0;
	int rc = SC_EINVAL;

	msgpack_unpacked_init(&u);
	if (msgpack_unpack_next(&u, body, len, &off) == MSGPACK_UNPACK_SUCCESS) {
		rc = proto_args_map(&a, &u.data, err, sizeof(err));
		if (rc == 0)
			rc = proto_arg_obj(&a, "capacity", 1, MSGPACK_OBJECT_MAP, &cap, NULL);
		if (rc == 0)
			rc = proto_args_sub(&a, cap, "capacity", &sub);
		for (size_t i = 0; rc == 0 && i < sizeof(keys) / sizeof(keys[0]); i++) {
			int kept = fields[i] == &caps->keys_per_agent;
			/* rules is parsed before rule_texts, its default; keys_per_agent may be 0 */
			int64_t v = kept ? 0 : caps->rules;

			/*
			 * rule_texts came with gate version 3 and keys_per_agent with 4;
			 * older ledgers are refused later, by version
			 */
			rc = proto_arg_int(&sub, keys[i], fields[i] != &caps->texts && !kept, !kept,
			                   UINT32_MAX, &v, NULL);
			*fields[i] = (uint32_t)v;
		}
	}
	msgpack_unpacked_destroy(&u);
	return rc;
}

/* The method of each record type, found once (loop thread). */
static const struct method *method_of_type(unsigned type)
{
	static const struct method *by_type[LEDGER_TYPE_END];
	static int filled;

	if (!filled) {
		for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
			if (methods[i].ledger_type && methods[i].ledger_type < LEDGER_TYPE_END)
				by_type[methods[i].ledger_type] = &methods[i];
		filled = 1;
	}
	return type < LEDGER_TYPE_END ? by_type[type] : NULL;
}

/*
 * A method's result on replay is compared with the recorded one while it is
 * packed, instead of being copied into a buffer and compared afterwards:
 * the packer's writes go to same_write, which checks them against the
 * expected bytes, the nil error (0xc0) followed by the recorded result.
 */
struct replay_result {
	const char *want; /* the recorded result */
	size_t len, pos;  /* its length; bytes matched so far, the nil error included */
	int differs;
	size_t diff_at;   /* when it differs: offset in want of the first byte that does */
};

static int same_write(void *data, const char *buf, size_t len)
{
	struct replay_result *w = data;

	if (w->differs || len == 0)
		return 0;
	if (w->pos == 0) {
		if ((unsigned char)buf[0] != 0xc0) {
			w->differs = 1;
			return 0;
		}
		w->pos = 1;
		buf++;
		len--;
	}
	if (len > w->len + 1 - w->pos || memcmp(w->want + w->pos - 1, buf, len) != 0) {
		size_t k = 0;

		while (k < len && w->pos - 1 + k < w->len && w->want[w->pos - 1 + k] == buf[k])
			k++;
		w->differs = 1;
		w->diff_at = w->pos - 1 + k;
	} else {
		w->pos += len;
	}
	return 0;
}

/*
 * Names the field of a recorded result (a map) whose bytes hold offset at,
 * for the error of a record that replayed differently: "the field
 * \"balance\"", or "the result" when it is not a map field.
 */
static void differing_field(const char *want, size_t len, size_t at, char *out, size_t outlen)
{
	const unsigned char *p = (const unsigned char *)want;
	msgpack_unpacked u;
	size_t off, n;

	snprintf(out, outlen, "the result");
	if (len == 0)
		return;
	if ((p[0] & 0xf0) == 0x80) {
		n = p[0] & 0x0f;
		off = 1;
	} else if (p[0] == 0xde && len >= 3) {
		n = (size_t)p[1] << 8 | p[2];
		off = 3;
	} else {
		return;
	}
	msgpack_unpacked_init(&u);
	for (size_t i = 0; i < n; i++) {
		char key[64];

		if (msgpack_unpack_next(&u, want, len, &off) != MSGPACK_UNPACK_SUCCESS ||
		    u.data.type != MSGPACK_OBJECT_STR)
			break;
		snprintf(key, sizeof(key), "%.*s", (int)u.data.via.str.size, u.data.via.str.ptr);
		if (at < off) { /* the key itself differs */
			snprintf(out, outlen, "the key \"%s\"", key);
			break;
		}
		if (msgpack_unpack_next(&u, want, len, &off) != MSGPACK_UNPACK_SUCCESS)
			break;
		if (at < off) {
			snprintf(out, outlen, "the field \"%s\"", key);
			break;
		}
	}
	msgpack_unpacked_destroy(&u);
}

/*
 * Runs a method record again: run() without the check of the fields'
 * names, which the record passed when it was written (its bytes are the
 * request's, under the record's checksum), and with same_write as the
 * result's writer. An org's time zone was resolved by the live daemon: the
 * replay reads the rule from the recorded result instead.
 */
static int replay_run(struct dispatch *d, const struct method *m, const struct ledger_record *r,
                      const msgpack_object *params, size_t off, struct call *c,
                      struct replay_result *w)
{
	struct proto_args args;
	msgpack_packer spk;
	msgpack_unpacked res;
	size_t roff = 0;
	/* a time zone's rule, or a token's hash, comes from the recorded result */
	int tz = r->type == LEDGER_ORGS_CREATE || r->type == LEDGER_ORGS_UPDATE ||
	         r->type == LEDGER_AGENTS_CREATE || r->type == LEDGER_AGENTS_ROTATE_TOKEN ||
	         r->type == LEDGER_TOKENS_CREATE;
	int rc;

	*w = (struct replay_result){.want = r->body + 1 + off, .len = r->body_len - 1 - off};
	msgpack_packer_init(&spk, w, same_write);
	*c = (struct call){.d = d, .st = d->st, .m = state_shm(d->st), .a = &args, .pk = &spk,
	                   .now = r->time, .replaying = 1};
	if (tz) {
		msgpack_unpacked_init(&res);
		if (msgpack_unpack_next(&res, w->want, w->len, &roff) == MSGPACK_UNPACK_SUCCESS)
			d->recorded = &res.data;
	}
	/*
	 * The field-name check stays: a record written by a newer daemon with
	 * a field this one does not know is refused by name, and the check
	 * builds the argument index the getters use.
	 */
	if ((rc = proto_args_init(&args, params, c->err, sizeof(c->err))) == 0 &&
	    (rc = proto_args_expect(&args, m->fields)) == 0)
		rc = m->fn(c);
	if (tz) {
		d->recorded = NULL;
		msgpack_unpacked_destroy(&res);
	}
	return rc;
}

/* A clock record: [step], applied at the record's time. */
static int replay_clock(struct dispatch *d, const struct ledger_record *r)
{
	msgpack_unpacked u;
	size_t off = 0;
	int rc = SC_EINVAL;

	msgpack_unpacked_init(&u);
	if (msgpack_unpack_next(&u, r->body, r->body_len, &off) == MSGPACK_UNPACK_SUCCESS &&
	    off == r->body_len && u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size == 1) {
		const msgpack_object *o = &u.data.via.array.ptr[0];

		if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ||
		    (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX)) {
			gate_clock_step(d->st, o->via.i64, r->time);
			rc = 0;
		}
	}
	msgpack_unpacked_destroy(&u);
	return rc;
}

/*
 * The record's objects live in one zone kept from one record to the next
 * and cleared before each: a replay of millions of records allocates
 * nothing per record for decoding.
 */
int dispatch_replay(struct dispatch *d, const struct ledger_record *r, char *err, size_t errlen)
{
	const struct method *m = method_of_type(r->type);
	msgpack_unpack_return ur = MSGPACK_UNPACK_PARSE_ERROR;
	msgpack_object params;
	struct replay_result w;
	size_t off = 0;
	struct call c;
	int rc = 0;

	if (r->type == LEDGER_EXPIRE) {
		gate_expire(d->st, r->time);
	} else if (r->type == LEDGER_ROLL) {
		gate_roll(d->st, r->time);
	} else if (r->type == LEDGER_CLOCK) {
		if ((rc = replay_clock(d, r)) != 0)
			sc_errorf(err, errlen, "record %llu: a clock record's body is not [step]",
			          (unsigned long long)r->seq);
	} else if (!d->replay_zone && !(d->replay_zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE))) {
		sc_errorf(err, errlen, "record %llu: out of memory", (unsigned long long)r->seq);
		rc = -ENOMEM;
	} else if (msgpack_zone_clear(d->replay_zone), r->type == LEDGER_SETTINGS) {
		if (msgpack_unpack(r->body, r->body_len, &off, d->replay_zone, &params) !=
		    MSGPACK_UNPACK_SUCCESS)
			rc = SC_EINVAL;
		else
			rc = replay_settings(d, &params, err, errlen);
	} else if (!m || r->body_len < 1 ||
	           ((unsigned char)r->body[0] != 0x92 && (unsigned char)r->body[0] != 0x93) ||
	           ((unsigned char)r->body[0] == 0x93 &&
	            msgpack_unpack(r->body + 1, r->body_len - 1, &off, d->replay_zone, &params) !=
	                MSGPACK_UNPACK_EXTRA_BYTES) ||
	           ((ur = msgpack_unpack(r->body + 1, r->body_len - 1, &off, d->replay_zone,
	                                 &params)) != MSGPACK_UNPACK_SUCCESS &&
	            ur != MSGPACK_UNPACK_EXTRA_BYTES)) {
		sc_errorf(err, errlen, "record %llu: not a %s record this daemon can apply",
		          (unsigned long long)r->seq, ledger_type_name(r->type));
		rc = SC_EINVAL;
	} else if ((rc = replay_run(d, m, r, &params, off, &c, &w)) != 0) {
		sc_errorf(err, errlen, "record %llu (%s) failed on replay: %s",
		          (unsigned long long)r->seq, m->name, c.err);
	} else if (w.differs || w.pos != w.len + 1) {
		char field[96];

		differing_field(w.want, w.len, w.differs ? w.diff_at : w.pos - 1, field,
		                sizeof(field));
		sc_errorf(err, errlen, "record %llu (%s) replayed to a different result (%s differs)",
		          (unsigned long long)r->seq, m->name, field);
		rc = SC_EINTERNAL;
	}
	if (rc == 0)
		state_set_applied(d->st, r->seq);
	return rc;
}

void dispatch_replay_end(struct dispatch *d)
{
	if (d->replay_zone)
		msgpack_zone_free(d->replay_zone);
	d->replay_zone = NULL;
}
