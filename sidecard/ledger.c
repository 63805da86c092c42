/*
 * ledger.c: the daemon's ledger writer. Records are appended in memory on
 * the loop thread and written with fdatasync by libuv's thread pool, one
 * batch at a time (group commit); when a batch is on disk the owner is told
 * the durable sequence number, which releases strict-mode replies.
 *
 * Threads: every ledger_* function runs on the loop thread, except when
 * the owner gives a lock (cfg.lock): then ledger_begin/ledger_commit,
 * ledger_failure and ledger_get_stats may run on any thread holding it, and
 * the loop thread takes it only to look at and swap the pending records and
 * to publish the outcome of a flush. A commit from another thread wakes the
 * loop (l->wake) when the loop must act: the first record after a swap
 * (strict: start a flush; async: arm the interval) and the one that crosses
 * --commit-batch. The write of a batch (flush_work) runs on a pool thread
 * and touches only the segment file and the batch buffer, which the loop
 * thread leaves alone while l->in_flight is set.
 *
 * DESIGN
 *
 * Two buffers: `pending` collects new records, `batch` is the one being
 * written. A flush swaps them when no batch is in flight. In strict mode a
 * flush starts at the end of every loop iteration that appended something
 * (a uv_check handle), so a batch holds every record that arrived during
 * the previous fdatasync; in async mode it starts after --commit-interval,
 * or at once when the pending bytes reach --commit-batch.
 *
 * Failure. A failed write or fdatasync keeps the batch, marks the ledger
 * failed (ledger_failure() says why, and the daemon refuses mutations) and
 * retries every RETRY_MS: the segment is cut back to its last durable size
 * and the whole batch written and synced again, so a retry never trusts
 * pages whose writeback failed. The first success clears the failure.
 *
 * Rotation. Before writing a batch, a segment that has reached
 * --segment-size is closed and a new one, named by the batch's first
 * sequence number, is created with its header synced and the directory
 * synced, so a segment file is never visible without its header.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "ledger.h"
#include "ledger_writer.h"
#include "log.h"
#include "sidecard.h"

#define RETRY_MS 200

struct ledger {
	uv_loop_t *loop;
	struct ledger_config cfg;
	char dir[4096];

	/* the segment being appended; owned by the pool thread while in_flight */
	int fd;
	uint64_t file_size; /* durable bytes of the segment */

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
	int work_errno;
	const char *work_what;

	uint64_t durable_seq;
	int failed;
	char failure[160];
	struct ledger_stats stats;

	uv_check_t check;
	uv_timer_t timer;
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

static int sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) != 0)
		rc = -errno;
	close(fd);
	return rc;
}

/*
 * Creates a segment whose first record will be first_seq: the header is
 * written and synced under a temporary name, renamed into place, and the
 * directory synced, so no segment is ever visible without its header.
 */
static int segment_create(struct ledger *l, uint64_t first_seq, int64_t now)
{
	char path[4200], tmp[4210], h[LEDGER_FILE_HEADER];
	int fd, rc;

	ledger_encode_file_header(h, first_seq, now);
	segment_path(l, first_seq, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd < 0)
		return -errno;
	errno = 0;
	if (pwrite(fd, h, sizeof(h), 0) != (ssize_t)sizeof(h) || fdatasync(fd) != 0 ||
	    rename(tmp, path) != 0 || (rc = sync_dir(l->dir)) != 0) {
		rc = errno ? -errno : SC_EINTERNAL;
		close(fd);
		unlink(tmp);
		return rc;
	}
	if (l->fd >= 0)
		close(l->fd);
	l->fd = fd;
	l->file_size = LEDGER_FILE_HEADER;
	l->stats.segments++;
	return 0;
}

/* ------------------------------------------------------------------ flush */

