/*
 * bench_util.c: the support every benchmark in bench/ shares
 * (bench_util.h): latency histograms (each client thread fills its own; the
 * main thread merges them after joining), clocks, a per-thread random
 * generator, /proc accounting of a server process (CPU seconds, resident
 * memory), starting and stopping peer server processes that die with the
 * benchmark (PR_SET_PDEATHSIG), so an interrupted run leaves nothing
 * behind, the lines every report ends with, and the daemon a benchmark runs
 * on a directory of its own.
 *
 * Threads: hist_add, bench_rand and bench_fail touch only the caller's own
 * data; the rest is called by the main thread.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
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

#include "bench_util.h"
#include "tmpdir.h"

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

uint64_t bench_rand(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * UINT64_C(2685821657736338717);
}

int bench_cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

int proc_mem(pid_t pid, struct proc_mem *out)
{
	char path[64], line[256];
	unsigned long long kb;
	int found = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	*out = (struct proc_mem){ 0, 0, 0 };
	while (fgets(line, sizeof(line), f) != NULL) {
		if (sscanf(line, "VmRSS: %llu kB", &kb) == 1) {
			out->rss = kb * 1024;
			found |= 1;
		} else if (sscanf(line, "RssAnon: %llu kB", &kb) == 1) {
			out->anon = kb * 1024;
			found |= 2;
		} else if (sscanf(line, "RssFile: %llu kB", &kb) == 1) {
			out->file += kb * 1024;
			found |= 4;
		} else if (sscanf(line, "RssShmem: %llu kB", &kb) == 1) {
			out->file += kb * 1024;
			found |= 8;
		}
	}
	fclose(f);
	return found == 15 ? 0 : -1;
}

int proc_sample(pid_t pid, struct proc_sample *out)
{
	char path[64], buf[2048], *p;
	unsigned long utime, stime;
	struct proc_mem m;
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
	if (proc_mem(pid, &m) != 0)
		return -1;
	out->rss_mib = (double)m.rss / (1024.0 * 1024.0);
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
		test_sleep_ms(5);
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
		test_sleep_ms(5);
	}
	return 0;
}

void bench_cpu_model(char *model, size_t len)
{
	char line[512];
	FILE *f = fopen("/proc/cpuinfo", "r");

	snprintf(model, len, "unknown");
	while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
		char *colon = strchr(line, ':');

		if (strncmp(line, "model name", 10) == 0 && colon != NULL) {
			snprintf(model, len, "%s", colon + 2);
			model[strcspn(model, "\n")] = '\0';
			break;
		}
	}
	if (f != NULL)
		fclose(f);
}

void bench_print_command(const char *prog, int argc, char **argv, const char *daemon)
{
	int i;

	printf("command: bench/%s", prog);
	for (i = 1; i < argc; i++)
		printf(" %s", argv[i]);
	printf("   (daemon %s)\n", daemon);
}

int bench_other_arg(const char *arg, void (*usage)(FILE *out))
{
	if (strcmp(arg, "--help") == 0) {
		usage(stdout);
		return 0;
	}
	usage(stderr);
	return 2;
}

void bench_fail(struct bench_fail *f, int index, sc_client *c, int rc, const char *what)
{
	if (f->rc != 0)
		return;
	f->rc = rc != 0 ? rc : SC_EINTERNAL;
	snprintf(f->error, sizeof(f->error), "client %d: %s: %s: %s", index, what, sc_err_name(rc),
	         c ? sc_last_error(c) : "");
}

/* ----- a fleet of agents ----- */

struct creator {
	pthread_t thread;
	int index;
	const char *socket, *org;
	uint32_t first, count; /* agents first .. first + count - 1 */
	sc_micros balance;
	const sc_rule *rules;
	unsigned n_rules;
	struct bench_fail fail;
};

static void *creator_main(void *arg)
{
	struct creator *cr = arg;
	sc_wallet_update u = { .set = SC_WALLET_SET_BALANCE, .balance = cr->balance };
	sc_client *c = NULL;
	sc_agent a;
	int rc = sc_connect(cr->socket, &c);

	if (rc != 0) {
		bench_fail(&cr->fail, cr->index, NULL, rc, "connect");
		return NULL;
	}
	for (uint32_t i = cr->first; i < cr->first + cr->count && cr->fail.rc == 0; i++) {
		char name[32];

		snprintf(name, sizeof(name), "agent-%07" PRIu32, i);
		if ((rc = sc_agents_create(c, cr->org, name, SC_PRIORITY_NORMAL, &u, cr->rules,
		                           cr->n_rules, &a)) != 0)
			bench_fail(&cr->fail, cr->index, c, rc, "agents.create");
	}
	sc_close(c);
	return NULL;
}

