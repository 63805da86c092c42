/*
 * sys_sidecard.c: sidecard as a system under test of bench/gate_bench. A
 * fresh daemon (tests/daemon.c: $SIDECARD_BIN, else the build tree's) on a
 * new temporary directory, sized for the run, then set up through
 * libsidecard: one org, `agents` agents with a large balance, a wallet
 * per-transaction and daily limit, and `rules` rules each; the checks'
 * action matches the last rule, which has a per-transaction limit, a daily
 * limit and an hourly rate limit, all far above what a run can reach, so
 * every check is gated through every step and allowed. A check that is not
 * allowed, or any error, fails the run: its numbers would be lies.
 *
 * Capacities: a check that is not reported leaves its hold open (the TTL is
 * an hour, longer than any run), so --holds is the caller's bound on the
 * checks of this daemon's life, and the hold quotas are set to it (the
 * run is one org's). The transaction history (--history) is a
 * ring of rows of about 1.2 KiB that a check overwrites in turn; an open
 * hold does not need its row, so the default is kept and the daemon's
 * memory stays that of its holds.
 *
 * Setup of many agents (the agents sweep goes to a million) uses four
 * connections at once and prints its progress to stderr. Measuring starts
 * only once the setup settled (settle(): its records durable and the
 * checkpoint they made due written).
 *
 * Peek operations read wallets through one sc_peek, the state file mapped
 * read-only once the setup is done and shared by every client thread.
 *
 * Threads: start, ledger and stop on the main thread (which owns the stats
 * connection and the sc_peek); connect, op and disconnect on client threads,
 * each with its own sc_client; peeks read through the shared sc_peek, which
 * sc_peek allows from any number of threads.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gate_bench.h"
#include "sidecard.h"

#define SETUP_THREADS 4
#define BALANCE INT64_C(1000000000000000) /* $1e9: never runs out */
#define BIG_LIMIT INT64_C(100000000000000)
#define HOURLY_LIMIT INT64_C(1000000000000)
/* --checkpoint-records, passed so that settle() knows when one is due (the daemon's default) */
#define CHECKPOINT_RECORDS 1000000
#define SETTLE_TIMEOUT_S 300

struct sidecard {
	struct bench_daemon bd;
	char caps[5][24]; /* --agents, --rules, --holds, the durability, --checkpoint-records */
	struct test_daemon d;
	sc_client *stats;
	uint64_t *agent_ids, *rule_ids; /* per agent: its id and its matching rule's */
	sc_meta meta;
	char *meta_value;
	sc_peek *peek;      /* the state mapped read-only, shared by every client; NULL: */
	char peek_err[256]; /* why it could not be opened */
};

struct sidecard_conn {
	struct sidecard *sc;
	const struct setup *st;
	sc_client *c;
	unsigned admin_turn;
	sc_check_req *reqs; /* pipelined */
	sc_decision *outs;
	int *rcs;
};

/* ----- setup ----- */

struct setup_job {
	struct sidecard *sc;
	const struct setup *st;
	size_t from, step;
	volatile size_t *done;
	int rc;
	char err[256];
};

static void *setup_thread(void *arg)
{
	struct setup_job *j = arg;
	sc_wallet_update w = {
		.set = SC_WALLET_SET_BALANCE | SC_WALLET_SET_MAX_PER_TXN |
		       SC_WALLET_SET_DAILY_SPEND_LIMIT,
		.balance = BALANCE,
		.max_per_txn = 1000 * BENCH_ESTIMATE,
		.daily_spend_limit = BIG_LIMIT,
	};
	sc_rule rules[SC_RULES_MAX];
	sc_client *c = NULL;
	sc_agent *a = malloc(sizeof(*a));
	size_t i, k, n_rules = j->st->rules;
	char name[32];

	memset(rules, 0, sizeof(rules));
	for (k = 0; k < n_rules; k++) {
		/* the last rule matches the checks' action; the others other tools */
		snprintf(rules[k].name, sizeof(rules[k].name), "r%zu", k);
		if (k + 1 == n_rules)
			snprintf(rules[k].match, sizeof(rules[k].match), "llm.*");
		else
			snprintf(rules[k].match, sizeof(rules[k].match), "tool%zu.*", k);
		rules[k].max_cost_per_txn = 1000 * BENCH_ESTIMATE;
		rules[k].daily_spend_limit = BIG_LIMIT;
		rules[k].hourly_rate_limit = HOURLY_LIMIT;
	}
	if (a == NULL || (j->rc = sc_connect(j->sc->bd.d.socket, &c)) != 0) {
		snprintf(j->err, sizeof(j->err), "connect: %s", sc_err_name(j->rc));
		j->rc = j->rc ? j->rc : -1;
		free(a);
		return NULL;
	}
	for (i = j->from; i < j->st->agents; i += j->step) {
		snprintf(name, sizeof(name), "a%zu", i);
		j->rc = sc_agents_create(c, "bench", name, SC_PRIORITY_NORMAL, &w, rules, n_rules, a);
		if (j->rc != 0) {
			snprintf(j->err, sizeof(j->err), "agents.create %s: %s: %s", name,
			         sc_err_name(j->rc), sc_last_error(c));
			break;
		}
		j->sc->agent_ids[i] = a->id;
		j->sc->rule_ids[i] = n_rules ? a->rules[n_rules - 1].id : 0;
		__atomic_add_fetch(j->done, 1, __ATOMIC_RELAXED);
	}
	sc_close(c);
	free(a);
	return NULL;
}

