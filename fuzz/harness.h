/*
 * harness.h: what the fuzz targets of the dispatcher (fuzz_dispatch.c,
 * fuzz_args.c) share (harness.c): per input a fresh state segment, its
 * ledger and the same setup, requests sent the way the server sends them,
 * and the invariants checked after each request and at the end of the
 * input. A target only decides which requests its input means.
 *
 * Single thread (the target's, registered with liburcu by harness_init),
 * which is also the loop thread of the ledger writer.
 */
#ifndef SIDECARD_FUZZ_HARNESS_H
#define SIDECARD_FUZZ_HARNESS_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#define HARNESS_MAX_METHODS 64
#define HARNESS_TASK_CAP 3000000 /* the daemon's task_max_usage setting here */

/* What a request did, from its response. */
struct harness_outcome {
	int error;    /* the error code, or 0 */
	int checked;  /* a check's result: 1 allowed, 2 blocked */
	int replayed;
	uint64_t txn; /* transaction_id of the result, or 0 */
};

/* Read-only for the targets. */
struct harness_view {
	const char *name;                    /* the target's, for messages */
	unsigned n_methods;                  /* the dispatcher's method table */
	const char *method_name[HARNESS_MAX_METHODS];
	int method_changes[HARNESS_MAX_METHODS];
	uint64_t org, agent[2], rule[2], txn[2]; /* the setup's ids, the last two transactions */
	int trace;                           /* FUZZ_TRACE is set */
};
extern struct harness_view H;

/* Once per process: the method table, a directory for segments and ledgers, liburcu. */
void harness_init(const char *name);

/*
 * A fresh segment and ledger with the setup, made of requests: an org
 * "acme" with a funded wallet, agent "a" (wallet limits and a rule
 * "openai.*") and agent "b" (priority high, rules "*" and "tool.search"),
 * and a price of "gpt-x".
 */
void harness_open(void);
/*
 * Ends the input: the ledger is written out and replayed into a second
 * fresh segment, where every record must reproduce its recorded result
 * and the tables must come out byte for byte as the live ones; then both
 * are closed and removed.
 */
void harness_close(void);

/*
 * Sends method (index k of the table, or H.n_methods for a name the table
 * does not have) with params, the packed msgpack after the method name
 * (normally [map]), on connection conn_id, framed and checked as the
 * server does first (proto_scan, proto_request_parse): returns -1 for a
 * message the server would refuse there, else 0 and the outcome in *out,
 * after checking every invariant of a request (harness.c).
 */
int harness_request(unsigned k, const char *params, size_t params_len, uint64_t conn_id,
                    struct harness_outcome *out);
/*
 * A clock step, by mode % 4: dispatch_expire (twice as likely),
 * dispatch_push_alerts or dispatch_conn_closed(1 + (mode >> 5 & 1)).
 */
void harness_clock_step(uint8_t mode);

/*
 * Template text, the compact notation of valid arguments:
 * {key:value,...}, [value,...], 'string', an integer, or $x for an id of
 * the setup (harness_var). harness_pack_value packs the value at *p and
 * moves *p past it; harness_skip_value returns the end of the value at p.
 */
void harness_pack_value(msgpack_packer *pk, const char **p);
const char *harness_skip_value(const char *p);
/*
 * Valid arguments of method k of the table, as template text; NULL when
 * the harness has none (a method added to the table needs one).
 */
const char *harness_template(unsigned k);
/*
 * The value of $c: a and b the agents, o the org, r and s their first
 * rules, t and u the last two transactions, anything else the time.
 */
uint64_t harness_var(char c);

#endif /* SIDECARD_FUZZ_HARNESS_H */
