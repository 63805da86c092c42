/*
 * tz.c: POSIX TZ rules, the TZif footer they are read from, and the local
 * calendar (day, Monday week, month) that budget periods reset on.
 *
 * Threads: any; no state. Only tz_resolve touches the file system.
 *
 * DESIGN
 *
 * A zone is a standard offset and, with DST, two yearly rules: the start,
 * given in standard local time, and the end, given in DST local time
 * (POSIX). Each year Y yields the two instants start(Y) and end(Y). The
 * offset at t is that of the latest transition at or before t, looking at
 * the years Y-2..Y+1 around t's UTC year: a rule time may be up to 167 hours
 * past a date (RFC 8536), so a transition can spill into the next year, and
 * taking the latest one rather than asking "is t between start and end of
 * its year" (as glibc does) also gets permanent DST right ("EST5EDT,0/0,
 * J365/25": end(Y) and start(Y+1) coincide, and a start wins a tie).
 *
 * Local time L(t) = t + offset(t) is piecewise continuous with jumps at the
 * transitions, so it can skip a midnight (spring forward at 00:00) or reach
 * it twice (fall back at 00:00). Local day D begins at B(D), the first t
 * with L(t) >= D * 86400. B never decreases with D, and the day at t is the
 * largest D with B(D) <= t; so the day key never goes back, a skipped
 * midnight begins the day at the jump, and after a repeated midnight the
 * repeated hour belongs to the new day. All of it is integer seconds; only
 * tz_calendar's interface is in microseconds.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "sidecard.h"
#include "tz.h"

#define SECS_PER_DAY 86400
#define US_PER_SEC INT64_C(1000000)
/* Clamps keeping every intermediate far inside int64 (and days inside int32). */
#define OFFSET_T_MAX (INT64_C(1) << 47)
#define CALENDAR_US_MAX (INT64_C(1) << 60)
#define ZONE_FILE_MAX (1 << 20)

static int64_t floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;

	return q - ((a % b) != 0 && (a < 0) != (b < 0));
}

static int64_t floor_mod(int64_t a, int64_t b)
{
	return a - floor_div(a, b) * b;
}

static int64_t clamp(int64_t v, int64_t max)
{
	return v > max ? max : v < -max ? -max : v;
}

/* ------------------------------------------------------------ civil dates */

/* Howard Hinnant's algorithms: 400-year eras of 146097 days, March-based years. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t mm = m, era, yoe, doy, doe;

	y -= mm <= 2;
	era = floor_div(y, 400);
	yoe = y - era * 400;
	doy = (153 * (mm > 2 ? mm - 3 : mm + 9) + 2) / 5 + (int64_t)d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

int32_t tz_days_from_civil(int64_t y, unsigned m, unsigned d)
{
	return (int32_t)days_from_civil(y, m, d);
}

void tz_civil_from_days(int32_t days, int64_t *y, unsigned *m, unsigned *d)
{
	int64_t z = (int64_t)days + 719468;
	int64_t era = floor_div(z, 146097);
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;

	*d = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
	*m = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

static int is_leap(int64_t y)
{
	return y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
}

/* ---------------------------------------------------------------- parsing */

struct parser {
	const char *s;
	size_t len, pos;
	char *err;
	size_t errlen;
};

static int peek(const struct parser *p)
{
	return p->pos < p->len ? (unsigned char)p->s[p->pos] : -1;
}

