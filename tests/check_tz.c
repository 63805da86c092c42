/*
 * check_tz.c: unit tests of sidecard/engine/tz.c: POSIX TZ parsing and its error
 * messages, offsets around real transitions, the local calendar (days, Monday
 * weeks, months) on DST-change days, before 1970 and over 1900..2400, TZif
 * footers, and tz_resolve on the installed tzdata. glibc's localtime_r (with
 * TZ set in this test only) is the cross-check for the offsets.
 * Single-threaded; no daemon.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sidecard.h"
#include "suites.h"
#include "tz.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
#define US(s) ((int64_t)(s) * INT64_C(1000000))

/* UTC seconds of a civil date and time. */
static int64_t utc(int64_t y, unsigned mo, unsigned d, int h, int mi, int s)
{
	return (int64_t)tz_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s;
}

static struct tz zone(const char *rule)
{
	struct tz z;
	char err[256] = "";

	ck_assert_msg(tz_parse(rule, strlen(rule), &z, err, sizeof(err)) == 0, "%s: %s", rule, err);
	return z;
}

/* ------------------------------------------------------------ parsing */

static const struct {
	const char *rule;
	int32_t std_off, dst_off;
	int has_dst;
	struct tz_rule start, end;
} parse_ok[] = {
#define M(m, w, d, t) { TZ_MWD, d, m, w, t }
	{ "UTC0", 0, 0, 0, { 0 }, { 0 } },
	{ "EST5", -18000, 0, 0, { 0 }, { 0 } },
	{ "<+0530>-5:30", 19800, 0, 0, { 0 }, { 0 } },
	{ "EST5EDT", -18000, -14400, 1, M(3, 2, 0, 7200), M(11, 1, 0, 7200) },
	{ "CET-1CEST,M3.5.0,M10.5.0/3", 3600, 7200, 1, M(3, 5, 0, 7200), M(10, 5, 0, 10800) },
	{ "<-04>4<-03>,M9.1.6/24,M4.1.6/24", -14400, -10800, 1, M(9, 1, 6, 86400), M(4, 1, 6, 86400) },
	{ "<+1245>-12:45<+1345>,M9.5.0/2:45,M4.1.0/3:45", 45900, 49500, 1, M(9, 5, 0, 9900),
	  M(4, 1, 0, 13500) },
	{ "IST-1GMT0,M10.5.0,M3.5.0/1", 3600, 0, 1, M(10, 5, 0, 7200), M(3, 5, 0, 3600) },
	{ "<-02>2<-01>,M3.5.0/-1,M10.5.0/0", -7200, -3600, 1, M(3, 5, 0, -3600), M(10, 5, 0, 0) },
	{ "<+1030>-10:30<+11>-11,M10.1.0,M4.1.0", 37800, 39600, 1, M(10, 1, 0, 7200), M(4, 1, 0, 7200) },
	{ "EST5EDT,0/0,J365/25", -18000, -14400, 1, { TZ_JULIAN0, 0, 0, 0, 0 },
	  { TZ_JULIAN1, 365, 0, 0, 90000 } },
	{ "ABC+24:59:59DEF-24,J1/-167,365/167:59:59", -89999, 86400, 1, { TZ_JULIAN1, 1, 0, 0, -601200 },
	  { TZ_JULIAN0, 365, 0, 0, 604799 } },
#undef M
};

static void assert_rule(const struct tz_rule *got, const struct tz_rule *want, const char *s)
{
	ck_assert_msg(got->kind == want->kind && got->day == want->day && got->month == want->month &&
	              got->week == want->week && got->time == want->time,
	              "%s: rule kind %d day %d month %d week %d time %d", s, got->kind, got->day,
	              got->month, got->week, got->time);
}

START_TEST(test_parse_valid)
{
	struct tz z = zone(parse_ok[_i].rule);

	ck_assert_int_eq(z.std_off, parse_ok[_i].std_off);
	ck_assert_int_eq(z.has_dst, parse_ok[_i].has_dst);
	if (z.has_dst) {
		ck_assert_int_eq(z.dst_off, parse_ok[_i].dst_off);
		assert_rule(&z.start, &parse_ok[_i].start, parse_ok[_i].rule);
		assert_rule(&z.end, &parse_ok[_i].end, parse_ok[_i].rule);
	}
}
END_TEST

