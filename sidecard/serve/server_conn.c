/*
 * server_conn.c: a connection, and the worker's loop that serves it. Frames
 * each connection's byte stream into MessagePack-RPC messages, calls the
 * handler for each request and writes the responses back, in order and
 * batched; adopts the connections the listener hands the worker, takes the
 * worker's inbox, releases replies held for the ledger, and stops the
 * worker's connections.
 *
 * Threads: everything here runs on the thread of the worker serving the
 * connection: a worker thread, or the main loop itself without worker
 * threads (cfg.workers <= 1), where there are no locks. A worker owns its
 * connections outright; it takes its own mutex to empty its inbox and the
 * server's uid_lock (a leaf) to count a uid's connections, and reads the
 * durable sequence as an atomic. srv_uid_take and srv_drop_fd may run on
 * any of the server's threads.
 *
 * Ownership: the worker owns every struct conn it adopted. A conn is freed
 * only in its close callback (libuv may still call its write callback, with
 * UV_ECANCELED, after uv_close), so code holding a conn pointer may keep
 * using it until control returns to the loop; it tests c->closing instead.
 * An inbox item is freed here once taken.
 *
 * May call: server_socket.c (srv_maybe_finish, once a worker without a
 * thread has stopped), and the handler and conn_closed of the configuration.
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
 * outstanding (c->queued in c->out, c->inflight in c->wbuf), and so are
 * their bytes. At max_outstanding responses or max_outstanding_bytes bytes
 * (tested before each request, so one reply may pass it) the pump stops
 * handling messages and stops reading the socket; the next write completion,
 * or srv_set_durable for replies held for the ledger, resumes both. A client
 * that pipelines without reading therefore holds at most max_outstanding
 * responses, max_outstanding_bytes plus one reply, and one input buffer of
 * daemon memory, and other connections are not slowed. A burst of large
 * replies grows the output buffers; each is freed once empty if it passed
 * OUT_KEEP, so an idle connection keeps little.
 *
 * Held replies. In strict durability a mutating reply waits in c->out until
 * srv_set_durable reports its record on disk, and that sync runs on the
 * main loop. The pump therefore never waits for room in place: it handles
 * what it may, returns to the loop, and is called again from the write
 * completion or from the release of held replies. A client's EOF ends
 * reading, not handling: what it pipelined before is answered, then the
 * connection closes.
 *
 * Errors. A limit violation, malformed msgpack or a bad envelope is answered
 * with an error (as the response to the msgid if the scanner recovered it,
 * else as the notification [2, "error", [err]]); the connection then stops
 * handling input ("finishing") and, once the error is written, lingers: our
 * side is shut down and the client's input is read and dropped until its EOF
 * or SRV_LINGER_MS, so the client reads the error and then EOF rather than
 * a reset (a socket closed with unread input resets its peer). A connection
 * refused beyond max_connections (or max_per_uid) ends the same way, unless
 * SRV_MAX_REFUSED_LINGERING refused ones linger already: it is then closed
 * once its error is written. Read and write errors
 * close the connection at once. Nothing touches another connection.
 *
 * The worker's loop. A connection is adopted (srv_worker_adopt) on the
 * worker's loop: from the listener directly without worker threads, else
 * from the worker's inbox (srv_on_wake), which also brings the notifications
 * other threads handed it. When the durable sequence grows, the worker
 * pumps every connection whose held replies it now covers
 * (srv_worker_release).
 *
 * Stopping. srv_worker_stop arms the stop timer at 0 ms; the sweep stops
 * every reader and closes connections with nothing left to write, the
 * others close as their writes complete, and after SRV_DRAIN_MS whatever
 * remains is closed. A worker with no connection left closes its stop
 * timer; a worker thread then drops what its inbox still holds and closes
 * its wake-up, so its loop ends; without threads the server is told at
 * once (srv_maybe_finish).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "access.h"
#include "server_int.h"
#include "sidecard.h"

#define SRV_DRAIN_MS 2000
#define SRV_LINGER_MS 500 /* how long a connection closed on an error drains its client's input */
#define SRV_TURN_NS 2000000 /* a connection's share of one loop turn before others get theirs */
/*
 * Refused connections that may linger at once (conn_linger); past it a
 * refused one is closed as soon as its error is handed to the kernel, so
 * a flood of connections beyond the limits holds few descriptors.
 */
