/*
 * ledger_repair.c: taking bytes out of the ledger without losing them. The
 * quarantine (<ledger>/quarantine/) receives every byte that recovery or a
 * repair removes, and its repairs.log notes each removal; the offline
 * repair `sidecardctl ledger repair --truncate-at-damage` moves the damage
 * the scan found, and everything after it, there.
 *
 * Threads: any; no state. The daemon calls ledger_cut and the notes from
 * its ledger check (ledger_format.c) before it serves; sidecardctl calls
 * ledger_repair_truncate while it holds the state directory's lock, so no
 * daemon writes the files meanwhile.
 *
 * Order of a removal: the bytes are written to a new file of the
 * quarantine, which is synced, and the directory too, before the ledger
 * file is zeroed, cut or renamed. A crash in between leaves the bytes in
 * both places, never in neither; running the repair again makes a second
 * copy under a new name (names never overwrite: <name>, <name>.1, ...).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "fsutil.h"
#include "ledger.h"
#include "sidecard.h"

#define CHUNK 65536

/* dir/quarantine into q, created (and the ledger directory synced) if missing. */
static int quarantine_dir(const char *dir, char *q, size_t qlen)
{
	snprintf(q, qlen, "%s/%s", dir, LEDGER_QUARANTINE);
	if (mkdir(q, 0700) == 0)
		return fs_sync_dir(dir);
	return errno == EEXIST ? 0 : -errno;
}

/* Creates q/base, or q/base.N if it exists: a quarantine file never replaces another. */
static int new_file(const char *q, const char *base, char *path, size_t len)
{
	for (unsigned n = 0; n < 1000; n++) {
		int fd;

		if (n == 0)
			snprintf(path, len, "%s/%s", q, base);
		else
			snprintf(path, len, "%s/%s.%u", q, base, n);
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd >= 0 || errno != EEXIST)
			return fd >= 0 ? fd : -errno;
	}
	return -EEXIST;
}

/* The end of the non-zero bytes of fd in [from, to): from if they are all zero. */
static int data_end(int fd, uint64_t from, uint64_t to, char *buf, uint64_t *end)
{
	*end = from;
	for (uint64_t at = from; at < to;) {
		size_t n = to - at < CHUNK ? (size_t)(to - at) : CHUNK;
		int rc = fs_pread_all(fd, buf, n, at);

		if (rc != 0)
			return rc;
		for (size_t i = n; i > 0; i--)
			if (buf[i - 1] != 0) {
				*end = at + i;
				break;
			}
		at += n;
	}
	return 0;
}

int ledger_cut(const char *dir, const char *path, uint64_t offset, int zeroed, char *qpath,
               size_t qlen)
{
	char q[4200], base[4200], *buf = malloc(CHUNK);
	const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	struct stat sb;
	uint64_t end = 0;
	int fd = -1, qfd = -1, rc;

	qpath[0] = '\0';
	if (!buf)
		return -ENOMEM;
	if ((fd = open(path, O_RDWR | O_CLOEXEC)) < 0 || fstat(fd, &sb) != 0) {
		rc = -errno;
		goto out;
	}
	if (zeroed)
		rc = data_end(fd, offset, (uint64_t)sb.st_size, buf, &end);
	else
		end = (uint64_t)sb.st_size, rc = 0;
	if (rc == 0 && end > offset) {
		snprintf(base, sizeof(base), "%s-%" PRIu64 ".bin", name, offset);
		if ((rc = quarantine_dir(dir, q, sizeof(q))) == 0 &&
		    (rc = qfd = new_file(q, base, qpath, qlen)) >= 0) {
			rc = 0;
			for (uint64_t at = offset; rc == 0 && at < end;) {
				size_t n = end - at < CHUNK ? (size_t)(end - at) : CHUNK;

				if ((rc = fs_pread_all(fd, buf, n, at)) == 0)
					rc = fs_pwrite_all(qfd, buf, n, at - offset);
				at += n;
			}
			if (rc == 0 && fsync(qfd) != 0)
				rc = -errno;
			if (rc == 0)
				rc = fs_sync_dir(q);
		}
	}
	/* only once the bytes are safe in the quarantine */
	if (rc == 0 && zeroed) {
		memset(buf, 0, CHUNK);
		for (uint64_t at = offset; rc == 0 && at < end; at += CHUNK)
			rc = fs_pwrite_all(fd, buf, end - at < CHUNK ? (size_t)(end - at) : CHUNK, at);
		if (rc == 0 && fdatasync(fd) != 0)
			rc = -errno;
	} else if (rc == 0 && (ftruncate(fd, (off_t)offset) != 0 || fdatasync(fd) != 0)) {
		rc = -errno;
	}
out:
	if (qfd >= 0)
		close(qfd);
	if (fd >= 0)
		close(fd);
	free(buf);
	return rc;
}

