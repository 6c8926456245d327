#!/usr/bin/env bash
# scripts/demo.sh: installs what is missing, builds thingsync into build/ and
# runs a living site on loopback to watch in a browser (it prints PI-Show's page
# first, then the collector's) and poke with thingsctl: three thingsd daemons,
# the example controller motion-light, thingsync-pushd pushing to
# thingsync-collectord (SQLite), thingsync-recoveryd and thingsync-forensicd
# (tools/examples/demo-site.sh). It
# prints how to poke the site and watches it; Ctrl-C stops it cleanly, and so
# do closing its terminal (SIGHUP) and SIGTERM: nothing it started is left.
#
#   [sudo] bash scripts/demo.sh [--seconds N] [--keep]    the living site
#   [sudo] bash scripts/demo.sh --scripted [--seconds N] [--loss P] [--verbose]
#                                  the scripted playback (thingsync-demo):
#                                  three nodes in one process, lossy network
#
# THINGSYNC_DEMO_BUILD=DIR runs on an existing build directory as it is: no
# setup, no build (the tests use it on the build they are part of).
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BUILD=${THINGSYNC_DEMO_BUILD:-build}
DEMO=$BUILD/tools/examples/thingsync-demo

say() { printf '== %s\n' "$*"; }
# A step that fails says which (set -e alone would stop without a word). -E
# (errtrace) gives the trap to functions too: without it a failure inside
# as_user (meson setup, ninja) stopped the script silently.
# shellcheck disable=SC2154 # rc is assigned in the trap itself
trap 'rc=$?; say "demo.sh: failed (exit $rc) at line $LINENO${FUNCNAME:+ (in ${FUNCNAME[0]}, called at line ${BASH_LINENO[0]})}: $BASH_COMMAND" >&2; exit $rc' ERR

# Under sudo, build and run as the user who called sudo (when that user owns
# the checkout), so the tree does not fill with root-owned files.
AS_USER=()
if [ "$(id -u)" = 0 ] && [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] &&
	[ "$(stat -c %U "$ROOT")" = "$SUDO_USER" ] && command -v sudo >/dev/null 2>&1; then
	AS_USER=(sudo -u "$SUDO_USER" -H --)
fi
as_user() { ${AS_USER[@]+"${AS_USER[@]}"} "$@"; }

if [ -n "${THINGSYNC_DEMO_BUILD:-}" ]; then
	BUILD=$(cd "$THINGSYNC_DEMO_BUILD" && pwd)
	DEMO=$BUILD/tools/examples/thingsync-demo
	say "using the build in $BUILD as it is"
else
	say "setup"
	bash "$ROOT/scripts/setup.sh" --demo

	say "configure and build (build/)"
	if [ ! -f build/meson-private/coredata.dat ]; then
		# Nothing or a half-made directory (an earlier setup that failed): start over.
		rm -rf build
		as_user meson setup build
	fi
	as_user ninja -C build
	# A build/ configured before the daemons and tools existed does not know
	# their folders (they are picked up at configure time): configure it again.
	if [ ! -x build/daemons/thingsd/thingsd ] || [ ! -x build/tools/thingsctl/thingsctl ] ||
		[ ! -x build/daemons/thingsync-forensicd/thingsync-forensicd ]; then
		as_user meson setup --reconfigure build
		as_user ninja -C build
	fi
	BUILD=$ROOT/build
	DEMO=$BUILD/tools/examples/thingsync-demo
fi

if [ "${1:-}" = --scripted ]; then
	shift
	if [ ! -x "$DEMO" ]; then
		say "the demo is not built yet ($DEMO is missing)" >&2
		exit 1
	fi
	say "running $DEMO $*"
	exec_demo=("$DEMO" "$@")
else
	say "running tools/examples/demo-site.sh $*"
	exec_demo=(bash "$ROOT/tools/examples/demo-site.sh" --build "$BUILD" "$@")
fi
# exec, not a child: a signal sent to this script (SIGTERM to its pid, or
# SIGHUP when its terminal closes) then reaches the demo itself, whose traps
# stop everything it started. A shell left waiting here would die of the
# signal and leave the demo running, orphaned. (sudo passes signals on.)
exec ${AS_USER[@]+"${AS_USER[@]}"} "${exec_demo[@]}"
