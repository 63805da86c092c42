/*
 * shm.h: layout of the shared-memory state segment and its concurrency rules.
 *
 * The daemon keeps orgs, agents (with their wallets), rules (with their
 * counters), open holds and the recent transaction history in one file
 * mapped MAP_SHARED: <state-dir>/state.shm. The daemon maps it read-write and
 * is its only writer; other processes may map it read-only and read any
 * record without locks.
 *
 * LAYOUT (all integers little-endian, as the host writes them; the segment
 * is not meant to move between machines)
 *
 *   offset 0      struct shm_header, padded to SHM_HEADER_SIZE (4096)
 *   org_off       org_cap     x struct shm_org
 *   agent_off     agent_cap   x struct shm_agent
 *   rule_off      rule_cap    x struct shm_rule
 *   hold_off      hold_cap    x struct shm_hold
 *   txn_off       txn_cap     x struct shm_txn   (a ring: txn id N lives in
 *                                                slot (N - 1) % txn_cap)
 *   event_off     event_cap   x struct shm_event (a ring, like transactions)
 *   task_off      task_cap    x struct shm_task  (usage of tasks named by checks)
 *   price_off     price_cap   x struct shm_price (every version of every model's rates)
 *   alert_off     alert_cap   x struct shm_alert (a ring, like transactions)
 *   text_off      text_cap    x struct shm_text  (rule names and patterns, shared)
 *   agent_ix_off  agent_ix_cap x uint32_t       (agent id -> slot: AGENT INDEX)
 *   key_off       key_cap     x struct shm_key   (idempotency keys kept past the
 *                                                history: KEPT KEYS)
 *
 * Each table starts on a 64-byte boundary; its offset is stored in the
 * header, and records refer to each other by slot index or id, never by
 * pointer, so the segment means the same at any mapping address.
 *
 * RULES AND TEXTS
 *
 * An agent's rules form a list through shm_rule.next, headed by
 * shm_agent.first_rule, in match order: exact patterns first, then
 * prefixes longest first, then "*"; among equals, the older rule (lower id)
 * first. The first rule whose pattern matches an action is the most
 * specific one. Listing order (creation order) is id order.
 *
 * A rule's name and pattern are references (slots) into the text table.
 * Fleets give thousands of agents the same rules, so a string is stored once
 * and counted: shm_text.refs is the number of rule fields naming it, and a
 * text whose count drops to 0 is freed. Its string never changes while it is
 * referenced. A reader that follows a rule to its text reads two records
 * and so compares hdr.mutations before and after (CONCURRENCY below): the
 * rule may be renamed and the old text freed and reused in between.
 *
 * SIZE (bytes, checked by _Static_assert below): an agent 432, a rule 144,
 * a text 144. One agent with 4 rules takes 1,008 bytes of segment.
 *
 * RATE WINDOWS
 *
 * A rule's hourly count and an agent's velocity are struct shm_window:
 * SHM_WINDOW_BUCKETS buckets of SHM_WINDOW_MINUTES minutes each, indexed by
 * bucket number (minute / SHM_WINDOW_MINUTES) % SHM_WINDOW_BUCKETS. The
 * window counted at time t is the bucket holding t and the 15 before it:
 * from 60 to 64 minutes back, depending on where t falls in its bucket. It
 * always covers the last 60 minutes, so a limit of N per hour never lets
 * more than N through in any 60-minute span; an exhausted limit may stay
 * blocked up to 4 minutes longer than a minute-exact window would. A step
 * of the wall clock moves the bucket numbers by the step, rounded up to
 * whole buckets (state_window_shift), so the window counts elapsed time.
 *
 * CONCURRENCY
 *
 * Every record begins with struct shm_rec: a sequence counter and a "used"
 * flag. The single writer (the daemon's loop thread) brackets each change of
 * a record with shm_write_begin() (counter becomes odd) and shm_write_end()
 * (even again). A reader copies the record with shm_read(): it retries while
 * the counter is odd or changed during the copy, so it always gets a
 * snapshot some single moment of the writer produced. Readers never block
 * the writer. Writes to different records are independent; a reader that
 * needs two records consistent with each other must compare the header's
 * mutation counter (hdr.seq) before and after.
 *
 *   operation            | may run concurrently with
 *   ---------------------+--------------------------------------------
 *   shm_read (any proc)  | everything
 *   write of one record  | reads of any record; no other write (one writer)
 *
 * AGENT INDEX
 *
 * Readers in other processes find an agent by id through a hash table in
 * the segment: agent_ix_cap uint32_t entries, a power of two at least twice
 * agent_cap, open addressing with linear probing from
 * shm_agent_ix_home(id). An entry is SHM_IX_EMPTY (0, so a new sparse file
 * starts empty), SHM_IX_TOMB (a deleted agent's entry, which probes pass
 * over and inserts reuse) or the agent's slot + 1. Only the daemon writes
 * it: one entry at agent create (a tombstone or empty entry becomes the
 * slot) and at delete (the slot becomes a tombstone), each a single atomic
 * store that leaves every other probe chain intact. When tombstones and
 * live entries fill three quarters of the table, and every time the daemon
 * opens the segment, the table is rebuilt from the agent records inside
 * the seqlock hdr.agent_ix_seq (odd while it is rebuilt).
 *
 * An entry is only a hint: a reader copies the agent record it names under
 * the record's seqlock and trusts it only if it is used and has the id it
 * looked for, so a stale entry (the agent deleted, its slot reused) or one
 * racing a change is never believed. A reader that finds nothing compares
 * hdr.agent_ix_seq before and after its probe and probes again if a rebuild
 * ran meanwhile, so "not found" is never the artefact of a rebuild.
 *
 * KEPT KEYS
 *
 * A check's idempotency key is found through its transaction while the
 * transaction is in the history ring, which every agent's traffic moves
 * on. So that another tenant's traffic cannot make a retry count twice,
 * the daemon keeps, per agent, the replay of its last keys_per_agent
 * keyed checks that left the ring: when the ring overwrites a keyed
 * transaction of a live agent, its key, action, estimate and decision are
 * copied into a shm_key record. key_cap is agent_cap x keys_per_agent, so
 * that every agent has room for its own (the file is sparse: records never
 * written cost nothing). An agent's records form a circle through older
 * and newer (the daemon keeps which is its newest, and their count, beside
 * the segment); once it has keys_per_agent of them, its oldest is
 * overwritten, and an agent's are freed when it is deleted. A key is thus
 * honoured while its transaction is in the history, and in any case while
 * it is one of the agent's last keys_per_agent keys, whatever other agents
 * do.
 *
 * READERS AND RESTARTS
 *
 * hdr.serving tells a reader whether the mapped file is the state a
 * running daemon serves: SHM_SERVING_LIVE once the daemon has recovered
 * and serves it; SHM_SERVING_STOPPED while the daemon starts (it may
 * rebuild the contents) and after it stopped cleanly (it will come back to
 * the same file); SHM_SERVING_RETIRED once a daemon has replaced the file
 * (rebuilt the state into a new state.shm; the old one is renamed or
 * unlinked): a reader must open the path again. A daemon killed outright
 * leaves LIVE behind, and its last contents stay readable until the next
 * daemon either attaches (same file) or retires it. A file deleted by hand
 * is not marked.
 *
 * CRASH SAFETY
 *
 * hdr.busy is set while the daemon applies a change and until the change's
 * ledger record is appended and hdr.applied_seq names it; changes nest
 * (shm_change_begin/end count). A segment found busy at start (the daemon
 * died in the middle of a change) is refused with SC_EINTERNAL, and the
 * daemon rebuilds the state from the ledger, its source of truth. So does
 * a segment stamped with another boot of the machine or another state
 * directory (hdr.boot_id, hdr.state_dev and hdr.state_ino).
 *
 * TOKENS
 *
 * Access tokens are kept only as their SHA-256 (sidecard/serve/access.h): an
 * agent's in its record (shm_agent.token_hash), a reader token's in one of
 * the SHM_TOKENS struct shm_token of the header, whose hdr.next_token_id
 * numbers them. Whoever may read the segment sees the hashes, from which
 * no token can be found; the segment is readable by admins and readers
 * only (docs/DESIGN.md, "Access control").
 *
 * SEALS
 *
 * Only the daemon writes the segment, but whoever runs as its uid could
 * write the file too. Every org and agent record carries, in
 * wallet.seal, a hash of the fields that decide what may be spent: its
 * id, the wallet's balance, held, budget, max_per_txn, daily_limit,
 * daily_spent, debt, day and limited, and for an agent its org, priority
 * and status. The daemon sets it each time it ends a write of the record
 * (shm_agent_write_end, shm_org_write_end), which costs a few nanoseconds,
 * and checks every used record's seal when it attaches to a segment it
 * left (shm_seal_check): a scan of the org and agent tables, without the
 * rebuild's replay. A record changed behind the daemon's back fails it,
 * and the daemon rebuilds the state from the ledger. While it runs, the
 * daemon also checks a record's seal before it writes it and an agent's
 * and its org's before a check decides (sidecard/store/state.h), so that a
 * change made meanwhile is never sealed over or decided on.
 *
 * The seal is a hash, not a signature: a writer who computes it as the
 * daemon does, or who rewrites the ledger as well, is not detected. Rules,
 * holds and tasks are not sealed. The file's mode is the guard against
 * every other writer: shm_open_rw refuses a segment owned by another uid
 * or writable by its group or others.
 */
