/*
 * check_server.c: tests of the Unix-socket server (sidecard/serve/server.c).
 *
 * Each test runs a real server: a libuv loop on its own thread with a small
 * handler defined here, driven by plain blocking socket clients from the
 * test's thread. The loop thread owns the server; the test thread only
 * talks to it through the socket, and stops it through a uv_async_t. Every
 * test ends by proving that srv_stop() left the loop with no handle
 * (uv_loop_close() == 0) and removed the socket and the lock file. Every
 * test runs twice: with connections served on the loop thread, and again
 * ("<name>_workers") with two worker threads, where consecutive connections
 * land on different workers (least connections), so the notify test pokes
 * across threads; the handler here shares nothing but the server.
 *
 * Handler methods: "echo" returns its params; "fail" returns an
 * invalid_argument error; "stats" returns srv_get_stats(); "whoami" returns
 * the connection id; "poke" {conn} sends the notification
 * [2, "alert", [{"x": 1}]] to connection conn; "notify_self" returns the
 * code srv_notify() gives for the connection being answered.
 */
#include <check.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"
#include "server.h"
#include "sidecard.h"
#include "testutil.h"

Suite *server_suite(void);

#define IO_TIMEOUT_MS 10000

/* cfg.workers of every harness; the "_workers" test cases set 2 (in the forked test). */
static unsigned harness_workers = 1;

static void two_workers(void)
{
	harness_workers = 2;
}

/* ----- the server on its thread ----- */

struct harness {
	char dir[48];
	char path[72];
	struct srv_config cfg;
	uv_loop_t loop;
	uv_async_t wake;
	struct srv *srv;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int ready;
	int init_rc;
	char err[256];
	int done_called;
	int loop_close_rc;
};

static int method_is(const struct srv_request *req, const char *name)
{
	return req->method_len == strlen(name) && memcmp(req->method, name, req->method_len) == 0;
}

static void pack_stats(struct srv *s, msgpack_packer *pk)
{
	struct srv_stats st;

	srv_get_stats(s, &st);
	msgpack_pack_map(pk, 7);
	proto_pack_key_u64(pk, "connections_open", st.connections_open);
	proto_pack_key_u64(pk, "connections_total", st.connections_total);
	proto_pack_key_u64(pk, "requests", st.requests);
	proto_pack_key_u64(pk, "protocol_errors", st.protocol_errors);
	proto_pack_key_u64(pk, "rejected_connections", st.rejected_connections);
	proto_pack_key_u64(pk, "read_pauses", st.read_pauses);
	proto_pack_key_u64(pk, "outstanding_peak", st.outstanding_peak);
}

static void poke(struct harness *h, const struct srv_request *req, msgpack_packer *pk)
{
	static const char params[] = "\x91\x81\xa1x\x01"; /* [{"x": 1}] */
	struct proto_args a;
	char err[128];
	uint64_t conn = 0;
	int rc = proto_args_init(&a, req->params, err, sizeof(err));

	if (rc == 0)
		rc = proto_arg_u64(&a, "conn", 1, &conn, NULL);
	if (rc == 0)
		rc = proto_args_finish(&a);
	if (rc == 0)
		rc = srv_notify(h->srv, conn, "alert", params, sizeof(params) - 1);
	if (rc != 0) {
		proto_pack_error(pk, rc, rc == SC_EINVAL ? err : NULL);
		msgpack_pack_nil(pk);
		return;
	}
	msgpack_pack_nil(pk);
	msgpack_pack_true(pk);
}

static uint64_t handler(void *ctx, const struct srv_request *req, msgpack_packer *pk)
{
	struct harness *h = ctx;

	if (method_is(req, "poke")) {
		poke(h, req, pk);
		return 0;
	}
	if (method_is(req, "fail")) {
		proto_pack_error(pk, SC_EINVAL, "agent_id: required");
		msgpack_pack_nil(pk);
		return 0;
	}
	if (method_is(req, "echo")) {
		msgpack_pack_nil(pk);
		msgpack_pack_object(pk, *req->params);
	} else if (method_is(req, "stats")) {
		msgpack_pack_nil(pk);
		pack_stats(h->srv, pk);
	} else if (method_is(req, "whoami")) {
		msgpack_pack_nil(pk);
		msgpack_pack_uint64(pk, req->conn_id);
	} else if (method_is(req, "notify_self")) {
		msgpack_pack_nil(pk);
		msgpack_pack_int(pk, srv_notify(h->srv, req->conn_id, "x", "\x90", 1));
	} else {
		proto_pack_error(pk, SC_EUNSUPPORTED, "unknown method");
		msgpack_pack_nil(pk);
	}
	return 0;
}

