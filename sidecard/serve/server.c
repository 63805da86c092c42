/*
 * server.c: the Unix-socket server. Accepts connections, frames each byte
 * stream into MessagePack-RPC messages, calls the handler for each request
 * and writes the responses back, in order and batched.
 *
 * Threads: the listener and the srv_ entry points other than srv_notify and
 * srv_get_stats run on the main loop's thread. Connections live on a
 * worker: without worker threads (cfg.workers <= 1) the one worker is the
 * main loop itself and there are no locks; with N worker threads each runs
 * its own loop, owns its connections outright and is reached from other
 * threads only through its inbox (a list under its mutex, with a uv_async_t
 * to wake it) and a few atomics (the durable sequence, counters).
 *
 * Ownership: the server owns its listener, the workers, their stop timers
 * and every struct conn. A conn is freed only in its close callback (libuv
 * may still call its write callback, with UV_ECANCELED, after uv_close), so
 * code holding a conn pointer may keep using it until control returns to
 * the loop; it tests c->closing instead. The server's memory is freed by
 * srv_free() after srv_stop() has reported done.
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
 * Workers. The listener is a uv_poll_t on the listening socket: the main
 * loop accept4()s every pending connection itself and hands the descriptor
 * to the worker serving the fewest connections, which opens it with
 * uv_pipe_open on its own loop. max_connections is global (n_open, counted
 * up by the listener, down by the workers). A connection id is
 * seq * workers + worker index, so srv_notify finds the worker from the id
 * alone. Held responses: srv_set_durable publishes the durable sequence in
 * one atomic and wakes each worker, which releases what its connections
 * held. A worker's counters are written by it alone with relaxed atomic
 * stores and summed on read. With one worker all of this collapses to
 * direct calls on the main loop: no thread, no inbox, no wake-up.
 *
 * Stopping. srv_stop() closes the listener and asks every worker to stop;
 * each arms its stop timer at 0 ms, the sweep stops every reader and closes
 * connections with nothing left to write, the others close as their writes
 * complete, and after 2 s whatever remains is closed. A worker with no
 * connection left closes its handles, its loop ends and its thread tells
 * the main loop, which joins it. When every worker is joined and the
 * listener closed, the socket and the lock file are removed and done() is
 * called.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "access.h"
#include "fsutil.h"
#include "log.h"
#include "server.h"
#include "sidecard.h"

#define SRV_BACKLOG 4096
#define SRV_DRAIN_MS 2000
#define SRV_LINGER_MS 500 /* how long a connection closed on an error drains its client's input */
#define SRV_TURN_NS 2000000 /* a connection's share of one loop turn before others get theirs */
#define SRV_ACCEPT_RETRY_MS 100 /* after accept4 ran out of descriptors */
#define SRV_DEFAULT_MODE 0660
#define SRV_DEFAULT_AGENT_MODE 0666 /* any local peer may try: a token is what admits it */
#define SRV_DEFAULT_MAX_CONNECTIONS 1024
#define SRV_DEFAULT_MAX_OUTSTANDING 1024
#define SRV_DEFAULT_MAX_OUTSTANDING_BYTES (256 * 1024)
#define SRV_DEFAULT_MAX_PER_UID 64
#define SRV_DEFAULT_AUTH_TIMEOUT_MS 10000
#define SRV_MAX_PEER_GROUPS 256 /* supplementary groups of a peer looked at for its role */
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

#define LOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
/* A counter its worker alone writes: a plain add, published for other threads' reads. */
#define STAT_ADD(w, field, n) __atomic_store_n(&(w)->stats.field, (w)->stats.field + (n), \
                                               __ATOMIC_RELAXED)

struct worker;

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

/* What other threads hand a worker: a connection to adopt or a message to deliver. */
struct inbox_item {
	struct inbox_item *next;
	uint64_t conn_id;
	int fd;       /* >= 0: a new connection; -1: msg is a notification for conn_id */
	int rejected; /* enum reject, for the new connection */
	struct access_peer peer; /* the new connection's */
	size_t len;
	char msg[];
};

struct worker {
	struct srv *srv;
	unsigned index;
	uv_loop_t *loop; /* own_loop, or the main loop without worker threads */
	uv_loop_t own_loop;
	uv_thread_t thread;
	uv_async_t wake;      /* worker threads: the inbox, durable progress, stop */
	uv_timer_t stop_timer;

