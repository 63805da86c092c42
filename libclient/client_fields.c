/*
 * client_fields.c: the wire form of libsidecard's public structs, and the
 * decoder that fills them from the daemon's results (docs/PROTOCOL.md gives
 * each object's fields).
 *
 * DESIGN. Requests and results are described by field tables, not written
 * out per method. A `struct field` names one member of a public struct
 * (sc_wallet, sc_rule, sc_agent, ...): its wire key, its wire type and its
 * offset. decode_fields() fills a struct from a result map through its
 * table, strictly (a missing or ill-typed field, or a string longer than
 * its array, is SC_EPROTO) while ignoring keys it does not know, so a newer
 * daemon may add fields. The same tables pack the optional fields of
 * updates (client_request.c): an entry with a non-zero `set` bit is sent
 * when the caller set that bit (SC_WALLET_SET_*, SC_RULE_SET_*). A nested
 * map whose members live in the same struct (score's `factors`) is an
 * FT_INLINE entry naming its own table; a rule that spans fields (an
 * event's `from` and `to` come together, on status changes only; a
 * transaction without an agent is a transfer or an adjustment, whose
 * metadata holds its reason; hello names an agent exactly when the role is
 * agent) is the table's `check`, which may also fill
 * the members such a rule governs. Each table is published as a `struct
 * table` (client_int.h) named after the struct it fills.
 *
 * Threads: the tables are constant; decoding touches only the client it is
 * given (its error message) and the caller's struct, so it runs on the
 * thread that owns that client. Ownership: a decoded struct copies what it
 * keeps (strings into its arrays); lists are one malloc block the caller
 * frees.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "client_int.h"

/* ----- field tables ----- */

/* Every enumeration is stored as an int; that holds on every ABI we build for. */
_Static_assert(sizeof(enum sc_priority) == sizeof(int), "enum size");
_Static_assert(sizeof(enum sc_status) == sizeof(int), "enum size");
_Static_assert(sizeof(enum sc_outcome) == sizeof(int), "enum size");
_Static_assert(sizeof(enum sc_txn_status) == sizeof(int), "enum size");
_Static_assert(sizeof(enum sc_event_type) == sizeof(int), "enum size");
_Static_assert(sizeof(enum sc_risk) == sizeof(int), "enum size");
_Static_assert(sizeof(enum sc_period) == sizeof(int), "enum size");
_Static_assert(sizeof(enum sc_alert_kind) == sizeof(int), "enum size");
_Static_assert(sizeof(enum sc_severity) == sizeof(int), "enum size");

#define ENUM_PARSER(fn, parse_fn, type)              \
	static int fn(const char *s, int *out)       \
	{                                            \
		type v;                              \
		int rc = parse_fn(s, &v);            \
		if (rc == 0)                         \
			*out = (int)v;               \
		return rc;                           \
	}
ENUM_PARSER(parse_priority, sc_priority_parse, enum sc_priority)
ENUM_PARSER(parse_status, sc_status_parse, enum sc_status)
ENUM_PARSER(parse_outcome, sc_outcome_parse, enum sc_outcome)
ENUM_PARSER(parse_txn_status, sc_txn_status_parse, enum sc_txn_status)
ENUM_PARSER(parse_event_type, sc_event_type_parse, enum sc_event_type)
ENUM_PARSER(parse_risk, sc_risk_parse, enum sc_risk)
ENUM_PARSER(parse_period, sc_period_parse, enum sc_period)
ENUM_PARSER(parse_alert_kind, sc_alert_kind_parse, enum sc_alert_kind)
ENUM_PARSER(parse_severity, sc_severity_parse, enum sc_severity)
#undef ENUM_PARSER

/* A decision's status: "allowed" -> 1, "blocked" -> 0. */
static int parse_allowed(const char *s, int *out)
{
	if (strcmp(s, "allowed") == 0)
		*out = 1;
	else if (strcmp(s, "blocked") == 0)
		*out = 0;
	else
		return SC_EINVAL;
	return 0;
}

/*
 * F(type, member, key, ...) describes one member of the struct named by
 * type_of_table, which is #defined around each table; STR(member) gives a
 * string member's capacity.
 */
#define F(type_, member, key_, ...) \
	{ .key = key_, .type = (type_), .off = offsetof(type_of_table, member), __VA_ARGS__ }
