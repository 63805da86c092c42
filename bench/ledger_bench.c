/*
 * ledger_bench.c: what the durable ledger costs. For each durability mode
 * (strict, async), client count (1 and --clients, default 8) and daemon
 * worker count (--workers, a comma-separated list passed to the daemon's
 * --workers; default 1) it starts a fresh daemon on a temporary directory, gives each client thread its own
 * connection and agent, and has every thread run check + report pairs for
 * --seconds (default 3) after a warm-up. It prints one table: pairs per
 * second ("ops/s": one op = one check and its report, i.e. checks gated per
 * second; twice as many requests), the 50th, 99th and 99.9th percentile of
 * a check's round trip in microseconds, and the ledger's group commit as
 * records per fdatasync (the daemon's ledger_records_synced / ledger_syncs
 * over the measured interval). Then the command line that reproduces it and
 * the machine. docs/PERFORMANCE.md records a run.
 *
 * --disk N: instead, the disk's own cost of a durable 256-byte record on the
 * temporary directory's file system, N times each way: appended with pwrite
 * + fdatasync (the file grows: the sync commits its size too), over a
 * zero-filled file with pwrite + fdatasync (what the ledger does), with
 * O_DSYNC, and with pwritev2(RWF_DSYNC); p50 and p99 in microseconds.
 *
 * The daemon is started by tests/daemon.c ($SIDECARD_BIN, else
 * sidecard/sidecard next to the build tree); its output goes to a log file
 * in its directory, which is removed after a clean stop. A check that is not
 * allowed or any error fails the run (exit 1): the numbers would be lies.
 *
 * Threads: the main thread starts and stops daemons and reads stats; the
 * client threads only send requests and record latencies into their own
 * arrays, which the main thread reads after joining them.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "bench_util.h"
#include "sidecard.h"
#include "tmpdir.h"

#define MAX_CLIENTS 256
#define MAX_WORKER_COUNTS 4 /* --workers 1,2,4,8 */
#define WARMUP_MS 300
#define ESTIMATE 1000 /* micros per check; reported as charged */

struct client {
	pthread_t thread;
	int index;
	uint64_t agent;
	int64_t *lat_ns; /* check round trips while measuring */
	int64_t *rep_ns; /* report round trips, same count */
	size_t n_lat, cap_lat;
	unsigned long pairs; /* completed while measuring */
	struct bench_fail fail;
};

static struct {
	struct bench_daemon bd;
	pthread_barrier_t go;
	int measuring, stop;
} b;

/* Starts the daemon in the given mode (a static string) on a new directory. 0 or -1. */
static int daemon_start(const char *mode, unsigned workers)
{
	static char workers_arg[16];
	const char *extra[] = { "--durability", mode, "--hold-ttl", "3600", "--log-level", "warn",
		                "--workers", workers_arg, NULL };
	char err[4400];

	snprintf(workers_arg, sizeof(workers_arg), "%u", workers);
	b.bd.dir[0] = '\0';
	if (bench_daemon_start(&b.bd, extra, err, sizeof(err)) != 0) {
		fprintf(stderr, "ledger_bench: %s\n", err);
		return -1;
	}
	return 0;
}

/* SIGTERM; a clean stop removes the directory. 0 or -1. */
static int daemon_stop(void)
{
	char err[4400];

	if (bench_daemon_stop(&b.bd, 0, err, sizeof(err)) != 0) {
		fprintf(stderr, "ledger_bench: %s\n", err);
		return -1;
	}
	return 0;
}

