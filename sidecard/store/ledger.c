/*
 * ledger.c: the daemon's ledger writer. Records are appended in memory on
 * the loop thread and written with fdatasync one batch at a time (group
 * commit): by libuv's thread pool in async mode, by the loop thread itself
 * in strict mode. When a batch is on disk the owner is told the durable
 * sequence number, which releases strict-mode replies.
 *
 * Threads: every ledger_* function runs on the loop thread, except when
 * the owner gives a lock (cfg.lock): then ledger_begin/ledger_commit,
 * ledger_failure and ledger_get_stats may run on any thread holding it, and
 * the loop thread takes it only to look at and swap the pending records and
 * to publish the outcome of a flush. A commit from another thread wakes the
 * loop (l->wake) when the loop must act: the first record after a swap
 * (strict: start a flush; async: arm the interval) and the one that crosses
 * --commit-batch. The write of a batch (flush_work) runs on a pool thread
 * (async mode) and touches only the segment file, the batch buffer and the
 * rotation fields, which the loop thread leaves alone while l->in_flight is
 * set; in strict mode the loop thread calls it between two polls. The
 * zero-filling (prep_work) runs on another pool thread on its own descriptor
 * and the prep_* fields, which the loop thread leaves alone while
 * l->prep_busy is set; the two write disjoint ranges (start_flush waits
 * rather than overlap).
 *
 * DESIGN
 *
 * Two buffers: `pending` collects new records, `batch` is the one being
 * written. A flush swaps them when no batch is in flight. In async mode it
 * starts after --commit-interval, or at once when the pending bytes reach
 * --commit-batch. In strict mode it starts at the end of a loop iteration
 * that appended something (a uv_check handle), subject to gathering, and
 * runs on the loop thread:
 *
 * Syncing on the loop thread (strict mode; what Redis does with appendfsync
 * always, and a PostgreSQL backend with its own commit). Every strict-mode
 * change waits for the sync anyway, and a batch handed to the pool costs two
 * more thread wake-ups on its way (loop to pool, pool back to the loop),
 * which on a virtual machine with idle cores cost tens of microseconds each:
 * a third of the cycle at 8 clients (docs/PERFORMANCE.md). The price is
 * that requests on the ledger's loop wait while it syncs, reads included,
 * at most one fdatasync (with --workers 2 or more the ledger's loop serves
 * no connection: only the listener waits). Records appended while it
 * syncs, by other workers or by replies it releases, are taken on the
 * loop's next turn: a flush never follows another without a poll between.
 *
 * Gathering (strict mode; PostgreSQL's commit_delay, made adaptive). With
 * one request outstanding per client, starting the next batch the moment a
 * sync returns splits the clients into two cohorts that take turns (while
 * one cohort's batch syncs, the other's requests form the next batch), so
 * each fdatasync carries half of them. So when a sync completes, the
 * writer sets a target: the records it just made durable (their clients
 * were just answered and are likely to send their next change within a
 * round trip) plus those already pending. The next batch starts as soon as
 * that many records are pending, or at a deadline of the last fdatasync's
 * duration, at most GATHER_MAX_NS, whichever comes first: answering 8
 * clients and reading their next requests takes most of a sync on two
 * cores, so half a sync split the cohorts again (6.5 records per sync at 8
 * clients, 7.8 with the whole sync). A lone client reaches its target (1)
 * with its next request, so it never waits; a client that goes quiet delays
 * the others by the deadline at most, and the next target adapts to what
 * arrived. The deadline is a timerfd (uv_poll) because libuv's timers count
 * milliseconds.
 *
 * Preallocation. An fdatasync of an appended file must also commit the
 * file's new size, a journal commit on ext4 that costs as much as the data
 * (docs/PERFORMANCE.md). So segments are zero-filled ahead of the records,
 * by a pool job that runs beside the flushes, one at a time: it keeps at
 * least PREALLOC_CHUNK/2 zero-filled and synced bytes ahead of the records
 * of the current segment (in stretches of PREALLOC_CHUNK, up to
 * --segment-size), and once the current segment is nearly full it prepares
 * the next one as PREPARED_NAME. A flush then overwrites zeros and its
 * fdatasync flushes data only. The zero-filling is written back in steps
 * (sync_file_range) so that a batch's fdatasync finds few of its pages
 * dirty. A flush that would write into the stretch being zero-filled waits
 * for it (only when a burst outruns the preallocation). Writing zeros
 * rather than fallocate(): writing into unwritten extents converts them,
 * which is a metadata change again. The end of the records in such a
 * segment is the first all-zero record header (ledger_format.c).
 *
 * Failure. A failed write or fdatasync keeps the batch, marks the ledger
 * failed (ledger_failure() says why, and the daemon refuses mutations) and
 * retries every RETRY_MS: the whole batch is written again at the durable
 * end of the segment, byte for byte the same, and synced, so a retry never
 * trusts pages whose writeback failed. The first success clears the
 * failure. A failed preallocation only logs: writes go on appending.
 *
 * Truncation. Before each batch the segment's size is compared with the
 * end of its durable records (one fstat). A segment shorter than that was
 * cut by another process: records acknowledged as durable are gone from
 * the disk, and a write at the old end would leave a hole that recovery
 * reads as the end of the ledger. So the batch is not written: the ledger
 * fails, naming the file, and stays failed (each retry finds the same),
 * until an operator restores the file or restarts the daemon, whose
 * recovery then says what it finds.
 *
 * Rotation. A batch that does not fit in the rest of a non-empty segment
 * (--segment-size) starts a new one, named by the batch's first sequence
 * number: the prepared file (or a new one) gets its header written and
 * synced under its temporary name, is renamed into place, and the directory
 * synced, so a segment file is never visible without its header. A batch
 * larger than a segment gets one of its own.
 *
 * Buffer release. The two buffers keep their capacity from batch to
 * batch, so that a steady load appends without reallocating; but a burst
 * (a million agents created at once) would leave them at its peak, hundreds
 * of megabytes, for the daemon's life. So after each successful flush
 * (trim_buffers) a buffer whose capacity is over four times what it needs
 * is reallocated to twice that need. Its need is the largest of what it
 * holds, BUFFER_KEEP, and the batch just written unless nothing is pending
 * (a load that goes on is likely to fill as much again; an idle writer
 * needs nothing). A buffer that grew by doubling to carry batches of a
 * steady size holds at most twice its need, so it is left alone. The batch
 * buffer is the loop thread's once its flush is done; the pending one is
 * trimmed under the owner's lock, which appenders hold from ledger_begin to
 * ledger_commit, so no record is being packed into it.
 *
 * O_DSYNC or pwritev2(RWF_DSYNC) instead of pwrite + fdatasync measured the
 * same on this kind of disk (docs/PERFORMANCE.md); pwrite + fdatasync keeps
 * the write and the sync apart for the failure rules above.
 */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <pthread.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "fsutil.h"
