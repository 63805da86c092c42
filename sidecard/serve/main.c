/*
 * main.c: the sidecard daemon's entry point. Loads the configuration, takes
 * the state directory and the state segment (one daemon for each), attaches
 * to the segment or rebuilds it, starts the server and the hold-expiry
 * timer on the main libuv loop, pushes new alerts to their subscribers
 * after every loop iteration, and drains cleanly on SIGTERM, SIGINT or
 * SIGQUIT. SIGHUP, SIGUSR1 and SIGUSR2 are logged and ignored: there is no
 * configuration to reload, and a stray hang-up (a closed terminal, a log
 * rotation script) must not stop the gate.
 *
 * Threads: the main thread runs the main loop: the listener, the ledger's
 * group commit, the expiry and checkpoint timers, the alert push and the
 * signals. With --workers 1 it also serves every connection. With
 * --workers N the server runs N worker threads that serve the connections
 * (server.c) and call dispatch_request concurrently; each is registered
 * with liburcu (on_worker_thread). The state has one writer at a time: the
 * dispatcher's commit lock (d->dispatch.lock), which the main loop takes
 * too whenever it reads or changes the state, and which the ledger takes
 * to swap its pending records. A worker reaches the main loop only through
 * d->wake (re-arm the expiry timer, push alerts) and the ledger's own
 * wake-up. liburcu adds its call_rcu worker. At start-up, before any of
 * these, a thread checks the ledger while the main thread replays it
 * (recover, ledger_verify_start); it is joined before the loop starts.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <urcu.h>
#include <uv.h>

#include "checkpoint.h"
#include "clock.h"
#include "daemon_config.h"
#include "dispatch.h"
#include "fdlimit.h"
#include "fsutil.h"
#include "gate.h"
#include "ledger_writer.h"
#include "log.h"
#include "server.h"
#include "state.h"

/* What a segment is stamped with (shm.h, CRASH SAFETY): whose contents it holds. */
struct owner {
	int known; /* 0: this boot's id could not be read, so no segment is ours */
	uint8_t boot_id[16];
	uint64_t dev, ino;
};

struct daemon {
	struct config cfg;
	struct srv_config srv_cfg;
	uv_loop_t loop;
	uv_timer_t expiry, checkpoint_timer;
	int64_t timer_due; /* when the expiry timer fires (daemon time) */
	uint64_t timer_steps; /* dispatch.steps when it was armed: a step since moved timer_due */
	uv_check_t alerts; /* pushes the alerts raised during the iteration */
	uv_async_t wake;   /* from workers: a hold was placed, or alerts wait for a push */
	uv_signal_t signals[6]; /* stop_signals, then ignored_signals */
	uv_work_t prune;        /* removes what a new snapshot made obsolete, off the loop */
	uint64_t prune_below, prune_seq;
	int pruning, pruned;
	struct state *st;
	struct srv *srv;
	struct ledger *ledger;
	struct checkpointer *cp;
	struct dispatch dispatch;
	char ledger_dir[PATH_MAX + 16], ckpt_dir[PATH_MAX + 16];
	const char *shm_path; /* the state segment: d->cfg.segment_path */
	struct owner owner;   /* this boot and state directory, read once at start */
	int stopping;
};

/* This boot's id and the state directory's identity. */
static void owner_of(const char *state_dir, struct owner *o)
{
	char text[64];
	struct stat st;
	unsigned byte;
	ssize_t n = -1;
	size_t i, k = 0;
	int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);

	memset(o, 0, sizeof(*o));
	if (fd >= 0) {
		n = read(fd, text, sizeof(text) - 1);
		close(fd);
	}
	text[n > 0 ? n : 0] = '\0';
	/* a UUID, 36 characters: 16 pairs of hex digits and 4 dashes between pairs */
	for (i = 0; n > 0 && i + 1 < (size_t)n && k < sizeof(o->boot_id); i += 2) {
		if (text[i] == '-')
			i++;
		if (sscanf(text + i, "%2x", &byte) != 1)
			break;
		o->boot_id[k++] = (uint8_t)byte;
	}
	if (stat(state_dir, &st) == 0 && k == sizeof(o->boot_id)) {
		o->known = 1;
		o->dev = (uint64_t)st.st_dev;
		o->ino = (uint64_t)st.st_ino;
	}
}

static int owned(const struct shm_header *h, const struct owner *o)
{
	return o->known && memcmp(h->boot_id, o->boot_id, sizeof(o->boot_id)) == 0 &&
	       h->state_dev == o->dev && h->state_ino == o->ino;
}

static void stamp(struct shm_header *h, const struct owner *o)
{
	memcpy(h->boot_id, o->boot_id, sizeof(o->boot_id));
	h->state_dev = o->dev;
	h->state_ino = o->ino;
}

/*
 * One daemon per state directory and per state segment: an exclusive lock
 * on path, held for life. what and name say what it guards, for the error.
 */
static int lock_for_life(const char *path, const char *what, const char *name)
{
	char err[PATH_MAX + 64];
	long holder;
	int fd = fs_lock(path, &holder, err, sizeof(err));

	if (fd == SC_EEXISTS && holder > 0)
		log_error("another sidecard is using the %s %s (pid %ld)", what, name, holder);
	else if (fd == SC_EEXISTS)
		log_error("another sidecard is using the %s %s (pid unknown)", what, name);
	else if (fd < 0)
		log_error("%s", err);
	return fd;
}

/*
 * Creates the state directory and the segment's, and locks both: the
 * segment may live outside the state directory (beside the socket, by
 * default), so its own lock keeps a daemon of another state directory from
 * rebuilding it under a running one. 0, or -1 (logged).
 */
