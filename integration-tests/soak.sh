#!/usr/bin/env bash
# The delivery-critical integration tests, run COUNT times in a row on one broker: a test that
# fails once in twenty is a bug, in the test or in the product. Assumes integration-tests/run.sh
# has run once on this machine (the brokers, PostgreSQL and the Python packages are installed).
#
#   bash integration-tests/soak.sh [COUNT]        (default 20, on Apache Kafka)
#   TRIBUTARY_TEST_BROKER=tansu bash integration-tests/soak.sh 5
#
# The tests: the consumer loop's (unclean stop, rebalance, buffered commits), the archive's
# crashes and dead letters, transform and feature killed mid-stream, ingest during a broker
# outage, the registry's restart and replicas, and consumer-group failover (replicas killed, and
# frozen then woken). nextest's stress mode runs the whole set COUNT times and prints one
# summary; the exit code is non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT="${1:-20}"
CACHE="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
export TRIBUTARY_TEST_BROKER="${TRIBUTARY_TEST_BROKER:-kafka}"

# The delivery-critical set (issue 16); TRIBUTARY_SOAK_TESTS (a nextest filter) picks others, e.g.
# the fault suite's first scenario 20 times (docs/reliability.md):
#   TRIBUTARY_SOAK_TESTS='test(=killed_five_times_under_an_outside_producer)' bash integration-tests/soak.sh 20
DEFAULT_FILTER='binary(consumer_loop) | (binary(failover) & test(/(_killed|_frozen_then_woken)$/))
  | test(=crashes_while_writing_neither_lose_nor_duplicate_nor_overwrite)
  | test(=a_dead_letter_after_good_records_is_committed)
  | (binary(transform) & test(=a_kill_mid_stream_loses_nothing))
  | test(=a_kill_mid_stream_changes_no_final_feature)
  | test(=a_broker_outage_is_503_in_time_and_no_2xx_record_is_lost)
  | test(=a_restart_after_kill_serves_the_same_ids_and_versions)
  | test(=two_replicas_never_give_one_id_to_two_schemas)'
FILTER="${TRIBUTARY_SOAK_TESTS:-$DEFAULT_FILTER}"

echo "tests [$FILTER] on $TRIBUTARY_TEST_BROKER, $COUNT times in a row"
cargo build --workspace --locked --bins
started=$(date +%s)
cargo nextest run -p tributary-integration-tests --locked --no-fail-fast \
  --stress-count "$COUNT" -E "$FILTER"
echo "$COUNT rounds on $TRIBUTARY_TEST_BROKER in $(( $(date +%s) - started )) s"