/* ASCII only, whatever the locale */
static int is_alpha(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static int is_digit(int c)
{
	return c >= '0' && c <= '9';
}

/* The character at the parser, printable whatever the input bytes are. */
static const char *show_char(const struct parser *p, char *buf, size_t size)
{
	int c = peek(p);

	if (c < 0)
		snprintf(buf, size, "end of rule");
	else if (c >= ' ' && c <= '~')
		snprintf(buf, size, "'%c'", c);
	else
		snprintf(buf, size, "byte 0x%02x", (unsigned)c);
	return buf;
}

static int __attribute__((format(printf, 2, 3))) fail(struct parser *p, const char *fmt, ...)
{
	char what[128];
	va_list ap;
	size_t i;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	/* quote the rule only when it is printable: it may be any bytes */
	for (i = 0; i < p->len && p->s[i] >= ' ' && p->s[i] <= '~'; i++)
		;
	if (i == p->len && p->len <= 2 * TZ_RULE_MAX)
		sc_errorf(p->err, p->errlen, "timezone: %s at byte %zu of '%.*s'", what, p->pos,
		          (int)p->len, p->s);
	else
		sc_errorf(p->err, p->errlen, "timezone: %s at byte %zu", what, p->pos);
	return SC_EINVAL;
}

/* A run of digits, saturating at 99999 (enough to be out of every range). */
static int parse_number(struct parser *p, long *v)
{
	size_t start = p->pos;

	*v = 0;
	while (is_digit(peek(p))) {
		if (*v < 99999)
			*v = *v * 10 + (p->s[p->pos] - '0');
		p->pos++;
	}
	return p->pos > start ? 0 : -1;
}

/* std or DST name: three or more letters, or <three or more of [A-Za-z0-9+-]>. */
static int parse_name(struct parser *p, const char *which)
{
	char c[16];
	size_t start;

	if (peek(p) == '<') {
		start = ++p->pos;
		for (;;) {
			int ch = peek(p);

			if (ch == '>')
				break;
			if (ch < 0)
				return fail(p, "unterminated <%s name>", which);
			if (!is_alpha(ch) && !is_digit(ch) && ch != '+' && ch != '-')
				return fail(p, "%s not allowed in a <%s name>", show_char(p, c, sizeof(c)),
				            which);
			p->pos++;
		}
		if (p->pos - start < 3) {
			p->pos = start;
			return fail(p, "%s name shorter than 3 characters", which);
		}
		p->pos++;
		return 0;
	}
	start = p->pos;
	while (is_alpha(peek(p)))
		p->pos++;
	if (p->pos == start)
		return fail(p, "expected a %s name, found %s", which, show_char(p, c, sizeof(c)));
	if (p->pos - start < 3) {
		p->pos = start;
		return fail(p, "%s name shorter than 3 letters", which);
	}
	return 0;
}

/*
 * [+-]hh[:mm[:ss]] as seconds, hours within 0..max_h. The sign is the
 * string's: for offsets, positive is west of UTC.
 */
static int parse_hms(struct parser *p, const char *what, long max_h, int32_t *out)
{
	static const char *const unit[] = { "minutes", "seconds" };
	long h, v, sign = 1, secs;
	size_t at = p->pos;
	char c[16];

	if (peek(p) == '+' || peek(p) == '-')
		sign = p->s[p->pos++] == '-' ? -1 : 1;
	if (parse_number(p, &h) != 0)
		return fail(p, "expected the hours of the %s, found %s", what, show_char(p, c, sizeof(c)));
	if (h > max_h) {
		p->pos = at;
		return fail(p, "%s hours out of range (at most %ld)", what, max_h);
	}
	secs = h * 3600;
	for (int i = 0; i < 2 && peek(p) == ':'; i++) {
		at = ++p->pos;
		if (parse_number(p, &v) != 0 || p->pos - at > 2 || v > 59) {
			p->pos = at;
			return fail(p, "%s %s must be 00..59", what, unit[i]);
		}
		secs += i == 0 ? v * 60 : v;
	}
	*out = (int32_t)(sign * secs);
	return 0;
}

/* One number of a rule date, within lo..hi. */
static int parse_field(struct parser *p, const char *what, long lo, long hi, long *v)
{
	size_t at = p->pos;
	char c[16];

	if (parse_number(p, v) != 0)
		return fail(p, "expected the %s, found %s", what, show_char(p, c, sizeof(c)));
	if (*v < lo || *v > hi) {
		p->pos = at;
		return fail(p, "%s %ld out of range (%ld..%ld)", what, *v, lo, hi);
	}
	return 0;
}

/* Jn, n or Mm.w.d, then an optional /time (default 02:00:00). */
static int parse_rule(struct parser *p, const char *which, struct tz_rule *r)
{
	char c[16];
	long v;
	int rc;

	memset(r, 0, sizeof(*r));
	if (peek(p) == 'J') {
		p->pos++;
		if ((rc = parse_field(p, "Julian day (Jn)", 1, 365, &v)) != 0)
			return rc;
		r->kind = TZ_JULIAN1;
		r->day = (uint16_t)v;
	} else if (is_digit(peek(p))) {
		if ((rc = parse_field(p, "zero-based day (n)", 0, 365, &v)) != 0)
			return rc;
		r->kind = TZ_JULIAN0;
		r->day = (uint16_t)v;
	} else if (peek(p) == 'M') {
		p->pos++;
		r->kind = TZ_MWD;
		if ((rc = parse_field(p, "month (Mm.w.d)", 1, 12, &v)) != 0)
			return rc;
		r->month = (uint8_t)v;
		if (peek(p) != '.')
			return fail(p, "expected '.' after the month, found %s", show_char(p, c, sizeof(c)));
		p->pos++;
		if ((rc = parse_field(p, "week (Mm.w.d)", 1, 5, &v)) != 0)
			return rc;
		r->week = (uint8_t)v;
		if (peek(p) != '.')
			return fail(p, "expected '.' after the week, found %s", show_char(p, c, sizeof(c)));
		p->pos++;
		if ((rc = parse_field(p, "weekday (Mm.w.d)", 0, 6, &v)) != 0)
			return rc;
		r->day = (uint16_t)v;
	} else {
		return fail(p, "expected the DST %s rule (Jn, n or Mm.w.d), found %s", which,
		            show_char(p, c, sizeof(c)));
	}
	r->time = 2 * 3600;
	if (peek(p) == '/') {
		p->pos++;
		return parse_hms(p, "transition time", 167, &r->time);
	}
	return 0;
}

int tz_parse(const char *s, size_t len, struct tz *out, char *err, size_t errlen)
{
	struct parser p = { s, len, 0, err, errlen };
	const char *nul = len > 0 ? memchr(s, '\0', len) : NULL;
	int32_t west;
	char c[16];
	int rc;

	memset(out, 0, sizeof(*out));
	if (len == 0)
		return fail(&p, "empty rule");
	if (len > TZ_RULE_MAX)
		return fail(&p, "rule longer than %d bytes", TZ_RULE_MAX);
	if (nul != NULL) {
		p.pos = (size_t)(nul - s);
		return fail(&p, "NUL byte in the rule");
	}
	if ((rc = parse_name(&p, "standard time")) != 0)
		return rc;
	if (peek(&p) != '+' && peek(&p) != '-' && !is_digit(peek(&p)))
		return fail(&p, "expected the offset from UTC, found %s", show_char(&p, c, sizeof(c)));
	if ((rc = parse_hms(&p, "UTC offset", 24, &west)) != 0)
		return rc;
	out->std_off = -west;
	if (p.pos == len)
		return 0;
	if ((rc = parse_name(&p, "DST")) != 0)
		return rc;
	out->has_dst = 1;
	out->dst_off = out->std_off + 3600;
	if (peek(&p) == '+' || peek(&p) == '-' || is_digit(peek(&p))) {
		if ((rc = parse_hms(&p, "DST offset", 24, &west)) != 0)
			return rc;
		out->dst_off = -west;
	}
	if (p.pos == len) {
		/* POSIX leaves the default to the implementation; glibc's is the US rule */
		out->start = (struct tz_rule){ .kind = TZ_MWD, .month = 3, .week = 2, .time = 7200 };
		out->end = (struct tz_rule){ .kind = TZ_MWD, .month = 11, .week = 1, .time = 7200 };
		return 0;
	}
	if (peek(&p) != ',')
		return fail(&p, "expected ',' and the DST start rule, found %s", show_char(&p, c, sizeof(c)));
	p.pos++;
	if ((rc = parse_rule(&p, "start", &out->start)) != 0)
		return rc;
	if (peek(&p) != ',')
		return fail(&p, "expected ',' and the DST end rule, found %s", show_char(&p, c, sizeof(c)));
	p.pos++;
	if ((rc = parse_rule(&p, "end", &out->end)) != 0)
		return rc;
	if (p.pos != len)
		return fail(&p, "unexpected %s after the DST end rule", show_char(&p, c, sizeof(c)));
	return 0;
}

/* ------------------------------------------------------------ transitions */

/* The local date (days since the epoch) a rule names in year y. */
static int64_t rule_date(const struct tz_rule *r, int64_t y)
{
	int64_t first, next, d;

	switch (r->kind) {
	case TZ_JULIAN1:
		return days_from_civil(y, 1, 1) + r->day - 1 + (r->day >= 60 && is_leap(y));
	case TZ_JULIAN0:
		return days_from_civil(y, 1, 1) + r->day;
	default:
		first = days_from_civil(y, r->month, 1);
		next = r->month == 12 ? days_from_civil(y + 1, 1, 1) : days_from_civil(y, r->month + 1u, 1);
		/* 1970-01-01 was a Thursday (4) */
		d = first + floor_mod(r->day - (first + 4), 7) + (r->week - 1) * 7;
		while (d >= next)
			d -= 7;
		return d;
	}
}

/* start(y) and end(y) as UTC seconds; the start is in standard time, the end in DST. */
static void transitions(const struct tz *z, int64_t y, int64_t *start, int64_t *end)
{
	*start = rule_date(&z->start, y) * SECS_PER_DAY + z->start.time - z->std_off;
	*end = rule_date(&z->end, y) * SECS_PER_DAY + z->end.time - z->dst_off;
}

static int64_t utc_year(int64_t t)
{
	int64_t y;
	unsigned m, d;

	tz_civil_from_days((int32_t)floor_div(t, SECS_PER_DAY), &y, &m, &d);
	return y;
}

int32_t tz_offset(const struct tz *z, int64_t utc_s)
{
	int64_t t = clamp(utc_s, OFFSET_T_MAX), y, best = INT64_MIN, s, e;
	int dst = 0;

	if (!z->has_dst)
		return z->std_off;
	y = utc_year(t);
	/* year y-2's transitions are always before t, y+2's always after */
	for (int64_t k = y - 2; k <= y + 1; k++) {
		transitions(z, k, &s, &e);
		if (e <= t && e > best) {
			best = e;
			dst = 0;
		}
		if (s <= t && s >= best) {
			best = s;
			dst = 1;
		}
	}
	return dst ? z->dst_off : z->std_off;
}

/* The first transition after t (some transition of years y-1..y+2 always is). */
static int64_t next_transition(const struct tz *z, int64_t t)
{
	int64_t y = utc_year(t), best = INT64_MAX, s, e;

	for (int64_t k = y - 1; k <= y + 2; k++) {
		transitions(z, k, &s, &e);
		if (s > t && s < best)
			best = s;
		if (e > t && e < best)
			best = e;
	}
	return best;
}

/*
 * B(D) of the DESIGN: the first instant at which local time reaches
 * local_s. It lies in [local_s - max offset, local_s - min offset]; walk
 * the pieces of constant offset across that window.
 */
static int64_t first_reach(const struct tz *z, int64_t local_s)
{
	int32_t lo_off, hi_off;
	int64_t a, hi;

	if (!z->has_dst)
		return local_s - z->std_off;
	lo_off = z->std_off < z->dst_off ? z->std_off : z->dst_off;
	hi_off = z->std_off < z->dst_off ? z->dst_off : z->std_off;
	a = local_s - hi_off;
	hi = local_s - lo_off;
	while (a < hi) {
		int64_t b = next_transition(z, a);
		int64_t c = local_s - tz_offset(z, a);

		if (c < a)
			c = a;
		if (c < b)
			return c;
		a = b;
	}
	return hi;
}

static int64_t day_begins(const struct tz *z, int64_t day)
{
	return first_reach(z, day * SECS_PER_DAY) * US_PER_SEC;
}

void tz_calendar(const struct tz *z, int64_t now_us, struct tz_calendar *out)
{
	int64_t t = floor_div(clamp(now_us, CALENDAR_US_MAX), US_PER_SEC);
	int64_t day = floor_div(t + tz_offset(z, t), SECS_PER_DAY), y;
	unsigned m, d;

	/* the local date may read one day behind after a repeated midnight */
	while (first_reach(z, (day + 1) * SECS_PER_DAY) <= t)
		day++;
	tz_civil_from_days((int32_t)day, &y, &m, &d);
	out->day = (int32_t)day;
	out->week = (int32_t)(day - floor_mod(day + 3, 7));
	out->month = (int32_t)(y * 12 + m - 1);
	out->reserved = 0;
	out->day_start = day_begins(z, day);
	out->next_day = day_begins(z, day + 1);
	out->next_week = day_begins(z, out->week + 7);
	out->next_month = day_begins(z, m == 12 ? days_from_civil(y + 1, 1, 1) : days_from_civil(y, m + 1, 1));
}

/* ------------------------------------------------------------------- TZif */

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/*
 * TZif (RFC 8536): a 44-byte header, "TZif", a version byte, 15 reserved,
 * then six big-endian 32-bit counts: isutcnt, isstdcnt, leapcnt, timecnt,
 * typecnt, charcnt. The data block after it holds timecnt transition times
 * (tsize bytes each) and type indexes (1 byte), typecnt 6-byte types,
 * charcnt bytes of names, leapcnt leap records (tsize + 4 bytes), isstdcnt
 * and isutcnt indicator bytes. Version 2+ repeats header and block with
 * 8-byte times, then the footer: '\n', a POSIX TZ string, '\n'.
 */
static uint64_t tzif_block(const uint8_t *h, uint64_t tsize)
{
	uint64_t isut = be32(h + 20), isstd = be32(h + 24), leap = be32(h + 28);
	uint64_t times = be32(h + 32), types = be32(h + 36), chars = be32(h + 40);

	return times * tsize + times + types * 6 + chars + leap * (tsize + 4) + isstd + isut;
}

int tz_footer(const uint8_t *buf, size_t len, char *rule, size_t rule_size, char *err, size_t errlen)
{
	const uint8_t *nl;
	uint64_t at;
	size_t n;
	struct tz z;
	int rc;

	if (len < 44 || memcmp(buf, "TZif", 4) != 0) {
		sc_errorf(err, errlen, "timezone: not a TZif file");
		return SC_EINVAL;
	}
	if (buf[4] == 0) {
		sc_errorf(err, errlen, "timezone: TZif version 1 file has no POSIX footer");
		return SC_EINVAL;
	}
	if (buf[4] < '2') {
		sc_errorf(err, errlen, "timezone: unknown TZif version byte 0x%02x", buf[4]);
		return SC_EINVAL;
	}
	at = 44 + tzif_block(buf, 4);
	if (at + 44 > len || memcmp(buf + at, "TZif", 4) != 0) {
		sc_errorf(err, errlen, "timezone: TZif file truncated before its version 2 header");
		return SC_EINVAL;
	}
	at += 44 + tzif_block(buf + at, 8);
	if (at >= len || buf[at] != '\n') {
		sc_errorf(err, errlen, "timezone: TZif file has no POSIX footer");
		return SC_EINVAL;
	}
	at++;
	nl = memchr(buf + at, '\n', len - at);
	if (nl == NULL || (size_t)(nl - buf) + 1 != len) {
		sc_errorf(err, errlen, "timezone: TZif footer %s", nl == NULL ? "is not terminated" :
		          "is followed by more bytes");
		return SC_EINVAL;
	}
	n = (size_t)(nl - (buf + at));
	if (n == 0) {
		/* zic writes no rule when times after the last transition have none */
		sc_errorf(err, errlen, "timezone: TZif footer is empty (no rule for future times)");
		return SC_EINVAL;
	}
	if ((rc = tz_parse((const char *)buf + at, n, &z, err, errlen)) != 0)
		return rc;
	if (n >= rule_size) {
		sc_errorf(err, errlen, "timezone: rule of %zu bytes does not fit in %zu", n, rule_size);
		return SC_EINVAL;
	}
	memcpy(rule, buf + at, n);
	rule[n] = '\0';
	return 0;
}

/* ---------------------------------------------------------- name lookup */

static int zone_name_valid(const char *name, size_t n)
{
	/* '.' is not allowed, so neither is ".." */
	if (n == 0 || n > 255 || name[0] == '/')
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!is_alpha(name[i]) && !is_digit(name[i]) && !strchr("/_+-", name[i]))
			return 0;
	return 1;
}

