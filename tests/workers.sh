#!/bin/sh
# workers.sh: the whole integration suite (tests/check_integration) again,
# against daemons serving their connections on two worker threads
# (tests/daemon.c adds --workers $SIDECARD_TEST_WORKERS). Run by make check
# from the build directory.
SIDECARD_TEST_WORKERS=2
export SIDECARD_TEST_WORKERS
exec ./tests/check_integration
