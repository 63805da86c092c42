/*
 * error.c: names and messages of libsidecard's return codes.
 *
 * Every function here is generated from the one table in sidecard.h,
 * SC_ERRNO_MAP, so a code, its wire name ("not_found") and its message can
 * never drift apart. The daemon links this file too (libsccommon) and puts
 * the same names in its RPC error maps; the client turns a wire name back
 * into a code with sc_err_from_name().
 *
 * Codes that are not SC_E* values are negated errno values passed through
 * from the system (connect, read, write); they are described by glibc's
 * strerrorname_np() ("ENOENT") and strerrordesc_np() ("No such file or
 * directory"), which return constant strings.
 *
 * Threads: any thread, no state. Every string returned is a constant with
 * static storage; nothing is formatted into a shared buffer.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "sidecard.h"

const char *sc_err_name(int code)
{
	const char *name;

	switch (code) {
#define SC_XX_(n, value, wire, msg) \
	case SC_E##n:                   \
		return wire;
		SC_ERRNO_MAP(SC_XX_)
#undef SC_XX_
	case 0:
		return "ok";
	default:
		break;
	}
	if (code < 0 && code != INT_MIN) {
		name = strerrorname_np(-code);
		if (name != NULL)
			return name;
	}
	return "unknown";
}

const char *sc_strerror(int code)
{
	const char *desc;

	switch (code) {
#define SC_XX_(n, value, wire, msg) \
	case SC_E##n:                   \
		return msg;
		SC_ERRNO_MAP(SC_XX_)
#undef SC_XX_
	case 0:
		return "success";
	default:
		break;
	}
	if (code < 0 && code != INT_MIN) {
		desc = strerrordesc_np(-code);
		if (desc != NULL)
			return desc;
	}
	return "unknown error";
}

int sc_err_from_name(const char *name)
{
	static const struct {
		const char *wire;
		int code;
	} table[] = {
#define SC_XX_(n, value, w, msg) { w, SC_E##n },
		SC_ERRNO_MAP(SC_XX_)
#undef SC_XX_
	};
	size_t i;

	if (name == NULL)
		return SC_EPROTO;
	for (i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if (strcmp(table[i].wire, name) == 0)
			return table[i].code;
	return SC_EPROTO;
}

void sc_errorf(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (!buf || !len)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
}
