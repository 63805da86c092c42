/*
 * check_peek.c: libsidecard's shared-mapping read path (sc_peek_*) against
 * the real daemon (tests/daemon.c), through the calls a user makes: a peek
 * equals `wallets.get` after checks, reports, debt, a freeze and an org
 * wallet update; a deleted agent is not found, also while the daemon
 * rebuilds its agent index under churn (--agents 8); a mapping that cannot
 * be had (missing file, another layout, not a segment, a stopped daemon,
 * no read permission) is SC_EUNAVAILABLE with a message; a clean restart
 * keeps an open mapping working, while a daemon that rebuilt its state into
 * a new file (the old one found busy after a kill, or stamped by another
 * boot or state directory) is detected on the old mapping; and reader threads sharing one mapping never see a torn wallet
 * while two connections check and report without pause.
 *
 * Threads: the Check runner forks each test; the concurrency test adds
 * writer threads (each with its own connection) and reader threads (sharing
 * one sc_peek), which record what they saw and never call ck_assert.
 */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <check.h>

#include "client_fixture.h"
#include "daemon.h"
#include "shm.h"
#include "sidecard.h"
#include "suites.h"
#include "testutil.h"

#define USD(x) ((sc_micros)(x) * SC_MICROS_PER_USD)
#define TEST_TIMEOUT_S 60

static struct test_daemon d;
static sc_client *c;

#define OK(call) TEST_OK(c, call)

static void start(const char *const *extra)
{
	test_client_start(&d, &c, extra, TEST_TIMEOUT_S);
}

static void stop(void)
{
	test_client_stop(&d, &c);
}

static void setup_default(void)
{
	start(NULL);
}

static void setup_small(void)
{
	static const char *const args[] = { "--agents", "8", NULL };

	start(args);
}

static void setup_async(void)
{
	static const char *const args[] = { "--durability", "async", NULL };

	start(args);
}

static uint64_t new_agent(const char *org, const char *name, sc_micros balance,
                          sc_micros max_per_txn, sc_micros daily)
{
	sc_wallet_update w = {
		.set = SC_WALLET_SET_BALANCE | SC_WALLET_SET_MAX_PER_TXN |
		       SC_WALLET_SET_DAILY_SPEND_LIMIT,
		.balance = balance,
		.max_per_txn = max_per_txn,
		.daily_spend_limit = daily,
	};
	sc_agent a;

	OK(sc_agents_create(c, org, name, SC_PRIORITY_NORMAL, &w, NULL, 0, &a));
	return a.id;
}

static sc_peek *peek_open(void)
{
	char err[512] = "";
	sc_peek *p = NULL;
	int rc = sc_peek_open_client(c, &p, err, sizeof err);

	ck_assert_msg(rc == 0, "sc_peek_open_client: %s: %s", sc_err_name(rc), err);
	ck_assert_ptr_nonnull(p);
	return p;
}

static void same_wallet(const sc_wallet_snapshot *s, const sc_wallet *w)
{
	ck_assert_int_eq(s->balance, w->balance);
	ck_assert_int_eq(s->held, w->held);
	ck_assert_int_eq(s->available, w->available);
	ck_assert_int_eq(s->budget, w->budget);
	ck_assert_int_eq(s->max_per_txn, w->max_per_txn);
	ck_assert_int_eq(s->daily_spend_limit, w->daily_spend_limit);
	ck_assert_int_eq(s->daily_spent, w->daily_spent);
	ck_assert_int_eq(s->debt, w->debt);
	ck_assert_int_eq(s->limited, w->limited);
}

/* The peek of agent id equals what the daemon answers for it over the socket. */
static void peek_equals_get(const sc_peek *p, uint64_t id)
{
	sc_wallet_snapshot s;
	sc_agent a;

	OK(sc_agents_get(c, id, &a));
	ck_assert_int_eq(sc_peek_wallet(p, id, &s), 0);
	ck_assert_uint_eq(s.id, id);
	ck_assert_uint_eq(s.org_id, a.org_id);
	ck_assert_int_eq(s.status, a.status);
	same_wallet(&s, &a.wallet);
}

static uint64_t check(uint64_t agent, sc_micros estimate)
{
	return test_allow(c, agent, "llm.call", estimate);
}

static void report(uint64_t txn, sc_micros actual)
{
	sc_settlement s;

	OK(sc_report(c, txn, SC_OUTCOME_SUCCESS, 1, actual, &s));
}

/* ----- the values ----- */

