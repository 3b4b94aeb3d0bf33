#!/usr/bin/env bash
# MinIO, the S3-compatible object store the registry's artifact tests run against,
# built from the Go module proxy into ~/.cache/tessera/bin (like kafka.sh caches its jars).
# Idempotent: quick when the pinned build is already there. Never starts a server: the
# tests start `minio server` themselves on 127.0.0.1 with a temporary data folder.
#
#   bash infra/minio/minio.sh fetch     build it if missing; prints the binary's path
set -euo pipefail

# MinIO tags releases by date, not semver: the module proxy serves them as pseudo-versions.
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
BIN="${TESSERA_TOOLS_BIN:-$HOME/.cache/tessera/bin}"

fetch() {
  mkdir -p "$BIN"
  if [[ -x $BIN/minio && -f $BIN/.minio-$MINIO_VERSION ]]; then echo "$BIN/minio"; return; fi
  command -v go >/dev/null 2>&1 || { echo "[minio] go is not installed: cannot build MinIO" >&2; exit 1; }
  echo "[minio] building MinIO $MINIO_VERSION from the Go module proxy (a long build the first time)" >&2
  GOBIN="$BIN" CGO_ENABLED=0 nice go install -trimpath -ldflags="-s -w" "github.com/minio/minio@$MINIO_VERSION"
  rm -f "$BIN/.minio-"* && touch "$BIN/.minio-$MINIO_VERSION"
  echo "$BIN/minio"
}

case "${1:-fetch}" in
  fetch) fetch ;;
  *) echo "usage: $0 fetch" >&2; exit 2 ;;
esac