/* Pool thread: writes and syncs the batch, rotating first if needed. */
static void flush_work(uv_work_t *w)
{
	struct ledger *l = w->data;
	size_t done = 0;
	int rc;

	l->work_errno = 0;
	if (l->file_size >= l->cfg.segment_bytes &&
	    (rc = segment_create(l, l->batch_first, l->cfg.now())) != 0) {
		l->work_errno = -rc;
		l->work_what = "create segment";
		return;
	}
	/* A failed attempt may have left part of the batch: start from the durable end. */
	if (ftruncate(l->fd, (off_t)l->file_size) != 0) {
		l->work_errno = errno;
		l->work_what = "truncate";
		return;
	}
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
	if (fdatasync(l->fd) != 0) {
		l->work_errno = errno;
		l->work_what = "fdatasync";
		return;
	}
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

static void finish_close(struct ledger *l);

static void flush_done(uv_work_t *w, int status)
{
	struct ledger *l = w->data;

	l->in_flight = 0;
	if (status != 0 || l->work_errno) {
		int e = status != 0 ? EINTR : l->work_errno;

		if (!l->failed)
			log_error("ledger: %s failed: %s; refusing changes and retrying every %d ms",
			          l->work_what ? l->work_what : "flush", strerror(e), RETRY_MS);
		lock(l);
		l->failed = 1;
		l->stats.failures++;
		snprintf(l->failure, sizeof(l->failure),
		         "ledger: %s failed (%s); changes are refused until the disk accepts writes",
		         l->work_what ? l->work_what : "flush", strerror(e));
		unlock(l);
		if (l->closing)
			finish_close(l);
		else
			arm_timer(l, RETRY_MS);
		return;
	}
	if (l->failed)
		log_info("ledger: writes succeed again; accepting changes");
	lock(l);
	l->failed = 0;
	l->stats.syncs++;
	l->stats.records_synced += l->batch_records;
	l->durable_seq = l->batch_last;
	unlock(l);
	l->batch.size = 0;
	l->batch_records = 0;
	if (l->durable)
		l->durable(l->arg, l->durable_seq);
	maybe_flush(l);
	if (l->closing && !l->in_flight)
		finish_close(l);
}

/* Starts writing: the failed batch again, or the pending records. */
static void start_flush(struct ledger *l)
{
	if (l->batch.size == 0) {
		msgpack_sbuffer t = l->batch;

		lock(l);
		l->batch = l->pending;
		l->pending = t;
		l->pending.size = 0;
		l->batch_first = l->pending_first;
		l->batch_last = l->pending_last;
		l->batch_records = l->pending_records;
		l->pending_records = 0;
		l->pending_first = 0;
		unlock(l);
	}
	l->in_flight = 1;
	l->due = 0;
	l->work.data = l;
	if (uv_queue_work(l->loop, &l->work, flush_work, flush_done) != 0) {
		l->in_flight = 0;
		l->work_errno = EAGAIN;
		l->work_what = "queue";
		flush_done(&l->work, 0);
	}
}

static void maybe_flush(struct ledger *l)
{
	size_t records, bytes;

	if (l->in_flight)
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
	ledger_encode_header(rec, seq, l->open_time, l->open_type, rec + LEDGER_RECORD_HEADER,
	                     (uint32_t)body);
	l->open_record = SIZE_MAX;
	l->stats.last_seq = seq;
	if (!l->pending_first)
		l->pending_first = seq;
	l->pending_last = seq;
	l->pending_records++;
	if (l->cfg.lock && (l->pending_records == 1 || (!l->cfg.strict && crossed)))
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
	st->failed = l->failed;
}

/* ------------------------------------------------------------ open, close */

int ledger_open(struct ledger **out, uv_loop_t *loop, const struct ledger_config *cfg,
                const struct ledger_scan_result *tail, void (*durable)(void *, uint64_t),
                void *arg, char *err, size_t errlen)
{
	struct ledger *l = calloc(1, sizeof(*l));
	int rc;

	if (!l)
		return -ENOMEM;
	l->loop = loop;
	l->cfg = *cfg;
	l->fd = -1;
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
	if (tail->segments && tail->tail_file[0] && tail->tail_offset >= LEDGER_FILE_HEADER) {
		l->fd = open(tail->tail_file, O_WRONLY | O_CLOEXEC);
		if (l->fd < 0) {
			rc = -errno;
			sc_errorf(err, errlen, "%s: %s", tail->tail_file, strerror(errno));
			goto fail;
		}
		l->file_size = tail->tail_offset;
		l->stats.segments = tail->segments;
	} else if ((rc = segment_create(l, tail->last_seq + 1, cfg->now())) != 0) {
		sc_errorf(err, errlen, "%s: cannot create a ledger segment: %s", l->dir,
		          strerror(-rc));
		goto fail;
	}
	uv_check_init(loop, &l->check);
	uv_timer_init(loop, &l->timer);
	l->check.data = l->timer.data = l;
	l->handles_open = 2;
	if (cfg->lock) {
		uv_async_init(loop, &l->wake, on_wake);
		l->wake.data = l;
		l->handles_open++;
	}
	uv_check_start(&l->check, on_check);
	*out = l;
	return 0;
fail:
	if (l->fd >= 0)
		close(l->fd);
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
	msgpack_sbuffer_destroy(&l->pending);
	msgpack_sbuffer_destroy(&l->batch);
	free(l);
}
