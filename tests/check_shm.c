/*
 * check_shm.c: unit tests of the shared-memory state segment (shm/shm.c),
 * written from shm/shm.h alone: layout size, create and re-attach, refusal
 * of invalid segments without touching them, read-only mappings, and the
 * per-record seqlock read under a concurrent writer.
 *
 * Each test works in its own temporary directory, removed in teardown. The
 * test thread registers with liburcu because the persistence test goes
 * through the state model (sidecard/store/state.c), which needs a registered loop
 * thread; the seqlock test starts one extra writer thread of its own.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <urcu.h>

#include "shm.h"
#include "sidecard.h"
#include "state.h"
#include "suites.h"
#include "testutil.h"

static char g_dir[96];
static char g_path[128];
static char g_err[256];

static const struct shm_caps small_caps = { 2, 3, 4, 5, 6, 6, 6, 6, 6, 7, 2 };

static void setup(void)
{
	rcu_register_thread();
	ck_assert_int_eq(test_tmpdir(g_dir, sizeof g_dir), 0);
	snprintf(g_path, sizeof g_path, "%s/state.shm", g_dir);
	g_err[0] = '\0';
}

static void teardown(void)
{
	test_rm_tree(g_dir);
	rcu_unregister_thread();
}

/* The whole file, malloc'ed; *len its size. */
static unsigned char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *buf;
	long n;

	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	ck_assert_int_ge(n, 0);
	rewind(f);
	buf = malloc((size_t)n + 1);
	ck_assert_ptr_nonnull(buf);
	ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return buf;
}

/* Opens g_path read-write with small_caps; created must come back as given. */
static void open_small(struct shm *m, int expect_created)
{
	int created = -1;
	int rc;

	memset(m, 0, sizeof *m);
	rc = shm_open_rw(m, g_path, &small_caps, &created, g_err, sizeof g_err);
	ck_assert_msg(rc == 0, "shm_open_rw: %d (%s)", rc, g_err);
	ck_assert_int_eq(created, expect_created);
}

/* A fresh valid segment of small_caps at g_path, closed again. */
static void make_segment(void)
{
	struct shm m;

	open_small(&m, 1);
	shm_close(&m);
}

/* Opens the segment rw and applies a corruption through the mapping. */
static void corrupt_segment(void (*fn)(struct shm *m))
{
	struct shm m;

	open_small(&m, 0);
	fn(&m);
	shm_close(&m);
}

/*
 * The segment at g_path must be refused, read-write with code rw_code, with
 * a message, and the file must be byte for byte what it was.
 */
static void expect_refused(int rw_code)
{
	unsigned char *before, *after;
	size_t nb, na;
	struct shm m;
	int created = -1;
	int rc;

	before = slurp(g_path, &nb);
	memset(&m, 0, sizeof m);
	g_err[0] = '\0';
	rc = shm_open_rw(&m, g_path, &small_caps, &created, g_err, sizeof g_err);
	ck_assert_msg(rc == rw_code, "shm_open_rw returned %d, expected %d (%s)", rc, rw_code,
	              g_err);
	ck_assert_msg(g_err[0] != '\0', "refused without a message");
	ck_assert_msg(strlen(g_err) < sizeof g_err, "message overflows");

	memset(&m, 0, sizeof m);
	g_err[0] = '\0';
	rc = shm_open_ro(&m, g_path, g_err, sizeof g_err);
	if (rw_code != SC_EINTERNAL) {
		/* a busy segment may be mapped by readers; a malformed one may not */
		ck_assert_msg(rc < 0, "shm_open_ro accepted an invalid segment");
		ck_assert_msg(g_err[0] != '\0', "shm_open_ro refused without a message");
	} else if (rc == 0) {
		shm_close(&m);
	}

	after = slurp(g_path, &na);
	ck_assert_uint_eq(na, nb);
	ck_assert_msg(memcmp(before, after, nb) == 0, "the refused file was modified");
	free(before);
	free(after);
}

/* ====================================================================== */
/* layout size */

/* Entries of the agent index: the smallest power of two >= 2 x agents. */
static uint64_t ix_entries(uint32_t agents)
{
	uint64_t n = 2;

	while (n < 2 * (uint64_t)agents)
		n *= 2;
	return n;
}

static uint64_t tables_bytes(const struct shm_caps *c)
{
	return ix_entries(c->agents) * sizeof(uint32_t) +
	       (uint64_t)c->orgs * sizeof(struct shm_org) +
	       (uint64_t)c->agents * sizeof(struct shm_agent) +
	       (uint64_t)c->rules * sizeof(struct shm_rule) +
	       (uint64_t)c->holds * sizeof(struct shm_hold) +
	       (uint64_t)c->txns * sizeof(struct shm_txn) +
	       (uint64_t)c->events * sizeof(struct shm_event) +
	       (uint64_t)c->tasks * sizeof(struct shm_task) +
	       (uint64_t)c->prices * sizeof(struct shm_price) +
	       (uint64_t)c->alerts * sizeof(struct shm_alert) +
	       (uint64_t)c->texts * sizeof(struct shm_text) +
	       (uint64_t)c->agents * c->keys_per_agent * sizeof(struct shm_key);
}

START_TEST(test_layout_size_covers_header_and_tables)
{
	struct shm_caps c = small_caps;
	uint64_t size = 0, bigger = 0;
	uint64_t need = SHM_HEADER_SIZE + tables_bytes(&c);

	ck_assert_int_eq(shm_layout_size(&c, &size), 0);
	ck_assert_uint_ge(size, need);
	/* at most 63 bytes of alignment padding in front of each table */
	ck_assert_uint_le(size, need + 10 * 63 + 4096);
	/*
	 * the last table (the agent index) has no padding behind it; 4 more
	 * texts (576 bytes) keep its 64-byte alignment
	 */
	c.texts += 4;
	ck_assert_int_eq(shm_layout_size(&c, &bigger), 0);
	ck_assert_uint_eq(bigger, size + 4 * sizeof(struct shm_text));
}
END_TEST

/*
 * With 32-bit capacities the true size of even the largest segment fits in
 * 64 bits on this host, so shm_layout_size may accept it; what it must never
 * do is return a wrapped value. It may also refuse a size it cannot map
 * with SC_ERANGE. Either way, no wrap.
 */
START_TEST(test_layout_size_overflow_is_erange_or_exact)
{
	struct shm_caps c = { UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX,
		              UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX, 0 };
	uint64_t size = 0;
	unsigned __int128 need = (unsigned __int128)SHM_HEADER_SIZE + tables_bytes(&c);
	int rc = shm_layout_size(&c, &size);

	ck_assert_msg(rc == 0 || rc == SC_ERANGE, "rc %d", rc);
	if (rc == 0) {
		ck_assert_msg((unsigned __int128)size >= need, "wrapped size %llu",
		              (unsigned long long)size);
		ck_assert_uint_le(size, (uint64_t)need + 10 * 63 + 4096);
	}
	c.orgs = 1;
	c.agents = 1;
	c.rules = 1;
	c.holds = 1;
	c.events = 1;
	c.tasks = 1;
	c.prices = 1;
	c.alerts = 1;
	c.txns = UINT32_MAX;
	rc = shm_layout_size(&c, &size);
	ck_assert_msg(rc == 0 || rc == SC_ERANGE, "rc %d", rc);
	if (rc == 0)
		ck_assert_uint_ge(size, (uint64_t)UINT32_MAX * sizeof(struct shm_txn));
}
END_TEST

