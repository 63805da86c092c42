/*
 * dispatch_agents.c: the methods of orgs, agents and the agents' rules
 * (orgs.create, orgs.list, agents.create, .get, .list, .update, .delete,
 * rules.add, .list, .update, .remove; PROTOCOL.md). The state checks and
 * writes each change (sidecard/store/state.c); these read the arguments,
 * nested wallet and rule maps included, and pack the objects. A time zone
 * changed after the org's creation (orgs.update) is dispatch_period.c's.
 *
 * agents.create makes the agent's token (call_pack_agent_token), shown
 * once in the reply; an agent deleted moves the token epoch, so that its
 * connections' tokens are looked at again (dispatch.c).
 *
 * Threads: the thread serving the request, under the commit lock, or the
 * loop thread during a replay (dispatch.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "call.h"
#include "dispatch_methods.h"
#include "gate.h"

static const char *const wallet_fields[] = {WALLET_FIELDS, NULL};
static const char *const rule_fields[] = {RULE_FIELDS, NULL};

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

int m_orgs_create(struct call *c)
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

int m_orgs_list(struct call *c)
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

int m_agents_create(struct call *c)
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
	                (rc = call_wallet_args(&sub, 0, &spec.wallet))))
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

int m_agents_get(struct call *c)
{
	uint32_t slot;
	int rc;

	if ((rc = call_agent_arg(c, &slot)))
		return rc;
	call_ok(c);
	pack_agent(c, slot);
	return 0;
}

int m_agents_list(struct call *c)
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

int m_agents_update(struct call *c)
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

int m_agents_delete(struct call *c)
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

int m_rules_add(struct call *c)
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

int m_rules_list(struct call *c)
{
	uint32_t slot;
	int rc;

	if ((rc = call_agent_arg(c, &slot)))
		return rc;
	call_ok(c);
	pack_rules(c, slot);
	return 0;
}

int m_rules_update(struct call *c)
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

int m_rules_remove(struct call *c)
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