START_TEST(test_peek_equals_wallets_get)
{
	sc_wallet_update u = { .set = SC_WALLET_SET_BALANCE, .balance = USD(1000) };
	sc_wallet_snapshot s;
	sc_wallet ow;
	sc_org org;
	sc_agent a;
	uint64_t a1, a2, a3, txn;
	sc_peek *p;

	OK(sc_orgs_create(c, "acme", &org));
	a1 = new_agent("acme", "a1", USD(100), USD(20), USD(50));
	a2 = new_agent("acme", "a2", USD(5), 0, 0);
	a3 = new_agent("acme", "a3", USD(1), 0, 0);
	p = peek_open();
	peek_equals_get(p, a1);
	peek_equals_get(p, a2);

	/* a hold, a partial charge below it, another hold left open */
	txn = check(a1, USD(10));
	peek_equals_get(p, a1);
	report(txn, 7000000);
	peek_equals_get(p, a1);
	check(a1, 4000000);
	ck_assert_int_eq(sc_peek_wallet(p, a1, &s), 0);
	ck_assert_int_eq(s.held, 4000000);
	ck_assert_int_eq(s.daily_spent, 7000000);
	ck_assert_int_eq(s.available, USD(100) - 7000000 - 4000000);
	peek_equals_get(p, a1);

	/* charged past the balance: debt */
	txn = check(a2, USD(4));
	report(txn, USD(9));
	ck_assert_int_eq(sc_peek_wallet(p, a2, &s), 0);
	ck_assert_int_eq(s.balance, 0);
	ck_assert_int_eq(s.debt, USD(4));
	peek_equals_get(p, a2);

	/* the operator's freeze shows in the status */
	OK(sc_agents_update(c, a3, NULL, -1, SC_STATUS_FROZEN, &a));
	peek_equals_get(p, a3);
	ck_assert_int_eq(sc_peek_wallet(p, a3, &s), 0);
	ck_assert_int_eq(s.status, SC_STATUS_FROZEN);

	/* the org's shared wallet: unlimited until funded, then limited */
	ck_assert_int_eq(sc_peek_org_wallet(p, org.id, &s), 0);
	ck_assert_int_eq(s.limited, 0);
	OK(sc_org_wallet_update(c, org.id, &u, &ow));
	ck_assert_int_eq(sc_peek_org_wallet(p, org.id, &s), 0);
	ck_assert_uint_eq(s.id, org.id);
	ck_assert_uint_eq(s.org_id, org.id);
	ck_assert_int_eq(s.status, SC_STATUS_ACTIVE);
	OK(sc_org_wallet_get(c, org.id, &ow));
	same_wallet(&s, &ow);
	txn = check(a1, USD(3));
	OK(sc_org_wallet_get(c, org.id, &ow));
	ck_assert_int_eq(sc_peek_org_wallet(p, org.id, &s), 0);
	ck_assert_int_eq(s.held, USD(3));
	same_wallet(&s, &ow);

	/* ids that name nothing */
	ck_assert_int_eq(sc_peek_wallet(p, 0, &s), SC_ENOTFOUND);
	ck_assert_int_eq(sc_peek_wallet(p, a3 + 1, &s), SC_ENOTFOUND);
	ck_assert_int_eq(sc_peek_org_wallet(p, org.id + 1, &s), SC_ENOTFOUND);
	ck_assert_int_eq(sc_peek_org_wallet(p, 0, &s), SC_ENOTFOUND);
	ck_assert_ptr_null(sc_peek_unavailable(p));
	sc_peek_close(p);
	sc_peek_close(NULL);
}
END_TEST

/*
 * With --agents 8 the daemon's index has 16 entries, so this churn makes it
 * rebuild the index many times: a deleted agent is never found, the live
 * ones always are, also when a new agent takes a deleted one's slot.
 */
START_TEST(test_peek_deleted_agent_not_found)
{
	uint64_t live[8] = { 0 }, gone = 0;
	sc_wallet_snapshot s;
	sc_org org;
	sc_peek *p;

	OK(sc_orgs_create(c, "acme", &org));
	p = peek_open();
	for (int round = 0; round < 60; round++) {
		int slot = (round * 3) % 8;
		char name[16];

		if (live[slot]) {
			OK(sc_agents_delete(c, live[slot]));
			gone = live[slot];
			ck_assert_int_eq(sc_peek_wallet(p, gone, &s), SC_ENOTFOUND);
		}
		snprintf(name, sizeof name, "agent-%d", round);
		live[slot] = new_agent("acme", name, USD(round + 1), 0, 0);
		for (int i = 0; i < 8; i++) {
			if (live[i])
				peek_equals_get(p, live[i]);
		}
		if (gone)
			ck_assert_int_eq(sc_peek_wallet(p, gone, &s), SC_ENOTFOUND);
	}
	sc_peek_close(p);
}
END_TEST

