/*
 * check_rules.c: agents' rule lists and the shared text table of rule names
 * and patterns (sidecard/store/state_index.c, shm/shm.h RULES AND TEXTS), through the
 * state model the daemon's methods call.
 *
 * What is covered: a fleet's identical rules share one text per string,
 * counted, and every way a rule goes away (rules.remove, a new name or
 * pattern, agents.delete) gives its references back until the table is
 * empty; a full text table refuses the whole change with limit_exceeded
 * naming --rule-texts, while a change whose old texts make room goes
 * through; the list is in match order and listing in creation order, also
 * after a re-attach; and a random churn of rules, agents and renames on
 * small tables keeps every list, reference count and index exact and the
 * matched rule equal to a brute-force reading of the spec, with re-attaches
 * in between.
 *
 * Thread: the test thread plays the daemon's loop thread (gate_fixture.c).
 */
#include <check.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "gate_fixture.h"
#include "suites.h"

static const struct shm_text *text_of(uint32_t slot)
{
	return &g_m->texts[slot];
}

static uint32_t n_texts(void)
{
	struct state_counts c;

	state_counts(g_st, &c);
	return c.texts;
}

static uint64_t rule_id(uint32_t agent_slot, const char *name)
{
	return g_m->rules[rule_slot(agent_slot, name)].id;
}

static const char *matched(uint32_t agent_slot, const char *action)
{
	uint32_t rs = state_rule_match(g_st, agent_slot, action, strlen(action));

	return rs == SHM_NONE ? "(none)" : rule_name(&g_m->rules[rs]);
}

START_TEST(test_texts_shared_by_a_fleet_and_released)
{
	struct state_rule_spec fleet[2] = { rspec("chat", "openai.chat", 0, 0, 0),
		                            rspec("openai", "openai.*", 0, 0, 0) };
	struct state_rule_spec upd, same = rspec("openai.chat", "openai.chat", 0, 0, 0);
	uint32_t s[4], rs;
	const struct shm_rule *r0, *r;

	agent_new("a0", SC_PRIORITY_NORMAL, 100, 0, 0, fleet, 2, &s[0]);
	agent_new("a1", SC_PRIORITY_NORMAL, 100, 0, 0, fleet, 2, &s[1]);
	agent_new("a2", SC_PRIORITY_NORMAL, 100, 0, 0, fleet, 2, &s[2]);
	ck_assert_uint_eq(n_texts(), 4);
	r0 = &g_m->rules[rule_slot(s[0], "chat")];
	r = &g_m->rules[rule_slot(s[2], "chat")];
	ck_assert_uint_eq(r->name, r0->name);
	ck_assert_uint_eq(r->match, r0->match);
	ck_assert_uint_eq(text_of(r0->name)->refs, 3);
	ck_assert_uint_eq(text_of(r0->match)->refs, 3);
	ck_assert_str_eq(text_of(r0->match)->s, "openai.chat");
	ck_assert_uint_eq(text_of(r0->match)->len, 11);

	/* a name equal to a pattern is the same text */
	agent_new("a3", SC_PRIORITY_NORMAL, 100, 0, 0, &same, 1, &s[3]);
	ck_assert_uint_eq(n_texts(), 4);
	ck_assert_uint_eq(text_of(r0->match)->refs, 5);

	/* a new name takes a text and gives one reference back */
	memset(&upd, 0, sizeof upd);
	upd.set = STATE_RULE_SET_NAME;
	upd.name = str("talk");
	ck_assert_int_eq(state_rule_update(g_st, s[0], rule_id(s[0], "chat"), &upd, &rs, g_err,
	                                   sizeof g_err),
	                 0);
	ck_assert_uint_eq(n_texts(), 5);
	ck_assert_str_eq(rule_name(&g_m->rules[rs]), "talk");
	ck_assert_uint_eq(text_of(r->name)->refs, 2);
	/* the same name again changes nothing */
	ck_assert_int_eq(state_rule_update(g_st, s[0], rule_id(s[0], "talk"), &upd, &rs, g_err,
	                                   sizeof g_err),
	                 0);
	ck_assert_uint_eq(text_of(g_m->rules[rs].name)->refs, 1);

	ck_assert_int_eq(state_rule_remove(g_st, s[1], rule_id(s[1], "openai"), g_err, sizeof g_err),
	                 0);
	ck_assert_uint_eq(text_of(g_m->rules[rule_slot(s[0], "openai")].name)->refs, 2);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(state_agent_delete(g_st, s[i], g_err, sizeof g_err), 0);
	ck_assert_uint_eq(n_texts(), 0);
	for (uint32_t t = 0; t < g_m->hdr->text_cap; t++)
		ck_assert_msg(!g_m->texts[t].rec.used, "text %u (%s) still used", t, g_m->texts[t].s);
}
END_TEST

