/*
 * dispatch_pricing.c: the methods of the rate table (pricing.set,
 * pricing.list, pricing.get; PROTOCOL.md "Pricing"). The token counts a
 * report may carry instead of an actual_cost are read by call_tokens_arg.
 *
 * pricing.set is a change, recorded in the ledger as LEDGER_PRICING_SET
 * with its params and result; replayed at the record's time, a defaulted
 * effective_from and created_at come out the same, so the replayed result
 * is byte-equal. The reads change nothing.
 *
 * Threads: the loop thread, called by dispatch.c for each request.
 */
#include <stdlib.h>

#include "call.h"
#include "dispatch_methods.h"
#include "pricing.h"

/* A price object: {model, version, input, output, cached_input, effective_from, created_at}. */
static void pack_price(struct call *c, const struct shm_price *p)
{
	msgpack_packer *pk = c->pk;

	call_map(c, 7);
	proto_pack_key_str(pk, "model", p->model);
	proto_pack_key_u64(pk, "version", p->version);
	proto_pack_key_i64(pk, "input", p->input);
	proto_pack_key_i64(pk, "output", p->output);
	proto_pack_key_i64(pk, "cached_input", p->cached_input);
	proto_pack_key_i64(pk, "effective_from", p->effective_from);
	proto_pack_key_i64(pk, "created_at", p->created_at);
}

int m_pricing_set(struct call *c)
{
	static const char *const keys[PRICING_KINDS] = {"input", "output", "cached_input"};
	struct pricing_rate r;
	struct state_str model;
	int64_t from;
	int present, rc;
	uint32_t slot;

	if ((rc = call_arg_str(c, c->a, "model", 1, SC_NAME_MAX, &model, NULL)))
		return rc;
	for (int k = 0; k < PRICING_KINDS; k++) {
		if ((rc = proto_arg_money(c->a, keys[k], k != PRICING_CACHED_INPUT,
		                          &r.per_million[k], &present)))
			return rc;
	}
	if (!present)
		r.per_million[PRICING_CACHED_INPUT] = r.per_million[PRICING_INPUT];
	if ((rc = proto_arg_int(c->a, "effective_from", 0, 0, INT64_MAX, &from, &present)))
		return rc;
	if (!present)
		from = c->now;
	if ((rc = pricing_add(c->st, model, &r, from, c->now, &slot, c->err, sizeof(c->err))))
		return rc;
	call_ok(c);
	pack_price(c, &c->m->prices[slot]);
	return 0;
}

int m_pricing_list(struct call *c)
{
	struct state_str model;
	uint32_t *slots, n;
	int present, rc;

	if ((rc = call_arg_str(c, c->a, "model", 0, SC_NAME_MAX, &model, &present)) ||
	    (rc = pricing_list(c->st, present ? &model : NULL, &slots, &n, c->err, sizeof(c->err))))
		return rc;
	call_ok(c);
	msgpack_pack_array(c->pk, n);
	for (uint32_t i = 0; i < n; i++)
		pack_price(c, &c->m->prices[slots[i]]);
	free(slots);
	return 0;
}

int m_pricing_get(struct call *c)
{
	struct state_str model;
	int64_t at;
	int present, rc;
	uint32_t slot;

	if ((rc = call_arg_str(c, c->a, "model", 1, SC_NAME_MAX, &model, NULL)) ||
	    (rc = proto_arg_int(c->a, "at", 0, 0, INT64_MAX, &at, &present)))
		return rc;
	if ((rc = pricing_at(c->st, model, present ? at : c->now, &slot, c->err, sizeof(c->err))))
		return rc;
	call_ok(c);
	pack_price(c, &c->m->prices[slot]);
	return 0;
}
