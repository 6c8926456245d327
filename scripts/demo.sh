#!/usr/bin/env bash
# scripts/demo.sh [demo arguments...]: installs what is missing, builds
# thingsync into build/ and runs the demo (build/tools/examples/thingsync-demo),
# passing the arguments through.
#
# Usage: [sudo] bash scripts/demo.sh        (from any directory)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
DEMO=build/tools/examples/thingsync-demo

say() { printf '== %s\n' "$*"; }

# Under sudo, build and run as the user who called sudo (when that user owns
# the checkout), so the tree does not fill with root-owned files.
as_user() {
	if [ "$(id -u)" = 0 ] && [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] &&
		[ "$(stat -c %U "$ROOT")" = "$SUDO_USER" ] && command -v sudo >/dev/null 2>&1; then
		sudo -u "$SUDO_USER" -H -- "$@"
	else
		"$@"
	fi
}

say "setup"
bash "$ROOT/scripts/setup.sh"

say "configure and build (build/)"
if [ ! -f build/meson-private/coredata.dat ]; then
	# Nothing or a half-made directory (an earlier setup that failed): start over.
	rm -rf build
	as_user meson setup build
fi
as_user ninja -C build

if [ ! -x "$DEMO" ]; then
	say "the demo is not built yet ($DEMO is missing)" >&2
	exit 1
fi
say "running $DEMO $*"
as_user "$ROOT/$DEMO" "$@"
