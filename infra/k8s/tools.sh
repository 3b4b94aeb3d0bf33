#!/usr/bin/env bash
# Builds the chart's test tools from the Go module proxy into ~/.cache/tessera/bin:
# helm (renders the chart) and kubeconform (validates what it renders).
# Idempotent: quick when the pinned versions are already there.
#
#   bash infra/k8s/tools.sh            prints the folder that holds the binaries
set -euo pipefail

HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.8.0
BIN="${TESSERA_TOOLS_BIN:-$HOME/.cache/tessera/bin}"
mkdir -p "$BIN"

log() { printf '[k8s-tools] %s\n' "$*" >&2; }

# go install names the binary after the command; a version stamp beside it says which one it is.
build() {
  local name="$1" module="$2" version="$3"
  if [[ -x $BIN/$name && -f $BIN/.$name-$version ]]; then return; fi
  command -v go >/dev/null 2>&1 || { log "go is not installed: cannot build $name"; exit 1; }
  log "building $name $version from the Go module proxy (a few minutes the first time)"
  GOBIN="$BIN" CGO_ENABLED=0 nice go install -trimpath -ldflags="-s -w" "$module@$version"
  rm -f "$BIN/.$name-"* && touch "$BIN/.$name-$version"
}

build helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION"
build kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION"
echo "$BIN"
