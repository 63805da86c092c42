#!/bin/sh
# clock.sh: steps of the wall clock under a running daemon (docs/DESIGN.md,
# "Time"). Each daemon runs under libfaketime, which fakes CLOCK_REALTIME
# only (FAKETIME_DONT_FAKE_MONOTONIC=1) from a file the test rewrites, and
# with --time-scale 180 (an hour lasts 20 s). Four run side by side.
#
# forward, back: the wall clock steps a year forward and then back, or (on
# a daemon with two worker threads) back and then forward. Each daemon
# exhausts an hourly limit and opens a hold before the first step, and
# opens holds between the steps; it must log each step; keep the hourly
# limit, the holds and the day's spend through both; expire each hold once
# its TTL has elapsed and free the hourly limit once an hour has; roll the
# day (spend back to 0, one refill) at the local midnight that elapsed time
# reaches after the correction; record both steps in its ledger; and
# rebuild the same state from it.
#
# stopped: the daemon is stopped while its clock is a year ahead and
# started after the correction: it must take that as a step back, and keep
# its hold and hourly limit for their elapsed time only.
#
# idle: the clock of a daemon nobody asks steps forward to shortly before
# midnight: it must see the step by itself and refill at that midnight.
#
# Needs libfaketime (Debian package faketime, which packaging/install-deps.sh
# installs; $FAKETIME_LIB names another copy): without it the test is skipped.
# Standalone:
#   SIDECARD_BIN=sidecard/sidecard SIDECARDCTL_BIN=libclient/sidecardctl tests/clock.sh
set -u

here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
ctl=${SIDECARDCTL_BIN:-$here/../libclient/sidecardctl}

