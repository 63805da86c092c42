/*
 * harness.c: the dispatcher under fuzzing (harness.h), shared by
 * fuzz_dispatch.c and fuzz_args.c.
 *
 * Per input: a fresh segment (in /dev/shm when there is one) and a fresh
 * ledger directory beside it, the ledger writer attached as in the daemon
 * (async, one loop that runs only at the end of the input), the settings
 * record first and the setup made of requests. Every request is framed
 * [0, msgid, method, params] and, like the server, passed through
 * proto_scan (default limits) and proto_request_parse first; a message the
 * server would refuse there is not sent (that layer is fuzz_frame's).
 *
 * Invariants checked (abort on violation) after each request:
 *   - the handler packed exactly two objects: nil and a result, or an
 *     error map {code, name, message} and nil, where name is the protocol
 *     name of code, the message is not empty and is text (sc_text_check:
 *     valid UTF-8, no control or bidirectional formatting characters,
 *     whatever bytes the request echoed into it), and the code is not
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
 * And at the end of the input (harness_close): the ledger was never
 * failed, holds every change, and replays (dispatch_replay, as a restart
 * rebuilds the state) into a fresh segment with every method record
 * reproducing its recorded result byte for byte and the tables coming out
 * byte for byte as the live ones: a decoding that reads the raw bytes the
 * record keeps differently from the objects the live request was made of
 * shows up here.
 * Under libFuzzer, AddressSanitizer also reports any leak.
 *
 * FUZZ_TRACE=1 in the environment prints each request and its response.
 *
 * Single thread, registered with liburcu; the segments and the ledger of
 * one input are removed before the next.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <urcu.h>
#include <uv.h>

#include "clock.h"
#include "common.h"
#include "dispatch.h"
#include "gate.h"
#include "harness.h"
#include "invariant.h"
#include "ledger.h"
#include "ledger_writer.h"
#include "proto.h"
#include "server.h"
#include "shm.h"
#include "sidecard.h"
#include "state.h"
#include "state_check.h"

struct harness_view H;

/* Valid arguments of every method; $x are the ids of the setup (harness_var). */
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

/* The state of one input; static, reused from one input to the next. */
static struct fuzz {
	char dir[64], path[96], replay_path[96], ledger_dir[96];
	struct srv_config cfg;
	struct state_config sc;
	struct dispatch d;
	struct state *st;
	uv_loop_t loop;
	struct ledger *ledger;
	uint32_t msgid;
	char *snap;       /* the segment before a request */
	size_t snap_size;
	msgpack_sbuffer req, resp;
	msgpack_zone zone;
} F;

/* ---------------------------------------------------------------- templates */

uint64_t harness_var(char c)
{
	switch (c) {
	case 'a': return H.agent[0];
	case 'b': return H.agent[1];
	case 'o': return H.org;
	case 'r': return H.rule[0];
	case 's': return H.rule[1];
	case 't': return H.txn[0];
	case 'u': return H.txn[1];
	default: return (uint64_t)clock_now();
	}
}

const char *harness_skip_value(const char *p)
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
		p = harness_skip_value(p);
		if (*p != ',')
			return n + 1;
		p++;
	}
}

void harness_pack_value(msgpack_packer *pk, const char **p)
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
			harness_pack_value(pk, &s);
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
		msgpack_pack_uint64(pk, harness_var(s[1]));
		*p = s + 2;
		return;
	default:
		msgpack_pack_int64(pk, strtoll(s, (char **)p, 10));
		return;
	}
}

