#!/usr/bin/env bash
# Installs msharefs into a scratch DESTDIR and uses the installed tree only:
# mount(8) with the installed mount.fuse.msharefs helper (a mount -t line and
# an fstab line), the installed examples against the installed daemon,
# msharectl, a program built with the installed header, library and
# pkg-config file, the man pages, the systemd unit and the DKMS tree.
#
#   tests/install/test-install.sh BUILD_DIR
#
# Root: it mounts in a private mount namespace (the host's mounts are not
# touched). Exit 77 (skipped) without unshare or FUSE.
set -euo pipefail
BUILD=$(cd "${1:?usage: test-install.sh BUILD_DIR}" && pwd)
fail() {
	echo "test-install: FAIL: $*" >&2
	exit 1
}
[ "$(id -u)" = 0 ] || { echo "test-install: needs root" >&2; exit 77; }
[ -e /dev/fuse ] || { echo "test-install: no /dev/fuse" >&2; exit 77; }

if [ -z "${MSHAREFS_INSTALL_NS:-}" ]; then
	SCRATCH=$(mktemp -d /tmp/msharefs-install.XXXXXX)
	trap 'rm -rf "$SCRATCH"' EXIT
	DESTDIR=$SCRATCH/root meson install -C "$BUILD" --no-rebuild --quiet >"$SCRATCH/install.log" 2>&1 ||
		{ cat "$SCRATCH/install.log"; fail "meson install"; }
	MSHAREFS_INSTALL_NS=1 SCRATCH=$SCRATCH unshare -m --propagation private "$0" "$BUILD"
	exit
fi

D=$SCRATCH/root
read -r PREFIX LIBDIR SBINDIR BINDIR LIBEXECDIR MANDIR < <(meson introspect "$BUILD" --buildoptions |
	python3 -c 'import json,sys; o={x["name"]:x["value"] for x in json.load(sys.stdin)}; p=o["prefix"]
j=lambda d: d if d.startswith("/") else p+"/"+d
print(p, j(o["libdir"]), j(o["sbindir"]), j(o["bindir"]), j(o["libexecdir"]), j(o["mandir"]))')
export LD_LIBRARY_PATH=$D$LIBDIR
check_file() { [ -e "$D$1" ] || fail "$1 was not installed"; }
for f in "$SBINDIR/msharefsd" "$SBINDIR/mount.fuse.msharefs" "$BINDIR/msharectl" "$BINDIR/mshare-run" "$LIBDIR/libmshare.so" \
	"$LIBDIR/libmshare-preload.so" "$LIBDIR/pkgconfig/msharefs.pc" "$PREFIX/include/linux/msharefs.h" \
	"$PREFIX/include/mshare.h" "$LIBEXECDIR/msharefs/examples/mshare_creator" \
	"$LIBEXECDIR/msharefs/examples/mshare_attacher" "$MANDIR/man5/msharefs.5" "$MANDIR/man8/msharefsd.8" \
	"$MANDIR/man1/msharectl.1" "$MANDIR/man1/mshare-run.1" "$MANDIR/man3/libmshare.3" \
	"$LIBEXECDIR/msharefs/examples/shm_workers"; do
	check_file "$f"
done
echo "test-install: every file in place under $D$PREFIX"

# Man pages render without warnings.
for page in "$D$MANDIR"/man*/*; do
	out=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null) || fail "man -l $page"
	[ -z "$out" ] || fail "man -l $page warns: $out"
done

# The systemd unit (with the installed tree as root).
unit=$(find "$D" -name msharefs.service | head -n 1)
[ -n "$unit" ] || fail "msharefs.service was not installed"
grep -q "^ExecStart=$SBINDIR/mount.fuse.msharefs msharefs /sys/fs/mshare" "$unit" || fail "unit: ExecStart"
if command -v systemd-analyze >/dev/null; then
	# Verified as it would be installed, with its commands in the DESTDIR tree.
	sed "s|$SBINDIR/|$D$SBINDIR/|g" "$unit" >"$SCRATCH/msharefs.service"
	out=$(systemd-analyze verify --man=no "$SCRATCH/msharefs.service" 2>&1) || fail "systemd-analyze verify: $out"
fi

# The DKMS tree builds the module against the newest kernel headers here.
kmod_src=$(find "$D" -maxdepth 5 -type d -name 'msharefs-kmod-*' | head -n 1)
[ -n "$kmod_src" ] || fail "the DKMS tree was not installed"
for f in dkms.conf Kbuild Makefile msharefs_kmod.c uapi/msharefs_kmod.h; do
	[ -e "$kmod_src/$f" ] || fail "DKMS tree: no $f"
done
grep -q "^PACKAGE_VERSION=\"${kmod_src##*-}\"" "$kmod_src/dkms.conf" || fail "dkms.conf: version"
headers=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1 || true)
if [ -n "$headers" ]; then
	cp -r "$kmod_src" "$SCRATCH/kmod"
	make -C "$headers" M="$SCRATCH/kmod" modules >"$SCRATCH/kmod.log" 2>&1 ||
		{ tail -n 20 "$SCRATCH/kmod.log"; fail "the DKMS tree does not build against $headers"; }
	[ -f "$SCRATCH/kmod/msharefs_kmod.ko" ] || fail "no msharefs_kmod.ko from the DKMS tree"
	echo "test-install: the DKMS tree builds against $(basename "$headers")"
fi

# mount(8) finds helpers in /sbin: show it the installed one (this namespace only).
mkdir "$SCRATCH/sbin"
for f in /sbin/*; do ln -s "$f" "$SCRATCH/sbin/${f##*/}"; done
ln -sf "$D$SBINDIR/mount.fuse.msharefs" "$SCRATCH/sbin/mount.fuse.msharefs"
mount --bind "$SCRATCH/sbin" "$(readlink -f /sbin)"
mount -t tmpfs msharefs-test-shm /dev/shm
mkdir -p /run/msharefs
mount -t tmpfs -o mode=0755 msharefs-test-state /run/msharefs

