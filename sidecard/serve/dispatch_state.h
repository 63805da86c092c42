/*
 * dispatch_state.h: the dispatcher's state, struct dispatch, which its
 * owner (main.c) fills in, the request path (dispatch.c) runs under, and
 * the call-context API (call.h) and the method families read through the
 * call; and the owner's calls into the families that keep parts of it (the
 * alert push; the releases of d->alerts and d->agent_conns). A header of
 * its own, under all of them, so that none has to reach up to dispatch.h.
 */
#ifndef SIDECARD_DISPATCH_STATE_H
#define SIDECARD_DISPATCH_STATE_H

#include <pthread.h>
#include <stdint.h>

#include <msgpack.h>

#include "server.h"
#include "state.h"

struct ledger;
struct dispatch_alerts;

struct dispatch {
	/*
	 * The commit lock (owner: pthread_mutex_init before use). Every request
	 * runs its method, appends its ledger record and packs its result under
	 * it, and so do expiries, day rolls, the alert push and the owner's reads
	 * of the state from the main loop: whatever the number of worker threads,
	 * changes are applied one at a time, in ledger order. DESIGN.md, Workers.
	 */
	pthread_mutex_t lock;
	/*
	 * Requests from worker threads take turns at the lock (request_lock in
	 * dispatch.c): `threaded` is set by the owner when connections are
	 * served by two or more worker threads; waiting and taken are atomics.
	 */
	int threaded;
	unsigned waiting;          /* worker threads blocked in request_lock */
	uint64_t taken;            /* times request_lock was acquired */
	struct state *st;
	struct srv *srv;           /* for connection counters in stats; may be NULL */
	const struct srv_config *srv_cfg;
	/*
	 * Called after a hold was placed or a step of the wall clock was
	 * applied (dispatch_time), so the owner can arm the expiry timer:
	 * under the commit lock, on the thread of the request (any worker).
	 */
	void (*hold_placed)(void *arg);
	void *hold_placed_arg;
	uint64_t steps;            /* steps of the wall clock applied, under the commit lock */
	/*
	 * Optional. Called under the commit lock, on the thread of the request,
	 * when a change raised an alert that subscribers wait for: the owner
	 * wakes the main loop, which calls dispatch_push_alerts.
	 */
	void (*alerts_raised)(void *arg);
	void *alerts_raised_arg;
	struct ledger *ledger;     /* NULL: changes are not recorded (unit tests) */
	int strict;                /* replies to changes wait for their record to be durable */
	uint64_t checkpoint_seq;   /* the newest snapshot, for stats */
	uint64_t checkpoint_failures; /* failed snapshots since the last good one, for stats */
	/*
	 * Set by the owner, under the lock, once it found the state segment's
	 * file cut short by another process: the state is no longer what the
	 * ledger says, so every request is refused and nothing more is
	 * recorded while the owner stops.
	 */
	int segment_lost;
	msgpack_sbuffer scratch;   /* a method's result before it is sent (init/destroy by owner) */
	const msgpack_object *recorded; /* replay: the result the record holds, else NULL */
	struct dispatch_alerts *alerts; /* alerts.subscribe's subscribers; NULL until the first */
	msgpack_zone *replay_zone; /* replay: the record's objects, reused; dispatch_replay_end */
	/*
	 * Connections bound to each agent (by slot), so that hello refuses
	 * more than max_agent_conns (0: 64): allocated by the first agent's
	 * hello, released by dispatch_access_free.
	 */
	uint16_t *agent_conns;
	unsigned max_agent_conns;
	/*
	 * Moved by every change that can make a presented token stop standing
	 * (a rotation, a revocation, an agent deleted), under the commit lock: a
	 * connection that checked its token at this epoch needs no check until
	 * it moves (call.c, call_peer_valid).
	 */
	uint64_t token_epoch;
};

/*
 * Sends every alert raised since the last call to the connections that
 * subscribed before it, as [2, "alert", [alert]], in id order. Called on
 * the main loop after each loop iteration, after expiring holds and when
 * alerts_raised asked for it, never from a handler (which must not notify
 * its own connection). Takes the commit lock.
 */
void dispatch_push_alerts(struct dispatch *d);
/* Releases the subscribers (d->alerts; dispatch_alerts.c). */
void dispatch_alerts_free(struct dispatch *d);
/* Releases the connection counts (d->agent_conns; dispatch_access.c). */
void dispatch_access_free(struct dispatch *d);

#endif /* SIDECARD_DISPATCH_STATE_H */