#define STR(member) .aux = sizeof(((type_of_table *)0)->member)

#define type_of_table sc_wallet
static const struct field wallet_fields[] = {
	F(FT_INT, balance, "balance"),
	F(FT_INT, held, "held"),
	F(FT_INT, available, "available"),
	F(FT_INT, budget, "budget"),
	F(FT_INT, max_per_txn, "max_per_txn"),
	F(FT_INT, daily_spend_limit, "daily_spend_limit"),
	F(FT_INT, daily_spent, "daily_spent"),
	F(FT_INT, debt, "debt"),
	F(FT_ENUM, period, "period", .parse = parse_period),
	F(FT_INT, reserved, "reserved"),
	F(FT_BOOL, limited, "limited", .flags = F_OPTIONAL),
	F(FT_BOOL, sub_budget, "sub_budget", .flags = F_OPTIONAL),
	F(FT_INT, low_balance, "low_balance", .flags = F_OPTIONAL),
};
#undef type_of_table

#define type_of_table sc_wallet_update
static const struct field wallet_update_fields[] = {
	F(FT_INT, balance, "balance", .set = SC_WALLET_SET_BALANCE),
	F(FT_INT, budget, "budget", .set = SC_WALLET_SET_BUDGET),
	F(FT_INT, max_per_txn, "max_per_txn", .set = SC_WALLET_SET_MAX_PER_TXN),
	F(FT_INT, daily_spend_limit, "daily_spend_limit", .set = SC_WALLET_SET_DAILY_SPEND_LIMIT),
	F(FT_INT, debt, "debt", .set = SC_WALLET_SET_DEBT),
	F(FT_ENUM, period, "period", .set = SC_WALLET_SET_PERIOD, .names = &sc_period_names),
	F(FT_INT, low_balance, "low_balance", .set = SC_WALLET_SET_LOW_BALANCE),
};
#undef type_of_table

#define type_of_table sc_rule
static const struct field rule_fields[] = {
	F(FT_UINT, id, "id"),
	F(FT_STR, name, "name", STR(name), .set = SC_RULE_SET_NAME),
	F(FT_STR, match, "match", STR(match), .set = SC_RULE_SET_MATCH),
	F(FT_INT, max_cost_per_txn, "max_cost_per_txn", .set = SC_RULE_SET_MAX_COST_PER_TXN),
	F(FT_INT, daily_spend_limit, "daily_spend_limit", .set = SC_RULE_SET_DAILY_SPEND_LIMIT),
	F(FT_INT, hourly_rate_limit, "hourly_rate_limit", .set = SC_RULE_SET_HOURLY_RATE_LIMIT),
	F(FT_INT, daily_spent, "daily_spent"),
	F(FT_INT, hourly_count, "hourly_count"),
};
#undef type_of_table

#define type_of_table sc_org
static const struct field org_fields[] = {
	F(FT_UINT, id, "id"),
	F(FT_STR, name, "name", STR(name)),
	F(FT_UINT, agents, "agents"),
	F(FT_INT, created_at, "created_at"),
	F(FT_STR, timezone, "timezone", STR(timezone)),
	F(FT_STR, timezone_rule, "timezone_rule", STR(timezone_rule)),
	F(FT_WALLET, wallet, "wallet", .aux = 0),
};
#undef type_of_table

#define type_of_table sc_agent
static const struct field agent_fields[] = {
	F(FT_UINT, id, "id"),
	F(FT_UINT, org_id, "org_id"),
	F(FT_STR, org, "org", STR(org)),
	F(FT_STR, name, "name", STR(name)),
	F(FT_ENUM, priority, "priority", .parse = parse_priority),
	F(FT_ENUM, status, "status", .parse = parse_status),
	F(FT_INT, created_at, "created_at"),
	F(FT_WALLET, wallet, "wallet", .aux = 1),
	F(FT_RULES, rules, "rules", .aux = offsetof(sc_agent, n_rules)),
	/* agents.create's alone, and only from a daemon with roles */
	F(FT_STR, token, "token", STR(token), .flags = F_OPTIONAL),
};
#undef type_of_table

