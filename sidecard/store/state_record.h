/*
 * state_record.h: pure functions over one record of the state segment, below
 * the engine so that the store, the engine and serving share one definition:
 * a wallet's available funds, the hourly rate window (struct shm_window, shm.h
 * RATE WINDOWS), and the words of actions and match patterns a rule record
 * holds. They read or write only the record they are given.
 *
 * Thread contract: any thread for the readers; a window is changed by the
 * segment's single writer, inside its record's seqlock bracket.
 */
#ifndef SIDECARD_STATE_RECORD_H
#define SIDECARD_STATE_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "shm.h"

/* The score a new agent record starts with (PROTOCOL.md, "Kredit score and status"). */
#define STATE_SCORE_START 650

/*
 * A wallet's balance minus its holds (negative only for a critical agent),
 * INT64_MIN where the difference would overflow. Inline: every check reads
 * it several times.
 */
static inline int64_t state_wallet_available(const struct shm_wallet *w)
{
	int64_t a;

	return __builtin_sub_overflow(w->balance, w->held, &a) ? INT64_MIN : a;
}

/* 1 if s is a valid action: 1..127 printable ASCII bytes, no space, no '*'. */
int state_action_valid(const char *s, size_t len);
/* 1 if s is a valid match pattern: "*", "<action>.*" or an exact action. */
int state_pattern_valid(const char *s, size_t len);
/*
 * How specifically pattern matches action: -1 no match, 0 for "*", 1 + the
 * prefix length for "prefix.*", INT_MAX for an exact match.
 */
int state_pattern_rank(const char *pattern, size_t plen, const char *action, size_t alen);

/*
 * A sliding hour of four-minute buckets: a rule's allowed calls and an
 * agent's velocity. state_window_bucket is the bucket number of a time;
 * state_window_count is what the window holds at now (the bucket of now and
 * the 15 before it, 60 to 64 minutes); state_window_add counts one at now,
 * clearing the buckets it moves past.
 */
int32_t state_window_bucket(int64_t now);
int64_t state_window_count(const struct shm_window *w, int64_t now);
void state_window_add(struct shm_window *w, int64_t now);
/*
 * Moves a window's buckets by a step of the clock, rounded up to whole
 * buckets: it frees no earlier than the elapsed time says, at most one
 * bucket later.
 */
void state_window_shift(struct shm_window *w, int64_t step);

#endif /* SIDECARD_STATE_RECORD_H */
