/*
 * suites.h: the Check suites. Each tests/check_<module>.c exports one suite
 * constructor; the unit runner (tests/check_main.c) runs the first five,
 * check_integration runs client_suite beside its daemon tests.
 *
 * A suite too large for one file keeps one name (what CK_RUN_SUITE selects)
 * and is built by its main file, which calls the *_tcases functions of the
 * files beside it; each adds that file's test cases to the suite.
 */
#ifndef SC_TESTS_SUITES_H
#define SC_TESTS_SUITES_H

#include <check.h>

Suite *money_suite(void);  /* tests/check_money.c: money, error names, name tables */
Suite *frame_suite(void);  /* tests/check_frame.c: msgpack-rpc framing and limits */
Suite *server_suite(void); /* the daemon's server and dispatch */
Suite *shm_suite(void);    /* tests/check_shm.c: the shared-memory state segment */
Suite *snap_suite(void);   /* tests/check_snap.c: copy-on-write views of the segment */
Suite *gate_suite(void);   /* tests/check_gate.c: the gating engine, the decision of a check */
void gate_holds_tcases(Suite *s);  /* tests/check_gate_holds.c: holds, idempotency, expiry */
void gate_bounds_tcases(Suite *s); /* tests/check_gate_bounds.c: validation, capacities, overflow */
void gate_sweep_tcases(Suite *s);  /* tests/check_gate_sweep.c: the random invariant sweep */
Suite *score_suite(void);  /* tests/check_score.c: kredit score, status escalation, anomalies */
Suite *task_suite(void);   /* tests/check_task.c: per-task usage cap */
Suite *wallet_suite(void); /* tests/check_wallet.c: transfers, adjustments, balance_after */
Suite *period_suite(void); /* tests/check_period.c: calendars, budget periods, sub-budgets */
Suite *tz_suite(void);     /* tests/check_tz.c: time zones and the local calendar */
Suite *pricing_suite(void); /* tests/check_pricing.c: rate versions, costs from token counts */
Suite *pricing_daemon_suite(void); /* tests/check_pricing_daemon.c: pricing through the daemon */
Suite *alerts_suite(void); /* tests/check_alerts.c: alerts raised by the gate */
Suite *rules_suite(void);  /* tests/check_rules.c: rule lists and the shared rule texts */
Suite *client_suite(void); /* tests/check_client.c: libsidecard against a fake daemon */
void client_roles_tcases(Suite *s); /* tests/check_client_roles.c: tokens, real daemon */
void integration_gate_tcases(Suite *s);       /* tests/check_integration_gate.c: check, report */
void integration_wallets_tcases(Suite *s);    /* tests/check_integration_wallets.c: transfers */
void integration_visibility_tcases(Suite *s); /* tests/check_integration_visibility.c: queries */
void integration_tasks_tcases(Suite *s);      /* tests/check_integration_tasks.c: task caps */
void integration_hostile_tcases(Suite *s);    /* tests/check_integration_hostile.c: raw clients */
void integration_tenants_tcases(Suite *s);    /* tests/check_integration_tenants.c: shared tables */
Suite *batch_suite(void);  /* tests/check_batch.c: pipelined checks and metadata, real daemon */
Suite *peek_suite(void);   /* tests/check_peek.c: sc_peek_* against the real daemon */
/* tests/check_ledger_damage.c: damage against torn tails, quarantine, repair (ledger suite) */
void ledger_damage_tcases(Suite *s);

#endif /* SC_TESTS_SUITES_H */
