/*
 * fuzz_tz.c: fuzz target for time zones (sidecard/engine/tz.c): tz_parse and
 * tz_footer over arbitrary bytes, and tz_offset and tz_calendar over every
 * zone that parses.
 *
 * Built two ways (Makefile.am), like fuzz_frame.c:
 *   make fuzz                 clang -fsanitize=fuzzer,address,undefined;
 *                             libFuzzer drives LLVMFuzzerTestOneInput() over
 *                             fuzz/corpus_tz for FUZZ_SECONDS.
 *   fuzz/fuzz_tz_smoke        -DFUZZ_STANDALONE, run by `make check`: main()
 *                             replays the files given on the command line
 *                             or, with none, $SIDECARD_SRCDIR/fuzz/corpus_tz
 *                             plus built-in seeds, then mutates them at
 *                             random for $FUZZ_SECONDS (default 2) seconds
 *                             with seed $FUZZ_SEED.
 *
 * Invariants checked (abort on violation, which both drivers report):
 *   - a failure always leaves a message; a footer always parses;
 *   - tz_offset is the standard or the DST offset;
 *   - the calendar at any moment from 1900 to 2400 has
 *     day_start <= now < next_day <= next_week, now < next_month, and the
 *     calendar at next_day is a later day that starts exactly there.
 *
 * Single-threaded; nothing allocated outlives a call.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "invariant.h"
#include "tz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define US_1900 INT64_C(-2208988800000000)
#define US_2400 INT64_C(13569465600000000)

static void check_calendar(const struct tz *z, int64_t now)
{
	struct tz_calendar c, next;
	int32_t off = tz_offset(z, now / 1000000);

	CHECK(off == z->std_off || (z->has_dst && off == z->dst_off));
	tz_calendar(z, now, &c);
	CHECK(c.day_start <= now && now < c.next_day);
	CHECK(c.next_day <= c.next_week && now < c.next_month);
	CHECK(c.week <= c.day && c.day < c.week + 7);
	tz_calendar(z, c.next_day, &next);
	CHECK(next.day > c.day && next.day_start == c.next_day);
	CHECK(next.month >= c.month && next.week >= c.week);
}

static void check_zone(const struct tz *z, const uint8_t *data, size_t size)
{
	static const int64_t fixed[] = { US_1900, 0, INT64_C(1774746000000000) /* 2026-03-29 01:00Z */,
		                         INT64_C(1792889999999999), US_2400 };
	uint64_t h = 1469598103934665603ULL;

	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		check_calendar(z, fixed[i]);
	/* moments that depend on the input, spread over 1900..2400 */
	for (size_t i = 0; i < size; i++)
		h = (h ^ data[i]) * 1099511628211ULL;
	for (int i = 0; i < 8; i++) {
		check_calendar(z, US_1900 + (int64_t)(h % (uint64_t)(US_2400 - US_1900)));
		h = h * 6364136223846793005ULL + 1442695040888963407ULL;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256], rule[TZ_RULE_MAX + 1];
	struct tz z;

	err[0] = '\0';
	if (tz_parse((const char *)data, size, &z, err, sizeof(err)) == 0)
		check_zone(&z, data, size);
	else
		CHECK(err[0] != '\0');
	err[0] = '\0';
	if (tz_footer(data, size, rule, sizeof(rule), err, sizeof(err)) == 0) {
		CHECK(tz_parse(rule, strlen(rule), &z, err, sizeof(err)) == 0);
		check_zone(&z, data, size);
	} else {
		CHECK(err[0] != '\0');
	}
	return 0;
}

#ifdef FUZZ_STANDALONE

#define FUZZ_NAME "fuzz_tz"
#define FUZZ_CORPUS "fuzz/corpus_tz"
#define FUZZ_MAX_INPUT 4096
#define FUZZ_MAX_EDITS 4
/* the characters of POSIX rules, and a few that must be refused */
#define FUZZ_ALPHABET "0123456789,.:/<>+-JMESTDCUA\n\0\xff"
#define FUZZ_REPLACE_FROM_ALPHABET 1
#include "standalone.h"

static void fuzz_builtin(struct seeds *s)
{
	static const char *const builtin[] = {
		"UTC0", "CET-1CEST,M3.5.0,M10.5.0/3", "EST5EDT", "<+0530>-5:30",
		"AEST-10AEDT,M10.1.0,M4.1.0/3", "<-04>4<-03>,M9.1.6/24,M4.1.6/24",
		"EST5EDT,0/0,J365/25", "<-03>3<-02>,M3.5.0/-2,M10.5.0/-1",
		"XXX-24YYY24,J60/-167,59/167",
	};

	for (size_t i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++)
		fuzz_seed(s, builtin[i], strlen(builtin[i]));
}

#endif /* FUZZ_STANDALONE */