static int take_dirs(const struct config *c, int *state_lock, int *segment_lock)
{
	char path[PATH_MAX + 32], err[PATH_MAX + 128];

	*state_lock = *segment_lock = -1;
	/* nothing is written in a directory another user could change (fsutil.h) */
	if (fs_mkdirs(c->state_dir, 1, err, sizeof(err)) != 0 ||
	    fs_mkdirs(c->segment_path, 0, err, sizeof(err)) != 0 ||
	    fs_mkdirs(c->socket_path, 0, err, sizeof(err)) != 0 ||
	    fs_check_dir(c->state_dir, c->state_dir_default, err, sizeof(err)) != 0 ||
	    fs_check_parent(c->segment_path, c->segment_dir_default, err, sizeof(err)) != 0 ||
	    fs_check_parent(c->socket_path, c->socket_dir_default, err, sizeof(err)) != 0) {
		log_error("%s", err);
		return -1;
	}
	snprintf(path, sizeof(path), "%s/sidecard.lock", c->state_dir);
	if ((*state_lock = lock_for_life(path, "state directory", c->state_dir)) < 0)
		return -1;
	snprintf(path, sizeof(path), "%s.lock", c->segment_path);
	if ((*segment_lock = lock_for_life(path, "state segment", c->segment_path)) < 0) {
		close(*state_lock);
		return -1;
	}
	return 0;
}

static void on_expiry(uv_timer_t *t);

/*
 * The longest the expiry timer waits, in real milliseconds: a step of the
 * wall clock moves the deadlines, and an idle daemon (no request reads the
 * clock) sees one when the timer fires.
 */
#define STEP_WATCH_MS 10000

/*
 * Arms the timer for the oldest hold (all holds share one TTL, so it is the
 * next due) or the next local midnight of an org, whichever comes first,
 * and at most STEP_WATCH_MS away.
 */
static void arm_expiry(struct daemon *d)
{
	int64_t now, next, roll, wait;

	if (d->stopping)
		return;
	pthread_mutex_lock(&d->dispatch.lock);
	/* a step of the wall clock moves the deadlines: the state takes it first */
	now = dispatch_time(&d->dispatch);
	next = gate_next_expiry(d->st);
	roll = gate_next_roll(d->st);
	if (roll < next)
		next = roll;
	d->timer_due = next;
	d->timer_steps = d->dispatch.steps;
	pthread_mutex_unlock(&d->dispatch.lock);
	/* next is on the daemon's clock, which --time-scale may speed up; the timer is real. */
	wait = next == INT64_MAX ? STEP_WATCH_MS : clock_real_wait_ms(sc_add_sat(next, -now));
	if (wait > STEP_WATCH_MS)
		wait = STEP_WATCH_MS;
	uv_timer_start(&d->expiry, on_expiry, (uint64_t)wait, 0);
}

static void on_expiry(uv_timer_t *t)
{
	struct daemon *d = t->data;
	const char *failure;
	unsigned n;

	pthread_mutex_lock(&d->dispatch.lock);
	failure = ledger_failure(d->ledger);
	pthread_mutex_unlock(&d->dispatch.lock);
	if (failure) {
		/* an expiry is a change too: wait until it can be recorded */
		uv_timer_start(&d->expiry, on_expiry, 1000, 0);
		return;
	}
	n = dispatch_expire(&d->dispatch);
	if (n) {
		log_info("%u hold(s) expired", n);
		/* the loop may next block in poll: push what the expiry raised now */
		dispatch_push_alerts(&d->dispatch);
	}
	arm_expiry(d);
}

static void on_loop_turn(uv_check_t *h)
{
	struct daemon *d = h->data;

	dispatch_push_alerts(&d->dispatch);
}

/*
 * Under the commit lock: the timer is armed for a time on the daemon's
 * clock, which a hold due sooner or a step of the wall clock since makes
 * wrong.
 */
static int timer_stale(struct daemon *d)
{
	return gate_next_expiry(d->st) < d->timer_due || d->dispatch.steps != d->timer_steps;
}

/*
 * Under the commit lock, on the thread of the request: the timer is the
 * main loop's, so a hold due before it fires, or a step of the wall clock,
 * asks the main loop to re-arm.
 */
static void on_hold_placed(void *arg)
{
	struct daemon *d = arg;

	if (timer_stale(d))
		uv_async_send(&d->wake);
}

/* Under the commit lock, on the thread of the request: alerts wait for the push. */
static void on_alerts_raised(void *arg)
{
	struct daemon *d = arg;

	uv_async_send(&d->wake);
}

static void stop(struct daemon *d, const char *why);

/* ------------------------------------------------- the segment cut short */

/*
 * The state segment is a file any process with write access may truncate
 * (root, or the daemon's own user in a container that mounts the
 * directory); its mode (0600, or 0640 for a reader group, which may only
 * read) keeps everyone else out. Pages past the new end fault with SIGBUS
 * on the next access. Nothing can make that access safe: extending the file back gives zero
 * pages, and a change that reads zeros where its records were may loop or
 * write a record that no longer replays. So the daemon checks the file's
 * size on every flush (one fstat) and, when it shrank, refuses every
 * request and stops with status 1; and a SIGBUS inside the segment that
 * comes first ends the daemon at once, with status 1, a line on stderr,
 * and the segment removed. Either way the next start rebuilds the state
 * from the ledger, which holds every change acknowledged in strict mode
 * (async mode loses what a crash would: the last --commit-interval). A
 * SIGBUS outside the segment is not ours: the default action runs (the
 * fault repeats once the handler returns).
 */
static struct {
	char *base;
	size_t size;
	int fd;
	const char *path;
} guard;

static void on_sigbus(int sig, siginfo_t *si, void *ctx)
{
	static const char msg[] = "sidecard: error: the state segment was cut short by another "
	                          "process while in use; stopping at once and removing it (the "
	                          "next start rebuilds the state from the ledger)\n";
	char *addr = si->si_addr;

	(void)ctx;
	if (!guard.base || addr < guard.base || addr >= guard.base + guard.size) {
		signal(sig, SIG_DFL);
		return;
	}
	unlink(guard.path);
	if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0)
		_exit(1);
	_exit(1);
}

