#!/bin/sh
# scripts/cg-steady.sh DIR BENCH [SECONDS [ZERO_AT]]: callgrind of the 10-user
# throughput of thingsync-bench (the owner is the bench process, the users its
# children), with every process's counters zeroed (callgrind_control -z)
# ZERO_AT seconds (default 25) after the start, when the start-up is over and
# the rounds run: the profiles in DIR then hold the steady state only. Then
#   scripts/cg-steady.py DIR
# prints the instructions per update (BENCHMARKS.md "Session 13: 10 users").
# SECONDS (default 40) must outlast ZERO_AT plus the start-up under callgrind.
set -e
d=$1 bin=$(realpath "$2") secs=${3:-40} at=${4:-25}
mkdir -p "$d"
cd "$d"
rm -f callgrind.out.*
nice -n 10 valgrind --tool=callgrind --trace-children=yes "$bin" --users 10 --seconds "$secs" --no-latency \
	--no-footprint --no-heartbeat --no-mosquitto --no-dds --no-coap >out.txt 2>err.txt &
sleep "$at"
for p in $(callgrind_control 2>/dev/null | grep -F "$bin" | sed -n 's/^PID \([0-9]*\):.*/\1/p'); do
	callgrind_control -z "$p" >/dev/null 2>&1
	echo "$p"
done >zeroed.txt
wait
