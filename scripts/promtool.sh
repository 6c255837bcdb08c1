#!/usr/bin/env bash
# Make Debian's promtool (and prometheus binary) available to this checkout
# without installing the package: installing it would start a server on the
# machine. Downloads the same .deb the monitoring host gets (no root needed)
# and unpacks it under .cache/prometheus/, then prints promtool's path.
#   bash scripts/promtool.sh            print the path (downloading once)
#   bash scripts/promtool.sh check ...  run promtool with these arguments
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="$root/.cache/prometheus"
promtool="$cache/usr/bin/promtool"

if [ ! -x "$promtool" ]; then
  mkdir -p "$cache/deb"
  # A fresh machine may have no package lists yet (host-packages.sh updates
  # them only when it installs something): as root, fetch them once.
  if ! apt-cache show prometheus >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq
  fi
  if ! (cd "$cache/deb" && apt-get download prometheus >/dev/null 2>"$cache/download.log"); then
    cat "$cache/download.log" >&2
    if ! apt-cache show prometheus >/dev/null 2>&1; then
      echo "promtool.sh: apt knows no package 'prometheus': the package lists are missing;" \
        "run 'sudo apt-get update' once, then try again" >&2
    else
      echo "promtool.sh: 'apt-get download prometheus' failed (network or mirror?)" >&2
    fi
    exit 1
  fi
  deb="$(ls -t "$cache"/deb/prometheus_*.deb | head -n1)"
  dpkg-deb -x "$deb" "$cache"
  rm -f "$cache"/deb/prometheus_*.deb
fi

if [ "$#" -eq 0 ]; then
  echo "$promtool"
else
  exec "$promtool" "$@"
fi
