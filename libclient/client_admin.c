/*
 * client_admin.c: libsidecard's methods other than the gate's (those are
 * client_gate.c's): the rate table (pricing.*), orgs, agents, rules,
 * wallets (updates, transfers, adjustments, sub-budgets, spend), the
 * transaction and alert listings, summaries, kredit scores and events,
 * the daemon's counters, alert subscriptions (the alerts pushed then are
 * read by sc_alert_next(), client.c), and access tokens (agents'
 * rotations, readers' tokens).
 *
 * Each method checks the arguments the daemon could not tell apart from
 * valid ones (a NULL string, an enum out of range), names its arguments in
 * a `struct request` and makes one round trip, decoding the result through
 * the table of the struct it returns (client_fields.c).
 *
 * Threads: the calling thread, which owns the client for the call
 * (sidecard.h). Ownership: results are written into the caller's structs;
 * a list is one malloc block, freed by its sc_*_free function.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "client_int.h"

/* A whole rule: what rules.add and agents.create send of each. */
#define RULE_SET_ALL                                                                         \
	(SC_RULE_SET_NAME | SC_RULE_SET_MATCH | SC_RULE_SET_MAX_COST_PER_TXN |               \
	 SC_RULE_SET_DAILY_SPEND_LIMIT | SC_RULE_SET_HOURLY_RATE_LIMIT)

/* ----- pricing ----- */

int sc_pricing_set(sc_client *c, const char *model, sc_micros input, sc_micros output,
                   const sc_micros *cached_input, const int64_t *effective_from, sc_price *out)
{
	struct request rq = { .method = "pricing.set" }, *r = &rq;

	if (model == NULL)
		return sc_client_fail(c, SC_EINVAL, "model: required");
	sc_client_arg_str(r, "model", model);
	sc_client_arg_int(r, "input", input);
	sc_client_arg_int(r, "output", output);
	if (cached_input != NULL)
		sc_client_arg_int(r, "cached_input", *cached_input);
	if (effective_from != NULL)
		sc_client_arg_int(r, "effective_from", *effective_from);
	return sc_client_call_one(c, r, sc_client_price_table, out, sizeof(*out));
}

int sc_pricing_list(sc_client *c, const char *model, sc_price **out, size_t *n)
{
	struct request rq = { .method = "pricing.list" }, *r = &rq;

	if (model != NULL)
		sc_client_arg_str(r, "model", model);
	return sc_client_call_list(c, r, sc_client_price_table, sizeof(**out), (void **)out, n);
}

void sc_prices_free(sc_price *list)
{
	free(list);
}

int sc_pricing_get(sc_client *c, const char *model, const int64_t *at, sc_price *out)
{
	struct request rq = { .method = "pricing.get" }, *r = &rq;

	if (model == NULL)
		return sc_client_fail(c, SC_EINVAL, "model: required");
	sc_client_arg_str(r, "model", model);
	if (at != NULL)
		sc_client_arg_int(r, "at", *at);
	return sc_client_call_one(c, r, sc_client_price_table, out, sizeof(*out));
}

/* ----- management ----- */

int sc_orgs_create_tz(sc_client *c, const char *name, const char *timezone, sc_org *out)
{
	struct request rq = { .method = "orgs.create" }, *r = &rq;

	if (name == NULL)
		return sc_client_fail(c, SC_EINVAL, "name: required");
	sc_client_arg_str(r, "name", name);
	if (timezone != NULL)
		sc_client_arg_str(r, "timezone", timezone);
	return sc_client_call_one(c, r, sc_client_org_table, out, sizeof(*out));
}

int sc_orgs_create(sc_client *c, const char *name, sc_org *out)
{
	return sc_orgs_create_tz(c, name, NULL, out);
}

int sc_orgs_set_timezone(sc_client *c, uint64_t org_id, const char *timezone, sc_org *out)
{
	struct request rq = { .method = "orgs.update" }, *r = &rq;

	if (timezone == NULL)
		return sc_client_fail(c, SC_EINVAL, "timezone: required");
	sc_client_arg_uint(r, "org_id", org_id);
	sc_client_arg_str(r, "timezone", timezone);
	return sc_client_call_one(c, r, sc_client_org_table, out, sizeof(*out));
}

