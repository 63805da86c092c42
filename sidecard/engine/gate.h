/*
 * gate.h: the gating engine: check (evaluate and place holds), report
 * (settle), expiry of holds never reported, transfers and adjustments, and
 * the helpers only the gate uses (UTC days, daily limits). It is the
 * engine's top: it calls period.c, score.c, pricing.c, alerts.c and
 * gate_base.c, none of which calls it; serving calls the engine through
 * this header, which also brings in period.h and score.h.
 *
 * Thread contract: the daemon's loop thread only (it is the state's single
 * writer), so a check's reads and its holds form one atomic step: no other
 * check can interleave, which is what makes overspend impossible.
 */
#ifndef SIDECARD_GATE_H
#define SIDECARD_GATE_H

#include <stdint.h>

#include "common.h"
#include "gate_base.h"
#include "period.h"
#include "score.h"
#include "state.h"
#include "state_record.h"

/*
 * The version of the gate's semantics. A ledger is replayed through the
 * gate, so a daemon whose decisions differ for the same records must not
 * replay an older ledger: the settings record carries this number and
 * recovery refuses a mismatch. Raise it with any change of decisions.
 */
#define GATE_VERSION 4

#define GATE_US_PER_DAY INT64_C(86400000000)
#define GATE_US_PER_MINUTE INT64_C(60000000)

/* The word of a risk level (enum gate_risk matches enum sc_risk). */
const char *gate_risk_name(int risk);

struct gate_check_req {
	uint64_t agent_id;
	struct state_str action;
	int64_t estimate;
	struct state_str type;    /* len 0: "other" */
	struct state_str key;     /* len 0: none */
	struct state_str task;    /* len 0: none */
	const uint8_t *meta;      /* packed msgpack map, or NULL */
	size_t meta_len;          /* <= SHM_METADATA_MAX */
};

struct gate_decision {
	int allowed;
	uint64_t txn_id; /* 0 only for agent_not_found */
	char block_reason[SC_REASON_MAX + 1];
	int risk;
	int64_t available;
	int replayed;
	unsigned n_warnings;
	char warnings[SC_WARNINGS_MAX][SC_REASON_MAX + 1];
};

struct gate_settlement {
	uint64_t txn_id;
	enum sc_outcome outcome;
	int64_t charged;
	int64_t balance;
	int64_t debt;
	int replayed;
	char model[SC_NAME_MAX + 1]; /* a report priced from tokens: the model; "" otherwise */
	uint32_t rate_version;       /* ... and the version of its rate; 0 otherwise */
};

/*
 * Evaluates a check at time now (microseconds since the epoch) in the order
 * PROTOCOL.md gives and, when allowed, places its holds. A blocked decision
 * returns 0; errors (SC_EINVAL, SC_EEXISTS for a mismatched idempotency key,
 * SC_ELIMIT when the hold table is full) change nothing.
 */
int gate_check(struct state *st, const struct gate_check_req *req, int64_t now,
               struct gate_decision *out, char *err, size_t errlen);

/* Settles an open transaction. has_actual = 0: the outcome's default cost. */
int gate_report(struct state *st, uint64_t txn_id, enum sc_outcome outcome, int has_actual,
                int64_t actual, int64_t now, struct gate_settlement *out, char *err,
                size_t errlen);

/*
 * Settles an open transaction with the cost of tokens (input, output, cached
 * input) of model at the rate in force when the check placed the hold (the
 * transaction's created_at), for any outcome; the transaction records the
 * model, the rate's version and the tokens. SC_ENOTFOUND for a model without
 * a rate at that time and SC_ERANGE for a cost beyond 64 bits, changing
 * nothing. Reporting a settled transaction again replays it if the outcome,
 * the model and the cost are the same.
 */
int gate_report_tokens(struct state *st, uint64_t txn_id, enum sc_outcome outcome,
                       struct state_str model, const uint64_t tokens[3], int64_t now,
                       struct gate_settlement *out, char *err, size_t errlen);

/*
 * Moves amount (> 0) between two wallets of one org atomically and records
 * a debit and a credit transaction (ids[0], ids[1]) carrying meta (a packed
 * {reason} map). SC_EINVAL beyond the source's available funds.
 */
int gate_transfer(struct state *st, const struct gate_wallet_ref *from,
                  const struct gate_wallet_ref *to, int64_t amount, const uint8_t *meta,
                  size_t meta_len, int64_t now, uint64_t ids[2], char *err, size_t errlen);
/* Credits (amount > 0) or debits (< 0, at most the balance) a wallet, recorded with meta. */
int gate_adjust(struct state *st, const struct gate_wallet_ref *ref, int64_t amount,
                const uint8_t *meta, size_t meta_len, int64_t now, uint64_t *txn_id, char *err,
                size_t errlen);

/* Expires every hold due at now; returns how many. */
unsigned gate_expire(struct state *st, int64_t now);
/* When the oldest hold expires, or INT64_MAX if there is none. */
int64_t gate_next_expiry(struct state *st);

/* ---- helpers ---- */

/* 1 for the block reasons that are risk controls (fleet's risk_events_blocked). */
int gate_risk_reason(const char *reason);

/* UTC day and minute numbers of a time in microseconds. */
int32_t gate_day(int64_t now);
int32_t gate_minute(int64_t now);

/* Allowed checks a rule has counted in the hourly window at now. */
int64_t gate_rate_count(const struct shm_rule *r, int64_t now);

/* Amount counted against a daily limit on local day today: spent that day plus held. */
int64_t gate_daily_used(int32_t day, int64_t spent, int64_t held, int32_t today);

#endif /* SIDECARD_GATE_H */
