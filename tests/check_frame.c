/*
 * check_frame.c: tests of the wire layer (protocol/frame.c, protocol/args.c):
 * the streaming scanner and its limits, envelope validation, named argument
 * access and the error map.
 *
 * Single-threaded; every test builds its messages with msgpack-c's packer
 * or as raw bytes and owns everything it allocates.
 */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "msgpack_same.h"
#include "proto.h"
#include "sidecard.h"
#include "testutil.h"

Suite *frame_suite(void);

/* ----- helpers ----- */

static struct proto_limits limits(void)
{
	struct proto_limits l;

	proto_limits_default(&l);
	return l;
}

static enum proto_scan scan(const void *buf, size_t n, size_t *len)
{
	struct proto_limits l = limits();
	int64_t msgid;

	return proto_scan(buf, n, &l, len, &msgid);
}

/* A request [0, msgid, method, [map]] whose map holds one value of every kind. */
static void pack_rich_request(msgpack_sbuffer *sb, uint32_t msgid)
{
	msgpack_packer pk;
	static const char bin[3] = { 1, 2, 3 };

	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 4);
	msgpack_pack_int(&pk, 0);
	msgpack_pack_uint32(&pk, msgid);
	proto_pack_cstr(&pk, "agents.create");
	msgpack_pack_array(&pk, 1);
	msgpack_pack_map(&pk, 8);
	proto_pack_key_u64(&pk, "agent_id", UINT64_C(1) << 40);
	proto_pack_key_i64(&pk, "delta", -70000);
	proto_pack_key_str(&pk, "name", "research-bot");
	proto_pack_key_bool(&pk, "flag", 1);
	proto_pack_cstr(&pk, "ratio");
	msgpack_pack_double(&pk, 0.25);
	proto_pack_cstr(&pk, "blob");
	msgpack_pack_bin(&pk, sizeof(bin));
	msgpack_pack_bin_body(&pk, bin, sizeof(bin));
	proto_pack_cstr(&pk, "none");
	msgpack_pack_nil(&pk);
	proto_pack_cstr(&pk, "list");
	msgpack_pack_array(&pk, 2);
	msgpack_pack_float(&pk, 1.5f);
	msgpack_pack_ext(&pk, 2, 7);
	msgpack_pack_ext_body(&pk, "xy", 2);
}

/* Unpacks sb's bytes into z; the object lives as long as both. */
static msgpack_object unpack(const msgpack_sbuffer *sb, msgpack_zone *z)
{
	msgpack_object o;
	size_t off = 0;

	ck_assert_int_eq(msgpack_unpack(sb->data, sb->size, &off, z, &o), MSGPACK_UNPACK_SUCCESS);
	return o;
}

/* ----- scanner: completeness ----- */

START_TEST(test_truncated_every_offset)
{
	msgpack_sbuffer sb;
	size_t len = 0;

	msgpack_sbuffer_init(&sb);
	pack_rich_request(&sb, 42);
	for (size_t n = 0; n < sb.size; n++)
		ck_assert_msg(scan(sb.data, n, &len) == PROTO_SCAN_INCOMPLETE, "offset %zu", n);
	ck_assert_int_eq(scan(sb.data, sb.size, &len), PROTO_SCAN_OK);
	ck_assert_uint_eq(len, sb.size);
	msgpack_sbuffer_destroy(&sb);
}
END_TEST

START_TEST(test_resume_byte_by_byte)
{
	struct proto_limits l = limits();
	struct proto_scanner sc;
	msgpack_sbuffer sb;
	int64_t msgid = 0;
	size_t len = 0;

	msgpack_sbuffer_init(&sb);
	pack_rich_request(&sb, 9);
	proto_scanner_reset(&sc);
	for (size_t n = 0; n < sb.size; n++)
		ck_assert_int_eq(proto_scanner_feed(&sc, sb.data, n, &l, &len, &msgid),
		                 PROTO_SCAN_INCOMPLETE);
	ck_assert_int_eq(proto_scanner_feed(&sc, sb.data, sb.size, &l, &len, &msgid), PROTO_SCAN_OK);
	ck_assert_uint_eq(len, sb.size);
	ck_assert_int_eq(msgid, 9);
	msgpack_sbuffer_destroy(&sb);
}
END_TEST

START_TEST(test_pipelined_two_messages)
{
	msgpack_sbuffer sb;
	size_t len = 0, first;

	msgpack_sbuffer_init(&sb);
	pack_rich_request(&sb, 1);
	first = sb.size;
	pack_rich_request(&sb, 2);
	ck_assert_int_eq(scan(sb.data, sb.size, &len), PROTO_SCAN_OK);
	ck_assert_uint_eq(len, first);
	ck_assert_int_eq(scan(sb.data + first, sb.size - first, &len), PROTO_SCAN_OK);
	ck_assert_uint_eq(len, sb.size - first);
	msgpack_sbuffer_destroy(&sb);
}
END_TEST

/* Every msgpack format, alone, by its raw bytes and expected size. */
static const struct {
	const char *name;
	const char *bytes;
	size_t size;
} formats[] = {
	{ "positive fixint", "\x05", 1 },
	{ "negative fixint", "\xff", 1 },
	{ "nil", "\xc0", 1 },
	{ "false", "\xc2", 1 },
	{ "true", "\xc3", 1 },
	{ "int8", "\xd0\x80", 2 },
	{ "int16", "\xd1\x80\x00", 3 },
	{ "int32", "\xd2\x80\x00\x00\x00", 5 },
	{ "int64", "\xd3\x80\x00\x00\x00\x00\x00\x00\x00", 9 },
	{ "uint8", "\xcc\xff", 2 },
	{ "uint16", "\xcd\xff\xff", 3 },
	{ "uint32", "\xce\xff\xff\xff\xff", 5 },
	{ "uint64", "\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9 },
	{ "float32", "\xca\x3f\xc0\x00\x00", 5 },
	{ "float64", "\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00", 9 },
	{ "fixstr", "\xa3" "abc", 4 },
	{ "str8", "\xd9\x03" "abc", 5 },
	{ "str16", "\xda\x00\x03" "abc", 6 },
	{ "str32", "\xdb\x00\x00\x00\x03" "abc", 8 },
	{ "bin8", "\xc4\x02" "ab", 4 },
	{ "bin16", "\xc5\x00\x02" "ab", 5 },
	{ "bin32", "\xc6\x00\x00\x00\x02" "ab", 7 },
	{ "ext8", "\xc7\x02\x05" "ab", 5 },
	{ "ext16", "\xc8\x00\x02\x05" "ab", 6 },
	{ "ext32", "\xc9\x00\x00\x00\x02\x05" "ab", 8 },
	{ "fixext1", "\xd4\x05" "a", 3 },
	{ "fixext2", "\xd5\x05" "ab", 4 },
	{ "fixext4", "\xd6\x05" "abcd", 6 },
	{ "fixext8", "\xd7\x05" "abcdefgh", 10 },
	{ "fixext16", "\xd8\x05" "abcdefghijklmnop", 18 },
	{ "fixarray", "\x92\x01\x02", 3 },
	{ "array16", "\xdc\x00\x02\x01\x02", 5 },
	{ "array32", "\xdd\x00\x00\x00\x02\x01\x02", 7 },
	{ "fixmap", "\x81\xa1k\x01", 4 },
	{ "map16", "\xde\x00\x01\xa1k\x01", 6 },
	{ "map32", "\xdf\x00\x00\x00\x01\xa1k\x01", 8 },
	{ "empty array", "\x90", 1 },
	{ "empty map16", "\xde\x00\x00", 3 },
};

START_TEST(test_every_format)
{
	size_t len = 0;
	char buf[64];

	for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++) {
		size_t size = formats[i].size;

		ck_assert_msg(scan(formats[i].bytes, size, &len) == PROTO_SCAN_OK, "%s",
		              formats[i].name);
		ck_assert_msg(len == size, "%s: %zu != %zu", formats[i].name, len, size);
		ck_assert_msg(scan(formats[i].bytes, size - 1, &len) == PROTO_SCAN_INCOMPLETE, "%s",
		              formats[i].name);
		/* followed by other bytes, the object still ends where it ends */
		memcpy(buf, formats[i].bytes, size);
		memset(buf + size, 0xc0, sizeof(buf) - size);
		ck_assert_int_eq(scan(buf, sizeof(buf), &len), PROTO_SCAN_OK);
		ck_assert_uint_eq(len, size);
	}
}
END_TEST

