#!/bin/sh
# cli.sh: end-to-end test of sidecardctl against a real daemon.
#
# Starts $SIDECARD_BIN on a fresh temporary directory, drives
# $SIDECARDCTL_BIN through orgs, agents, rules, wallets, check and report
# with dollar amounts, then transactions by filter, window and page, their
# summary, the top agents, the fleet, peek (the wallet from the shared state
# file), task usage (check --task-id,
# tasks usage), wallet transfers and adjustments (a negative amount
# debits), pricing (rate versions, a report priced from tokens), alerts (listed, and
# followed as they are pushed), roles (an agent's token and its rotation, reader
# tokens) and `demo` with a daemon of its own; checks exit statuses (0 allowed,
# 1 blocked, 2 error, 3 permission denied), parses --json output with $PYTHON3 (Debian's
# /usr/bin/python3 by default) and stops at the first failure. Run by `make check`; standalone:
#   SIDECARD_BIN=sidecard/sidecard SIDECARDCTL_BIN=libclient/sidecardctl tests/cli.sh
set -u

here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
ctl=${SIDECARDCTL_BIN:-$here/../libclient/sidecardctl}

test_dir cli

passed=0
fail() {
	echo "FAIL: $1"
	echo "--- stdout"; cat "$dir/out" 2>/dev/null
	echo "--- stderr"; cat "$dir/err" 2>/dev/null
	echo "$passed passed, 1 failed"
	exit 1
}
ok() {
	passed=$((passed + 1))
	echo "ok $passed - $1"
}

# run ARGS...: sidecardctl on the test socket; sets $rc, output in $dir/out and $dir/err.
run() {
	"$ctl" --socket "$sock" "$@" >"$dir/out" 2>"$dir/err"
	rc=$?
}
# expect RC DESCRIPTION
expect() {
	[ "$rc" -eq "$1" ] || fail "$2: exit status $rc, expected $1"
}
# out_has TEXT / err_has TEXT
out_has() { grep -qF -- "$1" "$dir/out" || fail "stdout lacks '$1'"; }
err_has() { grep -qF -- "$1" "$dir/err" || fail "stderr lacks '$1'"; }
# json EXPR: evaluates a Python assertion on the parsed stdout, bound to d.
json() {
	"$py" -c "import json, sys
d = json.load(open(sys.argv[1]))
$1" "$dir/out" 2>>"$dir/err" || fail "json: $1"
}

daemon_start "$ctl" --socket "$sock" stats || fail "the daemon did not start"

run --version; expect 0 "--version"; out_has "sidecardctl"
run --help; expect 0 "--help"; out_has "agents create"
out_has "3 permission denied"; out_has "[--token TOKEN]"
out_has "tokens create --role reader [--name NAME]"; out_has "agents rotate-token --agent-id ID"
ok "help and version"

# Checked before any connection, whatever the daemon knows of tokens.
run --token "" stats; expect 2 "--token ''"; err_has "--token: must be 1 to 127 bytes"
run --token "$(printf '%0128d' 0)" stats; expect 2 "--token of 128 bytes"
err_has "--token: must be 1 to 127 bytes"
run --token; expect 2 "--token without a value"; err_has "--token needs a value"
run tokens create --role admin; expect 2 "tokens create --role admin"
err_has "--role: must be one of reader, not 'admin'"
run tokens revoke; expect 2 "tokens revoke without an id"; err_has "--token-id is required"
run agents rotate-token --agent-id 0; expect 2 "agents rotate-token --agent-id 0"
err_has "--agent-id: not an id: '0'"
ok "token flags checked before connecting"

run orgs create --name my-team; expect 0 "orgs create"; out_has "my-team"
run --json orgs create --name=other-team; expect 0 "orgs create --json"
json 'assert d["name"] == "other-team" and d["wallet"]["limited"] is False, d'
ok "orgs create"

run --json agents create --org my-team --name research-bot --balance 50 --max-per-txn=10 \
	--rule 'name=OpenAI cap,match=openai.*,max-cost-per-txn=5,daily-spend-limit=100,hourly-rate-limit=50' \
	--rule 'name=Default,match=*,max-cost-per-txn=8'
expect 0 "agents create"
json 'assert d["wallet"]["balance"] == 50000000 and d["wallet"]["max_per_txn"] == 10000000, d
assert [r["name"] for r in d["rules"]] == ["OpenAI cap", "Default"], d
assert d["rules"][0]["max_cost_per_txn"] == 5000000 and d["rules"][0]["hourly_rate_limit"] == 50, d'
agent=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$dir/out")
ok "agents create with a wallet and rules in dollars"

run agents list; expect 0 "agents list"; out_has "NAME"; out_has "research-bot"; out_has '$50.00'
run agents list --org my-team --json; expect 0 "agents list --org"
json 'assert len(d) == 1 and d[0]["org"] == "my-team", d'
run agents get --agent-id "$agent"; expect 0 "agents get"; out_has "OpenAI cap"; out_has '$5.00'
ok "agents list and get"

run score --agent-id "$agent"; expect 0 "score"
grep -qE '^score: +650$' "$dir/out" || fail "score: a new agent's score is not 650"
grep -qE '^status: +active$' "$dir/out" || fail "score: the status is not active"
out_has "factors:"; out_has "average_cost"; out_has '$0.00'
run --json score --agent-id "$agent"; expect 0 "score --json"
json 'assert d["agent_id"] == '"$agent"' and d["score"] == 650 and d["status"] == "active", d
assert d["factors"]["settled"] == 0 and d["factors"]["average_cost"] == 0, d
assert sorted(d["factors"]) == sorted(["checks", "blocked", "settled", "failures", "overruns",
                                       "expired", "anomalies", "average_cost", "age_s"]), d'
