/*
 * sidecard.h: the public interface of libsidecard, the client library of the
 * sidecard spend-control daemon.
 *
 * Every name is prefixed sc_ / SC_. Functions return 0 on success or a
 * negative code: one of the SC_E* codes below, or -errno for a system error
 * (connect, read, write). sc_strerror() and sc_err_name() describe any code.
 * The same codes and names travel in the daemon's RPC error maps, so an error
 * the daemon raises arrives here as the same SC_E* value; the daemon's
 * human-readable message is kept on the connection (sc_last_error()).
 *
 * Money is always an integer number of micro-dollars (sc_micros,
 * 1 USD = 1,000,000). Nothing here uses floating point.
 *
 * Threads: an sc_client is a single blocking connection and must be used by
 * one thread at a time. Open one connection per thread (connections are
 * cheap: one Unix socket each). Distinct connections share nothing. The
 * library never aborts and never writes to stdout or stderr.
 *
 * Memory: functions that return lists allocate them; release a list with the
 * matching sc_*_free() call. Everything else is written into caller-owned
 * structures; a pointer to a single result structure may be NULL when the
 * caller only needs the return code (lists and ids need their pointers).
 */
#ifndef SIDECARD_H
#define SIDECARD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(SC_BUILDING_LIBRARY) && defined(__GNUC__)
#define SC_API __attribute__((visibility("default")))
#else
#define SC_API
#endif

#define SC_VERSION "0.1.0"
#define SC_PROTOCOL_VERSION 1

/* ----- money ----- */

typedef int64_t sc_micros;

#define SC_MICROS_PER_USD INT64_C(1000000)

/* The longest string sc_money_format() writes, with its NUL:
 * "-9223372036854.775808" is 21 characters. */
#define SC_MONEY_STRLEN 24

/*
 * Parses a decimal dollar amount exactly: "2.40" -> 2400000, "-0.000001" ->
 * -1, "1e3" or "2.4000001" (more than six decimals) -> SC_EINVAL, a value
 * that does not fit in 64 bits -> SC_ERANGE. An optional leading '$' is
 * accepted. No floating point is involved.
 */
SC_API int sc_money_parse(const char *s, sc_micros *out);

/*
 * Formats micros as dollars with the shortest exact decimal of at least two
 * places: 2400000 -> "2.40", 1 -> "0.000001". buf needs SC_MONEY_STRLEN
 * bytes. Returns buf.
 */
SC_API char *sc_money_format(sc_micros m, char *buf, size_t len);

/* ----- errors ----- */

/*
 * XX(NAME, value, wire_name, message). The codes are negative and far from
 * any errno so that -errno values can pass through the same int.
 */
#define SC_ERRNO_MAP(XX)                                                     \
	XX(INVAL, -1001, "invalid_argument", "invalid argument")             \
	XX(NOTFOUND, -1002, "not_found", "no such object")                   \
	XX(EXISTS, -1003, "already_exists", "already exists")                \
	XX(LIMIT, -1004, "limit_exceeded", "limit exceeded")                 \
	XX(UNSUPPORTED, -1005, "unsupported", "unsupported operation")       \
	XX(INTERNAL, -1006, "internal", "internal error")                    \
	XX(RANGE, -1007, "out_of_range", "value out of range")               \
	XX(PROTO, -1008, "protocol_error", "malformed message")              \
	XX(CLOSED, -1009, "connection_closed", "connection closed")          \
	XX(UNAVAILABLE, -1010, "unavailable", "temporarily unavailable")     \
	XX(DENIED, -1011, "permission_denied", "permission denied")

#define SC_XX_(name, value, wire, msg) SC_E##name = (value),
enum { SC_ERRNO_MAP(SC_XX_) };
#undef SC_XX_

/* Names and messages of any code, SC_E* or -errno. Never NULL. */
SC_API const char *sc_err_name(int code);
SC_API const char *sc_strerror(int code);
/* SC_E* code of a wire name ("not_found"), or SC_EPROTO if unknown. */
SC_API int sc_err_from_name(const char *name);

/* ----- limits of names and strings (bytes, without the NUL) ----- */

#define SC_NAME_MAX 63       /* org, agent and rule names */
#define SC_ACTION_MAX 127    /* check actions and rule match patterns */
#define SC_TYPE_MAX 15       /* check type ("api_call", ...) */
#define SC_KEY_MAX 63        /* idempotency keys and task ids */
#define SC_REASON_MAX 127    /* block reasons ("rule:<name>:daily_spend_limit") */
#define SC_RULES_MAX 32      /* rules per agent */
/*
 * Access tokens: an agent's ("sca_<agent id>_" and 43 base64url characters)
 * or a reader's ("scr_<token id>_..."), well under this.
 */
#define SC_TOKEN_MAX 127
#define SC_ROLE_MAX 15       /* "admin", "reader", "agent", "none" */

/* ----- objects ----- */

enum sc_priority { SC_PRIORITY_NORMAL, SC_PRIORITY_HIGH, SC_PRIORITY_CRITICAL };
enum sc_status { SC_STATUS_ACTIVE, SC_STATUS_THROTTLED, SC_STATUS_FROZEN };
enum sc_outcome { SC_OUTCOME_SUCCESS, SC_OUTCOME_FAILURE, SC_OUTCOME_PARTIAL };
enum sc_txn_status {
	SC_TXN_PENDING,  /* allowed, hold open */
	SC_TXN_SETTLED,  /* reported */
	SC_TXN_BLOCKED,  /* refused at check */
	SC_TXN_EXPIRED   /* hold never reported, expired after the TTL */
};
/*
 * A check's risk level: an anomaly of 10x the average cost is medium; one
 * of 100x, or a critical agent allowed past a limit, is high.
 */
