/*
 * recovery_bench.c: how fast the daemon rebuilds its state from the ledger
 * alone, the path taken after a reboot (state.shm gone) with no snapshot.
 *
 * It makes a ledger of --records records (default 200000) through the real
 * daemon: a daemon in durability async on a new directory, --agents agents
 * (default 1000) in 10 orgs, each with 4 rules, and --clients client
 * threads (default 4, one connection each) running check + report pairs of
 * realistic content (four actions matching different rules, varied costs,
 * every third check with a task id, reports with a model and token counts)
 * until the ledger holds enough records. Snapshots are switched off
 * (--checkpoint-records and --checkpoint-interval at their maximum), so the
 * rebuild replays every record. The daemon is stopped with SIGTERM, its
 * state segment deleted, and it is started again; the bench reports the
 * rebuild time the daemon logs ("rebuilt the state ... in N ms"), the time
 * from the start until the socket accepts, and records per second.
 *
 * --dir DIR keeps the directory: a first run with --dir makes the ledger,
 * later runs with --dir and --reuse only time the rebuild (generating 10
 * million records takes minutes). --rebuilds N repeats the rebuild.
 * --snapshots leaves the daemon's default snapshots on (every 1,000,000
 * records or 5 minutes) and keeps them for the rebuild: what a start after
 * a reboot replays, the newest snapshot and the records after it.
 *
 * The daemon is started by tests/daemon.c ($SIDECARD_BIN, else
 * sidecard/sidecard next to the build tree). A request that fails fails
 * the run (exit 1).
 *
 * Threads: the main thread starts and stops the daemon; the client threads
 * only send requests and count records in their own struct.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench_util.h"
#include "sidecard.h"

#define MAX_CLIENTS 64
#define ORGS 10

struct client {
	pthread_t thread;
	int index;
	uint64_t first_agent, n_agents;
	uint64_t target;  /* records this thread makes */
	uint64_t records; /* records made */
	struct bench_fail fail;
};

static struct bench_daemon bd; /* its dir: --dir, or a new temporary directory */
static int snapshots;          /* --snapshots: the default cadence, kept for the rebuild */

static void *client_main(void *arg)
{
	static const char *const actions[] = { "openai.chat", "anthropic.messages", "search.web",
		                               "tool.run" };
	static const char *const models[] = { "gpt-4o", "claude-sonnet", "gpt-4o-mini" };
	struct client *cl = arg;
	uint64_t x = 0x9e3779b97f4a7c15u * (uint64_t)(cl->index + 1);
	sc_client *c = NULL;
	int rc = sc_connect(bd.d.socket, &c);

	if (rc != 0) {
		bench_fail(&cl->fail, cl->index, NULL, rc, "connect");
		return NULL;
	}
	while (cl->records < cl->target) {
		char task[32];
		sc_check_req req;
		sc_decision d;
		sc_settlement s;

		x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift: reproducible content */
		memset(&req, 0, sizeof(req));
		req.agent_id = cl->first_agent + x % cl->n_agents;
		req.action = actions[(x >> 20) % 4];
		req.estimated_cost = 1000 + (sc_micros)((x >> 24) % 50000);
		if ((x >> 40) % 3 == 0) {
			snprintf(task, sizeof(task), "task-%" PRIu64, (x >> 44) % 5000);
			req.task_id = task;
		}
		if ((rc = sc_check(c, &req, &d)) != 0) {
			bench_fail(&cl->fail, cl->index, c, rc, "check");
			break;
		}
		cl->records++;
		if (!d.allowed)
			continue;
		if ((x >> 8) % 2) {
			sc_tokens t = { .model = models[(x >> 50) % 3],
				        .input_tokens = (x >> 12) % 4000,
				        .output_tokens = (x >> 28) % 1000 };

			rc = sc_report_tokens(c, d.transaction_id, SC_OUTCOME_SUCCESS, &t, &s);
		} else {
			rc = sc_report(c, d.transaction_id, SC_OUTCOME_SUCCESS, 1,
			               req.estimated_cost / 2, &s);
		}
		if (rc != 0) {
			bench_fail(&cl->fail, cl->index, c, rc, "report");
			break;
		}
		cl->records++;
	}
	sc_close(c);
	return NULL;
}