	/* shared with other threads */
	pthread_mutex_t mu;
	struct inbox_item *inbox, **inbox_tail; /* under mu */
	int stop_requested;                     /* under mu */
	int wake_closed;                        /* under mu: nothing may be handed any more */
	unsigned assigned; /* atomic: open connections it serves (for the listener's choice) */
	int finished;      /* atomic: its thread has left its loop */
	struct srv_stats stats; /* written by this worker only (STAT_ADD) */

	/* the worker's own (separate bytes from the main loop's two flags below) */
	struct conn *conns;
	unsigned n_conns; /* every connection, accepted or rejected */
	unsigned char stopping;
	unsigned char timer_closing;

	/* the main loop's */
	unsigned char started; /* thread created */
	unsigned char joined;
};

/* Why a connection was refused at accept. */
enum reject { REJECT_NONE, REJECT_FULL, REJECT_UID };

/* A listening socket: the admin socket, and the agent socket if configured. */
struct listener {
	struct srv *srv;
	uv_poll_t poll;
	uv_timer_t accept_timer;
	int fd;
	int agents_only; /* the agent socket: every peer starts unauthenticated */
	int started;     /* poll and accept_timer are in the loop */
	unsigned mode;
	long gid;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char lock_path[PATH_MAX];
	int lock_fd;
	dev_t sock_dev; /* the socket file this listener bound, to remove only that one */
	ino_t sock_ino;
};

/* Open connections of one uid that is not an admin's (max_per_uid). */
struct uid_count {
	uint32_t uid;
	uint32_t n;
};

struct srv {
	uv_loop_t *loop;
	struct listener ls[2];
	unsigned n_listeners;
	struct srv_config cfg;
	srv_handler handler;
	void *ctx;

	struct worker *workers;
	unsigned n_workers;
	int threaded;             /* worker threads, each with its own loop */
	uv_async_t workers_done;  /* a worker thread left its loop */
	unsigned workers_left;    /* not yet stopped (and joined) */
	unsigned next_pick;       /* round robin among equally loaded workers */

	unsigned n_open;       /* atomic: accepted (not rejected) connections */
	unsigned n_refused;    /* atomic: refused connections not yet closed */
	pthread_mutex_t uid_lock; /* guards uids: taken at accept and at close, a leaf */
	struct uid_count *uids;   /* max_connections entries; n_uids in use, unordered */
	unsigned n_uids;
	uint64_t next_seq;     /* main loop: connections handed out */
	uint64_t issued;       /* atomic: next_seq, for srv_notify on other threads */
	uint64_t durable_seq;  /* atomic: the ledger is on disk up to this sequence */

	unsigned main_handles; /* open handles of the main loop */
	unsigned stopping : 1;
	unsigned finished : 1;
	void (*done)(void *arg);
	void *done_arg;
};

/* The worker whose thread is running, on worker threads. */
static __thread struct worker *current_worker;

static void conn_pump(struct conn *c);
static void worker_maybe_finish(struct worker *w);

/* ----- configuration ----- */

void srv_config_default(struct srv_config *cfg, const char *path)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->socket_path = path;
	cfg->mode = SRV_DEFAULT_MODE;
	cfg->gid = -1;
	cfg->max_connections = SRV_DEFAULT_MAX_CONNECTIONS;
	cfg->max_outstanding = SRV_DEFAULT_MAX_OUTSTANDING;
	cfg->max_outstanding_bytes = SRV_DEFAULT_MAX_OUTSTANDING_BYTES;
	cfg->workers = 1;
	cfg->agent_mode = SRV_DEFAULT_AGENT_MODE;
	cfg->agent_gid = -1;
	cfg->max_per_uid = SRV_DEFAULT_MAX_PER_UID;
	cfg->auth_timeout_ms = SRV_DEFAULT_AUTH_TIMEOUT_MS;
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
	if (cfg->max_outstanding_bytes == 0)
		cfg->max_outstanding_bytes = SRV_DEFAULT_MAX_OUTSTANDING_BYTES;
	if (cfg->workers == 0)
		cfg->workers = 1;
	if (cfg->agent_mode == 0)
		cfg->agent_mode = SRV_DEFAULT_AGENT_MODE;
	if (cfg->max_per_uid == 0)
		cfg->max_per_uid = SRV_DEFAULT_MAX_PER_UID;
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