enum sc_risk { SC_RISK_LOW, SC_RISK_MEDIUM, SC_RISK_HIGH };
/*
 * A wallet's budget period: at the start of each period of its org's
 * calendar (local midnight; weeks start on Monday; months on the 1st) the
 * wallet is refilled to its budget.
 */
enum sc_period { SC_PERIOD_NONE, SC_PERIOD_DAILY, SC_PERIOD_WEEKLY, SC_PERIOD_MONTHLY };

/* Text forms used on the wire and by the CLI ("normal", "frozen", ...). */
SC_API const char *sc_priority_name(enum sc_priority p);
SC_API const char *sc_status_name(enum sc_status s);
SC_API const char *sc_outcome_name(enum sc_outcome o);
SC_API const char *sc_txn_status_name(enum sc_txn_status s);
SC_API const char *sc_risk_name(enum sc_risk r);
SC_API const char *sc_period_name(enum sc_period p);
/* Reverse lookups; 0 or SC_EINVAL. */
SC_API int sc_priority_parse(const char *s, enum sc_priority *out);
SC_API int sc_status_parse(const char *s, enum sc_status *out);
SC_API int sc_outcome_parse(const char *s, enum sc_outcome *out);
SC_API int sc_txn_status_parse(const char *s, enum sc_txn_status *out);
SC_API int sc_risk_parse(const char *s, enum sc_risk *out);
SC_API int sc_period_parse(const char *s, enum sc_period *out);

/*
 * A wallet. balance is settled funds, held the sum of open holds, available
 * = balance - held (negative only for a critical agent). Limits of 0 mean
 * unlimited. daily_spent is what was charged on the current day of the
 * org's time zone. An org wallet is unlimited until it is funded (limited =
 * 0): it then gates every agent of the org. Agent wallets are always
 * limited. reserved: for an org, the part of its available funds its
 * agents' sub-budgets reserve; for an agent with a sub-budget (sub_budget),
 * what it reserves.
 */
typedef struct sc_wallet {
	sc_micros balance;
	sc_micros held;
	sc_micros available;
	sc_micros budget;
	sc_micros max_per_txn;
	sc_micros daily_spend_limit;
	sc_micros daily_spent;
	sc_micros debt;
	enum sc_period period;
	sc_micros reserved;
	int limited;    /* org wallets */
	int sub_budget; /* agent wallets */
	/* The low_balance alert's threshold of available funds; 0: a tenth of the budget. */
	sc_micros low_balance;
} sc_wallet;

/* Fields of a wallet update; set the matching SC_WALLET_SET_* bit. */
enum {
	SC_WALLET_SET_BALANCE = 1 << 0,
	SC_WALLET_SET_BUDGET = 1 << 1,
	SC_WALLET_SET_MAX_PER_TXN = 1 << 2,
	SC_WALLET_SET_DAILY_SPEND_LIMIT = 1 << 3,
	SC_WALLET_SET_DEBT = 1 << 4,
	SC_WALLET_SET_PERIOD = 1 << 5,
	SC_WALLET_SET_LOW_BALANCE = 1 << 6
};

typedef struct sc_wallet_update {
	unsigned set;
	sc_micros balance;
	sc_micros budget;
	sc_micros max_per_txn;
	sc_micros daily_spend_limit;
	sc_micros debt;
	enum sc_period period;
	sc_micros low_balance;
} sc_wallet_update;

typedef struct sc_rule {
	uint64_t id;
	char name[SC_NAME_MAX + 1];
	char match[SC_ACTION_MAX + 1];
	sc_micros max_cost_per_txn;
	sc_micros daily_spend_limit;
	int64_t hourly_rate_limit;
	/* read-only counters, filled by the daemon */
	sc_micros daily_spent;
	int64_t hourly_count;
} sc_rule;

/* Fields of a rule update; set the matching SC_RULE_SET_* bit. */
enum {
	SC_RULE_SET_NAME = 1 << 0,
	SC_RULE_SET_MATCH = 1 << 1,
	SC_RULE_SET_MAX_COST_PER_TXN = 1 << 2,
	SC_RULE_SET_DAILY_SPEND_LIMIT = 1 << 3,
	SC_RULE_SET_HOURLY_RATE_LIMIT = 1 << 4
};

typedef struct sc_org {
	uint64_t id;
	char name[SC_NAME_MAX + 1];
	uint64_t agents;
	int64_t created_at; /* microseconds since the Unix epoch, UTC */
	char timezone[64];      /* as given; "UTC" when none was */
	char timezone_rule[64]; /* the POSIX TZ rule it resolved to, which the daemon keeps */
	sc_wallet wallet;
} sc_org;

typedef struct sc_agent {
	uint64_t id;
	uint64_t org_id;
	char org[SC_NAME_MAX + 1];
	char name[SC_NAME_MAX + 1];
	enum sc_priority priority;
	enum sc_status status;
	int64_t created_at;
	sc_wallet wallet;
	size_t n_rules;
	sc_rule rules[SC_RULES_MAX];
	/*
	 * The agent's access token, filled by sc_agents_create() only (the
	 * daemon shows it once and keeps only its hash); "" everywhere else.
	 */
	char token[SC_TOKEN_MAX + 1];
} sc_agent;

/* One entry of a check's metadata: a non-empty key and a value, both strings. */
typedef struct sc_meta {
	const char *key;
	const char *value;
} sc_meta;

