/*
 * state.h: the daemon's model of orgs, agents, rules and transactions on top
 * of the shared-memory segment, with its in-process indexes.
 *
 * Thread contract: every function here is called from the daemon's loop
 * thread, which is the segment's only writer and is registered with liburcu.
 * Lookups run inside rcu_read_lock() internally; the slot numbers they
 * return stay valid until the loop thread itself deletes the object.
 *
 * Errors: functions return 0 or a negative SC_E* code and, on error, write a
 * message naming the field or limit into err (errlen bytes).
 */
#ifndef SIDECARD_STATE_H
#define SIDECARD_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "shm.h"

struct state;

/* Settings that change the gate's decisions: recorded in the ledger, kept in the header. */
struct state_settings {
	int64_t hold_ttl_us;    /* hold lifetime */
	int expiry_charges;     /* 1: an expired hold charges its estimate; 0: nothing */
	int64_t task_max_usage; /* cap of a task's usage plus holds; 0 = unlimited */
	int64_t alert_velocity; /* allowed checks per hour that raise a velocity alert; 0 = never */
	uint32_t max_holds_per_agent; /* open holds of one agent; 0 = no quota */
	uint32_t max_holds_per_org;   /* open holds of one org's agents; 0 = no quota */
};

struct state_config {
	const char *path;         /* the segment file */
	struct shm_caps caps;     /* used when the segment is created */
	struct state_settings set;
	/*
	 * Who reads the segment besides the daemon's user (shm_set_readers):
	 * 0, nobody (mode 0600); 1, the members of group reader_gid (0640).
	 */
	int readers;
	unsigned reader_gid;
};

/* A string argument that need not be NUL-terminated. */
struct state_str {
	const char *p;
	size_t len;
};

enum {
	STATE_RULE_SET_NAME = SC_RULE_SET_NAME,
	STATE_RULE_SET_MATCH = SC_RULE_SET_MATCH,
	STATE_RULE_SET_MAX_COST = SC_RULE_SET_MAX_COST_PER_TXN,
	STATE_RULE_SET_DAILY = SC_RULE_SET_DAILY_SPEND_LIMIT,
	STATE_RULE_SET_HOURLY = SC_RULE_SET_HOURLY_RATE_LIMIT
};

struct state_rule_spec {
	unsigned set; /* STATE_RULE_SET_* present fields (create: name and match required) */
	struct state_str name;
	struct state_str match;
	int64_t max_cost_per_txn;
	int64_t daily_limit;
	int64_t hourly_limit;
};

struct state_agent_spec {
	uint32_t org_slot;
	struct state_str name;
	enum sc_priority priority;
	sc_wallet_update wallet; /* SC_WALLET_SET_* fields; budget defaults to balance */
	size_t n_rules;
	const struct state_rule_spec *rules;
};

int state_open(struct state **out, const struct state_config *cfg, char *err, size_t errlen);
/*
 * Closing marks the segment stopped for readers (shm.h, READERS AND
 * RESTARTS); state_serve marks it live, once the state is recovered.
 */
void state_close(struct state *st);
void state_serve(struct state *st);
struct shm *state_shm(struct state *st);

/*
 * A used org or agent record that no longer matches its seal (shm.h,
 * SEALS) was changed behind the daemon's back while it ran. Nothing may be
 * decided or recorded from it, and the daemon cannot rebuild its state in
 * place: this logs the record and stops the process at once, as a crash
 * would. Nothing unacknowledged is lost in strict mode; the next start
 * finds the seal broken (or the segment busy) and rebuilds from the ledger.
 */
void state_seal_broken(const char *kind, uint64_t id) __attribute__((noreturn));

/* Checks an agent's and its org's seals before a decision reads their wallets. */
static inline void state_seal_verify(const struct shm_agent *a, const struct shm_org *o)
{
	if (__builtin_expect(a->wallet.seal != shm_agent_seal(a), 0))
		state_seal_broken("agent", a->id);
	if (__builtin_expect(o->wallet.seal != shm_org_seal(o), 0))
		state_seal_broken("org", o->id);
}

/*
 * The start of a write of an agent's or an org's record (writer): a used
 * record is checked against its seal first, so that the seal its write
 * ends with never covers a change made by someone else.
 */
