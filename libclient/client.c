/*
 * client.c: libsidecard's blocking client, one msgpack-rpc connection per
 * sc_client (protocol/PROTOCOL.md is the contract this file codes against).
 *
 * Every call is one round trip: the request [0, msgid, method, [{args}]] is
 * packed into the connection's sbuffer, written whole (partial writes and
 * EINTR retried, MSG_NOSIGNAL so a vanished daemon never raises SIGPIPE),
 * then messages are read with a streaming msgpack_unpacker until the whole
 * response is there. msgids increase by one per request; since the daemon
 * answers in request order, the response must carry exactly the msgid of
 * the oldest request waiting, and anything else is SC_EPROTO. Only
 * sc_check_batch() has more than one request outstanding (pipelining; see
 * the comment above it). A response may not exceed RESPONSE_MAX bytes: the
 * unpacker buffers at most that much.
 *
 * Failures come in three kinds:
 *   - the daemon answers with an error map {code, name, message}: the call
 *     returns the SC_E* code of the name (or the integer code for a name
 *     this library does not know) and sc_last_error() gives the message;
 *     the connection stays usable;
 *   - the transport fails (write or read error, EOF, malformed or oversized
 *     msgpack, a wrong msgid): the call returns -errno, SC_ECLOSED or
 *     SC_EPROTO, the socket is closed and every later call on this client
 *     returns SC_ECLOSED;
 *   - the result does not have the documented shape: SC_EPROTO with a
 *     message naming the object and field; the connection stays usable.
 *
 * DESIGN. Requests and results are described by field tables, not written
 * out per method. A `struct field` names one member of a public struct
 * (sc_wallet, sc_rule, sc_agent, ...): its wire key, its wire type and its
 * offset. decode_fields() fills a struct from a result map through its
 * table, strictly (a missing or ill-typed field, or a string longer than
 * its array, is SC_EPROTO) while ignoring keys it does not know, so a newer
 * daemon may add fields. The same tables pack the optional fields of
 * updates: an entry with a non-zero `set` bit is sent when the caller set
 * that bit (SC_WALLET_SET_*, SC_RULE_SET_*). A nested map whose members
 * live in the same struct (score's `factors`) is an FT_INLINE entry naming
 * its own table; a rule that spans fields (an event's `from` and `to` come
 * together, on status changes only; a transaction without an agent is a
 * transfer or an adjustment, whose metadata holds its reason) is the
 * table's `check`, which may also fill the members such a rule governs. A
 * method is then a few lines: build a `struct request` of named arguments,
 * call rpc(), decode the result with a table.
 *
 * NOTIFICATIONS. The daemon pushes [2, "alert", [alert]] to a connection
 * that subscribed (sc_alerts_subscribe); such a notification may arrive
 * while a call waits for its response. Every read goes through one place
 * (take_notification): an alert is decoded into a small ring on the client
 * (ALERT_QUEUE, the oldest dropped and counted when full) for
 * sc_alert_next(), and "error" ends the connection as before.
 *
 * Threads: an sc_client belongs to one thread at a time (sidecard.h); there
 * is no global state, so distinct clients may be used concurrently.
 * Ownership: the client owns its socket, buffers and the last decoded
 * message, which stays valid until the next rpc(); lists returned to the
 * caller are single malloc blocks released by the sc_*_free functions.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>

#include "common.h"
#include "proto_head.h"
#include "sidecard.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Largest response accepted; a bigger one is SC_EPROTO. */
#define RESPONSE_MAX (1024 * 1024)
/* Bytes asked of the unpacker before each read. */
#define READ_CHUNK (64 * 1024)
/* Most named arguments any method takes (transactions.list: 8). */
#define ARGS_MAX 8
/* Pushed alerts kept until sc_alert_next() takes them. */
#define ALERT_QUEUE 64

struct sc_client {
	int fd; /* -1 once the connection is dead */
	uint32_t msgid;
	msgpack_sbuffer sbuf;
	msgpack_unpacker unp;
	/*
	 * The last message read, valid until the next read: msg.data lives in
	 * the unpacker's zone (msg.zone stays NULL), which is cleared for the
	 * next message instead of a new zone being allocated for every one.
	 */
	msgpack_unpacked msg;
	int msg_held; /* msg.data is a whole message whose objects are still in the zone */
	char version[32];
	char error[512];
	sc_alert alerts[ALERT_QUEUE]; /* a ring of pushed alerts: head, then len of them */
	unsigned alerts_head, alerts_len;
	uint64_t alerts_dropped;
};

/* ----- errors ----- */

__attribute__((format(printf, 3, 4))) static int fail(sc_client *c, int code, const char *fmt,
                                                      ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->error, sizeof(c->error), fmt, ap);
	va_end(ap);
	return code;
}

/* A transport failure: the connection cannot be trusted any more. */
static int broken(sc_client *c, int code, const char *what)
{
	if (c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
	}
	return fail(c, code, "%s: %s", what, sc_strerror(code));
}

/* ----- field tables ----- */

enum field_type {
	FT_UINT,     /* uint64_t, a non-negative integer */
	FT_UINT32,   /* uint32_t, a non-negative integer that fits (open holds) */
	FT_INT,      /* int64_t (money, times, counters) */
	FT_INT32,    /* int (scores) */
	FT_BOOL,     /* int, 0 or 1 */
	FT_STR,      /* char[aux] */
	FT_ENUM,     /* an enum, parsed from its name by `parse` */
	FT_WALLET,   /* sc_wallet; aux: the value of `limited` when absent */
	FT_RULES,    /* sc_rule[SC_RULES_MAX]; aux: offset of the size_t count */
	FT_WARNINGS, /* char[SC_WARNINGS_MAX][SC_REASON_MAX + 1]; aux: offset of the unsigned count */
	FT_ID_PAIR,  /* uint64_t[2], an array of exactly two ids (a transfer's transactions) */
	FT_INLINE,   /* a nested map of members of the same struct; `inner`, aux entries */
};

enum {
	F_OPTIONAL = 1 << 0, /* nil or absent leaves the member untouched */
	F_PRESENT = 1 << 1,  /* FT_ENUM: int at offset `present` set to 1 when given */
};

struct field {
	const char *key;
	enum field_type type;
	size_t off;
	size_t aux;
	unsigned flags;
	unsigned set; /* the SC_*_SET_* bit that sends this field in an update */
	int (*parse)(const char *name, int *out);
	size_t present;
	const struct field *inner;
	const struct sc_names *names; /* FT_ENUM in an update: the words to send */
};

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

#define RULE_SET_ALL                                                                         \
	(SC_RULE_SET_NAME | SC_RULE_SET_MATCH | SC_RULE_SET_MAX_COST_PER_TXN |               \
	 SC_RULE_SET_DAILY_SPEND_LIMIT | SC_RULE_SET_HOURLY_RATE_LIMIT)

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

/* The result of alerts.subscribe and alerts.unsubscribe. */
struct subscription {
	int subscribed;
	uint64_t last_alert_id;
};

#define type_of_table struct subscription
static const struct field subscription_fields[] = {
	F(FT_BOOL, subscribed, "subscribed"),
	F(FT_UINT, last_alert_id, "last_alert_id", .flags = F_OPTIONAL),
};
#undef type_of_table

/* The result of wallets.transfer. */
struct transfer {
	sc_micros amount;
	sc_wallet from, to;
	uint64_t transactions[2]; /* the debit's id, then the credit's */
};

