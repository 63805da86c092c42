/*
 * access_bench.c: what access control costs a check. --clients connections
 * (4), each for an agent of its own, run check + report round trips one at
 * a time, on one daemon, in three ways taken in turn for --rounds rounds
 * (3) of --seconds each (2):
 *
 *   admin       the connection is an admin's by its uid and names agent_id,
 *               as every client did before roles existed;
 *   agent       it presented the agent's token (hello {token}) and names
 *               its own agent_id: the role check, the token's check against
 *               the agent record, the scope check and the actor in the
 *               ledger record are what it adds;
 *   agent, no id  the same, leaving agent_id out for the daemon to fill in.
 *
 * It prints, per way, round trips per second (all clients), the check's
 * p50 and p99, the daemon's CPU time per round trip (user and system, from
 * /proc: the steadiest measure of what the daemon does on a machine whose
 * wake-ups make round trips noisy) and that CPU time as a ratio of the
 * admin way's (the target: no more than 2% more). The daemon
 * (tests/daemon.c: $SIDECARD_BIN, else sidecard/sidecard) runs on a new
 * directory in --durability async (--durability strict to include the
 * disk), so that the cost measured is the daemon's, not the fdatasync's.
 * --quick runs short rounds for make check's smoke; --admin-only runs the
 * admin way alone, so that a daemon from before roles can be measured the
 * same way (SIDECARD_BIN) as the baseline. A failed request fails the run
 * (exit 1).
 *
 * Threads: the main thread sets up and reports; each client thread owns its
 * raw socket for the round it runs.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <msgpack.h>

#include "bench_util.h"
#include "proto.h"
#include "sidecard.h"

#define MAX_CLIENTS 64
#define TOKEN_MAX 127

enum way { WAY_ADMIN, WAY_AGENT, WAY_AGENT_NO_ID, WAYS };

static const char *const way_names[WAYS] = {"admin", "agent", "agent, no agent_id"};

struct client {
	pthread_t thread;
	int index;
	enum way way;
	uint64_t agent;
	char token[TOKEN_MAX + 1];
	double seconds;
	uint64_t trips;
	struct hist h;
	struct bench_fail fail;
};

/* One raw connection: a socket, the next msgid and an unpacker of replies. */
struct conn {
	int fd;
	uint32_t msgid;
	msgpack_unpacker u;
	msgpack_unpacked res;
	msgpack_sbuffer sb;
	msgpack_packer pk;
};

static struct bench_daemon bd;

static void usage(FILE *out)
{
	fprintf(out, "usage: access_bench [--seconds S] [--rounds N] [--clients N] "
	             "[--durability strict|async] [--quick] [--admin-only]\n");
}

static int conn_open(struct conn *c)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", bd.d.socket);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		int e = errno;

		if (c->fd >= 0)
			close(c->fd);
		return -e;
	}
	c->msgid = 0;
	msgpack_unpacker_init(&c->u, 1 << 16);
	msgpack_unpacked_init(&c->res);
	msgpack_sbuffer_init(&c->sb);
	msgpack_packer_init(&c->pk, &c->sb, msgpack_sbuffer_write);
	return 0;
}

static void conn_close(struct conn *c)
{
	close(c->fd);
	msgpack_unpacked_destroy(&c->res);
	msgpack_unpacker_destroy(&c->u);
	msgpack_sbuffer_destroy(&c->sb);
}

/* Starts a request: [0, msgid, method, [map of n]]; the caller packs the n pairs. */
static msgpack_packer *begin(struct conn *c, const char *method, size_t n)
{
	msgpack_sbuffer_clear(&c->sb);
	msgpack_pack_array(&c->pk, 4);
	msgpack_pack_int(&c->pk, 0);
	msgpack_pack_uint32(&c->pk, ++c->msgid);
	msgpack_pack_str_with_body(&c->pk, method, strlen(method));
	msgpack_pack_array(&c->pk, 1);
	msgpack_pack_map(&c->pk, n);
	return &c->pk;
}

/*
 * The field k of a result or error map, read as the daemon reads its
 * arguments; 0 or NULL when it is not there or not of the kind asked.
 */
static uint64_t get_u64(const msgpack_object *m, const char *k)
{
	struct proto_args a;
	uint64_t v = 0;

	if (!m || proto_args_map(&a, m, NULL, 0) != 0 || proto_arg_u64(&a, k, 1, &v, NULL) != 0)
		return 0;
	return v;
}

static const char *get_str(const msgpack_object *m, const char *k, size_t *len)
{
	struct proto_args a;
	const char *p = NULL;

	if (proto_args_map(&a, m, NULL, 0) != 0 ||
	    proto_arg_str(&a, k, 1, SIZE_MAX, &p, len, NULL) != 0)
		return NULL;
	return p;
}

