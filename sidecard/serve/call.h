/*
 * call.h: the call a method runs in, and what every method family
 * (dispatch_*.c) uses of it: the results (call_ok, call_fail), the packers
 * of the protocol's objects, the argument readers, the listing of a ring,
 * the token a reply shows once, and the standing of a connection's token.
 * call.c implements it; it calls only the engine and the store below it.
 *
 * The layering of the dispatcher, top down:
 *
 *   dispatch.c         the method table and the request path (roles,
 *                      scope, commit lock, ledger record, replay)
 *   dispatch_*.c       the method families (dispatch_methods.h), reached
 *                      from dispatch.c through the table and the few hooks
 *                      that header names; a family never calls another
 *   call.c             this header: what the families and dispatch.c share
 *
 * A method reads its arguments, calls the state or the gate and, only once
 * nothing can fail any more, packs nil and its result (call_ok); on failure
 * it packs nothing and returns the code with a message (call_fail).
 */
#ifndef SIDECARD_CALL_H
#define SIDECARD_CALL_H

#include <msgpack.h>
#include <stdint.h>

#include "access.h"
#include "common.h"
#include "dispatch_state.h"
#include "gate.h"
#include "proto.h"
#include "state.h"

#define ERRLEN 256

struct call {
	struct dispatch *d;
	struct state *st;
	struct shm *m;
	struct proto_args *a;
	msgpack_packer *pk;
	int64_t now;
	uint64_t conn_id; /* the connection asking; 0 during a ledger replay */
	/* who asks: NULL for a caller in the daemon's process and on replay (an admin) */
	struct access_peer *peer;
	int replayed; /* the method changed nothing: an idempotent replay */
	int replaying; /* a ledger record applied again at start-up */
	/*
	 * A token made by the method (call_pack_secret): the reply carries it
	 * as "token" where the record has "token_sha256", which starts at
	 * offset secret_at of d->scratch; 0: no token.
	 */
	size_t secret_at;
	char secret[ACCESS_TOKEN_MAX + 1];
	/* an agent's request with its own agent_id added (dispatch.c, agent_scope) */
	int own;
	msgpack_object_kv own_kv[PROTO_ARGS_MAX + 1];
	msgpack_object own_params[2];
	/*
	 * hello bound the connection to a token: dispatch.c moves the
	 * connection's alert subscription to its new role (dispatch_alerts_rebind)
	 */
	int rebound;
	char err[ERRLEN];
};

typedef int (*method_fn)(struct call *c);

