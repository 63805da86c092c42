/*
 * check_client.c: libsidecard's strictness against a misbehaving daemon.
 *
 * The real daemon never sends a wrong msgid, an oversized response or a
 * malformed result, so these tests put a scripted fake daemon on a Unix
 * socket instead: a thread that accepts one connection and answers each
 * request with the next canned reply (a function packing msgpack), or
 * closes the connection when the script says so. What is checked: a wrong
 * msgid and a response over 1 MiB are SC_EPROTO and kill the connection
 * (later calls: SC_ECLOSED); an error with a name this library does not
 * know keeps its integer code and message; a result missing a field or
 * with an overlong string is SC_EPROTO naming the field, while unknown
 * extra fields are ignored; a different protocol version fails sc_connect;
 * an `error` notification ends the connection with its code. For roles:
 * the hello carries SIDECARD_TOKEN when it is set and not empty, the token
 * of sc_connect_token() instead when one is given and none when NULL is; a
 * token of 0 or more than SC_TOKEN_MAX bytes is refused before any
 * connection; a refused hello fails the connect with SC_EDENIED and the
 * daemon's message in the connect's err; what hello says of the peer is
 * kept (sc_role, sc_bound_agent_id, sc_token_id) and checked (an agent
 * role names its agent); the token calls refuse to issue a token they
 * could not hand back, and results of the token methods are decoded.
 *
 * The "roles" case of this suite (check_client_roles.c) runs libsidecard's
 * token calls against the real daemon instead.
 *
 * Threads: the test's thread is the client; the fake daemon runs on its own
 * thread and touches nothing but its sockets. Run by check_integration.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <check.h>
#include <msgpack.h>

#include "daemon.h"
#include "sidecard.h"
#include "suites.h"
#include "testutil.h"

/* Packs the whole reply to the request with `msgid`. */
typedef void (*reply_fn)(msgpack_packer *pk, uint64_t msgid);

#define SCRIPT_MAX 5

struct fake {
	char dir[64];
	char path[96];
	int listen_fd;
	reply_fn script[SCRIPT_MAX]; /* NULL: close the connection instead of answering */
	size_t n;
	pthread_t thread;
	/* What the hello carried; read by the test only after fake_stop() joined the thread. */
	int hello_seen, hello_has_token;
	char hello_token[SC_TOKEN_MAX + 2];
};

static void put_str(msgpack_packer *pk, const char *s)
{
	msgpack_pack_str_with_body(pk, s, strlen(s));
}

static void put_kv_int(msgpack_packer *pk, const char *key, int64_t v)
{
	put_str(pk, key);
	msgpack_pack_int64(pk, v);
}

static void put_response_head(msgpack_packer *pk, uint64_t msgid)
{
	msgpack_pack_array(pk, 4);
	msgpack_pack_uint64(pk, 1);
	msgpack_pack_uint64(pk, msgid);
	msgpack_pack_nil(pk);
}

static void hello_with(msgpack_packer *pk, uint64_t msgid, int protocol)
{
	put_response_head(pk, msgid);
	msgpack_pack_map(pk, 4);
	put_str(pk, "server");
	put_str(pk, "sidecard");
	put_str(pk, "version");
	put_str(pk, "9.9.9");
	put_kv_int(pk, "protocol", protocol);
	put_str(pk, "limits");
	msgpack_pack_map(pk, 0);
}

static void reply_hello(msgpack_packer *pk, uint64_t msgid)
{
	hello_with(pk, msgid, SC_PROTOCOL_VERSION);
}

static void reply_hello_v2(msgpack_packer *pk, uint64_t msgid)
{
	hello_with(pk, msgid, SC_PROTOCOL_VERSION + 1);
}

