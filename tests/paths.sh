#!/bin/sh
# paths.sh: the daemon's files and who may stand behind them, as another
# local user would attack them: a default socket directory made by someone
# else or left open, symbolic links planted at the lock files, the modes of
# the state directory, ledger, snapshots and segment, and clients that
# refuse a daemon of a uid they do not expect (sidecardctl, through
# libsidecard). The cases that need a second uid run as root, with
# throwaway users made here and removed on exit; otherwise they are skipped
# with the reason printed.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
ctl=${SIDECARDCTL_BIN:-$here/../libclient/sidecardctl}
test_dir paths

# refused EXPECT CMD...: CMD (a daemon) exits 1 and its log contains EXPECT
refused() {
	expect=$1
	shift
	timeout 10 "$@" >/dev/null 2>"$dir/daemon.log"
	rc=$?
	[ $rc -eq 1 ] || fail "$*: exit $rc, expected 1"
	grep -qF -- "$expect" "$dir/daemon.log" || fail "$*: the log does not say '$expect'"
}

# wait_socket PATH: until PATH is a socket and the daemon $pid answers, at most 10 s
wait_socket() {
	i=0
	until [ -S "$1" ]; do
		i=$((i + 1))
		{ [ $i -gt 200 ] || ! kill -0 "$pid" 2>/dev/null; } && fail "the daemon did not start"
		sleep 0.05
	done
}

stop_daemon() {
	kill "$pid"
	wait "$pid" || fail "SIGTERM: the daemon exited $?"
	pid=
}

mode() { stat -c %a "$1"; }

# ---- a default socket directory someone else left open, links at its lock files

echo victim >"$dir/victim"
mkdir -p "$dir/xdg/sidecard"
chmod 0777 "$dir/xdg/sidecard"
ln -s "$dir/victim" "$dir/xdg/sidecard/sidecard.sock.lock"
ln -s "$dir/victim" "$dir/xdg/sidecard/sidecard.shm.lock"
refused "mode 0777, where a default directory must be 0700" \
	env -u SIDECARD_SOCKET XDG_RUNTIME_DIR="$dir/xdg" "$bin" --state-dir "$dir/state"
[ "$(cat "$dir/victim")" = victim ] || fail "the daemon wrote through a planted link"
ok "a default socket directory wider than 0700 is refused"

chmod 0700 "$dir/xdg/sidecard"
refused "sidecard.shm.lock is a symbolic link: refusing to follow it" \
	env -u SIDECARD_SOCKET XDG_RUNTIME_DIR="$dir/xdg" "$bin" --state-dir "$dir/state"
[ "$(cat "$dir/victim")" = victim ] || fail "the daemon wrote through a planted link"
rm "$dir/xdg/sidecard/sidecard.shm.lock"
refused "sidecard.sock.lock is a symbolic link: refusing to follow it" \
	env -u SIDECARD_SOCKET XDG_RUNTIME_DIR="$dir/xdg" "$bin" --state-dir "$dir/state"
[ "$(cat "$dir/victim")" = victim ] || fail "the daemon wrote through a planted link"
[ -e "$dir/xdg/sidecard/sidecard.sock" ] && fail "a socket was bound beside a planted link"
ok "a symbolic link at a lock file is refused, not followed"

mkdir -m 0777 "$dir/open"
chmod 0777 "$dir/open"
refused "directory $dir/open: mode 0777 lets every user write it, without the sticky bit" \
	"$bin" --socket "$dir/open/s.sock" --state-dir "$dir/state"
refused "directory $dir/open (above $dir/open/state): mode 0777" \
	"$bin" --socket "$sock" --state-dir "$dir/open/state"
ok "a --socket or --state-dir under a directory every user may write is refused"

chmod 1777 "$dir/open"
"$bin" --socket "$dir/open/s.sock" --state-dir "$dir/state" 2>"$dir/daemon.log" &
pid=$!
wait_socket "$dir/open/s.sock"
"$ctl" --socket "$dir/open/s.sock" stats >/dev/null || fail "stats on a socket in a sticky directory"
stop_daemon
ok "a --socket in a sticky directory such as /tmp is accepted"
rm -rf "$dir/state"

# ---- modes of what the daemon makes

"$bin" --socket "$sock" --state-dir "$dir/state" --checkpoint-records 1 2>"$dir/daemon.log" &
pid=$!
wait_socket "$sock"
"$ctl" --socket "$sock" orgs create --name acme >/dev/null || fail "orgs create"
"$ctl" --socket "$sock" orgs create --name beta >/dev/null || fail "orgs create"
i=0
until ls "$dir/state/checkpoints/"*.snap >/dev/null 2>&1; do
	i=$((i + 1))
	[ $i -gt 200 ] && fail "no snapshot was written"
	sleep 0.05
done
stop_daemon
[ "$(mode "$dir/state")" = 700 ] || fail "state directory mode $(mode "$dir/state")"
[ "$(mode "$dir/state/ledger")" = 700 ] || fail "ledger directory mode $(mode "$dir/state/ledger")"
[ "$(mode "$dir/state/checkpoints")" = 700 ] ||
	fail "checkpoints directory mode $(mode "$dir/state/checkpoints")"
for f in "$dir/state/ledger/"*.log "$dir/state/checkpoints/"*.snap "${sock%.sock}.shm" \
	"$dir/state/sidecard.lock"; do
	[ "$(mode "$f")" = 600 ] || fail "$f: mode $(mode "$f"), expected 600"
done
ok "the state directory is 0700; ledger segments, snapshots and the segment are 0600"

# ---- other users (root only)

if [ "$(id -u)" -ne 0 ]; then
	echo "# skip: the cases with a second uid need root, to create throwaway users"
	echo "$passed passed, $failed failed"
	exit 0
