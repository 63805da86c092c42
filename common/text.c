/*
 * text.c: which text sidecard stores, and how its JSON surfaces write any
 * bytes they are given.
 *
 * Names (orgs, agents, rules, models), actions, types, keys, task ids,
 * reasons and time zones are stored, listed, printed by sidecardctl and
 * written as JSON, and read by clients whose strings must be valid UTF-8
 * (Python's str, JavaScript's TextDecoder in fatal mode). So the daemon
 * accepts such a string only if it is
 *
 *   - valid UTF-8 (RFC 3629: shortest forms only, no surrogates, nothing
 *     above U+10FFFF);
 *   - free of control characters: C0 (U+0000..U+001F), DEL (U+007F) and C1
 *     (U+0080..U+009F), which break lines, logs and terminals;
 *   - free of the bidirectional formatting characters U+202A..U+202E and
 *     U+2066..U+2069, which make a name display as another one (CVE-2021-42574,
 *     "Trojan Source").
 *
 * An error message may quote what a client sent (an unknown field's name, an
 * org name it looked for, cut to 64 bytes): sc_text_clean makes any bytes
 * such text, each byte that is not part of valid UTF-8 and each control or
 * bidirectional character becoming U+FFFD, so a strict client can decode
 * the error that explains its mistake.
 *
 * The JSON writer (sc_json_str) turns whatever it is given into a valid JSON
 * string: control and bidirectional characters are escaped as \uXXXX, and a
 * byte that is not part of valid UTF-8 becomes U+FFFD, so what an older
 * daemon stored, or a metadata value, never makes the output invalid.
 *
 * Threads: any thread, no state.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "sidecard.h"

size_t sc_utf8_decode(const char *s, size_t len, uint32_t *cp)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n;
	uint32_t c, min;

	if (len == 0)
		return 0;
	if (p[0] < 0x80) {
		*cp = p[0];
		return 1;
	}
	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		n = 2, c = p[0] & 0x1f, min = 0x80;
	} else if ((p[0] & 0xf0) == 0xe0) {
		n = 3, c = p[0] & 0x0f, min = 0x800;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		n = 4, c = p[0] & 0x07, min = 0x10000;
	} else {
		return 0;
	}
	if (len < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (p[i] & 0x3f);
	}
	if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return n;
}

static int is_control(uint32_t c)
{
	return c < 0x20 || (c >= 0x7f && c <= 0x9f);
}

static int is_bidi(uint32_t c)
{
	return (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069);
}

int sc_text_check(const char *s, size_t len, char *why, size_t whylen)
{
	size_t i = 0, n;
	uint32_t c;

	while (i < len) {
		if ((n = sc_utf8_decode(s + i, len - i, &c)) == 0) {
			sc_errorf(why, whylen, "not valid UTF-8 (byte %zu)", i);
			return SC_EINVAL;
		}
		if (is_control(c)) {
			sc_errorf(why, whylen, "must not contain control characters (U+%04X at byte %zu)",
			          (unsigned)c, i);
			return SC_EINVAL;
		}
		if (is_bidi(c)) {
			sc_errorf(why, whylen,
			          "must not contain bidirectional formatting characters (U+%04X at "
			          "byte %zu)",
			          (unsigned)c, i);
			return SC_EINVAL;
		}
		i += n;
	}
	return 0;
}

size_t sc_text_clean(const char *s, size_t len, char *out, size_t outlen)
{
	static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD */
	size_t i = 0, o = 0, n;
	uint32_t c;

	while (i < len) {
		const char *from = s + i;
		size_t w;

		n = sc_utf8_decode(s + i, len - i, &c);
		if (n == 0 || is_control(c) || is_bidi(c)) {
			from = replacement;
			w = sizeof(replacement) - 1;
		} else {
			w = n;
		}
		/* a character that does not fit is left out whole, never cut */
		if (w > outlen - o)
			break;
		memcpy(out + o, from, w);
		o += w;
		i += n ? n : 1;
	}
	return o;
}

void sc_json_str(FILE *out, const char *s, size_t len)
{
	size_t i = 0, n;
	uint32_t c;

	fputc('"', out);
	while (i < len) {
		if ((n = sc_utf8_decode(s + i, len - i, &c)) == 0) {
			fputs("\\ufffd", out);
			i++;
			continue;
		}
		if (c == '"' || c == '\\')
			fprintf(out, "\\%c", (char)c);
		else if (is_control(c) || is_bidi(c))
			fprintf(out, "\\u%04x", (unsigned)c);
		else
			fwrite(s + i, 1, n, out);
		i += n;
	}
	fputc('"', out);
}
