/*
 * check_money.c: unit tests of the code shared by libsidecard and the daemon
 * (common/money.c, error.c, names.c): exact dollar parsing and formatting
 * with both sides of every int64 boundary, error names and messages
 * generated from SC_ERRNO_MAP, and the enumeration name tables.
 * Single-threaded; no daemon.
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "sidecard.h"
#include "suites.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static const struct {
	const char *text;
	sc_micros micros;
} parse_ok[] = {
	{ "0", 0 },
	{ "0.00", 0 },
	{ "-0", 0 },
	{ "2.40", 2400000 },
	{ "2.4", 2400000 },
	{ "$2.40", 2400000 },
	{ "-$2.40", -2400000 },
	{ "$-2.40", -2400000 },
	{ "+1", 1000000 },
	{ "0.000001", 1 },
	{ "-0.000001", -1 },
	{ "007.5", 7500000 },
	{ "1000000", INT64_C(1000000000000) },
	{ "5000", INT64_C(5000000000) },
	{ "9223372036854.775807", INT64_MAX },
	{ "9223372036854.775806", INT64_MAX - 1 },
	{ "-9223372036854.775808", INT64_MIN },
	{ "-9223372036854.775807", INT64_MIN + 1 },
	{ "9223372036854", INT64_C(9223372036854000000) },
	{ "-9223372036854", INT64_C(-9223372036854000000) },
};

START_TEST(test_parse_exact)
{
	sc_micros m = 42;

	ck_assert_int_eq(sc_money_parse(parse_ok[_i].text, &m), 0);
	ck_assert_msg(m == parse_ok[_i].micros, "'%s' parsed as %lld", parse_ok[_i].text,
	              (long long)m);
}
END_TEST

static const char *const parse_invalid[] = {
	"",       "$",          "-",     "+",     "$-",    "-$",       "1e3",   "2.4000001",
	"2.",     ".5",         " 1",    "1 ",    "1.2.3", "--1",      "$$1",   "-+1",
	"abc",    "1,000",      "0x10",  "2.40USD", "NaN", "inf",      "1.-5",  "1.0000000",
	"\t1",    "1\n",        "1$",    "१",     "2..4",  "9223372036854.7758070",
};

/* text must be refused with code, and the output left as it was. */
static void expect_parse_refused(const char *text, int code)
{
	sc_micros m = 42;
	int rc = sc_money_parse(text, &m);

	ck_assert_msg(rc == code, "'%s': %s, expected %s", text, sc_err_name(rc), sc_err_name(code));
	ck_assert_int_eq(m, 42);
}

START_TEST(test_parse_invalid)
{
	expect_parse_refused(parse_invalid[_i], SC_EINVAL);
}
END_TEST

START_TEST(test_parse_null)
{
	sc_micros m = 0;

	ck_assert_int_eq(sc_money_parse(NULL, &m), SC_EINVAL);
	ck_assert_int_eq(sc_money_parse("1", NULL), SC_EINVAL);
}
END_TEST

/* One past each end of int64, in every position where the overflow can happen. */
static const char *const parse_range[] = {
	"9223372036854.775808",  "-9223372036854.775809", "9223372036855",
	"-9223372036855",        "9223372036854.78",      "-9223372036854.78",
	"92233720368547758",     "99999999999999999999999", "-99999999999999999999999",
	"$9223372036854.775808", "18446744073709.551616",
};

START_TEST(test_parse_range)
{
	expect_parse_refused(parse_range[_i], SC_ERANGE);
}
END_TEST

static const struct {
	sc_micros micros;
	const char *text;
} format_cases[] = {
	{ 0, "0.00" },
	{ 1, "0.000001" },
	{ 10, "0.00001" },
	{ 2400000, "2.40" },
	{ 2500000, "2.50" },
	{ 1000000, "1.00" },
	{ 1230000, "1.23" },
	{ 1234567, "1.234567" },
	{ 1234500, "1.2345" },
	{ -1, "-0.000001" },
	{ -2400000, "-2.40" },
	{ INT64_C(5000000000000), "5000000.00" },
	{ INT64_MAX, "9223372036854.775807" },
	{ INT64_MIN, "-9223372036854.775808" },
	{ INT64_MIN + 1, "-9223372036854.775807" },
};

START_TEST(test_format)
{
	char buf[SC_MONEY_STRLEN];

	ck_assert_ptr_eq(sc_money_format(format_cases[_i].micros, buf, sizeof(buf)), buf);
	ck_assert_str_eq(buf, format_cases[_i].text);
}
END_TEST

