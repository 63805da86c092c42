/*
 * fuzz_dispatch.c: fuzz target for method arguments end to end: arbitrary
 * sequences of requests through the daemon's dispatch_request (the
 * srv_handler the server calls per request) over a real state segment.
 *
 * Per input: a fresh segment (in /dev/shm when there is one) and the same
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
 *     2, 3  the method's valid template (templates[] below) with
 *        (mode >> 2) & 7 mutations of three bytes each (kind, field,
 *        value): a field set to an edge value (INT64 and UINT64 extremes,
 *        floats, empty, long, invalid UTF-8 and NUL-holding strings, bin,
 *        nil, containers, ext, ids of other objects), removed, duplicated,
 *        set to another object's id, an unknown or foreign field added, or
 *        params reshaped ([], [map, map], [nil], a bare map, [[map]]).
 * Every request is framed [0, msgid, method, params] and, like the server,
 * passed through proto_scan (default limits) and proto_request_parse
 * first; a message the server would refuse there is skipped (that layer is
 * fuzz_frame's).
 *
 * Invariants checked (abort on violation) after each request:
 *   - the handler packed exactly two objects: nil and a result, or an
 *     error map {code, name, message} and nil, where name is the protocol
 *     name of code, the message is not empty, and the code is not
 *     internal (which would be a daemon fault);
 *   - a read (and an unknown method) leaves the segment as it was, byte for
 *     byte, and so does a change that failed, but for the header's change
 *     count and a calendar roll that was due before it;
 *   - state_check_holds (tests/state_check.c): every wallet, rule and task
 *     holds exactly its open holds, no balance, debt or hold is negative,
 *     org reservations add up;
 *   - a blocked check places no hold; an allowed new one places exactly one,
 *     and unless the agent is critical, the wallets, rule and task it holds
 *     on are within their limits with it: held <= balance, no debt, daily
 *     spend plus holds within daily_spend_limit, the estimate within
 *     max_per_txn and max_cost_per_txn, a task's usage plus holds within
 *     the daemon's task cap.
 * Under libFuzzer, AddressSanitizer also reports any leak.
 *
 * Built two ways (Makefile.am), like fuzz_frame.c: `make fuzz` with
 * libFuzzer over fuzz/corpus_dispatch, and fuzz/fuzz_dispatch_smoke
 * (-DFUZZ_STANDALONE) in `make check`. With FUZZ_WRITE_SEEDS=DIR in its
 * environment, the smoke driver also writes its built-in seeds to DIR as
 * files: that is how fuzz/corpus_dispatch was made. FUZZ_TRACE=1 in the
 * environment of either build prints each request and its response.
 *
 * Single thread, registered with liburcu; the segment of one input is
 * closed and removed before the next.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <urcu.h>

#include "clock.h"
#include "dispatch.h"
#include "gate.h"
#include "invariant.h"
#include "proto.h"
#include "server.h"
#include "shm.h"
#include "sidecard.h"
#include "state.h"
#include "state_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_REQUESTS 48
#define MAX_FIELDS 16
#define TASK_CAP 3000000 /* the daemon's task_max_usage setting here */

