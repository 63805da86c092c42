#!/bin/sh
# options.sh: the daemon's command line and config file, as an operator uses
# them: --help lists every option, bad options and values are refused with
# the option named, a config file sets options and the command line
# overrides it, and the socket gets its mode.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
ctl=${SIDECARDCTL_BIN:-$here/../libclient/sidecardctl}
test_dir options

# refused EXPECT ARGS...: the daemon exits 2 and its stderr contains EXPECT
refused() {
	expect=$1
	shift
	"$bin" "$@" >/dev/null 2>"$dir/err"
	rc=$?
	[ $rc -eq 2 ] || fail "$*: exit $rc, expected 2"
	grep -qF -- "$expect" "$dir/err" || fail "$*: '$(cat "$dir/err")' does not say '$expect'"
	ok "refused: $*"
}

"$bin" --help >"$dir/help" || fail "--help exits non-zero"
for o in socket state-dir config socket-mode socket-group hold-ttl expiry-charge orgs agents \
	rules holds history events max-connections max-outstanding max-message log-level \
	durability commit-interval commit-batch segment-size checkpoint-records \
	checkpoint-interval time-scale workers; do
	grep -q -- "--$o " "$dir/help" || fail "--help does not list --$o"
done
ok "--help lists every option"

refused "unknown option '--bogus'" --bogus
refused "hold-ttl: '0' is not a number from 1" --hold-ttl 0
refused "durability: 'sometimes' is not strict or async" --durability sometimes
refused "socket-mode: '999' is not an octal number" --socket-mode 999
refused "hold-ttl: needs a value" --hold-ttl
refused "time-scale: '0' is not a number from 1 to 100000" --time-scale 0
refused "time-scale: 'abc' is not a number from 1 to 100000" --time-scale abc
refused "workers: '0' is not a number from 1 to 64" --workers 0
refused "workers: '65' is not a number from 1 to 64" --workers 65

cat >"$dir/bad.conf" <<CONF
# a comment
hold-ttl = 5
no-such-key = 1
CONF
refused "bad.conf:3: unknown key 'no-such-key'" --config "$dir/bad.conf"

cat >"$dir/sidecard.conf" <<CONF
# sidecard settings
socket = $sock
state-dir = $dir/state

hold-ttl = 7
log-level = debug
workers = 2
CONF
"$bin" --config "$dir/sidecard.conf" --hold-ttl 9 2>"$dir/daemon.log" &
pid=$!
i=0
until "$ctl" --socket "$sock" stats >/dev/null 2>&1; do
	i=$((i + 1))
	{ [ $i -gt 200 ] || ! kill -0 "$pid" 2>/dev/null; } && fail "daemon with --config did not start"
	sleep 0.05
done
ok "the config file's socket and state-dir are used"
grep -q "hold ttl 9s" "$dir/daemon.log" || fail "--hold-ttl 9 did not override the file's 7"
ok "the command line overrides the config file"
grep -q "with 2 worker threads" "$dir/daemon.log" || fail "workers = 2 did not start two workers"
ok "the config file's workers start worker threads"
[ "$(stat -c %a "$sock")" = 660 ] || fail "socket mode $(stat -c %a "$sock"), expected 660"
ok "the socket has mode 0660"
"$bin" --socket "$sock" --state-dir "$dir/state2" 2>"$dir/err2"
rc=$?
# its segment is the first one's, beside the socket: that lock is taken first
[ $rc -ne 0 ] && grep -q "another sidecard is using the state segment ${sock%.sock}.shm (pid $pid)" "$dir/err2" ||
	fail "a second daemon on the same socket: exit $rc, $(cat "$dir/err2")"
ok "a second daemon on the same socket is refused"
kill "$pid"
wait "$pid" || fail "SIGTERM: the daemon exited $?"
pid=
[ -e "$sock" ] && fail "the socket is left behind after SIGTERM"
ok "SIGTERM stops the daemon cleanly and removes the socket"

echo "$passed passed, $failed failed"
