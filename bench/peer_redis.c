/*
 * peer_redis.c: the peer teams build today, Redis with a Lua budget script,
 * for bench/gate_bench. Debian's redis-server is started on a temporary
 * directory and Unix socket (port 0: no TCP), either without persistence
 * (--save '' --appendonly no: the peer of sidecard's async mode) or with
 * every write fsync'ed (--appendonly yes --appendfsync always: the peer of
 * strict), and called through hiredis, as teams call Redis from C.
 *
 * The gate is two scripts loaded with SCRIPT LOAD and called with EVALSHA:
 *   check(agent, estimate): the agent's hash holds balance, held funds, a
 *     per-transaction limit, a daily limit and its one rule's limits; the
 *     day's spend (settled plus held) is a key per day, the rule's the
 *     same, and its hourly rate a counter per hour. It refuses past any
 *     limit like sidecard's steps 6-7, else holds the estimate (held +=
 *     estimate, the day's keys += estimate, the hour's counter + 1) and
 *     records the hold under a new transaction id;
 *   report(id, actual): settles the hold: balance -= actual, held -=
 *     estimate, the day's keys corrected by actual - estimate.
 * Lua numbers are doubles: amounts are exact only below 2^53 micros, a
 * weakness of the peer that the benchmark's amounts stay far from.
 *
 * The admin operation alternates a top-up (HINCRBY balance) and a rule
 * update (HSET of the rule's daily limit). A wallet read (peek) is one
 * HMGET of the hash's wallet fields, a round trip each.
 *
 * Threads: start and stop on the main thread; each client thread has its
 * own redisContext.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "gate_bench.h"
#include "sidecard.h"
#include "tmpdir.h"

#define BALANCE "1000000000000000"
#define BIG_LIMIT "100000000000000"

static const char check_lua[] =
	"local a = KEYS[1]\n"
	"local est = tonumber(ARGV[1])\n"
	"local w = redis.call('HMGET', a, 'balance', 'held', 'max_per_txn', 'daily_limit',\n"
	"  'rule_max', 'rule_daily', 'rule_hourly')\n"
	"if not w[1] then return {0, 'agent_not_found'} end\n"
	"local t = tonumber(redis.call('TIME')[1])\n"
	"local day, hour = math.floor(t / 86400), math.floor(t / 3600)\n"
	"local balance, held = tonumber(w[1]), tonumber(w[2])\n"
	"local max_txn, daily = tonumber(w[3]), tonumber(w[4])\n"
	"local rmax, rdaily, rhourly = tonumber(w[5]), tonumber(w[6]), tonumber(w[7])\n"
	"if max_txn > 0 and est > max_txn then return {0, 'wallet:max_per_txn'} end\n"
	"local dkey = a .. ':day:' .. day\n"
	"local used = tonumber(redis.call('GET', dkey) or '0')\n"
	"if daily > 0 and used + est > daily then return {0, 'wallet:daily_spend_limit'} end\n"
	"if balance - held < est then return {0, 'wallet_empty'} end\n"
	"if rmax > 0 and est > rmax then return {0, 'rule:max_cost_per_txn'} end\n"
	"local rkey = a .. ':rday:' .. day\n"
	"local rused = tonumber(redis.call('GET', rkey) or '0')\n"
	"if rdaily > 0 and rused + est > rdaily then return {0, 'rule:daily_spend_limit'} end\n"
	"local hkey = a .. ':rhour:' .. hour\n"
	"local count = tonumber(redis.call('GET', hkey) or '0')\n"
	"if rhourly > 0 and count >= rhourly then return {0, 'rule:hourly_rate_limit'} end\n"
	"redis.call('HINCRBY', a, 'held', est)\n"
	"redis.call('INCRBY', dkey, est)\n"
	"redis.call('EXPIRE', dkey, 172800)\n"
	"redis.call('INCRBY', rkey, est)\n"
	"redis.call('EXPIRE', rkey, 172800)\n"
	"redis.call('INCR', hkey)\n"
	"redis.call('EXPIRE', hkey, 7200)\n"
	"local id = redis.call('INCR', 'txn:seq')\n"
	"redis.call('HSET', 'hold:' .. id, 'agent', a, 'amount', est, 'day', day)\n"
	"return {1, id, balance - held - est}\n";

static const char report_lua[] =
	"local h = 'hold:' .. ARGV[1]\n"
	"local v = redis.call('HMGET', h, 'agent', 'amount', 'day')\n"
	"if not v[1] then return {0, 'not_found'} end\n"
	"local a, amt, day = v[1], tonumber(v[2]), v[3]\n"
	"local actual = tonumber(ARGV[2])\n"
	"redis.call('DEL', h)\n"
	"redis.call('HINCRBY', a, 'held', -amt)\n"
	"local balance = redis.call('HINCRBY', a, 'balance', -actual)\n"
	"if actual ~= amt then\n"
	"  redis.call('INCRBY', a .. ':day:' .. day, actual - amt)\n"
	"  redis.call('INCRBY', a .. ':rday:' .. day, actual - amt)\n"
	"end\n"
	"return {1, balance}\n";

struct redis {
	char dir[64], path[96], log[96];
	char check_sha[48], report_sha[48];
};

struct redis_conn {
	redisContext *c;
	struct redis *r;
	const struct setup *st;
	unsigned admin_turn;
};

const char *redis_missing(void)
{
	static char why[160];
	const char *path = getenv("PATH");
	char dir[512], file[600];
	const char *p = path, *colon;
	size_t n;

	while (p != NULL && *p != '\0') {
		colon = strchr(p, ':');
		n = colon ? (size_t)(colon - p) : strlen(p);
		if (n > 0 && n < sizeof(dir)) {
			memcpy(dir, p, n);
			dir[n] = '\0';
			snprintf(file, sizeof(file), "%s/redis-server", dir);
			if (access(file, X_OK) == 0)
				return NULL;
		}
		p = colon ? colon + 1 : NULL;
	}
	snprintf(why, sizeof(why),
	         "redis-server is not on PATH (Debian package redis-server, installed by "
	         "packaging/install-deps.sh)");
	return why;
}

/* An integer array reply whose first element is 1: the gate allowed it. */
static int allowed(redisReply *rep, char *err, size_t len, const char *what)
{
	if (rep == NULL) {
		snprintf(err, len, "%s: connection lost", what);
		return 0;
	}
	if (rep->type == REDIS_REPLY_ERROR) {
		snprintf(err, len, "%s: %s", what, rep->str);
		return 0;
	}
	if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 2 ||
	    rep->element[0]->type != REDIS_REPLY_INTEGER) {
		snprintf(err, len, "%s: unexpected reply", what);
		return 0;
	}
	if (rep->element[0]->integer != 1) {
		snprintf(err, len, "%s blocked: %s", what,
		         rep->element[1]->type == REDIS_REPLY_STRING ? rep->element[1]->str : "?");
		return 0;
	}
	return 1;
}

