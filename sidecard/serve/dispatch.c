/*
 * dispatch.c: the method table of the protocol (PROTOCOL.md) and the path
 * of a request through it: the method's lookup, the connection's role and
 * token, an agent's scope, the commit lock, the method, its ledger record
 * and the reply; and the replay of the ledger's records at start-up. The
 * methods live in their families (dispatch_methods.h), which reach down
 * into the call-context API (call.h) only; this file reaches them through
 * the table and the alert family's three hooks. Each method reads its
 * named arguments, calls the state or the gate, and only when everything
 * that can fail has succeeded packs nil (no error) and its result; on
 * failure it packs nothing and returns the code, and dispatch_request packs
 * the error map. So a response is never half an error.
 *
 * Threads: called by the server for each request on the thread serving the
 * connection, which may be any of several workers (registered with
 * liburcu). The method, its ledger record and the copy of its result into
 * the response all run under the commit lock (d->lock); the expiries, day
 * rolls and settings that the main loop applies take it too. So however
 * many threads serve connections, the state has one writer at a time and
 * the ledger holds the changes in exactly the order they were applied,
 * which is what replay relies on. What runs outside the lock, in parallel:
 * the socket reads and writes, the framing and msgpack decoding of the
 * request (server.c) and the method lookup.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "call.h"
#include "clock.h"
#include "common.h"
#include "dispatch.h"
#include "dispatch_methods.h"
#include "gate.h"
#include "ledger_writer.h"
#include "log.h"


/*
 * Who may call a method (PROTOCOL.md, "Roles"): sets of enum access_role,
 * and ANYONE for hello, which a connection calls before it has a role.
 * An agent calls an OWN or GATE method for itself only (agent_scope).
 */
#define ANYONE 8u
#define ADMIN ACCESS_ADMIN
#define READ (ACCESS_ADMIN | ACCESS_READER)
#define OWN (ACCESS_ADMIN | ACCESS_READER | ACCESS_AGENT)
#define GATE (ACCESS_ADMIN | ACCESS_AGENT)

/* The fields each method accepts; anything else is an unknown field. */
#define FIELDS(...) ((const char *const[]){__VA_ARGS__, NULL})

static const struct method {
	const char *name;
	method_fn fn;
	const char *const *fields;
	unsigned ledger_type; /* 0: a read, not recorded */
	unsigned roles;       /* who may call it */
} methods[] = {
	{"check", m_check,
	 FIELDS("agent_id", "action", "estimated_cost", "type", "metadata", "idempotency_key",
	        "task_id"),
	 LEDGER_CHECK, GATE},
	{"report", m_report,
	 FIELDS("transaction_id", "outcome", "actual_cost", "model", "input_tokens", "output_tokens",
	        "cached_input_tokens"),
	 LEDGER_REPORT, GATE},
	{"pricing.set", m_pricing_set,
	 FIELDS("model", "input", "output", "cached_input", "effective_from"), LEDGER_PRICING_SET,
	 ADMIN},
	{"pricing.list", m_pricing_list, FIELDS("model"), 0, OWN},
	{"pricing.get", m_pricing_get, FIELDS("model", "at"), 0, OWN},
	{"hello", m_hello, FIELDS("token"), 0, OWN | ANYONE},
	{"wallets.get", m_wallets_get, FIELDS("agent_id", "org_id"), 0, OWN},
	{"wallets.transfer", m_wallets_transfer,
	 FIELDS("from_agent_id", "from_org_id", "to_agent_id", "to_org_id", "amount", "reason"),
	 LEDGER_WALLETS_TRANSFER, ADMIN},
	{"wallets.adjust", m_wallets_adjust, FIELDS("agent_id", "org_id", "amount", "reason"),
	 LEDGER_WALLETS_ADJUST, ADMIN},
	{"wallets.update", m_wallets_update,
	 FIELDS("agent_id", "org_id", WALLET_FIELDS, "debt", "period"), LEDGER_WALLETS_UPDATE, ADMIN},
	{"wallets.carve", m_wallets_carve, FIELDS("agent_id", "amount", "reason"),
	 LEDGER_WALLETS_CARVE, ADMIN},
	{"wallets.release", m_wallets_release, FIELDS("agent_id"), LEDGER_WALLETS_RELEASE, ADMIN},
	{"spend", m_spend, FIELDS("agent_id", "org_id"), 0, OWN},
	{"orgs.create", m_orgs_create, FIELDS("name", "timezone"), LEDGER_ORGS_CREATE, ADMIN},
	{"orgs.update", m_orgs_update, FIELDS("org_id", "timezone"), LEDGER_ORGS_UPDATE, ADMIN},
	{"orgs.list", m_orgs_list, FIELDS(NULL), 0, READ},
	{"agents.create", m_agents_create, FIELDS("org", "name", "priority", "wallet", "rules"),
	 LEDGER_AGENTS_CREATE, ADMIN},
	{"agents.get", m_agents_get, FIELDS("agent_id"), 0, OWN},
	{"agents.list", m_agents_list, FIELDS("org"), 0, READ},
	{"agents.update", m_agents_update, FIELDS("agent_id", "name", "priority", "status"),
	 LEDGER_AGENTS_UPDATE, ADMIN},
	{"agents.delete", m_agents_delete, FIELDS("agent_id"), LEDGER_AGENTS_DELETE, ADMIN},
	{"agents.rotate_token", m_agents_rotate_token, FIELDS("agent_id"), LEDGER_AGENTS_ROTATE_TOKEN,
	 ADMIN},
	{"rules.add", m_rules_add, FIELDS("agent_id", RULE_FIELDS), LEDGER_RULES_ADD, ADMIN},
	{"rules.list", m_rules_list, FIELDS("agent_id"), 0, OWN},
	{"rules.update", m_rules_update, FIELDS("agent_id", "rule_id", RULE_FIELDS),
	 LEDGER_RULES_UPDATE, ADMIN},
	{"rules.remove", m_rules_remove, FIELDS("agent_id", "rule_id"), LEDGER_RULES_REMOVE, ADMIN},
	{"transactions.list", m_transactions_list,
	 FIELDS("agent_id", "org_id", "status", "risk_level", "since", "until", "before", "limit"), 0,
	 OWN},
	{"stats", m_stats, FIELDS(NULL), 0, READ},
	{"score", m_score, FIELDS("agent_id"), 0, OWN},
	{"agents.events", m_agents_events, FIELDS("agent_id", "limit"), 0, OWN},
	{"transactions.summary", m_transactions_summary,
	 FIELDS("agent_id", "org_id", "since", "until"), 0, OWN},
	{"agents.top", m_agents_top, FIELDS("org_id", "since", "until", "limit"), 0, READ},
	{"fleet", m_fleet, FIELDS(NULL), 0, READ},
	{"tasks.usage", m_tasks_usage, FIELDS("task_id", "org_id"), 0, READ},
	{"alerts.list", m_alerts_list,
	 FIELDS("agent_id", "org_id", "kind", "severity", "since", "before", "limit"), 0, OWN},
	{"alerts.subscribe", m_alerts_subscribe, FIELDS(NULL), 0, OWN},
	{"alerts.unsubscribe", m_alerts_unsubscribe, FIELDS(NULL), 0, OWN},
	{"tokens.create", m_tokens_create, FIELDS("role", "name"), LEDGER_TOKENS_CREATE, ADMIN},
	{"tokens.list", m_tokens_list, FIELDS(NULL), 0, ADMIN},
	{"tokens.revoke", m_tokens_revoke, FIELDS("token_id"), LEDGER_TOKENS_REVOKE, ADMIN},
};

