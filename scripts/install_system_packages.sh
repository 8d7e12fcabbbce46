#!/usr/bin/env bash
# Installs the Debian packages that carry the built-in data sets (Tux Paint stamps, Fashion-MNIST, Cataclysm: DDA, Open Clip Art ...).
# Skips quietly when they are already there; explains what to do where apt-get is not available.
set -euo pipefail
missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "modalign: the Debian packages ${missing[*]} carry the default data; install them (or point the" >&2
  echo "          commands at your own data). Continuing without them." >&2
  exit 0
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "modalign: installing Debian packages: ${missing[*]}"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
