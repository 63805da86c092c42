/*
 * score.c: the kredit score of an agent (300 to 850), the status escalation
 * it drives, and anomaly detection. The formula is PROTOCOL.md's, in integer
 * arithmetic: rates are permille, and every input is a lifetime counter of
 * the agent record, so a ledger replay recomputes exactly the same score.
 *
 * Threads: the daemon's loop thread, inside the gate's change brackets.
 */
#include <stdio.h>

#include "score.h"

/* Penalty weights, in score points for a rate of 100%. */
#define W_FAILURE 250
#define W_OVERRUN 150
#define W_EXPIRY 200
#define W_BLOCKED 100
#define W_ANOMALY 150
#define EXPERIENCE 20 /* outcomes after which the score has its full weight */

static int64_t permille(uint64_t num, uint64_t den)
{
	return den ? (int64_t)(num * 1000 / den) : 0;
}

int gate_score(const struct shm_agent *a)
{
	uint64_t outcomes = a->settled + a->expired;
	int64_t raw, weight, score;

	raw = (850 * 1000 - W_FAILURE * permille(a->failures, a->settled) -
	       W_OVERRUN * permille(a->overruns, a->settled) -
	       W_EXPIRY * permille(a->expired, outcomes) -
	       W_BLOCKED * permille(a->blocked, a->checks) -
	       W_ANOMALY * permille(a->anomalies, a->checks)) /
	      1000;
	weight = outcomes < EXPERIENCE ? (int64_t)outcomes : EXPERIENCE;
	score = STATE_SCORE_START + (raw - STATE_SCORE_START) * weight / EXPERIENCE;
	return score < 300 ? 300 : score > 850 ? 850 : (int)score;
}

/* The status the score calls for, from the current one. */
static int escalate(const struct shm_agent *a, int score)
{
	if (score < GATE_SCORE_FREEZE)
		return SC_STATUS_FROZEN;
	if (a->status == SC_STATUS_ACTIVE && score < GATE_SCORE_THROTTLE)
		return SC_STATUS_THROTTLED;
	if (a->status == SC_STATUS_THROTTLED && a->status_auto && score >= GATE_SCORE_RECOVER)
		return SC_STATUS_ACTIVE;
	return a->status;
}

void gate_rescore(struct state *st, struct shm_agent *a, int64_t now)
{
	int score = gate_score(a), status;

	state_agent_write_begin(a);
	a->score = (int16_t)score;
	status = escalate(a, score);
	if (status != a->status) {
		state_event_add(st, a, SHM_EVENT_STATUS, a->status, status, "score", now);
		a->status = (uint8_t)status;
		a->status_auto = 1;
	}
	shm_agent_write_end(a);
}

int gate_anomaly(const struct shm_agent *a, int64_t estimate, int64_t *ratio)
{
	int64_t average;

	if (a->settled < GATE_ANOMALY_BASELINE || a->charged_total <= 0)
		return GATE_RISK_LOW;
	average = a->charged_total / (int64_t)a->settled;
	if (average <= 0)
		return GATE_RISK_LOW;
	*ratio = estimate / average;
	if (*ratio >= 100)
		return GATE_RISK_HIGH;
	return *ratio >= 10 ? GATE_RISK_MEDIUM : GATE_RISK_LOW;
}