# 1. mount -t fuse.msharefs on /sys/fs/mshare, which sysfs does not have.
before=$(stat -f -c %T /sys/fs/cgroup 2>/dev/null || true)
mount -t fuse.msharefs msharefs /sys/fs/mshare -o datapath=uffd,nofail,align=1G ||
	fail "mount -t fuse.msharefs msharefs /sys/fs/mshare"
[ "$(findmnt -n -o FSTYPE /sys/fs/mshare)" = fuse.msharefs ] || fail "/sys/fs/mshare is not fuse.msharefs"
[ "$(cat /sys/fs/mshare/mshare_info)" = 1073741824 ] || fail "align=1G did not reach msharefsd"
[ "$(stat -f -c %T /sys/fs/cgroup 2>/dev/null || true)" = "$before" ] ||
	fail "/sys/fs/cgroup is not what it was"
for e in /sys/fs/*; do [ -e "$e" ] || fail "$e went missing"; done
echo "test-install: mount -t fuse.msharefs works; /sys/fs keeps $(ls /sys/fs | grep -vcx mshare) entries"

# 2. The installed examples against the installed daemon, and msharectl.
ex=$D$LIBEXECDIR/msharefs/examples
"$ex/mshare_creator" installed 30 >"$SCRATCH/creator.out" 2>&1 &
creator=$!
for _ in $(seq 100); do grep -q "ready" "$SCRATCH/creator.out" && break; sleep 0.1; done
"$D$BINDIR/msharectl" ls >"$SCRATCH/ls.out" 2>&1 || { cat "$SCRATCH/ls.out"; fail "msharectl ls"; }
grep -q "^installed " "$SCRATCH/ls.out" || { cat "$SCRATCH/ls.out"; fail "msharectl ls does not list the region"; }
"$ex/mshare_attacher" installed >"$SCRATCH/attacher.out" 2>&1 || { cat "$SCRATCH/attacher.out"; fail "attacher"; }
wait "$creator" || { cat "$SCRATCH/creator.out"; fail "creator"; }
grep -q "Hello from the mshare creator!" "$SCRATCH/attacher.out" || fail "the attacher did not read the creator's data"
grep -q "was here" "$SCRATCH/creator.out" || fail "the creator did not read the attacher's data"
echo "test-install: installed creator and attacher share memory through the installed daemon"

# 3. The installed mshare-run (with the installed preload library) adopts the
# installed shm_workers' shared memory into a region of the installed daemon.
help=$("$D$BINDIR/mshare-run" --help) && grep -q '^Usage: mshare-run' <<<"$help" || fail "mshare-run --help"
MSHARE_RUN_PRELOAD=$D$LIBDIR/libmshare-preload.so "$D$BINDIR/mshare-run" --verbose -- "$ex/shm_workers" 128 2 \
	>"$SCRATCH/run.out" 2>&1 || { cat "$SCRATCH/run.out"; fail "mshare-run shm_workers"; }
grep -q "in region anon-" "$SCRATCH/run.out" || { cat "$SCRATCH/run.out"; fail "mshare-run adopted nothing"; }
echo "test-install: installed mshare-run adopts shared memory into the installed daemon's regions"

# 3. A program built against the installed header, library and pkg-config file.
cat >"$SCRATCH/prog.c" <<'PROG'
#include <linux/msharefs.h>
#include <mshare.h>
#include <stdio.h>
int main(void)
{
	const char *m = mshare_mount_point();
	unsigned long long align = mshare_alignment();
	if (!m || !align)
		return 1;
	printf("%s %llu %#lx\n", m, align, (unsigned long)MSHAREFS_GET_SIZE);
	return 0;
}
PROG
flags=$(PKG_CONFIG_PATH=$D$LIBDIR/pkgconfig PKG_CONFIG_SYSROOT_DIR=$D pkg-config --cflags --libs msharefs) ||
	fail "pkg-config msharefs"
# shellcheck disable=SC2086 # flags are words
cc -o "$SCRATCH/prog" "$SCRATCH/prog.c" $flags || fail "building against the installed tree ($flags)"
[ "$("$SCRATCH/prog")" = "/sys/fs/mshare 1073741824 0x80107800" ] || fail "the pkg-config built program: $("$SCRATCH/prog")"
umount /sys/fs/mshare
echo "test-install: a program builds with pkg-config msharefs and runs"

# 4. An fstab line.
mkdir -p /tmp/msharefs-fstab-mnt
printf 'msharefs /tmp/msharefs-fstab-mnt fuse.msharefs datapath=pagecache,noauto,nofail,_netdev 0 0\n' >"$SCRATCH/fstab"
mount -T "$SCRATCH/fstab" /tmp/msharefs-fstab-mnt || fail "mount from an fstab line"
[ "$(findmnt -n -o FSTYPE /tmp/msharefs-fstab-mnt)" = fuse.msharefs ] || fail "fstab mount is not msharefs"
[ "$(python3 -c 'import os;print(os.getxattr("/tmp/msharefs-fstab-mnt","user.mshare.unlinked").decode())')" = "[]" ] ||
	fail "the fstab mount does not answer user.mshare.unlinked"
umount /tmp/msharefs-fstab-mnt
rmdir /tmp/msharefs-fstab-mnt
echo "test-install: an fstab line mounts msharefs"
echo "test-install: PASS"
