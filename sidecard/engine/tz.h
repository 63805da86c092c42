/*
 * tz.h: time zones and the local calendar, for budget periods that reset at
 * local midnight (daily, weekly from Monday, monthly) in an org's zone.
 *
 * A zone is kept as a POSIX TZ rule string ("CET-1CEST,M3.5.0,M10.5.0/3"),
 * never as a tzdata name: the ledger is replayed years later, maybe on a host
 * with other tzdata, and must decide the same way. Names are resolved to
 * rules once, when the user sets the zone (tz_resolve). Everything else is
 * integer arithmetic on the rule: no TZ variable, no libc time functions.
 *
 * Threads: any; no state. tz_resolve reads a file; the rest is pure.
 */
#ifndef SIDECARD_TZ_H
#define SIDECARD_TZ_H

#include <stddef.h>
#include <stdint.h>

#define TZ_RULE_MAX 63 /* longest rule string kept */

enum tz_rule_kind { TZ_JULIAN1, TZ_JULIAN0, TZ_MWD };

/*
 * One DST transition rule of a POSIX TZ string. kind: TZ_JULIAN1 (Jn,
 * 1..365, Feb 29 never counted), TZ_JULIAN0 (n, 0..365, Feb 29 counted) or
 * TZ_MWD (Mm.w.d: day d of week w of month m).
 */
struct tz_rule {
	uint8_t kind;
	uint16_t day;         /* n for the Julian kinds; d (0 = Sunday .. 6) for TZ_MWD */
	uint8_t month, week;  /* TZ_MWD: 1..12, 1..5 (5 = the last in the month) */
	int32_t time;         /* seconds after local midnight, -167h..167h (RFC 8536) */
};

struct tz {
	int32_t std_off;      /* seconds EAST of UTC (POSIX strings give west: "EST5" is -18000) */
	int32_t dst_off;
	int has_dst;
	struct tz_rule start, end; /* when has_dst; if the string omits them: M3.2.0,M11.1.0 (US) */
};

/*
 * Parses a POSIX TZ string of at most TZ_RULE_MAX bytes: std name
 * (letters, or <quoted> letters, digits, '+' and '-'), offset
 * [+-]hh[:mm[:ss]], then optionally a DST name, its offset (default one hour
 * ahead) and ,start[/time],end[/time] with rules Jn, n or Mm.w.d. Returns 0,
 * or SC_EINVAL with a message in err naming what is wrong and at which byte.
 */
int tz_parse(const char *s, size_t len, struct tz *out, char *err, size_t errlen);

/*
 * Resolves what a user typed into the canonical rule string stored in the
 * ledger: "UTC", "Etc/UTC" or "Z" -> "UTC0"; an IANA name ("Europe/Paris")
 * -> the POSIX footer of its TZif file under $TZDIR or /usr/share/zoneinfo
 * (names with "..", a leading '/' or characters outside [A-Za-z0-9/_+-] are
 * refused); anything else tz_parse accepts is kept as typed. Returns 0 with
 * a rule that parses; SC_ENOTFOUND for an unknown name; -errno when a zone
 * file exists but cannot be read; SC_EINVAL for anything else (a file
 * without a footer, a bad rule, rule_size too small).
 */
int tz_resolve(const char *name, char *rule, size_t rule_size, char *err, size_t errlen);

/* The POSIX footer of a TZif (version 2+) file image: 0 and the rule, which parses, or SC_EINVAL. */
int tz_footer(const uint8_t *buf, size_t len, char *rule, size_t rule_size, char *err, size_t errlen);

/* Seconds east of UTC in force at utc_s (seconds since the epoch). */
int32_t tz_offset(const struct tz *z, int64_t utc_s);

/*
 * Proleptic Gregorian dates: days since 1970-01-01 <-> year, month (1..12),
 * day (1..31). Years within +-5,000,000.
 */
int32_t tz_days_from_civil(int64_t y, unsigned m, unsigned d);
void tz_civil_from_days(int32_t days, int64_t *y, unsigned *m, unsigned *d);

/* The calendar at a moment, for a zone. */
struct tz_calendar {
	int32_t day;        /* local date as days since 1970-01-01 */
	int32_t week;       /* the day number of the local Monday that starts this week */
	int32_t month;      /* year * 12 + (month - 1) */
	int32_t reserved;   /* zero */
	int64_t day_start;  /* microseconds since the epoch (UTC) at which the local day began */
	int64_t next_day;   /* ... at which the next local day begins */
	int64_t next_week;  /* ... next Monday 00:00 local */
	int64_t next_month; /* ... the 1st of next month 00:00 local */
};

/*
 * The local day, week and month at now_us, and when they begin and end.
 * A day begins at the first instant its local date is reached: a midnight
 * skipped by a DST gap begins the day when the clock jumps; a midnight that
 * happens twice (fall back at 00:00) counts the first, and the repeated
 * hour stays in the new day, so the keys never go backwards. Always
 * day_start <= now_us < next_day <= next_week and now_us < next_month, for
 * now_us within +-2^60 microseconds (about 36,000 years around 1970); a
 * moment beyond is computed as the nearest end of that range.
 */
void tz_calendar(const struct tz *z, int64_t now_us, struct tz_calendar *out);

#endif /* SIDECARD_TZ_H */