int sc_orgs_list(sc_client *c, sc_org **out, size_t *n)
{
	struct request r = { .method = "orgs.list" };

	return sc_client_call_list(c, &r, sc_client_org_table, sizeof(**out), (void **)out, n);
}

void sc_orgs_free(sc_org *list)
{
	free(list);
}

/* An org given as text: a decimal id travels as an integer, anything else as a name. */
static void arg_org(struct request *r, const char *org)
{
	uint64_t id = 0;
	const char *p;

	for (p = org; *p >= '0' && *p <= '9'; p++)
		if (__builtin_mul_overflow(id, 10, &id) || __builtin_add_overflow(id, *p - '0', &id))
			break;
	if (*p == '\0' && p != org && id > 0)
		sc_client_arg_uint(r, "org", id);
	else
		sc_client_arg_str(r, "org", org);
}

int sc_agents_create(sc_client *c, const char *org, const char *name, enum sc_priority priority,
                     const sc_wallet_update *wallet, const sc_rule *rules, size_t n_rules,
                     sc_agent *out)
{
	struct request rq = { .method = "agents.create" }, *r = &rq;

	if (org == NULL || name == NULL)
		return sc_client_fail(c, SC_EINVAL, "%s: required", org == NULL ? "org" : "name");
	if ((unsigned)priority > SC_PRIORITY_CRITICAL)
		return sc_client_fail(c, SC_EINVAL, "priority: out of range");
	arg_org(r, org);
	sc_client_arg_str(r, "name", name);
	sc_client_arg_str(r, "priority", sc_priority_name(priority));
	if (wallet != NULL)
		sc_client_arg_fields(r, ARG_MAP, "wallet", sc_client_wallet_update_table, wallet, 1,
		                  sizeof(*wallet), wallet->set);
	if (n_rules > 0)
		sc_client_arg_fields(r, ARG_MAP_ARRAY, "rules", sc_client_rule_table, rules, n_rules,
		                  sizeof(*rules), RULE_SET_ALL);
	return sc_client_call_one(c, r, sc_client_agent_table, out, sizeof(*out));
}

int sc_agents_get(sc_client *c, uint64_t agent_id, sc_agent *out)
{
	struct request rq = { .method = "agents.get" }, *r = &rq;

	sc_client_arg_uint(r, "agent_id", agent_id);
	return sc_client_call_one(c, r, sc_client_agent_table, out, sizeof(*out));
}

int sc_agents_list(sc_client *c, uint64_t org_id, sc_agent **out, size_t *n)
{
	struct request rq = { .method = "agents.list" }, *r = &rq;

	if (org_id != 0)
		sc_client_arg_uint(r, "org", org_id);
	return sc_client_call_list(c, r, sc_client_agent_table, sizeof(**out), (void **)out, n);
}

void sc_agents_free(sc_agent *list)
{
	free(list);
}

int sc_agents_update(sc_client *c, uint64_t agent_id, const char *name, int priority, int status,
                     sc_agent *out)
{
	struct request rq = { .method = "agents.update" }, *r = &rq;

	if (priority > SC_PRIORITY_CRITICAL || status > SC_STATUS_FROZEN)
		return sc_client_fail(c, SC_EINVAL, "%s: out of range",
		                   priority > SC_PRIORITY_CRITICAL ? "priority" : "status");
	sc_client_arg_uint(r, "agent_id", agent_id);
	if (name != NULL)
		sc_client_arg_str(r, "name", name);
	if (priority >= 0)
		sc_client_arg_str(r, "priority", sc_priority_name((enum sc_priority)priority));
	if (status >= 0)
		sc_client_arg_str(r, "status", sc_status_name((enum sc_status)status));
	return sc_client_call_one(c, r, sc_client_agent_table, out, sizeof(*out));
}

int sc_agents_delete(sc_client *c, uint64_t agent_id)
{
	struct request rq = { .method = "agents.delete" }, *r = &rq;

	sc_client_arg_uint(r, "agent_id", agent_id);
	return sc_client_call_done(c, r, sc_client_deleted_table);
}

