/*
 * checkpoint_bench.c: what a snapshot of the state costs the checks that
 * run while it is taken. One daemon (--durability async, so that the disk's
 * sync is not what is measured) gets --agents agents (1,000,000), each with
 * 4 rules, from --clients threads (4). A probe client then runs check +
 * report pairs for --seconds (5) twice, timing each check: first with no
 * snapshot due, then after a restart on the same state (it re-attaches)
 * with --checkpoint-records so small that a new snapshot is due as soon as
 * the previous one is written, so snapshots follow each other for the
 * whole phase. It prints p50, p99, p99.9 and the worst check in each phase
 * and the snapshots completed during the second (at a million agents a
 * snapshot is about 1 GB: give --seconds enough for several). The target
 * is a p99.9 under 1 ms while snapshots run at a million agents.
 *
 * A snapshot used to copy every used record under the commit lock, about
 * 0.4 s at a million agents with no change running meanwhile; it now takes
 * the lock only to begin a copy-on-write view (shm/snap.c).
 *
 * The daemon is tests/daemon.c's ($SIDECARD_BIN, else sidecard/sidecard),
 * its segment on a memory file system (bench_util.h). A failed request
 * fails the run (exit 1). --quick is make check's smoke (2,000 agents).
 *
 * Threads: the main thread sets up, probes and restarts; the setup's client
 * threads only create agents and record their first error.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "sidecard.h"

#define MAX_CLIENTS 16
#define RULES 4

struct phase {
	struct hist h;
	struct hist open;   /* h with each stall's missed checks added (see probe) */
	int64_t interval;   /* ns between the checks of an open-loop client: the quiet p50 */
	uint64_t checks;
	int64_t ckpt;      /* the newest snapshot's sequence, as last polled */
	unsigned snapshots; /* new snapshots seen by polling checkpoint_seq */
};

static struct bench_daemon bd;

static void usage(FILE *out)
{
	fprintf(out, "usage: checkpoint_bench [--agents N] [--clients N] [--seconds S] [--quick]\n");
}

/* The org and n agents, each with RULES rules, from `clients` threads. 0 or -1. */
static int populate(uint32_t n, int clients)
{
	static const char *const names[RULES] = { "openai", "search", "tools", "default" };
	static const char *const matches[RULES] = { "openai.*", "search.web", "tool.*", "*" };
	sc_rule rules[RULES];
	sc_client *c = NULL;
	char err[300];
	sc_org o;
	int rc;

	if ((rc = sc_connect(bd.d.socket, &c)) != 0 || (rc = sc_orgs_create(c, "fleet", &o)) != 0) {
		fprintf(stderr, "checkpoint_bench: setup: %s\n", sc_err_name(rc));
		sc_close(c);
		return -1;
	}
	sc_close(c);
	memset(rules, 0, sizeof(rules));
	for (int k = 0; k < RULES; k++) {
		snprintf(rules[k].name, sizeof(rules[k].name), "%s", names[k]);
		snprintf(rules[k].match, sizeof(rules[k].match), "%s", matches[k]);
		rules[k].daily_spend_limit = INT64_C(1) << 48;
	}
	if (bench_create_agents(bd.d.socket, "fleet", n, clients, INT64_C(1) << 50, rules, RULES,
	                        err, sizeof(err)) != 0) {
		fprintf(stderr, "checkpoint_bench: %s\n", err);
		return -1;
	}
	return 0;
}

/* Check + report pairs of agents 1..n for `seconds`; only the check is timed. */
static int probe(uint32_t n, double seconds, struct phase *ph)
{
	static const char *const actions[] = { "openai.chat", "search.web", "tool.run", "misc" };
	int64_t end = bench_now_ns() + (int64_t)(seconds * 1e9);
	uint64_t x = 0x2545f4914f6cdd1du;
	sc_client *c = NULL;
	int rc = sc_connect(bd.d.socket, &c);

	if (rc == 0)
		rc = sc_stat(c, "checkpoint_seq", &ph->ckpt);
	while (rc == 0 && bench_now_ns() < end) {
		sc_check_req req = { .agent_id = 1 + bench_rand(&x) % n,
			             .action = actions[bench_rand(&x) % 4], .estimated_cost = 1000 };
		sc_decision d;
		sc_settlement s;
		int64_t t0 = bench_now_ns();

		if ((rc = sc_check(c, &req, &d)) != 0)
			break;
		int64_t ns = bench_now_ns() - t0;

		hist_add(&ph->h, ns);
		/*
		 * A closed-loop probe sends nothing while it waits, so a stall of
		 * a second is one sample however many checks it held up. An
		 * open-loop client sending every `interval` would have had one
		 * check waiting from each of its sends during the stall: they
		 * are added, as HdrHistogram's expected-interval recording does.
		 */
		hist_add(&ph->open, ns);
		for (int64_t late = ns - ph->interval; ph->interval > 0 && late > ph->interval;
		     late -= ph->interval)
			hist_add(&ph->open, late);
		ph->checks++;
		if (!d.allowed) {
			fprintf(stderr, "checkpoint_bench: check blocked: %s\n", d.block_reason);
			rc = SC_EINTERNAL;
			break;
		}
		rc = sc_report(c, d.transaction_id, SC_OUTCOME_SUCCESS, 1, 500, &s);
		if (rc == 0 && ph->checks % 256 == 0) {
			int64_t seq;

			if ((rc = sc_stat(c, "checkpoint_seq", &seq)) == 0 && seq != ph->ckpt) {
				ph->ckpt = seq;
				ph->snapshots++;
			}
		}
	}
	if (rc != 0)
		fprintf(stderr, "checkpoint_bench: probe: %s: %s\n", sc_err_name(rc),
		        c ? sc_last_error(c) : "");
	sc_close(c);
	return rc == 0 ? 0 : -1;
}