/* msgpack-c agrees with the scanner on where each format ends. */
START_TEST(test_every_format_unpacks)
{
	for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++) {
		msgpack_zone z;
		msgpack_object o;
		size_t off = 0;

		msgpack_zone_init(&z, 1024);
		ck_assert_msg(msgpack_unpack(formats[i].bytes, formats[i].size, &off, &z, &o) ==
		                  MSGPACK_UNPACK_SUCCESS,
		              "%s", formats[i].name);
		ck_assert_uint_eq(off, formats[i].size);
		msgpack_zone_destroy(&z);
	}
}
END_TEST

/* The envelope [0, 1, "m", [x]] around the bytes of one object x. */
#define WRAP_HEAD "\x94\x00\x01\xa1m\x91"

static size_t wrap(char *out, const char *x, size_t n)
{
	memcpy(out, WRAP_HEAD, sizeof(WRAP_HEAD) - 1);
	memcpy(out + sizeof(WRAP_HEAD) - 1, x, n);
	return sizeof(WRAP_HEAD) - 1 + n;
}

/*
 * proto_request_parse() unpacks every format into the objects msgpack-c
 * makes of it, including the int formats holding non-negative values
 * (positive integers) and float 32 (widened).
 */
START_TEST(test_every_format_objects)
{
	static const struct {
		const char *bytes;
		size_t size;
	} more[] = {
		{ "\xd0\x05", 2 }, { "\xd1\x00\x05", 3 }, { "\xd2\x00\x00\x00\x05", 5 },
		{ "\xd3\x00\x00\x00\x00\x00\x00\x00\x05", 9 }, { "\xe0", 1 }, { "\xd0\xdf", 2 },
		{ "\xd3\x7f\xff\xff\xff\xff\xff\xff\xff", 9 }, { "\xa0", 1 }, { "\xc4\x00", 2 },
		{ "\xc7\x00\x05", 3 }, { "\x82\xa1k\x90\x01\x80", 6 },
	};
	size_t n = sizeof(formats) / sizeof(formats[0]), total = n + sizeof(more) / sizeof(more[0]);

	for (size_t i = 0; i < total; i++) {
		const char *bytes = i < n ? formats[i].bytes : more[i - n].bytes;
		size_t size = i < n ? formats[i].size : more[i - n].size;
		struct proto_request req;
		msgpack_zone z1, z2;
		msgpack_object want;
		size_t off = 0, len;
		char buf[128], err[128];

		msgpack_zone_init(&z1, 1024);
		msgpack_zone_init(&z2, 1024);
		ck_assert_int_eq(msgpack_unpack(bytes, size, &off, &z1, &want), MSGPACK_UNPACK_SUCCESS);
		len = wrap(buf, bytes, size);
		ck_assert_msg(proto_request_parse(buf, len, &z2, &req, err, sizeof(err)) == 0,
		              "case %zu: %s", i, err);
		ck_assert_msg(test_msgpack_same(&req.params->via.array.ptr[0], &want), "case %zu",
		              i);
		ck_assert_uint_eq(req.params_raw_len, size + 1);
		msgpack_zone_destroy(&z1);
		msgpack_zone_destroy(&z2);
	}
}
END_TEST

/* The rich request: every value the same as msgpack-c's. */
START_TEST(test_request_objects)
{
	struct proto_request req;
	msgpack_sbuffer sb;
	msgpack_zone z;
	msgpack_object want;
	char err[128];

	msgpack_sbuffer_init(&sb);
	pack_rich_request(&sb, 77);
	msgpack_zone_init(&z, 1024);
	want = unpack(&sb, &z);
	ck_assert_int_eq(proto_request_parse(sb.data, sb.size, &z, &req, err, sizeof(err)), 0);
	ck_assert(test_msgpack_same(req.params, &want.via.array.ptr[3]));
	msgpack_zone_destroy(&z);
	msgpack_sbuffer_destroy(&sb);
}
END_TEST

/* Where msgpack-c's unpacker refuses bytes, proto_request_parse does too. */
static void check_same_verdict(const char *bytes, size_t n, const char *what)
{
	struct proto_request req;
	msgpack_zone z;
	msgpack_object o;
	size_t off = 0;
	char err[128] = "";
	int unpacks, parsed;

	msgpack_zone_init(&z, 1024);
	unpacks = msgpack_unpack(bytes, n, &off, &z, &o) == MSGPACK_UNPACK_SUCCESS && off == n;
	msgpack_zone_clear(&z);
	parsed = proto_request_parse(bytes, n, &z, &req, err, sizeof(err)) == 0;
	ck_assert_msg(unpacks == (parsed || strcmp(err, "malformed msgpack") != 0), "%s", what);
	if (!unpacks)
		ck_assert_msg(strcmp(err, "malformed msgpack") == 0, "%s: %s", what, err);
	msgpack_zone_destroy(&z);
}

