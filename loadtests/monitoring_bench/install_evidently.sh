#!/usr/bin/env bash
# The benchmark's anchor, Evidently, in a virtual environment of its own: evidently 0.7.x
# needs pandas < 3, while the project pins pandas 3 (mlflow). Idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/.data/venvs/evidently"
requirements="$root/loadtests/monitoring_bench/evidently-requirements.txt"
stamp="$venv/.installed-$(sha1sum "$requirements" | cut -c1-12)"
if [[ -f "$stamp" ]]; then
  exit 0
fi
python3.11 -m venv "$venv" 2>/dev/null || "${TESSERA_PYTHON:-python3}" -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -r "$requirements"
rm -f "$venv"/.installed-* && touch "$stamp"
echo "evidently installed in $venv"
