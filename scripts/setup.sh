#!/usr/bin/env bash
# Installs what msharefs needs to build and test on Debian 12 (apt-get) and
# builds it into build/ (or $MSHAREFS_BUILD).
#
#   scripts/setup.sh [--help]
set -euo pipefail
. "$(dirname "$0")/lib.sh"

case "${1:-}" in
-h | --help)
	sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'
	exit 0
	;;
"") ;;
*) die "unknown argument '$1' (try --help)" ;;
esac

BUILD_PACKAGES=(
	g++ gcc-multilib g++-multilib meson ninja-build pkg-config
	libfuse3-dev fuse3 libboost-dev libtbb-dev doctest-dev nlohmann-json3-dev gnuplot-nox
	util-linux procps
)
apt_install "${BUILD_PACKAGES[@]}"

if [ ! -f "$MSHAREFS_BUILD/build.ninja" ]; then
	say "configuring $MSHAREFS_BUILD"
	meson setup "$MSHAREFS_BUILD" "$MSHAREFS_ROOT" >/dev/null
fi
say "building"
meson compile -C "$MSHAREFS_BUILD" >/dev/null || meson compile -C "$MSHAREFS_BUILD"
