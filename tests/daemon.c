/*
 * daemon.c: starts and stops the real sidecard daemon for the integration
 * tests, the crash harness and the benchmark (see daemon.h for the contract).
 *
 * The daemon runs in the foreground as a child process with
 * `--socket DIR/sidecard.sock --state-dir DIR/state`, then `--workers N`
 * when $SIDECARD_TEST_WORKERS is N (to run a whole suite against worker
 * threads; `make check` does so for check_integration), then the caller's
 * own arguments, which win over it. Readiness is "the socket accepts a connection", polled every
 * 5 ms for at most 30 s (a rebuild from checkpoint and ledger in the crash
 * harness takes a while); a child that exits meanwhile fails the start at
 * once. The child asks for SIGTERM when its parent dies (PR_SET_PDEATHSIG),
 * so a test process killed by Check's timeout or by test_daemon_timeout()'s
 * alarm takes its daemon with it. test_daemon_start's directory comes from
 * test_tmpdir() (tmpdir.h), inside the test case's base directory.
 *
 * Threads: the caller's main thread only. Ownership: the caller owns the
 * struct test_daemon; the child lives from start to stop, the directory too
 * unless it is the caller's (keep_dir).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "tmpdir.h"

#define START_TIMEOUT_MS 30000
#define STOP_TIMEOUT_MS 10000
#define POLL_MS 5

void test_sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* $SIDECARD_BIN or the first executable candidate. */
const char *test_daemon_bin(void)
{
	static const char *const rel[] = { "../sidecard/sidecard", "../../sidecard/sidecard" };
	static char path[PATH_MAX + 32];
	char exe[PATH_MAX];
	const char *env = getenv("SIDECARD_BIN");
	ssize_t n;
	char *slash;
	size_t i;

	if (env != NULL && env[0] != '\0')
		return env;
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = '\0';
		if ((slash = strrchr(exe, '/')) != NULL)
			*slash = '\0';
		for (i = 0; i < sizeof(rel) / sizeof(rel[0]); i++) {
			snprintf(path, sizeof(path), "%s/%s", exe, rel[i]);
			if (access(path, X_OK) == 0)
				return path;
		}
	}
	return "sidecard/sidecard";
}

static int accepts(const char *socket_path)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd, ok;

	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", socket_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	ok = connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0;
	close(fd);
	return ok;
}

/* Decodes a wait status: the exit code, or 128 + the signal. */
static int exit_code(int status)
{
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int spawn(struct test_daemon *d)
{
	const char *argv[8 + sizeof(d->extra) / sizeof(d->extra[0])];
	const char *bin = test_daemon_bin(), *workers = getenv("SIDECARD_TEST_WORKERS");
	pid_t parent = getpid();
	size_t n = 0, i;
	int status;
	long waited;

	argv[n++] = bin;
	argv[n++] = "--socket";
	argv[n++] = d->socket;
	argv[n++] = "--state-dir";
	argv[n++] = d->state;
	if (workers != NULL && workers[0] != '\0') {
		argv[n++] = "--workers";
		argv[n++] = workers;
	}
	for (i = 0; d->extra[i] != NULL; i++)
		argv[n++] = d->extra[i];
	argv[n] = NULL;

	d->pid = fork();
	if (d->pid < 0) {
		perror("test daemon: fork");
		d->pid = 0;
		return -1;
	}
	if (d->pid == 0) {
		int log;

		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			_exit(127);
		if (d->log != NULL) {
			log = open(d->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
			if (log < 0 || dup2(log, STDOUT_FILENO) < 0 || dup2(log, STDERR_FILENO) < 0)
				_exit(127);
		}
		execv(bin, (char *const *)argv);
		fprintf(stderr, "test daemon: cannot run %s: %s (set SIDECARD_BIN)\n", bin,
		        strerror(errno));
		_exit(127);
	}
	for (waited = 0; waited < START_TIMEOUT_MS; waited += POLL_MS) {
		if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
			d->status = exit_code(status);
			fprintf(stderr, "test daemon: %s exited with %d before accepting\n", bin,
			        d->status);
			d->pid = 0;
			return -1;
		}
		if (accepts(d->socket))
			return 0;
		test_sleep_ms(POLL_MS);
	}
	fprintf(stderr, "test daemon: %s did not accept on %s within %d ms\n", bin, d->socket,
	        START_TIMEOUT_MS);
	kill(d->pid, SIGKILL);
	waitpid(d->pid, &status, 0);
	d->pid = 0;
	return -1;
}

/* SIGTERM, then SIGKILL after STOP_TIMEOUT_MS. Returns the exit code, 0 if not running. */
static int terminate(struct test_daemon *d)
{
	int status;
	long waited;

	if (d->pid == 0)
		return 0;
	kill(d->pid, SIGTERM);
	for (waited = 0; waited < STOP_TIMEOUT_MS; waited += POLL_MS) {
		if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
			d->pid = 0;
			return exit_code(status);
		}
		test_sleep_ms(POLL_MS);
	}
	fprintf(stderr, "test daemon: pid %d ignored SIGTERM for %d ms, killing it\n", (int)d->pid,
	        STOP_TIMEOUT_MS);
	kill(d->pid, SIGKILL);
	waitpid(d->pid, &status, 0);
	d->pid = 0;
	return exit_code(status);
}

