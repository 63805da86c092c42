/*
 * integration_fixture.h: what the files of the "integration" suite
 * (check_integration*.c) share: the test's daemon and its connection, the
 * setup that starts them, the test cases that stop them, and the asserting
 * helpers the tests are written with. Built on client_fixture.h: one daemon
 * on a fresh temporary directory per forked test, bounded by an alarm.
 *
 * Every helper asserts with Check on the connection c, so it may only run
 * in the test's main thread, between the setup and the teardown of a test
 * case made by daemon_tcase. Threads a test adds use their own connections
 * and none of these.
 */
#ifndef SC_TESTS_INTEGRATION_FIXTURE_H
#define SC_TESTS_INTEGRATION_FIXTURE_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "client_fixture.h"
#include "daemon.h"
#include "sidecard.h"
#include "testutil.h"

#define USD(x) ((sc_micros)((x) * SC_MICROS_PER_USD))
#define CENTS(x) ((sc_micros)(x) * 10000)
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
#define TEST_TIMEOUT_S 60

/* The running test's daemon and its connection, named as in every suite that drives one. */
extern struct test_daemon d;
extern sc_client *c;

/* Asserts that a library call succeeded, showing the daemon's message if not. */
#define OK(call) TEST_OK(c, call)

/* Asserts that a call failed with `code` and that the message mentions `word`. */
#define FAILS(call, code, word)                                                          \
	do {                                                                             \
		int rc_ = (call);                                                        \
		ck_assert_msg(rc_ == (code), "%s: expected %s, got %s (%s)", #call,      \
		              sc_err_name(code), sc_err_name(rc_), sc_last_error(c));    \
		ck_assert_msg(strstr(sc_last_error(c), (word)) != NULL,                  \
		              "%s: message '%s' does not name '%s'", #call,              \
		              sc_last_error(c), (word));                                 \
	} while (0)

/*
 * Starts d with the extra arguments (NULL-terminated, or NULL; they must
 * outlive the test) and connects c, under an alarm of TEST_TIMEOUT_S.
 */
void start(const char *const *extra);

/* Closes c and asserts that d stops cleanly. */
void stop(void);

/* The setup of a daemon with default options. */
void setup_default(void);

/*
 * A TCase named name, added to s, whose tests each run in a temporary
 * directory against the daemon setup starts, stopped by stop(); timeout in
 * seconds.
 */
TCase *daemon_tcase(Suite *s, const char *name, void (*setup)(void), unsigned timeout);

/* Creates an org named name; its id. */
uint64_t new_org(const char *name);

/* An agent in the org named org, with a balance (budget = balance) and optional limits. */
uint64_t new_agent_in(const char *org, const char *name, enum sc_priority p,
                      sc_micros balance, sc_micros max_per_txn, sc_micros daily,
                      const sc_rule *rules, size_t n_rules);

/* A normal-priority agent with this balance and no limits, alone in a new org. */
uint64_t new_agent(sc_micros balance);

/* The decision of a check of cost for action, with an idempotency key or NULL. */
sc_decision check_as(uint64_t agent, const char *action, sc_micros cost, const char *key);

/* The decision of a check of cost for llm.call that names task. */
sc_decision check_task(uint64_t agent, sc_micros cost, const char *task);

/* A check that must be allowed; its transaction id. */
uint64_t allow(uint64_t agent, const char *action, sc_micros cost);

/* A check that must be blocked with this reason, not replayed. */
void blocked(uint64_t agent, const char *action, sc_micros cost, const char *reason);

/* The agent's wallet. */
sc_wallet wallet(uint64_t agent);

/* Reports txn, asserting the settlement names it and its outcome. */
sc_settlement report(uint64_t txn, enum sc_outcome o, int has_actual, sc_micros actual);

/* Whether the decision carries the warning w. */
int has_warning(const sc_decision *dec, const char *w);

/* The agent's wallet once its holds are gone, or after 5 s with them. */
sc_wallet wait_no_holds(uint64_t agent);

#endif /* SC_TESTS_INTEGRATION_FIXTURE_H */
