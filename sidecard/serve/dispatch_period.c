/*
 * dispatch_period.c: the methods of money over time and across the org
 * hierarchy: an org's time zone (orgs.update), spend per period (spend)
 * and sub-budgets (wallets.carve, wallets.release). PROTOCOL.md describes
 * them; orgs.create's timezone and wallets.update's period are read by
 * dispatch_agents.c and dispatch_wallets.c.
 *
 * A time zone is resolved once, when it is set, into the POSIX rule the
 * daemon keeps and records in the ledger with the org; a replay takes the
 * rule from the record, so it never depends on the tzdata installed then
 * (call_timezone_arg, call.c).
 *
 * Threads: the loop thread, through dispatch_request and dispatch_replay.
 */
#include "call.h"
#include "dispatch_methods.h"

int m_orgs_update(struct call *c)
{
	char name[SHM_TZ_MAX + 1], rule[SHM_TZ_MAX + 1];
	uint32_t slot;
	int present, rc;

	if ((rc = call_org_id_arg(c, "org_id", &slot, NULL)) ||
	    (rc = call_timezone_arg(c, name, rule, &present)))
		return rc;
	if (present)
		gate_org_timezone(c->st, slot, name, rule, c->now);
	call_ok(c);
	pack_org(c, slot);
	return 0;
}

int m_spend(struct call *c)
{
	struct gate_wallet_ref ref;
	const struct shm_wallet *w;
	const struct shm_org *o;
	const struct shm_calendar *cal;
	msgpack_packer *pk;
	int rc;

	if ((rc = call_wallet_ref_arg(c, "", &ref)))
		return rc;
	w = call_wallet(c, &ref);
	o = call_wallet_org(c, &ref);
	cal = &o->cal;
	pk = call_ok(c);
	call_map(c, 12);
	proto_pack_key_i64(pk, "total", w->total_spent);
	proto_pack_key_i64(pk, "daily", gate_period_spent(w, cal, SHM_PERIOD_DAILY));
	proto_pack_key_i64(pk, "weekly", gate_period_spent(w, cal, SHM_PERIOD_WEEKLY));
	proto_pack_key_i64(pk, "monthly", gate_period_spent(w, cal, SHM_PERIOD_MONTHLY));
	proto_pack_key_i64(pk, "held", w->held);
	proto_pack_key_i64(pk, "budget", w->budget);
	proto_pack_key_str(pk, "period", sc_period_name(w->period));
	proto_pack_key_str(pk, "timezone", o->tz_name[0] ? o->tz_name : "UTC");
	proto_pack_key_i64(pk, "daily_reset_at", cal->next_day);
	proto_pack_key_i64(pk, "weekly_reset_at", cal->next_week);
	proto_pack_key_i64(pk, "monthly_reset_at", cal->next_month);
	proto_pack_cstr(pk, "period_reset_at");
	if (w->period != SHM_PERIOD_NONE)
		msgpack_pack_int64(pk, gate_period_end(w, cal));
	else
		msgpack_pack_nil(pk);
	return 0;
}

/* {agent: wallet, org: wallet} of an agent with or without a sub-budget. */
static void pack_pair(struct call *c, uint32_t agent_slot, size_t extra)
{
	struct gate_wallet_ref agent = {agent_slot, 0};
	struct gate_wallet_ref org = {c->m->agents[agent_slot].org_slot, 1};

	call_map(c, 2 + extra);
	proto_pack_cstr(c->pk, "agent");
	pack_wallet(c, &agent);
	proto_pack_cstr(c->pk, "org");
	pack_wallet(c, &org);
}

int m_wallets_carve(struct call *c)
{
	uint8_t meta[SHM_METADATA_MAX];
	size_t meta_len;
	int64_t amount;
	uint64_t id;
	uint32_t slot;
	int rc;

	if ((rc = call_agent_arg(c, &slot)) ||
	    (rc = proto_arg_money(c->a, "amount", 1, &amount, NULL)) ||
	    (rc = call_reason_meta(c, meta, &meta_len)) ||
	    (rc = gate_carve(c->st, slot, amount, meta, meta_len, c->now, &id, c->err,
	                     sizeof(c->err))))
		return rc;
	call_ok(c);
	pack_pair(c, slot, 1);
	proto_pack_key_u64(c->pk, "transaction_id", id);
	return 0;
}

int m_wallets_release(struct call *c)
{
	uint32_t slot;
	int rc;

	if ((rc = call_agent_arg(c, &slot)))
		return rc;
	if (!c->m->agents[slot].wallet.carved)
		return call_fail(c, SC_EINVAL, "agent_id: agent %llu has no sub-budget",
		                 (unsigned long long)c->m->agents[slot].id);
	gate_release(c->st, slot);
	call_ok(c);
	pack_pair(c, slot, 0);
	return 0;
}