/* Fills d for a run on dir with extra. 0 or -1. */
static int prepare(struct test_daemon *d, const char *dir, const char *const *extra)
{
	size_t i, max = sizeof(d->extra) / sizeof(d->extra[0]) - 1;
	int n;

	memset(d, 0, sizeof(*d));
	for (i = 0; extra != NULL && extra[i] != NULL; i++) {
		if (i == max) {
			fprintf(stderr, "test daemon: more than %zu extra arguments\n", max);
			return -1;
		}
		d->extra[i] = extra[i];
	}
	n = snprintf(d->dir, sizeof(d->dir), "%s", dir);
	if (n < 0 || (size_t)n >= sizeof(d->dir)) {
		fprintf(stderr, "test daemon: directory name too long: %s\n", dir);
		return -1;
	}
	snprintf(d->socket, sizeof(d->socket), "%s/sidecard.sock", d->dir);
	snprintf(d->state, sizeof(d->state), "%s/state", d->dir);
	snprintf(d->segment, sizeof(d->segment), "%s/sidecard.shm", d->dir);
	for (i = 0; d->extra[i] != NULL; i++)
		if (strcmp(d->extra[i], "--segment") == 0 && d->extra[i + 1] != NULL)
			snprintf(d->segment, sizeof(d->segment), "%s", d->extra[i + 1]);
	return 0;
}

int test_daemon_start(struct test_daemon *d, const char *const *extra)
{
	char dir[sizeof(d->dir)];

	if (test_tmpdir(dir, sizeof(dir)) != 0)
		return -1;
	if (prepare(d, dir, extra) != 0 || spawn(d) != 0) {
		test_rm_tree(dir);
		d->dir[0] = '\0';
		return -1;
	}
	return 0;
}

int test_daemon_start_in(struct test_daemon *d, const char *dir, const char *log,
                         const char *const *extra)
{
	if (prepare(d, dir, extra) != 0)
		return -1;
	d->keep_dir = 1;
	d->log = log;
	return spawn(d);
}

int test_daemon_restart(struct test_daemon *d)
{
	int rc = terminate(d);

	if (rc != 0) {
		fprintf(stderr, "test daemon: stopped with status %d\n", rc);
		return -1;
	}
	return spawn(d);
}

int test_daemon_kill(struct test_daemon *d, int sig)
{
	int status;

	if (d->pid == 0)
		return -1;
	kill(d->pid, sig);
	if (waitpid(d->pid, &status, 0) != d->pid)
		return -1;
	d->pid = 0;
	return d->status = exit_code(status);
}

int test_daemon_stop(struct test_daemon *d)
{
	int rc = terminate(d);

	if (d->dir[0] != '\0' && !d->keep_dir) {
		test_rm_tree(d->dir);
		d->dir[0] = '\0';
	}
	return rc;
}

void test_daemon_timeout(unsigned seconds)
{
	signal(SIGALRM, SIG_DFL);
	alarm(seconds);
}

void test_daemon_log_to_dir(struct test_daemon *d, char *buf, size_t len)
{
	snprintf(buf, len, "%s/daemon.log", d->dir);
	d->log = buf;
}