#define type_of_table sc_transaction
static const struct field transaction_fields[] = {
	F(FT_UINT, id, "id"),
	/* nil for an org wallet's transaction: txn_check says where that may be */
	F(FT_UINT, agent_id, "agent_id", .flags = F_OPTIONAL),
	F(FT_UINT, org_id, "org_id"),
	F(FT_UINT, rule_id, "rule_id", .flags = F_OPTIONAL),
	F(FT_STR, action, "action", STR(action)),
	F(FT_STR, type, "type", STR(type)),
	F(FT_ENUM, status, "status", .parse = parse_txn_status),
	F(FT_ENUM, outcome, "outcome", .parse = parse_outcome, .flags = F_OPTIONAL | F_PRESENT,
	  .present = offsetof(sc_transaction, has_outcome)),
	F(FT_INT, estimated_cost, "estimated_cost"),
	F(FT_INT, charged, "charged"),
	F(FT_INT, balance_after, "balance_after"),
	F(FT_STR, block_reason, "block_reason", STR(block_reason), .flags = F_OPTIONAL),
	F(FT_STR, risk_level, "risk_level", STR(risk_level)),
	F(FT_ENUM, risk, "risk_level", .parse = parse_risk),
	F(FT_STR, idempotency_key, "idempotency_key", STR(idempotency_key), .flags = F_OPTIONAL),
	F(FT_STR, task_id, "task_id", STR(task_id), .flags = F_OPTIONAL),
	F(FT_INT, created_at, "created_at"),
	F(FT_INT, settled_at, "settled_at", .flags = F_OPTIONAL),
	F(FT_STR, model, "model", STR(model), .flags = F_OPTIONAL),
	F(FT_UINT32, rate_version, "rate_version", .flags = F_OPTIONAL),
	F(FT_UINT, input_tokens, "input_tokens", .flags = F_OPTIONAL),
	F(FT_UINT, output_tokens, "output_tokens", .flags = F_OPTIONAL),
	F(FT_UINT, cached_input_tokens, "cached_input_tokens", .flags = F_OPTIONAL),
};
#undef type_of_table

#define type_of_table sc_task_usage
static const struct field task_usage_fields[] = {
	F(FT_STR, task_id, "task_id", STR(task_id)),
	F(FT_UINT, org_id, "org_id"),
	F(FT_INT, usage, "usage"),
	F(FT_INT, held, "held"),
	F(FT_INT, max_usage, "max_usage"),
	F(FT_UINT, checks, "checks"),
	F(FT_UINT32, open_holds, "open_holds"),
	F(FT_INT, created_at, "created_at"),
	F(FT_INT, last_at, "last_at"),
};
#undef type_of_table

#define type_of_table sc_txn_summary
static const struct field txn_summary_fields[] = {
	F(FT_UINT, total, "total"),
	F(FT_UINT, pending, "pending"),
	F(FT_UINT, settled, "settled"),
	F(FT_UINT, blocked, "blocked"),
	F(FT_UINT, expired, "expired"),
	F(FT_INT, charged, "charged"),
	F(FT_INT, estimated, "estimated"),
};
#undef type_of_table

#define type_of_table sc_top_agent
static const struct field top_agent_fields[] = {
	F(FT_UINT, agent_id, "agent_id"),
	F(FT_STR, name, "name", STR(name)),
	F(FT_INT, spend, "spend"),
	F(FT_UINT, transactions, "transactions"),
};
#undef type_of_table

#define type_of_table sc_fleet
static const struct field fleet_fields[] = {
	F(FT_UINT, total_agents, "total_agents"),
	F(FT_UINT, active_agents, "active_agents"),
	F(FT_UINT, throttled_agents, "throttled_agents"),
	F(FT_UINT, frozen_agents, "frozen_agents"),
	F(FT_INT, total_spend, "total_spend"),
	F(FT_UINT, risk_events_blocked, "risk_events_blocked"),
	F(FT_UINT, anomalies, "anomalies"),
	F(FT_INT32, avg_credit_score, "avg_credit_score"),
};
#undef type_of_table

