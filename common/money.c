/*
 * money.c: exact conversion between dollar strings and micro-dollars.
 *
 * Money is an int64_t number of micro-dollars everywhere in sidecard; this
 * file is the only place where dollars are spelled as text (the CLI and the
 * docs). Both directions work on integers digit by digit: no floating point,
 * so "2.40" is exactly 2400000 and every int64_t formats and parses back to
 * itself, INT64_MIN and INT64_MAX included.
 *
 * Accepted syntax of sc_money_parse():
 *
 *     amount = prefix 1*digit ["." 1*6digit]
 *     prefix = at most one sign ("-" or "+") and at most one "$", in
 *              either order ("-$2.40" and "$-2.40" are the same amount)
 *
 * that is, at least one digit before the point, and when a point is present
 * one to six digits after it. Anything else, including
 * surrounding spaces, exponents and a seventh decimal, is SC_EINVAL; a value
 * outside int64_t is SC_ERANGE. Negative values accumulate downwards so that
 * INT64_MIN, whose magnitude does not fit in int64_t, parses exactly.
 *
 * Threads: any thread, no state.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "sidecard.h"

#define MONEY_DECIMALS 6

/* v = v * 10 + sign * digit, or SC_ERANGE. */
static int accumulate(sc_micros *v, int sign, int digit)
{
	sc_micros r;

	if (__builtin_mul_overflow(*v, 10, &r) || __builtin_add_overflow(r, sign * digit, &r))
		return SC_ERANGE;
	*v = r;
	return 0;
}

static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

int sc_money_parse(const char *s, sc_micros *out)
{
	sc_micros v = 0;
	int sign = 1, seen_sign = 0, seen_dollar = 0, decimals = 0, rc;
	const char *p;

	if (s == NULL || out == NULL)
		return SC_EINVAL;
	for (p = s;; p++) {
		if ((*p == '-' || *p == '+') && !seen_sign) {
			seen_sign = 1;
			sign = *p == '-' ? -1 : 1;
		} else if (*p == '$' && !seen_dollar) {
			seen_dollar = 1;
		} else {
			break;
		}
	}
	if (!is_digit(*p))
		return SC_EINVAL;
	for (; is_digit(*p); p++)
		if ((rc = accumulate(&v, sign, *p - '0')) != 0)
			return rc;
	if (*p == '.') {
		p++;
		if (!is_digit(*p))
			return SC_EINVAL;
		for (; is_digit(*p); p++) {
			if (++decimals > MONEY_DECIMALS)
				return SC_EINVAL;
			if ((rc = accumulate(&v, sign, *p - '0')) != 0)
				return rc;
		}
	}
	if (*p != '\0')
		return SC_EINVAL;
	for (; decimals < MONEY_DECIMALS; decimals++)
		if ((rc = accumulate(&v, sign, 0)) != 0)
			return rc;
	*out = v;
	return 0;
}

char *sc_money_format(sc_micros m, char *buf, size_t len)
{
	char tmp[SC_MONEY_STRLEN];
	/* The magnitude as unsigned: -(uint64_t)INT64_MIN is well defined. */
	uint64_t mag = m < 0 ? -(uint64_t)m : (uint64_t)m;
	uint64_t per = (uint64_t)SC_MICROS_PER_USD;
	int n;

	if (buf == NULL || len == 0)
		return buf;
	n = snprintf(tmp, sizeof(tmp), "%s%" PRIu64 ".%06" PRIu64, m < 0 ? "-" : "", mag / per,
	             mag % per);
	/* Drop trailing zeros, keeping two decimals: "2.400000" -> "2.40". */
	while (tmp[n - 1] == '0' && tmp[n - 3] != '.')
		tmp[--n] = '\0';
	snprintf(buf, len, "%s", tmp);
	return buf;
}