int sc_agents_rotate_token(sc_client *c, uint64_t agent_id, char token[SC_TOKEN_MAX + 1])
{
	struct request rq = { .method = "agents.rotate_token" }, *r = &rq;
	struct rotation rot;
	int rc;

	/* A rotation whose token is not kept would leave the agent without a usable one. */
	if (token == NULL)
		return sc_client_fail(c, SC_EINVAL, "token: a buffer for the new token is required");
	sc_client_arg_uint(r, "agent_id", agent_id);
	if ((rc = sc_client_call_one(c, r, sc_client_rotation_table, &rot, sizeof(rot))) != 0)
		return rc;
	if (rot.agent_id != agent_id)
		return sc_client_fail(c, SC_EPROTO,
		                      "malformed token rotation from the daemon: agent %" PRIu64
		                      " instead of %" PRIu64, rot.agent_id, agent_id);
	memcpy(token, rot.token, sizeof(rot.token));
	return 0;
}

/* rules.add and rules.update: the same arguments, rules.add without a rule_id. */
static int rule_call(sc_client *c, const char *method, uint64_t agent_id, const uint64_t *rule_id,
                     unsigned set, const sc_rule *rule, sc_rule *out)
{
	struct request rq = { .method = method }, *r = &rq;

	sc_client_arg_uint(r, "agent_id", agent_id);
	if (rule_id != NULL)
		sc_client_arg_uint(r, "rule_id", *rule_id);
	sc_client_arg_fields(r, ARG_FIELDS, NULL, sc_client_rule_table, rule, 1, sizeof(*rule), set);
	return sc_client_call_one(c, r, sc_client_rule_table, out, sizeof(*out));
}

int sc_rules_add(sc_client *c, uint64_t agent_id, const sc_rule *rule, sc_rule *out)
{
	return rule_call(c, "rules.add", agent_id, NULL, RULE_SET_ALL, rule, out);
}

int sc_rules_update(sc_client *c, uint64_t agent_id, uint64_t rule_id, unsigned set,
                    const sc_rule *rule, sc_rule *out)
{
	return rule_call(c, "rules.update", agent_id, &rule_id, set, rule, out);
}

int sc_rules_list(sc_client *c, uint64_t agent_id, sc_rule **out, size_t *n)
{
	struct request rq = { .method = "rules.list" }, *r = &rq;

	sc_client_arg_uint(r, "agent_id", agent_id);
	return sc_client_call_list(c, r, sc_client_rule_table, sizeof(**out), (void **)out, n);
}

void sc_rules_free(sc_rule *list)
{
	free(list);
}

int sc_rules_remove(sc_client *c, uint64_t agent_id, uint64_t rule_id)
{
	struct request rq = { .method = "rules.remove" }, *r = &rq;

	sc_client_arg_uint(r, "agent_id", agent_id);
	sc_client_arg_uint(r, "rule_id", rule_id);
	return sc_client_call_done(c, r, sc_client_removed_table);
}

/*
 * wallets.get and wallets.update of an agent (key "agent_id") or an org
 * ("org_id"); u NULL: get. An absent `limited` means an agent wallet.
 */
static int wallet_call(sc_client *c, const char *key, uint64_t id, const sc_wallet_update *u,
                       sc_wallet *out)
{
	struct request rq = { .method = u == NULL ? "wallets.get" : "wallets.update" }, *r = &rq;

	sc_client_arg_uint(r, key, id);
	if (u != NULL)
		sc_client_arg_fields(r, ARG_FIELDS, NULL, sc_client_wallet_update_table, u, 1,
		                  sizeof(*u), u->set);
	/* out NULL: the call's result is not wanted, as for every other call */
	if (out != NULL) {
		memset(out, 0, sizeof(*out));
		out->limited = strcmp(key, "agent_id") == 0;
	}
	/* size 0: keep the default of `limited` set above. */
	return sc_client_call_one(c, r, sc_client_wallet_table, out, 0);
}

int sc_wallets_get(sc_client *c, uint64_t agent_id, sc_wallet *out)
{
	return wallet_call(c, "agent_id", agent_id, NULL, out);
}

int sc_wallets_update(sc_client *c, uint64_t agent_id, const sc_wallet_update *u, sc_wallet *out)
{
	return wallet_call(c, "agent_id", agent_id, u, out);
}

