#!/usr/bin/env bash
# From a fresh checkout to the running demo, on one machine without Docker: installs what is
# missing (Debian build packages, the broker: Tansu by default, Apache Kafka with
# `--broker kafka`), builds `tributary` and the services in release mode, and runs
# `tributary up --demo` until Ctrl-C.
#
#   bash deploy/local/up.sh [options of tributary up, e.g. --data DIR, --free-ports, --broker kafka]
#
# The first run takes a while on 2 cores (Tansu about 8 minutes, the release build longer);
# later runs start at once. Data stays in ./.tributary (or --data): running it again continues.
#   TRIBUTARY_CACHE   (default ~/.cache/tributary): the Tansu binary, Apache Kafka
#   CARGO_TARGET_DIR  (default $TRIBUTARY_CACHE/target): the build directory
set -euo pipefail
cd "$(dirname "$0")/../.."

CACHE="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"

if ! command -v cargo >/dev/null; then
  echo "error: cargo is missing: install Rust first (https://rustup.rs)" >&2
  exit 1
fi
# The broker `tributary up` will run: the last --broker among the arguments, else Tansu.
broker=tansu
previous=
for arg in "$@"; do
  case "$arg" in
    --broker=*) broker="${arg#--broker=}" ;;
    *) if [ "$previous" = --broker ]; then broker="$arg"; fi ;;
  esac
  previous="$arg"
done
bash deploy/local/install-build-deps.sh
case "$broker" in
  kafka) bash deploy/local/install-kafka.sh ;;
  *) bash deploy/local/install-tansu.sh ;;
esac
echo "building tributary and the services (release)"
cargo build --release --locked --bins -p tributary-cli -p tributary-registry -p tributary-ingest \
  -p tributary-transform -p tributary-feature -p tributary-train-trigger -p tributary-archive
exec "$CARGO_TARGET_DIR/release/tributary" up --demo "$@"
