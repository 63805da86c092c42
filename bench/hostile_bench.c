/*
 * hostile_bench.c: what clients that never read their replies cost everyone
 * else. A probe client's check round trip is measured twice in one run, on
 * one daemon: quiet, and while --attackers connections (3) each pipeline
 * --lists transactions.list requests of 1,000 rows (300) in one write and
 * never read, over and over (connect, write, wait --hold-ms, close). It
 * prints p50, p99 and p99.9 of the probe in each phase, the attack's p99 as
 * a multiple of the quiet one (the target is at most 2x), the attackers'
 * bursts, and the daemon's peak resident memory in each phase.
 *
 * Without a bound on the bytes of unread replies each burst made the daemon
 * pack up to 1,024 replies of about 300 KB (hundreds of MB per connection)
 * while the probe waited; with it, a connection stops being handled after
 * max_outstanding_bytes and costs nothing more until it reads.
 *
 * The daemon (tests/daemon.c: $SIDECARD_BIN, else sidecard/sidecard) runs
 * in --durability (strict) on a new directory, its state segment on a
 * memory file system (bench_util.h); the victim agent gets 1,000
 * transactions first, so every list is full. --quick runs short phases for
 * make check's smoke. A failed request fails the run (exit 1).
 *
 * Threads: the main thread sets up, probes and reads /proc; each attacker
 * thread owns its raw socket and stops when the main thread sets `stop`.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <msgpack.h>

#include "bench_util.h"
#include "sidecard.h"

#define MAX_ATTACKERS 64
#define LIST_ROWS 1000

struct attacker {
	pthread_t thread;
	int index;
	const char *burst; /* the packed requests, shared */
	size_t burst_len;
	long hold_ms;
	uint64_t bursts;
	struct bench_fail fail;
};

static struct bench_daemon bd;
static int stop; /* atomic: the attackers end their loop */

static void usage(FILE *out)
{
	fprintf(out, "usage: hostile_bench [--seconds S] [--attackers N] [--lists N] "
	             "[--hold-ms MS] [--durability strict|async] [--quick]\n");
}

/* [0, i, "transactions.list", [{agent_id, limit: 1000}]] for i < n, into sb. */
static void pack_lists(msgpack_sbuffer *sb, uint64_t agent, unsigned n)
{
	msgpack_packer pk;

	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	for (uint32_t i = 0; i < n; i++) {
		msgpack_pack_array(&pk, 4);
		msgpack_pack_int(&pk, 0);
		msgpack_pack_uint32(&pk, i);
		msgpack_pack_str_with_body(&pk, "transactions.list", 17);
		msgpack_pack_array(&pk, 1);
		msgpack_pack_map(&pk, 2);
		msgpack_pack_str_with_body(&pk, "agent_id", 8);
		msgpack_pack_uint64(&pk, agent);
		msgpack_pack_str_with_body(&pk, "limit", 5);
		msgpack_pack_uint32(&pk, LIST_ROWS);
	}
}

/* Writes all of buf, or fails: 0 or -errno. */
static int write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EPIPE;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

static void *attacker_main(void *arg)
{
	struct attacker *a = arg;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", bd.d.socket);
	while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int rc;

		if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
			bench_fail(&a->fail, a->index, NULL, -errno, "connect");
			if (fd >= 0)
				close(fd);
			return NULL;
		}
		rc = write_all(fd, a->burst, a->burst_len);
		if (rc != 0) {
			bench_fail(&a->fail, a->index, NULL, rc, "write");
			close(fd);
			return NULL;
		}
		a->bursts++;
		test_sleep_ms(a->hold_ms);
		close(fd);
	}
	return NULL;
}

struct phase {
	struct hist h;
	uint64_t checks;
	double peak_rss_mib;
};

/* Check + report pairs of the probe agent for `seconds`; only the check is timed. */
static int probe(sc_client *c, uint64_t agent, double seconds, struct phase *ph)
{
	sc_check_req req = { .agent_id = agent, .action = "llm.chat", .estimated_cost = 1000 };
	int64_t end = bench_now_ns() + (int64_t)(seconds * 1e9), next_sample = 0;
	struct proc_sample ps;
	int rc;

	while (bench_now_ns() < end) {
		sc_decision d;
		sc_settlement s;
		int64_t t0 = bench_now_ns();

		if ((rc = sc_check(c, &req, &d)) != 0 || !d.allowed) {
			fprintf(stderr, "hostile_bench: probe check: %s: %s\n", sc_err_name(rc),
			        rc ? sc_last_error(c) : d.block_reason);
			return -1;
		}
		hist_add(&ph->h, bench_now_ns() - t0);
		ph->checks++;
		if ((rc = sc_report(c, d.transaction_id, SC_OUTCOME_SUCCESS, 1, 0, &s)) != 0) {
			fprintf(stderr, "hostile_bench: probe report: %s: %s\n", sc_err_name(rc),
			        sc_last_error(c));
			return -1;
		}
		if (t0 >= next_sample && proc_sample(bd.d.pid, &ps) == 0) {
			if (ps.rss_mib > ph->peak_rss_mib)
				ph->peak_rss_mib = ps.rss_mib;
			next_sample = t0 + 50000000;
		}
	}
	return 0;
}

