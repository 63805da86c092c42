/*
 * check_client_roles.c: libsidecard's side of roles, through the real
 * daemon (client suite, "roles" case): the token agents.create shows, a
 * connection bound by it (sc_connect_token, or sc_connect with
 * SIDECARD_TOKEN) that may gate its agent but not raise its balance, a
 * rotation that refuses the old token at once, on a new connection and on
 * one already bound by it, and a reader token that reads but changes
 * nothing, listed without its secret and refused once revoked, there too
 * on the connection that presented it. What the
 * daemon allows each role is the daemon's tests' subject; these follow the
 * path a library user takes, with the codes and accessors the library gives.
 *
 * The test runs as the daemon's own user, its administrator: a token is what
 * makes a connection someone else.
 *
 * Threads: the test's main thread (the daemon is tied to it, daemon.h).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "client_fixture.h"
#include "suites.h"
#include "testutil.h"

static struct test_daemon d;
static sc_client *c;

/* "<prefix><id>_" followed by 43 base64url characters, and nothing else. */
static void assert_token_form(const char *token, const char *prefix, uint64_t id)
{
	char head[64];
	size_t n = (size_t)snprintf(head, sizeof(head), "%s%" PRIu64 "_", prefix, id);

	ck_assert_msg(strncmp(token, head, n) == 0, "token '%s' does not start with %s", token,
	              head);
	ck_assert_uint_eq(strlen(token), n + 43);
	ck_assert_uint_eq(strspn(token + n, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	                                    "0123456789-_"),
	                  43);
}

/* An agent of its own org with $10, and its token. */
static sc_agent agent_with_token(const char *name)
{
	sc_wallet_update w = { .set = SC_WALLET_SET_BALANCE, .balance = 10 * SC_MICROS_PER_USD };
	sc_agent a;

	TEST_OK(c, sc_agents_create(c, "roles", name, SC_PRIORITY_NORMAL, &w, NULL, 0, &a));
	assert_token_form(a.token, "sca_", a.id);
	return a;
}

/* A connection presenting token (NULL: none), asserting it is made. */
static sc_client *connect_as(const char *token)
{
	char err[512];
	sc_client *cl;
	int rc = sc_connect_token(d.socket, token, &cl, err, sizeof(err));

	ck_assert_msg(rc == 0, "connect with %s: %s: %s", token ? token : "no token",
	              sc_err_name(rc), err);
	return cl;
}

/* A connection presenting token, asserting the daemon refuses it, naming the token. */
static void refused(const char *token)
{
	sc_client *cl = (sc_client *)&cl;
	char err[512];

	ck_assert_int_eq(sc_connect_token(d.socket, token, &cl, err, sizeof(err)), SC_EDENIED);
	ck_assert_ptr_null(cl);
	ck_assert_msg(strstr(err, "token") != NULL, "refused without naming the token: %s", err);
}

static int check_as(sc_client *cl, uint64_t agent)
{
	sc_check_req req = { .agent_id = agent, .action = "openai.chat",
		             .estimated_cost = SC_MICROS_PER_USD / 100 };
	sc_decision dec;
	int rc = sc_check(cl, &req, &dec);

	if (rc == 0)
		ck_assert_msg(dec.allowed, "blocked: %s", dec.block_reason);
	return rc;
}

START_TEST(test_agent_token)
{
	sc_wallet_update raise = { .set = SC_WALLET_SET_BALANCE, .balance = 1000000 * SC_MICROS_PER_USD };
	sc_agent a, b, got;
	sc_client *ag, *env;
	sc_wallet w;

	ck_assert_str_eq(sc_role(c), "admin");
	ck_assert_uint_eq(sc_bound_agent_id(c), 0);
	TEST_OK(c, sc_orgs_create(c, "roles", NULL));
	a = agent_with_token("hook-bot");
	b = agent_with_token("other-bot");
	/* Shown once: a read of the agent has no token. */
	TEST_OK(c, sc_agents_get(c, a.id, &got));
	ck_assert_str_eq(got.token, "");

	ag = connect_as(a.token);
	ck_assert_str_eq(sc_role(ag), "agent");
	ck_assert_uint_eq(sc_bound_agent_id(ag), a.id);
	ck_assert_int_eq(check_as(ag, a.id), 0);
	ck_assert_int_eq(sc_wallets_update(ag, a.id, &raise, &w), SC_EDENIED);
	ck_assert_ptr_nonnull(strstr(sc_last_error(ag), "admin"));
	ck_assert_int_eq(check_as(ag, b.id), SC_EDENIED);
	/* Still usable after a refusal. */
	TEST_OK(ag, sc_wallets_get(ag, a.id, &w));
	ck_assert_int_eq(w.balance, 10 * SC_MICROS_PER_USD);

	setenv("SIDECARD_TOKEN", a.token, 1);
	TEST_OK(env, sc_connect(d.socket, &env));
	ck_assert_str_eq(sc_role(env), "agent");
	ck_assert_uint_eq(sc_bound_agent_id(env), a.id);
	sc_close(env);
	/* sc_connect_token(NULL) does not look at the environment: admin again. */
	env = connect_as(NULL);
	ck_assert_str_eq(sc_role(env), "admin");
	sc_close(env);
	unsetenv("SIDECARD_TOKEN");
	sc_close(ag);
}
END_TEST

