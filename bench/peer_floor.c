/*
 * peer_floor.c: the physical floor of bench/gate_bench. A forked server
 * process runs one epoll loop (like the daemon's one loop thread) over a
 * Unix socket and answers every request of req_size bytes with resp_size
 * bytes, pipelined requests included; the sizes are those of a packed
 * check request and its answer (floor_message_sizes), so the floor moves
 * the same bytes through the same kind of socket and the same number of
 * wakeups as a check, and does nothing else. A check+report is two round
 * trips, a pipelined batch BENCH_PIPE_BATCH requests with the same window
 * as sc_check_batch. It has no admin operation (no mix row).
 *
 * Threads: the server is its own process, single-threaded; it dies with
 * the benchmark (SIGTERM from bench_reap, or PR_SET_PDEATHSIG). Each client
 * thread has its own blocking connection.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <msgpack.h>

#include "gate_bench.h"
#include "sidecard.h"
#include "tmpdir.h"

#define MAX_EVENTS 64
#define IN_CAP (256 * 1024)

struct floor {
	char dir[64], path[96];
	size_t req, resp;
};

struct floor_conn {
	int fd;
	size_t req, resp;
	char *buf; /* requests to send, or answers read */
	size_t cap;
};

/* ----- the message sizes ----- */

static void put_str(msgpack_packer *pk, const char *s)
{
	msgpack_pack_str_with_body(pk, s, strlen(s));
}

void floor_message_sizes(size_t meta_bytes, size_t *req, size_t *resp)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;

	/* [0, msgid, "check", [{agent_id, action, estimated_cost, metadata?}]] */
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 4);
	msgpack_pack_uint64(&pk, 0);
	msgpack_pack_uint64(&pk, 1000000);
	put_str(&pk, "check");
	msgpack_pack_array(&pk, 1);
	msgpack_pack_map(&pk, meta_bytes ? 4 : 3);
	put_str(&pk, "agent_id");
	msgpack_pack_uint64(&pk, 1000);
	put_str(&pk, "action");
	put_str(&pk, "llm.chat");
	put_str(&pk, "estimated_cost");
	msgpack_pack_int64(&pk, BENCH_ESTIMATE);
	if (meta_bytes)
		put_str(&pk, "metadata");
	*req = sb.size + meta_bytes;
	/* [1, msgid, nil, {status, transaction_id, risk_level, available, warnings, replayed}] */
	msgpack_sbuffer_clear(&sb);
	msgpack_pack_array(&pk, 4);
	msgpack_pack_uint64(&pk, 1);
	msgpack_pack_uint64(&pk, 1000000);
	msgpack_pack_nil(&pk);
	msgpack_pack_map(&pk, 6);
	put_str(&pk, "status");
	put_str(&pk, "allowed");
	put_str(&pk, "transaction_id");
	msgpack_pack_uint64(&pk, 1000000);
	put_str(&pk, "risk_level");
	put_str(&pk, "low");
	put_str(&pk, "available");
	msgpack_pack_int64(&pk, INT64_C(999999999000000));
	put_str(&pk, "warnings");
	msgpack_pack_array(&pk, 0);
	put_str(&pk, "replayed");
	msgpack_pack_false(&pk);
	*resp = sb.size;
	msgpack_sbuffer_destroy(&sb);
}

/* ----- the server process ----- */

struct sconn {
	char in[IN_CAP];
	size_t in_len;
	char *out;
	size_t out_off, out_len, out_cap;
};

static void serve_close(int ep, int fd, struct sconn **conns)
{
	epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
	close(fd);
	if (conns[fd] != NULL) {
		free(conns[fd]->out);
		free(conns[fd]);
		conns[fd] = NULL;
	}
}

