/*
 * ctl_output.c: how sidecardctl shows what the daemon answers, in three
 * forms: the human detail view ("key: value" lines), the human table view
 * (aligned columns under a header row) and JSON.
 *
 * Humans see dollars ("$2.40", via sc_money_format()) and UTC times
 * ("2026-11-24 10:00:00Z"); JSON shows money as integer micro-dollars and
 * times as microseconds since the epoch, exactly as on the wire, and one
 * document per command.
 *
 * DESIGN. Each object is described once, by a table of out_field (its
 * member's type and offset, its JSON key and its table header); the three
 * printers walk such a table over the library's struct. A list has a second,
 * narrower table for its human columns (…_cols); JSON always prints every
 * field.
 *
 * Threads: one. Ownership: the printers only read the objects they are
 * given; print_table frees its own scratch.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "ctl.h"

enum out_type {
	OT_UINT,     /* uint64_t */
	OT_UINT32,   /* uint32_t */
	OT_SIZE,     /* size_t */
	OT_INT,      /* int64_t */
	OT_INT32,    /* int */
	OT_MONEY,    /* sc_micros */
	OT_BOOL,     /* int */
	OT_STR,      /* char[] */
	OT_TIME,     /* int64_t microseconds since the epoch */
	OT_ENUM,     /* int, shown by its word in `names` */
	OT_ALLOWED,  /* sc_decision.allowed, shown as the status word */
	OT_WALLET,   /* sc_wallet */
	OT_RULES,    /* sc_agent.rules */
	OT_WARNINGS, /* sc_decision.warnings */
	OT_ID_PAIR,  /* uint64_t[2] (a transfer's debit and credit) */
	OT_GROUP,    /* members of the same struct shown as a nested object: `inner` */
	OT_ALERT_VALUE, /* int64_t of an sc_alert: money or a count, by the alert's kind */
};

enum {
	OF_NULL = 1 << 0,      /* 0 or "" is JSON null and "-" for humans */
	OF_UNLIMITED = 1 << 1, /* 0 means unlimited */
	OF_HAS = 1 << 2,       /* present only when the int at `has` is non-zero */
};

struct out_field {
	const char *key, *header;
	enum out_type type;
	size_t off;
	unsigned flags;
	const struct sc_names *names; /* OT_ENUM: the words of its values */
	size_t has;
	const struct out_field *inner;
	size_t n_inner;
};

#define W(type_, member, key_, header_, ...)                                                  \
	{ .key = key_, .header = header_, .type = (type_), .off = offsetof(T, member),        \
	  __VA_ARGS__ }

/*
 * The money of a wallet, in the members of that name of struct T: a wallet
 * read over the socket (sc_wallet) and one read from the shared mapping
 * (sc_wallet_snapshot) show it under the same keys and headers.
 */
#define WALLET_MONEY_OUT                                                                           \
	W(OT_MONEY, balance, "balance", "BALANCE"),                                                \
	W(OT_MONEY, held, "held", "HELD"),                                                         \
	W(OT_MONEY, available, "available", "AVAILABLE"),                                          \
	W(OT_MONEY, budget, "budget", "BUDGET"),                                                   \
	W(OT_MONEY, max_per_txn, "max_per_txn", "MAX/TXN", .flags = OF_UNLIMITED),                 \
	W(OT_MONEY, daily_spend_limit, "daily_spend_limit", "DAILY LIMIT", .flags = OF_UNLIMITED), \
	W(OT_MONEY, daily_spent, "daily_spent", "DAILY SPENT"),                                    \
	W(OT_MONEY, debt, "debt", "DEBT")

#define T sc_wallet
static const struct out_field wallet_out[] = {
	WALLET_MONEY_OUT,
	W(OT_ENUM, period, "period", "PERIOD", .names = &sc_period_names),
	W(OT_MONEY, reserved, "reserved", "RESERVED"),
	W(OT_BOOL, limited, "limited", "LIMITED"),
	W(OT_MONEY, low_balance, "low_balance", "LOW BALANCE"),
	W(OT_BOOL, sub_budget, "sub_budget", "SUB-BUDGET"),
};
#undef T

#define T sc_wallet_snapshot
static const struct out_field snapshot_out[] = {
	W(OT_UINT, id, "id", "ID"),
	W(OT_UINT, org_id, "org_id", "ORG"),
	W(OT_ENUM, status, "status", "STATUS", .names = &sc_status_names),
	WALLET_MONEY_OUT,
	W(OT_BOOL, limited, "limited", "LIMITED"),
};
#undef T