static const struct method *find_method(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		if (strlen(methods[i].name) == len && memcmp(methods[i].name, name, len) == 0)
			return &methods[i];
	return NULL;
}

const char *dispatch_method_name(unsigned i, int *changes)
{
	if (i >= sizeof(methods) / sizeof(methods[0]))
		return NULL;
	if (changes)
		*changes = methods[i].ledger_type != 0;
	return methods[i].name;
}

unsigned dispatch_method_roles(unsigned i)
{
	return i < sizeof(methods) / sizeof(methods[0]) ? methods[i].roles & ~ANYONE : 0;
}

const char *const *dispatch_method_fields(unsigned i)
{
	return i < sizeof(methods) / sizeof(methods[0]) ? methods[i].fields : NULL;
}

/*
 * Bytes of the msgpack array or map header at p (len bytes): 1, 3 or 5,
 * or 0 if p does not start with one of the kind (0x90 array, 0x80 map).
 */
static size_t head_len(const char *p, size_t len, unsigned kind)
{
	unsigned char b = len ? (unsigned char)p[0] : 0;

	if ((b & 0xf0) == kind)
		return 1;
	if (b == (kind == 0x90 ? 0xdc : 0xde))
		return len >= 3 ? 3 : 0;
	if (b == (kind == 0x90 ? 0xdd : 0xdf))
		return len >= 5 ? 5 : 0;
	return 0;
}

/*
 * The params of an agent's request with its own agent_id added (agent_scope):
 * the client's bytes of its fields, copied, behind a map header counting
 * one more and followed by the agent_id, which packs the same as packing
 * the rebuilt object, at the cost of a copy.
 */
static void pack_own_params(msgpack_packer *lp, const struct srv_request *req,
                            const struct call *c)
{
	const char *p = req->params_raw;
	size_t len = req->params_raw_len, a = p ? head_len(p, len, 0x90) : 0;
	size_t m = a ? head_len(p + a, len - a, 0x80) : 0;
	const msgpack_object *map = &c->own_params[0];

	if (!m) {
		msgpack_pack_object(lp, c->own_params[1]);
		return;
	}
	msgpack_pack_array(lp, 1);
	msgpack_pack_map(lp, map->via.map.size);
	lp->callback(lp->data, p + a + m, len - a - m);
	msgpack_pack_object(lp, map->via.map.ptr[map->via.map.size - 1].key);
	msgpack_pack_object(lp, map->via.map.ptr[map->via.map.size - 1].val);
}

/* A packer's writer into a peer's actor buffer. */
static int actor_write(void *data, const char *buf, size_t len)
{
	struct access_peer *p = data;

	SC_ASSERT(p->actor_len + len <= sizeof(p->actor));
	memcpy(p->actor + p->actor_len, buf, len);
	p->actor_len = (uint8_t)(p->actor_len + len);
	return 0;
}

