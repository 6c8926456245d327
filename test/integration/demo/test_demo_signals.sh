#!/usr/bin/env bash
# test_demo_signals.sh: scripts/demo.sh runs the whole chain of a site, and
# stops everything it started when it is told to.
#
# The chain (checked in the first run): the demo prints PI-Show's page first,
# then the collector's; every daemon is running (three thingsd, motion-light,
# thingsync-pushd, thingsync-collectord, thingsync-recoveryd,
# thingsync-forensicd); the tour's printed thingsctl, curl and sqlite3
# commands run as printed and succeed; a change made with the printed
# thingsctl reaches the collector's SQLite database through pushd; recoveryd
# and forensicd answer /v1/status; `thingsctl recover` is answered by both
# owners that keep a history; and every daemon stops cleanly (exit 0).
#
# Stopping: the demo stops everything it started when it is told to: SIGTERM or SIGHUP to its pid (kill PID; sudo passes a hangup on
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
CHAIN_CHECKED=0

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

# The daemons a demo runs, as the tagged processes' command lines show them.
DAEMONS=(thingsd thingsd thingsd motion-light thingsync-pushd thingsync-collectord
	thingsync-recoveryd thingsync-forensicd)
count_running() {
	local p n=0
	for p in $(tagged); do
		case $(tr '\0' '\n' 2>/dev/null <"/proc/$p/cmdline" | head -n 1) in */"$1") n=$((n + 1)) ;; esac
	done
	echo "$n"
}

# The controller's tcp_port in site.conf.
tcp_port_of() {
	awk -v want="[controller $2]" '/^\[/ { in_it = ($0 == want) }
		in_it && $1 == "tcp_port" { print $3; exit }' "$1"
}

# What the collector's database holds as is_armed's newest value from PI-Push.
db_is_armed() {
	sqlite3 "$1" "SELECT value FROM measurements WHERE source = 'PI-Push' AND thing = 'is_armed'
		ORDER BY seq DESC LIMIT 1" 2>/dev/null
}
db_says_armed() { [ "$(db_is_armed "$1")" = "$2" ]; }
answered_by_both() {
	[ "$(curl -s "$1/v1/status" | grep -o '"state":"answered"' | wc -l)" -ge 2 ]
}