/*
 * Sends the request begun and returns its result (a map), or NULL with
 * *rc and err set for an error reply or a failed socket.
 */
static const msgpack_object *call(struct conn *c, int *rc, char *err, size_t len)
{
	const char *p = c->sb.data;
	size_t left = c->sb.size;

	while (left) {
		ssize_t n = write(c->fd, p, left);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			*rc = n < 0 ? -errno : -EPIPE;
			snprintf(err, len, "write: %s", strerror(-*rc));
			return NULL;
		}
		p += n;
		left -= (size_t)n;
	}
	for (;;) {
		msgpack_unpack_return r = msgpack_unpacker_next(&c->u, &c->res);
		ssize_t n;

		if (r == MSGPACK_UNPACK_SUCCESS) {
			const msgpack_object *o = &c->res.data;

			if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 4) {
				*rc = SC_EPROTO;
				snprintf(err, len, "not a response");
				return NULL;
			}
			if (o->via.array.ptr[2].type != MSGPACK_OBJECT_NIL) {
				size_t mlen = 5;
				const char *m = get_str(&o->via.array.ptr[2], "message", &mlen);

				*rc = SC_EINTERNAL;
				snprintf(err, len, "%.*s", (int)mlen, m ? m : "error");
				return NULL;
			}
			return &o->via.array.ptr[3];
		}
		if (!msgpack_unpacker_reserve_buffer(&c->u, 1 << 16)) {
			*rc = -ENOMEM;
			snprintf(err, len, "out of memory");
			return NULL;
		}
		n = read(c->fd, msgpack_unpacker_buffer(&c->u), msgpack_unpacker_buffer_capacity(&c->u));
		if (n <= 0) {
			*rc = n < 0 ? -errno : SC_ECLOSED;
			snprintf(err, len, "read: %s", n < 0 ? strerror(errno) : "EOF");
			return NULL;
		}
		msgpack_unpacker_buffer_consumed(&c->u, (size_t)n);
	}
}

static void *client_main(void *arg)
{
	struct client *cl = arg;
	struct conn c;
	char err[256];
	int rc;
	int64_t end;

	if ((rc = conn_open(&c)) != 0) {
		bench_fail(&cl->fail, cl->index, NULL, rc, "connect");
		return NULL;
	}
	if (cl->way != WAY_ADMIN) {
		proto_pack_key_str(begin(&c, "hello", 1), "token", cl->token);
		if (!call(&c, &rc, err, sizeof(err)))
			goto failed;
	}
	end = bench_now_ns() + (int64_t)(cl->seconds * 1e9);
	while (bench_now_ns() < end) {
		msgpack_packer *pk = begin(&c, "check", cl->way == WAY_AGENT_NO_ID ? 2 : 3);
		const msgpack_object *res;
		int64_t t0 = bench_now_ns();
		uint64_t txn;

		if (cl->way != WAY_AGENT_NO_ID)
			proto_pack_key_u64(pk, "agent_id", cl->agent);
		proto_pack_key_str(pk, "action", "openai.chat");
		proto_pack_key_u64(pk, "estimated_cost", 1);
		if (!(res = call(&c, &rc, err, sizeof(err))))
			goto failed;
		hist_add(&cl->h, bench_now_ns() - t0);
		if (!(txn = get_u64(res, "transaction_id"))) {
			rc = SC_EINTERNAL;
			snprintf(err, sizeof(err), "check: no transaction_id");
			goto failed;
		}
		pk = begin(&c, "report", 3);
		proto_pack_key_u64(pk, "transaction_id", txn);
		proto_pack_key_str(pk, "outcome", "success");
		proto_pack_key_u64(pk, "actual_cost", 1);
		if (!call(&c, &rc, err, sizeof(err)))
			goto failed;
		cl->trips++;
	}
	conn_close(&c);
	return NULL;
failed:
	bench_fail(&cl->fail, cl->index, NULL, rc, err);
	conn_close(&c);
	return NULL;
}

/* One org and an agent per client with funds for every round; their ids and tokens. */
static int populate(struct client *cl, int n, int need_tokens)
{
	struct conn c;
	char err[256], name[32];
	int rc;

	if ((rc = conn_open(&c)) != 0) {
		fprintf(stderr, "access_bench: connect: %s\n", strerror(-rc));
		return -1;
	}
	proto_pack_key_str(begin(&c, "orgs.create", 1), "name", "bench");
	if (!call(&c, &rc, err, sizeof(err)))
		goto failed;
	for (int i = 0; i < n; i++) {
		msgpack_packer *pk = begin(&c, "agents.create", 3);
		const msgpack_object *res;
		const char *tok;
		size_t tok_len = 0;

		snprintf(name, sizeof(name), "agent-%d", i);
		proto_pack_key_str(pk, "org", "bench");
		proto_pack_key_str(pk, "name", name);
		proto_pack_cstr(pk, "wallet");
		msgpack_pack_map(pk, 1);
		proto_pack_key_u64(pk, "balance", UINT64_C(1000000000000));
		if (!(res = call(&c, &rc, err, sizeof(err))))
			goto failed;
		cl[i].agent = get_u64(res, "id");
		if (!need_tokens)
			continue;
		if (!(tok = get_str(res, "token", &tok_len)) || tok_len > TOKEN_MAX) {
			snprintf(err, sizeof(err), "agents.create: no token in the result");
			goto failed;
		}
		memcpy(cl[i].token, tok, tok_len);
		cl[i].token[tok_len] = '\0';
	}
	conn_close(&c);
	return 0;
failed:
	fprintf(stderr, "access_bench: %s\n", err);
	conn_close(&c);
	return -1;
}

