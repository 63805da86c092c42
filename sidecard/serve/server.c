/*
 * server.c: the Unix-socket server's life and its listeners. srv_init takes
 * the sockets, starts the workers and starts accepting; each listener
 * accepts connections, reads the peer's credentials and role, applies the
 * caps (max_connections, max_per_uid) and hands the connection to a worker;
 * srv_stop ends it all, srv_free releases it; srv_get_stats sums the
 * counters.
 *
 * Threads: the listeners and the srv_ entry points here run on the main
 * loop's thread, except srv_get_stats (any of the server's threads).
 * Connections live on a worker: without worker threads (cfg.workers <= 1)
 * the one worker is the main loop itself and there are no locks; with N
 * worker threads each runs its own loop (server_workers.c).
 *
 * Ownership: the server owns its listeners, the workers, their stop timers
 * and every struct conn. The server's memory is freed by srv_free() after
 * srv_stop() has reported done.
 *
 * May call: server_workers.c, server_conn.c and server_socket.c, through
 * server_int.h; none of them calls back here.
 *
 * DESIGN
 *
 * The files. Each calls only those below it:
 *   server.c          the server's life, listeners, accept, peer
 *                     credentials, caps, counters
 *   server_workers.c  worker threads, their inbox, srv_notify, durable
 *                     progress
 *   server_conn.c     a connection (input, framing, handling, output,
 *                     backpressure, turns, lingering, the auth timer) and
 *                     the worker's loop that serves it (adopting, the inbox
 *                     taken, held replies released, stopping)
 *   server_socket.c   the socket and lock files, and the server's last step
 * What they share is in server_int.h; the rest of the daemon sees server.h.
 *
 * Accepting. The listener is a uv_poll_t on the listening socket: the main
 * loop accept4()s every pending connection itself and hands the descriptor
 * to the worker serving the fewest connections, which opens it with
 * uv_pipe_open on its own loop. max_connections is global (n_open, counted
 * up by the listener, down by the workers). A connection id is
 * seq * workers + worker index, so srv_notify finds the worker from the id
 * alone.
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
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "access.h"
#include "log.h"
#include "server_int.h"
#include "sidecard.h"

#define SRV_ACCEPT_RETRY_MS 100 /* after accept4 ran out of descriptors */
#define SRV_DEFAULT_MODE 0660
#define SRV_DEFAULT_AGENT_MODE 0666 /* any local peer may try: a token is what admits it */
#define SRV_DEFAULT_MAX_CONNECTIONS 1024
#define SRV_DEFAULT_MAX_OUTSTANDING 1024
#define SRV_DEFAULT_MAX_OUTSTANDING_BYTES (256 * 1024)
#define SRV_DEFAULT_MAX_PER_UID 64
#define SRV_DEFAULT_AUTH_TIMEOUT_MS 10000
#define SRV_MAX_PEER_GROUPS 256 /* supplementary groups of a peer looked at for its role */

#define LOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)

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
	if (!rejected && peer.role != ACCESS_ADMIN && srv_uid_take(s, peer.uid) != 0)
		rejected = REJECT_UID;
	__atomic_store_n(&s->issued, s->next_seq, __ATOMIC_RELEASE);
	if (!rejected) {
		__atomic_add_fetch(&s->n_open, 1, __ATOMIC_RELAXED);
		__atomic_add_fetch(&w->assigned, 1, __ATOMIC_RELAXED);
	}
	if (!s->threaded) {
		srv_worker_adopt(w, fd, id, rejected, &peer);
		return;
	}
	it = malloc(sizeof(*it));
	if (it == NULL) {
		srv_drop_fd(w, fd, rejected, &peer);
		return;
	}
	it->conn_id = id;
	it->fd = fd;
	it->rejected = rejected;
	it->peer = peer;
	it->len = 0;
	if (srv_worker_post(w, it) != 0) {
		srv_drop_fd(w, fd, rejected, &peer);
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

static void free_server(struct srv *s)
{
	srv_workers_free(s);
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
		srv_close_socket(&s->ls[i]);
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
		if ((rc = srv_open_socket(&s->ls[i], err, errlen)) != 0) {
			init_failed(s);
			return rc;
		}
	}
	if ((rc = srv_workers_init(s, err, errlen)) != 0 ||
	    (rc = srv_workers_start(s, err, errlen)) != 0) {
		init_failed(s);
		return rc;
	}
	for (unsigned i = 0; i < s->n_listeners; i++) {
		if ((rc = listener_start(s, &s->ls[i], err, errlen)) != 0) {
			srv_workers_abort(s);
			srv_stop_listeners(s);
			init_failed(s);
			return rc;
		}
	}
	*out = s;
	return 0;
}

void srv_stop(struct srv *s, void (*done)(void *arg), void *arg)
{
	if (s->stopping)
		return;
	s->stopping = 1;
	s->done = done;
	s->done_arg = arg;
	srv_stop_listeners(s);
	srv_workers_stop(s);
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

