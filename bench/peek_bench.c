/*
 * peek_bench.c: what a wallet read through the shared mapping costs
 * (libsidecard's sc_peek_wallet), next to the same read over the socket
 * (sc_wallets_get), in one run: the target is under 100 ns and no system
 * call per read (docs/PERFORMANCE.md).
 *
 * It starts a daemon (tests/daemon.c; --durability async, so that setting
 * up thousands of agents is quick), or uses the one at --socket, creates
 * --agents wallets (10000) and places one open hold on each so that every
 * field is live, then runs peek_bench_run (peek_bench.h) with 1 and 2
 * threads for --seconds each and prints a table: ns per peek, peeks per
 * second, ns per socket read, reads per second, and their ratio.
 *
 * Peeks are timed in batches of BATCH reads between two clock_gettime
 * calls (vDSO: no system call), so the clock's cost is spread over the
 * batch; the median batch gives the time per read (a batch preempted by
 * another process on this shared 2-core machine does not move it), the
 * mean is printed too. Each thread reads the agents in its own shuffled
 * order, so the numbers include the cache misses of a fleet larger than the
 * caches.
 *
 * --peek-only COUNT skips the comparison: after the setup, the main thread
 * peeks COUNT times and prints the time per peek. Run it under
 * `strace -c -f` with two COUNTs against a daemon started separately
 * (--socket): the same syscall total for 10x the peeks shows that a peek
 * makes none.
 *
 * Threads: the main thread sets up; peek_bench_run's threads only read
 * (one sc_peek shared, one sc_client each) and record into their own slot.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_util.h"
#include "peek_bench.h"
#include "sidecard.h"

#define MAX_THREADS 64
#define BATCH 1024      /* peeks timed together */
#define GET_BATCH 16    /* socket reads timed together */

/* ------------------------------------------------------------ measuring */

struct reader {
	pthread_t thread;
	unsigned index;
	const sc_peek *p;
	const char *socket_path;
	const uint64_t *ids;
	size_t n;
	uint64_t *order;      /* ids in this thread's order */
	int64_t deadline_ns;  /* set by the main thread before the barrier opens */
	pthread_barrier_t *go;
	int get;              /* 0: peek; 1: sc_wallets_get */
	uint64_t reads;
	int64_t busy_ns;      /* sum of the timed batches */
	int64_t *batch_ns;    /* each batch's time */
	size_t n_batch, cap_batch;
	int64_t sum;          /* of the balances read, so the reads are used */
	int rc;
	char error[256];
};

/* Records a batch's time; 0, or -1 (and the reader fails) without memory. */
static int record_batch(struct reader *r, int64_t ns, unsigned reads)
{
	if (r->n_batch == r->cap_batch) {
		size_t cap = r->cap_batch ? 2 * r->cap_batch : 4096;
		int64_t *v = realloc(r->batch_ns, cap * sizeof(*v));

		if (v == NULL) {
			r->rc = -ENOMEM;
			snprintf(r->error, sizeof(r->error), "out of memory");
			return -1;
		}
		r->batch_ns = v;
		r->cap_batch = cap;
	}
	r->batch_ns[r->n_batch++] = ns;
	r->busy_ns += ns;
	r->reads += reads;
	return 0;
}

static void shuffle(struct reader *r)
{
	uint64_t x = 0x9e3779b97f4a7c15ULL * (r->index + 1);

	memcpy(r->order, r->ids, r->n * sizeof(*r->order));
	for (size_t i = r->n; i > 1; i--) {
		size_t j;
		uint64_t t;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		j = (size_t)(x % i);
		t = r->order[i - 1];
		r->order[i - 1] = r->order[j];
		r->order[j] = t;
	}
}

static void *peek_main(void *arg)
{
	struct reader *r = arg;
	size_t at = 0;

	pthread_barrier_wait(r->go);
	while (r->rc == 0 && bench_now_ns() < r->deadline_ns) {
		int64_t t0 = bench_now_ns(), t1;

		for (int i = 0; i < BATCH; i++) {
			sc_wallet_snapshot s;
			int rc = sc_peek_wallet(r->p, r->order[at], &s);

			if (rc != 0) {
				r->rc = rc;
				snprintf(r->error, sizeof(r->error), "peek of agent %" PRIu64 ": %s",
				         r->order[at], sc_strerror(rc));
				break;
			}
			r->sum += s.balance;
			if (++at == r->n)
				at = 0;
		}
		t1 = bench_now_ns();
		if (r->rc == 0)
			record_batch(r, t1 - t0, BATCH);
	}
	return NULL;
}