static int take_lock(struct listener *l, char *err, size_t errlen)
{
	long holder;
	int fd = fs_lock(l->lock_path, &holder, err, errlen);

	if (fd == SC_EEXISTS) {
		if (holder > 0)
			snprintf(err, errlen, "another sidecard is running on %s (pid %ld)", l->path,
			         holder);
		else
			snprintf(err, errlen, "another sidecard is running on %s (pid unknown)",
			         l->path);
	}
	if (fd < 0)
		return fd;
	l->lock_fd = fd;
	return 0;
}

/*
 * Removes path if it is still the file (dev, ino). Someone may have deleted
 * this server's socket or lock file while it ran and another daemon have
 * made its own there since: that one's must stay.
 */
static void unlink_own(const char *path, dev_t dev, ino_t ino)
{
	struct stat st;

	if (lstat(path, &st) == 0 && st.st_dev == dev && st.st_ino == ino)
		unlink(path);
}

static void release_lock(struct listener *l)
{
	struct stat st;

	if (l->lock_fd < 0)
		return;
	if (fstat(l->lock_fd, &st) == 0)
		unlink_own(l->lock_path, st.st_dev, st.st_ino);
	close(l->lock_fd);
	l->lock_fd = -1;
}

static void remove_socket(struct listener *l)
{
	unlink_own(l->path, l->sock_dev, l->sock_ino);
}

/* Under the lock, a socket file can only be a crashed daemon's leftover. */
static int remove_stale(struct listener *l, char *err, size_t errlen)
{
	struct stat st;

	if (lstat(l->path, &st) != 0)
		return errno == ENOENT ? 0 : sys_error(err, errlen, "cannot stat", l->path);
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "%s exists and is not a socket", l->path);
		return SC_EEXISTS;
	}
	if (unlink(l->path) != 0)
		return sys_error(err, errlen, "cannot remove stale socket", l->path);
	return 0;
}