# check_chain OUT DIR: the whole chain of the running demo, as a user meets it.
check_chain() {
	local out=$1 dir=$2 conf=$2/site.conf ctl line n d rc first want
	local recovery forensic
	echo "   -- the chain"
	# The pages: PI-Show's first, then the collector's.
	first=$(tr -d '\r' <"$out" | grep -m 2 '^== .*http://')
	case $first in
	"== open PI-Show's page first: http://127.0.0.1:$(tcp_port_of "$conf" PI-Show)/"*"== then the collector's: http://127.0.0.1:$(tcp_port_of "$conf" Collector)/") ;;
	*) fail "the first pages printed are not PI-Show's, then the collector's:$(echo; echo "$first")" ;;
	esac
	# Every daemon runs.
	for d in "${DAEMONS[@]}"; do
		want=1
		[ "$d" = thingsd ] && want=3
		n=$(count_running "$d")
		[ "$n" = "$want" ] || fail "$n $d running, not $want"
	done
	# The tour's own thingsctl, as its alias says.
	ctl=$(tr -d '\r' <"$out" | sed -n "s/^   alias thingsctl='\(.*\)'\$/\1/p")
	[ -n "$ctl" ] || { fail "no alias thingsctl line in the tour"; return; }
	thingsctl() { $ctl "$@"; }
	# A change made now arrives in the collector's database, through pushd.
	wait_for 60 db_says_armed "$dir/state/collector.db" false || fail "is_armed is not false in the collector's database at first ($(db_is_armed "$dir/state/collector.db"))"
	thingsctl set is_armed on >/dev/null || fail "thingsctl set is_armed on failed"
	wait_for 60 db_says_armed "$dir/state/collector.db" true ||
		fail "is_armed = on did not reach the collector's database ($(db_is_armed "$dir/state/collector.db"))"
	# recoveryd and forensicd answer /v1/status.
	recovery=http://127.0.0.1:$(tcp_port_of "$conf" PI-Recovery)
	forensic=http://127.0.0.1:$(tcp_port_of "$conf" PI-Forensic)
	curl -sf "$recovery/v1/status" | grep -q '"controller":"PI-Recovery"' || fail "recoveryd: no /v1/status"
	curl -sf "$forensic/v1/status" | grep -q '"controller":"PI-Forensic"' || fail "forensicd: no /v1/status"
	curl -sf "$forensic/v1/status" | grep -q '"name":"PI-Security"[^}]*"up":true' ||
		fail "forensicd does not see PI-Security up"
	# Every thingsctl, curl and sqlite3 line of the tour runs as printed
	# (but watch, which runs until stopped; the refused set exits 4).
	while IFS= read -r line; do
		line=${line#   }
		case $line in
		"thingsctl -n PI-Show watch"*) continue ;;
		thingsctl* | curl* | sqlite3*) ;;
		*) continue ;;
		esac
		rc=0
		# As a user's shell runs it: no -e, no pipefail (curl ... | head).
		(set +eo pipefail; eval "$line") >"$WORK/tour.out" 2>&1 </dev/null || rc=$?
		case $line in
		*"set heating_mode turbo"*) [ "$rc" = 4 ] || fail "tour: '$line' exit $rc, not 4 (refused)" ;;
		*) [ "$rc" = 0 ] || fail "tour: '$line' exit $rc:$(echo; head -n 5 "$WORK/tour.out")" ;;
		esac
		case $line in
		"thingsctl token"*) grep -qx '[0-9a-f]\{64\}' "$WORK/tour.out" || fail "tour: token printed no token" ;;
		"thingsctl cum is_armed"*) grep -q 'rises [1-9]' "$WORK/tour.out" || fail "tour: cum is_armed: no rise of is_armed today" ;;
		"thingsctl recover"*) grep 'asked' "$WORK/tour.out" | grep PI-Security | grep -q PI-Climate || fail "tour: recover did not ask both histories" ;;
		"curl -s '"*"/v1/measurements?thing=is_armed'"*) grep -q '"value":true' "$WORK/tour.out" || fail "tour: the collector's measurements lack is_armed = true" ;;
		"sqlite3 "*) grep -q '^[a-z_]*|[^|]*|live$' "$WORK/tour.out" || fail "tour: the sqlite3 line shows no measurement" ;;
		esac
	done < <(tr -d '\r' <"$out" | sed -n '/^== poke it/,/^$/p')
	# The recovery the tour asked for: both owners that keep a history answer.
	wait_for 60 answered_by_both "$recovery" || fail "recoveryd: the recovery was not answered by both histories"
}

# The demo said that each of the eight daemons stopped cleanly.
check_stopped_cleanly() {
	local name
	for name in Collector PI-Security PI-Climate PI-Show PI-Light PI-Push PI-Recovery PI-Forensic; do
		grep -q "^   $name *stopped cleanly" "$1" || fail "$name did not stop cleanly: $(grep "^   $name " "$1")"
	done
}
gone() { ! kill -0 "$1" 2>/dev/null; }
none_tagged() { [ -z "$(tagged)" ]; }

# run_case SIGNAL HOW: HOW is "pid" (kill -SIGNAL PID), "group" (to its
# process group, as a terminal sends Ctrl-C) or "terminal" (the demo runs on
# a terminal of its own, a pty from script(1), which is then closed).
run_case() {
	local sig=$1 how=$2 out=$WORK/demo-$1-$2.out pid dir n status=0 left
	# --default-signal: a signal ignored when the test started (nohup, or a
	# background job of a script ignores HUP, INT, QUIT) would be ignored by
	# the demo too, and a shell cannot trap what it inherited as ignored.
	local -a env=(env --default-signal=HUP,INT,TERM "THINGSYNC_DEMO_TEST_TAG=$TAG"
		"THINGSYNC_DEMO_PORT_BASE=$((12000 + RANDOM % 2900))")
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
	if [ "$n" -lt 9 ]; then
		fail "$sig: only $n tagged processes while the demo runs"
	fi
	if [ "$CHAIN_CHECKED" = 0 ]; then
		CHAIN_CHECKED=1
		check_chain "$out" "$dir"
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
	if [ "$how" != terminal ]; then
		check_stopped_cleanly "$out"
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
echo "ok: the whole chain ran; nothing left after TERM, HUP (to the pid, or the terminal closing) or INT"