static void *get_main(void *arg)
{
	struct reader *r = arg;
	sc_client *c = NULL;
	size_t at = 0;

	r->rc = sc_connect(r->socket_path, &c);
	if (r->rc != 0)
		snprintf(r->error, sizeof(r->error), "connect %s: %s", r->socket_path,
		         sc_strerror(r->rc));
	pthread_barrier_wait(r->go);
	while (r->rc == 0 && bench_now_ns() < r->deadline_ns) {
		int64_t t0 = bench_now_ns(), t1;

		for (int i = 0; i < GET_BATCH; i++) {
			sc_wallet w;
			int rc = sc_wallets_get(c, r->order[at], &w);

			if (rc != 0) {
				r->rc = rc;
				snprintf(r->error, sizeof(r->error), "wallets.get of agent %" PRIu64 ": %s",
				         r->order[at], sc_last_error(c));
				break;
			}
			r->sum += w.balance;
			if (++at == r->n)
				at = 0;
		}
		t1 = bench_now_ns();
		if (r->rc == 0)
			record_batch(r, t1 - t0, GET_BATCH);
	}
	sc_close(c);
	return NULL;
}

/* The time of the median batch of every reader's batches, or 0 (none, or no memory). */
static int64_t median_batch(const struct reader *rs, unsigned threads)
{
	size_t n = 0, k = 0;
	int64_t *all, median;

	for (unsigned i = 0; i < threads; i++)
		n += rs[i].n_batch;
	if (n == 0 || (all = malloc(n * sizeof(*all))) == NULL)
		return 0;
	for (unsigned i = 0; i < threads; i++) {
		memcpy(all + k, rs[i].batch_ns, rs[i].n_batch * sizeof(*all));
		k += rs[i].n_batch;
	}
	qsort(all, n, sizeof(*all), bench_cmp_i64);
	median = all[n / 2];
	free(all);
	return median;
}

/*
 * Runs `threads` readers of one kind for `seconds`: the reads, the mean and
 * median time of one (ns) and the wall time.
 */
static int run_readers(struct reader *rs, unsigned threads, int get, double seconds,
                       uint64_t *reads, double *mean_ns, double *median_ns, double *wall_s,
                       char *err, size_t errlen)
{
	pthread_barrier_t go;
	int64_t t0, busy_ns = 0;
	int failed = 0;

	pthread_barrier_init(&go, NULL, threads + 1);
	for (unsigned i = 0; i < threads; i++) {
		rs[i].get = get;
		rs[i].go = &go;
		rs[i].reads = 0;
		rs[i].busy_ns = 0;
		rs[i].n_batch = 0;
		rs[i].deadline_ns = INT64_MAX;
		pthread_create(&rs[i].thread, NULL, get ? get_main : peek_main, &rs[i]);
	}
	/* Every thread sees the deadline: it is written before the barrier opens. */
	t0 = bench_now_ns();
	for (unsigned i = 0; i < threads; i++)
		rs[i].deadline_ns = t0 + (int64_t)(seconds * 1e9);
	pthread_barrier_wait(&go);
	*reads = 0;
	for (unsigned i = 0; i < threads; i++) {
		pthread_join(rs[i].thread, NULL);
		if (rs[i].rc != 0 && !failed) {
			snprintf(err, errlen, "%s", rs[i].error);
			failed = 1;
		}
		*reads += rs[i].reads;
		busy_ns += rs[i].busy_ns;
	}
	*wall_s = (double)(bench_now_ns() - t0) / 1e9;
	pthread_barrier_destroy(&go);
	*mean_ns = *reads ? (double)busy_ns / (double)*reads : 0;
	*median_ns = (double)median_batch(rs, threads) / (get ? GET_BATCH : BATCH);
	return failed ? -1 : 0;
}

