/*
 * gate_bench.c: sidecard against what users would build instead, side by
 * side in one run, printed as one table with a ratio column.
 *
 * Systems (gate_bench.h): sidecard (sys_sidecard.c: a fresh daemon per
 * durability mode and benchmark mode, set up through libsidecard with
 * --agents agents of --rules rules each); Redis with a Lua budget script
 * (peer_redis.c), without persistence as the peer of async and with
 * appendfsync always as the peer of strict; and the floor (peer_floor.c), a
 * bare Unix-socket echo of a check's request and answer sizes.
 *
 * Modes (the `modes` table below): check (one check per round trip, the
 * hold left open), check+report (pairs), pipelined (one connection,
 * sc_check_batch of BENCH_PIPE_BATCH checks with a window in flight),
 * mix (the check clients plus one admin client topping up wallets and
 * updating rules; the admin's rate is its own row) and peek (wallet reads:
 * sidecard's through the read-only mapping of its state, timed in batches
 * of BENCH_PEEK_BATCH; Redis's one HMGET per round trip). Each mode runs with
 * every count of --clients (pipelined with its one connection), and each
 * sidecard row has its peer rows right before it: the floor once per mode
 * and client count, Redis once per durability.
 *
 * Measurement: client threads, each with its own connection and one
 * request outstanding, run operations on agents drawn at random; after
 * --warmup they record each operation's round trip (clock_gettime
 * CLOCK_MONOTONIC) into a per-thread histogram for --seconds. Over that
 * interval the main thread reads the server's CPU time (utime + stime of
 * /proc/PID/stat), its resident memory at the end (VmRSS), and for sidecard
 * the ledger's records per fdatasync (ledger_records_synced / ledger_syncs
 * from stats). An operation that fails, or a check that is not allowed,
 * fails the run (exit 1): the figures would be lies.
 *
 * Sweeps (--sweep) print one small table each: clients (1 to 16, with the
 * peers), agents (1k to 1M; check throughput as the agent table grows),
 * rules (1 to 32 per agent) and size (check metadata of 0, 128 and 512
 * bytes, with the floor resized to match).
 *
 * Threads: the main thread starts and stops servers and reads counters;
 * client threads only run operations and fill their own histograms, which
 * the main thread merges after joining them.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"
#include "gate_bench.h"
#include "sidecard.h"

#define MAX_CLIENTS 64
#define MAX_ROWS 256
#define MAX_ITEMS 128

struct mode {
	const char *name;
	enum op_kind op;
	int one_connection; /* the clients count does not apply: one connection */
	int admin;          /* plus one admin client, reported in its own row */
	int floor;          /* the floor has this operation */
	uint64_t hold_rate; /* a bound on checks per second that leave a hold open */
};

/*
 * The benchmark modes. peek reads random agents' wallets: sidecard's
 * clients through one shared read-only mapping of the state (sc_peek_wallet,
 * no round trip, so no floor row), Redis's with an HMGET of the agent's hash
 * over the socket; hold_rate 0, since a read leaves nothing open.
 */
static const struct mode modes[] = {
	{ "check", OP_CHECK, 0, 0, 1, 400000 },
	{ "check+report", OP_PAIR, 0, 0, 1, 0 },
	{ "pipelined", OP_PIPELINED, 1, 0, 1, 3000000 },
	{ "mix", OP_CHECK, 0, 1, 0, 400000 },
	{ "peek", OP_PEEK, 0, 0, 0, 0 },
};
#define N_MODES (sizeof(modes) / sizeof(modes[0]))

static const char *const durabilities[] = { "async", "strict" };

static struct {
	double seconds, warmup;
	int clients[16];
	size_t n_clients;
	struct setup setup;
	int modes[N_MODES];  /* selected */
	int durable[2];      /* async, strict selected */
	const char *sweep;
	int quick;
	const char *redis_why; /* non-NULL: Redis rows are skipped, this is why */
} opt;

/* ----- one measured run ----- */

struct worker {
	pthread_t thread;
	struct sys *sys;
	enum op_kind op;
	uint64_t rng;
	uint64_t ops;
	struct hist *h;
	int failed;
	char err[256];
};

