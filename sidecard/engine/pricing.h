/*
 * pricing.h: versioned rates per model, and the cost of a report priced
 * from token counts (pricing.c).
 *
 * Thread contract: the daemon's loop thread only, like the state it writes.
 *
 * Errors: functions return 0 or a negative SC_E* code and, on error, write a
 * message naming the field or limit into err (errlen bytes).
 */
#ifndef SIDECARD_PRICING_H
#define SIDECARD_PRICING_H

#include <stddef.h>
#include <stdint.h>

#include "shm.h"
#include "state.h"

/* The three kinds of tokens, in the order of shm_txn.tokens. */
enum { PRICING_INPUT, PRICING_OUTPUT, PRICING_CACHED_INPUT, PRICING_KINDS };

/* Micro-dollars per million tokens of each kind. */
struct pricing_rate {
	int64_t per_million[PRICING_KINDS];
};

/* A report's pricing: what pricing_price found and what the transaction records. */
struct pricing_charge {
	char model[SC_NAME_MAX + 1];
	uint32_t rate_version;
	uint64_t tokens[PRICING_KINDS];
	int64_t cost;
};

/* 1 if s is a valid model name: 1..63 printable ASCII bytes, no space, no '*'. */
int pricing_model_valid(const char *s, size_t len);

/*
 * Adds the model's next rate version (its highest + 1, or 1), in force from
 * effective_from, created at now. Rates are >= 0. SC_ELIMIT when the table
 * of versions (daemon option --prices) is full.
 */
int pricing_add(struct state *st, struct state_str model, const struct pricing_rate *r,
                int64_t effective_from, int64_t now, uint32_t *slot, char *err, size_t errlen);

/*
 * The version of the model in force at `at`: the greatest effective_from
 * <= at, the higher version on a tie. SC_ENOTFOUND ("model: no rate for 'x'
 * in force at <time>") if there is none.
 */
int pricing_at(struct state *st, struct state_str model, int64_t at, uint32_t *slot, char *err,
               size_t errlen);

/*
 * cost = ceil(sum(tokens[k] * rate[k]) / 1,000,000) micros, exactly (128-bit
 * intermediates; tokens <= INT64_MAX). SC_ERANGE if it exceeds INT64_MAX.
 */
int pricing_cost(const struct shm_price *p, const uint64_t tokens[PRICING_KINDS], int64_t *cost,
                 char *err, size_t errlen);

/*
 * Prices tokens of model with the version in force at `at` into out (model,
 * version, tokens, cost). SC_EINVAL for a malformed model name, SC_ENOTFOUND,
 * SC_ERANGE.
 */
int pricing_price(struct state *st, struct state_str model, const uint64_t tokens[PRICING_KINDS],
                  int64_t at, struct pricing_charge *out, char *err, size_t errlen);

/*
 * The slots of every version (model NULL) or of one model's, ordered by
 * model then version, in a malloc'd array (*slots, freed by the caller).
 * SC_ENOTFOUND for a model without versions; -ENOMEM.
 */
int pricing_list(struct state *st, const struct state_str *model, uint32_t **slots, uint32_t *n,
                 char *err, size_t errlen);

#endif /* SIDECARD_PRICING_H */
