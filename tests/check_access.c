/*
 * check_access.c: the roles of the access control (protocol/PROTOCOL.md,
 * "Roles"), through the real daemon (tests/daemon.h) and the raw wire
 * (tests/rpc.h), never through libsidecard: what is tested is what any
 * client, hostile or not, can send.
 *
 * What is proven: every method of the dispatch table names the roles that
 * may call it, and the daemon refuses it to every other role with
 * permission_denied naming the method and a role that would do (the table
 * is walked, so a new method is covered the day it is added); an agent
 * cannot check, report, read or subscribe for another agent, and its
 * listings are its own; a rotated agent token and a revoked reader token
 * stop working at once, also on the connections that presented them; the
 * agent socket serves nothing before hello with an agent's token and
 * closes the connection that tries; a peer of another uid on the admin
 * socket is nobody unless --admin-users or --reader-group says otherwise,
 * is held to --max-connections-per-uid and to --auth-timeout; an agent to
 * --max-connections-per-agent; the ledger says who made each change.
 *
 * The cases with another uid run as a real second user, sidecard-test
 * (made with useradd when missing), and only when the program runs as
 * root; otherwise they print why they are skipped and pass.
 *
 * Threads: the Check runner forks each test; the test's main thread is the
 * only one. A connection as the second user is made by a forked child that
 * drops to that user, connects and hands the descriptor back: the kernel
 * keeps the credentials of the process that connected (SO_PEERCRED).
 */
#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <libgen.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "access.h"
#include "daemon.h"
#include "dispatch.h"
#include "rpc.h"
#include "testutil.h"

#define TEST_TIMEOUT_S 30
#define TEST_USER "sidecard-test"
#define BALANCE 10000000     /* $10 */
#define LOW_BALANCE 5000000  /* $5: a check of $6 raises low_balance */

static struct test_daemon d;
static char dir[128], agent_socket[160];

/* What the tests set up: one org, two agents of it, a reader token. */
struct agent {
	uint64_t id;
	char token[ACCESS_TOKEN_MAX + 1];
};

static struct agent a, b;
static uint64_t org_id;
static char reader_token[ACCESS_TOKEN_MAX + 1];
static uint64_t reader_token_id;

/* ----- the daemon ----- */

/*
 * Starts the daemon with an agent socket and the arguments in more; with
 * shared, in a directory every user can traverse and with an admin socket
 * every user may connect to, for the cases of another uid.
 */
static void start_daemon(int shared, const char *const *more)
{
	static const char *args[20];
	size_t n = 0;

	ck_assert_int_eq(test_tmpdir(dir, sizeof(dir)), 0);
	snprintf(agent_socket, sizeof(agent_socket), "%s/agent.sock", dir);
	args[n++] = "--agent-socket";
	args[n++] = agent_socket;
	if (shared) {
		char parent[sizeof(dir)];

		snprintf(parent, sizeof(parent), "%s", dir);
		ck_assert_int_eq(chmod(dirname(parent), 0711), 0);
		ck_assert_int_eq(chmod(dir, 0711), 0);
		args[n++] = "--socket-mode";
		args[n++] = "0666";
	}
	for (; more && *more; more++) {
		ck_assert(n + 1 < sizeof(args) / sizeof(args[0]));
		args[n++] = *more;
	}
	args[n] = NULL;
	ck_assert_int_eq(test_daemon_start_in(&d, dir, NULL, args), 0);
}

static void stop(void)
{
	ck_assert_int_eq(test_daemon_stop(&d), 0);
}

/* ----- responses ----- */

static void expect_ok(struct rpc_res r, const char *what)
{
	char name[64], msg[512];

	ck_assert_msg(r.error == NULL, "%s: %s: %s", what, rpc_err_name(&r, name, sizeof(name)),
	              rpc_err_message(&r, msg, sizeof(msg)));
}

/* Asserts an error named name whose message contains each of the words (NULL-terminated). */
static void expect_error(struct rpc_res r, const char *name, const char *what, ...)
{
	char got[64], msg[512];
	const char *word;
	va_list ap;

	ck_assert_msg(r.error != NULL, "%s: succeeded; %s expected", what, name);
	rpc_err_name(&r, got, sizeof(got));
	rpc_err_message(&r, msg, sizeof(msg));
	ck_assert_msg(strcmp(got, name) == 0, "%s: %s (%s); %s expected", what, got, msg, name);
	va_start(ap, what);
	while ((word = va_arg(ap, const char *)) != NULL)
		ck_assert_msg(strstr(msg, word) != NULL, "%s: the message '%s' does not say '%s'", what,
		              msg, word);
	va_end(ap);
}