#define T sc_spend
static const struct out_field spend_out[] = {
	W(OT_MONEY, total, "total", "TOTAL"),
	W(OT_MONEY, daily, "daily", "TODAY"),
	W(OT_MONEY, weekly, "weekly", "THIS WEEK"),
	W(OT_MONEY, monthly, "monthly", "THIS MONTH"),
	W(OT_MONEY, held, "held", "HELD"),
	W(OT_MONEY, budget, "budget", "BUDGET"),
	W(OT_ENUM, period, "period", "PERIOD", .names = &sc_period_names),
	W(OT_STR, timezone, "timezone", "TIME ZONE"),
	W(OT_TIME, daily_reset_at, "daily_reset_at", "DAY ENDS"),
	W(OT_TIME, weekly_reset_at, "weekly_reset_at", "WEEK ENDS"),
	W(OT_TIME, monthly_reset_at, "monthly_reset_at", "MONTH ENDS"),
	W(OT_TIME, period_reset_at, "period_reset_at", "NEXT REFILL", .flags = OF_NULL),
};
#undef T

#define T struct ctl_carve
static const struct out_field carve_out[] = {
	W(OT_WALLET, agent, "agent", "AGENT WALLET"),
	W(OT_WALLET, org, "org", "ORG WALLET"),
	W(OT_UINT, transaction_id, "transaction_id", "TRANSACTION", .flags = OF_NULL),
};
#undef T

#define T sc_rule
static const struct out_field rule_out[] = {
	W(OT_UINT, id, "id", "ID"),
	W(OT_STR, name, "name", "NAME"),
	W(OT_STR, match, "match", "MATCH"),
	W(OT_MONEY, max_cost_per_txn, "max_cost_per_txn", "MAX/TXN", .flags = OF_UNLIMITED),
	W(OT_MONEY, daily_spend_limit, "daily_spend_limit", "DAILY LIMIT", .flags = OF_UNLIMITED),
	W(OT_INT, hourly_rate_limit, "hourly_rate_limit", "HOURLY LIMIT", .flags = OF_UNLIMITED),
	W(OT_MONEY, daily_spent, "daily_spent", "DAILY SPENT"),
	W(OT_INT, hourly_count, "hourly_count", "HOURLY COUNT"),
};
#undef T

#define T sc_org
static const struct out_field org_out[] = {
	W(OT_UINT, id, "id", "ID"),
	W(OT_STR, name, "name", "NAME"),
	W(OT_UINT, agents, "agents", "AGENTS"),
	W(OT_TIME, created_at, "created_at", "CREATED"),
	W(OT_STR, timezone, "timezone", "TIME ZONE"),
	W(OT_STR, timezone_rule, "timezone_rule", "RULE"),
	W(OT_WALLET, wallet, "wallet", "WALLET"),
};
static const struct out_field org_cols[] = {
	W(OT_UINT, id, "id", "ID"),
	W(OT_STR, name, "name", "NAME"),
	W(OT_UINT, agents, "agents", "AGENTS"),
	W(OT_BOOL, wallet.limited, "limited", "LIMITED"),
	W(OT_MONEY, wallet.balance, "balance", "BALANCE"),
	W(OT_MONEY, wallet.held, "held", "HELD"),
	W(OT_MONEY, wallet.debt, "debt", "DEBT"),
	W(OT_TIME, created_at, "created_at", "CREATED"),
};
#undef T

#define T sc_agent
#define AGENT_OUT                                                                   \
	W(OT_UINT, id, "id", "ID"),                                                 \
	W(OT_UINT, org_id, "org_id", "ORG ID"),                                     \
	W(OT_STR, org, "org", "ORG"),                                               \
	W(OT_STR, name, "name", "NAME"),                                            \
	W(OT_ENUM, priority, "priority", "PRIORITY", .names = &sc_priority_names),  \
	W(OT_ENUM, status, "status", "STATUS", .names = &sc_status_names),          \
	W(OT_TIME, created_at, "created_at", "CREATED"),                            \
	W(OT_WALLET, wallet, "wallet", "WALLET"),                                   \
	W(OT_RULES, rules, "rules", "RULES")
