/*
 * sidecardctl.c: the command-line client of sidecard, built on libsidecard.
 *
 *     sidecardctl [--socket PATH] [--json] VERB [SUBVERB] [--flag=value | --flag value]...
 *
 * The verbs follow Kredit's CLI (orgs, agents, rules, wallet, check, report,
 * score, transactions, fleet, stats). Dollar amounts are read with
 * sc_money_parse() and shown with sc_money_format(); --json prints one JSON
 * document whose money fields are integer micro-dollars, exactly as on the
 * wire. Times (--since, --until) are read as ISO-8601 UTC to the second
 * ("2026-11-24T10:00:00Z") or as integer microseconds since the epoch, the
 * wire's unit; JSON shows them in microseconds.
 *
 * Exit status: 0 success (check: allowed), 1 check blocked or ledger
 * corrupt, 2 any error (usage, connection, daemon error). `check` prints the
 * transaction id alone on stdout so that a hook can write
 * TXN=$(sidecardctl check ...).
 *
 * `ledger verify` and `ledger export` do not talk to the daemon: they read
 * the ledger files of a state directory (sidecard/ledger_format.c) with
 * ledger_scan() and never modify them, so they are safe beside a running
 * daemon and on a copy taken from a dead host.
 *
 * DESIGN. Three tables drive everything: `options` (every flag, its value
 * kind and how it is parsed), `commands` (verb, subverb, the flags it
 * accepts and requires, its handler) and the output field tables, which
 * describe each object once for the human detail view, the human table view
 * and JSON. Flags are validated against the command before it runs, so a
 * handler only reads parsed values.
 *
 * Threads: one. Ownership: lists from libsidecard are freed by the handler
 * that asked for them; the connection is closed in main().
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ledger.h"
#include "sidecard.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

#define EXIT_BLOCKED 1
#define EXIT_ERROR 2

/* ----- options ----- */

/* In the order flags are listed in usage: ids, then what a command is about, then limits. */
enum opt {
	O_AGENT_ID,
	O_ORG_ID,
	O_RULE_ID,
	O_TRANSACTION_ID,
	O_ORG,
	O_NAME,
	O_MATCH,
	O_ACTION,
	O_ESTIMATED_COST,
	O_OUTCOME,
	O_ACTUAL_COST,
	O_TYPE,
	O_IDEMPOTENCY_KEY,
	O_PRIORITY,
	O_STATUS,
	O_TXN_STATUS,
	O_RISK_LEVEL,
	O_BALANCE,
	O_BUDGET,
	O_MAX_PER_TXN,
	O_MAX_COST_PER_TXN,
	O_DAILY_SPEND_LIMIT,
	O_HOURLY_RATE_LIMIT,
	O_DEBT,
	O_RULE,
	O_SINCE,
	O_UNTIL,
	O_BEFORE,
	O_LIMIT,
	O_STATE_DIR,
	O_FROM,
	O_COUNT_
};

#define BIT(o) (UINT64_C(1) << (o))

enum kind {
	K_STR,        /* text, at most `max` bytes */
	K_ID,         /* a positive integer */
	K_MONEY,      /* dollars */
	K_NUMBER,     /* a non-negative integer */
	K_PRIORITY,   /* normal, high, critical */
	K_STATUS,     /* active, throttled, frozen */
	K_TXN_STATUS, /* pending, settled, blocked, expired */
	K_RISK,       /* low, medium, high */
	K_TIME,       /* ISO-8601 UTC or microseconds, after the epoch */
	K_OUTCOME,    /* success, failure, partial, or a command's exit status */
	K_RULE,       /* name=...,match=...,limits; repeatable */
};

static const struct option_def {
	const char *flag;
	enum kind kind;
	const char *meta;
	size_t max;
} options[O_COUNT_] = {
	[O_NAME] = { "name", K_STR, "NAME", SC_NAME_MAX },
	[O_ORG] = { "org", K_STR, "ORG", SC_NAME_MAX },
	[O_PRIORITY] = { "priority", K_PRIORITY, "normal|high|critical", 0 },
	[O_STATUS] = { "status", K_STATUS, "active|throttled|frozen", 0 },
	[O_BALANCE] = { "balance", K_MONEY, "$", 0 },
	[O_BUDGET] = { "budget", K_MONEY, "$", 0 },
	[O_MAX_PER_TXN] = { "max-per-txn", K_MONEY, "$", 0 },
	[O_DAILY_SPEND_LIMIT] = { "daily-spend-limit", K_MONEY, "$", 0 },
	[O_DEBT] = { "debt", K_MONEY, "$", 0 },
	[O_RULE] = { "rule", K_RULE, "'name=N,match=M[,max-cost-per-txn=$][,daily-spend-limit=$]"
	                             "[,hourly-rate-limit=N]'", 0 },
	[O_AGENT_ID] = { "agent-id", K_ID, "ID", 0 },
	[O_ORG_ID] = { "org-id", K_ID, "ID", 0 },
	[O_RULE_ID] = { "rule-id", K_ID, "ID", 0 },
	[O_MATCH] = { "match", K_STR, "PATTERN", SC_ACTION_MAX },
	[O_MAX_COST_PER_TXN] = { "max-cost-per-txn", K_MONEY, "$", 0 },
	[O_HOURLY_RATE_LIMIT] = { "hourly-rate-limit", K_NUMBER, "N", 0 },
	[O_ACTION] = { "action", K_STR, "ACTION", SC_ACTION_MAX },
	[O_ESTIMATED_COST] = { "estimated-cost", K_MONEY, "$", 0 },
	[O_TYPE] = { "type", K_STR, "api_call|compute|data|tool|other", SC_TYPE_MAX },
	[O_IDEMPOTENCY_KEY] = { "idempotency-key", K_STR, "KEY", SC_KEY_MAX },
	[O_TRANSACTION_ID] = { "transaction-id", K_ID, "ID", 0 },
	[O_OUTCOME] = { "outcome", K_OUTCOME, "success|failure|partial", 0 },
	[O_ACTUAL_COST] = { "actual-cost", K_MONEY, "$", 0 },
	[O_TXN_STATUS] = { "status", K_TXN_STATUS, "pending|settled|blocked|expired", 0 },
	[O_RISK_LEVEL] = { "risk-level", K_RISK, "low|medium|high", 0 },
	[O_SINCE] = { "since", K_TIME, "TIME", 0 },
	[O_UNTIL] = { "until", K_TIME, "TIME", 0 },
	[O_BEFORE] = { "before", K_ID, "ID", 0 },
	[O_LIMIT] = { "limit", K_NUMBER, "N", 0 },
	[O_STATE_DIR] = { "state-dir", K_STR, "DIR", 3072 },
	[O_FROM] = { "from", K_NUMBER, "SEQ", 0 },
};

/* The parsed flags of one command line. */
struct opts {
	uint64_t given;
	const char *str[O_COUNT_];
	int64_t num[O_COUNT_]; /* ids, money, numbers and enum values */
	sc_rule rules[SC_RULES_MAX];
	size_t n_rules;
};

struct ctx {
	sc_client *c;
	int json;
	const char *what; /* "agents create", for messages */
	const struct command *cmd;
};

struct command {
	const char *verb, *sub;
	int (*run)(struct ctx *x, const struct opts *o);
	uint64_t allowed, required;
	const char *help;
};

