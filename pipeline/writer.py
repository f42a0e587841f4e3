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

from models.tasks import TASKS, wrapper_named
from pipeline.concept_scores import score_new_photos
from pipeline.inference import TASK_COLUMNS
from pipeline.metadata import metadata_rows
from pipeline.parquet_sink import PARQUET_SCHEMA, part_name, read_part, without_paths, write_part
from pipeline.places import add_places, place_words
from pipeline.plan import WorkItem
from pipeline.records import FileError, IndexRow
from pipeline.store import Batch, IndexStore, PartRewrite, by_part

_PHOTO_COLUMNS = ("path", "size", "mtime_ns", "width", "height", "fingerprint")


@dataclass(frozen=True)
class ModelKey:
    """The model and weights file a task ran with, and the version of the task's output:
    a change of any of them re-runs the task.

    ``version`` is the wrapper's ``output_version``: raising it (the classifier's records
    gained an embedding) re-runs the task once on photos indexed before, which also reads
    their metadata again, so an upgraded index fills in what it lacked.
    """

    model: str
    weights: str
    version: int = 1

    def __str__(self) -> str:
        key = f"{self.model}@{self.weights}"
        return key if self.version == 1 else f"{key}#v{self.version}"


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
            self.store.commit(self.run_id, Batch(errors=rows))
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
        indexed = self.store.indexed(replaced)  # one query: each path's part and stored model keys
        rewrites, previous = self._rewrite_parts(by_part(indexed))
        old_keys = {path: models for path, (_part, models) in indexed.items()}
        now_ms = int(time.time() * 1000)
        # A row's previous record (and stored keys) is under its previous path, or under its
        # own path when Ray delivered it twice and the first copy already moved it there.
        before = {r["path"]: previous.get(r["previous_path"]) or previous.get(r["path"])
                  for r in rows if r["previous_path"]}
        keys_before = {r["path"]: old_keys.get(r["previous_path"]) or old_keys.get(r["path"])
                       for r in rows if r["previous_path"]}
        keys_before |= {m.file.path: old_keys.get(m.previous_path) for m in moves if m.previous_path}
        records = [self._record(r, before.get(r["path"]), now_ms) for r in ok]
        ran = {r["path"]: set(r["tasks"].split(",")) for r in ok}
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
        photo_rows = [{**{c: r[c] for c in _PHOTO_COLUMNS},
                       "models": self._model_keys(r, ran.get(r["path"], set()), keys_before.get(r["path"]))}
                      for r in records]
        moved_from = ({r["path"]: r["previous_path"] for r in rows if r["previous_path"]}
                      | {m.file.path: m.previous_path for m in moves})
        self.store.commit(self.run_id, Batch(
            photos=photo_rows, errors=error_rows, rows=_index_rows(records), parquet_name=name,
            rewrites=rewrites, superseded=sorted(replaced),
            hooks=[hook for task in TASKS.values()
                   if (hook := task.wrapper().commit_hook(records, replaced, moved_from)) is not None]
            + [score_new_photos],  # last: it reads the labels and people rows written before it
        ))
        for rewrite in rewrites:
            (self.parquet_folder / rewrite.old).unlink(missing_ok=True)
        self.indexed += len(ok)
        self.failed += len(failed)
        # A moved photo that also needed a model re-run came through the models, in ``ok``.
        self.moved += len(moves) + sum(1 for r in ok if r["previous_path"] and r["previous_path"] != r["path"])

    def _rewrite_parts(self, parts: dict[str, list[str]]) -> tuple[list[PartRewrite], dict[str, dict[str, Any]]]:
        """New versions of ``parts`` (name -> paths it holds) without those paths; and
        their old records."""
        rewrites: list[PartRewrite] = []
        previous: dict[str, dict[str, Any]] = {}
        for part, held in parts.items():
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

    def _model_keys(self, record: dict[str, Any], ran: set[str], before: str | None) -> str:
        """The record's {task: model key} as SQLite keeps it for planning: this run's key
        for the tasks it ran, the stored key for results carried over."""
        old = json.loads(before) if before else {}
        weights = dict(record["weights"])
        keys = {task: str(self.models[task]) if task in ran else old.get(task) or str(ModelKey(model, weights[task]))
                for task, model in record["models"]}
        return json.dumps(keys, sort_keys=True)

    def _next_part(self) -> str:
        self._seq += 1
        return part_name(self.run_id, self._seq)


def _index_rows(records: Iterable[dict[str, Any]]) -> list[IndexRow]:
    """The SQLite rows of complete records: each task's, by the wrapper of the model that
    made its result (a model may bring its own), then the photo's metadata."""
    rows: list[IndexRow] = []
    for record in records:
        for task, model in record["models"]:
            wrapper = wrapper_named(task, model)
            if record[wrapper.column] is not None:
                rows.extend(wrapper.index_rows(record["path"], record[wrapper.column], model))
        rows.extend(metadata_rows(record["path"], record.get("metadata"), place_words(record.get("metadata"))))
    return rows
