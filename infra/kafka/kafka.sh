#!/usr/bin/env bash
# A single-node Apache Kafka 4.1 (KRaft) for the tests, assembled from Maven Central jars.
#   infra/kafka/kafka.sh start | stop | status
# Env: KAFKA_PORT (19092), KAFKA_CONTROLLER_PORT (19093), REPMON_RUN (/tmp/repmon-test),
#      REPMON_CACHE (~/.cache/repmon: where the jars are kept between runs).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PORT="${KAFKA_PORT:-19092}"
CPORT="${KAFKA_CONTROLLER_PORT:-19093}"
VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/pom.xml")"
JARS="${REPMON_CACHE:-$HOME/.cache/repmon}/kafka-$VERSION/libs"
RUN="${REPMON_RUN:-/tmp/repmon-test}/kafka-$PORT"
PY="${PYTHON:-$ROOT/.venv/bin/python}"

fetch() {
  if [ -f "$JARS/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || { echo "kafka.sh: Maven (mvn) is needed to fetch Kafka's jars" >&2; exit 1; }
  command -v java >/dev/null || { echo "kafka.sh: Java 17+ is needed to run Kafka" >&2; exit 1; }
  # Two runs on one machine (a test run beside CI) must not start a broker on half-copied jars:
  # one fetches under the lock, the other waits for it and then finds the set complete.
  mkdir -p "$(dirname "$JARS")"
  exec 9>"$(dirname "$JARS")/.fetch.lock"
  flock 9
  if [ ! -f "$JARS/.complete" ]; then
    echo "kafka.sh: fetching Apache Kafka $VERSION jars from Maven Central into $JARS" >&2
    mkdir -p "$JARS"
    mvn -q -B -f "$HERE/pom.xml" dependency:copy-dependencies -DoutputDirectory="$JARS" -DincludeScope=runtime
    touch "$JARS/.complete"
  fi
  flock -u 9
}

answers() {
  "$PY" - "$1" <<'PY' >/dev/null 2>&1
import sys
from kafka import KafkaAdminClient
KafkaAdminClient(bootstrap_servers=sys.argv[1], request_timeout_ms=3000).list_topics()
PY
}

start() {
  [ -x "$PY" ] || { echo "kafka.sh: no Python at $PY to probe the broker with; run make venv (or set PYTHON)" >&2; exit 1; }
  fetch
  if [ -f "$RUN/kafka.pid" ] && kill -0 "$(cat "$RUN/kafka.pid")" 2>/dev/null; then
    echo "kafka.sh: already running on 127.0.0.1:$PORT"; return 0
  fi
  rm -rf "$RUN"; mkdir -p "$RUN/data" "$RUN/logs"
  cat > "$RUN/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$RUN/data
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
PROPS
  local cp="$JARS/*"
  local jvm=(-Xms256m -Xmx768m -Dlog4j2.configurationFile="$HERE/log4j2.properties" -Dkafka.logs.dir="$RUN/logs")
  local id
  id="$(java "${jvm[@]}" -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
  java "${jvm[@]}" -cp "$cp" kafka.tools.StorageTool format -t "$id" -c "$RUN/server.properties" >"$RUN/logs/format.log" 2>&1 \
    || { echo "kafka.sh: storage format failed:" >&2; cat "$RUN/logs/format.log" >&2; exit 1; }
  nohup java "${jvm[@]}" -cp "$cp" kafka.Kafka "$RUN/server.properties" >"$RUN/logs/stdout.log" 2>&1 &
  echo $! > "$RUN/kafka.pid"
  for _ in $(seq 1 180); do
    if answers "127.0.0.1:$PORT"; then echo "kafka.sh: Apache Kafka $VERSION up on 127.0.0.1:$PORT"; return 0; fi
    if ! kill -0 "$(cat "$RUN/kafka.pid")" 2>/dev/null; then break; fi
    sleep 0.5
  done
  echo "kafka.sh: Kafka did not come up on 127.0.0.1:$PORT; logs:" >&2
  tail -30 "$RUN/logs/stdout.log" "$RUN/logs/server.log" >&2 2>/dev/null || true
  stop; exit 1
}

stop() {
  if [ -f "$RUN/kafka.pid" ]; then
    local pid; pid="$(cat "$RUN/kafka.pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$RUN/kafka.pid"
  fi
  echo "kafka.sh: stopped"
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  status) answers "127.0.0.1:$PORT" && echo up || { echo down; exit 1; } ;;
  *) echo "usage: $0 fetch|start|stop|status" >&2; exit 2 ;;
esac
