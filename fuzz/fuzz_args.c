/*
 * fuzz_args.c: fuzz target for every method's argument decoding: the input
 * is read as requests whose params are built from typed fields, so that
 * each method's getters (protocol/args.c and the dispatcher's readers of
 * ids, names, enums, money, time zones, nested wallet and rule maps) see
 * well-formed maps and hostile ones alike, past the framing that
 * fuzz_frame covers and past the templates that fuzz_dispatch mutates.
 *
 * The input is a sequence of requests (at most MAX_REQUESTS); a byte that
 * is missing at the end of the input reads as 0. A request is:
 *   method  one byte: method % methods of the table (dispatch_method_name,
 *           so a method added later is reached too);
 *   form    one byte: form & 7 is the shape of params, 0-4 [map], 5 the
 *           map bare, 6 [], 7 [map, value]; (form >> 3) & 15 the number of
 *           fields (15: one more byte is added to it, so a map of more than
 *           PROTO_ARGS_MAX fields is reachable); form & 0x80 connection 2
 *           instead of 1;
 *   fields  each a key, then a value.
 * A key is one byte k: below 0xc0 the method's own field k % n (its fields,
 * dispatch_method_fields); below 0xf0 a word of the dictionary of every
 * field name of the table and a few near misses, chosen by one more byte
 * (so a nested wallet or rule map gets its fields); 0xf0 to 0xfe a key of
 * k - 0xf0 bytes taken from the input; 0xff a key that is itself a value
 * (not a string, most of the time).
 * A value is one type byte t, t % 18, then its bytes:
 *    0 a small integer (one byte & 0x7f)       1 an integer of two bytes
 *    2 an amount: one byte * 10000 micros      3 an integer of eight bytes
 *    4 a negative integer (eight bytes)        5 an edge integer (INT64_MIN
 *      and MAX, UINT64_MAX, 2^53 + 1, 2^63, 2^32, ..., by one byte)
 *    6 a float64 (eight bytes: NaN, infinities, denormals)
 *    7 a float32 (four bytes)                  8 a string: a length byte,
 *      then that many bytes (invalid UTF-8, NUL, control characters)
 *    9 a word: every enum word of the protocol (sc_*_names), actions,
 *      patterns, time zones, the setup's names (one byte)
 *   10 a long string: two length bytes (at most 9000), a fill byte
 *   11 an id: of the setup's agents, org, rules, the last transactions,
 *      the time, or an id nothing has (one byte; harness_var)
 *   12 nil   13 a boolean   14 bin (a length byte, bytes)
 *   15 ext (a type byte, a length byte, bytes)
 *   16 an array of (one byte) % 8 values   17 a map of (one byte) % 8
 *      fields, keys chosen as above: nested wallet, rules and metadata
 * with containers nested at most MAX_DEPTH deep (deeper, a value is nil).
 *
 * A request whose params are [map] with distinct keys of the method's own
 * fields and values of kinds 0, 1, 2, 3 (up to 10^12), 8 (printable
 * ASCII, not empty), 9, 11, 12 and containers of those is well-formed; any
 * other is hostile. Every request goes through
 * fuzz/harness.c (framed as the server does, over a real state segment
 * with its ledger, the invariants checked after each request, the ledger
 * replayed at the end of the input). The smoke build also checks, at its
 * end, that every method of the table was sent at least one well-formed map
 * and one hostile request, and says how many methods accepted one.
 *
 * The built-in seeds come from the table: per method, its template
 * (harness_template, encoded as above) after a check, so that a report
 * has a transaction to name, and the same fields with hostile values.
 *
 * Built two ways (Makefile.am), like fuzz_dispatch.c: `make fuzz` with
 * libFuzzer over fuzz/corpus_args, and fuzz/fuzz_args_smoke
 * (-DFUZZ_STANDALONE) in `make check`. FUZZ_WRITE_SEEDS=DIR writes the
 * built-in seeds to DIR; FUZZ_TRACE=1 prints each request and response.
 *
 * Single thread (harness.h).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "dispatch.h"
#include "harness.h"
#include "invariant.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_REQUESTS 16
#define MAX_DEPTH 4
#define LONG_MAX_LEN 9000
#define N_KINDS 18

enum kind {
	K_SMALL, K_U16, K_AMOUNT, K_U64, K_NEGATIVE, K_EDGE, K_F64, K_F32, K_STR, K_WORD,
	K_LONG, K_ID, K_NIL, K_BOOL, K_BIN, K_EXT, K_ARRAY, K_MAP,
};

/* Field names a key may be besides the table's: near misses and an empty one. */
static const char *const near_misses[] = {"agentId", "estimatedCost", "Agent_id", "agent_id ",
                                          ""};