run score --agent-id 999999; expect 2 "score of an unknown agent"; err_has "sidecardctl: score: "
ok "score of a new agent: 650, active"

txn=$("$ctl" --socket "$sock" check --agent-id "$agent" --action openai.chat --estimated-cost 2.50 2>"$dir/err")
rc=$?
expect 0 "check allowed"
case $txn in '' | *[!0-9]*) fail "check printed '$txn', not a transaction id" ;; esac
ok "check allowed: exit 0, transaction id $txn alone on stdout"

run report --transaction-id "$txn" --outcome success --actual-cost 2.40
expect 0 "report"; out_has 'charged $2.40'; out_has 'balance $47.60'
run --json wallet --agent-id "$agent"; expect 0 "wallet"
json 'assert d["balance"] == 47600000 and d["held"] == 0 and d["daily_spent"] == 2400000, d'
ok "report success with an actual cost"

run peek "$agent"; expect 0 "peek"; out_has '$47.60'; out_has 'active'
run --json peek "$agent"; expect 0 "peek --json"
json 'assert d["id"] == '"$agent"' and d["status"] == "active", d
assert d["balance"] == 47600000 and d["held"] == 0 and d["daily_spent"] == 2400000, d
assert d["available"] == 47600000 and d["max_per_txn"] == 10000000, d'
run --json peek --segment "$dir/sidecard.shm" --agent-id "$agent"; expect 0 "peek --segment"
json 'assert d["balance"] == 47600000, d'
run peek 999999; expect 2 "peek of an unknown agent"; err_has "no agent 999999"
run peek --segment "$dir/nowhere/sidecard.shm" "$agent"; expect 2 "peek without the state file"
err_has "unavailable"; err_has "not visible here"
run peek; expect 2 "peek without an id"; err_has "agent id"
ok "peek: the wallet read from the shared state file"

run check --agent-id "$agent" --action openai.chat --estimated-cost 6
expect 1 "check blocked"; err_has "blocked: rule:OpenAI cap:max_cost_per_txn"
[ -s "$dir/out" ] && fail "a blocked check printed on stdout"
run check --agent-id "$agent" --action flights.book --estimated-cost 9
expect 1 "check blocked by the * rule"; err_has "blocked: rule:Default:max_cost_per_txn"
run check --agent-id 999999 --action x --estimated-cost 1
expect 1 "check unknown agent"; err_has "blocked: agent_not_found"
ok "check blocked: exit 1, the reason on stderr"

run --json check --agent-id="$agent" --action=openai.chat --estimated-cost=1 --type api_call \
	--idempotency-key key-1
expect 0 "check --json"
json 'assert d["status"] == "allowed" and isinstance(d["transaction_id"], int), d
assert d["available"] == 46600000 and d["warnings"] == [] and d["replayed"] is False, d
assert d["block_reason"] is None and d["risk_level"] == "low", d'
txn=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["transaction_id"])' "$dir/out")
run --json check --agent-id="$agent" --action=openai.chat --estimated-cost=1 --type api_call \
	--idempotency-key key-1
expect 0 "check replay"; json 'assert d["replayed"] is True, d'
run --json check --agent-id "$agent" --action openai.chat --estimated-cost 7
expect 1 "check --json blocked"; json 'assert d["status"] == "blocked", d'
ok "check --json: the decision object, replays"

run report --transaction-id "$txn" --outcome 0
expect 0 "report with an exit status"; out_has "success"; out_has 'charged $1.00'
run --json report --transaction-id "$txn" --outcome success
expect 0 "report replay"; json 'assert d["replayed"] is True and d["charged"] == 1000000, d'
run report --transaction-id "$txn" --outcome failure
expect 2 "report mismatch"; err_has "sidecardctl: report: "
ok "report with an exit status, replay and mismatch"

run check --agent-id "$agent" --action openai.chat --estimated-cost 2.4.5
expect 2 "bad dollar amount"; err_has "--estimated-cost"
run agents create --org my-team --name x --balance ten
expect 2 "bad --balance"; err_has "--balance"
run check --agent-id "$agent" --action openai.chat --estimated-cost 1.0000001
expect 2 "seven decimals"; err_has "--estimated-cost"
run check --agent-id "$agent" --action openai.chat --estimated-cost 99999999999999
expect 2 "too large"; err_has "--estimated-cost"
run check --agent-id "$agent" --action openai.chat --estimated-cost 1 --bogus 3
expect 2 "unknown flag"; err_has "--bogus"
run check --agent-id "$agent" --action openai.chat
expect 2 "missing flag"; err_has "--estimated-cost"
run check --agent-id "$agent" --action openai.chat --estimated-cost
expect 2 "flag without a value"; err_has "--estimated-cost"
run agents create --org my-team --name y --rule 'name=r,match=a.*,max-cost-per-txn=abc'
expect 2 "bad --rule"; err_has "--rule"
run frobnicate
expect 2 "unknown command"; err_has "frobnicate"
ok "usage errors: exit 2 naming the flag"

