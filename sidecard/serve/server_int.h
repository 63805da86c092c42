/*
 * server_int.h: what the server's files share, and nothing the rest of the
 * daemon sees (that is server.h). server.c's opening comment says which file
 * owns what; each calls only the files below it.
 *
 * Threads: the structures say, field by field, which thread writes what;
 * each function says where it runs.
 */
#ifndef SIDECARD_SERVER_INT_H
#define SIDECARD_SERVER_INT_H

#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/un.h>

#include <uv.h>

#include "access.h"
#include "server.h"

struct conn; /* server_conn.c's alone */

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


/* ----- server_socket.c: main loop ----- */

/* Takes the lock and the socket file; the listening socket is l->fd. */
int srv_open_socket(struct listener *l, char *err, size_t errlen);
/* Closes the listening socket, removes the socket file, releases the lock. */
void srv_close_socket(struct listener *l);
/*
 * A part of a stopping server has stopped: once every listener handle is
 * closed and every worker joined, gives the files back and calls done().
 */
void srv_maybe_finish(struct srv *s);

/* ----- server_conn.c: the worker's thread unless said otherwise ----- */

/* One more connection of uid, unless it has max_per_uid already: 0, or -1. Any thread. */
int srv_uid_take(struct srv *s, uint32_t uid);
/* Forgets a descriptor the listener counted but no connection took over. Any thread. */
void srv_drop_fd(struct worker *w, int fd, int rejected, const struct access_peer *peer);
/* Serves an accepted descriptor on w's loop. */
void srv_worker_adopt(struct worker *w, int fd, uint64_t id, int rejected,
                      const struct access_peer *peer);
/* Queues msg (a whole packed message) on the worker's connection conn_id (srv_notify's codes). */
int srv_deliver(struct worker *w, uint64_t conn_id, const char *method, const char *msg,
                size_t len);
/* Sends what waited for the ledger and can go now. */
void srv_worker_release(struct worker *w);
/* Drains the worker's connections and closes its handles; its loop then ends. */
void srv_worker_stop(struct worker *w);
/* The wake-up of a worker thread: its inbox, durable progress, stop. */
void srv_on_wake(uv_async_t *a);

/* ----- server_workers.c: main loop unless said otherwise ----- */

/* Hands an item to a worker thread; 0, or -1 if it takes none any more. Any thread. */
int srv_worker_post(struct worker *w, struct inbox_item *it);
/* Prepares the workers' memory; worker threads get their loop and handles. */
int srv_workers_init(struct srv *s, char *err, size_t errlen);
/* Starts the worker threads. On failure none is left running. */
int srv_workers_start(struct srv *s, char *err, size_t errlen);
/* Stops and joins the worker threads started so far (srv_init failed). */
void srv_workers_abort(struct srv *s);
/* Asks every worker to drain and stop. */
void srv_workers_stop(struct srv *s);
/* Releases what srv_workers_init made and the threads left behind (they are joined). */
void srv_workers_free(struct srv *s);

#endif /* SIDECARD_SERVER_INT_H */
