/*
 * state.c: orgs, agents, rules, wallets, holds and the transaction history
 * kept in the shared-memory segment, with the daemon-private indexes that
 * find them.
 *
 * Threads: the daemon's loop thread only; it must be registered with liburcu
 * (rcu_register_thread) before state_open. It is the segment's single
 * writer and the only updater of the indexes, so updates need no lock; the
 * indexes are RCU structures so that lookups may move to other threads
 * without changing this file's contract.
 *
 * DESIGN
 *
 * Agents by id are found through the agent index inside the segment (shm.h,
 * AGENT INDEX), which readers in other processes use too; this file keeps
 * it in step with agent create and delete and rebuilds it on open.
 *
 * One lock-free hash table (cds_lfht) holds every other index, each entry
 * tagged with its kind: org by id, org by name, agent by (org, name),
 * transaction by (agent, idempotency key), task
 * by id, model by name (its newest rate version; older versions are chained
 * from it through price_older, newest first). The
 * records themselves live in the segment; an index entry only maps a key to
 * a slot or id. Removed entries are freed after a grace period (call_rcu).
 *
 * Each agent's rules are compiled into an immutable rule table sorted by
 * specificity (exact patterns, then prefixes longest first, then "*"), so the
 * first match is the most specific. A rule change builds a new table and
 * publishes it with rcu_xchg_pointer; the old one is freed with call_rcu.
 *
 * Open holds are found by transaction id in a table of their own, private
 * to the writer (see "hold index" below): a check places a hold and a
 * report settles it a million times a second, which an allocation and a
 * walk of the shared table per hold would dominate.
 *
 * Free slots of every table are kept on stacks rebuilt from the "used" flags
 * when the segment is opened. Open holds are also linked, in expiry order,
 * on a doubly-linked list through two arrays indexed by hold slot, so that
 * settling any hold is O(1) and the next hold to expire is the list head.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <urcu.h>
#include <urcu/rculfhash.h>

#include "common.h"
#include "gate.h"
#include "log.h"
#include "state.h"

enum ix_kind {
	IX_ORG_ID, IX_ORG_NAME, IX_AGENT_NAME, IX_IDEM, IX_TASK,
	IX_PRICE /* model -> slot of its newest rate version */
};

struct ix_node {
	struct cds_lfht_node node;
	struct rcu_head rcu;
	uint64_t num;   /* id, or the scope of a name (org id, agent id) */
	uint64_t value; /* slot or transaction id */
	uint8_t kind;
	uint8_t len;
	char str[];
};

struct ix_key {
	uint8_t kind;
	uint64_t num;
	const char *str;
	size_t len;
};

struct rule_entry {
	uint32_t slot;
	uint16_t len;
	char match[SC_ACTION_MAX + 1];
};

struct rule_table {
	struct rcu_head rcu;
	unsigned n;
	struct rule_entry e[];
};

struct slot_stack {
	uint32_t *v;
	uint32_t n;
};

struct hold_ix_entry {
	uint64_t txn_id; /* 0: empty (transaction ids start at 1) */
	uint32_t slot;
};

struct state {
	struct shm m;
	struct state_config cfg;
	struct cds_lfht *ix;
	struct rule_table **rule_tables; /* by agent slot, RCU-published */
	struct slot_stack free_orgs, free_agents, free_rules, free_holds, free_tasks, free_prices;
	uint32_t *price_older; /* by price slot: the model's previous version, or SHM_NONE */
	uint32_t *exp_prev, *exp_next; /* expiry list, by hold slot */
	uint32_t exp_head, exp_tail;
	struct hold_ix_entry *hold_ix; /* open holds by transaction id */
	uint64_t hold_ix_mask;
	unsigned hold_ix_shift;
	struct state_counts counts;
};

/* ---------------------------------------------------------------- index */

static uint64_t ix_hash(const struct ix_key *k)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ k->kind;

	h = (h ^ k->num) * 0x100000001b3ULL;
	h ^= h >> 29;
	for (size_t i = 0; i < k->len; i++)
		h = (h ^ (uint8_t)k->str[i]) * 0x100000001b3ULL;
	h ^= h >> 32;
	return h * 0x9e3779b97f4a7c15ULL;
}

static int ix_match(struct cds_lfht_node *node, const void *key)
{
	const struct ix_node *n = caa_container_of(node, struct ix_node, node);
	const struct ix_key *k = key;

	return n->kind == k->kind && n->num == k->num && n->len == k->len &&
	       memcmp(n->str, k->str, k->len) == 0;
}

static void ix_free_rcu(struct rcu_head *head)
{
	free(caa_container_of(head, struct ix_node, rcu));
}

/* 0, SC_EEXISTS, or -ENOMEM. */
static int ix_add(struct state *st, struct ix_key key, uint64_t value)
{
	const struct ix_key *k = &key;
	struct ix_node *n = malloc(sizeof(*n) + k->len);
	struct cds_lfht_node *got;

	if (!n)
		return -ENOMEM;
	cds_lfht_node_init(&n->node);
	n->kind = k->kind;
	n->num = k->num;
	n->value = value;
	n->len = (uint8_t)k->len;
	memcpy(n->str, k->str, k->len);
	rcu_read_lock();
	got = cds_lfht_add_unique(st->ix, ix_hash(k), ix_match, k, &n->node);
	rcu_read_unlock();
	if (got != &n->node) {
		free(n);
		return SC_EEXISTS;
	}
	return 0;
}

static int ix_find(struct state *st, struct ix_key key, uint64_t *value)
{
	const struct ix_key *k = &key;
	struct cds_lfht_iter it;
	struct cds_lfht_node *node;
	int rc = SC_ENOTFOUND;

	rcu_read_lock();
	cds_lfht_lookup(st->ix, ix_hash(k), ix_match, k, &it);
	node = cds_lfht_iter_get_node(&it);
	if (node) {
		*value = caa_container_of(node, struct ix_node, node)->value;
		rc = 0;
	}
	rcu_read_unlock();
	return rc;
}

static void ix_del(struct state *st, struct ix_key key)
{
	const struct ix_key *k = &key;
	struct cds_lfht_iter it;
	struct cds_lfht_node *node;

	rcu_read_lock();
	cds_lfht_lookup(st->ix, ix_hash(k), ix_match, k, &it);
	node = cds_lfht_iter_get_node(&it);
	if (node && cds_lfht_del(st->ix, node) == 0)
		call_rcu(&caa_container_of(node, struct ix_node, node)->rcu, ix_free_rcu);
	rcu_read_unlock();
}

static struct ix_key key_num(enum ix_kind kind, uint64_t num)
{
	return (struct ix_key){kind, num, "", 0};
}

