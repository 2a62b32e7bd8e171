# Shared by the scripts in this directory: sourced, not run.
# shellcheck shell=bash

MSHAREFS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MSHAREFS_BUILD=${MSHAREFS_BUILD:-$MSHAREFS_ROOT/build}

say() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }
die() {
	say "$*"
	exit 1
}

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		die "needs root for: $* (run as root, or install sudo)"
	fi
}

# Installs the Debian packages given that are not installed yet.
apt_install() {
	local missing=() p
	for p in "$@"; do
		grep -q 'ok installed' <<<"$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	say "installing ${missing[*]}"
	local apt=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends)
	if ! as_root "${apt[@]}" "${missing[@]}" >/dev/null; then
		as_root apt-get update -q >/dev/null || die "apt-get update failed"
		as_root "${apt[@]}" "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
	fi
}
