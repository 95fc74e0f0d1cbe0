#!/usr/bin/env bash
# Installs the Debian packages building Tributary needs and that are missing: librdkafka is
# built from source by rdkafka-sys (a C toolchain, make, pkg-config, OpenSSL and zlib headers).
# Extra package names given as arguments are installed too when missing (their command or
# package absent).
#
#   bash deploy/local/install-build-deps.sh [package ...]
#
# Used by deploy/local/up.sh and integration-tests/run.sh.
set -euo pipefail

missing=()
command -v cc >/dev/null || missing+=(gcc)
command -v make >/dev/null || missing+=(make)
command -v pkg-config >/dev/null || missing+=(pkg-config)
for package in libssl-dev zlib1g-dev "$@"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "build packages present"
  exit 0
fi
echo "installing ${missing[*]}"
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}"
