#!/usr/bin/env bash
# Install Debian's chromium for the playground's browser tests (tests/e2e/playground), which drive
# it headless with Playwright for Python (pinned in pyproject.toml's test extra). Playwright's own
# browser download is never used: the tests pass this binary as `executable_path`.
# Idempotent: quick when chromium is already there.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium: not installed and no apt-get here; install chromium and set TESSERA_CHROMIUM to its path" >&2
  exit 1
fi
sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
chromium --version | head -1
