#!/usr/bin/env bash
# Boots a QEMU guest (TCG, no KVM) with the fastpath kernel module and runs
# one command in it.
#
#   fastpath-kmod/qemu/run-guest.sh [OPTIONS] -- COMMAND [ARGS...]
#
#   --kernel 6.12|6.1  guest kernel, Debian 12's packages (default 6.12)
#   --mem SIZE         guest memory (default 2G)
#   --smp N            guest CPUs (default 2)
#   --timeout SECONDS  whole boot-run-poweroff limit (default 300)
#   --no-daemon        do not start msharefsd in the guest
#   --add FILE         copy FILE into the guest's / (repeatable)
#   --kmod NAME        load the guest kernel's own module NAME (with the
#                      modules it depends on) before COMMAND (repeatable)
#   --dkms DIR         build and install the module with dkms(8) from DIR, an
#                      installed DKMS source tree (NAME-VERSION with dkms.conf),
#                      into the guest's /lib/modules; the guest loads it with
#                      modprobe (kmod's) instead of insmod
#   -h, --help         this text
#
# Installs what it needs with apt-get, builds msharefs_kmod.ko from
# fastpath-kmod/ (in a scratch copy) against the kernel's headers, and
# msharefsd into $MSHAREFS_BUILD (default build/) unless it is there. The
# guest loads the module, mounts msharefsd on /sys/fs/mshare (-o datapath=kmod,
# or without it when the daemon refuses it), runs COMMAND from / with the
# --add files in / and stdin from /dev/null, unmounts, unloads the module and
# powers off. COMMAND's output (stdout and stderr: the console is one stream)
# comes to stdout, the guest's kernel log and harness lines to stderr.
#
# Exits with COMMAND's status; 1 when the guest printed no result (timeout,
# crash, insmod failure) or its kernel logged BUG:, WARNING:, Oops, general
# protection, Kernel panic, Call Trace: or a bad page-table entry.
#
# For testing the harness: MSHAREFS_KMOD_DIR=DIR builds the module from DIR
# (a Kbuild and its sources; the module is named by its obj-m line) instead.
# MSHAREFS_GUEST_LOG=FILE keeps the whole console log in FILE.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/../../scripts/lib.sh
. "$HERE/../../scripts/lib.sh"

usage() { sed -n '2,36p' "$0" | sed 's/^# \{0,1\}//'; }

KERNEL=6.12
MEM=2G
SMP=2
TIMEOUT=300
NODAEMON=
ADD=()
KMODS=()
DKMS_SRC=
while [ $# -gt 0 ]; do
	case "$1" in
	-h | --help)
		usage
		exit 0
		;;
	--kernel | --mem | --smp | --timeout | --add | --dkms | --kmod)
		[ $# -ge 2 ] || die "$1 needs a value (try --help)"
		case "$1" in
		--kmod) KMODS+=("$2") ;;
		--dkms) DKMS_SRC=$2 ;;
		--kernel) KERNEL=$2 ;;
		--mem) MEM=$2 ;;
		--smp) SMP=$2 ;;
		--timeout) TIMEOUT=$2 ;;
		--add) ADD+=("$2") ;;
		esac
		shift 2
		;;
	--kernel=* | --mem=* | --smp=* | --timeout=* | --add=* | --dkms=* | --kmod=*)
		set -- "${1%%=*}" "${1#*=}" "${@:2}"
		;;
	--no-daemon)
		NODAEMON=1
		shift
		;;
	--)
		shift
		break
		;;
	*) die "unknown argument '$1' (try --help)" ;;
	esac