START_TEST(test_full_text_table_refuses_the_whole_change)
{
	struct shm_caps caps = default_caps;
	struct state_rule_spec ab[2] = { rspec("a", "a.*", 0, 0, 0), rspec("b", "b.*", 0, 0, 0) };
	struct state_rule_spec c = rspec("c", "c.*", 0, 0, 0), upd;
	struct state_agent_spec spec;
	struct state_counts before, after;
	uint32_t sa, sb, rs;
	uint64_t rid;

	caps.texts = 4;
	open_state(caps, TTL, 1);
	agent_new("A", SC_PRIORITY_NORMAL, 100, 0, 0, ab, 2, &sa);
	agent_new("B", SC_PRIORITY_NORMAL, 100, 0, 0, ab, 2, &sb); /* shares all four */
	ck_assert_uint_eq(n_texts(), 4);

	state_counts(g_st, &before);
	memset(&spec, 0, sizeof spec);
	spec.org_slot = g_org;
	spec.name = str("C");
	spec.rules = &c;
	spec.n_rules = 1;
	g_err[0] = '\0';
	ck_assert_int_eq(state_agent_create(g_st, &spec, T0, &rs, g_err, sizeof g_err), SC_ELIMIT);
	ck_assert_msg(strstr(g_err, "rule text capacity (4") && strstr(g_err, "--rule-texts"),
	              "message: %s", g_err);
	ck_assert_int_eq(state_rule_add(g_st, sa, &c, &rs, g_err, sizeof g_err), SC_ELIMIT);
	state_counts(g_st, &after);
	ck_assert_uint_eq(after.agents, before.agents);
	ck_assert_uint_eq(after.rules, before.rules);
	ck_assert_uint_eq(after.texts, 4);

	/* "a" is still A's: renaming B's rule needs a fifth text */
	memset(&upd, 0, sizeof upd);
	upd.set = STATE_RULE_SET_NAME;
	upd.name = str("z");
	rid = rule_id(sb, "a");
	ck_assert_int_eq(state_rule_update(g_st, sb, rid, &upd, &rs, g_err, sizeof g_err), SC_ELIMIT);
	ck_assert_str_eq(rule_name(&g_m->rules[rule_slot(sb, "a")]), "a");

	/* without A, the rename frees "a" as it takes "z" */
	ck_assert_int_eq(state_agent_delete(g_st, sa, g_err, sizeof g_err), 0);
	ck_assert_int_eq(state_rule_update(g_st, sb, rid, &upd, &rs, g_err, sizeof g_err), 0);
	ck_assert_str_eq(rule_name(&g_m->rules[rs]), "z");
	ck_assert_uint_eq(n_texts(), 4);

	/* name and pattern swapped on a full table: both old texts make the room */
	upd.set = STATE_RULE_SET_NAME | STATE_RULE_SET_MATCH;
	upd.name = str("a.*");
	upd.match = str("z");
	ck_assert_int_eq(state_rule_update(g_st, sb, rid, &upd, &rs, g_err, sizeof g_err), 0);
	ck_assert_str_eq(rule_name(&g_m->rules[rs]), "a.*");
	ck_assert_str_eq(rule_match(&g_m->rules[rs]), "z");
	ck_assert_uint_eq(n_texts(), 4);
	ck_assert_str_eq(matched(sb, "z"), "a.*");
	ck_assert_str_eq(matched(sb, "a.x"), "(none)");
}
END_TEST

static void expect_order(uint32_t s, const char *const *by_match, const char *const *by_id,
                         unsigned n)
{
	uint32_t slots[SC_RULES_MAX], rs = g_m->agents[s].first_rule;
	unsigned i;

	for (i = 0; i < n; i++, rs = g_m->rules[rs].next) {
		ck_assert_uint_ne(rs, SHM_NONE);
		ck_assert_str_eq(rule_name(&g_m->rules[rs]), by_match[i]);
	}
	ck_assert_uint_eq(rs, SHM_NONE);
	ck_assert_uint_eq(state_rule_list(g_st, s, slots), n);
	for (i = 0; i < n; i++)
		ck_assert_str_eq(rule_name(&g_m->rules[slots[i]]), by_id[i]);
}

