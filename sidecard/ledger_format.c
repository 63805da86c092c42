/*
 * ledger_format.c: the ledger's on-disk format, its checksum, and the
 * reader shared by the daemon's recovery and `sidecardctl ledger`.
 *
 * Threads: any; no state. The reader maps one segment at a time read-only.
 * ledger_verify_start runs the check on a thread of its own, which the
 * caller's replay follows (struct ledger_verify says what they share).
 *
 * FORMAT
 *
 * The ledger is a directory of segment files named by the sequence number
 * of their first record in 16 hex digits: 0000000000000001.log, ... Each is
 * a 64-byte header followed by records back to back. All integers are
 * little-endian.
 *
 * Segment header (64 bytes):
 *
 *   offset size  field
 *   0      8     magic "SCLEDGER"
 *   8      4     format version (1)
 *   12     4     header size (64)
 *   16     8     sequence number of the first record in the file
 *   24     8     creation time, microseconds since the epoch
 *   32     4     segment flags: bit 0 (LEDGER_SEGMENT_ZEROED) the file is
 *                zero-filled ahead of the records; other bits zero
 *   36     24    reserved, zero
 *   60     4     CRC32C of bytes 0..59
 *
 * Record (32-byte header + body):
 *
 *   offset size  field
 *   0      4     magic 0x31524353 ("SCR1")
 *   4      4     body length in bytes (at most 64 MiB)
 *   8      8     sequence number: the previous record's plus one
 *   16     8     time of the change, microseconds since the epoch (UTC)
 *   24     2     type (enum ledger_type)
 *   26     2     record flags: bit 0 (LEDGER_RECORD_BATCH_START) the first
 *                record of a batch, in a zero-filled segment; other bits zero
 *   28     4     CRC32C of header bytes 0..27 followed by the body
 *   32     n     body: one msgpack object
 *
 * Method records (types 2 to 11, 13 and 14) have the body [params, result]: the named
 * arguments of the request as the client sent them and the result the daemon
 * answered. Replaying params at the record's time through the same code
 * reproduces the result exactly; recovery checks that it does. An expiry
 * record's body is [] and a settings record's body is a map. A clock record's
 * body is [step]: the signed microseconds by which the wall clock stepped
 * (docs/DESIGN.md, "Time"); the record's time is the time after the step.
 *
 * A record is durable once the fdatasync after its write returns. The
 * writer writes a batch of records with one pwrite and one fdatasync, and
 * starts the next batch only after that fdatasync returned, so a crash can
 * damage only the last batch of the last segment (a torn tail), never an
 * earlier one. Where the data of a segment ends depends on its kind:
 *
 * - Zero-filled segments (flag ZEROED; every segment this daemon writes).
 *   The file is filled with zero bytes, and synced, before records are
 *   written over them, so an fdatasync flushes data and never has to commit
 *   a new file size. The data ends at the first offset whose 32 bytes are
 *   all zero (a record header never is: its magic is not zero), or at the
 *   end of the file. Everything after that offset is zero. In the last
 *   segment, a bad record or non-zero bytes after the end are a torn tail
 *   unless a valid record flagged BATCH_START (of a later batch, whose
 *   sequence number is above the one expected at the bad offset) lies
 *   anywhere after it: a later batch proves that the damaged one was
 *   complete and synced, so the damage is corruption. Power loss may keep
 *   any subset of a torn batch's pages; none of them carries a later
 *   batch's start. Repair writes zeros from the end of the valid data to the
 *   end of the file and syncs them (the file keeps its preallocated size).
 *   In any other segment, a bad record, a zero header followed by non-zero
 *   bytes, or non-zero bytes after the end is corruption.
 *
 * - Appended segments (flag clear; written by earlier versions). The data
 *   ends at the end of the file. A partial record at the very end of the
 *   last segment (its header or body reaching the end of the file) is a
 *   torn tail, which repair cuts off with ftruncate; a bad record anywhere
 *   else is corruption. The writer never appends to such a segment again:
 *   it starts a new, zero-filled one.
 *
 * Corruption stops recovery with the file, offset and sequence number.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <msgpack.h>

#include "common.h"
#include "ledger.h"
#include "sidecard.h"

static const char *const type_names[LEDGER_TYPE_END] = {
	[LEDGER_SETTINGS] = "settings",
	[LEDGER_ORGS_CREATE] = "orgs.create",
	[LEDGER_AGENTS_CREATE] = "agents.create",
	[LEDGER_AGENTS_UPDATE] = "agents.update",
	[LEDGER_AGENTS_DELETE] = "agents.delete",
	[LEDGER_RULES_ADD] = "rules.add",
	[LEDGER_RULES_UPDATE] = "rules.update",
	[LEDGER_RULES_REMOVE] = "rules.remove",
	[LEDGER_WALLETS_UPDATE] = "wallets.update",
	[LEDGER_CHECK] = "check",
	[LEDGER_REPORT] = "report",
	[LEDGER_EXPIRE] = "expire",
	[LEDGER_WALLETS_TRANSFER] = "wallets.transfer",
	[LEDGER_WALLETS_ADJUST] = "wallets.adjust",
	[LEDGER_ROLL] = "roll",
	[LEDGER_ORGS_UPDATE] = "orgs.update",
	[LEDGER_WALLETS_CARVE] = "wallets.carve",
	[LEDGER_WALLETS_RELEASE] = "wallets.release",
	[LEDGER_PRICING_SET] = "pricing.set",
	[LEDGER_CLOCK] = "clock",
};

const char *ledger_type_name(unsigned type)
{
	return type < LEDGER_TYPE_END && type_names[type] ? type_names[type] : "unknown";
}

/* ---------------------------------------------------------------- CRC32C */