run agents get --agent-id 999999
expect 2 "agents get unknown"; err_has "sidecardctl: agents get: "
run orgs create --name my-team
expect 2 "orgs create taken"; err_has "sidecardctl: orgs create: "
"$ctl" --socket "$dir/nothing.sock" orgs list >"$dir/out" 2>"$dir/err"
rc=$?
expect 2 "no daemon"; err_has "nothing.sock"
ok "daemon errors: exit 2 with the daemon's message"

run rules add --agent-id "$agent" --name "Flight cap" --match 'flight.*' --max-cost-per-txn 800 \
	--daily-spend-limit 3000 --hourly-rate-limit 10
expect 0 "rules add"; out_has '$800.00'
run --json rules list --agent-id "$agent"; expect 0 "rules list"
json 'assert [r["match"] for r in d] == ["openai.*", "*", "flight.*"], d'
rule=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))[2]["id"])' "$dir/out")
run --json rules update --agent-id "$agent" --rule-id "$rule" --max-cost-per-txn 1000
expect 0 "rules update"
json 'assert d["max_cost_per_txn"] == 1000000000 and d["daily_spend_limit"] == 3000000000, d'
run rules list --agent-id "$agent"; expect 0 "rules list"; out_has "Flight cap"; out_has "MATCH"
run rules remove --agent-id "$agent" --rule-id "$rule"; expect 0 "rules remove"
run --json rules list --agent-id "$agent"; json 'assert len(d) == 2, d'
ok "rules add, list, update, remove"

run --json wallet update --agent-id "$agent" --balance 100 --daily-spend-limit 20.5
expect 0 "wallet update"
json 'assert d["balance"] == 100000000 and d["daily_spend_limit"] == 20500000, d'
org=$("$ctl" --socket "$sock" --json orgs list | "$py" -c 'import json, sys; print(json.load(sys.stdin)[0]["id"])')
run --json wallet update --org-id "$org" --balance 1000
expect 0 "org wallet update"; json 'assert d["limited"] is True and d["balance"] == 1000000000, d'
run wallet --org-id "$org"; expect 0 "org wallet"; out_has '$1000.00'
run wallet --agent-id "$agent" --org-id "$org"
expect 2 "wallet with both ids"
ok "wallet show and update, agent and org"

run agents freeze --agent-id "$agent"; expect 0 "agents freeze"; out_has "frozen"
run check --agent-id "$agent" --action x --estimated-cost 1
expect 1 "frozen check"; err_has "blocked: agent_frozen"
run agents unfreeze --agent-id "$agent"; expect 0 "agents unfreeze"; out_has "active"
run --json agents update --agent-id "$agent" --priority critical --name renamed
expect 0 "agents update"; json 'assert d["priority"] == "critical" and d["name"] == "renamed", d'
ok "agents freeze, unfreeze, update"

run agents events --agent-id "$agent"; expect 0 "agents events"
out_has "TYPE"; out_has "REASON"
grep -qE '^ *[0-9]+ .* status_change +active +frozen +[0-9]+ +operator$' "$dir/out" ||
	fail "agents events: no status_change row active -> frozen"
run --json agents events --agent-id "$agent"; expect 0 "agents events --json"
json 'assert [(e["type"], e["from"], e["to"], e["reason"]) for e in d] == [
    ("status_change", "frozen", "active", "operator"),
    ("status_change", "active", "frozen", "operator")], d
assert d[0]["id"] > d[1]["id"] and all(e["agent_id"] == '"$agent"' for e in d), d'
run --json agents events --agent-id "$agent" --limit 1; expect 0 "agents events --limit"
json 'assert len(d) == 1 and d[0]["to"] == "active", d'
run agents events --agent-id "$agent" --limit 1001; expect 2 "agents events --limit 1001"
err_has "--limit"
ok "agents events: the operator's status changes, newest first"

run transactions --agent-id "$agent"; expect 0 "transactions"
out_has "STATUS"; out_has "blocked"; out_has "settled"
run --json transactions --agent-id "$agent" --status blocked --limit 2
expect 0 "transactions --json"
json 'assert len(d) == 2 and all(t["status"] == "blocked" for t in d), d
assert d[0]["id"] > d[1]["id"] and d[0]["outcome"] is None, d'
ok "transactions"

# The agent's transactions so far: $2.50 and $1 allowed and settled at $2.40
# and $1; $6, $9, $7 and $1 (frozen) blocked.
run --json transactions --org-id "$org" --status settled --risk-level low
expect 0 "transactions --org-id --status --risk-level"
json 'assert [t["charged"] for t in d] == [1000000, 2400000], d
assert all(t["risk_level"] == "low" and t["org_id"] == '"$org"' for t in d), d'
run --json transactions --agent-id "$agent" --limit 4; expect 0 "transactions, first page"
before=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))[-1]["id"])' "$dir/out")
run --json transactions --agent-id "$agent" --limit 4 --before "$before"
expect 0 "transactions --before"
json 'assert len(d) == 2 and all(t["id"] < '"$before"' for t in d), d'
run --json transactions --agent-id "$agent" --since 2000-01-01T00:00:00Z \
	--until 2100-01-01T00:00:00Z