static struct ix_key key_str(enum ix_kind kind, uint64_t num, struct state_str s)
{
	return (struct ix_key){kind, num, s.p, s.len};
}

static struct ix_key key_cstr(enum ix_kind kind, uint64_t num, const char *s)
{
	return (struct ix_key){kind, num, s, strlen(s)};
}

/* ----------------------------------------------------------- hold index */

/*
 * Open holds by transaction id: open addressing with linear probing in a
 * power-of-two table of at least twice the hold capacity, allocated once,
 * so placing and settling a hold allocates nothing and touches about one
 * cache line. Transaction ids are consecutive: an id's home keeps runs of
 * 64 consecutive ids together, so holds placed one after another share
 * cache lines, and scatters the runs with a multiplicative hash, so a long
 * run of holds left open is not one long cluster that later ids must walk.
 * Removal shifts the entries that follow back (no tombstones), so probes
 * stay short however many holds came and went.
 *
 * Only the writer uses it, inside its changes: holds are looked up by the
 * report that settles them and the expiry, never by readers.
 */
#define HOLD_IX_RUN 6 /* log2 of the run of consecutive ids kept together */

static int hold_ix_init(struct state *st, uint32_t hold_cap)
{
	unsigned bits = HOLD_IX_RUN + 1;

	while ((UINT64_C(1) << bits) < 2 * (uint64_t)hold_cap)
		bits++;
	st->hold_ix = calloc(UINT64_C(1) << bits, sizeof(*st->hold_ix));
	st->hold_ix_mask = (UINT64_C(1) << bits) - 1;
	st->hold_ix_shift = 64 - (bits - HOLD_IX_RUN);
	return st->hold_ix ? 0 : -ENOMEM;
}

static uint64_t hold_ix_home(const struct state *st, uint64_t txn_id)
{
	uint64_t run = ((txn_id >> HOLD_IX_RUN) * 0x9e3779b97f4a7c15ULL) >> st->hold_ix_shift;

	return (run << HOLD_IX_RUN | (txn_id & ((1u << HOLD_IX_RUN) - 1))) & st->hold_ix_mask;
}

/* The position of txn_id, or of the empty entry where it would go. */
static uint64_t hold_ix_find(const struct state *st, uint64_t txn_id)
{
	uint64_t i = hold_ix_home(st, txn_id);

	while (st->hold_ix[i].txn_id != 0 && st->hold_ix[i].txn_id != txn_id)
		i = (i + 1) & st->hold_ix_mask;
	return i;
}

/* At most hold_cap entries in twice as many places: there is always an empty one. */
static void hold_ix_put(struct state *st, uint64_t txn_id, uint32_t slot)
{
	uint64_t i = hold_ix_find(st, txn_id);

	st->hold_ix[i].txn_id = txn_id;
	st->hold_ix[i].slot = slot;
}

static void hold_ix_del(struct state *st, uint64_t txn_id)
{
	struct hold_ix_entry *e = st->hold_ix;
	uint64_t mask = st->hold_ix_mask, i = hold_ix_find(st, txn_id), j = i;

	if (e[i].txn_id == 0)
		return;
	/* Moves back every later entry of the cluster whose home is not after the gap. */
	for (;;) {
		j = (j + 1) & mask;
		if (e[j].txn_id == 0)
			break;
		if (((j - hold_ix_home(st, e[j].txn_id)) & mask) >= ((j - i) & mask)) {
			e[i] = e[j];
			i = j;
		}
	}
	e[i].txn_id = 0;
}

/* ---------------------------------------------------------- slot stacks */

static int stack_init(struct slot_stack *s, uint32_t cap)
{
	s->v = calloc(cap ? cap : 1, sizeof(*s->v));
	s->n = 0;
	return s->v ? 0 : -ENOMEM;
}

static int stack_pop(struct slot_stack *s, uint32_t *slot)
{
	if (s->n == 0)
		return SC_ELIMIT;
	*slot = s->v[--s->n];
	return 0;
}

static void stack_push(struct slot_stack *s, uint32_t slot)
{
	s->v[s->n++] = slot;
}

/* Pushes the free slots of a table so that the lowest is used first. */
#define STACK_FILL(stack, table, cap)                                   \
	do {                                                            \
		for (uint32_t i_ = (cap); i_-- > 0;)                     \
			if (!(table)[i_].rec.used)                       \
				stack_push(&(stack), i_);                \
	} while (0)

/* ---------------------------------------------------------- rule tables */

static int rule_kind(const char *m, size_t len)
{
	if (len == 1 && m[0] == '*')
		return 0;
	return len >= 2 && m[len - 1] == '*' ? 1 : 2;
}

/* Most specific first: exact, then longer prefixes, then "*". */
static int rule_entry_cmp(const void *a, const void *b)
{
	const struct rule_entry *x = a, *y = b;
	int kx = rule_kind(x->match, x->len), ky = rule_kind(y->match, y->len);

	if (kx != ky)
		return ky - kx;
	return (int)y->len - (int)x->len;
}

static void rule_table_free_rcu(struct rcu_head *head)
{
	free(caa_container_of(head, struct rule_table, rcu));
}

/* Compiles and publishes the rule table of an agent. */
static int rule_table_publish(struct state *st, uint32_t agent_slot)
{
	const struct shm_agent *a = &st->m.agents[agent_slot];
	struct rule_table *t, *old;

	t = malloc(sizeof(*t) + a->n_rules * sizeof(t->e[0]));
	if (!t)
		return -ENOMEM;
	t->n = a->n_rules;
	for (unsigned i = 0; i < t->n; i++) {
		const struct shm_rule *r = &st->m.rules[a->rule_slots[i]];

		t->e[i].slot = a->rule_slots[i];
		t->e[i].len = (uint16_t)strlen(r->match);
		memcpy(t->e[i].match, r->match, t->e[i].len + 1);
	}
	qsort(t->e, t->n, sizeof(t->e[0]), rule_entry_cmp);
	old = rcu_xchg_pointer(&st->rule_tables[agent_slot], t);
	if (old)
		call_rcu(&old->rcu, rule_table_free_rcu);
	return 0;
}

static void rule_table_drop(struct state *st, uint32_t agent_slot)
{
	struct rule_table *old = rcu_xchg_pointer(&st->rule_tables[agent_slot], NULL);

	if (old)
		call_rcu(&old->rcu, rule_table_free_rcu);
}