int sc_org_wallet_get(sc_client *c, uint64_t org_id, sc_wallet *out)
{
	return wallet_call(c, "org_id", org_id, NULL, out);
}

int sc_org_wallet_update(sc_client *c, uint64_t org_id, const sc_wallet_update *u,
                         sc_wallet *out)
{
	return wallet_call(c, "org_id", org_id, u, out);
}

/* The keys that name a wallet in a request: a transfer's two, or adjust's one. */
struct ref_keys {
	const char *what, *agent_id, *org_id;
};

static const struct ref_keys from_keys = { "from", "from_agent_id", "from_org_id" },
	to_keys = { "to", "to_agent_id", "to_org_id" },
	own_keys = { "wallet", "agent_id", "org_id" };

static int arg_wallet_ref(sc_client *c, struct request *r, const struct ref_keys *k,
                          sc_wallet_ref ref)
{
	if ((ref.agent_id != 0) == (ref.org_id != 0))
		return sc_client_fail(c, SC_EINVAL, "%s: give exactly one of %s and %s", k->what,
		                   k->agent_id, k->org_id);
	if (ref.agent_id != 0)
		sc_client_arg_uint(r, k->agent_id, ref.agent_id);
	else
		sc_client_arg_uint(r, k->org_id, ref.org_id);
	return 0;
}

int sc_wallets_transfer(sc_client *c, sc_wallet_ref from, sc_wallet_ref to, sc_micros amount,
                        const char *reason, sc_wallet *from_after, sc_wallet *to_after,
                        uint64_t txn_ids[2])
{
	struct request rq = { .method = "wallets.transfer" }, *r = &rq;
	struct transfer t;
	int rc;

	if (reason == NULL)
		return sc_client_fail(c, SC_EINVAL, "reason: required");
	if ((rc = arg_wallet_ref(c, r, &from_keys, from)) != 0 ||
	    (rc = arg_wallet_ref(c, r, &to_keys, to)) != 0)
		return rc;
	sc_client_arg_int(r, "amount", amount);
	sc_client_arg_str(r, "reason", reason);
	if ((rc = sc_client_call_one(c, r, sc_client_transfer_table, &t, sizeof(t))) != 0)
		return rc;
	if (t.amount != amount)
		return sc_client_fail(c, SC_EPROTO,
		                   "malformed transfer from the daemon: 'amount' is %" PRId64
		                   ", not %" PRId64,
		                   t.amount, amount);
	if (from_after != NULL)
		*from_after = t.from;
	if (to_after != NULL)
		*to_after = t.to;
	if (txn_ids != NULL)
		memcpy(txn_ids, t.transactions, sizeof(t.transactions));
	return 0;
}

int sc_wallets_adjust(sc_client *c, sc_wallet_ref w, sc_micros amount, const char *reason,
                      sc_wallet *after, uint64_t *txn_id)
{
	struct request rq = { .method = "wallets.adjust" }, *r = &rq;
	struct adjustment a;
	int rc;

	if (reason == NULL)
		return sc_client_fail(c, SC_EINVAL, "reason: required");
	if ((rc = arg_wallet_ref(c, r, &own_keys, w)) != 0)
		return rc;
	sc_client_arg_int(r, "amount", amount);
	sc_client_arg_str(r, "reason", reason);
	if ((rc = sc_client_call_one(c, r, sc_client_adjustment_table, &a, sizeof(a))) != 0)
		return rc;
	if (after != NULL)
		*after = a.wallet;
	if (txn_id != NULL)
		*txn_id = a.transaction_id;
	return 0;
}

static int carve_call(sc_client *c, const char *method, uint64_t agent_id, const sc_micros *amount,
                      const char *reason, sc_wallet *agent_after, sc_wallet *org_after,
                      uint64_t *txn_id)
{
	struct request rq = { .method = method }, *r = &rq;
	struct carve v;
	int rc;

	sc_client_arg_uint(r, "agent_id", agent_id);
	if (amount != NULL) {
		if (reason == NULL)
			return sc_client_fail(c, SC_EINVAL, "reason: required");
		sc_client_arg_int(r, "amount", *amount);
		sc_client_arg_str(r, "reason", reason);
	}
	if ((rc = sc_client_call_one(c, r, sc_client_carve_table, &v, sizeof(v))) != 0)
		return rc;
	if (agent_after != NULL)
		*agent_after = v.agent;
	if (org_after != NULL)
		*org_after = v.org;
	if (txn_id != NULL)
		*txn_id = v.transaction_id;
	return 0;
}