#include "ledger.h"
#include "ledger_writer.h"
#include "log.h"
#include "sidecard.h"

#define RETRY_MS 200
/* Zero-filled ahead of the records: at most this much per preparation. */
#define PREALLOC_CHUNK (UINT64_C(4) << 20)
/* Written back in steps of this size, so that a concurrent fdatasync of a batch finds few of them dirty. */
#define PREALLOC_STEP (256u << 10)
#define PREPARED_NAME "prepared.tmp"
/* Capacity each buffer may keep however little it holds (see DESIGN, buffer release). */
#define BUFFER_KEEP ((size_t)1 << 20)
/* The longest a strict-mode batch waits to gather records (see DESIGN). */
#define GATHER_MAX_NS 200000

struct ledger {
	uv_loop_t *loop;
	struct ledger_config cfg;
	char dir[4096];

	/* the segment being appended; owned by the pool thread while in_flight */
	int fd;
	char file[4200];     /* its path, for errors */
	uint64_t file_size;  /* the end of the durable records in the segment */
	int rotate;          /* this flush starts a new segment (decided by start_flush) */
	int rot_fd;          /* the prepared file it takes, or -1: create one */
	uint64_t rot_zeroed; /* how much of that file is zero-filled */
	int rotated;         /* flush_work switched segments */

	/* PREALLOCATION: loop thread, except that prep_work runs on a pool thread */
	uv_work_t prep;
	int prep_busy;       /* a preparation is running */
	int prep_next;       /* it prepares the next segment, not the current one */
	int prep_fd;         /* its file: a dup of the segment's, or the new one */
	int prep_errno;
	int prep_failed;     /* the last preparation failed (logged once) */
	uint64_t prep_from, prep_to;
	unsigned prep_gen;
	uint64_t zeroed_end; /* the current segment is zero-filled and synced up to here */
	unsigned seg_gen;    /* counts segment switches: tells stale preparations */
	int next_fd;         /* the prepared next segment (PREPARED_NAME), or -1 */
	uint64_t next_zeroed;

	msgpack_sbuffer pending;
	uint64_t pending_first, pending_last;
	size_t pending_records;
	size_t open_record; /* offset of the record being packed, or SIZE_MAX */
	int64_t open_time;
	unsigned open_type;
	msgpack_packer pk;