/*
 * The actor of a change, as its ledger record keeps it. Packed when first
 * needed and kept until the role changes: a check's record then costs one
 * copy of it, not the packing of a map of four.
 */
static void pack_actor(msgpack_packer *pk, struct access_peer *p)
{
	if (!p->actor_len) {
		msgpack_packer ap;

		msgpack_packer_init(&ap, p, actor_write);
		msgpack_pack_map(&ap, p->by_token ? 4 : 3);
		proto_pack_key_str(&ap, "role", access_role_name(p->role));
		if (p->by_token)
			proto_pack_key_u64(&ap, p->role == ACCESS_AGENT ? "agent_id" : "token_id",
			                   p->id);
		proto_pack_key_u64(&ap, "uid", p->uid);
		proto_pack_key_u64(&ap, "pid", p->pid);
	}
	pk->callback(pk->data, p->actor, p->actor_len);
}

/*
 * Appends the record of a change: [params, result] at its time. params are
 * copied as the client sent them when the server kept their bytes, which
 * costs a memcpy where packing the unpacked objects again walks them all.
 */
static uint64_t record(struct dispatch *d, unsigned type, int64_t now,
                       const struct srv_request *req, const struct call *c)
{
	msgpack_packer *lp = ledger_begin(d->ledger, type, now);
	uint64_t seq;

	msgpack_pack_array(lp, req->peer ? 3 : 2);
	if (req->peer)
		pack_actor(lp, req->peer);
	if (c->own)
		pack_own_params(lp, req, c);
	else if (req->params_raw)
		lp->callback(lp->data, req->params_raw, req->params_raw_len);
	else if (req->params)
		msgpack_pack_object(lp, *req->params);
	else
		msgpack_pack_array(lp, 0);
	/* the result without the nil error packed before it */
	lp->callback(lp->data, d->scratch.data + 1, d->scratch.size - 1);
	seq = ledger_commit(d->ledger);
	state_set_applied(d->st, seq);
	return seq;
}

#define SEGMENT_LOST                                                                       \
	"state segment: another process cut it short; the daemon is stopping, and its next "  \
	"start rebuilds the state from the ledger"

static const char *const other_fields[] = {"org_id", "org", "from_agent_id", "from_org_id",
                                           "to_agent_id", "to_org_id"};
#define N_OTHERS (sizeof(other_fields) / sizeof(other_fields[0]))
#define N_METHODS (sizeof(methods) / sizeof(methods[0]))
#define SCOPE_AGENT_ID (1u << N_OTHERS) /* the method takes an agent_id */

/*
 * Per method, which of other_fields it takes (bit i) and whether it takes
 * an agent_id: found once, so that an agent's check does not compare
 * field names.
 */
static unsigned scope_of[N_METHODS];
static pthread_once_t scope_once = PTHREAD_ONCE_INIT;

static void find_scopes(void)
{
	for (size_t m = 0; m < N_METHODS; m++)
		for (const char *const *f = methods[m].fields; *f; f++) {
			for (size_t i = 0; i < N_OTHERS; i++)
				if (strcmp(*f, other_fields[i]) == 0)
					scope_of[m] |= 1u << i;
			if (strcmp(*f, "agent_id") == 0)
				scope_of[m] |= SCOPE_AGENT_ID;
		}
}

/*
 * An agent's request names only itself: an agent_id other than its own,
 * or any org, is permission_denied, and a method that takes an agent_id
 * gets the agent's own when the request left it out (in c->own_params,
 * which the ledger then records), so a listing is the agent's alone.
 */
static int agent_scope(struct call *c, const struct method *m, struct proto_args *args,
                       const msgpack_object *params)
{
	uint64_t own = c->peer->id, id;
	const msgpack_object *o;
	unsigned scope;
	int present = 0, rc = 0;

	pthread_once(&scope_once, find_scopes);
	scope = scope_of[m - methods];
	for (size_t i = 0; i < N_OTHERS; i++)
		if ((scope & 1u << i) &&
		    (rc = proto_arg_obj(args, other_fields[i], 0, -1, &o, &present)) == 0 && present)
			return call_fail(c, SC_EDENIED,
			                 "%s: %s: this connection acts for agent %llu only", m->name,
			                 other_fields[i], (unsigned long long)own);
	if (rc != 0 || !(scope & SCOPE_AGENT_ID))
		return rc;
	if ((rc = proto_arg_u64(args, "agent_id", 0, &id, &present)))
		return rc;
	if (present && id != own)
		return call_fail(c, SC_EDENIED,
		                 "%s: agent_id: this connection acts for agent %llu, not %llu", m->name,
		                 (unsigned long long)own, (unsigned long long)id);
	if (present)
		return 0;
	/* params were checked by proto_args_init: nil, [] or [map] */
	uint32_t n = params && params->via.array.size ? params->via.array.ptr[0].via.map.size : 0;

	if (n)
		memcpy(c->own_kv, params->via.array.ptr[0].via.map.ptr, n * sizeof(c->own_kv[0]));
	c->own_kv[n].key = (msgpack_object){.type = MSGPACK_OBJECT_STR,
	                                    .via.str = {.size = 8, .ptr = "agent_id"}};
	c->own_kv[n].val = (msgpack_object){.type = MSGPACK_OBJECT_POSITIVE_INTEGER, .via.u64 = own};
	c->own_params[0] = (msgpack_object){.type = MSGPACK_OBJECT_MAP,
	                                    .via.map = {.size = n + 1, .ptr = c->own_kv}};
	c->own_params[1] = (msgpack_object){.type = MSGPACK_OBJECT_ARRAY,
	                                    .via.array = {.size = 1, .ptr = c->own_params}};
	if ((rc = proto_args_init(args, &c->own_params[1], c->err, sizeof(c->err))) == 0 &&
	    (rc = proto_args_expect(args, m->fields)) == 0)
		c->own = 1;
	return rc;
}

