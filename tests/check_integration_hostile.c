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
 * of memory (--max-outstanding-bytes) while another client is served.
 *
 * Threads: the Check runner forks each test; the test's main thread is the
 * only one, and every socket operation is bounded by a poll() deadline.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <msgpack.h>

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

void integration_hostile_tcases(Suite *s)
{
	TCase *tc = daemon_tcase(s, "hostile_outstanding", setup_outstanding_16, TEST_TIMEOUT_S);

	tcase_add_test(tc, test_burst_past_outstanding_strict);
	tcase_add_test(tc, test_burst_then_half_close);
	tc = daemon_tcase(s, "hostile_defaults", setup_default, TEST_TIMEOUT_S);
	tcase_add_test(tc, test_burst_past_default_outstanding);
	tcase_add_test(tc, test_unread_replies_bounded_by_bytes);
}
