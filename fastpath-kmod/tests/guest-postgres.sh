#!/bin/sh
# In the QEMU guest: PostgreSQL VERSION from BUNDLE, plain and under
# mshare-run (its main segment in a region on the module, through the
# msharefsd that init mounted at /sys/fs/mshare), for each client count:
# page tables per backend with idle backends, with every backend having read
# each page of pgbench_accounts and its primary key (most of shared_buffers),
# and during pgbench -S; TPS of pgbench -S and TPC-B and the connection time
# (emulated: reported, not checked). TPC-B must fail no transaction and leave
# the balances in agreement. See test-guest-postgres.sh.
#
#   guest-postgres.sh VERSION BUNDLE [--measure] CLIENTS...
set -e
version=$1 bundle=$2
shift 2
measure=0
[ "$1" != --measure ] || { measure=1; shift; }
# shared_buffers and a pgbench scale whose pgbench_accounts and primary key
# (15 MiB per unit of scale) fill 93% of it; seconds of each pgbench run once
# its clients are connected.
buffers_mb=128 scale=8 seconds=4
[ $measure = 0 ] || buffers_mb=256 scale=16 seconds=10
say() { echo "guest-postgres: $*" >&2; }
grep -q ' /sys/fs/mshare fuse.msharefs ' /proc/mounts || { say "msharefsd is not mounted"; exit 1; }

cd /
tar xzf "/$bundle"
export LD_LIBRARY_PATH=/
[ -e /libmshare.so.0 ] || ln -s /libmshare.so.0.1.0 /libmshare.so.0
echo 'postgres:x:101:104:PostgreSQL:/tmp:/bin/sh' >>/etc/passwd
echo 'postgres:x:104:' >>/etc/group
mkdir -p /pg/data /pg/sock
chown -R 101:104 /pg
chmod 700 /pg/data
PGBIN=/usr/lib/postgresql/$version/bin
ENV="TZ=UTC LD_LIBRARY_PATH=/ HOME=/tmp"
as_pg() { su -s /bin/sh postgres -c "env $ENV $*"; }
q() { as_pg "$PGBIN/psql -h /pg/sock -X -q -At -d postgres -c \"$1\""; }
pgbench() { as_pg "$PGBIN/pgbench -h /pg/sock $* postgres"; }

as_pg "$PGBIN/initdb -N --no-locale -E UTF8 -A trust -D /pg/data" >/tmp/initdb.log 2>&1 ||
	{ cat /tmp/initdb.log; exit 1; }
say "initdb done"
# wal_level=minimal: pgbench -i writes its tables without WAL.
OPTS="-c shared_buffers=${buffers_mb}MB -c listen_addresses= -c unix_socket_directories=/pg/sock -c max_connections=230"
OPTS="$OPTS -c fsync=off -c huge_pages=off -c wal_level=minimal -c max_wal_senders=0"
OPTS="$OPTS -c shared_preload_libraries=pg_prewarm -c pg_prewarm.autoprewarm=off"
start() {
	run=
	[ "$1" = plain ] || run="MSHARE_RUN_PRELOAD=/libmshare-preload.so /mshare-run -m /sys/fs/mshare --"
	as_pg "$run $PGBIN/pg_ctl -D /pg/data -l /pg/sock/log -w -t 600 -o '$OPTS' start" >/dev/null ||
		{ tail -n 20 /pg/sock/log; exit 1; }
}
stop() { as_pg "$PGBIN/pg_ctl -D /pg/data -m fast -w -t 600 stop" >/dev/null; }
# A server left running would hold the mount and the module.
trap '[ ! -f /pg/data/postmaster.pid ] || as_pg "$PGBIN/pg_ctl -D /pg/data -m immediate stop" >/dev/null 2>&1' EXIT

