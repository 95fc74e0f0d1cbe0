#!/usr/bin/env bash
# Runs every fuzz target under AFL++, the coverage-guided fuzzer (cargo-afl, stable toolchain),
# for a set time each, two at a time, and prints each target's executions, CPU time, coverage
# and findings:
#
#   bash integration-tests/fuzz-afl.sh [SECONDS_PER_TARGET] [TARGET...]     # default 600, all
#
# The targets are the same harnesses the mutation fuzzer runs (integration-tests/fuzz.sh), built
# by crates/fuzz-afl with the `fuzzing` feature. cargo-afl (which builds AFL++ from its own
# sources when installed) is installed if missing. A crash or a hang fails the run; its input is
# copied to target/fuzz-findings/<target>/. Fix the code, then move the file to the owning crate's
# fuzz/regressions/<target>/: both fuzzers and the test command replay it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
shift || true
repo="$(pwd)"
target_dir="${CARGO_TARGET_DIR:-$HOME/.cache/tributary/target}-afl"

# cargo-afl's version must match the `afl` crate's in Cargo.lock.
afl_version="$(awk '/^name = "afl"$/ { getline; gsub(/[^0-9.]/, ""); print }' Cargo.lock)"
if ! cargo afl --version 2>/dev/null | grep -q "cargo-afl $afl_version"; then
  echo "== installing cargo-afl $afl_version (builds AFL++; a few minutes)"
  cargo install cargo-afl --version "$afl_version" --locked --force
fi

echo "== building the targets with AFL++'s instrumentation (release; long the first time)"
CARGO_TARGET_DIR="$target_dir" cargo afl build --release --locked -p tributary-fuzz-afl --features afl
bin="$target_dir/release/tributary-fuzz-afl"

targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <("$bin" list)

work="$target_dir/afl-runs/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$work"
# The machine's core pattern and CPU governor are not ours to change.
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
# A target process ends (writing its CPU time) after this many inputs and the fork server starts
# another; only the last one's is lost when the run stops.
export AFL_FUZZER_LOOPCOUNT=2000

run_one() {
  local name="$1" dir="$work/$1"
  "$bin" prepare "$name" "$dir" >/dev/null
  # CPU time: afl-fuzz's (and cargo's) from `times` in the subshell, and that of the target's
  # processes, which each write their own to the CPU file (nothing waits for them at the end).
  (
    TRIBUTARY_AFL_CPU_FILE="$dir/target-cpu" cargo afl fuzz -V "$seconds" -t 2000 -i "$dir/in" -o "$dir/out" -x "$dir/dict" \
      -- "$bin" run "$name" >"$dir/afl.log" 2>&1 || echo "afl-fuzz exited with $?" >>"$dir/afl.log"
    times >"$dir/times"
  )
  local afl target
  afl="$(tail -1 "$dir/times" | awk '{ s = 0; for (i = 1; i <= 2; i++) { n = split($i, p, /[ms]/); s += p[1] * 60 + p[2] } printf "%.1f", s }')"
  target="$(awk '{ s += $1 } END { printf "%.1f", s }' "$dir/target-cpu" 2>/dev/null || echo 0)"
  awk -v a="$afl" -v t="$target" 'BEGIN { printf "%.0f\n", a + t }' >"$dir/cpu"
}

# Two at a time (one per core).
running=0
for name in "${targets[@]}"; do
  echo "== $name: ${seconds} s"
  run_one "$name" &
  running=$((running + 1))
  if [ "$running" -ge 2 ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait

status=0
total=0
printf '%-14s %14s %9s %8s %8s %8s %8s\n' target execs "CPU (s)" corpus edges crashes hangs
for name in "${targets[@]}"; do
  dir="$work/$name"
  stats="$dir/out/default/fuzzer_stats"
  if [ ! -f "$stats" ]; then
    echo "$name: AFL++ did not run; see $dir/afl.log" >&2
    tail -20 "$dir/afl.log" >&2 || true
    status=1
    continue
  fi
  field() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$stats"; }
  cpu="$(cat "$dir/cpu")"
  total=$((total + cpu))
  crashes="$(field saved_crashes)"
  hangs="$(field saved_hangs)"
  printf '%-14s %14s %9s %8s %8s %8s %8s\n' "$name" "$(field execs_done)" "$cpu" \
    "$(field corpus_count)" "$(field edges_found)" "$crashes" "$hangs"
  if [ "${crashes:-0}" != 0 ] || [ "${hangs:-0}" != 0 ]; then
    status=1
    findings="$repo/target/fuzz-findings/$name"
    mkdir -p "$findings"
    for f in "$dir"/out/default/crashes/id:* "$dir"/out/default/hangs/id:*; do
      [ -f "$f" ] || continue
      kind="$(basename "$(dirname "$f")")"
      copy="$findings/afl-$kind-$(sha256sum "$f" | cut -c1-16)"
      cp "$f" "$copy"
      echo "  $kind: $copy (replay: $bin replay $name $copy)"
    done
  fi
done
awk -v t="$total" 'BEGIN { printf "total CPU: %d s (%.2f CPU-hours); runs in '"$work"'\n", t, t / 3600 }'
[ "$status" = 0 ] || echo "AFL++ found something: see above" >&2
exit "$status"
