/*
 * client.c: libsidecard's blocking client, one msgpack-rpc connection per
 * sc_client (protocol/PROTOCOL.md is the contract this file codes against):
 * connecting, the round trip, sending and receiving, errors, and the
 * notifications the daemon pushes. The rest of the client lives beside it
 * (client_int.h lists the files): requests are built and packed in
 * client_request.c, results decoded through the field tables of
 * client_fields.c, and the methods are client_gate.c's (check, check
 * batches, report) and client_admin.c's (everything else).
 *
 * Every call is one round trip: the request [0, msgid, method, [{args}]] is
 * packed into the connection's sbuffer, written whole (partial writes and
 * EINTR retried, MSG_NOSIGNAL so a vanished daemon never raises SIGPIPE),
 * then messages are read with a streaming msgpack_unpacker until the whole
 * response is there. msgids increase by one per request; since the daemon
 * answers in request order, the response must carry exactly the msgid of
 * the oldest request waiting, and anything else is SC_EPROTO. Only
 * sc_check_batch() has more than one request outstanding (pipelining; see
 * client_gate.c). A response may not exceed RESPONSE_MAX bytes: the
 * unpacker buffers at most that much.
 *
 * Failures come in three kinds:
 *   - the daemon answers with an error map {code, name, message}: the call
 *     returns the SC_E* code of the name (or the integer code for a name
 *     this library does not know) and sc_last_error() gives the message;
 *     the connection stays usable;
 *   - the transport fails (write or read error, EOF, malformed or oversized
 *     msgpack, a wrong msgid): the call returns -errno, SC_ECLOSED or
 *     SC_EPROTO, the socket is closed and every later call on this client
 *     returns SC_ECLOSED;
 *   - the result does not have the documented shape: SC_EPROTO with a
 *     message naming the object and field; the connection stays usable.
 *
 * HELLO. sc_connect_token() opens the socket, checks who listens on it
 * (peer_trusted) and only then says hello, presenting the token when it
 * has one (sc_connect() and sc_connect_err() take it from SIDECARD_TOKEN);
 * the client keeps what hello answers of the peer (role, bound agent,
 * reader token id), never the token. A failed connect frees its client,
 * so its reason goes to the caller's err buffer.
 *
 * NOTIFICATIONS. The daemon pushes [2, "alert", [alert]] to a connection
 * that subscribed (sc_alerts_subscribe); such a notification may arrive
 * while a call waits for its response. Every read goes through one place
 * (sc_client_take_notification): an alert is decoded into a small ring on the
 * client (ALERT_QUEUE, the oldest dropped and counted when full) for
 * sc_alert_next(), and "error" ends the connection as before.
 *
 * Threads: an sc_client belongs to one thread at a time (sidecard.h); there
 * is no global state, so distinct clients may be used concurrently.
 * Ownership: the client owns its socket, buffers and the last decoded
 * message, which stays valid until the next sc_client_rpc(); lists returned to
 * the caller are single malloc blocks released by the sc_*_free functions.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "client_int.h"

/* Largest response accepted; a bigger one is SC_EPROTO. */
#define RESPONSE_MAX (1024 * 1024)
/* Bytes asked of the unpacker before each read. */
#define READ_CHUNK (64 * 1024)

/* ----- errors ----- */

int sc_client_broken(sc_client *c, int code, const char *what)
{
	if (c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
	}
	return sc_client_fail(c, code, "%s: %s", what, sc_strerror(code));
}

/* ----- transport ----- */