expect 0 "transactions --since --until"; json 'assert len(d) == 6, d'
since=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))[1]["created_at"])' "$dir/out")
run --json transactions --agent-id "$agent" --since "$since"
expect 0 "transactions --since microseconds"
json 'assert len(d) >= 2 and all(t["created_at"] >= '"$since"' for t in d), d'
# The second of the newest transaction in ISO-8601: it is listed since that
# second, and not since the next.
iso=$("$py" -c 'import datetime, json, sys
t = json.load(open(sys.argv[1]))[0]["created_at"] // 1000000
for s in (t, t + 1):
    dt = datetime.datetime.fromtimestamp(s, datetime.timezone.utc)
    print(dt.strftime("%Y-%m-%dT%H:%M:%SZ"))' "$dir/out")
newest=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))[0]["id"])' "$dir/out")
run --json transactions --agent-id "$agent" --since "$(echo "$iso" | sed -n 1p)"
expect 0 "transactions --since ISO"; json 'assert d[0]["id"] == '"$newest"', d'
run --json transactions --agent-id "$agent" --since "$(echo "$iso" | sed -n 2p)"
expect 0 "transactions --since ISO, a second later"; json 'assert d == [], d'
run --json transactions --until "2000-01-01 00:00:00Z"; expect 0 "transactions --until"
json 'assert d == [], d'
run transactions --since yesterday; expect 2 "transactions --since yesterday"; err_has "--since"
run transactions --until 2026-02-29T00:00:00Z; expect 2 "no such day"; err_has "--until"
run transactions --risk-level extreme; expect 2 "transactions --risk-level extreme"
err_has "--risk-level"
ok "transactions by org, status, risk level, window and page"

run transactions summary --agent-id "$agent"; expect 0 "transactions summary"
grep -qE '^blocked: +4$' "$dir/out" || fail "transactions summary: not 4 blocked"
grep -qE '^charged: +\$3\.40$' "$dir/out" || fail "transactions summary: not \$3.40 charged"
run --json transactions summary --org-id "$org" --since 2000-01-01T00:00:00Z
expect 0 "transactions summary --json"
json 'assert d == {"total": 6, "pending": 0, "settled": 2, "blocked": 4, "expired": 0,
             "charged": 3400000, "estimated": 26500000}, d'
run --json transactions summary --until 2000-01-01T00:00:00Z; expect 0 "an empty summary"
json 'assert d["total"] == 0 and d["charged"] == 0, d'
run transactions summary --status blocked; expect 2 "transactions summary --status"
err_has "--status"
ok "transactions summary"

run agents top; expect 0 "agents top"
out_has "AGENT"; out_has "SPEND"; out_has "TRANSACTIONS"; out_has "renamed"; out_has '$3.40'
run --json agents top --org-id "$org" --limit 1 --since 2000-01-01T00:00:00Z
expect 0 "agents top --json"
json 'assert d == [{"agent_id": '"$agent"', "name": "renamed", "spend": 3400000,
              "transactions": 2}], d'
run agents top --limit 101; expect 2 "agents top --limit 101"; err_has "--limit"
ok "agents top"

score=$("$ctl" --socket "$sock" --json score --agent-id "$agent" | "$py" -c 'import json, sys; print(json.load(sys.stdin)["score"])')
run fleet; expect 0 "fleet"
grep -qE '^total_spend: +\$3\.40$' "$dir/out" || fail "fleet: total_spend is not \$3.40"
grep -qE '^risk_events_blocked: +1$' "$dir/out" || fail "fleet: not 1 risk event blocked"
run --json fleet; expect 0 "fleet --json"
json 'assert d == {"total_agents": 1, "active_agents": 1, "throttled_agents": 0,
             "frozen_agents": 0, "total_spend": 3400000, "risk_events_blocked": 1,
             "anomalies": 0, "avg_credit_score": '"$score"'}, d'
ok "fleet"

run --json stats; expect 0 "stats --json"
json 'assert d["agents"] == 1 and d["checks"] >= 6 and d["blocked"] >= 4, d
assert d["risk_blocked"] == 1, d
assert d["checks"] == d["allowed"] + d["blocked"], d
assert d["ledger_durable_seq"] == d["ledger_last_seq"] > 0 and d["ledger_failed"] == 0, d
assert d["capacity_tasks"] > 0 and d["capacity_events"] > 0, d'
run stats; expect 0 "stats"; out_has "holds_open"; out_has "ledger_durable_seq"
SIDECARD_SOCKET=$sock "$ctl" orgs list >"$dir/out" 2>"$dir/err"
rc=$?
expect 0 "SIDECARD_SOCKET"; out_has "my-team"
ok "stats, SIDECARD_SOCKET"

# Tasks, with the daemon's default cap of $5, on an agent of their own so
# that the tallies above are not disturbed.
run --json agents create --org other-team --name task-bot --balance 100
expect 0 "agents create task-bot"
bot=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$dir/out")
run tasks usage --task-id job-1; expect 2 "tasks usage before any check"
err_has "sidecardctl: tasks usage: "
first=$("$ctl" --socket "$sock" check --agent-id "$bot" --action llm.call --estimated-cost 3 \
	--task-id job-1 2>"$dir/err")
rc=$?
expect 0 "check --task-id"
case $first in '' | *[!0-9]*) fail "check --task-id printed '$first', not a transaction id" ;; esac
run check --agent-id "$bot" --action llm.call --estimated-cost 2.01 --task-id job-1
expect 1 "check past the task cap"; err_has "blocked: task:max_usage"
run --json check --agent-id "$bot" --action llm.call --estimated-cost 2 --task-id=job-1
expect 0 "check up to the task cap"; json 'assert d["status"] == "allowed", d'
run check --agent-id "$bot" --action llm.call --estimated-cost 50
expect 0 "check without a task"
ok "check --task-id: blocked past the task's cap, a check without it is not"

