"""Bad input never stops a run: every kind of hostile file through the real CLI and real Ray.

One `photos index` of the whole corpus (``tests/hostile_corpus.py``) on the session's
local Ray, then many checks on the SQLite index it wrote. Each file either is indexed
at the right size or is exactly one error row with a stage and a readable reason; two
files kill their Ray worker every time they are decoded, and the run still finishes.

The table of kinds and outcomes is printed and must match ``docs/hostile-files.md``;
after a deliberate change, regenerate it with
``PHOTOS_WRITE_DOCS=1 python -m pytest tests/test_hostile_files.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from jobs.cli import cli
from pipeline.decode import decode_batch
from pipeline.pathnames import os_path
from pipeline.records import ScannedFile
from pipeline.scan import scan_library
from tests import hostile_corpus
from tests.conftest import as_unprivileged
from tests.hostile_corpus import Case

pytestmark = pytest.mark.slow  # two decoder crashes cost about 4 s each on 2 CPUs
DOC = Path(__file__).resolve().parents[1] / "docs" / "hostile-files.md"


def run_cli(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


class AfterScan(threading.Thread):
    """Runs ``action`` as soon as the run under way has finished its scan.

    `photos index` records its run in the index right after the scan and before Ray
    decodes anything (``runs`` row, status "running"); Ray Data then needs seconds to
    start its tasks, and the changed files are last in the corpus, so the action lands
    between scan and decode.
    """

    def __init__(self, index_dir: Path, action: Callable[[], None]) -> None:
        super().__init__(daemon=True)
        self.db = index_dir / "index.sqlite"
        self.action = action
        self.done_at: float | None = None

    def run(self) -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.db.exists():
                with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as db:
                    try:
                        if db.execute("SELECT count(*) FROM runs").fetchone()[0]:
                            self.action()
                            self.done_at = time.monotonic()
                            return
                    except sqlite3.OperationalError:
                        pass  # the schema is being created
            time.sleep(0.005)


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory, ray_local):
    base = tmp_path_factory.mktemp("hostile")
    root = base / "library"
    cases, changes = hostile_corpus.build(root, base / "outside")
    index = base / "index"
    watcher = AfterScan(index, lambda: hostile_corpus.after_scan(changes))
    watcher.start()
    started = time.monotonic()
    result = run_cli("index", str(root), "--index", str(index), "--quiet", "--commit-rows", "8")
    seconds = time.monotonic() - started
    watcher.join(timeout=5)
    assert watcher.done_at is not None, "the run never recorded itself"
    db = sqlite3.connect(index / "index.sqlite")
    photos = {r[0]: (r[1], r[2]) for r in db.execute("SELECT path, width, height FROM photos")}
    errors = {r[0]: (r[1], r[2]) for r in db.execute("SELECT path, stage, reason FROM errors")}
    return root, index, cases, result, photos, errors, seconds


def _outcome(case: Case, root: Path, photos: dict, errors: dict) -> str:
    path = f"{root}/{case.name}"
    found = []
    if path in photos:
        found.append("indexed {}x{}".format(*photos[path]))
    if path in errors:
        found.append("error ({}): {}".format(*errors[path]))
    return "; ".join(found) or "no row"


def _matches(case: Case, outcome: str) -> bool:
    if case.outcome == "indexed":
        return outcome == "indexed {}x{}".format(*case.size)
    if case.outcome == "error":
        return outcome.startswith(f"error ({case.stage}): ") and case.reason in outcome
    return outcome == "no row"


@pytest.fixture(scope="module")
def unprivileged_run():
    """Scan and decode (the library's own stage functions, no Ray) as an ordinary user."""
    base = Path(tempfile.mkdtemp(prefix="photos-unprivileged-"))  # pytest's tmp is root-only
    base.chmod(0o755)
    root = base / "library"
    cases = hostile_corpus.unprivileged_cases(root)

    def scan_and_decode() -> tuple[dict, dict]:
        items = list(scan_library([str(root)]))
        files = [i for i in items if isinstance(i, ScannedFile)]
        errors = {i.path: (i.stage, i.reason) for i in items if not isinstance(i, ScannedFile)}
        batch = {"path": np.array([f.path for f in files], dtype=object),
                 "size": np.array([f.size for f in files]), "mtime_ns": np.array([f.mtime_ns for f in files])}
        out = decode_batch(batch, 256, 200_000_000)
        photos = {}
        for path, width, height, stage, reason in zip(out["path"], out["width"], out["height"],
                                                       out["error_stage"], out["error_reason"]):
            if reason:
                errors[str(path)] = (str(stage), str(reason))
            else:
                photos[str(path)] = (int(width), int(height))
        return photos, errors

    photos, errors = as_unprivileged(scan_and_decode)
    yield root, cases, photos, errors
    shutil.rmtree(base)  # root removes the chmod 000 folder too


def test_the_corpus_has_at_least_20_kinds_of_bad_or_odd_file(corpus_run):
    _, _, cases, *_ = corpus_run
    assert len({c.kind for c in cases}) >= 20


def test_every_file_is_indexed_or_exactly_one_error_row(corpus_run, unprivileged_run):
    root, _, cases, _, photos, errors, seconds = corpus_run
    rows = [(c, _outcome(c, root, photos, errors)) for c in cases]
    u_root, u_cases, u_photos, u_errors = unprivileged_run
    rows += [(c, _outcome(c, u_root, u_photos, u_errors)) for c in u_cases]
    table = _table(rows)
    print(f"\n{table}\n(corpus indexed through the CLI in {seconds:.1f} s)")
    wrong = [f"{c.kind}: expected {c.outcome} {c.size or ''}{c.stage} {c.reason!r}, got {o}"
             for c, o in rows if not _matches(c, o)]
    assert not wrong, "\n".join(wrong)
    expected_paths = {f"{root}/{c.name}" for c in cases if c.outcome != "ignored"}
    assert set(photos) | set(errors) == expected_paths  # nothing else, nothing lost
    assert not set(photos) & set(errors)
    if os.environ.get("PHOTOS_WRITE_DOCS"):
        DOC.write_text(table)
    assert DOC.read_text() == table, f"{DOC} is stale: regenerate it (see this module's docstring)"


def test_exit_code_and_summary_say_how_many_failed(corpus_run):
    root, index, cases, result, photos, errors, _ = corpus_run
    assert result.exit_code == 3, result.output
    failed = sum(c.outcome == "error" for c in cases)
    assert f"indexed    {len(photos)}  (" in result.output
    assert f"failed     {failed}\n" in result.output and len(errors) == failed
    assert "Traceback" not in result.output
    listed = json.loads(run_cli("errors", "--index", str(index), "--json").output)
    assert {e["path"] for e in listed} == set(errors)
    assert all(e["stage"] and len(e["reason"]) > 10 for e in listed)
    text = run_cli("errors", "--index", str(index)).output
    assert len(text.splitlines()) == 2 * failed  # one line per path, however odd the name


def test_stored_paths_reopen_the_exact_files(corpus_run):
    root, _, _, _, photos, _, _ = corpus_run
    odd = [p for p in photos if "\\" in p]
    assert len(odd) == 3  # the non-UTF-8, newline and escape-sequence names
    for path in photos:
        assert os.path.exists(os_path(path)), path
    assert os.fsencode(os_path(f"{root}/caf\\xe9 (latin-1 name).jpg")).endswith(hostile_corpus.NOT_UTF8)


def test_rerun_indexes_the_finished_copy_and_decodes_nothing_twice(corpus_run):
    root, index, cases, _, photos, errors, _ = corpus_run
    result = run_cli("index", str(root), "--index", str(index), "--quiet")
    scan_errors = sum(c.outcome == "error" and c.stage == "scan" for c in cases)
    assert result.exit_code == 0, result.output  # known failures are reported once, not every run
    assert "indexed    1  (" in result.output and "failed     0\n" in result.output
    db = sqlite3.connect(index / "index.sqlite")
    assert db.execute("SELECT count(*) FROM errors WHERE stage = 'scan'").fetchone()[0] == scan_errors
    assert db.execute("SELECT width, height FROM photos WHERE path = ?",
                      (f"{root}/zz-copying.jpg",)).fetchone() == (400, 300)


def test_metadata_and_places_come_through_ray(corpus_run):
    """The EXIF read in Ray's decode workers reaches SQLite, Parquet and `photos search`."""
    root, index, *_ = corpus_run
    result = run_cli("search", "--place", "lisbon", "--json", "--index", str(index))
    [hit] = json.loads(result.output)
    assert hit["path"] == f"{root}/lisbon.jpg" and hit["taken"] == "2019-07-14T18:03:22+01:00"
    assert hit["camera"] == "Apple iPhone 12 Pro" and hit["place"]["country"] == "Portugal"
    assert [h["path"] for h in json.loads(run_cli("search", "2019", "--json", "--index", str(index)).output)] == [
        f"{root}/lisbon.jpg"]
    db = sqlite3.connect(index / "index.sqlite")
    hostile = db.execute("SELECT m.* FROM photo_meta m JOIN photos p ON p.id = m.photo_id WHERE p.path = ?",
                         (f"{root}/hostile-exif.jpg",)).fetchall()
    assert hostile == []  # every field was bad: no metadata, and the photo indexed


def _table(rows: list[tuple[Case, str]]) -> str:
    lines = [
        "# Hostile files: what `photos index` does with each",
        "",
        "Generated by `tests/test_hostile_files.py` from a real run (real CLI, real Ray, real",
        "SQLite) on files the test writes; the test fails when this file is out of date.",
        "Paths are shown as the index stores them (`pipeline/pathnames.py`). The last three",
        "rows run the scan and decode stages as uid 65534, because root reads chmod 000 files.",
        "",
        "| # | kind of file | file | outcome (stage: reason) |",
        "|---|---|---|---|",
    ]
    for n, (case, outcome) in enumerate(rows, 1):
        cell = outcome.replace("|", "\\|")
        lines.append(f"| {n} | {case.kind} | `{case.name}` | {cell} |")
    return "\n".join(lines) + "\n"
