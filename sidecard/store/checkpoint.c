/*
 * checkpoint.c: snapshots of the whole state, so that recovery replays only
 * the ledger after the newest one, and the restore of a snapshot into a new
 * state segment.
 *
 * Threads: checkpoint_start (under the commit lock) and the callbacks run
 * on the loop thread; a libuv pool thread copies the records from a
 * copy-on-write view of the segment (shm/snap.c) and writes the file, so
 * neither the loop nor the changes wait for the copy or the disk.
 * checkpoint_find and checkpoint_restore run on the main thread during
 * start-up.
 *
 * FORMAT (little-endian, as the host writes; <dir>/<16 hex digits of seq>.snap)
 *
 *   offset size  field
 *   0      8     magic "SCCKPT01"
 *   8      4     shm layout version of the records (SHM_LAYOUT_VERSION)
 *   12     4     size of struct shm_header that follows
 *   16     8     sequence number of the last ledger record it contains
 *   24     8     time it was taken, microseconds since the epoch
 *   32     h     the segment header (struct shm_header), capacities included
 *   then, for the org, agent, rule, hold, transaction, event, task, price, alert,
 *   text and kept key tables in turn:
 *          4     count of used records
 *          count x (4-byte slot, the record's bytes)
 *   last   4     CRC32C of every byte before it
 *
 * Only used records are copied, so a snapshot costs what the state holds,
 * not what its capacity is; they are streamed through a buffer of
 * OUT_CHUNK bytes, each table's count written in place after its records
 * and the checksum computed over the file read back, so a snapshot never
 * holds a copy of the state in memory. A snapshot is written to a
 * temporary name, fsynced, renamed, and the directory fsynced: it exists
 * whole or not at all.
 *
 * A failed snapshot (disk full: the snapshot is as large as the state, the
 * ledger's batches are small) is retried after RETRY_FIRST_MS, doubling
 * after each further failure up to RETRY_MAX_MS; until then
 * checkpoint_busy() says so, and the owner neither copies the state under
 * its commit lock nor asks again. One line is logged when snapshots start
 * failing and one when they succeed again, whatever the number of
 * attempts between.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "common.h"
#include "fsutil.h"
#include "ledger.h"
#include "log.h"

#define CKPT_MAGIC "SCCKPT01"
#define CKPT_HEAD 32u
#define OUT_CHUNK (1u << 20) /* the write buffer of a snapshot */
/* The wait before retrying a failed snapshot: doubles from the first to the last. */
#define RETRY_FIRST_MS 1000u
#define RETRY_MAX_MS (300u * 1000u)

struct checkpointer {
	uv_loop_t *loop;
	char dir[4096];
	uv_work_t work;
	int in_flight;
	pthread_mutex_t *commit_lock;
	struct shm_snap *snap; /* the view being copied */
	uint64_t seq;
	int64_t now;
	int rc;
	void (*done)(void *arg, uint64_t seq, int rc);
	void *arg;
	void (*closed)(void *arg);
	void *closed_arg;
	uint64_t failures; /* failed attempts since the last snapshot that succeeded */
	uint64_t retry_at; /* uv_now() from which a failed snapshot may be tried again */
};

void checkpoint_path(const char *dir, uint64_t seq, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%016" PRIx64 ".snap", dir, seq);
}

/* --------------------------------------------------------------- taking */

/*
 * The snapshot file being written, through a buffer of OUT_CHUNK bytes:
 * records are copied from the view straight into it, so a snapshot costs
 * one chunk of memory, not the size of the state (a gigabyte at a million
 * agents). The first error is kept in rc and ends the writing.
 */
struct out {
	int fd;
	char *buf;
	size_t len;   /* bytes in buf, not yet written */
	uint64_t off; /* the file offset of buf[0] */
	int rc;
};

static void out_flush(struct out *o)
{
	if (o->rc == 0 && o->len)
		o->rc = fs_pwrite_all(o->fd, o->buf, o->len, o->off);
	o->off += o->len;
	o->len = 0;
}

/* Room for n (<= OUT_CHUNK) more bytes at the buffer's end; the caller adds n to o->len. */
static char *out_room(struct out *o, size_t n)
{
	if (o->len + n > OUT_CHUNK)
		out_flush(o);
	return o->buf + o->len;
}

static void out_put(struct out *o, const void *p, size_t n)
{
	memcpy(out_room(o, n), p, n);
	o->len += n;
}