int sc_wallets_carve(sc_client *c, uint64_t agent_id, sc_micros amount, const char *reason,
                     sc_wallet *agent_after, sc_wallet *org_after, uint64_t *txn_id)
{
	return carve_call(c, "wallets.carve", agent_id, &amount, reason, agent_after, org_after,
	                  txn_id);
}

int sc_wallets_release(sc_client *c, uint64_t agent_id, sc_wallet *agent_after,
                       sc_wallet *org_after)
{
	return carve_call(c, "wallets.release", agent_id, NULL, NULL, agent_after, org_after, NULL);
}

int sc_spend_get(sc_client *c, sc_wallet_ref w, sc_spend *out)
{
	struct request rq = { .method = "spend" }, *r = &rq;
	int rc;

	if ((rc = arg_wallet_ref(c, r, &own_keys, w)) != 0)
		return rc;
	return sc_client_call_one(c, r, sc_client_spend_table, out, sizeof(*out));
}

void sc_txn_filter_init(sc_txn_filter *f)
{
	memset(f, 0, sizeof(*f));
	f->status = -1;
	f->risk = -1;
}

/* The filters every method over transactions takes: agent, org and window; 0 means any. */
static void arg_txn_scope(struct request *r, const sc_txn_filter *f)
{
	if (f->agent_id != 0)
		sc_client_arg_uint(r, "agent_id", f->agent_id);
	if (f->org_id != 0)
		sc_client_arg_uint(r, "org_id", f->org_id);
	if (f->since != 0)
		sc_client_arg_int(r, "since", f->since);
	if (f->until != 0)
		sc_client_arg_int(r, "until", f->until);
}

int sc_transactions_query(sc_client *c, const sc_txn_filter *f, sc_transaction **out, size_t *n)
{
	struct request rq = { .method = "transactions.list" }, *r = &rq;
	sc_txn_filter any;

	*out = NULL;
	*n = 0;
	if (f == NULL) {
		sc_txn_filter_init(&any);
		f = &any;
	}
	if (f->status > SC_TXN_EXPIRED || f->risk > SC_RISK_HIGH)
		return sc_client_fail(c, SC_EINVAL, "%s: out of range",
		                   f->status > SC_TXN_EXPIRED ? "status" : "risk");
	arg_txn_scope(r, f);
	if (f->status >= 0)
		sc_client_arg_str(r, "status", sc_txn_status_name((enum sc_txn_status)f->status));
	if (f->risk >= 0)
		sc_client_arg_str(r, "risk_level", sc_risk_name((enum sc_risk)f->risk));
	if (f->before != 0)
		sc_client_arg_uint(r, "before", f->before);
	if (f->limit != 0)
		sc_client_arg_uint(r, "limit", f->limit);
	return sc_client_call_list(c, r, sc_client_transaction_table,
	                        sizeof(**out), (void **)out, n);
}

int sc_transactions_list(sc_client *c, uint64_t agent_id, int status, unsigned limit,
                         sc_transaction **out, size_t *n)
{
	sc_txn_filter f;

	sc_txn_filter_init(&f);
	f.agent_id = agent_id;
	f.status = status < 0 ? -1 : status;
	f.limit = limit;
	return sc_transactions_query(c, &f, out, n);
}

void sc_transactions_free(sc_transaction *list)
{
	free(list);
}

int sc_transactions_summary(sc_client *c, const sc_txn_filter *f, sc_txn_summary *out)
{
	struct request rq = { .method = "transactions.summary" }, *r = &rq;

	if (f != NULL)
		arg_txn_scope(r, f);
	return sc_client_call_one(c, r, sc_client_txn_summary_table, out, sizeof(*out));
}