/* The victim with LIST_ROWS transactions and the probe agent. 0 or -1. */
static int populate(sc_client *c, uint64_t *victim, uint64_t *prober)
{
	static sc_check_req reqs[LIST_ROWS];
	static sc_decision outs[LIST_ROWS];
	static int rcs[LIST_ROWS];
	sc_wallet_update w = { .set = SC_WALLET_SET_BALANCE, .balance = INT64_C(1) << 50 };
	sc_agent a;
	sc_org o;
	int rc;

	if ((rc = sc_orgs_create(c, "hostile", &o)) != 0 ||
	    (rc = sc_agents_create(c, "hostile", "victim", SC_PRIORITY_NORMAL, &w, NULL, 0, &a)) != 0)
		goto fail;
	*victim = a.id;
	if ((rc = sc_agents_create(c, "hostile", "probe", SC_PRIORITY_NORMAL, &w, NULL, 0, &a)) != 0)
		goto fail;
	*prober = a.id;
	for (size_t i = 0; i < LIST_ROWS; i++)
		reqs[i] = (sc_check_req){ .agent_id = *victim, .action = "llm.chat",
			                  .estimated_cost = 1000 + (sc_micros)i };
	if ((rc = sc_check_batch(c, reqs, LIST_ROWS, outs, rcs)) != 0)
		goto fail;
	for (size_t i = 0; i < LIST_ROWS; i++)
		if ((rc = rcs[i]) != 0)
			goto fail;
	return 0;
fail:
	fprintf(stderr, "hostile_bench: setup: %s: %s\n", sc_err_name(rc), sc_last_error(c));
	return -1;
}

static void print_row(const char *name, const struct phase *ph, const char *bursts)
{
	printf("%-22s %9" PRIu64 " %9.1f %9.1f %9.1f %8.0f %8s\n", name, ph->checks,
	       hist_quantile_us(&ph->h, 0.5), hist_quantile_us(&ph->h, 0.99),
	       hist_quantile_us(&ph->h, 0.999), ph->peak_rss_mib, bursts);
}

int main(int argc, char **argv)
{
	static struct attacker att[MAX_ATTACKERS];
	static struct phase quiet, attack;
	const char *extra[] = { "--durability", "strict", "--log-level", "warn", NULL };
	double seconds = 3;
	int attackers = 3, lists = 300, i, rc = 0;
	long hold_ms = 200;
	uint64_t victim = 0, prober = 0, bursts = 0;
	msgpack_sbuffer sb;
	sc_client *c = NULL;
	char err[4400], label[32], nb[32];

	signal(SIGPIPE, SIG_IGN);
	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
			seconds = atof(argv[++i]);
		else if (strcmp(argv[i], "--attackers") == 0 && i + 1 < argc)
			attackers = atoi(argv[++i]);
		else if (strcmp(argv[i], "--lists") == 0 && i + 1 < argc)
			lists = atoi(argv[++i]);
		else if (strcmp(argv[i], "--hold-ms") == 0 && i + 1 < argc)
			hold_ms = atol(argv[++i]);
		else if (strcmp(argv[i], "--durability") == 0 && i + 1 < argc)
			extra[1] = argv[++i];
		else if (strcmp(argv[i], "--quick") == 0)
			seconds = 0.3;
		else
			return bench_other_arg(argv[i], usage);
	}
	if (seconds <= 0 || attackers < 1 || attackers > MAX_ATTACKERS || lists < 1 ||
	    lists > 100000 || hold_ms < 0) {
		usage(stderr);
		return 2;
	}
	if (bench_daemon_start(&bd, extra, err, sizeof(err)) != 0) {
		fprintf(stderr, "hostile_bench: %s\n", err);
		return 1;
	}
	if ((rc = sc_connect(bd.d.socket, &c)) != 0) {
		fprintf(stderr, "hostile_bench: connect: %s\n", sc_err_name(rc));
		rc = 1;
		goto out;
	}
	if (populate(c, &victim, &prober) != 0 || probe(c, prober, seconds, &quiet) != 0) {
		rc = 1;
		goto out;
	}
	msgpack_sbuffer_init(&sb);
	pack_lists(&sb, victim, (unsigned)lists);
	for (i = 0; i < attackers; i++) {
		att[i] = (struct attacker){ .index = i, .burst = sb.data, .burst_len = sb.size,
			                    .hold_ms = hold_ms };
		pthread_create(&att[i].thread, NULL, attacker_main, &att[i]);
	}
	rc = probe(c, prober, seconds, &attack) != 0;
	__atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
	for (i = 0; i < attackers; i++) {
		pthread_join(att[i].thread, NULL);
		bursts += att[i].bursts;
		if (att[i].fail.rc != 0) {
			fprintf(stderr, "hostile_bench: %s\n", att[i].fail.error);
			rc = 1;
		}
	}
	msgpack_sbuffer_destroy(&sb);
	if (rc != 0)
		goto out;
	printf("%-22s %9s %9s %9s %9s %8s %8s\n", "probe check", "checks", "p50 us", "p99 us",
	       "p99.9 us", "peakMiB", "bursts");
	print_row("quiet", &quiet, "-");
	snprintf(label, sizeof(label), "%d unread attackers", attackers);
	snprintf(nb, sizeof(nb), "%" PRIu64, bursts);
	print_row(label, &attack, nb);
	printf("attack p99 / quiet p99: %.2fx (target at most 2x); a burst is %d "
	       "transactions.list of %d rows in one write, never read\n",
	       hist_quantile_us(&attack.h, 0.99) / hist_quantile_us(&quiet.h, 0.99), lists,
	       LIST_ROWS);
	bench_print_command("hostile_bench", argc, argv, test_daemon_bin());
out:
	sc_close(c);
	if (bench_daemon_stop(&bd, rc != 0, err, sizeof(err)) != 0) {
		fprintf(stderr, "hostile_bench: %s\n", err);
		rc = 1;
	}
	return rc;
}
