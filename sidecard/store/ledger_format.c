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
 * Method records (types 2 to 11, 13, 14, 16 to 19 and 21 to 23) have the body
 * [actor, params, result]: who made the change (a map: role, uid and pid of
 * the connection's peer, and agent_id or token_id when it presented a
 * token; docs/DESIGN.md, "Access control"), the named arguments of the
 * request as the client sent them and the result the daemon answered;
 * records of daemons before access control have [params, result].
 * Replaying params at the record's time through the same code
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
 *   segment, a bad record or non-zero bytes after the end are the
 *   candidates for a torn tail. Repair writes zeros from the end of the
 *   valid data to the end of the file and syncs them (the file keeps its
 *   preallocated size). In any other segment, a bad record, a zero header
 *   followed by non-zero bytes, or non-zero bytes after the end is damage.
 *
 * - Appended segments (flag clear; written by earlier versions). The data
 *   ends at the end of the file. A bad record at the very end of the last
 *   segment (its header or body reaching the end of the file) is the
 *   candidate for a torn tail, which repair cuts off with ftruncate; a bad
 *   record anywhere else is damage. The writer never appends to such a
 *   segment again: it starts a new, zero-filled one.
 *
 * A candidate is a torn tail unless something proves that the bad record
 * was durable, in this order:
 *
 * 1. A snapshot covers it: checkpoints/ beside the ledger directory holds
 *    <seq>.snap with seq at or above the sequence number expected at the
 *    bad offset. The snapshot holds the record's changes; cutting the
 *    record would leave a ledger that contradicts it.
 * 2. A later batch: a valid record flagged BATCH_START, whose sequence
 *    number is above the one expected, lies anywhere after it in a
 *    zero-filled segment. The writer starts a batch only after the previous
 *    one was synced, and power loss may keep any subset of a torn batch's
 *    pages, none of which carries a later batch's start.
 * 3. A valid checksum with the wrong sequence number: a whole record, which
 *    no unfinished write leaves.
 * 4. One flipped bit: the checksum mismatch is what one flipped bit of the
 *    header bytes 0..27 or of the body makes (CRC32C is linear, so the
 *    difference between the stored and computed checksums names the bit),
 *    or one bit of the stored checksum, or flipping one bit of the magic or
 *    length field gives a record whose checksum matches.
 * 5. A record whole to its last sector: the record's length fits, its
 *    checksum does not match, and no 512-byte-aligned piece of it ends in a
 *    zero byte. An interrupted write leaves each sector with the new bytes,
 *    the old ones, or a prefix of the new followed by the old (disks write
 *    sectors of 512 bytes or multiples of them, in order); the old bytes of
 *    a zero-filled segment are zeros, so a record that a crash damaged has a
 *    piece ending in zero.
 *
 * Each rule errs on the side of damage: a torn write taken for damage stops
 * the daemon until an operator repairs it (sidecardctl ledger repair), while
 * damage taken for a torn write would drop an acknowledged record. What
 * rules 4 and 5 cannot tell: several bytes damaged in a record whose pieces
 * end in zero bytes by chance is taken for a torn write; its bytes are in
 * the quarantine (ledger_repair.c), never lost.
 *
 * Damage stops recovery with the file, offset and sequence number.
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
	[LEDGER_AGENTS_ROTATE_TOKEN] = "agents.rotate_token",
	[LEDGER_TOKENS_CREATE] = "tokens.create",
	[LEDGER_TOKENS_REVOKE] = "tokens.revoke",
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

/*
 * Removes a torn tail from the last segment, its bytes kept in the
 * quarantine: a zero-filled segment is zeroed again from offset to its end,
 * an appended one is cut.
 */
