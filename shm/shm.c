/*
 * shm.c: creating, validating and mapping the state segment described in
 * shm.h, the reader side of its per-record seqlock, and the writer side of
 * the agent index (shm.h, AGENT INDEX).
 *
 * Threads: shm_open_rw/shm_close/shm_retire_file run on the daemon's main
 * thread before and after the loop; the agent index is written by the loop
 * thread; shm_open_ro and shm_read may run on any thread of any process.
 * Nothing here allocates beyond the mapping itself; struct shm is owned by
 * the caller.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "shm.h"

static int add_table(uint64_t *off, uint32_t count, size_t rec_size, uint64_t *table_off)
{
	uint64_t bytes;

	*off = (*off + 63) & ~(uint64_t)63;
	*table_off = *off;
	if (__builtin_mul_overflow((uint64_t)count, (uint64_t)rec_size, &bytes) ||
	    __builtin_add_overflow(*off, bytes, off))
		return SC_ERANGE;
	return 0;
}

/* Entries of the agent index for agent_cap agents: the power of two >= 2 x agent_cap. */
static int agent_ix_cap(uint32_t agent_cap, uint32_t *cap)
{
	uint64_t want = (uint64_t)agent_cap * 2, c = 2;

	while (c < want)
		c <<= 1;
	if (c > UINT32_MAX)
		return SC_ERANGE;
	*cap = (uint32_t)c;
	return 0;
}

/* Computes every table offset of a segment with these capacities. */
static int layout(const struct shm_caps *caps, struct shm_header *h)
{
	uint64_t off = SHM_HEADER_SIZE;
	uint32_t ix_cap;

	if (add_table(&off, caps->orgs, sizeof(struct shm_org), &h->org_off) ||
	    add_table(&off, caps->agents, sizeof(struct shm_agent), &h->agent_off) ||
	    add_table(&off, caps->rules, sizeof(struct shm_rule), &h->rule_off) ||
	    add_table(&off, caps->holds, sizeof(struct shm_hold), &h->hold_off) ||
	    add_table(&off, caps->txns, sizeof(struct shm_txn), &h->txn_off) ||
	    add_table(&off, caps->events, sizeof(struct shm_event), &h->event_off) ||
	    add_table(&off, caps->tasks, sizeof(struct shm_task), &h->task_off) ||
	    add_table(&off, caps->prices, sizeof(struct shm_price), &h->price_off) ||
	    add_table(&off, caps->alerts, sizeof(struct shm_alert), &h->alert_off) ||
	    add_table(&off, caps->texts, sizeof(struct shm_text), &h->text_off) ||
	    agent_ix_cap(caps->agents, &ix_cap) ||
	    add_table(&off, ix_cap, sizeof(uint32_t), &h->agent_ix_off) ||
	    (uint64_t)caps->agents * caps->keys_per_agent > UINT32_MAX ||
	    add_table(&off, caps->agents * caps->keys_per_agent, sizeof(struct shm_key), &h->key_off))
		return SC_ERANGE;
	if (off > (uint64_t)SIZE_MAX / 2)
		return SC_ERANGE;
	h->org_cap = caps->orgs;
	h->agent_cap = caps->agents;
	h->rule_cap = caps->rules;
	h->hold_cap = caps->holds;
	h->txn_cap = caps->txns;
	h->event_cap = caps->events;
	h->task_cap = caps->tasks;
	h->price_cap = caps->prices;
	h->alert_cap = caps->alerts;
	h->text_cap = caps->texts;
	h->agent_ix_cap = ix_cap;
	h->keys_per_agent = caps->keys_per_agent;
	h->key_cap = caps->agents * caps->keys_per_agent;
	h->size = off;
	return 0;
}

int shm_layout_size(const struct shm_caps *caps, uint64_t *size)
{
	struct shm_header h;
	int rc;

	memset(&h, 0, sizeof(h));
	rc = layout(caps, &h);
	if (rc == 0)
		*size = h.size;
	return rc;
}

