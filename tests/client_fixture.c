/*
 * client_fixture.c: a daemon and one libsidecard connection per Check test
 * (see client_fixture.h for the contract).
 *
 * Threads: the test's main thread. Ownership: the caller's test_daemon and
 * sc_client pointer; this file keeps no state of its own.
 */
#include <inttypes.h>
#include <signal.h>
#include <unistd.h>

#include "client_fixture.h"
#include "testutil.h"

void test_client_start(struct test_daemon *d, sc_client **c, const char *const *extra,
                       unsigned timeout_s)
{
	test_daemon_timeout(timeout_s);
	ck_assert_int_eq(test_daemon_start(d, extra), 0);
	TEST_OK(*c, sc_connect(d->socket, c));
}

void test_client_stop(struct test_daemon *d, sc_client **c)
{
	sc_close(*c);
	*c = NULL;
	ck_assert_int_eq(test_daemon_stop(d), 0);
	test_daemon_timeout(0);
}

void test_client_rebuild(struct test_daemon *d, sc_client **c)
{
	sc_close(*c);
	*c = NULL;
	ck_assert_int_eq(test_daemon_kill(d, SIGTERM), 0);
	ck_assert_int_eq(unlink(d->segment), 0);
	ck_assert_int_eq(test_daemon_restart(d), 0);
	TEST_OK(*c, sc_connect(d->socket, c));
}

uint64_t test_allow(sc_client *c, uint64_t agent, const char *action, sc_micros estimate)
{
	sc_check_req req = { .agent_id = agent, .action = action, .estimated_cost = estimate };
	sc_decision dec;

	TEST_OK(c, sc_check(c, &req, &dec));
	ck_assert_msg(dec.allowed, "%s for %lld blocked: %s", action, (long long)estimate,
	              dec.block_reason);
	return dec.transaction_id;
}

sc_transaction test_transaction(sc_client *c, uint64_t agent, uint64_t id)
{
	sc_transaction *list, t;
	size_t n, i;

	TEST_OK(c, sc_transactions_list(c, agent, -1, 1000, &list, &n));
	for (i = 0; i < n && list[i].id != id; i++)
		;
	ck_assert_msg(i < n, "transaction %" PRIu64 " not listed", id);
	t = list[i];
	sc_transactions_free(list);
	return t;
}