START_TEST(test_list_in_match_order_listing_in_creation_order)
{
	struct state_rule_spec r[5] = { rspec("all", "*", 0, 0, 0), rspec("oa", "openai.*", 0, 0, 0),
		                        rspec("chat", "openai.chat", 0, 0, 0),
		                        rspec("img", "openai.images.*", 0, 0, 0),
		                        rspec("xy", "x.y", 0, 0, 0) };
	static const char *const created[] = { "all", "oa", "chat", "img", "xy" };
	static const char *const order1[] = { "chat", "xy", "img", "oa", "all" };
	static const char *const order2[] = { "oa", "chat", "xy", "img", "all" };
	static const char *const created3[] = { "all", "oa", "img", "xy" };
	static const char *const order3[] = { "oa", "xy", "img", "all" };
	struct state_rule_spec upd;
	uint32_t s, rs;

	agent_new("a", SC_PRIORITY_NORMAL, 100, 0, 0, r, 5, &s);
	expect_order(s, order1, created, 5);
	ck_assert_str_eq(matched(s, "openai.chat"), "chat");
	ck_assert_str_eq(matched(s, "openai.images.gen"), "img");
	ck_assert_str_eq(matched(s, "openai.embed"), "oa");
	ck_assert_str_eq(matched(s, "x.y"), "xy");
	ck_assert_str_eq(matched(s, "x.z"), "all");

	/* a new pattern moves the rule: now the longest exact one */
	memset(&upd, 0, sizeof upd);
	upd.set = STATE_RULE_SET_MATCH;
	upd.match = str("openai.chat.stream");
	ck_assert_int_eq(state_rule_update(g_st, s, rule_id(s, "oa"), &upd, &rs, g_err, sizeof g_err),
	                 0);
	expect_order(s, order2, created, 5);
	ck_assert_str_eq(matched(s, "openai.embed"), "all");
	ck_assert_str_eq(matched(s, "openai.chat.stream"), "oa");

	ck_assert_int_eq(state_rule_remove(g_st, s, rule_id(s, "chat"), g_err, sizeof g_err), 0);
	expect_order(s, order3, created3, 4);
	ck_assert_str_eq(matched(s, "openai.chat"), "all");
	reattach();
	expect_order(s, order3, created3, 4);
	ck_assert_str_eq(matched(s, "openai.images.x"), "img");
}
END_TEST

/* ---------------------------------------------------------------- churn */

#define CH_AGENTS 6
#define CH_STEPS 3000

static const char *const ch_names[] = { "a", "b", "c", "d", "e", "f", "openai.*", "x.y" };
static const char *const ch_patterns[] = { "*",         "openai.*", "openai.chat", "openai.chat.*",
	                                   "x.y",       "x.*",      "tool.search", "tool.*" };
static const char *const ch_actions[] = { "openai.chat", "openai.chat.stream", "openai.embed",
	                                  "x.y",         "x.z",                "tool.search",
	                                  "tool.run",    "other" };
static const char *const ch_agent_names[] = { "p", "q", "r", "s", "t", "u", "v", "w", "y" };

#define N(a) (sizeof(a) / sizeof((a)[0]))

struct churn {
	uint64_t rng;
	uint32_t slot[CH_AGENTS]; /* SHM_NONE: not created */
	unsigned long step;
};

static unsigned ch_below(struct churn *w, unsigned n)
{
	w->rng ^= w->rng >> 12;
	w->rng ^= w->rng << 25;
	w->rng ^= w->rng >> 27;
	return (unsigned)((w->rng * UINT64_C(0x2545F4914F6CDD1D)) >> 33) % n;
}

static int pattern_kind(const char *m)
{
	size_t len = strlen(m);

	return strcmp(m, "*") == 0 ? 0 : m[len - 1] == '*' ? 1 : 2;
}

/* The most specific rule of the agent by the spec, from the rule table, not the list. */
static uint32_t ch_expected_match(uint32_t s, const char *action)
{
	uint32_t best = SHM_NONE;
	int best_rank = -1;

	for (uint32_t rs = 0; rs < g_m->hdr->rule_cap; rs++) {
		const struct shm_rule *r = &g_m->rules[rs];
		int rank;

		if (!r->rec.used || r->agent_slot != s)
			continue;
		rank = state_pattern_rank(rule_match(r), strlen(rule_match(r)), action, strlen(action));
		if (rank > best_rank) {
			best_rank = rank;
			best = rs;
		}
	}
	return best;
}

