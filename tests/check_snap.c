/*
 * check_snap.c: unit tests of the copy-on-write views of the state segment
 * (shm/snap.c), written from shm/shm.h: a view reads every table exactly as
 * it was at its instant, whatever the writer changed, deleted or added
 * since, and whether the copier runs after the writer or races it.
 *
 * The writer here is the test's thread, writing agent, hold and
 * transaction records the way the daemon does (inside shm_write_begin and
 * shm_write_end); the racing copier is one extra thread. Each test works
 * in its own temporary directory, removed in teardown.
 */
#include <check.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shm.h"
#include "sidecard.h"
#include "suites.h"
#include "testutil.h"

#define AGENTS 3000
#define HOLDS 500

static char g_dir[96];
static char g_path[128];
static struct shm g_m;

static const struct shm_caps caps = { .orgs = 4, .agents = AGENTS + 64, .rules = 8,
	                              .holds = HOLDS, .txns = 256, .events = 8,
	                              .tasks = 8, .prices = 8, .alerts = 8, .texts = 8 };

static void setup(void)
{
	char err[256];
	int created;

	ck_assert_int_eq(test_tmpdir(g_dir, sizeof g_dir), 0);
	snprintf(g_path, sizeof g_path, "%s/state.shm", g_dir);
	memset(&g_m, 0, sizeof(g_m));
	ck_assert_msg(shm_open_rw(&g_m, g_path, &caps, &created, err, sizeof err) == 0, "%s", err);
}

static void teardown(void)
{
	shm_close(&g_m);
	test_rm_tree(g_dir);
}

/* Writes agent slot i as the daemon would: used, with this id and balance. */
static void write_agent(uint32_t i, uint64_t id, int64_t balance, int used)
{
	struct shm_agent *a = &g_m.agents[i];

	shm_write_begin(&a->rec.seq);
	a->rec.used = (uint8_t)used;
	a->id = id;
	a->wallet.balance = balance;
	a->wallet.held = balance / 2;
	shm_write_end(&a->rec.seq);
}

static void write_hold(uint32_t i, int64_t amount)
{
	struct shm_hold *h = &g_m.holds[i];

	shm_write_begin(&h->rec.seq);
	h->rec.used = 1;
	h->amount = amount;
	shm_write_end(&h->rec.seq);
}

/* A state: AGENTS agents and HOLDS holds, every third agent slot unused. */
static void populate(void)
{
	for (uint32_t i = 0; i < AGENTS; i++)
		write_agent(i, i + 1, (int64_t)i * 1000, i % 3 != 0);
	for (uint32_t i = 0; i < HOLDS; i++)
		write_hold(i, (int64_t)i + 7);
	g_m.hdr->agent_top = AGENTS;
	g_m.hdr->hold_top = HOLDS;
}

/* Every table of the segment as its header says now: what a view must give back. */
struct image {
	struct shm_table t[SHM_TABLES];
	char *bytes[SHM_TABLES];
};

static void take_image(struct image *im)
{
	for (unsigned t = 0; t < SHM_TABLES; t++) {
		shm_table(&g_m, g_m.hdr, t, &im->t[t]);
		im->bytes[t] = malloc((size_t)im->t[t].end * im->t[t].rec_size + 1);
		ck_assert_ptr_nonnull(im->bytes[t]);
		memcpy(im->bytes[t], im->t[t].base, (size_t)im->t[t].end * im->t[t].rec_size);
	}
}

/* Copies every slot of the view and compares it with the image. */
static void expect_view_is_image(struct shm_snap *s, const struct image *im)
{
	char rec[4096];

	for (unsigned t = 0; t < SHM_TABLES; t++) {
		const struct shm_table *vt = shm_snap_table(s, t);

		ck_assert_uint_eq(vt->end, im->t[t].end);
		ck_assert_uint_le(vt->rec_size, sizeof(rec));
		for (uint32_t i = 0; i < vt->end; i++) {
			shm_snap_copy(s, t, i, rec);
			ck_assert_msg(memcmp(rec, im->bytes[t] + (size_t)i * vt->rec_size,
			                     vt->rec_size) == 0,
			              "table %u slot %u differs from the instant", t, i);
		}
	}
}

