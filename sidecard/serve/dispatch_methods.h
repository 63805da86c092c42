/*
 * dispatch_methods.h: the method families of the dispatcher, each a file
 * that calls only down, into the call-context API (call.h) and the engine
 * and store, never into another family or into dispatch.c. dispatch.c, the
 * method table and the request path, reaches the methods through its table
 * and the alert family through the three hooks at the end, which carry a
 * connection's life (close, a token presented, a change that raised an
 * alert) to its subscription. What the daemon's owner calls in the alert
 * and access families (the push, the releases) is declared with struct
 * dispatch, in dispatch_state.h.
 *
 *   dispatch_gate.c     check and report, the hot path
 *   dispatch_agents.c   orgs, agents and the agents' rules
 *   dispatch_wallets.c  a wallet read, updated, transferred between, adjusted
 *   dispatch_period.c   time zones, budget periods, spend and sub-budgets
 *   dispatch_pricing.c  the rate table
 *   dispatch_view.c     the read-only methods over the whole state
 *   dispatch_alerts.c   the alert methods and the push of alerts to subscribers
 *   dispatch_access.c   hello with a token, agent tokens and reader tokens
 *
 * Every method runs under the commit lock (dispatch.c) or in a replay.
 */
#ifndef SIDECARD_DISPATCH_METHODS_H
#define SIDECARD_DISPATCH_METHODS_H

#include "call.h"

/* ---- dispatch_gate.c ---- */
int m_check(struct call *c);
int m_report(struct call *c);

/* ---- dispatch_agents.c ---- */
int m_orgs_create(struct call *c);
int m_orgs_list(struct call *c);
int m_agents_create(struct call *c);
int m_agents_get(struct call *c);
int m_agents_list(struct call *c);
int m_agents_update(struct call *c);
int m_agents_delete(struct call *c);
int m_rules_add(struct call *c);
int m_rules_list(struct call *c);
int m_rules_update(struct call *c);
int m_rules_remove(struct call *c);

/* ---- dispatch_wallets.c ---- */
int m_wallets_get(struct call *c);
int m_wallets_update(struct call *c);
int m_wallets_transfer(struct call *c);
int m_wallets_adjust(struct call *c);

/* ---- dispatch_period.c ---- */
int m_orgs_update(struct call *c);
int m_spend(struct call *c);
int m_wallets_carve(struct call *c);
int m_wallets_release(struct call *c);

/* ---- dispatch_pricing.c ---- */
int m_pricing_set(struct call *c);
int m_pricing_list(struct call *c);
int m_pricing_get(struct call *c);

/* ---- dispatch_view.c ---- */
int m_score(struct call *c);
int m_agents_events(struct call *c);
int m_tasks_usage(struct call *c);
int m_transactions_list(struct call *c);
int m_transactions_summary(struct call *c);
int m_agents_top(struct call *c);
int m_fleet(struct call *c);
int m_stats(struct call *c);

/* ---- dispatch_access.c ---- */
int m_hello(struct call *c);
int m_agents_rotate_token(struct call *c);
int m_tokens_create(struct call *c);
int m_tokens_list(struct call *c);
int m_tokens_revoke(struct call *c);

/* ---- dispatch_alerts.c ---- */
int m_alerts_list(struct call *c);
int m_alerts_subscribe(struct call *c);
int m_alerts_unsubscribe(struct call *c);
/* The hooks of dispatch.c, under the commit lock. */
/* 1 if an alert waits to be pushed to a subscriber (after a change). */
int dispatch_alerts_pending(const struct dispatch *d);
/* A subscribed connection presented a token (c->rebound): it receives as its new role. */
void dispatch_alerts_rebind(struct dispatch *d, uint64_t conn_id, const struct access_peer *p);
/* A connection closed: its subscription ends. */
void dispatch_alerts_forget(struct dispatch *d, uint64_t conn_id);

#endif /* SIDECARD_DISPATCH_METHODS_H */