int sc_agents_top(sc_client *c, uint64_t org_id, int64_t since, int64_t until, unsigned limit,
                  sc_top_agent **out, size_t *n)
{
	struct request rq = { .method = "agents.top" }, *r = &rq;
	sc_txn_filter f;

	sc_txn_filter_init(&f);
	f.org_id = org_id;
	f.since = since;
	f.until = until;
	arg_txn_scope(r, &f);
	if (limit != 0)
		sc_client_arg_uint(r, "limit", limit);
	return sc_client_call_list(c, r, sc_client_top_agent_table, sizeof(**out), (void **)out,
	                        n);
}

void sc_top_agents_free(sc_top_agent *list)
{
	free(list);
}

int sc_fleet_get(sc_client *c, sc_fleet *out)
{
	struct request r = { .method = "fleet" };

	return sc_client_call_one(c, &r, sc_client_fleet_table, out, sizeof(*out));
}

int sc_tasks_usage_org(sc_client *c, uint64_t org_id, const char *task_id, sc_task_usage *out)
{
	struct request rq = { .method = "tasks.usage" }, *r = &rq;

	if (task_id == NULL)
		return sc_client_fail(c, SC_EINVAL, "task_id: required");
	sc_client_arg_str(r, "task_id", task_id);
	if (org_id != 0)
		sc_client_arg_uint(r, "org_id", org_id);
	return sc_client_call_one(c, r, sc_client_task_usage_table, out, sizeof(*out));
}

int sc_tasks_usage(sc_client *c, const char *task_id, sc_task_usage *out)
{
	return sc_tasks_usage_org(c, 0, task_id, out);
}

/* ----- kredit score and events ----- */

int sc_score_get(sc_client *c, uint64_t agent_id, sc_score *out)
{
	struct request rq = { .method = "score" }, *r = &rq;

	sc_client_arg_uint(r, "agent_id", agent_id);
	return sc_client_call_one(c, r, sc_client_score_table, out, sizeof(*out));
}

int sc_agents_events(sc_client *c, uint64_t agent_id, unsigned limit, sc_event **out, size_t *n)
{
	struct request rq = { .method = "agents.events" }, *r = &rq;

	sc_client_arg_uint(r, "agent_id", agent_id);
	if (limit != 0)
		sc_client_arg_uint(r, "limit", limit);
	return sc_client_call_list(c, r, sc_client_event_table, sizeof(**out),
	                        (void **)out, n);
}

void sc_events_free(sc_event *list)
{
	free(list);
}

/* ----- counters ----- */

/* The daemon's stats map, valid until the next call on c. */
static int stats(sc_client *c, const msgpack_object **out)
{
	struct request r = { .method = "stats" };
	int rc;

	if ((rc = sc_client_rpc(c, &r, out)) != 0)
		return rc;
	if ((*out)->type != MSGPACK_OBJECT_MAP)
		return sc_client_fail(c, SC_EPROTO, "malformed stats from the daemon: not a map");
	return 0;
}

int sc_stat(sc_client *c, const char *name, int64_t *out)
{
	const msgpack_object *res, *v;
	int rc;

	if ((rc = stats(c, &res)) != 0)
		return rc;
	if ((v = sc_client_map_get(res, name)) == NULL)
		return sc_client_fail(c, SC_ENOTFOUND, "no counter '%s'", name);
	if (sc_client_get_int(v, out) != 0)
		return sc_client_fail(c, SC_EPROTO,
		                   "malformed stats from the daemon: '%s' is not an integer", name);
	return 0;
}

int sc_client_stat_str(sc_client *c, const char *name, char *buf, size_t len)
{
	const msgpack_object *res, *v;
	int rc;

	if ((rc = stats(c, &res)) != 0)
		return rc;
	if ((v = sc_client_map_get(res, name)) == NULL)
		return sc_client_fail(c, SC_ENOTFOUND, "the daemon's stats have no '%s'", name);
	if (sc_client_copy_str(v, buf, len) != 0)
		return sc_client_fail(c, SC_EPROTO,
		                   "malformed stats from the daemon: '%s' is not a string of "
		                   "at most %zu bytes",
		                   name, len - 1);
	return 0;
}

/* ----- alerts ----- */

void sc_alert_filter_init(sc_alert_filter *f)
{
	memset(f, 0, sizeof(*f));
	f->kind = -1;
	f->severity = -1;
}

