#!/usr/bin/env bash
# Makes sure redis-server is on PATH for the Redis store's tests
# (turbo-ratelimit/tests/redis/ starts its own servers on free loopback
# ports; nothing is left running). Installs Debian's package when missing.
set -euo pipefail

if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-setup: redis-server not found, installing it with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  # The package may start a system-wide service on port 6379; the tests never
  # use it (they start their own), so stop it where a service manager runs.
  if command -v service >/dev/null 2>&1; then
    $SUDO service redis-server stop >/dev/null 2>&1 || true
  fi
fi

redis-server --version