	msgpack_sbuffer batch;
	uint64_t batch_first, batch_last;
	size_t batch_records;
	uv_work_t work;
	int in_flight;
	int syncing;  /* strict mode: the loop thread is writing a batch itself */
	int work_errno;
	const char *work_what;
	uint64_t work_cut;  /* the segment's size when it was found cut (see DESIGN), else 0 */

	uint64_t durable_seq;
	int failed;
	char failure[512];
	struct ledger_stats stats;

	uv_check_t check;
	uv_timer_t timer;
	/* strict mode: the batch being gathered after a sync (see DESIGN) */
	size_t gather_target;      /* start at once when this many records are pending */
	int64_t gather_deadline;   /* CLOCK_MONOTONIC ns; start at the latest then */
	int64_t sync_ns;           /* how long the last fdatasync took (pool thread) */
	int gather_fd;             /* timerfd for the deadline: libuv timers count ms */
	int gather_armed;
	uv_poll_t gather_poll;
	uv_async_t wake; /* with cfg.lock: commits on other threads wake the loop */
	int timer_armed;
	int due; /* the commit interval has passed since the first pending record */
	int closing;
	int final_attempts; /* flushes tried while closing */
	void (*durable)(void *arg, uint64_t seq);
	void *arg;
	void (*closed)(void *arg);
	void *closed_arg;
	int handles_open;
};

static void maybe_flush(struct ledger *l);
static void arm_gather(struct ledger *l);
static void flush_inline(struct ledger *l);

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The owner's lock around what appenders on other threads share with the loop. */
static void lock(struct ledger *l)
{
	if (l->cfg.lock)
		pthread_mutex_lock(l->cfg.lock);
}

static void unlock(struct ledger *l)
{
	if (l->cfg.lock)
		pthread_mutex_unlock(l->cfg.lock);
}

/* ----------------------------------------------------------- segment files */

static void segment_path(const struct ledger *l, uint64_t first_seq, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%016" PRIx64 ".log", l->dir, first_seq);
}

/*
 * Writes zeros over [from, to) of fd, step by step written back, then syncs
 * them with the file's size. 0 or -errno.
 */
static int zero_fill(int fd, uint64_t from, uint64_t to)
{
	static const char zero[65536];
	uint64_t step_start = from;

	while (from < to) {
		size_t n = to - from < sizeof(zero) ? (size_t)(to - from) : sizeof(zero);
		ssize_t w = pwrite(fd, zero, n, (off_t)from);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		from += (uint64_t)w;
		if (from - step_start >= PREALLOC_STEP || from == to) {
			if (sync_file_range(fd, (off_t)step_start, (off_t)(from - step_start),
			                    SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
			                        SYNC_FILE_RANGE_WAIT_AFTER) != 0 &&
			    errno != ENOSYS && errno != EINVAL)
				return -errno;
			step_start = from;
		}
	}
	return fdatasync(fd) != 0 ? -errno : 0;
}

/*
 * Makes the segment whose first record will be first_seq: its header is
 * written and synced under a temporary name (the prepared, zero-filled file
 * prepared_fd if there is one, else a new file), renamed into place, and
 * the directory synced, so no segment is ever visible without its header.
 * The file descriptor goes to *out. Pool thread, or the loop thread before
 * any pool work.
 */
static int segment_create(struct ledger *l, uint64_t first_seq, int64_t now, int prepared_fd,
                          int *out)
{
	char path[4200], tmp[4210], h[LEDGER_FILE_HEADER];
	int fd = prepared_fd, rc;

	ledger_encode_file_header(h, first_seq, now, LEDGER_SEGMENT_ZEROED);
	segment_path(l, first_seq, path, sizeof(path));
	if (prepared_fd >= 0)
		snprintf(tmp, sizeof(tmp), "%s/%s", l->dir, PREPARED_NAME);
	else
		snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if (fd < 0 && (fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | FS_OPEN_FLAGS, 0600)) < 0)
		return -errno;
	errno = 0;
	if (pwrite(fd, h, sizeof(h), 0) != (ssize_t)sizeof(h) || fdatasync(fd) != 0 ||
	    rename(tmp, path) != 0 || (rc = fs_sync_dir(l->dir)) != 0) {
		rc = errno ? -errno : SC_EINTERNAL;
		close(fd);
		unlink(tmp);
		return rc;
	}
	*out = fd;
	return 0;
}

/* ----------------------------------------------------------- preallocation */

