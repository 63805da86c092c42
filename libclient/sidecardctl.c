/*
 * sidecardctl.c: the command-line client of sidecard, built on libsidecard:
 * the command table, the command handlers and main().
 *
 *     sidecardctl [--socket PATH] [--token TOKEN] [--json] VERB [SUBVERB] [--flag=value | --flag value]...
 *
 * The verbs follow Kredit's CLI (orgs, agents, rules, wallet, check, report,
 * pricing, score, transactions, tasks, fleet, stats), plus peek (a wallet read
 * from the shared state file, libsidecard's sc_peek_*), alerts (`alerts --follow`
 * subscribes and prints each alert pushed, one per line, until SIGINT or
 * SIGTERM, then exits 0) and tokens (readers' tokens; agents' come from
 * agents create and agents rotate-token). Flags and their values are parsed in
 * ctl_options.c; what a command answers is printed by ctl_output.c, for
 * humans or, with --json, as one JSON document.
 *
 * Exit status: 0 success (check: allowed), 1 check blocked or ledger
 * corrupt, 2 any error (usage, connection, daemon error), 3 permission
 * denied (permission_denied: the connection's role may not make the call,
 * or the daemon refused the token of its hello), so that a hook can tell a
 * misconfigured token from a daemon that is down.
 *
 * Roles: --token TOKEN (else $SIDECARD_TOKEN, which libsidecard reads)
 * is presented in the hello; an administrator by user or group needs none. `check` prints the
 * transaction id alone on stdout so that a hook can write
 * TXN=$(sidecardctl check ...).
 *
 * `demo` (ctl_demo.c) starts a daemon of its own in a temporary directory.
 *
 * `ledger verify` and `ledger export` do not talk to the daemon: they read
 * the ledger files of a state directory (sidecard/store/ledger_format.c) with
 * ledger_scan() and never modify them, so they are safe beside a running
 * daemon and on a copy taken from a dead host. Nor does `peek --segment
 * FILE`, which maps the state segment FILE read-only. `ledger repair` does
 * modify them (sidecard/store/ledger_repair.c), so it takes the state
 * directory's lock, the one the daemon holds for its life, and refuses to
 * run beside a daemon.
 *
 * DESIGN. Three tables drive everything: `options` (ctl_options.c: every
 * flag, its value kind and how it is parsed), `commands` (here: verb,
 * subverb, the flags it accepts and requires, its handler) and the output
 * field tables (ctl_output.c), which describe each object once for the
 * human detail view, the human table view and JSON. Flags are validated
 * against the command before it runs, so a handler only reads parsed values.
 *
 * Threads: one. Ownership: lists from libsidecard are freed by the handler
 * that asked for them; the connection is closed in main().
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctl.h"
#include "ledger.h"
#include "sidecard.h"

/*
 * A failed library call: "sidecardctl: <what>: <daemon message>"; exit 3
 * when the connection's role may not make it ("permission denied: " before
 * the message, which names the role needed), 2 otherwise.
 */
static int call_error(const struct ctx *x, int rc)
{
	const char *msg = sc_last_error(x->c);

	fprintf(stderr, "sidecardctl: %s: %s%s\n", x->what,
	        rc == SC_EDENIED && msg[0] ? "permission denied: " : "",
	        msg[0] ? msg : sc_strerror(rc));
	return rc == SC_EDENIED ? EXIT_DENIED : EXIT_ERROR;
}

/* ----- commands ----- */

/* Options that are fields of a wallet update. */
static const struct {
	enum opt opt;
	unsigned set;
	size_t off;
} wallet_opts[] = {
	{ O_BALANCE, SC_WALLET_SET_BALANCE, offsetof(sc_wallet_update, balance) },
	{ O_BUDGET, SC_WALLET_SET_BUDGET, offsetof(sc_wallet_update, budget) },
	{ O_MAX_PER_TXN, SC_WALLET_SET_MAX_PER_TXN, offsetof(sc_wallet_update, max_per_txn) },
	{ O_DAILY_SPEND_LIMIT, SC_WALLET_SET_DAILY_SPEND_LIMIT,
	  offsetof(sc_wallet_update, daily_spend_limit) },
	{ O_DEBT, SC_WALLET_SET_DEBT, offsetof(sc_wallet_update, debt) },
	{ O_LOW_BALANCE, SC_WALLET_SET_LOW_BALANCE, offsetof(sc_wallet_update, low_balance) },
};

static void wallet_update_from(const struct opts *o, sc_wallet_update *u)
{
	size_t i;

	memset(u, 0, sizeof(*u));
	for (i = 0; i < COUNT(wallet_opts); i++) {
		if (!(o->given & BIT(wallet_opts[i].opt)))
			continue;
		u->set |= wallet_opts[i].set;
		memcpy((char *)u + wallet_opts[i].off, &o->num[wallet_opts[i].opt], sizeof(sc_micros));
	}
	if (o->given & BIT(O_PERIOD)) {
		u->set |= SC_WALLET_SET_PERIOD;
		u->period = (enum sc_period)o->num[O_PERIOD];
	}
}

/* Options that are fields of a rule. */
static const struct {
	enum opt opt;
	unsigned set;
} rule_opts[] = {
	{ O_NAME, SC_RULE_SET_NAME },
	{ O_MATCH, SC_RULE_SET_MATCH },
	{ O_MAX_COST_PER_TXN, SC_RULE_SET_MAX_COST_PER_TXN },
	{ O_DAILY_SPEND_LIMIT, SC_RULE_SET_DAILY_SPEND_LIMIT },
	{ O_HOURLY_RATE_LIMIT, SC_RULE_SET_HOURLY_RATE_LIMIT },
};

static unsigned rule_from(const struct opts *o, sc_rule *r)
{
	unsigned set = 0;
	size_t i;

	memset(r, 0, sizeof(*r));
	for (i = 0; i < COUNT(rule_opts); i++)
		if (o->given & BIT(rule_opts[i].opt))
			set |= rule_opts[i].set;
	/* Lengths were checked when the flags were parsed. */
	if (set & SC_RULE_SET_NAME)
		snprintf(r->name, sizeof(r->name), "%s", o->str[O_NAME]);
	if (set & SC_RULE_SET_MATCH)
		snprintf(r->match, sizeof(r->match), "%s", o->str[O_MATCH]);
	r->max_cost_per_txn = o->num[O_MAX_COST_PER_TXN];
	r->daily_spend_limit = o->num[O_DAILY_SPEND_LIMIT];
	r->hourly_rate_limit = o->num[O_HOURLY_RATE_LIMIT];
	return set;
}

static int cmd_orgs_create(struct ctx *x, const struct opts *o)
{
	sc_org org;
	int rc = sc_orgs_create_tz(x->c, o->str[O_NAME], o->str[O_TIMEZONE], &org);

	if (rc != 0)
		return call_error(x, rc);
	ctl_show(x, ctl_org_out, &org);
	return 0;
}

static int cmd_orgs_update(struct ctx *x, const struct opts *o)
{
	sc_org org;
	int rc = sc_orgs_set_timezone(x->c, (uint64_t)o->num[O_ORG_ID], o->str[O_TIMEZONE], &org);

	if (rc != 0)
		return call_error(x, rc);
	ctl_show(x, ctl_org_out, &org);
	return 0;
}

static int cmd_orgs_list(struct ctx *x, const struct opts *o)
{
	sc_org *list;
	size_t n;
	int rc = sc_orgs_list(x->c, &list, &n);

	if (rc != 0)
		return call_error(x, rc);
	ctl_show_list(x, ctl_org_out, ctl_org_cols, list, n, sizeof(*list));
	sc_orgs_free(list);
	return 0;
}