static int setup_agents(struct sidecard *sc, const struct setup *st, char *err, size_t len)
{
	struct setup_job jobs[SETUP_THREADS];
	pthread_t th[SETUP_THREADS];
	volatile size_t done = 0;
	size_t t, n = st->agents < SETUP_THREADS ? 1 : SETUP_THREADS, reported = 0;
	int64_t t0 = bench_now_ns();
	sc_org o;
	int rc;

	if ((rc = sc_orgs_create(sc->stats, "bench", &o)) != 0) {
		snprintf(err, len, "orgs.create: %s: %s", sc_err_name(rc), sc_last_error(sc->stats));
		return -1;
	}
	for (t = 0; t < n; t++) {
		jobs[t] = (struct setup_job){ .sc = sc, .st = st, .from = t, .step = n, .done = &done };
		pthread_create(&th[t], NULL, setup_thread, &jobs[t]);
	}
	if (!st->quiet && st->agents >= 100000) {
		while (__atomic_load_n(&done, __ATOMIC_RELAXED) < st->agents) {
			size_t now = __atomic_load_n(&done, __ATOMIC_RELAXED);
			int failed = 0;

			for (t = 0; t < n; t++)
				failed |= jobs[t].rc != 0;
			if (failed)
				break;
			if (now >= reported + st->agents / 10) {
				fprintf(stderr, "gate_bench: setup: %zu of %zu agents (%.0f s)\n", now,
				        st->agents, (double)(bench_now_ns() - t0) / 1e9);
				reported = now;
			}
			test_sleep_ms(200);
		}
	}
	for (t = 0; t < n; t++)
		pthread_join(th[t], NULL);
	for (t = 0; t < n; t++) {
		if (jobs[t].rc != 0) {
			snprintf(err, len, "setup: %s", jobs[t].err);
			return -1;
		}
	}
	if (!st->quiet && st->agents >= 100000)
		fprintf(stderr, "gate_bench: setup: %zu agents with %zu rules each in %.1f s\n",
		        st->agents, st->rules, (double)(bench_now_ns() - t0) / 1e9);
	return 0;
}

/*
 * Waits until the setup is settled: its records durable, and the checkpoint
 * that a million of them make due (--checkpoint-records) written. Measured
 * while that checkpoint ran, the agents sweep's 1M row showed what the
 * setup costs instead of the steady state: the snapshot of a million agents
 * copies the state under the daemon's commit lock (about 0.4 s on the
 * reference machine, every change waiting), then writes it beside the
 * ledger. Checkpoints the measured checks make later are the steady state
 * and stay in the figures. 0, or -1 with err after SETTLE_TIMEOUT_S.
 */