uint32_t state_rule_match(struct state *st, uint32_t agent_slot, const char *action, size_t len)
{
	const struct rule_table *t;
	uint32_t slot = SHM_NONE;

	rcu_read_lock();
	t = rcu_dereference(st->rule_tables[agent_slot]);
	for (unsigned i = 0; t && i < t->n; i++) {
		if (gate_pattern_rank(t->e[i].match, t->e[i].len, action, len) >= 0) {
			slot = t->e[i].slot;
			break;
		}
	}
	rcu_read_unlock();
	return slot;
}

/* ---------------------------------------------------------- expiry list */

static void exp_link(struct state *st, uint32_t slot)
{
	st->exp_next[slot] = SHM_NONE;
	st->exp_prev[slot] = st->exp_tail;
	if (st->exp_tail != SHM_NONE)
		st->exp_next[st->exp_tail] = slot;
	else
		st->exp_head = slot;
	st->exp_tail = slot;
}

static void exp_unlink(struct state *st, uint32_t slot)
{
	uint32_t p = st->exp_prev[slot], n = st->exp_next[slot];

	if (p != SHM_NONE)
		st->exp_next[p] = n;
	else
		st->exp_head = n;
	if (n != SHM_NONE)
		st->exp_prev[n] = p;
	else
		st->exp_tail = p;
}

static const struct shm_hold *sort_holds_base;

static int hold_expiry_cmp(const void *a, const void *b)
{
	const struct shm_hold *x = &sort_holds_base[*(const uint32_t *)a];
	const struct shm_hold *y = &sort_holds_base[*(const uint32_t *)b];

	if (x->expires_at != y->expires_at)
		return x->expires_at < y->expires_at ? -1 : 1;
	return x->txn_id < y->txn_id ? -1 : x->txn_id > y->txn_id;
}

/* --------------------------------------------------------------- prices */

static int find_slot(struct state *st, struct ix_key k, uint32_t *slot);

uint32_t state_price_newest(struct state *st, struct state_str model)
{
	uint32_t slot;

	return find_slot(st, key_str(IX_PRICE, 0, model), &slot) == 0 ? slot : SHM_NONE;
}

uint32_t state_price_older(struct state *st, uint32_t slot)
{
	return st->price_older[slot];
}

/*
 * Chains a written version into its model's versions, newest first. A live
 * version is always its model's newest; on rebuild slots come in any order.
 */
static int price_index(struct state *st, uint32_t slot)
{
	const struct shm_price *p = &st->m.prices[slot];
	struct ix_key k = key_cstr(IX_PRICE, 0, p->model);
	uint32_t newest = state_price_newest(st, (struct state_str){p->model, k.len}), at;

	if (newest == SHM_NONE || p->version > st->m.prices[newest].version) {
		st->price_older[slot] = newest;
		if (newest != SHM_NONE)
			ix_del(st, k);
		return ix_add(st, k, slot);
	}
	at = newest;
	while (st->price_older[at] != SHM_NONE &&
	       st->m.prices[st->price_older[at]].version > p->version)
		at = st->price_older[at];
	st->price_older[slot] = st->price_older[at];
	st->price_older[at] = slot;
	return 0;
}

int state_price_reserve(struct state *st, uint32_t *slot)
{
	if (st->free_prices.n == 0)
		return SC_ELIMIT;
	*slot = st->free_prices.v[st->free_prices.n - 1];
	return 0;
}

int state_price_link(struct state *st, uint32_t slot)
{
	uint32_t taken = SHM_NONE;
	int rc = stack_pop(&st->free_prices, &taken);

	SC_ASSERT(rc == 0 && taken == slot);
	return price_index(st, slot);
}

/* ------------------------------------------------------- open and close */

/* Rebuilds indexes, free stacks, rule tables and the expiry list. */
static int rebuild(struct state *st)
{
	const struct shm_header *h = st->m.hdr;
	uint32_t *open_holds, n_open = 0;
	int rc = 0;

	for (uint32_t i = 0; i < h->org_cap && rc == 0; i++) {
		const struct shm_org *o = &st->m.orgs[i];

		if (!o->rec.used)
			continue;
		st->counts.orgs++;
		rc = ix_add(st, key_num(IX_ORG_ID, o->id), i);
		if (rc == 0)
			rc = ix_add(st, key_cstr(IX_ORG_NAME, 0, o->name), i);
	}
	for (uint32_t i = 0; i < h->agent_cap && rc == 0; i++) {
		const struct shm_agent *a = &st->m.agents[i];

		if (!a->rec.used)
			continue;
		st->counts.agents++;
		st->counts.rules += a->n_rules;
		rc = ix_add(st, key_cstr(IX_AGENT_NAME, a->org_id, a->name), i);
		if (rc == 0)
			rc = rule_table_publish(st, i);
	}
	if (rc != 0)
		return rc;
	shm_agent_ix_rebuild(&st->m);
	open_holds = malloc((h->hold_cap ? h->hold_cap : 1) * sizeof(*open_holds));
	if (!open_holds)
		return -ENOMEM;
	for (uint32_t i = 0; i < h->hold_cap && rc == 0; i++) {
		if (!st->m.holds[i].rec.used)
			continue;
		open_holds[n_open++] = i;
		hold_ix_put(st, st->m.holds[i].txn_id, i);
	}
	sort_holds_base = st->m.holds;
	qsort(open_holds, n_open, sizeof(*open_holds), hold_expiry_cmp);
	for (uint32_t i = 0; i < n_open; i++)
		exp_link(st, open_holds[i]);
	st->counts.holds = n_open;
	free(open_holds);
	for (uint32_t i = 0; i < h->txn_cap && rc == 0; i++) {
		const struct shm_txn *t = &st->m.txns[i];

		if (t->rec.used && t->idem_key[0])
			rc = state_txn_index_key(st, t);
	}
	for (uint32_t i = 0; i < h->task_cap && rc == 0; i++)
		if (st->m.tasks[i].rec.used)
			rc = ix_add(st, key_cstr(IX_TASK, 0, st->m.tasks[i].id), i);
	for (uint32_t i = 0; i < h->price_cap && rc == 0; i++)
		if (st->m.prices[i].rec.used)
			rc = price_index(st, i);
	STACK_FILL(st->free_prices, st->m.prices, h->price_cap);
	STACK_FILL(st->free_tasks, st->m.tasks, h->task_cap);
	STACK_FILL(st->free_orgs, st->m.orgs, h->org_cap);
	STACK_FILL(st->free_agents, st->m.agents, h->agent_cap);
	STACK_FILL(st->free_rules, st->m.rules, h->rule_cap);
	STACK_FILL(st->free_holds, st->m.holds, h->hold_cap);
	return rc;
}