static const struct out_field agent_out[] = { AGENT_OUT };
/* agents create: the agent and its token, which the daemon shows only then. */
static const struct out_field agent_created_out[] = {
	AGENT_OUT,
	W(OT_STR, token, "token", "TOKEN", .flags = OF_NULL),
};
#undef AGENT_OUT
static const struct out_field agent_cols[] = {
	W(OT_UINT, id, "id", "ID"),
	W(OT_STR, org, "org", "ORG"),
	W(OT_STR, name, "name", "NAME"),
	W(OT_ENUM, priority, "priority", "PRIORITY", .names = &sc_priority_names),
	W(OT_ENUM, status, "status", "STATUS", .names = &sc_status_names),
	W(OT_MONEY, wallet.balance, "balance", "BALANCE"),
	W(OT_MONEY, wallet.held, "held", "HELD"),
	W(OT_MONEY, wallet.available, "available", "AVAILABLE"),
	W(OT_MONEY, wallet.debt, "debt", "DEBT"),
	W(OT_SIZE, n_rules, "rules", "RULES"),
};
#undef T

/* agent_id is null (JSON) or "-" for an org wallet's transfer or adjustment. */
#define T sc_transaction
static const struct out_field transaction_out[] = {
	W(OT_UINT, id, "id", "ID"),
	W(OT_UINT, agent_id, "agent_id", "AGENT", .flags = OF_NULL),
	W(OT_UINT, org_id, "org_id", "ORG"),
	W(OT_UINT, rule_id, "rule_id", "RULE", .flags = OF_NULL),
	W(OT_STR, action, "action", "ACTION"),
	W(OT_STR, type, "type", "TYPE"),
	W(OT_ENUM, status, "status", "STATUS", .names = &sc_txn_status_names),
	W(OT_ENUM, outcome, "outcome", "OUTCOME", .names = &sc_outcome_names, .flags = OF_HAS,
	  .has = offsetof(sc_transaction, has_outcome)),
	W(OT_MONEY, estimated_cost, "estimated_cost", "ESTIMATE"),
	W(OT_MONEY, charged, "charged", "CHARGED"),
	W(OT_MONEY, balance_after, "balance_after", "BALANCE"),
	W(OT_STR, block_reason, "block_reason", "REASON", .flags = OF_NULL),
	W(OT_STR, risk_level, "risk_level", "RISK"),
	W(OT_STR, idempotency_key, "idempotency_key", "KEY", .flags = OF_NULL),
	W(OT_STR, task_id, "task_id", "TASK", .flags = OF_NULL),
	W(OT_STR, reason, "reason", "NOTE", .flags = OF_NULL),
	W(OT_TIME, created_at, "created_at", "CREATED"),
	W(OT_TIME, settled_at, "settled_at", "SETTLED", .flags = OF_NULL),
	W(OT_STR, model, "model", "MODEL", .flags = OF_NULL),
	W(OT_UINT32, rate_version, "rate_version", "RATE VERSION", .flags = OF_HAS,
	  .has = offsetof(sc_transaction, rate_version)),
	W(OT_UINT, input_tokens, "input_tokens", "INPUT TOKENS", .flags = OF_HAS,
	  .has = offsetof(sc_transaction, rate_version)),
	W(OT_UINT, output_tokens, "output_tokens", "OUTPUT TOKENS", .flags = OF_HAS,
	  .has = offsetof(sc_transaction, rate_version)),
	W(OT_UINT, cached_input_tokens, "cached_input_tokens", "CACHED INPUT TOKENS",
	  .flags = OF_HAS, .has = offsetof(sc_transaction, rate_version)),
};
static const struct out_field transaction_cols[] = {
	W(OT_UINT, id, "id", "ID"),
	W(OT_UINT, agent_id, "agent_id", "AGENT", .flags = OF_NULL),
	W(OT_STR, action, "action", "ACTION"),
	W(OT_STR, type, "type", "TYPE"),
	W(OT_ENUM, status, "status", "STATUS", .names = &sc_txn_status_names),
	W(OT_ENUM, outcome, "outcome", "OUTCOME", .names = &sc_outcome_names, .flags = OF_HAS,
	  .has = offsetof(sc_transaction, has_outcome)),
	W(OT_MONEY, estimated_cost, "estimated_cost", "ESTIMATE"),
	W(OT_MONEY, charged, "charged", "CHARGED"),
	W(OT_MONEY, balance_after, "balance_after", "BALANCE"),
	W(OT_STR, block_reason, "block_reason", "REASON", .flags = OF_NULL),
	W(OT_TIME, created_at, "created_at", "CREATED"),
};
#undef T