/* ---- results ---- */
int call_fail(struct call *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Starts a successful response: the nil error. */
msgpack_packer *call_ok(struct call *c);
void call_map(struct call *c, size_t n);
/* The wallet ref names and the org whose calendar it counts in. */
const struct shm_wallet *call_wallet(struct call *c, const struct gate_wallet_ref *ref);
const struct shm_org *call_wallet_org(struct call *c, const struct gate_wallet_ref *ref);
void pack_wallet(struct call *c, const struct gate_wallet_ref *ref);
/* A rule of agent a. */
void pack_rule(struct call *c, const struct shm_rule *r, const struct shm_agent *a);
/* The agent's rules, in creation order. */
void pack_rules(struct call *c, uint32_t agent_slot);
void pack_agent(struct call *c, uint32_t slot);
/* The agent as a map of its fields and `more` fields the caller packs after them. */
void pack_agent_map(struct call *c, uint32_t slot, unsigned more);
void pack_org(struct call *c, uint32_t slot);
void pack_txn(struct call *c, const struct shm_txn *t);
/* A key whose value is nil when v is 0 (or s is empty). */
void pack_key_opt_u64(msgpack_packer *pk, const char *key, uint64_t v);
void pack_key_opt_str(msgpack_packer *pk, const char *key, const char *s);

/* ---- arguments ---- */
int call_arg_str(struct call *c, struct proto_args *a, const char *key, int required, size_t max,
                 struct state_str *out, int *present);
/* "agent_id": an existing agent. */
int call_agent_arg(struct call *c, uint32_t *slot);
/* key: an org name or id. */
int call_org_ref_arg(struct call *c, const char *key, int required, uint32_t *slot, int *present);
/* key: an org id; optional when present is not NULL. */
int call_org_id_arg(struct call *c, const char *key, uint32_t *slot, int *present);
/* "<prefix>agent_id" or "<prefix>org_id", exactly one: a wallet. */
int call_wallet_ref_arg(struct call *c, const char *prefix, struct gate_wallet_ref *ref);
/* "reason" (required), packed as the metadata map {reason} into buf (SHM_METADATA_MAX). */
int call_reason_meta(struct call *c, uint8_t *buf, size_t *len);
/* An enum given by its word; *out is its value. */
int call_enum_arg(struct call *c, struct proto_args *a, const char *key,
                  const struct sc_names *names, int *out, int *present);
/*
 * "metadata" (optional map), packed into buf (SHM_METADATA_MAX); *len is 0
 * when it is absent.
 */
int call_metadata_arg(struct call *c, uint8_t *buf, size_t *len);
/*
 * "timezone" (optional): resolved into the POSIX rule kept with the org, or
 * on replay taken from the recorded result.
 */
int call_timezone_arg(struct call *c, char name[SHM_TZ_MAX + 1], char rule[SHM_TZ_MAX + 1],
                      int *present);
/* report's input_tokens, output_tokens, cached_input_tokens (absent: 0); *any if one was given. */
int call_tokens_arg(struct call *c, uint64_t tokens[3], int *any);

/* The fields of a wallet and of a rule, as the method table and nested maps name them. */
#define WALLET_FIELDS "balance", "budget", "max_per_txn", "daily_spend_limit", "low_balance"
#define RULE_FIELDS "name", "match", "max_cost_per_txn", "daily_spend_limit", "hourly_rate_limit"
/* The wallet fields of agents.create's wallet and of wallets.update (with_debt: "debt" too). */
int call_wallet_args(struct proto_args *a, int with_debt, sc_wallet_update *u);

/* ---- listings of a ring (transactions, events, alerts), newest first ---- */
/* Filters of the ring listings; 0 or -1 means any. */
struct ring_filter {
	uint64_t agent_id;
	uint64_t org_id;
	int status;
	int risk;
	int64_t since, until; /* created_at in [since, until) */
	uint64_t before;      /* ids below this; 0: any */
	int kind, severity;   /* alerts: enum sc_alert_kind, enum sc_severity */
};

#define RING_FILTER_ANY {0, 0, -1, -1, INT64_MIN, INT64_MAX, 0, -1, -1}

/* One ring (transactions or events) as the listing walks it. */
struct ring {
	uint64_t next_id;
	uint32_t cap;
	const void *(*get)(struct state *st, uint64_t id); /* NULL if no longer kept */
	int (*keep)(const void *rec, const struct ring_filter *f);
	void (*pack)(struct call *c, const void *rec);
};

/* Packs, newest first, at most limit records of the ring that f keeps. */
int list_ring(struct call *c, const struct ring *r, const struct ring_filter *f, int64_t limit);

/* ---- a token shown once ---- */
/*
 * Packs a new token as the last field of the result map: the reply gets
 * "token" and the record "token_sha256" (dispatch.c swaps them). On replay
 * the hash is the one the record holds. Sets *hash for the caller to keep.
 */
int call_pack_secret(struct call *c, const char *prefix, uint64_t id,
                     uint8_t hash[ACCESS_HASH_BYTES]);
/* Packs a new agent token as the last field of the result map (agents.create, rotate_token). */
int call_pack_agent_token(struct call *c, uint32_t slot);
/*
 * 1 unless a replayed record's result has no token_sha256: an agent
 * created before access control, which has no token until one is rotated in.
 */
int call_token_recorded(struct call *c);

/* ---- a connection's token; all under the commit lock ---- */
/* 1 if the token behind p still stands (always, without one). */
int call_peer_valid(const struct dispatch *d, const struct access_peer *p);
/* Forgets the agent p was bound to (its count of connections, d->agent_conns). */
void call_peer_unbind(struct dispatch *d, struct access_peer *p);
/* A connection closed, or its token no longer stands: unbound, back to its credentials' role. */
void call_peer_closed(struct dispatch *d, struct access_peer *p);

#endif /* SIDECARD_CALL_H */