/* Pool thread: zero-fills a stretch of the current segment, or the next segment. */
static void prep_work(uv_work_t *w)
{
	struct ledger *l = w->data;
	char path[4200];
	int rc;

	if (l->prep_next) {
		snprintf(path, sizeof(path), "%s/%s", l->dir, PREPARED_NAME);
		l->prep_fd = open(path, O_RDWR | O_CREAT | O_TRUNC | FS_OPEN_FLAGS, 0600);
		if (l->prep_fd < 0) {
			l->prep_errno = errno;
			return;
		}
	}
	rc = zero_fill(l->prep_fd, l->prep_from, l->prep_to);
	l->prep_errno = -rc;
	if (rc != 0 && l->prep_next) {
		close(l->prep_fd);
		l->prep_fd = -1;
		unlink(path);
	}
}

static void finish_close(struct ledger *l);

static void prep_done(uv_work_t *w, int status)
{
	struct ledger *l = w->data;

	l->prep_busy = 0;
	if (status != 0 && l->prep_errno == 0)
		l->prep_errno = EINTR;
	if (l->prep_errno) {
		if (!l->prep_failed)
			log_warn("ledger: cannot zero-fill %s ahead of the records: %s; writes go on "
			         "without it",
			         l->prep_next ? "the next segment" : "the segment",
			         strerror(l->prep_errno));
		l->prep_failed = 1;
		if (!l->prep_next && l->prep_fd >= 0)
			close(l->prep_fd);
	} else {
		l->prep_failed = 0;
		if (l->prep_next) {
			l->next_fd = l->prep_fd;
			l->next_zeroed = l->prep_to;
		} else {
			close(l->prep_fd);
			if (l->prep_gen == l->seg_gen && l->prep_to > l->zeroed_end)
				l->zeroed_end = l->prep_to;
		}
	}
	l->prep_fd = -1;
	if (l->closing) {
		if (!l->in_flight)
			finish_close(l);
		return;
	}
	maybe_flush(l); /* a flush may have waited for the stretch it writes to */
}

/*
 * Loop thread, while no flush is in flight: keeps PREALLOC_CHUNK/2 or more
 * zero-filled bytes ahead of the records of the current segment, and once
 * the current segment is nearly full, a zero-filled next one.
 */
static void maybe_prepare(struct ledger *l)
{
	uint64_t limit = l->cfg.segment_bytes;
	uint64_t from = l->zeroed_end > l->file_size ? l->zeroed_end : l->file_size;

	if (l->prep_busy || l->in_flight || l->closing || l->failed)
		return;
	if (from < limit && from - l->file_size < PREALLOC_CHUNK / 2) {
		l->prep_next = 0;
		l->prep_from = from;
		/* whole pages: the next stretch starts page-aligned */
		l->prep_to = (from + PREALLOC_CHUNK) & ~(uint64_t)4095;
		if (l->prep_to > limit)
			l->prep_to = limit;
		l->prep_gen = l->seg_gen;
		if ((l->prep_fd = dup(l->fd)) < 0)
			return;
	} else if (l->next_fd < 0 && (limit <= l->file_size || limit - l->file_size < PREALLOC_CHUNK)) {
		l->prep_next = 1;
		l->prep_from = 0;
		l->prep_to = limit < PREALLOC_CHUNK ? limit : PREALLOC_CHUNK;
		l->prep_fd = -1;
	} else {
		return;
	}
	l->prep_busy = 1;
	l->prep_errno = 0;
	l->prep.data = l;
	if (uv_queue_work(l->loop, &l->prep, prep_work, prep_done) != 0) {
		l->prep_busy = 0;
		if (l->prep_fd >= 0)
			close(l->prep_fd);
		l->prep_fd = -1;
	}
}

/* ------------------------------------------------------------------ flush */

/*
 * Writes and syncs the batch, rotating first if needed: on a pool thread,
 * or on the loop thread in strict mode.
 */
