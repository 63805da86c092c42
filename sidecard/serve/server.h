/*
 * server.h: the daemon's Unix-socket server (MessagePack-RPC transport).
 *
 * The server owns the listening socket and every client connection. It
 * frames the byte stream (proto_scan), validates envelopes, hands each
 * request to one handler function and writes the responses back, in request
 * order, batched. It enforces the protocol limits: a violation is answered
 * with limit_exceeded / protocol_error and closes only that connection.
 *
 * Threads. The listener, srv_init, srv_stop, srv_set_durable and srv_free
 * run on the thread running the libuv loop given to srv_init() (the "main
 * loop"). With cfg.workers <= 1 the connections are served on that loop
 * too, and nothing here is thread-safe. With cfg.workers = N >= 2 the
 * server starts N worker threads, each running its own libuv loop; every
 * accepted connection is handed to one of them (the one serving the fewest
 * connections) and lives there until it closes: its reads, framing,
 * request parsing, handler calls, response packing and writes all run on
 * that worker's thread. The handler is then called concurrently from
 * several threads and must serialise what it shares. srv_get_stats and
 * srv_notify may be called from any of the server's threads.
 *
 * Ownership: srv_init() allocates the server; srv_stop() closes its handles
 * asynchronously, drains and stops every worker, and calls done() once the
 * last handle is closed and every worker thread has been joined; srv_free()
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

#include "access.h"
#include "proto.h"

struct srv;

struct srv_config {
	const char *socket_path;    /* at most 107 bytes */
	unsigned mode;              /* socket file mode; 0: 0660 */
	long gid;                   /* group to chown the socket to; -1: leave it */
	/*
	 * Optional: a second socket serving only the agent role (every peer on
	 * it starts unauthenticated, whatever its uid), with its own mode
	 * (0: 0666) and group (-1: leave it).
	 */
	const char *agent_socket_path;
	unsigned agent_mode;
	long agent_gid;
	/* Whom credentials make admin or reader (access.h); NULL: nobody by credentials. */
	const struct access_config *access;
	unsigned max_per_uid;       /* open connections of one uid that is no admin's; 0: 64 */
	unsigned auth_timeout_ms;   /* an unauthenticated connection's time to hello; 0: none */
	unsigned max_connections;   /* 0: 1024 */
	unsigned max_outstanding;   /* responses queued per connection; 0: 1024 */
	size_t max_outstanding_bytes; /* their bytes, tested before each request; 0: 256 KiB */
	struct proto_limits limits; /* fields 0: the defaults */
	unsigned workers;           /* 0 or 1: serve on the main loop; N: N worker threads */
	/*
	 * Optional. Called on each worker thread with starting = 1 before it
	 * serves anything and with 0 after its loop has ended (the daemon
	 * registers the thread with liburcu). ctx is srv_init's.
	 */
	void (*worker_thread)(void *ctx, int starting);
	/*
	 * Optional. Called on the connection's thread when a connection that
	 * was accepted (not refused beyond max_connections) has closed, so the
	 * handler can forget what it kept per connection (subscriptions).
	 */
	void (*conn_closed)(void *ctx, uint64_t conn_id, const struct access_peer *peer);
};

#define SRV_MAX_WORKERS 64

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
	/*
	 * The connection's identity. The handler may change its role (hello)
	 * and set close to end the connection once this reply is written.
	 */
	struct access_peer *peer;
};

/*
 * The handler packs exactly two msgpack objects with pk: the error (nil, or
 * a proto_pack_error() map) and the result (nil on error). The server has
 * already packed the response's head, the array header and 1, msgid; the
 * two objects complete it. For a client notification the handler is called
 * the same way and its output is discarded. It runs on the thread serving
 * the connection (see Threads above) and must not block. Without workers it
 * may call srv_stop(). It must not call srv_notify() for the connection it
 * is answering (SC_EUNAVAILABLE).
 *
 * It returns the ledger sequence number the response depends on, or 0. A
 * connection's responses are held, in order, until srv_set_durable() has
 * reported that sequence on disk: this is how a mutating reply in strict
 * durability mode is sent only after its record is durable, while the loop
 * goes on serving everyone else. Held responses count as outstanding.
 */