START_TEST(test_unpack_verdicts)
{
	char buf[256], what[64];
	size_t len;

	/* every format cut short, or followed by a byte too many */
	for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++) {
		len = wrap(buf, formats[i].bytes, formats[i].size);
		for (size_t cut = 0; cut < len; cut++) {
			snprintf(what, sizeof(what), "%s cut at %zu", formats[i].name, cut);
			check_same_verdict(buf, cut, what);
		}
		buf[len] = '\x01';
		snprintf(what, sizeof(what), "%s with a byte after", formats[i].name);
		check_same_verdict(buf, len + 1, what);
	}
	check_same_verdict(WRAP_HEAD "\xc1", sizeof(WRAP_HEAD), "0xc1");
	/* counts announcing far more than the bytes that follow */
	check_same_verdict(WRAP_HEAD "\xdd\x7f\xff\xff\xff\x01", sizeof(WRAP_HEAD) + 5, "array32");
	check_same_verdict(WRAP_HEAD "\xdf\x00\x01\x00\x00\x01\x01", sizeof(WRAP_HEAD) + 6, "map32");
	check_same_verdict(WRAP_HEAD "\xdb\x00\x01\x00\x00xy", sizeof(WRAP_HEAD) + 6, "str32");
	/* nesting: msgpack-c holds 32 open containers, the envelope and params are two */
	for (size_t depth = 28; depth <= 34; depth++) {
		len = sizeof(WRAP_HEAD) - 1;
		memcpy(buf, WRAP_HEAD, len);
		for (size_t d = 0; d < depth; d++)
			buf[len++] = '\x91';
		buf[len++] = '\x90';
		snprintf(what, sizeof(what), "%zu nested arrays", depth);
		check_same_verdict(buf, len, what);
		buf[len - 1] = '\x01';
		check_same_verdict(buf, len, what);
	}
}
END_TEST

/* ----- scanner: malformed input and limits ----- */

START_TEST(test_malformed_c1)
{
	size_t len;
	char msg[128];
	struct proto_limits l = limits();

	ck_assert_int_eq(scan("\xc1", 1, &len), PROTO_SCAN_MALFORMED);
	ck_assert_int_eq(scan("\x94\x00\x01\xc1", 4, &len), PROTO_SCAN_MALFORMED);
	ck_assert_int_eq(scan("\x81\xa1k\xc1", 4, &len), PROTO_SCAN_MALFORMED);
	ck_assert_int_eq(proto_scan_code(PROTO_SCAN_MALFORMED), SC_EPROTO);
	ck_assert_str_eq(proto_scan_message(PROTO_SCAN_MALFORMED, &l, msg, sizeof(msg)),
	                 "malformed msgpack (byte 0xc1)");
}
END_TEST

/* A str32 header announcing 100 MB, with max_string out of the way. */
START_TEST(test_too_big_declared)
{
	struct proto_limits l = limits();
	const char hdr[] = "\x94\x00\x07\xdb\x05\xf5\xe1\x00";
	int64_t msgid;
	size_t len;
	char msg[128];

	l.max_string = SIZE_MAX;
	ck_assert_int_eq(proto_scan(hdr, sizeof(hdr) - 1, &l, &len, &msgid), PROTO_SCAN_TOO_BIG);
	ck_assert_int_eq(msgid, 7);
	ck_assert_int_eq(proto_scan_code(PROTO_SCAN_TOO_BIG), SC_ELIMIT);
	ck_assert_str_eq(proto_scan_message(PROTO_SCAN_TOO_BIG, &l, msg, sizeof(msg)),
	                 "message exceeds max_message (65536 bytes)");
}
END_TEST

/* An array of many small strings: the size is only known as bytes arrive. */
START_TEST(test_too_big_actual)
{
	struct proto_limits l = limits();
	msgpack_sbuffer sb;
	msgpack_packer pk;
	char s[100];
	int64_t msgid;
	size_t len;

	memset(s, 'x', sizeof(s));
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 1000);
	for (int i = 0; i < 1000; i++)
		proto_pack_strn(&pk, s, sizeof(s));
	ck_assert_uint_gt(sb.size, l.max_message);
	ck_assert_int_eq(proto_scan(sb.data, sb.size, &l, &len, &msgid), PROTO_SCAN_TOO_BIG);
	ck_assert_int_eq(msgid, -1);
	ck_assert_int_eq(proto_scan(sb.data, 1000, &l, &len, &msgid), PROTO_SCAN_INCOMPLETE);
	/* a string that would end past max_message is refused at its header */
	ck_assert_int_eq(proto_scan(sb.data, l.max_message - 1, &l, &len, &msgid),
	                 PROTO_SCAN_TOO_BIG);
	msgpack_sbuffer_destroy(&sb);

	/* 1-byte elements: only the buffered size tells */
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 100);
	for (int i = 0; i < 100; i++) {
		msgpack_pack_array(&pk, 1000);
		for (int j = 0; j < 1000; j++)
			msgpack_pack_int(&pk, 1);
	}
	ck_assert_int_eq(proto_scan(sb.data, l.max_message - 1, &l, &len, &msgid),
	                 PROTO_SCAN_INCOMPLETE);
	/* an incomplete prefix of max_message bytes cannot end in time */
	ck_assert_int_eq(proto_scan(sb.data, l.max_message, &l, &len, &msgid), PROTO_SCAN_TOO_BIG);
	msgpack_sbuffer_destroy(&sb);
}
END_TEST

/* A message of exactly max_message bytes passes; one more byte does not. */
START_TEST(test_max_message_boundary)
{
	struct proto_limits l = limits();
	char *buf = malloc(l.max_message + 1);
	int64_t msgid;
	size_t len;

	l.max_string = SIZE_MAX;
	/* bin32 header (5 bytes) + payload */
	buf[0] = (char)0xc6;
	for (int extra = 0; extra <= 1; extra++) {
		uint32_t payload = (uint32_t)(l.max_message - 5 + (size_t)extra);

		buf[1] = (char)(payload >> 24);
		buf[2] = (char)(payload >> 16);
		buf[3] = (char)(payload >> 8);
		buf[4] = (char)payload;
		memset(buf + 5, 'a', payload);
		ck_assert_int_eq(proto_scan(buf, 5 + payload, &l, &len, &msgid),
		                 extra ? PROTO_SCAN_TOO_BIG : PROTO_SCAN_OK);
	}
	free(buf);
}
END_TEST

static size_t pack_nested(char *buf, unsigned depth)
{
	for (unsigned i = 0; i < depth; i++)
		buf[i] = (char)0x91; /* fixarray of 1 */
	buf[depth] = 0x01;
	return depth + 1;
}

START_TEST(test_depth)
{
	struct proto_limits l = limits();
	char buf[64];
	char msg[128];
	int64_t msgid;
	size_t len, n;

	n = pack_nested(buf, 16);
	ck_assert_int_eq(proto_scan(buf, n, &l, &len, &msgid), PROTO_SCAN_OK);
	n = pack_nested(buf, 17);
	/* refused at the 17th header, before the rest arrives */
	ck_assert_int_eq(proto_scan(buf, 17, &l, &len, &msgid), PROTO_SCAN_TOO_DEEP);
	ck_assert_int_eq(proto_scan(buf, n, &l, &len, &msgid), PROTO_SCAN_TOO_DEEP);
	/* an empty container counts as a level too */
	memset(buf, 0x91, 16);
	buf[16] = (char)0x90;
	ck_assert_int_eq(proto_scan(buf, 17, &l, &len, &msgid), PROTO_SCAN_TOO_DEEP);
	ck_assert_str_eq(proto_scan_message(PROTO_SCAN_TOO_DEEP, &l, msg, sizeof(msg)),
	                 "nesting exceeds max_depth (16)");
}
END_TEST

