/*
 * ledger.h: the append-only ledger of every state change, its on-disk
 * format (documented byte by byte in ledger_format.c), the reader used by
 * recovery and by `sidecardctl ledger verify|export`, and the daemon's
 * group-committing writer (ledger.c).
 */
#ifndef SIDECARD_LEDGER_H
#define SIDECARD_LEDGER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define LEDGER_FILE_MAGIC "SCLEDGER"
#define LEDGER_FILE_VERSION 1u
#define LEDGER_FILE_HEADER 64u
#define LEDGER_RECORD_MAGIC 0x31524353u /* "SCR1" little-endian */
#define LEDGER_RECORD_HEADER 32u
#define LEDGER_RECORD_MAX (1u << 26)    /* no record is larger than 64 MiB */

/* Segment header flags (ledger_format.c). */
#define LEDGER_SEGMENT_ZEROED 0x1u /* zero-filled ahead of use; records mark batch starts */
/* Record header flags. */
#define LEDGER_RECORD_BATCH_START 0x1u /* the first record of a write+fdatasync batch */

/*
 * Record types. Method records carry [params, result] of the request, or
 * [actor, params, result] when a connection made it (ledger_format.c).
 */
enum ledger_type {
	LEDGER_SETTINGS = 1, /* {hold_ttl_us, expiry_charges, hold quotas, capacities...} */
	LEDGER_ORGS_CREATE,
	LEDGER_AGENTS_CREATE,
	LEDGER_AGENTS_UPDATE,
	LEDGER_AGENTS_DELETE,
	LEDGER_RULES_ADD,
	LEDGER_RULES_UPDATE,
	LEDGER_RULES_REMOVE,
	LEDGER_WALLETS_UPDATE,
	LEDGER_CHECK,
	LEDGER_REPORT,
	LEDGER_EXPIRE, /* [] : every hold due at the record's time expired */
	LEDGER_WALLETS_TRANSFER,
	LEDGER_WALLETS_ADJUST,
	LEDGER_ROLL, /* [] : the calendars rolled at the record's time (gate_roll) */
	LEDGER_ORGS_UPDATE,
	LEDGER_WALLETS_CARVE,
	LEDGER_WALLETS_RELEASE,
	LEDGER_PRICING_SET,
	LEDGER_CLOCK, /* [step] : the wall clock stepped by step us before the record's time */
	LEDGER_AGENTS_ROTATE_TOKEN,
	LEDGER_TOKENS_CREATE,
	LEDGER_TOKENS_REVOKE,
	LEDGER_TYPE_END
};

/* "check", "agents.create", "expire", "settings"; "unknown" otherwise. */
const char *ledger_type_name(unsigned type);

struct ledger_record {
	uint64_t seq;
	int64_t time;       /* microseconds since the epoch, UTC */
	unsigned type;
	const char *body;   /* msgpack */
	uint32_t body_len;
	const char *file;   /* the segment it is in */
	uint64_t offset;    /* its offset in that file */
};

/* CRC32C (Castagnoli), hardware-accelerated where the CPU has SSE4.2. */
uint32_t ledger_crc32c(uint32_t crc, const void *buf, size_t len);

/* Encodes a segment's header; out must hold LEDGER_FILE_HEADER bytes. */
void ledger_encode_file_header(char *out, uint64_t first_seq, int64_t now, unsigned flags);

/* Encodes a record header for body; out must hold LEDGER_RECORD_HEADER bytes. */
void ledger_encode_header(char *out, uint64_t seq, int64_t time, unsigned type, unsigned flags,
                          const char *body, uint32_t body_len);

/* ---- reading ---- */

/* Called for each valid record in sequence order; a non-zero return stops the scan. */
typedef int (*ledger_visit_fn)(void *arg, const struct ledger_record *r);

struct ledger_scan_result {
	uint64_t first_seq;    /* first record seen (0: none) */
	uint64_t last_seq;     /* last valid record (0: none) */
	int64_t last_time;     /* the time of that record */
	uint64_t records;      /* records visited */
	unsigned segments;
	int torn;              /* the last segment ended in a partial record */
	int tail_zeroed;       /* the last segment is zero-filled (LEDGER_SEGMENT_ZEROED) */
	char tail_file[4096];  /* the last segment's path */
	uint64_t tail_offset;  /* where the valid data of the last segment ends */
	char quarantine[4096]; /* repair: where the torn tail's bytes were kept ("" none) */
	/*
	 * The scan stopped at damage to durable records (SC_EINVAL): a bad
	 * record or segment that is not a torn tail. damage_offset is 0 for a
	 * segment whose header is bad; damage_seq is the sequence number
	 * expected there.
	 */
	int damaged;
	char damage_file[4096];
	uint64_t damage_offset;
	uint64_t damage_seq;
	uint64_t snapshot_seq; /* the newest snapshot beside the ledger (0: none) */
};

/* Flags of ledger_scan. */
#define LEDGER_SCAN_REPAIR 0x1u  /* remove a torn tail */
/*
 * The same files passed a scan moments ago and nobody has written them
 * since (the daemon holds its state directory's lock): the checksums are
 * not computed again. Everything else is checked.
 */
#define LEDGER_SCAN_TRUSTED 0x2u