/* The footer of the zone file of a valid name; SC_ENOTFOUND if there is none. */
static int zone_file(const char *name, char *rule, size_t rule_size, char *err, size_t errlen)
{
	const char *dir = getenv("TZDIR");
	char path[4096], why[256];
	uint8_t *buf;
	size_t n;
	FILE *f;
	int rc;

	if (dir == NULL || dir[0] == '\0')
		dir = "/usr/share/zoneinfo";
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
		return SC_ENOTFOUND;
	f = fopen(path, "rb");
	if (f == NULL) {
		if (errno == ENOENT || errno == ENOTDIR)
			return SC_ENOTFOUND;
		rc = -errno;
		sc_errorf(err, errlen, "timezone: %s: %s", path, strerror(errno));
		return rc;
	}
	buf = malloc(ZONE_FILE_MAX);
	if (buf == NULL) {
		fclose(f);
		sc_errorf(err, errlen, "timezone: out of memory");
		return -ENOMEM;
	}
	n = fread(buf, 1, ZONE_FILE_MAX, f);
	/* a directory ("Europe") opens but does not read: not a zone either */
	rc = !ferror(f) ? 0 : errno == EISDIR ? SC_ENOTFOUND : errno != 0 ? -errno : -EIO;
	if (rc != 0 && rc != SC_ENOTFOUND)
		sc_errorf(err, errlen, "timezone: %s: %s", path, strerror(-rc));
	fclose(f);
	if (rc == 0 && tz_footer(buf, n, rule, rule_size, why, sizeof(why)) != 0) {
		sc_errorf(err, errlen, "%s (%s)", why, path);
		rc = SC_EINVAL;
	}
	free(buf);
	return rc;
}

