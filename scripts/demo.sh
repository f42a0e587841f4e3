#!/usr/bin/env bash
# Set up (or reuse) the venv, index a folder of photos into ./demo-index, and search it.
# Usage: bash scripts/demo.sh [PHOTO_FOLDER]
# Without a folder it indexes docs/sample-photos (four public-domain/CC0 photos shipped
# with the repository), so it works on any machine.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "$#" -gt 0 ] && [ ! -d "$1" ]; then
    echo "no photo folder at $1; give one: bash scripts/demo.sh ~/Pictures" >&2
    exit 2
fi
venv="$(bash "$root/scripts/setup.sh")"
# Fetch the TF.js detector/segmenter weights now, so later runs need no network.
"$venv/bin/photos" models download nanodet selfie >/dev/null 2>&1 \
    || echo "warning: nanodet/selfie weights not fetched (offline?); \`$venv/bin/photos models download nanodet selfie\` says why" >&2
exec bash "$root/scripts/demo-run.sh" "$venv/bin/python" "$@"