#define expect_denied(r, what, ...)                                                       \
	expect_error((r), "permission_denied", (what), ##__VA_ARGS__, (const char *)NULL)

static int is_denied(const struct rpc_res *r)
{
	char name[64];

	return r->error && strcmp(rpc_err_name(r, name, sizeof(name)), "permission_denied") == 0;
}

/* The role hello reports on c. */
static const char *hello_role(struct rpc *c, char *buf, size_t len)
{
	struct rpc_res r = rpc_call(c, "hello");

	expect_ok(r, "hello");
	return rpc_get_str(r.result, "role", buf, len);
}

/* A connection to path that presented token and became that agent. */
static void open_agent(struct rpc *c, const char *path, const struct agent *ag)
{
	struct rpc_res r;
	char role[16];

	rpc_open(c, path);
	r = rpc_call(c, "hello", RPC_STR("token", ag->token));
	expect_ok(r, "hello with an agent token");
	ck_assert_str_eq(rpc_get_str(r.result, "role", role, sizeof(role)), "agent");
	ck_assert_uint_eq(rpc_get_u64(r.result, "agent_id"), ag->id);
}

static void open_reader(struct rpc *c)
{
	struct rpc_res r;
	char role[16];

	rpc_open(c, d.socket);
	r = rpc_call(c, "hello", RPC_STR("token", reader_token));
	expect_ok(r, "hello with a reader token");
	ck_assert_str_eq(rpc_get_str(r.result, "role", role, sizeof(role)), "reader");
	ck_assert_uint_eq(rpc_get_u64(r.result, "token_id"), reader_token_id);
}

/* ----- tenants ----- */

static void pack_wallet(msgpack_packer *pk, const void *arg)
{
	(void)arg;
	msgpack_pack_map(pk, 2);
	msgpack_pack_str_with_body(pk, "balance", 7);
	msgpack_pack_int64(pk, BALANCE);
	msgpack_pack_str_with_body(pk, "low_balance", 11);
	msgpack_pack_int64(pk, LOW_BALANCE);
}

static void create_agent(struct rpc *admin, const char *name, struct agent *ag)
{
	struct rpc_res r = rpc_call(admin, "agents.create", RPC_U64("org", org_id),
	                            RPC_STR("name", name), RPC_PACK("wallet", pack_wallet, NULL));

	expect_ok(r, "agents.create");
	ag->id = rpc_get_u64(r.result, "id");
	rpc_get_str(r.result, "token", ag->token, sizeof(ag->token));
	ck_assert_msg(strlen(ag->token) >= 22, "agent token '%s' is too short for 128 bits",
	              ag->token);
}

/* Org o1, agents a and b in it, and a reader token, made by the admin connection. */
static void make_tenants(struct rpc *admin)
{
	struct rpc_res r = rpc_call(admin, "orgs.create", RPC_STR("name", "o1"));

	expect_ok(r, "orgs.create");
	org_id = rpc_get_u64(r.result, "id");
	create_agent(admin, "a", &a);
	create_agent(admin, "b", &b);
	r = rpc_call(admin, "tokens.create", RPC_STR("role", "reader"), RPC_STR("name", "dash"));
	expect_ok(r, "tokens.create");
	reader_token_id = rpc_get_u64(r.result, "token_id");
	rpc_get_str(r.result, "token", reader_token, sizeof(reader_token));
}

/* The daemon with its agent socket and arguments, and the tenants made by admin (left open). */
static void start_with_tenants(struct rpc *admin, int shared, const char *const *more)
{
	start_daemon(shared, more);
	rpc_open(admin, d.socket);
	make_tenants(admin);
}

/* A check of cost for ag on c, allowed; its transaction id. */
static uint64_t check_allowed(struct rpc *c, const struct agent *ag, int64_t cost)
{
	struct rpc_res r = rpc_call(c, "check", RPC_U64("agent_id", ag->id),
	                            RPC_STR("action", "llm.chat"), RPC_I64("estimated_cost", cost));
	char status[16];

	expect_ok(r, "check");
	ck_assert_str_eq(rpc_get_str(r.result, "status", status, sizeof(status)), "allowed");
	return rpc_get_u64(r.result, "transaction_id");
}

/* ----- every method of the table, for every role ----- */

static const struct {
	unsigned role;
	const char *name;
} role_names[] = {
	{ACCESS_AGENT, "agent"},
	{ACCESS_READER, "reader"},
	{ACCESS_ADMIN, "admin"},
};

/*
 * Calls method with {} on c, whose role is have: refused with
 * permission_denied naming the method and a role of the table's that have
 * lacks, or, if the table lets have call it, anything but that.
 */
static void expect_role(struct rpc *c, const char *conn, const char *method, unsigned roles,
                        unsigned have)
{
	struct rpc_res r = rpc_call(c, method);
	char msg[512];
	int named = 0;

	rpc_err_message(&r, msg, sizeof(msg));
	if (roles & have) {
		ck_assert_msg(!is_denied(&r), "%s: refused to %s, which the table lets call it: %s",
		              method, conn, msg);
		return;
	}
	ck_assert_msg(is_denied(&r), "%s: not refused to %s, which the table does not name (%s)",
	              method, conn, r.error ? msg : "it succeeded");
	ck_assert_msg(strstr(msg, method) != NULL, "%s: the refusal '%s' does not name the method",
	              method, msg);
	for (size_t i = 0; i < sizeof(role_names) / sizeof(role_names[0]); i++)
		if ((roles & ~have & role_names[i].role) && strstr(msg, role_names[i].name))
			named = 1;
	ck_assert_msg(named, "%s: the refusal '%s' names no role that may call it", method, msg);
}

START_TEST(test_method_roles)
{
	struct rpc admin, agent_admin_socket, agent_agent_socket, reader;
	const char *name;
	unsigned n = 0;
	int changes;

	start_with_tenants(&admin, 0, NULL);
	open_agent(&agent_admin_socket, d.socket, &a);
	open_agent(&agent_agent_socket, agent_socket, &b);
	open_reader(&reader);
	for (unsigned i = 0; (name = dispatch_method_name(i, &changes)) != NULL; i++, n++) {
		unsigned roles = dispatch_method_roles(i);

		ck_assert_msg(roles != 0, "%s: the table lets no role call it", name);
		ck_assert_msg(roles & ACCESS_ADMIN, "%s: an admin may not call it", name);
		ck_assert_msg(!changes || !(roles & ACCESS_READER), "%s changes the state: not a reader's",
		              name);
		ck_assert_msg(!changes || !(roles & ACCESS_AGENT) || strcmp(name, "check") == 0 ||
		                      strcmp(name, "report") == 0,
		              "%s changes the state: an agent may only check and report", name);
		expect_role(&admin, "an admin", name, roles, ACCESS_ADMIN);
		expect_role(&agent_admin_socket, "an agent on the admin socket", name, roles,
		            ACCESS_AGENT);
		expect_role(&agent_agent_socket, "an agent on the agent socket", name, roles,
		            ACCESS_AGENT);
		expect_role(&reader, "a reader", name, roles, ACCESS_READER);
	}
	ck_assert_uint_gt(n, 0);
	rpc_close(&reader);
	rpc_close(&agent_agent_socket);
	rpc_close(&agent_admin_socket);
	rpc_close(&admin);
}
END_TEST

/* ----- an agent acts for itself only ----- */

START_TEST(test_agent_names_only_itself)
{
	static const char *const by_agent[] = {"wallets.get", "spend", "transactions.list",
	                                       "agents.get", "score", "agents.events", "alerts.list",
	                                       "rules.list", "transactions.summary"};
	static const char *const by_org[] = {"wallets.get", "spend", "transactions.list",
	                                     "alerts.list", "transactions.summary"};
	struct rpc admin, ca, cb;
	uint64_t ta, tb;
	struct rpc_res r;

	start_with_tenants(&admin, 0, NULL);
	open_agent(&ca, d.socket, &a);
	open_agent(&cb, agent_socket, &b);
	ta = check_allowed(&ca, &a, 1000);
	tb = check_allowed(&cb, &b, 1000);

	expect_denied(rpc_call(&ca, "check", RPC_U64("agent_id", b.id), RPC_STR("action", "llm.chat"),
	                       RPC_I64("estimated_cost", 1000)),
	              "check for another agent", "check");
	for (size_t i = 0; i < sizeof(by_agent) / sizeof(by_agent[0]); i++)
		expect_denied(rpc_call(&ca, by_agent[i], RPC_U64("agent_id", b.id)), by_agent[i],
		              by_agent[i]);
	for (size_t i = 0; i < sizeof(by_org) / sizeof(by_org[0]); i++)
		expect_denied(rpc_call(&ca, by_org[i], RPC_U64("org_id", org_id)), by_org[i],
		              by_org[i]);
	expect_denied(rpc_call(&ca, "wallets.get", RPC_U64("agent_id", a.id), RPC_U64("org_id", org_id)),
	              "wallets.get of its own agent and the org");

	/* b's transaction stays b's to settle */
	expect_denied(rpc_call(&ca, "report", RPC_U64("transaction_id", tb), RPC_STR("outcome", "success"),
	                       RPC_I64("actual_cost", 1)),
	              "report of another agent's transaction", "transaction_id");
	r = rpc_call(&cb, "report", RPC_U64("transaction_id", tb), RPC_STR("outcome", "success"),
	             RPC_I64("actual_cost", 500));
	expect_ok(r, "report by its agent");
	ck_assert_uint_eq(rpc_get_u64(r.result, "charged"), 500);
	expect_ok(rpc_call(&ca, "report", RPC_U64("transaction_id", ta), RPC_STR("outcome", "success")),
	          "report of its own transaction");

	/* listings without agent_id are the agent's own */
	r = rpc_call(&ca, "transactions.list");
	expect_ok(r, "transactions.list");
	ck_assert(r.result->type == MSGPACK_OBJECT_ARRAY);
	ck_assert_uint_eq(r.result->via.array.size, 1);
	ck_assert_uint_eq(rpc_get_u64(&r.result->via.array.ptr[0], "agent_id"), a.id);
	ck_assert_uint_eq(rpc_get_u64(&r.result->via.array.ptr[0], "id"), ta);
	r = rpc_call(&ca, "wallets.get");
	expect_ok(r, "wallets.get");
	ck_assert_uint_eq(rpc_get_u64(r.result, "balance"), BALANCE - 1000);
	r = rpc_call(&cb, "wallets.get");
	expect_ok(r, "wallets.get");
	ck_assert_uint_eq(rpc_get_u64(r.result, "balance"), BALANCE - 500);
	r = rpc_call(&cb, "agents.get");
	expect_ok(r, "agents.get");
	ck_assert_uint_eq(rpc_get_u64(r.result, "id"), b.id);
	/* a status change is an event of the agent's */
	expect_ok(rpc_call(&admin, "agents.update", RPC_U64("agent_id", b.id),
	                   RPC_STR("status", "frozen")),
	          "agents.update");
	expect_ok(rpc_call(&admin, "agents.update", RPC_U64("agent_id", a.id),
	                   RPC_STR("status", "frozen")),
	          "agents.update");
	r = rpc_call(&ca, "agents.events");
	expect_ok(r, "agents.events");
	ck_assert(r.result->type == MSGPACK_OBJECT_ARRAY && r.result->via.array.size > 0);
	for (uint32_t i = 0; i < r.result->via.array.size; i++)
		ck_assert_uint_eq(rpc_get_u64(&r.result->via.array.ptr[i], "agent_id"), a.id);

	rpc_close(&cb);
	rpc_close(&ca);
	rpc_close(&admin);
}
END_TEST

/* Calls hello on c until it holds n alert notifications, for at most RPC_TIMEOUT_MS. */
static void wait_alerts(struct rpc *c, size_t n)
{
	for (long waited = 0; rpc_notes(c, "alert") < n; waited += 10) {
		ck_assert_msg(waited < RPC_TIMEOUT_MS, "%zu alerts of %zu arrived in %d ms",
		              rpc_notes(c, "alert"), n, RPC_TIMEOUT_MS);
		expect_ok(rpc_call(c, "hello"), "hello");
		test_sleep_ms(10);
	}
}

/* Asserts that c received at least one alert, and only alerts of agent ag. */
static void expect_own_alerts(struct rpc *c, const struct agent *ag)
{
	size_t n = rpc_notes(c, "alert");

	ck_assert_msg(n > 0, "agent %" PRIu64 " received none of its alerts", ag->id);
	for (size_t i = 0; i < n; i++)
		ck_assert_uint_eq(rpc_get_u64(rpc_note(c, "alert", i), "agent_id"), ag->id);
}

START_TEST(test_agent_alerts_own)
{
	struct rpc admin, ca, cb, listing;
	struct rpc_res r;

	start_with_tenants(&admin, 0, NULL);
	open_agent(&ca, d.socket, &a);
	open_agent(&cb, agent_socket, &b);
	expect_ok(rpc_call(&ca, "alerts.subscribe"), "alerts.subscribe by agent a");
	expect_ok(rpc_call(&cb, "alerts.subscribe"), "alerts.subscribe by agent b");
	/*
	 * $6 of $10 leaves $4, below the low balance of $5: a warning for b,
	 * then for a; $3.50 more leaves b $0.50, below $1: b's critical alert.
	 * A subscriber receives alerts in id order, so one given the other
	 * agent's alert would have it before the one it waits for.
	 */
	check_allowed(&cb, &b, 6000000);
	check_allowed(&ca, &a, 6000000);
	check_allowed(&cb, &b, 3500000);
	wait_alerts(&ca, 1);
	wait_alerts(&cb, 2);
	expect_own_alerts(&ca, &a);
	expect_own_alerts(&cb, &b);

	open_agent(&listing, agent_socket, &a);
	r = rpc_call(&listing, "alerts.list");
	expect_ok(r, "alerts.list");
	ck_assert(r.result->type == MSGPACK_OBJECT_ARRAY && r.result->via.array.size == 1);
	ck_assert_uint_eq(rpc_get_u64(&r.result->via.array.ptr[0], "agent_id"), a.id);
	r = rpc_call(&admin, "alerts.list");
	expect_ok(r, "alerts.list by the admin");
	ck_assert_uint_eq(r.result->via.array.size, 3);
	rpc_close(&listing);
	rpc_close(&cb);
	rpc_close(&ca);
	rpc_close(&admin);
}
END_TEST

/*
 * A subscribed connection that presents another agent's token receives as
 * that agent from then on: b's alert, not a's, though a's comes first.
 */
START_TEST(test_alerts_follow_a_new_token)
{
	struct rpc admin, sub, ta, tb;
	struct rpc_res r;

	start_with_tenants(&admin, 0, NULL);
	open_agent(&sub, d.socket, &a);
	expect_ok(rpc_call(&sub, "alerts.subscribe"), "alerts.subscribe as agent a");
	r = rpc_call(&sub, "hello", RPC_STR("token", b.token));
	expect_ok(r, "hello with agent b's token");
	ck_assert_uint_eq(rpc_get_u64(r.result, "agent_id"), b.id);
	open_agent(&ta, d.socket, &a);
	open_agent(&tb, d.socket, &b);
	check_allowed(&ta, &a, 6000000);
	check_allowed(&tb, &b, 6000000);
	wait_alerts(&sub, 1);
	expect_own_alerts(&sub, &b);
	rpc_close(&tb);
	rpc_close(&ta);
	rpc_close(&sub);
	rpc_close(&admin);
}
END_TEST

/* ----- tokens that stop working ----- */

START_TEST(test_rotated_token)
{
	struct rpc admin, on_admin, on_agent, again, fresh;
	struct agent rotated;
	struct rpc_res r;
	char role[16];

	start_with_tenants(&admin, 0, NULL);
	rotated = a;
	open_agent(&on_admin, d.socket, &a);
	open_agent(&on_agent, agent_socket, &a);
	r = rpc_call(&admin, "agents.rotate_token", RPC_U64("agent_id", a.id));
	expect_ok(r, "agents.rotate_token");
	ck_assert_uint_eq(rpc_get_u64(r.result, "agent_id"), a.id);
	rpc_get_str(r.result, "token", rotated.token, sizeof(rotated.token));
	ck_assert_str_ne(rotated.token, a.token);

	/* the connections that presented the old token: refused; the agent socket's closed */
	expect_denied(rpc_call(&on_admin, "wallets.get"), "a call after the rotation", "token");
	/* a peer that is an admin by its uid is one again, not bound to anyone */
	r = rpc_call(&on_admin, "hello");
	expect_ok(r, "hello after the rotation");
	rpc_get_str(r.result, "role", role, sizeof(role));
	ck_assert_str_eq(role, "admin");
	expect_denied(rpc_call(&on_agent, "wallets.get"), "a call after the rotation", "token");
	rpc_expect_eof(&on_agent);
	rpc_close(&on_agent);

	/* the old token, presented anew */
	rpc_open(&again, d.socket);
	expect_denied(rpc_call(&again, "hello", RPC_STR("token", a.token)), "hello with the old token",
	              "token");
	rpc_close(&again);
	rpc_open(&again, agent_socket);
	expect_denied(rpc_call(&again, "hello", RPC_STR("token", a.token)),
	              "hello with the old token on the agent socket", "token");
	rpc_expect_eof(&again);
	rpc_close(&again);

	/* the new one works, also on the connection that was refused */
	open_agent(&fresh, agent_socket, &rotated);
	check_allowed(&fresh, &rotated, 1000);
	r = rpc_call(&on_admin, "hello", RPC_STR("token", rotated.token));
	expect_ok(r, "hello with the new token on the refused connection");
	check_allowed(&on_admin, &rotated, 1000);
	rpc_close(&fresh);
	rpc_close(&on_admin);
	rpc_close(&admin);
}
END_TEST

START_TEST(test_revoked_reader)
{
	struct rpc admin, reader, subscribed, again;
	struct rpc_res r;

	start_with_tenants(&admin, 0, NULL);
	open_reader(&reader);
	open_reader(&subscribed);
	expect_ok(rpc_call(&reader, "stats"), "stats by a reader");
	expect_ok(rpc_call(&subscribed, "alerts.subscribe"), "alerts.subscribe by a reader");
	r = rpc_call(&admin, "tokens.list");
	expect_ok(r, "tokens.list");
	ck_assert(r.result->type == MSGPACK_OBJECT_ARRAY && r.result->via.array.size == 1);
	ck_assert_uint_eq(rpc_get_u64(&r.result->via.array.ptr[0], "token_id"), reader_token_id);
	ck_assert_msg(rpc_get(&r.result->via.array.ptr[0], "token") == NULL,
	              "tokens.list shows a token");
	expect_ok(rpc_call(&admin, "tokens.revoke", RPC_U64("token_id", reader_token_id)),
	          "tokens.revoke");

	expect_denied(rpc_call(&reader, "stats"), "stats after the revocation", "token");
	rpc_open(&again, d.socket);
	expect_denied(rpc_call(&again, "hello", RPC_STR("token", reader_token)),
	              "hello with a revoked token", "token");
	rpc_close(&again);

	/* the revoked subscriber no longer sees the alerts (the admin's subscription does) */
	expect_ok(rpc_call(&admin, "alerts.subscribe"), "alerts.subscribe by the admin");
	check_allowed(&admin, &a, 6000000);
	wait_alerts(&admin, 1);
	expect_denied(rpc_call(&subscribed, "stats"), "stats after the revocation", "token");
	ck_assert_msg(rpc_notes(&subscribed, "alert") == 0,
	              "a subscriber whose reader token was revoked received %zu alerts",
	              rpc_notes(&subscribed, "alert"));
	rpc_close(&subscribed);
	rpc_close(&reader);
	rpc_close(&admin);
}
END_TEST

/* ----- the agent socket: hello with an agent's token first ----- */

START_TEST(test_agent_socket_hello_first)
{
	struct rpc admin, c;
	struct agent forged;
	const char *name, *secret;
	char *last;
	int changes;

	start_with_tenants(&admin, 0, NULL);
	forged = a;
	for (unsigned i = 0; (name = dispatch_method_name(i, &changes)) != NULL; i++) {
		if (strcmp(name, "hello") == 0)
			continue;
		rpc_open(&c, agent_socket);
		expect_denied(rpc_call(&c, name), name, name);
		rpc_expect_eof(&c);
		rpc_close(&c);
	}

	rpc_open(&c, agent_socket);
	expect_denied(rpc_call(&c, "hello"), "hello without a token", "token");
	rpc_expect_eof(&c);
	rpc_close(&c);

	rpc_open(&c, agent_socket);
	expect_denied(rpc_call(&c, "hello", RPC_STR("token", "not-a-token")), "hello with garbage",
	              "token");
	rpc_expect_eof(&c);
	rpc_close(&c);

	/* a's token with the last character of its secret changed */
	last = &forged.token[strlen(forged.token) - 1];
	*last = *last == 'A' ? 'B' : 'A';
	rpc_open(&c, agent_socket);
	expect_denied(rpc_call(&c, "hello", RPC_STR("token", forged.token)),
	              "hello with a forged token", "token");
	rpc_expect_eof(&c);
	rpc_close(&c);

	/* b's token naming a */
	secret = b.token + strlen(ACCESS_AGENT_PREFIX);
	secret += strspn(secret, "0123456789");
	snprintf(forged.token, sizeof(forged.token), "%s%" PRIu64 "%s", ACCESS_AGENT_PREFIX, a.id,
	         secret);
	rpc_open(&c, agent_socket);
	expect_denied(rpc_call(&c, "hello", RPC_STR("token", forged.token)),
	              "hello with another agent's secret", "token");
	rpc_expect_eof(&c);
	rpc_close(&c);

	rpc_open(&c, agent_socket);
	expect_denied(rpc_call(&c, "hello", RPC_STR("token", reader_token)),
	              "hello with a reader token on the agent socket", "agent");
	rpc_expect_eof(&c);
	rpc_close(&c);
	rpc_close(&admin);
}
END_TEST

/* ----- another uid ----- */

static struct passwd user;
static char user_name[64];

/*
 * The second user, made if missing: 1, or 0 (with the reason printed)
 * when the program does not run as root, for test to pass without it.
 */
static int second_user(const char *test)
{
	struct passwd *pw;

	if (geteuid() != 0) {
		printf("check_access: %s skipped: it needs root, to run as the user %s\n", test,
		       TEST_USER);
		return 0;
	}
	if ((pw = getpwnam(TEST_USER)) == NULL) {
		int rc = system("useradd -M -r -U -s /usr/sbin/nologin " TEST_USER " >/dev/null 2>&1");

		/* 9: made meanwhile by another run */
		ck_assert_msg(rc == 0 || (WIFEXITED(rc) && WEXITSTATUS(rc) == 9),
		              "useradd " TEST_USER " failed (status %d)", rc);
		pw = getpwnam(TEST_USER);
	}
	ck_assert_msg(pw != NULL, "no user " TEST_USER " after useradd");
	ck_assert_msg(pw->pw_uid != 0 && pw->pw_uid != geteuid(), TEST_USER " is root");
	snprintf(user_name, sizeof(user_name), "%s", pw->pw_name);
	user = *pw;
	user.pw_name = user_name;
	return 1;
}

/*
 * A connection to path made by a child running as the second user, which
 * passes the descriptor back over a socket pair; *pid (if not NULL) is the
 * child's, the pid the daemon sees.
 */
static void open_as_user(struct rpc *c, const char *path, pid_t *pid)
{
	char cbuf[CMSG_SPACE(sizeof(int))], errbuf[128] = "";
	struct iovec iov = {errbuf, sizeof(errbuf) - 1};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	struct cmsghdr *cm;
	int sv[2], status, fd = -1;
	pid_t child;
	ssize_t n;

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	child = fork();
	ck_assert_int_ge(child, 0);
	if (child == 0) {
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		const char *step = "initgroups";
		int s = -1;

		close(sv[0]);
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
		if (initgroups(user.pw_name, user.pw_gid) == 0 && (step = "setgid") &&
		    setgid(user.pw_gid) == 0 && (step = "setuid") && setuid(user.pw_uid) == 0 &&
		    (step = "socket") && (s = socket(AF_UNIX, SOCK_STREAM, 0)) >= 0 &&
		    (step = "connect") && connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			memset(cbuf, 0, sizeof(cbuf));
			mh.msg_control = cbuf;
			mh.msg_controllen = sizeof(cbuf);
			cm = CMSG_FIRSTHDR(&mh);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(cm), &s, sizeof(int));
			iov.iov_len = 1;
			_exit(sendmsg(sv[1], &mh, 0) == 1 ? 0 : 1);
		}
		snprintf(errbuf, sizeof(errbuf), "%s as %s: %s", step, TEST_USER, strerror(errno));
		_exit(write(sv[1], errbuf, strlen(errbuf)) > 0 ? 2 : 3);
	}
	close(sv[1]);
	mh.msg_control = cbuf;
	mh.msg_controllen = sizeof(cbuf);
	n = recvmsg(sv[0], &mh, MSG_CMSG_CLOEXEC);
	for (cm = n > 0 ? CMSG_FIRSTHDR(&mh) : NULL; cm; cm = CMSG_NXTHDR(&mh, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
			memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	close(sv[0]);
	ck_assert_int_eq(waitpid(child, &status, 0), child);
	ck_assert_msg(fd >= 0, "no connection as %s: %s", TEST_USER, errbuf[0] ? errbuf : "child failed");
	if (pid)
		*pid = child;
	rpc_adopt(c, fd);
}

START_TEST(test_other_uid_unauthenticated)
{
	struct rpc admin, c;
	char role[16];
	struct rpc_res r;

	if (!second_user(tcase_name()))
		return;
	start_with_tenants(&admin, 1, NULL);
	open_as_user(&c, d.socket, NULL);
	ck_assert_str_eq(hello_role(&c, role, sizeof(role)), "none");
	expect_denied(rpc_call(&c, "wallets.update", RPC_U64("agent_id", a.id),
	                       RPC_I64("balance", 1000000000)),
	              "wallets.update by a peer of another uid", "wallets.update", "admin");
	expect_denied(rpc_call(&c, "stats"), "stats by a peer of another uid", "stats");
	expect_denied(rpc_call(&c, "check", RPC_U64("agent_id", a.id), RPC_STR("action", "llm.chat"),
	                       RPC_I64("estimated_cost", 1000)),
	              "check by a peer of another uid", "check");
	r = rpc_call(&c, "hello", RPC_STR("token", a.token));
	expect_ok(r, "hello with an agent token by a peer of another uid");
	ck_assert_str_eq(rpc_get_str(r.result, "role", role, sizeof(role)), "agent");
	check_allowed(&c, &a, 1000);
	expect_denied(rpc_call(&c, "wallets.update", RPC_U64("agent_id", a.id),
	                       RPC_I64("balance", 1000000000)),
	              "wallets.update by that agent", "wallets.update");
	r = rpc_call(&admin, "wallets.get", RPC_U64("agent_id", a.id));
	expect_ok(r, "wallets.get");
	ck_assert_uint_eq(rpc_get_u64(r.result, "balance"), BALANCE);
	rpc_close(&c);
	rpc_close(&admin);
}
END_TEST

/* The whole output of `sidecardctl ledger export` of the daemon's state directory. */
static char *ledger_export(void)
{
	const char *bin = getenv("SIDECARDCTL_BIN");
	char cmd[512], *out = NULL;
	size_t n = 0, cap = 0;
	FILE *p;
	int status;

	snprintf(cmd, sizeof(cmd), "'%s' ledger export --state-dir '%s'",
	         bin && *bin ? bin : "libclient/sidecardctl", d.state);
	ck_assert_msg((p = popen(cmd, "r")) != NULL, "popen %s: %s", cmd, strerror(errno));
	do {
		if (cap - n < 4096) {
			cap = cap ? 2 * cap : 65536;
			ck_assert((out = realloc(out, cap)) != NULL);
		}
		n += fread(out + n, 1, cap - n - 1, p);
	} while (!feof(p) && !ferror(p));
	out[n] = '\0';
	status = pclose(p);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s failed (%d)", cmd, status);
	return out;
}

/* Asserts that the exported record of type has the "by" map want (JSON text). */
static void expect_by(const char *export, const char *type, const char *want)
{
	char key[64];
	const char *line;

	snprintf(key, sizeof(key), "\"type\":\"%s\"", type);
	line = strstr(export, key);
	ck_assert_msg(line != NULL, "no %s record in the export:\n%s", type, export);
	ck_assert_msg(strncmp(line + strlen(key), ",\"by\":", 6) == 0 &&
	                      strncmp(line + strlen(key) + 6, want, strlen(want)) == 0,
	              "the %s record is not by %s: %.300s", type, want, line);
}

START_TEST(test_other_uid_admin_user)
{
	static const char *const extra[] = {"--admin-users", TEST_USER, NULL};
	struct rpc admin, c;
	char role[16], by[128], *export;
	pid_t pid;

	if (!second_user(tcase_name()))
		return;
	start_with_tenants(&admin, 1, extra);
	open_as_user(&c, d.socket, &pid);
	ck_assert_str_eq(hello_role(&c, role, sizeof(role)), "admin");
	expect_ok(rpc_call(&c, "wallets.update", RPC_U64("agent_id", a.id), RPC_I64("balance", 1)),
	          "wallets.update by an --admin-users peer");
	export = ledger_export();
	snprintf(by, sizeof(by), "{\"role\":\"admin\",\"uid\":%u,\"pid\":%d}", (unsigned)user.pw_uid,
	         (int)pid);
	expect_by(export, "wallets.update", by);
	free(export);
	rpc_close(&c);
	rpc_close(&admin);
}
END_TEST

START_TEST(test_other_uid_reader_group)
{
	static char gid[16];
	static const char *const extra[] = {"--reader-group", gid, NULL};
	struct rpc admin, c;
	char role[16];

	if (!second_user(tcase_name()))
		return;
	snprintf(gid, sizeof(gid), "%u", (unsigned)user.pw_gid);
	start_with_tenants(&admin, 1, extra);
	open_as_user(&c, d.socket, NULL);
	ck_assert_str_eq(hello_role(&c, role, sizeof(role)), "reader");
	expect_ok(rpc_call(&c, "stats"), "stats by a --reader-group peer");
	expect_ok(rpc_call(&c, "wallets.get", RPC_U64("agent_id", b.id)),
	          "wallets.get by a --reader-group peer");
	expect_denied(rpc_call(&c, "wallets.update", RPC_U64("agent_id", a.id), RPC_I64("balance", 1)),
	              "wallets.update by a --reader-group peer", "wallets.update", "admin");
	expect_denied(rpc_call(&c, "check", RPC_U64("agent_id", a.id), RPC_STR("action", "llm.chat"),
	                       RPC_I64("estimated_cost", 1000)),
	              "check by a --reader-group peer", "check");
	rpc_close(&c);
	rpc_close(&admin);
}
END_TEST

START_TEST(test_other_uid_connection_cap)
{
	static const char *const extra[] = {"--max-connections-per-uid", "3", NULL};
	struct rpc admin, c[4], root;
	const msgpack_object *o;
	char role[16], uid[32];
	struct rpc_res r;

	if (!second_user(tcase_name()))
		return;
	start_with_tenants(&admin, 1, extra);
	for (int i = 0; i < 3; i++) {
		open_as_user(&c[i], d.socket, NULL);
		ck_assert_str_eq(hello_role(&c[i], role, sizeof(role)), "none");
	}
	open_as_user(&c[3], d.socket, NULL);
	o = rpc_next(&c[3]);
	ck_assert_msg(o != NULL && o->via.array.size == 3 && rpc_is_str(&o->via.array.ptr[1], "error"),
	              "the fourth connection of a uid got no error notification");
	r.error = &o->via.array.ptr[2].via.array.ptr[0];
	r.result = NULL;
	snprintf(uid, sizeof(uid), "uid %u", (unsigned)user.pw_uid);
	expect_error(r, "limit_exceeded", "the fourth connection of a uid", uid, (const char *)NULL);
	rpc_expect_eof(&c[3]);
	rpc_close(&c[3]);
	/* the others are served, and an admin is not held to the cap */
	ck_assert_str_eq(hello_role(&c[2], role, sizeof(role)), "none");
	rpc_open(&root, d.socket);
	ck_assert_str_eq(hello_role(&root, role, sizeof(role)), "admin");
	rpc_close(&root);
	for (int i = 0; i < 3; i++)
		rpc_close(&c[i]);
	rpc_close(&admin);
}
END_TEST

START_TEST(test_other_uid_auth_timeout)
{
	static const char *const extra[] = {"--auth-timeout", "1", NULL};
	struct rpc admin, idle, agent;
	const msgpack_object *o;
	struct rpc_res r;

	if (!second_user(tcase_name()))
		return;
	start_with_tenants(&admin, 1, extra);
	open_as_user(&idle, d.socket, NULL);
	open_as_user(&agent, d.socket, NULL);
	expect_ok(rpc_call(&agent, "hello", RPC_STR("token", a.token)), "hello with a token");
	o = rpc_next(&idle);
	ck_assert_msg(o != NULL && o->via.array.size == 3 && rpc_is_str(&o->via.array.ptr[1], "error"),
	              "an idle unauthenticated connection got no error notification");
	r.error = &o->via.array.ptr[2].via.array.ptr[0];
	r.result = NULL;
	expect_denied(r, "an idle unauthenticated connection", "token");
	rpc_expect_eof(&idle);
	/* the one that presented a token in time stays, past the same deadline */
	check_allowed(&agent, &a, 1000);
	expect_ok(rpc_call(&admin, "hello"), "hello by the admin");
	rpc_close(&agent);
	rpc_close(&idle);
	rpc_close(&admin);
}
END_TEST

/* ----- connections per agent ----- */

START_TEST(test_agent_connection_cap)
{
	static const char *const extra[] = {"--max-connections-per-agent", "2", NULL};
	struct rpc admin, c[3];
	char id[32];

	start_with_tenants(&admin, 0, extra);
	open_agent(&c[0], d.socket, &a);
	open_agent(&c[1], agent_socket, &a);
	/* presenting the same token again on one connection is no new connection */
	expect_ok(rpc_call(&c[0], "hello", RPC_STR("token", a.token)), "hello again");
	rpc_open(&c[2], agent_socket);
	snprintf(id, sizeof(id), "agent %" PRIu64, a.id);
	expect_error(rpc_call(&c[2], "hello", RPC_STR("token", a.token)), "limit_exceeded",
	             "a third connection of an agent", id, (const char *)NULL);
	rpc_close(&c[2]);
	/* another agent is not held to a's count */
	open_agent(&c[2], agent_socket, &b);
	for (int i = 0; i < 3; i++)
		rpc_close(&c[i]);
	rpc_close(&admin);
}
END_TEST

/* ----- who made each change ----- */

START_TEST(test_audit)
{
	struct rpc admin, agent;
	char by[128], *export;

	start_with_tenants(&admin, 0, NULL);
	expect_ok(rpc_call(&admin, "wallets.update", RPC_U64("agent_id", a.id), RPC_I64("balance", 42)),
	          "wallets.update");
	open_agent(&agent, agent_socket, &b);
	check_allowed(&agent, &b, 1000);
	export = ledger_export();
	snprintf(by, sizeof(by), "{\"role\":\"admin\",\"uid\":%u,\"pid\":%d}", (unsigned)getuid(),
	         (int)getpid());
	expect_by(export, "wallets.update", by);
	snprintf(by, sizeof(by), "{\"role\":\"agent\",\"agent_id\":%" PRIu64 ",\"uid\":%u,\"pid\":%d}",
	         b.id, (unsigned)getuid(), (int)getpid());
	expect_by(export, "check", by);
	free(export);
	rpc_close(&agent);
	rpc_close(&admin);
}
END_TEST

static Suite *access_suite(void)
{
	const struct test_case cases[] = {
		{"method-roles", test_method_roles},
		{"agent-names-only-itself", test_agent_names_only_itself},
		{"agent-alerts-own", test_agent_alerts_own},
		{"alerts-follow-a-new-token", test_alerts_follow_a_new_token},
		{"rotated-token", test_rotated_token},
		{"revoked-reader", test_revoked_reader},
		{"agent-socket-hello-first", test_agent_socket_hello_first},
		{"other-uid-unauthenticated", test_other_uid_unauthenticated},
		{"other-uid-admin-user", test_other_uid_admin_user},
		{"other-uid-reader-group", test_other_uid_reader_group},
		{"other-uid-connection-cap", test_other_uid_connection_cap},
		{"other-uid-auth-timeout", test_other_uid_auth_timeout},
		{"agent-connection-cap", test_agent_connection_cap},
		{"audit", test_audit},
	};
	Suite *s = suite_create("access");

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		tcase_add_test(test_add_tcase_tmp(s, cases[i].name, NULL, stop, TEST_TIMEOUT_S),
		               cases[i].test);
	return s;
}

int main(void)
{
	return test_run_suite(access_suite());
}