static int cmd_agents_create(struct ctx *x, const struct opts *o)
{
	sc_wallet_update u;
	sc_agent a;
	int rc;

	wallet_update_from(o, &u);
	rc = sc_agents_create(x->c, o->str[O_ORG], o->str[O_NAME],
	                      (enum sc_priority)o->num[O_PRIORITY], u.set ? &u : NULL, o->rules,
	                      o->n_rules, &a);
	if (rc != 0)
		return call_error(x, rc);
	ctl_show(x, ctl_agent_created_out, &a);
	if (!x->json && a.token[0] != '\0')
		fprintf(stderr, "sidecardctl: %s: the agent's token is shown only now; keep it "
		        "(agents rotate-token replaces it)\n", x->what);
	return 0;
}

static int cmd_agents_rotate_token(struct ctx *x, const struct opts *o)
{
	struct ctl_rotation r = { .agent_id = (uint64_t)o->num[O_AGENT_ID] };
	int rc = sc_agents_rotate_token(x->c, r.agent_id, r.token);

	if (rc != 0)
		return call_error(x, rc);
	ctl_show(x, ctl_rotation_out, &r);
	if (!x->json)
		fprintf(stderr, "sidecardctl: %s: the new token is shown only now; keep it (the old "
		        "one no longer works)\n", x->what);
	return 0;
}

static int cmd_tokens_create(struct ctx *x, const struct opts *o)
{
	sc_access_token t;
	int rc = sc_tokens_create(x->c, o->str[O_ROLE], o->str[O_NAME], &t);

	if (rc != 0)
		return call_error(x, rc);
	ctl_show(x, ctl_access_token_out, &t);
	if (!x->json)
		fprintf(stderr, "sidecardctl: %s: the token is shown only now; keep it\n", x->what);
	return 0;
}

static int cmd_tokens_list(struct ctx *x, const struct opts *o)
{
	sc_access_token *list;
	size_t n;
	int rc = sc_tokens_list(x->c, &list, &n);

	if (rc != 0)
		return call_error(x, rc);
	ctl_show_list(x, ctl_access_token_cols, ctl_access_token_cols, list, n, sizeof(*list));
	sc_access_tokens_free(list);
	return 0;
}

/* The id of an org given by name or decimal id. */
static int org_id_of(struct ctx *x, const char *org, uint64_t *id)
{
	sc_org *list;
	size_t n, i;
	int rc;

	if (ctl_parse_uint(org, id) == 0 && *id > 0)
		return 0;
	if ((rc = sc_orgs_list(x->c, &list, &n)) != 0)
		return call_error(x, rc);
	for (i = 0; i < n && strcmp(list[i].name, org) != 0; i++)
		;
	if (i < n)
		*id = list[i].id;
	sc_orgs_free(list);
	if (i == n) {
		fprintf(stderr, "sidecardctl: %s: no org named '%s'\n", x->what, org);
		return EXIT_ERROR;
	}
	return 0;
}

static int cmd_agents_list(struct ctx *x, const struct opts *o)
{
	uint64_t org_id = 0;
	sc_agent *list;
	size_t n;
	int rc;

	if ((o->given & BIT(O_ORG)) && (rc = org_id_of(x, o->str[O_ORG], &org_id)) != 0)
		return rc;
	if ((rc = sc_agents_list(x->c, org_id, &list, &n)) != 0)
		return call_error(x, rc);
	ctl_show_list(x, ctl_agent_out, ctl_agent_cols, list, n, sizeof(*list));
	sc_agents_free(list);
	return 0;
}

static int cmd_agents_get(struct ctx *x, const struct opts *o)
{
	sc_agent a;
	int rc = sc_agents_get(x->c, (uint64_t)o->num[O_AGENT_ID], &a);

	if (rc != 0)
		return call_error(x, rc);
	ctl_show(x, ctl_agent_out, &a);
	return 0;
}

/* agents update, freeze and unfreeze: freeze/unfreeze imply the status. */
static int cmd_agents_update(struct ctx *x, const struct opts *o)
{
	int status = (o->given & BIT(O_STATUS)) ? (int)o->num[O_STATUS] : -1;
	int priority = (o->given & BIT(O_PRIORITY)) ? (int)o->num[O_PRIORITY] : -1;
	sc_agent a;
	int rc;

	if (strcmp(x->cmd->sub, "freeze") == 0)
		status = SC_STATUS_FROZEN;
	else if (strcmp(x->cmd->sub, "unfreeze") == 0)
		status = SC_STATUS_ACTIVE;
	rc = sc_agents_update(x->c, (uint64_t)o->num[O_AGENT_ID], o->str[O_NAME], priority, status,
	                      &a);
	if (rc != 0)
		return call_error(x, rc);
	ctl_show(x, ctl_agent_out, &a);
	return 0;
}

/* {deleted: true} / {removed: true} answers. */
static void show_done(const struct ctx *x, const char *key, const char *text, uint64_t id)
{
	if (x->json)
		printf("{\"%s\": true}\n", key);
	else
		printf("%s %" PRIu64 "\n", text, id);
}

static int cmd_agents_delete(struct ctx *x, const struct opts *o)
{
	int rc = sc_agents_delete(x->c, (uint64_t)o->num[O_AGENT_ID]);

	if (rc != 0)
		return call_error(x, rc);
	show_done(x, "deleted", "deleted agent", (uint64_t)o->num[O_AGENT_ID]);
	return 0;
}

static int cmd_tokens_revoke(struct ctx *x, const struct opts *o)
{
	int rc = sc_tokens_revoke(x->c, (uint64_t)o->num[O_TOKEN_ID]);

	if (rc != 0)
		return call_error(x, rc);
	show_done(x, "revoked", "revoked token", (uint64_t)o->num[O_TOKEN_ID]);
	return 0;
}

static int cmd_rules_add(struct ctx *x, const struct opts *o)
{
	sc_rule r, out;
	int rc;

	rule_from(o, &r);
	if ((rc = sc_rules_add(x->c, (uint64_t)o->num[O_AGENT_ID], &r, &out)) != 0)
		return call_error(x, rc);
	ctl_show(x, ctl_rule_out, &out);
	return 0;
}

static int cmd_rules_update(struct ctx *x, const struct opts *o)
{
	sc_rule r, out;
	unsigned set = rule_from(o, &r);
	int rc = sc_rules_update(x->c, (uint64_t)o->num[O_AGENT_ID], (uint64_t)o->num[O_RULE_ID],
	                         set, &r, &out);

	if (rc != 0)
		return call_error(x, rc);
	ctl_show(x, ctl_rule_out, &out);
	return 0;
}

static int cmd_rules_list(struct ctx *x, const struct opts *o)
{
	sc_rule *list;
	size_t n;
	int rc = sc_rules_list(x->c, (uint64_t)o->num[O_AGENT_ID], &list, &n);

	if (rc != 0)
		return call_error(x, rc);
	ctl_show_list(x, ctl_rule_out, ctl_rule_out, list, n, sizeof(*list));
	sc_rules_free(list);
	return 0;
}

static int cmd_rules_remove(struct ctx *x, const struct opts *o)
{
	int rc = sc_rules_remove(x->c, (uint64_t)o->num[O_AGENT_ID], (uint64_t)o->num[O_RULE_ID]);

	if (rc != 0)
		return call_error(x, rc);
	show_done(x, "removed", "removed rule", (uint64_t)o->num[O_RULE_ID]);
	return 0;
}

