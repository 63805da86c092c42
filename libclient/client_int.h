/*
 * client_int.h: what the files of libsidecard's client share; not installed.
 *
 *   client.c          the connection: connect and close, the round trip
 *                     (sc_client_rpc), sending and receiving, errors, pushed
 *                     notifications and the queue of alerts
 *   client_request.c  requests: named arguments, packed as msgpack
 *   client_fields.c   the field tables of the public structs, and the
 *                     decoder that fills a struct from a result through one
 *   client_gate.c     check, pipelined check batches and report
 *   client_admin.c    pricing, orgs, agents, rules, wallets, transactions,
 *                     scores and events, counters, alert listings, access
 *                     tokens
 *   trust.c           whether a socket's peer or a segment's owner may be
 *                     the daemon (also for peek.c)
 *
 * A method builds a `struct request` of named arguments, calls
 * sc_client_call_one() or sc_client_call_list() (or sc_client_rpc() and
 * decodes the result itself) with the table of the struct it returns.
 *
 * Everything here is hidden (-fvisibility=hidden): only SC_API names leave
 * the library. Threads and ownership are sc_client's: one thread at a time
 * per client (client.c).
 */
#ifndef SIDECARD_CLIENT_INT_H
#define SIDECARD_CLIENT_INT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <msgpack.h>

#include "common.h"
#include "sidecard.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Most named arguments any method takes (transactions.list: 8). */
#define ARGS_MAX 8
/* Pushed alerts kept until sc_alert_next() takes them. */
#define ALERT_QUEUE 64

struct sc_client {
	int fd; /* -1 once the connection is dead */
	uint32_t msgid;
	msgpack_sbuffer sbuf;
	msgpack_unpacker unp;
	/*
	 * The last message read, valid until the next read: msg.data lives in
	 * the unpacker's zone (msg.zone stays NULL), which is cleared for the
	 * next message instead of a new zone being allocated for every one.
	 */
	msgpack_unpacked msg;
	int msg_held; /* msg.data is a whole message whose objects are still in the zone */
	char version[32];
	char role[SC_ROLE_MAX + 1]; /* hello's, "" from a daemon without roles */
	uint64_t agent_id, token_id; /* hello's, 0 when absent */
	char error[512];
	sc_alert alerts[ALERT_QUEUE]; /* a ring of pushed alerts: head, then len of them */
	unsigned alerts_head, alerts_len;
	uint64_t alerts_dropped;
};

/* ----- errors ----- */

/*
 * Sets the client's message; returns code. Here rather than in client.c:
 * every file of the library records its failures, and client.c calls the
 * decoders of client_fields.c, so none of them calls back up into it.
 */
static inline int sc_client_fail(sc_client *c, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static inline int sc_client_fail(sc_client *c, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->error, sizeof(c->error), fmt, ap);
	va_end(ap);
	return code;
}

/* (client.c) */
/* A transport failure: the connection cannot be trusted any more. */
int sc_client_broken(sc_client *c, int code, const char *what);

/* ----- field tables (client_fields.c) ----- */

enum field_type {
	FT_UINT,     /* uint64_t, a non-negative integer */
	FT_UINT32,   /* uint32_t, a non-negative integer that fits (open holds) */
	FT_INT,      /* int64_t (money, times, counters) */
	FT_INT32,    /* int (scores) */
	FT_BOOL,     /* int, 0 or 1 */
	FT_STR,      /* char[aux] */
	FT_ENUM,     /* an enum, parsed from its name by `parse` */
	FT_WALLET,   /* sc_wallet; aux: the value of `limited` when absent */
	FT_RULES,    /* sc_rule[SC_RULES_MAX]; aux: offset of the size_t count */
	FT_WARNINGS, /* char[SC_WARNINGS_MAX][SC_REASON_MAX + 1]; aux: offset of the unsigned count */
	FT_ID_PAIR,  /* uint64_t[2], an array of exactly two ids (a transfer's transactions) */
	FT_INLINE,   /* a nested map of members of the same struct; `inner`, aux entries */
};

enum {
	F_OPTIONAL = 1 << 0, /* nil or absent leaves the member untouched */
	F_PRESENT = 1 << 1,  /* FT_ENUM: int at offset `present` set to 1 when given */
};

struct field {
	const char *key;
	enum field_type type;
	size_t off;
	size_t aux;
	unsigned flags;
	unsigned set; /* the SC_*_SET_* bit that sends this field in an update */
	int (*parse)(const char *name, int *out);
	size_t present;
	const struct field *inner;
	const struct sc_names *names; /* FT_ENUM in an update: the words to send */
};

struct table {
	const struct field *fields;
	size_t n;
	const char *what; /* the object's name in messages */
	/*
	 * After the fields: NULL if the object is whole, else what is wrong with
	 * it. It may fill the members that depend on several fields.
	 */
	const char *(*check)(const msgpack_object *obj, void *base);
};

/* The public structs' tables, each named after the struct it fills. */
extern const struct table sc_client_wallet_table, sc_client_wallet_update_table,
	sc_client_rule_table, sc_client_org_table, sc_client_agent_table,
	sc_client_transaction_table, sc_client_task_usage_table, sc_client_txn_summary_table,
	sc_client_top_agent_table, sc_client_fleet_table, sc_client_decision_table,
	sc_client_settlement_table, sc_client_price_table, sc_client_score_table,
	sc_client_event_table, sc_client_alert_table, sc_client_spend_table,
	sc_client_access_token_table;

/* The result of alerts.subscribe and alerts.unsubscribe. */
struct subscription {
	int subscribed;
	uint64_t last_alert_id;
};

/* The result of wallets.transfer. */
struct transfer {
	sc_micros amount;
	sc_wallet from, to;
	uint64_t transactions[2]; /* the debit's id, then the credit's */
};