#define type_of_table sc_decision
static const struct field decision_fields[] = {
	F(FT_ENUM, allowed, "status", .parse = parse_allowed),
	F(FT_UINT, transaction_id, "transaction_id", .flags = F_OPTIONAL),
	F(FT_STR, block_reason, "block_reason", STR(block_reason), .flags = F_OPTIONAL),
	F(FT_STR, risk_level, "risk_level", STR(risk_level)),
	F(FT_INT, available, "available"),
	F(FT_WARNINGS, warnings, "warnings", .aux = offsetof(sc_decision, n_warnings)),
	F(FT_BOOL, replayed, "replayed"),
};
#undef type_of_table

#define type_of_table sc_settlement
static const struct field settlement_fields[] = {
	F(FT_UINT, transaction_id, "transaction_id"),
	F(FT_ENUM, outcome, "outcome", .parse = parse_outcome),
	F(FT_INT, charged, "charged"),
	F(FT_INT, balance, "balance"),
	F(FT_INT, debt, "debt"),
	F(FT_BOOL, replayed, "replayed"),
	F(FT_STR, model, "model", STR(model), .flags = F_OPTIONAL),
	F(FT_UINT32, rate_version, "rate_version", .flags = F_OPTIONAL),
};
#undef type_of_table

#define type_of_table sc_price
static const struct field price_fields[] = {
	F(FT_STR, model, "model", STR(model)),
	F(FT_UINT32, version, "version"),
	F(FT_INT, input, "input"),
	F(FT_INT, output, "output"),
	F(FT_INT, cached_input, "cached_input"),
	F(FT_INT, effective_from, "effective_from"),
	F(FT_INT, created_at, "created_at"),
};
#undef type_of_table

/* score's `factors`, decoded into the sc_score that holds the map. */
#define type_of_table sc_score
static const struct field score_factor_fields[] = {
	F(FT_UINT, checks, "checks"),
	F(FT_UINT, blocked, "blocked"),
	F(FT_UINT, settled, "settled"),
	F(FT_UINT, failures, "failures"),
	F(FT_UINT, overruns, "overruns"),
	F(FT_UINT, expired, "expired"),
	F(FT_UINT, anomalies, "anomalies"),
	F(FT_INT, average_cost, "average_cost"),
	F(FT_INT, age_s, "age_s"),
};

static const struct field score_fields[] = {
	F(FT_UINT, agent_id, "agent_id"),
	F(FT_INT32, score, "score"),
	F(FT_ENUM, status, "status", .parse = parse_status),
	{ .key = "factors", .type = FT_INLINE, .inner = score_factor_fields,
	  .aux = COUNT(score_factor_fields) },
};
#undef type_of_table

#define type_of_table sc_event
static const struct field event_fields[] = {
	F(FT_UINT, id, "id"),
	F(FT_UINT, agent_id, "agent_id"),
	F(FT_ENUM, type, "type", .parse = parse_event_type),
	F(FT_INT, time, "time"),
	F(FT_INT32, score, "score"),
	F(FT_ENUM, from, "from", .parse = parse_status, .flags = F_OPTIONAL | F_PRESENT,
	  .present = offsetof(sc_event, has_status)),
	F(FT_ENUM, to, "to", .parse = parse_status, .flags = F_OPTIONAL | F_PRESENT,
	  .present = offsetof(sc_event, has_status)),
	F(FT_STR, reason, "reason", STR(reason)),
};
#undef type_of_table

#define type_of_table sc_alert
static const struct field alert_fields[] = {
	F(FT_UINT, id, "id"),
	/* nil for an org wallet's alert */
	F(FT_UINT, agent_id, "agent_id", .flags = F_OPTIONAL),
	F(FT_UINT, org_id, "org_id"),
	F(FT_ENUM, kind, "kind", .parse = parse_alert_kind),
	F(FT_ENUM, severity, "severity", .parse = parse_severity),
	F(FT_INT, value, "value"),
	F(FT_INT, threshold, "threshold"),
	F(FT_UINT, transaction_id, "transaction_id", .flags = F_OPTIONAL),
	F(FT_INT, time, "time"),
	F(FT_STR, message, "message", STR(message)),
};
#undef type_of_table

/* alerts.subscribe and alerts.unsubscribe. */
#define type_of_table struct subscription
static const struct field subscription_fields[] = {
	F(FT_BOOL, subscribed, "subscribed"),
	F(FT_UINT, last_alert_id, "last_alert_id", .flags = F_OPTIONAL),
};
#undef type_of_table