#define SRV_MAX_REFUSED_LINGERING 64
#define OUT_KEEP (256 * 1024) /* an output buffer larger than this is freed once empty */
#define IN_INITIAL (16 * 1024)   /* first size of a connection's input buffer */
#define IN_SLACK (64 * 1024)     /* input buffer beyond max_message */
#define ZONE_CHUNK 8192

/* A counter its worker alone writes: a plain add, published for other threads' reads. */
#define STAT_ADD(w, field, n) __atomic_store_n(&(w)->stats.field, (w)->stats.field + (n), \
                                               __ATOMIC_RELAXED)

struct conn {
	uv_pipe_t pipe; /* pipe.data = the conn */
	uv_timer_t linger;   /* while lingering: when to close regardless */
	uv_idle_t resume;    /* while yielded: handles the rest of the input on the next turn */
	uv_timer_t auth;     /* while unauthenticated: when to give up on its hello */
	uv_shutdown_t sreq;  /* while lingering: the end of our output */
	unsigned handles;    /* of pipe and its timers, open or closing; the conn is freed at 0 */
	struct worker *w;
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
	struct access_peer peer; /* who is at the other end (access.h) */

	unsigned zone_ready : 1;
	unsigned reading : 1;
	unsigned writing : 1;    /* wreq in flight */
	unsigned finishing : 1;  /* write what is queued, then close */
	unsigned eof : 1;        /* the client sent all it will: answer what is buffered */
	unsigned lingering : 1;  /* finished and written: discarding input until EOF or linger */
	unsigned yielded : 1;    /* used its turn with input left: resume is active */
	unsigned paused : 1;     /* full when last looked at (read_pauses counts the changes) */
	unsigned resume_ready : 1; /* resume was initialised (and counts in handles) */
	unsigned closing : 1;    /* uv_close called */
	unsigned rejected : 2;   /* enum reject: refused at accept */
	unsigned uid_counted : 1; /* counts in its uid's connections (max_per_uid) */
	unsigned refused_counted : 1; /* counts in n_refused */
	unsigned auth_ready : 1; /* auth was initialised (and counts in handles) */
	unsigned in_handler : 1;
	unsigned out_of_memory : 1;
};


static void conn_pump(struct conn *c);
static void worker_maybe_finish(struct worker *w);

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
	if (outstanding > c->w->stats.outstanding_peak)
		__atomic_store_n(&c->w->stats.outstanding_peak, outstanding, __ATOMIC_RELAXED);
}

/*
 * The connection holds as many responses, or as many bytes of them, as it
 * may: handle no more of its requests until some are written. The bytes are
 * tested before a request is handled, so one reply may go past the bound.
 */
static int conn_full(const struct conn *c)
{
	const struct srv_config *cfg = &c->w->srv->cfg;

	return c->queued + c->inflight >= cfg->max_outstanding ||
	       c->out.size + c->wbuf.size >= cfg->max_outstanding_bytes;
}

/* Gives back the memory of an empty output buffer that a burst of large replies grew. */
static void shrink_buffer(msgpack_sbuffer *b)
{
	if (b->size == 0 && b->alloc > OUT_KEEP) {
		msgpack_sbuffer_destroy(b);
		msgpack_sbuffer_init(b);
	}
}

/* One fewer connection of uid (max_per_uid). Any thread. */
static void uid_release(struct srv *s, uint32_t uid)
{
	pthread_mutex_lock(&s->uid_lock);
	for (unsigned i = 0; i < s->n_uids; i++) {
		if (s->uids[i].uid != uid)
			continue;
		if (--s->uids[i].n == 0)
			s->uids[i] = s->uids[--s->n_uids];
		break;
	}
	pthread_mutex_unlock(&s->uid_lock);
}

/*
 * One more connection of uid, unless it has max_per_uid already: 0, or -1.
 * Linear in the uids connected that are not admins', which a host has few
 * of; an admin's connections are not counted.
 */
int srv_uid_take(struct srv *s, uint32_t uid)
{
	int rc = 0;
	unsigned i;

	pthread_mutex_lock(&s->uid_lock);
	for (i = 0; i < s->n_uids && s->uids[i].uid != uid; i++)
		;
	if (i == s->n_uids) {
		if (i == s->cfg.max_connections)
			rc = -1;
		else
			s->uids[s->n_uids++] = (struct uid_count){uid, 1};
	} else if (s->uids[i].n >= s->cfg.max_per_uid) {
		rc = -1;
	} else {
		s->uids[i].n++;
	}
	pthread_mutex_unlock(&s->uid_lock);
	return rc;
}

