/*
 * gate.h: the gating engine: check (evaluate and place holds), report
 * (settle), expiry of holds never reported, and the pure helpers it is built
 * from (action patterns, money arithmetic, UTC days, the hourly window).
 *
 * Thread contract: the daemon's loop thread only (it is the state's single
 * writer), so a check's reads and its holds form one atomic step: no other
 * check can interleave, which is what makes overspend impossible.
 */
#ifndef SIDECARD_GATE_H
#define SIDECARD_GATE_H

#include <stdint.h>

#include "common.h"
#include "state.h"

/*
 * The version of the gate's semantics. A ledger is replayed through the
 * gate, so a daemon whose decisions differ for the same records must not
 * replay an older ledger: the settings record carries this number and
 * recovery refuses a mismatch. Raise it with any change of decisions.
 */
#define GATE_VERSION 4

#define GATE_US_PER_DAY INT64_C(86400000000)
#define GATE_US_PER_MINUTE INT64_C(60000000)

enum gate_risk { GATE_RISK_LOW, GATE_RISK_MEDIUM, GATE_RISK_HIGH };
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

/* An agent's wallet (org = 0) or an org's (org = 1), by slot. */
struct gate_wallet_ref {
	uint32_t slot;
	int org;
};

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

/* ---- scores (score.c) ---- */

#define GATE_SCORE_START 650    /* a new agent's score */
#define GATE_SCORE_BLOCK 400    /* below: score_too_low */
#define GATE_SCORE_THROTTLE 500 /* below: an active agent is throttled */
#define GATE_SCORE_RECOVER 550  /* at or above: an automatically throttled agent is active again */
#define GATE_SCORE_FREEZE 350   /* below: frozen */
#define GATE_ANOMALY_BASELINE 5 /* settled transactions before anomalies are judged */

/* The score PROTOCOL.md defines, from the agent's lifetime counters. */
int gate_score(const struct shm_agent *a);
/* Stores a's new score and applies the status it calls for, with an event. */
void gate_rescore(struct state *st, struct shm_agent *a, int64_t now);
/* The risk an estimate carries against a's average cost; *ratio is set when judged. */
int gate_anomaly(const struct shm_agent *a, int64_t estimate, int64_t *ratio);

/* ---- pure helpers ---- */

/* 1 if s is a valid action: 1..127 printable ASCII bytes, no space, no '*'. */
int gate_action_valid(const char *s, size_t len);
/* 1 if s is a valid match pattern: "*", "<action>.*" or an exact action. */
int gate_pattern_valid(const char *s, size_t len);
/*
 * How specifically pattern matches action: -1 no match, 0 for "*", 1 + the
 * prefix length for "prefix.*", INT_MAX for an exact match.
 */
int gate_pattern_rank(const char *pattern, size_t plen, const char *action, size_t alen);

/* A wallet's balance minus its holds (negative only for a critical agent). */
int64_t gate_available(const struct shm_wallet *w);

/* a + b, or INT64_MAX where the sum would overflow (totals and counters). */
int64_t gate_add_sat(int64_t a, int64_t b);

/* 1 for the block reasons that are risk controls (fleet's risk_events_blocked). */
int gate_risk_reason(const char *reason);

/* UTC day and minute numbers of a time in microseconds. */
int32_t gate_day(int64_t now);
int32_t gate_minute(int64_t now);

/*
 * A sliding hour of four-minute buckets (struct shm_window, shm.h RATE
 * WINDOWS): a rule's allowed calls and an agent's velocity.
 * gate_window_bucket is the bucket number of a time; gate_window_count is
 * what the window holds at now (the bucket of now and the 15 before it,
 * 60 to 64 minutes); gate_window_add counts one at now, clearing the
 * buckets it moves past.
 */
int32_t gate_window_bucket(int64_t now);
int64_t gate_window_count(const struct shm_window *w, int64_t now);
void gate_window_add(struct shm_window *w, int64_t now);
/*
 * Moves a window's buckets by a step of the clock, rounded up to whole
 * buckets: it frees no earlier than the elapsed time says, at most one
 * bucket later.
 */