typedef struct sc_check_req {
	uint64_t agent_id;
	const char *action;
	sc_micros estimated_cost;
	const char *type;            /* optional: api_call, compute, data, tool, other */
	const char *idempotency_key; /* optional */
	/*
	 * Optional: the task the check counts toward, which may span the
	 * agents of the agent's org (another org's task of the same id is
	 * another task); blocked with "task:max_usage" past the daemon's
	 * --task-max-usage.
	 * Fields are only ever added at the end, so that initializers written
	 * before them still compile.
	 */
	const char *task_id;
	/*
	 * Optional: n_metadata key/value strings kept with the transaction
	 * (the wire's `metadata` map); at most 512 bytes once packed, which
	 * the daemon checks (SC_EINVAL naming `metadata`).
	 */
	const sc_meta *metadata;
	size_t n_metadata;
} sc_check_req;

/* Enough for every limit of steps 5-8 of PROTOCOL.md (ten) and both debts. */
#define SC_WARNINGS_MAX 16

typedef struct sc_decision {
	int allowed; /* 1 allowed, 0 blocked */
	uint64_t transaction_id;
	char block_reason[SC_REASON_MAX + 1]; /* "" when allowed */
	char risk_level[16];
	sc_micros available;
	int replayed; /* 1: an earlier decision returned for a repeated key */
	unsigned n_warnings; /* limits a critical agent went past */
	char warnings[SC_WARNINGS_MAX][SC_REASON_MAX + 1];
} sc_decision;

typedef struct sc_settlement {
	uint64_t transaction_id;
	enum sc_outcome outcome;
	sc_micros charged;
	sc_micros balance;
	sc_micros debt;
	int replayed;
	/* A report priced from token counts: the model and its rate's version; "" and 0 otherwise. */
	char model[SC_NAME_MAX + 1];
	uint32_t rate_version;
} sc_settlement;

/*
 * One transaction: a check, a top-up, or one side of a transfer or an
 * adjustment (type "transfer" or "adjustment", status settled). agent_id is
 * 0 for a transaction of an org's own wallet.
 */
typedef struct sc_transaction {
	uint64_t id;
	uint64_t agent_id;
	uint64_t org_id;
	uint64_t rule_id; /* 0 if no rule matched */
	char action[SC_ACTION_MAX + 1];
	char type[SC_TYPE_MAX + 1];
	enum sc_txn_status status;
	int has_outcome;
	enum sc_outcome outcome;
	sc_micros estimated_cost;
	/* Taken from the wallet; negative for money put in (a transfer's credit). */
	sc_micros charged;
	/*
	 * The balance of the wallet the transaction touched once it took effect;
	 * for a pending or blocked check, the balance when it was decided.
	 */
	sc_micros balance_after;
	char block_reason[SC_REASON_MAX + 1];
	char risk_level[16];
	enum sc_risk risk; /* risk_level, decoded */
	char idempotency_key[SC_KEY_MAX + 1];
	char task_id[SC_KEY_MAX + 1]; /* "" when the check named no task */
	/* A transfer's or an adjustment's reason (its metadata); "" for a check. */
	char reason[SC_REASON_MAX + 1];
	int64_t created_at;
	int64_t settled_at; /* 0 while pending or blocked */
	/*
	 * A report priced from token counts (sc_report_tokens): the model, the
	 * version of its rate the cost was computed with, and the tokens; "",
	 * 0, 0, 0, 0 otherwise.
	 */
	char model[SC_NAME_MAX + 1];
	uint32_t rate_version;
	uint64_t input_tokens, output_tokens, cached_input_tokens;
} sc_transaction;

/*
 * Which transactions a listing covers. sc_txn_filter_init() sets "any"
 * everywhere: agent_id and org_id 0 (any), status and risk -1 (else an
 * enum sc_txn_status, an enum sc_risk), since and until 0 (unbounded; else
 * since <= created_at < until, in microseconds since the epoch), before 0
 * (else only ids below it: pass a page's last id to get the next page),
 * limit 0 (the default, 50; at most 1000).
 */
typedef struct sc_txn_filter {
	uint64_t agent_id, org_id;
	int status;
	int risk;
	int64_t since, until;
	uint64_t before;
	unsigned limit;
} sc_txn_filter;

/* Counts by status and sums of the transactions a summary covers. */
typedef struct sc_txn_summary {
	uint64_t total, pending, settled, blocked, expired;
	sc_micros charged, estimated;
} sc_txn_summary;

/* One of the agents charged the most over a window; transactions counts its charges. */
typedef struct sc_top_agent {
	uint64_t agent_id;
	char name[SC_NAME_MAX + 1];
	sc_micros spend;
	uint64_t transactions;
} sc_top_agent;

/*
 * The fleet overview. total_spend is what every agent was charged since it
 * was created; risk_events_blocked counts checks blocked by a risk control
 * (agent_frozen, score_too_low, wallet_debt, org_debt); avg_credit_score is
 * the integer mean of the agents' scores, 0 without agents.
 */
typedef struct sc_fleet {
	uint64_t total_agents, active_agents, throttled_agents, frozen_agents;
	uint64_t risk_events_blocked, anomalies;
	sc_micros total_spend;
	int avg_credit_score;
} sc_fleet;

/*
 * An agent's kredit score (300 to 850, PROTOCOL.md "Kredit score and
 * status"), the status it drives, and the lifetime counters it is computed
 * from (the wire's `factors`). average_cost is the average charged cost of
 * the settled transactions (0 before the first); age_s the seconds since the
 * agent was created.
 */
