/*
 * state_index.c: the daemon-private indexes and free-slot pools that the
 * state keeps beside the shared-memory segment, the text table the rules'
 * names and patterns are interned in, the agents' rule lists, and their
 * rebuild when the segment is opened. The state's operations that are only
 * index work are here too: matching an action to a rule, finding an agent
 * or a transaction by id, placing, finding and expiring holds, and the rate
 * versions of models. state.c makes the other changes through the sidx_
 * functions (state_int.h); this file calls none of state.c's, so the two
 * stand one above the other.
 *
 * Threads: as state.c's: one thread at a time, registered with liburcu, the
 * loop thread or the worker holding the commit lock. That thread is the
 * segment's single writer and the only updater of the indexes, so updates
 * need no lock; the cds_lfht indexes are RCU structures so that lookups may
 * move outside the lock without changing this file's contract. The two
 * compact indexes (agent by name, text by string) must stay under it: a
 * deletion moves entries, which a concurrent lookup could miss.
 *
 * Ownership: struct state holds every index, pool and list of this file;
 * sidx_open allocates them and sidx_close frees them, the hash table's
 * entries after a grace period.
 *
 * DESIGN
 *
 * One lock-free hash table (cds_lfht) holds most indexes, each entry
 * tagged with its kind: org by id, org by name, transaction by (agent,
 * idempotency key), task by id, model by name (its newest rate version;
 * older versions are chained from it through price_older, newest first).
 * The records themselves live in the segment; an index entry only maps a
 * key to a slot or id. Removed entries are freed after a grace period
 * (call_rcu).
 *
 * The indexes with an entry per agent or per rule text are sized for a
 * million agents: struct slot_hash, an open-addressing table of 4-byte slot
 * numbers (linear probing, at most half full, deletion by backward shift),
 * whose keys are read from the records themselves: an agent's (org id,
 * name), a text's string. 8 bytes per agent of capacity instead of a
 * 64-byte heap node per agent.
 *
 * Open holds are found by transaction id in a table of their own, private
 * to the writer (see "hold index" below): a check places a hold and a
 * report settles it a million times a second, which an allocation and a
 * walk of the shared table per hold would dominate.
 *
 * Rules live only in the segment: each agent's rules are a list in match
 * order (shm.h, RULES AND TEXTS), so the most specific rule is the first
 * whose pattern matches, found without a private copy of any pattern. Rule
 * names and patterns are interned in the text table: sidx_text_ref finds or
 * allocates a string's text and counts the reference, sidx_text_unref frees
 * it at zero.
 *
 * Free slots of every table are kept in pools (struct slot_pool): slots
 * never used since the segment was opened are handed out in order from a
 * high-water mark, freed ones from a stack, so that nothing is written per
 * free slot at open. The lowest free slot goes first after a rebuild, the
 * most recently freed one after that: the same sequence of changes on the
 * same segment allocates the same slots. Open holds are also linked, in
 * expiry order, on a doubly-linked list through two arrays indexed by hold
 * slot, so that settling any hold is O(1) and the next hold to expire is the
 * list head.
 *
 * Rebuilding at open reads only the parts of the segment file that were
 * ever written (SEEK_DATA): the rest is a hole that reads as free records,
 * and touching it would make every page of a large, mostly empty segment
 * resident. The rebuild also rebuilds the agent index inside the segment
 * (shm.h, AGENT INDEX).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <urcu.h>
#include <urcu/rculfhash.h>

#include "common.h"
#include "log.h"
#include "state_int.h"
#include "state_record.h"

struct ix_node {
	struct cds_lfht_node node;
	struct rcu_head rcu;
	uint64_t num;   /* id, or the scope of a name (org id, agent id) */
	uint64_t value; /* slot or transaction id */
	uint8_t kind;
	uint8_t len;
	char str[];
};

/* The key of a record in a slot_hash: a number (0 or the org id) and a string. */
struct slot_key {
	uint64_t num;
	const char *p;
	size_t len;
};

