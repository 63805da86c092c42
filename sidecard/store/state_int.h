/*
 * state_int.h: what the two files of the state share: struct state, and the
 * daemon-private indexes and free-slot pools (sidx_*) that the state keeps
 * beside the segment.
 *
 *   state.c        open and close, the checks of each change, and the
 *                  changes to orgs, wallets, rules, agents, transactions,
 *                  events, alerts and tasks
 *   state_index.c  the indexes, the slot pools, the text table, the rule
 *                  lists, agents and transactions by id, the holds' index
 *                  and expiry list, the rate versions, and their rebuild
 *                  when the segment is opened; it never calls state.c
 *
 * Threads: as state.h, the daemon's loop thread only. Everything here is
 * owned by struct state: sidx_open allocates it and sidx_close frees it.
 */
#ifndef SIDECARD_STATE_INT_H
#define SIDECARD_STATE_INT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "state.h"

struct cds_lfht;
struct hold_ix_entry;
struct slot_key;

/* The kinds of entry in the one lock-free hash table (st->ix). */
enum ix_kind {
	IX_ORG_ID, IX_ORG_NAME, IX_IDEM, IX_TASK,
	IX_PRICE /* model -> slot of its newest rate version */
};

struct ix_key {
	uint8_t kind;
	uint64_t num;
	const char *str;
	size_t len;
};

/* The free slots of a table of cap records. */
struct slot_pool {
	uint32_t *v;   /* freed slots below *top, the next one to use last */
	uint32_t n;    /* slots on v */
	uint32_t *top; /* the table's high-water mark in the segment header */
	uint32_t cap;
	struct shm_header *hdr;
};

typedef void slot_key_fn(const struct state *st, uint32_t slot, struct slot_key *k);

/* Open addressing over slot numbers; cell holds slot + 1, 0 when empty. */
struct slot_hash {
	uint32_t *cell;
	uint32_t mask;
	slot_key_fn *key_of;
};

struct state {
	struct shm m;
	struct state_config cfg;
	struct cds_lfht *ix;
	struct slot_hash agent_names; /* agent by (org id, name) */
	struct slot_hash texts;       /* text by string */
	struct slot_pool free_orgs, free_agents, free_rules, free_holds, free_tasks, free_prices;
	struct slot_pool free_texts, free_keys;
	uint32_t *price_older; /* by price slot: the model's previous version, or SHM_NONE */
	/*
	 * Each live agent's transactions in the history, newest first: by
	 * history slot the owner's agent slot and the next newer and older of
	 * the same agent (SHM_NONE: none, or no live owner); by agent slot its
	 * newest. transactions.list for one agent walks only its own.
	 */
	uint32_t *txn_owner, *txn_newer, *txn_older, *agent_txn_newest;
	uint32_t *exp_prev, *exp_next; /* expiry list, by hold slot */
	uint32_t *org_holds;           /* open holds of each org's agents, by org slot */
	/* kept keys (shm.h, KEPT KEYS), by agent slot: the newest (SHM_NONE: none) and how many */
	uint32_t *key_newest, *key_count;
	uint32_t exp_head, exp_tail;
	struct hold_ix_entry *hold_ix; /* open holds by transaction id */
	uint64_t hold_ix_mask;
	unsigned hold_ix_shift;
	struct state_counts counts;
};

/* ---- each agent's transactions ---- */
/* Takes history slot s out of its owner's chain (a slot about to be reused). */
void sidx_txn_unlink(struct state *st, uint32_t s);
/* Makes history slot s the newest transaction of agent slot a (SHM_NONE: no live agent). */
void sidx_txn_link(struct state *st, uint32_t s, uint32_t a);
/* Forgets the chain of agent slot a, which is being deleted. */
void sidx_txn_forget(struct state *st, uint32_t a);
/*
 * The keyed transaction t of agent slot a (SHM_NONE: no live agent)
 * leaves the history: its key is kept (shm.h, KEPT KEYS), or forgotten.
 */
