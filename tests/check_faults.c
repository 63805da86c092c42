/*
 * check_faults.c: the daemon against what happens around it, through the
 * real daemon (tests/daemon.c) and libsidecard:
 *
 * - snapshots that cannot be written (ENOSPC on the checkpoint files only,
 *   injected by tests/faultfs.c) while the ledger can: the daemon keeps
 *   gating, logs one line when snapshots start failing and one when they
 *   succeed again, retries on its schedule rather than on every flush, and
 *   a snapshot exists once the disk recovers;
 * - signals: SIGHUP, SIGUSR1 and SIGUSR2 are logged and ignored, SIGQUIT
 *   drains and stops like SIGTERM, and a stop leaves neither the socket nor
 *   its lock file behind;
 * - a state segment refused at start is set aside, and only the newest
 *   segment set aside is kept;
 * - files shrunk under the running daemon: a ledger segment (changes are
 *   refused, naming the file) and the state segment (the daemon stops
 *   cleanly instead of dying of SIGBUS, and the next start rebuilds the
 *   state from the ledger).
 *
 * Threads: the Check runner forks each test; each test drives one daemon
 * from its main thread.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <check.h>

#include "daemon.h"
#include "sidecard.h"
#include "testutil.h"

#define USD(x) ((sc_micros)((x) * SC_MICROS_PER_USD))
#define CENTS(x) ((sc_micros)(x) * 10000)
#define TEST_TIMEOUT_S 60

#define OK(call) TEST_OK(c, call)

static struct test_daemon d;
static sc_client *c;
static char dir[128], log_path[160], control[160];

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ----- the daemon ----- */

/* Starts the daemon on a directory of its own, every run's output in log_path. */
static void start(const char *const *extra)
{
	test_daemon_timeout(TEST_TIMEOUT_S);
	ck_assert_int_eq(test_tmpdir(dir, sizeof(dir)), 0);
	snprintf(log_path, sizeof(log_path), "%s/daemon.log", dir);
	ck_assert_int_eq(test_daemon_start_in(&d, dir, log_path, extra), 0);
	OK(sc_connect(d.socket, &c));
}

/* The same under tests/faultfs.c, controlled by the file `control` (absent: no fault). */
static void start_faulty(const char *const *extra)
{
	test_faultfs_begin(control, sizeof(control));
	start(extra);
	test_faultfs_end();
}

static void stop(void)
{
	sc_close(c);
	c = NULL;
	ck_assert_int_eq(test_daemon_stop(&d), 0);
	test_daemon_timeout(0);
	unsetenv("FAULTFS_CONTROL");
}

static void reconnect(void)
{
	sc_close(c);
	OK(sc_connect(d.socket, &c));
}

/* The whole content of a file, NUL-terminated ("" if it cannot be read). Caller frees. */
static char *read_all(const char *path)
{
	char *s = test_read_file(path, NULL);

	return s ? s : strdup("");
}

/* Lines of the daemon's log holding every one of the words (NULL-terminated). */
static int log_lines(const char *const *words)
{
	char *log = read_all(log_path), *line = log;
	int n = 0;

	while (line && *line) {
		char *end = strchr(line, '\n');
		int all = 1;

		if (end)
			*end = '\0';
		for (size_t i = 0; words[i]; i++)
			all &= strstr(line, words[i]) != NULL;
		n += all;
		line = end ? end + 1 : NULL;
	}
	free(log);
	return n;
}

#define LOG_LINES(...) log_lines((const char *const[]){__VA_ARGS__, NULL})

static int64_t stat_of(const char *name)
{
	int64_t v = 0;
	int rc = sc_stat(c, name, &v);

	ck_assert_msg(rc == 0, "stats %s: %s: %s", name, sc_err_name(rc), sc_last_error(c));
	return v;
}

/* Waits until stat name is at least want; 1 if it got there within ms. */
static int wait_stat_ge(const char *name, int64_t want, long ms)
{
	long end = now_ms() + ms;

	while (stat_of(name) < want) {
		if (now_ms() > end)
			return 0;
		test_sleep_ms(20);
	}
	return 1;
}

/* The number of files in directory sub of dir (or the state directory) ending in ext. */
static int count_files(const char *in, const char *ext)
{
	DIR *dh = opendir(in);
	struct dirent *e;
	size_t len = strlen(ext);
	int n = 0;

	ck_assert_msg(dh != NULL, "opendir %s: %s", in, strerror(errno));
	while ((e = readdir(dh)) != NULL) {
		size_t l = strlen(e->d_name);

		n += l >= len && strcmp(e->d_name + l - len, ext) == 0;
	}
	closedir(dh);
	return n;
}