int state_open(struct state **out, const struct state_config *cfg, char *err, size_t errlen)
{
	struct state *st = calloc(1, sizeof(*st));
	const struct shm_header *h;
	int created, rc;

	if (!st)
		return -ENOMEM;
	st->cfg = *cfg;
	rc = shm_open_rw(&st->m, cfg->path, &cfg->caps, &created, err, errlen);
	if (rc != 0) {
		free(st);
		return rc;
	}
	h = st->m.hdr;
	st->exp_head = st->exp_tail = SHM_NONE;
	if (created) {
		state_set_settings(st, &cfg->set);
	} else {
		st->cfg.set = (struct state_settings){.hold_ttl_us = h->hold_ttl_us,
		                                      .expiry_charges = (int)h->expiry_charges,
		                                      .task_max_usage = h->task_max_usage,
		                                      .alert_velocity = h->alert_velocity};
	}
	st->ix = cds_lfht_new(1024, 1024, 0, CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING, NULL);
	st->rule_tables = calloc(h->agent_cap, sizeof(*st->rule_tables));
	st->exp_prev = malloc(h->hold_cap * sizeof(uint32_t));
	st->exp_next = malloc(h->hold_cap * sizeof(uint32_t));
	st->price_older = malloc(h->price_cap * sizeof(uint32_t));
	rc = (!st->ix || !st->rule_tables || !st->exp_prev || !st->exp_next || !st->price_older ||
	      hold_ix_init(st, h->hold_cap) ||
	      stack_init(&st->free_prices, h->price_cap) ||
	      stack_init(&st->free_orgs, h->org_cap) || stack_init(&st->free_agents, h->agent_cap) ||
	      stack_init(&st->free_rules, h->rule_cap) || stack_init(&st->free_holds, h->hold_cap) ||
	      stack_init(&st->free_tasks, h->task_cap))
		     ? -ENOMEM
		     : rebuild(st);
	if (rc != 0) {
		sc_errorf(err, errlen, "%s: cannot index the state segment: %s", cfg->path,
		     sc_strerror(rc));
		state_close(st);
		return rc;
	}
	*out = st;
	return 0;
}

void state_close(struct state *st)
{
	struct cds_lfht_iter it;
	struct ix_node *n;

	if (!st)
		return;
	if (st->ix) {
		/* A resize may be running in liburcu's worker: iterate as a reader. */
		rcu_read_lock();
		cds_lfht_for_each_entry(st->ix, &it, n, node) {
			cds_lfht_del(st->ix, &n->node);
			call_rcu(&n->rcu, ix_free_rcu);
		}
		rcu_read_unlock();
	}
	if (st->rule_tables) {
		for (uint32_t i = 0; st->m.hdr && i < st->m.hdr->agent_cap; i++)
			rule_table_drop(st, i);
	}
	rcu_barrier();
	if (st->ix)
		cds_lfht_destroy(st->ix, NULL);
	free(st->rule_tables);
	free(st->exp_prev);
	free(st->exp_next);
	free(st->hold_ix);
	free(st->free_orgs.v);
	free(st->free_agents.v);
	free(st->free_rules.v);
	free(st->free_holds.v);
	free(st->free_tasks.v);
	free(st->free_prices.v);
	free(st->price_older);
	if (st->m.hdr)
		shm_set_serving(&st->m, SHM_SERVING_STOPPED);
	shm_close(&st->m);
	free(st);
}

void state_serve(struct state *st)
{
	shm_set_serving(&st->m, SHM_SERVING_LIVE);
}

struct shm *state_shm(struct state *st)
{
	return &st->m;
}

const struct state_config *state_config(const struct state *st)
{
	return &st->cfg;
}

void state_set_settings(struct state *st, const struct state_settings *set)
{
	struct shm_header *h = st->m.hdr;

	shm_write_begin(&h->seq);
	h->hold_ttl_us = set->hold_ttl_us;
	h->expiry_charges = (uint32_t)set->expiry_charges;
	h->task_max_usage = set->task_max_usage;
	h->alert_velocity = set->alert_velocity;
	shm_write_end(&h->seq);
	st->cfg.set = *set;
}

void state_set_applied(struct state *st, uint64_t seq)
{
	struct shm_header *h = st->m.hdr;

	shm_write_begin(&h->seq);
	h->applied_seq = seq;
	shm_write_end(&h->seq);
}

uint64_t state_applied(const struct state *st)
{
	return st->m.hdr->applied_seq;
}

void state_counts(const struct state *st, struct state_counts *c)
{
	*c = st->counts;
}

/* ----------------------------------------------------------- validation */

/* Names: 1..63 bytes, no control characters. */
static int check_name(const char *field, struct state_str s, char *err, size_t errlen)
{
	if (s.len == 0 || s.len > SC_NAME_MAX) {
		sc_errorf(err, errlen, "%s: must be 1 to %d bytes", field, SC_NAME_MAX);
		return SC_EINVAL;
	}
	for (size_t i = 0; i < s.len; i++) {
		if ((unsigned char)s.p[i] < 0x20 || s.p[i] == 0x7f) {
			sc_errorf(err, errlen, "%s: must not contain control characters", field);
			return SC_EINVAL;
		}
	}
	return 0;
}

static void copy_str(char *dst, struct state_str s)
{
	memcpy(dst, s.p, s.len);
	dst[s.len] = '\0';
}

static int str_eq(const char *a, struct state_str b)
{
	return strlen(a) == b.len && memcmp(a, b.p, b.len) == 0;
}

/* ----------------------------------------------------------------- orgs */

int state_org_create(struct state *st, struct state_str name, int64_t now, uint32_t *slot,
                     char *err, size_t errlen)
{
	struct shm_header *h = st->m.hdr;
	struct shm_org *o;
	uint32_t s;
	uint64_t unused;
	int rc;

	if ((rc = check_name("name", name, err, errlen)) != 0)
		return rc;
	if (ix_find(st, key_str(IX_ORG_NAME, 0, name), &unused) == 0) {
		sc_errorf(err, errlen, "name: an org named '%.*s' exists", (int)name.len, name.p);
		return SC_EEXISTS;
	}
	if (stack_pop(&st->free_orgs, &s) != 0) {
		sc_errorf(err, errlen, "org capacity (%u) reached", h->org_cap);
		return SC_ELIMIT;
	}
	o = &st->m.orgs[s];
	shm_change_begin(&st->m);
	shm_write_begin(&o->rec.seq);
	memset((char *)o + sizeof(o->rec), 0, sizeof(*o) - sizeof(o->rec));
	o->rec.used = 1;
	o->id = h->next_org_id++;
	o->created_at = now;
	copy_str(o->name, name);
	shm_write_end(&o->rec.seq);
	h->next_roll = 0; /* the gate's next roll sets up the new org's calendar */
	shm_change_end(&st->m);
	rc = ix_add(st, key_num(IX_ORG_ID, o->id), s);
	if (rc == 0)
		rc = ix_add(st, key_str(IX_ORG_NAME, 0, name), s);
	if (rc != 0) {
		sc_errorf(err, errlen, "out of memory indexing org");
		return rc;
	}
	st->counts.orgs++;
	*slot = s;
	return 0;
}