void sidx_key_keep(struct state *st, uint32_t a, const struct shm_txn *t);
/* Frees the kept keys of agent slot a, which is being deleted (inside a change). */
void sidx_key_forget(struct state *st, uint32_t a);

/* ---- open and close ---- */
/*
 * Allocates the indexes, pools and lists for the segment's capacities and
 * rebuilds them from its records: 0, -ENOMEM, or SC_EEXISTS for a segment
 * whose records repeat a key. On failure sidx_close frees what was made.
 */
int sidx_open(struct state *st);
void sidx_close(struct state *st);

/* ---- the lock-free hash table: keys to slots or ids ---- */
static inline struct ix_key sidx_key_num(enum ix_kind kind, uint64_t num)
{
	return (struct ix_key){kind, num, "", 0};
}

static inline struct ix_key sidx_key_str(enum ix_kind kind, uint64_t num, struct state_str s)
{
	return (struct ix_key){kind, num, s.p, s.len};
}

static inline struct ix_key sidx_key_cstr(enum ix_kind kind, uint64_t num, const char *s)
{
	return (struct ix_key){kind, num, s, strlen(s)};
}

/* 0, SC_EEXISTS, or -ENOMEM. */
int sidx_ix_add(struct state *st, struct ix_key key, uint64_t value);
/* 0 or SC_ENOTFOUND. */
int sidx_ix_find(struct state *st, struct ix_key key, uint64_t *value);
void sidx_ix_del(struct state *st, struct ix_key key);
/* sidx_ix_find for an entry whose value is a slot. */
int sidx_find_slot(struct state *st, struct ix_key k, uint32_t *slot);

/* ---- slot pools ---- */
static inline uint32_t sidx_pool_free_count(const struct slot_pool *p)
{
	return p->n + (p->cap - *p->top);
}

/* The slot sidx_pool_pop would return, or SHM_NONE when none is free. */
static inline uint32_t sidx_pool_peek(const struct slot_pool *p)
{
	if (p->n)
		return p->v[p->n - 1];
	return *p->top < p->cap ? *p->top : SHM_NONE;
}

/* A free slot: 0, or SC_ELIMIT when the table is full. */
int sidx_pool_pop(struct slot_pool *p, uint32_t *slot);

static inline void sidx_pool_push(struct slot_pool *p, uint32_t slot)
{
	p->v[p->n++] = slot;
}

/* ---- compact indexes: agents by (org id, name) ---- */
/* Indexes slot under its record's key, which no other entry has. */
void sidx_slot_hash_add(const struct state *st, struct slot_hash *h, uint32_t slot);
/* Removes slot, whose record still holds the key it was indexed under. */
void sidx_slot_hash_del(const struct state *st, struct slot_hash *h, uint32_t slot);
/* The slot of the org's agent with this name, or SHM_NONE. */
uint32_t sidx_agent_by_name(const struct state *st, uint64_t org_id, struct state_str name);

/* ---- texts: interned rule names and patterns ---- */
/* The slot of the text s, or SHM_NONE. */
uint32_t sidx_text_find(const struct state *st, struct state_str s);
/* A counted reference to s, allocating its text if new; the caller checked room. */
uint32_t sidx_text_ref(struct state *st, struct state_str s);
void sidx_text_unref(struct state *st, uint32_t slot);
/*
 * Whether the text table can take a change that drops the references old
 * and takes the references new: 0, or SC_ELIMIT with a message in err.
 */
int sidx_texts_fit_change(const struct state *st, const uint32_t *old, size_t n_old,
                          const struct state_str *new, size_t n_new, char *err, size_t errlen);

/* ---- rule lists, in match order; the caller holds the agent's write ---- */
void sidx_rule_link(struct state *st, struct shm_agent *a, uint32_t s);
void sidx_rule_unlink(struct state *st, struct shm_agent *a, uint32_t s);

#endif /* SIDECARD_STATE_INT_H */