static int copy_rule(const char *s, char *rule, size_t rule_size, char *err, size_t errlen)
{
	size_t n = strlen(s);

	if (n >= rule_size) {
		sc_errorf(err, errlen, "timezone: rule of %zu bytes does not fit in %zu", n, rule_size);
		return SC_EINVAL;
	}
	memcpy(rule, s, n + 1);
	return 0;
}

int tz_resolve(const char *name, char *rule, size_t rule_size, char *err, size_t errlen)
{
	size_t n = strlen(name);
	int valid = zone_name_valid(name, n), rc;
	struct tz z;

	if (n == 0) {
		sc_errorf(err, errlen, "timezone: empty time zone name");
		return SC_EINVAL;
	}
	if (strcmp(name, "UTC") == 0 || strcmp(name, "Etc/UTC") == 0 || strcmp(name, "Z") == 0)
		return copy_rule("UTC0", rule, rule_size, err, errlen);
	if (valid && (rc = zone_file(name, rule, rule_size, err, errlen)) != SC_ENOTFOUND)
		return rc;
	if (tz_parse(name, n, &z, err, errlen) == 0)
		return copy_rule(name, rule, rule_size, err, errlen);
	if (valid) {
		sc_errorf(err, errlen, "timezone: unknown time zone '%.64s'", name);
		return SC_ENOTFOUND;
	}
	if (strchr(name, '/') != NULL && strchr(name, ',') == NULL) {
		sc_errorf(err, errlen, "timezone: '%.64s' is not a valid time zone name (letters, digits, "
		          "'/', '_', '+', '-'; no leading '/')", name);
		return SC_EINVAL;
	}
	return SC_EINVAL; /* tz_parse's message is in err */
}
