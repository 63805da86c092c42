#!/bin/sh
# interop.sh: runs tests/interop.py, the independent Python msgpack-rpc
# client, against a real daemon started on a fresh temporary directory.
# Uses $PYTHON3 (default Debian's /usr/bin/python3, which has python3-msgpack)
# and $SIDECARD_BIN; cleans up on any exit.
set -u

here=$(cd "$(dirname "$0")" && pwd)
bin=${SIDECARD_BIN:-$here/../sidecard/sidecard}
py=${PYTHON3:-/usr/bin/python3}
script=${SIDECARD_SRCDIR:-$here/..}/tests/interop.py

if ! "$py" -c 'import msgpack' 2>/dev/null; then
	echo "interop.sh: $py has no msgpack module (apt-get install python3-msgpack)"
	exit 1
fi

dir=$(mktemp -d /tmp/sidecard-interop.XXXXXX) || exit 1
sock=$dir/sidecard.sock
pid=
cleanup() {
	if [ -n "$pid" ]; then
		kill "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	fi
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

"$bin" --socket "$sock" --state-dir "$dir/state" 2>"$dir/daemon.log" &
pid=$!
i=0
until [ -S "$sock" ]; do
	i=$((i + 1))
	if [ $i -gt 200 ] || ! kill -0 "$pid" 2>/dev/null; then
		echo "interop.sh: the daemon did not start"
		cat "$dir/daemon.log"
		exit 1
	fi
	sleep 0.05
done

"$py" "$script" "$sock"
rc=$?
[ $rc -eq 0 ] || cat "$dir/daemon.log"
exit $rc