int main(int argc, char **argv)
{
	static struct client cl[MAX_CLIENTS];
	static struct hist h[WAYS];
	const char *extra[] = {"--durability", "async", "--log-level", "warn", NULL};
	uint64_t trips[WAYS] = {0};
	double seconds = 2, total[WAYS] = {0}, cpu[WAYS] = {0};
	int rounds = 3, clients = 4, ways = WAYS, rc = 0;
	char err[4400];

	signal(SIGPIPE, SIG_IGN);
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
			seconds = atof(argv[++i]);
		else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
			rounds = atoi(argv[++i]);
		else if (strcmp(argv[i], "--clients") == 0 && i + 1 < argc)
			clients = atoi(argv[++i]);
		else if (strcmp(argv[i], "--durability") == 0 && i + 1 < argc)
			extra[1] = argv[++i];
		else if (strcmp(argv[i], "--quick") == 0)
			seconds = 0.2, rounds = 1;
		else if (strcmp(argv[i], "--admin-only") == 0)
			ways = 1;
		else
			return bench_other_arg(argv[i], usage);
	}
	if (seconds <= 0 || rounds < 1 || clients < 1 || clients > MAX_CLIENTS) {
		usage(stderr);
		return 2;
	}
	if (bench_daemon_start(&bd, extra, err, sizeof(err)) != 0) {
		fprintf(stderr, "access_bench: %s\n", err);
		return 1;
	}
	if (populate(cl, clients, ways > 1) != 0) {
		rc = 1;
		goto out;
	}
	/* the ways take turns, so that a drift of the machine weighs on each alike */
	for (int r = 0; r < rounds && rc == 0; r++) {
		for (int w = 0; w < ways && rc == 0; w++) {
			struct proc_sample before, after;

			if (proc_sample(bd.d.pid, &before) != 0) {
				fprintf(stderr, "access_bench: cannot read the daemon's /proc\n");
				rc = 1;
				break;
			}
			for (int i = 0; i < clients; i++) {
				cl[i].index = i;
				cl[i].way = (enum way)w;
				cl[i].seconds = seconds;
				cl[i].trips = 0;
				memset(&cl[i].h, 0, sizeof(cl[i].h));
				pthread_create(&cl[i].thread, NULL, client_main, &cl[i]);
			}
			for (int i = 0; i < clients; i++) {
				pthread_join(cl[i].thread, NULL);
				if (cl[i].fail.rc != 0) {
					fprintf(stderr, "access_bench: %s: %s\n", way_names[w],
					        cl[i].fail.error);
					rc = 1;
				}
				trips[w] += cl[i].trips;
				hist_merge(&h[w], &cl[i].h);
			}
			total[w] += seconds;
			if (proc_sample(bd.d.pid, &after) == 0)
				cpu[w] += after.cpu_s - before.cpu_s;
		}
	}
	if (rc != 0)
		goto out;
	printf("%-20s %12s %9s %9s %14s %10s\n", "connection", "trips/s", "p50 us", "p99 us",
	       "daemon us/trip", "vs admin");
	for (int w = 0; w < ways; w++) {
		double rate = (double)trips[w] / total[w];
		double per = trips[w] ? cpu[w] * 1e6 / (double)trips[w] : 0;
		double base = trips[0] ? cpu[0] * 1e6 / (double)trips[0] : 0;

		printf("%-20s %12.0f %9.1f %9.1f %14.2f %9.3fx\n", way_names[w], rate,
		       hist_quantile_us(&h[w], 0.50), hist_quantile_us(&h[w], 0.99), per,
		       base > 0 ? per / base : 0);
	}
	printf("a trip is a check and its report, one request at a time per connection; %d "
	       "clients, %d rounds of %.1f s per way, --durability %s\n",
	       clients, rounds, seconds, extra[1]);
	bench_print_command("access_bench", argc, argv, test_daemon_bin());
out:
	if (bench_daemon_stop(&bd, rc != 0, err, sizeof(err)) != 0) {
		fprintf(stderr, "access_bench: %s\n", err);
		rc = 1;
	}
	return rc;
}
