#!/usr/bin/env bash
# Sets msharefs up (scripts/setup.sh) and runs every test: unit and ABI
# tests, integration tests on real FUSE mounts, and the kernel-module tests in
# QEMU. Extra arguments go to `meson test` (e.g. --suite integration).
#
#   scripts/test.sh [--help] [MESON_TEST_ARGS...]
set -euo pipefail
. "$(dirname "$0")/lib.sh"

case "${1:-}" in
-h | --help)
	sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
	exit 0
	;;
esac

"$MSHAREFS_ROOT/scripts/setup.sh"
# PostgreSQL for tests/postgres and bench/postgres.sh (a real database run
# under mshare-run). The package's own cluster is not used.
TEST_PACKAGES=(postgresql postgresql-contrib)
apt_install "${TEST_PACKAGES[@]}"
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
# The integration tests mount FUSE filesystems in private mount namespaces:
# they need root.
exec "${sudo[@]}" meson test -C "$MSHAREFS_BUILD" --print-errorlogs --num-processes 2 "$@"