static void ch_invariants(struct churn *w)
{
	static uint32_t refs[4096];
	unsigned long st = w->step;
	uint32_t used = 0, total_rules = 0;
	struct state_counts c;

	ck_assert_uint_le(g_m->hdr->text_cap, N(refs));
	memset(refs, 0, sizeof refs);
	for (uint32_t rs = 0; rs < g_m->hdr->rule_cap; rs++) {
		const struct shm_rule *r = &g_m->rules[rs];

		if (!r->rec.used)
			continue;
		ck_assert_msg(r->agent_slot < g_m->hdr->agent_cap &&
		                      g_m->agents[r->agent_slot].rec.used,
		              "step %lu: rule %u of a free agent slot", st, rs);
		refs[r->name]++;
		refs[r->match]++;
		total_rules++;
	}
	for (uint32_t t = 0; t < g_m->hdr->text_cap; t++) {
		const struct shm_text *x = &g_m->texts[t];

		ck_assert_msg(x->rec.used == (refs[t] > 0) && (!x->rec.used || x->refs == refs[t]),
		              "step %lu: text %u '%s' used %u refs %u, rules name it %u times", st, t,
		              x->s, x->rec.used, x->refs, refs[t]);
		ck_assert_msg(t < g_m->hdr->text_top || !x->rec.used, "step %lu: text above the mark",
		              st);
		if (!x->rec.used)
			continue;
		used++;
		ck_assert_uint_eq(strlen(x->s), x->len);
		for (uint32_t u = 0; u < t; u++)
			ck_assert_msg(!g_m->texts[u].rec.used || strcmp(g_m->texts[u].s, x->s) != 0,
			              "step %lu: '%s' stored twice", st, x->s);
	}
	state_counts(g_st, &c);
	ck_assert_uint_eq(c.texts, used);
	ck_assert_uint_eq(c.rules, total_rules);

	for (int i = 0; i < CH_AGENTS; i++) {
		uint32_t s = w->slot[i], n = 0, prev = SHM_NONE, slots[SC_RULES_MAX];
		const struct shm_agent *a;

		if (s == SHM_NONE)
			continue;
		a = &g_m->agents[s];
		for (uint32_t rs = a->first_rule; rs != SHM_NONE; prev = rs, rs = g_m->rules[rs].next) {
			const struct shm_rule *r = &g_m->rules[rs];

			ck_assert_msg(++n <= a->n_rules, "step %lu: agent %d's list is too long", st, i);
			ck_assert_msg(r->rec.used && r->agent_slot == s,
			              "step %lu: agent %d's list holds rule %u of slot %u", st, i, rs,
			              r->agent_slot);
			if (prev != SHM_NONE) {
				const struct shm_rule *p = &g_m->rules[prev];
				int kp = pattern_kind(rule_match(p)), kr = pattern_kind(rule_match(r));
				size_t lp = strlen(rule_match(p)), lr = strlen(rule_match(r));

				ck_assert_msg(kp > kr || (kp == kr && (lp > lr || (lp == lr && p->id < r->id))),
				              "step %lu: '%s' listed before '%s'", st, rule_match(p),
				              rule_match(r));
			}
		}
		ck_assert_uint_eq(n, a->n_rules);
		ck_assert_uint_eq(state_rule_list(g_st, s, slots), n);
		for (uint32_t k = 1; k < n; k++)
			ck_assert_uint_lt(g_m->rules[slots[k - 1]].id, g_m->rules[slots[k]].id);
		for (size_t k = 0; k < N(ch_actions); k++)
			ck_assert_msg(state_rule_match(g_st, s, ch_actions[k], strlen(ch_actions[k])) ==
			                      ch_expected_match(s, ch_actions[k]),
			              "step %lu: agent %d matched the wrong rule for %s", st, i,
			              ch_actions[k]);
	}
}

/* An agent slot still named ch_agent_names[k], if any. */
static int ch_name_taken(const struct churn *w, const char *name)
{
	for (int i = 0; i < CH_AGENTS; i++)
		if (w->slot[i] != SHM_NONE && strcmp(g_m->agents[w->slot[i]].name, name) == 0)
			return 1;
	return 0;
}

static struct state_rule_spec ch_rule(struct churn *w)
{
	return rspec(ch_names[ch_below(w, N(ch_names))], ch_patterns[ch_below(w, N(ch_patterns))],
	             0, 0, 0);
}

/* Results a change may have here: done, a clash, or a full table. */
static void ch_rc(struct churn *w, const char *what, int rc)
{
	ck_assert_msg(rc == 0 || rc == SC_EEXISTS || rc == SC_ELIMIT, "step %lu: %s: %d (%s)",
	              w->step, what, rc, g_err);
}