static uint32_t crc_table[256];

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		crc_table[i] = c;
	}
}

static uint32_t crc_soft(uint32_t crc, const unsigned char *p, size_t len)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, crc_init);
	while (len--)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const unsigned char *p,
                                                       size_t len)
{
	uint64_t c = crc;

	for (; len >= 8; p += 8, len -= 8) {
		uint64_t v;

		memcpy(&v, p, 8);
		c = __builtin_ia32_crc32di(c, v);
	}
	crc = (uint32_t)c;
	for (; len; p++, len--)
		crc = __builtin_ia32_crc32qi(crc, *p);
	return crc;
}
#endif

uint32_t ledger_crc32c(uint32_t crc, const void *buf, size_t len)
{
	crc = ~crc;
#if defined(__x86_64__)
	if (__builtin_cpu_supports("sse4.2"))
		return ~crc_hw(crc, buf, len);
#endif
	return ~crc_soft(crc, buf, len);
}

/* ------------------------------------------------------------- encoding */

static void put32(char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (char)(v >> (8 * i));
}

static void put64(char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (char)(v >> (8 * i));
}

static uint32_t get32(const char *p)
{
	uint32_t v = 0;

	for (int i = 3; i >= 0; i--)
		v = v << 8 | (unsigned char)p[i];
	return v;
}

static uint64_t get64(const char *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | (unsigned char)p[i];
	return v;
}

void ledger_encode_file_header(char *out, uint64_t first_seq, int64_t now, unsigned flags)
{
	memset(out, 0, LEDGER_FILE_HEADER);
	memcpy(out, LEDGER_FILE_MAGIC, 8);
	put32(out + 8, LEDGER_FILE_VERSION);
	put32(out + 12, LEDGER_FILE_HEADER);
	put64(out + 16, first_seq);
	put64(out + 24, (uint64_t)now);
	put32(out + 32, flags);
	put32(out + 60, ledger_crc32c(0, out, 60));
}

void ledger_encode_header(char *out, uint64_t seq, int64_t time, unsigned type, unsigned flags,
                          const char *body, uint32_t body_len)
{
	put32(out, LEDGER_RECORD_MAGIC);
	put32(out + 4, body_len);
	put64(out + 8, seq);
	put64(out + 16, (uint64_t)time);
	out[24] = (char)(type & 0xff);
	out[25] = (char)(type >> 8);
	out[26] = (char)(flags & 0xff);
	out[27] = (char)(flags >> 8);
	put32(out + 28, ledger_crc32c(ledger_crc32c(0, out, 28), body, body_len));
}

/* -------------------------------------------------------------- reading */