static void *client_main(void *arg)
{
	struct client *cl = arg;
	sc_check_req req = { .agent_id = cl->agent, .action = "llm.chat",
		             .estimated_cost = ESTIMATE };
	sc_decision d;
	sc_settlement s;
	sc_client *c = NULL;
	int rc = sc_connect(b.bd.d.socket, &c);
	int64_t t0, t1, t2;
	int measured;

	if (rc != 0)
		bench_fail(&cl->fail, cl->index, NULL, rc, "connect");
	pthread_barrier_wait(&b.go);
	while (cl->fail.rc == 0 && !__atomic_load_n(&b.stop, __ATOMIC_ACQUIRE)) {
		measured = __atomic_load_n(&b.measuring, __ATOMIC_ACQUIRE);
		t0 = bench_now_ns();
		if ((rc = sc_check(c, &req, &d)) != 0) {
			bench_fail(&cl->fail, cl->index, c, rc, "check");
			break;
		}
		t1 = bench_now_ns();
		if (!d.allowed) {
			bench_fail(&cl->fail, cl->index, c, 0, d.block_reason);
			break;
		}
		if ((rc = sc_report(c, d.transaction_id, SC_OUTCOME_SUCCESS, 0, 0, &s)) != 0) {
			bench_fail(&cl->fail, cl->index, c, rc, "report");
			break;
		}
		t2 = bench_now_ns();
		if (!measured || !__atomic_load_n(&b.measuring, __ATOMIC_ACQUIRE))
			continue;
		if (cl->n_lat == cl->cap_lat) {
			cl->cap_lat = cl->cap_lat ? 2 * cl->cap_lat : 65536;
			cl->lat_ns = realloc(cl->lat_ns, cl->cap_lat * sizeof(*cl->lat_ns));
			cl->rep_ns = realloc(cl->rep_ns, cl->cap_lat * sizeof(*cl->rep_ns));
			if (cl->lat_ns == NULL || cl->rep_ns == NULL) {
				bench_fail(&cl->fail, cl->index, c, -ENOMEM, "latency array");
				break;
			}
		}
		cl->rep_ns[cl->n_lat] = t2 - t1;
		cl->lat_ns[cl->n_lat++] = t1 - t0;
		cl->pairs++;
	}
	sc_close(c);
	return NULL;
}

struct row {
	const char *mode;
	unsigned workers;
	int clients;
	double ops;
	double p50, p99, p999; /* microseconds, check */
	double rep_p50;        /* microseconds, report */
	double per_sync;
};

static double percentile_us(const int64_t *v, size_t n, double p)
{
	return n == 0 ? 0 : (double)v[(size_t)(p * (double)(n - 1))] / 1000.0;
}

/* Runs one configuration. 0 or -1. */
static int run_one(const char *mode, unsigned workers, int n_clients, double seconds,
                   struct row *out)
{
	static struct client clients[MAX_CLIENTS];
	sc_wallet_update u = { .set = SC_WALLET_SET_BALANCE, .balance = INT64_C(1000000000000000) };
	int64_t syncs0 = 0, recs0 = 0, syncs1 = 0, recs1 = 0, t0, t1, *all, *rep;
	size_t n_all = 0, k;
	sc_client *c = NULL;
	sc_agent a;
	sc_org o;
	int i, rc, failed = 0;

	if (daemon_start(mode, workers) != 0)
		return -1;
	if ((rc = sc_connect(b.bd.d.socket, &c)) != 0 || (rc = sc_orgs_create(c, "bench", &o)) != 0) {
		fprintf(stderr, "ledger_bench: setup: %s: %s\n", sc_err_name(rc),
		        c ? sc_last_error(c) : "");
		sc_close(c);
		daemon_stop();
		return -1;
	}
	memset(clients, 0, sizeof(clients));
	for (i = 0; i < n_clients; i++) {
		char name[32];

		snprintf(name, sizeof(name), "bench-%d", i);
		if ((rc = sc_agents_create(c, "bench", name, SC_PRIORITY_NORMAL, &u, NULL, 0, &a))) {
			fprintf(stderr, "ledger_bench: agents.create: %s: %s\n", sc_err_name(rc),
			        sc_last_error(c));
			sc_close(c);
			daemon_stop();
			return -1;
		}
		clients[i].index = i;
		clients[i].agent = a.id;
	}
	__atomic_store_n(&b.stop, 0, __ATOMIC_RELEASE);
	__atomic_store_n(&b.measuring, 0, __ATOMIC_RELEASE);
	pthread_barrier_init(&b.go, NULL, (unsigned)n_clients + 1);
	for (i = 0; i < n_clients; i++)
		pthread_create(&clients[i].thread, NULL, client_main, &clients[i]);
	pthread_barrier_wait(&b.go);
	test_sleep_ms(WARMUP_MS);
	sc_stat(c, "ledger_syncs", &syncs0);
	sc_stat(c, "ledger_records_synced", &recs0);
	t0 = bench_now_ns();
	__atomic_store_n(&b.measuring, 1, __ATOMIC_RELEASE);
	test_sleep_ms((long)(seconds * 1000));
	__atomic_store_n(&b.measuring, 0, __ATOMIC_RELEASE);
	t1 = bench_now_ns();
	sc_stat(c, "ledger_syncs", &syncs1);
	sc_stat(c, "ledger_records_synced", &recs1);
	__atomic_store_n(&b.stop, 1, __ATOMIC_RELEASE);
	for (i = 0; i < n_clients; i++)
		pthread_join(clients[i].thread, NULL);
	pthread_barrier_destroy(&b.go);
	sc_close(c);

