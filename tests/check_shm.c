/*
 * check_shm.c: unit tests of the shared-memory state segment (shm/shm.c),
 * written from shm/shm.h alone: layout size, create and re-attach, refusal
 * of invalid segments without touching them, read-only mappings, and the
 * per-record seqlock read under a concurrent writer.
 *
 * Each test works in its own temporary directory, removed in teardown. The
 * test thread registers with liburcu because the persistence test goes
 * through the state model (sidecard/state.c), which needs a registered loop
 * thread; the seqlock test starts one extra writer thread of its own.
 */
#include <check.h>
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

static const struct shm_caps small_caps = { 2, 3, 4, 5, 6, 6, 6, 6, 6, 7 };

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

static uint64_t tables_bytes(const struct shm_caps *c)
{
	return (uint64_t)c->orgs * sizeof(struct shm_org) +
	       (uint64_t)c->agents * sizeof(struct shm_agent) +
	       (uint64_t)c->rules * sizeof(struct shm_rule) +
	       (uint64_t)c->holds * sizeof(struct shm_hold) +
	       (uint64_t)c->txns * sizeof(struct shm_txn) +
	       (uint64_t)c->events * sizeof(struct shm_event) +
	       (uint64_t)c->tasks * sizeof(struct shm_task) +
	       (uint64_t)c->prices * sizeof(struct shm_price) +
	       (uint64_t)c->alerts * sizeof(struct shm_alert) +
	       (uint64_t)c->texts * sizeof(struct shm_text);
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
	/* the last table has no padding behind it */
	c.texts += 1;
	ck_assert_int_eq(shm_layout_size(&c, &bigger), 0);
	ck_assert_uint_eq(bigger, size + sizeof(struct shm_text));
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
		              UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX };
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
 * of a table's empty tail (state.c reads slots below the high-water marks
 * only), so they are never mapped. A table of thousands of pages holding
 * one record has at most the kernel's fault-around (16 pages) mapped at each
 * end: its own first page and the next table's.
 */
START_TEST(test_open_leaves_empty_table_tails_untouched)
{
	struct shm_caps caps = { 4, 65536, 262144, 64, 64, 64, 64, 64, 64, 262144 };
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

START_TEST(test_existing_capacities_win)
{
	struct shm_caps bigger = { 10, 20, 30, 40, 50, 50, 50, 50, 50, 60 };
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

	t = test_tcase_tmp("seqlock_read", setup, teardown);
	tcase_set_timeout(t, 30);
	tcase_add_test(t, test_read_quiescent_copies_exactly);
	tcase_add_test(t, test_read_consistent_under_concurrent_writer);
	tcase_add_test(t, test_read_waits_for_open_write);
	suite_add_tcase(s, t);

	return s;
}
