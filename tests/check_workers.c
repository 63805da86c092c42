/*
 * check_workers.c: the daemon with worker threads (--workers 2), end to end
 * through libsidecard and raw sockets, against the real daemon started as a
 * child process (tests/daemon.c).
 *
 * What is proven: many connections, spread over both workers, racing checks
 * and reports against agents that share one limited org wallet never take
 * committed plus held past the org's balance, an agent's daily limit or a
 * rule's hourly count, and the final balances equal the clients' own tally;
 * a restart that must rebuild the state from the ledger those two workers
 * wrote (the segment is deleted) replays every record to its recorded
 * result and lands on exactly the same wallets, rules and scores; in strict
 * durability every request is answered, and a SIGTERM under load drains
 * both workers, exits 0 and loses no acknowledged check; an alert raised by
 * a connection of one worker reaches a subscriber served by the other; and
 * clients that vanish with pipelined requests in flight (strict, so their
 * replies are held) harm nothing.
 *
 * Connections go to the worker serving the fewest, ties round robin, so two
 * connections opened one after the other land on different workers: the
 * alert test raises an alert from each of two such connections, one of
 * which is necessarily served by another worker than the subscriber.
 *
 * Threads: the Check runner forks each test; the client threads record
 * results and never call ck_assert (only the test's main thread asserts).
 * Every test is bounded by Check's timeout and by test_daemon_timeout().
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <msgpack.h>

#include "client_fixture.h"
#include "daemon.h"
#include "sidecard.h"
#include "testutil.h"

#define USD(x) ((sc_micros)((x) * SC_MICROS_PER_USD))
#define CENTS(x) ((sc_micros)(x) * 10000)
#define TEST_TIMEOUT_S 120

static struct test_daemon d;
static sc_client *c;

#define OK(call) TEST_OK(c, call)

static void start(const char *durability)
{
	const char *extra[] = { "--workers", "2", "--durability", durability, "--hold-ttl", "3600",
		                NULL };
	static const char *keep[8];

	memcpy(keep, extra, sizeof(extra));
	test_client_start(&d, &c, keep, TEST_TIMEOUT_S);
}

static void stop(void)
{
	test_client_stop(&d, &c);
}

static uint64_t new_org(const char *name, sc_micros balance)
{
	sc_wallet_update u = { .set = SC_WALLET_SET_BALANCE, .balance = balance };
	sc_wallet w;
	sc_org o;

	OK(sc_orgs_create(c, name, &o));
	if (balance)
		OK(sc_org_wallet_update(c, o.id, &u, &w));
	return o.id;
}

static uint64_t new_agent(const char *org, const char *name, sc_micros balance, sc_micros daily,
                          const sc_rule *rule)
{
	sc_wallet_update u = { .set = SC_WALLET_SET_BALANCE | SC_WALLET_SET_DAILY_SPEND_LIMIT,
		               .balance = balance,
		               .daily_spend_limit = daily };
	sc_agent a;

	OK(sc_agents_create(c, org, name, SC_PRIORITY_NORMAL, &u, rule, rule ? 1 : 0, &a));
	return a.id;
}

/* ----- many connections over a shared org wallet ----- */

#define AGENTS 6
#define THREADS 12 /* two connections per agent */
#define CHECKS 150
#define ORG_BALANCE USD(20)
#define AGENT_DAILY USD(6)
#define HOURLY 60

struct attempt {
	uint64_t txn;
	sc_micros estimate, charged;
	int allowed, reported;
};

struct client {
	pthread_t thread;
	uint64_t agent;
	unsigned seed;
	pthread_barrier_t *go;
	struct attempt a[CHECKS];
	int n;
	int rc;
	char error[256];
};

static void client_fail(struct client *cl, sc_client *conn, int rc, const char *what)
{
	if (cl->rc == 0) {
		cl->rc = rc ? rc : SC_EINTERNAL;
		snprintf(cl->error, sizeof(cl->error), "%s: %s: %s", what, sc_err_name(rc),
		         conn ? sc_last_error(conn) : "");
	}
}