int sc_alerts_list(sc_client *c, const sc_alert_filter *f, sc_alert **out, size_t *n)
{
	struct request rq = { .method = "alerts.list" }, *r = &rq;
	sc_alert_filter any;

	*out = NULL;
	*n = 0;
	if (f == NULL) {
		sc_alert_filter_init(&any);
		f = &any;
	}
	if (f->kind > SC_ALERT_ANOMALY || f->severity > SC_SEVERITY_CRITICAL)
		return sc_client_fail(c, SC_EINVAL, "%s: out of range",
		                   f->kind > SC_ALERT_ANOMALY ? "kind" : "severity");
	if (f->agent_id != 0)
		sc_client_arg_uint(r, "agent_id", f->agent_id);
	if (f->org_id != 0)
		sc_client_arg_uint(r, "org_id", f->org_id);
	if (f->kind >= 0)
		sc_client_arg_str(r, "kind", sc_alert_kind_name((enum sc_alert_kind)f->kind));
	if (f->severity >= 0)
		sc_client_arg_str(r, "severity", sc_severity_name((enum sc_severity)f->severity));
	if (f->since != 0)
		sc_client_arg_int(r, "since", f->since);
	if (f->before != 0)
		sc_client_arg_uint(r, "before", f->before);
	if (f->limit != 0)
		sc_client_arg_uint(r, "limit", f->limit);
	return sc_client_call_list(c, r, sc_client_alert_table, sizeof(**out), (void **)out, n);
}

void sc_alerts_free(sc_alert *list)
{
	free(list);
}

/* alerts.subscribe (yes) or alerts.unsubscribe: the answer must say so. */
static int subscription_call(sc_client *c, int yes, uint64_t *last_id)
{
	struct request r = { .method = yes ? "alerts.subscribe" : "alerts.unsubscribe" };
	struct subscription s;
	int rc = sc_client_call_one(c, &r, sc_client_subscription_table, &s, sizeof(s));

	if (rc == 0 && s.subscribed != yes)
		rc = sc_client_fail(c, SC_EPROTO, "the daemon answered %s with subscribed: %s",
		                 r.method, s.subscribed ? "true" : "false");
	if (rc == 0 && last_id != NULL)
		*last_id = s.last_alert_id;
	return rc;
}

int sc_alerts_subscribe(sc_client *c, uint64_t *last_id)
{
	return subscription_call(c, 1, last_id);
}

int sc_alerts_unsubscribe(sc_client *c)
{
	return subscription_call(c, 0, NULL);
}

/* ----- access tokens ----- */

int sc_tokens_create(sc_client *c, const char *role, const char *name, sc_access_token *out)
{
	struct request rq = { .method = "tokens.create" }, *r = &rq;
	int rc;

	if (role == NULL)
		return sc_client_fail(c, SC_EINVAL, "role: required");
	/* The daemon shows a token once: a call that cannot keep it must not issue one. */
	if (out == NULL)
		return sc_client_fail(c, SC_EINVAL, "out: required, the token is shown only once");
	sc_client_arg_str(r, "role", role);
	if (name != NULL)
		sc_client_arg_str(r, "name", name);
	if ((rc = sc_client_call_one(c, r, sc_client_access_token_table, out, sizeof(*out))) != 0)
		return rc;
	/* The table serves listings too, where the token is absent; here it is the point. */
	if (out->token[0] == '\0')
		return sc_client_fail(c, SC_EPROTO, "malformed token from the daemon: no 'token'");
	return 0;
}

int sc_tokens_list(sc_client *c, sc_access_token **out, size_t *n)
{
	struct request r = { .method = "tokens.list" };

	return sc_client_call_list(c, &r, sc_client_access_token_table, sizeof(**out),
	                           (void **)out, n);
}

void sc_access_tokens_free(sc_access_token *list)
{
	free(list);
}

int sc_tokens_revoke(sc_client *c, uint64_t token_id)
{
	struct request rq = { .method = "tokens.revoke" }, *r = &rq;

	sc_client_arg_uint(r, "token_id", token_id);
	return sc_client_call_done(c, r, sc_client_revoked_table);
}