/* Runs a method; its result (after a nil error) is left in d->scratch. */
static int run(struct dispatch *d, const struct method *m, const struct srv_request *req,
               int64_t now, struct call *c)
{
	struct proto_args args;
	msgpack_packer spk;
	int rc;

	d->scratch.size = 0;
	msgpack_packer_init(&spk, &d->scratch, msgpack_sbuffer_write);
	*c = (struct call){.d = d, .st = d->st, .m = state_shm(d->st), .a = &args, .pk = &spk,
	                   .now = now, .conn_id = req->conn_id, .peer = req->peer};
	if ((rc = proto_args_init(&args, req->params, c->err, sizeof(c->err))) == 0 &&
	    (rc = proto_args_expect(&args, m->fields)) == 0 &&
	    (!c->peer || c->peer->role != ACCESS_AGENT ||
	     (rc = agent_scope(c, m, &args, req->params)) == 0))
		rc = m->fn(c);
	return rc;
}

/*
 * Whether the connection may call m: 0, or permission_denied with the role
 * it would need in c->err. A connection that has not said who it is may
 * call hello only; one on the agent socket is closed if it tries anything
 * else (it is not the client that socket is for).
 */
static int role_allows(const struct method *m, struct access_peer *p, struct call *c)
{
	unsigned have = p->role ? p->role : ANYONE;

	if (m->roles & have)
		return 0;
	if (p->agent_socket && p->role == ACCESS_NONE)
		p->close = 1;
	if (p->role == ACCESS_AGENT)
		return call_fail(c, SC_EDENIED, "%s: needs role %s; this connection is agent %llu",
		                 m->name, access_roles_needed(m->roles & ~ANYONE & ~ACCESS_AGENT),
		                 (unsigned long long)p->id);
	return call_fail(c, SC_EDENIED, "%s: needs role %s; this connection is %s%s", m->name,
	                 access_roles_needed(m->roles & ~ANYONE), access_role_name(p->role),
	                 p->role == ACCESS_NONE ? " (call hello with a token first)" : "");
}

static unsigned clock_change(struct dispatch *d, unsigned type,
                             unsigned (*apply)(struct state *st, int64_t now), int64_t now);

/*
 * A step seen since the last change is applied and recorded first (a
 * LEDGER_CLOCK record), so that no change sees the new time before the
 * state took the step; a replay applies it at the same point.
 */
int64_t dispatch_time(struct dispatch *d)
{
	struct shm *shm = state_shm(d->st);
	int64_t step, now = clock_now_step(&step);

	if (step == 0)
		return now;
	shm_change_begin(shm);
	gate_clock_step(d->st, step, now);
	if (d->ledger) {
		msgpack_packer *lp = ledger_begin(d->ledger, LEDGER_CLOCK, now);

		msgpack_pack_array(lp, 1);
		msgpack_pack_int64(lp, step);
		state_set_applied(d->st, ledger_commit(d->ledger));
	}
	shm_change_end(shm);
	d->steps++;
	/* the timer waits real time for deadlines the step moved: re-armed */
	if (d->hold_placed)
		d->hold_placed(d->hold_placed_arg);
	return now;
}

/* The value of d->taken when this thread last released the lock in a request. */
static __thread uint64_t released_at;

/*
 * The commit lock for a request. glibc's mutex is not fair: a worker that
 * releases it and comes back for its next pipelined request takes it again
 * before a waiting worker, woken by the release, is even running, so one
 * connection's burst could hold every other worker's clients off for as
 * long as it lasts (the loop's turns, server.c, only share one worker).
 * So a thread that finds another waiting and nobody having taken the lock
 * since its own release lets the waiter go first, waiting for it at most
 * a few hundred microseconds. With one loop there is no other thread.
 */
static void request_lock(struct dispatch *d)
{
	if (!d->threaded) {
		pthread_mutex_lock(&d->lock);
		return;
	}
	for (int i = 0; i < 200 && __atomic_load_n(&d->waiting, __ATOMIC_ACQUIRE) &&
	                __atomic_load_n(&d->taken, __ATOMIC_ACQUIRE) == released_at;
	     i++)
		sched_yield();
	if (pthread_mutex_trylock(&d->lock) != 0) {
		__atomic_add_fetch(&d->waiting, 1, __ATOMIC_ACQ_REL);
		pthread_mutex_lock(&d->lock);
		__atomic_sub_fetch(&d->waiting, 1, __ATOMIC_ACQ_REL);
	}
	__atomic_add_fetch(&d->taken, 1, __ATOMIC_RELEASE);
}

