#!/usr/bin/env bash
# Runs every fuzz target (tests named fuzz_* in the crates that own the parsers) for a set time,
# in release builds, two at a time, and prints each target's runs, CPU time and findings:
#
#   bash integration-tests/fuzz.sh [SECONDS_PER_TARGET]     # default 600
#
# TRIBUTARY_FUZZ_SEED replays a run. A finding fails its target and names the saved input
# (target/fuzz-findings/<target>/); fix the code, then move the file to the crate's
# fuzz/regressions/<target>/, where every later run (the test command's included) replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
export TRIBUTARY_FUZZ_SECONDS="${1:-600}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tributary/target}"
log="$(mktemp)"
status=0
# One process per crate, each running its targets one per test thread.
cargo test --release --locked -p tributary-core --lib fuzz_ -- --test-threads 2 --nocapture >"$log.core" 2>&1 &
core=$!
cargo test --release --locked -p tributary-ingest --lib fuzz_ -- --test-threads 1 --nocapture >"$log.ingest" 2>&1 || status=1
wait "$core" || status=1
cat "$log.core" "$log.ingest" >"$log"
grep -E '^fuzz |panicked|found \(seed' "$log" || true
awk '/^fuzz / { for (i = 1; i <= NF; i++) if ($i ~ /^\(/) { sub(/\(/, "", $i); cpu += $i } }
     END { printf "total CPU: %.0f s (%.2f CPU-hours)\n", cpu, cpu / 3600 }' "$log"
[ "$status" = 0 ] || echo "fuzzing found something: see above and $log" >&2
exit "$status"