/* wallet and wallet update: an agent's wallet or an org's, never both. */
static int cmd_wallet(struct ctx *x, const struct opts *o)
{
	int agent = (o->given & BIT(O_AGENT_ID)) != 0, org = (o->given & BIT(O_ORG_ID)) != 0;
	sc_wallet_update u;
	sc_wallet w;
	int rc;

	if (agent == org)
		return ctl_usage_error(x, "give exactly one of --agent-id and --org-id");
	wallet_update_from(o, &u);
	if (x->cmd->sub == NULL)
		rc = agent ? sc_wallets_get(x->c, (uint64_t)o->num[O_AGENT_ID], &w)
		           : sc_org_wallet_get(x->c, (uint64_t)o->num[O_ORG_ID], &w);
	else
		rc = agent ? sc_wallets_update(x->c, (uint64_t)o->num[O_AGENT_ID], &u, &w)
		           : sc_org_wallet_update(x->c, (uint64_t)o->num[O_ORG_ID], &u, &w);
	if (rc != 0)
		return call_error(x, rc);
	ctl_show(x, ctl_wallet_out, &w);
	return 0;
}

/* The wallet named by a pair of flags, an agent's or an org's: exactly one given. */
static int wallet_ref_of(const struct ctx *x, const struct opts *o, enum opt agent, enum opt org,
                         const char *flags, sc_wallet_ref *ref)
{
	int has_agent = (o->given & BIT(agent)) != 0, has_org = (o->given & BIT(org)) != 0;

	if (has_agent == has_org)
		return ctl_usage_error(x, "give exactly one of %s", flags);
	ref->agent_id = has_agent ? (uint64_t)o->num[agent] : 0;
	ref->org_id = has_org ? (uint64_t)o->num[org] : 0;
	return 0;
}

static int cmd_wallet_transfer(struct ctx *x, const struct opts *o)
{
	sc_wallet_ref from, to;
	struct ctl_transfer t;
	int rc;

	if ((rc = wallet_ref_of(x, o, O_FROM_AGENT_ID, O_FROM_ORG_ID,
	                        "--from-agent-id and --from-org-id", &from)) != 0 ||
	    (rc = wallet_ref_of(x, o, O_TO_AGENT_ID, O_TO_ORG_ID, "--to-agent-id and --to-org-id",
	                        &to)) != 0)
		return rc;
	t.amount = o->num[O_AMOUNT];
	rc = sc_wallets_transfer(x->c, from, to, t.amount, o->str[O_REASON], &t.from, &t.to,
	                         t.transactions);
	if (rc != 0)
		return call_error(x, rc);
	ctl_show(x, ctl_transfer_out, &t);
	return 0;
}

static int cmd_spend(struct ctx *x, const struct opts *o)
{
	sc_wallet_ref w;
	sc_spend s;
	int rc;

	if ((rc = wallet_ref_of(x, o, O_AGENT_ID, O_ORG_ID, "--agent-id and --org-id", &w)) != 0)
		return rc;
	if ((rc = sc_spend_get(x->c, w, &s)) != 0)
		return call_error(x, rc);
	ctl_show(x, ctl_spend_out, &s);
	return 0;
}

static int cmd_wallet_carve(struct ctx *x, const struct opts *o)
{
	struct ctl_carve v = { .transaction_id = 0 };
	uint64_t agent = (uint64_t)o->num[O_AGENT_ID];
	int rc = strcmp(x->cmd->sub, "carve") == 0
	                 ? sc_wallets_carve(x->c, agent, o->num[O_AMOUNT], o->str[O_REASON], &v.agent,
	                                    &v.org, &v.transaction_id)
	                 : sc_wallets_release(x->c, agent, &v.agent, &v.org);

	if (rc != 0)
		return call_error(x, rc);
	ctl_show(x, ctl_carve_out, &v);
	return 0;
}

static int cmd_wallet_adjust(struct ctx *x, const struct opts *o)
{
	struct ctl_adjustment a;
	sc_wallet_ref w;
	int rc;

	if ((rc = wallet_ref_of(x, o, O_AGENT_ID, O_ORG_ID, "--agent-id and --org-id", &w)) != 0)
		return rc;
	rc = sc_wallets_adjust(x->c, w, o->num[O_AMOUNT], o->str[O_REASON], &a.wallet,
	                       &a.transaction_id);
	if (rc != 0)
		return call_error(x, rc);
	ctl_show(x, ctl_adjustment_out, &a);
	return 0;
}

static int cmd_check(struct ctx *x, const struct opts *o)
{
	sc_check_req req = {
		.agent_id = (uint64_t)o->num[O_AGENT_ID],
		.action = o->str[O_ACTION],
		.estimated_cost = o->num[O_ESTIMATED_COST],
		.type = o->str[O_TYPE],
		.idempotency_key = o->str[O_IDEMPOTENCY_KEY],
		.task_id = o->str[O_TASK_ID],
	};
	sc_decision d;
	unsigned i;
	int rc = sc_check(x->c, &req, &d);

	if (rc != 0)
		return call_error(x, rc);
	if (x->json) {
		ctl_show(x, ctl_decision_out, &d);
	} else if (d.allowed) {
		printf("%" PRIu64 "\n", d.transaction_id);
		for (i = 0; i < d.n_warnings; i++)
			fprintf(stderr, "warning: %s\n", d.warnings[i]);
	}
	if (!d.allowed) {
		fprintf(stderr, "blocked: %s\n", d.block_reason);
		return EXIT_BLOCKED;
	}
	return 0;
}

#define TOKEN_FLAGS (BIT(O_INPUT_TOKENS) | BIT(O_OUTPUT_TOKENS) | BIT(O_CACHED_INPUT_TOKENS))

/* report with --actual-cost, or priced by the daemon from --model and token counts. */
static int cmd_report(struct ctx *x, const struct opts *o)
{
	int has_actual = (o->given & BIT(O_ACTUAL_COST)) != 0;
	char charged[32], balance[32], debt[32];
	sc_tokens t = { .model = o->str[O_MODEL],
		        .input_tokens = (uint64_t)o->num[O_INPUT_TOKENS],
		        .output_tokens = (uint64_t)o->num[O_OUTPUT_TOKENS],
		        .cached_input_tokens = (uint64_t)o->num[O_CACHED_INPUT_TOKENS] };
	uint64_t id = (uint64_t)o->num[O_TRANSACTION_ID];
	enum sc_outcome outcome = (enum sc_outcome)o->num[O_OUTCOME];
	sc_settlement s;
	int rc;

	if (t.model != NULL && has_actual)
		return ctl_usage_error(x, "give either --model with token counts or --actual-cost");
	if (t.model == NULL && (o->given & TOKEN_FLAGS))
		return ctl_usage_error(x, "token counts need --model");
	rc = t.model != NULL ? sc_report_tokens(x->c, id, outcome, &t, &s)
	                     : sc_report(x->c, id, outcome, has_actual, o->num[O_ACTUAL_COST], &s);
	if (rc != 0)
		return call_error(x, rc);
	if (x->json) {
		ctl_show(x, ctl_settlement_out, &s);
		return 0;
	}
	ctl_usd(s.charged, charged, sizeof(charged));
	ctl_usd(s.balance, balance, sizeof(balance));
	ctl_usd(s.debt, debt, sizeof(debt));
	printf("transaction %" PRIu64 " settled%s: %s, charged %s; balance %s, debt %s\n",
	       s.transaction_id, s.replayed ? " (replayed)" : "", sc_outcome_name(s.outcome), charged,
	       balance, debt);
	if (s.rate_version != 0)
		printf("priced at %s rate version %" PRIu32 "\n", s.model, s.rate_version);
	return 0;
}

static int cmd_pricing_set(struct ctx *x, const struct opts *o)
{
	int has_cached = (o->given & BIT(O_CACHED_INPUT)) != 0;
	int has_from = (o->given & BIT(O_EFFECTIVE_FROM)) != 0;
	sc_price p;
	int rc = sc_pricing_set(x->c, o->str[O_MODEL], o->num[O_INPUT], o->num[O_OUTPUT],
	                        has_cached ? &o->num[O_CACHED_INPUT] : NULL,
	                        has_from ? &o->num[O_EFFECTIVE_FROM] : NULL, &p);

	if (rc != 0)
		return call_error(x, rc);
	ctl_show(x, ctl_price_out, &p);
	return 0;
}