typedef struct sc_score {
	uint64_t agent_id;
	int score;
	enum sc_status status;
	uint64_t checks;
	uint64_t blocked;
	uint64_t settled;
	uint64_t failures;  /* reports with outcome failure */
	uint64_t overruns;  /* reports whose actual cost exceeded the estimate */
	uint64_t expired;
	uint64_t anomalies; /* checks of at least 10 times the average cost */
	sc_micros average_cost;
	int64_t age_s;
} sc_score;

/*
 * What a task's checks add up to (PROTOCOL.md, tasks.usage): usage is what
 * its transactions were charged, held its open holds (open_holds of them),
 * max_usage the cap in force (0 = unlimited), checks the checks that named
 * it. created_at and last_at are microseconds since the epoch. A task
 * belongs to the org (org_id) whose agents' checks named it.
 */
typedef struct sc_task_usage {
	char task_id[SC_KEY_MAX + 1];
	uint64_t org_id;
	sc_micros usage, held, max_usage;
	uint64_t checks;
	uint32_t open_holds;
	int64_t created_at, last_at;
} sc_task_usage;

enum sc_event_type {
	SC_EVENT_STATUS_CHANGE,   /* from -> to; reason "score" or "operator" */
	SC_EVENT_ANOMALY,         /* reason: "transaction 12: 14x the average cost" */
	SC_EVENT_CRITICAL_OVERRIDE /* a critical agent allowed past limits; reason lists them */
};

/* "status_change", "anomaly", "critical_override"; "unknown" out of range. */
SC_API const char *sc_event_type_name(enum sc_event_type t);
/* 0 or SC_EINVAL. */
SC_API int sc_event_type_parse(const char *s, enum sc_event_type *out);

/* One entry of an agent's event log. */
typedef struct sc_event {
	uint64_t id;
	uint64_t agent_id;
	enum sc_event_type type;
	int64_t time;   /* microseconds since the Unix epoch, UTC */
	int score;      /* the agent's score when it happened */
	int has_status; /* 1 for a status change: from and to are set */
	enum sc_status from, to;
	char reason[SC_REASON_MAX + 1];
} sc_event;

/*
 * Alerts (PROTOCOL.md "Alerts"): each fires at most once per threshold per
 * period. low_balance: available funds below the wallet's low_balance (or a
 * tenth of its budget), critical below a fifth of that; high_velocity:
 * allowed checks of an agent in the sliding hour at or above the daemon's
 * --alert-velocity, critical at twice it; budget_exceeded (always critical):
 * spend above the budget of the wallet's period or above its daily spend
 * limit; anomaly: a check of 10x (warning) or 100x (critical) the agent's
 * average cost.
 */
enum sc_alert_kind {
	SC_ALERT_LOW_BALANCE,
	SC_ALERT_HIGH_VELOCITY,
	SC_ALERT_BUDGET_EXCEEDED,
	SC_ALERT_ANOMALY
};
enum sc_severity { SC_SEVERITY_WARNING, SC_SEVERITY_CRITICAL };

/* "low_balance", "high_velocity", "budget_exceeded", "anomaly"; "unknown" out of range. */
SC_API const char *sc_alert_kind_name(enum sc_alert_kind k);
/* "warning", "critical". */
SC_API const char *sc_severity_name(enum sc_severity s);
/* 0 or SC_EINVAL. */
SC_API int sc_alert_kind_parse(const char *s, enum sc_alert_kind *out);
SC_API int sc_severity_parse(const char *s, enum sc_severity *out);

/*
 * One alert. agent_id is 0 for an org's own wallet; transaction_id 0 when
 * no transaction crossed the threshold. value and threshold are money
 * (micro-dollars) for low_balance (available funds) and budget_exceeded
 * (spend), a count of allowed checks for high_velocity, and the ratio of
 * the estimate to the average cost for anomaly (threshold 10 or 100).
 */
typedef struct sc_alert {
	uint64_t id, agent_id, org_id, transaction_id;
	enum sc_alert_kind kind;
	enum sc_severity severity;
	sc_micros value, threshold;
	int64_t time; /* microseconds since the Unix epoch, UTC */
	char message[128];
} sc_alert;

/*
 * Which alerts a listing covers; sc_alert_filter_init() sets "any": ids 0,
 * kind and severity -1 (else an enum value), since 0 (else time >= since),
 * before 0 (else ids below it), limit 0 (the default, 50; at most 1000).
 */
typedef struct sc_alert_filter {
	uint64_t agent_id, org_id;
	int kind;
	int severity;
	int64_t since;
	uint64_t before;
	unsigned limit;
} sc_alert_filter;

/* ----- connection ----- */

typedef struct sc_client sc_client;

/*
 * The socket path used when none is given: $SIDECARD_SOCKET if set, else
 * $XDG_RUNTIME_DIR/sidecard/sidecard.sock, else /tmp/sidecard-<uid>/
 * sidecard.sock (root: /run/sidecard/sidecard.sock). Writes at most len
 * bytes; returns 0 or SC_ERANGE.
 */
SC_API int sc_default_socket_path(char *buf, size_t len);

