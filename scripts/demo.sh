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
exec bash "$root/scripts/demo-run.sh" "$venv/bin/python" "$@"