int shm_validate(const struct shm_header *h, uint64_t file_size, char *err, size_t errlen)
{
	struct shm_header want;
	struct shm_caps caps;

	if (file_size < SHM_HEADER_SIZE) {
		sc_errorf(err, errlen, "file is %llu bytes, smaller than the %u-byte header",
		     (unsigned long long)file_size, SHM_HEADER_SIZE);
		return SC_EINVAL;
	}
	if (memcmp(h->magic, SHM_MAGIC, sizeof(h->magic)) != 0) {
		sc_errorf(err, errlen, "bad magic: not a sidecard state segment");
		return SC_EINVAL;
	}
	if (h->version != SHM_LAYOUT_VERSION || h->header_size != SHM_HEADER_SIZE) {
		sc_errorf(err, errlen, "layout version %u (header %u bytes), but this program reads version %u",
		     h->version, h->header_size, SHM_LAYOUT_VERSION);
		return SC_EINVAL;
	}
	caps = (struct shm_caps){h->org_cap,  h->agent_cap, h->rule_cap,  h->hold_cap,
	                         h->txn_cap,  h->event_cap, h->task_cap,  h->price_cap,
	                         h->alert_cap, h->text_cap, h->keys_per_agent};
	memset(&want, 0, sizeof(want));
	if (caps.orgs == 0 || caps.agents == 0 || caps.rules == 0 || caps.holds == 0 ||
	    caps.txns == 0 || caps.events == 0 || caps.tasks == 0 || caps.prices == 0 ||
	    caps.alerts == 0 || caps.texts == 0 || layout(&caps, &want) != 0 ||
	    want.task_off != h->task_off || want.text_off != h->text_off ||
	    want.price_off != h->price_off || want.alert_off != h->alert_off ||
	    want.size != h->size || want.org_off != h->org_off || want.agent_off != h->agent_off ||
	    want.rule_off != h->rule_off || want.hold_off != h->hold_off ||
	    want.txn_off != h->txn_off || want.event_off != h->event_off ||
	    want.agent_ix_off != h->agent_ix_off || want.agent_ix_cap != h->agent_ix_cap ||
	    want.key_off != h->key_off || want.key_cap != h->key_cap) {
		sc_errorf(err, errlen, "header capacities and offsets are inconsistent");
		return SC_EINVAL;
	}
	if (h->org_top > h->org_cap || h->agent_top > h->agent_cap || h->rule_top > h->rule_cap ||
	    h->hold_top > h->hold_cap || h->task_top > h->task_cap || h->price_top > h->price_cap ||
	    h->text_top > h->text_cap || h->key_top > h->key_cap) {
		sc_errorf(err, errlen, "a table's high-water mark is beyond its capacity");
		return SC_EINVAL;
	}
	if (h->size != file_size) {
		sc_errorf(err, errlen, "header says %llu bytes but the file has %llu",
		     (unsigned long long)h->size, (unsigned long long)file_size);
		return SC_EINVAL;
	}
	if (h->busy) {
		sc_errorf(err, errlen, "the previous daemon stopped in the middle of a change");
		return SC_EINTERNAL;
	}
	return 0;
}

static void bind_tables(struct shm *m)
{
	m->hdr = (struct shm_header *)m->base;
	m->orgs = (struct shm_org *)(m->base + m->hdr->org_off);
	m->agents = (struct shm_agent *)(m->base + m->hdr->agent_off);
	m->rules = (struct shm_rule *)(m->base + m->hdr->rule_off);
	m->holds = (struct shm_hold *)(m->base + m->hdr->hold_off);
	m->txns = (struct shm_txn *)(m->base + m->hdr->txn_off);
	m->events = (struct shm_event *)(m->base + m->hdr->event_off);
	m->tasks = (struct shm_task *)(m->base + m->hdr->task_off);
	m->prices = (struct shm_price *)(m->base + m->hdr->price_off);
	m->alerts = (struct shm_alert *)(m->base + m->hdr->alert_off);
	m->texts = (struct shm_text *)(m->base + m->hdr->text_off);
	m->agent_ix = (uint32_t *)(m->base + m->hdr->agent_ix_off);
	m->keys = (struct shm_key *)(m->base + m->hdr->key_off);
}