cat >/pg/idle.sql <<'SQL'
SELECT 1;
SELECT pg_sleep(3000);
SQL
# Every page of pgbench_accounts and of its primary key (cached before the
# clients start) read in this backend: one tuple of each heap page (a TID
# scan: the page's header and line pointers at its start, the tuple at its
# end), and each index page's header and special space (pgstatindex).
cat >/pg/all.sql <<'SQL'
SELECT count(*) FROM pgbench_accounts WHERE ctid = ANY ((SELECT t FROM heap_pages)::tid[]);
SELECT leaf_pages FROM pgstatindex('pgbench_accounts_pkey');
SELECT pg_sleep(3000);
SQL
chmod 644 /pg/*.sql

pt() { awk '/^PageTables:/ { print $2 }' /proc/meminfo; }
# The client backends, from their process titles (no query: under load a new
# connection waits its turn for the CPUs).
backends() { grep -lsF ' [local] ' /proc/[0-9]*/cmdline | cut -d/ -f3; }
# No client backend left, nor its page tables.
quiet() {
	i=0
	while [ -n "$(backends)" ] && [ $i -lt 600 ]; do sleep 0.5; i=$((i + 1)); done
	sleep 1
}
# All n clients done with their statements: asleep in pg_sleep.
settle() {
	i=0
	while [ $i -lt 3000 ]; do
		kill -0 "$bench" 2>/dev/null || { say "pgbench exited: $(cat /tmp/pgbench.log)"; exit 1; }
		[ "$(q "select count(*) from pg_stat_activity where wait_event = 'PgSleep'")" -ge "$1" ] && return 0
		sleep 0.5
		i=$((i + 1))
	done
	say "clients did not settle"
	exit 1
}
# vmpte PID...: mean VmPTE of the processes.
vmpte() {
	for p in "$@"; do echo "/proc/$p/status"; done | xargs cat 2>/dev/null |
		awk '/^VmPTE:/ { t += $2; c++ } END { print c ? int(t / c) : 0 }'
}
now() { cut -d' ' -f1 /proc/uptime; }
# run N SCRIPT: page tables per backend (PageTables growth, mean VmPTE) with
# N clients asleep after SCRIPT, and the seconds they took to get there.
run() {
	quiet
	pt0=$(pt) t0=$(now)
	pgbench "-n -c $1 -j 2 -t 1 -f /pg/$2.sql" >/tmp/pgbench.log 2>&1 &
	bench=$!
	settle "$1"
	t=$(echo "$t0 $(now)" | awk '{ printf "%d", $2 - $1 + 1 }')
	# shellcheck disable=SC2046
	echo "$(( ($(pt) - pt0) / $1 )) $(vmpte $(q "select pid from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()")) $t"
	# Ending the backends ends pgbench.
	q "select pg_terminate_backend(pid) from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()" >/dev/null
	wait $bench 2>/dev/null || true
}
tps() { awk '/^tps/ { printf "%.0f", $3 }' "$1"; }
# pgbench's -T counts its connections too: the runs below last CONNECT (what
# the idle clients took to connect) + $seconds.
# natural N CONNECT: page tables per backend halfway through pgbench -S with
# N clients, then its TPS and initial connection time (ms).
natural() {
	quiet
	pt0=$(pt)
	pgbench "-n -S -c $1 -j 2 -P 1 -T $(($2 + seconds))" >/tmp/pgbench.log 2>&1 &
	bench=$!
	# This shell takes the figures at nice -20: under load its commands would
	# wait their turn behind the clients and the run could end first.
	renice -n -20 -p "$(sh -c 'echo $PPID')" >/dev/null
	# pgbench reports progress once its clients are connected.
	i=0
	until grep -q '^progress:' /tmp/pgbench.log; do
		if ! kill -0 "$bench" 2>/dev/null || [ $i -ge 3000 ]; then
			say "pgbench -S did not start: $(cat /tmp/pgbench.log)"
			exit 1
		fi
		sleep 0.2
		i=$((i + 1))
	done
	sleep $((seconds / 2))
	# shellcheck disable=SC2046
	figures="$(( ($(pt) - pt0) / $1 )) $(vmpte $(backends))"
	kill -0 $bench 2>/dev/null || { say "pgbench -S ended before the figures were taken: $(cat /tmp/pgbench.log)"; exit 1; }
	wait $bench || { say "pgbench -S failed: $(cat /tmp/pgbench.log)"; exit 1; }
	echo "$figures $(tps /tmp/pgbench.log) $(awk '/^initial connection time/ { printf "%.0f", $5 }' /tmp/pgbench.log)"
}
# tpcb N CONNECT: TPS of TPC-B with N clients; no failed transaction.
tpcb() {
	quiet
	pgbench "-n -c $1 -j 2 -T $(($2 + seconds))" >/tmp/tpcb.log 2>&1 || { say "TPC-B failed: $(cat /tmp/tpcb.log)"; exit 1; }
	grep -q '^number of failed transactions: 0 ' /tmp/tpcb.log ||
		{ say "FAIL: TPC-B with $1 clients failed transactions: $(cat /tmp/tpcb.log)"; exit 1; }
	tps /tmp/tpcb.log
}
# Share of shared_buffers holding the pages every backend read.
touched() {
	q "select count(*) from pg_buffercache where reldatabase = (select oid from pg_database where datname = current_database()) and relfilenode in (pg_relation_filenode('pgbench_accounts'), pg_relation_filenode('pgbench_accounts_pkey'))"
}