/* Binds and listens; returns the socket or a negative code. */
static int bind_socket(struct listener *l, char *err, size_t errlen)
{
	struct sockaddr_un sa;
	struct stat st;
	int fd, rc;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, l->path, strlen(l->path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return sys_error(err, errlen, "cannot create socket for", l->path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		rc = sys_error(err, errlen, "cannot bind", l->path);
		close(fd);
		return rc;
	}
	if (lstat(l->path, &st) != 0) {
		rc = sys_error(err, errlen, "cannot stat", l->path);
		close(fd);
		return rc;
	}
	l->sock_dev = st.st_dev;
	l->sock_ino = st.st_ino;
	if (chmod(l->path, l->mode) != 0)
		rc = sys_error(err, errlen, "cannot chmod", l->path);
	else if (l->gid >= 0 && chown(l->path, (uid_t)-1, (gid_t)l->gid) != 0)
		rc = sys_error(err, errlen, "cannot chown", l->path);
	else if (listen(fd, SRV_BACKLOG) != 0)
		rc = sys_error(err, errlen, "cannot listen on", l->path);
	else
		return fd;
	remove_socket(l);
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
static int uid_take(struct srv *s, uint32_t uid)
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
static int deliver(struct worker *w, uint64_t conn_id, const char *method, const char *msg,
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

/* The worker serving conn_id, or NULL if no connection ever had that id. */
static struct worker *worker_of(struct srv *s, uint64_t conn_id)
{
	uint64_t seq = conn_id / s->n_workers;

	if (seq == 0 || seq > __atomic_load_n(&s->issued, __ATOMIC_ACQUIRE))
		return NULL;
	return &s->workers[conn_id % s->n_workers];
}

/* ----- workers: the inbox ----- */

/* Hands an item to a worker thread; 0, or -1 if the worker no longer takes any. */
static int worker_post(struct worker *w, struct inbox_item *it)
{
	int rc = 0;

	it->next = NULL;
	pthread_mutex_lock(&w->mu);
	if (w->wake_closed) {
		rc = -1;
	} else {
		*w->inbox_tail = it;
		w->inbox_tail = &it->next;
		uv_async_send(&w->wake);
	}
	pthread_mutex_unlock(&w->mu);
	return rc;
}

/* Wakes a worker thread to look at the durable sequence or its stop request. */
static void worker_poke(struct worker *w)
{
	pthread_mutex_lock(&w->mu);
	if (!w->wake_closed)
		uv_async_send(&w->wake);
	pthread_mutex_unlock(&w->mu);
}

int srv_notify(struct srv *s, uint64_t conn_id, const char *method, const char *packed_params,
               size_t len)
{
	struct worker *w = worker_of(s, conn_id);
	struct inbox_item *it;
	msgpack_sbuffer head;
	msgpack_packer pk;

	if (w == NULL)
		return SC_ENOTFOUND;
	if (!s->threaded || current_worker == w)
		return deliver(w, conn_id, method, packed_params, len);
	msgpack_sbuffer_init(&head);
	msgpack_packer_init(&pk, &head, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 3);
	msgpack_pack_int(&pk, PROTO_NOTIFICATION);
	proto_pack_cstr(&pk, method);
	it = head.data ? malloc(sizeof(*it) + head.size + len) : NULL;
	if (it == NULL) {
		msgpack_sbuffer_destroy(&head);
		return SC_EINTERNAL;
	}
	it->conn_id = conn_id;
	it->fd = -1;
	it->rejected = 0;
	it->len = head.size + len;
	memcpy(it->msg, head.data, head.size);
	memcpy(it->msg + head.size, packed_params, len);
	msgpack_sbuffer_destroy(&head);
	if (worker_post(w, it) != 0) {
		free(it);
		return SC_ENOTFOUND;
	}
	return 0;
}

/* ----- workers: connections ----- */

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
static void drop_fd(struct worker *w, int fd, int rejected, const struct access_peer *peer)
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
static void worker_adopt(struct worker *w, int fd, uint64_t id, int rejected,
                         const struct access_peer *peer)
{
	struct conn *c = conn_new(w, id);

	if (c == NULL) {
		drop_fd(w, fd, rejected, peer);
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
static void worker_release(struct worker *w)
{
	uint64_t seq = __atomic_load_n(&w->srv->durable_seq, __ATOMIC_ACQUIRE);
	struct conn *c, *next;

	for (c = w->conns; c; c = next) {
		next = c->next;
		if (!c->closing && !c->writing && !c->in_handler && c->out.size && c->wait_seq <= seq)
			conn_pump(c);
	}
}

/* ----- workers: stopping ----- */

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

static void worker_stop(struct worker *w)
{
	if (w->stopping)
		return;
	w->stopping = 1;
	uv_timer_init(w->loop, &w->stop_timer);
	w->stop_timer.data = w;
	uv_timer_start(&w->stop_timer, on_stop_sweep, 0, 0);
}

static void srv_maybe_finish(struct srv *s);

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
			drop_fd(w, it->fd, it->rejected, &it->peer);
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
static void on_wake(uv_async_t *a)
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
			worker_adopt(w, it->fd, it->conn_id, it->rejected, &it->peer);
		else
			deliver(w, it->conn_id, NULL, it->msg, it->len);
		free(it);
	}
	worker_release(w);
	if (stop)
		worker_stop(w);
}

static void worker_main(void *arg)
{
	struct worker *w = arg;
	struct srv *s = w->srv;

	current_worker = w;
	if (s->cfg.worker_thread)
		s->cfg.worker_thread(s->ctx, 1);
	uv_run(w->loop, UV_RUN_DEFAULT);
	if (uv_loop_close(w->loop) != 0)
		log_warn("worker %u: its loop closed with handles still open", w->index);
	if (s->cfg.worker_thread)
		s->cfg.worker_thread(s->ctx, 0);
	current_worker = NULL;
	__atomic_store_n(&w->finished, 1, __ATOMIC_RELEASE);
	uv_async_send(&s->workers_done);
}

/* Main loop: asks every worker to drain and stop. */
static void workers_stop(struct srv *s)
{
	for (unsigned i = 0; i < s->n_workers; i++) {
		struct worker *w = &s->workers[i];

		if (!s->threaded) {
			worker_stop(w);
			continue;
		}
		if (!w->started)
			continue;
		pthread_mutex_lock(&w->mu);
		w->stop_requested = 1;
		if (!w->wake_closed)
			uv_async_send(&w->wake);
		pthread_mutex_unlock(&w->mu);
	}
}

/* Main loop: joins the worker threads that have left their loop. */
static void on_workers_done(uv_async_t *a)
{
	struct srv *s = a->data;

	for (unsigned i = 0; i < s->n_workers; i++) {
		struct worker *w = &s->workers[i];

		if (w->started && !w->joined && __atomic_load_n(&w->finished, __ATOMIC_ACQUIRE)) {
			uv_thread_join(&w->thread);
			w->joined = 1;
			s->workers_left--;
		}
	}
	srv_maybe_finish(s);
}

/* Prepares the workers' memory; worker threads get their loop and handles. */
static int workers_init(struct srv *s, char *err, size_t errlen)
{
	s->n_workers = s->cfg.workers;
	s->threaded = s->n_workers > 1;
	s->workers = calloc(s->n_workers, sizeof(*s->workers));
	if (s->workers == NULL) {
		snprintf(err, errlen, "out of memory");
		return SC_EINTERNAL;
	}
	for (unsigned i = 0; i < s->n_workers; i++) {
		struct worker *w = &s->workers[i];

		w->srv = s;
		w->index = i;
		w->inbox_tail = &w->inbox;
		w->loop = s->loop;
		pthread_mutex_init(&w->mu, NULL);
	}
	for (unsigned i = 0; s->threaded && i < s->n_workers; i++) {
		struct worker *w = &s->workers[i];
		int rc = uv_loop_init(&w->own_loop);

		if (rc != 0) {
			snprintf(err, errlen, "cannot create the loop of worker %u: %s", i,
			         uv_strerror(rc));
			return rc;
		}
		w->loop = &w->own_loop;
		uv_async_init(w->loop, &w->wake, on_wake);
		w->wake.data = w;
	}
	return 0;
}

/* Stops and joins the worker threads started so far (srv_init failed). */
static void workers_abort(struct srv *s)
{
	if (!s->threaded)
		return;
	workers_stop(s);
	for (unsigned i = 0; i < s->n_workers; i++)
		if (s->workers[i].started)
			uv_thread_join(&s->workers[i].thread);
}

/* Starts the worker threads. On failure none is left running. */
static int workers_start(struct srv *s, char *err, size_t errlen)
{
	unsigned i;
	int rc = 0;

	s->workers_left = s->n_workers;
	if (!s->threaded)
		return 0;
	uv_async_init(s->loop, &s->workers_done, on_workers_done);
	s->workers_done.data = s;
	s->main_handles++;
	for (i = 0; i < s->n_workers && rc == 0; i++) {
		rc = uv_thread_create(&s->workers[i].thread, worker_main, &s->workers[i]);
		if (rc == 0)
			s->workers[i].started = 1;
	}
	if (rc == 0)
		return 0;
	snprintf(err, errlen, "cannot start worker thread %u: %s", i - 1, uv_strerror(rc));
	workers_abort(s);
	return rc;
}

/* Releases what workers_init made and the threads left behind (they are joined). */
static void workers_free(struct srv *s)
{
	for (unsigned i = 0; s->workers && i < s->n_workers; i++) {
		struct worker *w = &s->workers[i];

		if (w->loop == &w->own_loop && !w->started) {
			/* its thread never ran: close its loop here */
			uv_close((uv_handle_t *)&w->wake, NULL);
			uv_run(w->loop, UV_RUN_DEFAULT);
			uv_loop_close(w->loop);
		}
		pthread_mutex_destroy(&w->mu);
	}
	free(s->workers);
	s->workers = NULL;
}

/* ----- accepting ----- */

/* The worker serving the fewest connections; ties go round robin. */
static struct worker *pick_worker(struct srv *s)
{
	unsigned best = s->next_pick % s->n_workers, least = UINT_MAX;

	for (unsigned k = 0; k < s->n_workers; k++) {
		unsigned i = (s->next_pick + k) % s->n_workers;
		unsigned load = LOAD(&s->workers[i].assigned);

		if (load < least) {
			least = load;
			best = i;
		}
	}
	s->next_pick = best + 1;
	return &s->workers[best];
}

/*
 * Who connected: the peer's credentials as the kernel took them at
 * connect(2), and the role they give. On the agent socket every peer starts
 * unauthenticated, whoever it is: that socket serves only the agent role.
 * A peer whose credentials cannot be read is nobody.
 */
static void peer_of(const struct listener *l, int fd, struct access_peer *peer)
{
	const struct srv_config *cfg = &l->srv->cfg;
	gid_t groups[SRV_MAX_PEER_GROUPS];
	socklen_t glen = sizeof(groups);
	struct ucred cred;
	socklen_t len = sizeof(cred);

	memset(peer, 0, sizeof(*peer));
	peer->agent_socket = (uint8_t)l->agents_only;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
		peer->uid = peer->gid = UINT32_MAX;
		return;
	}
	peer->uid = cred.uid;
	peer->gid = cred.gid;
	peer->pid = (uint32_t)cred.pid;
	/* a peer in more groups than we look at is judged by the first ones */
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &glen) != 0)
		glen = errno == ERANGE ? sizeof(groups) : 0;
	if (!l->agents_only && cfg->access)
		peer->role = (uint8_t)access_classify(cfg->access, cred.uid, cred.gid, groups,
		                                      glen / sizeof(gid_t));
	peer->cred_role = peer->role;
}