static inline void state_agent_write_begin(struct shm_agent *a)
{
	if (__builtin_expect(a->rec.used && a->wallet.seal != shm_agent_seal(a), 0))
		state_seal_broken("agent", a->id);
	shm_write_begin(&a->rec.seq);
}

static inline void state_org_write_begin(struct shm_org *o)
{
	if (__builtin_expect(o->rec.used && o->wallet.seal != shm_org_seal(o), 0))
		state_seal_broken("org", o->id);
	shm_write_begin(&o->rec.seq);
}

/* The same for a wallet's record held by its seqlock, its first field (shm_wallet_write_end). */
static inline void state_wallet_write_begin(uint32_t *seq, int org)
{
	if (org)
		state_org_write_begin((struct shm_org *)(void *)seq);
	else
		state_agent_write_begin((struct shm_agent *)(void *)seq);
}
const struct state_config *state_config(const struct state *st);

/* ---- orgs ---- */
int state_org_create(struct state *st, struct state_str name, int64_t now, uint32_t *slot,
                     char *err, size_t errlen);
/* 0 or SC_ENOTFOUND. */
int state_org_by_id(struct state *st, uint64_t id, uint32_t *slot);
int state_org_by_name(struct state *st, struct state_str name, uint32_t *slot);

/* ---- agents ---- */
int state_agent_create(struct state *st, const struct state_agent_spec *spec, int64_t now,
                       uint32_t *slot, char *err, size_t errlen);
int state_agent_by_id(struct state *st, uint64_t id, uint32_t *slot);
/*
 * name NULL: unchanged; priority or status < 0: unchanged. A status set here
 * is the operator's: it is recorded as an event and the score's automatic
 * escalation starts from it.
 */
int state_agent_update(struct state *st, uint32_t slot, const struct state_str *name,
                       int priority, int status, int64_t now, char *err, size_t errlen);
/* SC_EUNAVAILABLE while the agent has open holds. */
int state_agent_delete(struct state *st, uint32_t slot, char *err, size_t errlen);

/* ---- rules ---- */
int state_rule_add(struct state *st, uint32_t agent_slot, const struct state_rule_spec *spec,
                   uint32_t *rule_slot, char *err, size_t errlen);
int state_rule_update(struct state *st, uint32_t agent_slot, uint64_t rule_id,
                      const struct state_rule_spec *spec, uint32_t *rule_slot, char *err,
                      size_t errlen);
int state_rule_remove(struct state *st, uint32_t agent_slot, uint64_t rule_id, char *err,
                      size_t errlen);
/*
 * The slot of the agent's most specific rule matching action, or SHM_NONE:
 * the first match along the agent's rule list, which is in match order.
 */
uint32_t state_rule_match(struct state *st, uint32_t agent_slot, const char *action, size_t len);
/* The agent's rule slots in creation order (rules.list); returns how many. */
unsigned state_rule_list(struct state *st, uint32_t agent_slot, uint32_t slots[SC_RULES_MAX]);

/* ---- wallets ---- */
/* Applies u to an agent's (org = 0) or an org's (org = 1) wallet. */
int state_wallet_update(struct state *st, uint32_t slot, int org, const sc_wallet_update *u,
                        char *err, size_t errlen);

/* ---- holds and transactions (used by the gate) ---- */
/* A free hold slot, or SC_ELIMIT when the hold table is full. */
int state_hold_alloc(struct state *st, uint32_t *slot);
/* Gives back a slot from state_hold_alloc that was not used. */
void state_hold_release(struct state *st, uint32_t slot);
/* Links a filled hold into the expiry queue. */
void state_hold_link(struct state *st, uint32_t slot);
/* Unlinks and frees a hold. */
void state_hold_free(struct state *st, uint32_t slot);
/* The hold of an open transaction: 0 or SC_ENOTFOUND. */
int state_hold_by_txn(struct state *st, uint64_t txn_id, uint32_t *slot);
/* The oldest hold, or SHM_NONE. */
uint32_t state_hold_oldest(struct state *st);
/* Open holds of the agents of the org in org_slot (an agent's own are shm_agent.open_holds). */
uint32_t state_org_holds(const struct state *st, uint32_t org_slot);

