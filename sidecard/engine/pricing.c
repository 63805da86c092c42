/*
 * pricing.c: the rate table of models, kept in the shared-memory segment's
 * prices table, and the cost of a report priced from token counts.
 *
 * Threads: the daemon's loop thread only (the segment's single writer); the
 * index from model to versions lives in state.c and is rebuilt on attach.
 *
 * DESIGN
 *
 * Every version of every model's rates is one struct shm_price, written once
 * and never changed or removed: a new rate is a new version (the model's
 * highest + 1) with the time it takes effect, so a transaction priced with
 * version N can always be explained, and a ledger replay reproduces the same
 * prices at the same times. The version in force at t is the one with the
 * greatest effective_from <= t (the higher version on a tie); a version may
 * be dated in the future and is then not used until its time comes.
 *
 * Costs are exact: rates are micro-dollars per million tokens and
 *
 *     cost = ceil((in * rate_in + out * rate_out + cached * rate_cached) / 1e6)
 *
 * is computed in unsigned 128-bit integers (each product < 2^126, the sum
 * < 2^128), rounded up so that the daemon never charges less than the rates
 * say. A cost above INT64_MAX is SC_ERANGE, never a wrap.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "state_record.h"
#include "pricing.h"

#define TOKENS_PER_MILLION 1000000u

static const char *const kind_names[PRICING_KINDS] = {"input_tokens", "output_tokens",
                                                      "cached_input_tokens"};

int pricing_model_valid(const char *s, size_t len)
{
	return len <= SC_NAME_MAX && state_action_valid(s, len);
}

static int model_arg(struct state_str model, char *err, size_t errlen)
{
	if (!pricing_model_valid(model.p, model.len)) {
		sc_errorf(err, errlen,
		          "model: must be 1 to %d printable characters without spaces or '*'",
		          SC_NAME_MAX);
		return SC_EINVAL;
	}
	return 0;
}

int pricing_add(struct state *st, struct state_str model, const struct pricing_rate *r,
                int64_t effective_from, int64_t now, uint32_t *slot, char *err, size_t errlen)
{
	struct shm *m = state_shm(st);
	uint32_t newest, s;
	struct shm_price *p;
	int rc;

	if ((rc = model_arg(model, err, errlen)) != 0)
		return rc;
	for (int k = 0; k < PRICING_KINDS; k++) {
		if (r->per_million[k] < 0) {
			sc_errorf(err, errlen, "%s: must not be negative",
			          k == PRICING_INPUT ? "input" : k == PRICING_OUTPUT ? "output"
			                                                           : "cached_input");
			return SC_EINVAL;
		}
	}
	newest = state_price_newest(st, model);
	if (newest != SHM_NONE && m->prices[newest].version == UINT32_MAX) {
		sc_errorf(err, errlen, "model: '%.*s' has the most versions a model can have",
		          (int)model.len, model.p);
		return SC_ELIMIT;
	}
	if (state_price_reserve(st, &s) != 0) {
		sc_errorf(err, errlen, "prices: the table of %u rate versions is full (option --prices)",
		          m->hdr->price_cap);
		return SC_ELIMIT;
	}
	p = &m->prices[s];
	shm_change_begin(m);
	shm_write_begin(&p->rec.seq);
	memset((char *)p + sizeof(p->rec), 0, sizeof(*p) - sizeof(p->rec));
	p->rec.used = 1;
	p->id = m->hdr->next_price_id++;
	p->version = newest == SHM_NONE ? 1 : m->prices[newest].version + 1;
	memcpy(p->model, model.p, model.len);
	p->effective_from = effective_from;
	p->input = r->per_million[PRICING_INPUT];
	p->output = r->per_million[PRICING_OUTPUT];
	p->cached_input = r->per_million[PRICING_CACHED_INPUT];
	p->created_at = now;
	shm_write_end(&p->rec.seq);
	shm_change_end(m);
	if ((rc = state_price_link(st, s)) != 0) {
		sc_errorf(err, errlen, "out of memory indexing the rate of '%s'", p->model);
		return rc;
	}
	*slot = s;
	return 0;
}

/* "2026-11-23T10:00:00Z", with ".000001" before the Z when there are microseconds. */
static void format_time(int64_t t, char *buf, size_t len)
{
	int64_t sec = t / 1000000, us = t % 1000000;
	struct tm tm;
	time_t tt;

	if (us < 0) {
		us += 1000000;
		sec--;
	}
	tt = (time_t)sec;
	if (gmtime_r(&tt, &tm) == NULL) {
		snprintf(buf, len, "%" PRId64, t);
		return;
	}
	strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	if (us)
		snprintf(buf + strlen(buf), len - strlen(buf), ".%06" PRId64, us);
	snprintf(buf + strlen(buf), len - strlen(buf), "Z");
}

