#!/usr/bin/env bash
# PostgreSQL under mshare-run against plain PostgreSQL, in one run on this
# machine: page tables per backend (PageTables growth net of the server
# before, and VmPTE) with idle connections, with natural pgbench -S access
# and with every backend having read all of shared_buffers (pg_prewarm);
# select-only and TPC-B TPS; connection time of the largest client count.
#
#   postgres.sh [--quick] [--csv DIR]
#
# Variants: plain (4 KiB pages), plain with huge_pages=on, and mshare-run
# (datapath=uffd, align=2M: what a stock kernel needs; the daemon backs the
# segment with huge pages when the pool can hold it). Needs root; environment
# as tests/postgres/pg-lib.sh says.
set -euo pipefail

if [ "${PG_IN_NAMESPACE:-}" != 1 ]; then
	export PG_IN_NAMESPACE=1
	exec unshare -m --propagation private "$0" "$@"
fi
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../tests/postgres/pg-lib.sh"

quick=0 csv=
while [ $# -gt 0 ]; do
	case $1 in
	--quick) quick=1 ;;
	--csv) csv=$2; shift ;;
	-h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) pg_die "unknown argument '$1' (try --help)" ;;
	esac
	shift
done
if [ "$quick" = 1 ]; then
	scale=10 clients=(64) seconds=6 restarts=2
else
	scale=80 clients=(16 64 200) seconds=10 restarts=12
fi
buffers=1GB

pg_require
pg_workdir
trap pg_cleanup EXIT
pg_hugepages 2400 || pg_say "no room for huge pages: huge_pages=on and hugetlb backing are skipped"
PG_ALIGN=2M pg_daemon_start
pg_initdb
printf 'SELECT 1;\n\\sleep 600 s\n' >"$PG_WORK/idle.sql"
# Every buffer read in each backend: the table cached (pg_prewarm), then a
# sequential scan of it (no index plan), which reads each cached buffer's page.
printf "SET max_parallel_workers_per_gather = 0;\nSET enable_indexonlyscan = off;\nSET enable_indexscan = off;\nSET enable_bitmapscan = off;\nSELECT pg_prewarm('pgbench_accounts');\nSELECT count(*) FROM pgbench_accounts;\n\\\\sleep 600 s\n" \
	>"$PG_WORK/prewarm.sql"