/*
 * Starts a new transaction of agent agent_id (0, or an agent that is gone:
 * none), whose slot is agent_slot (SHM_NONE: look it up): takes the next
 * id and its history slot, dropping whatever old transaction (and
 * idempotency key) lived there. The record is zeroed with rec.used = 1, id
 * and agent_id set, inside an open write (the caller fills it and calls
 * shm_write_end on rec.seq).
 */
struct shm_txn *state_txn_begin(struct state *st, uint64_t agent_id, uint32_t agent_slot);
/*
 * A live agent's transactions in the history, newest first, as history
 * slots: its newest, then each one's next older; SHM_NONE ends. Only that
 * agent's are walked, however long the history.
 */
uint32_t state_txn_newest(struct state *st, uint32_t agent_slot);
uint32_t state_txn_older(struct state *st, uint32_t txn_slot);
/* The transaction with this id if it is still in the history, else NULL. */
struct shm_txn *state_txn_by_id(struct state *st, uint64_t id);
/* Idempotency keys are per agent. */
/*
 * The replay of the agent's check with this idempotency key, from its
 * transaction in the history or from the agent's kept keys (shm.h, KEPT
 * KEYS): txn_id, estimate, allowed, risk, action and block_reason of out.
 * 0 or SC_ENOTFOUND.
 */
int state_key_find(struct state *st, uint32_t agent_slot, struct state_str key,
                   struct shm_key *out);
int state_txn_index_key(struct state *st, const struct shm_txn *t);

/*
 * Settings that change what the gate does (hold TTL, expiry charge) live in
 * the segment header, so that a ledger replay applies them at the same point
 * they were applied live. state_open loads them from an existing segment.
 */
void state_set_settings(struct state *st, const struct state_settings *set);
/* Records that the ledger record seq has been applied. */
void state_set_applied(struct state *st, uint64_t seq);
uint64_t state_applied(const struct state *st);

/* Records an event of an agent in the event ring (the oldest is dropped). */
void state_event_add(struct state *st, const struct shm_agent *a, enum shm_event_type type,
                     int from, int to, const char *reason, int64_t now);
/* The event with this id if it is still in the ring, else NULL. */
const struct shm_event *state_event_by_id(struct state *st, uint64_t id);

/*
 * Records an alert in the alert ring (the oldest is dropped): *a without its
 * rec and id, which are assigned. Returns the new alert's id.
 */
uint64_t state_alert_add(struct state *st, const struct shm_alert *a);
/* The alert with this id if it is still in the ring, else NULL. */
const struct shm_alert *state_alert_by_id(struct state *st, uint64_t id);

/* ---- tasks ---- */
/* The slot of the org's task with this id, or SHM_NONE. */
uint32_t state_task_find(struct state *st, uint64_t org_id, struct state_str id);
/*
 * The number of orgs that have a task with this id, and in *slot one of
 * them (SHM_NONE: none). A scan of the task table, for reads that name no org.
 */
unsigned state_task_orgs(struct state *st, struct state_str id, uint32_t *slot);
/*
 * A slot for a new task: a free one, or else the least recently used task
 * without open holds, which is forgotten when the slot is written. Changes
 * nothing; SC_ELIMIT when every remembered task has open holds.
 */
int state_task_reserve(struct state *st, uint32_t *slot);
/* Writes a new task into a reserved slot (inside a change). */
void state_task_create(struct state *st, uint32_t slot, uint64_t org_id, struct state_str id,
                       int64_t now);

/* ---- prices: versions of models' rates (pricing.c); never changed or removed ---- */
/* The slot of the model's newest rate version, or SHM_NONE. */
uint32_t state_price_newest(struct state *st, struct state_str model);
/* The slot of the model's version before the one in slot, or SHM_NONE. */
uint32_t state_price_older(struct state *st, uint32_t slot);
/* The slot a new version will take; changes nothing. SC_ELIMIT when the table is full. */
int state_price_reserve(struct state *st, uint32_t *slot);
/* Takes the reserved slot, written (rec.used set), as its model's newest version. */
int state_price_link(struct state *st, uint32_t slot);

/* Counts of live objects. */
struct state_counts {
	uint32_t orgs, agents, rules, holds;
	uint32_t texts; /* distinct rule names and patterns */
};
void state_counts(const struct state *st, struct state_counts *c);

#endif /* SIDECARD_STATE_H */