START_TEST(test_rotated_token_refused)
{
	char fresh[SC_TOKEN_MAX + 1];
	sc_client *ag;
	sc_agent a;

	TEST_OK(c, sc_orgs_create(c, "roles", NULL));
	a = agent_with_token("rotated-bot");
	ag = connect_as(a.token);
	ck_assert_int_eq(check_as(ag, a.id), 0);

	TEST_OK(c, sc_agents_rotate_token(c, a.id, fresh));
	assert_token_form(fresh, "sca_", a.id);
	ck_assert_str_ne(fresh, a.token);
	/* At once: on the connection already bound by the old token, and on a new one. */
	ck_assert_int_eq(check_as(ag, a.id), SC_EDENIED);
	refused(a.token);
	sc_close(ag);

	ag = connect_as(fresh);
	ck_assert_uint_eq(sc_bound_agent_id(ag), a.id);
	ck_assert_int_eq(check_as(ag, a.id), 0);
	sc_close(ag);
}
END_TEST

START_TEST(test_reader_token)
{
	sc_wallet_update raise = { .set = SC_WALLET_SET_BALANCE, .balance = 1000 * SC_MICROS_PER_USD };
	sc_access_token t, unnamed, *list;
	sc_client *rd;
	sc_agent a;
	sc_org *orgs;
	sc_wallet w;
	size_t n;

	TEST_OK(c, sc_orgs_create(c, "roles", NULL));
	a = agent_with_token("watched-bot");
	TEST_OK(c, sc_tokens_create(c, "reader", "dashboard", &t));
	ck_assert_str_eq(t.role, "reader");
	ck_assert_str_eq(t.name, "dashboard");
	ck_assert_int_gt(t.created_at, 0);
	assert_token_form(t.token, "scr_", t.token_id);
	TEST_OK(c, sc_tokens_create(c, "reader", NULL, &unnamed));
	ck_assert_str_eq(unnamed.name, "");
	ck_assert_uint_gt(unnamed.token_id, t.token_id);

	TEST_OK(c, sc_tokens_list(c, &list, &n));
	ck_assert_uint_eq(n, 2);
	ck_assert_uint_eq(list[0].token_id, t.token_id);
	ck_assert_str_eq(list[0].name, "dashboard");
	ck_assert_str_eq(list[0].token, "");
	ck_assert_str_eq(list[1].token, "");
	sc_access_tokens_free(list);

	rd = connect_as(t.token);
	ck_assert_str_eq(sc_role(rd), "reader");
	ck_assert_uint_eq(sc_token_id(rd), t.token_id);
	ck_assert_uint_eq(sc_bound_agent_id(rd), 0);
	TEST_OK(rd, sc_wallets_get(rd, a.id, &w));
	TEST_OK(rd, sc_orgs_list(rd, &orgs, &n));
	sc_orgs_free(orgs);
	ck_assert_int_eq(sc_wallets_update(rd, a.id, &raise, &w), SC_EDENIED);
	ck_assert_int_eq(sc_orgs_create(rd, "readers-org", NULL), SC_EDENIED);
	ck_assert_int_eq(check_as(rd, a.id), SC_EDENIED);
	ck_assert_int_eq(sc_tokens_create(rd, "reader", NULL, &unnamed), SC_EDENIED);

	TEST_OK(c, sc_tokens_revoke(c, t.token_id));
	ck_assert_int_eq(sc_tokens_revoke(c, t.token_id), SC_ENOTFOUND);
	/* At once: on the connection that presented it, and on a new one. */
	ck_assert_int_eq(sc_wallets_get(rd, a.id, &w), SC_EDENIED);
	refused(t.token);
	TEST_OK(c, sc_tokens_list(c, &list, &n));
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(list[0].token_id, unnamed.token_id);
	sc_access_tokens_free(list);
	sc_close(rd);
}
END_TEST

static void setup(void)
{
	test_client_start(&d, &c, NULL, 30);
}

static void teardown(void)
{
	test_client_stop(&d, &c);
}

void client_roles_tcases(Suite *s)
{
	TCase *tc = test_add_tcase_tmp(s, "roles", setup, teardown, 30);

	tcase_add_test(tc, test_agent_token);
	tcase_add_test(tc, test_rotated_token_refused);
	tcase_add_test(tc, test_reader_token);
}
