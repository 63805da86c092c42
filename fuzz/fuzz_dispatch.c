/*
 * fuzz_dispatch.c: fuzz target for method arguments end to end: arbitrary
 * sequences of requests through the daemon's dispatch_request (the
 * srv_handler the server calls per request) over a real state segment.
 *
 * Per input (fuzz/harness.c): a fresh segment and ledger and the same
 * setup, made of requests too: an org "acme" with a funded wallet, agent
 * "a" (limits and a rule "openai.*") and agent "b" (priority high, rules
 * "*" and "tool.search"), and a price of "gpt-x". Then the input is read as
 * a sequence of requests (at most MAX_REQUESTS), each starting with two
 * bytes, sel and mode:
 *   sel 0xff        a clock step: mode % 4 selects dispatch_expire (twice
 *                   as likely: it rolls a day that began, and expires
 *                   holds, which live 1 us, so every open hold is due),
 *                   dispatch_push_alerts or dispatch_conn_closed;
 *   otherwise       method sel % (methods + 1) of the table
 *                   (dispatch_method_name; the last is an unknown name), on
 *                   connection 1 + (mode >> 5 & 1), with arguments by
 *                   mode % 4:
 *     0  raw: a length byte, then that many bytes as the one element of
 *        params ([raw]);
 *     1  raw: a length byte (two, big endian, if mode & 4), then that many
 *        bytes as params itself;
 *     2, 3  the method's valid template (harness_template) with
 *        (mode >> 2) & 7 mutations of three bytes each (kind, field,
 *        value): a field set to an edge value (INT64 and UINT64 extremes,
 *        floats, empty, long, invalid UTF-8 and NUL-holding strings, bin,
 *        nil, containers, ext, ids of other objects), removed, duplicated,
 *        set to another object's id, an unknown or foreign field added, or
 *        params reshaped ([], [map, map], [nil], a bare map, [[map]]).
 * The requests go through fuzz/harness.c, which frames them as the server
 * does, runs them over a real state segment with its ledger and checks
 * the invariants after each request (the response, reads and failed
 * changes leave the segment alone, the holds add up, a check stays within
 * its limits) and at the end of the input (the ledger replays to the same
 * results and the same tables).
 *
 * Built two ways (Makefile.am), like fuzz_frame.c: `make fuzz` with
 * libFuzzer over fuzz/corpus_dispatch, and fuzz/fuzz_dispatch_smoke
 * (-DFUZZ_STANDALONE) in `make check`. With FUZZ_WRITE_SEEDS=DIR in its
 * environment, the smoke driver also writes its built-in seeds to DIR as
 * files: that is how fuzz/corpus_dispatch was made. FUZZ_TRACE=1 in the
 * environment of either build prints each request and its response.
 *
 * Single thread (harness.h).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "invariant.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_REQUESTS 48
#define MAX_FIELDS 16



static const char *const extra_keys[] = {
	"agent_id", "org_id", "transaction_id", "estimated_cost", "actual_cost", "amount",
	"idempotency_key", "task_id", "metadata", "model", "input_tokens", "output_tokens",
	"cached_input_tokens", "rule_id", "wallet", "rules", "priority", "status", "limit",
	"before", "since", "until", "debt", "period", "timezone", "agentId", "",
};

#define N_EXTRA_KEYS (sizeof(extra_keys) / sizeof(extra_keys[0]))
#define N_EDGES 34

/* What the target keeps from one input to the next. */
static struct fuzz {
	int ready;
	msgpack_sbuffer req;
} F;

/* ---------------------------------------------------------------- templates */

static void pack_edge(msgpack_packer *pk, unsigned k)
{
	static char longs[4097];

	if (!longs[0])
		memset(longs, 'x', sizeof(longs) - 1);
	switch (k % N_EDGES) {
	case 0: msgpack_pack_int64(pk, INT64_MAX); break;
	case 1: msgpack_pack_int64(pk, INT64_MIN); break;
	case 2: msgpack_pack_int64(pk, -1); break;
	case 3: msgpack_pack_int64(pk, 0); break;
	case 4: msgpack_pack_int64(pk, 1); break;
	case 5: msgpack_pack_uint64(pk, UINT64_MAX); break;
	case 6: msgpack_pack_uint64(pk, ((uint64_t)1 << 53) + 1); break;
	case 7: msgpack_pack_double(pk, 1.5); break;
	case 8: msgpack_pack_double(pk, -0.0); break;
	case 9: msgpack_pack_str_with_body(pk, "", 0); break;
	case 10: msgpack_pack_str_with_body(pk, longs, 4096); break;
	case 11: msgpack_pack_str_with_body(pk, longs, 64); break;
	case 12: msgpack_pack_str_with_body(pk, longs, 128); break;
	case 13: msgpack_pack_str_with_body(pk, "\xff\xfe\xc3", 3); break;
	case 14: msgpack_pack_str_with_body(pk, "a\0b", 3); break;
	case 15: msgpack_pack_bin_with_body(pk, "ab", 2); break;
	case 16: msgpack_pack_nil(pk); break;
	case 17: msgpack_pack_true(pk); break;
	case 18: msgpack_pack_array(pk, 0); break;
	case 19: msgpack_pack_map(pk, 0); break;
	case 20: msgpack_pack_map(pk, 1); msgpack_pack_str_with_body(pk, "x", 1);
		msgpack_pack_int64(pk, 1); break;
	case 21: msgpack_pack_ext_with_body(pk, "\x01\x02", 2, 5); break;
	case 22: msgpack_pack_uint64(pk, H.agent[1]); break;
	case 23: msgpack_pack_uint64(pk, H.org); break;
	case 24: msgpack_pack_uint64(pk, H.txn[1]); break;
	case 25: msgpack_pack_str_with_body(pk, "100", 3); break;
	case 26: msgpack_pack_int64(pk, -1000000); break;
	case 27: msgpack_pack_str_with_body(pk, "openai.chat", 11); break;
	case 28: msgpack_pack_str_with_body(pk, " ", 1); break;
	case 29: msgpack_pack_str_with_body(pk, "*", 1); break;
	case 30: msgpack_pack_str_with_body(pk, "tool.*", 6); break;
	case 31: msgpack_pack_int64(pk, INT64_C(4294967296)); break;
	case 32: msgpack_pack_int64(pk, INT64_MAX / 2 + 1); break;
	default: msgpack_pack_int64(pk, 999999999999); break;
	}
}