/*
 * Trusting the daemon. Before it sends anything, sc_connect reads the uid
 * of the process behind the socket (SO_PEERCRED: who made it listen) and
 * refuses any but an expected one, since whoever could create the socket
 * first (a /tmp/sidecard-<uid> another user made) could answer every check
 * with "allowed". Expected are: root; this process's effective uid; the uid
 * in $SIDECARD_DAEMON_UID (a number or a user name); and the owner of the
 * socket's directory when only root may change the directory above it
 * (owned by root, not writable by group or others: /run/sidecard owned by
 * a `sidecard` system user, never a directory under /tmp). Anything else
 * is SC_EUNAVAILABLE with a message naming the uid found and the ones
 * expected; a $SIDECARD_DAEMON_UID that names no user is SC_EINVAL.
 * sc_peek_open holds the owner of the state file to the same rule. So a
 * token is never shown to an impostor: it is sent only after this check.
 *
 * Roles (PROTOCOL.md, "Roles"): a peer the daemon knows as an administrator
 * by its user or group needs no token. Any other peer must present one to
 * be served: an agent's token binds the connection to that agent (it may
 * gate and read for it alone), a reader's token lets it read everything
 * and change nothing. A token the daemon does not accept fails the connect
 * with SC_EDENIED; a call the connection's role may not make fails with
 * SC_EDENIED too, the connection staying usable.
 */

/*
 * Connects (path NULL: the default), checks the daemon's uid and says
 * hello, presenting $SIDECARD_TOKEN when it is set and not empty.
 */
SC_API int sc_connect(const char *path, sc_client **out);
/*
 * sc_connect, and on failure a sentence in err (errlen bytes; err may be
 * NULL): the daemon's uid that was refused, the system error, or the
 * daemon's answer to hello (a refused token: SC_EDENIED and why).
 */
SC_API int sc_connect_err(const char *path, sc_client **out, char *err, size_t errlen);
/*
 * sc_connect_err presenting token (1 to SC_TOKEN_MAX bytes; longer or empty
 * is SC_EINVAL, nothing sent) instead of $SIDECARD_TOKEN. token NULL: no
 * token, and the environment is not looked at. The library does not keep
 * the token.
 */
SC_API int sc_connect_token(const char *path, const char *token, sc_client **out, char *err,
                            size_t errlen);
SC_API void sc_close(sc_client *c);
/* The daemon's message for the last failed call, or the local reason. */
SC_API const char *sc_last_error(const sc_client *c);
/* The daemon's version string from hello. */
SC_API const char *sc_server_version(const sc_client *c);
/*
 * What hello said of this connection: its role, "admin", "reader",
 * "agent" or "none" ("" from a daemon without roles, which serves every
 * peer as an administrator); the agent it is bound to (0 unless the role
 * is "agent"); the id of the reader token it presented (0 if none).
 */
SC_API const char *sc_role(const sc_client *c);
SC_API uint64_t sc_bound_agent_id(const sc_client *c);
SC_API uint64_t sc_token_id(const sc_client *c);

/* ----- the gate ----- */

SC_API int sc_check(sc_client *c, const sc_check_req *req, sc_decision *out);

/* Most check requests sc_check_batch() keeps in flight on one connection. */
#define SC_CHECK_BATCH_WINDOW 512

/*
 * Pipelined checks: sends the n requests of reqs on this connection without
 * waiting for each answer, keeping at most SC_CHECK_BATCH_WINDOW of them in
 * flight (well under the daemon's limit of outstanding responses, 1024), and
 * returns when every one is answered. The daemon answers in request order
 * and evaluates them in that order, exactly as n sc_check() calls would.
 *
 * Each request has its own result: rcs[i] is what sc_check() would have
 * returned for reqs[i] (0 with a decision, allowed or blocked, in outs[i];
 * or an SC_E* code: a request the library refuses, such as a NULL action,
 * is SC_EINVAL and never sent; an error of the daemon's is its code, and the
 * requests after it are still made). sc_last_error() gives the message of
 * the last request that failed.
 *
 * Returns 0 when every request was answered (look at rcs), SC_EINVAL for
 * NULL arrays, or the transport failure that ended the connection, as
 * sc_check() would. After a transport failure the requests already answered
 * keep their rcs and outs; every other rcs[i] holds that failure, and such a
 * request may or may not have been gated (give the checks idempotency keys
 * to retry them safely on a new connection).
 */
SC_API int sc_check_batch(sc_client *c, const sc_check_req *reqs, size_t n, sc_decision *outs,
                          int *rcs);
/* has_actual = 0: the daemon's default (estimate for success, 0 for failure). */
SC_API int sc_report(sc_client *c, uint64_t transaction_id, enum sc_outcome outcome,
                     int has_actual, sc_micros actual_cost, sc_settlement *out);

/*
 * The token counts of a report priced by the daemon: model names a model of
 * the rate table (sc_pricing_set); the counts are at most INT64_MAX.
 */
typedef struct sc_tokens {
	const char *model;
	uint64_t input_tokens, output_tokens, cached_input_tokens;
} sc_tokens;

/*
 * Settles a hold with the cost of tokens at the model's rate in force when
 * the check was made: ceil(sum of tokens x rate per million / 1,000,000)
 * micros, whatever the outcome (tokens used are paid, on failure too). out
 * carries the model and the rate's version. SC_ENOTFOUND (nothing changed)
 * when the model had no rate in force then; SC_ERANGE when the cost does
 * not fit in 64 bits.
 */
SC_API int sc_report_tokens(sc_client *c, uint64_t transaction_id, enum sc_outcome outcome,
                            const sc_tokens *t, sc_settlement *out);

/* ----- pricing: versioned rates per model ----- */

/*
 * One version of a model's rates, in micro-dollars per million tokens
 * ("2.50" dollars per million is 2500000). Versions count 1, 2, ... per
 * model and are never changed; the one in force at a time t is the one with
 * the greatest effective_from <= t (the higher version on a tie).
 */
typedef struct sc_price {
	char model[SC_NAME_MAX + 1];
	uint32_t version;
	sc_micros input, output, cached_input;
	int64_t effective_from, created_at; /* microseconds since the epoch, UTC */
} sc_price;