int ledger_quarantine_file(const char *dir, const char *path, char *qpath, size_t qlen)
{
	char q[4200], from[4200];
	const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	int fd, rc;

	qpath[0] = '\0';
	if ((rc = quarantine_dir(dir, q, sizeof(q))) != 0)
		return rc;
	/* reserve a free name, then move the file over it */
	if ((fd = new_file(q, name, qpath, qlen)) < 0)
		return fd;
	close(fd);
	if (rename(path, qpath) != 0) {
		rc = -errno;
		unlink(qpath);
		qpath[0] = '\0';
		return rc;
	}
	snprintf(from, sizeof(from), "%.*s", (int)(name - path), path);
	if ((rc = fs_sync_dir(q)) == 0)
		rc = fs_sync_dir(from[0] ? from : ".");
	return rc;
}

int ledger_repairs_note(const char *dir, const char *fmt, ...)
{
	char q[4200], path[4300], line[8192], stamp[32];
	time_t now = time(NULL);
	struct tm tm;
	va_list ap;
	int fd, n, rc;

	if ((rc = quarantine_dir(dir, q, sizeof(q))) != 0)
		return rc;
	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
	n = snprintf(line, sizeof(line), "%s ", stamp);
	va_start(ap, fmt);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	snprintf(path, sizeof(path), "%s/%s", q, LEDGER_REPAIRS_LOG);
	if ((fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600)) < 0)
		return -errno;
	/*
	 * A recovery's note is an index of its quarantine file, which is synced
	 * and named after the segment and offset: it is not worth a sync per
	 * start. An operator's repair is the record of a choice: synced.
	 */
	rc = write(fd, line, (size_t)n) == n &&
	             (strncmp(line + strlen(stamp) + 1, LEDGER_NOTE_REPAIR,
	                      strlen(LEDGER_NOTE_REPAIR)) != 0 || fdatasync(fd) == 0)
	         ? 0 : -errno;
	close(fd);
	return rc;
}

int ledger_repairs_print(const char *dir, FILE *out, const char *prefix, unsigned *recoveries)
{
	char path[4300], line[8192];
	FILE *f;
	int n = 0;

	*recoveries = 0;
	snprintf(path, sizeof(path), "%s/%s/%s", dir, LEDGER_QUARANTINE, LEDGER_REPAIRS_LOG);
	if ((f = fopen(path, "r")) == NULL)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		const char *note = strchr(line, ' ');

		if (note &&
		    strncmp(note + 1, LEDGER_NOTE_RECOVERY, strlen(LEDGER_NOTE_RECOVERY)) == 0) {
			(*recoveries)++;
			continue;
		}
		fprintf(out, "%s%s", prefix, line);
		n++;
	}
	fclose(f);
	return n;
}

/* ------------------------------------------------------------ the repair */

/* The sequence number a file name starts with (16 hex digits) if it ends in suffix; else 0. */
static uint64_t named_seq(const char *name, const char *suffix)
{
	char *end;
	uint64_t seq = strtoull(name, &end, 16);

	return end == name + 16 && strcmp(end, suffix) == 0 ? seq : 0;
}