#ifndef SIDECARD_SHM_H
#define SIDECARD_SHM_H

#include <stddef.h>
#include <stdint.h>

#include "sidecard.h"

#define SHM_MAGIC "SCSTATE1"
#define SHM_LAYOUT_VERSION 6u
#define SHM_HEADER_SIZE 4096u
#define SHM_NONE UINT32_MAX /* "no slot" */
#define SHM_METADATA_MAX 512
#define SHM_TZ_MAX 63
#define SHM_WINDOW_BUCKETS 16 /* buckets of a rate window, all counted */
#define SHM_WINDOW_MINUTES 4  /* minutes per bucket */
#define SHM_IX_EMPTY 0u         /* agent index: a free entry, which ends a probe */
#define SHM_IX_TOMB UINT32_MAX  /* agent index: a deleted agent's entry */
#define SHM_TOKENS 24           /* reader tokens, kept in the header (TOKENS) */
#define SHM_HASH_BYTES 32       /* SHA-256 of an access token */

/* hdr.serving: what the mapped file is to a reader (READERS AND RESTARTS). */
enum shm_serving { SHM_SERVING_STOPPED, SHM_SERVING_LIVE, SHM_SERVING_RETIRED };

struct shm_rec {
	uint32_t seq;  /* odd while the writer is changing the record */
	uint32_t used; /* 0: free slot */
};

/* Allowed checks in the last hour (see RATE WINDOWS above). */
struct shm_window {
	int32_t newest;                     /* bucket number of the newest bucket */
	uint32_t n[SHM_WINDOW_BUCKETS];     /* allowed checks per bucket */
};

/* A reader token (TOKENS); rec.used = 0: a free entry (never issued, or revoked). */
struct shm_token {
	struct shm_rec rec;
	uint64_t id;
	int64_t created_at;
	uint8_t role;       /* enum access_role: ACCESS_READER */
	uint8_t reserved[7];
	char name[SC_NAME_MAX + 1];
	uint8_t hash[SHM_HASH_BYTES];
};

/* Budget periods of a wallet (enum sc_period). */
enum shm_period { SHM_PERIOD_NONE, SHM_PERIOD_DAILY, SHM_PERIOD_WEEKLY, SHM_PERIOD_MONTHLY };

/* Alerts that fire at most once per period, each with its mark in shm_wallet.alerted. */
enum shm_alert_mark {
	SHM_MARK_LOW_WARNING,
	SHM_MARK_LOW_CRITICAL,
	SHM_MARK_BUDGET,
	SHM_MARK_VELOCITY_WARNING,
	SHM_MARK_VELOCITY_CRITICAL,
	SHM_MARK_ANOMALY_WARNING,
	SHM_MARK_ANOMALY_CRITICAL,
	SHM_ALERT_MARKS
};

/*
 * Wallet of an agent or an org; embedded in their records. Spend is kept
 * per calendar period of the org's time zone; each counter is valid for the
 * period its key names (struct shm_calendar) and counts as 0 in any other.
 */
struct shm_wallet {
	int64_t balance;     /* settled funds, >= 0 */
	int64_t held;        /* sum of open holds */
	int64_t budget;      /* the period's refill target and the top-up base */
	int64_t max_per_txn; /* 0 = unlimited */
	int64_t daily_limit; /* 0 = unlimited */
	int64_t daily_spent; /* charged on day `day` */
	int64_t debt;
	int32_t day;         /* local day number (days since the epoch) of daily_spent */
	uint32_t limited;    /* org wallets: 0 until funded; agent wallets: 1 */
	int64_t weekly_spent, monthly_spent, total_spent;
	int32_t week, month; /* keys of weekly_spent and monthly_spent */
	uint8_t period;      /* enum shm_period */
	uint8_t carved;      /* agent wallets: a sub-budget reserved from the org's wallet */
	uint16_t reserved;
	int32_t period_key;  /* the budget period last refilled (a day, week or month key) */
	int64_t reserving;   /* agent: what it reserves of its org's wallet; org: the sum */
	int64_t low_balance; /* alert threshold of available funds; 0: a tenth of the budget */
	int32_t alerted[SHM_ALERT_MARKS]; /* per mark: 1 + the period key when it last fired */
	uint32_t seal;       /* SEALS: a hash of the owner's money fields, set by the daemon */
};