START_TEST(test_format_longest_fits)
{
	char buf[SC_MONEY_STRLEN];

	sc_money_format(INT64_MIN, buf, sizeof(buf));
	ck_assert_uint_lt(strlen(buf), SC_MONEY_STRLEN);
}
END_TEST

START_TEST(test_format_truncates)
{
	char buf[8];

	memset(buf, 'x', sizeof(buf));
	sc_money_format(2400000, buf, 5);
	ck_assert_str_eq(buf, "2.40");
	sc_money_format(2400000, buf, 3);
	ck_assert_str_eq(buf, "2.");
	ck_assert_int_eq(buf[4], 0);
	buf[0] = 'x';
	sc_money_format(1, buf, 0);
	ck_assert_int_eq(buf[0], 'x');
}
END_TEST

/* Every value formats and parses back to itself: the boundaries and a pseudo-random spread. */
START_TEST(test_roundtrip)
{
	static const sc_micros edges[] = { 0,         1,          -1,         999999,
		                           1000000,   -1000000,   INT64_MAX,  INT64_MIN,
		                           INT64_MAX - 1, INT64_MIN + 1, INT64_MAX / 10,
		                           INT64_MIN / 10 };
	char buf[SC_MONEY_STRLEN];
	uint64_t x = UINT64_C(0x9e3779b97f4a7c15);
	sc_micros m, back;
	size_t i;

	for (i = 0; i < COUNT(edges) + 100000; i++) {
		if (i < COUNT(edges)) {
			m = edges[i];
		} else {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			/* Spread over every magnitude, not only huge numbers. */
			m = (sc_micros)(x >> (x % 64));
			if (x & 1)
				m = -m;
		}
		sc_money_format(m, buf, sizeof(buf));
		ck_assert_int_eq(sc_money_parse(buf, &back), 0);
		ck_assert_msg(back == m, "%lld -> '%s' -> %lld", (long long)m, buf, (long long)back);
	}
}
END_TEST

/* ----- errors ----- */

static const struct {
	int code;
	const char *name, *message;
} error_table[] = {
#define XX(n, value, wire, msg) { SC_E##n, wire, msg },
	SC_ERRNO_MAP(XX)
#undef XX
};

START_TEST(test_error_names)
{
	ck_assert_str_eq(sc_err_name(error_table[_i].code), error_table[_i].name);
	ck_assert_str_eq(sc_strerror(error_table[_i].code), error_table[_i].message);
	ck_assert_int_eq(sc_err_from_name(error_table[_i].name), error_table[_i].code);
}
END_TEST

START_TEST(test_error_codes_distinct)
{
	size_t i, j;

	for (i = 0; i < COUNT(error_table); i++) {
		ck_assert_int_lt(error_table[i].code, -1000);
		for (j = i + 1; j < COUNT(error_table); j++) {
			ck_assert_int_ne(error_table[i].code, error_table[j].code);
			ck_assert_str_ne(error_table[i].name, error_table[j].name);
		}
	}
}
END_TEST

START_TEST(test_error_wire_values)
{
	/* The numbers are part of the protocol (PROTOCOL.md, Errors). */
	ck_assert_int_eq(SC_EINVAL, -1001);
	ck_assert_int_eq(SC_ENOTFOUND, -1002);
	ck_assert_int_eq(SC_EEXISTS, -1003);
	ck_assert_int_eq(SC_ELIMIT, -1004);
	ck_assert_int_eq(SC_EUNSUPPORTED, -1005);
	ck_assert_int_eq(SC_EINTERNAL, -1006);
	ck_assert_int_eq(SC_ERANGE, -1007);
	ck_assert_int_eq(SC_EPROTO, -1008);
	ck_assert_int_eq(SC_EUNAVAILABLE, -1010);
}
END_TEST

START_TEST(test_error_errno)
{
	ck_assert_str_eq(sc_err_name(-ENOENT), "ENOENT");
	ck_assert_str_eq(sc_strerror(-ENOENT), "No such file or directory");
	ck_assert_str_eq(sc_err_name(-ECONNREFUSED), "ECONNREFUSED");
	ck_assert_str_eq(sc_err_name(-EPIPE), "EPIPE");
	ck_assert_str_eq(sc_strerror(-EPIPE), "Broken pipe");
}
END_TEST

