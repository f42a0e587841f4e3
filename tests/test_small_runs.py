"""Small runs skip Ray: the same stages in-process, the same index, only our own output.

``photos index`` on fewer than ``--ray-min-photos`` photos (and no ``--address``) decodes
in a child process and runs the models in the CLI's own process. These tests run the real
CLI in a subprocess, so nothing here has Ray initialised, as on a user's machine.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, copy_photos, write_image
from tests.crashing_decoder import write_crashing_file

OUR_LINES = ("Scanned ", "WARNING: ", "Fix: ", "Error: ")
"""How each line this program writes to stderr starts (progress bar lines aside)."""


def photos(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real `photos` CLI in a fresh Python process."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-c", "from jobs.cli import main; main()", *args], check=False,
                          capture_output=True, text=True, env=environment, timeout=timeout)


def foreign_lines(stderr: str) -> list[str]:
    """Lines of ``stderr`` that are not ours: Ray's, a library's warning, a traceback."""
    lines = []
    for raw in stderr.replace("\r", "\n").splitlines():
        line = raw.strip()
        if not line or line.startswith(OUR_LINES) or "photo/s" in line or "s/photo" in line or "?photo" in line:
            continue
        lines.append(line)
    return lines


@pytest.fixture(scope="module")
def small_library(tmp_path_factory, eval_photos) -> Path:
    root = tmp_path_factory.mktemp("small")
    copy_photos(eval_photos[:: 125], root / "photos")  # 8 real photos
    write_image(root / "photos" / "tiny.png", fmt="PNG")
    return root / "photos"


@pytest.mark.parametrize("ray_min_photos", ["200", "0"], ids=["in-process", "ray"])
def test_index_prints_only_our_own_lines_and_gives_the_same_index(small_library, tmp_path, ray_min_photos):
    index = tmp_path / "index"
    result = photos("index", str(small_library), "--index", str(index), "--models", "classify",
                    "--ray-min-photos", ray_min_photos)
    assert result.returncode == 0, result.stderr
    assert foreign_lines(result.stderr) == [], result.stderr
    assert "indexed    9  (9 new, 0 changed or re-run)" in result.stdout
    db = sqlite3.connect(index / "index.sqlite")
    top = dict(db.execute("SELECT p.path, l.label FROM labels l JOIN photos p ON p.id = l.photo_id "
                          "WHERE l.score = (SELECT max(score) FROM labels WHERE photo_id = l.photo_id)"))
    tench = next(p for p in top if "tench" in p)
    assert top[tench] == "tench"  # real weights, real photo, either path
    rerun = photos("index", str(small_library), "--index", str(index), "--models", "classify")
    assert rerun.returncode == 0 and "unchanged  9" in rerun.stdout
    assert foreign_lines(rerun.stderr) == [], rerun.stderr


def test_a_missing_weights_warning_takes_two_lines_and_names_the_fix(tmp_path):
    write_image(tmp_path / "photos" / "a.jpg", fmt="JPEG")
    result = photos("index", str(tmp_path / "photos"), "--index", str(tmp_path / "index"),
                    "--models", "classify,detect", "--detector", "ssdlite320_mobilenet_v3_large", "--quiet",
                    env={"TORCH_HOME": str(tmp_path / "no-hub")})  # no weights, no network here
    assert result.returncode == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if line.strip()][:2]
    assert warning[0].startswith("WARNING: skipping detect: no weights for ssdlite320_mobilenet_v3_large here")
    assert "photos models download ssdlite320_mobilenet_v3_large --to DIR" in warning[1]
    assert "--weights-dir DIR" in warning[1]
    assert foreign_lines(result.stderr) == [], result.stderr


def test_a_decoder_crash_in_process_costs_one_error_row(tmp_path, eval_photos):
    """The crashing plugin is registered in the decoding child through a sitecustomize,
    as Ray's worker hook does for Ray workers; the run goes on and records the one photo."""
    root = tmp_path / "photos"
    copy_photos(eval_photos[:3], root)
    write_crashing_file(root / "crash.jpg", "SIGSEGV")
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text("import tests.crashing_decoder as c\nc.register()\n")
    result = photos("index", str(root), "--index", str(tmp_path / "index"), "--models", "classify",
                    env={"PYTHONPATH": os.pathsep.join([str(hook), str(ROOT)])})
    assert result.returncode == 3, result.stderr
    db = sqlite3.connect(tmp_path / "index" / "index.sqlite")
    assert db.execute("SELECT count(*) FROM photos").fetchone()[0] == 3
    errors = db.execute("SELECT path, stage, reason FROM errors").fetchall()
    assert [(Path(p).name, stage) for p, stage, _ in errors] == [("crash.jpg", "worker")]
    assert "died every time" in errors[0][2]