static const struct {
	const char *rule;
	size_t len; /* 0: strlen */
	const char *message;
} parse_bad[] = {
	{ "", 0, "timezone: empty rule at byte 0" },
	{ "UTC", 0, "timezone: expected the offset from UTC, found end of rule at byte 3 of 'UTC'" },
	{ "UT0", 0, "standard time name shorter than 3 letters at byte 0" },
	{ ":Europe/Paris", 0, "expected a standard time name, found ':' at byte 0" },
	{ "<+05", 0, "unterminated <standard time name> at byte 4" },
	{ "<+0 5>-5", 0, "' ' not allowed in a <standard time name> at byte 3" },
	{ "<+5>-5", 0, "standard time name shorter than 3 characters at byte 1" },
	{ "EST+", 0, "expected the hours of the UTC offset, found end of rule at byte 4" },
	{ "EST25", 0, "UTC offset hours out of range (at most 24) at byte 3" },
	{ "EST5:60", 0, "UTC offset minutes must be 00..59 at byte 5" },
	{ "EST5:30:99", 0, "UTC offset seconds must be 00..59 at byte 8" },
	{ "EST5 EDT", 0, "expected a DST name, found ' ' at byte 4" },
	{ "EST5EDT4:", 0, "DST offset minutes must be 00..59 at byte 9" },
	{ "EST5EDT;M3", 0, "expected ',' and the DST start rule, found ';' at byte 7" },
	{ "EST5EDT,M3.2.0", 0, "expected ',' and the DST end rule, found end of rule at byte 14" },
	{ "EST5EDT,X,M11.1.0", 0, "expected the DST start rule (Jn, n or Mm.w.d), found 'X' at byte 8" },
	{ "EST5EDT,M13.2.0,M11.1.0", 0, "month (Mm.w.d) 13 out of range (1..12) at byte 9" },
	{ "EST5EDT,M3.6.0,M11.1.0", 0, "week (Mm.w.d) 6 out of range (1..5) at byte 11" },
	{ "EST5EDT,M3.2.7,M11.1.0", 0, "weekday (Mm.w.d) 7 out of range (0..6) at byte 13" },
	{ "EST5EDT,M3.2,M11.1.0", 0, "expected '.' after the week, found ',' at byte 12" },
	{ "EST5EDT,J0,J365", 0, "Julian day (Jn) 0 out of range (1..365) at byte 9" },
	{ "EST5EDT,366,J365", 0, "zero-based day (n) 366 out of range (0..365) at byte 8" },
	{ "EST5EDT,M3.2.0/168,M11.1.0", 0, "transition time hours out of range (at most 167) at byte 15" },
	{ "EST5EDT,M3.2.0,M11.1.0x", 0, "unexpected 'x' after the DST end rule at byte 22" },
	{ "EST5\0", 5, "NUL byte in the rule at byte 4" },
	{ "EST5\x80", 5, "expected a DST name, found byte 0x80 at byte 4" },
	{ "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA0", 0,
	  "rule longer than 63 bytes" },
};

START_TEST(test_parse_invalid)
{
	const char *s = parse_bad[_i].rule;
	size_t len = parse_bad[_i].len ? parse_bad[_i].len : strlen(s);
	char err[256] = "";
	struct tz z;

	ck_assert_int_eq(tz_parse(s, len, &z, err, sizeof(err)), SC_EINVAL);
	ck_assert_msg(strstr(err, parse_bad[_i].message) != NULL, "'%s': got \"%s\", want \"%s\"", s,
	              err, parse_bad[_i].message);
}
END_TEST

/* ------------------------------------------------------------ offsets */