/* At the cap, the scanner and msgpack-c's unpacker still agree. */
START_TEST(test_depth_cap)
{
	struct proto_limits l = limits();
	char buf[64];
	int64_t msgid;
	size_t len, n;
	msgpack_zone z;
	msgpack_object o;
	size_t off = 0;

	l.max_depth = 1000;
	n = pack_nested(buf, PROTO_DEPTH_CAP);
	ck_assert_int_eq(proto_scan(buf, n, &l, &len, &msgid), PROTO_SCAN_OK);
	msgpack_zone_init(&z, 1024);
	ck_assert_int_eq(msgpack_unpack(buf, n, &off, &z, &o), MSGPACK_UNPACK_SUCCESS);
	msgpack_zone_destroy(&z);
	n = pack_nested(buf, PROTO_DEPTH_CAP + 1);
	ck_assert_int_eq(proto_scan(buf, n, &l, &len, &msgid), PROTO_SCAN_TOO_DEEP);
}
END_TEST

START_TEST(test_string_too_long)
{
	struct proto_limits l = limits();
	char *buf = malloc(8 + 4097);
	char msg[128];
	int64_t msgid;
	size_t len;

	/* [0, 3, <str16 of 4096>] passes; 4097 fails on the header alone */
	memcpy(buf, "\x93\x00\x03\xda\x10\x00", 6);
	memset(buf + 6, 'a', 4097);
	ck_assert_int_eq(proto_scan(buf, 6 + 4096, &l, &len, &msgid), PROTO_SCAN_OK);
	buf[5] = 0x01;
	ck_assert_int_eq(proto_scan(buf, 6, &l, &len, &msgid), PROTO_SCAN_STRING_TOO_LONG);
	ck_assert_int_eq(msgid, 3);
	/* bin and ext are held to the same limit */
	ck_assert_int_eq(proto_scan("\xc5\x10\x01", 3, &l, &len, &msgid),
	                 PROTO_SCAN_STRING_TOO_LONG);
	ck_assert_int_eq(proto_scan("\xc8\x10\x01\x05", 4, &l, &len, &msgid),
	                 PROTO_SCAN_STRING_TOO_LONG);
	ck_assert_str_eq(proto_scan_message(PROTO_SCAN_STRING_TOO_LONG, &l, msg, sizeof(msg)),
	                 "string exceeds max_string (4096 bytes)");
	free(buf);
}
END_TEST

START_TEST(test_too_many_items)
{
	struct proto_limits l = limits();
	msgpack_sbuffer sb;
	msgpack_packer pk;
	char msg[128];
	int64_t msgid;
	size_t len;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 1024);
	for (int i = 0; i < 1024; i++)
		msgpack_pack_int(&pk, i);
	ck_assert_int_eq(proto_scan(sb.data, sb.size, &l, &len, &msgid), PROTO_SCAN_OK);
	msgpack_sbuffer_destroy(&sb);
	ck_assert_int_eq(proto_scan("\xdc\x04\x01", 3, &l, &len, &msgid),
	                 PROTO_SCAN_TOO_MANY_ITEMS);
	ck_assert_int_eq(proto_scan("\xdf\x00\x00\x04\x01", 5, &l, &len, &msgid),
	                 PROTO_SCAN_TOO_MANY_ITEMS);
	ck_assert_int_eq(proto_scan("\xdd\xff\xff\xff\xff", 5, &l, &len, &msgid),
	                 PROTO_SCAN_TOO_MANY_ITEMS);
	ck_assert_str_eq(proto_scan_message(PROTO_SCAN_TOO_MANY_ITEMS, &l, msg, sizeof(msg)),
	                 "array or map exceeds max_items (1024)");
}
END_TEST

START_TEST(test_msgid_recovery)
{
	struct proto_limits l = limits();
	int64_t msgid;
	size_t len;

	ck_assert_int_eq(proto_scan("\x94\x00\xce\xff\xff\xff\xff\xc1", 8, &l, &len, &msgid),
	                 PROTO_SCAN_MALFORMED);
	ck_assert_int_eq(msgid, UINT32_MAX);
	/* a msgid beyond 32 bits, a notification or a response give no msgid */
	ck_assert_int_eq(proto_scan("\x94\x00\xcf\x00\x00\x00\x01\x00\x00\x00\x00\xc1", 12, &l, &len,
	                            &msgid),
	                 PROTO_SCAN_MALFORMED);
	ck_assert_int_eq(msgid, -1);
	ck_assert_int_eq(proto_scan("\x93\x02\x05\xc1", 4, &l, &len, &msgid), PROTO_SCAN_MALFORMED);
	ck_assert_int_eq(msgid, -1);
	ck_assert_int_eq(proto_scan("\x94\x01\x05\xc1", 4, &l, &len, &msgid), PROTO_SCAN_MALFORMED);
	ck_assert_int_eq(msgid, -1);
	/* only the outermost array counts */
	ck_assert_int_eq(proto_scan("\x91\x94\x00\x05\xc1", 5, &l, &len, &msgid),
	                 PROTO_SCAN_MALFORMED);
	ck_assert_int_eq(msgid, -1);
}
END_TEST

/* ----- envelope ----- */

static int parse_bytes(const char *bytes, size_t n, struct proto_request *req, char *err)
{
	msgpack_zone z;
	int rc;

	msgpack_zone_init(&z, 1024);
	rc = proto_request_parse(bytes, n, &z, req, err, 128);
	msgpack_zone_destroy(&z);
	return rc;
}

START_TEST(test_envelope_ok)
{
	msgpack_sbuffer sb;
	msgpack_zone z;
	struct proto_request req;
	char err[128];

	msgpack_sbuffer_init(&sb);
	pack_rich_request(&sb, 4000000000u);
	msgpack_zone_init(&z, 1024);
	ck_assert_int_eq(proto_request_parse(sb.data, sb.size, &z, &req, err, sizeof(err)), 0);
	ck_assert_int_eq(req.type, PROTO_REQUEST);
	ck_assert_uint_eq(req.msgid, 4000000000u);
	ck_assert_uint_eq(req.method_len, strlen("agents.create"));
	ck_assert(memcmp(req.method, "agents.create", req.method_len) == 0);
	ck_assert_uint_eq(req.params->via.array.size, 1);
	msgpack_sbuffer_destroy(&sb);

	msgpack_zone_clear(&z);
	ck_assert_int_eq(proto_request_parse("\x93\x02\xa4ping\x90", 8, &z, &req, err, sizeof(err)),
	                 0);
	ck_assert_int_eq(req.type, PROTO_NOTIFICATION);
	ck_assert_uint_eq(req.params->via.array.size, 0);
	msgpack_zone_destroy(&z);
}
END_TEST

/*
 * params_raw is params's bytes as the client sent them, whatever encodings
 * the envelope used before it: array 16, a type and msgid in wider integer
 * formats than needed, a method in str 8.
 */