static struct {
	pthread_barrier_t go;
	int measuring, stop;
} run;

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	void *conn = NULL;
	int64_t t0, t1;
	long n;
	int measured;

	if (w->sys->connect(w->sys, &conn, w->err, sizeof(w->err)) != 0)
		w->failed = 1;
	pthread_barrier_wait(&run.go);
	while (!w->failed && !__atomic_load_n(&run.stop, __ATOMIC_ACQUIRE)) {
		measured = __atomic_load_n(&run.measuring, __ATOMIC_ACQUIRE);
		t0 = bench_now_ns();
		n = w->sys->op(conn, w->op, &w->rng, w->err, sizeof(w->err));
		t1 = bench_now_ns();
		if (n < 0) {
			w->failed = 1;
			break;
		}
		if (measured && __atomic_load_n(&run.measuring, __ATOMIC_ACQUIRE)) {
			/* a peek batch is recorded as its mean read: one read is below the clock's resolution */
			hist_add(w->h, w->op == OP_PEEK && n > 0 ? (t1 - t0) / n : t1 - t0);
			__atomic_add_fetch(&w->ops, (uint64_t)n, __ATOMIC_RELAXED);
		}
	}
	if (conn != NULL)
		w->sys->disconnect(conn);
	return NULL;
}

struct row {
	const struct mode *mode;
	const char *system, *durability;
	int pass; /* index into durabilities; the floor's is -1 */
	int clients;
	int admin; /* the admin client of a mix */
	char label[24]; /* the sweep's value, "" in the main table */
	double ops, p50, p99, p999;
	double per_sync; /* < 0: not a ledger */
	double cpu, rss;
	char vs[96];
};

static struct row rows[MAX_ROWS];
static size_t n_rows;

/* 1 once every kind of client (checks, and the admin of a mix) completed a measured operation. */
static int any_ops(struct worker *w, int n)
{
	int i, checks = 0, admins = 0, admin_threads = 0;

	for (i = 0; i < n; i++) {
		uint64_t ops = __atomic_load_n(&w[i].ops, __ATOMIC_RELAXED);

		if (w[i].failed)
			return 1;
		if (w[i].op == OP_ADMIN) {
			admin_threads = 1;
			admins |= ops > 0;
		} else {
			checks |= ops > 0;
		}
	}
	return checks && (admins || !admin_threads);
}

/* Fills a row from merged histograms and counts. */
static void fill_row(struct row *r, const struct hist *h, uint64_t ops, double secs)
{
	r->ops = (double)ops / secs;
	r->p50 = hist_quantile_us(h, 0.50);
	r->p99 = hist_quantile_us(h, 0.99);
	r->p999 = hist_quantile_us(h, 0.999);
}

/*
 * Runs mode m on s with n check clients (plus the admin of a mix) and adds
 * its row (two for a mix). 0 or -1 with the reason on stderr.
 */
