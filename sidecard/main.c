/*
 * main.c: the sidecard daemon's entry point. Loads the configuration, takes
 * the state directory (one daemon per state), opens the state segment,
 * starts the server and the hold-expiry timer on one libuv loop, and drains
 * cleanly on SIGTERM or SIGINT.
 *
 * Threads: everything runs on the main thread, which is the loop thread and
 * the state's single writer; liburcu adds its call_rcu worker.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <urcu.h>
#include <uv.h>

#include "config.h"
#include "dispatch.h"
#include "gate.h"
#include "log.h"
#include "server.h"
#include "state.h"

struct daemon {
	struct config cfg;
	struct srv_config srv_cfg;
	uv_loop_t loop;
	uv_timer_t expiry;
	uv_signal_t sigterm, sigint;
	struct state *st;
	struct srv *srv;
	struct dispatch dispatch;
	int stopping;
};

/* Creates dir and its missing parents with mode 0700. */
static int mkdirs(const char *dir)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s", dir);
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0700) != 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	return mkdir(path, 0700) != 0 && errno != EEXIST ? -errno : 0;
}

/* One daemon per state directory: an exclusive lock held for life. */
static int lock_state_dir(const char *dir)
{
	char path[PATH_MAX + 32], pid[32] = "";
	int fd;

	snprintf(path, sizeof(path), "%s/sidecard.lock", dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		log_error("cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);

		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		log_error("another sidecard is using the state directory %s (pid %s)", dir,
		          pid[0] ? pid : "unknown");
		close(fd);
		return -1;
	}
	snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, strlen(pid), 0) < 0)
		log_warn("cannot write the pid into %s: %s", path, strerror(errno));
	return fd;
}

static void on_expiry(uv_timer_t *t);

/* Arms the timer for the oldest hold; all holds share one TTL, so it is the next due. */
static void arm_expiry(struct daemon *d)
{
	int64_t next = gate_next_expiry(d->st), wait;

	if (d->stopping)
		return;
	if (next == INT64_MAX) {
		uv_timer_stop(&d->expiry);
		return;
	}
	wait = (next - dispatch_now() + 999) / 1000;
	uv_timer_start(&d->expiry, on_expiry, wait > 0 ? (uint64_t)wait : 0, 0);
}

static void on_expiry(uv_timer_t *t)
{
	struct daemon *d = t->data;
	unsigned n = gate_expire(d->st, dispatch_now());

	if (n)
		log_info("%u hold(s) expired", n);
	arm_expiry(d);
}

static void on_hold_placed(void *arg)
{
	struct daemon *d = arg;

	if (!uv_is_active((uv_handle_t *)&d->expiry))
		arm_expiry(d);
}

static void on_server_stopped(void *arg)
{
	struct daemon *d = arg;

	uv_close((uv_handle_t *)&d->sigterm, NULL);
	uv_close((uv_handle_t *)&d->sigint, NULL);
}

static void on_signal(uv_signal_t *s, int signum)
{
	struct daemon *d = s->data;

	if (d->stopping)
		return;
	d->stopping = 1;
	log_info("%s: draining connections and stopping", strsignal(signum));
	uv_timer_stop(&d->expiry);
	uv_close((uv_handle_t *)&d->expiry, NULL);
	srv_stop(d->srv, on_server_stopped, d);
}

static int start(struct daemon *d)
{
	struct state_config sc;
	char err[512], state_path[PATH_MAX + 16];
	struct state_counts counts;
	int created = 0, rc;

	snprintf(state_path, sizeof(state_path), "%s/state.shm", d->cfg.state_dir);
	sc = (struct state_config){.path = state_path, .caps = d->cfg.caps,
	                           .hold_ttl_us = d->cfg.hold_ttl_us,
	                           .expiry_charges = d->cfg.expiry_charges};
	created = access(state_path, F_OK) != 0;
	if ((rc = state_open(&d->st, &sc, err, sizeof(err))) != 0) {
		log_error("cannot open the state: %s", err);
		return rc;
	}
	srv_config_default(&d->srv_cfg, d->cfg.socket_path);
	d->srv_cfg.mode = d->cfg.socket_mode;
	d->srv_cfg.gid = d->cfg.socket_gid;
	d->srv_cfg.max_connections = d->cfg.max_connections;
	d->srv_cfg.max_outstanding = d->cfg.max_outstanding;
	d->srv_cfg.limits.max_message = d->cfg.max_message;
	d->dispatch = (struct dispatch){.st = d->st, .srv_cfg = &d->srv_cfg,
	                                .started_at = dispatch_now(),
	                                .hold_placed = on_hold_placed, .hold_placed_arg = d};
	if ((rc = srv_init(&d->srv, &d->loop, &d->srv_cfg, dispatch_request, &d->dispatch, err,
	                   sizeof(err))) != 0) {
		log_error("%s", err);
		return rc;
	}
	d->dispatch.srv = d->srv;
	uv_timer_init(&d->loop, &d->expiry);
	d->expiry.data = d;
	uv_signal_init(&d->loop, &d->sigterm);
	uv_signal_init(&d->loop, &d->sigint);
	d->sigterm.data = d->sigint.data = d;
	uv_signal_start(&d->sigterm, on_signal, SIGTERM);
	uv_signal_start(&d->sigint, on_signal, SIGINT);
	on_expiry(&d->expiry);
	state_counts(d->st, &counts);
	log_info("sidecard %s listening on %s", SC_VERSION, d->cfg.socket_path);
	log_info("state %s %s: %u orgs, %u agents, %u rules, %u open holds; hold ttl %llds",
	         state_path, created ? "created" : "attached", counts.orgs, counts.agents,
	         counts.rules, counts.holds, (long long)(d->cfg.hold_ttl_us / 1000000));
	return 0;
}

int main(int argc, char **argv)
{
	static struct daemon d;
	char err[PATH_MAX + 128];
	int lock_fd, rc;

	signal(SIGPIPE, SIG_IGN);
	rc = config_load(&d.cfg, argc, argv, err, sizeof(err));
	if (rc == 1)
		return 0;
	if (rc != 0) {
		fprintf(stderr, "sidecard: %s\n", err);
		return 2;
	}
	log_set_level(d.cfg.log_level);
	if ((rc = mkdirs(d.cfg.state_dir)) != 0) {
		log_error("cannot create the state directory %s: %s", d.cfg.state_dir, strerror(-rc));
		return 1;
	}
	if ((lock_fd = lock_state_dir(d.cfg.state_dir)) < 0)
		return 1;
	rcu_register_thread();
	uv_loop_init(&d.loop);
	rc = start(&d);
	if (rc == 0)
		uv_run(&d.loop, UV_RUN_DEFAULT);
	else if (d.srv == NULL)
		uv_run(&d.loop, UV_RUN_NOWAIT);
	if (d.srv)
		srv_free(d.srv);
	state_close(d.st);
	if (uv_loop_close(&d.loop) != 0)
		log_warn("the loop closed with handles still open");
	rcu_unregister_thread();
	close(lock_fd);
	if (rc == 0)
		log_info("stopped");
	return rc == 0 ? 0 : 1;
}