static void on_done(void *arg)
{
	struct harness *h = arg;

	h->done_called = 1;
	srv_free(h->srv);
	h->srv = NULL;
	uv_close((uv_handle_t *)&h->wake, NULL);
}

static void on_wake(uv_async_t *a)
{
	struct harness *h = a->data;

	srv_stop(h->srv, on_done, h);
}

static void *loop_thread(void *arg)
{
	struct harness *h = arg;

	uv_loop_init(&h->loop);
	uv_async_init(&h->loop, &h->wake, on_wake);
	h->wake.data = h;
	h->init_rc = srv_init(&h->srv, &h->loop, &h->cfg, handler, h, h->err, sizeof(h->err));
	if (h->init_rc != 0)
		uv_close((uv_handle_t *)&h->wake, NULL);
	pthread_mutex_lock(&h->mu);
	h->ready = 1;
	pthread_cond_signal(&h->cv);
	pthread_mutex_unlock(&h->mu);
	uv_run(&h->loop, UV_RUN_DEFAULT);
	h->loop_close_rc = uv_loop_close(&h->loop);
	return NULL;
}

static void harness_config(struct harness *h)
{
	memset(h, 0, sizeof(*h));
	snprintf(h->dir, sizeof(h->dir), "/tmp/sc-srv-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(h->dir));
	snprintf(h->path, sizeof(h->path), "%s/sidecard.sock", h->dir);
	srv_config_default(&h->cfg, h->path);
	h->cfg.workers = harness_workers;
}

/* Starts the loop thread; returns srv_init's result. */
static int harness_start(struct harness *h)
{
	pthread_mutex_init(&h->mu, NULL);
	pthread_cond_init(&h->cv, NULL);
	ck_assert_int_eq(pthread_create(&h->thread, NULL, loop_thread, h), 0);
	pthread_mutex_lock(&h->mu);
	while (!h->ready)
		pthread_cond_wait(&h->cv, &h->mu);
	pthread_mutex_unlock(&h->mu);
	return h->init_rc;
}

static void harness_run(struct harness *h)
{
	harness_config(h);
	ck_assert_msg(harness_start(h) == 0, "srv_init: %s", h->err);
}

/* Stops the server and proves the loop closed clean and the files are gone. */
static void harness_stop(struct harness *h)
{
	char lock[160];

	if (h->init_rc == 0)
		uv_async_send(&h->wake);
	pthread_join(h->thread, NULL);
	ck_assert_int_eq(h->loop_close_rc, 0);
	if (h->init_rc == 0)
		ck_assert(h->done_called);
	snprintf(lock, sizeof(lock), "%s.lock", h->path);
	ck_assert_int_eq(access(h->path, F_OK), -1);
	ck_assert_int_eq(access(lock, F_OK), -1);
	rmdir(h->dir);
	pthread_mutex_destroy(&h->mu);
	pthread_cond_destroy(&h->cv);
}

/* ----- a blocking client ----- */

struct client {
	int fd;
	msgpack_unpacker up;
	msgpack_unpacked msg;
};

static int connect_to(const char *path)
{
	struct sockaddr_un sa;
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	ck_assert_int_ge(fd, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	ck_assert_msg(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect: %s",
	              strerror(errno));
	return fd;
}

static void client_open(struct client *c, const char *path)
{
	c->fd = connect_to(path);
	msgpack_unpacker_init(&c->up, 65536);
	msgpack_unpacked_init(&c->msg);
}

static void client_close(struct client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	msgpack_unpacked_destroy(&c->msg);
	msgpack_unpacker_destroy(&c->up);
}

static void send_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		ck_assert_msg(n > 0, "write: %s", strerror(errno));
		buf += n;
		len -= (size_t)n;
	}
}