lib=${FAKETIME_LIB:-}
if [ -z "$lib" ]; then
	for f in /usr/lib/*/faketime/libfaketimeMT.so.1 /usr/lib/faketime/libfaketimeMT.so.1 \
		/usr/local/lib/faketime/libfaketimeMT.so.1; do
		[ -e "$f" ] && lib=$f && break
	done
fi
if [ -z "$lib" ] || [ ! -e "$lib" ]; then
	echo "SKIP: libfaketime not found (install the faketime package, or set FAKETIME_LIB)"
	exit 77
fi

test_dir clock

scale=180     # a daemon minute lasts a third of a second
ttl=900       # daemon seconds: 5 s real
year=31536000
# The fake clock starts 50 daemon minutes (about 17 s real) before a UTC midnight.
midnight_in=3000
now=$(date +%s)
midnight=$(( (now / 86400 + 2) * 86400 ))
offset=$(( midnight - midnight_in - now ))

# Helpers of the scenarios, each run in a subshell of its own: $name, $sd,
# $workers, $spid and $agent are the scenario's.
fail() {
	echo "FAIL $name: $1"
	echo "--- stdout"; cat "$sd/out" 2>/dev/null
	echo "--- stderr"; cat "$sd/err" 2>/dev/null
	echo "--- daemon log"; cat "$sd/daemon.log"
	return 1
}
ok() { passed=$((passed + 1)); echo "ok $name $passed - $1"; }
run() { "$ctl" --socket "$sd/sock" --json "$@" >"$sd/out" 2>"$sd/err"; rc=$?; return $rc; }
json() {
	"$py" -c "import json, sys
d = json.load(open(sys.argv[1]))
$1" "$sd/out" 2>>"$sd/err"
}
# set_clock SECONDS: the wall clock is SECONDS ahead of the real one (renamed in: never half written)
set_clock() {
	case $1 in -*) echo "$1" ;; *) echo "+$1" ;; esac >"$sd/faketime.new" &&
		mv "$sd/faketime.new" "$sd/faketime"
	# the daemon reads its clock at the next request
	"$ctl" --socket "$sd/sock" stats >/dev/null 2>&1
}
ms() { date +%s%3N; }
wait_until() { while [ "$(ms)" -lt "$1" ]; do sleep 0.2; done; }
txn_id() { "$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["transaction_id"])' "$sd/out"; }
blocked_hourly() { # MESSAGE
	run check --agent-id "$agent" --action api.call --estimated-cost 1
	[ $rc -eq 1 ] && json 'assert d["block_reason"] == "rule:api:hourly_rate_limit", d' ||
		fail "$1"
}
txn_status() { # ID STATUS
	run transactions --agent-id "$agent" --limit 100
	json "assert [t['status'] for t in d if t['id'] == $1] == ['$2'], d" ||
		fail "transaction $1 is not $2"
}

# up: starts the daemon of the scenario in $sd under libfaketime, reading
# its wall clock's offset from $sd/faketime, and waits until it answers. A
# daemon built with the sanitizers must accept a preloaded library before
# its runtime (verify_asan_link_order=0), as the fault tests' does.
up() {
	env LD_PRELOAD="$lib" FAKETIME_TIMESTAMP_FILE="$sd/faketime" FAKETIME_NO_CACHE=1 \
		ASAN_OPTIONS="verify_asan_link_order=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
		FAKETIME_DONT_FAKE_MONOTONIC=1 "$bin" --socket "$sd/sock" --state-dir "$sd/state" \
		--time-scale $scale --hold-ttl $ttl --expiry-charge none --workers $workers \
		2>>"$sd/daemon.log" &
	spid=$!
	i=0
	until "$ctl" --socket "$sd/sock" stats >/dev/null 2>&1; do
		i=$((i + 1))
		if [ $i -gt 200 ] || ! kill -0 $spid 2>/dev/null; then
			echo "$name: the daemon did not start"; cat "$sd/daemon.log"
			return 1
		fi
		sleep 0.05
	done
}

# down: stops it.
down() {
	kill $spid && wait $spid
	spid=
}

# setup: an org and an agent with an hourly limit of 2 on api.* and a
# budget of $100 refilled daily.
setup() {
	run orgs create --name clock-org || fail "orgs create" || return 1
	run agents create --org clock-org --name clock-bot --balance 100 --budget 100 \
		--rule 'name=api,match=api.*,hourly-rate-limit=2' || fail "agents create" || return 1
	agent=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$sd/out")
	run wallet update --agent-id "$agent" --period daily || fail "wallet update --period"
}

# scenario NAME STEP WORKERS: runs one daemon in $dir/NAME, with --workers
# WORKERS, whose wall clock steps by STEP seconds and back; prints its
# results and returns 0 or 1.
scenario() {
	name=$1 step=$2 workers=$3 sd=$dir/$1 passed=0 spid=
	trap '[ -z "$spid" ] || kill $spid 2>/dev/null' EXIT
	mkdir "$sd" || return 1
	echo "+$offset" >"$sd/faketime"
	up || return 1

	start=$(ms)
	setup || return 1
	run check --agent-id "$agent" --action api.call --estimated-cost 1 || fail "check 1" || return 1
	c1=$(txn_id)
	c1_at=$(ms)
	run check --agent-id "$agent" --action api.call --estimated-cost 1 || fail "check 2" || return 1
	c2=$(txn_id)
	run report --transaction-id "$c2" --outcome success --actual-cost 1 || fail "report" || return 1
	blocked_hourly "the third check in the hour is not blocked by the hourly limit" || return 1
	ok "an hourly limit exhausted, a hold open, \$1 spent today"

	set_clock $((offset + step))
	if [ "$step" -gt 0 ]; then dir1=forward dir2=back; else dir1=back dir2=forward; fi
	grep -qE "wall clock stepped $dir1 by 3153(5999\.9|6000\.0)" "$sd/daemon.log" ||
		fail "no log line of the step $dir1" || return 1
	blocked_hourly "the step $dir1 freed the hourly limit" || return 1
	txn_status "$c1" pending || return 1
	run spend --agent-id "$agent"
	json 'assert d["daily"] == 1000000, d' || fail "the day's spend did not carry over the step" ||
		return 1
	run check --agent-id "$agent" --action tool.call --estimated-cost 1 ||
		fail "a check after the step" || return 1
	h3=$(txn_id)
	h3_at=$(ms)
	ok "stepped $dir1 a year: logged; hourly limit, hold and the day's spend kept"

	wait_until $((h3_at + ttl * 1000 / scale + 1500))
	txn_status "$c1" expired || return 1
	txn_status "$h3" expired || return 1
	ok "the holds from before and after the step expired after their TTL"

	run check --agent-id "$agent" --action tool.call --estimated-cost 1 ||
		fail "a check before the correction" || return 1
	h4=$(txn_id)
	set_clock $offset
	grep -qE "wall clock stepped $dir2 by 3153(5999\.9|6000\.0)" "$sd/daemon.log" ||
		fail "no log line of the step $dir2" || return 1
	blocked_hourly "the step $dir2 freed the hourly limit" || return 1
	txn_status "$h4" pending || return 1
	run spend --agent-id "$agent"
	json "assert d['daily'] == 1000000 and d['daily_reset_at'] == $midnight * 1000000, d" ||
		fail "the day's spend or its end did not carry back" || return 1
	ok "stepped $dir2 again: logged; hourly limit, hold and the day's spend kept"

	# midnight, then the end of the hour after the first check: 64 daemon minutes at
	# most, and each step moves the window by whole 4-minute buckets, rounded up
	wait_until $((start + 1000 * midnight_in / scale + 1500))
	wait_until $((c1_at + 1000 * 72 * 60 / scale + 1500))
	txn_status "$h4" expired || return 1
	ok "the hold placed before the correction expired after its TTL"
	run check --agent-id "$agent" --action api.call --estimated-cost 1 ||
		fail "the hourly limit did not free after an hour" || return 1
	c5=$(txn_id)
	ok "the hourly limit freed after an hour"
	run spend --agent-id "$agent"
	json "assert d['daily'] == 0 and d['daily_reset_at'] == ($midnight + 86400) * 1000000, d" ||
		fail "the day did not roll at the midnight that elapsed time reached" || return 1
	run transactions --agent-id "$agent" --limit 100
	json "r = [t for t in d if t['type'] == 'refill']
assert len(r) == 1 and $midnight * 1000000 <= r[0]['created_at'] < ($midnight + 600) * 1000000, r" ||
		fail "not one refill, at midnight" || return 1
	ok "the day rolled at midnight after the correction: spend 0, one refill"
	run report --transaction-id "$c5" --outcome success --actual-cost 1 ||
		fail "report of the last check" || return 1
	run spend --agent-id "$agent"
	cp "$sd/out" "$sd/spend.before"
	run transactions --limit 1000
	cp "$sd/out" "$sd/transactions.before"
	down || fail "the daemon did not stop cleanly" || return 1

	"$ctl" ledger export --state-dir "$sd/state" >"$sd/out" 2>"$sd/err"
	"$py" -c "import json, sys
steps = [r['body'][0] for r in map(json.loads, open(sys.argv[1])) if r['type'] == 'clock']
assert len(steps) == 2 and abs(steps[0] - ($step) * 1000000) < 1000 and \\
	abs(steps[0] + steps[1]) < 2000, steps" "$sd/out" 2>>"$sd/err" ||
		fail "the ledger does not hold the two steps" || return 1
	ok "the ledger records both steps"

	# Without the segment and snapshots the state is rebuilt from the ledger
	# alone, each method record replaying to its recorded result. The scaled
	# clock ran ahead of the wall clock: the restart finds it behind the
	# ledger, a step back while stopped, which moves the calendar only.
	rm -rf "$sd/sock.shm" "$sd/state/checkpoints"
	up || fail "the daemon did not replay its ledger" || return 1
	grep -q "rebuilt the state from record" "$sd/daemon.log" || fail "no rebuild" || return 1
	grep -q "wall clock stepped back by .* while the daemon was stopped" "$sd/daemon.log" ||
		fail "no log line of the step back while stopped" || return 1
	run transactions --limit 1000
	cmp -s "$sd/out" "$sd/transactions.before" ||
		fail "transactions differ after the replay" || return 1
	run spend --agent-id "$agent"
	"$py" -c "import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:])
assert all(a[k] == b[k] for k in ('total', 'daily', 'weekly', 'monthly', 'held')), (a, b)" \
		"$sd/out" "$sd/spend.before" 2>>"$sd/err" || fail "spend differs after the replay" ||
		return 1
	ok "a replay of the ledger rebuilds the same state; the restart behind it is a step back"
	down
	echo "$name: $passed passed"
}

# stopped: the daemon is stopped while its wall clock is a year ahead and
# started again once the clock is corrected: the hold and the hourly limit
# from before the stop are not left a year in the future.
stopped() {
	name=stopped workers=1 sd=$dir/stopped passed=0 spid=
	trap '[ -z "$spid" ] || kill $spid 2>/dev/null' EXIT
	mkdir "$sd" || return 1
	echo "+$offset" >"$sd/faketime"
	up || return 1
	setup || return 1
	set_clock $((offset + year))
	run check --agent-id "$agent" --action api.call --estimated-cost 1 || fail "check 1" || return 1
	c1=$(txn_id)
	c1_at=$(ms)
	run check --agent-id "$agent" --action api.call --estimated-cost 1 || fail "check 2" || return 1
	down || fail "the daemon did not stop cleanly" || return 1
	set_clock $offset
	up || return 1
	grep -qE "wall clock stepped back by 3153[0-9]{4}\.[0-9]{3} s while the daemon was stopped" \
		"$sd/daemon.log" || fail "no log line of the step back while stopped" || return 1
	blocked_hourly "the restart freed the hourly limit" || return 1
	txn_status "$c1" pending || return 1
	ok "restarted a year back: logged; hourly limit and hold kept"
	wait_until $((c1_at + ttl * 1000 / scale + 1500))
	txn_status "$c1" expired || return 1
	ok "the hold expired after its TTL"
	wait_until $((c1_at + 1000 * 68 * 60 / scale + 1500))
	run check --agent-id "$agent" --action api.call --estimated-cost 1 ||
		fail "the hourly limit did not free after an hour" || return 1
	ok "the hourly limit freed after an hour"
	down
	echo "$name: $passed passed"
}

# idle: the clock of a daemon that nothing asks steps forward to 45 daemon
# minutes (15 s) before midnight, which was 3 hours (60 s) away: the daemon
# sees the step within 10 s (its timer's longest wait) and refills at that
# midnight.
idle() {
	name=idle workers=1 sd=$dir/idle passed=0 spid=
	trap '[ -z "$spid" ] || kill $spid 2>/dev/null' EXIT
	mkdir "$sd" || return 1
	echo "+$((midnight - 10800 - now))" >"$sd/faketime"
	up || return 1
	setup || return 1
	run check --agent-id "$agent" --action tool.call --estimated-cost 1 || fail "check" || return 1
	run report --transaction-id "$(txn_id)" --outcome success --actual-cost 1 ||
		fail "report" || return 1
	# the daemon's time is the fake wall clock plus (scale - 1) x the real time since its start
	echo "+$((midnight - 2700 - now - scale * ($(date +%s) - now)))" >"$sd/faketime.new" &&
		mv "$sd/faketime.new" "$sd/faketime"
	stepped=$(ms)
	wait_until $((stepped + 2700000 / scale + 2500))
	grep -qE "wall clock stepped forward by " "$sd/daemon.log" ||
		fail "no log line of the step" || return 1
	run transactions --agent-id "$agent" --limit 100
	json "r = [t for t in d if t['type'] == 'refill']
assert len(r) == 1 and r[0]['created_at'] >= $midnight * 1000000, r" ||
		fail "no refill at the midnight the step brought near" || return 1
	ok "an idle daemon saw the step and refilled at midnight"
	down
	echo "$name: $passed passed"
}

scenario forward $year 1 >"$dir/forward.out" 2>&1 &
fpid=$!
# with worker threads, a step is taken by a request on a worker and wakes the main loop
scenario back -$year 2 >"$dir/back.out" 2>&1 &
bpid=$!
stopped >"$dir/stopped.out" 2>&1 &
opid=$!
idle >"$dir/idle.out" 2>&1 &
ipid=$!
wait $fpid; frc=$?
wait $bpid; brc=$?
wait $opid; orc=$?
wait $ipid; irc=$?
cat "$dir/forward.out" "$dir/back.out" "$dir/stopped.out" "$dir/idle.out"
[ $frc -eq 0 ] && [ $brc -eq 0 ] && [ $orc -eq 0 ] && [ $irc -eq 0 ] || exit 1