static void guard_segment(struct daemon *d)
{
	struct sigaction sa;
	const struct shm *m = state_shm(d->st);

	guard.base = m->base;
	guard.size = m->size;
	guard.fd = m->fd;
	guard.path = d->shm_path;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
}

/* Main loop, after each flush: the file shrank. */
static void segment_check(struct daemon *d)
{
	struct stat sb;

	if (guard.base && !d->dispatch.segment_lost && fstat(guard.fd, &sb) == 0 &&
	    (uint64_t)sb.st_size < guard.size) {
		pthread_mutex_lock(&d->dispatch.lock);
		d->dispatch.segment_lost = 1;
		pthread_mutex_unlock(&d->dispatch.lock);
	}
	if (d->dispatch.segment_lost && !d->stopping) {
		log_error("the state segment %s was cut short by another process; its state no "
		          "longer matches the ledger: refusing requests, stopping, and removing it "
		          "so that the next start rebuilds it from the ledger",
		          d->shm_path);
		stop(d, "the state segment was cut short");
	}
}

static void on_wake(uv_async_t *a)
{
	struct daemon *d = a->data;
	int rearm;

	pthread_mutex_lock(&d->dispatch.lock);
	rearm = timer_stale(d);
	pthread_mutex_unlock(&d->dispatch.lock);
	if (rearm)
		arm_expiry(d);
	dispatch_push_alerts(&d->dispatch);
}

/* Each worker thread looks up the state, which needs liburcu. */
static void on_worker_thread(void *ctx, int starting)
{
	(void)ctx;
	if (starting)
		rcu_register_thread();
	else
		rcu_unregister_thread();
}

/* ------------------------------------------------------------ checkpoints */

/*
 * Snapshots the state once at least min_records changes are not in the
 * newest snapshot. While one is being written, or a failed one waits for
 * its retry, nothing is asked of the commit lock: every flush calls this,
 * and would otherwise copy the state under the lock only to fail again.
 */
static void take_checkpoint(struct daemon *d, uint64_t min_records)
{
	uint64_t seq;

	if (checkpoint_busy(d->cp))
		return;
	/* the snapshot's view begins between two changes; the copy runs beside them */
	pthread_mutex_lock(&d->dispatch.lock);
	seq = state_applied(d->st);
	if (d->stopping || seq <= d->dispatch.checkpoint_seq ||
	    seq - d->dispatch.checkpoint_seq < min_records) {
		pthread_mutex_unlock(&d->dispatch.lock);
		return;
	}
	/* a failure is logged and scheduled for a retry by the checkpointer */
	if (checkpoint_start(d->cp, state_shm(d->st), seq, clock_now()) != 0)
		d->dispatch.checkpoint_failures = checkpoint_failures(d->cp);
	pthread_mutex_unlock(&d->dispatch.lock);
}

/*
 * A pool thread: removing a snapshot of a large state (a gigabyte at a
 * million agents) takes a quarter of a second, which the loop must not
 * wait for. The ledger's writer only appends to its newest segment, which
 * is never below a snapshot's sequence; one removal runs at a time, and a
 * snapshot that completes meanwhile leaves its share to the next one.
 */
static void prune_work(uv_work_t *w)
{
	struct daemon *d = w->data;

	checkpoint_prune(d->ckpt_dir, d->prune_below);
	d->pruned = ledger_prune(d->ledger_dir, d->prune_below);
}

static void prune_done(uv_work_t *w, int status)
{
	struct daemon *d = w->data;

	d->pruning = 0;
	if (status == 0)
		log_info("checkpoint at record %llu; %d ledger segment(s) removed",
		         (unsigned long long)d->prune_seq, d->pruned);
}

static void on_checkpoint_done(void *arg, uint64_t seq, int rc)
{
	struct daemon *d = arg;
	uint64_t prev;

	pthread_mutex_lock(&d->dispatch.lock);
	d->dispatch.checkpoint_failures = checkpoint_failures(d->cp);
	prev = d->dispatch.checkpoint_seq;
	if (rc == 0)
		d->dispatch.checkpoint_seq = seq;
	pthread_mutex_unlock(&d->dispatch.lock);
	if (rc != 0)
		return;
	/*
	 * Older snapshots and the ledger they cover go only once this one is
	 * usable, and the one before it stays with the ledger after it: a
	 * rebuild falls back to it when the newest disagrees with the ledger.
	 */
	if (prev > 0 && ledger_durable(d->ledger) >= seq && !d->pruning) {
		d->pruning = 1;
		d->prune_below = prev;
		d->prune_seq = seq;
		d->prune.data = d;
		if (uv_queue_work(&d->loop, &d->prune, prune_work, prune_done) != 0)
			d->pruning = 0;
	}
}

static void on_checkpoint_timer(uv_timer_t *t)
{
	take_checkpoint(t->data, 1);
}

static void on_durable(void *arg, uint64_t seq)
{
	struct daemon *d = arg;

	if (d->srv)
		srv_set_durable(d->srv, seq);
	segment_check(d);
	take_checkpoint(d, d->cfg.checkpoint_records);
}

/* --------------------------------------------------------------- stopping */

static void on_handle_closed(uv_handle_t *h)
{
	(void)h;
}

static void on_checkpointer_closed(void *arg)
{
	struct daemon *d = arg;

	uv_close((uv_handle_t *)&d->checkpoint_timer, on_handle_closed);
}

static void on_ledger_closed(void *arg)
{
	struct daemon *d = arg;

	checkpoint_close(d->cp, on_checkpointer_closed, d);
}

