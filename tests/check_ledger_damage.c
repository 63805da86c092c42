/*
 * check_ledger_damage.c: damage to durable ledger records against torn
 * tails, through the real daemon (tests/daemon.c), libsidecard and
 * `sidecardctl ledger verify|repair` ($SIDECARDCTL_BIN), against the
 * guarantees of docs/DESIGN.md ("Guarantees") and the rules of
 * sidecard/store/ledger_format.c. Part of the ledger suite (check_ledger.c).
 *
 * What is covered:
 * - one bit flipped in the last record, a report acknowledged in strict
 *   mode (the daemon stopped by SIGTERM or SIGKILL after it): in its body,
 *   in its length field, in its sequence number. The restart refuses,
 *   naming the file, offset and sequence number and the repair; the file
 *   is left byte for byte; `ledger verify` says damage, not torn tail;
 *   `ledger repair` without its choice flag changes nothing, and refuses
 *   while the daemon holds the state directory; with --truncate-at-damage
 *   the record goes to the quarantine byte for byte, the choice is in the
 *   repairs log that `ledger verify` shows, and the daemon starts;
 * - a real torn tail (the last record cut in the middle, zeros after it;
 *   garbage after the last record) still recovers by itself, its bytes
 *   kept in the quarantine;
 * - a torn-looking last record that a snapshot covers is damage;
 * - damage in the middle of the ledger, with later segments and snapshots
 *   after it: refused, and the repair moves the rest of the segment, the
 *   later segments and the snapshots beyond the damage to the quarantine,
 *   says so, and the daemon rebuilds from what is left.
 *
 * Each test starts the daemon a handful of times with small capacities:
 * well under a second each.
 *
 * Threads: the Check runner forks each test.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <check.h>

#include "client_fixture.h"
#include "daemon.h"
#include "ledger.h"
#include "sidecard.h"
#include "suites.h"
#include "testutil.h"

#define USD(x) ((sc_micros)((x) * SC_MICROS_PER_USD))
#define TEST_TIMEOUT_S 30
#define SMALL_CAPS "--orgs", "16", "--agents", "64", "--rules", "256", "--holds", "1024", \
	"--history", "4096"

static struct test_daemon d;
static sc_client *c;
static char log_path[128];

#define OK(call) TEST_OK(c, call)

/* ----- the daemon ----- */

static void start(const char *const *extra)
{
	test_client_start(&d, &c, extra, TEST_TIMEOUT_S);
	test_daemon_log_to_dir(&d, log_path, sizeof(log_path));
}

static void setup_default(void)
{
	static const char *const args[] = { SMALL_CAPS, NULL };

	start(args);
}

/*
 * A snapshot after every record that reaches the disk, unless one is being
 * written then; the timer takes the one that was skipped within a second.
 */
static void setup_snapshots(void)
{
	static const char *const args[] = { SMALL_CAPS, "--checkpoint-records", "1",
		                            "--checkpoint-interval", "1", NULL };

	start(args);
}

/* Small segments, and snapshots now and then. */
static void setup_segments(void)
{
	static const char *const args[] = { SMALL_CAPS, "--segment-size", "4096",
		                            "--checkpoint-records", "1000", NULL };

	start(args);
}

static void stop(void)
{
	sc_close(c);
	c = NULL;
	test_daemon_stop(&d);
	test_daemon_timeout(0);
}

static void kill_daemon(int sig)
{
	sc_close(c);
	c = NULL;
	ck_assert_int_eq(test_daemon_kill(&d, sig), sig == SIGTERM ? 0 : 128 + sig);
}

/* The daemon's log of its last run ("" if none). Caller frees. */
static char *daemon_log(void)
{
	char *s = test_read_file(log_path, NULL);

	return s ? s : strdup("");
}

/* Starts the daemon again: 0, or its exit status when it refused (its log is then kept). */
static int restart(void)
{
	unlink(log_path);
	if (test_daemon_restart(&d) != 0)
		return d.status ? d.status : -1;
	OK(sc_connect(d.socket, &c));
	return 0;
}

/* ----- sidecardctl ----- */

