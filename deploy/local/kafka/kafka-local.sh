#!/usr/bin/env bash
# Runs Apache Kafka on this machine as one KRaft node (broker and controller in one process),
# in the foreground: what the integration tests, the benchmarks and `tributary up --broker kafka`
# start. deploy/local/install-kafka.sh installs it as $TRIBUTARY_CACHE/kafka-<version>/bin/kafka-local
# beside the jars it runs.
#
#   kafka-local DIR PORT CONTROLLER_PORT [key=value ...]
#
# DIR holds server.properties (written anew at every start, so the ports may change) and the
# data in DIR/data; the first start lays a formatted, empty storage folder there (one cluster id
# per install), later starts keep the data. Clients connect to 127.0.0.1:PORT (PLAINTEXT); the
# controller listens on 127.0.0.1:CONTROLLER_PORT. Extra key=value pairs are added to the broker's
# configuration. KAFKA_HEAP (default 512m) bounds the heap; JAVA (default java on PATH) is the JVM.
# The process is the JVM itself (exec): SIGTERM stops it cleanly, SIGKILL kills the broker.
set -euo pipefail

if [ $# -lt 3 ]; then
  echo "usage: kafka-local DIR PORT CONTROLLER_PORT [key=value ...]" >&2
  exit 2
fi
dir=$1 port=$2 controller_port=$3
shift 3
home="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -d "$home/libs" ] || [ ! -d "$home/formatted" ]; then
  echo "error: no Kafka install at $home: run deploy/local/install-kafka.sh" >&2
  exit 1
fi

mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
{
  echo "# written by kafka-local at every start"
  echo "process.roles=broker,controller"
  echo "node.id=1"
  echo "controller.quorum.voters=1@127.0.0.1:$controller_port"
  echo "controller.listener.names=CONTROLLER"
  echo "listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port"
  echo "advertised.listeners=PLAINTEXT://127.0.0.1:$port"
  echo "inter.broker.listener.name=PLAINTEXT"
  echo "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
  echo "log.dirs=$dir/data"
  # One node: internal topics with one replica, and few partitions (a test starts a broker
  # of its own, and a group's first join waits for __consumer_offsets to be created).
  echo "offsets.topic.replication.factor=1"
  echo "offsets.topic.num.partitions=5"
  echo "transaction.state.log.replication.factor=1"
  echo "transaction.state.log.min.isr=1"
  echo "transaction.state.log.num.partitions=5"
  echo "share.coordinator.state.topic.replication.factor=1"
  echo "share.coordinator.state.topic.min.isr=1"
  echo "group.initial.rebalance.delay.ms=0"
  # As in docker-compose.yml and production: topics come from the catalog, never by accident.
  echo "auto.create.topics.enable=false"
  for pair in "$@"; do
    echo "$pair"
  done
} > "$dir/server.properties"

if [ ! -f "$dir/data/meta.properties" ]; then
  rm -rf "$dir/data"
  cp -R "$home/formatted" "$dir/data"
fi

heap="${KAFKA_HEAP:-512m}"
# Class data sharing: the classes of a first start, archived by install-kafka.sh
# (KAFKA_CDS_DUMP=1), load in about half the time (a test starts many brokers).
cds=()
if [ "${KAFKA_CDS_DUMP:-}" = 1 ]; then
  cds=(-XX:ArchiveClassesAtExit="$home/kafka.jsa")
elif [ -f "$home/kafka.jsa" ]; then
  cds=(-XX:SharedArchiveFile="$home/kafka.jsa" -Xshare:auto -Xlog:cds=off -Xlog:cds+dynamic=off)
fi
exec "${JAVA:-java}" -Xms128m -Xmx"$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
  -Djava.awt.headless=true "${cds[@]}" \
  -Dlog4j2.configurationFile="$home/config/log4j2.properties" \
  -cp "$home/libs/*" kafka.Kafka "$dir/server.properties"