static void on_server_stopped(void *arg)
{
	struct daemon *d = arg;

	for (size_t i = 0; i < sizeof(d->signals) / sizeof(d->signals[0]); i++)
		uv_close((uv_handle_t *)&d->signals[i], NULL);
	/* every worker thread is joined: nothing sends to it any more */
	uv_close((uv_handle_t *)&d->wake, NULL);
	ledger_close(d->ledger, on_ledger_closed, d);
}

static void stop(struct daemon *d, const char *why)
{
	if (d->stopping)
		return;
	d->stopping = 1;
	log_info("%s: draining connections and stopping", why);
	uv_timer_stop(&d->expiry);
	uv_close((uv_handle_t *)&d->expiry, NULL);
	uv_timer_stop(&d->checkpoint_timer);
	uv_close((uv_handle_t *)&d->alerts, NULL);
	srv_stop(d->srv, on_server_stopped, d);
}

static void on_signal(uv_signal_t *s, int signum)
{
	stop(s->data, strsignal(signum));
}

static void on_ignored_signal(uv_signal_t *s, int signum)
{
	(void)s;
	log_info("%s: ignored; sidecard reads its options only when it starts, restart it to "
	         "change them (SIGTERM, SIGINT or SIGQUIT stop it)",
	         strsignal(signum));
}

/* Drain and stop, and logged but ignored (see the top of the file). */
static const int stop_signals[] = {SIGTERM, SIGINT, SIGQUIT};
static const int ignored_signals[] = {SIGHUP, SIGUSR1, SIGUSR2};

static void watch_signals(struct daemon *d)
{
	size_t n = sizeof(stop_signals) / sizeof(stop_signals[0]);

	for (size_t i = 0; i < sizeof(d->signals) / sizeof(d->signals[0]); i++) {
		uv_signal_init(&d->loop, &d->signals[i]);
		d->signals[i].data = d;
		if (i < n)
			uv_signal_start(&d->signals[i], on_signal, stop_signals[i]);
		else
			uv_signal_start(&d->signals[i], on_ignored_signal, ignored_signals[i - n]);
	}
}

/* --------------------------------------------------------------- recovery */

struct replay {
	struct daemon *d;
	char err[512];
};

static int replay_one(void *arg, const struct ledger_record *r)
{
	struct replay *rp = arg;

	return dispatch_replay(&rp->d->dispatch, r, rp->err, sizeof(rp->err));
}

static int first_record(void *arg, const struct ledger_record *r)
{
	struct shm_caps *caps = arg;

	if (r->type != LEDGER_SETTINGS || dispatch_settings_caps(r->body, r->body_len, caps) != 0)
		return SC_EINVAL;
	return 1;
}

/*
 * Removes the segments earlier starts set aside (<segment>.invalid-<time>)
 * but keep, the one just set aside: each was rebuilt from the ledger, so
 * only the newest is still worth a look, and a segment that keeps being
 * refused must not fill the directory with copies of the state.
 */