struct segment {
	char name[32];
	uint64_t first_seq;
};

static int segment_cmp(const void *a, const void *b)
{
	const struct segment *x = a, *y = b;

	return x->first_seq < y->first_seq ? -1 : x->first_seq > y->first_seq;
}

/* The segment files of dir, sorted; *n = 0 for a missing directory. */
static int list_segments(const char *dir, struct segment **out, size_t *n, char *err,
                         size_t errlen)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	struct segment *v = NULL;
	size_t cap = 0;

	*out = NULL;
	*n = 0;
	if (!d) {
		if (errno == ENOENT)
			return 0;
		sc_errorf(err, errlen, "%s: %s", dir, strerror(errno));
		return -errno;
	}
	while ((e = readdir(d)) != NULL) {
		char *end;
		uint64_t seq;

		if (strlen(e->d_name) != 20 || strcmp(e->d_name + 16, ".log") != 0)
			continue;
		seq = strtoull(e->d_name, &end, 16);
		if (end != e->d_name + 16)
			continue;
		if (*n == cap) {
			struct segment *nv = realloc(v, (cap = cap ? 2 * cap : 16) * sizeof(*v));

			if (!nv) {
				free(v);
				closedir(d);
				return -ENOMEM;
			}
			v = nv;
		}
		snprintf(v[*n].name, sizeof(v[*n].name), "%s", e->d_name);
		v[(*n)++].first_seq = seq;
	}
	closedir(d);
	qsort(v, *n, sizeof(*v), segment_cmp);
	*out = v;
	return 0;
}

/* Checks a segment header; 0 or SC_EINVAL with a reason. */
static int check_file_header(const char *p, size_t size, uint64_t want_first, const char **why)
{
	if (size < LEDGER_FILE_HEADER) {
		*why = "shorter than its header";
		return SC_EINVAL;
	}
	if (memcmp(p, LEDGER_FILE_MAGIC, 8) != 0 || get32(p + 8) != LEDGER_FILE_VERSION ||
	    get32(p + 12) != LEDGER_FILE_HEADER) {
		*why = "not a ledger segment of format version 1";
		return SC_EINVAL;
	}
	if (get32(p + 60) != ledger_crc32c(0, p, 60)) {
		*why = "header checksum mismatch";
		return SC_EINVAL;
	}
	if (get64(p + 16) != want_first) {
		*why = "first sequence number does not match the file name";
		return SC_EINVAL;
	}
	return 0;
}

struct scan {
	const char *dir;
	uint64_t from_seq;
	unsigned flags;
	ledger_visit_fn visit;
	void *arg;
	struct ledger_scan_result *res;
	char *err;
	size_t errlen;
	uint64_t next_seq; /* expected next sequence number, 0 before the first */
};

/* Why the record at p (avail bytes left) is not valid, or NULL. */
static const char *record_problem(const char *p, size_t avail, uint64_t expect, int check_crc,
                                  int *partial)
{
	uint32_t len;

	*partial = 0;
	if (avail < LEDGER_RECORD_HEADER) {
		*partial = 1;
		return "partial record header";
	}
	len = get32(p + 4);
	if (get32(p) != LEDGER_RECORD_MAGIC)
		return "bad record magic";
	if (len > LEDGER_RECORD_MAX)
		return "record length out of range";
	if (avail - LEDGER_RECORD_HEADER < len) {
		*partial = 1;
		return "partial record";
	}
	if (check_crc &&
	    get32(p + 28) != ledger_crc32c(ledger_crc32c(0, p, 28), p + LEDGER_RECORD_HEADER, len))
		return "checksum mismatch";
	if (expect && get64(p + 8) != expect)
		return "sequence number out of order";
	return NULL;
}

/* Writes zeros over [from, to) of fd and syncs them. 0 or -errno. */
static int zero_range(int fd, uint64_t from, uint64_t to)
{
	static const char zero[65536];

	while (from < to) {
		size_t n = to - from < sizeof(zero) ? (size_t)(to - from) : sizeof(zero);
		ssize_t w = pwrite(fd, zero, n, (off_t)from);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		from += (uint64_t)w;
	}
	return fdatasync(fd) != 0 ? -errno : 0;
}

