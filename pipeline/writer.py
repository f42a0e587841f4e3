"""Stage 4: commit inference results, batch by batch, to Parquet and SQLite.

Runs in the driver only: workers never touch the index, so SQLite has one writer and
the index folder may live where only the driver can reach it. Results are buffered up to
``commit_rows`` photos; each commit writes one Parquet part, then records the batch
(and the part's name) in one SQLite transaction. A kill between commits loses at most
the uncommitted buffer, which the next run redoes.

With ``complete_only`` the writer adds results of some tasks to photos already indexed
(a task whose weights were missing in an earlier run): their rows for other tasks stay,
and the new Parquet part holds rows with only those tasks' columns filled.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from models.tasks import TASK_WRAPPERS
from pipeline.parquet_sink import part_name, write_part
from pipeline.records import FileError, ScannedFile
from pipeline.store import IndexStore, LabelRow, ObjectRow, SegmentRow, TaskRow


class IndexWriter:
    """Buffers result tables and commits them; counts what it wrote."""

    def __init__(self, store: IndexStore, parquet_folder: Path, run_id: int,
                 models: Mapping[str, str], commit_rows: int, complete_only: bool = False,
                 first_part: int = 1) -> None:
        self.store = store
        self.parquet_folder = parquet_folder
        self.run_id = run_id
        self.models = dict(models)
        self.commit_rows = commit_rows
        self.complete_only = complete_only
        self.indexed = 0
        self.failed = 0
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self.next_part = first_part  # part numbers are unique within a run, across writers

    def add(self, results: pa.Table) -> None:
        """Take a table of inference results (``RESULT_SCHEMA``); commit every full batch."""
        self._buffer.append(results)
        self._buffered += results.num_rows
        while self._buffered >= self.commit_rows:
            table = pa.concat_tables(self._buffer)
            self._commit(table.slice(0, self.commit_rows))
            rest = table.slice(self.commit_rows)
            self._buffer, self._buffered = [rest], rest.num_rows

    def add_scan_errors(self, failures: Iterable[tuple[ScannedFile | None, FileError]]) -> None:
        """Record files that failed before decoding (scan errors), committed at once."""
        rows = [
            {"path": e.path, "size": f.size if f else 0, "mtime_ns": f.mtime_ns if f else 0,
             "stage": e.stage, "reason": e.reason}
            for f, e in failures
        ]
        if rows:
            self.store.commit_batch(self.run_id, [], [], rows, None)
            self.failed += len(rows)

    def flush(self) -> None:
        """Commit whatever is buffered (the last, partial batch of a run)."""
        if self._buffered:
            self._commit(pa.concat_tables(self._buffer))
        self._buffer, self._buffered = [], 0

    def _commit(self, table: pa.Table) -> None:
        """One Parquet part, then one SQLite transaction that registers it."""
        failed_mask = pc.not_equal(table["error_reason"], "")
        photos = table.filter(pc.invert(failed_mask))
        failures = table.filter(failed_mask)
        name = None
        if photos.num_rows:
            name = part_name(self.run_id, self.next_part)
            self.next_part += 1
            write_part(self.parquet_folder, name, photos, self.models, self.run_id, int(time.time() * 1000))
        photo_rows = photos.select(["path", "size", "mtime_ns", "width", "height"]).to_pylist()
        error_rows = [
            {"path": r["path"], "size": r["size"], "mtime_ns": r["mtime_ns"],
             "stage": r["error_stage"], "reason": r["error_reason"]}
            for r in failures.select(["path", "size", "mtime_ns", "error_stage", "error_reason"]).to_pylist()
        ]
        label_rows, task_rows = list(self._label_rows(photos)), list(self._task_rows(photos))
        object_rows, segment_rows = list(self._object_rows(photos)), list(self._segment_rows(photos))
        if self.complete_only:
            # A photo the new task fails on keeps its other results and no error row (an
            # error row would replace the photo); it lacks the task, so the next run retries it.
            if name is not None:
                self.store.add_task_results(self.run_id, list(self.models), label_rows, name, photos.num_rows,
                                            object_rows, segment_rows, task_rows)
        else:
            self.store.commit_batch(self.run_id, photo_rows, label_rows, error_rows, name,
                                    object_rows, segment_rows, task_rows)
        self.indexed += len(photo_rows)
        self.failed += len(error_rows)

    def _label_rows(self, photos: pa.Table) -> Iterable[LabelRow]:
        paths = photos["path"].to_pylist()
        for task, model in self.models.items():
            wrapper = TASK_WRAPPERS[task]
            for path, record in zip(paths, photos[wrapper.column].to_pylist()):
                if record is None:
                    continue
                for label, score in wrapper.labels_of(record):
                    yield path, label, float(score), task, model

    def _task_rows(self, photos: pa.Table) -> Iterable[TaskRow]:
        paths = photos["path"].to_pylist()
        for task, model in self.models.items():
            column = photos[TASK_WRAPPERS[task].column]
            for path, valid in zip(paths, column.is_valid().to_pylist()):
                if valid:
                    yield path, task, model

    def _object_rows(self, photos: pa.Table) -> Iterable[ObjectRow]:
        if "detect" not in self.models:
            return
        model = self.models["detect"]
        for path, record in zip(photos["path"].to_pylist(), photos["objects"].to_pylist()):
            for o in record or ():
                yield path, o["label"], o["score"], o["x1"], o["y1"], o["x2"], o["y2"], o["area"], model

    def _segment_rows(self, photos: pa.Table) -> Iterable[SegmentRow]:
        if "segment" not in self.models:
            return
        model = self.models["segment"]
        for path, record in zip(photos["path"].to_pylist(), photos["segmentation"].to_pylist()):
            for c in (record or {}).get("classes", ()):
                yield path, c["label"], c["fraction"], c["score"], model