static const struct {
	const char *rule;
	int64_t y;
	unsigned mo, d;
	int h, mi, s;
	int32_t off;
} offsets[] = {
	{ "CET-1CEST,M3.5.0,M10.5.0/3", 2026, 3, 29, 0, 59, 59, 3600 },
	{ "CET-1CEST,M3.5.0,M10.5.0/3", 2026, 3, 29, 1, 0, 0, 7200 },
	{ "CET-1CEST,M3.5.0,M10.5.0/3", 2026, 10, 25, 0, 59, 59, 7200 },
	{ "CET-1CEST,M3.5.0,M10.5.0/3", 2026, 10, 25, 1, 0, 0, 3600 },
	{ "CET-1CEST,M3.5.0,M10.5.0/3", 1960, 7, 1, 0, 0, 0, 7200 },
	{ "CET-1CEST,M3.5.0,M10.5.0/3", 2399, 12, 31, 23, 0, 0, 3600 },
	{ "EST5EDT,M3.2.0,M11.1.0", 2026, 3, 8, 6, 59, 59, -18000 },
	{ "EST5EDT,M3.2.0,M11.1.0", 2026, 3, 8, 7, 0, 0, -14400 },
	{ "EST5EDT,M3.2.0,M11.1.0", 2026, 11, 1, 5, 59, 59, -14400 },
	{ "EST5EDT,M3.2.0,M11.1.0", 2026, 11, 1, 6, 0, 0, -18000 },
	{ "<+0530>-5:30", 2026, 6, 1, 12, 0, 0, 19800 },
	{ "AEST-10AEDT,M10.1.0,M4.1.0/3", 2026, 1, 15, 0, 0, 0, 39600 },
	{ "AEST-10AEDT,M10.1.0,M4.1.0/3", 2026, 4, 4, 15, 59, 59, 39600 },
	{ "AEST-10AEDT,M10.1.0,M4.1.0/3", 2026, 4, 4, 16, 0, 0, 36000 },
	{ "AEST-10AEDT,M10.1.0,M4.1.0/3", 2026, 10, 3, 15, 59, 59, 36000 },
	{ "AEST-10AEDT,M10.1.0,M4.1.0/3", 2026, 10, 3, 16, 0, 0, 39600 },
	{ "UTC0", 2026, 3, 29, 1, 0, 0, 0 },
	{ "IST-1GMT0,M10.5.0,M3.5.0/1", 2026, 3, 29, 0, 59, 59, 0 },
	{ "IST-1GMT0,M10.5.0,M3.5.0/1", 2026, 3, 29, 1, 0, 0, 3600 },
	{ "IST-1GMT0,M10.5.0,M3.5.0/1", 2026, 10, 25, 1, 0, 0, 0 },
	/* permanent DST: the end of one year and the start of the next coincide */
	{ "EST5EDT,0/0,J365/25", 2026, 1, 1, 2, 0, 0, -14400 },
	{ "EST5EDT,0/0,J365/25", 2024, 12, 31, 12, 0, 0, -14400 },
	{ "EST5EDT,0/0,J365/25", 2027, 1, 1, 5, 0, 0, -14400 },
};

START_TEST(test_offsets_at_transitions)
{
	struct tz z = zone(offsets[_i].rule);
	int64_t t = utc(offsets[_i].y, offsets[_i].mo, offsets[_i].d, offsets[_i].h, offsets[_i].mi,
	                offsets[_i].s);

	ck_assert_msg(tz_offset(&z, t) == offsets[_i].off, "%s at %lld: %d, want %d",
	              offsets[_i].rule, (long long)t, tz_offset(&z, t), offsets[_i].off);
}
END_TEST

static const char *const glibc_zones[] = {
	"Europe/Paris",   "America/New_York", "Australia/Sydney",    "America/Santiago",
	"Asia/Kolkata",   "Europe/Dublin",    "America/Havana",      "Pacific/Chatham",
	"America/Nuuk",   "Australia/Lord_Howe",
};

/*
 * Every half-hour boundary (and the second before it) of from..to against
 * localtime_r. Plain comparisons in the loop: each passing ck_assert writes
 * a mark point to the runner.
 */
static void compare_glibc(const char *tzenv, const struct tz *z, int64_t from, int64_t to)
{
	setenv("TZ", tzenv, 1);
	tzset();
	for (int64_t t = from; t < to; t += 1800) {
		for (int64_t u = t - 1; u <= t; u++) {
			time_t tt = (time_t)u;
			struct tm tm;

			if (localtime_r(&tt, &tm) == NULL || tm.tm_gmtoff != tz_offset(z, u))
				ck_abort_msg("%s at %lld: glibc %ld, tz %d", tzenv, (long long)u,
				             tm.tm_gmtoff, tz_offset(z, u));
		}
	}
	unsetenv("TZ");
	tzset();
}

/*
 * glibc with the installed file (its transitions, then the footer) and with
 * the footer alone. The installed file is compared from 2040 on: the footer
 * only governs the times after the file's last listed transition, and tzdata
 * lists one-off changes a year or two ahead (tzdata 2026f keeps Havana on
 * daylight time through the winter of 2026-27), which a daemon following
 * the footer does not apply (docs/DESIGN.md). Not before 1970: glibc counts
 * the days of a rule's year from 1970 up, so it places the transitions of
 * earlier years wrongly.
 */