run tasks usage --task-id job-1; expect 0 "tasks usage"
grep -qE '^task_id: +job-1$' "$dir/out" || fail "tasks usage: no task_id line"
grep -qE '^usage: +\$0\.00$' "$dir/out" || fail "tasks usage: usage is not \$0.00"
grep -qE '^held: +\$5\.00$' "$dir/out" || fail "tasks usage: held is not \$5.00"
grep -qE '^max_usage: +\$5\.00$' "$dir/out" || fail "tasks usage: max_usage is not \$5.00"
grep -qE '^checks: +3$' "$dir/out" || fail "tasks usage: not 3 checks"
grep -qE '^open_holds: +2$' "$dir/out" || fail "tasks usage: not 2 open holds"
out_has "created_at:"; out_has "last_at:"
run report --transaction-id "$first" --outcome success --actual-cost 1.25
expect 0 "report a task's check"
run --json tasks usage --task-id job-1; expect 0 "tasks usage --json"
json 'assert sorted(d) == sorted(["task_id", "org_id", "usage", "held", "max_usage", "checks",
                                 "open_holds", "created_at", "last_at"]), d
assert d["task_id"] == "job-1" and d["usage"] == 1250000 and d["held"] == 2000000, d
assert d["max_usage"] == 5000000 and d["checks"] == 3 and d["open_holds"] == 1, d
assert 0 < d["created_at"] <= d["last_at"], d'
run --json transactions --agent-id "$bot"
expect 0 "transactions of the task"
json 'assert [t["task_id"] for t in d] == [None, "job-1", "job-1", "job-1"], d'
run tasks usage; expect 2 "tasks usage without --task-id"; err_has "--task-id"
run check --agent-id "$bot" --action llm.call --estimated-cost 1 \
	--task-id 0123456789012345678901234567890123456789012345678901234567890123
expect 2 "a task id of 64 bytes"; err_has "--task-id"
run check --agent-id "$bot" --action llm.call --estimated-cost 1 --task-id 'has space'
expect 2 "a task id with a space"; err_has "task_id"
ok "tasks usage: human and --json, transactions name their task"

# Transfers and adjustments, on agents of their own (created after the
# tallies above) in other-team, whose org wallet is still unfunded.
run --json agents create --org other-team --name payer --balance 20
expect 0 "agents create payer"
payer=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$dir/out")
run --json agents create --org other-team --name payee
expect 0 "agents create payee"
payee=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$dir/out")
team=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["org_id"])' "$dir/out")
run wallet transfer --from-agent-id "$payer" --to-agent-id "$payee" --amount 2.50 \
	--reason "rebalance"
expect 0 "wallet transfer"; out_has "transactions:"
grep -qE '^amount: +\$2\.50$' "$dir/out" || fail "wallet transfer: amount is not \$2.50"
[ "$(grep -cE '^  balance: +\$(17\.50|2\.50)$' "$dir/out")" -eq 2 ] ||
	fail "wallet transfer: the wallets are not \$17.50 and \$2.50"
run --json wallet transfer --from-agent-id="$payer" --to-org-id="$team" --amount 1 \
	--reason "fund the org"
expect 0 "wallet transfer --json"
json 'assert d["amount"] == 1000000 and d["from"]["balance"] == 16500000, d
assert d["to"]["balance"] == 1000000 and d["to"]["limited"] is True, d
assert len(d["transactions"]) == 2 and d["transactions"][0] != d["transactions"][1], d'
credit=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["transactions"][1])' "$dir/out")
run --json transactions --org-id "$team" --status settled; expect 0 "transactions of transfers"
json 'org = [t for t in d if t["id"] == '"$credit"']
assert len(org) == 1 and org[0]["agent_id"] is None and org[0]["type"] == "transfer", d
assert org[0]["charged"] == -1000000 and org[0]["balance_after"] == 1000000, d
assert org[0]["reason"] == "fund the org", d
assert [(t["charged"], t["balance_after"], t["reason"]) for t in d
        if t["type"] == "transfer" and t["agent_id"] == '"$payer"'] == [
    (1000000, 16500000, "fund the org"), (2500000, 17500000, "rebalance")], d'
run transactions --agent-id "$payee"; expect 0 "transactions table"
out_has "BALANCE"; out_has "transfer"; out_has '-$2.50'
ok "wallet transfer: between agents and into the org wallet, human and --json"

run wallet adjust --agent-id "$payee" --amount -2.50 --reason refund
expect 0 "wallet adjust debit"; out_has "transaction_id:"
grep -qE '^  balance: +\$0\.00$' "$dir/out" || fail "wallet adjust: the balance is not \$0.00"
run --json wallet adjust --org-id "$team" --amount 4 --reason grant
expect 0 "wallet adjust --json"
json 'assert d["wallet"]["balance"] == 5000000 and d["wallet"]["limited"] is True, d
assert isinstance(d["transaction_id"], int), d'
adjusted=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["transaction_id"])' "$dir/out")
run --json transactions --org-id "$team" --limit 2; expect 0 "transactions of adjustments"
json 'assert [(t["id"], t["agent_id"], t["type"], t["charged"], t["balance_after"], t["reason"])
        for t in d] == [('"$adjusted"', None, "adjustment", -4000000, 5000000, "grant"),
                        (d[1]["id"], '"$payee"', "adjustment", 2500000, 0, "refund")], d'
