#!/bin/sh
# Runs tests/adoption/test-adoption.sh in the QEMU guest on datapath=kmod:
# the adoption programs under mshare-run (and MAP_SHARED_PT) with their
# windows on the module. The tools it needs (bash, util-linux's unshare and
# setpriv) were added to / by run-guest.sh; they go where the script looks.
set -e
for t in bash unshare setpriv; do
	rm -f "/bin/$t" "/sbin/$t" "/usr/bin/$t" "/usr/sbin/$t"
	ln -s "/$t" "/usr/bin/$t"
done
ln -sf /usr/bin/bash /bin/bash
mkdir -p /var/tmp
[ -e /libmshare.so.0 ] || ln -s /libmshare.so.0.1.0 /libmshare.so.0
export LD_LIBRARY_PATH=/ DATAPATH=kmod MSHAREFSD=/bin/msharefsd MSHARECTL=/msharectl
export MSHARE_RUN=/mshare-run MSHARE_RUN_PRELOAD=/libmshare-preload.so MSHAREFS_TEST_DATAPATH=kmod
exec /test-adoption.sh /adopt_anon /adopt_sysv /adopt_shm /adopt_memfd /adopt_shared_pt \
	/adopt_shared_pt_preload
