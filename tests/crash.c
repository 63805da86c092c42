/*
 * crash.c: the crash harness. It proves, through libsidecard only, that the
 * daemon in durability mode strict loses nothing it acknowledged and applies
 * nothing by halves when it is killed with SIGKILL at a random moment, both
 * when it re-attaches its state segment and when it has to rebuild the
 * state from checkpoint and ledger (state.shm deleted, as after a reboot).
 *
 * One run is CRASH_CYCLES cycles (default 6) on one state directory. Each
 * cycle: THREADS client threads, each with its own connection, send a random
 * mix of check, report, wallets.update (agent and org), agents.create and
 * rules.add; after CRASH_MIN_MS..CRASH_MAX_MS the daemon gets SIGKILL; in odd
 * cycles (CRASH_DELETE_SHM=alternate, the default; also always or never)
 * state.shm is deleted; the daemon is restarted and the harness verifies:
 *
 *  - every acknowledged mutation is there: checks as transactions with their
 *    decision, reports settled with the acknowledged charge, agents, rules
 *    and wallet updates;
 *  - the request each thread had in flight at the kill is all there or not
 *    there at all (a check's transaction exists exactly when its hold is in
 *    the wallets and the rule's hourly count);
 *  - no transaction, agent or rule exists that nobody asked for;
 *  - every wallet (agent and org) equals a recomputation from the clients'
 *    logs alone: balance and debt by replaying the owner's acknowledged
 *    updates and settlements in order, held as the sum of the estimates of
 *    open holds; the rule a transaction was gated under and each rule's
 *    hourly count and daily spend likewise;
 *  - no overspend: held <= balance for every (normal-priority) agent and for
 *    every org wallet.
 *
 * The recomputation needs an order for every wallet's changes. Each thread
 * therefore owns one org and its agents and is the only one to mutate them:
 * its log is the wallet's history. Overruns (actual above estimate) are kept
 * within the available funds unless the hold is the agent's only one, so that
 * held <= balance stays a true invariant and debt still happens.
 *
 * The daemon runs with a small --checkpoint-records and --segment-size, so
 * that rebuilds start from a snapshot and kills land during snapshots and
 * segment switches too. It is started with tests/daemon.c on a directory
 * the harness keeps across SIGKILL and restarts; its output goes to
 * DIR/daemon.log. On failure the directory is kept and named.
 *
 * Environment: CRASH_CYCLES, CRASH_SEED (fixes each thread's choices and the
 * kill times; the interleaving of threads stays free), CRASH_DELETE_SHM,
 * CRASH_MIN_MS, CRASH_MAX_MS, CRASH_KEEP=1 (keep the directory after a
 * pass), SIDECARD_BIN. Output: one line per cycle, then
 * "N passed, 0 failed"; the first failed assertion prints a precise message
 * and exits 1. To see the harness catch a loss, run it with
 * CRASH_DURABILITY=async CRASH_COMMIT_INTERVAL_MS=200: the acknowledged
 * records still in the daemon's memory at the kill are lost, and it says
 * which.
 *
 * Threads: the main thread starts, kills and verifies; the client threads
 * touch only their own struct thread_model while the daemon runs and stop at
 * their first connection error (the kill). The main thread reads the models
 * after joining them.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "sidecard.h"
#include "tmpdir.h"

#define THREADS 6
#define USD(x) ((sc_micros)(x) * SC_MICROS_PER_USD)
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

#define HISTORY 1048576        /* --history: nothing checked is evicted */
#define AGENT_TXN_CAP 600      /* checks per agent, so one listing (max 1000) holds all */
#define AGENTS_PER_THREAD 30   /* more only when all are full */
#define RULES_PER_AGENT 7      /* one per pattern below */
#define PENDING_PER_THREAD 40  /* above this, the thread reports */
/* Small, so that a run crosses many segments and snapshots, is killed while
 * writing them, and rebuilds from a snapshot plus the ledger after it. */
#define CHECKPOINT_RECORDS "2500"
#define SEGMENT_SIZE "262144"

static const char *const patterns[RULES_PER_AGENT] = {
	"*", "svc.*", "svc.a.*", "svc.a.b", "llm.*", "llm.chat", "tool.run",
};
static const char *const actions[] = {
	"svc.a.b", "svc.a.c", "svc.x", "llm.chat", "llm.embed", "tool.run", "misc.op",
};
static const char *const types[] = { NULL, "api_call", "compute", "data", "tool", "other" };

/* ----- the clients' model ----- */

struct txn {
	uint64_t id;
	unsigned action;
	sc_micros estimate;
	int allowed;
	int settled;
	enum sc_outcome outcome;
	sc_micros charged;
	uint64_t rule_id; /* the rule it was gated under, computed here; 0: none */
	char key[32];     /* idempotency key, "" if none */
};

struct rule_model {
	uint64_t id;
	char name[16];
	unsigned pattern;
	sc_micros max_cost;
	sc_micros daily;
	int64_t hourly;
};

struct wallet_model {
	sc_micros balance, held, debt, budget;
};

struct agent_model {
	uint64_t id;
	char name[32];
	struct wallet_model w;
	struct rule_model rules[RULES_PER_AGENT];
	unsigned n_rules;
	struct txn *txns;
	size_t n_txns, cap_txns, n_pending;
};

enum op { OP_NONE, OP_CHECK, OP_REPORT, OP_WALLET, OP_ORG_WALLET, OP_AGENT_CREATE, OP_RULE_ADD };
static const char *const op_names[] = {
	"none", "check", "report", "wallets.update", "org wallets.update", "agents.create", "rules.add",
};

/* The request a thread sent and has no answer for (op OP_NONE: none). */
struct inflight {
	enum op op;
	size_t agent;         /* index in the thread's agents */
	struct txn txn;       /* check: the request; report: the expected settlement */
	size_t txn_index;     /* report */
	int has_actual;
	sc_micros actual;
	sc_micros balance;    /* wallet updates: the balance set */
	int clear_debt;       /* wallet updates: debt set to 0 */
	char name[32];        /* agents.create */
	struct rule_model rule; /* rules.add */
};