START_TEST(test_envelope_params_raw)
{
	static const char wide[] = "\xdc\x00\x04"        /* array 16 of 4 */
	                           "\xcc\x00"             /* 0 as uint 8 */
	                           "\xce\x00\x00\x00\x07" /* msgid 7 as uint 32 */
	                           "\xd9\x05" "check"    /* str 8 */
	                           "\x91\x81\xa1k\xcd\x00\x01"; /* [{"k": 1 as uint 16}] */
	static const char note[] = "\x93\x02\xa4ping\x91\x80";
	struct proto_request req;
	msgpack_zone z;
	char err[128];

	msgpack_zone_init(&z, 1024);
	ck_assert_int_eq(proto_request_parse(wide, sizeof(wide) - 1, &z, &req, err, sizeof(err)), 0);
	ck_assert_uint_eq(req.msgid, 7);
	ck_assert_uint_eq(req.params_raw_len, 7);
	ck_assert(memcmp(req.params_raw, "\x91\x81\xa1k\xcd\x00\x01", 7) == 0);
	msgpack_zone_clear(&z);
	ck_assert_int_eq(proto_request_parse(note, sizeof(note) - 1, &z, &req, err, sizeof(err)), 0);
	ck_assert_uint_eq(req.params_raw_len, 2);
	ck_assert(memcmp(req.params_raw, "\x91\x80", 2) == 0);
	msgpack_zone_destroy(&z);
}
END_TEST

START_TEST(test_envelope_errors)
{
	static const struct {
		const char *bytes;
		size_t n;
		const char *message;
	} cases[] = {
		{ "\x05", 1, "request must be an array" },
		{ "\x90", 1, "request must be an array" },
		{ "\x94\x05\x01\xa1m\x90", 6, "message type must be 0 (request) or 2 (notification)" },
		{ "\x94\x01\x01\xc0\xc0", 5, "message type must be 0 (request) or 2 (notification)" },
		{ "\x94\xa1x\x01\xa1m\x90", 7, "message type must be 0 (request) or 2 (notification)" },
		{ "\x93\x00\x01\xa1m", 5, "request must be an array of 4" },
		{ "\x94\x02\xa1m\x90\x90", 6, "notification must be an array of 3" },
		{ "\x94\x00\xa1x\xa1m\x90", 7, "msgid must be a uint32" },
		{ "\x94\x00\xff\xa1m\x90", 6, "msgid must be a uint32" },
		{ "\x94\x00\xcf\x00\x00\x00\x01\x00\x00\x00\x00\xa1m\x90", 14, "msgid must be a uint32" },
		{ "\x94\x00\x01\x05\x90", 5, "method must be a string" },
		{ "\x94\x00\x01\xc4\x01m\x90", 7, "method must be a string" },
		{ "\x94\x00\x01\xa1m\x80", 6, "params must be an array" },
		{ "\x93\x02\xa1m\xc0", 5, "params must be an array" },
	};
	struct proto_request req;
	char err[128];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ck_assert_msg(parse_bytes(cases[i].bytes, cases[i].n, &req, err) == SC_EPROTO,
		              "case %zu", i);
		ck_assert_msg(strcmp(err, cases[i].message) == 0, "case %zu: %s", i, err);
	}
}
END_TEST

/* ----- arguments ----- */

/* A test map: params [ {...} ] built by the caller, unpacked into z. */
struct argmsg {
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_zone z;
	msgpack_object params;
	struct proto_args a;
	char err[256];
};

static void argmsg_begin(struct argmsg *m, uint32_t entries)
{
	msgpack_sbuffer_init(&m->sb);
	msgpack_packer_init(&m->pk, &m->sb, msgpack_sbuffer_write);
	msgpack_zone_init(&m->z, 1024);
	msgpack_pack_array(&m->pk, 1);
	msgpack_pack_map(&m->pk, entries);
}

static int argmsg_init(struct argmsg *m)
{
	m->params = unpack(&m->sb, &m->z);
	return proto_args_init(&m->a, &m->params, m->err, sizeof(m->err));
}

static void argmsg_end(struct argmsg *m)
{
	msgpack_zone_destroy(&m->z);
	msgpack_sbuffer_destroy(&m->sb);
}

START_TEST(test_args_required)
{
	struct argmsg m;
	uint64_t id = 0;
	int64_t cost = 5;
	int present = 7;

	argmsg_begin(&m, 1);
	proto_pack_key_str(&m.pk, "note", NULL);
	ck_assert_int_eq(argmsg_init(&m), 0);
	ck_assert_int_eq(proto_arg_u64(&m.a, "agent_id", 1, &id, NULL), SC_EINVAL);
	ck_assert_str_eq(proto_args_error(&m.a), "agent_id: required");
	/* optional and missing, optional and nil */
	ck_assert_int_eq(proto_arg_money(&m.a, "estimated_cost", 0, &cost, &present), 0);
	ck_assert_int_eq(present, 0);
	ck_assert_int_eq(cost, 5);
	present = 7;
	ck_assert_int_eq(proto_arg_money(&m.a, "note", 0, &cost, &present), 0);
	ck_assert_int_eq(present, 0);
	/* required and nil */
	ck_assert_int_eq(proto_arg_money(&m.a, "note", 1, &cost, NULL), SC_EINVAL);
	ck_assert_str_eq(proto_args_error(&m.a), "note: required");
	argmsg_end(&m);
}
END_TEST

START_TEST(test_args_money)
{
	struct argmsg m;
	int64_t v = 0;
	int present = 0;

	argmsg_begin(&m, 6);
	proto_pack_key_u64(&m.pk, "ok", 2500000);
	proto_pack_cstr(&m.pk, "float");
	msgpack_pack_double(&m.pk, 2.5);
	proto_pack_key_str(&m.pk, "string", "2.50");
	proto_pack_key_i64(&m.pk, "negative", -1);
	proto_pack_key_u64(&m.pk, "huge", (uint64_t)INT64_MAX + 1);
	proto_pack_key_u64(&m.pk, "max", INT64_MAX);
	ck_assert_int_eq(argmsg_init(&m), 0);
	ck_assert_int_eq(proto_arg_money(&m.a, "ok", 1, &v, &present), 0);
	ck_assert_int_eq(v, 2500000);
	ck_assert_int_eq(present, 1);
	ck_assert_int_eq(proto_arg_money(&m.a, "float", 1, &v, NULL), SC_EINVAL);
	ck_assert_str_eq(proto_args_error(&m.a),
	                 "float: must be an integer number of micro-dollars, got a float");
	ck_assert_int_eq(proto_arg_money(&m.a, "string", 1, &v, NULL), SC_EINVAL);
	ck_assert_str_eq(proto_args_error(&m.a),
	                 "string: must be an integer number of micro-dollars, got a string");
	ck_assert_int_eq(proto_arg_money(&m.a, "negative", 1, &v, NULL), SC_EINVAL);
	ck_assert_str_eq(proto_args_error(&m.a), "negative: must not be negative");
	ck_assert_int_eq(proto_arg_money(&m.a, "huge", 1, &v, NULL), SC_ERANGE);
	ck_assert_str_eq(proto_args_error(&m.a), "huge: out of range (max 9223372036854775807)");
	ck_assert_int_eq(proto_arg_money(&m.a, "max", 1, &v, NULL), 0);
	ck_assert_int_eq(v, INT64_MAX);
	ck_assert_int_eq(proto_args_finish(&m.a), 0);
	argmsg_end(&m);
}
END_TEST