static void print_row(const char *name, const struct phase *ph)
{
	printf("%-22s %9" PRIu64 " %8.1f %8.1f %9.1f %9.1f %9.1f %6u\n", name, ph->checks,
	       hist_quantile_us(&ph->h, 0.5), hist_quantile_us(&ph->h, 0.99),
	       hist_quantile_us(&ph->h, 0.999), hist_quantile_us(&ph->open, 0.999),
	       hist_quantile_us(&ph->h, 1.0), ph->snapshots);
}

int main(int argc, char **argv)
{
	static struct phase warm, quiet, busy;
	char agents_arg[24], rules_arg[24], err[4400];
	const char *extra[] = { "--durability", "async", "--agents", agents_arg, "--rules", rules_arg,
		                "--hold-ttl", "86400", "--checkpoint-records", "1099511627776",
		                "--checkpoint-interval", "86400", "--log-level", "warn", NULL };
	uint32_t agents = 1000000;
	double seconds = 5;
	int clients = 4, i, rc = 0;

	signal(SIGPIPE, SIG_IGN);
	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--agents") == 0 && i + 1 < argc)
			agents = (uint32_t)strtoul(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--clients") == 0 && i + 1 < argc)
			clients = atoi(argv[++i]);
		else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
			seconds = atof(argv[++i]);
		else if (strcmp(argv[i], "--quick") == 0) {
			agents = 2000;
			seconds = 0.3;
		} else {
			return bench_other_arg(argv[i], usage);
		}
	}
	if (agents < 1 || agents > 4000000 || clients < 1 || clients > MAX_CLIENTS || seconds <= 0) {
		usage(stderr);
		return 2;
	}
	snprintf(agents_arg, sizeof(agents_arg), "%" PRIu32, agents + 16);
	snprintf(rules_arg, sizeof(rules_arg), "%" PRIu64, (uint64_t)agents * RULES + 64);
	if (bench_daemon_start(&bd, extra, err, sizeof(err)) != 0) {
		fprintf(stderr, "checkpoint_bench: %s\n", err);
		return 1;
	}
	/*
	 * Both phases on a daemon just restarted on the state the setup made
	 * (it re-attaches), so that neither runs while the setup's writes are
	 * still being flushed: first as set up, then with a snapshot due after
	 * every few records.
	 */
	if (populate(agents, clients) != 0 || test_daemon_restart(&bd.d) != 0 ||
	    probe(agents, seconds / 10, &warm) != 0) {
		rc = 1;
		goto out;
	}
	/* an open-loop client's interval: the median check of a short warm-up */
	quiet.interval = busy.interval = (int64_t)(hist_quantile_us(&warm.h, 0.5) * 1000);
	if (probe(agents, seconds, &quiet) != 0) {
		rc = 1;
		goto out;
	}
	for (i = 0; bd.d.extra[i] != NULL; i++)
		if (strcmp(bd.d.extra[i], "--checkpoint-records") == 0)
			bd.d.extra[i + 1] = "1000";
	if (test_daemon_restart(&bd.d) != 0 || probe(agents, seconds, &busy) != 0) {
		rc = 1;
		goto out;
	}
	printf("%-22s %9s %8s %8s %9s %9s %9s %6s\n", "probe check", "checks", "p50 us", "p99 us",
	       "p99.9 us", "open99.9", "max us", "snaps");
	print_row("no snapshot", &quiet);
	print_row("snapshots back to back", &busy);
	printf("%" PRIu32 " agents with %d rules each; target: p99.9 under 1000 us while "
	       "snapshots run\n"
	       "open99.9: the p99.9 an open-loop client sending every quiet p50 would see (each "
	       "stall's missed sends counted)\n",
	       agents, RULES);
	bench_print_command("checkpoint_bench", argc, argv, test_daemon_bin());
out:
	if (bench_daemon_stop(&bd, rc != 0, err, sizeof(err)) != 0) {
		fprintf(stderr, "checkpoint_bench: %s\n", err);
		rc = 1;
	}
	return rc;
}