/* Strings that mean something to some method, besides the enum words. */
static const char *const words[] = {
	"openai.chat", "openai.*", "tool.search", "tool.*", "*", "api_call", "gpt-x", "acme",
	"a", "b", "t1", "UTC", "America/New_York", "EST5EDT,M3.2.0,M11.1.0", "Etc/GMT+14",
	"CET-1CEST,M3.5.0,M10.5.0/3", "../../etc/passwd", "0", "-1", "1.5", "true",
};

static struct fuzz {
	int ready;
	const char *dict[512];   /* every field name of the table, once, and the near misses */
	unsigned n_dict;
	const char *word[256];   /* words[] and the enum words */
	unsigned n_word;
	msgpack_sbuffer req;
	/* per method: requests sent, by kind, and accepted (no error) */
	unsigned long wellformed[HARNESS_MAX_METHODS], hostile[HARNESS_MAX_METHODS];
	unsigned long accepted[HARNESS_MAX_METHODS];
} F;

/* --------------------------------------------------------------- the input */

struct input {
	const uint8_t *p;
	size_t n;
	msgpack_packer pk;
	int hostile;        /* the request so far is not well-formed */
	unsigned method;
};

static uint8_t byte(struct input *in)
{
	if (in->n == 0)
		return 0;
	in->n--;
	return *in->p++;
}

/* k bytes, big endian. */
static uint64_t bytes(struct input *in, unsigned k)
{
	uint64_t v = 0;

	while (k--)
		v = v << 8 | byte(in);
	return v;
}

/* Up to len bytes of the input itself (fewer where it ends). */
static const char *span(struct input *in, size_t *len)
{
	const char *s = (const char *)in->p;

	if (*len > in->n)
		*len = in->n;
	in->p += *len;
	in->n -= *len;
	return s;
}

static void value(struct input *in, unsigned depth);

/* A string is a name a client could mean when it is printable ASCII, not empty. */
static void note_text(struct input *in, const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			in->hostile = 1;
	if (len == 0)
		in->hostile = 1;
}

static unsigned own_fields(unsigned k)
{
	const char *const *f = dispatch_method_fields(k);
	unsigned n = 0;

	while (f[n])
		n++;
	return n;
}

/* A key (see the comment at the top); sets *own to the index of an own field, or -1. */
static void key(struct input *in, unsigned depth, int *own)
{
	uint8_t k = byte(in);
	unsigned n = own_fields(in->method);
	const char *name;
	size_t len;

	*own = -1;
	if (k < 0xc0 && n > 0) {
		*own = (int)(k % n);
		name = dispatch_method_fields(in->method)[*own];
	} else if (k < 0xf0) {
		name = F.dict[byte(in) % F.n_dict];
	} else if (k < 0xff) {
		len = (size_t)(k - 0xf0);
		name = span(in, &len);
		/* at the top level, fields() counts it as a field the method does not have */
		note_text(in, name, len);
		msgpack_pack_str_with_body(&in->pk, name, len);
		return;
	} else {
		in->hostile = 1;
		value(in, depth + 1);
		return;
	}
	msgpack_pack_str_with_body(&in->pk, name, strlen(name));
}

static void edge(msgpack_packer *pk, uint8_t b)
{
	switch (b % 14) {
	case 0: msgpack_pack_int64(pk, INT64_MIN); break;
	case 1: msgpack_pack_int64(pk, INT64_MAX); break;
	case 2: msgpack_pack_uint64(pk, UINT64_MAX); break;
	case 3: msgpack_pack_uint64(pk, ((uint64_t)1 << 53) + 1); break;
	case 4: msgpack_pack_uint64(pk, (uint64_t)1 << 63); break;
	case 5: msgpack_pack_uint64(pk, (uint64_t)1 << 32); break;
	case 6: msgpack_pack_uint64(pk, UINT32_MAX); break;
	case 7: msgpack_pack_int64(pk, INT32_MIN); break;
	case 8: msgpack_pack_int64(pk, -1); break;
	case 9: msgpack_pack_uint64(pk, 0); break;
	case 10: msgpack_pack_int64(pk, INT64_MAX / 2 + 1); break;
	case 11: msgpack_pack_int64(pk, INT64_C(253402300800000000)); break; /* year 10000 in us */
	case 12: msgpack_pack_int64(pk, -INT64_C(62135596800000000)); break; /* year 1 in us */
	default: msgpack_pack_uint64(pk, UINT16_MAX + 1); break;
	}
}