static void request_unlock(struct dispatch *d)
{
	if (d->threaded)
		released_at = __atomic_load_n(&d->taken, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&d->lock);
}

/*
 * Under the commit lock: whether the token a connection presented (if any)
 * still stands. It is looked at again only when something that can end one
 * happened since it was last found standing (dispatch.token_epoch).
 */
static int token_stands(struct dispatch *d, struct access_peer *p)
{
	if (!p || !p->by_token || p->epoch == d->token_epoch + 1)
		return 1;
	if (!call_peer_valid(d, p))
		return 0;
	p->epoch = d->token_epoch + 1;
	return 1;
}

uint64_t dispatch_request(void *ctx, const struct srv_request *req, msgpack_packer *pk)
{
	struct dispatch *d = ctx;
	const struct method *m = find_method(req->method, req->method_len);
	struct shm *shm = state_shm(d->st);
	const char *refused;
	uint64_t seq = 0;
	struct call c;
	int rc;

	c.err[0] = '\0';
	c.secret_at = 0;
	if (!m) {
		rc = call_fail(&c, SC_EUNSUPPORTED, "unknown method '%.*s'",
		           (int)(req->method_len > 64 ? 64 : req->method_len), req->method);
		goto fail;
	}
	if (req->peer && (rc = role_allows(m, req->peer, &c)) != 0)
		goto fail;
	request_lock(d);
	if (!token_stands(d, req->peer)) {
		/* back to its credentials' role: on the agent socket, none, and closed below */
		call_peer_closed(d, req->peer);
		rc = call_fail(&c, SC_EDENIED,
		               "token: revoked or replaced since this connection presented it; hello "
		               "again with the current token");
	} else if (d->segment_lost) {
		rc = call_fail(&c, SC_EUNAVAILABLE, "%s", SEGMENT_LOST);
	} else if (m->ledger_type && d->ledger && (refused = ledger_failure(d->ledger))) {
		rc = call_fail(&c, SC_EUNAVAILABLE, "%s", refused);
	} else {
		/* read under the lock, so the ledger's times follow its order */
		int64_t now = m->ledger_type ? dispatch_time(d) : clock_now();

		/* a new day begins before the change that sees it */
		if (m->ledger_type && now >= gate_next_roll(d->st))
			clock_change(d, LEDGER_ROLL, gate_roll, now);
		if (m->ledger_type)
			shm_change_begin(shm);
		rc = run(d, m, req, now, &c);
		if (c.rebound)
			dispatch_alerts_rebind(d, req->conn_id, req->peer);
		if (rc == 0 && m->ledger_type && !c.replayed && d->ledger)
			seq = record(d, m->ledger_type, c.now, req, &c);
		if (m->ledger_type)
			shm_change_end(shm);
		if (m->ledger_type && d->alerts_raised && dispatch_alerts_pending(d))
			d->alerts_raised(d->alerts_raised_arg);
	}
	if (rc == 0) {
		if (c.secret_at) {
			/* the reply shows the token where the record keeps its hash */
			pk->callback(pk->data, d->scratch.data, c.secret_at);
			proto_pack_key_str(pk, "token", c.secret);
			access_wipe(c.secret, sizeof(c.secret));
		} else {
			pk->callback(pk->data, d->scratch.data, d->scratch.size);
		}
		request_unlock(d);
		return d->strict ? seq : 0;
	}
	request_unlock(d);
	if (req->peer && req->peer->agent_socket && req->peer->role == ACCESS_NONE)
		req->peer->close = 1;
fail:
	proto_pack_error(pk, rc, c.err[0] ? c.err : NULL);
	msgpack_pack_nil(pk);
	return 0;
}

void dispatch_conn_closed(void *ctx, uint64_t conn_id, const struct access_peer *peer)
{
	struct dispatch *d = ctx;
	struct access_peer p = *peer;

	pthread_mutex_lock(&d->lock);
	dispatch_alerts_forget(d, conn_id);
	call_peer_closed(d, &p);
	pthread_mutex_unlock(&d->lock);
}

/*
 * Applies a change the clock makes (expiries, a new day) at now and, if it
 * changed anything, records it as an empty record of that type: a replay
 * applies the same function at the record's time. Under the commit lock.
 */
static unsigned clock_change(struct dispatch *d, unsigned type,
                             unsigned (*apply)(struct state *st, int64_t now), int64_t now)
{
	struct shm *shm = state_shm(d->st);
	unsigned n;

	if (d->segment_lost)
		return 0;
	shm_change_begin(shm);
	n = apply(d->st, now);
	if (n && d->ledger) {
		msgpack_pack_array(ledger_begin(d->ledger, type, now), 0);
		state_set_applied(d->st, ledger_commit(d->ledger));
	}
	shm_change_end(shm);
	return n;
}

unsigned dispatch_expire(struct dispatch *d)
{
	unsigned n;
	int64_t now;

	pthread_mutex_lock(&d->lock);
	now = dispatch_time(d);
	/* a roll that expires nothing is still a change: recorded on its own */
	clock_change(d, LEDGER_ROLL, gate_roll, now);
	n = clock_change(d, LEDGER_EXPIRE, gate_expire, now);
	pthread_mutex_unlock(&d->lock);
	return n;
}