/* ----- when the mapping cannot be had ----- */

static void open_fails(const char *path, const char *word)
{
	char err[512] = "";
	sc_peek *p = (sc_peek *)&err; /* must be reset to NULL */
	int rc = sc_peek_open(path, &p, err, sizeof err);

	ck_assert_msg(rc == SC_EUNAVAILABLE, "%s: %s (%s)", path, sc_err_name(rc), err);
	ck_assert_ptr_null(p);
	ck_assert_msg(strstr(err, word) != NULL, "message '%s' does not say '%s'", err, word);
}

START_TEST(test_peek_unavailable)
{
	static _Alignas(struct shm_header) char header[SHM_HEADER_SIZE];
	struct shm_header *h = (struct shm_header *)header;
	char path[160], shm_path[160];
	sc_wallet_snapshot s;
	uint64_t id;
	sc_peek *p;

	/* a file not visible here (a container that mounts neither) */
	snprintf(path, sizeof path, "%s/elsewhere/state.shm", d.dir);
	open_fails(path, "not visible here");
	/* a segment of another layout version */
	memcpy(h->magic, SHM_MAGIC, sizeof h->magic);
	h->version = SHM_LAYOUT_VERSION - 1;
	h->header_size = SHM_HEADER_SIZE;
	h->size = SHM_HEADER_SIZE;
	snprintf(path, sizeof path, "%s/old.shm", d.dir);
	test_write_file(path, header, sizeof header);
	open_fails(path, "layout version");
	/* not a segment at all, or not even a header's worth */
	snprintf(path, sizeof path, "%s/other.shm", d.dir);
	memcpy(h->magic, "NOTSTATE", sizeof h->magic);
	test_write_file(path, header, sizeof header);
	open_fails(path, "not a sidecard state segment");
	snprintf(path, sizeof path, "%s/text.shm", d.dir);
	test_write_file(path, "hello", 5);
	open_fails(path, "smaller than the 4096-byte header");
	memcpy(h->magic, SHM_MAGIC, sizeof h->magic);
	/* not readable: the daemon's file is mode 0600 (root reads anything) */
	snprintf(shm_path, sizeof shm_path, "%s", d.segment);
	if (geteuid() != 0) {
		snprintf(path, sizeof path, "%s/locked.shm", d.dir);
		test_write_file(path, header, sizeof header);
		ck_assert_int_eq(chmod(path, 0), 0);
		open_fails(path, "readable by the daemon's user alone");
	}

	/* the daemon stops: an open mapping says so, and so does a new open */
	OK(sc_orgs_create(c, "acme", &(sc_org){ 0 }));
	id = new_agent("acme", "a", USD(3), 0, 0);
	p = peek_open();
	ck_assert_int_eq(sc_peek_wallet(p, id, &s), 0);
	sc_close(c);
	c = NULL;
	ck_assert_int_eq(test_daemon_kill(&d, SIGTERM), 0);
	ck_assert_int_eq(sc_peek_wallet(p, id, &s), SC_EUNAVAILABLE);
	ck_assert_int_eq(sc_peek_org_wallet(p, 1, &s), SC_EUNAVAILABLE);
	ck_assert_ptr_nonnull(sc_peek_unavailable(p));
	ck_assert_ptr_nonnull(strstr(sc_peek_unavailable(p), "stopped"));
	open_fails(shm_path, "stopped");

	/* it comes back to the same file: the mapping works again */
	ck_assert_int_eq(test_daemon_restart(&d), 0);
	OK(sc_connect(d.socket, &c));
	ck_assert_ptr_null(sc_peek_unavailable(p));
	peek_equals_get(p, id);
	check(id, USD(1));
	peek_equals_get(p, id);
	sc_peek_close(p);
}
END_TEST

/*
 * What makes the next daemon rebuild a segment rather than attach to it: a
 * daemon killed in the middle of a change leaves it busy (set aside as
 * .invalid-TIME), and one stamped by another boot of the machine (its pages
 * may be any mix of old and new after a power loss) or by another state
 * directory (a segment beside a socket that another ledger served) is not
 * this daemon's. Each case flips one bit of the header.
 */