static int run_one(struct sys *s, const struct mode *m, int n, int pass, const char *label)
{
	int n_threads = (m->one_connection ? 1 : n) + (m->admin ? 1 : 0), i, failed = 0;
	struct worker *w = calloc((size_t)n_threads, sizeof(*w));
	struct hist *checks = calloc(1, sizeof(*checks)), *admin = calloc(1, sizeof(*admin));
	struct proc_sample p0 = { 0, 0 }, p1 = { 0, 0 };
	int64_t recs0 = 0, syncs0 = 0, recs1 = 0, syncs1 = 0, t0, t1;
	uint64_t ops = 0, admin_ops = 0;
	double secs;
	struct row *r;

	if (w == NULL || checks == NULL || admin == NULL || n_rows + 2 > MAX_ROWS) {
		fprintf(stderr, "gate_bench: out of memory or too many rows\n");
		free(w);
		free(checks);
		free(admin);
		return -1;
	}
	__atomic_store_n(&run.stop, 0, __ATOMIC_RELEASE);
	__atomic_store_n(&run.measuring, 0, __ATOMIC_RELEASE);
	pthread_barrier_init(&run.go, NULL, (unsigned)n_threads + 1);
	for (i = 0; i < n_threads; i++) {
		w[i].sys = s;
		w[i].op = m->admin && i == n_threads - 1 ? OP_ADMIN : m->op;
		w[i].rng = 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1) + (uint64_t)n_rows;
		w[i].h = calloc(1, sizeof(struct hist));
		if (w[i].h == NULL) {
			fprintf(stderr, "gate_bench: out of memory\n");
			exit(1);
		}
		pthread_create(&w[i].thread, NULL, worker_main, &w[i]);
	}
	pthread_barrier_wait(&run.go);
	test_sleep_ms((long)(opt.warmup * 1000));
	if (s->ledger != NULL && s->ledger(s, &recs0, &syncs0) != 0)
		failed = 1;
	proc_sample(s->pid, &p0);
	t0 = bench_now_ns();
	__atomic_store_n(&run.measuring, 1, __ATOMIC_RELEASE);
	test_sleep_ms((long)(opt.seconds * 1000));
	/*
	 * A short interval (the smoke's) may end before a slow operation (a
	 * strict report behind a busy disk) does: measure until one has.
	 */
	while (bench_now_ns() - t0 < INT64_C(30000000000) && !any_ops(w, n_threads))
		test_sleep_ms(5);
	__atomic_store_n(&run.measuring, 0, __ATOMIC_RELEASE);
	t1 = bench_now_ns();
	proc_sample(s->pid, &p1);
	if (s->ledger != NULL && s->ledger(s, &recs1, &syncs1) != 0)
		failed = 1;
	__atomic_store_n(&run.stop, 1, __ATOMIC_RELEASE);
	for (i = 0; i < n_threads; i++) {
		pthread_join(w[i].thread, NULL);
		if (w[i].failed) {
			fprintf(stderr, "gate_bench: %s %s %s, %d clients: %s\n", s->name, s->durability,
			        m->name, n, w[i].err);
			failed = 1;
		}
		if (w[i].op == OP_ADMIN) {
			hist_merge(admin, w[i].h);
			admin_ops += w[i].ops;
		} else {
			hist_merge(checks, w[i].h);
			ops += w[i].ops;
		}
		free(w[i].h);
	}
	pthread_barrier_destroy(&run.go);
	free(w);
	if (!failed && ops == 0) {
		fprintf(stderr, "gate_bench: %s %s: no operation completed in the interval\n", s->name,
		        m->name);
		failed = 1;
	}
	secs = (double)(t1 - t0) / 1e9;
	for (i = 0; !failed && i < (m->admin ? 2 : 1); i++) {
		r = &rows[n_rows++];
		memset(r, 0, sizeof(*r));
		r->mode = m;
		r->system = s->name;
		r->durability = s->durability;
		r->pass = strcmp(s->name, "floor") == 0 ? -1 : pass;
		r->clients = i ? 1 : m->one_connection ? 1 : n;
		r->admin = i;
		snprintf(r->label, sizeof(r->label), "%s", label);
		fill_row(r, i ? admin : checks, i ? admin_ops : ops, secs);
		r->per_sync = syncs1 > syncs0 ? (double)(recs1 - recs0) / (double)(syncs1 - syncs0) : -1;
		r->cpu = 100.0 * (p1.cpu_s - p0.cpu_s) / secs;
		r->rss = p1.rss_mib;
	}
	free(checks);
	free(admin);
	return failed ? -1 : 0;
}

/* ----- plans: what runs, on which servers ----- */

struct item {
	const struct mode *mode;
	int clients;
	int pass;
	struct setup setup;
	char label[24];
	int peers; /* run the floor and Redis beside it */
};

static struct item items[MAX_ITEMS];
static size_t n_items;

static void add_item(const struct mode *m, int clients, int pass, const struct setup *st,
                     const char *label, int peers)
{
	if (n_items == MAX_ITEMS)
		return;
	items[n_items++] = (struct item){ .mode = m, .clients = clients, .pass = pass,
		                          .setup = *st, .peers = peers };
	snprintf(items[n_items - 1].label, sizeof(items[0].label), "%s", label);
}

static int same_server(const struct item *a, const struct item *b)
{
	return a->mode == b->mode && a->pass == b->pass && a->setup.agents == b->setup.agents &&
	       a->setup.rules == b->setup.rules && a->setup.meta_bytes == b->setup.meta_bytes;
}

/* The holds a daemon serving items[i] and the same-server items after it may need. */
static uint64_t holds_for(size_t i)
{
	uint64_t holds = 65536, per_run;
	size_t k;

	for (k = i; k < n_items && same_server(&items[k], &items[i]); k++) {
		per_run = (uint64_t)((opt.warmup + opt.seconds + 0.5) * (double)items[k].mode->hold_rate);
		holds += per_run;
	}
	return holds > (UINT64_C(1) << 28) ? UINT64_C(1) << 28 : holds;
}