START_TEST(test_offsets_match_glibc)
{
	char rule[TZ_RULE_MAX + 1], err[256] = "";
	struct tz z;

	ck_assert_msg(tz_resolve(glibc_zones[_i], rule, sizeof(rule), err, sizeof(err)) == 0, "%s", err);
	z = zone(rule);
	compare_glibc(glibc_zones[_i], &z, utc(2040, 1, 1, 0, 0, 0), utc(2046, 1, 1, 0, 0, 0));
	compare_glibc(rule, &z, utc(1970, 1, 1, 0, 0, 0), utc(1973, 1, 1, 0, 0, 0));
	compare_glibc(rule, &z, utc(2099, 1, 1, 0, 0, 0), utc(2101, 1, 1, 0, 0, 0));
	compare_glibc(rule, &z, utc(2398, 1, 1, 0, 0, 0), utc(2401, 1, 1, 0, 0, 0));
}
END_TEST

/* ------------------------------------------------------------ calendar */

static const struct {
	const char *rule;
	int64_t now;                                        /* UTC, packed by T */
	int64_t day, week, month;                           /* local dates, packed by D */
	int64_t day_start, next_day, next_week, next_month; /* UTC, packed by T */
} calendars[] = {
#define D(y, m, d) ((y) * INT64_C(10000) + (m) * 100 + (d))
#define T(y, m, d, h, mi) (D(y, m, d) * 10000 + (h) * 100 + (mi))
	/* UTC, a Thursday: the week began on Monday 2025-12-29 */
	{ "UTC0", T(2026, 1, 1, 12, 34), D(2026, 1, 1), D(2025, 12, 29), D(2026, 1, 1),
	  T(2026, 1, 1, 0, 0), T(2026, 1, 2, 0, 0), T(2026, 1, 5, 0, 0), T(2026, 2, 1, 0, 0) },
	/* a Monday at midnight starts its own week */
	{ "UTC0", T(2026, 3, 30, 0, 0), D(2026, 3, 30), D(2026, 3, 30), D(2026, 3, 1),
	  T(2026, 3, 30, 0, 0), T(2026, 3, 31, 0, 0), T(2026, 4, 6, 0, 0), T(2026, 4, 1, 0, 0) },
	/* Paris, spring forward: a 23-hour Sunday; next Monday is also the next day */
	{ "CET-1CEST,M3.5.0,M10.5.0/3", T(2026, 3, 29, 10, 0), D(2026, 3, 29), D(2026, 3, 23),
	  D(2026, 3, 1), T(2026, 3, 28, 23, 0), T(2026, 3, 29, 22, 0), T(2026, 3, 29, 22, 0),
	  T(2026, 3, 31, 22, 0) },
	/* Paris, fall back: a 25-hour Sunday */
	{ "CET-1CEST,M3.5.0,M10.5.0/3", T(2026, 10, 25, 10, 0), D(2026, 10, 25), D(2026, 10, 19),
	  D(2026, 10, 1), T(2026, 10, 24, 22, 0), T(2026, 10, 25, 23, 0), T(2026, 10, 25, 23, 0),
	  T(2026, 10, 31, 23, 0) },
	{ "EST5EDT,M3.2.0,M11.1.0", T(2026, 3, 8, 12, 0), D(2026, 3, 8), D(2026, 3, 2), D(2026, 3, 1),
	  T(2026, 3, 8, 5, 0), T(2026, 3, 9, 4, 0), T(2026, 3, 9, 4, 0), T(2026, 4, 1, 4, 0) },
	/* Santiago: 00:00 -04 does not exist, the day begins at 01:00 -03 */
	{ "<-04>4<-03>,M9.1.6/24,M4.1.6/24", T(2026, 9, 6, 12, 0), D(2026, 9, 6), D(2026, 8, 31),
	  D(2026, 9, 1), T(2026, 9, 6, 4, 0), T(2026, 9, 7, 3, 0), T(2026, 9, 7, 3, 0),
	  T(2026, 10, 1, 3, 0) },
	{ "<-04>4<-03>,M9.1.6/24,M4.1.6/24", T(2026, 9, 6, 3, 59), D(2026, 9, 5), D(2026, 8, 31),
	  D(2026, 9, 1), T(2026, 9, 5, 4, 0), T(2026, 9, 6, 4, 0), T(2026, 9, 7, 3, 0),
	  T(2026, 10, 1, 3, 0) },
	/* Santiago, back at 24:00 -03 to 23:00 -04: midnight happens once, at -04 */
	{ "<-04>4<-03>,M9.1.6/24,M4.1.6/24", T(2026, 4, 5, 3, 30), D(2026, 4, 4), D(2026, 3, 30),
	  D(2026, 4, 1), T(2026, 4, 4, 3, 0), T(2026, 4, 5, 4, 0), T(2026, 4, 6, 4, 0),
	  T(2026, 5, 1, 4, 0) },
	/* Havana: /0 skips midnight in March; /1 back to 00:00 repeats it in November */
	{ "CST5CDT,M3.2.0/0,M11.1.0/1", T(2026, 3, 8, 5, 0), D(2026, 3, 8), D(2026, 3, 2),
	  D(2026, 3, 1), T(2026, 3, 8, 5, 0), T(2026, 3, 9, 4, 0), T(2026, 3, 9, 4, 0),
	  T(2026, 4, 1, 4, 0) },
	{ "CST5CDT,M3.2.0/0,M11.1.0/1", T(2026, 3, 8, 4, 59), D(2026, 3, 7), D(2026, 3, 2),
	  D(2026, 3, 1), T(2026, 3, 7, 5, 0), T(2026, 3, 8, 5, 0), T(2026, 3, 9, 4, 0),
	  T(2026, 4, 1, 4, 0) },
	{ "CST5CDT,M3.2.0/0,M11.1.0/1", T(2026, 11, 1, 5, 30), D(2026, 11, 1), D(2026, 10, 26),
	  D(2026, 11, 1), T(2026, 11, 1, 4, 0), T(2026, 11, 2, 5, 0), T(2026, 11, 2, 5, 0),
	  T(2026, 12, 1, 5, 0) },
	/* back across midnight (00:30 -03 to 23:30 -04): the repeated half hour stays in the new day */
	{ "<-04>4<-03>,M9.1.6/24,M4.1.6/24:30", T(2026, 4, 5, 3, 45), D(2026, 4, 5), D(2026, 3, 30),
	  D(2026, 4, 1), T(2026, 4, 5, 3, 0), T(2026, 4, 6, 4, 0), T(2026, 4, 6, 4, 0),
	  T(2026, 5, 1, 4, 0) },
	/* southern hemisphere, Dec -> Jan in local time only */
	{ "AEST-10AEDT,M10.1.0,M4.1.0/3", T(2026, 12, 31, 13, 30), D(2027, 1, 1), D(2026, 12, 28),
	  D(2027, 1, 1), T(2026, 12, 31, 13, 0), T(2027, 1, 1, 13, 0), T(2027, 1, 3, 13, 0),
	  T(2027, 1, 31, 13, 0) },
	/* Feb 29 2028: already March in Paris */
	{ "UTC0", T(2028, 2, 29, 12, 0), D(2028, 2, 29), D(2028, 2, 28), D(2028, 2, 1),
	  T(2028, 2, 29, 0, 0), T(2028, 3, 1, 0, 0), T(2028, 3, 6, 0, 0), T(2028, 3, 1, 0, 0) },
	{ "CET-1CEST,M3.5.0,M10.5.0/3", T(2028, 2, 29, 23, 30), D(2028, 3, 1), D(2028, 2, 28),
	  D(2028, 3, 1), T(2028, 2, 29, 23, 0), T(2028, 3, 1, 23, 0), T(2028, 3, 5, 23, 0),
	  T(2028, 3, 31, 22, 0) },
	/* before 1970 */
	{ "EST5EDT,M3.2.0,M11.1.0", T(1970, 1, 1, 4, 0), D(1969, 12, 31), D(1969, 12, 29),
	  D(1969, 12, 1), T(1969, 12, 31, 5, 0), T(1970, 1, 1, 5, 0), T(1970, 1, 5, 5, 0),
	  T(1970, 1, 1, 5, 0) },
	{ "UTC0", T(1900, 3, 1, 0, 0), D(1900, 3, 1), D(1900, 2, 26), D(1900, 3, 1),
	  T(1900, 3, 1, 0, 0), T(1900, 3, 2, 0, 0), T(1900, 3, 5, 0, 0), T(1900, 4, 1, 0, 0) },
	{ "UTC0", T(2400, 2, 29, 0, 0), D(2400, 2, 29), D(2400, 2, 28), D(2400, 2, 1),
	  T(2400, 2, 29, 0, 0), T(2400, 3, 1, 0, 0), T(2400, 3, 6, 0, 0), T(2400, 3, 1, 0, 0) },
#undef T
};