static void on_conn_close(uv_handle_t *h)
{
	struct conn *c = h->data;
	struct worker *w = c->w;
	struct srv *s = w->srv;

	if (--c->handles > 0)
		return;
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	w->n_conns--;
	if (c->refused_counted)
		__atomic_sub_fetch(&s->n_refused, 1, __ATOMIC_RELAXED);
	if (!c->rejected) {
		__atomic_sub_fetch(&s->n_open, 1, __ATOMIC_RELAXED);
		__atomic_sub_fetch(&w->assigned, 1, __ATOMIC_RELAXED);
		if (s->cfg.conn_closed)
			s->cfg.conn_closed(s->ctx, c->id, &c->peer);
	}
	if (c->uid_counted)
		uid_release(s, c->peer.uid);
	if (c->zone_ready)
		msgpack_zone_destroy(&c->zone);
	msgpack_sbuffer_destroy(&c->out);
	msgpack_sbuffer_destroy(&c->wbuf);
	free(c->in);
	free(c);
	if (w->stopping)
		worker_maybe_finish(w);
}

static void conn_close(struct conn *c)
{
	if (c->closing)
		return;
	c->closing = 1;
	c->reading = 0;
	uv_close((uv_handle_t *)&c->pipe, on_conn_close);
	if (c->lingering)
		uv_close((uv_handle_t *)&c->linger, on_conn_close);
	if (c->resume_ready)
		uv_close((uv_handle_t *)&c->resume, on_conn_close);
	if (c->auth_ready)
		uv_close((uv_handle_t *)&c->auth, on_conn_close);
}

static void on_linger_end(uv_timer_t *t)
{
	conn_close(t->data);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	struct conn *c = req->handle->data;

	if (status < 0 && !c->closing)
		conn_close(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

/*
 * Ends a connection whose last message (an error) is written without
 * resetting it: a socket closed with unread input makes the client's next
 * read fail with ECONNRESET, or its write with EPIPE, before it has seen our
 * error. So our side is shut down (the client reads the error, then EOF),
 * its input is read and dropped until its EOF, and the connection closes
 * then or after SRV_LINGER_MS.
 */
static void conn_linger(struct conn *c)
{
	uv_loop_t *loop = c->w->loop;

	if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->pipe, on_shutdown) != 0) {
		conn_close(c);
		return;
	}
	c->in_off = c->in_len = 0;
	uv_timer_init(loop, &c->linger);
	c->linger.data = c;
	c->handles++;
	c->lingering = 1;
	uv_timer_start(&c->linger, on_linger_end, SRV_LINGER_MS, 0);
	if (!c->reading) {
		if (uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read) != 0) {
			conn_close(c);
			return;
		}
		c->reading = 1;
	}
}

/* Ends a connection that must end once its output is written. */
static void conn_settle(struct conn *c)
{
	if (c->writing || c->out.size != 0 || c->lingering)
		return;
	if (c->w->stopping || (c->finishing && c->eof))
		conn_close(c);
	else if (c->finishing)
		conn_linger(c);
}