/* The CRC32C of the file's first `end` bytes, read back (from the page cache). */
static int file_crc(struct out *o, uint64_t end, uint32_t *crc)
{
	*crc = 0;
	for (uint64_t at = 0; at < end;) {
		size_t n = end - at < OUT_CHUNK ? (size_t)(end - at) : OUT_CHUNK;
		int rc = fs_pread_all(o->fd, o->buf, n, at);

		if (rc != 0)
			return rc;
		*crc = ledger_crc32c(*crc, o->buf, n);
		at += n;
	}
	return 0;
}

/*
 * Copier (a pool thread): the used records of the view, as they were at
 * its instant, in the FORMAT above, into fd. Each table's count is
 * written in place once its records are; the checksum last, over the file
 * read back, since a count precedes what it counts.
 */
static int serialize(struct shm_snap *snap, uint64_t seq, int64_t now, int fd)
{
	struct out o = { .fd = fd, .buf = malloc(OUT_CHUNK) };
	char head[CKPT_HEAD];
	uint32_t u32, crc;

	if (!o.buf)
		return -ENOMEM;
	memcpy(head, CKPT_MAGIC, 8);
	u32 = SHM_LAYOUT_VERSION;
	memcpy(head + 8, &u32, 4);
	u32 = sizeof(struct shm_header);
	memcpy(head + 12, &u32, 4);
	memcpy(head + 16, &seq, 8);
	memcpy(head + 24, &now, 8);
	out_put(&o, head, CKPT_HEAD);
	out_put(&o, shm_snap_header(snap), sizeof(struct shm_header));
	for (unsigned t = 0; t < SHM_TABLES && o.rc == 0; t++) {
		const struct shm_table *tab = shm_snap_table(snap, t);
		uint64_t count_at = o.off + o.len;

		u32 = 0;
		out_put(&o, &u32, 4);
		for (uint32_t i = 0; i < tab->end && o.rc == 0; i++) {
			char *at = out_room(&o, 4 + tab->rec_size);
			struct shm_rec r;

			/* copied in place; an unused record is then overwritten by the next */
			shm_snap_copy(snap, t, i, at + 4);
			memcpy(&r, at + 4, sizeof(r));
			if (!r.used)
				continue;
			memcpy(at, &i, 4);
			o.len += 4 + tab->rec_size;
			u32++;
		}
		out_flush(&o);
		if (o.rc == 0)
			o.rc = fs_pwrite_all(fd, (const char *)&u32, 4, count_at);
	}
	if (o.rc == 0 && (o.rc = file_crc(&o, o.off, &crc)) == 0) {
		o.len = 0;
		out_put(&o, &crc, 4);
		out_flush(&o);
	}
	free(o.buf);
	return o.rc;
}

/*
 * Writes the view's snapshot to <seq>.snap.tmp, ends the view (writers
 * stop saving records for it), syncs, renames and syncs the directory: the
 * snapshot exists whole or not at all.
 */
static int write_file(const char *dir, uint64_t seq, struct shm_snap *snap, int64_t now)
{
	char path[4200], tmp[4210];
	int fd, rc;

	checkpoint_path(dir, seq, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | FS_OPEN_FLAGS, 0600);
	rc = fd < 0 ? -errno : serialize(snap, seq, now, fd);
	shm_snap_end(snap);
	if (fd < 0)
		return rc;
	if (rc == 0 && fsync(fd) != 0)
		rc = -errno;
	close(fd);
	if (rc == 0 && rename(tmp, path) != 0)
		rc = -errno;
	if (rc == 0)
		rc = fs_sync_dir(dir);
	if (rc != 0)
		unlink(tmp);
	return rc;
}

static void work(uv_work_t *w)
{
	struct checkpointer *cp = w->data;

	cp->rc = write_file(cp->dir, cp->seq, cp->snap, cp->now);
}

/* 1 if name is a snapshot file: <16 hex digits>.snap, or .snap.tmp while written. */
static int snapshot_name(const char *name, uint64_t *seq, int *tmp)
{
	char *end;

	*seq = strtoull(name, &end, 16);
	if (end != name + 16)
		return 0;
	*tmp = strcmp(end, ".snap.tmp") == 0;
	return *tmp || strcmp(end, ".snap") == 0;
}

/* Removes the snapshots below seq (only the unfinished ones if tmp_only). */
static void remove_snapshots(const char *dir, uint64_t below, int tmp_only)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	while (d && (e = readdir(d)) != NULL) {
		char path[4200];
		uint64_t s;
		int tmp;

		if (snapshot_name(e->d_name, &s, &tmp) && s < below && (tmp || !tmp_only)) {
			snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
			unlink(path);
		}
	}
	if (d)
		closedir(d);
}