static int32_t packed_day(int64_t p)
{
	return tz_days_from_civil(p / 10000, (unsigned)(p / 100 % 100), (unsigned)(p % 100));
}

/* Microseconds since the epoch of a UTC time packed by T. */
static int64_t packed_us(int64_t p)
{
	return US((int64_t)packed_day(p / 10000) * 86400 + p / 100 % 100 * 3600 + p % 100 * 60);
}

START_TEST(test_calendar)
{
	struct tz z = zone(calendars[_i].rule);
	struct tz_calendar c;
	int64_t month = calendars[_i].month;

	tz_calendar(&z, packed_us(calendars[_i].now), &c);
	ck_assert_int_eq(c.day, packed_day(calendars[_i].day));
	ck_assert_int_eq(c.week, packed_day(calendars[_i].week));
	ck_assert_int_eq(c.month, month / 10000 * 12 + month / 100 % 100 - 1);
	ck_assert_int_eq(c.reserved, 0);
	ck_assert_int_eq(c.day_start, packed_us(calendars[_i].day_start));
	ck_assert_int_eq(c.next_day, packed_us(calendars[_i].next_day));
	ck_assert_int_eq(c.next_week, packed_us(calendars[_i].next_week));
	ck_assert_int_eq(c.next_month, packed_us(calendars[_i].next_month));
}
END_TEST