int pricing_at(struct state *st, struct state_str model, int64_t at, uint32_t *slot, char *err,
               size_t errlen)
{
	const struct shm_price *prices = state_shm(st)->prices;
	uint32_t best = SHM_NONE;
	char when[48];

	/* Newest first, so the first of equal effective_from seen is the higher version. */
	for (uint32_t s = state_price_newest(st, model); s != SHM_NONE;
	     s = state_price_older(st, s))
		if (prices[s].effective_from <= at &&
		    (best == SHM_NONE || prices[s].effective_from > prices[best].effective_from))
			best = s;
	if (best == SHM_NONE) {
		format_time(at, when, sizeof(when));
		sc_errorf(err, errlen, "model: no rate for '%.*s' in force at %s",
		          (int)(model.len > SC_NAME_MAX ? SC_NAME_MAX : model.len), model.p, when);
		return SC_ENOTFOUND;
	}
	*slot = best;
	return 0;
}

int pricing_cost(const struct shm_price *p, const uint64_t tokens[PRICING_KINDS], int64_t *cost,
                 char *err, size_t errlen)
{
	const int64_t rate[PRICING_KINDS] = {p->input, p->output, p->cached_input};
	unsigned __int128 sum = 0, part, largest = 0;
	int culprit = PRICING_INPUT;

	for (int k = 0; k < PRICING_KINDS; k++) {
		if (tokens[k] > INT64_MAX || rate[k] < 0) {
			sc_errorf(err, errlen, "%s: must be 0 to %" PRId64, kind_names[k], INT64_MAX);
			return SC_EINVAL;
		}
		part = (unsigned __int128)tokens[k] * (uint64_t)rate[k];
		if (part > largest) {
			largest = part;
			culprit = k;
		}
		sum += part;
	}
	sum = sum / TOKENS_PER_MILLION + (sum % TOKENS_PER_MILLION != 0);
	if (sum > INT64_MAX) {
		/* The message names the count that weighs most in the cost. */
		sc_errorf(err, errlen,
		          "%s: the cost of these tokens at version %u of '%s' exceeds %" PRId64
		          " micros",
		          kind_names[culprit], p->version, p->model, INT64_MAX);
		return SC_ERANGE;
	}
	*cost = (int64_t)sum;
	return 0;
}

int pricing_price(struct state *st, struct state_str model, const uint64_t tokens[PRICING_KINDS],
                  int64_t at, struct pricing_charge *out, char *err, size_t errlen)
{
	const struct shm_price *p;
	uint32_t slot;
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = model_arg(model, err, errlen)) != 0 ||
	    (rc = pricing_at(st, model, at, &slot, err, errlen)) != 0)
		return rc;
	p = &state_shm(st)->prices[slot];
	if ((rc = pricing_cost(p, tokens, &out->cost, err, errlen)) != 0)
		return rc;
	memcpy(out->model, p->model, sizeof(out->model));
	out->rate_version = p->version;
	memcpy(out->tokens, tokens, sizeof(out->tokens));
	return 0;
}

static const struct shm_price *sort_prices;

static int by_model_version(const void *a, const void *b)
{
	const struct shm_price *x = &sort_prices[*(const uint32_t *)a];
	const struct shm_price *y = &sort_prices[*(const uint32_t *)b];
	int c = strcmp(x->model, y->model);

	if (c != 0)
		return c;
	return x->version < y->version ? -1 : x->version > y->version;
}

int pricing_list(struct state *st, const struct state_str *model, uint32_t **slots, uint32_t *n,
                 char *err, size_t errlen)
{
	const struct shm *m = state_shm(st);
	uint32_t cap = m->hdr->price_cap, k = 0;
	uint32_t *v = malloc((cap ? cap : 1) * sizeof(*v));

	if (!v) {
		sc_errorf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (model) {
		for (uint32_t s = state_price_newest(st, *model); s != SHM_NONE;
		     s = state_price_older(st, s))
			v[k++] = s;
		if (k == 0) {
			free(v);
			sc_errorf(err, errlen, "model: no rates for '%.*s'",
			          (int)(model->len > SC_NAME_MAX ? SC_NAME_MAX : model->len), model->p);
			return SC_ENOTFOUND;
		}
	} else {
		for (uint32_t s = 0; s < cap; s++)
			if (m->prices[s].rec.used)
				v[k++] = s;
	}
	sort_prices = m->prices;
	qsort(v, k, sizeof(*v), by_model_version);
	*slots = v;
	*n = k;
	return 0;
}