chmod 644 "$PG_WORK"/*.sql

# Clients connected and past their first statements: none active.
settle() {
	local want=$1 _
	for _ in $(seq 600); do
		local n busy
		n=$(psql_q "select count(*) from pg_stat_activity where backend_type = 'client backend'")
		busy=$(psql_q "select count(*) from pg_stat_activity where backend_type = 'client backend' and state = 'active' and pid <> pg_backend_pid()")
		[ "$n" -ge $((want + 1)) ] && [ "$busy" -eq 0 ] && return 0
		sleep 0.2
	done
	pg_die "clients did not settle"
}

# All n clients connected.
connected() {
	local _
	for _ in $(seq 600); do
		[ "$(psql_q "select count(*) from pg_stat_activity where backend_type = 'client backend'")" -ge $(($1 + 1)) ] && return 0
		sleep 0.1
	done
	pg_die "clients did not connect"
}

declare -A fig

# stop_clients PID: a backgrounded pgbench_run (a subshell whose child is
# pgbench) and the pgbench in it, which would otherwise sleep out its script.
stop_clients() {
	pkill -TERM -P "$1" 2>/dev/null || true
	kill -TERM "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

# starts VARIANT: the idle backends' mean VmPTE over several server starts.
# Each start lays the address space out anew (ASLR), and where the 2 MiB
# boundaries fall among a backend's mappings moves its figure by a page
# table or two: one start says little about a difference of a few kB.
starts() {
	local v=$1 i pid total=0
	for i in $(seq "$restarts"); do
		pg_start "$v" "$buffers" -c fsync=off
		pgbench_run -n -c 4 -j 1 -t 1 -f "$PG_WORK/idle.sql" >/dev/null 2>&1 &
		pid=$!
		settle 4
		total=$((total + $(backends_vmpte_kb)))
		stop_clients "$pid"
		pg_stop fast
	done
	fig[$v,starts,pte]=$(awk -v t="$total" -v n="$restarts" 'BEGIN { printf "%.1f", t / n }')
}
# measure VARIANT N: every figure of one client count.
# No client backend but the asking one, and their processes gone.
quiet() {
	local _
	for _ in $(seq 300); do
		[ "$(psql_q "select count(*) from pg_stat_activity where backend_type = 'client backend'")" -le 1 ] && break
		sleep 0.2
	done
	sleep 1
}

measure() {
	local v=$1 n=$2 pt0 pid out
	quiet
	pt0=$(pagetables_kb)
	for script in idle prewarm; do
		pgbench_run -n -c "$n" -j 2 -t 1 -f "$PG_WORK/$script.sql" >/dev/null 2>&1 &
		pid=$!
		settle "$n"
		fig[$v,$n,$script,pt]=$(( ($(pagetables_kb) - pt0) / n ))
		fig[$v,$n,$script,pte]=$(backends_vmpte_kb)
		stop_clients "$pid"
		psql_q "select pg_terminate_backend(pid) from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()" >/dev/null
		quiet
	done
	pgbench_run -n -S -c "$n" -j 2 -T "$seconds" >"$PG_WORK/run.log" 2>&1 &
	pid=$!
	connected "$n"
	sleep $((seconds / 2))
	fig[$v,$n,natural,pt]=$(( ($(pagetables_kb) - pt0) / n ))
	fig[$v,$n,natural,pte]=$(backends_vmpte_kb)
	wait "$pid" || pg_die "pgbench -S failed: $(tail -n 3 "$PG_WORK/run.log")"
	out=$(cat "$PG_WORK/run.log")
	fig[$v,$n,tps_s]=$(echo "$out" | awk '/^tps/ { printf "%d", $3 }')
	fig[$v,$n,conn]=$(echo "$out" | awk '/initial connection time/ { printf "%.0f", $5 }')
	out=$(pgbench_run -n -c "$n" -j 2 -T "$seconds" 2>&1) || pg_die "TPC-B failed: $out"
	grep -q 'number of failed transactions: 0 ' <<<"$out" || pg_die "failed transactions: $out"
	fig[$v,$n,tps_b]=$(echo "$out" | awk '/^tps/ { printf "%d", $3 }')
}

variants=(mshare plain)
[ "$(cat /proc/sys/vm/nr_hugepages)" -gt 600 ] && variants+=(hugepages)
first=1
for v in "${variants[@]}"; do
	pg_start "$v" "$buffers" -c fsync=off
	if [ "$first" = 1 ]; then
		pgbench_run -i -s "$scale" -q >"$PG_WORK/init.log" 2>&1 || pg_die "pgbench -i: $(tail -n 3 "$PG_WORK/init.log")"
		psql_q "create extension pg_prewarm" >/dev/null
		# No autovacuum of the fresh tables during the first variant's runs.
		psql_q "vacuum analyze" >/dev/null
		psql_q "checkpoint" >/dev/null
		first=0
	fi
	[ "$v" != mshare ] || backing=$("$MSHARECTL" -m "$PG_MOUNT" -j ls | grep -o '"backing":"[a-z0-9]*"' | head -n 1 | cut -d'"' -f4)
	for n in "${clients[@]}"; do
		pg_say "$v, $n clients"
		measure "$v" "$n"
	done
	pg_stop fast
done
for v in "${variants[@]}"; do
	pg_say "$v, idle backends over $restarts server starts"
	starts "$v"
done

label() { case $1 in mshare) echo "mshare-run";; plain) echo "plain 4K";; hugepages) echo "huge_pages=on";; esac; }
echo "== postgres: PostgreSQL $("$PGBIN/postgres" -V | awk '{print $3}'), shared_buffers $buffers, pgbench scale $scale, $(nproc) CPUs; mshare-run on datapath=uffd, align=2M, backing ${backing:-?} =="
printf '%-44s %12s %16s %16s %8s\n' "figure" "mshare-run" "plain 4K" "huge_pages=on" "vs 4K"
row() { # NAME KEY UNIT
	local n=$1 key=$2 unit=$3 name=$4 m p h ratio
	if [ "$n" = starts ]; then
		m=${fig[mshare,$key]:-} p=${fig[plain,$key]:-} h=${fig[hugepages,$key]:--}
		n=4
	else
		m=${fig[mshare,$n,$key]:-} p=${fig[plain,$n,$key]:-} h=${fig[hugepages,$n,$key]:--}
	fi
	ratio=$(awk -v a="$m" -v b="$p" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }')
	printf '%-44s %12s %16s %16s %8s\n' "$name" "$m $unit" "$p $unit" "$h $unit" "$ratio"
	# The figure names hold commas: quoted (RFC 4180).
	[ -z "$csv" ] || printf '"%s",%s,%s,%s,%s,%s\n' "${name//\"/\"\"}" "$n" "$m" "$p" "$h" "$unit" >>"$csv/postgres.csv"
}
if [ -n "$csv" ]; then
	mkdir -p "$csv"
	echo "figure,clients,mshare_run,plain_4k,plain_huge_pages,unit" >"$csv/postgres.csv"
fi
for n in "${clients[@]}"; do
	row "$n" idle,pt kB "PageTables/backend, idle, $n clients"
	row "$n" natural,pt kB "PageTables/backend, pgbench -S, $n clients"
	row "$n" prewarm,pt kB "PageTables/backend, all buffers, $n clients"
	row "$n" idle,pte kB "VmPTE/backend, idle, $n clients"
	row "$n" natural,pte kB "VmPTE/backend, pgbench -S, $n clients"
	row "$n" prewarm,pte kB "VmPTE/backend, all buffers, $n clients"
	row "$n" tps_s tps "TPS select-only, $n clients"
	row "$n" tps_b tps "TPS TPC-B, $n clients"
	row "$n" conn ms "connection time, $n clients"
done
row starts starts,pte kB "VmPTE/backend, idle, mean of $restarts starts"
echo "  * PageTables/backend: growth of /proc/meminfo PageTables over the server before the clients, divided by the clients"
echo "  * VmPTE/backend: the mean over the client backends while they are connected"
echo "  * mean of $restarts starts: each variant's server started $restarts times (a new address-space layout each time), 4 idle clients each"
echo "  * idle: each client ran SELECT 1; all buffers: each client ran pg_prewarm of pgbench_accounts and a sequential scan of it (every cached page read)"
echo "  * TPS: pgbench -j 2, ${seconds} s, fsync=off in every variant; connection time as pgbench reports it"