void dispatch_settings(struct dispatch *d, const struct state_settings *set)
{
	const struct shm_header *h = state_shm(d->st)->hdr;
	struct shm *shm = state_shm(d->st);
	msgpack_packer *lp;
	int64_t now;

	pthread_mutex_lock(&d->lock);
	now = dispatch_time(d);
	shm_change_begin(shm);
	state_set_settings(d->st, set);
	if (d->ledger) {
		lp = ledger_begin(d->ledger, LEDGER_SETTINGS, now);
		msgpack_pack_map(lp, 8);
		proto_pack_key_i64(lp, "task_max_usage", set->task_max_usage);
		proto_pack_key_u64(lp, "max_holds_per_agent", set->max_holds_per_agent);
		proto_pack_key_u64(lp, "max_holds_per_org", set->max_holds_per_org);
		proto_pack_key_i64(lp, "gate", GATE_VERSION);
		proto_pack_key_i64(lp, "hold_ttl_us", set->hold_ttl_us);
		proto_pack_key_bool(lp, "expiry_charges", set->expiry_charges);
		proto_pack_key_i64(lp, "alert_velocity", set->alert_velocity);
		proto_pack_cstr(lp, "capacity");
		msgpack_pack_map(lp, 11);
		proto_pack_key_u64(lp, "orgs", h->org_cap);
		proto_pack_key_u64(lp, "agents", h->agent_cap);
		proto_pack_key_u64(lp, "rules", h->rule_cap);
		proto_pack_key_u64(lp, "holds", h->hold_cap);
		proto_pack_key_u64(lp, "history", h->txn_cap);
		proto_pack_key_u64(lp, "events", h->event_cap);
		proto_pack_key_u64(lp, "tasks", h->task_cap);
		proto_pack_key_u64(lp, "prices", h->price_cap);
		proto_pack_key_u64(lp, "alerts", h->alert_cap);
		proto_pack_key_u64(lp, "rule_texts", h->text_cap);
		proto_pack_key_u64(lp, "keys_per_agent", h->keys_per_agent);
		state_set_applied(d->st, ledger_commit(d->ledger));
	}
	shm_change_end(shm);
	pthread_mutex_unlock(&d->lock);
}

/* ------------------------------------------------------------- replay */

static int replay_settings(struct dispatch *d, const msgpack_object *body, char *err,
                           size_t errlen)
{
	struct proto_args a;
	struct state_settings set;
	int64_t version, per_agent, per_org;
	int rc;
	const msgpack_object *cap;

	if ((rc = proto_args_map(&a, body, err, errlen)) ||
	    (rc = proto_arg_int(&a, "gate", 1, 1, INT64_MAX, &version, NULL)))
		return rc;
	/* before its fields: an older record lacks the newer ones, and the version says why */
	if (version != GATE_VERSION) {
		sc_errorf(err, errlen,
		          "the ledger was written by gate version %lld and this daemon implements "
		          "version %d: its records cannot be replayed (docs/DESIGN.md, \"Upgrades\")",
		          (long long)version, GATE_VERSION);
		return SC_EUNSUPPORTED;
	}
	if ((rc = proto_arg_int(&a, "hold_ttl_us", 1, 1, INT64_MAX, &set.hold_ttl_us, NULL)) ||
	    (rc = proto_arg_int(&a, "task_max_usage", 1, 0, INT64_MAX, &set.task_max_usage, NULL)) ||
	    (rc = proto_arg_int(&a, "alert_velocity", 1, 0, INT64_MAX, &set.alert_velocity, NULL)) ||
	    (rc = proto_arg_bool(&a, "expiry_charges", 1, &set.expiry_charges, NULL)) ||
	    (rc = proto_arg_int(&a, "max_holds_per_agent", 1, 0, UINT32_MAX, &per_agent, NULL)) ||
	    (rc = proto_arg_int(&a, "max_holds_per_org", 1, 0, UINT32_MAX, &per_org, NULL)) ||
	    (rc = proto_arg_obj(&a, "capacity", 1, MSGPACK_OBJECT_MAP, &cap, NULL)))
		return rc;
	set.max_holds_per_agent = (uint32_t)per_agent;
	set.max_holds_per_org = (uint32_t)per_org;
	state_set_settings(d->st, &set);
	return 0;
}