/*
 * wallets.transfer. An absent `limited` is 1 on either side: an agent
 * wallet is always limited, and an org wallet that money moved into, or
 * that held money to move out, is limited too (only a funded org wallet has
 * a balance).
 */
#define type_of_table struct transfer
static const struct field transfer_fields[] = {
	F(FT_INT, amount, "amount"),
	F(FT_WALLET, from, "from", .aux = 1),
	F(FT_WALLET, to, "to", .aux = 1),
	F(FT_ID_PAIR, transactions, "transactions"),
};
#undef type_of_table

/* wallets.adjust; an adjusted org wallet is limited, as above. */
#define type_of_table struct adjustment
static const struct field adjustment_fields[] = {
	F(FT_WALLET, wallet, "wallet", .aux = 1),
	F(FT_UINT, transaction_id, "transaction_id"),
};
#undef type_of_table

/* wallets.carve and wallets.release. */
#define type_of_table struct carve
static const struct field carve_fields[] = {
	F(FT_WALLET, agent, "agent", .aux = 1),
	F(FT_WALLET, org, "org", .aux = 1),
	F(FT_UINT, transaction_id, "transaction_id", .flags = F_OPTIONAL),
};
#undef type_of_table

#define type_of_table sc_spend
static const struct field spend_fields[] = {
	F(FT_INT, total, "total"),
	F(FT_INT, daily, "daily"),
	F(FT_INT, weekly, "weekly"),
	F(FT_INT, monthly, "monthly"),
	F(FT_INT, held, "held"),
	F(FT_INT, budget, "budget"),
	F(FT_ENUM, period, "period", .parse = parse_period),
	F(FT_STR, timezone, "timezone", STR(timezone)),
	F(FT_INT, daily_reset_at, "daily_reset_at"),
	F(FT_INT, weekly_reset_at, "weekly_reset_at"),
	F(FT_INT, monthly_reset_at, "monthly_reset_at"),
	F(FT_INT, period_reset_at, "period_reset_at", .flags = F_OPTIONAL),
};
#undef type_of_table

/* role, agent_id and token_id are absent from a daemon without roles. */
#define type_of_table struct hello
static const struct field hello_fields[] = {
	F(FT_STR, server, "server", STR(server)),
	F(FT_STR, version, "version", STR(version)),
	F(FT_INT, protocol, "protocol"),
	F(FT_STR, role, "role", STR(role), .flags = F_OPTIONAL),
	F(FT_UINT, agent_id, "agent_id", .flags = F_OPTIONAL),
	F(FT_UINT, token_id, "token_id", .flags = F_OPTIONAL),
};
#undef type_of_table

/* tokens.create and tokens.list; only tokens.create shows the token. */
#define type_of_table sc_access_token
static const struct field access_token_fields[] = {
	F(FT_UINT, token_id, "token_id"),
	F(FT_STR, role, "role", STR(role)),
	F(FT_STR, name, "name", STR(name), .flags = F_OPTIONAL),
	F(FT_INT, created_at, "created_at"),
	F(FT_STR, token, "token", STR(token), .flags = F_OPTIONAL),
};
#undef type_of_table

#define type_of_table struct rotation
static const struct field rotation_fields[] = {
	F(FT_UINT, agent_id, "agent_id"),
	F(FT_STR, token, "token", STR(token)),
};
#undef type_of_table

/* agents.delete and rules.remove. */
static const struct field deleted_fields[] = {
	{ .key = "deleted", .type = FT_BOOL, .off = offsetof(struct done, yes) },
};
static const struct field removed_fields[] = {
	{ .key = "removed", .type = FT_BOOL, .off = offsetof(struct done, yes) },
};
static const struct field revoked_fields[] = {
	{ .key = "revoked", .type = FT_BOOL, .off = offsetof(struct done, yes) },
};

#undef STR
#undef F

/* ----- rules that span fields ----- */

/* A connection bound to an agent says which; no other role is bound to one. */
static const char *hello_check(const msgpack_object *obj, void *base)
{
	const struct hello *h = base;

	(void)obj;
	if ((strcmp(h->role, "agent") == 0) != (h->agent_id != 0))
		return h->agent_id != 0 ? "an 'agent_id' for a role other than agent"
		                        : "the role agent without an 'agent_id'";
	return NULL;
}

