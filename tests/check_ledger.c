/*
 * check_ledger.c: the durable ledger, end to end, through the real daemon
 * (tests/daemon.c), libsidecard and `sidecardctl ledger` ($SIDECARDCTL_BIN),
 * against the contract in sidecard/store/ledger.h and sidecard/store/ledger_format.c.
 *
 * What is covered:
 * - a state segment changed behind the daemon's back (its seal: while stopped, or
 *   while running, when the daemon stops before deciding from it), or writable by
 *   others or owned by another uid, is set aside and rebuilt; a forged snapshot is
 *   set aside and the rebuild starts without it; a record that replays differently
 *   is named with the field of its result that differs;
 * - restart after SIGTERM and after SIGKILL in strict mode, with state.shm
 *   kept (re-attach) or deleted (rebuild from checkpoint plus ledger): the
 *   orgs, agents, wallets, rules, transactions and counters after the
 *   restart are exactly those acknowledged before it;
 * - a torn tail: the last record torn at every byte offset inside it, by
 *   ending the file there or by zeros from there on (the segment is
 *   zero-filled after its records); `sidecardctl ledger verify` warns and
 *   exits 0, the daemon removes the tail ("torn tail" in its log) and serves
 *   everything but that record; non-zero bytes after the last record and a
 *   last record whose header alone is zero are torn tails too, zeroed in
 *   place;
 * - corruption: one byte flipped inside an earlier record, or its header
 *   zeroed; the daemon exits 1 without serving and names the file and
 *   offset, the file is left byte-identical, and `sidecardctl ledger verify`
 *   exits 1 naming the same (damage to the last record, the quarantine and
 *   `sidecardctl ledger repair`: tests/check_ledger_damage.c);
 * - segments as earlier versions wrote them (appended, no flags): read,
 *   their torn tail cut off, and never extended: new records go to a new
 *   zero-filled segment;
 * - `sidecardctl ledger export`: one JSON line per record, sequence numbers
 *   consecutive from 1, one record of the expected type per mutation;
 * - rotation and checkpoints with a 4 KiB --segment-size and a small
 *   --checkpoint-records: a rebuild still restores everything;
 * - disk failures injected by tests/faultfs.c (LD_PRELOAD, $FAULTFS_LIB):
 *   ENOSPC on every write and EIO on fdatasync make mutations fail at once
 *   with "unavailable" and a message starting "ledger:", reads keep
 *   working, the reply of the change that hit the failure is held until its
 *   record is durable, and everything works again once the disk does; and
 *   the disk filling up just as a segment rotates, followed by SIGKILL.
 *
 * Speed: the torn-tail test restarts the daemon once per byte of one record
 * (about 160 times), so daemons run with small capacities and are stopped
 * with SIGKILL wherever the test allows; the suite takes about 5 s.
 *
 * Threads: the Check runner forks each test; the fault test adds one thread
 * with its own connection, which records its result and never asserts.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <check.h>

#include "client_fixture.h"
#include "daemon.h"
#include "ledger.h"
#include "shm.h"
#include "sidecard.h"
#include "suites.h"
#include "testutil.h"

#define USD(x) ((sc_micros)((x) * SC_MICROS_PER_USD))
#define CENTS(x) ((sc_micros)(x) * 10000)
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
#define TEST_TIMEOUT_S 60
#define MAX_AGENTS 16
#define MAX_RECORDS 4096

static struct test_daemon d;
static sc_client *c;
static char log_path[128];

/* Mutations made through populate()/mutate helpers, by ledger record type. */
static unsigned made[LEDGER_TYPE_END];

#define OK(call) TEST_OK(c, call)

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ----- the daemon ----- */

/* Small capacities keep state.shm small, so that every (re)start is quick. */
#define SMALL_CAPS "--orgs", "16", "--agents", "64", "--rules", "256", "--holds", "1024", \
	"--history", "4096"

static void start(const char *const *extra)
{
	memset(made, 0, sizeof(made));
	test_client_start(&d, &c, extra, TEST_TIMEOUT_S);
	test_daemon_log_to_dir(&d, log_path, sizeof(log_path));
}

static void setup_default(void)
{
	static const char *const args[] = { SMALL_CAPS, NULL };

	start(args);
}

static void setup_rotation(void)
{
	static const char *const args[] = { SMALL_CAPS, "--segment-size", "4096",
		                            "--checkpoint-records", "25", NULL };

	start(args);
}

static void setup_segments(void)
{
	static const char *const args[] = { SMALL_CAPS, "--segment-size", "4096", NULL };

	start(args);
}

static void stop(void)
{
	sc_close(c);
	c = NULL;
	ck_assert_int_eq(test_daemon_stop(&d), 0);
	test_daemon_timeout(0);
	unsetenv("LD_PRELOAD");
	unsetenv("FAULTFS_CONTROL");
}

/* Stops the daemon with sig, keeping its state directory. */
static void kill_daemon(int sig)
{
	sc_close(c);
	c = NULL;
	ck_assert_int_eq(test_daemon_kill(&d, sig), sig == SIGTERM ? 0 : 128 + sig);
}

static void state_path(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", d.state, name);
}

static void remove_shm(void)
{
	char path[256];

	snprintf(path, sizeof(path), "%s", d.segment);
	ck_assert_msg(unlink(path) == 0, "unlink %s: %s", path, strerror(errno));
}

/* The daemon's log of its last run ("" if none). Caller frees. */
static char *daemon_log(void)
{
	char *s = test_read_file(log_path, NULL);

	return s ? s : strdup("");
}

/* Starts the daemon again on its state directory, with a fresh log. */
static void restart(void)
{
	unlink(log_path);
	ck_assert_msg(test_daemon_restart(&d) == 0, "restart failed; the daemon's log:\n%s",
	              daemon_log());
	OK(sc_connect(d.socket, &c));
}

static int64_t stat_of(const char *name)
{
	int64_t v = 0;
	int rc = sc_stat(c, name, &v);

	ck_assert_msg(rc == 0, "stats %s: %s: %s", name, sc_err_name(rc), sc_last_error(c));
	return v;
}

/* ----- sidecardctl ----- */

static const char *ctl_bin(void)
{
	const char *env = getenv("SIDECARDCTL_BIN");

	return env && *env ? env : "libclient/sidecardctl";
}