done
[ $# -gt 0 ] || die "no command given: run-guest.sh [OPTIONS] -- COMMAND [ARGS...] (try --help)"
case "$KERNEL" in
6.12) KERNEL_PACKAGES=(linux-image-6.12-amd64 linux-headers-6.12-amd64) ;;
6.1) KERNEL_PACKAGES=(linux-image-amd64 linux-headers-amd64) ;;
*) die "--kernel $KERNEL: not one of 6.12, 6.1" ;;
esac
[[ "$SMP" =~ ^[1-9][0-9]*$ ]] || die "--smp $SMP: not a positive number"
[[ "$TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "--timeout $TIMEOUT: not a positive number of seconds"
[[ "$MEM" =~ ^[1-9][0-9]*[MGmg]?$ ]] || die "--mem $MEM: not a size like 2G or 512M"
if [ -n "$DKMS_SRC" ]; then
	[ -f "$DKMS_SRC/dkms.conf" ] || die "--dkms $DKMS_SRC: no dkms.conf there"
	DKMS_SRC=$(cd "$DKMS_SRC" && pwd)
	DKMS_MODULE=$(basename "$DKMS_SRC")
	[[ "$DKMS_MODULE" == ?*-?* ]] || die "--dkms $DKMS_SRC: the directory is not named NAME-VERSION"
fi
declare -A ADDED=()
for f in "${ADD[@]}"; do
	[ -f "$f" ] || die "--add $f: no such file"
	b=$(basename "$f")
	case "$b" in
	init | cmd | msharefs_kmod.ko | fuse.ko | kmods | bin | sbin | usr | lib | lib32 | lib64 | libx32 | etc | dev | proc | sys | tmp | root)
		die "--add $f: its name $b is taken in the guest's /"
		;;
	esac
	[ -z "${ADDED[$b]:-}" ] || die "--add $f: a file named $b is added already"
	ADDED[$b]=1
done

# 1. Packages.
apt_install qemu-system-x86 busybox-static cpio kmod make gcc "${KERNEL_PACKAGES[@]}"
[ -z "$DKMS_SRC" ] || apt_install dkms

# The newest kernel of that series with both an image and headers.
RELEASE=
for f in /boot/vmlinuz-"$KERNEL".*-amd64; do
	[ -e "$f" ] || continue
	r=${f#/boot/vmlinuz-}
	[ -d "/usr/src/linux-headers-$r" ] && RELEASE=$(printf '%s\n%s\n' "$RELEASE" "$r" | sed '/^$/d' | sort -V | tail -n 1)
done
[ -n "$RELEASE" ] || die "no /boot/vmlinuz-$KERNEL.*-amd64 with matching /usr/src/linux-headers-* after installing ${KERNEL_PACKAGES[*]}"
HEADERS=/usr/src/linux-headers-$RELEASE

TMP=$(mktemp -d "${TMPDIR:-/tmp}/run-guest.XXXXXX")
QPID=
# shellcheck disable=SC2317 # run by the trap
cleanup() {
	[ -z "$QPID" ] || kill "$QPID" 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

VMLINUZ=/boot/vmlinuz-$RELEASE
if [ ! -r "$VMLINUZ" ]; then
	as_root cat "$VMLINUZ" >"$TMP/vmlinuz" || die "cannot read $VMLINUZ"
	VMLINUZ=$TMP/vmlinuz
fi

# 2. The module, built in a scratch copy of its sources.
KMOD_SRC=${DKMS_SRC:-${MSHAREFS_KMOD_DIR:-$MSHAREFS_ROOT/fastpath-kmod}}
[ -f "$KMOD_SRC/Kbuild" ] || die "no $KMOD_SRC/Kbuild: the kernel module is not there (yet)"
KMOD_NAME=$(sed -n 's/^[[:space:]]*obj-m[[:space:]]*[:+]\{0,1\}=[[:space:]]*\([A-Za-z0-9_-]*\)\.o.*/\1/p' "$KMOD_SRC/Kbuild" | head -n 1)
[ -n "$KMOD_NAME" ] || die "$KMOD_SRC/Kbuild: no 'obj-m := NAME.o' line"
if [ -n "$DKMS_SRC" ]; then
	# dkms add, build and install, with its trees in the scratch directory
	# (the host's /var/lib/dkms and /lib/modules are not touched).
	mkdir -p "$TMP/dkms" "$TMP/modules/lib/modules/$RELEASE"
	DKMS_TREES=(--dkmstree "$TMP/dkms" --sourcetree "$(dirname "$DKMS_SRC")")
	for step in add build install; do
		case "$step" in
		add) extra=() ;;
		build) extra=(-k "$RELEASE" --kernelsourcedir "$HEADERS") ;;
		install) extra=(-k "$RELEASE" --installtree "$TMP/modules/lib/modules" --no-depmod) ;;
		esac
		if ! as_root dkms "$step" "${DKMS_TREES[@]}" "${extra[@]}" "${DKMS_MODULE%-*}/${DKMS_MODULE##*-}" \
			>>"$TMP/dkms.log" 2>&1; then
			tail -n 20 "$TMP/dkms.log" >&2
			find "$TMP/dkms" -name make.log -exec tail -n 20 {} + >&2
			die "dkms $step of $DKMS_MODULE for $RELEASE failed"
		fi
	done
	DKMS_KO=$(find "$TMP/modules/lib/modules/$RELEASE" -name "$KMOD_NAME.ko*" | head -n 1)
	[ -n "$DKMS_KO" ] || die "dkms install put no $KMOD_NAME.ko under lib/modules/$RELEASE"
	say "dkms installed ${DKMS_KO#"$TMP"/modules}"