/* Valid arguments of every method; $x are the ids of the setup (var()). */
static const struct template {
	const char *method, *args;
} templates[] = {
	{"check", "{agent_id:$a,action:'openai.chat',estimated_cost:200000,type:'api_call',"
	          "metadata:{k:'v'},task_id:'t1'}"},
	{"report", "{transaction_id:$t,outcome:'success',actual_cost:150000}"},
	{"pricing.set", "{model:'gpt-x',input:2500000,output:10000000,cached_input:1000000,"
	                "effective_from:$n}"},
	{"pricing.list", "{model:'gpt-x'}"},
	{"pricing.get", "{model:'gpt-x',at:$n}"},
	{"hello", "{}"},
	{"wallets.get", "{agent_id:$a}"},
	{"wallets.transfer", "{from_org_id:$o,to_agent_id:$b,amount:100000,reason:'move'}"},
	{"wallets.adjust", "{agent_id:$b,amount:-50000,reason:'fix'}"},
	{"wallets.update", "{org_id:$o,balance:9000000,budget:9000000,max_per_txn:700000,"
	                   "daily_spend_limit:4000000,low_balance:100000,debt:0,period:'daily'}"},
	{"wallets.carve", "{agent_id:$a,amount:300000,reason:'carve'}"},
	{"wallets.release", "{agent_id:$a}"},
	{"spend", "{org_id:$o}"},
	{"orgs.create", "{name:'beta',timezone:'EST5EDT,M3.2.0,M11.1.0'}"},
	{"orgs.update", "{org_id:$o,timezone:'CET-1CEST,M3.5.0,M10.5.0/3'}"},
	{"orgs.list", "{}"},
	{"agents.create", "{org:'acme',name:'c',priority:'high',wallet:{balance:1000000,"
	                  "max_per_txn:200000},rules:[{name:'r',match:'tool.*',max_cost_per_txn:"
	                  "100000,daily_spend_limit:500000,hourly_rate_limit:3}]}"},
	{"agents.get", "{agent_id:$a}"},
	{"agents.list", "{org:'acme'}"},
	{"agents.update", "{agent_id:$b,name:'bee',priority:'critical',status:'throttled'}"},
	{"agents.delete", "{agent_id:$b}"},
	{"rules.add", "{agent_id:$a,name:'emb',match:'openai.embed',max_cost_per_txn:50000,"
	              "daily_spend_limit:100000,hourly_rate_limit:2}"},
	{"rules.list", "{agent_id:$a}"},
	{"rules.update", "{agent_id:$a,rule_id:$r,name:'oa2',match:'openai.*',max_cost_per_txn:"
	                 "250000,daily_spend_limit:600000,hourly_rate_limit:4}"},
	{"rules.remove", "{agent_id:$b,rule_id:$s}"},
	{"transactions.list", "{agent_id:$a,org_id:$o,status:'pending',risk_level:'low',since:0,"
	                      "until:$n,before:$t,limit:10}"},
	{"stats", "{}"},
	{"score", "{agent_id:$a}"},
	{"agents.events", "{agent_id:$a,limit:5}"},
	{"transactions.summary", "{agent_id:$a,since:0,until:$n}"},
	{"agents.top", "{org_id:$o,since:0,until:$n,limit:3}"},
	{"fleet", "{}"},
	{"tasks.usage", "{task_id:'t1'}"},
	{"alerts.list", "{org_id:$o,kind:'low_balance',severity:'warning',since:0,before:100,"
	                "limit:5}"},
	{"alerts.subscribe", "{}"},
	{"alerts.unsubscribe", "{}"},
	{"agents.rotate_token", "{agent_id:$a}"},
	{"tokens.create", "{role:'reader',name:'dash'}"},
	{"tokens.list", "{}"},
	{"tokens.revoke", "{token_id:1}"},
};

#define N_TEMPLATES (sizeof(templates) / sizeof(templates[0]))

static const char *const setup[][2] = {
	{"orgs.create", "{name:'acme'}"},
	{"wallets.update", "{org_id:$o,balance:5000000,daily_spend_limit:3000000}"},
	{"agents.create", "{org:'acme',name:'a',wallet:{balance:2000000,max_per_txn:500000,"
	                  "daily_spend_limit:1500000},rules:[{name:'oa',match:'openai.*',"
	                  "max_cost_per_txn:300000,daily_spend_limit:800000,hourly_rate_limit:5}]}"},
	{"agents.create", "{org:$o,name:'b',priority:'high',wallet:{balance:1000000},rules:["
	                  "{name:'any',match:'*',daily_spend_limit:700000},{name:'search',"
	                  "match:'tool.search',max_cost_per_txn:20000,hourly_rate_limit:2}]}"},
	{"pricing.set", "{model:'gpt-x',input:2500000,output:10000000}"},
};

/* Fields a mutation may add: every method's, a near miss and an empty name. */
static const char *const extra_keys[] = {
	"agent_id", "org_id", "transaction_id", "estimated_cost", "actual_cost", "amount",
	"idempotency_key", "task_id", "metadata", "model", "input_tokens", "output_tokens",
	"cached_input_tokens", "rule_id", "wallet", "rules", "priority", "status", "limit",
	"before", "since", "until", "debt", "period", "timezone", "agentId", "",
};

#define N_EXTRA_KEYS (sizeof(extra_keys) / sizeof(extra_keys[0]))
#define N_EDGES 34

