/*
 * state_check.c: state_check_holds, the money invariants of a segment
 * (state_check.h), checked from the records alone: one pass over the hold
 * table sums what each wallet, rule and task should hold, then every live
 * record is compared with its sums.
 *
 * Thread: the writer's (or with the writer stopped); it reads the segment
 * without its seqlocks. Allocates its sums and frees them before returning.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "state_check.h"

struct sums {
	int64_t *org, *agent, *rule, *task, *reserving;
	uint32_t *agent_n, *task_n;
};

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

static int wallet_ok(const struct shm_wallet *w, int64_t held, const char *kind, uint64_t id,
                     char *err, size_t errlen)
{
	if (w->balance < 0 || w->debt < 0 || w->held < 0)
		return fail(err, errlen, "%s %" PRIu64 ": balance %" PRId64 ", debt %" PRId64
		            ", held %" PRId64, kind, id, w->balance, w->debt, w->held);
	if (w->held != held)
		return fail(err, errlen, "%s %" PRIu64 ": held %" PRId64 ", its holds sum %" PRId64,
		            kind, id, w->held, held);
	return 0;
}

/* One pass over the holds: what each record should hold. */
static int sum_holds(const struct shm *m, struct sums *s, char *err, size_t errlen)
{
	const struct shm_header *h = m->hdr;

	for (uint32_t i = 0; i < h->hold_top; i++) {
		const struct shm_hold *o = &m->holds[i];
		const struct shm_agent *a;

		if (!o->rec.used)
			continue;
		if (o->amount < 0)
			return fail(err, errlen, "hold of txn %" PRIu64 ": amount %" PRId64, o->txn_id,
			            o->amount);
		if (o->agent_slot >= h->agent_top || !(a = &m->agents[o->agent_slot])->rec.used ||
		    a->id != o->agent_id || a->org_slot != o->org_slot)
			return fail(err, errlen, "hold of txn %" PRIu64 ": agent %" PRIu64
			            " is not live in its org", o->txn_id, o->agent_id);
		s->agent[o->agent_slot] += o->amount;
		s->agent_n[o->agent_slot]++;
		if (o->org_limited)
			s->org[o->org_slot] += o->amount;
		if (o->rule_slot != SHM_NONE) {
			if (o->rule_slot >= h->rule_top || !m->rules[o->rule_slot].rec.used ||
			    m->rules[o->rule_slot].id != o->rule_id)
				return fail(err, errlen, "hold of txn %" PRIu64 ": rule %" PRIu64
				            " is not live", o->txn_id, o->rule_id);
			s->rule[o->rule_slot] += o->amount;
		}
		if (o->task_slot != SHM_NONE && o->task_slot < h->task_top &&
		    m->tasks[o->task_slot].rec.used && m->tasks[o->task_slot].uid == o->task_uid) {
			s->task[o->task_slot] += o->amount;
			s->task_n[o->task_slot]++;
		}
	}
	return 0;
}

static int compare(const struct shm *m, struct sums *s, char *err, size_t errlen)
{
	const struct shm_header *h = m->hdr;

	for (uint32_t i = 0; i < h->agent_top; i++) {
		const struct shm_agent *a = &m->agents[i];

		if (!a->rec.used)
			continue;
		if (wallet_ok(&a->wallet, s->agent[i], "agent", a->id, err, errlen))
			return -1;
		if (a->open_holds != s->agent_n[i])
			return fail(err, errlen, "agent %" PRIu64 ": %u open holds counted, %u held",
			            a->id, a->open_holds, s->agent_n[i]);
		if (a->wallet.reserving < 0)
			return fail(err, errlen, "agent %" PRIu64 ": reserves %" PRId64, a->id,
			            a->wallet.reserving);
		if (a->org_slot < h->org_top)
			s->reserving[a->org_slot] += a->wallet.reserving;
	}
	for (uint32_t i = 0; i < h->org_top; i++) {
		const struct shm_org *o = &m->orgs[i];

		if (!o->rec.used)
			continue;
		if (wallet_ok(&o->wallet, s->org[i], "org", o->id, err, errlen))
			return -1;
		if (o->wallet.reserving != s->reserving[i])
			return fail(err, errlen, "org %" PRIu64 ": reserves %" PRId64
			            ", its agents %" PRId64, o->id, o->wallet.reserving, s->reserving[i]);
	}
	for (uint32_t i = 0; i < h->rule_top; i++) {
		const struct shm_rule *r = &m->rules[i];

		if (r->rec.used && r->held != s->rule[i])
			return fail(err, errlen, "rule %" PRIu64 ": held %" PRId64 ", its holds %" PRId64,
			            r->id, r->held, s->rule[i]);
	}
	for (uint32_t i = 0; i < h->task_top; i++) {
		const struct shm_task *t = &m->tasks[i];

		if (t->rec.used && (t->held != s->task[i] || t->open_holds != s->task_n[i]))
			return fail(err, errlen, "task %s: held %" PRId64 " in %u holds, its holds %"
			            PRId64 " in %u", t->id, t->held, t->open_holds, s->task[i],
			            s->task_n[i]);
	}
	return 0;
}

int state_check_holds(const struct shm *m, char *err, size_t errlen)
{
	const struct shm_header *h = m->hdr;
	struct sums s;
	int rc;

	s.org = calloc(h->org_top + 1, sizeof(int64_t));
	s.reserving = calloc(h->org_top + 1, sizeof(int64_t));
	s.agent = calloc(h->agent_top + 1, sizeof(int64_t));
	s.agent_n = calloc(h->agent_top + 1, sizeof(uint32_t));
	s.rule = calloc(h->rule_top + 1, sizeof(int64_t));
	s.task = calloc(h->task_top + 1, sizeof(int64_t));
	s.task_n = calloc(h->task_top + 1, sizeof(uint32_t));
	if (!s.org || !s.reserving || !s.agent || !s.agent_n || !s.rule || !s.task || !s.task_n)
		rc = fail(err, errlen, "out of memory");
	else if ((rc = sum_holds(m, &s, err, errlen)) == 0)
		rc = compare(m, &s, err, errlen);
	free(s.org);
	free(s.reserving);
	free(s.agent);
	free(s.agent_n);
	free(s.rule);
	free(s.task);
	free(s.task_n);
	return rc;
}