int dispatch_settings_caps(const char *body, size_t len, struct shm_caps *caps)
{
	static const char *const keys[] = {"orgs",   "agents", "rules",  "holds",
	                                   "history", "events", "tasks",  "prices",
	                                   "alerts", "rule_texts", "keys_per_agent"};
	uint32_t *fields[] = {&caps->orgs,   &caps->agents, &caps->rules,
	                      &caps->holds,  &caps->txns,   &caps->events,
	                      &caps->tasks,  &caps->prices, &caps->alerts,
	                      &caps->texts,  &caps->keys_per_agent};
	const msgpack_object *cap;
	msgpack_unpacked u;
	struct proto_args a, sub;
	char err[ERRLEN];
	size_t off = 0;
	int rc = SC_EINVAL;

	msgpack_unpacked_init(&u);
	if (msgpack_unpack_next(&u, body, len, &off) == MSGPACK_UNPACK_SUCCESS) {
		rc = proto_args_map(&a, &u.data, err, sizeof(err));
		if (rc == 0)
			rc = proto_arg_obj(&a, "capacity", 1, MSGPACK_OBJECT_MAP, &cap, NULL);
		if (rc == 0)
			rc = proto_args_sub(&a, cap, "capacity", &sub);
		for (size_t i = 0; rc == 0 && i < sizeof(keys) / sizeof(keys[0]); i++) {
			int kept = fields[i] == &caps->keys_per_agent;
			/* rules is parsed before rule_texts, its default; keys_per_agent may be 0 */
			int64_t v = kept ? 0 : caps->rules;

			/*
			 * rule_texts came with gate version 3 and keys_per_agent with 4;
			 * older ledgers are refused later, by version
			 */
			rc = proto_arg_int(&sub, keys[i], fields[i] != &caps->texts && !kept, !kept,
			                   UINT32_MAX, &v, NULL);
			*fields[i] = (uint32_t)v;
		}
	}
	msgpack_unpacked_destroy(&u);
	return rc;
}

/* The method of each record type, found once (loop thread). */
static const struct method *method_of_type(unsigned type)
{
	static const struct method *by_type[LEDGER_TYPE_END];
	static int filled;

	if (!filled) {
		for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
			if (methods[i].ledger_type && methods[i].ledger_type < LEDGER_TYPE_END)
				by_type[methods[i].ledger_type] = &methods[i];
		filled = 1;
	}
	return type < LEDGER_TYPE_END ? by_type[type] : NULL;
}

/*
 * A method's result on replay is compared with the recorded one while it is
 * packed, instead of being copied into a buffer and compared afterwards:
 * the packer's writes go to same_write, which checks them against the
 * expected bytes, the nil error (0xc0) followed by the recorded result.
 */
struct replay_result {
	const char *want; /* the recorded result */
	size_t len, pos;  /* its length; bytes matched so far, the nil error included */
	int differs;
	size_t diff_at;   /* when it differs: offset in want of the first byte that does */
};

static int same_write(void *data, const char *buf, size_t len)
{
	struct replay_result *w = data;

	if (w->differs || len == 0)
		return 0;
	if (w->pos == 0) {
		if ((unsigned char)buf[0] != 0xc0) {
			w->differs = 1;
			return 0;
		}
		w->pos = 1;
		buf++;
		len--;
	}
	if (len > w->len + 1 - w->pos || memcmp(w->want + w->pos - 1, buf, len) != 0) {
		size_t k = 0;

		while (k < len && w->pos - 1 + k < w->len && w->want[w->pos - 1 + k] == buf[k])
			k++;
		w->differs = 1;
		w->diff_at = w->pos - 1 + k;
	} else {
		w->pos += len;
	}
	return 0;
}

/*
 * Names the field of a recorded result (a map) whose bytes hold offset at,
 * for the error of a record that replayed differently: "the field
 * \"balance\"", or "the result" when it is not a map field.
 */
static void differing_field(const char *want, size_t len, size_t at, char *out, size_t outlen)
{
	const unsigned char *p = (const unsigned char *)want;
	msgpack_unpacked u;
	size_t off, n;

	snprintf(out, outlen, "the result");
	if (len == 0)
		return;
	if ((p[0] & 0xf0) == 0x80) {
		n = p[0] & 0x0f;
		off = 1;
	} else if (p[0] == 0xde && len >= 3) {
		n = (size_t)p[1] << 8 | p[2];
		off = 3;
	} else {
		return;
	}
	msgpack_unpacked_init(&u);
	for (size_t i = 0; i < n; i++) {
		char key[64];

		if (msgpack_unpack_next(&u, want, len, &off) != MSGPACK_UNPACK_SUCCESS ||
		    u.data.type != MSGPACK_OBJECT_STR)
			break;
		snprintf(key, sizeof(key), "%.*s", (int)u.data.via.str.size, u.data.via.str.ptr);
		if (at < off) { /* the key itself differs */
			snprintf(out, outlen, "the key \"%s\"", key);
			break;
		}
		if (msgpack_unpack_next(&u, want, len, &off) != MSGPACK_UNPACK_SUCCESS)
			break;
		if (at < off) {
			snprintf(out, outlen, "the field \"%s\"", key);
			break;
		}
	}
	msgpack_unpacked_destroy(&u);
}

/*
 * Runs a method record again: run() without the check of the fields'
 * names, which the record passed when it was written (its bytes are the
 * request's, under the record's checksum), and with same_write as the
 * result's writer. An org's time zone was resolved by the live daemon: the
 * replay reads the rule from the recorded result instead.
 */
static int replay_run(struct dispatch *d, const struct method *m, const struct ledger_record *r,
                      const msgpack_object *params, size_t off, struct call *c,
                      struct replay_result *w)
{
	struct proto_args args;
	msgpack_packer spk;
	msgpack_unpacked res;
	size_t roff = 0;
	/* a time zone's rule, or a token's hash, comes from the recorded result */
	int tz = r->type == LEDGER_ORGS_CREATE || r->type == LEDGER_ORGS_UPDATE ||
	         r->type == LEDGER_AGENTS_CREATE || r->type == LEDGER_AGENTS_ROTATE_TOKEN ||
	         r->type == LEDGER_TOKENS_CREATE;
	int rc;

