/*
 * daemon.h: runs the real sidecard daemon as a child process, for the
 * integration tests, the crash harness (tests/crash.c) and the ledger
 * benchmark (bench/ledger_bench.c). Check-free.
 *
 * test_daemon_start runs it on a fresh temporary directory (socket and
 * state) that test_daemon_stop removes; test_daemon_start_in on a directory
 * the caller made and keeps, so that it survives the daemon (restarts after
 * a kill, a directory kept for inspection after a failure).
 *
 * The binary is $SIDECARD_BIN, else sidecard/sidecard found from the
 * program's directory (../sidecard/sidecard, or ../../ under libtool's
 * .libs) or from the current directory (the build directory under make
 * check).
 *
 * Threads: call from one thread, the program's main thread (the daemon is
 * tied to the thread that started it: it receives SIGTERM if that thread's
 * process dies, so a test killed by its timeout never leaves a daemon
 * behind).
 */
#ifndef SC_TESTS_DAEMON_H
#define SC_TESTS_DAEMON_H

#include <sys/types.h>

struct test_daemon {
	pid_t pid;              /* 0 when not running */
	char dir[64];           /* its directory */
	char socket[96];        /* dir/sidecard.sock */
	char state[96];         /* dir/state */
	char segment[160];      /* the state segment: dir/sidecard.shm, beside the socket,
	                           or the --segment of extra */
	const char *extra[24];  /* extra daemon arguments, kept for restarts */
	const char *log;        /* if set: later runs append their stdout and stderr there */
	int status;             /* exit code of the last run that ended (see test_daemon_stop) */
	int keep_dir;           /* the caller's directory (test_daemon_start_in) */
};

/* The daemon binary that test_daemon_start runs (see above). */
const char *test_daemon_bin(void);

/*
 * Starts the daemon on a new temporary directory (tmpdir.h) with the extra
 * arguments (NULL-terminated, or NULL; the strings must outlive d) and waits
 * until its socket accepts connections (at most 30 s). Returns 0, or -1 with
 * the reason on stderr.
 */
int test_daemon_start(struct test_daemon *d, const char *const *extra);

/*
 * The same on dir, which the caller made and removes (test_daemon_stop
 * leaves it), with every run's stdout and stderr appended to log (NULL:
 * inherited; the caller's string, which must outlive d).
 */
int test_daemon_start_in(struct test_daemon *d, const char *dir, const char *log,
                         const char *const *extra);

/*
 * Stops the daemon (SIGTERM; SIGKILL after 10 s) and starts it again on the
 * same state directory with the same arguments; a daemon already stopped by
 * test_daemon_kill is just started. 0 or -1; a daemon that exits before
 * accepting leaves its exit code in d->status.
 */
int test_daemon_restart(struct test_daemon *d);

/*
 * Sends sig to the daemon and waits for it to end, keeping its directory for
 * test_daemon_restart. Returns its exit code (as test_daemon_stop) or -1.
 */
int test_daemon_kill(struct test_daemon *d, int sig);

/*
 * Stops the daemon (SIGTERM; SIGKILL after 10 s) and removes its directory
 * unless it is the caller's. Returns the daemon's exit status (0 for a clean
 * stop), 128 + signal if it died by one; 0 if it was not running (stopped or
 * killed before, or never started).
 */
int test_daemon_stop(struct test_daemon *d);

/*
 * From now on, the runs of d (restarts) append their output to
 * <d's directory>/daemon.log, whose path is written to buf (which must
 * outlive d), so that a test can read what the daemon said.
 */
void test_daemon_log_to_dir(struct test_daemon *d, char *buf, size_t len);

/* Kills the calling process with SIGALRM after `seconds` (0 cancels): a hung
 * daemon then fails the test instead of hanging the suite. */
void test_daemon_timeout(unsigned seconds);

/* Sleeps ms milliseconds, through signals (the tests that drive a daemon wait with it). */
void test_sleep_ms(long ms);

#endif /* SC_TESTS_DAEMON_H */