struct thread_model {
	pthread_t thread;
	int index;
	unsigned seed;
	char org[32];
	uint64_t org_id;
	struct wallet_model org_w;
	struct agent_model *agents;
	size_t n_agents, cap_agents;
	unsigned long names, keys;
	/* per cycle */
	struct inflight inf;
	unsigned long acked;
	int failed;
	char error[512];
};

static struct thread_model threads[THREADS];

/* ----- the run ----- */

static struct {
	char dir[64], shm[128], log[96];
	struct test_daemon d;
	const char *durability, *commit_interval; /* strict, 2 unless testing the harness */
	int cycle;
	int64_t start_day; /* UTC day of the start: daily counters are checked while it lasts */
	time_t start_time;
	pthread_barrier_t go;
	int killed; /* set (atomically) just before SIGKILL */
} run;

/* The first failed assertion: says what and where, keeps the directory, exits 1. */
static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "FAIL cycle %d: ", run.cycle);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n  state directory kept: %s (daemon output: %s)\n", run.dir, run.log);
	if (run.d.pid != 0)
		test_daemon_kill(&run.d, SIGKILL);
	exit(1);
}

#define CHECK_EQ(got, want, ...)                                                              \
	do {                                                                                  \
		long long g_ = (long long)(got), w_ = (long long)(want);                      \
		if (g_ != w_) {                                                               \
			char what_[256];                                                      \
			snprintf(what_, sizeof(what_), __VA_ARGS__);                          \
			fail("%s: got %lld, expected %lld", what_, g_, w_);                   \
		}                                                                             \
	} while (0)

static void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n);

	if (q == NULL) {
		perror("crash: realloc");
		exit(1);
	}
	return q;
}

static unsigned rnd(struct thread_model *t, unsigned n)
{
	return n == 0 ? 0 : (unsigned)rand_r(&t->seed) % n;
}

/* A random amount in [lo, hi]. */
static sc_micros rnd_amount(struct thread_model *t, sc_micros lo, sc_micros hi)
{
	uint64_t r = ((uint64_t)(unsigned)rand_r(&t->seed) << 31) ^ (unsigned)rand_r(&t->seed);

	return lo + (sc_micros)(r % (uint64_t)(hi - lo + 1));
}

static int env_int(const char *name, int def)
{
	const char *v = getenv(name);

	return v != NULL && v[0] != '\0' ? atoi(v) : def;
}

static int64_t utc_day(void)
{
	return (int64_t)time(NULL) / 86400;
}

/* ----- the independent recomputation ----- */

/*
 * The rule that gates action among an agent's rules, by PROTOCOL.md's
 * specificity: exact beats any prefix, a longer prefix beats a shorter one,
 * any prefix beats "*". Returns its id, 0 if none matches.
 */
static uint64_t winning_rule(const struct agent_model *a, unsigned action)
{
	const char *act = actions[action];
	long best = -1;
	uint64_t id = 0;
	unsigned i;

	for (i = 0; i < a->n_rules; i++) {
		const char *p = patterns[a->rules[i].pattern];
		size_t plen = strlen(p);
		long score = -1;

		if (strcmp(p, "*") == 0)
			score = 0;
		else if (plen >= 2 && strcmp(p + plen - 2, ".*") == 0) {
			if (strncmp(act, p, plen - 1) == 0 && strlen(act) > plen - 1)
				score = 1 + (long)plen;
		} else if (strcmp(p, act) == 0)
			score = 100000;
		if (score > best) {
			best = score;
			id = a->rules[i].id;
		}
	}
	return id;
}

/* Settles amount from a wallet the way PROTOCOL.md says: past the balance it is debt. */
static void wallet_charge(struct wallet_model *w, sc_micros estimate, sc_micros charged)
{
	w->held -= estimate;
	if (charged <= w->balance) {
		w->balance -= charged;
	} else {
		w->debt += charged - w->balance;
		w->balance = 0;
	}
}

static void apply_check(struct thread_model *t, struct agent_model *a, const struct txn *x)
{
	if (a->n_txns == a->cap_txns) {
		a->cap_txns = a->cap_txns ? 2 * a->cap_txns : 64;
		a->txns = xrealloc(a->txns, a->cap_txns * sizeof(*a->txns));
	}
	a->txns[a->n_txns++] = *x;
	if (x->allowed) {
		a->w.held += x->estimate;
		t->org_w.held += x->estimate;
		a->n_pending++;
	}
}

static void apply_report(struct thread_model *t, struct agent_model *a, struct txn *x,
                         enum sc_outcome o, sc_micros charged)
{
	x->settled = 1;
	x->outcome = o;
	x->charged = charged;
	wallet_charge(&a->w, x->estimate, charged);
	wallet_charge(&t->org_w, x->estimate, charged);
	a->n_pending--;
}

static void apply_wallet(struct wallet_model *w, sc_micros balance, int clear_debt)
{
	w->balance = balance;
	if (clear_debt)
		w->debt = 0;
}

static struct agent_model *add_agent(struct thread_model *t, uint64_t id, const char *name,
                                     sc_micros balance)
{
	struct agent_model *a;

	if (t->n_agents == t->cap_agents) {
		t->cap_agents = t->cap_agents ? 2 * t->cap_agents : 16;
		t->agents = xrealloc(t->agents, t->cap_agents * sizeof(*t->agents));
	}
	a = &t->agents[t->n_agents++];
	memset(a, 0, sizeof(*a));
	a->id = id;
	snprintf(a->name, sizeof(a->name), "%s", name);
	a->w.balance = balance;
	a->w.budget = balance;
	return a;
}

/* ----- the client threads ----- */

/* A failure of the connection (the kill) rather than an answer from the daemon. */
static int connection_lost(int rc)
{
	return rc == SC_ECLOSED || rc == SC_EPROTO || (rc < 0 && rc > -1000);
}

