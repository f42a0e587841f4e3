"""The README's first command works on a fresh clone with no ../shared beside it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_the_demo_indexes_the_sample_photos_and_its_searches_find_them(tmp_path: Path):
    clone = tmp_path / "clone"  # no ../shared here: tmp_path has no "shared" beside it
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        if (ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, clone / name)
    assert not (clone.parent / "shared").exists()
    env = {k: v for k, v in os.environ.items() if k not in ("PHOTOS_INDEX", "PYTHONPATH")}
    result = subprocess.run(["bash", str(clone / "scripts" / "demo-run.sh"), sys.executable],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "indexed    4  (4 new" in out
    for query, photo in (("cat", "chelsea-the-cat.jpg"), ("coffee", "coffee.jpg"), ("missile", "rocket.jpg")):
        section = out.split(f"$ photos search {query} --limit 5", 1)[1].split("$ photos search", 1)[0]
        assert str(clone / "docs" / "sample-photos" / photo) in section, out
