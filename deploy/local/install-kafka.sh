#!/usr/bin/env bash
# Installs Apache Kafka for this machine, once: the broker's jars and their runtime dependencies
# resolved from Maven Central by Maven (deploy/local/kafka/pom.xml, which pins the version), a
# formatted empty KRaft storage folder, and the launcher deploy/local/kafka/kafka-local.sh.
# Quiet and quick when the pinned version is already there (the launcher is refreshed).
#
#   bash deploy/local/install-kafka.sh
#
#   TRIBUTARY_CACHE  (default ~/.cache/tributary): everything goes to
#                    $TRIBUTARY_CACHE/kafka-<version>/ (libs/, config/, formatted/,
#                    bin/kafka-local), Maven's downloads to $TRIBUTARY_CACHE/m2.
# Needs Java 17+ and Maven (installed from Debian's packages when missing).
# Used by integration-tests/run.sh and deploy/local/up.sh --broker kafka.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")"
CACHE="${TRIBUTARY_CACHE:-$HOME/.cache/tributary}"
KAFKA_HOME="$CACHE/kafka-$KAFKA_VERSION"

refresh_launcher() {
  mkdir -p "$1/bin" "$1/config"
  install -m 0755 "$here/kafka/kafka-local.sh" "$1/bin/kafka-local"
  install -m 0644 "$here/kafka/log4j2.properties" "$1/config/log4j2.properties"
}

if [ -f "$KAFKA_HOME/installed" ]; then
  refresh_launcher "$KAFKA_HOME"
  echo "kafka $KAFKA_VERSION cached at $KAFKA_HOME"
  exit 0
fi

missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}"
fi

echo "resolving kafka $KAFKA_VERSION from Maven Central (once per machine)"
mkdir -p "$CACHE"
staging="$(mktemp -d "$CACHE/kafka-install.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
# Maven 3.8's console library prints colour resets even in batch mode: strip escape codes so
# logs stay plain (pipefail keeps mvn's exit status).
mvn -q -B -Dstyle.color=never -f "$here/kafka/pom.xml" -Dmaven.repo.local="$CACHE/m2" \
  dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$staging/libs" 2>&1 \
  | sed 's/\x1b\[[0-9;]*m//g'
refresh_launcher "$staging"

# One formatted, empty storage folder: the launcher copies it for each new broker folder instead
# of running the storage tool (a JVM start) every time. Ports do not matter to the format.
cat > "$staging/format.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:9093
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093
log.dirs=$staging/formatted
PROPS
storage_tool() {
  java -Dlog4j2.configurationFile="$staging/config/log4j2.properties" -cp "$staging/libs/*" \
    kafka.tools.StorageTool "$@"
}
cluster_id="$(storage_tool random-uuid)"
storage_tool format --cluster-id "$cluster_id" --config "$staging/format.properties" >/dev/null
rm "$staging/format.properties"

echo "$KAFKA_VERSION cluster $cluster_id" > "$staging/installed"
rm -rf "$KAFKA_HOME"
mv "$staging" "$KAFKA_HOME"
trap - EXIT

# The class archive: one start and a clean stop with KAFKA_CDS_DUMP=1, at the final path (the
# archive is tied to the class path). Without it the launcher still works, only slower.
echo "archiving the broker's classes (a first start)"
scratch="$(mktemp -d)"
ports=($(python3 -c 'import socket
for _ in range(2):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'))
KAFKA_CDS_DUMP=1 "$KAFKA_HOME/bin/kafka-local" "$scratch" "${ports[0]}" "${ports[1]}" \
  >"$scratch/kafka.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  (echo >"/dev/tcp/127.0.0.1/${ports[0]}") 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
sleep 3
kill -TERM "$pid" 2>/dev/null || true
wait "$pid" || true
[ -f "$KAFKA_HOME/kafka.jsa" ] || { echo "warning: no class archive (see below); starts will be slower" >&2; tail -5 "$scratch/kafka.log" >&2; }
rm -rf "$scratch"
echo "kafka $KAFKA_VERSION installed at $KAFKA_HOME (launcher: $KAFKA_HOME/bin/kafka-local)"