/* A hello of a daemon with roles: role, and agent_id / token_id when not 0. */
static void hello_role(msgpack_packer *pk, uint64_t msgid, const char *role, int64_t agent_id,
                       int64_t token_id)
{
	put_response_head(pk, msgid);
	msgpack_pack_map(pk, 4 + (agent_id != 0) + (token_id != 0));
	put_str(pk, "server");
	put_str(pk, "sidecard");
	put_str(pk, "version");
	put_str(pk, "9.9.9");
	put_kv_int(pk, "protocol", SC_PROTOCOL_VERSION);
	put_str(pk, "role");
	put_str(pk, role);
	if (agent_id != 0)
		put_kv_int(pk, "agent_id", agent_id);
	if (token_id != 0)
		put_kv_int(pk, "token_id", token_id);
}

static void reply_hello_agent(msgpack_packer *pk, uint64_t msgid)
{
	hello_role(pk, msgid, "agent", 7, 0);
}

static void reply_hello_reader(msgpack_packer *pk, uint64_t msgid)
{
	hello_role(pk, msgid, "reader", 0, 3);
}

static void reply_hello_agent_without_id(msgpack_packer *pk, uint64_t msgid)
{
	hello_role(pk, msgid, "agent", 0, 0);
}

static void reply_denied(msgpack_packer *pk, uint64_t msgid)
{
	msgpack_pack_array(pk, 4);
	msgpack_pack_uint64(pk, 1);
	msgpack_pack_uint64(pk, msgid);
	msgpack_pack_map(pk, 3);
	put_kv_int(pk, "code", SC_EDENIED);
	put_str(pk, "name");
	put_str(pk, "permission_denied");
	put_str(pk, "message");
	put_str(pk, "hello: the token is not valid");
	msgpack_pack_nil(pk);
}

/* tokens.list: a named token and an unnamed one (name nil). */
static void reply_tokens_list(msgpack_packer *pk, uint64_t msgid)
{
	put_response_head(pk, msgid);
	msgpack_pack_array(pk, 2);
	for (int i = 1; i <= 2; i++) {
		msgpack_pack_map(pk, 4);
		put_kv_int(pk, "token_id", i);
		put_str(pk, "role");
		put_str(pk, "reader");
		put_str(pk, "name");
		if (i == 1)
			put_str(pk, "grafana");
		else
			msgpack_pack_nil(pk);
		put_kv_int(pk, "created_at", 1000 * i);
	}
}