struct hold_ix_entry {
	uint64_t txn_id; /* 0: empty (transaction ids start at 1) */
	uint32_t slot;
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
int sidx_ix_add(struct state *st, struct ix_key key, uint64_t value)
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

int sidx_ix_find(struct state *st, struct ix_key key, uint64_t *value)
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

void sidx_ix_del(struct state *st, struct ix_key key)
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

int sidx_find_slot(struct state *st, struct ix_key k, uint32_t *slot)
{
	uint64_t v;
	int rc = sidx_ix_find(st, k, &v);

	if (rc == 0)
		*slot = (uint32_t)v;
	return rc;
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

/* ----------------------------------------------------------- slot pools */

/*
 * v is allocated for every slot but written only as slots are freed, so
 * it costs memory for the slots freed, not for the capacity.
 */
static int pool_init(struct slot_pool *p, struct shm_header *hdr, uint32_t *top, uint32_t cap)
{
	p->v = calloc(cap ? cap : 1, sizeof(*p->v));
	p->n = 0;
	p->top = top;
	p->cap = cap;
	p->hdr = hdr;
	return p->v ? 0 : -ENOMEM;
}

/*
 * A free slot. Raising the high-water mark needs no change bracket: a mark
 * above the highest used slot only makes a rebuild scan further.
 */
int sidx_pool_pop(struct slot_pool *p, uint32_t *slot)
{
	if (p->n) {
		*slot = p->v[--p->n];
		return 0;
	}
	if (*p->top == p->cap)
		return SC_ELIMIT;
	*slot = *p->top;
	shm_write_begin(&p->hdr->seq);
	(*p->top)++;
	shm_write_end(&p->hdr->seq);
	return 0;
}

/* Rebuild: stacks the free slots below the high-water mark, the lowest to go first. */
#define POOL_FILL(pool, table)                                          \
	do {                                                            \
		for (uint32_t i_ = *(pool).top; i_-- > 0;)               \
			if (!(table)[i_].rec.used)                       \
				sidx_pool_push(&(pool), i_);                  \
	} while (0)

/* ---------------------------------------------------- compact indexes */

static uint64_t slot_key_hash(const struct slot_key *k)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	h = (h ^ k->num) * 0x100000001b3ULL;
	for (size_t i = 0; i < k->len; i++)
		h = (h ^ (uint8_t)k->p[i]) * 0x100000001b3ULL;
	h ^= h >> 32;
	return h * 0x9e3779b97f4a7c15ULL;
}

static uint32_t slot_hash_home(const struct slot_hash *h, const struct slot_key *k)
{
	return (uint32_t)(slot_key_hash(k) >> 32) & h->mask;
}

/* At most half full for cap entries; the cells are written only as entries come. */
static int slot_hash_init(struct slot_hash *h, uint32_t cap, slot_key_fn *key_of)
{
	uint64_t cells = 16;

	while (cells < 2 * (uint64_t)cap)
		cells *= 2;
	h->cell = calloc(cells, sizeof(*h->cell));
	h->mask = (uint32_t)(cells - 1);
	h->key_of = key_of;
	return h->cell ? 0 : -ENOMEM;
}

/* The cell holding key k, or the empty cell where it would go. */
static uint32_t slot_hash_cell(const struct state *st, const struct slot_hash *h,
                               const struct slot_key *k)
{
	struct slot_key o;

	for (uint32_t i = slot_hash_home(h, k);; i = (i + 1) & h->mask) {
		if (h->cell[i] == 0)
			return i;
		h->key_of(st, h->cell[i] - 1, &o);
		if (o.num == k->num && o.len == k->len && memcmp(o.p, k->p, k->len) == 0)
			return i;
	}
}

/* The slot whose record has key k, or SHM_NONE. */
static uint32_t slot_hash_find(const struct state *st, const struct slot_hash *h,
                               const struct slot_key *k)
{
	uint32_t c = h->cell[slot_hash_cell(st, h, k)];

	return c ? c - 1 : SHM_NONE;
}

/* Indexes slot under its record's key, which no other entry has. */
void sidx_slot_hash_add(const struct state *st, struct slot_hash *h, uint32_t slot)
{
	struct slot_key k;

	h->key_of(st, slot, &k);
	h->cell[slot_hash_cell(st, h, &k)] = slot + 1;
}

/* Removes slot, whose record still holds the key it was indexed under. */
void sidx_slot_hash_del(const struct state *st, struct slot_hash *h, uint32_t slot)
{
	struct slot_key k;
	uint32_t i, j;

	h->key_of(st, slot, &k);
	for (i = slot_hash_home(h, &k); h->cell[i] != slot + 1; i = (i + 1) & h->mask)
		SC_ASSERT(h->cell[i] != 0);
	/* Backward shift: pull later entries of the probe run into the hole. */
	for (j = (i + 1) & h->mask; h->cell[j] != 0; j = (j + 1) & h->mask) {
		uint32_t home;

		h->key_of(st, h->cell[j] - 1, &k);
		home = slot_hash_home(h, &k);
		/* The entry at j may move to i unless its home lies cyclically in (i, j]. */
		if (i <= j ? (home <= i || home > j) : (home <= i && home > j)) {
			h->cell[i] = h->cell[j];
			i = j;
		}
	}
	h->cell[i] = 0;
}

static void agent_key(const struct state *st, uint32_t slot, struct slot_key *k)
{
	const struct shm_agent *a = &st->m.agents[slot];

	*k = (struct slot_key){a->org_id, a->name, strlen(a->name)};
}

static void text_key(const struct state *st, uint32_t slot, struct slot_key *k)
{
	const struct shm_text *t = &st->m.texts[slot];

	*k = (struct slot_key){0, t->s, t->len};
}

uint32_t sidx_agent_by_name(const struct state *st, uint64_t org_id, struct state_str name)
{
	struct slot_key k = {org_id, name.p, name.len};

	return slot_hash_find(st, &st->agent_names, &k);
}

/* ---------------------------------------------------------------- texts */

uint32_t sidx_text_find(const struct state *st, struct state_str s)
{
	struct slot_key k = {0, s.p, s.len};

	return slot_hash_find(st, &st->texts, &k);
}

static int texts_fit(const struct state *st, uint32_t need, uint32_t freed, char *err,
                     size_t errlen)
{
	if (need <= sidx_pool_free_count(&st->free_texts) + freed)
		return 0;
	sc_errorf(err, errlen,
	          "rule text capacity (%u distinct rule names and patterns) reached: raise "
	          "--rule-texts",
	          st->m.hdr->text_cap);
	return SC_ELIMIT;
}

/* A counted reference to s, allocating its text if new; the caller checked room. */
uint32_t sidx_text_ref(struct state *st, struct state_str s)
{
	uint32_t slot = sidx_text_find(st, s);
	struct shm_text *t;
	int rc;

	if (slot == SHM_NONE) {
		rc = sidx_pool_pop(&st->free_texts, &slot);
		SC_ASSERT(rc == 0);
		t = &st->m.texts[slot];
		shm_write_begin(&t->rec.seq);
		memset(t->s, 0, sizeof(t->s));
		memcpy(t->s, s.p, s.len);
		t->len = (uint32_t)s.len;
		t->refs = 1;
		t->rec.used = 1;
		shm_write_end(&t->rec.seq);
		sidx_slot_hash_add(st, &st->texts, slot);
		return slot;
	}
	t = &st->m.texts[slot];
	shm_write_begin(&t->rec.seq);
	t->refs++;
	shm_write_end(&t->rec.seq);
	return slot;
}

void sidx_text_unref(struct state *st, uint32_t slot)
{
	struct shm_text *t = &st->m.texts[slot];

	SC_ASSERT(t->rec.used && t->refs > 0);
	if (t->refs == 1)
		sidx_slot_hash_del(st, &st->texts, slot);
	shm_write_begin(&t->rec.seq);
	if (--t->refs == 0)
		t->rec.used = 0;
	shm_write_end(&t->rec.seq);
	if (t->refs == 0)
		sidx_pool_push(&st->free_texts, slot);
}

static struct state_str text_str(const struct state *st, uint32_t slot)
{
	const struct shm_text *t = &st->m.texts[slot];

