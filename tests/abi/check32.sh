#!/bin/sh
# Builds abi_check.c for the 32-bit x86 ABI and runs it.
# Usage: check32.sh INCLUDE_DIR SOURCE COMPILER [COMPILER ARGS...]
# Exits 77 (skipped) when the compiler cannot produce 32-bit programs at all.
set -u
if [ $# -lt 3 ]; then
	echo "usage: $0 INCLUDE_DIR SOURCE COMPILER [ARGS...]" >&2
	exit 2
fi
inc=$1
src=$2
shift 2

tmp=$(mktemp -d "${TMPDIR:-/tmp}/abi32.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

printf 'int main(void) { return 0; }\n' > "$tmp/probe.c"
if ! "$@" -m32 -o "$tmp/probe" "$tmp/probe.c" 2> "$tmp/probe.log" || ! "$tmp/probe"; then
	echo "no usable -m32 toolchain (install gcc-multilib); skipping" >&2
	cat "$tmp/probe.log" >&2
	exit 77
fi

"$@" -m32 -std=gnu11 -Wall -Wextra -Werror -I "$inc" -o "$tmp/abi_check32" "$src" || exit 1
"$tmp/abi_check32"