static int settle(struct sidecard *sc, const struct setup *st, char *err, size_t len)
{
	int64_t last, durable, ckpt, t0 = bench_now_ns();
	int said = 0;

	if (sc_stat(sc->stats, "ledger_last_seq", &last) != 0)
		goto failed;
	for (;;) {
		if (sc_stat(sc->stats, "ledger_durable_seq", &durable) != 0 ||
		    sc_stat(sc->stats, "checkpoint_seq", &ckpt) != 0)
			goto failed;
		if (durable >= last && last - ckpt < CHECKPOINT_RECORDS)
			break;
		if (bench_now_ns() - t0 > (int64_t)SETTLE_TIMEOUT_S * 1000000000) {
			snprintf(err, len,
			         "the setup did not settle in %d s: records %" PRId64 ", durable %" PRId64
			         ", checkpoint at %" PRId64,
			         SETTLE_TIMEOUT_S, last, durable, ckpt);
			return -1;
		}
		if (!st->quiet && !said && durable >= last) {
			fprintf(stderr, "gate_bench: setup: waiting for the checkpoint of its %" PRId64
			                " records\n", last);
			said = 1;
		}
		test_sleep_ms(20);
	}
	if (said)
		fprintf(stderr, "gate_bench: setup: settled after %.1f s\n",
		        (double)(bench_now_ns() - t0) / 1e9);
	return 0;
failed:
	snprintf(err, len, "stats: %s", sc_last_error(sc->stats));
	return -1;
}

/*
 * The length of a metadata value whose map {"note": value} packs to bytes,
 * exact except where a longer string header would overshoot (exact for the
 * sweep's 128 and 512); 0 below 8 bytes.
 */
static size_t meta_value_len(size_t bytes)
{
	/* fixmap header (1) + "note" (1 + 4) + the value's str header (1, 2 or 3 bytes) */
	size_t fixed = 1 + 5, v;

	if (bytes < fixed + 1)
		return 0;
	v = bytes - fixed - 1;
	if (v <= 31)
		return v;
	v = bytes - fixed - 2;
	if (v <= 255)
		return v;
	return bytes - fixed - 3;
}

/* ----- the system interface ----- */

static int sc_connect_(struct sys *s, void **conn, char *err, size_t len)
{
	struct sidecard_conn *k = calloc(1, sizeof(*k));
	int rc;

	if (k == NULL) {
		snprintf(err, len, "out of memory");
		return -1;
	}
	k->sc = s->priv;
	k->st = &s->setup;
	if ((rc = sc_connect(k->sc->bd.d.socket, &k->c)) != 0) {
		snprintf(err, len, "connect: %s", sc_err_name(rc));
		free(k);
		return -1;
	}
	*conn = k;
	return 0;
}

static void sc_disconnect(void *conn)
{
	struct sidecard_conn *k = conn;

	sc_close(k->c);
	free(k->reqs);
	free(k->outs);
	free(k->rcs);
	free(k);
}

static void fill_req(struct sidecard_conn *k, const struct setup *st, uint64_t *rng,
                     sc_check_req *r)
{
	size_t i = (size_t)(bench_rand(rng) % st->agents);

	*r = (sc_check_req){ .agent_id = k->sc->agent_ids[i], .action = "llm.chat",
		             .estimated_cost = BENCH_ESTIMATE };
	if (st->meta_bytes > 0) {
		r->metadata = &k->sc->meta;
		r->n_metadata = 1;
	}
}

static long decided(const sc_decision *d, int rc, sc_client *c, char *err, size_t len)
{
	if (rc != 0) {
		snprintf(err, len, "check: %s: %s", sc_err_name(rc), sc_last_error(c));
		return -1;
	}
	if (!d->allowed) {
		snprintf(err, len, "check blocked: %s", d->block_reason);
		return -1;
	}
	return 1;
}

static long sc_admin(struct sidecard_conn *k, const struct setup *st, uint64_t *rng, char *err,
                     size_t len)
{
	size_t i = (size_t)(bench_rand(rng) % st->agents);
	sc_wallet_ref ref = { .agent_id = k->sc->agent_ids[i] };
	sc_rule r = { .daily_spend_limit = BIG_LIMIT - (sc_micros)(k->admin_turn & 2) };
	sc_rule out;
	int rc;

	if (k->admin_turn++ % 2 == 0 || st->rules == 0) {
		rc = sc_wallets_adjust(k->c, ref, 10 * BENCH_ESTIMATE, "top-up", NULL, NULL);
		if (rc != 0)
			snprintf(err, len, "wallets.adjust: %s: %s", sc_err_name(rc),
			         sc_last_error(k->c));
	} else {
		rc = sc_rules_update(k->c, ref.agent_id, k->sc->rule_ids[i],
		                     SC_RULE_SET_DAILY_SPEND_LIMIT, &r, &out);
		if (rc != 0)
			snprintf(err, len, "rules.update: %s: %s", sc_err_name(rc),
			         sc_last_error(k->c));
	}
	return rc == 0 ? 1 : -1;
}