/* Runs a shell command, its stdout and stderr into out; returns its exit status. */
static int run(char *out, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int run(char *out, size_t len, const char *fmt, ...)
{
	char cmd[2048];
	size_t n = 0, got;
	va_list ap;
	FILE *p;
	int status;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	strncat(cmd, " 2>&1", sizeof(cmd) - strlen(cmd) - 1);
	p = popen(cmd, "r");
	ck_assert_msg(p != NULL, "popen %s: %s", cmd, strerror(errno));
	while (n + 1 < len && (got = fread(out + n, 1, len - n - 1, p)) > 0)
		n += got;
	out[n] = '\0';
	while (fgetc(p) != EOF)
		;
	status = pclose(p);
	ck_assert_msg(WIFEXITED(status), "%s: died", cmd);
	return WEXITSTATUS(status);
}

/* ----- reading the ledger with the reader under test's twin ----- */

struct rec {
	uint64_t seq;
	unsigned type;
	uint32_t size; /* header and body */
	uint64_t offset;
	char file[256];
};

struct recs {
	struct rec v[MAX_RECORDS];
	size_t n;
};

static int collect(void *arg, const struct ledger_record *r)
{
	struct recs *rs = arg;
	struct rec *x;

	if (rs->n == MAX_RECORDS)
		return 1;
	x = &rs->v[rs->n++];
	x->seq = r->seq;
	x->type = r->type;
	x->size = LEDGER_RECORD_HEADER + r->body_len;
	x->offset = r->offset;
	snprintf(x->file, sizeof(x->file), "%s", r->file);
	return 0;
}

/* Every record of the ledger (offline, never repairing). */
static struct recs *scan_ledger(struct ledger_scan_result *res)
{
	struct recs *rs = calloc(1, sizeof(*rs));
	char dir[256], err[4352];
	int rc;

	ck_assert_ptr_nonnull(rs);
	state_path(dir, sizeof(dir), "ledger");
	rc = ledger_scan(dir, 0, 0, collect, rs, res, err, sizeof(err));
	ck_assert_msg(rc == 0, "ledger_scan %s: %s: %s", dir, sc_err_name(rc), err);
	ck_assert_uint_gt(rs->n, 0);
	return rs;
}

/* The number of files in the state directory's subdirectory sub ending in ext. */
static int count_files(const char *sub, const char *ext)
{
	char cmd[512], out[64];

	snprintf(cmd, sizeof(cmd), "ls -1 '%s/%s' | grep -c '%s$'", d.state, sub, ext);
	run(out, sizeof(out), "%s", cmd);
	return atoi(out);
}

/* ----- a workload touching every kind of record ----- */

struct world {
	uint64_t alpha, beta;           /* orgs */
	uint64_t research, ops, temp;   /* agents; temp is deleted */
	uint64_t open_hold;             /* a pending transaction */
};

static uint64_t new_org(const char *name)
{
	sc_org o;

	OK(sc_orgs_create(c, name, &o));
	made[LEDGER_ORGS_CREATE]++;
	return o.id;
}

static uint64_t new_agent(const char *org, const char *name, enum sc_priority p,
                          sc_micros balance, const sc_rule *rules, size_t n_rules)
{
	sc_wallet_update w = { .set = SC_WALLET_SET_BALANCE, .balance = balance };
	sc_agent a;

	OK(sc_agents_create(c, org, name, p, &w, rules, n_rules, &a));
	made[LEDGER_AGENTS_CREATE]++;
	return a.id;
}

static sc_decision check(uint64_t agent, const char *action, sc_micros cost, const char *key)
{
	sc_check_req req = { .agent_id = agent, .action = action, .estimated_cost = cost,
		             .idempotency_key = key };
	sc_decision dec;

	OK(sc_check(c, &req, &dec));
	ck_assert_int_eq(dec.replayed, 0);
	made[LEDGER_CHECK]++;
	return dec;
}

static uint64_t allow(uint64_t agent, const char *action, sc_micros cost)
{
	sc_decision dec = check(agent, action, cost, NULL);

	ck_assert_msg(dec.allowed, "%s for %lld blocked: %s", action, (long long)cost,
	              dec.block_reason);
	return dec.transaction_id;
}

static void report(uint64_t txn, enum sc_outcome o, int has_actual, sc_micros actual)
{
	sc_settlement s;

	OK(sc_report(c, txn, o, has_actual, actual, &s));
	ck_assert_int_eq(s.replayed, 0);
	made[LEDGER_REPORT]++;
}

/*
 * Every mutating method at least once, each succeeding (a refused request
 * may or may not leave a record, so the counts in `made` stay exact).
 */
static struct world populate(void)
{
	sc_rule cap = test_rule("OpenAI cap", "openai.*", USD(5), USD(100), 50);
	sc_rule search = test_rule("search", "search.web", 0, USD(20), 0), tools, out;
	sc_rule scratch = test_rule("scratch", "scratch.*", USD(1), 0, 0);
	sc_wallet_update org_funds = { .set = SC_WALLET_SET_BALANCE, .balance = USD(1000) };
	sc_wallet_update limit = { .set = SC_WALLET_SET_MAX_PER_TXN, .max_per_txn = USD(10) };
	sc_wallet_update daily = { .set = SC_WALLET_SET_PERIOD | SC_WALLET_SET_BUDGET,
		                   .budget = USD(50), .period = SC_PERIOD_DAILY };
	struct world w;
	sc_org o;
	sc_agent a;
	sc_wallet wl;
	sc_decision dec;

	w.alpha = new_org("alpha");
	w.beta = new_org("beta");
	OK(sc_org_wallet_update(c, w.alpha, &org_funds, &wl));
	made[LEDGER_WALLETS_UPDATE]++;
	w.research = new_agent("alpha", "research", SC_PRIORITY_NORMAL, USD(100), &cap, 1);
	w.ops = new_agent("alpha", "ops", SC_PRIORITY_HIGH, USD(50), NULL, 0);
	/* its rule's texts are its own: deleting it below frees them */
	w.temp = new_agent("beta", "temp", SC_PRIORITY_NORMAL, USD(1), &scratch, 1);
	OK(sc_agents_update(c, w.ops, "ops-2", -1, SC_STATUS_THROTTLED, &a));
	made[LEDGER_AGENTS_UPDATE]++;
	OK(sc_rules_add(c, w.research, &search, &out));
	made[LEDGER_RULES_ADD]++;
	search.max_cost_per_txn = USD(3);
	OK(sc_rules_update(c, w.research, out.id, SC_RULE_SET_MAX_COST_PER_TXN, &search, &out));
	made[LEDGER_RULES_UPDATE]++;
	/* a new name and pattern: the old texts are released, new ones taken */
	snprintf(search.name, sizeof(search.name), "web search");
	snprintf(search.match, sizeof(search.match), "search.*");
	OK(sc_rules_update(c, w.research, out.id, SC_RULE_SET_NAME | SC_RULE_SET_MATCH, &search,
	                   &out));
	made[LEDGER_RULES_UPDATE]++;
	tools = test_rule("tools", "tool.*", USD(1), 0, 0);
	OK(sc_rules_add(c, w.ops, &tools, &out));
	made[LEDGER_RULES_ADD]++;
	OK(sc_rules_remove(c, w.ops, out.id));
	made[LEDGER_RULES_REMOVE]++;
	OK(sc_wallets_update(c, w.research, &limit, &wl));
	made[LEDGER_WALLETS_UPDATE]++;
	/* time zones, budget periods and sub-budgets replay too */
	OK(sc_orgs_set_timezone(c, w.alpha, "Asia/Kolkata", &o));
	made[LEDGER_ORGS_UPDATE]++;
	ck_assert_str_eq(o.timezone_rule, "IST-5:30");
	OK(sc_wallets_update(c, w.ops, &daily, &wl));
	made[LEDGER_WALLETS_UPDATE]++;
	OK(sc_wallets_carve(c, w.ops, USD(20), "launch week", NULL, NULL, NULL));
	made[LEDGER_WALLETS_CARVE]++;

	report(allow(w.research, "openai.chat", USD(2)), SC_OUTCOME_SUCCESS, 1, CENTS(150));
	w.open_hold = allow(w.research, "openai.chat", USD(4));
	dec = check(w.research, "openai.chat", USD(7), NULL);
	ck_assert_int_eq(dec.allowed, 0);
	report(allow(w.research, "search.web", USD(2)), SC_OUTCOME_FAILURE, 0, 0);
	dec = check(w.ops, "tool.run", USD(1), "key-1");
	ck_assert_int_eq(dec.allowed, 1);
	OK(sc_agents_delete(c, w.temp));
	made[LEDGER_AGENTS_DELETE]++;
	return w;
}

/* ----- the observable state, and comparing two of them ----- */

static const char *const stat_names[] = { "orgs",   "agents",  "rules",   "holds_open",
	                                  "checks", "allowed", "blocked", "reports",
	                                  "expired", "topups",  "rule_texts" };

struct snapshot {
	sc_org *orgs;
	size_t n_orgs;
	sc_agent *agents;
	size_t n_agents;
	sc_wallet wallets[MAX_AGENTS];
	sc_rule *rules[MAX_AGENTS];
	size_t n_rules[MAX_AGENTS];
	sc_transaction *txns;
	size_t n_txns;
	int64_t stats[COUNT(stat_names)];
};

static void take(struct snapshot *s)
{
	size_t i;

	memset(s, 0, sizeof(*s));
	OK(sc_orgs_list(c, &s->orgs, &s->n_orgs));
	OK(sc_agents_list(c, 0, &s->agents, &s->n_agents));
	ck_assert_uint_le(s->n_agents, MAX_AGENTS);
	for (i = 0; i < s->n_agents; i++) {
		OK(sc_wallets_get(c, s->agents[i].id, &s->wallets[i]));
		OK(sc_rules_list(c, s->agents[i].id, &s->rules[i], &s->n_rules[i]));
	}
	OK(sc_transactions_list(c, 0, -1, 1000, &s->txns, &s->n_txns));
	for (i = 0; i < COUNT(stat_names); i++)
		s->stats[i] = stat_of(stat_names[i]);
}

static void release(struct snapshot *s)
{
	size_t i;

	sc_orgs_free(s->orgs);
	sc_agents_free(s->agents);
	for (i = 0; i < s->n_agents; i++)
		sc_rules_free(s->rules[i]);
	sc_transactions_free(s->txns);
	memset(s, 0, sizeof(*s));
}

#define SAME(where, field, a, b)                                                             \
	ck_assert_msg((a) == (b), "%s: %s: %lld before, %lld after", where, field,            \
	              (long long)(a), (long long)(b))
#define SAME_STR(where, field, a, b)                                                         \
	ck_assert_msg(strcmp((a), (b)) == 0, "%s: %s: '%s' before, '%s' after", where, field, \
	              (a), (b))

static void same_wallet(const char *where, const sc_wallet *a, const sc_wallet *b)
{
	SAME(where, "wallet balance", a->balance, b->balance);
	SAME(where, "wallet held", a->held, b->held);
	SAME(where, "wallet available", a->available, b->available);
	SAME(where, "wallet budget", a->budget, b->budget);
	SAME(where, "wallet max_per_txn", a->max_per_txn, b->max_per_txn);
	SAME(where, "wallet daily_spend_limit", a->daily_spend_limit, b->daily_spend_limit);
	SAME(where, "wallet daily_spent", a->daily_spent, b->daily_spent);
	SAME(where, "wallet debt", a->debt, b->debt);
	SAME(where, "wallet limited", a->limited, b->limited);
	SAME(where, "wallet period", a->period, b->period);
	SAME(where, "wallet reserved", a->reserved, b->reserved);
	SAME(where, "wallet sub_budget", a->sub_budget, b->sub_budget);
}

static void same_rules(const char *where, const sc_rule *a, size_t na, const sc_rule *b, size_t nb)
{
	SAME(where, "number of rules", na, nb);
	for (size_t i = 0; i < na; i++) {
		SAME(where, "rule id", a[i].id, b[i].id);
		SAME_STR(where, "rule name", a[i].name, b[i].name);
		SAME_STR(where, "rule match", a[i].match, b[i].match);
		SAME(where, "rule max_cost_per_txn", a[i].max_cost_per_txn, b[i].max_cost_per_txn);
		SAME(where, "rule daily_spend_limit", a[i].daily_spend_limit,
		     b[i].daily_spend_limit);
		SAME(where, "rule hourly_rate_limit", a[i].hourly_rate_limit,
		     b[i].hourly_rate_limit);
		SAME(where, "rule daily_spent", a[i].daily_spent, b[i].daily_spent);
		SAME(where, "rule hourly_count", a[i].hourly_count, b[i].hourly_count);
	}
}

static void same_txn(const char *where, const sc_transaction *a, const sc_transaction *b)
{
	SAME(where, "id", a->id, b->id);
	SAME(where, "agent_id", a->agent_id, b->agent_id);
	SAME(where, "org_id", a->org_id, b->org_id);
	SAME(where, "rule_id", a->rule_id, b->rule_id);
	SAME_STR(where, "action", a->action, b->action);
	SAME_STR(where, "type", a->type, b->type);
	SAME(where, "status", a->status, b->status);
	SAME(where, "has_outcome", a->has_outcome, b->has_outcome);
	if (a->has_outcome)
		SAME(where, "outcome", a->outcome, b->outcome);
	SAME(where, "estimated_cost", a->estimated_cost, b->estimated_cost);
	SAME(where, "charged", a->charged, b->charged);
	SAME_STR(where, "block_reason", a->block_reason, b->block_reason);
	SAME_STR(where, "risk_level", a->risk_level, b->risk_level);
	SAME_STR(where, "idempotency_key", a->idempotency_key, b->idempotency_key);
	SAME(where, "created_at", a->created_at, b->created_at);
	SAME(where, "settled_at", a->settled_at, b->settled_at);
}

/* Asserts that the daemon's state now is exactly the snapshot `before`. */
static void assert_same(const struct snapshot *before, const char *when)
{
	struct snapshot now;
	char where[128];
	size_t i;

	take(&now);
	snprintf(where, sizeof(where), "%s: orgs", when);
	SAME(where, "number", before->n_orgs, now.n_orgs);
	for (i = 0; i < now.n_orgs; i++) {
		const sc_org *a = &before->orgs[i], *b = &now.orgs[i];

		snprintf(where, sizeof(where), "%s: org %" PRIu64, when, a->id);
		SAME(where, "id", a->id, b->id);
		SAME_STR(where, "name", a->name, b->name);
		SAME(where, "agents", a->agents, b->agents);
		SAME(where, "created_at", a->created_at, b->created_at);
		SAME_STR(where, "timezone", a->timezone, b->timezone);
		SAME_STR(where, "timezone_rule", a->timezone_rule, b->timezone_rule);
		same_wallet(where, &a->wallet, &b->wallet);
	}
	snprintf(where, sizeof(where), "%s: agents", when);
	SAME(where, "number", before->n_agents, now.n_agents);
	for (i = 0; i < now.n_agents; i++) {
		const sc_agent *a = &before->agents[i], *b = &now.agents[i];

		snprintf(where, sizeof(where), "%s: agent %" PRIu64, when, a->id);
		SAME(where, "id", a->id, b->id);
		SAME(where, "org_id", a->org_id, b->org_id);
		SAME_STR(where, "org", a->org, b->org);
		SAME_STR(where, "name", a->name, b->name);
		SAME(where, "priority", a->priority, b->priority);
		SAME(where, "status", a->status, b->status);
		SAME(where, "created_at", a->created_at, b->created_at);
		same_wallet(where, &a->wallet, &b->wallet);
		same_rules(where, a->rules, a->n_rules, b->rules, b->n_rules);
		snprintf(where, sizeof(where), "%s: wallets.get %" PRIu64, when, a->id);
		same_wallet(where, &before->wallets[i], &now.wallets[i]);
		snprintf(where, sizeof(where), "%s: rules.list %" PRIu64, when, a->id);
		same_rules(where, before->rules[i], before->n_rules[i], now.rules[i],
		           now.n_rules[i]);
	}
	snprintf(where, sizeof(where), "%s: transactions", when);
	SAME(where, "number", before->n_txns, now.n_txns);
	for (i = 0; i < now.n_txns; i++) {
		snprintf(where, sizeof(where), "%s: transaction %" PRIu64, when,
		         before->txns[i].id);
		same_txn(where, &before->txns[i], &now.txns[i]);
	}
	snprintf(where, sizeof(where), "%s: stats", when);
	for (i = 0; i < COUNT(stat_names); i++)
		SAME(where, stat_names[i], before->stats[i], now.stats[i]);
	release(&now);
}

/* ----- restart: SIGTERM or SIGKILL, state.shm kept or deleted ----- */

static const struct restart_case {
	int sig;
	int rebuild; /* delete state.shm first */
} restart_cases[] = {
	{ SIGTERM, 0 },
	{ SIGKILL, 0 },
	{ SIGTERM, 1 },
	{ SIGKILL, 1 },
};

START_TEST(test_restart)
{
	const struct restart_case *rc = &restart_cases[_i];
	struct world w = populate();
	struct snapshot before;
	char when[64], *log;
	sc_settlement s;
	sc_agent a;

	snprintf(when, sizeof(when), "after %s%s", rc->sig == SIGTERM ? "SIGTERM" : "SIGKILL",
	         rc->rebuild ? " and deleting state.shm" : "");
	take(&before);
	ck_assert_int_eq(before.stats[3], 2); /* two holds still open */
	/* research's two rules: two names, two patterns; the others' texts were released */
	ck_assert_int_eq(before.stats[10], 4);
	kill_daemon(rc->sig);
	if (rc->rebuild)
		remove_shm();
	restart();
	assert_same(&before, when);
	if (!rc->rebuild) {
		/* every record the daemon wrote is sealed: none reads as changed behind its back */
		log = daemon_log();
		ck_assert_msg(strstr(log, "attached to") != NULL, "%s: no attach in the log:\n%s",
		              when, log);
		free(log);
	}
	if (rc->rebuild) {
		log = daemon_log();
		ck_assert_msg(strstr(log, "rebuilt") != NULL && strstr(log, " ms") != NULL,
		              "%s: the log does not say 'rebuilt ... in N ms':\n%s", when, log);
		free(log);
	}

	/* The state goes on: an old hold settles, new ids follow the old ones. */
	OK(sc_report(c, w.open_hold, SC_OUTCOME_SUCCESS, 0, 0, &s));
	ck_assert_int_eq(s.balance, USD(100) - CENTS(150) - USD(4));
	ck_assert_uint_gt(new_org("after"), w.beta);
	ck_assert_uint_gt(new_agent("after", "new", SC_PRIORITY_NORMAL, USD(1), NULL, 0), w.temp);
	ck_assert_int_eq(sc_agents_get(c, w.temp, &a), SC_ENOTFOUND);
	release(&before);
}
END_TEST

/* ----- a torn tail at every byte of the last record ----- */

/* Removes the files of dir/sub that are not in keep (newline-separated names). */
static void remove_new_files(const char *sub, const char *keep)
{
	char out[4096], path[512], *line, *save = NULL;

	run(out, sizeof(out), "ls -1 '%s/%s'", d.state, sub);
	for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char want[80];

		snprintf(want, sizeof(want), "\n%s\n", line);
		if (strstr(keep, want) != NULL)
			continue;
		snprintf(path, sizeof(path), "%s/%s/%s", d.state, sub, line);
		unlink(path);
	}
}

