#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and print its path on stdout.
#
# The venv is keyed by a hash of pyproject.toml, so a changed dependency list builds a
# fresh one while unchanged checkouts (CI on the same machine, a second clone) reuse the
# ~6 GB install. The project is installed editable, so code changes need no rebuild.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
key="$(sha256sum "$root/pyproject.toml" | cut -c1-12)"
venv="${PHOTOS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/photos/venv-$key}"
log="$(mktemp -t photos-setup.XXXXXX.log)"

install() {
    if ! "$@" >>"$log" 2>&1; then
        echo "setup failed: $*; see $log" >&2
        tail -n 30 "$log" >&2
        exit 1
    fi
}

mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9  # two checkouts setting up the same venv at once would corrupt it
if [ ! -f "$venv/.complete" ]; then
    echo "setting up $venv (first time only: a few minutes, ~6 GB)" >&2
    rm -rf "$venv"
    install "$python" -m venv "$venv"
    install "$venv/bin/python" -m pip install --upgrade pip "setuptools>=77" wheel
    install "$venv/bin/python" -m pip install -e "$root[test]"
    touch "$venv/.complete"
fi
# The editable install must point at this checkout (a CI clone may live elsewhere).
install "$venv/bin/python" -m pip install --no-deps --no-build-isolation -e "$root"
rm -f "$log"
echo "$venv"