static const struct stale_case {
	const char *what;
	size_t offset;
	int set_aside;
} stale_cases[] = {
	{ "busy", offsetof(struct shm_header, busy), 1 },
	{ "another boot", offsetof(struct shm_header, boot_id), 0 },
	{ "another state directory", offsetof(struct shm_header, state_ino), 0 },
};

/*
 * The next daemon rebuilds the state from the ledger into a new file and
 * retires the old one, which a mapping of it detects.
 */
START_TEST(test_peek_detects_rebuilt_segment)
{
	const struct stale_case *sc = &stale_cases[_i];
	char shm_path[160], pattern[200];
	sc_wallet_snapshot before, s;
	uint64_t id, txn;
	uint8_t byte;
	glob_t g;
	sc_peek *p, *p2;
	int fd;

	OK(sc_orgs_create(c, "acme", &(sc_org){ 0 }));
	id = new_agent("acme", "a", USD(30), 0, 0);
	txn = check(id, USD(2));
	report(txn, USD(1));
	check(id, USD(5));
	p = peek_open();
	ck_assert_int_eq(sc_peek_wallet(p, id, &before), 0);
	sc_close(c);
	c = NULL;
	ck_assert_int_eq(test_daemon_kill(&d, SIGKILL), 128 + SIGKILL);
	/* killed outright, it could not say anything: the last state stays readable */
	ck_assert_int_eq(sc_peek_wallet(p, id, &s), 0);
	ck_assert_int_eq(s.balance, before.balance);

	snprintf(shm_path, sizeof shm_path, "%s", d.segment);
	fd = open(shm_path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &byte, 1, (off_t)sc->offset), 1);
	byte ^= 1;
	ck_assert_int_eq(pwrite(fd, &byte, 1, (off_t)sc->offset), 1);
	close(fd);
	ck_assert_int_eq(test_daemon_restart(&d), 0);
	OK(sc_connect(d.socket, &c));

	ck_assert_msg(sc_peek_wallet(p, id, &s) == SC_EUNAVAILABLE,
	              "%s: the old mapping still reads as served", sc->what);
	ck_assert_ptr_nonnull(sc_peek_unavailable(p));
	ck_assert_ptr_nonnull(strstr(sc_peek_unavailable(p), "replaced"));
	snprintf(pattern, sizeof pattern, "%s.invalid-*", shm_path);
	ck_assert_int_eq(glob(pattern, 0, NULL, &g), sc->set_aside ? 0 : GLOB_NOMATCH);
	ck_assert_uint_eq(g.gl_pathc, sc->set_aside ? 1 : 0);
	globfree(&g);
	sc_peek_close(p);

	/* opening again maps the new file, which holds the same wallet */
	p2 = peek_open();
	ck_assert_int_eq(sc_peek_wallet(p2, id, &s), 0);
	ck_assert_int_eq(s.balance, before.balance);
	ck_assert_int_eq(s.held, before.held);
	ck_assert_int_eq(s.daily_spent, before.daily_spent);
	peek_equals_get(p2, id);
	sc_peek_close(p2);
}
END_TEST

/* ----- concurrency ----- */

#define CONC_AGENTS 4
#define CONC_WRITERS 2
#define CONC_READERS 2
#define CONC_ESTIMATE 3 /* micros: each check holds it, each report charges it */
#define CONC_BALANCE USD(1000000)

static uint64_t conc_ids[CONC_AGENTS];
static int conc_stop;

struct writer {
	int index;
	uint64_t pairs;
	int rc;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	sc_client *wc;
	unsigned n = (unsigned)w->index;

	if ((w->rc = sc_connect(d.socket, &wc)) != 0)
		return NULL;
	while (!__atomic_load_n(&conc_stop, __ATOMIC_RELAXED)) {
		sc_check_req req = { .agent_id = conc_ids[n++ % CONC_AGENTS], .action = "llm.call",
			             .estimated_cost = CONC_ESTIMATE };
		sc_decision dec;
		sc_settlement st;

		if ((w->rc = sc_check(wc, &req, &dec)) != 0 || !dec.allowed) {
			w->rc = w->rc ? w->rc : SC_ELIMIT;
			break;
		}
		if ((w->rc = sc_report(wc, dec.transaction_id, SC_OUTCOME_SUCCESS, 0, 0, &st)) != 0)
			break;
		w->pairs++;
	}
	sc_close(wc);
	return NULL;
}

struct reader {
	const sc_peek *p;
	uint64_t reads, torn;
	int rc;
	char first[200];
};

