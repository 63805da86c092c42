/*
 * daemon.h: runs the real sidecard daemon as a child process for
 * integration tests, on a fresh temporary directory (socket and state) that
 * is removed when the daemon is stopped.
 *
 * The binary is $SIDECARD_BIN, else sidecard/sidecard found from the test
 * binary's directory (../sidecard/sidecard, or ../../ under libtool's .libs)
 * or from the current directory (the build directory under make check).
 *
 * Threads: call from one thread, the test's main thread (the daemon is
 * tied to the thread that started it: it receives SIGTERM if that thread's
 * process dies, so a test killed by its timeout never leaves a daemon
 * behind).
 */
#ifndef SC_TESTS_DAEMON_H
#define SC_TESTS_DAEMON_H

#include <sys/types.h>

struct test_daemon {
	pid_t pid;              /* 0 when not running */
	char dir[64];           /* the temporary directory */
	char socket[96];        /* dir/sidecard.sock */
	char state[96];         /* dir/state */
	const char *extra[16];  /* extra daemon arguments, kept for restarts */
	const char *log;        /* if set (after start): later runs append their stderr there */
	int status;             /* exit code of the last run that ended (see test_daemon_stop) */
};

/*
 * Starts the daemon on a new temporary directory with the extra arguments
 * (NULL-terminated, or NULL) and waits until its socket accepts connections
 * (at most 10 s). Returns 0, or -1 with the reason on stderr.
 */
int test_daemon_start(struct test_daemon *d, const char *const *extra);

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
 * Stops the daemon and removes its directory. Returns the daemon's exit
 * status (0 for a clean stop), 128 + signal if it died by one, or -1.
 */
int test_daemon_stop(struct test_daemon *d);

/* Kills the calling process with SIGALRM after `seconds` (0 cancels): a hung
 * daemon then fails the test instead of hanging the suite. */
void test_daemon_timeout(unsigned seconds);

#endif /* SC_TESTS_DAEMON_H */