static long sc_pipelined(struct sidecard_conn *k, const struct setup *st, uint64_t *rng, char *err,
                         size_t len)
{
	size_t i;
	int rc;

	if (k->reqs == NULL) {
		k->reqs = calloc(BENCH_PIPE_BATCH, sizeof(*k->reqs));
		k->outs = calloc(BENCH_PIPE_BATCH, sizeof(*k->outs));
		k->rcs = calloc(BENCH_PIPE_BATCH, sizeof(*k->rcs));
		if (k->reqs == NULL || k->outs == NULL || k->rcs == NULL) {
			snprintf(err, len, "out of memory");
			return -1;
		}
	}
	for (i = 0; i < BENCH_PIPE_BATCH; i++)
		fill_req(k, st, rng, &k->reqs[i]);
	if ((rc = sc_check_batch(k->c, k->reqs, BENCH_PIPE_BATCH, k->outs, k->rcs)) != 0) {
		snprintf(err, len, "check batch: %s: %s", sc_err_name(rc), sc_last_error(k->c));
		return -1;
	}
	for (i = 0; i < BENCH_PIPE_BATCH; i++)
		if (decided(&k->outs[i], k->rcs[i], k->c, err, len) < 0)
			return -1;
	return BENCH_PIPE_BATCH;
}

/* BENCH_PEEK_BATCH wallets of random agents through the shared mapping. */
static long sc_peek_batch(struct sidecard_conn *k, const struct setup *st, uint64_t *rng, char *err,
                          size_t len)
{
	sc_wallet_snapshot w;
	uint64_t id;
	size_t i;
	int rc;

	if (k->sc->peek == NULL) {
		snprintf(err, len, "peek: %s", k->sc->peek_err);
		return -1;
	}
	for (i = 0; i < BENCH_PEEK_BATCH; i++) {
		id = k->sc->agent_ids[bench_rand(rng) % st->agents];
		if ((rc = sc_peek_wallet(k->sc->peek, id, &w)) != 0) {
			snprintf(err, len, "peek agent %" PRIu64 ": %s%s%s", id, sc_err_name(rc),
			         rc == SC_EUNAVAILABLE ? ": " : "",
			         rc == SC_EUNAVAILABLE ? sc_peek_unavailable(k->sc->peek) : "");
			return -1;
		}
		/* the setup's balance is never charged below zero: a wrong record shows here */
		if (w.id != id || w.balance <= 0) {
			snprintf(err, len, "peek agent %" PRIu64 ": read agent %" PRIu64 " balance %" PRId64,
			         id, w.id, (int64_t)w.balance);
			return -1;
		}
	}
	return BENCH_PEEK_BATCH;
}

static long sc_op(void *conn, enum op_kind kind, uint64_t *rng, char *err, size_t len)
{
	struct sidecard_conn *k = conn;
	const struct setup *st = k->st;
	sc_check_req req;
	sc_decision d;
	sc_settlement s;
	int rc;

	switch (kind) {
	case OP_CHECK:
	case OP_PAIR:
		fill_req(k, st, rng, &req);
		if (decided(&d, sc_check(k->c, &req, &d), k->c, err, len) < 0)
			return -1;
		if (kind == OP_CHECK)
			return 1;
		rc = sc_report(k->c, d.transaction_id, SC_OUTCOME_SUCCESS, 0, 0, &s);
		if (rc != 0) {
			snprintf(err, len, "report: %s: %s", sc_err_name(rc), sc_last_error(k->c));
			return -1;
		}
		return 1;
	case OP_PIPELINED:
		return sc_pipelined(k, st, rng, err, len);
	case OP_ADMIN:
		return sc_admin(k, st, rng, err, len);
	case OP_PEEK:
		return sc_peek_batch(k, st, rng, err, len);
	}
	snprintf(err, len, "unknown operation");
	return -1;
}

static int sc_ledger(struct sys *s, int64_t *records, int64_t *syncs)
{
	struct sidecard *sc = s->priv;

	return sc_stat(sc->stats, "ledger_records_synced", records) == 0 &&
	               sc_stat(sc->stats, "ledger_syncs", syncs) == 0
	               ? 0
	               : -1;
}

