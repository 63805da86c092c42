/*
 * state.c: orgs, agents, rules, wallets and the transaction history kept in
 * the shared-memory segment: opening and closing the state, checking each
 * change, and writing it into the segment's records. The daemon-private
 * indexes that find the records, the free-slot pools, the rule texts and
 * lists, holds and rate versions are in state_index.c; the two files share
 * struct state and the sidx_ functions through state_int.h.
 *
 * Threads: one thread at a time, registered with liburcu
 * (rcu_register_thread): the loop thread, or with --workers the thread
 * holding the commit lock (docs/DESIGN.md, "Workers"), which every change
 * and every lookup of the daemon runs under. That thread is the segment's
 * single writer and the only updater of the indexes, so changes need no
 * lock of their own.
 *
 * Ownership: state_open allocates struct state, which owns the mapped
 * segment and, through sidx_open, the indexes; state_close frees both.
 *
 * DESIGN
 *
 * Agents by id are found through the agent index inside the segment (shm.h,
 * AGENT INDEX), which readers in other processes use too; this file keeps
 * it in step with agent create and delete, and the rebuild at open
 * (state_index.c) rebuilds it.
 *
 * Rules live only in the segment, in a list per agent in match order
 * (state_index.c keeps the lists), with their names and patterns interned
 * in the text table. A change that needs new texts checks that the table
 * has room before it writes anything.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "log.h"
#include "state_int.h"
#include "state_record.h"

/* ------------------------------------------------------- open and close */

int state_open(struct state **out, const struct state_config *cfg, char *err, size_t errlen)
{
	struct state *st = calloc(1, sizeof(*st));
	const struct shm_header *h;
	int created = 0, rc;

	if (!st)
		return -ENOMEM;
	st->cfg = *cfg;
	rc = shm_open_rw(&st->m, cfg->path, &cfg->caps, &created, err, errlen);
	if (rc != 0) {
		free(st);
		return rc;
	}
	rc = shm_set_readers(&st->m, cfg->readers ? (long)cfg->reader_gid : -1, err, errlen);
	if (rc != 0) {
		shm_close(&st->m);
		free(st);
		return rc;
	}
	h = st->m.hdr;
	if (created) {
		state_set_settings(st, &cfg->set);
	} else {
		st->cfg.set = (struct state_settings){.hold_ttl_us = h->hold_ttl_us,
		                                      .expiry_charges = (int)h->expiry_charges,
		                                      .task_max_usage = h->task_max_usage,
		                                      .alert_velocity = h->alert_velocity,
		                                      .max_holds_per_agent = h->max_holds_per_agent,
		                                      .max_holds_per_org = h->max_holds_per_org};
	}
	rc = sidx_open(st);
	if (rc != 0) {
		sc_errorf(err, errlen, "%s: cannot index the state segment: %s", cfg->path,
		     sc_strerror(rc));
		state_close(st);
		return rc;
	}
	*out = st;
	return 0;
}

void state_seal_broken(const char *kind, uint64_t id)
{
	log_error("%s %llu in the state segment no longer matches its seal: it was changed "
	          "outside the daemon; stopping now, the next start rebuilds the state from the ledger",
	          kind, (unsigned long long)id);
	_exit(EXIT_FAILURE);
}

void state_close(struct state *st)
{
	if (!st)
		return;
	sidx_close(st);
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
	h->max_holds_per_agent = set->max_holds_per_agent;
	h->max_holds_per_org = set->max_holds_per_org;
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
	c->texts = *st->free_texts.top - st->free_texts.n;
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
	if (sidx_ix_find(st, sidx_key_str(IX_ORG_NAME, 0, name), &unused) == 0) {
		sc_errorf(err, errlen, "name: an org named '%.*s' exists", (int)name.len, name.p);
		return SC_EEXISTS;
	}
	if (sidx_pool_pop(&st->free_orgs, &s) != 0) {
		sc_errorf(err, errlen, "org capacity (%u) reached", h->org_cap);
		return SC_ELIMIT;
	}
	o = &st->m.orgs[s];
	shm_change_begin(&st->m);
	state_org_write_begin(o);
	memset((char *)o + sizeof(o->rec), 0, sizeof(*o) - sizeof(o->rec));
	o->rec.used = 1;
	o->id = h->next_org_id++;
	o->created_at = now;
	copy_str(o->name, name);
	shm_org_write_end(o);
	h->next_roll = 0; /* the gate's next roll sets up the new org's calendar */
	shm_change_end(&st->m);
	rc = sidx_ix_add(st, sidx_key_num(IX_ORG_ID, o->id), s);
	if (rc == 0)
		rc = sidx_ix_add(st, sidx_key_str(IX_ORG_NAME, 0, name), s);
	if (rc != 0) {
		sc_errorf(err, errlen, "out of memory indexing org");
		return rc;
	}
	st->counts.orgs++;
	*slot = s;
	return 0;
}

