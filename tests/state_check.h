/*
 * state_check.h: the money invariants of a state segment that hold after
 * every change, whatever the changes were (state_check.c). Shared by the
 * gate suite's random sweep (check_gate_sweep.c) and the dispatch fuzz
 * target (fuzz/fuzz_dispatch.c).
 */
#ifndef SIDECARD_TESTS_STATE_CHECK_H
#define SIDECARD_TESTS_STATE_CHECK_H

#include <stddef.h>

#include "shm.h"

/*
 * 0 when every wallet, rule and task holds exactly the sum of its open
 * holds (and every agent and task counts them), every hold belongs to a
 * live agent of its org, no balance, debt, held amount or hold is
 * negative, and an org reserves exactly what its agents' sub-budgets
 * reserve. Otherwise -1 with the first difference found in err.
 */
int state_check_holds(const struct shm *m, char *err, size_t errlen);

#endif /* SIDECARD_TESTS_STATE_CHECK_H */