START_TEST(test_calendar_microsecond_edges)
{
	struct tz z = zone("UTC0");
	struct tz_calendar c;

	tz_calendar(&z, -1, &c);
	ck_assert_int_eq(c.day, -1);
	ck_assert_int_eq(c.week, -3); /* Monday 1969-12-29 */
	ck_assert_int_eq(c.month, 1969 * 12 + 11);
	ck_assert_int_eq(c.day_start, -US(86400));
	ck_assert_int_eq(c.next_day, 0);
	ck_assert_int_eq(c.next_month, 0);
	tz_calendar(&z, 0, &c);
	ck_assert_int_eq(c.day, 0);
	ck_assert_int_eq(c.day_start, 0);
	ck_assert_int_eq(c.next_day, US(86400));
}
END_TEST

#undef D

/* The invariants at random moments of 1900..2400, and that consecutive days tile time. */
START_TEST(test_calendar_invariants)
{
	static const char *const rules[] = {
		"UTC0", "CET-1CEST,M3.5.0,M10.5.0/3", "<-04>4<-03>,M9.1.6/24,M4.1.6/24",
		"CST5CDT,M3.2.0/0,M11.1.0/1", "IST-1GMT0,M10.5.0,M3.5.0/1", "EST5EDT,0/0,J365/25",
		"<-04>4<-03>,M9.1.6/24,M4.1.6/24:30", "ABC+24DEF-24,J60/-167,59/167",
	};
	int64_t lo = US(utc(1900, 1, 1, 0, 0, 0)), span = US(utc(2400, 12, 31, 0, 0, 0)) - lo;
	uint64_t r = 88172645463325252ULL;

	for (size_t k = 0; k < COUNT(rules); k++) {
		struct tz z = zone(rules[k]);

		for (int i = 0; i < 3000; i++) {
			struct tz_calendar c, n, p;
			int64_t now;

			r ^= r << 13, r ^= r >> 7, r ^= r << 17;
			now = lo + (int64_t)(r % (uint64_t)span);
			tz_calendar(&z, now, &c);
			tz_calendar(&z, c.next_day, &n);
			tz_calendar(&z, c.next_day - 1, &p);
			if (!(c.day_start <= now && now < c.next_day && c.next_day <= c.next_week &&
			      now < c.next_month && c.week <= c.day && c.day < c.week + 7 &&
			      n.day > c.day && n.day_start == c.next_day && p.day == c.day &&
			      p.day_start == c.day_start))
				ck_abort_msg("%s at %lld", rules[k], (long long)now);
		}
	}
}
END_TEST

/* ------------------------------------------------------------ civil dates */

START_TEST(test_civil_known_dates)
{
	ck_assert_int_eq(tz_days_from_civil(1970, 1, 1), 0);
	ck_assert_int_eq(tz_days_from_civil(1969, 12, 31), -1);
	ck_assert_int_eq(tz_days_from_civil(2000, 3, 1), 11017);
	ck_assert_int_eq(tz_days_from_civil(1900, 1, 1), -25567);
	ck_assert_int_eq(tz_days_from_civil(2400, 12, 31), 157419);
	ck_assert_int_eq(tz_days_from_civil(0, 3, 1), -719468);
	ck_assert_int_eq(tz_days_from_civil(-1, 12, 31), -719529);
}
END_TEST