static void free_image(struct image *im)
{
	for (unsigned t = 0; t < SHM_TABLES; t++)
		free(im->bytes[t]);
}

/* Changes, deletions and additions after the instant leave the view as it was. */
START_TEST(test_view_keeps_the_instant)
{
	struct shm_snap *s;
	struct image im;

	populate();
	take_image(&im);
	ck_assert_int_eq(shm_snap_begin(&g_m, &s), 0);
	ck_assert_ptr_eq(shm_snap_active, s);
	for (uint32_t i = 0; i < AGENTS; i += 2)
		write_agent(i, i + 1, -1, 1);          /* changed, and unused ones reused */
	for (uint32_t i = 1; i < AGENTS; i += 6)
		write_agent(i, i + 1, 0, 0);           /* deleted */
	for (uint32_t i = AGENTS; i < AGENTS + 10; i++)
		write_agent(i, i + 1, 5, 1);           /* added past the end of the instant */
	g_m.hdr->agent_top = AGENTS + 10;
	g_m.hdr->mutations += 1000;
	ck_assert_uint_eq(shm_snap_header(s)->agent_top, AGENTS);
	expect_view_is_image(s, &im);
	shm_snap_end(s);
	ck_assert_ptr_null(shm_snap_active);
	write_agent(0, 1, 42, 1); /* no view: nothing is saved */
	shm_snap_free(s);
	free_image(&im);
}
END_TEST

struct racer {
	struct shm_snap *s;
	const struct image *im;
	int mismatches;
};

static void *copier_main(void *arg)
{
	struct racer *r = arg;
	char rec[4096];

	for (unsigned t = 0; t < SHM_TABLES; t++) {
		const struct shm_table *vt = shm_snap_table(r->s, t);

		for (uint32_t i = 0; i < vt->end; i++) {
			shm_snap_copy(r->s, t, i, rec);
			r->mismatches += memcmp(rec, r->im->bytes[t] + (size_t)i * vt->rec_size,
			                        vt->rec_size) != 0;
		}
	}
	shm_snap_end(r->s);
	return NULL;
}

/* A copier racing a writer that keeps changing random records still reads the instant. */
START_TEST(test_view_under_a_racing_writer)
{
	uint64_t x = 88172645463325252u;

	populate();
	for (int round = 0; round < 20; round++) {
		struct racer r = { 0 };
		struct image im;
		pthread_t th;

		take_image(&im);
		r.im = &im;
		ck_assert_int_eq(shm_snap_begin(&g_m, &r.s), 0);
		ck_assert_int_eq(pthread_create(&th, NULL, copier_main, &r), 0);
		for (int k = 0; k < 20000; k++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			if (x % 4)
				write_agent((uint32_t)(x >> 8) % AGENTS, (x >> 8) % AGENTS + 1,
				            (int64_t)(x >> 20), (x >> 40) % 5 != 0);
			else
				write_hold((uint32_t)(x >> 8) % HOLDS, (int64_t)(x >> 24));
		}
		pthread_join(th, NULL);
		ck_assert_msg(r.mismatches == 0, "round %d: %d records differ from the instant", round,
		              r.mismatches);
		ck_assert_ptr_null(shm_snap_active);
		shm_snap_free(r.s);
		free_image(&im);
	}
}
END_TEST

Suite *snap_suite(void)
{
	Suite *s = suite_create("snap");
	TCase *t = test_tcase_tmp("copy_on_write", setup, teardown);

	tcase_add_test(t, test_view_keeps_the_instant);
	tcase_add_test(t, test_view_under_a_racing_writer);
	suite_add_tcase(s, t);
	return s;
}
