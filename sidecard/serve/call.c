/*
 * call.c: the call-context API of the method families (call.h): results,
 * the packers of the protocol's objects, the argument readers, the listing
 * of a ring, the token a reply shows once and the standing of a
 * connection's token. It sits below every dispatch_*.c file and dispatch.c,
 * and calls only the engine, the store and the protocol's packing.
 *
 * Threads: whichever thread runs the request, under the commit lock
 * (dispatch.c), or the loop thread during a replay. Ownership: everything
 * packed goes to the call's packer (c->pk); nothing here keeps memory past
 * the call, except the connection counts in d->agent_conns, which
 * dispatch_access.c allocates and frees.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "call.h"
#include "pricing.h"
#include "tz.h"

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

void pack_rules(struct call *c, uint32_t agent_slot)
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

int call_wallet_args(struct proto_args *a, int with_debt, sc_wallet_update *u)
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

/* On replay, the recorded result (d->recorded) as arguments to read: 1, or 0 if there is none. */
static int recorded_result(struct call *c, struct proto_args *rec)
{
	return c->d->recorded && proto_args_map(rec, c->d->recorded, NULL, 0) == 0;
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

int call_metadata_arg(struct call *c, uint8_t *buf, size_t *len)
{
	struct fixed_buf b = {buf, 0, SHM_METADATA_MAX, 0};
	const msgpack_object *meta;
	msgpack_packer mp;
	int present, rc = proto_arg_obj(c->a, "metadata", 0, MSGPACK_OBJECT_MAP, &meta, &present);

	*len = 0;
	if (rc != 0 || !present)
		return rc;
	msgpack_packer_init(&mp, &b, fixed_write);
	msgpack_pack_object(&mp, *meta);
	if (b.overflow)
		return call_fail(c, SC_EINVAL, "metadata: more than %d bytes packed", SHM_METADATA_MAX);
	*len = b.len;
	return 0;
}

int call_timezone_arg(struct call *c, char name[SHM_TZ_MAX + 1], char rule[SHM_TZ_MAX + 1],
                      int *present)
{
	struct proto_args rec;
	struct state_str s, r;
	int rc = call_arg_str(c, c->a, "timezone", 0, SHM_TZ_MAX, &s, present);

	if (rc != 0 || !*present)
		return rc;
	memcpy(name, s.p, s.len);
	name[s.len] = '\0';
	/* replay: the rule the live daemon resolved, whatever the tzdata says now */
	if (recorded_result(c, &rec) &&
	    proto_arg_str(&rec, "timezone_rule", 1, SHM_TZ_MAX, &r.p, &r.len, NULL) == 0) {
		memcpy(rule, r.p, r.len);
		rule[r.len] = '\0';
		return 0;
	}
	rc = tz_resolve(name, rule, SHM_TZ_MAX + 1, c->err, sizeof(c->err));
	if (rc != 0 && strncmp(c->err, "timezone", 8) != 0) {
		char why[sizeof(c->err)];

		memcpy(why, c->err, sizeof(why));
		return call_fail(c, rc, "timezone: %s", why);
	}
	return rc;
}

int call_tokens_arg(struct call *c, uint64_t tokens[3], int *any)
{
	static const char *const keys[PRICING_KINDS] = {"input_tokens", "output_tokens",
	                                                "cached_input_tokens"};
	int present, rc;

	*any = 0;
	for (int k = 0; k < PRICING_KINDS; k++) {
		int64_t v = 0;

		if ((rc = proto_arg_int(c->a, keys[k], 0, 0, INT64_MAX, &v, &present)))
			return rc;
		tokens[k] = (uint64_t)v;
		*any |= present;
	}
	return 0;
}

/* ------------------------------------------------------------- listings */

int list_ring(struct call *c, const struct ring *r, const struct ring_filter *f,
                     int64_t limit)
{
	const void **found = malloc((size_t)limit * sizeof(*found));
	size_t n = 0;

	if (!found)
		return call_fail(c, SC_EINTERNAL, "out of memory");
	uint64_t start = f->before && f->before < r->next_id ? f->before : r->next_id;

	for (uint64_t id = start - 1; id > 0 && r->next_id - id <= r->cap && n < (size_t)limit;
	     id--) {
		const void *rec = r->get(c->st, id);

		if (rec && r->keep(rec, f))
			found[n++] = rec;
	}
	call_ok(c);
	msgpack_pack_array(c->pk, n);
	for (size_t i = 0; i < n; i++)
		r->pack(c, found[i]);
	free(found);
	return 0;
}

/* ------------------------------------------------------------- a token shown once */

int call_pack_secret(struct call *c, const char *prefix, uint64_t id,
                     uint8_t hash[ACCESS_HASH_BYTES])
{
	char hex[2 * ACCESS_HASH_BYTES + 1];
	msgpack_packer *pk = c->pk;

	if (c->replaying) {
		struct proto_args rec;
		struct state_str h;

		if (!recorded_result(c, &rec) ||
		    proto_arg_str(&rec, "token_sha256", 1, sizeof(hex) - 1, &h.p, &h.len, NULL) != 0 ||
		    access_hash_from_hex(h.p, h.len, hash) != 0)
			return call_fail(c, SC_EINVAL, "token_sha256: missing from the record");
	} else {
		int rc = access_token_new(prefix, id, c->secret, hash);

		if (rc != 0)
			return call_fail(c, SC_EINTERNAL, "cannot draw a token: %s", sc_strerror(rc));
		c->secret_at = c->d->scratch.size;
	}
	access_hash_hex(hash, hex);
	proto_pack_key_str(pk, "token_sha256", hex);
	return 0;
}

int call_token_recorded(struct call *c)
{
	struct proto_args rec;
	int present = 0;
	const msgpack_object *o;

	if (!c->replaying)
		return 1;
	return recorded_result(c, &rec) &&
	       proto_arg_obj(&rec, "token_sha256", 0, -1, &o, &present) == 0 && present;
}

static void set_agent_token(struct call *c, uint32_t slot, const uint8_t hash[ACCESS_HASH_BYTES])
{
	struct shm_agent *a = &c->m->agents[slot];

	state_agent_write_begin(a);
	memcpy(a->token_hash, hash, ACCESS_HASH_BYTES);
	shm_agent_write_end(a);
}

int call_pack_agent_token(struct call *c, uint32_t slot)
{
	uint8_t hash[ACCESS_HASH_BYTES];
	int rc = call_pack_secret(c, ACCESS_AGENT_PREFIX, c->m->agents[slot].id, hash);

	if (rc == 0)
		set_agent_token(c, slot, hash);
	return rc;
}

/* ------------------------------------------------------------- a connection's token */

int call_peer_valid(const struct dispatch *d, const struct access_peer *p)
{
	const struct shm *m = state_shm(d->st);

	if (!p->by_token)
		return 1;
	if (p->role == ACCESS_AGENT) {
		const struct shm_agent *a = &m->agents[p->slot];

		return a->rec.used && a->id == p->id && access_hash_tag(a->token_hash) == p->tag;
	}
	const struct shm_token *t = &m->hdr->tokens[p->slot];

	return t->rec.used && t->id == p->id && access_hash_tag(t->hash) == p->tag;
}

void call_peer_unbind(struct dispatch *d, struct access_peer *p)
{
	if (p->role == ACCESS_AGENT && p->by_token && d->agent_conns && d->agent_conns[p->slot])
		d->agent_conns[p->slot]--;
}

void call_peer_closed(struct dispatch *d, struct access_peer *p)
{
	call_peer_unbind(d, p);
	p->role = p->cred_role;
	p->actor_len = 0;
	p->by_token = 0;
}
