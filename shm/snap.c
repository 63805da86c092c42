/*
 * snap.c: the segment's record tables as a list, and copy-on-write views of
 * them: a snapshot of every table as it was at one instant, read by another
 * thread while the writer goes on changing the live records.
 *
 * Threads: shm_snap_begin, shm_snap_free and shm_snap_save (through
 * shm_write_begin) run on the writer, the thread that holds the daemon's
 * commit lock; shm_snap_copy and shm_snap_end on one copier thread. The
 * view is owned by whoever began it; it is freed only when no writer can be
 * inside shm_snap_save (the writer's own thread, or under the commit lock),
 * after shm_snap_end.
 *
 * DESIGN
 *
 * A snapshot used to copy every used record under the commit lock: about
 * 0.4 s at a million agents, during which no change could run. Now the
 * lock is held only to copy the header and publish the view
 * (shm_snap_active); the copier then walks the tables at its own pace.
 * The writer's shm_write_begin, which brackets every change of a record
 * (the seqlock readers in other processes rely on), first calls
 * shm_snap_save while a view is active: if the record lies in a table
 * below the end it had at the instant, and nobody took it yet, its bytes
 * are saved in the view's mirror before they change. Each slot has one
 * byte of state:
 *
 *   0 UNTOUCHED  neither side has taken it
 *   1 SAVING     the writer is copying the record into the mirror
 *   2 SAVED      the mirror holds the record as it was at the instant
 *   3 COPYING    the copier is reading the live record
 *   4 COPIED     the copier has it; the writer may change it freely
 *
 * The writer moves 0 -> 1 -> 2, the copier 0 -> 3 -> 4, each with a
 * compare-and-swap from 0, so exactly one of them takes a slot. A writer
 * that finds 3 waits for 4 (one record's copy); the copier that finds 1
 * waits for 2 and reads the mirror. Either way the copier gets the bytes
 * of the instant, and the writer waits for nothing else. Slots past a
 * table's end at the instant were unused then and are not in the view.
 *
 * Cost: nothing while no view is active but a load and a branch in
 * shm_write_begin; while one is, a range test per table and at most one
 * record copy per slot changed. Memory: a byte per slot below the ends,
 * and mirror pages (anonymous, reserved lazily) only where records
 * changed during the copy.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "shm.h"

enum { UNTOUCHED, SAVING, SAVED, COPYING, COPIED };

struct shm_snap *shm_snap_active;

struct table_desc {
	size_t off_field;  /* offset of the table's pointer in struct shm */
	size_t cap_field;  /* offset of its capacity in struct shm_header */
	size_t rec_size;
	size_t top_field;  /* offset of its uint32_t high-water mark in struct shm_header, or */
	size_t next_field; /* of the uint64_t next id of a ring (0: the other field is set) */
};

/* ... is TOP(field) or RING(field). */
#define TABLE(table, cap, type, ...)                                                      \
	{offsetof(struct shm, table), offsetof(struct shm_header, cap), sizeof(struct type), \
	 __VA_ARGS__}
#define TOP(field) offsetof(struct shm_header, field), 0
#define RING(field) 0, offsetof(struct shm_header, field)

static const struct table_desc tables[SHM_TABLES] = {
	TABLE(orgs, org_cap, shm_org, TOP(org_top)),
	TABLE(agents, agent_cap, shm_agent, TOP(agent_top)),
	TABLE(rules, rule_cap, shm_rule, TOP(rule_top)),
	TABLE(holds, hold_cap, shm_hold, TOP(hold_top)),
	TABLE(txns, txn_cap, shm_txn, RING(next_txn_id)),
	TABLE(events, event_cap, shm_event, RING(next_event_id)),
	TABLE(tasks, task_cap, shm_task, TOP(task_top)),
	TABLE(prices, price_cap, shm_price, TOP(price_top)),
	TABLE(alerts, alert_cap, shm_alert, RING(next_alert_id)),
	TABLE(texts, text_cap, shm_text, TOP(text_top)),
	TABLE(keys, key_cap, shm_key, TOP(key_top)),
};

void shm_table(const struct shm *m, const struct shm_header *h, unsigned t,
               struct shm_table *out)
{
	const struct table_desc *d = &tables[t];
	uint32_t cap, top;
	uint64_t next;