static int have_floor_row(const struct item *it)
{
	size_t i;

	for (i = 0; i < n_rows; i++)
		if (rows[i].pass == -1 && rows[i].mode == it->mode && rows[i].clients == it->clients &&
		    strcmp(rows[i].label, it->label) == 0)
			return 1;
	return 0;
}

/* Runs every item; the servers are restarted whenever the item needs another. */
static int run_plan(void)
{
	struct sys sc = { 0 }, rd = { 0 }, fl = { 0 };
	size_t i, fl_meta = SIZE_MAX, req, resp;
	int rc = 0, sc_up = 0, rd_up = 0, fl_up = 0, clients;
	char err[512];

	for (i = 0; i < n_items && rc == 0; i++) {
		const struct item *it = &items[i];
		int fresh = i == 0 || !same_server(it, &items[i - 1]);

		clients = it->mode->one_connection ? 1 : it->clients;
		if (it->peers && it->mode->floor && !have_floor_row(it)) {
			if (fl_up && fl_meta != it->setup.meta_bytes) {
				fl.stop(&fl);
				fl_up = 0;
			}
			if (!fl_up) {
				floor_message_sizes(it->setup.meta_bytes, &req, &resp);
				if (floor_start(&fl, req, resp, err, sizeof(err)) != 0) {
					fprintf(stderr, "gate_bench: floor: %s\n", err);
					rc = -1;
					break;
				}
				fl_up = 1;
				fl_meta = it->setup.meta_bytes;
			}
			if ((rc = run_one(&fl, it->mode, clients, -1, it->label)) != 0)
				break;
		}
		if (fresh && rd_up) {
			rd_up = 0;
			if (rd.stop(&rd) != 0)
				rc = -1;
		}
		if (it->peers && opt.redis_why == NULL && rc == 0) {
			if (!rd_up) {
				if (redis_start(&rd, it->pass == 1, &it->setup, err, sizeof(err)) != 0) {
					fprintf(stderr, "gate_bench: redis: %s\n", err);
					rc = -1;
					break;
				}
				rd_up = 1;
			}
			if ((rc = run_one(&rd, it->mode, clients, it->pass, it->label)) != 0)
				break;
		}
		if (fresh && sc_up) {
			sc_up = 0;
			if (sc.stop(&sc) != 0)
				rc = -1;
		}
		if (rc != 0)
			break;
		if (!sc_up) {
			if (sidecard_start(&sc, durabilities[it->pass], &it->setup, holds_for(i), err,
			                   sizeof(err)) != 0) {
				fprintf(stderr, "gate_bench: sidecard: %s\n", err);
				rc = -1;
				break;
			}
			sc_up = 1;
		}
		rc = run_one(&sc, it->mode, clients, it->pass, it->label);
	}
	if (sc_up && sc.stop(&sc) != 0)
		rc = -1;
	if (rd_up && rd.stop(&rd) != 0)
		rc = -1;
	if (fl_up && fl.stop(&fl) != 0)
		rc = -1;
	return rc;
}

/* ----- the table ----- */

static const struct row *find(const struct row *r, const char *system, int pass)
{
	size_t i;

	for (i = 0; i < n_rows; i++)
		if (strcmp(rows[i].system, system) == 0 && rows[i].pass == pass &&
		    rows[i].mode == r->mode && rows[i].clients == r->clients &&
		    rows[i].admin == r->admin && strcmp(rows[i].label, r->label) == 0)
			return &rows[i];
	return NULL;
}

/*
 * The vs column of sidecard rows: ops/s over Redis's in the same durability
 * (or over the floor's where Redis did not run), and for one client the
 * p50 and p99 over the floor's. With no peer at all (agents and rules
 * sweeps), ops/s over the table's first row of the same durability.
 */