static int sc_stop(struct sys *s)
{
	struct sidecard *sc = s->priv;
	char err[4400];
	int rc;

	sc_peek_close(sc->peek);
	sc_close(sc->stats);
	rc = bench_daemon_stop(&sc->bd, 0, err, sizeof(err));
	if (rc != 0)
		fprintf(stderr, "gate_bench: %s\n", err);
	free(sc->agent_ids);
	free(sc->rule_ids);
	free(sc->meta_value);
	free(sc);
	s->priv = NULL;
	return rc == 0 ? 0 : -1;
}

int sidecard_start(struct sys *s, const char *durability, const struct setup *st,
                   uint64_t holds, char *err, size_t len)
{
	struct sidecard *sc = calloc(1, sizeof(*sc));
	const char *extra[20];
	size_t n = 0, v;
	int rc;

	if (sc == NULL) {
		snprintf(err, len, "out of memory");
		return -1;
	}
	*s = (struct sys){ .name = "sidecard", .durability = durability, .setup = *st, .priv = sc,
		           .connect = sc_connect_, .op = sc_op, .disconnect = sc_disconnect,
		           .ledger = sc_ledger, .stop = sc_stop };
	sc->agent_ids = calloc(st->agents ? st->agents : 1, sizeof(uint64_t));
	sc->rule_ids = calloc(st->agents ? st->agents : 1, sizeof(uint64_t));
	v = meta_value_len(st->meta_bytes);
	sc->meta_value = calloc(v + 1, 1);
	if (sc->agent_ids == NULL || sc->rule_ids == NULL || sc->meta_value == NULL) {
		snprintf(err, len, "out of memory");
		free(sc->agent_ids);
		free(sc->rule_ids);
		free(sc->meta_value);
		free(sc);
		return -1;
	}
	memset(sc->meta_value, 'm', v);
	sc->meta = (sc_meta){ .key = "note", .value = sc->meta_value };
	snprintf(sc->caps[0], sizeof(sc->caps[0]), "%zu", st->agents + 16);
	snprintf(sc->caps[1], sizeof(sc->caps[1]), "%zu", st->agents * (st->rules + 1) + 16);
	snprintf(sc->caps[2], sizeof(sc->caps[2]), "%" PRIu64, holds);
	snprintf(sc->caps[3], sizeof(sc->caps[3]), "%s", durability);
	extra[n++] = "--durability";
	extra[n++] = sc->caps[3];
	extra[n++] = "--hold-ttl";
	extra[n++] = "3600";
	extra[n++] = "--log-level";
	extra[n++] = "warn";
	extra[n++] = "--agents";
	extra[n++] = sc->caps[0];
	extra[n++] = "--rules";
	extra[n++] = sc->caps[1];
	extra[n++] = "--holds";
	extra[n++] = sc->caps[2];
	/* every hold of the run is one org's, and agents are drawn at random: no quota */
	extra[n++] = "--max-holds-per-agent";
	extra[n++] = sc->caps[2];
	extra[n++] = "--max-holds-per-org";
	extra[n++] = sc->caps[2];
	snprintf(sc->caps[4], sizeof(sc->caps[4]), "%d", CHECKPOINT_RECORDS);
	extra[n++] = "--checkpoint-records";
	extra[n++] = sc->caps[4];
	extra[n] = NULL;
	if (bench_daemon_start(&sc->bd, extra, err, len) != 0) {
		free(sc->agent_ids);
		free(sc->rule_ids);
		free(sc->meta_value);
		free(sc);
		return -1;
	}
	s->pid = sc->bd.d.pid;
	if ((rc = sc_connect(sc->bd.d.socket, &sc->stats)) != 0) {
		snprintf(err, len, "connect: %s", sc_err_name(rc));
		sc_stop(s);
		return -1;
	}
	if (setup_agents(sc, st, err, len) != 0 || settle(sc, st, err, len) != 0) {
		sc_stop(s);
		return -1;
	}
	/* a mapping that cannot be opened fails the peek rows only, with this reason */
	rc = sc_peek_open_client(sc->stats, &sc->peek, sc->peek_err, sizeof(sc->peek_err));
	if (rc != 0 && sc->peek_err[0] == '\0')
		snprintf(sc->peek_err, sizeof(sc->peek_err), "%s: %s", sc_err_name(rc),
		         sc_last_error(sc->stats));
	return 0;
}