static int usage_error(const struct ctx *x, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int usage_error(const struct ctx *x, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "sidecardctl: %s%s", x->what ? x->what : "", x->what ? ": " : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\n(see sidecardctl --help)\n", stderr);
	return EXIT_ERROR;
}

/* A failed library call: "sidecardctl: <what>: <daemon message>". */
static int call_error(const struct ctx *x, int rc)
{
	const char *msg = sc_last_error(x->c);

	fprintf(stderr, "sidecardctl: %s: %s\n", x->what, msg[0] ? msg : sc_strerror(rc));
	return EXIT_ERROR;
}

static int parse_uint(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	const char *p = s;

	if (*p == '\0')
		return -1;
	for (; *p; p++)
		if (*p < '0' || *p > '9' || __builtin_mul_overflow(v, 10, &v) ||
		    __builtin_add_overflow(v, (uint64_t)(*p - '0'), &v))
			return -1;
	*out = v;
	return 0;
}

/* Days from 1970-01-01 to y-m-d, proleptic Gregorian (Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
	int64_t era, yoe, doy;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	return era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
}

/*
 * A time as the wire has it, microseconds since the epoch: either those
 * digits, or "YYYY-MM-DDTHH:MM:SSZ" in UTC (a space may stand for the T, as
 * the tables print times). Only times after the epoch: 0 means "unbounded"
 * to the library.
 */
static int parse_time(const char *s, int64_t *out)
{
	static const char form[] = "0000-00-00T00:00:00Z";
	static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	int64_t f[6] = { 0 }, t;
	uint64_t us;
	size_t i, k;

	if (parse_uint(s, &us) == 0) {
		if (us == 0 || us > INT64_MAX)
			return -1;
		*out = (int64_t)us;
		return 0;
	}
	if (strlen(s) != sizeof(form) - 1)
		return -1;
	for (i = 0, k = 0; form[i]; i++) {
		if (form[i] == '0') {
			if (s[i] < '0' || s[i] > '9')
				return -1;
			f[k] = f[k] * 10 + (s[i] - '0');
		} else if (s[i] == form[i] || (form[i] == 'T' && s[i] == ' ')) {
			k++;
		} else {
			return -1;
		}
	}
	if (f[1] < 1 || f[1] > 12 || f[2] < 1 || f[2] > mdays[f[1] - 1] || f[3] > 23 ||
	    f[4] > 59 || f[5] > 59)
		return -1;
	if (f[1] == 2 && f[2] == 29 && (f[0] % 4 != 0 || (f[0] % 100 == 0 && f[0] % 400 != 0)))
		return -1;
	t = ((days_from_civil(f[0], f[1], f[2]) * 24 + f[3]) * 60 + f[4]) * 60 + f[5];
	if (t <= 0)
		return -1;
	*out = t * 1000000;
	return 0;
}

/* Copies a flag's text into a fixed array, or says which flag is too long. */
static int copy_text(const struct ctx *x, const char *flag, const char *s, char *dst, size_t cap)
{
	if (strlen(s) >= cap)
		return usage_error(x, "--%s: longer than %zu bytes", flag, cap - 1);
	memcpy(dst, s, strlen(s) + 1);
	return 0;
}

/* The keys of a --rule specification; '_' may stand for '-'. */
static const struct {
	const char *key;
	unsigned set;
} rule_keys[] = {
	{ "name", SC_RULE_SET_NAME },
	{ "match", SC_RULE_SET_MATCH },
	{ "max-cost-per-txn", SC_RULE_SET_MAX_COST_PER_TXN },
	{ "daily-spend-limit", SC_RULE_SET_DAILY_SPEND_LIMIT },
	{ "hourly-rate-limit", SC_RULE_SET_HOURLY_RATE_LIMIT },
};

static int same_key(const char *key, const char *s, size_t len)
{
	size_t i;

	if (strlen(key) != len)
		return 0;
	for (i = 0; i < len; i++)
		if (key[i] != (s[i] == '_' ? '-' : s[i]))
			return 0;
	return 1;
}

/* Stores one key=value of a --rule into r. */
static int rule_item(const struct ctx *x, const char *item, size_t len, sc_rule *r, unsigned *set)
{
	const char *eq = memchr(item, '=', len);
	char value[SC_ACTION_MAX + 2];
	size_t klen, i;
	uint64_t n;

	if (eq == NULL)
		return usage_error(x, "--rule: '%.*s' is not key=value", (int)len, item);
	klen = (size_t)(eq - item);
	if (len - klen - 1 >= sizeof(value))
		return usage_error(x, "--rule: value of '%.*s' too long", (int)klen, item);
	memcpy(value, eq + 1, len - klen - 1);
	value[len - klen - 1] = '\0';
	for (i = 0; i < COUNT(rule_keys); i++)
		if (same_key(rule_keys[i].key, item, klen))
			break;
	if (i == COUNT(rule_keys))
		return usage_error(x, "--rule: unknown key '%.*s'", (int)klen, item);
	*set |= rule_keys[i].set;
	switch (rule_keys[i].set) {
	case SC_RULE_SET_NAME:
		return copy_text(x, "rule name", value, r->name, sizeof(r->name));
	case SC_RULE_SET_MATCH:
		return copy_text(x, "rule match", value, r->match, sizeof(r->match));
	case SC_RULE_SET_MAX_COST_PER_TXN:
	case SC_RULE_SET_DAILY_SPEND_LIMIT:
		if (sc_money_parse(value, rule_keys[i].set == SC_RULE_SET_MAX_COST_PER_TXN
		                                  ? &r->max_cost_per_txn
		                                  : &r->daily_spend_limit) != 0)
			return usage_error(x, "--rule: %s: invalid dollar amount '%s'",
			                   rule_keys[i].key, value);
		return 0;
	default:
		if (parse_uint(value, &n) != 0 || n > INT64_MAX)
			return usage_error(x, "--rule: %s: not a count: '%s'", rule_keys[i].key,
			                   value);
		r->hourly_rate_limit = (int64_t)n;
		return 0;
	}
}

static int parse_rule(const struct ctx *x, const char *spec, struct opts *o)
{
	sc_rule *r;
	unsigned set = 0;
	const char *p = spec, *comma;
	int rc;

	if (o->n_rules == SC_RULES_MAX)
		return usage_error(x, "--rule: at most %d rules", SC_RULES_MAX);
	r = &o->rules[o->n_rules];
	memset(r, 0, sizeof(*r));
	for (;;) {
		comma = strchr(p, ',');
		rc = rule_item(x, p, comma ? (size_t)(comma - p) : strlen(p), r, &set);
		if (rc != 0)
			return rc;
		if (comma == NULL)
			break;
		p = comma + 1;
	}
	if (!(set & SC_RULE_SET_NAME) || !(set & SC_RULE_SET_MATCH))
		return usage_error(x, "--rule: needs name= and match=: '%s'", spec);
	o->n_rules++;
	return 0;
}

/* Parses the value of option i. */
static int parse_value(const struct ctx *x, enum opt i, const char *v, struct opts *o)
{
	const struct option_def *d = &options[i];
	enum sc_priority pr = SC_PRIORITY_NORMAL;
	enum sc_status st = SC_STATUS_ACTIVE;
	enum sc_txn_status ts = SC_TXN_PENDING;
	enum sc_outcome oc = SC_OUTCOME_SUCCESS;
	enum sc_risk rk = SC_RISK_LOW;
	uint64_t n;
	int rc = 0;

	switch (d->kind) {
	case K_STR:
		if (v[0] == '\0' || strlen(v) > d->max)
			return usage_error(x, "--%s: must be 1 to %zu bytes", d->flag, d->max);
		break;
	case K_ID:
		if (parse_uint(v, &n) != 0 || n == 0 || n > INT64_MAX)
			return usage_error(x, "--%s: not an id: '%s'", d->flag, v);
		o->num[i] = (int64_t)n;
		break;
	case K_NUMBER:
		if (parse_uint(v, &n) != 0 || n > INT64_MAX)
			return usage_error(x, "--%s: not a non-negative integer: '%s'", d->flag, v);
		o->num[i] = (int64_t)n;
		break;
	case K_MONEY:
		rc = sc_money_parse(v, &o->num[i]);
		if (rc != 0)
			return usage_error(x, "--%s: invalid dollar amount '%s' (%s)", d->flag, v,
			                   rc == SC_ERANGE ? "too large" : "expected e.g. 2.40");
		break;
	case K_PRIORITY:
		rc = sc_priority_parse(v, &pr);
		o->num[i] = pr;
		break;
	case K_STATUS:
		rc = sc_status_parse(v, &st);
		o->num[i] = st;
		break;
	case K_TXN_STATUS:
		rc = sc_txn_status_parse(v, &ts);
		o->num[i] = ts;
		break;
	case K_RISK:
		rc = sc_risk_parse(v, &rk);
		o->num[i] = rk;
		break;
	case K_TIME:
		if (parse_time(v, &o->num[i]) != 0)
			return usage_error(x, "--%s: not a time after the epoch: '%s' (expected "
			                      "2026-11-24T10:00:00Z, UTC, or microseconds)",
			                   d->flag, v);
		break;
	case K_OUTCOME:
		/* A hook may pass its command's exit status: 0 success, else failure. */
		if (parse_uint(v, &n) == 0)
			oc = n == 0 ? SC_OUTCOME_SUCCESS : SC_OUTCOME_FAILURE;
		else
			rc = sc_outcome_parse(v, &oc);
		o->num[i] = oc;
		break;
	case K_RULE:
		return parse_rule(x, v, o);
	}
	if (rc != 0)
		return usage_error(x, "--%s: must be one of %s, not '%s'", d->flag, d->meta, v);
	o->str[i] = v;
	return 0;
}

/* Parses "--flag=value" or "--flag value" (value in next) against the command's flags. */
static int parse_flag(const struct ctx *x, const char *arg, const char *next, int *used_next,
                      struct opts *o)
{
	const char *name = arg + 2, *eq = strchr(name, '=');
	size_t len = eq ? (size_t)(eq - name) : strlen(name);
	const char *value = eq ? eq + 1 : next;
	int i;

	for (i = 0; i < O_COUNT_; i++)
		if ((x->cmd->allowed & BIT(i)) && strlen(options[i].flag) == len &&
		    strncmp(options[i].flag, name, len) == 0)
			break;
	if (i == O_COUNT_)
		return usage_error(x, "unknown flag --%.*s", (int)len, name);
	if (value == NULL)
		return usage_error(x, "--%s needs a value", options[i].flag);
	if ((o->given & BIT(i)) && options[i].kind != K_RULE)
		return usage_error(x, "--%s given twice", options[i].flag);
	*used_next = eq == NULL;
	o->given |= BIT(i);
	return parse_value(x, (enum opt)i, value, o);
}

/* ----- output ----- */

enum out_type {
	OT_UINT,     /* uint64_t */
	OT_SIZE,     /* size_t */
	OT_INT,      /* int64_t */
	OT_INT32,    /* int */
	OT_MONEY,    /* sc_micros */
	OT_BOOL,     /* int */
	OT_STR,      /* char[] */
	OT_TIME,     /* int64_t microseconds since the epoch */
	OT_ENUM,     /* int, shown by `name` */
	OT_ALLOWED,  /* sc_decision.allowed, shown as the status word */
	OT_WALLET,   /* sc_wallet */
	OT_RULES,    /* sc_agent.rules */
	OT_WARNINGS, /* sc_decision.warnings */
	OT_GROUP,    /* members of the same struct shown as a nested object: `inner` */
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
	const char *(*name)(int v);
	size_t has;
	const struct out_field *inner;
	size_t n_inner;
};

struct out_table {
	const struct out_field *f;
	size_t n;
};

#define OUT(t) ((struct out_table){ (t), COUNT(t) })

static const char *priority_text(int v)
{
	return sc_priority_name((enum sc_priority)v);
}

static const char *status_text(int v)
{
	return sc_status_name((enum sc_status)v);
}

static const char *outcome_text(int v)
{
	return sc_outcome_name((enum sc_outcome)v);
}

static const char *txn_status_text(int v)
{
	return sc_txn_status_name((enum sc_txn_status)v);
}

static const char *event_type_text(int v)
{
	return sc_event_type_name((enum sc_event_type)v);
}

#define W(type_, member, key_, header_, ...)                                                  \
	{ .key = key_, .header = header_, .type = (type_), .off = offsetof(T, member),        \
	  __VA_ARGS__ }

#define T sc_wallet
static const struct out_field wallet_out[] = {
	W(OT_MONEY, balance, "balance", "BALANCE"),
	W(OT_MONEY, held, "held", "HELD"),
	W(OT_MONEY, available, "available", "AVAILABLE"),
	W(OT_MONEY, budget, "budget", "BUDGET"),
	W(OT_MONEY, max_per_txn, "max_per_txn", "MAX/TXN", .flags = OF_UNLIMITED),
	W(OT_MONEY, daily_spend_limit, "daily_spend_limit", "DAILY LIMIT", .flags = OF_UNLIMITED),
	W(OT_MONEY, daily_spent, "daily_spent", "DAILY SPENT"),
	W(OT_MONEY, debt, "debt", "DEBT"),
	W(OT_BOOL, limited, "limited", "LIMITED"),
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
static const struct out_field agent_out[] = {
	W(OT_UINT, id, "id", "ID"),
	W(OT_UINT, org_id, "org_id", "ORG ID"),
	W(OT_STR, org, "org", "ORG"),
	W(OT_STR, name, "name", "NAME"),
	W(OT_ENUM, priority, "priority", "PRIORITY", .name = priority_text),
	W(OT_ENUM, status, "status", "STATUS", .name = status_text),
	W(OT_TIME, created_at, "created_at", "CREATED"),
	W(OT_WALLET, wallet, "wallet", "WALLET"),
	W(OT_RULES, rules, "rules", "RULES"),
};
static const struct out_field agent_cols[] = {
	W(OT_UINT, id, "id", "ID"),
	W(OT_STR, org, "org", "ORG"),
	W(OT_STR, name, "name", "NAME"),
	W(OT_ENUM, priority, "priority", "PRIORITY", .name = priority_text),
	W(OT_ENUM, status, "status", "STATUS", .name = status_text),
	W(OT_MONEY, wallet.balance, "balance", "BALANCE"),
	W(OT_MONEY, wallet.held, "held", "HELD"),
	W(OT_MONEY, wallet.available, "available", "AVAILABLE"),
	W(OT_MONEY, wallet.debt, "debt", "DEBT"),
	W(OT_SIZE, n_rules, "rules", "RULES"),
};
#undef T

#define T sc_transaction
static const struct out_field transaction_out[] = {
	W(OT_UINT, id, "id", "ID"),
	W(OT_UINT, agent_id, "agent_id", "AGENT"),
	W(OT_UINT, org_id, "org_id", "ORG"),
	W(OT_UINT, rule_id, "rule_id", "RULE", .flags = OF_NULL),
	W(OT_STR, action, "action", "ACTION"),
	W(OT_STR, type, "type", "TYPE"),
	W(OT_ENUM, status, "status", "STATUS", .name = txn_status_text),
	W(OT_ENUM, outcome, "outcome", "OUTCOME", .name = outcome_text, .flags = OF_HAS,
	  .has = offsetof(sc_transaction, has_outcome)),
	W(OT_MONEY, estimated_cost, "estimated_cost", "ESTIMATE"),
	W(OT_MONEY, charged, "charged", "CHARGED"),
	W(OT_STR, block_reason, "block_reason", "REASON", .flags = OF_NULL),
	W(OT_STR, risk_level, "risk_level", "RISK"),
	W(OT_STR, idempotency_key, "idempotency_key", "KEY", .flags = OF_NULL),
	W(OT_TIME, created_at, "created_at", "CREATED"),
	W(OT_TIME, settled_at, "settled_at", "SETTLED", .flags = OF_NULL),
};
static const struct out_field transaction_cols[] = {
	W(OT_UINT, id, "id", "ID"),
	W(OT_UINT, agent_id, "agent_id", "AGENT"),
	W(OT_STR, action, "action", "ACTION"),
	W(OT_STR, type, "type", "TYPE"),
	W(OT_ENUM, status, "status", "STATUS", .name = txn_status_text),
	W(OT_ENUM, outcome, "outcome", "OUTCOME", .name = outcome_text, .flags = OF_HAS,
	  .has = offsetof(sc_transaction, has_outcome)),
	W(OT_MONEY, estimated_cost, "estimated_cost", "ESTIMATE"),
	W(OT_MONEY, charged, "charged", "CHARGED"),
	W(OT_STR, block_reason, "block_reason", "REASON", .flags = OF_NULL),
	W(OT_TIME, created_at, "created_at", "CREATED"),
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
	W(OT_ENUM, status, "status", "STATUS", .name = status_text),
	{ .key = "factors", .header = "FACTORS", .type = OT_GROUP, .inner = score_factors_out,
	  .n_inner = COUNT(score_factors_out) },
};
#undef T

#define T sc_event
static const struct out_field event_out[] = {
	W(OT_UINT, id, "id", "ID"),
	W(OT_UINT, agent_id, "agent_id", "AGENT"),
	W(OT_ENUM, type, "type", "TYPE", .name = event_type_text),
	W(OT_TIME, time, "time", "TIME"),
	W(OT_INT32, score, "score", "SCORE"),
	W(OT_ENUM, from, "from", "FROM", .name = status_text, .flags = OF_HAS,
	  .has = offsetof(sc_event, has_status)),
	W(OT_ENUM, to, "to", "TO", .name = status_text, .flags = OF_HAS,
	  .has = offsetof(sc_event, has_status)),
	W(OT_STR, reason, "reason", "REASON"),
};
static const struct out_field event_cols[] = {
	W(OT_UINT, id, "id", "ID"),
	W(OT_TIME, time, "time", "TIME"),
	W(OT_ENUM, type, "type", "TYPE", .name = event_type_text),
	W(OT_ENUM, from, "from", "FROM", .name = status_text, .flags = OF_HAS,
	  .has = offsetof(sc_event, has_status)),
	W(OT_ENUM, to, "to", "TO", .name = status_text, .flags = OF_HAS,
	  .has = offsetof(sc_event, has_status)),
	W(OT_INT32, score, "score", "SCORE"),
	W(OT_STR, reason, "reason", "REASON"),
};
#undef T

#define T sc_settlement
static const struct out_field settlement_out[] = {
	W(OT_UINT, transaction_id, "transaction_id", "TRANSACTION"),
	W(OT_ENUM, outcome, "outcome", "OUTCOME", .name = outcome_text),
	W(OT_MONEY, charged, "charged", "CHARGED"),
	W(OT_MONEY, balance, "balance", "BALANCE"),
	W(OT_MONEY, debt, "debt", "DEBT"),
	W(OT_BOOL, replayed, "replayed", "REPLAYED"),
};
#undef T
#undef W

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

static void usd(sc_micros m, char *buf, size_t len)
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
		usd(get_i64(p), buf, len);
		break;
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
		snprintf(buf, len, "%s", f->name(get_int(p)));
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
			            t.f[i].type == OT_INT32 || t.f[i].type == OT_UINT ||
			            t.f[i].type == OT_SIZE;
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
			print_detail(OUT(wallet_out), base + f->off, indent + 2);
		} else if (f->type == OT_GROUP) {
			putchar('\n');
			print_detail((struct out_table){ f->inner, f->n_inner }, base, indent + 2);
		} else if (f->type == OT_RULES) {
			const sc_agent *a = obj;

			if (a->n_rules == 0) {
				printf(" none\n");
			} else {
				putchar('\n');
				print_table(OUT(rule_out), a->rules, a->n_rules, sizeof(sc_rule),
				            indent + 2);
			}
		} else {
			cell(f, base, buf, sizeof(buf));
			printf("%*s %s\n", (int)(w - strlen(f->key)), "", buf);
		}
	}
}

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			printf("\\%c", ch);
		else if (ch < 0x20)
			printf("\\u%04x", ch);
		else
			putchar(ch);
	}
	putchar('"');
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
	case OT_SIZE:
		memcpy(&n, p, sizeof(n));
		printf("%zu", n);
		break;
	case OT_INT:
	case OT_MONEY:
	case OT_TIME:
		printf("%" PRId64, get_i64(p));
		break;
	case OT_INT32:
		printf("%d", get_int(p));
		break;
	case OT_BOOL:
		fputs(get_int(p) ? "true" : "false", stdout);
		break;
	case OT_STR:
		json_str(p);
		break;
	case OT_ENUM:
		json_str(f->name(get_int(p)));
		break;
	case OT_ALLOWED:
		json_str(get_int(p) ? "allowed" : "blocked");
		break;
	case OT_WALLET:
		json_object(OUT(wallet_out), p);
		break;
	case OT_GROUP:
		json_object((struct out_table){ f->inner, f->n_inner }, base);
		break;
	case OT_RULES: {
		const sc_agent *a = (const sc_agent *)base;

		putchar('[');
		for (i = 0; i < a->n_rules; i++) {
			fputs(i ? ", " : "", stdout);
			json_object(OUT(rule_out), &a->rules[i]);
		}
		putchar(']');
		break;
	}
	case OT_WARNINGS: {
		const sc_decision *d = (const sc_decision *)base;

		putchar('[');
		for (i = 0; i < d->n_warnings; i++) {
			fputs(i ? ", " : "", stdout);
			json_str(d->warnings[i]);
		}
		putchar(']');
		break;
	}
	}
}