run wallet adjust --agent-id "$payee" --amount=-0.01 --reason "past the balance"
expect 2 "wallet adjust past the balance"; err_has "sidecardctl: wallet adjust: amount"
ok "wallet adjust: a credit and a negative debit, human and --json"

run wallet transfer --from-agent-id "$payer" --to-agent-id "$agent" --amount 1 --reason x
expect 2 "wallet transfer across orgs"; err_has "org"
run wallet transfer --from-agent-id "$payer" --to-agent-id "$payee" --amount 100 --reason x
expect 2 "wallet transfer beyond the available funds"; err_has "available"
run wallet transfer --from-agent-id "$payer" --from-org-id "$team" --to-agent-id "$payee" \
	--amount 1 --reason x
expect 2 "wallet transfer from two wallets"; err_has "--from-agent-id and --from-org-id"
run wallet transfer --from-agent-id "$payer" --amount 1 --reason x
expect 2 "wallet transfer to nowhere"; err_has "--to-agent-id and --to-org-id"
run wallet adjust --agent-id "$payee" --amount 1
expect 2 "wallet adjust without --reason"; err_has "--reason"
run wallet adjust --agent-id "$payee" --amount 1.0000001 --reason x
expect 2 "wallet adjust, seven decimals"; err_has "--amount"
run --json wallet --agent-id "$payer"; expect 0 "wallet after refusals"
json 'assert d["balance"] == 16500000, d'
ok "wallet transfer and adjust: refusals exit 2 and change nothing"

run --json orgs create --name paris-team --timezone Europe/Paris; expect 0 "orgs create --timezone"
json 'assert d["timezone"] == "Europe/Paris" and d["timezone_rule"] == "CET-1CEST,M3.5.0,M10.5.0/3", d'
paris=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$dir/out")
run orgs create --name nowhere --timezone Nowhere/City; expect 2 "orgs create, unknown zone"
err_has "timezone"
run --json agents create --org paris-team --name planner --balance 20
expect 0 "agents create in paris-team"
planner=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$dir/out")
run --json wallet update --agent-id "$planner" --budget 20 --period weekly
expect 0 "wallet update --period"; json 'assert d["period"] == "weekly" and d["budget"] == 20000000, d'
run wallet update --agent-id "$planner" --period fortnightly; expect 2 "a bad --period"
err_has "--period"
run check --agent-id "$planner" --action tool.run --estimated-cost 1.25; expect 0 "check in paris-team"
run report --transaction-id "$(cat "$dir/out")" --outcome success; expect 0 "report in paris-team"
run --json spend --agent-id "$planner"; expect 0 "spend --json"
json 'assert (d["total"], d["daily"], d["weekly"], d["monthly"]) == (1250000,) * 4, d
assert d["timezone"] == "Europe/Paris" and d["period"] == "weekly", d
assert d["period_reset_at"] == d["weekly_reset_at"] > d["daily_reset_at"], d'
run spend --agent-id "$planner"; expect 0 "spend"; out_has "period_reset_at:"; out_has '$1.25'
ok "time zones, budget periods and spend"

run --json wallet update --org-id "$paris" --balance 100; expect 0 "fund paris-team"
run --json wallet carve --agent-id "$planner" --amount 30 --reason "launch"
expect 0 "wallet carve"
json 'assert d["agent"]["sub_budget"] is True and d["agent"]["reserved"] == 48750000, d
assert d["org"]["reserved"] == 48750000 and isinstance(d["transaction_id"], int), d'
run wallet carve --agent-id "$planner" --amount 60 --reason more; expect 2 "carve too much"
err_has "unreserved"
run --json wallet release --agent-id "$planner"; expect 0 "wallet release"
json 'assert d["agent"]["sub_budget"] is False and d["org"]["reserved"] == 0, d'
ok "wallet carve and release"

run pricing set --model gpt-x --input 2.50 --output 10 --cached-input 1.25 \
	--effective-from 2020-01-01T00:00:00Z
expect 0 "pricing set"; out_has "version:"; out_has '$2.50'; out_has '$1.25'
run --json pricing set --model gpt-x --input 5 --output 20 --effective-from 2099-01-01T00:00:00Z
expect 0 "pricing set --json"
json 'assert d["version"] == 2 and d["input"] == 5000000 and d["cached_input"] == 5000000, d
assert d["effective_from"] == 4070908800000000, d'
run pricing list; expect 0 "pricing list"; out_has "VERSION"; out_has "gpt-x"; out_has '$20.00'
run --json pricing list --model gpt-x; expect 0 "pricing list --model"
json 'assert [(p["model"], p["version"], p["output"]) for p in d] == [("gpt-x", 1, 10000000),
                                                                      ("gpt-x", 2, 20000000)], d'
run --json pricing get --model gpt-x; expect 0 "pricing get"
json 'assert d["version"] == 1, d'
run --json pricing get --model gpt-x --at 2099-06-01T00:00:00Z; expect 0 "pricing get --at"
json 'assert d["version"] == 2, d'
run pricing get --model unknown-model; expect 2 "pricing get of an unpriced model"
err_has "model: no rate for 'unknown-model' in force at"
run pricing set --model gpt-x --input 2.5.0 --output 1; expect 2 "pricing set, bad dollars"
err_has "--input"
ok "pricing set, list and get, human and --json"