/* Orgs, agents and their rules. 0 or -1. */
static int populate(int n_agents, uint64_t *first_agent)
{
	sc_wallet_update w = { .set = SC_WALLET_SET_BALANCE, .balance = INT64_C(1) << 50 };
	int64_t past = 1000000; /* 1970, microseconds */
	sc_price price;
	sc_rule rules[4];
	sc_client *c = NULL;
	sc_agent a;
	sc_org o;
	char name[64];
	int i, rc;

	memset(rules, 0, sizeof(rules));
	snprintf(rules[0].name, sizeof(rules[0].name), "openai");
	snprintf(rules[0].match, sizeof(rules[0].match), "openai.*");
	snprintf(rules[1].name, sizeof(rules[1].name), "search");
	snprintf(rules[1].match, sizeof(rules[1].match), "search.web");
	snprintf(rules[2].name, sizeof(rules[2].name), "tools");
	snprintf(rules[2].match, sizeof(rules[2].match), "tool.*");
	snprintf(rules[3].name, sizeof(rules[3].name), "default");
	snprintf(rules[3].match, sizeof(rules[3].match), "*");
	for (i = 0; i < 4; i++) {
		rules[i].max_cost_per_txn = 1000000;
		rules[i].daily_spend_limit = INT64_C(1) << 48;
	}
	if ((rc = sc_connect(bd.d.socket, &c)) != 0)
		goto fail;
	/* rates per million tokens, in force since before any check */
	if ((rc = sc_pricing_set(c, "gpt-4o", 2500000, 10000000, NULL, &past, &price)) != 0 ||
	    (rc = sc_pricing_set(c, "claude-sonnet", 3000000, 15000000, NULL, &past, &price)) != 0 ||
	    (rc = sc_pricing_set(c, "gpt-4o-mini", 150000, 600000, NULL, &past, &price)) != 0)
		goto fail;
	for (i = 0; i < ORGS; i++) {
		snprintf(name, sizeof(name), "org-%d", i);
		if ((rc = sc_orgs_create(c, name, &o)) != 0)
			goto fail;
	}
	for (i = 0; i < n_agents; i++) {
		char org[32];

		snprintf(org, sizeof(org), "org-%d", i % ORGS);
		snprintf(name, sizeof(name), "agent-%d", i);
		if ((rc = sc_agents_create(c, org, name, SC_PRIORITY_NORMAL, &w, rules, 4, &a)) != 0)
			goto fail;
		if (i == 0)
			*first_agent = a.id;
	}
	sc_close(c);
	return 0;
fail:
	fprintf(stderr, "recovery_bench: setup: %s: %s\n", sc_err_name(rc),
	        c ? sc_last_error(c) : "");
	sc_close(c);
	return -1;
}

/* Makes a ledger of about n records. 0 or -1. */
static int generate(uint64_t n, int n_clients, int n_agents)
{
	static struct client clients[MAX_CLIENTS];
	uint64_t first_agent = 0, made = 0;
	int64_t t0 = bench_now_ns();
	int i, failed = 0;

	if (populate(n_agents, &first_agent) != 0)
		return -1;
	for (i = 0; i < n_clients; i++) {
		clients[i] = (struct client){ .index = i, .first_agent = first_agent,
			                      .n_agents = (uint64_t)n_agents,
			                      .target = n / (uint64_t)n_clients };
		pthread_create(&clients[i].thread, NULL, client_main, &clients[i]);
	}
	for (i = 0; i < n_clients; i++) {
		pthread_join(clients[i].thread, NULL);
		if (clients[i].fail.rc != 0) {
			fprintf(stderr, "recovery_bench: %s\n", clients[i].fail.error);
			failed = 1;
		}
		made += clients[i].records;
	}
	if (!failed)
		fprintf(stderr, "recovery_bench: made %" PRIu64 " records in %.1f s\n", made,
		        (double)(bench_now_ns() - t0) / 1e9);
	return failed ? -1 : 0;
}

/* The number after `key` in the daemon's log, from its last occurrence; -1 if none. */
static long long log_number(const char *key, const char *after)
{
	FILE *f = fopen(bd.log, "r");
	char line[8192];
	long long v = -1;

	while (f && fgets(line, sizeof(line), f)) {
		const char *p = strstr(line, key);

		if (p && (p = strstr(p, after)) != NULL)
			v = strtoll(p + strlen(after), NULL, 10);
	}
	if (f)
		fclose(f);
	return v;
}

static uint64_t dir_bytes(const char *dir)
{
	char cmd[4300];
	unsigned long long v = 0;
	FILE *p;

	snprintf(cmd, sizeof(cmd), "du -sb '%s/state/ledger' 2>/dev/null", dir);
	p = popen(cmd, "r");
	if (p && fscanf(p, "%llu", &v) != 1)
		v = 0;
	if (p)
		pclose(p);
	return v;
}

/*
 * Deletes the state segment and (unless --snapshots) the snapshots,
 * restarts, reports. 0 or -1.
 */
