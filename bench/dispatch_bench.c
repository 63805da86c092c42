/*
 * dispatch_bench.c: what access control adds to the daemon's work on a
 * check, measured where the work is done, without sockets. One thread
 * calls dispatch_request (sidecard/serve/dispatch.c) with a check and its report,
 * --trips times (400000) per way, on a real state segment and a real ledger
 * (async, in /dev/shm, flushed by running its loop between chunks). The
 * ways take turns every 1,000 trips, so that a drift of the machine (a
 * neighbour's load, the ledger's segments, the history ring filling) weighs
 * on each alike:
 *
 *   no peer       a request with no identity (srv_request.peer NULL), as the
 *                 dispatcher saw every request before roles existed: no
 *                 role check and no actor in the ledger record;
 *   admin         an admin by its uid: the role check, and the actor
 *                 {role, uid, pid} in every record;
 *   agent         a connection bound to the agent by its token and naming
 *                 its agent_id: the token's check against the agent record
 *                 and the scope check besides, and agent_id in the actor;
 *   agent, no id  the same, leaving agent_id out for the dispatcher to add.
 *
 * It prints nanoseconds per trip and each way's ratio to "no peer", with
 * the spread of that ratio over --rounds (5) parts of the run (the lowest
 * and highest part): the target is at most 1.02 for an agent. Over
 * a socket the same work is hidden by the round trip's wake-ups (access_bench).
 *
 * Threads: one, which is the loop's and the commit lock's only user.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <msgpack.h>
#include <urcu.h>

#include "access.h"
#include "bench_util.h"
#include "clock.h"
#include "dispatch.h"
#include "ledger_writer.h"
#include "proto.h"
#include "state.h"

enum way { NO_PEER, ADMIN, AGENT, AGENT_NO_ID, WAYS };

static const char *const way_names[WAYS] = {"no peer", "admin", "agent", "agent, no agent_id"};

static struct {
	uv_loop_t loop;
	struct state *st;
	struct dispatch d;
	struct srv_config cfg;
	struct ledger *ledger;
	msgpack_sbuffer req, resp;
	msgpack_zone zone;
	char dir[64];
} B;

static void fail(const char *what, const char *err)
{
	fprintf(stderr, "dispatch_bench: %s: %s\n", what, err);
	exit(1);
}

/*
 * Sends the request packed in B.req (a params array) as method with peer,
 * and returns the result's map, unpacked into B.zone.
 */
static msgpack_object call(const char *method, struct access_peer *peer)
{
	struct srv_request r = {.conn_id = 1, .method = method, .method_len = strlen(method),
	                        .peer = peer};
	msgpack_object params, resp;
	msgpack_packer pk;
	size_t off = 0;

	msgpack_zone_clear(&B.zone);
	if (msgpack_unpack(B.req.data, B.req.size, &off, &B.zone, &params) !=
	    MSGPACK_UNPACK_SUCCESS)
		fail(method, "cannot unpack the request");
	r.params = &params;
	r.params_raw = B.req.data;
	r.params_raw_len = B.req.size;
	msgpack_sbuffer_clear(&B.resp);
	msgpack_packer_init(&pk, &B.resp, msgpack_sbuffer_write);
	dispatch_request(&B.d, &r, &pk);
	off = 0;
	/* the reply is [error, result] */
	if (msgpack_unpack(B.resp.data, B.resp.size, &off, &B.zone, &resp) ==
	        MSGPACK_UNPACK_EXTRA_BYTES &&
	    resp.type != MSGPACK_OBJECT_NIL)
		fail(method, "the daemon answered an error");
	if (msgpack_unpack(B.resp.data, B.resp.size, &off, &B.zone, &resp) !=
	    MSGPACK_UNPACK_SUCCESS)
		fail(method, "no result");
	return resp;
}

static msgpack_packer *begin(size_t n)
{
	static msgpack_packer pk;

	msgpack_sbuffer_clear(&B.req);
	msgpack_packer_init(&pk, &B.req, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 1);
	msgpack_pack_map(&pk, n);
	return &pk;
}