static void ch_step(struct churn *w)
{
	int i = (int)ch_below(w, CH_AGENTS);
	uint32_t s = w->slot[i], rs;
	struct state_rule_spec r;
	int rc;

	if (s == SHM_NONE) {
		struct state_rule_spec rules[3];
		struct state_agent_spec spec;
		const char *name = ch_agent_names[ch_below(w, N(ch_agent_names))];
		unsigned n = ch_below(w, 4);

		for (unsigned k = 0; k < n; k++)
			rules[k] = ch_rule(w);
		memset(&spec, 0, sizeof spec);
		spec.org_slot = g_org;
		spec.name = str(name);
		spec.rules = rules;
		spec.n_rules = n;
		rc = state_agent_create(g_st, &spec, T0, &s, g_err, sizeof g_err);
		ck_assert_msg(rc != 0 || !ch_name_taken(w, name), "step %lu: a second '%s'", w->step,
		              name);
		ck_assert_msg(rc != SC_EEXISTS || n > 1 || ch_name_taken(w, name),
		              "step %lu: '%s' refused as taken", w->step, name);
		ch_rc(w, "create", rc);
		if (rc == 0)
			w->slot[i] = s;
		return;
	}
	switch (ch_below(w, 6)) {
	case 0:
		r = ch_rule(w);
		ch_rc(w, "add", state_rule_add(g_st, s, &r, &rs, g_err, sizeof g_err));
		break;
	case 1:
	case 2:
		if (g_m->agents[s].first_rule == SHM_NONE)
			break;
		r = ch_rule(w);
		r.set = STATE_RULE_SET_NAME << ch_below(w, 2);
		if (ch_below(w, 3) == 0)
			r.set = STATE_RULE_SET_NAME | STATE_RULE_SET_MATCH;
		ch_rc(w, "update",
		      state_rule_update(g_st, s, g_m->rules[g_m->agents[s].first_rule].id, &r, &rs,
		                        g_err, sizeof g_err));
		break;
	case 3:
		if (g_m->agents[s].first_rule == SHM_NONE)
			break;
		ck_assert_int_eq(state_rule_remove(g_st, s, g_m->rules[g_m->agents[s].first_rule].id,
		                                   g_err, sizeof g_err),
		                 0);
		break;
	case 4: {
		const char *name = ch_agent_names[ch_below(w, N(ch_agent_names))];
		struct state_str n = str(name);
		int taken = ch_name_taken(w, name) && strcmp(g_m->agents[s].name, name) != 0;

		rc = state_agent_update(g_st, s, &n, -1, -1, T0, g_err, sizeof g_err);
		ck_assert_int_eq(rc, taken ? SC_EEXISTS : 0);
		break;
	}
	default:
		ck_assert_int_eq(state_agent_delete(g_st, s, g_err, sizeof g_err), 0);
		w->slot[i] = SHM_NONE;
		break;
	}
}

static void run_churn(uint64_t seed, uint32_t text_cap)
{
	struct shm_caps caps = default_caps;
	struct churn w;

	caps.agents = CH_AGENTS;
	caps.rules = 24;
	caps.texts = text_cap;
	open_state(caps, TTL, 1);
	memset(&w, 0, sizeof w);
	w.rng = seed;
	for (int i = 0; i < CH_AGENTS; i++)
		w.slot[i] = SHM_NONE;
	for (w.step = 1; w.step <= CH_STEPS; w.step++) {
		ch_step(&w);
		ch_invariants(&w);
		if (w.step % 500 == 0) {
			reattach();
			ch_invariants(&w);
		}
	}
}

START_TEST(test_churn_keeps_lists_texts_and_indexes)
{
	run_churn(UINT64_C(0x9e3779b97f4a7c15), 64);
}
END_TEST

/* Six texts for up to 24 rules: the table is full most of the time. */
START_TEST(test_churn_on_a_full_text_table)
{
	run_churn(UINT64_C(0x0ddba11cafe5eed5), 6);
}
END_TEST

Suite *rules_suite(void)
{
	Suite *s = suite_create("rules");
	TCase *tc = tcase_create("rules");

	tcase_add_checked_fixture(tc, gate_setup, gate_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_texts_shared_by_a_fleet_and_released);
	tcase_add_test(tc, test_full_text_table_refuses_the_whole_change);
	tcase_add_test(tc, test_list_in_match_order_listing_in_creation_order);
	tcase_add_test(tc, test_churn_keeps_lists_texts_and_indexes);
	tcase_add_test(tc, test_churn_on_a_full_text_table);
	suite_add_tcase(s, tc);
	return s;
}
