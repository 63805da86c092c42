/*
 * checkpoint.c: snapshots of the whole state, so that recovery replays only
 * the ledger after the newest one, and the restore of a snapshot into a new
 * state segment.
 *
 * Threads: checkpoint_start and the callbacks run on the loop thread; the
 * file is written by a libuv pool thread from a private copy, so the loop
 * never waits for the disk. checkpoint_find and checkpoint_restore run on
 * the main thread during start-up.
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
 *   then, for the org, agent, rule, hold, transaction, event, task, price, alert and
 *   text tables in turn:
 *          4     count of used records
 *          count x (4-byte slot, the record's bytes)
 *   last   4     CRC32C of every byte before it
 *
 * Only used records are copied, so a snapshot costs what the state holds,
 * not what its capacity is. A snapshot is written to a temporary name,
 * fsynced, renamed, and the directory fsynced: it exists whole or not at all.
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
#include "ledger.h"
#include "log.h"

#define CKPT_MAGIC "SCCKPT01"
#define CKPT_HEAD 32u

struct checkpointer {
	uv_loop_t *loop;
	char dir[4096];
	uv_work_t work;
	int in_flight;
	char *buf;
	size_t len;
	uint64_t seq;
	int rc;
	void (*done)(void *arg, uint64_t seq, int rc);
	void *arg;
	void (*closed)(void *arg);
	void *closed_arg;
};

struct table_desc {
	size_t off_field; /* offset of the table's pointer in struct shm */
	size_t cap_field; /* offset of its capacity in struct shm_header */
	size_t rec_size;
	size_t top_field; /* offset of its uint32_t high-water mark in struct shm_header, or */
	size_t next_field; /* of the uint64_t next id of a ring (0: the other field is set) */
};

/* ... is TOP(field) or RING(field). */
#define TABLE(table, cap, type, ...)                                                      \
	{offsetof(struct shm, table), offsetof(struct shm_header, cap), sizeof(struct type), \
	 __VA_ARGS__}
#define TOP(field) offsetof(struct shm_header, field), 0
#define RING(field) 0, offsetof(struct shm_header, field)

static const struct table_desc tables[] = {
	TABLE(orgs, org_cap, shm_org, TOP(org_top)),
	TABLE(agents, agent_cap, shm_agent, TOP(agent_top)),
	TABLE(rules, rule_cap, shm_rule, TOP(rule_top)),
	TABLE(holds, hold_cap, shm_hold, TOP(hold_top)),
	TABLE(txns, txn_cap, shm_txn, RING(next_txn_id)),
	TABLE(events, event_cap, shm_event, RING(next_event_id)),
	TABLE(tasks, task_cap, shm_task, TOP(task_top)),
	TABLE(prices, price_cap, shm_price, TOP(price_top)),
	TABLE(alerts, alert_cap, shm_alert, RING(next_alert_id)),
	TABLE(texts, text_cap, shm_text, TOP(text_top)),
};

#define N_TABLES (sizeof(tables) / sizeof(tables[0]))

static char *table_base(const struct shm *m, const struct table_desc *t)
{
	char *base;

	memcpy(&base, (const char *)m + t->off_field, sizeof(base));
	return base;
}

static uint32_t table_cap(const struct shm_header *h, const struct table_desc *t)
{
	uint32_t cap;

	memcpy(&cap, (const char *)h + t->cap_field, sizeof(cap));
	return cap;
}

/*
 * One past the last slot that may be used: slots above were never written,
 * and reading them would make the pages of an empty table tail resident.
 */
static uint32_t table_end(const struct shm_header *h, const struct table_desc *t)
{
	uint32_t cap = table_cap(h, t), top;
	uint64_t next;

	if (t->top_field) {
		memcpy(&top, (const char *)h + t->top_field, sizeof(top));
		return top < cap ? top : cap;
	}
	memcpy(&next, (const char *)h + t->next_field, sizeof(next));
	return next - 1 < cap ? (uint32_t)(next - 1) : cap;
}

void checkpoint_path(const char *dir, uint64_t seq, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%016" PRIx64 ".snap", dir, seq);
}

/* --------------------------------------------------------------- taking */