static void list_files(const char *sub, char *out, size_t len)
{
	out[0] = '\n';
	run(out + 1, len - 1, "ls -1 '%s/%s'", d.state, sub);
}

START_TEST(test_torn_tail_every_offset)
{
	struct ledger_scan_result res;
	struct snapshot before;
	struct recs *rs;
	struct rec last;
	char *saved, *log, out[4096], ledger_files[4096], checkpoint_files[4096], when[96];
	size_t saved_len;
	uint64_t cut;
	struct world w = populate();

	take(&before);
	allow(w.ops, "tool.run", USD(1)); /* the record the tail tears */
	kill_daemon(SIGKILL);

	rs = scan_ledger(&res);
	last = rs->v[rs->n - 1];
	free(rs);
	ck_assert_msg(last.type == LEDGER_CHECK, "the last record is a %s, not the check",
	              ledger_type_name(last.type));
	ck_assert_int_eq(res.torn, 0);
	saved = test_read_file(last.file, &saved_len);
	ck_assert_ptr_nonnull(saved);
	/* the segment is zero-filled after its last record */
	ck_assert_uint_ge(saved_len, last.offset + last.size);
	ck_assert_msg(test_all_zero(saved + last.offset + last.size, saved_len - last.offset - last.size),
	              "non-zero bytes after the last record of %s", last.file);
	list_files("ledger", ledger_files, sizeof(ledger_files));
	list_files("checkpoints", checkpoint_files, sizeof(checkpoint_files));

	for (cut = last.offset; cut < last.offset + last.size; cut++) {
		snprintf(when, sizeof(when), "cut at %" PRIu64 " (record at %" PRIu64 ", %u bytes)",
		         cut, last.offset, last.size);
		/* Undo what the previous start wrote, then tear the record here. */
		remove_new_files("ledger", ledger_files);
		remove_new_files("checkpoints", checkpoint_files);
		if ((cut / 2) % 2) {
			/* a write that stopped at cut: zeros after it, the file keeps its size */
			char *torn = malloc(saved_len);

			ck_assert_ptr_nonnull(torn);
			memcpy(torn, saved, cut);
			memset(torn + cut, 0, saved_len - cut);
			test_write_file(last.file, torn, saved_len);
			free(torn);
		} else {
			test_write_file(last.file, saved, cut); /* a file that ends at cut */
		}
		if (cut % 2)
			remove_shm();

		if (cut > last.offset) {
			ck_assert_msg(run(out, sizeof(out), "'%s' ledger verify --state-dir '%s'",
			                  ctl_bin(), d.state) == 0,
			              "%s: verify failed:\n%s", when, out);
			ck_assert_msg(strstr(out, "torn tail") && strstr(out, "next start") &&
			                      strstr(out, ": ok"),
			              "%s: verify does not report the torn tail:\n%s", when, out);
		}
		restart();
		if (cut > last.offset) {
			log = daemon_log();
			ck_assert_msg(strstr(log, "torn tail") != NULL,
			              "%s: no 'torn tail' in the log:\n%s", when, log);
			free(log);
		}
		assert_same(&before, when);
		kill_daemon(SIGKILL);
	}
	free(saved);
	release(&before);
}
END_TEST