/* The state of one input; static, reused from one input to the next. */
static struct fuzz {
	int ready;
	int trace; /* FUZZ_TRACE is set */
	char dir[64], path[96];
	unsigned n_methods;
	const char *method_name[64];
	int method_changes[64];
	const struct template *method_template[64];
	struct srv_config cfg;
	struct dispatch d;
	struct state *st;
	uint64_t org, agent[2], rule[2], txn[2];
	uint32_t msgid;
	char *snap;       /* the segment before a request */
	size_t snap_size;
	msgpack_sbuffer req, resp;
	msgpack_zone zone;
} F;

/* ---------------------------------------------------------------- templates */

/* The value of $c: the setup's ids, the last transactions, the time. */
static uint64_t var(char c)
{
	switch (c) {
	case 'a': return F.agent[0];
	case 'b': return F.agent[1];
	case 'o': return F.org;
	case 'r': return F.rule[0];
	case 's': return F.rule[1];
	case 't': return F.txn[0];
	case 'u': return F.txn[1];
	default: return (uint64_t)clock_now();
	}
}

/* The end of the value at p (a template's text). */
static const char *skip_value(const char *p)
{
	int depth = 0;

	do {
		if (*p == '\'') {
			p = strchr(p + 1, '\'');
		} else if (*p == '{' || *p == '[') {
			depth++;
		} else if (*p == '}' || *p == ']') {
			depth--;
		} else if (depth == 0) {
			while (p[1] && p[1] != ',' && p[1] != '}' && p[1] != ']')
				p++;
		}
		p++;
	} while (depth > 0);
	return p;
}

/* Items of the container opening at p; each of a map's starts with "key:". */
static uint32_t count_items(const char *p)
{
	int map = *p == '{';
	uint32_t n = 0;

	if (p[1] == '}' || p[1] == ']')
		return 0;
	for (p++;; n++) {
		if (map)
			p = strchr(p, ':') + 1;
		p = skip_value(p);
		if (*p != ',')
			return n + 1;
		p++;
	}
}

/* Packs the value at *p and moves *p past it. */
static void pack_value(msgpack_packer *pk, const char **p)
{
	const char *s = *p, *e;
	int map = *s == '{';
	uint32_t n;

	switch (*s) {
	case '{':
	case '[':
		n = count_items(s);
		if (map)
			msgpack_pack_map(pk, n);
		else
			msgpack_pack_array(pk, n);
		s++;
		for (uint32_t i = 0; i < n; i++) {
			if (map) {
				e = strchr(s, ':');
				msgpack_pack_str_with_body(pk, s, (size_t)(e - s));
				s = e + 1;
			}
			pack_value(pk, &s);
			if (*s == ',')
				s++;
		}
		*p = s + 1;
		return;
	case '\'':
		e = strchr(s + 1, '\'');
		msgpack_pack_str_with_body(pk, s + 1, (size_t)(e - s - 1));
		*p = e + 1;
		return;
	case '$':
		msgpack_pack_uint64(pk, var(s[1]));
		*p = s + 2;
		return;
	default:
		msgpack_pack_int64(pk, strtoll(s, (char **)p, 10));
		return;
	}
}

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
	case 22: msgpack_pack_uint64(pk, F.agent[1]); break;
	case 23: msgpack_pack_uint64(pk, F.org); break;
	case 24: msgpack_pack_uint64(pk, F.txn[1]); break;
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
		p = skip_value(colon + 1);
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
			pack_value(pk, &t);
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

/* ----------------------------------------------------------------- requests */

/* What a request did, from its response. */
struct outcome {
	int error;      /* the error code, or 0 */
	int checked;    /* a check's result: 1 allowed, 2 blocked */
	int replayed;
	uint64_t txn;   /* transaction_id of the result, or 0 */
};

static int key_is(const msgpack_object_kv *kv, const char *key)
{
	return kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == strlen(key) &&
	       memcmp(kv->key.via.str.ptr, key, kv->key.via.str.size) == 0;
}

static int str_is(const msgpack_object *o, const char *s)
{
	return o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) &&
	       memcmp(o->via.str.ptr, s, o->via.str.size) == 0;
}

