"""Stage 4: commit results, batch by batch, to Parquet and SQLite.

Runs in the driver only: workers never touch the index, so SQLite has one writer and
the index folder may live where only the driver can reach it. Results are buffered up to
``commit_rows`` photos; each commit writes one Parquet part (plus new versions of the
parts whose rows it replaces), then records all of it in one SQLite transaction. A kill
between commits loses at most the uncommitted buffer, which the next run redoes.

Every committed row is a photo's complete record: a row that re-ran only some tasks,
or a moved photo, takes the other tasks' results from its previous record.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from models.tasks import wrapper_named
from pipeline.concept_scores import score_new_photos
from pipeline.inference import TASK_COLUMNS
from pipeline.metadata import index_row
from pipeline.parquet_sink import PARQUET_SCHEMA, part_name, read_part, without_paths, write_part
from pipeline.people_store import face_hook
from pipeline.places import add_places, place_words
from pipeline.plan import WorkItem
from pipeline.records import FileError
from pipeline.store import IndexStore, LabelRow, ObjectRow, PartRewrite, SegmentRow

_PHOTO_COLUMNS = ("path", "size", "mtime_ns", "width", "height", "fingerprint")


@dataclass(frozen=True)
class ModelKey:
    """The model and weights file a task ran with: a change of either re-runs the task."""

    model: str
    weights: str

    def __str__(self) -> str:
        return f"{self.model}@{self.weights}"


class IndexWriter:
    """Buffers result tables and commits them; counts what it wrote."""

    def __init__(self, store: IndexStore, parquet_folder: Path, run_id: int,
                 models: Mapping[str, ModelKey], commit_rows: int) -> None:
        self.store = store
        self.parquet_folder = parquet_folder
        self.run_id = run_id
        self.models = dict(models)
        self.commit_rows = commit_rows
        self.indexed = 0
        self.failed = 0
        self.moved = 0
        self.deleted = 0
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._seq = 0

    # -- what the indexer calls -------------------------------------------------------

    def add(self, results: pa.Table) -> None:
        """Take a table of inference results (``RESULT_SCHEMA``); commit every full batch."""
        self._buffer.append(results)
        self._buffered += results.num_rows
        while self._buffered >= self.commit_rows:
            table = pa.concat_tables(self._buffer)
            self._commit(table.slice(0, self.commit_rows).to_pylist())
            rest = table.slice(self.commit_rows)
            self._buffer, self._buffered = [rest], rest.num_rows

    def flush(self) -> None:
        """Commit whatever is buffered (the last, partial batch of a run)."""
        if self._buffered:
            self._commit(pa.concat_tables(self._buffer).to_pylist())
        self._buffer, self._buffered = [], 0

    def add_scan_errors(self, failures: Sequence[FileError]) -> None:
        """Record files that failed before decoding (scan errors), committed at once."""
        if failures:
            rows = [{"path": e.path, "size": 0, "mtime_ns": 0, "stage": e.stage, "reason": e.reason}
                    for e in failures]
            self.store.commit_batch(self.run_id, [], [], rows, None)
            self.failed += len(rows)

    def move(self, items: Sequence[WorkItem]) -> None:
        """Commit photos that only moved: their results follow them, no model runs."""
        for i in range(0, len(items), self.commit_rows):
            self._commit([], moves=items[i : i + self.commit_rows])

    def delete(self, paths: Sequence[str], keep: bool) -> None:
        """Remove vanished photos from SQLite and Parquet, or with ``keep`` mark them deleted."""
        if not paths:
            return
        if keep:
            self.store.mark_deleted(paths)
        else:
            self._commit([], superseded=set(paths))
        self.deleted += len(paths)

    # -- one commit ---------------------------------------------------------------------

    def _commit(self, rows: list[dict[str, Any]], moves: Sequence[WorkItem] = (),
                superseded: Collection[str] = frozenset()) -> None:
        # One row per path: a task Ray ran twice (retried after a lost node) may deliver a
        # photo twice; the later copy wins here, and across commits by replacing the row.
        rows = list({r["path"]: r for r in rows}.values())
        ok = [r for r in rows if not r["error_reason"]]
        failed = [r for r in rows if r["error_reason"]]
        replaced: set[str] = (set(superseded) | {r["path"] for r in rows}
                              | {r["previous_path"] for r in rows if r["previous_path"]}
                              | {m.previous_path for m in moves if m.previous_path})
        rewrites, previous = self._rewrite_parts(replaced)
        now_ms = int(time.time() * 1000)
        # A row's previous record is under its previous path, or under its own path when
        # Ray delivered it twice and the first copy already moved it there.
        before = {r["path"]: previous.get(r["previous_path"]) or previous.get(r["path"])
                  for r in rows if r["previous_path"]}
        records = [self._record(r, before.get(r["path"]), now_ms) for r in ok]
        records += [self._carried(m.file.path, m.file.size, m.file.mtime_ns, previous[m.previous_path], now_ms)
                    for m in moves if m.previous_path in previous]
        # A re-run that fails (a new model on an odd photo, say) keeps the results the
        # photo had; the error row beside it says what failed.
        records += [self._carried(r["path"], r["size"], r["mtime_ns"], old, now_ms)
                    for r in failed if (old := before.get(r["path"]))]
        add_places(records)  # in the driver: the gazetteer loads once, only if a photo has GPS
        name = None
        if records:
            name = self._next_part()
            write_part(self.parquet_folder, name, pa.Table.from_pylist(records, schema=PARQUET_SCHEMA))
        error_rows = [{"path": r["path"], "size": r["size"], "mtime_ns": r["mtime_ns"],
                       "stage": r["error_stage"], "reason": r["error_reason"]} for r in failed]
        photo_rows = [{**{c: r[c] for c in _PHOTO_COLUMNS}, "models": _model_keys(r)} for r in records]
        self.store.commit_batch(self.run_id, photo_rows, list(_label_rows(records)), error_rows, name,
                                rewrites=rewrites, superseded=sorted(replaced),
                                object_rows=list(_object_rows(records)), segment_rows=list(_segment_rows(records)),
                                meta_rows=_meta_rows(records),
                                hooks=[face_hook(records, replaced,
                                                 {r["path"]: r["previous_path"] for r in rows if r["previous_path"]}
                                                 | {m.file.path: m.previous_path for m in moves}),
                                       score_new_photos])
        for rewrite in rewrites:
            (self.parquet_folder / rewrite.old).unlink(missing_ok=True)
        self.indexed += len(ok)
        self.failed += len(failed)
        # A moved photo that also needed a model re-run came through the models, in ``ok``.
        self.moved += len(moves) + sum(1 for r in ok if r["previous_path"] and r["previous_path"] != r["path"])

    def _rewrite_parts(self, paths: set[str]) -> tuple[list[PartRewrite], dict[str, dict[str, Any]]]:
        """New versions of the parts holding ``paths``, without them; and their old records."""
        rewrites: list[PartRewrite] = []
        previous: dict[str, dict[str, Any]] = {}
        for part, held in self.store.parts_holding(paths).items():
            table = read_part(self.parquet_folder, part)
            mask = pc.is_in(table["path"], pa.array(held, pa.string()))
            previous.update((r["path"], r) for r in table.filter(mask).to_pylist())
            kept = without_paths(table, held)
            new = None
            if kept.num_rows:
                new = self._next_part()
                write_part(self.parquet_folder, new, kept)
            rewrites.append(PartRewrite(part, new, kept.num_rows))
        return rewrites, previous

    def _record(self, row: dict[str, Any], previous: dict[str, Any] | None, now_ms: int) -> dict[str, Any]:
        """The complete record of a photo from a result row and its previous record."""
        ran = row["tasks"].split(",")
        record = {c: row[c] for c in _PHOTO_COLUMNS}
        models = {t: self.models[t].model for t in ran}
        weights = {t: self.models[t].weights for t in ran}
        old_models = dict(previous["models"]) if previous else {}
        old_weights = dict(previous["weights"]) if previous else {}
        for task, columns in TASK_COLUMNS.items():
            if task in ran:
                record.update((c, row[c]) for c in columns)
            elif previous is not None and task in old_models:
                record.update((c, previous.get(c)) for c in columns)
                models[task], weights[task] = old_models[task], old_weights[task]
            else:
                record.update((c, None) for c in columns)
        record["metadata"] = row.get("metadata")  # read from the file now, never carried
        return {**record, "models": sorted(models.items()), "weights": sorted(weights.items()),
                "run_id": self.run_id, "indexed_at": now_ms}

    def _carried(self, path: str, size: int, mtime_ns: int, previous: dict[str, Any], now_ms: int) -> dict[str, Any]:
        """A previous record, unchanged but for where the photo is now."""
        return {**previous, "path": path, "size": size, "mtime_ns": mtime_ns,
                "run_id": self.run_id, "indexed_at": now_ms}

    def _next_part(self) -> str:
        self._seq += 1
        return part_name(self.run_id, self._seq)


def _model_keys(record: dict[str, Any]) -> str:
    """The record's {task: "model@weights"} as SQLite keeps it for planning."""
    weights = dict(record["weights"])
    return json.dumps({task: str(ModelKey(model, weights[task])) for task, model in record["models"]},
                      sort_keys=True)


def _label_rows(records: Iterable[dict[str, Any]]) -> Iterable[LabelRow]:
    for record in records:
        models = dict(record["models"])
        for task, model in models.items():
            wrapper = wrapper_named(task, model)  # a model may bring its own labels_of
            if record[wrapper.column] is None:
                continue
            for label, score in wrapper.labels_of(record[wrapper.column]):
                yield record["path"], label, float(score), task, model


def _object_rows(records: Iterable[dict[str, Any]]) -> Iterable[ObjectRow]:
    for record in records:
        model = dict(record["models"])["detect"] if record.get("objects") else ""
        for o in record.get("objects") or ():
            yield record["path"], o["label"], o["score"], o["x1"], o["y1"], o["x2"], o["y2"], o["area"], model


def _segment_rows(records: Iterable[dict[str, Any]]) -> Iterable[SegmentRow]:
    for record in records:
        model = dict(record["models"])["segment"] if record.get("segmentation") else ""
        for c in (record.get("segmentation") or {}).get("classes", ()):
            yield record["path"], c["label"], c["fraction"], c["score"], model


def _meta_rows(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = (index_row(r["path"], r.get("metadata"), place_words(r.get("metadata"))) for r in records)
    return [row for row in rows if row]
