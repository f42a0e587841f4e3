"""Nightly runs: exact row sets after adding, changing, moving and deleting photos."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.index_status import counts
from pipeline.indexer import index_library
from pipeline.plan import KnownPhoto, plan_run
from pipeline.records import FileError, ScannedFile
from pipeline.search import search
from pipeline.settings import IndexSettings
from pipeline.store import IndexStore
from tests.conftest import copy_photos, true_label


def index_state(index: Path) -> dict:
    """Everything the index holds, minus run ids and timestamps, for exact comparisons."""
    db = sqlite3.connect(index / "index.sqlite")
    photos = sorted(db.execute(
        "SELECT path, size, mtime_ns, width, height, fingerprint, models, deleted_at IS NOT NULL FROM photos"))
    labels = sorted(db.execute(
        "SELECT p.path, l.label, round(l.score, 5), l.source, l.model FROM labels l JOIN photos p ON p.id = l.photo_id"))
    registered = {name for (name,) in db.execute("SELECT name FROM parquet_files")}
    files = {p.name for p in (index / "parquet").glob("*")}
    assert files == registered, "Parquet folder holds exactly the parts SQLite lists"
    table = pq.read_table(index / "parquet").drop_columns(["run_id", "indexed_at"])
    rows = sorted(table.to_pylist(), key=lambda r: r["path"])
    assert len({r["path"] for r in rows}) == len(rows), "one Parquet row per photo"
    for row in rows:  # float32 scores round-trip through Python floats; compare rounded
        row["labels"] = [(x["label"], round(x["score"], 5)) for x in row["labels"] or []]
    return {"photos": photos, "labels": labels, "parquet": rows}


def run(root: Path, index: Path, **kwargs):
    settings = IndexSettings(roots=(str(root),), index_dir=index, commit_rows=4, **kwargs)
    return index_library(settings)


@pytest.fixture()
def library(tmp_path, eval_photos):
    root = tmp_path / "library"
    copy_photos(eval_photos[100:110], root / "a")
    copy_photos(eval_photos[500:502], root / "b")
    return root


def test_add_change_move_delete_then_rerun(tmp_path, library, eval_photos, ray_local):
    index = tmp_path / "index"
    first = run(library, index)
    assert (first.indexed, first.new, first.failed) == (12, 12, 0)
    before = index_state(index)
    assert len(before["photos"]) == len(before["parquet"]) == 12

    a = sorted((library / "a").iterdir())
    added = copy_photos(eval_photos[900:902], library / "c")
    changed = a[0]
    shutil.copy(eval_photos[700], changed)  # same path, new content
    os.utime(changed, ns=(1, 1_700_000_000_000_000_000))
    moved_from, moved_to = a[1], library / "b" / "renamed.JPEG"
    os.rename(moved_from, moved_to)
    deleted = a[2]
    deleted.unlink()

    second = run(library, index)
    assert (second.new, second.changed, second.moved, second.deleted, second.unchanged) == (2, 1, 1, 1, 9)
    assert second.indexed == 3  # the move needed no inference
    after = index_state(index)
    expected_paths = ({p for p, *_ in before["photos"]} - {str(moved_from), str(deleted)}
                      | {str(p) for p in added} | {str(moved_to)})
    assert {p for p, *_ in after["photos"]} == expected_paths
    assert {r["path"] for r in after["parquet"]} == expected_paths

    def labels_of(state, path):
        return [(label, score) for p, label, score, *_ in state["labels"] if p == str(path)]

    assert labels_of(after, moved_to) == labels_of(before, moved_from)  # results followed the move
    assert labels_of(after, changed) != labels_of(before, changed)  # new content, new labels
    assert true_label(eval_photos[700]) in {label for label, _ in labels_of(after, changed)}

    third = run(library, index)  # nothing changed: nothing done, nothing rewritten
    assert (third.indexed, third.moved, third.deleted, third.unchanged) == (0, 0, 0, 13)
    assert index_state(index) == after


def test_keep_deleted_marks_rows_and_search_skips_them(tmp_path, library, ray_local):
    index = tmp_path / "index"
    run(library, index)
    gone = sorted((library / "b").iterdir())[0]
    store = IndexStore.open(index, create=False)
    label = search(store, [gone.stem.split("_", 1)[1].replace("_", " ")], min_score=0)[0]
    assert label.path == str(gone)
    gone.unlink()
    summary = run(library, index, keep_deleted=True)
    assert summary.deleted == 1
    state = index_state(index)
    assert (str(gone), True) in {(p, bool(d)) for p, *_, d in state["photos"]}
    assert str(gone) in {r["path"] for r in state["parquet"]}
    assert str(gone) not in {h.path for h in search(store, [label.labels[0]["label"]], min_score=0)}
    assert counts(store)["deleted"] == 1


def test_plan_reruns_only_tasks_whose_model_or_weights_changed():
    known = {
        "/p/a.jpg": KnownPhoto(1, 1, "fa", '{"classify": "m@w1.pth"}'),
        "/p/b.jpg": KnownPhoto(1, 1, "fb", '{"classify": "m@w1.pth", "detect": "d@x.pth"}'),
    }
    scanned = [ScannedFile("/p/a.jpg", 1, 1), ScannedFile("/p/b.jpg", 1, 1)]
    same = plan_run(scanned, known, {}, {"classify": "m@w1.pth"}, ["/p"])
    assert (same.unchanged, same.todo) == (2, [])
    new_weights = plan_run(scanned, known, {}, {"classify": "m@w2.pth", "detect": "d@x.pth"}, ["/p"])
    assert [(w.file.path, w.tasks, w.previous_path) for w in new_weights.todo] == [
        ("/p/a.jpg", ("classify", "detect"), "/p/a.jpg"),
        ("/p/b.jpg", ("classify",), "/p/b.jpg"),
    ]
    assert new_weights.rerun == 2 and new_weights.changed == 0


def test_plan_deletes_only_under_scanned_roots_and_skips_failed_files():
    known = {"/p/a.jpg": KnownPhoto(1, 1, "fa", "{}"), "/q/b.jpg": KnownPhoto(1, 1, "fb", "{}")}
    plan = plan_run([ScannedFile("/p/bad.jpg", 5, 5)], known, {"/p/bad.jpg": (5, 5)}, {}, ["/p"])
    assert plan.deleted == ["/p/a.jpg"] and plan.unchanged == 1 and plan.todo == []
    retry = plan_run([ScannedFile("/p/bad.jpg", 5, 5)], known, {"/p/bad.jpg": (5, 5)}, {}, ["/p"],
                     retry_errors=True)
    assert [w.file.path for w in retry.todo] == ["/p/bad.jpg"]


def test_a_scan_error_on_an_indexed_photo_keeps_its_results(tmp_path, library, ray_local):
    index = tmp_path / "index"
    run(library, index)
    before = index_state(index)
    victim = sorted((library / "b").iterdir())[0]
    victim.unlink()
    victim.symlink_to(tmp_path / "nowhere.jpg")  # the name is still there, the file is not
    summary = run(library, index)
    assert (summary.failed, summary.deleted, summary.indexed) == (1, 0, 0)
    after = index_state(index)  # also checks Parquet and SQLite agree
    assert after["photos"] == before["photos"] and after["parquet"] == before["parquet"]
    db = sqlite3.connect(index / "index.sqlite")
    stage, reason = db.execute("SELECT stage, reason FROM errors WHERE path = ?", (str(victim),)).fetchone()
    assert stage == "scan" and reason.startswith("broken symbolic link")


def test_a_failed_rerun_keeps_the_results_the_photo_had(tmp_path):
    """Adding a task that fails on a photo must not drop what other tasks found."""
    import pyarrow as pa

    from pipeline.inference import RESULT_SCHEMA
    from pipeline.parquet_sink import parquet_dir
    from pipeline.writer import IndexWriter, ModelKey

    def rows(**overrides):
        base = {"path": "/p/a.jpg", "size": 5, "mtime_ns": 7, "width": 4, "height": 3, "fingerprint": "f",
                "tasks": "classify", "previous_path": None, "error_stage": "", "error_reason": "",
                "labels": [{"label": "tabby", "score": 0.9}], "objects": None, "segmentation": None}
        return pa.Table.from_pylist([{**base, **overrides}], schema=RESULT_SCHEMA)

    store = IndexStore.open(tmp_path)
    keys = {"classify": ModelKey("m", "m.pth"), "detect": ModelKey("d", "d.pth")}
    first = IndexWriter(store, parquet_dir(tmp_path), store.begin_run(["/p"], {}), keys, commit_rows=10)
    first.add(rows())
    first.flush()
    second = IndexWriter(store, parquet_dir(tmp_path), store.begin_run(["/p"], {}), keys, commit_rows=10)
    second.add(rows(tasks="detect", previous_path="/p/a.jpg", labels=None, error_stage="detect",
                    error_reason="d failed on this image"))
    second.flush()
    state = index_state(tmp_path)
    assert [label for _, label, *_ in state["labels"]] == ["tabby"]
    assert [r["path"] for r in state["parquet"]] == ["/p/a.jpg"]
    assert store.known_errors() == {"/p/a.jpg": (5, 7)} and second.failed == 1
    assert '"classify": "m@m.pth"' in state["photos"][0][6] and "detect" not in state["photos"][0][6]


def test_nothing_is_deleted_under_a_folder_the_scan_could_not_list():
    known = {"/p/sub/a.jpg": KnownPhoto(1, 1, "fa", "{}"), "/p/b.jpg": KnownPhoto(1, 1, "fb", "{}")}
    unreadable = FileError("/p/sub", "scan", "cannot list folder: Permission denied", folder=True)
    plan = plan_run([unreadable], known, {}, {}, ["/p"])
    assert plan.deleted == ["/p/b.jpg"] and plan.scan_errors == [unreadable]


def test_an_empty_root_with_indexed_photos_is_kept_and_reported():
    """An unmounted drive looks like an empty folder: its photos must not be deleted."""
    known = {"/mnt/nas/a.jpg": KnownPhoto(1, 1, "fa", "{}"), "/home/p/b.jpg": KnownPhoto(1, 1, "fb", "{}")}
    plan = plan_run([ScannedFile("/home/p/b.jpg", 1, 1)], known, {}, {}, ["/mnt/nas", "/home/p"])
    assert plan.deleted == [] and plan.unchanged == 1
    [error] = plan.scan_errors
    assert error.path == "/mnt/nas" and "1 are indexed under this folder" in error.reason


def test_failures_are_not_retried_every_night():
    known = {"/p/a.jpg": KnownPhoto(5, 7, "fa", '{"classify": "m@m.pth"}')}
    wanted = {"classify": "m@m.pth", "detect": "d@d.pth"}
    failed = {"/p/a.jpg": (5, 7), "/p/link.jpg": (0, 0)}
    scanned = [ScannedFile("/p/a.jpg", 5, 7), FileError("/p/link.jpg", "scan", "broken symbolic link")]
    plan = plan_run(scanned, known, failed, wanted, ["/p"])
    assert (plan.todo, plan.scan_errors, plan.unchanged) == ([], [], 2)
    retry = plan_run(scanned, known, failed, wanted, ["/p"], retry_errors=True)
    assert [w.tasks for w in retry.todo] == [("detect",)] and len(retry.scan_errors) == 1


def test_rows_marked_deleted_leave_once_keep_deleted_is_off():
    known = {"/p/gone.jpg": KnownPhoto(1, 1, "f", "{}", deleted=True), "/p/here.jpg": KnownPhoto(1, 1, "h", "{}")}
    scanned = [ScannedFile("/p/here.jpg", 1, 1)]
    assert plan_run(scanned, known, {}, {}, ["/p"], keep_deleted=True).deleted == []
    assert plan_run(scanned, known, {}, {}, ["/p"]).deleted == ["/p/gone.jpg"]