static int rd_connect(struct sys *s, void **conn, char *err, size_t len)
{
	struct redis_conn *k = calloc(1, sizeof(*k));

	if (k == NULL)
		return snprintf(err, len, "out of memory"), -1;
	k->r = s->priv;
	k->st = &s->setup;
	k->c = redisConnectUnix(k->r->path);
	if (k->c == NULL || k->c->err) {
		snprintf(err, len, "connect to redis: %s", k->c ? k->c->errstr : "out of memory");
		if (k->c)
			redisFree(k->c);
		free(k);
		return -1;
	}
	*conn = k;
	return 0;
}

static void rd_disconnect(void *conn)
{
	struct redis_conn *k = conn;

	redisFree(k->c);
	free(k);
}

/* The argv of EVALSHA check for a random agent; key and est are the caller's buffers. */
static void check_argv(struct redis_conn *k, uint64_t *rng, const char *argv[5], char key[32],
                       char est[24])
{
	snprintf(key, 32, "a:%" PRIu64, bench_rand(rng) % k->st->agents);
	snprintf(est, 24, "%d", BENCH_ESTIMATE);
	argv[0] = "EVALSHA";
	argv[1] = k->r->check_sha;
	argv[2] = "1";
	argv[3] = key;
	argv[4] = est;
}