static void value(struct input *in, unsigned depth)
{
	static const char ids[] = "aborstunz";
	msgpack_packer *pk = &in->pk;
	enum kind t = (enum kind)(byte(in) % N_KINDS);
	const char *s;
	size_t len;
	uint64_t v;

	if ((t == K_ARRAY || t == K_MAP) && depth >= MAX_DEPTH)
		t = K_NIL;
	if (t != K_SMALL && t != K_U16 && t != K_AMOUNT && t != K_U64 && t != K_STR &&
	    t != K_WORD && t != K_ID && t != K_NIL && t != K_ARRAY && t != K_MAP)
		in->hostile = 1;
	switch (t) {
	case K_SMALL: msgpack_pack_uint64(pk, byte(in) & 0x7f); break;
	case K_U16: msgpack_pack_uint64(pk, bytes(in, 2)); break;
	case K_AMOUNT: msgpack_pack_uint64(pk, (uint64_t)byte(in) * 10000); break;
	case K_U64:
		v = bytes(in, 8);
		/* a million dollars in micros is an amount a client could mean; more is not */
		if (v > UINT64_C(1000000000000))
			in->hostile = 1;
		msgpack_pack_uint64(pk, v);
		break;
	case K_NEGATIVE: msgpack_pack_int64(pk, -1 - (int64_t)(bytes(in, 8) >> 1)); break;
	case K_EDGE: edge(pk, byte(in)); break;
	case K_F64: {
		double d;

		v = bytes(in, 8);
		memcpy(&d, &v, sizeof(d));
		msgpack_pack_double(pk, d);
		break;
	}
	case K_F32: {
		uint32_t w = (uint32_t)bytes(in, 4);
		float f;

		memcpy(&f, &w, sizeof(f));
		msgpack_pack_float(pk, f);
		break;
	}
	case K_STR:
		len = byte(in);
		s = span(in, &len);
		note_text(in, s, len);
		msgpack_pack_str_with_body(pk, s, len);
		break;
	case K_WORD:
		s = F.word[byte(in) % F.n_word];
		msgpack_pack_str_with_body(pk, s, strlen(s));
		break;
	case K_LONG: {
		static char fill[LONG_MAX_LEN];

		len = bytes(in, 2) % (LONG_MAX_LEN + 1);
		memset(fill, byte(in), len);
		msgpack_pack_str_with_body(pk, fill, len);
		break;
	}
	case K_ID: {
		char c = ids[byte(in) % (sizeof(ids) - 1)];

		/* z: an id nothing has, of any kind */
		msgpack_pack_uint64(pk, c == 'z' ? UINT32_MAX : harness_var(c));
		break;
	}
	case K_NIL: msgpack_pack_nil(pk); break;
	case K_BOOL:
		if (byte(in) & 1)
			msgpack_pack_true(pk);
		else
			msgpack_pack_false(pk);
		break;
	case K_BIN:
		len = byte(in);
		s = span(in, &len);
		msgpack_pack_bin_with_body(pk, s, len);
		break;
	case K_EXT: {
		int8_t type = (int8_t)byte(in);

		len = byte(in);
		s = span(in, &len);
		msgpack_pack_ext_with_body(pk, s, len, type);
		break;
	}
	case K_ARRAY: {
		unsigned n = byte(in) % 8;

		msgpack_pack_array(pk, n);
		for (unsigned i = 0; i < n; i++)
			value(in, depth + 1);
		break;
	}
	default: {
		unsigned n = byte(in) % 8;
		int own;

		msgpack_pack_map(pk, n);
		for (unsigned i = 0; i < n; i++) {
			key(in, depth + 1, &own);
			value(in, depth + 1);
		}
		break;
	}
	}
}