/* An org's calendar: its current local day, week and month and when they end. */
struct shm_calendar {
	int32_t day;        /* local days since 1970-01-01 */
	int32_t week;       /* day number of the Monday that began this week */
	int32_t month;      /* year * 12 + month - 1 */
	int32_t reserved;
	int64_t day_start;  /* UTC microseconds at which the local day began */
	int64_t next_day, next_week, next_month;
};

struct shm_header {
	char magic[8];          /* SHM_MAGIC */
	uint32_t version;       /* SHM_LAYOUT_VERSION */
	uint32_t header_size;   /* SHM_HEADER_SIZE */
	uint64_t size;          /* bytes of the whole segment */
	uint32_t seq;           /* seqlock over the header's counters */
	uint32_t busy;          /* 1 while a multi-record change is applied */
	uint32_t org_cap, agent_cap, rule_cap, hold_cap, txn_cap, event_cap, task_cap;
	uint32_t price_cap, alert_cap, text_cap;
	uint64_t org_off, agent_off, rule_off, hold_off, txn_off, event_off, task_off;
	uint64_t price_off, alert_off, text_off;
	uint64_t next_org_id, next_agent_id, next_rule_id, next_txn_id, next_event_id;
	uint64_t next_task_uid, next_price_id, next_alert_id;
	int64_t alert_velocity; /* setting: allowed checks per hour that raise a velocity alert */
	int64_t next_roll;      /* the earliest next local midnight of any org's calendar */
	int64_t task_max_usage; /* setting: cap of a task's usage plus holds, 0 = unlimited */
	uint64_t mutations;     /* incremented by every applied change */
	uint64_t applied_seq;   /* the last ledger record applied to this segment */
	int64_t hold_ttl_us;    /* settings in force (ledger settings records) */
	uint32_t expiry_charges;
	uint32_t max_holds_per_agent; /* setting: open holds of one agent, 0 = no quota */
	int64_t created_at;
	uint32_t writer_pid;
	uint32_t max_holds_per_org;   /* setting: open holds of one org's agents, 0 = no quota */
	/* counters, monotonic across restarts */
	uint64_t checks, allowed, blocked, reports, expired, topups, anomalies, risk_blocked;
	/*
	 * High-water marks: slots at or above them were never used, so a scan
	 * of a table stops there and never touches the pages of its empty tail.
	 */
	uint32_t org_top, agent_top, rule_top, hold_top, task_top, price_top, text_top;
	uint32_t reserved5;
	/*
	 * Whose contents these are, stamped by the daemon when it serves the
	 * segment: the machine's boot (/proc/sys/kernel/random/boot_id) and
	 * the state directory (device and inode). A daemon attaches to a
	 * segment as it is only when both are its own: a file that outlived a
	 * reboot may hold any mix of old and new pages, and one beside another
	 * daemon's socket holds another ledger's state.
	 */
	uint8_t boot_id[16];
	uint64_t state_dev, state_ino;
	/*
	 * For readers in other processes (READERS AND RESTARTS, AGENT INDEX),
	 * on a cache line of their own: the counters above change with every
	 * check, these only at start, stop and index rebuilds, so a reader's
	 * check of them stays a cache hit.
	 */
	uint32_t serving __attribute__((aligned(64))); /* enum shm_serving */
	uint32_t agent_ix_seq;  /* odd while the agent index is rebuilt */
	uint32_t agent_ix_cap;  /* entries: a power of two >= 2 x agent_cap */
	uint32_t reserved4;
	uint64_t agent_ix_off;
	/* KEPT KEYS: per agent, its capacity, offset and high-water mark */
	uint32_t keys_per_agent, key_cap, key_top, reserved6;
	uint64_t key_off;
	/* Reader tokens (TOKENS); changed only by tokens.create and tokens.revoke. */
	uint64_t next_token_id;
	struct shm_token tokens[SHM_TOKENS];
};
_Static_assert(sizeof(struct shm_header) <= SHM_HEADER_SIZE, "the header fits its page");

struct shm_org {
	struct shm_rec rec;
	uint64_t id;
	int64_t created_at;
	uint32_t n_agents;
	uint32_t reserved;
	char name[SC_NAME_MAX + 1];
	char tz_name[SHM_TZ_MAX + 1]; /* as the operator gave it; "" for UTC */
	char tz_rule[SHM_TZ_MAX + 1]; /* the POSIX TZ rule it resolved to, used for the calendar */
	struct shm_calendar cal;
	struct shm_wallet wallet;
};