/* Every day of about +-27,000 years: each next day is d+1 or the 1st of the next month. */
START_TEST(test_civil_round_trip)
{
	int64_t y, py;
	unsigned m, d, pm, pd;

	tz_civil_from_days(-10000000, &py, &pm, &pd);
	for (int32_t days = -10000000 + 1; days <= 10000000; days++) {
		tz_civil_from_days(days, &y, &m, &d);
		if (!(d == pd + 1 && m == pm && y == py) &&
		    !(d == 1 && (m == pm + 1 ? y == py : m == 1 && pm == 12 && y == py + 1)))
			ck_abort_msg("day %d: %lld-%u-%u after %lld-%u-%u", days, (long long)y, m, d,
			             (long long)py, pm, pd);
		if (tz_days_from_civil(y, m, d) != days)
			ck_abort_msg("day %d: %lld-%u-%u goes back to %d", days, (long long)y, m, d,
			             tz_days_from_civil(y, m, d));
		py = y, pm = m, pd = d;
	}
	ck_assert_int_eq(tz_days_from_civil(y, m, d), 10000000);
}
END_TEST

/* ------------------------------------------------------------ TZif and resolve */

/* A TZif image with no transitions: version byte, one type, then the footer bytes. */
static size_t tzif(uint8_t *buf, char version, const char *footer, size_t footer_len)
{
	static const uint8_t block[] = { 0, 0, 0x0e, 0x10, 0, 0, 'C', 'E', 'T', 0 };
	size_t n = 0;

	for (int i = 0; i < (version ? 2 : 1); i++) {
		memset(buf + n, 0, 44);
		memcpy(buf + n, "TZif", 4);
		buf[n + 4] = (uint8_t)version;
		buf[n + 39] = 1; /* typecnt */
		buf[n + 43] = 4; /* charcnt */
		memcpy(buf + n + 44, block, sizeof(block));
		n += 44 + sizeof(block);
	}
	memcpy(buf + n, footer, footer_len);
	return n + footer_len;
}

START_TEST(test_footer)
{
	uint8_t buf[512];
	char rule[TZ_RULE_MAX + 1], err[256];
	size_t n;

	n = tzif(buf, '2', "\nCET-1CEST,M3.5.0,M10.5.0/3\n", 28);
	ck_assert_int_eq(tz_footer(buf, n, rule, sizeof(rule), err, sizeof(err)), 0);
	ck_assert_str_eq(rule, "CET-1CEST,M3.5.0,M10.5.0/3");
	ck_assert_int_eq(tz_footer(buf, n, rule, 8, err, sizeof(err)), SC_EINVAL);
	ck_assert_str_eq(err, "timezone: rule of 26 bytes does not fit in 8");
	ck_assert_int_eq(tz_footer(buf, n - 1, rule, sizeof(rule), err, sizeof(err)), SC_EINVAL);
	ck_assert_str_eq(err, "timezone: TZif footer is not terminated");
	ck_assert_int_eq(tz_footer(buf, 60, rule, sizeof(rule), err, sizeof(err)), SC_EINVAL);
	ck_assert_str_eq(err, "timezone: TZif file truncated before its version 2 header");
	n = tzif(buf, '3', "\n\n", 2);
	ck_assert_int_eq(tz_footer(buf, n, rule, sizeof(rule), err, sizeof(err)), SC_EINVAL);
	ck_assert_str_eq(err, "timezone: TZif footer is empty (no rule for future times)");
	n = tzif(buf, '4', "\nUTC0\nx", 7);
	ck_assert_int_eq(tz_footer(buf, n, rule, sizeof(rule), err, sizeof(err)), SC_EINVAL);
	ck_assert_str_eq(err, "timezone: TZif footer is followed by more bytes");
	n = tzif(buf, '2', "\nEST5EDT,M3.2.0\n", 16);
	ck_assert_int_eq(tz_footer(buf, n, rule, sizeof(rule), err, sizeof(err)), SC_EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "expected ',' and the DST end rule"));
	n = tzif(buf, 0, "", 0);
	ck_assert_int_eq(tz_footer(buf, n, rule, sizeof(rule), err, sizeof(err)), SC_EINVAL);
	ck_assert_str_eq(err, "timezone: TZif version 1 file has no POSIX footer");
	ck_assert_int_eq(tz_footer((const uint8_t *)"UTC0", 4, rule, sizeof(rule), err, sizeof(err)),
	                 SC_EINVAL);
	ck_assert_str_eq(err, "timezone: not a TZif file");
}
END_TEST