CLIENTS="$*"
status=0
: >/tmp/figures
for mode in mshare plain; do
	start $mode
	say "server started ($mode)"
	if [ $mode = mshare ]; then
		/msharectl -m /sys/fs/mshare -j ls >/tmp/regions
		grep -q '"backend":"kmod"' /tmp/regions && grep -q '"name":"anon-' /tmp/regions ||
			{ say "the main segment is not a region on the module:"; cat /tmp/regions; exit 1; }
		pgbench "-i -I dtGvp -s $scale" >/tmp/init.log 2>&1 || { cat /tmp/init.log; exit 1; }
		for e in pg_prewarm pgstattuple pg_buffercache; do q "create extension $e" >/dev/null; done
		say "pgbench -i done"
	fi
	# The TIDs of each heap page's first tuple; every page cached.
	q "drop table if exists heap_pages" >/dev/null 2>&1
	q "create table heap_pages as select array_agg(format('(%s,1)', b)::tid) as t from generate_series(0, pg_relation_size('pgbench_accounts') / current_setting('block_size')::int - 1) b" >/dev/null
	q "select pg_prewarm('pgbench_accounts'), pg_prewarm('pgbench_accounts_pkey')" >/dev/null
	buffers=$(q "select setting from pg_settings where name = 'shared_buffers'")
	for n in $CLIENTS; do
		idle=$(run "$n" idle)
		connect=${idle##* } idle=${idle% *}
		all=$(run "$n" all)
		all=${all% *}
		[ -n "$share" ] || share=$(touched)
		nat=$(natural "$n" "$connect")
		# The test runs TPC-B with the last client count only.
		b=-
		[ $measure = 0 ] && [ "$n" != "${CLIENTS##* }" ] || b=$(tpcb "$n" "$connect")
		echo "$mode $n $idle $all $nat $b" >>/tmp/figures
		say "$mode, $n clients: per backend idle $idle, every page read $all, pgbench -S $nat, TPC-B $b"
	done
	sums=$(q "select (select sum(abalance) from pgbench_accounts), (select sum(bbalance) from pgbench_branches), (select sum(tbalance) from pgbench_tellers), (select sum(delta) from pgbench_history)")
	echo "$sums" | awk -F'|' '{ exit !($1 == $2 && $2 == $3 && $3 == $4) }' ||
		{ say "FAIL: after TPC-B ($mode) the balances disagree: accounts|branches|tellers|history $sums"; status=1; }
	say "$mode: balances accounts|branches|tellers|history $sums"
	echo "$mode $share" >>/tmp/share
	share=
	stop
done

# Fields of /tmp/figures: mode clients, then PageTables and VmPTE per backend
# idle (3, 4), every page read (5, 6), pgbench -S (7, 8); TPS -S (9),
# connection time (10), TPS TPC-B (11).
echo "== guest-postgres: page tables per backend beyond an idle backend (SELECT 1), PostgreSQL $version, $(uname -r), one boot:"
awk -v b="$buffers" -v mb=$buffers_mb -v s=$scale '{ printf "   %s: every backend read %d MiB, %.1f%% of shared_buffers (%d MiB), pgbench scale %d\n", $1, $2 * 8 / 1024, 100 * $2 / b, mb, s }' /tmp/share
printf '%-8s %-16s %26s %26s %7s\n' clients access "mshare-run (module)" "plain 4K" ratio
for n in $CLIENTS; do
	for access in all natural; do
		case $access in all) f=5 label="every page read";; natural) f=7 label="pgbench -S";; esac
		m=$(awk -v n="$n" -v f="$f" '$1 == "mshare" && $2 == n { print $f - $3, $(f + 1) - $4 }' /tmp/figures)
		p=$(awk -v n="$n" -v f="$f" '$1 == "plain" && $2 == n { print $f - $3, $(f + 1) - $4 }' /tmp/figures)
		ratio=$(echo "${m#* } ${p#* }" | awk '{ if ($2 > 0) printf "%.3f", ($1 > 0 ? $1 : 0) / $2; else print "n/a" }')
		printf '%-8s %-16s %10s kB (VmPTE %s) %10s kB (VmPTE %s) %7s\n' "$n" "$label" "${m% *}" "${m#* }" "${p% *}" "${p#* }" "$ratio"
		[ $measure = 0 ] || continue
		if [ "${m% *}" -gt 64 ] || [ "${m#* }" -gt 64 ]; then
			say "FAIL: on the module a backend costs more than 64 KiB beyond an idle one ($n clients, $label)"
			status=1
		fi
		if [ "${p% *}" -le "${m% *}" ] || [ "${p#* }" -le "${m#* }" ]; then
			say "FAIL: plain PostgreSQL costs no more than on the module ($n clients, $label)"
			status=1
		fi
	done
done
for n in $CLIENTS; do
	awk -v n="$n" '$2 == n { f[$1] = $4 } END { printf "idle backend (SELECT 1), %d clients: VmPTE %s kB on the module, %s kB plain\n", n, f["mshare"], f["plain"] }' /tmp/figures
done
echo "emulated (TCG) times, not checked; pgbench -j 2, runs of $seconds s after the connections; connection time as pgbench reports it:"
printf '%-8s %34s %34s\n' clients "mshare-run: TPS -S / TPC-B, conn" "plain 4K: TPS -S / TPC-B, conn"
for n in $CLIENTS; do
	awk -v n="$n" '$2 == n { f[$1] = sprintf("%s / %s, %s ms", $9, $11, $10) } END { printf "%-8s %34s %34s\n", n, f["mshare"], f["plain"] }' /tmp/figures
done
if [ $measure = 0 ] && ! awk -v b="$buffers" '{ if ($2 < 0.9 * b) exit 1 }' /tmp/share; then
	say "FAIL: the backends read less than 90% of shared_buffers"
	status=1
fi
echo "  * PageTables growth of /proc/meminfo over the server before the clients, per client; VmPTE: mean over the"
echo "    backends; both minus the idle figures; pgbench -S halfway through its run; ratio of the VmPTE figures"
exit $status