static int cmd_pricing_list(struct ctx *x, const struct opts *o)
{
	sc_price *list;
	size_t n;
	int rc = sc_pricing_list(x->c, o->str[O_MODEL], &list, &n);

	if (rc != 0)
		return call_error(x, rc);
	ctl_show_list(x, ctl_price_out, ctl_price_out, list, n, sizeof(*list));
	sc_prices_free(list);
	return 0;
}

static int cmd_pricing_get(struct ctx *x, const struct opts *o)
{
	sc_price p;
	int rc = sc_pricing_get(x->c, o->str[O_MODEL],
	                        (o->given & BIT(O_AT)) ? &o->num[O_AT] : NULL, &p);

	if (rc != 0)
		return call_error(x, rc);
	ctl_show(x, ctl_price_out, &p);
	return 0;
}

/* The filter flags of transactions, transactions summary and agents top. */
static void txn_filter_from(const struct opts *o, sc_txn_filter *f)
{
	sc_txn_filter_init(f);
	f->agent_id = (uint64_t)o->num[O_AGENT_ID];
	f->org_id = (uint64_t)o->num[O_ORG_ID];
	if (o->given & BIT(O_TXN_STATUS))
		f->status = (int)o->num[O_TXN_STATUS];
	if (o->given & BIT(O_RISK_LEVEL))
		f->risk = (int)o->num[O_RISK_LEVEL];
	f->since = o->num[O_SINCE];
	f->until = o->num[O_UNTIL];
	f->before = (uint64_t)o->num[O_BEFORE];
	f->limit = (unsigned)o->num[O_LIMIT];
}

/* --limit within 1 to max, when given. */
static int check_limit(const struct ctx *x, const struct opts *o, int64_t max)
{
	if ((o->given & BIT(O_LIMIT)) && (o->num[O_LIMIT] < 1 || o->num[O_LIMIT] > max))
		return ctl_usage_error(x, "--limit: must be 1 to %" PRId64, max);
	return 0;
}

static int cmd_transactions(struct ctx *x, const struct opts *o)
{
	sc_transaction *list;
	sc_txn_filter f;
	size_t n;
	int rc;

	if ((rc = check_limit(x, o, 1000)) != 0)
		return rc;
	txn_filter_from(o, &f);
	if ((rc = sc_transactions_query(x->c, &f, &list, &n)) != 0)
		return call_error(x, rc);
	ctl_show_list(x, ctl_transaction_out, ctl_transaction_cols, list, n, sizeof(*list));
	sc_transactions_free(list);
	return 0;
}

static int cmd_transactions_summary(struct ctx *x, const struct opts *o)
{
	sc_txn_summary s;
	sc_txn_filter f;
	int rc;

	txn_filter_from(o, &f);
	if ((rc = sc_transactions_summary(x->c, &f, &s)) != 0)
		return call_error(x, rc);
	ctl_show(x, ctl_txn_summary_out, &s);
	return 0;
}

static int cmd_agents_top(struct ctx *x, const struct opts *o)
{
	sc_top_agent *list;
	size_t n;
	int rc;

	if ((rc = check_limit(x, o, 100)) != 0)
		return rc;
	rc = sc_agents_top(x->c, (uint64_t)o->num[O_ORG_ID], o->num[O_SINCE], o->num[O_UNTIL],
	                   (unsigned)o->num[O_LIMIT], &list, &n);
	if (rc != 0)
		return call_error(x, rc);
	ctl_show_list(x, ctl_top_agent_out, ctl_top_agent_out, list, n, sizeof(*list));
	sc_top_agents_free(list);
	return 0;
}

static int cmd_tasks_usage(struct ctx *x, const struct opts *o)
{
	sc_task_usage u;
	int rc = sc_tasks_usage_org(x->c, (o->given & BIT(O_ORG_ID)) ? (uint64_t)o->num[O_ORG_ID] : 0,
	                            o->str[O_TASK_ID], &u);

	if (rc != 0)
		return call_error(x, rc);
	ctl_show(x, ctl_task_usage_out, &u);
	return 0;
}

static int cmd_fleet(struct ctx *x, const struct opts *o)
{
	sc_fleet fl;
	int rc = sc_fleet_get(x->c, &fl);

	if (rc != 0)
		return call_error(x, rc);
	ctl_show(x, ctl_fleet_out, &fl);
	return 0;
}

static int cmd_score(struct ctx *x, const struct opts *o)
{
	sc_score s;
	int rc = sc_score_get(x->c, (uint64_t)o->num[O_AGENT_ID], &s);

	if (rc != 0)
		return call_error(x, rc);
	ctl_show(x, ctl_score_out, &s);
	return 0;
}

static int cmd_agents_events(struct ctx *x, const struct opts *o)
{
	sc_event *list;
	size_t n;
	int rc;

	if ((rc = check_limit(x, o, 1000)) != 0)
		return rc;
	rc = sc_agents_events(x->c, (uint64_t)o->num[O_AGENT_ID], (unsigned)o->num[O_LIMIT], &list,
	                      &n);
	if (rc != 0)
		return call_error(x, rc);
	ctl_show_list(x, ctl_event_out, ctl_event_cols, list, n, sizeof(*list));
	sc_events_free(list);
	return 0;
}

static void alert_filter_from(const struct opts *o, sc_alert_filter *f)
{
	sc_alert_filter_init(f);
	f->agent_id = (uint64_t)o->num[O_AGENT_ID];
	f->org_id = (uint64_t)o->num[O_ORG_ID];
	if (o->given & BIT(O_ALERT_KIND))
		f->kind = (int)o->num[O_ALERT_KIND];
	if (o->given & BIT(O_SEVERITY))
		f->severity = (int)o->num[O_SEVERITY];
	f->since = o->num[O_SINCE];
	f->before = (uint64_t)o->num[O_BEFORE];
	f->limit = (unsigned)o->num[O_LIMIT];
}

/* --follow applies the filter itself: the daemon pushes every alert. */
static int alert_matches(const sc_alert_filter *f, const sc_alert *a)
{
	return (!f->agent_id || a->agent_id == f->agent_id) &&
	       (!f->org_id || a->org_id == f->org_id) && (f->kind < 0 || (int)a->kind == f->kind) &&
	       (f->severity < 0 || (int)a->severity == f->severity);
}

static volatile sig_atomic_t follow_stop;

static void on_follow_signal(int sig)
{
	(void)sig;
	follow_stop = 1;
}

/* Subscribes and prints each alert as it comes, until SIGINT or SIGTERM. */
static int follow_alerts(struct ctx *x, const sc_alert_filter *f)
{
	struct sigaction sa;
	sc_alert a;
	int rc;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_follow_signal; /* no SA_RESTART: the wait returns -EINTR */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	if ((rc = sc_alerts_subscribe(x->c, NULL)) != 0)
		return call_error(x, rc);
	while (!follow_stop) {
		/* A bounded wait, so a signal just before it cannot leave it blocked. */
		rc = sc_alert_next(x->c, 1000, &a);
		if (rc == -EINTR || rc == -ETIMEDOUT)
			continue;
		if (rc != 0)
			return call_error(x, rc);
		if (!alert_matches(f, &a))
			continue;
		ctl_show_line(x, x->json ? ctl_alert_out : ctl_alert_cols, &a);
		if (fflush(stdout) != 0)
			return EXIT_ERROR;
	}
	return 0;
}