/* Runs sidecardctl with args, its stdout and stderr into out; returns its exit status. */
static int ctl(char *out, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int ctl(char *out, size_t len, const char *fmt, ...)
{
	const char *bin = getenv("SIDECARDCTL_BIN");
	char cmd[2048];
	size_t n = 0, got;
	va_list ap;
	FILE *p;
	int status;

	n = (size_t)snprintf(cmd, sizeof(cmd), "'%s' ", bin && *bin ? bin : "libclient/sidecardctl");
	va_start(ap, fmt);
	vsnprintf(cmd + n, sizeof(cmd) - n, fmt, ap);
	va_end(ap);
	strncat(cmd, " 2>&1", sizeof(cmd) - strlen(cmd) - 1);
	p = popen(cmd, "r");
	ck_assert_msg(p != NULL, "popen %s: %s", cmd, strerror(errno));
	n = 0;
	while (n + 1 < len && (got = fread(out + n, 1, len - n - 1, p)) > 0)
		n += got;
	out[n] = '\0';
	while (fgetc(p) != EOF)
		;
	status = pclose(p);
	ck_assert_msg(WIFEXITED(status), "%s: died", cmd);
	return WEXITSTATUS(status);
}

/* ----- the ledger's records ----- */

struct rec {
	uint64_t seq;
	unsigned type;
	uint64_t offset;
	uint32_t size; /* header and body */
	char file[256];
};

struct recs {
	struct rec v[512];
	size_t n;
};

static int collect(void *arg, const struct ledger_record *r)
{
	struct recs *rs = arg;
	struct rec *x = &rs->v[rs->n];

	if (rs->n == sizeof(rs->v) / sizeof(rs->v[0]))
		return 1;
	rs->n++;
	*x = (struct rec){ .seq = r->seq, .type = r->type, .offset = r->offset,
		           .size = LEDGER_RECORD_HEADER + r->body_len };
	snprintf(x->file, sizeof(x->file), "%s", r->file);
	return 0;
}

/* Every record of the ledger (offline, never repairing); the scan must pass. */
static struct recs *records(void)
{
	struct ledger_scan_result res;
	struct recs *rs = calloc(1, sizeof(*rs));
	char dir[256], err[4352];
	int rc;

	ck_assert_ptr_nonnull(rs);
	snprintf(dir, sizeof(dir), "%s/ledger", d.state);
	rc = ledger_scan(dir, 0, 0, collect, rs, &res, err, sizeof(err));
	ck_assert_msg(rc == 0, "ledger_scan %s: %s: %s", dir, sc_err_name(rc), err);
	ck_assert_uint_gt(rs->n, 0);
	return rs;
}

static uint64_t last_seq(void)
{
	struct recs *rs = records();
	uint64_t seq = rs->v[rs->n - 1].seq;

	free(rs);
	return seq;
}

/* ----- a settled transaction ----- */

struct world {
	uint64_t agent, txn;
};

static struct world settle(void)
{
	sc_wallet_update funds = { .set = SC_WALLET_SET_BALANCE, .balance = USD(100) };
	sc_check_req req = { .action = "openai.chat", .estimated_cost = USD(2) };
	sc_settlement s;
	sc_decision dec;
	sc_agent a;
	sc_org o;

	OK(sc_orgs_create(c, "alpha", &o));
	OK(sc_agents_create(c, "alpha", "research", SC_PRIORITY_NORMAL, &funds, NULL, 0, &a));
	req.agent_id = a.id;
	OK(sc_check(c, &req, &dec));
	ck_assert(dec.allowed);
	OK(sc_report(c, dec.transaction_id, SC_OUTCOME_SUCCESS, 1, USD(1.5), &s));
	return (struct world){ a.id, dec.transaction_id };
}

static enum sc_txn_status txn_status(const struct world *w)
{
	sc_transaction *t;
	enum sc_txn_status st = SC_TXN_BLOCKED;
	size_t n;

	OK(sc_transactions_list(c, w->agent, -1, 0, &t, &n));
	for (size_t i = 0; i < n; i++)
		if (t[i].id == w->txn)
			st = t[i].status;
	sc_transactions_free(t);
	return st;
}

/* ----- what the tests look for ----- */

/* The restart refuses; its log names the record and the choice to make. */
static void assert_refused(const struct rec *r, const char *evidence)
{
	char offset[64], expected[64];
	const char *base = strrchr(r->file, '/') + 1;
	char *log;

	ck_assert_msg(restart() == 1, "the daemon started on a damaged ledger");
	snprintf(offset, sizeof(offset), "offset %" PRIu64 ":", r->offset);
	snprintf(expected, sizeof(expected), "expected sequence number %" PRIu64, r->seq);
	log = daemon_log();
	ck_assert_msg(strstr(log, base) && strstr(log, offset) && strstr(log, expected) &&
	                  strstr(log, "damage to durable records") && strstr(log, evidence) &&
	                  strstr(log, "refusing to start (nothing was changed)") &&
	                  strstr(log, "sidecardctl ledger repair") &&
	                  strstr(log, "--truncate-at-damage"),
	              "the log does not name %s, '%s', '%s', '%s' and the repair:\n%.2000s", base,
	              offset, expected, evidence, log);
	ck_assert_msg(!strstr(log, "torn tail"), "damage logged as a torn tail:\n%.2000s", log);
	free(log);
}

/* `ledger verify` exits 1 and says damage, naming the record. */
static void assert_verify_damage(const struct rec *r)
{
	char out[8192], offset[64];

	snprintf(offset, sizeof(offset), "offset %" PRIu64, r->offset);
	ck_assert_int_eq(ctl(out, sizeof(out), "ledger verify --state-dir '%s'", d.state), 1);
	ck_assert_msg(strstr(out, "damage, not a torn tail") && strstr(out, offset) &&
	                  strstr(out, strrchr(r->file, '/') + 1) && !strstr(out, "warning: "),
	              "verify does not report damage at %s:\n%s", offset, out);
}

/* `ledger repair --truncate-at-damage`, which must succeed; its report in out. */
static void repair(char *out, size_t len)
{
	int rc = ctl(out, len, "ledger repair --state-dir '%s' --truncate-at-damage", d.state);

	ck_assert_msg(rc == 0, "repair exited %d:\n%s", rc, out);
}

/* The quarantine file for file at offset holds exactly want[0, n). */
static void assert_quarantined(const char *file, uint64_t offset, const char *want, size_t n)
{
	char path[512];
	char *got;
	size_t len;

	snprintf(path, sizeof(path), "%s/ledger/%s/%s-%" PRIu64 ".bin", d.state, LEDGER_QUARANTINE,
	         strrchr(file, '/') + 1, offset);
	got = test_read_file(path, &len);
	ck_assert_msg(got != NULL, "no quarantine file %s", path);
	ck_assert_uint_eq(len, n);
	ck_assert_msg(memcmp(got, want, n) == 0, "%s does not hold the removed bytes", path);
	free(got);
}

/* ----- one flipped bit in the last acknowledged record ----- */

/* Where the bit is flipped: byte offset in the record, bit. */
static const struct flip {
	const char *where;
	int sig;        /* how the daemon was stopped after the report */
	int byte;       /* -1: the middle of the body */
	unsigned bit;
} flips[] = {
	{ "body", SIGTERM, -1, 3 },
	{ "length field", SIGKILL, 5, 2 },
	{ "sequence number", SIGKILL, 8, 0 },
};

START_TEST(test_last_record_bit_flip)
{
	const struct flip *f = &flips[_i];
	struct world w = settle();
	struct recs *rs;
	struct rec last;
	char *buf, *after, out[8192];
	size_t len, len_after, at;

	kill_daemon(f->sig);
	rs = records();
	last = rs->v[rs->n - 1];
	free(rs);
	ck_assert_msg(last.type == LEDGER_REPORT, "the last record is a %s, not the report",
	              ledger_type_name(last.type));
	buf = test_read_file(last.file, &len);
	ck_assert_ptr_nonnull(buf);
	at = last.offset + (f->byte < 0 ? last.size / 2 : (size_t)f->byte);
	buf[at] ^= (char)(1u << f->bit);
	test_write_file(last.file, buf, len);

	assert_verify_damage(&last);
	assert_refused(&last, "one flipped bit");
	after = test_read_file(last.file, &len_after);
	ck_assert_uint_eq(len_after, len);
	ck_assert_msg(memcmp(buf, after, len) == 0, "the refused start rewrote %s", last.file);
	free(after);

	/* no choice, no change */
	ck_assert_int_eq(ctl(out, sizeof(out), "ledger repair --state-dir '%s'", d.state), 2);
	ck_assert_msg(strstr(out, "--truncate-at-damage"), "repair without a choice:\n%s", out);
	after = test_read_file(last.file, &len_after);
	ck_assert_msg(memcmp(buf, after, len) == 0, "repair without a choice changed %s", last.file);
	free(after);

	repair(out, sizeof(out));
	ck_assert_msg(strstr(out, "moved to") && strstr(out, "now ends at record"),
	              "the repair does not say what it moved:\n%s", out);
	assert_quarantined(last.file, last.offset, buf + last.offset, last.size);
	after = test_read_file(last.file, &len_after);
	ck_assert_uint_eq(len_after, len);
	ck_assert_msg(test_all_zero(after + last.offset, len - last.offset),
	              "%s: bytes left after the repair from offset %" PRIu64, last.file, last.offset);
	free(after);
	free(buf);

	ck_assert_int_eq(ctl(out, sizeof(out), "ledger verify --state-dir '%s'", d.state), 0);
	ck_assert_msg(strstr(out, "repaired: ") && strstr(out, LEDGER_NOTE_REPAIR) &&
	                  strstr(out, ": ok"),
	              "verify does not show the repair:\n%s", out);
	ck_assert_int_eq(restart(), 0);
	/* the operator chose to drop the report: the hold is open again */
	ck_assert_int_eq(txn_status(&w), SC_TXN_PENDING);
	ck_assert_uint_eq(last_seq(), last.seq - 1);
}
END_TEST

/* The repair runs offline: it refuses while the daemon holds the state directory. */
START_TEST(test_repair_refuses_running_daemon)
{
	char out[4096];

	settle();
	ck_assert_int_eq(ctl(out, sizeof(out), "ledger repair --state-dir '%s' --truncate-at-damage",
	                     d.state),
	                 2);
	ck_assert_msg(strstr(out, "holds") && strstr(out, "stop it first"),
	              "repair beside a running daemon:\n%s", out);
}
END_TEST

/* ----- real torn tails recover by themselves, into the quarantine ----- */

START_TEST(test_torn_tail_quarantined)
{
	struct world w = settle();
	struct recs *rs;
	struct rec last;
	char *buf, *log, out[8192];
	size_t len, n;
	uint64_t from;

	kill_daemon(SIGKILL);
	rs = records();
	last = rs->v[rs->n - 1];
	free(rs);
	buf = test_read_file(last.file, &len);
	ck_assert_ptr_nonnull(buf);
	if (_i == 0) {
		/* the write stopped in the middle of the report: zeros from there */
		char *torn = malloc(len);

		ck_assert_ptr_nonnull(torn);
		from = last.offset;
		memcpy(torn, buf, len);
		memset(torn + last.offset + last.size / 2, 0, len - last.offset - last.size / 2);
		test_write_file(last.file, torn, len);
		free(buf);
		buf = torn;
	} else {
		/* a later page of the batch reached the disk, not the one before it */
		from = last.offset + last.size;
		memset(buf + from + 100, 0x5a, 50);
		test_write_file(last.file, buf, len);
	}
	ck_assert_int_eq(ctl(out, sizeof(out), "ledger verify --state-dir '%s'", d.state), 0);
	ck_assert_msg(strstr(out, "torn tail") && !strstr(out, "damage"), "verify:\n%s", out);

	ck_assert_int_eq(restart(), 0);
	log = daemon_log();
	ck_assert_msg(strstr(log, "torn tail") && strstr(log, "kept in"),
	              "no torn tail kept in quarantine in the log:\n%.2000s", log);
	free(log);
	/* the quarantine holds the torn bytes up to the last non-zero one */
	for (n = len - from; n > 0 && buf[from + n - 1] == 0; n--)
		;
	ck_assert_uint_eq(n, _i == 0 ? last.size / 2 : 150);
	assert_quarantined(last.file, from, buf + from, n);
	free(buf);
	ck_assert_int_eq(txn_status(&w), _i == 0 ? SC_TXN_PENDING : SC_TXN_SETTLED);
	ck_assert_int_eq(ctl(out, sizeof(out), "ledger verify --state-dir '%s'", d.state), 0);
	ck_assert_msg(strstr(out, "quarantine: 1 torn tail(s)") && !strstr(out, "repaired: "),
	              "verify does not count the recovery:\n%s", out);
}
END_TEST

/* ----- a torn-looking last record under a snapshot ----- */

static int64_t stat_of(const char *name)
{
	int64_t v = 0;

	OK(sc_stat(c, name, &v));
	return v;
}

START_TEST(test_snapshot_covers_tail)
{
	char *buf, out[8192], snap[64];
	struct recs *rs;
	struct rec last;
	size_t len;
	uint64_t seq;

	settle();
	seq = (uint64_t)stat_of("ledger_durable_seq");
	/* wait for the snapshot of the last record (at most the interval, 1 s) */
	for (int i = 0; i < 1000 && (uint64_t)stat_of("checkpoint_seq") < seq; i++)
		test_sleep_ms(10);
	ck_assert_uint_eq((uint64_t)stat_of("checkpoint_seq"), seq);
	kill_daemon(SIGKILL);
	rs = records();
	last = rs->v[rs->n - 1];
	free(rs);
	ck_assert_uint_eq(last.seq, seq);
	/* exactly what an unfinished write leaves: zeros from the middle of the record */
	buf = test_read_file(last.file, &len);
	memset(buf + last.offset + last.size / 2, 0, last.size - last.size / 2);
	test_write_file(last.file, buf, len);
	free(buf);

	snprintf(snap, sizeof(snap), "checkpoints/%016" PRIx64 ".snap", seq);
	assert_verify_damage(&last);
	assert_refused(&last, snap);
	repair(out, sizeof(out));
	ck_assert_msg(strstr(out, "the snapshot") && strstr(out, "holds changes up to record") &&
	                  strstr(out, "moved to"),
	              "the repair does not say the snapshot covered the record:\n%s", out);
	ck_assert_int_eq(restart(), 0);
	ck_assert_uint_eq(last_seq(), seq - 1);
}
END_TEST

/* ----- damage in the middle, with later segments and snapshots ----- */

START_TEST(test_middle_damage_repaired)
{
	struct world w = settle();
	sc_check_req req = { .agent_id = w.agent, .action = "openai.chat",
		             .estimated_cost = USD(0.01) };
	struct recs *rs;
	struct rec victim;
	sc_decision dec;
	char *buf, out[16384], path[512];
	size_t len, later = 0;
	int snaps = 0;

	for (int i = 0; i < 60; i++)
		OK(sc_check(c, &req, &dec));
	kill_daemon(SIGTERM);
	rs = records();
	victim = rs->v[rs->n / 3];
	for (size_t i = rs->n / 3; i < rs->n; i++)
		if (strcmp(rs->v[i].file, victim.file) != 0 &&
		    (i == 0 || strcmp(rs->v[i].file, rs->v[i - 1].file) != 0))
			later++;
	free(rs);
	ck_assert_uint_ge(later, 2);
	/*
	 * A snapshot beyond the damage. Real ones here would have pruned the
	 * segments before them (and the repair would refuse: nothing to rebuild
	 * from); the repair only moves it, by its name.
	 */
	snprintf(path, sizeof(path), "%s/checkpoints/%016" PRIx64 ".snap", d.state,
	         victim.seq + 5);
	test_write_file(path, "not read by the repair", 22);

	buf = test_read_file(victim.file, &len);
	buf[victim.offset + victim.size / 2] ^= 0x10;
	test_write_file(victim.file, buf, len);
	free(buf);

	assert_verify_damage(&victim);
	ck_assert_msg(restart() == 1, "the daemon started on a damaged ledger");
	repair(out, sizeof(out));
	for (const char *p = out; (p = strstr(p, "the later segment")) != NULL; p++)
		later--;
	ck_assert_msg(later == 0, "the repair did not move every later segment:\n%s", out);
	for (const char *p = out; (p = strstr(p, "the snapshot")) != NULL; p++)
		snaps++;
	ck_assert_msg(snaps == 1 && access(path, F_OK) != 0,
	              "the snapshot beyond the damage stayed:\n%s", out);
	ck_assert_int_eq(restart(), 0);
	ck_assert_uint_eq(last_seq(), victim.seq - 1);
	ck_assert_int_eq(ctl(out, sizeof(out), "ledger verify --state-dir '%s'", d.state), 0);
}
END_TEST

void ledger_damage_tcases(Suite *s)
{
	tcase_add_loop_test(test_add_tcase_tmp(s, "damage-last-bit", setup_default, stop,
	                                       TEST_TIMEOUT_S),
	                    test_last_record_bit_flip, 0, (int)(sizeof(flips) / sizeof(flips[0])));
	tcase_add_test(test_add_tcase_tmp(s, "damage-repair-offline", setup_default, stop,
	                                  TEST_TIMEOUT_S),
	               test_repair_refuses_running_daemon);
	tcase_add_loop_test(test_add_tcase_tmp(s, "torn-tail-quarantined", setup_default, stop,
	                                       TEST_TIMEOUT_S),
	                    test_torn_tail_quarantined, 0, 2);
	tcase_add_test(test_add_tcase_tmp(s, "damage-under-snapshot", setup_snapshots, stop,
	                                  TEST_TIMEOUT_S),
	               test_snapshot_covers_tail);
	tcase_add_test(test_add_tcase_tmp(s, "damage-middle", setup_segments, stop, TEST_TIMEOUT_S),
	               test_middle_damage_repaired);
}
