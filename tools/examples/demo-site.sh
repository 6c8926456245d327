#!/usr/bin/env bash
# demo-site.sh: a small living thingsync site on loopback, the whole chain a
# real site has, to poke with thingsctl: three thingsd daemons (PI-Security,
# PI-Climate, PI-Show), the example controller motion-light (PI-Light, built
# on libthingsync), a push controller (thingsync-pushd, PI-Push) posting
# every value it receives to thingsync-collectord (SQLite in the demo's state
# directory), thingsync-recoveryd (PI-Recovery) and thingsync-forensicd
# (PI-Forensic). They run with a site key, each with its own state directory
# and log, and a file per sensor that you can write to. It prints the pages to
# open and how to poke the site, then watches it; Ctrl-C stops everything
# cleanly, and so do SIGTERM and SIGHUP (its terminal closed): no process it
# started outlives it.
#
#   tools/examples/demo-site.sh [--build DIR] [--seconds N] [--keep]
#
#   --build DIR   the build directory (default: build/ next to this tree)
#   --seconds N   run the opening scene, check it (the light followed the
#                 motion, and the motion reached the collector's database),
#                 and stop, giving up after N seconds (no watching)
#   --keep        keep the demo directory (logs, state) after stopping
#
# THINGSYNC_DEMO_PORT_BASE=N uses ports N+1 to N+18 instead of a random block
# (the tests choose one that no other test hands out).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$ROOT/build
SECONDS_TO_RUN=0
KEEP=0
while [ "$#" -gt 0 ]; do
	case $1 in
	--build) BUILD=$(cd "$2" && pwd); shift 2 ;;
	--seconds) SECONDS_TO_RUN=$2; shift 2 ;;
	--keep) KEEP=1; shift ;;
	-h | --help) sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "demo-site.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
	esac
done

THINGSD=$BUILD/daemons/thingsd/thingsd
THINGSCTL=$BUILD/tools/thingsctl/thingsctl
MOTION_LIGHT=$BUILD/tools/examples/motion-light
PUSHD=$BUILD/daemons/thingsync-pushd/thingsync-pushd
COLLECTORD=$BUILD/daemons/thingsync-collectord/thingsync-collectord
RECOVERYD=$BUILD/daemons/thingsync-recoveryd/thingsync-recoveryd
FORENSICD=$BUILD/daemons/thingsync-forensicd/thingsync-forensicd
for p in "$THINGSD" "$THINGSCTL" "$MOTION_LIGHT" "$PUSHD" "$COLLECTORD" "$RECOVERYD" "$FORENSICD"; do
	if [ ! -x "$p" ]; then
		echo "demo-site.sh: $p is not built (ninja -C $BUILD)" >&2
		exit 1
	fi
done