/*
 * Reads the next message into c->msg. Returns 1, or 0 when the server closed
 * the connection (EOF, or ECONNRESET because it left our bytes unread).
 */
static int client_next(struct client *c)
{
	for (;;) {
		struct pollfd p = { .fd = c->fd, .events = POLLIN };
		ssize_t n;

		if (msgpack_unpacker_next(&c->up, &c->msg) == MSGPACK_UNPACK_SUCCESS)
			return 1;
		ck_assert(msgpack_unpacker_reserve_buffer(&c->up, 65536));
		ck_assert_msg(poll(&p, 1, IO_TIMEOUT_MS) == 1, "no answer from the server");
		n = read(c->fd, msgpack_unpacker_buffer(&c->up), msgpack_unpacker_buffer_capacity(&c->up));
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return 0;
		ck_assert_msg(n > 0, "read: %s", strerror(errno));
		msgpack_unpacker_buffer_consumed(&c->up, (size_t)n);
	}
}

/* A request [0, msgid, method, params] with params [] or a packed [map]. */
static void pack_request(msgpack_sbuffer *sb, uint32_t msgid, const char *method,
                         const char *params, size_t params_len)
{
	msgpack_packer pk;

	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 4);
	msgpack_pack_int(&pk, 0);
	msgpack_pack_uint32(&pk, msgid);
	proto_pack_cstr(&pk, method);
	if (params)
		msgpack_sbuffer_write(sb, params, params_len);
	else
		msgpack_pack_array(&pk, 0);
}

