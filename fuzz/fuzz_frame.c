/*
 * fuzz_frame.c: fuzz target for the wire layer: proto_scan, the resumable
 * scanner, proto_request_parse and the argument getters, over arbitrary
 * bytes, the way the server uses them on a connection.
 *
 * Built two ways (Makefile.am):
 *   make fuzz                 clang -fsanitize=fuzzer,address,undefined;
 *                             libFuzzer drives LLVMFuzzerTestOneInput() over
 *                             fuzz/corpus for FUZZ_SECONDS.
 *   fuzz/fuzz_frame_smoke     -DFUZZ_STANDALONE with the normal compiler, run
 *                             by `make check`: main() below replays the files
 *                             and directories given on the command line, or,
 *                             with none, the seed corpus under
 *                             $SIDECARD_SRCDIR/fuzz/corpus plus built-in seeds,
 *                             then mutates them at random for $FUZZ_SECONDS
 *                             (default 2) seconds with seed $FUZZ_SEED.
 *
 * Invariants checked (abort on violation, which both drivers report):
 *   - feeding a message to the resumable scanner in pieces gives the same
 *     result, length and msgid as scanning it at once;
 *   - a message the scanner accepts is never larger than max_message, and
 *     msgpack-c unpacks exactly the same number of bytes;
 *   - a message the scanner accepts never makes proto_request_parse fail for
 *     any reason but the envelope, and the objects it unpacks are the ones
 *     msgpack-c makes of the same bytes;
 *   - on any bytes at all, proto_request_parse says "malformed msgpack"
 *     exactly when msgpack-c does not unpack them as one whole object.
 *
 * Single-threaded; everything allocated is freed before returning.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "invariant.h"
#include "msgpack_same.h"
#include "proto.h"
#include "sidecard.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads every kind of argument the dispatcher will, from one args map. */
static void read_args(struct proto_args *a, msgpack_packer *pk)
{
	const msgpack_object *o;
	struct proto_args sub;
	uint64_t id;
	int64_t v;
	const char *s;
	size_t len;
	int b, present;

	(void)proto_arg_u64(a, "agent_id", 0, &id, &present);
	(void)proto_arg_money(a, "estimated_cost", 0, &v, &present);
	(void)proto_arg_int(a, "limit", 0, 1, 1000, &v, &present);
	(void)proto_arg_str(a, "action", 0, 127, &s, &len, &present);
	(void)proto_arg_bool(a, "flag", 0, &b, &present);
	if (proto_arg_obj(a, "wallet", 0, MSGPACK_OBJECT_MAP, &o, &present) == 0 && present &&
	    proto_args_sub(a, o, "wallet", &sub) == 0) {
		(void)proto_arg_money(&sub, "balance", 1, &v, NULL);
		(void)proto_args_finish(&sub);
	}
	if (proto_arg_obj(a, "rules", 0, MSGPACK_OBJECT_ARRAY, &o, &present) == 0 && present) {
		for (uint32_t i = 0; i < o->via.array.size && i < 4; i++) {
			char prefix[32];

			snprintf(prefix, sizeof(prefix), "rules[%u]", i);
			if (proto_args_sub(a, &o->via.array.ptr[i], prefix, &sub) == 0)
				(void)proto_arg_str(&sub, "name", 1, 63, &s, &len, NULL);
		}
	}
	if (proto_args_finish(a) != 0)
		proto_pack_error(pk, SC_EINVAL, proto_args_error(a));
}

static void handle_message(const char *buf, size_t len, msgpack_zone *zone, msgpack_packer *pk)
{
	struct proto_request req;
	struct proto_args a;
	msgpack_object o;
	size_t off = 0;
	char err[256];

	CHECK(msgpack_unpack(buf, len, &off, zone, &o) == MSGPACK_UNPACK_SUCCESS);
	CHECK(off == len);
	if (proto_request_parse(buf, len, zone, &req, err, sizeof(err)) != 0) {
		CHECK(strcmp(err, "malformed msgpack") != 0);
		proto_pack_error(pk, SC_EPROTO, err);
		return;
	}
	CHECK(o.type == MSGPACK_OBJECT_ARRAY && o.via.array.size >= 3);
	CHECK(test_msgpack_same(req.params, &o.via.array.ptr[o.via.array.size - 1]));
	CHECK(req.params_raw + req.params_raw_len == buf + len);
	off = 0;
	CHECK(msgpack_unpack(req.params_raw, req.params_raw_len, &off, zone, &o) ==
	      MSGPACK_UNPACK_SUCCESS);
	CHECK(test_msgpack_same(req.params, &o));
	if (proto_args_init(&a, req.params, err, sizeof(err)) != 0) {
		proto_pack_error(pk, SC_EINVAL, err);
		return;
	}
	read_args(&a, pk);
}