/*
 * Adds the model's next rate version. cached_input NULL: the same as
 * input; effective_from NULL: now (it may be in the past or the future).
 * SC_ELIMIT when the daemon's table of versions (--prices) is full.
 */
SC_API int sc_pricing_set(sc_client *c, const char *model, sc_micros input, sc_micros output,
                          const sc_micros *cached_input, const int64_t *effective_from,
                          sc_price *out);
/* Every version (model NULL) or one model's (SC_ENOTFOUND if it has none), by model, version. */
SC_API int sc_pricing_list(sc_client *c, const char *model, sc_price **out, size_t *n);
SC_API void sc_prices_free(sc_price *list);
/* The version in force at *at (NULL: now); SC_ENOTFOUND if none is. */
SC_API int sc_pricing_get(sc_client *c, const char *model, const int64_t *at, sc_price *out);

/* ----- management ----- */

SC_API int sc_orgs_create(sc_client *c, const char *name, sc_org *out);
SC_API int sc_orgs_list(sc_client *c, sc_org **out, size_t *n);
SC_API void sc_orgs_free(sc_org *list);

/*
 * org is an org name or decimal id; wallet and rules may be NULL/0. Rule ids
 * and counters in rules[] are ignored. out->token is the agent's access
 * token, shown only here: with out NULL it is lost, and only
 * sc_agents_rotate_token() gives the agent a usable one.
 */
SC_API int sc_agents_create(sc_client *c, const char *org, const char *name,
                            enum sc_priority priority, const sc_wallet_update *wallet,
                            const sc_rule *rules, size_t n_rules, sc_agent *out);
SC_API int sc_agents_get(sc_client *c, uint64_t agent_id, sc_agent *out);
/* org_id 0: every org. */
SC_API int sc_agents_list(sc_client *c, uint64_t org_id, sc_agent **out, size_t *n);
SC_API void sc_agents_free(sc_agent *list);
/* name NULL, priority/status < 0: unchanged. */
SC_API int sc_agents_update(sc_client *c, uint64_t agent_id, const char *name, int priority,
                            int status, sc_agent *out);
SC_API int sc_agents_delete(sc_client *c, uint64_t agent_id);
/*
 * Gives the agent a new access token, written to token, and revokes the
 * old one at once, also on connections already bound with it. token may
 * not be NULL (SC_EINVAL, nothing sent): the new token is shown only here.
 */
SC_API int sc_agents_rotate_token(sc_client *c, uint64_t agent_id,
                                  char token[SC_TOKEN_MAX + 1]);

/*
 * A token an administrator issued (tokens.create). `token` itself is
 * filled by sc_tokens_create() only, the one time the daemon shows it (it
 * keeps only a hash); a listing leaves it "". name is "" when none was
 * given; created_at is in microseconds since the epoch.
 */
typedef struct sc_access_token {
	uint64_t token_id;
	char role[SC_ROLE_MAX + 1];
	char name[SC_NAME_MAX + 1];
	int64_t created_at;
	char token[SC_TOKEN_MAX + 1];
} sc_access_token;

/*
 * Issues a token of role ("reader": reads everything, changes nothing),
 * named name (NULL: unnamed). role and out may not be NULL (SC_EINVAL,
 * nothing sent).
 */
SC_API int sc_tokens_create(sc_client *c, const char *role, const char *name,
                            sc_access_token *out);
/* Every token issued and not revoked, by id; never the tokens themselves. */
SC_API int sc_tokens_list(sc_client *c, sc_access_token **out, size_t *n);
SC_API void sc_access_tokens_free(sc_access_token *list);
/*
 * Revokes a token at once: no hello accepts it any more, and connections
 * that presented it are refused from their next call. SC_ENOTFOUND for an
 * unknown id.
 */
SC_API int sc_tokens_revoke(sc_client *c, uint64_t token_id);

SC_API int sc_rules_add(sc_client *c, uint64_t agent_id, const sc_rule *rule, sc_rule *out);
SC_API int sc_rules_list(sc_client *c, uint64_t agent_id, sc_rule **out, size_t *n);
SC_API void sc_rules_free(sc_rule *list);
SC_API int sc_rules_update(sc_client *c, uint64_t agent_id, uint64_t rule_id, unsigned set,
                           const sc_rule *rule, sc_rule *out);
SC_API int sc_rules_remove(sc_client *c, uint64_t agent_id, uint64_t rule_id);

SC_API int sc_wallets_get(sc_client *c, uint64_t agent_id, sc_wallet *out);
SC_API int sc_wallets_update(sc_client *c, uint64_t agent_id, const sc_wallet_update *u,
                             sc_wallet *out);
SC_API int sc_org_wallet_get(sc_client *c, uint64_t org_id, sc_wallet *out);
SC_API int sc_org_wallet_update(sc_client *c, uint64_t org_id, const sc_wallet_update *u,
                                sc_wallet *out);

/*
 * A wallet named by its owner: an agent (agent_id) or an org's shared
 * wallet (org_id). Exactly one of the two is non-zero.
 */
typedef struct sc_wallet_ref {
	uint64_t agent_id, org_id;
} sc_wallet_ref;

/*
 * Moves amount (> 0) from one wallet to another of the same org (two
 * agents, or an agent and the org's wallet), atomically, recording reason
 * (1 to SC_REASON_MAX bytes) on a debit and a credit transaction of type
 * "transfer". SC_EINVAL if amount exceeds the source's available funds
 * (balance minus open holds), if the wallets are of different orgs or the
 * same, or if a ref does not name exactly one owner. A transfer into an org
 * wallet makes it limited. On success fills, where not NULL, both wallets
 * as they are after it and txn_ids with the ids of the debit and the credit.
 */
