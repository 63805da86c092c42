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
	struct state *st;
	struct srv *srv;           /* for connection counters in stats; may be NULL */
	const struct srv_config *srv_cfg;
	int64_t started_at;        /* microseconds since the epoch */
	/*
	 * Called after a hold was placed, so the owner can arm the expiry timer:
	 * under the commit lock, on the thread of the request (any worker).
	 */
	void (*hold_placed)(void *arg);
	void *hold_placed_arg;
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
	msgpack_sbuffer scratch;   /* a method's result before it is sent (init/destroy by owner) */
	const msgpack_object *recorded; /* replay: the result the record holds, else NULL */
	struct dispatch_alerts *alerts; /* alerts.subscribe's subscribers; NULL until the first */
	msgpack_zone *replay_zone; /* replay: the record's objects, reused; dispatch_replay_end */
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

/*
 * The srv_config.conn_closed of the daemon (ctx is a struct dispatch): the
 * connection's alert subscription ends. Takes the commit lock.
 */
void dispatch_conn_closed(void *ctx, uint64_t conn_id);

/* Expires due holds and records it; returns how many. Takes the commit lock. */
unsigned dispatch_expire(struct dispatch *d, int64_t now);
/* Rolls the orgs' calendars into a new local day when one began, and records it. Takes the lock. */
void dispatch_roll(struct dispatch *d, int64_t now);
/* Applies and records the settings (and the segment's capacities). Takes the commit lock. */
void dispatch_settings(struct dispatch *d, int64_t now, const struct state_settings *set);
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

/*
 * The daemon's clock: microseconds since the Unix epoch, UTC, running
 * --time-scale times faster than the real clock since start-up (once: on
 * the main thread, before any other thread). A wait of wait_us on the
 * daemon's clock lasts dispatch_real_wait_ms() real milliseconds, rounded up.
 */
int64_t dispatch_now(void);
void dispatch_set_time_scale(unsigned scale);
int64_t dispatch_real_wait_ms(int64_t wait_us);

#endif /* SIDECARD_DISPATCH_H */
