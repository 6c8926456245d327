#!/usr/bin/env bash
# scripts/fresh-check.sh: checks the README's two commands on a fresh Debian 12
# without a second machine or Docker: a minimal bookworm root made with
# debootstrap, with nothing but gcc and git added, a clean clone of this
# repository's committed HEAD in it, then, as root inside it,
#   1. bash scripts/demo.sh --seconds 15      (with the network: it installs)
#   2. bash scripts/test.sh --setup-only      (with the network: packages, npm ci)
#   3. bash scripts/test.sh                   (in a private network namespace,
#                                              only its own loopback: no port
#                                              clash with anything on the host)
# It prints each step's duration and the suite's closing "N passed, M failed".
# Not part of the test suite (it takes a fresh install plus the whole suite:
# 20-40 minutes on two cores).
#
# Usage: sudo bash scripts/fresh-check.sh [--root DIR] [--new] [--no-demo] [--no-test]
#   --root DIR   the chroot (default /var/tmp/thingsync-fresh); an existing one is
#                reused (its packages stay installed: use --new for a real check)
#   --new        remove DIR first and debootstrap it again
#   --no-demo, --no-test   leave out that command
# Environment: MIRROR (default: the host's first Debian URI, else
# http://deb.debian.org/debian), NICE (default 15), FUZZ_SECONDS, SKIP_ASAN,
# SKIP_FUZZ (passed on to test.sh).
#
# What it copies from the host, so that the chroot reaches the same package
# registries the same way: apt's sources and the apt.conf.d files no package
# owns (a proxy, a snapshot's Check-Valid-Until), resolv.conf and hosts, the
# local CAs in /usr/local/share/ca-certificates (a TLS-inspecting proxy's),
# /etc/npmrc, and the proxy variables (http_proxy, https_proxy, no_proxy and
# their capitals). /proc, /sys, /dev, /dev/pts and /dev/shm are mounted for
# the run and unmounted at its end (also on Ctrl-C or an error).
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FRESH=/var/tmp/thingsync-fresh
new=0
run_demo=1
run_test=1
while [ "$#" -gt 0 ]; do
	case "$1" in
	--root)
		FRESH=${2:?--root needs a directory}
		shift
		;;
	--new) new=1 ;;
	--no-demo) run_demo=0 ;;
	--no-test) run_test=0 ;;
	-h | --help)
		sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "fresh-check: unknown argument: $1 (try --help)" >&2
		exit 2
		;;
	esac
	shift
