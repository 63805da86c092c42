/*
 * mem_bench.c: what agents and rules cost in memory. For each agent count M
 * (--agents, default 1000,10000,100000,1000000) and rules per agent K
 * (--rules, default 1,4) it starts a fresh daemon whose capacities are
 * exactly M agents and M * K rules, creates the M agents with their K rules
 * inline (agents.create) from --clients threads (default 4, each with its
 * own connection), and reads the daemon's /proc/PID/status; then it
 * restarts the daemon on the same state directory (it re-attaches to the
 * segment and rebuilds its indexes) and reads it again. It prints one table:
 *
 *   agents, rules           the configuration (rules per agent)
 *   rss, anon, file         after the creates: VmRSS of the daemon, its whole
 *                           footprint, split into RssAnon (the heap: indexes,
 *                           free slots, the ledger's buffers) and RssFile +
 *                           RssShmem (touched pages of the segment), in MiB
 *   re_rss, re_anon, re_file  the same after the restart: the footprint of
 *                           holding that state, without what the burst of
 *                           creates left behind (a ledger buffer keeps the size
 *                           its largest batch needed)
 *   segment                 size of the state segment file in MiB (sparse)
 *   B/agent                 re_rss / M: what each agent costs, everything included
 *   B/agent(m)              (re_rss(M) - re_rss(M')) / (M - M') against the previous
 *                           M of the same K: the per-agent cost without fixed costs
 *   B/rule                  (re_rss(M, K) - re_rss(M, 1)) / (M * (K - 1)): what one
 *                           more rule per agent costs
 *
 * The rules are a fleet's: every agent gets the same K rules (names and
 * patterns from one list), as operators provision agents from a template.
 * The daemon runs with --durability async (the ledger's fsync is not what is
 * measured) and with checkpoints pushed past the run, so that no snapshot
 * buffer is alive while memory is read. RSS is read once the last create is
 * acknowledged and the daemon's stats answer.
 *
 * The daemon is started by tests/daemon.c ($SIDECARD_BIN, else
 * sidecard/sidecard next to the build tree); its output goes to a log file
 * in its directory, which is removed after a clean stop. Any failed request
 * fails the run (exit 1).
 *
 * Threads: the main thread starts and stops daemons and reads /proc; the
 * client threads only create agents, and record their first error, which
 * the main thread reads after joining them.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench_util.h"
#include "sidecard.h"

#define MAX_CLIENTS 64
#define MAX_SIZES 16
#define MIB (1024.0 * 1024.0)

/* A fleet's rule template: the first K are given to every agent. */
static const struct {
	const char *name, *match;
	int64_t max_cost, daily, hourly;
} fleet_rules[] = {
	{"chat", "openai.chat", 2000000, 50000000, 600},
	{"openai", "openai.*", 5000000, 100000000, 1200},
	{"search", "search.*", 100000, 5000000, 3000},
	{"default", "*", 1000000, 20000000, 6000},
	{"tools", "tool.*", 500000, 10000000, 2000},
	{"flights", "flight.booking", 500000000, 1000000000, 10},
	{"images", "openai.images", 4000000, 40000000, 100},
	{"embed", "openai.embeddings", 100000, 10000000, 20000},
};

#define MAX_RULES (sizeof(fleet_rules) / sizeof(fleet_rules[0]))

struct row {
	uint32_t agents;
	unsigned rules;
	struct proc_mem mem; /* after the creates */
	struct proc_mem re;  /* after a restart */
	uint64_t segment;    /* bytes */
	double seconds;      /* to create the agents */
};

static struct bench_daemon bd; /* of the configuration being run */

/* SIGTERM; a clean stop removes the directory. 0 or -1. */
static int daemon_stop(void)
{
	char err[4400];

	if (bench_daemon_stop(&bd, 0, err, sizeof(err)) != 0) {
		fprintf(stderr, "mem_bench: %s\n", err);
		return -1;
	}
	return 0;
}

