#!/usr/bin/env bash
# Installs what `npm start` and `npm test` need on a fresh Debian machine, skipping what is already there:
# Debian's ffmpeg, nats-server and libxml2-utils (xmllint) - and with `test`, chromium for the playback
# test, docker-compose and caddy to check docker-compose.yml and its Caddyfile - then the npm packages from
# the lockfile (which include the Node 24 runtime every script runs on, Shaka Packager and Shaka Player).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
command -v nats-server >/dev/null 2>&1 || need+=(nats-server)
command -v xmllint >/dev/null 2>&1 || need+=(libxml2-utils)
if [ "${1:-}" = test ]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
  command -v caddy >/dev/null 2>&1 || need+=(caddy)
fi
if ((${#need[@]})); then
  echo "bootstrap: installing Debian packages: ${need[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# npm ci when node_modules is missing or older than the lockfile.
if [ ! -x node_modules/.bin/node ] || [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "bootstrap: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi
