/*
 * checkpoint.h: snapshots of the state (format in checkpoint.c) that bound
 * how much of the ledger recovery replays.
 */
#ifndef SIDECARD_CHECKPOINT_H
#define SIDECARD_CHECKPOINT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "shm.h"

struct checkpointer;

/*
 * dir is created if missing. done(arg, seq, rc) runs on the loop thread
 * after each snapshot. commit_lock is the lock every writer of the state
 * holds (the snapshot's view is freed under it).
 */
int checkpoint_init(struct checkpointer **out, uv_loop_t *loop, const char *dir,
                    pthread_mutex_t *commit_lock, void (*done)(void *arg, uint64_t seq, int rc),
                    void *arg);
/*
 * Snapshots m, whose state is exactly the ledger up to seq (loop thread,
 * under the commit lock): it begins a copy-on-write view of the segment
 * (shm_snap_begin, no record is copied here), and a pool thread copies the
 * used records as they were and writes the file while changes go on.
 * SC_EUNAVAILABLE while checkpoint_busy(). A failure, here or in the
 * background, is logged (once until a snapshot succeeds again) and delays
 * the next attempt (checkpoint.c).
 */
int checkpoint_start(struct checkpointer *cp, struct shm *m, uint64_t seq, int64_t now);
/*
 * 1 while a snapshot is being written, or a failed one waits for its retry
 * (checkpoint_start would refuse); loop thread.
 */
int checkpoint_busy(const struct checkpointer *cp);
/* Failed attempts since the last snapshot that succeeded (0: healthy); loop thread. */
uint64_t checkpoint_failures(const struct checkpointer *cp);
/* Calls closed(arg) once no snapshot is being written. */
void checkpoint_close(struct checkpointer *cp, void (*closed)(void *arg), void *arg);
void checkpoint_free(struct checkpointer *cp);

/* Removes every snapshot older than seq. */
void checkpoint_prune(const char *dir, uint64_t seq);

void checkpoint_path(const char *dir, uint64_t seq, char *buf, size_t len);
/* The newest snapshot in dir with a sequence <= max_seq: 0 or SC_ENOTFOUND. */
int checkpoint_find(const char *dir, uint64_t max_seq, uint64_t *seq);
/*
 * Creates a new state segment at shm_path (replacing any file there) from
 * the snapshot of sequence seq in dir. 0, or an error naming the file.
 */
int checkpoint_restore(const char *dir, uint64_t seq, const char *shm_path, char *err,
                       size_t errlen);

#endif /* SIDECARD_CHECKPOINT_H */