/* Checks with random estimates; settles about half of the allowed at once, keeps the rest held. */
static void *client_main(void *arg)
{
	struct client *cl = arg;
	sc_client *conn = NULL;
	int rc = sc_connect(d.socket, &conn);

	pthread_barrier_wait(cl->go);
	if (rc != 0) {
		client_fail(cl, NULL, rc, "connect");
		return NULL;
	}
	for (int i = 0; i < CHECKS; i++) {
		struct attempt *a = &cl->a[i];
		sc_check_req req = { .agent_id = cl->agent, .action = "llm.chat" };
		sc_decision dec;
		sc_settlement s;

		req.estimated_cost = CENTS(1 + rand_r(&cl->seed) % 40);
		if ((rc = sc_check(conn, &req, &dec)) != 0) {
			client_fail(cl, conn, rc, "check");
			break;
		}
		a->txn = dec.transaction_id;
		a->estimate = req.estimated_cost;
		a->allowed = dec.allowed;
		cl->n++;
		if (!dec.allowed || rand_r(&cl->seed) % 2)
			continue;
		rc = sc_report(conn, a->txn, SC_OUTCOME_SUCCESS, 1,
		               (sc_micros)(rand_r(&cl->seed) % (unsigned)(a->estimate + 1)), &s);
		if (rc != 0) {
			client_fail(cl, conn, rc, "report");
			break;
		}
		a->reported = 1;
		a->charged = s.charged;
	}
	sc_close(conn);
	return NULL;
}

struct snapshot {
	sc_wallet org, agents[AGENTS];
	sc_rule rules[AGENTS];
	int scores[AGENTS];
};

static void take_snapshot(uint64_t org, const uint64_t *agents, struct snapshot *s)
{
	memset(s, 0, sizeof(*s));
	OK(sc_org_wallet_get(c, org, &s->org));
	for (int i = 0; i < AGENTS; i++) {
		sc_rule *rules;
		sc_score sc;
		size_t n;

		OK(sc_wallets_get(c, agents[i], &s->agents[i]));
		OK(sc_rules_list(c, agents[i], &rules, &n));
		ck_assert_uint_eq(n, 1);
		s->rules[i] = rules[0];
		sc_rules_free(rules);
		OK(sc_score_get(c, agents[i], &sc));
		s->scores[i] = sc.score;
	}
}

static void same_wallet(const sc_wallet *a, const sc_wallet *b, const char *what)
{
	ck_assert_msg(a->balance == b->balance && a->held == b->held &&
	                      a->daily_spent == b->daily_spent && a->debt == b->debt &&
	                      a->available == b->available,
	              "%s after the replay: balance %lld held %lld daily %lld debt %lld, before: "
	              "%lld %lld %lld %lld",
	              what, (long long)b->balance, (long long)b->held, (long long)b->daily_spent,
	              (long long)b->debt, (long long)a->balance, (long long)a->held,
	              (long long)a->daily_spent, (long long)a->debt);
}