#define T sc_task_usage
static const struct out_field task_usage_out[] = {
	W(OT_STR, task_id, "task_id", "TASK"),
	W(OT_UINT, org_id, "org_id", "ORG"),
	W(OT_MONEY, usage, "usage", "USAGE"),
	W(OT_MONEY, held, "held", "HELD"),
	W(OT_MONEY, max_usage, "max_usage", "MAX USAGE", .flags = OF_UNLIMITED),
	W(OT_UINT, checks, "checks", "CHECKS"),
	W(OT_UINT32, open_holds, "open_holds", "OPEN HOLDS"),
	W(OT_TIME, created_at, "created_at", "CREATED"),
	W(OT_TIME, last_at, "last_at", "LAST"),
};
#undef T

#define T sc_txn_summary
static const struct out_field txn_summary_out[] = {
	W(OT_UINT, total, "total", "TOTAL"),
	W(OT_UINT, pending, "pending", "PENDING"),
	W(OT_UINT, settled, "settled", "SETTLED"),
	W(OT_UINT, blocked, "blocked", "BLOCKED"),
	W(OT_UINT, expired, "expired", "EXPIRED"),
	W(OT_MONEY, charged, "charged", "CHARGED"),
	W(OT_MONEY, estimated, "estimated", "ESTIMATED"),
};
#undef T

#define T sc_top_agent
static const struct out_field top_agent_out[] = {
	W(OT_UINT, agent_id, "agent_id", "AGENT"),
	W(OT_STR, name, "name", "NAME"),
	W(OT_MONEY, spend, "spend", "SPEND"),
	W(OT_UINT, transactions, "transactions", "TRANSACTIONS"),
};
#undef T

#define T sc_fleet
static const struct out_field fleet_out[] = {
	W(OT_UINT, total_agents, "total_agents", "AGENTS"),
	W(OT_UINT, active_agents, "active_agents", "ACTIVE"),
	W(OT_UINT, throttled_agents, "throttled_agents", "THROTTLED"),
	W(OT_UINT, frozen_agents, "frozen_agents", "FROZEN"),
	W(OT_MONEY, total_spend, "total_spend", "SPEND"),
	W(OT_UINT, risk_events_blocked, "risk_events_blocked", "RISK BLOCKED"),
	W(OT_UINT, anomalies, "anomalies", "ANOMALIES"),
	W(OT_INT32, avg_credit_score, "avg_credit_score", "AVERAGE SCORE"),
};
#undef T

#define T sc_decision
static const struct out_field decision_out[] = {
	W(OT_ALLOWED, allowed, "status", "STATUS"),
	W(OT_UINT, transaction_id, "transaction_id", "TRANSACTION", .flags = OF_NULL),
	W(OT_STR, block_reason, "block_reason", "REASON", .flags = OF_NULL),
	W(OT_STR, risk_level, "risk_level", "RISK"),
	W(OT_MONEY, available, "available", "AVAILABLE"),
	W(OT_WARNINGS, warnings, "warnings", "WARNINGS"),
	W(OT_BOOL, replayed, "replayed", "REPLAYED"),
};
#undef T

#define T sc_score
static const struct out_field score_factors_out[] = {
	W(OT_UINT, checks, "checks", "CHECKS"),
	W(OT_UINT, blocked, "blocked", "BLOCKED"),
	W(OT_UINT, settled, "settled", "SETTLED"),
	W(OT_UINT, failures, "failures", "FAILURES"),
	W(OT_UINT, overruns, "overruns", "OVERRUNS"),
	W(OT_UINT, expired, "expired", "EXPIRED"),
	W(OT_UINT, anomalies, "anomalies", "ANOMALIES"),
	W(OT_MONEY, average_cost, "average_cost", "AVERAGE COST"),
	W(OT_INT, age_s, "age_s", "AGE"),
};
static const struct out_field score_out[] = {
	W(OT_UINT, agent_id, "agent_id", "AGENT"),
	W(OT_INT32, score, "score", "SCORE"),
	W(OT_ENUM, status, "status", "STATUS", .names = &sc_status_names),
	{ .key = "factors", .header = "FACTORS", .type = OT_GROUP, .inner = score_factors_out,
	  .n_inner = COUNT(score_factors_out) },
};
#undef T

