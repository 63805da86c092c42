/*
 * clock.c: the daemon's clock (clock.h; the rules are in docs/DESIGN.md,
 * "Time"). Each reading samples CLOCK_MONOTONIC, and CLOCK_REALTIME too
 * once RESAMPLE_US passed since it last did. The wall clock is expected to
 * move as much as the monotonic one did since its last sample; a
 * difference of more than CLOCK_STEP_US is a step (an
 * operator's `date -s`, an NTP step, a VM resumed on another host's time),
 * anything less is drift (NTP slewing, one reading racing another). The
 * daemon's time is the wall clock plus what --time-scale adds (scale - 1
 * times the monotonic time since start-up); drift that would move it back
 * holds it still instead, so that the ledger's times only go back at a
 * step, which the state records as one (dispatch.c, LEDGER_CLOCK).
 *
 * Threads: any. The readings and what they remember are under `lock`, a
 * leaf: callers may hold the commit lock, the clock never takes another.
 */
#include <pthread.h>
#include <time.h>

#include "clock.h"
#include "common.h"
#include "log.h"

/*
 * How long the monotonic clock alone stands for the wall clock: a reading
 * of CLOCK_REALTIME costs as much again as the monotonic one (40-60 ns on
 * the development VM), and a busy daemon reads the clock for every change.
 * Drift over it is at most 0.5 us (NTP slews at most 500 ppm).
 */
#define RESAMPLE_US 1000

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t scale = 1; /* set once by clock_start, before any other thread */
static int64_t mono_start, mono_last, wall_last; /* the previous samples */
static int64_t last;    /* the last time handed out */
static int64_t pending; /* steps not yet taken by clock_now_step */

static int64_t read_us(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void clock_start(unsigned s)
{
	scale = s > 1 ? s : 1;
	mono_start = mono_last = read_us(CLOCK_MONOTONIC);
	wall_last = last = read_us(CLOCK_REALTIME);
	pending = 0;
}

static void log_step(int64_t step, int64_t to, const char *when_seen)
{
	int64_t size = step < 0 ? -step : step;
	time_t secs = (time_t)(to / 1000000);
	char when[32];
	struct tm tm;

	gmtime_r(&secs, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	log_warn("wall clock stepped %s by %lld.%03lld s%s, to %s: holds and hourly windows run on "
	         "elapsed time, the current day's counters carry to the new date",
	         step < 0 ? "back" : "forward", (long long)(size / 1000000),
	         (long long)(size % 1000000 / 1000), when_seen, when);
}

/*
 * Under the lock. Within RESAMPLE_US of the last wall-clock sample the wall
 * clock is taken to have moved as the monotonic one did; past it (or when
 * full), it is read again and compared.
 */
static int64_t sample(int full)
{
	int64_t mono = read_us(CLOCK_MONOTONIC), wall, jump, extra, now, before;

	if (full || mono - mono_last >= RESAMPLE_US) {
		wall = read_us(CLOCK_REALTIME);
		jump = sc_add_sat(wall - wall_last, -(mono - mono_last));
		mono_last = mono;
		wall_last = wall;
	} else {
		wall = wall_last + (mono - mono_last);
		jump = 0;
	}
	if (__builtin_mul_overflow(mono - mono_start, scale - 1, &extra))
		extra = INT64_MAX;
	now = sc_add_sat(wall, extra);
	if (jump > CLOCK_STEP_US || jump < -CLOCK_STEP_US) {
		/* what this reading would have been without the step: never before the last */
		before = sc_add_sat(now, -jump);
		if (before < last)
			before = last;
		if (now != before) {
			log_step(now - before, now, "");
			pending = sc_add_sat(pending, now - before);
		}
		last = now;
	} else if (now > last) {
		last = now;
	}
	return last;
}

int64_t clock_now(void)
{
	int64_t now;

	pthread_mutex_lock(&lock);
	now = sample(0);
	pthread_mutex_unlock(&lock);
	return now;
}

int64_t clock_now_step(int64_t *step)
{
	int64_t now;

	pthread_mutex_lock(&lock);
	now = sample(0);
	*step = pending;
	pending = 0;
	pthread_mutex_unlock(&lock);
	return now;
}

void clock_resume(int64_t last_record)
{
	int64_t now;

	pthread_mutex_lock(&lock);
	now = sample(1);
	if (last_record - now > CLOCK_STEP_US) {
		log_step(now - last_record, now,
		         " while the daemon was stopped (measured from the ledger's last record)");
		pending = sc_add_sat(pending, now - last_record);
	}
	pthread_mutex_unlock(&lock);
}

int64_t clock_uptime(void)
{
	int64_t up;

	if (__builtin_mul_overflow(read_us(CLOCK_MONOTONIC) - mono_start, scale, &up))
		up = INT64_MAX;
	return up;
}

int64_t clock_real_wait_ms(int64_t wait_us)
{
	int64_t unit = 1000 * scale;

	if (wait_us <= 0)
		return 0;
	return wait_us / unit + (wait_us % unit != 0);
}
