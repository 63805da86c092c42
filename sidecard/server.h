/*
 * server.h: the daemon's Unix-socket server (MessagePack-RPC transport).
 *
 * The server owns the listening socket and every client connection. It
 * frames the byte stream (proto_scan), validates envelopes, hands each
 * request to one handler function and writes the responses back, in request
 * order, batched. It enforces the protocol limits: a violation is answered
 * with limit_exceeded / protocol_error and closes only that connection.
 *
 * Threads: every srv_ function and the handler run on the thread running the
 * libuv loop given to srv_init(). Nothing here is thread-safe; to act on the
 * server from another thread, wake the loop (uv_async_t) and call from there.
 *
 * Ownership: srv_init() allocates the server; srv_stop() closes its handles
 * asynchronously and calls done() once the last one is closed; srv_free()
 * releases the memory after that (it may be called from done()).
 *
 * SIGPIPE: libuv writes to sockets with write(2), so a client that vanishes
 * mid-write raises SIGPIPE. The process must ignore SIGPIPE (the daemon's
 * main() does: signal(SIGPIPE, SIG_IGN)); the write then fails with EPIPE and
 * only that connection is closed.
 */
#ifndef SIDECARD_SERVER_H
#define SIDECARD_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>
#include <uv.h>

#include "proto.h"

struct srv;

struct srv_config {
	const char *socket_path;    /* at most 107 bytes */
	unsigned mode;              /* socket file mode; 0: 0660 */
	long gid;                   /* group to chown the socket to; -1: leave it */
	unsigned max_connections;   /* 0: 1024 */
	unsigned max_outstanding;   /* responses queued per connection; 0: 1024 */
	struct proto_limits limits; /* fields 0: the defaults */
};

/* Fills cfg with the defaults and socket_path = path. */
void srv_config_default(struct srv_config *cfg, const char *path);

/*
 * One request as the handler sees it. method and params point into the
 * connection's buffers and are valid only during the handler call.
 */
struct srv_request {
	uint64_t conn_id;             /* stable for the connection's life; for srv_notify() */
	uint32_t msgid;               /* 0 for a notification */
	int notification;             /* 1: [2, method, params], nothing will be sent back */
	const char *method;           /* not NUL-terminated */
	size_t method_len;
	const msgpack_object *params; /* an array: [] or, when well formed, [map] */
	const char *params_raw;       /* params as received (msgpack); NULL: pack params instead */
	size_t params_raw_len;
};

/*
 * The handler packs exactly two msgpack objects with pk: the error (nil, or
 * a proto_pack_error() map) and the result (nil on error). The server has
 * already packed the response's head, the array header and 1, msgid; the
 * two objects complete it. For a client notification the handler is called
 * the same way and its output is discarded. It runs on the loop thread and
 * must not block. It may call srv_stop(); it must not call srv_notify() for
 * the connection it is answering (SC_EUNAVAILABLE).
 *
 * It returns the ledger sequence number the response depends on, or 0. A
 * connection's responses are held, in order, until srv_set_durable() has
 * reported that sequence on disk: this is how a mutating reply in strict
 * durability mode is sent only after its record is durable, while the loop
 * goes on serving everyone else. Held responses count as outstanding.
 */
typedef uint64_t (*srv_handler)(void *ctx, const struct srv_request *req, msgpack_packer *pk);

/*
 * Takes the socket and starts accepting on loop:
 *  - creates missing parent directories of socket_path with mode 0700
 *    (existing ones are not touched);
 *  - locks "<socket_path>.lock" with flock() and writes the pid into it; if
 *    a live process holds the lock, fails with SC_EEXISTS and "another
 *    sidecard is running on <path> (pid N)";
 *  - removes a stale socket file left by a crashed daemon (under the lock
 *    any existing socket is stale); a path that exists and is not a socket
 *    is an error;
 *  - binds, chmods to cfg->mode, chowns to cfg->gid, listens.
 * Returns 0 and *out, or a negative code with a sentence in err: SC_EINVAL
 * (path empty or too long), SC_EEXISTS (another daemon, or not a socket) or
 * -errno. On failure no handle is left in loop and no lock, lock file or
 * socket is kept (directories it created stay).
 *
 * The socket is bound before it is chmod'ed; until then it has the umask's
 * mode, which is why a parent directory it creates is 0700.
 */
int srv_init(struct srv **out, uv_loop_t *loop, const struct srv_config *cfg, srv_handler h,
             void *ctx, char *err, size_t errlen);

/*
 * Stops the server: closes the listener, stops reading every connection,
 * lets responses already queued be written (for at most 2 seconds), closes
 * every connection, removes the socket and the lock file, releases the lock
 * and then calls done(arg) on the loop thread. After done the loop has no
 * handle of the server left. Calling it twice has no further effect.
 */
void srv_stop(struct srv *s, void (*done)(void *arg), void *arg);

/* Releases the memory of a server whose srv_stop() has called done. */
void srv_free(struct srv *s);

struct srv_stats {
	uint64_t connections_open;     /* accepted and not yet closed */
	uint64_t connections_total;    /* accepted since start */
	uint64_t requests;             /* requests and notifications handled */
	uint64_t protocol_errors;      /* connections closed for a limit or malformed input */
	uint64_t rejected_connections; /* refused beyond max_connections */
	uint64_t read_pauses;          /* times a connection hit max_outstanding and stopped being read */
	uint64_t outstanding_peak;     /* most responses ever queued on one connection */
};

void srv_get_stats(const struct srv *s, struct srv_stats *st);

/*
 * The ledger is durable up to seq: sends every held response that waited
 * for it. Sequences only grow; a smaller one is ignored.
 */
void srv_set_durable(struct srv *s, uint64_t seq);

/*
 * Queues the notification [2, method, params] on connection conn_id, where
 * packed_params[0..len) is one packed msgpack array. It counts as an
 * outstanding response. Returns 0, SC_ENOTFOUND (no such connection, or it
 * is closing), SC_ELIMIT (the connection already has max_outstanding
 * messages queued: the client does not read), SC_EUNAVAILABLE (called from
 * the handler answering that connection) or SC_EINTERNAL (out of memory).
 * Finding the connection is linear in the number of connections.
 */
int srv_notify(struct srv *s, uint64_t conn_id, const char *method, const char *packed_params,
               size_t len);

/*
 * 1 if connection conn_id is open and not closing (srv_notify would find
 * it), else 0. Linear in the number of connections.
 */
int srv_conn_open(const struct srv *s, uint64_t conn_id);

#endif /* SIDECARD_SERVER_H */
