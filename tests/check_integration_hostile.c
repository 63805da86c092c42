/*
 * check_integration_hostile.c: the daemon under clients that do not play by
 * the rules of a well-behaved library, through raw sockets beside the test's
 * libsidecard connection (tests/integration_fixture.h).
 *
 * What is proven: a burst of pipelined mutating requests larger than
 * --max-outstanding, arriving in one write, is answered in full in strict
 * durability on one loop, and the daemon goes on serving a second client and
 * stops on SIGTERM (the burst used to spin the loop forever, since the sync
 * that would release the held replies runs on that same loop); a client that
 * half-closes after such a burst still gets every answer; clients that
 * pipeline large replies and never read hold the daemon to a bounded amount
 * of memory (--max-outstanding-bytes) while another client is served; an
 * error message quoting bytes that are not text is text all the same.
 *
 * Threads: the Check runner forks each test; the test's main thread is the
 * only one, and every socket operation is bounded by a poll() deadline.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <msgpack.h>

#include "common.h"
#include "integration_fixture.h"
#include "suites.h"

#define IO_TIMEOUT_MS 20000

/* ----- a raw msgpack-rpc client ----- */

static int raw_connect(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", d.socket);
	ck_assert_msg(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect: %s",
	              strerror(errno));
	return fd;
}

static void raw_write(int fd, const char *buf, size_t len)
{
	while (len) {
		struct pollfd p = { .fd = fd, .events = POLLOUT };
		ssize_t n;

		ck_assert_msg(poll(&p, 1, IO_TIMEOUT_MS) == 1, "the daemon takes no more input");
		n = write(fd, buf, len);
		ck_assert_msg(n > 0, "write: %s", strerror(errno));
		buf += n;
		len -= (size_t)n;
	}
}

/* [0, msgid, "check", [{agent_id, action, estimated_cost}]] */
static void pack_check(msgpack_packer *pk, uint32_t msgid, uint64_t agent)
{
	msgpack_pack_array(pk, 4);
	msgpack_pack_int(pk, 0);
	msgpack_pack_uint32(pk, msgid);
	msgpack_pack_str_with_body(pk, "check", 5);
	msgpack_pack_array(pk, 1);
	msgpack_pack_map(pk, 3);
	msgpack_pack_str_with_body(pk, "agent_id", 8);
	msgpack_pack_uint64(pk, agent);
	msgpack_pack_str_with_body(pk, "action", 6);
	msgpack_pack_str_with_body(pk, "llm.chat", 8);
	msgpack_pack_str_with_body(pk, "estimated_cost", 14);
	msgpack_pack_int64(pk, 1000);
}

/* [0, msgid, "transactions.list", [{agent_id, limit}]] */
static void pack_list(msgpack_packer *pk, uint32_t msgid, uint64_t agent, unsigned limit)
{
	msgpack_pack_array(pk, 4);
	msgpack_pack_int(pk, 0);
	msgpack_pack_uint32(pk, msgid);
	msgpack_pack_str_with_body(pk, "transactions.list", 17);
	msgpack_pack_array(pk, 1);
	msgpack_pack_map(pk, 2);
	msgpack_pack_str_with_body(pk, "agent_id", 8);
	msgpack_pack_uint64(pk, agent);
	msgpack_pack_str_with_body(pk, "limit", 5);
	msgpack_pack_uint32(pk, limit);
}

/* The value of key in map m (a str key), or NULL. */
static const msgpack_object *map_get(const msgpack_object *m, const char *key)
{
	if (m->type != MSGPACK_OBJECT_MAP)
		return NULL;
	for (uint32_t i = 0; i < m->via.map.size; i++) {
		const msgpack_object *k = &m->via.map.ptr[i].key;

		if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
		    memcmp(k->via.str.ptr, key, k->via.str.size) == 0)
			return &m->via.map.ptr[i].val;
	}
	return NULL;
}

/*
 * Reads n responses, asserting that they answer msgids 0..n-1 in order with
 * no error and, for checks, an allowed decision; then, if eof, that the
 * daemon closes the connection.
 */
