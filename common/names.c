/*
 * names.c: the text forms of sidecard's enumerations.
 *
 * Priorities, agent statuses, report outcomes and transaction statuses travel
 * on the wire and appear in the CLI as lowercase words ("critical",
 * "frozen"). Each enumeration has one table here, indexed by its value, and
 * both directions (name and parse) read that table, so the words are spelled
 * once for the library, the CLI and the daemon.
 *
 * Threads: any thread, no state; the strings are constants.
 */
#include <string.h>

#include "common.h"
#include "sidecard.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static const char *const priority_names[] = {
	[SC_PRIORITY_NORMAL] = "normal",
	[SC_PRIORITY_HIGH] = "high",
	[SC_PRIORITY_CRITICAL] = "critical",
};

static const char *const status_names[] = {
	[SC_STATUS_ACTIVE] = "active",
	[SC_STATUS_THROTTLED] = "throttled",
	[SC_STATUS_FROZEN] = "frozen",
};

static const char *const outcome_names[] = {
	[SC_OUTCOME_SUCCESS] = "success",
	[SC_OUTCOME_FAILURE] = "failure",
	[SC_OUTCOME_PARTIAL] = "partial",
};

static const char *const event_type_names[] = {
	[SC_EVENT_STATUS_CHANGE] = "status_change",
	[SC_EVENT_ANOMALY] = "anomaly",
	[SC_EVENT_CRITICAL_OVERRIDE] = "critical_override",
};

static const char *const risk_names[] = {
	[SC_RISK_LOW] = "low",
	[SC_RISK_MEDIUM] = "medium",
	[SC_RISK_HIGH] = "high",
};

static const char *const period_names[] = {
	[SC_PERIOD_NONE] = "none",
	[SC_PERIOD_DAILY] = "daily",
	[SC_PERIOD_WEEKLY] = "weekly",
	[SC_PERIOD_MONTHLY] = "monthly",
};

static const char *const txn_status_names[] = {
	[SC_TXN_PENDING] = "pending",
	[SC_TXN_SETTLED] = "settled",
	[SC_TXN_BLOCKED] = "blocked",
	[SC_TXN_EXPIRED] = "expired",
};

static const char *const alert_kind_names[] = {
	[SC_ALERT_LOW_BALANCE] = "low_balance",
	[SC_ALERT_HIGH_VELOCITY] = "high_velocity",
	[SC_ALERT_BUDGET_EXCEEDED] = "budget_exceeded",
	[SC_ALERT_ANOMALY] = "anomaly",
};

static const char *const severity_names[] = {
	[SC_SEVERITY_WARNING] = "warning",
	[SC_SEVERITY_CRITICAL] = "critical",
};

#define NAMES(table) {table, COUNT(table)}

const struct sc_names sc_priority_names = NAMES(priority_names);
const struct sc_names sc_status_names = NAMES(status_names);
const struct sc_names sc_outcome_names = NAMES(outcome_names);
const struct sc_names sc_txn_status_names = NAMES(txn_status_names);
const struct sc_names sc_event_type_names = NAMES(event_type_names);
const struct sc_names sc_risk_names = NAMES(risk_names);
const struct sc_names sc_period_names = NAMES(period_names);
const struct sc_names sc_alert_kind_names = NAMES(alert_kind_names);
const struct sc_names sc_severity_names = NAMES(severity_names);

int sc_names_find(const struct sc_names *t, const char *s, size_t len)
{
	for (unsigned i = 0; i < t->n; i++)
		if (strlen(t->v[i]) == len && memcmp(t->v[i], s, len) == 0)
			return (int)i;
	return -1;
}

const char *sc_names_word(const struct sc_names *t, int v)
{
	return v >= 0 && (unsigned)v < t->n ? t->v[v] : "unknown";
}

/* The index of s in t, or SC_EINVAL. */
static int index_of(const struct sc_names *t, const char *s, unsigned *out)
{
	int i = s ? sc_names_find(t, s, strlen(s)) : -1;

	if (i < 0)
		return SC_EINVAL;
	*out = (unsigned)i;
	return 0;
}

const char *sc_priority_name(enum sc_priority p)
{
	return sc_names_word(&sc_priority_names, (int)p);
}

const char *sc_status_name(enum sc_status s)
{
	return sc_names_word(&sc_status_names, (int)s);
}

const char *sc_outcome_name(enum sc_outcome o)
{
	return sc_names_word(&sc_outcome_names, (int)o);
}

const char *sc_risk_name(enum sc_risk r)
{
	return sc_names_word(&sc_risk_names, (int)r);
}

const char *sc_event_type_name(enum sc_event_type t)
{
	return sc_names_word(&sc_event_type_names, (int)t);
}

const char *sc_period_name(enum sc_period p)
{
	return sc_names_word(&sc_period_names, (int)p);
}

const char *sc_alert_kind_name(enum sc_alert_kind k)
{
	return sc_names_word(&sc_alert_kind_names, (int)k);
}

const char *sc_severity_name(enum sc_severity s)
{
	return sc_names_word(&sc_severity_names, (int)s);
}

const char *sc_txn_status_name(enum sc_txn_status s)
{
	return sc_names_word(&sc_txn_status_names, (int)s);
}

int sc_priority_parse(const char *s, enum sc_priority *out)
{
	unsigned v;
	int rc = index_of(&sc_priority_names, s, &v);

	if (rc == 0)
		*out = (enum sc_priority)v;
	return rc;
}

int sc_status_parse(const char *s, enum sc_status *out)
{
	unsigned v;
	int rc = index_of(&sc_status_names, s, &v);

	if (rc == 0)
		*out = (enum sc_status)v;
	return rc;
}

int sc_outcome_parse(const char *s, enum sc_outcome *out)
{
	unsigned v;
	int rc = index_of(&sc_outcome_names, s, &v);

	if (rc == 0)
		*out = (enum sc_outcome)v;
	return rc;
}

int sc_txn_status_parse(const char *s, enum sc_txn_status *out)
{
	unsigned v;
	int rc = index_of(&sc_txn_status_names, s, &v);

	if (rc == 0)
		*out = (enum sc_txn_status)v;
	return rc;
}

int sc_event_type_parse(const char *s, enum sc_event_type *out)
{
	unsigned v;
	int rc = index_of(&sc_event_type_names, s, &v);

	if (rc == 0)
		*out = (enum sc_event_type)v;
	return rc;
}

int sc_risk_parse(const char *s, enum sc_risk *out)
{
	unsigned v;
	int rc = index_of(&sc_risk_names, s, &v);

	if (rc == 0)
		*out = (enum sc_risk)v;
	return rc;
}

int sc_period_parse(const char *s, enum sc_period *out)
{
	unsigned v;
	int rc = index_of(&sc_period_names, s, &v);

	if (rc == 0)
		*out = (enum sc_period)v;
	return rc;
}

int sc_alert_kind_parse(const char *s, enum sc_alert_kind *out)
{
	unsigned v;
	int rc = index_of(&sc_alert_kind_names, s, &v);

	if (rc == 0)
		*out = (enum sc_alert_kind)v;
	return rc;
}

int sc_severity_parse(const char *s, enum sc_severity *out)
{
	unsigned v;
	int rc = index_of(&sc_severity_names, s, &v);

	if (rc == 0)
		*out = (enum sc_severity)v;
	return rc;
}