/*
 * An absent `limited` is 1 on either side: an agent wallet is always
 * limited, and an org wallet that money moved into, or that held money to
 * move out, is limited too (only a funded org wallet has a balance).
 */
#define type_of_table struct transfer
static const struct field transfer_fields[] = {
	F(FT_INT, amount, "amount"),
	F(FT_WALLET, from, "from", .aux = 1),
	F(FT_WALLET, to, "to", .aux = 1),
	F(FT_ID_PAIR, transactions, "transactions"),
};
#undef type_of_table

/* The result of wallets.adjust; an adjusted org wallet is limited, as above. */
struct adjustment {
	sc_wallet wallet;
	uint64_t transaction_id;
};

#define type_of_table struct adjustment
static const struct field adjustment_fields[] = {
	F(FT_WALLET, wallet, "wallet", .aux = 1),
	F(FT_UINT, transaction_id, "transaction_id"),
};
#undef type_of_table

/* The result of wallets.carve and wallets.release: an agent's wallet and its org's. */
struct carve {
	sc_wallet agent, org;
	uint64_t transaction_id;
};

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

/* hello's result, of which the client keeps the version. */
struct hello {
	char server[32];
	char version[32];
	int64_t protocol;
};

#define type_of_table struct hello
static const struct field hello_fields[] = {
	F(FT_STR, server, "server", STR(server)),
	F(FT_STR, version, "version", STR(version)),
	F(FT_INT, protocol, "protocol"),
};
#undef type_of_table

/* The result of agents.delete ({deleted: true}) and rules.remove ({removed: true}). */
struct done {
	int yes;
};

static const struct field deleted_fields[] = {
	{ .key = "deleted", .type = FT_BOOL, .off = offsetof(struct done, yes) },
};
static const struct field removed_fields[] = {
	{ .key = "removed", .type = FT_BOOL, .off = offsetof(struct done, yes) },
};

#undef STR
#undef F

struct table {
	const struct field *fields;
	size_t n;
	const char *what; /* the object's name in messages */
	/*
	 * After the fields: NULL if the object is whole, else what is wrong with
	 * it. It may fill the members that depend on several fields.
	 */
	const char *(*check)(const msgpack_object *obj, void *base);
};

#define TABLE(a, what) ((struct table){ (a), COUNT(a), (what), NULL })
#define CHECKED_TABLE(a, what, check) ((struct table){ (a), COUNT(a), (what), (check) })

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

static const msgpack_object *map_get(const msgpack_object *map, const char *key)
{
	uint32_t next = 0;

	return map_get_next(map, key, &next);
}

/* Copies a msgpack str into dst[cap] with its NUL; SC_EPROTO if it does not fit. */
static int copy_str(const msgpack_object *v, char *dst, size_t cap)
{
	if (v->type != MSGPACK_OBJECT_STR || v->via.str.size >= cap ||
	    memchr(v->via.str.ptr, '\0', v->via.str.size) != NULL)
		return SC_EPROTO;
	memcpy(dst, v->via.str.ptr, v->via.str.size);
	dst[v->via.str.size] = '\0';
	return 0;
}