/*
 * Removes a torn tail from the last segment: a zero-filled segment is
 * zeroed again from offset to its end (size), an appended one is cut.
 */
static int cut_tail(struct scan *s, const char *path, uint64_t offset, uint64_t size,
                    int zeroed, const char *why)
{
	int fd, rc = 0;

	s->res->torn = 1;
	if (!(s->flags & LEDGER_SCAN_REPAIR))
		return 0;
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		rc = -errno;
	else if (zeroed)
		rc = zero_range(fd, offset, size);
	else if (ftruncate(fd, (off_t)offset) != 0 || fdatasync(fd) != 0)
		rc = -errno;
	if (fd >= 0)
		close(fd);
	if (rc != 0)
		sc_errorf(s->err, s->errlen, "%s: cannot remove the torn tail at offset %" PRIu64
		          ": %s", path, offset, strerror(-rc));
	else
		sc_errorf(s->err, s->errlen, "%s: torn tail (%s) %s at offset %" PRIu64, path, why,
		          zeroed ? "zeroed from" : "cut off", offset);
	return rc;
}

static int all_zero(const char *p, size_t n)
{
	static const char zero[4096];

	for (; n >= sizeof(zero); p += sizeof(zero), n -= sizeof(zero))
		if (memcmp(p, zero, sizeof(zero)) != 0)
			return 0;
	return memcmp(p, zero, n) == 0;
}

/*
 * Whether p[from, size) holds a valid record flagged BATCH_START whose
 * sequence number is above seq: the start of a batch written after the one
 * that holds seq, which therefore was complete and synced.
 */
static int later_batch(const char *p, uint64_t from, uint64_t size, uint64_t seq)
{
	static const char magic[4] = {0x53, 0x43, 0x52, 0x31}; /* LEDGER_RECORD_MAGIC */
	const char *q = p + from, *end = p + size;
	int partial;

	while (q < end && (q = memmem(q, (size_t)(end - q), magic, sizeof(magic))) != NULL) {
		if (record_problem(q, (size_t)(end - q), 0, 1, &partial) == NULL &&
		    ((unsigned char)q[26] & LEDGER_RECORD_BATCH_START) && get64(q + 8) > seq)
			return 1;
		q++;
	}
	return 0;
}

/*
 * The last segment has no valid header: it was being created when the
 * daemon stopped, so it holds no record. It is removed (repair) and the
 * previous segment is the tail again.
 */
static int drop_headless(struct scan *s, const char *path, const char *prev_file,
                         uint64_t prev_offset, const char *why)
{
	s->res->torn = 1;
	s->res->segments--;
	snprintf(s->res->tail_file, sizeof(s->res->tail_file), "%s", prev_file);
	s->res->tail_offset = prev_offset;
	if ((s->flags & LEDGER_SCAN_REPAIR) && unlink(path) != 0) {
		sc_errorf(s->err, s->errlen, "%s: cannot remove the half-created segment: %s", path,
		          strerror(errno));
		return -errno;
	}
	sc_errorf(s->err, s->errlen, "%s: torn tail (%s): a segment that was never completed%s",
	          path, why, (s->flags & LEDGER_SCAN_REPAIR) ? " was removed" : "");
	return 0;
}

