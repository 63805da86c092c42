/*
 * ctl_demo.c: `sidecardctl demo`, what a newcomer sees first. It starts a
 * real sidecard in a private temporary directory with its clock sped up
 * (--time-scale), creates one org with a funded shared wallet and five
 * agents with different priorities and rules, lets each agent act for an
 * hour of simulated time, shows the counts as they grow and ends with a
 * table of what each agent was allowed, blocked and charged, its kredit
 * score and status, and the fleet overview.
 *
 * The agents tell one story each: "researcher" makes many small LLM calls in
 * tasks (rule and task caps), "booker" books flights, some over its rule's
 * cap, and is topped up (high priority), "scraper" runs into its hourly
 * rate limit, "oncall" (critical) goes past limits with warnings, and
 * "rogue" fails, overruns, abandons holds and asks for 20-100 times its
 * usual cost until its score throttles and then freezes it. Each agent draws
 * from its own seeded pseudo-random stream (splitmix64), so a run has the
 * same shape every time; exact counts vary a little with timing.
 *
 * Every connection to that daemon is made without a token, whatever
 * --token or $SIDECARD_TOKEN say: the demo's user runs the daemon and so is
 * its administrator, and a token meant for another daemon would be refused.
 *
 * Threads: the main thread starts and stops the daemon, sets the fleet up,
 * shows progress and prints the result; one thread per agent acts with its
 * own sc_client (libsidecard: one connection per thread). They share the
 * atomic counters of struct demo and the stop flag, which is under `lock`.
 * Agents write their own struct agent; the main thread reads it after
 * joining them. SIGINT and SIGTERM are blocked in every thread and taken by
 * the main thread with sigtimedwait(), so Ctrl-C stops the simulation and
 * still prints the table so far; the daemon runs in its own process group,
 * out of reach of the terminal's Ctrl-C, until we stop it.
 *
 * Ownership: the temporary directory and the daemon child are the main
 * thread's and are removed and reaped on every way out.
 */
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"

#define N_AGENTS 5
#define REASONS_MAX 12
#define USD(d) ((sc_micros)(d) * SC_MICROS_PER_USD)
#define CENTS(c) ((sc_micros)(c) * 10000)
#define SIM_S INT64_C(1000000) /* one simulated second, in microseconds */
#define HOLD_TTL "240" /* seconds of daemon time: unreported holds expire within the hour */
#define ORG_FUNDS USD(250)

struct demo;

struct reason_count {
	char reason[SC_REASON_MAX + 1];
	uint64_t n;
};

struct agent {
	const struct agent_def *def;
	struct demo *demo;
	pthread_t thread;
	sc_client *c;
	uint64_t id, rng;
	int64_t created_at, at; /* daemon time at creation; the next action, simulated us */
	uint64_t checks, allowed, blocked, warned;
	struct reason_count reasons[REASONS_MAX];
	size_t n_reasons;
	char last_reason[SC_REASON_MAX + 1]; /* of the last blocked check */
	unsigned task_no, task_left; /* researcher and scraper: the task or crawl in progress */
	char task[SC_KEY_MAX + 1];
	sc_micros retry_cost; /* rogue: the request it retries */
	sc_score score;
	sc_micros spend;
};

/* One agent: how it is set up, and one action of its behaviour. */
struct agent_def {
	const char *name;
	enum sc_priority priority;
	sc_micros balance, budget, max_per_txn;
	sc_rule rule;
	int (*act)(struct agent *a); /* 0, or -1 when a call failed (the error is set) */
};

struct demo {
	int64_t end_us, speed;
	struct timespec start; /* CLOCK_MONOTONIC at simulated time 0 */
	pthread_mutex_t lock;
	pthread_cond_t wake;
	int stop;
	char error[320];
	char sock[sizeof(((struct sockaddr_un *)0)->sun_path)];
	uint64_t checks, allowed, blocked; /* __atomic, across agent threads */
	struct agent agents[N_AGENTS];
};

/* ----- simulated time and randomness ----- */

static int64_t sim_now(const struct demo *d)
{
	struct timespec ts;
	int64_t ns;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ns = (ts.tv_sec - d->start.tv_sec) * INT64_C(1000000000) + (ts.tv_nsec - d->start.tv_nsec);
	return ns / 1000 * d->speed;
}

