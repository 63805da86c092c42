/*
 * ctl_options.c: the flags of sidecardctl's commands: their table, the
 * parsing and checking of their values, and how a command lists them in
 * usage.
 *
 * Dollar amounts are read with sc_money_parse(). Times (--since, --until)
 * and --effective-from, --at are read as ISO-8601 UTC to the second ("2026-11-24T10:00:00Z") or as
 * integer microseconds since the epoch, the wire's unit. --rule takes a
 * comma-separated key=value specification and may be repeated.
 *
 * DESIGN. `options` holds every flag, its value kind and how it is shown in
 * usage. Flags are validated against the command before it runs (only the
 * flags it allows, each once but --rule, every required one given), so a
 * handler only reads parsed values from struct opts.
 *
 * Threads: one. Ownership: parsed strings point into argv; nothing here
 * allocates.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ctl.h"

enum kind {
	K_STR,        /* text, at most `max` bytes */
	K_ID,         /* a positive integer */
	K_MONEY,      /* dollars */
	K_NUMBER,     /* a non-negative integer */
	K_PRIORITY,   /* normal, high, critical */
	K_STATUS,     /* active, throttled, frozen */
	K_TXN_STATUS, /* pending, settled, blocked, expired */
	K_RISK,       /* low, medium, high */
	K_PERIOD,     /* none, daily, weekly, monthly */
	K_TIME,       /* ISO-8601 UTC or microseconds, after the epoch */
	K_OUTCOME,    /* success, failure, partial, or a command's exit status */
	K_RULE,       /* name=...,match=...,limits; repeatable */
	K_ALERT_KIND, /* low_balance, high_velocity, budget_exceeded, anomaly */
	K_SEVERITY,   /* warning, critical */
	K_ROLE,       /* the role of a token an administrator issues: reader */
	K_SWITCH,     /* no value: given or not */
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
	[O_LOW_BALANCE] = { "low-balance", K_MONEY, "$", 0 },
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
	[O_TASK_ID] = { "task-id", K_STR, "ID", SC_KEY_MAX },
	[O_TRANSACTION_ID] = { "transaction-id", K_ID, "ID", 0 },
	[O_FROM_AGENT_ID] = { "from-agent-id", K_ID, "ID", 0 },
	[O_FROM_ORG_ID] = { "from-org-id", K_ID, "ID", 0 },
	[O_TO_AGENT_ID] = { "to-agent-id", K_ID, "ID", 0 },
	[O_TO_ORG_ID] = { "to-org-id", K_ID, "ID", 0 },
	[O_TOKEN_ID] = { "token-id", K_ID, "ID", 0 },
	[O_ROLE] = { "role", K_ROLE, "reader", 0 },
	/* Signed for wallet adjust ("-2.50" debits); the daemon refuses what a command cannot take. */
	[O_AMOUNT] = { "amount", K_MONEY, "$", 0 },
	[O_REASON] = { "reason", K_STR, "TEXT", SC_REASON_MAX },
	[O_OUTCOME] = { "outcome", K_OUTCOME, "success|failure|partial", 0 },
	[O_ACTUAL_COST] = { "actual-cost", K_MONEY, "$", 0 },
	[O_MODEL] = { "model", K_STR, "MODEL", SC_NAME_MAX },
	[O_INPUT_TOKENS] = { "input-tokens", K_NUMBER, "N", 0 },
	[O_OUTPUT_TOKENS] = { "output-tokens", K_NUMBER, "N", 0 },
	[O_CACHED_INPUT_TOKENS] = { "cached-input-tokens", K_NUMBER, "N", 0 },
	/* Rates: dollars per million tokens. */
	[O_INPUT] = { "input", K_MONEY, "$/M", 0 },
	[O_OUTPUT] = { "output", K_MONEY, "$/M", 0 },
	[O_CACHED_INPUT] = { "cached-input", K_MONEY, "$/M", 0 },
	[O_EFFECTIVE_FROM] = { "effective-from", K_TIME, "TIME", 0 },
	[O_AT] = { "at", K_TIME, "TIME", 0 },
	[O_TXN_STATUS] = { "status", K_TXN_STATUS, "pending|settled|blocked|expired", 0 },
	[O_RISK_LEVEL] = { "risk-level", K_RISK, "low|medium|high", 0 },
	[O_ALERT_KIND] = { "kind", K_ALERT_KIND, "low_balance|high_velocity|budget_exceeded|anomaly",
	                   0 },
	[O_SEVERITY] = { "severity", K_SEVERITY, "warning|critical", 0 },
	[O_SINCE] = { "since", K_TIME, "TIME", 0 },
	[O_UNTIL] = { "until", K_TIME, "TIME", 0 },
	[O_BEFORE] = { "before", K_ID, "ID", 0 },
	[O_LIMIT] = { "limit", K_NUMBER, "N", 0 },
	[O_STATE_DIR] = { "state-dir", K_STR, "DIR", 3072 },
	[O_SEGMENT] = { "segment", K_STR, "FILE", 3072 },
	[O_FROM] = { "from", K_NUMBER, "SEQ", 0 },
	[O_TRUNCATE_AT_DAMAGE] = { "truncate-at-damage", K_SWITCH, NULL, 0 },
	[O_TIMEZONE] = { "timezone", K_STR, "ZONE", 63 },
	[O_PERIOD] = { "period", K_PERIOD, "none|daily|weekly|monthly", 0 },
	[O_FOLLOW] = { "follow", K_SWITCH, NULL, 0 },
	[O_MINUTES] = { "minutes", K_NUMBER, "M", 0 },
	[O_SPEED] = { "speed", K_NUMBER, "N", 0 },
	[O_SEED] = { "seed", K_NUMBER, "S", 0 },
	[O_DAEMON] = { "daemon", K_STR, "PATH", 3072 },
};