DIR=$(mktemp -d /tmp/thingsync-site.XXXXXX)
mkdir -p "$DIR/io" "$DIR/state"
# Ports: a random block below the kernel's ephemeral range (32768 and up,
# where clients' ports come from), skipping one where any of its 18 ports,
# UDP or TCP, is in use (the kernel's socket tables; a UDP port cannot be
# probed by connecting to it).
ports_in_use() {
	local f local_addr
	for f in /proc/net/tcp /proc/net/udp /proc/net/tcp6 /proc/net/udp6; do
		[ -r "$f" ] || continue
		while read -r _ local_addr _; do
			echo $((16#${local_addr##*:}))
		done < <(tail -n +2 "$f")
	done
}
for _ in $(seq 1 20); do
	BASE=${THINGSYNC_DEMO_PORT_BASE:-$((12000 + RANDOM % 18000))}
	busy=0
	in_use=" $(ports_in_use | tr '\n' ' ') "
	for off in $(seq 1 18); do
		case $in_use in *" $((BASE + off)) "*) busy=1 ;; esac
	done
	[ "$busy" = 0 ] && break
	[ -n "${THINGSYNC_DEMO_PORT_BASE:-}" ] && break # the block asked for: no other
done
PIDS=()
NAMES=()
HELPERS=() # the scene, the drifting sensor and the watcher: this shell's children
STOP_WAIT_S=10

# Every way out comes here: the end of --seconds, a failure, Ctrl-C (INT),
# SIGTERM, and SIGHUP when the terminal closes. The daemons run in sessions
# of their own (see start()), so no signal meant for this script reaches
# them: it must stop each one itself, and it must get there whatever the
# terminal does. After a hangup every write fails, so -e is off here, and a
# second signal is ignored rather than cut the stop short; a daemon that does
# not stop within STOP_WAIT_S is killed.
stop_all() {
	trap '' HUP INT TERM PIPE
	trap - EXIT
	set +e
	local i p status alive rc=0 deadline=$((SECONDS + STOP_WAIT_S))
	# Not waited for: they end at once (their sleep with them), and bash's
	# wait, in a trap, can miss a child that died of the same signal and
	# block for ever.
	for p in "${HELPERS[@]}"; do
		kill -TERM "$p" 2>/dev/null
	done
	echo
	echo "== stopping the site"
	for p in "${PIDS[@]}"; do
		kill -TERM "$p" 2>/dev/null
	done
	while :; do
		alive=()
		for p in "${PIDS[@]}"; do
			kill -0 "$p" 2>/dev/null && alive+=("$p")
		done
		[ "${#alive[@]}" = 0 ] && break
		if [ "$SECONDS" -ge "$deadline" ]; then
			kill -KILL "${alive[@]}" 2>/dev/null
			break
		fi
		sleep 0.1
	done
	for i in "${!PIDS[@]}"; do
		status=0
		wait "${PIDS[$i]}" 2>/dev/null || status=$?
		if [ "$status" = 0 ]; then
			printf '   %-12s stopped cleanly\n' "${NAMES[$i]}"
		else
			printf '   %-12s exit status %s (see its log)\n' "${NAMES[$i]}" "$status"
			rc=1
		fi
	done
	if [ "$KEEP" = 1 ]; then
		echo "== logs and state kept in $DIR"
	else
		rm -rf "$DIR"
	fi
	return $rc
}
trap 'stop_all; exit 129' HUP
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap 'stop_all || exit 1' EXIT

# A background helper's sleep ends with it: its trap kills the sleep it is
# waiting for, which would otherwise run on, orphaned, after the demo.
nap() {
	sleep "$1" &
	wait $!
}
helper_traps() { trap 'kill $! 2>/dev/null; exit 0' HUP INT TERM; }

"$THINGSCTL" keygen "$DIR/site.key" >/dev/null
cat >"$DIR/site.conf" <<EOF
# The demo site: every controller on 127.0.0.1, each with its own ports.
# A real site deploys this one file, unchanged, to every controller
# (thingsync-site.conf(5); a bigger example: site.conf.example).
[site]
name = demo
key_file = site.key
retry_min_ms = 20
retry_max_ms = 2000
down_after_ms = 2000

# --- the IO controllers (thingsd) and the example controller ---------------
[controller PI-Security]
host = 127.0.0.1
udp_port = $((BASE + 1))
tcp_port = $((BASE + 11))
roles = security, cmd_do
history = yes                ; keeps every change of its things: what recovery asks for

[controller PI-Light]
host = 127.0.0.1
udp_port = $((BASE + 2))
roles = light

[controller PI-Climate]
host = 127.0.0.1
udp_port = $((BASE + 3))
tcp_port = $((BASE + 13))
roles = climate, cmd_do
history = yes

[controller PI-Show]
host = 127.0.0.1
udp_port = $((BASE + 4))
tcp_port = $((BASE + 14))
roles = show, cmd_do

# --- the server side --------------------------------------------------------
# thingsync-pushd: a user of every thing; journals each value it receives and
# posts it to the collector (tcp_port: its GET /status and /metrics).
[controller PI-Push]
host = 127.0.0.1
udp_port = $((BASE + 5))
tcp_port = $((BASE + 15))
roles = push

# thingsync-recoveryd: the outage ledger; after an outage of
# recovery_threshold or longer it asks the histories for what was missed.
[controller PI-Recovery]
host = 127.0.0.1
udp_port = $((BASE + 6))
tcp_port = $((BASE + 16))
roles = recovery
recovery_threshold = 30s

# thingsync-forensicd: closes the day at local midnight and collects every
# owner's cumuls of it, for its report and for the collector.
[controller PI-Forensic]
host = 127.0.0.1
udp_port = $((BASE + 7))
tcp_port = $((BASE + 17))
roles = forensics

# thingsync-collectord: listens on tcp_port (pushd posts there, the pages
# and the read API are there); not on the mesh, its udp_port is unused.
[controller Collector]
host = 127.0.0.1
udp_port = $((BASE + 8))
tcp_port = $((BASE + 18))
roles = collector

# --- the things -------------------------------------------------------------
# A motion sensor: a file, as a sysfs GPIO value would be. Write 1 or 0 to it.
[thing hall_motion]
owner = PI-Security
type = bool
users = PI-Light, PI-Show, PI-Push
settable = no
group = Hall
driver = file:$DIR/io/hall_motion interval=200

# Switched by motion-light (PI-Light), the example controller.
[thing hall_light]
owner = PI-Light
type = bool
users = PI-Security, PI-Show, PI-Push
initial = off
group = Hall

[thing is_armed]
owner = PI-Security
type = bool
users = PI-Climate, PI-Show, PI-Push
initial = no
driver = virtual

# A door strike: a program drives it (and writes what it does to door.log).
[thing door_strike]
owner = PI-Security
type = bool
users = PI-Show, PI-Push
pulse = yes
pulse_ms = 1500
initial = off
group = Hall
driver = exec:$DIR/io/door-strike interval=0

# A 1-wire temperature sensor (w1_slave format, millidegrees).
[thing temp_living]
owner = PI-Climate
type = float
users = PI-Show, PI-Security, PI-Push
settable = no
min = -40
max = 85
driver = file:$DIR/io/w1_slave format=w1 scale=0.001 interval=500
group = Living room

[thing setpoint_living]
owner = PI-Climate
type = float
users = PI-Show, PI-Push
min = 5
max = 30
initial = 20.5
group = Living room

[thing heating_mode]
owner = PI-Climate
type = string
users = PI-Show, PI-Push
allowed = off, eco, comfort, away
initial = eco
group = Living room

# Published by thingsync-recoveryd: true while the site is cut off from its
# collector. The push controller among its users: the two hear each other.
[thing internet_lost]
owner = PI-Recovery
type = bool
users = PI-Push, PI-Show
settable = no
initial = no
group = Server
EOF

echo 0 >"$DIR/io/hall_motion"
cat >"$DIR/io/door-strike" <<EOF
#!/bin/sh
# exec driver of door_strike: "get" prints the state, "set V" drives it.
case "\$1" in
get) cat "$DIR/io/door.state" 2>/dev/null || echo 0 ;;
set) echo "\$2" >"$DIR/io/door.state"
     echo "\$(date +%H:%M:%S) door strike \$([ "\$2" = 1 ] && echo OPEN || echo closed)" >>"$DIR/io/door.log" ;;