/* ====================================================================== */
/* create and re-attach */

START_TEST(test_created_segment_layout)
{
	struct shm m;
	int created = -1;
	uint64_t size = 0;
	struct stat sb;
	const struct shm_header *h;
	uint64_t offs[7], ends[7];

	memset(&m, 0, sizeof m);
	ck_assert_int_eq(shm_open_rw(&m, g_path, &small_caps, &created, g_err, sizeof g_err), 0);
	ck_assert_int_eq(created, 1);
	ck_assert_int_eq(m.readonly, 0);
	h = m.hdr;
	ck_assert_ptr_eq((void *)h, (void *)m.base);
	ck_assert_int_eq(memcmp(h->magic, SHM_MAGIC, 8), 0);
	ck_assert_uint_eq(h->version, SHM_LAYOUT_VERSION);
	ck_assert_uint_eq(h->header_size, SHM_HEADER_SIZE);
	ck_assert_int_eq(shm_layout_size(&small_caps, &size), 0);
	ck_assert_uint_eq(h->size, size);
	ck_assert_uint_eq(m.size, size);
	ck_assert_int_eq(stat(g_path, &sb), 0);
	ck_assert_uint_eq((uint64_t)sb.st_size, size);
	ck_assert_uint_eq(h->busy, 0);
	ck_assert_uint_eq(h->org_cap, small_caps.orgs);
	ck_assert_uint_eq(h->agent_cap, small_caps.agents);
	ck_assert_uint_eq(h->rule_cap, small_caps.rules);
	ck_assert_uint_eq(h->hold_cap, small_caps.holds);
	ck_assert_uint_eq(h->txn_cap, small_caps.txns);

	offs[0] = h->org_off;
	ends[0] = h->org_off + (uint64_t)h->org_cap * sizeof(struct shm_org);
	offs[1] = h->agent_off;
	ends[1] = h->agent_off + (uint64_t)h->agent_cap * sizeof(struct shm_agent);
	offs[2] = h->rule_off;
	ends[2] = h->rule_off + (uint64_t)h->rule_cap * sizeof(struct shm_rule);
	offs[3] = h->hold_off;
	ends[3] = h->hold_off + (uint64_t)h->hold_cap * sizeof(struct shm_hold);
	offs[4] = h->txn_off;
	ends[4] = h->txn_off + (uint64_t)h->txn_cap * sizeof(struct shm_txn);
	offs[5] = h->event_off;
	ends[5] = h->event_off + (uint64_t)h->event_cap * sizeof(struct shm_event);
	offs[6] = h->task_off;
	ends[6] = h->task_off + (uint64_t)h->task_cap * sizeof(struct shm_task);
	for (int i = 0; i < 7; i++) {
		ck_assert_uint_eq(offs[i] % 64, 0);
		ck_assert_uint_ge(offs[i], SHM_HEADER_SIZE);
		ck_assert_uint_le(ends[i], size);
		if (i > 0)
			ck_assert_uint_ge(offs[i], ends[i - 1]);
	}
	ck_assert_ptr_eq((void *)m.orgs, (void *)(m.base + h->org_off));
	ck_assert_ptr_eq((void *)m.agents, (void *)(m.base + h->agent_off));
	ck_assert_ptr_eq((void *)m.rules, (void *)(m.base + h->rule_off));
	ck_assert_ptr_eq((void *)m.holds, (void *)(m.base + h->hold_off));
	ck_assert_ptr_eq((void *)m.txns, (void *)(m.base + h->txn_off));
	ck_assert_ptr_eq((void *)m.events, (void *)(m.base + h->event_off));
	/* the agent index comes after the alerts; the kept keys follow it and end the file */
	ck_assert_uint_eq(h->agent_ix_cap, ix_entries(small_caps.agents));
	ck_assert_uint_eq(h->agent_ix_off % 64, 0);
	ck_assert_uint_ge(h->agent_ix_off,
	                  h->alert_off + (uint64_t)h->alert_cap * sizeof(struct shm_alert));
	ck_assert_uint_eq(h->key_cap, small_caps.agents * small_caps.keys_per_agent);
	ck_assert_uint_eq(h->key_off % 64, 0);
	ck_assert_uint_ge(h->key_off, h->agent_ix_off + (uint64_t)h->agent_ix_cap * sizeof(uint32_t));
	ck_assert_uint_eq(h->key_off + (uint64_t)h->key_cap * sizeof(struct shm_key), size);
	ck_assert_ptr_eq((void *)m.agent_ix, (void *)(m.base + h->agent_ix_off));
	ck_assert_ptr_eq((void *)m.keys, (void *)(m.base + h->key_off));
	for (uint32_t i = 0; i < h->agent_ix_cap; i++)
		ck_assert_uint_eq(m.agent_ix[i], SHM_IX_EMPTY);
	ck_assert_uint_eq(h->serving, SHM_SERVING_STOPPED);
	/* a new segment starts empty */
	for (uint32_t i = 0; i < h->org_cap; i++)
		ck_assert_uint_eq(m.orgs[i].rec.used, 0);
	for (uint32_t i = 0; i < h->txn_cap; i++)
		ck_assert_uint_eq(m.txns[i].rec.used, 0);
	shm_close(&m);
}
END_TEST

START_TEST(test_reopen_attaches_and_keeps_data)
{
	struct shm m;
	int created = -1;
	int64_t created_at;

	memset(&m, 0, sizeof m);
	ck_assert_int_eq(shm_open_rw(&m, g_path, &small_caps, &created, g_err, sizeof g_err), 0);
	ck_assert_int_eq(created, 1);
	shm_write_begin(&m.orgs[1].rec.seq);
	m.orgs[1].rec.used = 1;
	m.orgs[1].id = 42;
	strcpy(m.orgs[1].name, "persisted");
	m.orgs[1].wallet.balance = 1234567;
	shm_write_end(&m.orgs[1].rec.seq);
	m.hdr->next_org_id = 43;
	created_at = m.hdr->created_at;
	shm_close(&m);

	memset(&m, 0, sizeof m);
	created = -1;
	ck_assert_int_eq(shm_open_rw(&m, g_path, &small_caps, &created, g_err, sizeof g_err), 0);
	ck_assert_int_eq(created, 0);
	ck_assert_uint_eq(m.orgs[1].rec.used, 1);
	ck_assert_uint_eq(m.orgs[1].id, 42);
	ck_assert_str_eq(m.orgs[1].name, "persisted");
	ck_assert_int_eq(m.orgs[1].wallet.balance, 1234567);
	ck_assert_uint_eq(m.hdr->next_org_id, 43);
	ck_assert_int_eq(m.hdr->created_at, created_at);
	shm_close(&m);
}
END_TEST