static void fill_vs(void)
{
	const struct row *rd, *fl, *first;
	size_t i, k, at;
	struct row *r;

	for (i = 0; i < n_rows; i++) {
		r = &rows[i];
		if (strcmp(r->system, "sidecard") != 0)
			continue;
		rd = find(r, "redis", r->pass);
		fl = r->admin ? NULL : find(r, "floor", -1);
		at = 0;
		if (rd != NULL && rd->ops > 0)
			at += (size_t)snprintf(r->vs + at, sizeof(r->vs) - at, "%.2fx redis",
			                       r->ops / rd->ops);
		else if (fl != NULL && fl->ops > 0)
			at += (size_t)snprintf(r->vs + at, sizeof(r->vs) - at, "%.2fx floor ops",
			                       r->ops / fl->ops);
		if (fl != NULL && r->clients == 1 && fl->p50 > 0 && fl->p99 > 0)
			at += (size_t)snprintf(r->vs + at, sizeof(r->vs) - at,
			                       "%sp50 %.2fx p99 %.2fx floor", at ? "; " : "",
			                       r->p50 / fl->p50, r->p99 / fl->p99);
		if (at > 0)
			continue;
		for (k = 0, first = NULL; k < n_rows && first == NULL; k++)
			if (strcmp(rows[k].system, "sidecard") == 0 && rows[k].pass == r->pass &&
			    rows[k].admin == r->admin)
				first = &rows[k];
		if (first != NULL && first->ops > 0)
			snprintf(r->vs, sizeof(r->vs), "%.2fx %s", r->ops / first->ops, first->label);
	}
}

/* Digits after the point of a latency in microseconds: a peek's is tens of nanoseconds. */
static int decimals(double us)
{
	return us < 1 ? 3 : 1;
}

static void print_table(const char *label_name)
{
	char sync[16];
	size_t i;

	fill_vs();
	if (label_name != NULL)
		printf("%-8s ", label_name);
	printf("%-13s %-10s %-8s %7s %9s %8s %8s %8s %8s %5s %7s  %s\n", "mode", "durability",
	       "system", "clients", "ops/s", "p50us", "p99us", "p999us", "rec/sync", "cpu%",
	       "rssMiB", "vs");
	for (i = 0; i < n_rows; i++) {
		const struct row *r = &rows[i];
		char mode[24];

		snprintf(mode, sizeof(mode), "%s%s", r->mode->name, r->admin ? ":admin" : "");
		if (r->per_sync >= 0)
			snprintf(sync, sizeof(sync), "%.1f", r->per_sync);
		else
			snprintf(sync, sizeof(sync), "-");
		if (label_name != NULL)
			printf("%-8s ", r->label);
		printf("%-13s %-10s %-8s %7d %9.0f %8.*f %8.*f %8.*f %8s %5.0f %7.1f  %s\n", mode,
		       r->durability, r->system, r->clients, r->ops, decimals(r->p50), r->p50,
		       decimals(r->p99), r->p99, decimals(r->p999), r->p999, sync, r->cpu, r->rss,
		       r->vs[0] ? r->vs : "-");
	}
}

static void print_notes(int argc, char **argv)
{
	char model[256];

	printf("ops/s: checks per second (check+report: pairs; mix:admin: admin changes; peek: "
	       "wallet reads); p50us..p999us: one operation's round trip\n"
	       "(a pipelined operation is a batch of %d checks); rec/sync: ledger records per "
	       "fdatasync\n(-: none in the interval); cpu%%, rssMiB: the server process\n"
	       "(sidecard's RSS is mostly its state segment, which it maps whole: its size follows "
	       "the capacities, and --holds grows with --seconds)\n"
	       "peek: sidecard reads through one read-only mapping shared by its clients "
	       "(sc_peek_wallet), no round trip and no server CPU;\none read is below the clock's "
	       "resolution, so batches of %d reads are timed and the percentiles are of a batch's "
	       "mean read;\nredis reads with one HMGET per round trip (the hash's balance, held "
	       "and limits; the day's spend, another key, left out)\n",
	       BENCH_PIPE_BATCH, BENCH_PEEK_BATCH);
	if (opt.redis_why != NULL)
		printf("redis rows skipped: %s\n", opt.redis_why);
	bench_print_command("gate_bench", argc, argv, test_daemon_bin());
	bench_cpu_model(model, sizeof(model));
	printf("machine: %ld CPUs online, %s; %zu agents, %zu rules each unless swept, "
	       "%g s per row after %g s warm-up\n",
	       sysconf(_SC_NPROCESSORS_ONLN), model, opt.setup.agents, opt.setup.rules, opt.seconds,
	       opt.warmup);
}