int bench_create_agents(const char *socket, const char *org, uint32_t n, int clients,
                        sc_micros balance, const sc_rule *rules, unsigned n_rules, char *err,
                        size_t len)
{
	struct creator *cr = calloc((size_t)clients, sizeof(*cr));
	int failed = 0;

	if (cr == NULL || clients < 1) {
		snprintf(err, len, "no memory for %d client threads", clients);
		free(cr);
		return -1;
	}
	for (int i = 0; i < clients; i++) {
		uint32_t share = n / (uint32_t)clients;

		cr[i] = (struct creator){ .index = i, .socket = socket, .org = org,
			                  .first = share * (uint32_t)i, .balance = balance,
			                  .rules = rules, .n_rules = n_rules };
		cr[i].count = i == clients - 1 ? n - cr[i].first : share;
		pthread_create(&cr[i].thread, NULL, creator_main, &cr[i]);
	}
	for (int i = 0; i < clients; i++) {
		pthread_join(cr[i].thread, NULL);
		if (cr[i].fail.rc != 0 && !failed) {
			snprintf(err, len, "%s", cr[i].fail.error);
			failed = 1;
		}
	}
	free(cr);
	return failed ? -1 : 0;
}

/* The directory of the segment (struct bench_daemon), made on first use. 0 or -1. */
static int segment_dir(struct bench_daemon *bd, char *err, size_t len)
{
	const char *base = getenv("SIDECARD_BENCH_SEGMENT_DIR");

	if (bd->seg_dir[0] != '\0')
		return 0;
	if (base == NULL || base[0] == '\0')
		base = getenv("XDG_RUNTIME_DIR");
	if (base == NULL || base[0] == '\0')
		base = "/dev/shm";
	if ((size_t)snprintf(bd->seg_dir, sizeof(bd->seg_dir), "%s/sidecard-bench.XXXXXX", base) >=
	            sizeof(bd->seg_dir) ||
	    mkdtemp(bd->seg_dir) == NULL) {
		snprintf(err, len, "cannot make a directory for the segment in %s: %s", base,
		         strerror(errno));
		bd->seg_dir[0] = '\0';
		return -1;
	}
	snprintf(bd->seg_arg, sizeof(bd->seg_arg), "%s/sidecard.shm", bd->seg_dir);
	return 0;
}

int bench_daemon_start(struct bench_daemon *bd, const char *const *extra, char *err, size_t len)
{
	/* room for --segment, its FILE and the NULL */
	size_t at, n = 0, max = sizeof(bd->extra) / sizeof(bd->extra[0]) - 3;
	int i;

	if (bd->dir[0] == '\0' && test_tmpdir(bd->dir, sizeof(bd->dir)) != 0) {
		snprintf(err, len, "cannot make a temporary directory");
		return -1;
	}
	if (segment_dir(bd, err, len) != 0)
		return -1;
	for (; extra != NULL && extra[n] != NULL; n++) {
		if (n == max) {
			snprintf(err, len, "more than %zu extra daemon arguments", max);
			return -1;
		}
		bd->extra[n] = extra[n];
	}
	bd->extra[n++] = "--segment";
	bd->extra[n++] = bd->seg_arg;
	bd->extra[n] = NULL;
	extra = bd->extra;
	snprintf(bd->log, sizeof(bd->log), "%s/daemon.log", bd->dir);
	if (test_daemon_start_in(&bd->d, bd->dir, bd->log, extra) == 0)
		return 0;
	/* the whole command line: which of the options it refused is in the log */
	at = (size_t)snprintf(err, len, "%s", test_daemon_bin());
	for (i = 0; extra != NULL && extra[i] != NULL && at < len; i++)
		at += (size_t)snprintf(err + at, len - at, " %s", extra[i]);
	if (at < len)
		snprintf(err + at, len - at, " did not start; its output is in %s", bd->log);
	return -1;
}

int bench_daemon_stop(struct bench_daemon *bd, int keep, char *err, size_t len)
{
	int rc = test_daemon_stop(&bd->d);

	/* the segment holds nothing its log does not say, and memory while it stays */
	if (bd->seg_dir[0] != '\0')
		test_rm_tree(bd->seg_dir);
	bd->seg_dir[0] = '\0';
	if (rc != 0) {
		snprintf(err, len, "the daemon stopped with status %d; its log is %s", rc, bd->log);
		return -1;
	}
	if (!keep)
		test_rm_tree(bd->dir);
	return 0;
}
