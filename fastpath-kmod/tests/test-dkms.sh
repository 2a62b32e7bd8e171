#!/usr/bin/env bash
# The module as an operator installs it: `meson install` puts its DKMS source
# tree in PREFIX/src; dkms add/build/install it for the guest's kernel (trees
# in a scratch directory), and the guest loads it with modprobe, mounts
# msharefsd on datapath=kmod and runs the installed creator/attacher examples.
#
#   fastpath-kmod/tests/test-dkms.sh BUILD_DIR RUN_GUEST GUEST_EXAMPLES
set -euo pipefail
BUILD=$(cd "${1:?usage: test-dkms.sh BUILD_DIR RUN_GUEST GUEST_EXAMPLES}" && pwd)
RUN_GUEST=${2:?usage: test-dkms.sh BUILD_DIR RUN_GUEST GUEST_EXAMPLES}
GUEST_EXAMPLES=${3:?usage: test-dkms.sh BUILD_DIR RUN_GUEST GUEST_EXAMPLES}
fail() {
	echo "test-dkms: FAIL: $*" >&2
	exit 1
}
[ "$(id -u)" = 0 ] || { echo "test-dkms: needs root (dkms)" >&2; exit 77; }

SCRATCH=$(mktemp -d /tmp/msharefs-dkms.XXXXXX)
trap 'rm -rf "$SCRATCH"' EXIT
D=$SCRATCH/root
DESTDIR=$D meson install -C "$BUILD" --no-rebuild --quiet >"$SCRATCH/install.log" 2>&1 ||
	{ cat "$SCRATCH/install.log"; fail "meson install"; }
src=$(find "$D" -maxdepth 5 -type d -name 'msharefs-kmod-*' | head -n 1)
[ -n "$src" ] || fail "meson install put no msharefs-kmod-VERSION tree under PREFIX/src"
examples=$(dirname "$(find "$D" -type f -name mshare_creator -perm -u+x | head -n 1)")
[ -x "$examples/mshare_creator" ] && [ -x "$examples/mshare_attacher" ] || fail "no installed examples"

rc=0
"$RUN_GUEST" --dkms "$src" --add "$examples/mshare_creator" --add "$examples/mshare_attacher" \
	--add "$GUEST_EXAMPLES" -- /"$(basename "$GUEST_EXAMPLES")" >"$SCRATCH/out" 2>"$SCRATCH/err" || rc=$?
cat "$SCRATCH/err" "$SCRATCH/out"
[ "$rc" = 0 ] || fail "the guest run failed (status $rc)"
grep -q '^run-guest.sh: dkms installed .*/updates/dkms/msharefs_kmod\.ko' "$SCRATCH/err" ||
	fail "dkms did not install the module under updates/dkms"
grep -q '^guest: modprobe msharefs_kmod loaded /lib/modules/.*/updates/dkms/msharefs_kmod\.ko' "$SCRATCH/err" ||
	fail "the guest did not load the module with modprobe from updates/dkms"
grep -q '^guest: msharefsd -o datapath=kmod mounted' "$SCRATCH/err" || fail "msharefsd did not mount on datapath=kmod"
grep -q 'creator: got "attacher' "$SCRATCH/out" || fail "the installed examples did not share memory"
echo "test-dkms: dkms built and installed $(basename "$src"); modprobe loaded it; the installed examples ran on it"
