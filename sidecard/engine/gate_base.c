/*
 * gate_base.c: the engine's lowest floor (gate_base.h): recording a settled
 * transaction that moved money in or out of a wallet, which a top-up
 * (gate.c), a refill or a carve (period.c) all write the same way.
 *
 * Threads: the daemon's loop thread only (the segment's single writer),
 * inside the gate's change brackets. Calls only the store.
 */
#include <stdio.h>
#include <string.h>

#include "gate_base.h"

uint64_t gate_wallet_txn(struct state *st, uint64_t agent_id, uint64_t org_id,
                           const char *action, const char *type, int64_t estimate, int64_t charged,
                           int64_t balance_after, const uint8_t *meta, size_t meta_len, int64_t now)
{
	struct shm_txn *t = state_txn_begin(st, agent_id, SHM_NONE);
	uint64_t id = t->id;

	t->org_id = org_id;
	t->estimate = estimate;
	t->charged = charged;
	t->balance_after = balance_after;
	t->created_at = t->settled_at = now;
	t->status = SC_TXN_SETTLED;
	t->outcome = SC_OUTCOME_SUCCESS;
	t->has_outcome = 1;
	snprintf(t->action, sizeof(t->action), "%s", action);
	snprintf(t->type, sizeof(t->type), "%s", type);
	t->meta_len = (uint16_t)meta_len;
	if (meta_len)
		memcpy(t->meta, meta, meta_len);
	shm_write_end(&t->rec.seq);
	return id;
}