/* The top-level map of n fields; a key used twice, or not the method's, is hostile. */
static void fields(struct input *in, unsigned n)
{
	uint64_t seen = 0;
	int own;

	msgpack_pack_map(&in->pk, n);
	for (unsigned i = 0; i < n; i++) {
		key(in, 0, &own);
		if (own < 0 || own >= 64 || (seen & (UINT64_C(1) << own)))
			in->hostile = 1;
		else
			seen |= UINT64_C(1) << own;
		value(in, 0);
	}
}

/* Sends one request read from in. */
static void one_request(struct input *in)
{
	struct harness_outcome o;
	uint8_t form;
	unsigned n;

	in->method = byte(in) % H.n_methods;
	form = byte(in);
	n = (form >> 3) & 15;
	if (n == 15)
		n += byte(in);
	in->hostile = (form & 7) > 4;
	F.req.size = 0;
	msgpack_packer_init(&in->pk, &F.req, msgpack_sbuffer_write);
	switch (form & 7) {
	case 5: fields(in, n); break;
	case 6: msgpack_pack_array(&in->pk, 0); break;
	case 7:
		msgpack_pack_array(&in->pk, 2);
		fields(in, n);
		value(in, 0);
		break;
	default:
		msgpack_pack_array(&in->pk, 1);
		fields(in, n);
		break;
	}
	if (harness_request(in->method, F.req.data, F.req.size, 1 + (form >> 7), &o) != 0)
		return;
	if (in->hostile)
		F.hostile[in->method]++;
	else
		F.wellformed[in->method]++;
	F.accepted[in->method] += o.error == 0;
}

/* The dictionaries, from the method table and the protocol's enum words. */
static void init_once(void)
{
	const struct sc_names *enums[] = {
		&sc_priority_names,  &sc_status_names, &sc_outcome_names,
		&sc_txn_status_names, &sc_event_type_names, &sc_risk_names,
		&sc_period_names,    &sc_alert_kind_names, &sc_severity_names,
	};

	harness_init("fuzz_args");
	for (unsigned k = 0; k < H.n_methods; k++)
		for (const char *const *f = dispatch_method_fields(k); *f; f++) {
			unsigned i = 0;

			while (i < F.n_dict && strcmp(F.dict[i], *f) != 0)
				i++;
			if (i == F.n_dict) {
				CHECK(F.n_dict < sizeof(F.dict) / sizeof(F.dict[0]));
				F.dict[F.n_dict++] = *f;
			}
		}
	for (size_t i = 0; i < sizeof(near_misses) / sizeof(near_misses[0]); i++)
		F.dict[F.n_dict++] = near_misses[i];
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		F.word[F.n_word++] = words[i];
	for (size_t e = 0; e < sizeof(enums) / sizeof(enums[0]); e++)
		for (unsigned i = 0; i < enums[e]->n; i++) {
			CHECK(F.n_word < sizeof(F.word) / sizeof(F.word[0]));
			F.word[F.n_word++] = enums[e]->v[i];
		}
	msgpack_sbuffer_init(&F.req);
	F.ready = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = {.p = data, .n = size};

	if (!F.ready)
		init_once();
	harness_open();
	for (unsigned i = 0; i < MAX_REQUESTS && in.n > 0; i++)
		one_request(&in);
	harness_close();
	return 0;
}

#ifdef FUZZ_STANDALONE

#define FUZZ_NAME "fuzz_args"
#define FUZZ_CORPUS "fuzz/corpus_args"
#define FUZZ_MAX_INPUT 4096
#define FUZZ_MAX_EDITS 6
/* kinds, own keys, lengths, edges */
#define FUZZ_ALPHABET "\x00\x01\x02\x05\x06\x08\x09\x0a\x0b\x0c\x0f\x10\x11\x7f\x80\xc0\xf3\xff"
#define FUZZ_REPLACE_FROM_ALPHABET 0
#define FUZZ_FINISH fuzz_finish
static void fuzz_finish(void);
#include "standalone.h"

/* ----------------------------------------------------------------- seeds */

struct seed {
	uint8_t b[FUZZ_MAX_INPUT];
	size_t n;
};

static void put(struct seed *s, uint8_t b)
{
	CHECK(s->n < sizeof(s->b));
	s->b[s->n++] = b;
}

static int word_index(const char *w, size_t len)
{
	for (unsigned i = 0; i < F.n_word; i++)
		if (strlen(F.word[i]) == len && memcmp(F.word[i], w, len) == 0)
			return (int)i;
	return -1;
}