static long rd_pipelined(struct redis_conn *k, uint64_t *rng, char *err, size_t len)
{
	const char *argv[5];
	char key[32], est[24];
	size_t sent = 0, got = 0, w = SC_CHECK_BATCH_WINDOW;
	redisReply *rep;
	int ok;

	while (got < BENCH_PIPE_BATCH) {
		while (sent < BENCH_PIPE_BATCH && sent - got < w) {
			check_argv(k, rng, argv, key, est);
			if (redisAppendCommandArgv(k->c, 5, argv, NULL) != REDIS_OK) {
				snprintf(err, len, "redis: %s", k->c->errstr);
				return -1;
			}
			sent++;
		}
		if (redisGetReply(k->c, (void **)&rep) != REDIS_OK)
			rep = NULL;
		ok = allowed(rep, err, len, "check");
		if (rep)
			freeReplyObject(rep);
		if (!ok)
			return -1;
		got++;
	}
	return BENCH_PIPE_BATCH;
}

/* One wallet read: the fields of the agent's hash that the check script reads for its wallet. */
static long rd_peek(struct redis_conn *k, uint64_t *rng, char *err, size_t len)
{
	char key[32];
	redisReply *rep;
	size_t i;
	int ok;

	snprintf(key, sizeof(key), "a:%" PRIu64, bench_rand(rng) % k->st->agents);
	rep = redisCommand(k->c, "HMGET %s balance held max_per_txn daily_limit", key);
	ok = rep != NULL && rep->type == REDIS_REPLY_ARRAY && rep->elements == 4;
	for (i = 0; ok && i < rep->elements; i++)
		ok = rep->element[i]->type == REDIS_REPLY_STRING;
	if (!ok)
		snprintf(err, len, "HMGET %s: %s", key,
		         rep == NULL ? k->c->errstr
		         : rep->type == REDIS_REPLY_ERROR ? rep->str
		                                         : "a field is missing");
	if (rep)
		freeReplyObject(rep);
	return ok ? 1 : -1;
}

static long rd_op(void *conn, enum op_kind kind, uint64_t *rng, char *err, size_t len)
{
	struct redis_conn *k = conn;
	const char *argv[5];
	char key[32], est[24], id[32];
	redisReply *rep;
	int ok;

	switch (kind) {
	case OP_CHECK:
	case OP_PAIR:
		check_argv(k, rng, argv, key, est);
		rep = redisCommandArgv(k->c, 5, argv, NULL);
		ok = allowed(rep, err, len, "check");
		if (ok && kind == OP_PAIR) {
			if (rep->element[1]->type != REDIS_REPLY_INTEGER) {
				snprintf(err, len, "check: no transaction id");
				ok = 0;
			}
			snprintf(id, sizeof(id), "%lld", rep->element[1]->integer);
		}
		if (rep)
			freeReplyObject(rep);
		if (!ok)
			return -1;
		if (kind == OP_CHECK)
			return 1;
		argv[1] = k->r->report_sha;
		argv[2] = "0";
		argv[3] = id;
		rep = redisCommandArgv(k->c, 5, argv, NULL);
		ok = allowed(rep, err, len, "report");
		if (rep)
			freeReplyObject(rep);
		return ok ? 1 : -1;
	case OP_PIPELINED:
		return rd_pipelined(k, rng, err, len);
	case OP_PEEK:
		return rd_peek(k, rng, err, len);
	case OP_ADMIN:
		snprintf(key, sizeof(key), "a:%" PRIu64, bench_rand(rng) % k->st->agents);
		if (k->admin_turn++ % 2 == 0)
			rep = redisCommand(k->c, "HINCRBY %s balance %d", key, 10 * BENCH_ESTIMATE);
		else
			rep = redisCommand(k->c, "HSET %s rule_daily %s", key,
			                   k->admin_turn & 2 ? BIG_LIMIT : "99999999999998");
		ok = rep != NULL && rep->type == REDIS_REPLY_INTEGER;
		if (!ok)
			snprintf(err, len, "admin: %s", rep && rep->str ? rep->str : k->c->errstr);
		if (rep)
			freeReplyObject(rep);
		return ok ? 1 : -1;
	}
	snprintf(err, len, "unknown operation");
	return -1;
}

static int rd_stop(struct sys *s)
{
	struct redis *r = s->priv;
	int rc = bench_reap(s->pid);

	if (rc != 0)
		fprintf(stderr, "gate_bench: redis-server stopped with status %d; its log is %s\n", rc,
		        r->log);
	else
		test_rm_tree(r->dir);
	free(r);
	s->priv = NULL;
	return rc == 0 ? 0 : -1;
}

