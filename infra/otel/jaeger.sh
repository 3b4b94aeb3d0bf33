#!/usr/bin/env bash
# Jaeger v2 on 127.0.0.1: an OTLP receiver that keeps traces in memory and answers the query API.
#
#   infra/otel/jaeger.sh fetch    build the pinned Jaeger (infra/otel/go.mod) once, from the Go module proxy
#   infra/otel/jaeger.sh start    fetch, start, wait until healthy (a no-op when it already runs)
#   infra/otel/jaeger.sh stop     stop it and wait until it is gone
#   infra/otel/jaeger.sh status   say whether it runs, and where
#
# Settings: TESSERA_JAEGER_OTLP_PORT (4317: point TESSERA_OTLP_ENDPOINT at http://127.0.0.1:<it>),
# TESSERA_JAEGER_OTLP_HTTP_PORT (4318), TESSERA_JAEGER_QUERY_PORT (16686: UI and /api/traces),
# TESSERA_JAEGER_QUERY_GRPC_PORT (16685), TESSERA_JAEGER_HEALTH_PORT (13133),
# TESSERA_DATA_DIR (.data: pid and log), TESSERA_CACHE_DIR (~/.cache/tessera: the binary, outside git).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
version="$(sed -n 's:^\s*github.com/jaegertracing/jaeger \(v[^ ]*\).*:\1:p' "$here/go.mod" | head -1)"
cache_dir="${TESSERA_CACHE_DIR:-$HOME/.cache/tessera}"
binary="$cache_dir/bin/jaeger-$version"
data_dir="${TESSERA_DATA_DIR:-$root/.data}/jaeger"
pid_file="$data_dir/jaeger.pid"
log_file="$data_dir/jaeger.log"
export TESSERA_JAEGER_OTLP_PORT="${TESSERA_JAEGER_OTLP_PORT:-4317}"
export TESSERA_JAEGER_OTLP_HTTP_PORT="${TESSERA_JAEGER_OTLP_HTTP_PORT:-4318}"
export TESSERA_JAEGER_QUERY_PORT="${TESSERA_JAEGER_QUERY_PORT:-16686}"
export TESSERA_JAEGER_QUERY_GRPC_PORT="${TESSERA_JAEGER_QUERY_GRPC_PORT:-16685}"
export TESSERA_JAEGER_HEALTH_PORT="${TESSERA_JAEGER_HEALTH_PORT:-13133}"

log() { printf '[jaeger] %s\n' "$*" >&2; }

running_pid() {
  [[ -f "$pid_file" ]] || return 1
  local pid
  pid="$(cat "$pid_file")"
  kill -0 "$pid" 2>/dev/null && grep -q "jaeger-" "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

fetch() {
  if [[ -x "$binary" ]]; then return; fi
  [[ -n "$version" ]] || { log "no Jaeger version in $here/go.mod"; exit 1; }
  command -v go >/dev/null || { log "Go is needed to build Jaeger $version (apt-get install golang, or go.dev)"; exit 1; }
  log "building Jaeger $version from the Go module proxy into $binary (once; several minutes)"
  mkdir -p "$(dirname "$binary")"
  # Built inside infra/otel so go.mod/go.sum pin every dependency; a partial build never lands.
  (cd "$here" && go build -trimpath -o "$binary.tmp" github.com/jaegertracing/jaeger/cmd/jaeger)
  mv "$binary.tmp" "$binary"
}

healthy() {
  curl -fsS -o /dev/null "http://127.0.0.1:$TESSERA_JAEGER_HEALTH_PORT/status" 2>/dev/null
}

start() {
  if pid="$(running_pid)"; then
    log "already running (pid $pid)"
    return
  fi
  fetch
  mkdir -p "$data_dir"
  log "starting Jaeger $version: OTLP 127.0.0.1:$TESSERA_JAEGER_OTLP_PORT, query http://127.0.0.1:$TESSERA_JAEGER_QUERY_PORT"
  nohup "$binary" --config "$here/jaeger.yaml" >"$log_file" 2>&1 &
  echo $! >"$pid_file"
  for _ in $(seq 1 120); do
    if healthy; then
      log "ready"
      return
    fi
    if ! running_pid >/dev/null; then
      log "Jaeger exited; see $log_file"
      tail -20 "$log_file" >&2
      exit 1
    fi
    sleep 0.5
  done
  log "Jaeger did not become healthy in 60 s; see $log_file"
  exit 1
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$pid_file"
    return
  fi
  kill "$pid"
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  rm -f "$pid_file"
  log "stopped"
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  status)
    if pid="$(running_pid)"; then
      echo "jaeger running (pid $pid): OTLP 127.0.0.1:$TESSERA_JAEGER_OTLP_PORT, query http://127.0.0.1:$TESSERA_JAEGER_QUERY_PORT"
    else
      echo "jaeger not running"
      exit 1
    fi
    ;;
  *)
    echo "usage: $0 fetch|start|stop|status" >&2
    exit 2
    ;;
esac