static int cmd_alerts(struct ctx *x, const struct opts *o)
{
	sc_alert_filter f;
	sc_alert *list;
	size_t n;
	int rc;

	if ((rc = check_limit(x, o, 1000)) != 0)
		return rc;
	if ((o->given & BIT(O_FOLLOW)) && (o->given & (BIT(O_LIMIT) | BIT(O_BEFORE) | BIT(O_SINCE))))
		return ctl_usage_error(x, "--follow prints new alerts: --limit, --before and --since "
		                          "do not apply");
	alert_filter_from(o, &f);
	if (o->given & BIT(O_FOLLOW))
		return follow_alerts(x, &f);
	if ((rc = sc_alerts_list(x->c, &f, &list, &n)) != 0)
		return call_error(x, rc);
	ctl_show_list(x, ctl_alert_out, ctl_alert_cols, list, n, sizeof(*list));
	sc_alerts_free(list);
	return 0;
}

/* The counters of the stats method, in PROTOCOL.md's order. */
static const char *const stat_names[] = {
	"uptime_s",         "orgs",              "agents",          "rules",
	"holds_open",       "checks",            "allowed",         "blocked",
	"reports",          "expired",           "topups",          "anomalies",
	"risk_blocked",     "connections_open",  "connections_total", "requests",
	"protocol_errors",  "capacity_orgs",     "capacity_agents",   "capacity_rules",
	"capacity_holds",   "capacity_history",  "capacity_events",   "capacity_tasks",
	"ledger_last_seq",  "ledger_durable_seq", "ledger_syncs",     "ledger_records_synced",
	"ledger_failed",    "checkpoint_seq",    "capacity_alerts",   "alerts_dropped",
	"rule_texts",       "capacity_rule_texts", "ledger_buffer_bytes", "checkpoint_failures",
};

static int cmd_stats(struct ctx *x, const struct opts *o)
{
	int64_t v[COUNT(stat_names)];
	int found[COUNT(stat_names)];
	size_t i, n = 0;
	int rc;

	for (i = 0; i < COUNT(stat_names); i++) {
		rc = sc_stat(x->c, stat_names[i], &v[i]);
		if (rc != 0 && rc != SC_ENOTFOUND)
			return call_error(x, rc);
		found[i] = rc == 0;
	}
	if (x->json)
		putchar('{');
	for (i = 0; i < COUNT(stat_names); i++) {
		if (!found[i])
			continue;
		if (x->json) {
			printf("%s\"%s\": %" PRId64, n++ ? ", " : "", stat_names[i], v[i]);
		} else {
			printf("%-22s %" PRId64 "\n", stat_names[i], v[i]);
		}
	}
	if (x->json)
		puts("}");
	return 0;
}

/* ----- peek: a wallet read from the daemon's shared state file ----- */

/*
 * `peek AGENT_ID` (or --agent-id, or --org-id for an org's wallet): maps
 * the state segment the daemon names in its stats, or the FILE of
 * --segment without asking the daemon, and reads the wallet from it.
 */
static int cmd_peek(struct ctx *x, const struct opts *o)
{
	int agent = (o->given & BIT(O_AGENT_ID)) != 0;
	char err[PATH_MAX + 256];
	sc_wallet_snapshot w;
	sc_peek *p;
	int rc;

	if (agent == ((o->given & BIT(O_ORG_ID)) != 0))
		return ctl_usage_error(x, "give an agent id (peek AGENT_ID) or --org-id");
	if (o->given & BIT(O_SEGMENT)) {
		rc = sc_peek_open(o->str[O_SEGMENT], &p, err, sizeof(err));
	} else {
		rc = sc_peek_open_client(x->c, &p, err, sizeof(err));
	}
	if (rc == SC_EDENIED)
		return call_error(x, rc);
	if (rc != 0) {
		fprintf(stderr, "sidecardctl: %s: %s: %s\n", x->what, sc_err_name(rc), err);
		return EXIT_ERROR;
	}
	rc = agent ? sc_peek_wallet(p, (uint64_t)o->num[O_AGENT_ID], &w)
	           : sc_peek_org_wallet(p, (uint64_t)o->num[O_ORG_ID], &w);
	if (rc == 0)
		ctl_show(x, ctl_snapshot_out, &w);
	else if (rc == SC_ENOTFOUND)
		fprintf(stderr, "sidecardctl: %s: no %s %" PRId64 "\n", x->what, agent ? "agent" : "org",
		        agent ? o->num[O_AGENT_ID] : o->num[O_ORG_ID]);
	else if (rc == SC_EUNAVAILABLE)
		fprintf(stderr, "sidecardctl: %s: %s\n", x->what, sc_peek_unavailable(p));
	else
		fprintf(stderr, "sidecardctl: %s: %s\n", x->what, sc_strerror(rc));
	sc_peek_close(p);
	return rc == 0 ? 0 : EXIT_ERROR;
}

/* ----- ledger: offline, on the files of a state directory ----- */

#define EXIT_CORRUPT 1

/* The daemon's default --state-dir, by the same rule as sidecard/config.c. */
static void default_state_dir(char *buf, size_t len)
{
	const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");

	if (geteuid() == 0)
		snprintf(buf, len, "/var/lib/sidecard");
	else if (xdg && *xdg)
		snprintf(buf, len, "%s/sidecard", xdg);
	else if (home && *home)
		snprintf(buf, len, "%s/.local/state/sidecard", home);
	else
		snprintf(buf, len, "/tmp/sidecard-%u/state", (unsigned)geteuid());
}

/*
 * DIR/ledger of --state-dir or of the default state directory. A missing
 * ledger directory is an empty ledger, but a missing state directory is
 * more likely a typing mistake than a daemon that never ran: an error.
 */
static int ledger_dir(const struct ctx *x, const struct opts *o, char *buf, size_t len)
{
	char state[PATH_MAX - sizeof("/ledger")];
	struct stat sb;

	if (o->given & BIT(O_STATE_DIR))
		snprintf(state, sizeof(state), "%s", o->str[O_STATE_DIR]);
	else
		default_state_dir(state, sizeof(state));
	if (stat(state, &sb) != 0) {
		fprintf(stderr, "sidecardctl: %s: %s: %s\n", x->what, state, strerror(errno));
		return EXIT_ERROR;
	}
	if (!S_ISDIR(sb.st_mode)) {
		fprintf(stderr, "sidecardctl: %s: %s: not a directory\n", x->what, state);
		return EXIT_ERROR;
	}
	snprintf(buf, len, "%s/ledger", state);
	return 0;
}

static int visit_count(void *arg, const struct ledger_record *r)
{
	(void)arg;
	(void)r;
	return 0;
}

static int visit_export(void *arg, const struct ledger_record *r)
{
	ledger_record_json(arg, r);
	return 0;
}

/*
 * A scan that failed: corruption (SC_EINVAL) is exit 1, anything else 2.
 * Damage to durable records comes with the choice the operator has.
 */
static int scan_error(const struct ctx *x, int rc, const char *err,
                      const struct ledger_scan_result *res, const char *dir)
{
	fprintf(stderr, "sidecardctl: %s: %s\n", x->what, err[0] ? err : sc_strerror(rc));
	if (rc == SC_EINVAL && res->damaged)
		fprintf(stderr,
		        "damage, not a torn tail: record %" PRIu64 " at offset %" PRIu64 " of %s was "
		        "durable. The daemon refuses to start. Put back the ledger from a backup, or "
		        "run `sidecardctl ledger repair --state-dir %.*s --truncate-at-damage` to move "
		        "it and everything after it to %s/%s\n",
		        res->damage_seq, res->damage_offset, res->damage_file,
		        (int)(strlen(dir) - sizeof("/ledger") + 1), dir, dir, LEDGER_QUARANTINE);
	return rc == SC_EINVAL ? EXIT_CORRUPT : EXIT_ERROR;
}