static int find_slot(struct state *st, struct ix_key k, uint32_t *slot)
{
	uint64_t v;
	int rc = ix_find(st, k, &v);

	if (rc == 0)
		*slot = (uint32_t)v;
	return rc;
}

int state_org_by_id(struct state *st, uint64_t id, uint32_t *slot)
{
	return find_slot(st, key_num(IX_ORG_ID, id), slot);
}

int state_org_by_name(struct state *st, struct state_str name, uint32_t *slot)
{
	return find_slot(st, key_str(IX_ORG_NAME, 0, name), slot);
}

/* -------------------------------------------------------------- wallets */

static int check_wallet_update(const sc_wallet_update *u, char *err, size_t errlen)
{
	static const struct {
		unsigned bit;
		const char *name;
		size_t off;
	} fields[] = {
		{SC_WALLET_SET_BALANCE, "balance", offsetof(sc_wallet_update, balance)},
		{SC_WALLET_SET_BUDGET, "budget", offsetof(sc_wallet_update, budget)},
		{SC_WALLET_SET_MAX_PER_TXN, "max_per_txn", offsetof(sc_wallet_update, max_per_txn)},
		{SC_WALLET_SET_DAILY_SPEND_LIMIT, "daily_spend_limit",
		 offsetof(sc_wallet_update, daily_spend_limit)},
		{SC_WALLET_SET_DEBT, "debt", offsetof(sc_wallet_update, debt)},
		{SC_WALLET_SET_LOW_BALANCE, "low_balance", offsetof(sc_wallet_update, low_balance)},
	};

	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		int64_t v;

		memcpy(&v, (const char *)u + fields[i].off, sizeof(v));
		if ((u->set & fields[i].bit) && v < 0) {
			sc_errorf(err, errlen, "%s: must not be negative", fields[i].name);
			return SC_EINVAL;
		}
	}
	return 0;
}

static void apply_wallet_update(struct shm_wallet *w, const sc_wallet_update *u)
{
	if (u->set & SC_WALLET_SET_BALANCE)
		w->balance = u->balance;
	if (u->set & SC_WALLET_SET_BUDGET)
		w->budget = u->budget;
	if (u->set & SC_WALLET_SET_MAX_PER_TXN)
		w->max_per_txn = u->max_per_txn;
	if (u->set & SC_WALLET_SET_DAILY_SPEND_LIMIT)
		w->daily_limit = u->daily_spend_limit;
	if (u->set & SC_WALLET_SET_DEBT)
		w->debt = u->debt;
	if (u->set & SC_WALLET_SET_LOW_BALANCE)
		w->low_balance = u->low_balance;
}

int state_wallet_update(struct state *st, uint32_t slot, int org, const sc_wallet_update *u,
                        char *err, size_t errlen)
{
	struct shm_wallet *w;
	uint32_t *seq;
	int rc = check_wallet_update(u, err, errlen);

	if (rc != 0)
		return rc;
	if (org) {
		w = &st->m.orgs[slot].wallet;
		seq = &st->m.orgs[slot].rec.seq;
	} else {
		w = &st->m.agents[slot].wallet;
		seq = &st->m.agents[slot].rec.seq;
	}
	shm_change_begin(&st->m);
	shm_write_begin(seq);
	apply_wallet_update(w, u);
	if (u->set & SC_WALLET_SET_BALANCE)
		w->limited = 1;
	shm_write_end(seq);
	shm_change_end(&st->m);
	return 0;
}

/* ---------------------------------------------------------------- rules */

static int check_rule_fields(const struct state_rule_spec *r, char *err, size_t errlen)
{
	int rc;

	if ((r->set & STATE_RULE_SET_NAME) && (rc = check_name("name", r->name, err, errlen)))
		return rc;
	if ((r->set & STATE_RULE_SET_MATCH) && !gate_pattern_valid(r->match.p, r->match.len)) {
		sc_errorf(err, errlen,
		     "match: '%.*s' is not a pattern: use '*', 'prefix.*' or an exact action "
		     "(1 to %d printable characters, no spaces)",
		     (int)(r->match.len > 200 ? 200 : r->match.len), r->match.p, SC_ACTION_MAX);
		return SC_EINVAL;
	}
	if (((r->set & STATE_RULE_SET_MAX_COST) && r->max_cost_per_txn < 0) ||
	    ((r->set & STATE_RULE_SET_DAILY) && r->daily_limit < 0) ||
	    ((r->set & STATE_RULE_SET_HOURLY) && r->hourly_limit < 0)) {
		sc_errorf(err, errlen, "rule limits must not be negative");
		return SC_EINVAL;
	}
	return 0;
}

/* Name and match of a rule must be unique among the agent's rules. */
static int check_rule_unique(struct state *st, const struct shm_agent *a, uint64_t skip_id,
                             const struct state_rule_spec *r, char *err, size_t errlen)
{
	for (unsigned i = 0; i < a->n_rules; i++) {
		const struct shm_rule *o = &st->m.rules[a->rule_slots[i]];

		if (o->id == skip_id)
			continue;
		if ((r->set & STATE_RULE_SET_NAME) && str_eq(o->name, r->name)) {
			sc_errorf(err, errlen, "name: the agent has a rule named '%s'", o->name);
			return SC_EEXISTS;
		}
		if ((r->set & STATE_RULE_SET_MATCH) && str_eq(o->match, r->match)) {
			sc_errorf(err, errlen, "match: rule '%s' already matches '%s'", o->name, o->match);
			return SC_EEXISTS;
		}
	}
	return 0;
}

static void apply_rule_spec(struct shm_rule *r, const struct state_rule_spec *s)
{
	if (s->set & STATE_RULE_SET_NAME)
		copy_str(r->name, s->name);
	if (s->set & STATE_RULE_SET_MATCH)
		copy_str(r->match, s->match);
	if (s->set & STATE_RULE_SET_MAX_COST)
		r->max_cost_per_txn = s->max_cost_per_txn;
	if (s->set & STATE_RULE_SET_DAILY)
		r->daily_limit = s->daily_limit;
	if (s->set & STATE_RULE_SET_HOURLY)
		r->hourly_limit = s->hourly_limit;
}

