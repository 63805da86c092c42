#!/bin/sh
# descriptors.sh: the daemon under a low descriptor limit (prlimit), as a
# service manager or a shell may start it. A hard limit too low for a
# --max-connections given is refused at start with the numbers; the default
# is lowered with a warning; a low soft limit under a higher hard one is
# raised, so that --max-connections connections are served while the
# ledger goes on writing new segments. Needs prlimit (util-linux) and
# $py ($PYTHON3, default /usr/bin/python3) to hold the connections.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
ctl=${SIDECARDCTL_BIN:-$here/../libclient/sidecardctl}
test_dir descriptors

if ! command -v prlimit >/dev/null; then
	echo "# skip: prlimit (util-linux) is not installed"
	exit 0
fi
holder=
cleanup() {
	[ -n "$holder" ] && kill "$holder" 2>/dev/null
	test_cleanup
}
trap cleanup EXIT

timeout 10 prlimit --nofile=64:64 "$bin" --socket "$sock" --state-dir "$dir/state" \
	--max-connections 100 >/dev/null 2>"$dir/daemon.log"
rc=$?
[ $rc -eq 1 ] || fail "--max-connections 100 under a hard limit of 64: exit $rc, expected 1"
grep -q -- "--max-connections 100 needs [0-9]* descriptors .* but the hard limit RLIMIT_NOFILE is 64: raise it .* or give --max-connections [0-9]* or less" \
	"$dir/daemon.log" || fail "the refusal does not give the numbers"
ok "a --max-connections the hard limit cannot hold is refused at start"

prlimit --nofile=64:64 "$bin" --socket "$sock" --state-dir "$dir/state" 2>"$dir/daemon.log" &
pid=$!
daemon_wait() {
	i=0
	until "$ctl" --socket "$sock" stats >/dev/null 2>&1; do
		i=$((i + 1))
		{ [ $i -gt 200 ] || ! kill -0 "$pid" 2>/dev/null; } && fail "the daemon did not start"
		sleep 0.05
	done
}
daemon_wait
grep -q "warn: the hard limit RLIMIT_NOFILE is 64: serving at most [0-9]* connections, not the default 1024" \
	"$dir/daemon.log" || fail "the default --max-connections was not lowered with a warning"
kill "$pid"
wait "$pid" || fail "SIGTERM: the daemon exited $?"
pid=
ok "the default --max-connections is lowered to the hard limit, with a warning"

# 199 idle connections and sidecardctl's: --max-connections 200 with a soft
# limit of 64; the ledger starts a new segment every 4 KiB meanwhile.
prlimit --nofile=64:4096 "$bin" --socket "$sock" --state-dir "$dir/state" --max-connections 200 \
	--segment-size 4096 2>"$dir/daemon.log" &
pid=$!
daemon_wait
grep -q "descriptors: limit 4096 (the soft limit raised from 64); 200 for connections" \
	"$dir/daemon.log" || fail "the start does not log the raised limit"
"$py" - "$sock" 199 >"$dir/held" <<'PY' &
import socket, sys, time
held = []
for _ in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(sys.argv[1])
    held.append(s)
print("held", len(held), flush=True)
time.sleep(120)
PY
holder=$!
i=0
until grep -q "held 199" "$dir/held"; do
	i=$((i + 1))
	{ [ $i -gt 200 ] || ! kill -0 "$holder" 2>/dev/null; } && fail "199 connections were not made"
	sleep 0.05
done
i=0
until [ "$(timeout 10 "$ctl" --socket "$sock" stats 2>/dev/null | awk '$1 == "connections_open" { print $2 }')" = 200 ]; do
	i=$((i + 1))
	[ $i -gt 200 ] && fail "the daemon does not serve 200 connections"
	sleep 0.05
done
ok "a soft limit below --max-connections is raised: 200 connections are served"

segments=$(ls "$dir/state/ledger" | grep -c '\.log$')
timeout 60 "$ctl" --socket "$sock" orgs create --name acme >/dev/null || fail "orgs create"
n=0
while [ $n -lt 60 ]; do
	timeout 10 "$ctl" --socket "$sock" agents create --org acme --name "bot$n" --balance 5 \
		>/dev/null || fail "agents create bot$n with 200 connections open"
	n=$((n + 1))
done
[ "$(ls "$dir/state/ledger" | grep -c '\.log$')" -gt $((segments + 1)) ] ||
	fail "the ledger did not start new segments"
ok "with every connection open the ledger goes on starting segments"

kill "$holder"
wait "$holder" 2>/dev/null
holder=
kill "$pid"
wait "$pid" || fail "SIGTERM: the daemon exited $?"
pid=
echo "$passed passed, $failed failed"