/* SCRIPT LOAD into sha; 0 or -1. */
static int load(redisContext *c, const char *script, char sha[48], char *err, size_t len)
{
	redisReply *rep = redisCommand(c, "SCRIPT LOAD %s", script);
	int ok = rep != NULL && rep->type == REDIS_REPLY_STRING && rep->len < 48;

	if (ok)
		memcpy(sha, rep->str, rep->len + 1);
	else
		snprintf(err, len, "SCRIPT LOAD: %s", rep && rep->str ? rep->str : c->errstr);
	if (rep)
		freeReplyObject(rep);
	return ok ? 0 : -1;
}

/* The agents' hashes, pipelined in blocks. 0 or -1. */
static int setup_agents(redisContext *c, const struct setup *st, char *err, size_t len)
{
	redisReply *rep;
	size_t i, k, n;
	int ok = 1;

	for (i = 0; i < st->agents && ok; i += n) {
		n = st->agents - i < 1000 ? st->agents - i : 1000;
		for (k = 0; k < n; k++)
			redisAppendCommand(c,
			                   "HSET a:%llu balance %s held 0 max_per_txn %d daily_limit %s "
			                   "rule_max %d rule_daily %s rule_hourly %s",
			                   (unsigned long long)(i + k), BALANCE, 1000 * BENCH_ESTIMATE, BIG_LIMIT,
			                   1000 * BENCH_ESTIMATE, BIG_LIMIT, "1000000000000");
		for (k = 0; k < n; k++) {
			if (redisGetReply(c, (void **)&rep) != REDIS_OK) {
				snprintf(err, len, "redis setup: %s", c->errstr);
				return -1;
			}
			if (rep->type == REDIS_REPLY_ERROR) {
				snprintf(err, len, "redis setup: %s", rep->str);
				ok = 0;
			}
			freeReplyObject(rep);
		}
	}
	return ok ? 0 : -1;
}

int redis_start(struct sys *s, int fsync_always, const struct setup *st, char *err, size_t len)
{
	struct redis *r = calloc(1, sizeof(*r));
	const char *argv[24];
	redisContext *c = NULL;
	const char *why;
	size_t n = 0;

	if ((why = redis_missing()) != NULL) {
		free(r);
		return snprintf(err, len, "%s", why), -1;
	}
	if (r == NULL || test_tmpdir(r->dir, sizeof(r->dir)) != 0) {
		free(r);
		return snprintf(err, len, "no temporary directory"), -1;
	}
	snprintf(r->path, sizeof(r->path), "%s/redis.sock", r->dir);
	snprintf(r->log, sizeof(r->log), "%s/redis.log", r->dir);
	argv[n++] = "redis-server";
	argv[n++] = "--port";
	argv[n++] = "0";
	argv[n++] = "--unixsocket";
	argv[n++] = r->path;
	argv[n++] = "--unixsocketperm";
	argv[n++] = "700";
	argv[n++] = "--dir";
	argv[n++] = r->dir;
	argv[n++] = "--save";
	argv[n++] = "";
	argv[n++] = "--appendonly";
	argv[n++] = fsync_always ? "yes" : "no";
	argv[n++] = "--appendfsync";
	argv[n++] = "always";
	argv[n++] = "--daemonize";
	argv[n++] = "no";
	argv[n] = NULL;
	*s = (struct sys){ .name = "redis", .durability = fsync_always ? "aof-always" : "none",
		           .setup = *st, .priv = r, .connect = rd_connect, .op = rd_op,
		           .disconnect = rd_disconnect, .stop = rd_stop };
	s->pid = bench_spawn(argv, r->log);
	if (s->pid < 0 || !bench_wait_socket(r->path, s->pid)) {
		snprintf(err, len, "redis-server did not start; its output is in %s", r->log);
		if (s->pid > 0)
			bench_reap(s->pid);
		free(r);
		return -1;
	}
	c = redisConnectUnix(r->path);
	if (c == NULL || c->err) {
		snprintf(err, len, "connect to redis: %s", c ? c->errstr : "out of memory");
	} else if (load(c, check_lua, r->check_sha, err, len) == 0 &&
	           load(c, report_lua, r->report_sha, err, len) == 0 &&
	           setup_agents(c, st, err, len) == 0) {
		redisFree(c);
		return 0;
	}
	if (c)
		redisFree(c);
	rd_stop(s);
	return -1;
}