	*w = (struct replay_result){.want = r->body + 1 + off, .len = r->body_len - 1 - off};
	msgpack_packer_init(&spk, w, same_write);
	*c = (struct call){.d = d, .st = d->st, .m = state_shm(d->st), .a = &args, .pk = &spk,
	                   .now = r->time, .replaying = 1};
	if (tz) {
		msgpack_unpacked_init(&res);
		if (msgpack_unpack_next(&res, w->want, w->len, &roff) == MSGPACK_UNPACK_SUCCESS)
			d->recorded = &res.data;
	}
	/*
	 * The field-name check stays: a record written by a newer daemon with
	 * a field this one does not know is refused by name, and the check
	 * builds the argument index the getters use.
	 */
	if ((rc = proto_args_init(&args, params, c->err, sizeof(c->err))) == 0 &&
	    (rc = proto_args_expect(&args, m->fields)) == 0)
		rc = m->fn(c);
	if (tz) {
		d->recorded = NULL;
		msgpack_unpacked_destroy(&res);
	}
	return rc;
}

/* A clock record: [step], applied at the record's time. */
static int replay_clock(struct dispatch *d, const struct ledger_record *r)
{
	msgpack_unpacked u;
	size_t off = 0;
	int rc = SC_EINVAL;

	msgpack_unpacked_init(&u);
	if (msgpack_unpack_next(&u, r->body, r->body_len, &off) == MSGPACK_UNPACK_SUCCESS &&
	    off == r->body_len && u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size == 1) {
		const msgpack_object *o = &u.data.via.array.ptr[0];

		if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ||
		    (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX)) {
			gate_clock_step(d->st, o->via.i64, r->time);
			rc = 0;
		}
	}
	msgpack_unpacked_destroy(&u);
	return rc;
}

/*
 * The record's objects live in one zone kept from one record to the next
 * and cleared before each: a replay of millions of records allocates
 * nothing per record for decoding.
 */
int dispatch_replay(struct dispatch *d, const struct ledger_record *r, char *err, size_t errlen)
{
	const struct method *m = method_of_type(r->type);
	msgpack_unpack_return ur = MSGPACK_UNPACK_PARSE_ERROR;
	msgpack_object params;
	struct replay_result w;
	size_t off = 0;
	struct call c;
	int rc = 0;

	if (r->type == LEDGER_EXPIRE) {
		gate_expire(d->st, r->time);
	} else if (r->type == LEDGER_ROLL) {
		gate_roll(d->st, r->time);
	} else if (r->type == LEDGER_CLOCK) {
		if ((rc = replay_clock(d, r)) != 0)
			sc_errorf(err, errlen, "record %llu: a clock record's body is not [step]",
			          (unsigned long long)r->seq);
	} else if (!d->replay_zone && !(d->replay_zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE))) {
		sc_errorf(err, errlen, "record %llu: out of memory", (unsigned long long)r->seq);
		rc = -ENOMEM;
	} else if (msgpack_zone_clear(d->replay_zone), r->type == LEDGER_SETTINGS) {
		if (msgpack_unpack(r->body, r->body_len, &off, d->replay_zone, &params) !=
		    MSGPACK_UNPACK_SUCCESS)
			rc = SC_EINVAL;
		else
			rc = replay_settings(d, &params, err, errlen);
	} else if (!m || r->body_len < 1 ||
	           ((unsigned char)r->body[0] != 0x92 && (unsigned char)r->body[0] != 0x93) ||
	           ((unsigned char)r->body[0] == 0x93 &&
	            msgpack_unpack(r->body + 1, r->body_len - 1, &off, d->replay_zone, &params) !=
	                MSGPACK_UNPACK_EXTRA_BYTES) ||
	           ((ur = msgpack_unpack(r->body + 1, r->body_len - 1, &off, d->replay_zone,
	                                 &params)) != MSGPACK_UNPACK_SUCCESS &&
	            ur != MSGPACK_UNPACK_EXTRA_BYTES)) {
		sc_errorf(err, errlen, "record %llu: not a %s record this daemon can apply",
		          (unsigned long long)r->seq, ledger_type_name(r->type));
		rc = SC_EINVAL;
	} else if ((rc = replay_run(d, m, r, &params, off, &c, &w)) != 0) {
		sc_errorf(err, errlen, "record %llu (%s) failed on replay: %s",
		          (unsigned long long)r->seq, m->name, c.err);
	} else if (w.differs || w.pos != w.len + 1) {
		char field[96];

		differing_field(w.want, w.len, w.differs ? w.diff_at : w.pos - 1, field,
		                sizeof(field));
		sc_errorf(err, errlen, "record %llu (%s) replayed to a different result (%s differs)",
		          (unsigned long long)r->seq, m->name, field);
		rc = SC_EINTERNAL;
	}
	if (rc == 0)
		state_set_applied(d->st, r->seq);
	return rc;
}

void dispatch_replay_end(struct dispatch *d)
{
	if (d->replay_zone)
		msgpack_zone_free(d->replay_zone);
	d->replay_zone = NULL;
}
