/*
 * server.c: the Unix-socket server. Accepts connections, frames each byte
 * stream into MessagePack-RPC messages, calls the handler for each request
 * and writes the responses back, in order and batched.
 *
 * Threads: everything here runs on the loop thread of the uv_loop_t given to
 * srv_init(), including the handler; there are no locks.
 *
 * Ownership: the server owns its listener, its stop timer and every struct
 * conn. A conn is freed only in its close callback (libuv may still call
 * its write callback, with UV_ECANCELED, after uv_close), so code holding a
 * conn pointer may keep using it until control returns to the loop; it tests
 * c->closing instead. The server's memory is freed by srv_free() after
 * srv_stop() has reported done.
 *
 * DESIGN
 *
 * Input. Each connection reads into one buffer that grows up to max_message
 * + 64 KiB. After every read, conn_pump() scans the buffered bytes with the
 * connection's resumable proto_scanner and handles every complete message
 * (pipelining), then moves the unhandled tail to the front. A message cannot
 * outgrow the buffer: an incomplete one that reaches max_message is refused.
 *
 * Output. Responses are packed into c->out, one growable buffer reused for
 * the connection's life; everything packed in one pump is handed to the
 * kernel at once with uv_try_write(), and what the kernel does not take is
 * written with uv_write() from a second buffer (c->wbuf), swapped with
 * c->out, so at most one write is in flight and packing goes on meanwhile.
 * One msgpack_zone per connection, cleared between messages, holds the
 * unpacked request; in the steady state a request costs no malloc.
 *
 * Backpressure. Responses packed but not yet taken by the kernel are
 * outstanding (c->queued in c->out, c->inflight in c->wbuf). At
 * max_outstanding the pump stops handling messages and stops reading the
 * socket; the next write completion resumes both. A client that pipelines
 * without reading therefore holds at most max_outstanding responses and one
 * input buffer of daemon memory, and other connections are not slowed.
 *
 * Errors. A limit violation, malformed msgpack or a bad envelope is answered
 * with an error (as the response to the msgid if the scanner recovered it,
 * else as the notification [2, "error", [err]]); the connection then stops
 * reading and is closed once the error is written ("finishing"). Read and
 * write errors close the connection at once. Nothing touches another
 * connection.
 *
 * Stopping. srv_stop() closes the listener and arms the stop timer at 0 ms;
 * the sweep stops every reader and closes connections with nothing left to
 * write, the others close as their writes complete, and after 2 s whatever
 * remains is closed. When the last handle is closed, the socket and the lock
 * file are removed and done() is called.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "fsutil.h"
#include "server.h"
#include "sidecard.h"

#define SRV_BACKLOG 4096
#define SRV_DRAIN_MS 2000
#define SRV_DEFAULT_MODE 0660
#define SRV_DEFAULT_MAX_CONNECTIONS 1024
#define SRV_DEFAULT_MAX_OUTSTANDING 1024
#define IN_INITIAL (16 * 1024)   /* first size of a connection's input buffer */
#define IN_SLACK (64 * 1024)     /* input buffer beyond max_message */
#define ZONE_CHUNK 8192

struct conn {
	uv_pipe_t pipe; /* pipe.data = the conn */
	struct srv *srv;
	uint64_t id;
	struct conn *prev, *next;

	char *in; /* in[in_off..in_len): received, not yet handled */
	size_t in_off, in_len, in_cap;
	struct proto_scanner scan;
	msgpack_zone zone;

	msgpack_sbuffer out;  /* packed, not yet given to the kernel */
	msgpack_sbuffer wbuf; /* the bytes of the write in flight */
	msgpack_packer pk;    /* packs into out */
	uv_write_t wreq;
	unsigned queued;   /* responses in out */
	unsigned inflight; /* responses in wbuf */
	uint64_t wait_seq; /* out may be sent once the ledger is durable up to here */

	unsigned zone_ready : 1;
	unsigned reading : 1;
	unsigned writing : 1;    /* wreq in flight */
	unsigned finishing : 1;  /* write what is queued, then close */
	unsigned closing : 1;    /* uv_close called */
	unsigned rejected : 1;   /* beyond max_connections */
	unsigned in_handler : 1;
	unsigned out_of_memory : 1;
};