START_TEST(test_args_ids_and_ints)
{
	struct argmsg m;
	uint64_t id = 0;
	int64_t v = 0;

	argmsg_begin(&m, 6);
	proto_pack_key_u64(&m.pk, "big", UINT64_MAX);
	proto_pack_key_u64(&m.pk, "zero", 0);
	proto_pack_key_i64(&m.pk, "neg", -3);
	proto_pack_key_str(&m.pk, "str", "7");
	proto_pack_key_i64(&m.pk, "limit", 5000);
	proto_pack_key_i64(&m.pk, "low", -10);
	ck_assert_int_eq(argmsg_init(&m), 0);
	ck_assert_int_eq(proto_arg_u64(&m.a, "big", 1, &id, NULL), 0);
	ck_assert_uint_eq(id, UINT64_MAX);
	ck_assert_int_eq(proto_arg_u64(&m.a, "zero", 1, &id, NULL), SC_EINVAL);
	ck_assert_str_eq(proto_args_error(&m.a), "zero: must be a positive integer, got 0");
	ck_assert_int_eq(proto_arg_u64(&m.a, "neg", 1, &id, NULL), SC_EINVAL);
	ck_assert_str_eq(proto_args_error(&m.a), "neg: must be a positive integer, got -3");
	ck_assert_int_eq(proto_arg_u64(&m.a, "str", 1, &id, NULL), SC_EINVAL);
	ck_assert_str_eq(proto_args_error(&m.a), "str: must be a positive integer, got a string");
	ck_assert_int_eq(proto_arg_int(&m.a, "limit", 1, 1, 1000, &v, NULL), SC_EINVAL);
	ck_assert_str_eq(proto_args_error(&m.a), "limit: must be between 1 and 1000, got 5000");
	ck_assert_int_eq(proto_arg_int(&m.a, "low", 1, -10, 10, &v, NULL), 0);
	ck_assert_int_eq(v, -10);
	ck_assert_int_eq(proto_arg_int(&m.a, "big", 1, 0, INT64_MAX, &v, NULL), SC_ERANGE);
	ck_assert_int_eq(proto_args_finish(&m.a), 0);
	argmsg_end(&m);
}
END_TEST

START_TEST(test_args_unknown_field)
{
	struct argmsg m;
	int64_t v;

	argmsg_begin(&m, 2);
	proto_pack_key_u64(&m.pk, "agent_id", 1);
	proto_pack_key_u64(&m.pk, "estimatedCost", 1);
	ck_assert_int_eq(argmsg_init(&m), 0);
	ck_assert_int_eq(proto_arg_money(&m.a, "estimated_cost", 0, &v, NULL), 0);
	ck_assert_int_eq(proto_arg_money(&m.a, "agent_id", 1, &v, NULL), 0);
	ck_assert_int_eq(proto_args_finish(&m.a), SC_EINVAL);
	ck_assert_str_eq(proto_args_error(&m.a), "unknown field 'estimatedCost'");
	argmsg_end(&m);
}
END_TEST

START_TEST(test_args_duplicate_and_bad_keys)
{
	struct argmsg m;

	argmsg_begin(&m, 3);
	proto_pack_key_u64(&m.pk, "x", 1);
	proto_pack_key_u64(&m.pk, "y", 1);
	proto_pack_key_u64(&m.pk, "x", 2);
	ck_assert_int_eq(argmsg_init(&m), SC_EINVAL);
	ck_assert_str_eq(proto_args_error(&m.a), "duplicate field 'x'");
	argmsg_end(&m);

	argmsg_begin(&m, 1);
	msgpack_pack_int(&m.pk, 5);
	msgpack_pack_int(&m.pk, 5);
	ck_assert_int_eq(argmsg_init(&m), SC_EINVAL);
	ck_assert_str_eq(proto_args_error(&m.a), "field names must be strings, got an integer");
	argmsg_end(&m);
}
END_TEST

START_TEST(test_args_params_shape)
{
	static const char *bad[] = { "\x91\x05", "\x92\x80\x80", "\x80", "\xc0" };
	struct proto_args a;
	char err[128];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		msgpack_zone z;
		msgpack_object o;
		size_t off = 0;

		msgpack_zone_init(&z, 256);
		ck_assert_int_eq(msgpack_unpack(bad[i], strlen(bad[i]), &off, &z, &o),
		                 MSGPACK_UNPACK_SUCCESS);
		ck_assert_int_eq(proto_args_init(&a, &o, err, sizeof(err)), SC_EINVAL);
		ck_assert_str_eq(err, "params must be an array holding one map");
		msgpack_zone_destroy(&z);
	}
	/* no arguments: NULL or [] */
	ck_assert_int_eq(proto_args_init(&a, NULL, err, sizeof(err)), 0);
	ck_assert_int_eq(proto_args_finish(&a), 0);
}
END_TEST

START_TEST(test_args_nested_prefix)
{
	struct argmsg m;
	struct proto_args wallet, rule;
	const msgpack_object *w, *rules;
	int64_t v;
	const char *s;
	size_t len;

	argmsg_begin(&m, 2);
	proto_pack_cstr(&m.pk, "wallet");
	msgpack_pack_map(&m.pk, 2);
	proto_pack_cstr(&m.pk, "balance");
	msgpack_pack_double(&m.pk, 1.0);
	proto_pack_key_u64(&m.pk, "extra", 1);
	proto_pack_cstr(&m.pk, "rules");
	msgpack_pack_array(&m.pk, 1);
	msgpack_pack_map(&m.pk, 1);
	proto_pack_key_str(&m.pk, "nmae", "x");
	ck_assert_int_eq(argmsg_init(&m), 0);

	ck_assert_int_eq(proto_arg_obj(&m.a, "wallet", 1, MSGPACK_OBJECT_MAP, &w, NULL), 0);
	ck_assert_int_eq(proto_args_sub(&m.a, w, "wallet", &wallet), 0);
	ck_assert_int_eq(proto_arg_money(&wallet, "balance", 1, &v, NULL), SC_EINVAL);
	ck_assert_str_eq(proto_args_error(&m.a),
	                 "wallet.balance: must be an integer number of micro-dollars, got a float");
	ck_assert_int_eq(proto_args_finish(&wallet), SC_EINVAL);
	ck_assert_str_eq(proto_args_error(&wallet), "unknown field 'wallet.extra'");

	ck_assert_int_eq(proto_arg_obj(&m.a, "rules", 1, MSGPACK_OBJECT_ARRAY, &rules, NULL), 0);
	ck_assert_int_eq(proto_args_sub(&m.a, &rules->via.array.ptr[0], "rules[0]", &rule), 0);
	ck_assert_int_eq(proto_arg_str(&rule, "name", 1, 63, &s, &len, NULL), SC_EINVAL);
	ck_assert_str_eq(proto_args_error(&rule), "rules[0].name: required");
	ck_assert_int_eq(proto_args_finish(&m.a), 0);

	/* a nested value that is not a map */
	ck_assert_int_eq(proto_args_sub(&m.a, rules, "wallet", &wallet), SC_EINVAL);
	ck_assert_str_eq(proto_args_error(&m.a), "wallet: must be a map, got an array");
	ck_assert_int_eq(proto_arg_obj(&m.a, "rules", 1, MSGPACK_OBJECT_MAP, &w, NULL), SC_EINVAL);
	ck_assert_str_eq(proto_args_error(&m.a), "rules: must be a map, got an array");
	argmsg_end(&m);
}
END_TEST