static void torn_warning(FILE *f, const struct ledger_scan_result *res)
{
	fprintf(f,
	        "warning: %s: torn tail (the remains of an unfinished write) at offset %" PRIu64
	        ": the daemon will remove it at its next start\n",
	        res->tail_file, res->tail_offset);
}

static int cmd_ledger_verify(struct ctx *x, const struct opts *o)
{
	struct ledger_scan_result res;
	char dir[PATH_MAX], err[4352];
	unsigned recoveries;
	int rc;

	if ((rc = ledger_dir(x, o, dir, sizeof(dir))) != 0)
		return rc;
	rc = ledger_scan(dir, 0, 0, visit_count, NULL, &res, err, sizeof(err));
	/* what repairs took out of this ledger, oldest first, and how often recovery did */
	ledger_repairs_print(dir, stdout, "repaired: ", &recoveries);
	if (recoveries)
		printf("quarantine: %u torn tail(s) removed by the daemon's recovery, noted in "
		       "%s/%s/%s\n", recoveries, dir, LEDGER_QUARANTINE, LEDGER_REPAIRS_LOG);
	if (rc != 0)
		return scan_error(x, rc, err, &res, dir);
	/* The warning is part of the verdict, so it goes to stdout with it. */
	if (res.torn)
		torn_warning(stdout, &res);
	if (res.records == 0)
		printf("ledger %s: 0 records, in %u segments: ok\n", dir, res.segments);
	else
		printf("ledger %s: %" PRIu64 " records, sequence %" PRIu64 " to %" PRIu64
		       ", in %u segments: ok\n",
		       dir, res.records, res.first_seq, res.last_seq, res.segments);
	return 0;
}

/*
 * Offline, under the state directory's lock: a running daemon holds it for
 * its life, so the repair never races one, and no daemon starts while it
 * runs.
 */
static int cmd_ledger_repair(struct ctx *x, const struct opts *o)
{
	char dir[PATH_MAX], state[PATH_MAX], path[PATH_MAX + 16], report[16384], err[8192];
	char holder[32] = "";
	int rc, fd;
	ssize_t n;

	if ((rc = ledger_dir(x, o, dir, sizeof(dir))) != 0)
		return rc;
	snprintf(state, sizeof(state), "%.*s", (int)(strlen(dir) - sizeof("/ledger") + 1), dir);
	snprintf(path, sizeof(path), "%s/sidecard.lock", state);
	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0) {
		fprintf(stderr, "sidecardctl: %s: %s: %s\n", x->what, path, strerror(errno));
		return EXIT_ERROR;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		if ((n = pread(fd, holder, sizeof(holder) - 1, 0)) > 0)
			holder[strcspn(holder, "\n")] = '\0';
		fprintf(stderr, "sidecardctl: %s: a daemon (pid %s) holds %s: stop it first (the "
		        "repair runs offline)\n", x->what, holder[0] ? holder : "unknown", state);
		close(fd);
		return EXIT_ERROR;
	}
	snprintf(path, sizeof(path), "%s/checkpoints", state);
	rc = ledger_repair_truncate(dir, path, report, sizeof(report), err, sizeof(err));
	close(fd);
	/* what was moved is the log of the choice: on stderr, beside the repairs log */
	fputs(report, stderr);
	if (rc != 0) {
		fprintf(stderr, "sidecardctl: %s: %s\n", x->what, err[0] ? err : sc_strerror(rc));
		return rc == SC_EINVAL ? EXIT_CORRUPT : EXIT_ERROR;
	}
	return 0;
}

static int cmd_ledger_export(struct ctx *x, const struct opts *o)
{
	uint64_t from = (o->given & BIT(O_FROM)) ? (uint64_t)o->num[O_FROM] : 0;
	struct ledger_scan_result res;
	char dir[PATH_MAX], err[4352];
	int rc;

	if ((rc = ledger_dir(x, o, dir, sizeof(dir))) != 0)
		return rc;
	rc = ledger_scan(dir, from, 0, visit_export, stdout, &res, err, sizeof(err));
	if (fflush(stdout) != 0) {
		fprintf(stderr, "sidecardctl: %s: writing the output failed\n", x->what);
		return EXIT_ERROR;
	}
	if (rc != 0)
		return scan_error(x, rc, err, &res, dir);
	/* stdout is the JSON stream: the warning goes beside it. */
	if (res.torn)
		torn_warning(stderr, &res);
	return 0;
}

#define WALLET_FLAGS                                                                   \
	(BIT(O_BALANCE) | BIT(O_BUDGET) | BIT(O_MAX_PER_TXN) | BIT(O_DAILY_SPEND_LIMIT) |  \
	 BIT(O_LOW_BALANCE))
#define RULE_FLAGS                                                                     \
	(BIT(O_NAME) | BIT(O_MATCH) | BIT(O_MAX_COST_PER_TXN) | BIT(O_DAILY_SPEND_LIMIT) | \
	 BIT(O_HOURLY_RATE_LIMIT))
/* created_at in [--since, --until) */
#define WINDOW_FLAGS (BIT(O_SINCE) | BIT(O_UNTIL))
#define TXN_FILTER_FLAGS (BIT(O_AGENT_ID) | BIT(O_ORG_ID) | WINDOW_FLAGS)