/* Runs one configuration. 0 or -1. */
static int run_one(uint32_t n_agents, unsigned n_rules, int n_clients, struct row *out)
{
	sc_rule rules[MAX_RULES];
	char agents_arg[24], rules_arg[24];
	const char *extra[] = { "--durability", "async", "--agents", agents_arg, "--rules", rules_arg,
		                "--checkpoint-records", "1099511627776", "--checkpoint-interval",
		                "86400", "--log-level", "warn", NULL };
	uint64_t rule_cap = (uint64_t)n_agents * (n_rules ? n_rules : 1);
	char err[4400];
	sc_client *c = NULL;
	struct stat sb;
	int64_t t0, ignored, agents = -1;
	sc_org o;
	int rc, failed = 0;

	snprintf(agents_arg, sizeof(agents_arg), "%" PRIu32, n_agents);
	snprintf(rules_arg, sizeof(rules_arg), "%" PRIu64, rule_cap);
	bd.dir[0] = '\0';
	if (bench_daemon_start(&bd, extra, err, sizeof(err)) != 0) {
		fprintf(stderr, "mem_bench: %s\n", err);
		return -1;
	}
	if ((rc = sc_connect(bd.d.socket, &c)) != 0 || (rc = sc_orgs_create(c, "fleet", &o)) != 0) {
		fprintf(stderr, "mem_bench: setup: %s: %s\n", sc_err_name(rc), c ? sc_last_error(c) : "");
		sc_close(c);
		daemon_stop();
		return -1;
	}
	memset(rules, 0, sizeof(rules));
	for (unsigned k = 0; k < n_rules; k++) {
		snprintf(rules[k].name, sizeof(rules[k].name), "%s", fleet_rules[k].name);
		snprintf(rules[k].match, sizeof(rules[k].match), "%s", fleet_rules[k].match);
		rules[k].max_cost_per_txn = fleet_rules[k].max_cost;
		rules[k].daily_spend_limit = fleet_rules[k].daily;
		rules[k].hourly_rate_limit = fleet_rules[k].hourly;
	}
	t0 = bench_now_ns();
	if (bench_create_agents(bd.d.socket, "fleet", n_agents, n_clients, INT64_C(100000000), rules,
	                        n_rules, err, sizeof(err)) != 0) {
		fprintf(stderr, "mem_bench: %s\n", err);
		failed = 1;
	}
	out->seconds = (double)(bench_now_ns() - t0) / 1e9;
	/* A request after the last create: the loop has finished with every create. */
	if (!failed && (rc = sc_stat(c, "ledger_syncs", &ignored)) != 0) {
		fprintf(stderr, "mem_bench: stats: %s: %s\n", sc_err_name(rc), sc_last_error(c));
		failed = 1;
	}
	sc_close(c);
	if (!failed && (proc_mem(bd.d.pid, &out->mem) != 0 ||
	                stat(bd.d.segment, &sb) != 0)) {
		fprintf(stderr, "mem_bench: cannot read the daemon's memory or %s: %s\n", bd.d.segment,
		        strerror(errno));
		failed = 1;
	}
	out->segment = failed ? 0 : (uint64_t)sb.st_size;
	if (!failed && test_daemon_restart(&bd.d) != 0) {
		fprintf(stderr, "mem_bench: the daemon did not restart; see %s\n", bd.log);
		failed = 1;
	}
	/* The restarted daemon answers once it has rebuilt its indexes. */
	if (!failed && ((rc = sc_connect(bd.d.socket, &c)) != 0 ||
	                (rc = sc_stat(c, "agents", &agents)) != 0 || agents != (int64_t)n_agents)) {
		fprintf(stderr, "mem_bench: after the restart: %s (%lld agents): %s\n",
		        sc_err_name(rc), (long long)agents, c ? sc_last_error(c) : "");
		failed = 1;
	}
	sc_close(c);
	if (!failed && proc_mem(bd.d.pid, &out->re) != 0) {
		fprintf(stderr, "mem_bench: cannot read the restarted daemon's memory\n");
		failed = 1;
	}
	out->agents = n_agents;
	out->rules = n_rules;
	if (daemon_stop() != 0 || failed)
		return -1;
	return 0;
}

/* Parses "1000,10000" into v (at most MAX_SIZES values in [lo, hi]). Count or -1. */
static int parse_list(const char *s, uint32_t *v, uint32_t lo, uint32_t hi)
{
	int n = 0;

	while (*s) {
		char *end;
		unsigned long x;

		errno = 0;
		x = strtoul(s, &end, 10);
		if (errno || end == s || x < lo || x > hi || n == MAX_SIZES || (*end && *end != ','))
			return -1;
		v[n++] = (uint32_t)x;
		s = *end ? end + 1 : end;
	}
	return n;
}