struct plan {
	uint64_t first_left;  /* the first sequence number of the first segment kept (0: none) */
	uint64_t base;        /* the newest snapshot kept (0: none) */
	uint64_t *moved_segs; /* later segments, moved whole */
	size_t n_segs;
	uint64_t *moved_snaps; /* snapshots at or after the damage */
	size_t n_snaps;
};

static int push(uint64_t **v, size_t *n, uint64_t x)
{
	uint64_t *nv = realloc(*v, (*n + 1) * sizeof(**v));

	if (!nv)
		return -ENOMEM;
	nv[(*n)++] = x;
	*v = nv;
	return 0;
}

/* What the repair at (damaged segment dseq, offset, record seq) moves and keeps. */
static int make_plan(const char *dir, const char *ckpt_dir, uint64_t dseq, uint64_t offset,
                     uint64_t seq, struct plan *p)
{
	DIR *d;
	struct dirent *e;
	int rc = 0;

	memset(p, 0, sizeof(*p));
	if ((d = opendir(dir)) == NULL)
		return -errno;
	while (rc == 0 && (e = readdir(d)) != NULL) {
		uint64_t s = named_seq(e->d_name, ".log");

		if (s == 0)
			continue;
		if (s > dseq)
			rc = push(&p->moved_segs, &p->n_segs, s);
		else if ((s < dseq || offset > 0) && (p->first_left == 0 || s < p->first_left))
			p->first_left = s;
	}
	closedir(d);
	if (rc == 0 && (d = opendir(ckpt_dir)) != NULL) {
		while (rc == 0 && (e = readdir(d)) != NULL) {
			uint64_t s = named_seq(e->d_name, ".snap");

			if (s == 0)
				continue;
			if (s >= seq)
				rc = push(&p->moved_snaps, &p->n_snaps, s);
			else if (s > p->base)
				p->base = s;
		}
		closedir(d);
	}
	return rc;
}

/*
 * Whether the daemon can rebuild its state from what the plan keeps: the
 * ledger from record 1, or a snapshot kept and the ledger from the record
 * after it, up to seq - 1 (nothing at all is a new, empty ledger).
 */
static int replayable(const struct plan *p, uint64_t seq)
{
	if (seq <= 1)
		return p->first_left <= 1;
	if (p->first_left == 0 || p->first_left > seq - 1)
		return 0;
	return p->first_left == 1 || (p->base && p->base + 1 >= p->first_left);
}

#define SAY(...)                                                             \
	do {                                                                 \
		size_t used_ = strlen(report);                               \
		snprintf(report + used_, replen - used_, __VA_ARGS__);       \
	} while (0)