/* Main loop: gives an accepted descriptor to a worker. */
static void hand_off(struct listener *l, int fd)
{
	struct srv *s = l->srv;
	int rejected = LOAD(&s->n_open) >= s->cfg.max_connections ? REJECT_FULL : REJECT_NONE;
	struct worker *w = pick_worker(s);
	uint64_t id = ++s->next_seq * s->n_workers + w->index;
	struct access_peer peer;
	struct inbox_item *it;

	peer_of(l, fd, &peer);
	if (!rejected && peer.role != ACCESS_ADMIN && uid_take(s, peer.uid) != 0)
		rejected = REJECT_UID;
	__atomic_store_n(&s->issued, s->next_seq, __ATOMIC_RELEASE);
	if (!rejected) {
		__atomic_add_fetch(&s->n_open, 1, __ATOMIC_RELAXED);
		__atomic_add_fetch(&w->assigned, 1, __ATOMIC_RELAXED);
	}
	if (!s->threaded) {
		worker_adopt(w, fd, id, rejected, &peer);
		return;
	}
	it = malloc(sizeof(*it));
	if (it == NULL) {
		drop_fd(w, fd, rejected, &peer);
		return;
	}
	it->conn_id = id;
	it->fd = fd;
	it->rejected = rejected;
	it->peer = peer;
	it->len = 0;
	if (worker_post(w, it) != 0) {
		drop_fd(w, fd, rejected, &peer);
		free(it);
	}
}