	memcpy(&out->base, (const char *)m + d->off_field, sizeof(out->base));
	memcpy(&cap, (const char *)h + d->cap_field, sizeof(cap));
	out->rec_size = d->rec_size;
	/* slots above the end were never written: reading them would fault in empty pages */
	if (d->top_field) {
		memcpy(&top, (const char *)h + d->top_field, sizeof(top));
		out->end = top < cap ? top : cap;
	} else {
		memcpy(&next, (const char *)h + d->next_field, sizeof(next));
		out->end = next - 1 < cap ? (uint32_t)(next - 1) : cap;
	}
}

struct snap_table {
	struct shm_table t;
	unsigned char *state; /* a byte per slot below t.end */
	char *mirror;         /* t.end records, mapped lazily */
	size_t mirror_len;
};

struct shm_snap {
	struct shm_header hdr;
	struct snap_table tables[SHM_TABLES];
};

void shm_snap_free(struct shm_snap *s)
{
	if (s == NULL)
		return;
	for (unsigned t = 0; t < SHM_TABLES; t++) {
		free(s->tables[t].state);
		if (s->tables[t].mirror_len)
			munmap(s->tables[t].mirror, s->tables[t].mirror_len);
	}
	free(s);
}

int shm_snap_begin(struct shm *m, struct shm_snap **out)
{
	struct shm_snap *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return -ENOMEM;
	memcpy(&s->hdr, m->hdr, sizeof(s->hdr));
	for (unsigned t = 0; t < SHM_TABLES; t++) {
		struct snap_table *st = &s->tables[t];

		shm_table(m, &s->hdr, t, &st->t);
		if (st->t.end == 0)
			continue;
		st->state = calloc(st->t.end, 1);
		st->mirror_len = (size_t)st->t.end * st->t.rec_size;
		st->mirror = mmap(NULL, st->mirror_len, PROT_READ | PROT_WRITE,
		                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (st->mirror == MAP_FAILED) {
			st->mirror_len = 0;
			shm_snap_free(s);
			return -ENOMEM;
		}
		if (st->state == NULL) {
			shm_snap_free(s);
			return -ENOMEM;
		}
	}
	__atomic_store_n(&shm_snap_active, s, __ATOMIC_RELEASE);
	*out = s;
	return 0;
}

const struct shm_header *shm_snap_header(const struct shm_snap *s)
{
	return &s->hdr;
}

const struct shm_table *shm_snap_table(const struct shm_snap *s, unsigned t)
{
	return &s->tables[t].t;
}

static void wait_for(unsigned char *state, unsigned char value)
{
	while (__atomic_load_n(state, __ATOMIC_ACQUIRE) != value)
		sched_yield();
}

void shm_snap_save(struct shm_snap *s, const void *at)
{
	uintptr_t p = (uintptr_t)at;

	for (unsigned t = 0; t < SHM_TABLES; t++) {
		struct snap_table *st = &s->tables[t];
		uintptr_t base = (uintptr_t)st->t.base;
		unsigned char *state, expect = UNTOUCHED;
		size_t slot;

		if (p < base || p - base >= st->mirror_len)
			continue;
		slot = (size_t)(p - base) / st->t.rec_size;
		state = &st->state[slot];
		if (__atomic_compare_exchange_n(state, &expect, SAVING, 0, __ATOMIC_ACQUIRE,
		                                __ATOMIC_ACQUIRE)) {
			memcpy(st->mirror + slot * st->t.rec_size, st->t.base + slot * st->t.rec_size,
			       st->t.rec_size);
			__atomic_store_n(state, SAVED, __ATOMIC_RELEASE);
		} else if (expect == COPYING) {
			wait_for(state, COPIED);
		}
		return;
	}
}

void shm_snap_copy(struct shm_snap *s, unsigned t, uint32_t slot, void *out)
{
	struct snap_table *st = &s->tables[t];
	unsigned char *state = &st->state[slot], expect = UNTOUCHED;
	size_t off = (size_t)slot * st->t.rec_size;

	if (__atomic_compare_exchange_n(state, &expect, COPYING, 0, __ATOMIC_ACQUIRE,
	                                __ATOMIC_ACQUIRE)) {
		memcpy(out, st->t.base + off, st->t.rec_size);
		__atomic_store_n(state, COPIED, __ATOMIC_RELEASE);
		return;
	}
	wait_for(state, SAVED);
	memcpy(out, st->mirror + off, st->t.rec_size);
}

void shm_snap_end(struct shm_snap *s)
{
	struct shm_snap *expect = s;

	__atomic_compare_exchange_n(&shm_snap_active, &expect, NULL, 0, __ATOMIC_RELEASE,
	                            __ATOMIC_RELAXED);
}
