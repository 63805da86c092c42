/*
 * ledger_quarantine.c: taking bytes out of the ledger without losing them.
 * The quarantine (<ledger>/quarantine/) receives every byte that recovery
 * or a repair removes, and its repairs.log notes each removal.
 *
 * Threads: any; no state. The daemon calls ledger_cut and the notes from
 * its ledger check (ledger_format.c) before it serves; the repair
 * (ledger_repair.c) while sidecardctl holds the state directory's lock, so
 * no daemon writes the files meanwhile.
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
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | FS_OPEN_FLAGS, 0600);
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
	if ((fd = open(path, O_RDWR | FS_OPEN_FLAGS)) < 0 || fstat(fd, &sb) != 0) {
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
	if ((fd = open(path, O_WRONLY | O_APPEND | O_CREAT | FS_OPEN_FLAGS, 0600)) < 0)
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