void checkpoint_prune(const char *dir, uint64_t seq)
{
	remove_snapshots(dir, seq, 0);
}

/* Counts a failed attempt and schedules the next (see the top of the file). */
static void failed(struct checkpointer *cp, uint64_t seq, int rc)
{
	uint64_t wait = RETRY_MAX_MS;

	if (cp->failures < 16 && (RETRY_FIRST_MS << cp->failures) < RETRY_MAX_MS)
		wait = RETRY_FIRST_MS << cp->failures;
	if (cp->failures++ == 0)
		log_error("checkpoint: cannot write the snapshot at record %llu in %s: %s; retrying "
		          "after %u s, then at longer intervals up to %u s (the ledger is kept until "
		          "a snapshot succeeds)",
		          (unsigned long long)seq, cp->dir, sc_strerror(rc), RETRY_FIRST_MS / 1000,
		          RETRY_MAX_MS / 1000);
	cp->retry_at = uv_now(cp->loop) + wait;
}

static void work_done(uv_work_t *w, int status)
{
	struct checkpointer *cp = w->data;

	/* a writer may still be inside shm_write_begin with the view: free it under the lock */
	pthread_mutex_lock(cp->commit_lock);
	shm_snap_free(cp->snap);
	pthread_mutex_unlock(cp->commit_lock);
	cp->snap = NULL;
	cp->in_flight = 0;
	if (status != 0)
		cp->rc = SC_EINTERNAL;
	if (cp->rc != 0) {
		failed(cp, cp->seq, cp->rc);
	} else if (cp->failures) {
		log_info("checkpoint: the snapshot at record %llu succeeded after %llu failed "
		         "attempt(s)",
		         (unsigned long long)cp->seq, (unsigned long long)cp->failures);
		cp->failures = 0;
	}
	if (cp->done)
		cp->done(cp->arg, cp->seq, cp->rc);
	if (cp->closed)
		cp->closed(cp->closed_arg);
}

int checkpoint_init(struct checkpointer **out, uv_loop_t *loop, const char *dir,
                    pthread_mutex_t *commit_lock, void (*done)(void *arg, uint64_t seq, int rc),
                    void *arg)
{
	struct checkpointer *cp = calloc(1, sizeof(*cp));

	if (!cp)
		return -ENOMEM;
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		free(cp);
		return -errno;
	}
	cp->loop = loop;
	cp->commit_lock = commit_lock;
	snprintf(cp->dir, sizeof(cp->dir), "%s", dir);
	/* snapshots a stopped daemon was still writing: nothing can complete them now */
	remove_snapshots(dir, UINT64_MAX, 1);
	cp->done = done;
	cp->arg = arg;
	*out = cp;
	return 0;
}

int checkpoint_busy(const struct checkpointer *cp)
{
	return cp->in_flight || (cp->failures && uv_now(cp->loop) < cp->retry_at);
}

uint64_t checkpoint_failures(const struct checkpointer *cp)
{
	return cp->failures;
}

int checkpoint_start(struct checkpointer *cp, struct shm *m, uint64_t seq, int64_t now)
{
	int rc;

	if (checkpoint_busy(cp) || cp->closed)
		return SC_EUNAVAILABLE;
	if ((rc = shm_snap_begin(m, &cp->snap)) != 0) {
		failed(cp, seq, rc);
		return rc;
	}
	cp->seq = seq;
	cp->now = now;
	cp->work.data = cp;
	if (uv_queue_work(cp->loop, &cp->work, work, work_done) != 0) {
		shm_snap_end(cp->snap);
		shm_snap_free(cp->snap);
		cp->snap = NULL;
		failed(cp, seq, SC_EINTERNAL);
		return SC_EINTERNAL;
	}
	cp->in_flight = 1;
	return 0;
}

void checkpoint_close(struct checkpointer *cp, void (*closed)(void *arg), void *arg)
{
	if (cp->in_flight) {
		cp->closed = closed;
		cp->closed_arg = arg;
		return;
	}
	closed(arg);
}

void checkpoint_free(struct checkpointer *cp)
{
	free(cp);
}

/* ------------------------------------------------------------ restoring */