/*
 * Only a transfer or an adjustment may lack an agent (an org wallet's), and
 * each carries its reason as metadata {reason}; a check's metadata is the
 * caller's own and is not read.
 */
static const char *txn_check(const msgpack_object *obj, void *base)
{
	sc_transaction *t = base;
	const msgpack_object *meta, *reason;

	if (strcmp(t->type, "transfer") != 0 && strcmp(t->type, "adjustment") != 0)
		return t->agent_id != 0 ? NULL : "no 'agent_id' on a check's transaction";
	if ((meta = sc_client_map_get(obj, "metadata")) == NULL || meta->type != MSGPACK_OBJECT_MAP ||
	    (reason = sc_client_map_get(meta, "reason")) == NULL ||
	    sc_client_copy_str(reason, t->reason, sizeof(t->reason)) != 0 || t->reason[0] == '\0')
		return "a transfer or adjustment without a 'metadata' of {reason: a short string}";
	return NULL;
}

/* A value other than nil under key in the map obj. */
static int given(const msgpack_object *obj, const char *key)
{
	const msgpack_object *v = sc_client_map_get(obj, key);

	return v != NULL && v->type != MSGPACK_OBJECT_NIL;
}

/* `from` and `to`: both on a status change, neither on any other event. */
static const char *event_check(const msgpack_object *obj, void *base)
{
	int status_change = ((const sc_event *)base)->type == SC_EVENT_STATUS_CHANGE;

	if (given(obj, "from") != status_change || given(obj, "to") != status_change)
		return status_change ? "a status change without 'from' and 'to'"
		                     : "'from' or 'to' on an event that is not a status change";
	return NULL;
}

#define TABLE(a, what) { (a), COUNT(a), (what), NULL }

const struct table sc_client_wallet_table = TABLE(wallet_fields, "wallet"),
	sc_client_wallet_update_table = TABLE(wallet_update_fields, "wallet"),
	sc_client_rule_table = TABLE(rule_fields, "rule"),
	sc_client_org_table = TABLE(org_fields, "org"),
	sc_client_agent_table = TABLE(agent_fields, "agent"),
	sc_client_transaction_table = { transaction_fields, COUNT(transaction_fields), "transaction",
	                             txn_check },
	sc_client_task_usage_table = TABLE(task_usage_fields, "task usage"),
	sc_client_txn_summary_table = TABLE(txn_summary_fields, "summary"),
	sc_client_top_agent_table = TABLE(top_agent_fields, "top agent"),
	sc_client_fleet_table = TABLE(fleet_fields, "fleet"),
	sc_client_decision_table = TABLE(decision_fields, "decision"),
	sc_client_settlement_table = TABLE(settlement_fields, "settlement"),
	sc_client_price_table = TABLE(price_fields, "price"),
	sc_client_score_table = TABLE(score_fields, "score"),
	sc_client_event_table = { event_fields, COUNT(event_fields), "event", event_check },
	sc_client_alert_table = TABLE(alert_fields, "alert"),
	sc_client_spend_table = TABLE(spend_fields, "spend"),
	sc_client_subscription_table = TABLE(subscription_fields, "subscription"),
	sc_client_transfer_table = TABLE(transfer_fields, "transfer"),
	sc_client_adjustment_table = TABLE(adjustment_fields, "adjustment"),
	sc_client_carve_table = TABLE(carve_fields, "carve"),
	sc_client_hello_table = { hello_fields, COUNT(hello_fields), "hello", hello_check },
	sc_client_deleted_table = TABLE(deleted_fields, "deleted"),
	sc_client_removed_table = TABLE(removed_fields, "removed"),
	sc_client_access_token_table = TABLE(access_token_fields, "token"),
	sc_client_rotation_table = TABLE(rotation_fields, "token rotation"),
	sc_client_revoked_table = TABLE(revoked_fields, "revoked");

#undef TABLE

/* ----- decoding ----- */

/*
 * The value of key in map, looking from entry *next on and wrapping
 * around; *next becomes the entry after the one found. The daemon packs a
 * result's fields in the order of this library's tables, so decoding a
 * table finds each field at the first entry it looks at.
 */