static void raw_expect(int fd, uint32_t n, int checks, int eof)
{
	msgpack_unpacker u;
	msgpack_unpacked r;
	uint32_t got = 0;

	ck_assert(msgpack_unpacker_init(&u, 1 << 16));
	msgpack_unpacked_init(&r);
	while (got < n || eof) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t len;

		while (got < n && msgpack_unpacker_next(&u, &r) == MSGPACK_UNPACK_SUCCESS) {
			const msgpack_object *o = &r.data;
			const msgpack_object *status;

			ck_assert(o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == 4);
			ck_assert_uint_eq(o->via.array.ptr[1].via.u64, got);
			ck_assert_msg(o->via.array.ptr[2].type == MSGPACK_OBJECT_NIL,
			              "response %" PRIu32 " is an error", got);
			if (checks) {
				status = map_get(&o->via.array.ptr[3], "status");
				ck_assert(status && status->type == MSGPACK_OBJECT_STR);
				ck_assert_msg(memcmp(status->via.str.ptr, "allowed", 7) == 0,
				              "check %" PRIu32 " not allowed", got);
			}
			got++;
		}
		if (got == n && !eof)
			break;
		ck_assert_msg(poll(&p, 1, IO_TIMEOUT_MS) == 1,
		              "no answer past %" PRIu32 " of %" PRIu32 " in %d ms", got, n,
		              IO_TIMEOUT_MS);
		ck_assert(msgpack_unpacker_reserve_buffer(&u, 1 << 16));
		len = read(fd, msgpack_unpacker_buffer(&u), msgpack_unpacker_buffer_capacity(&u));
		ck_assert_msg(len >= 0, "read: %s", strerror(errno));
		if (len == 0) {
			ck_assert_msg(eof && got == n, "closed after %" PRIu32 " of %" PRIu32, got,
			              n);
			break;
		}
		msgpack_unpacker_buffer_consumed(&u, (size_t)len);
	}
	msgpack_unpacked_destroy(&r);
	msgpack_unpacker_destroy(&u);
}

/* n checks of agent, pipelined in one write; then, if half_close, shutdown(SHUT_WR). */
static int send_checks(uint64_t agent, uint32_t n, int half_close)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	int fd = raw_connect();

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	for (uint32_t i = 0; i < n; i++)
		pack_check(&pk, i, agent);
	raw_write(fd, sb.data, sb.size);
	if (half_close)
		ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
	msgpack_sbuffer_destroy(&sb);
	return fd;
}

/* The libsidecard connection is served: the daemon's loop is not stuck. */
static void served(void)
{
	int64_t requests;

	OK(sc_stat(c, "requests", &requests));
	ck_assert_int_gt(requests, 0);
}

/* ----- more mutating requests in one write than may be outstanding ----- */

static void setup_outstanding_16(void)
{
	static const char *const extra[] = { "--max-outstanding", "16", "--durability", "strict",
		                             NULL };

	start(extra);
}

START_TEST(test_burst_past_outstanding_strict)
{
	uint64_t agent = new_agent(USD(1000));
	int fd = send_checks(agent, 17, 0);
	int fd2 = send_checks(agent, 300, 0);

	served();
	raw_expect(fd, 17, 1, 0);
	raw_expect(fd2, 300, 1, 0);
	served();
	close(fd);
	close(fd2);
	ck_assert_int_eq(wallet(agent).held, 317 * 1000);
	stop();
}
END_TEST

START_TEST(test_burst_then_half_close)
{
	uint64_t agent = new_agent(USD(1000));
	int fd = send_checks(agent, 200, 1);

	raw_expect(fd, 200, 1, 1);
	close(fd);
	ck_assert_int_eq(wallet(agent).held, 200 * 1000);
	stop();
}
END_TEST

/* The defaults: strict, one loop, 1,024 outstanding; 1,100 checks are about 60 KB. */
START_TEST(test_burst_past_default_outstanding)
{
	uint64_t agent = new_agent(USD(1000));
	int fd = send_checks(agent, 1100, 0);

	served();
	raw_expect(fd, 1100, 1, 0);
	close(fd);
	stop();
}
END_TEST

/* ----- replies that are never read ----- */

#define READERLESS_CONNS 3
#define READERLESS_LISTS 300
#define LIST_LIMIT 1000

/* The daemon's resident memory in KiB (VmRSS). */
static long daemon_rss_kib(void)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%ld/status", (long)d.pid);
	f = fopen(path, "r");
	ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	fclose(f);
	ck_assert_int_gt(kib, 0);
	return kib;
}

/*
 * Three connections each pipeline 300 transactions.list of 1,000 rows (a
 * reply of a few hundred KB) and never read. Bounded by reply count alone
 * they would make the daemon pack and keep every reply, hundreds of MB;
 * bounded by bytes each stops after about max_outstanding_bytes. Meanwhile
 * the test's own connection is served.
 */
