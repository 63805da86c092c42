/*
 * bench_util.c: what bench/gate_bench needs beside the systems it measures:
 * latency histograms (each client thread fills its own; the main thread
 * merges them after joining), clocks, a per-thread random generator,
 * /proc accounting of a server process (CPU seconds, resident memory), and
 * starting and stopping peer server processes that die with the benchmark
 * (PR_SET_PDEATHSIG), so an interrupted run leaves nothing behind.
 *
 * Threads: hist_add and bench_rand touch only the caller's own data; the
 * process functions are called by the main thread.
 */
#include <errno.h>
#include <fcntl.h>
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

#include "gate_bench.h"

void hist_add(struct hist *h, int64_t ns)
{
	uint64_t v = ns < 0 ? 0 : (uint64_t)ns;
	unsigned e;
	size_t i;

	if (v < 2 * HIST_SUB) {
		i = (size_t)v;
	} else {
		if (v >> (HIST_MAX_EXP + 1))
			v = (UINT64_C(1) << (HIST_MAX_EXP + 1)) - 1;
		e = 63 - (unsigned)__builtin_clzll(v); /* 2^e <= v: e >= 7 */
		i = 2 * HIST_SUB + (size_t)(e - 7) * HIST_SUB + (size_t)((v >> (e - 6)) - HIST_SUB);
	}
	h->b[i]++;
	h->n++;
}

void hist_merge(struct hist *into, const struct hist *from)
{
	size_t i;

	for (i = 0; i < HIST_BUCKETS; i++)
		into->b[i] += from->b[i];
	into->n += from->n;
}

/* The middle of bucket i, in nanoseconds. */
static double bucket_ns(size_t i)
{
	size_t k, e;
	uint64_t low, width;

	if (i < 2 * HIST_SUB)
		return (double)i;
	k = i - 2 * HIST_SUB;
	e = 7 + k / HIST_SUB;
	width = UINT64_C(1) << (e - 6);
	low = (uint64_t)(HIST_SUB + k % HIST_SUB) * width;
	return (double)low + (double)width / 2;
}

double hist_quantile_us(const struct hist *h, double p)
{
	uint64_t rank, seen = 0;
	size_t i;

	if (h->n == 0)
		return 0;
	rank = (uint64_t)(p * (double)(h->n - 1)) + 1;
	for (i = 0; i < HIST_BUCKETS; i++) {
		seen += h->b[i];
		if (seen >= rank)
			return bucket_ns(i) / 1000.0;
	}
	return bucket_ns(HIST_BUCKETS - 1) / 1000.0;
}

int64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void bench_sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

uint64_t bench_rand(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * UINT64_C(2685821657736338717);
}

int proc_sample(pid_t pid, struct proc_sample *out)
{
	char path[64], buf[2048], *p;
	unsigned long utime, stime;
	long rss_kb = -1;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* the command name may hold spaces and parentheses: fields restart after the last ')' */
	if ((p = strrchr(buf, ')')) == NULL ||
	    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
		return -1;
	out->cpu_s = (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	while (fgets(buf, sizeof(buf), f) != NULL)
		if (sscanf(buf, "VmRSS: %ld kB", &rss_kb) == 1)
			break;
	fclose(f);
	out->rss_mib = rss_kb < 0 ? 0 : (double)rss_kb / 1024.0;
	return 0;
}

pid_t bench_spawn(const char *const *argv, const char *log)
{
	pid_t parent = getpid(), pid = fork();
	int fd;

	if (pid != 0)
		return pid;
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != parent)
		_exit(127);
	fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0 || dup2(fd, STDOUT_FILENO) < 0 || dup2(fd, STDERR_FILENO) < 0)
		_exit(127);
	execvp(argv[0], (char *const *)argv);
	fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

int bench_reap(pid_t pid)
{
	int status, waited;

	if (pid <= 0)
		return -1;
	kill(pid, SIGTERM);
	for (waited = 0; waited < 10000; waited += 5) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		bench_sleep_ms(5);
	}
	kill(pid, SIGKILL);
	if (waitpid(pid, &status, 0) != pid)
		return -1;
	return 128 + SIGKILL;
}

int bench_wait_socket(const char *path, pid_t pid)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int waited, fd, ok, status;

	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
	for (waited = 0; waited < 10000; waited += 5) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			return 0;
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		ok = fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0;
		if (fd >= 0)
			close(fd);
		if (ok)
			return 1;
		bench_sleep_ms(5);
	}
	return 0;
}

size_t bench_meta_value_len(size_t bytes)
{
	/* fixmap header (1) + "note" (1 + 4) + the value's str header (1, 2 or 3 bytes) */
	size_t fixed = 1 + 5, v;

	if (bytes < fixed + 1)
		return 0;
	v = bytes - fixed - 1;
	if (v <= 31)
		return v;
	v = bytes - fixed - 2;
	if (v <= 255)
		return v;
	return bytes - fixed - 3;
}