static int rebuild(void)
{
	char path[4400];
	long long ms, records;
	int64_t t0, t1;

	unlink(bd.d.segment);
	snprintf(path, sizeof(path), "rm -rf '%s/state/checkpoints'", bd.dir);
	if (!snapshots && system(path) != 0)
		return -1;
	t0 = bench_now_ns();
	if (test_daemon_restart(&bd.d) != 0) {
		fprintf(stderr, "recovery_bench: the daemon did not start again; see %s\n", bd.log);
		return -1;
	}
	t1 = bench_now_ns();
	ms = log_number("rebuilt the state", " in ");
	records = log_number("rebuilt the state", " and ");
	if (ms < 0 || records <= 0) {
		fprintf(stderr, "recovery_bench: no 'rebuilt the state' line in %s\n", bd.log);
		return -1;
	}
	printf("%10lld %9.1f %9lld %10.0f %9.0f\n", records,
	       (double)dir_bytes(bd.dir) / (1 << 20), ms,
	       (double)(t1 - t0) / 1e6, ms > 0 ? (double)records * 1000.0 / (double)ms : 0);
	return 0;
}

static void usage(FILE *out)
{
	fprintf(out, "usage: recovery_bench [--records N] [--agents N] [--clients N] [--dir DIR "
	             "[--reuse]] [--rebuilds N] [--snapshots]\n"
	             "Makes a ledger of N records (default 200000) through the daemon, then times\n"
	             "a start that rebuilds the state from it alone; with --snapshots, with the\n"
	             "daemon's default snapshots taken and kept (a reboot's start).\n");
}

int main(int argc, char **argv)
{
	const char *extra[] = { "--durability", "async", "--hold-ttl", "86400", "--log-level", "info",
		                "--agents", NULL, "--rules", NULL, "--checkpoint-records",
		                "1099511627776", "--checkpoint-interval", "86400", NULL };
	char agents_arg[32], rules_arg[32], err[4400];
	uint64_t records = 200000;
	int clients = 4, agents = 1000, reuse = 0, keep = 0, rebuilds = 1, i, rc = 0;

	signal(SIGPIPE, SIG_IGN);
	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--records") == 0 && i + 1 < argc)
			records = strtoull(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--agents") == 0 && i + 1 < argc)
			agents = atoi(argv[++i]);
		else if (strcmp(argv[i], "--clients") == 0 && i + 1 < argc)
			clients = atoi(argv[++i]);
		else if (strcmp(argv[i], "--rebuilds") == 0 && i + 1 < argc)
			rebuilds = atoi(argv[++i]);
		else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
			snprintf(bd.dir, sizeof(bd.dir), "%s", argv[++i]);
			keep = 1;
		} else if (strcmp(argv[i], "--reuse") == 0)
			reuse = 1;
		else if (strcmp(argv[i], "--snapshots") == 0)
			snapshots = 1;
		else
			return bench_other_arg(argv[i], usage);
	}
	if (records < 1000 || clients < 1 || clients > MAX_CLIENTS || agents < 1 ||
	    agents > 1000000 || rebuilds < 1 || (reuse && !keep)) {
		usage(stderr);
		return 2;
	}
	snprintf(agents_arg, sizeof(agents_arg), "%d", agents + 16);
	snprintf(rules_arg, sizeof(rules_arg), "%d", 4 * agents + 64);
	extra[7] = agents_arg;
	extra[9] = rules_arg;
	if (snapshots)
		extra[10] = NULL; /* the default cadence: every 1,000,000 records or 5 minutes */
	if (keep && !reuse && mkdir(bd.dir, 0700) != 0) {
		fprintf(stderr, "recovery_bench: %s: %s (it must not exist yet without --reuse)\n",
		        bd.dir, strerror(errno));
		return 1;
	}
	if (bench_daemon_start(&bd, extra, err, sizeof(err)) != 0) {
		fprintf(stderr, "recovery_bench: %s\n", err);
		return 1;
	}
	if (!reuse && generate(records, clients, agents) != 0)
		rc = 1;
	printf("%10s %9s %9s %10s %9s\n", "records", "ledgerMiB", "rebuildms", "tostartms",
	       "records/s");
	for (i = 0; rc == 0 && i < rebuilds; i++)
		rc = rebuild() != 0;
	/* a failed run keeps the directory: the daemon's log tells what happened */
	if (bench_daemon_stop(&bd, keep || rc != 0, err, sizeof(err)) != 0) {
		fprintf(stderr, "recovery_bench: %s\n", err);
		rc = 1;
	}
	if (rc == 0) {
		printf("rebuildms: the rebuild as the daemon logs it (state creation and replay); "
		       "tostartms: from the start until the socket accepts (start-up scan "
		       "included)\n");
		bench_print_command("recovery_bench", argc, argv, test_daemon_bin());
	}
	return rc;
}
