/*
 * ctl.h: what the files of sidecardctl share, and nothing else; the
 * program is not a library and installs no header.
 *
 *   sidecardctl.c   the command table, the command handlers and main()
 *   ctl_options.c   the flag table and parsing of flag values
 *   ctl_output.c    the output field tables and the three printers
 *   ctl_demo.c      `sidecardctl demo`: a simulated fleet against its own daemon
 *
 * Internal non-static names carry the prefix ctl_. Threads: one, except
 * inside ctl_demo(), whose agent threads call only libsidecard and ctl_usd().
 */
#ifndef SIDECARD_CTL_H
#define SIDECARD_CTL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "sidecard.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

#define EXIT_BLOCKED 1
#define EXIT_ERROR 2
/* The connection's role may not make the call, or the daemon refused its token. */
#define EXIT_DENIED 3

/* ----- options (ctl_options.c) ----- */

/* In the order flags are listed in usage: ids, then what a command is about, then limits. */
enum opt {
	O_AGENT_ID,
	O_ORG_ID,
	O_RULE_ID,
	O_TRANSACTION_ID,
	O_FROM_AGENT_ID,
	O_FROM_ORG_ID,
	O_TO_AGENT_ID,
	O_TO_ORG_ID,
	O_TOKEN_ID,
	O_ORG,
	O_NAME,
	O_MATCH,
	O_ACTION,
	O_ESTIMATED_COST,
	O_OUTCOME,
	O_ACTUAL_COST,
	O_MODEL,
	O_INPUT_TOKENS,
	O_OUTPUT_TOKENS,
	O_CACHED_INPUT_TOKENS,
	O_INPUT,
	O_OUTPUT,
	O_CACHED_INPUT,
	O_EFFECTIVE_FROM,
	O_AT,
	O_AMOUNT,
	O_REASON,
	O_TYPE,
	O_IDEMPOTENCY_KEY,
	O_TASK_ID,
	O_PRIORITY,
	O_STATUS,
	O_ROLE,
	O_TXN_STATUS,
	O_RISK_LEVEL,
	O_ALERT_KIND,
	O_SEVERITY,
	O_BALANCE,
	O_BUDGET,
	O_MAX_PER_TXN,
	O_MAX_COST_PER_TXN,
	O_DAILY_SPEND_LIMIT,
	O_HOURLY_RATE_LIMIT,
	O_DEBT,
	O_LOW_BALANCE,
	O_RULE,
	O_SINCE,
	O_UNTIL,
	O_BEFORE,
	O_LIMIT,
	O_STATE_DIR,
	O_SEGMENT,
	O_FROM,
	O_TRUNCATE_AT_DAMAGE,
	O_TIMEZONE,
	O_PERIOD,
	O_FOLLOW,
	O_MINUTES,
	O_SPEED,
	O_SEED,
	O_DAEMON,
	O_COUNT_
};

#define BIT(o) (UINT64_C(1) << (o))
_Static_assert(O_COUNT_ <= 64, "struct opts keeps the given flags in 64 bits");

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

/* "sidecardctl: <what>: <message>" and a pointer to --help; returns EXIT_ERROR. */
int ctl_usage_error(const struct ctx *x, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* A decimal integer of digits only, without overflow: 0, or -1. */
int ctl_parse_uint(const char *s, uint64_t *out);

/*
 * Parses the command's flags, nflags words in which a "--flag" without '='
 * takes the word after it as its value (flags[nflags] is NULL), into o,
 * zeroed by the caller; then checks that the required flags were given.
 * Returns 0, or an exit status once the message is printed. The values in o
 * point into the strings of flags, not into the array.
 */
int ctl_parse_flags(const struct ctx *x, char *const *flags, size_t nflags, struct opts *o);

/* 1 if arg ("--follow") names a flag that takes no value, so main() must not give it the next word. */
int ctl_flag_is_switch(const char *arg);

/* "verb sub --required X [--optional Y]" and the command's help line. */
void ctl_print_command_usage(FILE *f, const struct command *cmd);

/* ----- output (ctl_output.c) ----- */

/* The fields of one kind of object, in the order they are shown. */
struct out_table {
	const struct out_field *f;
	size_t n;
};

/* What agents rotate-token answers. */
struct ctl_rotation {
	uint64_t agent_id;
	char token[SC_TOKEN_MAX + 1];
};

/*
 * What wallet transfer and wallet adjust answer, shaped as the wire's
 * results (libsidecard hands them back as separate out parameters).
 */
struct ctl_transfer {
	sc_micros amount;
	sc_wallet from, to;
	uint64_t transactions[2]; /* the debit's id, then the credit's */
};

struct ctl_adjustment {
	sc_wallet wallet;
	uint64_t transaction_id;
};

/* What wallet carve and wallet release answer. */
struct ctl_carve {
	sc_wallet agent, org;
	uint64_t transaction_id; /* 0 for a release */
};

/* Full objects (…_out) and the columns of their list tables (…_cols). */
extern const struct out_table ctl_wallet_out, ctl_rule_out, ctl_org_out, ctl_org_cols,
	ctl_agent_out, ctl_agent_cols, ctl_transaction_out, ctl_transaction_cols,
	ctl_txn_summary_out, ctl_top_agent_out, ctl_fleet_out, ctl_decision_out, ctl_score_out,
	ctl_event_out, ctl_event_cols, ctl_settlement_out, ctl_task_usage_out, ctl_transfer_out,
	ctl_adjustment_out, ctl_spend_out, ctl_carve_out, ctl_price_out, ctl_alert_out,
	ctl_alert_cols, ctl_snapshot_out, ctl_agent_created_out, ctl_rotation_out,
	ctl_access_token_out, ctl_access_token_cols;

/* One object: JSON, or the human detail view. */
void ctl_show(const struct ctx *x, struct out_table t, const void *obj);

/* A list: a JSON array of full objects, or a table of the columns. */
void ctl_show_list(const struct ctx *x, struct out_table full, struct out_table cols,
                   const void *rows, size_t n, size_t stride);

/* One object on one line: a JSON line, or the human cells of t separated by two spaces. */
void ctl_show_line(const struct ctx *x, struct out_table t, const void *obj);
/* s as a JSON string, quoted and escaped, on stdout. */
void ctl_json_str(const char *s);

/* Micro-dollars as "$2.40" or "-$2.40". */
void ctl_usd(sc_micros m, char *buf, size_t len);

/* ----- demo (ctl_demo.c) ----- */

/*
 * `sidecardctl demo`: starts a private daemon, simulates a fleet of agents
 * against it and prints what happened. Needs no connection in x.
 */
int ctl_demo(struct ctx *x, const struct opts *o);

#endif
