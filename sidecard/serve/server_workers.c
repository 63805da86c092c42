/*
 * server_workers.c: the worker threads. Prepares, starts, stops and joins
 * them; hands them, from other threads, the connections the listener
 * accepted and the notifications of srv_notify (the inbox); publishes the
 * ledger's durable progress to them (srv_set_durable).
 *
 * Threads: srv_workers_init, _start, _abort, _stop, _free, on_workers_done
 * and srv_set_durable run on the main loop's thread; worker_main is the
 * body of each worker thread; srv_notify and srv_worker_post run on any of
 * the server's threads. A worker thread is reached from other threads only
 * through its inbox (a list under its mutex, with a uv_async_t to wake it)
 * and a few atomics (the durable sequence, counters).
 *
 * Ownership: the server owns the workers; an inbox item handed over belongs
 * to the worker, whose loop frees it (server_conn.c); one the worker refuses
 * stays the caller's.
 *
 * May call: server_conn.c (what runs on a worker's loop: its wake-up,
 * delivering, releasing held replies, stopping) and server_socket.c
 * (srv_maybe_finish, once a worker thread is joined).
 *
 * DESIGN
 *
 * A worker thread runs its own loop and owns its connections outright. A
 * connection id is seq * workers + worker index, so srv_notify finds the
 * worker from the id alone. Held responses: srv_set_durable publishes the
 * durable sequence in one atomic and wakes each worker, which releases what
 * its connections held. A worker's counters are written by it alone with
 * relaxed atomic stores and summed on read. With one worker all of this
 * collapses to direct calls on the main loop: no thread, no inbox, no
 * wake-up. A worker thread whose loop has ended tells the main loop
 * (workers_done), which joins it.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "server_int.h"
#include "sidecard.h"

/* The worker whose thread is running, on worker threads. */
static __thread struct worker *current_worker;

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
int srv_worker_post(struct worker *w, struct inbox_item *it)
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
		return srv_deliver(w, conn_id, method, packed_params, len);
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
	if (srv_worker_post(w, it) != 0) {
		free(it);
		return SC_ENOTFOUND;
	}
	return 0;
}

/* ----- workers: threads ----- */

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
void srv_workers_stop(struct srv *s)
{
	for (unsigned i = 0; i < s->n_workers; i++) {
		struct worker *w = &s->workers[i];

		if (!s->threaded) {
			srv_worker_stop(w);
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
int srv_workers_init(struct srv *s, char *err, size_t errlen)
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
		uv_async_init(w->loop, &w->wake, srv_on_wake);
		w->wake.data = w;
	}
	return 0;
}

/* Stops and joins the worker threads started so far (srv_init failed). */
void srv_workers_abort(struct srv *s)
{
	if (!s->threaded)
		return;
	srv_workers_stop(s);
	for (unsigned i = 0; i < s->n_workers; i++)
		if (s->workers[i].started)
			uv_thread_join(&s->workers[i].thread);
}

/* Starts the worker threads. On failure none is left running. */
int srv_workers_start(struct srv *s, char *err, size_t errlen)
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
	srv_workers_abort(s);
	return rc;
}

/* Releases what srv_workers_init made and the threads left behind (they are joined). */
void srv_workers_free(struct srv *s)
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

/* ----- workers: durable progress ----- */

void srv_set_durable(struct srv *s, uint64_t seq)
{
	if (seq <= __atomic_load_n(&s->durable_seq, __ATOMIC_RELAXED))
		return;
	__atomic_store_n(&s->durable_seq, seq, __ATOMIC_RELEASE);
	if (!s->threaded) {
		srv_worker_release(&s->workers[0]);
		return;
	}
	for (unsigned i = 0; i < s->n_workers; i++)
		worker_poke(&s->workers[i]);
}