static int stopped(struct demo *d)
{
	int s;

	pthread_mutex_lock(&d->lock);
	s = d->stop;
	pthread_mutex_unlock(&d->lock);
	return s;
}

/* Ends the simulation; msg, if not NULL, is why it failed (the first one is kept). */
static void stop_all(struct demo *d, const char *msg)
{
	pthread_mutex_lock(&d->lock);
	if (msg && !d->error[0])
		snprintf(d->error, sizeof(d->error), "%s", msg);
	d->stop = 1;
	pthread_cond_broadcast(&d->wake);
	pthread_mutex_unlock(&d->lock);
}

/* Sleeps until simulated time t (real time t / speed after the start); 1 if stopped. */
static int sleep_until(struct demo *d, int64_t t)
{
	int64_t ns = d->start.tv_nsec + t * 1000 / d->speed; /* < 2^63 for up to 1440 minutes */
	struct timespec dl = { d->start.tv_sec + ns / 1000000000, ns % 1000000000 };
	int s;

	pthread_mutex_lock(&d->lock);
	while (!d->stop && pthread_cond_timedwait(&d->wake, &d->lock, &dl) != ETIMEDOUT)
		;
	s = d->stop;
	pthread_mutex_unlock(&d->lock);
	return s;
}

/* splitmix64: small, fast, and good enough to give each agent its own stream. */
static uint64_t next_rand(struct agent *a)
{
	uint64_t z = (a->rng += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

/* Uniform in [lo, hi]. */
static int64_t between(struct agent *a, int64_t lo, int64_t hi)
{
	return lo + (int64_t)(next_rand(a) % (uint64_t)(hi - lo + 1));
}

/* A price in whole cents from lo to hi cents: the table then shows plain dollars and cents. */
static sc_micros price(struct agent *a, int64_t lo, int64_t hi)
{
	return CENTS(between(a, lo, hi));
}

/* pct percent of an amount, to the nearest cent. */
static sc_micros percent(sc_micros m, int64_t pct)
{
	return (m * pct / 100 + CENTS(1) / 2) / CENTS(1) * CENTS(1);
}

/* True with probability pct percent. */
static int chance(struct agent *a, int pct)
{
	return (int)(next_rand(a) % 100) < pct;
}

/* ----- the calls an agent makes, counted ----- */

static int call_failed(struct agent *a, const char *what, int rc)
{
	char msg[320];
	const char *m = sc_last_error(a->c);

	snprintf(msg, sizeof(msg), "%s: %s: %s", a->def->name, what, m[0] ? m : sc_strerror(rc));
	stop_all(a->demo, msg);
	return -1;
}

/* Counts a block reason; the reasons stay sorted by count, most first. */
static void count_reason(struct agent *a, const char *reason)
{
	struct reason_count t;
	size_t i;

	for (i = 0; i < a->n_reasons && strcmp(a->reasons[i].reason, reason) != 0; i++)
		;
	if (i == a->n_reasons) {
		if (i == REASONS_MAX)
			return;
		snprintf(a->reasons[i].reason, sizeof(a->reasons[i].reason), "%s", reason);
		a->n_reasons++;
	}
	for (a->reasons[i].n++; i > 0 && a->reasons[i].n > a->reasons[i - 1].n; i--) {
		t = a->reasons[i];
		a->reasons[i] = a->reasons[i - 1];
		a->reasons[i - 1] = t;
	}
}

/* Asks before an action: 1 allowed (the transaction in *txn), 0 blocked, -1 failed. */
static int check(struct agent *a, const char *action, sc_micros cost, const char *task,
                 uint64_t *txn)
{
	sc_check_req req = { .agent_id = a->id, .action = action, .estimated_cost = cost,
		             .type = "api_call", .task_id = task };
	struct demo *d = a->demo;
	sc_decision dec;
	int rc = sc_check(a->c, &req, &dec);

	if (rc != 0)
		return call_failed(a, "check", rc);
	a->checks++;
	__atomic_add_fetch(&d->checks, 1, __ATOMIC_RELAXED);
	if (!dec.allowed) {
		a->blocked++;
		__atomic_add_fetch(&d->blocked, 1, __ATOMIC_RELAXED);
		count_reason(a, dec.block_reason);
		memcpy(a->last_reason, dec.block_reason, sizeof(a->last_reason));
		return 0;
	}
	a->allowed++;
	a->warned += dec.n_warnings > 0;
	__atomic_add_fetch(&d->allowed, 1, __ATOMIC_RELAXED);
	*txn = dec.transaction_id;
	return 1;
}

/* Settles a hold; one that expired while this thread was late is no failure. */
static int report(struct agent *a, uint64_t txn, enum sc_outcome outcome, sc_micros actual)
{
	sc_settlement st;
	int rc = sc_report(a->c, txn, outcome, 1, actual, &st);

	return rc == 0 || rc == SC_EINVAL ? 0 : call_failed(a, "report", rc);
}

/* ----- behaviours: one action each, which also sets the time of the next ----- */

static int act_researcher(struct agent *a)
{
	sc_micros cost;
	uint64_t txn;
	int r;

	if (a->task_left == 0) {
		a->task_no++;
		a->task_left = (unsigned)(a->task_no % 5 == 4 ? between(a, 25, 40) : between(a, 4, 12));
		snprintf(a->task, sizeof(a->task), "research-%u", a->task_no);
	}
	/* Every fifth task is a deep dive of dearer calls, which runs into the $5 task cap. */
	cost = a->task_no % 5 == 4 ? price(a, 15, 40) : price(a, 2, 30);
	if (chance(a, 4)) /* a long context: over the rule's $0.50 per call */
		cost = price(a, 55, 120);
	r = check(a, "openai.chat", cost, a->task, &txn);
	if (r < 0)
		return -1;
	if (r == 1 && (r = chance(a, 3) ? report(a, txn, SC_OUTCOME_FAILURE, 0)
	                               : report(a, txn, SC_OUTCOME_SUCCESS,
	                                        percent(cost, between(a, 85, 100)))) != 0)
		return -1;
	/* A task at its cap is given up; the next starts after a pause. */
	a->task_left = r == 0 && strcmp(a->last_reason, "task:max_usage") == 0 ? 0 : a->task_left - 1;
	a->at += a->task_left ? between(a, 6, 18) * SIM_S : between(a, 30, 100) * SIM_S;
	return 0;
}

static int act_booker(struct agent *a)
{
	int booking = chance(a, 40);
	sc_micros cost = booking ? price(a, 600, 3800) : price(a, 1, 5);
	uint64_t txn;
	int r = check(a, booking ? "flight.booking" : "flight.search", cost, NULL, &txn);

	if (r < 0 || (r == 1 && report(a, txn, SC_OUTCOME_SUCCESS, cost) != 0))
		return -1;
	a->at += between(a, 50, 160) * SIM_S;
	return 0;
}

static int act_scraper(struct agent *a)
{
	sc_micros cost = price(a, 1, 3);
	uint64_t txn;
	int r;

	if (a->task_left == 0)
		a->task_left = (unsigned)between(a, 5, 12);
	r = check(a, "web.fetch", cost, NULL, &txn);
	if (r < 0 || (r == 1 && report(a, txn, chance(a, 5) ? SC_OUTCOME_FAILURE : SC_OUTCOME_SUCCESS,
	                               cost) != 0))
		return -1;
	a->task_left--;
	a->at += a->task_left ? between(a, 3, 10) * SIM_S : between(a, 120, 300) * SIM_S;
	return 0;
}

static int act_oncall(struct agent *a)
{
	int incident = chance(a, 20); /* a remediation past the rule's and the wallet's caps */
	sc_micros cost = incident ? price(a, 250, 600) : price(a, 30, 150);
	uint64_t txn;
	int r = check(a, incident ? "ops.remediate" : "ops.diagnose", cost, NULL, &txn);

	if (r < 0 || (r == 1 && report(a, txn, SC_OUTCOME_SUCCESS, cost) != 0))
		return -1;
	a->at += between(a, 60, 240) * SIM_S;
	return 0;
}

/*
 * The rogue fails nearly always, overruns, abandons most holds and, once in
 * five, asks 20 to 100 times its usual cost; a blocked request is retried
 * at once, several times. Its score falls below 500 (throttled), then 400
 * (score_too_low); its abandoned holds expire and its retries are blocked
 * until it falls below 350 and the daemon freezes it.
 */
static int act_rogue(struct agent *a)
{
	int fresh = a->task_left == 0, anomaly, r;
	sc_micros cost;
	uint64_t txn;

	if (!fresh) {
		a->task_left--;
		cost = a->retry_cost;
	} else if (a->checks >= 5 && chance(a, 20)) {
		cost = price(a, 5, 10) * between(a, 20, 100);
	} else {
		cost = price(a, 2, 10);
	}
	anomaly = cost > CENTS(10);
	r = check(a, "tools.exec", cost, NULL, &txn);
	if (r < 0)
		return -1;
	if (r == 0) {
		if (fresh) {
			a->retry_cost = cost;
			a->task_left = (unsigned)between(a, 5, 8);
		}
		a->at += (a->task_left ? between(a, 1, 2) : between(a, 15, 40)) * SIM_S;
		return 0;
	}
	a->task_left = 0;
	/* Its outsized requests fail at no cost; the others mostly fail and overrun. */
	if ((anomaly || !chance(a, 60)) &&
	    report(a, txn, anomaly || chance(a, 95) ? SC_OUTCOME_FAILURE : SC_OUTCOME_SUCCESS,
	           anomaly ? 0 : percent(cost, chance(a, 95) ? between(a, 150, 300) : 100)) != 0)
		return -1;
	a->at += between(a, 15, 40) * SIM_S;
	return 0;
}

static const struct agent_def agent_defs[N_AGENTS] = {
	{ "researcher", SC_PRIORITY_NORMAL, USD(40), 0, 0,
	  { .name = "openai", .match = "openai.*", .max_cost_per_txn = CENTS(50),
	    .hourly_rate_limit = 120 },
	  act_researcher },
	{ "booker", SC_PRIORITY_HIGH, USD(40), USD(100), 0,
	  { .name = "flights", .match = "flight.booking", .max_cost_per_txn = USD(25),
	    .daily_spend_limit = USD(60) },
	  act_booker },
	{ "scraper", SC_PRIORITY_NORMAL, USD(10), 0, 0,
	  { .name = "web", .match = "web.*", .max_cost_per_txn = CENTS(10), .hourly_rate_limit = 40 },
	  act_scraper },
	{ "oncall", SC_PRIORITY_CRITICAL, USD(20), 0, USD(5),
	  { .name = "ops", .match = "ops.*", .max_cost_per_txn = USD(2), .hourly_rate_limit = 12 },
	  act_oncall },
	{ "rogue", SC_PRIORITY_NORMAL, USD(40), 0, 0,
	  { .name = "tools", .match = "tools.*", .max_cost_per_txn = USD(4) },
	  act_rogue },
};

static void *agent_main(void *arg)
{
	struct agent *a = arg;

	a->at = between(a, 0, 10) * SIM_S;
	while (a->at < a->demo->end_us && !sleep_until(a->demo, a->at))
		if (a->def->act(a) != 0)
			break;
	return NULL;
}

/* ----- the daemon: found, started in its own directory, stopped ----- */

/*
 * The sidecard to run: --daemon, else the one beside this program, else
 * ../sidecard/sidecard from it (the build tree), else "sidecard" on $PATH.
 * In the build tree this program runs from libtool's .libs directory, which
 * counts as the directory it is in.
 */
static void find_daemon(const struct opts *o, char *buf, size_t len)
{
	static const char *const rel[] = { "sidecard", "../sidecard/sidecard" };
	char self[PATH_MAX], *slash;
	ssize_t n;
	size_t i;

	if (o->given & BIT(O_DAEMON)) {
		snprintf(buf, len, "%s", o->str[O_DAEMON]);
		return;
	}
	snprintf(buf, len, "sidecard");
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		return;
	self[n] = '\0';
	if ((slash = strrchr(self, '/')) == NULL)
		return;
	*slash = '\0';
	n = slash - self;
	if (n >= 6 && strcmp(self + n - 6, "/.libs") == 0)
		self[n - 6] = '\0';
	for (i = 0; i < COUNT(rel); i++)
		if ((size_t)snprintf(buf, len, "%s/%s", self, rel[i]) < len && access(buf, X_OK) == 0)
			return;
	snprintf(buf, len, "sidecard");
}

/*
 * Starts the daemon in its own process group (the terminal's Ctrl-C is ours
 * to handle), with our blocked signals unblocked again, its stdout on our
 * stderr (our stdout may be the JSON) and a SIGTERM if we die first.
 */
static pid_t start_daemon(const char *path, const char *dir, const char *sock, int64_t speed)
{
	char state[PATH_MAX + 8], scale[24];
	pid_t parent = getpid(), pid;
	sigset_t none;

	snprintf(state, sizeof(state), "%s/state", dir);
	snprintf(scale, sizeof(scale), "%" PRId64, speed);
	fflush(NULL);
	pid = fork();
	if (pid != 0)
		return pid;
	setpgid(0, 0);
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != parent)
		_exit(1);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	dup2(STDERR_FILENO, STDOUT_FILENO);
	execlp(path, path, "--socket", sock, "--state-dir", state, "--time-scale", scale,
	       "--hold-ttl", HOLD_TTL, "--log-level", "error", (char *)NULL);
	fprintf(stderr, "sidecardctl: demo: cannot run %s: %s (give the daemon with --daemon PATH)\n",
	        path, strerror(errno));
	_exit(127);
}

/* SIGTERM, then SIGKILL if it has not stopped within 5 s. */
static void stop_daemon(pid_t pid)
{
	int i, status;

	kill(pid, SIGTERM);
	for (i = 0; i < 250; i++) {
		if (waitpid(pid, &status, WNOHANG) != 0)
			return;
		usleep(20000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	remove(path);
	return 0;
}

/* Waits up to one sleep for SIGINT or SIGTERM: 1 if one came. */
static int signalled(const sigset_t *sigs, long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };

	return sigtimedwait(sigs, NULL, &ts) > 0;
}

/* Connects once the daemon answers: 0, 1 on Ctrl-C, or EXIT_ERROR once said why. */
static int wait_ready(pid_t pid, const char *path, const char *sock, const sigset_t *sigs,
                      sc_client **c)
{
	int i, status;

	for (i = 0; i < 200; i++) {
		if (sc_connect_token(sock, NULL, c, NULL, 0) == 0)
			return 0;
		if (waitpid(pid, &status, WNOHANG) == pid) {
			if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
				return EXIT_ERROR; /* the child said why */
			fprintf(stderr, "sidecardctl: demo: the daemon %s did not start (it %s %d; see its "
			                "message above)\n",
			        path, WIFEXITED(status) ? "exited with status" : "was killed by signal",
			        WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
			return EXIT_ERROR;
		}
		if (signalled(sigs, 50))
			return 1;
	}
	fprintf(stderr, "sidecardctl: demo: the daemon %s did not answer on %s within 10 s\n", path,
	        sock);
	return EXIT_ERROR;
}

/* ----- the fleet, the run and the result ----- */

static int setup_failed(sc_client *c, const char *what, int rc)
{
	const char *m = sc_last_error(c);

	fprintf(stderr, "sidecardctl: demo: %s: %s\n", what, m[0] ? m : sc_strerror(rc));
	return EXIT_ERROR;
}

static int setup(sc_client *c, struct demo *d, uint64_t seed)
{
	sc_wallet_update u = { .set = SC_WALLET_SET_BALANCE, .balance = ORG_FUNDS };
	sc_wallet w;
	sc_org org;
	sc_agent ag;
	size_t i;
	int rc;

	if ((rc = sc_orgs_create(c, "demo", &org)) != 0)
		return setup_failed(c, "orgs create", rc);
	if ((rc = sc_org_wallet_update(c, org.id, &u, &w)) != 0)
		return setup_failed(c, "wallet update", rc);
	for (i = 0; i < N_AGENTS; i++) {
		const struct agent_def *def = &agent_defs[i];
		struct agent *a = &d->agents[i];

		u.set = SC_WALLET_SET_BALANCE | (def->budget ? SC_WALLET_SET_BUDGET : 0) |
		        (def->max_per_txn ? SC_WALLET_SET_MAX_PER_TXN : 0);
		u.balance = def->balance;
		u.budget = def->budget;
		u.max_per_txn = def->max_per_txn;
		rc = sc_agents_create(c, "demo", def->name, def->priority, &u, &def->rule, 1, &ag);
		if (rc != 0)
			return setup_failed(c, "agents create", rc);
		a->def = def;
		a->demo = d;
		a->id = ag.id;
		a->created_at = ag.created_at;
		a->rng = seed ^ (UINT64_C(0x9e3779b97f4a7c15) * (i + 1));
	}
	return 0;
}

static void progress(const struct demo *d, FILE *f, int tty, int64_t minute, int64_t minutes,
                     sc_micros spend)
{
	char usd[32];

	ctl_usd(spend, usd, sizeof(usd));
	fprintf(f, "%s[%3" PRId64 "/%" PRId64 " min] checks %" PRIu64 "  allowed %" PRIu64
	           "  blocked %" PRIu64 "  spend %s%s",
	        tty ? "\r" : "", minute, minutes, __atomic_load_n(&d->checks, __ATOMIC_RELAXED),
	        __atomic_load_n(&d->allowed, __ATOMIC_RELAXED),
	        __atomic_load_n(&d->blocked, __ATOMIC_RELAXED), usd, tty ? "" : "\n");
	fflush(f);
}

/*
 * Runs the agents until the simulated time is up, Ctrl-C or a failure,
 * showing progress on f: on a terminal one line rewritten four times a
 * second, else a line every ten simulated minutes. Sets *minute to the
 * simulated minutes reached and *interrupted on Ctrl-C. Returns 0, or
 * EXIT_ERROR once said why.
 */
static int run(sc_client *c, struct demo *d, const sigset_t *sigs, FILE *f, int64_t minutes,
               int64_t *minute, int *interrupted)
{
	int tty = isatty(fileno(f)), rc = 0;
	int64_t marked = 0, now = 0;
	sc_fleet fl = { 0 };
	size_t i, started;

	clock_gettime(CLOCK_MONOTONIC, &d->start);
	for (started = 0; started < N_AGENTS; started++) {
		struct agent *a = &d->agents[started];

		if ((rc = sc_connect_token(d->sock, NULL, &a->c, NULL, 0)) != 0) {
			stop_all(d, sc_strerror(rc));
			break;
		}
		if (pthread_create(&a->thread, NULL, agent_main, a) != 0) {
			sc_close(a->c);
			stop_all(d, "cannot start a thread");
			break;
		}
	}
	while (!stopped(d) && (now = sim_now(d)) < d->end_us) {
		if (signalled(sigs, 250)) {
			*interrupted = 1;
			break;
		}
		if ((rc = sc_fleet_get(c, &fl)) != 0) {
			stop_all(d, sc_last_error(c)[0] ? sc_last_error(c) : sc_strerror(rc));
			break;
		}
		now = sim_now(d);
		if (tty)
			progress(d, f, 1, now / (60 * SIM_S), minutes, fl.total_spend);
		for (; !tty && (marked + 10) * 60 * SIM_S <= now && marked + 10 < minutes; marked += 10)
			progress(d, f, 0, marked + 10, minutes, fl.total_spend);
	}
	stop_all(d, NULL);
	for (i = 0; i < started; i++) {
		pthread_join(d->agents[i].thread, NULL);
		sc_close(d->agents[i].c);
	}
	*minute = now < d->end_us ? now / (60 * SIM_S) : minutes;
	if (!d->error[0] && (rc = sc_fleet_get(c, &fl)) != 0)
		stop_all(d, sc_strerror(rc));
	progress(d, f, tty, *minute, minutes, fl.total_spend);
	if (tty)
		fputc('\n', f);
	if (d->error[0]) {
		fprintf(stderr, "sidecardctl: demo: %s\n", d->error);
		return EXIT_ERROR;
	}
	return 0;
}

/* What the daemon says of each agent (score, status, spend) and of the fleet. */
static int collect(sc_client *c, struct demo *d, sc_fleet *fl)
{
	sc_txn_summary sum;
	sc_txn_filter f;
	size_t i;
	int rc;

	for (i = 0; i < N_AGENTS; i++) {
		struct agent *a = &d->agents[i];

		sc_txn_filter_init(&f);
		f.agent_id = a->id;
		if ((rc = sc_score_get(c, a->id, &a->score)) != 0 ||
		    (rc = sc_transactions_summary(c, &f, &sum)) != 0)
			return setup_failed(c, a->def->name, rc);
		a->spend = sum.charged;
	}
	if ((rc = sc_fleet_get(c, fl)) != 0)
		return setup_failed(c, "fleet", rc);
	return 0;
}

/* Prints an agent's automatic status changes, at the simulated minute each happened. */
static int status_changes(sc_client *c, const struct agent *a, int json)
{
	sc_event *ev;
	size_t n, i, k = 0;
	int rc = sc_agents_events(c, a->id, 100, &ev, &n);

	if (rc != 0)
		return setup_failed(c, "agents events", rc);
	for (i = n; i-- > 0;) {
		int64_t min = (ev[i].time - a->created_at) / (60 * SIM_S);

		if (ev[i].type != SC_EVENT_STATUS_CHANGE)
			continue;
		if (json)
			printf("%s{\"minute\": %" PRId64 ", \"from\": \"%s\", \"to\": \"%s\", "
			       "\"score\": %d}",
			       k++ ? ", " : "", min, sc_status_name(ev[i].from), sc_status_name(ev[i].to),
			       ev[i].score);
		else
			printf("%s%s at minute %" PRId64 " (score %d)", k++ ? ", " : " ",
			       sc_status_name(ev[i].to), min, ev[i].score);
	}
	sc_events_free(ev);
	return 0;
}

static int print_json(sc_client *c, const struct ctx *x, struct demo *d, const sc_fleet *fl,
                      int64_t minute, int64_t minutes, uint64_t seed, int interrupted)
{
	size_t i, k;
	int rc;

	printf("{\"minutes\": %" PRId64 ", \"simulated_minutes\": %" PRId64 ", \"speed\": %" PRId64
	       ", \"seed\": %" PRIu64 ", \"interrupted\": %s, \"org_funds\": %" PRId64
	       ", \"agents\": [",
	       minutes, minute, d->speed, seed, interrupted ? "true" : "false", ORG_FUNDS);
	for (i = 0; i < N_AGENTS; i++) {
		const struct agent *a = &d->agents[i];

		printf("%s\n {\"name\": \"%s\", \"agent_id\": %" PRIu64 ", \"priority\": \"%s\", "
		       "\"checks\": %" PRIu64 ", \"allowed\": %" PRIu64 ", \"blocked\": %" PRIu64
		       ", \"allowed_past_limits\": %" PRIu64 ", \"block_reasons\": {",
		       i ? "," : "", a->def->name, a->id, sc_priority_name(a->def->priority), a->checks,
		       a->allowed, a->blocked, a->warned);
		for (k = 0; k < a->n_reasons; k++) {
			printf("%s", k ? ", " : "");
			ctl_json_str(a->reasons[k].reason);
			printf(": %" PRIu64, a->reasons[k].n);
		}
		printf("}, \"spend\": %" PRId64 ", \"score\": %d, \"status\": \"%s\", "
		       "\"status_changes\": [",
		       a->spend, a->score.score, sc_status_name(a->score.status));
		if ((rc = status_changes(c, a, 1)) != 0)
			return rc;
		printf("]}");
	}
	printf("],\n \"fleet\": ");
	ctl_show(x, ctl_fleet_out, fl);
	printf("}\n");
	return 0;
}

static int print_table(sc_client *c, struct demo *d, const sc_fleet *fl, int64_t minute,
                       int64_t minutes, uint64_t seed, int interrupted)
{
	char usd[32], org[32];
	size_t i, k;
	int rc;

	ctl_usd(ORG_FUNDS, org, sizeof(org));
	printf("\nsidecard demo: %" PRId64 " of %" PRId64 " simulated minutes at %" PRId64
	       "x (seed %" PRIu64 ")%s; five agents of org \"demo\", whose shared wallet holds %s\n\n",
	       minute, minutes, d->speed, seed, interrupted ? ", stopped by Ctrl-C" : "", org);
	printf("%-10s  %-8s  %6s  %7s  %7s  %9s  %5s  %-9s  %s\n", "AGENT", "PRIORITY", "CHECKS",
	       "ALLOWED", "BLOCKED", "SPEND", "SCORE", "STATUS", "BLOCKED BY (most first)");
	for (i = 0; i < N_AGENTS; i++) {
		const struct agent *a = &d->agents[i];

		ctl_usd(a->spend, usd, sizeof(usd));
		printf("%-10s  %-8s  %6" PRIu64 "  %7" PRIu64 "  %7" PRIu64 "  %9s  %5d  %-9s  ",
		       a->def->name, sc_priority_name(a->def->priority), a->checks, a->allowed,
		       a->blocked, usd, a->score.score, sc_status_name(a->score.status));
		for (k = 0; k < a->n_reasons && k < 3; k++)
			printf("%s%s %" PRIu64, k ? ", " : "", a->reasons[k].reason, a->reasons[k].n);
		if (a->n_reasons > 3)
			printf(", ...");
		if (a->warned)
			printf("%s%" PRIu64 " allowed past a limit (critical)", a->n_reasons ? "; " : "",
			       a->warned);
		if (a->n_reasons == 0 && a->warned == 0)
			printf("-");
		printf("\n");
	}
	ctl_usd(fl->total_spend, usd, sizeof(usd));
	printf("\nfleet: %" PRIu64 " agents (%" PRIu64 " active, %" PRIu64 " throttled, %" PRIu64
	       " frozen); spend %s; blocked by risk controls: %" PRIu64 "; anomalies: %" PRIu64
	       "; average score %d\n",
	       fl->total_agents, fl->active_agents, fl->throttled_agents, fl->frozen_agents, usd,
	       fl->risk_events_blocked, fl->anomalies, fl->avg_credit_score);
	for (i = 0; i < N_AGENTS; i++) {
		const struct agent *a = &d->agents[i];

		if (a->def->act == act_rogue || a->score.status != SC_STATUS_ACTIVE) {
			printf("%s:", a->def->name);
			if ((rc = status_changes(c, a, 0)) != 0)
				return rc;
			printf("%s\n", a->score.status == SC_STATUS_ACTIVE ? " still active" : "");
		}
	}
	return 0;
}

/* The demo's options: 0, or EXIT_ERROR once said which is wrong. */
static int demo_options(const struct ctx *x, const struct opts *o, int64_t *minutes,
                        int64_t *speed, uint64_t *seed)
{
	*minutes = (o->given & BIT(O_MINUTES)) ? o->num[O_MINUTES] : 60;
	*speed = (o->given & BIT(O_SPEED)) ? o->num[O_SPEED] : 120;
	*seed = (o->given & BIT(O_SEED)) ? (uint64_t)o->num[O_SEED] : 1;
	if (*minutes < 1 || *minutes > 1440)
		return ctl_usage_error(x, "--minutes: must be 1 to 1440");
	if (*speed < 1 || *speed > 100000)
		return ctl_usage_error(x, "--speed: must be 1 to 100000");
	return 0;
}

int ctl_demo(struct ctx *x, const struct opts *o)
{
	static struct demo d;
	char path[PATH_MAX], dir[PATH_MAX];
	const char *tmp = getenv("TMPDIR");
	int64_t minutes, minute = 0;
	int rc, interrupted = 0;
	pthread_condattr_t ca;
	sc_client *c = NULL;
	uint64_t seed;
	sc_fleet fl;
	sigset_t sigs;
	pid_t pid;

	if ((rc = demo_options(x, o, &minutes, &d.speed, &seed)) != 0)
		return rc;
	d.end_us = minutes * 60 * SIM_S;
	find_daemon(o, path, sizeof(path));
	snprintf(dir, sizeof(dir), "%s/sidecard-demo.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (mkdtemp(dir) == NULL) {
		fprintf(stderr, "sidecardctl: demo: %s: %s\n", dir, strerror(errno));
		return EXIT_ERROR;
	}
	if ((size_t)snprintf(d.sock, sizeof(d.sock), "%s/sock", dir) >= sizeof(d.sock)) {
		fprintf(stderr, "sidecardctl: demo: %s: too long for a socket path (set TMPDIR)\n", dir);
		rmdir(dir);
		return EXIT_ERROR;
	}
	pthread_mutex_init(&d.lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&d.wake, &ca);
	pthread_condattr_destroy(&ca);
	/* Blocked here, before the daemon and the agents exist: only sigtimedwait() takes them. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	pid = start_daemon(path, dir, d.sock, d.speed);
	if (pid < 0) {
		fprintf(stderr, "sidecardctl: demo: fork: %s\n", strerror(errno));
		rc = EXIT_ERROR;
	} else if ((rc = wait_ready(pid, path, d.sock, &sigs, &c)) == 0 &&
	           (rc = setup(c, &d, seed)) == 0 &&
	           (rc = run(c, &d, &sigs, x->json ? stderr : stdout, minutes, &minute,
	                     &interrupted)) == 0 &&
	           (rc = collect(c, &d, &fl)) == 0) {
		rc = x->json ? print_json(c, x, &d, &fl, minute, minutes, seed, interrupted)
		             : print_table(c, &d, &fl, minute, minutes, seed, interrupted);
	}
	if (rc == 1) /* Ctrl-C before the daemon answered */
		rc = 0;
	sc_close(c);
	if (pid > 0)
		stop_daemon(pid);
	nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	/* SIGINT and SIGTERM stay blocked: one still pending must not cut the exit short. */
	return rc;
}