struct shm_agent {
	struct shm_rec rec;
	uint64_t id;
	uint64_t org_id;
	uint32_t org_slot;
	uint8_t priority; /* enum sc_priority */
	uint8_t status;   /* enum sc_status */
	uint16_t n_rules;
	int64_t created_at;
	uint32_t open_holds;
	int16_t score;       /* kredit score, 300..850 */
	uint8_t status_auto; /* the status was set by the score, not the operator */
	uint8_t reserved;
	char name[SC_NAME_MAX + 1];
	uint8_t token_hash[SHM_HASH_BYTES]; /* TOKENS: of the agent's token */
	struct shm_wallet wallet;
	/* lifetime counters behind the score */
	uint64_t checks, blocked, settled, failures, overruns, expired, anomalies;
	int64_t charged_total; /* sum of settled charges, for the average cost */
	uint32_t first_rule;   /* head of the rule list in match order; SHM_NONE: no rules */
	struct shm_window vel; /* allowed checks, for velocity alerts */
};

/* enum sc_event_type + 1, so that 0 is never a valid type */
enum shm_event_type { SHM_EVENT_STATUS = 1, SHM_EVENT_ANOMALY, SHM_EVENT_CRITICAL };

struct shm_event {
	struct shm_rec rec;
	uint64_t id;
	uint64_t agent_id;
	int64_t time;
	uint8_t type;      /* enum shm_event_type */
	uint8_t from, to;  /* statuses, for SHM_EVENT_STATUS */
	uint8_t reserved;
	int32_t score;     /* the agent's score when it happened */
	char reason[SC_REASON_MAX + 1];
};

struct shm_rule {
	struct shm_rec rec;
	uint64_t id;
	uint32_t agent_slot;         /* the agent it belongs to */
	uint32_t name;               /* text slot of its name */
	uint32_t match;              /* text slot of its pattern */
	uint32_t next;               /* the agent's next rule in match order; SHM_NONE: last */
	int64_t max_cost_per_txn;    /* 0 = unlimited */
	int64_t daily_limit;         /* 0 = unlimited */
	int64_t hourly_limit;        /* allowed checks per sliding hour, 0 = unlimited */
	int64_t daily_spent;         /* charged on day `day` */
	int64_t held;                /* open holds under this rule */
	struct shm_window rate;      /* allowed checks under this rule */
	int32_t day;
};

/* A rule name or pattern, shared by every rule field that names it. */
struct shm_text {
	struct shm_rec rec;
	uint32_t refs;               /* rule fields naming it; 0 only while free */
	uint32_t len;                /* bytes of s, without its NUL */
	char s[SC_ACTION_MAX + 1];   /* NUL-terminated; patterns are the longest texts */
};

_Static_assert(sizeof(struct shm_window) == 68, "a window is 16 buckets and their number");
_Static_assert(sizeof(struct shm_agent) == 432, "the agent record size SIZE documents");
_Static_assert(sizeof(struct shm_rule) == 144, "the rule record size SIZE documents");
_Static_assert(sizeof(struct shm_text) == 144, "the text record size SIZE documents");

struct shm_hold {
	struct shm_rec rec;
	uint64_t txn_id;
	uint64_t agent_id;
	uint64_t rule_id;       /* 0: no rule */
	uint32_t agent_slot;
	uint32_t org_slot;
	uint32_t rule_slot;     /* SHM_NONE: no rule */
	uint32_t org_limited;   /* the org wallet was limited when the hold was placed */
	uint32_t task_slot;     /* SHM_NONE: no task */
	uint32_t reserved;
	uint64_t task_uid;      /* the task's uid, to tell a reused slot */
	int64_t amount;         /* the estimate held */
	int64_t created_at;
	int64_t expires_at;
};

struct shm_txn {
	struct shm_rec rec;
	uint64_t id;
	uint64_t agent_id;
	uint64_t org_id;
	uint64_t rule_id;
	int64_t estimate;
	int64_t charged;     /* taken from the wallet; negative for money put in */
	int64_t balance_after; /* the wallet's balance once the transaction took effect */
	int64_t created_at;
	int64_t settled_at;
	uint8_t status;      /* enum sc_txn_status */
	uint8_t outcome;     /* enum sc_outcome, when has_outcome */
	uint8_t has_outcome;
	uint8_t risk;        /* 0 low, 1 medium, 2 high */
	uint16_t meta_len;
	uint16_t reserved;
	char action[SC_ACTION_MAX + 1];
	char type[SC_TYPE_MAX + 1];
	char block_reason[SC_REASON_MAX + 1];
	char idem_key[SC_KEY_MAX + 1];
	char task_id[SC_KEY_MAX + 1];
	char model[SC_NAME_MAX + 1]; /* a report priced from token counts: the model */
	uint32_t rate_version;       /* ... and the version of its rate; 0: not priced */
	uint32_t reserved2;
	uint64_t tokens[3];          /* ... input, output and cached input tokens */
	uint8_t meta[SHM_METADATA_MAX]; /* the check's metadata map, packed */
};

