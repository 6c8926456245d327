#!/usr/bin/env bash
# scripts/setup.sh [--test] [--demo]: installs the Debian packages thingsync
# needs to build and, with --test, to run its whole test suite (clang for the
# fuzzers and valgrind), with --demo, what the demo's tour uses. Only what is missing is installed; when everything is there
# it does nothing and takes well under a second.
#
# Works as root (no sudo needed) or as a user with sudo. Debian 12 and
# derivatives; on a system without dpkg it only says so.
set -euo pipefail

BUILD_PKGS=(meson ninja-build pkg-config gcc libc6-dev libevent-dev libjansson-dev liblmdb-dev
	libsodium-dev libinih-dev libcmocka-dev scdoc libcurl4-openssl-dev libsqlite3-dev libpq-dev
	libgpiod-dev libmosquitto-dev libssl-dev)
# tzdata: the cumul tests cut days at Europe/Berlin midnight (minimal images lack it).
# clang 14 is Debian 12's clang; libFuzzer and the sanitizer runtimes for it
# live in libclang-rt-14-dev.
TEST_PKGS=(clang libclang-rt-14-dev valgrind g++ postgresql mosquitto openssl curl tzdata)
# npm ci fetches test/browser's packages over HTTPS: the system's CA bundle.
TEST_PKGS+=(ca-certificates)
# The browser tests (test/browser): Debian's chromium, driven from node with
# puppeteer-core (installed by scripts/test.sh with npm ci). A node from
# elsewhere (with its own npm) is used as it is.
TEST_PKGS+=(chromium)
# The demo's tour (scripts/demo.sh) reads the collector with curl and sqlite3;
# the demo's test checks the collector's database with sqlite3.
DEMO_PKGS=(curl sqlite3)
TEST_PKGS+=(sqlite3)
command -v node >/dev/null 2>&1 || TEST_PKGS+=(nodejs)
command -v npm >/dev/null 2>&1 || TEST_PKGS+=(npm)
# apt's package lists younger than this are trusted without apt-get update.
LISTS_MAX_AGE_MIN=60

say() { printf 'setup: %s\n' "$*"; }

want_test=0
want_demo=0
for arg in "$@"; do
	case "$arg" in
	--test) want_test=1 ;;
	--demo) want_demo=1 ;;
	-h | --help)
		echo "usage: $0 [--test] [--demo]   install what is missing to build (and test, or demo) thingsync"
		exit 0
		;;
	*)
		echo "setup: unknown argument: $arg" >&2
		exit 2
		;;
	esac
done

pkgs=("${BUILD_PKGS[@]}")
if [ "$want_test" = 1 ]; then
	pkgs+=("${TEST_PKGS[@]}")
fi
if [ "$want_demo" = 1 ]; then
	pkgs+=("${DEMO_PKGS[@]}")
fi

if ! command -v dpkg-query >/dev/null 2>&1; then
	say "no dpkg-query: not a Debian system; install by hand: ${pkgs[*]}"
	exit 0
fi

missing=()
for p in "${pkgs[@]}"; do
	status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	if [ "$status" != "install ok installed" ]; then
		missing+=("$p")
	fi
done
if [ "${#missing[@]}" = 0 ]; then
	say "all ${#pkgs[@]} packages present"
	exit 0
fi
say "missing: ${missing[*]}"

SUDO=()
if [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		SUDO=(sudo)
	else
		say "not root and no sudo: cannot install ${missing[*]}" >&2
		exit 1
	fi
fi

log=$(mktemp /tmp/thingsync-setup.XXXXXX)
trap 'rm -f "$log"' EXIT

apt_update() {
	say "apt-get update"
	if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null >"$log" 2>&1; then
		cat "$log" >&2
		say "apt-get update failed" >&2
		return 1
	fi
}

apt_install() {
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
		"${missing[@]}" </dev/null >"$log" 2>&1
}

updated=0
# Fresh lists: some *Release file was fetched within the last hour.
if [ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*Release' -mmin -"$LISTS_MAX_AGE_MIN" 2>/dev/null | head -n1)" ]; then
	say "package lists are fresh, skipping apt-get update"
else
	apt_update
	updated=1
fi

say "installing ${#missing[@]} package(s)"
if ! apt_install; then
	if [ "$updated" = 0 ]; then
		# The lists may be fresh but not complete (a new source): update once and retry.
		say "install failed with the current lists, retrying after an update"
		apt_update
		if ! apt_install; then
			cat "$log" >&2
			say "apt-get install failed" >&2
			exit 1
		fi
	else
		cat "$log" >&2
		say "apt-get install failed" >&2
		exit 1
	fi
fi
say "installed: ${missing[*]}"