static void remove_set_aside(const char *shm_path, const char *keep)
{
	char dir[PATH_MAX], path[PATH_MAX + 300];
	const char *slash = strrchr(shm_path, '/'), *base = slash ? slash + 1 : shm_path;
	const char *keep_base = strrchr(keep, '/') ? strrchr(keep, '/') + 1 : keep;
	size_t base_len = strlen(base);
	struct dirent *e;
	DIR *dh;

	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else
		snprintf(dir, sizeof(dir), "%.*s", slash == shm_path ? 1 : (int)(slash - shm_path),
		         shm_path);
	if ((dh = opendir(dir)) == NULL)
		return;
	while ((e = readdir(dh)) != NULL) {
		if (strncmp(e->d_name, base, base_len) != 0 ||
		    strncmp(e->d_name + base_len, ".invalid-", 9) != 0 ||
		    strcmp(e->d_name, keep_base) == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (unlink(path) == 0)
			log_info("removed %s, set aside by an earlier start", path);
	}
	closedir(dh);
}

/* Keeps the segment that cannot be trusted, why, as <segment>.invalid-<time> for a look. */
static void set_aside(struct daemon *d, const char *why)
{
	char aside[PATH_MAX + 64];

	snprintf(aside, sizeof(aside), "%s.invalid-%lld", d->shm_path,
	         (long long)(clock_now() / 1000000));
	log_warn("%s; keeping it as %s and rebuilding the state from the ledger", why, aside);
	/* Readers still mapping it must reopen; a file of another layout has none. */
	shm_retire_file(d->shm_path, NULL, 0);
	if (rename(d->shm_path, aside) != 0)
		unlink(d->shm_path);
	else
		remove_set_aside(d->shm_path, aside);
}

/* Opens the state for attaching as it is; 1 if it matches the ledger. */
static int try_attach(struct daemon *d, const struct state_config *sc, uint64_t last_seq)
{
	char err[512], why[600];
	uint64_t applied;

	if (access(d->shm_path, F_OK) != 0)
		return 0;
	if (state_open(&d->st, sc, err, sizeof(err)) != 0) {
		set_aside(d, err);
		return 0;
	}
	applied = state_applied(d->st);
	if (owned(state_shm(d->st)->hdr, &d->owner) && applied == last_seq &&
	    shm_seal_check(state_shm(d->st), err, sizeof(err)) != 0) {
		/* changed behind the daemon's back (shm.h, SEALS) */
		state_close(d->st);
		d->st = NULL;
		snprintf(why, sizeof(why), "the state segment %s: %s", d->shm_path, err);
		set_aside(d, why);
		return 0;
	}
	if (!owned(state_shm(d->st)->hdr, &d->owner))
		log_info("the state segment %s was written %s: rebuilding", d->shm_path,
		         d->owner.known ? "before the machine restarted, or for another state directory"
		                  : "by a daemon this one cannot tell apart (no boot id)");
	else if (applied == last_seq)
		return 1;
	else
		log_info("the state segment has applied record %llu and the ledger ends at %llu: "
		         "rebuilding",
		         (unsigned long long)applied, (unsigned long long)last_seq);
	state_close(d->st);
	d->st = NULL;
	shm_retire_file(d->shm_path, NULL, 0);
	unlink(d->shm_path);
	return 0;
}

/* Keeps the snapshot of record seq, which disagrees with the ledger (why), as *.invalid-<time>. */
static int set_snapshot_aside(struct daemon *d, uint64_t seq, const char *why)
{
	char path[PATH_MAX + 64], aside[PATH_MAX + 96];

	checkpoint_path(d->ckpt_dir, seq, path, sizeof(path));
	snprintf(aside, sizeof(aside), "%s.invalid-%lld", path, (long long)(clock_now() / 1000000));
	log_error("the snapshot at record %llu does not agree with the ledger: %s; keeping it as %s "
	          "and rebuilding without it",
	          (unsigned long long)seq, why, aside);
	if (rename(path, aside) != 0 && unlink(path) != 0) {
		log_error("cannot set %s aside: %s", path, strerror(errno));
		return -errno;
	}
	return 0;
}

/*
 * The end of the ledger's check: 0 when it passed (a torn tail it removed is
 * a warning), else its error, logged.
 */
static int checked(struct daemon *d, struct ledger_verify *v, struct ledger_scan_result *tail)
{
	char err[4300];
	int rc = ledger_verify_wait(v, tail, err, sizeof(err));

	if (rc != 0 && tail->damaged) {
		/* never cut what was durable: the operator chooses (DESIGN, "Guarantees") */
		log_error("ledger: %s; refusing to start (nothing was changed). The records before "
		          "%llu are intact. Either put back the ledger from a backup, or run "
		          "`sidecardctl ledger repair --state-dir %s --truncate-at-damage`, which "
		          "moves record %llu and everything after it to %s/%s and lets the daemon "
		          "start without them",
		          err, (unsigned long long)tail->damage_seq, d->cfg.state_dir,
		          (unsigned long long)tail->damage_seq, d->ledger_dir, LEDGER_QUARANTINE);
		return rc;
	}
	if (rc != 0) {
		log_error("ledger: %s; refusing to start (nothing was changed)", err);
		return rc;
	}
	if (tail->torn)
		log_warn("ledger: %s", err);
	return 0;
}

/* The settings the command line asks for, with a hold table of hold_cap. */
static struct state_settings settings(const struct daemon *d, uint32_t hold_cap)
{
	struct state_settings set = {.hold_ttl_us = d->cfg.hold_ttl_us,
	                             .expiry_charges = d->cfg.expiry_charges,
	                             .task_max_usage = d->cfg.task_max_usage,
	                             .alert_velocity = d->cfg.alert_velocity};

	config_hold_quotas(&d->cfg, hold_cap, &set.max_holds_per_agent, &set.max_holds_per_org);
	return set;
}

static int same_settings(const struct state_settings *a, const struct state_settings *b)
{
	return a->hold_ttl_us == b->hold_ttl_us && a->expiry_charges == b->expiry_charges &&
	       a->task_max_usage == b->task_max_usage && a->alert_velocity == b->alert_velocity &&
	       a->max_holds_per_agent == b->max_holds_per_agent &&
	       a->max_holds_per_org == b->max_holds_per_org;
}

/* ------------------------------------------------------------- capacities */

/*
 * The table capacities, in struct shm_caps order: the option of each, and
 * whether it may change for an existing state. The rings and the keys kept
 * per agent decide which keys are honoured and which task is forgotten, so
 * a replay of the ledger with other ones could decide differently; the
 * other tables only fill up, and grow.
 */
static const struct {
	const char *option;
	int fixed;
} cap_options[] = {
	{"orgs", 0},   {"agents", 0}, {"rules", 0},  {"holds", 0},      {"history", 1},
	{"events", 1}, {"tasks", 1},  {"prices", 0}, {"alerts", 1},     {"rule-texts", 0},
	{"keys-per-agent", 1},
};
_Static_assert(sizeof(cap_options) / sizeof(cap_options[0]) ==
                       sizeof(struct shm_caps) / sizeof(uint32_t),
               "an option for every capacity");

static uint32_t *cap_at(struct shm_caps *caps, size_t i)
{
	return (uint32_t *)(void *)caps + i;
}

static struct shm_caps caps_of(const struct shm_header *h)
{
	return (struct shm_caps){h->org_cap,   h->agent_cap, h->rule_cap, h->hold_cap,
	                         h->txn_cap,   h->event_cap, h->task_cap, h->price_cap,
	                         h->alert_cap, h->text_cap,  h->keys_per_agent};
}

/* caps, with every growable table the options name raised to what they ask; 1 if any was. */
static int raise_caps(const struct config *cfg, struct shm_caps *caps)
{
	struct shm_caps want = cfg->caps;
	int raised = 0;

	for (size_t i = 0; i < sizeof(cap_options) / sizeof(cap_options[0]); i++)
		if ((cfg->caps_given & (1u << i)) && !cap_options[i].fixed &&
		    *cap_at(&want, i) > *cap_at(caps, i)) {
			*cap_at(caps, i) = *cap_at(&want, i);
			raised = 1;
		}
	return raised;
}

/*
 * Makes the capacities the options name those of the state, or refuses to
 * start: a table that would shrink, or a fixed one that would change, is
 * an error naming the option; growing tables are copied into a larger
 * segment (shm_grow) and *grown set. So are hold quotas above the table.
 */
static int apply_capacities(struct daemon *d, int *grown)
{
	const struct shm_header *h = state_shm(d->st)->hdr;
	struct shm_caps have = caps_of(h), want = have;
	struct state_config sc = {.path = d->shm_path};
	char err[512];
	int raised, rc;

	for (size_t i = 0; i < sizeof(cap_options) / sizeof(cap_options[0]); i++) {
		uint32_t asked = *cap_at(&d->cfg.caps, i), is = *cap_at(&have, i);

		if (!(d->cfg.caps_given & (1u << i)) || asked == is || (!cap_options[i].fixed && asked > is))
			continue;
		log_error("--%s %u: the state in %s has %u%s; %s", cap_options[i].option, asked,
		          d->cfg.state_dir, is, cap_options[i].fixed ? ", fixed when it was created" : "",
		          cap_options[i].fixed
		                  ? "a replay of its ledger with another one could decide otherwise. "
		                    "Start without the option, or with a new --state-dir"
		                  : "a table never shrinks. Start without the option or with a larger one");
		return SC_EINVAL;
	}
	raised = raise_caps(&d->cfg, &want);
	if (d->cfg.max_holds_per_agent > want.holds || d->cfg.max_holds_per_org > want.holds) {
		int agent = d->cfg.max_holds_per_agent > want.holds;

		log_error("--max-holds-per-%s %u: more than the hold table's %u open holds (--holds)",
		          agent ? "agent" : "org",
		          agent ? d->cfg.max_holds_per_agent : d->cfg.max_holds_per_org, want.holds);
		return SC_EINVAL;
	}
	if (!raised)
		return 0;
	/* the segment is not open while it is copied; nothing else runs yet */
	state_close(d->st);
	d->st = d->dispatch.st = NULL;
	if ((rc = shm_grow(d->shm_path, &want, err, sizeof(err))) != 0) {
		log_error("cannot grow the state's tables: %s", err);
		return rc;
	}
	sc.caps = want;
	sc.set = settings(d, want.holds);
	if ((rc = state_open(&d->st, &sc, err, sizeof(err))) != 0) {
		log_error("cannot open the grown state: %s", err);
		return rc;
	}
	d->dispatch.st = d->st;
	log_info("the state's tables grew to the capacities the options ask for");
	*grown = 1;
	return 0;
}

/*
 * A restored snapshot gets the larger tables the options ask for before
 * the ledger after it is replayed into it: records that filled them while
 * they were larger must fit again.
 */
static int grow_restored(struct daemon *d, char *err, size_t errlen)
{
	struct shm m;
	struct shm_caps caps;
	int created, rc;

	if ((rc = shm_open_rw(&m, d->shm_path, &d->cfg.caps, &created, err, errlen)) != 0)
		return rc;
	caps = caps_of(m.hdr);
	shm_close(&m);
	return raise_caps(&d->cfg, &caps) ? shm_grow(d->shm_path, &caps, err, errlen) : 0;
}

/* The capacities in force, in one line (DESIGN.md, "State"). */
static void log_capacities(struct daemon *d)
{
	struct shm_caps have = caps_of(state_shm(d->st)->hdr);
	char line[512];
	size_t n = 0;

	for (size_t i = 0; i < sizeof(cap_options) / sizeof(cap_options[0]) && n < sizeof(line); i++)
		n += (size_t)snprintf(line + n, sizeof(line) - n, "%s--%s %u", i ? ", " : "",
		                      cap_options[i].option, *cap_at(&have, i));
	log_info("capacities: %s; hold quotas %u per agent, %u per org", line,
	         state_config(d->st)->set.max_holds_per_agent,
	         state_config(d->st)->set.max_holds_per_org);
}

/*
 * Rebuilds the state: the newest usable snapshot, then the ledger after it.
 * Pipelined (no state segment and no snapshot to start from), the check of
 * the ledger is still running: the replay follows it segment by segment,
 * and if the check fails, the state made so far is removed, which leaves
 * the directory as the check found it, and the check's error is reported.
 */
static int rebuild(struct daemon *d, struct state_config *sc, struct ledger_verify *v,
                   struct ledger_scan_result *tail, int pipelined)
{
	struct ledger_scan_result res;
	struct replay rp = {.d = d};
	char err[512];
	uint64_t from, ckpt;
	uint64_t t0 = uv_hrtime();
	int rc;

again:
	from = 1;
	ckpt = 0;
	rp.err[0] = '\0';
	if (!pipelined && checkpoint_find(d->ckpt_dir, tail->last_seq, &ckpt) == 0) {
		rc = checkpoint_restore(d->ckpt_dir, ckpt, d->shm_path, err, sizeof(err));
		if (rc == SC_EINVAL) { /* damaged or forged: the ledger stays the truth */
			if ((rc = set_snapshot_aside(d, ckpt, err)) != 0)
				return rc;
			goto again;
		}
		if (rc != 0 || (rc = grow_restored(d, err, sizeof(err))) != 0) {
			log_error("cannot restore the snapshot: %s", err);
			return rc;
		}
		from = ckpt + 1;
	} else if ((rc = ledger_scan_verified(v, 1, first_record, &sc->caps, &res, err,
	                                      sizeof(err))) != 0 || res.records != 0) {
		if (rc != 1 || res.first_seq != 1) {
			if (pipelined && (rc = checked(d, v, tail)) != 0)
				return rc;
			log_error("%s: the ledger does not start with its settings record and there is "
			          "no snapshot to start from",
			          d->ledger_dir);
			return SC_EINVAL;
		}
		/* the replay fills the tables as far as they were grown live, or further */
		raise_caps(&d->cfg, &sc->caps);
	}
	if ((rc = state_open(&d->st, sc, err, sizeof(err))) != 0) {
		log_error("cannot create the state: %s", err);
		return rc;
	}
	d->dispatch.st = d->st;
	rc = ledger_scan_verified(v, from, replay_one, &rp, &res, err, sizeof(err));
	dispatch_replay_end(&d->dispatch);
	if (pipelined) {
		int crc = checked(d, v, tail);

		if (crc != 0) {
			state_close(d->st);
			d->st = d->dispatch.st = NULL;
			shm_retire_file(d->shm_path, NULL, 0);
			unlink(d->shm_path);
			return crc;
		}
	}
	if (rc != 0 && ckpt != 0 && rp.err[0]) {
		/*
		 * A record after the snapshot does not replay as the ledger says:
		 * the snapshot, a derived copy, is wrong, not the ledger. Without
		 * it, the rebuild starts from an older snapshot or the ledger's
		 * first record; a record that differs there is an error again.
		 */
		state_close(d->st);
		d->st = d->dispatch.st = NULL;
		shm_retire_file(d->shm_path, NULL, 0);
		unlink(d->shm_path);
		if ((rc = set_snapshot_aside(d, ckpt, rp.err)) != 0)
			return rc;
		goto again;
	}
	if (rc != 0) {
		log_error("cannot rebuild the state: %s", rp.err[0] ? rp.err : err);
		return rc < 0 ? rc : SC_EINTERNAL;
	}
	d->dispatch.checkpoint_seq = ckpt;
	if (tail->last_seq == 0)
		log_info("created a new state in %s", d->shm_path);
	else
		log_info("rebuilt the state from %s%llu and %llu ledger record(s) in %lld ms",
		         ckpt ? "the snapshot at record " : "record ", (unsigned long long)ckpt,
		         (unsigned long long)res.records, (long long)((uv_hrtime() - t0) / 1000000));
	return 0;
}

/*
 * Checks and repairs the ledger, then attaches to or rebuilds the state.
 * With no state segment and no snapshot there is nothing to attach to or
 * restore, and the rebuild from the ledger alone starts at once beside the
 * check (rebuild, pipelined).
 */
static int recover(struct daemon *d, struct ledger_scan_result *tail)
{
	struct state_config sc = {.path = d->shm_path, .caps = d->cfg.caps,
	                          .set = settings(d, d->cfg.caps.holds),
	                          .readers = d->cfg.access.reader_gid >= 0,
	                          .reader_gid = (unsigned)d->cfg.access.reader_gid};
	struct ledger_verify *v;
	uint64_t ckpt;
	uint64_t t0 = uv_hrtime();
	int rc;

	if ((rc = ledger_verify_start(&v, d->ledger_dir, LEDGER_SCAN_REPAIR)) != 0) {
		log_error("ledger: cannot start its check: %s", sc_strerror(rc));
		return rc;
	}
	if (access(d->shm_path, F_OK) != 0 && checkpoint_find(d->ckpt_dir, UINT64_MAX, &ckpt) != 0)
		rc = rebuild(d, &sc, v, tail, 1);
	else if ((rc = checked(d, v, tail)) == 0) {
		if (try_attach(d, &sc, tail->last_seq)) {
			d->dispatch.st = d->st;
			checkpoint_find(d->ckpt_dir, tail->last_seq, &d->dispatch.checkpoint_seq);
			log_info("attached to %s at ledger record %llu in %lld ms", d->shm_path,
			         (unsigned long long)tail->last_seq,
			         (long long)((uv_hrtime() - t0) / 1000000));
		} else {
			rc = rebuild(d, &sc, v, tail, 0);
		}
	}
	ledger_verify_free(v);
	return rc;
}

/* ------------------------------------------------------------------ start */

static int start(struct daemon *d)
{
	struct ledger_config lc = {.dir = d->ledger_dir, .strict = d->cfg.strict,
	                           .interval_ms = d->cfg.commit_interval_ms,
	                           .batch_bytes = d->cfg.commit_batch,
	                           .segment_bytes = d->cfg.segment_bytes, .now = clock_now,
	                           .lock = d->cfg.workers > 1 ? &d->dispatch.lock : NULL};
	struct ledger_scan_result tail;
	struct state_settings set;
	struct state_counts counts;
	uint64_t applied;
	char err[512];
	int grown = 0, rc;

	d->shm_path = d->cfg.segment_path;
	owner_of(d->cfg.state_dir, &d->owner);
	snprintf(d->ledger_dir, sizeof(d->ledger_dir), "%s/ledger", d->cfg.state_dir);
	snprintf(d->ckpt_dir, sizeof(d->ckpt_dir), "%s/checkpoints", d->cfg.state_dir);
	msgpack_sbuffer_init(&d->dispatch.scratch);
	if ((rc = recover(d, &tail)) != 0 || (rc = apply_capacities(d, &grown)) != 0)
		return rc;
	if ((rc = ledger_open(&d->ledger, &d->loop, &lc, &tail, on_durable, d, err, sizeof(err)))) {
		log_error("%s", err);
		return rc;
	}
	if ((rc = checkpoint_init(&d->cp, &d->loop, d->ckpt_dir, &d->dispatch.lock, on_checkpoint_done,
	                          d)) != 0) {
		log_error("%s: %s", d->ckpt_dir, sc_strerror(rc));
		return rc;
	}
	d->dispatch.ledger = d->ledger;
	d->dispatch.strict = d->cfg.strict;
	d->timer_due = INT64_MAX;
	d->dispatch.srv_cfg = &d->srv_cfg;
	d->dispatch.threaded = d->cfg.workers >= 2;
	/* the first change the ledger gets is the step, if the clock went back while stopped */
	clock_resume(tail.last_time);
	set = settings(d, state_shm(d->st)->hdr->hold_cap);
	if (tail.last_seq == 0 || grown || !same_settings(&state_config(d->st)->set, &set))
		dispatch_settings(&d->dispatch, &set);
	log_capacities(d);

	srv_config_default(&d->srv_cfg, d->cfg.socket_path);
	d->srv_cfg.mode = d->cfg.socket_mode;
	d->srv_cfg.gid = d->cfg.socket_gid;
	d->srv_cfg.max_connections = d->cfg.max_connections;
	d->srv_cfg.max_outstanding = d->cfg.max_outstanding;
	d->srv_cfg.max_outstanding_bytes = d->cfg.max_outstanding_bytes;
	d->srv_cfg.limits.max_message = d->cfg.max_message;
	d->srv_cfg.workers = d->cfg.workers;
	d->srv_cfg.worker_thread = on_worker_thread;
	d->srv_cfg.conn_closed = dispatch_conn_closed;
	d->srv_cfg.access = &d->cfg.access;
	d->srv_cfg.agent_socket_path = d->cfg.agent_socket_path[0] ? d->cfg.agent_socket_path : NULL;
	d->srv_cfg.agent_mode = d->cfg.agent_socket_mode;
	d->srv_cfg.agent_gid = d->cfg.agent_socket_gid;
	d->srv_cfg.max_per_uid = d->cfg.max_per_uid;
	d->srv_cfg.auth_timeout_ms = d->cfg.auth_timeout_s * 1000;
	d->dispatch.max_agent_conns = d->cfg.max_per_agent;
	uv_async_init(&d->loop, &d->wake, on_wake);
	d->wake.data = d;
	/* both wake the main loop: not before it can be woken (a step at start-up calls one) */
	d->dispatch.hold_placed = on_hold_placed;
	d->dispatch.hold_placed_arg = d;
	d->dispatch.alerts_raised = on_alerts_raised;
	d->dispatch.alerts_raised_arg = d;
	if ((rc = srv_init(&d->srv, &d->loop, &d->srv_cfg, dispatch_request, &d->dispatch, err,
	                   sizeof(err))) != 0) {
		log_error("%s", err);
		uv_close((uv_handle_t *)&d->wake, NULL);
		return rc;
	}
	/* worker threads may already answer requests, which read it under the lock */
	pthread_mutex_lock(&d->dispatch.lock);
	d->dispatch.srv = d->srv;
	pthread_mutex_unlock(&d->dispatch.lock);
	srv_set_durable(d->srv, ledger_durable(d->ledger));
	stamp(state_shm(d->st)->hdr, &d->owner);
	state_serve(d->st);
	uv_timer_init(&d->loop, &d->expiry);
	uv_timer_init(&d->loop, &d->checkpoint_timer);
	d->expiry.data = d->checkpoint_timer.data = d;
	uv_timer_start(&d->checkpoint_timer, on_checkpoint_timer,
	               (uint64_t)(d->cfg.checkpoint_interval_us / 1000),
	               (uint64_t)(d->cfg.checkpoint_interval_us / 1000));
	uv_check_init(&d->loop, &d->alerts);
	d->alerts.data = d;
	uv_check_start(&d->alerts, on_loop_turn);
	watch_signals(d);
	guard_segment(d);
	on_expiry(&d->expiry);
	/* a rebuild after this start restores its grown tables from a snapshot that has them */
	if (grown)
		take_checkpoint(d, 1);
	pthread_mutex_lock(&d->dispatch.lock);
	state_counts(d->st, &counts);
	applied = state_applied(d->st);
	pthread_mutex_unlock(&d->dispatch.lock);
	log_info("sidecard %s listening on %s with %u worker%s", SC_VERSION, d->cfg.socket_path,
	         d->cfg.workers, d->cfg.workers == 1 ? " (the main loop)" : " threads");
	if (d->srv_cfg.agent_socket_path)
		log_info("agents with a token may connect to %s", d->srv_cfg.agent_socket_path);
	log_info("state %s: %u orgs, %u agents, %u rules, %u open holds; ledger at record %llu, "
	         "durability %s; hold ttl %llds",
	         d->shm_path, counts.orgs, counts.agents, counts.rules, counts.holds,
	         (unsigned long long)applied, d->cfg.strict ? "strict" : "async",
	         (long long)(state_config(d->st)->set.hold_ttl_us / 1000000));
	return 0;
}

int main(int argc, char **argv)
{
	static struct daemon d;
	char err[PATH_MAX + 128];
	int state_lock, segment_lock, rc;

	signal(SIGPIPE, SIG_IGN);
	rc = config_load(&d.cfg, argc, argv, err, sizeof(err));
	if (rc == 1)
		return 0;
	if (rc != 0) {
		fprintf(stderr, "sidecard: %s\n", err);
		return 2;
	}
	log_set_level(d.cfg.log_level);
	clock_start(d.cfg.time_scale);
	if (d.cfg.time_scale > 1)
		log_info("--time-scale %u: the clock runs %u times faster than real time",
		         d.cfg.time_scale, d.cfg.time_scale);
	if (fdlimit_apply(&d.cfg) != 0 || take_dirs(&d.cfg, &state_lock, &segment_lock) != 0)
		return 1;
	rcu_register_thread();
	pthread_mutex_init(&d.dispatch.lock, NULL);
	uv_loop_init(&d.loop);
	rc = start(&d);
	if (rc == 0)
		uv_run(&d.loop, UV_RUN_DEFAULT);
	if (d.srv)
		srv_free(d.srv);
	if (rc != 0 && d.ledger) {
		/* start failed after the writer opened: let it close its handles */
		ledger_close(d.ledger, NULL, NULL);
		uv_run(&d.loop, UV_RUN_DEFAULT);
	}
	ledger_free(d.ledger);
	checkpoint_free(d.cp);
	guard.base = NULL;
	state_close(d.st);
	if (d.dispatch.segment_lost) {
		shm_retire_file(d.shm_path, NULL, 0);
		unlink(d.shm_path);
		rc = 1;
	}
	dispatch_alerts_free(&d.dispatch);
	dispatch_access_free(&d.dispatch);
	msgpack_sbuffer_destroy(&d.dispatch.scratch);
	if (uv_loop_close(&d.loop) != 0)
		log_warn("the loop closed with handles still open");
	pthread_mutex_destroy(&d.dispatch.lock);
	rcu_unregister_thread();
	close(segment_lock);
	close(state_lock);
	if (rc == 0)
		log_info("stopped");
	return rc == 0 ? 0 : 1;
}
