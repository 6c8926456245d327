#!/usr/bin/env bash
# test_demo_signals.sh: scripts/demo.sh stops everything it started when it
# is told to: SIGTERM or SIGHUP to its pid (kill PID; sudo passes a hangup on
# that way), its terminal closing (as with tmux kill-session: the kernel
# hangs the terminal up and sends SIGHUP, and from then on every write to it
# fails) and SIGINT to its process group (Ctrl-C). For each, it starts the living demo on the build this test
# belongs to, waits until the site answers, stops it that way, and checks
# that the demo exits and that not one process it started is left, nor its
# directory.
#
# Every process the demo starts inherits a tag in its environment, which is
# how they are found (in /proc/PID/environ) however they were started, setsid
# or not. Whatever happens to the test, its exit kills every tagged process.
#
# Run by meson test with DEMO_SH and THINGSYNC_DEMO_BUILD set.
set -euo pipefail

: "${DEMO_SH:?run through meson test}" "${THINGSYNC_DEMO_BUILD:?run through meson test}"
THINGSCTL=$THINGSYNC_DEMO_BUILD/tools/thingsctl/thingsctl
TAG=demo-signals-$$-$RANDOM$RANDOM
WORK=$(mktemp -d /tmp/thingsync-demo-test.XXXXXX)
DEMO_DIRS=()
FAILED=0

# The pids of the processes that carry the tag: the demo and all it started.
tagged() {
	local d
	for d in /proc/[0-9]*; do
		if grep -qsxzF "THINGSYNC_DEMO_TEST_TAG=$TAG" "$d/environ" 2>/dev/null; then
			echo "${d#/proc/}"
		fi
	done
}

describe() {
	local p
	for p in "$@"; do
		printf '   %s: %s\n' "$p" "$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)"
	done
}

cleanup() {
	local left d
	trap - EXIT INT TERM HUP
	left=$(tagged)
	if [ -n "$left" ]; then
		# shellcheck disable=SC2086
		kill -KILL $left 2>/dev/null || true
	fi
	for d in "${DEMO_DIRS[@]}"; do
		case $d in /tmp/thingsync-site.*) rm -rf "$d" ;; esac
	done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

fail() {
	echo "FAIL: $*" >&2
	FAILED=1
}

# Polls `cmd` every 0.1 s until it succeeds or `secs` pass.
wait_for() {
	local secs=$1
	shift
	local end=$((SECONDS + secs))
	until "$@"; do
		[ "$SECONDS" -ge "$end" ] && return 1
		sleep 0.1
	done
}

out_has() { grep -q "$2" "$1"; }
gone() { ! kill -0 "$1" 2>/dev/null; }
none_tagged() { [ -z "$(tagged)" ]; }

# run_case SIGNAL HOW: HOW is "pid" (kill -SIGNAL PID), "group" (to its
# process group, as a terminal sends Ctrl-C) or "terminal" (the demo runs on
# a terminal of its own, a pty from script(1), which is then closed).
run_case() {
	local sig=$1 how=$2 out=$WORK/demo-$1-$2.out pid dir n status=0 left
	local -a env=(env "THINGSYNC_DEMO_TEST_TAG=$TAG" "THINGSYNC_DEMO_PORT_BASE=$((12000 + RANDOM % 2900))")
	echo "== $sig to the demo's $how"
	if [ "$how" = terminal ]; then
		if ! command -v script >/dev/null 2>&1; then
			echo "   skipped: no script(1) to give the demo a terminal"
			return
		fi
		# script(1) is the terminal: killing it closes the pty's master
		# side, as tmux does when its session is killed.
		"${env[@]}" script -qfec "bash '$DEMO_SH'" /dev/null >"$out" 2>&1 </dev/null &
		pid=$!
	else
		# Its own process group, as a shell with job control gives a
		# command typed at a terminal; ports in a block no other test
		# hands out.
		set -m
		"${env[@]}" bash "$DEMO_SH" >"$out" 2>&1 </dev/null &
		pid=$!
		set +m
	fi
	if ! wait_for 90 out_has "$out" '^== watching PI-Show'; then
		fail "$sig: the demo did not come up"
		cat "$out" >&2
		return
	fi
	dir=$(tr -d '\r' <"$out" | sed -n 's/^== a living thingsync site in //p')
	DEMO_DIRS+=("$dir")
	# The site answers, and the demo has started its daemons and helpers.
	if ! "$THINGSCTL" -c "$dir/site.conf" status >/dev/null 2>&1; then
		fail "$sig: the site does not answer"
	fi
	n=$(tagged | wc -l)
	if [ "$n" -lt 5 ]; then
		fail "$sig: only $n tagged processes while the demo runs"
	fi

	case $how in
	group) kill -"$sig" -- -"$pid" ;;
	terminal) kill -KILL "$pid" ;;
	*) kill -"$sig" "$pid" ;;
	esac
	if ! wait_for 30 gone "$pid"; then
		fail "$sig: the demo is still running 30 s later"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" || status=$?
	if ! wait_for 20 none_tagged; then
		left=$(tagged)
		# shellcheck disable=SC2086
		fail "$sig: left behind:$(echo; describe $left)"
		# shellcheck disable=SC2086
		kill -KILL $left 2>/dev/null || true
	fi
	if [ -d "$dir" ]; then
		fail "$sig: the demo left its directory $dir"
	fi
	if [ "$how" != terminal ] && ! grep -q '^== stopping the site' "$out"; then
		fail "$sig: the demo did not say it stopped the site"
	fi
	echo "   exit status $status"
	tail -n 6 "$out"
}

run_case TERM pid
run_case HUP pid
run_case HUP terminal
run_case INT group

if [ "$FAILED" != 0 ]; then
	exit 1
fi
echo "ok: nothing left after TERM, HUP (to the pid, or the terminal closing) or INT"