SC_API int sc_wallets_transfer(sc_client *c, sc_wallet_ref from, sc_wallet_ref to,
                               sc_micros amount, const char *reason, sc_wallet *from_after,
                               sc_wallet *to_after, uint64_t txn_ids[2]);

/*
 * An operator's correction of a wallet's balance, with its reason: a
 * positive amount credits it, a negative one debits it, at most down to 0
 * (SC_EINVAL beyond; 0 is SC_EINVAL too). Recorded as a transaction of type
 * "adjustment"; adjusting an org wallet makes it limited. after and txn_id
 * may be NULL.
 */
SC_API int sc_wallets_adjust(sc_client *c, sc_wallet_ref w, sc_micros amount, const char *reason,
                             sc_wallet *after, uint64_t *txn_id);

/*
 * Carves a sub-budget for an agent from its org's wallet: the agent's
 * balance grows by amount (> 0) and its available funds are reserved in the
 * org's wallet for it alone, so other agents of the org cannot spend them.
 * SC_EINVAL when the org's wallet is unlimited or amount plus what the
 * agent already has available exceeds the org's unreserved available
 * funds. Recorded as a "carve" transaction with reason. Any of the outputs
 * may be NULL.
 */
SC_API int sc_wallets_carve(sc_client *c, uint64_t agent_id, sc_micros amount, const char *reason,
                            sc_wallet *agent_after, sc_wallet *org_after, uint64_t *txn_id);
/* Ends an agent's sub-budget: what it reserved returns to its org's shared funds. */
SC_API int sc_wallets_release(sc_client *c, uint64_t agent_id, sc_wallet *agent_after,
                              sc_wallet *org_after);

/*
 * What a wallet was charged, in total and in the current day, week (from
 * Monday) and month of its org's time zone, and when each period ends
 * (microseconds since the epoch). period_reset_at is when the wallet's
 * budget period next refills it, 0 when it has none.
 */
typedef struct sc_spend {
	sc_micros total, daily, weekly, monthly, held, budget;
	enum sc_period period;
	char timezone[64];
	int64_t daily_reset_at, weekly_reset_at, monthly_reset_at, period_reset_at;
} sc_spend;
SC_API int sc_spend_get(sc_client *c, sc_wallet_ref w, sc_spend *out);

/*
 * Creates an org whose calendar (daily limits, budget periods, spend per
 * day, week and month) follows a time zone: an IANA name such as
 * "Europe/Paris", a POSIX TZ rule, or NULL/"UTC". sc_orgs_create() is this
 * with UTC. sc_orgs_set_timezone() changes it: the current periods are
 * recomputed from the moment of the change.
 */
SC_API int sc_orgs_create_tz(sc_client *c, const char *name, const char *timezone, sc_org *out);
SC_API int sc_orgs_set_timezone(sc_client *c, uint64_t org_id, const char *timezone, sc_org *out);

/*
 * Transactions of the kept history (daemon option --history), newest first.
 * sc_transactions_list() is sc_transactions_query() with only those three
 * filters: agent_id 0 and status < 0 mean any, limit 0 the default (50).
 * f NULL: no filter.
 */
SC_API void sc_txn_filter_init(sc_txn_filter *f);
SC_API int sc_transactions_query(sc_client *c, const sc_txn_filter *f, sc_transaction **out,
                                 size_t *n);
SC_API int sc_transactions_list(sc_client *c, uint64_t agent_id, int status, unsigned limit,
                                sc_transaction **out, size_t *n);
SC_API void sc_transactions_free(sc_transaction *list);
/* Over the kept history; only agent_id, org_id, since and until of f apply (NULL: all). */
SC_API int sc_transactions_summary(sc_client *c, const sc_txn_filter *f, sc_txn_summary *out);

/*
 * The agents charged the most over [since, until) (0: unbounded), most
 * first, from the kept history. org_id 0: every org; limit 0: the default
 * (10), at most 100. Agents that were not charged are not listed.
 */
SC_API int sc_agents_top(sc_client *c, uint64_t org_id, int64_t since, int64_t until,
                         unsigned limit, sc_top_agent **out, size_t *n);
SC_API void sc_top_agents_free(sc_top_agent *list);

SC_API int sc_fleet_get(sc_client *c, sc_fleet *out);

/*
 * A task's usage. SC_ENOTFOUND for a task the daemon does not know: none
 * of its checks named it, or it was forgotten (daemon option --tasks keeps
 * the most recently used, those with open holds always).
 */
SC_API int sc_tasks_usage(sc_client *c, const char *task_id, sc_task_usage *out);
/*
 * The same for the task of org org_id. sc_tasks_usage names no org and is
 * SC_EINVAL when tasks of several orgs have that id.
 */
SC_API int sc_tasks_usage_org(sc_client *c, uint64_t org_id, const char *task_id,
                              sc_task_usage *out);

/* ----- kredit score and events ----- */

SC_API int sc_score_get(sc_client *c, uint64_t agent_id, sc_score *out);
/* Newest first; limit 0 means the default (50), at most 1000. */
SC_API int sc_agents_events(sc_client *c, uint64_t agent_id, unsigned limit, sc_event **out,
                            size_t *n);
SC_API void sc_events_free(sc_event *list);

/* ----- alerts ----- */

SC_API void sc_alert_filter_init(sc_alert_filter *f);
/* The alerts the daemon keeps (--alerts), newest first; f NULL: any. */
SC_API int sc_alerts_list(sc_client *c, const sc_alert_filter *f, sc_alert **out, size_t *n);
SC_API void sc_alerts_free(sc_alert *list);