START_TEST(test_unread_replies_bounded_by_bytes)
{
	static sc_check_req reqs[LIST_LIMIT];
	static sc_decision outs[LIST_LIMIT];
	static int rcs[LIST_LIMIT];
	uint64_t agent = new_agent(USD(1000));
	int fds[READERLESS_CONNS];
	msgpack_sbuffer sb;
	msgpack_packer pk;
	int64_t pauses = 0;
	long before, after;

	for (size_t i = 0; i < LIST_LIMIT; i++)
		reqs[i] = (sc_check_req){ .agent_id = agent, .action = "llm.chat",
			                  .estimated_cost = 1000 };
	OK(sc_check_batch(c, reqs, LIST_LIMIT, outs, rcs));
	for (size_t i = 0; i < LIST_LIMIT; i++)
		ck_assert(rcs[i] == 0 && outs[i].allowed);
	before = daemon_rss_kib();
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	for (uint32_t i = 0; i < READERLESS_LISTS; i++)
		pack_list(&pk, i, agent, LIST_LIMIT);
	for (int k = 0; k < READERLESS_CONNS; k++) {
		fds[k] = raw_connect();
		raw_write(fds[k], sb.data, sb.size);
	}
	msgpack_sbuffer_destroy(&sb);
	/* every attacker has stopped being read once the daemon answers us and counts three */
	for (int i = 0; i < 500 && pauses < READERLESS_CONNS; i++) {
		served();
		OK(sc_stat(c, "read_pauses", &pauses));
		if (pauses < READERLESS_CONNS)
			test_sleep_ms(10);
	}
	ck_assert_int_ge(pauses, READERLESS_CONNS);
	after = daemon_rss_kib();
	ck_assert_msg(after - before < 64 * 1024,
	              "three unread connections grew the daemon by %ld KiB", after - before);
	/* a reader that comes back gets every reply, in order */
	raw_expect(fds[0], READERLESS_LISTS, 0, 0);
	for (int k = 0; k < READERLESS_CONNS; k++)
		close(fds[k]);
	served();
	stop();
}
END_TEST

/* ----- a fair share of the loop ----- */

#define SUMMARY_TXNS 60000
#define SUMMARIES 2000

/* Replies readable on fd now, without waiting (each summary reply is small). */
static uint32_t replies_ready(int fd, msgpack_unpacker *u)
{
	msgpack_unpacked r;
	uint32_t n = 0;
	ssize_t len;

	msgpack_unpacked_init(&r);
	for (;;) {
		ck_assert(msgpack_unpacker_reserve_buffer(u, 1 << 16));
		len = recv(fd, msgpack_unpacker_buffer(u), msgpack_unpacker_buffer_capacity(u),
		           MSG_DONTWAIT);
		if (len <= 0)
			break;
		msgpack_unpacker_buffer_consumed(u, (size_t)len);
	}
	while (msgpack_unpacker_next(u, &r) == MSGPACK_UNPACK_SUCCESS)
		n++;
	msgpack_unpacked_destroy(&r);
	return n;
}

/*
 * One connection pipelines 2,000 transactions.summary, each a walk over
 * 60,000 transactions, in one write: seconds of work. Once its first
 * replies come, another client's request is answered while nearly all of
 * them are still to come, because a connection that used its share of a
 * loop turn waits for the next one. Handled in one go, the daemon's first
 * read alone (16 KB, about 500 of them) came before anyone else.
 */