/* agents.rotate_token answering for agent 8 when 7 was asked. */
static void reply_rotation_other_agent(msgpack_packer *pk, uint64_t msgid)
{
	put_response_head(pk, msgid);
	msgpack_pack_map(pk, 2);
	put_kv_int(pk, "agent_id", 8);
	put_str(pk, "token");
	put_str(pk, "sca_8_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
}

static void reply_revoked(msgpack_packer *pk, uint64_t msgid)
{
	put_response_head(pk, msgid);
	msgpack_pack_map(pk, 2);
	put_kv_int(pk, "token_id", 1);
	put_str(pk, "revoked");
	msgpack_pack_true(pk);
}

static void reply_wrong_msgid(msgpack_packer *pk, uint64_t msgid)
{
	put_response_head(pk, msgid + 1);
	msgpack_pack_array(pk, 0);
}

static void reply_huge(msgpack_packer *pk, uint64_t msgid)
{
	size_t size = 2 * 1024 * 1024;
	char *body = calloc(1, size);

	put_response_head(pk, msgid);
	msgpack_pack_str_with_body(pk, body, size);
	free(body);
}

static void reply_new_error(msgpack_packer *pk, uint64_t msgid)
{
	msgpack_pack_array(pk, 4);
	msgpack_pack_uint64(pk, 1);
	msgpack_pack_uint64(pk, msgid);
	msgpack_pack_map(pk, 3);
	put_kv_int(pk, "code", -1234);
	put_str(pk, "name");
	put_str(pk, "a_newer_error");
	put_str(pk, "message");
	put_str(pk, "something only a newer daemon knows");
	msgpack_pack_nil(pk);
}

/*
 * orgs.list's answer: one org named `name`, with created_at unless
 * `without_created_at`, and a field this library does not know.
 */
static void org_list(msgpack_packer *pk, uint64_t msgid, const char *name, int without_created_at)
{
	static const char *const wallet_keys[] = { "balance", "held", "available", "budget",
		                                   "max_per_txn", "daily_spend_limit",
		                                   "daily_spent", "debt" };
	size_t i;

	put_response_head(pk, msgid);
	msgpack_pack_array(pk, 1);
	msgpack_pack_map(pk, without_created_at ? 7 : 8);
	put_kv_int(pk, "id", 7);
	put_str(pk, "name");
	put_str(pk, name);
	put_str(pk, "timezone");
	put_str(pk, "UTC");
	put_str(pk, "timezone_rule");
	put_str(pk, "UTC0");
	put_kv_int(pk, "agents", 0);
	if (!without_created_at)
		put_kv_int(pk, "created_at", 1);
	put_str(pk, "from_the_future");
	put_str(pk, "ignored");
	put_str(pk, "wallet");
	msgpack_pack_map(pk, 11);
	for (i = 0; i < sizeof(wallet_keys) / sizeof(wallet_keys[0]); i++)
		put_kv_int(pk, wallet_keys[i], (int64_t)i);
	put_kv_int(pk, "reserved", 0);
	put_str(pk, "period");
	put_str(pk, "none");
	put_str(pk, "limited");
	msgpack_pack_true(pk);
}

static void reply_orgs_ok(msgpack_packer *pk, uint64_t msgid)
{
	org_list(pk, msgid, "acme", 0);
}

static void reply_orgs_missing(msgpack_packer *pk, uint64_t msgid)
{
	org_list(pk, msgid, "acme", 1);
}

static void reply_orgs_long_name(msgpack_packer *pk, uint64_t msgid)
{
	char name[SC_NAME_MAX + 2];

	memset(name, 'n', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	org_list(pk, msgid, name, 0);
}

static void reply_error_notification(msgpack_packer *pk, uint64_t msgid)
{
	msgpack_pack_array(pk, 3);
	msgpack_pack_uint64(pk, 2);
	put_str(pk, "error");
	msgpack_pack_array(pk, 1);
	msgpack_pack_map(pk, 3);
	put_kv_int(pk, "code", SC_ELIMIT);
	put_str(pk, "name");
	put_str(pk, "limit_exceeded");
	put_str(pk, "message");
	put_str(pk, "too many outstanding requests");
}

/* Keeps what a hello request carried: whether it had a token, and which. */
static void note_hello(struct fake *f, const msgpack_object *req)
{
	const msgpack_object *method = &req->via.array.ptr[2], *params = &req->via.array.ptr[3];
	const msgpack_object_map *args;
	uint32_t i;

	if (method->type != MSGPACK_OBJECT_STR || method->via.str.size != 5 ||
	    memcmp(method->via.str.ptr, "hello", 5) != 0)
		return;
	f->hello_seen = 1;
	if (params->type != MSGPACK_OBJECT_ARRAY || params->via.array.size != 1 ||
	    params->via.array.ptr[0].type != MSGPACK_OBJECT_MAP)
		return;
	args = &params->via.array.ptr[0].via.map;
	for (i = 0; i < args->size; i++) {
		const msgpack_object *k = &args->ptr[i].key, *v = &args->ptr[i].val;

		if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == 5 &&
		    memcmp(k->via.str.ptr, "token", 5) == 0 && v->type == MSGPACK_OBJECT_STR &&
		    v->via.str.size < sizeof(f->hello_token)) {
			f->hello_has_token = 1;
			memcpy(f->hello_token, v->via.str.ptr, v->via.str.size);
			f->hello_token[v->via.str.size] = '\0';
		}
	}
}

/* Reads one whole request and returns its msgid, or -1 on EOF or garbage. */
static int64_t read_request(struct fake *f, int fd, msgpack_unpacker *u)
{
	msgpack_unpacked m;
	int64_t msgid = -1;
	ssize_t n;

	msgpack_unpacked_init(&m);
	while (msgpack_unpacker_next(u, &m) != MSGPACK_UNPACK_SUCCESS) {
		if (!msgpack_unpacker_reserve_buffer(u, 4096))
			goto out;
		n = recv(fd, msgpack_unpacker_buffer(u), msgpack_unpacker_buffer_capacity(u), 0);
		if (n <= 0)
			goto out;
		msgpack_unpacker_buffer_consumed(u, (size_t)n);
	}
	if (m.data.type == MSGPACK_OBJECT_ARRAY && m.data.via.array.size == 4) {
		msgid = (int64_t)m.data.via.array.ptr[1].via.u64;
		note_hello(f, &m.data);
	}
out:
	msgpack_unpacked_destroy(&m);
	return msgid;
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	msgpack_unpacker u;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	int64_t msgid;
	size_t i, off;
	ssize_t n;
	int fd = accept(f->listen_fd, NULL, NULL);

	if (fd < 0)
		return NULL;
	msgpack_unpacker_init(&u, 4096);
	msgpack_sbuffer_init(&sb);
	for (i = 0; i < f->n && f->script[i] != NULL; i++) {
		if ((msgid = read_request(f, fd, &u)) < 0)
			break;
		msgpack_sbuffer_clear(&sb);
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		f->script[i](&pk, (uint64_t)msgid);
		for (off = 0; off < sb.size; off += (size_t)n)
			if ((n = send(fd, sb.data + off, sb.size - off, MSG_NOSIGNAL)) <= 0)
				break;
	}
	msgpack_sbuffer_destroy(&sb);
	msgpack_unpacker_destroy(&u);
	close(fd);
	return NULL;
}

static struct fake fake;

/* Starts the fake daemon with a NULL-terminated script of replies. */
static void fake_start(const reply_fn *script)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };

	memset(&fake, 0, sizeof(fake));
	for (; fake.n < SCRIPT_MAX && script[fake.n] != NULL; fake.n++)
		fake.script[fake.n] = script[fake.n];
	ck_assert_int_eq(test_tmpdir(fake.dir, sizeof(fake.dir)), 0);
	snprintf(fake.path, sizeof(fake.path), "%s/fake.sock", fake.dir);
	memcpy(addr.sun_path, fake.path, strlen(fake.path) + 1);
	fake.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(fake.listen_fd, 0);
	ck_assert_int_eq(bind(fake.listen_fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	ck_assert_int_eq(listen(fake.listen_fd, 1), 0);
	ck_assert_int_eq(pthread_create(&fake.thread, NULL, fake_main, &fake), 0);
}

static void fake_stop(void)
{
	pthread_join(fake.thread, NULL);
	close(fake.listen_fd);
	unlink(fake.path);
	rmdir(fake.dir);
}

/* Connects to a fake daemon running script; the hello must succeed. */
static sc_client *connect_fake(const reply_fn *script)
{
	sc_client *cl;

	test_daemon_timeout(30);
	fake_start(script);
	ck_assert_int_eq(sc_connect(fake.path, &cl), 0);
	ck_assert_str_eq(sc_server_version(cl), "9.9.9");
	return cl;
}

static void finish(sc_client *cl)
{
	sc_close(cl);
	fake_stop();
	test_daemon_timeout(0);
}

/*
 * Under this script orgs.list fails with SC_EPROTO, a message containing
 * `what` and no list, and the connection is closed after it.
 */
static void expect_eproto_closes(const reply_fn *script, const char *what)
{
	sc_client *cl = connect_fake(script);
	sc_org *list;
	size_t n;

	ck_assert_int_eq(sc_orgs_list(cl, &list, &n), SC_EPROTO);
	ck_assert_ptr_null(list);
	ck_assert_ptr_nonnull(strstr(sc_last_error(cl), what));
	ck_assert_int_eq(sc_orgs_list(cl, &list, &n), SC_ECLOSED);
	finish(cl);
}

START_TEST(test_wrong_msgid)
{
	static const reply_fn script[] = { reply_hello, reply_wrong_msgid, NULL };

	expect_eproto_closes(script, "another request");
}
END_TEST

START_TEST(test_response_over_1mib)
{
	static const reply_fn script[] = { reply_hello, reply_huge, NULL };

	expect_eproto_closes(script, "1 MiB");
}
END_TEST

START_TEST(test_unknown_error_name_keeps_code)
{
	static const reply_fn script[] = { reply_hello, reply_new_error, reply_orgs_ok, NULL };
	sc_client *cl = connect_fake(script);
	sc_org *list;
	size_t n;

	ck_assert_int_eq(sc_orgs_list(cl, &list, &n), -1234);
	ck_assert_str_eq(sc_last_error(cl), "something only a newer daemon knows");
	/* Still usable; unknown fields in a result are ignored. */
	ck_assert_int_eq(sc_orgs_list(cl, &list, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(list[0].name, "acme");
	ck_assert_uint_eq(list[0].id, 7);
	ck_assert_int_eq(list[0].wallet.debt, 7);
	ck_assert_int_eq(list[0].wallet.limited, 1);
	ck_assert_str_eq(sc_last_error(cl), "");
	sc_orgs_free(list);
	finish(cl);
}
END_TEST

START_TEST(test_strict_results)
{
	static const reply_fn script[] = { reply_hello, reply_orgs_missing, reply_orgs_long_name,
		                           NULL };
	sc_client *cl = connect_fake(script);
	sc_org *list;
	size_t n;

	ck_assert_int_eq(sc_orgs_list(cl, &list, &n), SC_EPROTO);
	ck_assert_ptr_nonnull(strstr(sc_last_error(cl), "created_at"));
	ck_assert_ptr_null(list);
	ck_assert_uint_eq(n, 0);
	ck_assert_int_eq(sc_orgs_list(cl, &list, &n), SC_EPROTO);
	ck_assert_ptr_nonnull(strstr(sc_last_error(cl), "'name'"));
	finish(cl);
}
END_TEST

START_TEST(test_other_protocol_version)
{
	static const reply_fn script[] = { reply_hello_v2, NULL };
	sc_client *cl = NULL;

	test_daemon_timeout(30);
	fake_start(script);
	ck_assert_int_eq(sc_connect(fake.path, &cl), SC_EPROTO);
	ck_assert_ptr_null(cl);
	fake_stop();
}
END_TEST

START_TEST(test_error_notification_closes)
{
	static const reply_fn script[] = { reply_hello, reply_error_notification, NULL };
	sc_client *cl = connect_fake(script);
	sc_wallet w;

	ck_assert_int_eq(sc_wallets_get(cl, 1, &w), SC_ELIMIT);
	ck_assert_str_eq(sc_last_error(cl), "too many outstanding requests");
	ck_assert_int_eq(sc_wallets_get(cl, 1, &w), SC_ECLOSED);
	finish(cl);
}
END_TEST

START_TEST(test_daemon_closes)
{
	static const reply_fn script[] = { reply_hello, NULL };
	sc_client *cl = connect_fake(script);
	sc_wallet w;
	int rc = sc_wallets_get(cl, 1, &w);

	ck_assert_msg(rc == SC_ECLOSED || rc == -ECONNRESET || rc == -EPIPE, "got %s",
	              sc_err_name(rc));
	ck_assert_int_eq(sc_wallets_get(cl, 1, &w), SC_ECLOSED);
	finish(cl);
}
END_TEST

/* Connects to a fake daemon running script with sc_connect(); returns its code. */
static int connect_env(const reply_fn *script, sc_client **cl)
{
	test_daemon_timeout(30);
	fake_start(script);
	return sc_connect(fake.path, cl);
}

START_TEST(test_env_token_in_hello)
{
	static const reply_fn script[] = { reply_hello_agent, NULL };
	sc_client *cl;

	setenv("SIDECARD_TOKEN", "sca_7_from-the-environment", 1);
	ck_assert_int_eq(connect_env(script, &cl), 0);
	ck_assert_str_eq(sc_role(cl), "agent");
	ck_assert_uint_eq(sc_bound_agent_id(cl), 7);
	ck_assert_uint_eq(sc_token_id(cl), 0);
	finish(cl);
	ck_assert_int_eq(fake.hello_seen, 1);
	ck_assert_int_eq(fake.hello_has_token, 1);
	ck_assert_str_eq(fake.hello_token, "sca_7_from-the-environment");
	unsetenv("SIDECARD_TOKEN");
}
END_TEST

/* An empty SIDECARD_TOKEN is none; so is an unset one; a daemon without roles names none. */
START_TEST(test_env_token_empty_or_unset)
{
	static const reply_fn script[] = { reply_hello, NULL };
	sc_client *cl;

	setenv("SIDECARD_TOKEN", "", 1);
	ck_assert_int_eq(connect_env(script, &cl), 0);
	ck_assert_str_eq(sc_role(cl), "");
	ck_assert_uint_eq(sc_bound_agent_id(cl), 0);
	finish(cl);
	ck_assert_int_eq(fake.hello_seen, 1);
	ck_assert_int_eq(fake.hello_has_token, 0);
	unsetenv("SIDECARD_TOKEN");
	ck_assert_int_eq(connect_env(script, &cl), 0);
	finish(cl);
	ck_assert_int_eq(fake.hello_seen, 1);
	ck_assert_int_eq(fake.hello_has_token, 0);
}
END_TEST

/* sc_connect_token: its token wins over the environment's; NULL sends none at all. */
START_TEST(test_explicit_token)
{
	static const reply_fn reader[] = { reply_hello_reader, NULL };
	static const reply_fn plain[] = { reply_hello, NULL };
	sc_client *cl;

	setenv("SIDECARD_TOKEN", "scr_9_from-the-environment", 1);
	test_daemon_timeout(30);
	fake_start(reader);
	ck_assert_int_eq(sc_connect_token(fake.path, "scr_3_given", &cl, NULL, 0), 0);
	ck_assert_str_eq(sc_role(cl), "reader");
	ck_assert_uint_eq(sc_token_id(cl), 3);
	ck_assert_uint_eq(sc_bound_agent_id(cl), 0);
	finish(cl);
	ck_assert_int_eq(fake.hello_has_token, 1);
	ck_assert_str_eq(fake.hello_token, "scr_3_given");

	test_daemon_timeout(30);
	fake_start(plain);
	ck_assert_int_eq(sc_connect_token(fake.path, NULL, &cl, NULL, 0), 0);
	finish(cl);
	ck_assert_int_eq(fake.hello_seen, 1);
	ck_assert_int_eq(fake.hello_has_token, 0);
	unsetenv("SIDECARD_TOKEN");
}
END_TEST

/* Refused before any connection: the path does not exist, yet the error is the token's. */
START_TEST(test_token_length)
{
	static const char nowhere[] = "/nonexistent/sidecard.sock";
	char longest[SC_TOKEN_MAX + 2], err[256];
	sc_client *cl = (sc_client *)&cl;

	ck_assert_int_eq(sc_connect_token(nowhere, "", &cl, err, sizeof(err)), SC_EINVAL);
	ck_assert_ptr_null(cl);
	ck_assert_str_eq(err, "token: must be 1 to 127 bytes");
	memset(longest, 'a', sizeof(longest) - 1);
	longest[sizeof(longest) - 1] = '\0';
	ck_assert_int_eq(sc_connect_token(nowhere, longest, &cl, NULL, 0), SC_EINVAL);
	setenv("SIDECARD_TOKEN", longest, 1);
	ck_assert_int_eq(sc_connect_err(nowhere, &cl, err, sizeof(err)), SC_EINVAL);
	ck_assert_str_eq(err, "token: must be 1 to 127 bytes");
	unsetenv("SIDECARD_TOKEN");
	/* One byte less is a token the daemon decides on: here, no daemon at all. */
	longest[SC_TOKEN_MAX] = '\0';
	ck_assert_int_eq(sc_connect_token(nowhere, longest, &cl, err, sizeof(err)), -ENOENT);
	ck_assert_str_eq(err, sc_strerror(-ENOENT));
}
END_TEST

START_TEST(test_token_denied)
{
	static const reply_fn script[] = { reply_denied, NULL };
	sc_client *cl = (sc_client *)&cl;

	char err[256];

	setenv("SIDECARD_TOKEN", "sca_7_revoked", 1);
	test_daemon_timeout(30);
	fake_start(script);
	ck_assert_int_eq(sc_connect_err(fake.path, &cl, err, sizeof(err)), SC_EDENIED);
	ck_assert_ptr_null(cl);
	ck_assert_str_eq(err, "hello: the token is not valid");
	fake_stop();
	ck_assert_str_eq(fake.hello_token, "sca_7_revoked");
	unsetenv("SIDECARD_TOKEN");
}
END_TEST

START_TEST(test_agent_role_names_its_agent)
{
	static const reply_fn script[] = { reply_hello_agent_without_id, NULL };
	sc_client *cl = (sc_client *)&cl;

	char err[256];

	test_daemon_timeout(30);
	fake_start(script);
	ck_assert_int_eq(sc_connect_err(fake.path, &cl, err, sizeof(err)), SC_EPROTO);
	ck_assert_ptr_null(cl);
	ck_assert_ptr_nonnull(strstr(err, "agent_id"));
	fake_stop();
}
END_TEST

/* A token the caller could not keep is never asked for: the fake would have closed. */
START_TEST(test_token_calls_need_their_output)
{
	static const reply_fn script[] = { reply_hello, NULL };
	sc_client *cl = connect_fake(script);
	sc_access_token t;

	ck_assert_int_eq(sc_agents_rotate_token(cl, 7, NULL), SC_EINVAL);
	ck_assert_ptr_nonnull(strstr(sc_last_error(cl), "token"));
	ck_assert_int_eq(sc_tokens_create(cl, "reader", "grafana", NULL), SC_EINVAL);
	ck_assert_ptr_nonnull(strstr(sc_last_error(cl), "out"));
	ck_assert_int_eq(sc_tokens_create(cl, NULL, NULL, &t), SC_EINVAL);
	ck_assert_str_eq(sc_last_error(cl), "role: required");
	finish(cl);
}
END_TEST

START_TEST(test_token_results)
{
	static const reply_fn script[] = { reply_hello, reply_tokens_list, reply_revoked,
		                           reply_rotation_other_agent, NULL };
	sc_client *cl = connect_fake(script);
	char token[SC_TOKEN_MAX + 1] = "unchanged";
	sc_access_token *list;
	size_t n;

	ck_assert_int_eq(sc_tokens_list(cl, &list, &n), 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_uint_eq(list[0].token_id, 1);
	ck_assert_str_eq(list[0].role, "reader");
	ck_assert_str_eq(list[0].name, "grafana");
	ck_assert_str_eq(list[0].token, "");
	ck_assert_str_eq(list[1].name, "");
	ck_assert_int_eq(list[1].created_at, 2000);
	sc_access_tokens_free(list);
	ck_assert_int_eq(sc_tokens_revoke(cl, 1), 0);
	ck_assert_int_eq(sc_agents_rotate_token(cl, 7, token), SC_EPROTO);
	ck_assert_ptr_nonnull(strstr(sc_last_error(cl), "agent 8 instead of 7"));
	ck_assert_str_eq(token, "unchanged");
	finish(cl);
}
END_TEST

Suite *client_suite(void)
{
	Suite *s = suite_create("client");
	TCase *tc = tcase_create("fake-daemon");

	tcase_add_unchecked_fixture(tc, test_tmp_base_create, test_tmp_base_remove);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_wrong_msgid);
	tcase_add_test(tc, test_response_over_1mib);
	tcase_add_test(tc, test_unknown_error_name_keeps_code);
	tcase_add_test(tc, test_strict_results);
	tcase_add_test(tc, test_other_protocol_version);
	tcase_add_test(tc, test_error_notification_closes);
	tcase_add_test(tc, test_daemon_closes);
	tcase_add_test(tc, test_env_token_in_hello);
	tcase_add_test(tc, test_env_token_empty_or_unset);
	tcase_add_test(tc, test_explicit_token);
	tcase_add_test(tc, test_token_length);
	tcase_add_test(tc, test_token_denied);
	tcase_add_test(tc, test_agent_role_names_its_agent);
	tcase_add_test(tc, test_token_calls_need_their_output);
	tcase_add_test(tc, test_token_results);
	suite_add_tcase(s, tc);
	client_roles_tcases(s);
	return s;
}