/* The scanner fed in pieces must agree with the scanner fed at once. */
static void check_resume(const char *buf, size_t n, const struct proto_limits *l,
                         enum proto_scan whole, size_t whole_len, int64_t whole_msgid)
{
	struct proto_scanner sc;
	enum proto_scan r = PROTO_SCAN_INCOMPLETE;
	size_t len = 0, step = 1 + (n > 0 ? (unsigned char)buf[0] % 7 : 0);
	int64_t msgid = -1;

	proto_scanner_reset(&sc);
	for (size_t have = step < n ? step : n;; have = have + step < n ? have + step : n) {
		r = proto_scanner_feed(&sc, buf, have, l, &len, &msgid);
		if (r != PROTO_SCAN_INCOMPLETE || have == n)
			break;
	}
	CHECK(r == whole);
	if (r == PROTO_SCAN_OK)
		CHECK(len == whole_len);
	CHECK(msgid == whole_msgid);
}

/* Walks buf as a connection would: message after message until one fails. */
static void run_stream(const char *buf, size_t n, const struct proto_limits *l)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_zone zone;
	char message[128];

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_zone_init(&zone, 4096);
	while (n > 0) {
		size_t len = 0;
		int64_t msgid;
		enum proto_scan r = proto_scan(buf, n, l, &len, &msgid);

		check_resume(buf, n, l, r, len, msgid);
		if (r != PROTO_SCAN_OK) {
			proto_pack_error(&pk, proto_scan_code(r),
			                 proto_scan_message(r, l, message, sizeof(message)));
			break;
		}
		CHECK(len > 0 && len <= n && len <= l->max_message);
		msgpack_zone_clear(&zone);
		handle_message(buf, len, &zone, &pk);
		buf += len;
		n -= len;
	}
	msgpack_zone_destroy(&zone);
	msgpack_sbuffer_destroy(&sb);
}

/* Any bytes: "malformed msgpack" exactly when msgpack-c refuses them as one object. */
static void check_verdict(const char *buf, size_t n)
{
	struct proto_limits wide = { SIZE_MAX, PROTO_DEPTH_CAP, SIZE_MAX, 65535 };
	struct proto_request req;
	msgpack_zone zone;
	msgpack_object o;
	size_t off = 0, len;
	char err[256] = "";
	int64_t msgid;
	int unpacks, parsed;

	/*
	 * msgpack-c allocates what a count announces before the elements are
	 * there: keep it to counts of array 16 and map 16.
	 */
	if (proto_scan(buf, n, &wide, &len, &msgid) == PROTO_SCAN_TOO_MANY_ITEMS)
		return;
	msgpack_zone_init(&zone, 4096);
	unpacks = msgpack_unpack(buf, n, &off, &zone, &o) == MSGPACK_UNPACK_SUCCESS && off == n;
	parsed = proto_request_parse(buf, n, &zone, &req, err, sizeof(err)) == 0;
	CHECK(parsed ? unpacks : unpacks == (strcmp(err, "malformed msgpack") != 0));
	msgpack_zone_destroy(&zone);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proto_limits l;

	check_verdict((const char *)data, size);

	proto_limits_default(&l);
	run_stream((const char *)data, size, &l);
	/* tight limits reach every limit with short inputs */
	l.max_message = 256;
	l.max_depth = 4;
	l.max_string = 16;
	l.max_items = 8;
	run_stream((const char *)data, size, &l);
	return 0;
}

#ifdef FUZZ_STANDALONE

#define FUZZ_NAME "fuzz_frame"
#define FUZZ_CORPUS "fuzz/corpus"
#define FUZZ_MAX_INPUT 70000
#define FUZZ_MAX_EDITS 8
/* msgpack type bytes: insertions make new headers, replacements any byte */
#define FUZZ_ALPHABET "\x00\x01\x7f\x80\x90\xc0\xc1\xcc\xd9\xda\xdb\xdc\xdd\xde\xdf\xff"
#define FUZZ_REPLACE_FROM_ALPHABET 0
#include "standalone.h"

static void fuzz_builtin(struct seeds *s)
{
#define SEED(bytes) fuzz_seed(s, bytes, sizeof(bytes) - 1)
	SEED("\x94\x00\x01\xa5" "check\x91\x83\xa8" "agent_id\x07\xae" "estimated_cost"
	     "\xce\x00\x26\x25\xa0\xa6" "action\xab" "openai.chat");
	SEED("\x94\x00\x02\xa5" "hello\x90");
	SEED("\x93\x02\xa4" "ping\x90");
	SEED("\x94\x00\x03\xa3" "add\x91\x81\xa6" "wallet\x81\xa7" "balance"
	     "\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00");
	SEED("\x91\x91\x91\x91\x91\x91\x01");
	SEED("\xc1");
#undef SEED
}

#endif /* FUZZ_STANDALONE */