/*
 * The usage of a task named by checks (task_id) of one org's agents: the
 * same id in two orgs is two tasks. Slots are reused, least recently used
 * first.
 */
struct shm_task {
	struct shm_rec rec;
	uint64_t uid;       /* unique across reuse of the slot */
	uint64_t org_id;    /* the org whose task it is */
	char id[SC_KEY_MAX + 1];
	int64_t used;       /* charged by its settled and expired transactions */
	int64_t held;       /* its open holds */
	uint64_t checks;
	uint32_t open_holds;
	uint32_t reserved;
	int64_t created_at, last_at;
};

/* A keyed check's replay, kept after its transaction left the history (KEPT KEYS). */
struct shm_key {
	struct shm_rec rec;
	uint64_t agent_id;
	uint64_t txn_id;
	int64_t estimate;
	uint32_t older, newer;     /* the agent's kept keys, a circle */
	uint8_t allowed;
	uint8_t risk;
	uint16_t reserved;
	uint32_t reserved2;
	char key[SC_KEY_MAX + 1];
	char action[SC_ACTION_MAX + 1];
	char block_reason[SC_REASON_MAX + 1];
};
_Static_assert(sizeof(struct shm_key) == 368, "the kept key size DESIGN.md documents");

/* One version of a model's rates; versions are never changed, only added. */
struct shm_price {
	struct shm_rec rec;
	uint64_t id;
	uint32_t version;        /* 1, 2, ... per model */
	uint32_t reserved;
	char model[SC_NAME_MAX + 1];
	int64_t effective_from;  /* in force from this time until a later version's */
	int64_t input, output, cached_input; /* micros per million tokens */
	int64_t created_at;
};

/* enum sc_alert_kind + 1, so that 0 is never a valid kind */
enum shm_alert_kind {
	SHM_ALERT_LOW_BALANCE = 1,
	SHM_ALERT_VELOCITY,
	SHM_ALERT_BUDGET,
	SHM_ALERT_ANOMALY
};

struct shm_alert {
	struct shm_rec rec;
	uint64_t id;
	uint64_t agent_id;  /* 0: the org's own wallet */
	uint64_t org_id;
	uint64_t txn_id;    /* the transaction that crossed the threshold; 0: none */
	int64_t time;
	uint8_t kind;       /* enum shm_alert_kind */
	uint8_t severity;   /* 0 warning, 1 critical */
	uint8_t reserved[6];
	int64_t value, threshold;
	char message[SC_REASON_MAX + 1];
};

struct shm_caps {
	uint32_t orgs, agents, rules, holds, txns, events, tasks, prices, alerts, texts;
	uint32_t keys_per_agent; /* KEPT KEYS; 0: none, a key lives as long as its transaction */
};

/* A mapped segment. */
struct shm {
	struct shm_header *hdr;
	char *base;
	size_t size;
	int fd;
	int readonly;
	unsigned change_depth; /* nesting of shm_change_begin (writer only) */
	struct shm_org *orgs;
	struct shm_agent *agents;
	struct shm_rule *rules;
	struct shm_hold *holds;
	struct shm_txn *txns;
	struct shm_event *events;
	struct shm_task *tasks;
	struct shm_price *prices;
	struct shm_alert *alerts;
	uint32_t *agent_ix;
	/* writer only, recounted when the index is rebuilt */
	uint32_t agent_ix_live, agent_ix_tombs;
	struct shm_text *texts;
	struct shm_key *keys;
};

/*
 * SEALS: the hash of an agent's or an org's money fields. Each field is
 * multiplied by its own odd constant, a bijection, and the products are
 * summed, so that changing any one field changes the sum; the products are
 * independent of each other, so the CPU computes them side by side. The
 * sum is mixed once at the end.
 */
static inline uint64_t shm_seal_term(uint64_t field, uint64_t k)
{
	return (field ^ (k >> 7)) * (k | 1);
}

static inline uint64_t shm_seal_wallet(const struct shm_wallet *w)
{
	return shm_seal_term((uint64_t)w->balance, UINT64_C(0x9e3779b97f4a7c15)) +
	       shm_seal_term((uint64_t)w->held, UINT64_C(0xbf58476d1ce4e5b9)) +
	       shm_seal_term((uint64_t)w->budget, UINT64_C(0x94d049bb133111eb)) +
	       shm_seal_term((uint64_t)w->max_per_txn, UINT64_C(0xd6e8feb86659fd93)) +
	       shm_seal_term((uint64_t)w->daily_limit, UINT64_C(0xa0761d6478bd642f)) +
	       shm_seal_term((uint64_t)w->daily_spent, UINT64_C(0xe7037ed1a0b428db)) +
	       shm_seal_term((uint64_t)w->debt, UINT64_C(0x8ebc6af09c88c6e3)) +
	       shm_seal_term((uint64_t)(uint32_t)w->day << 32 | w->limited,
	                     UINT64_C(0x589965cc75374cc3));
}