static int send_all(sc_client *c, const char *p, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = send(c->fd, p, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return sc_client_broken(c, -errno, "write to the daemon");
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int64_t monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Waits until the socket is readable: for ever when deadline is NULL (a
 * signal is retried), else until *deadline (CLOCK_MONOTONIC milliseconds,
 * -1: none), returning -ETIMEDOUT after it and -EINTR when a signal came.
 *
 * Even the wait for ever is a poll() rather than a blocking recv(). A
 * thread asleep in recv() on a Unix stream socket waits on the socket's
 * one wait queue without saying for what, so it is woken, and sleeps
 * again, each time the daemon reads one of its requests: the kernel
 * announces the freed send space to every sleeper (unix_write_space), and
 * only poll's and epoll's waiters are passed over when they asked for
 * input alone. On the daemon that wake-up is an interprocessor interrupt
 * per request read, on the path every strict batch waits on. Polling
 * took strict mode at 8 clients from 31.8-33.8k to 36.6-38.4k checks/s
 * (docs/PERFORMANCE.md, "Strict mode"), for one system call more per
 * response.
 */
static int wait_readable(sc_client *c, const int64_t *deadline)
{
	struct pollfd p = { .fd = c->fd, .events = POLLIN };
	int64_t left = -1;
	int n;

	for (;;) {
		if (deadline != NULL && *deadline >= 0) {
			left = *deadline - monotonic_ms();
			if (left < 0)
				left = 0;
		}
		n = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (n >= 0)
			return n == 0 ? sc_client_fail(c, -ETIMEDOUT, "nothing from the daemon in time")
			              : 0;
		if (errno != EINTR)
			return sc_client_broken(c, -errno, "wait for the daemon");
		if (deadline != NULL)
			return sc_client_fail(c, -EINTR, "interrupted");
	}
}

/*
 * Takes the next whole message already buffered into c->msg: 1, or 0 when
 * more bytes are needed, or a negative code (the connection is broken).
 * The previous message's objects are freed first.
 */
int sc_client_next_buffered(sc_client *c)
{
	int got;

	if (c->msg_held) {
		/*
		 * Frees the objects of the last message, keeping the zone's memory:
		 * flushing first hands the zone's reference to the read buffer
		 * over to a finalizer, which the clear runs, so the buffer can
		 * then be rewound rather than replaced.
		 */
		c->msg_held = 0;
		memset(&c->msg.data, 0, sizeof(c->msg.data));
		if (!msgpack_unpacker_flush_zone(&c->unp))
			return sc_client_broken(c, -ENOMEM, "reading a response");
		msgpack_unpacker_reset_zone(&c->unp);
	}
	got = msgpack_unpacker_execute(&c->unp);
	if (got > 0) {
		c->msg.data = msgpack_unpacker_data(&c->unp);
		msgpack_unpacker_reset(&c->unp);
		c->msg_held = 1;
		return 1;
	}
	if (got < 0)
		return sc_client_broken(c, got == MSGPACK_UNPACK_NOMEM_ERROR ? -ENOMEM : SC_EPROTO,
		                     got == MSGPACK_UNPACK_NOMEM_ERROR
		                             ? "reading a response"
		                             : "malformed msgpack from the daemon");
	return 0;
}

/*
 * Makes room in the unpacker's buffer for the next read: *room bytes, at
 * most one byte past RESPONSE_MAX for the message being read. That byte
 * tells an oversized response, refused here before the next read, so the
 * buffer never grows further. 0, or the code that broke the connection.
 */
int sc_client_read_room(sc_client *c, size_t *room)
{
	size_t buffered = msgpack_unpacker_message_size(&c->unp);

	if (buffered > RESPONSE_MAX)
		return sc_client_broken(c, SC_EPROTO, "response larger than 1 MiB");
	if (!msgpack_unpacker_reserve_buffer(&c->unp, READ_CHUNK))
		return sc_client_broken(c, -ENOMEM, "reading a response");
	*room = msgpack_unpacker_buffer_capacity(&c->unp);
	if (*room > RESPONSE_MAX + 1 - buffered)
		*room = RESPONSE_MAX + 1 - buffered;
	return 0;
}

/* Reads until one whole message is in c->msg; deadline as wait_readable's. */
static int receive_until(sc_client *c, const int64_t *deadline)
{
	size_t room;
	ssize_t n;
	int rc;

	for (;;) {
		if ((rc = sc_client_next_buffered(c)) != 0)
			return rc < 0 ? rc : 0;
		if ((rc = sc_client_read_room(c, &room)) != 0 ||
		    (rc = wait_readable(c, deadline)) != 0)
			return rc;
		n = recv(c->fd, msgpack_unpacker_buffer(&c->unp), room, 0);
		if (n == 0)
			return sc_client_broken(c, SC_ECLOSED, "the daemon closed the connection");
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return sc_client_broken(c, -errno, "read from the daemon");
		}
		msgpack_unpacker_buffer_consumed(&c->unp, (size_t)n);
	}
}

static int receive(sc_client *c)
{
	return receive_until(c, NULL);
}

/* Turns an error map {code, name, message} into its code and message. */
int sc_client_daemon_error(sc_client *c, const msgpack_object *err)
{
	const msgpack_object *name, *code, *message;
	char wire[32] = "";
	int64_t v;
	int rc;

	if (err->type != MSGPACK_OBJECT_MAP || (name = sc_client_map_get(err, "name")) == NULL ||
	    (code = sc_client_map_get(err, "code")) == NULL ||
	    (message = sc_client_map_get(err, "message")) == NULL ||
	    message->type != MSGPACK_OBJECT_STR)
		return sc_client_fail(c, SC_EPROTO, "malformed error map from the daemon");
	rc = sc_client_copy_str(name, wire, sizeof(wire)) == 0 ? sc_err_from_name(wire) : SC_EPROTO;
	if (rc == SC_EPROTO && strcmp(wire, "protocol_error") != 0 &&
	    sc_client_get_int(code, &v) == 0 && v < 0 && v >= INT32_MIN)
		rc = (int)v;
	snprintf(c->error, sizeof(c->error), "%.*s", (int)message->via.str.size,
	         message->via.str.ptr);
	return rc;
}

static int is_notification(const msgpack_object *m, const char *method)
{
	const msgpack_object *name = &m->via.array.ptr[1], *params = &m->via.array.ptr[2];

	return m->via.array.size == 3 && name->type == MSGPACK_OBJECT_STR &&
	       name->via.str.size == strlen(method) &&
	       memcmp(name->via.str.ptr, method, name->via.str.size) == 0 &&
	       params->type == MSGPACK_OBJECT_ARRAY && params->via.array.size == 1;
}

/*
 * Handles the notification m: queues an alert (a malformed one is dropped:
 * it must not fail the call that happened to read it); "error" means the
 * daemon is closing this connection and is returned as the code.
 */
int sc_client_take_notification(sc_client *c, const msgpack_object *m)
{
	const msgpack_object *param = &m->via.array.ptr[2].via.array.ptr[0];
	sc_alert a;
	int rc;

	if (is_notification(m, "error")) {
		rc = sc_client_daemon_error(c, param);
		close(c->fd);
		c->fd = -1;
		return rc;
	}
	if (!is_notification(m, "alert"))
		return 0;
	if (sc_client_decode_one(c, param, sc_client_alert_table, &a, sizeof(a)) != 0) {
		c->error[0] = '\0';
		return 0;
	}
	if (c->alerts_len == ALERT_QUEUE) {
		c->alerts_head = (c->alerts_head + 1) % ALERT_QUEUE;
		c->alerts_len--;
		c->alerts_dropped++;
	}
	c->alerts[(c->alerts_head + c->alerts_len++) % ALERT_QUEUE] = a;
	return 0;
}

/*
 * One round trip. On success *result points into c->msg and stays valid
 * until the next sc_client_rpc() on c.
 */
int sc_client_rpc(sc_client *c, const struct request *r, const msgpack_object **result)
{
	struct writer w = { .sb = &c->sbuf, .failed = 0 };
	const msgpack_object *m;
	uint32_t msgid;
	int rc;

	if (c->fd < 0)
		return sc_client_fail(c, SC_ECLOSED, "the connection is closed");
	c->error[0] = '\0';
	msgid = ++c->msgid;
	msgpack_sbuffer_clear(&c->sbuf);
	sc_client_put_request(&w, msgid, r);
	if (w.failed)
		return sc_client_fail(c, -ENOMEM, "%s: %s", r->method, sc_strerror(-ENOMEM));
	if ((rc = send_all(c, c->sbuf.data, c->sbuf.size)) != 0)
		return rc;
	for (;;) {
		if ((rc = receive(c)) != 0)
			return rc;
		m = &c->msg.data;
		if (m->type != MSGPACK_OBJECT_ARRAY || m->via.array.size < 3 ||
		    m->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
			return sc_client_broken(c, SC_EPROTO, "malformed message from the daemon");
		if (m->via.array.ptr[0].via.u64 != 2)
			break;
		if ((rc = sc_client_take_notification(c, m)) != 0)
			return rc;
	}
	if (m->via.array.size != 4 || m->via.array.ptr[0].via.u64 != 1 ||
	    m->via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return sc_client_broken(c, SC_EPROTO, "malformed response from the daemon");
	if (m->via.array.ptr[1].via.u64 != msgid)
		return sc_client_broken(c, SC_EPROTO, "response to another request");
	if (m->via.array.ptr[2].type != MSGPACK_OBJECT_NIL)
		return sc_client_daemon_error(c, &m->via.array.ptr[2]);
	*result = &m->via.array.ptr[3];
	return 0;
}

/* sc_client_rpc() and decode the result into out through t. */
int sc_client_call_one(sc_client *c, const struct request *r, struct table t, void *out,
                    size_t size)
{
	const msgpack_object *res;
	int rc = sc_client_rpc(c, r, &res);

	if (rc != 0 || out == NULL)
		return rc;
	return sc_client_decode_one(c, res, t, out, size);
}

int sc_client_call_list(sc_client *c, const struct request *r, struct table t, size_t size,
                     void **out, size_t *n)
{
	const msgpack_object *res;
	int rc;

	*out = NULL;
	*n = 0;
	rc = sc_client_rpc(c, r, &res);
	return rc != 0 ? rc : sc_client_decode_list(c, res, t, size, out, n);
}

/* Methods answering {deleted: true} or {removed: true}. */
int sc_client_call_done(sc_client *c, const struct request *r, struct table t)
{
	struct done d;
	int rc = sc_client_call_one(c, r, t, &d, sizeof(d));

	if (rc == 0 && !d.yes)
		rc = sc_client_fail(c, SC_EPROTO, "the daemon answered %s: false", t.what);
	return rc;
}

/* ----- connection ----- */

/* connect(2), finishing a connection that a signal interrupted. */
static int connect_unix(int fd, const struct sockaddr_un *addr)
{
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	socklen_t len = sizeof(int);
	int err = 0;

	if (connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) == 0)
		return 0;
	if (errno != EINTR)
		return -errno;
	while (poll(&p, 1, -1) < 0)
		if (errno != EINTR)
			return -errno;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
		return -errno;
	return -err;
}

/*
 * The daemon's uid, as the kernel recorded it when the socket was made to
 * listen, must be one this process trusts (trust.c): checked before a
 * single request is sent.
 */
static int peer_trusted(sc_client *c, const char *path)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
		return sc_client_fail(c, -errno, "cannot read the credentials of %s: %s", path,
		                      strerror(errno));
	return sc_client_trust(cred.uid, path, "the daemon behind the socket", c->error,
	                       sizeof(c->error));
}

int sc_connect(const char *path, sc_client **out)
{
	return sc_connect_err(path, out, NULL, 0);
}

int sc_connect_err(const char *path, sc_client **out, char *err, size_t errlen)
{
	const char *token = getenv("SIDECARD_TOKEN");

	return sc_connect_token(path, token != NULL && token[0] != '\0' ? token : NULL, out, err,
	                        errlen);
}

int sc_connect_token(const char *path, const char *token, sc_client **out, char *err,
                     size_t errlen)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct request r = { .method = "hello" };
	const msgpack_object *res;
	struct hello h;
	sc_client *c;
	int rc;

	*out = NULL;
	if (token != NULL && (token[0] == '\0' || strlen(token) > SC_TOKEN_MAX)) {
		sc_errorf(err, errlen, "token: must be 1 to %d bytes", SC_TOKEN_MAX);
		return SC_EINVAL;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return -ENOMEM;
	c->fd = -1;
	msgpack_sbuffer_init(&c->sbuf);
	msgpack_unpacked_init(&c->msg);
	if (!msgpack_unpacker_init(&c->unp, READ_CHUNK)) {
		free(c);
		return -ENOMEM;
	}
	if (path == NULL)
		rc = sc_default_socket_path(addr.sun_path, sizeof(addr.sun_path));
	else
		rc = strlen(path) < sizeof(addr.sun_path) ? 0 : -ENAMETOOLONG;
	if (rc == 0 && path != NULL)
		memcpy(addr.sun_path, path, strlen(path) + 1);
	if (rc == 0) {
		c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		rc = c->fd < 0 ? -errno : connect_unix(c->fd, &addr);
	}
	/* Sent only once the peer is trusted: a token is never shown to an impostor. */
	if (token != NULL)
		sc_client_arg_str(&r, "token", token);
	if (rc == 0)
		rc = peer_trusted(c, addr.sun_path);
	if (rc == 0)
		rc = sc_client_rpc(c, &r, &res);
	if (rc == 0)
		rc = sc_client_decode_one(c, res, sc_client_hello_table, &h, sizeof(h));
	if (rc == 0 && h.protocol != SC_PROTOCOL_VERSION)
		rc = sc_client_fail(c, SC_EPROTO, "the daemon speaks protocol %d, this library %d",
		                    (int)h.protocol, SC_PROTOCOL_VERSION);
	if (rc != 0) {
		sc_errorf(err, errlen, "%s", c->error[0] ? c->error : sc_strerror(rc));
		sc_close(c);
		return rc;
	}
	memcpy(c->version, h.version, sizeof(c->version));
	memcpy(c->role, h.role, sizeof(c->role));
	c->agent_id = h.agent_id;
	c->token_id = h.token_id;
	*out = c;
	return 0;
}

void sc_close(sc_client *c)
{
	if (c == NULL)
		return;
	if (c->fd >= 0)
		close(c->fd);
	msgpack_unpacked_destroy(&c->msg);
	msgpack_unpacker_destroy(&c->unp);
	msgpack_sbuffer_destroy(&c->sbuf);
	free(c);
}

const char *sc_last_error(const sc_client *c)
{
	return c != NULL ? c->error : "";
}

const char *sc_server_version(const sc_client *c)
{
	return c != NULL ? c->version : "";
}

const char *sc_role(const sc_client *c)
{
	return c != NULL ? c->role : "";
}

uint64_t sc_bound_agent_id(const sc_client *c)
{
	return c != NULL ? c->agent_id : 0;
}

uint64_t sc_token_id(const sc_client *c)
{
	return c != NULL ? c->token_id : 0;
}

/* ----- pushed alerts ----- */

int sc_alert_next(sc_client *c, int timeout_ms, sc_alert *out)
{
	int64_t deadline = timeout_ms < 0 ? -1 : monotonic_ms() + timeout_ms;
	const msgpack_object *m;
	int rc;

	for (;;) {
		if (c->alerts_len > 0) {
			*out = c->alerts[c->alerts_head];
			c->alerts_head = (c->alerts_head + 1) % ALERT_QUEUE;
			c->alerts_len--;
			return 0;
		}
		if (c->fd < 0)
			return sc_client_fail(c, SC_ECLOSED, "the connection is closed");
		if ((rc = receive_until(c, &deadline)) != 0)
			return rc;
		m = &c->msg.data;
		if (m->type != MSGPACK_OBJECT_ARRAY || m->via.array.size < 3 ||
		    m->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
		    m->via.array.ptr[0].via.u64 != 2)
			return sc_client_broken(c, SC_EPROTO,
			                     "a message other than a notification, with no call "
			                     "waiting");
		if ((rc = sc_client_take_notification(c, m)) != 0)
			return rc;
	}
}

uint64_t sc_alerts_dropped(const sc_client *c)
{
	return c != NULL ? c->alerts_dropped : 0;
}
