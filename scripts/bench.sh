#!/usr/bin/env bash
# scripts/bench.sh [bench arguments...]: installs what is missing (Mosquitto
# and libmosquitto included, for the comparison), builds thingsync into build/
# and runs build/tools/bench/thingsync-bench, passing the arguments through
# (e.g. --quick, --no-mosquitto, --repeat 3; see thingsync-bench --help);
# it also installs Cyclone DDS's ddsperf and libcoap's server for the
# comparisons. It prints
# figures and a table; it does not pass or fail.
#
# Usage: [sudo] bash scripts/bench.sh        (from any directory)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BENCH=build/tools/bench/thingsync-bench

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
# The build needs only libmosquitto-dev; the broker the comparison runs comes
# with the test packages.
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
	say "no mosquitto broker: installing the test packages, which bring it"
	bash "$ROOT/scripts/setup.sh" --test
fi

# The other peers of the comparison (issue 15): Cyclone DDS's ddsperf and
# libcoap's server, looked up at run time by the bench.
if ! command -v ddsperf >/dev/null 2>&1 || ! command -v coap-server-notls >/dev/null 2>&1; then
	say "installing cyclonedds-tools and libcoap3-bin (Cyclone DDS and libcoap comparisons)"
	if [ "$(id -u)" = 0 ]; then
		apt-get install -y cyclonedds-tools libcoap3-bin >/dev/null ||
			{ apt-get update >/dev/null && apt-get install -y cyclonedds-tools libcoap3-bin >/dev/null; } ||
			say "could not install them: their figures will be skipped"
	else
		say "not root: cannot install them; their figures will be skipped"
	fi
fi

say "configure and build (build/)"
if [ ! -f build/meson-private/coredata.dat ]; then
	# Nothing or a half-made directory (an earlier setup that failed): start over.
	rm -rf build
	as_user meson setup build
fi
as_user ninja -C build

if [ ! -x "$BENCH" ]; then
	say "the bench is not built ($BENCH is missing)" >&2
	exit 1
fi
say "machine: $(nproc) cores, $(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n1)"
say "running $BENCH $*"
as_user "$ROOT/$BENCH" "$@"
