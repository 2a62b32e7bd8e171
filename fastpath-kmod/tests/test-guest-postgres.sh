#!/usr/bin/env bash
# PostgreSQL (Debian's, unmodified) under mshare-run in the QEMU guest, its
# main segment on the module, against plain PostgreSQL in the same boot:
# page tables per backend with the given client counts (idle, with each
# backend having read every page of pgbench_accounts and of its primary key,
# 93% of shared_buffers, and halfway through pgbench -S), pgbench -S and
# TPC-B TPS and the connection time (emulated: reported, not checked).
#
#   test-guest-postgres.sh BUILD_DIR RUN_GUEST [--kernel 6.1] [--measure] CLIENTS...
#
# The server's binaries, their libraries, its share/ and the time zones go
# into the guest as one tarball (built here once per PostgreSQL version).
# Without --measure (128 MiB of shared_buffers, pgbench scale 8, 4 s runs,
# TPC-B with the last client count) the figures are checked: on the module a
# backend costs at most 64 KiB of page tables (PageTables and VmPTE) beyond
# an idle one, and less than plain PostgreSQL's; the backends read at least
# 90% of shared_buffers. --measure takes 256 MiB, scale 16, 10 s runs and
# TPC-B with every client count. Both check that TPC-B fails no transaction
# and that the balances of accounts, branches, tellers and history agree.
set -euo pipefail
build=$1 run_guest=$2
shift 2
kernel=()
if [ "${1:-}" = --kernel ]; then
	kernel=(--kernel "$2")
	shift 2
fi
here=$(cd "$(dirname "$0")" && pwd)
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$pgbin/postgres" ] || { echo "no PostgreSQL (apt-get install postgresql postgresql-contrib)" >&2; exit 1; }
pgroot=${pgbin%/bin}
version=$(basename "$pgroot")

bundle=$build/pg-guest-$version.tar.gz
stamp=$(dpkg-query -W -f='${Version}' "postgresql-$version" 2>/dev/null || echo unknown)
if [ ! -f "$bundle" ] || [ "$(cat "$bundle.version" 2>/dev/null)" != "$stamp" ]; then
	stage=$(mktemp -d)
	chmod 755 "$stage"
	trap 'rm -rf "$stage"' EXIT
	mkdir -p "$stage$pgroot" "$stage/usr/share/postgresql" "$stage/usr/share"
	cp -a "$pgbin" "$stage$pgroot/"
	mkdir -p "$stage$pgroot/lib"
	find "$pgroot/lib" -maxdepth 1 -name '*.so' ! -name 'llvmjit*' -exec cp -a {} "$stage$pgroot/lib/" \;
	cp -a "/usr/share/postgresql/$version" "$stage/usr/share/postgresql/"
	rm -rf "$stage/usr/share/postgresql/$version/man"
	cp -a /usr/share/zoneinfo "$stage/usr/share/"
	declare -A libs=()
	for f in "$stage$pgroot"/bin/* "$stage$pgroot"/lib/*.so; do
		while read -r lib; do libs[$lib]=1; done < <(ldd "$f" 2>/dev/null | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }')
	done
	for lib in "${!libs[@]}"; do
		mkdir -p "$stage$(dirname "$lib")"
		cp -L "$lib" "$stage$lib"
	done
	tar czf "$bundle.tmp" -C "$stage" . && mv "$bundle.tmp" "$bundle"
	echo "$stamp" >"$bundle.version"
fi

exec env MSHAREFS_BUILD="$build" LD_LIBRARY_PATH="$build/common/libmshare${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$run_guest" "${kernel[@]}" --mem 3G --timeout 1500 \
	--add "$bundle" --add "$build/common/libmshare/libmshare.so.0.1.0" \
	--add "$build/uffd-fallback/libmshare-preload.so" --add "$build/tools/mshare-run" \
	--add "$build/tools/msharectl" --add "$here/guest-postgres.sh" \
	-- /guest-postgres.sh "$version" "$(basename "$bundle")" "$@"