else
	mkdir "$TMP/kmod"
	tar -C "$KMOD_SRC" --exclude=./qemu --exclude='*.o' --exclude='*.ko' --exclude='*.mod' \
		--exclude='*.mod.c' --exclude='.*.cmd' --exclude=Module.symvers --exclude=modules.order \
		--exclude=.tmp_versions -cf - . | tar -C "$TMP/kmod" -xf -
	if ! make -C "$HEADERS" M="$TMP/kmod" -j"$(nproc)" modules >"$TMP/kmod.log" 2>&1 ||
		[ ! -f "$TMP/kmod/$KMOD_NAME.ko" ]; then
		# The diagnostics, without gcc's notes and excerpts; the end when none.
		grep -E '(error|warning):' "$TMP/kmod.log" | sed "s|$TMP/kmod/||g" >&2 ||
			tail -n 20 "$TMP/kmod.log" >&2
		die "building $KMOD_NAME.ko against $HEADERS failed"
	fi
	grep -E 'warning:' "$TMP/kmod.log" | sed "s|$TMP/kmod/||g" >&2 || true
fi

# 3. The daemon.
DAEMON=$MSHAREFS_BUILD/fusefs/msharefsd
if [ ! -x "$DAEMON" ]; then
	say "no $DAEMON: building msharefs"
	MSHAREFS_BUILD=$MSHAREFS_BUILD "$MSHAREFS_ROOT/scripts/setup.sh"
	[ -x "$DAEMON" ] || die "scripts/setup.sh built no $DAEMON"
fi
KEEPER=$MSHAREFS_BUILD/fusefs/msharefs-keeper

# 4. The initramfs.
R=$TMP/root
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,dev/shm,proc,run,sys,tmp,etc,root}
cp /bin/busybox "$R/bin/busybox"
while read -r applet; do
	[ -e "$R/$applet" ] || [ -L "$R/$applet" ] || ln -s /bin/busybox "$R/$applet"
done < <(/bin/busybox --list-full)
install -m 755 "$HERE/init" "$R/init"
if [ -n "$DKMS_SRC" ]; then
	# The module where dkms installed it, found by kmod's modprobe through
	# the modules.dep that depmod writes for the guest's tree.
	mkdir -p "$R/lib/modules"
	cp -a "$TMP/modules/lib/modules/$RELEASE" "$R/lib/modules/"
	depmod -b "$R" "$RELEASE" 2>"$TMP/depmod.log" || { cat "$TMP/depmod.log" >&2; die "depmod for the guest failed"; }
	KMOD_TOOL=$(command -v kmod) || die "no kmod(8) here"
	cp "$KMOD_TOOL" "$R/sbin/kmod"
	for t in modprobe modinfo lsmod rmmod insmod depmod; do
		rm -f "$R/sbin/$t" "$R/bin/$t"
		ln -s kmod "$R/sbin/$t"
	done
	touch "$R/etc/msharefs-kmod-modprobe"
else
	cp "$TMP/kmod/$KMOD_NAME.ko" "$R/msharefs_kmod.ko"
fi
printf '%s\n' "${KMOD_NAME//-/_}" >"$R/etc/msharefs-kmod-name"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$R/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$R/etc/group"
printf '%q ' "$@" >"$R/cmd"
echo >>"$R/cmd"
ELFS=("$R/bin/busybox")
[ ! -f "$R/sbin/kmod" ] || ELFS+=("$R/sbin/kmod")
cp "$DAEMON" "$R/bin/msharefsd"
ELFS+=("$R/bin/msharefsd")
if [ -x "$KEEPER" ]; then
	cp "$KEEPER" "$R/bin/msharefs-keeper"
	ELFS+=("$R/bin/msharefs-keeper")
fi
for f in "${ADD[@]}"; do
	cp -L --preserve=mode "$f" "$R/$(basename "$f")"
	ELFS+=("$R/$(basename "$f")")