run --json agents create --org my-team --name token-bot --balance 10; expect 0 "token agent"
tokbot=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$dir/out")
txn=$("$ctl" --socket "$sock" check --agent-id "$tokbot" --action llm.chat --estimated-cost 1)
run report --transaction-id "$txn" --outcome success --model unknown-model --input-tokens 5
expect 2 "report with an unpriced model"; err_has "no rate for 'unknown-model'"
run report --transaction-id "$txn" --outcome success --model gpt-x --actual-cost 1
expect 2 "report with a model and an actual cost"; err_has "--actual-cost"
run report --transaction-id "$txn" --outcome success --model gpt-x --input-tokens 5000 \
	--output-tokens 1500 --cached-input-tokens 2000
expect 0 "report with tokens"; out_has 'charged $0.03'; out_has "gpt-x rate version 1"
run --json transactions --agent-id "$tokbot"; expect 0 "transactions of a priced report"
json 'assert [(t["model"], t["rate_version"], t["input_tokens"], t["output_tokens"],
         t["cached_input_tokens"], t["charged"]) for t in d] == [("gpt-x", 1, 5000, 1500, 2000,
                                                                   30000)], d'
ok "report priced from token counts"

run orgs create --name alerting; expect 0 "orgs create alerting"
run --json agents create --org alerting --name low-bot --balance 10; expect 0 "agents create low-bot"
low=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$dir/out")
"$ctl" --socket "$sock" --json alerts --follow --agent-id "$low" >"$dir/follow" 2>"$dir/follow.err" &
follower=$!
# the follower is subscribed once its connection is open and its subscribe answered
i=0
until "$ctl" --socket "$sock" --json stats 2>/dev/null | "$py" -c 'import json, sys
sys.exit(0 if json.load(sys.stdin)["connections_open"] >= 2 else 1)'; do
	i=$((i + 1)); [ $i -le 100 ] || fail "alerts --follow did not connect"; sleep 0.05
done
sleep 0.3
run check --agent-id "$low" --action tool.run --estimated-cost 9.50; expect 0 "check to a low balance"
i=0
until [ -s "$dir/follow" ]; do
	i=$((i + 1)); [ $i -le 100 ] || { kill "$follower"; fail "alerts --follow printed nothing"; }
	sleep 0.05
done
kill -INT "$follower"; wait "$follower"; rc=$?
expect 0 "alerts --follow stopped by SIGINT"
"$py" -c 'import json, sys
lines = open(sys.argv[1]).read().splitlines()
assert len(lines) == 1, lines
a = json.loads(lines[0])
assert a["kind"] == "low_balance" and a["severity"] == "warning", a
assert a["agent_id"] == int(sys.argv[2]) and a["value"] == 500000 and a["threshold"] == 1000000, a' \
	"$dir/follow" "$low" || fail "alerts --follow output: $(cat "$dir/follow" "$dir/follow.err")"
ok "alerts --follow prints a pushed alert as a JSON line and exits 0 on SIGINT"

run alerts; expect 0 "alerts"; out_has "SEVERITY"; out_has "low_balance"
out_has 'agent '"$low"' (low-bot): available $0.50 below $1.00'
run --json alerts --agent-id "$low" --kind low_balance --limit 5; expect 0 "alerts --json"
json 'assert len(d) == 1 and d[0]["kind"] == "low_balance" and d[0]["org_id"] > 0, d'
run --json wallet update --agent-id "$low" --low-balance 5; expect 0 "wallet update --low-balance"
json 'assert d["low_balance"] == 5000000, d'
run --json alerts --severity critical; expect 0 "alerts --severity"
json 'assert len(d) == 1 and d[0]["threshold"] == 1000000 and d[0]["transaction_id"] is None, d'
run alerts --kind bogus; expect 2 "alerts --kind bogus"; err_has "--kind"
run alerts --follow --limit 3; expect 2 "alerts --follow --limit"; err_has "--follow"
ok "alerts: listed and filtered; wallet update --low-balance raises a critical one"

run orgs create --name "$(printf 'pay\342\200\256yap')"; expect 2 "a name with a bidi override"
err_has "name: must not contain bidirectional formatting characters (U+202E at byte 3)"
run agents create --org my-team --name "$(printf 'bot\033[2J')"; expect 2 "a name with a control"
err_has "name: must not contain control characters (U+001B at byte 3)"
ok "names: control and bidirectional formatting characters refused"

run agents delete --agent-id "$agent"; expect 0 "agents delete"
run agents get --agent-id "$agent"; expect 2 "deleted agent"
ok "agents delete"

# Roles. The test runs as the daemon's user, an administrator; a token makes
# sidecardctl someone else. run_as TOKEN ARGS...: sidecardctl with SIDECARD_TOKEN=TOKEN.
run_as() {
	tok=$1; shift
	SIDECARD_TOKEN=$tok "$ctl" --socket "$sock" "$@" >"$dir/out" 2>"$dir/err"
	rc=$?
}
# the value of a field of the --json object on stdout
field() { "$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$dir/out" "$1"; }