struct srv {
	uv_loop_t *loop;
	uv_pipe_t listener;
	uv_timer_t stop_timer;
	struct srv_config cfg;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char lock_path[PATH_MAX];
	int lock_fd;
	srv_handler handler;
	void *ctx;

	struct conn *conns; /* every connection, accepted or rejected */
	unsigned n_conns;
	unsigned n_open; /* accepted (not rejected) connections */
	uint64_t next_id;
	uint64_t durable_seq; /* the ledger is on disk up to this sequence */
	struct srv_stats stats;

	unsigned stopping : 1;
	unsigned listener_closed : 1;
	unsigned timer_closing : 1;
	void (*done)(void *arg);
	void *done_arg;
};

static void conn_pump(struct conn *c);
static void maybe_finish(struct srv *s);

/* ----- configuration ----- */

void srv_config_default(struct srv_config *cfg, const char *path)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->socket_path = path;
	cfg->mode = SRV_DEFAULT_MODE;
	cfg->gid = -1;
	cfg->max_connections = SRV_DEFAULT_MAX_CONNECTIONS;
	cfg->max_outstanding = SRV_DEFAULT_MAX_OUTSTANDING;
	proto_limits_default(&cfg->limits);
}

static void fill_defaults(struct srv_config *cfg)
{
	struct proto_limits d;

	proto_limits_default(&d);
	if (cfg->mode == 0)
		cfg->mode = SRV_DEFAULT_MODE;
	if (cfg->max_connections == 0)
		cfg->max_connections = SRV_DEFAULT_MAX_CONNECTIONS;
	if (cfg->max_outstanding == 0)
		cfg->max_outstanding = SRV_DEFAULT_MAX_OUTSTANDING;
	if (cfg->limits.max_message == 0)
		cfg->limits.max_message = d.max_message;
	if (cfg->limits.max_depth == 0)
		cfg->limits.max_depth = d.max_depth;
	if (cfg->limits.max_string == 0)
		cfg->limits.max_string = d.max_string;
	if (cfg->limits.max_items == 0)
		cfg->limits.max_items = d.max_items;
}

/* ----- the socket file and its lock ----- */

static int sys_error(char *err, size_t errlen, const char *what, const char *path)
{
	int e = errno;

	snprintf(err, errlen, "%s %s: %s", what, path, strerror(e));
	return -e;
}

static int take_lock(struct srv *s, char *err, size_t errlen)
{
	long holder;
	int fd = fs_lock(s->lock_path, &holder, err, errlen);

	if (fd == SC_EEXISTS) {
		if (holder > 0)
			snprintf(err, errlen, "another sidecard is running on %s (pid %ld)", s->path,
			         holder);
		else
			snprintf(err, errlen, "another sidecard is running on %s (pid unknown)",
			         s->path);
	}
	if (fd < 0)
		return fd;
	s->lock_fd = fd;
	return 0;
}

static void release_lock(struct srv *s)
{
	if (s->lock_fd < 0)
		return;
	unlink(s->lock_path);
	close(s->lock_fd);
	s->lock_fd = -1;
}

/* Under the lock, a socket file can only be a crashed daemon's leftover. */
static int remove_stale(struct srv *s, char *err, size_t errlen)
{
	struct stat st;

	if (lstat(s->path, &st) != 0)
		return errno == ENOENT ? 0 : sys_error(err, errlen, "cannot stat", s->path);
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "%s exists and is not a socket", s->path);
		return SC_EEXISTS;
	}
	if (unlink(s->path) != 0)
		return sys_error(err, errlen, "cannot remove stale socket", s->path);
	return 0;
}