/* The handler's output: exactly [error, result] as the server expects. */
static void read_response(const char *buf, size_t len, struct outcome *out)
{
	msgpack_object err, res;
	size_t off = 0;

	memset(out, 0, sizeof(*out));
	msgpack_zone_clear(&F.zone);
	CHECK(msgpack_unpack(buf, len, &off, &F.zone, &err) == MSGPACK_UNPACK_EXTRA_BYTES);
	CHECK(msgpack_unpack(buf, len, &off, &F.zone, &res) == MSGPACK_UNPACK_SUCCESS);
	CHECK(off == len);
	if (err.type != MSGPACK_OBJECT_NIL) {
		const msgpack_object *code = NULL, *name = NULL, *message = NULL;

		CHECK(err.type == MSGPACK_OBJECT_MAP && err.via.map.size == 3);
		CHECK(res.type == MSGPACK_OBJECT_NIL);
		for (uint32_t i = 0; i < 3; i++) {
			const msgpack_object_kv *kv = &err.via.map.ptr[i];

			if (key_is(kv, "code"))
				code = &kv->val;
			else if (key_is(kv, "name"))
				name = &kv->val;
			else if (key_is(kv, "message"))
				message = &kv->val;
		}
		CHECK(code && name && message);
		CHECK(code->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && code->via.i64 >= INT32_MIN);
		out->error = (int)code->via.i64;
		CHECK(str_is(name, sc_err_name(out->error)));
		CHECK(sc_err_from_name(sc_err_name(out->error)) == out->error);
		CHECK(message->type == MSGPACK_OBJECT_STR && message->via.str.size > 0);
		if (out->error == SC_EINTERNAL)
			fprintf(stderr, "fuzz_dispatch: internal error: %.*s\n",
			        (int)message->via.str.size, message->via.str.ptr);
		CHECK(out->error != SC_EINTERNAL);
		return;
	}
	if (res.type != MSGPACK_OBJECT_MAP)
		return;
	for (uint32_t i = 0; i < res.via.map.size; i++) {
		const msgpack_object_kv *kv = &res.via.map.ptr[i];

		if (key_is(kv, "transaction_id") && kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER)
			out->txn = kv->val.via.u64;
		else if (key_is(kv, "status") && str_is(&kv->val, "allowed"))
			out->checked = 1;
		else if (key_is(kv, "status") && str_is(&kv->val, "blocked"))
			out->checked = 2;
		else if (key_is(kv, "replayed") && kv->val.type == MSGPACK_OBJECT_BOOLEAN)
			out->replayed = kv->val.via.boolean;
	}
}

/* With FUZZ_TRACE set: each request and its response, to follow an input that failed. */
static void trace(const struct srv_request *r)
{
	msgpack_zone zone;
	msgpack_object o;
	size_t off = 0;

	fprintf(stderr, "%.*s ", (int)r->method_len, r->method);
	msgpack_object_print(stderr, *r->params);
	fprintf(stderr, "\n  -> ");
	msgpack_zone_init(&zone, 1024);
	while (msgpack_unpack(F.resp.data, F.resp.size, &off, &zone, &o) != MSGPACK_UNPACK_PARSE_ERROR &&
	       off <= F.resp.size) {
		msgpack_object_print(stderr, o);
		fputc(' ', stderr);
		if (off == F.resp.size)
			break;
	}
	fputc('\n', stderr);
	msgpack_zone_destroy(&zone);
}

/*
 * Sends F.req (the packed params) as method on conn_id, as the server
 * would: -1 if the server refuses the message before the handler.
 */
static int request(const char *method, size_t method_len, const char *params, size_t params_len,
                   uint64_t conn_id, struct outcome *out)
{
	struct proto_limits limits;
	struct proto_request pr;
	struct srv_request r;
	msgpack_sbuffer msg;
	msgpack_packer pk;
	size_t len;
	int64_t msgid;
	char err[128];
	int rc = -1;

	msgpack_sbuffer_init(&msg);
	msgpack_packer_init(&pk, &msg, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 4);
	msgpack_pack_int(&pk, PROTO_REQUEST);
	msgpack_pack_uint32(&pk, ++F.msgid);
	msgpack_pack_str_with_body(&pk, method, method_len);
	if (params_len)
		msgpack_sbuffer_write(&msg, params, params_len);
	proto_limits_default(&limits);
	if (proto_scan(msg.data, msg.size, &limits, &len, &msgid) != PROTO_SCAN_OK ||
	    len != msg.size)
		goto out;
	msgpack_zone_clear(&F.zone);
	if (proto_request_parse(msg.data, msg.size, &F.zone, &pr, err, sizeof(err)) != 0)
		goto out;
	memset(&r, 0, sizeof(r));
	r.conn_id = conn_id;
	r.msgid = pr.msgid;
	r.method = pr.method;
	r.method_len = pr.method_len;
	r.params = pr.params;
	r.params_raw = pr.params_raw;
	r.params_raw_len = pr.params_raw_len;
	F.resp.size = 0;
	msgpack_packer_init(&pk, &F.resp, msgpack_sbuffer_write);
	(void)dispatch_request(&F.d, &r, &pk);
	if (F.trace)
		trace(&r);
	read_response(F.resp.data, F.resp.size, out);
	rc = 0;
out:
	msgpack_sbuffer_destroy(&msg);
	return rc;
}

