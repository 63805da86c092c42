/*
 * ledger_writer.h: the daemon's group-committing ledger writer (ledger.c).
 * Loop thread only, unless cfg.lock is given (below). Format and reader:
 * ledger.h.
 */
#ifndef SIDECARD_LEDGER_WRITER_H
#define SIDECARD_LEDGER_WRITER_H

#include <pthread.h>
#include <stdint.h>

#include <msgpack.h>
#include <uv.h>

#include "ledger.h"

struct ledger;

struct ledger_config {
	const char *dir;         /* the ledger directory (created if missing) */
	int strict;              /* 1: flush at the end of every loop iteration */
	uint64_t interval_ms;    /* async: longest wait before a flush */
	size_t batch_bytes;      /* async: flush at once past this many pending bytes */
	uint64_t segment_bytes;  /* rotate segments past this size */
	int64_t (*now)(void);    /* clock for segment headers */
	/*
	 * NULL: every call on the loop thread. Otherwise records may be
	 * appended from any thread holding this lock (ledger_begin through
	 * ledger_commit), which must also be held around ledger_failure and
	 * ledger_get_stats on any thread; the writer takes it itself on the
	 * loop thread, so the loop thread must not hold it when control
	 * returns to the loop.
	 */
	pthread_mutex_t *lock;
};

struct ledger_stats {
	uint64_t last_seq;       /* last record appended */
	uint64_t durable_seq;    /* last record on disk */
	uint64_t syncs;          /* batches written and fdatasync'ed */
	uint64_t records_synced; /* records in those batches */
	uint64_t failures;       /* failed write or sync attempts */
	uint64_t segments;       /* segment files written to or created */
	int failed;              /* the last attempt failed */
	uint64_t buffer_bytes;   /* capacity of the record buffers (pending and batch) */
};

/*
 * Opens the writer after a scan of the directory (tail: where the valid
 * data ends; it must have been repaired). Appends continue the last segment,
 * or a new segment is created. durable(arg, seq) is called on the loop
 * thread whenever more records are on disk.
 */
int ledger_open(struct ledger **out, uv_loop_t *loop, const struct ledger_config *cfg,
                const struct ledger_scan_result *tail, void (*durable)(void *arg, uint64_t seq),
                void *arg, char *err, size_t errlen);

/*
 * Appends one record: ledger_begin returns a packer for its body (exactly
 * one msgpack object), ledger_commit seals it and returns its sequence
 * number. Nothing else may be appended in between.
 */
msgpack_packer *ledger_begin(struct ledger *l, unsigned type, int64_t time);
uint64_t ledger_commit(struct ledger *l);

/* NULL while writes succeed; otherwise why changes must be refused. */
const char *ledger_failure(const struct ledger *l);
uint64_t ledger_durable(const struct ledger *l);
void ledger_get_stats(const struct ledger *l, struct ledger_stats *st);

/* Writes what is pending, closes the handles, then calls closed(arg). */
void ledger_close(struct ledger *l, void (*closed)(void *arg), void *arg);
/* Frees a closed writer. */
void ledger_free(struct ledger *l);

#endif /* SIDECARD_LEDGER_WRITER_H */
