#!/usr/bin/env bash
# Install the Debian packages listed in scripts/host-packages.txt that this
# machine lacks. Quiet and quick when nothing is missing; needs root otherwise.
set -euo pipefail
list="$(dirname "${BASH_SOURCE[0]}")/host-packages.txt"

mapfile -t packages < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$list" | awk '{print $1}')
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
done
[ "${#missing[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "host-packages.sh: missing Debian packages (${missing[*]}); run as root to install them" >&2
  exit 1
fi
echo "==> installing ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