static const msgpack_object *map_get_next(const msgpack_object *map, const char *key,
                                          uint32_t *next)
{
	size_t len = strlen(key);
	uint32_t n = map->via.map.size;

	for (uint32_t step = 0, i = *next < n ? *next : 0; step < n; step++, i = i + 1 < n ? i + 1 : 0) {
		const msgpack_object *k = &map->via.map.ptr[i].key;

		if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == len &&
		    memcmp(k->via.str.ptr, key, len) == 0) {
			*next = i + 1;
			return &map->via.map.ptr[i].val;
		}
	}
	return NULL;
}

const msgpack_object *sc_client_map_get(const msgpack_object *map, const char *key)
{
	uint32_t next = 0;

	return map_get_next(map, key, &next);
}

/* Copies a msgpack str into dst[cap] with its NUL; SC_EPROTO if it does not fit. */
int sc_client_copy_str(const msgpack_object *v, char *dst, size_t cap)
{
	if (v->type != MSGPACK_OBJECT_STR || v->via.str.size >= cap ||
	    memchr(v->via.str.ptr, '\0', v->via.str.size) != NULL)
		return SC_EPROTO;
	memcpy(dst, v->via.str.ptr, v->via.str.size);
	dst[v->via.str.size] = '\0';
	return 0;
}

int sc_client_get_int(const msgpack_object *v, int64_t *out)
{
	if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 <= INT64_MAX)
		*out = (int64_t)v->via.u64;
	else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		*out = v->via.i64;
	else
		return SC_EPROTO;
	return 0;
}

static int decode_fields(sc_client *c, const msgpack_object *obj, struct table t, void *base);

static int bad_field(sc_client *c, const char *what, const char *key, const char *expected)
{
	return sc_client_fail(c, SC_EPROTO, "malformed %s from the daemon: '%s' is not %s", what,
	                   key, expected);
}

static int decode_value(sc_client *c, const msgpack_object *v, const struct field *f,
                        void *base, const char *what)
{
	char *dst = (char *)base + f->off;
	char name[32];
	int64_t i;
	uint32_t k;
	int e;

	switch (f->type) {
	case FT_UINT:
		if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
			return bad_field(c, what, f->key, "a non-negative integer");
		memcpy(dst, &v->via.u64, sizeof(uint64_t));
		return 0;
	case FT_UINT32:
		if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER || v->via.u64 > UINT32_MAX)
			return bad_field(c, what, f->key, "a 32-bit non-negative integer");
		k = (uint32_t)v->via.u64;
		memcpy(dst, &k, sizeof(k));
		return 0;
	case FT_INT:
		if (sc_client_get_int(v, &i) != 0)
			return bad_field(c, what, f->key, "a 64-bit integer");
		memcpy(dst, &i, sizeof(i));
		return 0;
	case FT_INT32:
		if (sc_client_get_int(v, &i) != 0 || i < INT_MIN || i > INT_MAX)
			return bad_field(c, what, f->key, "a 32-bit integer");
		e = (int)i;
		memcpy(dst, &e, sizeof(e));
		return 0;
	case FT_BOOL:
		if (v->type != MSGPACK_OBJECT_BOOLEAN)
			return bad_field(c, what, f->key, "a boolean");
		e = v->via.boolean ? 1 : 0;
		memcpy(dst, &e, sizeof(e));
		return 0;
	case FT_STR:
		if (sc_client_copy_str(v, dst, f->aux) != 0)
			return sc_client_fail(c, SC_EPROTO,
			                   "malformed %s from the daemon: '%s' is not a string "
			                   "of at most %zu bytes",
			                   what, f->key, f->aux - 1);
		return 0;
	case FT_ENUM:
		if (sc_client_copy_str(v, name, sizeof(name)) != 0 || f->parse(name, &e) != 0)
			return bad_field(c, what, f->key, "a known name");
		memcpy(dst, &e, sizeof(e));
		if (f->flags & F_PRESENT) {
			e = 1;
			memcpy((char *)base + f->present, &e, sizeof(e));
		}
		return 0;
	case FT_WALLET:
		((sc_wallet *)dst)->limited = (int)f->aux;
		return decode_fields(c, v, sc_client_wallet_table, dst);
	case FT_RULES: {
		sc_rule *rules = (sc_rule *)dst;
		size_t n;

		if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size > SC_RULES_MAX)
			return bad_field(c, what, f->key, "an array of at most SC_RULES_MAX rules");
		for (k = 0; k < v->via.array.size; k++) {
			memset(&rules[k], 0, sizeof(rules[k]));
			e = decode_fields(c, &v->via.array.ptr[k], sc_client_rule_table,
			                  &rules[k]);
			if (e != 0)
				return e;
		}
		n = v->via.array.size;
		memcpy((char *)base + f->aux, &n, sizeof(n));
		return 0;
	}
	case FT_WARNINGS: {
		char(*warnings)[SC_REASON_MAX + 1] = (char(*)[SC_REASON_MAX + 1])dst;
		unsigned n;

		if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size > SC_WARNINGS_MAX)
			return bad_field(c, what, f->key, "an array of at most SC_WARNINGS_MAX strings");
		for (k = 0; k < v->via.array.size; k++)
			if (sc_client_copy_str(&v->via.array.ptr[k], warnings[k],
			                    sizeof(warnings[k])) != 0)
				return bad_field(c, what, f->key, "an array of short strings");
		n = v->via.array.size;
		memcpy((char *)base + f->aux, &n, sizeof(n));
		return 0;
	}
	case FT_ID_PAIR:
		if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size != 2 ||
		    v->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
		    v->via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
			return bad_field(c, what, f->key, "an array of two ids");
		memcpy(dst, &v->via.array.ptr[0].via.u64, sizeof(uint64_t));
		memcpy(dst + sizeof(uint64_t), &v->via.array.ptr[1].via.u64, sizeof(uint64_t));
		return 0;
	case FT_INLINE:
		return decode_fields(c, v, (struct table){ f->inner, f->aux, f->key, NULL }, base);
	}
	return bad_field(c, what, f->key, "decodable");
}