START_TEST(test_error_unknown)
{
	static const int codes[] = { 1, 12345, -999, -1011, -100000, INT_MIN, INT_MAX };
	size_t i;

	ck_assert_str_eq(sc_err_name(0), "ok");
	ck_assert_str_eq(sc_strerror(0), "success");
	for (i = 0; i < COUNT(codes); i++) {
		ck_assert_ptr_nonnull(sc_err_name(codes[i]));
		ck_assert_ptr_nonnull(sc_strerror(codes[i]));
	}
	ck_assert_str_eq(sc_err_name(12345), "unknown");
	ck_assert_str_eq(sc_strerror(INT_MIN), "unknown error");
	ck_assert_str_eq(sc_err_name(-100000), "unknown");
	ck_assert_int_eq(sc_err_from_name("no_such_error"), SC_EPROTO);
	ck_assert_int_eq(sc_err_from_name("NOT_FOUND"), SC_EPROTO);
	ck_assert_int_eq(sc_err_from_name(""), SC_EPROTO);
	ck_assert_int_eq(sc_err_from_name(NULL), SC_EPROTO);
}
END_TEST

/* ----- name tables ----- */

#define ROUNDTRIP(name_fn, parse_fn, type, last)                               \
	do {                                                                   \
		type v_, back_;                                                \
		for (v_ = (type)0; v_ <= (last); v_++) {                       \
			ck_assert_int_eq(parse_fn(name_fn(v_), &back_), 0);    \
			ck_assert_int_eq(back_, v_);                           \
		}                                                              \
		ck_assert_str_eq(name_fn((type)((last) + 1)), "unknown");     \
		ck_assert_int_eq(parse_fn("", &back_), SC_EINVAL);             \
		ck_assert_int_eq(parse_fn("unknown", &back_), SC_EINVAL);      \
		ck_assert_int_eq(parse_fn(NULL, &back_), SC_EINVAL);           \
	} while (0)

START_TEST(test_names_roundtrip)
{
	ROUNDTRIP(sc_priority_name, sc_priority_parse, enum sc_priority, SC_PRIORITY_CRITICAL);
	ROUNDTRIP(sc_status_name, sc_status_parse, enum sc_status, SC_STATUS_FROZEN);
	ROUNDTRIP(sc_outcome_name, sc_outcome_parse, enum sc_outcome, SC_OUTCOME_PARTIAL);
	ROUNDTRIP(sc_txn_status_name, sc_txn_status_parse, enum sc_txn_status, SC_TXN_EXPIRED);
}
END_TEST

START_TEST(test_names_wire_words)
{
	enum sc_priority p;
	enum sc_status s;

	ck_assert_str_eq(sc_priority_name(SC_PRIORITY_NORMAL), "normal");
	ck_assert_str_eq(sc_priority_name(SC_PRIORITY_HIGH), "high");
	ck_assert_str_eq(sc_priority_name(SC_PRIORITY_CRITICAL), "critical");
	ck_assert_str_eq(sc_status_name(SC_STATUS_THROTTLED), "throttled");
	ck_assert_str_eq(sc_outcome_name(SC_OUTCOME_PARTIAL), "partial");
	ck_assert_str_eq(sc_txn_status_name(SC_TXN_EXPIRED), "expired");
	ck_assert_int_eq(sc_priority_parse("Critical", &p), SC_EINVAL);
	ck_assert_int_eq(sc_status_parse("frozen ", &s), SC_EINVAL);
}
END_TEST

Suite *money_suite(void)
{
	Suite *s = suite_create("money");
	TCase *tc;

	tc = tcase_create("parse");
	tcase_add_loop_test(tc, test_parse_exact, 0, COUNT(parse_ok));
	tcase_add_loop_test(tc, test_parse_invalid, 0, COUNT(parse_invalid));
	tcase_add_loop_test(tc, test_parse_range, 0, COUNT(parse_range));
	tcase_add_test(tc, test_parse_null);
	suite_add_tcase(s, tc);

	tc = tcase_create("format");
	tcase_add_loop_test(tc, test_format, 0, COUNT(format_cases));
	tcase_add_test(tc, test_format_longest_fits);
	tcase_add_test(tc, test_format_truncates);
	tcase_add_test(tc, test_roundtrip);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_add_loop_test(tc, test_error_names, 0, COUNT(error_table));
	tcase_add_test(tc, test_error_codes_distinct);
	tcase_add_test(tc, test_error_wire_values);
	tcase_add_test(tc, test_error_errno);
	tcase_add_test(tc, test_error_unknown);
	suite_add_tcase(s, tc);

	tc = tcase_create("names");
	tcase_add_test(tc, test_names_roundtrip);
	tcase_add_test(tc, test_names_wire_words);
	suite_add_tcase(s, tc);
	return s;
}