/* ----------------------------------------------------------------- requests */

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
static void read_response(const char *buf, size_t len, struct harness_outcome *out)
{
	msgpack_object err, res;
	size_t off = 0;
	char why[128];

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
			fprintf(stderr, "%s: internal error: %.*s\n", H.name,
			        (int)message->via.str.size, message->via.str.ptr);
		CHECK(out->error != SC_EINTERNAL);
		/* what a strict client (Python's str) can decode, and a terminal can show */
		if (sc_text_check(message->via.str.ptr, message->via.str.size, why, sizeof(why)) != 0)
			fprintf(stderr, "%s: error message: %s: %.*s\n", H.name, why,
			        (int)message->via.str.size, message->via.str.ptr);
		CHECK(sc_text_check(message->via.str.ptr, message->via.str.size, NULL, 0) == 0);
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
 * Sends params (packed) as method on conn_id, as the server would: -1 if
 * the server refuses the message before the handler.
 */
static int send_request(const char *method, size_t method_len, const char *params,
                        size_t params_len, uint64_t conn_id, struct harness_outcome *out)
{
	struct proto_limits limits;
	struct proto_request pr;
	struct access_peer peer;
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
	/*
	 * Connection 1 is an admin's, connection 2 acts for the setup's first
	 * agent (as after hello with its token), so that the role table, an
	 * agent's scope and the records that name their actor are fuzzed too.
	 */
	memset(&peer, 0, sizeof(peer));
	peer.pid = 1;
	peer.role = peer.cred_role = ACCESS_ADMIN;
	if (conn_id == 2 && state_agent_by_id(F.st, H.agent[0], &peer.slot) == 0) {
		peer.role = ACCESS_AGENT;
		peer.id = H.agent[0];
	}
	r.peer = &peer;
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
	if (H.trace)
		trace(&r);
	read_response(F.resp.data, F.resp.size, out);
	rc = 0;
out:
	msgpack_sbuffer_destroy(&msg);
	return rc;
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
static void check_gated(const struct harness_outcome *o, uint32_t holds, uint64_t next_txn)
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

		CHECK(t->used + t->held <= HARNESS_TASK_CAP);
	}
}

static void check_state(void)
{
	char err[256];

	if (state_check_holds(state_shm(F.st), err, sizeof(err)) != 0) {
		fprintf(stderr, "%s: %s\n", H.name, err);
		CHECK(!"state_check_holds");
	}
}

/*
 * Says where the segment m first differs from other (a copy of a segment
 * of the same capacities), from offset from on: which table, at which
 * offset; -1 when it does not.
 */
static long report_diff(const struct shm *m, const char *other, size_t from, const char *what)
{
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
	size_t at = from, best = 0;

	while (at < m->size && other[at] == m->base[at])
		at++;
	if (at == m->size)
		return -1;
	for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++)
		if (tables[i].off <= at && tables[i].off >= tables[best].off)
			best = i;
	fprintf(stderr, "%s: %s: byte %zu differs, %s + %llu\n", H.name, what, at,
	        tables[best].name, (unsigned long long)(at - tables[best].off));
	return (long)at;
}

int harness_request(unsigned k, const char *params, size_t params_len, uint64_t conn_id,
                    struct harness_outcome *o)
{
	static const char unknown[] = "agents.Get";
	const struct shm *m = state_shm(F.st);
	const char *method = k < H.n_methods ? H.method_name[k] : unknown;
	uint64_t next_txn = m->hdr->next_txn_id;
	uint32_t holds = 0;
	int roll_due;

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
	if (send_request(method, strlen(method), params, params_len, conn_id, o) != 0)
		return -1;
	/*
	 * A read, and a change that failed, leave the segment as it was, byte
	 * for byte, but for the header's change count (and its seqlock), which
	 * every change request moves, and for a calendar roll that was due.
	 */
	if (k >= H.n_methods || !H.method_changes[k] || (o->error != 0 && !roll_due)) {
		struct shm_header *h = (struct shm_header *)F.snap;

		h->seq = m->hdr->seq;
		h->mutations = m->hdr->mutations;
		CHECK(report_diff(m, F.snap, 0, method) < 0);
	}
	if (k < H.n_methods && strcmp(method, "check") == 0 && o->error == 0)
		check_gated(o, holds, next_txn);
	if (o->error == 0 && o->txn) {
		H.txn[1] = H.txn[0];
		H.txn[0] = o->txn;
	}
	check_state();
	return 0;
}

/* A request of the setup: its params are [the template text's map]. */
static void setup_request(const char *method, const char *text)
{
	struct harness_outcome o;
	msgpack_packer pk;
	unsigned k = 0;

	while (k < H.n_methods && strcmp(H.method_name[k], method) != 0)
		k++;
	F.req.size = 0;
	msgpack_packer_init(&pk, &F.req, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 1);
	harness_pack_value(&pk, &text);
	CHECK(harness_request(k, F.req.data, F.req.size, 1, &o) == 0 && o.error == 0);
}

