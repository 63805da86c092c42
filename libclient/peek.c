/*
 * peek.c: libsidecard's read path through the shared mapping (sc_peek_*):
 * an agent's or an org's wallet read straight from the daemon's state
 * segment, mapped read-only, without a system call.
 *
 * The segment's layout and its rules are shm/shm.h's; this file needs
 * nothing else of the daemon. A read:
 *   1. checks hdr.serving (READERS AND RESTARTS): anything but live is
 *      SC_EUNAVAILABLE, so a file the daemon retired is never read as if
 *      it were current;
 *   2. probes the agent index (AGENT INDEX) from the id's home entry;
 *   3. for an entry whose agent record carries the id, copies the few
 *      fields it returns under the record's seqlock (sequence, fields,
 *      acquire fence, sequence again) and keeps the copy only if the
 *      sequence was even and unchanged and the record is used with that
 *      id. It never copies the whole record (720 bytes): the fields live in
 *      three cache lines;
 *   4. a miss counts only if hdr.agent_ix_seq was even and unchanged across
 *      the probe, so a rebuild of the index never reads as "not found".
 * A record in the middle of a change, or a rebuild in progress, is waited
 * for: SPINS tries with a pause, then sched_yield() between tries until
 * WAIT_NS have passed, after which the read gives up with -EAGAIN (a writer
 * that died mid-write leaves the sequence odd for good).
 *
 * Why skipping an entry on a plain read of the record's id is safe: the
 * daemon writes an agent record completely before it publishes the index
 * entry that names it (release store, acquire load here), so a reader that
 * sees the entry sees at least that record's id; a different id means the
 * slot now holds another agent, or is being rewritten for one, and the
 * agent looked for is not there.
 *
 * daily_spent is the wallet's counter if its day is the org's current day
 * (shm_org.cal.day), else 0, as `wallets.get` computes it. The org's day is
 * read after the agent's snapshot: it only moves forward, so the pair is
 * the one some moment after the snapshot would give.
 *
 * Org wallets: orgs are never deleted and take the lowest free slot, so
 * org id N is found in slot N - 1; that slot is tried first and validated
 * like an agent's, then the table is scanned, so a different placement is
 * still found, only slower.
 *
 * Threads: a struct sc_peek is written only by sc_peek_open* and
 * sc_peek_close; reads share it from any number of threads. Ownership: the
 * caller owns the handle from open to close.
 */
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "client_int.h"
#include "shm.h"

/* Tries with a pause before yielding the processor between tries. */
#define SPINS 128
/* How long a read waits for a record or the index to settle. */
#define WAIT_NS INT64_C(100000000)

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

struct sc_peek {
	struct shm m;
	const struct shm_header *hdr;
	const struct shm_agent *agents;
	const struct shm_org *orgs;
	const uint32_t *ix;
	uint32_t ix_cap, agent_cap, org_cap;
};

/* The fields of a wallet a peek returns. */
struct wallet_copy {
	int64_t balance, held, budget, max_per_txn, daily_limit, daily_spent, debt;
	int32_t day;
	uint32_t limited;
};

struct agent_copy {
	uint32_t used, org_slot;
	uint64_t id, org_id;
	uint8_t status;
	struct wallet_copy w;
};

struct org_copy {
	uint32_t used;
	int32_t today;
	uint64_t id;
	struct wallet_copy w;
};

/* ------------------------------------------------------------ waiting */

struct wait {
	unsigned tries;
	struct timespec since;
};

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

/* Before another try: 0, or -EAGAIN once the wait is over. */
static int wait_turn(struct wait *w)
{
	struct timespec now;
	int64_t waited;

	if (w->tries++ < SPINS) {
		cpu_relax();
		return 0;
	}
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (w->tries == SPINS + 1)
		w->since = now;
	waited = (int64_t)(now.tv_sec - w->since.tv_sec) * 1000000000 +
	         (now.tv_nsec - w->since.tv_nsec);
	if (waited > WAIT_NS)
		return -EAGAIN;
	sched_yield();
	return 0;
}

/* -------------------------------------------------------------- copies */

/*
 * Reader side of a seqlock (a record's rec.seq, the index's agent_ix_seq):
 * read_begin gives the sequence before the reads, 0 if a change is under
 * way (odd); read_end, after them, says whether what was read is of one
 * moment: the fence keeps the reads before the second load of the
 * sequence, which must not have moved.
 */
static inline int read_begin(const uint32_t *seq, uint32_t *out)
{
	*out = __atomic_load_n(seq, __ATOMIC_ACQUIRE);
	return !(*out & 1);
}

static inline int read_end(const uint32_t *seq, uint32_t begun)
{
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	return __atomic_load_n(seq, __ATOMIC_RELAXED) == begun;
}

