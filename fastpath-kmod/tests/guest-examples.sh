#!/bin/sh
# Runs the documented creator/attacher examples in the QEMU guest, against
# msharefsd mounted at /sys/fs/mshare (the mount point the module creates).
set -e
grep -q ' /sys/fs/mshare fuse.msharefs ' /proc/mounts || { echo "msharefsd is not mounted"; exit 1; }
/mshare_creator guest-example 30 > /tmp/creator.log 2>&1 &
creator=$!
i=0
until grep -q 'creator: ready' /tmp/creator.log; do
	i=$((i + 1))
	[ $i -lt 100 ] || { cat /tmp/creator.log; exit 1; }
	sleep 0.1
done
# The window must be the module's (not expandable, attached to a module
# region), not the FUSE page cache.
awk '/^20000000000-/ { w = 1 } w && /^VmFlags:/ { print; exit }' /proc/$creator/smaps > /tmp/flags
echo "creator's window: $(cat /tmp/flags)"
grep -q ' de ' /tmp/flags || { echo "the window is not the module's"; kill $creator; exit 1; }
awk 'NR > 1 && $6 >= 1 { found = 1 } END { exit !found }' /proc/msharefs_kmod ||
	{ echo "no module region has a window:"; cat /proc/msharefs_kmod; kill $creator; exit 1; }
/mshare_attacher guest-example
wait $creator
cat /tmp/creator.log
grep -q 'creator: got "attacher' /tmp/creator.log