run orgs create --name roles; expect 0 "orgs create roles"
run --json agents create --org roles --name hook-bot --balance 10; expect 0 "agents create --json"
json 'import re
assert re.fullmatch("sca_%d_[A-Za-z0-9_-]{43}" % d["id"], d["token"]), d'
hook=$(field id); token=$(field token)
run agents create --org roles --name other-bot --balance 10; expect 0 "agents create"
out_has "token:"; out_has "sca_"; err_has "shown only now"
other=$("$ctl" --socket "$sock" --json agents list --org roles | "$py" -c 'import json, sys
print([a["id"] for a in json.load(sys.stdin) if a["name"] == "other-bot"][0])')
run --json agents get --agent-id "$hook"; expect 0 "agents get"
json 'assert "token" not in d, d'
ok "agents create shows the agent's token, once"

run_as "$token" wallet update --agent-id "$hook" --balance 1000000
expect 3 "an agent's token raising its own balance"
err_has "wallet update: permission denied: "; err_has "admin"
run_as "$token" agents unfreeze --agent-id "$hook"; expect 3 "an agent's token unfreezing itself"
run_as "$token" check --agent-id "$other" --action openai.chat --estimated-cost 0.01
expect 3 "an agent's token checking for another agent"
run_as "$token" check --agent-id "$hook" --action openai.chat --estimated-cost 0.01
expect 0 "an agent's token checking for its agent"; txn=$(cat "$dir/out")
run_as "$token" report --transaction-id "$txn" --outcome success; expect 0 "its report"
run --token "$token" --json wallet --agent-id "$hook"; expect 0 "--token, wallet"
json 'assert d["balance"] == 9990000, d'
ok "an agent's token gates its agent and cannot raise its balance (exit 3)"

run --json agents rotate-token --agent-id "$hook"; expect 0 "agents rotate-token"
json 'assert d["agent_id"] == '"$hook"' and d["token"].startswith("sca_'"$hook"'_"), d'
fresh=$(field token)
[ "$fresh" != "$token" ] || fail "rotate-token gave the same token"
run_as "$token" check --agent-id "$hook" --action openai.chat --estimated-cost 0.01
expect 3 "the replaced token"; err_has "connect to $sock: permission denied: "
run_as "$fresh" check --agent-id "$hook" --action openai.chat --estimated-cost 0.01
expect 0 "the new token"
run agents rotate-token --agent-id "$hook"; expect 0 "agents rotate-token, human"
out_has "sca_$hook"; err_has "shown only now"
ok "agents rotate-token: the old token fails at once"

run --json tokens create --role reader --name dashboard; expect 0 "tokens create"
json 'import re
assert d["role"] == "reader" and d["name"] == "dashboard", d
assert re.fullmatch("scr_%d_[A-Za-z0-9_-]{43}" % d["token_id"], d["token"]), d'
reader=$(field token); reader_id=$(field token_id)
run tokens list; expect 0 "tokens list"; out_has "dashboard"; out_has "reader"
grep -qF "$reader" "$dir/out" && fail "tokens list shows the token"
run --json tokens list; expect 0 "tokens list --json"
json 'assert [t["token_id"] for t in d] == ['"$reader_id"'] and "token" not in d[0], d'
run_as "$reader" --json wallet --agent-id "$hook"; expect 0 "a reader reads a wallet"
run_as "$reader" agents list; expect 0 "a reader lists agents"; out_has "hook-bot"
run_as "$reader" wallet update --agent-id "$hook" --balance 1000000; expect 3 "a reader raising a balance"
run_as "$reader" orgs create --name readers; expect 3 "a reader creating an org"
run_as "$reader" check --agent-id "$hook" --action openai.chat --estimated-cost 0.01
expect 3 "a reader checking"
run --json tokens revoke --token-id "$reader_id"; expect 0 "tokens revoke"
json 'assert d == {"revoked": True}, d'
run tokens revoke --token-id "$reader_id"; expect 2 "tokens revoke, again"
run_as "$reader" agents list; expect 3 "a revoked reader token"
run --json tokens list; expect 0 "tokens list, after the revoke"; json 'assert d == [], d'
ok "tokens create, list and revoke: a reader reads and changes nothing"

# demo runs a daemon of its own (ten simulated minutes in one real second),
# in a directory under $TMPDIR that it removes.
mkdir "$dir/demo" && TMPDIR=$dir/demo && export TMPDIR
# The demo's own daemon is its user's: a token meant for another daemon is not presented.
SIDECARD_TOKEN=sca_1_meant-for-another-daemon "$ctl" --json demo --minutes 10 --speed 600 \
	--daemon "$bin" >"$dir/out" 2>"$dir/err"
rc=$?
expect 0 "demo with SIDECARD_TOKEN set"
json 'names = [a["name"] for a in d["agents"]]
assert names == ["researcher", "booker", "scraper", "oncall", "rogue"], names
assert all(a["checks"] == a["allowed"] + a["blocked"] for a in d["agents"]), d
assert all(a["blocked"] == sum(a["block_reasons"].values()) for a in d["agents"]), d
assert sum(a["blocked"] for a in d["agents"]) > 0, d
rogue = d["agents"][4]
assert rogue["score"] < 650 and rogue["status"] in ("throttled", "frozen"), rogue
assert d["fleet"]["total_agents"] == 5 and d["simulated_minutes"] == 10, d'
run demo --minutes 10 --speed 600 --daemon "$bin"
expect 0 "demo, human"
for name in researcher booker scraper oncall rogue; do out_has "$name"; done
out_has "[ 10/10 min] checks"; out_has "fleet: 5 agents"
run demo --speed 0; expect 2 "demo --speed 0"; err_has "--speed: must be 1 to 100000"
run demo --minutes 1 --daemon /nonexistent/sidecard; expect 2 "demo with no daemon"
err_has "cannot run /nonexistent/sidecard"
[ -z "$(ls -A "$dir/demo")" ] || fail "demo left $(ls "$dir/demo") behind"
ok "demo: five agents against a daemon of its own, human and --json, SIDECARD_TOKEN ignored"

echo "$passed passed, 0 failed"
