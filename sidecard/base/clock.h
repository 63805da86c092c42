/*
 * clock.h: the daemon's clock (docs/DESIGN.md, "Time"). A wall-clock
 * reading in microseconds since the Unix epoch, UTC, that advances with the
 * monotonic clock (--time-scale times faster) and follows the system's wall
 * clock (sampled at most once a millisecond); a step of the wall clock
 * (more than CLOCK_STEP_US away from what the elapsed time predicts) is
 * logged once and kept until the state takes it (clock_now_step), so that
 * the state can record it and keep durations whole across it.
 *
 * Threads: any; the readings are serialized by the clock's own mutex,
 * which is a leaf (taken under the commit lock, never around it).
 */
#ifndef SIDECARD_CLOCK_H
#define SIDECARD_CLOCK_H

#include <stdint.h>

/* A jump of the wall clock past this, either way, is a step; less is drift. */
#define CLOCK_STEP_US 2000000

/*
 * Starts the clock at the wall clock's reading, running scale times faster
 * than real time from now on (1: real time). Once, on the main thread,
 * before any other thread reads the clock.
 */
void clock_start(unsigned scale);

/*
 * The daemon's time. It never goes back, except by a step of the wall
 * clock back, which it follows (and reports through clock_now_step).
 */
int64_t clock_now(void);

/*
 * clock_now, and in *step the sum of the wall-clock steps seen since the
 * last call of clock_now_step (0: none), which it hands over: the caller
 * applies and records them. The time returned already includes them.
 */
int64_t clock_now_step(int64_t *step);

/*
 * At start-up, with the time of the ledger's last record (0: none): a wall
 * clock more than CLOCK_STEP_US behind it stepped back while the daemon was
 * stopped. That is logged and handed over like any other step, measured
 * from the record (the time stopped counts as none). A clock ahead of it
 * is not a step: the daemon may have been stopped that long.
 */
void clock_resume(int64_t last_record);

/* Microseconds of the daemon's time since clock_start, elapsed: no step counts. */
int64_t clock_uptime(void);

/* A wait of wait_us on the daemon's clock in real milliseconds, rounded up. */
int64_t clock_real_wait_ms(int64_t wait_us);

#endif /* SIDECARD_CLOCK_H */
