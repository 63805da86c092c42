/*
 * bench_util.h: what every benchmark in bench/ needs beside what it
 * measures (bench_util.c, linked into each of them): clocks, a per-thread
 * random generator, latency histograms, /proc accounting of a server
 * process, the machine and command lines every report ends with, the
 * end of an option loop, a client thread's first error, and a daemon of
 * the benchmark's own (tests/daemon.c) on a directory that keeps its log.
 *
 * Threads: hist_add, bench_rand and bench_fail touch only the caller's own
 * data and may run on client threads; everything else is for the main
 * thread.
 */
#ifndef SC_BENCH_BENCH_UTIL_H
#define SC_BENCH_BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "daemon.h"
#include "sidecard.h"

/* ----- time, random numbers, sorting ----- */

int64_t bench_now_ns(void); /* CLOCK_MONOTONIC; sleeping is tests/daemon.h's test_sleep_ms */
/* A fast per-thread random number (xorshift64*); *state must not be 0. */
uint64_t bench_rand(uint64_t *state);
/* qsort's comparison of int64_t values, ascending. */
int bench_cmp_i64(const void *a, const void *b);

/* ----- latency histogram ----- */

/*
 * Log-linear buckets: values below 2 * HIST_SUB ns exactly, then HIST_SUB
 * buckets per power of two (under 1.6% apart) up to 2^HIST_MAX_EXP ns.
 * Percentiles come from counts, so millions of samples cost no sorting.
 */
#define HIST_SUB 64
#define HIST_MAX_EXP 40
#define HIST_BUCKETS (2 * HIST_SUB + (HIST_MAX_EXP - 7 + 1) * HIST_SUB)

struct hist {
	uint64_t n;
	uint64_t b[HIST_BUCKETS];
};

void hist_add(struct hist *h, int64_t ns);
void hist_merge(struct hist *into, const struct hist *from);
/* The p-quantile (0..1) in microseconds; 0 without samples. */
double hist_quantile_us(const struct hist *h, double p);

/* ----- processes ----- */

/* Resident memory of a process from /proc/PID/status, in bytes. */
struct proc_mem {
	uint64_t rss;  /* VmRSS: the whole footprint */
	uint64_t anon; /* RssAnon: the heap */
	uint64_t file; /* RssFile + RssShmem: touched pages of mapped files and shared memory */
};
/* 0, or -1 if the file cannot be read or lacks one of the four lines. */
int proc_mem(pid_t pid, struct proc_mem *out);

/* CPU seconds (user + system, /proc/PID/stat) and resident MiB of a process. 0 or -1. */
struct proc_sample {
	double cpu_s;
	double rss_mib;
};
int proc_sample(pid_t pid, struct proc_sample *out);

/* Starts argv as a child that dies with this process, output to log. pid or -1. */
pid_t bench_spawn(const char *const *argv, const char *log);
/* SIGTERM, then SIGKILL after 10 s; the exit code (128 + signal if killed), -1 if none. */
int bench_reap(pid_t pid);
/* 1 once a Unix socket at path accepts a connection, polled for up to 10 s; 0 if not. */
int bench_wait_socket(const char *path, pid_t pid);

/* ----- what a report ends with ----- */

/* The CPU's model name from /proc/cpuinfo into model ("unknown" if none). */
void bench_cpu_model(char *model, size_t len);
/*
 * Prints "command: bench/PROG ARGS   (daemon DAEMON)": the command line
 * that reproduces the table above it, and the daemon it measured.
 */
void bench_print_command(const char *prog, int argc, char **argv, const char *daemon);

/*
 * What an option loop does with an argument it does not take: --help
 * prints the usage to stdout, anything else prints it to stderr. Returns
 * the program's exit code, 0 or 2.
 */
int bench_other_arg(const char *arg, void (*usage)(FILE *out));

/* ----- a client thread's first error ----- */

struct bench_fail {
	int rc; /* 0 while the client has not failed */
	char error[256];
};

/*
 * Records "client INDEX: WHAT: ERROR-NAME: LAST-ERROR" (c may be NULL), unless
 * the client failed before: the first error is the cause, later ones its
 * consequences. rc 0 (a refusal, not an error) records SC_EINTERNAL.
 */
void bench_fail(struct bench_fail *f, int index, sc_client *c, int rc, const char *what);

/* ----- a fleet of agents ----- */

/*
 * Creates agents "agent-0000000" .. n - 1 in org (which exists) on the
 * daemon at socket, from `clients` threads of one connection each, every
 * agent with this balance and the n_rules rules (a fleet provisioned from
 * a template). 0, or -1 with the first client's error in err.
 */
int bench_create_agents(const char *socket, const char *org, uint32_t n, int clients,
                        sc_micros balance, const sc_rule *rules, unsigned n_rules, char *err,
                        size_t len);

/* ----- a daemon of the benchmark's own ----- */

/*
 * The daemon runs on dir (made by the benchmark or given by its user) with
 * its output appended to dir/daemon.log, so that after a failure the log
 * outlives it. Its state segment is where a deployment's is, beside the
 * socket in the runtime directory, a memory file system: a directory the
 * benchmark makes in $SIDECARD_BENCH_SEGMENT_DIR, else $XDG_RUNTIME_DIR,
 * else /dev/shm, and removes when the daemon stops (after a failure too).
 */
struct bench_daemon {
	char dir[4096];
	char log[4200];
	char seg_dir[128];
	char seg_arg[160];
	const char *extra[24];
	struct test_daemon d;
};

/*
 * Starts the daemon (test_daemon_bin) with the extra arguments (NULL-ended;
 * the strings must outlive bd) on bd->dir, a new temporary directory if
 * bd->dir is empty, and waits until it accepts. 0, or -1 with the reason in
 * err (the command line and where its output is).
 */
int bench_daemon_start(struct bench_daemon *bd, const char *const *extra, char *err, size_t len);

/*
 * Stops the daemon with SIGTERM. After a clean stop the directory is
 * removed unless keep; after an unclean one it stays for its log. 0, or -1
 * with the daemon's exit status and its log in err.
 */
int bench_daemon_stop(struct bench_daemon *bd, int keep, char *err, size_t len);

#endif /* SC_BENCH_BENCH_UTIL_H */
