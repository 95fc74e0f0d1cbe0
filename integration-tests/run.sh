#!/usr/bin/env bash
# The test command: on a fresh machine it installs what is missing (idempotently), then runs the
# format check, clippy with -D warnings, the unit tests, and the integration tests twice: on
# Apache Kafka and on Tansu.
#
#   bash integration-tests/run.sh
#
# Caches live outside the work tree so repeated runs and CI clones reuse them:
#   TRIBUTARY_CACHE   (default ~/.cache/tributary): the Tansu binary, Apache Kafka's jars
#   CARGO_TARGET_DIR  (default $TRIBUTARY_CACHE/target): the shared build directory
#   TRIBUTARY_TEST_BROKERS (default "kafka tansu"): the brokers the integration tests run on
set -euo pipefail
cd "$(dirname "$0")/.."

TANSU_VERSION=0.6.0
CACHE="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
export TANSU_BIN="$CACHE/tansu-$TANSU_VERSION/bin/tansu"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
mkdir -p "$CACHE"

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
# librdkafka's build needs (deploy/local/install-build-deps.sh, shared with deploy/local/up.sh),
# and Debian's PostgreSQL server for the change data capture tests.
bash deploy/local/install-build-deps.sh postgresql

step "rust components"
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
if ! command -v cargo-nextest >/dev/null; then
  cargo install cargo-nextest --locked
fi
echo "cargo $(cargo --version | cut -d' ' -f2), $(cargo nextest --version | head -1)"

step "tansu $TANSU_VERSION (the test broker)"
# The same install as deploy/local/up.sh's (cached in $CACHE, once per machine).
TRIBUTARY_CACHE="$CACHE" bash deploy/local/install-tansu.sh

step "apache kafka (the test broker users run)"
TRIBUTARY_CACHE="$CACHE" bash deploy/local/install-kafka.sh

step "python packages"
if python3 -c 'import moto, flask, confluent_kafka.schema_registry.avro, fastavro, duckdb, pyarrow, scipy, numpy' 2>/dev/null && command -v moto_server >/dev/null; then
  echo "present"
else
  python3 -m pip install --quiet --disable-pip-version-check -r integration-tests/requirements.txt
fi

step "postgresql"
PG_VERSION="$(ls /etc/postgresql | sort -V | tail -1)"
[ -n "$PG_VERSION" ] || { echo "error: no PostgreSQL cluster in /etc/postgresql" >&2; exit 1; }
# The tests connect as postgres over loopback without a password (Debian's default asks for one).
HBA="/etc/postgresql/$PG_VERSION/main/pg_hba.conf"
if ! grep -q '^# tributary-tests' "$HBA"; then
  echo "pg_hba.conf: trust for loopback connections (the tests' database server)"
  sed -i '1i # tributary-tests: integration-tests/run.sh lets the tests in as postgres over loopback\nhost all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust' "$HBA"
  pg_isready -q -h 127.0.0.1 -p 5432 && pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" main reload
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" main start
fi
for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
pg_isready -h 127.0.0.1 -p 5432
# Change data capture needs logical decoding: wal_level = logical takes a server restart.
if [ "$(psql -h 127.0.0.1 -U postgres -d postgres -tAc 'SHOW wal_level')" != logical ]; then
  echo "setting wal_level = logical (restarts PostgreSQL)"
  psql -h 127.0.0.1 -U postgres -d postgres -qc "ALTER SYSTEM SET wal_level = logical"
  pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" main restart
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
echo "wal_level: $(psql -h 127.0.0.1 -U postgres -d postgres -tAc 'SHOW wal_level')"

step "deploy manifests"
bash deploy/validate.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The AFL++ binary of the fuzz targets (crates/fuzz-afl) only builds under cargo-afl; checked here
# so it keeps compiling (integration-tests/fuzz-afl.sh runs it).
cargo clippy -p tributary-fuzz-afl --features afl --all-targets --locked -- -D warnings

step "build the service binaries (integration tests run them as processes)"
cargo build --workspace --locked --bins

# The unit tests once, the integration tests (a broker of their own each) once per broker: every
# run is reported, and the command fails if any failed.
failed=()
first=1
for broker in ${TRIBUTARY_TEST_BROKERS:-kafka tansu}; do
  if [ "$first" = 1 ]; then
    step "unit tests, and integration tests on $broker"
    packages=(--workspace)
    first=0
  else
    step "integration tests on $broker"
    packages=(-p tributary-integration-tests)
  fi
  TRIBUTARY_TEST_BROKER="$broker" cargo nextest run "${packages[@]}" --locked --no-fail-fast \
    || failed+=("$broker")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "error: tests failed on: ${failed[*]}" >&2
  exit 1
fi
