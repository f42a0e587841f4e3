#!/usr/bin/env bash
# Set up (or reuse) the project's venv, lint and type-check the code, then run the test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"` for the quick subset.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$(bash "$root/scripts/setup.sh")"
cd "$root"
"$venv/bin/ruff" check --quiet .
"$venv/bin/mypy" --no-error-summary
exec "$venv/bin/python" -m pytest "$@"