int checkpoint_find(const char *dir, uint64_t max_seq, uint64_t *seq)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	*seq = 0;
	while (d && (e = readdir(d)) != NULL) {
		uint64_t s;
		int tmp;

		if (snapshot_name(e->d_name, &s, &tmp) && !tmp && s <= max_seq && s > *seq)
			*seq = s;
	}
	if (d)
		closedir(d);
	return *seq ? 0 : SC_ENOTFOUND;
}

/* Reads the header of a snapshot: its segment header and capacities. */
static int check_snapshot(const char *p, size_t len, uint64_t *seq, const char **why)
{
	uint32_t version, hsize, crc;

	if (len < CKPT_HEAD + sizeof(struct shm_header) + 4 || memcmp(p, CKPT_MAGIC, 8) != 0) {
		*why = "not a sidecard snapshot";
		return SC_EINVAL;
	}
	memcpy(&version, p + 8, 4);
	memcpy(&hsize, p + 12, 4);
	if (version != SHM_LAYOUT_VERSION || hsize != sizeof(struct shm_header)) {
		*why = "made by another layout version";
		return SC_EINVAL;
	}
	memcpy(&crc, p + len - 4, 4);
	if (crc != ledger_crc32c(0, p, len - 4)) {
		*why = "checksum mismatch";
		return SC_EINVAL;
	}
	memcpy(seq, p + 16, 8);
	return 0;
}

/* Copies the snapshot's records into the new segment m. */
static int load_tables(struct shm *m, const char *p, size_t len, const char **why)
{
	size_t off = CKPT_HEAD + sizeof(struct shm_header);

	for (unsigned t = 0; t < SHM_TABLES; t++) {
		struct shm_table tab;
		uint32_t count;

		shm_table(m, m->hdr, t, &tab);

		if (off + 4 > len - 4)
			goto bad;
		memcpy(&count, p + off, 4);
		off += 4;
		for (uint32_t i = 0; i < count; i++) {
			uint32_t slot;
			struct shm_rec *rec;

			if (off + 4 + tab.rec_size > len - 4)
				goto bad;
			memcpy(&slot, p + off, 4);
			if (slot >= tab.end)
				goto bad;
			rec = (struct shm_rec *)(void *)(tab.base + (size_t)slot * tab.rec_size);
			memcpy(rec, p + off + 4, tab.rec_size);
			rec->seq = 0;
			off += 4 + tab.rec_size;
		}
	}
	return 0;
bad:
	*why = "records past the end or outside the table";
	return SC_EINVAL;
}

int checkpoint_restore(const char *dir, uint64_t seq, const char *shm_path, char *err,
                       size_t errlen)
{
	char path[4200], sealerr[300];
	const char *why = NULL;
	struct shm_header saved;
	struct shm_caps caps;
	struct shm m;
	struct stat sb;
	uint64_t got;
	char *p;
	int fd, created, rc;

	checkpoint_path(dir, seq, path, sizeof(path));
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(fd, &sb) != 0) {
		rc = -errno;
		sc_errorf(err, errlen, "%s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return rc;
	}
	p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (p == MAP_FAILED) {
		sc_errorf(err, errlen, "%s: mmap: %s", path, strerror(errno));
		return -errno;
	}
	rc = check_snapshot(p, (size_t)sb.st_size, &got, &why);
	if (rc == 0) {
		memcpy(&saved, p + CKPT_HEAD, sizeof(saved));
		caps = (struct shm_caps){saved.org_cap, saved.agent_cap, saved.rule_cap,
		                         saved.hold_cap, saved.txn_cap, saved.event_cap, saved.task_cap,
		                         saved.price_cap, saved.alert_cap, saved.text_cap,
		                         saved.keys_per_agent};
		unlink(shm_path);
		rc = shm_open_rw(&m, shm_path, &caps, &created, err, errlen);
		if (rc == 0) {
			saved.seq = 0;
			saved.busy = 0;
			saved.serving = SHM_SERVING_STOPPED; /* until the daemon has replayed the rest */
			saved.writer_pid = m.hdr->writer_pid;
			memcpy(m.hdr, &saved, sizeof(saved));
			rc = load_tables(&m, p, (size_t)sb.st_size, &why);
			if (rc == 0 && (rc = shm_seal_restored(&m, sealerr, sizeof(sealerr))) != 0)
				why = sealerr;
			shm_close(&m);
			if (rc != 0)
				unlink(shm_path);
		}
	}
	munmap(p, (size_t)sb.st_size);
	if (why)
		sc_errorf(err, errlen, "%s: %s", path, why);
	return rc;
}
