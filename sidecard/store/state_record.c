/*
 * state_record.c: the pure functions over one record that the store, the
 * engine and serving all need (state_record.h): the words of actions and
 * match patterns, which the store checks when it writes a rule and uses to
 * find an action's rule, and the hourly rate window the engine counts in.
 *
 * Threads: any; no state of its own. A window is written by the segment's
 * single writer inside its record's seqlock bracket, which the caller holds.
 * Calls only shm's layout and common's limits.
 */
#include <limits.h>
#include <string.h>

#include "sidecard.h"
#include "state_record.h"

/* ------------------------------------------------- actions and patterns */

int state_action_valid(const char *s, size_t len)
{
	if (len == 0 || len > SC_ACTION_MAX)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (s[i] <= ' ' || s[i] > '~' || s[i] == '*')
			return 0;
	return 1;
}

int state_pattern_valid(const char *s, size_t len)
{
	if (len > SC_ACTION_MAX)
		return 0;
	if (len == 1 && s[0] == '*')
		return 1;
	if (len >= 3 && s[len - 1] == '*' && s[len - 2] == '.')
		return state_action_valid(s, len - 1);
	return state_action_valid(s, len);
}

int state_pattern_rank(const char *pattern, size_t plen, const char *action, size_t alen)
{
	if (plen == 1 && pattern[0] == '*')
		return 0;
	if (plen >= 2 && pattern[plen - 1] == '*') {
		/* "openai.*": the prefix with its dot, and at least one byte after it */
		size_t pre = plen - 1;

		if (alen > pre && memcmp(pattern, action, pre) == 0)
			return 1 + (int)pre;
		return -1;
	}
	return plen == alen && memcmp(pattern, action, alen) == 0 ? INT_MAX : -1;
}

/* ---------------------------------------------------------- rate window */

/* A bucket's width in microseconds. */
#define BUCKET_US (INT64_C(60000000) * SHM_WINDOW_MINUTES)

int32_t state_window_bucket(int64_t now)
{
	return (int32_t)(now / BUCKET_US);
}

static uint32_t bucket_index(int32_t number)
{
	return (uint32_t)number % SHM_WINDOW_BUCKETS;
}

/*
 * The buckets hold numbers (newest - 16, newest]; the window at now is the
 * bucket of now and the 15 before it. A now before the newest bucket (the
 * clock went back by less than a step, or a step's shift rounded up) counts
 * every bucket held, which can only block longer, never less. At most 16
 * additions of one cache line: no running sum to keep consistent.
 */
int64_t state_window_count(const struct shm_window *w, int64_t now)
{
	int32_t lo = state_window_bucket(now) - (SHM_WINDOW_BUCKETS - 1);
	int64_t n = 0;

	if (lo < w->newest - (SHM_WINDOW_BUCKETS - 1))
		lo = w->newest - (SHM_WINDOW_BUCKETS - 1);
	for (int32_t i = lo; i <= w->newest; i++)
		n += w->n[bucket_index(i)];
	return n;
}

void state_window_add(struct shm_window *w, int64_t now)
{
	int32_t b = state_window_bucket(now);

	if (b > w->newest) {
		if (b - w->newest >= SHM_WINDOW_BUCKETS)
			memset(w->n, 0, sizeof(w->n));
		else
			for (int32_t i = w->newest + 1; i <= b; i++)
				w->n[bucket_index(i)] = 0;
		w->newest = b;
	}
	if (w->n[bucket_index(w->newest)] < UINT32_MAX)
		w->n[bucket_index(w->newest)]++;
}

void state_window_shift(struct shm_window *w, int64_t step)
{
	int64_t width = BUCKET_US;
	/* C division truncates toward zero: rounds a step back up too */
	int64_t newest = (int64_t)w->newest + step / width + (step % width > 0);
	uint32_t n[SHM_WINDOW_BUCKETS];

	if (newest > INT32_MAX)
		newest = INT32_MAX;
	if (newest < INT32_MIN + SHM_WINDOW_BUCKETS)
		newest = INT32_MIN + SHM_WINDOW_BUCKETS;
	for (int32_t i = 0; i < SHM_WINDOW_BUCKETS; i++)
		n[bucket_index((int32_t)newest - i)] = w->n[bucket_index(w->newest - i)];
	memcpy(w->n, n, sizeof(n));
	w->newest = (int32_t)newest;
}