static int get_int(const msgpack_object *v, int64_t *out)
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
	return fail(c, SC_EPROTO, "malformed %s from the daemon: '%s' is not %s", what, key,
	            expected);
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
		if (get_int(v, &i) != 0)
			return bad_field(c, what, f->key, "a 64-bit integer");
		memcpy(dst, &i, sizeof(i));
		return 0;
	case FT_INT32:
		if (get_int(v, &i) != 0 || i < INT_MIN || i > INT_MAX)
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
		if (copy_str(v, dst, f->aux) != 0)
			return fail(c, SC_EPROTO,
			            "malformed %s from the daemon: '%s' is not a string of at most "
			            "%zu bytes",
			            what, f->key, f->aux - 1);
		return 0;
	case FT_ENUM:
		if (copy_str(v, name, sizeof(name)) != 0 || f->parse(name, &e) != 0)
			return bad_field(c, what, f->key, "a known name");
		memcpy(dst, &e, sizeof(e));
		if (f->flags & F_PRESENT) {
			e = 1;
			memcpy((char *)base + f->present, &e, sizeof(e));
		}
		return 0;
	case FT_WALLET:
		((sc_wallet *)dst)->limited = (int)f->aux;
		return decode_fields(c, v, TABLE(wallet_fields, "wallet"), dst);
	case FT_RULES: {
		sc_rule *rules = (sc_rule *)dst;
		size_t n;

		if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size > SC_RULES_MAX)
			return bad_field(c, what, f->key, "an array of at most SC_RULES_MAX rules");
		for (k = 0; k < v->via.array.size; k++) {
			memset(&rules[k], 0, sizeof(rules[k]));
			e = decode_fields(c, &v->via.array.ptr[k], TABLE(rule_fields, "rule"),
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
			if (copy_str(&v->via.array.ptr[k], warnings[k], sizeof(warnings[k])) != 0)
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
		return fail(c, SC_EPROTO, "malformed %s from the daemon: not a map", t.what);
	for (i = 0; i < t.n; i++) {
		const struct field *f = &t.fields[i];
		const msgpack_object *v = map_get_next(obj, f->key, &next);

		if (v == NULL || v->type == MSGPACK_OBJECT_NIL) {
			if (f->flags & F_OPTIONAL)
				continue;
			return fail(c, SC_EPROTO, "malformed %s from the daemon: no '%s'", t.what,
			            f->key);
		}
		if ((rc = decode_value(c, v, f, base, t.what)) != 0)
			return rc;
	}
	if (t.check != NULL && (why = t.check(obj, base)) != NULL)
		return fail(c, SC_EPROTO, "malformed %s from the daemon: %s", t.what, why);
	return 0;
}

/* Decodes one object into out (size bytes, zeroed first). */
static int decode_one(sc_client *c, const msgpack_object *obj, struct table t, void *out,
                      size_t size)
{
	memset(out, 0, size);
	return decode_fields(c, obj, t, out);
}

/* Decodes an array of objects into one malloc block of elements of `size` bytes. */
static int decode_list(sc_client *c, const msgpack_object *obj, struct table t, size_t size,
                       void **out, size_t *n)
{
	uint32_t i;
	char *list;
	int rc;

	*out = NULL;
	*n = 0;
	if (obj->type != MSGPACK_OBJECT_ARRAY)
		return fail(c, SC_EPROTO, "malformed list of %s from the daemon: not an array",
		            t.what);
	list = calloc(obj->via.array.size ? obj->via.array.size : 1, size);
	if (list == NULL)
		return fail(c, -ENOMEM, "%s", sc_strerror(-ENOMEM));
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

/* ----- requests ----- */

enum arg_kind {
	ARG_UINT,
	ARG_INT,
	ARG_STR,
	ARG_FIELDS,    /* the set fields of `base`, inline in the arguments map */
	ARG_MAP,       /* the set fields of `base`, as a nested map */
	ARG_MAP_ARRAY, /* `count` structs of `size` bytes at `base`, each a nested map */
	ARG_META,      /* `count` sc_meta string pairs at `base`, as a nested map */
};

struct arg {
	const char *key;
	enum arg_kind kind;
	uint64_t u;
	int64_t i;
	const char *s;
	struct table t;
	const void *base;
	size_t count, size;
	unsigned set;
};

struct request {
	const char *method;
	size_t n;
	struct arg args[ARGS_MAX];
};

static void add(struct request *r, struct arg a)
{
	if (r->n < ARGS_MAX)
		r->args[r->n++] = a;
}

#define ARG(...) add(r, (struct arg){ __VA_ARGS__ })

static void arg_uint(struct request *r, const char *key, uint64_t v)
{
	ARG(.key = key, .kind = ARG_UINT, .u = v);
}

static void arg_int(struct request *r, const char *key, int64_t v)
{
	ARG(.key = key, .kind = ARG_INT, .i = v);
}

static void arg_str(struct request *r, const char *key, const char *s)
{
	ARG(.key = key, .kind = ARG_STR, .s = s);
}

static void arg_fields(struct request *r, enum arg_kind kind, const char *key, struct table t,
                       const void *base, size_t count, size_t size, unsigned set)
{
	ARG(.key = key, .kind = kind, .t = t, .base = base, .count = count, .size = size,
	    .set = set);
}

#undef ARG

/*
 * Packs into an sbuffer, remembering whether any write failed (out of
 * memory, or a length msgpack cannot carry). Each put writes its bytes
 * straight into the buffer, in the smallest encoding as msgpack-c's packer
 * would (proto_head.h), instead of a packer callback per header and per
 * body.
 */
struct writer {
	msgpack_sbuffer *sb;
	int failed;
};

/* reserve() when the buffer must grow. */
static char *grow(struct writer *w, size_t n)
{
	msgpack_sbuffer *sb = w->sb;
	size_t cap = sb->alloc ? sb->alloc : MSGPACK_SBUFFER_INIT_SIZE;
	char *p;

	while (cap - sb->size < n) {
		if (cap > SIZE_MAX / 2) {
			w->failed = 1;
			return NULL;
		}
		cap *= 2;
	}
	if ((p = realloc(sb->data, cap)) == NULL) {
		w->failed = 1;
		return NULL;
	}
	sb->data = p;
	sb->alloc = cap;
	return sb->data + sb->size;
}

/* Room for n more bytes at w->sb->data + w->sb->size, or NULL. */
static inline char *reserve(struct writer *w, size_t n)
{
	if (w->failed)
		return NULL;
	if (w->sb->alloc - w->sb->size < n)
		return grow(w, n);
	return w->sb->data + w->sb->size;
}

/* The head h of value v (proto_head.h). */
static inline void put_head(struct writer *w, struct proto_head h, uint64_t v)
{
	char *p = reserve(w, 1 + (size_t)h.bytes);

	if (p != NULL)
		w->sb->size += (size_t)(proto_head_write(p, h, v) - p);
}

/* msgpack has no length past UINT32_MAX: such a request cannot be packed. */
static int fits_u32(struct writer *w, size_t n)
{
	if (n > UINT32_MAX)
		w->failed = 1;
	return !w->failed;
}

static void put_str(struct writer *w, const char *s)
{
	size_t len = strlen(s), size;
	struct proto_head h;
	char *p;

	if (!fits_u32(w, len))
		return;
	h = proto_head_str((uint32_t)len);
	size = 1 + (size_t)h.bytes + len;
	if ((p = reserve(w, size)) == NULL)
		return;
	memcpy(proto_head_write(p, h, len), s, len);
	w->sb->size += size;
}

static void put_uint(struct writer *w, uint64_t v)
{
	put_head(w, proto_head_uint(v), v);
}

static void put_int(struct writer *w, int64_t v)
{
	put_head(w, proto_head_int(v), (uint64_t)v);
}

static void put_map(struct writer *w, size_t n)
{
	if (fits_u32(w, n))
		put_head(w, proto_head_map((uint32_t)n), n);
}

static void put_array(struct writer *w, size_t n)
{
	if (fits_u32(w, n))
		put_head(w, proto_head_array((uint32_t)n), n);
}

static size_t count_set(struct table t, unsigned set)
{
	size_t i, n = 0;

	for (i = 0; i < t.n; i++)
		n += (t.fields[i].set & set) != 0;
	return n;
}

/* Packs the key/value pairs of the fields of base selected by set. */
static void put_fields(struct writer *w, struct table t, const void *base, unsigned set)
{
	size_t i;

	for (i = 0; i < t.n; i++) {
		const struct field *f = &t.fields[i];
		const char *p = (const char *)base + f->off;
		int64_t v;

		if (!(f->set & set))
			continue;
		put_str(w, f->key);
		if (f->type == FT_STR) {
			put_str(w, p);
		} else if (f->type == FT_ENUM) {
			int e;

			memcpy(&e, p, sizeof(e));
			put_str(w, sc_names_word(f->names, e));
		} else {
			memcpy(&v, p, sizeof(v));
			put_int(w, v);
		}
	}
}

static void put_request(struct writer *w, uint32_t msgid, const struct request *r)
{
	size_t i, k, entries = 0;

	for (i = 0; i < r->n; i++)
		entries += r->args[i].kind == ARG_FIELDS ? count_set(r->args[i].t, r->args[i].set) : 1;
	put_array(w, 4);
	put_uint(w, 0);
	put_uint(w, msgid);
	put_str(w, r->method);
	if (r->n == 0) {
		put_array(w, 0);
		return;
	}
	put_array(w, 1);
	put_map(w, entries);
	for (i = 0; i < r->n; i++) {
		const struct arg *a = &r->args[i];

		if (a->kind != ARG_FIELDS)
			put_str(w, a->key);
		switch (a->kind) {
		case ARG_UINT:
			put_uint(w, a->u);
			break;
		case ARG_INT:
			put_int(w, a->i);
			break;
		case ARG_STR:
			put_str(w, a->s);
			break;
		case ARG_FIELDS:
			put_fields(w, a->t, a->base, a->set);
			break;
		case ARG_MAP:
			put_map(w, count_set(a->t, a->set));
			put_fields(w, a->t, a->base, a->set);
			break;
		case ARG_META: {
			const sc_meta *m = a->base;

			put_map(w, a->count);
			for (k = 0; k < a->count; k++) {
				put_str(w, m[k].key);
				put_str(w, m[k].value);
			}
			break;
		}
		case ARG_MAP_ARRAY:
			put_array(w, a->count);
			for (k = 0; k < a->count; k++) {
				put_map(w, count_set(a->t, a->set));
				put_fields(w, a->t, (const char *)a->base + k * a->size, a->set);
			}
			break;
		}
	}
}

/* ----- transport ----- */

static int send_all(sc_client *c, const char *p, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = send(c->fd, p, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return broken(c, -errno, "write to the daemon");
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int64_t monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Waits until the socket is readable: for ever when deadline is NULL (a
 * signal is retried), else until *deadline (CLOCK_MONOTONIC milliseconds,
 * -1: none), returning -ETIMEDOUT after it and -EINTR when a signal came.
 */
static int wait_readable(sc_client *c, const int64_t *deadline)
{
	struct pollfd p = { .fd = c->fd, .events = POLLIN };
	int64_t left;
	int n;

	if (deadline == NULL)
		return 0;
	left = *deadline < 0 ? -1 : *deadline - monotonic_ms();
	if (*deadline >= 0 && left < 0)
		left = 0;
	n = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
	if (n < 0)
		return errno == EINTR ? fail(c, -EINTR, "interrupted")
		                      : broken(c, -errno, "wait for the daemon");
	return n == 0 ? fail(c, -ETIMEDOUT, "nothing from the daemon in time") : 0;
}

/*
 * Takes the next whole message already buffered into c->msg: 1, or 0 when
 * more bytes are needed, or a negative code (the connection is broken).
 * The previous message's objects are freed first.
 */
static int next_buffered(sc_client *c)
{
	int got;

	if (c->msg_held) {
		/*
		 * Frees the objects of the last message, keeping the zone's memory:
		 * flushing first hands the zone's reference to the read buffer
		 * over to a finalizer, which the clear runs, so the buffer can
		 * then be rewound rather than replaced.
		 */
		c->msg_held = 0;
		memset(&c->msg.data, 0, sizeof(c->msg.data));
		if (!msgpack_unpacker_flush_zone(&c->unp))
			return broken(c, -ENOMEM, "reading a response");
		msgpack_unpacker_reset_zone(&c->unp);
	}
	got = msgpack_unpacker_execute(&c->unp);
	if (got > 0) {
		c->msg.data = msgpack_unpacker_data(&c->unp);
		msgpack_unpacker_reset(&c->unp);
		c->msg_held = 1;
		return 1;
	}
	if (got < 0)
		return broken(c, got == MSGPACK_UNPACK_NOMEM_ERROR ? -ENOMEM : SC_EPROTO,
		              got == MSGPACK_UNPACK_NOMEM_ERROR ? "reading a response"
		                                                : "malformed msgpack from the daemon");
	return 0;
}

/*
 * Makes room in the unpacker's buffer for the next read: *room bytes, at
 * most one byte past RESPONSE_MAX for the message being read. That byte
 * tells an oversized response, refused here before the next read, so the
 * buffer never grows further. 0, or the code that broke the connection.
 */
static int read_room(sc_client *c, size_t *room)
{
	size_t buffered = msgpack_unpacker_message_size(&c->unp);

	if (buffered > RESPONSE_MAX)
		return broken(c, SC_EPROTO, "response larger than 1 MiB");
	if (!msgpack_unpacker_reserve_buffer(&c->unp, READ_CHUNK))
		return broken(c, -ENOMEM, "reading a response");
	*room = msgpack_unpacker_buffer_capacity(&c->unp);
	if (*room > RESPONSE_MAX + 1 - buffered)
		*room = RESPONSE_MAX + 1 - buffered;
	return 0;
}

/* Reads until one whole message is in c->msg; deadline as wait_readable's. */
static int receive_until(sc_client *c, const int64_t *deadline)
{
	size_t room;
	ssize_t n;
	int rc;

	for (;;) {
		if ((rc = next_buffered(c)) != 0)
			return rc < 0 ? rc : 0;
		if ((rc = read_room(c, &room)) != 0 || (rc = wait_readable(c, deadline)) != 0)
			return rc;
		n = recv(c->fd, msgpack_unpacker_buffer(&c->unp), room, 0);
		if (n == 0)
			return broken(c, SC_ECLOSED, "the daemon closed the connection");
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return broken(c, -errno, "read from the daemon");
		}
		msgpack_unpacker_buffer_consumed(&c->unp, (size_t)n);
	}
}

static int receive(sc_client *c)
{
	return receive_until(c, NULL);
}

/* Turns an error map {code, name, message} into its code and message. */
static int daemon_error(sc_client *c, const msgpack_object *err)
{
	const msgpack_object *name, *code, *message;
	char wire[32] = "";
	int64_t v;
	int rc;

	if (err->type != MSGPACK_OBJECT_MAP || (name = map_get(err, "name")) == NULL ||
	    (code = map_get(err, "code")) == NULL || (message = map_get(err, "message")) == NULL ||
	    message->type != MSGPACK_OBJECT_STR)
		return fail(c, SC_EPROTO, "malformed error map from the daemon");
	rc = copy_str(name, wire, sizeof(wire)) == 0 ? sc_err_from_name(wire) : SC_EPROTO;
	if (rc == SC_EPROTO && strcmp(wire, "protocol_error") != 0 && get_int(code, &v) == 0 &&
	    v < 0 && v >= INT32_MIN)
		rc = (int)v;
	snprintf(c->error, sizeof(c->error), "%.*s", (int)message->via.str.size,
	         message->via.str.ptr);
	return rc;
}

static int is_notification(const msgpack_object *m, const char *method)
{
	const msgpack_object *name = &m->via.array.ptr[1], *params = &m->via.array.ptr[2];

	return m->via.array.size == 3 && name->type == MSGPACK_OBJECT_STR &&
	       name->via.str.size == strlen(method) &&
	       memcmp(name->via.str.ptr, method, name->via.str.size) == 0 &&
	       params->type == MSGPACK_OBJECT_ARRAY && params->via.array.size == 1;
}

/*
 * Handles the notification m: queues an alert (a malformed one is dropped:
 * it must not fail the call that happened to read it); "error" means the
 * daemon is closing this connection and is returned as the code.
 */
static int take_notification(sc_client *c, const msgpack_object *m)
{
	const msgpack_object *param = &m->via.array.ptr[2].via.array.ptr[0];
	sc_alert a;
	int rc;

	if (is_notification(m, "error")) {
		rc = daemon_error(c, param);
		close(c->fd);
		c->fd = -1;
		return rc;
	}
	if (!is_notification(m, "alert"))
		return 0;
	if (decode_one(c, param, TABLE(alert_fields, "alert"), &a, sizeof(a)) != 0) {
		c->error[0] = '\0';
		return 0;
	}
	if (c->alerts_len == ALERT_QUEUE) {
		c->alerts_head = (c->alerts_head + 1) % ALERT_QUEUE;
		c->alerts_len--;
		c->alerts_dropped++;
	}
	c->alerts[(c->alerts_head + c->alerts_len++) % ALERT_QUEUE] = a;
	return 0;
}

/*
 * One round trip. On success *result points into c->msg and stays valid
 * until the next rpc() on c.
 */
static int rpc(sc_client *c, const struct request *r, const msgpack_object **result)
{
	struct writer w = { .sb = &c->sbuf, .failed = 0 };
	const msgpack_object *m;
	uint32_t msgid;
	int rc;

	if (c->fd < 0)
		return fail(c, SC_ECLOSED, "the connection is closed");
	c->error[0] = '\0';
	msgid = ++c->msgid;
	msgpack_sbuffer_clear(&c->sbuf);
	put_request(&w, msgid, r);
	if (w.failed)
		return fail(c, -ENOMEM, "%s: %s", r->method, sc_strerror(-ENOMEM));
	if ((rc = send_all(c, c->sbuf.data, c->sbuf.size)) != 0)
		return rc;
	for (;;) {
		if ((rc = receive(c)) != 0)
			return rc;
		m = &c->msg.data;
		if (m->type != MSGPACK_OBJECT_ARRAY || m->via.array.size < 3 ||
		    m->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
			return broken(c, SC_EPROTO, "malformed message from the daemon");
		if (m->via.array.ptr[0].via.u64 != 2)
			break;
		if ((rc = take_notification(c, m)) != 0)
			return rc;
	}
	if (m->via.array.size != 4 || m->via.array.ptr[0].via.u64 != 1 ||
	    m->via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return broken(c, SC_EPROTO, "malformed response from the daemon");
	if (m->via.array.ptr[1].via.u64 != msgid)
		return broken(c, SC_EPROTO, "response to another request");
	if (m->via.array.ptr[2].type != MSGPACK_OBJECT_NIL)
		return daemon_error(c, &m->via.array.ptr[2]);
	*result = &m->via.array.ptr[3];
	return 0;
}

/* rpc() and decode the result into out through t. */
static int call_one(sc_client *c, const struct request *r, struct table t, void *out,
                    size_t size)
{
	const msgpack_object *res;
	int rc = rpc(c, r, &res);

	if (rc != 0 || out == NULL)
		return rc;
	return decode_one(c, res, t, out, size);
}

static int call_list(sc_client *c, const struct request *r, struct table t, size_t size,
                     void **out, size_t *n)
{
	const msgpack_object *res;
	int rc;

	*out = NULL;
	*n = 0;
	rc = rpc(c, r, &res);
	return rc != 0 ? rc : decode_list(c, res, t, size, out, n);
}

/* Methods answering {deleted: true} or {removed: true}. */
static int call_done(sc_client *c, const struct request *r, struct table t)
{
	struct done d;
	int rc = call_one(c, r, t, &d, sizeof(d));

	if (rc == 0 && !d.yes)
		rc = fail(c, SC_EPROTO, "the daemon answered %s: false", t.what);
	return rc;
}

/* ----- connection ----- */

/* connect(2), finishing a connection that a signal interrupted. */
static int connect_unix(int fd, const struct sockaddr_un *addr)
{
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	socklen_t len = sizeof(int);
	int err = 0;

	if (connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) == 0)
		return 0;
	if (errno != EINTR)
		return -errno;
	while (poll(&p, 1, -1) < 0)
		if (errno != EINTR)
			return -errno;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
		return -errno;
	return -err;
}

int sc_connect(const char *path, sc_client **out)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct request r = { .method = "hello" };
	const msgpack_object *res;
	struct hello h;
	sc_client *c;
	int rc;

	*out = NULL;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return -ENOMEM;
	c->fd = -1;
	msgpack_sbuffer_init(&c->sbuf);
	msgpack_unpacked_init(&c->msg);
	if (!msgpack_unpacker_init(&c->unp, READ_CHUNK)) {
		free(c);
		return -ENOMEM;
	}
	if (path == NULL)
		rc = sc_default_socket_path(addr.sun_path, sizeof(addr.sun_path));
	else
		rc = strlen(path) < sizeof(addr.sun_path) ? 0 : -ENAMETOOLONG;
	if (rc == 0 && path != NULL)
		memcpy(addr.sun_path, path, strlen(path) + 1);
	if (rc == 0) {
		c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		rc = c->fd < 0 ? -errno : connect_unix(c->fd, &addr);
	}
	if (rc == 0)
		rc = rpc(c, &r, &res);
	if (rc == 0)
		rc = decode_one(c, res, TABLE(hello_fields, "hello"), &h, sizeof(h));
	if (rc == 0 && h.protocol != SC_PROTOCOL_VERSION)
		rc = SC_EPROTO;
	if (rc != 0) {
		sc_close(c);
		return rc;
	}
	memcpy(c->version, h.version, sizeof(c->version));
	*out = c;
	return 0;
}

void sc_close(sc_client *c)
{
	if (c == NULL)
		return;
	if (c->fd >= 0)
		close(c->fd);
	msgpack_unpacked_destroy(&c->msg);
	msgpack_unpacker_destroy(&c->unp);
	msgpack_sbuffer_destroy(&c->sbuf);
	free(c);
}

const char *sc_last_error(const sc_client *c)
{
	return c != NULL ? c->error : "";
}

const char *sc_server_version(const sc_client *c)
{
	return c != NULL ? c->version : "";
}

/* ----- the gate ----- */

/* The check request for req into *r; SC_EINVAL (with the message) if it cannot be sent. */
static int check_request(sc_client *c, const sc_check_req *req, struct request *r)
{
	size_t i;

	if (req->action == NULL)
		return fail(c, SC_EINVAL, "action: required");
	if (req->n_metadata > 0 && req->metadata == NULL)
		return fail(c, SC_EINVAL, "metadata: %zu entries but no array", req->n_metadata);
	for (i = 0; i < req->n_metadata; i++)
		if (req->metadata[i].key == NULL || req->metadata[i].key[0] == '\0' ||
		    req->metadata[i].value == NULL)
			return fail(c, SC_EINVAL, "metadata: entry %zu needs a key and a value", i);
	*r = (struct request){ .method = "check" };
	arg_uint(r, "agent_id", req->agent_id);
	arg_str(r, "action", req->action);
	arg_int(r, "estimated_cost", req->estimated_cost);
	if (req->type != NULL)
		arg_str(r, "type", req->type);
	if (req->idempotency_key != NULL)
		arg_str(r, "idempotency_key", req->idempotency_key);
	if (req->task_id != NULL)
		arg_str(r, "task_id", req->task_id);
	if (req->n_metadata > 0)
		add(r, (struct arg){ .key = "metadata", .kind = ARG_META, .base = req->metadata,
		                     .count = req->n_metadata });
	return 0;
}

int sc_check(sc_client *c, const sc_check_req *req, sc_decision *out)
{
	struct request r;
	int rc = check_request(c, req, &r);

	return rc != 0 ? rc : call_one(c, &r, TABLE(decision_fields, "decision"), out, sizeof(*out));
}

/*
 * sc_check_batch. Request i carries msgid base + i (uint32 arithmetic, as
 * msgids wrap); the daemon answers in request order, so the answer due next
 * is always that of the oldest request in flight, and anything else is a
 * broken stream. Requests are packed into c->sbuf a window at a time, and
 * the socket is driven with poll() for reading and writing at once: while a
 * window is being written the answers already arriving are read, so neither
 * side can block on a full socket buffer whatever the requests' sizes.
 * rcs[i] is BATCH_PENDING until request i is answered or refused.
 */
#define BATCH_PENDING 1

struct batch {
	const sc_check_req *reqs;
	size_t n;
	sc_decision *outs;
	int *rcs;
	uint32_t base;   /* msgid of request 0 */
	size_t packed;   /* requests 0..packed-1 are packed or refused */
	size_t next;     /* the oldest request not answered yet */
	size_t inflight; /* packed and not answered */
	size_t off;      /* bytes of c->sbuf the kernel has taken */
};

static void batch_skip_answered(struct batch *b)
{
	while (b->next < b->packed && b->rcs[b->next] != BATCH_PENDING)
		b->next++;
}

/* Packs requests into c->sbuf until the window is full. */
static void batch_fill(sc_client *c, struct batch *b)
{
	struct writer w;
	struct request r;
	size_t before;
	int rc;

	msgpack_sbuffer_clear(&c->sbuf);
	b->off = 0;
	while (b->packed < b->n && b->inflight < SC_CHECK_BATCH_WINDOW) {
		size_t i = b->packed++;

		if ((rc = check_request(c, &b->reqs[i], &r)) != 0) {
			b->rcs[i] = rc;
			continue;
		}
		before = c->sbuf.size;
		w.sb = &c->sbuf;
		w.failed = 0;
		put_request(&w, b->base + (uint32_t)i, &r);
		if (w.failed) {
			c->sbuf.size = before; /* drop the partial request */
			b->rcs[i] = fail(c, -ENOMEM, "check: %s", sc_strerror(-ENOMEM));
			continue;
		}
		b->inflight++;
	}
	batch_skip_answered(b);
}

/* Handles the message in c->msg: the answer to b->next, or a notification. */
static int batch_take(sc_client *c, struct batch *b)
{
	const msgpack_object *m = &c->msg.data;
	size_t i = b->next;

	if (m->type != MSGPACK_OBJECT_ARRAY || m->via.array.size < 3 ||
	    m->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return broken(c, SC_EPROTO, "malformed message from the daemon");
	if (m->via.array.ptr[0].via.u64 == 2)
		return take_notification(c, m);
	if (m->via.array.size != 4 || m->via.array.ptr[0].via.u64 != 1 ||
	    m->via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return broken(c, SC_EPROTO, "malformed response from the daemon");
	if (b->inflight == 0 || m->via.array.ptr[1].via.u64 != (uint32_t)(b->base + (uint32_t)i))
		return broken(c, SC_EPROTO, "response to another request");
	if (m->via.array.ptr[2].type != MSGPACK_OBJECT_NIL)
		b->rcs[i] = daemon_error(c, &m->via.array.ptr[2]);
	else
		b->rcs[i] = decode_one(c, &m->via.array.ptr[3], TABLE(decision_fields, "decision"),
		                       &b->outs[i], sizeof(b->outs[i]));
	b->inflight--;
	b->next++;
	batch_skip_answered(b);
	return 0;
}

/* Handles every whole message buffered; *took counts them. */
static int batch_drain(sc_client *c, struct batch *b, int *took)
{
	int rc;

	while ((rc = next_buffered(c)) > 0) {
		if ((rc = batch_take(c, b)) != 0)
			return rc;
		++*took;
	}
	return rc;
}

/* Waits until the socket can take bytes or has some, and moves them. */
static int batch_io(sc_client *c, struct batch *b)
{
	int want_write = b->off < c->sbuf.size, took = 0, rc;
	struct pollfd p = { .fd = c->fd, .events = POLLIN | (want_write ? POLLOUT : 0) };
	size_t room;
	ssize_t n;

	if ((rc = batch_drain(c, b, &took)) != 0 || took > 0)
		return rc;
	while (poll(&p, 1, -1) < 0)
		if (errno != EINTR)
			return broken(c, -errno, "wait for the daemon");
	if (want_write && (p.revents & (POLLOUT | POLLERR))) {
		n = send(c->fd, c->sbuf.data + b->off, c->sbuf.size - b->off,
		         MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n >= 0)
			b->off += (size_t)n;
		else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			return broken(c, -errno, "write to the daemon");
	}
	if (!(p.revents & (POLLIN | POLLHUP | POLLERR)))
		return 0;
	if ((rc = read_room(c, &room)) != 0)
		return rc;
	n = recv(c->fd, msgpack_unpacker_buffer(&c->unp), room, MSG_DONTWAIT);
	if (n == 0)
		return broken(c, SC_ECLOSED, "the daemon closed the connection");
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR
		               ? 0
		               : broken(c, -errno, "read from the daemon");
	msgpack_unpacker_buffer_consumed(&c->unp, (size_t)n);
	return batch_drain(c, b, &took);
}

int sc_check_batch(sc_client *c, const sc_check_req *reqs, size_t n, sc_decision *outs, int *rcs)
{
	struct batch b = { .reqs = reqs, .n = n, .outs = outs, .rcs = rcs };
	size_t i;
	int rc = 0;

	if (n > 0 && (reqs == NULL || outs == NULL || rcs == NULL))
		return fail(c, SC_EINVAL, "check batch: reqs, outs and rcs are required");
	c->error[0] = '\0';
	for (i = 0; i < n; i++)
		rcs[i] = BATCH_PENDING;
	msgpack_sbuffer_clear(&c->sbuf); /* the last call's request is not to be sent again */
	b.base = c->msgid + 1;
	c->msgid += (uint32_t)n;
	while (b.next < n) {
		if (c->fd < 0) {
			rc = fail(c, SC_ECLOSED, "the connection is closed");
			break;
		}
		/* Refill once half the window is answered, so that writes go out in bulk. */
		if (b.off == c->sbuf.size && b.packed < n && b.inflight <= SC_CHECK_BATCH_WINDOW / 2)
			batch_fill(c, &b);
		if (b.next == n)
			break;
		if ((rc = batch_io(c, &b)) != 0)
			break;
	}
	for (i = 0; rc != 0 && i < n; i++)
		if (rcs[i] == BATCH_PENDING)
			rcs[i] = rc;
	return rc;
}

int sc_report(sc_client *c, uint64_t transaction_id, enum sc_outcome outcome, int has_actual,
              sc_micros actual_cost, sc_settlement *out)
{
	struct request rq = { .method = "report" }, *r = &rq;

	if ((unsigned)outcome > SC_OUTCOME_PARTIAL)
		return fail(c, SC_EINVAL, "outcome: out of range");
	arg_uint(r, "transaction_id", transaction_id);
	arg_str(r, "outcome", sc_outcome_name(outcome));
	if (has_actual)
		arg_int(r, "actual_cost", actual_cost);
	return call_one(c, r, TABLE(settlement_fields, "settlement"), out, sizeof(*out));
}

int sc_report_tokens(sc_client *c, uint64_t transaction_id, enum sc_outcome outcome,
                     const sc_tokens *t, sc_settlement *out)
{
	struct request rq = { .method = "report" }, *r = &rq;

	if ((unsigned)outcome > SC_OUTCOME_PARTIAL)
		return fail(c, SC_EINVAL, "outcome: out of range");
	if (t == NULL || t->model == NULL)
		return fail(c, SC_EINVAL, "model: required");
	arg_uint(r, "transaction_id", transaction_id);
	arg_str(r, "outcome", sc_outcome_name(outcome));
	arg_str(r, "model", t->model);
	arg_uint(r, "input_tokens", t->input_tokens);
	arg_uint(r, "output_tokens", t->output_tokens);
	arg_uint(r, "cached_input_tokens", t->cached_input_tokens);
	return call_one(c, r, TABLE(settlement_fields, "settlement"), out, sizeof(*out));
}

/* ----- pricing ----- */

int sc_pricing_set(sc_client *c, const char *model, sc_micros input, sc_micros output,
                   const sc_micros *cached_input, const int64_t *effective_from, sc_price *out)
{
	struct request rq = { .method = "pricing.set" }, *r = &rq;

	if (model == NULL)
		return fail(c, SC_EINVAL, "model: required");
	arg_str(r, "model", model);
	arg_int(r, "input", input);
	arg_int(r, "output", output);
	if (cached_input != NULL)
		arg_int(r, "cached_input", *cached_input);
	if (effective_from != NULL)
		arg_int(r, "effective_from", *effective_from);
	return call_one(c, r, TABLE(price_fields, "price"), out, sizeof(*out));
}

int sc_pricing_list(sc_client *c, const char *model, sc_price **out, size_t *n)
{
	struct request rq = { .method = "pricing.list" }, *r = &rq;

	if (model != NULL)
		arg_str(r, "model", model);
	return call_list(c, r, TABLE(price_fields, "price"), sizeof(**out), (void **)out, n);
}

void sc_prices_free(sc_price *list)
{
	free(list);
}

int sc_pricing_get(sc_client *c, const char *model, const int64_t *at, sc_price *out)
{
	struct request rq = { .method = "pricing.get" }, *r = &rq;

	if (model == NULL)
		return fail(c, SC_EINVAL, "model: required");
	arg_str(r, "model", model);
	if (at != NULL)
		arg_int(r, "at", *at);
	return call_one(c, r, TABLE(price_fields, "price"), out, sizeof(*out));
}

/* ----- management ----- */

int sc_orgs_create_tz(sc_client *c, const char *name, const char *timezone, sc_org *out)
{
	struct request rq = { .method = "orgs.create" }, *r = &rq;

	if (name == NULL)
		return fail(c, SC_EINVAL, "name: required");
	arg_str(r, "name", name);
	if (timezone != NULL)
		arg_str(r, "timezone", timezone);
	return call_one(c, r, TABLE(org_fields, "org"), out, sizeof(*out));
}

int sc_orgs_create(sc_client *c, const char *name, sc_org *out)
{
	return sc_orgs_create_tz(c, name, NULL, out);
}

int sc_orgs_set_timezone(sc_client *c, uint64_t org_id, const char *timezone, sc_org *out)
{
	struct request rq = { .method = "orgs.update" }, *r = &rq;

	if (timezone == NULL)
		return fail(c, SC_EINVAL, "timezone: required");
	arg_uint(r, "org_id", org_id);
	arg_str(r, "timezone", timezone);
	return call_one(c, r, TABLE(org_fields, "org"), out, sizeof(*out));
}

int sc_orgs_list(sc_client *c, sc_org **out, size_t *n)
{
	struct request r = { .method = "orgs.list" };

	return call_list(c, &r, TABLE(org_fields, "org"), sizeof(**out), (void **)out, n);
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
		arg_uint(r, "org", id);
	else
		arg_str(r, "org", org);
}

int sc_agents_create(sc_client *c, const char *org, const char *name, enum sc_priority priority,
                     const sc_wallet_update *wallet, const sc_rule *rules, size_t n_rules,
                     sc_agent *out)
{
	struct request rq = { .method = "agents.create" }, *r = &rq;

	if (org == NULL || name == NULL)
		return fail(c, SC_EINVAL, "%s: required", org == NULL ? "org" : "name");
	if ((unsigned)priority > SC_PRIORITY_CRITICAL)
		return fail(c, SC_EINVAL, "priority: out of range");
	arg_org(r, org);
	arg_str(r, "name", name);
	arg_str(r, "priority", sc_priority_name(priority));
	if (wallet != NULL)
		arg_fields(r, ARG_MAP, "wallet", TABLE(wallet_update_fields, "wallet"), wallet, 1,
		           sizeof(*wallet), wallet->set);
	if (n_rules > 0)
		arg_fields(r, ARG_MAP_ARRAY, "rules", TABLE(rule_fields, "rule"), rules, n_rules,
		           sizeof(*rules), RULE_SET_ALL);
	return call_one(c, r, TABLE(agent_fields, "agent"), out, sizeof(*out));
}

int sc_agents_get(sc_client *c, uint64_t agent_id, sc_agent *out)
{
	struct request rq = { .method = "agents.get" }, *r = &rq;

	arg_uint(r, "agent_id", agent_id);
	return call_one(c, r, TABLE(agent_fields, "agent"), out, sizeof(*out));
}

int sc_agents_list(sc_client *c, uint64_t org_id, sc_agent **out, size_t *n)
{
	struct request rq = { .method = "agents.list" }, *r = &rq;

	if (org_id != 0)
		arg_uint(r, "org", org_id);
	return call_list(c, r, TABLE(agent_fields, "agent"), sizeof(**out), (void **)out, n);
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
		return fail(c, SC_EINVAL, "%s: out of range",
		            priority > SC_PRIORITY_CRITICAL ? "priority" : "status");
	arg_uint(r, "agent_id", agent_id);
	if (name != NULL)
		arg_str(r, "name", name);
	if (priority >= 0)
		arg_str(r, "priority", sc_priority_name((enum sc_priority)priority));
	if (status >= 0)
		arg_str(r, "status", sc_status_name((enum sc_status)status));
	return call_one(c, r, TABLE(agent_fields, "agent"), out, sizeof(*out));
}

int sc_agents_delete(sc_client *c, uint64_t agent_id)
{
	struct request rq = { .method = "agents.delete" }, *r = &rq;

	arg_uint(r, "agent_id", agent_id);
	return call_done(c, r, TABLE(deleted_fields, "deleted"));
}

/* rules.add and rules.update: the same arguments, rules.add without a rule_id. */
static int rule_call(sc_client *c, const char *method, uint64_t agent_id, const uint64_t *rule_id,
                     unsigned set, const sc_rule *rule, sc_rule *out)
{
	struct request rq = { .method = method }, *r = &rq;

	arg_uint(r, "agent_id", agent_id);
	if (rule_id != NULL)
		arg_uint(r, "rule_id", *rule_id);
	arg_fields(r, ARG_FIELDS, NULL, TABLE(rule_fields, "rule"), rule, 1, sizeof(*rule), set);
	return call_one(c, r, TABLE(rule_fields, "rule"), out, sizeof(*out));
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

	arg_uint(r, "agent_id", agent_id);
	return call_list(c, r, TABLE(rule_fields, "rule"), sizeof(**out), (void **)out, n);
}

void sc_rules_free(sc_rule *list)
{
	free(list);
}

int sc_rules_remove(sc_client *c, uint64_t agent_id, uint64_t rule_id)
{
	struct request rq = { .method = "rules.remove" }, *r = &rq;

	arg_uint(r, "agent_id", agent_id);
	arg_uint(r, "rule_id", rule_id);
	return call_done(c, r, TABLE(removed_fields, "removed"));
}

/*
 * wallets.get and wallets.update of an agent (key "agent_id") or an org
 * ("org_id"); u NULL: get. An absent `limited` means an agent wallet.
 */
static int wallet_call(sc_client *c, const char *key, uint64_t id, const sc_wallet_update *u,
                       sc_wallet *out)
{
	struct request rq = { .method = u == NULL ? "wallets.get" : "wallets.update" }, *r = &rq;

	arg_uint(r, key, id);
	if (u != NULL)
		arg_fields(r, ARG_FIELDS, NULL, TABLE(wallet_update_fields, "wallet"), u, 1,
		           sizeof(*u), u->set);
	memset(out, 0, sizeof(*out));
	out->limited = strcmp(key, "agent_id") == 0;
	/* size 0: keep the default of `limited` set above. */
	return call_one(c, r, TABLE(wallet_fields, "wallet"), out, 0);
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
		return fail(c, SC_EINVAL, "%s: give exactly one of %s and %s", k->what, k->agent_id,
		            k->org_id);
	if (ref.agent_id != 0)
		arg_uint(r, k->agent_id, ref.agent_id);
	else
		arg_uint(r, k->org_id, ref.org_id);
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
		return fail(c, SC_EINVAL, "reason: required");
	if ((rc = arg_wallet_ref(c, r, &from_keys, from)) != 0 ||
	    (rc = arg_wallet_ref(c, r, &to_keys, to)) != 0)
		return rc;
	arg_int(r, "amount", amount);
	arg_str(r, "reason", reason);
	if ((rc = call_one(c, r, TABLE(transfer_fields, "transfer"), &t, sizeof(t))) != 0)
		return rc;
	if (t.amount != amount)
		return fail(c, SC_EPROTO,
		            "malformed transfer from the daemon: 'amount' is %" PRId64 ", not %" PRId64,
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
		return fail(c, SC_EINVAL, "reason: required");
	if ((rc = arg_wallet_ref(c, r, &own_keys, w)) != 0)
		return rc;
	arg_int(r, "amount", amount);
	arg_str(r, "reason", reason);
	if ((rc = call_one(c, r, TABLE(adjustment_fields, "adjustment"), &a, sizeof(a))) != 0)
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

	arg_uint(r, "agent_id", agent_id);
	if (amount != NULL) {
		if (reason == NULL)
			return fail(c, SC_EINVAL, "reason: required");
		arg_int(r, "amount", *amount);
		arg_str(r, "reason", reason);
	}
	if ((rc = call_one(c, r, TABLE(carve_fields, "carve"), &v, sizeof(v))) != 0)
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
	return call_one(c, r, TABLE(spend_fields, "spend"), out, sizeof(*out));
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
		arg_uint(r, "agent_id", f->agent_id);
	if (f->org_id != 0)
		arg_uint(r, "org_id", f->org_id);
	if (f->since != 0)
		arg_int(r, "since", f->since);
	if (f->until != 0)
		arg_int(r, "until", f->until);
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
	if ((meta = map_get(obj, "metadata")) == NULL || meta->type != MSGPACK_OBJECT_MAP ||
	    (reason = map_get(meta, "reason")) == NULL ||
	    copy_str(reason, t->reason, sizeof(t->reason)) != 0 || t->reason[0] == '\0')
		return "a transfer or adjustment without a 'metadata' of {reason: a short string}";
	return NULL;
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
		return fail(c, SC_EINVAL, "%s: out of range",
		            f->status > SC_TXN_EXPIRED ? "status" : "risk");
	arg_txn_scope(r, f);
	if (f->status >= 0)
		arg_str(r, "status", sc_txn_status_name((enum sc_txn_status)f->status));
	if (f->risk >= 0)
		arg_str(r, "risk_level", sc_risk_name((enum sc_risk)f->risk));
	if (f->before != 0)
		arg_uint(r, "before", f->before);
	if (f->limit != 0)
		arg_uint(r, "limit", f->limit);
	return call_list(c, r, CHECKED_TABLE(transaction_fields, "transaction", txn_check),
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
	return call_one(c, r, TABLE(txn_summary_fields, "summary"), out, sizeof(*out));
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
		arg_uint(r, "limit", limit);
	return call_list(c, r, TABLE(top_agent_fields, "top agent"), sizeof(**out), (void **)out,
	                 n);
}

void sc_top_agents_free(sc_top_agent *list)
{
	free(list);
}

int sc_fleet_get(sc_client *c, sc_fleet *out)
{
	struct request r = { .method = "fleet" };

	return call_one(c, &r, TABLE(fleet_fields, "fleet"), out, sizeof(*out));
}

int sc_tasks_usage(sc_client *c, const char *task_id, sc_task_usage *out)
{
	struct request rq = { .method = "tasks.usage" }, *r = &rq;

	if (task_id == NULL)
		return fail(c, SC_EINVAL, "task_id: required");
	arg_str(r, "task_id", task_id);
	return call_one(c, r, TABLE(task_usage_fields, "task usage"), out, sizeof(*out));
}

/* ----- kredit score and events ----- */

int sc_score_get(sc_client *c, uint64_t agent_id, sc_score *out)
{
	struct request rq = { .method = "score" }, *r = &rq;

	arg_uint(r, "agent_id", agent_id);
	return call_one(c, r, TABLE(score_fields, "score"), out, sizeof(*out));
}

/* A value other than nil under key in the map obj. */
static int given(const msgpack_object *obj, const char *key)
{
	const msgpack_object *v = map_get(obj, key);

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

int sc_agents_events(sc_client *c, uint64_t agent_id, unsigned limit, sc_event **out, size_t *n)
{
	struct request rq = { .method = "agents.events" }, *r = &rq;

	arg_uint(r, "agent_id", agent_id);
	if (limit != 0)
		arg_uint(r, "limit", limit);
	return call_list(c, r, CHECKED_TABLE(event_fields, "event", event_check), sizeof(**out),
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

	if ((rc = rpc(c, &r, out)) != 0)
		return rc;
	if ((*out)->type != MSGPACK_OBJECT_MAP)
		return fail(c, SC_EPROTO, "malformed stats from the daemon: not a map");
	return 0;
}

int sc_stat(sc_client *c, const char *name, int64_t *out)
{
	const msgpack_object *res, *v;
	int rc;

	if ((rc = stats(c, &res)) != 0)
		return rc;
	if ((v = map_get(res, name)) == NULL)
		return fail(c, SC_ENOTFOUND, "no counter '%s'", name);
	if (get_int(v, out) != 0)
		return fail(c, SC_EPROTO, "malformed stats from the daemon: '%s' is not an integer",
		            name);
	return 0;
}

int sc_client_stat_str(sc_client *c, const char *name, char *buf, size_t len)
{
	const msgpack_object *res, *v;
	int rc;

	if ((rc = stats(c, &res)) != 0)
		return rc;
	if ((v = map_get(res, name)) == NULL)
		return fail(c, SC_ENOTFOUND, "the daemon's stats have no '%s'", name);
	if (copy_str(v, buf, len) != 0)
		return fail(c, SC_EPROTO, "malformed stats from the daemon: '%s' is not a string of "
		            "at most %zu bytes", name, len - 1);
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
		return fail(c, SC_EINVAL, "%s: out of range",
		            f->kind > SC_ALERT_ANOMALY ? "kind" : "severity");
	if (f->agent_id != 0)
		arg_uint(r, "agent_id", f->agent_id);
	if (f->org_id != 0)
		arg_uint(r, "org_id", f->org_id);
	if (f->kind >= 0)
		arg_str(r, "kind", sc_alert_kind_name((enum sc_alert_kind)f->kind));
	if (f->severity >= 0)
		arg_str(r, "severity", sc_severity_name((enum sc_severity)f->severity));
	if (f->since != 0)
		arg_int(r, "since", f->since);
	if (f->before != 0)
		arg_uint(r, "before", f->before);
	if (f->limit != 0)
		arg_uint(r, "limit", f->limit);
	return call_list(c, r, TABLE(alert_fields, "alert"), sizeof(**out), (void **)out, n);
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
	int rc = call_one(c, &r, TABLE(subscription_fields, "subscription"), &s, sizeof(s));

	if (rc == 0 && s.subscribed != yes)
		rc = fail(c, SC_EPROTO, "the daemon answered %s with subscribed: %s", r.method,
		          s.subscribed ? "true" : "false");
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

int sc_alert_next(sc_client *c, int timeout_ms, sc_alert *out)
{
	int64_t deadline = timeout_ms < 0 ? -1 : monotonic_ms() + timeout_ms;
	const msgpack_object *m;
	int rc;

	for (;;) {
		if (c->alerts_len > 0) {
			*out = c->alerts[c->alerts_head];
			c->alerts_head = (c->alerts_head + 1) % ALERT_QUEUE;
			c->alerts_len--;
			return 0;
		}
		if (c->fd < 0)
			return fail(c, SC_ECLOSED, "the connection is closed");
		if ((rc = receive_until(c, &deadline)) != 0)
			return rc;
		m = &c->msg.data;
		if (m->type != MSGPACK_OBJECT_ARRAY || m->via.array.size < 3 ||
		    m->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
		    m->via.array.ptr[0].via.u64 != 2)
			return broken(c, SC_EPROTO, "a message other than a notification, with no call "
			                            "waiting");
		if ((rc = take_notification(c, m)) != 0)
			return rc;
	}
}

uint64_t sc_alerts_dropped(const sc_client *c)
{
	return c != NULL ? c->alerts_dropped : 0;
}