int ledger_repair_truncate(const char *dir, const char *ckpt_dir, char *report, size_t replen,
                           char *err, size_t errlen)
{
	struct ledger_scan_result res;
	struct plan p;
	char scan_err[4352], dpath[4200], qpath[4300], name[32];
	const char *dname;
	uint64_t dseq, seq;
	char hdr[LEDGER_FILE_HEADER];
	int rc, fd, zeroed;

	report[0] = '\0';
	rc = ledger_scan(dir, 0, 0, NULL, NULL, &res, scan_err, sizeof(scan_err));
	if (rc == 0) {
		SAY("no damage in %s: nothing was changed\n", dir);
		if (res.torn)
			SAY("%s: a torn tail at offset %" PRIu64 ", which the daemon removes at its "
			    "next start (its bytes kept in %s/%s)\n",
			    res.tail_file, res.tail_offset, dir, LEDGER_QUARANTINE);
		return 0;
	}
	if (!res.damaged) {
		sc_errorf(err, errlen, "%s", scan_err);
		return rc;
	}
	seq = res.damage_seq;
	dname = strrchr(res.damage_file, '/') ? strrchr(res.damage_file, '/') + 1 : res.damage_file;
	dseq = named_seq(dname, ".log");
	if ((rc = make_plan(dir, ckpt_dir, dseq, res.damage_offset, seq, &p)) != 0) {
		sc_errorf(err, errlen, "%s: %s", dir, strerror(-rc));
		goto out;
	}
	if (!replayable(&p, seq)) {
		sc_errorf(err, errlen,
		          "%s; truncating there would leave a ledger the state cannot be rebuilt "
		          "from (its segments before record %" PRIu64 " were removed under a snapshot "
		          "at or after the damage): nothing was changed; put back the ledger and "
		          "checkpoints directories from a backup",
		          scan_err, seq);
		rc = SC_EINVAL;
		goto out;
	}
	SAY("damage: %s\n", scan_err);
	/* snapshots first: a crash before the cut leaves the damage to find again */
	for (size_t i = 0; i < p.n_snaps; i++) {
		char snap[4300];

		snprintf(snap, sizeof(snap), "%s/%016" PRIx64 ".snap", ckpt_dir, p.moved_snaps[i]);
		if ((rc = ledger_quarantine_file(dir, snap, qpath, sizeof(qpath))) != 0) {
			sc_errorf(err, errlen, "%s: cannot move it to quarantine: %s", snap,
			          strerror(-rc));
			goto out;
		}
		SAY("the snapshot %s holds changes up to record %" PRIu64 ", at or after the "
		    "damaged record %" PRIu64 ": moved to %s\n",
		    snap, p.moved_snaps[i], seq, qpath);
		ledger_repairs_note(dir, LEDGER_NOTE_REPAIR "snapshot %s (changes up to "
		                    "record %" PRIu64 ") moved to %s",
		                    snap, p.moved_snaps[i], qpath);
	}
	for (size_t i = 0; i < p.n_segs; i++) {
		snprintf(name, sizeof(name), "%016" PRIx64 ".log", p.moved_segs[i]);
		snprintf(dpath, sizeof(dpath), "%s/%s", dir, name);
		if ((rc = ledger_quarantine_file(dir, dpath, qpath, sizeof(qpath))) != 0) {
			sc_errorf(err, errlen, "%s: cannot move it to quarantine: %s", dpath,
			          strerror(-rc));
			goto out;
		}
		SAY("the later segment %s: moved to %s\n", dpath, qpath);
		ledger_repairs_note(dir, LEDGER_NOTE_REPAIR "later segment %s moved to %s",
		                    dpath, qpath);
	}
	if (res.damage_offset == 0) {
		rc = ledger_quarantine_file(dir, res.damage_file, qpath, sizeof(qpath));
	} else {
		if ((fd = open(res.damage_file, O_RDONLY | O_CLOEXEC)) < 0) {
			rc = -errno;
		} else {
			rc = fs_pread_all(fd, hdr, sizeof(hdr), 0);
			close(fd);
		}
		zeroed = rc == 0 && (hdr[32] & LEDGER_SEGMENT_ZEROED) != 0;
		if (rc == 0)
			rc = ledger_cut(dir, res.damage_file, res.damage_offset, zeroed, qpath,
			                sizeof(qpath));
	}
	if (rc != 0) {
		sc_errorf(err, errlen, "%s: cannot move the damage at offset %" PRIu64
		          " to quarantine: %s", res.damage_file, res.damage_offset, strerror(-rc));
		goto out;
	}
	SAY("%s from offset %" PRIu64 " (record %" PRIu64 " and everything after it): moved to "
	    "%s\n",
	    res.damage_file, res.damage_offset, seq, qpath[0] ? qpath : "(nothing: all zero)");
	ledger_repairs_note(dir, LEDGER_NOTE_REPAIR "%s from offset %" PRIu64
	                    " (record %" PRIu64 " on) moved to %s; the ledger ends at record %"
	                    PRIu64 "; the damage: %s",
	                    res.damage_file, res.damage_offset, seq, qpath, seq - 1, scan_err);
	SAY("the ledger now ends at record %" PRIu64 "; the daemon rebuilds its state from %s\n",
	    seq - 1, p.base ? "the snapshot kept and the ledger after it" : "the ledger");
out:
	free(p.moved_segs);
	free(p.moved_snaps);
	return rc;
}