/* Writes what the kernel takes; asks for EPOLLOUT while something is left. */
static int serve_flush(int ep, int fd, struct sconn *k)
{
	struct epoll_event ev = { .data.fd = fd };
	ssize_t n;

	while (k->out_off < k->out_len) {
		n = send(fd, k->out + k->out_off, k->out_len - k->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				return -1;
			break;
		}
		k->out_off += (size_t)n;
	}
	if (k->out_off == k->out_len)
		k->out_off = k->out_len = 0;
	ev.events = EPOLLIN | (k->out_len ? EPOLLOUT : 0);
	return epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
}

static void serve_read(int ep, int fd, struct sconn *k, const char *answer, size_t req,
                       size_t resp, struct sconn **conns)
{
	size_t whole, need, i;
	ssize_t n = recv(fd, k->in + k->in_len, sizeof(k->in) - k->in_len, MSG_DONTWAIT);

	if (n <= 0) {
		if (n == 0 || (errno != EAGAIN && errno != EINTR))
			serve_close(ep, fd, conns);
		return;
	}
	k->in_len += (size_t)n;
	whole = k->in_len / req;
	need = k->out_len + whole * resp;
	if (need > k->out_cap) {
		char *p = realloc(k->out, need * 2);

		if (p == NULL) {
			serve_close(ep, fd, conns);
			return;
		}
		k->out = p;
		k->out_cap = need * 2;
	}
	for (i = 0; i < whole; i++, k->out_len += resp)
		memcpy(k->out + k->out_len, answer, resp);
	memmove(k->in, k->in + whole * req, k->in_len - whole * req);
	k->in_len -= whole * req;
	if (serve_flush(ep, fd, k) != 0)
		serve_close(ep, fd, conns);
}

static void serve(int lfd, size_t req, size_t resp)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = lfd }, evs[MAX_EVENTS];
	struct sconn **conns = calloc(65536, sizeof(*conns));
	char *answer = malloc(resp);
	int ep = epoll_create1(EPOLL_CLOEXEC), n, i, fd;

	if (conns == NULL || answer == NULL || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) != 0)
		_exit(1);
	memset(answer, 'r', resp);
	for (;;) {
		n = epoll_wait(ep, evs, MAX_EVENTS, -1);
		for (i = 0; i < n; i++) {
			fd = evs[i].data.fd;
			if (fd == lfd) {
				fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
				if (fd < 0 || fd >= 65536 || (conns[fd] = calloc(1, sizeof(**conns))) == NULL) {
					if (fd >= 0)
						close(fd);
					continue;
				}
				ev = (struct epoll_event){ .events = EPOLLIN, .data.fd = fd };
				epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
				continue;
			}
			if (conns[fd] == NULL)
				continue;
			if (evs[i].events & EPOLLOUT) {
				if (serve_flush(ep, fd, conns[fd]) != 0) {
					serve_close(ep, fd, conns);
					continue;
				}
			}
			if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
				serve_read(ep, fd, conns[fd], answer, req, resp, conns);
		}
	}
}

/* ----- the client side ----- */