START_TEST(test_state_survives_close_and_reopen)
{
	struct state_config cfg;
	struct state *st = NULL;
	struct state_str name = { "acme", 4 };
	struct state_str other = { "other", 5 };
	struct shm m;
	uint32_t slot, slot2;
	uint64_t id;
	int created = -1, found = 0;
	int rc;

	memset(&cfg, 0, sizeof cfg);
	cfg.path = g_path;
	cfg.caps = small_caps;
	cfg.set.hold_ttl_us = INT64_C(300000000);
	cfg.set.expiry_charges = 1;
	rc = state_open(&st, &cfg, g_err, sizeof g_err);
	ck_assert_msg(rc == 0, "state_open: %d (%s)", rc, g_err);
	rc = state_org_create(st, name, INT64_C(1795428000000000), &slot, g_err, sizeof g_err);
	ck_assert_msg(rc == 0, "state_org_create: %d (%s)", rc, g_err);
	id = state_shm(st)->orgs[slot].id;
	ck_assert_uint_gt(id, 0);
	state_close(st);
	st = NULL;

	/* the raw segment attaches and holds the org */
	memset(&m, 0, sizeof m);
	ck_assert_int_eq(shm_open_rw(&m, g_path, &small_caps, &created, g_err, sizeof g_err), 0);
	ck_assert_int_eq(created, 0);
	for (uint32_t i = 0; i < m.hdr->org_cap; i++)
		if (m.orgs[i].rec.used && !strcmp(m.orgs[i].name, "acme") && m.orgs[i].id == id)
			found = 1;
	ck_assert_msg(found, "org not in the re-attached segment");
	shm_close(&m);

	/* and the state model finds it again by name and id */
	rc = state_open(&st, &cfg, g_err, sizeof g_err);
	ck_assert_msg(rc == 0, "state_open again: %d (%s)", rc, g_err);
	ck_assert_int_eq(state_org_by_name(st, name, &slot2), 0);
	ck_assert_uint_eq(state_shm(st)->orgs[slot2].id, id);
	ck_assert_int_eq(state_org_by_id(st, id, &slot2), 0);
	ck_assert_int_eq(state_org_by_name(st, other, &slot2), SC_ENOTFOUND);
	/* ids are never reused */
	rc = state_org_create(st, other, INT64_C(1795428000000000), &slot2, g_err, sizeof g_err);
	ck_assert_msg(rc == 0, "state_org_create: %d (%s)", rc, g_err);
	ck_assert_uint_gt(state_shm(st)->orgs[slot2].id, id);
	/* names stay unique across the restart */
	ck_assert_int_eq(state_org_create(st, name, 0, &slot2, g_err, sizeof g_err), SC_EEXISTS);
	state_close(st);
}
END_TEST

/*
 * Whether the page holding p is mapped in this process, i.e. counts in its
 * RSS (/proc/self/pagemap, bit 63). Page cache residency (mincore) would
 * not do: the kernel reads ahead around a fault, into the cache only.
 */
static int resident(const void *p)
{
	long page = sysconf(_SC_PAGESIZE);
	uint64_t entry = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &entry, sizeof entry, (off_t)((uintptr_t)p / (uintptr_t)page) * 8),
	                 (ssize_t)sizeof entry);
	close(fd);
	return (int)(entry >> 63);
}

/* Pages of a table of n records of size bytes that are mapped in this process. */
static unsigned resident_pages(const void *table, size_t n, size_t size)
{
	unsigned count = 0;

	for (size_t off = 0; off < n * size; off += 4096)
		count += resident((const char *)table + off);
	return count;
}

/*
 * A segment sized for many agents costs memory for the agents it holds:
 * neither creating agents nor opening the segment again touches the pages
 * of a table's empty tail (state_index.c reads slots below the high-water marks
 * only), so they are never mapped. A table of thousands of pages holding
 * one record has at most the kernel's fault-around (16 pages) mapped at each
 * end: its own first page and the next table's.
 */
START_TEST(test_open_leaves_empty_table_tails_untouched)
{
	struct shm_caps caps = { 4, 65536, 262144, 64, 64, 64, 64, 64, 64, 262144, 0 };
	struct state_rule_spec rule = { .set = STATE_RULE_SET_NAME | STATE_RULE_SET_MATCH,
		                        .name = { "chat", 4 }, .match = { "openai.chat", 11 } };
	struct state_agent_spec spec = { .name = { "bot", 3 }, .n_rules = 1, .rules = &rule };
	struct state_config cfg;
	struct state *st = NULL;
	const struct shm *m;
	uint32_t slot;

	memset(&cfg, 0, sizeof cfg);
	cfg.path = g_path;
	cfg.caps = caps;
	cfg.set.hold_ttl_us = INT64_C(300000000);
	for (int round = 0; round < 2; round++) {
		ck_assert_int_eq(state_open(&st, &cfg, g_err, sizeof g_err), 0);
		m = state_shm(st);
		if (round == 0) {
			ck_assert_int_eq(state_org_create(st, (struct state_str){ "acme", 4 }, 0,
			                                  &spec.org_slot, g_err, sizeof g_err),
			                 0);
			ck_assert_int_eq(state_agent_create(st, &spec, 0, &slot, g_err, sizeof g_err),
			                 0);
		}
		ck_assert_uint_eq(m->hdr->agent_top, 1);
		ck_assert_uint_eq(m->hdr->rule_top, 1);
		ck_assert_uint_eq(m->hdr->text_top, 2);
		ck_assert(resident(&m->agents[0]));
		ck_assert_uint_le(resident_pages(m->agents, caps.agents, sizeof(struct shm_agent)), 32);
		ck_assert_uint_le(resident_pages(m->rules, caps.rules, sizeof(struct shm_rule)), 32);
		ck_assert_uint_le(resident_pages(m->texts, caps.texts, sizeof(struct shm_text)), 32);
		state_close(st);
		st = NULL;
	}
}
END_TEST

/*
 * The segment shows every tenant's wallets: its owner alone reads it unless
 * a reader group is configured, a wider file an older version left is
 * narrowed at the next open, and a symbolic link is never opened for it.
 */