int ctl_usage_error(const struct ctx *x, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "sidecardctl: %s%s", x->what ? x->what : "", x->what ? ": " : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\n(see sidecardctl --help)\n", stderr);
	return EXIT_ERROR;
}

int ctl_parse_uint(const char *s, uint64_t *out)
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

	if (ctl_parse_uint(s, &us) == 0) {
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
		return ctl_usage_error(x, "--%s: longer than %zu bytes", flag, cap - 1);
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
		return ctl_usage_error(x, "--rule: '%.*s' is not key=value", (int)len, item);
	klen = (size_t)(eq - item);
	if (len - klen - 1 >= sizeof(value))
		return ctl_usage_error(x, "--rule: value of '%.*s' too long", (int)klen, item);
	memcpy(value, eq + 1, len - klen - 1);
	value[len - klen - 1] = '\0';
	for (i = 0; i < COUNT(rule_keys); i++)
		if (same_key(rule_keys[i].key, item, klen))
			break;
	if (i == COUNT(rule_keys))
		return ctl_usage_error(x, "--rule: unknown key '%.*s'", (int)klen, item);
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
			return ctl_usage_error(x, "--rule: %s: invalid dollar amount '%s'",
			                       rule_keys[i].key, value);
		return 0;
	default:
		if (ctl_parse_uint(value, &n) != 0 || n > INT64_MAX)
			return ctl_usage_error(x, "--rule: %s: not a count: '%s'",
			                       rule_keys[i].key, value);
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
		return ctl_usage_error(x, "--rule: at most %d rules", SC_RULES_MAX);
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
		return ctl_usage_error(x, "--rule: needs name= and match=: '%s'", spec);
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
	enum sc_period pe = SC_PERIOD_NONE;
	enum sc_alert_kind ak = SC_ALERT_LOW_BALANCE;
	enum sc_severity sv = SC_SEVERITY_WARNING;
	uint64_t n;
	int rc = 0;

	switch (d->kind) {
	case K_STR:
		if (v[0] == '\0' || strlen(v) > d->max)
			return ctl_usage_error(x, "--%s: must be 1 to %zu bytes", d->flag, d->max);
		break;
	case K_ID:
		if (ctl_parse_uint(v, &n) != 0 || n == 0 || n > INT64_MAX)
			return ctl_usage_error(x, "--%s: not an id: '%s'", d->flag, v);
		o->num[i] = (int64_t)n;
		break;
	case K_NUMBER:
		if (ctl_parse_uint(v, &n) != 0 || n > INT64_MAX)
			return ctl_usage_error(x, "--%s: not a non-negative integer: '%s'",
			                       d->flag, v);
		o->num[i] = (int64_t)n;
		break;
	case K_MONEY:
		rc = sc_money_parse(v, &o->num[i]);
		if (rc != 0)
			return ctl_usage_error(x, "--%s: invalid dollar amount '%s' (%s)",
			                       d->flag, v,
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
	case K_PERIOD:
		rc = sc_period_parse(v, &pe);
		o->num[i] = pe;
		break;
	case K_TIME:
		if (parse_time(v, &o->num[i]) != 0)
			return ctl_usage_error(x, "--%s: not a time after the epoch: '%s' (expected "
			                          "2026-11-24T10:00:00Z, UTC, or microseconds)",
			                       d->flag, v);
		break;
	case K_OUTCOME:
		/* A hook may pass its command's exit status: 0 success, else failure. */
		if (ctl_parse_uint(v, &n) == 0)
			oc = n == 0 ? SC_OUTCOME_SUCCESS : SC_OUTCOME_FAILURE;
		else
			rc = sc_outcome_parse(v, &oc);
		o->num[i] = oc;
		break;
	case K_RULE:
		return parse_rule(x, v, o);
	case K_ALERT_KIND:
		rc = sc_alert_kind_parse(v, &ak);
		o->num[i] = ak;
		break;
	case K_SEVERITY:
		rc = sc_severity_parse(v, &sv);
		o->num[i] = sv;
		break;
	case K_ROLE:
		/* Agents get their tokens from agents create; administrators need none. */
		rc = strcmp(v, "reader") == 0 ? 0 : SC_EINVAL;
		break;
	case K_SWITCH:
		if (v != NULL)
			return ctl_usage_error(x, "--%s takes no value", d->flag);
		o->num[i] = 1;
		return 0;
	}
	if (rc != 0)
		return ctl_usage_error(x, "--%s: must be one of %s, not '%s'", d->flag, d->meta, v);
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
		return ctl_usage_error(x, "unknown flag --%.*s", (int)len, name);
	if (options[i].kind == K_SWITCH)
		value = eq ? eq + 1 : NULL;
	else if (value == NULL)
		return ctl_usage_error(x, "--%s needs a value", options[i].flag);
	if ((o->given & BIT(i)) && options[i].kind != K_RULE)
		return ctl_usage_error(x, "--%s given twice", options[i].flag);
	*used_next = eq == NULL && options[i].kind != K_SWITCH;
	o->given |= BIT(i);
	return parse_value(x, (enum opt)i, value, o);
}

int ctl_parse_flags(const struct ctx *x, char *const *flags, size_t nflags, struct opts *o)
{
	int used_next, rc, i;
	size_t k;

	for (k = 0; k < nflags; k += 1 + (size_t)used_next) {
		used_next = 0;
		rc = parse_flag(x, flags[k], flags[k + 1], &used_next, o);
		if (rc != 0)
			return rc;
	}
	for (i = 0; i < O_COUNT_; i++)
		if ((x->cmd->required & BIT(i)) && !(o->given & BIT(i)))
			return ctl_usage_error(x, "--%s is required", options[i].flag);
	return 0;
}

int ctl_flag_is_switch(const char *arg)
{
	for (int i = 0; i < O_COUNT_; i++)
		if (options[i].kind == K_SWITCH && strncmp(arg, "--", 2) == 0 &&
		    strcmp(arg + 2, options[i].flag) == 0)
			return 1;
	return 0;
}

/* Required flags first, in the order of enum opt. */
void ctl_print_command_usage(FILE *f, const struct command *cmd)
{
	int i, required;

	fprintf(f, "  %s%s%s", cmd->verb, cmd->sub ? " " : "", cmd->sub ? cmd->sub : "");
	for (required = 1; required >= 0; required--) {
		for (i = 0; i < O_COUNT_; i++) {
			if (!(cmd->allowed & BIT(i)) || !(cmd->required & BIT(i)) != !required)
				continue;
			if (options[i].kind == K_SWITCH)
				fprintf(f, required ? " --%s" : " [--%s]", options[i].flag);
			else
				fprintf(f, required ? " --%s %s" : " [--%s %s]", options[i].flag,
				        options[i].meta);
		}
	}
	fprintf(f, "\n      %s\n", cmd->help);
}