/*
 * Fills base from the map obj through table t. Members of absent optional
 * fields keep the value they had: callers zero (or default) the struct first.
 */
static int decode_fields(sc_client *c, const msgpack_object *obj, struct table t, void *base)
{
	const char *why;
	uint32_t next = 0;
	size_t i;
	int rc;

	if (obj->type != MSGPACK_OBJECT_MAP)
		return sc_client_fail(c, SC_EPROTO, "malformed %s from the daemon: not a map", t.what);
	for (i = 0; i < t.n; i++) {
		const struct field *f = &t.fields[i];
		const msgpack_object *v = map_get_next(obj, f->key, &next);

		if (v == NULL || v->type == MSGPACK_OBJECT_NIL) {
			if (f->flags & F_OPTIONAL)
				continue;
			return sc_client_fail(c, SC_EPROTO, "malformed %s from the daemon: no '%s'",
			                   t.what, f->key);
		}
		if ((rc = decode_value(c, v, f, base, t.what)) != 0)
			return rc;
	}
	if (t.check != NULL && (why = t.check(obj, base)) != NULL)
		return sc_client_fail(c, SC_EPROTO, "malformed %s from the daemon: %s", t.what, why);
	return 0;
}

/* Decodes one object into out (size bytes, zeroed first). */
int sc_client_decode_one(sc_client *c, const msgpack_object *obj, struct table t, void *out,
                      size_t size)
{
	memset(out, 0, size);
	return decode_fields(c, obj, t, out);
}

/* Decodes an array of objects into one malloc block of elements of `size` bytes. */
int sc_client_decode_list(sc_client *c, const msgpack_object *obj, struct table t, size_t size,
                       void **out, size_t *n)
{
	uint32_t i;
	char *list;
	int rc;

	*out = NULL;
	*n = 0;
	if (obj->type != MSGPACK_OBJECT_ARRAY)
		return sc_client_fail(c, SC_EPROTO,
		                   "malformed list of %s from the daemon: not an array", t.what);
	list = calloc(obj->via.array.size ? obj->via.array.size : 1, size);
	if (list == NULL)
		return sc_client_fail(c, -ENOMEM, "%s", sc_strerror(-ENOMEM));
	for (i = 0; i < obj->via.array.size; i++) {
		rc = decode_fields(c, &obj->via.array.ptr[i], t, list + (size_t)i * size);
		if (rc != 0) {
			free(list);
			return rc;
		}
	}
	*out = list;
	*n = obj->via.array.size;
	return 0;
}
