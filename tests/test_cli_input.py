"""Bad command lines: a one-line message, exit code 2, and an index the next run can use.

Each bad `photos index` runs against an index a good run has just written; the index
must be byte-for-byte as it was, and a good run afterwards must find everything
unchanged. Real CLI, real Ray for the good runs, real SQLite.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from jobs.cli import cli
from tests.conftest import as_unprivileged, write_image


def run_cli(*args: str):
    return CliRunner().invoke(cli, list(args))


def _snapshot(index: Path) -> dict[str, str]:
    return {str(p.relative_to(index)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(index.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def library(ray_local):
    """Three photos and an index of them, in a folder uid 65534 can read."""
    base = Path(tempfile.mkdtemp(prefix="photos-cli-input-"))
    base.chmod(0o755)
    for name in ("a.jpg", "b.png", "c.jpg"):
        write_image(base / "photos" / name, fmt="PNG" if name.endswith("png") else "JPEG")
    result = run_cli("index", str(base / "photos"), "--index", str(base / "index"), "--quiet")
    assert result.exit_code == 0, result.output
    yield base
    shutil.rmtree(base)


def _assert_usage_error(result, *words: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    assert "Error: " in result.output
    for word in words:
        assert word in result.output


def test_bad_command_lines_exit_2_and_leave_the_index_as_it_was(library: Path):
    photos, index = library / "photos", library / "index"
    (library / "notes.txt").write_text("not a folder")
    before = _snapshot(index)
    cases = {
        "missing folder": (["index", str(library / "nope")], "photo folder not found"),
        "file instead of a folder": (["index", str(photos / "a.jpg")], "not a folder"),
        "one good folder, one missing": (["index", str(photos), str(library / "nope")], "not found"),
        "unknown classifier": (["index", str(photos), "--classifier", "resnet9000"], "resnet9000"),
        "unknown task": (["index", str(photos), "--models", "teleport"], "unknown task teleport"),
        "index path is a file": (["index", str(photos), "--index", str(library / "notes.txt")], "notes.txt"),
        "index path under a file": (["index", str(photos), "--index", str(library / "notes.txt" / "i")],
                                    "cannot create the index folder"),
        "search with no index": (["search", "dog", "--index", str(library / "nowhere")], "no index at"),
    }
    for name, (args, words) in cases.items():
        if "--index" not in args:
            args = [*args, "--index", str(index)]
        result = run_cli(*args)
        _assert_usage_error(result, words)
        assert len(result.output.strip().splitlines()) <= 4, (name, result.output)  # short, not a dump
        assert _snapshot(index) == before, name
    assert not (library / "nowhere").exists()


def test_an_index_this_user_cannot_write_is_a_usage_error(library: Path):
    """As uid 65534 (root writes anywhere): the root-owned index and a read-only folder."""
    photos, index = library / "photos", library / "index"
    readonly = library / "readonly"
    readonly.mkdir(mode=0o555)
    before = _snapshot(index)

    def attempt() -> list[tuple[int, str]]:
        return [(r.exit_code, r.output) for r in (
            run_cli("index", str(photos), "--index", str(index), "--quiet"),
            run_cli("index", str(photos), "--index", str(readonly / "index"), "--quiet"),
        )]

    outcomes = as_unprivileged(attempt)
    if os.geteuid() != 0:
        pytest.skip("the index folders are this user's own")
    (code1, out1), (code2, out2) = outcomes
    assert code1 == 2 and "cannot lock the index folder" in out1 and "Permission denied" in out1, out1
    assert code2 == 2 and "cannot create the index folder" in out2 and "Permission denied" in out2, out2
    assert _snapshot(index) == before and not any(readonly.iterdir())


def test_a_good_run_after_the_bad_ones_finds_everything_unchanged(library: Path):
    result = run_cli("index", str(library / "photos"), "--index", str(library / "index"), "--quiet")
    assert result.exit_code == 0, result.output
    assert "indexed    0  (" in result.output and "unchanged  3\n" in result.output


@pytest.mark.parametrize("damage", ["garbage", "torn page"])
def test_a_corrupt_index_is_a_usage_error_left_untouched_and_rebuilt_once_moved(library: Path, damage: str):
    index = library / f"corrupt-{damage.replace(' ', '-')}"
    shutil.copytree(library / "index", index)
    db = index / "index.sqlite"
    for sidecar in ("index.sqlite-wal", "index.sqlite-shm"):
        (index / sidecar).unlink(missing_ok=True)
    data = bytearray(db.read_bytes())
    if damage == "garbage":
        data = bytearray(b"this is not a database, it is a shopping list\n" * 100)
    else:  # the header is fine; every page after the first two is noise
        data[8192:] = os.urandom(len(data) - 8192)
    db.write_bytes(bytes(data))
    for args in (["index", str(library / "photos"), "--quiet"], ["search", "dog"], ["status"], ["errors"]):
        result = run_cli(*args, "--index", str(index))
        _assert_usage_error(result, "corrupt", "move it away")
    assert db.read_bytes() == bytes(data)  # never "repaired" into an empty index
    db.rename(index / "index.sqlite.broken")  # what the message says to do
    result = run_cli("index", str(library / "photos"), "--index", str(index), "--quiet")
    assert result.exit_code == 0 and "indexed    3  (" in result.output, result.output


def test_every_index_setting_is_a_cli_option() -> None:
    """`photos index` reaches every IndexSettings field (roots is the argument, models the
    per-task options such as --classifier), each declared once (jobs/index_cmd.py)."""
    from dataclasses import fields

    from jobs.index_cmd import index
    from models.tasks import TASKS
    from pipeline.settings import IndexSettings

    params = {p.name for p in index.params}
    covered = params | {"roots", "models"}
    settings = {f.name for f in fields(IndexSettings)}
    assert settings <= covered, settings - covered
    assert {task.model_option for task in TASKS.values()} <= params
