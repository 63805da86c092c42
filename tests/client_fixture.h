/*
 * client_fixture.h: the fixture of the Check suites that drive the real
 * daemon through libsidecard (check_integration.c, check_batch.c,
 * check_peek.c, check_pricing_daemon.c, check_workers.c): a daemon on a
 * fresh temporary directory (tests/daemon.h), one connection to it, and an
 * alarm that ends a test whose daemon hangs; and the look-ups those suites
 * share. tests/daemon.c stays Check-free for the crash harness and the
 * benchmarks; this file is its Check side.
 *
 * Each suite keeps its own daemon and connection (file-scope statics, one
 * per forked test) and hands them in, so suites linked into one program
 * never share state.
 *
 * Threads: the test's main thread (the daemon is tied to it, daemon.h).
 */
#ifndef SC_TESTS_CLIENT_FIXTURE_H
#define SC_TESTS_CLIENT_FIXTURE_H

#include <stdint.h>

#include "daemon.h"
#include "sidecard.h"

/*
 * Arms an alarm of timeout_s seconds (test_daemon_timeout), starts the
 * daemon with the extra arguments (NULL-terminated, or NULL; they must
 * outlive d) and connects *c to it, asserting each step.
 */
void test_client_start(struct test_daemon *d, sc_client **c, const char *const *extra,
                       unsigned timeout_s);

/*
 * Closes *c (NULL after), asserts that the daemon stops cleanly (every test
 * ends by proving it; a daemon the test already stopped counts as clean)
 * and disarms the alarm.
 */
void test_client_stop(struct test_daemon *d, sc_client **c);

/*
 * Stops the daemon, deletes its state segment so that the restart must
 * rebuild the state (from the snapshot and the ledger), restarts it and
 * connects *c again.
 */
void test_client_rebuild(struct test_daemon *d, sc_client **c);

/* A check of estimate for action, asserting it is allowed; its transaction id. */
uint64_t test_allow(sc_client *c, uint64_t agent, const char *action, sc_micros estimate);

/*
 * The transaction with id `id`, from transactions.list of its agent,
 * asserting that it is among the agent's latest 1000.
 */
sc_transaction test_transaction(sc_client *c, uint64_t agent, uint64_t id);

#endif /* SC_TESTS_CLIENT_FIXTURE_H */