	return (struct state_str){t->s, t->len};
}

/*
 * Whether the text table can take a change that drops one reference per
 * entry of old (text slots; a slot may repeat) and then takes one per entry
 * of new (strings): the texts the drops free count as room, and a new string
 * whose only text is freed by the drops needs a text again.
 */
int sidx_texts_fit_change(const struct state *st, const uint32_t *old, size_t n_old,
                            const struct state_str *new, size_t n_new, char *err, size_t errlen)
{
	uint32_t freed[2 * SC_RULES_MAX], n_freed = 0, need = 0;

	SC_ASSERT(n_old <= 2 * SC_RULES_MAX);
	for (size_t i = 0; i < n_old; i++) {
		uint32_t drops = 0;
		size_t j;

		for (j = 0; j < i && old[j] != old[i]; j++)
			;
		if (j < i)
			continue; /* counted with its first occurrence */
		for (j = i; j < n_old; j++)
			drops += old[j] == old[i];
		if (st->m.texts[old[i]].refs == drops)
			freed[n_freed++] = old[i];
	}
	for (size_t i = 0; i < n_new; i++) {
		uint32_t t;
		size_t j = 0;

		while (j < i && !(new[j].len == new[i].len && memcmp(new[j].p, new[i].p, new[i].len) == 0))
			j++;
		if (j < i)
			continue;
		t = sidx_text_find(st, new[i]);
		for (j = 0; t != SHM_NONE && j < n_freed; j++)
			if (freed[j] == t)
				t = SHM_NONE;
		need += t == SHM_NONE;
	}
	return texts_fit(st, need, n_freed, err, errlen);
}

/* ----------------------------------------------------------- rule lists */

/* 2 exact, 1 "prefix.*", 0 "*". */
static int rule_kind(const char *m, size_t len)
{
	if (len == 1 && m[0] == '*')
		return 0;
	return len >= 2 && m[len - 1] == '*' ? 1 : 2;
}

/* Whether rule x comes before rule y in match order (shm.h, RULES AND TEXTS). */
static int rule_before(const struct state *st, const struct shm_rule *x, const struct shm_rule *y)
{
	struct state_str mx = text_str(st, x->match), my = text_str(st, y->match);
	int kx = rule_kind(mx.p, mx.len), ky = rule_kind(my.p, my.len);

	if (kx != ky)
		return kx > ky;
	if (mx.len != my.len)
		return mx.len > my.len;
	return x->id < y->id;
}

/* Links rule slot s into a's list at its place; the caller holds a's write. */
void sidx_rule_link(struct state *st, struct shm_agent *a, uint32_t s)
{
	struct shm_rule *r = &st->m.rules[s];
	uint32_t *at = &a->first_rule;
	struct shm_rule *prev = NULL;

	while (*at != SHM_NONE && !rule_before(st, r, &st->m.rules[*at])) {
		prev = &st->m.rules[*at];
		at = &prev->next;
	}
	shm_write_begin(&r->rec.seq);
	r->next = *at;
	shm_write_end(&r->rec.seq);
	if (prev)
		shm_write_begin(&prev->rec.seq);
	*at = s;
	if (prev)
		shm_write_end(&prev->rec.seq);
}

/* Unlinks rule slot s from a's list; the caller holds a's write. */
void sidx_rule_unlink(struct state *st, struct shm_agent *a, uint32_t s)
{
	uint32_t *at = &a->first_rule;
	struct shm_rule *prev = NULL;

	while (*at != s) {
		SC_ASSERT(*at != SHM_NONE);
		prev = &st->m.rules[*at];
		at = &prev->next;
	}
	if (prev)
		shm_write_begin(&prev->rec.seq);
	*at = st->m.rules[s].next;
	if (prev)
		shm_write_end(&prev->rec.seq);
}

uint32_t state_rule_match(struct state *st, uint32_t agent_slot, const char *action, size_t len)
{
	const struct shm_rule *rules = st->m.rules;

	for (uint32_t s = st->m.agents[agent_slot].first_rule; s != SHM_NONE; s = rules[s].next) {
		const struct shm_text *t = &st->m.texts[rules[s].match];

		if (state_pattern_rank(t->s, t->len, action, len) >= 0)
			return s;
	}
	return SHM_NONE;
}

unsigned state_rule_list(struct state *st, uint32_t agent_slot, uint32_t slots[SC_RULES_MAX])
{
	const struct shm_rule *rules = st->m.rules;
	unsigned n = 0;

	for (uint32_t s = st->m.agents[agent_slot].first_rule; s != SHM_NONE && n < SC_RULES_MAX;
	     s = rules[s].next) {
		unsigned i = n++;

		/* insertion by id: creation order */
		for (; i > 0 && rules[slots[i - 1]].id > rules[s].id; i--)
			slots[i] = slots[i - 1];
		slots[i] = s;
	}
	return n;
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

/* ---------------------------------------------------------- agents by id */

int state_agent_by_id(struct state *st, uint64_t id, uint32_t *slot)
{
	uint32_t s = shm_agent_ix_find(&st->m, id);

	if (s == SHM_NONE)
		return SC_ENOTFOUND;
	*slot = s;
	return 0;
}

/* ---------------------------------------------------------------- holds */

/*
 * A hold's life is index work only (its pool, the hold index, the expiry
 * list): it is kept beside them, so that the check and the report that
 * place and settle holds call into one file.
 */

int state_hold_alloc(struct state *st, uint32_t *slot)
{
	return sidx_pool_pop(&st->free_holds, slot);
}

void state_hold_release(struct state *st, uint32_t slot)
{
	sidx_pool_push(&st->free_holds, slot);
}

void state_hold_link(struct state *st, uint32_t slot)
{
	hold_ix_put(st, st->m.holds[slot].txn_id, slot);
	exp_link(st, slot);
	st->org_holds[st->m.holds[slot].org_slot]++;
	st->counts.holds++;
}

void state_hold_free(struct state *st, uint32_t slot)
{
	struct shm_hold *h = &st->m.holds[slot];

	hold_ix_del(st, h->txn_id);
	exp_unlink(st, slot);
	st->org_holds[h->org_slot]--;
	shm_write_begin(&h->rec.seq);
	h->rec.used = 0;
	shm_write_end(&h->rec.seq);
	sidx_pool_push(&st->free_holds, slot);
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

uint32_t state_org_holds(const struct state *st, uint32_t org_slot)
{
	return st->org_holds[org_slot];
}

/* --------------------------------------------------------------- prices */

uint32_t state_price_newest(struct state *st, struct state_str model)
{
	uint32_t slot;

	return sidx_find_slot(st, sidx_key_str(IX_PRICE, 0, model), &slot) == 0 ? slot : SHM_NONE;
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
	struct ix_key k = sidx_key_cstr(IX_PRICE, 0, p->model);
	uint32_t newest = state_price_newest(st, (struct state_str){p->model, k.len}), at;

	if (newest == SHM_NONE || p->version > st->m.prices[newest].version) {
		st->price_older[slot] = newest;
		if (newest != SHM_NONE)
			sidx_ix_del(st, k);
		return sidx_ix_add(st, k, slot);
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
	*slot = sidx_pool_peek(&st->free_prices);
	return *slot == SHM_NONE ? SC_ELIMIT : 0;
}

int state_price_link(struct state *st, uint32_t slot)
{
	uint32_t taken = SHM_NONE;
	int rc = sidx_pool_pop(&st->free_prices, &taken);

	SC_ASSERT(rc == 0 && taken == slot);
	return price_index(st, slot);
}

/* ------------------------------------------------- rebuild, open, close */

/* Used slots of a ring of cap records whose next id is next. */
static uint32_t ring_top(uint64_t next, uint32_t cap)
{
	return next - 1 < cap ? (uint32_t)(next - 1) : cap;
}

/* Rebuilds indexes, free slot pools and the expiry list, reading slots below the marks only. */
/* ----------------------------------------------- each agent's transactions */

struct shm_txn *state_txn_by_id(struct state *st, uint64_t id)
{
	const struct shm_header *h = st->m.hdr;
	struct shm_txn *t;

	if (id == 0 || id >= h->next_txn_id)
		return NULL;
	t = &st->m.txns[(id - 1) % h->txn_cap];
	return t->rec.used && t->id == id ? t : NULL;
}

void sidx_txn_unlink(struct state *st, uint32_t s)
{
	uint32_t a = st->txn_owner[s], newer = st->txn_newer[s], older = st->txn_older[s];

	if (a == SHM_NONE)
		return;
	if (newer != SHM_NONE)
		st->txn_older[newer] = older;
	else
		st->agent_txn_newest[a] = older;
	if (older != SHM_NONE)
		st->txn_newer[older] = newer;
	st->txn_owner[s] = st->txn_newer[s] = st->txn_older[s] = SHM_NONE;
}

void sidx_txn_link(struct state *st, uint32_t s, uint32_t a)
{
	uint32_t newest;

	if (a == SHM_NONE)
		return;
	newest = st->agent_txn_newest[a];
	st->txn_owner[s] = a;
	st->txn_newer[s] = SHM_NONE;
	st->txn_older[s] = newest;
	if (newest != SHM_NONE)
		st->txn_newer[newest] = s;
	st->agent_txn_newest[a] = s;
}

void sidx_txn_forget(struct state *st, uint32_t a)
{
	uint32_t s = st->agent_txn_newest[a];

	while (s != SHM_NONE) {
		uint32_t older = st->txn_older[s];

		st->txn_owner[s] = st->txn_newer[s] = st->txn_older[s] = SHM_NONE;
		s = older;
	}
	st->agent_txn_newest[a] = SHM_NONE;
}

/* ----------------------------------------- idempotency keys kept per agent */

int state_txn_index_key(struct state *st, const struct shm_txn *t)
{
	return sidx_ix_add(st, sidx_key_cstr(IX_IDEM, t->agent_id, t->idem_key),
	              t->id);
}

/*
 * Each agent's kept keys are a circle through shm_key.older and .newer:
 * the newest's older is the one before it, and its newer the oldest. A new
 * key past keys_per_agent overwrites the oldest, which by that alone
 * becomes the newest: the circle's links stay as they are.
 */
void sidx_key_keep(struct state *st, uint32_t a, const struct shm_txn *t)
{
	uint32_t per_agent = st->m.hdr->keys_per_agent, s, newest;
	struct shm_key *k;

	if (a == SHM_NONE || per_agent == 0) {
		sidx_ix_del(st, sidx_key_cstr(IX_IDEM, t->agent_id, t->idem_key));
		return;
	}
	newest = st->key_newest[a];
	if (st->key_count[a] == per_agent) {
		s = st->m.keys[newest].newer;
		k = &st->m.keys[s];
		sidx_ix_del(st, sidx_key_cstr(IX_IDEM, k->agent_id, k->key));
		shm_write_begin(&k->rec.seq);
	} else {
		/* key_cap is agent_cap x keys_per_agent: an agent below its count has room */
		int rc = sidx_pool_pop(&st->free_keys, &s);

		SC_ASSERT(rc == 0);
		k = &st->m.keys[s];
		shm_write_begin(&k->rec.seq);
		if (newest == SHM_NONE) {
			k->older = k->newer = s;
		} else {
			struct shm_key *n = &st->m.keys[newest], *o = &st->m.keys[n->newer];

			shm_write_begin(&o->rec.seq);
			o->older = s;
			shm_write_end(&o->rec.seq);
			k->older = newest;
			k->newer = n->newer;
			shm_write_begin(&n->rec.seq);
			n->newer = s;
			shm_write_end(&n->rec.seq);
		}
		st->key_count[a]++;
	}
	k->rec.used = 1;
	k->agent_id = t->agent_id;
	k->txn_id = t->id;
	k->estimate = t->estimate;
	k->allowed = t->status != SC_TXN_BLOCKED;
	k->risk = t->risk;
	memcpy(k->key, t->idem_key, sizeof(k->key));
	memcpy(k->action, t->action, sizeof(k->action));
	memcpy(k->block_reason, t->block_reason, sizeof(k->block_reason));
	shm_write_end(&k->rec.seq);
	st->key_newest[a] = s;
}

void sidx_key_forget(struct state *st, uint32_t a)
{
	for (uint32_t n = st->key_count[a], s = st->key_newest[a]; n > 0; n--) {
		struct shm_key *k = &st->m.keys[s];

		sidx_ix_del(st, sidx_key_cstr(IX_IDEM, k->agent_id, k->key));
		shm_write_begin(&k->rec.seq);
		k->rec.used = 0;
		shm_write_end(&k->rec.seq);
		sidx_pool_push(&st->free_keys, s);
		s = k->older;
	}
	st->key_newest[a] = SHM_NONE;
	st->key_count[a] = 0;
}

int state_key_find(struct state *st, uint32_t agent_slot, struct state_str key,
                   struct shm_key *out)
{
	const struct shm_agent *a = &st->m.agents[agent_slot];
	const struct shm_txn *t;
	uint64_t id;
	uint32_t s = st->key_newest[agent_slot];

	if (sidx_ix_find(st, sidx_key_str(IX_IDEM, a->id, key), &id) != 0)
		return SC_ENOTFOUND;
	if ((t = state_txn_by_id(st, id)) != NULL) {
		out->txn_id = t->id;
		out->estimate = t->estimate;
		out->allowed = t->status != SC_TXN_BLOCKED;
		out->risk = t->risk;
		memcpy(out->action, t->action, sizeof(out->action));
		memcpy(out->block_reason, t->block_reason, sizeof(out->block_reason));
		return 0;
	}
	for (uint32_t n = st->key_count[agent_slot]; n > 0; n--, s = st->m.keys[s].older)
		if (st->m.keys[s].txn_id == id) {
			*out = st->m.keys[s];
			return 0;
		}
	return SC_ENOTFOUND;
}

/* The kept keys' index entries and each agent's newest and count, from the key table. */
static int keys_rebuild(struct state *st)
{
	const struct shm_header *h = st->m.hdr;
	int rc = 0;

	memset(st->key_newest, 0xff, (size_t)h->agent_cap * sizeof(uint32_t));
	memset(st->key_count, 0, (size_t)h->agent_cap * sizeof(uint32_t));
	for (uint32_t i = 0; i < h->key_top && rc == 0; i++) {
		const struct shm_key *k = &st->m.keys[i];
		uint32_t a;

		if (!k->rec.used)
			continue;
		/* an agent's keys go with it: one without its agent is not the daemon's doing */
		if ((a = shm_agent_ix_find(&st->m, k->agent_id)) == SHM_NONE)
			return SC_EINVAL;
		st->key_count[a]++;
		if (st->key_newest[a] == SHM_NONE || k->txn_id > st->m.keys[st->key_newest[a]].txn_id)
			st->key_newest[a] = i;
		rc = sidx_ix_add(st, sidx_key_cstr(IX_IDEM, k->agent_id, k->key), k->txn_id);
	}
	return rc;
}

/* The chains from the history, oldest first, so that each ends newest first. */
static void txn_chains_rebuild(struct state *st)
{
	const struct shm_header *h = st->m.hdr;
	uint64_t first = h->next_txn_id > h->txn_cap ? h->next_txn_id - h->txn_cap : 1;

	memset(st->txn_owner, 0xff, (size_t)h->txn_cap * sizeof(uint32_t));
	memset(st->txn_newer, 0xff, (size_t)h->txn_cap * sizeof(uint32_t));
	memset(st->txn_older, 0xff, (size_t)h->txn_cap * sizeof(uint32_t));
	memset(st->agent_txn_newest, 0xff, (size_t)h->agent_cap * sizeof(uint32_t));
	for (uint64_t id = first; id < h->next_txn_id; id++) {
		const struct shm_txn *t = state_txn_by_id(st, id);
		uint32_t a;

		if (t && state_agent_by_id(st, t->agent_id, &a) == 0)
			sidx_txn_link(st, (uint32_t)((id - 1) % h->txn_cap), a);
	}
}

static int rebuild(struct state *st)
{
	const struct shm_header *h = st->m.hdr;
	uint32_t *open_holds, n_open = 0;
	int rc = 0;

	for (uint32_t i = 0; i < h->org_top && rc == 0; i++) {
		const struct shm_org *o = &st->m.orgs[i];

		if (!o->rec.used)
			continue;
		st->counts.orgs++;
		rc = sidx_ix_add(st, sidx_key_num(IX_ORG_ID, o->id), i);
		if (rc == 0)
			rc = sidx_ix_add(st, sidx_key_cstr(IX_ORG_NAME, 0, o->name), i);
	}
	for (uint32_t i = 0; i < h->agent_top && rc == 0; i++) {
		const struct shm_agent *a = &st->m.agents[i];

		if (!a->rec.used)
			continue;
		st->counts.agents++;
		st->counts.rules += a->n_rules;
		sidx_slot_hash_add(st, &st->agent_names, i);
	}
	for (uint32_t i = 0; i < h->text_top; i++)
		if (st->m.texts[i].rec.used)
			sidx_slot_hash_add(st, &st->texts, i);
	if (rc != 0)
		return rc;
	shm_agent_ix_rebuild(&st->m);
	open_holds = malloc((h->hold_cap ? h->hold_cap : 1) * sizeof(*open_holds));
	if (!open_holds)
		return -ENOMEM;
	for (uint32_t i = 0; i < h->hold_top && rc == 0; i++) {
		if (!st->m.holds[i].rec.used)
			continue;
		open_holds[n_open++] = i;
		hold_ix_put(st, st->m.holds[i].txn_id, i);
		st->org_holds[st->m.holds[i].org_slot]++;
	}
	sort_holds_base = st->m.holds;
	qsort(open_holds, n_open, sizeof(*open_holds), hold_expiry_cmp);
	for (uint32_t i = 0; i < n_open; i++)
		exp_link(st, open_holds[i]);
	st->counts.holds = n_open;
	free(open_holds);
	for (uint32_t i = 0; i < ring_top(h->next_txn_id, h->txn_cap) && rc == 0; i++) {
		const struct shm_txn *t = &st->m.txns[i];

		if (t->rec.used && t->idem_key[0])
			rc = state_txn_index_key(st, t);
	}
	txn_chains_rebuild(st);
	if (rc == 0)
		rc = keys_rebuild(st);
	for (uint32_t i = 0; i < h->task_top && rc == 0; i++)
		if (st->m.tasks[i].rec.used)
			rc = sidx_ix_add(st, sidx_key_cstr(IX_TASK, st->m.tasks[i].org_id,
			                                   st->m.tasks[i].id), i);
	for (uint32_t i = 0; i < h->price_top && rc == 0; i++)
		if (st->m.prices[i].rec.used)
			rc = price_index(st, i);
	POOL_FILL(st->free_prices, st->m.prices);
	POOL_FILL(st->free_tasks, st->m.tasks);
	POOL_FILL(st->free_orgs, st->m.orgs);
	POOL_FILL(st->free_agents, st->m.agents);
	POOL_FILL(st->free_rules, st->m.rules);
	POOL_FILL(st->free_holds, st->m.holds);
	POOL_FILL(st->free_texts, st->m.texts);
	POOL_FILL(st->free_keys, st->m.keys);
	return rc;
}


int sidx_open(struct state *st)
{
	struct shm_header *hdr = st->m.hdr;
	const struct shm_header *h = hdr;

	st->exp_head = st->exp_tail = SHM_NONE;
	st->ix = cds_lfht_new(1024, 1024, 0, CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING, NULL);
	st->exp_prev = malloc(h->hold_cap * sizeof(uint32_t));
	st->exp_next = malloc(h->hold_cap * sizeof(uint32_t));
	st->price_older = malloc(h->price_cap * sizeof(uint32_t));
	st->org_holds = calloc(h->org_cap, sizeof(uint32_t));
	st->txn_owner = malloc(((size_t)h->txn_cap + 1) * sizeof(uint32_t));
	st->txn_newer = malloc(((size_t)h->txn_cap + 1) * sizeof(uint32_t));
	st->txn_older = malloc(((size_t)h->txn_cap + 1) * sizeof(uint32_t));
	st->agent_txn_newest = malloc(((size_t)h->agent_cap + 1) * sizeof(uint32_t));
	st->key_newest = malloc(((size_t)h->agent_cap + 1) * sizeof(uint32_t));
	st->key_count = malloc(((size_t)h->agent_cap + 1) * sizeof(uint32_t));
	return (!st->ix || !st->exp_prev || !st->exp_next || !st->price_older || !st->org_holds ||
	        !st->txn_owner ||
	        !st->txn_newer || !st->txn_older || !st->agent_txn_newest || !st->key_newest ||
	        !st->key_count || pool_init(&st->free_keys, hdr, &hdr->key_top, h->key_cap) ||
	        hold_ix_init(st, h->hold_cap) ||
	        slot_hash_init(&st->agent_names, h->agent_cap, agent_key) ||
	        slot_hash_init(&st->texts, h->text_cap, text_key) ||
	        pool_init(&st->free_prices, hdr, &hdr->price_top, h->price_cap) ||
	        pool_init(&st->free_orgs, hdr, &hdr->org_top, h->org_cap) ||
	        pool_init(&st->free_agents, hdr, &hdr->agent_top, h->agent_cap) ||
	        pool_init(&st->free_rules, hdr, &hdr->rule_top, h->rule_cap) ||
	        pool_init(&st->free_holds, hdr, &hdr->hold_top, h->hold_cap) ||
	        pool_init(&st->free_tasks, hdr, &hdr->task_top, h->task_cap) ||
	        pool_init(&st->free_texts, hdr, &hdr->text_top, h->text_cap))
		       ? -ENOMEM
		       : rebuild(st);
}

void sidx_close(struct state *st)
{
	struct cds_lfht_iter it;
	struct cds_lfht_node *node;

	if (st->ix) {
		/*
		 * A resize may be running in liburcu's worker: iterate as a reader.
		 * By node, not cds_lfht_for_each_entry, which computes the entry of
		 * the NULL that ends the walk (undefined behaviour).
		 */
		rcu_read_lock();
		cds_lfht_for_each(st->ix, &it, node) {
			cds_lfht_del(st->ix, node);
			call_rcu(&caa_container_of(node, struct ix_node, node)->rcu, ix_free_rcu);
		}
		rcu_read_unlock();
	}
	rcu_barrier();
	if (st->ix)
		cds_lfht_destroy(st->ix, NULL);
	free(st->agent_names.cell);
	free(st->texts.cell);
	free(st->exp_prev);
	free(st->exp_next);
	free(st->hold_ix);
	free(st->free_orgs.v);
	free(st->free_agents.v);
	free(st->free_rules.v);
	free(st->free_holds.v);
	free(st->free_tasks.v);
	free(st->free_prices.v);
	free(st->free_texts.v);
	free(st->free_keys.v);
	free(st->price_older);
	free(st->org_holds);
	free(st->txn_owner);
	free(st->txn_newer);
	free(st->txn_older);
	free(st->agent_txn_newest);
	free(st->key_newest);
	free(st->key_count);
}