#define T sc_event
static const struct out_field event_out[] = {
	W(OT_UINT, id, "id", "ID"),
	W(OT_UINT, agent_id, "agent_id", "AGENT"),
	W(OT_ENUM, type, "type", "TYPE", .names = &sc_event_type_names),
	W(OT_TIME, time, "time", "TIME"),
	W(OT_INT32, score, "score", "SCORE"),
	W(OT_ENUM, from, "from", "FROM", .names = &sc_status_names, .flags = OF_HAS,
	  .has = offsetof(sc_event, has_status)),
	W(OT_ENUM, to, "to", "TO", .names = &sc_status_names, .flags = OF_HAS,
	  .has = offsetof(sc_event, has_status)),
	W(OT_STR, reason, "reason", "REASON"),
};
static const struct out_field event_cols[] = {
	W(OT_UINT, id, "id", "ID"),
	W(OT_TIME, time, "time", "TIME"),
	W(OT_ENUM, type, "type", "TYPE", .names = &sc_event_type_names),
	W(OT_ENUM, from, "from", "FROM", .names = &sc_status_names, .flags = OF_HAS,
	  .has = offsetof(sc_event, has_status)),
	W(OT_ENUM, to, "to", "TO", .names = &sc_status_names, .flags = OF_HAS,
	  .has = offsetof(sc_event, has_status)),
	W(OT_INT32, score, "score", "SCORE"),
	W(OT_STR, reason, "reason", "REASON"),
};
#undef T

#define T sc_settlement
static const struct out_field settlement_out[] = {
	W(OT_UINT, transaction_id, "transaction_id", "TRANSACTION"),
	W(OT_ENUM, outcome, "outcome", "OUTCOME", .names = &sc_outcome_names),
	W(OT_MONEY, charged, "charged", "CHARGED"),
	W(OT_MONEY, balance, "balance", "BALANCE"),
	W(OT_MONEY, debt, "debt", "DEBT"),
	W(OT_BOOL, replayed, "replayed", "REPLAYED"),
	W(OT_STR, model, "model", "MODEL", .flags = OF_NULL),
	W(OT_UINT32, rate_version, "rate_version", "RATE VERSION", .flags = OF_HAS,
	  .has = offsetof(sc_settlement, rate_version)),
};
#undef T

/* Rates are money per million tokens: "$2.50" is $2.50 per million. */
#define T sc_price
static const struct out_field price_out[] = {
	W(OT_STR, model, "model", "MODEL"),
	W(OT_UINT32, version, "version", "VERSION"),
	W(OT_MONEY, input, "input", "INPUT/M"),
	W(OT_MONEY, output, "output", "OUTPUT/M"),
	W(OT_MONEY, cached_input, "cached_input", "CACHED INPUT/M"),
	W(OT_TIME, effective_from, "effective_from", "EFFECTIVE FROM"),
	W(OT_TIME, created_at, "created_at", "CREATED"),
};
#undef T

#define T struct ctl_transfer
static const struct out_field transfer_out[] = {
	W(OT_MONEY, amount, "amount", "AMOUNT"),
	W(OT_WALLET, from, "from", "FROM"),
	W(OT_WALLET, to, "to", "TO"),
	W(OT_ID_PAIR, transactions, "transactions", "TRANSACTIONS"),
};
#undef T

#define T struct ctl_adjustment
static const struct out_field adjustment_out[] = {
	W(OT_WALLET, wallet, "wallet", "WALLET"),
	W(OT_UINT, transaction_id, "transaction_id", "TRANSACTION"),
};
#undef T

/* value and threshold are money for low_balance and budget_exceeded, counts otherwise. */
#define T sc_alert
static const struct out_field alert_out[] = {
	W(OT_UINT, id, "id", "ID"),
	W(OT_UINT, agent_id, "agent_id", "AGENT", .flags = OF_NULL),
	W(OT_UINT, org_id, "org_id", "ORG"),
	W(OT_ENUM, kind, "kind", "KIND", .names = &sc_alert_kind_names),
	W(OT_ENUM, severity, "severity", "SEVERITY", .names = &sc_severity_names),
	W(OT_ALERT_VALUE, value, "value", "VALUE"),
	W(OT_ALERT_VALUE, threshold, "threshold", "THRESHOLD"),
	W(OT_UINT, transaction_id, "transaction_id", "TRANSACTION", .flags = OF_NULL),
	W(OT_TIME, time, "time", "TIME"),
	W(OT_STR, message, "message", "MESSAGE"),
};
static const struct out_field alert_cols[] = {
	W(OT_UINT, id, "id", "ID"),
	W(OT_TIME, time, "time", "TIME"),
	W(OT_ENUM, severity, "severity", "SEVERITY", .names = &sc_severity_names),
	W(OT_ENUM, kind, "kind", "KIND", .names = &sc_alert_kind_names),
	W(OT_UINT, transaction_id, "transaction_id", "TRANSACTION", .flags = OF_NULL),
	W(OT_STR, message, "message", "MESSAGE"),
};
#undef T

