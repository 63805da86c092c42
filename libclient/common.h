/*
 * common.h: helpers shared inside the tree by the daemon, the client library
 * and the tests, but not part of the public interface: they are not exported
 * from libsidecard (hidden visibility) and may change at any time.
 */
#ifndef SIDECARD_COMMON_H
#define SIDECARD_COMMON_H

#include <stddef.h>

/* Formats an error message into buf (len bytes); nothing if buf is NULL. */
void sc_errorf(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The words of one enumeration, indexed by value (names.c). */
struct sc_names {
	const char *const *v;
	unsigned n;
};

extern const struct sc_names sc_priority_names, sc_status_names, sc_outcome_names,
	sc_txn_status_names, sc_event_type_names, sc_risk_names, sc_period_names,
	sc_alert_kind_names, sc_severity_names;

/* The word of value v, or "unknown" for a value out of range. */
const char *sc_names_word(const struct sc_names *t, int v);
/* The value whose word is s[0..len), or -1. */
int sc_names_find(const struct sc_names *t, const char *s, size_t len);

struct sc_client;
/*
 * A string of the daemon's `stats` (state_path) into buf (len bytes):
 * 0, SC_ENOTFOUND, or a call's error with sc_last_error() (client_admin.c).
 */
int sc_client_stat_str(struct sc_client *c, const char *name, char *buf, size_t len);

#endif /* SIDECARD_COMMON_H */