int state_org_by_id(struct state *st, uint64_t id, uint32_t *slot)
{
	return sidx_find_slot(st, sidx_key_num(IX_ORG_ID, id), slot);
}

int state_org_by_name(struct state *st, struct state_str name, uint32_t *slot)
{
	return sidx_find_slot(st, sidx_key_str(IX_ORG_NAME, 0, name), slot);
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
	state_wallet_write_begin(seq, org);
	apply_wallet_update(w, u);
	if (u->set & SC_WALLET_SET_BALANCE)
		w->limited = 1;
	shm_wallet_write_end(seq, org);
	shm_change_end(&st->m);
	return 0;
}

/* ---------------------------------------------------------------- rules */

static int check_rule_fields(const struct state_rule_spec *r, char *err, size_t errlen)
{
	int rc;

	if ((r->set & STATE_RULE_SET_NAME) && (rc = check_name("name", r->name, err, errlen)))
		return rc;
	if ((r->set & STATE_RULE_SET_MATCH) && !state_pattern_valid(r->match.p, r->match.len)) {
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
	uint32_t name = r->set & STATE_RULE_SET_NAME ? sidx_text_find(st, r->name) : SHM_NONE;
	uint32_t match = r->set & STATE_RULE_SET_MATCH ? sidx_text_find(st, r->match) : SHM_NONE;

	/* Texts are interned: equal strings are the same text slot. */
	for (uint32_t s = a->first_rule; s != SHM_NONE; s = st->m.rules[s].next) {
		const struct shm_rule *o = &st->m.rules[s];

		if (o->id == skip_id)
			continue;
		if (name != SHM_NONE && o->name == name) {
			sc_errorf(err, errlen, "name: the agent has a rule named '%s'",
			          st->m.texts[o->name].s);
			return SC_EEXISTS;
		}
		if (match != SHM_NONE && o->match == match) {
			sc_errorf(err, errlen, "match: rule '%s' already matches '%s'",
			          st->m.texts[o->name].s, st->m.texts[o->match].s);
			return SC_EEXISTS;
		}
	}
	return 0;
}

/* Sets the limits spec names (inside the rule's write). */
static void apply_rule_limits(struct shm_rule *r, const struct state_rule_spec *s)
{
	if (s->set & STATE_RULE_SET_MAX_COST)
		r->max_cost_per_txn = s->max_cost_per_txn;
	if (s->set & STATE_RULE_SET_DAILY)
		r->daily_limit = s->daily_limit;
	if (s->set & STATE_RULE_SET_HOURLY)
		r->hourly_limit = s->hourly_limit;
}

/*
 * Writes a new rule into a free slot and links it into a's list; the caller
 * checked capacity (rules and texts) and holds a's write.
 */
static uint32_t rule_insert(struct state *st, uint32_t agent_slot,
                            const struct state_rule_spec *spec)
{
	struct shm_agent *a = &st->m.agents[agent_slot];
	uint32_t s = SHM_NONE;
	struct shm_rule *r;
	int rc = sidx_pool_pop(&st->free_rules, &s);

	SC_ASSERT(rc == 0);
	r = &st->m.rules[s];
	shm_write_begin(&r->rec.seq);
	memset((char *)r + sizeof(r->rec), 0, sizeof(*r) - sizeof(r->rec));
	r->rec.used = 1;
	r->id = st->m.hdr->next_rule_id++;
	r->agent_slot = agent_slot;
	r->name = sidx_text_ref(st, spec->name);
	r->match = sidx_text_ref(st, spec->match);
	apply_rule_limits(r, spec);
	shm_write_end(&r->rec.seq);
	sidx_rule_link(st, a, s);
	a->n_rules++;
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
	if (sidx_pool_free_count(&st->free_rules) < n) {
		sc_errorf(err, errlen, "rule capacity (%u) reached", st->m.hdr->rule_cap);
		return SC_ELIMIT;
	}
	return 0;
}

int state_rule_add(struct state *st, uint32_t agent_slot, const struct state_rule_spec *spec,
                   uint32_t *rule_slot, char *err, size_t errlen)
{
	struct shm_agent *a = &st->m.agents[agent_slot];
	struct state_str strs[2] = {spec->name, spec->match};
	int rc;

	if ((spec->set & (STATE_RULE_SET_NAME | STATE_RULE_SET_MATCH)) !=
	    (STATE_RULE_SET_NAME | STATE_RULE_SET_MATCH)) {
		sc_errorf(err, errlen, "%s: required", spec->set & STATE_RULE_SET_NAME ? "match" : "name");
		return SC_EINVAL;
	}
	if ((rc = check_rule_fields(spec, err, errlen)) || (rc = check_rule_unique(st, a, 0, spec, err, errlen)) ||
	    (rc = need_rule_slots(st, a, 1, err, errlen)) ||
	    (rc = sidx_texts_fit_change(st, NULL, 0, strs, 2, err, errlen)))
		return rc;
	shm_change_begin(&st->m);
	state_agent_write_begin(a);
	*rule_slot = rule_insert(st, agent_slot, spec);
	shm_agent_write_end(a);
	shm_change_end(&st->m);
	return 0;
}

static int find_rule(struct state *st, const struct shm_agent *a, uint64_t rule_id,
                     uint32_t *slot, char *err, size_t errlen)
{
	for (uint32_t s = a->first_rule; s != SHM_NONE; s = st->m.rules[s].next) {
		if (st->m.rules[s].id == rule_id) {
			*slot = s;
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
	struct state_rule_spec set = *spec;
	uint32_t old[2];
	struct state_str new[2];
	size_t n_old = 0, n_new = 0;
	struct shm_rule *r;
	int rc;

	if ((rc = find_rule(st, a, rule_id, rule_slot, err, errlen)) ||
	    (rc = check_rule_fields(spec, err, errlen)) ||
	    (rc = check_rule_unique(st, a, rule_id, spec, err, errlen)))
		return rc;
	r = &st->m.rules[*rule_slot];
	/* A text given again unchanged keeps its reference. */
	if ((set.set & STATE_RULE_SET_NAME) && sidx_text_find(st, set.name) == r->name)
		set.set &= ~(unsigned)STATE_RULE_SET_NAME;
	if ((set.set & STATE_RULE_SET_MATCH) && sidx_text_find(st, set.match) == r->match)
		set.set &= ~(unsigned)STATE_RULE_SET_MATCH;
	if (set.set & STATE_RULE_SET_NAME) {
		old[n_old++] = r->name;
		new[n_new++] = set.name;
	}
	if (set.set & STATE_RULE_SET_MATCH) {
		old[n_old++] = r->match;
		new[n_new++] = set.match;
	}
	if ((rc = sidx_texts_fit_change(st, old, n_old, new, n_new, err, errlen)) != 0)
		return rc;
	shm_change_begin(&st->m);
	if (set.set & STATE_RULE_SET_MATCH) {
		/* A new pattern may move the rule in match order. */
		state_agent_write_begin(a);
		sidx_rule_unlink(st, a, *rule_slot);
	}
	/* Old references go first, so that the texts they free count as room. */
	shm_write_begin(&r->rec.seq);
	if (set.set & STATE_RULE_SET_NAME)
		sidx_text_unref(st, r->name);
	if (set.set & STATE_RULE_SET_MATCH)
		sidx_text_unref(st, r->match);
	if (set.set & STATE_RULE_SET_NAME)
		r->name = sidx_text_ref(st, set.name);
	if (set.set & STATE_RULE_SET_MATCH)
		r->match = sidx_text_ref(st, set.match);
	apply_rule_limits(r, &set);
	shm_write_end(&r->rec.seq);
	if (set.set & STATE_RULE_SET_MATCH) {
		sidx_rule_link(st, a, *rule_slot);
		shm_agent_write_end(a);
	}
	shm_change_end(&st->m);
	return 0;
}

/* Frees a rule slot and its texts; the caller unlinked it and holds the agent's write. */
static void rule_release(struct state *st, uint32_t slot)
{
	struct shm_rule *r = &st->m.rules[slot];

	shm_write_begin(&r->rec.seq);
	sidx_text_unref(st, r->name);
	sidx_text_unref(st, r->match);
	r->rec.used = 0;
	shm_write_end(&r->rec.seq);
	sidx_pool_push(&st->free_rules, slot);
	st->counts.rules--;
}

int state_rule_remove(struct state *st, uint32_t agent_slot, uint64_t rule_id, char *err,
                      size_t errlen)
{
	struct shm_agent *a = &st->m.agents[agent_slot];
	uint32_t slot;
	int rc = find_rule(st, a, rule_id, &slot, err, errlen);

	if (rc != 0)
		return rc;
	shm_change_begin(&st->m);
	state_agent_write_begin(a);
	sidx_rule_unlink(st, a, slot);
	rule_release(st, slot);
	a->n_rules--;
	shm_agent_write_end(a);
	shm_change_end(&st->m);
	return 0;
}

/* --------------------------------------------------------------- agents */

static int check_agent_spec(struct state *st, const struct state_agent_spec *spec,
                            const struct shm_org *o, char *err, size_t errlen)
{
	struct state_str strs[2 * SC_RULES_MAX];
	int rc;

	if ((rc = check_name("name", spec->name, err, errlen)) ||
	    (rc = check_wallet_update(&spec->wallet, err, errlen)))
		return rc;
	if ((unsigned)spec->priority > SC_PRIORITY_CRITICAL) {
		sc_errorf(err, errlen, "priority: must be normal, high or critical");
		return SC_EINVAL;
	}
	if (sidx_agent_by_name(st, o->id, spec->name) != SHM_NONE) {
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
	if ((rc = need_rule_slots(st, NULL, spec->n_rules, err, errlen)) != 0)
		return rc;
	for (size_t i = 0; i < spec->n_rules; i++) {
		strs[2 * i] = spec->rules[i].name;
		strs[2 * i + 1] = spec->rules[i].match;
	}
	return sidx_texts_fit_change(st, NULL, 0, strs, 2 * spec->n_rules, err, errlen);
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
	if (sidx_pool_free_count(&st->free_agents) == 0) {
		sc_errorf(err, errlen, "agent capacity (%u) reached", st->m.hdr->agent_cap);
		return SC_ELIMIT;
	}
	shm_change_begin(&st->m);
	rc = sidx_pool_pop(&st->free_agents, &s);
	SC_ASSERT(rc == 0);
	a = &st->m.agents[s];
	state_agent_write_begin(a);
	memset((char *)a + sizeof(a->rec), 0, sizeof(*a) - sizeof(a->rec));
	a->rec.used = 1;
	a->id = st->m.hdr->next_agent_id++;
	a->org_id = o->id;
	a->org_slot = spec->org_slot;
	a->priority = (uint8_t)spec->priority;
	a->status = SC_STATUS_ACTIVE;
	a->score = STATE_SCORE_START;
	a->created_at = now;
	copy_str(a->name, spec->name);
	apply_wallet_update(&a->wallet, &spec->wallet);
	if (!(spec->wallet.set & SC_WALLET_SET_BUDGET))
		a->wallet.budget = a->wallet.balance;
	a->wallet.limited = 1;
	a->first_rule = SHM_NONE;
	for (size_t i = 0; i < spec->n_rules; i++)
		rule_insert(st, s, &spec->rules[i]);
	shm_agent_write_end(a);
	shm_agent_ix_insert(&st->m, a->id, s);
	state_org_write_begin(o);
	o->n_agents++;
	shm_org_write_end(o);
	shm_change_end(&st->m);
	st->counts.agents++;
	sidx_slot_hash_add(st, &st->agent_names, s);
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
		if (str_eq(a->name, *name)) {
			name = NULL;
		} else if (sidx_agent_by_name(st, a->org_id, *name) != SHM_NONE) {
			sc_errorf(err, errlen, "name: the org has an agent named '%.*s'",
			          (int)name->len, name->p);
			return SC_EEXISTS;
		}
	}
	if (priority > SC_PRIORITY_CRITICAL || status > SC_STATUS_FROZEN) {
		sc_errorf(err, errlen, "%s: out of range", priority > SC_PRIORITY_CRITICAL ? "priority" : "status");
		return SC_EINVAL;
	}
	shm_change_begin(&st->m);
	state_agent_write_begin(a);
	if (name) {
		/* The index reads the key from the record: out under the old name, in under the new. */
		sidx_slot_hash_del(st, &st->agent_names, slot);
		copy_str(a->name, *name);
		sidx_slot_hash_add(st, &st->agent_names, slot);
	}
	if (priority >= 0)
		a->priority = (uint8_t)priority;
	if (status >= 0 && status != a->status) {
		state_event_add(st, a, SHM_EVENT_STATUS, a->status, status, "operator", now);
		a->status = (uint8_t)status;
	}
	if (status >= 0)
		a->status_auto = 0;
	shm_agent_write_end(a);
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
	sidx_slot_hash_del(st, &st->agent_names, slot);
	sidx_txn_forget(st, slot);
	shm_change_begin(&st->m);
	sidx_key_forget(st, slot);
	state_agent_write_begin(a);
	while (a->first_rule != SHM_NONE) {
		uint32_t r = a->first_rule;

		a->first_rule = st->m.rules[r].next;
		rule_release(st, r);
	}
	a->n_rules = 0;
	a->rec.used = 0;
	shm_agent_write_end(a);
	shm_agent_ix_remove(&st->m, a->id, slot);
	state_org_write_begin(o);
	o->n_agents--;
	/* a sub-budget ends with its agent: what it reserved returns to the org's shared funds */
	o->wallet.reserving -= a->wallet.reserving;
	shm_org_write_end(o);
	shm_change_end(&st->m);
	sidx_pool_push(&st->free_agents, slot);
	st->counts.agents--;
	return 0;
}

/* --------------------------------------------------------- transactions */

struct shm_txn *state_txn_begin(struct state *st, uint64_t agent_id, uint32_t agent_slot)
{
	struct shm_header *h = st->m.hdr;
	uint64_t id = h->next_txn_id++;
	uint32_t s = (uint32_t)((id - 1) % h->txn_cap);
	struct shm_txn *t = &st->m.txns[s];

	/* the owner of the transaction leaving the ring keeps its key (shm.h, KEPT KEYS) */
	if (t->rec.used && t->idem_key[0])
		sidx_key_keep(st, st->txn_owner[s], t);
	sidx_txn_unlink(st, s);
	if (agent_slot != SHM_NONE || state_agent_by_id(st, agent_id, &agent_slot) == 0)
		sidx_txn_link(st, s, agent_slot);

	shm_write_begin(&t->rec.seq);
	memset((char *)t + sizeof(t->rec), 0, offsetof(struct shm_txn, meta) - sizeof(t->rec));
	t->rec.used = 1;
	t->id = id;
	t->agent_id = agent_id;
	return t;
}

uint32_t state_txn_newest(struct state *st, uint32_t agent_slot)
{
	return st->agent_txn_newest[agent_slot];
}

uint32_t state_txn_older(struct state *st, uint32_t txn_slot)
{
	return st->txn_older[txn_slot];
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

uint32_t state_task_find(struct state *st, uint64_t org_id, struct state_str id)
{
	uint32_t slot;

	return sidx_find_slot(st, sidx_key_str(IX_TASK, org_id, id), &slot) == 0 ? slot : SHM_NONE;
}

unsigned state_task_orgs(struct state *st, struct state_str id, uint32_t *slot)
{
	unsigned n = 0;

	*slot = SHM_NONE;
	for (uint32_t i = 0; i < st->m.hdr->task_top; i++) {
		const struct shm_task *t = &st->m.tasks[i];

		if (t->rec.used && strlen(t->id) == id.len && memcmp(t->id, id.p, id.len) == 0) {
			*slot = i;
			n++;
		}
	}
	return n;
}

int state_task_reserve(struct state *st, uint32_t *slot)
{
	const struct shm_header *h = st->m.hdr;
	uint32_t lru = SHM_NONE;

	if ((*slot = sidx_pool_peek(&st->free_tasks)) != SHM_NONE)
		return 0;
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

void state_task_create(struct state *st, uint32_t slot, uint64_t org_id, struct state_str id,
                       int64_t now)
{
	struct shm_task *t = &st->m.tasks[slot];
	uint32_t unused = slot;

	int rc = 0;

	if (t->rec.used)
		sidx_ix_del(st, sidx_key_cstr(IX_TASK, t->org_id, t->id));
	else
		rc = sidx_pool_pop(&st->free_tasks, &unused);
	SC_ASSERT(rc == 0 && (t->rec.used || unused == slot));
	shm_write_begin(&t->rec.seq);
	memset((char *)t + sizeof(t->rec), 0, sizeof(*t) - sizeof(t->rec));
	t->rec.used = 1;
	t->uid = st->m.hdr->next_task_uid++;
	t->org_id = org_id;
	copy_str(t->id, id);
	t->created_at = t->last_at = now;
	shm_write_end(&t->rec.seq);
	if (sidx_ix_add(st, sidx_key_str(IX_TASK, org_id, id), slot) != 0)
		log_error("cannot index task %s: out of memory", t->id);
}