static uint64_t new_agent(const char *org, const char *name, sc_micros balance)
{
	sc_wallet_update w = { .set = SC_WALLET_SET_BALANCE, .balance = balance };
	sc_agent a;
	sc_org o;

	OK(sc_orgs_create(c, org, &o));
	OK(sc_agents_create(c, org, name, SC_PRIORITY_NORMAL, &w, NULL, 0, &a));
	return a.id;
}

static void allow(uint64_t agent)
{
	sc_check_req req = { .agent_id = agent, .action = "llm.chat", .estimated_cost = 1 };
	sc_decision dec;

	OK(sc_check(c, &req, &dec));
	ck_assert_msg(dec.allowed, "blocked: %s", dec.block_reason);
}

/* ----- snapshots that cannot be written ----- */

#define CKPT_CHECKS 1000

static void setup_checkpoint_fault(void)
{
	/*
	 * a snapshot due every 10 records and every second: due on almost every
	 * flush; one agent holds all CKPT_CHECKS, past the default quota
	 */
	static const char *const args[] = { "--orgs", "16", "--agents", "64", "--holds", "4096",
		                            "--max-holds-per-agent", "4096",
		                            "--checkpoint-records", "10", "--checkpoint-interval",
		                            "1", NULL };

	start_faulty(args);
}

/*
 * The checkpoint directory is full, the ledger's is not. Before, every
 * flush copied the state and failed again, logging each time (thousands of
 * lines, throughput down 22 times); now the daemon gates on, one line says
 * that snapshots fail, a retry follows on a schedule, and one line says
 * when they succeed again.
 */
START_TEST(test_checkpoint_failure_backs_off)
{
	char ckpt_dir[256];
	uint64_t agent;
	int i;

	test_write_file(control, "ENOSPC /checkpoints/\n", strlen("ENOSPC /checkpoints/\n"));
	agent = new_agent("acme", "spender", USD(1000));
	for (i = 0; i < CKPT_CHECKS; i++)
		allow(agent);
	ck_assert_int_eq(stat_of("ledger_failed"), 0);
	ck_assert_int_eq(stat_of("checkpoint_seq"), 0);
	/* a second attempt comes from the schedule, not from the next flush */
	ck_assert_msg(wait_stat_ge("checkpoint_failures", 2, 10000),
	              "no retry of the failed snapshot within 10 s");
	ck_assert_int_eq(LOG_LINES("checkpoint", "cannot write"), 1);
	ck_assert_int_eq(LOG_LINES("checkpoint", "failed:"), 0);
	ck_assert_msg(stat_of("checkpoint_failures") < 10,
	              "%lld snapshot attempts failed in the time of %d checks and one retry",
	              (long long)stat_of("checkpoint_failures"), CKPT_CHECKS);

	/* the disk recovers: the next scheduled attempt succeeds, once logged */
	ck_assert_int_eq(unlink(control), 0);
	ck_assert_msg(wait_stat_ge("checkpoint_seq", 1, 30000),
	              "no snapshot within 30 s of the disk recovering");
	ck_assert_int_eq(stat_of("checkpoint_failures"), 0);
	ck_assert_int_eq(LOG_LINES("checkpoint", "succeeded after"), 1);
	ck_assert_int_eq(LOG_LINES("checkpoint", "cannot write"), 1);
	snprintf(ckpt_dir, sizeof(ckpt_dir), "%s/checkpoints", d.state);
	ck_assert_int_ge(count_files(ckpt_dir, ".snap"), 1);
	ck_assert_int_eq(count_files(ckpt_dir, ".tmp"), 0);
	allow(agent);
}
END_TEST

/* ----- signals ----- */

static void setup_default(void)
{
	static const char *const args[] = { "--orgs", "16", "--agents", "64", NULL };

	start(args);
}

/* Neither the socket nor its lock file is left once the daemon stopped. */
static void assert_socket_gone(const char *when)
{
	char lock[160];

	snprintf(lock, sizeof(lock), "%s.lock", d.socket);
	ck_assert_msg(access(d.socket, F_OK) != 0, "%s: the socket %s is left", when, d.socket);
	ck_assert_msg(access(lock, F_OK) != 0, "%s: the socket's lock %s is left", when, lock);
}

static const int ignored[] = { SIGHUP, SIGUSR1, SIGUSR2 };