static int request_args(const char *method, const struct args *a, uint64_t conn_id,
                        struct outcome *out)
{
	msgpack_packer pk;

	F.req.size = 0;
	msgpack_packer_init(&pk, &F.req, msgpack_sbuffer_write);
	pack_args(&pk, a);
	return request(method, strlen(method), F.req.data, F.req.size, conn_id, out);
}

/* ---------------------------------------------------------------- invariants */

static void within_daily(const struct shm_wallet *w, int32_t today)
{
	CHECK(w->daily_limit == 0 ||
	      gate_daily_used(w->day, w->daily_spent, w->held, today) <= w->daily_limit);
}

/*
 * After a check: a blocked one placed no hold, a new allowed one exactly
 * one, within every limit unless its agent is critical. holds and next_txn
 * are the hold count and next transaction id from before the check.
 */
static void check_gated(const struct outcome *o, uint32_t holds, uint64_t next_txn)
{
	const struct shm *m = state_shm(F.st);
	const struct shm_hold *h = NULL;
	const struct shm_agent *a;
	const struct shm_org *org;
	uint32_t now_holds = 0;

	for (uint32_t i = 0; i < m->hdr->hold_top; i++) {
		if (!m->holds[i].rec.used)
			continue;
		now_holds++;
		if (m->holds[i].txn_id >= next_txn)
			h = &m->holds[i];
	}
	if (o->checked != 1 || o->replayed) {
		CHECK(now_holds == holds && h == NULL);
		return;
	}
	CHECK(now_holds == holds + 1 && h != NULL && h->txn_id == o->txn);
	a = &m->agents[h->agent_slot];
	if (a->priority == SC_PRIORITY_CRITICAL)
		return;
	org = &m->orgs[h->org_slot];
	CHECK(a->wallet.held <= a->wallet.balance && a->wallet.debt == 0);
	CHECK(a->wallet.max_per_txn == 0 || h->amount <= a->wallet.max_per_txn);
	within_daily(&a->wallet, org->cal.day);
	if (h->org_limited) {
		CHECK(org->wallet.held <= org->wallet.balance && org->wallet.debt == 0);
		CHECK(org->wallet.max_per_txn == 0 || h->amount <= org->wallet.max_per_txn);
		within_daily(&org->wallet, org->cal.day);
	}
	if (h->rule_slot != SHM_NONE) {
		const struct shm_rule *r = &m->rules[h->rule_slot];

		CHECK(r->max_cost_per_txn == 0 || h->amount <= r->max_cost_per_txn);
		CHECK(r->daily_limit == 0 ||
		      gate_daily_used(r->day, r->daily_spent, r->held, org->cal.day) <= r->daily_limit);
	}
	if (h->task_slot != SHM_NONE) {
		const struct shm_task *t = &m->tasks[h->task_slot];

		CHECK(t->used + t->held <= TASK_CAP);
	}
}

static void check_state(void)
{
	char err[256];

	if (state_check_holds(state_shm(F.st), err, sizeof(err)) != 0) {
		fprintf(stderr, "fuzz_dispatch: %s\n", err);
		CHECK(!"state_check_holds");
	}
}

/* ------------------------------------------------------------------- inputs */

/* Removes the directory of the segments when the process exits. */
static void remove_dir(void)
{
	rmdir(F.dir);
}