static void json_object(struct out_table t, const void *obj)
{
	size_t i;

	putchar('{');
	for (i = 0; i < t.n; i++) {
		fputs(i ? ", " : "", stdout);
		json_str(t.f[i].key);
		fputs(": ", stdout);
		json_value(&t.f[i], obj);
	}
	putchar('}');
}

/* One object: JSON, or the human detail view. */
static void show(const struct ctx *x, struct out_table t, const void *obj)
{
	if (x->json) {
		json_object(t, obj);
		putchar('\n');
	} else {
		print_detail(t, obj, 0);
	}
}

/* A list: a JSON array of full objects, or a table of the columns. */
static void show_list(const struct ctx *x, struct out_table full, struct out_table cols,
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

/* ----- commands ----- */

/* Options that are fields of a wallet update. */
static const struct {
	enum opt opt;
	unsigned set;
	size_t off;
} wallet_opts[] = {
	{ O_BALANCE, SC_WALLET_SET_BALANCE, offsetof(sc_wallet_update, balance) },
	{ O_BUDGET, SC_WALLET_SET_BUDGET, offsetof(sc_wallet_update, budget) },
	{ O_MAX_PER_TXN, SC_WALLET_SET_MAX_PER_TXN, offsetof(sc_wallet_update, max_per_txn) },
	{ O_DAILY_SPEND_LIMIT, SC_WALLET_SET_DAILY_SPEND_LIMIT,
	  offsetof(sc_wallet_update, daily_spend_limit) },
	{ O_DEBT, SC_WALLET_SET_DEBT, offsetof(sc_wallet_update, debt) },
};

static void wallet_update_from(const struct opts *o, sc_wallet_update *u)
{
	size_t i;

	memset(u, 0, sizeof(*u));
	for (i = 0; i < COUNT(wallet_opts); i++) {
		if (!(o->given & BIT(wallet_opts[i].opt)))
			continue;
		u->set |= wallet_opts[i].set;
		memcpy((char *)u + wallet_opts[i].off, &o->num[wallet_opts[i].opt], sizeof(sc_micros));
	}
}

/* Options that are fields of a rule. */
static const struct {
	enum opt opt;
	unsigned set;
} rule_opts[] = {
	{ O_NAME, SC_RULE_SET_NAME },
	{ O_MATCH, SC_RULE_SET_MATCH },
	{ O_MAX_COST_PER_TXN, SC_RULE_SET_MAX_COST_PER_TXN },
	{ O_DAILY_SPEND_LIMIT, SC_RULE_SET_DAILY_SPEND_LIMIT },
	{ O_HOURLY_RATE_LIMIT, SC_RULE_SET_HOURLY_RATE_LIMIT },
};

static unsigned rule_from(const struct opts *o, sc_rule *r)
{
	unsigned set = 0;
	size_t i;

	memset(r, 0, sizeof(*r));
	for (i = 0; i < COUNT(rule_opts); i++)
		if (o->given & BIT(rule_opts[i].opt))
			set |= rule_opts[i].set;
	/* Lengths were checked when the flags were parsed. */
	if (set & SC_RULE_SET_NAME)
		snprintf(r->name, sizeof(r->name), "%s", o->str[O_NAME]);
	if (set & SC_RULE_SET_MATCH)
		snprintf(r->match, sizeof(r->match), "%s", o->str[O_MATCH]);
	r->max_cost_per_txn = o->num[O_MAX_COST_PER_TXN];
	r->daily_spend_limit = o->num[O_DAILY_SPEND_LIMIT];
	r->hourly_rate_limit = o->num[O_HOURLY_RATE_LIMIT];
	return set;
}

static int cmd_orgs_create(struct ctx *x, const struct opts *o)
{
	sc_org org;
	int rc = sc_orgs_create(x->c, o->str[O_NAME], &org);

	if (rc != 0)
		return call_error(x, rc);
	show(x, OUT(org_out), &org);
	return 0;
}

static int cmd_orgs_list(struct ctx *x, const struct opts *o)
{
	sc_org *list;
	size_t n;
	int rc = sc_orgs_list(x->c, &list, &n);

	if (rc != 0)
		return call_error(x, rc);
	show_list(x, OUT(org_out), OUT(org_cols), list, n, sizeof(*list));
	sc_orgs_free(list);
	return 0;
}

static int cmd_agents_create(struct ctx *x, const struct opts *o)
{
	sc_wallet_update u;
	sc_agent a;
	int rc;

	wallet_update_from(o, &u);
	rc = sc_agents_create(x->c, o->str[O_ORG], o->str[O_NAME],
	                      (enum sc_priority)o->num[O_PRIORITY], u.set ? &u : NULL, o->rules,
	                      o->n_rules, &a);
	if (rc != 0)
		return call_error(x, rc);
	show(x, OUT(agent_out), &a);
	return 0;
}

/* The id of an org given by name or decimal id. */
static int org_id_of(struct ctx *x, const char *org, uint64_t *id)
{
	sc_org *list;
	size_t n, i;
	int rc;

	if (parse_uint(org, id) == 0 && *id > 0)
		return 0;
	if ((rc = sc_orgs_list(x->c, &list, &n)) != 0)
		return call_error(x, rc);
	for (i = 0; i < n && strcmp(list[i].name, org) != 0; i++)
		;
	if (i < n)
		*id = list[i].id;
	sc_orgs_free(list);
	if (i == n) {
		fprintf(stderr, "sidecardctl: %s: no org named '%s'\n", x->what, org);
		return EXIT_ERROR;
	}
	return 0;
}

static int cmd_agents_list(struct ctx *x, const struct opts *o)
{
	uint64_t org_id = 0;
	sc_agent *list;
	size_t n;
	int rc;

	if ((o->given & BIT(O_ORG)) && (rc = org_id_of(x, o->str[O_ORG], &org_id)) != 0)
		return rc;
	if ((rc = sc_agents_list(x->c, org_id, &list, &n)) != 0)
		return call_error(x, rc);
	show_list(x, OUT(agent_out), OUT(agent_cols), list, n, sizeof(*list));
	sc_agents_free(list);
	return 0;
}

static int cmd_agents_get(struct ctx *x, const struct opts *o)
{
	sc_agent a;
	int rc = sc_agents_get(x->c, (uint64_t)o->num[O_AGENT_ID], &a);

	if (rc != 0)
		return call_error(x, rc);
	show(x, OUT(agent_out), &a);
	return 0;
}

/* agents update, freeze and unfreeze: freeze/unfreeze imply the status. */
static int cmd_agents_update(struct ctx *x, const struct opts *o)
{
	int status = (o->given & BIT(O_STATUS)) ? (int)o->num[O_STATUS] : -1;
	int priority = (o->given & BIT(O_PRIORITY)) ? (int)o->num[O_PRIORITY] : -1;
	sc_agent a;
	int rc;

	if (strcmp(x->cmd->sub, "freeze") == 0)
		status = SC_STATUS_FROZEN;
	else if (strcmp(x->cmd->sub, "unfreeze") == 0)
		status = SC_STATUS_ACTIVE;
	rc = sc_agents_update(x->c, (uint64_t)o->num[O_AGENT_ID], o->str[O_NAME], priority, status,
	                      &a);
	if (rc != 0)
		return call_error(x, rc);
	show(x, OUT(agent_out), &a);
	return 0;
}

/* {deleted: true} / {removed: true} answers. */
static void show_done(const struct ctx *x, const char *key, const char *text, uint64_t id)
{
	if (x->json)
		printf("{\"%s\": true}\n", key);
	else
		printf("%s %" PRIu64 "\n", text, id);
}

static int cmd_agents_delete(struct ctx *x, const struct opts *o)
{
	int rc = sc_agents_delete(x->c, (uint64_t)o->num[O_AGENT_ID]);

	if (rc != 0)
		return call_error(x, rc);
	show_done(x, "deleted", "deleted agent", (uint64_t)o->num[O_AGENT_ID]);
	return 0;
}

static int cmd_rules_add(struct ctx *x, const struct opts *o)
{
	sc_rule r, out;
	int rc;

	rule_from(o, &r);
	if ((rc = sc_rules_add(x->c, (uint64_t)o->num[O_AGENT_ID], &r, &out)) != 0)
		return call_error(x, rc);
	show(x, OUT(rule_out), &out);
	return 0;
}

static int cmd_rules_update(struct ctx *x, const struct opts *o)
{
	sc_rule r, out;
	unsigned set = rule_from(o, &r);
	int rc = sc_rules_update(x->c, (uint64_t)o->num[O_AGENT_ID], (uint64_t)o->num[O_RULE_ID],
	                         set, &r, &out);

	if (rc != 0)
		return call_error(x, rc);
	show(x, OUT(rule_out), &out);
	return 0;
}

static int cmd_rules_list(struct ctx *x, const struct opts *o)
{
	sc_rule *list;
	size_t n;
	int rc = sc_rules_list(x->c, (uint64_t)o->num[O_AGENT_ID], &list, &n);

	if (rc != 0)
		return call_error(x, rc);
	show_list(x, OUT(rule_out), OUT(rule_out), list, n, sizeof(*list));
	sc_rules_free(list);
	return 0;
}

static int cmd_rules_remove(struct ctx *x, const struct opts *o)
{
	int rc = sc_rules_remove(x->c, (uint64_t)o->num[O_AGENT_ID], (uint64_t)o->num[O_RULE_ID]);

	if (rc != 0)
		return call_error(x, rc);
	show_done(x, "removed", "removed rule", (uint64_t)o->num[O_RULE_ID]);
	return 0;
}

/* wallet and wallet update: an agent's wallet or an org's, never both. */
static int cmd_wallet(struct ctx *x, const struct opts *o)
{
	int agent = (o->given & BIT(O_AGENT_ID)) != 0, org = (o->given & BIT(O_ORG_ID)) != 0;
	sc_wallet_update u;
	sc_wallet w;
	int rc;

	if (agent == org)
		return usage_error(x, "give exactly one of --agent-id and --org-id");
	wallet_update_from(o, &u);
	if (x->cmd->sub == NULL)
		rc = agent ? sc_wallets_get(x->c, (uint64_t)o->num[O_AGENT_ID], &w)
		           : sc_org_wallet_get(x->c, (uint64_t)o->num[O_ORG_ID], &w);
	else
		rc = agent ? sc_wallets_update(x->c, (uint64_t)o->num[O_AGENT_ID], &u, &w)
		           : sc_org_wallet_update(x->c, (uint64_t)o->num[O_ORG_ID], &u, &w);
	if (rc != 0)
		return call_error(x, rc);
	show(x, OUT(wallet_out), &w);
	return 0;
}

static int cmd_check(struct ctx *x, const struct opts *o)
{
	sc_check_req req = {
		.agent_id = (uint64_t)o->num[O_AGENT_ID],
		.action = o->str[O_ACTION],
		.estimated_cost = o->num[O_ESTIMATED_COST],
		.type = o->str[O_TYPE],
		.idempotency_key = o->str[O_IDEMPOTENCY_KEY],
	};
	sc_decision d;
	unsigned i;
	int rc = sc_check(x->c, &req, &d);

	if (rc != 0)
		return call_error(x, rc);
	if (x->json) {
		show(x, OUT(decision_out), &d);
	} else if (d.allowed) {
		printf("%" PRIu64 "\n", d.transaction_id);
		for (i = 0; i < d.n_warnings; i++)
			fprintf(stderr, "warning: %s\n", d.warnings[i]);
	}
	if (!d.allowed) {
		fprintf(stderr, "blocked: %s\n", d.block_reason);
		return EXIT_BLOCKED;
	}
	return 0;
}

static int cmd_report(struct ctx *x, const struct opts *o)
{
	int has_actual = (o->given & BIT(O_ACTUAL_COST)) != 0;
	char charged[32], balance[32], debt[32];
	sc_settlement s;
	int rc = sc_report(x->c, (uint64_t)o->num[O_TRANSACTION_ID],
	                   (enum sc_outcome)o->num[O_OUTCOME], has_actual, o->num[O_ACTUAL_COST], &s);

	if (rc != 0)
		return call_error(x, rc);
	if (x->json) {
		show(x, OUT(settlement_out), &s);
		return 0;
	}
	usd(s.charged, charged, sizeof(charged));
	usd(s.balance, balance, sizeof(balance));
	usd(s.debt, debt, sizeof(debt));
	printf("transaction %" PRIu64 " settled%s: %s, charged %s; balance %s, debt %s\n",
	       s.transaction_id, s.replayed ? " (replayed)" : "", sc_outcome_name(s.outcome), charged,
	       balance, debt);
	return 0;
}

/* The filter flags of transactions, transactions summary and agents top. */
static void txn_filter_from(const struct opts *o, sc_txn_filter *f)
{
	sc_txn_filter_init(f);
	f->agent_id = (uint64_t)o->num[O_AGENT_ID];
	f->org_id = (uint64_t)o->num[O_ORG_ID];
	if (o->given & BIT(O_TXN_STATUS))
		f->status = (int)o->num[O_TXN_STATUS];
	if (o->given & BIT(O_RISK_LEVEL))
		f->risk = (int)o->num[O_RISK_LEVEL];
	f->since = o->num[O_SINCE];
	f->until = o->num[O_UNTIL];
	f->before = (uint64_t)o->num[O_BEFORE];
	f->limit = (unsigned)o->num[O_LIMIT];
}

/* --limit within 1 to max, when given. */
static int check_limit(const struct ctx *x, const struct opts *o, int64_t max)
{
	if ((o->given & BIT(O_LIMIT)) && (o->num[O_LIMIT] < 1 || o->num[O_LIMIT] > max))
		return usage_error(x, "--limit: must be 1 to %" PRId64, max);
	return 0;
}

static int cmd_transactions(struct ctx *x, const struct opts *o)
{
	sc_transaction *list;
	sc_txn_filter f;
	size_t n;
	int rc;

	if ((rc = check_limit(x, o, 1000)) != 0)
		return rc;
	txn_filter_from(o, &f);
	if ((rc = sc_transactions_query(x->c, &f, &list, &n)) != 0)
		return call_error(x, rc);
	show_list(x, OUT(transaction_out), OUT(transaction_cols), list, n, sizeof(*list));
	sc_transactions_free(list);
	return 0;
}

static int cmd_transactions_summary(struct ctx *x, const struct opts *o)
{
	sc_txn_summary s;
	sc_txn_filter f;
	int rc;

	txn_filter_from(o, &f);
	if ((rc = sc_transactions_summary(x->c, &f, &s)) != 0)
		return call_error(x, rc);
	show(x, OUT(txn_summary_out), &s);
	return 0;
}

static int cmd_agents_top(struct ctx *x, const struct opts *o)
{
	sc_top_agent *list;
	size_t n;
	int rc;

	if ((rc = check_limit(x, o, 100)) != 0)
		return rc;
	rc = sc_agents_top(x->c, (uint64_t)o->num[O_ORG_ID], o->num[O_SINCE], o->num[O_UNTIL],
	                   (unsigned)o->num[O_LIMIT], &list, &n);
	if (rc != 0)
		return call_error(x, rc);
	show_list(x, OUT(top_agent_out), OUT(top_agent_out), list, n, sizeof(*list));
	sc_top_agents_free(list);
	return 0;
}

static int cmd_fleet(struct ctx *x, const struct opts *o)
{
	sc_fleet fl;
	int rc = sc_fleet_get(x->c, &fl);

	if (rc != 0)
		return call_error(x, rc);
	show(x, OUT(fleet_out), &fl);
	return 0;
}

static int cmd_score(struct ctx *x, const struct opts *o)
{
	sc_score s;
	int rc = sc_score_get(x->c, (uint64_t)o->num[O_AGENT_ID], &s);

	if (rc != 0)
		return call_error(x, rc);
	show(x, OUT(score_out), &s);
	return 0;
}

static int cmd_agents_events(struct ctx *x, const struct opts *o)
{
	sc_event *list;
	size_t n;
	int rc;

	if ((rc = check_limit(x, o, 1000)) != 0)
		return rc;
	rc = sc_agents_events(x->c, (uint64_t)o->num[O_AGENT_ID], (unsigned)o->num[O_LIMIT], &list,
	                      &n);
	if (rc != 0)
		return call_error(x, rc);
	show_list(x, OUT(event_out), OUT(event_cols), list, n, sizeof(*list));
	sc_events_free(list);
	return 0;
}

/* The counters of the stats method, in PROTOCOL.md's order. */
static const char *const stat_names[] = {
	"uptime_s",         "orgs",              "agents",          "rules",
	"holds_open",       "checks",            "allowed",         "blocked",
	"reports",          "expired",           "topups",          "anomalies",
	"risk_blocked",     "connections_open",  "connections_total", "requests",
	"protocol_errors",  "capacity_orgs",     "capacity_agents",   "capacity_rules",
	"capacity_holds",   "capacity_history",
};

static int cmd_stats(struct ctx *x, const struct opts *o)
{
	int64_t v[COUNT(stat_names)];
	int found[COUNT(stat_names)];
	size_t i, n = 0;
	int rc;

	for (i = 0; i < COUNT(stat_names); i++) {
		rc = sc_stat(x->c, stat_names[i], &v[i]);
		if (rc != 0 && rc != SC_ENOTFOUND)
			return call_error(x, rc);
		found[i] = rc == 0;
	}
	if (x->json)
		putchar('{');
	for (i = 0; i < COUNT(stat_names); i++) {
		if (!found[i])
			continue;
		if (x->json) {
			printf("%s\"%s\": %" PRId64, n++ ? ", " : "", stat_names[i], v[i]);
		} else {
			printf("%-18s %" PRId64 "\n", stat_names[i], v[i]);
		}
	}
	if (x->json)
		puts("}");
	return 0;
}

/* ----- ledger: offline, on the files of a state directory ----- */

#define EXIT_CORRUPT 1

/* The daemon's default --state-dir, by the same rule as sidecard/config.c. */
static void default_state_dir(char *buf, size_t len)
{
	const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");

	if (geteuid() == 0)
		snprintf(buf, len, "/var/lib/sidecard");
	else if (xdg && *xdg)
		snprintf(buf, len, "%s/sidecard", xdg);
	else if (home && *home)
		snprintf(buf, len, "%s/.local/state/sidecard", home);
	else
		snprintf(buf, len, "/tmp/sidecard-%u/state", (unsigned)geteuid());
}

/*
 * DIR/ledger of --state-dir or of the default state directory. A missing
 * ledger directory is an empty ledger, but a missing state directory is
 * more likely a typing mistake than a daemon that never ran: an error.
 */
static int ledger_dir(const struct ctx *x, const struct opts *o, char *buf, size_t len)
{
	char state[PATH_MAX - sizeof("/ledger")];
	struct stat sb;

	if (o->given & BIT(O_STATE_DIR))
		snprintf(state, sizeof(state), "%s", o->str[O_STATE_DIR]);
	else
		default_state_dir(state, sizeof(state));
	if (stat(state, &sb) != 0) {
		fprintf(stderr, "sidecardctl: %s: %s: %s\n", x->what, state, strerror(errno));
		return EXIT_ERROR;
	}
	if (!S_ISDIR(sb.st_mode)) {
		fprintf(stderr, "sidecardctl: %s: %s: not a directory\n", x->what, state);
		return EXIT_ERROR;
	}
	snprintf(buf, len, "%s/ledger", state);
	return 0;
}

static int visit_count(void *arg, const struct ledger_record *r)
{
	(void)arg;
	(void)r;
	return 0;
}

static int visit_export(void *arg, const struct ledger_record *r)
{
	ledger_record_json(arg, r);
	return 0;
}

/* A scan that failed: corruption (SC_EINVAL) is exit 1, anything else 2. */
static int scan_error(const struct ctx *x, int rc, const char *err)
{
	fprintf(stderr, "sidecardctl: %s: %s\n", x->what, err[0] ? err : sc_strerror(rc));
	return rc == SC_EINVAL ? EXIT_CORRUPT : EXIT_ERROR;
}

static void torn_warning(FILE *f, const struct ledger_scan_result *res)
{
	fprintf(f,
	        "warning: %s: torn tail (a partial last record) at offset %" PRIu64
	        ": the daemon will cut it off at its next start\n",
	        res->tail_file, res->tail_offset);
}

static int cmd_ledger_verify(struct ctx *x, const struct opts *o)
{
	struct ledger_scan_result res;
	char dir[PATH_MAX], err[4352];
	int rc;

	if ((rc = ledger_dir(x, o, dir, sizeof(dir))) != 0)
		return rc;
	rc = ledger_scan(dir, 0, 0, visit_count, NULL, &res, err, sizeof(err));
	if (rc != 0)
		return scan_error(x, rc, err);
	/* The warning is part of the verdict, so it goes to stdout with it. */
	if (res.torn)
		torn_warning(stdout, &res);
	if (res.records == 0)
		printf("ledger %s: 0 records, in %u segments: ok\n", dir, res.segments);
	else
		printf("ledger %s: %" PRIu64 " records, sequence %" PRIu64 " to %" PRIu64
		       ", in %u segments: ok\n",
		       dir, res.records, res.first_seq, res.last_seq, res.segments);
	return 0;
}

static int cmd_ledger_export(struct ctx *x, const struct opts *o)
{
	uint64_t from = (o->given & BIT(O_FROM)) ? (uint64_t)o->num[O_FROM] : 0;
	struct ledger_scan_result res;
	char dir[PATH_MAX], err[4352];
	int rc;

	if ((rc = ledger_dir(x, o, dir, sizeof(dir))) != 0)
		return rc;
	rc = ledger_scan(dir, from, 0, visit_export, stdout, &res, err, sizeof(err));
	if (fflush(stdout) != 0) {
		fprintf(stderr, "sidecardctl: %s: writing the output failed\n", x->what);
		return EXIT_ERROR;
	}
	if (rc != 0)
		return scan_error(x, rc, err);
	/* stdout is the JSON stream: the warning goes beside it. */
	if (res.torn)
		torn_warning(stderr, &res);
	return 0;
}

#define WALLET_FLAGS                                                                   \
	(BIT(O_BALANCE) | BIT(O_BUDGET) | BIT(O_MAX_PER_TXN) | BIT(O_DAILY_SPEND_LIMIT))
#define RULE_FLAGS                                                                     \
	(BIT(O_NAME) | BIT(O_MATCH) | BIT(O_MAX_COST_PER_TXN) | BIT(O_DAILY_SPEND_LIMIT) | \
	 BIT(O_HOURLY_RATE_LIMIT))
/* created_at in [--since, --until) */
#define WINDOW_FLAGS (BIT(O_SINCE) | BIT(O_UNTIL))
#define TXN_FILTER_FLAGS (BIT(O_AGENT_ID) | BIT(O_ORG_ID) | WINDOW_FLAGS)

static const struct command commands[] = {
	{ "orgs", "create", cmd_orgs_create, BIT(O_NAME), BIT(O_NAME), "create an org" },
	{ "orgs", "list", cmd_orgs_list, 0, 0, "list orgs" },
	{ "agents", "create", cmd_agents_create,
	  BIT(O_ORG) | BIT(O_NAME) | BIT(O_PRIORITY) | WALLET_FLAGS | BIT(O_RULE),
	  BIT(O_ORG) | BIT(O_NAME), "create an agent with its wallet and rules (--rule repeats)" },
	{ "agents", "list", cmd_agents_list, BIT(O_ORG), 0, "list agents, of one org or all" },
	{ "agents", "get", cmd_agents_get, BIT(O_AGENT_ID), BIT(O_AGENT_ID), "show an agent" },
	{ "agents", "update", cmd_agents_update,
	  BIT(O_AGENT_ID) | BIT(O_NAME) | BIT(O_PRIORITY) | BIT(O_STATUS), BIT(O_AGENT_ID),
	  "rename an agent, change its priority or status" },
	{ "agents", "freeze", cmd_agents_update, BIT(O_AGENT_ID), BIT(O_AGENT_ID),
	  "freeze an agent: every check is blocked" },
	{ "agents", "unfreeze", cmd_agents_update, BIT(O_AGENT_ID), BIT(O_AGENT_ID),
	  "make a frozen agent active again" },
	{ "agents", "delete", cmd_agents_delete, BIT(O_AGENT_ID), BIT(O_AGENT_ID),
	  "delete an agent without open holds" },
	{ "agents", "events", cmd_agents_events, BIT(O_AGENT_ID) | BIT(O_LIMIT), BIT(O_AGENT_ID),
	  "an agent's status changes, anomalies and critical overrides, newest first "
	  "(--limit 1-1000, default 50)" },
	{ "agents", "top", cmd_agents_top, BIT(O_ORG_ID) | WINDOW_FLAGS | BIT(O_LIMIT), 0,
	  "the agents charged the most over a window, most first (--limit 1-100, default 10)" },
	{ "rules", "add", cmd_rules_add, BIT(O_AGENT_ID) | RULE_FLAGS,
	  BIT(O_AGENT_ID) | BIT(O_NAME) | BIT(O_MATCH), "add a spending rule to an agent" },
	{ "rules", "list", cmd_rules_list, BIT(O_AGENT_ID), BIT(O_AGENT_ID),
	  "list an agent's rules" },
	{ "rules", "update", cmd_rules_update, BIT(O_AGENT_ID) | BIT(O_RULE_ID) | RULE_FLAGS,
	  BIT(O_AGENT_ID) | BIT(O_RULE_ID), "change a rule; its counters are kept" },
	{ "rules", "remove", cmd_rules_remove, BIT(O_AGENT_ID) | BIT(O_RULE_ID),
	  BIT(O_AGENT_ID) | BIT(O_RULE_ID), "remove a rule" },
	{ "wallet", NULL, cmd_wallet, BIT(O_AGENT_ID) | BIT(O_ORG_ID), 0,
	  "show the wallet of one agent (--agent-id) or one org (--org-id)" },
	{ "wallet", "update", cmd_wallet,
	  BIT(O_AGENT_ID) | BIT(O_ORG_ID) | WALLET_FLAGS | BIT(O_DEBT), 0,
	  "set fields of an agent's or an org's wallet (--debt 0 records a repaid debt)" },
	{ "check", NULL, cmd_check,
	  BIT(O_AGENT_ID) | BIT(O_ACTION) | BIT(O_ESTIMATED_COST) | BIT(O_TYPE) |
	          BIT(O_IDEMPOTENCY_KEY),
	  BIT(O_AGENT_ID) | BIT(O_ACTION) | BIT(O_ESTIMATED_COST),
	  "ask before a paid action: prints the transaction id; exit 1 when blocked" },
	{ "report", NULL, cmd_report, BIT(O_TRANSACTION_ID) | BIT(O_OUTCOME) | BIT(O_ACTUAL_COST),
	  BIT(O_TRANSACTION_ID) | BIT(O_OUTCOME),
	  "settle a hold (--outcome also takes an exit status: 0 success, else failure)" },
	{ "score", NULL, cmd_score, BIT(O_AGENT_ID), BIT(O_AGENT_ID),
	  "an agent's kredit score (300-850), its status and the counters behind it" },
	{ "transactions", NULL, cmd_transactions,
	  TXN_FILTER_FLAGS | BIT(O_TXN_STATUS) | BIT(O_RISK_LEVEL) | BIT(O_BEFORE) | BIT(O_LIMIT), 0,
	  "list transactions, newest first (--limit 1-1000, default 50; --before the last id of "
	  "a page gives the next page)" },
	{ "transactions", "summary", cmd_transactions_summary, TXN_FILTER_FLAGS, 0,
	  "count transactions by status and sum their estimates and charges" },
	{ "fleet", NULL, cmd_fleet, 0, 0,
	  "agents by status, total spend, checks blocked by risk controls, anomalies, average "
	  "score" },
	{ "stats", NULL, cmd_stats, 0, 0, "the daemon's counters" },
	{ "ledger", "verify", cmd_ledger_verify, BIT(O_STATE_DIR), 0,
	  "check every ledger record offline (exit 1: corrupt; a torn tail is a warning)" },
	{ "ledger", "export", cmd_ledger_export, BIT(O_STATE_DIR) | BIT(O_FROM), 0,
	  "print the ledger records from sequence SEQ on as JSON lines, offline" },
};

/* ----- main ----- */

/* "verb sub --required X [--optional Y]": required flags first. */
static void print_command_usage(FILE *f, const struct command *cmd)
{
	int i, required;

	fprintf(f, "  %s%s%s", cmd->verb, cmd->sub ? " " : "", cmd->sub ? cmd->sub : "");
	for (required = 1; required >= 0; required--) {
		for (i = 0; i < O_COUNT_; i++) {
			if (!(cmd->allowed & BIT(i)) || !(cmd->required & BIT(i)) != !required)
				continue;
			fprintf(f, required ? " --%s %s" : " [--%s %s]", options[i].flag,
			        options[i].meta);
		}
	}
	fprintf(f, "\n      %s\n", cmd->help);
}

static void print_usage(FILE *f)
{
	size_t i;

	fputs("usage: sidecardctl [--socket PATH] [--json] VERB [SUBVERB] [--flag=value | --flag "
	      "value]...\n"
	      "\n"
	      "Talks to the sidecard daemon over its Unix socket (--socket, else $SIDECARD_SOCKET,\n"
	      "else the default path). Amounts are dollars (\"2.40\"); --json prints one JSON\n"
	      "document with amounts in integer micro-dollars. The ledger commands read the files\n"
	      "of the daemon's state directory instead (--state-dir, else the daemon's default).\n"
	      "Times (--since, --until) are UTC, 2026-11-24T10:00:00Z, or integer microseconds\n"
	      "since the epoch; a window is since <= created_at < until.\n"
	      "Exit status: 0 ok (check: allowed), 1 check blocked or ledger corrupt, 2 error.\n"
	      "\ncommands:\n",
	      f);
	for (i = 0; i < COUNT(commands); i++)
		print_command_usage(f, &commands[i]);
	fputs("\n  --help     this text\n  --version  the version of sidecardctl\n", f);
}

/* The command named by the words, or NULL. */
static const struct command *find_command(const char *const *words, size_t n)
{
	size_t i;

	for (i = 0; i < COUNT(commands); i++) {
		const struct command *c = &commands[i];

		if (strcmp(c->verb, words[0]) != 0)
			continue;
		if (c->sub == NULL ? n == 1 : n == 2 && strcmp(c->sub, words[1]) == 0)
			return c;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	const char *socket_path = NULL, *words[2] = { NULL, NULL };
	char **flags = calloc((size_t)argc + 1, sizeof(*flags));
	size_t nwords = 0, nflags = 0, i;
	struct ctx x = { .what = NULL };
	char what[64];
	struct opts o;
	int help = 0, used_next, rc, a;

	memset(&o, 0, sizeof(o));
	if (flags == NULL) {
		fputs("sidecardctl: out of memory\n", stderr);
		return EXIT_ERROR;
	}
	/* Global options may appear anywhere; a command flag without '=' takes the next word. */
	for (a = 1; a < argc; a++) {
		const char *arg = argv[a];

		if (strcmp(arg, "--json") == 0) {
			x.json = 1;
		} else if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
			help = 1;
		} else if (strcmp(arg, "--version") == 0) {
			printf("sidecardctl %s\n", SC_VERSION);
			free(flags);
			return 0;
		} else if (strncmp(arg, "--socket=", 9) == 0) {
			socket_path = arg + 9;
		} else if (strcmp(arg, "--socket") == 0) {
			if (a + 1 == argc) {
				free(flags);
				return usage_error(&x, "--socket needs a value");
			}
			socket_path = argv[++a];
		} else if (strncmp(arg, "--", 2) == 0) {
			flags[nflags++] = argv[a];
			if (strchr(arg, '=') == NULL && a + 1 < argc)
				flags[nflags++] = argv[++a];
		} else if (nwords < COUNT(words)) {
			words[nwords++] = arg;
		} else {
			free(flags);
			return usage_error(&x, "unexpected argument '%s'", arg);
		}
	}
	if (nwords == 0) {
		free(flags);
		print_usage(help ? stdout : stderr);
		return help ? 0 : EXIT_ERROR;
	}
	x.cmd = find_command(words, nwords);
	if (x.cmd == NULL) {
		free(flags);
		return usage_error(&x, "unknown command '%s%s%s'", words[0], nwords > 1 ? " " : "",
		                   nwords > 1 ? words[1] : "");
	}
	snprintf(what, sizeof(what), "%s%s%s", x.cmd->verb, x.cmd->sub ? " " : "",
	         x.cmd->sub ? x.cmd->sub : "");
	x.what = what;
	if (help) {
		free(flags);
		printf("usage: sidecardctl [--socket PATH] [--json]\n");
		print_command_usage(stdout, x.cmd);
		return 0;
	}
	for (i = 0; i < nflags; i += 1 + (size_t)used_next) {
		used_next = 0;
		rc = parse_flag(&x, flags[i], flags[i + 1], &used_next, &o);
		if (rc != 0) {
			free(flags);
			return rc;
		}
	}
	free(flags);
	for (a = 0; a < O_COUNT_; a++)
		if ((x.cmd->required & BIT(a)) && !(o.given & BIT(a)))
			return usage_error(&x, "--%s is required", options[a].flag);
	/* The ledger verbs read local files; every other verb talks to the daemon. */
	if (strcmp(x.cmd->verb, "ledger") == 0)
		return x.cmd->run(&x, &o);
	rc = sc_connect(socket_path, &x.c);
	if (rc != 0) {
		char path[sizeof(((struct sockaddr_un *)0)->sun_path)];

		if (socket_path == NULL && sc_default_socket_path(path, sizeof(path)) == 0)
			socket_path = path;
		fprintf(stderr, "sidecardctl: connect to %s: %s\n",
		        socket_path ? socket_path : "the default socket", sc_strerror(rc));
		return EXIT_ERROR;
	}
	rc = x.cmd->run(&x, &o);
	sc_close(x.c);
	return rc;
}