*) exit 2 ;;
esac
EOF
chmod +x "$DIR/io/door-strike"
w1() { printf '72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=%d\n' "$1" >"$DIR/io/w1_slave.tmp" &&
	mv "$DIR/io/w1_slave.tmp" "$DIR/io/w1_slave"; }
w1 20500

# Each daemon in a session of its own: Ctrl-C reaches this script, which
# stops them in order (the watcher first), not all of them at once.
SETSID=
command -v setsid >/dev/null 2>&1 && SETSID=setsid
start() {
	local name=$1
	shift
	$SETSID "$@" >"$DIR/$name.log" 2>&1 </dev/null &
	PIDS+=("$!")
	NAMES+=("$name")
}
COLLECTOR_URL=http://127.0.0.1:$((BASE + 18))
RECOVERY_URL=http://127.0.0.1:$((BASE + 16))
FORENSIC_URL=http://127.0.0.1:$((BASE + 17))
PUSH_URL=http://127.0.0.1:$((BASE + 15))
# An HTTP GET without curl (which the tour uses, but the demo does not
# need): bash's /dev/tcp. Prints the answer, status line and headers first.
http_get() (
	host=${1#http://} path=/
	case $host in */*) path=/${host#*/} host=${host%%/*} ;; esac
	exec 3<>"/dev/tcp/${host%:*}/${host##*:}" || exit 1
	printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$path" "$host" >&3
	while IFS= read -r -t 5 line || [ -n "$line" ]; do
		printf '%s\n' "$line"
	done <&3
)
# The GET answers 200.
http_ok() { http_get "$1" | head -n 1 | grep -q '^HTTP/1\.. 200'; }
# Asks `$@` every 0.1 s until it succeeds, `$1` seconds at most.
poll() {
	local i n=$(($1 * 10))
	shift
	for ((i = 0; i < n; i++)); do
		"$@" 2>/dev/null && return 0
		sleep 0.1
	done
	"$@" 2>/dev/null
}
# The collector first, answering before the rest starts: recoveryd probes it,
# and would otherwise count a short outage at the start.
start Collector "$COLLECTORD" --site "$DIR/site.conf" --db "sqlite:$DIR/state/collector.db"
poll 10 http_ok "$COLLECTOR_URL/health" || true
start PI-Security "$THINGSD" -c "$DIR/site.conf" -n PI-Security -s "$DIR/state/PI-Security"
start PI-Climate "$THINGSD" -c "$DIR/site.conf" -n PI-Climate -s "$DIR/state/PI-Climate"
start PI-Show "$THINGSD" -c "$DIR/site.conf" -n PI-Show -s "$DIR/state/PI-Show"
start PI-Light "$MOTION_LIGHT" -c "$DIR/site.conf" -n PI-Light -s "$DIR/state/PI-Light" -o 5
# pushd posts to the site's collector (its tcp_port); a short backoff ceiling,
# so that it is back within seconds of a collector you restarted.
start PI-Push "$PUSHD" --site "$DIR/site.conf" --controller PI-Push --state-dir "$DIR/state/PI-Push" \
	--retry-max-ms 3000
# recoveryd also probes the collector: not answering is an outage too.
start PI-Recovery "$RECOVERYD" --site "$DIR/site.conf" --controller PI-Recovery \
	--state-dir "$DIR/state/PI-Recovery" --probe "$COLLECTOR_URL/health" --probe-ms 5000
start PI-Forensic "$FORENSICD" --site "$DIR/site.conf" --controller PI-Forensic \
	--state-dir "$DIR/state/PI-Forensic"

CTL="$THINGSCTL -c $DIR/site.conf"
# Every daemon's API answers (thingsctl status asks each at its own path).
up() { $CTL status >/dev/null 2>&1; }
# Ready when every API answers (no fixed wait: asked until it does, 20 s at most).
if ! poll 20 up; then
	echo "demo-site.sh: the site did not come up; logs:" >&2
	tail -n 5 "$DIR"/*.log >&2
	exit 1
fi

cat <<EOF
== open PI-Show's page first: http://127.0.0.1:$((BASE + 14))/
   (the panel: every controller, every thing, live; click a switch, pulse the door)
   PI-Security's: http://127.0.0.1:$((BASE + 11))/   PI-Climate's: http://127.0.0.1:$((BASE + 13))/
== then the collector's: $COLLECTOR_URL/
   (what PI-Push pushed, stored in SQLite: sources, alarms, a thing's measurements as a chart)

== a living thingsync site in $DIR
   PI-Security  thingsd    owns hall_motion (file), is_armed, door_strike (exec); keeps a history
   PI-Climate   thingsd    owns temp_living (1-wire file), setpoint_living, heating_mode; a history
   PI-Show      thingsd    a panel: uses everything, owns nothing
   PI-Light     motion-light (tools/examples/motion-light.c): hall_light follows hall_motion
   PI-Push      thingsync-pushd: journals every value (LMDB), posts it to the collector
   Collector    thingsync-collectord: stores each change once in $DIR/state/collector.db
   PI-Recovery  thingsync-recoveryd: the outage ledger, internet_lost, recovery from the histories
   PI-Forensic  thingsync-forensicd: each day's cumuls of every thing, collected after midnight

== poke it from another terminal:
   alias thingsctl='$CTL'
   echo 1 > $DIR/io/hall_motion      # motion: PI-Light switches hall_light on, off 5 s after 0
   echo 0 > $DIR/io/hall_motion
   thingsctl set is_armed on                    # to its owner, PI-Security
   thingsctl -n PI-Show set setpoint_living 22  # from a user, over the mesh, to PI-Climate
   thingsctl -n PI-Show set heating_mode turbo  # refused: not an allowed value (exit 4)
   thingsctl pulse door_strike                  # then: cat $DIR/io/door.log
   thingsctl -n PI-Show get
   thingsctl status
   thingsctl -n PI-Show peers
   thingsctl -n PI-Show cmd --to PI-Climate cmd_do timers
   thingsctl -n PI-Show watch                   # every change as it happens (Ctrl-C)
   thingsctl cum is_armed                       # today's statistics from its owner: time on, edges
   thingsctl token                              # the dashboard token: a browser off loopback signs with it
   thingsctl recover --from now-10m --to now    # recoveryd asks the histories; stored once all the same
   curl -s '$COLLECTOR_URL/v1/measurements?thing=is_armed'   # what the collector stored
   curl -s $COLLECTOR_URL/v1/sources          # PI-Push: stream, last seq, stored, gaps
   curl -s $PUSH_URL/status                # pushd: journal waiting, posts, cursor
   curl -s $RECOVERY_URL/v1/status            # recoveryd: outages, recoveries asked
   curl -s $FORENSIC_URL/v1/status            # forensicd: owners, days collected
   sqlite3 $DIR/state/collector.db 'SELECT thing, value, via FROM measurements ORDER BY seq DESC LIMIT 5'
   rm $DIR/io/w1_slave              # err_read_crash in $DIR/PI-Climate.log; put it back: err_read_gone
   kill -9 ${PIDS[2]}                      # PI-Climate dies; the others carry on (thingsctl status)
   kill -STOP ${PIDS[0]}; sleep 40; kill -CONT ${PIDS[0]}   # the collector away 40 s: an outage, then a recovery (PI-Recovery.log)
   curl -s http://127.0.0.1:$((BASE + 14))/metrics | head
   logs: $DIR/*.log

EOF

# The opening scene: motion in the hall, the living room warms up.
(
	helper_traps
	nap 1
	echo 1 >"$DIR/io/hall_motion"
	w1 21250
	nap 1
	echo 0 >"$DIR/io/hall_motion"
) &
SCENE=$!
HELPERS+=("$SCENE")

if [ "$SECONDS_TO_RUN" != 0 ]; then
	wait "$SCENE"
	# Checked, not assumed: the light followed the motion, the copy moved,
	# and the motion went through PI-Push into the collector's database.
	ok=0
	for _ in $(seq 1 $((SECONDS_TO_RUN * 10))); do
		if $CTL -n PI-Show get hall_light 2>/dev/null | grep -q 'hall_light = 1' &&
			$CTL -n PI-Show get temp_living 2>/dev/null | grep -q 'temp_living = 21.25' &&
			http_get "$COLLECTOR_URL/v1/measurements?thing=hall_motion" 2>/dev/null |
			grep -q '"source":"PI-Push".*"value":true'; then
			ok=1
			break
		fi
		sleep 0.1
	done
	$CTL -n PI-Show get
	$CTL status
	if [ "$ok" != 1 ]; then
		echo "demo-site.sh: the opening scene did not play out" >&2
		exit 1
	fi
	echo "== the scene played: hall_light followed hall_motion, temp_living reached PI-Show,"
	echo "   and the collector stored hall_motion = 1 from PI-Push"
	exit 0
fi

# A slowly drifting temperature, so that something moves.
(
	helper_traps
	t=21250
	while nap 7; do
		t=$((t + (RANDOM % 400) - 200))
		w1 "$t"
	done
) &
HELPERS+=("$!")

echo "== watching PI-Show (Ctrl-C stops the site)"
# In the background, waited for: a shell runs its traps only once the
# foreground command returns, but it interrupts a wait at once. The watcher
# ends with the site (stop_all), or on its own if PI-Show goes away.
$CTL -n PI-Show watch &
HELPERS+=("$!")
wait $! || true
