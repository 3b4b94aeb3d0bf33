#!/usr/bin/env bash
# Tessera's services as local background processes (what `make up` / `make down` run).
#
#   infra/services.sh start|stop|status [service ...]     default: every service with a __main__
#
# Each runs as `python -m services.<name>` with its log in $TESSERA_DATA_DIR/logs and its
# pid in $TESSERA_DATA_DIR/run; `start` waits until its gRPC health check says SERVING.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data_dir="${TESSERA_DATA_DIR:-$root/.data}"
python="${TESSERA_PYTHON:-$root/.venv/bin/python}"
run_dir="$data_dir/run"
log_dir="$data_dir/logs"
# Start order matters: serving, retrieval and training check grants with the registry.
# `training.worker` is a process without a gRPC port: training's job runner (python -m services.training.worker).
order=(registry monitoring retrieval serving training training.worker)
declare -A grpc_ports=([registry]=50051 [training]=50052 [serving]=50053 [retrieval]=50054 [monitoring]=50056)

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

pid_of() {
  local file="$run_dir/$1.pid" pid
  [[ -f $file ]] || return 1
  pid="$(cat "$file")"
  kill -0 "$pid" 2>/dev/null && grep -q "services.$1" "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

healthy() {
  "$python" - "$1" <<'PY'
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

try:
    with grpc.insecure_channel(f"127.0.0.1:{sys.argv[1]}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    sys.exit(0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1)
except grpc.RpcError:
    sys.exit(1)
PY
}

start_one() {
  local name="$1" pid port="${grpc_ports[$1]:-}"
  if pid="$(pid_of "$name")"; then log "$name already running (pid $pid)"; return; fi
  mkdir -p "$run_dir" "$log_dir"
  log "starting $name (log: $log_dir/$name.log)"
  # exec: the recorded pid must be the service's own, not a subshell's.
  (cd "$root" && exec setsid "$python" -m "services.$name" >>"$log_dir/$name.log" 2>&1 </dev/null) &
  echo $! >"$run_dir/$name.pid"
  if [[ -z $port ]]; then
    sleep 2
    pid_of "$name" >/dev/null || { log "$name exited during start:"; tail -n 30 "$log_dir/$name.log" >&2; exit 1; }
    log "$name running (no port)"
    return
  fi
  local deadline=$((SECONDS + ${TESSERA_SERVICE_START_TIMEOUT:-180}))
  until healthy "$port"; do
    if ! pid_of "$name" >/dev/null; then
      log "$name exited during start; last lines of its log:"; tail -n 30 "$log_dir/$name.log" >&2; exit 1
    fi
    if ((SECONDS > deadline)); then log "$name did not become healthy in time"; exit 1; fi
    sleep 1
  done
  log "$name serving on 127.0.0.1:$port"
}

stop_one() {
  local name="$1" pid
  if ! pid="$(pid_of "$name")"; then rm -f "$run_dir/$name.pid"; return; fi
  log "stopping $name (pid $pid)"
  kill -TERM "$pid"
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$run_dir/$name.pid"; return; }
    sleep 0.5
  done
  log "$name ignored SIGTERM for 30 s; killing its process group"
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  rm -f "$run_dir/$name.pid"
}

command="${1:-}"; shift || true
case "$command" in
  start) while read -r name; do start_one "$name"; done < <(selected "$@") ;;
  stop)
    mapfile -t names < <(selected "$@")
    for ((i = ${#names[@]} - 1; i >= 0; i--)); do stop_one "${names[i]}"; done ;;
  status)
    while read -r name; do
      if pid="$(pid_of "$name")"; then echo "$name: running (pid $pid)${grpc_ports[$name]:+ on 127.0.0.1:${grpc_ports[$name]}}"
      else echo "$name: stopped"; fi
    done < <(selected "$@") ;;
  *) echo "usage: $0 start|stop|status [service ...]" >&2; exit 2 ;;
esac