/* A wrong answer seen by a client thread: recorded, and the thread stops (returns 1). */
static int thread_mismatch(struct thread_model *t, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static int thread_mismatch(struct thread_model *t, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(t->error, sizeof(t->error), "thread %d: ", t->index);

	va_start(ap, fmt);
	vsnprintf(t->error + n, sizeof(t->error) - (size_t)n, fmt, ap);
	va_end(ap);
	t->failed = 1;
	return 1;
}

static void thread_fail(struct thread_model *t, sc_client *c, int rc, const char *what)
{
	t->failed = 1;
	snprintf(t->error, sizeof(t->error), "thread %d: %s: %s: %s", t->index, what,
	         sc_err_name(rc), c ? sc_last_error(c) : "");
}

/* An agent with room for checks, or SIZE_MAX. */
static size_t pick_active_agent(struct thread_model *t)
{
	size_t i, start = rnd(t, (unsigned)t->n_agents);

	for (i = 0; i < t->n_agents; i++) {
		size_t k = (start + i) % t->n_agents;

		if (t->agents[k].n_txns < AGENT_TXN_CAP)
			return k;
	}
	return SIZE_MAX;
}

static size_t pending_total(const struct thread_model *t)
{
	size_t i, n = 0;

	for (i = 0; i < t->n_agents; i++)
		n += t->agents[i].n_pending;
	return n;
}

/* Sends one request of the chosen kind. Returns the library's code. */
static int do_check(struct thread_model *t, sc_client *c, size_t ai)
{
	struct agent_model *a = &t->agents[ai];
	struct inflight *f = &t->inf;
	sc_check_req req;
	sc_decision d;
	int rc;

	memset(f, 0, sizeof(*f));
	f->op = OP_CHECK;
	f->agent = ai;
	f->txn.action = rnd(t, COUNT(actions));
	f->txn.estimate = rnd(t, 4) == 0 ? rnd_amount(t, 1, 1000) : rnd_amount(t, 1000, 1500000);
	f->txn.rule_id = winning_rule(a, f->txn.action);
	if (rnd(t, 3) == 0)
		snprintf(f->txn.key, sizeof(f->txn.key), "k%d-%lu", t->index, ++t->keys);
	req = (sc_check_req){
		.agent_id = a->id,
		.action = actions[f->txn.action],
		.estimated_cost = f->txn.estimate,
		.type = types[rnd(t, COUNT(types))],
		.idempotency_key = f->txn.key[0] ? f->txn.key : NULL,
	};
	if ((rc = sc_check(c, &req, &d)) != 0)
		return rc;
	if (d.replayed)
		return thread_mismatch(t, "check of agent %" PRIu64 " with the new key '%s' was "
		                       "replayed", a->id, f->txn.key);
	/* The model keeps an agent's transactions sorted by id: ids are never reused. */
	if (d.transaction_id == 0 ||
	    (a->n_txns > 0 && d.transaction_id <= a->txns[a->n_txns - 1].id))
		return thread_mismatch(t, "check of agent %" PRIu64 " got transaction id %" PRIu64
		                       ", not above its previous %" PRIu64, a->id, d.transaction_id,
		                       a->n_txns > 0 ? a->txns[a->n_txns - 1].id : 0);
	f->txn.id = d.transaction_id;
	f->txn.allowed = d.allowed;
	apply_check(t, a, &f->txn);
	return 0;
}

static int do_report(struct thread_model *t, sc_client *c)
{
	struct inflight *f = &t->inf;
	size_t ai, k, n = 0, pick;
	struct agent_model *a;
	struct txn *x;
	sc_settlement s;
	sc_micros room, charged;
	int rc;

	/* The oldest open hold of a random agent that has one. */
	pick = rnd(t, (unsigned)pending_total(t));
	for (ai = 0; ai < t->n_agents; ai++) {
		if (pick < n + t->agents[ai].n_pending)
			break;
		n += t->agents[ai].n_pending;
	}
	a = &t->agents[ai];
	for (k = 0; k < a->n_txns && !(a->txns[k].allowed && !a->txns[k].settled); k++)
		;
	x = &a->txns[k];

	memset(f, 0, sizeof(*f));
	f->op = OP_REPORT;
	f->agent = ai;
	f->txn_index = k;
	f->txn.outcome = (enum sc_outcome)rnd(t, 3);
	f->has_actual = f->txn.outcome == SC_OUTCOME_PARTIAL || rnd(t, 2);
	if (f->txn.outcome == SC_OUTCOME_FAILURE)
		f->actual = rnd_amount(t, 0, x->estimate);
	else
		f->actual = rnd_amount(t, 0, x->estimate + x->estimate / 2);
	if (f->has_actual && f->actual > x->estimate) {
		/* An overrun stays within the org's and (unless this is the agent's
		 * only hold, which then may go into debt) the agent's available funds. */
		room = t->org_w.balance - t->org_w.held;
		if (a->n_pending > 1 && a->w.balance - a->w.held < room)
			room = a->w.balance - a->w.held;
		if (room < 0)
			room = 0;
		if (f->actual - x->estimate > room)
			f->actual = x->estimate + room;
	}
	if (f->has_actual)
		charged = f->actual;
	else
		charged = f->txn.outcome == SC_OUTCOME_SUCCESS ? x->estimate : 0;
	f->txn.charged = charged;
	if ((rc = sc_report(c, x->id, f->txn.outcome, f->has_actual, f->actual, &s)) != 0)
		return rc;
	if (s.replayed || s.charged != charged || s.transaction_id != x->id)
		return thread_mismatch(t, "report of transaction %" PRIu64 " (%s, actual %lld%s): "
		                       "answer charged %lld replayed %d, expected charged %lld",
		                       x->id, sc_outcome_name(f->txn.outcome), (long long)f->actual,
		                       f->has_actual ? "" : " not given", (long long)s.charged,
		                       s.replayed, (long long)charged);
	apply_report(t, a, x, f->txn.outcome, charged);
	return 0;
}

static int do_wallet(struct thread_model *t, sc_client *c, int org)
{
	struct inflight *f = &t->inf;
	struct wallet_model *w;
	sc_wallet_update u = { .set = SC_WALLET_SET_BALANCE };
	sc_wallet out;
	int rc;

	memset(f, 0, sizeof(*f));
	f->op = org ? OP_ORG_WALLET : OP_WALLET;
	f->agent = org ? 0 : rnd(t, (unsigned)t->n_agents);
	w = org ? &t->org_w : &t->agents[f->agent].w;
	/* A top-up: strictly above the current balance, so that after a kill the
	 * daemon's balance alone tells whether it was applied. */
	f->balance = w->balance + (org ? rnd_amount(t, USD(5), USD(50)) : rnd_amount(t, 1, USD(20)));
	f->clear_debt = w->debt > 0 && rnd(t, 4) != 0;
	u.balance = f->balance;
	if (f->clear_debt) {
		u.set |= SC_WALLET_SET_DEBT;
		u.debt = 0;
	}
	if (org)
		rc = sc_org_wallet_update(c, t->org_id, &u, &out);
	else
		rc = sc_wallets_update(c, t->agents[f->agent].id, &u, &out);
	if (rc != 0)
		return rc;
	apply_wallet(w, f->balance, f->clear_debt);
	if (out.balance != w->balance || out.debt != w->debt || out.held != w->held)
		return thread_mismatch(t, "%s answered balance %lld held %lld debt %lld, expected "
		                       "%lld %lld %lld", op_names[f->op], (long long)out.balance,
		                       (long long)out.held, (long long)out.debt,
		                       (long long)w->balance, (long long)w->held,
		                       (long long)w->debt);
	return 0;
}

static int do_agent_create(struct thread_model *t, sc_client *c)
{
	struct inflight *f = &t->inf;
	sc_wallet_update u = { .set = SC_WALLET_SET_BALANCE };
	sc_agent out;
	int rc;

	memset(f, 0, sizeof(*f));
	f->op = OP_AGENT_CREATE;
	snprintf(f->name, sizeof(f->name), "a%d-%lu", t->index, ++t->names);
	f->balance = rnd_amount(t, USD(5), USD(30));
	u.balance = f->balance;
	if ((rc = sc_agents_create(c, t->org, f->name, SC_PRIORITY_NORMAL, &u, NULL, 0, &out)) != 0)
		return rc;
	add_agent(t, out.id, f->name, f->balance);
	return 0;
}

static int do_rule_add(struct thread_model *t, sc_client *c, size_t ai)
{
	struct agent_model *a = &t->agents[ai];
	struct inflight *f = &t->inf;
	unsigned used = 0, i, p;
	sc_rule r, out;
	int rc;

	for (i = 0; i < a->n_rules; i++)
		used |= 1u << a->rules[i].pattern;
	for (p = rnd(t, RULES_PER_AGENT); used & (1u << p); p = (p + 1) % RULES_PER_AGENT)
		;
	memset(f, 0, sizeof(*f));
	f->op = OP_RULE_ADD;
	f->agent = ai;
	snprintf(f->rule.name, sizeof(f->rule.name), "r%u", p);
	f->rule.pattern = p;
	f->rule.max_cost = rnd(t, 2) ? 0 : rnd_amount(t, 500000, 2000000);
	f->rule.daily = rnd(t, 3) ? 0 : rnd_amount(t, USD(10), USD(40));
	f->rule.hourly = rnd(t, 2) ? 0 : (int64_t)rnd_amount(t, 20, 400);
	memset(&r, 0, sizeof(r));
	snprintf(r.name, sizeof(r.name), "%s", f->rule.name);
	snprintf(r.match, sizeof(r.match), "%s", patterns[p]);
	r.max_cost_per_txn = f->rule.max_cost;
	r.daily_spend_limit = f->rule.daily;
	r.hourly_rate_limit = f->rule.hourly;
	if ((rc = sc_rules_add(c, a->id, &r, &out)) != 0)
		return rc;
	f->rule.id = out.id;
	a->rules[a->n_rules++] = f->rule;
	return 0;
}

/* One random request; the in-flight record is written before it is sent. */
static int one_request(struct thread_model *t, sc_client *c)
{
	unsigned r = rnd(t, 100);
	size_t active = pick_active_agent(t), pending = pending_total(t), ai;

	if (pending > PENDING_PER_THREAD || (r >= 50 && r < 85 && pending > 0))
		return do_report(t, c);
	/* Keep the shared org wallet funded, or late cycles would only see org_empty. */
	if (t->org_w.balance - t->org_w.held < USD(20) && r < 10)
		return do_wallet(t, c, 1);
	if (r >= 85 && r < 91)
		return do_wallet(t, c, 0);
	if (r >= 91 && r < 93)
		return do_wallet(t, c, 1);
	if (r >= 93 && r < 96) {
		ai = rnd(t, (unsigned)t->n_agents);
		if (t->agents[ai].n_rules < RULES_PER_AGENT)
			return do_rule_add(t, c, ai);
	}
	if (active == SIZE_MAX || (r >= 96 && t->n_agents < AGENTS_PER_THREAD && r == 99))
		return do_agent_create(t, c);
	return do_check(t, c, active);
}

static void *thread_main(void *arg)
{
	struct thread_model *t = arg;
	sc_client *c = NULL;
	int rc = sc_connect(run.d.socket, &c);

	if (rc != 0)
		thread_fail(t, NULL, rc, "connect");
	pthread_barrier_wait(&run.go);
	while (rc == 0) {
		if ((rc = one_request(t, c)) == 0) {
			t->inf.op = OP_NONE;
			t->acked++;
			continue;
		}
		if (rc > 0)
			break;
		if (!connection_lost(rc) || !__atomic_load_n(&run.killed, __ATOMIC_ACQUIRE)) {
			thread_fail(t, c, rc, op_names[t->inf.op]);
			t->inf.op = OP_NONE;
		}
	}
	sc_close(c);
	return NULL;
}

/* ----- the daemon ----- */

/* Writes a line into the daemon's log, to tell its runs apart. */
static void log_start(void)
{
	FILE *log = fopen(run.log, "a");

	if (log != NULL) {
		fprintf(log, "=== crash harness: start for cycle %d ===\n", run.cycle);
		fclose(log);
	}
}

static void daemon_start(void)
{
	static char history[24];
	static const char *extra[] = { "--durability", NULL, "--hold-ttl", "86400", "--history",
		                       history, "--log-level", "warn", "--commit-interval", NULL,
		                       "--checkpoint-records", CHECKPOINT_RECORDS,
		                       "--segment-size", SEGMENT_SIZE, NULL };

	snprintf(history, sizeof(history), "%d", HISTORY);
	extra[1] = run.durability;
	extra[9] = run.commit_interval;
	log_start();
	if (test_daemon_start_in(&run.d, run.dir, run.log, extra) != 0)
		fail("the daemon did not start on %s (see above and its output)", run.d.state);
}

/* Starts the daemon again on its state directory, after daemon_kill. */
static void daemon_restart(void)
{
	log_start();
	if (test_daemon_restart(&run.d) != 0)
		fail("the daemon did not start again on %s (restart refused; see above and its "
		     "output)", run.d.state);
}

static void daemon_kill(void)
{
	int rc;

	__atomic_store_n(&run.killed, 1, __ATOMIC_RELEASE);
	if ((rc = test_daemon_kill(&run.d, SIGKILL)) < 0)
		fail("waitpid: %s", strerror(errno));
	if (rc != 128 + SIGKILL)
		fail("the daemon ended by itself before the kill (status %d)", rc);
}

/* SIGTERM: a clean stop must exit 0 (test_daemon_stop kills it after 10 s). */
static void daemon_stop(void)
{
	int rc = test_daemon_stop(&run.d);

	if (rc != 0)
		fail("the daemon stopped with status %d on SIGTERM (137: it ignored SIGTERM "
		     "for 10 s)", rc);
}

#define OK(c, call)                                                                        \
	do {                                                                               \
		int rc_ = (call);                                                          \
		if (rc_ != 0)                                                              \
			fail("%s: %s: %s", #call, sc_err_name(rc_),                        \
			     (c) ? sc_last_error(c) : "");                                 \
	} while (0)

/* ----- setup ----- */

static void setup(sc_client *c, unsigned seed)
{
	sc_wallet_update u = { .set = SC_WALLET_SET_BALANCE };
	sc_wallet w;
	sc_agent a;
	sc_org o;
	int i, j;

	for (i = 0; i < THREADS; i++) {
		struct thread_model *t = &threads[i];

		t->index = i;
		t->seed = seed * 7919u + (unsigned)i;
		snprintf(t->org, sizeof(t->org), "crash-%d", i);
		OK(c, sc_orgs_create(c, t->org, &o));
		t->org_id = o.id;
		u.balance = USD(200);
		OK(c, sc_org_wallet_update(c, t->org_id, &u, &w));
		t->org_w.balance = u.balance;
		t->org_w.budget = w.budget;
		for (j = 0; j < 2; j++) {
			char name[32];

			snprintf(name, sizeof(name), "a%d-%lu", i, ++t->names);
			u.balance = USD(20);
			OK(c, sc_agents_create(c, t->org, name, SC_PRIORITY_NORMAL, &u, NULL, 0, &a));
			add_agent(t, a.id, name, u.balance);
		}
	}
}

/* ----- verification ----- */

struct cycle_result {
	unsigned in_flight, applied;
	size_t agents, txns, pending, blocked;
};

static int sc_txn_cmp(const void *a, const void *b)
{
	uint64_t x = ((const sc_transaction *)a)->id, y = ((const sc_transaction *)b)->id;

	return x < y ? -1 : x > y;
}

static int model_txn_cmp(const void *a, const void *b)
{
	uint64_t x = ((const struct txn *)a)->id, y = ((const struct txn *)b)->id;

	return x < y ? -1 : x > y;
}

static int agent_cmp(const void *a, const void *b)
{
	uint64_t x = ((const sc_agent *)a)->id, y = ((const sc_agent *)b)->id;

	return x < y ? -1 : x > y;
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static const sc_transaction *find_txn_in(const sc_transaction *list, size_t n, uint64_t id)
{
	sc_transaction key;

	key.id = id;
	return n ? bsearch(&key, list, n, sizeof(*list), sc_txn_cmp) : NULL;
}

static const sc_agent *find_agent(const sc_agent *list, size_t n, uint64_t id)
{
	sc_agent key;

	key.id = id;
	return n ? bsearch(&key, list, n, sizeof(*list), agent_cmp) : NULL;
}

static struct txn *model_txn(const struct agent_model *a, uint64_t id)
{
	struct txn key = { .id = id };

	return a->n_txns ? bsearch(&key, a->txns, a->n_txns, sizeof(*a->txns), model_txn_cmp) : NULL;
}

static const char *status_name(int s)
{
	return s >= 0 && s <= SC_TXN_EXPIRED ? sc_txn_status_name((enum sc_txn_status)s) : "?";
}

/* agents.create and rules.add in flight: present in the daemon's listing or not. */
static void resolve_admin(const sc_agent *agents, size_t n, struct cycle_result *r)
{
	size_t i, k;
	unsigned j;

	for (i = 0; i < THREADS; i++) {
		struct thread_model *t = &threads[i];
		struct inflight *f = &t->inf;

		if (f->op == OP_AGENT_CREATE) {
			for (k = 0; k < n; k++) {
				if (agents[k].org_id != t->org_id || strcmp(agents[k].name, f->name))
					continue;
				add_agent(t, agents[k].id, f->name, f->balance);
				r->applied++;
			}
		} else if (f->op == OP_RULE_ADD) {
			struct agent_model *a = &t->agents[f->agent];
			const sc_agent *g = find_agent(agents, n, a->id);

			for (j = 0; g != NULL && j < g->n_rules; j++) {
				if (strcmp(g->rules[j].name, f->rule.name) != 0)
					continue;
				f->rule.id = g->rules[j].id;
				a->rules[a->n_rules++] = f->rule;
				r->applied++;
			}
		}
	}
}

/* Wallet updates in flight: each is a top-up, so the balance tells. */
static void resolve_wallets(sc_client *c, const sc_agent *agents, size_t n,
                            struct cycle_result *r)
{
	size_t i;

	for (i = 0; i < THREADS; i++) {
		struct thread_model *t = &threads[i];
		struct inflight *f = &t->inf;
		struct wallet_model *m;
		sc_wallet w;

		if (f->op == OP_WALLET) {
			const sc_agent *g = find_agent(agents, n, t->agents[f->agent].id);

			if (g == NULL)
				fail("acknowledged agent %" PRIu64 " (%s) is lost (a wallet update "
				     "on it was in flight)",
				     t->agents[f->agent].id, t->agents[f->agent].name);
			w = g->wallet;
			m = &t->agents[f->agent].w;
		} else if (f->op == OP_ORG_WALLET) {
			OK(c, sc_org_wallet_get(c, t->org_id, &w));
			m = &t->org_w;
		} else {
			continue;
		}
		if (w.balance == f->balance && (!f->clear_debt || w.debt == 0)) {
			apply_wallet(m, f->balance, f->clear_debt);
			r->applied++;
		}
	}
}

/* Check and report in flight on this agent: its transaction tells. */
static void resolve_txn_ops(struct thread_model *t, size_t ai, const sc_transaction *list,
                            size_t n, struct cycle_result *r)
{
	struct inflight *f = &t->inf;
	struct agent_model *a = &t->agents[ai];
	const sc_transaction *x, *unknown = NULL;
	size_t k;

	if (f->agent != ai)
		return;
	if (f->op == OP_CHECK) {
		for (k = 0; k < n; k++) {
			if (model_txn(a, list[k].id) != NULL)
				continue;
			if (unknown != NULL)
				fail("agent %" PRIu64 ": transactions %" PRIu64 " and %" PRIu64
				     " exist but at most one check (%s %lld) was in flight",
				     a->id, unknown->id, list[k].id, actions[f->txn.action],
				     (long long)f->txn.estimate);
			unknown = &list[k];
		}
		if (unknown == NULL)
			return;
		if (strcmp(unknown->action, actions[f->txn.action]) != 0 ||
		    unknown->estimated_cost != f->txn.estimate ||
		    strcmp(unknown->idempotency_key, f->txn.key) != 0)
			fail("agent %" PRIu64 ": transaction %" PRIu64 " (%s, %lld, key '%s') is not "
			     "the check in flight (%s, %lld, key '%s')",
			     a->id, unknown->id, unknown->action, (long long)unknown->estimated_cost,
			     unknown->idempotency_key, actions[f->txn.action],
			     (long long)f->txn.estimate, f->txn.key);
		if (unknown->status != SC_TXN_PENDING && unknown->status != SC_TXN_BLOCKED)
			fail("agent %" PRIu64 ": the check in flight became transaction %" PRIu64
			     " with status %s, expected pending or blocked",
			     a->id, unknown->id, status_name(unknown->status));
		if (a->n_txns > 0 && unknown->id < a->txns[a->n_txns - 1].id)
			fail("agent %" PRIu64 ": the check in flight got transaction id %" PRIu64
			     ", below the acknowledged %" PRIu64,
			     a->id, unknown->id, a->txns[a->n_txns - 1].id);
		f->txn.id = unknown->id;
		f->txn.allowed = unknown->status == SC_TXN_PENDING;
		apply_check(t, a, &f->txn);
		r->applied++;
	} else if (f->op == OP_REPORT) {
		struct txn *m = &a->txns[f->txn_index];

		if ((x = find_txn_in(list, n, m->id)) == NULL)
			fail("agent %" PRIu64 ": transaction %" PRIu64 " (report in flight) is gone",
			     a->id, m->id);
		if (x->status == SC_TXN_SETTLED) {
			apply_report(t, a, m, f->txn.outcome, f->txn.charged);
			r->applied++;
		}
	}
}

static void compare_wallet(const char *what, uint64_t id, const sc_wallet *got,
                           const struct wallet_model *want, sc_micros daily, int check_daily)
{
	CHECK_EQ(got->balance, want->balance, "%s %" PRIu64 " balance", what, id);
	CHECK_EQ(got->held, want->held, "%s %" PRIu64 " held (sum of open holds' estimates)", what,
	         id);
	CHECK_EQ(got->debt, want->debt, "%s %" PRIu64 " debt", what, id);
	CHECK_EQ(got->available, want->balance - want->held, "%s %" PRIu64 " available", what, id);
	CHECK_EQ(got->budget, want->budget, "%s %" PRIu64 " budget", what, id);
	if (check_daily)
		CHECK_EQ(got->daily_spent, daily, "%s %" PRIu64 " daily_spent", what, id);
	if (got->held > got->balance)
		fail("overspend: %s %" PRIu64 " holds %lld with a balance of %lld", what, id,
		     (long long)got->held, (long long)got->balance);
}

/* Compares one agent (listing entry g, transactions list[n]) with the model. */
static void verify_agent(const struct thread_model *t, const struct agent_model *a,
                         const sc_agent *g, const sc_transaction *list, size_t n,
                         int check_daily, sc_micros *org_daily)
{
	sc_micros daily = 0;
	const sc_transaction *x;
	const struct txn *m;
	size_t k;
	unsigned j, i;

	if (strcmp(g->name, a->name) != 0 || g->org_id != t->org_id)
		fail("agent %" PRIu64 " is '%s' in org %" PRIu64 ", expected '%s' in org %" PRIu64,
		     a->id, g->name, g->org_id, a->name, t->org_id);
	CHECK_EQ(g->priority, SC_PRIORITY_NORMAL, "agent %" PRIu64 " priority", a->id);
	if (n >= 1000)
		fail("agent %" PRIu64 " has %zu transactions: more than one listing shows", a->id, n);
	for (k = 0; k < n; k++) {
		if (model_txn(a, list[k].id) == NULL)
			fail("agent %" PRIu64 ": transaction %" PRIu64 " (%s %s %lld) exists but no "
			     "client sent it (nothing was in flight for it)",
			     a->id, list[k].id, status_name(list[k].status), list[k].action,
			     (long long)list[k].estimated_cost);
	}
	for (k = 0; k < a->n_txns; k++) {
		int want;

		m = &a->txns[k];
		if ((x = find_txn_in(list, n, m->id)) == NULL)
			fail("agent %" PRIu64 ": acknowledged %s check %" PRIu64 " (%s %lld) is lost",
			     a->id, m->allowed ? "allowed" : "blocked", m->id, actions[m->action],
			     (long long)m->estimate);
		want = !m->allowed ? SC_TXN_BLOCKED : m->settled ? SC_TXN_SETTLED : SC_TXN_PENDING;
		if ((int)x->status != want)
			fail("agent %" PRIu64 ": transaction %" PRIu64 " is %s, expected %s%s", a->id,
			     m->id, status_name(x->status), status_name(want),
			     want == SC_TXN_SETTLED ? " (its report was acknowledged)" : "");
		CHECK_EQ(x->agent_id, a->id, "transaction %" PRIu64 " agent_id", m->id);
		CHECK_EQ(x->estimated_cost, m->estimate, "transaction %" PRIu64 " estimated_cost",
		         m->id);
		if (strcmp(x->action, actions[m->action]) != 0 || strcmp(x->idempotency_key, m->key))
			fail("transaction %" PRIu64 ": action '%s' key '%s', expected '%s' '%s'", m->id,
			     x->action, x->idempotency_key, actions[m->action], m->key);
		if (m->allowed)
			CHECK_EQ(x->rule_id, m->rule_id, "transaction %" PRIu64 " (%s) rule_id", m->id,
			         actions[m->action]);
		if (m->settled) {
			CHECK_EQ(x->charged, m->charged, "transaction %" PRIu64 " charged", m->id);
			if (!x->has_outcome || x->outcome != m->outcome)
				fail("transaction %" PRIu64 ": outcome %s, expected %s", m->id,
				     x->has_outcome ? sc_outcome_name(x->outcome) : "none",
				     sc_outcome_name(m->outcome));
			daily += m->charged;
		}
	}
	compare_wallet("agent", a->id, &g->wallet, &a->w, daily, check_daily);
	*org_daily += daily;

	CHECK_EQ(g->n_rules, a->n_rules, "agent %" PRIu64 " number of rules", a->id);
	for (i = 0; i < a->n_rules; i++) {
		const struct rule_model *rm = &a->rules[i];
		const sc_rule *gr = NULL;
		sc_micros spent = 0;
		int64_t count = 0;

		for (j = 0; j < g->n_rules; j++)
			if (g->rules[j].id == rm->id)
				gr = &g->rules[j];
		if (gr == NULL)
			fail("agent %" PRIu64 ": acknowledged rule %" PRIu64 " (%s) is lost", a->id,
			     rm->id, rm->name);
		if (strcmp(gr->name, rm->name) || strcmp(gr->match, patterns[rm->pattern]) ||
		    gr->max_cost_per_txn != rm->max_cost || gr->daily_spend_limit != rm->daily ||
		    gr->hourly_rate_limit != rm->hourly)
			fail("agent %" PRIu64 " rule %" PRIu64 ": %s '%s' %lld/%lld/%lld, expected "
			     "%s '%s' %lld/%lld/%lld",
			     a->id, rm->id, gr->name, gr->match, (long long)gr->max_cost_per_txn,
			     (long long)gr->daily_spend_limit, (long long)gr->hourly_rate_limit,
			     rm->name, patterns[rm->pattern], (long long)rm->max_cost,
			     (long long)rm->daily, (long long)rm->hourly);
		for (k = 0; k < a->n_txns; k++) {
			m = &a->txns[k];
			if (m->allowed && m->rule_id == rm->id) {
				count++;
				if (m->settled)
					spent += m->charged;
			}
		}
		/* The whole run is inside one hour's window (checked by the caller). */
		if (time(NULL) - run.start_time < 55 * 60)
			CHECK_EQ(gr->hourly_count, count,
			         "agent %" PRIu64 " rule %" PRIu64 " hourly_count (allowed checks "
			         "under it)",
			         a->id, rm->id);
		if (check_daily)
			CHECK_EQ(gr->daily_spent, spent,
			         "agent %" PRIu64 " rule %" PRIu64 " daily_spent", a->id, rm->id);
	}
}

/* Every transaction id appears once in all the logs together. */
static void check_ids_unique(void)
{
	uint64_t *ids = NULL;
	size_t n = 0, i, k;
	int ti;

	for (ti = 0; ti < THREADS; ti++)
		for (i = 0; i < threads[ti].n_agents; i++)
			n += threads[ti].agents[i].n_txns;
	ids = xrealloc(NULL, (n + 1) * sizeof(*ids));
	n = 0;
	for (ti = 0; ti < THREADS; ti++)
		for (i = 0; i < threads[ti].n_agents; i++)
			for (k = 0; k < threads[ti].agents[i].n_txns; k++)
				ids[n++] = threads[ti].agents[i].txns[k].id;
	if (n)
		qsort(ids, n, sizeof(*ids), u64_cmp);
	for (i = 1; i < n; i++)
		if (ids[i] == ids[i - 1])
			fail("transaction id %" PRIu64 " was given to two checks", ids[i]);
	if (n > HISTORY * 9 / 10)
		fail("%zu transactions: too close to --history %d for a complete check", n, HISTORY);
	free(ids);
}

static void verify(sc_client *c, struct cycle_result *r)
{
	int check_daily = utc_day() == run.start_day;
	sc_agent *agents;
	size_t n_agents, i, k, known = 0;
	int64_t holds_open;

	for (i = 0; i < THREADS; i++)
		r->in_flight += threads[i].inf.op != OP_NONE;
	OK(c, sc_agents_list(c, 0, &agents, &n_agents));
	if (n_agents)
		qsort(agents, n_agents, sizeof(*agents), agent_cmp);
	resolve_admin(agents, n_agents, r);
	resolve_wallets(c, agents, n_agents, r);

	for (i = 0; i < THREADS; i++) {
		struct thread_model *t = &threads[i];
		sc_micros org_daily = 0;
		sc_wallet ow;

		for (k = 0; k < t->n_agents; k++) {
			struct agent_model *a = &t->agents[k];
			const sc_agent *g = find_agent(agents, n_agents, a->id);
			sc_transaction *list;
			size_t n;

			if (g == NULL)
				fail("acknowledged agent %" PRIu64 " (%s) is lost", a->id, a->name);
			OK(c, sc_transactions_list(c, a->id, -1, 1000, &list, &n));
			if (n)
				qsort(list, n, sizeof(*list), sc_txn_cmp);
			if (t->inf.op == OP_CHECK || t->inf.op == OP_REPORT)
				resolve_txn_ops(t, k, list, n, r);
			verify_agent(t, a, g, list, n, check_daily, &org_daily);
			r->txns += a->n_txns;
			r->pending += a->n_pending;
			for (size_t j = 0; j < a->n_txns; j++)
				r->blocked += !a->txns[j].allowed;
			sc_transactions_free(list);
			known++;
		}
		OK(c, sc_org_wallet_get(c, t->org_id, &ow));
		if (!ow.limited)
			fail("org %" PRIu64 ": its wallet was funded but is not limited", t->org_id);
		compare_wallet("org", t->org_id, &ow, &t->org_w, org_daily, check_daily);
	}
	if (known != n_agents) {
		for (k = 0; k < n_agents; k++) {
			int found = 0;

			for (i = 0; i < THREADS && !found; i++) {
				size_t j;

				for (j = 0; j < threads[i].n_agents && !found; j++)
					found = threads[i].agents[j].id == agents[k].id;
			}
			if (!found)
				fail("agent %" PRIu64 " (%s) exists but no client created it",
				     agents[k].id, agents[k].name);
		}
	}
	r->agents = n_agents;
	sc_agents_free(agents);
	OK(c, sc_stat(c, "holds_open", &holds_open));
	CHECK_EQ(holds_open, r->pending, "stats holds_open");
	check_ids_unique();
}

/* ----- main ----- */

int main(void)
{
	int cycles = env_int("CRASH_CYCLES", 6);
	int min_ms = env_int("CRASH_MIN_MS", 50), max_ms = env_int("CRASH_MAX_MS", 500);
	const char *shm_mode = getenv("CRASH_DELETE_SHM");
	unsigned seed = (unsigned)env_int("CRASH_SEED", (int)((unsigned)time(NULL) ^ (unsigned)getpid()));
	unsigned main_seed = seed;
	sc_client *c;
	int cycle, i;

	signal(SIGPIPE, SIG_IGN);
	if (shm_mode == NULL || shm_mode[0] == '\0')
		shm_mode = "alternate";
	if (max_ms < min_ms)
		max_ms = min_ms;
	if (test_tmpdir(run.dir, sizeof(run.dir)) != 0)
		return 1;
	snprintf(run.shm, sizeof(run.shm), "%s/sidecard.shm", run.dir);
	snprintf(run.log, sizeof(run.log), "%s/daemon.log", run.dir);
	run.durability = getenv("CRASH_DURABILITY") ? getenv("CRASH_DURABILITY") : "strict";
	run.commit_interval = getenv("CRASH_COMMIT_INTERVAL_MS") ? getenv("CRASH_COMMIT_INTERVAL_MS")
	                                                         : "2";
	run.start_day = utc_day();
	run.start_time = time(NULL);
	printf("crash: seed %u (CRASH_SEED), %d cycles, kill after %d-%d ms, delete state.shm: %s, "
	       "durability %s\ncrash: daemon %s, directory %s\n",
	       seed, cycles, min_ms, max_ms, shm_mode, run.durability, test_daemon_bin(), run.dir);
	fflush(stdout);

	daemon_start();
	OK(NULL, sc_connect(run.d.socket, &c));
	setup(c, seed);
	sc_close(c);

	for (cycle = 1; cycle <= cycles; cycle++) {
		struct cycle_result r = { 0 };
		unsigned long acked = 0;
		int delete_shm = strcmp(shm_mode, "always") == 0 ||
		                 (strcmp(shm_mode, "alternate") == 0 && cycle % 2 == 1);
		long kill_ms = min_ms + (long)((unsigned)rand_r(&main_seed) % (unsigned)(max_ms - min_ms + 1));
		int64_t last_seq = -1, durable_seq = -1;

		run.cycle = cycle;
		__atomic_store_n(&run.killed, 0, __ATOMIC_RELEASE);
		pthread_barrier_init(&run.go, NULL, THREADS + 1);
		for (i = 0; i < THREADS; i++) {
			threads[i].inf.op = OP_NONE;
			threads[i].acked = 0;
			if (pthread_create(&threads[i].thread, NULL, thread_main, &threads[i]) != 0)
				fail("pthread_create: %s", strerror(errno));
		}
		pthread_barrier_wait(&run.go);
		test_sleep_ms(kill_ms);
		daemon_kill();
		for (i = 0; i < THREADS; i++)
			pthread_join(threads[i].thread, NULL);
		pthread_barrier_destroy(&run.go);
		for (i = 0; i < THREADS; i++) {
			if (threads[i].failed)
				fail("%s", threads[i].error);
			acked += threads[i].acked;
		}
		if (delete_shm && unlink(run.shm) != 0)
			fail("cannot delete %s: %s", run.shm, strerror(errno));

		daemon_restart();
		OK(NULL, sc_connect(run.d.socket, &c));
		verify(c, &r);
		sc_stat(c, "ledger_last_seq", &last_seq);
		sc_stat(c, "ledger_durable_seq", &durable_seq);
		sc_close(c);
		printf("cycle %d/%d: SIGKILL after %ld ms%s; %lu acknowledged, %u in flight "
		       "(%u applied); %zu agents, %zu transactions (%zu blocked), %zu open holds; "
		       "ledger seq %lld durable %lld: ok\n",
		       cycle, cycles, kill_ms, delete_shm ? ", state.shm deleted" : "", acked,
		       r.in_flight, r.applied, r.agents, r.txns, r.blocked, r.pending,
		       (long long)last_seq,
		       (long long)durable_seq);
		fflush(stdout);
	}
	run.cycle = cycles + 1;
	daemon_stop();
	if (env_int("CRASH_KEEP", 0))
		printf("crash: directory kept: %s\n", run.dir);
	else
		test_rm_tree(run.dir);
	printf("%d passed, 0 failed\n", cycles);
	return 0;
}
