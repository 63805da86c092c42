/*
 * period.h: calendars, budget periods and sub-budgets (period.c): an org's
 * local day and its roll, a wallet's period counters and refills, the steps
 * of the wall clock, and the funds an agent carves from its org's wallet.
 *
 * Thread contract: the daemon's loop thread only (the state's single
 * writer), inside the gate's change brackets.
 */
#ifndef SIDECARD_PERIOD_H
#define SIDECARD_PERIOD_H

#include <stddef.h>
#include <stdint.h>

#include "gate_base.h"

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

#endif /* SIDECARD_PERIOD_H */
