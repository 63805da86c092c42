/*
 * ledger_repair.c: the offline repair `sidecardctl ledger repair
 * --truncate-at-damage`: it moves the damage the ledger's scan found
 * (ledger_format.c), and everything after it, into the quarantine
 * (ledger_quarantine.c), with the snapshots that would no longer match.
 *
 * Threads: sidecardctl's, while it holds the state directory's lock, so no
 * daemon writes the files meanwhile; no state.
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
