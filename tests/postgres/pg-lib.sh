# Shared by the PostgreSQL test and benchmark: sourced, not run.
# shellcheck shell=bash
#
# Needs: MSHAREFSD, MSHARECTL, MSHARE_RUN, MSHARE_RUN_PRELOAD; Debian's
# postgresql and postgresql-contrib; root (the server runs as postgres).

PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}

pg_say() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }
pg_die() {
	pg_say "$*"
	exit 1
}

pg_require() {
	[ "$(id -u)" -eq 0 ] || pg_die "needs root (the server runs as user postgres)"
	[ -x "$PGBIN/postgres" ] || pg_die "no PostgreSQL server (apt-get install postgresql postgresql-contrib)"
	id postgres >/dev/null 2>&1 || pg_die "no user postgres"
	: "${MSHAREFSD:?}" "${MSHARECTL:?}" "${MSHARE_RUN:?}" "${MSHARE_RUN_PRELOAD:?}"
}

# Runs a command as postgres.
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups env HOME=/tmp TZ=UTC "$@"; }

# pg_workdir: a fresh directory (PG_WORK) for the cluster, the mount and the
# daemon's state; removed by pg_cleanup.
pg_workdir() {
	PG_WORK=$(mktemp -d /var/tmp/msharefs-pg.XXXXXX)
	chmod 755 "$PG_WORK"
	mkdir -p "$PG_WORK/mnt" "$PG_WORK/state" "$PG_WORK/sock" "$PG_WORK/data"
	chown postgres "$PG_WORK/sock" "$PG_WORK/data"
	chmod 700 "$PG_WORK/data"
	PG_DATA=$PG_WORK/data
	PG_MOUNT=$PG_WORK/mnt
	PG_SOCK=$PG_WORK/sock
	PG_DAEMON=
	PG_HUGEPAGES_BEFORE=$(cat /proc/sys/vm/nr_hugepages)
}

pg_cleanup() {
	if [ -n "${PG_DATA:-}" ] && [ -f "$PG_DATA/postmaster.pid" ]; then
		as_pg "$PGBIN/pg_ctl" -D "$PG_DATA" -m immediate stop >/dev/null 2>&1 || true
	fi
	umount -l "$PG_MOUNT" 2>/dev/null || true
	if [ -n "${PG_DAEMON:-}" ]; then
		wait "$PG_DAEMON" 2>/dev/null || true
	fi
	[ -z "${PG_HUGEPAGES_BEFORE:-}" ] || echo "$PG_HUGEPAGES_BEFORE" >/proc/sys/vm/nr_hugepages 2>/dev/null || true
	[ -z "${PG_WORK:-}" ] || rm -rf "$PG_WORK"
}

# pg_daemon_start [DATAPATH]: msharefsd on PG_MOUNT with alignment PG_ALIGN
# (default 1G, as the module needs); takes it over if a previous daemon
# served it.
pg_daemon_start() {
	"$MSHAREFSD" -f -o "datapath=${1:-${DATAPATH:-uffd}},align=${PG_ALIGN:-1G},statedir=$PG_WORK/state" "$PG_MOUNT" \
		2>>"$PG_WORK/msharefsd.log" &
	PG_DAEMON=$!
	local _
	for _ in $(seq 100); do
		[ -r "$PG_MOUNT/mshare_info" ] && return 0
		sleep 0.1
	done
	pg_die "msharefsd did not come up (see $PG_WORK/msharefsd.log)"
}

# pg_hugepages MB: makes the huge page pool at least MB MiB (restored at
# cleanup); returns 1 if the machine cannot.
pg_hugepages() {
	local want=$(( $1 / 2 + $(cat /proc/sys/vm/nr_hugepages) ))
	echo "$want" >/proc/sys/vm/nr_hugepages 2>/dev/null || return 1
	[ "$(cat /proc/sys/vm/nr_hugepages)" -ge "$want" ]
}

# pg_initdb: a cluster in PG_DATA.
pg_initdb() {
	as_pg "$PGBIN/initdb" -N --no-locale -E UTF8 -A trust -D "$PG_DATA" >"$PG_WORK/initdb.log" 2>&1 ||
		pg_die "initdb failed: $(tail -n 3 "$PG_WORK/initdb.log")"
}

# pg_start MODE SHARED_BUFFERS [EXTRA...]: starts the server; MODE is plain,
# hugepages (huge_pages=on) or mshare (under mshare-run).
pg_start() {
	local mode=$1 buffers=$2
	shift 2
	local opts="-c shared_buffers=$buffers -c listen_addresses= -c unix_socket_directories=$PG_SOCK"
	opts+=" -c max_connections=260 -c shared_preload_libraries=pg_prewarm"
	opts+=" -c pg_prewarm.autoprewarm=off -c huge_pages=$([ "$mode" = hugepages ] && echo on || echo off)"
	opts+=" $*"
	local run=()
	[ "$mode" = mshare ] && run=(env "MSHARE_RUN_PRELOAD=$MSHARE_RUN_PRELOAD" "$MSHARE_RUN" -m "$PG_MOUNT" --)
	as_pg "${run[@]}" "$PGBIN/pg_ctl" -D "$PG_DATA" -l "$PG_SOCK/server.log" -w -t 120 -o "$opts" start \
		>/dev/null || pg_die "the server did not start ($mode): $(tail -n 5 "$PG_SOCK/server.log")"
}

pg_stop() {
	as_pg "$PGBIN/pg_ctl" -D "$PG_DATA" -m "${1:-fast}" -w stop >/dev/null ||
		pg_die "the server did not stop"
}

pg_postmaster() { head -n 1 "$PG_DATA/postmaster.pid"; }

psql_q() { as_pg "$PGBIN/psql" -h "$PG_SOCK" -X -q -At -d postgres -c "$1"; }

pgbench_run() { as_pg "$PGBIN/pgbench" -h "$PG_SOCK" "$@" postgres; }

# pg_consistent: the pgbench balances agree (prints the three sums).
pg_consistent() {
	local sums
	sums=$(psql_q "select (select sum(abalance) from pgbench_accounts), (select sum(bbalance) from pgbench_branches), (select sum(tbalance) from pgbench_tellers)")
	echo "$sums"
	[ "$(echo "$sums" | tr '|' '\n' | sort -u | wc -l)" -eq 1 ]
}

pagetables_kb() { awk '/^PageTables:/ { print $2 }' /proc/meminfo; }

# The mean VmPTE (kB) of the server's client backends.
backends_vmpte_kb() {
	local p v total=0 count=0
	for p in $(psql_q "select pid from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()"); do
		v=$(awk '/^VmPTE:/ { print $2 }' "/proc/$p/status" 2>/dev/null) || continue
		[ -n "$v" ] || continue
		total=$((total + v))
		count=$((count + 1))
	done
	echo $((count ? total / count : 0))
}