#define T struct ctl_rotation
static const struct out_field rotation_out[] = {
	W(OT_UINT, agent_id, "agent_id", "AGENT"),
	W(OT_STR, token, "token", "TOKEN"),
};
#undef T

/* A listing has no token: tokens create alone shows it. */
#define T sc_access_token
#define ACCESS_TOKEN_OUT                                            \
	W(OT_UINT, token_id, "token_id", "ID"),                     \
	W(OT_STR, role, "role", "ROLE"),                            \
	W(OT_STR, name, "name", "NAME", .flags = OF_NULL),          \
	W(OT_TIME, created_at, "created_at", "CREATED")
static const struct out_field access_token_out[] = {
	ACCESS_TOKEN_OUT,
	W(OT_STR, token, "token", "TOKEN"),
};
static const struct out_field access_token_cols[] = { ACCESS_TOKEN_OUT };
#undef ACCESS_TOKEN_OUT
#undef T
#undef WALLET_MONEY_OUT
#undef W

/* The tables as the other files see them. */
#define OUT(t) { (t), COUNT(t) }
const struct out_table ctl_wallet_out = OUT(wallet_out), ctl_rule_out = OUT(rule_out),
	ctl_org_out = OUT(org_out), ctl_org_cols = OUT(org_cols), ctl_agent_out = OUT(agent_out),
	ctl_agent_cols = OUT(agent_cols), ctl_transaction_out = OUT(transaction_out),
	ctl_transaction_cols = OUT(transaction_cols), ctl_txn_summary_out = OUT(txn_summary_out),
	ctl_top_agent_out = OUT(top_agent_out), ctl_fleet_out = OUT(fleet_out),
	ctl_decision_out = OUT(decision_out), ctl_score_out = OUT(score_out),
	ctl_event_out = OUT(event_out), ctl_event_cols = OUT(event_cols),
	ctl_settlement_out = OUT(settlement_out), ctl_task_usage_out = OUT(task_usage_out),
	ctl_transfer_out = OUT(transfer_out), ctl_adjustment_out = OUT(adjustment_out),
	ctl_spend_out = OUT(spend_out), ctl_carve_out = OUT(carve_out),
	ctl_price_out = OUT(price_out), ctl_alert_out = OUT(alert_out),
	ctl_alert_cols = OUT(alert_cols), ctl_snapshot_out = OUT(snapshot_out),
	ctl_agent_created_out = OUT(agent_created_out), ctl_rotation_out = OUT(rotation_out),
	ctl_access_token_out = OUT(access_token_out),
	ctl_access_token_cols = OUT(access_token_cols);
#undef OUT

