"""Read a photo's full record back from the index's Parquet parts.

A photo's record can span parts: the run that indexed it wrote one row, and a later run
that added a task whose weights were missing wrote another with only that task's
column. :func:`load_records` merges them, newest value per column, so callers (`photos
show`, `photos eval`) see one record per photo. Only parts registered in SQLite are read.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline.errors import QueryError
from pipeline.parquet_sink import parquet_dir
from pipeline.store import IndexStore


def load_records(store: IndexStore, index_dir: Path, paths: Iterable[str]) -> dict[str, dict[str, Any]]:
    """path -> merged Parquet record (``PARQUET_SCHEMA`` columns; ``models`` as a dict)."""
    wanted = sorted(set(paths))
    parts = [parquet_dir(index_dir) / name for name in sorted(store.parquet_file_names())]
    if not wanted or not parts:
        return {}
    table = pq.read_table(parts, filters=[("path", "in", wanted)])
    rows = sorted(table.to_pylist(), key=lambda r: (r["run_id"], r["indexed_at"]))
    merged: dict[str, dict[str, Any]] = {}
    for row in rows:
        record = merged.setdefault(row["path"], {"models": {}})
        record["models"].update(dict(row.pop("models")))
        record.update({k: v for k, v in row.items() if v is not None or k not in record})
    return merged


def load_record(store: IndexStore, index_dir: Path, path: str) -> dict[str, Any]:
    """The merged record of one photo; :class:`QueryError` if it is not in the index."""
    key = str(Path(path).expanduser().absolute())  # the scan stores absolute, unresolved paths
    record = load_records(store, index_dir, [key]).get(key)
    if record is None:
        raise QueryError(f"{path} is not in the index: run `photos index` on its folder first")
    return record
