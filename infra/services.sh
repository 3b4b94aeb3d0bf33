#!/usr/bin/env bash
# Tessera's services as local background processes (what `make up` / `make down` run).
#
#   infra/services.sh start|stop|status [service ...]     default: every service with a __main__
#
# Each runs as `python -m services.<name>` with its log in $TESSERA_DATA_DIR/logs and its
# pid in $TESSERA_DATA_DIR/run; `start` waits until its gRPC health check says SERVING.
#
# REPLICAS=N (default 1) runs N processes of each service on this machine. Replica 0 keeps the
# usual ports and file names; replica i listens on every port + 100*i (gRPC, metrics, the
# registry's HTTP) and writes <name>-<i>.log / <name>-<i>.pid. Replicas share their service's
# schema, topics and consumer group, so Kafka splits the partitions between them; the other
# services keep calling the registry at replica 0's address. `stop` and `status` cover every
# replica that runs, whatever REPLICAS says now.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data_dir="${TESSERA_DATA_DIR:-$root/.data}"
python="${TESSERA_PYTHON:-$root/.venv/bin/python}"
run_dir="$data_dir/run"
log_dir="$data_dir/logs"
# Start order matters: serving, retrieval and training check grants with the registry; evaluation
# calls serving, training and monitoring.
# `training.worker` is a process without a gRPC port: training's job runner (python -m services.training.worker).
order=(registry monitoring retrieval serving training training.worker evaluation)
declare -A grpc_ports=([registry]=50051 [training]=50052 [serving]=50053 [retrieval]=50054 [evaluation]=50055 [monitoring]=50056)
declare -A metrics_ports=([registry]=9101 [training]=9102 [serving]=9103 [retrieval]=9104 [evaluation]=9105 [monitoring]=9106)
replicas="${REPLICAS:-1}"
[[ "$replicas" =~ ^[1-9][0-9]?$ ]] || { echo "REPLICAS must be 1..99, got '$replicas'" >&2; exit 2; }

log() { printf '[services] %s\n' "$*" >&2; }

selected() {
  if (($#)); then printf '%s\n' "$@"; return; fi
  for name in "${order[@]}"; do
    if [[ $name == *.* ]]; then
      [[ -f "$root/services/${name%%.*}/${name#*.}.py" ]] && echo "$name"
    else
      [[ -f "$root/services/$name/__main__.py" ]] && echo "$name"
    fi
  done
}

# A replica's file stem: `serving` for replica 0 (as before replicas existed), `serving-1` after.
stem() { if (($2 == 0)); then echo "$1"; else echo "$1-$2"; fi; }

pid_of() {
  local file="$run_dir/$(stem "$1" "$2").pid" pid
  [[ -f $file ]] || return 1
  pid="$(cat "$file")"
  kill -0 "$pid" 2>/dev/null && grep -q "services.$1" "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

# The replicas with a pid file, whether or not they still run.
known_replicas() {
  local file base
  echo 0
  for file in "$run_dir/$1"-*.pid; do
    [[ -e $file ]] || continue
    base="${file##*/}"; base="${base%.pid}"
    [[ "${base#"$1"-}" =~ ^[0-9]+$ ]] && echo "${base#"$1"-}"
  done
}

healthy() {
  "$python" - "$1" <<'PY'
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

address, ca_file = f"127.0.0.1:{sys.argv[1]}", os.environ.get("TESSERA_TLS_CA_FILE")
try:
    with (
        grpc.secure_channel(address, grpc.ssl_channel_credentials(open(ca_file, "rb").read()))
        if ca_file
        else grpc.insecure_channel(address)
    ) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    sys.exit(0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1)
except grpc.RpcError:
    sys.exit(1)
PY
}

start_one() {
  local name="$1" replica="$2" pid offset=$((100 * $2))
  local port="" file
  [[ -n ${grpc_ports[$name]:-} ]] && port=$((grpc_ports[$name] + offset))
  file="$(stem "$name" "$replica")"
  if pid="$(pid_of "$name" "$replica")"; then log "$file already running (pid $pid)"; return; fi
  mkdir -p "$run_dir" "$log_dir"
  log "starting $file (log: $log_dir/$file.log)"
  local -a env=()
  if ((replica > 0)) && [[ -n $port ]]; then
    env=(TESSERA_GRPC_PORT="$port" TESSERA_METRICS_PORT="$((metrics_ports[$name] + offset))")
    [[ $name == registry ]] && env+=(TESSERA_REGISTRY_HTTP_PORT="$((${TESSERA_REGISTRY_HTTP_PORT:-5000} + offset))")
    # Each serving replica fetches models into a cache of its own.
    [[ $name == serving ]] && env+=(TESSERA_SERVING_MODEL_CACHE="$data_dir/serving/models-$replica"
      TESSERA_SERVING_HTTP_PORT="$((${TESSERA_SERVING_HTTP_PORT:-8000} + offset))")
  fi
  # exec: the recorded pid must be the service's own, not a subshell's.
  (cd "$root" && exec env "${env[@]}" setsid "$python" -m "services.$name" >>"$log_dir/$file.log" 2>&1 </dev/null) &
  echo $! >"$run_dir/$file.pid"
  if [[ -z $port ]]; then
    sleep 2
    pid_of "$name" "$replica" >/dev/null || { log "$file exited during start:"; tail -n 30 "$log_dir/$file.log" >&2; exit 1; }
    log "$file running (no port)"
    return
  fi
  local deadline=$((SECONDS + ${TESSERA_SERVICE_START_TIMEOUT:-180}))
  until healthy "$port"; do
    if ! pid_of "$name" "$replica" >/dev/null; then
      log "$file exited during start; last lines of its log:"; tail -n 30 "$log_dir/$file.log" >&2; exit 1
    fi
    if ((SECONDS > deadline)); then log "$file did not become healthy in time"; exit 1; fi
    sleep 1
  done
  log "$file serving on 127.0.0.1:$port"
}

stop_one() {
  local name="$1" replica="$2" pid file
  file="$(stem "$name" "$replica")"
  if ! pid="$(pid_of "$name" "$replica")"; then rm -f "$run_dir/$file.pid"; return; fi
  log "stopping $file (pid $pid)"
  kill -TERM "$pid"
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$run_dir/$file.pid"; return; }
    sleep 0.5
  done
  log "$file ignored SIGTERM for 30 s; killing its process group"
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  rm -f "$run_dir/$file.pid"
}

command="${1:-}"; shift || true
case "$command" in
  start)
    while read -r name; do
      for ((r = 0; r < replicas; r++)); do start_one "$name" "$r"; done
    done < <(selected "$@") ;;
  stop)
    mapfile -t names < <(selected "$@")
    for ((i = ${#names[@]} - 1; i >= 0; i--)); do
      while read -r r; do stop_one "${names[i]}" "$r"; done < <(known_replicas "${names[i]}" | sort -rn)
    done ;;
  status)
    while read -r name; do
      while read -r r; do
        file="$(stem "$name" "$r")"
        if pid="$(pid_of "$name" "$r")"; then
          echo "$file: running (pid $pid)${grpc_ports[$name]:+ on 127.0.0.1:$((grpc_ports[$name] + 100 * r))}"
        elif ((r == 0)); then echo "$file: stopped"; fi
      done < <(known_replicas "$name" | sort -n)
    done < <(selected "$@") ;;
  *) echo "usage: [REPLICAS=N] $0 start|stop|status [service ...]" >&2; exit 2 ;;
esac