typedef uint64_t (*srv_handler)(void *ctx, const struct srv_request *req, msgpack_packer *pk);

/*
 * Takes the socket, starts the worker threads (cfg->workers >= 2, at most
 * SRV_MAX_WORKERS) and starts accepting on loop:
 *  - creates missing parent directories of socket_path with mode 0700
 *    (existing ones are not touched), and refuses (SC_EINVAL) a directory
 *    that another user could change (fs_check_parent, not private);
 *  - locks "<socket_path>.lock" (never through a symbolic link, fs_lock)
 *    with flock() and writes the pid into it; if
 *    a live process holds the lock, fails with SC_EEXISTS and "another
 *    sidecard is running on <path> (pid N)";
 *  - removes a stale socket file left by a crashed daemon (under the lock
 *    any existing socket is stale); a path that exists and is not a socket
 *    is an error;
 *  - binds, chmods to cfg->mode, chowns to cfg->gid, listens.
 * Returns 0 and *out, or a negative code with a sentence in err: SC_EINVAL
 * (path empty or too long, too many workers), SC_EEXISTS (another daemon, or
 * not a socket) or -errno. On failure no worker thread runs and no lock,
 * lock file or socket is kept (directories it created stay); a handle the
 * loop already had may still be closing, so run the loop once more before
 * closing it.
 *
 * The socket is bound before it is chmod'ed; until then it has the umask's
 * mode, which is why a parent directory it creates is 0700.
 */
int srv_init(struct srv **out, uv_loop_t *loop, const struct srv_config *cfg, srv_handler h,
             void *ctx, char *err, size_t errlen);

/*
 * Stops the server: closes the listener, stops reading every connection,
 * lets responses already queued be written (for at most 2 seconds; held
 * responses go as soon as srv_set_durable releases them), closes every
 * connection, stops and joins every worker thread, removes the socket and
 * the lock file (each only if it is still the file this server made: one
 * deleted while it ran and made anew by another daemon stays), releases the
 * lock and then calls done(arg) on the loop
 * thread. After done the loop has no handle of the server left. Calling it
 * twice has no further effect.
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
	uint64_t read_pauses;          /* times a connection hit max_outstanding(_bytes), stopped being read */
	uint64_t outstanding_peak;     /* most responses ever queued on one connection */
	uint64_t notifications_dropped; /* srv_notify messages a full connection could not take */
};

/* Sums the counters of every worker; any of the server's threads. */
void srv_get_stats(const struct srv *s, struct srv_stats *st);

/*
 * The ledger is durable up to seq: sends every held response that waited
 * for it (on each worker, which it wakes). Sequences only grow; a smaller
 * one is ignored. Main loop thread.
 */
void srv_set_durable(struct srv *s, uint64_t seq);

/*
 * Queues the notification [2, method, params] on connection conn_id, where
 * packed_params[0..len) is one packed msgpack array. It counts as an
 * outstanding response. Any of the server's threads.
 *
 * On the thread serving the connection it is queued at once and the result
 * is final: 0, SC_ENOTFOUND (no such connection, or it is closing),
 * SC_ELIMIT (the connection already has max_outstanding messages or bytes queued:
 * the client does not read; counted as notifications_dropped),
 * SC_EUNAVAILABLE (called from the handler answering that connection) or
 * SC_EINTERNAL (out of memory). From another thread the message is copied
 * and handed to the connection's worker, which delivers it in the order
 * handed: 0 then means "handed", and a connection that has closed by then
 * silently does not get it (one that is full counts it as dropped);
 * SC_ENOTFOUND still answers an id that never named a connection.
 * Finding the connection is linear in the number of its worker's connections.
 */
int srv_notify(struct srv *s, uint64_t conn_id, const char *method, const char *packed_params,
               size_t len);

#endif /* SIDECARD_SERVER_H */
