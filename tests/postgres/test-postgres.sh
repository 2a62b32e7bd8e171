#!/usr/bin/env bash
# PostgreSQL, unmodified, under mshare-run: its main shared memory segment is
# adopted into a region; pgbench read-only and read-write runs with 16, 64
# and 200 clients complete without a failed transaction; the balances agree;
# restarts of msharefsd (killed while the server runs) and of the server
# (stopped with -m immediate) lose no committed transaction.
#
#   test-postgres.sh   (root; environment as tests/postgres/pg-lib.sh says)
set -euo pipefail

if [ "${PG_IN_NAMESPACE:-}" != 1 ]; then
	export PG_IN_NAMESPACE=1
	exec unshare -m --propagation private "$0" "$@"
fi
. "$(dirname "$0")/pg-lib.sh"
pg_require
pg_workdir
trap pg_cleanup EXIT

buffers=${PG_SHARED_BUFFERS:-1GB}
pg_hugepages 1200 || pg_say "no room for 1200 MiB of huge pages: the segment gets 4 KiB pages"
pg_daemon_start
pg_initdb
pg_start mshare "$buffers"
pm=$(pg_postmaster)

# The main segment is one region the server's processes are attached to.
region=$("$MSHARECTL" -m "$PG_MOUNT" -j ls)
grep -q "\"attachers\":\[$pm[],]" <<<"$region" ||
	pg_die "the postmaster ($pm) has no window of a region: $region"
grep -q '"name":"anon-' <<<"$region" || pg_die "the main segment was not adopted: $region"
pg_say "main segment adopted: $("$MSHARECTL" -m "$PG_MOUNT" ls | tail -n +2)"

pgbench_run -i -s "${PG_SCALE:-10}" -q >"$PG_WORK/init.log" 2>&1 || pg_die "pgbench -i failed: $(tail -n 3 "$PG_WORK/init.log")"

# Client backends are attachers of it too: forked with the window, each
# attaches on its own.
printf 'SELECT 1;\n\\sleep 5 s\n' >"$PG_WORK/idle.sql"
chmod 644 "$PG_WORK/idle.sql"
pgbench_run -n -c 8 -j 2 -t 1 -f "$PG_WORK/idle.sql" >/dev/null 2>&1 &
idle=$!
for _ in $(seq 100); do
	backends=$(psql_q "select pid from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()")
	[ "$(wc -w <<<"$backends")" -ge 8 ] && break
	sleep 0.1
done
[ "$(wc -w <<<"$backends")" -ge 8 ] || pg_die "8 clients did not connect"
region=$("$MSHARECTL" -m "$PG_MOUNT" -j ls)
for b in $backends; do
	grep -q "\"attachers\":\[[0-9,]*\b$b\b" <<<"$region" || pg_die "backend $b has no window of the main segment: $region"
done
wait "$idle" || pg_die "the idle clients failed"
pg_say "the postmaster and 8 client backends are attached"

committed=0
# tpcb CLIENTS SECONDS: a read-write run; adds its transactions to committed.
tpcb() {
	local out n
	out=$(pgbench_run -n -c "$1" -j 2 -T "$2" 2>&1) || pg_die "pgbench -c $1 failed: $out"
	grep -q 'number of failed transactions: 0 ' <<<"$out" || pg_die "failed transactions: $out"
	n=$(echo "$out" | awk '/number of transactions actually processed/ { print $NF }')
	n=${n%%/*}
	committed=$((committed + n))
	pg_say "TPC-B, $1 clients: $n transactions, $(echo "$out" | grep -o 'tps = [0-9.]*')"
}
for clients in 16 64 200; do
	tpcb "$clients" "${PG_SECONDS:-3}"
	out=$(pgbench_run -n -S -c "$clients" -j 2 -T "${PG_SECONDS:-3}" 2>&1) || pg_die "pgbench -S -c $clients: $out"
	grep -q 'number of failed transactions: 0 ' <<<"$out" || pg_die "failed transactions: $out"
	pg_say "select-only, $clients clients: $(echo "$out" | grep -o 'tps = [0-9.]*')"
done
pg_consistent >/dev/null || pg_die "balances disagree after the read-write runs: $(pg_consistent)"
[ "$(psql_q 'select count(*) from pgbench_history')" -eq "$committed" ] ||
	pg_die "history has $(psql_q 'select count(*) from pgbench_history') rows, $committed transactions committed"

# msharefsd dies while the server runs; a new one takes the mount over.
kill -9 "$PG_DAEMON"
wait "$PG_DAEMON" 2>/dev/null || true
tpcb 16 2
pg_daemon_start
tpcb 16 2
[ "$(psql_q 'select count(*) from pgbench_history')" -eq "$committed" ] ||
	pg_die "lost transactions across the msharefsd restart"

# The server crashes (immediate stop) and recovers under mshare-run.
pg_stop immediate
pg_start mshare "$buffers"
got=$(psql_q 'select count(*) from pgbench_history')
[ "$got" -eq "$committed" ] || pg_die "after recovery: $got transactions in history, $committed committed"
pg_consistent >/dev/null || pg_die "balances disagree after recovery"
pg_stop fast
pg_say "ok: $committed committed transactions, all kept across both restarts; balances agree"