static const struct {
	const char *name;
	int rc;
	const char *result; /* the rule, or a part of the message */
} resolves[] = {
	{ "Europe/Paris", 0, "CET-1CEST,M3.5.0,M10.5.0/3" },
	{ "Asia/Kolkata", 0, "IST-5:30" },
	{ "America/Havana", 0, "CST5CDT,M3.2.0/0,M11.1.0/1" },
	{ "UTC", 0, "UTC0" },
	{ "Etc/UTC", 0, "UTC0" },
	{ "Z", 0, "UTC0" },
	{ "<+0530>-5:30", 0, "<+0530>-5:30" },
	{ "EST5EDT,M3.2.0,M11.1.0", 0, "EST5EDT,M3.2.0,M11.1.0" },
	{ "Mars/Base", SC_ENOTFOUND, "timezone: unknown time zone 'Mars/Base'" },
	{ "Europe", SC_ENOTFOUND, "timezone: unknown time zone 'Europe'" },
	{ "../etc/passwd", SC_EINVAL, "timezone: '../etc/passwd' is not a valid time zone name" },
	{ "/etc/passwd", SC_EINVAL, "timezone: '/etc/passwd' is not a valid time zone name" },
	{ "Europe/./Paris", SC_EINVAL, "is not a valid time zone name" },
	{ "EST5EDT,M3.2.0", SC_EINVAL, "expected ',' and the DST end rule" },
	{ "", SC_EINVAL, "timezone: empty time zone name" },
};

START_TEST(test_resolve)
{
	char rule[TZ_RULE_MAX + 1] = "", err[256] = "";
	int rc = tz_resolve(resolves[_i].name, rule, sizeof(rule), err, sizeof(err));

	ck_assert_msg(rc == resolves[_i].rc, "%s: %s: %s", resolves[_i].name, sc_err_name(rc), err);
	if (rc == 0)
		ck_assert_str_eq(rule, resolves[_i].result);
	else
		ck_assert_msg(strstr(err, resolves[_i].result) != NULL, "%s: \"%s\"", resolves[_i].name,
		              err);
}
END_TEST

/* $TZDIR is where names are looked up; a file there without a footer is refused. */
START_TEST(test_resolve_tzdir)
{
	char dir[] = "/tmp/check_tz.XXXXXX", path[64], rule[TZ_RULE_MAX + 1], err[256];
	uint8_t buf[256];
	size_t n;
	FILE *f;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	setenv("TZDIR", dir, 1);
	snprintf(path, sizeof(path), "%s/Old", dir);
	n = tzif(buf, 0, "", 0);
	ck_assert_ptr_nonnull(f = fopen(path, "wb"));
	ck_assert_uint_eq(fwrite(buf, 1, n, f), n);
	fclose(f);
	ck_assert_int_eq(tz_resolve("Old", rule, sizeof(rule), err, sizeof(err)), SC_EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "TZif version 1 file has no POSIX footer"));
	ck_assert_ptr_nonnull(strstr(err, path));
	ck_assert_int_eq(tz_resolve("Europe/Paris", rule, sizeof(rule), err, sizeof(err)), SC_ENOTFOUND);
	unsetenv("TZDIR");
	ck_assert_int_eq(unlink(path), 0);
	ck_assert_int_eq(rmdir(dir), 0);
	ck_assert_int_eq(tz_resolve("Europe/Paris", rule, 8, err, sizeof(err)), SC_EINVAL);
}
END_TEST

Suite *tz_suite(void)
{
	Suite *s = suite_create("tz");
	TCase *t;

	t = tcase_create("parse");
	tcase_add_loop_test(t, test_parse_valid, 0, COUNT(parse_ok));
	tcase_add_loop_test(t, test_parse_invalid, 0, COUNT(parse_bad));
	suite_add_tcase(s, t);

	t = tcase_create("offset");
	tcase_add_loop_test(t, test_offsets_at_transitions, 0, COUNT(offsets));
	tcase_add_loop_test(t, test_offsets_match_glibc, 0, COUNT(glibc_zones));
	tcase_set_timeout(t, 30);
	suite_add_tcase(s, t);

	t = tcase_create("calendar");
	tcase_add_loop_test(t, test_calendar, 0, COUNT(calendars));
	tcase_add_test(t, test_calendar_microsecond_edges);
	tcase_add_test(t, test_calendar_invariants);
	suite_add_tcase(s, t);

	t = tcase_create("civil");
	tcase_add_test(t, test_civil_known_dates);
	tcase_add_test(t, test_civil_round_trip);
	tcase_set_timeout(t, 30);
	suite_add_tcase(s, t);

	t = tcase_create("resolve");
	tcase_add_test(t, test_footer);
	tcase_add_loop_test(t, test_resolve, 0, COUNT(resolves));
	tcase_add_test(t, test_resolve_tzdir);
	suite_add_tcase(s, t);
	return s;
}
