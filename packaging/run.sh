#!/bin/sh
# Sets sidecard up on a fresh Debian machine and runs it: installs the build
# dependencies, builds, plays `sidecardctl demo` (five simulated agents for
# an hour against a private daemon, in 30 seconds), then starts the daemon
# on its defaults, shows it gating a few checks with sidecardctl and keeps
# it in the foreground until Ctrl-C.
set -eu
cd "$(dirname "$0")/.."

./packaging/install-deps.sh
[ -x configure ] || ./autogen.sh
[ -f Makefile ] || ./configure
make -j"$(nproc)"

daemon=./sidecard/sidecard
ctl=./libclient/sidecardctl

echo
echo "== sidecardctl demo: five agents, one simulated hour, against a private daemon =="
$ctl demo --daemon $daemon || true

echo
echo "== now sidecard on its defaults =="
$daemon &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT
trap 'exit 0' INT TERM
i=0
until $ctl stats >/dev/null 2>&1 && kill -0 $pid 2>/dev/null; do
	i=$((i + 1))
	if [ $i -gt 100 ] || ! kill -0 $pid 2>/dev/null; then
		echo "sidecard did not start (see its message above)" >&2
		exit 1
	fi
	sleep 0.1
done

run() {
	printf '\n$ sidecardctl %s\n' "$*"
	$ctl "$@" || true
}

org=demo-$(date +%s)
echo
echo "== sidecard is running; a short demo with sidecardctl =="
run orgs create --name "$org"
run agents create --org "$org" --name research-bot --balance 10 --max-per-txn 5 \
	--rule 'name=OpenAI cap,match=openai.*,max-cost-per-txn=2,hourly-rate-limit=3'
# The JSON of an agent begins with its id.
agent=$($ctl --json agents list --org "$org" | sed -n 's/^\[{"id": *\([0-9]*\),.*/\1/p')
run check --agent-id "$agent" --action openai.chat --estimated-cost 1.50
txn=$($ctl check --agent-id "$agent" --action openai.chat --estimated-cost 1.25 || true)
run report --transaction-id "$txn" --outcome success --actual-cost 1.10
run check --agent-id "$agent" --action openai.chat --estimated-cost 2.50
run check --agent-id "$agent" --action flight.booking --estimated-cost 6
run wallet --agent-id "$agent"
run transactions --agent-id "$agent"
run score --agent-id "$agent"
run fleet
echo
echo "== the daemon keeps running (pid $pid); try: $ctl --help; Ctrl-C stops it =="
wait $pid
