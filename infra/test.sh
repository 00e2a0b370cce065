#!/usr/bin/env bash
# The README's test command (`make test`): start Apache Kafka (KRaft, from Maven Central jars) and
# Debian's redis-server (and chromium for the browser tests), run every test (unit, integration, embedded), stop both whatever happens.
# If Kafka or Redis cannot start, this fails: integration tests are never skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
export REPMON_RUN="${REPMON_RUN:-/tmp/repmon-test-$$}"
export KAFKA_PORT="${KAFKA_PORT:-19092}" KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-19093}"
export REDIS_PORT="${REDIS_PORT:-16379}"

cleanup() {
  infra/kafka/kafka.sh stop || true
  infra/redis.sh stop || true
}
trap cleanup EXIT INT TERM

infra/chromium.sh
infra/redis.sh start
infra/kafka/kafka.sh start

export REPMON_TEST_KAFKA="127.0.0.1:$KAFKA_PORT"
export REPMON_TEST_REDIS="redis://127.0.0.1:$REDIS_PORT/0"
.venv/bin/pytest "$@"