static int send_all(int fd, const char *p, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Reads at least `min` and at most `max` bytes into buf; the count, or -1. */
static ssize_t recv_some(int fd, char *buf, size_t min, size_t max)
{
	size_t got = 0;
	ssize_t n;

	while (got < min) {
		n = recv(fd, buf + got, max - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

static int fl_connect(struct sys *s, void **conn, char *err, size_t len)
{
	struct floor *f = s->priv;
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct floor_conn *k = calloc(1, sizeof(*k));

	if (k == NULL)
		return snprintf(err, len, "out of memory"), -1;
	k->req = f->req;
	k->resp = f->resp;
	k->cap = (size_t)SC_CHECK_BATCH_WINDOW * (f->req > f->resp ? f->req : f->resp);
	k->buf = malloc(k->cap);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", f->path);
	k->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (k->buf == NULL || k->fd < 0 ||
	    connect(k->fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
		snprintf(err, len, "connect to the floor: %s", strerror(errno));
		if (k->fd >= 0)
			close(k->fd);
		free(k->buf);
		free(k);
		return -1;
	}
	memset(k->buf, 'q', k->cap);
	*conn = k;
	return 0;
}

static void fl_disconnect(void *conn)
{
	struct floor_conn *k = conn;

	close(k->fd);
	free(k->buf);
	free(k);
}

static int round_trip(struct floor_conn *k)
{
	return send_all(k->fd, k->buf, k->req) == 0 &&
	               recv_some(k->fd, k->buf, k->resp, k->resp) == (ssize_t)k->resp
	               ? 0
	               : -1;
}

/* BENCH_PIPE_BATCH requests, at most a window in flight, refilled at half. */
static int pipelined(struct floor_conn *k)
{
	size_t sent = 0, answered = 0, pending = 0, w = SC_CHECK_BATCH_WINDOW, n;
	ssize_t got;

	while (answered < BENCH_PIPE_BATCH) {
		if (sent < BENCH_PIPE_BATCH && sent - answered <= w / 2) {
			n = w - (sent - answered);
			if (n > BENCH_PIPE_BATCH - sent)
				n = BENCH_PIPE_BATCH - sent;
			if (send_all(k->fd, k->buf, n * k->req) != 0)
				return -1;
			sent += n;
		}
		got = recv_some(k->fd, k->buf, 1, k->cap);
		if (got < 0)
			return -1;
		pending += (size_t)got;
		answered += pending / k->resp;
		pending %= k->resp;
	}
	return 0;
}

static long fl_op(void *conn, enum op_kind kind, uint64_t *rng, char *err, size_t len)
{
	struct floor_conn *k = conn;
	int rc;

	(void)rng;
	switch (kind) {
	case OP_CHECK:
		rc = round_trip(k);
		break;
	case OP_PAIR:
		rc = round_trip(k) == 0 ? round_trip(k) : -1;
		break;
	case OP_PIPELINED:
		rc = pipelined(k);
		break;
	default:
		snprintf(err, len, "the floor has no admin operation");
		return -1;
	}
	if (rc != 0) {
		snprintf(err, len, "floor round trip: %s", strerror(errno));
		return -1;
	}
	return kind == OP_PIPELINED ? BENCH_PIPE_BATCH : 1;
}

static int fl_stop(struct sys *s)
{
	struct floor *f = s->priv;
	int rc = bench_reap(s->pid);

	test_rm_tree(f->dir);
	free(f);
	s->priv = NULL;
	/* the server never exits by itself: SIGTERM is how it ends */
	return rc == 128 + SIGTERM ? 0 : -1;
}

int floor_start(struct sys *s, size_t req_size, size_t resp_size, char *err, size_t len)
{
	struct floor *f = calloc(1, sizeof(*f));
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	pid_t parent = getpid(), pid;
	int lfd;

	if (f == NULL || test_tmpdir(f->dir, sizeof(f->dir)) != 0) {
		free(f);
		return snprintf(err, len, "no temporary directory"), -1;
	}
	f->req = req_size;
	f->resp = resp_size;
	snprintf(f->path, sizeof(f->path), "%s/floor.sock", f->dir);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", f->path);
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
	    listen(lfd, 4096) != 0) {
		snprintf(err, len, "floor socket %s: %s", f->path, strerror(errno));
		if (lfd >= 0)
			close(lfd);
		test_rm_tree(f->dir);
		free(f);
		return -1;
	}
	if ((pid = fork()) == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			_exit(1);
		serve(lfd, req_size, resp_size);
	}
	close(lfd);
	if (pid < 0) {
		snprintf(err, len, "fork: %s", strerror(errno));
		test_rm_tree(f->dir);
		free(f);
		return -1;
	}
	*s = (struct sys){ .name = "floor", .durability = "-", .pid = pid, .priv = f,
		           .connect = fl_connect, .op = fl_op, .disconnect = fl_disconnect,
		           .stop = fl_stop };
	return 0;
}
