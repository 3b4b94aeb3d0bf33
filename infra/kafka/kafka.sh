#!/usr/bin/env bash
# A single-node Apache Kafka (KRaft: broker + controller in one JVM) on 127.0.0.1.
#
#   infra/kafka/kafka.sh start    fetch jars (once), format storage (once), start, wait, create topics
#   infra/kafka/kafka.sh stop     stop the broker and wait until it is gone
#   infra/kafka/kafka.sh status   say whether it runs
#
# Settings: TESSERA_KAFKA_PORT (9092), TESSERA_KAFKA_CONTROLLER_PORT (9093),
# TESSERA_KAFKA_PARTITIONS (topic partitions, 3), TESSERA_DATA_DIR (.data),
# TESSERA_CACHE_DIR (~/.cache/tessera, holds the jars outside git).
# Topic auto-creation is off: `start` creates every topic (services.common.kafka_admin), and a
# record for a misspelt topic fails instead of quietly creating one.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
kafka_version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")"
port="${TESSERA_KAFKA_PORT:-9092}"
controller_port="${TESSERA_KAFKA_CONTROLLER_PORT:-9093}"
data_dir="${TESSERA_DATA_DIR:-$root/.data}/kafka"
cache_dir="${TESSERA_CACHE_DIR:-$HOME/.cache/tessera}"
libs="$cache_dir/kafka-$kafka_version/libs"
pid_file="$data_dir/kafka.pid"
log_file="$data_dir/server.log"
python="${TESSERA_PYTHON:-$root/.venv/bin/python}"

log() { printf '[kafka] %s\n' "$*" >&2; }

running_pid() {
  [[ -f "$pid_file" ]] || return 1
  local pid
  pid="$(cat "$pid_file")"
  kill -0 "$pid" 2>/dev/null && grep -q kafka.Kafka "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

fetch_jars() {
  if [[ -f "$libs/.complete" ]]; then return; fi
  log "fetching Apache Kafka $kafka_version jars with Maven into $libs"
  mkdir -p "$libs"
  mvn -q -B --no-transfer-progress -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$libs" -DincludeScope=runtime
  touch "$libs/.complete"
}

write_config() {
  mkdir -p "$data_dir/logs"
  cat >"$data_dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data_dir/logs
num.partitions=${TESSERA_KAFKA_PARTITIONS:-3}
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
message.max.bytes=16777216
log.retention.hours=168
PROPS
  cat >"$data_dir/log4j2.yaml" <<'LOG4J'
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
LOG4J
}

format_storage() {
  if [[ -f "$data_dir/logs/meta.properties" ]]; then return; fi
  log "formatting KRaft storage in $data_dir/logs"
  java -cp "$libs/*" -Dlog4j2.configurationFile="$data_dir/log4j2.yaml" kafka.tools.StorageTool format \
    --cluster-id "$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)" \
    --config "$data_dir/server.properties" --ignore-formatted >/dev/null
}

wait_ready() {
  local deadline=$((SECONDS + ${TESSERA_KAFKA_START_TIMEOUT:-90}))
  until "$python" -m services.common.kafka_admin ping --bootstrap "127.0.0.1:$port" >/dev/null 2>&1; do
    if ! running_pid >/dev/null; then
      log "broker exited during start; last lines of $log_file:"; tail -n 30 "$log_file" >&2; exit 1
    fi
    if ((SECONDS > deadline)); then log "broker did not answer in time"; exit 1; fi
    sleep 1
  done
}

start() {
  if pid="$(running_pid)"; then
    log "already running (pid $pid) on 127.0.0.1:$port"
  elif "$python" -m services.common.kafka_admin ping --bootstrap "127.0.0.1:$port" >/dev/null 2>&1; then
    log "another broker already answers on 127.0.0.1:$port; using it"
  else
    fetch_jars
    write_config
    format_storage
    log "starting broker on 127.0.0.1:$port"
    # setsid: the broker outlives this script and is stopped by `stop`, not by the caller's signals.
    setsid java ${TESSERA_KAFKA_HEAP_OPTS:--Xms256m -Xmx1g} -XX:+UseG1GC \
      -Dlog4j2.configurationFile="$data_dir/log4j2.yaml" \
      -cp "$libs/*" kafka.Kafka "$data_dir/server.properties" >"$log_file" 2>&1 </dev/null &
    echo $! >"$pid_file"
    wait_ready
    log "broker ready"
  fi
  "$python" -m services.common.kafka_admin create-topics --bootstrap "127.0.0.1:$port" \
    --partitions "${TESSERA_KAFKA_PARTITIONS:-3}"
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then log "not running"; rm -f "$pid_file"; return; fi
  log "stopping broker (pid $pid)"
  kill -TERM "$pid"
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pid_file"; log "stopped"; return; }
    sleep 0.5
  done
  log "broker ignored SIGTERM for 30 s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pid_file"
}

status() {
  if pid="$(running_pid)"; then echo "kafka: running (pid $pid) on 127.0.0.1:$port"; else echo "kafka: stopped"; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  fetch) fetch_jars ;;
  *) echo "usage: $0 start|stop|status|fetch" >&2; exit 2 ;;
esac