/* The key byte of field name in method k: its own index, else the dictionary's, else raw. */
static void put_key(struct seed *s, unsigned k, const char *name, size_t len)
{
	const char *const *f = dispatch_method_fields(k);

	for (unsigned i = 0; f[i]; i++)
		if (strlen(f[i]) == len && memcmp(f[i], name, len) == 0) {
			put(s, (uint8_t)i);
			return;
		}
	for (unsigned i = 0; i < F.n_dict; i++)
		if (strlen(F.dict[i]) == len && memcmp(F.dict[i], name, len) == 0) {
			put(s, 0xc0);
			put(s, (uint8_t)i);
			return;
		}
	CHECK(len < 15);
	put(s, (uint8_t)(0xf0 + len));
	for (size_t i = 0; i < len; i++)
		put(s, (uint8_t)name[i]);
}

/* Encodes the template value at *p (harness.h's notation) for method k. */
static void put_value(struct seed *s, unsigned k, const char **p)
{
	const char *t = *p, *e;
	unsigned n = 0;

	switch (*t) {
	case '{':
	case '[': {
		int map = *t == '{';
		const char *q = t + 1;

		while (*q != '}' && *q != ']') {
			if (map)
				q = strchr(q, ':') + 1;
			q = harness_skip_value(q);
			n++;
			if (*q == ',')
				q++;
		}
		put(s, map ? K_MAP : K_ARRAY);
		put(s, (uint8_t)n);
		CHECK(n < 8);
		t++;
		for (unsigned i = 0; i < n; i++) {
			if (map) {
				e = strchr(t, ':');
				put_key(s, k, t, (size_t)(e - t));
				t = e + 1;
			}
			put_value(s, k, &t);
			if (*t == ',')
				t++;
		}
		*p = t + 1;
		return;
	}
	case '\'': {
		int w;

		e = strchr(t + 1, '\'');
		if ((w = word_index(t + 1, (size_t)(e - t - 1))) >= 0) {
			put(s, K_WORD);
			put(s, (uint8_t)w);
		} else {
			put(s, K_STR);
			put(s, (uint8_t)(e - t - 1));
			for (const char *c = t + 1; c < e; c++)
				put(s, (uint8_t)*c);
		}
		*p = e + 1;
		return;
	}
	case '$': {
		/* the order of value()'s ids; anything else is the time */
		static const char ids[] = "aborstun";
		const char *at = strchr(ids, t[1]);

		put(s, K_ID);
		put(s, (uint8_t)(at ? at - ids : 7));
		*p = t + 2;
		return;
	}
	default: {
		long long v = strtoll(t, (char **)p, 10);

		if (v >= 0 && v < 0x80) {
			put(s, K_SMALL);
			put(s, (uint8_t)v);
		} else if (v >= 0 && v % 10000 == 0 && v / 10000 < 256) {
			put(s, K_AMOUNT);
			put(s, (uint8_t)(v / 10000));
		} else if (v >= 0 && v < 65536) {
			put(s, K_U16);
			put(s, (uint8_t)(v >> 8));
			put(s, (uint8_t)v);
		} else {
			put(s, v < 0 ? K_NEGATIVE : K_U64);
			v = v < 0 ? (-1 - v) << 1 : v;
			for (int i = 7; i >= 0; i--)
				put(s, (uint8_t)((uint64_t)v >> (i * 8)));
		}
		return;
	}
	}
}

/* The template of method k as a request: [map] of its fields. */
static void put_template(struct seed *s, unsigned k)
{
	const char *t = harness_template(k);
	const char *const *f = dispatch_method_fields(k);
	unsigned n = 0;

	put(s, (uint8_t)k);
	if (t == NULL) {
		/* no template: every own field, each a small integer */
		while (f[n])
			n++;
		put(s, (uint8_t)((n < 15 ? n : 15) << 3));
		if (n >= 15)
			put(s, (uint8_t)(n - 15));
		for (unsigned i = 0; i < n; i++) {
			put(s, (uint8_t)i);
			put(s, K_SMALL);
			put(s, 1);
		}
		return;
	}
	for (const char *q = t + 1; *q != '}'; n++) {
		q = harness_skip_value(strchr(q, ':') + 1);
		if (*q == ',')
			q++;
	}
	CHECK(n < 15);
	put(s, (uint8_t)(n << 3));
	t++;
	for (unsigned i = 0; i < n; i++) {
		const char *e = strchr(t, ':');

		put_key(s, k, t, (size_t)(e - t));
		t = e + 1;
		put_value(s, k, &t);
		if (*t == ',')
			t++;
	}
}