static void copy_wallet(const struct shm_wallet *w, struct wallet_copy *c)
{
	c->balance = LOAD(w->balance);
	c->held = LOAD(w->held);
	c->budget = LOAD(w->budget);
	c->max_per_txn = LOAD(w->max_per_txn);
	c->daily_limit = LOAD(w->daily_limit);
	c->daily_spent = LOAD(w->daily_spent);
	c->debt = LOAD(w->debt);
	c->day = LOAD(w->day);
	c->limited = LOAD(w->limited);
}

/* 1: c is a snapshot of one moment; 0: the record was being changed. */
static int copy_agent(const struct shm_agent *a, struct agent_copy *c)
{
	uint32_t seq;

	if (!read_begin(&a->rec.seq, &seq))
		return 0;
	c->used = LOAD(a->rec.used);
	c->id = LOAD(a->id);
	c->org_id = LOAD(a->org_id);
	c->org_slot = LOAD(a->org_slot);
	c->status = LOAD(a->status);
	copy_wallet(&a->wallet, &c->w);
	return read_end(&a->rec.seq, seq);
}

static int copy_org(const struct shm_org *o, struct org_copy *c)
{
	uint32_t seq;

	if (!read_begin(&o->rec.seq, &seq))
		return 0;
	c->used = LOAD(o->rec.used);
	c->id = LOAD(o->id);
	c->today = LOAD(o->cal.day);
	copy_wallet(&o->wallet, &c->w);
	return read_end(&o->rec.seq, seq);
}

static void fill(sc_wallet_snapshot *out, uint64_t id, uint64_t org_id, uint8_t status,
                 const struct wallet_copy *w, int32_t today)
{
	out->id = id;
	out->org_id = org_id;
	out->status = (enum sc_status)status;
	out->balance = w->balance;
	out->held = w->held;
	/* As the daemon's state_wallet_available: saturated, never wrapped. */
	if (__builtin_sub_overflow(w->balance, w->held, &out->available))
		out->available = INT64_MIN;
	out->budget = w->budget;
	out->max_per_txn = w->max_per_txn;
	out->daily_spend_limit = w->daily_limit;
	out->daily_spent = w->day == today ? w->daily_spent : 0;
	out->debt = w->debt;
	out->limited = w->limited != 0;
}

/* --------------------------------------------------------------- reads */

static int live(const sc_peek *p)
{
	return __atomic_load_n(&p->hdr->serving, __ATOMIC_ACQUIRE) == SHM_SERVING_LIVE;
}

/* A record changed under the copy: try again. */
#define RETRY 1

/* 0 (c holds agent id), SC_ENOTFOUND, or RETRY. */
static int probe(const sc_peek *p, uint64_t id, struct agent_copy *c)
{
	uint32_t mask = p->ix_cap - 1, pos = shm_agent_ix_home(id, p->ix_cap);

	for (uint32_t n = 0; n < p->ix_cap; n++, pos = (pos + 1) & mask) {
		uint32_t e = __atomic_load_n(&p->ix[pos], __ATOMIC_ACQUIRE);
		const struct shm_agent *a;

		if (e == SHM_IX_EMPTY)
			break;
		if (e == SHM_IX_TOMB || e - 1 >= p->agent_cap)
			continue;
		a = &p->agents[e - 1];
		if (LOAD(a->id) != id)
			continue;
		if (!copy_agent(a, c))
			return RETRY;
		if (c->used && c->id == id)
			return 0;
	}
	return SC_ENOTFOUND;
}

int sc_peek_wallet(const sc_peek *p, uint64_t agent_id, sc_wallet_snapshot *out)
{
	struct wait w = { 0 };
	struct agent_copy c;
	int32_t today;
	int rc;

	for (;;) {
		uint32_t ix_seq;

		if (!live(p))
			return SC_EUNAVAILABLE;
		if (read_begin(&p->hdr->agent_ix_seq, &ix_seq)) {
			rc = probe(p, agent_id, &c);
			if (rc == 0)
				break;
			if (rc == SC_ENOTFOUND && read_end(&p->hdr->agent_ix_seq, ix_seq))
				return SC_ENOTFOUND;
		}
		if ((rc = wait_turn(&w)) != 0)
			return rc;
	}
	/* The daemon never leaves an agent without its org; a bad slot just means no day to match. */
	today = c.org_slot < p->org_cap ? LOAD(p->orgs[c.org_slot].cal.day) : INT32_MIN;
	fill(out, c.id, c.org_id, c.status, &c.w, today);
	return 0;
}