/* ----- corruption in the middle ----- */

START_TEST(test_corruption_refused)
{
	struct ledger_scan_result res;
	struct recs *rs;
	struct rec victim;
	char *before, *after, *log, out[8192], offset[64], expected[64];
	const char *base;
	size_t len, len_after;
	int keep_shm = _i == 0, zero_header = _i == 2, late = _i == 3;
	char shm[256];

	populate();
	kill_daemon(SIGKILL);
	rs = scan_ledger(&res);
	ck_assert_uint_ge(rs->n, 10);
	victim = rs->v[late ? rs->n - 3 : rs->n / 2];
	/*
	 * Late: with 4 KiB segments the rebuild replays the first segments
	 * beside the check before the check reaches the damage.
	 */
	if (late)
		ck_assert_msg(strcmp(victim.file, rs->v[0].file) != 0,
		              "the damaged record is in the first segment");
	free(rs);

	before = test_read_file(victim.file, &len);
	ck_assert_ptr_nonnull(before);
	if (zero_header) /* a zero-filled segment's end marker, in the middle of its data */
		memset(before + victim.offset, 0, LEDGER_RECORD_HEADER);
	else
		before[victim.offset + victim.size / 2] ^= 0x40;
	test_write_file(victim.file, before, len);
	if (!keep_shm)
		remove_shm();

	unlink(log_path);
	ck_assert_msg(test_daemon_restart(&d) != 0, "the daemon served a corrupt ledger");
	ck_assert_int_eq(d.status, 1);
	base = strrchr(victim.file, '/') + 1;
	snprintf(offset, sizeof(offset), "offset %" PRIu64, victim.offset);
	snprintf(expected, sizeof(expected), "expected sequence number %" PRIu64, victim.seq);
	log = daemon_log();
	ck_assert_msg(strstr(log, base) && strstr(log, offset) && strstr(log, expected) &&
	                  strstr(log, "refusing to start (nothing was changed)"),
	              "the log does not name %s, '%s' and '%s' or refuse:\n%s", base, offset,
	              expected, log);
	free(log);
	/* nothing was changed: no state segment was left behind */
	snprintf(shm, sizeof(shm), "%s", d.segment);
	ck_assert_msg(keep_shm || (access(shm, F_OK) != 0 && errno == ENOENT),
	              "a refused start left %s", shm);

	after = test_read_file(victim.file, &len_after);
	ck_assert_uint_eq(len_after, len);
	ck_assert_msg(memcmp(before, after, len) == 0, "the daemon rewrote %s", victim.file);
	free(after);
	free(before);

	ck_assert_int_eq(run(out, sizeof(out), "'%s' ledger verify --state-dir '%s'", ctl_bin(),
	                     d.state),
	                 1);
	ck_assert_msg(strstr(out, base) && strstr(out, offset) && strstr(out, expected),
	              "verify does not name %s, '%s' and '%s':\n%s", base, offset, expected, out);
}
END_TEST

/* ----- a record whose result the replay does not reproduce ----- */

/*
 * A check record's result is changed and its checksum made valid again, so
 * that only the replay can see it: its last value, "replayed": false, made
 * true (_i 0), or its last key "replayed" spelt "replayEd" (_i 1). The
 * rebuild must refuse the record, naming it.
 */
START_TEST(test_replay_differs)
{
	struct ledger_scan_result res;
	struct recs *rs;
	struct rec victim = { 0 };
	char *buf, *body, *log, expected[128];
	size_t len, i;
	uint32_t body_len, crc;

	populate();
	kill_daemon(SIGKILL);
	rs = scan_ledger(&res);
	for (i = rs->n / 2; i < rs->n && !victim.seq; i++)
		if (rs->v[i].type == LEDGER_CHECK)
			victim = rs->v[i];
	free(rs);
	ck_assert_msg(victim.seq != 0, "no check record in the second half of the ledger");

	buf = test_read_file(victim.file, &len);
	ck_assert_ptr_nonnull(buf);
	body = buf + victim.offset + LEDGER_RECORD_HEADER;
	body_len = victim.size - LEDGER_RECORD_HEADER;
	ck_assert_int_eq((unsigned char)body[body_len - 1], 0xc2);
	ck_assert_int_eq(body[body_len - 3], 'e');
	if (_i == 0)
		body[body_len - 1] = (char)0xc3;
	else
		body[body_len - 3] = 'E';
	crc = ledger_crc32c(ledger_crc32c(0, buf + victim.offset, 28), body, body_len);
	memcpy(buf + victim.offset + 28, &crc, 4); /* little-endian host, as the format */
	test_write_file(victim.file, buf, len);
	free(buf);
	remove_shm();

	unlink(log_path);
	ck_assert_msg(test_daemon_restart(&d) != 0, "the daemon replayed a different result");
	snprintf(expected, sizeof(expected), "record %" PRIu64 " (check) replayed to a different "
	         "result (the %s \"%s\" differs)", victim.seq, _i == 0 ? "field" : "key",
	         _i == 0 ? "replayed" : "replayEd");
	log = daemon_log();
	ck_assert_msg(strstr(log, expected), "no '%s' in the log:\n%s", expected, log);
	free(log);
}
END_TEST

/*
 * A ledger written by another gate version (its settings record says which)
 * is refused by that version, whatever fields the record lacks: the
 * operator reads why, not that a field of the newer version is missing
 * (docs/DESIGN.md, "Upgrades").
 */
START_TEST(test_other_gate_version_refused)
{
	static const char gate[] = "\xa4gate"; /* the key "gate" as msgpack */
	struct ledger_scan_result res;
	struct recs *rs;
	struct rec settings = { 0 };
	char *buf, *body, *at, *log, expected[160];
	size_t len;
	uint32_t body_len, crc;
	int version;

	populate();
	kill_daemon(SIGTERM);
	rs = scan_ledger(&res);
	for (size_t i = 0; i < rs->n && !settings.seq; i++)
		if (rs->v[i].type == LEDGER_SETTINGS)
			settings = rs->v[i];
	free(rs);
	ck_assert_msg(settings.seq != 0, "no settings record");
	buf = test_read_file(settings.file, &len);
	ck_assert_ptr_nonnull(buf);
	body = buf + settings.offset + LEDGER_RECORD_HEADER;
	body_len = settings.size - LEDGER_RECORD_HEADER;
	at = memmem(body, body_len, gate, sizeof(gate) - 1);
	ck_assert_msg(at != NULL, "no gate version in the settings record");
	at += sizeof(gate) - 1;
	version = *at;
	ck_assert_msg(version > 1 && version < 0x7f, "gate version %d is not a small int", version);
	*at = (char)(version - 1);
	/* and without a field the older version did not write */
	at = memmem(body, body_len, "max_holds_per_agent", 19);
	ck_assert_msg(at != NULL, "no max_holds_per_agent in the settings record");
	at[18] = 'X';
	crc = ledger_crc32c(ledger_crc32c(0, buf + settings.offset, 28), body, body_len);
	memcpy(buf + settings.offset + 28, &crc, 4); /* little-endian host, as the format */
	test_write_file(settings.file, buf, len);
	free(buf);
	remove_shm();

	unlink(log_path);
	ck_assert_msg(test_daemon_restart(&d) != 0, "the daemon replayed another gate version");
	snprintf(expected, sizeof(expected), "written by gate version %d and this daemon implements "
	         "version %d", version - 1, version);
	log = daemon_log();
	ck_assert_msg(strstr(log, expected), "no '%s' in the log:\n%s", expected, log);
	free(log);
}
END_TEST

