#!/usr/bin/env bash
# scripts/test.sh: installs what is missing, builds thingsync and runs the
# whole test suite three ways:
#   build-ci    the normal build, warnings as errors
#   build-asan  AddressSanitizer + UndefinedBehaviorSanitizer
#   build-fuzz  clang, every libFuzzer target for FUZZ_SECONDS against its corpus
#               (and test/fuzz/NAME.dict, where the target has one)
# and ends with one line "N passed, M failed" (tests, fuzz runs, and any step
# that failed before its tests could run). Exits non-zero if anything failed.
#
# Usage: [sudo] bash scripts/test.sh [--setup-only]     (from any directory)
#   --setup-only  install what is missing (Debian packages, test/browser's
#                 node_modules) and stop: the part that needs the network, so
#                 that the suite itself can then run without it.
# Environment: FUZZ_SECONDS (default 20), SKIP_ASAN=1, SKIP_FUZZ=1 for quicker local runs.
set -euo pipefail

setup_only=0
for arg in "$@"; do
	case "$arg" in
	--setup-only) setup_only=1 ;;
	-h | --help)
		sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "test.sh: unknown argument: $arg (try --help)" >&2
		exit 2
		;;
	esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

FUZZ_SECONDS=${FUZZ_SECONDS:-20}
passed=0
failed=0
failures=()
START=$SECONDS
TMP=$(mktemp -d /tmp/thingsync-test.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

say() { printf '== %s\n' "$*"; }
note_failure() {
	failed=$((failed + 1))
	failures+=("$1")
	say "FAILED: $1"
}

# Under sudo, build and test as the user who called sudo (when that user owns
# the checkout), so the tree does not fill with root-owned files.
as_user() {
	if [ "$(id -u)" = 0 ] && [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] &&
		[ "$(stat -c %U "$ROOT")" = "$SUDO_USER" ] && command -v sudo >/dev/null 2>&1; then
		sudo -u "$SUDO_USER" -H --preserve-env=CC,CI -- "$@"
	else
		"$@"
	fi
}

# meson setup, reusing a configured directory with the given options.
configure() {
	local dir=$1
	shift
	if [ -f "$dir/meson-private/coredata.dat" ]; then
		as_user meson setup --reconfigure "$dir" "$@" ||
			as_user meson setup --wipe "$dir" "$@"
	else
		rm -rf "$dir"
		as_user meson setup "$dir" "$@"
	fi
}

# Reads one count from meson test's closing summary ("Ok:   12").
summary_count() {
	local n
	n=$(sed -n "s/^$2:[[:space:]]*\([0-9][0-9]*\).*/\1/p" "$1" | tail -n1)
	echo "${n:-0}"
}

# Runs `meson test` in a build directory and adds its results to the totals.
# Extra environment (VAR=value ...) may precede the build directory's name
# after a "--" separator: run_suite NAME DIR [VAR=value ...] -- [meson test args]
run_suite() {
	local name=$1 dir=$2
	shift 2
	local envs=()
	while [ "$#" -gt 0 ] && [ "$1" != -- ]; do
		envs+=("$1")
		shift
	done
	[ "$#" -gt 0 ] && shift
	local log="$TMP/$name.log"
	local rc=0
	say "$name: meson test"
	as_user env "${envs[@]}" meson test -C "$dir" --print-errorlogs "$@" 2>&1 | tee "$log" || rc=$?

	local ok xfail fail upass timeout skipped ran
	ok=$(summary_count "$log" 'Ok')
	xfail=$(summary_count "$log" 'Expected Fail')
	fail=$(summary_count "$log" 'Fail')
	upass=$(summary_count "$log" 'Unexpected Pass')
	timeout=$(summary_count "$log" 'Timeout')
	skipped=$(summary_count "$log" 'Skipped')
	ran=$((ok + xfail + fail + upass + timeout))
	passed=$((passed + ok + xfail))
	failed=$((failed + fail + upass + timeout))
	say "$name: $((ok + xfail)) passed, $((fail + upass + timeout)) failed, $skipped skipped"
	if [ "$((fail + upass + timeout))" -gt 0 ]; then
		failures+=("$name: $((fail + upass + timeout)) test(s)")
	fi
	if [ "$ran" = 0 ]; then
		note_failure "$name: meson test ran no test"
	elif [ "$rc" != 0 ] && [ "$((fail + upass + timeout))" = 0 ]; then
		note_failure "$name: meson test exited with $rc"
	fi
}

# 1. Dependencies.
say "setup"
if ! bash "$ROOT/scripts/setup.sh" --test; then
	note_failure "setup"
fi

# 1b. The browser tests' driver (test/browser/package-lock.json), from the npm
# registry; no browser is downloaded (Debian's chromium is used).
# Skipped when node_modules was installed from this very lock file (a stamp
# written after a good `npm ci`), so the suite can run again without the
# registry (offline, or in a network namespace after a first run with network).
NPM_STAMP=$ROOT/test/browser/node_modules/.thingsync-package-lock.json
if ! command -v npm >/dev/null 2>&1; then
	note_failure "browser tests: no npm (scripts/setup.sh --test installs Debian's nodejs and npm)"
elif [ -d "$ROOT/test/browser/node_modules/puppeteer-core" ] &&
	cmp -s "$ROOT/test/browser/package-lock.json" "$NPM_STAMP"; then
	say "browser tests: node_modules matches package-lock.json, no npm ci"
else
	say "browser tests: npm ci (puppeteer-core $(sed -n 's/.*"puppeteer-core": "\(.*\)".*/\1/p' "$ROOT/test/browser/package.json" | head -n1), node $(node --version 2>/dev/null || echo '?'), npm $(npm --version 2>/dev/null || echo '?'))"
	if (cd "$ROOT/test/browser" && as_user env PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error); then
		as_user cp "$ROOT/test/browser/package-lock.json" "$NPM_STAMP"
	else
		say "npm ci needs the npm registry (npm config get registry: $(npm config get registry 2>/dev/null || echo '?'));" \
			"behind a proxy set https_proxy, or npm's cafile for a TLS-inspecting one"
		note_failure "browser tests: npm ci"
	fi
fi

if [ "$setup_only" = 1 ]; then
	if [ "$failed" = 0 ]; then
		say "setup done in $((SECONDS - START))s"
		exit 0
	fi
	say "setup failed: ${failures[*]}"
	exit 1
fi

# 2-3. Normal build, warnings as errors, and its suite.
say "build-ci: configure and build"
if configure build-ci -Dwerror=true -Dtests=enabled && as_user ninja -C build-ci; then
	run_suite build-ci build-ci --
else
	note_failure "build-ci: configure or build"
fi

# 4. The same suite under AddressSanitizer and UndefinedBehaviorSanitizer.
if [ "${SKIP_ASAN:-0}" = 1 ]; then
	say "build-asan: skipped (SKIP_ASAN=1)"
else
	say "build-asan: configure and build"
	if configure build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dwerror=true -Dtests=enabled &&
		as_user ninja -C build-asan; then
		run_suite build-asan build-asan \
			ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
			UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
			-- --timeout-multiplier 3
	else
		note_failure "build-asan: configure or build"
	fi
fi

# 5. libFuzzer targets, each one run counted as one test.
run_fuzzer() {
	local exe=$1 name
	name=$(basename "$exe")
	local corpus_src="$ROOT/test/fuzz/corpus/${name#fuzz_}"
	local work
	work=$(mktemp -d "$TMP/fuzz.XXXXXX")
	mkdir -p "$work/corpus" "$work/artifacts"
	if [ -d "$corpus_src" ]; then
		# A copy, so new inputs libFuzzer finds do not land in the repository.
		cp -R "$corpus_src/." "$work/corpus/"
	fi
	chmod -R a+rwX "$TMP"
	say "fuzz: $name for ${FUZZ_SECONDS}s ($(find "$work/corpus" -type f | wc -l) corpus inputs)"
	# The target's dictionary (test/fuzz/NAME.dict), where it has one.
	local dict=()
	if [ -f "$ROOT/test/fuzz/$name.dict" ]; then
		dict=(-dict="$ROOT/test/fuzz/$name.dict")
	fi
	if as_user "$exe" -max_total_time="$FUZZ_SECONDS" -timeout=25 -print_final_stats=1 "${dict[@]}" \
		-artifact_prefix="$work/artifacts/" "$work/corpus" >"$work/log" 2>&1; then
		passed=$((passed + 1))
		say "fuzz: $name ok ($(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$work/log" | grep -Eo '[0-9]+$' || echo '?') runs)"
		rm -rf "$work"
	else
		tail -n 60 "$work/log"
		mkdir -p "$ROOT/build-fuzz/artifacts"
		cp -R "$work/artifacts/." "$ROOT/build-fuzz/artifacts/" 2>/dev/null || true
		note_failure "fuzz: $name (log tail above; crash inputs in build-fuzz/artifacts/)"
	fi
}

