/*
 * peek_bench.h: the measuring function of bench/peek_bench.c, for any
 * benchmark that wants a `peek` row (a wallet read through the shared
 * mapping, next to the same read over the socket).
 *
 * Threads: call from one thread; it starts and joins its own.
 */
#ifndef SC_BENCH_PEEK_BENCH_H
#define SC_BENCH_PEEK_BENCH_H

#include <stddef.h>
#include <stdint.h>

/*
 * Reads are timed in batches. *_ns is a read's time in the median batch,
 * which a batch that lost the processor to another process does not move;
 * *_mean_ns the mean over every batch (what the threads' busy time gave).
 */
struct peek_bench_result {
	unsigned threads;
	uint64_t peeks;       /* sc_peek_wallet calls timed, all threads */
	double peek_ns;
	double peek_mean_ns;
	double peeks_per_s;   /* all threads together */
	uint64_t gets;        /* sc_wallets_get round trips timed, one connection per thread */
	double get_ns;
	double get_mean_ns;
	double gets_per_s;
	double ratio;         /* get_ns / peek_ns: how many peeks one socket read costs */
};

/*
 * Maps the state of the daemon at socket_path (sc_peek_open_client), then
 * for `seconds` has `threads` threads peek the wallets of the n agents in
 * agent_ids, each thread in its own shuffled order, all through one
 * mapping; then for as long the same threads read the same wallets with
 * sc_wallets_get, each over its own connection. Every read must succeed.
 * Returns 0, or -1 with the reason in err.
 */
int peek_bench_run(const char *socket_path, const uint64_t *agent_ids, size_t n, unsigned threads,
                   double seconds, struct peek_bench_result *out, char *err, size_t errlen);

#endif /* SC_BENCH_PEEK_BENCH_H */