/* ----- a state segment or a snapshot changed behind the daemon's back ----- */

#define FORGED_BALANCE INT64_C(1000000000000000) /* a billion dollars */

/* Maps the state segment read-write, as any process of the daemon's uid can, and sets a balance. */
static void tamper_balance(uint64_t agent, int64_t balance)
{
	struct shm_header h;
	struct shm_agent *agents;
	int fd = open(d.segment, O_RDWR | O_CLOEXEC), found = 0;
	char *base;

	ck_assert_msg(fd >= 0, "%s: %s", d.segment, strerror(errno));
	ck_assert_int_eq(pread(fd, &h, sizeof(h), 0), (ssize_t)sizeof(h));
	base = mmap(NULL, h.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ck_assert(base != MAP_FAILED);
	agents = (struct shm_agent *)(base + h.agent_off);
	for (uint32_t i = 0; i < h.agent_top; i++)
		if (agents[i].rec.used && agents[i].id == agent) {
			agents[i].wallet.balance = balance;
			found = 1;
		}
	munmap(base, h.size);
	close(fd);
	ck_assert_msg(found, "agent %" PRIu64 " is not in %s", agent, d.segment);
}

static int segments_set_aside(void)
{
	char out[1024];

	run(out, sizeof(out), "ls -1 '%s' | grep -c '\\.invalid-'", d.dir);
	return atoi(out);
}

/*
 * A balance raised to a billion dollars in the segment: while the daemon
 * is stopped (_i 0); while it runs (_i 1, where a read shows it), then a
 * clean stop; while it runs, then a check of that agent (_i 2): the daemon
 * stops before deciding anything from it. The restart finds the agent's
 * record no longer matching its seal, sets the segment aside and rebuilds
 * it from the ledger, which has the real balance.
 */
START_TEST(test_segment_tampered)
{
	sc_check_req req = { .action = "tool.run", .estimated_cost = USD(100) };
	sc_decision dec;
	uint64_t agent;
	sc_agent a;
	char *log;

	new_org("acme");
	agent = new_agent("acme", "bot", SC_PRIORITY_NORMAL, USD(5), NULL, 0);
	allow(agent, "tool.run", USD(1));
	if (_i == 0) {
		kill_daemon(SIGTERM);
		tamper_balance(agent, FORGED_BALANCE);
	} else if (_i == 1) {
		tamper_balance(agent, FORGED_BALANCE);
		OK(sc_agents_get(c, agent, &a));
		ck_assert_int_eq(a.wallet.balance, FORGED_BALANCE);
		kill_daemon(SIGTERM);
	} else {
		/* a run whose log the test reads (restart) */
		kill_daemon(SIGTERM);
		restart();
		tamper_balance(agent, FORGED_BALANCE);
		req.agent_id = agent;
		ck_assert_int_ne(sc_check(c, &req, &dec), 0);
		sc_close(c);
		c = NULL;
		ck_assert_int_eq(test_daemon_kill(&d, SIGTERM), 1);
		log = daemon_log();
		ck_assert_msg(strstr(log, "no longer matches its seal"), "no broken seal in:\n%s", log);
		free(log);
	}
	restart();
	log = daemon_log();
	/* stopped mid-request (_i 2), the segment is also busy: either reason rebuilds it */
	ck_assert_msg((strstr(log, "does not match its seal") ||
	               (_i == 2 && strstr(log, "in the middle of a change"))) &&
	              strstr(log, "rebuilt"),
	              "no rebuild for a broken seal in the log:\n%s", log);
	free(log);
	OK(sc_agents_get(c, agent, &a));
	ck_assert_int_eq(a.wallet.balance, USD(5));
	ck_assert_int_eq(a.wallet.held, USD(1));
	ck_assert_int_eq(segments_set_aside(), 1);
	/* the rebuilt segment is sealed: the next restart attaches to it */
	kill_daemon(SIGTERM);
	restart();
	log = daemon_log();
	ck_assert_msg(strstr(log, "attached to") != NULL, "no attach in the log:\n%s", log);
	free(log);
}
END_TEST

/*
 * The daemon creates the segment writable by its uid alone, and rebuilds
 * one that its group (_i 0) or every user (_i 1) may write, or (_i 2, when
 * the test runs as root and may give the file away) another uid owns.
 */
START_TEST(test_segment_mode)
{
	struct stat sb;
	uint64_t agent;
	sc_agent a;
	char *log;

	if (_i == 2 && geteuid() != 0)
		return;
	new_org("acme");
	agent = new_agent("acme", "bot", SC_PRIORITY_NORMAL, USD(5), NULL, 0);
	ck_assert_int_eq(stat(d.segment, &sb), 0);
	ck_assert_uint_eq(sb.st_uid, geteuid());
	ck_assert_int_eq(sb.st_mode & 0022, 0);
	ck_assert_int_eq(sb.st_mode & 0600, 0600);
	kill_daemon(SIGTERM);
	if (_i == 2)
		ck_assert_int_eq(chown(d.segment, 65534, (gid_t)-1), 0);
	else
		ck_assert_int_eq(chmod(d.segment, _i == 0 ? 0660 : 0646), 0);
	restart();
	log = daemon_log();
	ck_assert_msg(strstr(log, _i == 0   ? "lets its group write it"
	                          : _i == 1 ? "lets every user write it"
	                                    : "owned by uid 65534") &&
	              strstr(log, "rebuilt"),
	              "no rebuild for the segment's mode or owner in the log:\n%s", log);
	free(log);
	ck_assert_int_eq(stat(d.segment, &sb), 0);
	ck_assert_uint_eq(sb.st_uid, geteuid());
	ck_assert_int_eq(sb.st_mode & 0022, 0);
	OK(sc_agents_get(c, agent, &a));
	ck_assert_int_eq(a.wallet.balance, USD(5));
}
END_TEST

/*
 * The newest snapshot is forged: an agent's balance raised, with the
 * file's checksum made valid again, and its seal left (_i 0) or made to
 * match (_i 1, which only the replay of the report after it can see).
 * Without its state segment the daemon must still start, from the ledger:
 * the snapshot is set aside and the state is the one before.
 */
START_TEST(test_snapshot_forged)
{
	struct snapshot before;
	struct world w = populate();
	char out[4096], path[512], *buf, *log;
	size_t len, off;
	uint64_t newest, txn;
	uint32_t count, crc;
	int i, found = 0;

	for (i = 0; i < 40; i++)
		report(allow(w.research, "data.fetch", CENTS(2)), SC_OUTCOME_SUCCESS, 1, CENTS(1));
	for (i = 0; i < 100 && stat_of("checkpoint_seq") == 0; i++)
		test_sleep_ms(50);
	ck_assert_int_gt(stat_of("checkpoint_seq"), 0);
	/* records after the newest snapshot, whose results show the balance */
	txn = allow(w.research, "data.fetch", CENTS(2));
	report(txn, SC_OUTCOME_SUCCESS, 1, CENTS(1));
	take(&before);
	kill_daemon(SIGKILL);

	run(out, sizeof(out), "ls -1 '%s/checkpoints' | grep '\\.snap$' | sort | tail -n 1", d.state);
	newest = strtoull(out, NULL, 16);
	ck_assert_uint_gt(newest, 0);
	snprintf(path, sizeof(path), "%s/checkpoints/%016" PRIx64 ".snap", d.state, newest);
	buf = test_read_file(path, &len);
	ck_assert_ptr_nonnull(buf);
	/* checkpoint.c, FORMAT: the orgs' records, then the agents' */
	off = 32 + sizeof(struct shm_header);
	memcpy(&count, buf + off, 4);
	off += 4 + (size_t)count * (4 + sizeof(struct shm_org));
	memcpy(&count, buf + off, 4);
	off += 4;
	for (uint32_t k = 0; k < count; k++, off += 4 + sizeof(struct shm_agent)) {
		struct shm_agent ag;

		memcpy(&ag, buf + off + 4, sizeof(ag));
		if (ag.id != w.research)
			continue;
		ag.wallet.balance = FORGED_BALANCE;
		if (_i == 1)
			ag.wallet.seal = shm_agent_seal(&ag);
		memcpy(buf + off + 4, &ag, sizeof(ag));
		found = 1;
	}
	ck_assert(found);
	crc = ledger_crc32c(0, buf, len - 4);
	memcpy(buf + len - 4, &crc, 4);
	test_write_file(path, buf, len);
	free(buf);
	remove_shm();

	restart();
	log = daemon_log();
	ck_assert_msg(strstr(log, "does not agree with the ledger") && strstr(log, "rebuilt"),
	              "the forged snapshot was not set aside:\n%s", log);
	ck_assert_msg(_i == 1 || strstr(log, "does not match its seal"), "no seal in:\n%s", log);
	ck_assert_msg(_i == 0 || strstr(log, "differs)"), "no differing field in:\n%s", log);
	free(log);
	assert_same(&before, "after a rebuild without the forged snapshot");
	release(&before);
}
END_TEST

/* ----- sidecardctl ledger export ----- */

/* Python reads the export as JSON: one "seq type body-length" line per record. */
#define EXPORT_PY                                                                          \
	"import json, sys\n"                                                               \
	"for line in sys.stdin:\n"                                                         \
	"    r = json.loads(line)\n"                                                       \
	"    b = r['body']\n"                                                              \
	"    print(r['seq'], r['type'], len(b) if isinstance(b, list) else -1, r['time'])\n"

/* Runs export --from `from` through python; fills counts by type, returns the records. */
static uint64_t export_records(uint64_t from, unsigned *by_type, uint64_t *first, uint64_t *last)
{
	const char *py = getenv("PYTHON3");
	char *out = malloc(1 << 20), *line, *save = NULL, script[128], json[128];
	uint64_t n = 0, seq, prev = 0;
	int rc, body, t;
	int64_t time;
	char type[64];

	ck_assert_ptr_nonnull(out);
	snprintf(script, sizeof(script), "%s/export.py", d.dir);
	snprintf(json, sizeof(json), "%s/export.json", d.dir);
	test_write_file(script, EXPORT_PY, strlen(EXPORT_PY));
	rc = run(out, 1 << 20, "'%s' ledger export --state-dir '%s' --from %" PRIu64 " >'%s'",
	         ctl_bin(), d.state, from, json);
	ck_assert_msg(rc == 0, "export failed (%d):\n%s", rc, out);
	rc = run(out, 1 << 20, "'%s' '%s' <'%s'", py && *py ? py : "/usr/bin/python3", script,
	         json);
	ck_assert_msg(rc == 0, "the export is not JSON lines (%d):\n%s", rc, out);
	*first = 0;
	for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		ck_assert_msg(sscanf(line, "%" SCNu64 " %63s %d %" SCNd64, &seq, type, &body,
		                     &time) == 4,
		              "unexpected line: %s", line);
		if (!*first)
			*first = seq;
		ck_assert_msg(prev == 0 || seq == prev + 1, "sequence %" PRIu64 " after %" PRIu64,
		              seq, prev);
		prev = seq;
		ck_assert_int_gt(time, 0);
		for (t = 1; t < LEDGER_TYPE_END; t++)
			if (strcmp(type, ledger_type_name((unsigned)t)) == 0)
				break;
		ck_assert_msg(t < LEDGER_TYPE_END, "record %" PRIu64 ": unknown type %s", seq, type);
		if (t >= LEDGER_ORGS_CREATE && t <= LEDGER_REPORT)
			ck_assert_msg(body == 2, "record %" PRIu64 " (%s): body is not [params, result]",
			              seq, type);
		by_type[t]++;
		n++;
	}
	*last = prev;
	free(out);
	return n;
}