START_TEST(test_burst_of_heavy_requests_shares_the_loop)
{
	static sc_check_req reqs[SUMMARY_TXNS];
	static sc_decision outs[SUMMARY_TXNS];
	static int rcs[SUMMARY_TXNS];
	uint64_t agent = new_agent(USD(1000));
	msgpack_unpacker u;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	uint32_t before;
	int fd;

	for (size_t i = 0; i < SUMMARY_TXNS; i++)
		reqs[i] = (sc_check_req){ .agent_id = agent, .action = "llm.chat",
			                  .estimated_cost = 1 };
	OK(sc_check_batch(c, reqs, SUMMARY_TXNS, outs, rcs));
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	for (uint32_t i = 0; i < SUMMARIES; i++) {
		msgpack_pack_array(&pk, 4);
		msgpack_pack_int(&pk, 0);
		msgpack_pack_uint32(&pk, i);
		msgpack_pack_str_with_body(&pk, "transactions.summary", 20);
		msgpack_pack_array(&pk, 0);
	}
	fd = raw_connect();
	raw_write(fd, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	/* the burst's handling has begun: its first replies are there */
	{
		struct pollfd p = { .fd = fd, .events = POLLIN };

		ck_assert_int_eq(poll(&p, 1, IO_TIMEOUT_MS), 1);
	}
	served();
	ck_assert(msgpack_unpacker_init(&u, 1 << 16));
	before = replies_ready(fd, &u);
	ck_assert_msg(before < SUMMARIES / 8,
	              "the other client waited for %u of %u heavy requests", before, SUMMARIES);
	msgpack_unpacker_destroy(&u);
	close(fd);
	stop();
}
END_TEST

/* ----- how a connection ends ----- */

static void setup_one_connection(void)
{
	static const char *const extra[] = { "--max-connections", "2", NULL };

	start(extra);
}

/*
 * Reads what the daemon sends until it closes: asserts the error
 * notification [2, "error", [{name}]] came first and that the end was an
 * orderly EOF, not a reset.
 */
static void expect_error_then_eof(int fd, const char *name)
{
	char buf[512];
	size_t len = 0;
	msgpack_unpacked r;
	const msgpack_object *o, *n;
	size_t off = 0;

	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t got;

		ck_assert_msg(poll(&p, 1, IO_TIMEOUT_MS) == 1, "the daemon neither wrote nor closed");
		got = read(fd, buf + len, sizeof(buf) - len);
		ck_assert_msg(got >= 0, "read: %s (a reset before or instead of EOF)", strerror(errno));
		if (got == 0)
			break;
		len += (size_t)got;
		ck_assert(len < sizeof(buf));
	}
	msgpack_unpacked_init(&r);
	ck_assert_int_eq(msgpack_unpack_next(&r, buf, len, &off), MSGPACK_UNPACK_SUCCESS);
	o = &r.data;
	ck_assert(o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == 3);
	ck_assert_uint_eq(o->via.array.ptr[0].via.u64, 2);
	ck_assert(o->via.array.ptr[2].type == MSGPACK_OBJECT_ARRAY);
	n = map_get(&o->via.array.ptr[2].via.array.ptr[0], "name");
	ck_assert(n && n->type == MSGPACK_OBJECT_STR && n->via.str.size == strlen(name) &&
	          memcmp(n->via.str.ptr, name, strlen(name)) == 0);
	msgpack_unpacked_destroy(&r);
}

/*
 * A client beyond --max-connections that writes its request before or
 * after the daemon refused it reads the refusal, then EOF: it is never
 * reset, and its write never fails, before it could see why.
 */
/* Waits until the daemon counts n open connections (at most 5 s). */
static void wait_open(int64_t n)
{
	int64_t open = -1;

	for (int i = 0; i < 500 && open != n; i++) {
		OK(sc_stat(c, "connections_open", &open));
		if (open != n)
			test_sleep_ms(10);
	}
	ck_assert_int_eq(open, n);
}

START_TEST(test_refused_connection_reads_why)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	int second;

	/*
	 * The test's connection and the second are the two allowed. The
	 * start-up's probe of the socket must have gone first (with workers its
	 * close is counted on another thread, a moment later), then the second
	 * is answered.
	 */
	wait_open(1);
	second = raw_connect();
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 4);
	msgpack_pack_int(&pk, 0);
	msgpack_pack_uint32(&pk, 0);
	msgpack_pack_str_with_body(&pk, "hello", 5);
	msgpack_pack_array(&pk, 0);
	raw_write(second, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	raw_expect(second, 1, 0, 0);
	wait_open(2);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	pack_check(&pk, 1, 1);
	for (int late = 0; late < 2; late++) {
		int fd = raw_connect();

		if (late)
			test_sleep_ms(100);
		raw_write(fd, sb.data, sb.size);
		expect_error_then_eof(fd, "limit_exceeded");
		close(fd);
	}
	msgpack_sbuffer_destroy(&sb);
	close(second);
	served();
	stop();
}
END_TEST

/* Descriptors the daemon holds open. */
static int daemon_fds(void)
{
	char path[64];
	struct dirent *e;
	DIR *dir;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)d.pid);
	ck_assert_msg((dir = opendir(path)) != NULL, "%s: %s", path, strerror(errno));
	while ((e = readdir(dir)) != NULL)
		n += e->d_name[0] != '.';
	closedir(dir);
	return n;
}

/*
 * A flood of connections beyond --max-connections: each is told why, but
 * at most 64 of them linger (SRV_MAX_REFUSED_LINGERING, server.c) to drain
 * their input; the others are closed as soon as the refusal is written, so
 * the flood holds few of the daemon's descriptors. Every one lingered
 * 500 ms before, so 300 held 300 descriptors at once.
 */