START_TEST(test_shared_wallet_never_overspends)
{
	static struct client cl[THREADS];
	sc_rule rule = { .hourly_rate_limit = HOURLY };
	uint64_t org, agents[AGENTS];
	struct snapshot before, after;
	pthread_barrier_t go;
	sc_micros charged = 0, held = 0;
	unsigned seed = (unsigned)time(NULL);
	int allowed = 0, blocked = 0;

	start("async");
	fprintf(stderr, "workers: seed %u\n", seed);
	strcpy(rule.name, "llm");
	strcpy(rule.match, "llm.*");
	org = new_org("fleet", ORG_BALANCE);
	for (int i = 0; i < AGENTS; i++) {
		char name[16];

		snprintf(name, sizeof(name), "agent-%d", i);
		agents[i] = new_agent("fleet", name, USD(1000), AGENT_DAILY, &rule);
	}
	memset(cl, 0, sizeof(cl));
	pthread_barrier_init(&go, NULL, THREADS);
	for (int i = 0; i < THREADS; i++) {
		cl[i].agent = agents[i % AGENTS];
		cl[i].seed = seed + (unsigned)i;
		cl[i].go = &go;
		ck_assert_int_eq(pthread_create(&cl[i].thread, NULL, client_main, &cl[i]), 0);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(cl[i].thread, NULL);
	pthread_barrier_destroy(&go);

	take_snapshot(org, agents, &before);
	for (int k = 0; k < AGENTS; k++) {
		sc_micros agent_charged = 0, agent_held = 0;
		int agent_allowed = 0;

		for (int i = k; i < THREADS; i += AGENTS) {
			ck_assert_msg(cl[i].rc == 0, "client %d: %s", i, cl[i].error);
			ck_assert_int_eq(cl[i].n, CHECKS);
			for (int j = 0; j < cl[i].n; j++) {
				const struct attempt *a = &cl[i].a[j];

				if (!a->allowed) {
					blocked++;
					continue;
				}
				agent_allowed++;
				if (a->reported)
					agent_charged += a->charged;
				else
					agent_held += a->estimate;
			}
		}
		/* the agent's own limits, by the clients' tally and by the daemon's counters */
		ck_assert_int_le(agent_charged + agent_held, AGENT_DAILY);
		ck_assert_int_le(agent_allowed, HOURLY);
		ck_assert_int_eq(before.agents[k].held, agent_held);
		ck_assert_int_eq(before.agents[k].daily_spent, agent_charged);
		ck_assert_int_eq(before.agents[k].balance, USD(1000) - agent_charged);
		ck_assert_int_le(before.agents[k].daily_spent + before.agents[k].held, AGENT_DAILY);
		ck_assert_int_eq(before.rules[k].hourly_count, agent_allowed);
		charged += agent_charged;
		held += agent_held;
		allowed += agent_allowed;
	}
	/* the shared wallet: what was charged plus what is held never passed its balance */
	ck_assert_int_le(charged + held, ORG_BALANCE);
	ck_assert_int_eq(before.org.held, held);
	ck_assert_int_eq(before.org.balance, ORG_BALANCE - charged);
	ck_assert_int_ge(before.org.available, 0);
	ck_assert_int_gt(allowed, 0);
	ck_assert_int_gt(blocked, 0); /* the limits were reached: the race was real */

	test_client_rebuild(&d, &c);
	take_snapshot(org, agents, &after);
	same_wallet(&before.org, &after.org, "org wallet");
	for (int k = 0; k < AGENTS; k++) {
		same_wallet(&before.agents[k], &after.agents[k], "agent wallet");
		ck_assert_int_eq(after.rules[k].hourly_count, before.rules[k].hourly_count);
		ck_assert_int_eq(after.rules[k].daily_spent, before.rules[k].daily_spent);
		ck_assert_int_eq(after.scores[k], before.scores[k]);
	}
	stop();
}
END_TEST

/* ----- strict durability: every request answered, a stop under load loses nothing ----- */

#define STRICT_THREADS 8
#define STRICT_ESTIMATE 1000

struct strict_client {
	pthread_t thread;
	uint64_t agent;
	long acked;   /* checks answered allowed */
	long stopped; /* 1 once the daemon went away */
	int rc;
	char error[256];
};

static int running;

static void *strict_main(void *arg)
{
	struct strict_client *cl = arg;
	sc_check_req req = { .agent_id = cl->agent, .action = "tool.run",
		             .estimated_cost = STRICT_ESTIMATE };
	sc_client *conn = NULL;
	sc_decision dec;
	int rc = sc_connect(d.socket, &conn);

	while (rc == 0 && __atomic_load_n(&running, __ATOMIC_ACQUIRE)) {
		if ((rc = sc_check(conn, &req, &dec)) != 0)
			break;
		if (!dec.allowed) {
			snprintf(cl->error, sizeof(cl->error), "blocked: %s", dec.block_reason);
			cl->rc = SC_EINTERNAL;
			break;
		}
		cl->acked++;
	}
	if (rc != 0 && __atomic_load_n(&running, __ATOMIC_ACQUIRE)) {
		/* only the daemon going away may end a client while it runs */
		cl->stopped = 1;
		cl->rc = rc;
		snprintf(cl->error, sizeof(cl->error), "%s: %s", sc_err_name(rc),
		         conn ? sc_last_error(conn) : "");
	}
	sc_close(conn);
	return NULL;
}

START_TEST(test_strict_answers_and_stops_clean)
{
	static struct strict_client cl[STRICT_THREADS];
	int64_t last, durable;
	int i;

	start("strict");
	new_org("strict", 0);
	memset(cl, 0, sizeof(cl));
	for (i = 0; i < STRICT_THREADS; i++) {
		char name[16];

		snprintf(name, sizeof(name), "s-%d", i);
		cl[i].agent = new_agent("strict", name, USD(100000), 0, NULL);
	}

	/* a first round: every request of every connection is answered */
	__atomic_store_n(&running, 1, __ATOMIC_RELEASE);
	for (i = 0; i < STRICT_THREADS; i++)
		ck_assert_int_eq(pthread_create(&cl[i].thread, NULL, strict_main, &cl[i]), 0);
	test_sleep_ms(500);
	__atomic_store_n(&running, 0, __ATOMIC_RELEASE);
	for (i = 0; i < STRICT_THREADS; i++) {
		pthread_join(cl[i].thread, NULL);
		ck_assert_msg(cl[i].rc == 0, "client %d: %s", i, cl[i].error);
		ck_assert_int_gt(cl[i].acked, 0);
	}
	OK(sc_stat(c, "ledger_last_seq", &last));
	OK(sc_stat(c, "ledger_durable_seq", &durable));
	ck_assert_int_eq(durable, last); /* every answered change is on disk */

	/* a second round, ended by SIGTERM while every client has a check in flight */
	__atomic_store_n(&running, 1, __ATOMIC_RELEASE);
	for (i = 0; i < STRICT_THREADS; i++)
		ck_assert_int_eq(pthread_create(&cl[i].thread, NULL, strict_main, &cl[i]), 0);
	test_sleep_ms(300);
	sc_close(c);
	c = NULL;
	ck_assert_int_eq(test_daemon_kill(&d, SIGTERM), 0);
	for (i = 0; i < STRICT_THREADS; i++)
		pthread_join(cl[i].thread, NULL);
	__atomic_store_n(&running, 0, __ATOMIC_RELEASE);

	/* every acknowledged check is in the ledger; at most the one in flight more */
	{
		char shm[160];

		snprintf(shm, sizeof(shm), "%s", d.segment);
		ck_assert_int_eq(unlink(shm), 0);
	}
	ck_assert_int_eq(test_daemon_restart(&d), 0);
	OK(sc_connect(d.socket, &c));
	for (i = 0; i < STRICT_THREADS; i++) {
		sc_wallet w;

		ck_assert_msg(cl[i].rc == 0 || cl[i].stopped, "client %d: %s", i, cl[i].error);
		OK(sc_wallets_get(c, cl[i].agent, &w));
		ck_assert_int_ge(w.held, cl[i].acked * STRICT_ESTIMATE);
		ck_assert_int_le(w.held, (cl[i].acked + 1) * STRICT_ESTIMATE);
	}
	stop();
}
END_TEST

/* ----- alerts cross workers ----- */

START_TEST(test_alert_crosses_workers)
{
	sc_wallet_update low = { .set = SC_WALLET_SET_BALANCE, .balance = USD(10) };
	sc_client *sub, *raiser0, *raiser1;
	sc_check_req req = { .action = "openai.chat", .estimated_cost = CENTS(950) };
	sc_decision dec;
	sc_alert a;
	sc_agent ag0, ag1;
	uint64_t last;

	start("async");
	new_org("alerts", 0);
	OK(sc_agents_create(c, "alerts", "zero", SC_PRIORITY_NORMAL, &low, NULL, 0, &ag0));
	OK(sc_agents_create(c, "alerts", "one", SC_PRIORITY_NORMAL, &low, NULL, 0, &ag1));
	/* raiser0 and raiser1 land on different workers: one is not sub's */
	OK(sc_connect(d.socket, &sub));
	OK(sc_connect(d.socket, &raiser0));
	OK(sc_connect(d.socket, &raiser1));
	TEST_OK(sub, sc_alerts_subscribe(sub, &last));
	ck_assert_uint_eq(last, 0);

	req.agent_id = ag0.id;
	TEST_OK(raiser0, sc_check(raiser0, &req, &dec));
	ck_assert(dec.allowed);
	TEST_OK(sub, sc_alert_next(sub, 5000, &a));
	ck_assert_int_eq(a.kind, SC_ALERT_LOW_BALANCE);
	ck_assert_uint_eq(a.agent_id, ag0.id);
	ck_assert_uint_eq(a.transaction_id, dec.transaction_id);

	req.agent_id = ag1.id;
	TEST_OK(raiser1, sc_check(raiser1, &req, &dec));
	TEST_OK(sub, sc_alert_next(sub, 5000, &a));
	ck_assert_uint_eq(a.agent_id, ag1.id);
	ck_assert_uint_eq(a.transaction_id, dec.transaction_id);

	/* a closed subscriber is forgotten; the next alert goes nowhere and harms nothing */
	sc_close(sub);
	req.agent_id = ag0.id;
	req.estimated_cost = CENTS(1);
	TEST_OK(raiser0, sc_check(raiser0, &req, &dec));
	sc_close(raiser0);
	sc_close(raiser1);
	stop();
}
END_TEST

/* ----- clients that vanish mid-request ----- */

#define VANISH_THREADS 4
#define VANISH_CONNS 40
#define VANISH_REQUESTS 64

struct vanisher {
	pthread_t thread;
	uint64_t agent;
	int failures;
};

/* [0, msgid, "check", [{agent_id, action, estimated_cost}]] * n, written and abandoned. */
static void *vanish_main(void *arg)
{
	struct vanisher *v = arg;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	msgpack_sbuffer sb;
	msgpack_packer pk;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", d.socket);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	for (uint32_t i = 0; i < VANISH_REQUESTS; i++) {
		msgpack_pack_array(&pk, 4);
		msgpack_pack_int(&pk, 0);
		msgpack_pack_uint32(&pk, i);
		msgpack_pack_str_with_body(&pk, "check", 5);
		msgpack_pack_array(&pk, 1);
		msgpack_pack_map(&pk, 3);
		msgpack_pack_str_with_body(&pk, "agent_id", 8);
		msgpack_pack_uint64(&pk, v->agent);
		msgpack_pack_str_with_body(&pk, "action", 6);
		msgpack_pack_str_with_body(&pk, "llm.chat", 8);
		msgpack_pack_str_with_body(&pk, "estimated_cost", 14);
		msgpack_pack_int64(&pk, 1000);
	}
	for (int k = 0; k < VANISH_CONNS; k++) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		size_t len = sb.size;

		/* half abandon a request cut in the middle */
		if (k % 2)
			len -= 7;
		if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
		    write(fd, sb.data, len) != (ssize_t)len)
			v->failures++;
		if (fd >= 0)
			close(fd);
	}
	msgpack_sbuffer_destroy(&sb);
	return NULL;
}