START_TEST(test_args_strings)
{
	struct argmsg m;
	char s63[64], s64[65];
	const char *s;
	size_t len;
	int flag;

	memset(s63, 'n', 63);
	s63[63] = '\0';
	memset(s64, 'n', 64);
	s64[64] = '\0';
	argmsg_begin(&m, 7);
	proto_pack_key_str(&m.pk, "n63", s63);
	proto_pack_key_str(&m.pk, "n64", s64);
	proto_pack_key_str(&m.pk, "empty", "");
	proto_pack_cstr(&m.pk, "nul");
	proto_pack_strn(&m.pk, "a\0b", 3);
	proto_pack_cstr(&m.pk, "bin");
	msgpack_pack_bin(&m.pk, 1);
	msgpack_pack_bin_body(&m.pk, "a", 1);
	proto_pack_key_bool(&m.pk, "flag", 0);
	proto_pack_key_u64(&m.pk, "one", 1);
	ck_assert_int_eq(argmsg_init(&m), 0);
	ck_assert_int_eq(proto_arg_str(&m.a, "n63", 1, 63, &s, &len, NULL), 0);
	ck_assert_uint_eq(len, 63);
	ck_assert_int_eq(proto_arg_str(&m.a, "n64", 1, 63, &s, &len, NULL), SC_EINVAL);
	ck_assert_str_eq(proto_args_error(&m.a), "n64: longer than 63 bytes");
	ck_assert_int_eq(proto_arg_str(&m.a, "n64", 1, 64, &s, &len, NULL), 0);
	ck_assert_int_eq(proto_arg_str(&m.a, "empty", 1, 63, &s, &len, NULL), SC_EINVAL);
	ck_assert_str_eq(proto_args_error(&m.a), "empty: must not be empty");
	ck_assert_int_eq(proto_arg_str(&m.a, "nul", 1, 0, &s, &len, NULL), SC_EINVAL);
	ck_assert_str_eq(proto_args_error(&m.a), "nul: must not contain NUL bytes");
	ck_assert_int_eq(proto_arg_str(&m.a, "bin", 1, 0, &s, &len, NULL), SC_EINVAL);
	ck_assert_str_eq(proto_args_error(&m.a), "bin: must be a string, got binary data");
	ck_assert_int_eq(proto_arg_bool(&m.a, "flag", 1, &flag, NULL), 0);
	ck_assert_int_eq(flag, 0);
	ck_assert_int_eq(proto_arg_bool(&m.a, "one", 1, &flag, NULL), SC_EINVAL);
	ck_assert_str_eq(proto_args_error(&m.a), "one: must be true or false, got an integer");
	ck_assert_int_eq(proto_args_finish(&m.a), 0);
	argmsg_end(&m);
}
END_TEST

START_TEST(test_args_too_many_fields)
{
	struct argmsg m;
	char key[16];

	argmsg_begin(&m, PROTO_ARGS_MAX + 1);
	for (int i = 0; i <= PROTO_ARGS_MAX; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		proto_pack_key_u64(&m.pk, key, 1);
	}
	ck_assert_int_eq(argmsg_init(&m), SC_EINVAL);
	ck_assert_str_eq(proto_args_error(&m.a), "more than 64 fields");
	argmsg_end(&m);
}
END_TEST

/* ----- packing ----- */

/*
 * proto_args_expect() indexes the map; a getter finds its field whether
 * its key is the very string of the field list or an equal copy of it,
 * and an indexed field that is absent is missing, not searched for.
 */
START_TEST(test_args_index)
{
	static const char *const fields[] = { "agent_id", "action", "estimated_cost", "type", NULL };
	char copy[] = "estimated_cost";
	struct argmsg m;
	uint64_t id = 0;
	int64_t cost = 0;
	const char *s;
	size_t len;
	int present = 7;

	argmsg_begin(&m, 3);
	proto_pack_key_u64(&m.pk, "agent_id", 9);
	proto_pack_key_i64(&m.pk, "estimated_cost", 250);
	proto_pack_key_str(&m.pk, "action", "openai.chat");
	ck_assert_int_eq(argmsg_init(&m), 0);
	ck_assert_int_eq(proto_args_expect(&m.a, fields), 0);
	ck_assert_int_eq(proto_arg_u64(&m.a, fields[0], 1, &id, NULL), 0);
	ck_assert_uint_eq(id, 9);
	ck_assert_int_eq(proto_arg_money(&m.a, copy, 1, &cost, NULL), 0);
	ck_assert_int_eq(cost, 250);
	ck_assert_int_eq(proto_arg_str(&m.a, fields[3], 0, 16, &s, &len, &present), 0);
	ck_assert_int_eq(present, 0);
	ck_assert_int_eq(proto_arg_str(&m.a, fields[3], 1, 16, &s, &len, NULL), SC_EINVAL);
	ck_assert_str_eq(proto_args_error(&m.a), "type: required");
	/* action is unread so far */
	ck_assert_int_eq(proto_args_finish(&m.a), SC_EINVAL);
	ck_assert_str_eq(proto_args_error(&m.a), "unknown field 'action'");
	ck_assert_int_eq(proto_arg_str(&m.a, "action", 1, 16, &s, &len, NULL), 0);
	ck_assert(len == 11 && memcmp(s, "openai.chat", 11) == 0);
	ck_assert_int_eq(proto_args_finish(&m.a), 0);
	argmsg_end(&m);
}
END_TEST

