/*
 * gate_bench.h: the parts of bench/gate_bench shared by its files (beside
 * bench_util.h, which every benchmark shares): the interface every system
 * under test implements: sidecard (sys_sidecard.c) and its peers,
 * the bare socket floor (peer_floor.c) and Redis with a Lua budget script
 * (peer_redis.c). gate_bench.c runs them side by side and prints the table.
 *
 * Threads: a struct sys is started and stopped by the main thread; its
 * connect, op and disconnect run on client threads, one connection each.
 */
#ifndef SC_BENCH_GATE_BENCH_H
#define SC_BENCH_GATE_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "bench_util.h"

#define BENCH_ESTIMATE 1000 /* micros per check, reported as charged */
#define BENCH_PIPE_BATCH 4096 /* checks per pipelined operation */
/*
 * Wallet reads per timed peek operation: one read through the mapping takes
 * tens of nanoseconds, below what two clock readings resolve, so a batch is
 * timed and its time divided by the reads (bench/peek_bench.c does the same).
 */
#define BENCH_PEEK_BATCH 1024

/* ----- systems under test ----- */

enum op_kind {
	OP_CHECK,     /* one check (its hold stays) */
	OP_PAIR,      /* a check and its report */
	OP_PIPELINED, /* BENCH_PIPE_BATCH checks on one connection, windowed */
	OP_ADMIN,     /* one admin change: a wallet top-up or a rule update, alternately */
	OP_PEEK       /* wallet reads: sidecard's BENCH_PEEK_BATCH through its mapping, a peer's one */
};

/* What every system is set up with before a run. */
struct setup {
	size_t agents;     /* agents of the one org */
	size_t rules;      /* rules per agent */
	size_t meta_bytes; /* packed size of each check's metadata map; 0: none */
	int quiet;         /* no progress on stderr */
};

struct sys {
	const char *name;       /* "sidecard", "redis", "floor" */
	const char *durability; /* as printed */
	pid_t pid;              /* the server process measured for CPU and RSS */
	struct setup setup;
	void *priv;
	int (*connect)(struct sys *s, void **conn, char *err, size_t len);
	/*
	 * One operation on agents drawn with rng; returns the operations it
	 * counts for (a pipelined batch counts each check, a peek batch each
	 * read) or -1 with err.
	 */
	long (*op)(void *conn, enum op_kind k, uint64_t *rng, char *err, size_t len);
	void (*disconnect)(void *conn);
	/* Ledger records synced and fdatasyncs so far; NULL when meaningless. */
	int (*ledger)(struct sys *s, int64_t *records, int64_t *syncs);
	/* Stops the server and frees everything; 0, or -1 with the reason on stderr. */
	int (*stop)(struct sys *s);
};

/* sys_sidecard.c: a fresh daemon in durability mode ("async" or "strict"), set up. */
int sidecard_start(struct sys *s, const char *durability, const struct setup *st,
                   uint64_t holds, char *err, size_t len);

/* peer_redis.c: NULL if redis-server can be run, else why not. */
const char *redis_missing(void);
/* A fresh redis-server on a temporary Unix socket, appendfsync always or no persistence. */
int redis_start(struct sys *s, int fsync_always, const struct setup *st, char *err, size_t len);

/* peer_floor.c: an echo server process answering req_size bytes with resp_size bytes. */
int floor_start(struct sys *s, size_t req_size, size_t resp_size, char *err, size_t len);
/* The sizes of a packed check request (with meta_bytes of metadata) and its answer. */
void floor_message_sizes(size_t meta_bytes, size_t *req, size_t *resp);

#endif /* SC_BENCH_GATE_BENCH_H */
