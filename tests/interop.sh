#!/bin/sh
# interop.sh: runs tests/interop.py, the independent Python msgpack-rpc
# client, against a real daemon started on a fresh temporary directory.
# Uses $PYTHON3 (default Debian's /usr/bin/python3, which has python3-msgpack)
# and $SIDECARD_BIN; cleans up on any exit.
set -u

here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
script=${SIDECARD_SRCDIR:-$here/..}/tests/interop.py

if ! "$py" -c 'import msgpack' 2>/dev/null; then
	echo "interop.sh: $py has no msgpack module (apt-get install python3-msgpack)"
	exit 1
fi

test_dir interop
daemon_start || { echo "interop.sh: the daemon did not start"; exit 1; }

"$py" "$script" "$sock"
rc=$?
[ $rc -eq 0 ] || cat "$dir/daemon.log"
exit $rc