void harness_clock_step(uint8_t mode)
{
	switch (mode % 4) {
	case 0:
	case 1: (void)dispatch_expire(&F.d); break;
	case 2: dispatch_push_alerts(&F.d); break;
	default: dispatch_conn_closed(&F.d, 1 + (mode >> 5 & 1), &(struct access_peer){0}); break;
	}
	check_state();
}

const char *harness_template(unsigned k)
{
	for (size_t t = 0; k < H.n_methods && t < sizeof(templates) / sizeof(templates[0]); t++)
		if (strcmp(templates[t].method, H.method_name[k]) == 0)
			return templates[t].args;
	return NULL;
}

/* ------------------------------------------------------------ inputs */

/* Removes the files of the ledger directory (segments, a prepared one). */
static void empty_ledger_dir(void)
{
	char path[192];
	struct dirent *e;
	DIR *d = opendir(F.ledger_dir);

	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.') {
			snprintf(path, sizeof(path), "%s/%s", F.ledger_dir, e->d_name);
			CHECK(unlink(path) == 0);
		}
	closedir(d);
}

/* Removes the directory when the process exits. */
static void remove_dir(void)
{
	empty_ledger_dir();
	rmdir(F.ledger_dir);
	rmdir(F.dir);
}

void harness_init(const char *name)
{
	const struct shm_caps caps = { 4, 8, 32, 16, 64, 32, 8, 16, 32, 64, 2 };
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";

	H.name = name;
	rcu_register_thread();
	clock_start(1);
	CHECK(uv_loop_init(&F.loop) == 0);
	snprintf(F.dir, sizeof(F.dir), "%s/sidecard-fuzz-XXXXXX", base);
	CHECK(mkdtemp(F.dir) != NULL);
	snprintf(F.path, sizeof(F.path), "%s/state.shm", F.dir);
	snprintf(F.replay_path, sizeof(F.replay_path), "%s/replay.shm", F.dir);
	snprintf(F.ledger_dir, sizeof(F.ledger_dir), "%s/ledger", F.dir);
	atexit(remove_dir);
	H.trace = getenv("FUZZ_TRACE") != NULL;
	for (H.n_methods = 0;
	     H.n_methods < HARNESS_MAX_METHODS &&
	     (H.method_name[H.n_methods] =
	              dispatch_method_name(H.n_methods, &H.method_changes[H.n_methods]));
	     H.n_methods++)
		;
	/* a table that outgrew the harness would leave its last methods unfuzzed */
	CHECK(dispatch_method_name(H.n_methods, NULL) == NULL);
	srv_config_default(&F.cfg, F.path);
	F.sc.caps = caps;
	F.sc.set.hold_ttl_us = 1;
	F.sc.set.expiry_charges = 1;
	F.sc.set.task_max_usage = HARNESS_TASK_CAP;
	F.sc.set.alert_velocity = 4;
	msgpack_sbuffer_init(&F.req);
	msgpack_sbuffer_init(&F.resp);
	CHECK(msgpack_zone_init(&F.zone, 4096));
}

/* A fresh segment at path, its name removed once mapped. */
static struct state *fresh_state(const char *path)
{
	struct state_config sc = F.sc;
	struct state *st;
	char err[256];

	sc.path = path;
	unlink(path);
	if (state_open(&st, &sc, err, sizeof(err)) != 0) {
		fprintf(stderr, "%s: state_open: %s\n", H.name, err);
		abort();
	}
	/* mapped, the segment needs no name: an input that aborts leaves no file behind */
	unlink(path);
	return st;
}

static void dispatch_init(struct dispatch *d, struct state *st)
{
	memset(d, 0, sizeof(*d));
	CHECK(pthread_mutex_init(&d->lock, NULL) == 0);
	d->st = st;
	d->srv_cfg = &F.cfg;
	msgpack_sbuffer_init(&d->scratch);
}

