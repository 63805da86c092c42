/*
 * gate_base.h: the engine's lowest floor: the words every engine file shares
 * (a wallet reference, the risk levels) and the recording of a settled
 * transaction that moved money in or out of a wallet. gate.c, period.c,
 * score.c, alerts.c and pricing.c all build on it; it calls only the store.
 *
 * Thread contract: the daemon's loop thread only (the state's single
 * writer), inside the gate's change brackets.
 */
#ifndef SIDECARD_GATE_BASE_H
#define SIDECARD_GATE_BASE_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "state.h"
#include "state_record.h"

enum gate_risk { GATE_RISK_LOW, GATE_RISK_MEDIUM, GATE_RISK_HIGH };

/* An agent's wallet (org = 0) or an org's (org = 1), by slot. */
struct gate_wallet_ref {
	uint32_t slot;
	int org;
};

/* Records a settled transaction that moved money in or out of a wallet (agent_id 0: the org's). */
uint64_t gate_wallet_txn(struct state *st, uint64_t agent_id, uint64_t org_id, const char *action,
                         const char *type, int64_t estimate, int64_t charged,
                         int64_t balance_after, const uint8_t *meta, size_t meta_len, int64_t now);

#endif /* SIDECARD_GATE_BASE_H */