/* Writes a new rule into a free slot; the caller checked capacity. */
static uint32_t rule_insert(struct state *st, struct shm_agent *a,
                            const struct state_rule_spec *spec)
{
	uint32_t s = SHM_NONE;
	struct shm_rule *r;
	int rc = stack_pop(&st->free_rules, &s);

	SC_ASSERT(rc == 0);
	r = &st->m.rules[s];
	shm_write_begin(&r->rec.seq);
	memset((char *)r + sizeof(r->rec), 0, sizeof(*r) - sizeof(r->rec));
	r->rec.used = 1;
	r->id = st->m.hdr->next_rule_id++;
	r->agent_id = a->id;
	apply_rule_spec(r, spec);
	shm_write_end(&r->rec.seq);
	a->rule_slots[a->n_rules++] = s;
	st->counts.rules++;
	return s;
}

static int need_rule_slots(struct state *st, const struct shm_agent *a, size_t n, char *err,
                           size_t errlen)
{
	if ((a ? a->n_rules : 0) + n > SC_RULES_MAX) {
		sc_errorf(err, errlen, "rules: an agent has at most %d rules", SC_RULES_MAX);
		return SC_ELIMIT;
	}
	if (st->free_rules.n < n) {
		sc_errorf(err, errlen, "rule capacity (%u) reached", st->m.hdr->rule_cap);
		return SC_ELIMIT;
	}
	return 0;
}

int state_rule_add(struct state *st, uint32_t agent_slot, const struct state_rule_spec *spec,
                   uint32_t *rule_slot, char *err, size_t errlen)
{
	struct shm_agent *a = &st->m.agents[agent_slot];
	int rc;

	if ((spec->set & (STATE_RULE_SET_NAME | STATE_RULE_SET_MATCH)) !=
	    (STATE_RULE_SET_NAME | STATE_RULE_SET_MATCH)) {
		sc_errorf(err, errlen, "%s: required", spec->set & STATE_RULE_SET_NAME ? "match" : "name");
		return SC_EINVAL;
	}
	if ((rc = check_rule_fields(spec, err, errlen)) || (rc = check_rule_unique(st, a, 0, spec, err, errlen)) ||
	    (rc = need_rule_slots(st, a, 1, err, errlen)))
		return rc;
	shm_change_begin(&st->m);
	shm_write_begin(&a->rec.seq);
	*rule_slot = rule_insert(st, a, spec);
	shm_write_end(&a->rec.seq);
	shm_change_end(&st->m);
	return rule_table_publish(st, agent_slot);
}

static int find_rule(struct state *st, const struct shm_agent *a, uint64_t rule_id,
                     unsigned *index, char *err, size_t errlen)
{
	for (unsigned i = 0; i < a->n_rules; i++) {
		if (st->m.rules[a->rule_slots[i]].id == rule_id) {
			*index = i;
			return 0;
		}
	}
	sc_errorf(err, errlen, "rule_id: agent %llu has no rule %llu", (unsigned long long)a->id,
	     (unsigned long long)rule_id);
	return SC_ENOTFOUND;
}

int state_rule_update(struct state *st, uint32_t agent_slot, uint64_t rule_id,
                      const struct state_rule_spec *spec, uint32_t *rule_slot, char *err,
                      size_t errlen)
{
	struct shm_agent *a = &st->m.agents[agent_slot];
	struct shm_rule *r;
	unsigned i;
	int rc;

	if ((rc = find_rule(st, a, rule_id, &i, err, errlen)) ||
	    (rc = check_rule_fields(spec, err, errlen)) ||
	    (rc = check_rule_unique(st, a, rule_id, spec, err, errlen)))
		return rc;
	*rule_slot = a->rule_slots[i];
	r = &st->m.rules[*rule_slot];
	shm_change_begin(&st->m);
	shm_write_begin(&r->rec.seq);
	apply_rule_spec(r, spec);
	shm_write_end(&r->rec.seq);
	shm_change_end(&st->m);
	return (spec->set & STATE_RULE_SET_MATCH) ? rule_table_publish(st, agent_slot) : 0;
}

/* Frees a rule slot; the caller holds the agent's write. */
static void rule_release(struct state *st, uint32_t slot)
{
	struct shm_rule *r = &st->m.rules[slot];

	shm_write_begin(&r->rec.seq);
	r->rec.used = 0;
	shm_write_end(&r->rec.seq);
	stack_push(&st->free_rules, slot);
	st->counts.rules--;
}

int state_rule_remove(struct state *st, uint32_t agent_slot, uint64_t rule_id, char *err,
                      size_t errlen)
{
	struct shm_agent *a = &st->m.agents[agent_slot];
	unsigned i;
	int rc = find_rule(st, a, rule_id, &i, err, errlen);

	if (rc != 0)
		return rc;
	shm_change_begin(&st->m);
	shm_write_begin(&a->rec.seq);
	rule_release(st, a->rule_slots[i]);
	memmove(&a->rule_slots[i], &a->rule_slots[i + 1],
	        (a->n_rules - i - 1) * sizeof(a->rule_slots[0]));
	a->n_rules--;
	shm_write_end(&a->rec.seq);
	shm_change_end(&st->m);
	return rule_table_publish(st, agent_slot);
}

/* --------------------------------------------------------------- agents */

static int check_agent_spec(struct state *st, const struct state_agent_spec *spec,
                            const struct shm_org *o, char *err, size_t errlen)
{
	uint64_t unused;
	int rc;

	if ((rc = check_name("name", spec->name, err, errlen)) ||
	    (rc = check_wallet_update(&spec->wallet, err, errlen)))
		return rc;
	if ((unsigned)spec->priority > SC_PRIORITY_CRITICAL) {
		sc_errorf(err, errlen, "priority: must be normal, high or critical");
		return SC_EINVAL;
	}
	if (ix_find(st, key_str(IX_AGENT_NAME, o->id, spec->name),
	            &unused) == 0) {
		sc_errorf(err, errlen, "name: org '%s' has an agent named '%.*s'", o->name,
		     (int)spec->name.len, spec->name.p);
		return SC_EEXISTS;
	}
	for (size_t i = 0; i < spec->n_rules; i++) {
		const struct state_rule_spec *r = &spec->rules[i];
		char sub[160];

		if ((r->set & (STATE_RULE_SET_NAME | STATE_RULE_SET_MATCH)) !=
		    (STATE_RULE_SET_NAME | STATE_RULE_SET_MATCH)) {
			sc_errorf(err, errlen, "rules[%zu].%s: required", i,
			     r->set & STATE_RULE_SET_NAME ? "match" : "name");
			return SC_EINVAL;
		}
		if ((rc = check_rule_fields(r, sub, sizeof(sub))) != 0) {
			sc_errorf(err, errlen, "rules[%zu].%s", i, sub);
			return rc;
		}
		for (size_t j = 0; j < i; j++) {
			if ((spec->rules[j].name.len == r->name.len &&
			     memcmp(spec->rules[j].name.p, r->name.p, r->name.len) == 0) ||
			    (spec->rules[j].match.len == r->match.len &&
			     memcmp(spec->rules[j].match.p, r->match.p, r->match.len) == 0)) {
				sc_errorf(err, errlen, "rules[%zu]: same name or match as rules[%zu]", i, j);
				return SC_EEXISTS;
			}
		}
	}
	return need_rule_slots(st, NULL, spec->n_rules, err, errlen);
}

