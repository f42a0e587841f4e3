#!/usr/bin/env bash
# The demo itself, with a given Python that has the dependencies (scripts/demo.sh sets one
# up; tests/test_demo.py passes its own): index a folder into ./demo-index and search it.
# Usage: bash scripts/demo-run.sh PYTHON [PHOTO_FOLDER]   (default: docs/sample-photos)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$1"
photos_dir="${2:-$root/docs/sample-photos}"
if [ "$#" -ge 2 ]; then
    queries=(dog beach "golden retriever")
else
    queries=(cat coffee missile)  # what the sample photos show
fi
if [ ! -d "$photos_dir" ]; then
    echo "no photo folder at $photos_dir; give one: bash scripts/demo.sh ~/Pictures" >&2
    exit 2
fi
photos() { PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" "$python" -c "from jobs.cli import main; main()" "$@"; }
index="$root/demo-index"
status=0
photos index "$photos_dir" --index "$index" || status=$?
# Exit code 3 means "finished, some files could not be read": still worth searching.
if [ "$status" -ne 0 ] && [ "$status" -ne 3 ]; then exit "$status"; fi
for query in "${queries[@]}"; do
    echo; echo "\$ photos search $query --limit 5"
    photos search "$query" --index "$index" --limit 5
done
echo; echo "Index in $index; try: photos search cat --index $index"