void gate_window_shift(struct shm_window *w, int64_t step);

/* Allowed checks a rule has counted in the hourly window at now. */
int64_t gate_rate_count(const struct shm_rule *r, int64_t now);

/* Amount counted against a daily limit on local day today: spent that day plus held. */
int64_t gate_daily_used(int32_t day, int64_t spent, int64_t held, int32_t today);

/* Records a settled transaction that moved money in or out of a wallet (agent_id 0: the org's). */
uint64_t gate_wallet_txn(struct state *st, uint64_t agent_id, uint64_t org_id, const char *action,
                         const char *type, int64_t estimate, int64_t charged,
                         int64_t balance_after, const uint8_t *meta, size_t meta_len, int64_t now);

/* ---- calendars, budget periods and sub-budgets (period.c) ---- */

/* The calendar at now of a POSIX TZ rule ("" for UTC). */
void gate_calendar(const char *rule, int64_t now, struct shm_calendar *cal);
/*
 * Rolls every org whose local day ended by now into its new calendar and
 * refills the wallets whose budget period changed. Cheap when nothing is
 * due. Returns the number of orgs rolled. Every gate operation starts with it.
 */
unsigned gate_roll(struct state *st, int64_t now);
/* When the next org's local day ends: the time gate_roll next has work. */
int64_t gate_next_roll(struct state *st);
/*
 * Takes a step of the wall clock (docs/DESIGN.md, "Time"): now is the time
 * after it, now - step the time it replaced. First rolls at now - step what
 * the elapsed time rolled; then moves the open holds' deadlines and the
 * hourly windows by the step, so they keep their elapsed time, and moves
 * every calendar to its date at now, carrying the counters, refill keys and
 * alert marks of the current periods into the periods now falls in. A step
 * begins no period: nothing is refilled, reset or expired by it.
 */
void gate_clock_step(struct state *st, int64_t step, int64_t now);
/* Sets an org's time zone (name as given, its resolved POSIX rule) and its calendar. */
void gate_org_timezone(struct state *st, uint32_t org_slot, const char *name, const char *rule,
                       int64_t now);
/* Sets a wallet's budget period; the first refill comes when the next such period begins. */
void gate_wallet_period(struct state *st, const struct gate_wallet_ref *ref, int period);
/* The key of the wallet's budget period in cal (its day when it has none), and its end. */
int32_t gate_period_key(const struct shm_wallet *w, const struct shm_calendar *cal);
int64_t gate_period_end(const struct shm_wallet *w, const struct shm_calendar *cal);
/*
 * What the wallet was charged in the current period of cal of this kind
 * (SHM_PERIOD_DAILY, WEEKLY or MONTHLY; NONE reads as DAILY): its counter,
 * or 0 when the counter belongs to an earlier period.
 */
int64_t gate_period_spent(const struct shm_wallet *w, const struct shm_calendar *cal, int period);
/* Counts a charge in the wallet's daily, weekly, monthly and total spend. */
void gate_spend_add(struct shm_wallet *w, const struct shm_calendar *cal, int64_t charge);

/* What agent a (NULL: no agent) may use of its org's wallet: available minus others' sub-budgets. */
int64_t gate_org_available(const struct shm_org *o, const struct shm_agent *a);
/* Brings the reservation of a's sub-budget in line with its available funds. */
void gate_carve_sync(struct state *st, struct shm_agent *a);
/*
 * Carves amount (> 0) for an agent from its org's unreserved available funds:
 * the agent's balance grows by amount and what it has available is reserved
 * in the org's wallet for it alone. Recorded as a "carve" transaction.
 */
int gate_carve(struct state *st, uint32_t agent_slot, int64_t amount, const uint8_t *meta,
               size_t meta_len, int64_t now, uint64_t *txn_id, char *err, size_t errlen);
/* Ends an agent's sub-budget: its reservation returns to the org's shared funds. */
void gate_release(struct state *st, uint32_t agent_slot);

#endif /* SIDECARD_GATE_H */