int state_agent_create(struct state *st, const struct state_agent_spec *spec, int64_t now,
                       uint32_t *slot, char *err, size_t errlen)
{
	struct shm_org *o;
	struct shm_agent *a;
	uint32_t s;
	int rc;

	if (spec->org_slot >= st->m.hdr->org_cap || !st->m.orgs[spec->org_slot].rec.used) {
		sc_errorf(err, errlen, "org: no org in slot %u", spec->org_slot);
		return SC_ENOTFOUND;
	}
	o = &st->m.orgs[spec->org_slot];
	if ((rc = check_agent_spec(st, spec, o, err, errlen)) != 0)
		return rc;
	if (stack_pop(&st->free_agents, &s) != 0) {
		sc_errorf(err, errlen, "agent capacity (%u) reached", st->m.hdr->agent_cap);
		return SC_ELIMIT;
	}
	a = &st->m.agents[s];
	shm_change_begin(&st->m);
	shm_write_begin(&a->rec.seq);
	memset((char *)a + sizeof(a->rec), 0, sizeof(*a) - sizeof(a->rec));
	a->rec.used = 1;
	a->id = st->m.hdr->next_agent_id++;
	a->org_id = o->id;
	a->org_slot = spec->org_slot;
	a->priority = (uint8_t)spec->priority;
	a->status = SC_STATUS_ACTIVE;
	a->score = GATE_SCORE_START;
	a->created_at = now;
	copy_str(a->name, spec->name);
	apply_wallet_update(&a->wallet, &spec->wallet);
	if (!(spec->wallet.set & SC_WALLET_SET_BUDGET))
		a->wallet.budget = a->wallet.balance;
	a->wallet.limited = 1;
	for (size_t i = 0; i < spec->n_rules; i++)
		rule_insert(st, a, &spec->rules[i]);
	shm_write_end(&a->rec.seq);
	shm_agent_ix_insert(&st->m, a->id, s);
	shm_write_begin(&o->rec.seq);
	o->n_agents++;
	shm_write_end(&o->rec.seq);
	shm_change_end(&st->m);
	st->counts.agents++;
	rc = ix_add(st, key_str(IX_AGENT_NAME, o->id, spec->name), s);
	if (rc == 0)
		rc = rule_table_publish(st, s);
	if (rc != 0) {
		sc_errorf(err, errlen, "out of memory indexing agent");
		return rc;
	}
	*slot = s;
	return 0;
}

int state_agent_by_id(struct state *st, uint64_t id, uint32_t *slot)
{
	uint32_t s = shm_agent_ix_find(&st->m, id);

	if (s == SHM_NONE)
		return SC_ENOTFOUND;
	*slot = s;
	return 0;
}

int state_agent_update(struct state *st, uint32_t slot, const struct state_str *name,
                       int priority, int status, int64_t now, char *err, size_t errlen)
{
	struct shm_agent *a = &st->m.agents[slot];
	int rc;

	if (name) {
		if ((rc = check_name("name", *name, err, errlen)) != 0)
			return rc;
		if (!str_eq(a->name, *name)) {
			rc = ix_add(st, key_str(IX_AGENT_NAME, a->org_id, *name),
			            slot);
			if (rc == SC_EEXISTS)
				sc_errorf(err, errlen, "name: the org has an agent named '%.*s'",
				     (int)name->len, name->p);
			if (rc != 0)
				return rc;
			ix_del(st, key_cstr(IX_AGENT_NAME, a->org_id, a->name));
		}
	}
	if (priority > SC_PRIORITY_CRITICAL || status > SC_STATUS_FROZEN) {
		sc_errorf(err, errlen, "%s: out of range", priority > SC_PRIORITY_CRITICAL ? "priority" : "status");
		return SC_EINVAL;
	}
	shm_change_begin(&st->m);
	shm_write_begin(&a->rec.seq);
	if (name)
		copy_str(a->name, *name);
	if (priority >= 0)
		a->priority = (uint8_t)priority;
	if (status >= 0 && status != a->status) {
		state_event_add(st, a, SHM_EVENT_STATUS, a->status, status, "operator", now);
		a->status = (uint8_t)status;
	}
	if (status >= 0)
		a->status_auto = 0;
	shm_write_end(&a->rec.seq);
	shm_change_end(&st->m);
	return 0;
}

int state_agent_delete(struct state *st, uint32_t slot, char *err, size_t errlen)
{
	struct shm_agent *a = &st->m.agents[slot];
	struct shm_org *o = &st->m.orgs[a->org_slot];

	if (a->open_holds) {
		sc_errorf(err, errlen, "agent %llu has %u open holds; report them or let them expire",
		     (unsigned long long)a->id, a->open_holds);
		return SC_EUNAVAILABLE;
	}
	ix_del(st, key_cstr(IX_AGENT_NAME, a->org_id, a->name));
	rule_table_drop(st, slot);
	shm_change_begin(&st->m);
	shm_write_begin(&a->rec.seq);
	for (unsigned i = 0; i < a->n_rules; i++)
		rule_release(st, a->rule_slots[i]);
	a->n_rules = 0;
	a->rec.used = 0;
	shm_write_end(&a->rec.seq);
	shm_agent_ix_remove(&st->m, a->id, slot);
	shm_write_begin(&o->rec.seq);
	o->n_agents--;
	shm_write_end(&o->rec.seq);
	shm_change_end(&st->m);
	stack_push(&st->free_agents, slot);
	st->counts.agents--;
	return 0;
}

/* ---------------------------------------------------------------- holds */

int state_hold_alloc(struct state *st, uint32_t *slot)
{
	return stack_pop(&st->free_holds, slot);
}

void state_hold_release(struct state *st, uint32_t slot)
{
	stack_push(&st->free_holds, slot);
}

