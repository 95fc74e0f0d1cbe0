#!/usr/bin/env bash
# Installs the Tansu broker (Kafka API, SQLite storage) that the local stack and the tests run,
# once per machine: `cargo install tansu --features libsql` into the cache, about 8 minutes on
# 2 cores. Does nothing when the pinned version is already there.
#
#   bash deploy/local/install-tansu.sh
#
#   TRIBUTARY_CACHE  (default ~/.cache/tributary): the binary goes to
#                    $TRIBUTARY_CACHE/tansu-$TANSU_VERSION/bin/tansu, where `tributary up` and the
#                    integration tests look for it.
# Used by deploy/local/up.sh and integration-tests/run.sh.
set -euo pipefail

TANSU_VERSION=0.6.0
CACHE="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}"
TANSU_BIN="$CACHE/tansu-$TANSU_VERSION/bin/tansu"

if [ -x "$TANSU_BIN" ] && "$TANSU_BIN" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  echo "tansu $TANSU_VERSION cached at $TANSU_BIN"
  exit 0
fi
if ! command -v cargo >/dev/null; then
  echo "error: cargo is missing: install Rust first (https://rustup.rs)" >&2
  exit 1
fi
echo "building tansu $TANSU_VERSION (about 8 minutes on 2 cores, once per machine)"
mkdir -p "$CACHE"
# The default features build only a storage engine that keeps nothing: libsql is SQLite.
CARGO_TARGET_DIR="$CACHE/tansu-build" cargo install tansu --locked --version "$TANSU_VERSION" \
  --features libsql --root "$CACHE/tansu-$TANSU_VERSION"
rm -rf "$CACHE/tansu-build"
echo "tansu $TANSU_VERSION installed at $TANSU_BIN"