static void init_once(void)
{
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";

	rcu_register_thread();
	clock_start(1);
	snprintf(F.dir, sizeof(F.dir), "%s/sidecard-fuzz-XXXXXX", base);
	CHECK(mkdtemp(F.dir) != NULL);
	snprintf(F.path, sizeof(F.path), "%s/state.shm", F.dir);
	atexit(remove_dir);
	F.trace = getenv("FUZZ_TRACE") != NULL;
	for (F.n_methods = 0; F.n_methods < 64 &&
	     (F.method_name[F.n_methods] = dispatch_method_name(F.n_methods,
	                                                        &F.method_changes[F.n_methods]));
	     F.n_methods++) {
		for (size_t t = 0; t < N_TEMPLATES; t++)
			if (strcmp(templates[t].method, F.method_name[F.n_methods]) == 0)
				F.method_template[F.n_methods] = &templates[t];
		/* a method without a template would be reached by raw bytes only */
		CHECK(F.method_template[F.n_methods] != NULL);
	}
	CHECK(F.n_methods == N_TEMPLATES);
	srv_config_default(&F.cfg, F.path);
	msgpack_sbuffer_init(&F.req);
	msgpack_sbuffer_init(&F.resp);
	CHECK(msgpack_zone_init(&F.zone, 4096));
	F.ready = 1;
}

/* A fresh segment with the setup, made by requests. */
static void open_state(void)
{
	const struct shm_caps caps = { 4, 8, 32, 16, 64, 32, 8, 16, 32, 64, 2 };
	struct state_config sc;
	struct outcome o;
	struct args a;
	const struct shm *m;
	char err[256];
	unsigned n = 0;

	memset(&sc, 0, sizeof(sc));
	sc.path = F.path;
	sc.caps = caps;
	sc.set.hold_ttl_us = 1;
	sc.set.expiry_charges = 1;
	sc.set.task_max_usage = TASK_CAP;
	sc.set.alert_velocity = 4;
	unlink(F.path);
	if (state_open(&F.st, &sc, err, sizeof(err)) != 0) {
		fprintf(stderr, "fuzz_dispatch: state_open: %s\n", err);
		abort();
	}
	/* mapped, the segment needs no name: an input that aborts leaves no file behind */
	unlink(F.path);
	memset(&F.d, 0, sizeof(F.d));
	CHECK(pthread_mutex_init(&F.d.lock, NULL) == 0);
	F.d.st = F.st;
	F.d.srv_cfg = &F.cfg;
	msgpack_sbuffer_init(&F.d.scratch);
	memset(F.agent, 0, sizeof(F.agent));
	memset(F.rule, 0, sizeof(F.rule));
	memset(F.txn, 0, sizeof(F.txn));
	F.org = 0;
	m = state_shm(F.st);
	for (size_t i = 0; i < sizeof(setup) / sizeof(setup[0]); i++) {
		args_of(setup[i][1], &a);
		CHECK(request_args(setup[i][0], &a, 1, &o) == 0 && o.error == 0);
		for (uint32_t j = 0; i == 0 && j < m->hdr->org_top; j++)
			if (m->orgs[j].rec.used)
				F.org = m->orgs[j].id;
	}
	for (uint32_t i = 0; i < m->hdr->agent_top && n < 2; i++)
		if (m->agents[i].rec.used) {
			F.agent[n] = m->agents[i].id;
			F.rule[n++] = m->rules[m->agents[i].first_rule].id;
		}
	CHECK(n == 2 && F.org != 0);
}

static void close_state(void)
{
	dispatch_conn_closed(&F.d, 1, &(struct access_peer){0});
	dispatch_conn_closed(&F.d, 2, &(struct access_peer){0});
	dispatch_alerts_free(&F.d);
	dispatch_access_free(&F.d);
	msgpack_sbuffer_destroy(&F.d.scratch);
	pthread_mutex_destroy(&F.d.lock);
	state_close(F.st);
	F.st = NULL;
}

static void clock_step(uint8_t mode)
{
	switch (mode % 4) {
	case 0:
	case 1: (void)dispatch_expire(&F.d); break;
	case 2: dispatch_push_alerts(&F.d); break;
	default: dispatch_conn_closed(&F.d, 1 + (mode >> 5 & 1), &(struct access_peer){0}); break;
	}
}