static int scan_segment(struct scan *s, const struct segment *seg, int last)
{
	char path[4096], prev_file[4096];
	struct stat sb;
	const char *p, *why = NULL;
	uint64_t off = LEDGER_FILE_HEADER, prev_offset = s->res->tail_offset, size;
	int fd, zeroed, rc = 0;

	snprintf(path, sizeof(path), "%s/%s", s->dir, seg->name);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(fd, &sb) != 0) {
		rc = -errno;
		sc_errorf(s->err, s->errlen, "%s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return rc;
	}
	snprintf(prev_file, sizeof(prev_file), "%s", s->res->tail_file);
	snprintf(s->res->tail_file, sizeof(s->res->tail_file), "%s", path);
	s->res->tail_offset = LEDGER_FILE_HEADER;
	s->res->segments++;
	if (sb.st_size < LEDGER_FILE_HEADER) {
		close(fd);
		if (last)
			return drop_headless(s, path, prev_file, prev_offset, "shorter than its header");
		sc_errorf(s->err, s->errlen, "%s: offset 0: segment shorter than its header", path);
		return SC_EINVAL;
	}
	size = (uint64_t)sb.st_size;
	/* mapped in one go: faulting 4 KiB at a time costs more than reading the records */
	p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
	close(fd);
	if (p == MAP_FAILED) {
		sc_errorf(s->err, s->errlen, "%s: mmap: %s", path, strerror(errno));
		return -errno;
	}
	if (last && sb.st_size == LEDGER_FILE_HEADER &&
	    check_file_header(p, (size_t)sb.st_size, seg->first_seq, &why) != 0) {
		munmap((void *)p, (size_t)sb.st_size);
		return drop_headless(s, path, prev_file, prev_offset, why);
	}
	if (check_file_header(p, (size_t)sb.st_size, seg->first_seq, &why) != 0 ||
	    (s->next_seq && seg->first_seq != s->next_seq)) {
		sc_errorf(s->err, s->errlen, "%s: offset 0: %s", path,
		          why ? why : "sequence gap between segments");
		munmap((void *)p, (size_t)sb.st_size);
		return SC_EINVAL;
	}
	s->next_seq = seg->first_seq;
	zeroed = (get32(p + 32) & LEDGER_SEGMENT_ZEROED) != 0;
	s->res->tail_zeroed = zeroed;
	while (rc == 0 && off < size) {
		size_t avail = (size_t)(size - off);
		const char *r = p + off;
		int partial = 0;
		const char *problem = NULL;
		struct ledger_record rec;

		if (zeroed && all_zero(r, avail < LEDGER_RECORD_HEADER ? avail : LEDGER_RECORD_HEADER)) {
			if (all_zero(r, avail))
				break; /* the end of the data */
			problem = "all-zero record header with data after it";
		} else {
			problem = record_problem(r, avail, s->next_seq,
			                         !(s->flags & LEDGER_SCAN_TRUSTED), &partial);
		}
		if (problem && zeroed) {
			if (last && !later_batch(p, off + 1, size, s->next_seq)) {
				rc = cut_tail(s, path, off, size, 1, problem);
				break;
			}
		} else if (problem) {
			uint32_t len = avail >= 8 ? get32(r + 4) : 0;
			int at_end = partial || (uint64_t)LEDGER_RECORD_HEADER + len == avail;

			if (last && at_end && strcmp(problem, "sequence number out of order") != 0) {
				rc = cut_tail(s, path, off, size, 0, problem);
				break;
			}
		}
		if (problem) {
			sc_errorf(s->err, s->errlen,
			          "%s: offset %" PRIu64 ": %s (expected sequence number %" PRIu64 ")",
			          path, off, problem, s->next_seq);
			rc = SC_EINVAL;
			break;
		}
		rec = (struct ledger_record){
			.seq = get64(r + 8), .time = (int64_t)get64(r + 16),
			.type = (unsigned char)r[24] | (unsigned)(unsigned char)r[25] << 8,
			.body = r + LEDGER_RECORD_HEADER, .body_len = get32(r + 4),
			.file = path, .offset = off};
		if (!s->res->first_seq)
			s->res->first_seq = rec.seq;
		s->res->last_seq = rec.seq;
		s->res->last_time = rec.time;
		s->next_seq = rec.seq + 1;
		off += LEDGER_RECORD_HEADER + rec.body_len;
		s->res->tail_offset = off;
		if (rec.seq >= s->from_seq && s->visit) {
			s->res->records++;
			rc = s->visit(s->arg, &rec);
		}
	}
	munmap((void *)p, (size_t)sb.st_size);
	return rc;
}

/*
 * The check of a whole ledger on a thread of its own (ledger_verify_start),
 * which a replay on the calling thread follows segment by segment
 * (ledger_scan_verified): the check reads every byte and computes every
 * checksum, the replay runs every method, and a 2-core machine does both at
 * once. The two share the list of segments made at the start, and the
 * replay reads a segment only after the check finished it, repair included,
 * so the replay sees exactly the bytes a scan after the check would see.
 *
 * Shared fields are under lock: verified, finished, rc, res and err are
 * written by the checking thread, read by the replay's thread.
 */
