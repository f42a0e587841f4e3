#!/usr/bin/env bash
# Set up (or reuse) the venv, index a folder of photos into ./demo-index, and search it.
# Usage: bash scripts/demo.sh [PHOTO_FOLDER]   (default: ../shared/eval/imagenet-samples)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
photos_dir="${1:-$root/../shared/eval/imagenet-samples}"
if [ ! -d "$photos_dir" ]; then
    echo "no photo folder at $photos_dir; give one: bash scripts/demo.sh ~/Pictures" >&2
    exit 2
fi
venv="$(bash "$root/scripts/setup.sh")"
# Fetch the TF.js detector/segmenter weights now, so later runs need no network.
"$venv/bin/photos" models download nanodet selfie >/dev/null 2>&1 \
    || echo "warning: nanodet/selfie weights not fetched (offline?); \`$venv/bin/photos models download nanodet selfie\` says why" >&2
index="$root/demo-index"
status=0
"$venv/bin/photos" index "$photos_dir" --index "$index" || status=$?
# Exit code 3 means "finished, some files could not be read": still worth searching.
if [ "$status" -ne 0 ] && [ "$status" -ne 3 ]; then exit "$status"; fi
for query in dog beach "golden retriever"; do
    echo; echo "\$ photos search $query --limit 5"
    "$venv/bin/photos" search "$query" --index "$index" --limit 5
done
echo; echo "Index in $index; try: $venv/bin/photos search cat --index $index"