static inline uint32_t shm_seal_final(uint64_t h)
{
	h ^= h >> 31;
	h *= UINT64_C(0x9e3779b97f4a7c15);
	return (uint32_t)(h ^ (h >> 32));
}

static inline uint32_t shm_agent_seal(const struct shm_agent *a)
{
	return shm_seal_final(shm_seal_wallet(&a->wallet) +
	                      shm_seal_term(a->id, UINT64_C(0x1d8e4e27c47d124f)) +
	                      shm_seal_term(a->org_id, UINT64_C(0xc2b2ae3d27d4eb4f)) +
	                      shm_seal_term((uint64_t)a->priority << 8 | a->status,
	                                    UINT64_C(0x165667b19e3779f9)));
}

static inline uint32_t shm_org_seal(const struct shm_org *o)
{
	/* its own constant for the id, so that an org's seal is never an agent's */
	return shm_seal_final(shm_seal_wallet(&o->wallet) +
	                      shm_seal_term(o->id, UINT64_C(0x27d4eb2f165667c5)));
}

/* Bytes a segment of these capacities needs. SC_ERANGE if it overflows. */
int shm_layout_size(const struct shm_caps *caps, uint64_t *size);

/*
 * Opens the segment at path for the daemon: attaches to an existing valid
 * one (its capacities win over caps, *created = 0), or creates and zeroes a
 * new one when the file does not exist (*created = 1). A file that exists
 * but is not a valid segment is refused with a message in err naming the
 * problem; nothing is changed on disk.
 */
int shm_open_rw(struct shm *m, const char *path, const struct shm_caps *caps, int *created,
                char *err, size_t errlen);
/*
 * Who may read the segment file besides its owner, the daemon's user: no
 * one when gid is -1 (mode 0600, the default), else the members of group
 * gid (the file is given to it and made 0640): the readers that map it
 * (sc_peek_*). Applied at every open, so a file an earlier version left
 * wider (0640 in the socket's group) is narrowed too. 0, or -errno with
 * err naming the file and the group.
 */
int shm_set_readers(struct shm *m, long gid, char *err, size_t errlen);
/*
 * Gives the segment at path (not open) the capacities caps: the orgs,
 * agents, rules, rule texts, holds and prices tables may grow, none shrink,
 * and the others (the rings, the tasks, the kept keys per agent) must stay
 * as they are; SC_EINVAL otherwise. The records are copied into a
 * new file at the same slots, which replaces path, readers of the old one
 * being told to reopen (READERS AND RESTARTS). 0 or an error in err.
 */
int shm_grow(const char *path, const struct shm_caps *caps, char *err, size_t errlen);
/*
 * Maps an existing segment read-only (any process). Unlike shm_open_rw it
 * accepts a busy segment: the running daemon is busy in every change.
 */
int shm_open_ro(struct shm *m, const char *path, char *err, size_t errlen);
/*
 * Validates a mapped header against the file size: 0, SC_EINVAL + err, or
 * SC_EINTERNAL + err for a busy segment (the daemon stopped mid-change).
 */
int shm_validate(const struct shm_header *h, uint64_t file_size, char *err, size_t errlen);
void shm_close(struct shm *m);

/*
 * SNAPSHOTS (snap.c): the record tables as a list, and copy-on-write views
 * of them at one instant, read by a copier thread while the writer goes on.
 */
#define SHM_TABLES 11 /* orgs, agents, rules, holds, txns, events, tasks, prices, alerts, texts, keys */

struct shm_table {
	char *base;
	size_t rec_size;
	uint32_t end; /* one past the last slot that may be used, as header h says */
};

/* Table t (in the order above) of m, with the end that header h gives. */
void shm_table(const struct shm *m, const struct shm_header *h, unsigned t,
               struct shm_table *out);

struct shm_snap;

/* The view being copied, or NULL (written by the writer and the copier). */
extern struct shm_snap *shm_snap_active;

/*
 * Writer, with no change in progress: a view of m's tables and header as
 * they are now, made active, so that shm_write_begin saves each record of
 * it before the record first changes. 0 or -ENOMEM.
 */
