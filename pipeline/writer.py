"""Stage 4: commit inference results, batch by batch, to Parquet and SQLite.

Runs in the driver only: workers never touch the index, so SQLite has one writer and
the index folder may live where only the driver can reach it. Results are buffered up to
``commit_rows`` photos; each commit writes one Parquet part, then records the batch
(and the part's name) in one SQLite transaction. A kill between commits loses at most
the uncommitted buffer, which the next run redoes.
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
from pipeline.store import IndexStore, LabelRow


class IndexWriter:
    """Buffers result tables and commits them; counts what it wrote."""

    def __init__(self, store: IndexStore, parquet_folder: Path, run_id: int,
                 models: Mapping[str, str], commit_rows: int) -> None:
        self.store = store
        self.parquet_folder = parquet_folder
        self.run_id = run_id
        self.models = dict(models)
        self.commit_rows = commit_rows
        self.indexed = 0
        self.failed = 0
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._seq = 0

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
            self._seq += 1
            name = part_name(self.run_id, self._seq)
            write_part(self.parquet_folder, name, photos, self.models, self.run_id, int(time.time() * 1000))
        photo_rows = photos.select(["path", "size", "mtime_ns", "width", "height"]).to_pylist()
        error_rows = [
            {"path": r["path"], "size": r["size"], "mtime_ns": r["mtime_ns"],
             "stage": r["error_stage"], "reason": r["error_reason"]}
            for r in failures.select(["path", "size", "mtime_ns", "error_stage", "error_reason"]).to_pylist()
        ]
        self.store.commit_batch(self.run_id, photo_rows, list(self._label_rows(photos)), error_rows, name)
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