/* ----- plans of the main table and the sweeps ----- */

static int max_clients(void)
{
	int m = 1;
	size_t i;

	for (i = 0; i < opt.n_clients; i++)
		if (opt.clients[i] > m)
			m = opt.clients[i];
	return m;
}

static void plan_main(void)
{
	size_t m, k;
	int pass;

	for (pass = 0; pass < 2; pass++) {
		if (!opt.durable[pass])
			continue;
		for (m = 0; m < N_MODES; m++) {
			if (!opt.modes[m])
				continue;
			for (k = 0; k < (modes[m].one_connection ? 1 : opt.n_clients); k++)
				add_item(&modes[m], opt.clients[k], pass, &opt.setup, "", 1);
		}
	}
}

static int plan_sweep(const char *what, const char **label_name)
{
	static const int clients[] = { 1, 2, 4, 8, 16 };
	static const size_t agents[] = { 1000, 10000, 100000, 1000000 };
	static const size_t rules[] = { 1, 4, 16, 32 };
	static const size_t sizes[] = { 0, 128, 512 };
	struct setup st = opt.setup;
	char label[24];
	size_t i;
	int pass;

	for (pass = 0; pass < 2; pass++) {
		if (!opt.durable[pass])
			continue;
		if (strcmp(what, "clients") == 0) {
			*label_name = NULL;
			for (i = 0; i < sizeof(clients) / sizeof(clients[0]); i++)
				add_item(&modes[0], clients[i], pass, &st, "", 1);
		} else if (strcmp(what, "agents") == 0) {
			*label_name = "agents";
			for (i = 0; i < sizeof(agents) / sizeof(agents[0]); i++) {
				st.agents = agents[i];
				snprintf(label, sizeof(label), "%zuk", agents[i] / 1000);
				add_item(&modes[0], max_clients(), pass, &st, label, 0);
			}
		} else if (strcmp(what, "rules") == 0) {
			*label_name = "rules";
			for (i = 0; i < sizeof(rules) / sizeof(rules[0]); i++) {
				st.rules = rules[i];
				snprintf(label, sizeof(label), "%zu", rules[i]);
				add_item(&modes[0], max_clients(), pass, &st, label, 0);
			}
		} else if (strcmp(what, "size") == 0) {
			*label_name = "metadata";
			for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
				st.meta_bytes = sizes[i];
				snprintf(label, sizeof(label), "%zuB", sizes[i]);
				add_item(&modes[0], 1, pass, &st, label, 0);
				add_item(&modes[0], max_clients(), pass, &st, label, 0);
			}
		} else {
			return -1;
		}
	}
	return 0;
}

/* ----- options ----- */

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: gate_bench [options]\n"
	        "Gates checks through sidecard and, in the same run, through its peers: a bare\n"
	        "Unix-socket ping-pong (the floor) and Redis with a Lua budget script; prints one\n"
	        "table with the ratio of each sidecard row to its peer.\n"
	        "  --seconds S         measured time per row (3)\n"
	        "  --warmup S          time before measuring (0.5)\n"
	        "  --clients LIST      client counts, e.g. 1,8 (1,8)\n"
	        "  --agents N          agents set up (1000)\n"
	        "  --rules K           rules per agent, 1 to %d (1)\n"
	        "  --modes LIST        check,check+report,pipelined,mix,peek (all)\n"
	        "  --durability D      async, strict or both (both)\n"
	        "  --quick             a smoke: tiny durations and setup, every mode and peer once\n"
	        "  --sweep WHAT        clients (1..16), agents (1k..1M), rules (1..32) or size\n"
	        "                      (check metadata of 0, 128, 512 bytes): one table each\n"
	        "  --help\n"
	        "The daemon is $SIDECARD_BIN (else the build tree's); redis-server is found on PATH.\n"
	        "The daemon's state segment goes in a directory made in $SIDECARD_BENCH_SEGMENT_DIR,\n"
	        "else $XDG_RUNTIME_DIR, else /dev/shm: a memory file system, where the default puts it.\n",
	        SC_RULES_MAX);
}

