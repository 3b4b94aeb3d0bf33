#!/usr/bin/env bash
# Install the Prometheus server binary (Debian package `prometheus`) for the dashboard tests.
# Idempotent: quick when it is already there. Never starts a system service: the tests start
# the binary themselves on 127.0.0.1 with a temporary config and data folder.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "prometheus: not installed and no apt-get here; install Prometheus >= 2.40 and put it on PATH" >&2
  exit 1
fi
sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
# policy-rc.d 101: the package must not start (or fail to start) a system service here.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee $policy >/dev/null && $sudo chmod +x $policy && created_policy=1
fi
trap '[[ $created_policy -eq 1 ]] && $sudo rm -f $policy' EXIT
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
prometheus --version | head -1