/* The result of wallets.adjust. */
struct adjustment {
	sc_wallet wallet;
	uint64_t transaction_id;
};

/* The result of wallets.carve and wallets.release: an agent's wallet and its org's. */
struct carve {
	sc_wallet agent, org;
	uint64_t transaction_id;
};

/* hello's result, of which the client keeps the version and what it says of the peer. */
struct hello {
	char server[32];
	char version[32];
	int64_t protocol;
	char role[SC_ROLE_MAX + 1];
	uint64_t agent_id, token_id;
};

/* The result of agents.rotate_token. */
struct rotation {
	uint64_t agent_id;
	char token[SC_TOKEN_MAX + 1];
};

/*
 * The result of agents.delete ({deleted: true}), rules.remove ({removed:
 * true}) and tokens.revoke ({revoked: true}).
 */
struct done {
	int yes;
};

/* The tables of the results above that have no public struct. */
extern const struct table sc_client_subscription_table, sc_client_transfer_table,
	sc_client_adjustment_table, sc_client_carve_table, sc_client_hello_table, sc_client_deleted_table,
	sc_client_removed_table, sc_client_rotation_table, sc_client_revoked_table;

/* ----- decoding (client_fields.c) ----- */

/* The value of key in map, or NULL. */
const msgpack_object *sc_client_map_get(const msgpack_object *map, const char *key);
/* Copies a msgpack str into dst[cap] with its NUL; SC_EPROTO if it does not fit. */
int sc_client_copy_str(const msgpack_object *v, char *dst, size_t cap);
/* A msgpack integer that fits int64_t; SC_EPROTO otherwise. */
int sc_client_get_int(const msgpack_object *v, int64_t *out);
/* Decodes one object into out (size bytes, zeroed first). */
int sc_client_decode_one(sc_client *c, const msgpack_object *obj, struct table t, void *out,
                      size_t size);
/* Decodes an array of objects into one malloc block of elements of `size` bytes. */
int sc_client_decode_list(sc_client *c, const msgpack_object *obj, struct table t, size_t size,
                       void **out, size_t *n);

/* ----- requests (client_request.c) ----- */

enum arg_kind {
	ARG_UINT,
	ARG_INT,
	ARG_STR,
	ARG_FIELDS,    /* the set fields of `base`, inline in the arguments map */
	ARG_MAP,       /* the set fields of `base`, as a nested map */
	ARG_MAP_ARRAY, /* `count` structs of `size` bytes at `base`, each a nested map */
	ARG_META,      /* `count` sc_meta string pairs at `base`, as a nested map */
};

struct arg {
	const char *key;
	enum arg_kind kind;
	uint64_t u;
	int64_t i;
	const char *s;
	struct table t;
	const void *base;
	size_t count, size;
	unsigned set;
};

struct request {
	const char *method;
	size_t n;
	struct arg args[ARGS_MAX];
};

/* Appends a; ARGS_MAX is enough for every method. */
void sc_client_arg_add(struct request *r, struct arg a);
void sc_client_arg_uint(struct request *r, const char *key, uint64_t v);
void sc_client_arg_int(struct request *r, const char *key, int64_t v);
void sc_client_arg_str(struct request *r, const char *key, const char *s);
void sc_client_arg_fields(struct request *r, enum arg_kind kind, const char *key, struct table t,
                       const void *base, size_t count, size_t size, unsigned set);

/*
 * Packs into an sbuffer, remembering whether any write failed (out of
 * memory, or a length msgpack cannot carry).
 */
struct writer {
	msgpack_sbuffer *sb;
	int failed;
};

/* Appends the request [0, msgid, method, [{args}]] to w. */
void sc_client_put_request(struct writer *w, uint32_t msgid, const struct request *r);

/* ----- the round trip (client.c) ----- */

/*
 * Takes the next whole message already buffered into c->msg: 1, or 0 when
 * more bytes are needed, or a negative code (the connection is broken).
 */
int sc_client_next_buffered(sc_client *c);
/* Makes room in the unpacker's buffer for the next read of *room bytes. */
int sc_client_read_room(sc_client *c, size_t *room);
/* Turns an error map {code, name, message} into its code and message. */
int sc_client_daemon_error(sc_client *c, const msgpack_object *err);
/* Handles the notification m; non-zero when it ends the connection. */
int sc_client_take_notification(sc_client *c, const msgpack_object *m);
/*
 * One round trip. On success *result points into c->msg and stays valid
 * until the next sc_client_rpc() on c.
 */
int sc_client_rpc(sc_client *c, const struct request *r, const msgpack_object **result);
/* sc_client_rpc() and decode the result into out (NULL: not decoded) through t. */
int sc_client_call_one(sc_client *c, const struct request *r, struct table t, void *out,
                    size_t size);
int sc_client_call_list(sc_client *c, const struct request *r, struct table t, size_t size,
                     void **out, size_t *n);
/* Methods answering {deleted: true}, {removed: true} or {revoked: true}. */
int sc_client_call_done(sc_client *c, const struct request *r, struct table t);

/* ----- trusting the daemon (trust.c) ----- */

/*
 * Whether uid found, behind the socket or owning the segment file at path
 * (what: "the daemon behind the socket" or "the owner of the state file",
 * for the message), is one this
 * process expects to be the daemon (sidecard.h, "Trusting the daemon"):
 * 0, SC_EUNAVAILABLE with a sentence naming the uid found and the ones
 * expected in err, or SC_EINVAL for a SIDECARD_DAEMON_UID that names no
 * user.
 */
int sc_client_trust(uid_t found, const char *path, const char *what, char *err, size_t errlen);

#endif /* SIDECARD_CLIENT_INT_H */