/* One field of a template being mutated: its value is the template's text or an edge. */
struct field {
	const char *key;
	size_t key_len;
	const char *text; /* NULL: the edge value */
	unsigned edge;
};

struct args {
	struct field f[MAX_FIELDS];
	unsigned n;
	unsigned shape; /* 0: [map]; others: see reshape in pack_args */
};

static void args_of(const char *text, struct args *a)
{
	const char *p = text + 1;

	a->n = 0;
	a->shape = 0;
	while (*p && *p != '}' && a->n < MAX_FIELDS) {
		const char *colon = strchr(p, ':');
		struct field *f = &a->f[a->n++];

		f->key = p;
		f->key_len = (size_t)(colon - p);
		f->text = colon + 1;
		p = harness_skip_value(colon + 1);
		if (*p == ',')
			p++;
	}
}

static void pack_map(msgpack_packer *pk, const struct args *a)
{
	msgpack_pack_map(pk, a->n);
	for (unsigned i = 0; i < a->n; i++) {
		const char *t = a->f[i].text;

		msgpack_pack_str_with_body(pk, a->f[i].key, a->f[i].key_len);
		if (t)
			harness_pack_value(pk, &t);
		else
			pack_edge(pk, a->f[i].edge);
	}
}

static void pack_args(msgpack_packer *pk, const struct args *a)
{
	switch (a->shape % 6) {
	case 0: msgpack_pack_array(pk, 1); pack_map(pk, a); break;
	case 1: msgpack_pack_array(pk, 0); break;
	case 2: msgpack_pack_array(pk, 2); pack_map(pk, a); pack_map(pk, a); break;
	case 3: msgpack_pack_array(pk, 1); msgpack_pack_nil(pk); break;
	case 4: pack_map(pk, a); break;
	default: msgpack_pack_array(pk, 1); msgpack_pack_array(pk, 1); pack_map(pk, a); break;
	}
}

/* One mutation of three bytes: what, which field, which value. */
static void mutate_args(struct args *a, const uint8_t m[3])
{
	static const char ids[] = "aborstu";
	struct field *f = a->n ? &a->f[m[1] % a->n] : NULL;

	switch (m[0] % 7) {
	case 0:
		if (f) {
			f->text = NULL;
			f->edge = m[2];
		}
		break;
	case 1:
		if (f)
			*f = a->f[--a->n];
		break;
	case 2:
		if (a->n < MAX_FIELDS) {
			a->f[a->n].key = extra_keys[m[1] % N_EXTRA_KEYS];
			a->f[a->n].key_len = strlen(a->f[a->n].key);
			a->f[a->n].text = NULL;
			a->f[a->n++].edge = m[2];
		}
		break;
	case 3:
		if (f && a->n < MAX_FIELDS) {
			a->f[a->n] = *f;
			a->f[a->n].text = NULL;
			a->f[a->n++].edge = m[2];
		}
		break;
	case 4:
		if (f) {
			static char texts[7][3];

			/* another object's id, as "$x" */
			texts[m[2] % 7][0] = '$';
			texts[m[2] % 7][1] = ids[m[2] % 7];
			f->text = texts[m[2] % 7];
		}
		break;
	case 5:
		a->shape = m[2];
		break;
	default:
		if (f) {
			/* the template's value of another field */
			f->text = a->f[m[2] % a->n].text;
			f->edge = a->f[m[2] % a->n].edge;
		}
		break;
	}
}

/* ------------------------------------------------------------------- inputs */