/* SIGHUP, SIGUSR1, SIGUSR2: logged and ignored; the daemon serves on, then stops cleanly. */
START_TEST(test_signal_ignored)
{
	uint64_t agent = new_agent("acme", "spender", USD(10));
	int sig = ignored[_i];

	ck_assert_int_eq(kill(d.pid, sig), 0);
	for (int i = 0; i < 250 && LOG_LINES(strsignal(sig), "ignored") == 0; i++)
		test_sleep_ms(20);
	ck_assert_msg(LOG_LINES(strsignal(sig), "ignored") == 1, "no log line for %s",
	              strsignal(sig));
	reconnect();
	allow(agent);
	sc_close(c);
	c = NULL;
	ck_assert_int_eq(test_daemon_kill(&d, SIGTERM), 0);
	assert_socket_gone(strsignal(sig));
}
END_TEST

/* SIGQUIT drains and stops, with exit code 0, like SIGTERM. */
START_TEST(test_signal_quit)
{
	uint64_t agent = new_agent("acme", "spender", USD(10));

	allow(agent);
	sc_close(c);
	c = NULL;
	ck_assert_int_eq(test_daemon_kill(&d, SIGQUIT), 0);
	ck_assert_int_eq(LOG_LINES("draining connections and stopping"), 1);
	assert_socket_gone("SIGQUIT");
	/* and the state directory is usable by the next daemon at once */
	ck_assert_int_eq(test_daemon_restart(&d), 0);
	OK(sc_connect(d.socket, &c));
	allow(agent);
}
END_TEST

/* ----- state segments set aside ----- */

static int count_set_aside(void)
{
	char in[160], *slash, name[160];
	DIR *dh;
	struct dirent *e;
	int n = 0;

	snprintf(in, sizeof(in), "%s", d.segment);
	slash = strrchr(in, '/');
	*slash = '\0';
	snprintf(name, sizeof(name), "%s.invalid-", slash + 1);
	ck_assert_ptr_nonnull(dh = opendir(in));
	while ((e = readdir(dh)) != NULL)
		n += strncmp(e->d_name, name, strlen(name)) == 0;
	closedir(dh);
	return n;
}

/*
 * A segment that is not one is set aside as <segment>.invalid-<time> and
 * the state rebuilt; what earlier starts set aside is removed, so that a
 * segment refused at every start does not pile up copies of the state.
 */
START_TEST(test_set_aside_keeps_newest)
{
	char old[200];
	uint64_t agent = new_agent("acme", "spender", USD(10));

	sc_close(c);
	c = NULL;
	ck_assert_int_eq(test_daemon_kill(&d, SIGTERM), 0);
	snprintf(old, sizeof(old), "%s.invalid-1", d.segment);
	test_write_file(old, "an earlier start's segment", strlen("an earlier start's segment"));
	test_write_file(d.segment, "not a segment", strlen("not a segment"));
	ck_assert_int_eq(test_daemon_restart(&d), 0);
	OK(sc_connect(d.socket, &c));
	allow(agent);
	ck_assert_int_eq(LOG_LINES("keeping it as"), 1);
	ck_assert_msg(access(old, F_OK) != 0, "%s is kept", old);
	ck_assert_int_eq(count_set_aside(), 1);
}
END_TEST

/* ----- files cut short under the running daemon ----- */

static void setup_async(void)
{
	/* replies do not wait for the disk: the change that finds the cut is answered */
	static const char *const args[] = { "--orgs", "16", "--agents", "64", "--durability",
		                            "async", "--commit-interval", "10", NULL };

	start(args);
}

/* The path of the newest ledger segment into buf. */
static void last_segment(char *buf, size_t len)
{
	char in[160];
	DIR *dh;
	struct dirent *e;

	snprintf(in, sizeof(in), "%s/ledger", d.state);
	buf[0] = '\0';
	ck_assert_ptr_nonnull(dh = opendir(in));
	while ((e = readdir(dh)) != NULL) {
		size_t l = strlen(e->d_name);

		if (l > 4 && strcmp(e->d_name + l - 4, ".log") == 0 &&
		    (buf[0] == '\0' || strcmp(strrchr(buf, '/') + 1, e->d_name) < 0))
			snprintf(buf, len, "%s/%s", in, e->d_name);
	}
	closedir(dh);
	ck_assert_msg(buf[0] != '\0', "no ledger segment in %s", in);
}

/*
 * A ledger segment cut short by another process: before, the daemon went on
 * writing at its old end, into a hole that recovery reads as the end of the
 * ledger. Now the next batch is not written: changes are refused naming the
 * file, reads are served, and one line in the log says what happened.
 */