/* 0 (c holds org id), SC_ENOTFOUND or RETRY, for the org in slot. */
static int org_at(const sc_peek *p, uint32_t slot, uint64_t id, struct org_copy *c)
{
	const struct shm_org *o = &p->orgs[slot];

	if (LOAD(o->id) != id)
		return SC_ENOTFOUND;
	if (!copy_org(o, c))
		return RETRY;
	return c->used && c->id == id ? 0 : SC_ENOTFOUND;
}

int sc_peek_org_wallet(const sc_peek *p, uint64_t org_id, sc_wallet_snapshot *out)
{
	struct wait w = { 0 };
	struct org_copy c;
	int rc;

	for (;;) {
		if (!live(p))
			return SC_EUNAVAILABLE;
		rc = org_id >= 1 && org_id - 1 < p->org_cap ? org_at(p, (uint32_t)(org_id - 1), org_id, &c)
		                                            : SC_ENOTFOUND;
		for (uint32_t i = 0; rc == SC_ENOTFOUND && i < p->org_cap; i++)
			if (i != org_id - 1)
				rc = org_at(p, i, org_id, &c);
		if (rc == 0)
			break;
		if (rc == SC_ENOTFOUND)
			return rc;
		if ((rc = wait_turn(&w)) != 0)
			return rc;
	}
	fill(out, c.id, c.id, SC_STATUS_ACTIVE, &c.w, c.today);
	return 0;
}

const char *sc_peek_unavailable(const sc_peek *p)
{
	switch (__atomic_load_n(&p->hdr->serving, __ATOMIC_ACQUIRE)) {
	case SHM_SERVING_LIVE:
		return NULL;
	case SHM_SERVING_STOPPED:
		return "the daemon is stopped or starting: the state it serves may change when it runs "
		       "again";
	case SHM_SERVING_RETIRED:
		return "the daemon replaced this state file: open the state path again";
	default:
		return "the state file is in an unknown serving state";
	}
}

/* ---------------------------------------------------------- open, close */

int sc_peek_open(const char *state_path, sc_peek **out, char *err, size_t errlen)
{
	sc_peek *p;
	const char *why;
	struct stat st;
	char msg[512];
	int rc;

	*out = NULL;
	if (state_path == NULL) {
		sc_errorf(err, errlen, "no state file given");
		return SC_EUNAVAILABLE;
	}
	if ((p = calloc(1, sizeof(*p))) == NULL) {
		sc_errorf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	rc = shm_open_ro(&p->m, state_path, msg, sizeof(msg));
	if (rc != 0) {
		if (rc == -ENOENT)
			sc_errorf(err, errlen, "%s (the daemon's state directory is not visible here: "
			          "a container that mounts only the socket must use the socket)", msg);
		else if (rc == -EACCES || rc == -EPERM)
			sc_errorf(err, errlen, "%s (the state file is readable by the daemon's user "
			          "alone, or its readers' group when it has one)", msg);
		else
			sc_errorf(err, errlen, "%s", msg);
		free(p);
		return SC_EUNAVAILABLE;
	}
	/* a file another user made where the daemon's should be could show any balance */
	if (fstat(p->m.fd, &st) != 0 ||
	    sc_client_trust(st.st_uid, state_path, "the owner of the state file", err,
	                    errlen) != 0) {
		sc_peek_close(p);
		return SC_EUNAVAILABLE;
	}
	p->hdr = p->m.hdr;
	p->agents = p->m.agents;
	p->orgs = p->m.orgs;
	p->ix = p->m.agent_ix;
	p->ix_cap = p->hdr->agent_ix_cap;
	p->agent_cap = p->hdr->agent_cap;
	p->org_cap = p->hdr->org_cap;
	if ((why = sc_peek_unavailable(p)) != NULL) {
		sc_errorf(err, errlen, "%s: %s", state_path, why);
		sc_peek_close(p);
		return SC_EUNAVAILABLE;
	}
	*out = p;
	return 0;
}

int sc_peek_open_client(sc_client *c, sc_peek **out, char *err, size_t errlen)
{
	char path[PATH_MAX];
	int rc;

	*out = NULL;
	rc = sc_client_stat_str(c, "state_path", path, sizeof(path));
	if (rc == SC_ENOTFOUND) {
		sc_errorf(err, errlen, "the daemon does not tell its state file (a version before %s)",
		          SC_VERSION);
		return SC_EUNAVAILABLE;
	}
	if (rc != 0) {
		sc_errorf(err, errlen, "stats: %s", sc_last_error(c));
		return rc;
	}
	return sc_peek_open(path, out, err, errlen);
}

void sc_peek_close(sc_peek *p)
{
	if (p == NULL)
		return;
	shm_close(&p->m);
	free(p);
}