static const struct row *find_row(const struct row *rows, int n, uint32_t agents, unsigned rules)
{
	for (int i = 0; i < n; i++)
		if (rows[i].agents == agents && rows[i].rules == rules)
			return &rows[i];
	return NULL;
}

static void usage(FILE *out)
{
	fprintf(out, "usage: mem_bench [--agents M,M...] [--rules K,K...] [--clients N] [--quiet]\n"
	             "Creates M agents with K rules each (1 <= K <= %zu) on a fresh daemon per\n"
	             "configuration (default M 1000,10000,100000,1000000 and K 1,4) and prints\n"
	             "the daemon's memory.\n",
	        MAX_RULES);
}

int main(int argc, char **argv)
{
	uint32_t agents[MAX_SIZES] = { 1000, 10000, 100000, 1000000 }, rules[MAX_SIZES] = { 1, 4 };
	int n_agents = 4, n_rules = 2, clients = 4, quiet = 0, n_rows = 0;
	static struct row rows[MAX_SIZES * MAX_SIZES];

	signal(SIGPIPE, SIG_IGN);
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--agents") == 0 && i + 1 < argc)
			n_agents = parse_list(argv[++i], agents, 1, 1u << 26);
		else if (strcmp(argv[i], "--rules") == 0 && i + 1 < argc)
			n_rules = parse_list(argv[++i], rules, 1, MAX_RULES);
		else if (strcmp(argv[i], "--clients") == 0 && i + 1 < argc)
			clients = atoi(argv[++i]);
		else if (strcmp(argv[i], "--quiet") == 0)
			quiet = 1;
		else
			return bench_other_arg(argv[i], usage);
	}
	if (n_agents <= 0 || n_rules <= 0 || clients < 1 || clients > MAX_CLIENTS) {
		usage(stderr);
		return 2;
	}
	for (int k = 0; k < n_rules; k++) {
		for (int m = 0; m < n_agents; m++) {
			int nc = (uint32_t)clients > agents[m] ? (int)agents[m] : clients;

			if (run_one(agents[m], rules[k], nc, &rows[n_rows]) != 0)
				return 1;
			n_rows++;
		}
	}
	if (quiet)
		return 0;
	printf("%8s %5s %7s %6s %7s %7s %7s %7s %8s %7s %10s %6s %8s\n", "agents", "rules", "rss",
	       "anon", "file", "re_rss", "re_anon", "re_file", "segment", "B/agent", "B/agent(m)",
	       "B/rule", "create_s");
	for (int i = 0; i < n_rows; i++) {
		const struct row *r = &rows[i], *prev = NULL, *one;
		char marginal[16] = "-", per_rule[16] = "-";

		for (int j = 0; j < n_rows; j++)
			if (rows[j].rules == r->rules && rows[j].agents < r->agents &&
			    (prev == NULL || rows[j].agents > prev->agents))
				prev = &rows[j];
		if (prev != NULL)
			snprintf(marginal, sizeof(marginal), "%.0f",
			         ((double)r->re.rss - (double)prev->re.rss) /
			                 (double)(r->agents - prev->agents));
		one = find_row(rows, n_rows, r->agents, 1);
		if (one != NULL && r->rules > 1)
			snprintf(per_rule, sizeof(per_rule), "%.0f",
			         ((double)r->re.rss - (double)one->re.rss) /
			                 ((double)r->agents * (double)(r->rules - 1)));
		printf("%8" PRIu32 " %5u %7.1f %6.1f %7.1f %7.1f %7.1f %7.1f %8.1f %7.0f %10s %6s %8.1f\n",
		       r->agents, r->rules, (double)r->mem.rss / MIB, (double)r->mem.anon / MIB,
		       (double)r->mem.file / MIB, (double)r->re.rss / MIB, (double)r->re.anon / MIB,
		       (double)r->re.file / MIB, (double)r->segment / MIB,
		       (double)r->re.rss / (double)r->agents, marginal, per_rule, r->seconds);
	}
	printf("MiB: rss/anon/file after creating the agents, re_* after restarting the daemon on its "
	       "state; segment: file size (sparse)\n"
	       "B/agent: re_rss / agents; B/agent(m): re_rss growth per agent from the previous row "
	       "of the same rules; B/rule: re_rss growth per rule against 1 rule per agent\n");
	bench_print_command("mem_bench", argc, argv, test_daemon_bin());
	return 0;
}