START_TEST(test_export)
{
	unsigned by_type[LEDGER_TYPE_END] = { 0 }, again[LEDGER_TYPE_END] = { 0 };
	uint64_t n, first, last, last_seq;
	int t;

	struct world w = populate();
	/* metadata is stored as given: the export must stay JSON whatever its bytes */
	sc_meta meta = { .key = "note", .value = "\xff\xfe ok \xe2\x80\xae\x7f" };
	sc_check_req req = { .agent_id = w.research, .action = "x", .estimated_cost = 1,
		             .metadata = &meta, .n_metadata = 1 };
	sc_decision dec;
	char *text, path[128];

	OK(sc_check(c, &req, &dec));
	made[LEDGER_CHECK]++;
	last_seq = (uint64_t)stat_of("ledger_last_seq");
	ck_assert_uint_eq((uint64_t)stat_of("ledger_durable_seq"), last_seq);
	ck_assert_int_gt(stat_of("ledger_syncs"), 0);
	ck_assert_int_ge(stat_of("ledger_records_synced"), stat_of("ledger_syncs"));
	ck_assert_int_eq(stat_of("ledger_failed"), 0);

	/* Beside the running daemon: the files are only read. */
	n = export_records(0, by_type, &first, &last);
	ck_assert_uint_eq(first, 1);
	ck_assert_uint_eq(last, last_seq);
	ck_assert_uint_eq(n, last_seq);
	for (t = LEDGER_ORGS_CREATE; t <= LEDGER_REPORT; t++)
		ck_assert_msg(by_type[t] == made[t], "%u %s records, %u made", by_type[t],
		              ledger_type_name((unsigned)t), made[t]);
	ck_assert_uint_eq(by_type[LEDGER_EXPIRE], 0);
	snprintf(path, sizeof(path), "%s/export.json", d.dir);
	text = test_read_file(path, NULL);
	ck_assert_msg(strstr(text, "\"\\ufffd\\ufffd ok \\u202e\\u007f\"") != NULL,
	              "the metadata's bytes are not escaped in the export:\n%s", text);
	free(text);

	n = export_records(last_seq - 4, again, &first, &last);
	ck_assert_uint_eq(n, 5);
	ck_assert_uint_eq(first, last_seq - 4);
	ck_assert_uint_eq(last, last_seq);
}
END_TEST

/* ----- rotation and checkpoints ----- */

START_TEST(test_rotation_checkpoint)
{
	struct ledger_scan_result res;
	struct snapshot before;
	struct world w = populate();
	char out[4096], want[128], *log;
	int64_t last_seq, checkpoint_seq = 0;
	uint64_t newest;
	int i;

	for (i = 0; i < 120; i++)
		report(allow(w.research, "data.fetch", CENTS(2)), SC_OUTCOME_SUCCESS, 1, CENTS(1));
	last_seq = stat_of("ledger_last_seq");
	for (i = 0; i < 100 && (checkpoint_seq = stat_of("checkpoint_seq")) == 0; i++)
		test_sleep_ms(50);
	ck_assert_msg(checkpoint_seq > 0, "no checkpoint after %" PRId64 " records", last_seq);
	ck_assert_int_le(checkpoint_seq, last_seq);
	ck_assert_int_gt(count_files("checkpoints", ".snap"), 0);
	take(&before);
	kill_daemon(SIGKILL);

	/*
	 * 240 records of a hundred bytes or more do not fit in one 4 KiB segment:
	 * the last segment starts well after record 1. Older segments may be gone,
	 * but never one the newest checkpoint still needs.
	 */
	free(scan_ledger(&res));
	ck_assert_uint_eq(res.last_seq, (uint64_t)last_seq);
	ck_assert_msg(strtoull(strrchr(res.tail_file, '/') + 1, NULL, 16) > 100,
	              "no rotation: the last segment is %s", res.tail_file);
	ck_assert_int_eq(count_files("ledger", ".log"), (int)res.segments);
	/*
	 * A later checkpoint may have been written (and pruned the ledger up to
	 * it) between reading checkpoint_seq and the kill: the newest snapshot
	 * on disk, named by its sequence in hex, is the one that counts.
	 */
	run(out, sizeof(out), "ls -1 '%s/checkpoints' | grep '\\.snap$' | sort | tail -n 1",
	    d.state);
	newest = strtoull(out, NULL, 16);
	ck_assert_uint_ge(newest, (uint64_t)checkpoint_seq);
	ck_assert_uint_le(res.first_seq, newest + 1);
	ck_assert_int_eq(run(out, sizeof(out), "'%s' ledger verify --state-dir '%s'", ctl_bin(),
	                     d.state),
	                 0);
	snprintf(want, sizeof(want), "to %" PRId64 ", in %u segments: ok", last_seq, res.segments);
	ck_assert_msg(strstr(out, want), "verify does not say '%s':\n%s", want, out);

	remove_shm();
	restart();
	log = daemon_log();
	ck_assert_msg(strstr(log, "rebuilt") != NULL, "no rebuild in the log:\n%s", log);
	free(log);
	assert_same(&before, "after SIGKILL and a rebuild from a checkpoint");
	ck_assert_int_eq(stat_of("ledger_last_seq"), last_seq);
	release(&before);
}
END_TEST

/* ----- disk failures (tests/faultfs.c) ----- */

/* A check sent on its own connection, so that a held reply does not block the test. */
struct pending_check {
	pthread_t thread;
	const char *socket;
	uint64_t agent;
	int rc;
	int done; /* atomic */
	sc_decision dec;
	char error[256];
};

