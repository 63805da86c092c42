/*
 * dispatch_gate.c: the two methods of the gate (check and report;
 * PROTOCOL.md), the path every paid action takes twice. A check's
 * arguments become a gate_check_req and its decision the result; a
 * report's outcome and actual cost, or its model's token counts, settle the
 * hold. Both are recorded (LEDGER_CHECK, LEDGER_REPORT) unless they are an
 * idempotent replay (c->replayed), which changes nothing.
 *
 * Threads: the thread serving the request, under the commit lock, or the
 * loop thread during a replay (dispatch.c). Each result is built in one
 * stack buffer and written to the call's packer at once.
 */
#include <string.h>

#include "call.h"
#include "common.h"
#include "dispatch_methods.h"
#include "gate.h"
#include "log.h"

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

int m_check(struct call *c)
{
	struct gate_check_req req;
	struct gate_decision d;
	uint8_t metabuf[SHM_METADATA_MAX];
	size_t meta_len;
	int rc;

	memset(&req, 0, sizeof(req));
	if ((rc = proto_arg_u64(c->a, "agent_id", 1, &req.agent_id, NULL)) ||
	    (rc = call_arg_str(c, c->a, "action", 1, SC_ACTION_MAX, &req.action, NULL)) ||
	    (rc = proto_arg_money(c->a, "estimated_cost", 1, &req.estimate, NULL)) ||
	    (rc = call_arg_str(c, c->a, "type", 0, SC_TYPE_MAX, &req.type, NULL)) ||
	    (rc = call_arg_str(c, c->a, "idempotency_key", 0, SC_KEY_MAX, &req.key, NULL)) ||
	    (rc = call_arg_str(c, c->a, "task_id", 0, SC_KEY_MAX, &req.task, NULL)) ||
	    (rc = call_metadata_arg(c, metabuf, &meta_len)))
		return rc;
	if (meta_len) {
		req.meta = metabuf;
		req.meta_len = meta_len;
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

int m_report(struct call *c)
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
	    (rc = call_tokens_arg(c, tokens, &has_tokens)))
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