int peek_bench_run(const char *socket_path, const uint64_t *agent_ids, size_t n, unsigned threads,
                   double seconds, struct peek_bench_result *out, char *err, size_t errlen)
{
	struct reader rs[MAX_THREADS];
	sc_client *c = NULL;
	sc_peek *p = NULL;
	double wall;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	memset(rs, 0, sizeof(rs));
	if (threads < 1 || threads > MAX_THREADS || n == 0 || !(seconds > 0)) {
		snprintf(err, errlen, "threads 1..%d, at least one agent and a positive time",
		         MAX_THREADS);
		return -1;
	}
	if ((rc = sc_connect(socket_path, &c)) != 0) {
		snprintf(err, errlen, "connect %s: %s", socket_path, sc_strerror(rc));
		return -1;
	}
	rc = sc_peek_open_client(c, &p, err, errlen);
	sc_close(c);
	if (rc != 0)
		return -1;
	rc = 0;
	for (unsigned i = 0; i < threads && rc == 0; i++) {
		rs[i] = (struct reader){ .index = i, .p = p, .socket_path = socket_path, .ids = agent_ids,
			                 .n = n };
		if ((rs[i].order = malloc(n * sizeof(*rs[i].order))) == NULL) {
			snprintf(err, errlen, "out of memory");
			rc = -1;
		} else {
			shuffle(&rs[i]);
		}
	}
	out->threads = threads;
	if (rc == 0)
		rc = run_readers(rs, threads, 0, seconds, &out->peeks, &out->peek_mean_ns,
		                 &out->peek_ns, &wall, err, errlen);
	if (rc == 0) {
		out->peeks_per_s = (double)out->peeks / wall;
		rc = run_readers(rs, threads, 1, seconds, &out->gets, &out->get_mean_ns, &out->get_ns,
		                 &wall, err, errlen);
	}
	if (rc == 0) {
		out->gets_per_s = (double)out->gets / wall;
		out->ratio = out->peek_ns > 0 ? out->get_ns / out->peek_ns : 0;
	}
	for (unsigned i = 0; i < threads; i++) {
		free(rs[i].order);
		free(rs[i].batch_ns);
	}
	sc_peek_close(p);
	return rc;
}

/* ---------------------------------------------------------------- setup */

/* Creates n agents with an open hold each; their ids into ids. 0 or -1. */
static int make_agents(const char *socket_path, uint64_t *ids, size_t n)
{
	sc_wallet_update u = { .set = SC_WALLET_SET_BALANCE | SC_WALLET_SET_DAILY_SPEND_LIMIT,
		               .balance = INT64_C(1000000000), .daily_spend_limit = INT64_C(500000000) };
	char org[32];
	sc_client *c = NULL;
	int rc;

	snprintf(org, sizeof(org), "peek-bench-%ld", (long)getpid());
	if ((rc = sc_connect(socket_path, &c)) != 0 || (rc = sc_orgs_create(c, org, &(sc_org){ 0 })))
		goto fail;
	for (size_t i = 0; i < n; i++) {
		sc_check_req req = { .action = "llm.chat", .estimated_cost = 1000 + (sc_micros)i };
		char name[32];
		sc_decision d;
		sc_agent a;

		snprintf(name, sizeof(name), "agent-%zu", i);
		if ((rc = sc_agents_create(c, org, name, SC_PRIORITY_NORMAL, &u, NULL, 0, &a)) != 0)
			goto fail;
		ids[i] = req.agent_id = a.id;
		if ((rc = sc_check(c, &req, &d)) != 0)
			goto fail;
	}
	sc_close(c);
	return 0;
fail:
	fprintf(stderr, "peek_bench: setup: %s: %s\n", sc_err_name(rc), c ? sc_last_error(c) : "");
	sc_close(c);
	return -1;
}

/* COUNT peeks in this thread, for strace: the loop has no system call. */
static int peek_only(const char *socket_path, const uint64_t *ids, size_t n, long count)
{
	char err[512];
	sc_client *c = NULL;
	sc_peek *p = NULL;
	int64_t t0, t1, sum = 0;
	int rc;

	if ((rc = sc_connect(socket_path, &c)) != 0 ||
	    (rc = sc_peek_open_client(c, &p, err, sizeof(err))) != 0) {
		fprintf(stderr, "peek_bench: %s\n", c ? err : sc_strerror(rc));
		sc_close(c);
		return -1;
	}
	sc_close(c);
	t0 = bench_now_ns();
	for (long i = 0; i < count; i++) {
		sc_wallet_snapshot s;

		if ((rc = sc_peek_wallet(p, ids[(size_t)i % n], &s)) != 0) {
			fprintf(stderr, "peek_bench: peek: %s\n", sc_strerror(rc));
			sc_peek_close(p);
			return -1;
		}
		sum += s.balance;
	}
	t1 = bench_now_ns();
	sc_peek_close(p);
	printf("%ld peeks in %.3f s: %.1f ns per peek (checksum %" PRId64 ")\n", count,
	       (double)(t1 - t0) / 1e9, count ? (double)(t1 - t0) / (double)count : 0, sum);
	return 0;
}