START_TEST(test_ledger_cut)
{
	sc_check_req req = { .action = "llm.chat", .estimated_cost = 1 };
	uint64_t agent = new_agent("acme", "spender", USD(10));
	char seg[256];
	sc_decision dec;
	sc_wallet w;
	sc_org o;
	int rc;

	allow(agent);
	ck_assert_msg(wait_stat_ge("ledger_durable_seq", stat_of("ledger_last_seq"), 5000),
	              "the ledger is not durable");
	last_segment(seg, sizeof(seg));
	ck_assert_int_eq(truncate(seg, 100), 0);
	allow(agent); /* async: answered; its batch finds the cut */
	ck_assert_msg(wait_stat_ge("ledger_failed", 1, 5000), "the cut ledger is not failed");
	req.agent_id = agent;
	rc = sc_check(c, &req, &dec);
	ck_assert_msg(rc == SC_EUNAVAILABLE, "check after the cut: %s (%s)", sc_err_name(rc),
	              sc_last_error(c));
	ck_assert_msg(strstr(sc_last_error(c), seg) && strstr(sc_last_error(c), "cut short"),
	              "'%s' does not name %s", sc_last_error(c), seg);
	ck_assert_int_eq(sc_orgs_create(c, "refused", &o), SC_EUNAVAILABLE);
	OK(sc_wallets_get(c, agent, &w));
	ck_assert_int_eq(LOG_LINES("another process cut it"), 1);
}
END_TEST

static const off_t segment_cuts[] = { 0, 4096 };

/*
 * The state segment cut short by another process: before, the next access
 * to a page past the cut killed the daemon with SIGBUS, and the next start
 * set the segment aside. Now the daemon ends with status 1 and a line
 * saying why, having removed the segment (main.c says why it cannot go
 * on), and the next start rebuilds the state from the ledger, with every
 * acknowledged change.
 */
START_TEST(test_segment_cut)
{
	sc_check_req req = { .action = "llm.chat", .estimated_cost = CENTS(5) };
	uint64_t agent = new_agent("acme", "spender", USD(10));
	sc_decision dec;
	sc_wallet before, after;
	int rc;

	allow(agent);
	OK(sc_wallets_get(c, agent, &before));
	ck_assert_int_eq(truncate(d.segment, segment_cuts[_i]), 0);
	req.agent_id = agent;
	rc = sc_check(c, &req, &dec);
	ck_assert_msg(rc == SC_EUNAVAILABLE || rc == SC_ECLOSED || rc == -ECONNRESET || rc == -EPIPE,
	              "check after the cut: %s (%s)", sc_err_name(rc), sc_last_error(c));
	if (rc == SC_EUNAVAILABLE)
		ck_assert_msg(strstr(sc_last_error(c), "state segment"), "'%s'", sc_last_error(c));
	sc_close(c);
	c = NULL;
	/* it stops by itself: the signal 0 only waits for it */
	ck_assert_int_eq(test_daemon_kill(&d, 0), 1);
	ck_assert_int_eq(LOG_LINES("state segment was cut short by another process"), 1);
	ck_assert_msg(access(d.segment, F_OK) != 0, "the cut segment %s is kept", d.segment);
	ck_assert_int_eq(test_daemon_restart(&d), 0);
	OK(sc_connect(d.socket, &c));
	ck_assert_int_ge(LOG_LINES("rebuilt the state"), 1);
	OK(sc_wallets_get(c, agent, &after));
	ck_assert_int_eq(after.balance, before.balance);
	ck_assert_int_eq(after.held, before.held);
	allow(agent);
}
END_TEST

static TCase *tcase(Suite *s, const char *name, void (*setup)(void))
{
	return test_add_tcase_tmp(s, name, setup, stop, TEST_TIMEOUT_S);
}

static Suite *faults_suite(void)
{
	Suite *s = suite_create("faults");

	tcase_add_test(tcase(s, "checkpoint-failure", setup_checkpoint_fault),
	               test_checkpoint_failure_backs_off);
	tcase_add_loop_test(tcase(s, "signal-ignored", setup_default), test_signal_ignored, 0,
	                    (int)(sizeof(ignored) / sizeof(ignored[0])));
	tcase_add_test(tcase(s, "signal-quit", setup_default), test_signal_quit);
	tcase_add_test(tcase(s, "set-aside", setup_default), test_set_aside_keeps_newest);
	tcase_add_test(tcase(s, "ledger-cut", setup_async), test_ledger_cut);
	tcase_add_loop_test(tcase(s, "segment-cut", setup_default), test_segment_cut, 0,
	                    (int)(sizeof(segment_cuts) / sizeof(segment_cuts[0])));
	return s;
}

int main(void)
{
	return test_run_suite(faults_suite());
}