static int map_file(struct shm *m, int fd, size_t size, int readonly)
{
	void *p = mmap(NULL, size, readonly ? PROT_READ : PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	if (p == MAP_FAILED)
		return -errno;
	m->base = p;
	m->size = size;
	m->fd = fd;
	m->readonly = readonly;
	return 0;
}

/* Maps an existing file and validates it. Takes ownership of fd. */
static int attach(struct shm *m, int fd, int readonly, const char *path, char *err, size_t errlen)
{
	struct shm_header h;
	struct stat sb;
	ssize_t n;
	int rc;

	if (fstat(fd, &sb) != 0) {
		rc = -errno;
		sc_errorf(err, errlen, "%s: %s", path, strerror(-rc));
		close(fd);
		return rc;
	}
	/*
	 * The daemon must be the segment's only writer (SEALS): a file another
	 * uid owns, or that its group or others may write, may hold anything.
	 */
	if (!readonly && sb.st_uid != geteuid()) {
		sc_errorf(err, errlen, "%s: owned by uid %lu, not by the daemon's uid %lu", path,
		          (unsigned long)sb.st_uid, (unsigned long)geteuid());
		close(fd);
		return SC_EINVAL;
	}
	if (!readonly && (sb.st_mode & (S_IWGRP | S_IWOTH))) {
		sc_errorf(err, errlen, "%s: mode %04o lets %s write it", path,
		          (unsigned)(sb.st_mode & 07777),
		          sb.st_mode & S_IWOTH ? "every user" : "its group");
		close(fd);
		return SC_EINVAL;
	}
	memset(&h, 0, sizeof(h));
	n = pread(fd, &h, sizeof(h), 0);
	if (n < 0) {
		rc = -errno;
		sc_errorf(err, errlen, "%s: %s", path, strerror(-rc));
		close(fd);
		return rc;
	}
	rc = shm_validate(&h, (uint64_t)sb.st_size, err, errlen);
	if (rc == SC_EINTERNAL && readonly)
		rc = 0; /* busy: a reader maps the segment of a daemon at work */
	if (rc != 0) {
		char why[200];

		snprintf(why, sizeof(why), "%s", err && errlen ? err : "invalid");
		sc_errorf(err, errlen, "%s: %s", path, why);
		close(fd);
		return rc;
	}
	rc = map_file(m, fd, (size_t)sb.st_size, readonly);
	if (rc != 0) {
		sc_errorf(err, errlen, "%s: mmap: %s", path, strerror(-rc));
		close(fd);
		return rc;
	}
	bind_tables(m);
	return 0;
}

static int create(struct shm *m, const char *path, const struct shm_caps *caps, char *err,
                  size_t errlen)
{
	struct shm_header h;
	struct timespec ts;
	int fd, rc;

	memset(&h, 0, sizeof(h));
	if (caps->orgs == 0 || caps->agents == 0 || caps->rules == 0 || caps->holds == 0 ||
	    caps->txns == 0 || caps->events == 0 || caps->tasks == 0 || caps->prices == 0 ||
	    caps->alerts == 0 || caps->texts == 0) {
		sc_errorf(err, errlen, "every capacity must be at least 1");
		return SC_EINVAL;
	}
	if (layout(caps, &h) != 0) {
		sc_errorf(err, errlen, "capacities too large for one segment");
		return SC_ERANGE;
	}
	/* the daemon's uid alone writes and reads it (SEALS); shm_set_readers adds a group */
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		rc = -errno;
		sc_errorf(err, errlen, "%s: %s", path, strerror(-rc));
		return rc;
	}
	/* A sparse file: pages cost memory only once a record is written. */
	if (ftruncate(fd, (off_t)h.size) != 0 || (rc = map_file(m, fd, h.size, 0)) != 0) {
		rc = errno ? -errno : SC_EINTERNAL;
		sc_errorf(err, errlen, "%s: cannot size the segment to %llu bytes: %s", path,
		     (unsigned long long)h.size, strerror(-rc));
		close(fd);
		unlink(path);
		return rc;
	}
	memcpy(h.magic, SHM_MAGIC, sizeof(h.magic));
	h.version = SHM_LAYOUT_VERSION;
	h.header_size = SHM_HEADER_SIZE;
	h.next_org_id = h.next_agent_id = h.next_rule_id = h.next_txn_id = h.next_event_id = 1;
	h.next_task_uid = h.next_price_id = 1;
	h.next_alert_id = 1;
	clock_gettime(CLOCK_REALTIME, &ts);
	h.created_at = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
	memcpy(m->base, &h, sizeof(h));
	bind_tables(m);
	return 0;
}

