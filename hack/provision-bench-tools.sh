#!/usr/bin/env bash
# Provision the load generators `make bench` uses, from Debian packages: wrk (the fast HTTP client of the
# qpext and webhook benchmarks) and curl. Idempotent. Needs root (or passwordless sudo).
set -euo pipefail

source "$(dirname "$0")/lib.sh"

apt_install wrk curl