START_TEST(test_refused_flood_holds_few_descriptors)
{
	enum { FLOOD = 300 };
	static int fds[FLOOD];
	int64_t rejected = 0;
	int base, most = 0;

	wait_open(1);
	base = daemon_fds();
	for (int i = 0; i < FLOOD; i++)
		fds[i] = raw_connect();
	/*
	 * Once every refusal is made (fds[0] is the second allowed), and while
	 * a lingering connection would still linger (500 ms from its refusal),
	 * the flood holds the lingering ones and few others.
	 */
	for (int i = 0; i < 500 && rejected < FLOOD - 1; i++) {
		OK(sc_stat(c, "rejected_connections", &rejected));
		if (rejected < FLOOD - 1)
			test_sleep_ms(2);
	}
	ck_assert_int_ge(rejected, FLOOD - 1);
	for (int i = 0; i < 10; i++) {
		int n = daemon_fds() - base;

		most = n > most ? n : most;
		test_sleep_ms(10);
	}
	ck_assert_msg(most <= 64 + 16, "the flood held %d descriptors of the daemon", most);
	expect_error_then_eof(fds[1], "limit_exceeded"); /* fds[0] is the second allowed */
	expect_error_then_eof(fds[FLOOD - 1], "limit_exceeded");
	for (int i = 0; i < FLOOD; i++)
		close(fds[i]);
	served();
	stop();
}
END_TEST

/* Malformed bytes are answered with protocol_error, then EOF, not a reset. */
START_TEST(test_malformed_reads_why)
{
	static const char junk[] = "\xc1\xc1\xc1\xc1";
	int fd = raw_connect();

	raw_write(fd, junk, sizeof(junk) - 1);
	expect_error_then_eof(fd, "protocol_error");
	close(fd);
	served();
	stop();
}
END_TEST

/*
 * An error message that quotes what the client sent is still text that a
 * strict client can decode (Python's str, a TextDecoder in fatal mode) and
 * a terminal can show, whatever the bytes: a field name with control
 * characters and invalid UTF-8, an org name cut to 64 bytes in the middle
 * of a character, a method name that is not UTF-8. Each byte that is not
 * text arrives as U+FFFD.
 */
START_TEST(test_error_messages_are_text)
{
	static const struct {
		const char *method, *key, *value, *name, *says;
	} asks[] = {
		{"check", "x\x01\n\xff", "1", "invalid_argument",
		 "unknown field 'x\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd'"},
		/* "a" and 40 times U+00E9: byte 64 is the first of a character */
		{"agents.list", "org", NULL, "not_found", "no org named 'a\xc3\xa9"},
		{"\xff\xfe" "agents.get", "agent_id", "1", "unsupported",
		 "unknown method '\xef\xbf\xbd"},
	};
	char org[128] = "a";
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_unpacker u;
	msgpack_unpacked r;
	uint32_t got = 0;
	int fd = raw_connect();

	for (int i = 0; i < 40; i++)
		strcat(org, "\xc3\xa9");
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	for (uint32_t i = 0; i < sizeof(asks) / sizeof(asks[0]); i++) {
		const char *v = asks[i].value ? asks[i].value : org;

		msgpack_pack_array(&pk, 4);
		msgpack_pack_int(&pk, 0);
		msgpack_pack_uint32(&pk, i);
		msgpack_pack_str_with_body(&pk, asks[i].method, strlen(asks[i].method));
		msgpack_pack_array(&pk, 1);
		msgpack_pack_map(&pk, 1);
		msgpack_pack_str_with_body(&pk, asks[i].key, strlen(asks[i].key));
		msgpack_pack_str_with_body(&pk, v, strlen(v));
	}
	raw_write(fd, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	ck_assert(msgpack_unpacker_init(&u, 1 << 16));
	msgpack_unpacked_init(&r);
	while (got < sizeof(asks) / sizeof(asks[0])) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t len;

		while (got < sizeof(asks) / sizeof(asks[0]) &&
		       msgpack_unpacker_next(&u, &r) == MSGPACK_UNPACK_SUCCESS) {
			const msgpack_object *o = &r.data, *name, *message;
			char why[128];

			ck_assert(o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == 4);
			ck_assert_uint_eq(o->via.array.ptr[1].via.u64, got);
			name = map_get(&o->via.array.ptr[2], "name");
			message = map_get(&o->via.array.ptr[2], "message");
			ck_assert(name && name->type == MSGPACK_OBJECT_STR);
			ck_assert(message && message->type == MSGPACK_OBJECT_STR);
			ck_assert_msg(name->via.str.size == strlen(asks[got].name) &&
			              memcmp(name->via.str.ptr, asks[got].name, name->via.str.size) == 0,
			              "%s: %.*s", asks[got].method, (int)name->via.str.size,
			              name->via.str.ptr);
			ck_assert_msg(sc_text_check(message->via.str.ptr, message->via.str.size, why,
			                            sizeof(why)) == 0,
			              "%s: %s: %.*s", asks[got].method, why, (int)message->via.str.size,
			              message->via.str.ptr);
			ck_assert_msg(memmem(message->via.str.ptr, message->via.str.size, asks[got].says,
			                     strlen(asks[got].says)) != NULL,
			              "%.*s", (int)message->via.str.size, message->via.str.ptr);
			got++;
		}
		if (got == sizeof(asks) / sizeof(asks[0]))
			break;
		ck_assert_msg(poll(&p, 1, IO_TIMEOUT_MS) == 1, "no answer past %" PRIu32, got);
		ck_assert(msgpack_unpacker_reserve_buffer(&u, 1 << 16));
		len = read(fd, msgpack_unpacker_buffer(&u), msgpack_unpacker_buffer_capacity(&u));
		ck_assert_msg(len > 0, "read: %s", len ? strerror(errno) : "EOF");
		msgpack_unpacker_buffer_consumed(&u, (size_t)len);
	}
	msgpack_unpacked_destroy(&r);
	msgpack_unpacker_destroy(&u);
	close(fd);
	served();
	stop();
}
END_TEST