/*
 * Every report takes the estimate from held, adds it to daily_spent and
 * takes it from balance in one change of the record: a snapshot always has
 * balance + daily_spent equal to the starting balance and held a multiple
 * of the estimate; a read mixing two moments breaks that.
 */
static void *reader_main(void *arg)
{
	struct reader *r = arg;
	unsigned n = 0;

	while (!__atomic_load_n(&conc_stop, __ATOMIC_RELAXED)) {
		sc_wallet_snapshot s;
		int rc = sc_peek_wallet(r->p, conc_ids[n++ % CONC_AGENTS], &s);

		if (rc != 0) {
			r->rc = rc;
			break;
		}
		r->reads++;
		if (s.balance + s.daily_spent != CONC_BALANCE || s.held % CONC_ESTIMATE != 0 ||
		    s.held < 0 || s.held > CONC_WRITERS * CONC_ESTIMATE ||
		    s.available != s.balance - s.held) {
			if (r->torn++ == 0)
				snprintf(r->first, sizeof r->first,
				         "balance %" PRId64 " held %" PRId64 " daily_spent %" PRId64,
				         s.balance, s.held, s.daily_spent);
		}
	}
	return NULL;
}

START_TEST(test_peek_never_torn_under_writes)
{
	struct writer w[CONC_WRITERS];
	struct reader r[CONC_READERS];
	pthread_t wt[CONC_WRITERS], rt[CONC_READERS];
	struct timespec pause = { 1, 500000000 };
	time_t day0 = time(NULL) / 86400;
	uint64_t pairs = 0, reads = 0;
	sc_peek *p;

	OK(sc_orgs_create(c, "acme", &(sc_org){ 0 }));
	for (int i = 0; i < CONC_AGENTS; i++) {
		char name[16];

		snprintf(name, sizeof name, "a%d", i);
		conc_ids[i] = new_agent("acme", name, CONC_BALANCE, 0, 0);
	}
	p = peek_open();
	conc_stop = 0;
	for (int i = 0; i < CONC_WRITERS; i++) {
		w[i] = (struct writer){ .index = i };
		ck_assert_int_eq(pthread_create(&wt[i], NULL, writer_main, &w[i]), 0);
	}
	for (int i = 0; i < CONC_READERS; i++) {
		r[i] = (struct reader){ .p = p };
		ck_assert_int_eq(pthread_create(&rt[i], NULL, reader_main, &r[i]), 0);
	}
	nanosleep(&pause, NULL);
	__atomic_store_n(&conc_stop, 1, __ATOMIC_RELAXED);
	for (int i = 0; i < CONC_WRITERS; i++) {
		pthread_join(wt[i], NULL);
		ck_assert_msg(w[i].rc == 0, "writer %d: %s", i, sc_err_name(w[i].rc));
		pairs += w[i].pairs;
	}
	for (int i = 0; i < CONC_READERS; i++) {
		pthread_join(rt[i], NULL);
		ck_assert_msg(r[i].rc == 0, "reader %d: %s", i, sc_err_name(r[i].rc));
		/* a UTC midnight in the middle would reset daily_spent legitimately */
		if (time(NULL) / 86400 == day0)
			ck_assert_msg(r[i].torn == 0, "reader %d saw %" PRIu64 " torn wallets of %" PRIu64
			              ", first: %s", i, r[i].torn, r[i].reads, r[i].first);
		reads += r[i].reads;
	}
	ck_assert_uint_gt(pairs, 0);
	ck_assert_uint_gt(reads, pairs);
	for (int i = 0; i < CONC_AGENTS; i++)
		peek_equals_get(p, conc_ids[i]);
	sc_peek_close(p);
}
END_TEST

Suite *peek_suite(void)
{
	Suite *s = suite_create("peek");
	TCase *tc;

	tc = test_add_tcase_tmp(s, "values", setup_default, stop, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_peek_equals_wallets_get);
	tc = test_add_tcase_tmp(s, "index", setup_small, stop, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_peek_deleted_agent_not_found);
	tc = test_add_tcase_tmp(s, "unavailable", setup_default, stop, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_peek_unavailable);
	tcase_add_loop_test(tc, test_peek_detects_rebuilt_segment, 0,
	                    (int)(sizeof(stale_cases) / sizeof(stale_cases[0])));
	tc = test_add_tcase_tmp(s, "concurrency", setup_async, stop, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_peek_never_torn_under_writes);
	return s;
}