static void flush_work(uv_work_t *w)
{
	struct ledger *l = w->data;
	struct stat sb;
	size_t done = 0;
	int64_t t0;
	int rc;

	l->work_errno = 0;
	l->work_cut = 0;
	if (l->rotate) {
		int fd, prepared = l->rot_fd;

		l->rot_fd = -1; /* consumed, whatever happens */
		if ((rc = segment_create(l, l->batch_first, l->cfg.now(), prepared, &fd)) != 0) {
			l->work_errno = -rc;
			l->work_what = "create segment";
			return;
		}
		close(l->fd);
		l->fd = fd;
		segment_path(l, l->batch_first, l->file, sizeof(l->file));
		l->file_size = LEDGER_FILE_HEADER;
		l->rotated = 1;
		if (prepared < 0)
			l->rot_zeroed = 0;
	}
	if (fstat(l->fd, &sb) != 0) {
		l->work_errno = errno;
		l->work_what = "fstat";
		return;
	}
	if ((uint64_t)sb.st_size < l->file_size) {
		l->work_cut = (uint64_t)sb.st_size + 1; /* 0 stays "not cut" */
		return;
	}
	/*
	 * A failed attempt may have left part of the batch: it is written again
	 * from the durable end, byte for byte the same, so that no page whose
	 * writeback failed is trusted.
	 */
	while (done < l->batch.size) {
		ssize_t n = pwrite(l->fd, l->batch.data + done, l->batch.size - done,
		                   (off_t)(l->file_size + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			l->work_errno = n < 0 ? errno : EIO;
			l->work_what = "write";
			return;
		}
		done += (size_t)n;
	}
	t0 = mono_ns();
	if (fdatasync(l->fd) != 0) {
		l->work_errno = errno;
		l->work_what = "fdatasync";
		return;
	}
	l->sync_ns = mono_ns() - t0;
	l->file_size += l->batch.size;
}

static void on_retry(uv_timer_t *t)
{
	struct ledger *l = t->data;

	l->timer_armed = 0;
	l->due = 1;
	maybe_flush(l);
}

static void arm_timer(struct ledger *l, uint64_t ms)
{
	if (l->timer_armed || l->closing)
		return;
	l->timer_armed = 1;
	uv_timer_start(&l->timer, on_retry, ms, 0);
}

/* Reallocates b to twice need when its capacity is over four times that (see DESIGN). */
static void trim_buffer(msgpack_sbuffer *b, size_t need)
{
	char *data;

	SC_ASSERT(b->size <= need);
	if (b->alloc / 4 <= need)
		return;
	/* a failed realloc leaves the larger buffer, which still works */
	if ((data = realloc(b->data, 2 * need)) == NULL)
		return;
	b->data = data;
	b->alloc = 2 * need;
}

/*
 * After a flush that wrote `written` bytes: releases what the buffers hold
 * beyond their need (see DESIGN, buffer release). Loop thread, with the
 * batch buffer empty and no flush in flight.
 */
static void trim_buffers(struct ledger *l, size_t written)
{
	size_t need;

	lock(l);
	SC_ASSERT(l->open_record == SIZE_MAX);
	need = l->pending.size ? written : 0;
	if (need < BUFFER_KEEP)
		need = BUFFER_KEEP;
	trim_buffer(&l->batch, need);
	trim_buffer(&l->pending, need > l->pending.size ? need : l->pending.size);
	unlock(l);
}

/*
 * The batch could not be made durable: changes are refused with the
 * message (a format) until a retry succeeds, or the ledger finishes closing.
 */
static __attribute__((format(printf, 2, 3))) void fail_batch(struct ledger *l, const char *fmt,
                                                             ...)
{
	va_list ap;

	lock(l);
	l->failed = 1;
	l->stats.failures++;
	va_start(ap, fmt);
	vsnprintf(l->failure, sizeof(l->failure), fmt, ap);
	va_end(ap);
	unlock(l);
	if (l->closing)
		finish_close(l);
	else
		arm_timer(l, RETRY_MS);
}

static void flush_done(uv_work_t *w, int status)
{
	struct ledger *l = w->data;
	size_t written;

	l->in_flight = 0;
	if (l->rotated) {
		l->rotated = 0;
		l->seg_gen++;
		l->zeroed_end = l->rot_zeroed;
		l->stats.segments++;
	}
	if (status == 0 && l->work_cut) {
		if (!l->failed)
			log_error("ledger: the segment %s is %llu bytes, but its durable records end at "
			          "%llu: another process cut it; refusing changes until the file is "
			          "restored or the daemon restarted",
			          l->file, (unsigned long long)(l->work_cut - 1),
			          (unsigned long long)l->file_size);
		fail_batch(l, "ledger: the segment %.400s was cut short by another process; changes "
		           "are refused",
		           l->file);
		return;
	}
	if (status != 0 || l->work_errno) {
		int e = status != 0 ? EINTR : l->work_errno;

		if (!l->failed)
			log_error("ledger: %s failed: %s; refusing changes and retrying every %d ms",
			          l->work_what ? l->work_what : "flush", strerror(e), RETRY_MS);
		fail_batch(l, "ledger: %s failed (%s); changes are refused until the disk accepts "
		           "writes",
		           l->work_what ? l->work_what : "flush", strerror(e));
		return;
	}
	if (l->failed)
		log_info("ledger: writes succeed again; accepting changes");
	written = l->batch.size;
	lock(l);
	l->failed = 0;
	l->stats.syncs++;
	l->stats.records_synced += l->batch_records;
	l->durable_seq = l->batch_last;
	/*
	 * The clients whose replies this releases are likely to send their next
	 * change within a round trip: gather them with those already pending.
	 */
	l->gather_target = l->batch_records + l->pending_records;
	unlock(l);
	l->gather_deadline = mono_ns() + (l->sync_ns < GATHER_MAX_NS ? l->sync_ns : GATHER_MAX_NS);
	l->batch.size = 0;
	l->batch_records = 0;
	trim_buffers(l, written);
	if (l->durable)
		l->durable(l->arg, l->durable_seq);
	maybe_prepare(l);
	maybe_flush(l);
	if (l->closing && !l->in_flight)
		finish_close(l);
}

/*
 * Starts writing: the failed batch again, or the pending records. It waits
 * (prep_done calls again) while the zero-filling of the stretch it would
 * write to is still running.
 */
static void start_flush(struct ledger *l)
{
	size_t size;
	int rotate;

	/*
	 * Under the owner's lock from sizing to the swap: appenders on other
	 * threads must not grow the pending records between the rotation and
	 * overlap decisions and the moment they become the batch.
	 */
	lock(l);
	size = l->batch.size ? l->batch.size : l->pending.size;
	rotate = l->file_size > LEDGER_FILE_HEADER && l->file_size + size > l->cfg.segment_bytes;
	if (!rotate && l->prep_busy && !l->prep_next && l->prep_gen == l->seg_gen &&
	    l->file_size + size > l->prep_from) {
		unlock(l);
		return;
	}
	l->rotate = rotate;
	if (rotate) {
		l->rot_fd = l->next_fd;
		l->rot_zeroed = l->next_zeroed;
		l->next_fd = -1;
	}
	if (l->batch.size == 0) {
		msgpack_sbuffer t = l->batch;

		l->batch = l->pending;
		l->pending = t;
		l->pending.size = 0;
		l->batch_first = l->pending_first;
		l->batch_last = l->pending_last;
		l->batch_records = l->pending_records;
		l->pending_records = 0;
		l->pending_first = 0;
	}
	unlock(l);
	if (l->gather_armed) {
		uv_poll_stop(&l->gather_poll);
		l->gather_armed = 0;
	}
	l->in_flight = 1;
	l->due = 0;
	l->work.data = l;
	if (l->cfg.strict && !l->closing) {
		flush_inline(l);
		return;
	}
	if (uv_queue_work(l->loop, &l->work, flush_work, flush_done) != 0) {
		if (l->rot_fd >= 0)
			l->next_fd = l->rot_fd; /* not consumed */
		l->rot_fd = -1;
		l->in_flight = 0;
		l->work_errno = EAGAIN;
		l->work_what = "queue";
		flush_done(&l->work, 0);
	}
}

/*
 * Strict mode: the loop thread writes and syncs the batch (see DESIGN).
 * What was appended meanwhile waits for the gathering timer, at once if
 * the target is already met, so that the loop polls before the next sync.
 */
static void flush_inline(struct ledger *l)
{
	size_t records;

	l->syncing = 1;
	flush_work(&l->work);
	flush_done(&l->work, 0);
	l->syncing = 0;
	/* a failed batch waits for its retry; a ledger being closed flushes on its own */
	if (l->closing || l->batch.size || l->timer_armed)
		return;
	lock(l);
	records = l->pending_records;
	unlock(l);
	if (records == 0)
		return;
	if (records >= l->gather_target)
		l->gather_deadline = mono_ns();
	arm_gather(l);
}

static void on_gather(uv_poll_t *p, int status, int events)
{
	struct ledger *l = p->data;
	uint64_t expirations;

	(void)status;
	(void)events;
	if (read(l->gather_fd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
		log_warn("ledger: reading the commit-delay timer: %s", strerror(errno));
	l->gather_armed = 0;
	uv_poll_stop(&l->gather_poll);
	maybe_flush(l);
}

/* Wakes the loop at the gathering deadline, with microsecond precision. */
static void arm_gather(struct ledger *l)
{
	struct itimerspec its = {
		.it_value = {.tv_sec = l->gather_deadline / 1000000000,
		             .tv_nsec = l->gather_deadline % 1000000000}};

	if (l->gather_armed)
		return;
	if (timerfd_settime(l->gather_fd, TFD_TIMER_ABSTIME, &its, NULL) != 0) {
		start_flush(l); /* no timer: never hold a batch without one */
		return;
	}
	l->gather_armed = 1;
	uv_poll_start(&l->gather_poll, UV_READABLE, on_gather);
}

static void maybe_flush(struct ledger *l)
{
	size_t records, bytes;

	if (l->in_flight || l->syncing)
		return;
	lock(l);
	records = l->pending_records;
	bytes = l->pending.size;
	unlock(l);
	if (l->batch.size == 0 && records == 0)
		return;
	if (l->batch.size) {
		/* a failed batch waits for the retry timer */
		if (!l->timer_armed || l->closing)
			start_flush(l);
		return;
	}
	if (l->cfg.strict && !l->closing) {
		if (records >= l->gather_target || mono_ns() >= l->gather_deadline)
			start_flush(l);
		else
			arm_gather(l);
		return;
	}
	if (l->cfg.strict || l->closing || l->due || bytes >= l->cfg.batch_bytes)
		start_flush(l);
	else
		arm_timer(l, l->cfg.interval_ms);
}

static void on_check(uv_check_t *c)
{
	maybe_flush(c->data);
}

static void on_wake(uv_async_t *a)
{
	maybe_flush(a->data);
}

/* ----------------------------------------------------------------- append */

static int pending_write(void *data, const char *buf, size_t len)
{
	return msgpack_sbuffer_write(data, buf, len);
}

msgpack_packer *ledger_begin(struct ledger *l, unsigned type, int64_t time)
{
	static const char zero[LEDGER_RECORD_HEADER];

	SC_ASSERT(l->open_record == SIZE_MAX);
	l->open_record = l->pending.size;
	l->open_type = type;
	l->open_time = time;
	msgpack_sbuffer_write(&l->pending, zero, sizeof(zero));
	return &l->pk;
}

uint64_t ledger_commit(struct ledger *l)
{
	char *rec = l->pending.data + l->open_record;
	size_t body = l->pending.size - l->open_record - LEDGER_RECORD_HEADER;
	uint64_t seq = l->stats.last_seq + 1;
	int crossed = l->open_record < l->cfg.batch_bytes && l->pending.size >= l->cfg.batch_bytes;

	SC_ASSERT(l->open_record != SIZE_MAX && body <= LEDGER_RECORD_MAX);
	/* the first record of pending will be the first of its batch */
	ledger_encode_header(rec, seq, l->open_time, l->open_type,
	                     l->pending_records ? 0 : LEDGER_RECORD_BATCH_START,
	                     rec + LEDGER_RECORD_HEADER, (uint32_t)body);
	l->open_record = SIZE_MAX;
	l->stats.last_seq = seq;
	if (!l->pending_first)
		l->pending_first = seq;
	l->pending_last = seq;
	l->pending_records++;
	/*
	 * Wake the loop when it has something to decide: the first record, and
	 * then in strict mode the record that completes the batch being
	 * gathered, in async mode the one that crosses --commit-batch.
	 */
	if (l->cfg.lock && (l->pending_records == 1 ||
	                    (l->cfg.strict ? l->pending_records == l->gather_target : crossed)))
		uv_async_send(&l->wake);
	return seq;
}

const char *ledger_failure(const struct ledger *l)
{
	return l->failed ? l->failure : NULL;
}

uint64_t ledger_durable(const struct ledger *l)
{
	return l->durable_seq;
}

void ledger_get_stats(const struct ledger *l, struct ledger_stats *st)
{
	*st = l->stats;
	st->durable_seq = l->durable_seq;
	st->buffer_bytes = l->pending.alloc + l->batch.alloc;
	st->failed = l->failed;
}

/* ------------------------------------------------------------ open, close */

int ledger_open(struct ledger **out, uv_loop_t *loop, const struct ledger_config *cfg,
                const struct ledger_scan_result *tail, void (*durable)(void *, uint64_t),
                void *arg, char *err, size_t errlen)
{
	struct ledger *l = calloc(1, sizeof(*l));
	char path[4200];
	int rc;

	if (!l)
		return -ENOMEM;
	l->loop = loop;
	l->cfg = *cfg;
	l->fd = -1;
	l->gather_fd = -1;
	l->open_record = SIZE_MAX;
	l->durable = durable;
	l->arg = arg;
	snprintf(l->dir, sizeof(l->dir), "%s", cfg->dir);
	msgpack_sbuffer_init(&l->pending);
	msgpack_sbuffer_init(&l->batch);
	msgpack_packer_init(&l->pk, &l->pending, pending_write);
	l->stats.last_seq = l->durable_seq = tail->last_seq;
	if (mkdir(l->dir, 0700) != 0 && errno != EEXIST) {
		rc = -errno;
		sc_errorf(err, errlen, "%s: %s", l->dir, strerror(errno));
		goto fail;
	}
	/* A preparation the previous daemon left may be incomplete: start afresh. */
	snprintf(path, sizeof(path), "%s/%s", l->dir, PREPARED_NAME);
	unlink(path);
	l->next_fd = l->prep_fd = l->rot_fd = -1;
	if (tail->segments && tail->tail_file[0] && tail->tail_offset >= LEDGER_FILE_HEADER &&
	    tail->tail_zeroed) {
		struct stat sb;

		l->fd = open(tail->tail_file, O_WRONLY | FS_OPEN_FLAGS);
		if (l->fd < 0 || fstat(l->fd, &sb) != 0) {
			rc = -errno;
			sc_errorf(err, errlen, "%s: %s", tail->tail_file, strerror(errno));
			goto fail;
		}
		snprintf(l->file, sizeof(l->file), "%s", tail->tail_file);
		l->file_size = tail->tail_offset;
		/* the scan found zeros (or repair wrote them) from the tail to the end */
		l->zeroed_end = (uint64_t)sb.st_size;
		l->stats.segments = tail->segments;
	} else {
		/* a new ledger, or one whose last segment is appended (never extended again) */
		rc = segment_create(l, tail->last_seq + 1, cfg->now(), -1, &l->fd);
		if (rc != 0) {
			sc_errorf(err, errlen, "%s: cannot create a ledger segment: %s", l->dir,
			          strerror(-rc));
			goto fail;
		}
		segment_path(l, tail->last_seq + 1, l->file, sizeof(l->file));
		l->file_size = LEDGER_FILE_HEADER;
		l->stats.segments = tail->segments + 1;
	}
	l->gather_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (l->gather_fd < 0 || uv_poll_init(loop, &l->gather_poll, l->gather_fd) != 0) {
		rc = l->gather_fd < 0 ? -errno : SC_EINTERNAL;
		sc_errorf(err, errlen, "ledger: cannot create the commit-delay timer: %s",
		          sc_strerror(rc));
		goto fail;
	}
	uv_check_init(loop, &l->check);
	uv_timer_init(loop, &l->timer);
	l->check.data = l->timer.data = l->gather_poll.data = l;
	l->handles_open = 3;
	if (cfg->lock) {
		uv_async_init(loop, &l->wake, on_wake);
		l->wake.data = l;
		l->handles_open++;
	}
	uv_check_start(&l->check, on_check);
	maybe_prepare(l);
	*out = l;
	return 0;
fail:
	if (l->fd >= 0)
		close(l->fd);
	if (l->gather_fd >= 0)
		close(l->gather_fd);
	msgpack_sbuffer_destroy(&l->pending);
	msgpack_sbuffer_destroy(&l->batch);
	free(l);
	return rc;
}

static void on_handle_closed(uv_handle_t *h)
{
	struct ledger *l = h->data;

	if (--l->handles_open == 0 && l->closed)
		l->closed(l->closed_arg);
}

/* Called when nothing is in flight: the last records are written, then handles close. */
static void finish_close(struct ledger *l)
{
	size_t records;

	if (l->prep_busy)
		return; /* prep_done comes back here */
	lock(l);
	records = l->pending_records;
	unlock(l);
	if (records || l->batch.size) {
		if (l->final_attempts++ < 3) {
			start_flush(l);
			return;
		}
		log_error("ledger: stopping with %zu record(s) not on disk: %s",
		          l->batch_records + l->pending_records, l->failure);
	}
	if (uv_is_closing((uv_handle_t *)&l->check))
		return;
	uv_close((uv_handle_t *)&l->check, on_handle_closed);
	uv_close((uv_handle_t *)&l->timer, on_handle_closed);
	uv_close((uv_handle_t *)&l->gather_poll, on_handle_closed);
	if (l->cfg.lock)
		uv_close((uv_handle_t *)&l->wake, on_handle_closed);
}

void ledger_close(struct ledger *l, void (*closed)(void *arg), void *arg)
{
	l->closing = 1;
	l->closed = closed;
	l->closed_arg = arg;
	uv_timer_stop(&l->timer);
	l->timer_armed = 0;
	if (!l->in_flight)
		finish_close(l);
}

void ledger_free(struct ledger *l)
{
	if (!l)
		return;
	if (l->fd >= 0)
		close(l->fd);
	if (l->gather_fd >= 0)
		close(l->gather_fd); /* after its poll handle closed */
	if (l->next_fd >= 0) {
		char path[4200];

		close(l->next_fd);
		snprintf(path, sizeof(path), "%s/%s", l->dir, PREPARED_NAME);
		unlink(path);
	}
	msgpack_sbuffer_destroy(&l->pending);
	msgpack_sbuffer_destroy(&l->batch);
	free(l);
}