	for (i = 0; i < n_clients; i++) {
		if (clients[i].fail.rc != 0) {
			fprintf(stderr, "ledger_bench: %s\n", clients[i].fail.error);
			failed = 1;
		}
		n_all += clients[i].n_lat;
	}
	all = malloc((n_all + 1) * sizeof(*all));
	rep = malloc((n_all + 1) * sizeof(*rep));
	n_all = 0;
	for (i = 0; i < n_clients; i++) {
		for (k = 0; k < clients[i].n_lat && all != NULL && rep != NULL; k++) {
			rep[n_all] = clients[i].rep_ns[k];
			all[n_all++] = clients[i].lat_ns[k];
		}
		free(clients[i].lat_ns);
		free(clients[i].rep_ns);
	}
	if (daemon_stop() != 0 || all == NULL || rep == NULL || failed || n_all == 0) {
		if (n_all == 0 && !failed)
			fprintf(stderr, "ledger_bench: no pair completed in %s mode\n", mode);
		free(all);
		free(rep);
		return -1;
	}
	qsort(all, n_all, sizeof(*all), bench_cmp_i64);
	qsort(rep, n_all, sizeof(*rep), bench_cmp_i64);
	out->rep_p50 = percentile_us(rep, n_all, 0.50);
	free(rep);
	out->mode = mode;
	out->workers = workers;
	out->clients = n_clients;
	out->ops = (double)n_all / ((double)(t1 - t0) / 1e9);
	out->p50 = percentile_us(all, n_all, 0.50);
	out->p99 = percentile_us(all, n_all, 0.99);
	out->p999 = percentile_us(all, n_all, 0.999);
	out->per_sync = syncs1 > syncs0 ? (double)(recs1 - recs0) / (double)(syncs1 - syncs0) : 0;
	free(all);
	return 0;
}

/* ---- --disk: the sync primitives alone ---- */

enum disk_way { DISK_APPEND, DISK_OVERWRITE, DISK_O_DSYNC, DISK_RWF_DSYNC };

/* One way, n records of 256 bytes in a new file of dir. 0 or -1. */
static int disk_way(const char *dir, enum disk_way way, int n, double *p50, double *p99)
{
	static const char *const names[] = { "append", "overwrite", "o_dsync", "rwf_dsync" };
	char path[128], rec[256], *zero;
	int64_t *lat = malloc((size_t)n * sizeof(*lat));
	size_t size = (size_t)n * sizeof(rec);
	int fd, i, rc = 0;

	memset(rec, 'r', sizeof(rec));
	snprintf(path, sizeof(path), "%s/%s", dir, names[way]);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	zero = calloc(1, size);
	if (fd < 0 || lat == NULL || zero == NULL)
		goto fail;
	if (way != DISK_APPEND &&
	    (pwrite(fd, zero, size, 0) != (ssize_t)size || fdatasync(fd) != 0))
		goto fail;
	if (way == DISK_O_DSYNC) {
		close(fd);
		if ((fd = open(path, O_WRONLY | O_DSYNC | O_CLOEXEC)) < 0)
			goto fail;
	}
	for (i = 0; i < n; i++) {
		off_t off = (off_t)i * (off_t)sizeof(rec);
		int64_t t0 = bench_now_ns();
		ssize_t w;

		if (way == DISK_RWF_DSYNC) {
			struct iovec io = { .iov_base = rec, .iov_len = sizeof(rec) };

			w = pwritev2(fd, &io, 1, off, RWF_DSYNC);
		} else {
			w = pwrite(fd, rec, sizeof(rec), off);
			if (w == (ssize_t)sizeof(rec) && way != DISK_O_DSYNC && fdatasync(fd) != 0)
				w = -1;
		}
		if (w != (ssize_t)sizeof(rec))
			goto fail;
		lat[i] = bench_now_ns() - t0;
	}
	qsort(lat, (size_t)n, sizeof(*lat), bench_cmp_i64);
	*p50 = percentile_us(lat, (size_t)n, 0.50);
	*p99 = percentile_us(lat, (size_t)n, 0.99);
	goto done;
fail:
	fprintf(stderr, "ledger_bench: --disk %s: %s\n", names[way], strerror(errno));
	rc = -1;
done:
	if (fd >= 0)
		close(fd);
	unlink(path);
	free(zero);
	free(lat);
	return rc;
}