/* Says where the segment changed when it should not have. */
static void report_change(const char *method, int error)
{
	const struct shm *m = state_shm(F.st);
	const struct shm_header *h = m->hdr;
	const struct {
		const char *name;
		uint64_t off;
	} tables[] = {
		{"header", 0}, {"orgs", h->org_off}, {"agents", h->agent_off},
		{"rules", h->rule_off}, {"holds", h->hold_off}, {"txns", h->txn_off},
		{"events", h->event_off}, {"tasks", h->task_off}, {"prices", h->price_off},
		{"alerts", h->alert_off}, {"texts", h->text_off}, {"agent index", h->agent_ix_off},
	};
	size_t at = 0, best = 0;

	while (at < m->size && F.snap[at] == m->base[at])
		at++;
	for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++)
		if (tables[i].off <= at && tables[i].off >= tables[best].off)
			best = i;
	fprintf(stderr, "fuzz_dispatch: %s (error %d) changed byte %zu, %s + %llu\n", method,
	        error, at, tables[best].name, (unsigned long long)(at - tables[best].off));
}

/* Runs one request read from data; returns the bytes it took (0: the input ended). */
static size_t one_request(const uint8_t *data, size_t size)
{
	static const char unknown[] = "agents.Get";
	const struct shm *m = state_shm(F.st);
	uint8_t sel, mode;
	unsigned k;
	const char *method;
	uint64_t conn;
	uint64_t next_txn = m->hdr->next_txn_id;
	uint32_t holds = 0;
	struct outcome o;
	size_t used = 2, len;
	int sent, roll_due;

	if (size < 2)
		return 0;
	sel = data[0];
	mode = data[1];
	if (sel == 0xff) {
		clock_step(mode);
		check_state();
		return used;
	}
	k = sel % (F.n_methods + 1);
	method = k < F.n_methods ? F.method_name[k] : unknown;
	conn = 1 + (mode >> 5 & 1);
	for (uint32_t i = 0; i < m->hdr->hold_top; i++)
		holds += m->holds[i].rec.used != 0;
	if (F.snap_size < m->size) {
		free(F.snap);
		CHECK((F.snap = malloc(m->size)) != NULL);
		F.snap_size = m->size;
	}
	memcpy(F.snap, m->base, m->size);
	/* a change request first rolls the calendars when a roll is due (after orgs.create) */
	roll_due = clock_now() >= gate_next_roll(F.st);
	if (mode % 4 < 2) {
		int wide = mode % 4 == 1 && (mode & 4);

		if (size < used + 1 + (size_t)wide)
			return 0;
		len = wide ? (size_t)data[2] << 8 | data[3] : data[2];
		used += 1 + (size_t)wide;
		if (len > size - used)
			len = size - used;
		F.req.size = 0;
		if (mode % 4 == 0)
			msgpack_sbuffer_write(&F.req, "\x91", 1);
		msgpack_sbuffer_write(&F.req, (const char *)data + used, len);
		used += len;
		sent = request(method, strlen(method), F.req.data, F.req.size, conn, &o) == 0;
	} else {
		struct args a;
		unsigned n = (mode >> 2) & 7;

		args_of(k < F.n_methods ? F.method_template[k]->args : "{agent_id:$a}", &a);
		for (unsigned i = 0; i < n && used + 3 <= size; i++, used += 3)
			mutate_args(&a, data + used);
		sent = request_args(method, &a, conn, &o) == 0;
	}
	if (!sent)
		return used;
	/*
	 * A read, and a change that failed, leave the segment as it was, byte
	 * for byte, but for the header's change count (and its seqlock), which
	 * every change request moves, and for a calendar roll that was due.
	 */
	if (k == F.n_methods || !F.method_changes[k] || (o.error != 0 && !roll_due)) {
		struct shm_header *h = (struct shm_header *)F.snap;

		h->seq = m->hdr->seq;
		h->mutations = m->hdr->mutations;
		if (memcmp(F.snap, m->base, m->size) != 0)
			report_change(method, o.error);
		CHECK(memcmp(F.snap, m->base, m->size) == 0);
	}
	if (k < F.n_methods && strcmp(method, "check") == 0 && o.error == 0)
		check_gated(&o, holds, next_txn);
	if (o.error == 0 && o.txn) {
		F.txn[1] = F.txn[0];
		F.txn[0] = o.txn;
	}
	check_state();
	return used;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t n;

	if (!F.ready)
		init_once();
	open_state();
	for (unsigned i = 0; i < MAX_REQUESTS && (n = one_request(data, size)) > 0; i++) {
		data += n;
		size -= n;
	}
	close_state();
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