static void on_write(uv_write_t *req, int status)
{
	struct conn *c = req->handle->data;

	c->writing = 0;
	c->inflight = 0;
	c->wbuf.size = 0;
	shrink_buffer(&c->wbuf);
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

	if (c->writing || c->closing || c->out.size == 0 ||
	    c->wait_seq > __atomic_load_n(&c->w->srv->durable_seq, __ATOMIC_ACQUIRE))
		return;
	b = uv_buf_init(c->out.data, (unsigned)c->out.size);
	n = uv_try_write((uv_stream_t *)&c->pipe, &b, 1);
	if (n >= 0 && (size_t)n == c->out.size) {
		c->out.size = 0;
		c->queued = 0;
		shrink_buffer(&c->out);
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
	STAT_ADD(c->w, protocol_errors, 1);
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
	struct srv *s = c->w->srv;
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
	STAT_ADD(c->w, requests, 1);
	r.conn_id = c->id;
	r.msgid = req.msgid;
	r.notification = req.type == PROTO_NOTIFICATION;
	r.method = req.method;
	r.method_len = req.method_len;
	r.params = req.params;
	r.params_raw = req.params_raw;
	r.params_raw_len = req.params_raw_len;
	r.peer = &c->peer;
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
	if (c->auth_ready && c->peer.role != ACCESS_NONE)
		uv_timer_stop(&c->auth);
	if (c->peer.close)
		c->finishing = 1;
}

enum { PROCESS_WAIT, PROCESS_FULL, PROCESS_YIELD };

/*
 * Handles the complete messages buffered. Returns PROCESS_FULL when it
 * stopped at max_outstanding(_bytes) with input left, PROCESS_YIELD when it
 * has used SRV_TURN_NS of this loop turn with input left, PROCESS_WAIT when
 * it needs more input or must stop.
 */
static int conn_process(struct conn *c)
{
	struct worker *w = c->w;
	const struct srv_config *cfg = &w->srv->cfg;
	const struct proto_limits *l = &cfg->limits;
	uint64_t start = uv_hrtime();

	while (!c->finishing && !c->closing && !w->stopping && c->in_off < c->in_len) {
		char message[128];
		enum proto_scan r;
		int64_t msgid;
		size_t len;

		if (conn_full(c))
			return PROCESS_FULL;
		if (uv_hrtime() - start > SRV_TURN_NS)
			return PROCESS_YIELD;
		r = proto_scanner_feed(&c->scan, c->in + c->in_off, c->in_len - c->in_off, l, &len,
		                       &msgid);
		if (r == PROTO_SCAN_INCOMPLETE)
			return PROCESS_WAIT;
		if (r != PROTO_SCAN_OK) {
			conn_fail(c, proto_scan_code(r), msgid,
			          proto_scan_message(r, l, message, sizeof(message)));
			return PROCESS_WAIT;
		}
		conn_handle(c, c->in + c->in_off, len, msgid);
		c->in_off += len;
		proto_scanner_reset(&c->scan);
	}
	return PROCESS_WAIT;
}

/* Reads while the connection may take more input, stops otherwise. */
static void conn_update_reading(struct conn *c)
{
	struct worker *w = c->w;
	int full = conn_full(c);
	int want = !c->closing && !c->finishing && !c->eof && !w->stopping && !full && !c->yielded;

	if (c->lingering && !w->stopping)
		return;
	/* a pause is the connection becoming full, whether or not it was being read */
	if (full && !c->paused && !c->finishing && !w->stopping)
		STAT_ADD(w, read_pauses, 1);
	c->paused = (unsigned)full;
	if (want && !c->reading) {
		if (uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read) != 0) {
			conn_close(c);
			return;
		}
		c->reading = 1;
	} else if (!want && c->reading) {
		uv_read_stop((uv_stream_t *)&c->pipe);
		c->reading = 0;
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

static void on_resume(uv_idle_t *h)
{
	struct conn *c = h->data;

	uv_idle_stop(h);
	c->yielded = 0;
	conn_pump(c);
}

/*
 * Lets the loop serve the other connections before this one's next
 * messages: they are handled from the resume handle on the next turn
 * (idle handles run every turn, in order, and keep the poll from waiting),
 * and the socket is not read meanwhile, since the input buffer is full.
 */
static void conn_yield(struct conn *c)
{
	if (!c->resume_ready) {
		uv_idle_init(c->w->loop, &c->resume);
		c->resume.data = c;
		c->resume_ready = 1;
		c->handles++;
	}
	c->yielded = 1;
	uv_idle_start(&c->resume, on_resume);
}

/* Handles buffered input and writes the answers, as far as backpressure allows. */
static void conn_pump(struct conn *c)
{
	int r;

	for (;;) {
		r = conn_process(c);
		if (c->out_of_memory) {
			conn_close(c);
			return;
		}
		conn_flush(c);
		if (c->closing)
			return;
		/*
		 * Go round again only if the flush made room. Output still held
		 * (the ledger is not yet durable up to it) or in flight waits for
		 * srv_set_durable or on_write, which pump again: spinning here
		 * would keep the loop from ever running the sync that releases it.
		 */
		if (r != PROCESS_FULL || c->writing || c->out.size)
			break;
	}
	if (r == PROCESS_YIELD)
		conn_yield(c);
	/* after the client's EOF, what is left unhandled is an incomplete message */
	if (c->eof && r == PROCESS_WAIT)
		c->finishing = 1;
	conn_compact(c);
	conn_update_reading(c);
	if (!c->closing)
		conn_settle(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct conn *c = h->data;
	size_t max = c->w->srv->cfg.limits.max_message + IN_SLACK;

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
	if (c->lingering) {
		/* drop what the client still sends; its EOF (or an error) ends it */
		if (nread < 0)
			conn_close(c);
		return;
	}
	if (nread == UV_EOF) {
		/* the client is done sending; answer what it sent, then close */
		c->eof = 1;
		conn_pump(c);
		return;
	}
	if (nread < 0) {
		conn_close(c);
		return;
	}
	c->in_len += (size_t)nread;
	conn_pump(c);
}

/* ----- notifications ----- */

static struct conn *find_conn(struct worker *w, uint64_t conn_id)
{
	struct conn *c = w->conns;

	while (c && c->id != conn_id)
		c = c->next;
	return c;
}

/* Queues msg (a whole packed message) on the worker's connection conn_id. */
int srv_deliver(struct worker *w, uint64_t conn_id, const char *method, const char *msg,
                size_t len)
{
	struct conn *c = find_conn(w, conn_id);

	if (c == NULL || c->closing || c->finishing || c->rejected || w->stopping)
		return SC_ENOTFOUND;
	if (c->in_handler)
		return SC_EUNAVAILABLE;
	if (conn_full(c)) {
		STAT_ADD(w, notifications_dropped, 1);
		return SC_ELIMIT;
	}
	if (method) {
		msgpack_pack_array(&c->pk, 3);
		msgpack_pack_int(&c->pk, PROTO_NOTIFICATION);
		proto_pack_cstr(&c->pk, method);
	}
	conn_write_out(c, msg, len);
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
/* ----- the worker's loop: adopting ----- */

static struct conn *conn_new(struct worker *w, uint64_t id)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->w = w;
	c->id = id;
	msgpack_sbuffer_init(&c->out);
	msgpack_sbuffer_init(&c->wbuf);
	msgpack_packer_init(&c->pk, c, conn_write_out);
	proto_scanner_reset(&c->scan);
	c->pipe.data = c;
	c->handles = 1;
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	w->n_conns++;
	return c;
}

static void conn_reject(struct conn *c)
{
	const struct srv_config *cfg = &c->w->srv->cfg;
	char message[96];

	STAT_ADD(c->w, rejected_connections, 1);
	if (c->rejected == REJECT_UID)
		snprintf(message, sizeof(message), "too many connections of uid %u (max %u per uid)",
		         (unsigned)c->peer.uid, cfg->max_per_uid);
	else
		snprintf(message, sizeof(message), "too many connections (max %u)",
		         cfg->max_connections);
	pack_error_notification(c, SC_ELIMIT, message);
	note_queued(c);
	c->finishing = 1;
	/* too many lingering already: closed once written, without draining its input */
	c->refused_counted = 1;
	if (__atomic_add_fetch(&c->w->srv->n_refused, 1, __ATOMIC_RELAXED) >
	    SRV_MAX_REFUSED_LINGERING)
		c->eof = 1;
	conn_flush(c);
	if (!c->closing)
		conn_settle(c);
}

/* Forgets a descriptor the listener counted but no connection took over. */
void srv_drop_fd(struct worker *w, int fd, int rejected, const struct access_peer *peer)
{
	close(fd);
	if (!rejected) {
		__atomic_sub_fetch(&w->srv->n_open, 1, __ATOMIC_RELAXED);
		__atomic_sub_fetch(&w->assigned, 1, __ATOMIC_RELAXED);
		if (peer->role != ACCESS_ADMIN)
			uid_release(w->srv, peer->uid);
	}
}

/*
 * An unauthenticated connection that has not presented a token by the
 * deadline is told so and closed: idle connections of peers nobody vouched
 * for would otherwise hold max_connections against everyone else.
 */
static void on_auth_timeout(uv_timer_t *t)
{
	struct conn *c = t->data;
	char message[96];

	if (c->closing || c->finishing || c->peer.role != ACCESS_NONE)
		return;
	snprintf(message, sizeof(message), "no hello with a valid token within %u ms",
	         c->w->srv->cfg.auth_timeout_ms);
	conn_fail(c, SC_EDENIED, -1, message);
	conn_flush(c);
	if (!c->closing) {
		conn_update_reading(c);
		conn_settle(c);
	}
}

/* Serves an accepted descriptor on w's loop (w's thread). */
void srv_worker_adopt(struct worker *w, int fd, uint64_t id, int rejected,
                      const struct access_peer *peer)
{
	struct conn *c = conn_new(w, id);

	if (c == NULL) {
		srv_drop_fd(w, fd, rejected, peer);
		return;
	}
	c->rejected = (unsigned)rejected;
	c->peer = *peer;
	c->uid_counted = !rejected && peer->role != ACCESS_ADMIN;
	uv_pipe_init(w->loop, &c->pipe, 0);
	if (uv_pipe_open(&c->pipe, fd) != 0) {
		close(fd);
		conn_close(c);
		return;
	}
	if (rejected) {
		conn_reject(c);
		return;
	}
	STAT_ADD(w, connections_total, 1);
	if (!msgpack_zone_init(&c->zone, ZONE_CHUNK)) {
		conn_close(c);
		return;
	}
	c->zone_ready = 1;
	if (c->peer.role == ACCESS_NONE && w->srv->cfg.auth_timeout_ms) {
		uv_timer_init(w->loop, &c->auth);
		c->auth.data = c;
		c->handles++;
		c->auth_ready = 1;
		uv_timer_start(&c->auth, on_auth_timeout, w->srv->cfg.auth_timeout_ms, 0);
	}
	conn_update_reading(c);
	if (!c->closing)
		conn_settle(c); /* adopted after the worker began to stop */
}

/* Sends what waited for the ledger and can go now. */
void srv_worker_release(struct worker *w)
{
	uint64_t seq = __atomic_load_n(&w->srv->durable_seq, __ATOMIC_ACQUIRE);
	struct conn *c, *next;

	for (c = w->conns; c; c = next) {
		next = c->next;
		if (!c->closing && !c->writing && !c->in_handler && c->out.size && c->wait_seq <= seq)
			conn_pump(c);
	}
}

/* ----- the worker's loop: stopping, and its inbox ----- */

static void on_stop_deadline(uv_timer_t *t)
{
	struct worker *w = t->data;

	for (struct conn *c = w->conns; c; c = c->next)
		conn_close(c);
}

/* First step of stopping, on the loop's next turn: close every idle connection. */
static void on_stop_sweep(uv_timer_t *t)
{
	struct worker *w = t->data;

	for (struct conn *c = w->conns; c; c = c->next) {
		conn_update_reading(c);
		if (!c->closing)
			conn_settle(c);
	}
	uv_timer_start(&w->stop_timer, on_stop_deadline, SRV_DRAIN_MS, 0);
	worker_maybe_finish(w);
}

void srv_worker_stop(struct worker *w)
{
	if (w->stopping)
		return;
	w->stopping = 1;
	uv_timer_init(w->loop, &w->stop_timer);
	w->stop_timer.data = w;
	uv_timer_start(&w->stop_timer, on_stop_sweep, 0, 0);
}

static void on_wake_closed(uv_handle_t *h)
{
	(void)h;
}

static void on_worker_timer_closed(uv_handle_t *h)
{
	struct worker *w = h->data;
	struct inbox_item *it, *next;

	if (!w->srv->threaded) {
		w->srv->workers_left--;
		srv_maybe_finish(w->srv);
		return;
	}
	/* Nothing can be handed any more; what was, is dropped. The loop then ends. */
	pthread_mutex_lock(&w->mu);
	w->wake_closed = 1;
	it = w->inbox;
	w->inbox = NULL;
	w->inbox_tail = &w->inbox;
	pthread_mutex_unlock(&w->mu);
	for (; it; it = next) {
		next = it->next;
		if (it->fd >= 0)
			srv_drop_fd(w, it->fd, it->rejected, &it->peer);
		free(it);
	}
	uv_close((uv_handle_t *)&w->wake, on_wake_closed);
}

static void worker_maybe_finish(struct worker *w)
{
	if (!w->stopping || w->n_conns > 0 || w->timer_closing)
		return;
	w->timer_closing = 1;
	uv_timer_stop(&w->stop_timer);
	uv_close((uv_handle_t *)&w->stop_timer, on_worker_timer_closed);
}

/* The worker's wake-up: new connections and notifications, durable progress, stop. */
void srv_on_wake(uv_async_t *a)
{
	struct worker *w = a->data;
	struct inbox_item *it, *next;
	int stop;

	pthread_mutex_lock(&w->mu);
	it = w->inbox;
	w->inbox = NULL;
	w->inbox_tail = &w->inbox;
	stop = w->stop_requested;
	pthread_mutex_unlock(&w->mu);
	for (; it; it = next) {
		next = it->next;
		if (it->fd >= 0)
			srv_worker_adopt(w, it->fd, it->conn_id, it->rejected, &it->peer);
		else
			srv_deliver(w, it->conn_id, NULL, it->msg, it->len);
		free(it);
	}
	srv_worker_release(w);
	if (stop)
		srv_worker_stop(w);
}