static int disk(int n)
{
	static const char *const labels[] = { "append + fdatasync", "zero-filled + fdatasync",
		                              "zero-filled, O_DSYNC", "zero-filled, RWF_DSYNC" };
	char dir[64];
	double p50, p99;
	int way, round;

	if (test_tmpdir(dir, sizeof(dir)) != 0)
		return 1;
	printf("%-26s %7s %7s\n", "256-byte record, durable", "p50us", "p99us");
	for (round = 0; round < 2; round++) /* twice, interleaved: the disk's noise shows */
		for (way = DISK_APPEND; way <= DISK_RWF_DSYNC; way++) {
			if (disk_way(dir, (enum disk_way)way, n, &p50, &p99) != 0) {
				test_rm_tree(dir);
				return 1;
			}
			printf("%-26s %7.1f %7.1f\n", labels[way], p50, p99);
		}
	test_rm_tree(dir);
	return 0;
}

/* "1,2,4": daemon worker counts, each 1 to 64. 0 or -1. */
static int parse_workers(const char *s, unsigned *v, unsigned *n)
{
	char *end;

	*n = 0;
	do {
		unsigned long w = strtoul(s, &end, 10);

		if (end == s || w < 1 || w > 64 || *n == MAX_WORKER_COUNTS)
			return -1;
		v[(*n)++] = (unsigned)w;
		s = end + 1;
	} while (*end == ',');
	return *end == '\0' ? 0 : -1;
}

static void usage(FILE *out)
{
	fprintf(out, "usage: ledger_bench [--clients N] [--seconds S] [--mode strict|async|both] "
	             "[--workers LIST] [--quiet]\n"
	             "       ledger_bench --disk N\n"
	             "Measures check+report pairs against a fresh daemon per configuration,\n"
	             "with 1 and N (default 8) clients, for S seconds (default 3) each, and\n"
	             "for each daemon --workers count of LIST (comma-separated, default 1).\n");
}

int main(int argc, char **argv)
{
	static const char *const modes[] = { "strict", "async" };
	struct row rows[2 * 2 * MAX_WORKER_COUNTS];
	int clients = 8, quiet = 0, n_rows = 0, i, m, k, counts[2], disk_n = 0;
	unsigned workers[MAX_WORKER_COUNTS] = { 1 }, n_workers = 1, wi;
	double seconds = 3;
	const char *only = "both";
	char model[256];

	signal(SIGPIPE, SIG_IGN);
	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--clients") == 0 && i + 1 < argc)
			clients = atoi(argv[++i]);
		else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
			seconds = strtod(argv[++i], NULL);
		else if (strcmp(argv[i], "--mode") == 0 && i + 1 < argc)
			only = argv[++i];
		else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc) {
			if (parse_workers(argv[++i], workers, &n_workers) != 0) {
				usage(stderr);
				return 2;
			}
		}
		else if (strcmp(argv[i], "--quiet") == 0)
			quiet = 1;
		else if (strcmp(argv[i], "--disk") == 0 && i + 1 < argc)
			disk_n = atoi(argv[++i]);
		else
			return bench_other_arg(argv[i], usage);
	}
	if (clients < 1 || clients > MAX_CLIENTS || !(seconds > 0) || seconds > 3600) {
		usage(stderr);
		return 2;
	}
	if (disk_n > 0)
		return disk(disk_n);
	counts[0] = 1;
	counts[1] = clients;
	for (m = 0; m < 2; m++) {
		if (strcmp(only, "both") != 0 && strcmp(only, modes[m]) != 0)
			continue;
		for (k = 0; k < (clients == 1 ? 1 : 2); k++) {
			for (wi = 0; wi < n_workers; wi++) {
				if (run_one(modes[m], workers[wi], counts[k], seconds, &rows[n_rows]))
					return 1;
				n_rows++;
			}
		}
	}
	if (n_rows == 0) {
		usage(stderr);
		return 2;
	}
	if (quiet)
		return 0;
	printf("%-7s %7s %7s %9s %7s %7s %8s %14s %12s\n", "mode", "workers", "clients", "ops/s",
	       "p50us", "p99us", "p999us", "records/fsync", "report_p50us");
	for (i = 0; i < n_rows; i++)
		printf("%-7s %7u %7d %9.0f %7.1f %7.1f %8.1f %14.1f %12.1f\n", rows[i].mode,
		       rows[i].workers, rows[i].clients, rows[i].ops, rows[i].p50, rows[i].p99,
		       rows[i].p999, rows[i].per_sync, rows[i].rep_p50);
	printf("ops/s: check+report pairs per second (checks gated per second); p50us..p999us: "
	       "a check's round trip\n");
	bench_print_command("ledger_bench", argc, argv, test_daemon_bin());
	bench_cpu_model(model, sizeof(model));
	printf("machine: %ld CPUs online, %s\n", sysconf(_SC_NPROCESSORS_ONLN), model);
	return 0;
}