static void usage(FILE *out)
{
	fprintf(out, "usage: peek_bench [--socket PATH] [--agents N] [--seconds S] [--quiet]\n"
	             "                  [--peek-only COUNT]\n"
	             "Times wallet reads through the shared mapping (sc_peek_wallet) and over the\n"
	             "socket (sc_wallets_get) with 1 and 2 threads, over N agents (10000), S seconds\n"
	             "(1) each; with no --socket, against a daemon of its own.\n");
}

int main(int argc, char **argv)
{
	static const unsigned thread_counts[] = { 1, 2 };
	struct peek_bench_result res[2];
	struct bench_daemon bd = { .dir = "" }; /* "": on a new temporary directory */
	const char *socket_path = NULL;
	char agents_arg[24], err[4400];
	double seconds = 1;
	long n_agents = 10000, only = -1;
	int quiet = 0, own = 0, rc = 0;
	uint64_t *ids;

	signal(SIGPIPE, SIG_IGN);
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc)
			socket_path = argv[++i];
		else if (strcmp(argv[i], "--agents") == 0 && i + 1 < argc)
			n_agents = atol(argv[++i]);
		else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
			seconds = strtod(argv[++i], NULL);
		else if (strcmp(argv[i], "--peek-only") == 0 && i + 1 < argc)
			only = atol(argv[++i]);
		else if (strcmp(argv[i], "--quiet") == 0)
			quiet = 1;
		else
			return bench_other_arg(argv[i], usage);
	}
	if (n_agents < 1 || n_agents > 1000000 || !(seconds > 0) || seconds > 3600) {
		usage(stderr);
		return 2;
	}
	if ((ids = malloc((size_t)n_agents * sizeof(*ids))) == NULL) {
		fputs("peek_bench: out of memory\n", stderr);
		return 1;
	}
	if (socket_path == NULL) {
		const char *extra[] = { "--durability", "async", "--hold-ttl", "3600", "--agents",
			                agents_arg, "--holds", agents_arg, "--max-holds-per-org",
			                agents_arg, "--log-level", "warn", NULL };

		snprintf(agents_arg, sizeof(agents_arg), "%ld", n_agents + 16);
		if (bench_daemon_start(&bd, extra, err, sizeof(err)) != 0) {
			fprintf(stderr, "peek_bench: %s\n", err);
			free(ids);
			return 1;
		}
		own = 1;
		socket_path = bd.d.socket;
	}
	if (make_agents(socket_path, ids, (size_t)n_agents) != 0)
		rc = 1;
	else if (only >= 0)
		rc = peek_only(socket_path, ids, (size_t)n_agents, only) != 0;
	for (size_t k = 0; rc == 0 && only < 0 && k < 2; k++) {
		if (peek_bench_run(socket_path, ids, (size_t)n_agents, thread_counts[k], seconds, &res[k],
		                   err, sizeof(err)) != 0) {
			fprintf(stderr, "peek_bench: %s\n", err);
			rc = 1;
		}
	}
	if (own && bench_daemon_stop(&bd, 0, err, sizeof(err)) != 0) {
		fprintf(stderr, "peek_bench: %s\n", err);
		rc = 1;
	}
	free(ids);
	if (rc != 0 || quiet || only >= 0)
		return rc;
	printf("%7s %8s %9s %11s %8s %8s %9s %8s\n", "threads", "peek_ns", "peek_avg", "peeks/s",
	       "get_ns", "get_avg", "gets/s", "get/peek");
	for (size_t k = 0; k < 2; k++)
		printf("%7u %8.1f %9.1f %11.0f %8.0f %8.0f %9.0f %8.0f\n", res[k].threads,
		       res[k].peek_ns, res[k].peek_mean_ns, res[k].peeks_per_s, res[k].get_ns,
		       res[k].get_mean_ns, res[k].gets_per_s, res[k].ratio);
	printf("peek_ns, get_ns: a read's time in the median batch (sc_peek_wallet; sc_wallets_get "
	       "round trip), *_avg the mean, over %ld agents\n", n_agents);
	bench_print_command("peek_bench", argc, argv, own ? test_daemon_bin() : socket_path);
	return 0;
}