static int parse_clients(const char *s)
{
	char *end;
	long v;

	opt.n_clients = 0;
	while (*s != '\0') {
		errno = 0;
		v = strtol(s, &end, 10);
		if (end == s || errno || v < 1 || v > MAX_CLIENTS ||
		    opt.n_clients == sizeof(opt.clients) / sizeof(opt.clients[0]))
			return -1;
		opt.clients[opt.n_clients++] = (int)v;
		s = *end == ',' ? end + 1 : end;
		if (*end != ',' && *end != '\0')
			return -1;
	}
	return opt.n_clients > 0 ? 0 : -1;
}

static int parse_modes(const char *s)
{
	char word[32];
	size_t n, m;
	int found;

	memset(opt.modes, 0, sizeof(opt.modes));
	while (*s != '\0') {
		n = strcspn(s, ",");
		if (n == 0 || n >= sizeof(word))
			return -1;
		memcpy(word, s, n);
		word[n] = '\0';
		for (m = 0, found = 0; m < N_MODES; m++)
			if (strcmp(word, modes[m].name) == 0)
				opt.modes[m] = found = 1;
		if (!found)
			return -1;
		s += n + (s[n] == ',');
	}
	return 0;
}

static int parse_size(const char *s, double lo, double hi, double *out)
{
	char *end;
	double v = strtod(s, &end);

	if (end == s || *end != '\0' || !(v >= lo) || !(v <= hi))
		return -1;
	*out = v;
	return 0;
}

static int parse_options(int argc, char **argv)
{
	double v;
	int i;

	opt.seconds = 3;
	opt.warmup = 0.5;
	parse_clients("1,8");
	opt.setup = (struct setup){ .agents = 1000, .rules = 1 };
	parse_modes("check,check+report,pipelined,mix,peek");
	opt.durable[0] = opt.durable[1] = 1;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--help") == 0) {
			usage(stdout);
			exit(0);
		} else if (strcmp(a, "--quick") == 0) {
			opt.quick = 1;
			continue;
		}
		if (val == NULL)
			return -1;
		i++;
		if (strcmp(a, "--seconds") == 0) {
			if (parse_size(val, 0.01, 3600, &opt.seconds))
				return -1;
		} else if (strcmp(a, "--warmup") == 0) {
			if (parse_size(val, 0, 600, &opt.warmup))
				return -1;
		} else if (strcmp(a, "--clients") == 0) {
			if (parse_clients(val))
				return -1;
		} else if (strcmp(a, "--agents") == 0) {
			if (parse_size(val, 1, 1 << 24, &v))
				return -1;
			opt.setup.agents = (size_t)v;
		} else if (strcmp(a, "--rules") == 0) {
			if (parse_size(val, 1, SC_RULES_MAX, &v))
				return -1;
			opt.setup.rules = (size_t)v;
		} else if (strcmp(a, "--modes") == 0) {
			if (parse_modes(val))
				return -1;
		} else if (strcmp(a, "--durability") == 0) {
			opt.durable[0] = strcmp(val, "async") == 0 || strcmp(val, "both") == 0;
			opt.durable[1] = strcmp(val, "strict") == 0 || strcmp(val, "both") == 0;
			if (!opt.durable[0] && !opt.durable[1])
				return -1;
		} else if (strcmp(a, "--sweep") == 0) {
			opt.sweep = val;
		} else {
			return -1;
		}
	}
	if (opt.quick) {
		/* every mode and peer once, for as little time as still measures something */
		opt.seconds = 0.15;
		opt.warmup = 0.05;
		parse_clients("1,2");
		opt.setup.agents = 64;
		parse_modes("check,check+report,pipelined,mix,peek");
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *label_name = NULL;

	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (parse_options(argc, argv) != 0) {
		usage(stderr);
		return 2;
	}
	opt.redis_why = redis_missing();
	if (opt.redis_why != NULL)
		fprintf(stderr, "gate_bench: redis rows skipped: %s\n", opt.redis_why);
	if (opt.sweep != NULL) {
		if (plan_sweep(opt.sweep, &label_name) != 0) {
			usage(stderr);
			return 2;
		}
		printf("sweep %s\n", opt.sweep);
	} else {
		plan_main();
	}
	if (run_plan() != 0) {
		fprintf(stderr, "gate_bench: failed; the rows measured so far:\n");
		print_table(label_name);
		return 1;
	}
	print_table(label_name);
	print_notes(argc, argv);
	return 0;
}
