/*
 * dispatch.h: the method table of the protocol (PROTOCOL.md): decodes each
 * request's named arguments, calls the state or the gate, packs the result.
 * struct dispatch, and the owner's calls into the families that keep parts
 * of it, are in dispatch_state.h.
 */
#ifndef SIDECARD_DISPATCH_H
#define SIDECARD_DISPATCH_H

#include <stdint.h>

#include <msgpack.h>

#include "dispatch_state.h"
#include "ledger.h"
#include "server.h"
#include "state.h"

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

#endif /* SIDECARD_DISPATCH_H */