done
# A kernel whose fuse is a module needs it in the guest.
if grep -qx 'CONFIG_FUSE_FS=m' "/boot/config-$RELEASE" 2>/dev/null; then
	fuse=$(find "/lib/modules/$RELEASE/kernel/fs/fuse" -name 'fuse.ko*' 2>/dev/null | head -n 1)
	case "$fuse" in
	*.ko) cp "$fuse" "$R/fuse.ko" ;;
	*.ko.xz) xz -dc "$fuse" >"$R/fuse.ko" ;;
	*.ko.zst) zstd -qdc "$fuse" >"$R/fuse.ko" ;;
	*) die "$RELEASE has fuse as a module, but there is no fuse.ko in /lib/modules/$RELEASE" ;;
	esac
fi
# The kernel's own modules asked for with --kmod, dependencies first, in
# /kmods with their load order in /kmods/order.
copy_kmod() {
	local name=$1 path dep f
	path=$(awk -F: -v n="$name" '{ b = $1; sub(".*/", "", b); sub("[.]ko([.].*)?$", "", b); gsub("-", "_", b); if (b == n) print $1 }' \
		"/lib/modules/$RELEASE/modules.dep" | head -n 1)
	[ -n "$path" ] || die "--kmod $name: not a module of $RELEASE (see /lib/modules/$RELEASE/modules.dep)"
	for dep in $(awk -F: -v p="$path" '$1 == p { print $2 }' "/lib/modules/$RELEASE/modules.dep"); do
		dep=${dep##*/}
		dep=${dep%%.ko*}
		copy_kmod "${dep//-/_}"
	done
	f=$R/kmods/$name.ko
	[ -f "$f" ] && return 0
	case "$path" in
	*.ko) cp "/lib/modules/$RELEASE/$path" "$f" ;;
	*.ko.xz) xz -dc "/lib/modules/$RELEASE/$path" >"$f" ;;
	*.ko.zst) zstd -qdc "/lib/modules/$RELEASE/$path" >"$f" ;;
	*) die "--kmod $name: cannot unpack $path" ;;
	esac
	echo "$name" >>"$R/kmods/order"
}
if [ ${#KMODS[@]} -gt 0 ]; then
	mkdir -p "$R/kmods"
	for m in "${KMODS[@]}"; do
		copy_kmod "${m//-/_}"
	done
fi
# Every shared library (and the loader) that the dynamic ELF files need, at
# its own path.
declare -A LIBS=()
for f in "${ELFS[@]}"; do
	head -c 4 "$f" | grep -q 'ELF' || continue
	out=$(ldd "$f" 2>/dev/null) || continue # static, or not for this machine
	if grep -q 'not found' <<<"$out"; then
		die "$(basename "$f"): $(grep 'not found' <<<"$out" | head -n 1 | sed 's/^[[:space:]]*//')"
	fi
	while read -r lib; do
		LIBS[$lib]=1
	done < <(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' <<<"$out")
done
for lib in "${!LIBS[@]}"; do
	mkdir -p "$R$(dirname "$lib")"
	cp -L "$lib" "$R$lib"
done
(cd "$R" && find . -mindepth 1 -print0 | cpio --null -o -H newc -R 0:0 --quiet) | gzip -1 >"$TMP/initrd.gz"

# 5./6. Boot, stream the console, judge.
APPEND="console=ttyS0 panic=-1 oops=panic quiet printk.time=1"
[ -z "$NODAEMON" ] || APPEND+=" msharefs.nodaemon=1"
PROBLEM='\[ *[0-9]+\.[0-9]+\] .*(BUG:|WARNING:|Oops|general protection|Kernel panic|Call Trace:|bad (pgd|p4d|pud|pmd|pte))'
LOG=$TMP/console.log
# A kernel that fails before /init runs has not seen the module or any of
# msharefs yet: under TCG an SMP guest now and then takes a stray int3 while
# the kernel patches its own text at boot, or stalls there for good (an RCU
# stall, the guest idle). Such a boot is retried (twice at most): one that
# fails, or that has not reached /init within BOOT_LIMIT seconds
# ($MSHAREFS_GUEST_BOOT_LIMIT, default 240); a failure once /init has
# started is always reported.
BOOT_LIMIT=${MSHAREFS_GUEST_BOOT_LIMIT:-240}
attempt=1
while :; do
	rm -f "$LOG" "$TMP/console" "$TMP/started" "$TMP/stalled"
	mkfifo "$TMP/console"
	timeout -k 10 "$TIMEOUT" qemu-system-x86_64 -machine q35 -accel tcg -m "$MEM" -smp "$SMP" \
		-nographic -no-reboot -nic none -kernel "$VMLINUZ" -initrd "$TMP/initrd.gz" -append "$APPEND" \
		</dev/null >"$TMP/console" &
	QPID=$!
	(
		exec </dev/null >/dev/null 2>&1 # holds no pipe of the caller's
		trap 'kill "$nap"; exit 0' TERM
		sleep "$BOOT_LIMIT" &
		nap=$!
		wait "$nap"
		[ -e "$TMP/started" ] || { touch "$TMP/stalled" && kill "$QPID"; }
	) &
	WATCHDOG=$!

	# Console lines, without carriage returns, go to the log; once init
	# runs, its and the kernel's lines go to stderr, the others (COMMAND's)
	# to stdout.
	KERNEL_LINE='^\[ *[0-9]+\.[0-9]+\] '
	started=
	while IFS= read -r line || [ -n "$line" ]; do
		line=${line//$'\r'/}
		if [ -z "$started" ] && [[ "$line" == *"guest: init started"* ]]; then
			started=1
			touch "$TMP/started"
			line=guest:${line#*guest:} # after the firmware's escape sequences
		fi
		printf '%s\n' "$line" >>"$LOG"
		[ -n "$started" ] || continue
		if [[ "$line" == MSHAREFS-GUEST-RESULT* ]]; then
			continue
		elif [[ "$line" == "guest: "* || "$line" =~ $KERNEL_LINE ]]; then
			printf '%s\n' "$line" >&2
		else
			printf '%s\n' "$line"
		fi
	done <"$TMP/console"
	rc=0
	wait "$QPID" || rc=$?
	QPID=
	kill "$WATCHDOG" 2>/dev/null || true
	wait "$WATCHDOG" 2>/dev/null || true
	touch "$LOG"
	if [ -z "$started" ] && [ "$attempt" -lt 3 ] && [ -e "$TMP/stalled" ]; then
		say "the guest kernel had not reached /init after $BOOT_LIMIT s; booting it again"
		attempt=$((attempt + 1))
		continue
	fi
	if [ -z "$started" ] && [ "$attempt" -lt 3 ] && [ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] &&
		n=$(grep -nE -m 1 "$PROBLEM" "$LOG" | cut -d: -f1) && [ -n "$n" ]; then
		say "the guest kernel failed while booting, before /init: $(sed -n "${n}p" "$LOG" | sed -E 's/^.*\[ *[0-9]+\.[0-9]+\] //'); booting it again"
		attempt=$((attempt + 1))
		continue
	fi
	break
done
[ -z "${MSHAREFS_GUEST_LOG:-}" ] || cp "$LOG" "$MSHAREFS_GUEST_LOG"

if n=$(grep -nE -m 1 "$PROBLEM" "$LOG" | cut -d: -f1) && [ -n "$n" ]; then
	{
		echo "---- guest kernel log around the first problem ----"
		sed -n "$((n > 4 ? n - 4 : 1)),$((n + 15))p" "$LOG" | sed "s|$TMP/kmod/|$KMOD_SRC/|g"
		echo "----"
	} >&2
	die "the guest kernel reported a problem: $(sed -n "${n}p" "$LOG" | sed -E 's/^.*\[ *[0-9]+\.[0-9]+\] //' | sed "s|$TMP/kmod/|$KMOD_SRC/|g")"
fi
status=$(sed -n 's/^MSHAREFS-GUEST-RESULT \([0-9][0-9]*\)$/\1/p' "$LOG" | tail -n 1)
if [ -z "$status" ]; then
	if grep -q '^guest: insmod.* failed' "$LOG"; then
		die "loading the module in the guest failed"
	elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
		die "no result from the guest within --timeout $TIMEOUT s"
	elif [ -z "$started" ] && [ -e "$TMP/stalled" ]; then
		tail -n 30 "$LOG" >&2
		die "the guest did not start /init within $BOOT_LIMIT s, $attempt times"
	elif [ -z "$started" ]; then
		tail -n 30 "$LOG" >&2
		die "the guest did not start /init (qemu exit status $rc)"
	else
		die "the guest stopped without a result (crash?; qemu exit status $rc)"
	fi
fi
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
	die "the guest did not power off within --timeout $TIMEOUT s"
fi
[ "$rc" -eq 0 ] || die "qemu exited with status $rc"
exit "$status"