/*
 * Subscribes this connection to alerts: from now on the daemon pushes every
 * new alert, in id order, as a notification, which sc_alert_next() returns.
 * last_id (may be NULL) receives the id of the newest alert before the
 * subscription. A subscription ends with the connection (a reconnect or a
 * daemon restart does not resubscribe) or with sc_alerts_unsubscribe().
 *
 * Alerts that arrive while another call waits for its response are queued
 * on the client (the newest 64); when the queue is full the oldest is
 * dropped and counted (sc_alerts_dropped()).
 */
SC_API int sc_alerts_subscribe(sc_client *c, uint64_t *last_id);
SC_API int sc_alerts_unsubscribe(sc_client *c);
/*
 * The next pushed alert: a queued one at once, else waits up to timeout_ms
 * (< 0: without limit) for one. Returns 0, -ETIMEDOUT when none came in
 * time, -EINTR when a signal interrupted the wait, or a transport error.
 */
SC_API int sc_alert_next(sc_client *c, int timeout_ms, sc_alert *out);
/* Alerts this client dropped from its full queue. */
SC_API uint64_t sc_alerts_dropped(const sc_client *c);

/* One named counter of the stats method; SC_ENOTFOUND if there is none. */
SC_API int sc_stat(sc_client *c, const char *name, int64_t *out);

/* ----- peek: wallets read from the shared mapping, without the daemon ----- */

/*
 * The daemon keeps its state in a file (by default beside its socket, the
 * socket's name with .shm for .sock: sidecard.shm) that any process allowed
 * to read it may map read-only. An sc_peek is such a mapping: a wallet read
 * through it costs tens of nanoseconds and no system call, instead of a
 * round trip over the socket. What it returns is a consistent snapshot of
 * the agent's record at one moment (every record carries a sequence counter
 * the reader checks), the same values `wallets.get` would have answered
 * then.
 *
 * Threads: an sc_peek is read-only once open; any number of threads may
 * read through the same one at once. Close it only once none does.
 *
 * Errors of sc_peek_open* are SC_EUNAVAILABLE with the cause in err: the
 * file is not visible (a container that mounts neither it nor the socket's
 * directory, or a daemon run with --segment elsewhere), not readable (the
 * daemon creates it mode 0600, readable by its user alone, or 0640 in the
 * readers' group when it has one), owned by a uid not expected to be the
 * daemon's (see "Trusting the daemon" above), of another layout version
 * than this library's, or not served (the daemon is stopped or still
 * starting). Callers then use the socket. A
 * mapping may stop being usable later: reads return SC_EUNAVAILABLE and
 * sc_peek_unavailable() says why; when the daemon replaced its state file
 * (it rebuilt the state after a crash) the mapping shows the old file
 * forever, so close it and open the path again.
 */
typedef struct sc_peek sc_peek;

/*
 * What sc_peek_wallet and sc_peek_org_wallet return: the wallet's money and limits as in
 * sc_wallet, and the agent's status. daily_spent is what was charged on
 * the current day of the org's calendar (0 once that day is over).
 */
typedef struct sc_wallet_snapshot {
	uint64_t id;     /* the agent's (or, from sc_peek_org_wallet, the org's) */
	uint64_t org_id;
	enum sc_status status; /* the agent's; an org's is always active */
	sc_micros balance;
	sc_micros held;
	sc_micros available; /* balance - held */
	sc_micros budget;
	sc_micros max_per_txn;       /* 0 = unlimited */
	sc_micros daily_spend_limit; /* 0 = unlimited */
	sc_micros daily_spent;
	sc_micros debt;
	int limited; /* an org's wallet gates its agents only once funded (sc_wallet) */
} sc_wallet_snapshot;

/* Maps the state file at state_path. 0 or SC_EUNAVAILABLE (err: why; may be NULL). */
SC_API int sc_peek_open(const char *state_path, sc_peek **out, char *err, size_t errlen);
/*
 * Maps the state file of the daemon c is connected to (the `state_path` of
 * its `stats`). A failure of the call itself returns its code with
 * sc_last_error(c); a file that cannot be mapped is SC_EUNAVAILABLE as
 * above.
 */
SC_API int sc_peek_open_client(sc_client *c, sc_peek **out, char *err, size_t errlen);
/* Unmaps. NULL is a no-op. */
SC_API void sc_peek_close(sc_peek *p);

/*
 * The wallet of agent agent_id. Returns 0; SC_ENOTFOUND for an agent that
 * does not exist (never created, or deleted); SC_EUNAVAILABLE when the
 * mapping no longer shows a served state (sc_peek_unavailable()); -EAGAIN
 * when the record stayed in the middle of a change for the whole wait
 * (about 100 ms; a daemon that died while writing it): ask the daemon
 * instead. A read that races a change waits for it, spinning briefly then
 * yielding the processor, so it never returns a half-written wallet.
 */
SC_API int sc_peek_wallet(const sc_peek *p, uint64_t agent_id, sc_wallet_snapshot *out);
/* The shared wallet of org org_id (status active); the same returns. */
SC_API int sc_peek_org_wallet(const sc_peek *p, uint64_t org_id, sc_wallet_snapshot *out);
/*
 * NULL while the daemon serves the mapped file; otherwise why reads return
 * SC_EUNAVAILABLE (a constant string): the daemon stopped or is starting
 * (the same file may be served again), or it replaced the file (reopen).
 */
SC_API const char *sc_peek_unavailable(const sc_peek *p);

#ifdef __cplusplus
}
#endif

#endif /* SIDECARD_H */