static void *pending_main(void *arg)
{
	struct pending_check *p = arg;
	sc_check_req req = { .agent_id = p->agent, .action = "x", .estimated_cost = CENTS(1) };
	sc_client *cl = NULL;

	p->rc = sc_connect(p->socket, &cl);
	if (p->rc == 0)
		p->rc = sc_check(cl, &req, &p->dec);
	snprintf(p->error, sizeof(p->error), "%s", cl ? sc_last_error(cl) : "connect");
	sc_close(cl);
	__atomic_store_n(&p->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static int wait_stat(const char *name, int64_t want, long ms)
{
	long end = now_ms() + ms;

	while (stat_of(name) != want) {
		if (now_ms() > end)
			return 0;
		test_sleep_ms(10);
	}
	return 1;
}

/* What the control file says, per loop iteration. */
/* ----- buffers released after a burst ----- */

#define BURST_CHECKS 12000
#define BURST_NOTE 480 /* a check's metadata: its packed map stays under max_metadata */

static void setup_burst(void)
{
	/*
	 * one flush a second and none on size: a burst stays pending as one
	 * batch; its one agent holds the whole burst, past the default quota
	 */
	static const char *const args[] = { "--orgs",  "16",    "--agents",          "64",
		                            "--rules", "256",   "--holds",           "65536",
		                            "--max-holds-per-agent", "65536",
		                            "--durability", "async", "--commit-interval", "1000",
		                            "--commit-batch", "1073741824", NULL };

	start(args);
}

/*
 * A burst of records grows the ledger's buffers to several MiB; once it is
 * written and the load stops, they are released down to the 1 MiB each
 * keeps (ledger.c, buffer release), not kept for the daemon's life.
 */
START_TEST(test_burst_buffers_released)
{
	static sc_check_req reqs[BURST_CHECKS];
	static sc_decision outs[BURST_CHECKS];
	static int rcs[BURST_CHECKS];
	char note[BURST_NOTE + 1];
	sc_meta meta = { .key = "note", .value = note };
	uint64_t agent;
	int64_t peak, last;
	size_t i;

	memset(note, 'n', BURST_NOTE);
	note[BURST_NOTE] = '\0';
	new_org("burst");
	agent = new_agent("burst", "spender", SC_PRIORITY_NORMAL, USD(1000000), NULL, 0);
	ck_assert_msg(wait_stat("ledger_durable_seq", stat_of("ledger_last_seq"), 5000),
	              "the setup is not durable");
	ck_assert_int_le(stat_of("ledger_buffer_bytes"), 4 << 20);
	for (i = 0; i < BURST_CHECKS; i++)
		reqs[i] = (sc_check_req){ .agent_id = agent, .action = "llm.chat",
			                  .estimated_cost = CENTS(1), .metadata = &meta,
			                  .n_metadata = 1 };
	/*
	 * The burst should sit pending as one batch (one write a second), but a
	 * write may fall inside it on a loaded machine and split it: then try
	 * again, a few times, until the buffers are seen grown.
	 */
	for (int attempt = 0;; attempt++) {
		OK(sc_check_batch(c, reqs, BURST_CHECKS, outs, rcs));
		for (i = 0; i < BURST_CHECKS; i++) {
			ck_assert_int_eq(rcs[i], 0);
			ck_assert(outs[i].allowed);
		}
		last = stat_of("ledger_last_seq");
		peak = stat_of("ledger_buffer_bytes");
		ck_assert_msg(wait_stat("ledger_durable_seq", last, 10000), "the burst is not durable");
		if (peak >= 8 << 20)
			break;
		ck_assert_msg(attempt < 4,
		              "bursts of %d checks with %d bytes of metadata grew the buffers to "
		              "%lld bytes at most",
		              BURST_CHECKS, BURST_NOTE, (long long)peak);
	}
	ck_assert_msg(stat_of("ledger_buffer_bytes") <= 4 << 20,
	              "after the burst the ledger's buffers keep %lld bytes (peak %lld)",
	              (long long)stat_of("ledger_buffer_bytes"), (long long)peak);
	/* the daemon goes on appending and writing after a release */
	allow(agent, "llm.chat", CENTS(1));
	ck_assert_msg(wait_stat("ledger_durable_seq", last + 1, 5000), "no write after the release");
}
END_TEST

static const char *const faults[] = { "ENOSPC\n", "EIO fdatasync\n" };

static void start_faulty(const char *const *args)
{
	static char control[128];

	test_faultfs_begin(control, sizeof(control));
	start(args);
	test_faultfs_end();
}

static void setup_fault(void)
{
	static const char *const args[] = { SMALL_CAPS, NULL };

	start_faulty(args);
}

static void setup_fault_rotation(void)
{
	static const char *const args[] = { SMALL_CAPS, "--segment-size", "4096", NULL };

	start_faulty(args);
}

START_TEST(test_disk_failure)
{
	const char *control = getenv("FAULTFS_CONTROL");
	struct pending_check p = { 0 };
	sc_check_req req = { .action = "x", .estimated_cost = CENTS(1) };
	struct world w = populate();
	sc_transaction *txns;
	size_t n_before, n;
	sc_decision dec;
	sc_agent a;
	sc_wallet wl;
	sc_org o;
	long t0;
	int rc, i;

	OK(sc_transactions_list(c, 0, -1, 1000, &txns, &n_before));
	sc_transactions_free(txns);

	/* The disk fails; the next change finds out and its reply waits. */
	test_write_file(control, faults[_i], strlen(faults[_i]));
	p.socket = d.socket;
	p.agent = w.research;
	ck_assert_int_eq(pthread_create(&p.thread, NULL, pending_main, &p), 0);
	ck_assert_msg(wait_stat("ledger_failed", 1, 3000), "ledger_failed is not 1 with %s",
	              faults[_i]);

	/* Changes are refused at once, with the reason; reads are served. */
	req.agent_id = w.research;
	t0 = now_ms();
	rc = sc_check(c, &req, &dec);
	ck_assert_msg(rc == SC_EUNAVAILABLE, "check while failing: %s (%s)", sc_err_name(rc),
	              sc_last_error(c));
	ck_assert_msg(strncmp(sc_last_error(c), "ledger:", 7) == 0,
	              "message '%s' does not start with 'ledger:'", sc_last_error(c));
	ck_assert_int_lt(now_ms() - t0, 1000);
	ck_assert_int_eq(sc_orgs_create(c, "refused", &o), SC_EUNAVAILABLE);
	OK(sc_agents_get(c, w.research, &a));
	ck_assert_str_eq(a.name, "research");
	OK(sc_wallets_get(c, w.research, &wl));
	ck_assert_int_eq(stat_of("ledger_failed"), 1);
	ck_assert_msg(!__atomic_load_n(&p.done, __ATOMIC_ACQUIRE),
	              "the reply of a change not yet durable was sent (rc %s: %s)",
	              sc_err_name(p.rc), p.error);

	/* The disk recovers: the held reply goes out and changes work again. */
	ck_assert_int_eq(unlink(control), 0);
	for (i = 0; i < 500 && !__atomic_load_n(&p.done, __ATOMIC_ACQUIRE); i++)
		test_sleep_ms(10);
	ck_assert_msg(__atomic_load_n(&p.done, __ATOMIC_ACQUIRE),
	              "the held reply was not sent within 5 s of the disk recovering");
	pthread_join(p.thread, NULL);
	ck_assert_msg(p.rc == 0, "held check: %s: %s", sc_err_name(p.rc), p.error);
	ck_assert_int_eq(p.dec.allowed, 1);
	ck_assert_msg(wait_stat("ledger_failed", 0, 5000), "ledger_failed stays 1");
	OK(sc_check(c, &req, &dec));
	ck_assert_int_eq(dec.allowed, 1);

	/* Both acknowledged checks are durable; the refused ones left nothing. */
	kill_daemon(SIGKILL);
	restart();
	OK(sc_transactions_list(c, 0, -1, 1000, &txns, &n));
	ck_assert_uint_eq(n, n_before + 2);
	ck_assert_uint_eq(txns[0].id, dec.transaction_id);
	ck_assert_uint_eq(txns[1].id, p.dec.transaction_id);
	sc_transactions_free(txns);
	ck_assert_int_eq(sc_orgs_create(c, "refused", &o), 0);
}
END_TEST

/*
 * The disk fills up just as a segment is full: the new segment cannot get
 * its header, and the daemon is killed before the disk recovers. The next
 * daemon must start, append, and leave a ledger the one after it accepts.
 */
START_TEST(test_disk_failure_at_rotation)
{
	const char *control = getenv("FAULTFS_CONTROL");
	struct pending_check p = { 0 };
	struct ledger_scan_result res;
	struct snapshot before;
	struct world w = populate();
	char out[4096];
	uint32_t last_size = 0;
	sc_org o;
	int i, segments;

	/*
	 * One record at a time, until the next one (as large as the last, give
	 * or take a few bytes) does not fit in the segment's --segment-size.
	 */
	for (i = 0; i < 200; i++) {
		struct recs *rs = scan_ledger(&res);

		last_size = rs->v[rs->n - 1].size;
		free(rs);
		if (4096 - res.tail_offset + 8 < last_size)
			break;
		check(w.research, "data.fetch", 0, NULL);
	}
	ck_assert_uint_lt(4096 - res.tail_offset + 8, last_size);
	segments = count_files("ledger", ".log");
	take(&before);

	/* The next batch starts a new segment, and its header cannot be written. */
	test_write_file(control, "ENOSPC\n", 7);
	p.socket = d.socket;
	p.agent = w.research;
	ck_assert_int_eq(pthread_create(&p.thread, NULL, pending_main, &p), 0);
	ck_assert_msg(wait_stat("ledger_failed", 1, 3000), "ledger_failed is not 1");
	ck_assert_int_eq(sc_orgs_create(c, "refused", &o), SC_EUNAVAILABLE);
	ck_assert_msg(strstr(sc_last_error(c), "create segment") != NULL,
	              "the failure was not at the new segment: %s", sc_last_error(c));
	kill_daemon(SIGKILL);
	pthread_join(p.thread, NULL);
	ck_assert_int_ne(p.rc, 0); /* never acknowledged */
	ck_assert_int_eq(unlink(control), 0);
	ck_assert_int_eq(count_files("ledger", ".log"), segments);

	restart();
	assert_same(&before, "after a failed rotation and SIGKILL");
	OK(sc_orgs_create(c, "after-rotation", &o));
	kill_daemon(SIGTERM);
	restart();
	OK(sc_orgs_create(c, "after-restart", &o));
	ck_assert_msg(run(out, sizeof(out), "'%s' ledger verify --state-dir '%s'", ctl_bin(),
	                  d.state) == 0,
	              "verify after the failed rotation:\n%s", out);
	ck_assert_int_eq(sc_orgs_create(c, "after-rotation", &o), SC_EEXISTS);
	release(&before);
}
END_TEST

/* ----- zero-filled segments: what follows the last record ----- */

/*
 * The remains of a write that never completed, in the zero-filled segment:
 * non-zero bytes after the last record (0), or the last record's header
 * zeroed with its body left (1), as power loss may leave a batch whose later
 * page reached the disk and earlier one did not. Both are a torn tail: the
 * daemon zeroes them, keeps the file's size, and serves everything else.
 */
START_TEST(test_tail_damage)
{
	struct ledger_scan_result res;
	struct snapshot before;
	struct recs *rs;
	struct rec last;
	char *buf, *log, out[4096];
	size_t len, len_after;
	uint64_t from;
	struct world w = populate();

	take(&before);
	if (_i == 1)
		allow(w.ops, "tool.run", USD(1)); /* the record whose header is lost */
	kill_daemon(SIGKILL);
	rs = scan_ledger(&res);
	last = rs->v[rs->n - 1];
	free(rs);
	buf = test_read_file(last.file, &len);
	ck_assert_ptr_nonnull(buf);
	from = _i == 0 ? last.offset + last.size : last.offset;
	ck_assert_uint_gt(len, last.offset + last.size + 200);
	if (_i == 0)
		memset(buf + from + 100, 0x5a, 50);
	else
		memset(buf + from, 0, LEDGER_RECORD_HEADER);
	test_write_file(last.file, buf, len);
	free(buf);

	ck_assert_msg(run(out, sizeof(out), "'%s' ledger verify --state-dir '%s'", ctl_bin(),
	                  d.state) == 0,
	              "verify failed:\n%s", out);
	ck_assert_msg(strstr(out, "torn tail") && strstr(out, ": ok"),
	              "verify does not report the torn tail:\n%s", out);
	remove_shm();
	restart();
	log = daemon_log();
	ck_assert_msg(strstr(log, "torn tail") && strstr(log, "zeroed from"),
	              "no 'torn tail ... zeroed from' in the log:\n%s", log);
	free(log);
	assert_same(&before, _i == 0 ? "after garbage past the end" : "after a lost record header");

	buf = test_read_file(last.file, &len_after);
	ck_assert_uint_eq(len_after, len);
	ck_assert_msg(test_all_zero(buf + from, len - from), "the torn tail was not zeroed");
	free(buf);
	release(&before);
}
END_TEST

/* ----- segments of earlier versions: appended, without flags ----- */

static void put_le32(char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (char)(v >> (8 * i));
}

/*
 * Rewrites every segment as earlier versions wrote them: no segment or
 * record flags, and the file ending at its last record.
 */
static void make_appended(void)
{
	struct ledger_scan_result res;
	struct recs *rs = scan_ledger(&res);
	size_t i = 0;

	while (i < rs->n) {
		const char *file = rs->v[i].file;
		size_t len, end = LEDGER_FILE_HEADER;
		char *buf = test_read_file(file, &len);

		ck_assert_ptr_nonnull(buf);
		put_le32(buf + 32, 0);
		put_le32(buf + 60, ledger_crc32c(0, buf, 60));
		for (; i < rs->n && strcmp(rs->v[i].file, file) == 0; i++) {
			char *r = buf + rs->v[i].offset;

			r[26] = r[27] = 0;
			put_le32(r + 28, ledger_crc32c(ledger_crc32c(0, r, 28), r + LEDGER_RECORD_HEADER,
			                               rs->v[i].size - LEDGER_RECORD_HEADER));
			end = rs->v[i].offset + rs->v[i].size;
		}
		test_write_file(file, buf, end);
		free(buf);
	}
	free(rs);
}

START_TEST(test_appended_segments)
{
	struct ledger_scan_result res;
	struct snapshot before;
	struct recs *rs;
	struct rec last;
	char out[4096], *log, *buf;
	size_t len;
	int segments;
	struct world w = populate();

	take(&before);
	allow(w.ops, "tool.run", USD(1)); /* torn below */
	kill_daemon(SIGKILL);
	make_appended();
	rs = scan_ledger(&res);
	last = rs->v[rs->n - 1];
	free(rs);
	ck_assert_int_eq(res.tail_zeroed, 0);
	ck_assert_int_eq(res.torn, 0);
	ck_assert_int_eq(run(out, sizeof(out), "'%s' ledger verify --state-dir '%s'", ctl_bin(),
	                     d.state),
	                 0);
	ck_assert_msg(!strstr(out, "torn"), "verify of appended segments:\n%s", out);

	/* an appended segment's torn tail is cut off, as before */
	buf = test_read_file(last.file, &len);
	ck_assert_uint_eq(len, last.offset + last.size);
	test_write_file(last.file, buf, last.offset + last.size / 2);
	free(buf);
	segments = count_files("ledger", ".log");
	remove_shm();
	restart();
	log = daemon_log();
	ck_assert_msg(strstr(log, "rebuilt") && strstr(log, "torn tail") && strstr(log, "cut off"),
	              "no rebuild and cut torn tail in the log:\n%s", log);
	free(log);
	assert_same(&before, "after rewriting the ledger as appended segments");
	buf = test_read_file(last.file, &len);
	ck_assert_uint_eq(len, last.offset);
	free(buf);

	/* new records go to a new, zero-filled segment; the old one is never extended */
	release(&before);
	allow(w.ops, "tool.run", USD(1));
	take(&before);
	ck_assert_int_eq(count_files("ledger", ".log"), segments + 1);
	kill_daemon(SIGKILL);
	free(scan_ledger(&res));
	ck_assert_int_eq(res.tail_zeroed, 1);
	buf = test_read_file(last.file, &len);
	ck_assert_uint_eq(len, last.offset);
	free(buf);
	remove_shm();
	restart();
	assert_same(&before, "after appended segments and a zero-filled one");
	release(&before);
}
END_TEST

static TCase *tcase(Suite *s, const char *name, void (*setup)(void))
{
	return test_add_tcase_tmp(s, name, setup, stop, TEST_TIMEOUT_S);
}

static Suite *ledger_suite(void)
{
	Suite *s = suite_create("ledger");

	tcase_add_loop_test(tcase(s, "restart", setup_default), test_restart, 0,
	                    (int)COUNT(restart_cases));
	tcase_add_test(tcase(s, "torn-tail", setup_default), test_torn_tail_every_offset);
	tcase_add_loop_test(tcase(s, "corruption", setup_default), test_corruption_refused, 0, 3);
	tcase_add_loop_test(tcase(s, "corruption-late", setup_segments), test_corruption_refused,
	                    3, 4);
	tcase_add_loop_test(tcase(s, "replay-differs", setup_default), test_replay_differs, 0, 2);
	tcase_add_test(tcase(s, "other-gate-version", setup_default), test_other_gate_version_refused);
	tcase_add_loop_test(tcase(s, "segment-tampered", setup_default), test_segment_tampered, 0, 3);
	tcase_add_loop_test(tcase(s, "segment-mode", setup_default), test_segment_mode, 0, 3);
	tcase_add_loop_test(tcase(s, "snapshot-forged", setup_rotation), test_snapshot_forged, 0, 2);
	tcase_add_loop_test(tcase(s, "tail-damage", setup_default), test_tail_damage, 0, 2);
	tcase_add_test(tcase(s, "appended-segments", setup_default), test_appended_segments);
	tcase_add_test(tcase(s, "export", setup_default), test_export);
	tcase_add_test(tcase(s, "burst-buffers", setup_burst), test_burst_buffers_released);
	tcase_add_test(tcase(s, "rotation", setup_rotation), test_rotation_checkpoint);
	tcase_add_loop_test(tcase(s, "disk-failure", setup_fault), test_disk_failure, 0,
	                    (int)COUNT(faults));
	tcase_add_test(tcase(s, "disk-failure-rotation", setup_fault_rotation),
	               test_disk_failure_at_rotation);
	ledger_damage_tcases(s);
	return s;
}

int main(void)
{
	return test_run_suite(ledger_suite());
}
