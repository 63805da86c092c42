/*
 * gate_bench.h: the parts of bench/gate_bench shared by its files: latency
 * histograms and process accounting (bench_util.c), and the interface every
 * system under test implements: sidecard (sys_sidecard.c) and its peers,
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

#define BENCH_ESTIMATE 1000 /* micros per check, reported as charged */
#define BENCH_PIPE_BATCH 4096 /* checks per pipelined operation */
/*
 * Wallet reads per timed peek operation: one read through the mapping takes
 * tens of nanoseconds, below what two clock readings resolve, so a batch is
 * timed and its time divided by the reads (bench/peek_bench.c does the same).
 */
#define BENCH_PEEK_BATCH 1024

/* ----- latency histogram (bench_util.c) ----- */

/*
 * Log-linear buckets: values below 2 * HIST_SUB ns exactly, then HIST_SUB
 * buckets per power of two (under 1.6% apart) up to 2^HIST_MAX_EXP ns.
 * Percentiles come from counts, so millions of samples cost no sorting.
 */
#define HIST_SUB 64
#define HIST_MAX_EXP 40
#define HIST_BUCKETS (2 * HIST_SUB + (HIST_MAX_EXP - 7 + 1) * HIST_SUB)

struct hist {
	uint64_t n;
	uint64_t b[HIST_BUCKETS];
};

void hist_add(struct hist *h, int64_t ns);
void hist_merge(struct hist *into, const struct hist *from);
/* The p-quantile (0..1) in microseconds; 0 without samples. */
double hist_quantile_us(const struct hist *h, double p);

/* ----- time and processes ----- */

int64_t bench_now_ns(void);
void bench_sleep_ms(long ms);
/* A fast per-thread random number (xorshift64*); *state must not be 0. */
uint64_t bench_rand(uint64_t *state);

/* CPU seconds (user + system) and resident MiB of a process. 0 or -1. */
struct proc_sample {
	double cpu_s;
	double rss_mib;
};
int proc_sample(pid_t pid, struct proc_sample *out);

/* Starts argv as a child that dies with this process, output to log. pid or -1. */
pid_t bench_spawn(const char *const *argv, const char *log);
/* SIGTERM, then SIGKILL after 10 s; the exit code (128 + signal if killed), -1 if none. */
int bench_reap(pid_t pid);
/* 1 once a Unix socket at path accepts a connection, polled for up to 10 s; 0 if not. */
int bench_wait_socket(const char *path, pid_t pid);

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

/*
 * The length of a metadata value whose map {"note": value} packs to bytes,
 * exact except where a longer string header would overshoot (exact for the
 * sweep's 128 and 512); 0 below 8 bytes.
 */
size_t bench_meta_value_len(size_t bytes);

#endif /* SC_BENCH_GATE_BENCH_H */