static int cut_tail(struct scan *s, const char *path, uint64_t offset, int zeroed,
                    const char *why)
{
	int rc;

	s->res->torn = 1;
	if (!(s->flags & LEDGER_SCAN_REPAIR))
		return 0;
	rc = ledger_cut(s->dir, path, offset, zeroed, s->res->quarantine,
	                sizeof(s->res->quarantine));
	if (rc != 0) {
		sc_errorf(s->err, s->errlen, "%s: cannot remove the torn tail at offset %" PRIu64
		          " and keep it in quarantine: %s", path, offset, strerror(-rc));
		return rc;
	}
	sc_errorf(s->err, s->errlen, "%s: torn tail (%s) %s at offset %" PRIu64 "%s%s", path, why,
	          zeroed ? "zeroed from" : "cut off", offset,
	          s->res->quarantine[0] ? "; its bytes are kept in " : "", s->res->quarantine);
	ledger_repairs_note(s->dir,
	                    LEDGER_NOTE_RECOVERY "%s: torn tail (%s) removed from offset %" PRIu64
	                    " (expected sequence number %" PRIu64 "); bytes kept in %s",
	                    path, why, offset, s->next_seq,
	                    s->res->quarantine[0] ? s->res->quarantine : "(none: all zero)");
	return 0;
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
 * The offset in p[from, size) of a valid record flagged BATCH_START whose
 * sequence number is above seq, or 0: the start of a batch written after
 * the one that holds seq, which therefore was complete and synced.
 */
static uint64_t later_batch(const char *p, uint64_t from, uint64_t size, uint64_t seq)
{
	static const char magic[4] = {0x53, 0x43, 0x52, 0x31}; /* LEDGER_RECORD_MAGIC */
	const char *q = p + from, *end = p + size;
	int partial;

	while (q < end && (q = memmem(q, (size_t)(end - q), magic, sizeof(magic))) != NULL) {
		if (record_problem(q, (size_t)(end - q), 0, 1, &partial) == NULL &&
		    ((unsigned char)q[26] & LEDGER_RECORD_BATCH_START) && get64(q + 8) > seq)
			return (uint64_t)(q - p);
		q++;
	}
	return 0;
}

/*
 * Whether d, the difference between a record's stored checksum and the one
 * of its n bytes (header bytes 0..27 and body), is what one flipped bit
 * makes: a bit of the stored checksum itself (d has one bit set), or one of
 * the n bytes. CRC32C is linear: a flip of bit b of byte k changes the
 * checksum by the CRC (register 0, no inversion) of that bit followed by
 * n-1-k zero bytes, whatever the other bytes are; crc_soft computes it.
 */
static int one_bit_syndrome(uint32_t d, size_t n)
{
	static const unsigned char zero = 0;

	if ((d & (d - 1)) == 0)
		return 1;
	for (int b = 0; b < 8; b++) {
		unsigned char bit = (unsigned char)(1u << b);
		uint32_t c = crc_soft(0, &bit, 1);

		for (size_t m = 0; m < n; m++, c = crc_soft(c, &zero, 1))
			if (c == d)
				return 1;
	}
	return 0;
}

/*
 * Whether the record at r (avail bytes to the end of the file) is a whole
 * record with one bit flipped: its checksum mismatch is one flipped bit, or
 * one bit of its magic or length field flipped gives a record whose
 * checksum matches. The remains of an unfinished write are zeros where
 * bytes are missing, which one flipped bit does not explain (but for a lost
 * byte that had a single bit set, which is refused rather than cut: the
 * safe side).
 */
static int one_bit_flip(const char *r, size_t avail)
{
	char h[LEDGER_RECORD_HEADER];
	int found = 0;

	if (avail < LEDGER_RECORD_HEADER)
		return 0;
	memcpy(h, r, sizeof(h));
	/* bit -1: the header as it is; 0 to 63: one bit of the magic or length flipped */
	for (int bit = -1; bit < 64 && !found; bit++) {
		uint32_t len, crc;

		if (bit >= 0)
			h[bit / 8] ^= (char)(1u << (bit % 8));
		len = get32(h + 4);
		if (get32(h) == LEDGER_RECORD_MAGIC && len <= LEDGER_RECORD_MAX &&
		    len <= avail - LEDGER_RECORD_HEADER) {
			crc = ledger_crc32c(ledger_crc32c(0, h, 28), r + LEDGER_RECORD_HEADER, len);
			found = bit < 0 ? one_bit_syndrome(crc ^ get32(h + 28), 28 + (size_t)len)
			                : crc == get32(h + 28);
		}
		if (bit >= 0)
			h[bit / 8] ^= (char)(1u << (bit % 8));
	}
	return found;
}

/*
 * Whether the bytes p[off, end) of a record are whole to the last sector
 * the record touches: no 512-byte sector piece of it ends in a zero byte.
 * A write that a crash interrupts leaves each sector with the new bytes, or
 * the old ones, or a prefix of the new followed by the old; in a
 * zero-filled segment the old bytes are zeros, so a record it damaged has a
 * piece ending in zero. 512 bytes is the smallest sector a disk writes;
 * larger sectors are made of such pieces.
 */
static int whole_to_last_sector(const char *p, uint64_t off, uint64_t end)
{
	for (uint64_t last = off | 511;; last += 512) {
		uint64_t b = last < end - 1 ? last : end - 1;

		if (p[b] == 0)
			return 0;
		if (b == end - 1)
			return 1;
	}
}

/* The sequence number of the newest snapshot in checkpoints/ beside the ledger dir, or 0. */
static uint64_t newest_snapshot(const char *dir)
{
	char path[4200];
	DIR *d;
	struct dirent *e;
	uint64_t newest = 0;

	snprintf(path, sizeof(path), "%s/../checkpoints", dir);
	if ((d = opendir(path)) == NULL)
		return 0;
	while ((e = readdir(d)) != NULL) {
		char *end;
		uint64_t seq = strtoull(e->d_name, &end, 16);

		if (end == e->d_name + 16 && strcmp(end, ".snap") == 0 && seq > newest)
			newest = seq;
	}
	closedir(d);
	return newest;
}

/*
 * What proves that the bad record at off of the last segment (problem) was
 * durable, so that it is damage and not a torn tail: a snapshot covering
 * its sequence number, a later batch, a valid checksum, one flipped bit, a
 * record whole to its last sector. NULL when nothing does: the remains of
 * an unfinished write look exactly like this.
 */
static const char *durable_evidence(const struct scan *s, const char *p, uint64_t off,
                                    uint64_t size, int zeroed, const char *problem, char *buf,
                                    size_t len)
{
	uint64_t later;

	if (s->res->snapshot_seq >= s->next_seq) {
		snprintf(buf, len, "the snapshot checkpoints/%016" PRIx64 ".snap holds the changes "
		         "up to record %" PRIu64, s->res->snapshot_seq, s->res->snapshot_seq);
		return buf;
	}
	if (zeroed && (later = later_batch(p, off + 1, size, s->next_seq)) != 0) {
		snprintf(buf, len, "a later batch starts at offset %" PRIu64 " (record %" PRIu64 ")",
		         later, get64(p + later + 8));
		return buf;
	}
	if (strcmp(problem, "sequence number out of order") == 0)
		return "its checksum is valid: no unfinished write leaves a whole record";
	if (one_bit_flip(p + off, (size_t)(size - off)))
		return "one flipped bit explains it, where an unfinished write leaves zeros";
	/* a checksum mismatch is reported only for a record whose length fits in the file */
	if (strcmp(problem, "checksum mismatch") == 0 &&
	    whole_to_last_sector(p, off, off + LEDGER_RECORD_HEADER + get32(p + off + 4)))
		return "the record is whole to its last sector, where an unfinished write leaves "
		       "zeros";
	return NULL;
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
	if (s->flags & LEDGER_SCAN_REPAIR) {
		int rc = ledger_quarantine_file(s->dir, path, s->res->quarantine,
		                                sizeof(s->res->quarantine));

		if (rc != 0) {
			sc_errorf(s->err, s->errlen, "%s: cannot move the half-created segment to "
			          "quarantine: %s", path, strerror(-rc));
			return rc;
		}
		ledger_repairs_note(s->dir,
		                    LEDGER_NOTE_RECOVERY "%s: torn tail (%s): a segment that was "
		                    "never completed, moved to %s",
		                    path, why, s->res->quarantine);
	}
	sc_errorf(s->err, s->errlen, "%s: torn tail (%s): a segment that was never completed%s%s",
	          path, why, (s->flags & LEDGER_SCAN_REPAIR) ? " was moved to " : "",
	          s->res->quarantine);
	return 0;
}

/* Records where the scan stopped at damage (the sequence number expected there). */
static void damage(struct scan *s, const char *path, uint64_t off, uint64_t seq)
{
	s->res->damaged = 1;
	snprintf(s->res->damage_file, sizeof(s->res->damage_file), "%s", path);
	s->res->damage_offset = off;
	s->res->damage_seq = seq;
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
		damage(s, path, 0, s->next_seq ? s->next_seq : seg->first_seq);
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
		damage(s, path, 0, s->next_seq ? s->next_seq : seg->first_seq);
		sc_errorf(s->err, s->errlen, "%s: offset 0: %s (expected sequence number %" PRIu64 ")",
		          path, why ? why : "sequence gap between segments",
		          s->next_seq ? s->next_seq : seg->first_seq);
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
		if (problem) {
			uint32_t len = avail >= 8 ? get32(r + 4) : 0;
			int at_end = partial || (uint64_t)LEDGER_RECORD_HEADER + len == avail;
			char buf[256];
			const char *evidence = NULL;

			/* only the last batch of the last segment can have been torn */
			if (last && (zeroed || at_end)) {
				evidence = durable_evidence(s, p, off, size, zeroed, problem, buf,
				                            sizeof(buf));
				if (!evidence) {
					rc = cut_tail(s, path, off, zeroed, problem);
					break;
				}
			} else {
				evidence = last ? "records follow it in the file" : "later segments follow";
			}
			damage(s, path, off, s->next_seq);
			sc_errorf(s->err, s->errlen,
			          "%s: offset %" PRIu64 ": %s (expected sequence number %" PRIu64
			          "): damage to durable records: %s",
			          path, off, problem, s->next_seq, evidence);
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
	res.snapshot_seq = newest_snapshot(v->dir);
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
	res->snapshot_seq = newest_snapshot(v->dir);
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
	res->snapshot_seq = newest_snapshot(dir);
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
		sc_json_str(out, o->via.str.ptr, o->via.str.size);
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
				sc_json_str(out, kv->key.via.str.ptr, kv->key.via.str.size);
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
	sc_json_str(out, ledger_type_name(r->type), strlen(ledger_type_name(r->type)));
	msgpack_unpacked_init(&u);
	if (msgpack_unpack_next(&u, r->body, r->body_len, &off) != MSGPACK_UNPACK_SUCCESS) {
		fputs(",\"body\":null", out);
	} else if (u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size == 3) {
		/* [actor, params, result]: who made the change, then the change */
		msgpack_object body = u.data;

		fputs(",\"by\":", out);
		json_obj(out, &u.data.via.array.ptr[0]);
		fputs(",\"body\":", out);
		body.via.array.ptr++;
		body.via.array.size = 2;
		json_obj(out, &body);
	} else {
		fputs(",\"body\":", out);
		json_obj(out, &u.data);
	}
	msgpack_unpacked_destroy(&u);
	fputs("}\n", out);
}
