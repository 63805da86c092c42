/*
 * dispatch.h: the method table of the protocol (PROTOCOL.md): decodes each
 * request's named arguments, calls the state or the gate, packs the result.
 */
#ifndef SIDECARD_DISPATCH_H
#define SIDECARD_DISPATCH_H

#include <pthread.h>
#include <stdint.h>

#include <msgpack.h>

#include "ledger.h"
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
	 * it moves (dispatch_access.c, dispatch_peer_valid).
	 */
	uint64_t token_epoch;
};

/*
 * The srv_handler of the daemon; ctx is a struct dispatch. A change is
 * applied, appended to the ledger as [params, result] inside one busy
 * bracket of the segment, and the reply waits (strict) for its record.
 * While the ledger is failing, changes are refused with unavailable.
 * Any thread registered with liburcu; it takes the commit lock.
 */
uint64_t dispatch_request(void *ctx, const struct srv_request *req, msgpack_packer *pk);

/*
 * The name of the i-th method of the table, NULL past its end; *changes
 * (if not NULL) says whether it changes the state (and is recorded). For
 * a caller that must reach every method, such as the fuzz target.
 */
const char *dispatch_method_name(unsigned i, int *changes);
/* The roles (enum access_role bits) that may call the i-th method; 0 past the end. */
unsigned dispatch_method_roles(unsigned i);
/*
 * The names of the i-th method's fields (top level; nested maps are read
 * under fields of their own), NULL-terminated; NULL past the table's end.
 */
const char *const *dispatch_method_fields(unsigned i);

/*
 * The srv_config.conn_closed of the daemon (ctx is a struct dispatch): the
 * connection's alert subscription ends and it counts no longer among its
 * agent's connections. Takes the commit lock.
 */
void dispatch_conn_closed(void *ctx, uint64_t conn_id, const struct access_peer *peer);

/*
 * At the daemon's time: rolls the orgs' calendars into a new local day when
 * one began, then expires due holds, recording each (and a step of the
 * wall clock first); returns how many holds expired. Takes the commit lock.
 */
unsigned dispatch_expire(struct dispatch *d);
/*
 * Under the commit lock: the daemon's time (clock.h) for a change, after
 * the state took, and the ledger recorded, any step of the wall clock seen
 * since the last one.
 */
int64_t dispatch_time(struct dispatch *d);
/* Applies and records the settings (and the segment's capacities). Takes the commit lock. */
void dispatch_settings(struct dispatch *d, const struct state_settings *set);
/* The capacities in the body of a settings record: 0 or SC_EINVAL. */
int dispatch_settings_caps(const char *body, size_t len, struct shm_caps *caps);
/*
 * Applies one ledger record during recovery, at its recorded time, and
 * checks that a method record reproduces its recorded result byte for byte.
 */
int dispatch_replay(struct dispatch *d, const struct ledger_record *r, char *err, size_t errlen);
/* Releases what dispatch_replay kept from one record to the next. */
void dispatch_replay_end(struct dispatch *d);

/*
 * Sends every alert raised since the last call to the connections that
 * subscribed before it, as [2, "alert", [alert]], in id order. Called on
 * the main loop after each loop iteration, after expiring holds and when
 * alerts_raised asked for it, never from a handler (which must not notify
 * its own connection). Takes the commit lock.
 */
void dispatch_push_alerts(struct dispatch *d);
/* Under the commit lock: 1 if an alert waits to be pushed to a subscriber. */
int dispatch_alerts_pending(const struct dispatch *d);
/* Alert notifications dropped because the subscriber was not reading (server counter). */
uint64_t dispatch_alerts_dropped(const struct dispatch *d);
/* Releases the subscribers (d->alerts). */
void dispatch_alerts_free(struct dispatch *d);
/* Releases the connection counts (d->agent_conns). */
void dispatch_access_free(struct dispatch *d);

#endif /* SIDECARD_DISPATCH_H */