struct ledger_verify {
	pthread_t thread;
	int started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	char dir[4096];
	unsigned flags;
	struct segment *segs;
	size_t n;
	size_t verified; /* the first `verified` segments passed (and were repaired) */
	int finished, rc;
	struct ledger_scan_result res;
	char err[4300];
};

static void *verify_main(void *arg)
{
	struct ledger_verify *v = arg;
	struct ledger_scan_result res;
	char err[sizeof(v->err)];
	struct scan s = {v->dir, UINT64_MAX, v->flags, NULL, NULL, &res, err, sizeof(err), 0};
	int rc = 0;

	memset(&res, 0, sizeof(res));
	err[0] = '\0';
	for (size_t i = 0; i < v->n && rc == 0; i++) {
		unsigned before = res.segments;

		rc = scan_segment(&s, &v->segs[i], i + 1 == v->n);
		/* a half-created last segment was dropped: it is no segment to replay */
		if (rc == 0 && res.segments > before) {
			pthread_mutex_lock(&v->lock);
			v->verified = i + 1;
			pthread_cond_broadcast(&v->cond);
			pthread_mutex_unlock(&v->lock);
		}
	}
	pthread_mutex_lock(&v->lock);
	v->res = res;
	memcpy(v->err, err, sizeof(err));
	v->rc = rc;
	v->finished = 1;
	pthread_cond_broadcast(&v->cond);
	pthread_mutex_unlock(&v->lock);
	return NULL;
}

int ledger_verify_start(struct ledger_verify **out, const char *dir, unsigned flags)
{
	struct ledger_verify *v = calloc(1, sizeof(*v));
	int rc;

	*out = NULL;
	if (!v)
		return -ENOMEM;
	pthread_mutex_init(&v->lock, NULL);
	pthread_cond_init(&v->cond, NULL);
	snprintf(v->dir, sizeof(v->dir), "%s", dir);
	v->flags = flags & ~LEDGER_SCAN_TRUSTED;
	*out = v;
	/* a directory that cannot be listed is the check's result, as in ledger_scan */
	if ((rc = list_segments(dir, &v->segs, &v->n, v->err, sizeof(v->err))) != 0) {
		v->rc = rc;
		v->finished = 1;
		return 0;
	}
	if ((rc = pthread_create(&v->thread, NULL, verify_main, v)) != 0) {
		ledger_verify_free(v);
		*out = NULL;
		return -rc;
	}
	v->started = 1;
	return 0;
}

int ledger_verify_wait(struct ledger_verify *v, struct ledger_scan_result *res, char *err,
                       size_t errlen)
{
	int rc;

	pthread_mutex_lock(&v->lock);
	while (!v->finished)
		pthread_cond_wait(&v->cond, &v->lock);
	pthread_mutex_unlock(&v->lock);
	*res = v->res;
	if (err && errlen)
		snprintf(err, errlen, "%s", v->err);
	rc = v->rc;
	return rc;
}

void ledger_verify_free(struct ledger_verify *v)
{
	if (!v)
		return;
	if (v->started)
		pthread_join(v->thread, NULL);
	pthread_mutex_destroy(&v->lock);
	pthread_cond_destroy(&v->cond);
	free(v->segs);
	free(v);
}

int ledger_scan_verified(struct ledger_verify *v, uint64_t from_seq, ledger_visit_fn visit,
                         void *arg, struct ledger_scan_result *res, char *err, size_t errlen)
{
	struct scan s = {v->dir, from_seq, LEDGER_SCAN_TRUSTED, visit, arg, res, err, errlen, 0};
	int rc = 0;

	memset(res, 0, sizeof(*res));
	if (err && errlen)
		err[0] = '\0';
	for (size_t i = 0; i < v->n && rc == 0; i++) {
		int ready;

		pthread_mutex_lock(&v->lock);
		while (v->verified <= i && !v->finished)
			pthread_cond_wait(&v->cond, &v->lock);
		ready = v->verified > i;
		rc = v->rc;
		pthread_mutex_unlock(&v->lock);
		if (!ready) {
			if (rc != 0)
				sc_errorf(err, errlen, "%s/%s: not replayed: the ledger failed its check",
				          v->dir, v->segs[i].name);
			return rc != 0 ? SC_EINVAL : 0; /* else the dropped half-created segment */
		}
		rc = scan_segment(&s, &v->segs[i], i + 1 == v->n);
	}
	return rc;
}