/* Method k with every own field set to a hostile value, and a key nobody has. */
static void put_hostile(struct seed *s, unsigned k)
{
	/* a kind and exactly the bytes it reads */
	static const struct {
		uint8_t len, b[9];
	} values[] = {
		{2, {K_EDGE, 0}},                     /* INT64_MIN */
		{2, {K_EDGE, 2}},                     /* UINT64_MAX */
		{9, {K_F64, 0x7f, 0xf8}},             /* NaN */
		{4, {K_LONG, 0x10, 0x00, 0x01}},      /* 4096 bytes of \x01 */
		{5, {K_STR, 3, 0xff, 0xfe, 0x00}},    /* invalid UTF-8 and a NUL */
		{3, {K_BIN, 1, 'x'}},
		{3, {K_EXT, 5, 0}},
		{9, {K_NEGATIVE, 0x40}},
		{4, {K_LONG, 0x00, 0x41, 0xc3}},      /* 65 bytes of \xc3 */
		{4, {K_MAP, 1, 0xf0, K_NIL}},         /* {"": nil} */
		{3, {K_ARRAY, 1, K_EDGE}},            /* [INT64_MIN] */
	};
	const char *const *f = dispatch_method_fields(k);
	unsigned n = 0;

	while (f[n] && n < 13)
		n++;
	put(s, (uint8_t)k);
	put(s, (uint8_t)((n + 1) << 3));
	for (unsigned i = 0; i < n; i++) {
		size_t v = (i + k) % (sizeof(values) / sizeof(values[0]));

		put(s, (uint8_t)i);
		for (unsigned j = 0; j < values[v].len; j++)
			put(s, values[v].b[j]);
	}
	put(s, 0xf3);
	put(s, 'x');
	put(s, '\x01');
	put(s, '\n');
	put(s, K_SMALL);
	put(s, 1);
}

static void write_seed(const char *dir, const char *name, const struct seed *s)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s.bin", dir, name);
	CHECK((f = fopen(path, "wb")) != NULL);
	CHECK(fwrite(s->b, 1, s->n, f) == s->n);
	fclose(f);
}

/*
 * Per method of the table, one seed of its template after a check (whose
 * transaction a report then names) and one of hostile values.
 */
static void fuzz_builtin(struct seeds *seeds)
{
	const char *dir = getenv("FUZZ_WRITE_SEEDS");
	unsigned check = 0;
	struct seed s;
	char name[96];

	if (!F.ready)
		init_once();
	while (strcmp(H.method_name[check], "check") != 0)
		check++;
	for (unsigned k = 0; k < H.n_methods; k++) {
		s.n = 0;
		put_template(&s, check);
		put_template(&s, k);
		fuzz_seed(seeds, (const char *)s.b, s.n);
		if (dir) {
			snprintf(name, sizeof(name), "%s", H.method_name[k]);
			write_seed(dir, name, &s);
		}
		s.n = 0;
		put_hostile(&s, k);
		fuzz_seed(seeds, (const char *)s.b, s.n);
		if (dir) {
			snprintf(name, sizeof(name), "%s_hostile", H.method_name[k]);
			write_seed(dir, name, &s);
		}
	}
}

/* Every method was sent a well-formed map and hostile arguments. */
static void fuzz_finish(void)
{
	unsigned accepting = 0;

	for (unsigned k = 0; k < H.n_methods; k++) {
		if (F.wellformed[k] == 0 || F.hostile[k] == 0)
			fprintf(stderr, "fuzz_args: %s: %lu well-formed, %lu hostile requests\n",
			        H.method_name[k], F.wellformed[k], F.hostile[k]);
		CHECK(F.wellformed[k] > 0 && F.hostile[k] > 0);
		accepting += F.accepted[k] > 0;
	}
	printf("fuzz_args: every one of %u methods was sent well-formed and hostile arguments; "
	       "%u accepted some\n", H.n_methods, accepting);
}

#endif /* FUZZ_STANDALONE */
