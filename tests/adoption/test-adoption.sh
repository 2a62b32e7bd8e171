#!/usr/bin/env bash
# Runs shared-memory programs under mshare-run (and adopt_shared_pt, which
# links libmshare, without it) on a fresh msharefsd mount in a private mount
# namespace, as root and as an unprivileged user. A hugetlbfs mounted there
# ($ADOPT_HUGETLB_DIR) gives the MAP_SHARED_PT programs hugetlbfs files.
#
#   test-adoption.sh PROGRAM...
#
# Environment: MSHAREFSD, MSHARECTL, MSHARE_RUN, MSHARE_RUN_PRELOAD (paths of
# the build's binaries); DATAPATH (default uffd).
set -euo pipefail

if [ "${ADOPTION_IN_NAMESPACE:-}" != 1 ]; then
	export ADOPTION_IN_NAMESPACE=1
	exec unshare -m --propagation private "$0" "$@"
fi
: "${MSHAREFSD:?}" "${MSHARECTL:?}" "${MSHARE_RUN:?}" "${MSHARE_RUN_PRELOAD:?}"
datapath=${DATAPATH:-uffd}
export MSHAREFS_TEST_DATAPATH=$datapath

work=$(mktemp -d /var/tmp/adoption.XXXXXX)
mnt=$work/mnt
mkdir -p "$mnt" "$work/disk" "$work/state" "$work/huge"
chmod 755 "$work"
chmod 1777 "$work/disk"
daemon=
huge=
# A huge page pool for MAP_HUGETLB and SHM_HUGETLB (put back at the end).
hugepages_before=$(cat /proc/sys/vm/nr_hugepages)
echo $((hugepages_before + 64)) >/proc/sys/vm/nr_hugepages 2>/dev/null || true
if mount -t hugetlbfs -o mode=1777 none "$work/huge" 2>/dev/null; then
	huge=$work/huge
else
	echo "no hugetlbfs: MAP_SHARED_PT of hugetlbfs files is not checked"
fi
cleanup() {
	[ -z "$huge" ] || umount -l "$huge" 2>/dev/null || true
	echo "$hugepages_before" >/proc/sys/vm/nr_hugepages 2>/dev/null || true
	umount -l "$mnt" 2>/dev/null || true
	[ -z "$daemon" ] || wait "$daemon" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

"$MSHAREFSD" -f -o "datapath=$datapath,align=1G,statedir=$work/state" "$mnt" &
daemon=$!
for _ in $(seq 100); do
	[ -r "$mnt/mshare_info" ] && break
	sleep 0.1
done
[ -r "$mnt/mshare_info" ] || { echo "msharefsd did not come up" >&2; exit 1; }

status=0
run_one() { # USER-PREFIX... -- PROGRAM
	local prog=$1
	shift
	local name
	name=$(basename "$prog")
	local dirs=(ADOPT_DISK_DIR="$work/disk" ADOPT_HUGETLB_DIR="$huge")
	case $name in
	adopt_shared_pt) # linked with libmshare
		"$@" MSHAREFS_MOUNT="$mnt" "${dirs[@]}" "$prog" ;;
	adopt_shared_pt_preload) # the same, unmodified: EINVAL without the runtime
		local rc=0
		"$@" MSHAREFS_MOUNT="$mnt" "$prog" without-runtime || rc=1
		"$@" "${dirs[@]}" "$MSHARE_RUN" -m "$mnt" --min-size 64M -- "$prog" || rc=1
		return $rc ;;
	*)
		"$@" "$MSHARE_RUN" -m "$mnt" --min-size 64M -- "$prog" ;;
	esac
}
for prog in "$@"; do
	echo "== $(basename "$prog") as root, datapath=$datapath"
	run_one "$prog" env || status=1
	echo "== $(basename "$prog") as uid 65534, datapath=$datapath"
	run_one "$prog" "$(command -v setpriv)" --reuid=65534 --regid=65534 --clear-groups env || status=1
done
kill -0 "$daemon" || { echo "msharefsd died" >&2; status=1; }
left=$("$MSHARECTL" -m "$mnt" ls | tail -n +2)
if [ -n "$left" ]; then
	echo "regions left behind:" >&2
	echo "$left" >&2
	status=1
fi
exit $status
