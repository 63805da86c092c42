/*
 * alerts.h: the alerts the gate raises (PROTOCOL.md "Alerts"): low balance,
 * high spend velocity, budget exceeded and anomaly, each at most once per
 * threshold per period, kept in the segment's alert ring.
 *
 * Thread contract: the daemon's loop thread only, inside the gate's change
 * brackets (it writes the wallets' alert marks and the alert ring).
 */
#ifndef SIDECARD_ALERTS_H
#define SIDECARD_ALERTS_H

#include <stdint.h>

#include "gate_base.h"
#include "period.h"
#include "state.h"

/* What changed a wallet, for alerts_evaluate. */
struct alerts_change {
	struct gate_wallet_ref wallet; /* an agent's (its org's is evaluated too) or an org's */
	uint64_t txn_id;               /* the transaction that changed it; 0: none */
	int allowed_check;             /* an allowed check: counts toward the velocity */
	int anomaly;                   /* enum gate_risk of the check's anomaly step */
	int64_t ratio;                 /* the anomaly's estimate over the average cost */
};

/*
 * Evaluates the alerts of the changed wallet(s) at now and records those
 * that fire. Called by the gate after a check, a settlement or expiry, a
 * transfer and an adjustment, and by wallets.update. Deterministic in the
 * state and now, so a ledger replay raises the same alerts.
 */
void alerts_evaluate(struct state *st, const struct alerts_change *ch, int64_t now);

#endif /* SIDECARD_ALERTS_H */
