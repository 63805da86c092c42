/*
 * fdlimit.c: makes the descriptor limit hold every connection the daemon
 * accepts and the files it opens besides them. Runs once on the main
 * thread at start, before anything is opened.
 *
 * Why: a client connection is a descriptor, and so is each file the ledger
 * and the checkpoints open while the daemon serves. With a soft limit
 * below --max-connections (1024 by default, a common soft limit too),
 * connections alone could take every descriptor: the ledger then cannot
 * start its next segment and every change waits for ever. So the soft
 * limit is raised to the hard one, and the hard one must cover
 *
 *   max_connections + FD_DAEMON + FD_PER_WORKER x workers (2 or more)
 *                   + FD_TRANSIENT + FD_RESERVE
 *
 * FD_DAEMON and FD_PER_WORKER are what an idle daemon holds (counted in
 * /proc/<pid>/fd): the standard streams, the three lock files, the
 * listening socket, the state segment, the ledger's open segment, the main
 * loop's epoll, eventfd, timerfd and signal pipes; each worker thread's
 * loop adds its epoll, eventfd and a pipe. FD_TRANSIENT is what opens
 * while it serves: the ledger's next segment being prepared and created,
 * directory syncs, a snapshot being written, pruning's directory walks, a
 * time-zone file. FD_RESERVE covers what is not counted: refused
 * connections lingering up to half a second (server.c), libraries'
 * descriptors.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "fdlimit.h"
#include "log.h"

#define FD_DAEMON 18
#define FD_PER_WORKER 4
#define FD_TRANSIENT 8
#define FD_RESERVE 32

int fdlimit_apply(struct config *c)
{
	char raised[64] = "";
	struct rlimit rl;
	rlim_t was, own, fit;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
		log_error("cannot read the descriptor limit (RLIMIT_NOFILE): %s", strerror(errno));
		return -1;
	}
	was = rl.rlim_cur;
	if (rl.rlim_cur != rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
			log_error("cannot raise the descriptor limit (RLIMIT_NOFILE) from %llu to "
			          "%llu: %s",
			          (unsigned long long)was, (unsigned long long)rl.rlim_max,
			          strerror(errno));
			return -1;
		}
	}
	own = FD_DAEMON + (c->workers >= 2 ? (rlim_t)FD_PER_WORKER * c->workers : 0) + FD_TRANSIENT;
	fit = rl.rlim_cur > own + FD_RESERVE ? rl.rlim_cur - own - FD_RESERVE : 0;
	if (fit < c->max_connections && config_given(c, "max-connections")) {
		log_error("--max-connections %u needs %llu descriptors (%llu for the daemon's files, "
		          "%d in reserve), but the hard limit RLIMIT_NOFILE is %llu: raise it "
		          "(ulimit -Hn, LimitNOFILE= in a systemd unit) or give --max-connections %llu "
		          "or less",
		          c->max_connections, (unsigned long long)(c->max_connections + own + FD_RESERVE),
		          (unsigned long long)own, FD_RESERVE, (unsigned long long)rl.rlim_cur,
		          (unsigned long long)fit);
		return -1;
	}
	if (fit < c->max_connections) {
		if (fit == 0) {
			log_error("the hard limit RLIMIT_NOFILE is %llu: the daemon needs %llu "
			          "descriptors for its files and reserve before one connection; raise "
			          "it (ulimit -Hn, LimitNOFILE= in a systemd unit)",
			          (unsigned long long)rl.rlim_cur,
			          (unsigned long long)(own + FD_RESERVE));
			return -1;
		}
		log_warn("the hard limit RLIMIT_NOFILE is %llu: serving at most %llu connections, "
		         "not the default %u (raise the limit, ulimit -Hn or LimitNOFILE= in a systemd "
		         "unit, for more)",
		         (unsigned long long)rl.rlim_cur, (unsigned long long)fit, c->max_connections);
		c->max_connections = (unsigned)fit;
	}
	if (was != rl.rlim_cur)
		snprintf(raised, sizeof(raised), " (the soft limit raised from %llu)",
		         (unsigned long long)was);
	log_info("descriptors: limit %llu%s; %u for connections, %llu for the daemon's files, %d "
	         "in reserve",
	         (unsigned long long)rl.rlim_cur, raised, c->max_connections,
	         (unsigned long long)own, FD_RESERVE);
	return 0;
}
