#!/bin/sh
# In the QEMU guest: PostgreSQL VERSION from BUNDLE, plain and under
# mshare-run (its main segment in a region on the module, through the
# msharefsd that init mounted at /sys/fs/mshare), page tables per backend
# for each client count; see test-guest-postgres.sh.
#
#   guest-postgres.sh VERSION BUNDLE [--measure] CLIENTS...
set -e
version=$1 bundle=$2
shift 2
measure=0
[ "$1" != --measure ] || { measure=1; shift; }
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

as_pg "$PGBIN/initdb -N --no-locale -E UTF8 -A trust -D /pg/data" >/tmp/initdb.log 2>&1 ||
	{ cat /tmp/initdb.log; exit 1; }
say "initdb done"
OPTS="-c shared_buffers=256MB -c listen_addresses= -c unix_socket_directories=/pg/sock -c max_connections=230"
OPTS="$OPTS -c fsync=off -c huge_pages=off -c shared_preload_libraries=pg_prewarm -c pg_prewarm.autoprewarm=off"
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
cat >/pg/all.sql <<'SQL'
SET max_parallel_workers_per_gather = 0;
SET enable_indexonlyscan = off;
SET enable_indexscan = off;
SET enable_bitmapscan = off;
SELECT pg_prewarm('pgbench_accounts');
SELECT count(*) FROM pgbench_accounts;
SELECT pg_sleep(3000);
SQL
chmod 644 /pg/*.sql

pt() { awk '/^PageTables:/ { print $2 }' /proc/meminfo; }
clients() { q "select count(*) from pg_stat_activity where backend_type = 'client backend'"; }
quiet() {
	i=0
	while [ "$(clients)" -gt 1 ] && [ $i -lt 600 ]; do sleep 0.5; i=$((i + 1)); done
	sleep 2
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
vmpte() {
	total=0 count=0
	for p in $(q "select pid from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()"); do
		v=$(awk '/^VmPTE:/ { print $2 }' "/proc/$p/status" 2>/dev/null)
		[ -n "$v" ] || continue
		total=$((total + v))
		count=$((count + 1))
	done
	echo $((count ? total / count : 0))
}
# run MODE N SCRIPT: page tables per backend (PageTables growth, mean VmPTE)
run() {
	quiet
	pt0=$(pt)
	as_pg "$PGBIN/pgbench -h /pg/sock -n -c $2 -j 2 -t 1 -f /pg/$3.sql postgres" >/tmp/pgbench.log 2>&1 &
	bench=$!
	settle "$2"
	echo "$(( ($(pt) - pt0) / $2 )) $(vmpte)"
	# Ending the backends ends pgbench.
	q "select pg_terminate_backend(pid) from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()" >/dev/null
	wait $bench 2>/dev/null || true
}

CLIENTS="$*"
status=0
for mode in mshare plain; do
	start $mode
	say "server started ($mode)"
	if [ $mode = mshare ]; then
		/msharectl -m /sys/fs/mshare -j ls >/tmp/regions
		grep -q '"backend":"kmod"' /tmp/regions && grep -q '"name":"anon-' /tmp/regions ||
			{ say "the main segment is not a region on the module:"; cat /tmp/regions; exit 1; }
		as_pg "$PGBIN/pgbench -h /pg/sock -i -s 4 -q postgres" >/tmp/init.log 2>&1 || { cat /tmp/init.log; exit 1; }
		q "create extension pg_prewarm" >/dev/null
		say "pgbench -i done"
	fi
	for n in $CLIENTS; do
		idle=$(run $mode "$n" idle)
		all=$(run $mode "$n" all)
		echo "$mode $n ${idle% *} ${idle#* } ${all% *} ${all#* }" >>/tmp/figures
		say "$mode, $n clients: per backend idle ${idle% *} kB (VmPTE ${idle#* } kB), every page read ${all% *} kB (VmPTE ${all#* } kB)"
	done
	stop
done

echo "== guest-postgres: page tables per backend beyond an idle backend, PostgreSQL $version, shared_buffers 256MB,"
echo "   pgbench scale 4 (every backend reads each cached page of pgbench_accounts), $(uname -r), one boot"
printf '%-10s %24s %24s %8s\n' clients "mshare-run (module)" "plain 4K" ratio
for n in $CLIENTS; do
	m=$(awk -v n="$n" '$1 == "mshare" && $2 == n { print $5 - $3, $6 - $4 }' /tmp/figures)
	p=$(awk -v n="$n" '$1 == "plain" && $2 == n { print $5 - $3, $6 - $4 }' /tmp/figures)
	ratio=$(echo "${m#* } ${p#* }" | awk '{ if ($2 > 0) printf "%.3f", ($1 > 0 ? $1 : 0) / $2; else print "n/a" }')
	printf '%-10s %13s kB (VmPTE %s) %13s kB (VmPTE %s) %8s\n' "$n" "${m% *}" "${m#* }" "${p% *}" "${p#* }" "$ratio"
	if [ $measure = 0 ]; then
		if [ "${m% *}" -gt 64 ] || [ "${m#* }" -gt 64 ]; then
			say "FAIL: on the module a backend costs more than 64 KiB beyond an idle one ($n clients)"
			status=1
		fi
		if [ "${p% *}" -le "${m% *}" ]; then
			say "FAIL: plain PostgreSQL costs no more than on the module ($n clients)"
			status=1
		fi
	fi
done
echo "  * PageTables growth of /proc/meminfo over the server before the clients, per client; VmPTE: mean over the"
echo "    backends; both as every-page-read minus idle (SELECT 1); ratio of the VmPTE figures"
exit $status
