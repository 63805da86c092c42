# lib.sh: sourced by the shell tests (tests/cli.sh, tests/interop.sh) to run
# a real daemon on a fresh temporary directory.
#
# Sets $bin ($SIDECARD_BIN, else the in-tree daemon) and $py ($PYTHON3,
# else Debian's /usr/bin/python3); expects $here, the tests directory.
# test_dir makes $dir and $sock and removes both, stopping the daemon, on
# any exit; daemon_start starts the daemon and waits until it is ready.

bin=${SIDECARD_BIN:-$here/../sidecard/sidecard}
py=${PYTHON3:-/usr/bin/python3}

# test_dir NAME: a new /tmp/sidecard-NAME.XXXXXX into $dir, $sock inside it.
test_dir() {
	dir=$(mktemp -d "/tmp/sidecard-$1.XXXXXX") || exit 1
	sock=$dir/sidecard.sock
	pid=
	trap test_cleanup EXIT
	trap 'exit 1' INT TERM
}

# ok DESCRIPTION counts a passed step; fail DESCRIPTION prints it with the
# daemon's log ($dir/daemon.log) and exits 1. A test may define its own.
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok $passed - $1"; }
fail() {
	failed=$((failed + 1))
	echo "not ok - $1"
	[ -f "$dir/daemon.log" ] && sed 's/^/# /' "$dir/daemon.log"
	echo "$passed passed, $failed failed"
	exit 1
}

test_cleanup() {
	if [ -n "$pid" ]; then
		kill "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	fi
	rm -rf "$dir"
}

# daemon_start [READY...]: starts $bin on $sock (its stderr in
# $dir/daemon.log, its pid in $pid) and waits, at most 10 s, until the
# socket exists and the command READY, if given, succeeds. Returns 1 after
# printing the daemon's log when the daemon exits or is not ready in time.
daemon_start() {
	"$bin" --socket "$sock" --state-dir "$dir/state" 2>"$dir/daemon.log" &
	pid=$!
	i=0
	until [ -S "$sock" ] && { [ $# -eq 0 ] || "$@" >/dev/null 2>&1; }; do
		i=$((i + 1))
		if [ $i -gt 200 ] || ! kill -0 "$pid" 2>/dev/null; then
			cat "$dir/daemon.log"
			return 1
		fi
		sleep 0.05
	done
}
