/*
 * score.h: the kredit score of an agent, the status escalation it drives and
 * anomaly detection (score.c). A new agent's score is the store's
 * STATE_SCORE_START, which the formula starts from.
 *
 * Thread contract: the daemon's loop thread only, inside the gate's change
 * brackets (gate_rescore writes the agent record and its events).
 */
#ifndef SIDECARD_SCORE_H
#define SIDECARD_SCORE_H

#include <stdint.h>

#include "gate_base.h"

#define GATE_SCORE_BLOCK 400    /* below: score_too_low */
#define GATE_SCORE_THROTTLE 500 /* below: an active agent is throttled */
#define GATE_SCORE_RECOVER 550  /* at or above: an automatically throttled agent is active again */
#define GATE_SCORE_FREEZE 350   /* below: frozen */
#define GATE_ANOMALY_BASELINE 5 /* settled transactions before anomalies are judged */

/* The score PROTOCOL.md defines, from the agent's lifetime counters. */
int gate_score(const struct shm_agent *a);
/* Stores a's new score and applies the status it calls for, with an event. */
void gate_rescore(struct state *st, struct shm_agent *a, int64_t now);
/* The risk an estimate carries against a's average cost; *ratio is set when judged. */
int gate_anomaly(const struct shm_agent *a, int64_t estimate, int64_t *ratio);

#endif /* SIDECARD_SCORE_H */