START_TEST(test_segment_mode_and_reader_group)
{
	struct state_config cfg;
	struct state *st = NULL;
	char link[160];
	struct stat sb;

	memset(&cfg, 0, sizeof cfg);
	cfg.path = g_path;
	cfg.caps = small_caps;
	cfg.set.hold_ttl_us = INT64_C(300000000);
	ck_assert_int_eq(state_open(&st, &cfg, g_err, sizeof g_err), 0);
	state_close(st);
	ck_assert_int_eq(stat(g_path, &sb), 0);
	ck_assert_int_eq(sb.st_mode & 07777, 0600);

	ck_assert_int_eq(chmod(g_path, 0640), 0);
	ck_assert_int_eq(state_open(&st, &cfg, g_err, sizeof g_err), 0);
	state_close(st);
	ck_assert_int_eq(stat(g_path, &sb), 0);
	ck_assert_int_eq(sb.st_mode & 07777, 0600);

	cfg.readers = 1;
	cfg.reader_gid = (unsigned)getegid();
	ck_assert_int_eq(state_open(&st, &cfg, g_err, sizeof g_err), 0);
	state_close(st);
	ck_assert_int_eq(stat(g_path, &sb), 0);
	ck_assert_int_eq(sb.st_mode & 07777, 0640);
	ck_assert_uint_eq(sb.st_gid, getegid());

	snprintf(link, sizeof link, "%s.link", g_path);
	ck_assert_int_eq(symlink(g_path, link), 0);
	cfg.path = link;
	ck_assert_int_eq(state_open(&st, &cfg, g_err, sizeof g_err), -ELOOP);
	unlink(link);
}
END_TEST

START_TEST(test_existing_capacities_win)
{
	struct shm_caps bigger = { 10, 20, 30, 40, 50, 50, 50, 50, 50, 60, 2 };
	struct shm m;
	int created = -1;
	uint64_t size = 0;
	struct stat sb;

	make_segment();
	memset(&m, 0, sizeof m);
	ck_assert_int_eq(shm_open_rw(&m, g_path, &bigger, &created, g_err, sizeof g_err), 0);
	ck_assert_int_eq(created, 0);
	ck_assert_uint_eq(m.hdr->org_cap, small_caps.orgs);
	ck_assert_uint_eq(m.hdr->agent_cap, small_caps.agents);
	ck_assert_uint_eq(m.hdr->rule_cap, small_caps.rules);
	ck_assert_uint_eq(m.hdr->hold_cap, small_caps.holds);
	ck_assert_uint_eq(m.hdr->txn_cap, small_caps.txns);
	ck_assert_int_eq(shm_layout_size(&small_caps, &size), 0);
	ck_assert_uint_eq(m.size, size);
	shm_close(&m);
	ck_assert_int_eq(stat(g_path, &sb), 0);
	ck_assert_uint_eq((uint64_t)sb.st_size, size);
}
END_TEST

START_TEST(test_open_rw_in_missing_directory_fails)
{
	struct shm m;
	int created = -1;
	char path[256];

	snprintf(path, sizeof path, "%s/no/such/dir/state.shm", g_dir);
	memset(&m, 0, sizeof m);
	ck_assert_int_lt(shm_open_rw(&m, path, &small_caps, &created, g_err, sizeof g_err), 0);
}
END_TEST

/* ====================================================================== */
/* invalid segments: refused, with a message, and left untouched */

static void set_bad_magic(struct shm *m)
{
	m->hdr->magic[0] = 'X';
}

static void set_wrong_version(struct shm *m)
{
	m->hdr->version = SHM_LAYOUT_VERSION + 1;
}

static void set_busy(struct shm *m)
{
	m->hdr->busy = 1; /* as if the daemon died in the middle of a change */
}

static void set_wrong_header_size(struct shm *m)
{
	m->hdr->header_size = SHM_HEADER_SIZE / 2;
}

static void set_table_past_end(struct shm *m)
{
	m->hdr->txn_cap *= 1000;
}

static void set_offset_past_end(struct shm *m)
{
	m->hdr->hold_off = m->hdr->size;
}

static void set_size_field(struct shm *m)
{
	m->hdr->size += 4096;
}

START_TEST(test_refuse_bad_magic)
{
	make_segment();
	corrupt_segment(set_bad_magic);
	expect_refused(SC_EINVAL);
}
END_TEST

START_TEST(test_refuse_wrong_version)
{
	make_segment();
	corrupt_segment(set_wrong_version);
	expect_refused(SC_EINVAL);
}
END_TEST

START_TEST(test_refuse_wrong_header_size)
{
	make_segment();
	corrupt_segment(set_wrong_header_size);
	expect_refused(SC_EINVAL);
}
END_TEST

START_TEST(test_refuse_busy_segment)
{
	make_segment();
	corrupt_segment(set_busy);
	expect_refused(SC_EINTERNAL);
}
END_TEST

START_TEST(test_refuse_truncated_file)
{
	struct stat sb;

	make_segment();
	ck_assert_int_eq(stat(g_path, &sb), 0);
	ck_assert_int_eq(truncate(g_path, sb.st_size - 4096), 0);
	expect_refused(SC_EINVAL);
}
END_TEST

START_TEST(test_refuse_size_field_mismatch)
{
	make_segment();
	corrupt_segment(set_size_field);
	expect_refused(SC_EINVAL);
}
END_TEST

START_TEST(test_refuse_file_smaller_than_header)
{
	FILE *f = fopen(g_path, "wb");
	char junk[100];

	ck_assert_ptr_nonnull(f);
	memset(junk, 0, sizeof junk);
	memcpy(junk, SHM_MAGIC, 8);
	ck_assert_uint_eq(fwrite(junk, 1, sizeof junk, f), sizeof junk);
	fclose(f);
	expect_refused(SC_EINVAL);
}
END_TEST

/* The file exists: shm.h creates only "when the file does not exist". */
START_TEST(test_refuse_empty_file)
{
	int fd = open(g_path, O_CREAT | O_WRONLY, 0600);

	ck_assert_int_ge(fd, 0);
	close(fd);
	expect_refused(SC_EINVAL);
}
END_TEST

START_TEST(test_refuse_table_past_end)
{
	make_segment();
	corrupt_segment(set_table_past_end);
	expect_refused(SC_EINVAL);
}
END_TEST

START_TEST(test_refuse_offset_past_end)
{
	make_segment();
	corrupt_segment(set_offset_past_end);
	expect_refused(SC_EINVAL);
}
END_TEST

