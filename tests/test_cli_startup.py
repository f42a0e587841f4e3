"""`photos search` answers at once: its path imports no torch, Ray or model code.

Measured in fresh interpreters, since a test process has long imported everything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "ray", "torchvision", "timm", "reverse_geocode", "scipy")


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def test_search_command_imports_nothing_heavy():
    code = ("import sys, json; from jobs.cli import cli; cli.get_command(None, 'search'); "
            "import jobs.search_cmd, pipeline.search_filters; "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_search_help_runs_without_heavy_imports(tmp_path):
    # ``cli``, not the console script's ``main``: main ends with os._exit, which skips atexit.
    code = ("import sys, atexit; from jobs.cli import cli; "
            f"atexit.register(lambda: print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])); "
            "cli(prog_name='photos')")
    result = run_python(code, "search", "--help")
    assert result.returncode == 0, result.stderr
    assert "--place TEXT" in result.stdout and "--near LAT,LON" in result.stdout
    assert "HEAVY []" in result.stdout
    empty = run_python(code, "search", "beach", "--index", str(tmp_path / "none"))
    assert empty.returncode == 2 and "no index at" in empty.stderr and "HEAVY []" in empty.stdout


def test_every_command_is_still_listed_and_loads():
    from click.testing import CliRunner

    from jobs.cli import COMMANDS, cli

    listing = CliRunner().invoke(cli, ["--help"]).output
    for name in COMMANDS:
        assert name in listing
        assert cli.get_command(None, name) is not None  # type: ignore[arg-type]


def test_a_run_without_custom_labels_loads_no_faiss():
    """The indexing path imports faiss only where a custom label is trained or applied."""
    code = ("import sys, json; import jobs.index_cmd, pipeline.indexer, pipeline.custom_labels; "
            "print(json.dumps('faiss' in sys.modules))")
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) is False
