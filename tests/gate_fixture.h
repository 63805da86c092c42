/*
 * gate_fixture.h: the fixture shared by the gate and score suites
 * (gate_fixture.c): explicit time constants, a fresh state per test, and
 * asserting helpers for checks and reports.
 */
#ifndef SIDECARD_GATE_FIXTURE_H
#define SIDECARD_GATE_FIXTURE_H

#include <stdint.h>

#include "gate.h"
#include "shm.h"
#include "sidecard.h"
#include "state.h"

#define SEC INT64_C(1000000)
#define MIN GATE_US_PER_MINUTE
#define HOUR (60 * MIN)
#define DAY GATE_US_PER_DAY
#define T0 (INT64_C(1795428000) * SEC)   /* Monday 2026-11-23T10:00:00Z */
#define T0_DAY 20780                     /* its UTC day number */
#define T0_MINUTE 29923800               /* its minute number */
#define MIDNIGHT ((T0 / DAY + 1) * DAY)  /* Tuesday 2026-11-24T00:00:00Z */
#define TTL (300 * SEC)
#define ALLOW(agent, action, est, now) allow_(__LINE__, (agent), (action), (est), (now))
#define BLOCK(agent, action, est, now, reason) \
	block_(__LINE__, (agent), (action), (est), (now), (reason))
#define SETTLE(txn, outcome, has, actual, now) \
	settle_(__LINE__, (txn), (outcome), (has), (actual), (now))

extern char g_dir[96];
extern char g_path[128];
extern uint32_t g_org;
extern char g_err[256];
extern struct state *g_st;
extern struct shm *g_m;
extern const struct shm_caps default_caps;

struct state_str str(const char *s);
void open_state(struct shm_caps caps, int64_t ttl, int expiry_charges);
void reattach(void);
void gate_setup(void);
void gate_teardown(void);
struct state_rule_spec rspec(const char *name, const char *match, int64_t max_cost, int64_t daily, int64_t hourly);
uint64_t agent_new(const char *name, enum sc_priority prio, int64_t balance, int64_t max_per_txn, int64_t daily, const struct state_rule_spec *rules, size_t n_rules, uint32_t *slot);
uint64_t simple_agent(const char *name, int64_t balance, uint32_t *slot);
void wallet_update(uint32_t slot, int org, unsigned set, int64_t balance, int64_t max_per_txn, int64_t daily, int64_t debt);
void org_fund(int64_t balance, int64_t max_per_txn, int64_t daily);
void set_status(uint32_t slot, enum sc_status status);
struct shm_wallet *AW(uint32_t slot);
struct shm_wallet *OW(void);
uint32_t rule_slot(uint32_t agent_slot, const char *name);
/* A rule's name and pattern, from the text table. */
const char *rule_name(const struct shm_rule *r);
const char *rule_match(const struct shm_rule *r);
int64_t holds_of_agent(uint32_t agent_slot);
unsigned holds_open(void);
int check_req(uint64_t agent, const char *action, int64_t est, const char *key, int64_t now, struct gate_decision *d);
uint64_t allow_(int line, uint64_t agent, const char *action, int64_t est, int64_t now);
uint64_t block_(int line, uint64_t agent, const char *action, int64_t est, int64_t now, const char *reason);
struct gate_settlement settle_(int line, uint64_t txn, enum sc_outcome outcome, int has, int64_t actual, int64_t now);
int report_rc(uint64_t txn, enum sc_outcome outcome, int has, int64_t actual, int64_t now);
int has_warning(const struct gate_decision *d, const char *w);

#endif /* SIDECARD_GATE_FIXTURE_H */