static void on_listener_readable(uv_poll_t *p, int status, int events);

static void on_accept_retry(uv_timer_t *t)
{
	struct listener *l = t->data;

	if (!l->srv->stopping)
		uv_poll_start(&l->poll, UV_READABLE, on_listener_readable);
}

static void on_listener_readable(uv_poll_t *p, int status, int events)
{
	struct listener *l = p->data;

	(void)events;
	if (l->srv->stopping)
		return;
	if (status < 0)
		log_warn("cannot poll %s: %s; retrying in %d ms", l->path, uv_strerror(status),
		         SRV_ACCEPT_RETRY_MS);
	while (status == 0) {
		int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd >= 0) {
			hand_off(l, fd);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		/* Out of descriptors or memory: the backlog waits rather than the loop spinning. */
		log_warn("cannot accept on %s: %s; retrying in %d ms", l->path, strerror(errno),
		         SRV_ACCEPT_RETRY_MS);
		break;
	}
	uv_poll_stop(&l->poll);
	uv_timer_start(&l->accept_timer, on_accept_retry, SRV_ACCEPT_RETRY_MS, 0);
}

/* ----- the server ----- */

static int check_path(const char *path, const char *what, char *err, size_t errlen)
{
	if (path == NULL || path[0] == '\0') {
		snprintf(err, errlen, "%s path is empty", what);
		return SC_EINVAL;
	}
	if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		snprintf(err, errlen, "%s path %s is longer than %zu bytes", what, path,
		         sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
		return SC_EINVAL;
	}
	return 0;
}

