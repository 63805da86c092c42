/*
 * dispatch.h: the method table of the protocol (PROTOCOL.md): decodes each
 * request's named arguments, calls the state or the gate, packs the result.
 */
#ifndef SIDECARD_DISPATCH_H
#define SIDECARD_DISPATCH_H

#include <stdint.h>

#include <msgpack.h>

#include "server.h"
#include "state.h"

struct dispatch {
	struct state *st;
	struct srv *srv;           /* for connection counters in stats; may be NULL */
	const struct srv_config *srv_cfg;
	int64_t started_at;        /* microseconds since the epoch */
	/* Called after a hold was placed, so the owner can arm the expiry timer. */
	void (*hold_placed)(void *arg);
	void *hold_placed_arg;
};

/* The srv_handler of the daemon; ctx is a struct dispatch. */
void dispatch_request(void *ctx, const struct srv_request *req, msgpack_packer *pk);

/* Microseconds since the Unix epoch, UTC. */
int64_t dispatch_now(void);

#endif /* SIDECARD_DISPATCH_H */
