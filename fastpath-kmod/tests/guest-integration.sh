#!/bin/sh
# Runs the integration suites in the QEMU guest against msharefsd with
# datapath=kmod (each suite mounts its own daemon in a private namespace).
# With --preload the suites run under libmshare-preload.so: on a kernel
# without FUSE passthrough (6.1) that is how programs reach the module.
if [ "$1" = --preload ]; then
	export LD_PRELOAD=/libmshare-preload.so
	shift
fi
export MSHAREFS_TEST_DATAPATH=kmod MSHAREFSD=/bin/msharefsd MSHARECTL=/msharectl
export EXAMPLE_CREATOR=/mshare_creator EXAMPLE_ATTACHER=/mshare_attacher
export EXAMPLE_LIB_CREATOR=/mshare_lib_creator EXAMPLE_LIB_ATTACHER=/mshare_lib_attacher
export EXAMPLES_DIR=/
export LD_LIBRARY_PATH=/
[ -e /libmshare.so.0 ] || ln -s /libmshare.so.0.1.0 /libmshare.so.0
status=0
for suite in "$@"; do
	echo "== $suite (datapath=kmod)"
	"/$suite" || status=1
done
exit $status
