/*
 * rpc.h: a raw msgpack-rpc client for the tests that must speak the wire
 * themselves (PROTOCOL.md), without libsidecard: a connection is whatever
 * descriptor the test made (its own, or one another user's process
 * connected), and every byte of a request is the test's choice.
 *
 * A request's arguments are listed as RPC_U64 / RPC_I64 / RPC_STR /
 * RPC_PACK pairs: rpc_call(&c, "check", RPC_U64("agent_id", id),
 * RPC_STR("action", "llm.chat"), RPC_I64("estimated_cost", 1000)) sends
 * [0, msgid, "check", [{...}]] and waits for its response. No argument
 * sends [{}]. Notifications that arrive meanwhile are kept, in order, for
 * rpc_notes.
 *
 * Every I/O waits at most RPC_TIMEOUT_MS and fails the Check test
 * (ck_assert) past it, or on malformed input: a daemon that hangs or
 * garbles fails the test instead of hanging the suite.
 *
 * Threads: one connection belongs to one thread. Ownership: what rpc_call
 * and rpc_next return lives until the connection's next call, read or
 * close; the notes until rpc_close.
 */
#ifndef SC_TESTS_RPC_H
#define SC_TESTS_RPC_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#define RPC_TIMEOUT_MS 5000
#define RPC_MAX_NOTES 64

enum rpc_type { RPC_T_U64 = 1, RPC_T_I64, RPC_T_STR, RPC_T_PACK };

/* Packs one value of a request's map (RPC_PACK): a nested map or array. */
typedef void (*rpc_pack_fn)(msgpack_packer *pk, const void *arg);

#define RPC_U64(key, v) (key), RPC_T_U64, (uint64_t)(v)
#define RPC_I64(key, v) (key), RPC_T_I64, (int64_t)(v)
#define RPC_STR(key, v) (key), RPC_T_STR, (const char *)(v)
#define RPC_PACK(key, fn, arg) (key), RPC_T_PACK, (rpc_pack_fn)(fn), (const void *)(arg)

struct rpc {
	int fd;
	uint32_t next_msgid;
	int eof;                               /* the daemon closed the connection */
	msgpack_unpacker in;
	msgpack_unpacked last;                 /* what rpc_call or rpc_next returned last */
	msgpack_unpacked notes[RPC_MAX_NOTES]; /* notifications seen by rpc_call */
	size_t n_notes;
};

/* A response: error is NULL on success, result NULL on error. */
struct rpc_res {
	const msgpack_object *error;
	const msgpack_object *result;
};

/* Connects to the socket at path (asserting it could) and starts the client on it. */
void rpc_open(struct rpc *c, const char *path);
/* Starts the client on a connected descriptor, which it then owns. */
void rpc_adopt(struct rpc *c, int fd);
/* Closes the connection and frees what it kept. */
void rpc_close(struct rpc *c);

/* Sends a request with the arguments that follow (see above); returns its msgid. */
#define rpc_send(c, method, ...) rpc_send_args((c), (method), ##__VA_ARGS__, (const char *)NULL)
uint32_t rpc_send_args(struct rpc *c, const char *method, ...);

/* Sends a request and waits for its response, keeping notifications. */
#define rpc_call(c, method, ...) rpc_call_args((c), (method), ##__VA_ARGS__, (const char *)NULL)
struct rpc_res rpc_call_args(struct rpc *c, const char *method, ...);

/* The next message, whatever it is; NULL when the daemon closed the connection. */
const msgpack_object *rpc_next(struct rpc *c);

/* Asserts that the daemon closes the connection with nothing more to say. */
void rpc_expect_eof(struct rpc *c);

/* The kept notifications named method, in order: how many, and the i-th's params[0]. */
size_t rpc_notes(const struct rpc *c, const char *method);
const msgpack_object *rpc_note(const struct rpc *c, const char *method, size_t i);

/* ----- reading objects ----- */

/* The value of key in map m, or NULL (m not a map, or no such key). */
const msgpack_object *rpc_get(const msgpack_object *m, const char *key);
/* The unsigned integer at key, asserting it is there. */
uint64_t rpc_get_u64(const msgpack_object *m, const char *key);
/* The string at key as a NUL-terminated copy in buf (asserting it is a string). */
const char *rpc_get_str(const msgpack_object *m, const char *key, char *buf, size_t len);
/* 1 if o is the string s. */
int rpc_is_str(const msgpack_object *o, const char *s);

/* An error's name and message ("" when absent), copied into the buffers. */
const char *rpc_err_name(const struct rpc_res *r, char *buf, size_t len);
const char *rpc_err_message(const struct rpc_res *r, char *buf, size_t len);

#endif /* SC_TESTS_RPC_H */