int ledger_scan(const char *dir, uint64_t from_seq, unsigned flags, ledger_visit_fn visit,
                void *arg, struct ledger_scan_result *res, char *err, size_t errlen)
{
	struct scan s = {dir, from_seq, flags, visit, arg, res, err, errlen, 0};
	struct segment *segs;
	size_t n;
	int rc;

	memset(res, 0, sizeof(*res));
	if (err && errlen)
		err[0] = '\0';
	if ((rc = list_segments(dir, &segs, &n, err, errlen)) != 0)
		return rc;
	for (size_t i = 0; i < n && rc == 0; i++)
		rc = scan_segment(&s, &segs[i], i + 1 == n);
	free(segs);
	return rc;
}

int ledger_prune(const char *dir, uint64_t upto_seq)
{
	struct segment *segs;
	size_t n;
	int removed = 0;

	if (list_segments(dir, &segs, &n, NULL, 0) != 0)
		return 0;
	for (size_t i = 0; i + 1 < n && segs[i + 1].first_seq <= upto_seq + 1; i++) {
		char path[4096];

		snprintf(path, sizeof(path), "%s/%s", dir, segs[i].name);
		removed += unlink(path) == 0;
	}
	free(segs);
	return removed;
}

/* ----------------------------------------------------------------- JSON */

static void json_str(FILE *out, const char *s, size_t len)
{
	fputc('"', out);
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch == '"' || ch == '\\')
			fprintf(out, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(out, "\\u%04x", ch);
		else
			fputc(ch, out);
	}
	fputc('"', out);
}

static void json_obj(FILE *out, const msgpack_object *o)
{
	switch (o->type) {
	case MSGPACK_OBJECT_NIL:
		fputs("null", out);
		break;
	case MSGPACK_OBJECT_BOOLEAN:
		fputs(o->via.boolean ? "true" : "false", out);
		break;
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		fprintf(out, "%" PRIu64, o->via.u64);
		break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		fprintf(out, "%" PRId64, o->via.i64);
		break;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		fprintf(out, "%.17g", o->via.f64);
		break;
	case MSGPACK_OBJECT_STR:
		json_str(out, o->via.str.ptr, o->via.str.size);
		break;
	case MSGPACK_OBJECT_ARRAY:
		fputc('[', out);
		for (uint32_t i = 0; i < o->via.array.size; i++) {
			if (i)
				fputc(',', out);
			json_obj(out, &o->via.array.ptr[i]);
		}
		fputc(']', out);
		break;
	case MSGPACK_OBJECT_MAP:
		fputc('{', out);
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			const msgpack_object_kv *kv = &o->via.map.ptr[i];

			if (i)
				fputc(',', out);
			if (kv->key.type == MSGPACK_OBJECT_STR)
				json_str(out, kv->key.via.str.ptr, kv->key.via.str.size);
			else
				fputs("\"?\"", out);
			fputc(':', out);
			json_obj(out, &kv->val);
		}
		fputc('}', out);
		break;
	default: /* bin and ext carry nothing the ledger writes */
		fputs("null", out);
		break;
	}
}

void ledger_record_json(FILE *out, const struct ledger_record *r)
{
	msgpack_unpacked u;
	size_t off = 0;

	fprintf(out, "{\"seq\":%" PRIu64 ",\"time\":%" PRId64 ",\"type\":", r->seq, r->time);
	json_str(out, ledger_type_name(r->type), strlen(ledger_type_name(r->type)));
	fputs(",\"body\":", out);
	msgpack_unpacked_init(&u);
	if (msgpack_unpack_next(&u, r->body, r->body_len, &off) == MSGPACK_UNPACK_SUCCESS)
		json_obj(out, &u.data);
	else
		fputs("null", out);
	msgpack_unpacked_destroy(&u);
	fputs("}\n", out);
}