int shm_snap_begin(struct shm *m, struct shm_snap **out);
/* The header and table t as they were at the instant (any thread). */
const struct shm_header *shm_snap_header(const struct shm_snap *s);
const struct shm_table *shm_snap_table(const struct shm_snap *s, unsigned t);
/* Copier: slot (below the table's end) of table t as it was, into out (rec_size bytes). */
void shm_snap_copy(struct shm_snap *s, unsigned t, uint32_t slot, void *out);
/* Copier, once every slot it needs is copied: the writer stops saving. */
void shm_snap_end(struct shm_snap *s);
/* Writer (no shm_write_begin may be running), after shm_snap_end. NULL is ignored. */
void shm_snap_free(struct shm_snap *s);
/* shm_write_begin's part: saves the record at `at` if the view still needs it. */
void shm_snap_save(struct shm_snap *s, const void *at);

/*
 * Writer side of the per-record seqlock (daemon loop thread only). It
 * must come before the first byte of the record changes: that is also when
 * an active snapshot view saves the record.
 */
static inline void shm_write_begin(uint32_t *seq)
{
	struct shm_snap *snap = __atomic_load_n(&shm_snap_active, __ATOMIC_ACQUIRE);

	if (__builtin_expect(snap != NULL, 0))
		shm_snap_save(snap, seq);
	__atomic_store_n(seq, *seq + 1, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
}

static inline void shm_write_end(uint32_t *seq)
{
	__atomic_store_n(seq, *seq + 1, __ATOMIC_RELEASE);
}

/*
 * Copies a record of size bytes starting with a uint32_t seq into out,
 * consistently. Returns the number of retries it needed (for tests and
 * benchmarks). Any thread, any process.
 */
unsigned shm_read(const void *rec, void *out, size_t size);

/*
 * The end of a write of an agent or an org record (writer only): seals it
 * (SEALS), then ends the seqlock write.
 */
static inline void shm_agent_write_end(struct shm_agent *a)
{
	a->wallet.seal = shm_agent_seal(a);
	shm_write_end(&a->rec.seq);
}

static inline void shm_org_write_end(struct shm_org *o)
{
	o->wallet.seal = shm_org_seal(o);
	shm_write_end(&o->rec.seq);
}

/*
 * The same, for code that holds a wallet's record by its seqlock (the
 * record's first field): seq of an org's record if org, else an agent's.
 */
static inline void shm_wallet_write_end(uint32_t *seq, int org)
{
	if (org)
		shm_org_write_end((struct shm_org *)(void *)seq);
	else
		shm_agent_write_end((struct shm_agent *)(void *)seq);
}

/*
 * Checks the seal of every used org and agent record: 0, or SC_EINVAL with
 * err naming the first record whose seal does not match its fields.
 */
int shm_seal_check(struct shm *m, char *err, size_t errlen);
/*
 * The same for the records of a restored snapshot (writer), except that a
 * seal of 0 is set: snapshots written before records carried seals have
 * none.
 */
int shm_seal_restored(struct shm *m, char *err, size_t errlen);

/*
 * First entry a probe for agent id visits in an index of cap entries (a
 * power of two >= 2): Fibonacci hashing, which spreads the consecutive ids
 * the daemon assigns evenly over the table.
 */
static inline uint32_t shm_agent_ix_home(uint64_t id, uint32_t cap)
{
	return (uint32_t)((id * UINT64_C(0x9e3779b97f4a7c15)) >> (64 - __builtin_ctz(cap)));
}

/*
 * The agent index, writer side (daemon loop thread). insert: agent slot,
 * already written with rec.used = 1 and this id, becomes findable. remove:
 * its entry becomes a tombstone; call it once the record is marked unused.
 * Either may rebuild the whole index (AGENT INDEX), which is also how the
 * daemon starts: shm_agent_ix_rebuild indexes every used agent record.
 */
void shm_agent_ix_insert(struct shm *m, uint64_t id, uint32_t slot);
void shm_agent_ix_remove(struct shm *m, uint64_t id, uint32_t slot);
void shm_agent_ix_rebuild(struct shm *m);
/* The slot of agent id, or SHM_NONE; for the writer, which needs no seqlock. */
uint32_t shm_agent_ix_find(const struct shm *m, uint64_t id);

/*
 * Marks the segment file at path retired (hdr.serving) before the daemon
 * renames or unlinks it, so that readers still mapping it learn that they
 * must open the path again. A file that is not a segment of this layout
 * version is left alone (its readers, if any, cannot have mapped it).
 * 0, or -errno / SC_EINVAL with a message in err.
 */
int shm_retire_file(const char *path, char *err, size_t errlen);
/* Sets hdr.serving (writer). */
void shm_set_serving(struct shm *m, enum shm_serving serving);

/*
 * Marks the start and end of a change spanning several records (or a
 * request and its ledger record). Nests; busy is cleared by the outermost end.
 */
void shm_change_begin(struct shm *m);
void shm_change_end(struct shm *m);

#endif /* SIDECARD_SHM_H */