START_TEST(test_vanishing_clients)
{
	static struct vanisher v[VANISH_THREADS];
	sc_wallet before, after;
	int64_t open, total, total0;
	int i;

	start("strict");
	OK(sc_stat(c, "connections_total", &total0));
	new_org("gone", 0);
	for (i = 0; i < VANISH_THREADS; i++) {
		char name[16];

		snprintf(name, sizeof(name), "v-%d", i);
		v[i].agent = new_agent("gone", name, USD(100000), 0, NULL);
		ck_assert_int_eq(pthread_create(&v[i].thread, NULL, vanish_main, &v[i]), 0);
	}
	for (i = 0; i < VANISH_THREADS; i++) {
		pthread_join(v[i].thread, NULL);
		ck_assert_int_eq(v[i].failures, 0);
	}
	/*
	 * The daemon serves on, and lets go of every vanished connection: once
	 * it has accepted them all (a connection still in the listen backlog is
	 * not open yet, and its requests not yet applied), none stays open.
	 */
	for (i = 0; i < 200; i++) {
		OK(sc_stat(c, "connections_total", &total));
		OK(sc_stat(c, "connections_open", &open));
		if (total - total0 >= VANISH_THREADS * VANISH_CONNS && open == 1)
			break;
		test_sleep_ms(20);
	}
	/* (the start-up's probe of the socket may be counted after total0 was read) */
	ck_assert_int_ge(total - total0, VANISH_THREADS * VANISH_CONNS);
	ck_assert_int_eq(open, 1);
	OK(sc_wallets_get(c, v[0].agent, &before));
	test_client_rebuild(&d, &c);
	OK(sc_wallets_get(c, v[0].agent, &after));
	same_wallet(&before, &after, "wallet");
	stop();
}
END_TEST

int main(void)
{
	Suite *s = suite_create("workers");
	SRunner *sr;
	TCase *tc;
	int failed;

	tc = test_add_tcase_tmp(s, "workers", NULL, NULL, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_shared_wallet_never_overspends);
	tcase_add_test(tc, test_strict_answers_and_stops_clean);
	tcase_add_test(tc, test_alert_crosses_workers);
	tcase_add_test(tc, test_vanishing_clients);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