/* The result's field k, which must be there: the daemon's own argument readers read it. */
static uint64_t field_u64(msgpack_object m, const char *k)
{
	struct proto_args a;
	char err[256];
	uint64_t v = 0;

	if (proto_args_map(&a, &m, err, sizeof(err)) != 0 || proto_arg_u64(&a, k, 1, &v, NULL) != 0)
		fail(k, err);
	return v;
}

static const char *field_str(msgpack_object m, const char *k, char *buf, size_t len)
{
	struct proto_args a;
	struct state_str v;
	char err[256];

	if (proto_args_map(&a, &m, err, sizeof(err)) != 0 ||
	    proto_arg_str(&a, k, 1, len - 1, &v.p, &v.len, NULL) != 0)
		fail(k, err);
	memcpy(buf, v.p, v.len);
	buf[v.len] = '\0';
	return buf;
}

static void open_all(void)
{
	const struct ledger_config lc = {.dir = NULL, .strict = 0, .interval_ms = 1,
	                                 .batch_bytes = (size_t)1 << 20,
	                                 .segment_bytes = (size_t)64 << 20, .now = clock_now};
	const struct ledger_scan_result tail = {.last_seq = 0};
	struct ledger_config l = lc;
	struct state_config sc;
	char path[128], ldir[128], err[256];

	rcu_register_thread();
	clock_start(1);
	if (uv_loop_init(&B.loop) != 0)
		fail("uv_loop_init", "failed");
	snprintf(B.dir, sizeof(B.dir), "%s/sidecard-bench-XXXXXX",
	         access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	if (!mkdtemp(B.dir))
		fail("mkdtemp", B.dir);
	snprintf(path, sizeof(path), "%s/state.shm", B.dir);
	snprintf(ldir, sizeof(ldir), "%s/ledger", B.dir);
	memset(&sc, 0, sizeof(sc));
	sc.path = path;
	sc.caps = (struct shm_caps){.orgs = 4, .agents = 16, .rules = 16, .holds = 1024,
	                            .txns = 65536, .events = 1024, .tasks = 16, .prices = 16,
	                            .alerts = 1024, .texts = 16, .keys_per_agent = 16};
	sc.set.hold_ttl_us = INT64_C(300) * 1000000;
	sc.set.expiry_charges = 1;
	sc.set.max_holds_per_agent = 64;
	sc.set.max_holds_per_org = 512;
	if (state_open(&B.st, &sc, err, sizeof(err)) != 0)
		fail("state_open", err);
	memset(&B.d, 0, sizeof(B.d));
	pthread_mutex_init(&B.d.lock, NULL);
	B.d.st = B.st;
	srv_config_default(&B.cfg, path);
	B.d.srv_cfg = &B.cfg;
	msgpack_sbuffer_init(&B.d.scratch);
	l.dir = ldir;
	if (ledger_open(&B.ledger, &B.loop, &l, &tail, NULL, NULL, err, sizeof(err)) != 0)
		fail("ledger_open", err);
	B.d.ledger = B.ledger;
	dispatch_settings(&B.d, &sc.set);
	msgpack_sbuffer_init(&B.req);
	msgpack_sbuffer_init(&B.resp);
	msgpack_zone_init(&B.zone, 4096);
}

static void closed(void *arg)
{
	*(int *)arg = 1;
}

static void close_all(void)
{
	char cmd[160];
	int done = 0;

	ledger_close(B.ledger, closed, &done);
	while (!done)
		uv_run(&B.loop, UV_RUN_ONCE);
	ledger_free(B.ledger);
	uv_loop_close(&B.loop);
	dispatch_alerts_free(&B.d);
	dispatch_access_free(&B.d);
	msgpack_sbuffer_destroy(&B.d.scratch);
	state_close(B.st);
	msgpack_sbuffer_destroy(&B.req);
	msgpack_sbuffer_destroy(&B.resp);
	msgpack_zone_destroy(&B.zone);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", B.dir);
	if (system(cmd) != 0)
		fprintf(stderr, "dispatch_bench: cannot remove %s\n", B.dir);
}

/* trips check + report for the agent as peer; nanoseconds they took. */
static int64_t run(enum way w, struct access_peer *peer, uint64_t agent, long trips)
{
	int64_t t0, spent;

	uv_run(&B.loop, UV_RUN_NOWAIT);
	t0 = bench_now_ns();
	for (long i = 0; i < trips; i++) {
		msgpack_packer *pk = begin(w == AGENT_NO_ID ? 2 : 3);
		uint64_t txn;

		if (w != AGENT_NO_ID)
			proto_pack_key_u64(pk, "agent_id", agent);
		proto_pack_key_str(pk, "action", "openai.chat");
		proto_pack_key_u64(pk, "estimated_cost", 1);
		txn = field_u64(call("check", w == NO_PEER ? NULL : peer), "transaction_id");
		pk = begin(3);
		proto_pack_key_u64(pk, "transaction_id", txn);
		proto_pack_key_str(pk, "outcome", "success");
		proto_pack_key_u64(pk, "actual_cost", 1);
		call("report", w == NO_PEER ? NULL : peer);
	}
	spent = bench_now_ns() - t0;
	return spent;
}

static void usage(FILE *out)
{
	fprintf(out, "usage: dispatch_bench [--trips N] [--rounds N] [--quick]\n");
}

int main(int argc, char **argv)
{
	enum { CHUNK = 1000 };
	static int64_t ns[WAYS][64];
	double lo[WAYS], hi[WAYS];
	struct access_peer admin = {.uid = 0, .pid = 1, .role = ACCESS_ADMIN,
	                            .cred_role = ACCESS_ADMIN};
	struct access_peer agent = admin;
	long trips = 400000, chunks;
	int rounds = 5;
	uint64_t agent_id;
	char token[ACCESS_TOKEN_MAX + 1];
	msgpack_packer *pk;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--trips") == 0 && i + 1 < argc)
			trips = atol(argv[++i]);
		else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
			rounds = atoi(argv[++i]);
		else if (strcmp(argv[i], "--quick") == 0)
			trips = 2000, rounds = 1;
		else
			return bench_other_arg(argv[i], usage);
	}
	if (trips < CHUNK || rounds < 1 || rounds > 64 || trips / CHUNK < rounds) {
		usage(stderr);
		return 2;
	}
	open_all();
	proto_pack_key_str(begin(1), "name", "bench");
	call("orgs.create", &admin);
	pk = begin(3);
	proto_pack_key_str(pk, "org", "bench");
	proto_pack_key_str(pk, "name", "a");
	msgpack_pack_str_with_body(pk, "wallet", 6);
	msgpack_pack_map(pk, 1);
	proto_pack_key_u64(pk, "balance", UINT64_C(1000000000000));
	{
		msgpack_object a = call("agents.create", &admin);

		agent_id = field_u64(a, "id");
		field_str(a, "token", token, sizeof(token));
	}
	/* bound as hello {token} binds it */
	proto_pack_key_str(begin(1), "token", token);
	call("hello", &agent);
	if (agent.role != ACCESS_AGENT || agent.id != agent_id)
		fail("hello", "the token did not bind the connection");
	chunks = trips / CHUNK;
	for (long k = 0; k < chunks; k++)
		for (int w = 0; w < WAYS; w++)
			ns[w][k * rounds / chunks] +=
			        run((enum way)w, w == ADMIN || w == NO_PEER ? &admin : &agent, agent_id,
			            CHUNK);
	printf("%-20s %12s %10s %16s\n", "request from", "ns per trip", "vs no peer",
	       "parts: low..high");
	for (int w = 0; w < WAYS; w++) {
		int64_t sum = 0, base = 0;

		lo[w] = 1e9;
		hi[w] = 0;
		for (int r = 0; r < rounds; r++) {
			double q = (double)ns[w][r] / (double)ns[NO_PEER][r];

			sum += ns[w][r];
			base += ns[NO_PEER][r];
			lo[w] = q < lo[w] ? q : lo[w];
			hi[w] = q > hi[w] ? q : hi[w];
		}
		printf("%-20s %12.0f %9.3fx %9.3f..%.3f\n", way_names[w],
		       (double)sum / (double)(chunks * CHUNK), (double)sum / (double)base, lo[w], hi[w]);
	}
	printf("a trip is dispatch_request of a check and of its report, with a ledger record each; "
	       "%ld trips per way in turns of %d, in %d parts\n", chunks * CHUNK, CHUNK, rounds);
	bench_print_command("dispatch_bench", argc, argv, "in process");
	close_all();
	return 0;
}