/* shm_validate on headers in memory, against a stated file size */
START_TEST(test_validate_header)
{
	struct shm m;
	struct shm_header good, h;
	int created = -1;
	uint64_t size;

	memset(&m, 0, sizeof m);
	ck_assert_int_eq(shm_open_rw(&m, g_path, &small_caps, &created, g_err, sizeof g_err), 0);
	good = *m.hdr;
	size = m.size;
	shm_close(&m);

	ck_assert_int_eq(shm_validate(&good, size, g_err, sizeof g_err), 0);

	g_err[0] = '\0';
	ck_assert_int_eq(shm_validate(&good, size - 1, g_err, sizeof g_err), SC_EINVAL);
	ck_assert_msg(g_err[0] != '\0', "no message for a size mismatch");
	ck_assert_int_eq(shm_validate(&good, 0, g_err, sizeof g_err), SC_EINVAL);

	h = good;
	memcpy(h.magic, "SCSTATE2", 8);
	g_err[0] = '\0';
	ck_assert_int_eq(shm_validate(&h, size, g_err, sizeof g_err), SC_EINVAL);
	ck_assert_msg(g_err[0] != '\0', "no message for a bad magic");

	h = good;
	h.version = 0;
	ck_assert_int_eq(shm_validate(&h, size, g_err, sizeof g_err), SC_EINVAL);

	h = good;
	h.org_off = 0; /* the org table on top of the header */
	ck_assert_int_eq(shm_validate(&h, size, g_err, sizeof g_err), SC_EINVAL);

	h = good;
	h.agent_cap = UINT32_MAX;
	ck_assert_int_eq(shm_validate(&h, size, g_err, sizeof g_err), SC_EINVAL);

	h = good;
	h.txn_off = UINT64_MAX - 8; /* offset + table length wraps */
	ck_assert_int_eq(shm_validate(&h, size, g_err, sizeof g_err), SC_EINVAL);

	/* a high-water mark past its table would make a scan read past it */
	h = good;
	h.rule_top = h.rule_cap + 1;
	ck_assert_int_eq(shm_validate(&h, size, g_err, sizeof g_err), SC_EINVAL);
	h = good;
	h.text_top = h.text_cap;
	ck_assert_int_eq(shm_validate(&h, size, g_err, sizeof g_err), 0);

	/* a tiny err buffer is still NUL-terminated and not overrun */
	{
		char tiny[8];

		memset(tiny, 'Z', sizeof tiny);
		h = good;
		h.version = 99;
		ck_assert_int_eq(shm_validate(&h, size, tiny, 4), SC_EINVAL);
		ck_assert_msg(memchr(tiny, '\0', 4) != NULL, "err not terminated within errlen");
		ck_assert_int_eq(tiny[4], 'Z');
	}
}
END_TEST

/* ====================================================================== */
/* read-only mappings */

START_TEST(test_open_ro_reads_segment)
{
	struct shm rw, ro;
	int created = -1;
	int rc;
	struct shm_org copy;

	memset(&rw, 0, sizeof rw);
	ck_assert_int_eq(shm_open_rw(&rw, g_path, &small_caps, &created, g_err, sizeof g_err), 0);
	shm_write_begin(&rw.orgs[0].rec.seq);
	rw.orgs[0].rec.used = 1;
	rw.orgs[0].id = 7;
	strcpy(rw.orgs[0].name, "seen");
	rw.orgs[0].wallet.balance = 99;
	shm_write_end(&rw.orgs[0].rec.seq);

	/* a reader maps the segment while the writer still has it */
	memset(&ro, 0, sizeof ro);
	rc = shm_open_ro(&ro, g_path, g_err, sizeof g_err);
	ck_assert_msg(rc == 0, "shm_open_ro: %d (%s)", rc, g_err);
	ck_assert_int_eq(ro.readonly, 1);
	ck_assert_uint_eq(ro.size, rw.size);
	ck_assert_int_eq(memcmp(ro.hdr->magic, SHM_MAGIC, 8), 0);
	ck_assert_uint_eq(ro.hdr->org_cap, small_caps.orgs);
	ck_assert_ptr_eq((void *)ro.orgs, (void *)(ro.base + ro.hdr->org_off));
	ck_assert_ptr_eq((void *)ro.txns, (void *)(ro.base + ro.hdr->txn_off));
	shm_read(&ro.orgs[0], &copy, sizeof copy);
	ck_assert_uint_eq(copy.id, 7);
	ck_assert_str_eq(copy.name, "seen");
	ck_assert_int_eq(copy.wallet.balance, 99);

	/* later writes show through the shared mapping */
	shm_write_begin(&rw.orgs[0].rec.seq);
	rw.orgs[0].wallet.balance = 100;
	shm_write_end(&rw.orgs[0].rec.seq);
	shm_read(&ro.orgs[0], &copy, sizeof copy);
	ck_assert_int_eq(copy.wallet.balance, 100);

	shm_close(&ro);
	shm_close(&rw);
}
END_TEST

START_TEST(test_open_ro_missing_file_fails)
{
	struct shm m;
	struct stat sb;

	memset(&m, 0, sizeof m);
	ck_assert_int_lt(shm_open_ro(&m, g_path, g_err, sizeof g_err), 0);
	/* a reader never creates the segment */
	ck_assert_int_ne(stat(g_path, &sb), 0);
}
END_TEST

/* ====================================================================== */
/* multi-record changes */

START_TEST(test_change_bracket_sets_busy)
{
	struct shm m;
	int created = -1;
	uint32_t seq0;
	uint64_t mut0;

	memset(&m, 0, sizeof m);
	ck_assert_int_eq(shm_open_rw(&m, g_path, &small_caps, &created, g_err, sizeof g_err), 0);
	seq0 = m.hdr->seq;
	mut0 = m.hdr->mutations;
	shm_change_begin(&m);
	ck_assert_uint_eq(m.hdr->busy, 1);
	shm_change_end(&m);
	ck_assert_uint_eq(m.hdr->busy, 0);
	/* readers comparing the header before and after must see the change */
	ck_assert_msg(m.hdr->seq != seq0 || m.hdr->mutations != mut0,
	              "a change left neither hdr.seq nor hdr.mutations changed");
	ck_assert_uint_eq(m.hdr->seq % 2, 0);
	shm_close(&m);
	/* a cleanly ended change leaves an attachable segment */
	memset(&m, 0, sizeof m);
	ck_assert_int_eq(shm_open_rw(&m, g_path, &small_caps, &created, g_err, sizeof g_err), 0);
	ck_assert_int_eq(created, 0);
	shm_close(&m);
}
END_TEST

/* ====================================================================== */
/* the per-record seqlock */

START_TEST(test_read_quiescent_copies_exactly)
{
	static struct shm_agent a, copy;
	unsigned retries;

	memset(&a, 0, sizeof a);
	a.rec.seq = 4;
	a.rec.used = 1;
	a.id = 9;
	strcpy(a.name, "quiet");
	a.wallet.balance = 5;
	a.vel.n[SHM_WINDOW_BUCKETS - 1] = 77;
	memset(&copy, 0xee, sizeof copy);
	retries = shm_read(&a, &copy, sizeof copy);
	ck_assert_uint_eq(retries, 0);
	ck_assert_int_eq(memcmp(&a, &copy, sizeof a), 0);
}
END_TEST

struct seq_shared {
	struct shm_agent rec;
	int reader_started;
	int writer_done;
};

static int64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

#define SEQ_ITERATIONS 200000
#define SEQ_MAX_US INT64_C(4000000)