static void send_request(struct client *c, uint32_t msgid, const char *method)
{
	msgpack_sbuffer sb;

	msgpack_sbuffer_init(&sb);
	pack_request(&sb, msgid, method, NULL, 0);
	send_all(c->fd, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
}

/*
 * Like send_request, for a connection the server may already have refused
 * and closed: 1 if the request was written whole, 0 if the write failed.
 */
static int try_send_request(struct client *c, uint32_t msgid, const char *method)
{
	msgpack_sbuffer sb;
	int whole;

	msgpack_sbuffer_init(&sb);
	pack_request(&sb, msgid, method, NULL, 0);
	whole = write(c->fd, sb.data, sb.size) == (ssize_t)sb.size;
	msgpack_sbuffer_destroy(&sb);
	return whole;
}

/* Sends [0, msgid, "poke", [{conn}]] on c: asks for a notification to connection conn. */
static void send_poke(struct client *c, uint32_t msgid, uint64_t conn)
{
	msgpack_sbuffer params, sb;
	msgpack_packer pk;

	msgpack_sbuffer_init(&params);
	msgpack_packer_init(&pk, &params, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 1);
	msgpack_pack_map(&pk, 1);
	proto_pack_key_u64(&pk, "conn", conn);
	msgpack_sbuffer_init(&sb);
	pack_request(&sb, msgid, "poke", params.data, params.size);
	send_all(c->fd, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	msgpack_sbuffer_destroy(&params);
}

static int str_is(const msgpack_object *o, const char *s)
{
	return o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) &&
	       memcmp(o->via.str.ptr, s, o->via.str.size) == 0;
}

static const msgpack_object *map_get(const msgpack_object *map, const char *key)
{
	ck_assert_int_eq(map->type, MSGPACK_OBJECT_MAP);
	for (uint32_t i = 0; i < map->via.map.size; i++)
		if (str_is(&map->via.map.ptr[i].key, key))
			return &map->via.map.ptr[i].val;
	ck_abort_msg("no key %s", key);
	return NULL;
}

/* Reads a response to msgid; returns its element 2 (error) or 3 (result). */
static const msgpack_object *expect_response(struct client *c, uint32_t msgid, int want_error)
{
	const msgpack_object *e;

	ck_assert_msg(client_next(c), "connection closed, expected response %u", msgid);
	ck_assert_int_eq(c->msg.data.type, MSGPACK_OBJECT_ARRAY);
	ck_assert_uint_eq(c->msg.data.via.array.size, 4);
	e = c->msg.data.via.array.ptr;
	ck_assert_uint_eq(e[0].via.u64, 1);
	ck_assert_uint_eq(e[1].via.u64, msgid);
	if (want_error) {
		ck_assert_int_eq(e[3].type, MSGPACK_OBJECT_NIL);
		return &e[2];
	}
	ck_assert_int_eq(e[2].type, MSGPACK_OBJECT_NIL);
	return &e[3];
}

static void expect_error_map(const msgpack_object *err, int code, const char *name,
                             const char *message)
{
	ck_assert_int_eq(map_get(err, "code")->via.i64, code);
	ck_assert(str_is(map_get(err, "name"), name));
	ck_assert_msg(str_is(map_get(err, "message"), message), "message is %.*s",
	              (int)map_get(err, "message")->via.str.size,
	              map_get(err, "message")->via.str.ptr);
}

/* Reads [2, "error", [err]] and then the end of the connection. */
static void expect_error_notification_and_close(struct client *c, int code, const char *name,
                                                const char *message)
{
	const msgpack_object *e;

	ck_assert_msg(client_next(c), "closed without the error notification");
	ck_assert_uint_eq(c->msg.data.via.array.size, 3);
	e = c->msg.data.via.array.ptr;
	ck_assert_uint_eq(e[0].via.u64, 2);
	ck_assert(str_is(&e[1], "error"));
	ck_assert_uint_eq(e[2].via.array.size, 1);
	expect_error_map(&e[2].via.array.ptr[0], code, name, message);
	ck_assert_int_eq(client_next(c), 0);
}

static void roundtrip_ok(const char *path)
{
	struct client c;

	client_open(&c, path);
	send_request(&c, 5, "echo");
	ck_assert_int_eq(expect_response(&c, 5, 0)->type, MSGPACK_OBJECT_ARRAY);
	client_close(&c);
}

/* A stat of the running server, asked over a fresh connection. */
static uint64_t stat_of(const char *path, const char *name)
{
	struct client c;
	uint64_t v;

	client_open(&c, path);
	send_request(&c, 1, "stats");
	v = map_get(expect_response(&c, 1, 0), name)->via.u64;
	client_close(&c);
	return v;
}

/* ----- tests ----- */

START_TEST(test_roundtrip)
{
	struct harness h;
	struct client c;
	msgpack_sbuffer sb;
	const msgpack_object *r;

	harness_run(&h);
	client_open(&c, h.path);

	msgpack_sbuffer_init(&sb);
	pack_request(&sb, 7, "echo", "\x91\x81\xa1" "a\x01", 5);
	send_all(c.fd, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	r = expect_response(&c, 7, 0);
	ck_assert_uint_eq(r->via.array.size, 1);
	ck_assert_uint_eq(map_get(&r->via.array.ptr[0], "a")->via.u64, 1);

	send_request(&c, 8, "fail");
	expect_error_map(expect_response(&c, 8, 1), SC_EINVAL, "invalid_argument",
	                 "agent_id: required");

	/* a client notification is executed and not answered */
	send_all(c.fd, "\x93\x02\xa4" "echo\x90", 8);
	send_request(&c, 9, "echo");
	expect_response(&c, 9, 0);
	ck_assert_uint_eq(stat_of(h.path, "requests"), 5); /* with the stats request */

	client_close(&c);
	harness_stop(&h);
}
END_TEST

START_TEST(test_pipelining)
{
	enum { N = 10000 };
	struct harness h;
	struct client c;
	msgpack_sbuffer sb;

	harness_run(&h);
	client_open(&c, h.path);
	msgpack_sbuffer_init(&sb);
	for (uint32_t i = 0; i < N; i++)
		pack_request(&sb, i, "echo", NULL, 0);
	send_all(c.fd, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	for (uint32_t i = 0; i < N; i++)
		expect_response(&c, i, 0);
	client_close(&c);
	harness_stop(&h);
}
END_TEST

/* The client half-closes: its requests are answered, then the server closes. */
START_TEST(test_eof_after_requests)
{
	struct harness h;
	struct client c;

	harness_run(&h);
	client_open(&c, h.path);
	send_request(&c, 1, "echo");
	send_request(&c, 2, "echo");
	shutdown(c.fd, SHUT_WR);
	expect_response(&c, 1, 0);
	expect_response(&c, 2, 0);
	ck_assert_int_eq(client_next(&c), 0);
	client_close(&c);
	harness_stop(&h);
}
END_TEST

START_TEST(test_malformed_closes_only_that_connection)
{
	struct harness h;
	struct client bad, good, envelope;

	harness_run(&h);
	client_open(&good, h.path);
	send_request(&good, 1, "echo");
	expect_response(&good, 1, 0);

	client_open(&bad, h.path);
	send_all(bad.fd, "\xc1", 1);
	expect_error_notification_and_close(&bad, SC_EPROTO, "protocol_error",
	                                    "malformed msgpack (byte 0xc1)");

	/* well-formed msgpack, bad envelope: a response sent by the client */
	client_open(&envelope, h.path);
	send_all(envelope.fd, "\x94\x01\x05\xc0\xc0", 5);
	expect_error_notification_and_close(
	    &envelope, SC_EPROTO, "protocol_error",
	    "message type must be 0 (request) or 2 (notification)");

	send_request(&good, 2, "echo");
	expect_response(&good, 2, 0);
	ck_assert_uint_eq(stat_of(h.path, "protocol_errors"), 2);
	client_close(&bad);
	client_close(&envelope);
	client_close(&good);
	harness_stop(&h);
}
END_TEST

/* A bad envelope with a known msgid is answered to that msgid. */
START_TEST(test_bad_envelope_with_msgid)
{
	struct harness h;
	struct client c;

	harness_run(&h);
	client_open(&c, h.path);
	send_all(c.fd, "\x94\x00\x2a\x05\x90", 5); /* method is an integer */
	expect_error_map(expect_response(&c, 42, 1), SC_EPROTO, "protocol_error",
	                 "method must be a string");
	ck_assert_int_eq(client_next(&c), 0);
	client_close(&c);
	harness_stop(&h);
}
END_TEST

START_TEST(test_oversized_string)
{
	struct harness h;
	struct client c, other;
	char msg[16];

	harness_run(&h);
	client_open(&other, h.path);
	client_open(&c, h.path);
	/* [0, 77, "echo", [{"s": <str16 of 5000 bytes> ...: the header is enough */
	memcpy(msg, "\x94\x00\x4d\xa4" "echo\x91\x81\xa1s\xda\x13\x88", 15);
	send_all(c.fd, msg, 15);
	expect_error_map(expect_response(&c, 77, 1), SC_ELIMIT, "limit_exceeded",
	                 "string exceeds max_string (4096 bytes)");
	ck_assert_int_eq(client_next(&c), 0);

	send_request(&other, 3, "echo");
	expect_response(&other, 3, 0);
	client_close(&c);
	client_close(&other);
	harness_stop(&h);
}
END_TEST

START_TEST(test_max_connections)
{
	struct harness h;
	struct client a, b, extra;

	harness_config(&h);
	h.cfg.max_connections = 2;
	ck_assert_int_eq(harness_start(&h), 0);
	client_open(&a, h.path);
	client_open(&b, h.path);
	send_request(&a, 1, "echo");
	expect_response(&a, 1, 0);
	send_request(&b, 1, "echo");
	expect_response(&b, 1, 0);

	client_open(&extra, h.path);
	expect_error_notification_and_close(&extra, SC_ELIMIT, "limit_exceeded",
	                                    "too many connections (max 2)");
	client_close(&extra);

	/* a freed slot can be taken again */
	client_close(&a);
	for (int tries = 0;; tries++) {
		struct client c;

		/* until the server has seen a's close, c is refused (and may be closed before it writes) */
		client_open(&c, h.path);
		if (try_send_request(&c, 1, "stats") && client_next(&c) &&
		    c.msg.data.via.array.size == 4) {
			ck_assert_uint_eq(map_get(&c.msg.data.via.array.ptr[3], "rejected_connections")
			                      ->via.u64,
			                  (uint64_t)1 + (uint64_t)tries);
			client_close(&c);
			break;
		}
		client_close(&c);
		ck_assert_int_lt(tries, 100);
		usleep(10000);
	}
	client_close(&b);
	harness_stop(&h);
}
END_TEST

START_TEST(test_second_instance_refused)
{
	struct harness h;
	struct srv *s2 = NULL;
	uv_loop_t loop;
	char err[256], want[256];
	int rc;

	harness_run(&h);
	uv_loop_init(&loop);
	rc = srv_init(&s2, &loop, &h.cfg, handler, NULL, err, sizeof(err));
	ck_assert_int_eq(rc, SC_EEXISTS);
	snprintf(want, sizeof(want), "another sidecard is running on %s (pid %ld)", h.path,
	         (long)getpid());
	ck_assert_str_eq(err, want);
	ck_assert_int_eq(uv_loop_close(&loop), 0);
	/* the first server is untouched */
	roundtrip_ok(h.path);
	harness_stop(&h);
}
END_TEST

/* A crashed daemon left its socket file and an unlocked lock file. */
START_TEST(test_stale_socket_taken_over)
{
	struct harness h;
	struct sockaddr_un sa;
	char lock[160];
	FILE *f;
	int fd;

	harness_config(&h);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", h.path);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	ck_assert_int_eq(access(h.path, F_OK), 0);
	snprintf(lock, sizeof(lock), "%s.lock", h.path);
	f = fopen(lock, "w");
	fprintf(f, "999999\n");
	fclose(f);

	ck_assert_msg(harness_start(&h) == 0, "srv_init: %s", h.err);
	roundtrip_ok(h.path);
	harness_stop(&h);
}
END_TEST

/* Parent directories are created 0700, the socket gets cfg->mode. */
START_TEST(test_socket_files)
{
	struct harness h;
	struct stat st;
	char base[48], sub[64], lock[160], pid[32];
	FILE *f;

	harness_config(&h);
	memcpy(base, h.dir, sizeof(base));
	snprintf(sub, sizeof(sub), "%.30s/run", base);
	snprintf(h.dir, sizeof(h.dir), "%.30s/run/sidecard", base);
	snprintf(h.path, sizeof(h.path), "%s/sidecard.sock", h.dir);
	h.cfg.mode = 0600;
	ck_assert_msg(harness_start(&h) == 0, "srv_init: %s", h.err);
	ck_assert_int_eq(stat(h.dir, &st), 0);
	ck_assert_int_eq(st.st_mode & 07777, 0700);
	ck_assert_int_eq(stat(h.path, &st), 0);
	ck_assert(S_ISSOCK(st.st_mode));
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	snprintf(lock, sizeof(lock), "%s.lock", h.path);
	f = fopen(lock, "r");
	ck_assert_ptr_nonnull(f);
	ck_assert_ptr_nonnull(fgets(pid, sizeof(pid), f));
	fclose(f);
	ck_assert_int_eq(atol(pid), (long)getpid());
	harness_stop(&h);
	rmdir(sub);
	rmdir(base);
}
END_TEST

START_TEST(test_path_not_a_socket)
{
	struct harness h;
	FILE *f;

	harness_config(&h);
	f = fopen(h.path, "w");
	fclose(f);
	ck_assert_int_eq(harness_start(&h), SC_EEXISTS);
	ck_assert(strstr(h.err, "exists and is not a socket") != NULL);
	unlink(h.path);
	harness_stop(&h);
}
END_TEST

struct writer {
	int fd;
	uint32_t n;
};

static void *write_requests(void *arg)
{
	struct writer *w = arg;
	msgpack_sbuffer sb;

	msgpack_sbuffer_init(&sb);
	for (uint32_t i = 0; i < w->n; i++)
		pack_request(&sb, i, "echo", NULL, 0);
	send_all(w->fd, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	return NULL;
}

/*
 * A client pipelines 200k requests without reading: the server stops reading
 * it at max_outstanding, keeps serving others, and delivers everything once
 * the client reads.
 */
START_TEST(test_backpressure)
{
	enum { N = 200000 };
	struct harness h;
	struct client c;
	struct writer w;
	pthread_t t;

	harness_run(&h);
	client_open(&c, h.path);
	w.fd = c.fd;
	w.n = N;
	ck_assert_int_eq(pthread_create(&t, NULL, write_requests, &w), 0);
	for (int tries = 0; stat_of(h.path, "read_pauses") == 0; tries++) {
		ck_assert_int_lt(tries, 500);
		usleep(10000);
	}
	ck_assert_uint_le(stat_of(h.path, "outstanding_peak"), h.cfg.max_outstanding);
	for (uint32_t i = 0; i < N; i++)
		expect_response(&c, i, 0);
	pthread_join(t, NULL);
	ck_assert_uint_le(stat_of(h.path, "outstanding_peak"), h.cfg.max_outstanding);
	client_close(&c);
	harness_stop(&h);
}
END_TEST

START_TEST(test_notify)
{
	struct harness h;
	struct client a, b;
	uint64_t id;
	const msgpack_object *e;

	harness_run(&h);
	client_open(&a, h.path);
	client_open(&b, h.path);
	send_request(&a, 1, "whoami");
	id = expect_response(&a, 1, 0)->via.u64;
	send_request(&a, 2, "notify_self");
	ck_assert_int_eq(expect_response(&a, 2, 0)->via.i64, SC_EUNAVAILABLE);

	send_poke(&b, 3, id);
	ck_assert(expect_response(&b, 3, 0)->type == MSGPACK_OBJECT_BOOLEAN);

	ck_assert(client_next(&a));
	e = a.msg.data.via.array.ptr;
	ck_assert_uint_eq(a.msg.data.via.array.size, 3);
	ck_assert_uint_eq(e[0].via.u64, 2);
	ck_assert(str_is(&e[1], "alert"));
	ck_assert_uint_eq(map_get(&e[2].via.array.ptr[0], "x")->via.u64, 1);

	/* an unknown connection */
	send_poke(&b, 4, 999999);
	expect_error_map(expect_response(&b, 4, 1), SC_ENOTFOUND, "not_found", "no such object");
	client_close(&a);
	client_close(&b);
	harness_stop(&h);
}
END_TEST

/*
 * srv_stop with clients connected, one of them with responses it has not
 * read: every client sees the end of its connection, the loop closes clean.
 */
START_TEST(test_stop_drains)
{
	struct harness h;
	struct client idle, busy;
	msgpack_sbuffer sb;
	int got = 0;

	harness_run(&h);
	client_open(&idle, h.path);
	client_open(&busy, h.path);
	msgpack_sbuffer_init(&sb);
	for (uint32_t i = 0; i < 100; i++)
		pack_request(&sb, i, "echo", NULL, 0);
	send_all(busy.fd, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	expect_response(&busy, 0, 0);

	harness_stop(&h);
	ck_assert_int_eq(client_next(&idle), 0);
	while (client_next(&busy))
		got++;
	ck_assert_int_eq(got, 99); /* queued responses were written before closing */
	client_close(&idle);
	client_close(&busy);
}
END_TEST

Suite *server_suite(void)
{
	Suite *s = suite_create("server");
	const struct test_case cases[] = {
		{ "roundtrip", test_roundtrip },
		{ "pipelining", test_pipelining },
		{ "eof_after_requests", test_eof_after_requests },
		{ "malformed", test_malformed_closes_only_that_connection },
		{ "bad_envelope_msgid", test_bad_envelope_with_msgid },
		{ "oversized_string", test_oversized_string },
		{ "max_connections", test_max_connections },
		{ "second_instance", test_second_instance_refused },
		{ "stale_socket", test_stale_socket_taken_over },
		{ "socket_files", test_socket_files },
		{ "not_a_socket", test_path_not_a_socket },
		{ "backpressure", test_backpressure },
		{ "notify", test_notify },
		{ "stop_drains", test_stop_drains },
	};

	signal(SIGPIPE, SIG_IGN);
	test_add_cases(s, cases, sizeof(cases) / sizeof(cases[0]), 60);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		/* Check keeps the name's pointer for the suite's life */
		static char names[sizeof(cases) / sizeof(cases[0])][64];
		TCase *tc;

		snprintf(names[i], sizeof(names[i]), "%s_workers", cases[i].name);
		tc = tcase_create(names[i]);
		tcase_set_timeout(tc, 60);
		tcase_add_checked_fixture(tc, two_workers, NULL);
		tcase_add_test(tc, cases[i].test);
		suite_add_tcase(s, tc);
	}
	return s;
}
