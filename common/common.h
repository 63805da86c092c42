/*
 * common.h: helpers shared inside the tree by the daemon, the client library
 * and the tests, but not part of the public interface: they are not exported
 * from libsidecard (hidden visibility) and may change at any time.
 */
#ifndef SIDECARD_COMMON_H
#define SIDECARD_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/*
 * a + b, or INT64_MAX where the sum would overflow: totals, counters and
 * times that must stop at the top rather than wrap. Inline: the gate adds
 * several on every check.
 */
static inline int64_t sc_add_sat(int64_t a, int64_t b)
{
	int64_t r;

	return __builtin_add_overflow(a, b, &r) ? INT64_MAX : r;
}

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

/*
 * Text (text.c). sc_utf8_decode: the length (1 to 4) of the valid UTF-8
 * sequence at s and its code point in *cp, or 0 if s does not start with one.
 * sc_text_check: 0 if s[0..len) is text the daemon stores (valid UTF-8, no
 * control or bidirectional formatting characters), else SC_EINVAL with the
 * rule broken and where in why ("not valid UTF-8 (byte 3)").
 * sc_json_str: writes s[0..len) to out as a JSON string, valid whatever the bytes.
 * sc_text_clean: copies s[0..len) to out (at most outlen bytes) as text
 * sc_text_check accepts, each byte that is not UTF-8 and each control or
 * bidirectional character as U+FFFD, whole characters only; returns the
 * bytes written.
 */
size_t sc_utf8_decode(const char *s, size_t len, uint32_t *cp);
int sc_text_check(const char *s, size_t len, char *why, size_t whylen);
void sc_json_str(FILE *out, const char *s, size_t len);
size_t sc_text_clean(const char *s, size_t len, char *out, size_t outlen);

struct sc_client;
/*
 * A string of the daemon's `stats` (state_path) into buf (len bytes):
 * 0, SC_ENOTFOUND, or a call's error with sc_last_error() (client_admin.c).
 */
int sc_client_stat_str(struct sc_client *c, const char *name, char *buf, size_t len);

#endif /* SIDECARD_COMMON_H */