int shm_open_rw(struct shm *m, const char *path, const struct shm_caps *caps, int *created,
                char *err, size_t errlen)
{
	int fd, rc;

	memset(m, 0, sizeof(*m));
	m->fd = -1;
	fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 && errno == ENOENT) {
		rc = create(m, path, caps, err, errlen);
		*created = rc == 0;
	} else if (fd < 0) {
		rc = -errno;
		sc_errorf(err, errlen, "%s: %s", path, strerror(-rc));
	} else {
		rc = attach(m, fd, 0, path, err, errlen);
		*created = 0;
	}
	if (rc == 0) {
		m->hdr->writer_pid = (uint32_t)getpid();
		/* Readers wait until the daemon has recovered and serves it again. */
		shm_set_serving(m, SHM_SERVING_STOPPED);
	}
	return rc;
}

int shm_set_readers(struct shm *m, long gid, char *err, size_t errlen)
{
	/* narrowed first: the file never lets the old group and the new one read at once */
	if (fchmod(m->fd, 0600) != 0) {
		sc_errorf(err, errlen, "cannot make the state segment mode 0600: %s", strerror(errno));
		return -errno;
	}
	if (gid < 0)
		return 0;
	if (fchown(m->fd, (uid_t)-1, (gid_t)gid) != 0 || fchmod(m->fd, 0640) != 0) {
		sc_errorf(err, errlen, "cannot give the state segment to group %ld (mode 0640): %s",
		          gid, strerror(errno));
		return -errno;
	}
	return 0;
}

int shm_grow(const char *path, const struct shm_caps *caps, char *err, size_t errlen)
{
	struct shm old, grown;
	struct shm_header h;
	char tmp[PATH_MAX];
	int created, rc;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.grow", path) >= sizeof(tmp)) {
		sc_errorf(err, errlen, "%s: path too long", path);
		return SC_ERANGE;
	}
	if ((rc = shm_open_rw(&old, path, caps, &created, err, errlen)) != 0)
		return rc;
	h = *old.hdr;
	if (h.txn_cap != caps->txns || h.event_cap != caps->events ||
	    h.alert_cap != caps->alerts || h.keys_per_agent != caps->keys_per_agent ||
	    h.task_cap != caps->tasks || caps->orgs < h.org_cap || caps->agents < h.agent_cap ||
	    caps->rules < h.rule_cap || caps->holds < h.hold_cap || caps->prices < h.price_cap ||
	    caps->texts < h.text_cap) {
		sc_errorf(err, errlen, "%s: only the orgs, agents, rules, rule texts, holds and prices "
		          "tables may change, and only grow", path);
		shm_close(&old);
		return SC_EINVAL;
	}
	unlink(tmp);
	if ((rc = shm_open_rw(&grown, tmp, caps, &created, err, errlen)) != 0) {
		shm_close(&old);
		return rc;
	}
	/* everything of the old header but its layout, which is the new one's */
	layout(caps, &h);
	h.seq = 0;
	h.serving = SHM_SERVING_STOPPED;
	memcpy(grown.hdr, &h, sizeof(h));
	bind_tables(&grown);
	/* records keep their slots: the rings' capacities are the same, so are their places */
	for (unsigned t = 0; t < SHM_TABLES; t++) {
		struct shm_table from, to;

		shm_table(&old, old.hdr, t, &from);
		shm_table(&grown, grown.hdr, t, &to);
		memcpy(to.base, from.base, (size_t)from.end * from.rec_size);
	}
	shm_close(&old);
	rc = msync(grown.base, grown.size, MS_SYNC) == 0 ? 0 : -errno;
	shm_close(&grown);
	if (rc == 0 && (shm_retire_file(path, NULL, 0), rename(tmp, path) != 0))
		rc = -errno;
	if (rc != 0) {
		sc_errorf(err, errlen, "%s: %s", tmp, strerror(-rc));
		unlink(tmp);
	}
	return rc;
}

int shm_open_ro(struct shm *m, const char *path, char *err, size_t errlen)
{
	int fd;

	memset(m, 0, sizeof(*m));
	m->fd = -1;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int rc = -errno;

		sc_errorf(err, errlen, "%s: %s", path, strerror(-rc));
		return rc;
	}
	return attach(m, fd, 1, path, err, errlen);
}