if [ "${SKIP_FUZZ:-0}" = 1 ]; then
	say "build-fuzz: skipped (SKIP_FUZZ=1)"
elif ! command -v clang >/dev/null 2>&1; then
	say "build-fuzz: skipped, no clang"
else
	say "build-fuzz: configure and build"
	# test/meson.build only descends into fuzz/ when tests are allowed, so the
	# fuzz build keeps them enabled (they also get a clang build this way).
	if CC=clang configure build-fuzz -Dfuzz=true -Dtests=enabled && as_user ninja -C build-fuzz; then
		fuzzers=()
		if [ -d build-fuzz/test/fuzz ]; then
			while IFS= read -r f; do
				fuzzers+=("$f")
			done < <(find build-fuzz/test/fuzz -maxdepth 1 -type f -name 'fuzz_*' -perm -u+x | sort)
		fi
		if [ "${#fuzzers[@]}" = 0 ]; then
			say "build-fuzz: no fuzz_* targets built"
		fi
		for f in "${fuzzers[@]}"; do
			run_fuzzer "$ROOT/$f"
		done
	else
		note_failure "build-fuzz: configure or build"
	fi
fi

# 6. Summary.
say "done in $((SECONDS - START))s"
if [ "${#failures[@]}" -gt 0 ]; then
	say "failures:"
	for f in "${failures[@]}"; do
		printf '   %s\n' "$f"
	done
fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
