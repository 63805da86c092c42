/*
 * dispatch_wallets.c: the methods of a wallet, an agent's or an org's
 * (wallets.get, wallets.update, wallets.transfer, wallets.adjust;
 * PROTOCOL.md "Wallets"). A wallet is named by agent_id or org_id, exactly
 * one (call_wallet_ref_arg). The changes are recorded by dispatch.c; a
 * transfer and an adjustment carry their {reason} as a transaction's
 * metadata. Spend per period and sub-budgets are dispatch_period.c's.
 *
 * Threads: the thread serving the request, under the commit lock, or the
 * loop thread during a replay (dispatch.c).
 */
#include "alerts.h"
#include "call.h"
#include "dispatch_methods.h"
#include "gate.h"

int m_wallets_get(struct call *c)
{
	struct gate_wallet_ref ref;
	int rc;

	if ((rc = call_wallet_ref_arg(c, "", &ref)))
		return rc;
	call_ok(c);
	pack_wallet(c, &ref);
	return 0;
}

int m_wallets_update(struct call *c)
{
	struct gate_wallet_ref ref;
	sc_wallet_update u;
	int period = 0, has_period, rc;

	if ((rc = call_wallet_ref_arg(c, "", &ref)) || (rc = call_wallet_args(c->a, 1, &u)) ||
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

int m_wallets_transfer(struct call *c)
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

int m_wallets_adjust(struct call *c)
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