/*
 * A daemon whose socket and lock file were deleted while it ran, and
 * replaced by a second daemon's, removes only its own files when it stops:
 * the second one stays reachable.
 */
START_TEST(test_stop_spares_a_newer_socket)
{
	static const char *extra[8];
	static char segment[128], state[128];
	struct test_daemon second;
	char lock[128];
	sc_client *c2;

	snprintf(lock, sizeof(lock), "%s.lock", d.socket);
	snprintf(segment, sizeof(segment), "%s/second.shm", d.dir);
	snprintf(state, sizeof(state), "%s/second-state", d.dir);
	ck_assert_int_eq(unlink(d.socket), 0);
	ck_assert_int_eq(unlink(lock), 0);
	extra[0] = "--state-dir";
	extra[1] = state;
	extra[2] = "--segment";
	extra[3] = segment;
	memset(&second, 0, sizeof(second));
	/* on the first's directory: the same socket path, a state of its own */
	ck_assert_int_eq(test_daemon_start_in(&second, d.dir, NULL, extra), 0);
	ck_assert_str_eq(second.socket, d.socket);
	sc_close(c);
	c = NULL;
	ck_assert_int_eq(test_daemon_kill(&d, SIGTERM), 0); /* keeps the directory */
	ck_assert_msg(access(d.socket, F_OK) == 0, "the first daemon removed the second's socket");
	ck_assert_msg(access(lock, F_OK) == 0, "the first daemon removed the second's lock");
	ck_assert_int_eq(sc_connect(d.socket, &c2), 0);
	ck_assert_int_eq(sc_stat(c2, "requests", &(int64_t){ 0 }), 0);
	sc_close(c2);
	ck_assert_int_eq(test_daemon_stop(&second), 0);
	stop();
}
END_TEST

void integration_hostile_tcases(Suite *s)
{
	TCase *tc = daemon_tcase(s, "hostile_outstanding", setup_outstanding_16, TEST_TIMEOUT_S);

	tcase_add_test(tc, test_burst_past_outstanding_strict);
	tcase_add_test(tc, test_burst_then_half_close);
	tc = daemon_tcase(s, "hostile_defaults", setup_default, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_burst_past_default_outstanding);
	tcase_add_test(tc, test_unread_replies_bounded_by_bytes);
	tcase_add_test(tc, test_malformed_reads_why);
	tcase_add_test(tc, test_error_messages_are_text);
	tcase_add_test(tc, test_burst_of_heavy_requests_shares_the_loop);
	tcase_add_test(tc, test_stop_spares_a_newer_socket);
	tc = daemon_tcase(s, "hostile_one_connection", setup_one_connection, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_refused_connection_reads_why);
	tcase_add_test(tc, test_refused_flood_holds_few_descriptors);
}