static int check_config(const struct srv_config *cfg, char *err, size_t errlen)
{
	int rc = check_path(cfg->socket_path, "socket", err, errlen);

	if (rc == 0 && cfg->agent_socket_path)
		rc = check_path(cfg->agent_socket_path, "agent socket", err, errlen);
	if (rc == 0 && cfg->agent_socket_path && strcmp(cfg->agent_socket_path, cfg->socket_path) == 0) {
		snprintf(err, errlen, "the agent socket %s is the admin socket", cfg->socket_path);
		rc = SC_EINVAL;
	}
	if (rc == 0 && cfg->workers > SRV_MAX_WORKERS) {
		snprintf(err, errlen, "%u workers: at most %d", cfg->workers, SRV_MAX_WORKERS);
		rc = SC_EINVAL;
	}
	return rc;
}

/* Takes the lock and the socket file; the listening socket is l->fd. */
static int open_socket(struct listener *l, char *err, size_t errlen)
{
	int rc = fs_mkdirs(l->path, 0, err, errlen);

	if (rc == 0)
		rc = fs_check_parent(l->path, 0, err, errlen);
	if (rc == 0)
		rc = take_lock(l, err, errlen);
	if (rc == 0)
		rc = remove_stale(l, err, errlen);
	if (rc == 0)
		rc = bind_socket(l, err, errlen);
	if (rc < 0) {
		release_lock(l);
		return rc;
	}
	l->fd = rc;
	return 0;
}

static void close_socket(struct listener *l)
{
	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
	remove_socket(l);
	release_lock(l);
}

static void free_server(struct srv *s)
{
	workers_free(s);
	pthread_mutex_destroy(&s->uid_lock);
	free(s->uids);
	free(s);
}

/* A handle of a server whose srv_init failed has closed: the last frees it. */
static void release_main_handle(struct srv *s)
{
	if (--s->main_handles > 0)
		return;
	free_server(s);
}

static void free_after_close(uv_handle_t *h)
{
	release_main_handle(h->data);
}

static void srv_maybe_finish(struct srv *s);

static void on_listener_closed(uv_handle_t *h)
{
	struct srv *s = ((struct listener *)h->data)->srv;

	if (!s->stopping) {
		release_main_handle(s);
		return;
	}
	s->main_handles--;
	srv_maybe_finish(s);
}

/* Closes the handles of the listeners that were started. */
static void srv_stop_listeners(struct srv *s)
{
	for (unsigned i = 0; i < s->n_listeners; i++) {
		if (!s->ls[i].started)
			continue;
		s->ls[i].started = 0;
		uv_close((uv_handle_t *)&s->ls[i].poll, on_listener_closed);
		uv_close((uv_handle_t *)&s->ls[i].accept_timer, on_listener_closed);
	}
}

/* Undoes a srv_init that failed after its sockets were bound. */
static void init_failed(struct srv *s)
{
	for (unsigned i = 0; i < s->n_listeners; i++)
		close_socket(&s->ls[i]);
	if (s->main_handles == 0) {
		free_server(s);
		return;
	}
	/* the handles already in the loop free s from their close callback */
	if (s->threaded)
		uv_close((uv_handle_t *)&s->workers_done, free_after_close);
}

static void listener_setup(struct srv *s, struct listener *l, const char *path, unsigned mode,
                           long gid, int agents_only)
{
	l->srv = s;
	l->fd = -1;
	l->lock_fd = -1;
	l->mode = mode;
	l->gid = gid;
	l->agents_only = agents_only;
	snprintf(l->path, sizeof(l->path), "%s", path);
	snprintf(l->lock_path, sizeof(l->lock_path), "%s.lock", path);
}

/* Starts accepting on l from the loop. */
static int listener_start(struct srv *s, struct listener *l, char *err, size_t errlen)
{
	int rc = uv_poll_init(s->loop, &l->poll, l->fd);

	if (rc != 0) {
		snprintf(err, errlen, "cannot listen on %s: %s", l->path, uv_strerror(rc));
		return rc;
	}
	l->poll.data = l;
	uv_timer_init(s->loop, &l->accept_timer);
	l->accept_timer.data = l;
	l->started = 1;
	s->main_handles += 2;
	uv_poll_start(&l->poll, UV_READABLE, on_listener_readable);
	return 0;
}