/* Binds and listens; returns the socket or a negative code. */
static int bind_socket(struct srv *s, char *err, size_t errlen)
{
	struct sockaddr_un sa;
	int fd, rc;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, s->path, strlen(s->path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return sys_error(err, errlen, "cannot create socket for", s->path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		rc = sys_error(err, errlen, "cannot bind", s->path);
		close(fd);
		return rc;
	}
	if (chmod(s->path, s->cfg.mode) != 0)
		rc = sys_error(err, errlen, "cannot chmod", s->path);
	else if (s->cfg.gid >= 0 && chown(s->path, (uid_t)-1, (gid_t)s->cfg.gid) != 0)
		rc = sys_error(err, errlen, "cannot chown", s->path);
	else if (listen(fd, SRV_BACKLOG) != 0)
		rc = sys_error(err, errlen, "cannot listen on", s->path);
	else
		return fd;
	unlink(s->path);
	close(fd);
	return rc;
}

/* ----- connections: output ----- */

static int conn_write_out(void *data, const char *buf, size_t len)
{
	struct conn *c = data;

	if (msgpack_sbuffer_write(&c->out, buf, len) != 0) {
		c->out_of_memory = 1;
		return -1;
	}
	return 0;
}

static void note_queued(struct conn *c)
{
	uint64_t outstanding;

	c->queued++;
	outstanding = (uint64_t)c->queued + c->inflight;
	if (outstanding > c->srv->stats.outstanding_peak)
		c->srv->stats.outstanding_peak = outstanding;
}

static void on_conn_close(uv_handle_t *h)
{
	struct conn *c = h->data;
	struct srv *s = c->srv;

	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->n_conns--;
	if (!c->rejected)
		s->n_open--;
	if (c->zone_ready)
		msgpack_zone_destroy(&c->zone);
	msgpack_sbuffer_destroy(&c->out);
	msgpack_sbuffer_destroy(&c->wbuf);
	free(c->in);
	free(c);
	if (s->stopping)
		maybe_finish(s);
}

static void conn_close(struct conn *c)
{
	if (c->closing)
		return;
	c->closing = 1;
	c->reading = 0;
	uv_close((uv_handle_t *)&c->pipe, on_conn_close);
}

/* Closes a connection that must end once its output is written. */
static void conn_settle(struct conn *c)
{
	if ((c->finishing || c->srv->stopping) && !c->writing && c->out.size == 0)
		conn_close(c);
}

static void on_write(uv_write_t *req, int status)
{
	struct conn *c = req->handle->data;

	c->writing = 0;
	c->inflight = 0;
	c->wbuf.size = 0;
	if (c->closing)
		return;
	if (status < 0) {
		conn_close(c);
		return;
	}
	conn_pump(c);
}

static void swap_buffers(struct conn *c)
{
	msgpack_sbuffer t = c->out;

	c->out = c->wbuf;
	c->wbuf = t;
}

/* Gives c->out to the kernel: at once if it takes it all, else by uv_write. */
static void conn_flush(struct conn *c)
{
	uv_buf_t b;
	int n;

	if (c->writing || c->closing || c->out.size == 0 || c->wait_seq > c->srv->durable_seq)
		return;
	b = uv_buf_init(c->out.data, (unsigned)c->out.size);
	n = uv_try_write((uv_stream_t *)&c->pipe, &b, 1);
	if (n >= 0 && (size_t)n == c->out.size) {
		c->out.size = 0;
		c->queued = 0;
		return;
	}
	if (n < 0 && n != UV_EAGAIN) {
		conn_close(c);
		return;
	}
	if (n < 0)
		n = 0;
	swap_buffers(c);
	c->inflight = c->queued;
	c->queued = 0;
	b = uv_buf_init(c->wbuf.data + n, (unsigned)(c->wbuf.size - (size_t)n));
	if (uv_write(&c->wreq, (uv_stream_t *)&c->pipe, &b, 1, on_write) != 0) {
		conn_close(c);
		return;
	}
	c->writing = 1;
}

/* [2, "error", [{code, name, message}]] */
static void pack_error_notification(struct conn *c, int code, const char *message)
{
	msgpack_pack_array(&c->pk, 3);
	msgpack_pack_int(&c->pk, PROTO_NOTIFICATION);
	proto_pack_cstr(&c->pk, "error");
	msgpack_pack_array(&c->pk, 1);
	proto_pack_error(&c->pk, code, message);
}

/*
 * Answers a message that ends the connection: to its msgid if known, else
 * with the error notification.
 */
static void conn_fail(struct conn *c, int code, int64_t msgid, const char *message)
{
	c->srv->stats.protocol_errors++;
	if (msgid >= 0) {
		msgpack_pack_array(&c->pk, 4);
		msgpack_pack_int(&c->pk, PROTO_RESPONSE);
		msgpack_pack_uint32(&c->pk, (uint32_t)msgid);
		proto_pack_error(&c->pk, code, message);
		msgpack_pack_nil(&c->pk);
	} else {
		pack_error_notification(c, code, message);
	}
	note_queued(c);
	c->finishing = 1;
}

/* ----- connections: input ----- */

/* Unpacks and answers one complete message. */
static void conn_handle(struct conn *c, const char *buf, size_t len, int64_t msgid)
{
	struct srv *s = c->srv;
	struct proto_request req;
	struct srv_request r;
	char err[128];
	size_t mark = c->out.size;
	uint64_t seq;

	msgpack_zone_clear(&c->zone);
	if (proto_request_parse(buf, len, &c->zone, &req, err, sizeof(err)) != 0) {
		conn_fail(c, SC_EPROTO, msgid, err);
		return;
	}
	s->stats.requests++;
	r.conn_id = c->id;
	r.msgid = req.msgid;
	r.notification = req.type == PROTO_NOTIFICATION;
	r.method = req.method;
	r.method_len = req.method_len;
	r.params = req.params;
	r.params_raw = req.params_raw;
	r.params_raw_len = req.params_raw_len;
	if (!r.notification) {
		msgpack_pack_array(&c->pk, 4);
		msgpack_pack_int(&c->pk, PROTO_RESPONSE);
		msgpack_pack_uint32(&c->pk, req.msgid);
	}
	c->in_handler = 1;
	seq = s->handler(s->ctx, &r, &c->pk);
	c->in_handler = 0;
	if (seq > c->wait_seq)
		c->wait_seq = seq;
	if (r.notification)
		c->out.size = mark;
	else
		note_queued(c);
}

/*
 * Handles the complete messages buffered. Returns 1 when it stopped at
 * max_outstanding with input left, 0 when it needs more input or must stop.
 */
static int conn_process(struct conn *c)
{
	struct srv *s = c->srv;
	const struct proto_limits *l = &s->cfg.limits;

	while (!c->finishing && !c->closing && !s->stopping && c->in_off < c->in_len) {
		char message[128];
		enum proto_scan r;
		int64_t msgid;
		size_t len;

		if (c->queued + c->inflight >= s->cfg.max_outstanding)
			return 1;
		r = proto_scanner_feed(&c->scan, c->in + c->in_off, c->in_len - c->in_off, l, &len,
		                       &msgid);
		if (r == PROTO_SCAN_INCOMPLETE)
			return 0;
		if (r != PROTO_SCAN_OK) {
			conn_fail(c, proto_scan_code(r), msgid,
			          proto_scan_message(r, l, message, sizeof(message)));
			return 0;
		}
		conn_handle(c, c->in + c->in_off, len, msgid);
		c->in_off += len;
		proto_scanner_reset(&c->scan);
	}
	return 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

/* Reads while the connection may take more input, stops otherwise. */
static void conn_update_reading(struct conn *c)
{
	struct srv *s = c->srv;
	int full = c->queued + c->inflight >= s->cfg.max_outstanding;
	int want = !c->closing && !c->finishing && !s->stopping && !full;

	if (want && !c->reading) {
		if (uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read) != 0) {
			conn_close(c);
			return;
		}
		c->reading = 1;
	} else if (!want && c->reading) {
		uv_read_stop((uv_stream_t *)&c->pipe);
		c->reading = 0;
		if (full && !c->finishing && !s->stopping)
			s->stats.read_pauses++;
	}
}

static void conn_compact(struct conn *c)
{
	if (c->in_off == 0)
		return;
	memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
	c->in_len -= c->in_off;
	c->in_off = 0;
}

/* Handles buffered input and writes the answers, as far as backpressure allows. */
static void conn_pump(struct conn *c)
{
	for (;;) {
		int blocked = conn_process(c);

		if (c->out_of_memory) {
			conn_close(c);
			return;
		}
		conn_flush(c);
		if (c->closing)
			return;
		if (!blocked || c->writing)
			break;
	}
	conn_compact(c);
	conn_update_reading(c);
	if (!c->closing)
		conn_settle(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct conn *c = h->data;
	size_t max = c->srv->cfg.limits.max_message + IN_SLACK;

	if (c->in_cap - c->in_len < IN_INITIAL && c->in_cap < max) {
		size_t cap = c->in_cap ? c->in_cap * 2 : IN_INITIAL;
		char *p;

		if (cap > max)
			cap = max;
		p = realloc(c->in, cap);
		if (p) {
			c->in = p;
			c->in_cap = cap;
		}
	}
	/* a zero-length buffer makes libuv report UV_ENOBUFS, which closes */
	*buf = uv_buf_init(c->in ? c->in + c->in_len : NULL, (unsigned)(c->in_cap - c->in_len));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct conn *c = stream->data;

	if (nread == 0 || c->closing)
		return;
	if (nread == UV_EOF) {
		/* the client is done sending; answer what it sent, then close */
		c->finishing = 1;
		conn_update_reading(c);
		conn_settle(c);
		return;
	}
	if (nread < 0) {
		conn_close(c);
		return;
	}
	c->in_len += (size_t)nread;
	conn_pump(c);
}

/* ----- accepting ----- */

static struct conn *conn_new(struct srv *s)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->srv = s;
	c->id = ++s->next_id;
	msgpack_sbuffer_init(&c->out);
	msgpack_sbuffer_init(&c->wbuf);
	msgpack_packer_init(&c->pk, c, conn_write_out);
	proto_scanner_reset(&c->scan);
	c->pipe.data = c;
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->n_conns++;
	return c;
}

static void conn_reject(struct conn *c)
{
	char message[64];

	c->rejected = 1;
	c->srv->stats.rejected_connections++;
	snprintf(message, sizeof(message), "too many connections (max %u)",
	         c->srv->cfg.max_connections);
	pack_error_notification(c, SC_ELIMIT, message);
	note_queued(c);
	c->finishing = 1;
	conn_flush(c);
	if (!c->closing)
		conn_settle(c);
}

static void on_connection(uv_stream_t *listener, int status)
{
	struct srv *s = listener->data;
	struct conn *c;

	if (status < 0 || s->stopping)
		return;
	c = conn_new(s);
	if (c == NULL)
		return; /* out of memory: libuv stops accepting until the next callback */
	uv_pipe_init(s->loop, &c->pipe, 0);
	if (uv_accept(listener, (uv_stream_t *)&c->pipe) != 0) {
		c->rejected = 1;
		conn_close(c);
		return;
	}
	if (s->n_open >= s->cfg.max_connections) {
		conn_reject(c);
		return;
	}
	s->n_open++;
	s->stats.connections_total++;
	if (!msgpack_zone_init(&c->zone, ZONE_CHUNK)) {
		conn_close(c);
		return;
	}
	c->zone_ready = 1;
	conn_update_reading(c);
}

/* ----- the server ----- */

static int check_config(const struct srv_config *cfg, char *err, size_t errlen)
{
	if (cfg->socket_path == NULL || cfg->socket_path[0] == '\0') {
		snprintf(err, errlen, "socket path is empty");
		return SC_EINVAL;
	}
	if (strlen(cfg->socket_path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		snprintf(err, errlen, "socket path %s is longer than %zu bytes", cfg->socket_path,
		         sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
		return SC_EINVAL;
	}
	return 0;
}

/* Takes the lock and the socket file; returns the listening socket. */
static int open_socket(struct srv *s, char *err, size_t errlen)
{
	int rc = fs_mkdirs(s->path, 0, err, errlen);

	if (rc == 0)
		rc = take_lock(s, err, errlen);
	if (rc == 0)
		rc = remove_stale(s, err, errlen);
	if (rc == 0)
		rc = bind_socket(s, err, errlen);
	if (rc < 0)
		release_lock(s);
	return rc;
}

static void free_after_close(uv_handle_t *h)
{
	free(h->data);
}

int srv_init(struct srv **out, uv_loop_t *loop, const struct srv_config *cfg, srv_handler h,
             void *ctx, char *err, size_t errlen)
{
	struct srv *s;
	int rc, fd;

	rc = check_config(cfg, err, errlen);
	if (rc)
		return rc;
	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		snprintf(err, errlen, "out of memory");
		return SC_EINTERNAL;
	}
	s->loop = loop;
	s->cfg = *cfg;
	fill_defaults(&s->cfg);
	snprintf(s->path, sizeof(s->path), "%s", cfg->socket_path);
	s->cfg.socket_path = s->path;
	snprintf(s->lock_path, sizeof(s->lock_path), "%s.lock", s->path);
	s->lock_fd = -1;
	s->handler = h;
	s->ctx = ctx;
	fd = open_socket(s, err, errlen);
	if (fd < 0) {
		free(s);
		return fd;
	}
	uv_pipe_init(loop, &s->listener, 0);
	s->listener.data = s;
	rc = uv_pipe_open(&s->listener, fd);
	if (rc != 0)
		close(fd);
	else
		rc = uv_listen((uv_stream_t *)&s->listener, SRV_BACKLOG, on_connection);
	if (rc != 0) {
		/*
		 * libuv refused a fresh listening socket, which it never does in
		 * practice; the listener is already in the loop, so s is freed by
		 * its close callback on the loop's next turn.
		 */
		snprintf(err, errlen, "cannot listen on %s: %s", s->path, uv_strerror(rc));
		unlink(s->path);
		release_lock(s);
		uv_close((uv_handle_t *)&s->listener, free_after_close);
		return rc;
	}
	uv_timer_init(loop, &s->stop_timer);
	s->stop_timer.data = s;
	*out = s;
	return 0;
}

static void on_timer_close(uv_handle_t *h)
{
	struct srv *s = h->data;

	unlink(s->path);
	release_lock(s);
	if (s->done)
		s->done(s->done_arg);
}

static void maybe_finish(struct srv *s)
{
	if (!s->stopping || !s->listener_closed || s->n_conns > 0 || s->timer_closing)
		return;
	s->timer_closing = 1;
	uv_timer_stop(&s->stop_timer);
	uv_close((uv_handle_t *)&s->stop_timer, on_timer_close);
}

static void on_listener_close(uv_handle_t *h)
{
	struct srv *s = h->data;

	s->listener_closed = 1;
	maybe_finish(s);
}

static void on_stop_deadline(uv_timer_t *t)
{
	struct srv *s = t->data;

	for (struct conn *c = s->conns; c; c = c->next)
		conn_close(c);
}

/* First step of stopping, on the loop's next turn: close every idle connection. */
static void on_stop_sweep(uv_timer_t *t)
{
	struct srv *s = t->data;

	for (struct conn *c = s->conns; c; c = c->next) {
		conn_update_reading(c);
		if (!c->closing)
			conn_settle(c);
	}
	uv_timer_start(&s->stop_timer, on_stop_deadline, SRV_DRAIN_MS, 0);
	maybe_finish(s);
}

void srv_stop(struct srv *s, void (*done)(void *arg), void *arg)
{
	if (s->stopping)
		return;
	s->stopping = 1;
	s->done = done;
	s->done_arg = arg;
	uv_close((uv_handle_t *)&s->listener, on_listener_close);
	uv_timer_start(&s->stop_timer, on_stop_sweep, 0, 0);
}

void srv_free(struct srv *s)
{
	free(s);
}

void srv_get_stats(const struct srv *s, struct srv_stats *st)
{
	*st = s->stats;
	st->connections_open = s->n_open;
}

void srv_set_durable(struct srv *s, uint64_t seq)
{
	struct conn *c, *next;

	if (seq <= s->durable_seq)
		return;
	s->durable_seq = seq;
	for (c = s->conns; c; c = next) {
		next = c->next;
		if (!c->closing && !c->writing && !c->in_handler && c->out.size && c->wait_seq <= seq)
			conn_pump(c);
	}
}

int srv_conn_open(const struct srv *s, uint64_t conn_id)
{
	const struct conn *c = s->conns;

	while (c && c->id != conn_id)
		c = c->next;
	return c != NULL && !c->closing && !c->finishing && !c->rejected && !s->stopping;
}

int srv_notify(struct srv *s, uint64_t conn_id, const char *method, const char *packed_params,
               size_t len)
{
	struct conn *c = s->conns;

	while (c && c->id != conn_id)
		c = c->next;
	if (c == NULL || c->closing || c->finishing || c->rejected || s->stopping)
		return SC_ENOTFOUND;
	if (c->in_handler)
		return SC_EUNAVAILABLE;
	if (c->queued + c->inflight >= s->cfg.max_outstanding)
		return SC_ELIMIT;
	msgpack_pack_array(&c->pk, 3);
	msgpack_pack_int(&c->pk, PROTO_NOTIFICATION);
	proto_pack_cstr(&c->pk, method);
	conn_write_out(c, packed_params, len);
	if (c->out_of_memory) {
		conn_close(c);
		return SC_EINTERNAL;
	}
	note_queued(c);
	conn_flush(c);
	if (!c->closing)
		conn_update_reading(c);
	return 0;
}