fi
if ! command -v useradd >/dev/null || ! command -v setpriv >/dev/null; then
	echo "# skip: the cases with a second uid need useradd and setpriv"
	echo "$passed passed, $failed failed"
	exit 0
fi

victim=scv$$
attacker=sca$$
useradd -M -r -s /usr/sbin/nologin "$victim" || fail "useradd $victim"
useradd -M -r -s /usr/sbin/nologin "$attacker" || { userdel "$victim"; fail "useradd $attacker"; }
vuid=$(id -u "$victim")
auid=$(id -u "$attacker")
vtmp=/tmp/sidecard-$vuid
shared=
users_cleanup() {
	test_cleanup
	rm -rf "$vtmp" "$shared"
	userdel "$victim" 2>/dev/null
	userdel "$attacker" 2>/dev/null
}
trap users_cleanup EXIT
chmod 0711 "$dir"
# a command run by the victim (a word list, not a function: "&" then gives the daemon's pid)
as_victim="setpriv --reuid=$victim --regid=$victim --clear-groups"

# The issue's attack: the attacker makes the victim's default directory first.
rm -rf "$vtmp"
mkdir -m 0777 "$vtmp"
chmod 0777 "$vtmp"
chown "$attacker" "$vtmp"
mkdir -m 0755 "$dir/vhome"
chown "$victim" "$dir/vhome"
echo victim >"$dir/vhome/file"
chown "$victim" "$dir/vhome/file"
ln -s "$dir/vhome/file" "$vtmp/sidecard.sock.lock"
ln -s "$dir/vhome/file" "$vtmp/sidecard.shm.lock"
refused "directory $vtmp (above $vtmp/state): owned by uid $auid, neither root nor the daemon's uid $vuid" \
	$as_victim env -u SIDECARD_SOCKET -u XDG_RUNTIME_DIR -u XDG_STATE_HOME -u HOME "$bin"
refused "directory $vtmp: owned by uid $auid, not by the daemon's uid $vuid: another user made" \
	$as_victim env -u SIDECARD_SOCKET -u XDG_RUNTIME_DIR HOME="$dir/vhome" "$bin"
[ "$(cat "$dir/vhome/file")" = victim ] || fail "the daemon wrote the victim's file through a link"
ok "/tmp/sidecard-<uid> made by another user is refused; the victim's file is untouched"
rm -rf "$vtmp"

# A client refuses a daemon run by a uid it does not expect.
shared=$(mktemp -d /tmp/sidecard-shared.XXXXXX) || fail "mktemp"
chown "$victim" "$shared"
$as_victim "$bin" --socket "$shared/s.sock" --state-dir "$shared/state" --socket-mode 0666 \
	2>"$dir/daemon.log" &
pid=$!
wait_socket "$shared/s.sock"
"$ctl" --socket "$shared/s.sock" stats >/dev/null 2>"$dir/err" &&
	fail "root's client accepted a daemon of uid $vuid in a directory under /tmp"
grep -qF "the daemon behind the socket $shared/s.sock is uid $vuid ($victim), not one expected" \
	"$dir/err" || fail "the refusal does not name the uid: $(cat "$dir/err")"
ok "a client refuses a daemon of another uid, naming it"
SIDECARD_DAEMON_UID=$victim "$ctl" --socket "$shared/s.sock" orgs create --name acme >/dev/null ||
	fail "SIDECARD_DAEMON_UID=$victim: not accepted"
SIDECARD_DAEMON_UID=$vuid "$ctl" --socket "$shared/s.sock" agents create --org acme --name bot \
	--balance 5 >/dev/null || fail "SIDECARD_DAEMON_UID=$vuid: not accepted"
SIDECARD_DAEMON_UID=no-such-user-$$ "$ctl" --socket "$shared/s.sock" stats >/dev/null 2>"$dir/err" &&
	fail "a SIDECARD_DAEMON_UID naming no user was accepted"
grep -qF "SIDECARD_DAEMON_UID: 'no-such-user-$$' is neither a uid nor a user name" "$dir/err" ||
	fail "bad SIDECARD_DAEMON_UID: $(cat "$dir/err")"
ok "SIDECARD_DAEMON_UID names the daemon's user, by name or number"
"$ctl" peek --segment "$shared/s.shm" --agent-id 1 >/dev/null 2>"$dir/err" &&
	fail "peek read a segment owned by uid $vuid"
grep -qF "the owner of the state file $shared/s.shm is uid $vuid ($victim)" "$dir/err" ||
	fail "peek's refusal: $(cat "$dir/err")"
SIDECARD_DAEMON_UID=$victim "$ctl" peek --segment "$shared/s.shm" --agent-id 1 >/dev/null ||
	fail "peek with SIDECARD_DAEMON_UID=$victim"
ok "peek refuses a segment owned by another uid unless SIDECARD_DAEMON_UID names it"
stop_daemon

# A directory that only root could have given to the daemon's user is trusted.
mkdir -m 0755 "$dir/run"
mkdir -m 0700 "$dir/run/sidecard"
chown "$victim" "$dir/run/sidecard"
$as_victim "$bin" --socket "$dir/run/sidecard/s.sock" --state-dir "$dir/run/sidecard/state" \
	--socket-mode 0666 2>"$dir/daemon.log" &
pid=$!
wait_socket "$dir/run/sidecard/s.sock"
"$ctl" --socket "$dir/run/sidecard/s.sock" stats >/dev/null ||
	fail "the owner of a directory in a root-only directory was not trusted"
stop_daemon
ok "the owner of a socket directory that only root could give is trusted"

echo "$passed passed, $failed failed"