/* A field list longer than the index still finds every field. */
START_TEST(test_args_index_long_list)
{
	const char *fields[PROTO_FIELDS_INDEXED + 4];
	char names[PROTO_FIELDS_INDEXED + 3][8];
	struct argmsg m;
	int64_t v = 0;
	size_t n = sizeof(names) / sizeof(names[0]);

	for (size_t i = 0; i < n; i++) {
		snprintf(names[i], sizeof(names[i]), "f%zu", i);
		fields[i] = names[i];
	}
	fields[n] = NULL;
	argmsg_begin(&m, 2);
	proto_pack_key_i64(&m.pk, names[n - 1], 5);
	proto_pack_key_i64(&m.pk, names[0], 6);
	ck_assert_int_eq(argmsg_init(&m), 0);
	ck_assert_int_eq(proto_args_expect(&m.a, fields), 0);
	ck_assert_int_eq(proto_arg_int(&m.a, fields[n - 1], 1, 0, 10, &v, NULL), 0);
	ck_assert_int_eq(v, 5);
	ck_assert_int_eq(proto_arg_int(&m.a, fields[0], 1, 0, 10, &v, NULL), 0);
	ck_assert_int_eq(v, 6);
	ck_assert_int_eq(proto_arg_int(&m.a, fields[n - 2], 1, 0, 10, &v, NULL), SC_EINVAL);
	ck_assert_int_eq(proto_args_finish(&m.a), 0);
	argmsg_end(&m);
}
END_TEST

START_TEST(test_pack_error)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_zone z;
	msgpack_object o;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_zone_init(&z, 1024);
	ck_assert_int_eq(proto_pack_error(&pk, SC_ELIMIT, "string exceeds max_string (4096 bytes)"),
	                 0);
	o = unpack(&sb, &z);
	ck_assert_int_eq(o.type, MSGPACK_OBJECT_MAP);
	ck_assert_uint_eq(o.via.map.size, 3);
	ck_assert_int_eq(o.via.map.ptr[0].val.via.i64, SC_ELIMIT);
	ck_assert(o.via.map.ptr[1].val.via.str.size == strlen("limit_exceeded") &&
	          memcmp(o.via.map.ptr[1].val.via.str.ptr, "limit_exceeded", 14) == 0);
	ck_assert(memcmp(o.via.map.ptr[2].key.via.str.ptr, "message", 7) == 0);
	msgpack_zone_destroy(&z);
	msgpack_sbuffer_destroy(&sb);
}
END_TEST

/*
 * proto_put_* write what msgpack-c's packer writes, at every boundary of
 * every format, so a result built with either is the same bytes.
 */
START_TEST(test_put_matches_packer)
{
	static const int64_t ints[] = {
		0, 1, 127, 128, 255, 256, 65535, 65536, INT64_C(4294967295), INT64_C(4294967296),
		INT64_MAX, -1, -32, -33, -128, -129, -32768, -32769, INT64_C(-2147483648),
		INT64_C(-2147483649), INT64_MIN};
	static const uint32_t counts[] = {0, 15, 16, 65535, 65536};
	static const size_t lens[] = {0, 31, 32, 255, 256, 65535, 65536};
	static char mem[70000], str[65536];
	msgpack_sbuffer sb;
	msgpack_packer pk;
	struct proto_buf b;

	memset(str, 'x', sizeof(str));
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	proto_buf_init(&b, mem, sizeof(mem));
	for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
		msgpack_pack_int64(&pk, ints[i]);
		proto_put_i64(&b, ints[i]);
		if (ints[i] >= 0) {
			msgpack_pack_uint64(&pk, (uint64_t)ints[i]);
			proto_put_u64(&b, (uint64_t)ints[i]);
		}
	}
	msgpack_pack_uint64(&pk, UINT64_MAX);
	proto_put_u64(&b, UINT64_MAX);
	for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
		msgpack_pack_map(&pk, counts[i]);
		proto_put_map(&b, counts[i]);
		msgpack_pack_array(&pk, counts[i]);
		proto_put_array(&b, counts[i]);
	}
	msgpack_pack_nil(&pk);
	proto_put_nil(&b);
	msgpack_pack_true(&pk);
	proto_put_bool(&b, 1);
	msgpack_pack_false(&pk);
	proto_put_bool(&b, 0);
	ck_assert(!b.overflow);
	ck_assert_uint_eq(proto_buf_len(&b), sb.size);
	ck_assert(memcmp(mem, sb.data, sb.size) == 0);
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		sb.size = 0;
		msgpack_pack_str(&pk, lens[i]);
		msgpack_pack_str_body(&pk, str, lens[i]);
		proto_buf_init(&b, mem, sizeof(mem));
		proto_put_str(&b, str, lens[i]);
		ck_assert_uint_eq(proto_buf_len(&b), sb.size);
		ck_assert(memcmp(mem, sb.data, sb.size) == 0);
	}
	msgpack_sbuffer_destroy(&sb);
}
END_TEST

/* A put that does not fit writes nothing, and nothing after it is written. */
START_TEST(test_put_overflow)
{
	char mem[8];
	struct proto_buf b;

	proto_buf_init(&b, mem, sizeof(mem));
	proto_put_cstr(&b, "status");
	ck_assert_uint_eq(proto_buf_len(&b), 7);
	proto_put_u64(&b, 65536);
	ck_assert(b.overflow);
	ck_assert_uint_eq(proto_buf_len(&b), 7);
	proto_put_nil(&b);
	ck_assert_uint_eq(proto_buf_len(&b), 7);
}
END_TEST

Suite *frame_suite(void)
{
	Suite *s = suite_create("frame");
	const struct test_case cases[] = {
		{ "truncated", test_truncated_every_offset },
		{ "resume", test_resume_byte_by_byte },
		{ "pipelined", test_pipelined_two_messages },
		{ "formats", test_every_format },
		{ "formats_unpack", test_every_format_unpacks },
		{ "formats_objects", test_every_format_objects },
		{ "request_objects", test_request_objects },
		{ "unpack_verdicts", test_unpack_verdicts },
		{ "malformed", test_malformed_c1 },
		{ "too_big_declared", test_too_big_declared },
		{ "too_big_actual", test_too_big_actual },
		{ "max_message_boundary", test_max_message_boundary },
		{ "depth", test_depth },
		{ "depth_cap", test_depth_cap },
		{ "string_too_long", test_string_too_long },
		{ "too_many_items", test_too_many_items },
		{ "msgid_recovery", test_msgid_recovery },
		{ "envelope_ok", test_envelope_ok },
		{ "envelope_params_raw", test_envelope_params_raw },
		{ "envelope_errors", test_envelope_errors },
		{ "args_required", test_args_required },
		{ "args_money", test_args_money },
		{ "args_ids_ints", test_args_ids_and_ints },
		{ "args_unknown", test_args_unknown_field },
		{ "args_duplicate", test_args_duplicate_and_bad_keys },
		{ "args_params_shape", test_args_params_shape },
		{ "args_nested", test_args_nested_prefix },
		{ "args_strings", test_args_strings },
		{ "args_too_many", test_args_too_many_fields },
		{ "args_index", test_args_index },
		{ "args_index_long_list", test_args_index_long_list },
		{ "pack_error", test_pack_error },
		{ "put_matches_packer", test_put_matches_packer },
		{ "put_overflow", test_put_overflow },
	};

	test_add_cases(s, cases, sizeof(cases) / sizeof(cases[0]), 0);
	return s;
}