/* Loop thread: copies the used records into one buffer. */
static int serialize(const struct shm *m, uint64_t seq, int64_t now, char **out, size_t *len)
{
	size_t size = CKPT_HEAD + sizeof(struct shm_header) + 4, off;
	uint32_t u32, crc;
	char *b;

	for (size_t t = 0; t < N_TABLES; t++) {
		const char *base = table_base(m, &tables[t]);
		uint32_t end = table_end(m->hdr, &tables[t]), used = 0;

		for (uint32_t i = 0; i < end; i++)
			used += ((const struct shm_rec *)(base + i * tables[t].rec_size))->used != 0;
		size += 4 + (size_t)used * (4 + tables[t].rec_size);
	}
	if (!(b = malloc(size)))
		return -ENOMEM;
	memcpy(b, CKPT_MAGIC, 8);
	u32 = SHM_LAYOUT_VERSION;
	memcpy(b + 8, &u32, 4);
	u32 = sizeof(struct shm_header);
	memcpy(b + 12, &u32, 4);
	memcpy(b + 16, &seq, 8);
	memcpy(b + 24, &now, 8);
	memcpy(b + CKPT_HEAD, m->hdr, sizeof(struct shm_header));
	off = CKPT_HEAD + sizeof(struct shm_header);
	for (size_t t = 0; t < N_TABLES; t++) {
		const char *base = table_base(m, &tables[t]);
		uint32_t end = table_end(m->hdr, &tables[t]);
		size_t count_at = off;

		u32 = 0;
		off += 4;
		for (uint32_t i = 0; i < end; i++) {
			const char *rec = base + i * tables[t].rec_size;

			if (!((const struct shm_rec *)rec)->used)
				continue;
			memcpy(b + off, &i, 4);
			memcpy(b + off + 4, rec, tables[t].rec_size);
			off += 4 + tables[t].rec_size;
			u32++;
		}
		memcpy(b + count_at, &u32, 4);
	}
	crc = ledger_crc32c(0, b, off);
	memcpy(b + off, &crc, 4);
	*out = b;
	*len = off + 4;
	return 0;
}

static int write_file(const char *dir, uint64_t seq, const char *buf, size_t len)
{
	char path[4200], tmp[4210];
	size_t done = 0;
	int fd, rc = 0;

	checkpoint_path(dir, seq, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd < 0)
		return -errno;
	while (rc == 0 && done < len) {
		ssize_t n = write(fd, buf + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			rc = n < 0 ? -errno : -EIO;
		else
			done += (size_t)n;
	}
	if (rc == 0 && fsync(fd) != 0)
		rc = -errno;
	close(fd);
	if (rc == 0 && rename(tmp, path) != 0)
		rc = -errno;
	if (rc == 0) {
		fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0 || fsync(fd) != 0)
			rc = -errno;
		if (fd >= 0)
			close(fd);
	}
	if (rc != 0)
		unlink(tmp);
	return rc;
}

static void work(uv_work_t *w)
{
	struct checkpointer *cp = w->data;

	cp->rc = write_file(cp->dir, cp->seq, cp->buf, cp->len);
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

static void work_done(uv_work_t *w, int status)
{
	struct checkpointer *cp = w->data;

	free(cp->buf);
	cp->buf = NULL;
	cp->in_flight = 0;
	if (status != 0)
		cp->rc = SC_EINTERNAL;
	if (cp->done)
		cp->done(cp->arg, cp->seq, cp->rc);
	if (cp->closed)
		cp->closed(cp->closed_arg);
}

int checkpoint_init(struct checkpointer **out, uv_loop_t *loop, const char *dir,
                    void (*done)(void *arg, uint64_t seq, int rc), void *arg)
{
	struct checkpointer *cp = calloc(1, sizeof(*cp));

	if (!cp)
		return -ENOMEM;
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		free(cp);
		return -errno;
	}
	cp->loop = loop;
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
	return cp->in_flight;
}

int checkpoint_start(struct checkpointer *cp, const struct shm *m, uint64_t seq, int64_t now)
{
	int rc;

	if (cp->in_flight || cp->closed)
		return SC_EUNAVAILABLE;
	if ((rc = serialize(m, seq, now, &cp->buf, &cp->len)) != 0)
		return rc;
	cp->seq = seq;
	cp->work.data = cp;
	if (uv_queue_work(cp->loop, &cp->work, work, work_done) != 0) {
		free(cp->buf);
		cp->buf = NULL;
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

	for (size_t t = 0; t < N_TABLES; t++) {
		char *base = table_base(m, &tables[t]);
		uint32_t end = table_end(m->hdr, &tables[t]), count;

		if (off + 4 > len - 4)
			goto bad;
		memcpy(&count, p + off, 4);
		off += 4;
		for (uint32_t i = 0; i < count; i++) {
			uint32_t slot;
			struct shm_rec *rec;

			if (off + 4 + tables[t].rec_size > len - 4)
				goto bad;
			memcpy(&slot, p + off, 4);
			if (slot >= end)
				goto bad;
			rec = (struct shm_rec *)(base + (size_t)slot * tables[t].rec_size);
			memcpy(rec, p + off + 4, tables[t].rec_size);
			rec->seq = 0;
			off += 4 + tables[t].rec_size;
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
		                         saved.price_cap, saved.alert_cap, saved.text_cap};
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