static void init_once(void)
{
	harness_init("fuzz_dispatch");
	/* a method without a template would be reached by raw bytes only */
	for (unsigned k = 0; k < H.n_methods; k++)
		CHECK(harness_template(k) != NULL);
	msgpack_sbuffer_init(&F.req);
	F.ready = 1;
}

/* Runs one request read from data; returns the bytes it took (0: the input ended). */
static size_t one_request(const uint8_t *data, size_t size)
{
	struct harness_outcome o;
	uint8_t sel, mode;
	unsigned k;
	size_t used = 2, len;

	if (size < 2)
		return 0;
	sel = data[0];
	mode = data[1];
	if (sel == 0xff) {
		harness_clock_step(mode);
		return used;
	}
	k = sel % (H.n_methods + 1);
	F.req.size = 0;
	if (mode % 4 < 2) {
		int wide = mode % 4 == 1 && (mode & 4);

		if (size < used + 1 + (size_t)wide)
			return 0;
		len = wide ? (size_t)data[2] << 8 | data[3] : data[2];
		used += 1 + (size_t)wide;
		if (len > size - used)
			len = size - used;
		if (mode % 4 == 0)
			msgpack_sbuffer_write(&F.req, "\x91", 1);
		msgpack_sbuffer_write(&F.req, (const char *)data + used, len);
		used += len;
	} else {
		struct args a;
		msgpack_packer pk;
		unsigned n = (mode >> 2) & 7;

		args_of(k < H.n_methods ? harness_template(k) : "{agent_id:$a}", &a);
		for (unsigned i = 0; i < n && used + 3 <= size; i++, used += 3)
			mutate_args(&a, data + used);
		msgpack_packer_init(&pk, &F.req, msgpack_sbuffer_write);
		pack_args(&pk, &a);
	}
	(void)harness_request(k, F.req.data, F.req.size, 1 + (mode >> 5 & 1), &o);
	return used;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t n;

	if (!F.ready)
		init_once();
	harness_open();
	for (unsigned i = 0; i < MAX_REQUESTS && (n = one_request(data, size)) > 0; i++) {
		data += n;
		size -= n;
	}
	harness_close();
	return 0;
}

#ifdef FUZZ_STANDALONE

#define FUZZ_NAME "fuzz_dispatch"
#define FUZZ_CORPUS "fuzz/corpus_dispatch"
#define FUZZ_MAX_INPUT 4096
#define FUZZ_MAX_EDITS 6
/* selectors, modes, lengths and msgpack type bytes */
#define FUZZ_ALPHABET "\x00\x01\x02\x03\x06\x0a\x1e\x22\x7f\x80\x90\xa0\xc0\xcc\xd3\xff"
#define FUZZ_REPLACE_FROM_ALPHABET 0
#include "standalone.h"

/*
 * The seeds: a request per method from its template (mode 2), a check and
 * its report, an expiry, and raw arguments. The method indexes are those of
 * the table when the seeds were made; a seed that names another method
 * still exercises it.
 */
static void fuzz_builtin(struct seeds *s)
{
	static const struct {
		const char *name;
		size_t len;
		const char *bytes;
	} seeds[] = {
#define SEED(name, bytes) { name, sizeof(bytes) - 1, bytes }
		SEED("check_report", "\x00\x02\x01\x02"),
		SEED("check_expire_report", "\x00\x02\xff\x00\x01\x02"),
		SEED("check_twice_report_twice", "\x00\x02\x00\x02\x01\x02\x01\x02"),
		SEED("check_mutated", "\x00\x06\x00\x02\x00"),
		SEED("admin", "\x09\x02\x07\x02\x08\x02\x0a\x02\x0b\x02\x13\x02\x14\x02"),
		SEED("rules", "\x15\x02\x16\x02\x17\x02\x18\x02\x00\x02"),
		SEED("views", "\x05\x02\x06\x02\x0c\x02\x0f\x02\x11\x02\x12\x02\x19\x02\x1a\x02"
		              "\x1b\x02\x1c\x02\x1d\x02\x1e\x02\x1f\x02\x20\x02"),
		SEED("alerts", "\x22\x02\x21\x02\x00\x02\xff\x02\x23\x02\xff\x03"),
		SEED("orgs_pricing", "\x0d\x02\x0e\x02\x02\x02\x03\x02\x04\x02\x10\x02"),
		SEED("raw_check", "\x00\x00\x20\x83\xa8" "agent_id\x01\xa6" "action\xa4"
		                  "tool\xae" "estimated_cost\x01"),
		SEED("raw_params", "\x05\x01\x01\x90"),
#undef SEED
	};
	const char *dir = getenv("FUZZ_WRITE_SEEDS");

	for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
		fuzz_seed(s, seeds[i].bytes, seeds[i].len);
		if (dir) {
			char path[4096];
			FILE *f;

			snprintf(path, sizeof(path), "%s/%s.bin", dir, seeds[i].name);
			CHECK((f = fopen(path, "wb")) != NULL);
			CHECK(fwrite(seeds[i].bytes, 1, seeds[i].len, f) == seeds[i].len);
			fclose(f);
		}
	}
}

#endif /* FUZZ_STANDALONE */
