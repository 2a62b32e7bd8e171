#!/usr/bin/env bash
# Sets msharefs up (scripts/setup.sh), mounts msharefsd at /sys/fs/mshare in
# a private mount namespace and runs the documented examples end to end: the
# creator makes a region and writes to it, an attacher maps it, reads what the
# creator wrote and answers; then the same with the libmshare calls. Last, an
# ordinary program (examples/shm_workers.c) runs as it is and under mshare-run,
# and the page-table memory sharing saved it is printed, measured in this run.
#
#   scripts/run-example.sh [--help]
set -euo pipefail
. "$(dirname "$0")/lib.sh"

case "${1:-}" in
-h | --help)
	sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
	exit 0
	;;
"") ;;
--in-namespace) ;;
*) die "unknown argument '$1' (try --help)" ;;
esac

if [ "${1:-}" != --in-namespace ]; then
	"$MSHAREFS_ROOT/scripts/setup.sh"
	sudo=()
	[ "$(id -u)" -eq 0 ] || sudo=(sudo)
	exec "${sudo[@]}" env MSHAREFS_BUILD="$MSHAREFS_BUILD" \
		unshare --mount --propagation private -- "$0" --in-namespace
fi

# In a private mount namespace from here on: nothing below is seen outside.
if [ ! -d /sys/fs/mshare ]; then
	# /sys/fs is sysfs's; a tmpfs over it (in this namespace only) lets the
	# examples use the documented path unchanged.
	mount -t tmpfs -o mode=0755 msharefs-sysfs /sys/fs
	mkdir /sys/fs/mshare
fi
mount -t tmpfs -o mode=1777 msharefs-shm /dev/shm
# The daemon's private state root, this namespace's own too.
mkdir -p /run/msharefs
mount -t tmpfs -o mode=0755 msharefs-state /run/msharefs

bin=$MSHAREFS_BUILD
# backing=thp: anonymous memory on shmem huge pages even where shmem_enabled
# is never (Debian's default), so that mshare-run saves page tables without a
# huge page pool.
"$bin/fusefs/msharefsd" -f -o backing=thp /sys/fs/mshare &
daemon=$!
for _ in $(seq 100); do
	[ -e /sys/fs/mshare/mshare_info ] && break
	kill -0 "$daemon" 2>/dev/null || die "msharefsd did not start"
	sleep 0.05
done
[ -e /sys/fs/mshare/mshare_info ] || die "msharefsd did not mount /sys/fs/mshare"
stop_daemon() {
	umount /sys/fs/mshare 2>/dev/null || true
	wait "$daemon" 2>/dev/null || true
}
trap stop_daemon EXIT

echo "msharefsd is serving /sys/fs/mshare (alignment $(cat /sys/fs/mshare/mshare_info) bytes)"

# Runs CREATOR and then ATTACHER on region NAME; both print what they share.
run_pair() {
	local creator=$1 attacher=$2 name=$3 fifo
	echo
	echo "== $(basename "$creator") + $(basename "$attacher") on /sys/fs/mshare/$name"
	fifo=$(mktemp -u)
	mkfifo "$fifo"
	"$bin/examples/$creator" "$name" 30 >"$fifo" 2>&1 &
	local creator_pid=$! line ready=0
	exec 3<"$fifo"
	rm -f "$fifo"
	while IFS= read -r line <&3; do
		echo "$line"
		if [ "$line" = "creator: ready" ]; then
			ready=1
			break
		fi
	done
	[ $ready -eq 1 ] || die "$creator did not get ready"
	echo "\$ msharectl ls"
	"$bin/tools/msharectl" ls || die "msharectl ls failed"
	"$bin/examples/$attacher" "$name" || die "$attacher failed"
	cat <&3
	exec 3<&-
	wait "$creator_pid" || die "$creator failed"
}

run_pair mshare_creator mshare_attacher example
run_pair mshare_lib_creator mshare_lib_attacher example-lib

echo
echo "== an unmodified program (examples/shm_workers.c): 8 workers read 1 GiB of shared memory"
vmpte() { sed -n 's/.*their page tables \([0-9]*\) kB.*/\1/p'; }
echo "\$ shm_workers 1024 8"
plain=$("$bin/examples/shm_workers" 1024 8) || die "shm_workers failed"
echo "$plain"
echo "\$ mshare-run -- shm_workers 1024 8"
shared=$(MSHARE_RUN_PRELOAD="$bin/uffd-fallback/libmshare-preload.so" \
	"$bin/tools/mshare-run" -- "$bin/examples/shm_workers" 1024 8) || die "shm_workers under mshare-run failed"
echo "$shared"
p=$(echo "$plain" | vmpte) s=$(echo "$shared" | vmpte)
[ -n "$p" ] && [ -n "$s" ] || die "shm_workers printed no figures"
echo "page tables of the 8 workers: $p kB as it is, $s kB under mshare-run: $((p - s)) kB saved"

echo
echo "run-example: both examples shared their memory through msharefs, and mshare-run shared an"
echo "unmodified program's page tables"