void state_hold_link(struct state *st, uint32_t slot)
{
	hold_ix_put(st, st->m.holds[slot].txn_id, slot);
	exp_link(st, slot);
	st->counts.holds++;
}

void state_hold_free(struct state *st, uint32_t slot)
{
	struct shm_hold *h = &st->m.holds[slot];

	hold_ix_del(st, h->txn_id);
	exp_unlink(st, slot);
	shm_write_begin(&h->rec.seq);
	h->rec.used = 0;
	shm_write_end(&h->rec.seq);
	stack_push(&st->free_holds, slot);
	st->counts.holds--;
}

int state_hold_by_txn(struct state *st, uint64_t txn_id, uint32_t *slot)
{
	uint64_t i = hold_ix_find(st, txn_id);

	if (st->hold_ix[i].txn_id == 0)
		return SC_ENOTFOUND;
	*slot = st->hold_ix[i].slot;
	return 0;
}

uint32_t state_hold_oldest(struct state *st)
{
	return st->exp_head;
}

/* --------------------------------------------------------- transactions */

struct shm_txn *state_txn_begin(struct state *st)
{
	struct shm_header *h = st->m.hdr;
	uint64_t id = h->next_txn_id++;
	struct shm_txn *t = &st->m.txns[(id - 1) % h->txn_cap];

	if (t->rec.used && t->idem_key[0])
		ix_del(st, key_cstr(IX_IDEM, t->agent_id, t->idem_key));
	shm_write_begin(&t->rec.seq);
	memset((char *)t + sizeof(t->rec), 0, offsetof(struct shm_txn, meta) - sizeof(t->rec));
	t->rec.used = 1;
	t->id = id;
	return t;
}

void state_event_add(struct state *st, const struct shm_agent *a, enum shm_event_type type,
                     int from, int to, const char *reason, int64_t now)
{
	struct shm_header *h = st->m.hdr;
	uint64_t id = h->next_event_id++;
	struct shm_event *e = &st->m.events[(id - 1) % h->event_cap];

	shm_write_begin(&e->rec.seq);
	memset((char *)e + sizeof(e->rec), 0, sizeof(*e) - sizeof(e->rec));
	e->rec.used = 1;
	e->id = id;
	e->agent_id = a->id;
	e->time = now;
	e->type = (uint8_t)type;
	e->from = (uint8_t)(from < 0 ? 0 : from);
	e->to = (uint8_t)(to < 0 ? 0 : to);
	e->score = a->score;
	snprintf(e->reason, sizeof(e->reason), "%s", reason);
	shm_write_end(&e->rec.seq);
}

const struct shm_event *state_event_by_id(struct state *st, uint64_t id)
{
	const struct shm_header *h = st->m.hdr;
	const struct shm_event *e;

	if (id == 0 || id >= h->next_event_id)
		return NULL;
	e = &st->m.events[(id - 1) % h->event_cap];
	return e->rec.used && e->id == id ? e : NULL;
}

uint64_t state_alert_add(struct state *st, const struct shm_alert *a)
{
	struct shm_header *h = st->m.hdr;
	uint64_t id = h->next_alert_id++;
	struct shm_alert *r = &st->m.alerts[(id - 1) % h->alert_cap];

	shm_write_begin(&r->rec.seq);
	memcpy((char *)r + sizeof(r->rec), (const char *)a + sizeof(a->rec),
	       sizeof(*r) - sizeof(r->rec));
	r->rec.used = 1;
	r->id = id;
	shm_write_end(&r->rec.seq);
	return id;
}

const struct shm_alert *state_alert_by_id(struct state *st, uint64_t id)
{
	const struct shm_header *h = st->m.hdr;
	const struct shm_alert *a;

	if (id == 0 || id >= h->next_alert_id)
		return NULL;
	a = &st->m.alerts[(id - 1) % h->alert_cap];
	return a->rec.used && a->id == id ? a : NULL;
}

uint32_t state_task_find(struct state *st, struct state_str id)
{
	uint32_t slot;

	return find_slot(st, key_str(IX_TASK, 0, id), &slot) == 0 ? slot : SHM_NONE;
}

int state_task_reserve(struct state *st, uint32_t *slot)
{
	const struct shm_header *h = st->m.hdr;
	uint32_t lru = SHM_NONE;

	if (st->free_tasks.n) {
		*slot = st->free_tasks.v[st->free_tasks.n - 1];
		return 0;
	}
	for (uint32_t i = 0; i < h->task_cap; i++) {
		const struct shm_task *t = &st->m.tasks[i];

		if (t->open_holds == 0 && (lru == SHM_NONE || t->last_at < st->m.tasks[lru].last_at))
			lru = i;
	}
	if (lru == SHM_NONE)
		return SC_ELIMIT;
	*slot = lru;
	return 0;
}

void state_task_create(struct state *st, uint32_t slot, struct state_str id, int64_t now)
{
	struct shm_task *t = &st->m.tasks[slot];
	uint32_t unused = slot;

	int rc = 0;

	if (t->rec.used)
		ix_del(st, key_cstr(IX_TASK, 0, t->id));
	else
		rc = stack_pop(&st->free_tasks, &unused);
	SC_ASSERT(rc == 0 && (t->rec.used || unused == slot));
	shm_write_begin(&t->rec.seq);
	memset((char *)t + sizeof(t->rec), 0, sizeof(*t) - sizeof(t->rec));
	t->rec.used = 1;
	t->uid = st->m.hdr->next_task_uid++;
	copy_str(t->id, id);
	t->created_at = t->last_at = now;
	shm_write_end(&t->rec.seq);
	if (ix_add(st, key_str(IX_TASK, 0, id), slot) != 0)
		log_error("cannot index task %s: out of memory", t->id);
}

struct shm_txn *state_txn_by_id(struct state *st, uint64_t id)
{
	const struct shm_header *h = st->m.hdr;
	struct shm_txn *t;

	if (id == 0 || id >= h->next_txn_id)
		return NULL;
	t = &st->m.txns[(id - 1) % h->txn_cap];
	return t->rec.used && t->id == id ? t : NULL;
}

struct shm_txn *state_txn_by_key(struct state *st, uint64_t agent_id, struct state_str key)
{
	uint64_t id;

	if (ix_find(st, key_str(IX_IDEM, agent_id, key), &id) != 0)
		return NULL;
	return state_txn_by_id(st, id);
}

int state_txn_index_key(struct state *st, const struct shm_txn *t)
{
	return ix_add(st, key_cstr(IX_IDEM, t->agent_id, t->idem_key),
	              t->id);
}