static const struct command commands[] = {
	{ "orgs", "create", cmd_orgs_create, BIT(O_NAME) | BIT(O_TIMEZONE), BIT(O_NAME),
	  "create an org; --timezone (e.g. Europe/Paris, default UTC) sets where its days, weeks "
	  "and months begin" },
	{ "orgs", "update", cmd_orgs_update, BIT(O_ORG_ID) | BIT(O_TIMEZONE),
	  BIT(O_ORG_ID) | BIT(O_TIMEZONE), "change an org's time zone" },
	{ "orgs", "list", cmd_orgs_list, 0, 0, "list orgs" },
	{ "agents", "create", cmd_agents_create,
	  BIT(O_ORG) | BIT(O_NAME) | BIT(O_PRIORITY) | WALLET_FLAGS | BIT(O_RULE),
	  BIT(O_ORG) | BIT(O_NAME),
	  "create an agent with its wallet and rules (--rule repeats); prints its token, shown "
	  "once" },
	{ "agents", "list", cmd_agents_list, BIT(O_ORG), 0, "list agents, of one org or all" },
	{ "agents", "get", cmd_agents_get, BIT(O_AGENT_ID), BIT(O_AGENT_ID), "show an agent" },
	{ "agents", "update", cmd_agents_update,
	  BIT(O_AGENT_ID) | BIT(O_NAME) | BIT(O_PRIORITY) | BIT(O_STATUS), BIT(O_AGENT_ID),
	  "rename an agent, change its priority or status" },
	{ "agents", "freeze", cmd_agents_update, BIT(O_AGENT_ID), BIT(O_AGENT_ID),
	  "freeze an agent: every check is blocked" },
	{ "agents", "unfreeze", cmd_agents_update, BIT(O_AGENT_ID), BIT(O_AGENT_ID),
	  "make a frozen agent active again" },
	{ "agents", "delete", cmd_agents_delete, BIT(O_AGENT_ID), BIT(O_AGENT_ID),
	  "delete an agent without open holds" },
	{ "agents", "events", cmd_agents_events, BIT(O_AGENT_ID) | BIT(O_LIMIT), BIT(O_AGENT_ID),
	  "an agent's status changes, anomalies and critical overrides, newest first "
	  "(--limit 1-1000, default 50)" },
	{ "agents", "top", cmd_agents_top, BIT(O_ORG_ID) | WINDOW_FLAGS | BIT(O_LIMIT), 0,
	  "the agents charged the most over a window, most first (--limit 1-100, default 10)" },
	{ "agents", "rotate-token", cmd_agents_rotate_token, BIT(O_AGENT_ID), BIT(O_AGENT_ID),
	  "give an agent a new token, shown once; the old one stops working at once" },
	{ "tokens", "create", cmd_tokens_create, BIT(O_ROLE) | BIT(O_NAME), BIT(O_ROLE),
	  "issue a reader token (reads everything, changes nothing), shown once" },
	{ "tokens", "list", cmd_tokens_list, 0, 0,
	  "the tokens issued and not revoked (never the tokens themselves)" },
	{ "tokens", "revoke", cmd_tokens_revoke, BIT(O_TOKEN_ID), BIT(O_TOKEN_ID),
	  "revoke a token: no connection is accepted with it any more" },
	{ "rules", "add", cmd_rules_add, BIT(O_AGENT_ID) | RULE_FLAGS,
	  BIT(O_AGENT_ID) | BIT(O_NAME) | BIT(O_MATCH), "add a spending rule to an agent" },
	{ "rules", "list", cmd_rules_list, BIT(O_AGENT_ID), BIT(O_AGENT_ID),
	  "list an agent's rules" },
	{ "rules", "update", cmd_rules_update, BIT(O_AGENT_ID) | BIT(O_RULE_ID) | RULE_FLAGS,
	  BIT(O_AGENT_ID) | BIT(O_RULE_ID), "change a rule; its counters are kept" },
	{ "rules", "remove", cmd_rules_remove, BIT(O_AGENT_ID) | BIT(O_RULE_ID),
	  BIT(O_AGENT_ID) | BIT(O_RULE_ID), "remove a rule" },
	{ "wallet", NULL, cmd_wallet, BIT(O_AGENT_ID) | BIT(O_ORG_ID), 0,
	  "show the wallet of one agent (--agent-id) or one org (--org-id)" },
	{ "wallet", "update", cmd_wallet,
	  BIT(O_AGENT_ID) | BIT(O_ORG_ID) | WALLET_FLAGS | BIT(O_DEBT) | BIT(O_PERIOD), 0,
	  "set fields of an agent's or an org's wallet (--debt 0 records a repaid debt; --period "
	  "refills the balance to the budget at the start of each day, week or month)" },
	{ "wallet", "carve", cmd_wallet_carve, BIT(O_AGENT_ID) | BIT(O_AMOUNT) | BIT(O_REASON),
	  BIT(O_AGENT_ID) | BIT(O_AMOUNT) | BIT(O_REASON),
	  "carve a sub-budget for an agent from its org's unreserved funds" },
	{ "wallet", "release", cmd_wallet_carve, BIT(O_AGENT_ID), BIT(O_AGENT_ID),
	  "end an agent's sub-budget; its reservation returns to the org" },
	{ "spend", NULL, cmd_spend, BIT(O_AGENT_ID) | BIT(O_ORG_ID), 0,
	  "what a wallet was charged in total, today, this week and this month, and when each "
	  "period ends" },
	{ "wallet", "transfer", cmd_wallet_transfer,
	  BIT(O_FROM_AGENT_ID) | BIT(O_FROM_ORG_ID) | BIT(O_TO_AGENT_ID) | BIT(O_TO_ORG_ID) |
	          BIT(O_AMOUNT) | BIT(O_REASON),
	  BIT(O_AMOUNT) | BIT(O_REASON),
	  "move available funds between two wallets of one org (one --from-*, one --to-*); "
	  "prints both wallets and the ids of the debit and the credit" },
	{ "wallet", "adjust", cmd_wallet_adjust,
	  BIT(O_AGENT_ID) | BIT(O_ORG_ID) | BIT(O_AMOUNT) | BIT(O_REASON),
	  BIT(O_AMOUNT) | BIT(O_REASON),
	  "credit (--amount 5) or debit (--amount -2.50) an agent's or an org's wallet, at most "
	  "down to 0" },
	{ "check", NULL, cmd_check,
	  BIT(O_AGENT_ID) | BIT(O_ACTION) | BIT(O_ESTIMATED_COST) | BIT(O_TYPE) |
	          BIT(O_IDEMPOTENCY_KEY) | BIT(O_TASK_ID),
	  BIT(O_AGENT_ID) | BIT(O_ACTION) | BIT(O_ESTIMATED_COST),
	  "ask before a paid action: prints the transaction id; exit 1 when blocked" },
	{ "report", NULL, cmd_report,
	  BIT(O_TRANSACTION_ID) | BIT(O_OUTCOME) | BIT(O_ACTUAL_COST) | BIT(O_MODEL) | TOKEN_FLAGS,
	  BIT(O_TRANSACTION_ID) | BIT(O_OUTCOME),
	  "settle a hold (--outcome also takes an exit status: 0 success, else failure); with "
	  "--model and token counts the daemon prices it at the rate in force at the check" },
	{ "pricing", "set", cmd_pricing_set,
	  BIT(O_MODEL) | BIT(O_INPUT) | BIT(O_OUTPUT) | BIT(O_CACHED_INPUT) | BIT(O_EFFECTIVE_FROM),
	  BIT(O_MODEL) | BIT(O_INPUT) | BIT(O_OUTPUT),
	  "add a model's next rate version, in dollars per million tokens (--cached-input "
	  "defaults to --input, --effective-from to now)" },
	{ "pricing", "list", cmd_pricing_list, BIT(O_MODEL), 0,
	  "every rate version, of one model or all, by model and version" },
	{ "pricing", "get", cmd_pricing_get, BIT(O_MODEL) | BIT(O_AT), BIT(O_MODEL),
	  "the rate version of a model in force at --at (default now)" },
	{ "score", NULL, cmd_score, BIT(O_AGENT_ID), BIT(O_AGENT_ID),
	  "an agent's kredit score (300-850), its status and the counters behind it" },
	{ "transactions", NULL, cmd_transactions,
	  TXN_FILTER_FLAGS | BIT(O_TXN_STATUS) | BIT(O_RISK_LEVEL) | BIT(O_BEFORE) | BIT(O_LIMIT), 0,
	  "list transactions, newest first (--limit 1-1000, default 50; --before the last id of "
	  "a page gives the next page)" },
	{ "transactions", "summary", cmd_transactions_summary, TXN_FILTER_FLAGS, 0,
	  "count transactions by status and sum their estimates and charges" },
	{ "tasks", "usage", cmd_tasks_usage, BIT(O_TASK_ID) | BIT(O_ORG_ID), BIT(O_TASK_ID),
	  "what an org's task's checks were charged and hold, against the daemon's cap "
	  "(--task-max-usage); --org-id when orgs share the task id" },
	{ "fleet", NULL, cmd_fleet, 0, 0,
	  "agents by status, total spend, checks blocked by risk controls, anomalies, average "
	  "score" },
	{ "stats", NULL, cmd_stats, 0, 0, "the daemon's counters" },
	{ "peek", NULL, cmd_peek, BIT(O_AGENT_ID) | BIT(O_ORG_ID) | BIT(O_SEGMENT), 0,
	  "an agent's wallet (peek AGENT_ID) or an org's, read from the daemon's shared state\n"
	  "      segment instead of over the socket; with --segment, from FILE without asking\n"
	  "      the daemon (its default is beside the socket: sidecard.shm)" },
	{ "alerts", NULL, cmd_alerts,
	  BIT(O_AGENT_ID) | BIT(O_ORG_ID) | BIT(O_ALERT_KIND) | BIT(O_SEVERITY) | BIT(O_SINCE) |
	          BIT(O_BEFORE) | BIT(O_LIMIT) | BIT(O_FOLLOW),
	  0,
	  "alerts (low balance, velocity, budget, anomaly), newest first (--limit 1-1000, default "
	  "50); --follow prints each new one as it is raised, until interrupted" },
	{ "ledger", "verify", cmd_ledger_verify, BIT(O_STATE_DIR), 0,
	  "check every ledger record offline (exit 1: damaged; a torn tail is a warning)" },
	{ "ledger", "repair", cmd_ledger_repair, BIT(O_STATE_DIR) | BIT(O_TRUNCATE_AT_DAMAGE),
	  BIT(O_TRUNCATE_AT_DAMAGE),
	  "offline, daemon stopped: move damaged ledger records and all after them to quarantine" },
	{ "ledger", "export", cmd_ledger_export, BIT(O_STATE_DIR) | BIT(O_FROM), 0,
	  "print the ledger records from sequence SEQ on as JSON lines, offline" },
	{ "demo", NULL, ctl_demo, BIT(O_MINUTES) | BIT(O_SPEED) | BIT(O_SEED) | BIT(O_DAEMON), 0,
	  "simulate five agents for M minutes (60) against a private daemon (PATH: the sidecard\n"
	  "      beside sidecardctl, else on $PATH) running N times faster (120), then print what\n"
	  "      each was allowed, blocked and charged; S seeds the simulation" },
};

