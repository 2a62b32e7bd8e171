#!/bin/sh
# In the QEMU guest, on datapath=kmod: a region's memory is charged to its
# owner's memory cgroup (msharefsd creates it through a host process there),
# not to the cgroup of the process that touches it first; and the owner's
# memory.max pushes it to swap and back intact.
set -e
grep -q ' /sys/fs/mshare fuse.msharefs ' /proc/mounts || { echo "msharefsd is not mounted"; exit 1; }
mkdir -p /sys/fs/cgroup
mount -t cgroup2 none /sys/fs/cgroup
echo +memory > /sys/fs/cgroup/cgroup.subtree_control
mkdir /sys/fs/cgroup/owner /sys/fs/cgroup/toucher
kib() { echo $(($(cat "/sys/fs/cgroup/$1/memory.current") / 1024)); }

mkfifo /tmp/owner.in
(echo 0 > /sys/fs/cgroup/owner/cgroup.procs && exec /kmod_memcg owner memcg 128 < /tmp/owner.in > /tmp/owner.out) &
owner=$!
exec 3> /tmp/owner.in
i=0
until grep -q ready /tmp/owner.out 2>/dev/null; do
	i=$((i + 1)); [ $i -lt 100 ] || { echo "the owner did not start"; exit 1; }
	sleep 0.1
done
owner_before=$(kib owner)
toucher_before=$(kib toucher)
(echo 0 > /sys/fs/cgroup/toucher/cgroup.procs && exec /kmod_memcg touch memcg 128)
owner_after=$(kib owner)
toucher_after=$(kib toucher)
echo "memory.current growth: owner $((owner_after - owner_before)) KiB, toucher $((toucher_after - toucher_before)) KiB"
status=0
[ $((owner_after - owner_before)) -ge $((100 * 1024)) ] || { echo "not ok - the owner's cgroup was not charged"; status=1; }
[ $((toucher_after - toucher_before)) -lt $((16 * 1024)) ] || { echo "not ok - the toucher's cgroup was charged"; status=1; }
[ $status -eq 0 ] && echo "ok - 128 MiB touched by another cgroup are charged to the owner's"
/kmod_memcg check memcg 128 && echo "ok - and read back intact" || status=1
echo quit >&3
wait $owner || status=1
exit $status