/*
 * Reads every segment of the ledger directory dir in order, checks each
 * record (magic, length, CRC32C, consecutive sequence numbers from one
 * segment to the next) and calls visit for those with seq >= from_seq.
 *
 * The remains of a write that never completed at the end of the last
 * segment are a torn tail (the rules, byte by byte, in ledger_format.c): it
 * is reported in res (torn = 1, tail_offset) and, with LEDGER_SCAN_REPAIR,
 * its bytes are copied to the quarantine (res->quarantine) and it is removed
 * (a zero-filled segment is zeroed again from tail_offset on, an older one
 * cut with ftruncate) with a warning in err. Any other bad record, or a bad
 * record that something proves was durable (a later batch, a snapshot in
 * the state directory's checkpoints/ beside dir that covers it, a checksum
 * mismatch that one flipped bit explains, a record whole to its last
 * sector), is damage: the scan stops with SC_EINVAL, res->damaged and the
 * damage_* fields set, and err names the file, the offset, the sequence
 * number expected there and the evidence; nothing is rewritten. A missing
 * or empty directory is an empty ledger. Returns 0, the visitor's non-zero
 * value, or a negative code.
 */
int ledger_scan(const char *dir, uint64_t from_seq, unsigned flags, ledger_visit_fn visit,
                void *arg, struct ledger_scan_result *res, char *err, size_t errlen);

/*
 * The same check as ledger_scan(dir, UINT64_MAX, flags, NULL, ...) run on a
 * thread of its own, so that a replay can follow it (the daemon's start).
 * ledger_verify_start lists the segments and starts the thread: 0, or
 * -ENOMEM or a pthread_create error with *v NULL. ledger_verify_wait waits
 * for the end of the check and returns what ledger_scan would have (res,
 * err, the code). ledger_verify_free waits for it too and frees v.
 *
 * ledger_scan_verified is ledger_scan(dir, from_seq, LEDGER_SCAN_TRUSTED,
 * ...) over the segments v listed, each read only once the check finished
 * it (and repaired it): it returns SC_EINVAL when it reaches a segment the
 * check did not pass, and the check's error (ledger_verify_wait) is then
 * the one to report. One thread calls these; the check runs beside it.
 */
struct ledger_verify;
int ledger_verify_start(struct ledger_verify **v, const char *dir, unsigned flags);
int ledger_verify_wait(struct ledger_verify *v, struct ledger_scan_result *res, char *err,
                       size_t errlen);
void ledger_verify_free(struct ledger_verify *v);
int ledger_scan_verified(struct ledger_verify *v, uint64_t from_seq, ledger_visit_fn visit,
                         void *arg, struct ledger_scan_result *res, char *err, size_t errlen);

/*
 * Removes the segments whose every record is <= upto_seq (covered by a
 * checkpoint), never the last one. Returns how many were removed.
 */
int ledger_prune(const char *dir, uint64_t upto_seq);

/* ---- quarantine and repair (ledger_repair.c) ---- */

/*
 * Bytes removed from the ledger, by recovery or by a repair, are kept in
 * dir/quarantine/ (LEDGER_QUARANTINE), and every removal is noted, one line
 * each, in dir/quarantine/repairs.log (LEDGER_REPAIRS_LOG).
 */
#define LEDGER_QUARANTINE "quarantine"
#define LEDGER_REPAIRS_LOG "repairs.log"
/* How a note starts, after its time: the daemon's recovery, or the operator's repair. */
#define LEDGER_NOTE_RECOVERY "recovery: "
#define LEDGER_NOTE_REPAIR "repair --truncate-at-damage: "

/*
 * Removes the data of segment path from offset on: the bytes from offset to
 * the end of its data (for a zero-filled segment, the last non-zero byte)
 * are written to a new file of the quarantine, named after the segment and
 * the offset, and synced, and only then is the segment zeroed from offset
 * to its end (zeroed) or cut there. qpath gets the quarantine file ("" if
 * there was nothing but zeros). 0 or -errno.
 */
int ledger_cut(const char *dir, const char *path, uint64_t offset, int zeroed, char *qpath,
               size_t qlen);
/* Moves the file path into the quarantine, whole; qpath gets its new path. 0 or -errno. */
int ledger_quarantine_file(const char *dir, const char *path, char *qpath, size_t qlen);
/*
 * Appends a line, stamped with the UTC time, to the repairs log; a repair's
 * line (LEDGER_NOTE_REPAIR) is synced. 0 or -errno.
 */
int ledger_repairs_note(const char *dir, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/*
 * Copies the operator's repairs from the repairs log to out, each line
 * after prefix, and counts the recoveries' notes in *recoveries (torn tails
 * are routine; a repair is a choice someone made). Returns the repairs
 * printed.
 */
int ledger_repairs_print(const char *dir, FILE *out, const char *prefix, unsigned *recoveries);

/*
 * The repair `sidecardctl ledger repair --truncate-at-damage`, offline (the
 * caller holds the state directory's lock): dir is <state>/ledger and
 * ckpt_dir <state>/checkpoints. The damage the scan finds and everything
 * after it leave the ledger for the quarantine (ledger_cut, later segments
 * whole), and so do the snapshots at or after the damaged record, which
 * hold changes the ledger will no longer have. It refuses (SC_EINVAL, err
 * says why) when what is left could not be replayed: segments before the
 * damage already removed under a snapshot that the repair would set aside.
 * The choice is noted in the repairs log; report describes what was done,
 * one line each. Returns 0 (also when there was no damage: report says so)
 * or a negative code.
 */
int ledger_repair_truncate(const char *dir, const char *ckpt_dir, char *report, size_t replen,
                           char *err, size_t errlen);

/*
 * Writes a record as one JSON line (for `sidecardctl ledger export`):
 * {seq, time, type, body}, and "by" (the actor) lifted out of a method
 * record's [actor, params, result], whose body is then [params, result].
 */
void ledger_record_json(FILE *out, const struct ledger_record *r);

#endif /* SIDECARD_LEDGER_H */