/* ----- main ----- */

static void print_usage(FILE *f)
{
	size_t i;

	fputs("usage: sidecardctl [--socket PATH] [--token TOKEN] [--json] VERB [SUBVERB] "
	      "[--flag=value | --flag value]...\n"
	      "\n"
	      "Talks to the sidecard daemon over its Unix socket (--socket, else $SIDECARD_SOCKET,\n"
	      "else the default path). The daemon's administrators (root, its own user, the users\n"
	      "and group it is given) need no token; anyone else presents an agent's or a reader's\n"
	      "token (--token, else $SIDECARD_TOKEN). Amounts are dollars (\"2.40\"); --json prints\n"
	      "one JSON document with amounts in integer micro-dollars. The ledger commands read\n"
	      "the files of the daemon's state directory instead (--state-dir, else the daemon's\n"
	      "default).\n"
	      "Rates (pricing --input, --output, --cached-input) are dollars per million tokens.\n"
	      "Times (--since, --until, --effective-from, --at) are UTC, 2026-11-24T10:00:00Z,\n"
	      "or integer microseconds since the epoch; a window is since <= created_at < until.\n"
	      "Exit status: 0 ok (check: allowed), 1 check blocked or ledger corrupt, 2 error,\n"
	      "3 permission denied (the connection's role may not do that, or the token was\n"
	      "refused).\n"
	      "\ncommands:\n",
	      f);
	for (i = 0; i < COUNT(commands); i++)
		ctl_print_command_usage(f, &commands[i]);
	fputs("\n  --help     this text\n  --version  the version of sidecardctl\n", f);
}

/* The command named by the words, or NULL. */
static const struct command *find_command(const char *const *words, size_t n)
{
	size_t i;

	for (i = 0; i < COUNT(commands); i++) {
		const struct command *c = &commands[i];

		if (strcmp(c->verb, words[0]) != 0)
			continue;
		if (c->sub == NULL ? n == 1 : n == 2 && strcmp(c->sub, words[1]) == 0)
			return c;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	const char *socket_path = NULL, *token = NULL, *words[2] = { NULL, NULL };
	char **flags = calloc((size_t)argc + 1, sizeof(*flags));
	size_t nwords = 0, nflags = 0;
	struct ctx x = { .what = NULL };
	char what[64], err[1024];
	struct opts o;
	int help = 0, rc, a;

	memset(&o, 0, sizeof(o));
	if (flags == NULL) {
		fputs("sidecardctl: out of memory\n", stderr);
		return EXIT_ERROR;
	}
	/* Global options may appear anywhere; a command flag without '=' takes the next word. */
	for (a = 1; a < argc; a++) {
		const char *arg = argv[a];

		if (strcmp(arg, "--json") == 0) {
			x.json = 1;
		} else if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
			help = 1;
		} else if (strcmp(arg, "--version") == 0) {
			printf("sidecardctl %s\n", SC_VERSION);
			free(flags);
			return 0;
		} else if (strncmp(arg, "--socket=", 9) == 0) {
			socket_path = arg + 9;
		} else if (strcmp(arg, "--socket") == 0) {
			if (a + 1 == argc) {
				free(flags);
				return ctl_usage_error(&x, "--socket needs a value");
			}
			socket_path = argv[++a];
		} else if (strncmp(arg, "--token=", 8) == 0) {
			token = arg + 8;
		} else if (strcmp(arg, "--token") == 0) {
			if (a + 1 == argc) {
				free(flags);
				return ctl_usage_error(&x, "--token needs a value");
			}
			token = argv[++a];
		} else if (strncmp(arg, "--", 2) == 0) {
			flags[nflags++] = argv[a];
			if (strchr(arg, '=') == NULL && a + 1 < argc && !ctl_flag_is_switch(arg))
				flags[nflags++] = argv[++a];
		} else if (nwords < COUNT(words)) {
			words[nwords++] = arg;
		} else {
			free(flags);
			return ctl_usage_error(&x, "unexpected argument '%s'", arg);
		}
	}
	/* `peek AGENT_ID`: the id is the command's one positional word. */
	if (nwords == 2 && strcmp(words[0], "peek") == 0) {
		static char agent_flag[] = "--agent-id";

		flags[nflags++] = agent_flag;
		flags[nflags++] = (char *)words[1];
		nwords = 1;
	}
	if (nwords == 0) {
		free(flags);
		print_usage(help ? stdout : stderr);
		return help ? 0 : EXIT_ERROR;
	}
	x.cmd = find_command(words, nwords);
	if (x.cmd == NULL) {
		free(flags);
		return ctl_usage_error(&x, "unknown command '%s%s%s'", words[0],
		                       nwords > 1 ? " " : "", nwords > 1 ? words[1] : "");
	}
	snprintf(what, sizeof(what), "%s%s%s", x.cmd->verb, x.cmd->sub ? " " : "",
	         x.cmd->sub ? x.cmd->sub : "");
	x.what = what;
	if (help) {
		free(flags);
		printf("usage: sidecardctl [--socket PATH] [--token TOKEN] [--json]\n");
		ctl_print_command_usage(stdout, x.cmd);
		return 0;
	}
	rc = ctl_parse_flags(&x, flags, nflags, &o);
	free(flags);
	if (rc != 0)
		return rc;
	if (token != NULL && (token[0] == '\0' || strlen(token) > SC_TOKEN_MAX))
		return ctl_usage_error(&x, "--token: must be 1 to %d bytes", SC_TOKEN_MAX);
	/*
	 * The ledger verbs read local files and demo starts its own daemon; every
	 * other verb talks to the daemon of --socket.
	 */
	if (strcmp(x.cmd->verb, "ledger") == 0 || strcmp(x.cmd->verb, "demo") == 0 ||
	    (strcmp(x.cmd->verb, "peek") == 0 && (o.given & BIT(O_SEGMENT))))
		return x.cmd->run(&x, &o);
	/* Without --token, sc_connect_err() presents $SIDECARD_TOKEN when it is set. */
	rc = token != NULL ? sc_connect_token(socket_path, token, &x.c, err, sizeof(err))
	                   : sc_connect_err(socket_path, &x.c, err, sizeof(err));
	if (rc != 0) {
		char path[sizeof(((struct sockaddr_un *)0)->sun_path)];

		if (socket_path == NULL && sc_default_socket_path(path, sizeof(path)) == 0)
			socket_path = path;
		fprintf(stderr, "sidecardctl: connect to %s: %s%s\n",
		        socket_path ? socket_path : "the default socket",
		        rc == SC_EDENIED ? "permission denied: " : "", err);
		return rc == SC_EDENIED ? EXIT_DENIED : EXIT_ERROR;
	}
	rc = x.cmd->run(&x, &o);
	sc_close(x.c);
	return rc;
}