static int64_t get_i64(const char *p)
{
	int64_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static int get_int(const char *p)
{
	int v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static uint32_t get_u32(const char *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

/* True when the field is absent: an OF_NULL zero or an OF_HAS without its flag. */
static int is_null(const struct out_field *f, const char *base)
{
	const char *p = base + f->off;

	if ((f->flags & OF_HAS) && !get_int(base + f->has))
		return 1;
	if (!(f->flags & OF_NULL))
		return 0;
	if (f->type == OT_STR)
		return p[0] == '\0';
	return get_i64(p) == 0;
}

void ctl_usd(sc_micros m, char *buf, size_t len)
{
	char tmp[SC_MONEY_STRLEN];

	sc_money_format(m, tmp, sizeof(tmp));
	if (tmp[0] == '-')
		snprintf(buf, len, "-$%s", tmp + 1);
	else
		snprintf(buf, len, "$%s", tmp);
}

/* The human text of a scalar field. */
static void cell(const struct out_field *f, const char *base, char *buf, size_t len)
{
	const char *p = base + f->off;
	struct tm tm;
	time_t t;
	size_t i, n;
	unsigned k;

	if (is_null(f, base)) {
		snprintf(buf, len, "-");
		return;
	}
	if ((f->flags & OF_UNLIMITED) && get_i64(p) == 0) {
		snprintf(buf, len, "unlimited");
		return;
	}
	switch (f->type) {
	case OT_UINT:
		snprintf(buf, len, "%" PRIu64, (uint64_t)get_i64(p));
		break;
	case OT_UINT32:
		snprintf(buf, len, "%" PRIu32, get_u32(p));
		break;
	case OT_SIZE:
		memcpy(&n, p, sizeof(n));
		snprintf(buf, len, "%zu", n);
		break;
	case OT_INT:
		snprintf(buf, len, "%" PRId64, get_i64(p));
		break;
	case OT_INT32:
		snprintf(buf, len, "%d", get_int(p));
		break;
	case OT_MONEY:
		ctl_usd(get_i64(p), buf, len);
		break;
	case OT_ALERT_VALUE: {
		enum sc_alert_kind kind = ((const sc_alert *)base)->kind;

		if (kind == SC_ALERT_LOW_BALANCE || kind == SC_ALERT_BUDGET_EXCEEDED)
			ctl_usd(get_i64(p), buf, len);
		else
			snprintf(buf, len, "%" PRId64, get_i64(p));
		break;
	}
	case OT_BOOL:
		snprintf(buf, len, "%s", get_int(p) ? "yes" : "no");
		break;
	case OT_STR:
		snprintf(buf, len, "%s", p);
		break;
	case OT_TIME:
		t = (time_t)(get_i64(p) / 1000000);
		gmtime_r(&t, &tm);
		strftime(buf, len, "%Y-%m-%d %H:%M:%SZ", &tm);
		break;
	case OT_ENUM:
		snprintf(buf, len, "%s", sc_names_word(f->names, (int)get_int(p)));
		break;
	case OT_ALLOWED:
		snprintf(buf, len, "%s", get_int(p) ? "allowed" : "blocked");
		break;
	case OT_WARNINGS: {
		const sc_decision *d = (const sc_decision *)base;

		snprintf(buf, len, "%s", d->n_warnings ? "" : "-");
		for (k = 0, i = 0; k < d->n_warnings; k++) {
			i += (size_t)snprintf(buf + i, len - i, "%s%s", k ? ", " : "", d->warnings[k]);
			if (i >= len)
				break;
		}
		break;
	}
	case OT_ID_PAIR:
		snprintf(buf, len, "%" PRIu64 ", %" PRIu64, (uint64_t)get_i64(p),
		         (uint64_t)get_i64(p + sizeof(uint64_t)));
		break;
	case OT_WALLET:
	case OT_RULES:
	case OT_GROUP:
		snprintf(buf, len, "...");
		break;
	}
}

#define CELL_MAX 256

/* An aligned table with a header row; numbers and money are right-aligned. */
static void print_table(struct out_table t, const void *rows, size_t nrows, size_t stride,
                        int indent)
{
	char(*cells)[CELL_MAX] = calloc((nrows + 1) * t.n, CELL_MAX);
	size_t *width = calloc(t.n, sizeof(*width)), r, i, w;

	if (cells == NULL || width == NULL) {
		free(cells);
		free(width);
		fputs("sidecardctl: out of memory\n", stderr);
		return;
	}
	for (i = 0; i < t.n; i++)
		snprintf(cells[i], CELL_MAX, "%s", t.f[i].header);
	for (r = 0; r < nrows; r++)
		for (i = 0; i < t.n; i++)
			cell(&t.f[i], (const char *)rows + r * stride, cells[(r + 1) * t.n + i],
			     CELL_MAX);
	for (r = 0; r <= nrows; r++)
		for (i = 0; i < t.n; i++)
			if ((w = strlen(cells[r * t.n + i])) > width[i])
				width[i] = w;
	for (r = 0; r <= nrows; r++) {
		printf("%*s", indent, "");
		for (i = 0; i < t.n; i++) {
			int right = t.f[i].type == OT_MONEY || t.f[i].type == OT_INT ||
			            t.f[i].type == OT_ALERT_VALUE ||
			            t.f[i].type == OT_INT32 || t.f[i].type == OT_UINT ||
			            t.f[i].type == OT_UINT32 || t.f[i].type == OT_SIZE;
			int last = i + 1 == t.n;

			printf("%s%*s%s", i ? "  " : "", right ? (int)width[i] : 0,
			       right ? cells[r * t.n + i] : "", right ? "" : cells[r * t.n + i]);
			if (!right && !last)
				printf("%*s", (int)(width[i] - strlen(cells[r * t.n + i])), "");
		}
		putchar('\n');
	}
	free(cells);
	free(width);
}

/* "key: value" lines; a wallet and a group are nested, rules are a table. */
static void print_detail(struct out_table t, const void *obj, int indent)
{
	const char *base = obj;
	char buf[CELL_MAX];
	size_t i, w = 0;

	for (i = 0; i < t.n; i++)
		if (strlen(t.f[i].key) > w)
			w = strlen(t.f[i].key);
	for (i = 0; i < t.n; i++) {
		const struct out_field *f = &t.f[i];

		printf("%*s%s:", indent, "", f->key);
		if (f->type == OT_WALLET) {
			putchar('\n');
			print_detail(ctl_wallet_out, base + f->off, indent + 2);
		} else if (f->type == OT_GROUP) {
			putchar('\n');
			print_detail((struct out_table){ f->inner, f->n_inner }, base, indent + 2);
		} else if (f->type == OT_RULES) {
			const sc_agent *a = obj;

			if (a->n_rules == 0) {
				printf(" none\n");
			} else {
				putchar('\n');
				print_table(ctl_rule_out, a->rules, a->n_rules, sizeof(sc_rule),
				            indent + 2);
			}
		} else {
			cell(f, base, buf, sizeof(buf));
			printf("%*s %s\n", (int)(w - strlen(f->key)), "", buf);
		}
	}
}

void ctl_json_str(const char *s)
{
	sc_json_str(stdout, s, strlen(s));
}

static void json_object(struct out_table t, const void *obj);

static void json_value(const struct out_field *f, const char *base)
{
	const char *p = base + f->off;
	size_t n, i;

	if (is_null(f, base)) {
		fputs("null", stdout);
		return;
	}
	switch (f->type) {
	case OT_UINT:
		printf("%" PRIu64, (uint64_t)get_i64(p));
		break;
	case OT_UINT32:
		printf("%" PRIu32, get_u32(p));
		break;
	case OT_SIZE:
		memcpy(&n, p, sizeof(n));
		printf("%zu", n);
		break;
	case OT_INT:
	case OT_MONEY:
	case OT_TIME:
	case OT_ALERT_VALUE:
		printf("%" PRId64, get_i64(p));
		break;
	case OT_INT32:
		printf("%d", get_int(p));
		break;
	case OT_BOOL:
		fputs(get_int(p) ? "true" : "false", stdout);
		break;
	case OT_STR:
		ctl_json_str(p);
		break;
	case OT_ENUM:
		ctl_json_str(sc_names_word(f->names, (int)get_int(p)));
		break;
	case OT_ALLOWED:
		ctl_json_str(get_int(p) ? "allowed" : "blocked");
		break;
	case OT_WALLET:
		json_object(ctl_wallet_out, p);
		break;
	case OT_GROUP:
		json_object((struct out_table){ f->inner, f->n_inner }, base);
		break;
	case OT_RULES: {
		const sc_agent *a = (const sc_agent *)base;

		putchar('[');
		for (i = 0; i < a->n_rules; i++) {
			fputs(i ? ", " : "", stdout);
			json_object(ctl_rule_out, &a->rules[i]);
		}
		putchar(']');
		break;
	}
	case OT_WARNINGS: {
		const sc_decision *d = (const sc_decision *)base;

		putchar('[');
		for (i = 0; i < d->n_warnings; i++) {
			fputs(i ? ", " : "", stdout);
			ctl_json_str(d->warnings[i]);
		}
		putchar(']');
		break;
	}
	case OT_ID_PAIR:
		printf("[%" PRIu64 ", %" PRIu64 "]", (uint64_t)get_i64(p),
		       (uint64_t)get_i64(p + sizeof(uint64_t)));
		break;
	}
}

static void json_object(struct out_table t, const void *obj)
{
	size_t i;

	putchar('{');
	for (i = 0; i < t.n; i++) {
		fputs(i ? ", " : "", stdout);
		ctl_json_str(t.f[i].key);
		fputs(": ", stdout);
		json_value(&t.f[i], obj);
	}
	putchar('}');
}

void ctl_show(const struct ctx *x, struct out_table t, const void *obj)
{
	if (x->json) {
		json_object(t, obj);
		putchar('\n');
	} else {
		print_detail(t, obj, 0);
	}
}

void ctl_show_list(const struct ctx *x, struct out_table full, struct out_table cols,
                   const void *rows, size_t n, size_t stride)
{
	size_t i;

	if (!x->json) {
		print_table(cols, rows, n, stride, 0);
		return;
	}
	putchar('[');
	for (i = 0; i < n; i++) {
		fputs(i ? ",\n " : "", stdout);
		json_object(full, (const char *)rows + i * stride);
	}
	fputs("]\n", stdout);
}

void ctl_show_line(const struct ctx *x, struct out_table t, const void *obj)
{
	char buf[CELL_MAX];
	size_t i;

	if (x->json) {
		json_object(t, obj);
	} else {
		for (i = 0; i < t.n; i++) {
			cell(&t.f[i], obj, buf, sizeof(buf));
			printf("%s%s", i ? "  " : "", buf);
		}
	}
	putchar('\n');
}