static void *seq_writer(void *arg)
{
	struct seq_shared *sh = arg;
	struct shm_agent *a = &sh->rec;
	int64_t start = mono_us();

	while (!__atomic_load_n(&sh->reader_started, __ATOMIC_ACQUIRE))
		;
	for (int64_t i = 1; i <= SEQ_ITERATIONS; i++) {
		shm_write_begin(&a->rec.seq);
		a->id = (uint64_t)i;
		a->org_id = (uint64_t)i;
		a->created_at = i;
		a->wallet.balance = i;
		a->wallet.held = i;
		a->wallet.budget = i;
		a->wallet.max_per_txn = i;
		a->wallet.daily_limit = i;
		a->wallet.daily_spent = i;
		a->wallet.debt = i;
		a->wallet.day = (int32_t)i;
		shm_write_end(&a->rec.seq);
		if ((i & 1023) == 0 && mono_us() - start > SEQ_MAX_US)
			break;
	}
	__atomic_store_n(&sh->writer_done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static int agent_copy_consistent(const struct shm_agent *c)
{
	int64_t v = c->wallet.balance;

	return (int64_t)c->id == v && (int64_t)c->org_id == v && c->created_at == v &&
	       c->wallet.held == v && c->wallet.budget == v && c->wallet.max_per_txn == v &&
	       c->wallet.daily_limit == v && c->wallet.daily_spent == v && c->wallet.debt == v &&
	       c->wallet.day == (int32_t)v;
}

START_TEST(test_read_consistent_under_concurrent_writer)
{
	static struct seq_shared sh;
	struct shm_agent copy;
	pthread_t th;
	unsigned long reads = 0, torn = 0, backwards = 0;
	int64_t last = 0, first_bad = -1;

	memset(&sh, 0, sizeof sh);
	ck_assert_int_eq(pthread_create(&th, NULL, seq_writer, &sh), 0);
	__atomic_store_n(&sh.reader_started, 1, __ATOMIC_RELEASE);
	for (;;) {
		int done = __atomic_load_n(&sh.writer_done, __ATOMIC_ACQUIRE);

		shm_read(&sh.rec, &copy, sizeof copy);
		reads++;
		if (!agent_copy_consistent(&copy)) {
			torn++;
			if (first_bad < 0)
				first_bad = copy.wallet.balance;
		}
		if (copy.wallet.balance < last)
			backwards++;
		last = copy.wallet.balance;
		if (done)
			break;
	}
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	ck_assert_msg(torn == 0, "%lu of %lu copies torn (first at value %lld)", torn, reads,
	              (long long)first_bad);
	ck_assert_msg(backwards == 0, "%lu copies went back in time", backwards);
	ck_assert_uint_gt(reads, 0);
	/* the final read came after the last write */
	ck_assert_int_ge(copy.wallet.balance, 1);
	ck_assert_uint_eq(copy.rec.seq % 2, 0);
}
END_TEST

struct blocked_read {
	struct shm_org rec;
	struct shm_org copy;
	int started;
	unsigned retries;
};

static void *blocked_reader(void *arg)
{
	struct blocked_read *b = arg;

	__atomic_store_n(&b->started, 1, __ATOMIC_RELEASE);
	b->retries = shm_read(&b->rec, &b->copy, sizeof b->copy);
	return NULL;
}

/* A reader that finds the record mid-write waits for the write to end. */
START_TEST(test_read_waits_for_open_write)
{
	static struct blocked_read b;
	pthread_t th;
	int64_t t;

	memset(&b, 0, sizeof b);
	b.rec.id = 1;
	b.rec.wallet.balance = 1;
	shm_write_begin(&b.rec.rec.seq);
	b.rec.wallet.balance = 2; /* half-way: id still says 1 */
	ck_assert_int_eq(pthread_create(&th, NULL, blocked_reader, &b), 0);
	while (!__atomic_load_n(&b.started, __ATOMIC_ACQUIRE))
		;
	t = mono_us();
	while (mono_us() - t < 50000)
		;
	b.rec.id = 2;
	shm_write_end(&b.rec.rec.seq);
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	ck_assert_uint_eq(b.copy.id, 2);
	ck_assert_int_eq(b.copy.wallet.balance, 2);
	ck_assert_uint_ge(b.retries, 1);
}
END_TEST

/* ====================================================================== */

/* ====================================================================== */
/* the agent index (shm.h, AGENT INDEX) */

static const struct shm_caps ix_caps = { 2, 8, 4, 5, 6, 6, 6, 6, 6, 6, 0 }; /* 16 entries */

/* Writes an agent record in slot as the daemon does, then indexes it. */
static void ix_put(struct shm *m, uint32_t slot, uint64_t id)
{
	shm_write_begin(&m->agents[slot].rec.seq);
	m->agents[slot].rec.used = 1;
	m->agents[slot].id = id;
	shm_write_end(&m->agents[slot].rec.seq);
	if (slot >= m->hdr->agent_top) /* the daemon's slot pool keeps the high-water mark */
		m->hdr->agent_top = slot + 1;
	shm_agent_ix_insert(m, id, slot);
}

static void ix_del(struct shm *m, uint32_t slot)
{
	shm_write_begin(&m->agents[slot].rec.seq);
	m->agents[slot].rec.used = 0;
	shm_write_end(&m->agents[slot].rec.seq);
	shm_agent_ix_remove(m, m->agents[slot].id, slot);
}

/* n distinct ids >= 1 whose probes all start at the same entry. */
static void colliding_ids(uint32_t cap, uint64_t *ids, unsigned n)
{
	unsigned got = 0;

	for (uint64_t id = 2; got < n; id++)
		if (shm_agent_ix_home(id, cap) == shm_agent_ix_home(1, cap))
			ids[got++] = id;
}

/* The position of value in the index, or -1. */
static int ix_pos(const struct shm *m, uint32_t value)
{
	for (uint32_t i = 0; i < m->hdr->agent_ix_cap; i++)
		if (m->agent_ix[i] == value)
			return (int)i;
	return -1;
}

START_TEST(test_agent_ix_home_spreads_consecutive_ids)
{
	uint32_t cap = 1u << 12, used[1u << 12];

	memset(used, 0, sizeof used);
	/* consecutive ids (as the daemon assigns them) fill half the table without a collision cluster */
	for (uint64_t id = 1; id <= cap / 2; id++) {
		uint32_t h = shm_agent_ix_home(id, cap);

		ck_assert_uint_lt(h, cap);
		used[h]++;
	}
	for (uint32_t i = 0; i < cap; i++)
		ck_assert_uint_le(used[i], 2);
	ck_assert_uint_lt(shm_agent_ix_home(UINT64_MAX, 2), 2);
}
END_TEST

START_TEST(test_agent_ix_insert_find_remove)
{
	struct shm m;
	int created = -1;
	uint64_t ids[3];

	memset(&m, 0, sizeof m);
	ck_assert_int_eq(shm_open_rw(&m, g_path, &ix_caps, &created, g_err, sizeof g_err), 0);
	ck_assert_uint_eq(m.hdr->agent_ix_cap, 16);
	colliding_ids(16, ids, 3);
	ix_put(&m, 5, ids[0]);
	ix_put(&m, 2, ids[1]);
	ix_put(&m, 7, ids[2]);
	ck_assert_uint_eq(shm_agent_ix_find(&m, ids[0]), 5);
	ck_assert_uint_eq(shm_agent_ix_find(&m, ids[1]), 2);
	ck_assert_uint_eq(shm_agent_ix_find(&m, ids[2]), 7);
	ck_assert_uint_eq(shm_agent_ix_find(&m, 1), SHM_NONE);
	ck_assert_uint_eq(m.agent_ix_live, 3);

	/* deleting the head of the chain leaves a tombstone the others are found past */
	ix_del(&m, 5);
	ck_assert_uint_eq(shm_agent_ix_find(&m, ids[0]), SHM_NONE);
	ck_assert_uint_eq(shm_agent_ix_find(&m, ids[1]), 2);
	ck_assert_uint_eq(shm_agent_ix_find(&m, ids[2]), 7);
	ck_assert_int_eq(ix_pos(&m, 5 + 1), -1);
	ck_assert_int_eq(ix_pos(&m, SHM_IX_TOMB), (int)shm_agent_ix_home(ids[0], 16));
	ck_assert_uint_eq(m.agent_ix_live, 2);
	ck_assert_uint_eq(m.agent_ix_tombs, 1);
	/* removing an id that is not there changes nothing */
	shm_agent_ix_remove(&m, 1, 3);
	ck_assert_uint_eq(m.agent_ix_live, 2);
	ck_assert_uint_eq(m.agent_ix_tombs, 1);
	shm_close(&m);
}
END_TEST

START_TEST(test_agent_ix_tombstone_reused)
{
	struct shm m;
	int created = -1, tomb;
	uint64_t ids[3];

	memset(&m, 0, sizeof m);
	ck_assert_int_eq(shm_open_rw(&m, g_path, &ix_caps, &created, g_err, sizeof g_err), 0);
	colliding_ids(16, ids, 3);
	ix_put(&m, 0, ids[0]);
	ix_put(&m, 1, ids[1]);
	ix_del(&m, 0);
	tomb = ix_pos(&m, SHM_IX_TOMB);
	ck_assert_int_ge(tomb, 0);
	/* a new agent whose probe passes the tombstone takes it */
	ix_put(&m, 3, ids[2]);
	ck_assert_int_eq(ix_pos(&m, 3 + 1), tomb);
	ck_assert_int_eq(ix_pos(&m, SHM_IX_TOMB), -1);
	ck_assert_uint_eq(m.agent_ix_tombs, 0);
	ck_assert_uint_eq(shm_agent_ix_find(&m, ids[1]), 1);
	ck_assert_uint_eq(shm_agent_ix_find(&m, ids[2]), 3);
	shm_close(&m);
}
END_TEST

/* An entry is a hint: a slot reused by another agent does not answer for the old id. */
START_TEST(test_agent_ix_stale_entry_not_trusted)
{
	struct shm m;
	int created = -1;

	memset(&m, 0, sizeof m);
	ck_assert_int_eq(shm_open_rw(&m, g_path, &ix_caps, &created, g_err, sizeof g_err), 0);
	ix_put(&m, 4, 10);
	/* the record changes under the entry (as if deleted and reused) */
	shm_write_begin(&m.agents[4].rec.seq);
	m.agents[4].id = 11;
	shm_write_end(&m.agents[4].rec.seq);
	ck_assert_uint_eq(shm_agent_ix_find(&m, 10), SHM_NONE);
	shm_write_begin(&m.agents[4].rec.seq);
	m.agents[4].id = 10;
	m.agents[4].rec.used = 0;
	shm_write_end(&m.agents[4].rec.seq);
	ck_assert_uint_eq(shm_agent_ix_find(&m, 10), SHM_NONE);
	/* an entry naming a slot past the table is ignored, not followed */
	m.agent_ix[shm_agent_ix_home(12, 16)] = ix_caps.agents + 1;
	ck_assert_uint_eq(shm_agent_ix_find(&m, 12), SHM_NONE);
	shm_close(&m);
}
END_TEST

/*
 * Churn: agents created and deleted many times over. Tombstones never fill
 * the table: it is rebuilt (agent_ix_seq advances by two, staying even)
 * whenever fewer than a quarter of its entries are empty, and every live
 * agent is found throughout.
 */
START_TEST(test_agent_ix_rebuilt_under_churn)
{
	struct shm m;
	int created = -1;
	uint64_t next_id = 1, live_id[8] = { 0 };
	uint32_t seq0;

	memset(&m, 0, sizeof m);
	ck_assert_int_eq(shm_open_rw(&m, g_path, &ix_caps, &created, g_err, sizeof g_err), 0);
	seq0 = m.hdr->agent_ix_seq;
	for (unsigned round = 0; round < 500; round++) {
		uint32_t slot = (round * 5) % 8;
		uint64_t gone = live_id[slot];

		if (gone)
			ix_del(&m, slot);
		live_id[slot] = next_id++;
		ix_put(&m, slot, live_id[slot]);
		ck_assert_uint_le(m.agent_ix_live + m.agent_ix_tombs, 12);
		for (uint32_t i = 0; i < 8; i++)
			if (live_id[i])
				ck_assert_uint_eq(shm_agent_ix_find(&m, live_id[i]), i);
		if (gone)
			ck_assert_uint_eq(shm_agent_ix_find(&m, gone), SHM_NONE);
	}
	ck_assert_uint_eq(m.hdr->agent_ix_seq % 2, 0);
	ck_assert_uint_gt(m.hdr->agent_ix_seq, seq0);
	ck_assert_uint_eq(m.agent_ix_live, 8);
	shm_close(&m);
}
END_TEST

/* The daemon rebuilds the index whenever it opens the segment, from the agent records. */
START_TEST(test_agent_ix_rebuilt_on_open)
{
	struct state_config cfg;
	struct state *st = NULL;
	struct state_agent_spec spec;
	struct shm *m;
	uint32_t org, slots[3], slot;
	uint64_t ids[3];
	int rc;

	memset(&cfg, 0, sizeof cfg);
	cfg.path = g_path;
	cfg.caps = ix_caps;
	cfg.set.hold_ttl_us = INT64_C(300000000);
	rc = state_open(&st, &cfg, g_err, sizeof g_err);
	ck_assert_msg(rc == 0, "state_open: %d (%s)", rc, g_err);
	ck_assert_int_eq(state_org_create(st, (struct state_str){ "acme", 4 }, 0, &org, g_err,
	                                  sizeof g_err), 0);
	for (int i = 0; i < 3; i++) {
		char name[8];

		snprintf(name, sizeof name, "a%d", i);
		memset(&spec, 0, sizeof spec);
		spec.org_slot = org;
		spec.name = (struct state_str){ name, strlen(name) };
		rc = state_agent_create(st, &spec, 0, &slots[i], g_err, sizeof g_err);
		ck_assert_msg(rc == 0, "state_agent_create: %d (%s)", rc, g_err);
		ids[i] = state_shm(st)->agents[slots[i]].id;
	}
	ck_assert_int_eq(state_agent_delete(st, slots[1], g_err, sizeof g_err), 0);
	ck_assert_int_eq(state_agent_by_id(st, ids[1], &slot), SC_ENOTFOUND);
	/* the file's index is wiped, as a snapshot restore leaves it */
	m = state_shm(st);
	memset(m->agent_ix, 0xab, m->hdr->agent_ix_cap * sizeof(uint32_t));
	state_close(st);

	rc = state_open(&st, &cfg, g_err, sizeof g_err);
	ck_assert_msg(rc == 0, "state_open again: %d (%s)", rc, g_err);
	m = state_shm(st);
	ck_assert_int_eq(state_agent_by_id(st, ids[0], &slot), 0);
	ck_assert_uint_eq(slot, slots[0]);
	ck_assert_int_eq(state_agent_by_id(st, ids[2], &slot), 0);
	ck_assert_uint_eq(slot, slots[2]);
	ck_assert_int_eq(state_agent_by_id(st, ids[1], &slot), SC_ENOTFOUND);
	ck_assert_uint_eq(m->agent_ix_live, 2);
	ck_assert_uint_eq(m->agent_ix_tombs, 0);
	ck_assert_uint_eq(m->hdr->agent_ix_seq % 2, 0);
	/* the rebuild left only the two entries: everything else is empty */
	{
		unsigned empty = 0;

		for (uint32_t i = 0; i < m->hdr->agent_ix_cap; i++)
			empty += m->agent_ix[i] == SHM_IX_EMPTY;
		ck_assert_uint_eq(empty, m->hdr->agent_ix_cap - 2);
	}
	state_close(st);
}
END_TEST

/* A daemon that replaces the file marks it retired; stopping marks it stopped. */
START_TEST(test_serving_and_retire)
{
	struct state_config cfg;
	struct state *st = NULL;
	struct shm ro;
	int rc;

	memset(&cfg, 0, sizeof cfg);
	cfg.path = g_path;
	cfg.caps = ix_caps;
	cfg.set.hold_ttl_us = INT64_C(300000000);
	ck_assert_int_eq(state_open(&st, &cfg, g_err, sizeof g_err), 0);
	rc = shm_open_ro(&ro, g_path, g_err, sizeof g_err);
	ck_assert_msg(rc == 0, "shm_open_ro: %d (%s)", rc, g_err);
	ck_assert_uint_eq(ro.hdr->serving, SHM_SERVING_STOPPED);
	state_serve(st);
	ck_assert_uint_eq(ro.hdr->serving, SHM_SERVING_LIVE);
	state_close(st);
	ck_assert_uint_eq(ro.hdr->serving, SHM_SERVING_STOPPED);
	ck_assert_int_eq(state_open(&st, &cfg, g_err, sizeof g_err), 0);
	state_serve(st);
	state_close(st);
	ck_assert_int_eq(shm_retire_file(g_path, g_err, sizeof g_err), 0);
	ck_assert_uint_eq(ro.hdr->serving, SHM_SERVING_RETIRED);
	shm_close(&ro);

	/* a file that is not a segment is left alone, with a message */
	{
		char other[160];
		FILE *f;

		snprintf(other, sizeof other, "%s/not-a-segment", g_dir);
		f = fopen(other, "w");
		ck_assert_ptr_nonnull(f);
		fputs("hello", f);
		fclose(f);
		g_err[0] = '\0';
		ck_assert_int_eq(shm_retire_file(other, g_err, sizeof g_err), SC_EINVAL);
		ck_assert_ptr_nonnull(strstr(g_err, "not a state segment"));
		snprintf(other, sizeof other, "%s/missing", g_dir);
		ck_assert_int_lt(shm_retire_file(other, g_err, sizeof g_err), 0);
	}
}
END_TEST

Suite *shm_suite(void)
{
	Suite *s = suite_create("shm");
	TCase *t;

	t = test_tcase_tmp("layout_size", setup, teardown);
	tcase_add_test(t, test_layout_size_covers_header_and_tables);
	tcase_add_test(t, test_layout_size_overflow_is_erange_or_exact);
	suite_add_tcase(s, t);

	t = test_tcase_tmp("create_and_attach", setup, teardown);
	tcase_add_test(t, test_created_segment_layout);
	tcase_add_test(t, test_reopen_attaches_and_keeps_data);
	tcase_add_test(t, test_state_survives_close_and_reopen);
	tcase_add_test(t, test_existing_capacities_win);
	tcase_add_test(t, test_segment_mode_and_reader_group);
	tcase_add_test(t, test_open_leaves_empty_table_tails_untouched);
	tcase_add_test(t, test_open_rw_in_missing_directory_fails);
	suite_add_tcase(s, t);

	t = test_tcase_tmp("refuse_invalid_segment", setup, teardown);
	tcase_add_test(t, test_refuse_bad_magic);
	tcase_add_test(t, test_refuse_wrong_version);
	tcase_add_test(t, test_refuse_wrong_header_size);
	tcase_add_test(t, test_refuse_busy_segment);
	tcase_add_test(t, test_refuse_truncated_file);
	tcase_add_test(t, test_refuse_size_field_mismatch);
	tcase_add_test(t, test_refuse_file_smaller_than_header);
	tcase_add_test(t, test_refuse_empty_file);
	tcase_add_test(t, test_refuse_table_past_end);
	tcase_add_test(t, test_refuse_offset_past_end);
	tcase_add_test(t, test_validate_header);
	suite_add_tcase(s, t);

	t = test_tcase_tmp("read_only_mapping", setup, teardown);
	tcase_add_test(t, test_open_ro_reads_segment);
	tcase_add_test(t, test_open_ro_missing_file_fails);
	suite_add_tcase(s, t);

	t = test_tcase_tmp("change_bracket", setup, teardown);
	tcase_add_test(t, test_change_bracket_sets_busy);
	suite_add_tcase(s, t);

	t = test_tcase_tmp("agent_index", setup, teardown);
	tcase_add_test(t, test_agent_ix_home_spreads_consecutive_ids);
	tcase_add_test(t, test_agent_ix_insert_find_remove);
	tcase_add_test(t, test_agent_ix_tombstone_reused);
	tcase_add_test(t, test_agent_ix_stale_entry_not_trusted);
	tcase_add_test(t, test_agent_ix_rebuilt_under_churn);
	tcase_add_test(t, test_agent_ix_rebuilt_on_open);
	tcase_add_test(t, test_serving_and_retire);
	suite_add_tcase(s, t);

	t = test_tcase_tmp("seqlock_read", setup, teardown);
	tcase_set_timeout(t, 30);
	tcase_add_test(t, test_read_quiescent_copies_exactly);
	tcase_add_test(t, test_read_consistent_under_concurrent_writer);
	tcase_add_test(t, test_read_waits_for_open_write);
	suite_add_tcase(s, t);

	return s;
}