int srv_init(struct srv **out, uv_loop_t *loop, const struct srv_config *cfg, srv_handler h,
             void *ctx, char *err, size_t errlen)
{
	struct srv *s;
	int rc;

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
	s->handler = h;
	s->ctx = ctx;
	pthread_mutex_init(&s->uid_lock, NULL);
	listener_setup(s, &s->ls[0], cfg->socket_path, s->cfg.mode, s->cfg.gid, 0);
	s->n_listeners = 1;
	if (cfg->agent_socket_path)
		listener_setup(s, &s->ls[s->n_listeners++], cfg->agent_socket_path,
		               s->cfg.agent_mode, s->cfg.agent_gid, 1);
	s->cfg.socket_path = s->ls[0].path;
	s->cfg.agent_socket_path = cfg->agent_socket_path ? s->ls[1].path : NULL;
	s->uids = calloc(s->cfg.max_connections, sizeof(*s->uids));
	if (s->uids == NULL) {
		snprintf(err, errlen, "out of memory");
		free_server(s);
		return SC_EINTERNAL;
	}
	for (unsigned i = 0; i < s->n_listeners; i++) {
		if ((rc = open_socket(&s->ls[i], err, errlen)) != 0) {
			init_failed(s);
			return rc;
		}
	}
	if ((rc = workers_init(s, err, errlen)) != 0 || (rc = workers_start(s, err, errlen)) != 0) {
		init_failed(s);
		return rc;
	}
	for (unsigned i = 0; i < s->n_listeners; i++) {
		if ((rc = listener_start(s, &s->ls[i], err, errlen)) != 0) {
			workers_abort(s);
			srv_stop_listeners(s);
			init_failed(s);
			return rc;
		}
	}
	*out = s;
	return 0;
}

static void on_main_handle_closed(uv_handle_t *h);

static void srv_maybe_finish(struct srv *s)
{
	if (!s->stopping || s->workers_left > 0 || s->finished)
		return;
	if (s->threaded && !uv_is_closing((uv_handle_t *)&s->workers_done))
		uv_close((uv_handle_t *)&s->workers_done, on_main_handle_closed);
	if (s->main_handles > 0)
		return;
	s->finished = 1;
	for (unsigned i = 0; i < s->n_listeners; i++)
		close_socket(&s->ls[i]);
	if (s->done)
		s->done(s->done_arg);
}

static void on_main_handle_closed(uv_handle_t *h)
{
	struct srv *s = h->data;

	s->main_handles--;
	srv_maybe_finish(s);
}

void srv_stop(struct srv *s, void (*done)(void *arg), void *arg)
{
	if (s->stopping)
		return;
	s->stopping = 1;
	s->done = done;
	s->done_arg = arg;
	srv_stop_listeners(s);
	workers_stop(s);
}

void srv_free(struct srv *s)
{
	free_server(s);
}

void srv_get_stats(const struct srv *s, struct srv_stats *st)
{
	memset(st, 0, sizeof(*st));
	for (unsigned i = 0; i < s->n_workers; i++) {
		const struct srv_stats *w = &s->workers[i].stats;
		uint64_t peak = LOAD(&w->outstanding_peak);

		st->connections_total += LOAD(&w->connections_total);
		st->requests += LOAD(&w->requests);
		st->protocol_errors += LOAD(&w->protocol_errors);
		st->rejected_connections += LOAD(&w->rejected_connections);
		st->read_pauses += LOAD(&w->read_pauses);
		st->notifications_dropped += LOAD(&w->notifications_dropped);
		if (peak > st->outstanding_peak)
			st->outstanding_peak = peak;
	}
	st->connections_open = LOAD(&s->n_open);
}

void srv_set_durable(struct srv *s, uint64_t seq)
{
	if (seq <= __atomic_load_n(&s->durable_seq, __ATOMIC_RELAXED))
		return;
	__atomic_store_n(&s->durable_seq, seq, __ATOMIC_RELEASE);
	if (!s->threaded) {
		worker_release(&s->workers[0]);
		return;
	}
	for (unsigned i = 0; i < s->n_workers; i++)
		worker_poke(&s->workers[i]);
}