void shm_close(struct shm *m)
{
	if (m->base) {
		if (!m->readonly)
			msync(m->base, m->size, MS_ASYNC);
		munmap(m->base, m->size);
	}
	if (m->fd >= 0)
		close(m->fd);
	memset(m, 0, sizeof(*m));
	m->fd = -1;
}

unsigned shm_read(const void *rec, void *out, size_t size)
{
	const uint32_t *seqp = rec;
	unsigned retries = 0;
	uint32_t s1, s2;

	for (;;) {
		s1 = __atomic_load_n(seqp, __ATOMIC_ACQUIRE);
		if (!(s1 & 1)) {
			memcpy(out, rec, size);
			__atomic_thread_fence(__ATOMIC_ACQUIRE);
			s2 = __atomic_load_n(seqp, __ATOMIC_RELAXED);
			if (s1 == s2)
				return retries;
		}
		retries++;
#if defined(__x86_64__) || defined(__i386__)
		__builtin_ia32_pause();
#endif
	}
}

void shm_change_begin(struct shm *m)
{
	if (m->change_depth++ > 0)
		return;
	__atomic_store_n(&m->hdr->busy, 1, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
}

void shm_change_end(struct shm *m)
{
	shm_write_begin(&m->hdr->seq);
	m->hdr->mutations++;
	shm_write_end(&m->hdr->seq);
	if (--m->change_depth == 0)
		__atomic_store_n(&m->hdr->busy, 0, __ATOMIC_RELEASE);
}

void shm_set_serving(struct shm *m, enum shm_serving serving)
{
	__atomic_store_n(&m->hdr->serving, (uint32_t)serving, __ATOMIC_RELEASE);
}

int shm_retire_file(const char *path, char *err, size_t errlen)
{
	struct shm_header h;
	struct stat sb;
	void *page;
	int fd, rc = 0;

	fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		rc = -errno;
		sc_errorf(err, errlen, "%s: %s", path, strerror(-rc));
		return rc;
	}
	memset(&h, 0, sizeof(h));
	if (fstat(fd, &sb) != 0 || pread(fd, &h, sizeof(h), 0) < 0) {
		rc = -errno;
		sc_errorf(err, errlen, "%s: cannot read the header: %s", path, strerror(-rc));
	} else if (sb.st_size < SHM_HEADER_SIZE || memcmp(h.magic, SHM_MAGIC, sizeof(h.magic)) != 0 ||
	           h.version != SHM_LAYOUT_VERSION) {
		rc = SC_EINVAL;
		sc_errorf(err, errlen, "%s: not a state segment of layout version %u", path,
		          SHM_LAYOUT_VERSION);
	} else if ((page = mmap(NULL, SHM_HEADER_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) ==
	           MAP_FAILED) {
		rc = -errno;
		sc_errorf(err, errlen, "%s: mmap: %s", path, strerror(-rc));
	} else {
		/* The readers' mappings share these pages: they see the store at once. */
		__atomic_store_n(&((struct shm_header *)page)->serving, (uint32_t)SHM_SERVING_RETIRED,
		                 __ATOMIC_RELEASE);
		munmap(page, SHM_HEADER_SIZE);
	}
	close(fd);
	return rc;
}

/* ---------------------------------------------------------------- seals */

/* 0, or SC_EINVAL with err naming the record, when the seal found is neither 0 nor right. */
static int seal_one(uint32_t *seal, uint32_t want, int fix_zero, const char *kind, uint64_t id,
                    uint32_t slot, const struct shm_wallet *w, char *err, size_t errlen)
{
	if (*seal == want)
		return 0;
	if (fix_zero && *seal == 0) {
		*seal = want;
		return 0;
	}
	sc_errorf(err, errlen, "%s %llu (slot %u) does not match its seal: its balance %lld, held "
	          "%lld or debt %lld, its limits, priority or status were changed outside the daemon",
	          kind, (unsigned long long)id, slot, (long long)w->balance, (long long)w->held,
	          (long long)w->debt);
	return SC_EINVAL;
}

/* Both directions of SEALS: check (fix_zero 0), or check and seal the unsealed (1). */
static int seals(struct shm *m, int fix_zero, char *err, size_t errlen)
{
	int rc = 0;

	/* slots at or above the high-water marks were never used: their pages stay untouched */
	for (uint32_t i = 0; rc == 0 && i < m->hdr->org_top; i++) {
		struct shm_org *o = &m->orgs[i];

		if (o->rec.used)
			rc = seal_one(&o->wallet.seal, shm_org_seal(o), fix_zero, "org", o->id, i,
			              &o->wallet, err, errlen);
	}
	for (uint32_t i = 0; rc == 0 && i < m->hdr->agent_top; i++) {
		struct shm_agent *a = &m->agents[i];

		if (a->rec.used)
			rc = seal_one(&a->wallet.seal, shm_agent_seal(a), fix_zero, "agent", a->id, i,
			              &a->wallet, err, errlen);
	}
	return rc;
}

int shm_seal_restored(struct shm *m, char *err, size_t errlen)
{
	return seals(m, 1, err, errlen);
}

int shm_seal_check(struct shm *m, char *err, size_t errlen)
{
	return seals(m, 0, err, errlen);
}

/* ---------------------------------------------------------- agent index */

static void ix_store(uint32_t *e, uint32_t v)
{
	__atomic_store_n(e, v, __ATOMIC_RELEASE);
}

/* Puts slot in the first free or deleted entry of id's probe sequence. */
static void ix_place(struct shm *m, uint64_t id, uint32_t slot)
{
	uint32_t cap = m->hdr->agent_ix_cap, mask = cap - 1;
	uint32_t pos = shm_agent_ix_home(id, cap);

	/* At least a quarter of the entries are empty (shm_agent_ix_insert), so this ends. */
	while (m->agent_ix[pos] != SHM_IX_EMPTY && m->agent_ix[pos] != SHM_IX_TOMB)
		pos = (pos + 1) & mask;
	if (m->agent_ix[pos] == SHM_IX_TOMB)
		m->agent_ix_tombs--;
	ix_store(&m->agent_ix[pos], slot + 1);
	m->agent_ix_live++;
}

void shm_agent_ix_rebuild(struct shm *m)
{
	const struct shm_header *h = m->hdr;

	shm_write_begin(&m->hdr->agent_ix_seq);
	memset(m->agent_ix, 0, (size_t)h->agent_ix_cap * sizeof(uint32_t));
	m->agent_ix_live = m->agent_ix_tombs = 0;
	/* slots at or above the high-water mark were never used: their pages stay untouched */
	for (uint32_t i = 0; i < h->agent_top; i++)
		if (m->agents[i].rec.used)
			ix_place(m, m->agents[i].id, i);
	shm_write_end(&m->hdr->agent_ix_seq);
}

/* Rebuilds once fewer than a quarter of the entries are empty, so probes stay short. */
static void ix_maybe_rebuild(struct shm *m)
{
	uint32_t cap = m->hdr->agent_ix_cap;

	if ((uint64_t)m->agent_ix_live + m->agent_ix_tombs > cap - cap / 4)
		shm_agent_ix_rebuild(m);
}

void shm_agent_ix_insert(struct shm *m, uint64_t id, uint32_t slot)
{
	ix_place(m, id, slot);
	ix_maybe_rebuild(m);
}

void shm_agent_ix_remove(struct shm *m, uint64_t id, uint32_t slot)
{
	uint32_t cap = m->hdr->agent_ix_cap, mask = cap - 1;
	uint32_t pos = shm_agent_ix_home(id, cap);

	for (uint32_t n = 0; n < cap && m->agent_ix[pos] != SHM_IX_EMPTY; n++) {
		if (m->agent_ix[pos] == slot + 1) {
			ix_store(&m->agent_ix[pos], SHM_IX_TOMB);
			m->agent_ix_live--;
			m->agent_ix_tombs++;
			ix_maybe_rebuild(m);
			return;
		}
		pos = (pos + 1) & mask;
	}
}

uint32_t shm_agent_ix_find(const struct shm *m, uint64_t id)
{
	uint32_t cap = m->hdr->agent_ix_cap, mask = cap - 1;
	uint32_t pos = shm_agent_ix_home(id, cap);

	for (uint32_t n = 0; n < cap; n++) {
		uint32_t e = m->agent_ix[pos];

		if (e == SHM_IX_EMPTY)
			break;
		if (e != SHM_IX_TOMB && e - 1 < m->hdr->agent_cap && m->agents[e - 1].rec.used &&
		    m->agents[e - 1].id == id)
			return e - 1;
		pos = (pos + 1) & mask;
	}
	return SHM_NONE;
}
