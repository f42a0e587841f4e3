"""Crash safety: SIGKILL at any point, then a rerun gives exactly a clean run's index."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from jobs.cli import cli
from pipeline.indexer import index_library
from pipeline.lock import index_lock
from pipeline.parquet_sink import PARQUET_SCHEMA, parquet_dir, write_part
from pipeline.settings import IndexSettings
from tests.conftest import ROOT, copy_photos
from tests.test_incremental import index_state

COMMIT_ROWS = 5
PHOTOS = 100


def start_index(library: Path, index: Path) -> subprocess.Popen:
    """`photos index` in its own process group (its own local Ray), as cron would run it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", "from jobs.cli import main; main()", "index", str(library),
         "--index", str(index), "--commit-rows", str(COMMIT_ROWS), "--batch-size", "4",
         "--decode-batch-size", "4", "--num-cpus", "2",
         "--quiet"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )


def consistent_snapshot(db_path: Path) -> int:
    """Photos committed, read as a search would; asserts each snapshot is whole batches."""
    db = sqlite3.connect(db_path, timeout=10)
    try:
        db.execute("BEGIN")
        photos = db.execute("SELECT count(*) FROM photos").fetchone()[0]
        in_parts = db.execute("SELECT coalesce(sum(rows), 0) FROM parquet_files").fetchone()[0]
        labelled = db.execute("SELECT count(DISTINCT photo_id) FROM labels").fetchone()[0]
        db.execute("COMMIT")
    except sqlite3.OperationalError as exc:  # the schema is not created yet
        assert "no such table" in str(exc)
        return 0
    finally:
        db.close()
    assert photos == in_parts == labelled
    return photos


def kill_when(proc: subprocess.Popen, db_path: Path, more: int | None, timeout: float = 180) -> tuple[int, int]:
    """SIGKILL the run's process group once it committed ``more`` photos (None: at once).

    Returns the photos committed before and after this run.
    """
    before = consistent_snapshot(db_path) if db_path.exists() else 0
    after = before
    deadline = time.monotonic() + timeout
    while more is not None and time.monotonic() < deadline and proc.poll() is None:
        if db_path.exists():
            after = consistent_snapshot(db_path)
            if after >= before + more:
                break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return before, after


@pytest.mark.slow
def test_sigkill_at_several_points_then_rerun_equals_a_clean_run(tmp_path, eval_photos, ray_local):
    library = tmp_path / "library"
    copy_photos(eval_photos[3::1000 // PHOTOS], library)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    index_library(IndexSettings(roots=(str(library),), index_dir=clean, commit_rows=COMMIT_ROWS))

    proc = start_index(library, killed)
    time.sleep(1.0)
    kill_when(proc, killed / "index.sqlite", None)  # during start-up
    for more in (1, 1):  # as soon as a batch is in; Ray delivers results in bursts of ~30 photos
        proc = start_index(library, killed)
        before, after = kill_when(proc, killed / "index.sqlite", more)
        assert before + more <= after < PHOTOS, f"not killed mid-run: {before} -> {after} of {PHOTOS}"
    resumed = index_library(IndexSettings(roots=(str(library),), index_dir=killed, commit_rows=COMMIT_ROWS))
    assert resumed.unchanged >= 2 and resumed.indexed == PHOTOS - resumed.unchanged
    assert_same_index(index_state(killed), index_state(clean))
    statuses = [s for (s,) in sqlite3.connect(killed / "index.sqlite").execute("SELECT status FROM runs ORDER BY id")]
    assert statuses == ["interrupted", "interrupted", "done"]  # the start-up kill came before its run row


def assert_same_index(got: dict, want: dict) -> None:
    """Equal row for row; scores may differ in float noise (batches differ between runs)."""
    assert got["photos"] == want["photos"]
    assert [r[:2] + r[3:] for r in got["labels"]] == [r[:2] + r[3:] for r in want["labels"]]
    assert all(abs(g[2] - w[2]) < 1e-4 for g, w in zip(got["labels"], want["labels"]))
    for g, w in zip(got["parquet"], want["parquet"]):  # float16 embeddings: the same direction
        if g["embedding"] is not None or w["embedding"] is not None:
            assert float(np.dot(np.asarray(g["embedding"]), np.asarray(w["embedding"]))) > 0.999, g["path"]
    strip = lambda rows: [{**r, "labels": [x[0] for x in r["labels"]], "embedding": None} for r in rows]
    assert strip(got["parquet"]) == strip(want["parquet"])


def test_a_part_written_but_never_committed_is_removed_by_the_next_run(tmp_path, eval_photos, ray_local):
    library = tmp_path / "library"
    copy_photos(eval_photos[:3], library)
    index = tmp_path / "index"
    index_library(IndexSettings(roots=(str(library),), index_dir=index))
    # What a kill between the Parquet rename and the SQLite commit leaves behind:
    orphan = pa.Table.from_pylist([], schema=PARQUET_SCHEMA)
    write_part(parquet_dir(index), "run000099-part000001.parquet", orphan)
    (parquet_dir(index) / ".run000099-part000002.parquet.tmp").write_bytes(b"partial")
    index_library(IndexSettings(roots=(str(library),), index_dir=index))
    assert len(index_state(index)["parquet"]) == 3  # index_state also checks no stray file is left


def test_a_second_writer_exits_at_once_and_a_killed_holder_leaves_no_stale_lock(tmp_path, eval_photos, ray_local):
    library = tmp_path / "library"
    copy_photos(eval_photos[:2], library)
    index = tmp_path / "index"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from pipeline.lock import index_lock\n"
         f"with index_lock(Path({str(index)!r})):\n    print('locked', flush=True); time.sleep(60)"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["index", str(library), "--index", str(index), "--quiet"])
    assert result.exit_code == 2 and "another `photos index` is writing" in result.output
    assert time.monotonic() - started < 5
    holder.kill()
    holder.wait()
    with index_lock(index):  # the kernel released the dead holder's lock
        pass
    result = CliRunner().invoke(cli, ["index", str(library), "--index", str(index), "--quiet"])
    assert result.exit_code == 0, result.output