static void dispatch_fini(struct dispatch *d)
{
	dispatch_alerts_free(d);
	dispatch_access_free(d);
	dispatch_replay_end(d);
	msgpack_sbuffer_destroy(&d->scratch);
	pthread_mutex_destroy(&d->lock);
}

void harness_open(void)
{
	/*
	 * Records stay in memory until the end of the input (the loop does not
	 * run before): no flush, no timer. Small segments bound the zero-filling
	 * ahead of the records and make a long input rotate.
	 */
	const struct ledger_config lc = {.dir = F.ledger_dir, .strict = 0,
	                                 .interval_ms = 3600000, .batch_bytes = (size_t)1 << 30,
	                                 .segment_bytes = 64 << 10, .now = clock_now};
	const struct ledger_scan_result tail = {.last_seq = 0};
	const struct shm *m;
	char err[256];
	unsigned n = 0;

	F.st = fresh_state(F.path);
	dispatch_init(&F.d, F.st);
	if (ledger_open(&F.ledger, &F.loop, &lc, &tail, NULL, NULL, err, sizeof(err)) != 0) {
		fprintf(stderr, "%s: ledger_open: %s\n", H.name, err);
		abort();
	}
	F.d.ledger = F.ledger;
	/* the first record, as the daemon writes it */
	dispatch_settings(&F.d, &F.sc.set);
	memset(H.agent, 0, sizeof(H.agent));
	memset(H.rule, 0, sizeof(H.rule));
	memset(H.txn, 0, sizeof(H.txn));
	H.org = 0;
	m = state_shm(F.st);
	for (size_t i = 0; i < sizeof(setup) / sizeof(setup[0]); i++) {
		setup_request(setup[i][0], setup[i][1]);
		for (uint32_t j = 0; i == 0 && j < m->hdr->org_top; j++)
			if (m->orgs[j].rec.used)
				H.org = m->orgs[j].id;
	}
	for (uint32_t i = 0; i < m->hdr->agent_top && n < 2; i++)
		if (m->agents[i].rec.used) {
			H.agent[n] = m->agents[i].id;
			H.rule[n++] = m->rules[m->agents[i].first_rule].id;
		}
	CHECK(n == 2 && H.org != 0);
}

static void ledger_closed(void *arg)
{
	*(int *)arg = 1;
}

struct replay {
	struct dispatch d;
	uint64_t records;
	char err[512];
};

static int replay_one(void *arg, const struct ledger_record *r)
{
	struct replay *rp = arg;

	rp->records++;
	return dispatch_replay(&rp->d, r, rp->err, sizeof(rp->err));
}

void harness_close(void)
{
	struct ledger_scan_result res;
	struct ledger_stats ls;
	struct replay rp;
	struct state *st;
	char err[512];
	int closed = 0, rc;

	dispatch_conn_closed(&F.d, 1, &(struct access_peer){0});
	dispatch_conn_closed(&F.d, 2, &(struct access_peer){0});
	ledger_get_stats(F.ledger, &ls);
	CHECK(ledger_failure(F.ledger) == NULL);
	ledger_close(F.ledger, ledger_closed, &closed);
	while (!closed)
		uv_run(&F.loop, UV_RUN_ONCE);
	ledger_free(F.ledger);
	F.ledger = NULL;
	/* a restart's rebuild: every record again, in order, into a fresh segment */
	st = fresh_state(F.replay_path);
	dispatch_init(&rp.d, st);
	rp.records = 0;
	rp.err[0] = '\0';
	rc = ledger_scan(F.ledger_dir, 1, 0, replay_one, &rp, &res, err, sizeof(err));
	if (rc != 0)
		fprintf(stderr, "%s: replay: %s\n", H.name, rp.err[0] ? rp.err : err);
	CHECK(rc == 0);
	CHECK(rp.records == ls.last_seq && res.last_seq == ls.last_seq);
	{
		const struct shm *live = state_shm(F.st), *again = state_shm(st);

		CHECK(live->size == again->size);
		CHECK(report_diff(live, again->base, live->hdr->org_off, "replayed segment") < 0);
	}
	dispatch_fini(&rp.d);
	state_close(st);
	empty_ledger_dir();
	dispatch_fini(&F.d);
	state_close(F.st);
	F.st = NULL;
}
