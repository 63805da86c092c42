#!/bin/sh
# Installs everything sidecard needs to build and test on Debian (bookworm or
# later): the toolchain, autotools, the five libraries, and the tools the test
# suite uses (Debian's python3 with python3-msgpack for the interop test, and
# tzdata, whose zone files the time zone tests resolve; faketime, whose
# libfaketime steps the daemon's wall clock in tests/clock.sh), and the peer of the
# gate benchmark (bench/gate_bench, built and smoke-run by make check):
# redis-server and hiredis (libhiredis-dev), the C client it calls Redis with.
# Safe to run again; needs root or sudo.
set -eu

packages="build-essential autoconf automake libtool pkg-config \
libuv1-dev libmsgpack-dev liburcu-dev libsodium-dev check \
python3 python3-msgpack tzdata faketime \
redis-server libhiredis-dev"

if [ "$(id -u)" -ne 0 ]; then
	SUDO=sudo
else
	SUDO=
fi

missing=
for p in $packages; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
		missing="$missing $p"
done

if [ -n "$missing" ]; then
	export DEBIAN_FRONTEND=noninteractive
	$SUDO apt-get update -q
	# shellcheck disable=SC2086
	$SUDO apt-get install -y -q --no-install-recommends $missing
fi