done
NICE=${NICE:-15}
say() { printf '== fresh-check: %s\n' "$*"; }
die() {
	say "$*" >&2
	exit 1
}

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mounts, unshare)"
case $FRESH in
/*) ;;
*) FRESH=$(pwd)/$FRESH ;;
esac
[ "$FRESH" != / ] || die "--root / is not a chroot"
for tool in unshare ip chroot mount git; do
	command -v "$tool" >/dev/null 2>&1 || die "no $tool on this machine"
done

# Anything still mounted below FRESH (an earlier run killed hard)?
mounted_below() { awk -v r="$FRESH/" 'index($2 "/", r) == 1 { print $2 }' /proc/mounts | sort -r; }
unmount_all() {
	local m
	for m in $(mounted_below); do
		umount "$m" 2>/dev/null || umount -l "$m" || say "could not unmount $m"
	done
}
if [ -n "$(mounted_below)" ]; then
	say "unmounting what an earlier run left mounted below $FRESH"
	unmount_all
fi
[ -z "$(mounted_below)" ] || die "still mounted below $FRESH: $(mounted_below | tr '\n' ' ')"

if [ "$new" = 1 ] && [ -e "$FRESH" ]; then
	say "removing $FRESH"
	rm -rf --one-file-system "$FRESH"
fi

# Host's Debian mirror, from deb822 sources or sources.list.
if [ -z "${MIRROR:-}" ]; then
	MIRROR=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*debian\/*\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 || true)
	[ -n "$MIRROR" ] || MIRROR=$(awk '$1 == "deb" && $2 ~ /debian\/?$/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
	MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi

T0=$SECONDS
if [ ! -f "$FRESH/etc/debian_version" ]; then
	if ! command -v debootstrap >/dev/null 2>&1; then
		say "installing debootstrap on the host"
		apt-get install -y -q debootstrap >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q debootstrap >/dev/null; } ||
			die "cannot install debootstrap"
	fi
	say "debootstrap --variant=minbase bookworm $FRESH $MIRROR"
	mkdir -p "$FRESH"
	debootstrap --variant=minbase bookworm "$FRESH" "$MIRROR" >"$FRESH.debootstrap.log" 2>&1 ||
		die "debootstrap failed: see $FRESH.debootstrap.log"
	say "debootstrap done in $((SECONDS - T0))s"
else
	say "reusing $FRESH (bookworm $(cat "$FRESH/etc/debian_version")); --new starts from nothing"
fi

say "copying the host's apt sources, name resolution, local CAs and npmrc"
if compgen -G '/etc/apt/sources.list.d/*.sources' >/dev/null; then
	cp /etc/apt/sources.list.d/*.sources "$FRESH/etc/apt/sources.list.d/"
	rm -f "$FRESH/etc/apt/sources.list"
elif [ -f /etc/apt/sources.list ]; then
	cp /etc/apt/sources.list "$FRESH/etc/apt/sources.list"
fi
for f in /etc/apt/apt.conf.d/*; do
	[ -f "$f" ] || continue
	# Files no package owns are this host's own settings (proxy, snapshot).
	if ! dpkg -S "$f" >/dev/null 2>&1; then
		cp "$f" "$FRESH/etc/apt/apt.conf.d/"
		say "  apt.conf.d/$(basename "$f")"
	fi
done
cp -L /etc/resolv.conf "$FRESH/etc/resolv.conf"
cp /etc/hosts "$FRESH/etc/hosts"
if compgen -G '/usr/local/share/ca-certificates/*' >/dev/null; then
	mkdir -p "$FRESH/usr/local/share/ca-certificates"
	cp -R /usr/local/share/ca-certificates/. "$FRESH/usr/local/share/ca-certificates/"
	say "  local CAs: $(cd /usr/local/share/ca-certificates && echo *)"
fi
[ -f /etc/npmrc ] && cp /etc/npmrc "$FRESH/etc/npmrc" && say "  /etc/npmrc"

trap 'unmount_all' EXIT
mount -t proc proc "$FRESH/proc"
mount -t sysfs sysfs "$FRESH/sys"
mount --bind /dev "$FRESH/dev"
mount --make-private "$FRESH/dev"
mount -t devpts devpts "$FRESH/dev/pts" -o newinstance,ptmxmode=0666,mode=620
mount -t tmpfs shm "$FRESH/dev/shm" -o mode=1777
say "mounted: $(mounted_below | tr '\n' ' ')"

# A clean environment, as a root login has it (CI=true, no standard input, as
# CI runs .ci/run), plus the host's proxy variables.
CENV=(/usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
	TERM=dumb CI=true)
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY FUZZ_SECONDS SKIP_ASAN SKIP_FUZZ; do
	[ -n "${!v:-}" ] && CENV+=("$v=${!v}")
done
in_root() { chroot "$FRESH" "${CENV[@]}" nice -n "$NICE" bash -c "$1" </dev/null; }

say "the base: gcc and git only (apt-get install --no-install-recommends)"
in_root 'apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends gcc git >/dev/null' ||
	die "apt-get install gcc git failed in the chroot"
# A reused root may have ca-certificates already: bring the local CAs in.
in_root 'command -v update-ca-certificates >/dev/null && update-ca-certificates >/dev/null || true'

say "a clean clone of $SRC at $(git -C "$SRC" rev-parse --short HEAD) ($(git -C "$SRC" rev-parse --abbrev-ref HEAD)); uncommitted changes are not in it"
rm -rf "$FRESH/srv/thingsync.git" "$FRESH/root/thingsync"
git clone -q --bare "$SRC" "$FRESH/srv/thingsync.git"
in_root 'git clone -q /srv/thingsync.git /root/thingsync'

LOGS=$FRESH.logs
mkdir -p "$LOGS"
status=0
# step TITLE LOG SUMMARY_RE COMMAND...: runs one command into $LOGS/LOG, says
# how long it took and, on success, the log's lines that match SUMMARY_RE;
# on failure its tail (or its list of failures).
step() {
	local title=$1 log=$LOGS/$2 re=$3 t=$SECONDS
	shift 3
	say "$title (log: $log)"
	if "$@" </dev/null >"$log" 2>&1; then
		say "ok in $((SECONDS - t))s"
		grep -E "$re" "$log" || true
	else
		grep -A20 '^== failures:' "$log" || tail -n 40 "$log"
		say "FAILED after $((SECONDS - t))s"
		status=1
	fi
}
if [ "$run_demo" = 1 ]; then
	step "1. bash scripts/demo.sh --seconds 15" demo.log '^setup: (installed|all)|^== the scene' \
		in_root 'cd /root/thingsync && bash scripts/demo.sh --seconds 15'
fi
if [ "$run_test" = 1 ]; then
	step "2. bash scripts/test.sh --setup-only" test-setup.log '^setup: (installed|all)|npm ci' \
		in_root 'cd /root/thingsync && bash scripts/test.sh --setup-only'
	step "3. bash scripts/test.sh, in a network namespace of its own" test.log \
		'^== (build-ci|build-asan): [0-9]+ passed|^== done in|^[0-9]+ passed, [0-9]+ failed$' \
		unshare -n bash -c 'ip link set lo up && exec "$@"' unshared \
		chroot "$FRESH" "${CENV[@]}" nice -n "$NICE" bash -c 'cd /root/thingsync && bash scripts/test.sh'
	[ "$status" = 0 ] || grep -E '^[0-9]+ passed, [0-9]+ failed$' "$LOGS/test.log" || true
fi
say "done in $((SECONDS - T0))s; the root stays in $FRESH, logs in $LOGS"
exit "$status"
